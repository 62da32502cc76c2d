//! Detection rules as declared: parsed from the server config's `detect { rule "NAME" { ... } }`
//! blocks or a `sys/detect/rules/NAME` body, checked, and completed with their defaults, so that
//! what is stored and shown is what runs.
//!
//! Guarantees: a rule is refused (with a message naming the field) when it names an unknown
//! type, field, action or priority, gives a field that its type does not take, or a value out
//! of range; a rule that asks for a webhook has somewhere to send it. Not checked: that a
//! webhook URL answers (it is tried when an alert is raised).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What a rule watches for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Params {
    /// Any request of `operations` to a path matching one of `paths` (Vault's `*` glob).
    Honeytoken { paths: Vec<String>, operations: Vec<String> },
    /// At least `threshold` failed logins within `window` from one source address (`per`
    /// includes `source`) or against one role (`per` includes `role`).
    LoginFailures { threshold: u64, window: u64, per: Vec<String> },
    /// A token used from an address outside the network it was issued to: the issuing request's
    /// address widened to `ipv4_prefix` / `ipv6_prefix` bits.
    TokenCidr { ipv4_prefix: u8, ipv6_prefix: u8, max_tokens: u64 },
    /// One identity (entity, else token) sending `operations` to at least `threshold` distinct
    /// paths within `window`.
    ManyPaths { threshold: u64, window: u64, operations: Vec<String> },
    /// A token whose `image_digest` is not among those its role showed while it was learned
    /// (`learn_for` from the role's first sighting, and at least `min_observations` sightings).
    ImageDigest { learn_for: u64, min_observations: u64 },
    /// An identity's requests in one `bucket` above `factor` times its learned per-bucket rate
    /// (an average over about `window`), once the identity was seen for `warmup`, and at least
    /// `min_requests` in the bucket.
    RateBaseline { bucket: u64, window: u64, warmup: u64, factor: f64, min_requests: u64 },
}

impl Params {
    pub fn kind(&self) -> &'static str {
        match self {
            Params::Honeytoken { .. } => "honeytoken",
            Params::LoginFailures { .. } => "login_failures",
            Params::TokenCidr { .. } => "token_cidr",
            Params::ManyPaths { .. } => "many_paths",
            Params::ImageDigest { .. } => "image_digest",
            Params::RateBaseline { .. } => "rate_baseline",
        }
    }
}

/// What an alert does besides being kept in the recent alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An `alert` entry in every audit device (in its hash chain).
    Audit,
    /// A POST of the alert in Falco's JSON output format.
    Webhook,
    /// Revoke the token that made the request (and its children).
    RevokeToken,
    /// Revoke every token issued at login to the same role of the same auth mount.
    RevokeRole,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Audit => "audit",
            Action::Webhook => "webhook",
            Action::RevokeToken => "revoke_token",
            Action::RevokeRole => "revoke_role",
        }
    }

    fn parse(s: &str) -> Result<Action, String> {
        Ok(match s {
            "audit" => Action::Audit,
            "webhook" => Action::Webhook,
            "revoke_token" => Action::RevokeToken,
            "revoke_role" => Action::RevokeRole,
            other => {
                return Err(format!(
                    "unknown action {other:?} (known: audit, webhook, revoke_token, revoke_role)"
                ));
            }
        })
    }
}

/// Falco's priorities, most severe first.
pub const PRIORITIES: [&str; 8] =
    ["Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"];

/// One rule, complete with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub enabled: bool,
    pub description: String,
    pub priority: String,
    pub actions: Vec<Action>,
    /// Where `webhook` posts; empty: the `detect` block's `webhook_url`.
    pub webhook_url: String,
    /// Seconds during which the same rule does not alert again about the same subject.
    pub cooldown: u64,
    pub tags: Vec<String>,
    #[serde(flatten)]
    pub params: Params,
}

crate::record!(Rule, "detection rule", 1);

/// Which fields each type takes, besides the common ones.
fn type_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "honeytoken" => &["paths", "operations"],
        "login_failures" => &["threshold", "window", "per"],
        "token_cidr" => &["ipv4_prefix", "ipv6_prefix", "max_tokens"],
        "many_paths" => &["threshold", "window", "operations"],
        "image_digest" => &["learn_for", "min_observations"],
        "rate_baseline" => &["bucket", "window", "warmup", "factor", "min_requests"],
        _ => return None,
    })
}

