//! Bad input gets a 4xx that names the problem, and nothing stored changes.

use serde_json::json;

use crate::common::{Server, tempdir};

async fn raw(
    s: &Server,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let resp = s
        .http()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("m"),
            format!("{}/v1/{path}", s.addr),
        )
        .header("X-Vault-Token", token)
        .body(body)
        .send()
        .await
        .expect("send");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn raw_http(s: &Server, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(s.addr.trim_start_matches("http://"))
        .await
        .expect("connect");
    conn.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    conn.read_to_string(&mut out).await.expect("read");
    out
}

fn first_error(b: &serde_json::Value) -> String {
    b["errors"][0].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn bad_requests_are_4xx_with_a_named_problem_and_change_nothing() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "secret/keep", Some(&root), Some(json!({"v": "original"}))).await;

    let (code, b) = raw(&s, "POST", "secret/keep", &root, b"{\"v\": ".to_vec()).await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("failed to parse JSON input"), "{b}");
    let (code, b) = raw(&s, "POST", "secret/keep", &root, b"[\"v\"]".to_vec()).await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("JSON object"), "{b}");
    let (code, b) = raw(&s, "POST", "secret/keep", &root, b"{}".to_vec()).await;
    assert_eq!((code, first_error(&b)), (400, "missing data fields".to_owned()));

    // 32 MiB + 1 is over the default limit.
    let big = format!("{{\"v\": \"{}\"}}", "x".repeat(32 << 20));
    let (code, b) = raw(&s, "POST", "secret/keep", &root, big.into_bytes()).await;
    assert_eq!(code, 413, "{b}");
    assert!(first_error(&b).contains("too large"));

    let (code, b) = s
        .call(
            "PUT",
            "sys/policies/acl/broken",
            Some(&root),
            Some(json!({"policy": "path \"a\" {\n  capabilities = [\"read\"\n"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("failed to parse policy"), "{b}");
    let (code, b) = s
        .call(
            "PUT",
            "sys/policies/acl/badcap",
            Some(&root),
            Some(json!({"policy": "path \"a\" {\n  capabilities = [\"reed\"]\n}"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("reed"), "names the bad capability: {b}");
    let (code, b) = s
        .call(
            "PUT",
            "sys/policies/acl/badkey",
            Some(&root),
            Some(json!({"policy": "path \"a\" {\n  capabilites = [\"read\"]\n}"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("capabilites"), "names the unknown key: {b}");
    assert_eq!(
        s.call("GET", "sys/policies/acl/broken", Some(&root), None).await.0,
        404,
        "nothing stored"
    );

    let (code, b) =
        s.call("POST", "auth/token/create", Some(&root), Some(json!({"ttl": "forever"}))).await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("ttl"), "{b}");
    let (code, b) =
        s.call("POST", "auth/token/create", Some(&root), Some(json!({"policies": 7}))).await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("policies"), "{b}");
    let (code, b) = s
        .call(
            "POST",
            "sys/mounts/x",
            Some(&root),
            Some(json!({"type": "kv", "config": {"default_lease_ttl": "1y"}})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("default_lease_ttl"), "{b}");
    let (code, b) = s
        .call("POST", "sys/mounts/y", Some(&root), Some(json!({"type": "kv", "bogus_field": 1})))
        .await;
    assert_eq!(code, 200, "Vault accepts and warns: {b}");
    assert!(b["warnings"][0].as_str().expect("warning").contains("bogus_field"));

    // Raw HTTP: URL libraries resolve dot segments before sending, an attacker's client does not.
    let reply = raw_http(&s, &format!("GET /v1/secret/../sys/mounts HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\nConnection: close\r\n\r\n")).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("'..'"), "{reply}");
    let (code, b) = s.call("HEAD", "secret/keep", Some(&root), None).await;
    assert_eq!(code, 405, "{b}");
    let (code, b) = s.call("GET", "nosuchmount/x", Some(&root), None).await;
    assert_eq!(code, 404);
    assert!(first_error(&b).contains("no handler for route"), "{b}");
    let (code, b) = s.call("PUT", "sys/unseal", None, Some(json!({}))).await;
    assert_eq!(code, 400);
    assert!(first_error(&b).contains("key"), "{b}");
    let resp = s
        .http()
        .get(format!("{}/v1/secret/keep", s.addr))
        .header("X-Vault-Token", &root)
        .header("X-Vault-Wrap-TTL", "soon")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 400, "a bad wrap TTL is refused, never ignored");

    assert_eq!(
        s.call("GET", "secret/keep", Some(&root), None).await.1["data"]["v"],
        "original",
        "nothing changed"
    );
}

/// A path or name longer than storage can key is the caller's mistake: 400 naming the limit,
/// and only after the ACL check, so a token without access still gets 403.
#[tokio::test]
async fn over_long_paths_are_400_naming_the_limit_after_the_acl_check() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/kv1", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "sys/mounts/kv2", Some(&root), Some(json!({"type": "kv-v2"}))).await;
    s.call("POST", "kv1/keep", Some(&root), Some(json!({"v": "original"}))).await;
    s.call("POST", "sys/auth/approle", Some(&root), Some(json!({"type": "approle"}))).await;
    let (_, b) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["default"]})))
        .await;
    let weak = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let long = "a".repeat(3000);
    let limit = "longer than the storage limit of 2048 bytes";

    for (method, path, body) in [
        ("POST", format!("kv1/{long}"), Some(json!({"v": "x"}))),
        ("GET", format!("kv1/{long}"), None),
        ("DELETE", format!("kv1/{long}"), None),
        ("POST", format!("kv2/data/{long}"), Some(json!({"data": {"v": "x"}}))),
        ("GET", format!("kv2/data/{long}"), None),
        ("GET", format!("kv2/metadata/{long}"), None),
        ("PUT", format!("sys/policies/acl/{long}"), Some(json!({"policy": "path \"a\" {}"}))),
        ("GET", format!("cubbyhole/{long}"), None),
        ("POST", format!("auth/approle/role/{long}"), Some(json!({"token_ttl": "1h"}))),
    ] {
        let (code, b) = s.call(method, &path, Some(&weak), body.clone()).await;
        // cubbyhole is the token's own: the default policy allows it, so it gets the 400.
        if path.starts_with("cubbyhole/") {
            assert_eq!(code, 400, "{method} {}…: {b}", &path[..12]);
        } else {
            assert_eq!(code, 403, "{method} {}… with the default policy: {b}", &path[..12]);
        }
        let (code, b) = s.call(method, &path, Some(&root), body).await;
        assert_eq!(code, 400, "{method} {}… as root: {b}", &path[..12]);
        assert!(first_error(&b).contains(limit), "{method} {}…: {b}", &path[..12]);
    }
    let (code, b) = s.call("GET", "kv1/keep", Some(&root), None).await;
    assert_eq!((code, b["data"]["v"].clone()), (200, json!("original")));
    // The server is still answering, and nothing it logged is a 500.
    assert!(!s.logs().contains("internal error"), "{}", s.logs());
}

