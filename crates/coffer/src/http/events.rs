//! `GET /v1/sys/events/subscribe/<event_type>?json=true`: Vault's event subscription served as a
//! WebSocket. The request went through the whole pipeline like any other (token, ACL on the
//! path, audit); its answer carries a [`Subscription`], and here the connection is upgraded
//! (RFC 6455's handshake on hyper's upgrade, tokio-tungstenite for the frames) and each event
//! the subscription yields is sent as one text message: Vault's CloudEvents JSON followed by a
//! newline, as Vault's encoder writes it.
//!
//! Guarantees: a stream the core ends (token revoked or expired, access lost, subscriber too
//! slow, sealed) is closed with a close frame saying why; the server stopping closes it with
//! 1001; a client that stops reading is disconnected (its queue overflows in the core, or a
//! write here waits [`WRITE_TIMEOUT`]), never waited for by writers. Messages from the client
//! are not read for content (Vault expects none); pings are answered by the library, and the
//! server pings every 30 s. A subscription a standby relays to the active node ([`relay`])
//! ends with a close frame too, whichever side ends it.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_api::events::{
    CLOUDEVENT_TYPE, DATA_CONTENT_TYPE, EventData, EventMessage, EventPluginInfo, EventReceived,
    PING_EVERY, SPEC_VERSION,
};
use coffer_core::events::{Delivery, EndReason, Published, Subscription};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::Lifeline;
use super::error::error_body;

/// The CloudEvents `source` of Coffer's events (Vault sends `vault://<node id>`).
pub(crate) const SOURCE: &str = "vault://coffer";

/// A write to a subscriber that has not completed in this long disconnects it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients send nothing but control frames; anything large is refused by the library.
const MAX_INCOMING: usize = 16 * 1024;

/// hyper's handle on the connection, taken out of the request so that it can be upgraded.
pub(super) struct Upgrade(Option<OnUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Upgrade(parts.extensions.remove::<OnUpgrade>()))
    }
}

/// Whether a comma-separated header has `token` (case-insensitive), as RFC 6455 asks.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Why a request is not a WebSocket handshake this server takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotWebSocket {
    NoUpgrade,
    Version,
    NoKey,
}

impl NotWebSocket {
    fn response(self) -> Response {
        match self {
            NotWebSocket::NoUpgrade => error_body(
                StatusCode::BAD_REQUEST,
                vec![
                    "sys/events/subscribe serves a WebSocket: connect with a WebSocket client \
                     (Connection: Upgrade, Upgrade: websocket), e.g. `coffer events subscribe`"
                        .into(),
                ],
            ),
            NotWebSocket::Version => {
                let mut resp = error_body(
                    StatusCode::UPGRADE_REQUIRED,
                    vec!["unsupported WebSocket version: this server speaks version 13".into()],
                );
                resp.headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
                resp
            }
            NotWebSocket::NoKey => {
                error_body(StatusCode::BAD_REQUEST, vec!["missing Sec-WebSocket-Key header".into()])
            }
        }
    }
}

/// The server's half of the opening handshake: the `Sec-WebSocket-Accept` value.
fn handshake(headers: &HeaderMap) -> Result<String, NotWebSocket> {
    if !has_token(headers, header::UPGRADE, "websocket")
        || !has_token(headers, header::CONNECTION, "upgrade")
    {
        return Err(NotWebSocket::NoUpgrade);
    }
    let version = headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        return Err(NotWebSocket::Version);
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(derive_accept_key(key.as_bytes())),
        _ => Err(NotWebSocket::NoKey),
    }
}

