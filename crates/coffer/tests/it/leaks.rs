//! Leak detection and response end to end (issue 20, server side): the new token formats and
//! their checksum, `sys/leaks/check` answering only for live values, `sys/leaks/report` revoking
//! and rotating (old credentials stop working, a PostgreSQL login with the old static password
//! is refused), dry runs changing nothing, GitHub's alert format, and no cleartext in the
//! server's logs or audit entries.

use aws_lc_rs::hmac;
use base64::Engine as _;
use coffer_api::token_format::{self, TokenKind};
use coffer_pgtest::Cluster;
use serde_json::{Value, json};

use crate::audit::{enable_file_device, entries};
use crate::common::{Server, tempdir};
use crate::database::{admin, config, login, mount as mount_database, write as db_write};

/// The hashing key, as a scanner reads it: (key_id, key).
async fn key(s: &Server, token: &str) -> (String, hmac::Key) {
    let (code, b) = s.call("GET", "sys/leaks/check", Some(token), None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["algorithm"], "hmac-sha256");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b["data"]["key"].as_str().expect("key"))
        .expect("base64");
    assert_eq!(raw.len(), 32);
    let id = b["data"]["key_id"].as_str().expect("key_id").to_owned();
    (id, hmac::Key::new(hmac::HMAC_SHA256, &raw))
}

fn hash(k: &hmac::Key, value: &str) -> String {
    hmac::sign(k, value.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn post(s: &Server, token: &str, path: &str, body: Value) -> Value {
    let (code, b) = s.call("POST", path, Some(token), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
    b
}

async fn child_token(s: &Server, parent: &str, policies: &[&str]) -> (String, String) {
    let b = post(s, parent, "auth/token/create", json!({"policies": policies})).await;
    (
        b["auth"]["client_token"].as_str().expect("token").to_owned(),
        b["auth"]["accessor"].as_str().expect("accessor").to_owned(),
    )
}

/// approle at `approle/` with role `web`; returns (role_id, secret_id, secret_id_accessor).
async fn approle(s: &Server, root: &str) -> (String, String, String) {
    post(s, root, "sys/auth/approle", json!({"type": "approle"})).await;
    post(s, root, "auth/approle/role/web", json!({"token_policies": ["default"]})).await;
    let rid =
        s.call("GET", "auth/approle/role/web/role-id", Some(root), None).await.1["data"]["role_id"]
            .as_str()
            .expect("role_id")
            .to_owned();
    let (sid, acc) = secret_id(s, root).await;
    (rid, sid, acc)
}

async fn secret_id(s: &Server, root: &str) -> (String, String) {
    let b = post(s, root, "auth/approle/role/web/secret-id", json!({})).await;
    (
        b["data"]["secret_id"].as_str().expect("secret_id").to_owned(),
        b["data"]["secret_id_accessor"].as_str().expect("accessor").to_owned(),
    )
}

async fn check(s: &Server, token: &str, key_id: &str, hashes: &[&str]) -> Vec<Value> {
    let b = post(s, token, "sys/leaks/check", json!({"key_id": key_id, "hashes": hashes})).await;
    b["data"]["matches"].as_array().expect("matches").clone()
}

#[tokio::test]
async fn new_credentials_have_the_prefixed_checksummed_formats_and_old_tokens_keep_working() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    assert_eq!(token_format::is_valid(&root), Some(TokenKind::Service), "{root}");
    let (child, _) = child_token(&s, &root, &["default"]).await;
    assert_eq!(token_format::is_valid(&child), Some(TokenKind::Service), "{child}");
    let (_, sid, _) = approle(&s, &root).await;
    assert_eq!(token_format::is_valid(&sid), Some(TokenKind::SecretId), "{sid}");
    let (code, b) = s
        .call_with(
            "POST",
            "sys/wrapping/wrap",
            Some(&root),
            Some(json!({"x": "y"})),
            &[("X-Vault-Wrap-TTL", "60")],
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let wrapping = b["wrap_info"]["token"].as_str().expect("wrapping token");
    assert_eq!(token_format::is_valid(wrapping), Some(TokenKind::Wrapping), "{wrapping}");

    // A typo: the checksum says so offline, and the server refuses it.
    let mut typo = child.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    assert_eq!(token_format::is_valid(&typo), None);
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&typo), None).await.0, 403);

    // A token of the old shape (as a store from before the format holds them) still works.
    let old = "cfs.abcdefghijklmnopqrstuvwxyz012345";
    post(&s, &root, "auth/token/create", json!({"id": old, "policies": ["default"]})).await;
    let (code, b) = s.call("GET", "auth/token/lookup-self", Some(old), None).await;
    assert_eq!(code, 200, "{b}");
}

