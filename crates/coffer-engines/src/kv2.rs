//! Key/value secrets engine, version 2 (Vault's `kv` with `options.version = "2"`): every write
//! is a new, immutable version; delete and undelete mark versions; destroy removes their data.
//!
//! Guarantees: a written version's data never changes afterwards; writes to one key are
//! serialized (a striped lock), so two writers with the same `cas` cannot both succeed, while
//! writes to different keys overlap and share the storage's group commit; old versions beyond
//! `max_versions` are pruned in the same atomic batch as the write that pushes them out.
//!
//! Every change reports Vault's `kv-v2/...` event (see [`key_event`]): paths and version
//! numbers, never the data.
//!
//! Storage (inside the mount's view): `config`, `meta/<path>` (the key's metadata, all its
//! versions' marks: a binary record, see `kv2_meta`) and `ver/<path>/<n>` (one version's data). The version number is always the
//! last segment, so no two (path, version) pairs share a storage key.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use coffer_core::Fields;
use coffer_core::framework::{Default, Field, Framework, Path, Paths, Req, handler, list_response};
use coffer_core::leaks::{EntryKey, LeakIndex, LeakOp};
use coffer_core::record;
use coffer_core::time::{now_unix, rfc3339};
use coffer_core::{Error, Event, LogicalBackend, Response, Result, View};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::kv2_meta::{self, KeyMeta, VersionMeta};

/// Vault's default when neither the mount nor the key sets `max_versions`.
const DEFAULT_MAX_VERSIONS: u64 = 10;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Config {
    max_versions: u64,
    cas_required: bool,
    /// Seconds; 0 = never.
    delete_version_after: u64,
}

coffer_core::record!(Config, "kv v2 config", 1);

/// Stripes of [`KvV2::key_locks`]: enough that 16 to 64 writers to different keys rarely wait
/// for each other, few enough to cost nothing per mount.
const KEY_STRIPES: usize = 256;

pub(crate) struct KvV2 {
    view: View,
    /// The liveness index (none in unit tests): every new version's string fields go in with
    /// it, in its batch. Versions that stop being live are dropped from it when a check meets
    /// them (see `coffer_core::leaks`).
    leaks: Option<LeakIndex>,
    /// Taken shared by every key's write, exclusively by a change of the mount's config, so a
    /// write sees one config from start to end.
    config_lock: RwLock<()>,
    /// One key's writes one at a time, so check-and-set and version numbering are race-free.
    key_locks: Box<[Mutex<()>]>,
}

pub(crate) fn new(view: View, leaks: Option<LeakIndex>) -> Arc<dyn LogicalBackend> {
    Arc::new(KvV2 {
        view,
        leaks,
        config_lock: RwLock::new(()),
        key_locks: (0..KEY_STRIPES).map(|_| Mutex::new(())).collect(),
    })
}

/// Held while one key is written.
struct KeyGuard<'a> {
    _config: RwLockReadGuard<'a, ()>,
    _key: MutexGuard<'a, ()>,
}

const CONFIG_FIELDS: &[Field] = &[
    Field::int("max_versions", "Versions kept per key; 0: Vault's default of 10."),
    Field::bool("cas_required", "Every write to every key must carry the `cas` option."),
    Field::duration(
        "delete_version_after",
        "Versions are soft-deleted this long after their write; 0: never.",
    ),
];

const DATA_FIELDS: &[Field] = &[
    Field::map("data", "The secret: a JSON object, stored as the new version."),
    Field::map(
        "options",
        "Write options: `cas`, the version the write expects to replace (0: the key must not exist).",
    ),
    Field::int("version", "On read, the version to read; 0 or absent: the latest.")
        .default(Default::Int(0)),
];

const VERSIONS_FIELDS: &[Field] =
    &[Field::int_list("versions", "The versions to act on (at least one).")];

const METADATA_FIELDS: &[Field] = &[
    Field::int("max_versions", "Versions kept of this key; 0: the mount's setting."),
    Field::bool("cas_required", "Every write to this key must carry the `cas` option."),
    Field::duration(
        "delete_version_after",
        "This key's versions are soft-deleted this long after their write; 0: the mount's setting.",
    ),
    Field::kv_pairs(
        "custom_metadata",
        "Caller-defined string pairs kept with the key; a patch adds to them.",
    ),
];

const SUBKEYS_FIELDS: &[Field] = &[
    Field::int("version", "The version to read; 0 or absent: the latest.").default(Default::Int(0)),
    Field::int("depth", "How deep to descend into nested objects; 0: all the way.")
        .default(Default::Int(0)),
];

