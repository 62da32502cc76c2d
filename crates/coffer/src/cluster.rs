//! HA request forwarding: a standby sends every request (but the few public `sys/` endpoints
//! it answers itself, and the KV reads its read replica answers) to the active node over
//! mutually authenticated TLS on the active's `cluster_addr`, and relays the answer unchanged.
//! Never a redirect.
//!
//! Standby reads: a `GET`/`LIST` without a body or wrapping is first run through this node's
//! own pipeline while the core says its replica is proven fresh
//! (`coffer_core::ha::replica`); when the core answers `Standby` (the request needs the active
//! node: a use-counted token, a token it does not know, a non-kv mount...), the request is
//! forwarded after all, rebuilt from its kept parts (it had no body).
//!
//! The cluster's TLS identity comes from the barrier: a 32-byte seed stored there by the first
//! active node (`Core::cluster_seed`) is the Ed25519 key of a certificate authority every
//! unsealed node derives alike; each node makes itself a fresh leaf certificate (name
//! [`CLUSTER_NAME`], server and client use) signed by it when it first needs one. So only
//! nodes that opened the barrier can forward or accept forwarded requests, and the identity
//! needs no file or operator step.
//!
//! Guarantees: the cluster listener requires a client certificate of the cluster CA and
//! accepts connections only while this node is unsealed; the client's address and TLS
//! certificate chain travel in `X-Coffer-Forwarded-For` / `X-Coffer-Forwarded-Client-Cert`,
//! and which unseal-share endpoints the standby's listener serves without a token in
//! `X-Coffer-Forwarded-Unauthed` (the cluster listener serves them only as the standby's
//! listener does); all three are read only on the cluster listener (a client sending them to an API listener is
//! ignored: the standby replaces them); the token travels in the request's own headers. The
//! active answers forwarded requests with its full pipeline (audit included), and never
//! forwards them again.
//!
//! Event subscriptions (WebSocket upgrades) are forwarded too: the handshake goes to the active
//! node on a cluster connection of its own, and after its 101 the messages are relayed both
//! ways; the client gets a close frame however the relay ends.
//!
//! Not done: the leaf certificates do not rotate while a node stays unsealed; no header says
//! which node answered (the audit logs do).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use coffer_core::Core;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::http::ConnInfo;

/// The DNS name in every node's cluster certificate, and the name a node connects to.
pub(crate) const CLUSTER_NAME: &str = "coffer-cluster";
pub(crate) const FORWARDED_UNAUTHED: HeaderName =
    HeaderName::from_static("x-coffer-forwarded-unauthed");
pub(crate) const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-coffer-forwarded-for");
pub(crate) const FORWARDED_CERT: HeaderName =
    HeaderName::from_static("x-coffer-forwarded-client-cert");
/// How long a forwarded request may take, end to end.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(90);

/// The TLS configurations made from the seed.
struct Built {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// One node's cluster side: its TLS identity (made on first use while unsealed, dropped at
/// seal) and its HTTP clients to the active node.
pub(crate) struct Cluster {
    core: Arc<Core>,
    built: tokio::sync::Mutex<Option<Arc<Built>>>,
    clients: std::sync::Mutex<HashMap<SocketAddr, reqwest::Client>>,
    max_request_size: usize,
}

impl Cluster {
    pub(crate) fn new(core: Arc<Core>, max_request_size: usize) -> Arc<Self> {
        Arc::new(Self {
            core,
            built: Default::default(),
            clients: Default::default(),
            max_request_size,
        })
    }

