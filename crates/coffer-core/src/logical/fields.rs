//! Typed access to a request body's fields, with Vault's lenient encodings (numbers as strings,
//! comma-separated lists, duration strings) and errors that name the field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::logical::{Error, Result};
use crate::time::{MAX_DURATION_SECS, parse_duration};

/// Reads the request body for the few fields each endpoint knows, rejecting wrong types by name.
pub struct Fields<'a> {
    data: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(data: &'a Map<String, Value>) -> Self {
        Self { data }
    }

    /// The field as sent, for the few with an encoding of their own (a JSON object sent as an
    /// object or as a string).
    pub fn raw(&self, k: &str) -> Option<&'a Value> {
        self.data.get(k)
    }

    pub fn has(&self, k: &str) -> bool {
        self.data.get(k).is_some_and(|v| !v.is_null())
    }

    pub fn str(&self, k: &str) -> Result<Option<String>> {
        match self.data.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(Error::invalid(format!("{k:?} must be a string"))),
        }
    }

    /// A string that must be present and non-empty.
    pub fn required_str(&self, k: &str) -> Result<String> {
        self.str(k)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid(format!("missing required parameter {k:?}")))
    }

    pub fn required_u64(&self, k: &str) -> Result<u64> {
        self.u64(k)?.ok_or_else(|| Error::invalid(format!("missing required parameter {k:?}")))
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        match self.data.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.as_str() {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(Some(true)),
                "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(Some(false)),
                _ => Err(Error::invalid(format!("{k:?} must be a boolean"))),
            },
            Some(_) => Err(Error::invalid(format!("{k:?} must be a boolean"))),
        }
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>> {
        match self.data.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::invalid(format!("{k:?} must be a non-negative integer"))),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| Error::invalid(format!("{k:?} must be a non-negative integer"))),
            Some(_) => Err(Error::invalid(format!("{k:?} must be a non-negative integer"))),
        }
    }

    /// Seconds, from a number or a duration string like `"1h"`.
    pub fn secs(&self, k: &str) -> Result<Option<u64>> {
        match self.data.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v) => duration_field(v, k).map(|d| Some(d.as_secs())),
        }
    }

    /// A list of strings, from a JSON array or a comma-separated string.
    pub fn list(&self, k: &str) -> Result<Option<Vec<String>>> {
        match self.data.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(
                s.split(',').map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
            )),
            // Vault trims each element of a list too (its comma-string-slice type).
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(|s| s.trim().to_owned())
                        .ok_or_else(|| Error::invalid(format!("{k:?} must be a list of strings")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(Error::invalid(format!("{k:?} must be a list of strings"))),
        }
    }

    pub fn string_map(&self, k: &str) -> Result<Option<BTreeMap<String, String>>> {
        match self.data.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(mk, v)| match v {
                    Value::String(s) => Ok((mk.clone(), s.clone())),
                    _ => Err(Error::invalid(format!("{k:?} must map strings to strings"))),
                })
                .collect::<Result<_>>()
                .map(Some),
            Some(_) => Err(Error::invalid(format!("{k:?} must be an object of strings"))),
        }
    }

    /// Names of fields not in `known`, for Vault's "ignored parameters" warning.
    pub fn unknown(&self, known: &[&str]) -> Vec<String> {
        let mut v: Vec<String> =
            self.data.keys().filter(|k| !known.contains(&k.as_str())).cloned().collect();
        v.sort();
        v
    }
}

pub fn ignored_warning(unknown: Vec<String>) -> Vec<String> {
    if unknown.is_empty() {
        Vec::new()
    } else {
        vec![format!("Endpoint ignored these unrecognized parameters: [{}]", unknown.join(" "))]
    }
}

/// A duration field of a request: seconds as a number, or a duration string.
pub fn duration_field(v: &serde_json::Value, field: &str) -> Result<Duration> {
    let bad = || {
        Error::invalid(format!(
            "invalid duration for {field:?}: expected seconds or a string like \"30m\", at most {MAX_DURATION_SECS}s"
        ))
    };
    let d = match v {
        serde_json::Value::Number(n) => n.as_u64().map(Duration::from_secs),
        serde_json::Value::String(s) => parse_duration(s),
        _ => None,
    };
    d.filter(|d| d.as_secs() <= MAX_DURATION_SECS).ok_or_else(bad)
}
