//! The mount tables (secrets engines and auth methods), persisted in the barrier, and the router
//! that picks the mount for a request path by longest prefix.
//!
//! Guarantees: no two mounts overlap (neither path is a prefix of the other), so routing is
//! unambiguous; each mount's storage is its own `logical/<uuid>/` or `auth/<uuid>/` view.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use coffer_barrier::{Barrier, View};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::backend::{BackendConfig, LogicalBackend, MountInfo, Registry};
use crate::logical::{Error, Result};
use crate::random::{random_base62, uuid_v4};
use crate::record;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Secrets,
    Auth,
}

impl Table {
    fn storage_key(self) -> &'static str {
        match self {
            Table::Secrets => "core/mounts",
            Table::Auth => "core/auth",
        }
    }

    /// Vault's OpenAPI tag of the table's operations.
    pub fn tag(self) -> &'static str {
        match self {
            Table::Secrets => "secrets",
            Table::Auth => "auth",
        }
    }

    /// What a mount path looks like from the API (`secret/`, `auth/approle/`).
    pub fn full_path(self, path: &str) -> String {
        match self {
            Table::Secrets => path.to_owned(),
            Table::Auth => format!("auth/{path}"),
        }
    }

    fn view_prefix(self, uuid: &str) -> String {
        match self {
            Table::Secrets => format!("logical/{uuid}/"),
            Table::Auth => format!("auth/{uuid}/"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MountConfig {
    /// Seconds; 0 = the system default.
    pub default_lease_ttl: u64,
    pub max_lease_ttl: u64,
    #[serde(default)]
    pub listing_visibility: String,
    /// Request `data` keys the audit devices log in clear for this mount (Vault's tunable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_non_hmac_request_keys: Vec<String>,
    /// Response `data` keys the audit devices log in clear for this mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_non_hmac_response_keys: Vec<String>,
    /// Recorded and shown, as Vault's: no Coffer engine reads request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough_request_headers: Vec<String>,
    /// Recorded and shown, as Vault's: no Coffer engine sets response headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_response_headers: Vec<String>,
    /// An auth method's tuned `token_type` (`service` or `default-service`; empty = the
    /// default). Coffer issues service tokens only, so this is recorded and shown, as Vault's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_type: String,
}

impl MountConfig {
    /// The `token_type` an auth method's reads show: Vault's `default-service` unless tuned.
    pub fn token_type_shown(&self) -> &str {
        if self.token_type.is_empty() { "default-service" } else { &self.token_type }
    }

    /// The list tunables that are set, with Vault's names (it leaves out empty ones).
    pub fn lists(&self) -> Vec<(&'static str, &Vec<String>)> {
        [
            ("audit_non_hmac_request_keys", &self.audit_non_hmac_request_keys),
            ("audit_non_hmac_response_keys", &self.audit_non_hmac_response_keys),
            ("passthrough_request_headers", &self.passthrough_request_headers),
            ("allowed_response_headers", &self.allowed_response_headers),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountEntry {
    /// Relative to its table, ending in `/`: `secret/`, or `approle/` for `auth/approle/`.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
    pub uuid: String,
    pub accessor: String,
    pub config: MountConfig,
    pub options: BTreeMap<String, String>,
    pub local: bool,
    pub seal_wrap: bool,
}

impl MountEntry {
    pub fn new(path: &str, kind: &str, description: &str) -> Self {
        Self {
            path: path.to_owned(),
            kind: kind.to_owned(),
            description: description.to_owned(),
            uuid: uuid_v4(),
            accessor: format!("{}_{}", kind, &random_base62(8).to_lowercase()),
            config: MountConfig::default(),
            options: BTreeMap::new(),
            local: false,
            seal_wrap: false,
        }
    }

    /// Vault's listing shape for `sys/mounts` and `sys/auth` (OpenBao's `mountInfo`), for an
    /// entry of `table`.
    pub fn to_json(&self, table: Table) -> Value {
        // Mounts the server makes itself have no options (`null`); mounts made through the API
        // have the request's, `{}` when it gave none.
        let built_in = matches!(self.kind.as_str(), "cubbyhole" | "system" | "token" | "identity");
        let options: Map<String, Value> =
            self.options.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
        let mut config = json!({
            "default_lease_ttl": self.config.default_lease_ttl,
            "max_lease_ttl": self.config.max_lease_ttl,
            "force_no_cache": false,
        });
        if !self.config.listing_visibility.is_empty() {
            config["listing_visibility"] = json!(self.config.listing_visibility);
        }
        if self.kind == "system" {
            config["passthrough_request_headers"] = json!(["Accept"]);
        }
        if table == Table::Auth {
            config["token_type"] = json!(self.config.token_type_shown());
        }
        for (k, v) in self.config.lists() {
            config[k] = json!(v);
        }
        let mut out = json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "config": config,
            "options": if options.is_empty() && built_in { Value::Null } else { Value::Object(options) },
            // Vault's cubbyhole is per node and its sys mount is seal-wrapped, whatever the
            // table says.
            "local": self.local || self.kind == "cubbyhole",
            "seal_wrap": self.seal_wrap || self.kind == "system",
            "external_entropy_access": false,
            "plugin_version": "",
            "running_plugin_version": format!("v{}+builtin.coffer", env!("CARGO_PKG_VERSION")),
            "running_sha256": "",
        });
        // Vault's plugin catalog reports the status of the engines and methods it lists, not of
        // the core mounts.
        if !built_in {
            out["deprecation_status"] = json!("supported");
        }
        out
    }
}

#[derive(Serialize, Deserialize)]
struct StoredTable {
    entries: Vec<MountEntry>,
}

crate::record!(StoredTable, "mount table", 1);

pub(crate) async fn load_table(barrier: &Barrier, table: Table) -> Result<Option<Vec<MountEntry>>> {
    match barrier.get(table.storage_key()).await? {
        None => Ok(None),
        Some(raw) => {
            let t: StoredTable = record::decode(&raw)?;
            Ok(Some(t.entries))
        }
    }
}

/// The table's storage key and its stored form, for a caller that writes it in one batch with
/// other changes (a mount's data migration).
pub(crate) fn table_record(
    table: Table,
    entries: &[MountEntry],
) -> Result<(&'static str, zeroize::Zeroizing<Vec<u8>>)> {
    Ok((table.storage_key(), record::encode(&StoredTable { entries: entries.to_vec() })?))
}

pub(crate) async fn save_table(
    barrier: &Barrier,
    table: Table,
    entries: &[MountEntry],
) -> Result<()> {
    let raw = record::encode(&StoredTable { entries: entries.to_vec() })?;
    barrier.put(table.storage_key(), &raw).await?;
    Ok(())
}

/// A mounted backend with everything the pipeline needs to call it.
pub struct Route {
    pub full_path: String,
    pub table: Table,
    pub entry: MountEntry,
    pub info: MountInfo,
    pub view: View,
    pub backend: Arc<dyn LogicalBackend>,
    /// This mount's telemetry counters, kept across router rebuilds.
    pub stats: Arc<crate::metrics::RouteStats>,
    /// The requests in flight in `backend`; shared by every route made for the same running
    /// backend (a tune or a move keeps it).
    pub gate: Arc<Gate>,
}

/// Requests in flight in one running backend, so that the backend can be replaced (a kv
/// version upgrade) without losing what they do.
///
/// Each request holds a read guard while the backend serves it ([`Gate::enter`]). A migration
/// takes the write guard ([`Gate::close`]): it waits for the requests inside to finish, and
/// requests that arrive meanwhile wait behind it (tokio's lock is fair: readers queue behind a
/// waiting writer). Once the new backend is routed the migration retires the gate, and each
/// waiting request looks its mount up again, so it is served by the new backend. Not done
/// here: anything that calls a backend outside the request pipeline (lease revocation, chaos
/// rotation) does not take the gate; kv issues no leases.
#[derive(Default)]
pub struct Gate {
    lock: Arc<tokio::sync::RwLock<()>>,
    retired: std::sync::atomic::AtomicBool,
}

/// A request's place inside a running backend; the backend is not replaced while it is held.
pub(crate) struct InFlight {
    _guard: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// A migration's hold on a backend: no request is inside it while this is held.
pub(crate) struct Closed {
    _guard: tokio::sync::OwnedRwLockWriteGuard<()>,
}

impl Gate {
    /// Waits until no migration holds the backend. `None`: the backend was replaced while
    /// this request waited; the caller must look its mount up again.
    pub(crate) async fn enter(&self) -> Option<InFlight> {
        let guard = self.lock.clone().read_owned().await;
        // Read under the guard: `retire` is only called while the write guard is held.
        if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        Some(InFlight { _guard: guard })
    }

    /// Waits for the requests inside to finish and keeps new ones out until dropped.
    pub(crate) async fn close(&self) -> Closed {
        Closed { _guard: self.lock.clone().write_owned().await }
    }

    /// Sends every request that waits, or comes later, to look its mount up again. Only with
    /// the gate closed (`_closed`), so that no request is inside when this is set.
    pub(crate) fn retire(&self, _closed: &Closed) {
        self.retired.store(true, std::sync::atomic::Ordering::Release);
    }
}

#[derive(Default)]
pub struct Router {
    /// Longest path first, so the first match is the most specific.
    routes: Vec<Arc<Route>>,
}

impl Router {
    pub(crate) fn new(mut routes: Vec<Arc<Route>>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.full_path.len()));
        Self { routes }
    }

    /// The mount serving `path` and the path relative to it. `secret` (without a slash) finds
    /// the `secret/` mount, with an empty relative path.
    pub fn route<'p>(&self, path: &'p str) -> Option<(Arc<Route>, &'p str)> {
        for r in &self.routes {
            if let Some(rest) = path.strip_prefix(r.full_path.as_str()) {
                return Some((r.clone(), rest));
            }
            if r.full_path.strip_suffix('/') == Some(path) {
                return Some((r.clone(), ""));
            }
        }
        None
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    pub fn find_by_kind(&self, kind: &str) -> Option<Arc<Route>> {
        self.routes.iter().find(|r| r.entry.kind == kind).cloned()
    }
}

/// Checks a user-given mount path and normalizes it to end in exactly one `/`.
pub fn normalize_mount_path(path: &str) -> Result<String> {
    let p = path.trim_matches('/');
    if p.is_empty() {
        return Err(Error::invalid("mount path cannot be empty"));
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        || p.chars().any(|c| c.is_control() || c == '*' || c == '+' || c == ' ')
    {
        return Err(Error::invalid(format!("invalid mount path {path:?}")));
    }
    Ok(format!("{p}/"))
}

/// Builds the route for `entry` by calling its registered factory.
#[allow(clippy::too_many_arguments)] // reason: one argument per part of a route; a struct for one caller adds nothing
pub(crate) fn build_route(
    stats: Arc<crate::metrics::RouteStats>,
    barrier: &Arc<Barrier>,
    registry: &Registry,
    table: Table,
    entry: MountEntry,
    sys_default: Duration,
    sys_max: Duration,
    builtin: Option<Arc<dyn LogicalBackend>>,
    gate: Arc<Gate>,
) -> Result<Arc<Route>> {
    let view = View::new(barrier.clone(), table.view_prefix(&entry.uuid));
    let info = MountInfo {
        path: table.full_path(&entry.path),
        kind: entry.kind.clone(),
        uuid: entry.uuid.clone(),
        accessor: entry.accessor.clone(),
        default_lease_ttl: match entry.config.default_lease_ttl {
            0 => sys_default,
            s => Duration::from_secs(s),
        },
        max_lease_ttl: match entry.config.max_lease_ttl {
            0 => sys_max,
            s => Duration::from_secs(s),
        },
        options: entry.options.clone(),
    };
    let backend = match builtin {
        Some(b) => b,
        None => {
            let factories = match table {
                Table::Secrets => &registry.secrets,
                Table::Auth => &registry.auth,
            };
            let factory = factories.get(&entry.kind).ok_or_else(|| {
                Error::invalid(format!("plugin not found in the catalog: {}", entry.kind))
            })?;
            factory(BackendConfig {
                view: view.clone(),
                mount: info.clone(),
                passwords: crate::password_policy::Passwords::new(barrier.clone()),
                leaks: crate::leaks::LeakIndex::new(barrier.clone(), &entry.uuid),
            })?
        }
    };
    Ok(Arc::new(Route {
        full_path: info.path.clone(),
        table,
        entry,
        info,
        view,
        backend,
        stats,
        gate,
    }))
}

/// Whether two mount paths would overlap.
pub(crate) fn conflicts(a: &str, b: &str) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_normalized_and_checked() {
        assert_eq!(normalize_mount_path("secret").expect("ok"), "secret/");
        assert_eq!(normalize_mount_path("/a/b/").expect("ok"), "a/b/");
        for bad in ["", "/", "a//b", "a/../b", "a*", "a b"] {
            assert!(normalize_mount_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlapping_mounts_conflict() {
        assert!(conflicts("secret/", "secret/sub/"));
        assert!(conflicts("secret/sub/", "secret/"));
        assert!(!conflicts("secret/", "secrets/"));
    }
}
