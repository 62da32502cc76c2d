//! DESIGN.md's invariants at the core layer, each a test that reads as the rule it checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Server, tempdir};

pub(crate) fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file of the store: the database and its WAL.
pub(crate) fn storage_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["coffer.db", "coffer.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            all.extend(b);
        }
    }
    all
}

#[tokio::test]
async fn no_cleartext_secret_token_or_key_reaches_storage_or_logs() {
    let dir = tempdir();
    let s = Server::start_sqlite(dir.path());
    let (keys, root) = s.init(3, 2).await;
    s.unseal(&keys[..2]).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    let planted = "PLANTED-SECRET-7f3a9c";
    s.call("POST", "secret/app", Some(&root), Some(json!({"password": planted}))).await;
    let (_, t) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["default"]})))
        .await;
    let child = t["auth"]["client_token"].as_str().expect("token").to_owned();
    s.call("POST", "cubbyhole/c", Some(&child), Some(json!({"v": planted}))).await;
    // Failed requests with secrets in them must not be logged either.
    s.call("POST", "secret/app", Some("not-a-token-SECRETISH"), Some(json!({"password": planted})))
        .await;
    s.call("PUT", "sys/unseal", None, Some(json!({"key": keys[2]}))).await;
    assert_eq!(s.call("GET", "secret/app", Some(&root), None).await.1["data"]["password"], planted);
    let mut s = s;
    s.stop();

    let stored = storage_bytes(dir.path());
    assert!(stored.len() > 1000, "the store holds data");
    let logs = s.logs();
    assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "logs were captured at trace level");
    let mut needles =
        vec![planted.to_owned(), root.clone(), child.clone(), "not-a-token-SECRETISH".to_owned()];
    needles.extend(keys.iter().cloned());
    for n in &needles {
        assert!(!contains(&stored, n), "storage holds a cleartext secret ({} chars)", n.len());
        assert!(!logs.contains(n.as_str()), "logs hold a cleartext secret ({} chars)", n.len());
    }
    // The token without its prefix, too: no partial leak.
    assert!(!contains(&stored, &child[4..]), "storage holds the token body");
}

#[tokio::test]
async fn a_flipped_byte_in_any_stored_value_makes_the_read_fail() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready_sqlite(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "secret/a", Some(&root), Some(json!({"v": "value-a"}))).await;
    s.call("POST", "secret/b", Some(&root), Some(json!({"v": "value-b"}))).await;
    s.stop();
    let db = rusqlite::Connection::open(dir.path().join("coffer.db")).expect("db");
    let rows: Vec<(String, Vec<u8>)> = {
        let mut st = db
            .prepare("SELECT key, value FROM coffer_kv WHERE key LIKE 'logical/%'")
            .expect("prep");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(rows.len(), 2);
    let (key_a, blob_a) = rows.iter().find(|(k, _)| k.ends_with("/a")).cloned().expect("a");
    let (_, blob_b) = rows.iter().find(|(k, _)| k.ends_with("/b")).cloned().expect("b");
    // Positions across header, nonce, ciphertext and tag.
    let positions = [0, 1, 4, 6, 12, 17, 20, blob_a.len() / 2, blob_a.len() - 17, blob_a.len() - 1];
    for (round, pos) in positions.iter().enumerate() {
        let mut bad = blob_a.clone();
        bad[*pos] ^= 0x01;
        db.execute("UPDATE coffer_kv SET value = ?1 WHERE key = ?2", rusqlite::params![bad, key_a])
            .expect("flip");
        s.restart();
        s.unseal(&keys).await;
        let (code, b) = s.call("GET", "secret/a", Some(&root), None).await;
        assert_eq!(code, 500, "round {round}: flipped byte {pos} must fail the read, got {b}");
        // The damaged record is named for the operator; nothing of any value is shown.
        let errors = b["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{b}");
        let e = errors[0].as_str().expect("error");
        assert!(e.contains("is damaged") && e.contains("\"secret/a\""), "{b}");
        assert!(!e.contains(&key_a), "the storage path is for the log only: {b}");
        assert!(!e.contains("value-"), "never plaintext: {b}");
        assert_eq!(
            s.call("GET", "secret/b", Some(&root), None).await.1["data"]["v"],
            "value-b",
            "other values unaffected"
        );
        s.stop();
    }
    // A valid ciphertext moved under another key fails too.
    db.execute("UPDATE coffer_kv SET value = ?1 WHERE key = ?2", rusqlite::params![blob_b, key_a])
        .expect("swap");
    s.restart();
    s.unseal(&keys).await;
    assert_eq!(
        s.call("GET", "secret/a", Some(&root), None).await.0,
        500,
        "b's ciphertext does not open as a"
    );
}

