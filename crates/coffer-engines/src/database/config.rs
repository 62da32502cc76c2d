//! `config/:name`, `reset/:name` and `rotate-root/:name`: connection configs and their pools.
//!
//! Guarantees: the connection password (field `password`, or one written into
//! `connection_url`) is never in a read answer; a write that fails validation or the
//! connection check stores nothing and leaves the open pool as it was; a root rotation records
//! the new password as pending before changing it in PostgreSQL, so a crash in between is
//! settled the next time the pool is opened (whichever of the two passwords logs in wins); a
//! rotation that fails keeps the pending password the same way, since a failure after COMMIT
//! was sent does not say whether the change happened.

use std::sync::Arc;
use std::time::Duration;

use coffer_core::framework::{Default, Field, Req};
use coffer_core::record;
use coffer_core::{Error, Response, Result, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::postgres::{Conn, DEFAULT_ROOT_ROTATE, PoolSettings, unverified_tls};
use super::template::{Vars, connection_url};
use super::username::{DEFAULT_TEMPLATE, Template};
use super::{Database, PLUGIN, check_name, into_map, statements};

/// `Debug` shows the connection URL with any written-in password masked, and the passwords
/// only as redacted.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct DbConfig {
    pub(crate) plugin_name: String,
    /// As written, with `{{username}}`/`{{password}}` unfilled.
    pub(crate) connection_url: String,
    pub(crate) username: String,
    pub(crate) password: SecretString,
    /// A root password being rotated to; see the module header.
    #[serde(default)]
    pub(crate) pending_password: Option<SecretString>,
    pub(crate) allowed_roles: Vec<String>,
    pub(crate) password_policy: String,
    pub(crate) verify_connection: bool,
    pub(crate) max_open_connections: u64,
    pub(crate) max_idle_connections: u64,
    pub(crate) max_connection_lifetime: u64,
    pub(crate) username_template: String,
    pub(crate) root_rotation_statements: Vec<String>,
    /// `password`, `scram-sha-256`, or empty (never written: `password`). Kept as written, so
    /// that a read shows what was written, as Vault's does.
    #[serde(default)]
    pub(crate) password_authentication: String,
    /// Which of the pool settings (`max_*`) a write named: a read shows only those among the
    /// connection details, as Vault shows only the details it was given.
    #[serde(default)]
    pub(crate) pool_fields_given: Vec<String>,
}

coffer_core::record!(DbConfig, "database config", 1);

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("plugin_name", &self.plugin_name)
            .field("connection_url", &redact_url(&self.connection_url))
            .field("username", &self.username)
            .field("password", &self.password)
            .field("pending_password", &self.pending_password)
            .field("allowed_roles", &self.allowed_roles)
            .field("password_policy", &self.password_policy)
            .field("verify_connection", &self.verify_connection)
            .field("max_open_connections", &self.max_open_connections)
            .field("max_idle_connections", &self.max_idle_connections)
            .field("max_connection_lifetime", &self.max_connection_lifetime)
            .field("username_template", &self.username_template)
            .field("root_rotation_statements", &self.root_rotation_statements)
            .field("password_authentication", &self.password_authentication)
            .finish()
    }
}

const POOL_FIELDS: [&str; 3] =
    ["max_open_connections", "max_idle_connections", "max_connection_lifetime"];

pub(crate) const FIELDS: &[Field] = &[
    Field::str("plugin_name", "The plugin: only `postgresql-database-plugin`."),
    Field::str("plugin_version", "Must be empty: only the built-in plugin exists."),
    Field::str(
        "connection_url",
        "PostgreSQL connection string, with `{{username}}` and `{{password}}` templates.",
    ),
    Field::str("username", "The root user the engine connects as."),
    Field::str("password", "The root user's password; never shown again."),
    Field::comma_list("allowed_roles", "Roles that may use this connection (`*` globs)."),
    Field::str("password_policy", "Named password policy for generated passwords."),
    Field::bool("verify_connection", "Connect once before storing the config.")
        .default(Default::Bool(true)),
    Field::int("max_open_connections", "Pool size.").default(Default::Int(4)),
    Field::int("max_idle_connections", "Idle connections kept; 0: as many as open."),
    Field::duration("max_connection_lifetime", "How long a pooled connection lives; 0: no limit."),
    Field::str("username_template", "Template for generated user names."),
    Field::str_list("root_rotation_statements", "SQL run to change the root password."),
    Field::str(
        "password_authentication",
        "`password` (the default): `{{password}}` is the password, which PostgreSQL hashes; \
         `scram-sha-256`: its SCRAM-SHA-256 verifier, computed by Coffer, so PostgreSQL never \
         receives the password.",
    ),
];

