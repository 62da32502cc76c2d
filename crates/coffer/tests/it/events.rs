//! Event notifications (Vault's `sys/events/subscribe`) against the real server: the message
//! shape byte for byte, every kv event type, glob patterns, ACL filtering per event, streams
//! closed when the token is revoked or the server sealed, writers never held up by a subscriber
//! that does not read, the coffer-api client over TLS with a client certificate, and the CLI.

use std::time::{Duration, Instant};

use coffer_api::events::EventMessage;
use coffer_api::{Client, ClientConfig};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::common::{Server, stdout, tempdir};

type Ws = WebSocketStream<TcpStream>;

/// A planted secret value, which no event may carry.
const CANARY: &str = "CANARY-events-7d1e";

async fn server_with_kv() -> (tempfile::TempDir, Server, String) {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    for (path, version) in [("secret", "2"), ("kv1", "1")] {
        let (code, b) = s
            .call(
                "POST",
                &format!("sys/mounts/{path}"),
                Some(&root),
                Some(json!({"type": "kv", "options": {"version": version}})),
            )
            .await;
        assert_eq!(code, 204, "{b}");
    }
    (dir, s, root)
}

/// A token holding `policy` (written as `name`).
async fn token_with(s: &Server, root: &str, name: &str, policy: &str) -> String {
    let (code, b) = s
        .call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(root),
            Some(json!({"policy": policy})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) =
        s.call("POST", "auth/token/create", Some(root), Some(json!({"policies": [name]}))).await;
    assert_eq!(code, 200, "{b}");
    b["auth"]["client_token"].as_str().expect("token").to_owned()
}

/// coffer-api's client for the plain-HTTP server `s`, with `token`.
fn api_client(s: &Server, token: &str) -> Client {
    Client::new(&ClientConfig { address: s.addr.clone(), ..ClientConfig::default() })
        .expect("client")
        .with_token(Some(token.to_owned()))
}