#[tokio::test]
async fn check_answers_only_for_live_values_and_the_server_sees_no_cleartext() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let audit_log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &audit_log).await;
    post(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    post(&s, &root, "sys/mounts/kv1", json!({"type": "kv"})).await;
    let v1 = "kv-live-value-version-1";
    let v2 = "kv-live-value-version-2";
    post(&s, &root, "secret/data/app", json!({"data": {"password": v1, "user": "app"}})).await;
    post(&s, &root, "secret/data/app", json!({"data": {"password": v2, "user": "app"}})).await;
    post(&s, &root, "secret/destroy/app", json!({"versions": [1]})).await;
    let gone = "kv-soft-deleted-value";
    post(&s, &root, "secret/data/gone", json!({"data": {"api_key": gone}})).await;
    assert_eq!(s.call("DELETE", "secret/data/gone", Some(&root), None).await.0, 204);
    let old1 = "kv1-overwritten-value";
    let now1 = "kv1-current-value";
    post(&s, &root, "kv1/cfg", json!({"token": old1})).await;
    post(&s, &root, "kv1/cfg", json!({"token": now1})).await;
    let (live_token, live_acc) = child_token(&s, &root, &["default"]).await;
    let (dead_token, dead_acc) = child_token(&s, &root, &["default"]).await;
    post(&s, &root, "auth/token/revoke-accessor", json!({"accessor": dead_acc})).await;
    let (_, sid, sid_acc) = approle(&s, &root).await;
    let (dead_sid, dead_sid_acc) = secret_id(&s, &root).await;
    post(
        &s,
        &root,
        "auth/approle/role/web/secret-id-accessor/destroy",
        json!({"secret_id_accessor": dead_sid_acc}),
    )
    .await;
    let fake = "cfs_not-a-real-token-at-all-0000000000";

    // A scanner's token: read and update on sys/leaks/check only.
    post(
        &s,
        &root,
        "sys/policies/acl/scanner",
        json!({"policy": "path \"sys/leaks/check\" { capabilities = [\"read\", \"update\"] }"}),
    )
    .await;
    let (scanner, _) = child_token(&s, &root, &["scanner"]).await;
    let (key_id, k) = key(&s, &scanner).await;
    let cands = [v1, v2, gone, old1, now1, &live_token, &dead_token, &sid, &dead_sid, fake];
    let hashes: Vec<String> = cands.iter().map(|c| hash(&k, c)).collect();
    let hs: Vec<&str> = hashes.iter().map(String::as_str).collect();
    let matches = check(&s, &scanner, &key_id, &hs).await;
    let by_hash = |h: &str| matches.iter().filter(|m| m["hash"] == h).collect::<Vec<_>>();
    assert_eq!(matches.len(), 4, "{matches:#?}");
    let m = by_hash(&hashes[1]);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["kind"], "kv");
    assert_eq!(m[0]["path"], "secret/data/app");
    assert_eq!(m[0]["version"], 2);
    assert_eq!(m[0]["field"], "password");
    let m = by_hash(&hashes[4]);
    assert_eq!((m[0]["kind"].clone(), m[0]["path"].clone()), (json!("kv"), json!("kv1/cfg")));
    assert!(m[0].get("version").is_none());
    let m = by_hash(&hashes[5]);
    assert_eq!(m[0]["kind"], "token");
    assert_eq!(m[0]["accessor"], live_acc);
    let m = by_hash(&hashes[7]);
    assert_eq!(m[0]["kind"], "secret_id");
    assert_eq!(m[0]["role"], "auth/approle/role/web");
    assert_eq!(m[0]["accessor"], sid_acc);
    // Request order.
    let order: Vec<&Value> = matches.iter().map(|m| &m["hash"]).collect();
    assert_eq!(order, [&json!(hashes[1]), &json!(hashes[4]), &json!(hashes[5]), &json!(hashes[7])]);
    // A second check gives the same answer (stale entries it dropped stay dropped).
    assert_eq!(check(&s, &scanner, &key_id, &hs).await, matches);
    // A hash sent twice is answered once.
    assert_eq!(check(&s, &scanner, &key_id, &[&hashes[5], &hashes[5]]).await.len(), 1);
    // A soft-deleted version is not live, and is again once undeleted.
    post(&s, &root, "secret/undelete/gone", json!({"versions": [1]})).await;
    let m = check(&s, &scanner, &key_id, &[&hashes[2]]).await;
    assert_eq!((m.len(), &m[0]["path"]), (1, &json!("secret/data/gone")), "{m:#?}");
    assert_eq!(s.call("DELETE", "secret/data/gone", Some(&root), None).await.0, 204);

    // Bad input is refused by name.
    for (body, want) in [
        (json!({"key_id": "old", "hashes": []}), "read sys/leaks/check again"),
        (json!({"hashes": []}), "key_id is required"),
        (json!({"key_id": key_id, "hashes": ["ABC"]}), "hashes[0]"),
        (json!({"key_id": key_id, "hashes": vec![hashes[0].clone(); 10_001]}), "at most 10000"),
        (json!({"key_id": key_id, "hashes": [], "extra": 1}), "unknown field"),
        (json!({"key_id": key_id, "hashes": [], "dry_run": true}), "unknown field"),
    ] {
        let (code, b) = s.call("POST", "sys/leaks/check", Some(&scanner), Some(body)).await;
        assert_eq!(code, 400, "{b}");
        assert!(b["errors"][0].as_str().expect("error").contains(want), "{want}: {b}");
    }
    // The scanner may check, not respond; a token without the policy may not even check.
    let body = json!({"key_id": key_id, "hashes": [hashes[5]]});
    let (code, _) = s.call("POST", "sys/leaks/report", Some(&scanner), Some(body.clone())).await;
    assert_eq!(code, 403);
    let (plain, _) = child_token(&s, &root, &["default"]).await;
    assert_eq!(s.call("POST", "sys/leaks/check", Some(&plain), Some(body)).await.0, 403);
    assert_eq!(s.call("GET", "sys/leaks/check", Some(&plain), None).await.0, 403);

    // No candidate (nor any stored value) in clear in the server's logs or audit entries.
    let logs = s.logs();
    let audit = std::fs::read_to_string(&audit_log).expect("audit log");
    for c in [v1, v2, gone, old1, now1, &live_token, &sid] {
        assert!(!logs.contains(c), "{c} in the server log");
        assert!(!audit.contains(c), "{c} in the audit log");
    }
}

