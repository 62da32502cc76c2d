//! Printing answers the way `vault` does: a two-column table by default, the whole JSON body with
//! `-format=json` (or the same as YAML with `-format=yaml`), or one raw value with `-field=NAME`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::ValueEnum;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Json,
    Yaml,
}

impl Format {
    /// JSON or YAML: the answer as data rather than a table.
    pub(super) fn structured(self) -> bool {
        matches!(self, Format::Json | Format::Yaml)
    }
}

/// Prints `v` as data: pretty JSON, or YAML for `-format=yaml` (a table format prints JSON, for
/// the callers that have no table for `v`).
pub(super) fn print_value<T: serde::Serialize>(v: &T, format: Format) -> Result<()> {
    match format {
        Format::Yaml => print!("{}", to_yaml(v)?),
        Format::Json | Format::Table => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

fn to_yaml<T: serde::Serialize>(v: &T) -> Result<String> {
    let mut s = serde_saphyr::to_string(v)?;
    if !s.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &[Format::Table, Format::Json, Format::Yaml]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Yaml => "yaml",
        }))
    }
}

/// Exit code 2: the command ran, but the answer is "no" (sealed, nothing at that path).
pub(super) const EXIT_NEGATIVE: u8 = 2;

/// What a read of an empty path prints, as vault does; exits `EXIT_NEGATIVE`.
pub(super) fn not_found(path: &str) -> ExitCode {
    eprintln!("No value found at {path}");
    ExitCode::from(EXIT_NEGATIVE)
}

/// Go-style compact duration, as vault prints TTLs: `768h`, `1h30m`, `45s`, `0s`.
pub(super) fn fmt_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// How vault renders a JSON value in a table cell.
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(cell).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter().map(|(k, v)| format!("{k}:{}", cell(v))).collect::<Vec<_>>().join(" ")
        ),
        other => other.to_string(),
    }
}

pub(super) fn table(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(3).max(3);
    let mut out = format!("{:<width$}    Value\n{:<width$}    -----\n", "Key", "---");
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}    {v}\n"));
    }
    out
}

fn auth_rows(auth: &Map<String, Value>) -> Vec<(String, String)> {
    let g = |k: &str| auth.get(k).cloned().unwrap_or(Value::Null);
    let mut rows = vec![
        ("token".to_owned(), cell(&g("client_token"))),
        ("token_accessor".to_owned(), cell(&g("accessor"))),
        (
            "token_duration".to_owned(),
            match g("lease_duration").as_u64() {
                Some(0) | None => "∞".into(),
                Some(s) => fmt_duration(s),
            },
        ),
        ("token_renewable".to_owned(), cell(&g("renewable"))),
        ("token_policies".to_owned(), cell(&g("token_policies"))),
        (
            "identity_policies".to_owned(),
            match g("identity_policies") {
                Value::Null => "[]".into(),
                v => cell(&v),
            },
        ),
        ("policies".to_owned(), cell(&g("policies"))),
    ];
    if let Some(Value::Object(meta)) = auth.get("metadata") {
        for (k, v) in meta {
            rows.push((format!("token_meta_{k}"), cell(v)));
        }
    }
    rows
}

/// Vault's rows for a wrapped answer.
fn wrap_rows(w: &Map<String, Value>) -> Vec<(String, String)> {
    let g = |k: &str| cell(w.get(k).unwrap_or(&Value::Null));
    let mut rows = vec![
        ("wrapping_token:".to_owned(), g("token")),
        ("wrapping_accessor:".to_owned(), g("accessor")),
        (
            "wrapping_token_ttl:".to_owned(),
            fmt_duration(w.get("ttl").and_then(Value::as_u64).unwrap_or(0)),
        ),
        ("wrapping_token_creation_time:".to_owned(), g("creation_time")),
        ("wrapping_token_creation_path:".to_owned(), g("creation_path")),
    ];
    if w.get("wrapped_accessor").and_then(Value::as_str).is_some_and(|a| !a.is_empty()) {
        rows.push(("wrapped_accessor:".to_owned(), g("wrapped_accessor")));
    }
    rows
}

