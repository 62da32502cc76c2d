//! Rate limit quotas (Vault's `sys/quotas/rate-limit/:name` and `sys/quotas/config`): each rule
//! gives every client address a budget of `rate` requests per `interval` on the paths it covers
//! (everything, one mount, a path below a mount, or one role's logins), and, with
//! `block_interval`, shuts an address out for that long once it went over.
//!
//! Guarantees: with no rule stored, a request pays one atomic load; a request matches at most
//! one rule, the most specific (role, then path suffix, then the longest glob suffix, then the
//! mount, then the global rule), as in Vault; each rule keeps at most [`MAX_CLIENTS`] addresses,
//! and an address whose window has passed is dropped first when room is needed, so memory is
//! bounded whatever the number of clients. Rules live in the barrier and are loaded at unseal;
//! while sealed none applies.
//! Not done: namespaces (Coffer has none, so `inheritable` is stored and reported only), lease
//! count quotas, and role quotas on methods whose login does not name the role (`approle`).
//! Independent of the failed-login limiter ([`crate::ratelimit`]), which stays as it is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Addresses one rule keeps a bucket for.
pub(crate) const MAX_CLIENTS: usize = 65_536;
const SHARDS: usize = 16;

/// Vault's default exempt paths, in effect until `sys/quotas/config` is written.
pub(crate) const DEFAULT_EXEMPT: &[&str] = &[
    "sys/generate-recovery-token/attempt",
    "sys/generate-recovery-token/update",
    "sys/generate-root/attempt",
    "sys/generate-root/update",
    "sys/health",
    "sys/seal-status",
    "sys/unseal",
];

/// Auth methods whose login body names the role, and the field it is in.
pub(crate) fn role_field(kind: &str) -> Option<&'static str> {
    match kind {
        "jwt" | "oidc" | "kubernetes" => Some("role"),
        "cert" => Some("name"),
        _ => None,
    }
}

/// One rate limit quota, as stored at `sys/quotas/rate-limit/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct RateLimitRule {
    pub(crate) name: String,
    /// `""` (global), `sys/`, `secret/`, `auth/approle/`.
    pub(crate) mount_path: String,
    /// Below the mount, without slashes at its ends; may end in `*` (a prefix).
    #[serde(default)]
    pub(crate) path_suffix: String,
    #[serde(default)]
    pub(crate) role: String,
    pub(crate) rate: f64,
    pub(crate) interval_secs: u64,
    #[serde(default)]
    pub(crate) block_interval_secs: u64,
    #[serde(default)]
    pub(crate) inheritable: bool,
}

crate::record!(RateLimitRule, "rate limit quota", 1);

impl RateLimitRule {
    /// Vault's limiter allows `round(rate)` requests a window; at least one here, so that a
    /// rule never refuses everything by rounding.
    fn tokens(&self) -> u64 {
        (self.rate.round() as u64).max(1)
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.max(1))
    }

    /// Whether this rule and `other` cover the same requests (Vault refuses a second one).
    pub(crate) fn same_scope(&self, other: &RateLimitRule) -> bool {
        self.mount_path == other.mount_path
            && self.path_suffix == other.path_suffix
            && self.role == other.role
    }
}

/// `sys/quotas/config`, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct QuotaConfig {
    pub(crate) enable_rate_limit_audit_logging: bool,
    pub(crate) enable_rate_limit_response_headers: bool,
    pub(crate) rate_limit_exempt_paths: Vec<String>,
}

crate::record!(QuotaConfig, "quota configuration", 1);

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            enable_rate_limit_audit_logging: false,
            enable_rate_limit_response_headers: false,
            rate_limit_exempt_paths: DEFAULT_EXEMPT.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    window_start: Instant,
    remaining: u64,
    blocked_until: Option<Instant>,
}

/// One rule with its clients' buckets.
pub(crate) struct Limiter {
    pub(crate) rule: RateLimitRule,
    shards: Vec<Mutex<HashMap<Option<IpAddr>, Bucket>>>,
}

