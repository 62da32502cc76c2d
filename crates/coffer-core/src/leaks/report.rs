//! `sys/leaks/report`: the response to a confirmed leak, per kind of value, and GitHub's
//! secret-scanning partner format.
//!
//! Guarantees: only live values are acted on (each report confirms first, as a check does);
//! every action, and every action a dry run would take, is one audit entry; a dry run changes
//! nothing. Tokens are revoked with their children and leases (Vault's revocation), dynamic
//! credentials by revoking their lease (which drops the database user), secret_ids destroyed,
//! static roles rotated through the engine's `rotate-role`, and a KV v2 secret rotated only when
//! its metadata opts in (`custom_metadata.rotate_on_leak = "true"`): a new version whose leaked
//! fields get a value from the password policy named in `custom_metadata.rotate_password_policy`
//! (Coffer's default policy when absent), after which the leaked version is soft-deleted (so it
//! is neither served nor live; `undelete` brings it back). Changes reach agents as any write's
//! do: through the engine's events. Not done: rotation of KV version 1 secrets (no metadata to
//! opt in with), and of anything else (transit keys, certificates, which are not indexed).

use serde_json::{Map, Value, json};

use super::live::{Found, find};
use super::{Hash, Target, call};
use crate::hex::unhex;
use crate::logical::{Error, Operation, Response, Result};
use crate::sys::Ctx;

/// The metadata key that opts a KV v2 secret into rotation on a confirmed leak.
pub const ROTATE_ON_LEAK: &str = "rotate_on_leak";
/// The metadata key naming the password policy new values come from.
pub const ROTATE_PASSWORD_POLICY: &str = "rotate_password_policy";

/// Confirms `hashes` and acts on (or, dry, lists) every live match.
pub(crate) async fn respond(ctx: &Ctx<'_>, hashes: &[Hash], dry_run: bool) -> Result<Vec<Value>> {
    let found = find(ctx.active, hashes, ctx.caller()).await?;
    let mut out = Vec::new();
    for f in &found {
        out.push(act(ctx, f, dry_run, "report").await?);
    }
    Ok(out)
}

/// What would be done about `f`, and, unless dry, its doing: the action object, after its
/// audit entry was written. `via`: `report` or `github` (the alert format), for the entry.
async fn act(ctx: &Ctx<'_>, f: &Found, dry_run: bool, via: &str) -> Result<Value> {
    let (action, planned) = plan(ctx, f).await?;
    let outcome: std::result::Result<(), String> = match (&planned, dry_run) {
        (Err(reason), _) => Err(reason.clone()),
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => run(ctx, f, action).await.map_err(|e| crate::audit::public_error(&e)),
    };
    let mut a = Map::new();
    a.insert("hash".into(), json!(f.hash));
    a.insert("kind".into(), json!(f.target.kind()));
    if let Some(p) = f.path() {
        a.insert("path".into(), json!(p));
    }
    match &f.target {
        Target::DatabaseDynamic { lease_id, .. } => {
            a.insert("lease_id".into(), json!(lease_id));
        }
        Target::Token { accessor, .. } | Target::WrappingToken { accessor, .. } => {
            a.insert("accessor".into(), json!(accessor));
        }
        Target::Kv { version: Some(v), .. } => {
            a.insert("version".into(), json!(v));
        }
        _ => {}
    }
    a.insert("action".into(), json!(action));
    a.insert("done".into(), json!(!dry_run && outcome.is_ok() && action != "none"));
    if let Err(e) = &outcome {
        a.insert("error".into(), json!(e));
    }
    let mut audited = a.clone();
    audited.insert("dry_run".into(), json!(dry_run));
    audited.insert("via".into(), json!(via));
    audited.insert("request_id".into(), json!(ctx.req.id));
    if let Some(c) = ctx.caller() {
        audited.insert("by_accessor".into(), json!(c.accessor));
        audited.insert("by_display_name".into(), json!(c.display_name));
    }
    ctx.active.audit.log_leak(Value::Object(audited)).await?;
    Ok(Value::Object(a))
}

/// The action for `f`, and whether it can be taken (`Err`: why not).
async fn plan(ctx: &Ctx<'_>, f: &Found) -> Result<(&'static str, std::result::Result<(), String>)> {
    Ok(match &f.target {
        Target::Token { .. } | Target::WrappingToken { .. } => ("revoke_token", Ok(())),
        Target::DatabaseDynamic { .. } => ("revoke_lease", Ok(())),
        Target::SecretId { .. } => ("destroy_secret_id", Ok(())),
        Target::DatabaseStatic { .. } => ("rotate_static_role", Ok(())),
        Target::Kv { version: None, .. } => (
            "none",
            Err("a KV version 1 secret has no metadata to opt in with rotate_on_leak; rotate it \
                 by hand"
                .to_owned()),
        ),
        Target::Kv { key, version: Some(_), .. } => {
            let meta = kv_metadata(ctx, f, key).await?;
            let opted = meta.get(ROTATE_ON_LEAK).and_then(Value::as_str) == Some("true");
            if opted {
                ("rotate_kv", Ok(()))
            } else {
                (
                    "none",
                    Err(format!(
                        "the secret's custom_metadata does not set {ROTATE_ON_LEAK}=\"true\"; \
                         rotate it by hand"
                    )),
                )
            }
        }
    })
}

