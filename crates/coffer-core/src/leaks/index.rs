//! The liveness index: for every live secret value Coffer knows (KV fields, database passwords,
//! secret_ids, tokens), an entry that says where it lives, found by the value's keyed hash.
//!
//! Guarantees: no value is stored, in clear or otherwise reversible; an entry's storage key is
//! `index/<HMAC(inner, HMAC(key, value))>/<HMAC(inner, location)>`, where `key` is the published
//! hashing key (what `GET sys/leaks/check` hands to scanners) and `inner` never leaves the
//! barrier, so someone who can read raw storage *and* holds the published key still cannot test
//! guesses against the index; the entry itself (the location) is a barrier-encrypted record.
//! Entries are written in the same atomic batch as the value they describe (the callers pass
//! [`LeakOp::op`] into their own batch), so a value acknowledged to a client is indexed.
//!
//! The records that own a value keep its entry's key ([`LeakOp::key`]) or can recompute it
//! (`kv_removals`, `database_static_removal`), so that the batch that ends the value (a token or
//! lease revoked, a secret_id destroyed or used up, a KV version destroyed or pruned, a static
//! password rotated) deletes its entry too.
//!
//! A static role deleted takes its entry out in the same batch; a mount disabled leaves a sweep
//! marker in the batch that changes the mount table, and its entries are removed in the
//! background (`leaks::spawn_sweeps`). Not guaranteed here: that an entry's value is still live
//! (until that sweep ends, or after a value's owner lost it some other way). Whoever reads the index confirms each entry against the
//! store that owns the value (see `leaks::live`) and drops the entries that no longer hold.

use std::sync::Arc;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use coffer_barrier::{Barrier, BatchOp, View};

use crate::hex::hex;
use crate::logical::{Error, Result};
use crate::random::{random_base62, random_bytes};
use crate::record;

/// Where the index and its keys live, below the barrier.
pub(crate) const STORAGE_PREFIX: &str = "sys/leaks/";

/// Where one value's entries are, relative to the index's view.
pub(crate) fn folder(inner_hash: &str) -> String {
    format!("index/{inner_hash}/")
}

/// Where a live value lives: enough to confirm it is still live, and to act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// A service token; `id` is the token store's salted hash of it.
    Token { id: String, accessor: String },
    /// A response-wrapping token.
    WrappingToken { id: String, accessor: String },
    /// An AppRole secret_id of `role` on the auth mount `mount` (its uuid).
    SecretId { mount: String, role: String, accessor: String },
    /// A top-level string field of a KV secret; `version` is `None` on a version 1 mount.
    Kv { mount: String, key: String, version: Option<u64>, field: String },
    /// A database static role's current password.
    DatabaseStatic { mount: String, role: String },
    /// A dynamic database credential's password, live while its lease is.
    DatabaseDynamic { mount: String, role: String, lease_id: String },
}

impl Target {
    /// The mount (its uuid) the value belongs to; `None` for tokens, which belong to no mount.
    pub(crate) fn mount(&self) -> Option<&str> {
        match self {
            Target::Token { .. } | Target::WrappingToken { .. } => None,
            Target::SecretId { mount, .. }
            | Target::Kv { mount, .. }
            | Target::DatabaseStatic { mount, .. }
            | Target::DatabaseDynamic { mount, .. } => Some(mount),
        }
    }

    /// The contract's `kind` of a match.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Token { .. } => "token",
            Target::WrappingToken { .. } => "wrapping_token",
            Target::SecretId { .. } => "secret_id",
            Target::Kv { .. } => "kv",
            Target::DatabaseStatic { .. } => "database_static",
            Target::DatabaseDynamic { .. } => "database_dynamic",
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) target: Target,
    /// Unix seconds.
    pub(crate) created: u64,
}

crate::record!(Entry, "leak index entry", 1);

#[derive(Serialize, Deserialize)]
struct StoredKeys {
    key_id: String,
    /// The published hashing key (32 bytes).
    key: Zeroizing<Vec<u8>>,
    /// The key that hides the index's storage keys (32 bytes); never leaves the barrier.
    inner: Zeroizing<Vec<u8>>,
}

