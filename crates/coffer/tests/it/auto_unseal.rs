//! `seal "transit"`: a server whose unseal key is wrapped by another Coffer's transit engine
//! unseals itself at init and after restarts, waits while the transit server is unreachable,
//! and refuses key shares; recovery shares (auto-unseal) make a root token with generate-root.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{
    KEY_SHARE_ENDPOINTS, Server, Storage, default_config, plain_config_with, tempdir,
};

async fn status(s: &Server) -> serde_json::Value {
    s.call("GET", "sys/seal-status", None, None).await.1
}

async fn wait_unsealed(s: &Server, within: Duration) {
    let start = Instant::now();
    while status(s).await["sealed"] != json!(false) {
        assert!(start.elapsed() < within, "still sealed after {within:?}: {}", s.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A 32-byte static seal key of `byte`s in `dir/name`, readable by its owner only.
fn key_file(dir: &std::path::Path, name: &str, byte: u8) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let p = dir.join(name);
    std::fs::write(&p, [byte; 32]).expect("key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// `sys/init` of an auto-unseal server with `shares` recovery shares of `threshold`; waits until
/// it unsealed itself. (root token, recovery shares)
async fn init_recovery(s: &Server, shares: u64, threshold: u64) -> (String, Vec<String>) {
    let (code, b) = s
        .call(
            "PUT",
            "sys/init",
            None,
            Some(json!({"recovery_shares": shares, "recovery_threshold": threshold})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let root = b["root_token"].as_str().expect("root").to_owned();
    let recovery = b["recovery_keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("k").to_owned())
        .collect();
    wait_unsealed(s, Duration::from_secs(10)).await;
    (root, recovery)
}

/// Restarts `s` with `config`.
fn reconfigure(s: &mut Server, config: &str) {
    std::fs::write(&s.config, config).expect("config");
    s.restart();
}

/// `coffer operator unseal -migrate` with each of `shares`; waits until unsealed.
async fn unseal_migrate(s: &Server, shares: &[String]) {
    for k in shares {
        crate::common::ok(s.cli(None, &["operator", "unseal", "-migrate", k]));
    }
    wait_unsealed(s, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transit_sealed_server_unseals_itself_and_waits_for_its_transit_server() {
    let dir = tempdir();
    // On a fixed port: it is restarted below, and the node's seal stanza names its address.
    let (mut kms, kms_keys, kms_root) =
        crate::agent::server_on_fixed_port(&dir.path().join("kms")).await;
    let (s, b) = kms
        .call("POST", "sys/mounts/transit", Some(&kms_root), Some(json!({"type": "transit"})))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) =
        kms.call("POST", "transit/keys/autounseal", Some(&kms_root), Some(json!({}))).await;
    assert!(s == 200 || s == 204, "{b}");

    let node_dir = dir.path().join("node");
    let config = format!(
        "{}seal \"transit\" {{\n  address = \"{}\"\n  token = \"{kms_root}\"\n  key_name = \"autounseal\"\n  mount_path = \"transit/\"\n  disable_renewal = \"true\"\n}}\n",
        default_config(&node_dir),
        kms.addr
    );
    let mut node = Server::start_with(&node_dir, &config, "http");
    let (s, b) = node
        .call("PUT", "sys/init", None, Some(json!({"recovery_shares": 1, "recovery_threshold": 1})))
        .await;
    assert_eq!(s, 200, "{b}");
    let root = b["root_token"].as_str().expect("root").to_owned();
    let recovery = b["recovery_keys"][0].as_str().expect("recovery key").to_owned();
    wait_unsealed(&node, Duration::from_secs(10)).await;
    let st = status(&node).await;
    assert_eq!((&st["type"], &st["recovery_seal"]), (&json!("transit"), &json!(true)), "{st}");
    let (s, _) =
        node.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    assert_eq!(s, 204);
    let (s, _) = node.call("PUT", "secret/x", Some(&root), Some(json!({"v": 1}))).await;
    assert_eq!(s, 204);

    // Restarted: unsealed with nobody's help.
    node.restart();
    wait_unsealed(&node, Duration::from_secs(10)).await;
    let (s, b) = node.call("GET", "secret/x", Some(&root), None).await;
    assert_eq!((s, &b["data"]["v"]), (200, &json!(1)), "{b}");

    // Transit server down: the node stays sealed (and says why), and key shares do not help.
    kms.stop();
    node.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status(&node).await["sealed"], json!(true));
    assert!(node.logs().contains("auto-unseal failed"), "{}", node.logs());
    let (s, b) = node.call("PUT", "sys/unseal", None, Some(json!({"key": recovery}))).await;
    assert_eq!(s, 400, "{b}");
    // Back: the node unseals by itself at its next try.
    kms.restart();
    kms.unseal(&kms_keys).await;
    wait_unsealed(&node, Duration::from_secs(15)).await;
    // Neither the wrapped unseal key nor the seal's token reaches the log.
    let logs = node.logs();
    assert!(!logs.contains("vault:v1:"), "the wrapped key reached the log");
    assert!(!logs.contains(&kms_root), "the transit token reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_shares_replace_unseal_shares_for_generate_root() {
    use base64::Engine as _;
    let dir = tempdir();
    let key = key_file(dir.path(), "k", 7);
    let node_dir = dir.path().join("node");
    let config = format!(
        "{}seal \"static\" {{\n  current_key_id = \"k1\"\n  current_key = \"file://{}\"\n}}\n",
        plain_config_with(&node_dir, Storage::Default, KEY_SHARE_ENDPOINTS),
        key.display()
    );
    let s = Server::start_with(&node_dir, &config, "http");
    // Through the CLI, as `vault operator init -recovery-shares -recovery-threshold`.
    let out = crate::common::ok(s.cli(
        None,
        &["operator", "init", "-recovery-shares=3", "-recovery-threshold=2", "-format=json"],
    ));
    let b: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (&b["unseal_keys_hex"], &b["recovery_keys_shares"], &b["recovery_keys_threshold"]),
        (&json!([]), &json!(3), &json!(2)),
        "{b}"
    );
    let shares: Vec<String> = b["recovery_keys_hex"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("k").to_owned())
        .collect();
    assert_eq!(shares.len(), 3);
    wait_unsealed(&s, Duration::from_secs(10)).await;
    let (code, st) = s.call("PUT", "sys/generate-root/attempt", None, Some(json!({}))).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["required"], json!(2), "the recovery threshold: {st}");
    let (otp, nonce) = (
        st["otp"].as_str().expect("otp").to_owned(),
        st["nonce"].as_str().expect("nonce").to_owned(),
    );
    let update = |k: &str| {
        s.call("PUT", "sys/generate-root/update", None, Some(json!({"key": k, "nonce": nonce})))
    };
    let (code, b) = update(&shares[2]).await;
    assert_eq!((code, &b["complete"]), (200, &json!(false)), "{b}");
    let (code, done) = update(&shares[0]).await;
    assert_eq!((code, &done["complete"]), (200, &json!(true)), "{done}");
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(done["encoded_token"].as_str().expect("encoded"))
        .expect("b64");
    let token: String = raw.iter().zip(otp.bytes()).map(|(a, b)| (a ^ b) as char).collect();
    let (code, b) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
    assert_eq!((code, &b["data"]["policies"]), (200, &json!(["root"])), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_migrate_moves_a_shamir_server_to_a_static_seal() {
    let dir = tempdir();
    let node_dir = dir.path().join("node");
    let mut s = Server::start_with(&node_dir, &default_config(&node_dir), "http");
    let (keys, root) = s.init(3, 2).await;
    s.unseal(&keys).await;
    let (code, _) =
        s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    assert_eq!(code, 204);
    let (code, _) = s.call("PUT", "secret/x", Some(&root), Some(json!({"v": 1}))).await;
    assert_eq!(code, 204);

    // The same storage, now with a seal stanza.
    let key = key_file(dir.path(), "k", 3);
    let cfg = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(
        &s.config,
        format!("{cfg}seal \"static\" {{\n  current_key_id = \"k\"\n  current_key = \"file://{}\"\n}}\n", key.display()),
    )
    .expect("write");
    s.restart();
    let st = status(&s).await;
    assert_eq!(
        (&st["sealed"], &st["migration"], &st["type"]),
        (&json!(true), &json!(true), &json!("shamir")),
        "{st}"
    );
    let (code, b) = s.call("PUT", "sys/unseal", None, Some(json!({"key": keys[0]}))).await;
    assert_eq!(code, 400, "a share without migrate: {b}");
    assert!(b["errors"][0].as_str().is_some_and(|e| e.contains("-migrate")), "{b}");
    unseal_migrate(&s, &keys[..2]).await;
    let (code, b) = s.call("GET", "secret/x", Some(&root), None).await;
    assert_eq!((code, &b["data"]["v"]), (200, &json!(1)), "{b}");

    // From now on it unseals itself; the shares no longer unseal.
    s.restart();
    wait_unsealed(&s, Duration::from_secs(10)).await;
    let st = status(&s).await;
    assert_eq!(
        (&st["type"], &st["migration"], &st["recovery_seal"]),
        (&json!("static"), &json!(false), &json!(true)),
        "{st}"
    );
    let (code, _) = s.call("PUT", "sys/seal", Some(&root), None).await;
    assert_eq!(code, 204);
    let (code, b) =
        s.call("PUT", "sys/unseal", None, Some(json!({"key": keys[0], "migrate": true}))).await;
    assert_eq!(code, 400, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_migrate_with_a_disabled_seal_moves_back_to_shamir_shares() {
    let dir = tempdir();
    let key = key_file(dir.path(), "k", 4);
    let node_dir = dir.path().join("node");
    let base = default_config(&node_dir);
    let seal = |extra: &str| {
        format!(
            "{base}seal \"static\" {{\n  current_key_id = \"k\"\n  current_key = \"file://{}\"\n{extra}}}\n",
            key.display()
        )
    };
    let mut s = Server::start_with(&node_dir, &seal(""), "http");
    let (root, recovery) = init_recovery(&s, 3, 2).await;

    // The stanza marked disabled: the server stays sealed until the recovery shares migrate it.
    reconfigure(&mut s, &seal("  disabled = \"true\"\n"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status(&s).await;
    assert_eq!((&st["sealed"], &st["migration"]), (&json!(true), &json!(true)), "{st}");
    let (code, _) = s.call("PUT", "sys/unseal", None, Some(json!({"key": recovery[0]}))).await;
    assert_eq!(code, 400, "a share without migrate");
    unseal_migrate(&s, &recovery[1..]).await;

    // Without the stanza: a Shamir server whose shares are the old recovery shares.
    reconfigure(&mut s, &base);
    let st = status(&s).await;
    assert_eq!(
        (&st["type"], &st["sealed"], &st["t"]),
        (&json!("shamir"), &json!(true), &json!(2)),
        "{st}"
    );
    s.unseal(&recovery[..2]).await;
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&root), None).await;
    assert_eq!(code, 200);
}

/// A root token through generate-root with `shares` (a quorum of the current recovery shares).
async fn generate_root(s: &Server, shares: &[String]) -> String {
    use base64::Engine as _;
    let (code, st) = s.call("PUT", "sys/generate-root/attempt", None, Some(json!({}))).await;
    assert_eq!(code, 200, "{st}");
    let (otp, nonce) = (
        st["otp"].as_str().expect("otp").to_owned(),
        st["nonce"].as_str().expect("nonce").to_owned(),
    );
    let mut done = json!({});
    for k in shares {
        let (code, b) = s
            .call("PUT", "sys/generate-root/update", None, Some(json!({"key": k, "nonce": nonce})))
            .await;
        assert_eq!(code, 200, "{b}");
        done = b;
    }
    assert_eq!(done["complete"], json!(true), "{done}");
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(done["encoded_token"].as_str().expect("encoded"))
        .expect("b64");
    raw.iter().zip(otp.bytes()).map(|(a, b)| (a ^ b) as char).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_target_recovery_replaces_the_recovery_shares() {
    let dir = tempdir();
    let key = key_file(dir.path(), "k", 6);
    let node_dir = dir.path().join("node");
    let seal = format!(
        "seal \"static\" {{\n  current_key_id = \"k\"\n  current_key = \"file://{}\"\n}}\n",
        key.display()
    );
    let base = default_config(&node_dir);
    let mut s = Server::start_with(&node_dir, &format!("{base}{seal}"), "http");
    let (_, old) = init_recovery(&s, 3, 2).await;
    // The listener's default refuses them, as sys/rekey (OpenBao's disable_unauthed_rekey_endpoints).
    let (code, b) = s
        .call(
            "PUT",
            "sys/rekey-recovery-key/init",
            None,
            Some(json!({"secret_shares": 4, "secret_threshold": 3})),
        )
        .await;
    assert_eq!((code, &b["errors"]), (405, &json!(["unsupported operation"])), "{b}");
    // The same storage (a new config would make a new PostgreSQL database), endpoints served.
    let served = base.replace(
        "tls_disable = true\n",
        &format!("tls_disable = true\n{}", crate::common::KEY_SHARE_ENDPOINTS),
    );
    assert_ne!(served, base);
    reconfigure(&mut s, &format!("{served}{seal}"));
    wait_unsealed(&s, Duration::from_secs(10)).await;

    // Through the CLI, as `vault operator rekey -target=recovery`.
    let out = crate::common::ok(s.cli(
        None,
        &[
            "operator",
            "rekey",
            "-target=recovery",
            "-init",
            "-key-shares=4",
            "-key-threshold=3",
            "-format=json",
        ],
    ));
    let st: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (&st["started"], &st["required"], &st["t"]),
        (&json!(true), &json!(2), &json!(3)),
        "{st}"
    );
    let nonce = st["nonce"].as_str().expect("nonce").to_owned();
    let nonce_arg = format!("-nonce={nonce}");
    // sys/rekey is a separate attempt: none under way there.
    let (code, b) = s.call("GET", "sys/rekey/init", None, None).await;
    assert_eq!((code, &b["started"]), (200, &json!(false)), "{b}");
    crate::common::ok(s.cli(
        None,
        &["operator", "rekey", "-target=recovery", &nonce_arg, "-format=json", &old[2]],
    ));
    let out = crate::common::ok(s.cli(
        None,
        &["operator", "rekey", "-target=recovery", &nonce_arg, "-format=json", &old[0]],
    ));
    let done: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(done["complete"], json!(true), "{done}");
    let new: Vec<String> = done["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("k").to_owned())
        .collect();
    assert_eq!(new.len(), 4);
    let st = status(&s).await;
    assert_eq!((&st["type"], &st["t"], &st["n"]), (&json!("static"), &json!(3), &json!(4)), "{st}");

    // The old shares no longer make a quorum; three new ones do, for generate-root.
    let (code, b) = s
        .call(
            "PUT",
            "sys/rekey-recovery-key/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let n2 = b["nonce"].as_str().expect("nonce").to_owned();
    let mut last = (0, json!({}));
    for k in &old {
        last = s
            .call(
                "PUT",
                "sys/rekey-recovery-key/update",
                None,
                Some(json!({"key": k, "nonce": n2})),
            )
            .await;
    }
    assert_eq!(last.0, 400, "the old recovery shares were accepted: {}", last.1);
    let (code, _) = s.call("DELETE", "sys/rekey-recovery-key/init", None, None).await;
    assert_eq!(code, 204);
    let token = generate_root(&s, &new[1..]).await;
    let (code, b) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
    assert_eq!((code, &b["data"]["policies"]), (200, &json!(["root"])), "{b}");
    // The seal is untouched: a restart unseals by itself.
    s.restart();
    wait_unsealed(&s, Duration::from_secs(10)).await;

    // A Shamir server has no recovery key.
    let shamir_dir = dir.path().join("shamir");
    let shamir_cfg = crate::common::plain_config_with(
        &shamir_dir,
        crate::common::Storage::Default,
        crate::common::KEY_SHARE_ENDPOINTS,
    );
    let sh = Server::start_with(&shamir_dir, &shamir_cfg, "http");
    let (keys, _) = sh.init(1, 1).await;
    sh.unseal(&keys).await;
    let (code, b) = sh
        .call(
            "PUT",
            "sys/rekey-recovery-key/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!((code, &b["errors"]), (400, &json!(["recovery rekeying not supported"])), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_migrate_moves_a_static_seal_to_transit_and_back_to_another_static_key() {
    let dir = tempdir();
    let (kms, _, kms_root) = crate::agent::server_on_fixed_port(&dir.path().join("kms")).await;
    for (path, body) in
        [("sys/mounts/transit", json!({"type": "transit"})), ("transit/keys/autounseal", json!({}))]
    {
        let (s, b) = kms.call("POST", path, Some(&kms_root), Some(body)).await;
        assert!(s == 200 || s == 204, "{path}: {b}");
    }
    let (k1, k2) = (key_file(dir.path(), "k1", 1), key_file(dir.path(), "k2", 2));
    let stat = |id: &str, p: &std::path::Path, extra: &str| {
        format!(
            "seal \"static\" {{\n  current_key_id = \"{id}\"\n  current_key = \"file://{}\"\n{extra}}}\n",
            p.display()
        )
    };
    let transit = |extra: &str| {
        format!(
            "seal \"transit\" {{\n  address = \"{}\"\n  token = \"{kms_root}\"\n  key_name = \"autounseal\"\n  disable_renewal = \"true\"\n{extra}}}\n",
            kms.addr
        )
    };
    let node_dir = dir.path().join("node");
    let base = default_config(&node_dir);
    let mut s = Server::start_with(&node_dir, &format!("{base}{}", stat("k1", &k1, "")), "http");
    let (root, recovery) = init_recovery(&s, 3, 2).await;
    let (code, _) =
        s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    assert_eq!(code, 204);
    let (code, _) = s.call("PUT", "secret/x", Some(&root), Some(json!({"v": 1}))).await;
    assert_eq!(code, 204);

    // static -> transit: the old stanza disabled beside the new one, as Vault's migration.
    reconfigure(
        &mut s,
        &format!("{base}{}{}", stat("k1", &k1, "  disabled = \"true\"\n"), transit("")),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status(&s).await;
    assert_eq!(
        (&st["sealed"], &st["migration"], &st["type"]),
        (&json!(true), &json!(true), &json!("static")),
        "not unsealed by either seal before the migration: {st}"
    );
    let (code, b) = s.call("PUT", "sys/unseal", None, Some(json!({"key": recovery[0]}))).await;
    assert_eq!(code, 400, "a share without migrate: {b}");
    unseal_migrate(&s, &recovery[1..]).await;
    let (code, b) = s.call("GET", "secret/x", Some(&root), None).await;
    assert_eq!((code, &b["data"]["v"]), (200, &json!(1)), "{b}");
    // Only the transit stanza now: it unseals by itself; the static key no longer would.
    reconfigure(&mut s, &format!("{base}{}", transit("")));
    wait_unsealed(&s, Duration::from_secs(10)).await;
    assert_eq!(status(&s).await["type"], json!("transit"));
    reconfigure(&mut s, &format!("{base}{}", stat("k1", &k1, "")));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(&s).await["sealed"], json!(true), "the old static key still opens");

    // transit -> static with another key; the recovery shares are still the same.
    reconfigure(
        &mut s,
        &format!("{base}{}{}", transit("  disabled = \"true\"\n"), stat("k2", &k2, "")),
    );
    unseal_migrate(&s, &recovery[..2]).await;
    reconfigure(&mut s, &format!("{base}{}", stat("k2", &k2, "")));
    wait_unsealed(&s, Duration::from_secs(10)).await;
    let st = status(&s).await;
    assert_eq!((&st["type"], &st["migration"]), (&json!("static"), &json!(false)), "{st}");
    let (code, b) = s.call("GET", "secret/x", Some(&root), None).await;
    assert_eq!((code, &b["data"]["v"]), (200, &json!(1)), "{b}");
}
