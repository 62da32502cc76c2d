//! Rate limit quotas (`sys/quotas/rate-limit/:name`, `sys/quotas/config`) through HTTP and the
//! CLI: Vault's fields, errors and 429 answer, `X-Ratelimit-*` headers, exempt paths, block
//! intervals, role quotas on logins, audit entries for refusals, and rules that outlive a
//! restart.

use serde_json::{Value, json};

use crate::common::{Server, ok, tempdir};

async fn put(s: &Server, root: &str, path: &str, body: Value) -> (u16, Value) {
    s.call("POST", path, Some(root), Some(body)).await
}

/// GET `path`: (status, headers, body).
async fn get(s: &Server, token: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = s
        .http()
        .get(format!("{}/v1/{path}", s.addr))
        .header("X-Vault-Token", token)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().expect("ascii").to_owned())
}

#[tokio::test]
async fn rate_limit_quotas_are_written_read_listed_and_checked_as_in_vault() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, _) =
        put(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}}))
            .await;
    assert_eq!(code, 204);

    let (code, b) = s.call("LIST", "sys/quotas/rate-limit", Some(&root), None).await;
    assert_eq!((code, b), (404, json!({"errors": []})));
    let (code, _) = s.call("GET", "sys/quotas/rate-limit/nope", Some(&root), None).await;
    assert_eq!(code, 404);

    for (body, want) in [
        (json!({"rate": 0}), "'rate' is invalid"),
        (json!({}), "'rate' is invalid"),
        (json!({"rate": 1, "path": "nomount/"}), "invalid mount path \"nomount/\""),
        (
            json!({"rate": 2, "path": "secret/", "role": "x"}),
            "Mount path \"secret/\" is not a valid auth method and therefore unsuitable for use with role-based quotas",
        ),
        (
            json!({"rate": 2, "path": "auth/token", "role": "x"}),
            "Mount path \"auth/token/\" does not support use with role-based quotas",
        ),
        (
            json!({"rate": 2, "path": "secret/data/x", "role": "x"}),
            "Quotas cannot contain both a path suffix and a role. If a role is provided, path must be a valid auth mount with a concept of roles",
        ),
    ] {
        let (code, b) = put(&s, &root, "sys/quotas/rate-limit/a", body.clone()).await;
        assert_eq!((code, b), (400, json!({"errors": [want]})), "{body}");
    }

    let (code, b) = put(
        &s,
        &root,
        "sys/quotas/rate-limit/a",
        json!({"rate": 2, "interval": "1m", "path": "secret/"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) =
        put(&s, &root, "sys/quotas/rate-limit/b", json!({"rate": 2, "path": "secret"})).await;
    assert_eq!(
        (code, b),
        (
            400,
            json!({"errors": ["quota rule with similar properties exists under the name \"a\""]})
        )
    );
    let (code, b) = s.call("GET", "sys/quotas/rate-limit/a", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        b["data"],
        json!({"block_interval": 0, "inheritable": false, "interval": 60, "name": "a",
               "path": "secret/", "rate": 2, "role": "", "type": "rate-limit"})
    );
    let (code, b) = s.call("LIST", "sys/quotas/rate-limit", Some(&root), None).await;
    assert_eq!((code, b["data"]["keys"].clone()), (200, json!(["a"])));

    // Vault's defaults until the configuration is written.
    let (_, b) = s.call("GET", "sys/quotas/config", Some(&root), None).await;
    assert_eq!(b["data"]["enable_rate_limit_response_headers"], false);
    assert!(
        b["data"]["rate_limit_exempt_paths"]
            .as_array()
            .expect("paths")
            .contains(&json!("sys/health"))
    );

    let (code, _) = s.call("DELETE", "sys/quotas/rate-limit/zzz", Some(&root), None).await;
    assert_eq!(code, 204);

    // The CLI writes and reads them as any path.
    ok(s.cli(Some(&root), &["write", "sys/quotas/rate-limit/cli", "rate=5", "path=sys/"]));
    let out = ok(s.cli(Some(&root), &["read", "-format=json", "sys/quotas/rate-limit/cli"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["data"]["path"], "sys/");
    ok(s.cli(Some(&root), &["delete", "sys/quotas/rate-limit/cli"]));
}

#[tokio::test]
async fn requests_over_a_quota_get_429_with_vaults_text_and_headers_and_the_rule_survives_a_restart()
 {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    for (path, body) in [
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        ("sys/mounts/other", json!({"type": "kv", "options": {"version": "2"}})),
        ("sys/quotas/rate-limit/kv", json!({"rate": 2, "interval": "1m", "path": "secret/"})),
        ("sys/quotas/config", json!({"enable_rate_limit_response_headers": true})),
    ] {
        let (code, b) = put(&s, &root, path, body).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    let (code, h, _) = get(&s, &root, "secret/data/x").await;
    assert_eq!(code, 404);
    assert_eq!(header(&h, "x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(header(&h, "x-ratelimit-remaining").as_deref(), Some("1"));
    let reset: u64 = header(&h, "x-ratelimit-reset").expect("reset").parse().expect("n");
    assert!((58..=60).contains(&reset), "{reset}");
    let (code, _, _) = get(&s, &root, "secret/data/x").await;
    assert_eq!(code, 404);
    let (code, h, b) = get(&s, &root, "secret/data/x").await;
    assert_eq!(code, 429);
    assert_eq!(b, json!({"errors": ["request path \"secret/data/x\": rate limit quota exceeded"]}));
    assert!(header(&h, "retry-after").is_some());
    assert_eq!(header(&h, "x-ratelimit-remaining").as_deref(), Some("0"));
    // Another mount is not covered, and answers without the headers.
    let (code, h, _) = get(&s, &root, "other/data/x").await;
    assert_eq!(code, 404);
    assert!(header(&h, "x-ratelimit-limit").is_none());

    // The violation is counted in the metrics.
    let text = s
        .http()
        .get(format!("{}/v1/sys/metrics?format=prometheus", s.addr))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(text.contains("vault_quota_rate_limit_violation{name=\"kv\"} 1\n"), "{text}");

    // Rules and configuration are stored: after a restart the budget is new, the rule is not.
    s.restart();
    s.unseal(&keys).await;
    for _ in 0..2 {
        let (code, _, _) = get(&s, &root, "secret/data/x").await;
        assert_eq!(code, 404);
    }
    let (code, h, _) = get(&s, &root, "secret/data/x").await;
    assert_eq!(code, 429);
    assert_eq!(header(&h, "x-ratelimit-limit").as_deref(), Some("2"));

    // Without headers configured, a refusal carries none.
    let (code, _) = put(&s, &root, "sys/quotas/config", json!({})).await;
    assert_eq!(code, 204);
    let (code, h, _) = get(&s, &root, "secret/data/x").await;
    assert_eq!(code, 429);
    assert!(header(&h, "x-ratelimit-limit").is_none() && header(&h, "retry-after").is_none());
    let (_, b) = s.call("GET", "sys/quotas/config", Some(&root), None).await;
    assert_eq!(b["data"]["rate_limit_exempt_paths"], json!([]));

    let (code, _) = s.call("DELETE", "sys/quotas/rate-limit/kv", Some(&root), None).await;
    assert_eq!(code, 204);
    let (code, _, _) = get(&s, &root, "secret/data/x").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_global_quota_spares_exempt_paths_blocks_for_block_interval_and_is_audited() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let log = dir.path().join("audit.log");
    for (path, body) in [
        (
            "sys/audit/file",
            json!({"type": "file", "options": {"file_path": log.display().to_string()}}),
        ),
        (
            "sys/quotas/config",
            json!({"enable_rate_limit_audit_logging": true,
                   "rate_limit_exempt_paths": ["sys/health", "sys/quotas/*"]}),
        ),
        ("sys/quotas/rate-limit/global", json!({"rate": 1, "interval": 1, "block_interval": "1h"})),
    ] {
        let (code, b) = put(&s, &root, path, body).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    let (code, b) = s.call("GET", "sys/quotas/rate-limit/global", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(b["data"]["inheritable"], true, "a global quota is inheritable, as in Vault");
    assert_eq!(b["data"]["block_interval"], 3600);
    let (code, _, _) = get(&s, &root, "auth/token/lookup-self").await;
    assert_eq!(code, 200);
    let (code, _, _) = get(&s, &root, "auth/token/lookup-self").await;
    assert_eq!(code, 429);
    // Blocked past the 1 s window.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (code, _, _) = get(&s, &root, "auth/token/lookup-self").await;
    assert_eq!(code, 429);
    // Exempt paths are not covered.
    for _ in 0..3 {
        let (code, _, _) = get(&s, &root, "sys/health").await;
        assert_eq!(code, 200);
        let (code, _, _) = get(&s, &root, "sys/quotas/config").await;
        assert_eq!(code, 200);
    }
    let text = std::fs::read_to_string(&log).expect("audit log");
    let refused: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|e| e["error"].as_str().is_some_and(|m| m.contains("rate limit quota exceeded")))
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    assert_eq!(refused[0]["request"]["path"], "auth/token/lookup-self");
    assert!(!text.contains(&root), "the token is never in the audit log in clear");
    let (code, _) = s.call("DELETE", "sys/quotas/rate-limit/global", Some(&root), None).await;
    assert_eq!(code, 204);
}

#[tokio::test]
async fn a_role_quota_limits_that_roles_logins_only() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, b) = put(&s, &root, "sys/auth/jwt", json!({"type": "jwt"})).await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = put(
        &s,
        &root,
        "sys/quotas/rate-limit/ci",
        json!({"rate": 1, "interval": "1h", "path": "auth/jwt", "role": "ci"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let login = |role: &'static str| {
        let s = &s;
        async move {
            s.call("POST", "auth/jwt/login", None, Some(json!({"role": role, "jwt": "x.y.z"})))
                .await
        }
    };
    let (code, _) = login("ci").await;
    assert_ne!(code, 429);
    let (code, b) = login("ci").await;
    assert_eq!(code, 429, "{b}");
    assert_eq!(b["errors"][0], "request path \"auth/jwt/login\": rate limit quota exceeded");
    let (code, _) = login("other").await;
    assert_ne!(code, 429, "another role is not covered");
}

/// As OpenBao: disabling a secrets engine or an auth method deletes the quotas on it (on the
/// mount, below it, or on a role), for good; a new mount at the same path starts with none.
#[tokio::test]
async fn quotas_on_a_disabled_mount_are_deleted_with_it() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    for (path, body) in [
        ("sys/mounts/gone", json!({"type": "kv"})),
        ("sys/mounts/kept", json!({"type": "kv"})),
        ("sys/auth/up", json!({"type": "userpass"})),
        ("sys/quotas/rate-limit/on-gone", json!({"path": "gone/", "rate": 1, "interval": "1h"})),
        ("sys/quotas/rate-limit/below-gone", json!({"path": "gone/x", "rate": 1})),
        ("sys/quotas/rate-limit/on-up", json!({"path": "auth/up/", "rate": 1})),
        ("sys/quotas/rate-limit/on-kept", json!({"path": "kept/", "rate": 1})),
    ] {
        let (code, b) = put(&s, &root, path, body).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    assert_eq!(s.call("DELETE", "sys/mounts/gone", Some(&root), None).await.0, 204);
    assert_eq!(s.call("DELETE", "sys/auth/up", Some(&root), None).await.0, 204);
    for restarted in [false, true] {
        if restarted {
            s.restart();
            s.unseal(&keys).await;
        }
        let (_, l) = s.call("LIST", "sys/quotas/rate-limit", Some(&root), None).await;
        assert_eq!(l["data"]["keys"], json!(["on-kept"]), "restarted: {restarted}: {l}");
    }
    let (code, _) = put(&s, &root, "sys/mounts/gone", json!({"type": "kv"})).await;
    assert_eq!(code, 204);
    for _ in 0..3 {
        assert_eq!(get(&s, &root, "gone/x").await.0, 404, "a new mount has no quota");
    }
}