impl Limiter {
    fn new(rule: RateLimitRule) -> Self {
        Self { rule, shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, addr: Option<IpAddr>) -> &Mutex<HashMap<Option<IpAddr>, Bucket>> {
        let i = match addr {
            None => 0,
            Some(IpAddr::V4(a)) => {
                a.octets().iter().fold(0usize, |h, b| h.wrapping_mul(31) ^ *b as usize)
            }
            Some(IpAddr::V6(a)) => {
                a.octets().iter().fold(0usize, |h, b| h.wrapping_mul(31) ^ *b as usize)
            }
        };
        &self.shards[i % SHARDS]
    }

    /// Takes one request from `addr`'s budget.
    fn take(&self, addr: Option<IpAddr>, now: Instant) -> Decision {
        let limit = self.rule.tokens();
        let interval = self.rule.interval();
        let block = Duration::from_secs(self.rule.block_interval_secs);
        let mut map = self.shard(addr).lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&addr) && map.len() >= MAX_CLIENTS / SHARDS {
            evict(&mut map, interval, now);
        }
        let b = map.entry(addr).or_insert(Bucket {
            window_start: now,
            remaining: limit,
            blocked_until: None,
        });
        if let Some(until) = b.blocked_until {
            if now < until {
                let wait = secs_until(until, now);
                return Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset: wait,
                    retry_after: wait,
                };
            }
            b.blocked_until = None;
        }
        let elapsed = now.duration_since(b.window_start);
        if elapsed >= interval {
            let windows = elapsed.as_nanos() / interval.as_nanos().max(1);
            let step = interval.saturating_mul(u32::try_from(windows).unwrap_or(u32::MAX));
            b.window_start += step;
            b.remaining = limit;
        }
        let reset = secs_until(b.window_start + interval, now);
        if b.remaining > 0 {
            b.remaining -= 1;
            return Decision {
                allowed: true,
                limit,
                remaining: b.remaining,
                reset,
                retry_after: 0,
            };
        }
        let retry_after = if block.is_zero() {
            reset
        } else {
            b.blocked_until = Some(now + block);
            block.as_secs()
        };
        Decision { allowed: false, limit, remaining: 0, reset, retry_after }
    }
}

/// Drops the buckets that hold nothing (window over, not blocked); if none, the oldest.
fn evict(map: &mut HashMap<Option<IpAddr>, Bucket>, interval: Duration, now: Instant) {
    map.retain(|_, b| {
        now.duration_since(b.window_start) < interval || b.blocked_until.is_some_and(|u| u > now)
    });
    if map.len() >= MAX_CLIENTS / SHARDS
        && let Some(oldest) = map.iter().min_by_key(|(_, b)| b.window_start).map(|(k, _)| *k)
    {
        map.remove(&oldest);
    }
}

/// Whole seconds, truncated, as Vault's headers count them.
fn secs_until(t: Instant, now: Instant) -> u64 {
    t.saturating_duration_since(now).as_secs()
}

/// What one rule said of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the budget is full again.
    pub reset: u64,
    /// Seconds to wait, when refused.
    pub retry_after: u64,
}

/// The answer for one request that a rule covers.
#[derive(Debug, Clone)]
pub struct RateLimited {
    pub decision: Decision,
    /// Whether to send `X-Ratelimit-*` and `Retry-After` (`enable_rate_limit_response_headers`).
    pub headers: bool,
    /// Whether a refusal is audited (`enable_rate_limit_audit_logging`).
    pub audit: bool,
    /// The refusal's error text, Vault's: `request path "…": rate limit quota exceeded`.
    pub message: String,
}

#[derive(Default)]
struct State {
    limiters: Vec<Arc<Limiter>>,
    config: QuotaConfig,
}

/// The rules in force, swapped whole on every change.
#[derive(Default)]
pub(crate) struct Quotas {
    any: AtomicBool,
    state: RwLock<Arc<State>>,
}

impl Quotas {
    fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn config(&self) -> QuotaConfig {
        self.state().config.clone()
    }

    pub(crate) fn rules(&self) -> Vec<RateLimitRule> {
        self.state().limiters.iter().map(|l| l.rule.clone()).collect()
    }

    /// Replaces everything (unseal, seal). Limiters of rules that did not change keep their
    /// buckets.
    pub(crate) fn install(&self, rules: Vec<RateLimitRule>, config: QuotaConfig) {
        let old = self.state();
        let limiters = rules
            .into_iter()
            .map(|r| match old.limiters.iter().find(|l| l.rule == r) {
                Some(l) => l.clone(),
                None => Arc::new(Limiter::new(r)),
            })
            .collect::<Vec<_>>();
        let any = !limiters.is_empty();
        *self.state.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(State { limiters, config });
        self.any.store(any, Relaxed);
    }

    pub(crate) fn put_rule(&self, rule: RateLimitRule) {
        let mut rules: Vec<_> = self.rules().into_iter().filter(|r| r.name != rule.name).collect();
        rules.push(rule);
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        self.install(rules, self.config());
    }

    pub(crate) fn delete_rule(&self, name: &str) {
        let rules = self.rules().into_iter().filter(|r| r.name != name).collect();
        self.install(rules, self.config());
    }

    pub(crate) fn set_config(&self, config: QuotaConfig) {
        self.install(self.rules(), config);
    }

    pub(crate) fn clear(&self) {
        self.install(Vec::new(), QuotaConfig::default());
    }

    /// Whether any rule exists: the one check every request pays.
    pub(crate) fn active(&self) -> bool {
        self.any.load(Relaxed)
    }

