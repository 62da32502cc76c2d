//! A kv v2 read's answer is written out from the stored JSON without a tree in between (see
//! `Response::data_json`); every other reader of the answer gets its fields: a wrapped read, an
//! audit entry, and the bytes on the wire are what they were.

use serde_json::{Value, json};

use crate::common::{Server, tempdir};

const SECRET: &str = "kv2-read-canary-7f3a";

async fn server_with_secret() -> (tempfile::TempDir, Server, String) {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let t = Some(root.as_str());
    let (code, b) = s
        .call(
            "POST",
            "sys/mounts/secret",
            t,
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    // Nested, escaped and numeric values, and keys out of order: the stored form must read back
    // as the map Vault's clients get.
    let data =
        json!({"z": 1.5, "password": SECRET, "nested": {"b": [1, -2, null], "a": "q\"\u{1}é"}});
    let (code, b) = s.call("POST", "secret/data/app", t, Some(json!({"data": data}))).await;
    assert_eq!(code, 200, "{b}");
    (dir, s, root)
}

#[tokio::test]
async fn kv2_read_answer_is_the_stored_object_in_vaults_envelope_byte_for_byte() {
    let (_dir, s, root) = server_with_secret().await;
    let resp = s
        .http()
        .get(format!("{}/v1/secret/data/app", s.addr))
        .header("X-Vault-Token", &root)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("body");
    let v: Value = serde_json::from_str(&text).expect("json");
    // The same bytes as the answer written through a JSON tree (sorted keys, no spaces).
    assert_eq!(text, serde_json::to_string(&v).expect("encodes"));
    assert_eq!(v["data"]["data"]["password"], SECRET);
    assert_eq!(v["data"]["data"]["nested"]["a"], "q\"\u{1}é");
    assert_eq!(v["data"]["data"]["z"], 1.5);
    assert_eq!(v["data"]["metadata"]["version"], 1);
    assert_eq!(v["data"]["metadata"]["custom_metadata"], Value::Null);
    assert_eq!(v["data"]["metadata"]["deletion_time"], "");
    assert!(v["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
    assert_eq!(v["mount_type"], "kv");
}

#[tokio::test]
async fn kv2_read_wrapped_unwraps_to_the_plain_answers_data() {
    let (_dir, s, root) = server_with_secret().await;
    let (code, plain) = s.call("GET", "secret/data/app", Some(&root), None).await;
    assert_eq!(code, 200, "{plain}");
    let (code, wrapped) = s
        .call_with("GET", "secret/data/app", Some(&root), None, &[("X-Vault-Wrap-TTL", "60")])
        .await;
    assert_eq!(code, 200, "{wrapped}");
    assert_eq!(wrapped["data"], Value::Null, "{wrapped}");
    assert!(!wrapped.to_string().contains(SECRET), "{wrapped}");
    let token = wrapped["wrap_info"]["token"].as_str().expect("wrapping token");
    let (code, unwrapped) = s.call("POST", "sys/wrapping/unwrap", Some(token), None).await;
    assert_eq!(code, 200, "{unwrapped}");
    assert_eq!(unwrapped["data"], plain["data"]);
}

#[tokio::test]
async fn kv2_read_audit_entry_holds_the_answers_fields_hmaced() {
    let (dir, s, root) = server_with_secret().await;
    let log = dir.path().join("audit.log");
    let body = json!({"type": "file", "options": {"file_path": log}});
    let (code, b) = s.call("PUT", "sys/audit/file", Some(&root), Some(body)).await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s.call("GET", "secret/data/app", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let text = std::fs::read_to_string(&log).expect("audit log");
    assert!(!text.contains(SECRET), "the secret is in the audit log");
    let entry: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "response" && e["request"]["path"] == "secret/data/app")
        .expect("a response entry for the read");
    let data = &entry["response"]["data"];
    let hashed = data["data"]["password"].as_str().expect("password field");
    assert!(hashed.starts_with("hmac-sha256:"), "{entry}");
    assert_eq!(data["metadata"]["version"], 1, "{entry}");
}
