//! The expiration manager: every secret with a lifetime has a lease, and every lease ends.
//!
//! A lease is stored in the barrier at `sys/expire/id/<lease id>` (lease id =
//! `<mount path><request path>/<random>`), with an entry in the expiry index (see [`index`]) and,
//! when a token asked for the secret, a link `token/<token id>/<name>` so revoking the token
//! revokes its leases. Tokens are leases too: the token store writes their index entries, and
//! their lease ids are `<token path>/<token id>` (`auth/token/create/…`), as in Vault.
//!
//! Guarantees: a lease is written before the secret's answer leaves; an expired lease is revoked
//! by the engine that issued it, within about a second of its expiry; a revocation that fails is
//! kept, with its last error, and retried with exponential backoff until it succeeds or an
//! operator forces it (`revoke-force`): it is never dropped. Unseal reads only the leases due
//! within a few minutes, so start-up does not grow with the number of live leases.
//!
//! Memory does not grow with the leases either: the in-memory expiry queue holds at most
//! [`index::MEMORY_LIMIT`] entries and larger buckets are paged through from storage; a
//! revoke-prefix pages through the ids under its prefix. Neither ever holds a whole bucket or
//! prefix.
//!
//! Expiry is paced adaptively: while no request is being served, up to
//! [`EXPIRY_CONCURRENCY`] revocations run at once; as soon as requests arrive, one unit of work
//! at a time (a revocation, or reading a few index entries of a streamed bucket), each followed
//! by a rest, and [`pace`] sets the share of the time that work gets (between 1/64 and 1/4)
//! from how much slower requests start while it runs than during the rests. A burst therefore
//! drains more slowly under load (tokens are refused at their expiry regardless). A streamed
//! bucket is read again, while its minute runs, only once something in it can be due.
//!
//! Expiry runs on a thread of its own (`coffer-expiry`, its own single-threaded runtime) at the
//! lowest CPU priority, nice 19: requests never queue behind a unit of expiry work on a
//! runtime worker, and while they keep the cores busy the kernel gives expiry only what is
//! left (at nice 19 still about 1.5% of a core against each busy thread, so it always moves
//! on; a burst drains at full speed once the cores are free). What expiry hands to others
//! runs at their priority: a secret lease's whole expiry runs on the server's runtime (it
//! keeps its precedence: its credential works until revoked), every engine call too (where an
//! engine's connections must live), storage reads on the server's blocking pool (they hold
//! the SQLite read connection's lock), writes on the commit thread. Priority inversion: a
//! thread of low priority preempted while holding a lock the requests need makes them wait
//! until it runs again. The locks expiry's own thread takes that requests also take are held
//! only for a few map operations: the storage read cache's (a lookup, a fill, an
//! invalidation; a retired cache generation is freed outside it), this manager's queue (a
//! request writing an expiry offers it; a pass takes at most [`PASS`] entries under it), the
//! token cache's (an invalidation) and the commit queue's (one send). The per-lease locks
//! are async: a renewal of a lease being revoked waits for that revocation, not a worker.
//! Not here: what revoking means for a secret (the engine's `revoke_lease`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use coffer_barrier::{BatchOp, View};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::backend::LeaseRequest;
use crate::due::{
    self as index, Due, Queue, bucket_dir, bucket_of, lease_name, parse_bucket, token_key,
};
use crate::logical::{Error, Result, SecretLease};
use crate::mount::{Route, Router};
use crate::random::ordered_base62;
use crate::record;
use crate::time::now_unix;
use crate::token::{TokenEntry, TokenStore};

/// The name of expiry's own thread (and of its runtime's blocking threads).
const EXPIRY_THREAD: &str = "coffer-expiry";
/// Revocations the background expiry runs at once while no request is being served.
const EXPIRY_CONCURRENCY: usize = 4;
/// Due entries taken from memory in one pass.
const PASS: usize = 1000;
/// Index entries read in one unit of paced work while paging through a streamed bucket.
const READ_UNIT: usize = 50;
/// Entries or ids read from storage at once when paging through a bucket or a prefix.
const PAGE: usize = 500;
/// The longest wait between two attempts at a failing revocation.
const MAX_BACKOFF_SECS: u64 = 300;
const LOCK_STRIPES: usize = 64;
/// How long an engine may take to renew or revoke; beyond it the attempt counts as failed, so
/// one hung database cannot hold up every other expiry.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);
/// The stored low-water mark: no index bucket below it holds an entry.
const LOW_KEY: &str = "low";

/// One secret's lease, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseEntry {
    pub(crate) lease_id: String,
    pub(crate) mount_uuid: String,
    /// The mount's path when the secret was issued, `database/`.
    pub(crate) mount_path: String,
    /// Relative to the mount: `creds/readonly`.
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) internal: Map<String, Value>,
    pub(crate) issue_time: u64,
    pub(crate) expire_time: u64,
    #[serde(default)]
    pub(crate) last_renewal: u64,
    /// Seconds from issue beyond which renewals do not go.
    pub(crate) max_ttl: u64,
    /// The TTL it was issued with: what a renewal without `increment` extends it by, as in
    /// Vault. 0 in leases stored before it was kept: the mount's default TTL then.
    #[serde(default)]
    pub(crate) ttl: u64,
    pub(crate) renewable: bool,
    /// The token that asked for the secret.
    #[serde(default)]
    pub(crate) token_id: Option<String>,
    /// When the expiry index has it due: `expire_time`, or the next attempt at a revocation
    /// that failed.
    pub(crate) due: u64,
    #[serde(default)]
    pub(crate) revoke_attempts: u32,
    #[serde(default)]
    pub(crate) last_error: String,
    /// The liveness index entries of the secret's values, removed with the lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) leak_keys: Vec<String>,
    /// Its expiry entry, token link and failed-revocation entry are named in the order leases
    /// are made ([`lease_name`]); false for leases stored before, named by a hash alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) ordered_names: bool,
}

impl LeaseEntry {
    fn failing(&self) -> bool {
        self.revoke_attempts > 0
    }

    /// The name of its expiry entry, token link and failed-revocation entry.
    fn name(&self) -> String {
        lease_name(&self.lease_id, self.ordered_names)
    }

    /// The key of its expiry entry when due at `at`.
    fn due_key(&self, at: u64) -> String {
        index::lease_key(&self.name(), at)
    }

