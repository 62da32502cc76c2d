//! The experiment model, in Chaos Toolkit's format, read from JSON or YAML.
//!
//! Guarantees: an [`Experiment`] that parsed has only providers this crate can run (`http`,
//! `process`, and `coffer` with a known function), only tolerances it can check, valid regex patterns and JSONPaths in the subset
//! [`crate::jsonpath`] supports. Keys Chaos Toolkit knows but this crate does not use (`version`,
//! `tags`, `contributions`, `extensions`, `controls`, ...) are accepted and ignored, so a file
//! written for `chaostoolkit` loads unchanged.
//!
//! YAML is read into the same JSON value model first and then goes through exactly the JSON
//! checks, so a YAML file and its JSON twin load to the same [`Experiment`]. Plain scalars are
//! typed by YAML 1.1 rules as PyYAML (Chaos Toolkit's reader) does (`yes`/`no`/`on`/`off` are
//! booleans), except that a lone `y`/`n` is a boolean here and text in PyYAML. One document
//! per file; anchors and aliases allowed within serde-saphyr's budgets; duplicate keys refused.
//!
//! Does not: resolve `ref` activities, or run `python` providers or `probe` tolerances; those
//! are refused at load with [`Error::Invalid`].

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
    /// Coffer's faults and probes: see [`crate::coffer_provider`].
    Coffer(crate::coffer_provider::CofferProvider),
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

/// The two formats Chaos Toolkit reads experiments in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// By extension (`.json`; `.yaml`, `.yml`), as Chaos Toolkit does; any other name by its
    /// content: text whose first non-blank character is `{` is JSON, anything else YAML.
    pub fn detect(path: &std::path::Path, text: &str) -> Self {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ if text.trim_start().starts_with('{') => Format::Json,
            _ => Format::Yaml,
        }
    }
}

