//! Tolerances: whether a probe's output is within the steady state, with Chaos Toolkit's rules
//! (`chaoslib.hypothesis.within_tolerance`).
//!
//! - `true`/`false`, a string: equality with the output (Python equality, so `true == 1`).
//! - an integer: equality with the output's `status` when the output has one (http and process
//!   probes), else with the output.
//! - a list: membership of the output's `status` when it has one; otherwise a list of exactly
//!   two items is an inclusive range `[a, b]`, and any other list is membership.
//! - `{"type": "range", "range": [a, b], "target"?}`: the (targeted) output read as a number
//!   (a numeric string such as a process's `stdout` counts) lies in `[a, b]`.
//! - `{"type": "regex", "pattern", "target"?}`: the pattern is found in the (targeted) text.
//! - `{"type": "jsonpath", "path", "expect"?, "count"?, "target"?}`: the (targeted) output, parsed
//!   as JSON when it is text, has matches; exactly `count` of them; or exactly `expect` (a
//!   non-list `expect` means one match equal to it).
//!
//! `target` picks a key of the output (`status`, `body`, `stdout`, `stderr`, `headers`), falling
//! back to the whole output when the key is absent, as Chaos Toolkit does. Strings in a tolerance
//! are `${name}`-substituted before the check. Where Python would raise (comparing a number with
//! text, a regex over an object) the tolerance is not met.
//!
//! Does not: run `{"type": "probe"}` tolerances (refused at load). Regex syntax is Rust's
//! `regex` crate: no look-around or backreferences, which Python's `re` has.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;
use crate::experiment::Configuration;
use crate::jsonpath::Path;

/// A probe's tolerance, as written in the experiment.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Tolerance {
    raw: Value,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Range { lo: f64, hi: f64, target: Option<String> },
    Regex { pattern: String, target: Option<String> },
    JsonPath { path: String, expect: Option<Value>, count: Option<u64>, target: Option<String> },
}

impl From<Tolerance> for Value {
    fn from(t: Tolerance) -> Value {
        t.raw
    }
}

impl TryFrom<Value> for Tolerance {
    type Error = Error;

    fn try_from(raw: Value) -> Result<Self, Error> {
        let kind = Kind::parse(&raw)?;
        Ok(Self { raw, kind })
    }
}

fn bad(why: impl Into<String>) -> Error {
    Error::Invalid(format!("tolerance: {}", why.into()))
}

impl Kind {
    fn parse(raw: &Value) -> Result<Self, Error> {
        Ok(match raw {
            Value::Bool(b) => Kind::Bool(*b),
            Value::Number(n) => {
                Kind::Int(n.as_i64().ok_or_else(|| bad("a number tolerance must be an integer"))?)
            }
            Value::String(s) => Kind::Str(s.clone()),
            Value::Array(items) => Kind::List(items.clone()),
            Value::Null => return Err(bad("must not be null")),
            Value::Object(map) => {
                let target = match map.get("target") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => return Err(bad("target must be a string")),
                };
                let text = |key: &str| -> Result<String, Error> {
                    map.get(key)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("needs a string `{key}`")))
                };
                match map.get("type").and_then(Value::as_str) {
                    Some("range") => {
                        let bounds = map
                            .get("range")
                            .and_then(Value::as_array)
                            .ok_or_else(|| bad("range must be a sequence"))?;
                        let [lo, hi] = bounds.as_slice() else {
                            return Err(bad("range sequence must be made of two values"));
                        };
                        let (Some(lo), Some(hi)) = (lo.as_f64(), hi.as_f64()) else {
                            return Err(bad("range boundaries must be numbers"));
                        };
                        Kind::Range { lo, hi, target }
                    }
                    Some("regex") => {
                        let pattern = text("pattern")?;
                        if !pattern.contains("${") {
                            Regex::new(&pattern).map_err(|e| bad(e.to_string()))?;
                        }
                        Kind::Regex { pattern, target }
                    }
                    Some("jsonpath") => {
                        let path = text("path")?;
                        if path.trim().is_empty() {
                            return Err(bad("JSON path cannot be empty"));
                        }
                        if !path.contains("${") {
                            Path::parse(&path)?;
                        }
                        let count = match map.get("count") {
                            None | Some(Value::Null) => None,
                            Some(c) => Some(
                                c.as_u64()
                                    .ok_or_else(|| bad("count must be a non-negative integer"))?,
                            ),
                        };
                        Kind::JsonPath { path, expect: map.get("expect").cloned(), count, target }
                    }
                    Some(other) => return Err(bad(format!("type '{other}' is unsupported"))),
                    None => return Err(bad("an object tolerance needs a type")),
                }
            }
        })
    }
}

