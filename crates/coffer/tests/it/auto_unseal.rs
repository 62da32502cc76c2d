//! `seal "transit"`: a server whose unseal key is wrapped by another Coffer's transit engine
//! unseals itself at init and after restarts, waits while the transit server is unreachable,
//! and refuses key shares.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Server, default_config, tempdir};

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
