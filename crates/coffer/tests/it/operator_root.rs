//! `sys/generate-root` and `coffer operator generate-root` end to end: a new root token from a
//! quorum of unseal key shares, encoded with a one-time pad; wrong shares, wrong nonces and a
//! wrong pad get nothing; nothing secret reaches the audit log.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::audit::enable_file_device;
use crate::common::{
    KEY_SHARE_ENDPOINTS, Server, Storage, ok, plain_config_with, stderr, stdout, tempdir,
};

/// A server initialized with 3 shares, threshold 2, unsealed: (server, hex shares, root token).
/// Its listener serves `sys/generate-root/*` and `sys/rekey/*` (refused by default).
pub(crate) async fn three_shares(dir: &std::path::Path) -> (Server, Vec<String>, String) {
    let s = Server::start_with(
        dir,
        &plain_config_with(dir, Storage::Default, KEY_SHARE_ENDPOINTS),
        "http",
    );
    let (keys, root) = s.init(3, 2).await;
    s.unseal(&keys[..2]).await;
    (s, keys, root)
}

/// The share with its last byte flipped: it combines, to a wrong key.
pub(crate) fn tampered(hex_share: &str) -> String {
    let (head, tail) = hex_share.split_at(hex_share.len() - 2);
    let b = u8::from_str_radix(tail, 16).expect("hex") ^ 0x01;
    format!("{head}{b:02x}")
}

fn decode(encoded: &str, otp: &str) -> String {
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded).expect("b64");
    raw.iter().zip(otp.bytes()).map(|(a, b)| (a ^ b) as char).collect()
}

