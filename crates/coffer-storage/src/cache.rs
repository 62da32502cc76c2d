//! A read cache in front of a backend, holding what the backend holds: ciphertext, never
//! plaintext (the barrier sits above it). Every write goes through the cache, which drops the
//! key; reads that raced a write of the same key never put the old value back (an epoch, and
//! the epoch at which each key was last written, guard the fill). A write that succeeded puts
//! its new value in place of a cached one, if no other write of that key overlapped it (its
//! order against the other is unknown here): the next read of a key just written (a KV v2
//! write reads the key's metadata its last write replaced) needs no storage read.
//! Only for a backend this process alone writes to.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
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
    /// Keys with a write in flight, by a fast hash (a collision only keeps a value out of the
    /// cache, and the map holds only the writes in flight, so a client choosing colliding paths
    /// gains nothing): how many, and the number of the last to start.
    writing: HashMap<u64, InFlight, Identity>,
    /// Writes started, to number them.
    starts: u64,
}

struct InFlight {
    count: u32,
    last: u64,
}

impl Generations {
    /// Whether a value read from the backend, by a read that began at epoch `seen`, may be
    /// cached: no write of `key` was over since.
    fn may_fill(&self, key: &str, seen: u64) -> bool {
        seen >= self.floor && self.dropped.get(key).is_none_or(|&at| at <= seen)
    }

    /// Caches `value` at `key`; what it returns (the generation retired to make room) is to
    /// be dropped outside the lock.
    fn fill(&mut self, capacity: usize, key: &str, value: Option<Vec<u8>>) -> Option<Map> {
        let mut retired = None;
        if self.young.len() >= capacity {
            let young = std::mem::take(&mut self.young);
            retired = Some(std::mem::replace(&mut self.old, young));
        }
        self.young.insert(key.to_owned(), value);
        retired
    }
}

type Map = HashMap<String, Option<Vec<u8>>>;

/// Keys that are hashes already are their own hash.
#[derive(Default, Clone, Copy)]
struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; folded in anyway, should another type ever be.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl std::hash::BuildHasher for Identity {
    type Hasher = Identity;
    fn build_hasher(&self) -> Identity {
        Identity(0)
    }
}

/// One key of a write in flight.
struct Pending {
    key: String,
    hash: u64,
    /// The write's number for this key.
    start: u64,
    /// No other write of the key was in flight when this one started.
    alone: bool,
    /// The value the key will have, kept only if the key was cached when the write started.
    value: Option<Option<Vec<u8>>>,
}

/// A write in flight: drops its keys from the cache when it is over, when it returns and also
/// when the caller's future is dropped mid-write (the backend may still complete the write, so
/// the old value must not stay cached); once it succeeded, puts the new values of the keys
/// that were cached back in place.
struct Writing<'a> {
    cache: &'a CachedBackend,
    keys: Vec<Pending>,
    succeeded: bool,
}

impl<'a> Writing<'a> {
    /// `ops`: each key written and its new value (`None`: deleted).
    fn start<'k>(
        cache: &'a CachedBackend,
        ops: impl Iterator<Item = (&'k str, Option<&'k [u8]>)>,
    ) -> Result<Self> {
        let mut g = cache.lock()?;
        let keys = ops
            .map(|(key, new)| {
                g.starts += 1;
                let start = g.starts;
                let cached = g.young.contains_key(key) || g.old.contains_key(key);
                let hash = cache.hasher.hash_one(key);
                let e = g.writing.entry(hash).or_insert(InFlight { count: 0, last: 0 });
                let alone = e.count == 0;
                e.count += 1;
                e.last = start;
                let value = cached.then(|| new.map(<[u8]>::to_vec));
                Pending { key: key.to_owned(), hash, start, alone, value }
            })
            .collect();
        Ok(Self { cache, keys, succeeded: false })
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let Ok(mut g) = self.cache.lock() else {
            // Only a poisoned lock fails here; every later read fails on it too.
            tracing::error!("storage read cache lock poisoned");
            return;
        };
        g.epoch += 1;
        let at = g.epoch;
        let mut retired = Vec::new();
        for p in self.keys.drain(..) {
            let mut solo = false;
            if let Some(e) = g.writing.get_mut(&p.hash) {
                solo = p.alone && e.last == p.start;
                e.count -= 1;
                if e.count == 0 {
                    g.writing.remove(&p.hash);
                }
            }
            g.young.remove(&p.key);
            g.old.remove(&p.key);
            if g.dropped.len() >= self.cache.capacity {
                g.dropped.clear();
                g.floor = at;
            }
            match g.dropped.get_mut(&p.key) {
                Some(e) => *e = at,
                None => {
                    g.dropped.insert(p.key.clone(), at);
                }
            }
            // Alone from start to end: no other write of the key can have committed after it.
            if let (true, true, Some(value)) = (self.succeeded, solo, p.value) {
                retired.extend(g.fill(self.cache.capacity, &p.key, value));
            }
        }
        drop(g);
        // Freed outside the lock, as in `get`.
        drop(retired);
    }
}

pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    capacity: usize,
    state: Mutex<Generations>,
    hasher: foldhash::fast::RandomState,
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
                writing: HashMap::default(),
                starts: 0,
            }),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Generations>> {
        self.state.lock().map_err(|_| Error::Backend("cache lock poisoned".into()))
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
            retired = g.fill(self.capacity, key, v.clone());
        }
        drop(g);
        // Freed outside the lock: thousands of entries, and every read waits for the lock (a
        // thread of low priority, expiry's, would make them wait long if preempted here).
        drop(retired);
        Ok(v)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let mut w = Writing::start(self, std::iter::once((key, Some(&value[..]))))?;
        self.inner.put(key, value).await?;
        w.succeeded = true;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut w = Writing::start(self, std::iter::once((key, None)))?;
        self.inner.delete(key).await?;
        w.succeeded = true;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.inner.scan(prefix, after, limit).await
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        let mut w = Writing::start(
            self,
            ops.iter().map(|o| match o {
                Op::Put(k, v) => (k.as_str(), Some(&v[..])),
                Op::Delete(k) => (k.as_str(), None),
            }),
        )?;
        self.inner.batch(ops).await?;
        w.succeeded = true;
        Ok(())
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

    /// Counts reads; its writes can be held up or refused.
    #[derive(Default)]
    struct Counting {
        inner: MemoryBackend,
        gets: std::sync::atomic::AtomicUsize,
        hold: std::sync::atomic::AtomicU64,
        refuse: std::sync::atomic::AtomicBool,
    }

    impl Counting {
        fn gets(&self) -> usize {
            self.gets.load(std::sync::atomic::Ordering::SeqCst)
        }
        async fn before_write(&self) -> Result<()> {
            let ms = self.hold.load(std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            match self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
                true => Err(Error::Backend("refused".into())),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl Backend for Counting {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
            self.before_write().await?;
            self.inner.put(key, value).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.before_write().await?;
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>> {
            self.inner.list(prefix).await
        }
        async fn scan(
            &self,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Vec<String>> {
            self.inner.scan(prefix, after, limit).await
        }
        async fn batch(&self, ops: Vec<Op>) -> Result<()> {
            self.before_write().await?;
            self.inner.batch(ops).await
        }
        fn kind(&self) -> &'static str {
            "counting"
        }
    }

    #[tokio::test]
    async fn a_write_of_a_cached_key_leaves_its_new_value_cached_and_others_uncached() {
        let inner = Arc::new(Counting::default());
        let c = CachedBackend::new(inner.clone(), 8);
        c.put("a/k", b"1".to_vec()).await.expect("put");
        assert_eq!(c.get("a/k").await.expect("get").as_deref(), Some(&b"1"[..]));
        assert_eq!(inner.gets(), 1);
        c.batch(vec![Op::Put("a/k".into(), b"2".to_vec()), Op::Put("a/new".into(), vec![7])])
            .await
            .expect("batch");
        assert_eq!(c.get("a/k").await.expect("get").as_deref(), Some(&b"2"[..]));
        assert_eq!(inner.gets(), 1, "the written value was served from the cache");
        // A key that was not cached is not added by a write (index entries are never read).
        assert!(!c.lock().expect("lock").young.contains_key("a/new"));
        c.delete("a/k").await.expect("delete");
        assert_eq!(c.get("a/k").await.expect("get"), None);
        assert_eq!(inner.gets(), 1, "a delete leaves the key cached as absent");
        // A refused write leaves the key to be read again.
        inner.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(c.put("a/k", b"3".to_vec()).await.is_err());
        inner.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(c.get("a/k").await.expect("get"), None);
        assert_eq!(inner.gets(), 2, "after a failed write the key is read from storage");
    }

    #[tokio::test]
    async fn overlapping_writes_of_one_key_leave_it_uncached() {
        let inner = Arc::new(Counting::default());
        let c = Arc::new(CachedBackend::new(inner.clone(), 8));
        c.put("a/k", b"0".to_vec()).await.expect("put");
        c.get("a/k").await.expect("get");
        let before = inner.gets();
        // Which of two overlapping writes storage applied last is unknown here.
        inner.hold.store(50, std::sync::atomic::Ordering::SeqCst);
        let (x, y) = tokio::join!(c.put("a/k", b"1".to_vec()), async {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            c.put("a/k", b"2".to_vec()).await
        });
        x.expect("put 1");
        y.expect("put 2");
        let stored = inner.inner.get("a/k").await.expect("stored");
        assert_eq!(c.get("a/k").await.expect("get"), stored);
        assert_eq!(inner.gets(), before + 1, "the key was read from storage, not guessed");
    }
}
