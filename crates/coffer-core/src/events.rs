//! Vault's event notifications on the server side: the bus that fans each published event out to
//! the subscribers whose event-type pattern matches, and the [`Subscription`] a WebSocket reads.
//!
//! Guarantees:
//! - Publishing never waits for a subscriber. Each has a bounded queue; one whose queue is full
//!   is disconnected (its stream ends with [`EndReason::Overflow`]), counted and logged: a slow
//!   or stalled subscriber costs writers nothing.
//! - An event reaches a subscriber only if, when it is delivered, the subscriber's token is still
//!   live (not revoked or expired, and used from an address it is bound to), still may `read`
//!   `sys/events/subscribe/<pattern>`, and may `read` one of the event's paths or holds Vault's
//!   `subscribe` capability there for the event's type. The token is also re-checked at least
//!   every [`RECHECK_EVERY`] without events; a check that fails ends the stream.
//! - Sealing ends every stream ([`EndReason::Sealed`]).
//!
//! Not here: the wire format (the binary's HTTP layer encodes through `coffer_api::events`), and
//! any delivery guarantee: as in Vault, events are best effort; a subscriber that reconnects
//! re-reads what it needs. Events hold paths and metadata only, never secret values (engines put
//! none in them, see [`crate::logical::event`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::core::Active;
use crate::logical::event::{Event, META_DATA_PATH, META_PATH};
use crate::mount::{Route, Table};
use crate::policy::Capabilities;

/// Events a subscriber may have waiting before it is disconnected as too slow.
pub const SUBSCRIBER_QUEUE: usize = 512;

/// The longest a subscription goes without re-checking its token when no event arrives.
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// The plugin an event came from (Vault's `plugin_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// `secret` or `auth`.
    pub mount_class: &'static str,
    pub mount_accessor: String,
    /// The mount's path, `secret/`.
    pub mount_path: String,
    /// The engine type, `kv`.
    pub plugin: String,
    /// The mount's `version` option (`2` for kv v2), empty when unset.
    pub version: String,
}

/// One event as published: what subscribers receive, shared between them.
pub struct Published {
    pub id: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    pub event_type: String,
    /// Vault's metadata, with `path` and `data_path` prefixed by the mount path.
    pub metadata: BTreeMap<String, String>,
    pub plugin: PluginInfo,
    /// Full paths; a token that may read one of them may see the event.
    readable_at: Vec<String>,
    /// The transport's encoding, made once for all subscribers.
    encoded: OnceLock<String>,
}

impl Published {
    /// The event encoded for the wire by `encode`, which runs once for all subscribers.
    pub fn encoded(&self, encode: impl FnOnce(&Published) -> String) -> &str {
        self.encoded.get_or_init(|| encode(self))
    }

    fn from_event(route: &Route, event: Event) -> Self {
        let gates = event.gates().into_iter().map(|g| format!("{}{g}", route.full_path)).collect();
        let mut metadata = event.metadata;
        for key in [META_PATH, META_DATA_PATH] {
            if let Some(p) = metadata.get_mut(key) {
                *p = format!("{}{p}", route.full_path);
            }
        }
        Self {
            id: crate::random::uuid_v4(),
            time: crate::time::rfc3339_nanos(SystemTime::now()),
            event_type: event.event_type,
            metadata,
            plugin: PluginInfo {
                mount_class: match route.table {
                    Table::Secrets => "secret",
                    Table::Auth => "auth",
                },
                mount_accessor: route.entry.accessor.clone(),
                mount_path: route.entry.path.clone(),
                plugin: route.entry.kind.clone(),
                version: route.entry.options.get("version").cloned().unwrap_or_default(),
            },
            readable_at: gates,
            encoded: OnceLock::new(),
        }
    }
}

impl fmt::Debug for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Published")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// Why a subscription's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The server was sealed (or is stopping).
    Sealed,
    /// The token was revoked, expired or used up, or is used from an address it is not bound to.
    TokenInvalid,
    /// The token may no longer read `sys/events/subscribe/<pattern>`.
    AccessLost,
    /// The subscriber did not keep up: its queue of this many events was full.
    Overflow { capacity: usize },
    /// A check could not be made (storage failure); the cause is logged.
    Internal,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Sealed => f.write_str("Coffer is sealed or stopping"),
            EndReason::TokenInvalid => f.write_str("the token was revoked or has expired"),
            EndReason::AccessLost => {
                f.write_str("permission denied: the token may no longer subscribe to these events")
            }
            EndReason::Overflow { capacity } => {
                write!(f, "subscriber too slow: {capacity} events were waiting for it")
            }
            EndReason::Internal => f.write_str("internal error"),
        }
    }
}