/// Keys of the stored rows whose key matches the SQL `LIKE` pattern.
fn stored_keys(db: &rusqlite::Connection, like: &str) -> Vec<String> {
    let mut st = db.prepare("SELECT key FROM coffer_kv WHERE key LIKE ?1").expect("prep");
    st.query_map([like], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("rows")
}

/// Flips the last byte (inside the GCM tag) of the stored value at `key`.
fn damage(db: &rusqlite::Connection, key: &str) {
    let mut v: Vec<u8> = db
        .query_row("SELECT value FROM coffer_kv WHERE key = ?1", [key], |r| r.get(0))
        .expect("row");
    let last = v.len() - 1;
    v[last] ^= 0x01;
    db.execute("UPDATE coffer_kv SET value = ?1 WHERE key = ?2", rusqlite::params![v, key])
        .expect("flip");
}

#[tokio::test]
async fn one_damaged_record_fails_only_what_needs_it_and_an_authorized_write_repairs_it() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready_sqlite(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "sys/mounts/kv", Some(&root), Some(json!({"type": "kv-v2"}))).await;
    let reader = r#"path "secret/*" { capabilities = ["read"] }"#;
    s.call("PUT", "sys/policies/acl/reader", Some(&root), Some(json!({"policy": reader}))).await;
    s.call("POST", "secret/a", Some(&root), Some(json!({"v": "value-a"}))).await;
    s.call("POST", "secret/b", Some(&root), Some(json!({"v": "value-b"}))).await;
    s.call("POST", "kv/data/x", Some(&root), Some(json!({"data": {"v": "1"}}))).await;
    s.call("POST", "kv/data/x", Some(&root), Some(json!({"data": {"v": "2"}}))).await;
    let mk = async |policies: Value| {
        let (_, b) = s
            .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": policies})))
            .await;
        b["auth"]["client_token"].as_str().expect("token").to_owned()
    };
    let reader_token = mk(json!(["reader"])).await;
    let db = rusqlite::Connection::open(dir.path().join("coffer.db")).expect("db");
    let tokens_before = stored_keys(&db, "sys/token/id/%");
    let damaged_token = mk(json!(["reader"])).await;
    let new_tokens: Vec<String> = stored_keys(&db, "sys/token/id/%")
        .into_iter()
        .filter(|k| !tokens_before.contains(k))
        .collect();
    assert_eq!(new_tokens.len(), 1);
    s.stop();

    damage(&db, "sys/policy/reader");
    damage(&db, &new_tokens[0]);
    let kv1 = stored_keys(&db, "logical/%/a");
    let meta = stored_keys(&db, "logical/%/meta/x");
    assert_eq!((kv1.len(), meta.len()), (1, 1));
    damage(&db, &kv1[0]);
    damage(&db, &meta[0]);

    // The server unseals, and says which records it could not read.
    s.restart();
    s.unseal(&keys).await;
    assert!(s.logs().contains("sys/policy/reader"), "{}", s.logs());

    // What needs a damaged record fails, naming it; nothing is broader than before.
    let (code, b) = s.call("GET", "sys/policies/acl/reader", Some(&root), None).await;
    assert_eq!(code, 500, "{b}");
    assert!(b["errors"][0].as_str().expect("error").contains("sys/policies/acl/reader"), "{b}");
    let (code, b) = s.call("GET", "secret/b", Some(&reader_token), None).await;
    assert_eq!(code, 403, "a token whose policy cannot be read is refused: {b}");
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&damaged_token), None).await;
    assert_eq!(code, 403, "a token whose entry cannot be read is refused");
    let (code, b) = s.call("GET", "secret/a", Some(&root), None).await;
    assert_eq!(code, 500, "{b}");
    let e = b["errors"][0].as_str().expect("error").to_owned();
    assert!(e.contains("damaged") && e.contains("secret/a") && !e.contains(&kv1[0]), "{b}");
    assert!(s.logs().contains(&kv1[0]), "the log names the damaged record");
    assert!(!e.contains("value-a"), "{b}");
    assert_eq!(code, 500, "{b}");
    let (code, _) = s.call("GET", "kv/data/x", Some(&root), None).await;
    assert_eq!(code, 500);
    // What does not need them works.
    let (code, b) = s.call("GET", "secret/b", Some(&root), None).await;
    assert_eq!((code, b["data"]["v"].clone()), (200, json!("value-b")));

    // An authorized overwrite or delete repairs each record.
    let (code, b) = s
        .call("PUT", "sys/policies/acl/reader", Some(&root), Some(json!({"policy": reader})))
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s.call("GET", "secret/b", Some(&reader_token), None).await;
    assert_eq!((code, b["data"]["v"].clone()), (200, json!("value-b")));
    let (code, b) = s.call("POST", "secret/a", Some(&root), Some(json!({"v": "new-a"}))).await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s.call("GET", "secret/a", Some(&root), None).await;
    assert_eq!((code, b["data"]["v"].clone()), (200, json!("new-a")));
    let (code, b) = s.call("DELETE", "kv/metadata/x", Some(&root), None).await;
    assert_eq!(code, 204, "{b}");
    assert_eq!(stored_keys(&db, "logical/%/ver/x/%"), Vec::<String>::new(), "versions removed");
    let (code, _) = s.call("GET", "kv/data/x", Some(&root), None).await;
    assert_eq!(code, 404);
    let (code, b) =
        s.call("POST", "kv/data/x", Some(&root), Some(json!({"data": {"v": "3"}}))).await;
    assert_eq!((code, b["data"]["version"].clone()), (200, json!(1)), "{b}");
}

