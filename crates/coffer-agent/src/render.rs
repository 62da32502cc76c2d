//! Rendering: the secrets templates read, kept fresh, and the files and environment made from
//! them.
//!
//! A secret a template reads is a dependency, fetched once and shared by every template that
//! reads it. A dependency without a lease (KV) is read again when an event says it changed, and
//! at `static_secret_render_interval` in any case; one with a lease is renewed at two thirds of
//! its duration and fetched anew when renewal stops extending it (its max TTL is near) or fails.
//! A certificate a template asks for with `pkiCert` is issued anew at about two thirds of its
//! lifetime (as Vault Agent does), whether or not the server gave it a lease.
//! A new token makes every dependency stale: the old token's leases may be gone with it.
//!
//! Templates render synchronously: a secret not fetched yet renders as empty and is noted; the
//! renderer fetches what was noted and renders again, until nothing is missing. When the server
//! cannot be reached, the last value fetched is used and the render is retried later, so the app
//! keeps what it has; a file is only replaced by a complete, successful render.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};
use coffer_template::{Secret, Template};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::auth::{AuthSignals, Token, TokenRx};
use crate::backoff::splay;
use crate::cache::{self, CachedLease, CachedSecret};
use crate::config::{CommandConfig, EnvTemplate, TemplateConfig, TemplateSettings, TemplateSource};
use crate::conn::{Conn, is_unreachable};
use crate::delivery::{self, Owner};
use crate::exec::{AppEvent, spawn_tracked, untrack};
use crate::report::{Reason, Reporter};
use crate::secret::ValueBox;
use crate::status::Status;

/// A secret as templates see it: consul-template's `Secret` fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DepKey {
    pub(crate) path: String,
    /// `secret "path" "k=v"` writes these and reads the answer.
    pub(crate) args: Vec<(String, String)>,
    /// A `pkiCert` certificate: always issued with a write, re-issued before it expires.
    pub(crate) pki: bool,
}

struct Lease {
    id: String,
    /// The duration first granted: what renewals ask for again.
    issued: Duration,
    due: Instant,
    /// When the secret stops working; never served from the agent's memory past this.
    expires: Instant,
    renew: bool,
}

struct Dep {
    /// The value templates see; zeroized on drop.
    value: Zeroizing<ValueBox>,
    lease: Option<Lease>,
    stale: bool,
    /// Why it is stale, for the delivery report.
    why: Reason,
    /// Fetched by the token of this generation.
    generation: u64,
}

impl Dep {
    fn mark_stale(&mut self, why: Reason) {
        self.why = if self.stale { self.why.max(why) } else { why };
        self.stale = true;
    }
}

struct FileTemplate {
    name: String,
    cfg: TemplateConfig,
    template: Template,
    owner: Owner,
    deps: HashSet<DepKey>,
    /// Whether the last render was written (a failure leaves the previous file).
    rendered: bool,
}

struct EnvTpl {
    cfg: EnvTemplate,
    template: Template,
    deps: HashSet<DepKey>,
    value: Option<Zeroizing<String>>,
}

pub(crate) struct Renderer {
    conn: Conn,
    status: Status,
    settings: TemplateSettings,
    files: Vec<FileTemplate>,
    envs: Vec<EnvTpl>,
    deps: HashMap<DepKey, Dep>,
    token: Option<Arc<Token>>,
    signals: Arc<AuthSignals>,
    app: Option<mpsc::Sender<AppEvent>>,
    /// Something was fetched since the persisted cache was last written.
    dirty: bool,
    reporter: Option<Reporter>,
}

/// The templates of a configuration, parsed, with their owners resolved.
pub(crate) struct Parsed {
    files: Vec<(TemplateConfig, Template, Owner)>,
    envs: Vec<(EnvTemplate, Template)>,
}