    /// What the issuing engine is handed to renew (to `expire_time`) or revoke this lease.
    fn request<'a>(&'a self, route: &'a Route, expire_time: u64) -> LeaseRequest<'a> {
        LeaseRequest {
            lease_id: &self.lease_id,
            path: &self.path,
            mount: &route.info,
            internal: &self.internal,
            issue_time: self.issue_time,
            expire_time,
        }
    }
}

// 2: `ordered_names`. An earlier build would ignore it and look the entries up under their
// hashed names: it refuses these records instead.
crate::record!(LeaseEntry, "lease", 2);

/// What `sys/leases/lookup` shows of a lease (times in Unix seconds).
pub(crate) struct LeaseInfo {
    pub(crate) id: String,
    pub(crate) issue_time: u64,
    /// `None` for a token that never expires.
    pub(crate) expire_time: Option<u64>,
    pub(crate) last_renewal: Option<u64>,
    pub(crate) renewable: bool,
    pub(crate) ttl: u64,
    /// Set while the lease's revocation is failing and being retried.
    pub(crate) failing: Option<Failing>,
}

/// A lease whose revocation failed and is retried.
pub(crate) struct Failing {
    pub(crate) lease_id: String,
    pub(crate) mount_uuid: String,
    pub(crate) expire_time: u64,
    pub(crate) attempts: u32,
    /// The engine's last error: for operators (it can name the engine's own resources).
    pub(crate) error: String,
    pub(crate) next_attempt: u64,
}

/// What `sys/leases/tidy` removed.
pub(crate) struct Tidied {
    pub(crate) dangling_index_entries: u64,
    pub(crate) orphaned_tokens: u64,
}

/// What `sys/leases/renew` answers.
pub(crate) struct Renewed {
    pub(crate) lease_id: String,
    pub(crate) ttl: u64,
    pub(crate) renewable: bool,
    pub(crate) warnings: Vec<String>,
}

pub(crate) struct Expiration {
    view: View,
    /// The liveness index: a leased secret's values are in it while the lease lives.
    leaks: crate::leaks::LeakIndex,
    tokens: Arc<TokenStore>,
    router: Arc<RwLock<Arc<Router>>>,
    queue: std::sync::Mutex<Queue>,
    /// One change at a time per lease (renew, revoke and expiry of the same lease race).
    locks: Vec<tokio::sync::Mutex<()>>,
    wake: Arc<tokio::sync::Notify>,
    /// Routes taken out of the router while their mount is being unmounted: nothing new is
    /// issued through them, but their leases can still be revoked.
    retiring: std::sync::Mutex<Vec<Arc<Route>>>,
    /// The low-water mark as last stored.
    low: AtomicU64,
    /// Requests the core has started, so expiry can tell whether it competes with any.
    foreground: Arc<AtomicU64>,
    /// `foreground` when expiry last looked.
    foreground_seen: AtomicU64,
    /// How much of the time expiry may work while requests are served.
    pacer: std::sync::Mutex<pace::Pacer>,
    /// The server's runtime, where engines are called and secret leases expire (see
    /// [`Self::engine_revoke`] and [`Self::expire_placed`]).
    server: Option<tokio::runtime::Handle>,
}

fn decode_entry(raw: &[u8]) -> Result<LeaseEntry> {
    record::decode(raw)
}

fn encode(e: &LeaseEntry) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    record::encode(e)
}

fn backoff(attempts: u32) -> u64 {
    1u64.checked_shl(attempts.saturating_sub(1)).unwrap_or(u64::MAX).min(MAX_BACKOFF_SECS)
}

/// A lease id's prefix as Vault takes it: always a folder.
fn folder(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() { String::new() } else { format!("{p}/") }
}

/// Token lease ids are `<token path>/<token id>`; all of them start with `auth/`.
fn token_lease(lease_id: &str) -> Option<&str> {
    lease_id.strip_prefix("auth/")?;
    let (_, id) = lease_id.rsplit_once('/')?;
    (!id.is_empty()).then_some(id)
}

impl Expiration {
    /// An expiration manager that loads and runs nothing: a standby's read replica, which
    /// issues no lease (a request whose answer would carry one is forwarded).
    pub(crate) fn inert(
        view: View,
        tokens: Arc<TokenStore>,
        router: Arc<RwLock<Arc<Router>>>,
        foreground: Arc<AtomicU64>,
        leaks: crate::leaks::LeakIndex,
    ) -> Arc<Self> {
        Arc::new(Self::new(view, tokens, router, foreground, leaks, Queue::default()))
    }

    fn new(
        view: View,
        tokens: Arc<TokenStore>,
        router: Arc<RwLock<Arc<Router>>>,
        foreground: Arc<AtomicU64>,
        leaks: crate::leaks::LeakIndex,
        queue: Queue,
    ) -> Self {
        Self {
            view,
            leaks,
            tokens,
            router,
            queue: std::sync::Mutex::new(queue),
            locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            wake: Arc::new(tokio::sync::Notify::new()),
            retiring: std::sync::Mutex::new(Vec::new()),
            low: AtomicU64::new(0),
            foreground,
            foreground_seen: AtomicU64::new(0),
            pacer: std::sync::Mutex::new(pace::Pacer::default()),
            server: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Reads the index buckets that are overdue or due soon. The expiry task starts with
    /// [`Self::start`], once the token store can reach the manager.
    pub(crate) async fn load(
        view: View,
        tokens: Arc<TokenStore>,
        router: Arc<RwLock<Arc<Router>>>,
        foreground: Arc<AtomicU64>,
        leaks: crate::leaks::LeakIndex,
    ) -> Result<Arc<Self>> {
        let now = now_unix();
        let through = bucket_of(now) + index::HORIZON_BUCKETS;
        let queue = Queue { loaded_through: through, ..Queue::default() };
        let me = Arc::new(Self::new(view, tokens, router, foreground, leaks, queue));
        // From the low-water mark up to the horizon, bucket by bucket: the work is the minutes
        // since the last run plus what is due, never the leases due later. A store written
        // before the mark existed finds its first bucket once by listing.
        let low = match me.view.get(LOW_KEY).await? {
            Some(raw) => String::from_utf8_lossy(&raw).parse::<u64>().ok(),
            None => None,
        };
        let low = match low {
            Some(l) => l,
            None => {
                let first = me.view.list("due/").await?.iter().find_map(|c| parse_bucket(c));
                first.unwrap_or(bucket_of(now)).min(bucket_of(now))
            }
        };
        // Only the buckets that hold entries: a server stopped or sealed for a week reads the
        // few buckets with something in them, not each of the 10,080 minutes since the mark.
        let mut b = low;
        while b <= through {
            match me.next_bucket(b).await? {
                Some(next) if next <= through => {
                    me.load_bucket(next).await?;
                    b = next + 1;
                }
                _ => break,
            }
        }
        me.low.store(low, Ordering::Relaxed);
        Ok(me)
    }

    /// The first index bucket at or after `from` that holds an entry (one storage read).
    async fn next_bucket(&self, from: u64) -> Result<Option<u64>> {
        // `due/<from>` sorts after every entry of the buckets below `from` and before its own
        // (`due/<from>/<name>`): bucket names have a fixed width.
        let first = self.view.scan("due/", Some(&format!("{from:012}")), 1).await?;
        Ok(first.first().map(|key| {
            // Anything else under `due/` is read bucket by bucket from here, as before.
            key.split('/').next().and_then(|b| b.parse().ok()).unwrap_or(from).max(from)
        }))
    }

    /// Starts the expiry task on its own thread, at the lowest CPU priority (see the module
    /// header); it ends when the manager is dropped (at seal). Without a thread (the system
    /// refused one) it runs on the server's runtime, as one of its tasks.
    pub(crate) fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(EXPIRY_THREAD)
            .build();
        let spawned = match rt {
            Ok(rt) => std::thread::Builder::new()
                .name(EXPIRY_THREAD.into())
                .spawn(move || {
                    lower_priority();
                    rt.block_on(run(weak));
                })
                .map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "expiry cannot have its own thread; it runs with the requests");
            tokio::spawn(run(Arc::downgrade(self)));
        }
    }