impl Tolerance {
    /// Whether `value`, a probe's output, is within this tolerance.
    pub fn check(&self, value: &Value, config: &Configuration) -> bool {
        self.kind.check(value, config)
    }
}

/// `value.get(target, value)`; `None` where Python would raise (a target on a non-object).
fn targeted<'a>(value: &'a Value, target: Option<&str>) -> Option<&'a Value> {
    match (target, value) {
        (None, _) => Some(value),
        (Some(t), Value::Object(map)) => Some(map.get(t).unwrap_or(value)),
        (Some(_), _) => None,
    }
}

fn status(value: &Value) -> Option<&Value> {
    value.as_object().and_then(|m| m.get("status"))
}

impl Kind {
    fn check(&self, value: &Value, config: &Configuration) -> bool {
        match self {
            Kind::Bool(b) => py_eq(value, &Value::Bool(*b)),
            Kind::Int(i) => py_eq(status(value).unwrap_or(value), &Value::from(*i)),
            Kind::Str(s) => match config.substitute_str(s) {
                Value::String(s) => py_eq(value, &Value::String(s)),
                other => Kind::parse(&other).is_ok_and(|k| k.check(value, config)),
            },
            Kind::List(items) => {
                if let Some(st) = status(value) {
                    items.iter().any(|i| py_eq(st, i))
                } else if let [lo, hi] = items.as_slice() {
                    py_le(lo, value) == Some(true) && py_le(value, hi) == Some(true)
                } else {
                    items.iter().any(|i| py_eq(value, i))
                }
            }
            Kind::Range { lo, hi, target } => targeted(value, target.as_deref())
                .and_then(as_decimal)
                .is_some_and(|v| *lo <= v && v <= *hi),
            Kind::Regex { pattern, target } => {
                let Ok(rx) = Regex::new(&config.substitute_text(pattern)) else {
                    return false;
                };
                match targeted(value, target.as_deref()) {
                    Some(Value::String(s)) => rx.is_match(s),
                    _ => false,
                }
            }
            Kind::JsonPath { path, expect, count, target } => {
                let Ok(px) = Path::parse(&config.substitute_text(path)) else {
                    return false;
                };
                let Some(v) = targeted(value, target.as_deref()) else {
                    return false;
                };
                let parsed;
                let doc = match v {
                    Value::String(s) => match serde_json::from_str::<Value>(s) {
                        Ok(p) => {
                            parsed = p;
                            &parsed
                        }
                        Err(_) => v,
                    },
                    _ => v,
                };
                let found = px.find(doc);
                let mut ok = !found.is_empty();
                if let Some(c) = count {
                    ok = u64::try_from(found.len()).is_ok_and(|n| n == *c);
                }
                if let Some(expect) = expect {
                    let expect = config.substitute(expect);
                    let want: Vec<&Value> = match &expect {
                        Value::Array(items) => items.iter().collect(),
                        one => vec![one],
                    };
                    ok = found.len() == want.len()
                        && found.iter().zip(&want).all(|(a, b)| py_eq(a, b));
                }
                ok
            }
        }
    }
}

