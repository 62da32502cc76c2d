//! The contract between an HA-capable storage backend and the core's election loop: a lock with
//! an expiry kept on the storage's own clock, a leadership epoch that grows by one at every
//! acquisition, and a [`Fence`] that makes the backend refuse the writes of any node that does
//! not hold the newest epoch.
//!
//! Guarantees (for a backend that implements [`HaLock`]): at most one holder at a time per the
//! storage's clock; [`HaLock::try_acquire`] returns a strictly larger epoch than any earlier
//! holder had; once a newer epoch exists, every write made through a backend whose fence holds
//! an older one fails with [`crate::Error::Fenced`] inside the write's own transaction, whatever
//! the writer's clocks or pauses.
//!
//! Not done here: the timing of renewals and step-downs (the core's election loop owns it).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::Result;

/// The epoch this node writes under: 0 while it holds no leadership. Shared between the lock,
/// which sets it, and the backend's write path, which sends it with every write.
#[derive(Debug, Default)]
pub struct Fence {
    epoch: AtomicI64,
}

impl Fence {
    pub fn new() -> Self {
        Self::default()
    }

    /// The epoch writes carry now (0: none held).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn hold(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// From now on writes carry no epoch, and the database refuses them once any node has led.
    pub fn clear(&self) {
        self.epoch.store(0, Ordering::SeqCst);
    }
}

/// What a node advertises about itself while it contends or leads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advert {
    /// The address clients reach this node's API at (`api_addr`).
    pub api_addr: String,
    /// The address other nodes reach it at (`cluster_addr`).
    pub cluster_addr: String,
    /// A name for `sys/ha-status` (the host name).
    pub hostname: String,
}

/// The current leader as the lock row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub node_id: String,
    pub epoch: i64,
    pub advert: Advert,
    pub acquired_at: SystemTime,
    /// False when the lock expired (or its holder's session ended) and nobody took it yet.
    pub live: bool,
}

/// One node that reported itself recently (`sys/ha-status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    pub advert: Advert,
    pub last_seen: SystemTime,
}

#[async_trait]
pub trait HaLock: Send + Sync + 'static {
    /// This node's id, unique per process start.
    fn node_id(&self) -> &str;
    /// How long a renewal keeps the lock, on the storage's clock.
    fn ttl(&self) -> Duration;
    /// Takes the lock when it is free (expired, released, or its holder's session ended) and
    /// returns the new epoch, already installed in the fence. `None`: someone else holds it.
    async fn try_acquire(&self, advert: &Advert) -> Result<Option<i64>>;
    /// Extends the lock held under `epoch` by [`HaLock::ttl`] from the storage's now. `false`:
    /// it was lost (expired or taken); the caller must step down.
    async fn renew(&self, epoch: i64) -> Result<bool>;
    /// Clears the fence, then gives the lock up so another node need not wait for its expiry.
    async fn release(&self, epoch: i64) -> Result<()>;
    /// Stops this node's writes at once (the fence), without talking to the storage.
    fn step_down_now(&self);
    /// The lock row, if any node ever led.
    async fn leader(&self) -> Result<Option<LeaderInfo>>;
    /// Records that this node is alive, for [`HaLock::nodes`].
    async fn heartbeat(&self, advert: &Advert) -> Result<()>;
    /// Nodes that sent a heartbeat within `within`.
    async fn nodes(&self, within: Duration) -> Result<Vec<NodeInfo>>;
}
