//! Limits from the security review (#21): wrap TTLs within the max lease TTL, request bodies
//! bounded in size, time and memory before any token is checked, and policy documents capped.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Server, storage_block, tempdir};

fn first_error(b: &serde_json::Value) -> String {
    b["errors"][0].as_str().unwrap_or_default().to_owned()
}

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(s.addr.trim_start_matches("http://")).await.expect("connect")
}

/// Everything the server sends until it closes the connection, or `None` when it has not
/// closed it within `limit`.
async fn until_closed(conn: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(limit, conn.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// A server whose listener has `extra` settings.
fn start_with_listener(dir: &std::path::Path, extra: &str) -> Server {
    let config = format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n{extra}}}\n",
        storage_block(dir, crate::common::Storage::Sqlite)
    );
    Server::start_with(dir, &config, "http")
}

#[tokio::test]
async fn a_declared_content_length_over_the_limit_gets_413_before_the_body_is_sent() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let mut conn = connect(&s).await;
    let head = format!(
        "PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        (32u64 << 20) + 1
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    // Not a byte of the body is sent: the answer must come from the header alone.
    let reply = until_closed(&mut conn, Duration::from_secs(10))
        .await
        .expect("answered and closed without waiting for the body");
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("max_request_size") && reply.contains("33554432"), "{reply}");
}