    /// Reads bucket `bucket` into memory, or marks it streamed when it holds more than the
    /// room left in memory (reading only that much of it to find out).
    async fn load_bucket(&self, bucket: u64) -> Result<()> {
        let dir = bucket_dir(bucket);
        let room = {
            let q =
                self.queue.lock().map_err(|_| Error::Internal("lease queue poisoned".into()))?;
            index::MEMORY_LIMIT.saturating_sub(q.set.len())
        };
        let names = self.view.scan(&dir, None, room + 1).await?;
        if names.len() > room {
            let mut q =
                self.queue.lock().map_err(|_| Error::Internal("lease queue poisoned".into()))?;
            q.stream(bucket);
            tracing::debug!(bucket, "expiry bucket too large to hold; it is paged through");
            return Ok(());
        }
        let found = self.read_entries(&dir, names).await?;
        let mut q =
            self.queue.lock().map_err(|_| Error::Internal("lease queue poisoned".into()))?;
        // Streamed meanwhile (offers filled the set): storage has them all.
        if !q.streamed.contains_key(&bucket) {
            for (at, due) in found {
                q.offer(at, due);
            }
        }
        Ok(())
    }

    /// The index entries `names` in folder `dir`.
    async fn read_entries(&self, dir: &str, names: Vec<String>) -> Result<Vec<(u64, Due)>> {
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            // One unreadable entry must not hide the others (nor keep the server sealed); it
            // is reported, and `sys/leases/tidy` removes it.
            match self.view.get(&format!("{dir}{name}")).await {
                Ok(Some(raw)) => match Due::decode(&raw) {
                    Some(due) => found.push(due),
                    None => {
                        tracing::warn!(key = %format!("{dir}{name}"), "unreadable expiry index entry skipped")
                    }
                },
                Ok(None) => {}
                Err(coffer_barrier::Error::Sealed) => return Err(Error::Sealed),
                Err(e) => {
                    tracing::warn!(key = %format!("{dir}{name}"), error = %e, "unreadable expiry index entry skipped")
                }
            }
        }
        Ok(found)
    }

    /// Tells the manager about an expiry just written to the index.
    pub(crate) fn offer(&self, at: u64, due: Due) {
        if let Ok(mut q) = self.queue.lock() {
            q.offer(at, due);
        }
        if at <= now_unix() {
            self.wake.notify_one();
        }
    }

    /// Whether requests were started since expiry last asked.
    fn busy(&self) -> bool {
        let now = self.foreground.load(Ordering::Relaxed);
        self.foreground_seen.swap(now, Ordering::Relaxed) != now
    }

    fn lock_for(&self, lease_id: &str) -> &tokio::sync::Mutex<()> {
        let h = lease_id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        &self.locks[h % LOCK_STRIPES]
    }

    fn route_of(&self, mount_uuid: &str) -> Option<Arc<Route>> {
        let router = self.router.read().ok()?.clone();
        if let Some(r) = router.routes().find(|r| r.entry.uuid == mount_uuid) {
            return Some(r.clone());
        }
        let retiring = self.retiring.lock().ok()?;
        retiring.iter().find(|r| r.entry.uuid == mount_uuid).cloned()
    }

    /// Keeps `route` reachable for revocations while its mount is taken down.
    pub(crate) fn retire(&self, route: Arc<Route>) {
        if let Ok(mut r) = self.retiring.lock() {
            r.push(route);
        }
    }

    pub(crate) fn forget_retired(&self, mount_uuid: &str) {
        if let Ok(mut r) = self.retiring.lock() {
            r.retain(|x| x.entry.uuid != mount_uuid);
        }
    }

    async fn get(&self, lease_id: &str) -> Result<Option<LeaseEntry>> {
        match self.view.get(&format!("id/{lease_id}")).await? {
            None => Ok(None),
            Some(raw) => decode_entry(&raw).map(Some),
        }
    }

    /// Registers the lease of a secret `route` just issued at `rel` for `caller`; returns the
    /// lease id and its TTL in seconds. The outer error: what the engine made is the caller's to
    /// take back (no lease was stored, or one was but could not be revoked now: storage failed,
    /// or the node was sealed or lost leadership; that lease is revoked again when it falls due,
    /// which then finds the secret gone). The inner one: the lease was stored and then taken
    /// back (its token went away meanwhile), so its revocation is the lease's own (done, or kept
    /// and retried if the engine refuses, as every lease's) and the caller takes nothing back.
    pub(crate) async fn register(
        &self,
        route: &Route,
        rel: &str,
        caller: Option<&TokenEntry>,
        secret: SecretLease,
    ) -> Result<std::result::Result<(String, u64), Error>> {
        let now = now_unix();
        let mount_max = route.info.max_lease_ttl.as_secs();
        let max_ttl = if secret.max_ttl == 0 { mount_max } else { secret.max_ttl.min(mount_max) };
        let ttl = if secret.ttl == 0 { route.info.default_lease_ttl.as_secs() } else { secret.ttl };
        let ttl = ttl.min(max_ttl);
        // Its last part sorts by when it was made, so that the records of one path's leases made
        // together (`id/<lease id>`) are stored together, and their expiry entries and token
        // links too (named after it: `ordered_names`).
        let lease_id = format!(
            "{}{}/{}",
            route.info.path,
            rel.trim_end_matches('/'),
            ordered_base62(crate::random::now_ns(), 18)
        );
        crate::path::clean(&lease_id)?;
        let mut live = Vec::with_capacity(secret.live_values.len());
        for v in &secret.live_values {
            let path = rel.trim_end_matches('/');
            let target = crate::leaks::Target::DatabaseDynamic {
                mount: route.entry.uuid.clone(),
                role: path.strip_prefix("creds/").unwrap_or(path).to_owned(),
                lease_id: lease_id.clone(),
            };
            live.push(self.leaks.token(v.expose(), target).await?);
        }
        let entry = LeaseEntry {
            leak_keys: live.iter().map(|l| l.key().to_owned()).collect(),
            lease_id: lease_id.clone(),
            mount_uuid: route.entry.uuid.clone(),
            mount_path: route.info.path.clone(),
            path: rel.trim_end_matches('/').to_owned(),
            internal: secret.internal,
            issue_time: now,
            expire_time: now + ttl,
            last_renewal: 0,
            max_ttl,
            ttl,
            renewable: secret.renewable,
            token_id: caller.map(|c| c.id.clone()),
            due: now + ttl,
            revoke_attempts: 0,
            last_error: String::new(),
            ordered_names: true,
        };
        let raw = encode(&entry)?;
        let due = Due::Lease(lease_id.clone());
        let idx = due.encode(entry.due);
        let name = entry.name();
        let mut ops = vec![
            BatchOp::Put(format!("id/{lease_id}"), &raw),
            BatchOp::Put(index::lease_key(&name, entry.due), &idx),
        ];
        if let Some(t) = &entry.token_id {
            ops.push(BatchOp::Put(format!("token/{t}/{name}"), lease_id.as_bytes()));
        }
        View::batch_across(vec![(&self.view, ops), (self.leaks.view(), crate::leaks::ops(&live))])
            .await?;
        self.offer(entry.due, due);
        // The token may have been revoked while the secret was being made, after its leases
        // were revoked: this one would outlive it. Take it back, and refuse. A revocation
        // under way counts too: it marks the token before listing its leases, and that
        // listing may have run before this lease was stored.
        if let Some(t) = &entry.token_id
            && self.tokens.get_entry(t).await?.is_none_or(|e| e.revoking)
        {
            // Revoked by the lease, or kept with its retry stored when the engine refused. When
            // neither happened (storage failed, sealed, no longer active), the caller revokes the
            // secret now: the lease alone would wait for its whole TTL.
            if let Err(e) = self.take_back(&lease_id).await {
                tracing::warn!(%lease_id, error = %e, "a lease that outlived its token could not be revoked; the secret is revoked directly");
                return Err(Error::PermissionDenied);
            }
            return Ok(Err(Error::PermissionDenied));
        }
        Ok(Ok((lease_id, ttl)))
    }

    /// Revokes a lease [`Self::register`] just stored. `Ok` when the lease answers for its
    /// secret from now on: revoked, already gone, or kept with its retry stored because the
    /// engine refused. `Err` when it cannot be relied on to: storage failed (perhaps after the
    /// engine revoked, which the caller's revocation then repeats), the node was sealed or lost
    /// leadership, or the mount was removed meanwhile (no retry of this lease could reach the
    /// engine; the caller still holds the route that made the secret).
    async fn take_back(&self, lease_id: &str) -> Result<()> {
        let _g = self.lock_for(lease_id).lock().await;
        match self.get(lease_id).await? {
            None => Ok(()),
            Some(e) if self.route_of(&e.mount_uuid).is_none() => Err(Error::Internal(format!(
                "the mount {:?} that issued this lease is gone",
                e.mount_path
            ))),
            Some(e) => self.revoke_locked(e, false).await.map(drop),
        }
    }

    /// `sys/leases/lookup`.
    pub(crate) async fn lookup(&self, lease_id: &str) -> Result<LeaseInfo> {
        let now = now_unix();
        if let Some(id) = token_lease(lease_id) {
            let e = self
                .tokens
                .lookup_id(id)
                .await?
                .filter(|e| e.lease_id() == lease_id)
                .ok_or_else(|| Error::invalid("invalid lease"))?;
            return Ok(LeaseInfo {
                id: lease_id.to_owned(),
                issue_time: e.creation_time,
                expire_time: (e.expire_time != 0).then_some(e.expire_time),
                last_renewal: (e.last_renewal_time > 0).then_some(e.last_renewal_time),
                renewable: e.renewable,
                ttl: e.ttl_remaining(now),
                failing: None,
            });
        }
        let e = self.get(lease_id).await?.ok_or_else(|| Error::invalid("invalid lease"))?;
        Ok(LeaseInfo {
            id: e.lease_id.clone(),
            issue_time: e.issue_time,
            expire_time: Some(e.expire_time),
            last_renewal: (e.last_renewal > 0).then_some(e.last_renewal),
            renewable: e.renewable && !e.failing(),
            ttl: e.expire_time.saturating_sub(now),
            failing: e.failing().then(|| Failing {
                lease_id: e.lease_id.clone(),
                mount_uuid: e.mount_uuid.clone(),
                expire_time: e.expire_time,
                attempts: e.revoke_attempts,
                error: e.last_error.clone(),
                next_attempt: e.due,
            }),
        })
    }

    /// How many secrets' leases are stored (tokens not included), by walking the lease ids:
    /// for telemetry, which caches it.
    pub(crate) async fn count(&self) -> Result<u64> {
        let mut n = 0u64;
        let mut folders = vec![String::from("id/")];
        while let Some(f) = folders.pop() {
            for k in self.view.list(&f).await? {
                if k.ends_with('/') {
                    folders.push(format!("{f}{k}"));
                } else {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Expiries held in memory, waiting for their time.
    pub(crate) fn queued(&self) -> u64 {
        self.queue.lock().map(|q| q.set.len() as u64).unwrap_or(0)
    }

    /// `LIST sys/leases/lookup/<prefix>`: the immediate children, lease ids' last segments
    /// and folders, as Vault lists them.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let p = folder(prefix);
        let mut keys = self.view.list(&format!("id/{p}")).await?;
        if p.starts_with("auth/") {
            keys.extend(self.tokens.list_path(&p).await?);
            keys.sort();
            keys.dedup();
        }
        Ok(keys)
    }

    /// Leases whose revocation is failing, with their last error.
    pub(crate) async fn failing(&self) -> Result<Vec<Failing>> {
        let mut out = Vec::new();
        for name in self.view.list("failed/").await? {
            let Some(raw) = self.view.get(&format!("failed/{name}")).await? else { continue };
            let lease_id = String::from_utf8_lossy(&raw).into_owned();
            if let Some(e) = self.get(&lease_id).await? {
                out.push(Failing {
                    lease_id: e.lease_id,
                    mount_uuid: e.mount_uuid,
                    expire_time: e.expire_time,
                    attempts: e.revoke_attempts,
                    error: e.last_error,
                    next_attempt: e.due,
                });
            }
        }
        Ok(out)
    }

    /// `sys/leases/renew`: extends a lease by `increment` seconds (the mount's default TTL when
    /// absent), never past its maximum.
    pub(crate) async fn renew(&self, lease_id: &str, increment: Option<u64>) -> Result<Renewed> {
        if token_lease(lease_id).is_some() {
            // As in Vault: a token renews through auth/token/renew*, whose rules and ACL apply.
            return Err(Error::invalid("tokens cannot be renewed through this endpoint"));
        }
        let _g = self.lock_for(lease_id).lock().await;
        // Vault's text for a renewal (a lookup says `invalid lease`).
        let mut e = self.get(lease_id).await?.ok_or_else(|| Error::invalid("lease not found"))?;
        let now = now_unix();
        if e.failing() || now >= e.expire_time {
            return Err(Error::invalid("lease expired"));
        }
        if !e.renewable {
            return Err(Error::invalid("lease is not renewable"));
        }
        let route = self
            .route_of(&e.mount_uuid)
            .ok_or_else(|| Error::invalid("the mount that issued this lease is gone"))?;
        let mount_max = route.info.max_lease_ttl.as_secs();
        let original = if e.ttl > 0 { e.ttl } else { route.info.default_lease_ttl.as_secs() };
        let requested = increment.filter(|i| *i > 0).unwrap_or(original);
        let cap = e.issue_time + e.max_ttl.min(mount_max);
        let new_expire = (now + requested).min(cap).max(now);
        let mut warnings = Vec::new();
        if now + requested > cap {
            warnings.push(format!(
                "TTL of {:?} exceeded the effective max_ttl of {:?}; TTL value is capped accordingly",
                coffer_time::format_human(requested),
                coffer_time::format_human(cap.saturating_sub(now))
            ));
        }
        let req = e.request(&route, new_expire);
        tokio::time::timeout(ENGINE_TIMEOUT, route.backend.renew_lease(&req)).await.map_err(
            |_| Error::Internal(format!("renewing {lease_id}: the engine did not answer in 30 s")),
        )??;
        let old_due = e.due;
        e.expire_time = new_expire;
        e.due = new_expire;
        e.last_renewal = now;
        self.move_due(&e, old_due, &[]).await?;
        Ok(Renewed {
            lease_id: lease_id.to_owned(),
            ttl: new_expire - now,
            renewable: true,
            warnings,
        })
    }

    /// Saves `e` with its index entry moved from `old_due` to `e.due`, plus `extra` ops.
    async fn move_due(
        &self,
        e: &LeaseEntry,
        old_due: u64,
        extra: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let raw = encode(e)?;
        let due = Due::Lease(e.lease_id.clone());
        let idx = due.encode(e.due);
        let name = e.name();
        let (old_key, key) = (index::lease_key(&name, old_due), index::lease_key(&name, e.due));
        let mut ops = vec![BatchOp::Put(format!("id/{}", e.lease_id), &raw)];
        if old_key != key {
            ops.push(BatchOp::Delete(old_key));
        }
        ops.push(BatchOp::Put(key, &idx));
        for (k, v) in extra {
            ops.push(BatchOp::Put(k.clone(), v));
        }
        self.view.batch(ops).await?;
        self.offer(e.due, due);
        Ok(())
    }

    /// `sys/leases/revoke`: revokes one lease now. A failing revocation is kept and retried,
    /// and its error returned; `force` removes the lease even when the engine fails.
    pub(crate) async fn revoke(&self, lease_id: &str, force: bool) -> Result<()> {
        if let Some(id) = token_lease(lease_id) {
            if let Some(e) = self.tokens.entry_for_revocation(id).await?
                && e.lease_id() == lease_id
            {
                self.tokens.revoke_tree(&e.id).await?;
            }
            return Ok(());
        }
        self.revoke_secret(lease_id, force).await
    }

    /// [`Self::revoke`] for a secret's lease (never a token's, so that revoking a token's
    /// leases cannot come back to the token store).
    async fn revoke_secret(&self, lease_id: &str, force: bool) -> Result<()> {
        let _g = self.lock_for(lease_id).lock().await;
        match self.get(lease_id).await? {
            None => Ok(()),
            Some(e) => self.revoke_locked(e, force).await?,
        }
    }

    /// Revokes the lease with its lock held: the engine first, then the records. The outer
    /// error is storage failing (nothing changed); the inner one is the engine failing, with
    /// the lease kept and its retry stored.
    async fn revoke_locked(
        &self,
        mut e: LeaseEntry,
        force: bool,
    ) -> Result<std::result::Result<(), Error>> {
        let result = match self.route_of(&e.mount_uuid) {
            Some(route) => self.engine_revoke(route, &e).await,
            None => Err(Error::Internal(format!(
                "the mount {:?} that issued this lease is gone",
                e.mount_path
            ))),
        };
        let name = e.name();
        if result.is_ok() || force {
            if let Err(err) = &result {
                tracing::warn!(lease_id = %e.lease_id, error = %err, "lease revocation forced past an error");
            }
            let mut ops = vec![
                BatchOp::Delete(format!("id/{}", e.lease_id)),
                BatchOp::Delete(index::lease_key(&name, e.due)),
                BatchOp::Delete(format!("failed/{name}")),
            ];
            if let Some(t) = &e.token_id {
                ops.push(BatchOp::Delete(format!("token/{t}/{name}")));
            }
            let leak = e.leak_keys.iter().map(|k| BatchOp::Delete(k.clone())).collect();
            View::batch_across(vec![(&self.view, ops), (self.leaks.view(), leak)]).await?;
            tracing::debug!(lease_id = %e.lease_id, "lease revoked");
            return Ok(Ok(()));
        }
        let Err(err) = result else { return Ok(Ok(())) };
        // A node that lost leadership stops here: the new active revokes it.
        if matches!(err, Error::Sealed | Error::Standby) {
            return Err(err);
        }
        let old_due = e.due;
        e.revoke_attempts += 1;
        e.last_error = err.to_string();
        e.due = now_unix() + backoff(e.revoke_attempts);
        tracing::warn!(
            lease_id = %e.lease_id,
            attempts = e.revoke_attempts,
            retry_in_s = e.due.saturating_sub(now_unix()),
            error = %err,
            "lease revocation failed; it stays and is retried"
        );
        let failed = (format!("failed/{name}"), e.lease_id.clone().into_bytes());
        self.move_due(&e, old_due, &[failed]).await?;
        Ok(Err(err))
    }

    /// The engine's revocation of `e`, on the server's runtime: what an engine opens there (a
    /// database's connection pool, whose connections are driven by tasks of the runtime that
    /// made them) must not belong to expiry's own runtime, which runs at the lowest priority and
    /// ends at seal.
    async fn engine_revoke(&self, route: Arc<Route>, e: &LeaseEntry) -> Result<()> {
        let e = e.clone();
        let call = async move {
            let req = e.request(&route, e.expire_time);
            match tokio::time::timeout(ENGINE_TIMEOUT, route.backend.revoke_lease(&req)).await {
                Ok(r) => r,
                Err(_) => Err(Error::Internal("the engine did not answer in 30 s".into())),
            }
        };
        match &self.server {
            Some(rt) => rt
                .spawn(call)
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("engine revocation task: {e}")))),
            None => call.await,
        }
    }

    /// `sys/leases/revoke-prefix` and `revoke-force`: every lease (and, under `auth/`, every
    /// token) whose id starts with the folder `prefix`. All are tried; the first error is
    /// returned, and the failed ones stay to be retried.
    pub(crate) async fn revoke_prefix(&self, prefix: &str, force: bool) -> Result<()> {
        let p = folder(prefix);
        if p.is_empty() {
            return Err(Error::invalid("a prefix is required"));
        }
        let mut first_err = None;
        // Page by page, each starting after the last id of the one before: revoked ids are
        // gone and failed ones are passed, so every id is tried once, and one page is held.
        if p.starts_with("auth/") {
            let mut after: Option<String> = None;
            loop {
                let page = self.tokens.scan_path(&p, after.as_deref(), PAGE).await?;
                let Some(last) = page.last().cloned() else { break };
                for key in &page {
                    // `<rest of the path>/<name>`: the name is the last segment.
                    let id = crate::token::link_id(key.rsplit('/').next().unwrap_or(key));
                    if let Err(e) = self.tokens.revoke_tree(id).await {
                        first_err.get_or_insert(e);
                    }
                }
                after = Some(last);
            }
        }
        let dir = format!("id/{p}");
        let mut after: Option<String> = None;
        loop {
            let page = self.view.scan(&dir, after.as_deref(), PAGE).await?;
            let Some(last) = page.last().cloned() else { break };
            for rel in &page {
                if let Err(e) = self.revoke(&format!("{p}{rel}"), force).await {
                    first_err.get_or_insert(e);
                }
            }
            after = Some(last);
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Revokes the leases a token asked for, as the token is revoked. A lease whose engine
    /// refuses stays, with its retry stored, and the token goes regardless. An error (storage
    /// failing, a seal, leadership lost) stops here with the link kept, so that the token's
    /// revocation, finished later, finds the lease again.
    async fn revoke_token_leases(&self, token_id: &str) -> Result<()> {
        let dir = format!("token/{token_id}/");
        for name in self.view.list(&dir).await? {
            if let Some(raw) = self.view.get(&format!("{dir}{name}")).await? {
                let lease_id = String::from_utf8_lossy(&raw).into_owned();
                let _g = self.lock_for(&lease_id).lock().await;
                // Storage failing stops here too; a record that does not open or decode cannot
                // be handed to its engine by anyone: its link goes.
                let found = match self.view.get(&format!("id/{lease_id}")).await {
                    Ok(raw) => raw.and_then(|raw| match decode_entry(&raw) {
                        Ok(e) => Some(e),
                        Err(err) => {
                            tracing::warn!(%lease_id, error = %err, "a lease of a revoked token does not decode");
                            None
                        }
                    }),
                    Err(coffer_barrier::Error::Corrupt(path)) => {
                        tracing::warn!(%lease_id, path, "a lease of a revoked token is damaged");
                        None
                    }
                    Err(err) => return Err(err.into()),
                };
                if let Some(e) = found
                    // Revoked: its own batch deleted the link. Refused by its engine: it stays
                    // with its retry stored, and answers for itself from now on.
                    && self.revoke_locked(e, false).await?.is_ok()
                {
                    continue;
                }
            }
            self.view.delete(&format!("{dir}{name}")).await?;
        }
        Ok(())
    }

    /// `sys/leases/tidy`: removes index entries that point at nothing, and revokes leases
    /// whose token is gone (left by a revocation interrupted part-way).
    pub(crate) async fn tidy(&self) -> Result<Tidied> {
        let (mut dangling, mut orphaned) = (0u64, 0u64);
        for bucket in self.view.list("due/").await? {
            let dir = format!("due/{bucket}");
            for name in self.view.list(&dir).await? {
                let key = format!("{dir}{name}");
                let raw = match self.view.get(&key).await {
                    Ok(Some(raw)) => raw,
                    Ok(None) => continue,
                    Err(coffer_barrier::Error::Sealed) => return Err(Error::Sealed),
                    // An entry that fails to open is removed like one that points at nothing.
                    Err(_) => zeroize::Zeroizing::new(Vec::new()),
                };
                let removed = match Due::decode(&raw) {
                    Some((_, Due::Lease(id))) => {
                        // Under the lease's lock, so a renewal cannot move it meanwhile.
                        let _g = self.lock_for(&id).lock().await;
                        let live = self.get(&id).await?.is_some_and(|e| e.due_key(e.due) == key);
                        if !live {
                            self.view.delete(&key).await?;
                        }
                        !live
                    }
                    Some((_, Due::Token(name))) => {
                        let id = crate::token::link_id(&name);
                        let live = self.tokens.get_entry(id).await?.is_some_and(|e| {
                            e.expire_time != 0
                                && token_key(&crate::token::link_name(&e), e.expire_time) == key
                        });
                        if !live {
                            self.view.delete(&key).await?;
                        }
                        !live
                    }
                    None => {
                        self.view.delete(&key).await?;
                        true
                    }
                };
                dangling += u64::from(removed);
            }
        }
        for token in self.view.list("token/").await? {
            let token_id = token.trim_end_matches('/');
            if self.tokens.get_entry(token_id).await?.is_some() {
                continue;
            }
            let _ = self.revoke_token_leases(token_id).await;
            orphaned += 1;
        }
        // Failed-revocation entries of leases that are gone or no longer failing, or that a
        // mount move left under the lease's former id (before moves took them along).
        for name in self.view.list("failed/").await? {
            let key = format!("failed/{name}");
            let Some(raw) = self.view.get(&key).await? else { continue };
            let lease_id = String::from_utf8_lossy(&raw).into_owned();
            let _g = self.lock_for(&lease_id).lock().await;
            let current =
                self.get(&lease_id).await?.is_some_and(|e| e.failing() && e.name() == name);
            if !current {
                self.view.delete(&key).await?;
                dangling += 1;
            }
        }
        Ok(Tidied { dangling_index_entries: dangling, orphaned_tokens: orphaned })
    }

    /// One pass of the expiry task: loads buckets coming into the horizon, then revokes what is
    /// due, a few at a time, then moves the low-water mark up. Returns whether more was due than
    /// one pass takes.
    async fn tick(self: &Arc<Self>) -> Result<bool> {
        let now = now_unix();
        let want = bucket_of(now) + index::HORIZON_BUCKETS;
        loop {
            let next = {
                let mut q = self
                    .queue
                    .lock()
                    .map_err(|_| Error::Internal("lease queue poisoned".into()))?;
                if q.loaded_through >= want {
                    break;
                }
                // Marked loaded before reading, so an expiry written meanwhile goes to memory.
                q.loaded_through += 1;
                q.loaded_through
            };
            if let Err(e) = self.load_bucket(next).await {
                // Not loaded after all: the next pass reads it again.
                if let Ok(mut q) = self.queue.lock() {
                    q.loaded_through = q.loaded_through.min(next - 1);
                }
                return Err(e);
            }
        }
        let due = self
            .queue
            .lock()
            .map_err(|_| Error::Internal("lease queue poisoned".into()))?
            .take_due(now, PASS);
        let mut more = due.len() == PASS;
        self.expire_paced(due).await;
        more |= self.stream_page(now).await?;
        // Every entry below the mark has been handled (those that failed are back in memory,
        // so the mark stays at or below them): a restart can start reading from there.
        let low = self
            .queue
            .lock()
            .map_err(|_| Error::Internal("lease queue poisoned".into()))?
            .low_water(now_unix());
        if low > self.low.load(Ordering::Relaxed) {
            self.view.put(LOW_KEY, low.to_string().as_bytes()).await?;
            self.low.store(low, Ordering::Relaxed);
        }
        Ok(more)
    }

    /// Expires `due`: several at once while no request is being served, else one at a time,
    /// each a unit of paced work (see [`pace`]).
    async fn expire_paced(self: &Arc<Self>, due: Vec<(u64, Due)>) {
        let mut running = tokio::task::JoinSet::new();
        for (at, d) in due {
            if self.busy() {
                while running.join_next().await.is_some() {}
                // A secret lease late is a credential still valid where it was issued (a
                // database user): it keeps the highest share whatever it costs requests. A
                // token late costs nothing, since it is refused from its expiry on.
                let urgent = matches!(d, Due::Lease(_));
                self.paced(Arc::clone(self).expire_placed(at, d), urgent).await;
                continue;
            }
            while running.len() >= EXPIRY_CONCURRENCY {
                running.join_next().await;
            }
            let me = Arc::clone(self);
            running.spawn(async move { me.expire_placed(at, d).await });
        }
        while running.join_next().await.is_some() {}
    }

    /// [`Self::expire_logged`] where it belongs: a secret's lease on the server's runtime, at
    /// the requests' priority (until it is revoked, its credential still works where it was
    /// issued); a token on the calling thread, expiry's own (it is refused from its expiry on).
    async fn expire_placed(self: Arc<Self>, at: u64, d: Due) {
        match (&self.server, &d) {
            (Some(rt), Due::Lease(_)) => {
                let me = Arc::clone(&self);
                // A panic is reported by the runtime, as it was when the task ran here; the
                // index entry stays in storage and is read again at the next unseal.
                let _ = rt.spawn(async move { me.expire_logged(at, d).await }).await;
            }
            _ => self.expire_logged(at, d).await,
        }
    }

    /// [`Self::expire`], whose failures are logged and retried, never dropped.
    async fn expire_logged(&self, at: u64, d: Due) {
        match self.expire(at, &d).await {
            // Sealed, or no longer the active node: the next active takes it over.
            Ok(()) | Err(Error::Sealed | Error::Standby) => {}
            Err(e) => {
                // Storage failed: nothing changed, so the entry goes back in memory and the
                // next pass tries again (or, streamed, the next pass over its bucket finds it).
                tracing::warn!(error = %e, "expiry of {d:?} failed; it is retried");
                if let Ok(mut q) = self.queue.lock() {
                    q.offer(at, d);
                }
            }
        }
    }

    /// Runs one unit of expiry work. While requests are being served it is followed by a rest
    /// as long as the pacer asks (no longer than the highest share allows when `urgent`), and
    /// both are measured against the requests started meanwhile.
    async fn paced<T>(&self, work: impl std::future::Future<Output = T>, urgent: bool) -> T {
        let started = || self.foreground.load(Ordering::Relaxed);
        let (t0, r0) = (Instant::now(), started());
        let out = work.await;
        let (t1, r1) = (Instant::now(), started());
        let rest = self
            .pacer
            .lock()
            .map(|p| if urgent { p.rest_after_urgent(t1 - t0) } else { p.rest_after(t1 - t0) })
            .unwrap_or(pace::MAX_REST);
        tokio::time::sleep(rest).await;
        let (t2, r2) = (Instant::now(), started());
        if let Ok(mut p) = self.pacer.lock() {
            p.record(pace::Sample {
                work: t1 - t0,
                work_requests: r1 - r0,
                rest: t2 - t1,
                rest_requests: r2 - r1,
            });
        }
        out
    }

    /// Handles one page of the first streamed bucket that needs it; returns whether that
    /// bucket's pass goes on.
    async fn stream_page(self: &Arc<Self>, now: u64) -> Result<bool> {
        let ready = self
            .queue
            .lock()
            .map_err(|_| Error::Internal("lease queue poisoned".into()))?
            .ready_stream(now);
        let Some((bucket, mut stream)) = ready else { return Ok(false) };
        let dir = bucket_dir(bucket);
        let names = self.view.scan(&dir, stream.after.as_deref(), PAGE).await?;
        let complete = names.len() < PAGE;
        stream.after = names.last().cloned().filter(|_| !complete);
        // Reading the page is work too (a storage read and a decryption per entry): paced like
        // the revocations, a few entries at a time.
        let mut entries = Vec::with_capacity(names.len());
        let mut names = names.into_iter();
        loop {
            let unit: Vec<String> = names.by_ref().take(READ_UNIT).collect();
            if unit.is_empty() {
                break;
            }
            let read = self.read_entries(&dir, unit);
            let read = if self.busy() { self.paced(read, false).await } else { read.await };
            entries.extend(read?);
        }
        // Due later in this (current) bucket: the next pass comes back for them, not before.
        let mut due = Vec::new();
        for (at, d) in entries {
            if at <= now {
                due.push((at, d));
            } else {
                stream.saw_later(at);
            }
        }
        self.expire_paced(due).await;
        // A whole pass that began after the bucket ended has seen every entry due: once none
        // is left, the bucket is done.
        let finished = complete
            && bucket < bucket_of(stream.pass_began)
            && self.view.scan(&dir, None, 1).await?.is_empty();
        let mut q =
            self.queue.lock().map_err(|_| Error::Internal("lease queue poisoned".into()))?;
        // Offers made while this page was handled went to the queue's copy.
        let offered = q.streamed.get(&bucket).map_or(0, |s| s.offered);
        match finished {
            true => {
                q.streamed.remove(&bucket);
            }
            false => {
                stream.offered = offered;
                if complete {
                    stream.finish(offered);
                }
                q.streamed.insert(bucket, stream);
            }
        }
        Ok(!complete)
    }

    /// Handles one index entry that fell due at `at`. An engine that fails to revoke is not an
    /// error here: the lease keeps its stored retry.
    async fn expire(&self, at: u64, due: &Due) -> Result<()> {
        let now = now_unix();
        match due {
            Due::Token(name) => match self.tokens.get_entry(crate::token::link_id(name)).await? {
                Some(e) if e.is_expired(now) => self.tokens.revoke_tree(&e.id).await,
                // Renewed within the same bucket: the index entry is the current one.
                Some(e)
                    if e.expire_time != 0
                        && token_key(&crate::token::link_name(&e), e.expire_time)
                            == token_key(name, at) =>
                {
                    Ok(())
                }
                // Renewed into another bucket, or revoked: this entry is stale.
                _ => self.view.delete(&token_key(name, at)).await.map_err(Into::into),
            },
            Due::Lease(id) => {
                let _g = self.lock_for(id).lock().await;
                match self.get(id).await? {
                    Some(e) if e.due <= now => self.revoke_locked(e, false).await.map(|_| ()),
                    Some(e) if bucket_of(e.due) == bucket_of(at) => {
                        // Still due later in the same bucket: keep it in memory.
                        self.offer(e.due, due.clone());
                        Ok(())
                    }
                    // Renewed into another bucket, or gone: the entry left here is stale, under
                    // whichever name it was written (a lease moved by `rename_prefix` changes
                    // names).
                    _ => {
                        let stale = [true, false].map(|ordered| {
                            BatchOp::Delete(index::lease_key(&lease_name(id, ordered), at))
                        });
                        self.view.batch(stale.into()).await.map_err(Into::into)
                    }
                }
            }
        }
    }
}

/// Gives the calling thread the lowest CPU priority, nice 19, so the kernel runs it after
/// every thread at the default priority (the request workers): on Linux the nice value is the
/// thread's own, and threads it starts (its runtime's blocking threads) inherit it. A refusal
/// only costs that: expiry is paced regardless.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // PRIO_PROCESS with no id: the calling thread's own, on Linux.
        if let Err(e) = rustix::process::setpriority_process(None, 19) {
            tracing::debug!(error = %e, "expiry thread keeps the default priority");
        }
    }
}

