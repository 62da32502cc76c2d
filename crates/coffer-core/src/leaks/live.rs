//! Which index entries are live: each one is confirmed against the store that owns its value,
//! and the ones that no longer hold are removed.
//!
//! Guarantees: a KV or static-password match means the value read through the engine now, at
//! that version, hashes to the candidate (so a value overwritten, a version deleted, destroyed
//! or pruned, a key deleted, a mount disabled, are all not live); a token match means the token
//! store's lookup accepts it (not revoked, not expired, uses left); a dynamic credential's
//! means its lease is still there; a secret_id's means its accessor still resolves. Cost: one
//! storage `list` per candidate, plus one read per candidate that has entries.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::index::{Entry, Target, folder};
use super::{Hash, call, route_of};
use crate::core::Active;
use crate::logical::{Error, Operation, Result};
use crate::mount::Route;
use crate::record;
use crate::secret::ct_eq;
use crate::token::TokenEntry;

/// A live match.
pub(crate) struct Found {
    pub(crate) hash: String,
    pub(crate) target: Target,
    /// The mount now serving the value (not for tokens).
    pub(crate) route: Option<Arc<Route>>,
}

impl Found {
    /// The API path of the value: `secret/data/app`, `database/static-creds/app`.
    pub(crate) fn path(&self) -> Option<String> {
        let mount = self.route.as_ref().map(|r| r.info.path.as_str()).unwrap_or("");
        match &self.target {
            Target::Token { .. } | Target::WrappingToken { .. } => None,
            Target::SecretId { role, .. } => Some(format!("{mount}role/{role}/secret-id")),
            Target::Kv { key, version: Some(_), .. } => Some(format!("{mount}data/{key}")),
            Target::Kv { key, version: None, .. } => Some(format!("{mount}{key}")),
            Target::DatabaseStatic { role, .. } => Some(format!("{mount}static-creds/{role}")),
            Target::DatabaseDynamic { role, .. } => Some(format!("{mount}creds/{role}")),
        }
    }

    /// The contract's match object.
    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("hash".into(), json!(self.hash));
        m.insert("kind".into(), json!(self.target.kind()));
        if let Some(p) = self.path() {
            m.insert("path".into(), json!(p));
        }
        let mount = self.route.as_ref().map(|r| r.info.path.as_str()).unwrap_or("");
        match &self.target {
            Target::Token { accessor, .. } | Target::WrappingToken { accessor, .. } => {
                m.insert("accessor".into(), json!(accessor));
            }
            Target::SecretId { role, accessor, .. } => {
                m.insert("role".into(), json!(format!("{mount}role/{role}")));
                m.insert("accessor".into(), json!(accessor));
            }
            Target::Kv { version, field, .. } => {
                if let Some(v) = version {
                    m.insert("version".into(), json!(v));
                }
                m.insert("field".into(), json!(field));
            }
            Target::DatabaseStatic { role, .. } => {
                m.insert("field".into(), json!("password"));
                m.insert("role".into(), json!(format!("{mount}static-roles/{role}")));
            }
            Target::DatabaseDynamic { role, lease_id, .. } => {
                m.insert("field".into(), json!("password"));
                m.insert("lease_id".into(), json!(lease_id));
                m.insert("role".into(), json!(format!("{mount}roles/{role}")));
            }
        }
        Value::Object(m)
    }
}

