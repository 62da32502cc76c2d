//! The values a template works on: JSON data as Vault Agent sees it, plus the secret record.
//!
//! Guarantees: every string, and every number's text, is held in a buffer that is zeroized when its
//! last reference is dropped; composite values are reference-counted, so walking, ranging and
//! passing values between actions shares them instead of copying their bytes. `Debug` never shows
//! string contents. Not guaranteed: map *keys* are ordinary strings (they name fields; they are
//! not wiped), and a function that transforms a value (e.g. `toUpper`) makes a new, also wiped,
//! buffer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// A string whose bytes are wiped when the last reference goes.
pub type Text = Arc<Zeroizing<String>>;

/// Makes a [`Text`] from an owned string without copying its bytes.
pub(crate) fn text(s: String) -> Text {
    Arc::new(Zeroizing::new(s))
}

/// A template value. The variants follow the Go types Vault Agent's templates see: JSON data is
/// decoded the way Vault's API client decodes it (objects as `map[string]interface{}`, arrays as
/// `[]interface{}`, numbers as `json.Number`, which is a string type that prints its literal text).
#[derive(Clone, Default)]
pub enum Value {
    /// Go's "no value" (an invalid `reflect.Value`): a missing map key, or nil data. Prints as
    /// `<no value>`.
    #[default]
    Missing,
    /// JSON `null` (Go's nil `interface{}`).
    Nil,
    Bool(bool),
    /// A Go `int`: integer literals in the template, lengths, range indexes.
    Int(i64),
    /// A Go `float64`: float literals in the template, numbers from `parseJSON`.
    Float(f64),
    /// A JSON number from the data, as Go's `json.Number`: a string type holding the literal text.
    Number(Text),
    String(Text),
    List(Arc<Vec<Value>>),
    /// An object; Go ranges over and prints a map in sorted key order, which a `BTreeMap` keeps.
    Map(Arc<BTreeMap<String, Value>>),
    /// What `secret` returns (consul-template's `*dependency.Secret`).
    Secret(Arc<Secret>),
}

/// A secret as consul-template hands it to a template: `{{ with secret "p" }}{{ .Data }}{{ end }}`.
#[derive(Clone, Default)]
pub struct Secret {
    pub request_id: String,
    pub lease_id: String,
    /// Seconds.
    pub lease_duration: i64,
    pub renewable: bool,
    /// The response's `data` object; for KV v2 it holds `data` and `metadata`.
    pub data: Value,
    pub warnings: Vec<String>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("lease_id", &self.lease_id)
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

/// The field names of a secret, in Go's declaration order (the order `%v` prints them).
pub(crate) const SECRET_FIELDS: [&str; 8] =
    ["RequestID", "LeaseID", "LeaseDuration", "Renewable", "Data", "Warnings", "Auth", "WrapInfo"];

impl Secret {
    /// The value of field `name`, or `None` when the type has no such field.
    pub(crate) fn field(&self, name: &str) -> Option<Value> {
        let string = |s: &str| Value::String(text(s.to_owned()));
        Some(match name {
            "RequestID" => string(&self.request_id),
            "LeaseID" => string(&self.lease_id),
            "LeaseDuration" => Value::Int(self.lease_duration),
            "Renewable" => Value::Bool(self.renewable),
            "Data" => self.data.clone(),
            "Warnings" => Value::List(Arc::new(self.warnings.iter().map(|w| string(w)).collect())),
            // Not modelled: always nil, as for a plain read.
            "Auth" | "WrapInfo" => Value::Nil,
            _ => return None,
        })
    }
}

impl Value {
    /// A string value.
    pub fn string(s: impl Into<String>) -> Self {
        Value::String(text(s.into()))
    }

    /// Go's name for the value's dynamic type, as its error messages show it.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Missing => "<no value>",
            Value::Nil => "interface {}",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Number(_) => "json.Number",
            Value::String(_) => "string",
            Value::List(_) => "[]interface {}",
            Value::Map(_) => "map[string]interface {}",
            Value::Secret(_) => "*dependency.Secret",
        }
    }

    /// Go's truth: false, 0, nil and empty strings, slices and maps are false; structs and
    /// non-nil pointers are true.
    pub(crate) fn truth(&self) -> bool {
        match self {
            Value::Missing | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Number(s) | Value::String(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Secret(_) => true,
        }
    }

    /// The text of a string-kind value (`string` or `json.Number`).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Number(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

impl From<serde_json::Value> for Value {
    /// Moves the JSON value in: strings change owner without being copied.
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(text(n.to_string())),
            serde_json::Value::String(s) => Value::String(text(s)),
            serde_json::Value::Array(a) => {
                Value::List(Arc::new(a.into_iter().map(Value::from).collect()))
            }
            serde_json::Value::Object(o) => {
                Value::Map(Arc::new(o.into_iter().map(|(k, v)| (k, Value::from(v))).collect()))
            }
        }
    }
}

impl From<Secret> for Value {
    fn from(s: Secret) -> Self {
        Value::Secret(Arc::new(s))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::string(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(text(s))
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl fmt::Debug for Value {
    /// Shows the shape, never string contents: a value may be a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Missing => f.write_str("Missing"),
            Value::Nil => f.write_str("Nil"),
            Value::Bool(b) => write!(f, "Bool({b})"),
            Value::Int(i) => write!(f, "Int({i})"),
            Value::Float(x) => write!(f, "Float({x})"),
            Value::Number(_) => f.write_str("Number(<redacted>)"),
            Value::String(_) => f.write_str("String(<redacted>)"),
            Value::List(l) => f.debug_list().entries(l.iter()).finish(),
            Value::Map(m) => f.debug_map().entries(m.iter()).finish(),
            Value::Secret(s) => s.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_string_contents() {
        let v = Value::from(serde_json::json!({"password": "hunter2", "n": 5}));
        let shown = format!("{v:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("password"), "{shown}");
    }

    #[test]
    fn json_numbers_keep_their_text_as_go_json_number_does() {
        let v = Value::from(serde_json::json!(8080));
        assert_eq!(v.as_str(), Some("8080"));
        assert_eq!(v.type_name(), "json.Number");
    }
}
