//! Vault's event notifications from the client side: the message shape (the one definition,
//! which the server encodes its events through) and [`EventStream`], a subscription to
//! `GET /v1/sys/events/subscribe/<event_type>?json=true` over a WebSocket.
//!
//! The connection is made here, not by reqwest: TCP, then TLS through tokio-rustls with the same
//! trust as [`crate::Client`] (the configured CA bundle, else the platform's store, and the
//! client certificate if one is set), then the WebSocket handshake. No TLS stack but rustls on
//! aws-lc-rs is involved.
//!
//! Not here: reconnecting. A stream that ends (`Ok(None)`), fails or is closed by the server
//! ([`Error::EventStreamClosed`], e.g. when the token is revoked) is over; the caller subscribes
//! again (with a new token if needed) and re-reads what it watches, since events sent while it
//! was away are not replayed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::{Client, ClientConfig, Error, ErrorBody, Result};

/// The CloudEvents `specversion` of every message.
pub const SPEC_VERSION: &str = "1.0";
/// The CloudEvents `type` of every message: Vault always sends `*` (the event's own type is in
/// `data.event_type`).
pub const CLOUDEVENT_TYPE: &str = "*";
/// The `datacontentype` of every message, as Vault sends it.
pub const DATA_CONTENT_TYPE: &str = "application/cloudevents";

/// The server pings an idle stream this often (as Vault does).
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// A stream with no frame at all (not even a ping) for this long is taken as dead.
const IDLE_LIMIT: Duration = Duration::from_secs(3 * 30);

/// One event as the server sends it with `json=true`: a CloudEvents 1.0 envelope around Vault's
/// `EventReceived`, field for field and in Vault's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub id: String,
    pub source: String,
    pub specversion: String,
    /// Always [`CLOUDEVENT_TYPE`].
    #[serde(rename = "type")]
    pub cloudevent_type: String,
    pub data: EventReceived,
    /// Vault's key is spelled `datacontentype` (one `t`), after its CloudEvents library; it is
    /// kept so that Vault's clients read Coffer's events unchanged.
    #[serde(rename = "datacontentype", default)]
    pub data_content_type: String,
    /// RFC 3339 with fractional seconds.
    pub time: String,
}

/// Vault's `EventReceived`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReceived {
    pub event: EventData,
    /// The namespace path; empty (and absent) for the root namespace, Coffer's only one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_info: Option<EventPluginInfo>,
}

/// Vault's `EventData`: what happened, never a secret's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The same as [`EventMessage::id`].
    pub id: String,
    /// Per event type; for kv: `path`, `data_path`, `operation`, `modified`, versions. Values are
    /// strings.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// Vault's `EventPluginInfo`: the mount the event came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPluginInfo {
    /// `secret` or `auth`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_class: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_accessor: String,
    /// `secret/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount_path: String,
    /// The engine type, `kv`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plugin: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plugin_version: String,
    /// The mount's `version` option: `2` for kv v2.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

impl EventMessage {
    /// `kv-v2/data-write`.
    pub fn event_type(&self) -> &str {
        &self.data.event_type
    }

    /// A metadata entry, when it is a string.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.data.event.metadata.get(key).and_then(Value::as_str)
    }

    /// The API path the change was requested at (`secret/data/app`).
    pub fn path(&self) -> Option<&str> {
        self.metadata("path")
    }

    /// Where the changed data can be read now, if anywhere (`secret/data/app`).
    pub fn data_path(&self) -> Option<&str> {
        self.metadata("data_path")
    }
}

