//! Key/value secrets engine, version 1 (Vault's `kv` with no version option): one unversioned
//! JSON object per path. A write replaces the whole object. Writes and deletes report Vault's
//! `kv-v1/write` and `kv-v1/delete` events (paths only, never the values).

use std::sync::{Arc, LazyLock};

use coffer_core::framework::{Framework, Path, Paths, Req, handler, list_response};
use coffer_core::leaks::LeakIndex;
use coffer_core::time::parse_duration;
use coffer_core::{BackendConfig, Error, Event, LogicalBackend, Response, Result, StorageChange};
use coffer_core::{BatchOp, View};
use serde_json::{Map, Value};

/// The storage half of kv v1, shared with cubbyhole, which is the same thing per token: one
/// handler per operation on the path the `{path*}` pattern captures.
pub(crate) struct KvStore;

impl KvStore {
    pub(crate) async fn read_entry(view: &View, path: &str) -> Result<Option<Map<String, Value>>> {
        if path.is_empty() || path.ends_with('/') {
            return Ok(None);
        }
        match view.get(path).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Internal(format!("kv entry decode: {e}"))),
        }
    }

    pub(crate) async fn read(view: &View, path: &str, default_ttl: u64) -> Result<Response> {
        let data = Self::read_entry(view, path).await?.ok_or(Error::NotFound)?;
        let ttl = data
            .get("ttl")
            .and_then(|v| match v {
                Value::String(s) => parse_duration(s).map(|d| d.as_secs()),
                Value::Number(n) => n.as_u64(),
                _ => None,
            })
            .unwrap_or(default_ttl);
        Ok(Response { data: Some(data), lease_duration: ttl, ..Response::default() })
    }

    pub(crate) async fn list(view: &View, path: &str) -> Result<Response> {
        let prefix = if path.is_empty() || path.ends_with('/') {
            path.to_owned()
        } else {
            format!("{path}/")
        };
        list_response(view.list(&prefix).await?)
    }

    /// Replaces the object at `path`; with `leaks`, its string fields go into the liveness
    /// index in the same batch (kv v1; a cubbyhole is private to one token and not indexed).
    pub(crate) async fn write(
        view: &View,
        path: &str,
        data: &Map<String, Value>,
        leaks: Option<&LeakIndex>,
    ) -> Result<Response> {
        if path.is_empty() || path.ends_with('/') {
            return Err(Error::invalid("a secret's path must name a key, not end in '/'"));
        }
        if data.is_empty() {
            return Err(Error::invalid("missing data fields"));
        }
        let raw = serde_json::to_vec(data)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| Error::Internal(e.to_string()))?;
        match leaks {
            Some(l) => {
                let live = l.kv(path, None, data).await?;
                let mut leak = coffer_core::leaks::ops(&live);
                // The values this write replaces leave the index with it (a value kept in its
                // field keeps its entry: the put above is the same key).
                if let Some(old) = Self::read_entry(view, path).await? {
                    for op in l.kv_removals(path, None, &old).await? {
                        if let BatchOp::Delete(k) = &op
                            && live.iter().any(|n| n.key() == k)
                        {
                            continue;
                        }
                        leak.push(op);
                    }
                }
                View::batch_across(vec![
                    (view, vec![BatchOp::Put(path.to_owned(), &raw)]),
                    (l.view(), leak),
                ])
                .await?
            }
            None => view.put(path, &raw).await?,
        }
        Ok(Response::empty())
    }

    /// Removes the object at `path`; with `leaks`, its entries in the liveness index too.
    pub(crate) async fn delete(
        view: &View,
        path: &str,
        leaks: Option<&LeakIndex>,
    ) -> Result<Response> {
        if path.is_empty() {
            return Ok(Response::empty());
        }
        let old = match leaks {
            Some(l) => match Self::read_entry(view, path).await? {
                Some(old) => Some((l, l.kv_removals(path, None, &old).await?)),
                None => None,
            },
            None => None,
        };
        match old {
            Some((l, leak)) => {
                View::batch_across(vec![
                    (view, vec![BatchOp::Delete(path.to_owned())]),
                    (l.view(), leak),
                ])
                .await?
            }
            None => view.delete(path).await?,
        }
        Ok(Response::empty())
    }
}

/// The one path of kv v1 and cubbyhole: any JSON object at any path.
pub(crate) const SECRET_SYNOPSIS: &str =
    "Pass-through secret storage: write any JSON object at any path, read it back whole.";

