//! `sys/rekey` and `coffer operator rekey` end to end: after a rekey the old shares no longer
//! unseal and the new ones do, the data stays; wrong shares and wrong nonces change nothing;
//! with verification nothing changes until the new shares were given back; PGP is refused.

use serde_json::{Value, json};

use crate::audit::enable_file_device;
use crate::common::{Server, ok, tempdir};
use crate::operator_root::{tampered, three_shares};

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|k| k.as_str().expect("string").to_owned()).collect()
}

/// Sealed with `root`, then: `old` must not unseal, `new` must, and the data must be there.
async fn old_shares_fail_and_new_ones_unseal(
    s: &Server,
    root: &str,
    old: &[String],
    new: &[String],
) {
    assert_eq!(s.call("PUT", "sys/seal", Some(root), None).await.0, 204);
    let mut refused = false;
    for k in old {
        let (code, b) = s.call("PUT", "sys/unseal", None, Some(json!({"key": k}))).await;
        assert_ne!(b["sealed"], false, "an old share helped unseal");
        refused |= code == 400;
    }
    assert!(refused, "the old shares were never refused");
    s.call("PUT", "sys/unseal", None, Some(json!({"reset": true}))).await;
    s.unseal(new).await;
    let (code, b) = s.call("GET", "cubbyhole/kept", Some(root), None).await;
    assert_eq!((code, b["data"]["v"].as_str()), (200, Some("still-here")), "{b}");
}

#[tokio::test]
async fn rekey_replaces_the_shares_and_only_the_right_ones_do_it() {
    let dir = tempdir();
    let (s, keys, root) = three_shares(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    let (code, _) =
        s.call("PUT", "cubbyhole/kept", Some(&root), Some(json!({"v": "still-here"}))).await;
    assert_eq!(code, 204);

    let (code, st) = s.call("GET", "sys/rekey/init", None, None).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!((st["started"].clone(), st["required"].clone()), (json!(false), json!(2)));
    assert_eq!(st["pgp_fingerprints"], Value::Null);
    assert!(st.get("verification_nonce").is_none(), "absent when empty, as in Vault: {st}");

    let init = |body: Value| s.call("PUT", "sys/rekey/init", None, Some(body));
    let (code, b) = init(json!({"secret_shares": 2, "secret_threshold": 2, "backup": true})).await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (
            400,
            Some(
                "cannot request a backup of the new keys without providing PGP keys for encryption"
            )
        )
    );
    let (code, b) =
        init(json!({"secret_shares": 1, "secret_threshold": 1, "pgp_keys": ["a2V5"]})).await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("pgp_keys"), "{b}");
    let (code, b) = init(json!({"secret_shares": 2, "secret_threshold": 5})).await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").starts_with("invalid rekey seal configuration"));

    let (code, st) = init(json!({"secret_shares": 4, "secret_threshold": 3})).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!((st["t"].clone(), st["n"].clone()), (json!(3), json!(4)));
    let nonce = st["nonce"].as_str().expect("nonce").to_owned();
    let (code, b) = init(json!({"secret_shares": 1, "secret_threshold": 1})).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("rekey already in progress")));

    let update = |key: &str, nonce: &str| {
        s.call("PUT", "sys/rekey/update", None, Some(json!({"key": key, "nonce": nonce})))
    };
    let (code, b) = update(&keys[0], "wrong").await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").starts_with("incorrect nonce supplied"), "{b}");
    // A wrong set: refused, nothing changed, the count starts again.
    assert_eq!(update(&keys[0], &nonce).await.0, 200);
    let (code, b) = update(&tampered(&keys[1]), &nonce).await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().expect("e").contains("verification failed"), "{b}");
    let (_, st) = s.call("GET", "sys/rekey/init", None, None).await;
    assert_eq!((st["started"].clone(), st["progress"].clone()), (json!(true), json!(0)));
    let (_, seal) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(seal["n"], 3, "a failed rekey changed the seal");

    assert_eq!(update(&keys[1], &nonce).await.0, 200);
    let (code, done) = update(&keys[2], &nonce).await;
    assert_eq!(code, 200, "{done}");
    assert_eq!(
        (done["complete"].clone(), done["verification_required"].clone()),
        (json!(true), json!(false))
    );
    let new = strings(&done["keys"]);
    assert_eq!((new.len(), strings(&done["keys_base64"]).len()), (4, 4));
    let (_, st) = s.call("GET", "sys/rekey/init", None, None).await;
    assert_eq!(st["started"], false);
    let (_, seal) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!((seal["n"].clone(), seal["t"].clone()), (json!(4), json!(3)));

    let text = std::fs::read_to_string(&log).expect("audit log");
    let logs = s.logs();
    for secret in keys.iter().chain(&new) {
        assert!(!text.contains(secret.as_str()), "a share appears raw in the audit log");
        assert!(!logs.contains(secret.as_str()), "a share appears in the server log");
    }
    old_shares_fail_and_new_ones_unseal(&s, &root, &keys, &new[1..]).await;

    // Backups exist only with PGP: none here; the endpoint needs sudo.
    let (code, b) = s.call("GET", "sys/rekey/backup", Some(&root), None).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("no backed-up keys found")));
    assert_eq!(s.call("GET", "sys/rekey/backup", None, None).await.0, 403);
}