/// Answers an authorized subscription: switches the connection to a WebSocket and serves the
/// events on it, or, for a request that is not a WebSocket handshake, refuses (and so drops the
/// subscription).
pub(super) fn accept(
    sub: Subscription,
    headers: &HeaderMap,
    upgrade: Upgrade,
    lifeline: Option<Lifeline>,
) -> Response {
    let accept_key = match handshake(headers) {
        Ok(k) => k,
        Err(not) => return not.response(),
    };
    let Upgrade(Some(on_upgrade)) = upgrade else {
        tracing::error!("event subscription on a connection that cannot be upgraded");
        return error_body(StatusCode::INTERNAL_SERVER_ERROR, vec!["internal error".into()]);
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "event subscriber left during the upgrade");
                return;
            }
        };
        // A subscriber sends almost nothing (pongs, a close): tungstenite's default 128 KiB read
        // buffer per connection would be most of what a thousand idle subscribers cost.
        let config = WebSocketConfig::default()
            .read_buffer_size(4 * 1024)
            .max_message_size(Some(MAX_INCOMING))
            .max_frame_size(Some(MAX_INCOMING));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        serve(sub, ws, lifeline).await;
    });
    let mut resp = Body::empty().into_response();
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The close frame for a stream the core ended. Exhaustive: a new reason needs a code.
fn close_for(reason: EndReason) -> (CloseCode, String) {
    let code = match reason {
        EndReason::Sealed => CloseCode::Away,
        EndReason::TokenInvalid | EndReason::AccessLost => CloseCode::Policy,
        EndReason::Overflow { .. } => CloseCode::Again,
        EndReason::Internal => CloseCode::Error,
    };
    (code, reason.to_string())
}

/// Resolves when the server begins to stop (never without a lifeline).
async fn stopping(lifeline: Option<&Lifeline>) {
    match lifeline {
        Some(l) => l.stopping().await,
        None => std::future::pending().await,
    }
}

async fn serve<S>(mut sub: Subscription, ws: WebSocketStream<S>, lifeline: Option<Lifeline>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    let stopping = stopping(lifeline.as_ref());
    tokio::pin!(stopping);
    // Pings the client has not answered (a pong or any other frame): a peer that vanished
    // without closing is let go after two, instead of holding its task and queue until TCP
    // gives up.
    let mut unanswered = 0u8;
    let close = loop {
        tokio::select! {
            // `Subscription::next` is cancel-safe: an event it holds waits for the next call.
            d = sub.next() => match d {
                Delivery::Event(e) => {
                    let text = e.encoded(encode).to_owned();
                    if !send(&mut tx, Message::text(text)).await {
                        break None;
                    }
                }
                Delivery::End(r) => break Some(close_for(r)),
            },
            m = rx.next() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => unanswered = 0,
            },
            _ = ping.tick() => {
                if unanswered >= 2 {
                    tracing::info!(pattern = sub.pattern(), "event subscriber disconnected: two pings unanswered");
                    break None;
                }
                if !send(&mut tx, Message::Ping(Bytes::new())).await {
                    break None;
                }
                unanswered += 1;
            }
            _ = &mut stopping => break Some((CloseCode::Away, "Coffer is stopping".to_owned())),
        }
    };
    if let Some((code, reason)) = close {
        tracing::debug!(pattern = sub.pattern(), %reason, "closing an event stream");
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = send(&mut tx, Message::Close(Some(frame))).await;
    }
}

/// Sends one message within [`WRITE_TIMEOUT`]; false when the subscriber is gone or too slow.
async fn send<T>(tx: &mut T, m: Message) -> bool
where
    T: futures_util::Sink<Message> + Unpin,
{
    match tokio::time::timeout(WRITE_TIMEOUT, tx.send(m)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!("event subscriber disconnected: a write waited {WRITE_TIMEOUT:?}");
            false
        }
    }
}