/// `role/admin/` is not `role/admin`: a trailing slash cannot step around an exact ACL rule (the
/// ACL sees the slashed path; the backend must not then serve it as the unslashed one).
#[tokio::test]
async fn a_trailing_slash_does_not_reach_a_path_an_exact_rule_denies() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/auth/approle", Some(&root), Some(json!({"type": "approle"}))).await;
    let (code, b) = s
        .call("POST", "auth/approle/role/admin", Some(&root), Some(json!({"token_ttl": "1h"})))
        .await;
    assert_eq!(code, 204, "{b}");
    let policy = r#"
path "auth/approle/role/*" { capabilities = ["create", "update", "read"] }
path "auth/approle/role/admin" { capabilities = ["deny"] }
"#;
    s.call("PUT", "sys/policies/acl/roles", Some(&root), Some(json!({"policy": policy}))).await;
    let (_, b) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["roles"]})))
        .await;
    let t = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let (code, _) = s
        .call("POST", "auth/approle/role/admin", Some(&t), Some(json!({"token_ttl": "999h"})))
        .await;
    assert_eq!(code, 403);
    let (code, b) = s
        .call("POST", "auth/approle/role/admin/", Some(&t), Some(json!({"token_ttl": "999h"})))
        .await;
    assert_eq!(code, 404, "the slashed path is no role: {b}");
    let (code, _) = s.call("GET", "auth/approle/role/admin/", Some(&t), None).await;
    assert_eq!(code, 404);
    let (_, b) = s.call("GET", "auth/approle/role/admin", Some(&root), None).await;
    assert_eq!(b["data"]["token_ttl"], json!(3600), "the role is unchanged: {b}");
    // LIST names a folder, with or without its slash.
    let (code, b) = s.call("LIST", "auth/approle/role/", Some(&root), None).await;
    assert_eq!((code, b["data"]["keys"].clone()), (200, json!(["admin"])), "{b}");
}
