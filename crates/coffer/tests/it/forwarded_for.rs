//! Vault's `x_forwarded_for_*` listener options: the client address that token CIDR bindings,
//! audit `remote_address` and detection rules see is the `X-Forwarded-For` one only when the
//! TCP peer is an authorized proxy; hop skips, and the two reject options.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::audit::{enable_file_device, entries};
use crate::common::{Server, Storage, plain_config_with, tempdir};

async fn server(dir: &std::path::Path, listener: &str, detect: &str) -> (Server, String) {
    let config = format!("{}{detect}", plain_config_with(dir, Storage::Default, listener));
    let s = Server::start_with(dir, &config, "http");
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    (s, root)
}

/// A GET from local address `from`, with `xff` headers (each one header line).
async fn get(s: &Server, from: &str, path: &str, token: &str, xff: &[&str]) -> (u16, Value) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let mut rb = client.get(format!("{}/v1/{path}", s.addr)).header("X-Vault-Token", token);
    for v in xff {
        rb = rb.header("X-Forwarded-For", *v);
    }
    let r = rb.send().await.expect("send");
    let code = r.status().as_u16();
    let text = r.text().await.expect("body");
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The audit `remote_address` of the last request to `path`.
fn last_remote(log: &std::path::Path, path: &str) -> String {
    entries(log)
        .iter()
        .rev()
        .find(|e| e["type"] == "request" && e["request"]["path"] == path)
        .and_then(|e| e["request"]["remote_address"].as_str().map(str::to_owned))
        .expect("an audited request")
}

#[tokio::test]
async fn the_forwarded_address_counts_only_from_an_authorized_proxy() {
    let dir = tempdir();
    let (s, root) = server(
        dir.path(),
        "  x_forwarded_for_authorized_addrs = \"127.0.0.1/32, 10.255.0.0/16\"\n  x_forwarded_for_hop_skips = 1\n",
        "detect {\n rule \"moved\" {\n  type = \"token_cidr\"\n  ipv4_prefix = 24\n }\n}\n",
    )
    .await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    // A token bound to the clients' network (a token role's `token_bound_cidrs`), made over a
    // direct connection.
    let (st, b) = s
        .call(
            "POST",
            "auth/token/roles/clients",
            Some(&root),
            Some(json!({"allowed_policies": ["default"], "token_bound_cidrs": ["203.0.113.0/24"]})),
        )
        .await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = s
        .call(
            "POST",
            "auth/token/create/clients",
            Some(&root),
            Some(json!({"policies": ["default"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();

    // From the authorized proxy, one hop skipped: the client is the entry before the last.
    let chain = ["198.51.100.1, 203.0.113.7", "10.255.0.9"];
    let (st, b) = get(&s, "127.0.0.1", "auth/token/lookup-self", &token, &chain).await;
    assert_eq!(st, 200, "a bound token works from its network: {b}");
    assert_eq!(last_remote(&log, "auth/token/lookup-self"), "203.0.113.7");
    let (st, b) =
        get(&s, "127.0.0.1", "auth/token/lookup-self", &token, &["203.0.113.7, 10.0.0.1"]).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(last_remote(&log, "auth/token/lookup-self"), "203.0.113.7");
    let (st, _) =
        get(&s, "127.0.0.1", "auth/token/lookup-self", &token, &["192.0.2.5, 10.0.0.1"]).await;
    assert_eq!(st, 403, "outside the bound network");

    // A chain shorter than the hops to skip, or an entry that is no address: 400.
    let (st, b) = get(&s, "127.0.0.1", "sys/health", &token, &["203.0.113.7"]).await;
    assert_eq!(st, 400, "{b}");
    assert!(b["errors"][0].as_str().expect("error text").contains("hops to skip (1)"), "{b}");
    let (st, _) = get(&s, "127.0.0.1", "sys/health", &token, &["unknown, 10.0.0.1"]).await;
    assert_eq!(st, 400);

    // From a peer that is no authorized proxy the header is dropped: the peer is the client.
    let (st, _) =
        get(&s, "127.0.0.2", "auth/token/lookup-self", &token, &["203.0.113.7, 10.0.0.1"]).await;
    assert_eq!(st, 403, "127.0.0.2 is outside the token's network");
    assert_eq!(last_remote(&log, "auth/token/lookup-self"), "127.0.0.2");
    // Without the header, the peer.
    let (st, _) = get(&s, "127.0.0.1", "auth/token/lookup-self", &root, &[]).await;
    assert_eq!(st, 200);
    assert_eq!(last_remote(&log, "auth/token/lookup-self"), "127.0.0.1");

    // Detection sees the forwarded address: a token issued to one client network and used
    // from another, both through the proxy.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/auth/token/create", s.addr))
        .header("X-Vault-Token", &root)
        .header("X-Forwarded-For", "203.0.113.7, 10.0.0.1")
        .json(&json!({"policies": ["default"]}))
        .send()
        .await
        .expect("send");
    let b: Value = r.json().await.expect("json");
    let t3 = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let accessor = b["auth"]["accessor"].as_str().expect("accessor").to_owned();
    let (st, _) =
        get(&s, "127.0.0.1", "auth/token/lookup-self", &t3, &["198.51.100.20, 10.0.0.1"]).await;
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let alert = loop {
        let (_, b) = s.call("GET", "sys/detect/alerts", Some(&root), None).await;
        let found = b["data"]["alerts"].as_array().and_then(|a| {
            a.iter().find(|a| a["output_fields"]["coffer.accessor"] == accessor.as_str()).cloned()
        });
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "no token_cidr alert");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alert["output_fields"]["coffer.remote_address"], "198.51.100.20");
    assert_eq!(alert["output_fields"]["coffer.issued_network"], "203.0.113.0/24");
}

#[tokio::test]
async fn the_reject_options_refuse_what_they_name() {
    let dir = tempdir();
    // Not initialized: sys/health answers 501 to whatever gets past the listener.
    let config = plain_config_with(
        dir.path(),
        Storage::Default,
        "  x_forwarded_for_authorized_addrs = [\"127.0.0.2\"]\n  x_forwarded_for_reject_not_authorized = true\n  x_forwarded_for_reject_not_present = \"true\"\n",
    );
    let s = Server::start_with(dir.path(), &config, "http");
    let (st, b) = get(&s, "127.0.0.1", "sys/health", "", &["203.0.113.7"]).await;
    assert_eq!(st, 400, "{b}");
    assert!(
        b["errors"][0].as_str().expect("error text").contains("not authorized for x-forwarded-for")
    );
    let (st, b) = get(&s, "127.0.0.2", "sys/health", "", &[]).await;
    assert_eq!(st, 400, "{b}");
    assert!(
        b["errors"][0].as_str().expect("error text").contains("missing x-forwarded-for header")
    );
    let (st, b) = get(&s, "127.0.0.2", "sys/health", "", &["203.0.113.7"]).await;
    assert_eq!(st, 501, "{b}");

    // Bad options stop the server from starting, naming the option.
    let bad = tempdir();
    let config = plain_config_with(
        bad.path(),
        Storage::Default,
        "  x_forwarded_for_authorized_addrs = \"127.0.0.1\"\n  x_forwarded_for_hop_skips = -1\n",
    );
    let cfg = bad.path().join("bad.hcl");
    std::fs::write(&cfg, config).expect("write");
    let out = std::process::Command::new(crate::common::BIN)
        .args(["server", "-config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x_forwarded_for_hop_skips cannot be negative"), "{err}");
}
