//! The request pipeline: seal gate → token → ACL → audit(request) → route → audit(response)
//! → seal the answer to the client's key when the request named one.
//!
//! One readable function per request ([`Core::handle`]); the checks and their proofs are in
//! [`crate::authz`], and a backend or `sys/` handler is only reachable through [`dispatch`],
//! which takes an [`Audited`] proof.

use std::sync::Arc;

use crate::audit::Record;
use crate::authz::{Audited, Target, audit_request, authenticate, authorize};
use serde_json::{Value, json};

use crate::backend::framework::Help;
use crate::backend::framework::openapi::{Mount, document};
use crate::backend::{BackendRequest, path_matches};
use crate::core::{Active, Core};
use crate::logical::{Error, Operation, Request, Response, Result};

/// The only way into a backend or a `sys/` handler.
async fn dispatch(
    core: &Core,
    active: &Arc<Active>,
    req: &Request,
    target: Target,
    audited: &Audited<'_>,
) -> Result<Response> {
    if audited.op() == Operation::Help {
        let unknown = || Error::UnsupportedPath(req.path.trim_start_matches('/').to_owned());
        return match &target {
            Target::Sys(rel) => {
                let chaos = core.chaos.enabled();
                let help = crate::sys::paths::help(rel, chaos).ok_or_else(unknown)?;
                let (sudo, unauthenticated) = crate::sys::paths::special();
                Ok(help_response(help, "system", &unauthenticated, &sudo))
            }
            Target::Mount(route, rel) => {
                let help = route.backend.help(rel).ok_or_else(unknown)?;
                let b = &route.backend;
                let tag = route.table.tag();
                Ok(help_response(help, tag, b.unauthenticated_paths(), b.sudo_paths()))
            }
        };
    }
    match target {
        Target::Sys(rel) => {
            let ctx = crate::sys::Ctx { core, active, audited, req };
            let started = std::time::Instant::now();
            // Boxed: the system backend's future is the largest of all (every `sys/` handler's
            // state), and unboxed it would make every request's future as large, copied whole
            // when the request task is made.
            let r = Box::pin(crate::sys::handle(&ctx, &rel)).await;
            core.metrics.sys.record(audited.op(), started.elapsed());
            r
        }
        Target::Mount(route, rel) => {
            let (route, _in_flight) = enter(active, route).await?;
            let breq = BackendRequest {
                id: &req.id,
                operation: audited.op(),
                path: &rel,
                data: &req.data,
                caller: audited.caller(),
                mount: &route.info,
                remote_addr: req.remote_addr,
                sudo: audited.sudo(),
                client_token: req.client_token.as_ref(),
                client_cert_chain: &req.client_cert_chain,
            };
            let started = std::time::Instant::now();
            let resp = route.backend.handle(&breq).await;
            route.stats.record(audited.op(), started.elapsed());
            let mut resp = resp?;
            let events = std::mem::take(&mut resp.events);
            // A replica issues no lease and no token: the active node answers.
            if active.replica && (resp.secret.is_some() || resp.login.is_some()) {
                return Err(Error::Standby);
            }
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
                    Ok(Ok(l)) => l,
                    // Stored, then taken back by the lease itself: nothing is left to undo.
                    Ok(Err(e)) => return Err(e),
                    // No lease answers for the secret now: none was stored, or the one stored
                    // could not be revoked (see `register`).
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
                resp.auth = Some(
                    crate::login::issue(
                        &active.tokens,
                        &active.identity,
                        &route.info,
                        &path,
                        login,
                    )
                    .await?,
                );
            }
            // The handler succeeded, so what it changed is durable: subscribers may hear of it.
            if !events.is_empty() {
                active.events.publish(&route, events);
            }
            Ok(resp)
        }
    }
}

