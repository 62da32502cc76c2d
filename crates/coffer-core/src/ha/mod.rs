//! HA: the election loop of an unsealed node, and what being active or standby means for the
//! core. A node in HA mode that is unsealed is a *standby* (its barrier open, no [`Active`]
//! state, every request but the public `sys/` ones and the KV reads its read replica may
//! answer answered "standby") until it takes the storage's lock; it then runs the full bring-up (keyring reloaded from storage, token store,
//! policies, mounts, audit, leases due and interrupted revocations) and is *active*.
//!
//! Timing, with `ttl` the lock's TTL on the database's clock:
//! - a standby tries to take the lock every [`poll_interval`] (`ttl/5`, at most 1 s);
//! - the active renews every `ttl/5`; each successful renewal sent at local instant `t` makes
//!   the node's own deadline `t + ttl - ttl/4`. The database's expiry is at least `t + ttl`
//!   (its clock read the renewal after `t`), so the node stops acting as active (its fence is
//!   cleared, its state dropped) at least `ttl/4` before another node can take the lock by
//!   expiry, without asking the database. A renewal refused, failed or still unanswered at
//!   the deadline ends the leadership then.
//! - A process paused past its deadline (SIGSTOP, a long GC-like stall) may resume with
//!   requests in flight before this loop runs: their writes carry the old epoch and the
//!   database refuses them once another node leads (storage fencing), so they fail rather
//!   than overwrite the new leader's data.
//!
//! Forwarding of a standby's requests to the active node is the binary's (`cluster.rs`); the
//! read replica a standby answers KV reads from, and its staleness bound, are [`replica`]'s.
//!
//! Not done: a storage read cache on HA nodes (every storage read goes to PostgreSQL); the
//! active node's in-memory state is loaded fresh at each activation.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use coffer_storage::ha::{Advert, HaLock, LeaderInfo};
use tokio::sync::Notify;

use crate::core::Core;

pub mod replica;

/// How often a standby tries to take the lock, and the active renews it.
pub(crate) fn poll_interval(ttl: Duration) -> Duration {
    (ttl / 5).min(Duration::from_secs(1))
}

fn renew_interval(ttl: Duration) -> Duration {
    ttl / 5
}

/// How long before the database's expiry the active gives up.
fn margin(ttl: Duration) -> Duration {
    ttl / 4
}

/// How long a node that stepped down (`sys/step-down`) waits before contending again, so that
/// another node takes over (Vault waits as well).
const STEP_DOWN_PAUSE: Duration = Duration::from_secs(10);

/// This node's HA role, for `sys/health`, `sys/leader` and `sys/ha-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sealed, or unsealed and not yet contending.
    Idle,
    Standby,
    Active {
        epoch: i64,
        since: SystemTime,
    },
}

/// HA state of a core (present when the storage offers a lock).
pub(crate) struct Ha {
    pub(crate) lock: Arc<dyn HaLock>,
    pub(crate) advert: Advert,
    role: Mutex<Role>,
    /// The leader as last read by the loop (each poll of a standby; itself when active), so
    /// that `sys/leader` and forwarding never queue on the lock's connection.
    leader: Mutex<Option<LeaderInfo>>,
    /// Wakes the loop: a seal (stop) or a step-down.
    wake: Notify,
    stop: std::sync::atomic::AtomicBool,
    step_down: std::sync::atomic::AtomicBool,
    running: std::sync::atomic::AtomicBool,
}

impl Ha {
    pub(crate) fn new(lock: Arc<dyn HaLock>, advert: Advert) -> Self {
        Self {
            lock,
            advert,
            role: Mutex::new(Role::Idle),
            leader: Mutex::new(None),
            wake: Notify::new(),
            stop: Default::default(),
            step_down: Default::default(),
            running: Default::default(),
        }
    }

    /// The node is sealing (its loop is told to end).
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn role(&self) -> Role {
        self.role.lock().map(|r| *r).unwrap_or(Role::Idle)
    }

    /// The leader as last seen (at most one poll interval old).
    pub(crate) fn leader(&self) -> Option<LeaderInfo> {
        self.leader.lock().ok().and_then(|l| l.clone())
    }

    fn set_leader(&self, l: Option<LeaderInfo>) {
        if let Ok(mut g) = self.leader.lock() {
            *g = l;
        }
    }

