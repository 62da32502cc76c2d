//! Wire types that the server (coffer-core) and its clients (coffer-api, the CLI, coffer-chaos)
//! share, so the two sides cannot drift apart: serde types and their parsing, the secret string
//! type, and the credential formats (minted by the server, recognised by `coffer scan`). No I/O,
//! and no dependency but serde, zeroize, subtle and aws-lc-rs (the CSPRNG), so the server's
//! build does not wait for an HTTP client.

#![forbid(unsafe_code)]

pub mod chaos;
pub mod secret;
pub mod token_format;
