//! Rule evaluation: each rule's state (windows, learned sets, baselines) and what one
//! observation makes of it. Runs on the detection task only, never on a request.
//!
//! Guarantees: every state is bounded: per rule at most [`MAX_KEYS`] subjects (sources, roles,
//! identities; tokens for `token_cidr`: its `max_tokens`), the oldest forgotten first, and every
//! window holds at most its threshold of entries. Not kept: any state across a restart or a
//! rule change (a changed rule starts learning again); a finding names tokens by accessor only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use super::Observation;
use super::rules::{Params, Rule};
use crate::cidr::Cidr;

/// Subjects remembered per rule at most.
pub(crate) const MAX_KEYS: usize = 100_000;

/// What a rule found: the subject it is about (for the cooldown), a sentence, and the fields.
pub(crate) struct Finding {
    pub(crate) subject: String,
    pub(crate) output: String,
    pub(crate) fields: Map<String, Value>,
}

/// Keys in the order they were added, so the oldest can be dropped at the bound.
struct Bounded<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Bounded<V> {
    fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), cap }
    }

    fn entry(&mut self, key: &str, make: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            while self.map.len() >= self.cap {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.to_owned());
        }
        self.map.entry(key.to_owned()).or_insert_with(make)
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }
}

/// A sliding window of event times (ms), at most `cap` long.
fn push_window(w: &mut VecDeque<u64>, now: u64, window_ms: u64, cap: usize) -> usize {
    while w.front().is_some_and(|t| now.saturating_sub(*t) >= window_ms) {
        w.pop_front();
    }
    w.push_back(now);
    while w.len() > cap {
        w.pop_front();
    }
    w.len()
}

/// `ip/prefix` with the host bits cleared, as a network is written.
fn network(ip: IpAddr, prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            format!("{}/{prefix}", std::net::Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask =
                if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            format!("{}/{prefix}", std::net::Ipv6Addr::from(bits & mask))
        }
    }
}

struct RoleDigests {
    first_seen: u64,
    seen: u64,
    digests: HashSet<String>,
}

struct Rate {
    first_seen: u64,
    /// Whether one bucket has ended, so `baseline` holds a measured rate.
    learned: bool,
    bucket_start: u64,
    count: u64,
    baseline: f64,
    alerted: bool,
}

enum State {
    Stateless,
    Windows(Bounded<VecDeque<u64>>),
    Issued(Bounded<(Cidr, IpAddr, String)>),
    Paths(Bounded<HashMap<String, u64>>),
    Digests(Bounded<RoleDigests>),
    Rates(Bounded<Rate>),
}

/// One rule and what it has seen.
pub(crate) struct Evaluator {
    pub(crate) rule: std::sync::Arc<Rule>,
    state: State,
}

fn op_matches(ops: &[String], op: &str) -> bool {
    ops.iter().any(|o| o == "*" || o == op)
}

/// The identity a request is counted against: its entity, else its token.
fn identity(o: &Observation) -> Option<String> {
    let c = o.caller.as_ref()?;
    Some(if c.entity_id.is_empty() {
        format!("token:{}", c.accessor)
    } else {
        format!("entity:{}", c.entity_id)
    })
}

impl Evaluator {
    pub(crate) fn new(rule: std::sync::Arc<Rule>) -> Self {
        let state = match &rule.params {
            Params::Honeytoken { .. } => State::Stateless,
            Params::LoginFailures { .. } => State::Windows(Bounded::new(MAX_KEYS)),
            Params::TokenCidr { max_tokens, .. } => {
                State::Issued(Bounded::new(usize::try_from(*max_tokens).unwrap_or(MAX_KEYS)))
            }
            Params::ManyPaths { .. } => State::Paths(Bounded::new(MAX_KEYS)),
            Params::ImageDigest { .. } => State::Digests(Bounded::new(MAX_KEYS)),
            Params::RateBaseline { .. } => State::Rates(Bounded::new(MAX_KEYS)),
        };
        Self { rule, state }
    }

