//! The engine over a memory barrier, for what needs the engine's inside: the auto-rotation
//! schedule at a chosen time, and what the storage under the barrier holds.

use std::sync::Arc;
use std::time::Duration;

use coffer_core::{Operation, Response};
use coffer_storage::Backend;
use serde_json::{Map, Value, json};

use super::*;

async fn engine() -> (Arc<Transit>, Arc<coffer_storage::MemoryBackend>) {
    let (view, storage) = coffer_core::testkit::memory_view("logical/transit/").await;
    (Transit::new(view), storage)
}

async fn call(
    t: &Transit,
    op: Operation,
    path: &str,
    body: Value,
) -> coffer_core::Result<Response> {
    let m = coffer_core::testkit::mount_info("transit/", "transit", Duration::from_secs(86_400));
    coffer_core::testkit::call(t, &m, op, path, body, false).await
}

fn data(r: &Response) -> &Map<String, Value> {
    r.data.as_ref().expect("data")
}

#[tokio::test]
async fn keys_rotate_automatically_when_their_period_has_passed() {
    let (t, _) = engine().await;
    call(&t, Operation::Update, "keys/auto", json!({"auto_rotate_period": "1h"}))
        .await
        .expect("create");
    call(&t, Operation::Update, "keys/manual", json!({})).await.expect("create");
    let now = coffer_core::time::now_unix();
    t.rotate_due(now).await.expect("pass");
    let latest = |r: Response| data(&r)["latest_version"].clone();
    assert_eq!(
        latest(call(&t, Operation::Read, "keys/auto", json!({})).await.expect("read")),
        json!(1)
    );
    t.rotate_due(now + 3601).await.expect("pass");
    assert_eq!(
        latest(call(&t, Operation::Read, "keys/auto", json!({})).await.expect("read")),
        json!(2)
    );
    assert_eq!(
        latest(call(&t, Operation::Read, "keys/manual", json!({})).await.expect("read")),
        json!(1)
    );
    // Not due again until a period after the new version.
    t.rotate_due(now + 3602).await.expect("pass");
    assert_eq!(
        latest(call(&t, Operation::Read, "keys/auto", json!({})).await.expect("read")),
        json!(2)
    );
    let e = call(&t, Operation::Update, "keys/auto/config", json!({"auto_rotate_period": "10m"}))
        .await
        .expect_err("too short");
    assert!(e.to_string().contains("at least an hour"), "{e}");
}

#[tokio::test]
async fn key_material_never_reaches_storage_in_clear() {
    let (t, storage) = engine().await;
    for (name, ty) in
        [("aes", "aes256-gcm96"), ("ec", "ecdsa-p256"), ("h", "hmac"), ("ed", "ed25519")]
    {
        call(
            &t,
            Operation::Update,
            &format!("keys/{name}"),
            json!({"type": ty, "exportable": true}),
        )
        .await
        .expect("create");
    }
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for (kind, name) in [
        ("encryption-key", "aes"),
        ("signing-key", "ec"),
        ("hmac-key", "h"),
        ("signing-key", "ed"),
        ("hmac-key", "aes"),
    ] {
        let r = call(&t, Operation::Read, &format!("export/{kind}/{name}/1"), json!({}))
            .await
            .expect("export");
        let s = data(&r)["keys"]["1"].as_str().expect("key").to_owned();
        let raw = if s.starts_with("-----BEGIN") {
            let body: String = s.lines().filter(|l| !l.starts_with("-----")).collect();
            B64.decode(body).expect("pem body")
        } else {
            B64.decode(&s).expect("b64")
        };
        // Any 16-byte window of the material would betray it; the first one will do.
        secrets.push(raw[raw.len() - 32..raw.len() - 16].to_vec());
        secrets.push(s.as_bytes()[..24].to_vec());
    }
    let mut stack = vec![String::new()];
    let mut scanned = 0;
    while let Some(prefix) = stack.pop() {
        for k in storage.list(&prefix).await.expect("list") {
            let full = format!("{prefix}{k}");
            if full.ends_with('/') {
                stack.push(full);
                continue;
            }
            let v = storage.get(&full).await.expect("get").expect("value");
            scanned += 1;
            for s in &secrets {
                assert!(
                    !v.windows(s.len()).any(|w| w == s.as_slice()),
                    "key material in clear at {full}"
                );
            }
        }
    }
    assert!(scanned >= 4, "scanned {scanned}");
}

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

#[tokio::test]
async fn deletion_needs_deletion_allowed_and_trim_keeps_what_may_still_decrypt() {
    let (t, _) = engine().await;
    call(&t, Operation::Update, "keys/k", json!({})).await.expect("create");
    for _ in 0..3 {
        call(&t, Operation::Update, "keys/k/rotate", json!({})).await.expect("rotate");
    }
    let e = call(&t, Operation::Delete, "keys/k", json!({})).await.expect_err("not allowed");
    assert!(e.to_string().contains("deletion is not allowed"), "{e}");
    let e = call(&t, Operation::Update, "keys/k/trim", json!({"min_available_version": 2}))
        .await
        .expect_err("no min enc");
    assert!(e.to_string().contains("minimum encryption version is not set"), "{e}");
    call(
        &t,
        Operation::Update,
        "keys/k/config",
        json!({"min_decryption_version": 3, "min_encryption_version": 3}),
    )
    .await
    .expect("config");
    let e = call(&t, Operation::Update, "keys/k/trim", json!({"min_available_version": 4}))
        .await
        .expect_err("too high");
    assert!(e.to_string().contains("greater than"), "{e}");
    let r = call(&t, Operation::Update, "keys/k/trim", json!({"min_available_version": 3}))
        .await
        .expect("trim");
    let keys = data(&r)["keys"].as_object().expect("keys");
    assert_eq!(keys.keys().cloned().collect::<Vec<_>>(), vec!["3", "4"]);
    call(&t, Operation::Update, "keys/k/config", json!({"deletion_allowed": true}))
        .await
        .expect("config");
    call(&t, Operation::Delete, "keys/k", json!({})).await.expect("delete");
    assert!(matches!(call(&t, Operation::Read, "keys/k", json!({})).await, Err(Error::NotFound)));
}