#[tokio::test]
async fn stalled_bodies_and_headers_are_cut_off_within_the_configured_timeouts() {
    let dir = tempdir();
    let s = start_with_listener(
        dir.path(),
        "  http_read_timeout = \"1s\"\n  http_read_header_timeout = \"1s\"\n",
    );

    // Headers and part of a body, then nothing.
    let mut conn = connect(&s).await;
    conn.write_all(
        b"PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"key\": \"",
    )
    .await
    .expect("write");
    let started = Instant::now();
    let reply =
        until_closed(&mut conn, Duration::from_secs(10)).await.expect("a stalled body is cut off");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("http_read_timeout"), "{reply}");

    // Part of the headers, then nothing.
    let mut conn = connect(&s).await;
    conn.write_all(b"PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let started = Instant::now();
    until_closed(&mut conn, Duration::from_secs(10)).await.expect("stalled headers are cut off");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    // A prompt request on the same listener is unaffected.
    let (code, _) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn request_body_bytes_in_flight_are_bounded_per_listener() {
    let dir = tempdir();
    let s = start_with_listener(
        dir.path(),
        // The read timeout outlasts the refusal loop below (5 s), so the holder is still held
        // whenever the loop asks, however slowly a loaded machine gets to its bytes.
        "  max_request_size = 4096\n  max_buffered_request_bytes = 4096\n  http_read_timeout = \"7s\"\n",
    );
    // An unauthenticated client holds 3,900 bytes of a 4,000-byte body and stalls.
    let mut head = b"PUT /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n".to_vec();
    head.extend(std::iter::repeat_n(b' ', 3900));
    let mut holder = connect(&s).await;
    holder.write_all(&head).await.expect("write");

    let body = json!({"key": "k".repeat(500)});
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let resp = s
            .http()
            .put(format!("{}/v1/sys/unseal", s.addr))
            .json(&body)
            .send()
            .await
            .expect("send");
        if resp.status().as_u16() == 503 {
            break resp;
        }
        // The holder's bytes may not have been read yet; or the server read this request's
        // body first and refused the holder (it answered it): then hold again.
        let mut answered = [0u8; 64];
        if let Ok(n) = holder.try_read(&mut answered)
            && n > 0
        {
            holder = connect(&s).await;
            holder.write_all(&head).await.expect("write");
        }
        assert!(Instant::now() < deadline, "never refused: {}", resp.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let b: serde_json::Value = refused.json().await.expect("json");
    assert!(first_error(&b).contains("max_buffered_request_bytes"), "{b}");

    // The holder is cut off by http_read_timeout, and its bytes are released with it.
    let reply = until_closed(&mut holder, Duration::from_secs(10)).await.expect("cut off");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    let (code, b) = s.call("PUT", "sys/unseal", None, Some(body)).await;
    assert_ne!(code, 503, "budget released: {b}");
}

#[tokio::test]
async fn wrap_ttls_above_the_max_lease_ttl_are_refused_naming_the_limit() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let wrap = |path: &str, method: reqwest::Method, ttl: &str| {
        let mut rb = s
            .http()
            .request(method.clone(), format!("{}/v1/{path}", s.addr))
            .header("X-Vault-Token", &root)
            .header("X-Vault-Wrap-TTL", ttl);
        if method == reqwest::Method::POST {
            rb = rb.json(&json!({"a": "b"}));
        }
        async move {
            let resp = rb.send().await.expect("send");
            let code = resp.status().as_u16();
            (code, resp.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    // The system max_lease_ttl is 768h = 2764800s.
    for ttl in ["18446744073709551615", "18446744073709551616", "769h", "99999999999999h"] {
        let (code, b) = wrap("sys/wrapping/wrap", reqwest::Method::POST, ttl).await;
        assert_eq!(code, 400, "{ttl}: {b}");
        assert!(first_error(&b).contains("max_lease_ttl of 2764800s"), "{ttl}: {b}");
    }
    let (code, b) = wrap("sys/wrapping/wrap", reqwest::Method::POST, "768h").await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["wrap_info"]["ttl"], 2_764_800);

    // A mount tuned lower caps wrapping of its answers.
    let (code, b) = s
        .call(
            "POST",
            "sys/mounts/tuned",
            Some(&root),
            Some(json!({"type": "kv", "config": {"max_lease_ttl": "1h"}})),
        )
        .await;
    assert!(code == 200 || code == 204, "{b}");
    s.call("POST", "tuned/x", Some(&root), Some(json!({"v": "1"}))).await;
    let (code, b) = wrap("tuned/x", reqwest::Method::GET, "2h").await;
    assert_eq!(code, 400, "{b}");
    assert!(first_error(&b).contains("\"tuned/\" max_lease_ttl of 3600s"), "{b}");
    let (code, b) = wrap("tuned/x", reqwest::Method::GET, "30m").await;
    assert_eq!((code, b["wrap_info"]["ttl"].clone()), (200, json!(1800)), "{b}");
    // The limit is checked after the token and the ACL: a caller without access learns nothing
    // of the mount from it (403, as for any other request it may not make).
    for token in [None, Some("not-a-token")] {
        for path in ["tuned/x", "sys/mounts"] {
            let mut rb = s
                .http()
                .get(format!("{}/v1/{path}", s.addr))
                .header("X-Vault-Wrap-TTL", "99999999999999h");
            if let Some(t) = token {
                rb = rb.header("X-Vault-Token", t);
            }
            let code = rb.send().await.expect("send").status().as_u16();
            assert_eq!(code, 403, "{path} with {token:?}");
        }
    }

    // Policies may not name wrapping TTLs beyond the system maximum either.
    for key in ["min_wrapping_ttl", "max_wrapping_ttl"] {
        let policy =
            format!("path \"a\" {{\n  capabilities = [\"read\"]\n  {key} = \"800h\"\n}}\n");
        let (code, b) = s
            .call("PUT", "sys/policies/acl/wraps", Some(&root), Some(json!({"policy": policy})))
            .await;
        assert_eq!(code, 400, "{key}: {b}");
        let e = first_error(&b);
        assert!(e.contains(key) && e.contains("2764800s"), "{key}: {e}");
    }
    let (code, b) = s
        .call(
            "PUT",
            "sys/policies/acl/wraps",
            Some(&root),
            Some(json!({"policy": "path \"a\" {\n  min_wrapping_ttl = \"10m\"\n  max_wrapping_ttl = \"5m\"\n}\n"})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    assert!(first_error(&b).contains("cannot be less than min_wrapping_ttl"), "{b}");
}

#[tokio::test]
async fn a_policy_over_the_size_cap_is_refused_naming_the_limit() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let rules = |n: usize| -> String {
        (0..n)
            .map(|i| format!("path \"secret/data/app{i}/*\" {{\n  capabilities = [\"read\"]\n}}\n"))
            .collect()
    };
    let (code, b) = s
        .call("PUT", "sys/policies/acl/big", Some(&root), Some(json!({"policy": rules(5_000)})))
        .await;
    assert_eq!(code, 204, "a large policy under the caps is stored: {b}");
    let (code, b) = s
        .call("PUT", "sys/policies/acl/huge", Some(&root), Some(json!({"policy": rules(10_001)})))
        .await;
    assert_eq!(code, 400, "{b}");
    assert!(first_error(&b).contains("the limit is 10000"), "{b}");
    let (code, b) = s
        .call(
            "PUT",
            "sys/policies/acl/huge",
            Some(&root),
            Some(json!({"policy": format!("# {}\n", "x".repeat(1 << 20))})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    assert!(first_error(&b).contains("the limit is 1048576 bytes"), "{b}");
    assert_eq!(s.call("GET", "sys/policies/acl/huge", Some(&root), None).await.0, 404);
}
