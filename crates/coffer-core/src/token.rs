//! The token store: service tokens, kept only as salted HMAC-SHA256 hashes.
//!
//! Guarantees: the store never holds a token in cleartext (the entry is keyed by the hash, and
//! the token is not in it); an expired, used-up or revoked token never authenticates; revoking a
//! token revokes its descendants unless asked to orphan them; a child never outlives its parent.
//! Not here: which token may do what (the ACL), leases of secrets (the expiration manager).

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::hmac;
use coffer_barrier::{BatchOp, View};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::cidr::Cidr;
use crate::due::Due;
use crate::hex::hex;
use crate::logical::{Error, Result};
use crate::random::{now_ns, ordered_base62};
use crate::record;
use crate::secret::{SecretString, ct_eq};
use crate::time::{now_unix, rfc3339};

pub const ROOT_POLICY: &str = "root";
pub const DEFAULT_POLICY: &str = "default";
/// Prefix of Coffer service tokens (`coffer_wire::token_format`); Vault clients treat tokens
/// as opaque strings. Tokens made before that format (`cfs.` + 32 characters) keep working.
pub const TOKEN_PREFIX: &str = "cfs_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenEntry {
    /// Salted hash of the token: the storage key and the id other records refer to.
    pub id: String,
    pub accessor: String,
    pub parent: Option<String>,
    pub policies: Vec<String>,
    pub path: String,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    /// Uses left; 0 means unlimited.
    pub num_uses: u64,
    pub creation_time: u64,
    /// Seconds; 0 means the token never expires (root tokens).
    pub creation_ttl: u64,
    /// Unix seconds; 0 means never.
    pub expire_time: u64,
    pub explicit_max_ttl: u64,
    pub period: u64,
    pub renewable: bool,
    pub orphan: bool,
    pub entity_id: String,
    #[serde(default)]
    pub last_renewal_time: u64,
    /// The last use of a use-limited token has been taken; it is revoked after that request.
    #[serde(default)]
    pub spent: bool,
    /// Addresses the token may be used from; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_cidrs: Vec<Cidr>,
    /// Seconds from creation beyond which renewals do not go (a login role's `token_max_ttl`);
    /// 0: only the server's (and `explicit_max_ttl`'s) limit.
    #[serde(default)]
    pub max_ttl: u64,
    /// Its revocation has begun: it no longer authenticates and no child may be created under
    /// it, so the walk over its descendants sees every child it will ever have.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoking: bool,
    /// Where the token's liveness index entry is (relative to the index's view), removed with
    /// the token. Empty for tokens made before the index.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub leak_key: String,
    /// Nanoseconds since the epoch at creation, written (hex) before the id in the names of
    /// the token's path-index and parent-link keys, so that tokens created together sit
    /// together in storage's B-tree instead of at random places, and a group commit of many
    /// creations writes fewer pages (docs/performance.md). `None` for tokens created before:
    /// their names are the bare id. Only storage layout: nothing reads it as a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u64>,
}

/// What counting one use of a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Unlimited, or uses remain.
    Counted,
    /// This was the last use: revoke the token when the request is done.
    Last,
    /// No use was left.
    Exhausted,
}