    fn set_role(&self, r: Role) {
        if let Ok(mut g) = self.role.lock() {
            *g = r;
        }
    }

    /// Asks the loop to give up leadership (it then waits [`STEP_DOWN_PAUSE`] before
    /// contending again). `false` when this node is not active.
    pub(crate) fn request_step_down(&self) -> bool {
        if !matches!(self.role(), Role::Active { .. }) {
            return false;
        }
        self.step_down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
        true
    }
}

/// Starts the election loop of an unsealed core (once; a running loop is left alone).
pub(crate) fn start(core: &Arc<Core>, ha: &Arc<Ha>) {
    use std::sync::atomic::Ordering::SeqCst;
    ha.stop.store(false, SeqCst);
    if ha.running.swap(true, SeqCst) {
        return;
    }
    ha.set_role(Role::Standby);
    tokio::spawn(run(Arc::downgrade(core), ha.clone()));
}

/// Ends the loop (at seal); leadership, if held, is released by the loop itself.
pub(crate) fn stop(ha: &Ha) {
    ha.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    ha.wake.notify_one();
}

async fn run(core: Weak<Core>, ha: Arc<Ha>) {
    use std::sync::atomic::Ordering::SeqCst;
    let ttl = ha.lock.ttl();
    let mut last_heartbeat: Option<Instant> = None;
    loop {
        if ha.stop.load(SeqCst) || core.strong_count() == 0 {
            break;
        }
        if last_heartbeat.is_none_or(|t| t.elapsed() >= renew_interval(ttl)) {
            last_heartbeat = Some(Instant::now());
            if let Err(e) =
                tokio::time::timeout(ttl / 2, ha.lock.heartbeat(&ha.advert)).await.unwrap_or_else(
                    |_| Err(coffer_storage::Error::Backend("heartbeat timed out".into())),
                )
            {
                tracing::debug!(error = %e, "HA heartbeat failed");
            }
        }
        let t0 = Instant::now();
        let tried = tokio::time::timeout(ttl / 2, ha.lock.try_acquire(&ha.advert)).await;
        match tried {
            Ok(Ok(Some(epoch))) => {
                let deadline = t0 + ttl - margin(ttl);
                lead(&core, &ha, epoch, deadline).await;
                ha.set_role(Role::Standby);
                if ha.step_down.swap(false, SeqCst) && !ha.stop.load(SeqCst) {
                    follow_without_contending(&ha, STEP_DOWN_PAUSE).await;
                }
                continue;
            }
            Ok(Ok(None)) => match tokio::time::timeout(ttl / 2, ha.lock.leader()).await {
                Ok(Ok(l)) => ha.set_leader(l),
                Ok(Err(e)) => tracing::debug!(error = %e, "HA: cannot read the leader"),
                Err(_) => tracing::debug!("HA: reading the leader timed out"),
            },
            Ok(Err(e)) => tracing::warn!(error = %e, "HA: cannot contend for the lock"),
            Err(_) => tracing::warn!("HA: contending for the lock timed out"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll_interval(ttl)) => {},
            _ = ha.wake.notified() => {},
        }
    }
    ha.set_role(Role::Idle);
    ha.running.store(false, SeqCst);
}

/// After a step-down: for `pause`, this node does not contend for the lock, but it still
/// reads who leads (each poll interval, and at once when a forward finds the leader gone), so
/// requests through it reach the new active node instead of a 503 for the whole pause.
async fn follow_without_contending(ha: &Ha, pause: Duration) {
    use std::sync::atomic::Ordering::SeqCst;
    let ttl = ha.lock.ttl();
    let until = Instant::now() + pause;
    while !ha.stop.load(SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(poll_interval(ttl).min(left)) => {},
            _ = ha.wake.notified() => {},
        }
        match tokio::time::timeout(ttl / 2, ha.lock.leader()).await {
            Ok(Ok(l)) => ha.set_leader(l),
            Ok(Err(e)) => tracing::debug!(error = %e, "HA: cannot read the leader"),
            Err(_) => tracing::debug!("HA: reading the leader timed out"),
        }
    }
}