    /// The identity, when this node is unsealed and a node has led once.
    async fn built(&self) -> Option<Arc<Built>> {
        let mut g = self.built.lock().await;
        if self.core.is_sealed() {
            *g = None;
            if let Ok(mut c) = self.clients.lock() {
                c.clear();
            }
            return None;
        }
        if let Some(b) = g.as_ref() {
            return Some(b.clone());
        }
        let seed = match self.core.cluster_seed().await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster identity seed");
                return None;
            }
        };
        match build(&seed) {
            Ok(b) => {
                let b = Arc::new(b);
                *g = Some(b.clone());
                Some(b)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make the cluster TLS identity");
                None
            }
        }
    }

    async fn client(&self, addr: SocketAddr) -> Option<reqwest::Client> {
        let built = self.built().await?;
        let mut clients = self.clients.lock().ok()?;
        if let Some(c) = clients.get(&addr) {
            return Some(c.clone());
        }
        let c = reqwest::Client::builder()
            .use_preconfigured_tls((*built.client).clone())
            .resolve(CLUSTER_NAME, addr)
            .timeout(FORWARD_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| tracing::error!(error = %e, "cannot build the forwarding client"))
            .ok()?;
        clients.insert(addr, c.clone());
        Some(c)
    }
}

/// The CA (from the seed) and a fresh leaf of this node.
fn build(seed: &[u8]) -> Result<Built> {
    let seed: &[u8; 32] = seed.try_into().map_err(|_| anyhow!("cluster seed length"))?;
    let ed = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| anyhow!("cluster CA key"))?;
    let pkcs8 = Zeroizing::new(
        ed.to_pkcs8().map_err(|_| anyhow!("cluster CA key encoding"))?.as_ref().to_vec(),
    );
    let ca_key = rcgen::KeyPair::try_from(pkcs8.as_slice()).context("cluster CA key")?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Coffer cluster CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut leaf = rcgen::CertificateParams::new(vec![CLUSTER_NAME.to_owned()])?;
    leaf.distinguished_name.push(rcgen::DnType::CommonName, CLUSTER_NAME);
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone(), ca_cert.der().clone()];
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).context("cluster CA")?;
    let roots = Arc::new(roots);
    let provider = crate::tls::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .context("cluster client verifier")?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key())
        .context("cluster certificate")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key())
        .context("cluster client certificate")?;
    Ok(Built { server: Arc::new(server), client: Arc::new(client) })
}

/// `https://host:port` (or `host:port`) of a `cluster_addr`, as a socket address.
pub(crate) fn socket_addr(cluster_addr: &str) -> Result<SocketAddr> {
    let rest = cluster_addr
        .strip_prefix("https://")
        .or_else(|| cluster_addr.strip_prefix("tcp://"))
        .unwrap_or(cluster_addr);
    crate::config::resolve_address(rest.trim_end_matches('/'))
        .with_context(|| format!("cluster_addr {cluster_addr:?} is not https://HOST:PORT"))
}

/// Endpoints a standby answers itself (Vault's unauthenticated system paths).
fn served_locally(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/v1/sys/health"
            | "/v1/sys/leader"
            | "/v1/sys/seal-status"
            | "/v1/sys/unseal"
            | "/v1/sys/init"
    )
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        let name = k.as_str();
        if HOP_BY_HOP.contains(&name) || name.starts_with("x-coffer-forwarded-") {
            continue;
        }
        to.append(k.clone(), v.clone());
    }
}

fn unavailable(msg: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "errors": [msg] })))
        .into_response()
}

/// Marks an answer of the core's `Standby` error: on a standby trying a read itself, the
/// request goes to the active node after all.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NeedsActive;

