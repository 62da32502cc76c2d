//! HA standby reads: the read replica an unsealed standby serves KV reads from, kept current by
//! the cluster's change feed, with a staleness bound that is proven at each request.
//!
//! The replica is the active node's state ([`Active`]) built the same way from storage, with
//! `replica` set: a read-only token store (an expired token is reported as none, never revoked
//! here), the policies and their compiled ACLs, the mount tables and routes (only kv engines
//! are built; every other mount keeps its place in the routing and forwards), the identity
//! store (entity and group policies for the ACL), and the audit devices of the shared table
//! (their files locked, see `audit`). It writes nothing, issues no lease and starts no
//! background task: no expiration manager, rotation, detection or backfill.
//!
//! Invalidation: a task consumes the change feed (`coffer_storage::ChangeFeed`) through a
//! bounded queue, in commit order. Each changed key drops or reloads what depends on it: a
//! token's cached entry (`sys/token/id/...`), a policy and every compiled ACL
//! (`sys/policy/...`), an entity or group (the identity mount's keys), a key of a kv mount
//! (handed to its engine's `invalidate`), the keyring (`core/keyring`: read again, so a
//! rotated term decrypts). The mount tables, the audit table, the quota rules and the
//! detection rules rebuild the whole replica (with any quota or detection rule in force a
//! standby serves nothing: both are counted and evaluated on the active node), as does "everything changed" (a reconnection of the feed, a notification too
//! large to list its keys).
//!
//! Staleness, proven: every [`heartbeat`] interval (100 ms, or a quarter of the bound if
//! smaller) a task runs the feed's `sync` barrier; a sync that started at instant `t` and
//! returned proves that every change committed before `t` was handed to the queue, ahead of the
//! sync's own marker. The consumer records `t` as the replica's freshness only when it reaches
//! that marker, so after applying every change queued before it. A request is served from the
//! replica only when the freshness is younger than `ha_standby_max_staleness` and the feed is
//! live at that moment: what the replica holds (tokens, policies, mounts, identity, keyring)
//! then reflects every change committed more than the bound ago. Data itself is read from
//! storage at each request and is never stale. A rebuild in progress, a failed sync, a feed
//! that is down: the freshness stops moving and requests are forwarded once it is older than
//! the bound.
//!
//! A queue overflow (the consumer fell behind) drops the feed's session and starts over, with a
//! full rebuild; the feed's own queue is bounded too, so a slow standby never holds back
//! PostgreSQL's notification queue while it is running (a paused process still can; see
//! docs/ha.md).
//!
//! Not done: `sys/health` does not report standbys that serve reads as Vault's performance
//! standbys (`performance_standby` stays false; Coffer keeps the standby's 429).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coffer_storage::{Change, ChangeFeed};

use crate::backend::{BackendRequest, LogicalBackend};
use crate::core::{Active, Core};
use crate::logical::{Error, Operation, Request, Response, Result};

/// Opens the cluster's change feed with the callback given (the binary knows the database).
pub type FeedOpener = Arc<
    dyn Fn(
            Box<dyn Fn(Change) + Send + Sync>,
        ) -> Pin<Box<dyn Future<Output = coffer_storage::Result<ChangeFeed>> + Send>>
        + Send
        + Sync,
>;

/// Changes (and sync markers) waiting for the consumer, at most.
const QUEUE: usize = 1024;
/// The heartbeat's interval, at most.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How long after a failure (the feed cannot open, a rebuild failed) the replica tries again.
const RETRY: Duration = Duration::from_secs(1);

/// Whether a replica builds (and serves reads of) a mount of this type.
pub(crate) fn serves_kind(kind: &str) -> bool {
    matches!(kind, "kv" | "generic")
}

/// Whether a request may be served by a replica at all, before its token is known: a read or
/// list without response wrapping.
pub(crate) fn admits(req: &Request) -> bool {
    matches!(req.operation, Operation::Read | Operation::List) && req.wrap_ttl.is_none()
}

/// The replica's stand-in for every engine it does not build: anything routed to it goes to
/// the active node.
struct Forwarded;

#[async_trait]
impl LogicalBackend for Forwarded {
    async fn handle(&self, _req: &BackendRequest<'_>) -> Result<Response> {
        Err(Error::Standby)
    }
}

