//! Physical storage: the bottom layer of Coffer.
//!
//! A [`Backend`] maps `/`-separated string keys to opaque byte values. It guarantees durability of
//! acknowledged writes (for the persistent backends) and atomicity of [`Backend::batch`]. It does
//! *not* encrypt anything: every value that reaches it has already been sealed by the barrier above,
//! and nothing but the barrier may call it.

mod cache;
mod error;
pub mod ha;
mod key;
mod list;
mod memory;
mod postgres;
mod sqlite;

pub mod conformance;

use async_trait::async_trait;

pub use cache::CachedBackend;
pub use error::{Error, Result};
pub use key::validate_key;
pub use memory::MemoryBackend;
pub use postgres::feed::{Change, ChangeFeed};
pub use postgres::ha::{
    DEFAULT_HA_TABLE, DEFAULT_LOCK_TTL, DEFAULT_MAX_STALENESS, HaOptions, LOCK_TTL_RANGE,
    MAX_STALENESS_RANGE, PgHaLock,
};
pub use postgres::{
    DEFAULT_MAX_PARALLEL, DEFAULT_TABLE, MAX_PARALLEL_RANGE, PostgresBackend, PostgresOptions,
};
pub use sqlite::{SqliteBackend, SqliteOptions};

/// One change inside an atomic [`Backend::batch`].
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
        }
    }
}

// Values are ciphertext, but a Debug that prints them invites copying the habit elsewhere.
impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put(k, v) => write!(f, "Put({k:?}, <{} bytes>)", v.len()),
            Op::Delete(k) => write!(f, "Delete({k:?})"),
        }
    }
}

/// The storage contract every backend fulfils; `conformance::exercise` checks it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The value at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes `value` at `key`; once this returns `Ok`, the write survives a crash.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()>;
    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// The immediate children of `prefix`, sorted; a child with children of its own ends in `/`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Up to `limit` keys below the folder `prefix` (at any depth), relative to it, in key
    /// order, starting after the relative key `after` (from the start when `None`). Paging
    /// with the last key of each page walks a folder of any size holding one page at a time.
    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    /// Applies every op or none of them.
    async fn batch(&self, ops: Vec<Op>) -> Result<()>;
    /// A short name for logs and `sys/` reports.
    fn kind(&self) -> &'static str;
}

/// Folds sorted full keys under `prefix` into immediate children, as Vault's list does.
pub(crate) fn immediate_children<'a>(
    prefix: &str,
    keys: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for key in keys {
        let Some(rest) = key.strip_prefix(prefix) else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let child = match rest.find('/') {
            Some(i) => &rest[..=i],
            None => rest,
        };
        if out.last().map(String::as_str) != Some(child) {
            out.push(child.to_owned());
        }
    }
    // A file "a" and a folder "a/" can both exist; sorted input may interleave them.
    out.sort();
    out.dedup();
    out
}