async fn kv_metadata(ctx: &Ctx<'_>, f: &Found, key: &str) -> Result<Map<String, Value>> {
    let Some(route) = &f.route else { return Ok(Map::new()) };
    let r = call(
        ctx.active,
        route,
        ctx.caller(),
        Operation::Read,
        &format!("metadata/{key}"),
        &Map::new(),
    )
    .await;
    match r {
        Ok(r) => Ok(r
            .data
            .and_then(|d| d.get("custom_metadata").and_then(Value::as_object).cloned())
            .unwrap_or_default()),
        Err(Error::NotFound) => Ok(Map::new()),
        Err(e) => Err(e),
    }
}

async fn run(ctx: &Ctx<'_>, f: &Found, action: &str) -> Result<()> {
    let empty = Map::new();
    match (&f.target, &f.route) {
        (Target::Token { id, .. } | Target::WrappingToken { id, .. }, _) => {
            ctx.active.tokens.revoke_tree(id).await
        }
        (Target::DatabaseDynamic { lease_id, .. }, _) => {
            ctx.active.leases.revoke(lease_id, false).await
        }
        (Target::SecretId { role, accessor, .. }, Some(route)) => {
            let mut d = Map::new();
            d.insert("secret_id_accessor".into(), json!(accessor));
            let path = format!("role/{role}/secret-id-accessor/destroy");
            call(ctx.active, route, ctx.caller(), Operation::Update, &path, &d).await.map(drop)
        }
        (Target::DatabaseStatic { role, .. }, Some(route)) => {
            let path = format!("rotate-role/{role}");
            call(ctx.active, route, ctx.caller(), Operation::Update, &path, &empty).await.map(drop)
        }
        (Target::Kv { key, version: Some(v), field, .. }, Some(route)) if action == "rotate_kv" => {
            rotate_kv(ctx, f, route, key, *v, field).await
        }
        _ => Err(Error::Internal(format!("no {action} for a {} match", f.target.kind()))),
    }
}

/// A new version of `key` with the leaked `field` given a fresh value (when the latest version
/// still holds the leaked one), then the leaked version soft-deleted.
async fn rotate_kv(
    ctx: &Ctx<'_>,
    f: &Found,
    route: &std::sync::Arc<crate::mount::Route>,
    key: &str,
    leaked: u64,
    field: &str,
) -> Result<()> {
    let keys = ctx.active.leaks.keys().await?;
    let meta = kv_metadata(ctx, f, key).await?;
    let policy = meta.get(ROTATE_PASSWORD_POLICY).and_then(Value::as_str).unwrap_or("");
    let passwords = crate::password_policy::Passwords::new(ctx.core.barrier.clone());
    let by = ctx.caller();
    let latest =
        call(ctx.active, route, by, Operation::Read, &format!("data/{key}"), &Map::new()).await?;
    let data = latest.data.unwrap_or_default();
    let current =
        data.get("metadata").and_then(|m| m.get("version")).and_then(Value::as_u64).unwrap_or(0);
    let mut values = data.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
    let holds = values
        .get(field)
        .and_then(Value::as_str)
        .is_some_and(|s| crate::secret::ct_eq(keys.hash(s).as_bytes(), f.hash.as_bytes()));
    if holds && latest.status.is_none() {
        // Every field holding the leaked value gets its own new value.
        let leaked_fields: Vec<String> = values
            .iter()
            .filter(|(_, v)| {
                v.as_str().is_some_and(|s| {
                    crate::secret::ct_eq(keys.hash(s).as_bytes(), f.hash.as_bytes())
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in leaked_fields {
            let new = passwords.generate(policy).await?;
            values.insert(k, Value::String(new.expose().to_owned()));
        }
        let mut body = Map::new();
        body.insert("data".into(), Value::Object(values));
        body.insert("options".into(), json!({ "cas": current }));
        call(ctx.active, route, by, Operation::Update, &format!("data/{key}"), &body).await?;
    }
    let mut d = Map::new();
    d.insert("versions".into(), json!([leaked]));
    call(ctx.active, route, by, Operation::Update, &format!("delete/{key}"), &d).await?;
    Ok(())
}

/// GitHub's secret-scanning partner alert: `[{"token","type","url","source"}]`, answered as
/// `[{"token_raw","token_type","label"}]`; a live value is acted on at once.
pub(crate) async fn github(ctx: &Ctx<'_>, alerts: &Value) -> Result<Response> {
    let Value::Array(alerts) = alerts else {
        return Err(Error::invalid("a GitHub alert body must be a JSON array"));
    };
    if alerts.len() > super::MAX_HASHES {
        return Err(Error::invalid(format!(
            "too many alerts: {} given, at most {} per request",
            alerts.len(),
            super::MAX_HASHES
        )));
    }
    let keys = ctx.active.leaks.keys().await?;
    let mut answers = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        let token = a
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid(format!("alert {i} has no token (a string)")))?;
        let token_type = a.get("type").and_then(Value::as_str).unwrap_or("");
        // Hashed as it is read; only the hash goes further.
        let hex = keys.hash(token);
        let bytes = unhex(&hex).ok_or_else(|| Error::Internal("hash is not hex".into()))?;
        let found = find(ctx.active, &[Hash { hex, bytes }], ctx.caller()).await?;
        for f in &found {
            act(ctx, f, false, "github").await?;
        }
        answers.push(json!({
            "token_raw": token,
            "token_type": token_type,
            "label": if found.is_empty() { "false_positive" } else { "true_positive" },
        }));
    }
    Ok(Response::raw(200, Value::Array(answers)))
}
