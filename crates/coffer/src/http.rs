//! HTTP ⇄ logical mapping, in one place: methods to operations, headers to the token, bodies and
//! query strings to request data, and every logical error to a status code and Vault's
//! `{"errors": [...]}` body. A 5xx tells the client only "internal error"; the cause is logged.
//! The one exception is a damaged stored record: the client is told that the data its request
//! needs is damaged (naming its own request path), and the log names the storage record.
//!
//! Request bodies, which anybody can send before any token is checked, are bounded three ways:
//! a declared `Content-Length` over `max_request_size` is answered 413 before a byte of the body
//! is read; the whole body must arrive within `http_read_timeout` (408 otherwise); and the bytes
//! all requests on a listener hold while their bodies are read stay within
//! `max_buffered_request_bytes` (503 beyond it, counted as bytes arrive, so a body declared but
//! not sent reserves nothing). Not here: the header timeout, which hyper enforces (server.rs).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use coffer_core::{Core, Error, Operation, Request};
use serde_json::{Map, Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the connection knows about its peer, attached to every request on it.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub remote_addr: SocketAddr,
    /// DER certificates the client presented, leaf first.
    pub client_cert_chain: Vec<Vec<u8>>,
}

/// How request bodies are read on one listener.
pub(crate) struct BodyLimits {
    max_size: usize,
    read_timeout: Duration,
    /// One permit per body byte held by requests still being read or handled.
    budget: Arc<Semaphore>,
}

impl BodyLimits {
    pub(crate) fn new(max_size: usize, read_timeout: Duration, max_buffered: usize) -> Self {
        // The semaphore cannot count beyond MAX_PERMITS; no real budget comes near it.
        let budget = max_buffered.min(Semaphore::MAX_PERMITS);
        Self { max_size, read_timeout, budget: Arc::new(Semaphore::new(budget)) }
    }
}

#[derive(Clone)]
struct App {
    core: Arc<Core>,
    body: Arc<BodyLimits>,
}

pub(crate) fn router(core: Arc<Core>, body: BodyLimits) -> Router {
    let body = Arc::new(body);
    Router::new()
        .route("/v1/{*path}", any(handle))
        .fallback(|| async {
            error_body(
                StatusCode::NOT_FOUND,
                vec!["no such endpoint: Coffer's API lives under /v1/".into()],
            )
        })
        .layer(
            tower::ServiceBuilder::new().layer(axum::middleware::from_fn_with_state(
                body.clone(),
                refuse_declared_oversize,
            )),
        )
        .with_state(App { core, body })
}

/// An error that also ends the connection: its request body was not (fully) read, so the
/// connection cannot carry another request.
fn closing_error(status: StatusCode, msg: String) -> Response {
    let mut resp = error_body(status, vec![msg]);
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn too_large(limit: usize) -> Response {
    closing_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body too large: the limit is {limit} bytes (max_request_size)"),
    )
}

/// 413 on the declared length alone, before the body is read (or `100 Continue` sent).
async fn refuse_declared_oversize(
    State(limits): State<Arc<BodyLimits>>,
    req: HttpRequest,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limits.max_size as u64 => {
            // Most clients write the whole body before they read the answer: closing at once
            // would reset the connection under them and lose the 413. What they send for a
            // moment is read and dropped (no memory is held), then the connection closes.
            let mut body = req.into_body();
            tokio::spawn(async move {
                use hyper::body::Body as _;
                let drain = async {
                    while let Some(Ok(_)) =
                        std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                    {
                    }
                };
                let _ = tokio::time::timeout(OVERSIZE_LINGER, drain).await;
            });
            too_large(limits.max_size)
        }
        _ => next.run(req).await,
    }
}

/// How long the body of a request refused for its declared length is read and dropped.
const OVERSIZE_LINGER: Duration = Duration::from_secs(2);

/// Reads a whole body within the listener's limits. The permit holds its bytes in the budget
/// until the request is answered.
async fn read_body(
    mut body: Body,
    limits: &BodyLimits,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Response> {
    use hyper::body::Body as _;
    let read = async {
        let mut buf = Vec::new();
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| {
                closing_error(StatusCode::BAD_REQUEST, format!("cannot read request body: {e}"))
            })?;
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            if buf.len().saturating_add(data.len()) > limits.max_size {
                return Err(too_large(limits.max_size));
            }
            let permit = u32::try_from(data.len())
                .ok()
                .and_then(|n| limits.budget.clone().try_acquire_many_owned(n).ok())
                .ok_or_else(|| {
                    let mut r = closing_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "server busy: too many request body bytes in flight on this listener (max_buffered_request_bytes); retry later".to_owned(),
                    );
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    r
                })?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            buf.extend_from_slice(&data);
        }
        Ok((buf, held))
    };
    match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(closing_error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {}s (http_read_timeout)",
                limits.read_timeout.as_secs_f64()
            ),
        )),
    }
}

fn error_body(status: StatusCode, errors: Vec<String>) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(json!({ "errors": errors })),
    )
        .into_response()
}