/// `password_authentication`'s value for verifiers computed by Coffer.
pub(crate) const SCRAM: &str = "scram-sha-256";

impl DbConfig {
    /// Whether `role` may use this connection (`*` globs, as Vault's `StrListContainsGlob`).
    pub(crate) fn allows(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|p| coffer_core::glob::glob_match(p, role))
    }

    pub(crate) fn template(&self) -> Result<Template> {
        Template::parse(if self.username_template.is_empty() {
            DEFAULT_TEMPLATE
        } else {
            &self.username_template
        })
    }

    fn settings<'a>(&'a self, url: &'a str, password: &'a str) -> PoolSettings<'a> {
        PoolSettings {
            url,
            username: &self.username,
            password,
            max_open: self.max_open_connections as usize,
            max_idle: self.max_idle_connections as usize,
            max_lifetime: Duration::from_secs(self.max_connection_lifetime),
        }
    }

    /// What `{{password}}` becomes in this connection's statements: `password` itself, or
    /// its SCRAM-SHA-256 verifier (`password_authentication = "scram-sha-256"`).
    /// The derivation (about 1 ms of CPU) runs on the blocking pool, not on a request worker.
    pub(crate) async fn statement_password(
        &self,
        password: &str,
    ) -> Result<zeroize::Zeroizing<String>> {
        let password = zeroize::Zeroizing::new(password.to_owned());
        match self.password_authentication.as_str() {
            SCRAM => tokio::task::spawn_blocking(move || super::scram::verifier(&password))
                .await
                .map_err(|e| Error::Internal(format!("SCRAM derivation task failed: {e}")))?,
            _ => Ok(password),
        }
    }

    /// A pool that logs in with `password`.
    pub(crate) fn open(&self, password: &str) -> Result<Conn> {
        let url = connection_url(&self.connection_url, &self.username, password);
        let mut conn = Conn::open(&self.settings(&url, password))?;
        for p in literal_passwords(&self.connection_url) {
            conn.add_secret(&p);
        }
        Ok(conn)
    }
}

/// What stands for the connection password in a templated connection string.
const TEMPLATE: &str = "{{password}}";

/// The passwords written into a connection string other than the `{{password}}` template, in
/// any of the three forms PostgreSQL takes: `scheme://user:password@host`, a `password=` query
/// parameter, and a `password=` key in a `key=value` string (see [`coffer_pg`], whose parser
/// reads them exactly as it reads the password that logs in).
pub(crate) fn literal_passwords(url: &str) -> Vec<String> {
    let mut v = coffer_pg::written_passwords(url);
    v.retain(|p| p != TEMPLATE);
    v.dedup();
    v
}

/// The connection string with every written-in password replaced by `xxxxx`, as Go's
/// `url.Redacted` does for URLs (Vault's read answer); the `{{password}}` template is kept.
pub(crate) fn redact_url(url: &str) -> String {
    coffer_pg::redact(url, |p| p == TEMPLATE)
}

impl Database {
    pub(crate) async fn config(&self, name: &str) -> Result<Option<DbConfig>> {
        record::load(&self.view, &format!("config/{name}")).await
    }

    pub(crate) async fn must_config(&self, name: &str) -> Result<DbConfig> {
        self.config(name)
            .await?
            .ok_or_else(|| Error::invalid(format!("database config {name:?} does not exist")))
    }

    /// The config `db_name`, which must allow the role `role`.
    pub(crate) async fn config_for_role(&self, db_name: &str, role: &str) -> Result<DbConfig> {
        let cfg = self.must_config(db_name).await?;
        if !cfg.allows(role) {
            return Err(Error::invalid(format!(
                "{role:?} is not an allowed role of database config {db_name:?}"
            )));
        }
        Ok(cfg)
    }

    pub(crate) async fn store_config(&self, name: &str, c: &DbConfig) -> Result<()> {
        self.view.put(&format!("config/{name}"), &record::encode(c)?).await?;
        Ok(())
    }

    /// The open pool for config `name`, opening it (and settling an interrupted root
    /// rotation) when needed.
    pub(crate) async fn conn(&self, name: &str) -> Result<Arc<Conn>> {
        if let Some(c) = self.conns.lock().await.get(name) {
            return Ok(c.clone());
        }
        let cfg = self.must_config(name).await?;
        let conn = if cfg.pending_password.is_some() {
            self.settle_root(name).await?
        } else {
            Arc::new(cfg.open(cfg.password.expose())?)
        };
        let mut conns = self.conns.lock().await;
        Ok(conns.entry(name.to_owned()).or_insert(conn).clone())
    }