crate::record!(StoredKeys, "leak index keys", 1);

/// The index's keys, loaded once per instance.
pub(crate) struct Keys {
    pub(crate) id: String,
    published: Zeroizing<Vec<u8>>,
    key: hmac::Key,
    inner: hmac::Key,
}

impl Keys {
    /// The published key, for `GET sys/leaks/check`.
    pub(crate) fn published(&self) -> &[u8] {
        &self.published
    }

    /// What a scanner sends for `value`: lowercase hex HMAC-SHA256.
    pub(crate) fn hash(&self, value: &str) -> String {
        hex(hmac::sign(&self.key, value.as_bytes()).as_ref())
    }

    /// The folder name of a scanner's hash (given as the bytes it decodes to).
    pub(crate) fn inner_of(&self, hash: &[u8]) -> String {
        hex(hmac::sign(&self.inner, hash).as_ref())
    }

    /// The storage key of the entry of `value` at the target whose JSON is `target`.
    fn entry_key(&self, value: &str, target: &[u8]) -> EntryKey {
        let hash = hmac::sign(&self.key, value.as_bytes());
        let mut k = [0; EntryKey::LEN];
        k[..32].copy_from_slice(hmac::sign(&self.inner, hash.as_ref()).as_ref());
        k[32..].copy_from_slice(&hmac::sign(&self.inner, target).as_ref()[..16]);
        EntryKey(k)
    }
}

/// An entry's storage key in 48 bytes: the value's folder (HMAC-SHA256 under the inner key of
/// the value's published hash, 32 bytes) and its location (the first 16 bytes of HMAC-SHA256
/// under the inner key of the target's JSON). Its path is `index/<hex 32>/<hex 16>`.
///
/// It reveals no value: both halves are keyed with the inner key, which never leaves the
/// barrier, and the path is what raw storage shows as the entry's key anyway. A record that
/// owns a value may keep it (inside the barrier) so that the batch that ends the value deletes
/// the entry without reading the value again to hash it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EntryKey([u8; EntryKey::LEN]);

impl EntryKey {
    pub const LEN: usize = 48;

    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// `None` unless `bytes` is exactly [`Self::LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The entry's storage key, relative to [`LeakIndex::view`].
    pub fn path(&self) -> String {
        let mut s = String::with_capacity(6 + 64 + 1 + 32);
        s.push_str("index/");
        s.push_str(&hex(&self.0[..32]));
        s.push('/');
        s.push_str(&hex(&self.0[32..]));
        s
    }

    /// The entry's delete, for the batch that ends its value.
    pub fn removal(&self) -> BatchOp<'static> {
        BatchOp::Delete(self.path())
    }
}

/// [`Target::Kv`], borrowed: the same JSON, without copying the mount, key and field into a
/// `Target` for each field of each write.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum KvTarget<'a> {
    Kv { mount: &'a str, key: &'a str, version: Option<u64>, field: &'a str },
}

fn target_json<T: Serialize>(target: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(target).map_err(|e| Error::Internal(e.to_string()))
}

/// An [`Entry`] record as [`record::encode`] writes it, from its target's JSON already written
/// for the location's HMAC (`record::encode` would write it again).
fn entry_record(target: &[u8], created: u64) -> Zeroizing<Vec<u8>> {
    use std::io::Write as _;
    let mut raw = Zeroizing::new(Vec::with_capacity(target.len() + 48));
    raw.extend_from_slice(b"{\"version\":");
    // Writing to a Vec cannot fail.
    let _ = write!(raw, "{}", <Entry as record::Record>::VERSION);
    raw.extend_from_slice(b",\"target\":");
    raw.extend_from_slice(target);
    raw.extend_from_slice(b",\"created\":");
    let _ = write!(raw, "{created}");
    raw.push(b'}');
    raw
}

/// Only one task of this process makes the keys, so two first uses cannot make two.
static KEY_INIT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One entry to write, in the writer's own batch.
pub struct LeakOp {
    key: String,
    entry: EntryKey,
    raw: Zeroizing<Vec<u8>>,
}

