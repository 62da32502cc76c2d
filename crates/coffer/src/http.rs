//! HTTP ⇄ logical mapping, in one place: methods to operations, headers to the token and to the
//! key an answer is sealed to (`X-Coffer-Seal-To`, checked here, before the request runs), bodies
//! and query strings to request data, and answers to Vault's envelope (`coffer_api::Envelope`, the
//! type clients read them with). Errors go to the wire through `error` (one status per logical
//! error; a 5xx says only "internal error" and the cause is logged).
//!
//! Transport concerns are tower layers in one `ServiceBuilder` stack (`router`), outermost first:
//! a request id chosen by the server (a client's `X-Request-Id` is ignored), which becomes the
//! envelope's `request_id` and the audit entries' `request.id`; a trace span per request with its
//! method, path, id, status and latency, at `debug`; and the body layer (`body`), which reads
//! every request body within `max_request_size` (413), `http_read_timeout` (408) and
//! `max_buffered_request_bytes` (503) before any handler runs, the 404 for paths outside `/v1/`
//! included. Not here: the header timeout, which hyper enforces (server.rs).
//!
//! `sys/events/subscribe/...` goes through the same handler and pipeline; when the core answers
//! with a subscription, `events` upgrades the connection to a WebSocket and serves it.

mod body;
mod error;
mod events;
mod forwarded_for;

pub(crate) use events::relay as relay_event_subscription;
pub(crate) use forwarded_for::{ForwardedFor, apply as forwarded_for_layer};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use coffer_api::Envelope;
use coffer_core::logical::WrapInfo;
use coffer_core::{Auth, Core, Error, Operation, Request};
use serde_json::{Map, Value};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestId, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub(crate) use body::BodyLimits;
use error::{error_body, error_response};

/// What the connection knows about its peer, attached to every request on it.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub remote_addr: SocketAddr,
    /// DER certificates the client presented, leaf first.
    pub client_cert_chain: Vec<Vec<u8>>,
    /// The listener's stop signal, held by everything it must wait for when stopping.
    pub lifeline: Lifeline,
    /// The listener's `telemetry { unauthenticated_metrics_access }`.
    pub unauthenticated_metrics: bool,
    /// The unseal-share endpoints the listener serves without a token (on the cluster
    /// listener: those the forwarding standby's listener serves).
    pub unauthed: coffer_core::UnauthedEndpoints,
    /// The last token presented on this connection and its salted hash, so that a client
    /// presenting the same token on each request pays the hash once
    /// (`coffer_core::token::TokenMemo`, which says what holding the token changes). `None` on
    /// the cluster listener, whose connections carry many clients' tokens.
    pub token_memo: Option<Arc<coffer_core::token::TokenMemo>>,
}

/// The listener's stop signal, and a token of being alive that the listener waits for when it
/// stops: each connection holds one, and so does a WebSocket after its connection was upgraded,
/// until it has closed.
#[derive(Clone, Debug)]
pub(crate) struct Lifeline {
    stop: tokio::sync::watch::Receiver<bool>,
    _alive: tokio::sync::mpsc::Sender<()>,
}

impl Lifeline {
    pub(crate) fn new(
        stop: tokio::sync::watch::Receiver<bool>,
        alive: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        Self { stop, _alive: alive }
    }

    /// Resolves once the listener is stopping.
    pub(crate) async fn stopping(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

pub(crate) fn router(core: Arc<Core>, limits: BodyLimits) -> Router {
    let transport = ServiceBuilder::new()
        // The id names the request in audit entries and logs, so only the server chooses it:
        // `SetRequestIdLayer` would keep one the client sent.
        .map_request(|mut req: HttpRequest| {
            req.headers_mut().remove(REQUEST_ID);
            req
        })
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // One line per request, when it is answered; errors are logged where they are
                // understood (`error`), and a 5xx such as "sealed" is no failure of the server.
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(tracing::Level::DEBUG)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                )
                .on_failure(()),
        )
        .layer(axum::middleware::from_fn_with_state(Arc::new(limits), body::buffer_body))
        // The body layer above enforces `max_request_size`; axum's own default cap (2 MiB) on
        // the `Bytes` extractor would be a second, different limit.
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/v1/{*path}", any(handle))
        .fallback(|| async {
            error_body(
                StatusCode::NOT_FOUND,
                vec!["no such endpoint: Coffer's API lives under /v1/".into()],
            )
        })
        .layer(transport)
        .with_state(core)
}