/// What the bus reports about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventStats {
    pub subscribers: usize,
    pub published: u64,
    /// Subscribers disconnected because their queue was full.
    pub overflow_disconnects: u64,
}

/// A subscriber as the bus holds it.
struct Entry {
    pattern: String,
    tx: mpsc::Sender<Arc<Published>>,
    ended: Arc<OnceLock<EndReason>>,
    /// For the log line when it is dropped; never the token.
    accessor: String,
}

pub(crate) struct EventBus {
    subscribers: Mutex<BTreeMap<u64, Entry>>,
    next_id: AtomicU64,
    published: AtomicU64,
    overflows: AtomicU64,
    capacity: usize,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            subscribers: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            published: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            capacity: capacity.max(1),
        })
    }

    /// Publishes what a handler of `route` reported; returns at once whatever subscribers do.
    pub(crate) fn publish(&self, route: &Route, events: Vec<Event>) {
        // Most writes happen with no subscriber: then an event is only counted. Building it (a
        // random id, a timestamp, the mount's names) cost a KV write about 5% of its
        // instructions. A subscriber that arrives meanwhile misses it, as it would have missed
        // an event published a moment before it subscribed (best effort, see the header).
        if self.subscribers.lock().map(|s| s.is_empty()).unwrap_or(true) {
            self.published.fetch_add(events.len() as u64, Ordering::Relaxed);
            return;
        }
        for e in events {
            self.send(Arc::new(Published::from_event(route, e)));
        }
    }

    fn send(&self, event: Arc<Published>) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let Ok(mut subs) = self.subscribers.lock() else { return };
        subs.retain(|_, s| {
            if !crate::glob::glob_match(&s.pattern, &event.event_type) {
                return true;
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                // Its subscription was dropped: nothing to tell.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = s.ended.set(EndReason::Overflow { capacity: self.capacity });
                    let n = self.overflows.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        accessor = %s.accessor,
                        event_type = %s.pattern,
                        queue = self.capacity,
                        overflow_disconnects = n,
                        "event subscriber disconnected: its queue was full (it reads too slowly)"
                    );
                    false
                }
            }
        });
    }

    fn subscribe(
        &self,
        pattern: &str,
        accessor: &str,
    ) -> (u64, mpsc::Receiver<Arc<Published>>, Arc<OnceLock<EndReason>>) {
        let (tx, rx) = mpsc::channel(self.capacity);
        let ended = Arc::new(OnceLock::new());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            pattern: pattern.to_owned(),
            tx,
            ended: ended.clone(),
            accessor: accessor.to_owned(),
        };
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.insert(id, entry);
        }
        (id, rx, ended)
    }

    fn unsubscribe(&self, id: u64) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.remove(&id);
        }
    }

    /// Ends every subscription with `reason` (sealing).
    pub(crate) fn close_all(&self, reason: EndReason) {
        if let Ok(mut subs) = self.subscribers.lock() {
            for s in subs.values() {
                let _ = s.ended.set(reason);
            }
            subs.clear();
        }
    }

    pub(crate) fn stats(&self) -> EventStats {
        EventStats {
            subscribers: self.subscribers.lock().map(|s| s.len()).unwrap_or(0),
            published: self.published.load(Ordering::Relaxed),
            overflow_disconnects: self.overflows.load(Ordering::Relaxed),
        }
    }
}

/// What [`Subscription::next`] yields.
#[derive(Debug)]
pub enum Delivery {
    Event(Arc<Published>),
    /// The stream is over; every later call says the same.
    End(EndReason),
}

/// One subscriber's stream of events, made by `sys/events/subscribe/<pattern>` once the request
/// passed the pipeline (token, ACL, audit). It holds the token's id (its salted hash), never the
/// token; dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    pattern: String,
    /// `sys/events/subscribe/<pattern>`, whose `read` the token must keep.
    endpoint: String,
    rx: mpsc::Receiver<Arc<Published>>,
    ended: Arc<OnceLock<EndReason>>,
    bus: Weak<EventBus>,
    active: Weak<Active>,
    token_id: String,
    remote_addr: Option<IpAddr>,
    recheck: Duration,
    /// When the token is next checked if no event comes first. A deadline, not a timeout per
    /// call: a transport that cancels `next` often (a client pinging) must not put it off.
    next_check: tokio::time::Instant,
    /// An event received and not yet delivered: kept across a cancelled [`Subscription::next`].
    pending: Option<Arc<Published>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.unsubscribe(self.id);
        }
    }
}