/// Parses every template, so that a broken one fails the start (and `-check-config`).
pub(crate) fn parse_templates(files: &[TemplateConfig], envs: &[EnvTemplate]) -> Result<Parsed> {
    let mut out_files = Vec::new();
    for t in files {
        let name = t.destination.display().to_string();
        let (src_name, text) = match &t.source {
            TemplateSource::File(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p)
                    .with_context(|| format!("template for {name}: cannot read {}", p.display()))?,
            ),
            TemplateSource::Contents(c) => (name.clone(), c.clone()),
        };
        let tpl =
            Template::parse(&src_name, &text).map_err(|e| anyhow!("template for {name}: {e}"))?;
        let owner = Owner::resolve(t.user.as_deref(), t.group.as_deref())
            .with_context(|| format!("template for {name}"))?;
        out_files.push((t.clone(), tpl, owner));
    }
    let mut out_envs = Vec::new();
    for e in envs {
        let tpl = Template::parse(&format!("env_template {}", e.name), &e.contents)
            .map_err(|err| anyhow!("env_template {}: {err}", e.name))?
            .missing_key_error(e.error_on_missing_key);
        out_envs.push((e.clone(), tpl));
    }
    Ok(Parsed { files: out_files, envs: out_envs })
}

/// What a render pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Something failed or used a value the server could not confirm: try again soon.
    pub(crate) retry: bool,
    pub(crate) files_changed: usize,
    pub(crate) env_changed: bool,
}

impl Renderer {
    pub(crate) fn new(
        conn: Conn,
        status: Status,
        settings: TemplateSettings,
        parsed: Parsed,
        signals: Arc<AuthSignals>,
        app: Option<mpsc::Sender<AppEvent>>,
    ) -> Self {
        let files = parsed
            .files
            .into_iter()
            .map(|(cfg, template, owner)| FileTemplate {
                name: cfg.destination.display().to_string(),
                cfg,
                template,
                owner,
                deps: HashSet::new(),
                rendered: false,
            })
            .collect();
        let envs = parsed
            .envs
            .into_iter()
            .map(|(cfg, template)| EnvTpl { cfg, template, deps: HashSet::new(), value: None })
            .collect();
        Self {
            conn,
            status,
            settings,
            files,
            envs,
            deps: HashMap::new(),
            token: None,
            signals,
            app,
            dirty: false,
            reporter: None,
        }
    }

    /// Reports deliveries to the server (see [`crate::report`]).
    pub(crate) fn with_reporter(mut self, r: Reporter) -> Self {
        self.reporter = Some(r);
        self
    }

