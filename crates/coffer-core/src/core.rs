//! The [`Core`]: bring-up (init, unseal, seal) and the one function every request goes through.

use std::sync::{Arc, RwLock, Weak};

use coffer_barrier::{Barrier, SealConfig, View};
use coffer_storage::Backend;
use zeroize::Zeroizing;

use crate::backend::{LogicalBackend, Registry};
use crate::chaos::EndReason;
use crate::logical::{Error, Operation, Result};
use crate::mount::{self, MountEntry, Route, Router, Table};
use crate::policy::Capabilities;
use crate::policy_store::PolicyStore;
use crate::secret::SecretString;
use crate::token::{ROOT_POLICY, TokenParams, TokenStore};
use crate::token_backend::TokenBackend;

pub use crate::config::CoreConfig;

pub struct InitResult {
    /// Unseal key shares; with auto-unseal, recovery key shares.
    pub keys: Vec<Zeroizing<Vec<u8>>>,
    pub root_token: SecretString,
    /// True when `keys` are recovery shares (auto-unseal).
    pub recovery: bool,
}

#[derive(Debug, Clone)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: u8,
    pub shares: u8,
    pub progress: usize,
    pub nonce: String,
    pub storage_type: &'static str,
    /// `shamir`, or the auto-unseal seal's type (`static`); `t`/`n` are then the recovery split.
    pub seal_type: String,
    /// A seal stanza on a Shamir storage: `unseal -migrate` is expected.
    pub migration: bool,
    /// The cluster's name and id, known only while unsealed (they live in the barrier).
    pub cluster: Option<ClusterInfo>,
}

/// Vault's cluster identity: a name (`vault-cluster-<8 hex>`) and a UUID, made once at the
/// first unseal and kept in the barrier, so they stay the same across restarts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    pub id: String,
}

crate::record!(ClusterInfo, "cluster info", 1);

/// Where [`ClusterInfo`] is kept, below the barrier.
const CLUSTER_INFO_KEY: &str = "sys/cluster/info";

impl ClusterInfo {
    async fn load_or_create(barrier: &Barrier) -> Result<Self> {
        if let Some(raw) = barrier.get(CLUSTER_INFO_KEY).await? {
            return crate::record::decode(&raw);
        }
        let id = crate::random::uuid_v4();
        let fresh = crate::random::uuid_v4();
        let info = Self { name: format!("vault-cluster-{}", &fresh[..8]), id };
        barrier.put(CLUSTER_INFO_KEY, &crate::record::encode(&info)?).await?;
        Ok(info)
    }
}

/// State that exists only while unsealed.
pub(crate) struct Active {
    pub(crate) audit: crate::audit::Broker,
    pub(crate) tokens: Arc<TokenStore>,
    pub(crate) policies: PolicyStore,
    /// Shared with the expiration manager, which finds a lease's engine through it.
    pub(crate) router: Arc<RwLock<Arc<Router>>>,
    pub(crate) leases: Arc<crate::lease::Expiration>,
    /// Event notifications; every subscription ends when this state goes (sealing).
    pub(crate) events: Arc<crate::events::EventBus>,
    /// Entities, aliases and groups (the `identity/` mount's store).
    pub(crate) identity: Arc<crate::identity::IdentityStore>,
    /// The root generation and the rekey under way, if any: sealing drops them with the rest.
    pub(crate) root_generation: tokio::sync::Mutex<Option<crate::sys::generate_root::Attempt>>,
    pub(crate) rekey: tokio::sync::Mutex<Option<crate::sys::rekey::Attempt>>,
    /// The recovery key rekey under way (`sys/rekey-recovery-key`), if any.
    pub(crate) rekey_recovery: tokio::sync::Mutex<Option<crate::sys::rekey::Attempt>>,
    /// The mount moves made since unseal (`sys/remount/status`).
    pub(crate) migrations: crate::sys::remount::Migrations,
    pub(crate) cluster: ClusterInfo,
    /// The liveness index of secret values, as the core writes and reads it (issue 20).
    pub(crate) leaks: crate::leaks::LeakIndex,
    /// An HA standby's read replica (`ha::replica`), not the active node's state: it writes
    /// nothing, issues no lease, runs no background task, and serves only the requests
    /// [`crate::ha::replica::serves`] admits.
    pub(crate) replica: bool,
}

impl Active {
    /// The ACL a token's request is judged by: its own policies, its entity's and its groups'
    /// (as the identity store is now), templated paths rendered for its entity.
    pub(crate) fn acl_for(
        &self,
        entry: &crate::token::TokenEntry,
    ) -> Result<Arc<crate::policy::Acl>> {
        match self.identity.token_identity(&entry.entity_id)? {
            None => self.policies.acl_templated(&entry.policies, None, &entry.meta, 0),
            Some(ident) => {
                let mut names = entry.policies.clone();
                names.extend(ident.policies);
                names.sort();
                names.dedup();
                self.policies.acl_templated(&names, Some(&ident.ctx), &entry.meta, ident.generation)
            }
        }
    }

    pub(crate) fn router(&self) -> Result<Arc<Router>> {
        self.router
            .read()
            .map(|r| r.clone())
            .map_err(|_| Error::Internal("router lock poisoned".into()))
    }
}

#[derive(Default)]
struct UnsealProgress {
    nonce: String,
    shares: Vec<Zeroizing<Vec<u8>>>,
}