impl TokenEntry {
    /// The id of the token's lease, as `sys/leases` knows it: `<creation path>/<token id>`.
    pub fn lease_id(&self) -> String {
        format!("{}/{}", self.path.trim_end_matches('/'), self.id)
    }

    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == ROOT_POLICY)
    }

    pub fn is_expired(&self, now: u64) -> bool {
        self.expire_time != 0 && now >= self.expire_time
    }

    pub fn ttl_remaining(&self, now: u64) -> u64 {
        if self.expire_time == 0 { 0 } else { self.expire_time.saturating_sub(now) }
    }

    /// The `auth` block answered when this token is issued or renewed.
    pub fn auth(&self, token: &SecretString) -> crate::logical::Auth {
        let meta: Map<String, Value> =
            self.meta.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        crate::logical::Auth {
            client_token: token.clone(),
            accessor: self.accessor.clone(),
            policies: self.policies.clone(),
            token_policies: self.policies.clone(),
            metadata: (!meta.is_empty()).then_some(meta),
            // The TTL granted by the issue or renewal that this block answers, not what is left
            // a moment later: a second boundary passing meanwhile must not shave a second off.
            lease_duration: if self.expire_time == 0 {
                0
            } else {
                self.expire_time.saturating_sub(self.last_renewal_time.max(self.creation_time))
            },
            renewable: self.renewable,
            entity_id: self.entity_id.clone(),
            token_type: "service".into(),
            orphan: self.orphan,
            mfa_requirement: None,
            num_uses: self.num_uses,
            identity_policies: None,
        }
    }

    /// Vault's token lookup shape. `token` is echoed as `id` only when the caller presented it.
    pub fn lookup_data(&self, token: Option<&str>, now: u64) -> Map<String, Value> {
        let expire = (self.expire_time != 0).then(|| rfc3339(self.expire_time));
        let meta: Map<String, Value> =
            self.meta.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        let mut m = json!({
            "accessor": self.accessor,
            "creation_time": self.creation_time,
            "creation_ttl": self.creation_ttl,
            "display_name": self.display_name,
            "entity_id": self.entity_id,
            "expire_time": expire,
            "explicit_max_ttl": self.explicit_max_ttl,
            "id": token.unwrap_or(""),
            "meta": if meta.is_empty() { Value::Null } else { Value::Object(meta) },
            "num_uses": self.num_uses,
            "orphan": self.orphan,
            "path": self.path,
            "policies": self.policies,
            "ttl": self.ttl_remaining(now),
            "type": "service",
        });
        // As Vault: only a token with a lifetime has a lease, and only a lease these fields.
        if self.expire_time != 0 {
            m["issue_time"] = json!(rfc3339(self.creation_time));
            m["renewable"] = json!(self.renewable);
        }
        if self.period > 0 {
            m["period"] = json!(self.period);
        }
        if !self.bound_cidrs.is_empty() {
            let c: Vec<String> = self.bound_cidrs.iter().map(Cidr::to_string).collect();
            m["bound_cidrs"] = json!(c);
        }
        // Made with a token role: its creation path names the role (`auth/token/create/<role>`,
        // a path only a role gives), which Vault shows as `role`.
        if let Some(role) = self
            .path
            .strip_prefix("auth/token/create/")
            .and_then(|rest| rest.split('/').next())
            .filter(|r| !r.is_empty())
        {
            m["role"] = json!(role);
        }
        if self.last_renewal_time > 0 {
            m["last_renewal_time"] = json!(self.last_renewal_time);
            m["last_renewal"] = json!(rfc3339(self.last_renewal_time));
        }
        match m {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

/// What the token store asks of the expiration manager, which keeps the leases tokens hold.
/// A trait, so that the store does not depend on the manager (which depends on the store).
#[async_trait::async_trait]
pub(crate) trait LeaseHolder: Send + Sync {
    /// Acts on a token's expiry when it falls due; `name` is the token's [`link_name`].
    fn offer_token(&self, at: u64, name: &str);
    /// Revokes the leases the token asked for; one that fails stays to be retried.
    async fn revoke_by_token(&self, token_id: &str) -> Result<()>;
}

/// What a new token is made of, after the caller's request has been validated.
#[derive(Debug, Default, Clone)]
pub struct TokenParams {
    /// A caller-chosen token (root only, and `-dev-root-token-id`).
    pub id: Option<SecretString>,
    /// Without `id`: mint a response-wrapping token (`cfw_`) instead of a service token.
    pub wrapping: bool,
    pub policies: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub display_name: String,
    pub num_uses: u64,
    pub ttl: u64,
    pub explicit_max_ttl: u64,
    pub period: u64,
    pub renewable: bool,
    pub orphan: bool,
    pub path: String,
    pub bound_cidrs: Vec<Cidr>,
    pub max_ttl: u64,
    /// The identity entity the token acts for; empty: none.
    pub entity_id: String,
}

#[derive(Serialize, Deserialize)]
struct AccessorEntry {
    accessor: String,
    id: String,
}

// Version 2 added `order`: the entry reads the same without it, but an earlier build must
// refuse these entries rather than use them, since it would not find the index entries named
// after it: refused, the token does not authenticate there. That does not make going back
// safe: an earlier build revoking a parent still drops the links to its new children without
// revoking them (docs/operations.md, "Upgrading").
crate::record!(TokenEntry, "token entry", 2);

crate::record!(AccessorEntry, "token accessor", 1);

pub struct TokenStore {
    view: View,
    /// The expiration manager's view, where a token's expiry index entry lives.
    expire: View,
    /// Told about new expiries, and asked to revoke a token's leases as the token goes.
    leases: std::sync::OnceLock<std::sync::Weak<dyn LeaseHolder>>,
    salt: hmac::Key,
    /// Serializes revocations and use-count updates so a token's last use is counted once.
    write_lock: Mutex<()>,
    /// Striped by parent id: creating a child takes the parent's stripe shared (siblings are
    /// created side by side, and share a group commit), marking the parent as being revoked
    /// takes it exclusively, so one of them sees the other (see [`TokenStore::revoke_tree`]).
    family_locks: Box<[tokio::sync::RwLock<()>]>,
    /// The cubbyhole mount's storage, whose `<token id>/` folder dies with the token.
    cubbyhole: std::sync::RwLock<Option<View>>,
    /// Live entries by id, so a request does not read and decrypt its token from storage.
    /// Every change to an entry goes through this store and updates the cache with storage;
    /// this node is the only writer of the token store.
    cache: std::sync::RwLock<TokenCache>,
    /// Every new token gets an entry in the liveness index, in its creation batch.
    leaks: crate::leaks::LeakIndex,
    /// A standby's read replica: lookups only; an expired token is reported as none instead
    /// of being revoked (the active node revokes it).
    read_only: std::sync::atomic::AtomicBool,
    /// This store among those loaded in this process: a connection's [`TokenMemo`] reuses an
    /// id only for the store that computed it.
    instance: u64,
}

/// Numbers each loaded [`TokenStore`] (see its `instance`).
static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Default)]
struct TokenCache {
    /// Shared, so that authenticating a request does not copy the entry (its strings and
    /// policy list) out of the cache. Keyed by ids, which are salted HMACs: uniformly random,
    /// so a fast hasher is as good as a keyed one here.
    map: crate::fast_map::FastMap<String, Arc<TokenEntry>>,
    /// Moves on with every change, see [`TokenStore::forget`].
    epoch: u64,
}

/// Beyond this many cached entries the cache starts over, bounding its memory.
const CACHE_LIMIT: usize = 100_000;

/// Stripes of [`TokenStore::family_locks`]: enough that unrelated parents rarely share one.
const FAMILY_STRIPES: usize = 64;

/// `revoking/<id>`: tokens whose revocation began; finished at the next unseal if the process
/// stopped half-way (a marked token never authenticates, so nobody else could finish it).
const REVOKING_PREFIX: &str = "revoking/";

/// Marks a store whose tokens all have their path and expiry index entries.
const INDEX_MARKER: &str = "index-v1";

