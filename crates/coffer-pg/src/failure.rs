//! What a failed database call means, and how to say it without leaking anything.
//!
//! Guarantees: the texts made here come from tokio-postgres and the server (which never hold
//! the connection string; PostgreSQL does not echo passwords); callers that also hold
//! statement text with secrets in it scrub with their [`crate::Scrubber`]. A server error is
//! told as the server phrased it (`FATAL: password authentication failed for user "x"`),
//! without tokio-postgres's bare "db error" in front.

use deadpool_postgres::{PoolError, TimeoutType};

/// How a database call failed, for the caller's retry decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection is closed (the server restarted, the network dropped it). Retrying on a
    /// fresh connection is safe only when nothing that changes data was sent on this one: a
    /// write sent before the close may or may not have been applied.
    Closed,
    /// No connection within the pool's limits (waiting for one, connecting, or checking one).
    TimedOut,
    /// The server answered with an error (its SQLSTATE is in the error).
    Server,
    /// Anything else: connection refused, TLS, a closed pool, a protocol error.
    Other,
}

impl Failure {
    pub fn of(e: &tokio_postgres::Error) -> Self {
        if e.is_closed() {
            Failure::Closed
        } else if e.as_db_error().is_some() {
            Failure::Server
        } else {
            Failure::Other
        }
    }

    pub fn of_pool(e: &PoolError) -> Self {
        match e {
            PoolError::Backend(e) => Self::of(e),
            PoolError::Timeout(_) => Failure::TimedOut,
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                Failure::Other
            }
        }
    }
}

/// `e` for a message: the server's `SEVERITY: message` when it answered, else the error with
/// its causes (tokio-postgres keeps e.g. "Connection refused" in `source()`).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => chain(e),
    }
}

/// A pool error for a message, as [`describe`].
pub fn describe_pool(e: &PoolError) -> String {
    match e {
        PoolError::Backend(e) => describe(e),
        PoolError::Timeout(TimeoutType::Wait) => {
            "timed out waiting for a free connection in the pool".to_owned()
        }
        PoolError::Timeout(TimeoutType::Create) => {
            "timed out connecting to the database".to_owned()
        }
        PoolError::Timeout(TimeoutType::Recycle) => {
            "timed out checking a pooled connection".to_owned()
        }
        PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            chain(e)
        }
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let msg = cause.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        next = cause.source();
    }
    out
}