static PATHS: LazyLock<Paths<KvV2>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("config", "The mount's defaults for every key's versions.")
            .fields(CONFIG_FIELDS)
            .read(handler!(KvV2::read_config))
            .write(handler!(KvV2::write_config))
            .exists(handler!(KvV2::config_exists)),
        Path::new("data/{path*}", "A key's versions: read one, write a new one, patch the latest, soft-delete the latest.")
            .fields(DATA_FIELDS)
            .read(handler!(KvV2::read_data))
            .write(handler!(KvV2::write_data))
            .patch(handler!(KvV2::patch_data))
            .delete(handler!(KvV2::delete_latest))
            .exists(handler!(KvV2::key_exists)),
        Path::new("delete/{path*}", "Soft-delete versions of a key; undelete restores them.")
            .fields(VERSIONS_FIELDS)
            .write(handler!(KvV2::delete_versions)),
        Path::new("undelete/{path*}", "Restore soft-deleted versions of a key.")
            .fields(VERSIONS_FIELDS)
            .write(handler!(KvV2::undelete_versions)),
        Path::new("destroy/{path*}", "Remove versions' data for good.")
            .fields(VERSIONS_FIELDS)
            .write(handler!(KvV2::destroy_versions)),
        Path::new("metadata/{path*}", "A key's metadata and settings; delete removes the key and all its versions.")
            .fields(METADATA_FIELDS)
            .read(handler!(KvV2::read_metadata))
            .list(handler!(KvV2::list_metadata))
            .write(handler!(KvV2::write_metadata))
            .patch(handler!(KvV2::patch_metadata))
            .delete(handler!(KvV2::delete_metadata))
            .exists(handler!(KvV2::key_exists)),
        Path::new("subkeys/{path*}", "The shape of a version: its keys, with values replaced by null.")
            .fields(SUBKEYS_FIELDS)
            .read(handler!(KvV2::subkeys)),
    ])
});

/// A version's data is the caller's own JSON object, stored as given (not a record: a field
/// the codec added, such as `version`, would collide with the caller's own).
fn data_from(raw: &[u8]) -> Result<Value> {
    serde_json::from_slice(raw).map_err(|e| {
        Error::Internal(format!("stored kv v2 version data does not decode (line {})", e.line()))
    })
}

/// 404 with no body, as Vault answers a patch of a key that is not there.
fn bare_not_found() -> Response {
    Response { status: Some(404), ..Response::default() }
}

/// How long after it is written (or undeleted) a version is soft-deleted: the smaller of the
/// mount's and the key's `delete_version_after` that are set, as Vault's; 0 = never.
fn delete_after(mount: u64, key: u64) -> u64 {
    match (mount, key) {
        (0, k) => k,
        (m, 0) => m,
        (m, k) => m.min(k),
    }
}

fn time_or_empty(t: u64) -> Value {
    if t == 0 { json!("") } else { json!(rfc3339(t)) }
}

fn custom(meta: &KeyMeta) -> Value {
    if meta.custom_metadata.is_empty() { Value::Null } else { json!(meta.custom_metadata) }
}

impl KeyMeta {
    /// Vault's `oldest_version`: 0 until versions beyond `max_versions` were pruned, then the
    /// oldest one kept. Pruning removes version 1 first, so a stored 1 (or 0) means never pruned.
    fn reported_oldest(&self) -> u64 {
        if self.oldest_version <= 1 { 0 } else { self.oldest_version }
    }
}

impl VersionMeta {
    fn is_deleted(&self, now: u64) -> bool {
        self.deletion_time != 0 && self.deletion_time <= now
    }

    fn json(&self, version: u64, meta: &KeyMeta) -> Value {
        json!({
            "created_time": rfc3339(self.created_time),
            "custom_metadata": custom(meta),
            "deletion_time": time_or_empty(self.deletion_time),
            "destroyed": self.destroyed,
            "version": version,
        })
    }
}

/// A read's answer, written out without a JSON tree; fields in the order a `serde_json` map
/// writes them (sorted), as [`VersionMeta::json`] answers elsewhere.
#[derive(Serialize)]
struct ReadAnswer<'a> {
    data: &'a RawValue,
    metadata: VersionJson<'a>,
}

/// [`VersionMeta::json`] as a struct: the same fields, in the same (sorted) order.
#[derive(Serialize)]
struct VersionJson<'a> {
    created_time: String,
    custom_metadata: Option<&'a BTreeMap<String, String>>,
    deletion_time: String,
    destroyed: bool,
    version: u64,
}