/// A request a standby may try to answer from its read replica: a read or a list (`GET`,
/// `LIST`) with no body, no WebSocket upgrade, no response wrapping. The core decides the rest
/// (`coffer_core::ha::replica`) and answers `Standby` when the active node must.
fn local_read_candidate(req: &Request) -> bool {
    let h = req.headers();
    (req.method() == axum::http::Method::GET || req.method().as_str() == "LIST")
        && !is_websocket(h)
        && h.get("x-vault-wrap-ttl").is_none()
        && h.get(axum::http::header::TRANSFER_ENCODING).is_none()
        && h.get(axum::http::header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0")
}

/// The request again, without its body (a candidate has none): for the forward after a local
/// attempt gave way. The connection's information goes with it.
fn bodiless_copy(req: &Request) -> Request {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    if let Some(info) = req.extensions().get::<ConnInfo>() {
        copy.extensions_mut().insert(info.clone());
    }
    copy
}

/// The API listeners' layer: on a standby, the request goes to the active node, unless the
/// standby can answer a read itself from a replica proven fresh.
pub(crate) async fn forward(
    State(cluster): State<Arc<Cluster>>,
    req: Request,
    next: Next,
) -> Response {
    if !cluster.core.is_standby() || served_locally(req.uri().path()) {
        return next.run(req).await;
    }
    // A scrape of a listener open to unauthenticated metrics asks for this node's own figures.
    let local_metrics = req.uri().path().trim_end_matches('/') == "/v1/sys/metrics"
        && req.extensions().get::<ConnInfo>().is_some_and(|c| c.unauthenticated_metrics);
    if local_metrics {
        return next.run(req).await;
    }
    let (req, next) = if local_read_candidate(&req) && cluster.core.standby_serves_reads() {
        let copy = bodiless_copy(&req);
        let resp = next.run(req).await;
        if resp.extensions().get::<NeedsActive>().is_none() {
            return resp;
        }
        (copy, Err(resp))
    } else {
        (req, Ok(next))
    };
    let leader = cluster.core.leader_advert().and_then(|a| socket_addr(&a.cluster_addr).ok());
    let target = match leader {
        Some(addr) => cluster.client(addr).await.map(|c| (addr, c)),
        None => None,
    };
    let Some((addr, client)) = target else {
        // No active node yet (or it advertises no cluster address): the core says standby.
        return match next {
            Ok(next) => next.run(req).await,
            // The local attempt's answer: 503, standby.
            Err(resp) => resp,
        };
    };
    let info = req.extensions().get::<ConnInfo>().cloned();
    if is_websocket(req.headers()) {
        return forward_websocket(&cluster, addr, req, info).await;
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, cluster.max_request_size).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({ "errors": ["request body too large"] })),
            )
                .into_response();
        }
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let headers = forwarded_headers(&parts.headers, info.as_ref());
    let url = format!("https://{CLUSTER_NAME}:{}{path}", addr.port());
    let sent = client.request(parts.method, url).headers(headers).body(body).send().await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(active = %addr, error = %e, "forwarding to the active node failed");
            if e.is_connect() {
                // Perhaps it is gone: look for the new leader now.
                cluster.core.leader_unreachable();
            }
            return unavailable("the active node could not be reached; retry the request");
        }
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    copy_headers(resp.headers(), &mut out_headers);
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(active = %addr, error = %e, "reading the active node's answer failed");
            return unavailable("the active node's answer was cut short; retry the request");
        }
    };
    let mut out = Response::new(Body::from(bytes));
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    out
}

/// The request's end-to-end headers, and what the active node is to know of the client.
fn forwarded_headers(from: &HeaderMap, info: Option<&ConnInfo>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    copy_headers(from, &mut headers);
    if let Some(info) = info {
        if let Ok(v) = HeaderValue::from_str(&info.remote_addr.to_string()) {
            headers.insert(FORWARDED_FOR, v);
        }
        if let Some(v) = unauthed_header(info.unauthed) {
            headers.insert(FORWARDED_UNAUTHED, HeaderValue::from_static(v));
        }
        if !info.client_cert_chain.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD;
            let list: Vec<String> = info.client_cert_chain.iter().map(|c| b64.encode(c)).collect();
            if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
                headers.insert(FORWARDED_CERT, v);
            }
        }
    }
    headers
}

/// A WebSocket handshake (`Upgrade: websocket`): an event subscription.
fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("websocket")))
}