/// Waits at the mount's gate; when the backend was replaced meanwhile (a kv upgrade), the
/// request goes to the mount now at the same path. The guard is held until the answer is made.
async fn enter(
    active: &Active,
    mut route: Arc<crate::mount::Route>,
) -> Result<(Arc<crate::mount::Route>, crate::mount::InFlight)> {
    loop {
        if let Some(in_flight) = route.gate.enter().await {
            return Ok((route, in_flight));
        }
        let router = active.router()?;
        route = router
            .routes()
            .find(|r| r.full_path == route.full_path)
            .cloned()
            .ok_or_else(|| Error::UnsupportedPath(route.full_path.clone()))?;
    }
}

/// A request the server makes of a mount's backend on its own behalf (a leak response, the chaos
/// `rotate` fault): with sudo, through the engine's own paths (its locks, versioning, events),
/// and through the mount's gate as client requests go, so a kv upgrade waits for it too.
pub(crate) async fn call_backend(
    active: &Active,
    route: &Arc<crate::mount::Route>,
    request_id: &str,
    caller: Option<&crate::token::TokenEntry>,
    operation: Operation,
    path: &str,
    data: &serde_json::Map<String, Value>,
) -> Result<Response> {
    let (route, _in_flight) = enter(active, route.clone()).await?;
    let req = BackendRequest {
        id: request_id,
        operation,
        path,
        data,
        caller,
        mount: &route.info,
        remote_addr: None,
        sudo: true,
        client_token: None,
        client_cert_chain: &[],
    };
    // Its callers read the answer's fields.
    let mut resp = route.backend.handle(&req).await?.materialized()?;
    let events = std::mem::take(&mut resp.events);
    if !events.is_empty() {
        active.events.publish(&route, events);
    }
    Ok(resp)
}

/// Vault's answer to `?help=1`, not in the response envelope: the help text, an OpenAPI
/// document of the paths it covers (relative to the mount, as Vault gives them) and `see_also`.
fn help_response(help: Help, tag: &'static str, unauth: &[&str], sudo: &[&str]) -> Response {
    let mount = Mount { path: "", tag, specs: help.specs, unauthenticated: unauth, sudo };
    Response::raw(
        200,
        json!({
            "help": help.text,
            "openapi": document(crate::sys::VERSION, &[mount]),
            "see_also": Value::Null,
        }),
    )
}

impl Core {
    /// The whole pipeline for one request.
    pub async fn handle(&self, req: Request) -> Result<Response> {
        self.handle_ref(&req, false).await
    }

    /// [`Self::handle`] for a client of the HTTP API, with a refusal worded as Vault words it:
    /// a refusal by policy in its multierror text, a refusal of the token itself plainly
    /// (clients show, and some match, the text). A 403 with a token that is still live after
    /// the request was by policy. The token is looked up again only on that path, and by
    /// reference: no request's token is copied to make this decision.
    ///
    /// Unlike [`Self::handle`], the answer may carry [`Response::data_json`]: the transport
    /// writes it out as it is.
    pub async fn handle_for_client(&self, req: Request) -> Result<Response> {
        match (self.handle_ref(&req, true).await, req.client_token.as_ref()) {
            (Err(Error::PermissionDenied), Some(t))
                if self.token_is_live(t.expose(), req.remote_addr).await =>
            {
                Err(Error::Forbidden(crate::logical::multierror("permission denied")))
            }
            (r, _) => r,
        }
    }

    /// `transport`: the caller is the HTTP transport, which takes [`Response::data_json`] as
    /// it is; anyone else gets `data`.
    async fn handle_ref(&self, req: &Request, transport: bool) -> Result<Response> {
        self.foreground.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let chaos = crate::path::clean(&req.path).is_ok_and(|p| crate::chaos::is_chaos_path(&p));
        let resp = if chaos {
            crate::chaos::exempted(self.answer(req, transport)).await?
        } else {
            self.answer(req, transport).await?
        };
        // Last, after the audit entries (written from the answer in clear and HMAC'd, as for
        // any answer): nothing after this point holds the answer in clear but the transport.
        match &req.seal_to {
            Some(to) => crate::sealing::seal(resp, to, &crate::sealing::binding(req)),
            None => Ok(resp),
        }
    }

