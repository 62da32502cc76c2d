//! The experiment model, in Chaos Toolkit's JSON format.
//!
//! Guarantees: an [`Experiment`] that parsed has only providers this crate can run (`http`,
//! `process`), only tolerances it can check, valid regex patterns and JSONPaths in the subset
//! [`crate::jsonpath`] supports. Keys Chaos Toolkit knows but this crate does not use (`version`,
//! `tags`, `contributions`, `extensions`, `controls`, ...) are accepted and ignored, so a file
//! written for `chaostoolkit` loads unchanged.
//!
//! Does not: read YAML (JSON only), resolve `ref` activities, or run `python` providers or
//! `probe` tolerances; those are refused at load with [`Error::Invalid`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Error;
use crate::tolerance::Tolerance;

/// One experiment, as written in its file.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Experiment {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Plain values or `{"type": "env", "key": ..., "default": ...}`; see [`Configuration::load`].
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub configuration: Map<String, Value>,
    /// Scope -> key -> plain value or env reference; only the second level is substituted.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub secrets: Map<String, Value>,
    #[serde(rename = "steady-state-hypothesis", default, skip_serializing_if = "Option::is_none")]
    pub steady_state_hypothesis: Option<Hypothesis>,
    #[serde(default)]
    pub method: Vec<Activity>,
    #[serde(default)]
    pub rollbacks: Vec<Activity>,
    /// Everything else in the file, kept so the journal shows the experiment as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Hypothesis {
    pub title: String,
    #[serde(default)]
    pub probes: Vec<Activity>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    Action,
    Probe,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Activity {
    #[serde(rename = "type")]
    pub kind: ActivityKind,
    pub name: String,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Tolerance>,
    /// Seconds, or `${name}` strings substituted at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pauses: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub background: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Provider {
    Http(HttpProvider),
    Process(ProcessProvider),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct HttpProvider {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Map<String, Value>>,
    /// Query parameters for GET; the body otherwise (JSON when `Content-Type` is
    /// `application/json`, form-encoded when an object, raw when a string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Seconds, `[connect, read]`, or a `${name}` string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Value>,
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub verify_tls: bool,
    /// Coffer's addition: a different status fails the activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<u16>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ProcessProvider {
    pub path: String,
    /// A string (appended to the path and run by `/bin/sh -c`, as Chaos Toolkit does), a list,
    /// or an object flattened to `key value` pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Seconds; no timeout when absent, as in Chaos Toolkit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
}

impl Experiment {
    /// Parses and checks an experiment from JSON text.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let experiment: Experiment =
            serde_json::from_str(text).map_err(|e| Error::Invalid(e.to_string()))?;
        experiment.check()?;
        Ok(experiment)
    }

    fn check(&self) -> Result<(), Error> {
        if let Some(h) = &self.steady_state_hypothesis {
            if h.title.is_empty() {
                return Err(Error::Invalid("hypothesis requires a title".into()));
            }
            if let Some(p) = h.probes.iter().find(|p| p.tolerance.is_none()) {
                return Err(Error::Invalid(format!(
                    "hypothesis probe '{}' must have a tolerance entry",
                    p.name
                )));
            }
        }
        for a in self
            .method
            .iter()
            .chain(&self.rollbacks)
            .chain(self.steady_state_hypothesis.iter().flat_map(|h| &h.probes))
        {
            if a.name.is_empty() {
                return Err(Error::Invalid("an activity must have a name".into()));
            }
            match &a.provider {
                Provider::Http(h) if h.url.is_empty() => {
                    return Err(Error::Invalid(format!("activity '{}' has no URL", a.name)));
                }
                Provider::Process(p) if p.path.is_empty() => {
                    return Err(Error::Invalid(format!("activity '{}' has no path", a.name)));
                }
                Provider::Http(_) | Provider::Process(_) => {}
            }
        }
        Ok(())
    }
}

/// The values `${name}` is replaced with: the experiment's configuration, then its secrets.
///
/// Secret values are kept apart and this type's `Debug` shows their names only.
#[derive(Clone, Default)]
pub struct Configuration {
    values: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Value>,
}

