//! Errors on the wire, in one place: every logical error's status code, and Vault's
//! `{"errors": [...]}` body. A 5xx tells the client only "internal error"; the cause is logged.
//! The one exception is a damaged stored record: the client is told that the data its request
//! needs is damaged (naming its own request path), and the log names the storage record.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffer_api::ErrorBody;
use coffer_core::Error;

/// An error answer; never cached, as no answer of this API may be.
pub(super) fn error_body(status: StatusCode, errors: Vec<String>) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(ErrorBody { errors }),
    )
        .into_response()
}

/// An error that also ends the connection: its request body was not (fully) read, so the
/// connection cannot carry another request.
pub(super) fn closing_error(status: StatusCode, msg: String) -> Response {
    let mut resp = error_body(status, vec![msg]);
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// The one mapping from logical errors to HTTP. Exhaustive on purpose: a new error variant must
/// be given a status here.
pub(super) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Sealed | Error::Standby => StatusCode::SERVICE_UNAVAILABLE,
        Error::NotInitialized => StatusCode::BAD_REQUEST,
        Error::PermissionDenied | Error::Forbidden(_) | Error::Refused(_) => StatusCode::FORBIDDEN,
        Error::NotFound => StatusCode::NOT_FOUND,
        Error::UnsupportedPath(_) => StatusCode::NOT_FOUND,
        Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        Error::UnsupportedOperation => StatusCode::METHOD_NOT_ALLOWED,
        Error::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Error::Internal(_) | Error::Damaged(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // The pipeline unwraps it; a caller outside the pipeline answers as the inner error.
        Error::LoginFailed { error, .. } => status_of(error),
        Error::Injected { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// `path`: the request's path, which a damaged record is reported under (the storage path it
/// has, with mount UUIDs and hashed ids, goes to the log only).
pub(super) fn error_response(e: Error, request_id: &str, path: &str) -> Response {
    if let Error::LoginFailed { error, .. } = e {
        return error_response(*error, request_id, path);
    }
    let status = status_of(&e);
    let standby = matches!(e, Error::Standby);
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
        // Vault's system backend has its own text for a path it does not serve.
        Error::UnsupportedPath(p) if p.starts_with("sys/") => {
            vec![coffer_core::logical::multierror("unsupported path")]
        }
        // Vault's core gathers this one in a Go multierror. (It does so for a denial by
        // policy too, but not for a missing or bad token; Coffer's one `PermissionDenied`
        // cannot tell the two apart yet, and answers both with the bare text.)
        Error::UnsupportedOperation => vec![coffer_core::logical::multierror(&e.to_string())],
        other => vec![other.to_string()],
    };
    let mut resp = error_body(status, errors);
    if standby {
        // A standby that tried to serve a read itself hands it to the active node instead.
        resp.extensions_mut().insert(crate::cluster::NeedsActive);
    }
    resp
}