/// How a token's entry in the expiry index changes when its expiry goes from `old` to `new`
/// (0: the token has none): the stale entry to delete and the entry to write.
struct ExpiryChange {
    delete: Option<String>,
    put: Option<(String, Vec<u8>)>,
}

impl ExpiryChange {
    /// `name`: the token's [`link_name`], which names its expiry entry too.
    fn new(name: String, old: u64, new: u64) -> Self {
        let put = (new != 0)
            .then(|| (crate::due::token_key(&name, new), Due::Token(name.clone()).encode(new)));
        let delete = (old != 0)
            .then(|| crate::due::token_key(&name, old))
            .filter(|k| put.as_ref().is_none_or(|(p, _)| p != k));
        Self { delete, put }
    }

    fn ops(&self) -> Vec<BatchOp<'_>> {
        let mut ops: Vec<BatchOp<'_>> =
            self.delete.iter().map(|k| BatchOp::Delete(k.clone())).collect();
        ops.extend(self.put.iter().map(|(k, v)| BatchOp::Put(k.clone(), v.as_slice())));
        ops
    }
}

/// The token's key in the index by creation path, which `revoke-prefix auth/...` walks.
fn path_key(e: &TokenEntry) -> String {
    let p = e.path.trim_matches('/');
    format!("path/{}/{}", if p.is_empty() { "unknown" } else { p }, LinkName(e))
}

/// The token's link from its parent, which revoking the parent walks.
fn parent_key(parent: &str, e: &TokenEntry) -> String {
    format!("parent/{parent}/{}", LinkName(e))
}

/// The name of the token's entries in the path index, under its parent and in the expiry
/// index: `<order>.<id>`, or the bare id for tokens created before [`TokenEntry::order`].
pub(crate) fn link_name(e: &TokenEntry) -> String {
    LinkName(e).to_string()
}

/// [`link_name`], written straight into the key that holds it.
struct LinkName<'a>(&'a TokenEntry);

impl std::fmt::Display for LinkName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.order {
            Some(order) => write!(f, "{order:016x}.{}", self.0.id),
            None => f.write_str(&self.0.id),
        }
    }
}

/// The token id in a name [`link_name`] made: ids have no `.`, so the last `.` ends the order.
pub(crate) fn link_id(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(_, id)| id)
}

/// Characters of an order part (`token_format::ORDER_LEN`) before a salted hash's 64.
const ORDERED_ID_LEN: usize = coffer_wire::token_format::ORDER_LEN + 64;

/// The bare hash a token of the current format was stored under before order parts, when `id`
/// is such a token's [`TokenStore::id_of`]: looked up when the ordered id is not there. The
/// two cannot name different tokens: both hold the hash of the same token.
pub(crate) fn legacy_id(id: &str) -> Option<&str> {
    (id.len() == ORDERED_ID_LEN).then(|| id.get(coffer_wire::token_format::ORDER_LEN..)).flatten()
}

/// Random characters of an accessor after its order part; accessors made before order parts
/// are 24 random characters.
const ACCESSOR_RANDOM_LEN: usize = 18;

/// A new accessor: an order part (`token_format::order_chars`) and 18 random characters
/// (about 107 bits), 26 in all.
fn new_accessor(order_ns: u64) -> String {
    ordered_base62(order_ns, ACCESSOR_RANDOM_LEN)
}

/// The order part of an accessor made by [`new_accessor`]; `None` for one made before (24
/// characters) or anything else.
fn accessor_order(accessor: &str) -> Option<&str> {
    let order = coffer_wire::token_format::ORDER_LEN;
    if accessor.len() != order + ACCESSOR_RANDOM_LEN
        || !accessor.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(&accessor[..order])
}

impl TokenStore {
    /// Loads the salt from `view`, creating it on first use. `expire` is the expiration
    /// manager's view, where token expiries are indexed.
    pub async fn load(
        view: View,
        expire: View,
        leaks: crate::leaks::LeakIndex,
    ) -> Result<Arc<Self>> {
        let salt = match view.get("salt").await? {
            Some(s) => s,
            None => {
                let fresh = crate::random::random_bytes::<32>();
                view.put("salt", &fresh).await?;
                zeroize::Zeroizing::new(fresh.to_vec())
            }
        };
        let store = Arc::new(Self {
            view,
            expire,
            leases: std::sync::OnceLock::new(),
            salt: hmac::Key::new(hmac::HMAC_SHA256, &salt),
            write_lock: Mutex::new(()),
            family_locks: (0..FAMILY_STRIPES).map(|_| tokio::sync::RwLock::new(())).collect(),
            cubbyhole: std::sync::RwLock::new(None),
            cache: std::sync::RwLock::new(TokenCache::default()),
            leaks,
            read_only: std::sync::atomic::AtomicBool::new(false),
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        });
        store.migrate_index().await?;
        Ok(store)
    }

    /// Tokens written before the path and expiry indexes existed get their entries, once.
    async fn migrate_index(&self) -> Result<()> {
        if self.view.get(INDEX_MARKER).await?.is_some() {
            return Ok(());
        }
        for id in self.view.list("id/").await? {
            let Some(e) = self.get_entry(&id).await? else { continue };
            let expiry = ExpiryChange::new(link_name(&e), 0, e.expire_time);
            View::batch_across(vec![
                (&self.view, vec![BatchOp::Put(path_key(&e), b"")]),
                (&self.expire, expiry.ops()),
            ])
            .await?;
        }
        self.view.put(INDEX_MARKER, b"1").await?;
        Ok(())
    }

