//! `sys/host-info`, `sys/internal/counters/*` and `sys/config/state/sanitized` in Vault's shapes,
//! through HTTP and the CLI; none of them shows a token, key or storage secret.

use serde_json::{Value, json};

use crate::common::{Server, ok, tempdir};

#[tokio::test]
async fn host_info_counters_and_the_sanitized_config_answer_in_vaults_shapes() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let config = std::fs::read_to_string(&s.config).expect("config file");

    for path in ["sys/host-info", "sys/config/state/sanitized", "sys/internal/counters/tokens"] {
        let (code, _) = s.call("GET", path, None, None).await;
        assert_eq!(code, 403, "{path} needs a token");
    }

    let (code, b) = s.call("GET", "sys/host-info", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let d = &b["data"];
    for k in ["cpu", "cpu_times", "disk"] {
        assert!(d[k].as_array().is_some_and(|a| !a.is_empty()), "{k}: {d}");
    }
    assert!(d["cpu"][0]["modelName"].is_string() && d["cpu"][0]["cores"].is_number());
    assert!(d["cpu_times"][0]["cpu"].as_str().expect("cpu").starts_with("cpu"));
    assert!(d["disk"].as_array().expect("disk").iter().any(|x| x["path"] == "/"));
    assert!(d["host"]["hostname"].is_string() && d["host"]["bootTime"].as_u64().expect("boot") > 0);
    assert_eq!(d["host"]["os"], "linux");
    let mem = &d["memory"];
    assert!(mem["total"].as_u64().expect("total") >= mem["available"].as_u64().expect("avail"));
    assert!(mem["usedPercent"].is_number());
    assert!(d["timestamp"].as_str().expect("ts").ends_with('Z'));

    let count = |b: &Value| b["data"]["counters"]["service_tokens"]["total"].as_u64().expect("n");
    let (code, before) = s.call("GET", "sys/internal/counters/tokens", Some(&root), None).await;
    assert_eq!(code, 200, "{before}");
    let (_, t) = s.call("POST", "auth/token/create", Some(&root), Some(json!({}))).await;
    let child = t["auth"]["client_token"].as_str().expect("token").to_owned();
    let (_, after) = s.call("GET", "sys/internal/counters/tokens", Some(&root), None).await;
    assert_eq!(count(&after), count(&before) + 1);
    let (code, b) = s.call("GET", "sys/internal/counters/entities", Some(&root), None).await;
    assert_eq!((code, b["data"].clone()), (200, json!({"counters": {"entities": {"total": 0}}})));
    let (code, b) = s.call("GET", "sys/internal/counters/requests", Some(&root), None).await;
    assert_eq!(
        (code, b),
        (404, json!({"errors": ["The functionality has been removed on this path"]}))
    );
    let (code, _) = s.call("GET", "sys/internal/counters/activity", Some(&root), None).await;
    assert_eq!(code, 404);

    let (code, b) = s.call("GET", "sys/config/state/sanitized", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let c = &b["data"];
    assert_eq!(c["default_lease_ttl"], json!(768u64 * 3600 * 1_000_000_000));
    assert_eq!(c["listeners"][0]["type"], "tcp");
    assert_eq!(c["listeners"][0]["config"]["tls_disable"], true);
    assert!(
        c["listeners"][0]["config"]["address"].as_str().expect("addr").starts_with("127.0.0.1:")
    );
    assert_eq!(c["seals"], json!([{"disabled": false, "type": "shamir"}]));
    let storage = c["storage"].as_object().expect("storage");
    let mut keys: Vec<&str> = storage.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["cluster_addr", "disable_clustering", "redirect_addr", "type"]);
    assert_eq!(c["telemetry"]["prometheus_retention_time"], json!(86_400u64 * 1_000_000_000));
    assert_eq!(c["log_level"], "trace");

    // No secret anywhere: tokens, and the storage block's options (a SQLite path, or a
    // PostgreSQL connection URL with its password).
    let storage_values: Vec<String> = config
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim().trim_matches('"').to_owned()))
        .filter(|v| v.contains('/') || v.contains('@'))
        .collect();
    assert!(!storage_values.is_empty(), "{config}");
    for body in [
        s.call("GET", "sys/config/state/sanitized", Some(&root), None).await.1.to_string(),
        s.call("GET", "sys/host-info", Some(&root), None).await.1.to_string(),
    ] {
        for secret in [&root, &child] {
            assert!(!body.contains(secret.as_str()), "a token in {body}");
        }
        for v in &storage_values {
            assert!(!body.contains(v.as_str()), "storage option {v} in {body}");
        }
    }

    // Through the CLI, as any path.
    let out = ok(s.cli(Some(&root), &["read", "-format=json", "sys/config/state/sanitized"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["data"]["storage"]["type"], c["storage"]["type"]);
    let out = ok(s.cli(Some(&root), &["read", "-format=json", "sys/host-info"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert!(v["data"]["memory"]["total"].is_number());
}

/// As OpenBao: a node without HA answers sys/ha-status with itself as the active node, in
/// `data` and at the top level; it still needs a token.
#[tokio::test]
async fn a_node_without_ha_lists_itself_in_ha_status() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    assert_eq!(s.call("GET", "sys/ha-status", None, None).await.0, 403);
    let (code, b) = s.call("GET", "sys/ha-status", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let me = json!({
        "hostname": hostname.trim(),
        "api_address": s.addr,
        "cluster_address": "",
        "active_node": true,
        "last_echo": null,
        "version": env!("CARGO_PKG_VERSION"),
    });
    assert_eq!(b["data"]["nodes"], json!([me]), "{b}");
    assert_eq!(b["nodes"], b["data"]["nodes"], "{b}");
}
