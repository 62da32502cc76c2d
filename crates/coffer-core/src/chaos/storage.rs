//! The storage backend as the core sees it: the real one, which a `storage_unavailable` fault
//! can make fail every operation, as an outage of the database would.
//!
//! Guarantees: while the fault lasts nothing reaches the real backend (no read, no partial
//! write), so what was stored before is exactly what is there after; a request to
//! `sys/chaos/*` still reaches it, so a fault can be listed and removed during the outage.
//! Not done: slow or partial failures (every operation fails at once, with an error).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use coffer_storage::{Backend, Error, Op, Result};

pub(crate) struct FaultyBackend {
    inner: Arc<dyn Backend>,
    down: Arc<AtomicBool>,
}

impl FaultyBackend {
    pub(crate) fn new(inner: Arc<dyn Backend>, down: Arc<AtomicBool>) -> Self {
        Self { inner, down }
    }

    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::Acquire) && !super::exempt() {
            return Err(Error::Backend(
                "storage unavailable (chaos fault storage_unavailable)".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for FaultyBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.check()?;
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.check()?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.check()?;
        self.inner.list(prefix).await
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.check()?;
        self.inner.scan(prefix, after, limit).await
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        self.check()?;
        self.inner.batch(ops).await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