const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// Request ids in the form Coffer has always used: a random UUID (v4).
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&coffer_core::random::uuid_v4()).ok().map(RequestId::new)
    }
}

/// The id `SetRequestIdLayer` gave the request.
fn request_id_of<B>(req: &axum::http::Request<B>) -> Option<&str> {
    req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok())
}

/// The path only: a query string may carry request data, which stays out of the log.
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        path = req.uri().path(),
        request_id = request_id_of(req).unwrap_or_default(),
    )
}

/// RFC 6960's GET form puts the base64 DER request, URL-encoded, in the last path segment, so
/// base64's `/` arrives as `%2F`. Decoded, it would split the request over segments, and two in a
/// row make an empty segment, which every path refuses: about one request in forty would get a
/// 400 (Vault dropped OCSP GET over the same problem). For a GET whose last raw segment follows
/// `ocsp/` and decodes to something with a `/`, the segment reaches the engine in base64's
/// URL-safe alphabet instead, which the engine reads too; the rest of the path is decoded as
/// always. A client that does not encode its `/`s (against the RFC) is not helped.
fn ocsp_get_path(method: &Method, raw: &str) -> Option<String> {
    if method != Method::GET {
        return None;
    }
    let (prefix, last) = raw.strip_prefix("/v1/")?.rsplit_once('/')?;
    if prefix != "ocsp" && !prefix.ends_with("/ocsp") {
        return None;
    }
    let last = percent_encoding::percent_decode_str(last).decode_utf8().ok()?;
    if !last.contains('/') {
        return None;
    }
    let prefix = percent_encoding::percent_decode_str(prefix).decode_utf8().ok()?;
    Some(format!("{prefix}/{}", last.replace('/', "_").replace('+', "-")))
}

fn operation(method: &Method, list_query: bool) -> Option<Operation> {
    Some(match method.as_str() {
        "GET" if list_query => Operation::List,
        "GET" => Operation::Read,
        "LIST" => Operation::List,
        "POST" | "PUT" => Operation::Update,
        "PATCH" => Operation::Patch,
        "DELETE" => Operation::Delete,
        _ => return None,
    })
}

fn token_from(headers: &HeaderMap) -> Option<String> {
    for name in ["x-vault-token", "x-coffer-token"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()) {
            return Some(v.to_owned());
        }
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The client's key from `X-Coffer-Seal-To`, checked before the request runs: a key the answer
/// could not be sealed to is a 400 naming the problem, never an answer in clear.
fn seal_to(headers: &HeaderMap) -> Result<Option<coffer_hpke::Recipient>, Error> {
    let mut values = headers.get_all(coffer_hpke::HEADER).iter();
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Error::invalid(format!("{} is given more than once", coffer_hpke::HEADER)));
    }
    let v = v.to_str().map_err(|_| {
        Error::invalid(format!("invalid {} header: it is not ASCII", coffer_hpke::HEADER))
    })?;
    coffer_hpke::Recipient::from_header(v).map(Some).map_err(|e| Error::invalid(e.to_string()))
}

/// The data of a GitHub secret-scanning alert: the raw body (base64) and the two signature
/// headers, each given once at most (a header given twice reaches the handler as absent).
fn github_alert(body: &[u8], headers: &HeaderMap) -> Map<String, Value> {
    use base64::Engine as _;
    use coffer_core::leaks::github;
    let mut m = Map::new();
    m.insert(
        github::RAW_BODY.into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
    );
    for (name, field) in [
        ("github-public-key-identifier", github::KEY_ID_FIELD),
        ("github-public-key-signature", github::SIGNATURE_FIELD),
    ] {
        let mut values = headers.get_all(name).iter();
        if let (Some(v), None) = (values.next(), values.next())
            && let Ok(v) = v.to_str()
        {
            m.insert(field.into(), Value::String(v.to_owned()));
        }
    }
    m
}

