//! Leak detection and response (issue 20): the liveness index ([`index`]), `sys/leaks/check`
//! (which of these keyed hashes is a live value, and where) and `sys/leaks/report` (confirm,
//! then revoke or rotate what leaked; also GitHub's secret-scanning partner alert format).
//!
//! Guarantees: a match is reported only after the store that owns the value confirmed that the
//! value is still live (a token that is not revoked or expired, a KV version that is neither
//! deleted nor destroyed and still holds the value, a lease that is not revoked, a secret_id
//! that still exists); index entries that no longer hold are removed when met. Candidates
//! arrive as keyed hashes; the one exception, GitHub's alert format, carries cleartext, which
//! is hashed as it is read and appears in no log or audit entry (the request and response
//! bodies are audited as HMACs, as every body is). Every response action is written to the
//! audit log as its own entry (`type: "leak"`), dry runs included (with `done: false`).
//!
//! Values written before the index existed are indexed once per mount in the background after
//! unseal ([`spawn_backfill`]), where the store keeps them: KV and static passwords, not tokens
//! or secret_ids (stored only as salted hashes) nor dynamic passwords (not kept).
//!
//! A mount disabled takes its entries with it: the mount-table change writes a sweep marker in
//! the same batch, and a background sweep ([`spawn_sweeps`]) removes every entry of that mount
//! and then the marker; a sweep cut short (a restart, a seal) runs again at the next unseal.
//! Entries are found by value hash, not by mount, so a sweep reads the whole index once.
//!
//! GitHub's alerts also arrive directly, without a Coffer token, on `sys/leaks/github`, where
//! they are read only once GitHub's signature verified ([`github`]).

pub mod github;
pub mod index;
mod live;
mod report;
#[cfg(test)]
mod tests;

pub use index::{EntryKey, LeakIndex, LeakOp, Target, ops};
pub use report::{ROTATE_ON_LEAK, ROTATE_PASSWORD_POLICY};

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::core::Active;
use crate::hex::unhex;
use crate::logical::{Error, Operation, Response, Result};
use crate::sys::Ctx;

/// At most this many hashes per request (the contract's limit).
pub(crate) const MAX_HASHES: usize = 10_000;

/// `sys/leaks/check` and `sys/leaks/report`; `None` for any other path.
pub(crate) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    if let Some(r) = github::handle(ctx, rel).await? {
        return Ok(Some(r));
    }
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    match rel {
        "leaks/check" if op == Operation::Read => {
            let keys = ctx.active.leaks.keys().await?;
            let b64 = base64::engine::general_purpose::STANDARD;
            Ok(Some(Response::from_value(json!({
                "algorithm": "hmac-sha256",
                "key_id": keys.id,
                "key": b64.encode(keys.published()),
            }))))
        }
        "leaks/check" if write => {
            let hashes = parse_hashes(ctx, &ctx.req.data, &["key_id", "hashes"]).await?;
            let found = live::find(ctx.active, &hashes, ctx.caller()).await?;
            let matches: Vec<Value> = found.iter().map(live::Found::to_json).collect();
            Ok(Some(Response::from_value(json!({ "matches": matches }))))
        }
        "leaks/report" if write => {
            if let Some(alerts) = ctx.req.data.get(GITHUB_ALERTS) {
                return report::github(ctx, alerts).await.map(Some);
            }
            let hashes = parse_hashes(ctx, &ctx.req.data, &["key_id", "hashes", "dry_run"]).await?;
            let dry_run = match ctx.req.data.get("dry_run") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(Error::invalid("dry_run must be true or false")),
            };
            let actions = report::respond(ctx, &hashes, dry_run).await?;
            Ok(Some(Response::from_value(json!({ "actions": actions }))))
        }
        "leaks/check" | "leaks/report" => Err(Error::UnsupportedOperation),
        _ => Ok(None),
    }
}

/// Indexes, in the background, the values of every mount that has not been through it yet
/// (mounts whose values were written before the index existed, on the first unseal after an
/// upgrade). Once per mount: a marker records it. A mount's failure is logged and retried at
/// the next unseal; a node that cannot write (a standby) stops at the first marker.
pub(crate) fn spawn_backfill(active: &Arc<Active>) {
    spawn_sweeps(active);
    let active = Arc::downgrade(active);
    tokio::spawn(async move {
        let Some(a) = active.upgrade() else { return };
        let Ok(router) = a.router() else { return };
        let routes: Vec<_> = router.routes().cloned().collect();
        let done = a.leaks.view().sub_view("backfilled/");
        drop(a);
        for r in routes {
            match done.get(&r.entry.uuid).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => return,
            }
            match r.backend.index_live_values().await {
                Ok(n) => {
                    if done.put(&r.entry.uuid, b"1").await.is_err() {
                        return;
                    }
                    if n > 0 {
                        tracing::info!(mount = %r.info.path, entries = n, "liveness index: existing values indexed");
                    }
                }
                Err(Error::Sealed | Error::Standby) => return,
                Err(e) => {
                    tracing::warn!(mount = %r.info.path, error = %e, "liveness index: indexing existing values failed; retried at the next unseal")
                }
            }
        }
    });
}