impl Client {
    /// Subscribes to events whose type matches `event_type` (Vault's `*` globs: `kv-v2/*`,
    /// `kv*`), with this client's token. The token needs `read` on
    /// `sys/events/subscribe/<event_type>`; the server then sends only events on paths the token
    /// may read (or holds `subscribe` on). Errors: [`Error::Api`] when the server refuses
    /// (403, 400), [`Error::Unreachable`] when it cannot be reached.
    pub async fn subscribe_events(&self, event_type: &str) -> Result<EventStream> {
        if event_type.is_empty()
            || !event_type.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./*+:".contains(&b))
        {
            return Err(Error::Config(format!(
                "event type {event_type:?} must be letters, digits and - _ . / * + : only"
            )));
        }
        let url = reqwest::Url::parse(&self.address)
            .map_err(|e| Error::Config(format!("address {:?}: {e}", self.address)))?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(Error::Config(format!("unsupported address scheme {other:?}"))),
        };
        let host = url
            .host_str()
            .ok_or_else(|| Error::Config(format!("address {:?} has no host", self.address)))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        let ws_url = format!(
            "{}://{}/v1/sys/events/subscribe/{event_type}?json=true",
            if tls { "wss" } else { "ws" },
            format_args!("{host}{}", url.port().map(|p| format!(":{p}")).unwrap_or_default()),
        );
        let unreachable = |cause: String| Error::Unreachable { addr: self.address.clone(), cause };
        let ws_url_shown = ws_url.clone();
        let mut request = ws_url.into_client_request().map_err(|e| Error::Config(e.to_string()))?;
        if let Some(t) = &self.token {
            let mut v = HeaderValue::from_str(t)
                .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            request.headers_mut().insert("X-Vault-Token", v);
        }
        let limit = self.config.timeout.unwrap_or(Duration::from_secs(60));
        let connect = async {
            // An IPv6 address is bracketed in a URL, not in a socket address or a TLS name.
            let host_name = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let tcp = TcpStream::connect((host_name.as_str(), port))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let conn = if tls {
                let name = ServerName::try_from(host_name.clone())
                    .map_err(|e| Error::Config(format!("server name {host_name:?}: {e}")))?;
                let connector =
                    tokio_rustls::TlsConnector::from(Arc::new(tls_config(&self.config)?));
                let s =
                    connector.connect(name, tcp).await.map_err(|e| unreachable(e.to_string()))?;
                Conn::Tls(Box::new(s))
            } else {
                Conn::Plain(tcp)
            };
            // Events are small JSON messages: tungstenite's default 128 KiB read buffer, zeroed
            // in full before the first read, would be most of an idle agent's private memory. A
            // larger message still arrives whole (the buffer grows to hold it).
            let config = WebSocketConfig::default().read_buffer_size(4 * 1024);
            tokio_tungstenite::client_async_with_config(request, conn, Some(config))
                .await
                .map_err(|e| handshake_error(e, &ws_url_shown, &unreachable))
        };
        let (ws, _) = tokio::time::timeout(limit, connect)
            .await
            .map_err(|_| unreachable(format!("no WebSocket after {} s", limit.as_secs())))??;
        Ok(EventStream { ws, address: self.address.clone(), idle: IDLE_LIMIT })
    }
}

/// A refused handshake is the server's answer (403, 400 with Vault's error body); anything else
/// is a failure to reach it.
fn handshake_error(e: WsError, url: &str, unreachable: &dyn Fn(String) -> Error) -> Error {
    match e {
        WsError::Http(resp) => {
            let status = resp.status().as_u16();
            let errors = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                .map(|b| b.errors)
                .unwrap_or_default();
            Error::Api { status, errors, method: "GET".into(), url: url.to_owned() }
        }
        other => unreachable(other.to_string()),
    }
}

/// What `tls_skip_verify` puts in place of certificate checks, for the event stream as for the
/// HTTP client: any certificate is taken, but the handshake's signatures are still checked, so
/// the peer holds the key of the certificate it showed (not that the certificate is anyone's).
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algs = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The same trust as the HTTP client: the configured CAs only, else the platform's verifier;
/// the client certificate when one is configured.
fn tls_config(cfg: &ClientConfig) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = match &cfg.ca_cert_pem {
        _ if cfg.tls_skip_verify => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate))
        }
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
                roots.add(c).map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::Config("CA certificate file holds no certificate".into()));
            }
            builder.with_root_certificates(roots)
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt as _;
            builder
                .with_platform_verifier()
                .map_err(|e| Error::Config(format!("platform trust store: {e}")))?
        }
    };
    let mut config = match &cfg.client_identity_pem {
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Config(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(pem)
                .map_err(|e| Error::Config(format!("client key: {e}")))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::Config(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The connection under the WebSocket: plain TCP or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A live subscription: events in the order the server sent them.
pub struct EventStream {
    ws: WebSocketStream<Conn>,
    address: String,
    idle: Duration,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("address", &self.address).finish_non_exhaustive()
    }
}

impl EventStream {
    /// The next event. `Ok(None)`: the server closed the stream normally or the connection
    /// ended. [`Error::EventStreamClosed`]: the server closed it for a reason (the token was
    /// revoked or lost access: 1008; sealed or stopping: 1001; too slow a reader: 1013).
    /// [`Error::Unreachable`] also when nothing, not even a ping, came for 90 s.
    pub async fn next(&mut self) -> Result<Option<EventMessage>> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.ws.next()).await {
                Err(_) => {
                    return Err(Error::Unreachable {
                        addr: self.address.clone(),
                        cause: format!(
                            "the event stream was silent for {} s (no event, no ping)",
                            self.idle.as_secs()
                        ),
                    });
                }
                Ok(None) | Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => {
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    return Err(Error::Unreachable {
                        addr: self.address.clone(),
                        cause: e.to_string(),
                    });
                }
                Ok(Some(Ok(m))) => m,
            };
            match frame {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str())
                        .map(Some)
                        .map_err(|e| Error::Decode(format!("event: {e}")));
                }
                Message::Binary(_) => {
                    return Err(Error::Decode(
                        "a binary (protobuf) event: the subscription asked for JSON".into(),
                    ));
                }
                Message::Close(Some(f)) if f.code != CloseCode::Normal => {
                    return Err(Error::EventStreamClosed {
                        code: f.code.into(),
                        reason: f.reason.as_str().to_owned(),
                    });
                }
                Message::Close(_) => return Ok(None),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Ends the subscription with a normal close.
    pub async fn close(mut self) -> Result<()> {
        let _ = self.ws.close(None).await;
        // Read the server's close frame back, briefly, so the close is clean.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        let _ = self.ws.flush().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A message as Vault sends it (its documentation's example, with Vault 1.16's metadata).
    const VAULT_EXAMPLE: &str = r#"{"id":"a3be9fb1-b514-519f-5b25-b6f144a8c1ce","source":"vault://mycluster","specversion":"1.0","type":"*","data":{"event":{"id":"a3be9fb1-b514-519f-5b25-b6f144a8c1ce","metadata":{"current_version":"1","data_path":"secret/data/foo","modified":"true","oldest_version":"0","operation":"data-write","path":"secret/data/foo"}},"event_type":"kv-v2/data-write","plugin_info":{"mount_class":"secret","mount_accessor":"kv_5dc4d18e","mount_path":"secret/","plugin":"kv","version":"2"}},"datacontentype":"application/cloudevents","time":"2023-09-12T15:19:49.394915-07:00"}"#;

    #[test]
    fn vaults_messages_parse_and_serialize_back_to_the_same_bytes() {
        let m: EventMessage = serde_json::from_str(VAULT_EXAMPLE).expect("parse");
        assert_eq!(m.event_type(), "kv-v2/data-write");
        assert_eq!(m.path(), Some("secret/data/foo"));
        assert_eq!(m.data_path(), Some("secret/data/foo"));
        assert_eq!(m.metadata("current_version"), Some("1"));
        assert_eq!(m.data.plugin_info.as_ref().map(|p| p.plugin.as_str()), Some("kv"));
        assert_eq!(serde_json::to_string(&m).expect("serialize"), VAULT_EXAMPLE);
    }

    #[test]
    fn empty_optional_fields_are_left_out_as_vault_leaves_them_out() {
        let m = EventMessage {
            id: "i".into(),
            source: "s".into(),
            specversion: SPEC_VERSION.into(),
            cloudevent_type: CLOUDEVENT_TYPE.into(),
            data: EventReceived {
                event: EventData {
                    id: "i".into(),
                    metadata: Map::new(),
                    entity_ids: Vec::new(),
                    note: String::new(),
                },
                namespace: String::new(),
                event_type: "kv-v1/delete".into(),
                plugin_info: None,
            },
            data_content_type: DATA_CONTENT_TYPE.into(),
            time: "t".into(),
        };
        assert_eq!(
            serde_json::to_value(&m).expect("json"),
            json!({"id": "i", "source": "s", "specversion": "1.0", "type": "*",
                   "data": {"event": {"id": "i"}, "event_type": "kv-v1/delete"},
                   "datacontentype": "application/cloudevents", "time": "t"})
        );
    }

    #[tokio::test]
    async fn odd_event_types_and_addresses_are_refused_before_connecting() {
        let c = Client::new(&ClientConfig {
            address: "http://127.0.0.1:1".into(),
            ..ClientConfig::default()
        })
        .expect("client");
        for bad in ["", "kv v2", "kv?x=1", "kv#"] {
            assert!(matches!(c.subscribe_events(bad).await, Err(Error::Config(_))), "{bad:?}");
        }
        assert!(matches!(c.subscribe_events("kv*").await, Err(Error::Unreachable { .. })));
    }
}