impl std::fmt::Debug for Configuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Configuration")
            .field("values", &self.values)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Configuration {
    /// Resolves configuration and secrets as Chaos Toolkit does: `{"type": "env", "key": K}`
    /// reads `env(K)`, falls back to `default`, and is an error when neither exists;
    /// `env_var_type` (`int`, `float`, `bool`, `str`, `json`; not `bytes`) converts the read value.
    /// `env` is passed in so callers decide (the CLI passes `std::env::var`).
    pub fn load(
        experiment: &Experiment,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let mut values = BTreeMap::new();
        for (k, v) in &experiment.configuration {
            values.insert(k.clone(), resolve(v, &env)?);
        }
        let mut secrets = BTreeMap::new();
        for scope in experiment.secrets.values() {
            let Value::Object(scope) = scope else {
                return Err(Error::Invalid("each secrets scope must be an object".into()));
            };
            for (k, v) in scope {
                secrets.insert(k.clone(), resolve(v, &env)?);
            }
        }
        Ok(Self { values, secrets })
    }

    /// A configuration from plain values (tests, callers that resolved values themselves).
    pub fn from_values(values: impl IntoIterator<Item = (String, Value)>) -> Self {
        Self { values: values.into_iter().collect(), secrets: BTreeMap::new() }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).or_else(|| self.secrets.get(key))
    }

    /// `${name}` substitution over strings, recursively through lists and objects.
    ///
    /// A string that is exactly one `${name}` becomes the value with its type; elsewhere the value
    /// is spliced as text. Unknown names and `$$` are left as Python's `safe_substitute` does.
    pub fn substitute(&self, data: &Value) -> Value {
        match data {
            Value::String(s) => self.substitute_str(s),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.substitute(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.substitute(v))).collect())
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => data.clone(),
        }
    }

    pub(crate) fn substitute_str(&self, s: &str) -> Value {
        if let Some(name) = whole_placeholder(s)
            && let Some(v) = self.get(name)
        {
            return v.clone();
        }
        Value::String(self.substitute_text(s))
    }

    /// Substitution whose result is always text.
    pub(crate) fn substitute_text(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            }
            let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
                match inner.find('}') {
                    Some(end) if is_identifier(&inner[..end]) => (&inner[..end], end + 2),
                    _ => ("", 0),
                }
            } else {
                let end = after
                    .char_indices()
                    .find(|&(j, c)| {
                        !(c == '_' || c.is_ascii_alphanumeric()) || (j == 0 && c.is_ascii_digit())
                    })
                    .map_or(after.len(), |(j, _)| j);
                (&after[..end], end)
            };
            match (name.is_empty(), self.get(name)) {
                (false, Some(v)) => {
                    out.push_str(&py_str(v));
                    rest = &after[consumed..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn whole_placeholder(s: &str) -> Option<&str> {
    let name = s.strip_prefix("${")?.strip_suffix('}')?;
    is_identifier(name).then_some(name)
}

/// Python's `str()` of a JSON value, which is how Chaos Toolkit splices values into text and
/// process arguments.
pub(crate) fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Number(n) => n.to_string(),
        Value::Array(_) | Value::Object(_) => v.to_string(),
    }
}

fn resolve(v: &Value, env: &impl Fn(&str) -> Option<String>) -> Result<Value, Error> {
    let Value::Object(map) = v else {
        return Ok(v.clone());
    };
    match map.get("type").and_then(Value::as_str) {
        Some("env") => {}
        _ => return Ok(v.clone()),
    }
    let key = map
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Invalid("an env configuration needs a key".into()))?;
    let raw = match (env(key), map.get("default")) {
        (Some(s), _) => Value::String(s),
        (None, Some(d)) => d.clone(),
        (None, None) => return Err(Error::MissingEnv(key.to_owned())),
    };
    let Value::String(s) = &raw else {
        return Ok(raw);
    };
    let converted = match map.get("env_var_type").and_then(Value::as_str) {
        None | Some("str" | "string") => raw.clone(),
        Some("int" | "integer") => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|e| Error::Invalid(format!("{key}: {e}")))?,
        Some("float" | "number") => s
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .map_err(|e| Error::Invalid(format!("{key}: {e}")))?,
        Some("bool") => Value::Bool(!matches!(s.to_lowercase().as_str(), "false" | "0" | "no")),
        Some("json") if s.is_empty() => raw.clone(),
        Some("json") => {
            serde_json::from_str(s).map_err(|e| Error::Invalid(format!("{key}: {e}")))?
        }
        Some(other) => return Err(Error::Invalid(format!("unknown env_var_type {other}"))),
    };
    Ok(converted)
}
