//! Runtime detection over the audit stream: honeytoken paths, failed-login bursts, tokens used
//! outside the network they were issued to, one identity reading many paths, unknown image
//! digests for a role, and request rates far above an identity's baseline (docs/detect.md).
//!
//! The audit broker hands each request's outcome (the response entry, or the request entry of a
//! refused request) to [`Detector::observe`], which copies the few fields the rules read into an
//! [`Observation`] and offers it to a bounded queue with `try_send`: the request never waits for
//! a rule, a webhook or a revocation. One task takes observations off the queue, runs every
//! enabled rule on each, and acts on what they find.
//!
//! Guarantees: `observe` never blocks and never allocates more than one observation; a full
//! queue drops the observation and counts it (`coffer.detect.dropped`), logs once per episode
//! and raises one `coffer_detect_queue_full` alert per episode (an episode ends when the task
//! has emptied the queue), so every observation is either processed or counted as dropped:
//! `received = processed + dropped + queued`. No alert, audit entry or webhook carries a
//! secret: tokens appear by accessor, request and response bodies not at all.
//! Not done: rule state (windows, learned digests and baselines) and recent alerts are kept in
//! memory only and start empty after a restart or a seal; the audit log's `alert` entries are
//! the lasting record. Nothing is observed while no rule is enabled.

mod act;
pub mod eval;
pub mod rules;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

pub use act::WebhookSender;
pub use rules::{Action, Params, Rule};

use crate::core::Core;

/// The `detect { ... }` block of the server config, with its defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    /// Off: nothing is observed, and `sys/detect/*` answers that detection is off.
    pub enabled: bool,
    /// Observations waiting for the detection task, at most.
    pub queue_size: usize,
    /// Recent alerts kept in memory for `sys/detect/alerts`.
    pub alert_history: usize,
    /// Where a rule's `webhook` action posts when the rule names no `webhook_url`; also where
    /// the queue-full alert goes.
    pub webhook_url: String,
    /// One webhook attempt's time limit.
    pub webhook_timeout: Duration,
    /// Attempts after the first one failed (a 5xx, 429, or no answer), with backoff.
    pub webhook_retries: u32,
    /// Alerts waiting for the webhook sender, at most; beyond it they are counted and dropped.
    pub webhook_queue: usize,
    /// PEM file of the CA the webhook's HTTPS server is checked with (none: system roots).
    pub webhook_ca_file: String,
    /// The rules of the config file (read-only through the API).
    pub rules: Vec<Rule>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_size: 65_536,
            alert_history: 1000,
            webhook_url: String::new(),
            webhook_timeout: Duration::from_secs(5),
            webhook_retries: 5,
            webhook_queue: 1024,
            webhook_ca_file: String::new(),
            rules: Vec::new(),
        }
    }
}

impl DetectConfig {
    /// The `detect` block, as JSON (HCL's `rule "NAME" { ... }` blocks become an object of
    /// bodies by name, or a list of such objects).
    pub fn parse(m: &Map<String, Value>) -> Result<DetectConfig, String> {
        const KNOWN: &[&str] = &[
            "enabled",
            "queue_size",
            "alert_history",
            "webhook_url",
            "webhook_timeout",
            "webhook_retries",
            "webhook_queue",
            "webhook_ca_file",
            "rule",
        ];
        if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("unknown key {k:?} in detect (known: {})", KNOWN.join(", ")));
        }
        let mut c = DetectConfig::default();
        let num = |k: &str, min: u64, max: u64, default: u64| -> Result<u64, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        format!("detect {k} must be a whole number from {min} to {max}")
                    }),
            }
        };
        c.queue_size = num("queue_size", 1, 16 << 20, c.queue_size as u64)? as usize;
        c.alert_history = num("alert_history", 1, 1_000_000, c.alert_history as u64)? as usize;
        c.webhook_retries = num("webhook_retries", 0, 20, u64::from(c.webhook_retries))? as u32;
        c.webhook_queue = num("webhook_queue", 1, 1 << 20, c.webhook_queue as u64)? as usize;
        match m.get("enabled") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => c.enabled = *b,
            Some(_) => return Err("detect enabled must be true or false".into()),
        }
        if let Some(v) = m.get("webhook_timeout").filter(|v| !v.is_null()) {
            let d = crate::logical::fields::duration_field(v, "webhook_timeout")
                .map_err(|e| format!("detect: {e}"))?;
            if d.is_zero() || d > Duration::from_secs(300) {
                return Err("detect webhook_timeout must be from 1s to 300s".into());
            }
            c.webhook_timeout = d;
        }
        let s = |k: &str| -> Result<String, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(format!("detect {k} must be a string")),
            }
        };
        c.webhook_url = s("webhook_url")?;
        if !c.webhook_url.is_empty() {
            rules::check_url(&c.webhook_url, "detect webhook_url")?;
        }
        c.webhook_ca_file = s("webhook_ca_file")?;
        let mut bodies: Vec<(String, Map<String, Value>)> = Vec::new();
        let mut add = |v: &Value| -> Result<(), String> {
            let obj = v.as_object().ok_or("detect: write rules as rule \"NAME\" { type = ... }")?;
            for (name, body) in obj {
                let body = match body {
                    Value::Object(b) => b.clone(),
                    Value::Array(a) if a.len() == 1 && a[0].is_object() => {
                        a[0].as_object().cloned().unwrap_or_default()
                    }
                    _ => return Err(format!("detect rule {name:?} must be a block")),
                };
                bodies.push((name.clone(), body));
            }
            Ok(())
        };
        match m.get("rule") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => items.iter().try_for_each(&mut add)?,
            Some(v) => add(v)?,
        }
        for (name, body) in bodies {
            if c.rules.iter().any(|r| r.name == name) {
                return Err(format!("detect rule {name:?} is defined twice"));
            }
            let rule = Rule::parse(&name, &body, &c.webhook_url)
                .map_err(|e| format!("detect rule {name:?}: {e}"))?;
            c.rules.push(rule);
        }
        Ok(c)
    }
}