/// Every authenticated route, with a method that reaches it.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "sys/leases"),
    ("LIST", "sys/leases/lookup/secret/"),
    ("POST", "sys/leases/revoke"),
    ("POST", "sys/revoke/secret/x/abc"),
    ("POST", "sys/leases/revoke-prefix/secret"),
    ("POST", "sys/leases/revoke-force/secret"),
    ("POST", "sys/revoke-prefix/secret"),
    ("POST", "sys/revoke-force/secret"),
    ("POST", "sys/leases/tidy"),
    ("POST", "sys/renew/secret/x/abc"),
    ("POST", "sys/leases/renew/secret/x/abc"),
    ("GET", "sys/mounts"),
    ("POST", "sys/mounts/newkv"),
    ("GET", "sys/mounts/secret/tune"),
    ("POST", "sys/mounts/secret/tune"),
    ("DELETE", "sys/mounts/secret"),
    ("GET", "sys/auth"),
    ("POST", "sys/auth/userpass"),
    ("DELETE", "sys/auth/userpass"),
    ("GET", "sys/policy"),
    ("GET", "sys/policy/default"),
    ("PUT", "sys/policy/x"),
    ("LIST", "sys/policies/acl"),
    ("GET", "sys/policies/acl/default"),
    ("PUT", "sys/policies/acl/x"),
    ("DELETE", "sys/policies/acl/x"),
    ("POST", "sys/capabilities"),
    ("POST", "sys/capabilities-accessor"),
    ("PUT", "sys/seal"),
    ("PUT", "sys/rotate"),
    ("GET", "sys/key-status"),
    ("GET", "sys/audit"),
    ("PUT", "sys/audit/x"),
    ("DELETE", "sys/audit/x"),
    ("POST", "sys/audit-hash/x"),
    ("LIST", "sys/policies/password"),
    ("PUT", "sys/policies/password/x"),
    ("GET", "sys/policies/password/x/generate"),
    ("GET", "sys/internal/ui/mounts/secret"),
    ("GET", "secret/x"),
    ("POST", "secret/x"),
    ("LIST", "secret/"),
    ("DELETE", "secret/x"),
    ("POST", "auth/token/create"),
    ("POST", "auth/token/create-orphan"),
    ("POST", "auth/token/lookup"),
    ("POST", "auth/token/lookup-accessor"),
    ("POST", "auth/token/renew"),
    ("POST", "auth/token/revoke"),
    ("POST", "auth/token/revoke-orphan"),
    ("POST", "auth/token/revoke-accessor"),
    ("LIST", "auth/token/accessors"),
    ("POST", "sys/wrapping/rewrap"),
    ("LIST", "auth/approle/role"),
    ("GET", "auth/approle/role/web"),
    ("POST", "auth/approle/role/web"),
    ("DELETE", "auth/approle/role/web"),
    ("GET", "auth/approle/role/web/role-id"),
    ("POST", "auth/approle/role/web/role-id"),
    ("POST", "auth/approle/role/web/secret-id"),
    ("LIST", "auth/approle/role/web/secret-id"),
    ("POST", "auth/approle/role/web/custom-secret-id"),
    ("POST", "auth/approle/role/web/secret-id/lookup"),
    ("POST", "auth/approle/role/web/secret-id/destroy"),
    ("POST", "auth/approle/role/web/secret-id-accessor/lookup"),
    ("POST", "auth/approle/role/web/secret-id-accessor/destroy"),
    ("POST", "auth/approle/tidy/secret-id"),
    ("GET", "auth/jwt/config"),
    ("POST", "auth/jwt/config"),
    ("LIST", "auth/jwt/role"),
    ("GET", "auth/jwt/role/web"),
    ("POST", "auth/jwt/role/web"),
    ("DELETE", "auth/jwt/role/web"),
    ("GET", "auth/kubernetes/config"),
    ("POST", "auth/kubernetes/config"),
    ("LIST", "auth/kubernetes/role"),
    ("GET", "auth/kubernetes/role/web"),
    ("POST", "auth/kubernetes/role/web"),
    ("DELETE", "auth/kubernetes/role/web"),
    ("LIST", "auth/cert/certs"),
    ("GET", "auth/cert/certs/web"),
    ("POST", "auth/cert/certs/web"),
    ("DELETE", "auth/cert/certs/web"),
];