impl<'a> VersionJson<'a> {
    fn new(vm: &VersionMeta, version: u64, meta: &'a KeyMeta) -> Self {
        Self {
            created_time: rfc3339(vm.created_time),
            custom_metadata: (!meta.custom_metadata.is_empty()).then_some(&meta.custom_metadata),
            deletion_time: if vm.deletion_time == 0 {
                String::new()
            } else {
                rfc3339(vm.deletion_time)
            },
            destroyed: vm.destroyed,
            version,
        }
    }
}

/// A `kv-v2/<operation>` event about `key`, requested at `<section>/<key>`, as Vault's kv plugin
/// sends it. Whoever may read the key's data or its metadata may see it.
fn key_event(operation: &str, section: &str, key: &str) -> Event {
    Event::new("kv-v2", operation, [section, "/", key].concat())
        .readable_at(["data/", key].concat())
        .readable_at(["metadata/", key].concat())
}

/// [`key_event`] with the key's version numbers after the change, as Vault's data events have.
fn versions_event(operation: &str, section: &str, key: &str, meta: &KeyMeta) -> Event {
    key_event(operation, section, key)
        .with("current_version", meta.current_version.to_string())
        .with("oldest_version", meta.reported_oldest().to_string())
}

/// A list of versions as Vault's events show it: a JSON array in a string (`[1,2]`).
fn versions_list(versions: &[u64]) -> String {
    serde_json::to_string(versions).unwrap_or_default()
}

/// `ver/<path>/<v>`, one version's storage key. Storage keys and event paths are concatenated
/// rather than `format!`ted: a write builds about ten, and the formatting machinery cost
/// several times the copy (writing the number alone is cheap).
fn ver_key(path: &str, v: u64) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(25 + path.len());
    key.push_str("ver/");
    key.push_str(path);
    key.push('/');
    // Writing to a String cannot fail.
    let _ = write!(key, "{v}");
    key
}

fn key_path(path: &str) -> Result<&str> {
    if path.is_empty() || path.ends_with('/') {
        return Err(Error::invalid("a secret's path must name a key, not a folder"));
    }
    Ok(path)
}

/// The kv version 2 records of a key a version 1 mount held (an in-place upgrade): its data,
/// unchanged, as version 1 written `now`, and metadata saying so.
pub(crate) fn upgraded(
    path: &str,
    data_raw: &[u8],
    now: u64,
) -> Result<[(String, zeroize::Zeroizing<Vec<u8>>); 2]> {
    // Both versions store a secret as the JSON object of its fields, so the bytes carry over.
    let _: Map<String, Value> = serde_json::from_slice(data_raw).map_err(|e| {
        Error::Internal(format!("kv entry {path:?} is not a JSON object ({e}); not upgraded"))
    })?;
    let meta = KeyMeta {
        created_time: now,
        updated_time: now,
        current_version: 1,
        oldest_version: 1,
        versions: BTreeMap::from([(
            1,
            VersionMeta { created_time: now, deletion_time: 0, destroyed: false, leak_keys: None },
        )]),
        ..KeyMeta::default()
    };
    Ok([
        (["meta/", path].concat(), kv2_meta::encode(&meta)?),
        (ver_key(path, 1), zeroize::Zeroizing::new(data_raw.to_vec())),
    ])
}

/// A version whose data goes (pruned, destroyed, or its key deleted), with its liveness index
/// entries' keys when they were kept ([`VersionMeta::leak_keys`]).
type Gone = (u64, Option<Vec<EntryKey>>);

/// Drops the oldest versions beyond `max`; returns the dropped versions.
fn prune(meta: &mut KeyMeta, max: u64) -> Vec<Gone> {
    let mut pruned = Vec::new();
    while meta.versions.len() as u64 > max {
        let Some((oldest, vm)) = meta.versions.pop_first() else { break };
        pruned.push((oldest, vm.leak_keys));
    }
    if let Some(&o) = meta.versions.keys().next() {
        meta.oldest_version = o;
    }
    pruned
}

impl KvV2 {
    /// Stores a key's metadata, an optional new version's data, and removes the data of
    /// `gone` versions, in one atomic batch; with it, the new version's index entries (`live`).
    async fn save(
        &self,
        path: &str,
        meta: &KeyMeta,
        new: Option<(u64, &[u8])>,
        gone: &[Gone],
        live: &[coffer_core::leaks::LeakOp],
    ) -> Result<()> {
        let meta_raw = kv2_meta::encode(meta)?;
        let mut ops = vec![coffer_core::BatchOp::Put(["meta/", path].concat(), &meta_raw)];
        if let Some((v, data)) = new {
            ops.push(coffer_core::BatchOp::Put(ver_key(path, v), data));
        }
        for (v, _) in gone {
            ops.push(coffer_core::BatchOp::Delete(ver_key(path, *v)));
        }
        match &self.leaks {
            Some(l) if !live.is_empty() || !gone.is_empty() => {
                let mut leak = coffer_core::leaks::ops(live);
                leak.extend(self.removals(l, path, gone).await?);
                View::batch_across(vec![(&self.view, ops), (l.view(), leak)]).await?
            }
            _ => self.view.batch(ops).await?,
        }
        Ok(())
    }