/// Holds leadership under `epoch` until it is lost, given up, or the node seals.
async fn lead(core: &Weak<Core>, ha: &Ha, epoch: i64, mut deadline: Instant) {
    use std::sync::atomic::Ordering::SeqCst;
    let ttl = ha.lock.ttl();
    let Some(c) = core.upgrade() else {
        let _ = ha.lock.release(epoch).await;
        return;
    };
    tracing::info!(epoch, "HA: acquired the lock; becoming active");
    // The bring-up races the deadline like everything else the active does.
    let up = tokio::time::timeout_at(deadline.into(), c.become_active()).await;
    match up {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "HA: bring-up as active failed; releasing the lock");
            c.become_standby();
            let _ = ha.lock.release(epoch).await;
            return;
        }
        Err(_) => {
            tracing::error!("HA: bring-up as active outlasted the lock; stepping down");
            ha.lock.step_down_now();
            c.become_standby();
            return;
        }
    }
    drop(c);
    let since = SystemTime::now();
    ha.set_leader(Some(LeaderInfo {
        node_id: ha.lock.node_id().to_owned(),
        epoch,
        advert: ha.advert.clone(),
        acquired_at: since,
        live: true,
    }));
    ha.set_role(Role::Active { epoch, since });
    let why = loop {
        let next = (Instant::now() + renew_interval(ttl)).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {},
            _ = ha.wake.notified() => {},
        }
        if ha.stop.load(SeqCst) {
            break "sealing";
        }
        if ha.step_down.load(SeqCst) {
            break "step-down requested";
        }
        if Instant::now() >= deadline {
            break "lock not renewed in time";
        }
        let t = Instant::now();
        match tokio::time::timeout_at(deadline.into(), ha.lock.renew(epoch)).await {
            Ok(Ok(true)) => deadline = t + ttl - margin(ttl),
            Ok(Ok(false)) => break "lock lost (expired or taken)",
            Ok(Err(e)) => tracing::warn!(error = %e, "HA: lock renewal failed; retrying"),
            Err(_) => break "lock renewal unanswered at the deadline",
        }
    };
    // Writes stop first (the fence), then the state goes; the lock is released last.
    ha.lock.step_down_now();
    ha.set_leader(None);
    ha.set_role(Role::Standby);
    if let Some(c) = core.upgrade() {
        c.become_standby();
    }
    tracing::warn!(epoch, reason = why, "HA: no longer active");
    if (why == "sealing" || why == "step-down requested")
        && let Err(e) = tokio::time::timeout(ttl / 2, ha.lock.release(epoch))
            .await
            .unwrap_or_else(|_| Err(coffer_storage::Error::Backend("release timed out".into())))
    {
        tracing::warn!(error = %e, "HA: releasing the lock failed; it expires on its own");
    }
}

/// Where the seed of the cluster's TLS identity lives, inside the barrier.
const CLUSTER_SEED_PATH: &str = "core/cluster/seed";

impl Core {
    /// The 32-byte seed every node derives the cluster's certificate authority from (request
    /// forwarding over mutually authenticated TLS): only a node that opened the barrier has it.
    /// Made by the first active node; `Ok(None)` on a standby before that.
    pub async fn cluster_seed(
        &self,
    ) -> crate::logical::Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        if let Some(seed) = self.barrier.get(CLUSTER_SEED_PATH).await? {
            return Ok(Some(seed));
        }
        if self.active().is_err() {
            return Ok(None);
        }
        let seed = zeroize::Zeroizing::new(crate::random::random_bytes::<32>().to_vec());
        self.barrier.put(CLUSTER_SEED_PATH, &seed).await?;
        Ok(Some(seed))
    }

    /// The active node's advertised addresses, as this node's election loop last read them (at
    /// most one poll interval old); `None` without HA or while no node leads.
    pub fn leader_advert(&self) -> Option<Advert> {
        self.ha.get()?.leader().filter(|l| l.live).map(|l| l.advert)
    }

    /// A standby could not reach the active node it knows of: the election loop polls the
    /// lock (and learns the new leader) now instead of at its next interval.
    pub fn leader_unreachable(&self) {
        if let Some(ha) = self.ha.get() {
            ha.wake.notify_one();
        }
    }

    /// True on an unsealed HA standby: requests go to the active node.
    pub fn is_standby(&self) -> bool {
        self.ha.get().is_some_and(|h| h.role() == Role::Standby) && !self.barrier.is_sealed()
    }
}