pub(crate) struct KvV1 {
    view: View,
    /// The liveness index: every write's string fields go in with it.
    leaks: LeakIndex,
}

static PATHS: LazyLock<Paths<KvV1>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("{path*}", SECRET_SYNOPSIS)
            .read(handler!(KvV1::read))
            .list(handler!(KvV1::list))
            .write(handler!(KvV1::write))
            .delete(handler!(KvV1::delete))
            .exists(handler!(KvV1::secret_exists)),
    ])
});

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    match cfg.mount.options.get("version").map(String::as_str) {
        None | Some("" | "1") => Ok(Arc::new(KvV1 { view: cfg.view, leaks: cfg.leaks })),
        Some("2") => Ok(crate::kv2::new(cfg.view, Some(cfg.leaks))),
        Some(v) => Err(Error::invalid(format!("kv version must be 1 or 2, not {v:?}"))),
    }
}

impl KvV1 {
    async fn read(&self, r: &Req<'_>) -> Result<Response> {
        KvStore::read(&self.view, r.capture("path"), r.mount.default_lease_ttl.as_secs()).await
    }

    async fn list(&self, r: &Req<'_>) -> Result<Response> {
        KvStore::list(&self.view, r.capture("path")).await
    }

    /// As Vault's kv: `kv-v1/write` names the key as its `data_path`; `kv-v1/delete` does not.
    async fn write(&self, r: &Req<'_>) -> Result<Response> {
        let path = r.capture("path");
        let resp = KvStore::write(&self.view, path, r.data, Some(&self.leaks)).await?;
        Ok(resp.with_event(Event::new("kv-v1", "write", path).data_path(path)))
    }

    async fn delete(&self, r: &Req<'_>) -> Result<Response> {
        let path = r.capture("path");
        let resp = KvStore::delete(&self.view, path, Some(&self.leaks)).await?;
        if path.is_empty() {
            return Ok(resp);
        }
        Ok(resp.with_event(Event::new("kv-v1", "delete", path)))
    }

    async fn secret_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(KvStore::read_entry(&self.view, r.capture("path")).await?.is_some()))
    }
}

/// How many keys an in-place upgrade to version 2 takes at most: it reads them all into
/// memory and writes them in one batch.
const MAX_UPGRADE_KEYS: usize = 10_000;

#[async_trait::async_trait]
impl Framework for KvV1 {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }

    /// Every key's string fields into the liveness index.
    async fn index_live_values(&self) -> Result<u64> {
        let mut n = 0;
        for k in self.view.list_recursive("").await? {
            let Some(data) = KvStore::read_entry(&self.view, &k).await? else { continue };
            let live = self.leaks.kv(&k, None, &data).await?;
            n += live.len() as u64;
            View::batch_across(vec![(self.leaks.view(), coffer_core::leaks::ops(&live))]).await?;
        }
        Ok(n)
    }

    /// Version 1 to 2 (Vault's in-place upgrade): every key becomes a version 2 key whose
    /// version 1 holds its data. Everything is read before anything is written, and the core
    /// writes the result in one batch, so a key whose name looks like the new layout
    /// (`meta/x`) is converted like any other.
    async fn migrate_options(
        &self,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<StorageChange>> {
        if options.get("version").map(String::as_str) != Some("2") {
            return Err(Error::invalid("a kv version 1 mount can only be upgraded to version 2"));
        }
        let keys = self.view.list_recursive("").await?;
        if keys.len() > MAX_UPGRADE_KEYS {
            return Err(Error::invalid(format!(
                "too many keys to upgrade in place ({} > {MAX_UPGRADE_KEYS}): enable a kv \
                 version 2 mount and copy the secrets",
                keys.len()
            )));
        }
        let now = coffer_core::time::now_unix();
        let mut puts = std::collections::BTreeMap::new();
        let mut old = Vec::with_capacity(keys.len());
        for k in keys {
            let Some(raw) = self.view.get(&k).await? else { continue };
            for (nk, v) in crate::kv2::upgraded(&k, &raw, now)? {
                puts.insert(nk, v);
            }
            old.push(k);
        }
        let mut changes: Vec<StorageChange> =
            old.into_iter().filter(|k| !puts.contains_key(k)).map(StorageChange::Delete).collect();
        changes.extend(puts.into_iter().map(|(k, v)| StorageChange::Put(k, v)));
        Ok(changes)
    }
}
