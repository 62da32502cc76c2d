//! From policy text to rules. HCL goes through `hcl-rs` (whose errors carry line and column);
//! JSON is the same structure. Every rejection names what is wrong and where.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use thiserror::Error;

use super::{Capabilities, PathRule};

#[derive(Debug, Error)]
pub enum PolicyError {
    /// Not valid HCL or JSON; the message has the line and column.
    #[error("{0}")]
    Syntax(String),
    #[error(
        "unknown capability {0:?} (known: create, read, update, patch, delete, list, sudo, subscribe, deny)"
    )]
    UnknownCapability(String),
    #[error("unknown key {0:?} at the top level: a policy holds path \"PATTERN\" {{ ... }} blocks")]
    UnknownTopLevelKey(String),
    #[error("path {path:?}: unknown key {key:?}")]
    UnknownKey { path: String, key: String },
    #[error("path {path:?}: {msg}")]
    InvalidRule { path: String, msg: String },
    #[error("missing required parameter {0:?}")]
    MissingParameter(String),
    #[error("parameter {0:?} is not permitted by policy")]
    ParameterDenied(String),
    #[error("{0}")]
    Format(String),
    /// Over one of the caps a policy must keep to be written.
    #[error("{0}")]
    TooLarge(String),
}

/// The largest policy text accepted when a policy is written. Real policies are kilobytes; this
/// bounds the parse work one write can cost.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// HCL only: the most `=` and `:` characters a policy written may hold. Every attribute and every
/// object entry needs one, so this bounds the entries of any one object literal, which hcl-edit's
/// parser builds in O(k²) (80,000 entries in 1 MB: 22 s). Real policies have one or two per rule.
pub const MAX_POLICY_ASSIGNMENTS: usize = 10_000;

/// The caps a policy must keep to be written ([`super::Policy::parse_new`]). Stored policies are
/// read without them, so one written before a cap existed still loads.
pub(crate) fn check_size(text: &str) -> Result<(), PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge(format!(
            "policy is {} bytes; the limit is {MAX_POLICY_BYTES} bytes (1 MiB): split it into several policies",
            text.len()
        )));
    }
    if !looks_like_json(text) {
        let n = text.bytes().filter(|b| *b == b'=' || *b == b':').count();
        if n > MAX_POLICY_ASSIGNMENTS {
            return Err(PolicyError::TooLarge(format!(
                "policy has {n} attributes and object entries ('=' or ':'); the limit is {MAX_POLICY_ASSIGNMENTS}: split it into several policies"
            )));
        }
    }
    Ok(())
}

