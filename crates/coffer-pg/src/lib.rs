//! PostgreSQL connection handling, the one place for it: the storage backend and the database
//! secrets engine both reach PostgreSQL through this crate.
//!
//! What it owns:
//! - Connection strings ([`ConnString`]): both libpq spellings, `postgres://` URLs (read as
//!   libpq reads them: the user part ends at the first `@` before any `/`) and `key=value` pairs
//!   (quoted values with backslash escapes), one percent-decoding, one list of parameters that
//!   pass to tokio-postgres, are ignored, or are refused by name.
//! - Secrets in them: every password written into a string (user part of a URL, `password=`
//!   query parameter, `password=` key) is found by the same reader that parses it, so the
//!   password that logs in is the one that is scrubbed ([`Scrubber`]) from error messages and
//!   redacted ([`redact`]) for display.
//! - TLS ([`SslMode`], [`client_config`]): rustls on aws-lc-rs with libpq's `sslmode` meanings,
//!   trusting only the CA named by `sslrootcert`.
//! - Pools ([`ConnString::into_pool`]) and what a failure means ([`Failure`]).
//!
//! Guarantees: no [`Error`] and no [`Debug`] output of a type here contains a password or the
//! connection string; parameters Coffer does not honour are refused by name, never dropped
//! silently (except the few with no effect, listed in `conn.rs`); `sslmode=allow` means
//! `prefer` (TLS is tried first; see docs/database.md); `verify-ca`/`verify-full` never quietly
//! become a weaker mode. Not done: `PG*` environment variables, `~/.pgpass`, `service`
//! files, client certificates, CRLs; what callers log about a connection beyond
//! [`ConnString::target`] is theirs to keep clean.

mod conn;
mod failure;
mod scrub;
mod syntax;
mod tls;

pub use conn::{ConnString, Defaults, PoolOptions};
pub use failure::{Failure, describe, describe_pool};
pub use scrub::Scrubber;
pub use syntax::{Form, kv_quote, redact, url_encode, written_passwords};
pub use tls::{SslMode, client_config};

use std::path::PathBuf;

/// Why a connection string, TLS set-up or pool could not be made. No message holds a password
/// or the connection string; a parameter is named only when its name is a plain identifier.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection string is not usable; the message names the problem.
    #[error("connection_url: {0}")]
    Invalid(String),
    /// `verify-ca` or `verify-full` without a root certificate.
    #[error("sslmode=verify-ca and verify-full need sslrootcert")]
    RootCertRequired,
    /// The `sslrootcert` file cannot be read.
    #[error("cannot read sslrootcert {}: {source}", path.display())]
    ReadRootCert { path: PathBuf, source: std::io::Error },
    /// The `sslrootcert` file is not a usable list of PEM CA certificates.
    #[error("sslrootcert {}: {why}", path.display())]
    BadRootCert { path: PathBuf, why: String },
    /// rustls refused the set-up (not expected with the default provider).
    #[error("TLS set-up: {0}")]
    Setup(#[from] rustls::Error),
    /// deadpool refused the pool settings (not expected: the runtime is always given).
    #[error("connection pool: {0}")]
    Pool(String),
}

impl Error {
    /// Whether the fault is Coffer's rather than the operator's (a 500 rather than a 400).
    pub fn is_internal(&self) -> bool {
        match self {
            Error::Setup(_) | Error::Pool(_) => true,
            Error::Invalid(_)
            | Error::RootCertRequired
            | Error::ReadRootCert { .. }
            | Error::BadRootCert { .. } => false,
        }
    }
}
