//! What a fault may be given (checked before anything happens) and which requests a `latency`
//! or `error` fault touches: pure functions, tested here.
//!
//! Guarantees: a spec that [`check`] accepts has every field its kind needs and none it does
//! not take, and a lasting fault's duration is within `(0, max]`. A role scope matches only
//! tokens an auth method issued at login (their `role` / `role_name` metadata was written by
//! the method, not by whoever created a token through `auth/token/create`).
//! Not done: scoping by anything the server cannot tell from the token (the client's address).

use std::time::Duration;

use coffer_wire::chaos::{FaultKind, FaultSpec};

use crate::logical::{Error, Result};
use crate::token::TokenEntry;

/// Latency (with jitter) longer than this is refused: past it, clients time out anyway and the
/// fault only ties up the server's tasks.
pub(crate) const MAX_LATENCY: Duration = Duration::from_secs(300);

/// A `host` record's `target` longer than this is refused: it is a description for the audit
/// log (a namespace and an address, a pid), not a place for data.
pub(crate) const MAX_HOST_TARGET: usize = 256;

/// A `hostfault-...` id as the host side makes them (its state file is named by it).
fn valid_host_id(id: &str) -> bool {
    id.len() > "hostfault-".len()
        && id.len() <= 100
        && id.starts_with("hostfault-")
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Refuses a spec that does not fit its kind or the configured cap, naming the problem.
pub(crate) fn check(spec: &FaultSpec, max: Duration) -> Result<()> {
    let kind = spec.kind.as_str();
    let not_for = |field: &str| {
        Err(Error::invalid(format!("field {field:?} does not apply to a {kind} fault")))
    };
    if spec.kind == FaultKind::Host && spec.host_kind.is_none() {
        // Whether a duration is needed depends on it: say this first.
        return Err(Error::invalid(
            "missing required field \"host_kind\" for a host fault (partition, netem, kill, pause or agent_cache)",
        ));
    }
    if spec.one_shot() {
        if spec.duration.is_some() {
            return Err(Error::invalid(format!(
                "a {kind} fault is one-shot: it takes no duration"
            )));
        }
    } else {
        let d = spec.duration.ok_or_else(|| {
            Error::invalid(format!("missing required field \"duration\" for a {kind} fault"))
        })?;
        if d.0.is_zero() {
            return Err(Error::invalid("duration must be longer than 0s"));
        }
        if d.0 > max {
            return Err(Error::invalid(format!(
                "duration {}s is longer than the server's chaos max_duration ({}s)",
                d.0.as_secs_f64(),
                max.as_secs()
            )));
        }
    }
    let scoped = matches!(spec.kind, FaultKind::Latency | FaultKind::Error);
    let scope = [
        ("path_prefix", &spec.path_prefix),
        ("role", &spec.role),
        ("display_name", &spec.display_name),
        ("entity", &spec.entity),
    ];
    for (name, v) in scope {
        match v {
            Some(_) if !scoped => return not_for(name),
            Some(s) if s.trim().is_empty() => {
                return Err(Error::invalid(format!("{name} must not be empty")));
            }
            _ => {}
        }
    }
    let own: &[&str] = match spec.kind {
        FaultKind::Latency => &["latency", "jitter"],
        FaultKind::Error => &["status", "rate"],
        FaultKind::RevokePrefix => &["prefix"],
        FaultKind::Rotate => &["path", "keys"],
        FaultKind::Host => &["host_kind", "host_id", "target"],
        FaultKind::Seal | FaultKind::StorageUnavailable | FaultKind::AuditBlocked => &[],
    };
    let given = [
        ("latency", spec.latency.is_some()),
        ("jitter", spec.jitter.is_some()),
        ("status", spec.status.is_some()),
        ("rate", spec.rate.is_some()),
        ("prefix", spec.prefix.is_some()),
        ("path", spec.path.is_some()),
        ("keys", spec.keys.is_some()),
        ("host_kind", spec.host_kind.is_some()),
        ("host_id", spec.host_id.is_some()),
        ("target", spec.target.is_some()),
    ];
    if let Some((name, _)) = given.iter().find(|(n, g)| *g && !own.contains(n)) {
        return not_for(name);
    }
    match spec.kind {
        FaultKind::Latency => {
            let l = spec.latency.ok_or_else(|| {
                Error::invalid("missing required field \"latency\" for a latency fault")
            })?;
            let total = l.0 + spec.jitter.map(|j| j.0).unwrap_or_default();
            if l.0.is_zero() {
                return Err(Error::invalid("latency must be longer than 0s"));
            }
            if total > MAX_LATENCY {
                return Err(Error::invalid(format!(
                    "latency plus jitter must be at most {}s",
                    MAX_LATENCY.as_secs()
                )));
            }
        }
        FaultKind::Error => {
            if let Some(s) = spec.status.filter(|s| ![500, 503, 429].contains(s)) {
                return Err(Error::invalid(format!("status must be 500, 503 or 429, not {s}")));
            }
            if let Some(r) = spec.rate.filter(|r| !(r.is_finite() && *r > 0.0 && *r <= 1.0)) {
                return Err(Error::invalid(format!("rate must be above 0 and at most 1, not {r}")));
            }
        }
        FaultKind::RevokePrefix => {
            let p = spec.prefix.as_deref().unwrap_or("").trim_matches('/');
            if p.is_empty() {
                return Err(Error::invalid(
                    "missing required field \"prefix\" for a revoke_prefix fault",
                ));
            }
        }
        FaultKind::Rotate => {
            let p = spec.path.as_deref().unwrap_or("").trim_matches('/');
            if p.is_empty() {
                return Err(Error::invalid("missing required field \"path\" for a rotate fault"));
            }
            if let Some(k) = &spec.keys
                && (k.is_empty() || k.iter().any(|k| k.trim().is_empty()))
            {
                return Err(Error::invalid("keys must be a non-empty list of key names"));
            }
        }
        FaultKind::Host => {
            let id = spec.host_id.as_deref().ok_or_else(|| {
                Error::invalid("missing required field \"host_id\" for a host fault")
            })?;
            if !valid_host_id(id) {
                return Err(Error::invalid(format!(
                    "host_id {id:?} is not a host fault id (hostfault- and letters, digits, -)"
                )));
            }
            if let Some(t) = &spec.target {
                if t.trim().is_empty() {
                    return Err(Error::invalid("target must not be empty"));
                }
                if t.len() > MAX_HOST_TARGET {
                    return Err(Error::invalid(format!(
                        "target must be at most {MAX_HOST_TARGET} bytes"
                    )));
                }
                if t.chars().any(char::is_control) {
                    return Err(Error::invalid("target must not hold control characters"));
                }
            }
        }
        FaultKind::Seal | FaultKind::StorageUnavailable | FaultKind::AuditBlocked => {}
    }
    Ok(())
}

/// The login role a token was issued to: set by approle (`role_name`), jwt and kubernetes
/// (`role`); `None` for a token made any other way.
fn login_role(t: &TokenEntry) -> Option<&str> {
    let by_login = t.path.starts_with("auth/") && !t.path.starts_with("auth/token/");
    if !by_login {
        return None;
    }
    t.meta.get("role").or_else(|| t.meta.get("role_name")).map(String::as_str)
}

/// Whether a request to `path` (relative to `/v1/`, cleaned) by `caller` is in the fault's
/// scope. Identity fields need a caller: a request without a token (a login) is only in the
/// scope of a fault that names no role, display name or entity.
pub(crate) fn in_scope(spec: &FaultSpec, path: &str, caller: Option<&TokenEntry>) -> bool {
    if let Some(p) = &spec.path_prefix
        && !path.starts_with(p.trim_start_matches('/'))
    {
        return false;
    }
    if let Some(role) = &spec.role
        && caller.and_then(login_role) != Some(role.as_str())
    {
        return false;
    }
    if let Some(name) = &spec.display_name
        && caller.map(|t| t.display_name.as_str()) != Some(name.as_str())
    {
        return false;
    }
    if let Some(entity) = &spec.entity
        && caller.map(|t| t.entity_id.as_str()).filter(|e| !e.is_empty()) != Some(entity.as_str())
    {
        return false;
    }
    true
}

/// Whether an `error` fault of `rate` hits, given a uniform draw `u` in `[0, 1)`.
pub(crate) fn hits(rate: Option<f64>, u: f64) -> bool {
    u < rate.unwrap_or(1.0)
}

/// A uniform draw in `[0, 1)`.
pub(crate) fn draw() -> f64 {
    let b = crate::random::random_bytes::<8>();
    // 53 random bits: every value a double can represent exactly in [0, 1).
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use coffer_wire::chaos::WireDuration;

    use super::*;

    fn spec(v: serde_json::Value) -> FaultSpec {
        serde_json::from_value(v).expect("spec")
    }

    fn token(path: &str, meta: &[(&str, &str)], display: &str) -> TokenEntry {
        let meta: BTreeMap<String, String> =
            meta.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut t: TokenEntry = serde_json::from_value(serde_json::json!({
            "id": "h", "accessor": "a", "parent": null, "policies": ["default"],
            "path": path, "meta": meta, "display_name": display, "num_uses": 0,
            "creation_time": 0, "creation_ttl": 0, "expire_time": 0, "explicit_max_ttl": 0,
            "period": 0, "renewable": false, "orphan": false, "entity_id": "",
        }))
        .expect("token entry");
        t.entity_id = String::new();
        t
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn check_refuses_what_does_not_fit_the_kind() {
        let err = |v| match check(&spec(v), HOUR) {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(serde_json::json!({"type": "seal"})).contains("duration"));
        assert!(
            err(serde_json::json!({"type": "seal", "duration": "2h"})).contains("max_duration")
        );
        assert!(err(serde_json::json!({"type": "seal", "duration": 0})).contains("longer than 0s"));
        assert!(err(serde_json::json!({"type": "latency", "duration": 5})).contains("latency"));
        assert!(
            err(serde_json::json!({"type": "error", "duration": 5, "status": 404}))
                .contains("500, 503 or 429")
        );
        assert!(
            err(serde_json::json!({"type": "error", "duration": 5, "rate": 0})).contains("rate")
        );
        assert!(
            err(serde_json::json!({"type": "error", "duration": 5, "rate": 1.5})).contains("rate")
        );
        assert!(
            err(serde_json::json!({"type": "seal", "duration": 5, "role": "web"}))
                .contains("\"role\" does not apply to a seal fault")
        );
        assert!(
            err(serde_json::json!({"type": "latency", "duration": 5, "latency": "1s", "status": 503}))
                .contains("\"status\" does not apply")
        );
        assert!(
            err(serde_json::json!({"type": "revoke_prefix", "prefix": "db/", "duration": 5}))
                .contains("one-shot")
        );
        assert!(err(serde_json::json!({"type": "revoke_prefix"})).contains("prefix"));
        assert!(
            err(serde_json::json!({"type": "latency", "duration": 5, "latency": "299s", "jitter": "2s"}))
                .contains("at most 300s")
        );
        check(&spec(serde_json::json!({"type": "error", "duration": "1h", "rate": 1})), HOUR)
            .expect("the cap itself is allowed");
        check(
            &spec(serde_json::json!({"type": "latency", "duration": 1, "latency": "20ms"})),
            HOUR,
        )
        .expect("latency");
    }

    #[test]
    fn a_host_record_needs_its_kind_id_and_a_duration_unless_one_shot() {
        let err = |v| match check(&spec(v), HOUR) {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        let id = "hostfault-1796444686-18982-036c0d6c";
        assert!(
            err(serde_json::json!({"type": "host", "host_id": id, "duration": 5}))
                .contains("\"host_kind\"")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "pause", "duration": 5}))
                .contains("\"host_id\"")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "pause", "host_id": id}))
                .contains("\"duration\"")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "pause", "host_id": "hostfault-../x", "duration": 5}))
                .contains("not a host fault id")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "pause", "host_id": "fault-x", "duration": 5}))
                .contains("not a host fault id")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "agent_cache", "host_id": id, "duration": 5}))
                .contains("one-shot")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "netem", "host_id": id, "duration": "2h"}))
                .contains("max_duration")
        );
        let long = "x".repeat(MAX_HOST_TARGET + 1);
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "kill", "host_id": id, "duration": 5, "target": long}))
                .contains("at most 256")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "kill", "host_id": id, "duration": 5, "target": "a\nb"}))
                .contains("control")
        );
        assert!(
            err(serde_json::json!({"type": "host", "host_kind": "kill", "host_id": id, "duration": 5, "role": "web"}))
                .contains("\"role\" does not apply to a host fault")
        );
        assert!(
            err(serde_json::json!({"type": "seal", "duration": 5, "host_id": id}))
                .contains("\"host_id\" does not apply to a seal fault")
        );
        let bad = serde_json::from_value::<FaultSpec>(
            serde_json::json!({"type": "host", "host_kind": "reboot", "host_id": id}),
        );
        assert!(bad.expect_err("kind").to_string().contains("reboot"));
        let ok = spec(serde_json::json!({"type": "host", "host_kind": "partition", "host_id": id,
            "duration": "30s", "target": "netns app -> 10.0.0.1/32"}));
        check(&ok, HOUR).expect("partition record");
        assert!(!ok.one_shot());
        let cache =
            spec(serde_json::json!({"type": "host", "host_kind": "agent-cache", "host_id": id}));
        check(&cache, HOUR).expect("agent_cache record");
        assert!(cache.one_shot());
    }

    #[test]
    fn scope_matches_path_prefix_role_and_display_name() {
        let mut s = FaultSpec::new(FaultKind::Error);
        s.duration = Some(WireDuration(HOUR));
        assert!(in_scope(&s, "anything", None), "no scope: every request");
        s.path_prefix = Some("secret/data/a".into());
        assert!(in_scope(&s, "secret/data/a/x", None));
        assert!(!in_scope(&s, "secret/data/b", None));
        s.path_prefix = None;
        s.role = Some("web".into());
        let approle = token("auth/approle/login", &[("role_name", "web")], "approle");
        let jwt = token("auth/jwt/login", &[("role", "web")], "jwt");
        let other = token("auth/approle/login", &[("role_name", "db")], "approle");
        let made = token("auth/token/create", &[("role", "web")], "token");
        assert!(in_scope(&s, "x", Some(&approle)));
        assert!(in_scope(&s, "x", Some(&jwt)));
        assert!(!in_scope(&s, "x", Some(&other)));
        assert!(!in_scope(&s, "x", Some(&made)), "metadata set through token create is no login");
        assert!(!in_scope(&s, "x", None), "a login has no caller yet");
        s.role = None;
        s.display_name = Some("jwt".into());
        assert!(in_scope(&s, "x", Some(&jwt)) && !in_scope(&s, "x", Some(&approle)));
        s.display_name = None;
        s.entity = Some("e1".into());
        assert!(!in_scope(&s, "x", Some(&jwt)), "no entity id matches no entity");
    }

    #[test]
    fn rate_is_the_share_of_draws_that_hit() {
        assert!(hits(None, 0.999_999));
        assert!(hits(Some(0.5), 0.49) && !hits(Some(0.5), 0.5));
        let n = 20_000;
        let hit = (0..n).filter(|_| hits(Some(0.25), draw())).count();
        let share = hit as f64 / n as f64;
        assert!((0.22..0.28).contains(&share), "{share}");
        assert!((0..1000).map(|_| draw()).all(|u| (0.0..1.0).contains(&u)));
    }
}