impl LeakOp {
    /// Where the entry goes, relative to [`LeakIndex::view`]: for the record that owns the
    /// value to keep, so that removing the value removes its entry in the same batch.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// [`Self::key`] in 48 bytes, for a record that keeps many.
    pub fn entry_key(&self) -> EntryKey {
        self.entry
    }

    /// The put, for [`View::batch_across`] with [`LeakIndex::view`].
    pub fn op(&self) -> BatchOp<'_> {
        BatchOp::Put(self.key.clone(), &self.raw)
    }
}

/// The batch part of a set of entries.
pub fn ops(entries: &[LeakOp]) -> Vec<BatchOp<'_>> {
    entries.iter().map(LeakOp::op).collect()
}

/// The index as a mount (or the core) writes to it.
#[derive(Clone)]
pub struct LeakIndex {
    view: View,
    /// The mount whose values this handle indexes (its uuid); empty for the core's own.
    mount: String,
    keys: Arc<OnceCell<Arc<Keys>>>,
}

impl LeakIndex {
    /// The index as the mount `mount_uuid` writes to it (the core makes one per mount; tests
    /// make their own).
    pub fn new(barrier: Arc<Barrier>, mount_uuid: &str) -> Self {
        Self {
            view: View::new(barrier, STORAGE_PREFIX),
            mount: mount_uuid.to_owned(),
            keys: Arc::new(OnceCell::new()),
        }
    }

    /// The view the entries go to, beside the writer's own in [`View::batch_across`].
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The keys, made on first use and then never changed.
    pub(crate) async fn keys(&self) -> Result<Arc<Keys>> {
        self.keys.get_or_try_init(|| load_or_create(&self.view)).await.cloned()
    }

    async fn entry(&self, value: &str, target: Target) -> Result<LeakOp> {
        self.entry_at(value, &target_json(&target)?).await
    }

    /// The entry of `value` at the target whose JSON is `target`: the JSON is written once,
    /// for both the location's HMAC and the record.
    async fn entry_at(&self, value: &str, target: &[u8]) -> Result<LeakOp> {
        let entry = self.keys().await?.entry_key(value, target);
        let raw = entry_record(target, crate::time::now_unix());
        Ok(LeakOp { key: entry.path(), entry, raw })
    }

    async fn key_of(&self, value: &str, target: &Target) -> Result<String> {
        Ok(self.keys().await?.entry_key(value, &target_json(target)?).path())
    }

    /// The deletes of the entries [`Self::kv`] wrote for the same secret: for a writer that
    /// removes or replaces the value, in its own batch.
    pub async fn kv_removals(
        &self,
        key: &str,
        version: Option<u64>,
        data: &Map<String, Value>,
    ) -> Result<Vec<BatchOp<'static>>> {
        let keys = self.keys().await?;
        let mut out = Vec::new();
        for (field, v) in data {
            if let Value::String(s) = v
                && !s.is_empty()
            {
                let target = KvTarget::Kv { mount: &self.mount, key, version, field };
                out.push(keys.entry_key(s, &target_json(&target)?).removal());
            }
        }
        Ok(out)
    }

    /// The delete of a database static role's entry for `password` (its password until now).
    pub async fn database_static_removal(
        &self,
        password: &str,
        role: &str,
    ) -> Result<BatchOp<'static>> {
        let target = Target::DatabaseStatic { mount: self.mount.clone(), role: role.to_owned() };
        Ok(BatchOp::Delete(self.key_of(password, &target).await?))
    }

    /// Entries for every top-level string field of a KV secret (`version`: `None` on kv v1).
    pub async fn kv(
        &self,
        key: &str,
        version: Option<u64>,
        data: &Map<String, Value>,
    ) -> Result<Vec<LeakOp>> {
        let mut out = Vec::new();
        for (field, v) in data {
            if let Value::String(s) = v
                && !s.is_empty()
            {
                let target = KvTarget::Kv { mount: &self.mount, key, version, field };
                out.push(self.entry_at(s, &target_json(&target)?).await?);
            }
        }
        Ok(out)
    }

    /// The entry of a secret_id of `role` on this auth mount.
    pub async fn secret_id(&self, value: &str, role: &str, accessor: &str) -> Result<LeakOp> {
        let target = Target::SecretId {
            mount: self.mount.clone(),
            role: role.to_owned(),
            accessor: accessor.to_owned(),
        };
        self.entry(value, target).await
    }

    /// The entry of a database static role's new password on this mount.
    pub async fn database_static(&self, password: &str, role: &str) -> Result<LeakOp> {
        let target = Target::DatabaseStatic { mount: self.mount.clone(), role: role.to_owned() };
        self.entry(password, target).await
    }

    /// The entry of a value the core itself indexes: a token (the token store knows its hashed
    /// id), a leased credential (the lease manager knows its lease id).
    pub(crate) async fn token(&self, value: &str, target: Target) -> Result<LeakOp> {
        self.entry(value, target).await
    }
}