impl Experiment {
    /// Parses and checks an experiment from JSON text.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Invalid(e.to_string()))?;
        Self::from_value(value)
    }

    /// Parses and checks an experiment from YAML text (one document).
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let value: Value =
            serde_saphyr::from_str(text).map_err(|e| Error::Invalid(format!("YAML: {e}")))?;
        Self::from_value(value)
    }

    /// Parses and checks an experiment from the text of `path`, in the format [`Format::detect`]
    /// picks.
    pub fn from_file_text(path: &std::path::Path, text: &str) -> Result<Self, Error> {
        match Format::detect(path, text) {
            Format::Json => Self::from_json(text),
            Format::Yaml => Self::from_yaml(text),
        }
    }

    /// Checks an experiment already parsed into JSON values (both formats end here).
    pub fn from_value(value: Value) -> Result<Self, Error> {
        if !value.is_object() {
            return Err(Error::Invalid("an experiment must be a mapping of keys".into()));
        }
        let experiment: Experiment =
            serde_json::from_value(value).map_err(|e| Error::Invalid(e.to_string()))?;
        experiment.check()?;
        Ok(experiment)
    }

    /// `runtime.hypothesis.strategy` as the file states it (Chaos Toolkit's per-experiment
    /// default, which the command line overrides).
    pub fn hypothesis_strategy(&self) -> Result<Option<crate::HypothesisStrategy>, Error> {
        let Some(runtime) = self.extra.get("runtime") else {
            return Ok(None);
        };
        match runtime.get("hypothesis").and_then(|h| h.get("strategy")) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some),
            Some(_) => Err(Error::Invalid("runtime.hypothesis.strategy must be text".into())),
        }
    }

    fn check(&self) -> Result<(), Error> {
        self.hypothesis_strategy()?;
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
                Provider::Coffer(c) => c.check(&a.name).map_err(Error::Invalid)?,
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
    /// The command that guards a host fault (`coffer chaos fault-guard`); empty: host faults
    /// of the `coffer` provider are refused.
    host_guard: Vec<std::ffi::OsString>,
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
        Ok(Self { values, secrets, host_guard: Vec::new() })
    }

    /// A configuration from plain values (tests, callers that resolved values themselves).
    pub fn from_values(values: impl IntoIterator<Item = (String, Value)>) -> Self {
        Self { values: values.into_iter().collect(), ..Self::default() }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).or_else(|| self.secrets.get(key))
    }

    /// `${name}` substitution over strings, recursively through lists and objects.
    ///
    /// A string that is exactly one `${name}` becomes the value with its type; elsewhere the value
    /// is spliced as text. Unknown names and `$$` are left as Python's `safe_substitute` does.
    /// Sets the guard command of host faults (the binary running the experiment knows it).
    pub fn with_host_guard(mut self, argv: Vec<std::ffi::OsString>) -> Self {
        self.host_guard = argv;
        self
    }

    pub(crate) fn host_guard(&self) -> &[std::ffi::OsString] {
        &self.host_guard
    }

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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use serde_json::json;

    use super::*;

    /// The shape of Chaos Toolkit's documentation examples: keys this crate ignores (`version`,
    /// `tags`, `contributions`), env configuration, http timeouts as a pair, a jsonpath tolerance
    /// on the body, pauses, a background action, rollbacks.
    const CHAOSTOOLKIT_EXAMPLE: &str = r#"{
        "version": "1.0.0",
        "title": "What is the impact of an expired certificate on our application chain?",
        "description": "If a certificate expires, we should gracefully deal with the issue.",
        "tags": ["tls"],
        "contributions": {"availability": "high", "security": "medium"},
        "configuration": {
            "base_url": {"type": "env", "key": "CHAOS_BASE_URL", "default": "http://127.0.0.1:8080"},
            "cert_dir": "/tmp/certs"
        },
        "secrets": {"app": {"token": {"type": "env", "key": "CHAOS_TOKEN", "default": "t0k"}}},
        "steady-state-hypothesis": {
            "title": "Application responds",
            "probes": [
                {
                    "type": "probe",
                    "name": "the-astre-service-must-be-running",
                    "tolerance": 0,
                    "provider": {"type": "process", "path": "true"}
                },
                {
                    "type": "probe",
                    "name": "we-can-request-sunset",
                    "tolerance": 200,
                    "provider": {"type": "http", "timeout": [3, 5], "url": "${base_url}/city/Paris"}
                },
                {
                    "type": "probe",
                    "name": "body-says-ok",
                    "tolerance": {"type": "jsonpath", "path": "$.slideshow.author", "expect": ["Yours Truly"], "target": "body"},
                    "provider": {"type": "http", "url": "${base_url}/json", "headers": {"Authorization": "Bearer ${token}"}}
                }
            ]
        },
        "method": [
            {
                "type": "action",
                "name": "swap-to-expired-cert",
                "provider": {"type": "process", "path": "cp", "arguments": "${cert_dir}/expired-cert.pem ${cert_dir}/cert.pem"},
                "pauses": {"after": 5}
            },
            {
                "type": "action",
                "name": "load",
                "background": true,
                "provider": {"type": "process", "path": "sleep", "arguments": ["1"], "timeout": 10}
            },
            {
                "type": "probe",
                "name": "read-tls-cert-expiry-date",
                "provider": {"type": "process", "path": "openssl", "arguments": "x509 -enddate -noout -in ${cert_dir}/cert.pem"}
            }
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "swap-to-valid-cert",
                "provider": {"type": "http", "method": "POST", "url": "${base_url}/reload", "verify_tls": false, "expected_status": 204}
            }
        ]
    }"#;

    /// [`CHAOSTOOLKIT_EXAMPLE`] as Chaos Toolkit's YAML users write it: block and flow styles,
    /// a folded string, comments, an anchor reused through an alias.
    const CHAOSTOOLKIT_EXAMPLE_YAML: &str = r#"
# Same experiment as the JSON one.
version: 1.0.0
title: What is the impact of an expired certificate on our application chain?
description: >-
  If a certificate expires, we should gracefully
  deal with the issue.
tags: [tls]
contributions:
  availability: high
  security: medium
configuration:
  base_url: {type: env, key: CHAOS_BASE_URL, default: "http://127.0.0.1:8080"}
  cert_dir: /tmp/certs
secrets:
  app:
    token: {type: env, key: CHAOS_TOKEN, default: t0k}
steady-state-hypothesis:
  title: Application responds
  probes:
    - type: probe
      name: the-astre-service-must-be-running
      tolerance: 0
      provider: {type: process, path: "true"}
    - type: probe
      name: we-can-request-sunset
      tolerance: 200
      provider:
        type: http
        timeout: [3, 5]
        url: ${base_url}/city/Paris
    - type: probe
      name: body-says-ok
      tolerance:
        type: jsonpath
        path: $.slideshow.author
        expect: [Yours Truly]
        target: body
      provider:
        type: http
        url: ${base_url}/json
        headers: &auth
          Authorization: Bearer ${token}