/// Python's `Decimal(value)`: numbers, booleans, and numeric text (surrounding space allowed).
fn as_decimal(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Null | Value::String(_) | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Python's `==` on JSON-shaped values: numbers and booleans compare by value.
fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| py_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (as_number(a), as_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

/// Python's `<=`; `None` where Python raises `TypeError`.
fn py_le(a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x <= y),
        _ => Some(as_number(a)? <= as_number(b)?),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use serde_json::json;

    use super::*;

    fn tol(v: Value) -> Tolerance {
        Tolerance::try_from(v).unwrap()
    }

    fn met(t: Value, value: Value) -> bool {
        tol(t).check(&value, &Configuration::default())
    }

    fn process(status: i64, stdout: &str) -> Value {
        json!({"status": status, "stdout": stdout, "stderr": ""})
    }

    fn http(status: i64, body: Value) -> Value {
        json!({"status": status, "headers": {}, "body": body})
    }

    #[test]
    fn value_tolerances_compare_with_python_equality() {
        assert!(met(json!(true), json!(true)));
        assert!(!met(json!(true), json!(false)));
        assert!(met(json!(true), json!(1)));
        assert!(met(json!("ok"), json!("ok")));
        assert!(!met(json!("ok"), json!("ok\n")));
        assert!(met(json!(0), json!(0)));
        assert!(!met(json!(0), json!(1)));
    }

    #[test]
    fn an_integer_tolerance_checks_the_status_of_http_and_process_output() {
        assert!(met(json!(200), http(200, json!("x"))));
        assert!(!met(json!(200), http(503, json!("x"))));
        assert!(met(json!(0), process(0, "")));
        assert!(!met(json!(0), process(2, "")));
    }

    #[test]
    fn list_tolerances_are_membership_or_a_two_item_range() {
        assert!(met(json!([200, 204]), http(204, Value::Null)));
        assert!(!met(json!([200, 204]), http(500, Value::Null)));
        assert!(met(json!([1, 2, 3]), json!(2)));
        assert!(!met(json!([1, 2, 3]), json!(4)));
        // Chaos Toolkit reads a two-item list over a plain value as a range.
        assert!(met(json!([1, 10]), json!(5)));
        assert!(!met(json!([1, 10]), json!(11)));
        assert!(!met(json!([1, 10]), json!("5")));
    }

    #[test]
    fn range_tolerance_reads_numbers_and_numeric_text() {
        let t = json!({"type": "range", "range": [1, 5], "target": "stdout"});
        assert!(met(t.clone(), process(0, "3\n")));
        assert!(!met(t.clone(), process(0, "6\n")));
        assert!(!met(t, process(0, "three")));
        let t = json!({"type": "range", "range": [200, 299], "target": "status"});
        assert!(met(t.clone(), http(204, Value::Null)));
        assert!(!met(t, http(404, Value::Null)));
        assert!(met(json!({"type": "range", "range": [0.5, 1.5]}), json!(1)));
        assert!(Tolerance::try_from(json!({"type": "range", "range": [1]})).is_err());
        assert!(Tolerance::try_from(json!({"type": "range", "range": ["a", 2]})).is_err());
    }

    #[test]
    fn regex_tolerance_searches_the_target_text() {
        let t = json!({"type": "regex", "pattern": "^ok", "target": "stdout"});
        assert!(met(t.clone(), process(0, "ok: 3 items")));
        assert!(!met(t.clone(), process(0, "not ok")));
        // Without a target the output object is not text: not met, where Python would raise.
        assert!(!met(json!({"type": "regex", "pattern": "ok"}), process(0, "ok")));
        assert!(met(json!({"type": "regex", "pattern": "a+"}), json!("baaa")));
        assert!(Tolerance::try_from(json!({"type": "regex", "pattern": "("})).is_err());
        assert!(Tolerance::try_from(json!({"type": "regex"})).is_err());
    }

    #[test]
    fn jsonpath_tolerance_matches_expect_and_count() {
        let body = json!({"data": {"sealed": false, "nodes": [{"up": true}, {"up": true}]}});
        let path = |p: &str| json!({"type": "jsonpath", "path": p, "target": "body"});
        assert!(met(path("$.data.sealed"), http(200, body.clone())));
        assert!(!met(path("$.data.missing"), http(200, body.clone())));
        let mut t = path("$.data.sealed");
        t["expect"] = json!(false);
        assert!(met(t.clone(), http(200, body.clone())));
        t["expect"] = json!(true);
        assert!(!met(t, http(200, body.clone())));
        let mut t = path("$.data.nodes[*].up");
        t["expect"] = json!([true, true]);
        assert!(met(t.clone(), http(200, body.clone())));
        t["expect"] = json!([true]);
        assert!(!met(t, http(200, body.clone())));
        let mut t = path("$..up");
        t["count"] = json!(2);
        assert!(met(t.clone(), http(200, body.clone())));
        t["count"] = json!(3);
        assert!(!met(t, http(200, body)));
        // Text output is parsed as JSON first (a process printing JSON).
        let t = json!({"type": "jsonpath", "path": "$.a[0]", "expect": 7, "target": "stdout"});
        assert!(met(t.clone(), process(0, r#"{"a": [7, 8]}"#)));
        assert!(!met(t, process(0, "not json")));
        assert!(Tolerance::try_from(json!({"type": "jsonpath", "path": "$.a[?(@.b)]"})).is_err());
    }

    #[test]
    fn tolerance_strings_are_substituted_from_configuration() {
        let config = Configuration::from_values([
            ("word".to_owned(), json!("ready")),
            ("code".to_owned(), json!(204)),
        ]);
        assert!(tol(json!("${word}")).check(&json!("ready"), &config));
        assert!(!tol(json!("${word}")).check(&json!("${word}"), &config));
        // A whole placeholder takes the value's type: here an integer tolerance on the status.
        assert!(tol(json!("${code}")).check(&http(204, Value::Null), &config));
        let t = json!({"type": "regex", "pattern": "^${word}$", "target": "stdout"});
        assert!(tol(t).check(&process(0, "ready"), &config));
    }

    #[test]
    fn unsupported_tolerances_are_refused() {
        assert!(Tolerance::try_from(json!({"type": "probe", "name": "x"})).is_err());
        assert!(Tolerance::try_from(json!(1.5)).is_err());
        assert!(Tolerance::try_from(Value::Null).is_err());
    }
}
