//! Server-side chaos faults (`sys/chaos/faults`): what runs, how each kind acts, and the
//! deadline that ends it.
//!
//! Guarantees: every lasting fault ends by its deadline inside the server, by a timer task
//! started with it (DESIGN invariant 10), whoever else ends it first (a `DELETE`, an operator
//! unseal); its start and its end are audit entries (type `chaos`) in the hash chain, the start
//! written before the fault acts and the end after it stopped acting. Requests to
//! `sys/chaos/*` are never touched by a fault (no latency, error, storage or audit failure), so
//! a fault can always be listed and removed while the server is unsealed. A `seal` fault holds
//! a copy of the root key in memory (zeroizing, never serialized) until it ends. A `host` fault
//! does nothing to the server: it is a host fault's window in the audit log and the list.
//! Not done: persistence. Faults live in memory only; a restart ends them all (a sealed server
//! then needs its unseal keys, as after any restart).

mod rotate;
pub(crate) mod scope;
pub(crate) mod storage;

pub(crate) use rotate::OnBehalf;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use coffer_barrier::HeldRootKey;
use coffer_wire::chaos::{Fault, FaultKind, FaultSpec};

use crate::core::{Active, Core};
use crate::logical::{Error, Result};
use crate::token::TokenEntry;

tokio::task_local! {
    static EXEMPT: bool;
}

/// Whether the running request is one to `sys/chaos/*`, which no fault touches.
pub(crate) fn exempt() -> bool {
    EXEMPT.try_with(|e| *e).unwrap_or(false)
}

/// Runs `f` (a request to `sys/chaos/*`) out of every fault's reach.
pub(crate) async fn exempted<F: Future>(f: F) -> F::Output {
    EXEMPT.scope(true, f).await
}

pub(crate) fn is_chaos_path(path: &str) -> bool {
    path == "sys/chaos" || path.starts_with("sys/chaos/")
}

/// The config file's `chaos` stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosConfig {
    /// Off by default: then `sys/chaos/*` does not exist (404).
    pub enabled: bool,
    /// The longest duration a fault may be given.
    pub max_duration: Duration,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self { enabled: false, max_duration: Duration::from_secs(3600) }
    }
}

/// Why a fault ended, as its end entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    Deadline,
    Removed,
    Unsealed,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::Deadline => "deadline",
            EndReason::Removed => "removed",
            EndReason::Unsealed => "unsealed",
        }
    }
}

struct Running {
    fault: Fault,
    timer: Option<tokio::task::AbortHandle>,
    /// `seal` only: what the server opens itself with at the deadline.
    held: Option<HeldRootKey>,
}

/// The faults running, and the switches the storage wrapper and the audit broker read.
pub(crate) struct Chaos {
    pub(crate) config: ChaosConfig,
    faults: Mutex<BTreeMap<String, Running>>,
    pub(crate) storage_down: Arc<AtomicBool>,
    pub(crate) audit_blocked: Arc<AtomicBool>,
    /// Any `latency` or `error` fault: requests need looking at.
    scoped: AtomicBool,
}