pub(crate) fn forwarded() -> Arc<dyn LogicalBackend> {
    Arc::new(Forwarded)
}

enum Item {
    Change(Change),
    /// A sync that started at this instant returned.
    Synced(Instant),
}

#[derive(Default)]
struct Shared {
    state: RwLock<Option<Arc<Active>>>,
    /// The start of the last sync whose changes were all applied.
    fresh: Mutex<Option<Instant>>,
    feed: Mutex<Option<Arc<ChangeFeed>>>,
    /// Why the replica does not serve, as last logged (each reason is logged once).
    why_not: Mutex<Option<String>>,
}

impl Shared {
    fn clear(&self) {
        if let Ok(mut s) = self.state.write() {
            *s = None;
        }
        if let Ok(mut f) = self.fresh.lock() {
            *f = None;
        }
        if let Ok(mut f) = self.feed.lock() {
            *f = None;
        }
    }

    fn not_serving(&self, why: String) {
        if let Ok(mut f) = self.fresh.lock() {
            *f = None;
        }
        if let Ok(mut w) = self.why_not.lock()
            && w.as_deref() != Some(why.as_str())
        {
            tracing::warn!(reason = %why, "HA: this standby forwards every request");
            *w = Some(why);
        }
    }

    fn serving(&self) {
        if let Ok(mut w) = self.why_not.lock()
            && w.take().is_some()
        {
            tracing::info!("HA: this standby serves reads from its replica");
        }
    }
}