/// An event subscription through a standby: the handshake goes to the active node on a cluster
/// connection of its own, its answer comes back as it is (the active node checks the token,
/// the ACL and audits, and computes `Sec-WebSocket-Accept` from the client's key); after a 101
/// both connections are upgraded and messages are relayed both ways until either side closes,
/// the active node stops serving the subscription (it steps down, seals, stops), the cluster
/// connection ends, or this node stops; the client gets a close frame in each case
/// (`http::relay_event_subscription`).
async fn forward_websocket(
    cluster: &Cluster,
    addr: SocketAddr,
    req: Request,
    info: Option<ConnInfo>,
) -> Response {
    use axum::http::header::{CONNECTION, HOST, UPGRADE};
    let Some(built) = cluster.built().await else {
        return unavailable("this node cannot reach the active node yet; retry the request");
    };
    let (mut parts, _) = req.into_parts();
    let Some(client_side) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return unavailable("this connection cannot be upgraded");
    };
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let name = rustls_pki_types::ServerName::try_from(CLUSTER_NAME)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tokio_rustls::TlsConnector::from(built.client.clone()).connect(name, tcp).await
    };
    let tls = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(s)) => s,
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            tracing::warn!(active = %addr, error = %why, "forwarding an event subscription to the active node failed");
            cluster.core.leader_unreachable();
            return unavailable("the active node could not be reached; retry the request");
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(active = %addr, error = %e, "cluster connection for an event subscription failed");
            return unavailable("the active node could not be reached; retry the request");
        }
    };
    tokio::spawn(conn.with_upgrades());
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let mut up = axum::http::Request::new(Body::empty());
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(_) => return unavailable("the request path cannot be forwarded"),
    };
    *up.headers_mut() = forwarded_headers(&parts.headers, info.as_ref());
    let h = up.headers_mut();
    h.insert(HOST, HeaderValue::from_static(CLUSTER_NAME));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let resp = match tokio::time::timeout(FORWARD_TIMEOUT, sender.send_request(up)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(active = %addr, error = %e, "forwarding an event subscription failed");
            return unavailable("the active node could not be reached; retry the request");
        }
        Err(_) => return unavailable("the active node did not answer; retry the request"),
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    copy_headers(resp.headers(), &mut out_headers);
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // A refusal (403, 400, ...): relayed as any forwarded answer.
        let bytes = match axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20).await {
            Ok(b) => b,
            Err(_) => {
                return unavailable("the active node's answer was cut short; retry the request");
            }
        };
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = status;
        *out.headers_mut() = out_headers;
        return out;
    }
    out_headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    out_headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    let active_side = hyper::upgrade::on(resp);
    let lifeline = info.map(|i| i.lifeline);
    tokio::spawn(async move {
        let (client, active) = match tokio::join!(client_side, active_side) {
            (Ok(c), Ok(a)) => (c, a),
            _ => return,
        };
        crate::http::relay_event_subscription(
            hyper_util::rt::TokioIo::new(client),
            hyper_util::rt::TokioIo::new(active),
            lifeline,
        )
        .await;
    });
    let mut out = Response::new(Body::empty());
    *out.status_mut() = status;
    *out.headers_mut() = out_headers;
    out
}

/// For a request that arrived on the cluster listener: the original client's address and
/// certificate chain, as the forwarding standby saw them.
/// The unseal-share endpoints the standby's listener serves, for the active node to apply as
/// its own listener's (`X-Coffer-Forwarded-Unauthed`); `None`: neither.
fn unauthed_header(u: coffer_core::UnauthedEndpoints) -> Option<&'static str> {
    match (u.generate_root, u.rekey) {
        (true, true) => Some("generate-root,rekey"),
        (true, false) => Some("generate-root"),
        (false, true) => Some("rekey"),
        (false, false) => None,
    }
}