#[tokio::test]
async fn with_verification_nothing_changes_until_the_new_shares_come_back() {
    let dir = tempdir();
    let (s, keys, root) = three_shares(dir.path()).await;
    s.call("PUT", "cubbyhole/kept", Some(&root), Some(json!({"v": "still-here"}))).await;
    let (code, st) = s
        .call(
            "PUT",
            "sys/rekey/init",
            None,
            Some(json!({"secret_shares": 3, "secret_threshold": 2, "require_verification": true})),
        )
        .await;
    assert_eq!((code, st["verification_required"].clone()), (200, json!(true)), "{st}");
    let nonce = st["nonce"].as_str().expect("nonce").to_owned();
    for k in &keys[..1] {
        s.call("PUT", "sys/rekey/update", None, Some(json!({"key": k, "nonce": nonce}))).await;
    }
    let (code, done) = s
        .call("PUT", "sys/rekey/update", None, Some(json!({"key": keys[2], "nonce": nonce})))
        .await;
    assert_eq!(code, 200, "{done}");
    let vnonce = done["verification_nonce"].as_str().expect("verification nonce").to_owned();
    let new = strings(&done["keys"]);
    // More updates are refused, naming the verification's nonce.
    let (code, b) = s
        .call("PUT", "sys/rekey/update", None, Some(json!({"key": keys[1], "nonce": nonce})))
        .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains(&vnonce), "{b}");

    let verify = |key: &str, nonce: &str| {
        s.call("PUT", "sys/rekey/verify", None, Some(json!({"key": key, "nonce": nonce})))
    };
    let (_, vs) = s.call("GET", "sys/rekey/verify", None, None).await;
    assert_eq!((vs["started"].clone(), vs["nonce"].as_str()), (json!(true), Some(&*vnonce)));
    assert_eq!(verify(&new[0], "wrong").await.0, 400);
    // The old shares are not the new ones: refused, and a new nonce.
    assert_eq!(verify(&keys[0], &vnonce).await.0, 200);
    let (code, b) = verify(&keys[1], &vnonce).await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (400, Some("rekey verification failed; incorrect key shares supplied"))
    );
    let (_, vs) = s.call("GET", "sys/rekey/verify", None, None).await;
    let vnonce2 = vs["nonce"].as_str().expect("nonce").to_owned();
    assert_ne!(vnonce2, vnonce);
    let (_, seal) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(seal["n"], 3);
    assert_eq!(seal["t"], 2);

    assert_eq!(verify(&new[2], &vnonce2).await.0, 200);
    let (code, b) = verify(&new[0], &vnonce2).await;
    assert_eq!((code, b["complete"].clone()), (200, json!(true)), "{b}");
    assert_eq!(s.call("GET", "sys/rekey/verify", None, None).await.0, 400);
    old_shares_fail_and_new_ones_unseal(&s, &root, &keys, &new[..2]).await;
}

#[tokio::test]
async fn the_cli_rekeys_and_the_new_key_unseals() {
    let dir = tempdir();
    let (s, keys, root) = three_shares(dir.path()).await;
    s.call("PUT", "cubbyhole/kept", Some(&root), Some(json!({"v": "still-here"}))).await;
    let out = ok(s.cli(
        None,
        &["operator", "rekey", "-init", "-key-shares=1", "-key-threshold=1", "-format=json"],
    ));
    let st: Value = serde_json::from_str(&out).expect("json");
    let nonce = st["nonce"].as_str().expect("nonce").to_owned();
    let out = ok(s.cli(None, &["operator", "rekey", "-status"]));
    assert!(out.contains("Rekey Progress") && out.contains("0/2"), "{out}");
    ok(s.cli(None, &["operator", "rekey", &format!("-nonce={nonce}"), &keys[2]]));
    let out = ok(s.cli_stdin(
        None,
        &["operator", "rekey", &format!("-nonce={nonce}"), "-"],
        Some(&keys[0]),
    ));
    let new = out
        .lines()
        .find_map(|l| l.strip_prefix("Key 1: "))
        .unwrap_or_else(|| panic!("no new key in:\n{out}"))
        .to_owned();
    assert!(out.contains("rekeyed to 1 key shares"), "{out}");
    ok(s.cli(Some(&root), &["operator", "seal"]));
    let o = s.cli(None, &["operator", "unseal", &keys[0]]);
    let o2 = s.cli(None, &["operator", "unseal", &keys[1]]);
    assert!(!o.status.success() || !o2.status.success(), "old shares still unseal");
    ok(s.cli(None, &["operator", "unseal", "-reset"]));
    ok(s.cli(None, &["operator", "unseal", &new]));
    let (code, _) = s.call("GET", "cubbyhole/kept", Some(&root), None).await;
    assert_eq!(code, 200);

    let o = s.cli(
        None,
        &["operator", "rekey", "-init", "-pgp-keys=a2V5", "-key-shares=1", "-key-threshold=1"],
    );
    assert!(!o.status.success());
    let out = ok(s.cli(None, &["operator", "rekey", "-cancel"]));
    assert!(out.contains("Canceled"), "{out}");
}
