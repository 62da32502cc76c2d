//! The request pipeline: seal gate → token → ACL → audit(request) → route → audit(response).
//!
//! Each step hands the next a proof that it ran: [`Authorized`] can only be made by
//! [`authorize`], and [`Audited`] only by [`audit_request`] from an `Authorized`; a backend or
//! `sys/` handler is only reachable through [`dispatch`], which takes an `Audited`. A request
//! that skipped a step does not compile. The proofs' fields are private to this module.

use std::sync::Arc;

use crate::audit::Record;
use crate::backend::{BackendRequest, path_matches};
use crate::core::{Active, Core, capability_for};
use crate::logical::{Error, Operation, Request, Response, Result};
use crate::mount::Route;
use crate::policy::Capabilities;
use crate::token::{TokenEntry, Use};

/// Where a request goes after the seal gate.
enum Target {
    Sys(String),
    Mount(Arc<Route>, String),
}

/// Proof that the token (if the path needs one) is live and the ACL allows the operation.
pub(crate) struct Authorized {
    caller: Option<TokenEntry>,
    op: Operation,
    sudo: bool,
}

/// Proof that the request entry reached the audit devices (or that none is enabled).
pub(crate) struct Audited<'a> {
    authz: &'a Authorized,
}

impl Audited<'_> {
    pub(crate) fn caller(&self) -> Option<&TokenEntry> {
        self.authz.caller.as_ref()
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
async fn authenticate(active: &Active, req: &Request) -> Result<TokenEntry> {
    let token = req.client_token.as_ref().ok_or(Error::PermissionDenied)?;
    if token.expose().is_empty() {
        return Err(Error::PermissionDenied);
    }
    let entry = active.tokens.lookup(token.expose()).await?.ok_or(Error::PermissionDenied)?;
    // A token bound to addresses is no use from anywhere else (as in Vault: 403).
    if !crate::cidr::Cidr::any_contains(&entry.bound_cidrs, req.remote_addr) {
        return Err(Error::PermissionDenied);
    }
    Ok(entry)
}

/// Token, existence check and ACL: who is asking, for which operation, with `sudo` or not.
async fn authorize(
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
            crate::sys::is_unauthenticated(rel)
                || (rel == "wrapping/unwrap"
                    && req.client_token.as_ref().is_none_or(|t| t.expose().is_empty())
                    && req
                        .data
                        .get("token")
                        .and_then(|t| t.as_str())
                        .is_some_and(|t| !t.is_empty()))
        }
    };
    let mut caller = if unauthenticated {
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
            caller: caller.as_ref(),
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
    if let Some(entry) = caller.as_mut() {
        let a = active.policies.acl(&entry.policies)?;
        let caps = a.capabilities(path);
        let sudo_required = match target {
            Target::Sys(rel) => crate::sys::is_sudo_path(rel),
            Target::Mount(r, rel) => path_matches(r.backend.sudo_paths(), rel),
        };
        sudo = caps.contains(Capabilities::SUDO);
        // `sys/internal/ui/mounts/...` decides access itself: any token with some capability
        // inside the mount may learn the mount's type, as in Vault.
        let self_checked = matches!(target, Target::Sys(rel) if crate::sys::is_self_checked(rel));
        // As Vault does, a list of `dir/` is also granted by a rule for `dir` itself.
        let allowed = a.allows(path, capability_for(op))
            || (op == Operation::List
                && path.strip_suffix('/').is_some_and(|p| a.allows(p, Capabilities::LIST)));
        if !self_checked && (!allowed || (sudo_required && !sudo)) {
            return Err(Error::PermissionDenied);
        }
        if matches!(op, Operation::Create | Operation::Update | Operation::Patch) {
            a.check_parameters(path, &req.data).map_err(|_| Error::PermissionDenied)?;
        }
        crate::wrapping::check_ttl(req.wrap_ttl.map(|d| d.as_secs()), a.wrapping_ttl_bounds(path))?;
    }
    Ok(Authorized { caller, op, sudo })
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
async fn audit_request<'a>(
    active: &Active,
    record: &Record<'_>,
    authz: &'a mut Authorized,
) -> Result<Audited<'a>> {
    active.audit.log_request(record, "").await?;
    if let Some(entry) = authz.caller.as_mut()
        && active.tokens.use_token(entry).await? == Use::Exhausted
    {
        let refused: Result<Response> = Err(Error::PermissionDenied);
        active.audit.log_response(record, &refused).await?;
        return Err(Error::PermissionDenied);
    }
    Ok(Audited { authz })
}