    /// The liveness index deletes for the data of `versions` of `path`, which is about to go
    /// (destroyed, pruned, or the key deleted): the keys kept with each version, or for a
    /// version written before they were kept, one read of its data to hash it again.
    async fn removals(
        &self,
        l: &LeakIndex,
        path: &str,
        versions: &[Gone],
    ) -> Result<Vec<coffer_core::BatchOp<'static>>> {
        let mut out = Vec::new();
        for (v, kept) in versions {
            if let Some(keys) = kept {
                out.extend(keys.iter().map(EntryKey::removal));
                continue;
            }
            // A damaged version's entries cannot be named; they are harmless (every match is
            // confirmed against the store first), and removing it must not need reading it.
            let raw = match self.view.get(&ver_key(path, *v)).await.map_err(Error::from) {
                Ok(Some(raw)) => raw,
                Ok(None) | Err(Error::Damaged(_)) => continue,
                Err(e) => return Err(e),
            };
            // Data that does not decode has no entries this build could have written.
            if let Ok(Value::Object(data)) = data_from(&raw) {
                out.extend(l.kv_removals(path, Some(*v), &data).await?);
            }
        }
        Ok(out)
    }

    /// Every stored version's string fields into the liveness index (soft-deleted ones too:
    /// an undelete makes them live again), one key at a time under its lock.
    pub(crate) async fn backfill(&self) -> Result<u64> {
        let Some(l) = &self.leaks else { return Ok(0) };
        let mut n = 0;
        for path in self.view.list_recursive("meta/").await? {
            let _g = self.lock_key(&path).await;
            let meta = match self.meta(&path).await {
                Ok(Some(meta)) => meta,
                Ok(None) | Err(Error::Damaged(_)) => continue,
                Err(e) => return Err(e),
            };
            for (v, vm) in &meta.versions {
                if vm.destroyed {
                    continue;
                }
                // A damaged version is skipped, not the rest of the mount: it cannot be live
                // anyway until an authorized write replaces it.
                let raw = match self.view.get(&ver_key(&path, *v)).await.map_err(Error::from) {
                    Ok(Some(raw)) => raw,
                    Ok(None) | Err(Error::Damaged(_)) => continue,
                    Err(e) => return Err(e),
                };
                let Ok(Value::Object(data)) = data_from(&raw) else { continue };
                let live = l.kv(&path, Some(*v), &data).await?;
                n += live.len() as u64;
                View::batch_across(vec![(l.view(), coffer_core::leaks::ops(&live))]).await?;
            }
        }
        Ok(n)
    }

    async fn config(&self) -> Result<Config> {
        Ok(record::load(&self.view, "config").await?.unwrap_or_default())
    }

    /// The key's metadata, to change and save.
    async fn meta(&self, path: &str) -> Result<Option<KeyMeta>> {
        match self.view.get(&["meta/", path].concat()).await? {
            Some(raw) => kv2_meta::decode(&raw).map(Some),
            None => Ok(None),
        }
    }

    /// The key's metadata, to answer from only: without the versions' index keys (never
    /// save it: they would be lost, and found again from the data at the next prune).
    async fn meta_to_answer(&self, path: &str) -> Result<Option<KeyMeta>> {
        match self.view.get(&["meta/", path].concat()).await? {
            Some(raw) => kv2_meta::decode_to_answer(&raw).map(Some),
            None => Ok(None),
        }
    }

    fn effective_max(cfg: &Config, meta: &KeyMeta) -> u64 {
        match (meta.max_versions, cfg.max_versions) {
            (0, 0) => DEFAULT_MAX_VERSIONS,
            (0, m) => m,
            (k, 0) => k,
            (k, m) => k.min(m),
        }
    }

    async fn config_exists(&self, _r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(true))
    }

    /// Whether the key a `data/` or `metadata/` path names exists; no answer for a folder.
    async fn key_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        match r.capture("path") {
            p if p.is_empty() || p.ends_with('/') => Ok(None),
            // Only whether it is stored: the write that follows opens and decodes the
            // metadata itself (decoding it here too was a tenth of a KV write's instructions,
            // opening it about 7,000 more). A record that does not open or decode counts as
            // there, so the write needs `update`, and fails on it.
            p => Ok(Some(self.view.contains(&["meta/", p].concat()).await?)),
        }
    }

    /// The write lock of the key at `path` (always the config lock first, then the stripe).
    async fn lock_key(&self, path: &str) -> KeyGuard<'_> {
        let config = self.config_lock.read().await;
        let h = path.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        let key = self.key_locks[h % self.key_locks.len()].lock().await;
        KeyGuard { _config: config, _key: key }
    }

    async fn read_config(&self, _r: &Req<'_>) -> Result<Response> {
        let c = self.config().await?;
        Ok(Response::from_value(json!({
            "max_versions": c.max_versions,
            "cas_required": c.cas_required,
            "delete_version_after": coffer_time::format_go(c.delete_version_after),
        })))
    }

    async fn write_config(&self, r: &Req<'_>) -> Result<Response> {
        let f = r.fields();
        let _g = self.config_lock.write().await;
        let mut c = self.config().await?;
        if let Some(m) = f.u64("max_versions")? {
            c.max_versions = m;
        }
        if let Some(b) = f.bool("cas_required")? {
            c.cas_required = b;
        }
        if let Some(d) = f.secs("delete_version_after")? {
            c.delete_version_after = d;
        }
        self.view.put("config", &record::encode(&c)?).await?;
        Ok(Response::empty()
            .with_event(Event::new("kv-v2", "config-write", "config").data_path("config")))
    }

    async fn read_data(&self, r: &Req<'_>) -> Result<Response> {
        let path = key_path(r.capture("path"))?;
        let meta = self.meta_to_answer(path).await?.ok_or(Error::NotFound)?;
        let version = match r.u64("version")? {
            Some(0) | None => meta.current_version,
            Some(v) => v,
        };
        let vm = meta.versions.get(&version).ok_or(Error::NotFound)?;
        let now = now_unix();
        if vm.destroyed || vm.is_deleted(now) {
            // Vault's answer: 404, and the version's metadata so that a client can tell deleted
            // (and when) from destroyed from never written.
            let mut gone =
                Response::from_value(json!({ "data": null, "metadata": vm.json(version, &meta) }));
            gone.status = Some(404);
            return Ok(gone);
        }
        let raw = self.view.get(&ver_key(path, version)).await?.ok_or(Error::NotFound)?;
        // The stored object is passed through as it is: a write stores it as `serde_json`
        // writes a map (keys sorted, no spaces), which is also what a tree decoded from it would
        // be written as, so the answer's bytes are those it always had, without the tree.
        let secret: &RawValue = serde_json::from_slice(&raw).map_err(|e| {
            Error::Internal(format!(
                "stored kv v2 version data does not decode (line {})",
                e.line()
            ))
        })?;
        if !secret.get().starts_with('{') {
            return Err(Error::Internal("stored kv v2 version data is not a JSON object".into()));
        }
        let answer = ReadAnswer { data: secret, metadata: VersionJson::new(vm, version, &meta) };
        let json = serde_json::value::to_raw_value(&answer)
            .map_err(|e| Error::Internal(format!("a kv v2 answer does not encode: {e}")))?;
        Ok(Response::data_json(json))
    }

    /// Writes a new version, after the check-and-set rules; prunes versions beyond the limit.
    /// `operation` names the event: `data-write` or `data-patch`.
    async fn write_version(
        &self,
        path: &str,
        secret: &Map<String, Value>,
        cas: Option<u64>,
        operation: &str,
    ) -> Result<Response> {
        let path = key_path(path)?;
        let cfg = self.config().await?;
        let mut meta = match self.meta(path).await? {
            Some(m) => m,
            None => KeyMeta { created_time: now_unix(), ..KeyMeta::default() },
        };
        if cas.is_none() && (cfg.cas_required || meta.cas_required) {
            return Err(Error::invalid("check-and-set parameter required for this call"));
        }
        if let Some(cas) = cas
            && cas != meta.current_version
        {
            return Err(Error::invalid(
                "check-and-set parameter did not match the current version",
            ));
        }
        let now = now_unix();
        let version = meta.current_version + 1;
        let dva = delete_after(cfg.delete_version_after, meta.delete_version_after);
        let live = match &self.leaks {
            Some(l) => l.kv(path, Some(version), secret).await?,
            None => Vec::new(),
        };
        let vm = VersionMeta {
            created_time: now,
            deletion_time: if dva > 0 { now + dva } else { 0 },
            destroyed: false,
            // Kept with the version so that pruning or destroying it needs no read of its
            // data (see `VersionMeta::leak_keys` for why they may be kept).
            leak_keys: self.leaks.as_ref().map(|_| live.iter().map(LeakOp::entry_key).collect()),
        };
        // The answer, before the version goes into the metadata (the write does not change
        // the key's custom metadata it shows); written at once, as `VersionMeta::json` would
        // be, without a tree.
        let answer = serde_json::value::to_raw_value(&VersionJson::new(&vm, version, &meta))
            .map_err(|e| Error::Internal(format!("a kv v2 answer does not encode: {e}")))?;
        meta.versions.insert(version, vm);
        meta.current_version = version;
        meta.updated_time = now;
        let max = Self::effective_max(&cfg, &meta);
        let pruned = prune(&mut meta, max);
        // A map writes as the object holding it would: the same bytes as before.
        let data_raw = serde_json::to_vec(secret)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.save(path, &meta, Some((version, &data_raw)), &pruned, &live).await?;
        let event =
            versions_event(operation, "data", path, &meta).data_path(["data/", path].concat());
        Ok(Response::data_json(answer).with_event(event))
    }

    async fn write_data(&self, r: &Req<'_>) -> Result<Response> {
        // The framework refused a `data` or `options` that is not an object.
        let secret = r.object("data").ok_or_else(|| Error::invalid("no data provided"))?;
        let cas = match r.object("options") {
            Some(o) => Fields::new(o).u64("cas")?,
            None => None,
        };
        let _g = self.lock_key(r.capture("path")).await;
        self.write_version(r.capture("path"), secret, cas, "data-write").await
    }

    /// JSON merge patch (RFC 7396) of the latest version into a new version.
    async fn patch_data(&self, r: &Req<'_>) -> Result<Response> {
        let patch = r.object("data").cloned().ok_or_else(|| Error::invalid("no data provided"))?;
        let cas = match r.object("options") {
            Some(o) => Fields::new(o).u64("cas")?,
            None => None,
        };
        let path = key_path(r.capture("path"))?;
        let _g = self.lock_key(path).await;
        // Vault answers a patch with nothing live to patch with a bare 404 (no error list).
        let Some(meta) = self.meta(path).await? else { return Ok(bare_not_found()) };
        let Some(vm) = meta.versions.get(&meta.current_version) else {
            return Ok(bare_not_found());
        };
        if vm.destroyed || vm.is_deleted(now_unix()) {
            return Ok(bare_not_found());
        }
        let raw =
            self.view.get(&ver_key(path, meta.current_version)).await?.ok_or(Error::NotFound)?;
        let mut current = data_from(&raw)?;
        merge_patch(&mut current, &Value::Object(patch));
        let merged = match current {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        // A patch is always against the version it read: the implicit cas makes it safe.
        self.write_version(path, &merged, Some(cas.unwrap_or(meta.current_version)), "data-patch")
            .await
    }

    /// Marks versions: soft delete, undelete, or destroy. Returns the key's metadata as saved,
    /// `None` when there is no such key (nothing changed).
    async fn mark(&self, path: &str, versions: &[u64], action: Mark) -> Result<Option<KeyMeta>> {
        let path = key_path(path)?;
        let _g = self.lock_key(path).await;
        let Some(mut meta) = self.meta(path).await? else { return Ok(None) };
        let now = now_unix();
        // An undeleted version gets a new deletion time when one applies (Vault's rule).
        let dva = match action {
            Mark::Undelete => {
                delete_after(self.config().await?.delete_version_after, meta.delete_version_after)
            }
            Mark::Delete | Mark::Destroy => 0,
        };
        let mut destroy = Vec::new();
        for v in versions {
            let Some(vm) = meta.versions.get_mut(v) else { continue };
            match action {
                Mark::Delete => {
                    if !vm.destroyed && !vm.is_deleted(now) {
                        vm.deletion_time = now;
                    }
                }
                Mark::Undelete => {
                    if !vm.destroyed {
                        vm.deletion_time = if dva > 0 { now + dva } else { 0 };
                    }
                }
                Mark::Destroy => {
                    vm.destroyed = true;
                    // Its entries go with its data; a second destroy has none left to delete.
                    let kept = match self.leaks {
                        Some(_) => vm.leak_keys.replace(Vec::new()),
                        None => None,
                    };
                    destroy.push((*v, kept));
                }
            }
        }
        meta.updated_time = now;
        self.save(path, &meta, None, &destroy, &[]).await?;
        Ok(Some(meta))
    }

    async fn delete_latest(&self, r: &Req<'_>) -> Result<Response> {
        let path = r.capture("path");
        let Some(meta) = self.meta_to_answer(key_path(path)?).await? else {
            return Ok(Response::empty());
        };
        Ok(match self.mark(path, &[meta.current_version], Mark::Delete).await? {
            Some(meta) => {
                Response::empty().with_event(versions_event("data-delete", "data", path, &meta))
            }
            None => Response::empty(),
        })
    }

    async fn mark_versions(&self, r: &Req<'_>, action: Mark) -> Result<Response> {
        let versions = r.ints("versions")?.unwrap_or_default();
        if versions.is_empty() {
            // Vault's texts, capital and all.
            return Err(Error::invalid(match action {
                Mark::Destroy => "no version number provided",
                Mark::Delete | Mark::Undelete => "No version number provided",
            }));
        }
        let path = r.capture("path");
        let Some(meta) = self.mark(path, &versions, action).await? else {
            return Ok(Response::empty());
        };
        // Vault's names: `kv-v2/delete`, `kv-v2/undelete` (which names the data path: there is
        // something to read again) and `kv-v2/destroy`.
        let (operation, listed) = match action {
            Mark::Delete => ("delete", "deleted_versions"),
            Mark::Undelete => ("undelete", "undeleted_versions"),
            Mark::Destroy => ("destroy", "destroyed_versions"),
        };
        let mut event = versions_event(operation, operation, path, &meta)
            .with(listed, versions_list(&versions));
        if let Mark::Undelete = action {
            event = event.data_path(["data/", path].concat());
        }
        Ok(Response::empty().with_event(event))
    }

    async fn delete_versions(&self, r: &Req<'_>) -> Result<Response> {
        self.mark_versions(r, Mark::Delete).await
    }

    async fn undelete_versions(&self, r: &Req<'_>) -> Result<Response> {
        self.mark_versions(r, Mark::Undelete).await
    }

    async fn destroy_versions(&self, r: &Req<'_>) -> Result<Response> {
        self.mark_versions(r, Mark::Destroy).await
    }

    async fn read_metadata(&self, r: &Req<'_>) -> Result<Response> {
        let meta =
            self.meta_to_answer(key_path(r.capture("path"))?).await?.ok_or(Error::NotFound)?;
        let versions: Map<String, Value> = meta
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({
                        "created_time": rfc3339(v.created_time),
                        "deletion_time": time_or_empty(v.deletion_time),
                        "destroyed": v.destroyed,
                    }),
                )
            })
            .collect();
        Ok(Response::from_value(json!({
            "cas_required": meta.cas_required,
            "created_time": rfc3339(meta.created_time),
            "current_version": meta.current_version,
            "custom_metadata": custom(&meta),
            "delete_version_after": coffer_time::format_go(meta.delete_version_after),
            "max_versions": meta.max_versions,
            "oldest_version": meta.reported_oldest(),
            "updated_time": rfc3339(meta.updated_time),
            "versions": versions,
        })))
    }

    async fn write_metadata(&self, r: &Req<'_>) -> Result<Response> {
        self.update_metadata(r, false).await
    }

    async fn patch_metadata(&self, r: &Req<'_>) -> Result<Response> {
        self.update_metadata(r, true).await
    }

    async fn update_metadata(&self, r: &Req<'_>, patch: bool) -> Result<Response> {
        let path = key_path(r.capture("path"))?;
        let f = r.fields();
        let _g = self.lock_key(path).await;
        let existing = self.meta(path).await?;
        if patch && existing.is_none() {
            return Ok(bare_not_found());
        }
        let now = now_unix();
        let mut meta = existing.unwrap_or(KeyMeta { created_time: now, ..KeyMeta::default() });
        if let Some(m) = f.u64("max_versions")? {
            meta.max_versions = m;
        }
        if let Some(b) = f.bool("cas_required")? {
            meta.cas_required = b;
        }
        if let Some(d) = f.secs("delete_version_after")? {
            meta.delete_version_after = d;
        }
        if let Some(cm) = f.string_map("custom_metadata")? {
            if patch {
                meta.custom_metadata.extend(cm);
            } else {
                meta.custom_metadata = cm;
            }
        }
        meta.updated_time = now;
        // Lowering max_versions prunes at once, as Vault does.
        let cfg = self.config().await?;
        let max = Self::effective_max(&cfg, &meta);
        let pruned = prune(&mut meta, max);
        self.save(path, &meta, None, &pruned, &[]).await?;
        let operation = if patch { "metadata-patch" } else { "metadata-write" };
        let event = key_event(operation, "metadata", path).data_path(["metadata/", path].concat());
        Ok(Response::empty().with_event(event))
    }

    async fn delete_metadata(&self, r: &Req<'_>) -> Result<Response> {
        let path = key_path(r.capture("path"))?;
        let _g = self.lock_key(path).await;
        let versions: Vec<(String, Option<Vec<EntryKey>>)> = match self.meta(path).await {
            Ok(Some(meta)) => {
                meta.versions.into_iter().map(|(n, vm)| (n.to_string(), vm.leak_keys)).collect()
            }
            Ok(None) => return Ok(Response::empty()),
            // Unreadable metadata: its versions are found in storage instead, so that deleting
            // the key repairs it rather than leaving it stuck.
            Err(Error::Damaged(_)) => {
                let under = self.view.list(&format!("ver/{path}/")).await?;
                under
                    .into_iter()
                    .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                    .map(|v| (v, None))
                    .collect()
            }
            Err(e) => return Err(e),
        };
        let mut ops = vec![coffer_core::BatchOp::Delete(["meta/", path].concat())];
        for (v, _) in &versions {
            ops.push(coffer_core::BatchOp::Delete(["ver/", path, "/", v].concat()));
        }
        match &self.leaks {
            Some(l) => {
                let numbers: Vec<Gone> = versions
                    .into_iter()
                    .filter_map(|(v, kept)| Some((v.parse().ok()?, kept)))
                    .collect();
                let leak = self.removals(l, path, &numbers).await?;
                View::batch_across(vec![(&self.view, ops), (l.view(), leak)]).await?
            }
            None => self.view.batch(ops).await?,
        }
        Ok(Response::empty().with_event(key_event("metadata-delete", "metadata", path)))
    }

    async fn list_metadata(&self, r: &Req<'_>) -> Result<Response> {
        let path = r.capture("path");
        let prefix = if path.is_empty() || path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        list_response(self.view.list(&["meta/", &prefix].concat()).await?)
    }

    async fn subkeys(&self, r: &Req<'_>) -> Result<Response> {
        let depth = r.u64("depth")?.unwrap_or(0);
        let resp = self.read_data(r).await?.materialized()?;
        let status = resp.status;
        let d = resp.data.unwrap_or_default();
        let subkeys = match d.get("data") {
            Some(secret) if status.is_none() => subkeys_of(secret, depth, 1),
            _ => Value::Null,
        };
        let mut out = Response::from_value(json!({
            "subkeys": subkeys,
            "metadata": d.get("metadata").cloned().unwrap_or(Value::Null),
        }));
        out.status = status;
        Ok(out)
    }
}