async fn load_or_create(view: &View) -> Result<Arc<Keys>> {
    if let Some(k) = record::load::<StoredKeys>(view, "keys").await? {
        return from_stored(k);
    }
    let _g = KEY_INIT.lock().await;
    if let Some(k) = record::load::<StoredKeys>(view, "keys").await? {
        return from_stored(k);
    }
    let stored = StoredKeys {
        key_id: random_base62(16),
        key: Zeroizing::new(random_bytes::<32>().to_vec()),
        inner: Zeroizing::new(random_bytes::<32>().to_vec()),
    };
    view.put("keys", &record::encode(&stored)?).await?;
    tracing::info!("leak index keys created");
    from_stored(stored)
}

fn from_stored(k: StoredKeys) -> Result<Arc<Keys>> {
    if k.key.len() != 32 || k.inner.len() != 32 {
        return Err(Error::Internal("the stored leak index keys have the wrong length".into()));
    }
    Ok(Arc::new(Keys {
        id: k.key_id,
        key: hmac::Key::new(hmac::HMAC_SHA256, &k.key),
        inner: hmac::Key::new(hmac::HMAC_SHA256, &k.inner),
        published: k.key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_contracts_names() {
        let t =
            Target::Kv { mount: "m".into(), key: "k".into(), version: Some(1), field: "f".into() };
        let v = serde_json::to_value(&t).expect("json");
        assert_eq!(v["kind"], "kv");
        assert_eq!(t.kind(), "kv");
        let t =
            Target::DatabaseDynamic { mount: "m".into(), role: "r".into(), lease_id: "l".into() };
        assert_eq!(serde_json::to_value(&t).expect("json")["kind"], "database_dynamic");
    }

    #[test]
    fn a_kv_entry_is_stored_as_the_record_codec_writes_it() {
        let owned = Target::Kv {
            mount: "m-uuid".into(),
            key: "team/app \"x\"".into(),
            version: Some(7),
            field: "pass\u{1}word".into(),
        };
        let borrowed = KvTarget::Kv {
            mount: "m-uuid",
            key: "team/app \"x\"",
            version: Some(7),
            field: "pass\u{1}word",
        };
        let json = target_json(&borrowed).expect("json");
        assert_eq!(json, target_json(&owned).expect("json"));
        let v1 = KvTarget::Kv { mount: "m", key: "k", version: None, field: "f" };
        let o1 =
            Target::Kv { mount: "m".into(), key: "k".into(), version: None, field: "f".into() };
        assert_eq!(target_json(&v1).expect("json"), target_json(&o1).expect("json"));
        let expected = record::encode(&Entry { target: owned.clone(), created: 1_700_000_123 })
            .expect("encode");
        assert_eq!(*entry_record(&json, 1_700_000_123), *expected);
        let back: Entry = record::decode(&expected).expect("decode");
        assert_eq!(back.target, owned);
    }

    #[test]
    fn an_entry_key_is_its_path_in_48_bytes() {
        let mut b = [0u8; EntryKey::LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = u8::try_from(i * 5).expect("small");
        }
        let k = EntryKey::from_bytes(&b).expect("48 bytes");
        assert_eq!(k.path(), format!("index/{}/{}", hex(&b[..32]), hex(&b[32..])));
        assert_eq!(k.path().len(), 6 + 64 + 1 + 32);
        assert!(EntryKey::from_bytes(&b[..47]).is_none());
    }
}