/// A standby's read replica and the task that keeps it current.
pub(crate) struct Replica {
    max_staleness: Duration,
    open: FeedOpener,
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Replica {
    pub(crate) fn new(max_staleness: Duration, open: FeedOpener) -> Self {
        Self { max_staleness, open, shared: Arc::default(), task: Mutex::new(None) }
    }

    /// Starts keeping the replica (once; a running task is left alone).
    pub(crate) fn start(&self, core: &Arc<Core>) {
        let Ok(mut task) = self.task.lock() else { return };
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // The first state is logged as a change.
        if let Ok(mut w) = self.shared.why_not.lock() {
            *w = Some("starting".into());
        }
        *task = Some(tokio::spawn(run(
            Arc::downgrade(core),
            self.shared.clone(),
            self.max_staleness,
            self.open.clone(),
        )));
    }

    /// Drops the replica and its feed (at takeover and seal).
    pub(crate) fn stop(&self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(t) = task.take()
        {
            t.abort();
        }
        self.shared.clear();
    }

    /// The replica, when it may serve a request now: its last proven freshness is younger than
    /// the bound and the feed is live.
    pub(crate) fn current(&self) -> Option<Arc<Active>> {
        let fresh = (*self.shared.fresh.lock().ok()?)?;
        if fresh.elapsed() >= self.max_staleness {
            return None;
        }
        if !self.shared.feed.lock().ok()?.as_ref()?.is_live() {
            return None;
        }
        self.shared.state.read().ok()?.clone()
    }
}

/// Aborts a task when dropped (the heartbeat, with the session that started it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(core: Weak<Core>, shared: Arc<Shared>, max_staleness: Duration, open: FeedOpener) {
    loop {
        session(&core, &shared, max_staleness, &open).await;
        shared.clear();
        if core.upgrade().is_none_or(|c| c.barrier.is_sealed()) {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One session of the feed: opens it, applies what it says until it must start over.
async fn session(
    core: &Weak<Core>,
    shared: &Arc<Shared>,
    max_staleness: Duration,
    open: &FeedOpener,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(QUEUE);
    let overflow = Arc::new(AtomicBool::new(false));
    let on_change = {
        let tx = tx.clone();
        let overflow = overflow.clone();
        move |c: Change| {
            if tx.try_send(Item::Change(c)).is_err() {
                overflow.store(true, Ordering::SeqCst);
            }
        }
    };
    let feed = match open(Box::new(on_change)).await {
        Ok(f) => Arc::new(f),
        Err(e) => {
            shared.not_serving(format!("the change feed cannot open: {e}"));
            return;
        }
    };
    if let Ok(mut f) = shared.feed.lock() {
        *f = Some(feed.clone());
    }
    let every = HEARTBEAT.min(max_staleness / 4);
    let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat(feed, tx, every, max_staleness)));
    // A rebuild is owed (and when it failed, when to try again).
    let mut owed: Option<Instant> = None;
    while let Some(item) = rx.recv().await {
        if overflow.load(Ordering::SeqCst) {
            shared.not_serving("the replica fell behind the change feed; starting over".into());
            return;
        }
        let Some(core) = core.upgrade() else { return };
        if core.barrier.is_sealed() {
            return;
        }
        match &item {
            Item::Change(Change::All) => owed = Some(Instant::now()),
            Item::Change(Change::Keys(keys)) if owed.is_none() => {
                if let Err(e) = apply(&core, shared, keys).await {
                    if !matches!(e, Error::Refused(_)) {
                        tracing::warn!(error = %e, "HA: applying a change to the replica failed; rebuilding it");
                    }
                    owed = Some(Instant::now());
                }
            }
            Item::Change(Change::Keys(_)) | Item::Synced(_) => {}
        }
        if let Some(at) = owed
            && Instant::now() >= at
        {
            let previous = shared.state.write().ok().and_then(|mut s| s.take());
            match core.build_replica(previous.as_deref()).await {
                Ok(state) => {
                    if let Ok(mut s) = shared.state.write() {
                        *s = Some(state);
                    }
                    owed = None;
                }
                Err(e) => {
                    // A refusal's reason is for the operator (its display is the client's).
                    let why = match e {
                        Error::Refused(why) => why,
                        e => e.to_string(),
                    };
                    shared.not_serving(format!("the read replica cannot be built: {why}"));
                    owed = Some(Instant::now() + RETRY);
                }
            }
        }
        if let Item::Synced(t) = item
            && owed.is_none()
        {
            if let Ok(mut f) = shared.fresh.lock() {
                *f = Some(t);
            }
            shared.serving();
        }
    }
}

/// Applies the changed keys to the replica; `Err(Refused)` when only a rebuild can.
async fn apply(core: &Core, shared: &Shared, keys: &[String]) -> Result<()> {
    let rebuild = || Err(Error::Refused("a rebuild is needed".into()));
    let Some(state) = shared.state.read().ok().and_then(|s| s.clone()) else {
        return rebuild();
    };
    for key in keys {
        let key = key.as_str();
        if key == "core/keyring" {
            core.reload_keyring().await?;
        } else if matches!(key, "core/mounts" | "core/auth" | "core/audit")
            || key.starts_with("sys/quotas/")
            || key.starts_with("sys/detect/rules/")
        {
            return rebuild();
        } else if let Some(rest) = key.strip_prefix("sys/token/") {
            state.tokens.invalidate(rest);
        } else if let Some(name) = key.strip_prefix("sys/policy/") {
            state.policies.reload(name).await?;
        } else if let Some(rest) =
            key.strip_prefix("logical/").or_else(|| key.strip_prefix("auth/"))
            && let Some((uuid, rel)) = rest.split_once('/')
        {
            let router = state.router()?;
            let Some(route) = router.routes().find(|r| r.entry.uuid == uuid).cloned() else {
                continue;
            };
            if route.entry.kind == "identity" {
                state.identity.reload(rel).await?;
            } else {
                route.backend.invalidate(rel);
            }
        }
    }
    Ok(())
}

/// Proves freshness: a sync every `every`; each that returns queues its start instant behind
/// every change it proved delivered.
async fn heartbeat(
    feed: Arc<ChangeFeed>,
    tx: tokio::sync::mpsc::Sender<Item>,
    every: Duration,
    within: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let t = Instant::now();
        if feed.sync(within).await.is_ok() && tx.try_send(Item::Synced(t)).is_err() {
            // A full queue: this marker is skipped (the freshness ages); no change is lost.
            tracing::debug!("HA: replica queue full; a heartbeat was skipped");
        }
    }
}

impl Core {
    /// Turns on standby reads: an unsealed standby serves KV reads from a replica at most
    /// `max_staleness` old (proven, see the module's header), kept current by the change feed
    /// `open` opens. Call before the first unseal, after [`Core::enable_ha`]; a second call is
    /// ignored.
    pub fn enable_standby_reads(&self, max_staleness: Duration, open: FeedOpener) {
        let _ = self.replica.set(Arc::new(Replica::new(max_staleness, open)));
    }

