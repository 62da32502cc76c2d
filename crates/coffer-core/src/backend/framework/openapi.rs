//! The OpenAPI 3 document of the mounted backends, built from their path declarations (Vault's
//! `sys/internal/specs/openapi`, in the shape OpenBao's `sdk/framework` gives it).
//!
//! Guarantees: every path a mounted framework backend declares appears under its mount's
//! prefix, with one operation per HTTP method it serves (`LIST` as `GET ?list=true`), its
//! captures as path parameters and its other fields as the JSON request body of its writes, in
//! a deterministic order; the `sys/` paths come from the system backend's declarations. It does
//! *not* describe responses beyond their status.

use serde_json::{Map, Value, json};

use super::pattern;
use super::spec::Spec;
use crate::logical::Operation;

/// One mount, as the document describes it.
pub struct Mount<'a> {
    /// `secret/`, `auth/approle/` or `sys/`; empty in a help answer, whose paths are relative
    /// to the mount, as Vault gives them.
    pub path: &'a str,
    /// Vault's tag of the mount's operations: `secrets`, `auth` or `system`.
    pub tag: &'static str,
    pub specs: Vec<Spec>,
    pub unauthenticated: &'a [&'a str],
    pub sudo: &'a [&'a str],
}

/// The whole document; `version` is the server's.
pub fn document(version: &str, mounts: &[Mount<'_>]) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for m in mounts {
        for s in &m.specs {
            let (url, item) = path_item(m, s, &mut schemas);
            paths.insert(url, item);
        }
    }
    json!({
        "openapi": "3.0.2",
        "info": {
            "title": "Coffer API",
            "description": "HTTP API that gives you full access to Coffer. All API routes are \
                            prefixed with `/v1/`.",
            "version": version,
            "license": { "name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0" },
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

fn path_item(m: &Mount<'_>, s: &Spec, schemas: &mut Map<String, Value>) -> (String, Value) {
    let rel = pattern::template(s.pattern);
    let url = format!("/{}{rel}", m.path);
    let captures: Vec<&str> = pattern::capture_names(s.pattern).collect();
    let described = |name: &str| s.fields.iter().find(|f| f.name == name);
    let parameters: Vec<Value> = captures
        .iter()
        .map(|c| {
            json!({
                "name": c,
                "description": described(c).map_or("", |f| f.description),
                "in": "path",
                "required": true,
                "schema": { "type": "string" },
            })
        })
        .collect();
    let mut item = Map::new();
    item.insert("description".into(), json!(s.synopsis));
    item.insert("parameters".into(), json!(parameters));
    let matches_special = |list: &[&str]| crate::backend::path_matches(list, s.pattern);
    if matches_special(m.unauthenticated) {
        item.insert("x-vault-unauthenticated".into(), json!(true));
    }
    if matches_special(m.sudo) {
        item.insert("x-vault-sudo".into(), json!(true));
    }
    if s.create_supported {
        item.insert("x-vault-createSupported".into(), json!(true));
    }
    let has = |o: Operation| s.operations.contains(&o);
    let tag = m.tag;
    let id_base = operation_id_base(m.path, &rel);
    let mut op = |method: &str, verb: &str, extra: Vec<Value>, body: bool| {
        let id = format!("{verb}-{id_base}");
        let mut o = Map::new();
        o.insert("summary".into(), json!(s.synopsis));
        o.insert("operationId".into(), json!(id));
        o.insert("tags".into(), json!([tag]));
        if !extra.is_empty() {
            o.insert("parameters".into(), json!(extra));
        }
        if body && let Some(schema) = request_schema(s, &captures) {
            let name = format!("{}Request", title_case(&id));
            schemas.insert(name.clone(), schema);
            o.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": { "application/json": {
                        "schema": { "$ref": format!("#/components/schemas/{name}") },
                    }},
                }),
            );
        }
        o.insert("responses".into(), json!({ "200": { "description": "OK" } }));
        item.insert(method.into(), Value::Object(o));
    };
    let list_param = |required: bool| {
        if required {
            json!({
                "name": "list", "description": "Must be set to `true`", "in": "query",
                "required": true, "schema": { "type": "string", "enum": ["true"] },
            })
        } else {
            json!({
                "name": "list", "description": "Return a list if `true`", "in": "query",
                "schema": { "type": "string" },
            })
        }
    };
    if has(Operation::Read) {
        let extra = if has(Operation::List) { vec![list_param(false)] } else { Vec::new() };
        op("get", "read", extra, false);
    } else if has(Operation::List) {
        op("get", "list", vec![list_param(true)], false);
    }
    if has(Operation::Update) || has(Operation::Create) {
        op("post", "write", Vec::new(), true);
    }
    if has(Operation::Patch) {
        op("patch", "patch", Vec::new(), true);
    }
    if has(Operation::Delete) {
        op("delete", "delete", Vec::new(), false);
    }
    (url, Value::Object(item))
}

/// The request body of a write: every field that is not a path capture.
fn request_schema(s: &Spec, captures: &[&str]) -> Option<Value> {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in s.fields.iter().filter(|f| !captures.contains(&f.name)) {
        let (ty, format, items) = f.kind.openapi();
        let mut p = Map::new();
        p.insert("type".into(), json!(ty));
        p.insert("description".into(), json!(f.description));
        if let Some(format) = format {
            p.insert("format".into(), json!(format));
        }
        if let Some(items) = items {
            p.insert("items".into(), json!({ "type": items }));
        }
        if let Some(d) = f.default {
            p.insert("default".into(), d.to_value());
        }
        if f.required {
            required.push(f.name);
        }
        props.insert(f.name.into(), Value::Object(p));
    }
    if props.is_empty() {
        return None;
    }
    required.sort_unstable();
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(props));
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    Some(Value::Object(schema))
}

/// `secret/` + `data/{path}` → `secret-data-path`.
fn operation_id_base(mount: &str, rel: &str) -> String {
    let mut out = String::new();
    for c in format!("{mount}{rel}").chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// `read-secret-data-path` → `ReadSecretDataPath`.
fn title_case(id: &str) -> String {
    id.split('-')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| f.to_ascii_uppercase().to_string() + c.as_str())
        })
        .collect()
}