impl Subscription {
    /// Subscribes the token `token_id` (whose accessor is logged if it is dropped) to events
    /// whose type matches `pattern` (Vault's `*` glob).
    pub(crate) fn new(
        active: &Arc<Active>,
        token_id: &str,
        accessor: &str,
        remote_addr: Option<IpAddr>,
        pattern: &str,
    ) -> Self {
        let (id, rx, ended) = active.events.subscribe(pattern, accessor);
        Self {
            id,
            pattern: pattern.to_owned(),
            endpoint: format!("sys/events/subscribe/{pattern}"),
            rx,
            ended,
            bus: Arc::downgrade(&active.events),
            active: Arc::downgrade(active),
            token_id: token_id.to_owned(),
            remote_addr,
            recheck: RECHECK_EVERY,
            next_check: tokio::time::Instant::now() + RECHECK_EVERY,
            pending: None,
        }
    }

    /// The event-type pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The next event this subscriber may see, or why the stream is over. Waits for one;
    /// re-checks the token on every event and at least every [`RECHECK_EVERY`].
    ///
    /// Cancel-safe: an event received by a call that was dropped is delivered by the next one.
    pub async fn next(&mut self) -> Delivery {
        loop {
            if let Some(r) = self.ended.get() {
                return Delivery::End(*r);
            }
            if self.pending.is_none() {
                match tokio::time::timeout_at(self.next_check, self.rx.recv()).await {
                    Ok(Some(e)) => self.pending = Some(e),
                    // The bus is gone with the unsealed state.
                    Ok(None) => {
                        return Delivery::End(*self.ended.get().unwrap_or(&EndReason::Sealed));
                    }
                    // Quiet for a while: the token is checked all the same.
                    Err(_) => {}
                }
            }
            let checked = self.admit(self.pending.as_deref()).await;
            self.next_check = tokio::time::Instant::now() + self.recheck;
            match checked {
                Ok(true) => {
                    if let Some(e) = self.pending.take() {
                        return Delivery::Event(e);
                    }
                }
                Ok(false) => self.pending = None,
                Err(r) => {
                    self.pending = None;
                    let _ = self.ended.set(r);
                    return Delivery::End(r);
                }
            }
        }
    }

    /// Checks the token this often when no event comes (tests shorten it).
    #[cfg(test)]
    pub(crate) fn with_recheck(mut self, every: Duration) -> Self {
        self.recheck = every;
        self.next_check = tokio::time::Instant::now() + every;
        self
    }

    /// Re-checks the token, and whether it may see `event`.
    async fn admit(&self, event: Option<&Published>) -> Result<bool, EndReason> {
        let active = self.active.upgrade().ok_or(EndReason::Sealed)?;
        let entry = match active.tokens.lookup_id(&self.token_id).await {
            Ok(Some(e)) => e,
            Ok(None) => return Err(EndReason::TokenInvalid),
            Err(crate::Error::Sealed) => return Err(EndReason::Sealed),
            Err(e) => {
                tracing::error!(error = %e, "event subscription: the token could not be checked");
                return Err(EndReason::Internal);
            }
        };
        if !crate::cidr::Cidr::any_contains(&entry.bound_cidrs, self.remote_addr) {
            return Err(EndReason::TokenInvalid);
        }
        let acl = match active.acl_for(&entry) {
            Ok(a) => a,
            Err(crate::Error::PermissionDenied) => return Err(EndReason::AccessLost),
            Err(e) => {
                tracing::error!(error = %e, "event subscription: the token's policies could not be loaded");
                return Err(EndReason::Internal);
            }
        };
        if !acl.allows(&self.endpoint, Capabilities::READ) {
            return Err(EndReason::AccessLost);
        }
        let Some(event) = event else { return Ok(false) };
        Ok(event.readable_at.iter().any(|p| {
            acl.allows(p, Capabilities::READ) || acl.allows_subscribe(p, &event.event_type)
        }))
    }
}

#[cfg(test)]
mod tests;