    /// What this observation makes the rule find (several for a login failure counted per
    /// source and per role).
    pub(crate) fn observe(&mut self, o: &Observation, out: &mut Vec<Finding>) {
        let now = o.at_ms;
        match (&self.rule.params, &mut self.state) {
            (Params::Honeytoken { paths, operations }, _) => {
                let hit = op_matches(operations, &o.operation)
                    && paths.iter().any(|p| crate::glob::glob_match(p, &o.path));
                if !hit {
                    return;
                }
                let who = o.caller.as_ref().map(|c| c.accessor.as_str()).unwrap_or("");
                out.push(Finding {
                    subject: format!("{}|{who}", o.path),
                    output: format!(
                        "Honeytoken path {} was accessed ({}) by {} from {}",
                        o.path,
                        o.operation,
                        o.who(),
                        o.remote_text()
                    ),
                    fields: Map::new(),
                });
            }
            (Params::LoginFailures { threshold, window, per }, State::Windows(w)) => {
                if !o.login || o.error.is_empty() {
                    return;
                }
                let cap = usize::try_from(*threshold).unwrap_or(usize::MAX);
                let mut keys = Vec::new();
                if per.iter().any(|p| p == "source") {
                    keys.push(("source", o.remote_text()));
                }
                if per.iter().any(|p| p == "role")
                    && let Some(role) = &o.login_role
                {
                    keys.push(("role", role.clone()));
                }
                for (by, key) in keys {
                    let q = w.entry(&format!("{by}:{key}"), VecDeque::new);
                    if push_window(q, now, window * 1000, cap) >= cap {
                        q.clear();
                        let mut fields = Map::new();
                        fields.insert("coffer.count".into(), json!(threshold));
                        fields.insert("coffer.window_seconds".into(), json!(window));
                        fields.insert(format!("coffer.login_{by}"), json!(key));
                        out.push(Finding {
                            subject: format!("{by}:{key}"),
                            output: format!(
                                "{threshold} failed logins within {window}s for {by} {key} (last: {} from {})",
                                o.path,
                                o.remote_text()
                            ),
                            fields,
                        });
                    }
                }
            }
            (Params::TokenCidr { ipv4_prefix, ipv6_prefix, .. }, State::Issued(issued)) => {
                if let (Some(new), Some(remote)) = (&o.issued, o.remote) {
                    let prefix = if remote.is_ipv4() { *ipv4_prefix } else { *ipv6_prefix };
                    let text = network(remote, prefix);
                    if let Ok(net) = Cidr::from_str(&text) {
                        *issued.entry(&new.accessor, || (net, remote, String::new())) =
                            (net, remote, text);
                    }
                }
                let Some(c) = &o.caller else { return };
                let Some((net, from, text)) = issued.get(&c.accessor) else { return };
                let Some(remote) = o.remote else { return };
                if !net.contains(remote) {
                    let mut fields = Map::new();
                    fields.insert("coffer.issued_from".into(), json!(from.to_string()));
                    fields.insert("coffer.issued_network".into(), json!(text));
                    out.push(Finding {
                        subject: format!("{}|{remote}", c.accessor),
                        output: format!(
                            "Token {} issued to {from} (network {text}) was used from {remote} for {} {}",
                            c.accessor, o.operation, o.path
                        ),
                        fields,
                    });
                }
            }
            (Params::ManyPaths { threshold, window, operations }, State::Paths(ids)) => {
                if !o.error.is_empty() && o.caller.is_none() {
                    return;
                }
                if !op_matches(operations, &o.operation) {
                    return;
                }
                let Some(id) = identity(o) else { return };
                let paths = ids.entry(&id, HashMap::new);
                let window_ms = window * 1000;
                paths.retain(|_, t| now.saturating_sub(*t) < window_ms);
                paths.insert(o.path.clone(), now);
                if paths.len() as u64 >= *threshold {
                    let n = paths.len();
                    paths.clear();
                    let mut fields = Map::new();
                    fields.insert("coffer.count".into(), json!(n));
                    fields.insert("coffer.window_seconds".into(), json!(window));
                    out.push(Finding {
                        subject: id.clone(),
                        output: format!(
                            "{} sent {} to {n} distinct paths within {window}s (last: {})",
                            o.who(),
                            operations.join("/"),
                            o.path
                        ),
                        fields,
                    });
                }
            }
            (Params::ImageDigest { learn_for, min_observations }, State::Digests(roles)) => {
                // A login teaches the role its digest as well as a request does.
                let seen: Option<(&str, &str, &str)> = match (&o.issued, &o.caller) {
                    (Some(i), _) => i
                        .role_key
                        .as_deref()
                        .zip(i.image_digest.as_deref())
                        .map(|(r, d)| (r, d, i.accessor.as_str())),
                    (None, Some(c)) => c
                        .role_key
                        .as_deref()
                        .zip(c.image_digest.as_deref())
                        .map(|(r, d)| (r, d, c.accessor.as_str())),
                    (None, None) => None,
                };
                let Some((role, digest, accessor)) = seen else { return };
                let r = roles.entry(role, || RoleDigests {
                    first_seen: now,
                    seen: 0,
                    digests: HashSet::new(),
                });
                let learning = now.saturating_sub(r.first_seen) < learn_for * 1000
                    || r.seen < *min_observations;
                if learning {
                    r.seen += 1;
                    if r.digests.len() < 1024 {
                        r.digests.insert(digest.to_owned());
                    }
                    return;
                }
                if !r.digests.contains(digest) {
                    let mut known: Vec<&String> = r.digests.iter().collect();
                    known.sort();
                    let mut fields = Map::new();
                    fields.insert("coffer.image_digest".into(), json!(digest));
                    fields.insert("coffer.known_digests".into(), json!(known));
                    out.push(Finding {
                        subject: format!("{role}|{digest}|{accessor}"),
                        output: format!(
                            "Token {accessor} of role {role} runs image {digest}, not one the role was learned with ({} known)",
                            known.len()
                        ),
                        fields,
                    });
                }
            }
            (
                Params::RateBaseline { bucket, window, warmup, factor, min_requests },
                State::Rates(ids),
            ) => {
                let Some(id) = identity(o) else { return };
                let bucket_ms = bucket * 1000;
                let r = ids.entry(&id, || Rate {
                    first_seen: now,
                    learned: false,
                    bucket_start: now,
                    count: 0,
                    baseline: 0.0,
                    alerted: false,
                });
                let alpha = (*bucket as f64 / *window as f64).min(1.0);
                if now >= r.bucket_start + bucket_ms {
                    // The bucket that ended had `count`; any after it, up to now, had none.
                    let ended = (now - r.bucket_start) / bucket_ms;
                    let n = r.count as f64;
                    r.baseline = if r.learned { r.baseline + alpha * (n - r.baseline) } else { n };
                    r.learned = true;
                    let empty = i32::try_from(ended - 1).unwrap_or(i32::MAX);
                    r.baseline *= (1.0 - alpha).powi(empty);
                    r.bucket_start += ended * bucket_ms;
                    r.count = 0;
                    r.alerted = false;
                }
                r.count += 1;
                let warm = now.saturating_sub(r.first_seen) >= warmup * 1000;
                let limit = factor * r.baseline.max(1.0);
                if warm && !r.alerted && r.count >= *min_requests && (r.count as f64) > limit {
                    r.alerted = true;
                    let mut fields = Map::new();
                    fields.insert("coffer.count".into(), json!(r.count));
                    fields.insert(
                        "coffer.baseline".into(),
                        json!((r.baseline * 100.0).round() / 100.0),
                    );
                    fields.insert("coffer.bucket_seconds".into(), json!(bucket));
                    out.push(Finding {
                        subject: id.clone(),
                        output: format!(
                            "{} made {} requests in {bucket}s, over {factor}x its baseline of {:.1}",
                            o.who(),
                            r.count,
                            r.baseline
                        ),
                        fields,
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::detect::{Caller, Issued};

    fn rule(v: Value) -> Evaluator {
        Evaluator::new(Arc::new(Rule::parse("r", v.as_object().expect("o"), "").expect("rule")))
    }

    fn obs(at_ms: u64, path: &str, op: &str, remote: &str) -> Observation {
        Observation {
            at_ms,
            request_id: "req".into(),
            path: path.into(),
            operation: op.into(),
            remote: remote.parse().ok(),
            error: String::new(),
            login: false,
            login_role: None,
            mount_type: "kv".into(),
            caller: None,
            issued: None,
        }
    }

    fn caller(acc: &str) -> Caller {
        Caller {
            accessor: acc.into(),
            display_name: "approle".into(),
            entity_id: String::new(),
            policies: vec!["default".into()],
            role_key: Some("auth/approle/login#web".into()),
            image_digest: None,
        }
    }

    fn run(e: &mut Evaluator, o: &Observation) -> Vec<Finding> {
        let mut out = Vec::new();
        e.observe(o, &mut out);
        out
    }

    #[test]
    fn failed_logins_alert_at_the_threshold_per_source_and_per_role() {
        let mut e = rule(json!({"type": "login_failures", "threshold": 3, "window": "10s"}));
        let mut fail = obs(0, "auth/userpass/login/bob", "update", "10.0.0.1");
        fail.login = true;
        fail.error = "invalid credentials".into();
        fail.login_role = Some("auth/userpass:bob".into());
        assert!(run(&mut e, &fail).is_empty());
        fail.at_ms = 1000;
        assert!(run(&mut e, &fail).is_empty());
        fail.at_ms = 2000;
        let f = run(&mut e, &fail);
        assert_eq!(f.len(), 2, "per source and per role");
        assert!(f[0].output.contains("3 failed logins"), "{}", f[0].output);
        // Spread wider than the window: nothing.
        for t in [20_000, 31_000, 42_000] {
            fail.at_ms = t;
            assert!(run(&mut e, &fail).is_empty());
        }
        let mut ok = fail.clone();
        ok.error.clear();
        assert!(run(&mut e, &ok).is_empty(), "a successful login is no failure");
    }

    #[test]
    fn a_token_used_outside_its_issuing_network_is_found() {
        let mut e = rule(json!({"type": "token_cidr", "ipv4_prefix": 24}));
        let mut login = obs(0, "auth/approle/login", "update", "10.1.2.3");
        login.issued = Some(Issued { accessor: "acc1".into(), role_key: None, image_digest: None });
        assert!(run(&mut e, &login).is_empty());
        let mut near = obs(1, "secret/data/a", "read", "10.1.2.200");
        near.caller = Some(caller("acc1"));
        assert!(run(&mut e, &near).is_empty());
        let mut far = obs(2, "secret/data/a", "read", "10.9.9.9");
        far.caller = Some(caller("acc1"));
        let f = run(&mut e, &far);
        assert_eq!(f.len(), 1);
        assert!(f[0].output.contains("10.1.2.0/24"), "{}", f[0].output);
        let mut unknown = far.clone();
        unknown.caller = Some(caller("other"));
        assert!(run(&mut e, &unknown).is_empty(), "a token issued before the rule is not judged");
    }

    #[test]
    fn many_distinct_paths_in_a_window_are_found_once() {
        let mut e = rule(json!({"type": "many_paths", "threshold": 5, "window": "60s"}));
        let mut found = 0;
        for i in 0..12 {
            let mut o = obs(i * 10, &format!("secret/data/{}", i % 6), "read", "10.0.0.1");
            o.caller = Some(caller("acc1"));
            found += run(&mut e, &o).len();
        }
        assert_eq!(found, 2, "twice five distinct paths in 12 reads of 6 paths");
        let mut w = obs(0, "secret/data/x", "update", "10.0.0.1");
        w.caller = Some(caller("acc1"));
        assert!(run(&mut e, &w).is_empty(), "writes are not counted by default");
    }

    #[test]
    fn an_unknown_image_digest_is_found_after_the_role_was_learned() {
        let mut e =
            rule(json!({"type": "image_digest", "learn_for": "10s", "min_observations": 2}));
        let mut c = caller("acc1");
        c.image_digest = Some("sha256:aaa".into());
        let mut o = obs(0, "secret/data/a", "read", "10.0.0.1");
        o.caller = Some(c.clone());
        assert!(run(&mut e, &o).is_empty());
        o.at_ms = 5_000;
        assert!(run(&mut e, &o).is_empty());
        o.at_ms = 11_000;
        assert!(run(&mut e, &o).is_empty(), "a learned digest");
        c.image_digest = Some("sha256:bbb".into());
        o.caller = Some(c.clone());
        let f = run(&mut e, &o);
        assert_eq!(f.len(), 1);
        assert!(f[0].output.contains("sha256:bbb"));
        c.image_digest = None;
        o.caller = Some(c);
        assert!(run(&mut e, &o).is_empty(), "no digest: the rule does not apply");
    }

    #[test]
    fn a_rate_far_above_the_baseline_is_found_after_the_warmup() {
        let mut e = rule(
            json!({"type": "rate_baseline", "bucket": "1s", "window": "10s", "warmup": "5s", "factor": 5, "min_requests": 10}),
        );
        let mut found = 0;
        let mut o = obs(0, "secret/data/a", "read", "10.0.0.1");
        o.caller = Some(caller("acc1"));
        // Ten seconds at 2 requests a second: the baseline.
        for s in 0..10u64 {
            for k in 0..2u64 {
                o.at_ms = s * 1000 + k * 100;
                found += run(&mut e, &o).len();
            }
        }
        assert_eq!(found, 0);
        // Then 50 in one second.
        for k in 0..50u64 {
            o.at_ms = 10_000 + k * 10;
            found += run(&mut e, &o).len();
        }
        assert_eq!(found, 1, "one alert per bucket");
    }

    #[test]
    fn honeytoken_globs_match_paths_and_operations() {
        let mut e = rule(json!({"type": "honeytoken", "paths": ["secret/data/honey/*"]}));
        let mut o = obs(0, "secret/data/honey/db", "read", "10.0.0.1");
        o.caller = Some(caller("acc1"));
        assert_eq!(run(&mut e, &o).len(), 1);
        o.operation = "update".into();
        assert!(run(&mut e, &o).is_empty());
        o.operation = "read".into();
        o.path = "secret/data/other".into();
        assert!(run(&mut e, &o).is_empty());
    }

    #[test]
    fn per_rule_state_is_bounded() {
        let mut b: Bounded<u64> = Bounded::new(3);
        for i in 0..10u64 {
            *b.entry(&i.to_string(), || 0) = i;
        }
        assert_eq!(b.map.len(), 3);
        assert!(b.get("9").is_some() && b.get("0").is_none());
    }
}