const COMMON: &[&str] =
    &["type", "enabled", "description", "priority", "actions", "webhook_url", "cooldown", "tags"];

const OPERATIONS: &[&str] = &["create", "read", "update", "patch", "delete", "list", "*"];

/// A rule name: what `sys/quotas` and policies allow (word characters, `-` and `.` inside).
pub fn valid_name(n: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    !n.is_empty()
        && n.len() <= 128
        && n.chars().next().is_some_and(word)
        && n.chars().last().is_some_and(word)
        && n.chars().all(|c| word(c) || matches!(c, '-' | '.'))
}

struct Fields<'a> {
    m: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn u64(&self, k: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
        let n = match self.m.get(k) {
            None | Some(Value::Null) => return Ok(default),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("{k} must be a whole number from {min} to {max}")),
        }
    }

    fn f64(&self, k: &str, default: f64, min: f64) -> Result<f64, String> {
        let n = match self.m.get(k) {
            None | Some(Value::Null) => return Ok(default),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if n.is_finite() && n >= min => Ok(n),
            _ => Err(format!("{k} must be a number of at least {min}")),
        }
    }

    /// Seconds, from a number or a duration string (`"30s"`, `"5m"`, `"24h"`).
    fn secs(&self, k: &str, default: Duration, min: u64) -> Result<u64, String> {
        let d = match self.m.get(k) {
            None | Some(Value::Null) => default,
            Some(v) => crate::logical::fields::duration_field(v, k).map_err(|e| e.to_string())?,
        };
        let s = d.as_secs();
        if s < min {
            return Err(format!("{k} must be at least {min}s"));
        }
        Ok(s)
    }

    fn str(&self, k: &str) -> Result<Option<String>, String> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{k} must be a string")),
        }
    }

    fn bool(&self, k: &str, default: bool) -> Result<bool, String> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" => Ok(true),
            Some(Value::String(s)) if s == "false" => Ok(false),
            Some(_) => Err(format!("{k} must be true or false")),
        }
    }

    /// A list of strings, also given as one comma-separated string (as Vault's list fields).
    fn list(&self, k: &str) -> Result<Option<Vec<String>>, String> {
        match self.m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(
                s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect(),
            )),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{k} must be a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(format!("{k} must be a list of strings")),
        }
    }
}

fn operations(f: &Fields<'_>) -> Result<Vec<String>, String> {
    let ops = f.list("operations")?.unwrap_or_else(|| vec!["read".into(), "list".into()]);
    if ops.is_empty() {
        return Err("operations must name at least one operation".into());
    }
    if let Some(bad) = ops.iter().find(|o| !OPERATIONS.contains(&o.as_str())) {
        return Err(format!(
            "unknown operation {bad:?} in operations (known: {})",
            OPERATIONS.join(", ")
        ));
    }
    Ok(ops)
}