/// The fields of one request's outcome that rules read. No body, no token, no secret.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    pub(crate) at_ms: u64,
    pub(crate) request_id: String,
    pub(crate) path: String,
    pub(crate) operation: String,
    pub(crate) remote: Option<IpAddr>,
    /// Empty when the request succeeded.
    pub(crate) error: String,
    /// A request to an auth method's login path.
    pub(crate) login: bool,
    /// A login's target: `<mount>:<role or user>`, from the body's `role` or the path's last
    /// segment (`auth/userpass/login/NAME`); `None` when neither names one.
    pub(crate) login_role: Option<String>,
    pub(crate) mount_type: String,
    pub(crate) caller: Option<Caller>,
    /// The token this request issued (a login, a token creation).
    pub(crate) issued: Option<Issued>,
}

#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) accessor: String,
    pub(crate) display_name: String,
    pub(crate) entity_id: String,
    pub(crate) policies: Vec<String>,
    /// `<creation path>#<role>` for a token an auth method issued to a role.
    pub(crate) role_key: Option<String>,
    pub(crate) image_digest: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) accessor: String,
    pub(crate) role_key: Option<String>,
    pub(crate) image_digest: Option<String>,
}

impl Observation {
    pub(crate) fn remote_text(&self) -> String {
        self.remote.map(|a| a.to_string()).unwrap_or_else(|| "an unknown address".into())
    }

    /// Who made the request, for an alert's sentence: a token's accessor and display name.
    pub(crate) fn who(&self) -> String {
        match &self.caller {
            Some(c) if c.entity_id.is_empty() => {
                format!("token {} ({})", c.accessor, c.display_name)
            }
            Some(c) => format!("entity {} (token {}, {})", c.entity_id, c.accessor, c.display_name),
            None => "an unauthenticated client".into(),
        }
    }
}

/// The login role of a token's metadata, as the chaos scopes read it: `role` (jwt, kubernetes,
/// cert, image-bound logins) or `role_name` (approle), else the display name; only for tokens an
/// auth method issued at login.
pub(crate) fn role_key(
    path: &str,
    meta: &dyn Fn(&str) -> Option<String>,
    display: &str,
) -> Option<String> {
    if !path.starts_with("auth/") || path.starts_with("auth/token/") {
        return None;
    }
    let role = meta("role")
        .or_else(|| meta("role_name"))
        .or_else(|| (!display.is_empty()).then(|| display.to_owned()))?;
    Some(format!("{path}#{role}"))
}

/// Counters of the detection pipeline, kept for the process's life (`sys/metrics`,
/// `sys/detect/status`).
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub processed: AtomicU64,
    pub dropped: AtomicU64,
    pub queue_full_episodes: AtomicU64,
    pub alerts: AtomicU64,
    pub webhook_sent: AtomicU64,
    pub webhook_retried: AtomicU64,
    pub webhook_failed: AtomicU64,
    pub webhook_dropped: AtomicU64,
    pub action_failures: AtomicU64,
}

impl Stats {
    pub(crate) fn json(&self, capacity: usize) -> Value {
        let l = |c: &AtomicU64| c.load(Relaxed);
        let (r, p, d) = (l(&self.received), l(&self.processed), l(&self.dropped));
        json!({
            "received": r,
            "processed": p,
            "dropped": d,
            "queued": r.saturating_sub(p + d),
            "queue_capacity": capacity,
            "queue_full_episodes": l(&self.queue_full_episodes),
            "alerts": l(&self.alerts),
            "webhook_sent": l(&self.webhook_sent),
            "webhook_retried": l(&self.webhook_retried),
            "webhook_failed": l(&self.webhook_failed),
            "webhook_dropped": l(&self.webhook_dropped),
            "action_failures": l(&self.action_failures),
        })
    }
}