pub struct Core {
    pub(crate) barrier: Arc<Barrier>,
    pub(crate) config: CoreConfig,
    pub(crate) registry: Registry,
    active: RwLock<Option<Arc<Active>>>,
    unseal: tokio::sync::Mutex<UnsealProgress>,
    /// Serializes mount-table and seal-state changes.
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    initialized: std::sync::atomic::AtomicBool,
    pub(crate) login_limiter: crate::ratelimit::LoginLimiter,
    /// Chaos faults: in the core, not in [`Active`], so that they outlive a seal.
    pub(crate) chaos: crate::chaos::Chaos,
    /// Telemetry (`sys/metrics`): in the core, so that it outlives a seal.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Rate limit quotas, loaded at unseal.
    pub(crate) quotas: crate::quotas::Quotas,
    /// Detection rules over the audit stream: in the core, so its counters outlive a seal.
    pub(crate) detect: Arc<crate::detect::Detector>,
    /// For the tasks a fault starts (its deadline), which must not keep the core alive.
    pub(crate) me: Weak<Core>,
    /// Requests started: the expiration manager paces itself while it moves.
    pub(crate) foreground: Arc<std::sync::atomic::AtomicU64>,
    /// HA mode: the election state (set once, before the first unseal).
    pub(crate) ha: std::sync::OnceLock<Arc<crate::ha::Ha>>,
    /// HA standby reads: the read replica a standby serves from (set once, before the first
    /// unseal; absent with `ha_standby_reads = false`).
    pub(crate) replica: std::sync::OnceLock<Arc<crate::ha::replica::Replica>>,
    /// Auto-unseal: what wraps the unseal key (set once, before init or unseal).
    auto_seal: std::sync::OnceLock<Arc<dyn coffer_barrier::KeyWrapper>>,
    /// A disabled seal stanza: the seal to migrate away from, back to Shamir shares, or (with
    /// `auto_seal` set too) to that other seal.
    seal_from: std::sync::OnceLock<Arc<dyn coffer_barrier::KeyWrapper>>,
}

/// The capability a logical operation needs; `None` for help, which needs none (any live token
/// may read a path's documentation, as in Vault).
pub(crate) fn capability_for(op: Operation) -> Option<Capabilities> {
    Some(match op {
        Operation::Create => Capabilities::CREATE,
        Operation::Read => Capabilities::READ,
        Operation::Update => Capabilities::UPDATE,
        Operation::Patch => Capabilities::PATCH,
        Operation::Delete => Capabilities::DELETE,
        Operation::List => Capabilities::LIST,
        Operation::Help => return None,
    })
}

impl Core {
    pub fn new(backend: Arc<dyn Backend>, registry: Registry, config: CoreConfig) -> Arc<Self> {
        let chaos = crate::chaos::Chaos::new(config.chaos.clone());
        // Without chaos enabled no fault can be started (sys/chaos/* is refused), so the layer
        // that would fail storage during one is left out of every storage operation.
        let backend: Arc<dyn Backend> = if chaos.enabled() {
            Arc::new(crate::chaos::storage::FaultyBackend::new(backend, chaos.storage_down.clone()))
        } else {
            backend
        };
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let backend: Arc<dyn Backend> =
            Arc::new(crate::metrics::MeteredBackend::new(backend, metrics.clone()));
        let detect =
            Arc::new(crate::detect::Detector::new(config.detect.clone(), metrics.detect.clone()));
        Arc::new_cyclic(|me| Self {
            detect,
            me: me.clone(),
            foreground: Arc::default(),
            metrics,
            quotas: crate::quotas::Quotas::default(),
            chaos,
            barrier: Arc::new(Barrier::new(backend)),
            login_limiter: crate::ratelimit::LoginLimiter::new(config.login_limit),
            config,
            registry,
            active: RwLock::new(None),
            unseal: tokio::sync::Mutex::new(UnsealProgress::default()),
            admin_lock: tokio::sync::Mutex::new(()),
            initialized: std::sync::atomic::AtomicBool::new(false),
            ha: std::sync::OnceLock::new(),
            replica: std::sync::OnceLock::new(),
            auto_seal: std::sync::OnceLock::new(),
            seal_from: std::sync::OnceLock::new(),
        })
    }

    /// The HTTP client detection webhooks post with. Call before the first unseal; a second
    /// call is ignored.
    pub fn set_webhook_sender(&self, sender: Arc<dyn crate::detect::WebhookSender>) {
        let _ = self.detect.webhook.set(sender);
    }

    /// The detection pipeline's counters (`received`, `processed`, `dropped`, ...).
    pub fn detect_stats(&self) -> serde_json::Value {
        self.detect.stats.json(self.detect.config.queue_size)
    }

    /// A `seal` stanza with `disabled = true`: `unseal -migrate` with the recovery shares moves
    /// the storage back to Shamir shares (the recovery shares become the unseal shares), or,
    /// when [`Core::set_auto_seal`] gives another seal too, to that seal (the unseal key is
    /// wrapped anew; the recovery shares stay).
    pub fn set_migration_from_seal(&self, wrapper: Arc<dyn coffer_barrier::KeyWrapper>) {
        let _ = self.seal_from.set(wrapper);
    }