impl Rule {
    /// A rule from its fields (`name` from the path or the block's label); `default_webhook`:
    /// the `detect` block's `webhook_url`, which a rule asking for a webhook may rely on.
    pub fn parse(
        name: &str,
        m: &Map<String, Value>,
        default_webhook: &str,
    ) -> Result<Rule, String> {
        if !valid_name(name) {
            return Err(format!(
                "rule name {name:?} must be letters, digits and _ (with - and . inside), at most 128 characters"
            ));
        }
        let f = Fields { m };
        let kind = f.str("type")?.ok_or_else(|| {
            "type is required: honeytoken, login_failures, token_cidr, many_paths, image_digest or rate_baseline".to_owned()
        })?;
        let own = type_fields(&kind).ok_or_else(|| {
            format!("unknown rule type {kind:?} (known: honeytoken, login_failures, token_cidr, many_paths, image_digest, rate_baseline)")
        })?;
        for k in m.keys() {
            if !COMMON.contains(&k.as_str()) && !own.contains(&k.as_str()) {
                let other = [
                    "honeytoken",
                    "login_failures",
                    "token_cidr",
                    "many_paths",
                    "image_digest",
                    "rate_baseline",
                ]
                .iter()
                .any(|t| type_fields(t).is_some_and(|fs| fs.contains(&k.as_str())));
                return Err(if other {
                    format!(
                        "field {k:?} does not apply to a {kind} rule (it takes: {})",
                        own.join(", ")
                    )
                } else {
                    format!(
                        "unknown field {k:?} (known for a {kind} rule: {}, {})",
                        COMMON.join(", "),
                        own.join(", ")
                    )
                });
            }
        }
        let mins = |n: u64| Duration::from_secs(n);
        let params = match kind.as_str() {
            "honeytoken" => {
                let paths = f.list("paths")?.unwrap_or_default();
                if paths.is_empty() {
                    return Err("paths is required: the honeytoken paths (globs with *), e.g. [\"secret/data/honey/*\"]".into());
                }
                let paths =
                    paths.into_iter().map(|p| p.trim_start_matches('/').to_owned()).collect();
                Params::Honeytoken { paths, operations: operations(&f)? }
            }
            "login_failures" => {
                let per = f.list("per")?.unwrap_or_else(|| vec!["source".into(), "role".into()]);
                if per.is_empty() || per.iter().any(|p| p != "source" && p != "role") {
                    return Err("per must list \"source\", \"role\" or both".into());
                }
                Params::LoginFailures {
                    threshold: f.u64("threshold", 10, 1, 1_000_000)?,
                    window: f.secs("window", mins(60), 1)?,
                    per,
                }
            }
            "token_cidr" => Params::TokenCidr {
                ipv4_prefix: f.u64("ipv4_prefix", 24, 0, 32)? as u8,
                ipv6_prefix: f.u64("ipv6_prefix", 64, 0, 128)? as u8,
                max_tokens: f.u64("max_tokens", 100_000, 1, 10_000_000)?,
            },
            "many_paths" => Params::ManyPaths {
                threshold: f.u64("threshold", 50, 2, 1_000_000)?,
                window: f.secs("window", mins(60), 1)?,
                operations: operations(&f)?,
            },
            "image_digest" => Params::ImageDigest {
                learn_for: f.secs("learn_for", mins(24 * 3600), 0)?,
                min_observations: f.u64("min_observations", 10, 0, 1_000_000_000)?,
            },
            "rate_baseline" => {
                let bucket = f.secs("bucket", mins(60), 1)?;
                let window = f.secs("window", mins(3600), 1)?;
                if window < bucket {
                    return Err(format!(
                        "window ({window}s) must be at least one bucket ({bucket}s)"
                    ));
                }
                Params::RateBaseline {
                    bucket,
                    window,
                    warmup: f.secs("warmup", mins(3600), 0)?,
                    factor: f.f64("factor", 10.0, 1.0)?,
                    min_requests: f.u64("min_requests", 100, 1, 1_000_000_000)?,
                }
            }
            other => return Err(format!("unknown rule type {other:?}")),
        };
        let priority = match f.str("priority")? {
            None => default_priority(&params).to_owned(),
            Some(p) => PRIORITIES
                .iter()
                .find(|x| x.eq_ignore_ascii_case(&p))
                .map(|x| (*x).to_owned())
                .ok_or_else(|| {
                    format!("unknown priority {p:?} (Falco's: {})", PRIORITIES.join(", "))
                })?,
        };
        let mut actions = Vec::new();
        for a in f.list("actions")?.unwrap_or_else(|| vec!["audit".into()]) {
            let a = Action::parse(&a)?;
            if !actions.contains(&a) {
                actions.push(a);
            }
        }
        let webhook_url = f.str("webhook_url")?.unwrap_or_default();
        if !webhook_url.is_empty() {
            check_url(&webhook_url, "webhook_url")?;
        }
        if actions.contains(&Action::Webhook)
            && webhook_url.is_empty()
            && default_webhook.is_empty()
        {
            return Err("the webhook action needs webhook_url (on the rule, or in the server config's detect block)".into());
        }
        let login_only = matches!(params, Params::LoginFailures { .. });
        if login_only
            && actions.iter().any(|a| matches!(a, Action::RevokeToken | Action::RevokeRole))
        {
            return Err("a login_failures rule has no token to revoke: its actions may be audit and webhook".into());
        }
        let cooldown_default = match params {
            Params::Honeytoken { .. } => 0,
            _ => 300,
        };
        let tags = f.list("tags")?.unwrap_or_default();
        if tags.len() > 32 || tags.iter().any(|t| t.is_empty() || t.len() > 64) {
            return Err("tags: at most 32, each 1 to 64 characters".into());
        }
        Ok(Rule {
            name: name.to_owned(),
            enabled: f.bool("enabled", true)?,
            description: f.str("description")?.unwrap_or_default(),
            priority,
            actions,
            webhook_url,
            cooldown: f.secs("cooldown", mins(cooldown_default), 0)?,
            tags,
            params,
        })
    }

