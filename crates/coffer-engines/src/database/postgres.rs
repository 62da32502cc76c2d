//! PostgreSQL: the connection pool per config, TLS modes, and the statements the engine runs
//! (create, renew, revoke, change password).
//!
//! Guarantees: every error message that leaves this module has had the connection password
//! and any password a statement carried replaced by `[password]`; creation, renewal and
//! password changes run in one transaction each, so a failing statement leaves nothing
//! half-done; the default revocation succeeds when the user is already gone. Parsing the
//! connection string, TLS and the pool are [`coffer_pg`]'s (rustls on aws-lc-rs):
//! `verify-full` checks chain and host name, `verify-ca` the chain only, `require`/`prefer`
//! without `sslrootcert` encrypt without authenticating the server (as libpq does), and
//! `require` then insists on channel binding. Not guaranteed: that PostgreSQL's own server log
//! never records a statement.

use std::time::Duration;

use coffer_core::{Error, Result};
use coffer_pg::{ConnString, Defaults, PoolOptions, Scrubber, SslMode, describe, describe_pool};
use deadpool_postgres::Pool;

use super::template::{Vars, render, split_statements};

/// Vault's defaults, for statements a role leaves empty.
pub(crate) const DEFAULT_RENEW: &str = "ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';";
pub(crate) const DEFAULT_ROTATE: &str = "ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}';";
pub(crate) const DEFAULT_ROOT_ROTATE: &str =
    "ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}';";

/// How long one connection attempt or pool wait may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one group of database round trips may take before it is abandoned.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Unless the connection string says otherwise: TCP keepalive and user timeout, so a
/// half-open connection is noticed, and the name the server shows for the session.
const DEFAULTS: Defaults = Defaults {
    connect_timeout: Some(CONNECT_TIMEOUT),
    tcp_user_timeout: Some(Duration::from_secs(60)),
    keepalives_idle: Some(Duration::from_secs(30)),
    keepalives_interval: Some(Duration::from_secs(10)),
    keepalives_retries: Some(3),
    application_name: Some("coffer"),
};

/// One config's pool.
pub(crate) struct Conn {
    pool: Pool,
    max_idle: usize,
    /// How long one group of round trips (a transaction, a revocation) may take.
    query_timeout: Duration,
    /// Secrets that must never appear in an error from this pool.
    secrets: Scrubber,
}

/// A failed transaction, and whether it may have committed nonetheless.
pub(crate) struct TxFailure {
    pub(crate) error: Error,
    pub(crate) maybe_committed: bool,
}

/// What a pool is built from.
pub(crate) struct PoolSettings<'a> {
    /// With `{{username}}`/`{{password}}` already filled in.
    pub(crate) url: &'a str,
    pub(crate) username: &'a str,
    pub(crate) password: &'a str,
    pub(crate) max_open: usize,
    pub(crate) max_idle: usize,
    pub(crate) max_lifetime: Duration,
}

/// Whether the connection string's TLS mode encrypts without authenticating the server
/// (`prefer`, `require` without `sslrootcert`), for the write warning.
pub(crate) fn unverified_tls(url: &str) -> bool {
    ConnString::parse(url)
        .is_ok_and(|c| c.ssl_mode() != SslMode::Disable && !c.authenticates_server())
}

/// coffer-pg's error as this layer's, scrubbed: the operator's mistake is a 400, Coffer's own
/// a 500.
fn pg_error(e: coffer_pg::Error, secrets: &Scrubber) -> Error {
    let msg = secrets.scrub(&e.to_string());
    match e.is_internal() {
        true => Error::Internal(msg),
        false => Error::invalid(msg),
    }
}

impl Conn {
    /// Builds the pool; no connection is made until one is needed (see [`Conn::verify`]).
    pub(crate) fn open(s: &PoolSettings<'_>) -> Result<Self> {
        let mut secrets = Scrubber::new();
        secrets.add(s.password);
        let mut conn = ConnString::parse(s.url).map_err(|e| pg_error(e, &secrets))?;
        // The URL itself and any password written into it, in whatever form it was written.
        secrets.extend(conn.scrubber());
        let cfg = conn.config_mut();
        if cfg.get_user().is_none() && !s.username.is_empty() {
            cfg.user(s.username);
        }
        if cfg.get_password().is_none() && !s.password.is_empty() {
            cfg.password(s.password);
        }
        conn.apply(&DEFAULTS);
        conn.bind_channel_when_unauthenticated();
        let lifetime = s.max_lifetime;
        let pool = conn
            .into_pool(&PoolOptions {
                max_size: s.max_open,
                wait_timeout: CONNECT_TIMEOUT,
                create_timeout: CONNECT_TIMEOUT,
                recycle_timeout: Some(CONNECT_TIMEOUT),
                max_lifetime: (!lifetime.is_zero()).then_some(lifetime),
            })
            .map_err(|e| pg_error(e, &secrets))?;
        Ok(Self { pool, max_idle: s.max_idle, query_timeout: QUERY_TIMEOUT, secrets })
    }