#[derive(Clone, Copy)]
enum Mark {
    Delete,
    Undelete,
    Destroy,
}

/// RFC 7396: objects merge recursively, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The shape of a secret with its values replaced by `null` (Vault's `subkeys`).
fn subkeys_of(v: &Value, max_depth: u64, depth: u64) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let inner = if v.is_object() && (max_depth == 0 || depth < max_depth) {
                        subkeys_of(v, max_depth, depth + 1)
                    } else {
                        Value::Null
                    };
                    (k.clone(), inner)
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

#[async_trait::async_trait]
impl Framework for KvV2 {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }

    async fn index_live_values(&self) -> Result<u64> {
        self.backfill().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1]});
        merge_patch(&mut t, &json!({"a": {"b": 1}, "n": 2}));
        assert_eq!(t, json!({"a": {"b": 1}, "n": 2}));
    }

    #[test]
    fn a_read_answer_has_the_bytes_of_its_json_tree() {
        let stored =
            serde_json::to_vec(&json!({"b": {"z": 1.5, "a": [1, -2, null]}, "a": "x\u{1}\"é"}))
                .expect("encodes");
        let mut meta = KeyMeta::default();
        let mut vm = VersionMeta {
            created_time: 1_700_000_000,
            deletion_time: 0,
            destroyed: false,
            leak_keys: None,
        };
        for custom in [false, true] {
            if custom {
                meta.custom_metadata.insert("owner".into(), "ops \"team\"".into());
                vm.deletion_time = 1_800_000_000;
                vm.destroyed = true;
            }
            let tree: Value = serde_json::from_slice(&stored).expect("decodes");
            let expected =
                serde_json::to_string(&json!({ "data": tree, "metadata": vm.json(3, &meta) }))
                    .expect("encodes");
            let answer = ReadAnswer {
                data: serde_json::from_slice(&stored).expect("raw"),
                metadata: VersionJson::new(&vm, 3, &meta),
            };
            assert_eq!(serde_json::to_string(&answer).expect("encodes"), expected);
        }
    }

    #[test]
    fn subkeys_replace_values_with_null() {
        let v = json!({"a": 1, "b": {"c": 2, "d": {"e": 3}}});
        assert_eq!(subkeys_of(&v, 0, 1), json!({"a": null, "b": {"c": null, "d": {"e": null}}}));
        assert_eq!(subkeys_of(&v, 1, 1), json!({"a": null, "b": null}));
    }

    #[test]
    fn ver_key_is_what_format_wrote() {
        for v in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            for path in ["a", "x/y z/é"] {
                assert_eq!(ver_key(path, v), format!("ver/{path}/{v}"));
            }
        }
    }
}