/// The one mapping from logical errors to HTTP. Exhaustive on purpose: a new error variant must
/// be given a status here.
pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Sealed => StatusCode::SERVICE_UNAVAILABLE,
        Error::NotInitialized => StatusCode::BAD_REQUEST,
        Error::PermissionDenied => StatusCode::FORBIDDEN,
        Error::NotFound => StatusCode::NOT_FOUND,
        Error::UnsupportedPath(_) => StatusCode::NOT_FOUND,
        Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        Error::UnsupportedOperation => StatusCode::METHOD_NOT_ALLOWED,
        Error::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Error::Internal(_) | Error::Damaged(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `path`: the request's path, which a damaged record is reported under (the storage path it
/// has, with mount UUIDs and hashed ids, goes to the log only).
fn error_response(e: Error, request_id: &str, path: &str) -> Response {
    let status = status_of(&e);
    let errors = match &e {
        Error::Internal(cause) => {
            tracing::error!(request_id, %cause, "internal error");
            vec!["internal error".to_owned()]
        }
        Error::Damaged(record) => {
            tracing::error!(request_id, record, "a stored record is damaged");
            vec![format!(
                "stored data that {path:?} needs is damaged and cannot be read: it was altered or \
                 moved in storage (the server log names the record; an overwrite or delete by an \
                 authorized caller replaces it)"
            )]
        }
        // Vault answers a missing secret with an empty error list.
        Error::NotFound => Vec::new(),
        other => vec![other.to_string()],
    };
    error_body(status, errors)
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

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(Error::invalid(
            "failed to parse JSON input: the request body must be a JSON object",
        )),
        Err(e) => Err(Error::invalid(format!("failed to parse JSON input: {e}"))),
    }
}

#[allow(clippy::too_many_arguments)] // reason: one extractor per part of the request is axum's idiom
async fn handle(
    State(app): State<App>,
    conn: Option<Extension<ConnInfo>>,
    method: Method,
    Path(path): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let core = app.core;
    // `_held` keeps the body's bytes counted until the answer is ready.
    let (body, _held) = match read_body(body, &app.body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let list_query = query.iter().any(|(k, v)| k == "list" && v == "true");
    // Load balancers probe health with HEAD: the status code is the answer.
    let head = method == Method::HEAD && path.trim_matches('/') == "sys/health";
    let Some(op) = (if head { Some(Operation::Read) } else { operation(&method, list_query) })
    else {
        return error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            vec![format!("method {method} is not supported")],
        );
    };
    let mut data = match parse_body(&body) {
        Ok(d) => d,
        Err(e) => return error_response(e, "", &path),
    };
    if matches!(op, Operation::Read | Operation::List | Operation::Delete) {
        for (k, v) in query.into_iter().filter(|(k, _)| k != "list") {
            data.entry(k).or_insert(Value::String(v));
        }
    }
    if let Some(ns) = headers.get("x-vault-namespace").and_then(|v| v.to_str().ok())
        && !ns.is_empty()
        && ns.trim_matches('/') != "root"
    {
        return error_response(Error::invalid("namespaces are not supported by Coffer"), "", &path);
    }
    let mut req = Request::new(op, path.clone()).with_data(data);
    if let Some(t) = token_from(&headers) {
        req = req.with_token(t);
    }
    if let Some(v) = headers.get("x-vault-wrap-ttl") {
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
                    &req.id,
                    &path,
                );
            }
        }
    }
    if let Some(Extension(c)) = conn {
        req.remote_addr = Some(c.remote_addr.ip());
        req.client_cert_chain = c.client_cert_chain;
    }
    let request_id = req.id.clone();
    // Run to completion even when the client goes away: hyper drops a handler whose connection
    // closed, and a request dropped between its storage write and the cache updates after it
    // (token, policy and read caches) would leave them stale, e.g. a revoked token still live.
    let task = tokio::spawn({
        let core = core.clone();
        async move { core.handle(req).await }
    });
    let result = match task.await {
        Ok(r) => r,
        Err(e) => Err(coffer_core::Error::Internal(format!("request task failed: {e}"))),
    };
    let mut resp = match result {
        Ok(r) => success(r, &request_id),
        Err(e) => error_response(e, &request_id, &path),
    };
    if head {
        *resp.body_mut() = axum::body::Body::empty();
    }
    tracing::debug!(%method, path = %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

fn success(r: coffer_core::Response, request_id: &str) -> Response {
    let no_store = [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))];
    if let Some((status, body)) = r.raw {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, no_store, axum::Json(body)).into_response();
    }
    if r.is_empty() {
        return (StatusCode::NO_CONTENT, no_store).into_response();
    }
    let body = json!({
        "request_id": request_id,
        "lease_id": r.lease_id,
        "renewable": r.renewable,
        "lease_duration": r.lease_duration,
        "data": r.data,
        "wrap_info": r.wrap_info,
        "warnings": if r.warnings.is_empty() { Value::Null } else { json!(r.warnings) },
        "auth": r.auth,
        "mount_type": "",
    });
    (StatusCode::OK, no_store, axum::Json(body)).into_response()
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
        assert!(parse_body(b"").expect("empty").is_empty());
        assert!(parse_body(b"{\"a\":1}").is_ok());
        let e = parse_body(b"[1]").expect_err("array");
        assert!(e.to_string().contains("JSON object"));
        let e = parse_body(b"{\"a\":").expect_err("truncated");
        assert!(e.to_string().contains("failed to parse JSON input"));
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
}
