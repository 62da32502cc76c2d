//! A read cache in front of a backend, holding what the backend holds: ciphertext, never
//! plaintext (the barrier sits above it). Every write goes through the cache, which drops the
//! key; reads that raced a write of the same key never put the old value back (an epoch, and
//! the epoch at which each key was last written, guard the fill).
//! Only for a backend this process alone writes to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::{Backend, Error, Op, Result};

/// Two generations: when the young one is full, it becomes the old one and the old one is
/// dropped. A cheap approximation of LRU with a hard bound of `2 * capacity` entries.
struct Generations {
    young: HashMap<String, Option<Vec<u8>>>,
    old: HashMap<String, Option<Vec<u8>>>,
    /// One more after every write.
    epoch: u64,
    /// The epoch each key was last dropped at by a write: a read that began before it may
    /// hold the old value and must not cache it. A read that raced only writes of other keys
    /// does (with one global check, concurrent writers kept each other's reads of their own
    /// keys out of the cache: a second storage read per KV write at 16 connections).
    dropped: HashMap<String, u64>,
    /// Reads that began before this epoch cache nothing: `dropped` was cleared then, to keep
    /// it within the cache's size.
    floor: u64,
}

impl Generations {
    /// Whether a value read from the backend, by a read that began at epoch `seen`, may be
    /// cached: no write of `key` was over since.
    fn may_fill(&self, key: &str, seen: u64) -> bool {
        seen >= self.floor && self.dropped.get(key).is_none_or(|&at| at <= seen)
    }
}

/// Drops `keys` from the cache when the write is over: when it returns, and also when the
/// caller's future is dropped mid-write (the backend may still complete the write, so the old
/// value must not stay cached).
struct InvalidateOnDrop<'a> {
    cache: &'a CachedBackend,
    keys: Vec<String>,
}

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        if self.cache.invalidate(self.keys.iter().map(String::as_str)).is_err() {
            // Only a poisoned lock fails here; every later read fails on it too.
            tracing::error!("storage read cache lock poisoned");
        }
    }
}

pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    capacity: usize,
    state: Mutex<Generations>,
}

impl CachedBackend {
    pub fn new(inner: Arc<dyn Backend>, capacity: usize) -> Self {
        Self {
            inner,
            capacity: capacity.max(1),
            state: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
                epoch: 0,
                dropped: HashMap::new(),
                floor: 0,
            }),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Generations>> {
        self.state.lock().map_err(|_| Error::Backend("cache lock poisoned".into()))
    }

