//! A read cache in front of a backend, holding what the backend holds: ciphertext, never
//! plaintext (the barrier sits above it). Every write goes through the cache, which drops the
//! key; reads that raced a write of the same key never put the old value back (an epoch, and
//! the epoch at which each key was last written, guard the fill). A write that succeeded puts
//! its new value in place of a cached one, if no other write of that key overlapped it (its
//! order against the other is unknown here): the next read of a key just written (a KV v2
//! write reads the key's metadata its last write replaced) needs no storage read.
//! Only for a backend this process alone writes to.
//!
//! A write's record (which keys it writes) lasts until the backend has answered, on a task of
//! its own, whether or not its caller still waits: this relies on the backend applying writes
//! in the order they were submitted (sqlite's and PostgreSQL's single committers do).
//!
//! Each operation hashes a key once (SipHash, keyed: clients choose storage paths, and the
//! keyed hash is what bounds the cost of a lookup against colliding ones) and finds it with
//! that hash in every table it touches.

use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hashbrown::HashTable;

use crate::{Backend, Error, Op, Result};

/// Cached values: a key, and its value (`None`: known absent).
type Table = HashTable<(String, Option<Vec<u8>>)>;

/// Two generations: when the young one is full, it becomes the old one and the old one is
/// dropped. A cheap approximation of LRU with a hard bound of `2 * capacity` entries.
struct Generations {
    young: Table,
    old: Table,
    /// One more after every write.
    epoch: u64,
    /// The epoch each key was last dropped at by a write: a read that began before it may
    /// hold the old value and must not cache it. A read that raced only writes of other keys
    /// does (with one global check, concurrent writers kept each other's reads of their own
    /// keys out of the cache: a second storage read per KV write at 16 connections).
    dropped: HashTable<(String, u64)>,
    /// Reads that began before this epoch cache nothing: `dropped` was cleared then, to keep
    /// it within the cache's size.
    floor: u64,
    /// Keys with a write in flight, by hash alone (a collision only keeps a value out of the
    /// cache): how many, and the number of the last to start.
    writing: HashTable<(u64, InFlight)>,
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
    fn may_fill(&self, h: u64, key: &str, seen: u64) -> bool {
        seen >= self.floor
            && self.dropped.find(h, |(k, _)| k == key).is_none_or(|&(_, at)| at <= seen)
    }

    /// Caches `value` at `key`; what it returns (the generation retired to make room) is to
    /// be dropped outside the lock.
    fn fill(
        &mut self,
        hasher: &Hasher,
        capacity: usize,
        h: u64,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Option<Table> {
        let mut retired = None;
        if self.young.len() >= capacity {
            let young = std::mem::take(&mut self.young);
            retired = Some(std::mem::replace(&mut self.old, young));
        }
        match self.young.find_mut(h, |(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => {
                self.young.insert_unique(h, (key.to_owned(), value), |(k, _)| hasher.hash_one(k));
            }
        }
        retired
    }

    /// Drops `key` from both generations.
    fn forget(&mut self, h: u64, key: &str) {
        if let Ok(e) = self.young.find_entry(h, |(k, _)| k == key) {
            e.remove();
        }
        if let Ok(e) = self.old.find_entry(h, |(k, _)| k == key) {
            e.remove();
        }
    }
}

type Hasher = std::hash::RandomState;

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

/// A write in flight: drops its keys from the cache when the backend has answered, and once
/// it succeeded, puts the new values of the keys that were cached back in place. It lives on
/// the task that runs the write ([`CachedBackend::run`]), not with the caller: a caller that
/// gives up (its client gone) while the write is still queued must not end the record, or a
/// read before the write lands could cache the value the write replaces, for good (a revoked
/// token's entry, say).
struct Writing {
    cache: Arc<Shared>,
    keys: Vec<Pending>,
    succeeded: bool,
}

impl Writing {
    /// `ops`: each key written and its new value (`None`: deleted).
    fn start<'k>(
        cache: &Arc<Shared>,
        ops: impl Iterator<Item = (&'k str, Option<&'k [u8]>)>,
    ) -> Result<Self> {
        let mut g = cache.lock()?;
        let keys = ops
            .map(|(key, new)| {
                let hash = cache.hasher.hash_one(key);
                g.starts += 1;
                let start = g.starts;
                let cached = g.young.find(hash, |(k, _)| k == key).is_some()
                    || g.old.find(hash, |(k, _)| k == key).is_some();
                let alone = match g.writing.find_mut(hash, |(h, _)| *h == hash) {
                    Some((_, e)) => {
                        let alone = e.count == 0;
                        e.count += 1;
                        e.last = start;
                        alone
                    }
                    None => {
                        g.writing.insert_unique(
                            hash,
                            (hash, InFlight { count: 1, last: start }),
                            |(h, _)| *h,
                        );
                        true
                    }
                };
                let value = cached.then(|| new.map(<[u8]>::to_vec));
                Pending { key: key.to_owned(), hash, start, alone, value }
            })
            .collect();
        drop(g);
        Ok(Self { cache: Arc::clone(cache), keys, succeeded: false })
    }
}

impl Drop for Writing {
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
            let h = p.hash;
            let mut solo = false;
            if let Ok(mut e) = g.writing.find_entry(h, |(x, _)| *x == h) {
                let f = &mut e.get_mut().1;
                solo = p.alone && f.last == p.start;
                f.count -= 1;
                if f.count == 0 {
                    e.remove();
                }
            }
            g.forget(h, &p.key);
            if g.dropped.len() >= self.cache.capacity {
                g.dropped.clear();
                g.floor = at;
            }
            match g.dropped.find_mut(h, |(k, _)| *k == p.key) {
                Some(slot) => slot.1 = at,
                None => {
                    let hasher = &self.cache.hasher;
                    g.dropped.insert_unique(h, (p.key.clone(), at), |(k, _)| hasher.hash_one(k));
                }
            }
            // Alone from start to end: no other write of the key can have committed after it.
            if let (true, true, Some(value)) = (self.succeeded, solo, p.value) {
                retired.extend(g.fill(&self.cache.hasher, self.cache.capacity, h, &p.key, value));
            }
        }
        drop(g);
        // Freed outside the lock, as in `get`.
        drop(retired);
    }
}

