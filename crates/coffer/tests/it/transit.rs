//! The transit engine through HTTP, through `vaultrs` (a third-party Vault client), checked by
//! `openssl` (an independent implementation) and through `coffer transit encrypt|decrypt`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{BIN, Server, tempdir};

async fn mounted(dir: &Path) -> (Server, String) {
    let (s, _, root) = Server::ready(dir).await;
    let (code, b) =
        s.call("POST", "sys/mounts/transit", Some(&root), Some(json!({"type": "transit"}))).await;
    assert_eq!(code, 204, "{b}");
    (s, root)
}

async fn post(s: &Server, root: &str, path: &str, body: Value) -> Value {
    let (code, b) = s.call("POST", &format!("transit/{path}"), Some(root), Some(body)).await;
    assert_eq!(code, 200, "{path}: {b}");
    b["data"].clone()
}

async fn get(s: &Server, root: &str, path: &str) -> Value {
    let (code, b) = s.call("GET", &format!("transit/{path}"), Some(root), None).await;
    assert_eq!(code, 200, "{path}: {b}");
    b["data"].clone()
}

async fn refused(s: &Server, root: &str, path: &str, body: Value) -> String {
    let (code, b) = s.call("POST", &format!("transit/{path}"), Some(root), Some(body)).await;
    assert_eq!(code, 400, "{path}: {b}");
    b["errors"][0].as_str().expect("error").to_owned()
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

#[tokio::test]
async fn ciphertexts_survive_rotation_and_are_refused_below_min_decryption_version() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    for t in ["aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "rsa-2048"] {
        post(&s, &root, &format!("keys/{t}"), json!({"type": t})).await;
        let c1 = post(&s, &root, &format!("encrypt/{t}"), json!({"plaintext": b64(b"one")})).await;
        let c1 = c1["ciphertext"].as_str().expect("ct").to_owned();
        assert!(c1.starts_with("vault:v1:"), "{c1}");
        post(&s, &root, &format!("keys/{t}/rotate"), json!({})).await;
        let c2 = post(&s, &root, &format!("encrypt/{t}"), json!({"plaintext": b64(b"two")})).await;
        assert_eq!(c2["key_version"], json!(2));
        let d = post(&s, &root, &format!("decrypt/{t}"), json!({"ciphertext": c1})).await;
        assert_eq!(d["plaintext"], json!(b64(b"one")), "{t}: decrypts after rotation");
        let w = post(&s, &root, &format!("rewrap/{t}"), json!({"ciphertext": c1})).await;
        let rewrapped = w["ciphertext"].as_str().expect("ct").to_owned();
        assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
        post(&s, &root, &format!("keys/{t}/config"), json!({"min_decryption_version": 2})).await;
        let e = refused(&s, &root, &format!("decrypt/{t}"), json!({"ciphertext": c1})).await;
        assert_eq!(e, "ciphertext or signature version is disallowed by policy (too old)");
        let d = post(&s, &root, &format!("decrypt/{t}"), json!({"ciphertext": rewrapped})).await;
        assert_eq!(d["plaintext"], json!(b64(b"one")));
    }
    // Associated data is authenticated.
    let c = post(
        &s,
        &root,
        "encrypt/aes256-gcm96",
        json!({"plaintext": b64(b"x"), "associated_data": b64(b"ad")}),
    )
    .await;
    let e = refused(
        &s,
        &root,
        "decrypt/aes256-gcm96",
        json!({"ciphertext": c["ciphertext"], "associated_data": b64(b"other")}),
    )
    .await;
    assert!(e.contains("authentication failed"), "{e}");
    // A batch answers per item, the failures included.
    let (code, b) = s
        .call(
            "POST",
            "transit/decrypt/aes256-gcm96",
            Some(&root),
            Some(json!({"batch_input": [
                {"ciphertext": c["ciphertext"], "associated_data": b64(b"ad"), "reference": "good"},
                {"ciphertext": "vault:v1:AAAA", "reference": "bad"},
            ]})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    let r = &b["data"]["batch_results"];
    assert_eq!(r[0]["plaintext"], json!(b64(b"x")));
    assert_eq!(r[0]["reference"], json!("good"));
    assert!(r[1]["error"].as_str().is_some_and(|e| !e.is_empty()), "{b}");
}

#[tokio::test]
async fn convergent_encryption_is_deterministic_and_derived_keys_differ_per_context() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    let e = refused(&s, &root, "keys/c", json!({"convergent_encryption": true})).await;
    assert_eq!(e, "convergent encryption requires derivation to be enabled");
    post(&s, &root, "keys/c", json!({"derived": true, "convergent_encryption": true})).await;
    let key = get(&s, &root, "keys/c").await;
    assert_eq!(key["convergent_encryption_version"], json!(3));
    assert_eq!(key["kdf"], json!("hkdf_sha256"));
    let enc = |ctx: &'static [u8], pt: &'static [u8]| {
        let s = &s;
        let root = &root;
        async move {
            post(s, root, "encrypt/c", json!({"plaintext": b64(pt), "context": b64(ctx)})).await
                ["ciphertext"]
                .as_str()
                .expect("ct")
                .to_owned()
        }
    };
    let a1 = enc(b"tenant-1", b"same").await;
    let a2 = enc(b"tenant-1", b"same").await;
    let b1 = enc(b"tenant-2", b"same").await;
    assert_eq!(a1, a2, "convergent: same plaintext and context, same ciphertext");
    assert_ne!(a1, b1, "another context derives another key");
    assert_ne!(a1, enc(b"tenant-1", b"other").await);
    let e = refused(&s, &root, "decrypt/c", json!({"ciphertext": a1, "context": b64(b"tenant-2")}))
        .await;
    assert!(e.contains("authentication failed"), "{e}");
    let e = refused(&s, &root, "encrypt/c", json!({"plaintext": b64(b"x")})).await;
    assert!(e.contains("missing 'context'"), "{e}");

    // A derived (non-convergent) key: random nonces, and a context's key opens only its own.
    post(&s, &root, "keys/d", json!({"derived": true})).await;
    let c =
        post(&s, &root, "encrypt/d", json!({"plaintext": b64(b"p"), "context": b64(b"a")})).await;
    let c2 =
        post(&s, &root, "encrypt/d", json!({"plaintext": b64(b"p"), "context": b64(b"a")})).await;
    assert_ne!(c["ciphertext"], c2["ciphertext"]);
    refused(&s, &root, "decrypt/d", json!({"ciphertext": c["ciphertext"], "context": b64(b"b")}))
        .await;
    // Derived ed25519 keys: each context signs with its own key pair.
    post(&s, &root, "keys/sig", json!({"type": "ed25519", "derived": true})).await;
    let pk = |ctx: &'static [u8]| {
        let s = &s;
        let root = &root;
        async move {
            let (code, b) = s
                .call("GET", &format!("transit/keys/sig?context={}", b64(ctx)), Some(root), None)
                .await;
            assert_eq!(code, 200, "{b}");
            b["data"]["keys"]["1"]["public_key"].as_str().expect("pk").to_owned()
        }
    };
    assert_ne!(pk(b"one").await, pk(b"two").await);
}

fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("openssl").args(args).current_dir(dir).output().expect("openssl")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write");
}

fn sig_bytes(sig: &Value) -> Vec<u8> {
    let s = sig.as_str().expect("signature");
    B64.decode(s.split(':').nth(2).expect("vault:vN:")).expect("b64")
}

#[tokio::test]
async fn signatures_verify_with_openssl_and_exported_keys_parse() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    let w = dir.path();
    let msg = b"a message to sign";
    write(w, "msg", msg);
    for (t, hash, dgst) in [
        ("ecdsa-p256", "sha2-256", "-sha256"),
        ("ecdsa-p256", "sha2-512", "-sha512"),
        ("ecdsa-p384", "sha2-384", "-sha384"),
        ("ecdsa-p384", "sha2-256", "-sha256"),
        ("ecdsa-p521", "sha2-512", "-sha512"),
        ("rsa-2048", "sha2-256", "-sha256"),
        ("rsa-3072", "sha2-384", "-sha384"),
    ] {
        let name = format!("{t}-{hash}");
        post(&s, &root, &format!("keys/{name}"), json!({"type": t, "exportable": true})).await;
        let key = get(&s, &root, &format!("keys/{name}")).await;
        let pem = key["keys"]["1"]["public_key"].as_str().expect("public key");
        write(w, "pub.pem", pem.as_bytes());
        let algs: &[&str] = if t.starts_with("rsa") { &["pss", "pkcs1v15"] } else { &[""] };
        for alg in algs {
            let sig = post(
                &s,
                &root,
                &format!("sign/{name}"),
                json!({"input": b64(msg), "hash_algorithm": hash, "signature_algorithm": alg}),
            )
            .await;
            write(w, "sig", &sig_bytes(&sig["signature"]));
            let mut args = vec!["dgst", dgst, "-verify", "pub.pem", "-signature", "sig"];
            if *alg == "pss" {
                args.extend(["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-2"]);
            }
            args.push("msg");
            let out = openssl(&args, w);
            assert!(
                out.status.success(),
                "{name} {alg}: openssl refused: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Prehashed input signs the same digest.
            let digest = openssl(&["dgst", dgst, "-binary", "msg"], w).stdout;
            let sig = post(
                &s,
                &root,
                &format!("sign/{name}"),
                json!({"input": b64(&digest), "prehashed": true, "hash_algorithm": hash, "signature_algorithm": alg}),
            )
            .await;
            let v = post(
                &s,
                &root,
                &format!("verify/{name}"),
                json!({"input": b64(msg), "signature": sig["signature"], "hash_algorithm": hash, "signature_algorithm": alg}),
            )
            .await;
            assert_eq!(v["valid"], json!(true), "{name} {alg} prehashed");
        }
        // The exported private key is one openssl reads, and what it signs Coffer verifies.
        let exp = get(&s, &root, &format!("export/signing-key/{name}/1")).await;
        let private = exp["keys"]["1"].as_str().expect("private key");
        let label = if t.starts_with("rsa") { "RSA PRIVATE KEY" } else { "EC PRIVATE KEY" };
        assert!(private.starts_with(&format!("-----BEGIN {label}-----")), "{private}");
        write(w, "key.pem", private.as_bytes());
        let out = openssl(&["dgst", dgst, "-sign", "key.pem", "-out", "osig", "msg"], w);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let osig = std::fs::read(w.join("osig")).expect("sig");
        let v = post(
            &s,
            &root,
            &format!("verify/{name}"),
            json!({"input": b64(msg), "hash_algorithm": hash, "signature_algorithm": "pkcs1v15",
                   "signature": format!("vault:v1:{}", b64(&osig))}),
        )
        .await;
        assert_eq!(v["valid"], json!(true), "{name}: openssl's signature with the export");
    }
    // Ed25519: pure signatures over the message, checked with the exported PEM public key.
    post(&s, &root, "keys/ed", json!({"type": "ed25519"})).await;
    let sig = post(&s, &root, "sign/ed", json!({"input": b64(msg)})).await;
    write(w, "sig", &sig_bytes(&sig["signature"]));
    let exp = s.call("GET", "transit/export/public-key/ed/1?format=pem", Some(&root), None).await;
    assert_eq!(exp.0, 200, "{}", exp.1);
    write(w, "ed.pem", exp.1["data"]["keys"]["1"].as_str().expect("pem").as_bytes());
    let out = openssl(
        &[
            "pkeyutl", "-verify", "-pubin", "-inkey", "ed.pem", "-rawin", "-in", "msg", "-sigfile",
            "sig",
        ],
        w,
    );
    assert!(out.status.success(), "ed25519: {}", String::from_utf8_lossy(&out.stderr));
    // JWS marshaling: fixed-size r||s in base64url, verified by Coffer, refused as ASN.1.
    let jws = post(
        &s,
        &root,
        "sign/ecdsa-p256-sha2-256",
        json!({"input": b64(msg), "marshaling_algorithm": "jws"}),
    )
    .await;
    let raw =
        jws["signature"].as_str().expect("sig").rsplit(':').next().expect("b64url").to_owned();
    assert!(!raw.contains('=') && !raw.contains('+') && !raw.contains('/'), "{raw}");
    let v = post(
        &s,
        &root,
        "verify/ecdsa-p256-sha2-256",
        json!({"input": b64(msg), "signature": jws["signature"], "marshaling_algorithm": "jws"}),
    )
    .await;
    assert_eq!(v["valid"], json!(true));
    // A batch of signatures, one failing.
    let (code, b) = s
        .call(
            "POST",
            "transit/sign/ed",
            Some(&root),
            Some(json!({"batch_input": [{"input": b64(b"a")}, {"input": "%%%"}]})),
        )
        .await;
    assert_eq!(code, 200, "sign batches report failures in the items only, as Vault: {b}");
    assert!(b["data"]["batch_results"][0]["signature"].is_string());
    assert!(b["data"]["batch_results"][1]["error"].is_string());
}