/// Routes the default policy grants to every token about itself.
const SELF_ROUTES: &[(&str, &str)] = &[
    ("GET", "auth/token/lookup-self"),
    ("POST", "auth/token/renew-self"),
    ("POST", "auth/token/revoke-self"),
    ("POST", "sys/capabilities-self"),
    ("GET", "cubbyhole/x"),
    ("POST", "cubbyhole/x"),
    ("POST", "sys/wrapping/wrap"),
    ("POST", "sys/leases/lookup"),
    ("POST", "sys/leases/renew"),
    ("POST", "sys/renew"),
];

#[tokio::test]
async fn every_non_public_endpoint_refuses_bad_tokens_with_403() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "secret/x", Some(&root), Some(json!({"v": "1"}))).await;
    for kind in ["approle", "jwt", "kubernetes", "cert"] {
        let (code, _) = s
            .call("POST", &format!("sys/auth/{kind}"), Some(&root), Some(json!({"type": kind})))
            .await;
        assert_eq!(code, 204, "{kind}");
    }
    let (code, _) = s
        .call("POST", "auth/approle/role/web", Some(&root), Some(json!({"token_policies": "x"})))
        .await;
    assert_eq!(code, 204);
    let mk = |body: Value| {
        let s = &s;
        let root = root.clone();
        async move {
            let (_, b) = s.call("POST", "auth/token/create", Some(&root), Some(body)).await;
            b["auth"]["client_token"].as_str().expect("token").to_owned()
        }
    };
    let revoked = mk(json!({})).await;
    s.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": revoked}))).await;
    let expired = mk(json!({"ttl": "1s"})).await;
    let weak = mk(json!({"policies": ["default"]})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let body = json!({"type": "kv", "policy": "path \"a\" {\n capabilities = [\"read\"]\n}", "token": weak, "accessor": "x", "path": "secret/x", "v": "1"});
    let bad_tokens: [(&str, Option<&str>); 5] = [
        ("missing", None),
        ("garbage", Some("cfs.thisisnotatoken")),
        ("revoked", Some(&revoked)),
        ("expired", Some(&expired)),
        ("under-privileged", Some(&weak)),
    ];
    let mut failures = Vec::new();
    for (method, path) in ROUTES {
        for (what, tok) in &bad_tokens {
            let (code, b) = s.call(method, path, *tok, Some(body.clone())).await;
            if code != 403 {
                failures.push(format!("{method} {path} with {what} token: {code} {b}"));
            }
        }
    }
    for (method, path) in SELF_ROUTES {
        for (what, tok) in &bad_tokens[..4] {
            let (code, b) = s.call(method, path, *tok, Some(body.clone())).await;
            if code != 403 {
                failures.push(format!("{method} {path} with {what} token: {code} {b}"));
            }
        }
    }
    assert!(failures.is_empty(), "not refused with 403:\n{}", failures.join("\n"));
    // And the data is untouched.
    assert_eq!(s.call("GET", "secret/x", Some(&root), None).await.1["data"]["v"], "1");
}

