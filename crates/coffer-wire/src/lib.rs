//! Wire types that the server (coffer-core) and its clients (coffer-api, the CLI, coffer-chaos)
//! share, so the two sides cannot drift apart. Serde types and their parsing only: no I/O and
//! no dependency but serde, so the server's build does not wait for an HTTP client.

#![forbid(unsafe_code)]

pub mod chaos;