    /// After a crash mid root rotation: keeps whichever password logs in.
    async fn settle_root(&self, name: &str) -> Result<Arc<Conn>> {
        let _g = self.root_lock.lock().await;
        let mut cfg = self.must_config(name).await?;
        let Some(pending) = cfg.pending_password.take() else {
            return Ok(Arc::new(cfg.open(cfg.password.expose())?));
        };
        let current = cfg.open(cfg.password.expose())?;
        if current.verify().await.is_ok() {
            self.store_config(name, &cfg).await?;
            return Ok(Arc::new(current));
        }
        current.close();
        let next = cfg.open(pending.expose())?;
        next.verify().await?;
        tracing::info!(config = name, "database engine: completed an interrupted root rotation");
        cfg.password = pending;
        self.store_config(name, &cfg).await?;
        Ok(Arc::new(next))
    }

    pub(crate) async fn write_config(&self, req: &Req<'_>) -> Result<Response> {
        let name = req.capture("name");
        check_name("config", name)?;
        let f = req.fields();
        // Both locks, in their order: settling an interrupted root rotation (which holds only
        // root_lock) must not store its view of the config over this write.
        let _g = self.lock.lock().await;
        let _r = self.root_lock.lock().await;
        let existing = self.config(name).await?;
        let mut c = existing.clone().unwrap_or(DbConfig {
            plugin_name: String::new(),
            connection_url: String::new(),
            username: String::new(),
            password: SecretString::default(),
            pending_password: None,
            allowed_roles: Vec::new(),
            password_policy: String::new(),
            verify_connection: true,
            max_open_connections: 4,
            max_idle_connections: 0,
            max_connection_lifetime: 0,
            username_template: String::new(),
            root_rotation_statements: Vec::new(),
            password_authentication: String::new(),
            pool_fields_given: Vec::new(),
        });
        for k in POOL_FIELDS {
            if f.has(k) && !c.pool_fields_given.iter().any(|g| g == k) {
                c.pool_fields_given.push(k.to_owned());
            }
        }
        if let Some(p) = f.str("plugin_name")? {
            c.plugin_name = p;
        }
        if c.plugin_name.is_empty() {
            return Err(Error::invalid("empty plugin name"));
        }
        if c.plugin_name != PLUGIN {
            return Err(Error::invalid(format!(
                "unsupported plugin_name {:?}: Coffer's database engine has only {PLUGIN:?}",
                c.plugin_name
            )));
        }
        if let Some(v) = f.str("plugin_version")?
            && !v.is_empty()
        {
            return Err(Error::invalid(format!(
                "plugin_version {v:?}: only the built-in plugin exists; omit plugin_version"
            )));
        }
        if let Some(u) = f.str("connection_url")? {
            c.connection_url = u;
        }
        if c.connection_url.trim().is_empty() {
            return Err(Error::invalid("connection_url cannot be empty"));
        }
        if let Some(u) = f.str("username")? {
            c.username = u;
        }
        if let Some(p) = f.str("password")? {
            c.password = SecretString::from(p.as_str());
        }
        for (field, v) in [("username", c.username.as_str()), ("password", c.password.expose())] {
            if v.contains("{{username}}") || v.contains("{{password}}") {
                return Err(Error::invalid(format!(
                    "{field} cannot contain the template variables"
                )));
            }
        }
        if let Some(r) = f.list("allowed_roles")? {
            c.allowed_roles = r;
        }
        if let Some(p) = f.str("password_policy")? {
            c.password_policy = p;
        }
        if !c.password_policy.is_empty() {
            // Fails with a 400 naming the policy when it does not exist.
            self.passwords.generate(&c.password_policy).await?;
        }
        c.verify_connection = f.bool("verify_connection")?.unwrap_or(true);
        if let Some(n) = f.u64("max_open_connections")? {
            c.max_open_connections = n;
        }
        if c.max_open_connections == 0 {
            c.max_open_connections = 4;
        }
        if let Some(n) = f.u64("max_idle_connections")? {
            c.max_idle_connections = n;
        }
        if c.max_idle_connections == 0 || c.max_idle_connections > c.max_open_connections {
            c.max_idle_connections = c.max_open_connections;
        }
        if let Some(s) = f.secs("max_connection_lifetime")? {
            c.max_connection_lifetime = s;
        }
        if let Some(t) = f.str("username_template")? {
            c.username_template = t;
        }
        c.template()?;
        if let Some(s) = statements(req.data, "root_rotation_statements")? {
            c.root_rotation_statements = s;
        }
        if let Some(a) = f.str("password_authentication")? {
            c.password_authentication = match a.as_str() {
                "" => String::new(),
                "password" | SCRAM => a,
                other => {
                    return Err(Error::invalid(format!(
                        "password_authentication {other:?}: must be \"password\" or \"{SCRAM}\""
                    )));
                }
            };
        }
        let conn = c.open(c.password.expose())?;
        if c.verify_connection {
            conn.verify()
                .await
                .map_err(|e| Error::invalid(format!("error creating database object: {e}")))?;
        }
        self.store_config(name, &c).await?;
        if let Some(old) = self.conns.lock().await.insert(name.to_owned(), Arc::new(conn)) {
            old.close();
        }
        let mut warnings = Vec::new();
        if !literal_passwords(&c.connection_url).is_empty() {
            warnings.push(
                "Password found in connection_url, use a templated url to enable root \
                 rotation and prevent read access to password information."
                    .into(),
            );
        }
        if unverified_tls(&c.connection_url) {
            warnings.push(
                "connection_url does not authenticate the server (sslmode prefer, or require \
                 without sslrootcert): use sslmode=verify-full with sslrootcert in production"
                    .into(),
            );
        }
        Ok(Response { warnings, ..Response::default() })
    }