    /// Turns on auto-unseal with `wrapper` (a `seal` stanza). Call before init or unseal.
    pub fn set_auto_seal(&self, wrapper: Arc<dyn coffer_barrier::KeyWrapper>) {
        let _ = self.auto_seal.set(wrapper);
    }

    /// Auto-unseal: opens the barrier with the seal, without an operator. `Ok(false)` without a
    /// seal stanza or before init; `Ok(true)` once unsealed (or when it already was).
    pub async fn auto_unseal(&self) -> Result<bool> {
        let Some(w) = self.auto_seal.get() else { return Ok(false) };
        let _g = self.admin_lock.lock().await;
        if !self.barrier.is_sealed() {
            return Ok(true);
        }
        // A migration from the disabled seal is pending: the operator's recovery shares open it.
        if self.seal_from.get().is_some()
            && self.barrier.seal_config().await?.is_some_and(|c| c.seal_type != "shamir")
        {
            return Ok(false);
        }
        // Another node is initializing the storage: its init must finish before anyone (this
        // node included) unseals and takes the HA lock, which would fence its last writes.
        if self.barrier.auto_init_pending().await? {
            return Ok(false);
        }
        match self.barrier.unseal_auto(w.as_ref()).await {
            Ok(()) => {}
            Err(coffer_barrier::Error::NotInitialized) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = self.after_unseal().await {
            self.deactivate();
            return Err(e);
        }
        tracing::info!(seal = w.seal_type(), "core unsealed by its seal");
        Ok(true)
    }

    /// Turns on HA mode: once unsealed, this core is a standby until it takes `lock`, and
    /// active only while it holds it. Call before the first unseal; a second call is ignored.
    pub fn enable_ha(
        &self,
        lock: Arc<dyn coffer_storage::ha::HaLock>,
        advert: coffer_storage::ha::Advert,
    ) {
        let _ = self.ha.set(Arc::new(crate::ha::Ha::new(lock, advert)));
    }

    /// This node's HA role; `None` when HA is off.
    pub fn ha_role(&self) -> Option<crate::ha::Role> {
        self.ha.get().map(|h| h.role())
    }

    pub(crate) fn active(&self) -> Result<Arc<Active>> {
        let active =
            self.active.read().map_err(|_| Error::Internal("state lock poisoned".into()))?.clone();
        match active {
            Some(a) => Ok(a),
            None if self.ha.get().is_some() && !self.barrier.is_sealed() => Err(Error::Standby),
            None => Err(Error::Sealed),
        }
    }

    /// HA: the bring-up of a node that just took the lock. The keyring is read again first:
    /// the previous active may have rotated it since this node unsealed.
    pub(crate) async fn become_active(&self) -> Result<()> {
        // The replica goes first: it holds the audit files' locks, which the active takes.
        if let Some(r) = self.replica.get() {
            r.stop();
        }
        let _g = self.admin_lock.lock().await;
        let held = self.barrier.hold_root_key()?;
        self.barrier.unseal_with_held_key(&held).await?;
        self.activate().await?;
        // The cluster identity exists once a node led, so standbys can forward to it.
        drop(_g);
        self.cluster_seed().await.map(drop)
    }

    /// HA: drops the active state and keeps the barrier open (a standby), which then serves
    /// reads from a replica of its own when standby reads are on.
    pub(crate) fn become_standby(&self) {
        if let Ok(mut a) = self.active.write()
            && let Some(gone) = a.take()
        {
            gone.events.close_all(crate::events::EndReason::Sealed);
        }
        // Quotas are counted, and stored detection rules evaluated, by the active node only
        // (a rule deleted later would otherwise live on here).
        self.quotas.clear();
        self.detect.install_stored(Vec::new());
        self.start_replica();
    }

    /// Starts the read replica of an unsealed standby (when standby reads are on).
    pub(crate) fn start_replica(&self) {
        if let (Some(r), Some(me)) = (self.replica.get(), self.me.upgrade())
            && !self.barrier.is_sealed()
            && self.ha.get().is_some_and(|h| !h.stopping())
        {
            r.start(&me);
        }
    }

    /// After the barrier opened: active at once, or (HA) a standby that contends for the lock.
    async fn after_unseal(&self) -> Result<()> {
        match (self.ha.get(), self.me.upgrade()) {
            (Some(ha), Some(me)) => {
                crate::ha::start(&me, ha);
                self.start_replica();
                Ok(())
            }
            _ => self.activate().await.map(drop),
        }
    }

    /// `sys/step-down`: gives up leadership when this node is active in HA mode; nothing
    /// otherwise (as Vault).
    pub fn step_down(&self) -> bool {
        self.ha.get().is_some_and(|h| h.request_step_down())
    }

    /// The event bus's counters (zero while sealed).
    pub fn event_stats(&self) -> crate::events::EventStats {
        self.active().map(|a| a.events.stats()).unwrap_or_default()
    }

    pub fn is_sealed(&self) -> bool {
        match self.ha.get() {
            // A standby is unsealed without an active state.
            Some(_) => self.barrier.is_sealed(),
            None => self.active().is_err(),
        }
    }

    /// Whether `token` is a live token usable from `remote` (the HTTP layer words a refusal by
    /// policy differently from a refusal of the token, as Vault does). Never an error: a
    /// sealed server or a failed lookup says no.
    pub async fn token_is_live(&self, token: &str, remote: Option<std::net::IpAddr>) -> bool {
        let Ok(active) = self.active() else { return false };
        match active.tokens.lookup(token).await {
            Ok(Some(entry)) => crate::cidr::Cidr::any_contains(&entry.bound_cidrs, remote),
            _ => false,
        }
    }

    pub async fn is_initialized(&self) -> Result<bool> {
        // Once initialized, always initialized: health probes need not touch storage.
        if self.initialized.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(true);
        }
        let yes = self.barrier.is_initialized().await?;
        if yes {
            self.initialized.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(yes)
    }

    pub async fn seal_status(&self) -> Result<SealStatus> {
        let config = self.barrier.seal_config().await?;
        let progress = self.unseal.lock().await;
        Ok(SealStatus {
            initialized: config.is_some(),
            sealed: self.is_sealed(),
            threshold: config.as_ref().map(|c| c.secret_threshold).unwrap_or(0),
            shares: config.as_ref().map(|c| c.secret_shares).unwrap_or(0),
            progress: progress.shares.len(),
            nonce: progress.nonce.clone(),
            storage_type: self.barrier.backend_kind(),
            migration: (self.auto_seal.get().is_some()
                && config.as_ref().is_some_and(|c| c.seal_type == "shamir"))
                || (self.seal_from.get().is_some()
                    && config.as_ref().is_some_and(|c| c.seal_type != "shamir")),
            seal_type: match (&config, self.auto_seal.get()) {
                (Some(c), _) => c.seal_type.clone(),
                (None, Some(w)) => w.seal_type().to_owned(),
                (None, None) => "shamir".to_owned(),
            },
            cluster: self.active().ok().map(|a| a.cluster.clone()),
        })
    }

    /// `sys/init`: creates the keys and the root token, and leaves the server sealed.
    pub async fn initialize(&self, shares: u64, threshold: u64) -> Result<InitResult> {
        let _g = self.admin_lock.lock().await;
        let config = SealConfig::shamir(shares, threshold)?;
        let recovery = self.auto_seal.get().is_some();
        let keys = match self.auto_seal.get() {
            Some(w) => self.barrier.initialize_auto(&config, w.as_ref()).await?,
            None => self.barrier.initialize(&config).await?,
        };
        let result = async {
            let active = self.activate().await?;
            let root_token = self.create_root_token(&active, None).await?;
            Ok::<_, Error>(root_token)
        }
        .await;
        self.deactivate();
        let init = InitResult { keys, root_token: result?, recovery };
        if recovery {
            self.barrier.finish_auto_init().await?;
            // As Vault: an auto-unseal server is unsealed right after init.
            drop(_g);
            self.auto_unseal().await?;
        }
        Ok(init)
    }

    pub(crate) async fn create_root_token(
        &self,
        active: &Active,
        id: Option<SecretString>,
    ) -> Result<SecretString> {
        let (token, _) = active
            .tokens
            .create(
                None,
                TokenParams {
                    id,
                    policies: vec![ROOT_POLICY.to_owned()],
                    display_name: "root".into(),
                    path: "auth/token/root".into(),
                    orphan: true,
                    ..TokenParams::default()
                },
            )
            .await?;
        Ok(token)
    }

    /// `sys/unseal`: adds one key share; unseals once the threshold is reached.
    pub async fn submit_unseal_key(
        &self,
        key: Option<Zeroizing<Vec<u8>>>,
        reset: bool,
        migrate: bool,
    ) -> Result<SealStatus> {
        let mut opened = false;
        {
            let _g = self.admin_lock.lock().await;
            let config = self.barrier.seal_config().await?.ok_or(Error::NotInitialized)?;
            // A seal stanza on a Shamir storage: the shares unseal once more, with `migrate`,
            // and the storage moves to the seal.
            let migrating_in = config.seal_type == "shamir" && self.auto_seal.get().is_some();
            let migrating_out = config.seal_type != "shamir" && self.seal_from.get().is_some();
            let migrating = migrating_in || migrating_out;
            if key.is_some() && migrating != migrate {
                return Err(Error::invalid(if migrating_in {
                    "seal migration pending: this server has a seal stanza and its storage is sealed with Shamir shares; give the shares with migrate=true (coffer operator unseal -migrate)"
                } else if migrating_out {
                    "seal migration pending: the storage's seal stanza is disabled; give the recovery shares with migrate=true (coffer operator unseal -migrate)"
                } else {
                    "no seal migration is pending: migrate=true is for a Shamir storage on a server with a seal stanza"
                }));
            }
            if config.seal_type != "shamir" && key.is_some() && !migrating_out {
                return Err(Error::invalid(format!(
                    "this server auto-unseals with its {} seal: key shares (recovery keys included) cannot unseal it; restart it to unseal",
                    config.seal_type
                )));
            }
            let mut progress = self.unseal.lock().await;
            if reset {
                *progress = UnsealProgress::default();
            }
            if let Some(key) = key.filter(|_| self.is_sealed()) {
                if progress.shares.is_empty() {
                    progress.nonce = crate::random::uuid_v4();
                }
                // A share given twice counts once, as in Vault.
                if !progress.shares.iter().any(|s| crate::secret::ct_eq(s, &key)) {
                    progress.shares.push(key);
                }
                if progress.shares.len() >= config.secret_threshold as usize {
                    let shares = std::mem::take(&mut progress.shares);
                    progress.nonce.clear();
                    drop(progress);
                    match self.auto_seal.get().filter(|_| migrating_in) {
                        _ if migrating_out => {
                            let w = self.seal_from.get().ok_or_else(|| {
                                Error::Internal("seal migration without its seal".into())
                            })?;
                            if let Some(to) = self.auto_seal.get() {
                                self.barrier
                                    .migrate_between(&shares, w.as_ref(), to.as_ref())
                                    .await?;
                                tracing::warn!(
                                    from = w.seal_type(),
                                    to = to.seal_type(),
                                    "seal migrated from one seal to another: the unseal key is wrapped by the new seal, the recovery shares are unchanged; remove the disabled seal stanza"
                                );
                            } else {
                                self.barrier.migrate_to_shamir(&shares, w.as_ref()).await?;
                                tracing::warn!(
                                    seal = w.seal_type(),
                                    "seal migrated to Shamir shares: the recovery shares are now the unseal shares; remove the seal stanza"
                                );
                            }
                        }
                        Some(w) => {
                            self.barrier.migrate_to_auto(&shares, w.as_ref()).await?;
                            tracing::warn!(
                                seal = w.seal_type(),
                                "seal migrated from Shamir shares: the server now unseals itself, and the shares are recovery shares"
                            );
                        }
                        None => self.barrier.unseal_with_shares(&shares).await?,
                    }
                    if let Err(e) = self.after_unseal().await {
                        self.deactivate();
                        return Err(e);
                    }
                    tracing::info!("core unsealed");
                    opened = true;
                }
            }
        }
        if opened {
            // An operator's unseal ends a chaos seal early: the held key is dropped now.
            self.chaos_end_all(Some(coffer_wire::chaos::FaultKind::Seal), EndReason::Unsealed)
                .await;
        }
        self.seal_status().await
    }

    /// Unseals with a root key a chaos `seal` fault held (its end); nothing when open already.
    pub(crate) async fn unseal_held(&self, held: &coffer_barrier::HeldRootKey) -> Result<()> {
        let _g = self.admin_lock.lock().await;
        if !self.is_sealed() {
            return Ok(());
        }
        self.barrier.unseal_with_held_key(held).await?;
        if let Err(e) = self.after_unseal().await {
            self.deactivate();
            return Err(e);
        }
        *self.unseal.lock().await = UnsealProgress::default();
        tracing::info!("core unsealed at the end of a chaos seal fault");
        Ok(())
    }

    /// Unseals with the complete set of shares at once (dev mode, tests).
    pub async fn unseal_with(&self, keys: &[Zeroizing<Vec<u8>>]) -> Result<SealStatus> {
        let mut status = self.seal_status().await?;
        for k in keys {
            status = self.submit_unseal_key(Some(k.clone()), false, false).await?;
            if !status.sealed {
                break;
            }
        }
        Ok(status)
    }

    /// `sys/rotate`: serialized with seal and unseal, so a new term is never installed into a
    /// barrier that was sealed meanwhile.
    pub async fn rotate(&self) -> Result<coffer_barrier::TermInfo> {
        let _g = self.admin_lock.lock().await;
        Ok(self.barrier.rotate().await?)
    }

    pub async fn seal(&self) -> Result<()> {
        let _g = self.admin_lock.lock().await;
        if let Some(ha) = self.ha.get() {
            // The fence first: from here on no write of this node passes the database.
            ha.lock.step_down_now();
            crate::ha::stop(ha);
        }
        if let Some(r) = self.replica.get() {
            r.stop();
        }
        self.deactivate();
        *self.unseal.lock().await = UnsealProgress::default();
        tracing::info!("core sealed");
        Ok(())
    }

    fn deactivate(&self) {
        if let Ok(mut a) = self.active.write()
            && let Some(gone) = a.take()
        {
            gone.events.close_all(crate::events::EndReason::Sealed);
        }
        self.quotas.clear();
        self.barrier.seal();
    }

    /// Bring-up after the barrier opens, in order: token store, policies, mount tables, routes.
    async fn activate(&self) -> Result<Arc<Active>> {
        let active = self.build_state(None).await?;
        *self.active.write().map_err(|_| Error::Internal("state lock poisoned".into()))? =
            Some(active.clone());
        crate::leaks::spawn_backfill(&active);
        Ok(active)
    }

    /// An HA standby's read replica: [`Self::activate`]'s state, built the same way but
    /// writing nothing and starting nothing (see [`Active::replica`]). `previous`: the replica
    /// it replaces (its audit files' locks carry over).
    pub(crate) async fn build_replica(&self, previous: Option<&Active>) -> Result<Arc<Active>> {
        self.build_state(Some(previous)).await
    }

    /// `replica`: `None` for the active node's state, `Some(previous)` for a standby's replica.
    async fn build_state(&self, replica: Option<Option<&Active>>) -> Result<Arc<Active>> {
        let missing = |what: &str| {
            Error::Refused(format!("{what} is not written yet (no node has been active)"))
        };
        let expire_view = View::new(self.barrier.clone(), "sys/expire/");
        let leaks = crate::leaks::LeakIndex::new(self.barrier.clone(), "");
        let tokens = TokenStore::load(
            View::new(self.barrier.clone(), "sys/token/"),
            expire_view.clone(),
            leaks.clone(),
        )
        .await?;
        if replica.is_some() {
            tokens.set_read_only();
        }
        let policies = PolicyStore::load(View::new(self.barrier.clone(), "sys/policy/")).await?;
        let mut secrets = match mount::load_table(&self.barrier, Table::Secrets).await? {
            Some(t) => t,
            None if replica.is_some() => return Err(missing("the mount table")),
            None => {
                let t = vec![
                    MountEntry::new("cubbyhole/", "cubbyhole", "per-token private secret storage"),
                    MountEntry::new(
                        "sys/",
                        "system",
                        "system endpoints used for control, policy and debugging",
                    ),
                ];
                mount::save_table(&self.barrier, Table::Secrets, &t).await?;
                t
            }
        };
        let auth = match mount::load_table(&self.barrier, Table::Auth).await? {
            Some(t) => t,
            None if replica.is_some() => return Err(missing("the auth table")),
            None => {
                let t = vec![MountEntry::new("token/", "token", "token based credentials")];
                mount::save_table(&self.barrier, Table::Auth, &t).await?;
                t
            }
        };
        // The identity store is always mounted, as in Vault; a table from before it existed
        // gets its entry once.
        if !secrets.iter().any(|e| e.kind == "identity") {
            if replica.is_some() {
                return Err(missing("the identity mount"));
            }
            let mut entry = MountEntry::new("identity/", "identity", "identity store");
            // As Vault's: the OIDC endpoints may read the client's Authorization header.
            entry.config.passthrough_request_headers = vec!["Authorization".into()];
            secrets.push(entry);
            mount::save_table(&self.barrier, Table::Secrets, &secrets).await?;
        }
        let mut routes = Vec::new();
        let mut identity = None;
        for e in secrets.into_iter().filter(|e| e.kind != "system") {
            let builtin: Option<Arc<dyn LogicalBackend>> = if e.kind == "identity" {
                let view = View::new(self.barrier.clone(), format!("logical/{}/", e.uuid));
                let store =
                    crate::identity::IdentityStore::load(view, self.config.api_addr.clone())
                        .await?;
                identity = Some(store.clone());
                Some(Arc::new(crate::identity::IdentityBackend { store, core: self.me.clone() }))
            } else {
                None
            };
            // A replica builds only the engines it serves reads of; every other mount keeps
            // its place in the routing (longest prefix) and forwards.
            let builtin = match replica {
                Some(_) if !crate::ha::replica::serves_kind(&e.kind) => {
                    Some(crate::ha::replica::forwarded())
                }
                _ => builtin,
            };
            routes.push(self.route_for(Table::Secrets, e, builtin)?);
        }
        let identity = identity.ok_or_else(|| Error::Internal("identity mount missing".into()))?;
        let tb = Arc::new(TokenBackend::new(tokens.clone(), self.config.clone(), self.me.clone()));
        tb.set_identity(identity.clone());
        let token_backend: Arc<dyn LogicalBackend> = tb;
        for e in auth {
            let builtin = match replica {
                Some(_) => Some(crate::ha::replica::forwarded()),
                None => (e.kind == "token").then(|| token_backend.clone()),
            };
            routes.push(self.route_for(Table::Auth, e, builtin)?);
        }
        let router = Router::new(routes);
        tokens.set_cubbyhole(router.find_by_kind("cubbyhole").map(|r| r.view.clone()));
        let audit = match replica {
            Some(previous) => {
                // Quotas are counted on the active node: with any, a standby serves nothing.
                if crate::sys::any_quota_stored(self).await? {
                    return Err(Error::Refused(
                        "rate limit quotas exist; they are counted on the active node, so \
                         standbys forward every request"
                            .into(),
                    ));
                }
                // Detection runs on the active node, over the audit stream of what it serves: a
                // honeytoken read through a standby must reach it. With any rule in force,
                // standbys serve nothing.
                if self.detect.config.enabled
                    && (self.detect.config.rules.iter().any(|r| r.enabled)
                        || crate::sys::load_detect_rules(&self.barrier)
                            .await?
                            .iter()
                            .any(|r| r.enabled))
                {
                    return Err(Error::Refused(
                        "detection rules are in force; they run on the active node, so \
                         standbys forward every request"
                            .into(),
                    ));
                }
                crate::audit::Broker::load_replica(
                    &self.barrier,
                    self.chaos.audit_blocked.clone(),
                    self.detect.clone(),
                    previous.map(|p| &p.audit),
                )
                .await?
            }
            None => {
                self.detect.install_stored(crate::sys::load_detect_rules(&self.barrier).await?);
                self.detect.start(self.me.clone());
                crate::audit::Broker::load(
                    &self.barrier,
                    self.chaos.audit_blocked.clone(),
                    self.detect.clone(),
                )
                .await?
            }
        };
        let router = Arc::new(RwLock::new(Arc::new(router)));
        let (leases, cluster) = if replica.is_some() {
            let leases = crate::lease::Expiration::inert(
                expire_view,
                tokens.clone(),
                router.clone(),
                self.foreground.clone(),
                leaks.clone(),
            );
            let cluster = match self.barrier.get(CLUSTER_INFO_KEY).await? {
                Some(raw) => crate::record::decode(&raw)?,
                None => return Err(missing("the cluster identity")),
            };
            (leases, cluster)
        } else {
            // Last: from here on leases fall due, and revoking them needs the routes.
            let leases = crate::lease::Expiration::load(
                expire_view,
                tokens.clone(),
                router.clone(),
                self.foreground.clone(),
                leaks.clone(),
            )
            .await?;
            // Connected before expiry starts, so a token revoked by the first pass takes its
            // leases with it.
            let holder: std::sync::Weak<crate::lease::Expiration> = Arc::downgrade(&leases);
            tokens.set_leases(holder);
            leases.start();
            // A revocation that a stop cut short is finished, off the unseal path: its tokens
            // already refuse to authenticate, so nothing waits on it.
            let pending = tokens.clone();
            tokio::spawn(async move {
                match pending.resume_revocations().await {
                    Ok(()) => {}
                    // Sealed since (or this activation was `initialize`'s): the next one resumes.
                    Err(Error::Sealed | Error::Standby) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "finishing interrupted token revocations failed");
                    }
                }
            });
            crate::sys::load_quotas(self).await?;
            (leases, ClusterInfo::load_or_create(&self.barrier).await?)
        };
        let active = Arc::new(Active {
            audit,
            tokens,
            policies,
            router,
            leases,
            events: crate::events::EventBus::new(crate::events::SUBSCRIBER_QUEUE),
            identity,
            root_generation: tokio::sync::Mutex::new(None),
            rekey: tokio::sync::Mutex::new(None),
            rekey_recovery: tokio::sync::Mutex::new(None),
            migrations: Default::default(),
            cluster,
            leaks,
            replica: replica.is_some(),
        });
        Ok(active)
    }

    pub(crate) fn route_for(
        &self,
        table: Table,
        entry: MountEntry,
        builtin: Option<Arc<dyn LogicalBackend>>,
    ) -> Result<Arc<Route>> {
        self.build_route(table, entry, builtin, Default::default())
    }

    /// A route for `entry` served by `running`'s backend, with its requests in flight (a tune
    /// or a move: the backend and what it is doing carry on).
    pub(crate) fn route_keeping(
        &self,
        table: Table,
        entry: MountEntry,
        running: &Route,
    ) -> Result<Arc<Route>> {
        self.build_route(table, entry, Some(running.backend.clone()), running.gate.clone())
    }

    fn build_route(
        &self,
        table: Table,
        entry: MountEntry,
        builtin: Option<Arc<dyn LogicalBackend>>,
        gate: Arc<mount::Gate>,
    ) -> Result<Arc<Route>> {
        let stats = self.metrics.route(table.tag(), &table.full_path(&entry.path), &entry.kind);
        mount::build_route(
            stats,
            &self.barrier,
            &self.registry,
            table,
            entry,
            self.config.default_lease_ttl,
            self.config.max_lease_ttl,
            builtin,
            gate,
        )
    }

    /// `-dev`: initialize with one share, unseal, and make a root token (with `root_token_id` if
    /// given). Returns the unseal key and the root token.
    pub async fn dev_setup(&self, root_token_id: Option<SecretString>) -> Result<InitResult> {
        let init = self.initialize(1, 1).await?;
        self.unseal_with(&init.keys).await?;
        let root_token = match root_token_id {
            Some(id) => {
                let active = self.active()?;
                let old = active.tokens.lookup(init.root_token.expose()).await?;
                if let Some(old) = old {
                    active.tokens.revoke_tree(&old.id).await?;
                }
                self.create_root_token(&active, Some(id)).await?
            }
            None => init.root_token,
        };
        Ok(InitResult { keys: init.keys, root_token, recovery: init.recovery })
    }

    /// Mounts a secrets engine as an operator would through `sys/mounts` (used by `-dev`).
    pub async fn mount_secrets(
        &self,
        path: &str,
        kind: &str,
        description: &str,
        options: &[(&str, &str)],
    ) -> Result<()> {
        let mut entry = MountEntry::new(&mount::normalize_mount_path(path)?, kind, description);
        for (k, v) in options {
            entry.options.insert((*k).to_owned(), (*v).to_owned());
        }
        self.add_mount(Table::Secrets, entry).await
    }

    pub(crate) async fn add_mount(&self, table: Table, entry: MountEntry) -> Result<()> {
        let _g = self.admin_lock.lock().await;
        let active = self.active()?;
        let full = table.full_path(&entry.path);
        let reserved = ["sys/", "auth/", "cubbyhole/", "identity/"];
        if table == Table::Secrets && reserved.iter().any(|r| mount::conflicts(r, &full)) {
            return Err(Error::invalid(format!("cannot mount {full:?}")));
        }
        if table == Table::Auth && entry.kind == "token" {
            return Err(Error::invalid("token credential backend cannot be instantiated"));
        }
        let router = active.router()?;
        if let Some(r) = router.routes().find(|r| mount::conflicts(&r.full_path, &full)) {
            // Vault names the taken path as its own table writes it (`approle/`, not
            // `auth/approle/`).
            let taken = match table {
                Table::Auth => r.full_path.strip_prefix("auth/").unwrap_or(&r.full_path),
                Table::Secrets => &r.full_path,
            };
            return Err(Error::invalid(format!("path is already in use at {taken}")));
        }
        if matches!(entry.kind.as_str(), "system" | "token" | "cubbyhole" | "identity") {
            return Err(Error::invalid(format!("cannot mount another {:?} backend", entry.kind)));
        }
        let route = self.route_for(table, entry.clone(), None)?;
        let mut entries = mount::load_table(&self.barrier, table).await?.unwrap_or_default();
        entries.push(entry);
        mount::save_table(&self.barrier, table, &entries).await?;
        let mut routes: Vec<Arc<Route>> = router.routes().cloned().collect();
        routes.push(route);
        *active.router.write().map_err(|_| Error::Internal("router lock poisoned".into()))? =
            Arc::new(Router::new(routes));
        Ok(())
    }

    pub(crate) async fn remove_mount(&self, table: Table, path: &str) -> Result<()> {
        let _g = self.admin_lock.lock().await;
        let active = self.active()?;
        let path = mount::normalize_mount_path(path)?;
        let full = table.full_path(&path);
        let router = active.router()?;
        let mut entries = mount::load_table(&self.barrier, table).await?.unwrap_or_default();
        let Some(pos) = entries.iter().position(|e| e.path == path) else {
            // Vault answers success for a path with nothing mounted.
            return Ok(());
        };
        if entries[pos].kind == "token" {
            return Err(Error::invalid("token credential backend cannot be disabled"));
        }
        if matches!(entries[pos].kind.as_str(), "system" | "cubbyhole" | "identity") {
            return Err(Error::invalid(format!("cannot unmount {full:?}")));
        }
        // As Vault does: the mount leaves the router first, so it issues nothing more, then what
        // it handed out is taken back (the expiration manager still reaches it as retiring). A
        // revocation that fails puts the mount back, its leases kept to be retried.
        let removed = router.routes().find(|r| r.full_path == full).cloned();
        let others: Vec<Arc<Route>> =
            router.routes().filter(|r| r.full_path != full).cloned().collect();
        if let Some(r) = &removed {
            active.leases.retire(r.clone());
        }
        *active.router.write().map_err(|_| Error::Internal("router lock poisoned".into()))? =
            Arc::new(Router::new(others));
        let revoked = active.leases.revoke_prefix(&full, false).await;
        if let Some(r) = &removed {
            active.leases.forget_retired(&r.entry.uuid);
        }
        if let Err(e) = revoked {
            *active.router.write().map_err(|_| Error::Internal("router lock poisoned".into()))? =
                router.clone();
            return Err(Error::invalid(format!(
                "cannot unmount {full:?}: revoking its leases failed ({e}); they are retried, \
                 or revoke them with sys/leases/revoke-force/{full}"
            )));
        }
        entries.remove(pos);
        // Table first: if clearing the data fails midway, the mount is gone and its leftover
        // ciphertext is unreachable, never half-visible. The rate limit quotas on the mount go
        // with it, in the same write, as in OpenBao.
        // The marker that has the mount's liveness index entries swept goes in the same write.
        let quotas = crate::sys::quota_rules_on(self, &full);
        let (table_key, table_raw) = mount::table_record(table, &entries)?;
        let sweep = removed.as_ref().map(|r| crate::leaks::sweep_marker(&r.entry.uuid));
        let mut ops =
            vec![coffer_barrier::BatchOp::Put(table_key.to_owned(), table_raw.as_slice())];
        ops.extend(quotas.iter().map(|(k, _)| coffer_barrier::BatchOp::Delete(k.clone())));
        if let Some(k) = &sweep {
            ops.push(coffer_barrier::BatchOp::Put(k.clone(), b"1"));
        }
        let root = View::new(self.barrier.clone(), "");
        View::batch_across(vec![(&root, ops)]).await?;
        if sweep.is_some() {
            crate::leaks::spawn_sweeps(&active);
        }
        for (_, name) in &quotas {
            self.quotas.delete_rule(name);
        }
        if let Some(r) = removed {
            r.view.clear().await?;
        }
        Ok(())
    }

    pub(crate) async fn tune_mount(
        &self,
        table: Table,
        path: &str,
        f: impl FnOnce(&mut MountEntry) -> Result<()>,
    ) -> Result<()> {
        let _g = self.admin_lock.lock().await;
        let active = self.active()?;
        let path = mount::normalize_mount_path(path)?;
        let mut entries = mount::load_table(&self.barrier, table).await?.unwrap_or_default();
        let entry = entries.iter_mut().find(|e| e.path == path).ok_or_else(|| {
            Error::invalid(format!(
                "tune of path {:?} failed: no mount entry found",
                table.full_path(&path)
            ))
        })?;
        f(entry)?;
        let updated = entry.clone();
        let router = active.router()?;
        let full = table.full_path(&path);
        let mut routes = Vec::new();
        for r in router.routes() {
            if r.full_path == full {
                // Keep the running backend (and its locks); only the mount settings it is
                // handed with each request change.
                routes.push(self.route_keeping(table, updated.clone(), r)?);
            } else {
                routes.push(r.clone());
            }
        }
        // Saved only once the new settings are known to load, so a bad tune cannot leave a
        // table that fails at the next unseal.
        mount::save_table(&self.barrier, table, &entries).await?;
        *active.router.write().map_err(|_| Error::Internal("router lock poisoned".into()))? =
            Arc::new(Router::new(routes));
        Ok(())
    }
}