    /// Makes this store a standby replica's: see [`TokenStore::read_only`]'s field.
    pub(crate) fn set_read_only(&self) {
        self.read_only.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A standby replica: the key below this store's view (`id/<id>`, ...) changed on the
    /// active node; a cached entry it names is dropped.
    pub(crate) fn invalidate(&self, key: &str) {
        if let Some(id) = key.strip_prefix("id/") {
            self.forget(id);
        }
    }

    /// Connects the expiration manager (at unseal, once both exist).
    pub(crate) fn set_leases(&self, leases: std::sync::Weak<dyn LeaseHolder>) {
        let _ = self.leases.set(leases);
    }

    fn leases(&self) -> Option<Arc<dyn LeaseHolder>> {
        self.leases.get().and_then(std::sync::Weak::upgrade)
    }

    /// Refuses a revocation by a store whose expiration manager is gone (sealed since, or the
    /// store of an earlier activation, like the one `initialize` makes and drops, whose task
    /// finishing interrupted revocations may run late): it would mark tokens the current
    /// store's cache still serves, and take them without their leases. A store never given one
    /// (a standby's replica) has none to revoke.
    fn current(&self) -> Result<()> {
        match self.leases.get() {
            Some(holder) if holder.strong_count() == 0 => Err(Error::Sealed),
            _ => Ok(()),
        }
    }

    fn offer_expiry(&self, e: &TokenEntry) {
        if e.expire_time != 0
            && let Some(l) = self.leases()
        {
            l.offer_token(e.expire_time, &link_name(e));
        }
    }

    /// `LIST sys/leases/lookup/auth/...`: the immediate children of a creation path.
    pub(crate) async fn list_path(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = self.view.list(&format!("path/{prefix}")).await?;
        for name in names.iter_mut().filter(|n| !n.ends_with('/')) {
            let id = link_id(name);
            if id.len() != name.len() {
                *name = id.to_owned();
            }
        }
        Ok(names)
    }

    /// A page of the tokens created at a path under `prefix` (a folder, `auth/approle/`):
    /// up to `limit` keys `<rest of the path>/<name>` after `after`, in order, where the
    /// token's id is [`link_id`] of the name.
    pub(crate) async fn scan_path(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        Ok(self.view.scan(&format!("path/{prefix}"), after, limit).await?)
    }

    pub fn set_cubbyhole(&self, view: Option<View>) {
        if let Ok(mut c) = self.cubbyhole.write() {
            *c = view;
        }
    }

    /// The cubbyhole folder of the token with this id.
    pub(crate) fn cubbyhole_of(&self, id: &str) -> Result<View> {
        let cubby = self.cubbyhole.read().ok().and_then(|c| c.clone());
        cubby
            .map(|c| c.sub_view(&format!("{id}/")))
            .ok_or_else(|| Error::Internal("the cubbyhole mount is missing".into()))
    }

    /// The salted hash under which a token (or accessor) is stored.
    pub fn hash(&self, value: &str) -> String {
        hex(hmac::sign(&self.salt, value.as_bytes()).as_ref())
    }

    /// The id `token` is stored under: its salted hash, after the token's order part when it
    /// has the current format (`token_format::order_of`), so that tokens minted together are
    /// stored together (docs/performance.md). A token minted before order parts has the same
    /// shape but was stored under its bare hash: see [`legacy_id`].
    pub fn id_of(&self, token: &str) -> String {
        let hash = self.hash(token);
        match coffer_wire::token_format::order_of(token) {
            Some(order) => {
                let mut id = String::with_capacity(order.len() + hash.len());
                id.push_str(order);
                id.push_str(&hash);
                id
            }
            None => hash,
        }
    }

    /// The storage key of the record that maps `accessor` to its token: after the accessor's
    /// order part for accessors made with one ([`new_accessor`]), so that they are stored
    /// together as well.
    fn accessor_key(&self, accessor: &str) -> String {
        let hash = self.hash(accessor);
        match accessor_order(accessor) {
            Some(order) => format!("accessor/{order}{hash}"),
            None => format!("accessor/{hash}"),
        }
    }

    fn cached(&self, id: &str) -> Option<Arc<TokenEntry>> {
        self.cache.read().ok()?.map.get(id).cloned()
    }

    /// Drops `id` from the cache after its stored entry changed, and moves the epoch on so a
    /// read that began before the change cannot put the old entry back.
    fn forget(&self, id: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.map.remove(id);
            c.epoch += 1;
        }
    }

    /// The stored entry, expired or not.
    pub(crate) async fn get_entry(&self, id: &str) -> Result<Option<TokenEntry>> {
        Ok(self.get_shared(id).await?.map(Arc::unwrap_or_clone))
    }

    /// [`Self::get_entry`] as the cache holds it.
    async fn get_shared(&self, id: &str) -> Result<Option<Arc<TokenEntry>>> {
        if let Some(e) = self.cached(id) {
            return Ok(Some(e));
        }
        let seen = self.cache.read().map(|c| c.epoch).unwrap_or(u64::MAX);
        match self.view.get(&format!("id/{id}")).await? {
            None => Ok(None),
            Some(raw) => {
                let e: Arc<TokenEntry> = Arc::new(record::decode(&raw)?);
                let mut retired = None;
                if let Ok(mut c) = self.cache.write()
                    && c.epoch == seen
                {
                    if c.map.len() >= CACHE_LIMIT {
                        retired = Some(std::mem::take(&mut c.map));
                    }
                    c.map.insert(e.id.clone(), e.clone());
                }
                // Freed outside the lock, which every request takes (see the lease module on
                // expiry's low-priority thread).
                drop(retired);
                Ok(Some(e))
            }
        }
    }