pub struct CachedBackend {
    inner: Arc<dyn Backend>,
    shared: Arc<Shared>,
}

/// The cache itself, shared with the tasks that run writes.
struct Shared {
    capacity: usize,
    state: Mutex<Generations>,
    hasher: Hasher,
}

impl Shared {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Generations>> {
        self.state.lock().map_err(|_| Error::Backend("cache lock poisoned".into()))
    }
}

impl CachedBackend {
    /// Runs `write` to its end on a task of its own, holding `record` until the backend has
    /// answered, whether or not the caller still waits.
    async fn run(
        record: Writing,
        write: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) -> Result<()> {
        tokio::spawn(async move {
            // Moved in whole (a closure would capture only the field it sets), and ended here.
            let mut record = record;
            let outcome = write.await;
            record.succeeded = outcome.is_ok();
            drop(record);
            outcome
        })
        .await
        .map_err(|e| Error::Backend(format!("storage write task failed: {e}")))?
    }

    pub fn new(inner: Arc<dyn Backend>, capacity: usize) -> Self {
        let shared = Shared {
            capacity: capacity.max(1),
            state: Mutex::new(Generations {
                young: HashTable::new(),
                old: HashTable::new(),
                epoch: 0,
                dropped: HashTable::new(),
                floor: 0,
                writing: HashTable::new(),
                starts: 0,
            }),
            hasher: Hasher::new(),
        };
        Self { inner, shared: Arc::new(shared) }
    }
}

