//! `sys/agent/delivery` (Coffer only): an agent's report that it delivered secrets (read from
//! `paths`) to `destinations` (rendered files, `env:NAME` in the app's environment), delivered
//! them again after a change, or removed them at exit. The report exists to be audited: its
//! request entry, beside the verified identity of the token that sent it (accessor, policies,
//! the role and service account in its metadata), is the record of delivery.
//!
//! Guarantees: a report is accepted only in its exact shape (no unknown field at any level, each
//! field typed, counted and capped, no control characters), so that what the audit log shows of
//! it in clear ([`FIELDS`], declared in [`super::paths`]) can only be paths, file names and
//! short words; anything else is refused with 400 naming the field, and its request entry keeps
//! every string as an HMAC. Any live token may report about itself (no capability needed, an
//! explicit `deny` refuses); nothing is stored.
//! Not guaranteed: that the report is true. The `agent` block is the agent's own claim; the
//! token's identity in the entry's `auth` block is what the server verified.

use serde_json::{Map, Value};

use crate::logical::{Error, Result};

/// The fields of a report: exactly what the audit log shows in clear for this path.
pub(crate) const FIELDS: &[&str] = &["event", "reason", "paths", "destinations", "agent"];
const AGENT_FIELDS: &[&str] = &["instance", "hostname", "pod", "container"];
const EVENTS: &[&str] = &["delivered", "redelivered", "removed"];
/// At most this many paths, and this many destinations, in one report.
pub(crate) const MAX_ITEMS: usize = 256;
const MAX_PATH: usize = 512;
const MAX_DESTINATION: usize = 1024;
const MAX_REASON: usize = 32;
/// A DNS name's length: what hostnames, pod and container names fit in.
const MAX_AGENT_FIELD: usize = 253;
const MAX_INSTANCE: usize = 64;

fn field_error(name: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("delivery report: {name:?} {what}"))
}

/// A string field; `None` when absent.
fn string<'a>(data: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>> {
    match data.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_error(name, "must be a string")),
    }
}