    /// [`Self::get_entry`], where a damaged entry counts as none: for revocation, which must get
    /// past it (an unreadable token never authenticates, and its keys are removed all the same).
    async fn get_entry_or_damaged(&self, id: &str) -> Result<Option<TokenEntry>> {
        match self.get_entry(id).await {
            Err(Error::Damaged(path)) => {
                tracing::warn!(path, "revoking a token whose stored entry is damaged");
                Ok(None)
            }
            other => other,
        }
    }

    /// The entry of a token that exists, live or with its revocation under way: for the revoke
    /// endpoints, so that retrying a revocation that failed part-way finishes it.
    pub(crate) async fn entry_for_revocation(&self, id: &str) -> Result<Option<TokenEntry>> {
        let e = self.get_entry_or_damaged(id).await?;
        Ok(e.filter(|e| ct_eq(e.id.as_bytes(), id.as_bytes())))
    }

    /// [`Self::entry_for_revocation`] by accessor.
    pub(crate) async fn accessor_for_revocation(
        &self,
        accessor: &str,
    ) -> Result<Option<TokenEntry>> {
        match self.id_of_accessor(accessor).await? {
            Some(id) => self.entry_for_revocation(&id).await,
            None => Ok(None),
        }
    }

    /// The token id an accessor stands for, if the accessor exists.
    async fn id_of_accessor(&self, accessor: &str) -> Result<Option<String>> {
        let Some(raw) = self.view.get(&self.accessor_key(accessor)).await? else {
            return Ok(None);
        };
        let acc: AccessorEntry = record::decode(&raw)?;
        Ok(ct_eq(acc.accessor.as_bytes(), accessor.as_bytes()).then_some(acc.id))
    }

    async fn put_entry(&self, e: &TokenEntry) -> Result<()> {
        let raw = record::encode(e)?;
        self.view.put(&format!("id/{}", e.id), &raw).await?;
        self.forget(&e.id);
        Ok(())
    }

    /// Creates a token; `parent` is `None` for orphans and the root token.
    pub async fn create(
        &self,
        parent: Option<&TokenEntry>,
        p: TokenParams,
    ) -> Result<(SecretString, TokenEntry)> {
        let (token, chosen) = match p.id {
            Some(id) => {
                if id.expose().is_empty() || id.expose().contains(['/', ' ']) {
                    return Err(Error::invalid(
                        "token id must not be empty or contain '/' or spaces",
                    ));
                }
                (id, true)
            }
            None => {
                let kind = match p.wrapping {
                    true => coffer_wire::token_format::TokenKind::Wrapping,
                    false => coffer_wire::token_format::TokenKind::Service,
                };
                (coffer_wire::token_format::mint(kind), false)
            }
        };
        let id = self.id_of(token.expose());
        // A minted token has about 131 random bits: it cannot meet an existing one, so only an
        // id the caller chose is looked up (a storage read that was a tenth of a creation's
        // instructions besides its batch), where it would be stored now and where a token of
        // that string minted before order parts was.
        if chosen {
            let legacy = legacy_id(&id);
            if self.get_entry(&id).await?.is_some()
                || matches!(legacy, Some(l) if self.get_entry(l).await?.is_some())
            {
                return Err(Error::invalid("cannot create a token with a duplicate ID"));
            }
        }
        let now = now_unix();
        // The parent as it is now, not as the request found it: under its stripe, so a
        // revocation that marks it either comes before this check (and the child is refused)
        // or after the child's parent link is stored (and its walk finds the child).
        let parent = parent.filter(|_| !p.orphan);
        let _family = match parent {
            Some(pe) => Some(self.family_lock(&pe.id).read().await),
            None => None,
        };
        let parent = match parent {
            Some(pe) => match self.get_entry(&pe.id).await? {
                Some(cur) if !cur.revoking && !cur.spent && !cur.is_expired(now) => Some(cur),
                _ => return Err(Error::PermissionDenied),
            },
            None => None,
        };
        let parent = parent.as_ref();
        let mut expire_time = match p.ttl {
            0 => 0,
            // TTLs are capped where they are parsed; this keeps an uncapped one from wrapping
            // into an expiry in the past.
            ttl => now
                .checked_add(ttl)
                .ok_or_else(|| Error::invalid(format!("token TTL of {ttl}s is too long")))?,
        };
        // A child never outlives its parent: its expiry is capped at the parent's.
        if let Some(parent) = parent
            && parent.expire_time != 0
            && (expire_time == 0 || expire_time > parent.expire_time)
        {
            expire_time = parent.expire_time;
        }
        let order = now_ns();
        let accessor = new_accessor(order);
        let target = match coffer_wire::token_format::is_valid(token.expose()) {
            Some(coffer_wire::token_format::TokenKind::Wrapping) => {
                crate::leaks::Target::WrappingToken { id: id.clone(), accessor: accessor.clone() }
            }
            _ => crate::leaks::Target::Token { id: id.clone(), accessor: accessor.clone() },
        };
        let leak = self.leaks.token(token.expose(), target).await?;
        let entry = TokenEntry {
            leak_key: leak.key().to_owned(),
            id: id.clone(),
            accessor: accessor.clone(),
            parent: parent.map(|e| e.id.clone()),
            policies: p.policies,
            path: p.path,
            meta: p.meta,
            display_name: p.display_name,
            num_uses: p.num_uses,
            creation_time: now,
            creation_ttl: if expire_time == 0 { 0 } else { expire_time - now },
            expire_time,
            explicit_max_ttl: p.explicit_max_ttl,
            period: p.period,
            renewable: p.renewable && expire_time != 0,
            orphan: parent.is_none(),
            entity_id: p.entity_id,
            last_renewal_time: 0,
            spent: false,
            order: Some(order),
            bound_cidrs: p.bound_cidrs,
            max_ttl: p.max_ttl,
            revoking: false,
        };
        let raw = record::encode(&entry)?;
        let acc = record::encode(&AccessorEntry { accessor: accessor.clone(), id: id.clone() })?;
        let mut ops = vec![
            BatchOp::Put(format!("id/{id}"), &raw),
            BatchOp::Put(self.accessor_key(&accessor), &acc),
            BatchOp::Put(path_key(&entry), b""),
        ];
        if let Some(parent) = &entry.parent {
            ops.push(BatchOp::Put(parent_key(parent, &entry), b""));
        }
        let expiry = ExpiryChange::new(link_name(&entry), 0, entry.expire_time);
        View::batch_across(vec![
            (&self.view, ops),
            (&self.expire, expiry.ops()),
            (self.leaks.view(), vec![leak.op()]),
        ])
        .await?;
        self.offer_expiry(&entry);
        Ok((token, entry))
    }