#[tokio::test]
async fn datakeys_hmacs_hashes_random_trim_export_and_backup() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    post(&s, &root, "keys/k", json!({"exportable": true, "allow_plaintext_backup": true})).await;
    for bits in [128, 256, 512] {
        let dk = post(&s, &root, "datakey/plaintext/k", json!({"bits": bits})).await;
        let plain = B64.decode(dk["plaintext"].as_str().expect("pt")).expect("b64");
        assert_eq!(plain.len() * 8, bits);
        let back = post(&s, &root, "decrypt/k", json!({"ciphertext": dk["ciphertext"]})).await;
        assert_eq!(back["plaintext"], dk["plaintext"]);
    }
    let wrapped = post(&s, &root, "datakey/wrapped/k", json!({})).await;
    assert!(wrapped.get("plaintext").is_none() && wrapped["ciphertext"].is_string());
    assert_eq!(
        refused(&s, &root, "datakey/wrapped/k", json!({"bits": 100})).await,
        "invalid bit length"
    );

    // HMAC: the exported HMAC key and openssl agree with the engine.
    let h = post(&s, &root, "hmac/k/sha2-384", json!({"input": b64(b"data")})).await;
    let hkey = get(&s, &root, "export/hmac-key/k/1").await;
    let hkey = B64.decode(hkey["keys"]["1"].as_str().expect("key")).expect("b64");
    write(dir.path(), "data", b"data");
    let hex: String = hkey.iter().map(|b| format!("{b:02x}")).collect();
    let out = openssl(
        &[
            "dgst",
            "-sha384",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{hex}"),
            "-binary",
            "data",
        ],
        dir.path(),
    );
    assert_eq!(h["hmac"], json!(format!("vault:v1:{}", b64(&out.stdout))));
    let v = post(&s, &root, "verify/k/sha2-384", json!({"input": b64(b"data"), "hmac": h["hmac"]}))
        .await;
    assert_eq!(v["valid"], json!(true));
    let v = post(&s, &root, "verify/k/sha2-384", json!({"input": b64(b"datb"), "hmac": h["hmac"]}))
        .await;
    assert_eq!(v["valid"], json!(false));

    let sum =
        post(&s, &root, "hash/sha2-512", json!({"input": b64(b"abc"), "format": "base64"})).await;
    write(dir.path(), "abc", b"abc");
    let expected = openssl(&["dgst", "-sha512", "-binary", "abc"], dir.path()).stdout;
    assert_eq!(sum["sum"], json!(b64(&expected)));
    let e = refused(&s, &root, "random/hex/24", json!({})).await;
    assert!(e.contains("unsupported entropy source"), "{e}");
    let r = post(&s, &root, "random/24", json!({"format": "hex"})).await;
    assert_eq!(r["random_bytes"].as_str().expect("hex").len(), 48);
    assert!(refused(&s, &root, "random", json!({"bytes": 200000})).await.contains("less than"));

    // Trim, then export and backup/restore.
    for _ in 0..2 {
        post(&s, &root, "keys/k/rotate", json!({})).await;
    }
    post(
        &s,
        &root,
        "keys/k/config",
        json!({"min_decryption_version": 2, "min_encryption_version": 3}),
    )
    .await;
    post(&s, &root, "keys/k/trim", json!({"min_available_version": 2})).await;
    let key = get(&s, &root, "keys/k").await;
    assert_eq!(key["min_available_version"], json!(2));
    assert!(key["keys"].get("1").is_none() && key["keys"].get("2").is_some());
    let all = get(&s, &root, "export/encryption-key/k").await;
    assert_eq!(all["keys"].as_object().expect("keys").len(), 2);
    let backup = get(&s, &root, "backup/k").await["backup"].clone();
    let (code, b) =
        s.call("POST", "transit/restore/k2", Some(&root), Some(json!({"backup": backup}))).await;
    assert_eq!(code, 204, "{b}");
    let c = post(&s, &root, "encrypt/k", json!({"plaintext": b64(b"r")})).await;
    let d = post(&s, &root, "decrypt/k2", json!({"ciphertext": c["ciphertext"]})).await;
    assert_eq!(d["plaintext"], json!(b64(b"r")));
    // Deletion only when allowed; LIST names the keys.
    let (code, _) = s.call("DELETE", "transit/keys/k2", Some(&root), None).await;
    assert_eq!(code, 400);
    post(&s, &root, "keys/k2/config", json!({"deletion_allowed": true})).await;
    let (code, _) = s.call("DELETE", "transit/keys/k2", Some(&root), None).await;
    assert_eq!(code, 204);
    let (code, b) = s.call("LIST", "transit/keys", Some(&root), None).await;
    assert_eq!((code, b["data"]["keys"].clone()), (200, json!(["k"])));
}

