//! The request-body layer: every request body is read here, whole and within the listener's
//! limits, before any handler runs (the 404 fallback included), which gets it already buffered.
//! Bodies arrive before any token is checked, so anybody can send one, and this layer bounds
//! what they cost three ways:
//!
//! - a declared `Content-Length` over `max_request_size` is answered 413 before a byte of the
//!   body is read (or `100 Continue` sent); a body without a declared length that grows past
//!   the limit while it streams gets the same 413;
//! - the whole body must arrive within `http_read_timeout` (408 otherwise);
//! - the bytes all requests on a listener hold while their bodies are read and handled stay
//!   within `max_buffered_request_bytes` (503 with `Retry-After` beyond it, counted as bytes
//!   arrive, so a body declared but not sent reserves nothing).
//!
//! Each of these answers closes the connection, whose body was not read to its end.
//! Not here: the header timeout, which hyper enforces (server.rs), and any limit on how long a
//! handler runs (there is none: a request runs to completion once its body is in).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::closing_error;

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

/// The middleware: refuses a declared oversize body, else reads the body within the limits and
/// passes the request on with the bytes in hand. They stay counted in the listener's budget
/// until the answer is ready.
pub(super) async fn buffer_body(
    State(limits): State<Arc<BodyLimits>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_size as u64) {
        linger(req.into_body());
        return too_large(limits.max_size);
    }
    let (parts, body) = req.into_parts();
    let (bytes, held) = match read_body(body, &limits).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    drop(held);
    resp
}

/// Most clients write the whole body before they read the answer: closing at once would reset
/// the connection under them and lose the 413. What they send for a moment is read and dropped
/// (no memory is held), then the connection closes.
fn linger(mut body: Body) {
    tokio::spawn(async move {
        use hyper::body::Body as _;
        let drain = async {
            while let Some(Ok(_)) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {}
        };
        let _ = tokio::time::timeout(OVERSIZE_LINGER, drain).await;
    });
}

/// How long the body of a request refused for its declared length is read and dropped.
const OVERSIZE_LINGER: Duration = Duration::from_secs(2);

fn too_large(limit: usize) -> Response {
    closing_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body too large: the limit is {limit} bytes (max_request_size)"),
    )
}

/// Reads a whole body within the listener's limits. The permit holds its bytes in the budget
/// until it is dropped.
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