/// The only way into a backend or a `sys/` handler.
async fn dispatch(
    core: &Core,
    active: &Arc<Active>,
    req: &Request,
    target: Target,
    audited: &Audited<'_>,
) -> Result<Response> {
    match target {
        Target::Sys(rel) => {
            let ctx = crate::sys::Ctx { core, active, audited, req };
            crate::sys::handle(&ctx, &rel).await
        }
        Target::Mount(route, rel) => {
            let breq = BackendRequest {
                id: &req.id,
                operation: audited.op(),
                path: &rel,
                data: &req.data,
                caller: audited.caller(),
                mount: &route.info,
                remote_addr: req.remote_addr,
                sudo: audited.authz.sudo,
                client_token: req.client_token.as_ref(),
                client_cert_chain: &req.client_cert_chain,
            };
            let mut resp = route.backend.handle(&breq).await?;
            if let Some(secret) = resp.secret.take() {
                // Leases belong to secrets engines; an auth method's answer is a login.
                if route.table != crate::mount::Table::Secrets {
                    return Err(Error::Internal(format!(
                        "auth method {:?} answered with a leased secret",
                        route.entry.kind
                    )));
                }
                let renewable = secret.renewable;
                let internal = secret.internal.clone();
                let (lease_id, ttl) = match active
                    .leases
                    .register(&route, &rel, audited.caller(), secret)
                    .await
                {
                    Ok(l) => l,
                    Err(e) => {
                        // No lease, no secret: what the engine just made is taken back.
                        let now = crate::time::now_unix();
                        let undo = crate::backend::LeaseRequest {
                            lease_id: "",
                            path: &rel,
                            mount: &route.info,
                            internal: &internal,
                            issue_time: now,
                            expire_time: now,
                        };
                        if let Err(u) = route.backend.revoke_lease(&undo).await {
                            tracing::error!(path = %rel, error = %u, "a secret whose lease could not be stored could not be revoked either");
                        }
                        return Err(e);
                    }
                };
                resp.lease_id = lease_id;
                resp.lease_duration = ttl;
                resp.renewable = renewable;
            }
            if let Some(login) = resp.login.take() {
                // Only auth methods log in; an engine answering a login is a bug, not a token.
                if route.table != crate::mount::Table::Auth {
                    return Err(Error::Internal(format!(
                        "secrets engine {:?} answered with a login",
                        route.entry.kind
                    )));
                }
                let path = format!("{}{rel}", route.info.path);
                resp.auth =
                    Some(crate::login::issue(&active.tokens, &route.info, &path, login).await?);
            }
            Ok(resp)
        }
    }
}

impl Core {
    /// The whole pipeline for one request.
    pub async fn handle(&self, req: Request) -> Result<Response> {
        let mut path = crate::path::clean(&req.path)?;
        // As Vault does: a list is always of a folder, so policies on `dir/*` cover `LIST dir`.
        if req.operation == Operation::List && !path.ends_with('/') {
            path.push('/');
        }
        if let Some(resp) = crate::sys::public(self, &req, &path).await? {
            return Ok(resp);
        }
        let active = self.active()?;
        let target = match path.strip_prefix("sys/") {
            Some(rest) => Target::Sys(rest.to_owned()),
            None if path == "sys" => Target::Sys(String::new()),
            None => {
                let router = active.router()?;
                let Some((route, rel)) = router.route(&path) else {
                    // Which paths are mounted is not for anonymous eyes: 403 before 404.
                    let e = match authenticate(&active, &req).await {
                        Ok(_) => Error::UnsupportedPath(path.clone()),
                        Err(e) => e,
                    };
                    let record = Record {
                        req: &req,
                        path: &path,
                        operation: req.operation.as_str(),
                        caller: None,
                        mount_type: "",
                    };
                    let _ =
                        active.audit.log_request(&record, &crate::audit::public_error(&e)).await;
                    return Err(e);
                };
                let rel = rel.to_owned();
                Target::Mount(route, rel)
            }
        };
        let mount_type = match &target {
            Target::Sys(_) => "system".to_owned(),
            Target::Mount(r, _) => r.entry.kind.clone(),
        };
        // Logins (an auth method's unauthenticated paths) are where credentials are guessed.
        let login_mount = match &target {
            Target::Mount(r, rel)
                if r.table == crate::mount::Table::Auth
                    && path_matches(r.backend.unauthenticated_paths(), rel) =>
            {
                Some(r.entry.accessor.clone())
            }
            _ => None,
        };
        let limited =
            login_mount.as_deref().is_some_and(|m| !self.login_limiter.allows(m, req.remote_addr));
        let authz = if limited {
            Err(Error::RateLimited)
        } else if let Err(e) = check_wrap_ttl(self, &req, &target) {
            Err(e)
        } else {
            authorize(&active, &req, &path, &target).await
        };
        let mut authz = match authz {
            Ok(a) => a,
            Err(e) => {
                // A refused request is audited too (best effort: it is refused either way).
                let record = Record {
                    req: &req,
                    path: &path,
                    operation: req.operation.as_str(),
                    caller: None,
                    mount_type: &mount_type,
                };
                let _ = active.audit.log_request(&record, &crate::audit::public_error(&e)).await;
                return Err(e);
            }
        };
        // The caller as authorized, before the use this request takes is counted.
        let caller = authz.caller.clone();
        let record = Record {
            req: &req,
            path: &path,
            operation: authz.op.as_str(),
            caller: caller.as_ref(),
            mount_type: &mount_type,
        };
        let audited = audit_request(&active, &record, &mut authz).await?;
        let result = dispatch(self, &active, &req, target, &audited).await;
        if let (Some(m), Err(Error::InvalidRequest(_) | Error::PermissionDenied)) =
            (&login_mount, &result)
        {
            self.login_limiter.failed(m, req.remote_addr);
        }
        let result = match (result, req.wrap_ttl) {
            (Ok(resp), Some(ttl)) if crate::wrapping::wrappable(&resp) => {
                crate::wrapping::wrap(&active.tokens, resp, ttl.as_secs(), &path).await
            }
            (r, _) => r,
        };
        // Sealing drops the broker with the rest of the state; the response goes to the devices
        // that were live when the request started.
        let logged = active.audit.log_response(&record, &result).await;
        // The request that took a token's last use is done: now the token goes.
        if let Some(spent) = audited.caller().filter(|c| c.spent) {
            active.tokens.revoke_tree(&spent.id).await?;
        }
        logged?;
        result
    }
}
