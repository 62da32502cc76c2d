//! The `sys/` API: seal lifecycle, health, mounts, policies, capabilities, key rotation, and
//! (Coffer only) agents' delivery reports.
//! The public endpoints (`init`, `unseal`, `seal-status`, `health`, `leader`) answer without a
//! token and while sealed; everything else has passed the token and ACL checks before it gets here.

mod agent;
mod audit;
mod chaos;
mod detect;
mod events;
pub(crate) mod generate_root;
mod ha;
mod host;
mod leases;
mod metrics;
mod mounts;
mod password;
pub(crate) mod paths;
mod policies;
mod quotas;
pub(crate) mod rekey;
pub(crate) mod remount;

pub(crate) use detect::load as load_detect_rules;
pub(crate) use quotas::any_stored as any_quota_stored;
pub(crate) use quotas::load as load_quotas;
pub(crate) use quotas::moved_rules as moved_quota_rules;
pub(crate) use quotas::rules_on as quota_rules_on;

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::authz::Audited;
use crate::core::{Active, Core, SealStatus};
use crate::hex::{hex, unhex};
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Request, Response, Result};
use crate::time::{now_unix, rfc3339};
use crate::token::TokenEntry;

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a `sys/` handler gets: only reachable with an [`Audited`] proof.
pub(crate) struct Ctx<'a> {
    pub(crate) core: &'a Core,
    pub(crate) active: &'a Arc<Active>,
    pub(crate) audited: &'a Audited<'a>,
    pub(crate) req: &'a Request,
}

impl Ctx<'_> {
    pub(crate) fn caller(&self) -> Option<&TokenEntry> {
        self.audited.caller()
    }

    pub(crate) fn op(&self) -> Operation {
        self.audited.op()
    }
}

fn seal_status_json(s: &SealStatus) -> Value {
    let mut v = json!({
        "type": s.seal_type,
        "initialized": s.initialized,
        "sealed": s.sealed,
        "t": s.threshold,
        "n": s.shares,
        "progress": s.progress,
        "nonce": s.nonce,
        "version": VERSION,
        "build_date": "",
        "migration": s.migration,
        "recovery_seal": s.seal_type != "shamir",
        "storage_type": s.storage_type,
    });
    // Vault's `omitempty`: no cluster name or id until the cluster is unsealed.
    if let Some(c) = s.cluster.as_ref().filter(|_| !s.sealed) {
        v["cluster_name"] = json!(c.name);
        v["cluster_id"] = json!(c.id);
    }
    v
}