/// Wrapping TTLs a policy written may name: none above `max` (the system max_lease_ttl), since
/// no wrapping token may live longer; a `min_wrapping_ttl` above it would make the path unusable.
pub(crate) fn check_wrapping_ttls(rules: &[PathRule], max: u64) -> Result<(), PolicyError> {
    for r in rules {
        for (key, v) in
            [("min_wrapping_ttl", r.min_wrapping_ttl), ("max_wrapping_ttl", r.max_wrapping_ttl)]
        {
            if let Some(v) = v.filter(|v| *v > max) {
                return Err(invalid(
                    &r.pattern,
                    format!(
                        "{key} of {v}s exceeds the system max_lease_ttl of {max}s: no wrapping token can live that long"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

fn to_value(text: &str) -> Result<Value, PolicyError> {
    if looks_like_json(text) {
        return serde_json::from_str(text)
            .map_err(|e| PolicyError::Syntax(format!("invalid JSON policy: {e}")));
    }
    // Not `hcl::from_str::<hcl::Value>`: see [`super::body`] for why.
    let body: hcl::Body = hcl::parse(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    super::body::body_to_json(body)
}

pub(crate) fn rules(text: &str) -> Result<Vec<PathRule>, PolicyError> {
    let root = to_value(text)?;
    let obj = match root {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(PolicyError::Syntax("a policy must be a set of path blocks".into())),
    };
    let mut out = Vec::new();
    for (key, value) in &obj {
        match key.as_str() {
            "path" => {
                let blocks = value.as_object().ok_or_else(|| {
                    PolicyError::Syntax("path must be written as path \"PATTERN\" { ... }".into())
                })?;
                for (pattern, body) in blocks {
                    match body {
                        Value::Array(items) => {
                            for item in items {
                                out.push(rule(pattern, item)?);
                            }
                        }
                        other => out.push(rule(pattern, other)?),
                    }
                }
            }
            // Vault accepts a `name` key and ignores it; the name comes from the API path.
            "name" => {}
            other => return Err(PolicyError::UnknownTopLevelKey(other.to_owned())),
        }
    }
    Ok(out)
}

fn invalid(path: &str, msg: impl Into<String>) -> PolicyError {
    PolicyError::InvalidRule { path: path.to_owned(), msg: msg.into() }
}

fn check_pattern(pattern: &str) -> Result<String, PolicyError> {
    let p = pattern.trim_start_matches('/');
    if p.is_empty() {
        return Err(invalid(pattern, "the path pattern is empty (use \"*\" for every path)"));
    }
    if let Some(i) = p.find('*')
        && i != p.len() - 1
    {
        return Err(invalid(
            pattern,
            "'*' is only allowed at the end; use '+' for one path segment",
        ));
    }
    Ok(p.to_owned())
}

fn rule(pattern: &str, body: &Value) -> Result<PathRule, PolicyError> {
    let pattern_clean = check_pattern(pattern)?;
    let body = match body {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(invalid(pattern, "a path block must be { ... }")),
    };
    let mut r = PathRule {
        pattern: pattern_clean,
        capabilities: Capabilities::NONE,
        allowed_parameters: None,
        denied_parameters: None,
        required_parameters: Vec::new(),
        min_wrapping_ttl: None,
        max_wrapping_ttl: None,
        require_sealed_response: false,
        subscribe_event_types: Vec::new(),
    };
    for (key, v) in &body {
        match key.as_str() {
            "capabilities" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| invalid(pattern, "capabilities must be a list of strings"))?;
                for c in list {
                    let name = c.as_str().ok_or_else(|| {
                        invalid(pattern, "capabilities must be a list of strings")
                    })?;
                    r.capabilities = r
                        .capabilities
                        .union(Capabilities::parse(name.trim().to_lowercase().as_str())?);
                }
            }
            "policy" => {
                let level =
                    v.as_str().ok_or_else(|| invalid(pattern, "policy must be a string"))?;
                r.capabilities = r.capabilities.union(legacy(pattern, level)?);
            }
            "allowed_parameters" => r.allowed_parameters = Some(parameters(pattern, key, v)?),
            "denied_parameters" => r.denied_parameters = Some(parameters(pattern, key, v)?),
            "required_parameters" => {
                let list = v.as_array().ok_or_else(|| {
                    invalid(pattern, "required_parameters must be a list of strings")
                })?;
                for p in list {
                    r.required_parameters.push(
                        p.as_str()
                            .ok_or_else(|| {
                                invalid(pattern, "required_parameters must be a list of strings")
                            })?
                            .to_owned(),
                    );
                }
            }
            "subscribe_event_types" => {
                let msg = "subscribe_event_types must be a list of strings";
                let list = v.as_array().ok_or_else(|| invalid(pattern, msg))?;
                for t in list {
                    let t = t.as_str().ok_or_else(|| invalid(pattern, msg))?;
                    r.subscribe_event_types.push(t.to_owned());
                }
            }
            "min_wrapping_ttl" => r.min_wrapping_ttl = Some(ttl(pattern, key, v)?),
            "max_wrapping_ttl" => r.max_wrapping_ttl = Some(ttl(pattern, key, v)?),
            "require_sealed_response" => {
                r.require_sealed_response = v.as_bool().ok_or_else(|| {
                    invalid(pattern, "require_sealed_response must be true or false")
                })?;
            }
            other => {
                return Err(PolicyError::UnknownKey {
                    path: pattern.to_owned(),
                    key: other.to_owned(),
                });
            }
        }
    }
    if let (Some(min), Some(max)) = (r.min_wrapping_ttl, r.max_wrapping_ttl)
        && max < min
    {
        return Err(invalid(pattern, "max_wrapping_ttl cannot be less than min_wrapping_ttl"));
    }
    Ok(r)
}

/// The pre-capabilities `policy = "..."` levels, as Vault maps them.
fn legacy(pattern: &str, level: &str) -> Result<Capabilities, PolicyError> {
    use Capabilities as C;
    let write =
        C::CREATE.union(C::READ).union(C::UPDATE).union(C::PATCH).union(C::DELETE).union(C::LIST);
    Ok(match level {
        "deny" => C::DENY,
        "read" => C::READ.union(C::LIST),
        "write" => write,
        "sudo" => write.union(C::SUDO),
        other => {
            return Err(invalid(
                pattern,
                format!("unknown policy level {other:?} (deny, read, write or sudo)"),
            ));
        }
    })
}

fn parameters(
    pattern: &str,
    key: &str,
    v: &Value,
) -> Result<BTreeMap<String, Vec<Value>>, PolicyError> {
    let m = v.as_object().ok_or_else(|| {
        invalid(pattern, format!("{key} must map parameter names to lists of values"))
    })?;
    let mut out = BTreeMap::new();
    for (name, values) in m {
        let list = match values {
            Value::Array(a) => a.clone(),
            Value::Null => Vec::new(),
            other => vec![other.clone()],
        };
        out.insert(name.clone(), list);
    }
    Ok(out)
}

fn ttl(pattern: &str, key: &str, v: &Value) -> Result<u64, PolicyError> {
    // Unbounded here, so that a policy stored before durations had a ceiling still loads; a
    // policy being written is held to the system maximum by `check_wrapping_ttls`.
    let secs = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => crate::time::parse_duration_unbounded(s).map(|d| d.as_secs()),
        _ => None,
    };
    secs.ok_or_else(|| invalid(pattern, format!("{key} must be a duration like \"5m\"")))
}

/// Whether HCL text has a comment (`#`, `//` or `/*` outside a string literal).
fn has_comment(text: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut prev = '\0';
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '#' || (prev == '/' && (c == '/' || c == '*')) {
            return true;
        }
        prev = if in_string { '\0' } else { c };
    }
    false
}

/// Checks a policy and rewrites its HCL in canonical layout (for `coffer policy fmt`).
pub fn format_hcl(text: &str) -> Result<String, PolicyError> {
    if looks_like_json(text) {
        return Err(PolicyError::Format("policy fmt formats HCL; this policy is JSON".into()));
    }
    // The formatter works on the parsed document, which has no comments: refuse rather than
    // silently drop what the author wrote.
    if has_comment(text) {
        return Err(PolicyError::Format(
            "policy fmt cannot keep comments yet, and will not drop them: remove them first or leave the file as it is".into(),
        ));
    }
    rules(text)?;
    let body: hcl::Body = hcl::parse(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    use hcl::format::Format as _;
    // vault's layout: lists of capabilities stay on one line.
    let mut f = hcl::format::Formatter::builder().compact_arrays(true).build_vec();
    let bytes = body.format_vec(&mut f).map_err(|e| PolicyError::Format(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| PolicyError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_hcl_reports_line_and_column() {
        let e = rules("path \"a\" {\n  capabilities = [\"read\"\n").expect_err("bad");
        let msg = e.to_string();
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = rules("path \"a\" {\n  capabilites = [\"read\"]\n}\n").expect_err("typo");
        assert!(e.to_string().contains("capabilites"), "{e}");
        let e = rules("paths \"a\" {\n  capabilities = [\"read\"]\n}\n").expect_err("typo");
        assert!(e.to_string().contains("paths"), "{e}");
    }

    #[test]
    fn json_policy_parses_like_hcl() {
        let hcl =
            rules("path \"secret/*\" {\n  capabilities = [\"read\", \"list\"]\n}\n").expect("hcl");
        let json =
            rules(r#"{"path": {"secret/*": {"capabilities": ["read", "list"]}}}"#).expect("json");
        assert_eq!(hcl, json);
    }

    #[test]
    fn legacy_policy_field_maps_to_capabilities() {
        let r = rules("path \"a\" {\n  policy = \"read\"\n}\n").expect("legacy");
        assert_eq!(r[0].capabilities.names(), ["read", "list"]);
        let r = rules("path \"a\" {\n  policy = \"sudo\"\n}\n").expect("legacy");
        assert!(r[0].capabilities.contains(Capabilities::SUDO));
        assert!(rules("path \"a\" {\n  policy = \"admin\"\n}\n").is_err());
    }

    #[test]
    fn misplaced_glob_is_refused_with_a_hint() {
        let e = rules("path \"a/*/b\" {\n  capabilities = [\"read\"]\n}\n").expect_err("glob");
        assert!(e.to_string().contains("'+'"), "{e}");
    }

    #[test]
    fn repeated_path_blocks_are_all_kept() {
        let r = rules("path \"a\" {\n  capabilities = [\"read\"]\n}\npath \"a\" {\n  capabilities = [\"list\"]\n}\n").expect("ok");
        assert_eq!(r.len(), 2);
    }

    fn many_rules(n: usize) -> String {
        (0..n)
            .map(|i| format!("path \"secret/data/app{i}/*\" {{\n  capabilities = [\"read\"]\n}}\n"))
            .collect()
    }

    #[test]
    fn a_large_policy_under_the_caps_parses() {
        let text = many_rules(5_000);
        let p = super::super::Policy::parse_new("big", &text, 3600).expect("under the caps");
        assert_eq!(p.rules.len(), 5_000);
        assert!(p.rules.iter().any(|r| r.pattern == "secret/data/app4999/*"));
    }

    #[test]
    fn a_policy_over_the_caps_is_refused_naming_the_limit() {
        use super::super::Policy;
        let text = many_rules(MAX_POLICY_ASSIGNMENTS + 1);
        assert!(text.len() < MAX_POLICY_BYTES, "the assignment cap is the one hit");
        let e = Policy::parse_new("big", &text, 3600).expect_err("too many");
        assert!(e.to_string().contains(&MAX_POLICY_ASSIGNMENTS.to_string()), "{e}");
        // One object literal of many entries: the case hcl-edit parses in O(k²).
        let entries: String =
            (0..=MAX_POLICY_ASSIGNMENTS).map(|i| format!("k{i} = []\n")).collect();
        let text = format!("path \"a\" {{\n allowed_parameters = {{\n{entries}}}\n}}\n");
        assert!(Policy::parse_new("obj", &text, 3600).is_err());
        let json = format!(
            "{{\"path\": {{\"a\": {{\"policy\": \"{}\"}}}}}}",
            "x".repeat(MAX_POLICY_BYTES)
        );
        let e = Policy::parse_new("json", &json, 3600).expect_err("too big");
        assert!(e.to_string().contains(&MAX_POLICY_BYTES.to_string()), "{e}");
        // Stored policies are read without the caps, so one written before them still loads.
        assert!(Policy::parse("stored", &many_rules(MAX_POLICY_ASSIGNMENTS + 1)).is_ok());
    }

    #[test]
    fn wrapping_ttls_beyond_the_system_max_are_refused_when_written() {
        use super::super::Policy;
        let rule = |k: &str, v: &str| {
            format!("path \"a\" {{\n  capabilities = [\"read\"]\n  {k} = \"{v}\"\n}}\n")
        };
        for k in ["min_wrapping_ttl", "max_wrapping_ttl"] {
            let e = Policy::parse_new("p", &rule(k, "2h"), 3600).expect_err(k);
            let msg = e.to_string();
            assert!(msg.contains(k) && msg.contains("3600s"), "{msg}");
            assert!(Policy::parse_new("p", &rule(k, "1h"), 3600).is_ok());
            let huge = Policy::parse_new("p", &rule(k, "18446744073709551616"), 3600);
            assert!(huge.is_err(), "{k}: a value beyond u64 is refused, not wrapped");
        }
        let both = "path \"a\" {\n  min_wrapping_ttl = \"10m\"\n  max_wrapping_ttl = \"5m\"\n}\n";
        let e = Policy::parse_new("p", both, 3600).expect_err("min > max");
        assert!(e.to_string().contains("less than min_wrapping_ttl"), "{e}");
    }

    #[test]
    fn fmt_indents_and_keeps_meaning() {
        let out = format_hcl("path \"a/*\" {\ncapabilities=[\"read\"]\n}\n").expect("fmt");
        assert!(out.contains("  capabilities = [\"read\"]"), "{out}");
        assert_eq!(
            rules(&out).expect("reparse"),
            rules("path \"a/*\" {\n capabilities = [\"read\"]\n}").expect("orig")
        );
        assert!(format_hcl("path \"a\" {\n  capabilities = [\"fly\"]\n}").is_err());
        let e = format_hcl("# keep me\npath \"a\" {\n  capabilities = [\"read\"]\n}\n")
            .expect_err("comments");
        assert!(e.to_string().contains("comments"), "{e}");
        assert!(
            has_comment("a = 1 // x") && has_comment("/* x */") && !has_comment("path \"a/*\" {}")
        );
        assert!(!has_comment("path \"a#b//c\" {}"));
    }
}