#[tokio::test]
async fn a_kill_9_during_a_write_loop_loses_no_acknowledged_write() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4u32 {
        let (addr, root, acked, stop) = (s.addr.clone(), root.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let n = w * 1_000_000 + i;
                let r = http
                    .post(format!("{addr}/v1/secret/k{n}"))
                    .header("X-Vault-Token", &root)
                    .json(&json!({"n": n}))
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().as_u16() == 204 => {
                        acked.lock().expect("lock").push(n)
                    }
                    _ => break,
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 20, "the loop made progress before the kill ({} writes)", acked.len());
    s.restart();
    let (_, st) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(st["sealed"], true, "a restarted server comes back sealed");
    s.unseal(&keys).await;
    let mut lost = Vec::new();
    for n in &acked {
        let (code, b) = s.call("GET", &format!("secret/k{n}"), Some(&root), None).await;
        if code != 200 || b["data"]["n"] != json!(n) {
            lost.push(*n);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

#[tokio::test]
async fn a_restart_keeps_everything_and_comes_back_sealed() {
    let dir = tempdir();
    let s0 = Server::start(dir.path());
    let (keys, root) = s0.init(5, 3).await;
    s0.unseal(&keys[1..4]).await;
    let mut s = s0;
    s.call(
        "POST",
        "sys/mounts/secret",
        Some(&root),
        Some(json!({"type": "kv", "config": {"default_lease_ttl": "1h"}})),
    )
    .await;
    s.call("POST", "secret/kept", Some(&root), Some(json!({"v": "still here"}))).await;
    s.call(
        "PUT",
        "sys/policies/acl/p",
        Some(&root),
        Some(json!({"policy": "path \"secret/*\" {\n capabilities = [\"read\"]\n}"})),
    )
    .await;
    let (_, t) =
        s.call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["p"]}))).await;
    let tok = t["auth"]["client_token"].as_str().expect("t").to_owned();
    s.call("POST", "cubbyhole/mine", Some(&tok), Some(json!({"v": "cubby"}))).await;
    s.restart();
    let (_, st) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(
        (st["initialized"].clone(), st["sealed"].clone(), st["t"].clone(), st["n"].clone()),
        (json!(true), json!(true), json!(3), json!(5))
    );
    assert_eq!(s.call("GET", "secret/kept", Some(&root), None).await.0, 503);
    s.unseal(&[keys[4].clone(), keys[0].clone(), keys[2].clone()]).await;
    assert_eq!(s.call("GET", "secret/kept", Some(&tok), None).await.1["data"]["v"], "still here");
    assert_eq!(s.call("GET", "secret/kept", Some(&root), None).await.1["lease_duration"], 3600);
    assert_eq!(s.call("GET", "cubbyhole/mine", Some(&tok), None).await.1["data"]["v"], "cubby");
    assert_eq!(s.call("GET", "sys/policies/acl/p", Some(&root), None).await.0, 200);
}