fn vault(s: &Server, token: &str) -> VaultClient {
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&s.addr).token(token);
    VaultClient::new(b.build().expect("settings")).expect("client")
}

#[tokio::test]
async fn vaultrs_uses_transit_unchanged() {
    use vaultrs::api::transit::KeyType;
    use vaultrs::api::transit::requests::{
        CreateKeyRequest, DataKeyType, ExportKeyType, ExportVersion,
    };
    use vaultrs::api::transit::responses::ReadKeyData;
    use vaultrs::transit::{data, generate, key};

    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    let c = vault(&s, &root);
    key::create(&c, "transit", "app", Some(CreateKeyRequest::builder().exportable(true)))
        .await
        .expect("create");
    key::create(
        &c,
        "transit",
        "signer",
        Some(CreateKeyRequest::builder().key_type(KeyType::EcdsaP256)),
    )
    .await
    .expect("create signer");
    let k = key::read(&c, "transit", "app").await.expect("read");
    assert!(matches!(k.keys, ReadKeyData::Symmetric(ref m) if m.contains_key("1")));
    let k = key::read(&c, "transit", "signer").await.expect("read signer");
    assert!(
        matches!(k.keys, ReadKeyData::Asymmetric(ref m) if m["1"].public_key.contains("PUBLIC KEY"))
    );
    assert_eq!(key::list(&c, "transit").await.expect("list").keys, vec!["app", "signer"]);

    let ct = data::encrypt(&c, "transit", "app", &b64(b"hello"), None).await.expect("encrypt");
    key::rotate(&c, "transit", "app").await.expect("rotate");
    let pt = data::decrypt(&c, "transit", "app", &ct.ciphertext, None).await.expect("decrypt");
    assert_eq!(pt.plaintext, b64(b"hello"));
    let re = data::rewrap(&c, "transit", "app", &ct.ciphertext, None).await.expect("rewrap");
    assert!(re.ciphertext.starts_with("vault:v2:"));
    let sig = data::sign(&c, "transit", "signer", &b64(b"msg"), None).await.expect("sign");
    let ok = data::verify(
        &c,
        "transit",
        "signer",
        &b64(b"msg"),
        Some(
            vaultrs::api::transit::requests::VerifySignedDataRequest::builder()
                .signature(&sig.signature),
        ),
    )
    .await
    .expect("verify");
    assert!(ok.valid);
    let dk = generate::data_key(&c, "transit", "app", DataKeyType::Plaintext, None)
        .await
        .expect("datakey");
    assert!(dk.plaintext.is_some());
    let rnd = generate::random_bytes(
        &c,
        "transit",
        vaultrs::api::transit::OutputFormat::Base64,
        vaultrs::api::transit::requests::RandomBytesSource::Platform,
        None,
    )
    .await
    .expect("random");
    assert!(!rnd.random_bytes.is_empty());
    let h = generate::hash(&c, "transit", &b64(b"abc"), None).await.expect("hash");
    assert_eq!(h.sum, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let mac = generate::hmac(&c, "transit", "app", &b64(b"abc"), None).await.expect("hmac");
    assert!(mac.hmac.starts_with("vault:v2:"));
    let exp =
        key::export(&c, "transit", "app", ExportKeyType::EncryptionKey, ExportVersion::Latest)
            .await
            .expect("export");
    assert_eq!(exp.keys.len(), 1);
}

#[tokio::test]
async fn key_material_never_reaches_storage_logs_or_audit_in_clear() {
    let dir = tempdir();
    // SQLite on purpose: the test reads the database file itself.
    let (s, _, root) = Server::ready_sqlite(dir.path()).await;
    let audit = dir.path().join("audit.log");
    crate::audit::enable_file_device(&s, &root, &audit).await;
    let (code, b) =
        s.call("POST", "sys/mounts/transit", Some(&root), Some(json!({"type": "transit"}))).await;
    assert_eq!(code, 204, "{b}");
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for (name, t, kind) in [
        ("aes", "aes256-gcm96", "encryption-key"),
        ("ec", "ecdsa-p384", "signing-key"),
        ("rsa", "rsa-2048", "signing-key"),
        ("mac", "hmac", "hmac-key"),
    ] {
        post(&s, &root, &format!("keys/{name}"), json!({"type": t, "exportable": true})).await;
        post(&s, &root, &format!("keys/{name}/rotate"), json!({})).await;
        let exp = get(&s, &root, &format!("export/{kind}/{name}")).await;
        for (_, v) in exp["keys"].as_object().expect("keys") {
            let text = v.as_str().expect("key");
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            let raw = B64.decode(&body).expect("b64");
            // 16 bytes of private material: for SEC1 (EC), the scalar right after the
            // 8-byte header; for PKCS#1 (RSA), the middle (private exponent and primes).
            let at = if t.starts_with("ecdsa") { 8 } else { raw.len() / 2 - 8 };
            needles.push(raw[at..at + 16].to_vec());
            if !text.starts_with("-----") {
                needles.push(text.as_bytes().to_vec());
            }
        }
        if t != "hmac" {
            let _ = post(&s, &root, &format!("hmac/{name}"), json!({"input": b64(b"x")})).await;
        }
    }
    let dk = post(&s, &root, "datakey/plaintext/aes", json!({})).await;
    let dk_text = dk["plaintext"].as_str().expect("dk").to_owned();
    needles.push(dk_text.as_bytes().to_vec());
    needles.push(B64.decode(&dk_text).expect("b64"));
    let secret_pt = b64(b"planted-transit-plaintext-7c1e");
    let ct = post(&s, &root, "encrypt/aes", json!({"plaintext": secret_pt})).await;
    post(&s, &root, "decrypt/aes", json!({"ciphertext": ct["ciphertext"]})).await;
    needles.push(secret_pt.as_bytes().to_vec());
    needles.push(b"planted-transit-plaintext-7c1e".to_vec());

    let mut files = vec![audit.clone(), s.log.clone()];
    for f in std::fs::read_dir(dir.path()).expect("dir") {
        let p = f.expect("entry").path();
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("coffer.db")) {
            files.push(p);
        }
    }
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        assert!(!bytes.is_empty(), "{} is empty", f.display());
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_slice()),
                "key material or plaintext in clear in {}",
                f.display()
            );
        }
    }
}

