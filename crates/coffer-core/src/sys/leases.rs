//! `sys/leases/*` and the older `sys/renew`, `sys/revoke*` paths: look up, list, renew and revoke
//! leases, with Vault's paths, fields and answers.

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::lease::{Failing, LeaseInfo};
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};
use crate::time::rfc3339;

/// The lease id from the path (`sys/leases/renew/<id>`) or from the body's `lease_id`.
fn lease_id(ctx: &Ctx<'_>, from_path: &str) -> Result<String> {
    let f = Fields::new(&ctx.req.data);
    let from_path = from_path.trim_matches('/');
    let id = match f.str("lease_id")? {
        // A policy may grant a path like sys/leases/revoke/db/creds/app/*: the body must not
        // name another lease than the path does.
        Some(id)
            if !id.is_empty() && !from_path.is_empty() && id.trim_matches('/') != from_path =>
        {
            return Err(Error::invalid(
                "the lease_id in the body differs from the one in the path",
            ));
        }
        Some(id) if !id.is_empty() => id,
        _ => from_path.to_owned(),
    };
    let id = id.trim_matches('/').to_owned();
    if id.is_empty() {
        return Err(Error::invalid("lease_id must be specified"));
    }
    Ok(id)
}

/// Vault's `sys/leases/lookup` answer; the failing revocation's details only with `sudo`.
fn lookup_json(l: &LeaseInfo, sudo: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), json!(l.id));
    // The path that issued it: the lease id without its random part (OpenBao's field).
    m.insert("path".into(), json!(l.id.rsplit_once('/').map_or("", |(p, _)| p)));
    m.insert("issue_time".into(), json!(rfc3339(l.issue_time)));
    m.insert("expire_time".into(), json!(l.expire_time.map(rfc3339)));
    m.insert("last_renewal".into(), json!(l.last_renewal.map(rfc3339)));
    m.insert("renewable".into(), json!(l.renewable));
    m.insert("ttl".into(), json!(l.ttl));
    if let Some(f) = l.failing.as_ref().filter(|_| sudo) {
        m.insert("revoke_attempts".into(), json!(f.attempts));
        m.insert("revoke_error".into(), json!(f.error));
        m.insert("next_revoke_attempt".into(), json!(rfc3339(f.next_attempt)));
    }
    m
}

fn failing_json(f: &Failing) -> Value {
    json!({
        "lease_id": f.lease_id,
        "mount_id": f.mount_uuid,
        "expire_time": rfc3339(f.expire_time),
        "revoke_attempts": f.attempts,
        "error": f.error,
        "next_revoke_attempt": rfc3339(f.next_attempt),
    })
}

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    let leases = &ctx.active.leases;
    // Vault's older paths are the same operations.
    let rel = match rel {
        "renew" | "revoke" => format!("leases/{rel}"),
        r if r.starts_with("renew/")
            || r.starts_with("revoke/")
            || r.starts_with("revoke-prefix/")
            || r.starts_with("revoke-force/") =>
        {
            format!("leases/{r}")
        }
        r => r.to_owned(),
    };
    let Some(rest) = rel.strip_prefix("leases") else { return Ok(None) };
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let (verb, arg) = rest.split_once('/').unwrap_or((rest, ""));
    let resp = match (verb, op) {
        ("", Operation::Read) => {
            let f = Fields::new(&ctx.req.data);
            match f.str("type")?.as_deref() {
                None | Some("") | Some("irrevocable") => {}
                Some(t) => {
                    return Err(Error::invalid(format!(
                        "unknown lease type {t:?}: Coffer lists \"irrevocable\" leases, those whose \
                         revocation is failing and being retried"
                    )));
                }
            }
            let list: Vec<Value> = leases.failing().await?.iter().map(failing_json).collect();
            Response::from_value(json!({ "lease_count": list.len(), "leases": list }))
        }
        ("lookup", Operation::List) => {
            let keys = leases.list(arg).await?;
            if keys.is_empty() {
                return Err(Error::NotFound);
            }
            Response::list(keys)
        }
        ("lookup", _) if write => {
            let id = lease_id(ctx, arg)?;
            // The engine's error text is for operators: the default policy lets any token look
            // up a lease whose id it knows.
            Response::data(lookup_json(&leases.lookup(&id).await?, ctx.audited.sudo()))
        }
        ("renew", _) if write => {
            let id = lease_id(ctx, arg)?;
            let increment = Fields::new(&ctx.req.data).secs("increment")?;
            let r = leases.renew(&id, increment).await?;
            Response {
                lease_id: r.lease_id,
                lease_duration: r.ttl,
                renewable: r.renewable,
                warnings: r.warnings,
                ..Response::default()
            }
        }
        ("revoke", _) if write => {
            let id = lease_id(ctx, arg)?;
            let sync = Fields::new(&ctx.req.data).bool("sync")?.unwrap_or(true);
            if sync {
                leases.revoke(&id, false).await?;
                Response::empty()
            } else {
                let leases = leases.clone();
                tokio::spawn(async move {
                    if let Err(e) = leases.revoke(&id, false).await {
                        tracing::warn!(lease_id = %id, error = %e, "asynchronous revocation failed");
                    }
                });
                Response::raw(202, Value::Null)
            }
        }
        ("revoke-prefix" | "revoke-force", _) if write => {
            if arg.trim_matches('/').is_empty() {
                return Err(Error::invalid("missing required parameter \"prefix\" in the path"));
            }
            leases.revoke_prefix(arg, verb == "revoke-force").await?;
            Response::empty()
        }
        ("tidy", _) if write => {
            // No warning: Vault's ("successfully started") is there because its tidy runs on
            // in the background; this one has finished, and the counts say what it did.
            let t = leases.tidy().await?;
            Response::from_value(json!({
                "dangling_index_entries_removed": t.dangling_index_entries,
                "tokens_gone_with_leases_revoked": t.orphaned_tokens,
            }))
        }
        ("" | "lookup" | "renew" | "revoke" | "revoke-prefix" | "revoke-force" | "tidy", _) => {
            return Err(Error::UnsupportedOperation);
        }
        _ => return Ok(None),
    };
    Ok(Some(resp))
}
