//! The `database` secrets engine (Vault's, with its PostgreSQL plugin built in): connection
//! configs, dynamic roles whose credentials are leased database users, static roles whose
//! existing users' passwords Coffer rotates, and root credential rotation.
//!
//! Guarantees: no read returns a connection password or the root password; errors and logs
//! have passwords scrubbed; a dynamic user is created in one transaction or not at all, and
//! its revocation is idempotent (a user already gone is success); a static role's password is
//! recorded as pending before the database is changed, so a crash between the two is settled
//! on the next rotation rather than losing the password; the rotation task holds only a weak
//! reference, so it ends when the mount is unmounted or the server seals.
//! Not guaranteed: rotation to the second (the task ticks every second and retries failures
//! with backoff); plugins other than `postgresql-database-plugin`.

mod config;
mod cron;
mod postgres;
mod roles;
mod static_roles;
mod template;
mod username;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::password_policy::Passwords;
use coffer_core::{
    BackendConfig, BackendRequest, Error, LeaseRequest, LogicalBackend, Operation, Response,
    Result, SecretString, View,
};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use self::postgres::Conn;

/// The only plugin this engine has.
pub(crate) const PLUGIN: &str = "postgresql-database-plugin";

/// How often the rotation task looks for due static roles.
const TICK: Duration = Duration::from_secs(1);

/// Where generated passwords come from: the server's named policies, or (in unit tests that
/// build the engine without a core) only the default policy.
#[derive(Clone)]
pub(crate) enum PasswordSource {
    Policies(Passwords),
    #[cfg(test)]
    DefaultOnly,
}

impl PasswordSource {
    pub(crate) async fn generate(&self, policy: &str) -> Result<SecretString> {
        match self {
            PasswordSource::Policies(p) => p.generate(policy).await,
            #[cfg(test)]
            PasswordSource::DefaultOnly if policy.is_empty() => Ok(SecretString::new(
                coffer_core::password_policy::PasswordPolicy::default_policy().generate(),
            )),
            #[cfg(test)]
            PasswordSource::DefaultOnly => {
                Err(Error::invalid(format!("password policy {policy:?} does not exist")))
            }
        }
    }
}

pub(crate) struct Database {
    view: View,
    passwords: PasswordSource,
    /// Open pools by config name.
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// Serializes changes to configs, roles and static roles; never held across a static
    /// role's rotation (its database round trips).
    lock: Mutex<()>,
    /// One per static role: serializes that role's writes, deletion and rotations, so two
    /// rotations of one role never interleave. Lock order: a static role's lock, then `lock`,
    /// then `root_lock`.
    static_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Serializes root rotation with settling a root rotation a crash interrupted.
    root_lock: Mutex<()>,
    /// Next rotation time of each static role, loaded on the first tick.
    due: Mutex<Option<HashMap<String, u64>>>,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    let db = Database::new(cfg.view, PasswordSource::Policies(cfg.passwords));
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(rotation_task(Arc::downgrade(&db)));
    }
    Ok(db)
}

/// Rotates due static roles until the engine is dropped (unmount, seal) or its storage seals.
async fn rotation_task(db: Weak<Database>) {
    loop {
        tokio::time::sleep(TICK).await;
        let Some(db) = db.upgrade() else { return };
        match db.tick().await {
            Ok(()) => {}
            Err(Error::Sealed) => return,
            Err(e) => tracing::warn!(error = %e, "database engine: rotation pass failed"),
        }
    }
}

/// Vault's name rule: word characters, with `-` and `.` inside.
pub(crate) fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
    !name.is_empty()
        && name.chars().all(|c| ok(c) || matches!(c, '-' | '.'))
        && name.starts_with(ok)
        && name.ends_with(ok)
}

pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {kind} name {name:?}: use letters, digits, '_', '-' and '.'"
        )))
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(raw: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| Error::Internal(format!("database {what} decode: {e}")))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>> {
    serde_json::to_vec(v).map(Zeroizing::new).map_err(|e| Error::Internal(e.to_string()))
}

pub(crate) fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Statement lists: a JSON array, or one string (which may hold several `;`-separated
/// statements). Unlike Vault's comma-separated string form, a string is never split on `,`,
/// since SQL is full of commas.
pub(crate) fn statements(data: &Map<String, Value>, k: &str) -> Result<Option<Vec<String>>> {
    match data.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(Vec::new())),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    Error::invalid(format!("{k:?} must be a string or a list of strings"))
                })
            })
            .filter(|r| r.as_ref().map_or(true, |s| !s.trim().is_empty()))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(Error::invalid(format!("{k:?} must be a string or a list of strings"))),
    }
}