    /// The secrets held, for the persisted cache; clears the "changed" mark.
    pub(crate) fn export(&mut self) -> Option<Vec<CachedSecret>> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(self.export_all())
    }

    /// The secrets held, for the persisted cache, whether or not anything changed.
    pub(crate) fn export_all(&self) -> Vec<CachedSecret> {
        let now_unix = cache::unix(SystemTime::now());
        let now = Instant::now();
        self.deps
            .iter()
            .map(|(k, d)| CachedSecret {
                path: k.path.clone(),
                args: k.args.clone(),
                pki: k.pki,
                value: d.value.0.clone(),
                lease: d.lease.as_ref().map(|l| CachedLease {
                    id: l.id.clone(),
                    issued: l.issued.as_secs(),
                    expires: now_unix + l.expires.saturating_duration_since(now).as_secs(),
                    renew: l.renew,
                }),
            })
            .collect()
    }

    /// Secrets from the persisted cache: used while the server cannot be asked, fetched anew as
    /// soon as it can.
    pub(crate) fn import(&mut self, secrets: &mut Vec<CachedSecret>) {
        for s in secrets.drain(..) {
            let lease = s.lease.as_ref().map(|l| {
                let expires = cache::instant_at(l.expires);
                // A certificate stays until its re-issue point; a lease is checked at once.
                let due = if s.pki {
                    cache::instant_at(l.expires.saturating_sub(l.issued / 3))
                } else {
                    Instant::now()
                };
                Lease {
                    id: l.id.clone(),
                    issued: Duration::from_secs(l.issued),
                    due,
                    expires,
                    renew: l.renew,
                }
            });
            let key = DepKey { path: s.path.clone(), args: s.args.clone(), pki: s.pki };
            let value = Zeroizing::new(ValueBox(s.value));
            // A secret without a lease may have changed meanwhile: read again once the server
            // answers. A leased one is kept and its renewal is due at once: the renewal proves
            // the lease still stands (a new one is fetched if not), and a restart does not leave
            // a second database user behind until the first one's TTL.
            let stale = lease.is_none();
            self.deps
                .insert(key, Dep { value, lease, stale, why: Reason::Rotation, generation: 0 });
        }
    }

    /// Whether any secret is held (restored from the persisted cache, before a login).
    pub(crate) fn has_secrets(&self) -> bool {
        !self.deps.is_empty()
    }

    fn set_token(&mut self, t: Arc<Token>) {
        // Generation 0 is the token restored with the persisted cache, the one its secrets were
        // fetched with: not a new login for them.
        let new_login = match &self.token {
            Some(old) => old.generation != t.generation,
            None => t.generation != 0,
        };
        if new_login {
            for d in self.deps.values_mut() {
                d.mark_stale(Reason::NewToken);
            }
        }
        self.token = Some(t);
    }

    /// Marks the dependencies read from `path` stale (an event said it changed).
    pub(crate) fn changed(&mut self, path: &str) -> bool {
        let path = path.trim_matches('/');
        let mut any = false;
        for (k, d) in self.deps.iter_mut() {
            if k.path.trim_matches('/') == path {
                d.mark_stale(Reason::Rotation);
                any = true;
            }
        }
        any
    }

    /// The poll: every dependency without a lease is read again.
    pub(crate) fn poll(&mut self) {
        for d in self.deps.values_mut() {
            if d.lease.is_none() {
                d.mark_stale(Reason::Rotation);
            }
        }
    }

    /// The earliest lease action.
    pub(crate) fn next_lease_due(&self) -> Option<Instant> {
        self.deps.values().filter_map(|d| d.lease.as_ref().map(|l| l.due)).min()
    }

    /// Renews what is due, or marks it to be fetched anew.
    pub(crate) async fn leases_due(&mut self) {
        let now = Instant::now();
        let Some(token) = self.token.clone() else { return };
        let due: Vec<DepKey> = self
            .deps
            .iter()
            .filter(|(_, d)| d.lease.as_ref().is_some_and(|l| l.due <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let Some(dep) = self.deps.get_mut(&k) else { continue };
            let Some(lease) = dep.lease.as_mut() else { continue };
            if !lease.renew {
                lease.due = now + Duration::from_secs(3600);
                dep.mark_stale(Reason::LeaseReissue);
                continue;
            }
            let body = json!({ "lease_id": lease.id, "increment": lease.issued.as_secs() });
            match self.conn.call(Some(&token.secret), "PUT", "sys/leases/renew", Some(&body)).await
            {
                Ok(a) => {
                    self.status.count(|c| &c.lease_renewals);
                    let granted = Duration::from_secs(
                        a.body
                            .as_ref()
                            .and_then(|b| b.get("lease_duration"))
                            .and_then(Value::as_u64)
                            .unwrap_or(0),
                    );
                    // Renewal no longer extends the lease as asked: its max TTL is near (the
                    // server grants the increment whole until then). Fetch a new secret now,
                    // well before this one ends: a lower threshold (a grant under two thirds of
                    // the lease) can let the next renewal leave only a fraction of a second.
                    lease.expires = now + granted;
                    lease.due = if granted < lease.issued {
                        // Soon enough that the app has most of what is left to switch over.
                        lease.renew = false;
                        now + granted / 3
                    } else {
                        now + crate::backoff::jitter(granted.mul_f64(2.0 / 3.0), 0.1)
                    };
                    tracing::debug!(path = %k.path, granted = ?granted, "lease renewed");
                }
                Err(e) if is_unreachable(&e) => {
                    lease.due = now + Duration::from_secs(5);
                }
                Err(e) => {
                    tracing::info!(path = %k.path, error = %e, "lease cannot be renewed: fetching a new secret");
                    lease.due = now + Duration::from_secs(3600);
                    dep.mark_stale(Reason::LeaseReissue);
                }
            }
        }
    }

    /// Renders every template whose dependencies are stale or that has not rendered yet.
    pub(crate) async fn pass(&mut self, token: &TokenRx) -> Pass {
        if let Some(t) = token.borrow().clone() {
            self.set_token(t);
        }
        let mut result = Pass::default();
        // Without a token (not logged in yet, the server away) only what the persisted cache
        // gave can render.
        let tok = self.token.clone();
        if tok.is_none() {
            result.retry = true;
        }
        let stale: HashMap<DepKey, Reason> =
            self.deps.iter().filter(|(_, d)| d.stale).map(|(k, d)| (k.clone(), d.why)).collect();
        let why = |deps: &HashSet<DepKey>| {
            deps.iter().filter_map(|d| stale.get(d)).max().copied().unwrap_or(Reason::Rotation)
        };
        // Files.
        for i in 0..self.files.len() {
            let needs =
                !self.files[i].rendered || self.files[i].deps.iter().any(|d| stale.contains_key(d));
            if !needs {
                continue;
            }
            let name = self.files[i].name.clone();
            let reason = why(&self.files[i].deps);
            let out = self.render_one(tok.as_ref(), i, None).await;
            match out {
                Ok((text, deps, degraded)) => {
                    result.retry |= degraded;
                    self.files[i].deps = deps;
                    match self.deliver(i, &text) {
                        Ok(changed) => {
                            self.report(
                                tok.as_deref(),
                                &name,
                                &self.files[i].deps,
                                changed,
                                reason,
                            );
                            self.status.count(|c| &c.renders);
                            self.files[i].rendered = true;
                            let now = SystemTime::now();
                            self.status.template(&name, |s| {
                                s.last_render = Some(now);
                                s.last_error = None;
                                if changed {
                                    s.last_change = Some(now);
                                }
                            });
                            if changed {
                                result.files_changed += 1;
                                tracing::info!(destination = %name, "template rendered: file updated");
                                if let Some(cmd) = self.files[i].cfg.exec.clone() {
                                    spawn_command(name.clone(), cmd, self.settings.splay);
                                }
                            }
                        }
                        Err(e) => self.failed(&name, &e, &mut result),
                    }
                }
                Err(e) => self.failed(&name, &e, &mut result),
            }
        }
        // Environment.
        let mut env_changed = false;
        for i in 0..self.envs.len() {
            let needs = self.envs[i].value.is_none()
                || self.envs[i].deps.iter().any(|d| stale.contains_key(d));
            if !needs {
                continue;
            }
            let name = format!("env_template {}", self.envs[i].cfg.name);
            let reason = why(&self.envs[i].deps);
            match self.render_one(tok.as_ref(), i, Some(())).await {
                Ok((text, deps, degraded)) => {
                    result.retry |= degraded;
                    self.status.count(|c| &c.renders);
                    let e = &mut self.envs[i];
                    e.deps = deps;
                    let changed = e.value.as_deref() != Some(&*text);
                    if changed {
                        env_changed = true;
                        e.value = Some(text);
                    }
                    let dest = format!("env:{}", e.cfg.name);
                    self.report(tok.as_deref(), &dest, &self.envs[i].deps, changed, reason);
                    let now = SystemTime::now();
                    self.status.template(&name, |s| {
                        s.last_render = Some(now);
                        s.last_error = None;
                        if env_changed {
                            s.last_change = Some(now);
                        }
                    });
                }
                Err(e) => self.failed(&name, &e, &mut result),
            }
        }
        result.env_changed = env_changed;
        // Dependencies no template reads any more are dropped.
        let used: HashSet<&DepKey> = self
            .files
            .iter()
            .flat_map(|f| f.deps.iter())
            .chain(self.envs.iter().flat_map(|e| e.deps.iter()))
            .collect();
        let unused: Vec<DepKey> = self.deps.keys().filter(|k| !used.contains(k)).cloned().collect();
        for k in unused {
            self.deps.remove(&k);
        }
        if let Some(app) = &self.app {
            if env_changed && self.envs.iter().all(|e| e.value.is_some()) {
                let env = self
                    .envs
                    .iter()
                    .filter_map(|e| Some((e.cfg.name.clone(), e.value.clone()?)))
                    .collect();
                let _ = app.send(AppEvent::Env(env)).await;
            } else if result.files_changed > 0 {
                let _ = app.send(AppEvent::FilesChanged).await;
            }
        }
        result
    }

    fn report(
        &self,
        tok: Option<&Token>,
        dest: &str,
        deps: &HashSet<DepKey>,
        changed: bool,
        why: Reason,
    ) {
        if let Some(r) = &self.reporter {
            r.rendered(tok, dest, deps.iter().map(|k| k.path.as_str()), changed, why);
        }
    }

    fn failed(&self, name: &str, e: &anyhow::Error, result: &mut Pass) {
        result.retry = true;
        self.status.count(|c| &c.render_failures);
        let msg = format!("{e:#}");
        tracing::warn!(template = %name, error = %msg, "render failed; the previous output stays");
        self.status.template(name, |s| s.last_error = Some(msg));
    }

    /// Whether every template has rendered at least once.
    pub(crate) fn complete(&self) -> bool {
        self.files.iter().all(|f| f.rendered) && self.envs.iter().all(|e| e.value.is_some())
    }

    fn deliver(&self, i: usize, text: &str) -> Result<bool> {
        let f = &self.files[i];
        delivery::prepare_dir(
            &f.cfg.destination,
            f.cfg.create_dest_dirs,
            f.cfg.allow_disk,
            f.owner,
            &format!("template for {}", f.name),
        )?;
        delivery::write_atomic(&f.cfg.destination, text.as_bytes(), f.cfg.perms, f.owner)
    }

    /// Renders file template `i` (or env template `i` when `env` is set): fetches what it reads,
    /// renders again until nothing is missing. Returns the text, the dependencies it read, and
    /// whether a value was used that the server could not confirm.
    async fn render_one(
        &mut self,
        tok: Option<&Arc<Token>>,
        i: usize,
        env: Option<()>,
    ) -> Result<(Zeroizing<String>, HashSet<DepKey>, bool)> {
        let mut degraded = false;
        let known: Vec<DepKey> = match env {
            None => self.files[i].deps.iter().cloned().collect(),
            Some(()) => self.envs[i].deps.iter().cloned().collect(),
        };
        // Only what was checked for this render may be used: a value restored from the cache, or
        // fetched by an earlier token, is first fetched anew (or confirmed unreachable).
        let mut ensured = HashSet::new();
        for k in known {
            degraded |= self.ensure(tok, &k).await?;
            ensured.insert(k);
        }
        for _round in 0..16 {
            let mut ctx = Ctx {
                deps: &self.deps,
                ensured: &ensured,
                used: HashSet::new(),
                missing: Vec::new(),
            };
            let template = match env {
                None => &self.files[i].template,
                Some(()) => &self.envs[i].template,
            };
            let out = template.render(&mut ctx);
            let Ctx { used, missing, .. } = ctx;
            if missing.is_empty() {
                let text = out.map_err(|e| anyhow!("{e}"))?;
                return Ok((text, used, degraded));
            }
            for k in missing {
                degraded |= self.ensure(tok, &k).await?;
                ensured.insert(k);
            }
        }
        bail!(
            "the template reads secrets whose paths depend on other secrets more than 16 levels deep"
        )
    }

    /// Makes sure `k` has a value: fetches it when missing or stale. Returns whether an old value
    /// had to be kept because the server could not be reached.
    async fn ensure(&mut self, tok: Option<&Arc<Token>>, k: &DepKey) -> Result<bool> {
        let generation = tok.map(|t| t.generation);
        let now = Instant::now();
        let need = self.deps.get(k).is_none_or(|d| {
            d.stale
                || Some(d.generation) != generation
                || d.lease.as_ref().is_some_and(|l| l.expires <= now)
        });
        if !need {
            self.status.count(|c| &c.cache_hits);
            return Ok(false);
        }
        let fetched = match tok {
            Some(t) => self.fetch(t, k).await,
            None => Err(anyhow!("not logged in yet")),
        };
        match fetched {
            Ok(dep) => {
                self.dirty = true;
                self.deps.insert(k.clone(), dep);
                Ok(false)
            }
            Err(e) => {
                let unreachable = tok.is_none()
                    || e.downcast_ref::<coffer_api::Error>().is_some_and(is_unreachable);
                match self.deps.get(k) {
                    // Keep serving what we have; a leased value only while its lease lasts.
                    Some(old)
                        if unreachable
                            && old.lease.as_ref().is_none_or(|l| l.expires > Instant::now()) =>
                    {
                        Ok(true)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    async fn fetch(&self, tok: &Arc<Token>, k: &DepKey) -> Result<Dep> {
        self.status.count(|c| &c.secret_fetches);
        let answer = if k.args.is_empty() && !k.pki {
            self.conn.call(Some(&tok.secret), "GET", &k.path, None).await
        } else {
            let body: Map<String, Value> =
                k.args.iter().map(|(a, b)| (a.clone(), Value::String(b.clone()))).collect();
            self.conn.call(Some(&tok.secret), "POST", &k.path, Some(&Value::Object(body))).await
        }
        .map_err(|e| match e.status() {
            Some(404) => anyhow!("no secret at {}", k.path),
            Some(403) => {
                // Refused: maybe the policy, maybe the token is gone; the auth loop finds out.
                self.signals.check_token.notify_one();
                anyhow!("permission denied reading {}", k.path)
            }
            _ => anyhow!(e),
        })?;
        // Wiped when dropped: the data is moved out below, the rest holds nothing secret, but
        // the answer as a whole is not kept around unwiped.
        let mut body = Zeroizing::new(ValueBox(answer.body.unwrap_or(Value::Null)));
        let data = body.0.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        let body = &body.0;
        let lease_id = body.get("lease_id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let lease_duration = body.get("lease_duration").and_then(Value::as_u64).unwrap_or(0);
        let renewable = body.get("renewable").and_then(Value::as_bool).unwrap_or(false);
        if k.pki {
            return pki_dep(k, data, lease_id, tok.generation);
        }
        let value = json!({
            "Data": data,
            "LeaseID": lease_id,
            "LeaseDuration": lease_duration,
            "Renewable": renewable,
            "Warnings": body.get("warnings").cloned().unwrap_or(Value::Null),
            "RequestID": body.get("request_id").cloned().unwrap_or(Value::Null),
        });
        let lease = (!lease_id.is_empty() && lease_duration > 0).then(|| {
            let d = Duration::from_secs(lease_duration);
            Lease {
                id: lease_id,
                issued: d,
                due: Instant::now() + crate::backoff::jitter(d.mul_f64(2.0 / 3.0), 0.1),
                expires: Instant::now() + d,
                renew: renewable,
            }
        });
        tracing::debug!(path = %k.path, leased = lease.is_some(), "secret fetched");
        Ok(Dep {
            value: Zeroizing::new(ValueBox(value)),
            lease,
            stale: false,
            why: Reason::Rotation,
            generation: tok.generation,
        })
    }
}

/// A `pkiCert` certificate as templates see it (consul-template's `Cert`, `Key`, `CA`,
/// `CAChain`), due to be issued anew at about two thirds of its lifetime.
fn pki_dep(k: &DepKey, data: Value, lease_id: String, generation: u64) -> Result<Dep> {
    // The answer holds the private key: wiped when dropped, once its parts are copied out.
    let data = Zeroizing::new(ValueBox(data));
    let data = &data.0;
    let text = |f: &str| data.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
    let cert = text("certificate");
    if cert.is_empty() {
        bail!("{} answered no certificate: pkiCert needs a pki issue path", k.path);
    }
    let now_unix = cache::unix(SystemTime::now());
    let expiration = data.get("expiration").and_then(Value::as_u64).unwrap_or(0);
    if expiration <= now_unix {
        bail!("{} answered a certificate that has already expired", k.path);
    }
    let lifetime = Duration::from_secs(expiration - now_unix);
    let value = json!({
        "Cert": cert,
        "Key": text("private_key"),
        "CA": text("issuing_ca"),
        "CAChain": data.get("ca_chain").cloned().unwrap_or_else(|| json!([])),
    });
    let now = Instant::now();
    tracing::info!(path = %k.path, lifetime = ?lifetime, "certificate issued");
    Ok(Dep {
        value: Zeroizing::new(ValueBox(value)),
        lease: Some(Lease {
            id: lease_id,
            issued: lifetime,
            due: now + crate::backoff::jitter(lifetime.mul_f64(2.0 / 3.0), 0.05),
            expires: now + lifetime,
            // Re-issued, never renewed: a certificate's lease (`generate_lease`) cannot be.
            renew: false,
        }),
        stale: false,
        why: Reason::Rotation,
        generation,
    })
}

struct Ctx<'a> {
    deps: &'a HashMap<DepKey, Dep>,
    ensured: &'a HashSet<DepKey>,
    used: HashSet<DepKey>,
    missing: Vec<DepKey>,
}

impl coffer_template::Context for Ctx<'_> {
    fn secret(&mut self, path: &str, args: &[(&str, &str)]) -> std::result::Result<Secret, String> {
        let mut args: Vec<(String, String)> =
            args.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        args.sort();
        let k = DepKey { path: path.trim_matches('/').to_owned(), args, pki: false };
        self.used.insert(k.clone());
        match self.deps.get(&k).filter(|_| self.ensured.contains(&k)) {
            Some(d) => Ok(as_secret(&d.value.0)),
            None => {
                self.missing.push(k);
                // Rendering goes on with an empty secret to find every other one missing; this
                // output is thrown away.
                Ok(Secret::default())
            }
        }
    }

    fn pki_cert(
        &mut self,
        path: &str,
        args: &[(&str, &str)],
    ) -> std::result::Result<coffer_template::Value, String> {
        let mut args: Vec<(String, String)> =
            args.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect();
        args.sort();
        let k = DepKey { path: path.trim_matches('/').to_owned(), args, pki: true };
        self.used.insert(k.clone());
        match self.deps.get(&k).filter(|_| self.ensured.contains(&k)) {
            Some(d) => Ok(coffer_template::Value::from(d.value.0.clone())),
            None => {
                self.missing.push(k);
                Ok(coffer_template::Value::Missing)
            }
        }
    }

    fn env(&mut self, name: &str) -> String {
        std::env::var(name).unwrap_or_default()
    }

    fn file(&mut self, path: &str) -> std::result::Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {}", e.kind()))
    }
}

/// A fetched secret as templates see it (consul-template's `Secret`).
fn as_secret(v: &Value) -> Secret {
    Secret {
        request_id: v["RequestID"].as_str().unwrap_or_default().to_owned(),
        lease_id: v["LeaseID"].as_str().unwrap_or_default().to_owned(),
        lease_duration: v["LeaseDuration"].as_i64().unwrap_or(0),
        renewable: v["Renewable"].as_bool().unwrap_or(false),
        data: coffer_template::Value::from(v["Data"].clone()),
        warnings: v["Warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
    }
}

/// Runs a template's `exec` command after its file changed, after a random splay.
fn spawn_command(name: String, cmd: CommandConfig, splay_max: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(splay(splay_max)).await;
        let mut c = tokio::process::Command::new(&cmd.command[0]);
        c.args(&cmd.command[1..]).kill_on_drop(true);
        match spawn_tracked(&mut c) {
            Ok(mut child) => {
                let pid = child.id();
                let r = tokio::time::timeout(cmd.timeout, child.wait()).await;
                let r = match r {
                    Ok(r) => Ok(r),
                    Err(e) => {
                        let _ = child.kill().await;
                        Err(e)
                    }
                };
                untrack(pid);
                match r {
                    Ok(Ok(s)) if s.success() => {}
                    Ok(Ok(s)) => {
                        tracing::warn!(template = %name, status = %s, "the template's command failed")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(template = %name, error = %e, "the template's command failed")
                    }
                    Err(_) => {
                        tracing::warn!(template = %name, timeout = ?cmd.timeout, "the template's command timed out and was killed");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(template = %name, command = %cmd.command[0], error = %e, "cannot run the template's command")
            }
        }
    });
}
