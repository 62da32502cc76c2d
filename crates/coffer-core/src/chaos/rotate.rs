//! The one-shot `rotate` fault: a database static role's password rotated now, or a new
//! version of a KV secret with fresh random values for the keys named.
//!
//! Guarantees: the change goes through the engine's own write path (its locks, versioning,
//! events for subscribed agents) exactly as a client's write would; the other keys of a KV
//! secret keep their values; a new value is 32 random base62 characters and never appears in
//! a log or an answer. Not done: an ACL check on the target path. Whoever may start faults
//! (sudo on `sys/chaos/faults`) may rotate any secret this way, as documented.

use std::sync::Arc;

use coffer_wire::chaos::FaultSpec;
use serde_json::{Map, Value};

use crate::core::{Active, Core};
use crate::logical::{Error, Operation, Response, Result};
use crate::mount::Route;
use crate::token::TokenEntry;

/// Who asked, for the engine's request.
pub(crate) struct OnBehalf<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) caller: Option<&'a TokenEntry>,
}

async fn call(
    active: &Active,
    route: &Arc<Route>,
    by: &OnBehalf<'_>,
    op: Operation,
    path: &str,
    data: &Map<String, Value>,
) -> Result<Response> {
    crate::pipeline::call_backend(active, route, by.request_id, by.caller, op, path, data).await
}

impl Core {
    pub(crate) async fn chaos_rotate(
        &self,
        active: &Arc<Active>,
        spec: &FaultSpec,
        by: &OnBehalf<'_>,
    ) -> Result<()> {
        let path = crate::path::clean(spec.path.as_deref().unwrap_or(""))?;
        let path = path.trim_matches('/');
        let router = active.router()?;
        let (route, rel) = router
            .route(path)
            .ok_or_else(|| Error::invalid(format!("rotate: nothing is mounted at {path:?}")))?;
        if route.table != crate::mount::Table::Secrets {
            return Err(Error::invalid(format!("rotate: {path:?} is not a secrets engine path")));
        }
        let empty = Map::new();
        match route.entry.kind.as_str() {
            "database" => {
                if spec.keys.is_some() {
                    return Err(Error::invalid("rotate: keys apply to KV secrets only"));
                }
                let name =
                    rel.strip_prefix("static-roles/").filter(|n| !n.is_empty() && !n.contains('/'));
                let name = name.ok_or_else(|| {
                    Error::invalid(format!(
                        "rotate: a database path must be <mount>/static-roles/<name>, not {path:?}"
                    ))
                })?;
                let target = format!("rotate-role/{name}");
                call(active, &route, by, Operation::Update, &target, &empty).await?;
                Ok(())
            }
            "kv" => {
                let keys = spec.keys.as_ref().ok_or_else(|| {
                    Error::invalid("rotate: a KV secret needs keys: the keys given new values")
                })?;
                let v2 = route.entry.options.get("version").map(String::as_str) == Some("2");
                let rel = match rel.strip_prefix("data/") {
                    Some(r) if v2 => r,
                    _ => rel,
                };
                if rel.is_empty() {
                    return Err(Error::invalid("rotate: name a secret, not the mount"));
                }
                let rel = if v2 { format!("data/{rel}") } else { rel.to_owned() };
                let current = match call(active, &route, by, Operation::Read, &rel, &empty).await {
                    Ok(r) => r.data.unwrap_or_default(),
                    Err(Error::NotFound) => Map::new(),
                    Err(e) => return Err(e),
                };
                let mut values = if v2 {
                    match current.get("data") {
                        Some(Value::Object(m)) => m.clone(),
                        _ => Map::new(),
                    }
                } else {
                    current
                };
                for k in keys {
                    values.insert(k.clone(), Value::String(crate::random::random_base62(32)));
                }
                let body = if v2 {
                    let mut b = Map::new();
                    b.insert("data".into(), Value::Object(values));
                    b
                } else {
                    values
                };
                call(active, &route, by, Operation::Update, &rel, &body).await?;
                Ok(())
            }
            other => Err(Error::invalid(format!(
                "rotate: {path:?} is a {other} mount; rotate takes a database static role or a \
                 KV secret"
            ))),
        }
    }
}