#[async_trait]
impl Backend for CachedBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let h = self.shared.hasher.hash_one(key);
        let seen = {
            let mut g = self.shared.lock()?;
            if let Some((_, v)) = g.young.find(h, |(k, _)| k == key) {
                return Ok(v.clone());
            }
            if let Ok(e) = g.old.find_entry(h, |(k, _)| k == key) {
                let ((k, v), _) = e.remove();
                let hasher = &self.shared.hasher;
                g.young.insert_unique(h, (k, v.clone()), |(k, _)| hasher.hash_one(k));
                return Ok(v);
            }
            g.epoch
        };
        let v = self.inner.get(key).await?;
        let mut g = self.shared.lock()?;
        let mut retired = None;
        if g.may_fill(h, key, seen) {
            retired = g.fill(&self.shared.hasher, self.shared.capacity, h, key, v.clone());
        }
        drop(g);
        // Freed outside the lock: thousands of entries, and every read waits for the lock (a
        // thread of low priority, expiry's, would make them wait long if preempted here).
        drop(retired);
        Ok(v)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let w = Writing::start(&self.shared, std::iter::once((key, Some(&value[..]))))?;
        let (inner, key) = (Arc::clone(&self.inner), key.to_owned());
        Self::run(w, async move { inner.put(&key, value).await }).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let w = Writing::start(&self.shared, std::iter::once((key, None)))?;
        let (inner, key) = (Arc::clone(&self.inner), key.to_owned());
        Self::run(w, async move { inner.delete(&key).await }).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.inner.scan(prefix, after, limit).await
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        let w = Writing::start(
            &self.shared,
            ops.iter().map(|o| match o {
                Op::Put(k, v) => (k.as_str(), Some(&v[..])),
                Op::Delete(k) => (k.as_str(), None),
            }),
        )?;
        let inner = Arc::clone(&self.inner);
        Self::run(w, async move { inner.batch(ops).await }).await
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
        let g = c.shared.lock().expect("lock");
        assert!(g.young.len() + g.old.len() <= 16);
    }

    #[tokio::test]
    async fn a_read_raced_by_a_write_caches_only_if_the_write_was_to_another_key() {
        let c = CachedBackend::new(Arc::new(MemoryBackend::new()), 8);
        c.put("a/k", b"old".to_vec()).await.expect("put");
        // A read that began (epoch taken) before a write of its key, filling after it.
        let seen = c.shared.lock().expect("lock").epoch;
        c.put("a/k", b"new".to_vec()).await.expect("put");
        let h = c.shared.hasher.hash_one("a/k");
        assert!(
            !c.shared.lock().expect("lock").may_fill(h, "a/k", seen),
            "the old value must not be cached"
        );
        // The same race with a write of another key.
        let seen = c.shared.lock().expect("lock").epoch;
        c.put("a/other", b"x".to_vec()).await.expect("put");
        assert!(c.shared.lock().expect("lock").may_fill(h, "a/k", seen));
        // Many keys written since: the record of them is cleared, so older reads cache nothing.
        let seen = c.shared.lock().expect("lock").epoch;
        for i in 0..20 {
            c.put(&format!("b/{i}"), b"x".to_vec()).await.expect("put");
        }
        let g = c.shared.lock().expect("lock");
        assert!(g.dropped.len() <= 8);
        assert!(!g.may_fill(h, "a/k", seen));
        assert!(g.may_fill(h, "a/k", g.epoch));
    }

    #[tokio::test]
    async fn a_write_abandoned_midway_leaves_no_stale_value_cached() {
        let inner = Arc::new(Counting::default());
        let c = CachedBackend::new(inner.clone(), 8);
        c.batch(vec![Op::Put("t/k".into(), b"live".to_vec())]).await.expect("put");
        // From now on a put lands, and its caller may give up before it hears so.
        inner.linger.store(300, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(c.get("t/k").await.expect("get").as_deref(), Some(&b"live"[..]));
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            c.put("t/k", b"revoked".to_vec()),
        );
        assert!(abandoned.await.is_err(), "the caller gave up");
        // Until the backend answers, a read may see either value; after, only the new one.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(c.get("t/k").await.expect("get").as_deref(), Some(&b"revoked"[..]));
    }

    #[tokio::test]
    async fn a_write_abandoned_before_it_lands_lets_no_read_cache_the_old_value() {
        let inner = Arc::new(Counting::default());
        let c = CachedBackend::new(inner.clone(), 8);
        c.put("t/k", b"live".to_vec()).await.expect("put");
        // Writes now wait before they land; the caller gives up while this one is queued (a
        // client gone mid-revocation).
        inner.hold.store(300, std::sync::atomic::Ordering::SeqCst);
        let abandoned = tokio::time::timeout(std::time::Duration::from_millis(50), c.delete("t/k"));
        assert!(abandoned.await.is_err(), "the caller gave up");
        // Reads before it lands see the old value, from storage or the cache...
        assert_eq!(c.get("t/k").await.expect("get").as_deref(), Some(&b"live"[..]));
        // ...and once it landed, none of them may have left it cached.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(inner.inner.get("t/k").await.expect("stored"), None);
        assert_eq!(c.get("t/k").await.expect("get"), None, "a stale value was cached");
    }

    /// Counts reads; its writes can be held up (before they land, or a put after it landed)
    /// or refused.
    #[derive(Default)]
    struct Counting {
        inner: MemoryBackend,
        gets: std::sync::atomic::AtomicUsize,
        hold: std::sync::atomic::AtomicU64,
        linger: std::sync::atomic::AtomicU64,
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
            self.inner.put(key, value).await?;
            let ms = self.linger.load(std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(())
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
        let h = c.shared.hasher.hash_one("a/new");
        assert!(c.shared.lock().expect("lock").young.find(h, |(k, _)| k == "a/new").is_none());
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