    /// The rule as the API shows it (durations in seconds), with where it came from.
    pub fn to_json(&self, source: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.insert("source".into(), json!(source));
        }
        v
    }

    pub fn has(&self, a: Action) -> bool {
        self.actions.contains(&a)
    }
}

/// `http://` or `https://` with a host: what the webhook sender can post to.
pub fn check_url(url: &str, field: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{field} must be an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!("{field} must name a host: {url:?}"));
    }
    Ok(())
}

pub fn default_priority(p: &Params) -> &'static str {
    match p {
        Params::Honeytoken { .. } => "Critical",
        Params::LoginFailures { .. } => "Warning",
        Params::TokenCidr { .. } => "Error",
        Params::ManyPaths { .. } => "Warning",
        Params::ImageDigest { .. } => "Error",
        Params::RateBaseline { .. } => "Notice",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Rule, String> {
        Rule::parse("r1", v.as_object().expect("object"), "")
    }

    #[test]
    fn a_rule_is_completed_with_its_defaults() {
        let r = parse(json!({"type": "login_failures"})).expect("rule");
        assert_eq!(
            r.params,
            Params::LoginFailures {
                threshold: 10,
                window: 60,
                per: vec!["source".into(), "role".into()]
            }
        );
        assert_eq!(r.actions, vec![Action::Audit]);
        assert_eq!(r.priority, "Warning");
        assert_eq!(r.cooldown, 300);
        let h = parse(json!({"type": "honeytoken", "paths": "secret/data/honey/*, /kv/x", "actions": ["audit", "revoke_token"], "priority": "critical"})).expect("rule");
        assert_eq!(
            h.params,
            Params::Honeytoken {
                paths: vec!["secret/data/honey/*".into(), "kv/x".into()],
                operations: vec!["read".into(), "list".into()]
            }
        );
        assert_eq!((h.priority.as_str(), h.cooldown), ("Critical", 0));
        let stored = crate::record::encode(&h).expect("encode");
        assert_eq!(crate::record::decode::<Rule>(&stored).expect("decode"), h);
    }

    #[test]
    fn a_bad_rule_is_refused_naming_the_problem() {
        let err = |v: Value| parse(v).expect_err("refused");
        assert!(err(json!({})).contains("type is required"));
        assert!(err(json!({"type": "nope"})).contains("unknown rule type"));
        assert!(err(json!({"type": "honeytoken"})).contains("paths is required"));
        assert!(
            err(json!({"type": "honeytoken", "paths": ["a"], "threshold": 3}))
                .contains("does not apply to a honeytoken rule")
        );
        assert!(
            err(json!({"type": "honeytoken", "paths": ["a"], "colour": 3}))
                .contains("unknown field \"colour\"")
        );
        assert!(
            err(json!({"type": "honeytoken", "paths": ["a"], "actions": ["webhook"]}))
                .contains("needs webhook_url")
        );
        assert!(
            err(json!({"type": "honeytoken", "paths": ["a"], "actions": ["page"]}))
                .contains("unknown action")
        );
        assert!(
            err(json!({"type": "honeytoken", "paths": ["a"], "priority": "loud"}))
                .contains("unknown priority")
        );
        assert!(
            err(json!({"type": "login_failures", "actions": ["revoke_token"]}))
                .contains("no token to revoke")
        );
        assert!(
            err(json!({"type": "login_failures", "threshold": 0})).contains("threshold must be")
        );
        assert!(err(json!({"type": "token_cidr", "ipv4_prefix": 33})).contains("ipv4_prefix"));
        assert!(
            err(json!({"type": "rate_baseline", "bucket": "10m", "window": "1m"}))
                .contains("at least one bucket")
        );
        assert!(err(json!({"type": "many_paths", "webhook_url": "ftp://x"})).contains("http://"));
        assert!(Rule::parse("bad/name", &Map::new(), "").is_err());
        assert!(
            Rule::parse(
                "ok",
                json!({"type": "many_paths", "actions": ["webhook"]}).as_object().expect("o"),
                "http://h:1/"
            )
            .is_ok()
        );
    }
}
