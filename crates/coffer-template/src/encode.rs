//! `toJSON`, `toJSONPretty` and `toYAML`: template values to JSON and YAML text.
//!
//! Guarantees: JSON output is what Go's `encoding/json` writes for the same value (sorted keys,
//! `<`, `>`, `&`, U+2028 and U+2029 escaped, floats in Go's form, `json.Number` verbatim,
//! `MarshalIndent` layout with two spaces). YAML output is valid YAML 1.1 and 1.2 that reads back
//! as the same JSON value: a string is written plain only when it cannot be read as anything
//! else (null, bool, number, or YAML syntax), otherwise double-quoted with JSON escapes. Layout
//! follows `gopkg.in/yaml.v2` (two-space indent, sequences in a mapping not indented, `{}`/`[]`
//! for empty collections) but the emitter is not byte-identical to it: keys sort by code point,
//! not yaml.v2's digit-aware order, and multi-line strings are quoted, not block scalars.
//! All output goes into wiped buffers.

use std::fmt::Write as _;

use crate::buf::Buf;
use crate::gofmt;
use crate::value::{SECRET_FIELDS, Value};

/// Go's `json.Marshal`; `indent` gives `json.MarshalIndent(v, "", "  ")`.
pub(crate) fn to_json(v: &Value, indent: bool) -> Result<Buf, String> {
    let mut out = Buf::new();
    json(&mut out, v, indent.then_some(0))?;
    Ok(out)
}

fn newline(out: &mut Buf, level: usize) {
    out.push('\n');
    out.repeat(' ', level * 2);
}

fn json(out: &mut Buf, v: &Value, indent: Option<usize>) -> Result<(), String> {
    match v {
        Value::Missing | Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => json_float(out, *f)?,
        Value::Number(n) => {
            if serde_json::from_str::<serde_json::Number>(n).is_err() {
                return Err("json: invalid number literal".to_owned());
            }
            out.push_str(n);
        }
        Value::String(s) => json_string(out, s, true),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Some(level) = indent {
                    newline(out, level + 1);
                }
                json(out, item, indent.map(|l| l + 1))?;
            }
            if let (Some(level), false) = (indent, items.is_empty()) {
                newline(out, level);
            }
            out.push(']');
        }
        Value::Map(m) => {
            let entries = m.iter().map(|(k, v)| (k.as_str(), v.clone()));
            json_object(out, entries, m.is_empty(), indent)?;
        }
        Value::Secret(s) => {
            let entries = SECRET_FIELDS.iter().map(|f| (*f, s.field(f).unwrap_or_default()));
            json_object(out, entries, false, indent)?;
        }
    }
    Ok(())
}

fn json_object<'k>(
    out: &mut Buf,
    entries: impl Iterator<Item = (&'k str, Value)>,
    empty: bool,
    indent: Option<usize>,
) -> Result<(), String> {
    out.push('{');
    for (i, (k, item)) in entries.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(level) = indent {
            newline(out, level + 1);
        }
        json_string(out, k, true);
        out.push(':');
        if indent.is_some() {
            out.push(' ');
        }
        json(out, &item, indent.map(|l| l + 1))?;
    }
    if let (Some(level), false) = (indent, empty) {
        newline(out, level);
    }
    out.push('}');
    Ok(())
}

/// Go's float encoding: shortest digits, `%f` form unless the magnitude is < 1e-6 or >= 1e21.
fn json_float(out: &mut Buf, f: f64) -> Result<(), String> {
    if !f.is_finite() {
        return Err(format!("json: unsupported value: {}", if f.is_nan() { "NaN" } else { "Inf" }));
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let mut e = gofmt::shortest_e(f);
        // Go writes e-7, not e-07.
        if let Some(at) = e.find("e-0") {
            e.remove(at + 2);
        }
        out.push_str(&e);
    } else {
        let _ = write!(out, "{f}");
    }
    Ok(())
}

/// A JSON string literal; `html` escapes `<`, `>` and `&` as Go's encoder does by default.
fn json_string(out: &mut Buf, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// YAML for a map (consul-template's `toYAML` takes `map[string]interface{}`), trimmed of
/// surrounding white space as consul-template trims it.
pub(crate) fn to_yaml(v: &Value) -> Buf {
    let mut out = Buf::new();
    match v {
        Value::Map(m) if !m.is_empty() => yaml_map(&mut out, m, 0),
        Value::List(l) if !l.is_empty() => yaml_list(&mut out, l, 0),
        _ => {
            yaml_scalar(&mut out, v);
        }
    }
    let trimmed = out.as_str().trim_end();
    if trimmed.len() == out.len() {
        return out;
    }
    let mut t = Buf::new();
    t.push_str(trimmed);
    t
}

fn yaml_map(out: &mut Buf, m: &std::collections::BTreeMap<String, Value>, level: usize) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 {
            out.repeat(' ', level * 2);
        }
        yaml_string(out, k);
        out.push(':');
        match v {
            Value::Map(inner) if !inner.is_empty() => {
                out.push('\n');
                out.repeat(' ', (level + 1) * 2);
                yaml_map(out, inner, level + 1);
            }
            Value::List(inner) if !inner.is_empty() => {
                // yaml.v2 does not indent a sequence under a mapping key.
                out.push('\n');
                out.repeat(' ', level * 2);
                yaml_list(out, inner, level);
            }
            _ => {
                out.push(' ');
                yaml_scalar(out, v);
                out.push('\n');
            }
        }
    }
}