fn parse_body(body: &[u8], path: &str) -> Result<Map<String, Value>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        // GitHub's secret-scanning partner alerts are a bare array; they reach the handler in
        // a field of their own (and are audited as HMACs like any request data).
        Ok(Value::Array(a)) if path.trim_matches('/') == "sys/leaks/report" => {
            let mut m = Map::new();
            m.insert(coffer_core::leaks::GITHUB_ALERTS.into(), Value::Array(a));
            Ok(m)
        }
        Ok(_) => Err(Error::invalid(
            "failed to parse JSON input: the request body must be a JSON object",
        )),
        Err(e) => Err(Error::invalid(format!("failed to parse JSON input: {e}"))),
    }
}

#[allow(clippy::too_many_arguments)] // reason: one extractor per part of the request is axum's idiom
async fn handle(
    State(core): State<Arc<Core>>,
    conn: Option<Extension<ConnInfo>>,
    request_id: Option<Extension<RequestId>>,
    method: Method,
    Path(path): Path<String>,
    uri: axum::http::Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    upgrade: events::Upgrade,
    // Already read whole, within the listener's limits, by the body layer.
    body: Bytes,
) -> Response {
    // Always set by the transport stack; a fresh one stands in outside it.
    let request_id = request_id
        .and_then(|Extension(id)| id.header_value().to_str().ok().map(str::to_owned))
        .unwrap_or_else(coffer_core::random::uuid_v4);
    let path = ocsp_get_path(&method, uri.path()).unwrap_or(path);
    let list_query = query.iter().any(|(k, v)| k == "list" && v == "true");
    // As Vault: a non-empty `help` query asks for the path's help, whatever the method (a
    // write is not carried out), and so does the method HELP.
    let help = method.as_str() == "HELP" || query.iter().any(|(k, v)| k == "help" && !v.is_empty());
    // Load balancers probe health with HEAD: the status code is the answer.
    let head = method == Method::HEAD && path.trim_matches('/') == "sys/health";
    let op = if help {
        Some(Operation::Help)
    } else if head {
        Some(Operation::Read)
    } else {
        operation(&method, list_query)
    };
    // As Vault: a listener with unauthenticated_metrics_access serves `GET sys/metrics` itself,
    // without a token, the ACL or an audit entry.
    if op == Some(Operation::Read)
        && !help
        && path.trim_matches('/') == "sys/metrics"
        && conn.as_ref().is_some_and(|Extension(c)| c.unauthenticated_metrics)
    {
        let format = query.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str());
        let format =
            format.unwrap_or(if prometheus_accepted(&headers) { "prometheus" } else { "" });
        return success(core.metrics_response(format).await, request_id, &path);
    }
    let Some(op) = op else {
        return error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            vec![format!("method {method} is not supported")],
        );
    };
    // A help request carries no data (Vault ignores its body and query).
    let body: &[u8] = if help { &[] } else { &body };
    let ocsp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/ocsp-request"));
    // As Vault: a DER OCSP request is no JSON; it reaches the engine base64-encoded in
    // `http_raw_body`, the field Vault's handler puts it in.
    let parsed = if path.trim_matches('/') == "sys/leaks/github" && op == Operation::Update {
        // GitHub signs the raw body: it reaches the handler as sent, with the signature headers,
        // and the alerts are read from it only once the signature verified. Nothing else from
        // the request is taken, so no field can stand in for the signed bytes.
        Ok(github_alert(body, &headers))
    } else if ocsp && !body.is_empty() {
        use base64::Engine as _;
        let mut m = Map::new();
        m.insert(
            "http_raw_body".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        );
        Ok(m)
    } else {
        parse_body(body, &path)
    };
    let mut data = match parsed {
        Ok(d) => d,
        Err(e) => return error_response(e, &request_id, &path),
    };
    if matches!(op, Operation::Read | Operation::List | Operation::Delete) {
        for (k, v) in query.into_iter().filter(|(k, _)| k != "list") {
            data.entry(k).or_insert(Value::String(v));
        }
    }
    if op == Operation::Read
        && path.trim_matches('/') == "sys/metrics"
        && !data.contains_key("format")
        && prometheus_accepted(&headers)
    {
        data.insert("format".into(), Value::String("prometheus".into()));
    }
    if let Some(ns) = headers.get("x-vault-namespace").and_then(|v| v.to_str().ok())
        && !ns.is_empty()
        && ns.trim_matches('/') != "root"
    {
        return error_response(
            Error::invalid("namespaces are not supported by Coffer"),
            &request_id,
            &path,
        );
    }
    let mut req = Request::with_id(request_id.clone(), op, path.clone()).with_data(data);
    if let Some(t) = token_from(&headers) {
        req = req.with_token(t);
    }
    if let Some(v) = headers.get("x-vault-wrap-ttl").filter(|_| !help) {
        // Answering unwrapped when the client asked for wrapping would hand out the secret
        // itself: a TTL that does not parse is refused, never ignored. Unbounded here: the
        // pipeline refuses one above the max lease TTL with a message naming that limit.
        match v.to_str().ok().and_then(coffer_core::time::parse_duration_unbounded) {
            Some(d) if d.is_zero() => {}
            Some(d) => req.wrap_ttl = Some(d),
            None => {
                return error_response(
                    Error::invalid(
                        "invalid X-Vault-Wrap-TTL: expected seconds or a duration like \"5m\"",
                    ),
                    &request_id,
                    &path,
                );
            }
        }
    }
    match seal_to(&headers) {
        Ok(to) => req.seal_to = to,
        Err(e) => return error_response(e, &request_id, &path),
    }
    let lifeline = conn.as_ref().map(|Extension(c)| c.lifeline.clone());
    if let Some(Extension(c)) = conn {
        req.remote_addr = Some(c.remote_addr.ip());
        req.client_cert_chain = c.client_cert_chain;
        req.unauthed = c.unauthed;
        req.token_memo = c.token_memo;
    }
    // Rate limit quotas, as in Vault's handler: before the request runs, refused with 429.
    let limited = core.rate_limit(&req);
    if let Some(l) = limited.as_ref().filter(|l| !l.decision.allowed) {
        if l.audit {
            core.audit_rate_limited(&req, &l.message).await;
        }
        let mut resp = error_body(StatusCode::TOO_MANY_REQUESTS, vec![l.message.clone()]);
        if l.headers {
            rate_limit_headers(&mut resp, l);
        }
        return resp;
    }
    // Run to completion even when the client goes away: hyper drops a handler whose connection
    // closed, and a request dropped between its storage write and the cache updates after it
    // (token, policy and read caches) would leave them stale, e.g. a revoked token still live.
    let handler = core.clone();
    // Boxed: the pipeline's future is large (tens of KiB), and the spawn would otherwise copy
    // it through each of its layers; a box moves as one pointer.
    let task = tokio::spawn(Box::pin(async move { handler.handle_for_client(req).await }));
    let result = match task.await {
        Ok(r) => r,
        Err(e) => Err(coffer_core::Error::Internal(format!("request task failed: {e}"))),
    };
    let mut resp = match result {
        Ok(mut r) => match r.subscription.take() {
            Some(sub) => events::accept(sub, &headers, upgrade, lifeline),
            None => success(r, request_id, &path),
        },
        Err(e) => error_response(e, &request_id, &path),
    };
    if head {
        *resp.body_mut() = axum::body::Body::empty();
    }
    if let Some(l) = limited.as_ref().filter(|l| l.headers) {
        rate_limit_headers(&mut resp, l);
    }
    resp
}