/// Which endpoint a relative path names.
enum Route<'a> {
    ConfigList,
    Config(&'a str),
    Reset(&'a str),
    RotateRoot(&'a str),
    RoleList,
    Role(&'a str),
    Creds(&'a str),
    StaticRoleList,
    StaticRole(&'a str),
    StaticCreds(&'a str),
    RotateRole(&'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let parts: Vec<&str> = path.split('/').collect();
    Some(match parts.as_slice() {
        ["config"] | ["config", ""] => Route::ConfigList,
        ["config", n] => Route::Config(n),
        ["reset", n] => Route::Reset(n),
        ["rotate-root", n] => Route::RotateRoot(n),
        ["roles"] | ["roles", ""] => Route::RoleList,
        ["roles", n] => Route::Role(n),
        ["creds", n] => Route::Creds(n),
        ["static-roles"] | ["static-roles", ""] => Route::StaticRoleList,
        ["static-roles", n] => Route::StaticRole(n),
        ["static-creds", n] => Route::StaticCreds(n),
        ["rotate-role", n] => Route::RotateRole(n),
        _ => return None,
    })
}

impl Database {
    pub(crate) fn new(view: View, passwords: PasswordSource) -> Arc<Self> {
        Arc::new(Self {
            view,
            passwords,
            conns: Mutex::new(HashMap::new()),
            lock: Mutex::new(()),
            static_locks: Mutex::new(HashMap::new()),
            root_lock: Mutex::new(()),
            due: Mutex::new(None),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Response> {
        let keys = self.view.list(prefix).await?;
        if keys.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(Response::list(keys))
    }

    /// Holds static role `name`'s own lock (see [`Database::static_locks`]).
    pub(crate) async fn static_lock(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self.static_locks.lock().await.entry(name.to_owned()).or_default().clone();
        m.lock_owned().await
    }

    /// Drops and closes the pool of `name`, if open.
    pub(crate) async fn close_conn(&self, name: &str) {
        if let Some(c) = self.conns.lock().await.remove(name) {
            c.close();
        }
    }

    async fn tick(&self) -> Result<()> {
        for c in self.conns.lock().await.values() {
            c.trim_idle();
        }
        self.rotate_due().await
    }
}

#[async_trait]
impl LogicalBackend for Database {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        use Operation::*;
        let Some(r) = route(req.path) else {
            return Err(Error::UnsupportedPath(format!("{}{}", req.mount.path, req.path)));
        };
        match (r, req.operation) {
            (Route::ConfigList, List) => self.list("config/").await,
            (Route::Config(n), Create | Update) => self.write_config(req, n).await,
            (Route::Config(n), Read) => self.read_config(n).await,
            (Route::Config(n), Delete) => self.delete_config(n).await,
            (Route::Reset(n), Create | Update) => self.reset(n).await,
            (Route::RotateRoot(n), Create | Update) => self.rotate_root(n).await,
            (Route::RoleList, List) => self.list("role/").await,
            (Route::Role(n), Create | Update) => self.write_role(req, n).await,
            (Route::Role(n), Read) => self.read_role(n).await,
            (Route::Role(n), Delete) => self.delete_role(n).await,
            (Route::Creds(n), Read) => self.creds(req, n).await,
            (Route::StaticRoleList, List) => self.list("static-role/").await,
            (Route::StaticRole(n), Create | Update) => self.write_static_role(req, n).await,
            (Route::StaticRole(n), Read) => self.read_static_role(n).await,
            (Route::StaticRole(n), Delete) => self.delete_static_role(n).await,
            (Route::StaticCreds(n), Read) => self.static_creds(n).await,
            (Route::RotateRole(n), Create | Update) => self.rotate_role(n).await,
            _ => Err(Error::UnsupportedOperation),
        }
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>> {
        let key = match route(req.path) {
            Some(Route::Config(n)) => format!("config/{n}"),
            Some(Route::Role(n)) => format!("role/{n}"),
            Some(Route::StaticRole(n)) => format!("static-role/{n}"),
            _ => return Ok(None),
        };
        Ok(Some(self.view.get(&key).await?.is_some()))
    }

    async fn renew_lease(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        self.renew_creds(lease).await
    }

    async fn revoke_lease(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        self.revoke_creds(lease).await
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn routes_match_vaults_paths() {
        assert!(matches!(route("config/"), Some(Route::ConfigList)));
        assert!(matches!(route("config/pg"), Some(Route::Config("pg"))));
        assert!(matches!(route("rotate-root/pg"), Some(Route::RotateRoot("pg"))));
        assert!(matches!(route("creds/ro"), Some(Route::Creds("ro"))));
        assert!(matches!(route("static-creds/ro"), Some(Route::StaticCreds("ro"))));
        assert!(matches!(route("static-roles"), Some(Route::StaticRoleList)));
        assert!(route("creds/a/b").is_none());
        assert!(route("nope/x").is_none());
    }

    #[test]
    fn statement_fields_take_a_string_or_a_list() {
        let m = into_map(serde_json::json!({
            "one": "CREATE ROLE a; GRANT x, y TO a;",
            "many": ["A", "", "B"],
            "empty": "",
            "bad": 3,
        }));
        assert_eq!(
            statements(&m, "one").expect("ok"),
            Some(vec!["CREATE ROLE a; GRANT x, y TO a;".to_owned()])
        );
        assert_eq!(statements(&m, "many").expect("ok"), Some(vec!["A".into(), "B".into()]));
        assert_eq!(statements(&m, "empty").expect("ok"), Some(vec![]));
        assert_eq!(statements(&m, "missing").expect("ok"), None);
        assert!(statements(&m, "bad").is_err());
    }

    #[test]
    fn names_follow_vaults_rule() {
        for ok in ["pg", "my-db.1", "a_b"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", "a\"b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_never_print() {
        assert!(!format!("{:?}", SecretString::from("hunter2")).contains("hunter2"));
        let cfg: config::DbConfig = serde_json::from_value(serde_json::json!({
            "version": 1,
            "plugin_name": "postgresql-database-plugin",
            "connection_url": "postgres://root:hunter2@db:5432/app",
            "username": "root",
            "password": "hunter2-root",
            "pending_password": "hunter2-next",
            "allowed_roles": [],
            "password_policy": "",
            "verify_connection": true,
            "max_open_connections": 4,
            "max_idle_connections": 0,
            "max_connection_lifetime": 0,
            "username_template": "",
            "root_rotation_statements": [],
        }))
        .expect("record");
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let role: static_roles::StaticRole = serde_json::from_value(serde_json::json!({
            "db_name": "pg", "username": "app", "password": "hunter2-static",
            "pending_password": "hunter2-pending",
        }))
        .expect("record");
        assert!(!format!("{role:?}").contains("hunter2"), "{role:?}");
    }
}
