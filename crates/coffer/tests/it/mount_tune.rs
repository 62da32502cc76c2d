//! The tunables Vault has on `sys/mounts/:path/tune` and `sys/auth/:path/tune` beyond TTLs:
//! the audit's non-HMAC keys (which take effect in the audit log), the header lists (recorded
//! and shown), read back as Vault shows them; `coffer auth tune`.

use serde_json::{Value, json};

use crate::audit::{enable_file_device, entries};
use crate::common::{Server, ok, tempdir};

#[tokio::test]
async fn the_list_tunables_are_kept_shown_and_the_audit_keys_take_effect() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    s.call("POST", "sys/mounts/kv", Some(&root), Some(json!({"type": "kv"}))).await;
    let (code, b) = s
        .call(
            "POST",
            "sys/mounts/kv/tune",
            Some(&root),
            Some(json!({
                "audit_non_hmac_request_keys": "visible",
                "audit_non_hmac_response_keys": ["shown"],
                "passthrough_request_headers": ["X-Request-Thing"],
                "allowed_response_headers": "X-Response-Thing",
            })),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (_, t) = s.call("GET", "sys/mounts/kv/tune", Some(&root), None).await;
    assert_eq!(t["data"]["audit_non_hmac_request_keys"], json!(["visible"]));
    assert_eq!(t["data"]["audit_non_hmac_response_keys"], json!(["shown"]));
    assert_eq!(t["data"]["passthrough_request_headers"], json!(["X-Request-Thing"]));
    assert_eq!(t["data"]["allowed_response_headers"], json!(["X-Response-Thing"]));
    let (_, m) = s.call("GET", "sys/mounts/kv", Some(&root), None).await;
    assert_eq!(m["data"]["config"]["audit_non_hmac_request_keys"], json!(["visible"]), "{m}");

    let body = json!({"visible": "clear-1-request", "hidden": "secret-2-value", "shown": "clear-3-response"});
    assert_eq!(s.call("PUT", "kv/app", Some(&root), Some(body)).await.0, 204);
    assert_eq!(s.call("GET", "kv/app", Some(&root), None).await.0, 200);
    let all = entries(&log);
    let write = all
        .iter()
        .find(|e| {
            e["type"] == "request"
                && e["request"]["path"] == "kv/app"
                && e["request"]["operation"] != "read"
        })
        .expect("the write's request entry");
    assert_eq!(write["request"]["data"]["visible"], "clear-1-request");
    assert_ne!(write["request"]["data"]["hidden"], "secret-2-value");
    assert_ne!(
        write["request"]["data"]["shown"], "clear-3-response",
        "a response key in a request"
    );
    let read = all
        .iter()
        .find(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "kv/app"
                && e["request"]["operation"] == "read"
        })
        .expect("the read's response entry");
    assert_eq!(read["response"]["data"]["shown"], "clear-3-response", "{read}");
    assert_ne!(read["response"]["data"]["hidden"], "secret-2-value");
    assert_ne!(
        read["response"]["data"]["visible"], "clear-1-request",
        "a request key in a response"
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("secret-2-value"), "a value not named appears in clear");

    // An empty list clears a setting; other mounts are untouched.
    s.call(
        "POST",
        "sys/mounts/kv/tune",
        Some(&root),
        Some(json!({"audit_non_hmac_request_keys": []})),
    )
    .await;
    let (_, t) = s.call("GET", "sys/mounts/kv/tune", Some(&root), None).await;
    assert!(t["data"].get("audit_non_hmac_request_keys").is_none(), "{t}");
    assert_eq!(t["data"]["audit_non_hmac_response_keys"], json!(["shown"]));
    let (_, c) = s.call("GET", "sys/mounts/cubbyhole/tune", Some(&root), None).await;
    assert!(c["data"].get("audit_non_hmac_response_keys").is_none(), "{c}");
}