/// The rows of an envelope: lease information, then data (or the auth or wrap block).
pub(super) fn envelope_rows(body: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    if let Some(Value::Object(w)) = body.get("wrap_info") {
        return wrap_rows(w);
    }
    if let Some(Value::Object(auth)) = body.get("auth") {
        return auth_rows(auth);
    }
    let lease_id = body.get("lease_id").and_then(Value::as_str).unwrap_or("");
    let dur = body.get("lease_duration").and_then(Value::as_u64).unwrap_or(0);
    if !lease_id.is_empty() {
        rows.push(("lease_id".into(), lease_id.to_owned()));
        rows.push(("lease_duration".into(), fmt_duration(dur)));
        rows.push((
            "lease_renewable".into(),
            cell(body.get("renewable").unwrap_or(&Value::Bool(false))),
        ));
    } else if dur > 0 {
        rows.push(("refresh_interval".into(), fmt_duration(dur)));
    }
    if let Some(Value::Object(data)) = body.get("data") {
        for (k, v) in data {
            rows.push((k.clone(), cell(v)));
        }
    }
    rows
}

/// Finds `-field` in the data, the auth block (under vault's table names), or the top level.
pub(super) fn field(body: &Value, name: &str) -> Result<String> {
    if let Some(v) = body.get("data").and_then(|d| d.get(name)) {
        return Ok(cell(v));
    }
    if let Some(Value::Object(auth)) = body.get("auth") {
        if let Some((_, v)) = auth_rows(auth).into_iter().find(|(k, _)| k == name) {
            return Ok(v);
        }
        if let Some(v) = auth.get(name) {
            return Ok(cell(v));
        }
    }
    if let Some(Value::Object(w)) = body.get("wrap_info")
        && let Some((_, v)) =
            wrap_rows(w).into_iter().find(|(k, _)| k.trim_end_matches(':') == name)
    {
        return Ok(v);
    }
    if let Some(v) = body.get(name) {
        return Ok(cell(v));
    }
    bail!("Field {name:?} not present in the response")
}

pub(super) fn print_warnings(body: &Value) {
    if let Some(Value::Array(w)) = body.get("warnings") {
        for w in w.iter().filter_map(Value::as_str) {
            eprintln!("WARNING! {w}");
        }
    }
}

/// Prints a generic answer in the chosen format.
pub(super) fn print_body(body: &Value, format: Format, field_name: Option<&str>) -> Result<()> {
    if let Some(f) = field_name {
        println!("{}", field(body, f)?);
        return Ok(());
    }
    match format {
        Format::Json | Format::Yaml => print_value(body, format)?,
        Format::Table => {
            print_warnings(body);
            if let Some(Value::Array(keys)) = body.get("data").and_then(|d| d.get("keys"))
                && body.get("data").and_then(Value::as_object).is_some_and(|d| d.len() == 1)
            {
                println!("Keys\n----");
                for k in keys {
                    println!("{}", cell(k));
                }
                return Ok(());
            }
            let rows = if body.get("request_id").is_some() {
                envelope_rows(body)
            } else {
                body.as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), cell(v))).collect())
                    .unwrap_or_default()
            };
            print!("{}", table(&rows));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_print_like_vault() {
        assert_eq!(fmt_duration(2_764_800), "768h");
        assert_eq!(fmt_duration(5400), "1h30m");
        assert_eq!(fmt_duration(45), "45s");
    }

    #[test]
    fn fields_are_found_in_data_then_auth() {
        let b = json!({"request_id": "x", "data": {"password": "pw"}, "auth": null});
        assert_eq!(field(&b, "password").expect("field"), "pw");
        let a = json!({"request_id": "x", "data": null, "auth": {"client_token": "t", "policies": ["a"]}});
        assert_eq!(field(&a, "token").expect("field"), "t");
        assert!(field(&a, "nope").is_err());
        let w = json!({"request_id": "x", "data": null, "wrap_info": {"token": "w", "ttl": 60}});
        assert_eq!(field(&w, "wrapping_token").expect("field"), "w");
        assert_eq!(field(&w, "wrapping_token_ttl").expect("field"), "1m");
    }

    #[test]
    fn yaml_reads_back_as_the_same_data() {
        // Strings that YAML would otherwise read as other types or structure.
        let v = json!({
            "keys": ["a", "b/"],
            "tricky": ["true", "null", "123", "- x", "a: b", "#c", "", " pad ", "two\nlines"],
            "n": 5, "f": 1.5, "b": false, "none": null, "nested": {"empty": {}, "list": []}
        });
        let yaml = to_yaml(&v).expect("yaml");
        let back: Value = serde_saphyr::from_str(&yaml).expect("parse");
        assert_eq!(back, v, "{yaml}");
        assert_eq!(to_yaml(&json!(["a"])).expect("yaml"), "- a\n");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&[("a".into(), "1".into()), ("longer".into(), "2".into())]);
        assert!(t.contains("Key       Value\n---       -----\na         1\nlonger    2\n"), "{t}");
    }
}
