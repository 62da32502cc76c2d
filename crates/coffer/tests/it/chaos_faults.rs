//! Server-side chaos faults end to end (`sys/chaos/faults`, `coffer chaos fault`): refused
//! unless enabled (404) and without sudo (403), bad bodies named (400); each kind acts, ends by
//! itself at its deadline with the server fully working after it, and leaves start and end
//! entries in the audit log.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::audit::{enable_file_device, entries};
use crate::common::{Server, Storage, ok, storage_block, tempdir};

/// A server with `chaos { enabled = true, max_duration = "30s" }`, initialized and unsealed.
pub(crate) async fn chaos_server(dir: &Path) -> (Server, Vec<String>, String) {
    let config = format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}}\n\
         chaos {{\n  enabled = true\n  max_duration = \"30s\"\n}}\n",
        storage_block(dir, Storage::Default)
    );
    let s = Server::start_with(dir, &config, "http");
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    (s, keys, root)
}

async fn start(s: &Server, token: &str, body: Value) -> Value {
    let (code, b) = s.call("POST", "sys/chaos/faults", Some(token), Some(body.clone())).await;
    assert_eq!(code, 200, "{body}: {b}");
    b["data"].clone()
}

async fn kv(s: &Server, root: &str) {
    s.mount_kv2(root).await;
    for p in ["a/x", "b/x"] {
        let (code, b) = s
            .call("POST", &format!("secret/data/{p}"), Some(root), Some(json!({"data": {"v": p}})))
            .await;
        assert_eq!(code, 200, "{b}");
    }
}

/// Polls `f` every 100 ms for up to `secs`; panics with `what` if it never holds.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {secs}s");
}