    pub(crate) async fn read_config(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let c = self.config(name).await?.ok_or(Error::NotFound)?;
        let mut details = into_map(json!({
            "connection_url": redact_url(&c.connection_url),
            "username": c.username,
        }));
        for k in &c.pool_fields_given {
            let v = match k.as_str() {
                "max_open_connections" => json!(c.max_open_connections),
                "max_idle_connections" => json!(c.max_idle_connections),
                "max_connection_lifetime" => json!(format!("{}s", c.max_connection_lifetime)),
                _ => continue,
            };
            details.insert(k.clone(), v);
        }
        if !c.username_template.is_empty() {
            details.insert("username_template".into(), json!(c.username_template));
        }
        if !c.password_authentication.is_empty() {
            details.insert("password_authentication".into(), json!(c.password_authentication));
        }
        Ok(Response::data(into_map(json!({
            "plugin_name": c.plugin_name,
            "plugin_version": "",
            "connection_details": details,
            "allowed_roles": c.allowed_roles,
            "root_credentials_rotate_statements": c.root_rotation_statements,
            "password_policy": c.password_policy,
        }))))
    }

    /// Refused while a role or static role names the config: the leases they issued are
    /// revoked through it (see docs/database.md for what remains when a config is recreated).
    pub(crate) async fn delete_config(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _g = self.lock.lock().await;
        // Also root_lock, so a settling root rotation cannot store the config back.
        let _r = self.root_lock.lock().await;
        let mut users = Vec::new();
        for r in self.view.list("role/").await? {
            if self.role(&r).await?.is_some_and(|x| x.db_name == name) {
                users.push(format!("role {r:?}"));
            }
        }
        for r in self.view.list("static-role/").await? {
            if self.static_role(&r).await?.is_some_and(|x| x.db_name == name) {
                users.push(format!("static role {r:?}"));
            }
        }
        if !users.is_empty() {
            return Err(Error::invalid(format!(
                "database config {name:?} is still used by {}; delete or move them first",
                users.join(", ")
            )));
        }
        self.view.delete(&format!("config/{name}")).await?;
        self.close_conn(name).await;
        Ok(Response::empty())
    }

    /// Closes the pool and opens a fresh one, checking that it connects.
    pub(crate) async fn reset(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        self.must_config(name).await?;
        self.close_conn(name).await;
        self.conn(name).await?.verify().await?;
        Ok(Response::empty())
    }

