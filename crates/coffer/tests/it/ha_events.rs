//! Event subscriptions (`sys/events/subscribe`, a WebSocket) through an HA standby: the standby
//! forwards the handshake to the active node and relays the frames, so a client connected to a
//! standby gets the events of writes made on the active node; a refusal comes back as the
//! active node's answer; the stream ends with a close frame when the active node steps down,
//! and when it dies (the standby sends the close frame then).

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::common::{Server, tempdir};
use crate::ha::{active_of, cluster};

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket handshake with `node`: the stream, or the HTTP status of a refusal.
async fn subscribe(node: &Server, pattern: &str, token: &str) -> Result<Ws, u16> {
    let host = node.addr.trim_start_matches("http://");
    let tcp = TcpStream::connect(host).await.expect("connect");
    let mut req = format!("ws://{host}/v1/sys/events/subscribe/{pattern}?json=true")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert("X-Vault-Token", token.parse().expect("header"));
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101);
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// The next event (a text frame), within 5 s; `None` when the stream ends.
async fn next_event(ws: &mut Ws) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Some(serde_json::from_str(t.as_str()).expect("JSON"));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The close frame that ends the stream, within 5 s (events before it are skipped); `None` when
/// the connection ends without one.
async fn close_frame(ws: &mut Ws) -> Option<(u16, String)> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s");
        match m {
            Some(Ok(Message::Close(f))) => {
                return f.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_a_standby_gets_the_events_of_writes_on_the_active() {
    let dir = tempdir();
    let (mut nodes, root) = cluster(dir.path(), "ha_events", "15s").await;
    let a = active_of(&nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    let (active, standby) = (&nodes[a], &nodes[(a + 1) % 3]);
    active.mount_kv2(&root).await;
    // (the standby's view of the leader is at most one poll, 1 s, old)
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut ws = subscribe(standby, "kv*", &root).await.expect("subscribed through the standby");
    for i in 0..3 {
        let (s, b) = active
            .call("POST", "secret/data/app", Some(&root), Some(json!({"data": {"v": i}})))
            .await;
        assert_eq!(s, 200, "{b}");
        let e = next_event(&mut ws).await.expect("an event through the standby");
        assert_eq!(e["data"]["event_type"], "kv-v2/data-write", "{e}");
        assert_eq!(e["data"]["event"]["metadata"]["path"], "secret/data/app", "{e}");
        assert_eq!(e["data"]["event"]["metadata"]["current_version"], json!((i + 1).to_string()));
    }
    // A write through another standby reaches the subscriber too (it is made on the active).
    let other = &nodes[(a + 2) % 3];
    let (s, b) =
        other.call("POST", "secret/data/other", Some(&root), Some(json!({"data": {"v": 1}}))).await;
    assert_eq!(s, 200, "{b}");
    let e = next_event(&mut ws).await.expect("an event");
    assert_eq!(e["data"]["event"]["metadata"]["path"], "secret/data/other", "{e}");

    // The active node decides: a token without the capability is refused, and the standby
    // relays that answer.
    let (s, b) = active
        .call(
            "PUT",
            "sys/policies/acl/nothing",
            Some(&root),
            Some(json!({"policy": "path \"secret/*\" { capabilities = [\"read\"] }"})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = active
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["nothing"]})))
        .await;
    assert_eq!(s, 200, "{b}");
    let weak = b["auth"]["client_token"].as_str().expect("token").to_owned();
    assert_eq!(subscribe(standby, "kv*", &weak).await.err(), Some(403));

    // The active node steps down: it ends its subscriptions, and the relayed stream ends with
    // its close frame.
    let (s, b) = active.call("PUT", "sys/step-down", Some(&root), None).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(
        close_frame(&mut ws).await,
        Some((1001, "Coffer is sealed or stopping".to_owned())),
        "the stream outlived the active node's term"
    );

    // The next active node dies (kill -9): no close frame comes from it, the cluster
    // connection just ends, and the standby closes the client's stream as the active would.
    let a = active_of(&nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    let standby = (a + 1) % 3;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws =
        subscribe(&nodes[standby], "kv*", &root).await.expect("subscribed through the standby");
    let (s, b) = nodes[a]
        .call("POST", "secret/data/app", Some(&root), Some(json!({"data": {"v": "last"}})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(next_event(&mut ws).await.is_some(), "an event before the active node dies");
    nodes[a].kill9();
    assert_eq!(
        close_frame(&mut ws).await,
        Some((1001, "Coffer is sealed or stopping".to_owned())),
        "no close frame when the active node died"
    );
}
