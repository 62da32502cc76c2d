//! Who may do what: the token check, the existence check, the ACL and the audit of the request,
//! each handing the next a proof that it ran.
//!
//! [`Authorized`] can only be made by [`authorize`], and [`Audited`] only by [`audit_request`]
//! from an `Authorized`; the pipeline's dispatch to a backend or a `sys/` handler takes an
//! `Audited`, so a request that skipped a step does not compile. The proofs' fields are private
//! to this module. Not here: routing and the handlers themselves (`pipeline`, `sys`).

use std::sync::Arc;

use crate::audit::Record;
use crate::backend::{BackendRequest, path_matches};
use crate::core::{Active, Core, capability_for};
use crate::logical::{Error, Operation, Request, Response, Result};
use crate::mount::Route;
use crate::policy::Capabilities;
use crate::token::{TokenEntry, Use};

/// Where a request goes after the seal gate.
pub(crate) enum Target {
    Sys(String),
    Mount(Arc<Route>, String),
}

/// Proof that the token (if the path needs one) is live and the ACL allows the operation.
pub(crate) struct Authorized {
    /// As the token cache holds it: not copied per request.
    caller: Option<Arc<TokenEntry>>,
    op: Operation,
    sudo: bool,
    /// Whether the request takes one use of a limited-use token.
    uses_token: bool,
}

/// Proof that the request entry reached the audit devices (or that none is enabled).
pub(crate) struct Audited<'a> {
    authz: &'a Authorized,
    /// A limited-use caller as it is after this request's use was counted.
    used: Option<TokenEntry>,
}

impl Authorized {
    pub(crate) fn caller(&self) -> Option<&TokenEntry> {
        self.caller.as_deref()
    }

    /// The operation as the ACL judged it (a write to a path with nothing there is a create).
    pub(crate) fn op(&self) -> Operation {
        self.op
    }
}

impl Audited<'_> {
    pub(crate) fn caller(&self) -> Option<&TokenEntry> {
        self.used.as_ref().or(self.authz.caller.as_deref())
    }

    pub(crate) fn op(&self) -> Operation {
        self.authz.op
    }

    /// The caller holds `sudo` on the path (root tokens always do).
    pub(crate) fn sudo(&self) -> bool {
        self.authz.sudo
    }
}

/// Resolves the presented token to a live entry, or refuses with 403.
pub(crate) async fn authenticate(active: &Active, req: &Request) -> Result<Arc<TokenEntry>> {
    let token = req.client_token.as_ref().ok_or(Error::PermissionDenied)?;
    if token.expose().is_empty() {
        return Err(Error::PermissionDenied);
    }
    let entry = active
        .tokens
        .lookup_presented(token.expose(), req.token_memo.as_deref())
        .await?
        .ok_or(Error::PermissionDenied)?;
    // A token bound to addresses is no use from anywhere else (as in Vault: 403).
    if !crate::cidr::Cidr::any_contains(&entry.bound_cidrs, req.remote_addr) {
        return Err(Error::PermissionDenied);
    }
    // A disabled entity's tokens are refused, as in Vault (they work again when re-enabled).
    if active.identity.is_disabled(&entry.entity_id)? {
        return Err(Error::PermissionDenied);
    }
    Ok(entry)
}