method:
  - type: action
    name: swap-to-expired-cert
    provider:
      type: process
      path: cp
      arguments: ${cert_dir}/expired-cert.pem ${cert_dir}/cert.pem
    pauses:
      after: 5
  - type: action
    name: load
    background: true
    provider: {type: process, path: sleep, arguments: ["1"], timeout: 10}
  - type: probe
    name: read-tls-cert-expiry-date
    provider:
      type: process
      path: openssl
      arguments: x509 -enddate -noout -in ${cert_dir}/cert.pem
rollbacks:
  - type: action
    name: swap-to-valid-cert
    provider:
      type: http
      method: POST
      url: ${base_url}/reload
      verify_tls: false
      expected_status: 204
"#;

    #[test]
    fn a_yaml_experiment_loads_to_the_same_experiment_as_its_json_twin() {
        let json = Experiment::from_json(CHAOSTOOLKIT_EXAMPLE).unwrap();
        let yaml = Experiment::from_yaml(CHAOSTOOLKIT_EXAMPLE_YAML).unwrap();
        assert_eq!(serde_json::to_value(&yaml).unwrap(), serde_json::to_value(&json).unwrap());
        // Detection: the extension first, then the content.
        let path = std::path::Path::new;
        assert_eq!(Format::detect(path("e.yml"), "{}"), Format::Yaml);
        assert_eq!(Format::detect(path("e.YAML"), "{}"), Format::Yaml);
        assert_eq!(Format::detect(path("e.json"), "title: t"), Format::Json);
        assert_eq!(Format::detect(path("experiment"), "  \n{\"title\": 1}"), Format::Json);
        assert_eq!(Format::detect(path("experiment"), "title: t"), Format::Yaml);
        let sniffed = Experiment::from_file_text(path("exp"), CHAOSTOOLKIT_EXAMPLE_YAML).unwrap();
        assert_eq!(sniffed.title, json.title);
    }

    #[test]
    fn yaml_gets_the_json_checks() {
        let python = "title: t\nmethod:\n  - {type: action, name: a, provider: {type: python, module: os, func: getcwd}}\n";
        assert!(matches!(Experiment::from_yaml(python), Err(Error::Invalid(_))));
        let no_tolerance = "title: t\nsteady-state-hypothesis:\n  title: h\n  probes:\n    - {type: probe, name: p, provider: {type: process, path: \"true\"}}\n";
        let e = Experiment::from_yaml(no_tolerance).unwrap_err();
        assert!(e.to_string().contains("tolerance"), "{e}");
        let bad_regex = "title: t\nsteady-state-hypothesis:\n  title: h\n  probes:\n    - {type: probe, name: p, tolerance: {type: regex, pattern: \"(\"}, provider: {type: process, path: \"true\"}}\n";
        assert!(Experiment::from_yaml(bad_regex).is_err());
        assert!(Experiment::from_yaml("- a list, not an experiment\n").is_err());
        assert!(Experiment::from_yaml("title: [unclosed\n").is_err());
        assert!(Experiment::from_yaml("").is_err());
        assert!(Experiment::from_yaml("title: a\ntitle: b\n").is_err(), "a key given twice");
        // Scalars typed as PyYAML (Chaos Toolkit's reader) types them: `yes`/`on`/`no`/`off`
        // are booleans, quoted numbers stay text; except a lone `y`/`n`, a boolean here and
        // text in PyYAML (documented: quote it).
        let e = Experiment::from_yaml(
            "title: t\nconfiguration: {a: yes, b: on, c: no, d: off, e: y, f: n, g: 3, h: 0.5, i: null, j: '3', k: ~}\n",
        )
        .unwrap();
        assert_eq!(
            Value::Object(e.configuration),
            json!({"a": true, "b": true, "c": false, "d": false, "e": true, "f": false, "g": 3,
                   "h": 0.5, "i": null, "j": "3", "k": null})
        );
        let strategy = "title: t\nruntime: {hypothesis: {strategy: sometimes}}\n";
        assert!(Experiment::from_yaml(strategy).is_err());
        let strategy = "title: t\nruntime: {hypothesis: {strategy: continuously}}\n";
        let e = Experiment::from_yaml(strategy).unwrap();
        assert_eq!(e.hypothesis_strategy().unwrap(), Some(crate::HypothesisStrategy::Continuously));
    }

    #[test]
    fn a_chaostoolkit_example_experiment_loads() {
        let e = Experiment::from_json(CHAOSTOOLKIT_EXAMPLE).unwrap();
        let h = e.steady_state_hypothesis.as_ref().unwrap();
        assert_eq!(h.probes.len(), 3);
        assert_eq!(e.method.len(), 3);
        assert!(e.method[1].background);
        assert_eq!(e.method[0].kind, ActivityKind::Action);
        assert_eq!(e.method[2].kind, ActivityKind::Probe);
        let Provider::Http(rollback) = &e.rollbacks[0].provider else {
            panic!("http rollback");
        };
        assert!(!rollback.verify_tls);
        assert_eq!(rollback.expected_status, Some(204));
        assert_eq!(e.extra["version"], json!("1.0.0"));
        // The journal carries the experiment as written: unknown keys and defaults round-trip.
        let back = serde_json::to_value(&e).unwrap();
        assert_eq!(back["tags"], json!(["tls"]));
        assert!(back["rollbacks"][0]["provider"].get("verify_tls").is_some());
        assert!(back["method"][0]["provider"].get("verify_tls").is_none());
    }

    #[test]
    fn configuration_reads_env_then_default_and_fails_without_either() {
        let e = Experiment::from_json(CHAOSTOOLKIT_EXAMPLE).unwrap();
        let c = Configuration::load(&e, |_| None).unwrap();
        assert_eq!(c.substitute(&json!("${base_url}/x")), json!("http://127.0.0.1:8080/x"));
        assert_eq!(c.substitute(&json!("Bearer ${token}")), json!("Bearer t0k"));
        let c = Configuration::load(&e, |k| {
            (k == "CHAOS_BASE_URL").then(|| "http://10.0.0.1".to_owned())
        })
        .unwrap();
        assert_eq!(c.substitute(&json!("${base_url}")), json!("http://10.0.0.1"));

        let mut e = e;
        e.configuration
            .insert("port".into(), json!({"type": "env", "key": "PORT", "env_var_type": "int"}));
        assert!(matches!(
            Configuration::load(&e, |_| None),
            Err(Error::MissingEnv(k)) if k == "PORT"
        ));
        let c = Configuration::load(&e, |k| (k == "PORT").then(|| "8200".to_owned())).unwrap();
        assert_eq!(c.substitute(&json!("${port}")), json!(8200));
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let e = Experiment::from_json(CHAOSTOOLKIT_EXAMPLE).unwrap();
        let c = Configuration::load(&e, |_| None).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("token") && !shown.contains("t0k"), "{shown}");
    }

    #[test]
    fn substitution_keeps_types_for_whole_placeholders_and_leaves_unknown_names() {
        let c = Configuration::from_values([
            ("n".to_owned(), json!(3)),
            ("flag".to_owned(), json!(true)),
            ("host".to_owned(), json!("db")),
        ]);
        assert_eq!(c.substitute(&json!("${n}")), json!(3));
        assert_eq!(c.substitute(&json!("n=${n} ${flag}")), json!("n=3 True"));
        assert_eq!(c.substitute(&json!("$host:5432")), json!("db:5432"));
        assert_eq!(c.substitute(&json!("${missing} $$ ${host}")), json!("${missing} $ db"));
        assert_eq!(c.substitute(&json!("cost: 5$")), json!("cost: 5$"));
        assert_eq!(
            c.substitute(&json!({"a": ["${host}", 1], "b": {"c": "${n}"}})),
            json!({"a": ["db", 1], "b": {"c": 3}})
        );
    }

    #[test]
    fn what_cannot_run_is_refused_at_load() {
        let with = |activity: serde_json::Value| {
            Experiment::from_json(&json!({"title": "t", "method": [activity]}).to_string())
        };
        let python = json!({"type": "action", "name": "a",
            "provider": {"type": "python", "module": "os", "func": "getcwd"}});
        assert!(matches!(with(python), Err(Error::Invalid(_))));
        let no_url = json!({"type": "probe", "name": "p", "provider": {"type": "http", "url": ""}});
        assert!(with(no_url).is_err());
        let no_tolerance = json!({"title": "t", "steady-state-hypothesis": {"title": "h",
            "probes": [{"type": "probe", "name": "p", "provider": {"type": "process", "path": "true"}}]}});
        assert!(Experiment::from_json(&no_tolerance.to_string()).is_err());
        assert!(Experiment::from_json("{\"title\": \"t\", \"method\": [ ").is_err());
    }
}