/// The storage key (from the barrier's root) of the marker that asks for the entries of the
/// mount `uuid` to be swept: written in the batch that removes the mount from its table.
pub(crate) fn sweep_marker(uuid: &str) -> String {
    format!("{}sweep/{uuid}", index::STORAGE_PREFIX)
}

/// One sweep at a time: each reads the whole index.
static SWEEPING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Removes, in the background, the entries of every mount with a sweep marker (mounts
/// disabled), then the marker and the mount's backfill marker. A failure is logged and the
/// marker kept: the sweep runs again at the next unseal or the next mount disabled.
pub(crate) fn spawn_sweeps(active: &Arc<Active>) {
    let active = Arc::downgrade(active);
    tokio::spawn(async move {
        let _g = SWEEPING.lock().await;
        let Some(a) = active.upgrade() else { return };
        let view = a.leaks.view().clone();
        drop(a);
        if let Err(e) = sweep(&view).await {
            match e {
                Error::Sealed | Error::Standby => {}
                e => {
                    tracing::warn!(error = %e, "liveness index: sweeping a disabled mount's entries failed; retried at the next unseal")
                }
            }
        }
    });
}

async fn sweep(view: &coffer_barrier::View) -> Result<()> {
    let uuids = view.list("sweep/").await?;
    if uuids.is_empty() {
        return Ok(());
    }
    let gone: std::collections::HashSet<&str> = uuids.iter().map(String::as_str).collect();
    let mut removed = 0u64;
    for folder in view.list("index/").await? {
        let folder = format!("index/{folder}");
        for name in view.list(&folder).await? {
            let key = format!("{folder}{name}");
            let Some(raw) = view.get(&key).await? else { continue };
            let entry: index::Entry = crate::record::decode(&raw)?;
            if entry.target.mount().is_some_and(|m| gone.contains(m)) {
                view.delete(&key).await?;
                removed += 1;
            }
        }
    }
    for uuid in &uuids {
        view.delete(&format!("backfilled/{uuid}")).await?;
        view.delete(&format!("sweep/{uuid}")).await?;
    }
    tracing::info!(
        mounts = uuids.len(),
        entries = removed,
        "liveness index: disabled mounts' entries removed"
    );
    Ok(())
}

/// The field the HTTP layer puts GitHub's alert array in (a JSON array body is accepted on
/// `sys/leaks/report` only).
pub const GITHUB_ALERTS: &str = "github_alerts";

/// One candidate: the hash as sent, and its bytes.
pub(crate) struct Hash {
    pub(crate) hex: String,
    pub(crate) bytes: Vec<u8>,
}

/// The `key_id` and `hashes` of a check or report body (whose fields are `known`), checked; a
/// hash given twice counts once.
async fn parse_hashes(
    ctx: &Ctx<'_>,
    data: &Map<String, Value>,
    known: &[&str],
) -> Result<Vec<Hash>> {
    for k in data.keys() {
        if !known.contains(&k.as_str()) {
            return Err(Error::invalid(format!("unknown field {k:?}")));
        }
    }
    let keys = ctx.active.leaks.keys().await?;
    match data.get("key_id") {
        Some(Value::String(id)) if *id == keys.id => {}
        Some(Value::String(_)) => {
            return Err(Error::invalid(
                "key_id is not the current hashing key: read sys/leaks/check again",
            ));
        }
        _ => {
            return Err(Error::invalid("key_id is required: the key_id read from sys/leaks/check"));
        }
    }
    let list = match data.get("hashes") {
        Some(Value::Array(a)) => a,
        _ => return Err(Error::invalid("hashes is required: a list of hex HMAC-SHA256 values")),
    };
    if list.len() > MAX_HASHES {
        return Err(Error::invalid(format!(
            "too many hashes: {} given, at most {MAX_HASHES} per request",
            list.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let h = parse_hash(i, v)?;
        if seen.insert(h.hex.clone()) {
            out.push(h);
        }
    }
    Ok(out)
}

fn parse_hash(i: usize, v: &Value) -> Result<Hash> {
    let bad = || {
        Error::invalid(format!(
            "hashes[{i}] is not a lowercase hex HMAC-SHA256 (64 characters 0-9a-f)"
        ))
    };
    let s = v.as_str().ok_or_else(bad)?;
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad());
    }
    Ok(Hash { hex: s.to_owned(), bytes: unhex(s).ok_or_else(bad)? })
}

/// The route of the mount with `uuid`, wherever it is mounted now.
fn route_of(active: &Active, uuid: &str) -> Result<Option<Arc<crate::mount::Route>>> {
    Ok(active.router()?.routes().find(|r| r.entry.uuid == uuid).cloned())
}

/// A request to a mount's backend made by the leak response itself.
async fn call(
    active: &Active,
    route: &Arc<crate::mount::Route>,
    caller: Option<&crate::token::TokenEntry>,
    op: Operation,
    path: &str,
    data: &Map<String, Value>,
) -> Result<Response> {
    let id = crate::random::uuid_v4();
    crate::pipeline::call_backend(active, route, &id, caller, op, path, data).await
}
