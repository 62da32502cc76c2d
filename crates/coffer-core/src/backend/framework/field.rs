//! A path's fields as data: name, type, description, default, whether required; and the check
//! of a request body against them.
//!
//! Guarantees: a field sent with the wrong type is refused with a message naming it, using the
//! same lenient encodings as [`Fields`] (numbers as strings, comma-separated lists, duration
//! strings); a required field missing from a write is refused by name. It does *not* check what
//! only the endpoint knows (a CIDR's syntax, a name's rules, a value's range).

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::logical::fields::{Fields, duration_field};
use crate::logical::{Error, Result};

/// How a field is encoded, with Vault's names in the comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `TypeString`: a string (a number or a boolean is taken as its text).
    Str,
    /// `TypeInt`: a non-negative integer, as a number or a string.
    Int,
    /// `TypeBool`: `true`/`false`, or their usual string spellings.
    Bool,
    /// `TypeDurationSecond`: seconds, or a duration string like `"30m"`.
    Duration,
    /// `TypeCommaStringSlice`: a list of strings, or one comma-separated string.
    CommaList,
    /// `TypeStringSlice`: a list of strings, or one string taken whole (SQL holds commas).
    StrList,
    /// `TypeCommaIntSlice`: a list of integers, one integer, or a comma-separated string.
    IntList,
    /// `TypeKVPairs`: an object of strings (or that object JSON-encoded in a string, which
    /// the endpoint decodes).
    KvPairs,
    /// `TypeMap`: any JSON object.
    Map,
}

impl Kind {
    /// The OpenAPI `(type, format, items)` of the kind, as Vault documents it.
    pub(crate) fn openapi(self) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        match self {
            Kind::Str => ("string", None, None),
            Kind::Int => ("integer", None, None),
            Kind::Bool => ("boolean", None, None),
            Kind::Duration => ("integer", Some("seconds"), None),
            Kind::CommaList | Kind::StrList => ("array", None, Some("string")),
            Kind::IntList => ("array", None, Some("integer")),
            Kind::KvPairs => ("object", Some("kvpairs"), None),
            Kind::Map => ("object", Some("map"), None),
        }
    }
}

/// A declared default: what a handler's getter answers when the field is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Default {
    Str(&'static str),
    Int(u64),
    Bool(bool),
}

impl Default {
    pub(crate) fn to_value(self) -> Value {
        match self {
            Default::Str(s) => Value::from(s),
            Default::Int(n) => Value::from(n),
            Default::Bool(b) => Value::from(b),
        }
    }
}

/// One field of a path: declared once, used to check requests and to document the path.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
    pub default: Option<Default>,
    /// Refused when missing (or an empty string) from a write.
    pub required: bool,
    /// The framework checks the type; off for the few fields with an encoding of their own,
    /// which their endpoint checks (a JSON object also taken JSON-encoded in a string, say).
    pub checked: bool,
}

impl Field {
    pub const fn new(name: &'static str, kind: Kind, description: &'static str) -> Self {
        Field { name, kind, description, default: None, required: false, checked: true }
    }

    pub const fn str(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::Str, description)
    }

    pub const fn int(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::Int, description)
    }

    pub const fn bool(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::Bool, description)
    }

    pub const fn duration(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::Duration, description)
    }

    pub const fn comma_list(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::CommaList, description)
    }

    pub const fn str_list(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::StrList, description)
    }

    pub const fn int_list(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::IntList, description)
    }

    pub const fn kv_pairs(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::KvPairs, description)
    }

    pub const fn map(name: &'static str, description: &'static str) -> Self {
        Self::new(name, Kind::Map, description)
    }

    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Leaves the type check to the endpoint, which reads the field as sent.
    pub const fn unchecked(mut self) -> Self {
        self.checked = false;
        self
    }

    pub const fn default(mut self, d: Default) -> Self {
        self.default = Some(d);
        self
    }

    /// Refuses a value of the wrong type, naming the field. Absent and `null` pass.
    pub(crate) fn check(&self, data: &Map<String, Value>) -> Result<()> {
        let f = Fields::new(data);
        let k = self.name;
        if !self.checked {
            return Ok(());
        }
        match self.kind {
            Kind::Str => f.str(k).map(drop),
            Kind::Int => f.u64(k).map(drop),
            Kind::Bool => f.bool(k).map(drop),
            Kind::Duration => f.secs(k).map(drop),
            Kind::CommaList => f.list(k).map(drop),
            Kind::StrList => str_list(data, k).map(drop),
            Kind::IntList => int_list(data, k).map(drop),
            Kind::KvPairs => match data.get(k) {
                Some(Value::String(_)) => Ok(()),
                _ => f.string_map(k).map(drop),
            },
            Kind::Map => match data.get(k) {
                None | Some(Value::Null | Value::Object(_)) => Ok(()),
                Some(_) => Err(Error::invalid(format!("{k:?} must be a JSON object"))),
            },
        }
    }

    /// Whether a write lacks this required field: absent, `null` or an empty string.
    pub(crate) fn missing(&self, data: &Map<String, Value>) -> bool {
        match data.get(self.name) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        }
    }

    /// The value sent, or the declared default.
    pub(crate) fn value<'d>(&self, data: &'d Map<String, Value>) -> Option<Cow<'d, Value>> {
        match data.get(self.name) {
            Some(v) if !v.is_null() => Some(Cow::Borrowed(v)),
            _ => self.default.map(|d| Cow::Owned(d.to_value())),
        }
    }
}

/// A `TypeStringSlice`: a list of strings, or one string taken whole.
pub(crate) fn str_list(data: &Map<String, Value>, k: &str) -> Result<Option<Vec<String>>> {
    let bad = || Error::invalid(format!("{k:?} must be a string or a list of strings"));
    match data.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// A `TypeCommaIntSlice`: a list of non-negative integers, one, or a comma-separated string.
pub(crate) fn int_list(data: &Map<String, Value>, k: &str) -> Result<Option<Vec<u64>>> {
    let bad = || Error::invalid(format!("{k:?} must be a list of version numbers"));
    let items: Vec<Value> = match data.get(k) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::String(s)) => {
            s.split(',').map(|p| Value::String(p.trim().to_owned())).collect()
        }
        Some(Value::Number(n)) => vec![Value::Number(n.clone())],
        Some(_) => return Err(bad()),
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::Number(n) => n.as_u64().ok_or_else(bad),
            Value::String(s) => s.parse().map_err(|_| bad()),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Seconds of a duration value, as [`Fields::secs`] reads it.
pub(crate) fn secs_of(v: &Value, k: &str) -> Result<Option<u64>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        v => duration_field(v, k).map(|d| Some(d.as_secs())),
    }
}