    fn invalidate<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Result<()> {
        let mut g = self.lock()?;
        g.epoch += 1;
        let at = g.epoch;
        for k in keys {
            g.young.remove(k);
            g.old.remove(k);
            if g.dropped.len() >= self.capacity {
                g.dropped.clear();
                g.floor = at;
            }
            match g.dropped.get_mut(k) {
                Some(e) => *e = at,
                None => {
                    g.dropped.insert(k.to_owned(), at);
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for CachedBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let seen = {
            let mut g = self.lock()?;
            if let Some(v) = g.young.get(key) {
                return Ok(v.clone());
            }
            if let Some(v) = g.old.remove(key) {
                g.young.insert(key.to_owned(), v.clone());
                return Ok(v);
            }
            g.epoch
        };
        let v = self.inner.get(key).await?;
        let mut g = self.lock()?;
        let mut retired = None;
        if g.may_fill(key, seen) {
            if g.young.len() >= self.capacity {
                let young = std::mem::take(&mut g.young);
                retired = Some(std::mem::replace(&mut g.old, young));
            }
            g.young.insert(key.to_owned(), v.clone());
        }
        drop(g);
        // Freed outside the lock: thousands of entries, and every read waits for the lock (a
        // thread of low priority, expiry's, would make them wait long if preempted here).
        drop(retired);
        Ok(v)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let _g = InvalidateOnDrop { cache: self, keys: vec![key.to_owned()] };
        self.inner.put(key, value).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let _g = InvalidateOnDrop { cache: self, keys: vec![key.to_owned()] };
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.inner.scan(prefix, after, limit).await
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        let _g = InvalidateOnDrop {
            cache: self,
            keys: ops.iter().map(|o| o.key().to_owned()).collect(),
        };
        self.inner.batch(ops).await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::conformance::exercise(&CachedBackend::new(Arc::new(MemoryBackend::new()), 4)).await;
    }

    #[tokio::test]
    async fn writes_are_seen_at_once_and_the_size_is_bounded() {
        let inner = Arc::new(MemoryBackend::new());
        let c = CachedBackend::new(inner.clone(), 8);
        c.put("a/k", b"1".to_vec()).await.expect("put");
        assert_eq!(c.get("a/k").await.expect("get").as_deref(), Some(&b"1"[..]));
        c.put("a/k", b"2".to_vec()).await.expect("put");
        assert_eq!(c.get("a/k").await.expect("get").as_deref(), Some(&b"2"[..]));
        c.batch(vec![Op::Delete("a/k".into())]).await.expect("batch");
        assert_eq!(c.get("a/k").await.expect("get"), None);
        for i in 0..100 {
            c.get(&format!("a/{i}")).await.expect("get");
        }
        let g = c.lock().expect("lock");
        assert!(g.young.len() + g.old.len() <= 16);
    }

    /// A backend whose writes take a while, so a test can drop the caller mid-write.
    struct Slow(MemoryBackend);

    #[async_trait]
    impl Backend for Slow {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.0.get(key).await
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
            self.0.put(key, value).await?;
            // The write has landed; the caller may give up before it hears so.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>> {
            self.0.list(prefix).await
        }
        async fn scan(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<String>> {
            self.0.scan(prefix, after, limit).await
        }
        async fn batch(&self, ops: Vec<Op>) -> Result<()> {
            self.0.batch(ops).await
        }
        fn kind(&self) -> &'static str {
            "slow"
        }
    }

    #[tokio::test]
    async fn a_read_raced_by_a_write_caches_only_if_the_write_was_to_another_key() {
        let c = CachedBackend::new(Arc::new(MemoryBackend::new()), 8);
        c.put("a/k", b"old".to_vec()).await.expect("put");
        // A read that began (epoch taken) before a write of its key, filling after it.
        let seen = c.lock().expect("lock").epoch;
        c.put("a/k", b"new".to_vec()).await.expect("put");
        assert!(!c.lock().expect("lock").may_fill("a/k", seen), "the old value must not be cached");
        // The same race with a write of another key.
        let seen = c.lock().expect("lock").epoch;
        c.put("a/other", b"x".to_vec()).await.expect("put");
        assert!(c.lock().expect("lock").may_fill("a/k", seen));
        // Many keys written since: the record of them is cleared, so older reads cache nothing.
        let seen = c.lock().expect("lock").epoch;
        for i in 0..20 {
            c.put(&format!("b/{i}"), b"x".to_vec()).await.expect("put");
        }
        let g = c.lock().expect("lock");
        assert!(g.dropped.len() <= 8);
        assert!(!g.may_fill("a/k", seen));
        assert!(g.may_fill("a/k", g.epoch));
    }

    #[tokio::test]
    async fn a_write_abandoned_midway_leaves_no_stale_value_cached() {
        let c = CachedBackend::new(Arc::new(Slow(MemoryBackend::new())), 8);
        c.batch(vec![Op::Put("t/k".into(), b"live".to_vec())]).await.expect("put");
        assert_eq!(c.get("t/k").await.expect("get").as_deref(), Some(&b"live"[..]));
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            c.put("t/k", b"revoked".to_vec()),
        );
        assert!(abandoned.await.is_err(), "the caller gave up");
        assert_eq!(c.get("t/k").await.expect("get").as_deref(), Some(&b"revoked"[..]));
    }
}