    /// Rotates the root password. Holds `lock` (so no config write or delete interleaves) and
    /// then `root_lock` (so settling cannot run meanwhile), in that order, and re-reads the
    /// record before each store so only the password fields it owns are changed.
    pub(crate) async fn rotate_root(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _g = self.lock.lock().await;
        let _r = self.root_lock.lock().await;
        let cfg = self.must_config(name).await?;
        if cfg.username.is_empty() {
            return Err(Error::invalid(
                "unable to rotate root credentials: no username in configuration",
            ));
        }
        if cfg.password.is_empty() {
            return Err(Error::invalid(
                "unable to rotate root credentials: no password in configuration",
            ));
        }
        if !literal_passwords(&cfg.connection_url).is_empty() {
            return Err(Error::invalid(
                "unable to rotate root credentials: connection_url has a password written into \
                 it, which would keep being used after rotation; write the URL with \
                 {{password}} templating (and the password in the password field) first",
            ));
        }
        let new = self.passwords.generate(&cfg.password_policy).await?;
        let conn = cfg.open(cfg.password.expose())?;
        let mut rec = self.must_config(name).await?;
        rec.pending_password = Some(SecretString::from(new.expose()));
        self.store_config(name, &rec).await?;
        let stmts = if cfg.root_rotation_statements.is_empty() {
            vec![DEFAULT_ROOT_ROTATE.to_owned()]
        } else {
            cfg.root_rotation_statements.clone()
        };
        let changed = match cfg.statement_password(new.expose()).await {
            Ok(p) => {
                conn.run_tx(
                    "failed to update user",
                    &stmts,
                    &Vars { name: &cfg.username, password: Some(&p), expiration: None },
                )
                .await
            }
            Err(e) => Err(e),
        };
        conn.close();
        if let Err(e) = changed {
            // The change may have committed even though no reply came back (a lost COMMIT
            // answer, a timeout): keep the pending password and drop the cached pool, so the
            // next use settles on whichever of the two passwords logs in.
            self.close_conn(name).await;
            tracing::warn!(
                config = name,
                error = %e,
                "database engine: root rotation failed; it is settled on the next use"
            );
            return Err(e);
        }
        let mut rec = self.must_config(name).await?;
        rec.password = SecretString::from(new.expose());
        rec.pending_password = None;
        self.store_config(name, &rec).await?;
        let fresh = Arc::new(rec.open(rec.password.expose())?);
        if let Some(old) = self.conns.lock().await.insert(name.to_owned(), fresh) {
            old.close();
        }
        tracing::info!(config = name, "database engine: root credentials rotated");
        Ok(Response::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_found_and_redacted() {
        assert_eq!(literal_passwords("postgres://u:s3cret@h:5432/db"), vec!["s3cret"]);
        assert_eq!(literal_passwords("postgres://u:p%40ss@h/db"), vec!["p@ss"]);
        assert!(literal_passwords("postgres://u@h/db").is_empty());
        assert!(literal_passwords("postgres://{{username}}:{{password}}@h/db").is_empty());
        assert_eq!(redact_url("postgres://u:s3cret@h/db"), "postgres://u:xxxxx@h/db");
        assert_eq!(
            redact_url("postgres://{{username}}:{{password}}@h/db"),
            "postgres://{{username}}:{{password}}@h/db"
        );
    }

    #[test]
    fn passwords_in_query_parameters_are_found_and_redacted() {
        let u = "postgres://u@h/db?sslmode=disable&password=s3cret&application_name=a";
        assert_eq!(literal_passwords(u), vec!["s3cret"]);
        assert_eq!(
            redact_url(u),
            "postgres://u@h/db?sslmode=disable&password=xxxxx&application_name=a"
        );
        assert_eq!(literal_passwords("postgres://h/db?password=a%26b"), vec!["a&b"]);
        assert!(literal_passwords("postgres://h/db?password={{password}}").is_empty());
        // A form the scan does not know, found by tokio-postgres's own parser.
        assert_eq!(literal_passwords("postgres://u:s3c?ret@h/db"), vec!["s3c?ret"]);
        assert!(!redact_url("postgres://u:s3c?ret@h/db").contains("s3c"));
        // A short password is not replaced all over the URL once its place is found.
        assert_eq!(redact_url("postgres://u:p@h/pdb"), "postgres://u:xxxxx@h/pdb");
    }

    #[test]
    fn passwords_in_key_value_strings_are_found_and_redacted() {
        let u = "host=h password=s3cret dbname=d";
        assert_eq!(literal_passwords(u), vec!["s3cret"]);
        assert_eq!(redact_url(u), "host=h password=xxxxx dbname=d");
        let q = "host=h password = 'a b\\'c' user=u";
        assert_eq!(literal_passwords(q), vec!["a b'c"]);
        assert_eq!(redact_url(q), "host=h password = xxxxx user=u");
        assert!(literal_passwords("host=h user={{username}} password={{password}}").is_empty());
        assert!(literal_passwords("host=h password=").is_empty());
    }
}