/// Decodes an unseal key share given as hex (Vault's `keys`) or base64 (`keys_base64`).
fn decode_share(s: &str) -> Result<Zeroizing<Vec<u8>>> {
    let s = s.trim();
    // As Vault: hex only when it decodes to a plausible share (16 to 32 key bytes, plus the
    // share's one byte), so a base64 share that happens to be valid hex is read as base64.
    if let Some(b) = unhex(s).filter(|b| (16..=33).contains(&b.len())) {
        return Ok(Zeroizing::new(b));
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map(Zeroizing::new)
        .map_err(|_| Error::invalid("'key' must be a valid hex or base64 string"))
}

/// The `key` of a generate-root or rekey step: one unseal key share, hex or base64, of a
/// plausible length (Vault's bounds: 16 bytes to a 32-byte key plus the share's identifier).
/// `prefix` goes before a length error, as Vault words them differently per endpoint.
fn required_share(f: &Fields<'_>, prefix: &str) -> Result<Zeroizing<Vec<u8>>> {
    let key = match f.str("key")? {
        Some(k) if !k.is_empty() => decode_share(&k)?,
        _ => return Err(Error::invalid("'key' must be specified in request body as JSON")),
    };
    if key.len() < 16 {
        return Err(Error::invalid(format!("{prefix}key is shorter than minimum 16 bytes")));
    }
    if key.len() > 33 {
        return Err(Error::invalid(format!("{prefix}key is longer than maximum 33 bytes")));
    }
    Ok(key)
}

/// Endpoints that need no token and work while sealed. `None`: not one of them.
pub(crate) async fn public(core: &Core, req: &Request, path: &str) -> Result<Option<Response>> {
    match path.strip_prefix("sys/") {
        Some(rel) if crate::authz::is_public_sys(rel) => paths::check(rel, req.operation)?,
        _ => return Ok(None),
    }
    let f = Fields::new(&req.data);
    let write = matches!(req.operation, Operation::Create | Operation::Update);
    let resp = match (path, req.operation) {
        ("sys/init", Operation::Read) => {
            Response::raw(200, json!({ "initialized": core.is_initialized().await? }))
        }
        ("sys/init", _) if write => {
            if f.has("pgp_keys") || f.has("root_token_pgp_key") {
                return Err(Error::invalid("PGP-encrypted key shares are not supported by Coffer"));
            }
            // With auto-unseal, Vault's recovery_shares/recovery_threshold split the recovery
            // key, and the answer lists recovery keys instead of unseal keys.
            let auto = core.seal_status().await?.seal_type != "shamir";
            let (shares, threshold) = if auto {
                (f.required_u64("recovery_shares")?, f.required_u64("recovery_threshold")?)
            } else {
                (f.required_u64("secret_shares")?, f.required_u64("secret_threshold")?)
            };
            let init = core.initialize(shares, threshold).await?;
            let b64 = base64::engine::general_purpose::STANDARD;
            let hexed: Vec<String> = init.keys.iter().map(|k| hex(k)).collect();
            let b64ed: Vec<String> = init.keys.iter().map(|k| b64.encode(k.as_slice())).collect();
            let body = if init.recovery {
                json!({
                    "keys": [], "keys_base64": [],
                    "recovery_keys": hexed, "recovery_keys_base64": b64ed,
                    "root_token": init.root_token.expose(),
                })
            } else {
                json!({ "keys": hexed, "keys_base64": b64ed, "root_token": init.root_token.expose() })
            };
            Response::raw(200, body)
        }
        ("sys/seal-status", Operation::Read) => {
            Response::raw(200, seal_status_json(&core.seal_status().await?))
        }
        ("sys/unseal", _) if write => {
            let reset = f.bool("reset")?.unwrap_or(false);
            let key = match f.str("key")? {
                Some(k) if !k.is_empty() => Some(decode_share(&k)?),
                _ if reset => None,
                _ => {
                    return Err(Error::invalid(
                        "'key' must be specified in request body as JSON, or 'reset' set to true",
                    ));
                }
            };
            let migrate = f.bool("migrate")?.unwrap_or(false);
            let status = core.submit_unseal_key(key, reset, migrate).await?;
            Response::raw(200, seal_status_json(&status))
        }
        ("sys/health", Operation::Read) => health(core, &f).await?,
        ("sys/leader", Operation::Read) => ha::leader(core).await?,
        ("sys/init" | "sys/seal-status" | "sys/unseal" | "sys/health" | "sys/leader", _) => {
            return Err(Error::UnsupportedOperation);
        }
        _ => return Ok(None),
    };
    Ok(Some(resp))
}

/// `sys/health` with Vault's status codes and their query overrides.
async fn health(core: &Core, f: &Fields<'_>) -> Result<Response> {
    let code = |name: &str, default: u16| -> Result<u16> {
        match f.u64(name)? {
            Some(c) if (100..600).contains(&c) => Ok(c as u16),
            Some(c) => Err(Error::invalid(format!("{name} must be an HTTP status code, not {c}"))),
            None => Ok(default),
        }
    };
    let initialized = core.is_initialized().await?;
    let sealed = core.is_sealed();
    let standby = !sealed
        && matches!(core.ha_role(), Some(r) if !matches!(r, crate::ha::Role::Active { .. }));
    let status = if !initialized {
        code("uninitcode", 501)?
    } else if sealed {
        code("sealedcode", 503)?
    } else if standby && !f.bool("standbyok")?.unwrap_or(false) {
        code("standbycode", 429)?
    } else {
        code("activecode", 200)?
    };
    // The other overrides (DR, performance standby) concern nodes Coffer has not; validate them
    // so a typo is reported rather than silently ignored.
    for name in ["drsecondarycode", "performancestandbycode", "removedcode", "haunhealthycode"] {
        code(name, 200)?;
    }
    for name in ["standbyok", "perfstandbyok"] {
        f.bool(name)?;
    }
    // As Vault's: a node that is not unsealed reports itself a standby with an unknown
    // replication state, and names its cluster only once unsealed.
    let active = initialized && !sealed;
    let replication = if active { "disabled" } else { "unknown" };
    let mut body = json!({
        "initialized": initialized,
        "sealed": sealed,
        // Vault's: a sealed or uninitialized node, and an HA standby.
        "standby": standby || !active,
        "performance_standby": false,
        "replication_performance_mode": replication,
        "replication_dr_mode": replication,
        "server_time_utc": now_unix(),
        "version": VERSION,
    });
    if let Some(c) = core.active().ok().filter(|_| active) {
        body["cluster_name"] = json!(c.cluster.name);
        body["cluster_id"] = json!(c.cluster.id);
    }
    Ok(Response::raw(status, body))
}

/// Authenticated `sys/` endpoints: only the declared ones ([`paths`]), with their operations.
pub(crate) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Response> {
    use Operation::*;
    let op = ctx.op();
    if paths::gated(rel) && !ctx.core.chaos.enabled() {
        return Err(Error::UnsupportedPath(format!("sys/{rel}")));
    }
    // As OpenBao: a listener that does not serve them leaves these paths to the system
    // backend, which has no handler for them, whatever the method and the token (its bare
    // text: no multierror there).
    let refused = match rel.trim_end_matches('/') {
        "generate-root/attempt" | "generate-root/update" => !ctx.req.unauthed.generate_root,
        "rekey/init"
        | "rekey/update"
        | "rekey/verify"
        | "rekey-recovery-key/init"
        | "rekey-recovery-key/update"
        | "rekey-recovery-key/verify" => !ctx.req.unauthed.rekey,
        _ => false,
    };
    if refused {
        return Ok(Response::raw(405, json!({"errors": ["unsupported operation"]})));
    }
    paths::check(rel, op)?;
    let write = matches!(op, Create | Update);
    match rel {
        "seal" if write => {
            ctx.core.seal().await?;
            Ok(Response::empty())
        }
        "step-down" if write => Ok(ha::step_down(ctx.core)),
        "ha-status" if op == Read => ha::status(ctx.core).await,
        "rotate" if write => {
            ctx.core.rotate().await?;
            Ok(Response::empty())
        }
        "key-status" if op == Read => {
            let s = ctx.core.barrier.key_status()?;
            Ok(Response::from_value(json!({
                "term": s.term,
                "install_time": rfc3339(s.install_time),
                "encryptions": s.encryptions,
            })))
        }
        "capabilities-self" if write => policies::capabilities(ctx, ctx.caller()).await,
        "capabilities" if write => {
            let t = Fields::new(&ctx.req.data).required_str("token")?;
            let entry = ctx.active.tokens.lookup(&t).await?;
            let entry =
                entry.ok_or_else(|| Error::invalid(crate::logical::multierror("invalid token")))?;
            policies::capabilities(ctx, Some(&entry)).await
        }
        "capabilities-accessor" if write => {
            let a = Fields::new(&ctx.req.data).required_str("accessor")?;
            let entry = ctx.active.tokens.lookup_accessor(&a).await?;
            let entry = entry
                .ok_or_else(|| Error::invalid(crate::logical::multierror("invalid accessor")))?;
            policies::capabilities(ctx, Some(&entry)).await
        }
        "wrapping/unwrap" if write => {
            crate::wrapping::unwrap(&ctx.active.tokens, &ctx.req.data, ctx.caller()).await
        }
        "wrapping/lookup" if write || op == Read => {
            let t = ctx.req.client_token.as_ref();
            crate::wrapping::lookup(&ctx.active.tokens, &ctx.req.data, t, ctx.caller()).await
        }
        "wrapping/rewrap" if write => {
            crate::wrapping::rewrap(&ctx.active.tokens, &ctx.req.data, ctx.caller()).await
        }
        "wrapping/wrap" if write => {
            let ttl = ctx.req.wrap_ttl.map(|d| d.as_secs());
            crate::wrapping::wrap_data(
                &ctx.active.tokens,
                &ctx.req.data,
                ttl,
                ctx.req.seal_to.as_ref(),
            )
            .await
        }
        // A report about the caller's own deliveries: its request entry is the record.
        "agent/delivery" if write => {
            agent::check(&ctx.req.data)?;
            Ok(Response::empty())
        }
        "internal/specs/openapi" if op == Read => openapi(ctx),
        "metrics" if op == Read => metrics::read(ctx.core, &ctx.req.data).await,
        "host-info" if op == Read => host::info().await,
        "config/state/sanitized" if op == Read => match &ctx.core.config.sanitized_config {
            Value::Null => Err(Error::Internal("no configuration was given to the core".into())),
            c => Ok(Response::from_value(c.clone())),
        },
        "internal/counters/tokens" if op == Read => {
            let n = ctx.active.tokens.count().await?;
            Ok(Response::from_value(json!({"counters": {"service_tokens": {"total": n}}})))
        }
        "internal/counters/entities" if op == Read => {
            let total = ctx.active.identity.read(|s| s.entities.len())?;
            Ok(Response::from_value(json!({"counters": {"entities": {"total": total}}})))
        }
        // As Vault and OpenBao answer it since request counting was removed.
        "internal/counters/requests" if op == Read => Ok(Response::raw(
            404,
            json!({"errors": ["The functionality has been removed on this path"]}),
        )),
        "metrics"
        | "host-info"
        | "config/state/sanitized"
        | "internal/counters/tokens"
        | "internal/counters/entities"
        | "internal/counters/requests" => Err(Error::UnsupportedOperation),
        "internal/specs/openapi" => Err(Error::UnsupportedOperation),
        "wrapping/unwrap" | "wrapping/lookup" | "wrapping/rewrap" | "wrapping/wrap" => {
            Err(Error::UnsupportedOperation)
        }
        "seal"
        | "step-down"
        | "ha-status"
        | "rotate"
        | "key-status"
        | "capabilities-self"
        | "capabilities"
        | "capabilities-accessor"
        | "agent/delivery" => Err(Error::UnsupportedOperation),
        _ if rel.starts_with(events::PREFIX) => {
            events::subscribe(ctx, &rel[events::PREFIX.len()..])
        }
        _ if crate::authz::is_self_checked_sys(rel) && op == Read => {
            mounts::mount_of(ctx, &rel["internal/ui/mounts/".len()..]).await
        }
        _ => {
            if let Some(r) = generate_root::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = rekey::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = remount::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = chaos::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = leases::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = password::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = audit::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = mounts::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = policies::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = quotas::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = crate::leaks::handle(ctx, rel).await? {
                return Ok(r);
            }
            if let Some(r) = detect::handle(ctx, rel).await? {
                return Ok(r);
            }
            Err(Error::UnsupportedPath(format!("sys/{rel}")))
        }
    }
}

/// `sys/internal/specs/openapi`: the OpenAPI document of every mounted backend, under its
/// mount's prefix, and of `sys/` itself.
fn openapi(ctx: &Ctx<'_>) -> Result<Response> {
    use crate::backend::framework::openapi::{Mount, document};
    let router = ctx.active.router()?;
    let mut routes: Vec<_> = router.routes().collect();
    routes.sort_by(|a, b| a.full_path.cmp(&b.full_path));
    let (sudo, unauthenticated) = paths::special();
    let mut mounts: Vec<Mount<'_>> = routes
        .iter()
        .map(|r| Mount {
            path: &r.full_path,
            tag: r.table.tag(),
            specs: r.backend.specs(),
            unauthenticated: r.backend.unauthenticated_paths(),
            sudo: r.backend.sudo_paths(),
        })
        .collect();
    mounts.push(Mount {
        path: "sys/",
        tag: "system",
        specs: paths::specs(ctx.core.chaos.enabled()),
        unauthenticated: &unauthenticated,
        sudo: &sudo,
    });
    // Vault answers the document itself, not inside the response envelope.
    Ok(Response::raw(200, document(VERSION, &mounts)))
}

/// Vault accepts policy documents (ACL and password) base64-encoded. Base64 never has spaces,
/// quotes or braces, and a policy always has at least one of them, so one test tells them apart.
pub(crate) fn maybe_base64(raw: &str) -> String {
    let t = raw.trim();
    if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '"' || c == '{') {
        return raw.to_owned();
    }
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| raw.to_owned())
}