/// A non-empty string of at most `max` bytes without control characters.
fn check_text(name: &str, s: &str, max: usize) -> Result<()> {
    if s.is_empty() {
        return Err(field_error(name, "must not be empty"));
    }
    if s.len() > max {
        return Err(field_error(name, format_args!("is longer than {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(field_error(name, "contains a control character"));
    }
    Ok(())
}

/// A list of at most [`MAX_ITEMS`] strings, each checked by `each`.
fn list(
    data: &Map<String, Value>,
    name: &str,
    max_len: usize,
    each: impl Fn(&str) -> Result<()>,
) -> Result<()> {
    let items = match data.get(name) {
        None => return Ok(()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(field_error(name, "must be a list of strings")),
    };
    if items.len() > MAX_ITEMS {
        return Err(field_error(name, format_args!("has more than {MAX_ITEMS} entries")));
    }
    for (i, v) in items.iter().enumerate() {
        let item = format!("{name}[{i}]");
        let s = v.as_str().ok_or_else(|| field_error(&item, "must be a string"))?;
        check_text(&item, s, max_len)?;
        each(s).map_err(|e| field_error(&item, e))?;
    }
    Ok(())
}

/// Checks a report; the error names the field at fault.
pub(crate) fn check(data: &Map<String, Value>) -> Result<()> {
    if let Some(k) = data.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(field_error(k, format_args!("is not a field (known: {})", FIELDS.join(", "))));
    }
    let event = string(data, "event")?.ok_or_else(|| field_error("event", "is required"))?;
    if !EVENTS.contains(&event) {
        return Err(field_error("event", format_args!("must be one of {}", EVENTS.join(", "))));
    }
    let reason = string(data, "reason")?.ok_or_else(|| field_error("reason", "is required"))?;
    check_text("reason", reason, MAX_REASON)?;
    if !reason.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(field_error("reason", "may hold only a-z, 0-9 and '-'"));
    }
    list(data, "paths", MAX_PATH, |p| {
        crate::path::clean(p).map(drop).map_err(|_| Error::invalid("is not a valid API path"))
    })?;
    list(data, "destinations", MAX_DESTINATION, |_| Ok(()))?;
    match data.get("agent") {
        None => Ok(()),
        Some(Value::Object(agent)) => {
            if let Some(k) = agent.keys().find(|k| !AGENT_FIELDS.contains(&k.as_str())) {
                return Err(field_error(
                    &format!("agent.{k}"),
                    format_args!("is not a field (known: {})", AGENT_FIELDS.join(", ")),
                ));
            }
            for k in AGENT_FIELDS {
                let name = format!("agent.{k}");
                let Some(s) =
                    string(agent, k).map_err(|_| field_error(&name, "must be a string"))?
                else {
                    continue;
                };
                let max = if *k == "instance" { MAX_INSTANCE } else { MAX_AGENT_FIELD };
                check_text(&name, s, max)?;
            }
            Ok(())
        }
        Some(_) => Err(field_error("agent", "must be an object")),
    }
}

/// Whether `data` is a report [`check`] accepts: only then does the audit log show it in clear.
pub(crate) fn is_valid(data: &Map<String, Value>) -> bool {
    check(data).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report(v: Value) -> Result<()> {
        check(v.as_object().expect("object"))
    }

    fn refusal(v: Value) -> String {
        match report(v) {
            Err(Error::InvalidRequest(m)) => m,
            other => panic!("not refused as bad input: {other:?}"),
        }
    }

    #[test]
    fn a_complete_report_is_accepted() {
        report(json!({
            "event": "redelivered",
            "reason": "lease-reissue",
            "paths": ["secret/data/web/db", "database/creds/web"],
            "destinations": ["/run/secrets/db", "env:DB_PASSWORD"],
            "agent": {"instance": "0f3a", "hostname": "web-1", "pod": "web-7d9", "container": "app"},
        }))
        .expect("accepted");
        report(json!({"event": "removed", "reason": "exit"})).expect("the lists are optional");
    }

    #[test]
    fn every_refusal_names_the_field() {
        for (body, field) in [
            (json!({"reason": "initial"}), "\"event\""),
            (json!({"event": "leaked", "reason": "initial"}), "\"event\""),
            (json!({"event": "delivered"}), "\"reason\""),
            (json!({"event": "delivered", "reason": "Initial!"}), "\"reason\""),
            (json!({"event": "delivered", "reason": "x".repeat(33)}), "\"reason\""),
            (json!({"event": "delivered", "reason": 1}), "\"reason\""),
            (json!({"event": "delivered", "reason": "poll", "paths": "a/b"}), "\"paths\""),
            (json!({"event": "delivered", "reason": "poll", "paths": ["a/../b"]}), "\"paths[0]\""),
            (json!({"event": "delivered", "reason": "poll", "paths": ["a", 7]}), "\"paths[1]\""),
            (json!({"event": "delivered", "reason": "poll", "paths": [""]}), "\"paths[0]\""),
            (
                json!({"event": "delivered", "reason": "poll", "destinations": ["/a\nb"]}),
                "\"destinations[0]\"",
            ),
            (
                json!({"event": "delivered", "reason": "poll", "destinations": vec!["/x"; 257]}),
                "\"destinations\"",
            ),
            (json!({"event": "delivered", "reason": "poll", "agent": "me"}), "\"agent\""),
            (
                json!({"event": "delivered", "reason": "poll", "agent": {"pod": "p".repeat(254)}}),
                "\"agent.pod\"",
            ),
            (
                json!({"event": "delivered", "reason": "poll", "agent": {"token": "s.x"}}),
                "\"agent.token\"",
            ),
        ] {
            let m = refusal(body.clone());
            assert!(m.contains(field), "{body}: {m}");
        }
    }

    /// A whole core with a file audit device: the entry of a report names the token that sent
    /// it (accessor as the device's HMAC, role and pod from its metadata) and shows the report
    /// in clear; a report carrying a value in a field of its own is refused, and the value is in
    /// the log only as an HMAC.
    #[tokio::test]
    async fn the_audit_entry_names_the_agent_and_shows_the_report_in_clear() {
        use std::sync::Arc;

        use coffer_storage::MemoryBackend;

        use crate::logical::{Operation, Request};
        use crate::{Core, CoreConfig, Registry};

        use crate::test_support::Nothing;
        let mut registry = Registry::new();
        registry.register_secrets("cubbyhole", Arc::new(|_| Ok(Arc::new(Nothing))));
        let core = Core::new(Arc::new(MemoryBackend::new()), registry, CoreConfig::default());
        let root = core.dev_setup(None).await.expect("dev setup").root_token;
        let root = root.expose();
        let call = |path: &str, token: &str, body: Value| {
            let req = Request::new(Operation::Update, path)
                .with_token(token)
                .with_data(body.as_object().expect("object").clone());
            core.handle(req)
        };
        let dir =
            std::env::temp_dir().join(format!("coffer-delivery-{}", crate::random::uuid_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("audit.log");
        let device = json!({"type": "file", "options": {"file_path": log.display().to_string()}});
        call("sys/audit/file", root, device).await.expect("audit device");
        // The agent's token: what a kubernetes login gives, with one use only.
        let meta =
            json!({"role_name": "web", "service_account_name": "web", "pod_name": "web-7d9"});
        let body = json!({"policies": ["default"], "meta": meta, "num_uses": 1});
        let auth = call("auth/token/create", root, body).await.expect("token").auth.expect("auth");
        let (token, accessor) = (auth.client_token.expose().to_owned(), auth.accessor.clone());

        let report = json!({
            "event": "delivered",
            "reason": "initial",
            "paths": ["secret/data/web/db"],
            "destinations": ["/run/secrets/db", "env:DB_PASSWORD"],
            "agent": {"instance": "0f3a9c", "hostname": "web-7d9", "pod": "web-7d9"},
        });
        let r = call("sys/agent/delivery", &token, report.clone()).await.expect("accepted");
        assert!(r.is_empty() && r.raw.is_none(), "answered 204");
        let mut leaky = report.clone();
        leaky["password"] = json!("hunter2-canary");
        let e = call("sys/agent/delivery", &token, leaky).await.expect_err("refused");
        assert!(matches!(&e, Error::InvalidRequest(m) if m.contains("\"password\"")), "{e}");
        // Reports took none of the token's one use.
        let lookup = Request::new(Operation::Read, "auth/token/lookup-self").with_token(&token);
        core.handle(lookup).await.expect("the token still has its use");

        // An explicit deny turns reports off; no token at all is refused as anywhere.
        let quiet = json!({"policy": "path \"sys/agent/*\" { capabilities = [\"deny\"] }"});
        call("sys/policies/acl/quiet", root, quiet).await.expect("policy");
        let body = json!({"policies": ["default", "quiet"]});
        let auth = call("auth/token/create", root, body).await.expect("token").auth.expect("auth");
        let denied = call("sys/agent/delivery", auth.client_token.expose(), report.clone()).await;
        assert!(matches!(denied, Err(Error::PermissionDenied)));
        let anonymous = Request::new(Operation::Update, "sys/agent/delivery")
            .with_data(report.as_object().expect("object").clone());
        assert!(matches!(core.handle(anonymous).await, Err(Error::PermissionDenied)));

        let hashed = call("sys/audit-hash/file", root, json!({"input": accessor})).await;
        let hashed = hashed.expect("hash").data.expect("data")["hash"].clone();
        let text = std::fs::read_to_string(&log).expect("log");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(!text.contains("hunter2-canary"), "a value sent by mistake is in the log in clear");
        let entries: Vec<Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        let reports: Vec<&Value> =
            entries.iter().filter(|e| e["request"]["path"] == "sys/agent/delivery").collect();
        // Refused before the handler (no token, a deny rule): the body stays hashed, so nobody
        // writes text of their choosing into the log in clear.
        let refused: Vec<&&Value> = reports.iter().filter(|e| e["auth"] == json!({})).collect();
        assert_eq!(refused.len(), 2, "{refused:#?}");
        for e in refused {
            let event = e["request"]["data"]["event"].as_str().expect("event");
            assert!(event.starts_with("hmac-sha256:"), "a refused report in clear: {e}");
        }
        let reports: Vec<&Value> = reports.into_iter().filter(|e| e["auth"] != json!({})).collect();
        // A request and a response entry for each report the ACL let through (a refused request
        // is logged once, without the caller).
        assert_eq!(reports.len(), 4, "{reports:#?}");
        let (good, bad) = (reports[0], reports[2]);
        assert_eq!(good["type"], "request");
        assert_eq!(good["request"]["data"], report, "the report in clear");
        assert_eq!(good["auth"]["accessor"], hashed);
        assert_eq!(good["auth"]["metadata"], meta);
        assert_eq!(good["auth"]["policies"], json!(["default"]));
        assert_eq!(reports[1]["request"]["data"], report, "the response entry too");
        assert_eq!(reports[1]["error"], "");
        // The refused one: every string hashed, the field named in the error.
        let data = &bad["request"]["data"];
        assert!(data["password"].as_str().expect("str").starts_with("hmac-sha256:"), "{data}");
        assert!(data["event"].as_str().expect("str").starts_with("hmac-sha256:"), "{data}");
        assert!(reports[3]["error"].as_str().expect("error").contains("\"password\""));
    }

    #[test]
    fn a_secret_sent_in_an_unknown_field_is_refused_without_being_repeated() {
        let m = refusal(json!({
            "event": "delivered", "reason": "initial", "password": "hunter2-canary",
        }));
        assert!(m.contains("\"password\" is not a field"), "{m}");
        assert!(!m.contains("hunter2-canary"), "{m}");
    }
}