/// The largest resident set the process reached, in KiB, from /proc (0 once it has exited).
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the CLI with `args`, sampling its peak memory until it exits; (success, stderr, peak KiB).
fn cli_measured(s: &Server, root: &str, args: &[&str]) -> (bool, String, u64) {
    let child = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", s.dir.join("home"))
        .env("COFFER_ADDR", &s.addr)
        .env("COFFER_TOKEN", root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut peak = 0;
    let waiter = std::thread::spawn(move || child.wait_with_output().expect("wait"));
    while !waiter.is_finished() {
        peak = peak.max(vm_hwm_kib(pid));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = waiter.join().expect("join");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_streams_a_large_file_in_bounded_memory_and_detects_tampering() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    post(&s, &root, "keys/files", json!({})).await;
    std::fs::create_dir_all(s.dir.join("home")).expect("home");
    let w = dir.path();
    // 192 MiB of a pattern that is not all alike, bigger than any buffer the CLI has.
    let big = w.join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).expect("create"));
        let mut block = vec![0u8; 1 << 20];
        for i in 0..192u32 {
            for (j, b) in block.iter_mut().enumerate() {
                *b = (j as u32).wrapping_mul(31).wrapping_add(i) as u8;
            }
            f.write_all(&block).expect("write");
        }
    }
    let enc = w.join("big.enc");
    let dec = w.join("big.out");
    let (ok, err, peak_enc) = cli_measured(
        &s,
        &root,
        &[
            "transit",
            "encrypt",
            "-key=files",
            &format!("-in={}", big.display()),
            &format!("-out={}", enc.display()),
        ],
    );
    assert!(ok, "encrypt: {err}");
    let (ok, err, peak_dec) = cli_measured(
        &s,
        &root,
        &[
            "transit",
            "decrypt",
            &format!("-in={}", enc.display()),
            &format!("-out={}", dec.display()),
        ],
    );
    assert!(ok, "decrypt: {err}");
    // Far below the 192 MiB input: the process never holds it whole.
    for (what, peak) in [("encrypt", peak_enc), ("decrypt", peak_dec)] {
        assert!(peak > 0, "{what}: no memory sample");
        assert!(peak < 64 * 1024, "{what}: peak resident memory {peak} KiB");
    }
    let same = Command::new("cmp").arg(&big).arg(&dec).status().expect("cmp");
    assert!(same.success(), "decrypted file differs from the original");
    std::fs::remove_file(&big).expect("rm");
    std::fs::remove_file(&dec).expect("rm");

    // A small stream through stdin and stdout, then tampered with in every way.
    let small =
        s.cli_stdin(Some(&root), &["transit", "encrypt", "-key=files"], Some("hello, transit\n"));
    assert!(small.status.success(), "{}", String::from_utf8_lossy(&small.stderr));
    let small_ct = small.stdout;
    assert!(small_ct.starts_with(b"COFFERTS\x01"));
    let decrypt = |bytes: &[u8]| {
        let p = w.join("t.enc");
        std::fs::write(&p, bytes).expect("write");
        let out = s.cli(Some(&root), &["transit", "decrypt", &format!("-in={}", p.display())]);
        (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, out, _) = decrypt(&small_ct);
    assert!(ok);
    assert_eq!(out, b"hello, transit\n");
    let mut flipped = small_ct.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 1;
    let (ok, _, err) = decrypt(&flipped);
    assert!(!ok && err.contains("does not authenticate"), "{err}");
    let (ok, _, err) = decrypt(&small_ct[..small_ct.len() - 1]);
    assert!(!ok && err.contains("truncated"), "{err}");
    let mut extra = small_ct.clone();
    extra.push(0);
    let (ok, _, err) = decrypt(&extra);
    assert!(!ok && err.contains("after its final chunk"), "{err}");

    // A header naming another path than a decrypt endpoint is refused before any request.
    let hl = u32::from_be_bytes([small_ct[9], small_ct[10], small_ct[11], small_ct[12]]) as usize;
    let mut header: Value = serde_json::from_slice(&small_ct[13..13 + hl]).expect("header json");
    header["mount"] = json!("sys/../sys/policies/acl/x?");
    let hjson = serde_json::to_vec(&header).expect("json");
    let mut forged = small_ct[..9].to_vec();
    forged.extend_from_slice(&(hjson.len() as u32).to_be_bytes());
    forged.extend_from_slice(&hjson);
    forged.extend_from_slice(&small_ct[13 + hl..]);
    let (ok, _, err) = decrypt(&forged);
    assert!(!ok && err.contains("invalid mount path"), "{err}");

    // Several chunks: dropping the final one, or swapping two, is refused.
    let two_chunks = vec![7u8; 64 * 1024 + 10];
    let p = w.join("two.bin");
    std::fs::write(&p, &two_chunks).expect("write");
    let out =
        s.cli(Some(&root), &["transit", "encrypt", "-key=files", &format!("-in={}", p.display())]);
    assert!(out.status.success());
    let ct = out.stdout;
    let hlen = u32::from_be_bytes([ct[9], ct[10], ct[11], ct[12]]) as usize;
    let body = 13 + hlen;
    let first_len = 5 + 64 * 1024 + 16;
    let (ok, _, err) = decrypt(&ct[..body + first_len]);
    assert!(!ok && err.contains("truncated"), "{err}");
    let mut swapped = ct[..body].to_vec();
    swapped.extend_from_slice(&ct[body + first_len..]);
    swapped.extend_from_slice(&ct[body..body + first_len]);
    let (ok, _, err) = decrypt(&swapped);
    assert!(!ok && err.contains("does not authenticate"), "{err}");
    // A decryption into a file that fails leaves no file behind.
    let target = w.join("never.out");
    let bad = w.join("bad.enc");
    std::fs::write(&bad, &swapped).expect("write");
    let out = s.cli(
        Some(&root),
        &[
            "transit",
            "decrypt",
            &format!("-in={}", bad.display()),
            &format!("-out={}", target.display()),
        ],
    );
    assert!(!out.status.success());
    assert!(!target.exists());

    let help = s.cli(None, &["transit", "encrypt", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("64 KiB") && help.contains("datakey"), "{help}");
}

#[tokio::test]
async fn the_engine_documents_its_paths_in_help_and_openapi() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    let (code, doc) = s.call("GET", "sys/internal/specs/openapi", Some(&root), None).await;
    assert_eq!(code, 200, "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/transit/keys/{name}",
        "/transit/encrypt/{name}",
        "/transit/datakey/{plaintext}/{name}",
        "/transit/sign/{name}/{urlalgorithm}",
        "/transit/export/{type}/{name}/{version}",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    let (code, help) = s.call("GET", "transit/encrypt/k?help=1", Some(&root), None).await;
    assert_eq!(code, 200, "{help}");
    assert!(help["help"].as_str().is_some_and(|h| h.contains("associated_data")), "{help}");
}

#[tokio::test]
async fn policies_decide_who_may_encrypt_decrypt_and_create_keys() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    post(&s, &root, "keys/orders", json!({})).await;
    let policy = "path \"transit/encrypt/*\" {\n  capabilities = [\"update\"]\n}\n";
    let (code, b) = s
        .call("PUT", "sys/policies/acl/enc-only", Some(&root), Some(json!({"policy": policy})))
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["enc-only"]})))
        .await;
    assert_eq!(code, 200, "{b}");
    let app = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let (code, b) = s
        .call("POST", "transit/encrypt/orders", Some(&app), Some(json!({"plaintext": b64(b"x")})))
        .await;
    assert_eq!(code, 200, "{b}");
    let ct = b["data"]["ciphertext"].clone();
    let (code, _) =
        s.call("POST", "transit/decrypt/orders", Some(&app), Some(json!({"ciphertext": ct}))).await;
    assert_eq!(code, 403, "encrypt-only may not decrypt");
    // Encrypting with a key that does not exist would create it: that needs `create`.
    let (code, _) = s
        .call("POST", "transit/encrypt/new-key", Some(&app), Some(json!({"plaintext": b64(b"x")})))
        .await;
    assert_eq!(code, 403, "update alone may not create a key");
    let (code, _) = s.call("GET", "transit/keys/new-key", Some(&root), None).await;
    assert_eq!(code, 404);
    let (code, _) = s.call("GET", "transit/export/encryption-key/orders", Some(&app), None).await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn the_server_rotates_a_key_whose_auto_rotate_period_has_passed() {
    let dir = tempdir();
    let (s, root) = mounted(dir.path()).await;
    post(
        &s,
        &root,
        "keys/old",
        json!({"exportable": true, "allow_plaintext_backup": true, "auto_rotate_period": "1h"}),
    )
    .await;
    assert_eq!(get(&s, &root, "keys/old").await["auto_rotate_period"], json!(3600));
    // A key whose latest version is two hours old: its backup, aged, restored under a new name.
    let backup = get(&s, &root, "backup/old").await["backup"].as_str().expect("backup").to_owned();
    let mut record: Value =
        serde_json::from_slice(&B64.decode(backup).expect("b64")).expect("json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    record["keys"]["1"]["creation_time"] = json!(now - 7200);
    let aged = b64(&serde_json::to_vec(&record).expect("json"));
    let (code, b) =
        s.call("POST", "transit/restore/aged", Some(&root), Some(json!({"backup": aged}))).await;
    assert_eq!(code, 204, "{b}");
    let c1 = post(&s, &root, "encrypt/aged", json!({"plaintext": b64(b"before")})).await;
    // The rotation task looks every 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let k = get(&s, &root, "keys/aged").await;
        if k["latest_version"] == json!(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not rotated within 30 s: {k}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let d = post(&s, &root, "decrypt/aged", json!({"ciphertext": c1["ciphertext"]})).await;
    assert_eq!(d["plaintext"], json!(b64(b"before")));
    let c2 = post(&s, &root, "encrypt/aged", json!({"plaintext": b64(b"after")})).await;
    assert_eq!(c2["key_version"], json!(2));
    // The fresh key is not due for an hour.
    assert_eq!(get(&s, &root, "keys/old").await["latest_version"], json!(1));
}
