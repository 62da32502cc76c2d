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
mod scram;
mod static_roles;
mod template;
mod username;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::framework::{Field, Framework, Path, Paths, Req, handler, list_response};
use coffer_core::password_policy::Passwords;
use coffer_core::{
    BackendConfig, Error, LeaseRequest, LogicalBackend, Response, Result, SecretString, View,
};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

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
    /// The liveness index (none in unit tests): static passwords as they settle, dynamic
    /// ones through their leases.
    pub(crate) leaks: Option<coffer_core::leaks::LeakIndex>,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    let db = Database::new(cfg.view, PasswordSource::Policies(cfg.passwords), Some(cfg.leaks));
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

pub(crate) use coffer_core::logical::into_map;

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

static PATHS: LazyLock<Paths<Database>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("config", "The configured database connections.")
            .list(handler!(Database::list_configs)),
        Path::new("config/{name}", "A database connection: plugin, URL, root user, pool.")
            .fields(NAME)
            .fields(config::FIELDS)
            .read(handler!(Database::read_config))
            .write(handler!(Database::write_config))
            .delete(handler!(Database::delete_config))
            .exists(handler!(Database::config_exists))
            .warn_unknown(),
        Path::new("reset/{name}", "Close a connection's pool; the next use opens a new one.")
            .fields(NAME)
            .write(handler!(Database::reset)),
        Path::new("rotate-root/{name}", "Rotate the root user's password of a connection.")
            .fields(NAME)
            .write(handler!(Database::rotate_root)),
        Path::new("roles", "The dynamic roles.").list(handler!(Database::list_roles)),
        Path::new("roles/{name}", "A dynamic role: how its leased users are created and dropped.")
            .fields(NAME)
            .fields(roles::FIELDS)
            .read(handler!(Database::read_role))
            .write(handler!(Database::write_role))
            .delete(handler!(Database::delete_role))
            .exists(handler!(Database::role_exists))
            .warn_unknown(),
        Path::new("creds/{name}", "A new leased user of a dynamic role.")
            .fields(NAME)
            .read(handler!(Database::creds)),
        Path::new("static-roles", "The static roles.").list(handler!(Database::list_static_roles)),
        Path::new(
            "static-roles/{name}",
            "A static role: an existing user whose password Coffer rotates.",
        )
        .fields(NAME)
        .fields(static_roles::FIELDS)
        .read(handler!(Database::read_static_role))
        .write(handler!(Database::write_static_role))
        .delete(handler!(Database::delete_static_role))
        .exists(handler!(Database::static_role_exists))
        .warn_unknown(),
        Path::new("static-creds/{name}", "A static role's current password.")
            .fields(NAME)
            .read(handler!(Database::static_creds)),
        Path::new("rotate-role/{name}", "Rotate a static role's password now.")
            .fields(NAME)
            .write(handler!(Database::rotate_role)),
    ])
});

/// The capture every named path has, documented once.
const NAME: &[Field] = &[Field::str("name", "The name of the config or role.")];

impl Database {
    pub(crate) fn new(
        view: View,
        passwords: PasswordSource,
        leaks: Option<coffer_core::leaks::LeakIndex>,
    ) -> Arc<Self> {
        Arc::new(Self {
            leaks,
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
        list_response(self.view.list(prefix).await?)
    }

    async fn list_configs(&self, _r: &Req<'_>) -> Result<Response> {
        self.list("config/").await
    }

    async fn list_roles(&self, _r: &Req<'_>) -> Result<Response> {
        self.list("role/").await
    }

    async fn list_static_roles(&self, _r: &Req<'_>) -> Result<Response> {
        self.list("static-role/").await
    }

    async fn stored(&self, key: String) -> Result<Option<bool>> {
        Ok(Some(self.view.get(&key).await?.is_some()))
    }

    async fn config_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        self.stored(format!("config/{}", r.capture("name"))).await
    }

    async fn role_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        self.stored(format!("role/{}", r.capture("name"))).await
    }

    async fn static_role_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        self.stored(format!("static-role/{}", r.capture("name"))).await
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
impl Framework for Database {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }

    /// Every static role's current password into the liveness index (dynamic credentials
    /// issued before the index are not: their passwords are not kept).
    async fn index_live_values(&self) -> Result<u64> {
        let Some(l) = &self.leaks else { return Ok(0) };
        let mut n = 0;
        for name in self.view.list("static-role/").await? {
            let Some(r) = self.static_role(&name).await? else { continue };
            if r.password().is_empty() {
                continue;
            }
            let live = l.database_static(r.password().expose(), &name).await?;
            View::batch_across(vec![(l.view(), vec![live.op()])]).await?;
            n += 1;
        }
        Ok(n)
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
    fn paths_match_vaults() {
        let route = |p: &str| PATHS.matching(p);
        assert_eq!(route("config/"), Some("config"));
        assert_eq!(route("config/pg"), Some("config/{name}"));
        assert_eq!(route("rotate-root/pg"), Some("rotate-root/{name}"));
        assert_eq!(route("creds/ro"), Some("creds/{name}"));
        assert_eq!(route("static-creds/ro"), Some("static-creds/{name}"));
        assert_eq!(route("static-roles"), Some("static-roles"));
        assert_eq!(route("creds/a/b"), None);
        assert_eq!(route("nope/x"), None);
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