/// Where a rule came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Config,
    Api,
}

impl Source {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

pub(crate) type RuleSet = Arc<Vec<(Arc<Rule>, Source)>>;

/// The detection engine: the queue's sending side, the rules, the recent alerts.
pub(crate) struct Detector {
    pub(crate) config: DetectConfig,
    tx: mpsc::Sender<Observation>,
    rx: Mutex<Option<mpsc::Receiver<Observation>>>,
    pub(crate) stats: Arc<Stats>,
    rules: RwLock<RuleSet>,
    generation: AtomicU64,
    /// Any enabled rule: without one nothing is observed.
    armed: AtomicBool,
    /// A queue-full episode is under way (set by the first drop, cleared when the queue empties).
    episode: AtomicBool,
    /// The episode's alert is still to be raised by the detection task.
    episode_alert: AtomicBool,
    alerts: Mutex<VecDeque<Value>>,
    pub(crate) webhook: OnceLock<Arc<dyn WebhookSender>>,
    started: AtomicBool,
    /// Serializes `sys/detect/rules` writes: each stores, then installs what the store holds.
    pub(crate) writes: tokio::sync::Mutex<()>,
}

impl Detector {
    pub(crate) fn new(config: DetectConfig, stats: Arc<Stats>) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_size.max(1));
        let rules: Vec<_> =
            config.rules.iter().map(|r| (Arc::new(r.clone()), Source::Config)).collect();
        let d = Self {
            tx,
            rx: Mutex::new(Some(rx)),
            stats,
            rules: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            armed: AtomicBool::new(false),
            episode: AtomicBool::new(false),
            episode_alert: AtomicBool::new(false),
            alerts: Mutex::new(VecDeque::new()),
            webhook: OnceLock::new(),
            started: AtomicBool::new(false),
            writes: tokio::sync::Mutex::new(()),
            config,
        };
        d.install(rules);
        d
    }

    pub(crate) fn rules(&self) -> RuleSet {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the rule set; the detection task picks it up with its next observation.
    pub(crate) fn install(&self, rules: Vec<(Arc<Rule>, Source)>) {
        let armed = self.config.enabled && rules.iter().any(|(r, _)| r.enabled);
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
        self.generation.fetch_add(1, Relaxed);
        self.armed.store(armed, Relaxed);
    }

    /// The config's rules and the stored ones (at unseal).
    pub(crate) fn install_stored(&self, stored: Vec<Rule>) {
        let mut all: Vec<_> =
            self.config.rules.iter().map(|r| (Arc::new(r.clone()), Source::Config)).collect();
        all.extend(stored.into_iter().map(|r| (Arc::new(r), Source::Api)));
        self.install(all);
    }

    pub(crate) fn armed(&self) -> bool {
        self.armed.load(Relaxed)
    }

    /// Offers an observation to the queue: never waits. A full queue counts it as dropped.
    pub(crate) fn offer(&self, o: Observation) {
        self.stats.received.fetch_add(1, Relaxed);
        if self.tx.try_send(o).is_err() {
            self.stats.dropped.fetch_add(1, Relaxed);
            if !self.episode.swap(true, Relaxed) {
                self.stats.queue_full_episodes.fetch_add(1, Relaxed);
                self.episode_alert.store(true, Relaxed);
                tracing::warn!(
                    capacity = self.config.queue_size,
                    "detection queue full: observations are dropped and counted (coffer.detect.dropped) until it drains"
                );
            }
        }
    }

    /// The most recent alerts, newest first, at most `limit`.
    pub(crate) fn recent(&self, limit: usize) -> Vec<Value> {
        let a = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        a.iter().rev().take(limit).cloned().collect()
    }

    fn remember(&self, alert: Value) {
        let mut a = self.alerts.lock().unwrap_or_else(|p| p.into_inner());
        while a.len() >= self.config.alert_history.max(1) {
            a.pop_front();
        }
        a.push_back(alert);
    }

    /// Starts the detection task and the webhook sender once (at the first unseal).
    pub(crate) fn start(self: &Arc<Self>, core: Weak<Core>) {
        if self.started.swap(true, Relaxed) {
            return;
        }
        let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let hooks = act::Webhooks::start(self.clone());
        let me = self.clone();
        tokio::spawn(async move { me.run(rx, core, hooks).await });
    }

    async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Observation>,
        core: Weak<Core>,
        hooks: act::Webhooks,
    ) {
        let mut generation = u64::MAX;
        let mut evaluators: Vec<eval::Evaluator> = Vec::new();
        let mut cooldowns: HashMap<String, u64> = HashMap::new();
        let mut found = Vec::new();
        while let Some(o) = rx.recv().await {
            if self.episode_alert.swap(false, Relaxed) {
                let alert = act::queue_full_alert(&self);
                act::deliver(
                    &self,
                    &core,
                    &hooks,
                    alert,
                    None,
                    &[Action::Audit, Action::Webhook],
                    "",
                )
                .await;
            }
            let g = self.generation.load(Relaxed);
            if g != generation {
                generation = g;
                let mut old: Vec<eval::Evaluator> = std::mem::take(&mut evaluators);
                for (rule, _) in self.rules().iter() {
                    // A rule that did not change keeps what it learned.
                    match old.iter().position(|e| *e.rule == **rule) {
                        Some(i) => evaluators.push(old.swap_remove(i)),
                        None => evaluators.push(eval::Evaluator::new(rule.clone())),
                    }
                }
                cooldowns.clear();
            }
            for ev in evaluators.iter_mut().filter(|e| e.rule.enabled) {
                ev.observe(&o, &mut found);
                for f in found.drain(..) {
                    let key = format!("{}|{}", ev.rule.name, f.subject);
                    let until = cooldowns.get(&key).copied().unwrap_or(0);
                    if o.at_ms < until {
                        continue;
                    }
                    if ev.rule.cooldown > 0 {
                        if cooldowns.len() >= eval::MAX_KEYS {
                            cooldowns.retain(|_, t| *t > o.at_ms);
                        }
                        cooldowns.insert(key, o.at_ms + ev.rule.cooldown * 1000);
                    }
                    let alert = act::alert(&ev.rule, &f, &o);
                    let url = if ev.rule.webhook_url.is_empty() {
                        ""
                    } else {
                        ev.rule.webhook_url.as_str()
                    };
                    act::deliver(
                        &self,
                        &core,
                        &hooks,
                        alert,
                        o.caller.as_ref(),
                        &ev.rule.actions,
                        url,
                    )
                    .await;
                }
            }
            self.stats.processed.fetch_add(1, Relaxed);
            if rx.is_empty() {
                self.episode.store(false, Relaxed);
            }
        }
    }
}