/// The expiry task; it ends when the manager does (at seal).
async fn run(weak: Weak<Expiration>) {
    loop {
        let more = {
            let Some(me) = weak.upgrade() else { return };
            match me.tick().await {
                Ok(more) => more,
                Err(Error::Sealed | Error::Standby) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "expiry pass failed; trying again");
                    false
                }
            }
        };
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        let Some(me) = weak.upgrade() else { return };
        let wake = Arc::clone(&me.wake);
        drop(me);
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
    }
}

#[async_trait::async_trait]
impl crate::token::LeaseHolder for Expiration {
    fn offer_token(&self, at: u64, name: &str) {
        self.offer(at, Due::Token(name.to_owned()));
    }

    async fn revoke_by_token(&self, token_id: &str) -> Result<()> {
        self.revoke_token_leases(token_id).await
    }
}

mod pace;
mod rename;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), 1);
        assert_eq!(backoff(2), 2);
        assert_eq!(backoff(5), 16);
        assert_eq!(backoff(30), MAX_BACKOFF_SECS);
        assert_eq!(backoff(200), MAX_BACKOFF_SECS);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn expiry_runs_at_the_lowest_priority_and_the_threads_it_starts_too() {
        let server = rustix::process::getpriority_process(None).expect("own priority");
        let (own, started) = std::thread::spawn(|| {
            lower_priority();
            let own = rustix::process::getpriority_process(None).expect("own priority");
            let started = std::thread::spawn(|| rustix::process::getpriority_process(None))
                .join()
                .expect("thread")
                .expect("its priority");
            (own, started)
        })
        .join()
        .expect("thread");
        assert_eq!((own, started), (19, 19));
        // Only that thread: the others keep theirs.
        assert_eq!(rustix::process::getpriority_process(None).expect("own priority"), server);
    }

    #[test]
    fn token_lease_ids_are_recognised() {
        assert_eq!(token_lease("auth/token/create/abc"), Some("abc"));
        assert_eq!(token_lease("database/creds/ro/abc"), None);
        assert_eq!(token_lease("auth/"), None);
        assert_eq!(folder("/database/creds/"), "database/creds/");
        assert_eq!(folder(""), "");
    }
}

#[cfg(test)]
mod flow_tests;