impl Chaos {
    pub(crate) fn new(config: ChaosConfig) -> Self {
        Self {
            config,
            faults: Mutex::new(BTreeMap::new()),
            storage_down: Arc::new(AtomicBool::new(false)),
            audit_blocked: Arc::new(AtomicBool::new(false)),
            scoped: AtomicBool::new(false),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Running>> {
        // A panic while holding this lock leaves a consistent map (every change is one insert
        // or remove), so the poison is not worth refusing to end faults over.
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The switches follow the map: called under its lock after every change.
    fn refresh(&self, map: &BTreeMap<String, Running>) {
        let any = |k: FaultKind| map.values().any(|r| r.fault.spec.kind == k);
        self.storage_down.store(any(FaultKind::StorageUnavailable), Ordering::Release);
        self.audit_blocked.store(any(FaultKind::AuditBlocked), Ordering::Release);
        self.scoped.store(any(FaultKind::Latency) || any(FaultKind::Error), Ordering::Release);
    }

    /// Oldest first.
    pub(crate) fn list(&self) -> Vec<Fault> {
        let mut faults: Vec<Fault> = self.lock().values().map(|r| r.fault.clone()).collect();
        faults.sort_by(|a, b| (&a.started_at, &a.id).cmp(&(&b.started_at, &b.id)));
        faults
    }

    pub(crate) fn get(&self, id: &str) -> Option<Fault> {
        self.lock().get(id).map(|r| r.fault.clone())
    }

    fn insert(&self, fault: Fault, held: Option<HeldRootKey>) {
        let mut map = self.lock();
        map.insert(fault.id.clone(), Running { fault, timer: None, held });
        self.refresh(&map);
    }

    fn set_timer(&self, id: &str, timer: tokio::task::AbortHandle) {
        match self.lock().get_mut(id) {
            Some(r) => r.timer = Some(timer),
            // Ended already (a very short fault): the timer has nothing left to do.
            None => timer.abort(),
        }
    }

    fn remove(&self, id: &str) -> Option<Running> {
        let mut map = self.lock();
        let r = map.remove(id);
        self.refresh(&map);
        r
    }

    fn ids_of(&self, kind: Option<FaultKind>) -> Vec<String> {
        self.lock()
            .values()
            .filter(|r| kind.is_none_or(|k| r.fault.spec.kind == k))
            .map(|r| r.fault.id.clone())
            .collect()
    }
}

/// `2026-12-05T04:17:45.123Z`.
fn rfc3339_millis(t: SystemTime) -> String {
    coffer_time::format_rfc3339(t, coffer_time::Fraction::Millis)
}

impl Core {
    /// Starts a fault: checks it, writes its start entry, makes it act, and (lasting kinds)
    /// starts the timer that ends it.
    pub(crate) async fn chaos_start(
        &self,
        active: &Arc<Active>,
        spec: FaultSpec,
        by: &OnBehalf<'_>,
    ) -> Result<Fault> {
        scope::check(&spec, self.chaos.config.max_duration)?;
        if spec.kind == FaultKind::AuditBlocked && !active.audit.has_devices().await {
            return Err(Error::invalid(
                "no audit device is enabled: an audit_blocked fault would block nothing",
            ));
        }
        let started = SystemTime::now();
        let duration = spec.duration.map(|d| d.0).unwrap_or_default();
        let fault = Fault {
            id: format!("fault-{}", crate::random::random_base62(16)),
            started_at: rfc3339_millis(started),
            expires_at: rfc3339_millis(started + duration),
            spec,
        };
        // Taken before the start entry, so a fault that cannot act leaves no entry behind.
        let held = match fault.spec.kind {
            FaultKind::Seal => Some(self.barrier.hold_root_key()?),
            _ => None,
        };
        // No entry, no fault: a fault that could not be recorded does not act.
        active.audit.log_chaos("start", &fault, None).await?;
        tracing::warn!(id = %fault.id, kind = fault.spec.kind.as_str(), duration_ms = duration.as_millis() as u64, "chaos fault started");
        match fault.spec.kind {
            // The host fault has acted already (or acts once): only its end is left to record.
            FaultKind::Host if fault.spec.one_shot() => {
                if let Err(e) = active.audit.log_chaos("end", &fault, Some("completed")).await {
                    tracing::error!(id = %fault.id, error = %e, "chaos fault end entry not written");
                }
                return Ok(fault);
            }
            FaultKind::RevokePrefix | FaultKind::Rotate => {
                let done = self.chaos_one_shot(active, &fault.spec, by).await;
                let reason = if done.is_ok() { "completed" } else { "failed" };
                if let Err(e) = active.audit.log_chaos("end", &fault, Some(reason)).await {
                    tracing::error!(id = %fault.id, error = %e, "chaos fault end entry not written");
                }
                done?;
                return Ok(fault);
            }
            FaultKind::Seal => {
                // Sealed before it is listed: a removal cannot slip in between and leave a
                // sealed server with nobody holding the key.
                self.seal().await?;
                self.chaos.insert(fault.clone(), held);
            }
            FaultKind::Latency
            | FaultKind::Error
            | FaultKind::StorageUnavailable
            | FaultKind::AuditBlocked
            | FaultKind::Host => self.chaos.insert(fault.clone(), None),
        }
        let me = self.me.clone();
        let id = fault.id.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if let Some(core) = me.upgrade() {
                core.chaos_end(&id, EndReason::Deadline).await;
            }
        });
        self.chaos.set_timer(&fault.id, timer.abort_handle());
        Ok(fault)
    }

    /// Ends a fault now; `false` when it is not running (ended already, or never was).
    pub(crate) async fn chaos_end(&self, id: &str, reason: EndReason) -> bool {
        let Some(running) = self.chaos.remove(id) else { return false };
        // The deadline's own timer is the caller then: aborting it would cut this short.
        if reason != EndReason::Deadline
            && let Some(t) = &running.timer
        {
            t.abort();
        }
        if let Some(held) = &running.held {
            self.chaos_reopen(held, &running.fault.id).await;
        }
        tracing::warn!(id, reason = reason.as_str(), "chaos fault ended");
        match self.active() {
            Ok(active) => {
                if let Err(e) =
                    active.audit.log_chaos("end", &running.fault, Some(reason.as_str())).await
                {
                    tracing::error!(id, error = %e, "chaos fault end entry not written");
                }
            }
            Err(_) => {
                tracing::error!(id, "chaos fault end entry not written: the server is sealed")
            }
        }
        true
    }

    /// Ends every fault (of `kind`, when given).
    pub(crate) async fn chaos_end_all(&self, kind: Option<FaultKind>, reason: EndReason) {
        for id in self.chaos.ids_of(kind) {
            self.chaos_end(&id, reason).await;
        }
    }

    /// A `seal` fault's end: unsealed with the held key, retried while it fails (storage may be
    /// out as well), until the server is open, by this or by an operator.
    async fn chaos_reopen(&self, held: &HeldRootKey, id: &str) {
        while self.is_sealed() {
            match self.unseal_held(held).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(id, error = %e, "chaos seal fault: unsealing failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The `latency` and `error` faults, applied to one request that passed the token, ACL
    /// and audit checks (so an injected error is audited as its answer).
    pub(crate) async fn chaos_inject(&self, path: &str, caller: Option<&TokenEntry>) -> Result<()> {
        if !self.chaos.scoped.load(Ordering::Acquire) || exempt() || is_chaos_path(path) {
            return Ok(());
        }
        let mut delay = Duration::ZERO;
        let mut error = None;
        for r in self.chaos.lock().values() {
            let s = &r.fault.spec;
            if !matches!(s.kind, FaultKind::Latency | FaultKind::Error)
                || !scope::in_scope(s, path, caller)
            {
                continue;
            }
            if let Some(l) = s.latency {
                let jitter = s.jitter.map(|j| j.0.mul_f64(scope::draw())).unwrap_or_default();
                delay += l.0 + jitter;
            }
            if s.kind == FaultKind::Error && error.is_none() && scope::hits(s.rate, scope::draw()) {
                let status = s.status.unwrap_or(503);
                error = Some(Error::Injected { status, fault: r.fault.id.clone() });
            }
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        error.map_or(Ok(()), Err)
    }

    async fn chaos_one_shot(
        &self,
        active: &Arc<Active>,
        spec: &FaultSpec,
        by: &OnBehalf<'_>,
    ) -> Result<()> {
        match spec.kind {
            FaultKind::RevokePrefix => {
                let prefix = spec.prefix.as_deref().unwrap_or("").trim_matches('/');
                active.leases.revoke_prefix(prefix, false).await
            }
            FaultKind::Rotate => self.chaos_rotate(active, spec, by).await,
            other => Err(Error::Internal(format!("{} is not a one-shot fault", other.as_str()))),
        }
    }
}