impl Detector {
    /// Hands one request's outcome to the rules, when any is enabled: `error` empty when it
    /// succeeded, `issued` the token it issued, `attributed` the role a failed login was found
    /// to aim at by the auth method (an AppRole role_id's role).
    pub(crate) fn observe(
        &self,
        r: &crate::audit::Record<'_>,
        error: &str,
        issued: Option<&crate::logical::Auth>,
        attributed: Option<&str>,
    ) {
        if !self.armed() {
            return;
        }
        let caller = r.caller.map(|t| Caller {
            accessor: t.accessor.clone(),
            display_name: t.display_name.clone(),
            entity_id: t.entity_id.clone(),
            policies: t.policies.clone(),
            role_key: role_key(&t.path, &|k| t.meta.get(k).cloned(), &t.display_name),
            image_digest: t.meta.get("image_digest").cloned(),
        });
        let issued = issued.filter(|a| !a.accessor.is_empty()).map(|a| {
            let meta = |k: &str| {
                a.metadata
                    .as_ref()
                    .and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            // A login's token is created at the login path (the request's, without a user name
            // segment, as the token store records it: `auth/userpass/login/NAME`).
            Issued {
                accessor: a.accessor.clone(),
                role_key: r.login.then(|| role_key(r.path, &meta, "")).flatten(),
                image_digest: meta("image_digest"),
            }
        });
        let login_role = r.login.then(|| login_target(r.path, &r.req.data, attributed)).flatten();
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.offer(Observation {
            at_ms,
            request_id: r.req.id.clone(),
            path: r.path.to_owned(),
            operation: r.operation.to_owned(),
            remote: r.req.remote_addr,
            error: error.to_owned(),
            login: r.login,
            login_role,
            mount_type: r.mount_type.to_owned(),
            caller,
            issued,
        });
    }
}

/// What a login aims at: `<mount>:<role>` from the role the auth method attributed a failure
/// to (AppRole: the role its `role_id` belongs to), the body's `role` (jwt, kubernetes, cert's
/// `name`), or the path's segment after `login/` (userpass), else the mount alone (an AppRole
/// login whose `role_id` names no role).
fn login_target(path: &str, data: &Map<String, Value>, attributed: Option<&str>) -> Option<String> {
    let (mount, rest) = path.split_once("/login")?;
    let named = attributed
        .map(str::to_owned)
        .or_else(|| data.get("role").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| data.get("name").and_then(Value::as_str).map(str::to_owned))
        .or_else(|| rest.strip_prefix('/').filter(|u| !u.is_empty()).map(str::to_owned));
    Some(match named {
        Some(n) => format!("{mount}:{}", n.chars().take(128).collect::<String>()),
        None => mount.to_owned(),
    })
}

#[cfg(test)]
mod tests;