/// Token, existence check and ACL: who is asking, for which operation, with `sudo` or not.
pub(crate) async fn authorize(
    core: &Core,
    active: &Active,
    req: &Request,
    path: &str,
    target: &Target,
) -> Result<Authorized> {
    let unauthenticated = match target {
        Target::Mount(r, rel) => path_matches(r.backend.unauthenticated_paths(), rel),
        // Unwrapping with the wrapping token in the body and no token of one's own: the
        // wrapping token is the credential, and it allows exactly this (clients such as
        // vaultrs send it this way from a workload that has no token yet).
        Target::Sys(rel) => {
            is_unauthenticated_sys(rel)
                // The public endpoints (`sys/init`, `sys/health`...) document themselves to
                // anyone, as Vault's unauthenticated system paths do.
                || (req.operation == Operation::Help && is_public_sys(rel))
                || (rel == "wrapping/unwrap"
                    && req.client_token.as_ref().is_none_or(|t| t.expose().is_empty())
                    && req
                        .data
                        .get("token")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| !t.is_empty()))
        }
    };
    let caller = if unauthenticated {
        None
    } else {
        match authenticate(active, req).await {
            Ok(e) => Some(e),
            // Unwrapping with a used, expired or unknown wrapping token: Vault's 400, which
            // tells the receiver that somebody else may have unwrapped it first.
            Err(Error::PermissionDenied)
                if matches!(target, Target::Sys(rel) if rel == "wrapping/unwrap")
                    && req.client_token.is_some()
                    && !req.data.contains_key("token") =>
            {
                return Err(Error::invalid(crate::wrapping::INVALID_WRAPPING_TOKEN));
            }
            Err(e) => return Err(e),
        }
    };
    let mut op = req.operation;
    if let (Target::Mount(route, rel), Operation::Update) = (target, op) {
        let probe = BackendRequest {
            id: &req.id,
            operation: op,
            path: rel,
            data: &req.data,
            caller: caller.as_deref(),
            mount: &route.info,
            remote_addr: req.remote_addr,
            sudo: false,
            client_token: req.client_token.as_ref(),
            client_cert_chain: &req.client_cert_chain,
        };
        match route.backend.exists(&probe).await {
            Ok(Some(false)) => op = Operation::Create,
            Ok(_) => {}
            // A path the storage cannot hold (too long, say) is refused by the handler, after
            // the ACL check: the caller learns that it is malformed only if it may write there.
            Err(Error::InvalidRequest(_)) => {}
            // There but unreadable: an update, so that an authorized overwrite repairs it.
            Err(Error::Damaged(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let mut sudo = false;
    // A report about the caller's own token needs it live, and no rule but the absence of `deny`.
    let self_report = matches!(target, Target::Sys(rel) if is_self_report_sys(rel));
    // Help needs a live token (unless the path needs none) and no capability: Vault's ACL
    // allows it on every path, `sudo` ones included.
    let needed = capability_for(op);
    if let (Some(entry), Some(needed)) = (caller.as_deref(), needed) {
        let a = active.acl_for(entry)?;
        let at = a.at(path);
        let caps = at.capabilities();
        let sudo_required = match target {
            Target::Sys(rel) => is_sudo_sys(rel),
            // A LIST names its folder with a trailing `/`; a rule for the path itself counts.
            Target::Mount(r, rel) => {
                let sudo = r.backend.sudo_paths();
                path_matches(sudo, rel) || path_matches(sudo, rel.trim_end_matches('/'))
            }
        };
        sudo = caps.contains(Capabilities::SUDO);
        // `sys/internal/ui/mounts/...` decides access itself: any token with some capability
        // inside the mount may learn the mount's type, as in Vault.
        let self_checked = matches!(target, Target::Sys(rel) if is_self_checked_sys(rel));
        // As Vault does, a list of `dir/` is also granted by a rule for `dir` itself.
        let allowed = if self_report {
            !caps.contains(Capabilities::DENY)
        } else {
            at.allows(needed)
                || (op == Operation::List
                    && path.strip_suffix('/').is_some_and(|p| a.allows(p, Capabilities::LIST)))
        };
        if !self_checked && (!allowed || (sudo_required && !sudo)) {
            return Err(Error::PermissionDenied);
        }
        if matches!(op, Operation::Create | Operation::Update | Operation::Patch) {
            a.check_parameters(path, &req.data).map_err(|_| Error::PermissionDenied)?;
        }
        crate::wrapping::check_ttl(req.wrap_ttl.map(|d| d.as_secs()), at.wrapping_ttl_bounds())?;
        if req.seal_to.is_none() && at.requires_sealed_response() {
            return Err(Error::invalid(format!(
                "this path requires a sealed response (require_sealed_response is set): send \
                 the client's X25519 public key in {}",
                coffer_hpke::HEADER
            )));
        }
    }
    // After the token and the ACL: what a mount allows is not for callers without access.
    check_wrap_ttl(core, req, target)?;
    // A report is not a use of what the token grants: an agent's limited-use token keeps its
    // uses for the secrets.
    Ok(Authorized { caller, op, sudo, uses_token: !self_report })
}

/// A requested wrap TTL may not exceed the max lease TTL of the mount that answers (the
/// system's for `sys/`): a wrapping token is a lease on the response, and one that outlives every
/// other lease (or overflows its expiry) is refused before anything runs.
fn check_wrap_ttl(core: &Core, req: &Request, target: &Target) -> Result<()> {
    let Some(ttl) = req.wrap_ttl else { return Ok(()) };
    let (max, whose) = match target {
        Target::Mount(r, _) => (r.info.max_lease_ttl, format!("mount {:?}", r.info.path)),
        Target::Sys(_) => (core.config.max_lease_ttl, "system".to_owned()),
    };
    if ttl > max {
        return Err(Error::invalid(format!(
            "requested wrap TTL of {}s exceeds the {whose} max_lease_ttl of {}s",
            ttl.as_secs(),
            max.as_secs()
        )));
    }
    Ok(())
}

/// Writes the request entry; fails closed when devices are enabled and none could write. Only
/// then is a use of a limited-use token taken, so a request that no device could audit costs
/// its token nothing (a wrapping token stays unwrappable). A token whose last use is already
/// gone is refused here, with a response entry saying so.
pub(crate) async fn audit_request<'a>(
    active: &Active,
    record: &Record<'_>,
    authz: &'a Authorized,
) -> Result<Audited<'a>> {
    active.audit.log_request(record, "").await?;
    // Only a limited-use token changes with its use; unlimited ones (nearly all) are not copied.
    let mut used = authz.caller.as_deref().filter(|c| c.num_uses > 0 && authz.uses_token).cloned();
    if let Some(entry) = used.as_mut()
        && active.tokens.use_token(entry).await? == Use::Exhausted
    {
        let refused: Result<Response> = Err(Error::PermissionDenied);
        active.audit.log_response(record, &refused).await?;
        return Err(Error::PermissionDenied);
    }
    Ok(Audited { authz, used })
}

// Which `sys/` paths need what: authorization facts about the system backend's paths.

/// Paths below `sys/` whose handler checks the caller's ACL itself.
pub(crate) fn is_self_checked_sys(rel: &str) -> bool {
    rel.starts_with("internal/ui/mounts/")
}

/// The endpoints below `sys/` that answer without a token and while sealed (Vault's
/// unauthenticated system paths); `sys::public` serves them, before the token check.
pub(crate) fn is_public_sys(rel: &str) -> bool {
    matches!(rel.trim_end_matches('/'), "init" | "seal-status" | "unseal" | "health" | "leader")
}

/// Paths below `sys/` reachable without a token: a wrapping token is looked up without being
/// used, and root generation and rekeying, whose credential is a quorum of unseal key shares
/// (as in Vault; unlike Vault, they are audited like every request). `sys/generate-root`
/// itself, the attempt's other name, needs a token, as in Vault, where only the `attempt` and
/// `update` paths skip the token check. `sys/leaks/github` is where GitHub posts secret-scanning
/// alerts: their credential is GitHub's signature, checked by its handler (`leaks::github`).
pub(crate) fn is_unauthenticated_sys(rel: &str) -> bool {
    matches!(
        rel.trim_end_matches('/'),
        "wrapping/lookup"
            | "generate-root/attempt"
            | "generate-root/update"
            | "decode-token"
            | "rekey/init"
            | "rekey/update"
            | "rekey/verify"
            | "rekey-recovery-key/init"
            | "rekey-recovery-key/update"
            | "rekey-recovery-key/verify"
            | "leaks/github"
    )
}

/// Paths below `sys/` that any live token may use about itself without a capability (an
/// explicit `deny` still refuses): an agent's report of its own deliveries, which changes
/// nothing and is only audited.
pub(crate) fn is_self_report_sys(rel: &str) -> bool {
    rel.trim_end_matches('/') == "agent/delivery"
}

/// Paths below `sys/` that need `sudo`, as in Vault.
pub(crate) fn is_sudo_sys(rel: &str) -> bool {
    rel.starts_with("auth/") && !rel.ends_with("/tune")
        || matches!(
            rel,
            "seal" | "rotate" | "step-down" | "audit" | "raw" | "rekey/backup" | "remount"
        )
        || rel.starts_with("audit/")
        || rel.starts_with("raw/")
        || rel.starts_with("leases/revoke-prefix/")
        || rel.starts_with("leases/revoke-force/")
        || rel.starts_with("revoke-prefix/")
        || rel.starts_with("revoke-force/")
        || rel.starts_with("leases/lookup/")
        || rel.trim_end_matches('/') == "leases"
        || rel == "chaos"
        || rel.starts_with("chaos/")
        || rel.trim_end_matches('/') == "detect/rules"
        || rel.starts_with("detect/rules/")
}