async fn running(s: &Server, root: &str) -> Vec<String> {
    let (code, b) = s.call("GET", "sys/chaos/faults", Some(root), None).await;
    assert_eq!(code, 200, "{b}");
    b["data"]["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("id").to_owned())
        .collect()
}

/// The `chaos` entries of an audit log: (event, fault type, reason).
fn chaos_entries(log: &Path) -> Vec<(String, String, String)> {
    entries(log)
        .into_iter()
        .filter(|e| e["type"] == "chaos")
        .map(|e| {
            let c = &e["chaos"];
            (
                c["event"].as_str().unwrap_or("").to_owned(),
                c["fault"]["type"].as_str().unwrap_or("").to_owned(),
                c["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn chaos_paths_do_not_exist_unless_enabled_and_need_sudo() {
    let dir = tempdir();
    let (plain, _, root) = Server::ready(&dir.path().join("plain")).await;
    let body = json!({"type": "latency", "duration": 5, "latency": "10ms"});
    let (code, b) = plain.call("POST", "sys/chaos/faults", Some(&root), Some(body.clone())).await;
    assert_eq!(code, 404, "{b}");
    assert_eq!(plain.call("GET", "sys/chaos/faults", Some(&root), None).await.0, 404);
    let (code, _) = plain.call("GET", "sys/chaos/faults?help=1", Some(&root), None).await;
    assert_eq!(code, 404, "no help for a path that does not exist");
    let (_, doc) = plain.call("GET", "sys/internal/specs/openapi", Some(&root), None).await;
    assert!(doc["paths"].get("/sys/chaos/faults").is_none(), "not in the OpenAPI document");

    let (s, _, root) = chaos_server(&dir.path().join("chaos")).await;
    let (_, doc) = s.call("GET", "sys/internal/specs/openapi", Some(&root), None).await;
    assert!(doc["paths"].get("/sys/chaos/faults").is_some(), "{}", doc["paths"]);
    for (name, caps) in [
        ("nosudo", "\"create\", \"update\", \"read\", \"list\", \"delete\""),
        ("sudo", "\"create\", \"update\", \"read\", \"list\", \"delete\", \"sudo\""),
    ] {
        let policy = format!("path \"sys/chaos/*\" {{ capabilities = [{caps}] }}");
        s.put_policy(&root, name, &policy).await;
    }
    let nosudo = s.token_with(&root, &["nosudo"]).await;
    let sudo = s.token_with(&root, &["sudo"]).await;
    for (method, path) in [
        ("POST", "sys/chaos/faults"),
        ("GET", "sys/chaos/faults"),
        ("DELETE", "sys/chaos/faults"),
        ("DELETE", "sys/chaos/faults/fault-x"),
    ] {
        let (code, b) = s.call(method, path, Some(&nosudo), Some(body.clone())).await;
        assert_eq!(code, 403, "{method} {path} without sudo: {b}");
    }
    assert_eq!(s.call("GET", "sys/chaos/faults", None, None).await.0, 403);
    let f = start(&s, &sudo, body).await;
    let id = f["id"].as_str().expect("id");
    assert!(id.starts_with("fault-"), "{f}");
    assert_eq!(f["type"], "latency");
    assert_eq!(f["latency"], "10ms");
    assert!(f["expires_at"].as_str().expect("expires") > f["started_at"].as_str().expect("start"));
    let (code, one) = s.call("GET", &format!("sys/chaos/faults/{id}"), Some(&sudo), None).await;
    assert_eq!((code, &one["data"]["id"]), (200, &json!(id)), "{one}");
    let (code, listed) = s.call("LIST", "sys/chaos/faults", Some(&sudo), None).await;
    assert_eq!(code, 200, "{listed}");
    assert_eq!(listed["data"]["keys"], json!([id]));
    assert_eq!(listed["data"]["faults"][id]["type"], "latency");
    assert_eq!(s.call("DELETE", &format!("sys/chaos/faults/{id}"), Some(&sudo), None).await.0, 204);
    assert_eq!(s.call("GET", &format!("sys/chaos/faults/{id}"), Some(&sudo), None).await.0, 404);
    assert_eq!(
        s.call("DELETE", &format!("sys/chaos/faults/{id}"), Some(&sudo), None).await.0,
        204,
        "ending an ended fault is no error (a rollback after the deadline)"
    );
}

#[tokio::test]
async fn bad_fault_bodies_are_refused_naming_the_problem() {
    let dir = tempdir();
    let (s, _, root) = chaos_server(dir.path()).await;
    for (body, says) in [
        (json!({"type": "seal"}), "duration"),
        (json!({"type": "seal", "duration": "31s"}), "max_duration"),
        (json!({"type": "seal", "duration": "soon"}), "invalid duration"),
        (json!({"type": "error", "duration": 5, "status": 404}), "500, 503 or 429"),
        (json!({"type": "error", "duration": 5, "rate": 2}), "rate"),
        (json!({"type": "latency", "duration": 5}), "latency"),
        (json!({"type": "latency", "duration": 5, "latency": "1s", "colour": "red"}), "colour"),
        (json!({"type": "meteor", "duration": 5}), "meteor"),
        (json!({"type": "seal", "duration": 5, "path_prefix": "secret/"}), "path_prefix"),
        (json!({"type": "revoke_prefix", "duration": 5, "prefix": "x/"}), "one-shot"),
        (json!({"type": "audit_blocked", "duration": 5}), "no audit device"),
        (json!({"type": "rotate", "path": "nothing/here", "keys": ["k"]}), "nothing is mounted"),
    ] {
        let (code, b) = s.call("POST", "sys/chaos/faults", Some(&root), Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {b}");
        assert!(b["errors"][0].as_str().unwrap_or("").contains(says), "{body}: {b}");
    }
    assert!(running(&s, &root).await.is_empty(), "no refused fault runs");
}

#[tokio::test]
async fn error_and_latency_faults_touch_only_their_path_prefix_and_end_at_the_deadline() {
    let dir = tempdir();
    let (s, _, root) = chaos_server(dir.path()).await;
    kv(&s, &root).await;
    let e = start(
        &s,
        &root,
        json!({"type": "error", "duration": "2s", "status": 429, "path_prefix": "secret/data/a"}),
    )
    .await;
    let l = start(
        &s,
        &root,
        json!({"type": "latency", "duration": "2s", "latency": "400ms", "path_prefix": "secret/data/b"}),
    )
    .await;
    let (code, b) = s.call("GET", "secret/data/a/x", Some(&root), None).await;
    assert_eq!(code, 429, "{b}");
    assert!(b["errors"][0].as_str().unwrap_or("").contains(e["id"].as_str().expect("id")), "{b}");
    let t = Instant::now();
    let (code, _) = s.call("GET", "secret/data/b/x", Some(&root), None).await;
    assert_eq!(code, 200, "the error fault leaves prefix b alone");
    assert!(t.elapsed() >= Duration::from_millis(400), "latency on b: {:?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(s.call("GET", "sys/chaos/faults", Some(&root), None).await.0, 200);
    assert!(t.elapsed() < Duration::from_millis(300), "sys/chaos is never delayed");
    assert_eq!(running(&s, &root).await.len(), 2);
    eventually(5, "the faults end by themselves", || async { running(&s, &root).await.is_empty() })
        .await;
    let t = Instant::now();
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 200);
    assert_eq!(s.call("GET", "secret/data/b/x", Some(&root), None).await.0, 200);
    assert!(t.elapsed() < Duration::from_millis(300), "no latency left: {:?}", t.elapsed());
    let _ = l;

    // Ended early: the timer then finds nothing to do.
    let f = start(&s, &root, json!({"type": "error", "duration": 20, "status": 503})).await;
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 503);
    let id = f["id"].as_str().expect("id");
    assert_eq!(s.call("DELETE", &format!("sys/chaos/faults/{id}"), Some(&root), None).await.0, 204);
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 200);
    start(&s, &root, json!({"type": "error", "duration": 20, "rate": 1})).await;
    start(&s, &root, json!({"type": "latency", "duration": 20, "latency": "1s"})).await;
    assert_eq!(s.call("DELETE", "sys/chaos/faults", Some(&root), None).await.0, 204);
    assert!(running(&s, &root).await.is_empty());
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 200);
}

/// An approle login to `role`; its token.
async fn login(s: &Server, root: &str, role: &str) -> String {
    let (code, b) = s
        .call(
            "POST",
            &format!("auth/approle/role/{role}"),
            Some(root),
            Some(json!({"token_policies": ["reader"]})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (role_id, secret_id) = s.approle_credentials(root, role).await;
    let (code, t) = s.approle_login(&role_id, &secret_id).await;
    assert_eq!(code, 200, "{t}");
    t["auth"]["client_token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn a_role_scoped_fault_hits_only_that_roles_tokens() {
    let dir = tempdir();
    let (s, _, root) = chaos_server(dir.path()).await;
    kv(&s, &root).await;
    for (path, body) in [
        ("sys/auth/approle", json!({"type": "approle"})),
        (
            "sys/policies/acl/reader",
            json!({"policy": "path \"secret/data/*\" { capabilities = [\"read\"] }"}),
        ),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    let web = login(&s, &root, "web").await;
    let db = login(&s, &root, "db").await;
    start(&s, &root, json!({"type": "error", "duration": "2s", "status": 503, "role": "web"}))
        .await;
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&web), None).await.0, 503);
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&db), None).await.0, 200);
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 200);
    eventually(5, "the role's tokens are served again", || async {
        s.call("GET", "secret/data/a/x", Some(&web), None).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn a_seal_fault_seals_and_the_server_unseals_itself_at_the_deadline() {
    let dir = tempdir();
    let (s, keys, root) = chaos_server(dir.path()).await;
    kv(&s, &root).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    start(&s, &root, json!({"type": "seal", "duration": "2s"})).await;
    let (_, st) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(st["sealed"], true, "{st}");
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 503);
    eventually(6, "unsealed by itself", || async {
        s.call("GET", "sys/seal-status", None, None).await.1["sealed"] == false
    })
    .await;
    let (code, b) = s.call("GET", "secret/data/a/x", Some(&root), None).await;
    assert_eq!((code, &b["data"]["data"]["v"]), (200, &json!("a/x")), "{b}");
    assert!(running(&s, &root).await.is_empty());

    // An operator's unseal ends it early; the server stays open.
    start(&s, &root, json!({"type": "seal", "duration": "20s"})).await;
    s.unseal(&keys).await;
    assert!(running(&s, &root).await.is_empty(), "the unseal ended the fault");
    assert_eq!(s.call("GET", "secret/data/b/x", Some(&root), None).await.0, 200);
    let c = chaos_entries(&log);
    assert_eq!(
        c,
        vec![
            ("start".into(), "seal".into(), "".into()),
            ("end".into(), "seal".into(), "deadline".into()),
            ("start".into(), "seal".into(), "".into()),
            ("end".into(), "seal".into(), "unsealed".into()),
        ]
    );
    ok(s.cli(None, &["audit", "verify", log.to_str().expect("path")]));
}

#[tokio::test]
async fn a_storage_outage_answers_errors_and_ends_by_itself_losing_nothing() {
    let dir = tempdir();
    let (mut s, keys, root) = chaos_server(dir.path()).await;
    kv(&s, &root).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    let f = start(&s, &root, json!({"type": "storage_unavailable", "duration": "2s"})).await;
    let (code, b) =
        s.call("POST", "secret/data/during", Some(&root), Some(json!({"data": {"v": 1}}))).await;
    assert_eq!(code, 500, "a write fails: {b}");
    let (code, _) = s.call("GET", "secret/data/a/x", Some(&root), None).await;
    assert_eq!(code, 500, "a read fails");
    assert_eq!(running(&s, &root).await, vec![f["id"].as_str().expect("id").to_owned()]);
    eventually(5, "storage is back", || async {
        s.call("GET", "secret/data/a/x", Some(&root), None).await.0 == 200
    })
    .await;
    let (code, b) =
        s.call("POST", "secret/data/after", Some(&root), Some(json!({"data": {"v": 2}}))).await;
    assert_eq!(code, 200, "{b}");
    s.restart();
    s.unseal(&keys).await;
    assert_eq!(
        s.call("GET", "secret/data/after", Some(&root), None).await.1["data"]["data"]["v"],
        2
    );
    assert_eq!(
        s.call("GET", "secret/data/a/x", Some(&root), None).await.1["data"]["data"]["v"],
        "a/x"
    );
    assert_eq!(s.call("GET", "secret/data/during", Some(&root), None).await.0, 404);
    assert!(!s.logs().contains("panicked"), "the outage crashed a task");
    let c = chaos_entries(&log);
    assert_eq!(
        c,
        vec![
            ("start".into(), "storage_unavailable".into(), "".into()),
            ("end".into(), "storage_unavailable".into(), "deadline".into()),
        ]
    );
}

#[tokio::test]
async fn a_blocked_audit_device_refuses_requests_until_the_deadline() {
    let dir = tempdir();
    let (s, _, root) = chaos_server(dir.path()).await;
    kv(&s, &root).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    start(&s, &root, json!({"type": "audit_blocked", "duration": "2s"})).await;
    let (code, b) = s.call("GET", "secret/data/a/x", Some(&root), None).await;
    assert_eq!(code, 500, "fail closed: {b}");
    assert_eq!(running(&s, &root).await.len(), 1, "sys/chaos still answers");
    let served_during = entries(&log).iter().any(|e| e["request"]["path"] == "secret/data/a/x");
    assert!(!served_during, "the refused request left no entry: it was not served");
    eventually(5, "served again", || async {
        s.call("GET", "secret/data/a/x", Some(&root), None).await.0 == 200
    })
    .await;
    assert_eq!(
        chaos_entries(&log),
        vec![
            ("start".into(), "audit_blocked".into(), "".into()),
            ("end".into(), "audit_blocked".into(), "deadline".into()),
        ]
    );
    ok(s.cli(None, &["audit", "verify", log.to_str().expect("path")]));
}

#[tokio::test]
async fn rotate_writes_a_new_kv_version_and_revoke_prefix_runs_once() {
    let dir = tempdir();
    let (s, _, root) = chaos_server(dir.path()).await;
    kv(&s, &root).await;
    let (code, b) = s
        .call(
            "POST",
            "secret/data/app",
            Some(&root),
            Some(json!({"data": {"user": "app", "password": "old-password"}})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let f = start(
        &s,
        &root,
        json!({"type": "rotate", "path": "secret/data/app", "keys": ["password"]}),
    )
    .await;
    assert_eq!(f["started_at"], f["expires_at"], "one-shot");
    let (_, now) = s.call("GET", "secret/data/app", Some(&root), None).await;
    let d = &now["data"]["data"];
    assert_eq!(d["user"], "app", "other keys kept");
    let pw = d["password"].as_str().expect("password");
    assert!(pw != "old-password" && pw.len() == 32, "{pw}");
    assert_eq!(now["data"]["metadata"]["version"], 2);
    assert!(running(&s, &root).await.is_empty(), "one-shot faults do not linger");
    let (code, b) = s
        .call(
            "POST",
            "sys/chaos/faults",
            Some(&root),
            Some(json!({"type": "rotate", "path": "secret/data/app"})),
        )
        .await;
    assert_eq!(code, 400, "KV needs keys: {b}");
    let f = start(&s, &root, json!({"type": "revoke_prefix", "prefix": "secret/"})).await;
    assert_eq!(f["type"], "revoke_prefix");
}

#[tokio::test]
async fn the_cli_starts_lists_and_stops_faults() {
    let dir = tempdir();
    let (s, _, root) = chaos_server(dir.path()).await;
    kv(&s, &root).await;
    let out = ok(s.cli(
        Some(&root),
        &[
            "chaos",
            "fault",
            "error",
            "-duration=20s",
            "-status=429",
            "-path-prefix=secret/data/a",
            "-format=json",
        ],
    ));
    let f: Value = serde_json::from_str(&out).expect("json");
    let id = f["id"].as_str().expect("id").to_owned();
    assert_eq!(
        (f["status"].as_u64(), f["path_prefix"].as_str()),
        (Some(429), Some("secret/data/a"))
    );
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 429);
    let line =
        ok(s.cli(Some(&root), &["chaos", "fault", "latency", "-duration=20s", "-latency=50ms"]));
    assert!(line.contains(" latency ") && line.contains("latency=50ms"), "{line}");
    let listed = ok(s.cli(Some(&root), &["chaos", "fault", "list"]));
    assert_eq!(listed.lines().filter(|l| l.starts_with("fault-")).count(), 2, "{listed}");
    assert!(listed.contains(&id) && listed.contains("status=429"), "{listed}");
    let json_list: Value =
        serde_json::from_str(&ok(s.cli(Some(&root), &["chaos", "fault", "list", "-format=json"])))
            .expect("json");
    assert_eq!(json_list["server"].as_array().map(Vec::len), Some(2), "{json_list}");
    let yaml = ok(s.cli(Some(&root), &["chaos", "fault", "list", "-format=yaml"]));
    assert!(yaml.contains("\nserver:\n") || yaml.starts_with("server:"), "{yaml}");
    assert!(yaml.contains(&format!("id: {id}")), "{yaml}");
    let stopped = ok(s.cli(Some(&root), &["chaos", "fault", "stop", &id]));
    assert!(stopped.contains(&id), "{stopped}");
    assert_eq!(s.call("GET", "secret/data/a/x", Some(&root), None).await.0, 200);
    ok(s.cli(Some(&root), &["chaos", "fault", "stop", "-all"]));
    let listed = ok(s.cli(Some(&root), &["chaos", "fault", "list"]));
    assert_eq!(listed.lines().next(), Some("No server faults running."), "{listed}");
    let bad = s.cli(Some(&root), &["chaos", "fault", "seal", "-duration=2h"]);
    assert!(!bad.status.success());
    assert!(
        crate::common::stderr(&bad).contains("max_duration"),
        "{}",
        crate::common::stderr(&bad)
    );
    // No host faults here (a state directory that does not exist): the server's refusal is
    // the whole answer.
    let none = dir.path().join("no-host-faults").display().to_string();
    let nosudo = s.cli(None, &["chaos", "fault", "list", "-state-dir", &none]);
    assert!(!nosudo.status.success());
}

#[tokio::test]
async fn revoke_prefix_and_rotate_act_on_real_database_credentials() {
    use crate::database::{READONLY, admin, config, login, mount, write};
    let c = coffer_pgtest::Cluster::shared();
    let db = "chaos_faults_db";
    c.create_database(db);
    c.sql(db, "CREATE TABLE reports (x int); CREATE ROLE chaos_static_app WITH LOGIN PASSWORD 'Initial-pw-1'");
    let pw = admin(c, "chaos_faults_admin");
    let dir = tempdir();
    let (s, _, root) = chaos_server(dir.path()).await;
    mount(&s, &root).await;
    config(&s, &root, c, db, "chaos_faults_admin", &pw).await;
    let (code, b) = write(
        &s,
        &root,
        "roles/readonly",
        json!({"db_name": "pg", "creation_statements": READONLY, "default_ttl": "1h"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let mut users = Vec::new();
    for _ in 0..2 {
        let (code, b) = s.call("GET", "database/creds/readonly", Some(&root), None).await;
        assert_eq!(code, 200, "{b}");
        let user = b["data"]["username"].as_str().expect("user").to_owned();
        let pw = b["data"]["password"].as_str().expect("pw").to_owned();
        login(c, &user, &pw, db, "SELECT 1").expect("fresh credentials work");
        users.push((user, pw));
    }
    start(&s, &root, json!({"type": "revoke_prefix", "prefix": "database/creds/readonly"})).await;
    let (code, b) =
        s.call("LIST", "sys/leases/lookup/database/creds/readonly", Some(&root), None).await;
    assert!(code == 404 || b["data"]["keys"].as_array().is_none_or(|k| k.is_empty()), "{code} {b}");
    for (user, pw) in &users {
        assert!(login(c, user, pw, db, "SELECT 1").is_err(), "{user} still logs in");
    }

    let (code, b) = write(
        &s,
        &root,
        "static-roles/app-chaos",
        json!({"db_name": "pg", "username": "chaos_static_app", "rotation_period": "1h"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let before =
        s.call("GET", "database/static-creds/app-chaos", Some(&root), None).await.1["data"]["password"]
            .as_str()
            .expect("pw")
            .to_owned();
    start(&s, &root, json!({"type": "rotate", "path": "database/static-roles/app-chaos"})).await;
    let after = s.call("GET", "database/static-creds/app-chaos", Some(&root), None).await.1["data"]
        ["password"]
        .as_str()
        .expect("pw")
        .to_owned();
    assert_ne!(before, after, "rotated");
    assert!(login(c, "chaos_static_app", &before, db, "SELECT 1").is_err(), "old password works");
    login(c, "chaos_static_app", &after, db, "SELECT 1").expect("new password works");
    let (code, b) = s
        .call(
            "POST",
            "sys/chaos/faults",
            Some(&root),
            Some(json!({"type": "rotate", "path": "database/roles/readonly"})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().unwrap_or("").contains("static-roles"), "{b}");
}
