//! HTTP ⇄ logical mapping, in one place: methods to operations, headers to the token, bodies and
//! query strings to request data, and every logical error to a status code and Vault's
//! `{"errors": [...]}` body. A 5xx tells the client only "internal error"; the cause is logged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use coffer_core::{Core, Error, Operation, Request};
use serde_json::{Map, Value, json};

/// What the connection knows about its peer, attached to every request on it.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub remote_addr: SocketAddr,
    /// DER certificates the client presented, leaf first.
    pub client_cert_chain: Vec<Vec<u8>>,
}

pub(crate) fn router(core: Arc<Core>, max_request_size: usize) -> Router {
    Router::new()
        .route("/v1/{*path}", any(handle))
        .fallback(|| async {
            error_body(
                StatusCode::NOT_FOUND,
                vec!["no such endpoint: Coffer's API lives under /v1/".into()],
            )
        })
        .layer(DefaultBodyLimit::max(max_request_size))
        .with_state(core)
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
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(e: Error, request_id: &str) -> Response {
    let status = status_of(&e);
    let errors = match &e {
        Error::Internal(cause) => {
            tracing::error!(request_id, %cause, "internal error");
            vec!["internal error".to_owned()]
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
    State(core): State<Arc<Core>>,
    conn: Option<Extension<ConnInfo>>,
    method: Method,
    Path(path): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            let status = rej.status();
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body too large".to_owned()
            } else {
                format!("cannot read request body: {rej}")
            };
            return error_body(status, vec![msg]);
        }
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
        Err(e) => return error_response(e, ""),
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
        return error_response(Error::invalid("namespaces are not supported by Coffer"), "");
    }
    let mut req = Request::new(op, path.clone()).with_data(data);
    if let Some(t) = token_from(&headers) {
        req = req.with_token(t);
    }
    if let Some(v) = headers.get("x-vault-wrap-ttl") {
        // Answering unwrapped when the client asked for wrapping would hand out the secret
        // itself: a TTL that does not parse is refused, never ignored. Unbounded here: the
        // pipeline refuses one above the max lease TTL with a message naming that limit.
        match v.to_str().ok().and_then(coffer_core::util::parse_duration_unbounded) {
            Some(d) if d.is_zero() => {}
            Some(d) => req.wrap_ttl = Some(d),
            None => {
                return error_response(
                    Error::invalid(
                        "invalid X-Vault-Wrap-TTL: expected seconds or a duration like \"5m\"",
                    ),
                    &req.id,
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
        Err(e) => error_response(e, &request_id),
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