#[tokio::test]
async fn a_kv_mount_upgraded_from_version_1_to_2_has_its_values_indexed_as_versions() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    post(&s, &root, "sys/mounts/up", json!({"type": "kv"})).await;
    let value = "upgraded-kv-value-1";
    post(&s, &root, "up/app", json!({"password": value})).await;
    let (key_id, k) = key(&s, &root).await;
    let h = hash(&k, value);
    let m = check(&s, &root, &key_id, &[&h]).await;
    assert_eq!((m.len(), &m[0]["path"]), (1, &json!("up/app")), "{m:#?}");
    post(&s, &root, "sys/mounts/up/tune", json!({"options": {"version": "2"}})).await;
    let m = check(&s, &root, &key_id, &[&h]).await;
    assert_eq!(m.len(), 1, "{m:#?}");
    assert_eq!((&m[0]["path"], &m[0]["version"]), (&json!("up/data/app"), &json!(1)));
}

#[tokio::test]
async fn report_revokes_and_rotates_and_a_dry_run_changes_nothing() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let audit_log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &audit_log).await;
    post(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    post(
        &s,
        &root,
        "sys/policies/password/alnum20",
        json!({"policy": "length = 20\nrule \"charset\" { charset = \"abcdefghijklmnopqrstuvwxyz0123456789\" }"}),
    )
    .await;
    let leaked = "leaked-api-key-123456";
    post(&s, &root, "secret/data/rot", json!({"data": {"api_key": leaked, "user": "svc"}})).await;
    post(
        &s,
        &root,
        "secret/metadata/rot",
        json!({"custom_metadata": {"rotate_on_leak": "true", "rotate_password_policy": "alnum20"}}),
    )
    .await;
    let kept = "leaked-but-not-opted-in";
    post(&s, &root, "secret/data/keep", json!({"data": {"api_key": kept}})).await;
    post(
        &s,
        &root,
        "sys/policies/acl/minter",
        json!({"policy": "path \"auth/token/create\" { capabilities = [\"update\"] }"}),
    )
    .await;
    let (parent, parent_acc) = child_token(&s, &root, &["default", "minter"]).await;
    let (grandchild, _) = child_token(&s, &parent, &["default"]).await;
    let (rid, sid, _) = approle(&s, &root).await;

    let (key_id, k) = key(&s, &root).await;
    let hashes = [hash(&k, leaked), hash(&k, kept), hash(&k, &parent), hash(&k, &sid)];
    let body = |dry: bool| json!({"key_id": key_id, "hashes": hashes, "dry_run": dry});

    let dry = post(&s, &root, "sys/leaks/report", body(true)).await;
    let actions = dry["data"]["actions"].as_array().expect("actions").clone();
    let action_of = |acts: &[Value], h: &str| -> Value {
        acts.iter().find(|a| a["hash"] == h).cloned().unwrap_or(Value::Null)
    };
    assert_eq!(actions.len(), 4, "{actions:#?}");
    assert_eq!(action_of(&actions, &hashes[0])["action"], "rotate_kv");
    assert_eq!(action_of(&actions, &hashes[1])["action"], "none");
    assert!(
        action_of(&actions, &hashes[1])["error"].as_str().expect("why").contains("rotate_on_leak")
    );
    assert_eq!(action_of(&actions, &hashes[2])["action"], "revoke_token");
    assert_eq!(action_of(&actions, &hashes[2])["accessor"], parent_acc);
    assert_eq!(action_of(&actions, &hashes[3])["action"], "destroy_secret_id");
    assert!(actions.iter().all(|a| a["done"] == false), "{actions:#?}");
    // Nothing changed.
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&grandchild), None).await.0, 200);
    let (_, r) = s.call("GET", "secret/data/rot", Some(&root), None).await;
    assert_eq!(r["data"]["data"]["api_key"], leaked);
    assert_eq!(r["data"]["metadata"]["version"], 1);

    let done = post(&s, &root, "sys/leaks/report", body(false)).await;
    let actions = done["data"]["actions"].as_array().expect("actions").clone();
    for h in [&hashes[0], &hashes[2], &hashes[3]] {
        assert_eq!(action_of(&actions, h)["done"], true, "{actions:#?}");
    }
    assert_eq!(action_of(&actions, &hashes[1])["done"], false);
    // The token and its child stop working.
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&parent), None).await.0, 403);
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&grandchild), None).await.0, 403);
    // The secret_id no longer logs in.
    let (code, _) = s
        .call("POST", "auth/approle/login", None, Some(json!({"role_id": rid, "secret_id": sid})))
        .await;
    assert_eq!(code, 400);
    // The KV secret has a new version with a value from its policy; the leaked one is deleted.
    let (_, r) = s.call("GET", "secret/data/rot", Some(&root), None).await;
    let fresh = r["data"]["data"]["api_key"].as_str().expect("new value");
    assert_ne!(fresh, leaked);
    assert_eq!(fresh.len(), 20);
    assert!(fresh.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{fresh}");
    assert_eq!(r["data"]["data"]["user"], "svc");
    assert_eq!(r["data"]["metadata"]["version"], 2);
    let (code, _) = s.call("GET", "secret/data/rot?version=1", Some(&root), None).await;
    assert_eq!(code, 404);
    // Nothing of it is live any more; the new value is.
    let matches = check(&s, &root, &key_id, &[&hashes[0], &hashes[2], &hashes[3]]).await;
    assert!(matches.is_empty(), "{matches:#?}");
    assert_eq!(check(&s, &root, &key_id, &[&hash(&k, fresh)]).await.len(), 1);

    // One audit entry per action, dry runs included; values never in clear.
    let all = entries(&audit_log);
    let leak: Vec<&Value> = all.iter().filter(|e| e["type"] == "leak").collect();
    assert_eq!(leak.len(), 8, "{leak:#?}");
    assert_eq!(leak.iter().filter(|e| e["leak"]["dry_run"] == true).count(), 4);
    assert!(leak.iter().all(|e| e["leak"]["by_accessor"].is_string()));
    let audit = std::fs::read_to_string(&audit_log).expect("audit");
    for c in [leaked, kept, fresh, &parent, &sid] {
        assert!(!audit.contains(c), "{c} in the audit log");
        assert!(!s.logs().contains(c), "{c} in the server log");
    }
}

