//! Detection rules over the audit stream (docs/detect.md), on the real server: a honeytoken read
//! revokes the reader's token within a second, failed-login bursts, a token used from another
//! address, one token reading many paths, a token from a pod of another image than its role's
//! usual one (image-bound Kubernetes logins), a burst over an identity's learned rate, the webhook
//! in Falco's shape (retried after a 500), and a full queue that is counted and alerted while
//! every request is still answered.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Server, default_config, ok, stdout, tempdir};

/// A server with `detect` as its detect block, initialized, unsealed, with kv v2 at `secret/`
/// and a file audit device at `file/`: (server, root token).
async fn ready(dir: &std::path::Path, detect: &str) -> (Server, String) {
    let (s, _, root) = ready_keys(dir, detect).await;
    (s, root)
}

async fn ready_keys(dir: &std::path::Path, detect: &str) -> (Server, Vec<String>, String) {
    let config = format!("{}detect {{\n{detect}\n}}\n", default_config(dir));
    let s = Server::start_with(dir, &config, "http");
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    let (st, b) = s
        .call(
            "POST",
            "sys/mounts/secret",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
    assert!(st == 200 || st == 204, "mount: {b}");
    let log = dir.join("audit.log");
    let (st, b) = s
        .call(
            "PUT",
            "sys/audit/file",
            Some(&root),
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(st, 204, "audit: {b}");
    (s, keys, root)
}

/// A token that may read and list everything under secret/.
async fn reader(s: &Server, root: &str) -> (String, String) {
    let policy = "path \"secret/*\" { capabilities = [\"read\", \"list\"] }";
    let (st, b) =
        s.call("PUT", "sys/policies/acl/reader", Some(root), Some(json!({"policy": policy}))).await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = s
        .call(
            "POST",
            "auth/token/create",
            Some(root),
            Some(json!({"policies": ["reader"], "ttl": "1h"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    (
        b["auth"]["client_token"].as_str().expect("token").to_owned(),
        b["auth"]["accessor"].as_str().expect("accessor").to_owned(),
    )
}

async fn alerts(s: &Server, root: &str) -> Vec<Value> {
    let (st, b) = s.call("GET", "sys/detect/alerts?limit=1000", Some(root), None).await;
    assert_eq!(st, 200, "{b}");
    b["data"]["alerts"].as_array().cloned().unwrap_or_default()
}

async fn stats(s: &Server, root: &str) -> Value {
    let (st, b) = s.call("GET", "sys/detect/status", Some(root), None).await;
    assert_eq!(st, 200, "{b}");
    b["data"]["stats"].clone()
}

/// Waits (up to 10 s) for an alert of `rule`.
async fn alert_of(s: &Server, root: &str, rule: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = alerts(s, root).await.into_iter().find(|a| a["rule"] == rule) {
            return a;
        }
        assert!(Instant::now() < deadline, "no {rule} alert; server log:\n{}", s.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_honeytoken_read_revokes_the_reading_token_within_a_second() {
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "rule \"honey\" {\n type = \"honeytoken\"\n paths = [\"secret/data/honey/*\"]\n actions = [\"audit\", \"revoke_token\"]\n}",
    )
    .await;
    let (st, b) = s
        .call(
            "POST",
            "secret/data/honey/db",
            Some(&root),
            Some(json!({"data": {"password": "honey-value-s3cr3t"}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (token, accessor) = reader(&s, &root).await;
    let (st, _) = s.call("GET", "secret/data/other", Some(&token), None).await;
    assert_eq!(st, 404, "a read elsewhere is no alert and the token still works");

    let started = Instant::now();
    let (st, b) = s.call("GET", "secret/data/honey/db", Some(&token), None).await;
    assert_eq!(st, 200, "{b}");
    let revoked_after = loop {
        let (st, _) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
        if st == 403 {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the token was not revoked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!("honeytoken read to token refused: {revoked_after:?}");
    assert!(revoked_after < Duration::from_secs(1), "revoked after {revoked_after:?}");

    let a = alert_of(&s, &root, "honey").await;
    assert_eq!(a["priority"], "Critical");
    assert_eq!(a["output_fields"]["coffer.accessor"], accessor.as_str());
    assert_eq!(a["output_fields"]["coffer.path"], "secret/data/honey/db");
    assert!(a["actions"].as_array().expect("actions").iter().all(|x| x["done"] == true), "{a}");
    let text = a.to_string();
    assert!(!text.contains("honey-value-s3cr3t") && !text.contains(&token), "{text}");

    // The alert is in the audit log's hash chain, its accessor HMAC'd as the device does.
    let log = std::fs::read_to_string(dir.path().join("audit.log")).expect("log");
    let entry = log.lines().find(|l| l.contains("\"type\":\"alert\"")).expect("an alert entry");
    assert!(!entry.contains(&accessor) && entry.contains("hmac-sha256:"), "{entry}");
    assert!(!log.contains("honey-value-s3cr3t"));
    ok(s.cli(None, &["audit", "verify", &dir.path().join("audit.log").display().to_string()]));
}

#[tokio::test]
async fn a_burst_of_failed_logins_alerts_per_source_and_per_user() {
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "rule \"logins\" {\n type = \"login_failures\"\n threshold = 5\n window = \"60s\"\n}",
    )
    .await;
    let (st, b) =
        s.call("POST", "sys/auth/userpass", Some(&root), Some(json!({"type": "userpass"}))).await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = s
        .call(
            "POST",
            "auth/userpass/users/bob",
            Some(&root),
            Some(json!({"password": "right-password"})),
        )
        .await;
    assert!(st == 200 || st == 204, "{b}");
    for _ in 0..4 {
        let (st, _) = s
            .call("POST", "auth/userpass/login/bob", None, Some(json!({"password": "wrong"})))
            .await;
        assert_eq!(st, 400);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(&s, &root).await.is_empty(), "four failures are under the threshold");
    let (st, _) =
        s.call("POST", "auth/userpass/login/bob", None, Some(json!({"password": "wrong"}))).await;
    assert_eq!(st, 400);
    alert_of(&s, &root, "logins").await;
    let out = stdout(&s.cli(Some(&root), &["detect", "alerts", "-format=json"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    let found: Vec<&Value> = v["alerts"].as_array().expect("alerts").iter().collect();
    let by: Vec<&Value> = found.iter().map(|a| &a["output_fields"]).collect();
    assert!(by.iter().any(|f| f["coffer.login_source"] == "127.0.0.1"), "{out}");
    assert!(by.iter().any(|f| f["coffer.login_role"] == "auth/userpass:bob"), "{out}");
    assert!(!out.contains("wrong") && !out.contains("right-password"), "{out}");
    let table = stdout(&s.cli(Some(&root), &["detect", "alerts"]));
    assert!(table.contains("logins") && table.contains("dropped 0"), "{table}");
}

#[tokio::test]
async fn a_token_used_from_outside_the_network_it_was_issued_to_alerts() {
    let dir = tempdir();
    let (s, root) =
        ready(dir.path(), "rule \"moved\" {\n type = \"token_cidr\"\n ipv4_prefix = 32\n}").await;
    let (token, accessor) = reader(&s, &root).await;
    let (st, _) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(&s, &root).await.is_empty(), "used where it was issued");
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let r = other
        .get(format!("{}/v1/auth/token/lookup-self", s.addr))
        .header("X-Vault-Token", &token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "the rule alerts; it does not refuse");
    let a = alert_of(&s, &root, "moved").await;
    assert_eq!(a["output_fields"]["coffer.accessor"], accessor.as_str());
    assert_eq!(a["output_fields"]["coffer.remote_address"], "127.0.0.2");
    assert_eq!(a["output_fields"]["coffer.issued_network"], "127.0.0.1/32");
}

#[tokio::test]
async fn one_token_reading_many_distinct_paths_alerts() {
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "rule \"crawl\" {\n type = \"many_paths\"\n threshold = 6\n window = \"60s\"\n}",
    )
    .await;
    let (token, _) = reader(&s, &root).await;
    for i in 0..5 {
        s.call("GET", &format!("secret/data/app{i}"), Some(&token), None).await;
        s.call("GET", "secret/data/app0", Some(&token), None).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(&s, &root).await.is_empty(), "five distinct paths, read twice over");
    s.call("GET", "secret/data/app5", Some(&token), None).await;
    let a = alert_of(&s, &root, "crawl").await;
    assert_eq!(a["output_fields"]["coffer.count"], 6);
}

/// A webhook receiver: answers 500 to the first post and 200 to the rest; keeps the bodies.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/falco", l.local_addr().expect("addr"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut c, _)) = l.accept().await {
            n += 1;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let k = c.read(&mut chunk).await.unwrap_or(0);
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            if let Some(b) = body {
                seen.lock().expect("lock").push(serde_json::from_slice(&b).unwrap_or(Value::Null));
            }
            let status = if n == 1 { "500 Internal Server Error" } else { "200 OK" };
            let _ = c
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
        }
    });
    (url, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_falcos_output_format_and_is_retried_after_a_500() {
    let (url, bodies) = receiver().await;
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        &format!(
            "webhook_url = \"{url}\"\nrule \"honey\" {{\n type = \"honeytoken\"\n paths = [\"secret/data/honey\"]\n actions = [\"audit\", \"webhook\"]\n tags = [\"T1552\"]\n}}"
        ),
    )
    .await;
    let (st, _) = s
        .call("POST", "secret/data/honey", Some(&root), Some(json!({"data": {"k": "v-secret"}})))
        .await;
    assert_eq!(st, 200);
    let (token, accessor) = reader(&s, &root).await;
    let (st, _) = s.call("GET", "secret/data/honey", Some(&token), None).await;
    assert_eq!(st, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bodies.lock().expect("lock").len() < 2 {
        assert!(Instant::now() < deadline, "no retry; log:\n{}", s.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = bodies.lock().expect("lock").clone();
    assert_eq!(got[0], got[1], "the same alert, sent again");
    let b = &got[1];
    for k in [
        "uuid",
        "output",
        "priority",
        "rule",
        "time",
        "output_fields",
        "source",
        "tags",
        "hostname",
    ] {
        assert!(b.get(k).is_some(), "{k} missing: {b}");
    }
    assert_eq!(b["rule"], "honey");
    assert_eq!(b["priority"], "Critical");
    assert_eq!(b["source"], "coffer");
    assert_eq!(b["tags"], json!(["coffer", "honeytoken", "T1552"]));
    assert_eq!(b["output_fields"]["coffer.accessor"], accessor.as_str());
    assert!(b["output"].as_str().expect("output").contains("secret/data/honey"));
    let text = b.to_string();
    assert!(!text.contains("v-secret") && !text.contains(&token), "{text}");
    let st = stats(&s, &root).await;
    assert_eq!(
        (st["webhook_sent"].as_u64(), st["webhook_retried"].as_u64()),
        (Some(1), Some(1)),
        "{st}"
    );
}

/// Without a webhook in the configuration the server builds no HTTP client at start; a rule
/// stored later with its own `webhook_url` still gets its alerts posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_rule_with_its_own_webhook_url_posts_when_the_config_names_none() {
    let (url, bodies) = receiver().await;
    let dir = tempdir();
    let (s, root) = ready(dir.path(), "").await;
    let rule = json!({
        "type": "honeytoken",
        "paths": ["secret/data/honey"],
        "actions": ["audit", "webhook"],
        "webhook_url": url,
    });
    let (st, b) = s.call("PUT", "sys/detect/rules/honey", Some(&root), Some(rule)).await;
    assert!(st == 200 || st == 204, "{st}: {b}");
    let (token, _) = reader(&s, &root).await;
    let (st, _) = s.call("GET", "secret/data/honey", Some(&token), None).await;
    assert_eq!(st, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while bodies.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "nothing posted; log:\n{}", s.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bodies.lock().expect("lock")[0]["rule"], "honey");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_counted_and_alerted_while_requests_are_answered() {
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "queue_size = 1\nrule \"crawl\" {\n type = \"many_paths\"\n threshold = 1000000\n}",
    )
    .await;
    let (token, _) = reader(&s, &root).await;
    let s = Arc::new(s);
    let mut answered = 0u64;
    // Concurrent requests outpace one detection task with room for a single observation.
    for round in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..64 {
            let (s, token) = (s.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                s.call("GET", &format!("secret/data/r{round}-{i}"), Some(&token), None).await.0
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), 404, "every request is answered");
            answered += 1;
        }
        if stats(&s, &root).await["dropped"].as_u64().unwrap_or(0) > 0 {
            break;
        }
    }
    let st = stats(&s, &root).await;
    assert!(st["dropped"].as_u64().unwrap_or(0) > 0, "no drop after {answered} requests: {st}");
    let a = alert_of(&s, &root, "coffer_detect_queue_full").await;
    assert!(a["output"].as_str().expect("output").contains("dropped and counted"), "{a}");
    // Nothing dropped silently: every observation offered was processed or counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = stats(&s, &root).await;
        let n = |k: &str| st[k].as_u64().expect(k);
        if n("queued") == 0 {
            assert_eq!(n("received"), n("processed") + n("dropped"), "{st}");
            assert!(n("queue_full_episodes") >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "the queue never drained: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, m) = s.call("GET", "sys/metrics", Some(&root), None).await;
    assert_eq!(st, 200);
    let counters = m["Counters"].as_array().expect("counters");
    let dropped = counters.iter().find(|c| c["Name"] == "coffer.detect.dropped").expect("metric");
    assert!(dropped["Count"].as_u64().unwrap_or(0) > 0, "{dropped}");
    let table = stdout(&s.cli(Some(&root), &["detect", "status"]));
    assert!(table.contains("dropped") && !table.contains("dropped 0 "), "{table}");
}

#[tokio::test]
async fn every_request_is_observed_exactly_once() {
    let dir = tempdir();
    let (s, root) =
        ready(dir.path(), "rule \"crawl\" {\n type = \"many_paths\"\n threshold = 1000000\n}")
            .await;
    let (token, _) = reader(&s, &root).await;
    let before = stats(&s, &root).await["received"].as_u64().expect("received");
    let n = 300u64;
    for i in 0..n {
        let path = if i % 3 == 0 { "sys/mounts".to_owned() } else { format!("secret/data/c{i}") };
        s.call("GET", &path, Some(&token), None).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    // A status read is observed after it answered: each one before the last is counted too.
    let mut status_reads = 1;
    loop {
        let st = stats(&s, &root).await;
        let g = |k: &str| st[k].as_u64().expect(k);
        if g("processed") + g("dropped") == g("received") {
            assert_eq!(g("received") - before, n + status_reads, "{st}");
            assert_eq!(g("dropped"), 0, "{st}");
            break;
        }
        status_reads += 1;
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rules_are_written_read_listed_and_deleted_through_the_api_and_the_cli() {
    let dir = tempdir();
    let (mut s, keys, root) =
        ready_keys(dir.path(), "rule \"from_config\" {\n type = \"many_paths\"\n}").await;
    let out = ok(s.cli(
        Some(&root),
        &[
            "detect",
            "rules",
            "write",
            "honey",
            "type=honeytoken",
            "paths=secret/data/honey/*",
            "actions=audit,revoke_token",
        ],
    ));
    assert!(out.contains("Success"), "{out}");
    let (st, b) = s.call("GET", "sys/detect/rules/honey", Some(&root), None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["type"], "honeytoken");
    assert_eq!(b["data"]["source"], "api");
    assert_eq!(b["data"]["operations"], json!(["read", "list"]), "defaults filled in");
    let list = ok(s.cli(Some(&root), &["detect", "rules", "list"]));
    assert!(
        list.contains("honey") && list.contains("from_config") && list.contains("config"),
        "{list}"
    );
    // A config rule is read-only here; a bad rule is a 400 naming the problem.
    let (st, b) = s.call("DELETE", "sys/detect/rules/from_config", Some(&root), None).await;
    assert_eq!(st, 400, "{b}");
    let (st, b) = s
        .call("PUT", "sys/detect/rules/bad", Some(&root), Some(json!({"type": "honeytoken"})))
        .await;
    assert_eq!(st, 400);
    assert!(b["errors"][0].as_str().expect("error").contains("paths is required"), "{b}");
    // Only sudo may change rules; a policy may read alerts.
    let (token, _) = reader(&s, &root).await;
    let (st, _) = s.call("GET", "sys/detect/rules/honey", Some(&token), None).await;
    assert_eq!(st, 403);
    // Stored in the barrier: still there after a restart.
    s.restart();
    s.unseal(&keys).await;
    let (st, b) = s.call("GET", "sys/detect/rules/honey", Some(&root), None).await;
    assert_eq!(st, 200, "{b}");
    ok(s.cli(Some(&root), &["detect", "rules", "delete", "honey"]));
    let (st, _) = s.call("GET", "sys/detect/rules/honey", Some(&root), None).await;
    assert_eq!(st, 404);
}

/// Logs in to AppRole role `role` (made with `policies` on first use): (token, accessor).
async fn approle_login(s: &Server, root: &str, role: &str) -> (String, String) {
    let (st, b) = s
        .call(
            "POST",
            &format!("auth/approle/role/{role}"),
            Some(root),
            Some(json!({"token_policies": ["reader"], "token_ttl": "1h"})),
        )
        .await;
    assert!(st == 200 || st == 204, "{b}");
    let (_, rid) =
        s.call("GET", &format!("auth/approle/role/{role}/role-id"), Some(root), None).await;
    let (_, sid) =
        s.call("POST", &format!("auth/approle/role/{role}/secret-id"), Some(root), None).await;
    let (st, b) = s
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": rid["data"]["role_id"], "secret_id": sid["data"]["secret_id"]})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    (
        b["auth"]["client_token"].as_str().expect("token").to_owned(),
        b["auth"]["accessor"].as_str().expect("accessor").to_owned(),
    )
}

#[tokio::test]
async fn revoke_role_revokes_every_token_of_the_readers_role_and_no_other() {
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "rule \"honey\" {\n type = \"honeytoken\"\n paths = [\"secret/data/honey\"]\n actions = [\"audit\", \"revoke_role\"]\n}",
    )
    .await;
    let (st, b) =
        s.call("POST", "sys/auth/approle", Some(&root), Some(json!({"type": "approle"}))).await;
    assert_eq!(st, 204, "{b}");
    let _ = reader(&s, &root).await;
    let (web1, _) = approle_login(&s, &root, "web").await;
    let (web2, _) = approle_login(&s, &root, "web").await;
    let (db, _) = approle_login(&s, &root, "db").await;
    let (st, _) = s.call("GET", "secret/data/honey", Some(&web1), None).await;
    assert_eq!(st, 404, "nothing stored there: still a read of the honeytoken path");
    let a = alert_of(&s, &root, "honey").await;
    let outcome = &a["actions"][0];
    assert_eq!(outcome["action"], "revoke_role", "{a}");
    assert_eq!(outcome["done"], true, "{a}");
    assert!(
        outcome["detail"]
            .as_str()
            .expect("detail")
            .starts_with("2 token(s) of auth/approle/login#web"),
        "{a}"
    );
    for (t, live) in [(&web1, false), (&web2, false), (&db, true)] {
        let (st, _) = s.call("GET", "auth/token/lookup-self", Some(t), None).await;
        assert_eq!(st == 200, live, "status {st}");
    }
}

const REPO: &str = "registry.local/team/web";
const USUAL: &str = "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const OTHER: &str = "sha256:b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

/// An image-bound Kubernetes login from a pod running `digest`: the token.
async fn k8s_image_login(
    s: &Server,
    cluster: &crate::kubernetes::Cluster,
    pod: &str,
    digest: &str,
) -> String {
    cluster.run_pod(
        "prod",
        pod,
        &format!("uid-{pod}"),
        "Running",
        &[("web", &format!("{REPO}@{digest}"))],
    );
    let jwt = cluster.projected_token("prod", "web", "coffer", pod, crate::jwt::now() + 600);
    let (st, b) = s
        .call("POST", "auth/kubernetes/login", None, Some(json!({"role": "web", "jwt": jwt})))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["auth"]["metadata"]["image_digest"], digest, "{b}");
    b["auth"]["client_token"].as_str().expect("token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_a_pod_of_another_image_than_its_roles_usual_one_alerts() {
    let cluster = crate::kubernetes::Cluster::start().await;
    cluster.service_account("prod", "web");
    cluster.service_account("kube-system", "coffer");
    cluster.delegator("kube-system", "coffer", true);
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "rule \"image\" {\n type = \"image_digest\"\n learn_for = \"0s\"\n min_observations = 4\n}",
    )
    .await;
    for (path, body) in [
        ("sys/auth/kubernetes", json!({"type": "kubernetes"})),
        (
            "auth/kubernetes/config",
            json!({"kubernetes_host": cluster.url, "kubernetes_ca_cert": cluster.ca_pem,
                "token_reviewer_jwt": cluster.legacy_token("kube-system", "coffer"),
                "disable_local_ca_jwt": true}),
        ),
        // Both digests are allowed by the role: the login itself is never refused.
        (
            "auth/kubernetes/role/web",
            json!({"bound_service_account_names": ["web"],
                "bound_service_account_namespaces": ["prod"], "audience": "coffer",
                "bound_image_digests": [USUAL, OTHER], "token_policies": ["default"]}),
        ),
    ] {
        let (st, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert!(st == 200 || st == 204, "{path}: {st} {b}");
    }
    // The role's usual image: two logins and a request each (four sightings) are learned.
    for i in 0..2 {
        let t = k8s_image_login(&s, &cluster, &format!("web-usual-{i}"), USUAL).await;
        assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&t), None).await.0, 200);
    }
    // Now judged: the usual digest again is no alert.
    let usual = k8s_image_login(&s, &cluster, "web-usual-2", USUAL).await;
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&usual), None).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alerts(&s, &root).await.is_empty(), "the usual image alerted");
    // A pod of the other bound digest: the role allows it, the rule has never seen it.
    let other = k8s_image_login(&s, &cluster, "web-other", OTHER).await;
    let (st, b) = s.call("GET", "auth/token/lookup-self", Some(&other), None).await;
    assert_eq!(st, 200, "{b}");
    let accessor = b["data"]["accessor"].as_str().expect("accessor").to_owned();
    let a = alert_of(&s, &root, "image").await;
    assert_eq!(a["priority"], "Error");
    assert_eq!(a["output_fields"]["coffer.image_digest"], OTHER);
    assert_eq!(a["output_fields"]["coffer.known_digests"], json!([USUAL]));
    assert!(a["output"].as_str().expect("output").contains(&accessor), "{a}");
    assert!(
        a["output"].as_str().expect("output").contains("of role auth/kubernetes/login#web"),
        "{a}"
    );
    // One alert for that token (its login and its request are one subject), none for `usual`.
    let all = alerts(&s, &root).await;
    assert_eq!(all.iter().filter(|a| a["rule"] == "image").count(), 1, "{all:#?}");
}

#[tokio::test]
async fn a_burst_far_over_an_identitys_learned_rate_alerts_and_its_usual_rate_does_not() {
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "rule \"rate\" {\n type = \"rate_baseline\"\n bucket = \"2s\"\n window = \"4s\"\n warmup = \"4s\"\n factor = 3\n min_requests = 15\n}",
    )
    .await;
    let (token, accessor) = reader(&s, &root).await;
    // About three requests a second, for eight seconds: the baseline (about 6 a bucket), and
    // no alert.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        s.call("GET", "secret/data/app", Some(&token), None).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(alerts(&s, &root).await.iter().all(|a| a["rule"] != "rate"), "the usual rate alerted");
    // Then eighty at once: concurrent, so that most fall in one 2 s bucket even on a slow,
    // loaded machine (sent one after the other they once spread over three 1 s buckets).
    let burst: Vec<_> =
        (0..80).map(|_| s.call("GET", "secret/data/app", Some(&token), None)).collect();
    futures_util::future::join_all(burst).await;
    let a = alert_of(&s, &root, "rate").await;
    assert_eq!(a["priority"], "Notice");
    assert_eq!(a["output_fields"]["coffer.accessor"], accessor.as_str());
    assert_eq!(a["output_fields"]["coffer.bucket_seconds"], 2);
    let count = a["output_fields"]["coffer.count"].as_u64().expect("count");
    let baseline = a["output_fields"]["coffer.baseline"].as_f64().expect("baseline");
    assert!(count >= 15 && baseline > 0.0 && count as f64 > 3.0 * baseline.max(1.0), "{a}");
    assert!(baseline < 12.0, "the baseline was learned from the slow requests: {a}");
}

#[tokio::test]
async fn failed_approle_logins_count_per_role_without_the_answer_telling_a_role_id_exists() {
    let dir = tempdir();
    let (s, root) = ready(
        dir.path(),
        "rule \"logins\" {\n type = \"login_failures\"\n threshold = 3\n window = \"60s\"\n per = [\"role\"]\n}",
    )
    .await;
    let (st, b) =
        s.call("POST", "sys/auth/approle", Some(&root), Some(json!({"type": "approle"}))).await;
    assert_eq!(st, 204, "{b}");
    let mut role_ids = Vec::new();
    for role in ["web", "batch"] {
        let (st, b) = s
            .call(
                "POST",
                &format!("auth/approle/role/{role}"),
                Some(&root),
                Some(json!({"token_policies": ["default"]})),
            )
            .await;
        assert!(st == 200 || st == 204, "{b}");
        let (_, rid) =
            s.call("GET", &format!("auth/approle/role/{role}/role-id"), Some(&root), None).await;
        role_ids.push(rid["data"]["role_id"].as_str().expect("role_id").to_owned());
    }
    let login = |role_id: String| {
        let s = &s;
        async move {
            s.call(
                "POST",
                "auth/approle/login",
                None,
                Some(json!({"role_id": role_id, "secret_id": "not-a-secret-id"})),
            )
            .await
        }
    };
    // A role_id of a role and one of none get the same answer.
    let known = login(role_ids[0].clone()).await;
    let unknown = login("00000000-0000-0000-0000-000000000000".into()).await;
    assert_eq!(known, unknown);
    assert_eq!(known, (400, json!({"errors": ["invalid role or secret ID"]})));
    // Two failures on web, one on batch, one more on no role: no role has reached three.
    login(role_ids[0].clone()).await;
    login(role_ids[1].clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = alerts(&s, &root).await;
    assert!(found.is_empty(), "{found:#?}");
    login(role_ids[0].clone()).await;
    let a = alert_of(&s, &root, "logins").await;
    assert_eq!(a["output_fields"]["coffer.login_role"], "auth/approle:web", "{a}");
    let text = a.to_string();
    assert!(!text.contains(&role_ids[0]) && !text.contains("not-a-secret-id"), "{text}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts(&s, &root).await.len(), 1, "batch and the unknown role_id stay under three");
    // The audit entry names the role; the role_id stays HMAC'd.
    let log = std::fs::read_to_string(dir.path().join("audit.log")).expect("log");
    assert!(log.contains(r#"invalid role or secret ID (login role \"web\")"#), "{log}");
    assert!(log.contains(r#"invalid role or secret ID (login role \"batch\")"#));
    assert!(!log.contains(&role_ids[0]));
}