#[tokio::test]
async fn wrong_unseal_shares_never_unseal() {
    let dir_a = tempdir();
    let dir_b = tempdir();
    let a = Server::start(dir_a.path());
    let b = Server::start(dir_b.path());
    let (keys_a, _) = a.init(3, 2).await;
    let (keys_b, _) = b.init(3, 2).await;
    // Shares of another server: the threshold is reached, the key is wrong, nothing opens.
    for pair in [[&keys_b[0], &keys_b[1]], [&keys_a[0], &keys_b[1]], [&keys_b[2], &keys_a[1]]] {
        a.call("PUT", "sys/unseal", None, Some(json!({"key": pair[0]}))).await;
        let (code, r) = a.call("PUT", "sys/unseal", None, Some(json!({"key": pair[1]}))).await;
        assert_eq!(code, 400, "{r}");
        let (_, st) = a.call("GET", "sys/seal-status", None, None).await;
        assert_eq!(
            (st["sealed"].clone(), st["progress"].clone()),
            (json!(true), json!(0)),
            "a failed attempt leaves no progress behind"
        );
    }
    // Garbage and truncated shares are refused with a message.
    for bad in ["zz-not-hex-or-base64!", "00", &keys_a[0][..20]] {
        a.call("PUT", "sys/unseal", None, Some(json!({"reset": true}))).await;
        a.call("PUT", "sys/unseal", None, Some(json!({"key": keys_a[0]}))).await;
        let (code, r) = a.call("PUT", "sys/unseal", None, Some(json!({"key": bad}))).await;
        assert_eq!(code, 400, "{bad}: {r}");
        assert_eq!(a.call("GET", "sys/seal-status", None, None).await.1["sealed"], true);
    }
    a.unseal(&keys_a[1..]).await;
}

/// A request refused because no audit device could write it costs nothing: not a use of a
/// limited-use token, not a wrapping token.
#[tokio::test]
async fn a_request_no_device_could_audit_spends_no_token_use_and_no_wrapping_token() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready_sqlite(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "secret/keep", Some(&root), Some(json!({"v": "kept"}))).await;
    let reader = r#"path "secret/*" { capabilities = ["read"] }"#;
    s.call("PUT", "sys/policies/acl/reader", Some(&root), Some(json!({"policy": reader}))).await;
    let (_, b) = s
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            Some(json!({"policies": ["reader"], "num_uses": 2})),
        )
        .await;
    let limited = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let wrapped: Value = s
        .http()
        .get(format!("{}/v1/secret/keep", s.addr))
        .header("X-Vault-Token", &root)
        .header("X-Vault-Wrap-TTL", "5m")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let wrapping = wrapped["wrap_info"]["token"].as_str().expect("wrapping token").to_owned();

    // The only device's directory becomes a plain file: every audit write fails.
    let logdir = dir.path().join("auditlogs");
    std::fs::create_dir(&logdir).expect("mkdir");
    let body = json!({"type": "file", "options": {"file_path": logdir.join("a.log")}});
    let (code, b) = s.call("PUT", "sys/audit/file", Some(&root), Some(body)).await;
    assert_eq!(code, 204, "{b}");
    s.stop();
    std::fs::remove_dir_all(&logdir).expect("rm");
    std::fs::write(&logdir, b"not a directory").expect("block");
    s.restart();
    s.unseal(&keys).await;
    for _ in 0..3 {
        let (code, b) = s.call("GET", "secret/keep", Some(&limited), None).await;
        assert_eq!(code, 500, "{b}");
        let (code, b) = s.call("POST", "sys/wrapping/unwrap", Some(&wrapping), None).await;
        assert_eq!(code, 500, "{b}");
    }

    // The device can write again: both tokens have all they had.
    std::fs::remove_file(&logdir).expect("unblock");
    std::fs::create_dir(&logdir).expect("mkdir");
    let (code, b) = s.call("POST", "sys/wrapping/unwrap", Some(&wrapping), None).await;
    assert_eq!((code, b["data"]["v"].clone()), (200, json!("kept")), "{b}");
    for use_ in 1..=2 {
        let (code, b) = s.call("GET", "secret/keep", Some(&limited), None).await;
        assert_eq!(code, 200, "use {use_} of 2: {b}");
    }
    let (code, _) = s.call("GET", "secret/keep", Some(&limited), None).await;
    assert_eq!(code, 403, "two uses, and only two");
}