/// Vault's reading of `Accept` for `sys/metrics` without `format`: Prometheus text when the
/// first `Accept` value asks for OpenMetrics (what Prometheus's scraper sends) or any names
/// `prometheus/telemetry`.
fn prometheus_accepted(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok());
    let Some(first) = values.next() else { return false };
    first.starts_with("application/openmetrics-text")
        || std::iter::once(first).chain(values).any(|v| v.contains("prometheus/telemetry"))
}

/// `X-Ratelimit-Limit`, `-Remaining`, `-Reset` (seconds), and `Retry-After` on a refusal.
fn rate_limit_headers(resp: &mut Response, l: &coffer_core::quotas::RateLimited) {
    let h = resp.headers_mut();
    let d = &l.decision;
    h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(d.reset));
    if !d.allowed {
        h.insert(header::RETRY_AFTER, HeaderValue::from(d.retry_after));
    }
}

fn success(mut r: coffer_core::Response, request_id: String, path: &str) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if let Some(raw) = r.raw_body {
        let status = StatusCode::from_u16(raw.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let content_type = HeaderValue::from_static(raw.content_type);
        return (status, [no_store[0].clone(), (header::CONTENT_TYPE, content_type)], raw.body)
            .into_response();
    }
    if let Some((status, body)) = r.raw {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, no_store, axum::Json(body)).into_response();
    }
    if r.is_empty() {
        return (StatusCode::NO_CONTENT, no_store).into_response();
    }
    if let Some(s) = r.status
        && r.data.is_none()
        && r.data_json.is_none()
        && r.auth.is_none()
        && r.wrap_info.is_none()
        && r.sealed.is_none()
    {
        // A status and nothing to say: Vault's empty-bodied answers (a kv v2 patch of a key
        // that is not there is a bare 404).
        let s = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (s, no_store).into_response();
    }
    let status = r.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let inject = injects_data_at_top_level(path) && (r.data.is_some() || r.data_json.is_some());
    // Data held as JSON already is written out as it is, unless its fields are wanted.
    if inject && let Err(e) = r.materialize() {
        tracing::error!(error = %e, "response does not serialize");
        return (StatusCode::INTERNAL_SERVER_ERROR, no_store).into_response();
    }
    if let Some(json) = r.data_json.take() {
        return (status, no_store, axum::Json(envelope(r, Some(json), request_id))).into_response();
    }
    let data = r.data.take();
    let body = envelope(r, data, request_id);
    if !inject {
        return (status, no_store, axum::Json(body)).into_response();
    }
    let mut body = match serde_json::to_value(&body) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "response does not serialize");
            return (StatusCode::INTERNAL_SERVER_ERROR, no_store).into_response();
        }
    };
    if let Value::Object(envelope) = &mut body
        && let Some(Value::Object(data)) = envelope.get("data").cloned()
    {
        for (k, v) in data {
            // Vault writes both keys and a JSON reader keeps the envelope's, the later one.
            envelope.entry(k).or_insert(v);
        }
    }
    (status, no_store, axum::Json(body)).into_response()
}