/// A WebSocket client of its own (not coffer-api's), to see the frames as sent.
async fn raw_subscribe(s: &Server, pattern: &str, token: &str) -> Ws {
    let host = s.addr.trim_start_matches("http://");
    let tcp = TcpStream::connect(host).await.expect("connect");
    let mut req = format!("ws://{host}/v1/sys/events/subscribe/{pattern}?json=true")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert("X-Vault-Token", token.parse().expect("header"));
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.expect("handshake");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The next text frame, within 5 s.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an event within 5 s")
            .expect("stream open")
            .expect("frame");
        match m {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    assert!(!text.contains(CANARY), "a secret value in an event: {text}");
    serde_json::from_str(&text).expect("JSON")
}

/// An object's keys, sorted (serde_json's map sorts them; the order on the wire is checked on
/// the text itself).
fn keys(v: &Value) -> Vec<&str> {
    v.as_object().expect("object").keys().map(String::as_str).collect()
}

/// Whether `text` has each of `parts` after the one before it.
fn in_order(text: &str, parts: &[&str]) -> bool {
    let mut at = 0;
    parts.iter().all(|p| match text[at..].find(p) {
        Some(i) => {
            at += i + p.len();
            true
        }
        None => false,
    })
}

async fn put(s: &Server, root: &str, path: &str, body: Value) {
    let (code, b) = s.call("POST", path, Some(root), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
}

#[tokio::test]
async fn a_kv2_write_reaches_a_subscriber_within_a_second_in_vaults_shape() {
    let (_dir, s, root) = server_with_kv().await;
    let mut ws = raw_subscribe(&s, "kv-v2/data-write", &root).await;
    let started = Instant::now();
    put(&s, &root, "secret/data/app", json!({"data": {"password": CANARY}})).await;
    let text = next_text(&mut ws).await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(text.ends_with("}\n"), "one JSON object and a newline, as Vault sends: {text:?}");
    assert!(!text.contains(CANARY), "no secret value in an event: {text}");
    let e: Value = serde_json::from_str(&text).expect("JSON");
    // Vault's keys, in Vault's order (its JSON encoder follows the struct).
    assert_eq!(keys(&e), ["data", "datacontentype", "id", "source", "specversion", "time", "type"]);
    let top = [
        "{\"id\":",
        ",\"source\":",
        ",\"specversion\":",
        ",\"type\":",
        ",\"data\":{\"event\":{\"id\":",
        "\"event_type\":",
        "\"plugin_info\":{\"mount_class\":",
        ",\"mount_accessor\":",
        ",\"mount_path\":",
        ",\"plugin\":",
        ",\"version\":",
        "}},\"datacontentype\":",
        ",\"time\":",
    ];
    assert!(in_order(&text, &top), "keys out of Vault's order: {text}");
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["type"], "*");
    assert_eq!(e["datacontentype"], "application/cloudevents");
    assert_eq!(e["source"], "vault://coffer");
    assert!(e["time"].as_str().expect("time").ends_with('Z'));
    assert_eq!(keys(&e["data"]), ["event", "event_type", "plugin_info"]);
    assert_eq!(keys(&e["data"]["event"]), ["id", "metadata"]);
    assert_eq!(e["data"]["event_type"], "kv-v2/data-write");
    assert_eq!(e["data"]["event"]["id"], e["id"]);
    assert_eq!(
        e["data"]["event"]["metadata"],
        json!({
            "current_version": "1",
            "data_path": "secret/data/app",
            "modified": "true",
            "oldest_version": "0",
            "operation": "data-write",
            "path": "secret/data/app",
        })
    );
    let p = &e["data"]["plugin_info"];
    assert_eq!(keys(p), ["mount_accessor", "mount_class", "mount_path", "plugin", "version"]);
    assert_eq!(
        (&p["mount_class"], &p["mount_path"], &p["plugin"]),
        (&json!("secret"), &json!("secret/"), &json!("kv"))
    );
    assert_eq!(p["version"], "2");
    let (_, mounts) = s.call("GET", "sys/mounts", Some(&root), None).await;
    assert_eq!(p["mount_accessor"], mounts["data"]["secret/"]["accessor"]);
    // And the client's type reads it.
    let m: EventMessage = serde_json::from_str(&text).expect("EventMessage");
    assert_eq!(m.data_path(), Some("secret/data/app"));
}

#[tokio::test]
async fn every_kv2_change_has_its_vault_event() {
    let (_dir, s, root) = server_with_kv().await;
    let mut ws = raw_subscribe(&s, "*", &root).await;
    let t = Some(root.as_str());
    put(&s, &root, "secret/data/k", json!({"data": {"a": CANARY}})).await;
    let (code, b) = s.call("PATCH", "secret/data/k", t, Some(json!({"data": {"b": CANARY}}))).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(s.call("DELETE", "secret/data/k", t, None).await.0, 204);
    put(&s, &root, "secret/undelete/k", json!({"versions": [2]})).await;
    put(&s, &root, "secret/delete/k", json!({"versions": [1, 2]})).await;
    put(&s, &root, "secret/destroy/k", json!({"versions": [1]})).await;
    put(&s, &root, "secret/metadata/k", json!({"max_versions": 5})).await;
    let (code, b) =
        s.call("PATCH", "secret/metadata/k", t, Some(json!({"custom_metadata": {"o": "x"}}))).await;
    assert_eq!(code, 204, "{b}");
    assert_eq!(s.call("DELETE", "secret/metadata/k", t, None).await.0, 204);
    put(&s, &root, "secret/config", json!({"max_versions": 7})).await;

    // (event type, path, data_path, extra metadata)
    let expected = [
        (
            "kv-v2/data-write",
            "secret/data/k",
            Some("secret/data/k"),
            json!({"current_version": "1"}),
        ),
        (
            "kv-v2/data-patch",
            "secret/data/k",
            Some("secret/data/k"),
            json!({"current_version": "2"}),
        ),
        ("kv-v2/data-delete", "secret/data/k", None, json!({"current_version": "2"})),
        (
            "kv-v2/undelete",
            "secret/undelete/k",
            Some("secret/data/k"),
            json!({"undeleted_versions": "[2]"}),
        ),
        ("kv-v2/delete", "secret/delete/k", None, json!({"deleted_versions": "[1,2]"})),
        ("kv-v2/destroy", "secret/destroy/k", None, json!({"destroyed_versions": "[1]"})),
        ("kv-v2/metadata-write", "secret/metadata/k", Some("secret/metadata/k"), json!({})),
        ("kv-v2/metadata-patch", "secret/metadata/k", Some("secret/metadata/k"), json!({})),
        ("kv-v2/metadata-delete", "secret/metadata/k", None, json!({})),
        ("kv-v2/config-write", "secret/config", Some("secret/config"), json!({})),
    ];
    for (event_type, path, data_path, extra) in expected {
        let e = next_json(&mut ws).await;
        let meta = &e["data"]["event"]["metadata"];
        assert_eq!(e["data"]["event_type"], event_type, "{e}");
        assert_eq!(meta["operation"], event_type.trim_start_matches("kv-v2/"), "{e}");
        assert_eq!(meta["path"], path, "{e}");
        assert_eq!(meta.get("data_path").and_then(Value::as_str), data_path, "{e}");
        assert_eq!(meta["modified"], "true");
        for (k, v) in extra.as_object().expect("object") {
            assert_eq!(&meta[k], v, "{event_type}: {e}");
        }
    }
}

#[tokio::test]
async fn kv1_writes_and_deletes_are_events_and_globs_select_types() {
    let (_dir, s, root) = server_with_kv().await;
    let mut v1 = raw_subscribe(&s, "kv-v1/*", &root).await;
    let mut data_only = raw_subscribe(&s, "kv-v2/data-*", &root).await;
    put(&s, &root, "secret/metadata/x", json!({"max_versions": 3})).await;
    put(&s, &root, "kv1/app", json!({"password": CANARY})).await;
    put(&s, &root, "secret/data/x", json!({"data": {"p": CANARY}})).await;
    assert_eq!(s.call("DELETE", "kv1/app", Some(&root), None).await.0, 204);

    let w = next_json(&mut v1).await;
    assert_eq!(w["data"]["event_type"], "kv-v1/write");
    assert_eq!(
        w["data"]["event"]["metadata"],
        json!({"data_path": "kv1/app", "modified": "true", "operation": "write", "path": "kv1/app"})
    );
    assert_eq!(w["data"]["plugin_info"]["mount_path"], "kv1/");
    assert_eq!(w["data"]["plugin_info"]["version"], "1");
    let d = next_json(&mut v1).await;
    assert_eq!(d["data"]["event_type"], "kv-v1/delete");
    assert_eq!(
        d["data"]["event"]["metadata"],
        json!({"modified": "true", "operation": "delete", "path": "kv1/app"})
    );
    // kv-v2/data-* saw the data write, not the metadata write before it.
    assert_eq!(next_json(&mut data_only).await["data"]["event_type"], "kv-v2/data-write");
}

#[tokio::test]
async fn a_subscriber_sees_only_events_on_paths_its_token_may_read() {
    let (_dir, s, root) = server_with_kv().await;
    let t = token_with(
        &s,
        &root,
        "a-reader",
        r#"path "sys/events/subscribe/*" { capabilities = ["read"] }
           path "secret/data/a/*" { capabilities = ["read"] }"#,
    )
    .await;
    let mut ws = raw_subscribe(&s, "*", &t).await;
    put(&s, &root, "secret/data/b", json!({"data": {"p": "1"}})).await;
    put(&s, &root, "secret/data/b/x", json!({"data": {"p": "1"}})).await;
    put(&s, &root, "secret/data/a/y", json!({"data": {"p": "1"}})).await;
    // Events arrive in order: the first one this token sees is the third write.
    let e = next_json(&mut ws).await;
    assert_eq!(e["data"]["event"]["metadata"]["path"], "secret/data/a/y");
    assert!(tokio::time::timeout(Duration::from_millis(300), ws.next()).await.is_err());

    // A token that may not read the subscribe path is refused the WebSocket itself.
    let other =
        token_with(&s, &root, "no-events", r#"path "secret/*" { capabilities = ["read"] }"#).await;
    let c = api_client(&s, &other);
    match c.subscribe_events("kv-v2/*").await {
        Err(coffer_api::Error::Api { status: 403, .. }) => {}
        other => panic!("expected 403, got {other:?}"),
    }
}

#[tokio::test]
async fn a_revoked_token_has_its_stream_closed() {
    let (_dir, s, root) = server_with_kv().await;
    let t = token_with(
        &s,
        &root,
        "reader",
        r#"path "sys/events/subscribe/*" { capabilities = ["read"] }
           path "secret/*" { capabilities = ["read"] }"#,
    )
    .await;
    let c = api_client(&s, &t);
    let mut stream = c.subscribe_events("kv*").await.expect("subscribe");
    put(&s, &root, "secret/data/one", json!({"data": {"p": "1"}})).await;
    let first = stream.next().await.expect("event").expect("open");
    assert_eq!(first.path(), Some("secret/data/one"));
    let (code, b) =
        s.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": t}))).await;
    assert_eq!(code, 204, "{b}");
    put(&s, &root, "secret/data/two", json!({"data": {"p": "2"}})).await;
    let closed =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("in time");
    match closed {
        Err(coffer_api::Error::EventStreamClosed { code: 1008, reason }) => {
            assert!(reason.contains("revoked"), "{reason}");
        }
        other => panic!("expected a 1008 close, got {other:?}"),
    }
}

#[tokio::test]
async fn sealing_closes_streams_with_going_away() {
    let (_dir, s, root) = server_with_kv().await;
    let c = api_client(&s, &root);
    let mut stream = c.subscribe_events("*").await.expect("subscribe");
    assert_eq!(s.call("PUT", "sys/seal", Some(&root), None).await.0, 204);
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("in time") {
        Err(coffer_api::Error::EventStreamClosed { code: 1001, .. }) => {}
        other => panic!("expected a 1001 close, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_hold_up_writes() {
    let (_dir, s, root) = server_with_kv().await;
    // Connected and subscribed, and never read from again.
    let _stalled = raw_subscribe(&s, "*", &root).await;
    let mut reader = raw_subscribe(&s, "kv-v2/data-write", &root).await;
    let n = 200;
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let started = Instant::now();
        put(&s, &root, &format!("secret/data/k{i}"), json!({"data": {"v": i.to_string()}})).await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(1), "a write took {slowest:?}");
    for i in 0..n {
        let e = next_json(&mut reader).await;
        assert_eq!(e["data"]["event"]["metadata"]["path"], format!("secret/data/k{i}"));
    }
}

#[tokio::test]
async fn the_api_client_subscribes_over_tls_with_a_client_certificate() {
    let dir = tempdir();
    let p = crate::tls::pki(dir.path());
    let extra = format!(
        "  tls_client_ca_file = \"{}\"\n  tls_require_and_verify_client_cert = true\n",
        p.ca.display()
    );
    let s =
        Server::start_with(dir.path(), &crate::tls::tls_config(dir.path(), &p, &extra), "https");
    let mut identity = std::fs::read(&p.client_cert).expect("cert");
    identity.extend(std::fs::read(&p.client_key).expect("key"));
    let cfg = ClientConfig {
        address: s.addr.clone(),
        ca_cert_pem: Some(std::fs::read(&p.ca).expect("ca")),
        client_identity_pem: Some(identity),
        timeout: None,
        tls_skip_verify: false,
    };
    let c = Client::new(&cfg).expect("client");
    let init = c
        .write("sys/init", &json!({"secret_shares": 1, "secret_threshold": 1}))
        .await
        .expect("init");
    let body = init.body.expect("body");
    let root = body["root_token"].as_str().expect("root").to_owned();
    let key = body["keys"][0].as_str().expect("key").to_owned();
    c.write("sys/unseal", &json!({"key": key})).await.expect("unseal");
    let c = c.with_token(Some(root));
    c.write("sys/mounts/secret", &json!({"type": "kv", "options": {"version": "2"}}))
        .await
        .expect("mount");

    let mut stream = c.subscribe_events("kv-v2/data-write").await.expect("subscribe over TLS");
    c.write("secret/data/tls", &json!({"data": {"p": CANARY}})).await.expect("write");
    let e = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("in time")
        .expect("event")
        .expect("open");
    assert_eq!(e.event_type(), "kv-v2/data-write");
    assert_eq!(e.data_path(), Some("secret/data/tls"));
    assert_eq!(e.metadata("current_version"), Some("1"));
    stream.close().await.expect("close");

    // Without the client certificate the TLS handshake itself fails.
    let no_cert = Client::new(&ClientConfig { client_identity_pem: None, ..cfg })
        .expect("client")
        .with_token(Some("x".into()));
    assert!(matches!(
        no_cert.subscribe_events("*").await,
        Err(coffer_api::Error::Unreachable { .. })
    ));
}

#[tokio::test]
async fn the_cli_prints_one_json_event_per_line_and_the_request_is_audited() {
    let (dir, s, root) = server_with_kv().await;
    let log = dir.path().join("audit.log");
    crate::audit::enable_file_device(&s, &root, &log).await;
    let child = std::process::Command::new(crate::common::BIN)
        .args(["events", "subscribe", "-timeout=4s", "kv-v2/data-write"])
        .env_clear()
        .env("COFFER_ADDR", &s.addr)
        .env("COFFER_TOKEN", &root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // The subscription is audited before the WebSocket opens: wait for its entry.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("sys/events/subscribe/") {
        assert!(Instant::now() < deadline, "the subscription was not audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    put(&s, &root, "secret/data/cli", json!({"data": {"p": CANARY}})).await;
    put(&s, &root, "secret/data/cli", json!({"data": {"p": CANARY}})).await;
    let out = child.wait_with_output().expect("wait");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains(CANARY));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, version) in lines.iter().zip(["1", "2"]) {
        let e: Value = serde_json::from_str(line).expect("a JSON object per line");
        assert_eq!(e["data"]["event"]["metadata"]["current_version"], version);
    }
}

#[tokio::test]
async fn long_or_wildcard_heavy_patterns_are_refused() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    for pattern in ["kv".to_owned() + &"x".repeat(300), "*a*b*c*d*e".to_owned()] {
        let (code, b) = s
            .call("GET", &format!("sys/events/subscribe/{pattern}?json=true"), Some(&root), None)
            .await;
        assert_eq!(code, 400, "{b}");
        assert!(b.to_string().contains("at most 256 bytes with at most 4 wildcards"), "{b}");
    }
    let (code, b) =
        s.call("GET", "sys/events/subscribe/kv*?json=maybe-hunter2", Some(&root), None).await;
    assert_eq!(code, 400, "{b}");
    assert!(!b.to_string().contains("hunter2"), "the value is not echoed: {b}");
}