#[tokio::test]
async fn auth_methods_are_tuned_and_read_back_like_mounts() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (_, t) = s.call("GET", "sys/auth/token/tune", Some(&root), None).await;
    assert_eq!(t["data"]["token_type"], "default-service", "{t}");
    s.call("POST", "sys/auth/approle", Some(&root), Some(json!({"type": "approle"}))).await;
    let (code, b) = s
        .call(
            "POST",
            "sys/auth/approle/tune",
            Some(&root),
            Some(json!({"default_lease_ttl": "1h", "description": "ci", "audit_non_hmac_request_keys": "role_id"})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (_, t) = s.call("GET", "sys/auth/approle/tune", Some(&root), None).await;
    let d: &Value = &t["data"];
    assert_eq!(
        (d["default_lease_ttl"].clone(), d["description"].clone()),
        (json!(3600), json!("ci"))
    );
    assert_eq!(d["audit_non_hmac_request_keys"], json!(["role_id"]));
    // As OpenBao: every auth method's tune shows the token type.
    assert_eq!(d["token_type"], json!("default-service"), "{d}");

    let out = ok(s.cli(Some(&root), &["auth", "tune", "-max-lease-ttl=2h", "approle"]));
    assert!(out.contains("Success! Tuned the auth method at: approle/"), "{out}");
    let (_, t) = s.call("GET", "sys/auth/approle/tune", Some(&root), None).await;
    assert_eq!(t["data"]["max_lease_ttl"], 7200);
}

#[tokio::test]
async fn a_kv_mount_is_upgraded_to_version_2_in_place_and_never_downgraded() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/kv", Some(&root), Some(json!({"type": "kv"}))).await;
    // Keys whose names look like the version 2 layout are converted like any other.
    for (k, v) in [("a", "1"), ("dir/b", "2"), ("meta/a", "3"), ("config", "4"), ("ver/a/1", "5")] {
        let (code, b) = s.call("PUT", &format!("kv/{k}"), Some(&root), Some(json!({"v": v}))).await;
        assert_eq!(code, 204, "{k}: {b}");
    }
    let tune =
        |o: Value| s.call("POST", "sys/mounts/kv/tune", Some(&root), Some(json!({"options": o})));
    let (code, b) = tune(json!({"version": "3"})).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("invalid version provided: 3")));
    let (code, b) = tune(json!({"version": "2"})).await;
    assert_eq!(code, 200, "{b}");
    assert!(
        b["warnings"][0]
            .as_str()
            .expect("w")
            .starts_with("Upgrading mount from version 1 to version 2")
    );
    for (k, v) in [("a", "1"), ("dir/b", "2"), ("meta/a", "3"), ("config", "4"), ("ver/a/1", "5")] {
        let (code, b) = s.call("GET", &format!("kv/data/{k}"), Some(&root), None).await;
        assert_eq!((code, b["data"]["data"]["v"].as_str()), (200, Some(v)), "{k}: {b}");
        assert_eq!(b["data"]["metadata"]["version"], 1, "{k}: {b}");
    }
    let (code, b) =
        s.call("PUT", "kv/data/a", Some(&root), Some(json!({"data": {"v": "new"}}))).await;
    assert_eq!((code, b["data"]["version"].clone()), (200, json!(2)), "{b}");
    let (_, m) = s.call("GET", "kv/metadata/a", Some(&root), None).await;
    assert_eq!(m["data"]["current_version"], 2, "{m}");
    let (_, l) = s.call("LIST", "kv/metadata/", Some(&root), None).await;
    assert_eq!(l["data"]["keys"], json!(["a", "config", "dir/", "meta/", "ver/"]), "{l}");
    let (_, mounts) = s.call("GET", "sys/mounts/kv", Some(&root), None).await;
    assert_eq!(mounts["data"]["options"]["version"], "2");

    let (code, b) = tune(json!({"version": "1"})).await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (400, Some("cannot downgrade mount from version 2"))
    );
    let (code, _) = tune(json!({"version": "2"})).await;
    assert_eq!(code, 204, "the same version again changes nothing");
}

/// Writers that keep writing while their kv mount is upgraded: a write in flight when the
/// upgrade starts is finished before the data is converted, a write that arrives during it waits
/// and is then served by the version 2 engine. Every write the server acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_when_a_kv_mount_is_upgraded_under_load() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/kv", Some(&root), Some(json!({"type": "kv"}))).await;
    // Enough data that the conversion takes a while.
    for n in 0..300 {
        let (code, b) =
            s.call("PUT", &format!("kv/pre/{n}"), Some(&root), Some(json!({"v": n}))).await;
        assert_eq!(code, 204, "{b}");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (client, addr, root) = (s.http(), s.addr.clone(), root.clone());
        let (stop, written) = (stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            // (key, value) of every acknowledged write; after a version 1 write is refused the
            // writer goes on in version 2's layout.
            let mut acked = Vec::new();
            let mut v2 = false;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("w{w}/{n}");
                let (url, body) = if v2 {
                    (format!("{addr}/v1/kv/data/{key}"), json!({"data": {"v": n}}))
                } else {
                    (format!("{addr}/v1/kv/{key}"), json!({"v": n}))
                };
                let resp = client
                    .put(url)
                    .header("X-Vault-Token", &root)
                    .json(&body)
                    .send()
                    .await
                    .expect("send");
                let code = resp.status().as_u16();
                let text = resp.text().await.expect("body");
                assert!(code < 500, "{key}: {code} {text}");
                if (200..300).contains(&code) {
                    acked.push((key, n, v2));
                    written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    assert!(!v2, "a version 2 write refused: {code} {text}");
                    v2 = true;
                }
                n += 1;
            }
            acked
        }));
    }
    while written.load(std::sync::atomic::Ordering::Relaxed) < 60 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (code, b) = s
        .call("POST", "sys/mounts/kv/tune", Some(&root), Some(json!({"options": {"version": "2"}})))
        .await;
    assert_eq!(code, 200, "{b}");
    let after = written.load(std::sync::atomic::Ordering::Relaxed);
    while written.load(std::sync::atomic::Ordering::Relaxed) < after + 60 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut before_upgrade = 0;
    let mut after_upgrade = 0;
    for writer in writers {
        for (key, n, v2) in writer.await.expect("writer") {
            if v2 {
                after_upgrade += 1
            } else {
                before_upgrade += 1
            }
            let (code, b) = s.call("GET", &format!("kv/data/{key}"), Some(&root), None).await;
            assert_eq!((code, b["data"]["data"]["v"].as_u64()), (200, Some(n)), "{key}: {b}");
        }
    }
    assert!(before_upgrade >= 60 && after_upgrade >= 60, "{before_upgrade} {after_upgrade}");
    for n in 0..300 {
        let (code, b) = s.call("GET", &format!("kv/data/pre/{n}"), Some(&root), None).await;
        assert_eq!((code, b["data"]["data"]["v"].as_u64()), (200, Some(n)), "pre/{n}: {b}");
    }
}