    async fn answer(&self, req: &Request, transport: bool) -> Result<Response> {
        let mut timer = RequestTimer {
            metrics: &self.metrics,
            started: std::time::Instant::now(),
            login: false,
        };
        let mut path = crate::path::clean(&req.path)?;
        // As Vault does: a list is always of a folder, so policies on `dir/*` cover `LIST dir`.
        if req.operation == Operation::List && !path.ends_with('/') {
            path.push('/');
        }
        // Help on a public endpoint goes through the pipeline (sealed: 503, audited) like any.
        if req.operation != Operation::Help
            && let Some(resp) = crate::sys::public(self, req, &path).await?
        {
            return Ok(resp);
        }
        // An HA standby answers from its read replica what it can prove fresh; anything else
        // is `Standby`, which the binary forwards to the active node (ha::replica).
        let active = match self.active() {
            Err(Error::Standby) => self.replica_for(req)?,
            other => other?,
        };
        let target = match path.strip_prefix("sys/") {
            Some(rest) => Target::Sys(rest.to_owned()),
            None if path == "sys" => Target::Sys(String::new()),
            None => {
                let router = active.router()?;
                let Some((route, rel)) = router.route(&path) else {
                    if active.replica {
                        return Err(Error::Standby);
                    }
                    // Which paths are mounted is not for anonymous eyes: 403 before 404.
                    let e = match authenticate(&active, req).await {
                        Ok(_) => Error::UnsupportedPath(path.clone()),
                        Err(e) => e,
                    };
                    let record = Record {
                        req,
                        path: &path,
                        operation: req.operation.as_str(),
                        caller: None,
                        mount_type: "",
                        non_hmac: Default::default(),
                        login: false,
                    };
                    let _ =
                        active.audit.log_request(&record, &crate::audit::public_error(&e)).await;
                    return Err(e);
                };
                let rel = rel.to_owned();
                Target::Mount(route, rel)
            }
        };
        if active.replica
            && !matches!(&target, Target::Mount(r, _) if crate::ha::replica::serves_kind(&r.entry.kind))
        {
            return Err(Error::Standby);
        }
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
        timer.login = login_mount.is_some();
        let login_stats = match &target {
            Target::Mount(r, _) if timer.login => Some(r.stats.clone()),
            _ => None,
        };
        let limited =
            login_mount.as_deref().is_some_and(|m| !self.login_limiter.allows(m, req.remote_addr));
        let authz = if limited {
            Err(Error::RateLimited)
        } else {
            authorize(self, &active, req, &path, &target).await
        };
        let authz = match authz {
            // A replica answers only for a live token it knows, used without a count (a use is
            // a write); a refusal is the active node's to give, on its current state.
            Ok(a) if active.replica && a.caller().is_none_or(|c| c.num_uses > 0) => {
                return Err(Error::Standby);
            }
            Err(_) if active.replica => return Err(Error::Standby),
            Ok(a) => a,
            Err(e) => {
                // A refused request is audited too (best effort: it is refused either way).
                let record = Record {
                    req,
                    path: &path,
                    operation: req.operation.as_str(),
                    caller: None,
                    mount_type: &mount_type,
                    non_hmac: Default::default(),
                    login: login_mount.is_some(),
                };
                let _ = active.audit.log_request(&record, &crate::audit::public_error(&e)).await;
                return Err(e);
            }
        };
        // The mount's own choice of data keys to log in clear (its tune settings).
        let (clear_request, clear_response) = match &target {
            Target::Mount(r, _) => (
                r.entry.config.audit_non_hmac_request_keys.clone(),
                r.entry.config.audit_non_hmac_response_keys.clone(),
            ),
            Target::Sys(_) => (Vec::new(), Vec::new()),
        };
        let record = Record {
            req,
            path: &path,
            operation: authz.op().as_str(),
            caller: authz.caller(),
            mount_type: &mount_type,
            non_hmac: crate::audit::NonHmac { request: &clear_request, response: &clear_response },
            login: login_mount.is_some(),
        };
        let audit_started = std::time::Instant::now();
        let audited = audit_request(&active, &record, &authz).await;
        self.metrics.audit_request.since(audit_started);
        if let Err(e) = &audited
            && !matches!(e, Error::PermissionDenied)
        {
            self.metrics.audit_request_failure.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let audited = match audited {
            // This standby's devices could not write: the active node's may.
            Err(_) if active.replica => return Err(Error::Standby),
            a => a?,
        };
        // Chaos faults act here: after the request entry, so an injected error is audited as
        // the answer like any other.
        let result = match self.chaos_inject(&path, audited.caller()).await {
            Ok(()) => dispatch(self, &active, req, target, &audited).await,
            Err(e) => Err(e),
        };
        // On a replica, only an answer about the request itself stands (nothing there, a bad
        // request); any other error (a key term not yet known here, a lease) goes to the
        // active node, which answers and audits it. This node's request entry stays.
        if active.replica
            && let Err(e) = &result
            && !matches!(
                e,
                Error::NotFound
                    | Error::UnsupportedPath(_)
                    | Error::InvalidRequest(_)
                    | Error::UnsupportedOperation
            )
        {
            return Err(Error::Standby);
        }
        if let Some(stats) = &login_stats {
            stats.login(result.as_ref().is_ok_and(|r| r.auth.is_some() || r.login.is_some()));
        }
        if let (
            Some(m),
            Err(
                Error::InvalidRequest(_)
                | Error::PermissionDenied
                | Error::Refused(_)
                | Error::LoginFailed { .. },
            ),
        ) = (&login_mount, &result)
        {
            self.login_limiter.failed(m, req.remote_addr);
        }
        // Wrapping and sealing read `data`; so does every caller but the transport. (The
        // audit broker reads `data_json` itself, whatever the devices were when this ran.)
        let result = if transport && req.wrap_ttl.is_none() && req.seal_to.is_none() {
            result
        } else {
            result.and_then(Response::materialized)
        };
        let result = match (result, req.wrap_ttl) {
            (Ok(resp), Some(ttl)) if crate::wrapping::wrappable(&resp) => {
                let ttl = ttl.as_secs();
                crate::wrapping::wrap(&active.tokens, resp, ttl, &path, req.seal_to.as_ref()).await
            }
            (r, _) => r,
        };
        // Sealing drops the broker with the rest of the state; the response goes to the devices
        // that were live when the request started.
        let result = result.map(|mut r| {
            r.mount_type = mount_type.clone();
            r
        });
        let audit_started = std::time::Instant::now();
        let logged = active.audit.log_response(&record, &result).await;
        self.metrics.audit_response.since(audit_started);
        if logged.is_err() {
            self.metrics.audit_response_failure.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // The request that took a token's last use is done: now the token goes.
        if let Some(spent) = audited.caller().filter(|c| c.spent) {
            active.tokens.revoke_tree(&spent.id).await?;
        }
        logged?;
        // The role a failed login was attributed to was for the audit entry and the rules
        // only: the caller gets the error itself.
        result.map_err(|e| match e {
            Error::LoginFailed { error, .. } => *error,
            e => e,
        })
    }
}

/// Times one request into `vault.core.handle_request` (or `handle_login_request`), whichever
/// way `answer` returns.
struct RequestTimer<'a> {
    metrics: &'a crate::metrics::Metrics,
    started: std::time::Instant,
    login: bool,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let t = if self.login {
            &self.metrics.handle_login_request
        } else {
            &self.metrics.handle_request
        };
        t.since(self.started);
    }
}