/// A subscription a standby forwarded (`cluster::forward_websocket`), once both sides are
/// upgraded: messages from the active node go to the client and the client's to the active
/// node, as they are (a close frame from either side is passed on and ends the relay). The
/// client always gets a close frame: when the active node's side ends without one (it stopped
/// or died, or the cluster connection broke), the one the active node sends when it stops
/// serving subscriptions ([`EndReason::Sealed`]: 1001); when this node stops, 1001 `Coffer is
/// stopping`, as for a subscription served here.
///
/// The relay answers the active node's pings itself (the WebSocket library does), so it checks
/// the client as the active node would: pings passed on that two later pings found unanswered
/// end the relay, and a client that stops reading is let go after [`WRITE_TIMEOUT`].
pub(crate) async fn relay<C, A>(client: C, active: A, lifeline: Option<Lifeline>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let client_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_INCOMING))
        .max_frame_size(Some(MAX_INCOMING));
    let client = WebSocketStream::from_raw_socket(client, Role::Server, Some(client_config)).await;
    let active = WebSocketStream::from_raw_socket(active, Role::Client, None).await;
    let (mut to_client, mut from_client) = client.split();
    let (mut to_active, mut from_active) = active.split();
    let stopping = stopping(lifeline.as_ref());
    tokio::pin!(stopping);
    let mut unanswered = 0u8;
    let close = loop {
        tokio::select! {
            m = from_active.next() => match m {
                Some(Ok(Message::Close(frame))) => {
                    let _ = send(&mut to_client, Message::Close(frame)).await;
                    break None;
                }
                Some(Ok(m)) => {
                    if matches!(m, Message::Ping(_)) {
                        if unanswered >= 2 {
                            tracing::info!("relayed event subscriber disconnected: two pings unanswered");
                            let _ = send(&mut to_active, Message::Close(None)).await;
                            break None;
                        }
                        unanswered += 1;
                    }
                    if !send(&mut to_client, m).await {
                        let _ = send(&mut to_active, Message::Close(None)).await;
                        break None;
                    }
                }
                Some(Err(_)) | None => break Some(close_for(EndReason::Sealed)),
            },
            m = from_client.next() => match m {
                Some(Ok(Message::Close(frame))) => {
                    let _ = send(&mut to_active, Message::Close(frame)).await;
                    break None;
                }
                Some(Ok(m)) => {
                    unanswered = 0;
                    if !send(&mut to_active, m).await {
                        break Some(close_for(EndReason::Sealed));
                    }
                }
                Some(Err(_)) | None => break None,
            },
            _ = &mut stopping => break Some((CloseCode::Away, "Coffer is stopping".to_owned())),
        }
    };
    if let Some((code, reason)) = close {
        tracing::debug!(%reason, "closing a relayed event stream");
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = send(&mut to_client, Message::Close(Some(frame))).await;
    }
}

/// Vault's JSON for an event, through the client's own type, newline-terminated as Vault's
/// encoder writes it.
pub(crate) fn encode(e: &Published) -> String {
    let metadata: Map<String, Value> =
        e.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let msg = EventMessage {
        id: e.id.clone(),
        source: SOURCE.to_owned(),
        specversion: SPEC_VERSION.to_owned(),
        cloudevent_type: CLOUDEVENT_TYPE.to_owned(),
        data: EventReceived {
            event: EventData {
                id: e.id.clone(),
                metadata,
                entity_ids: Vec::new(),
                note: String::new(),
            },
            namespace: String::new(),
            event_type: e.event_type.clone(),
            plugin_info: Some(EventPluginInfo {
                mount_class: e.plugin.mount_class.to_owned(),
                mount_accessor: e.plugin.mount_accessor.clone(),
                mount_path: e.plugin.mount_path.clone(),
                plugin: e.plugin.plugin.clone(),
                plugin_version: String::new(),
                version: e.plugin.version.clone(),
            }),
        },
        data_content_type: DATA_CONTENT_TYPE.to_owned(),
        time: e.time.clone(),
    };
    let mut s = serde_json::to_string(&msg).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn the_handshake_follows_rfc_6455() {
        // RFC 6455 section 1.3's example key and answer.
        let ok = headers(&[
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(handshake(&ok).expect("accepted"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let plain = headers(&[]);
        assert_eq!(handshake(&plain), Err(NotWebSocket::NoUpgrade));
        assert_eq!(NotWebSocket::NoUpgrade.response().status(), StatusCode::BAD_REQUEST);
        let old = headers(&[
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", "k"),
        ]);
        assert_eq!(handshake(&old), Err(NotWebSocket::Version));
        let resp = NotWebSocket::Version.response();
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(resp.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn every_end_reason_closes_with_a_short_reason() {
        for r in [
            EndReason::Sealed,
            EndReason::TokenInvalid,
            EndReason::AccessLost,
            EndReason::Overflow { capacity: 512 },
            EndReason::Internal,
        ] {
            // A close frame's reason may hold 123 bytes.
            assert!(close_for(r).1.len() <= 123, "{r:?}");
        }
        assert_eq!(close_for(EndReason::TokenInvalid).0, CloseCode::Policy);
    }
}