    /// Whether this node is a standby whose replica may serve a request now.
    pub fn standby_serves_reads(&self) -> bool {
        self.is_standby() && self.replica.get().is_some_and(|r| r.current().is_some())
    }

    /// The replica a standby serves `req` from; [`Error::Standby`] (forward it) when there is
    /// none, it is not proven fresh, or the request is not one a replica may answer.
    pub(crate) fn replica_for(&self, req: &Request) -> Result<Arc<Active>> {
        if !admits(req) || !self.is_standby() {
            return Err(Error::Standby);
        }
        self.replica.get().and_then(|r| r.current()).ok_or(Error::Standby)
    }

    /// Reads the keyring again (the active node rotated it), on a standby serving reads.
    pub(crate) async fn reload_keyring(&self) -> Result<()> {
        let _g = self.admin_lock.lock().await;
        if self.barrier.is_sealed() {
            return Err(Error::Sealed);
        }
        let held = self.barrier.hold_root_key()?;
        self.barrier.unseal_with_held_key(&held).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use coffer_storage::MemoryBackend;
    use serde_json::{Value, json};

    use super::*;
    use crate::backend::{BackendConfig, Registry};
    use crate::{CoreConfig, logical};

    struct Nothing;

    #[async_trait]
    impl LogicalBackend for Nothing {
        async fn handle(&self, _req: &BackendRequest<'_>) -> Result<Response> {
            Ok(Response::empty())
        }
    }

    async fn call(core: &Core, op: Operation, path: &str, body: Value, token: &str) -> Response {
        let data = logical::into_map(body);
        let req = Request::new(op, path).with_data(data).with_token(token);
        core.handle(req).await.unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[tokio::test]
    async fn a_replica_applies_the_changed_keys_of_tokens_and_policies() {
        let mut r = Registry::new();
        for kind in ["cubbyhole", "kv"] {
            r.register_secrets(
                kind,
                Arc::new(|_c: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
            );
        }
        let core = Core::new(Arc::new(MemoryBackend::new()), r, CoreConfig::default());
        let root = core.dev_setup(None).await.expect("dev").root_token.expose().to_owned();
        let policy =
            |p: &str| json!({"policy": format!("path \"{p}\" {{ capabilities = [\"read\"] }}")});
        call(&core, Operation::Update, "sys/policies/acl/p", policy("a"), &root).await;
        let made =
            call(&core, Operation::Update, "auth/token/create", json!({"policies": ["p"]}), &root)
                .await;
        let token = made.auth.expect("auth").client_token.expose().to_owned();

        let replica = core.build_replica(None).await.expect("replica");
        assert!(replica.replica);
        let shared = Shared::default();
        *shared.state.write().expect("state") = Some(replica.clone());
        let entry = replica.tokens.lookup_shared(&token).await.expect("lookup").expect("live");
        let caps = |a: &Active, path: &str| {
            a.acl_for(&entry).expect("acl").allows(path, crate::policy::Capabilities::READ)
        };
        assert!(caps(&replica, "a") && !caps(&replica, "b"));

        // Changed on the active side: the replica still holds the old policy until told.
        call(&core, Operation::Update, "sys/policies/acl/p", policy("b"), &root).await;
        assert!(caps(&replica, "a"), "the replica reloaded by itself");
        apply(&core, &shared, &["sys/policy/p".to_owned()]).await.expect("apply");
        assert!(!caps(&replica, "a") && caps(&replica, "b"));

        // Revoked: the cached entry goes when its key is named.
        call(&core, Operation::Update, "auth/token/revoke", json!({"token": token}), &root).await;
        let id = replica.tokens.id_of(&token);
        apply(&core, &shared, &[format!("sys/token/id/{id}")]).await.expect("apply");
        assert!(replica.tokens.lookup_shared(&token).await.expect("lookup").is_none());

        // The mount table: only a rebuild applies it.
        let r = apply(&core, &shared, &["core/mounts".to_owned()]).await;
        assert!(matches!(r, Err(Error::Refused(_))), "{r:?}");
    }
}