    /// The live entry for a presented token; expired tokens are revoked on sight.
    pub async fn lookup(&self, token: &str) -> Result<Option<TokenEntry>> {
        Ok(self.lookup_shared(token).await?.map(Arc::unwrap_or_clone))
    }

    /// [`Self::lookup`] without copying the entry out of the cache: for the check of every
    /// request's token.
    pub(crate) async fn lookup_shared(&self, token: &str) -> Result<Option<Arc<TokenEntry>>> {
        self.lookup_ordered_id(&self.id_of(token)).await
    }

    /// [`Self::lookup_id_shared`] for the [`Self::id_of`] of a presented token, and then for
    /// its [`legacy_id`] if it has one and nothing at all is stored under the first: an entry
    /// there that is revoked, spent, expired or damaged refuses the token, whatever the bare
    /// hash holds. An absence is cached by storage's read cache, so an older token costs a
    /// second lookup in memory.
    async fn lookup_ordered_id(&self, id: &str) -> Result<Option<Arc<TokenEntry>>> {
        match self.lookup_id_shared(id).await? {
            None => match self.legacy_if_absent(id).await? {
                Some(legacy) => self.lookup_id_shared(legacy).await,
                None => Ok(None),
            },
            found => Ok(found),
        }
    }

    /// [`legacy_id`] of `id` when nothing is stored under `id` itself.
    async fn legacy_if_absent<'a>(&self, id: &'a str) -> Result<Option<&'a str>> {
        let Some(legacy) = legacy_id(id) else { return Ok(None) };
        Ok(match self.get_shared(id).await {
            Ok(None) => Some(legacy),
            Ok(Some(_)) | Err(Error::Damaged(_)) => None,
            Err(e) => return Err(e),
        })
    }

    /// [`Self::entry_for_revocation`] for a presented token (see [`Self::lookup_ordered_id`]).
    pub(crate) async fn token_for_revocation(&self, token: &str) -> Result<Option<TokenEntry>> {
        let id = self.id_of(token);
        match self.entry_for_revocation(&id).await? {
            None => match self.legacy_if_absent(&id).await? {
                Some(legacy) => self.entry_for_revocation(legacy).await,
                None => Ok(None),
            },
            found => Ok(found),
        }
    }

    /// [`Self::lookup_shared`] for the token a client presented on a connection with `memo`:
    /// the salted hash is taken from the memo when the connection presented the same token
    /// last (see [`TokenMemo`]); the entry is looked up and checked as always.
    pub(crate) async fn lookup_presented(
        &self,
        token: &str,
        memo: Option<&TokenMemo>,
    ) -> Result<Option<Arc<TokenEntry>>> {
        match memo {
            Some(m) => {
                let id = m.id_of(self.instance, token, |t| self.id_of(t));
                self.lookup_ordered_id(&id).await
            }
            None => self.lookup_shared(token).await,
        }
    }

    pub async fn lookup_id(&self, id: &str) -> Result<Option<TokenEntry>> {
        Ok(self.lookup_id_shared(id).await?.map(Arc::unwrap_or_clone))
    }

    async fn lookup_id_shared(&self, id: &str) -> Result<Option<Arc<TokenEntry>>> {
        let entry = match self.get_shared(id).await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(None),
            // Its policies and limits are unknown: the token authenticates as nothing.
            Err(Error::Damaged(path)) => {
                tracing::error!(path, "a stored token entry is damaged; the token is refused");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if !ct_eq(entry.id.as_bytes(), id.as_bytes()) {
            return Ok(None);
        }
        if entry.spent || entry.revoking {
            return Ok(None);
        }
        if entry.is_expired(now_unix()) {
            if !self.read_only.load(std::sync::atomic::Ordering::SeqCst) {
                self.revoke_tree(&entry.id).await?;
            }
            return Ok(None);
        }
        Ok(Some(entry))
    }

    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Option<TokenEntry>> {
        match self.id_of_accessor(accessor).await? {
            Some(id) => self.lookup_id(&id).await,
            None => Ok(None),
        }
    }

    /// How many tokens are stored (one accessor each), for telemetry: expired tokens count
    /// until the expiration manager has revoked them, within about a second.
    pub(crate) async fn count(&self) -> Result<u64> {
        Ok(self.view.list("accessor/").await?.len() as u64)
    }

    pub async fn accessors(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for key in self.view.list("accessor/").await? {
            // Through lookup, so expired (and then revoked) or spent tokens are not listed.
            if let Some(raw) = self.view.get(&format!("accessor/{key}")).await?
                && let Ok(acc) = record::decode::<AccessorEntry>(&raw)
                && self.lookup_id(&acc.id).await?.is_some()
            {
                out.push(acc.accessor);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Moves every token created under the folder `from` (an auth mount's path,
    /// `auth/approle/`) to the same path under `to`, when the mount moves (`sys/remount`): its
    /// `path`, which names its lease id, and its entry in the index by path, in one batch per
    /// token, under the lock renewals and revocations take, so a token revoked meanwhile is not
    /// written back. Returns how many moved.
    pub(crate) async fn rename_path_prefix(&self, from: &str, to: &str) -> Result<u64> {
        let (from, to) = (from.trim_end_matches('/'), to.trim_end_matches('/'));
        let mut moved = 0;
        // Page by page (one page held), each after the last key of the one before: moved
        // tokens leave `from`, so every token is visited once.
        let prefix = format!("{from}/");
        let mut after: Option<String> = None;
        loop {
            let page = self.scan_path(&prefix, after.as_deref(), 500).await?;
            let Some(last) = page.last().cloned() else { break };
            for key in &page {
                // `<rest of the path>/<name>`: the name is the last segment.
                let id = link_id(key.rsplit('/').next().unwrap_or(key));
                if self.move_path(id, from, to).await? {
                    moved += 1;
                }
            }
            after = Some(last);
        }
        Ok(moved)
    }

    /// One token of [`Self::rename_path_prefix`]; whether it moved.
    async fn move_path(&self, id: &str, from: &str, to: &str) -> Result<bool> {
        {
            let _g = self.write_lock.lock().await;
            let Some(mut e) = self.get_entry(id).await? else { return Ok(false) };
            let Some(rest) = e.path.strip_prefix(from) else { return Ok(false) };
            if e.revoking || !(rest.is_empty() || rest.starts_with('/')) {
                return Ok(false);
            }
            let old_key = path_key(&e);
            e.path = format!("{to}{rest}");
            let raw = record::encode(&e)?;
            self.view
                .batch(vec![
                    BatchOp::Put(format!("id/{id}"), &raw),
                    BatchOp::Delete(old_key),
                    BatchOp::Put(path_key(&e), b""),
                ])
                .await?;
        }
        self.forget(id);
        Ok(true)
    }

    /// Counts one use of a limited-use token, atomically. The last use marks the token spent
    /// in storage before it is answered, so no concurrent request can take it again; the caller
    /// revokes a spent token once its request is finished.
    pub async fn use_token(&self, entry: &mut TokenEntry) -> Result<Use> {
        if entry.num_uses == 0 {
            return Ok(Use::Counted);
        }
        let _g = self.write_lock.lock().await;
        let Some(mut current) = self.get_entry(&entry.id).await? else {
            return Ok(Use::Exhausted);
        };
        if current.spent || current.revoking {
            return Ok(Use::Exhausted);
        }
        let outcome = if current.num_uses <= 1 {
            current.spent = true;
            Use::Last
        } else {
            current.num_uses -= 1;
            Use::Counted
        };
        self.put_entry(&current).await?;
        *entry = current;
        Ok(outcome)
    }

    fn family_lock(&self, id: &str) -> &tokio::sync::RwLock<()> {
        let h = id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        &self.family_locks[h % self.family_locks.len()]
    }

    /// Marks a token as being revoked, under its family stripe: once this returns, no child
    /// can be created under it, so listing its children afterwards finds all it will have.
    /// The `revoking/` index lets the next unseal finish a revocation that a crash cut short.
    pub(crate) async fn mark_revoking(&self, id: &str) -> Result<()> {
        let _family = self.family_lock(id).write().await;
        let _g = self.write_lock.lock().await;
        let Some(mut e) = self.get_entry_or_damaged(id).await? else { return Ok(()) };
        if e.revoking {
            return Ok(());
        }
        e.revoking = true;
        let raw = record::encode(&e)?;
        self.view
            .batch(vec![
                BatchOp::Put(format!("id/{id}"), &raw),
                BatchOp::Put(format!("{REVOKING_PREFIX}{id}"), b""),
            ])
            .await?;
        self.forget(id);
        Ok(())
    }

    /// Revokes a token and all of its descendants, and destroys their cubbyholes.
    ///
    /// Each token is marked as being revoked before its children are listed, parents before
    /// children: a child created concurrently is either refused (its parent was marked) or
    /// stored before the mark, and then listed. No token outlives a revoked parent, whatever
    /// the interleaving.
    pub async fn revoke_tree(&self, id: &str) -> Result<()> {
        self.current()?;
        // (token, the link that led to it): the link goes with the token even when its entry
        // is damaged and cannot name its parent.
        let mut stack = vec![(id.to_owned(), None)];
        let mut order = Vec::new();
        while let Some((cur, via)) = stack.pop() {
            self.mark_revoking(&cur).await?;
            for child in self.view.list(&format!("parent/{cur}/")).await? {
                let name = child.trim_end_matches('/');
                let link = format!("parent/{cur}/{name}");
                stack.push((link_id(name).to_owned(), Some(link)));
            }
            order.push((cur, via));
        }
        // Children first, so an interrupted revocation never leaves an orphaned live child.
        for (cur, via) in order.iter().rev() {
            self.revoke_one(cur, via.as_deref()).await?;
        }
        Ok(())
    }

    /// Revokes only this token; its children become orphans.
    pub async fn revoke_orphan(&self, id: &str) -> Result<()> {
        self.current()?;
        self.mark_revoking(id).await?;
        for name in self.view.list(&format!("parent/{id}/")).await? {
            let name = name.trim_end_matches('/');
            let child = link_id(name);
            {
                // Read and written under the lock that marks, renews and counts uses, so none
                // of those is lost, and a child revoked meanwhile is not written back.
                let _g = self.write_lock.lock().await;
                if let Some(mut e) = self.get_entry_or_damaged(child).await? {
                    e.parent = None;
                    e.orphan = true;
                    self.put_entry(&e).await?;
                }
            }
            self.view.delete(&format!("parent/{id}/{name}")).await?;
        }
        self.revoke_one(id, None).await
    }

    /// Finishes the revocations that were under way when the process stopped (at unseal).
    /// Each is tried; one that fails is logged and stays marked (it never authenticates) for
    /// the next unseal or a retried revoke.
    pub(crate) async fn resume_revocations(&self) -> Result<()> {
        self.current()?;
        for id in self.view.list(REVOKING_PREFIX).await? {
            let id = id.trim_end_matches('/');
            // revoke_tree of a token already gone removes what is left of it, its mark included.
            if let Err(e) = self.revoke_tree(id).await {
                if matches!(e, Error::Sealed | Error::Standby) {
                    return Err(e);
                }
                tracing::error!(error = %e, "finishing an interrupted token revocation failed");
            }
        }
        Ok(())
    }

    /// `via`: the parent's link (its key) that led the walk here, which goes too.
    async fn revoke_one(&self, id: &str, via: Option<&str>) -> Result<()> {
        // The leases it asked for go first, as in Vault; one that fails stays to be retried.
        if let Some(holder) = self.leases.get() {
            // Gone since `revoke_tree` checked: see `current`.
            let leases = holder.upgrade().ok_or(Error::Sealed)?;
            leases.revoke_by_token(id).await?;
        }
        // With the lock that renewals and use counts take, so neither can write back the entry
        // this deletes (a renewal that read it just before would otherwise revive the token).
        let _g = self.write_lock.lock().await;
        let entry = self.get_entry_or_damaged(id).await?;
        let mut ops = vec![
            BatchOp::Delete(format!("id/{id}")),
            BatchOp::Delete(format!("{REVOKING_PREFIX}{id}")),
        ];
        let link = match &entry {
            Some(e @ TokenEntry { parent: Some(parent), .. }) => Some(parent_key(parent, e)),
            _ => via.map(str::to_owned),
        };
        if let Some(link) = link {
            ops.push(BatchOp::Delete(link));
        }
        if let Some(e) = &entry {
            ops.push(BatchOp::Delete(self.accessor_key(&e.accessor)));
            ops.push(BatchOp::Delete(path_key(e)));
        }
        let expiry = ExpiryChange::new(
            entry.as_ref().map_or_else(|| id.to_owned(), link_name),
            entry.as_ref().map_or(0, |e| e.expire_time),
            0,
        );
        let leak = match entry.as_ref().map(|e| e.leak_key.as_str()) {
            Some(k) if !k.is_empty() => vec![BatchOp::Delete(k.to_owned())],
            _ => Vec::new(),
        };
        View::batch_across(vec![
            (&self.view, ops),
            (&self.expire, expiry.ops()),
            (self.leaks.view(), leak),
        ])
        .await?;
        self.forget(id);
        let cubby = self.cubbyhole.read().ok().and_then(|c| c.clone());
        if let Some(cubby) = cubby {
            cubby.sub_view(&format!("{id}/")).clear().await?;
        }
        Ok(())
    }

    /// Extends a token's TTL by `increment` seconds (or its original TTL), within its limits.
    pub async fn renew(
        &self,
        entry: &TokenEntry,
        increment: Option<u64>,
        max_ttl: u64,
    ) -> Result<TokenEntry> {
        let _g = self.write_lock.lock().await;
        let mut e = self.get_entry(&entry.id).await?.ok_or(Error::PermissionDenied)?;
        // Vault's texts: a token without a TTL has no lease at all.
        if e.expire_time == 0 {
            return Err(Error::invalid("invalid lease ID"));
        }
        if !e.renewable {
            return Err(Error::invalid("lease is not renewable"));
        }
        let now = now_unix();
        let mut ttl = if e.period > 0 { e.period } else { increment.unwrap_or(e.creation_ttl) };
        // A periodic token lives as long as it is renewed (as in Vault), unless it has an
        // explicit maximum; others stop at the system maximum from creation.
        let own_max = if e.max_ttl > 0 { max_ttl.min(e.max_ttl) } else { max_ttl };
        let cap = match (e.period > 0, e.explicit_max_ttl) {
            (true, 0) => None,
            (true, m) => Some(m),
            (false, 0) => Some(own_max),
            (false, m) => Some(own_max.min(m)),
        };
        if let Some(cap) = cap {
            let limit = e.creation_time + cap;
            if now + ttl > limit {
                ttl = limit.saturating_sub(now);
            }
        }
        let mut expire = now + ttl;
        if let Some(parent) = &e.parent
            && let Some(p) = self.get_entry(parent).await?
            && p.expire_time != 0
        {
            expire = expire.min(p.expire_time);
        }
        let old_expire = e.expire_time;
        e.expire_time = expire.max(now);
        e.last_renewal_time = now;
        let raw = record::encode(&e)?;
        let expiry = ExpiryChange::new(link_name(&e), old_expire, e.expire_time);
        View::batch_across(vec![
            (&self.view, vec![BatchOp::Put(format!("id/{}", e.id), &raw)]),
            (&self.expire, expiry.ops()),
        ])
        .await?;
        self.forget(&e.id);
        self.offer_expiry(&e);
        Ok(e)
    }
}

mod memo;
mod roles;

pub use memo::TokenMemo;
pub(crate) use roles::TokenRole;

#[cfg(test)]
mod order_tests;
#[cfg(test)]
mod revocation_race_tests;
