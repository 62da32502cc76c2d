//! The JSONPath subset Chaos Toolkit experiments use in practice.
//!
//! Supported: the root `$`, member `.name` and `['name']` / `["name"]`, wildcard `.*` and `[*]`,
//! index `[n]` (negative counts from the end), and recursive descent `..name`, `..*`, `..[n]`.
//! Not supported (refused by [`Path::parse`], never silently mis-evaluated): filters `[?(...)]`,
//! slices `[a:b]`, unions `[a,b]`, script expressions, and functions. Matches are returned in
//! document order (objects in key order as parsed).

use serde_json::Value;

use crate::Error;

#[derive(Clone, Debug, PartialEq)]
enum Selector {
    Name(String),
    Wildcard,
    Index(i64),
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Child(Selector),
    Descendant(Selector),
}

/// A parsed JSONPath.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    segments: Vec<Segment>,
}

fn invalid(path: &str, why: &str) -> Error {
    Error::Invalid(format!("JSON path {path:?}: {why}"))
}

impl Path {
    pub fn parse(path: &str) -> Result<Self, Error> {
        let text = path.trim();
        let mut rest = text.strip_prefix('$').ok_or_else(|| invalid(path, "must start with $"))?;
        let mut segments = Vec::new();
        while !rest.is_empty() {
            let descendant = rest.starts_with("..");
            if descendant {
                rest = &rest[2..];
            } else if let Some(r) = rest.strip_prefix('.') {
                rest = r;
            } else if !rest.starts_with('[') {
                return Err(invalid(path, "expected '.' or '['"));
            }
            let selector;
            if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').ok_or_else(|| invalid(path, "unclosed '['"))?;
                let inner = r[..end].trim();
                rest = &r[end + 1..];
                selector = if inner == "*" {
                    Selector::Wildcard
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    Selector::Name(q.to_owned())
                } else if let Ok(i) = inner.parse::<i64>() {
                    Selector::Index(i)
                } else {
                    return Err(invalid(path, "unsupported bracket expression"));
                };
            } else if let Some(r) = rest.strip_prefix('*') {
                rest = r;
                selector = Selector::Wildcard;
            } else {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let name = &rest[..end];
                if name.is_empty()
                    || !name.chars().all(|c| c == '_' || c == '-' || c.is_alphanumeric())
                {
                    return Err(invalid(path, "unsupported member name"));
                }
                rest = &rest[end..];
                selector = Selector::Name(name.to_owned());
            }
            segments.push(if descendant {
                Segment::Descendant(selector)
            } else {
                Segment::Child(selector)
            });
        }
        Ok(Self { segments })
    }

    /// The values the path selects in `doc`.
    pub fn find<'a>(&self, doc: &'a Value) -> Vec<&'a Value> {
        let mut nodes = vec![doc];
        for segment in &self.segments {
            let mut next = Vec::new();
            match segment {
                Segment::Child(sel) => {
                    for n in nodes {
                        select(sel, n, &mut next);
                    }
                }
                Segment::Descendant(sel) => {
                    for n in nodes {
                        let mut all = Vec::new();
                        descend(n, &mut all);
                        for d in all {
                            select(sel, d, &mut next);
                        }
                    }
                }
            }
            nodes = next;
        }
        nodes
    }
}

fn select<'a>(sel: &Selector, node: &'a Value, out: &mut Vec<&'a Value>) {
    match (sel, node) {
        (Selector::Name(name), Value::Object(map)) => out.extend(map.get(name)),
        (Selector::Wildcard, Value::Object(map)) => out.extend(map.values()),
        (Selector::Wildcard, Value::Array(items)) => out.extend(items.iter()),
        (Selector::Index(i), Value::Array(items)) => {
            let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
            let at = if *i < 0 { len + i } else { *i };
            if let Ok(at) = usize::try_from(at) {
                out.extend(items.get(at));
            }
        }
        _ => {}
    }
}

/// The node and all its descendants, pre-order.
fn descend<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(node);
    match node {
        Value::Object(map) => map.values().for_each(|v| descend(v, out)),
        Value::Array(items) => items.iter().for_each(|v| descend(v, out)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use serde_json::json;

    use super::*;

    fn find(path: &str, doc: &Value) -> Vec<Value> {
        Path::parse(path).unwrap().find(doc).into_iter().cloned().collect()
    }

    #[test]
    fn supported_forms_select_what_they_say() {
        let doc = json!({"a": {"b": 1, "list": [{"b": 2}, {"b": 3}, {"c": 4}]}});
        assert_eq!(find("$.a.b", &doc), vec![json!(1)]);
        assert_eq!(find("$['a']['b']", &doc), vec![json!(1)]);
        assert_eq!(find("$.a.list[0].b", &doc), vec![json!(2)]);
        assert_eq!(find("$.a.list[-1].c", &doc), vec![json!(4)]);
        assert_eq!(find("$.a.list[*].b", &doc), vec![json!(2), json!(3)]);
        assert_eq!(find("$..b", &doc), vec![json!(1), json!(2), json!(3)]);
        assert_eq!(find("$", &doc), vec![doc.clone()]);
        assert!(find("$.a.missing", &doc).is_empty());
        assert!(find("$.a.list[7]", &doc).is_empty());
    }

    #[test]
    fn unsupported_forms_are_refused_not_misread() {
        for p in ["a.b", "$.a[?(@.b>1)]", "$.a[0:2]", "$.a[0,1]", "$.a[", "$.a b"] {
            assert!(Path::parse(p).is_err(), "{p}");
        }
    }
}