pub(crate) fn apply_forwarded(headers: &HeaderMap, info: &mut ConnInfo) {
    if let Some(v) = headers.get(FORWARDED_UNAUTHED).and_then(|v| v.to_str().ok()) {
        let named: Vec<&str> = v.split(',').map(str::trim).collect();
        info.unauthed = coffer_core::UnauthedEndpoints {
            generate_root: named.contains(&"generate-root"),
            rekey: named.contains(&"rekey"),
        };
    }
    if let Some(a) =
        headers.get(FORWARDED_FOR).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    {
        info.remote_addr = a;
    }
    if let Some(v) = headers.get(FORWARDED_CERT).and_then(|v| v.to_str().ok()) {
        let b64 = base64::engine::general_purpose::STANDARD;
        info.client_cert_chain = v.split(',').filter_map(|c| b64.decode(c.trim()).ok()).collect();
    }
}

/// The TLS configuration for a new cluster connection; `None` while sealed or before any node
/// led (the connection is then closed).
pub(crate) async fn server_tls(cluster: &Cluster) -> Option<Arc<rustls::ServerConfig>> {
    cluster.built().await.map(|b| b.server.clone())
}

/// Serves the cluster listener: mutual TLS with the cluster identity, then the same API as the
/// other listeners, with the forwarding standby's view of the client applied to each request.
pub(crate) async fn serve(
    sock: tokio::net::TcpListener,
    cluster: Arc<Cluster>,
    app: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tower::ServiceExt as _;
    // As the API listeners: every connection holds a sender, and stopping waits for them, so a
    // forwarded request in flight finishes before the process exits.
    let (alive, mut all_gone) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            r = sock.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let cluster = cluster.clone();
        let app = app.clone();
        let stop = stop.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let Some(tls) = server_tls(&cluster).await else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "cluster TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let base = ConnInfo {
                remote_addr: peer,
                client_cert_chain: Vec::new(),
                lifeline: crate::http::Lifeline::new(stop.clone(), alive),
                // Forwarded requests are never the unauthenticated metrics scrape: that one is
                // answered by the node it reached.
                unauthenticated_metrics: false,
                // The forwarding standby's listener decides (`apply_forwarded`).
                unauthed: coffer_core::UnauthedEndpoints::default(),
                // A standby forwards many clients' requests on one connection.
                token_memo: None,
            };
            let lifeline = base.lifeline.clone();
            let svc = app.map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                let mut info = base.clone();
                apply_forwarded(r.headers(), &mut info);
                r.extensions_mut().insert(info);
                r
            });
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            // Upgrades: event subscriptions forwarded by a standby.
            let conn =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = lifeline.stopping() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(alive);
    if tokio::time::timeout(Duration::from_secs(30), all_gone.recv()).await.is_err() {
        tracing::warn!("cluster connections still open after 30 s; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnInfo {
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let (alive, _gone) = tokio::sync::mpsc::channel(1);
        ConnInfo {
            remote_addr: "127.0.0.1:1".parse().expect("addr"),
            client_cert_chain: Vec::new(),
            lifeline: crate::http::Lifeline::new(rx, alive),
            unauthenticated_metrics: false,
            unauthed: coffer_core::UnauthedEndpoints::default(),
            token_memo: None,
        }
    }

    #[test]
    fn the_active_serves_the_key_share_endpoints_only_as_the_standbys_listener_does() {
        for (generate_root, rekey) in [(false, false), (true, false), (false, true), (true, true)] {
            let at_standby = coffer_core::UnauthedEndpoints { generate_root, rekey };
            let mut headers = HeaderMap::new();
            if let Some(v) = unauthed_header(at_standby) {
                headers.insert(FORWARDED_UNAUTHED, HeaderValue::from_static(v));
            }
            let mut at_active = conn();
            apply_forwarded(&headers, &mut at_active);
            assert_eq!(at_active.unauthed, at_standby);
        }
        // A client's own header never reaches the active: the standby drops it.
        let mut from_client = HeaderMap::new();
        from_client.insert(FORWARDED_UNAUTHED, HeaderValue::from_static("generate-root,rekey"));
        let mut sent = HeaderMap::new();
        copy_headers(&from_client, &mut sent);
        assert!(sent.get(FORWARDED_UNAUTHED).is_none());
    }
}