/// The live matches of `hashes`, in request order (several per hash when one value lives in
/// several places).
pub(crate) async fn find(
    active: &Arc<Active>,
    hashes: &[Hash],
    caller: Option<&TokenEntry>,
) -> Result<Vec<Found>> {
    let keys = active.leaks.keys().await?;
    let view = active.leaks.view();
    let mut out = Vec::new();
    for h in hashes {
        let dir = folder(&keys.inner_of(&h.bytes));
        let names = view.list(&dir).await?;
        for name in names {
            let key = format!("{dir}{name}");
            let Some(raw) = view.get(&key).await? else { continue };
            let entry: Entry = match record::decode(&raw) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "a leak index entry is damaged; skipped");
                    continue;
                }
            };
            match confirm(active, &keys, h, &entry.target, caller).await? {
                Verdict::Live(route) => {
                    out.push(Found { hash: h.hex.clone(), target: entry.target, route })
                }
                Verdict::NotLive => {}
                Verdict::Gone => {
                    if let Err(e) = view.delete(&key).await {
                        tracing::debug!(error = %e, "a stale leak index entry stays for now");
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What the store that owns a value says about it.
enum Verdict {
    /// Live, served by this mount (`None` for tokens).
    Live(Option<Arc<Route>>),
    /// Not live now, but it may be again (a soft-deleted KV version can be undeleted; an
    /// expired lease's revocation is pending): the entry stays.
    NotLive,
    /// Gone for good: the entry goes.
    Gone,
}

/// Asks the owner of `target` whether it still holds the value hashed to `h`.
async fn confirm(
    active: &Arc<Active>,
    keys: &super::index::Keys,
    h: &Hash,
    target: &Target,
    caller: Option<&TokenEntry>,
) -> Result<Verdict> {
    let holds = |v: Option<&Value>| {
        v.and_then(Value::as_str).is_some_and(|s| ct_eq(keys.hash(s).as_bytes(), h.hex.as_bytes()))
    };
    let live_if = |held: bool, route: Arc<Route>| {
        if held { Verdict::Live(Some(route)) } else { Verdict::Gone }
    };
    // A read through the engine: its answer, or `None` when there is nothing there.
    let read = |route: Arc<Route>, op: Operation, path: String, data: Map<String, Value>| async move {
        match call(active, &route, caller, op, &path, &data).await {
            Ok(r) if r.raw.is_none() => Ok(Some((route, r.status, r.data.unwrap_or_default()))),
            Ok(_) | Err(Error::NotFound) | Err(Error::InvalidRequest(_)) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let ok = |s: Option<u16>| s.is_none_or(|s| s < 300);
    match target {
        Target::Token { id, accessor } | Target::WrappingToken { id, accessor } => {
            let live = active.tokens.lookup_id(id).await?;
            Ok(match live.filter(|e| ct_eq(e.accessor.as_bytes(), accessor.as_bytes())) {
                Some(_) => Verdict::Live(None),
                None => Verdict::Gone,
            })
        }
        Target::Kv { mount, key, version, field } => {
            let Some(route) = route_of(active, mount)? else { return Ok(Verdict::Gone) };
            // An entry from before the mount's upgrade from kv version 1 to 2 names no version.
            let v2 = route.entry.options.get("version").map(String::as_str) == Some("2");
            if v2 != version.is_some() {
                return Ok(Verdict::Gone);
            }
            let (path, data) = match version {
                Some(v) => {
                    let mut d = Map::new();
                    d.insert("version".into(), json!(v));
                    (format!("data/{key}"), d)
                }
                None => (key.clone(), Map::new()),
            };
            let Some((route, status, got)) = read(route, Operation::Read, path, data).await? else {
                return Ok(Verdict::Gone);
            };
            if !ok(status) {
                // Vault's answer for a deleted or destroyed version names which.
                let destroyed = got.get("metadata").and_then(|m| m.get("destroyed"));
                return Ok(match destroyed {
                    Some(Value::Bool(false)) => Verdict::NotLive,
                    _ => Verdict::Gone,
                });
            }
            let fields = if version.is_some() {
                got.get("data").and_then(Value::as_object).cloned().unwrap_or_default()
            } else {
                got
            };
            Ok(live_if(holds(fields.get(field)), route))
        }
        Target::DatabaseStatic { mount, role } => {
            let Some(route) = route_of(active, mount)? else { return Ok(Verdict::Gone) };
            let path = format!("static-creds/{role}");
            match read(route, Operation::Read, path, Map::new()).await? {
                Some((route, s, got)) if ok(s) => Ok(live_if(holds(got.get("password")), route)),
                _ => Ok(Verdict::Gone),
            }
        }
        Target::DatabaseDynamic { mount, lease_id, .. } => {
            let Some(route) = route_of(active, mount)? else { return Ok(Verdict::Gone) };
            match active.leases.lookup(lease_id).await {
                Ok(l) if l.ttl > 0 => Ok(Verdict::Live(Some(route))),
                // Expired: its revocation (which removes the entry) is under way.
                Ok(_) => Ok(Verdict::NotLive),
                Err(Error::InvalidRequest(_)) => Ok(Verdict::Gone),
                Err(e) => Err(e),
            }
        }
        Target::SecretId { mount, role, accessor } => {
            let Some(route) = route_of(active, mount)? else { return Ok(Verdict::Gone) };
            let mut d = Map::new();
            d.insert("secret_id_accessor".into(), json!(accessor));
            let path = format!("role/{role}/secret-id-accessor/lookup");
            Ok(match read(route, Operation::Update, path, d).await? {
                Some((route, s, got)) if ok(s) && !got.is_empty() => Verdict::Live(Some(route)),
                _ => Verdict::Gone,
            })
        }
    }
}