#[tokio::test]
async fn report_rotates_a_static_role_and_revokes_a_dynamic_credential_in_postgresql() {
    let c = Cluster::shared();
    c.create_database("it_leak");
    c.sql("it_leak", "CREATE TABLE reports (x int)");
    c.sql("it_leak", "CREATE ROLE it_leak_app WITH LOGIN PASSWORD 'Initial-pw-1'");
    let pw = admin(c, "it_leak_admin");
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount_database(&s, &root).await;
    config(&s, &root, c, "it_leak", "it_leak_admin", &pw).await;
    let (code, b) = db_write(
        &s,
        &root,
        "static-roles/app-static",
        json!({"db_name": "pg", "username": "it_leak_app", "rotation_period": "1h"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = db_write(
        &s,
        &root,
        "roles/readonly",
        json!({"db_name": "pg", "creation_statements": crate::database::READONLY}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let (_, st) = s.call("GET", "database/static-creds/app-static", Some(&root), None).await;
    let old = st["data"]["password"].as_str().expect("static password").to_owned();
    login(c, "it_leak_app", &old, "it_leak", "SELECT 1").expect("static password works");
    let (_, dy) = s.call("GET", "database/creds/readonly", Some(&root), None).await;
    let (user, dpw) = (
        dy["data"]["username"].as_str().expect("user").to_owned(),
        dy["data"]["password"].as_str().expect("password").to_owned(),
    );
    let lease = dy["lease_id"].as_str().expect("lease").to_owned();
    login(c, &user, &dpw, "it_leak", "SELECT 1").expect("dynamic credential works");

    let (key_id, k) = key(&s, &root).await;
    let (hs, hd) = (hash(&k, &old), hash(&k, &dpw));
    let matches = check(&s, &root, &key_id, &[&hs, &hd]).await;
    assert_eq!(matches.len(), 2, "{matches:#?}");
    assert_eq!(matches[0]["kind"], "database_static");
    assert_eq!(matches[0]["path"], "database/static-creds/app-static");
    assert_eq!(matches[0]["role"], "database/static-roles/app-static");
    assert_eq!(matches[1]["kind"], "database_dynamic");
    assert_eq!(matches[1]["lease_id"], lease);
    assert_eq!(matches[1]["path"], "database/creds/readonly");

    let b =
        post(&s, &root, "sys/leaks/report", json!({"key_id": key_id, "hashes": [hs, hd]})).await;
    let actions = b["data"]["actions"].as_array().expect("actions");
    assert_eq!(actions[0]["action"], "rotate_static_role");
    assert_eq!(actions[1]["action"], "revoke_lease");
    assert_eq!(actions[1]["lease_id"], lease);
    assert!(actions.iter().all(|a| a["done"] == true), "{actions:#?}");
    assert!(
        login(c, "it_leak_app", &old, "it_leak", "SELECT 1").is_err(),
        "the leaked static password still logs in"
    );
    let (_, st) = s.call("GET", "database/static-creds/app-static", Some(&root), None).await;
    let new = st["data"]["password"].as_str().expect("new password");
    assert_ne!(new, old);
    login(c, "it_leak_app", new, "it_leak", "SELECT 1").expect("the new password works");
    assert!(
        login(c, &user, &dpw, "it_leak", "SELECT 1").is_err(),
        "the leaked dynamic credential still logs in"
    );
    assert!(check(&s, &root, &key_id, &[&hs, &hd]).await.is_empty());
    assert_eq!(check(&s, &root, &key_id, &[&hash(&k, new)]).await.len(), 1);
}

#[tokio::test]
async fn github_alerts_are_answered_in_githubs_shape_and_the_token_is_never_logged() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let audit_log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &audit_log).await;
    let (leaked, _) = child_token(&s, &root, &["default"]).await;
    let fake = token_format::mint(TokenKind::Service);
    let body = json!([
        {"token": leaked, "type": "coffer_service_token", "url": "https://github.com/o/r/blob/x/a", "source": "content"},
        {"token": fake.expose(), "type": "coffer_service_token", "url": "https://github.com/o/r/blob/x/b", "source": "content"},
    ]);
    let (code, b) = s.call("POST", "sys/leaks/report", Some(&root), Some(body)).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"token_raw": leaked, "token_type": "coffer_service_token", "label": "true_positive"},
            {"token_raw": fake.expose(), "token_type": "coffer_service_token", "label": "false_positive"},
        ])
    );
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&leaked), None).await.0, 403);
    let audit = std::fs::read_to_string(&audit_log).expect("audit");
    assert!(!audit.contains(&leaked) && !audit.contains(fake.expose()), "token in the audit log");
    assert!(!s.logs().contains(&leaked), "token in the server log");
    let all = entries(&audit_log);
    let leak: Vec<&Value> = all.iter().filter(|e| e["type"] == "leak").collect();
    assert_eq!(leak.len(), 1, "{leak:#?}");
    assert_eq!(leak[0]["leak"]["action"], "revoke_token");
    assert_eq!(leak[0]["leak"]["done"], true);
    assert_eq!(leak[0]["leak"]["via"], "github");
}