/// As OpenBao (2.5+): a listener serves `sys/generate-root/*` and `sys/rekey/*` only when its
/// `disable_unauthed_*_endpoints` option is false; by default they answer OpenBao's bare 405,
/// with a token or without, change nothing, and are audited.
#[tokio::test]
async fn key_share_endpoints_are_refused_by_default_and_per_option() {
    let dir = tempdir();
    let (s, keys, root) = Server::ready(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    let refused = [
        "sys/generate-root/attempt",
        "sys/generate-root/update",
        "sys/rekey/init",
        "sys/rekey/update",
        "sys/rekey/verify",
    ];
    for path in refused {
        for method in ["GET", "PUT", "DELETE"] {
            for token in [None, Some(root.as_str())] {
                let (code, b) = s.call(method, path, token, Some(json!({"key": &keys[0]}))).await;
                assert_eq!(
                    (code, b),
                    (405, json!({"errors": ["unsupported operation"]})),
                    "{method} {path}"
                );
            }
        }
    }
    // The token-checked paths around them are as before.
    assert_eq!(s.call("GET", "sys/generate-root", None, None).await.0, 403);
    assert_eq!(s.call("GET", "sys/rekey/backup", Some(&root), None).await.0, 400);
    let audited = crate::audit::entries(&log)
        .iter()
        .filter(|e| e["type"] == "response")
        .filter(|e| refused.iter().any(|p| e["request"]["path"] == *p))
        .count();
    assert_eq!(audited, refused.len() * 6, "each refusal is audited");
    // The CLI says what the server said.
    let out = s.cli(None, &["operator", "generate-root", "-status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unsupported operation"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("disable_unauthed_generate_root_endpoints = false"),
        "{}",
        stderr(&out)
    );
    let out = s.cli(Some(&root), &["operator", "rekey", "-status"]);
    assert!(stderr(&out).contains("disable_unauthed_rekey_endpoints = false"), "{}", stderr(&out));
    // Sealed, the seal answers first, as in OpenBao.
    assert_eq!(s.call("PUT", "sys/seal", Some(&root), None).await.0, 204);
    let (code, _) = s.call("GET", "sys/generate-root/attempt", None, None).await;
    assert_eq!(code, 503);
    drop(s);

    // One option without the other.
    let dir = tempdir();
    let config = plain_config_with(
        dir.path(),
        Storage::Default,
        "  disable_unauthed_rekey_endpoints = false\n",
    );
    let (s, _, root) = Server::ready_with(dir.path(), &config).await;
    let (code, b) = s.call("GET", "sys/rekey/init", None, None).await;
    assert_eq!((code, b["started"].clone()), (200, json!(false)), "{b}");
    let (code, _) = s.call("GET", "sys/generate-root/attempt", None, None).await;
    assert_eq!(code, 405);
    let (_, c) = s.call("GET", "sys/config/state/sanitized", Some(&root), None).await;
    let l = &c["data"]["listeners"][0]["config"];
    assert_eq!(
        (
            l["disable_unauthed_generate_root_endpoints"].clone(),
            l["disable_unauthed_rekey_endpoints"].clone()
        ),
        (json!(true), json!(false)),
        "{c}"
    );
}

#[tokio::test]
async fn generate_root_makes_a_root_token_only_from_the_right_shares() {
    let dir = tempdir();
    let (s, keys, root) = three_shares(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;

    // No token needed, as in Vault; nothing under way yet.
    let (code, st) = s.call("GET", "sys/generate-root/attempt", None, None).await;
    assert_eq!(code, 200, "{st}");
    assert_eq!(
        (st["started"].clone(), st["progress"].clone(), st["required"].clone()),
        (json!(false), json!(0), json!(2))
    );
    let otp_len = st["otp_length"].as_u64().expect("otp_length") as usize;
    assert_eq!(st["complete"], false);
    assert_eq!(st["encoded_token"], "");

    // Bad starts: a pad of the wrong length, a PGP key.
    let (code, b) =
        s.call("PUT", "sys/generate-root/attempt", None, Some(json!({"otp": "short"}))).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("OTP string has incorrect length")));
    let (code, b) =
        s.call("PUT", "sys/generate-root/attempt", None, Some(json!({"pgp_key": "abc"}))).await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("pgp_key"), "{b}");

    // Started without a pad: the server makes one and shows it once.
    let (code, st) = s.call("PUT", "sys/generate-root/attempt", None, Some(json!({}))).await;
    assert_eq!(code, 200, "{st}");
    let otp = st["otp"].as_str().expect("otp").to_owned();
    assert_eq!(otp.len(), otp_len);
    let nonce = st["nonce"].as_str().expect("nonce").to_owned();
    assert!(st["started"] == true && !nonce.is_empty());
    let (_, again) = s.call("GET", "sys/generate-root/attempt", None, None).await;
    assert_eq!((again["otp"].as_str(), again["nonce"].as_str()), (Some(""), Some(&*nonce)));
    let (code, b) = s.call("PUT", "sys/generate-root/attempt", None, Some(json!({}))).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("root generation already in progress")));

    let update = |key: &str, nonce: &str| {
        let body = json!({"key": key, "nonce": nonce});
        s.call("PUT", "sys/generate-root/update", None, Some(body))
    };
    // A share without the attempt's nonce does not count.
    let (code, b) = update(&keys[0], "not-the-nonce").await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").starts_with("incorrect nonce supplied"), "{b}");
    let (code, b) =
        s.call("PUT", "sys/generate-root/update", None, Some(json!({"nonce": nonce}))).await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (400, Some("'key' must be specified in request body as JSON"))
    );

    // A wrong set of shares completes the count but makes nothing, and starts it again.
    let (code, b) = update(&keys[0], &nonce).await;
    assert_eq!((code, b["progress"].clone(), b["complete"].clone()), (200, json!(1), json!(false)));
    let (code, b) = update(&keys[0], &nonce).await;
    assert_eq!(code, 400, "the same share twice: {b}");
    let (code, b) = update(&tampered(&keys[1]), &nonce).await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().expect("e").starts_with("root generation aborted"), "{b}");
    let (_, st) = s.call("GET", "sys/generate-root/attempt", None, None).await;
    assert_eq!((st["started"].clone(), st["progress"].clone()), (json!(true), json!(0)));

    // The right shares: the encoded token, which is the token only with the pad.
    update(&keys[2], &nonce).await;
    let (code, done) = update(&keys[0], &nonce).await;
    assert_eq!(code, 200, "{done}");
    assert_eq!((done["complete"].clone(), done["progress"].clone()), (json!(true), json!(2)));
    let encoded = done["encoded_token"].as_str().expect("encoded").to_owned();
    assert_eq!(done["encoded_root_token"], encoded);
    let token = decode(&encoded, &otp);
    // The server decodes it too (Vault's sys/decode-token), for whoever holds both halves.
    let (code, d) = s
        .call("PUT", "sys/decode-token", None, Some(json!({"encoded_token": encoded, "otp": otp})))
        .await;
    assert_eq!((code, d["data"]["token"].as_str()), (200, Some(&*token)), "{d}");
    let (code, d) =
        s.call("PUT", "sys/decode-token", None, Some(json!({"encoded_token": encoded}))).await;
    assert_eq!(
        (code, d["errors"][0].as_str()),
        (400, Some("provided 'encoded_token' or 'otp' is empty"))
    );
    let (code, d) = s
        .call("PUT", "sys/decode-token", None, Some(json!({"encoded_token": encoded, "otp": "x"})))
        .await;
    assert_eq!(code, 400, "{d}");
    assert!(d["errors"][0].as_str().expect("e").starts_with("error xoring token"), "{d}");
    let (code, me) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["data"]["policies"], json!(["root"]));
    // The encoded token alone, or decoded with another pad, is no token.
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&encoded), None).await.0, 403);
    let mut other_pad = otp.clone().into_bytes();
    other_pad[otp_len - 1] = if other_pad[otp_len - 1] == b'a' { b'b' } else { b'a' };
    let wrong = decode(&encoded, std::str::from_utf8(&other_pad).expect("ascii"));
    assert_ne!(wrong, token);
    if wrong.chars().all(|c| c.is_ascii_graphic()) {
        assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&wrong), None).await.0, 403);
    }
    // The attempt is over.
    let (_, st) = s.call("GET", "sys/generate-root/attempt", None, None).await;
    assert_eq!(st["started"], false);

    // A pad of one's own; cancel; sealed: 503.
    let own = "A".repeat(otp_len);
    let (code, st) =
        s.call("PUT", "sys/generate-root/attempt", None, Some(json!({"otp": own}))).await;
    assert_eq!((code, st["otp"].as_str()), (200, Some("")), "a given pad is not echoed");
    assert_eq!(s.call("DELETE", "sys/generate-root/attempt", None, None).await.0, 204);
    let (_, st) = s.call("GET", "sys/generate-root/attempt", None, None).await;
    assert_eq!(st["started"], false);

    let text = std::fs::read_to_string(&log).expect("audit log");
    let logs = s.logs();
    for secret in keys.iter().map(String::as_str).chain([&*otp, &*encoded, &*token, &*own]) {
        assert!(!text.contains(secret), "a share, pad or token appears raw in the audit log");
        assert!(!logs.contains(secret), "a share, pad or token appears in the server log");
    }
    let entries: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert!(
        entries.iter().any(|e| e["request"]["path"] == "sys/generate-root/update"),
        "the updates are audited"
    );

    assert_eq!(s.call("PUT", "sys/seal", Some(&root), None).await.0, 204);
    assert_eq!(s.call("GET", "sys/generate-root/attempt", None, None).await.0, 503);
}

