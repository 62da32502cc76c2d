//! GitHub's secret-scanning partner alerts posted straight to `sys/leaks/github`, without a
//! Coffer token: accepted only with a valid signature by a configured key, in GitHub's exact
//! formats (keys as PEM with identifiers, the `Github-Public-Key-*` headers, a base64 ASN.1
//! ECDSA P-256/SHA-256 signature over the raw body), made here with the openssl CLI.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use coffer_api::token_format::{self, TokenKind};
use serde_json::{Value, json};

use crate::audit::{enable_file_device, entries};
use crate::common::{Server, tempdir};

/// A P-256 key pair made by openssl: (private key file, public key PEM).
fn keypair(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let private = dir.join(format!("{name}.key"));
    let ok = Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(&private)
        .status()
        .expect("openssl");
    assert!(ok.success());
    let out = Command::new("openssl")
        .args(["ec", "-pubout", "-in"])
        .arg(&private)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    (private, String::from_utf8(out.stdout).expect("pem"))
}

/// GitHub's `Github-Public-Key-Signature`: base64 of the DER ECDSA signature of `body`.
fn sign(dir: &Path, private: &Path, body: &[u8]) -> String {
    let file = dir.join("body.json");
    std::fs::write(&file, body).expect("body");
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(private)
        .arg(&file)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    base64::engine::general_purpose::STANDARD.encode(out.stdout)
}

/// A POST of `body` as GitHub sends it: no token, the two signature headers when given.
async fn github_post(
    s: &Server,
    body: &[u8],
    key_id: Option<&str>,
    sig: Option<&str>,
) -> (u16, Value) {
    let mut rb = s
        .http()
        .post(format!("{}/v1/sys/leaks/github", s.addr))
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    if let Some(k) = key_id {
        rb = rb.header("Github-Public-Key-Identifier", k);
    }
    if let Some(g) = sig {
        rb = rb.header("Github-Public-Key-Signature", g);
    }
    let resp = rb.send().await.expect("send");
    let code = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn a_github_alert_signed_by_a_configured_key_revokes_without_a_coffer_token() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let audit_log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &audit_log).await;
    let (old_key, old_pem) = keypair(dir.path(), "old");
    let (cur_key, cur_pem) = keypair(dir.path(), "current");
    let (other_key, _) = keypair(dir.path(), "other");
    let old_id = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";
    let cur_id = "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c";

    let b = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["default"]})))
        .await
        .1;
    let leaked = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let fake = token_format::mint(TokenKind::Service);
    let body = serde_json::to_vec(&json!([
        {"token": leaked, "type": "coffer_service_token", "url": "https://github.com/o/r/blob/x/a", "source": "content"},
        {"token": fake.expose(), "type": "coffer_service_token", "url": "https://github.com/o/r/blob/x/b", "source": "content"},
    ]))
    .expect("json");
    let good = sign(dir.path(), &cur_key, &body);

    // Before any key is configured, even a well-signed alert is refused, saying nothing.
    let (code, b) = github_post(&s, &body, Some(cur_id), Some(&good)).await;
    assert_eq!((code, b), (403, json!({"errors": ["permission denied"]})));

    // GitHub's published shape, written as fetched.
    let keys = json!({"public_keys": [
        {"key_identifier": old_id, "key": old_pem, "is_current": false},
        {"key_identifier": cur_id, "key": cur_pem, "is_current": true},
    ]});
    let (code, b) = s.call("POST", "sys/leaks/github/keys", Some(&root), Some(keys)).await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s.call("GET", "sys/leaks/github/keys", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["public_keys"][1]["key_identifier"], cur_id);
    // Configuring the keys needs a token allowed on the path.
    assert_eq!(s.call("GET", "sys/leaks/github/keys", None, None).await.0, 403);
    let bad = json!({"public_keys": [{"key_identifier": "x", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]});
    let (code, b) = s.call("POST", "sys/leaks/github/keys", Some(&root), Some(bad)).await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().expect("error text").contains("P-256"), "{b}");

    // Every way of not being GitHub is the same 403, and nothing is acted on.
    let denied = json!({"errors": ["permission denied"]});
    let other = sign(dir.path(), &other_key, &body);
    let mut tampered = body.clone();
    tampered.push(b' ');
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut flipped = b64.decode(&good).expect("sig");
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let flipped = b64.encode(flipped);
    let cases: [(&[u8], Option<&str>, Option<&str>); 7] = [
        (&body, None, None),
        (&body, Some(cur_id), None),
        (&body, None, Some(&good)),
        (&body, Some("unknown"), Some(&good)),
        (&body, Some(cur_id), Some(&other)),
        (&body, Some(cur_id), Some(&flipped)),
        (&tampered, Some(cur_id), Some(&good)),
    ];
    for (i, (b, k, g)) in cases.iter().enumerate() {
        let (code, answer) = github_post(&s, b, *k, *g).await;
        assert_eq!((code, &answer), (403, &denied), "case {i}");
    }
    let (code, _) = github_post(&s, &body, Some(cur_id), Some("not base64!")).await;
    assert_eq!(code, 403);
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&leaked), None).await.0, 200);
    // A body over the limit is refused before it is read.
    let big = vec![b' '; 1024 * 1024 + 1];
    let sig_big = sign(dir.path(), &cur_key, &big);
    assert_eq!(github_post(&s, &big, Some(cur_id), Some(&sig_big)).await.0, 403);

    // A key GitHub rotated out but that is still configured verifies too (GitHub signs with
    // whichever it names); here, the current one.
    let (code, b) = github_post(&s, &body, Some(cur_id), Some(&good)).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"token_raw": leaked, "token_type": "coffer_service_token", "label": "true_positive"},
            {"token_raw": fake.expose(), "token_type": "coffer_service_token", "label": "false_positive"},
        ])
    );
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&leaked), None).await.0, 403);
    // Signed by the older configured key: accepted, and nothing is left to act on.
    let by_old = sign(dir.path(), &old_key, &body);
    let (code, b) = github_post(&s, &body, Some(old_id), Some(&by_old)).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b[0]["label"], "false_positive");

    // The audit log names why each refusal happened, holds no token, and one leak action.
    let audit = std::fs::read_to_string(&audit_log).expect("audit");
    assert!(!audit.contains(&leaked) && !audit.contains(fake.expose()), "token in the audit log");
    assert!(!s.logs().contains(&leaked), "token in the server log");
    let all = entries(&audit_log);
    let errors: Vec<&str> = all
        .iter()
        .filter(|e| e["type"] == "response" && e["request"]["path"] == "sys/leaks/github")
        .filter_map(|e| e["error"].as_str())
        .collect();
    assert!(errors.iter().any(|e| e.contains("does not verify")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("not configured")), "{errors:?}");
    let leak: Vec<&Value> = all.iter().filter(|e| e["type"] == "leak").collect();
    assert_eq!(leak.len(), 1, "{leak:#?}");
    assert_eq!(leak[0]["leak"]["action"], "revoke_token");
    assert_eq!(leak[0]["leak"]["via"], "github");
}