fn yaml_list(out: &mut Buf, l: &[Value], level: usize) {
    for (i, v) in l.iter().enumerate() {
        if i > 0 {
            out.repeat(' ', level * 2);
        }
        out.push_str("- ");
        match v {
            Value::Map(inner) if !inner.is_empty() => yaml_map(out, inner, level + 1),
            Value::List(inner) if !inner.is_empty() => yaml_list(out, inner, level + 1),
            _ => {
                yaml_scalar(out, v);
                out.push('\n');
            }
        }
    }
}

/// A scalar or an empty collection on one line.
fn yaml_scalar(out: &mut Buf, v: &Value) {
    match v {
        Value::Missing | Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => {
            if f.is_nan() {
                out.push_str(".nan");
            } else if f.is_infinite() {
                out.push_str(if *f > 0.0 { ".inf" } else { "-.inf" });
            } else {
                gofmt::print_action(out, v);
            }
        }
        // yaml.v2 writes a json.Number as a number when it is one.
        Value::Number(n) => {
            if serde_json::from_str::<serde_json::Number>(n).is_ok() {
                out.push_str(n);
            } else {
                yaml_string(out, n);
            }
        }
        Value::String(s) => yaml_string(out, s),
        Value::List(_) => out.push_str("[]"),
        Value::Map(_) => out.push_str("{}"),
        Value::Secret(_) => out.push_str("{}"),
    }
}

fn yaml_string(out: &mut Buf, s: &str) {
    if yaml_plain_ok(s) {
        out.push_str(s);
    } else {
        json_string(out, s, false);
    }
}

/// Whether `s` reads back as the same string when written without quotes.
fn yaml_plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if !(first.is_alphanumeric()
        || matches!(first, '/' | '.' | '_' | '(' | '$' | '^' | '+' | '=' | '~' | '<' | ';'))
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
        || !s.chars().all(|c| {
            !c.is_control()
                && c != '\u{FEFF}'
                && c != '\u{2028}'
                && c != '\u{2029}'
                && c != '\u{85}'
        })
        || s.chars().any(|c| {
            matches!(
                c,
                '\t' | '\n'
                    | '\r'
                    | '"'
                    | '\''
                    | '`'
                    | '{'
                    | '}'
                    | '['
                    | ']'
                    | ','
                    | '&'
                    | '*'
                    | '!'
                    | '|'
                    | '>'
                    | '%'
                    | '@'
                    | '#'
                    | '\\'
            )
        })
    {
        return false;
    }
    !yaml_reads_as_non_string(s)
}

/// Plain scalars that YAML 1.1 or 1.2 would read as null, a bool, a number or a date.
fn yaml_reads_as_non_string(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "~" | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".inf"
            | "+.inf"
            | "-.inf"
            | ".nan"
    ) {
        return true;
    }
    // Anything made only of number-ish characters and starting like a number is quoted: this
    // covers ints (also octal, hex, sexagesimal, with `_`), floats and timestamps.
    let numberish = |c: char| {
        c.is_ascii_hexdigit()
            || matches!(
                c,
                '.' | '_' | ':' | '-' | '+' | 'x' | 'X' | 'o' | 'O' | 't' | 'T' | 'z' | 'Z' | ' '
            )
    };
    let starts_numeric = lower.starts_with(|c: char| c.is_ascii_digit())
        || ((lower.starts_with(['-', '+', '.']))
            && lower[1..].starts_with(|c: char| c.is_ascii_digit()));
    starts_numeric && s.chars().all(numberish)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(j: serde_json::Value) -> Value {
        Value::from(j)
    }

    #[test]
    fn json_matches_go_encoding() {
        let out =
            to_json(&v(serde_json::json!({"b": [1, "x<y"], "a": null})), false).unwrap_or_default();
        assert_eq!(out.as_str(), r#"{"a":null,"b":[1,"x\u003cy"]}"#);
        let mut f = Buf::new();
        for x in [1e21, 1e-7, 0.5, 100.0, 123456789.0] {
            json_float(&mut f, x).unwrap_or_default();
            f.push(' ');
        }
        assert_eq!(f.as_str(), "1e+21 1e-7 0.5 100 123456789 ");
    }

    #[test]
    fn pretty_json_matches_go_marshal_indent() {
        let out = to_json(&v(serde_json::json!({"a": {"b": [1, 2]}, "c": {}, "d": []})), true)
            .unwrap_or_default();
        assert_eq!(
            out.as_str(),
            "{\n  \"a\": {\n    \"b\": [\n      1,\n      2\n    ]\n  },\n  \"c\": {},\n  \"d\": []\n}"
        );
    }

    #[test]
    fn yaml_quotes_strings_that_would_read_as_something_else() {
        let out = to_yaml(&v(serde_json::json!({
            "plain": "hello world", "bool": "true", "num": "0123", "empty": "", "colon": "a: b",
            "multi": "a\nb", "date": "2001-12-14", "lead": " x", "dash": "-x", "port": 8080,
            "nested": {"k": [1, {"x": "val", "y": "n"}]}, "none": null, "list": [], "url": "http://h/p"
        })));
        let want = r#"bool: "true"
colon: "a: b"
dash: "-x"
date: "2001-12-14"
empty: ""
lead: " x"
list: []
multi: "a\nb"
nested:
  k:
  - 1
  - x: val
    "y": "n"
none: null
num: "0123"
plain: hello world
port: 8080
url: http://h/p"#;
        assert_eq!(out.as_str(), want);
    }
}