    /// Another string to keep out of errors (a password written into the URL).
    pub(crate) fn add_secret(&mut self, s: &str) {
        self.secrets.add(s);
    }

    /// A 400 saying `what` failed and why, with this pool's secrets and `extra` (a password a
    /// statement carried) scrubbed out.
    fn err(&self, what: &str, msg: &str, extra: &Scrubber) -> Error {
        Error::invalid(format!("{what}: {}", extra.scrub(&self.secrets.scrub(msg))))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            self.err("error connecting to the database", &describe_pool(&e), &Scrubber::new())
        })
    }

    /// Runs `f` on a pooled connection within the query timeout. On timeout the connection
    /// is closed rather than returned to the pool (it may be mid-statement, or half-open).
    async fn bounded<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.client().await?;
        match tokio::time::timeout(self.query_timeout, f(&mut c)).await {
            Ok(r) => r,
            Err(_) => {
                drop(deadpool_postgres::Object::take(c));
                Err(Error::invalid(format!(
                    "{what}: timed out after {}s waiting for the database",
                    self.query_timeout.as_secs_f64()
                )))
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn set_query_timeout(&mut self, t: Duration) {
        self.query_timeout = t;
    }

    /// Connects once and runs `SELECT 1`.
    pub(crate) async fn verify(&self) -> Result<()> {
        let what = "error verifying connection";
        self.bounded(what, async |c| {
            c.simple_query("SELECT 1")
                .await
                .map_err(|e| self.err(what, &describe(&e), &Scrubber::new()))?;
            Ok(())
        })
        .await
    }

    /// Keeps at most `max_idle_connections` idle connections open.
    pub(crate) fn trim_idle(&self) {
        let status = self.pool.status();
        let mut extra = status.available.saturating_sub(self.max_idle);
        if extra > 0 {
            self.pool.retain(|_, _| {
                if extra > 0 {
                    extra -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    pub(crate) fn close(&self) {
        self.pool.close();
    }

    async fn exists_on(&self, c: &deadpool_postgres::Object, name: &str) -> Result<bool> {
        let row = c
            .query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", &[&name])
            .await
            .map_err(|e| self.err("error checking the role", &describe(&e), &Scrubber::new()))?;
        Ok(row.get(0))
    }

    pub(crate) async fn role_exists(&self, name: &str) -> Result<bool> {
        self.bounded("error checking the role", async |c| self.exists_on(c, name).await).await
    }

    /// Runs the statements (split and templated) in one transaction. `what` names the list in
    /// an error ("creation statements failed: ERROR: …").
    pub(crate) async fn run_tx(&self, what: &str, stmts: &[String], v: &Vars<'_>) -> Result<()> {
        self.try_tx(what, stmts, v).await.map_err(|f| f.error)
    }

    /// [`Conn::run_tx`], telling a failure before COMMIT was sent (nothing changed) from one
    /// after (the change may have committed: the reply was lost or timed out).
    pub(crate) async fn try_tx(
        &self,
        what: &str,
        stmts: &[String],
        v: &Vars<'_>,
    ) -> std::result::Result<(), TxFailure> {
        let mut extra = Scrubber::new();
        if let Some(p) = v.password {
            extra.add(p);
        }
        let committing = std::sync::atomic::AtomicBool::new(false);
        self.bounded(what, async |c| {
            let tx = c.transaction().await.map_err(|e| self.err(what, &describe(&e), &extra))?;
            for s in split_statements(stmts) {
                tx.batch_execute(&render(&s, v))
                    .await
                    .map_err(|e| self.err(what, &describe(&e), &extra))?;
            }
            committing.store(true, std::sync::atomic::Ordering::SeqCst);
            tx.commit().await.map_err(|e| self.err(what, &describe(&e), &extra))
        })
        .await
        .map_err(|error| TxFailure {
            error,
            maybe_committed: committing.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    /// Runs each statement on its own, keeping on after failures; returns how many failed.
    pub(crate) async fn run_each(&self, stmts: &[String], v: &Vars<'_>) -> Result<usize> {
        self.bounded("rollback statements", async |c| {
            let mut failed = 0;
            for s in split_statements(stmts) {
                if c.batch_execute(&render(&s, v)).await.is_err() {
                    failed += 1;
                }
            }
            Ok(failed)
        })
        .await
    }

    /// Takes away everything the user was given and drops it; success when it is already gone.
    /// Its login is disabled and its sessions ended first, objects it owns are handed to the
    /// connection user.
    pub(crate) async fn drop_user(&self, name: &str) -> Result<()> {
        let what = "revocation failed";
        self.bounded(what, async |c| {
            if !self.exists_on(c, name).await? {
                return Ok(());
            }
            let q = quote_ident(name);
            let map = |e: tokio_postgres::Error| self.err(what, &describe(&e), &Scrubber::new());
            // First of all the user can no longer log in, so a step below that fails (and
            // leaves the lease to be retried) leaves no usable login behind.
            c.batch_execute(&format!("ALTER ROLE {q} NOLOGIN")).await.map_err(map)?;
            // Best effort: without pg_signal_backend this fails and DROP ROLE still decides.
            let _ = c
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE usename = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await;
            let schemas = c
                .query(
                    "SELECT DISTINCT table_schema FROM information_schema.role_table_grants \
                     WHERE grantee = $1",
                    &[&name],
                )
                .await
                .map_err(map)?;
            let mut stmts = Vec::new();
            for r in schemas {
                let s: String = r.get(0);
                let s = quote_ident(&s);
                stmts.push(format!("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA {s} FROM {q}"));
                stmts.push(format!("REVOKE USAGE ON SCHEMA {s} FROM {q}"));
            }
            stmts.push(format!("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM {q}"));
            stmts.push(format!("REVOKE ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA public FROM {q}"));
            stmts.push(format!("REVOKE USAGE ON SCHEMA public FROM {q}"));
            let db: String =
                c.query_one("SELECT current_database()", &[]).await.map_err(map)?.get(0);
            stmts.push(format!("REVOKE CONNECT ON DATABASE {} FROM {q}", quote_ident(&db)));
            for s in &stmts {
                let _ = c.batch_execute(s).await;
            }
            // Objects the user created go to the connection user rather than being lost; only
            // then are its remaining privileges and default ACLs dropped.
            if c.batch_execute(&format!("REASSIGN OWNED BY {q} TO CURRENT_USER")).await.is_ok() {
                c.batch_execute(&format!("DROP OWNED BY {q}")).await.map_err(map)?;
            }
            c.batch_execute(&format!("DROP ROLE IF EXISTS {q}")).await.map_err(map)?;
            Ok(())
        })
        .await
    }
}

/// `"name"` with embedded quotes doubled.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    //! Parsing, TLS modes and scrubbing are tested in coffer-pg; here, what this engine adds.

    use super::*;

    #[test]
    fn unverified_tls_is_prefer_or_require_without_a_root_certificate() {
        assert!(unverified_tls("postgres://h/db"));
        assert!(unverified_tls("postgres://h/db?sslmode=allow"));
        assert!(unverified_tls("postgres://h/db?sslmode=require"));
        assert!(!unverified_tls("postgres://h/db?sslmode=require&sslrootcert=/ca"));
        assert!(!unverified_tls("postgres://h/db?sslmode=disable"));
        assert!(!unverified_tls("host=h sslmode=verify-full sslrootcert=/ca"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn an_unusable_connection_string_is_a_400_without_the_password() {
        let settings = |url| PoolSettings {
            url,
            username: "u",
            password: "hunter2Secret",
            max_open: 1,
            max_idle: 1,
            max_lifetime: Duration::ZERO,
        };
        for url in [
            "postgres://u:hunter2Secret@h/db?sslmode=verify-full",
            "postgres://u:hunter2Secret@h:x/db",
            "host=h password=hunter2Secret sslcert=/c.pem",
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        ] {
            let e = Conn::open(&settings(url)).err().expect("refused");
            assert!(matches!(e, Error::InvalidRequest(_)), "{url}: {e}");
            assert!(!e.to_string().contains("hunter2"), "{url}: {e}");
        }
    }
}