    /// Applies the most specific rule covering `path` (already cleaned) below `mount` (`""` if
    /// no mount serves it) to `addr`. `kind` is the mount's type, `data` the request body (for
    /// a login's role).
    pub(crate) fn check(
        &self,
        path: &str,
        mount: &str,
        kind: &str,
        addr: Option<IpAddr>,
        data: &Map<String, Value>,
    ) -> Option<(String, RateLimited)> {
        let state = self.state();
        let bare = path.trim_end_matches('/');
        if state.config.rate_limit_exempt_paths.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => e.trim_end_matches('/') == bare,
        }) {
            return None;
        }
        let suffix = path.strip_prefix(mount).unwrap_or("").trim_matches('/');
        let here = |l: &&Arc<Limiter>| l.rule.mount_path == mount && !mount.is_empty();
        let role = role_field(kind)
            .and_then(|f| data.get(f))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty());
        let by_role = role.and_then(|r| {
            state.limiters.iter().filter(here).find(|l| !l.rule.role.is_empty() && l.rule.role == r)
        });
        let by_suffix = || {
            state.limiters.iter().filter(here).find(|l| {
                l.rule.role.is_empty()
                    && !l.rule.path_suffix.is_empty()
                    && l.rule.path_suffix == suffix
            })
        };
        let by_glob = || {
            state
                .limiters
                .iter()
                .filter(here)
                .filter(|l| l.rule.role.is_empty())
                .filter_map(|l| {
                    let p = l.rule.path_suffix.strip_suffix('*')?;
                    suffix.starts_with(p).then_some((p.len(), l))
                })
                .max_by_key(|(n, _)| *n)
                .map(|(_, l)| l)
        };
        let by_mount = || {
            state
                .limiters
                .iter()
                .filter(here)
                .find(|l| l.rule.role.is_empty() && l.rule.path_suffix.is_empty())
        };
        let global = || state.limiters.iter().find(|l| l.rule.mount_path.is_empty());
        let limiter =
            by_role.or_else(by_suffix).or_else(by_glob).or_else(by_mount).or_else(global)?;
        let decision = limiter.take(addr, Instant::now());
        Some((
            limiter.rule.name.clone(),
            RateLimited {
                decision,
                headers: state.config.enable_rate_limit_response_headers,
                audit: state.config.enable_rate_limit_audit_logging,
                message: format!("request path {path:?}: rate limit quota exceeded"),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, mount: &str, suffix: &str, rate: f64) -> RateLimitRule {
        RateLimitRule {
            name: name.into(),
            mount_path: mount.into(),
            path_suffix: suffix.into(),
            role: String::new(),
            rate,
            interval_secs: 60,
            block_interval_secs: 0,
            inheritable: false,
        }
    }

    #[test]
    fn the_most_specific_rule_applies() {
        let q = Quotas::default();
        assert!(!q.active());
        q.install(
            vec![
                rule("global", "", "", 100.0),
                rule("kv", "secret/", "", 100.0),
                rule("kv-app", "secret/", "data/app*", 100.0),
                rule("kv-app-x", "secret/", "data/app/x", 100.0),
            ],
            QuotaConfig::default(),
        );
        assert!(q.active());
        let m = Map::new();
        let name = |p: &str, mount: &str| q.check(p, mount, "kv", None, &m).map(|(n, _)| n);
        assert_eq!(name("secret/data/app/x", "secret/").as_deref(), Some("kv-app-x"));
        assert_eq!(name("secret/data/app/y", "secret/").as_deref(), Some("kv-app"));
        assert_eq!(name("secret/data/other", "secret/").as_deref(), Some("kv"));
        assert_eq!(name("other/x", "other/").as_deref(), Some("global"));
        assert_eq!(name("sys/health", "sys/"), None, "exempt by default");
    }

    #[test]
    fn a_budget_is_per_address_and_comes_back_each_window() {
        let l = Limiter::new(rule("r", "", "", 2.0));
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        assert!(l.take(a, t0).allowed);
        let d = l.take(a, t0);
        assert!(d.allowed && d.remaining == 0 && d.limit == 2);
        let d = l.take(a, t0);
        assert!(!d.allowed && d.retry_after == 60 && d.reset == 60, "{d:?}");
        assert!(l.take(b, t0).allowed, "another address has its own budget");
        assert!(l.take(a, t0 + Duration::from_secs(61)).allowed);
    }

    #[test]
    fn a_block_interval_shuts_the_address_out_past_the_window() {
        let mut r = rule("r", "", "", 1.0);
        r.interval_secs = 1;
        r.block_interval_secs = 30;
        let l = Limiter::new(r);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let t0 = Instant::now();
        assert!(l.take(a, t0).allowed);
        assert_eq!(l.take(a, t0).retry_after, 30);
        assert!(!l.take(a, t0 + Duration::from_secs(5)).allowed, "still blocked");
        assert!(l.take(a, t0 + Duration::from_secs(31)).allowed);
    }

    #[test]
    fn memory_stays_bounded_however_many_addresses() {
        let l = Limiter::new(rule("r", "", "", 1.0));
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 5000) {
            l.take(Some(IpAddr::from(i.to_be_bytes())), t0);
        }
        let held: usize = l.shards.iter().map(|s| s.lock().expect("lock").len()).sum();
        assert!(held <= MAX_CLIENTS, "{held}");
    }
}