/// Vault's envelope of `r` with `data` (taken out of `r` by the caller, as a map or as JSON).
fn envelope<D>(
    r: coffer_core::Response,
    data: Option<D>,
    request_id: String,
) -> Envelope<Auth, WrapInfo, D> {
    // A wrapped answer is Vault's bare wrapping envelope: no request id (the request's own id
    // is in the audit log), and `wrapped_accessor` only when a token was wrapped.
    let wrapped = r.wrap_info.is_some();
    Envelope {
        auth: r.auth,
        data,
        lease_duration: r.lease_duration,
        lease_id: r.lease_id,
        mount_type: r.mount_type,
        renewable: r.renewable,
        request_id: if wrapped { String::new() } else { request_id },
        sealed: r.sealed,
        warnings: (!r.warnings.is_empty()).then_some(r.warnings),
        wrap_info: r.wrap_info,
    }
}

/// The `sys/` endpoints whose answers Vault also copies `data`'s fields into, at the top level
/// of the envelope, for clients older than the envelope (OpenBao's `injectDataIntoTopRoutes`,
/// with Go's mux rule: a trailing `/` covers everything below).
fn injects_data_at_top_level(path: &str) -> bool {
    const EXACT: [&str; 9] = [
        "sys/audit",
        "sys/auth",
        "sys/capabilities",
        "sys/capabilities-accessor",
        "sys/capabilities-self",
        "sys/ha-status",
        "sys/key-status",
        "sys/mounts",
        "sys/policy",
    ];
    const EXACT_MORE: [&str; 4] =
        ["sys/rotate", "sys/rotate/keyring", "sys/wrapping/wrap", "sys/remount"];
    const BELOW: [&str; 5] =
        ["sys/audit/", "sys/audit-hash/", "sys/auth/", "sys/mounts/", "sys/policy/"];
    let p = path.trim_start_matches('/');
    EXACT.contains(&p) || EXACT_MORE.contains(&p) || BELOW.iter().any(|b| p.starts_with(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_any_of_the_three_headers() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(token_from(&h).as_deref(), Some("abc"));
        h.insert("x-coffer-token", HeaderValue::from_static("def"));
        assert_eq!(token_from(&h).as_deref(), Some("def"));
        h.insert("x-vault-token", HeaderValue::from_static("ghi"));
        assert_eq!(token_from(&h).as_deref(), Some("ghi"));
        let mut basic = HeaderMap::new();
        basic.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(token_from(&basic), None);
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(parse_body(b"", "secret/x").expect("empty").is_empty());
        assert!(parse_body(b"{\"a\":1}", "secret/x").is_ok());
        let e = parse_body(b"[1]", "secret/x").expect_err("array");
        assert!(e.to_string().contains("JSON object"));
        let e = parse_body(b"{\"a\":", "secret/x").expect_err("truncated");
        assert!(e.to_string().contains("failed to parse JSON input"));
        // GitHub's alert array, on the one path that takes it.
        let m = parse_body(b"[{\"token\":\"t\"}]", "sys/leaks/report").expect("alerts");
        assert!(m[coffer_core::leaks::GITHUB_ALERTS].is_array());
        assert!(parse_body(b"[1]", "sys/leaks/check").is_err());
    }

    #[test]
    fn an_ocsp_get_with_encoded_slashes_keeps_its_request_in_one_segment() {
        let get = |raw| ocsp_get_path(&Method::GET, raw);
        assert_eq!(
            get("/v1/pki_int/ocsp/MF%2F%2Fa+b%3D").as_deref(),
            Some("pki_int/ocsp/MF__a-b=")
        );
        assert_eq!(get("/v1/a%20b/ocsp/x%2Fy").as_deref(), Some("a b/ocsp/x_y"));
        // Nothing to keep together: the path is decoded as any other.
        assert_eq!(get("/v1/pki_int/ocsp/MFa+b%3D"), None);
        assert_eq!(get("/v1/pki_int/ocsp/MF/a"), None);
        assert_eq!(get("/v1/secret/data/x%2Fy"), None);
        assert_eq!(get("/v1/pki_int/xocsp/x%2Fy"), None);
        assert_eq!(ocsp_get_path(&Method::POST, "/v1/pki_int/ocsp/x%2Fy"), None);
    }

    #[test]
    fn methods_map_to_operations() {
        assert_eq!(operation(&Method::GET, true), Some(Operation::List));
        assert_eq!(
            operation(&Method::from_bytes(b"LIST").expect("m"), false),
            Some(Operation::List)
        );
        assert_eq!(operation(&Method::PUT, false), Some(Operation::Update));
        assert_eq!(operation(&Method::HEAD, false), None);
    }

    #[tokio::test]
    async fn the_server_alone_chooses_request_ids() {
        use tower::ServiceExt as _;
        let mut registry = coffer_core::Registry::new();
        coffer_engines::register_builtins(&mut registry);
        let core = Core::new(
            Arc::new(coffer_storage::MemoryBackend::new()),
            registry,
            coffer_core::CoreConfig::default(),
        );
        core.dev_setup(Some(coffer_core::SecretString::new("root".to_owned())))
            .await
            .expect("dev setup");
        let app = router(core, BodyLimits::new(1024, std::time::Duration::from_secs(5), 4096));
        let req = axum::http::Request::get("/v1/auth/token/lookup-self")
            .header("x-vault-token", "root")
            .header("x-request-id", "chosen-by-the-client")
            .body(axum::body::Body::empty())
            .expect("request");
        let resp = app.oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let env: Envelope = serde_json::from_slice(&body).expect("envelope");
        assert_ne!(env.request_id, "chosen-by-the-client");
        assert_eq!(env.request_id.len(), 36, "a UUID: {}", env.request_id);
    }
}