#[tokio::test]
async fn a_batch_reports_each_items_failure_and_answers_400_with_the_results() {
    let (t, _) = engine().await;
    call(&t, Operation::Update, "keys/k", json!({})).await.expect("create");
    let r = call(
        &t,
        Operation::Update,
        "encrypt/k",
        json!({"batch_input": [{"plaintext": "aGk=", "reference": "a"}, {"plaintext": "%%%", "reference": "b"}]}),
    )
    .await
    .expect("batch");
    let (status, body) = r.raw.expect("raw answer");
    assert_eq!(status, 400);
    let results = body["data"]["batch_results"].as_array().expect("results");
    assert!(results[0]["ciphertext"].as_str().expect("ct").starts_with("vault:v1:"));
    assert_eq!(results[0]["reference"], json!("a"));
    assert_eq!(results[1]["error"], json!("illegal base64 data at input byte 0"));
    assert_eq!(results[1]["reference"], json!("b"));
    let r = call(
        &t,
        Operation::Update,
        "encrypt/k",
        json!({"partial_failure_response_code": 207, "batch_input": [{"plaintext": "aGk="}, {"plaintext": "%%%"}]}),
    )
    .await
    .expect("batch");
    assert_eq!(r.raw.expect("raw").0, 207);
}

#[tokio::test]
async fn a_backup_restores_to_a_key_that_decrypts_the_old_ciphertexts() {
    let (t, _) = engine().await;
    call(&t, Operation::Update, "keys/k", json!({})).await.expect("create");
    let e = call(&t, Operation::Read, "backup/k", json!({})).await.expect_err("not allowed");
    assert!(e.to_string().contains("exporting is disallowed"), "{e}");
    call(
        &t,
        Operation::Update,
        "keys/k/config",
        json!({"exportable": true, "allow_plaintext_backup": true}),
    )
    .await
    .expect("config");
    let e = call(&t, Operation::Update, "keys/k/config", json!({"exportable": false}))
        .await
        .expect_err("one way");
    assert!(e.to_string().contains("cannot be disabled"), "{e}");
    let c = call(&t, Operation::Update, "encrypt/k", json!({"plaintext": "aGVsbG8="}))
        .await
        .expect("enc");
    let c = data(&c)["ciphertext"].clone();
    let b = call(&t, Operation::Read, "backup/k", json!({})).await.expect("backup");
    let backup = data(&b)["backup"].clone();
    call(&t, Operation::Update, "restore/copy", json!({"backup": backup})).await.expect("restore");
    let e = call(&t, Operation::Update, "restore/copy", json!({"backup": backup}))
        .await
        .expect_err("exists");
    assert!(e.to_string().contains("already exists"), "{e}");
    let d =
        call(&t, Operation::Update, "decrypt/copy", json!({"ciphertext": c})).await.expect("dec");
    assert_eq!(data(&d)["plaintext"], json!("aGVsbG8="));
    let read = call(&t, Operation::Read, "keys/copy", json!({})).await.expect("read");
    assert_eq!(data(&read)["restore_info"]["version"], json!(1));
}

#[tokio::test]
async fn encrypt_creates_a_missing_key_only_on_create() {
    let (t, _) = engine().await;
    let e = call(&t, Operation::Update, "encrypt/new", json!({"plaintext": "aGk="}))
        .await
        .expect_err("update");
    assert!(e.to_string().contains("encryption key not found"), "{e}");
    call(&t, Operation::Create, "encrypt/new", json!({"plaintext": "aGk=", "context": "Y3R4"}))
        .await
        .expect("upsert");
    let r = call(&t, Operation::Read, "keys/new", json!({})).await.expect("read");
    assert_eq!(data(&r)["derived"], json!(true));
    assert_eq!(data(&r)["type"], json!("aes256-gcm96"));
}

#[tokio::test]
async fn random_and_hash_follow_vaults_path_forms() {
    let (t, _) = engine().await;
    let r =
        call(&t, Operation::Update, "random/16", json!({"format": "hex"})).await.expect("random");
    assert_eq!(data(&r)["random_bytes"].as_str().expect("hex").len(), 32);
    let r = call(&t, Operation::Update, "random/platform/8", json!({})).await.expect("random");
    assert_eq!(B64.decode(data(&r)["random_bytes"].as_str().expect("b64")).expect("b64").len(), 8);
    assert!(call(&t, Operation::Update, "random/nope/8", json!({})).await.is_err());
    assert!(call(&t, Operation::Update, "random", json!({"bytes": 0})).await.is_err());
    let r =
        call(&t, Operation::Update, "hash/sha2-256", json!({"input": "YWJj"})).await.expect("hash");
    assert_eq!(
        data(&r)["sum"],
        json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
}