#[tokio::test]
async fn the_cli_generates_decodes_and_cancels_as_vault_does() {
    let dir = tempdir();
    let (s, keys, _root) = three_shares(dir.path()).await;

    let otp = ok(s.cli(None, &["operator", "generate-root", "-generate-otp"])).trim().to_owned();
    assert_eq!(otp.len(), 40, "{otp}");
    let out = ok(s.cli(None, &["operator", "generate-root", "-init", &format!("-otp={otp}")]));
    assert!(out.contains("Started") && out.contains("0/2"), "{out}");
    let st: Value = serde_json::from_str(&ok(
        s.cli(None, &["operator", "generate-root", "-status", "-format=json"])
    ))
    .expect("json");
    let nonce = st["nonce"].as_str().expect("nonce").to_owned();

    // A share as an argument needs the nonce, as with vault.
    let o = s.cli(None, &["operator", "generate-root", &keys[0]]);
    assert!(!o.status.success() && stderr(&o).contains("-nonce"), "{}", stderr(&o));
    ok(s.cli(None, &["operator", "generate-root", &format!("-nonce={nonce}"), &keys[0]]));
    // And one on stdin.
    let out = ok(s.cli_stdin(
        None,
        &["operator", "generate-root", &format!("-nonce={nonce}"), "-format=json", "-"],
        Some(&format!("{}\n", keys[1])),
    ));
    let done: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(done["complete"], true, "{done}");
    let encoded = done["encoded_token"].as_str().expect("encoded");

    let token = ok(s.cli(
        None,
        &["operator", "generate-root", &format!("-decode={encoded}"), &format!("-otp={otp}")],
    ))
    .trim()
    .to_owned();
    assert!(token.starts_with("cfs_"), "{token}");
    let me = ok(s.cli(Some(&token), &["token", "lookup", "-format=json"]));
    assert!(me.contains("\"root\""), "{me}");

    let o = s.cli(None, &["operator", "generate-root", "-decode=abc"]);
    assert!(!o.status.success() && stderr(&o).contains("otp"), "{}", stderr(&o));

    ok(s.cli(None, &["operator", "generate-root", "-init"]));
    let out = ok(s.cli(None, &["operator", "generate-root", "-cancel"]));
    assert!(out.contains("canceled"), "{out}");
    let o = s.cli(None, &["operator", "generate-root", &keys[0]]);
    assert!(stderr(&o).contains("No root generation is in progress"), "{}", stdout(&o));
}
