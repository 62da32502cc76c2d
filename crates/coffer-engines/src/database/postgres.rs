//! PostgreSQL: the connection pool per config, TLS modes, and the statements the engine runs
//! (create, renew, revoke, change password).
//!
//! Guarantees: every error message that leaves this module has had the connection password
//! and any password a statement carried replaced by `[password]`; creation, renewal and
//! password changes run in one transaction each, so a failing statement leaves nothing
//! half-done; the default revocation succeeds when the user is already gone. TLS is
//! [`coffer_pg`] (rustls on aws-lc-rs): `verify-full` checks chain and host name,
//! `verify-ca` the chain only, `require`/`prefer` without `sslrootcert` encrypt without
//! authenticating the server (as libpq does). Not guaranteed: that PostgreSQL's own server log
//! never records a statement.

use std::time::Duration;

use coffer_core::{Error, Result};
use coffer_pg::SslMode as Tls;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{ChannelBinding, SslMode};

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
/// TCP keepalive and user timeout, so a half-open connection is noticed.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// One config's pool.
pub(crate) struct Conn {
    pool: Pool,
    max_idle: usize,
    /// How long one group of round trips (a transaction, a revocation) may take.
    query_timeout: Duration,
    /// Secrets that must never appear in an error from this pool.
    secrets: Vec<String>,
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

/// Replaces every secret in `msg` by `[password]`.
pub(crate) fn scrub(msg: &str, secrets: &[String]) -> String {
    let mut m = msg.to_owned();
    for s in secrets {
        if !s.is_empty() {
            m = m.replace(s.as_str(), "[password]");
        }
    }
    m
}

pub(crate) fn secret_forms(p: &str) -> Vec<String> {
    if p.is_empty() {
        return Vec::new();
    }
    let mut v = vec![p.to_owned(), p.replace('\'', "''")];
    let enc = super::template::connection_url("{{password}}", "", p);
    v.push(enc);
    let enc_url = super::template::connection_url("x://{{password}}", "", p);
    v.push(enc_url.trim_start_matches("x://").to_owned());
    v.sort_by_key(|s| std::cmp::Reverse(s.len()));
    v.dedup();
    v
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => e.to_string(),
    }
}

/// The `key=value` items of a libpq key/value string, each as written (spaces around `=`,
/// quotes and backslash escapes kept), so that a quoted value holding spaces or `=` (a
/// generated password) stays inside its item and is never read as an option of its own.
fn dsn_items(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = skip_ws(0);
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let eq = skip_ws(i);
        if eq < b.len() && b[eq] == b'=' {
            i = skip_ws(eq + 1);
            let quoted = i < b.len() && b[i] == b'\'';
            if quoted {
                i += 1;
            }
            while i < b.len() && (if quoted { b[i] != b'\'' } else { !b[i].is_ascii_whitespace() })
            {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            if quoted {
                i += 1;
            }
        }
        let end = i.min(b.len());
        out.push(&s[start..end]);
        i = skip_ws(end);
    }
    out
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (tokio-postgres knows neither
/// `verify-*` nor `sslrootcert`), returning the rest.
fn take_tls(url: &str) -> Result<(String, Tls, Option<String>)> {
    let mut mode = None;
    let mut root = None;
    let mut take = |k: &str, v: &str| -> Result<bool> {
        match k {
            "sslmode" => {
                // `allow` (plaintext first) is taken as `prefer`, as before.
                let v = if v == "allow" { "prefer" } else { v };
                mode = Some(Tls::parse(v).ok_or_else(|| {
                    Error::invalid(format!(
                        "unsupported sslmode {v:?}: use disable, prefer, require, verify-ca or \
                         verify-full"
                    ))
                })?);
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(pct_decode(v));
                Ok(true)
            }
            "sslcert" | "sslkey" | "sslpassword" => Err(Error::invalid(format!(
                "{k} is not supported: client certificates are not implemented"
            ))),
            _ => Ok(false),
        }
    };
    let rest = if let Some((base, query)) = url.split_once('?') {
        let mut kept = Vec::new();
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if !take(k, v)? {
                kept.push(kv);
            }
        }
        if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
    } else if url.contains("://") {
        url.to_owned()
    } else {
        let mut kept = Vec::new();
        for kv in dsn_items(url) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if !take(k.trim(), v.trim().trim_matches('\''))? {
                kept.push(kv);
            }
        }
        kept.join(" ")
    };
    let mode = mode.unwrap_or(if root.is_some() { Tls::VerifyCa } else { Tls::Prefer });
    // libpq: `require` with a root certificate behaves as verify-ca.
    let mode = if mode == Tls::Require && root.is_some() { Tls::VerifyCa } else { mode };
    Ok((rest, mode, root))
}

/// With TLS that does not authenticate the server (`require` without `sslrootcert`), channel
/// binding is required unless the URL sets `channel_binding` itself: SCRAM-SHA-256-PLUS ties
/// the login to the TLS session, and a server asking for a cleartext or MD5 password (or none)
/// is refused, so a man in the middle gets no password. `prefer` cannot do this (it falls back
/// to plaintext, where there is nothing to bind to); see docs/database.md.
fn channel_binding_for(mode: Tls, rest: &str) -> Option<ChannelBinding> {
    (mode == Tls::Require && !rest.contains("channel_binding")).then_some(ChannelBinding::Require)
}

/// The password tokio-postgres itself reads from a connection string as written (with
/// `{{password}}` standing for the template, which does not count), if any.
pub(crate) fn parsed_password(url: &str) -> Option<String> {
    const MARK: &str = "coffer-template-password";
    let filled = super::template::connection_url(url, "u", MARK);
    let (rest, _, _) = take_tls(&filled).ok()?;
    let cfg: tokio_postgres::Config = rest.parse().ok()?;
    let p = String::from_utf8_lossy(cfg.get_password()?).into_owned();
    (p != MARK && !p.is_empty()).then_some(p)
}

/// Whether the connection string's TLS mode leaves the server unauthenticated (`prefer`,
/// `require` without `sslrootcert`), for the write warning.
pub(crate) fn unverified_tls(url: &str) -> bool {
    matches!(take_tls(url), Ok((_, Tls::Prefer | Tls::Require, _)))
}

pub(crate) fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(h);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS client configuration (see [`coffer_pg`] for what each mode checks).
fn client_config(mode: Tls, root: Option<&str>) -> Result<rustls::ClientConfig> {
    coffer_pg::client_config(mode, root.map(std::path::Path::new)).map_err(|e| match e {
        coffer_pg::Error::Setup(_) => Error::Internal(e.to_string()),
        _ => Error::invalid(e.to_string()),
    })
}

impl Conn {
    /// Builds the pool; no connection is made until one is needed (see [`Conn::verify`]).
    pub(crate) fn open(s: &PoolSettings<'_>) -> Result<Self> {
        let mut secrets = secret_forms(s.password);
        let (rest, mode, root) = take_tls(s.url)?;
        let mut cfg: tokio_postgres::Config =
            rest.parse().map_err(|e: tokio_postgres::Error| {
                Error::invalid(format!(
                    "invalid connection_url: {}",
                    scrub(&e.to_string(), &secrets)
                ))
            })?;
        // A password written into the URL, in whatever form tokio-postgres understood it.
        if let Some(p) = cfg.get_password() {
            secrets.extend(secret_forms(&String::from_utf8_lossy(p)));
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        if cfg.get_user().is_none() && !s.username.is_empty() {
            cfg.user(s.username);
        }
        if cfg.get_password().is_none() && !s.password.is_empty() {
            cfg.password(s.password);
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("coffer");
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(CONNECT_TIMEOUT);
        }
        cfg.keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        if cfg.get_tcp_user_timeout().is_none() {
            cfg.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if let Some(cb) = channel_binding_for(mode, &rest) {
            cfg.channel_binding(cb);
        }
        let mc = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let mgr = match mode {
            Tls::Disable => {
                cfg.ssl_mode(SslMode::Disable);
                Manager::from_config(cfg, tokio_postgres::NoTls, mc)
            }
            m => {
                cfg.ssl_mode(if m == Tls::Prefer { SslMode::Prefer } else { SslMode::Require });
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(
                    m,
                    root.as_deref(),
                )?);
                Manager::from_config(cfg, tls, mc)
            }
        };
        let lifetime = s.max_lifetime;
        let mut b = Pool::builder(mgr)
            .max_size(s.max_open.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT));
        if !lifetime.is_zero() {
            b = b.pre_recycle(deadpool_postgres::Hook::sync_fn(move |_, m| {
                if m.age() > lifetime {
                    Err(deadpool_postgres::HookError::Message("max_connection_lifetime".into()))
                } else {
                    Ok(())
                }
            }));
        }
        let pool = b.build().map_err(|e| Error::Internal(format!("database pool: {e}")))?;
        Ok(Self { pool, max_idle: s.max_idle, query_timeout: QUERY_TIMEOUT, secrets })
    }

    /// Another string to keep out of errors (a password written into the URL).
    pub(crate) fn add_secret(&mut self, s: &str) {
        self.secrets.extend(secret_forms(s));
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    fn err(&self, what: &str, msg: &str, extra: &[String]) -> Error {
        let mut m = scrub(msg, &self.secrets);
        m = scrub(&m, extra);
        Error::invalid(format!("{what}: {m}"))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            let msg = match &e {
                deadpool_postgres::PoolError::Backend(pe) => pg_message(pe),
                deadpool_postgres::PoolError::Timeout(_) => {
                    "timed out connecting to the database".to_owned()
                }
                other => other.to_string(),
            };
            self.err("error connecting to the database", &msg, &[])
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
            c.simple_query("SELECT 1").await.map_err(|e| self.err(what, &pg_message(&e), &[]))?;
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
            .map_err(|e| self.err("error checking the role", &pg_message(&e), &[]))?;
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
        let extra = v.password.map(secret_forms).unwrap_or_default();
        let committing = std::sync::atomic::AtomicBool::new(false);
        self.bounded(what, async |c| {
            let tx = c.transaction().await.map_err(|e| self.err(what, &pg_message(&e), &extra))?;
            for s in split_statements(stmts) {
                tx.batch_execute(&render(&s, v))
                    .await
                    .map_err(|e| self.err(what, &pg_message(&e), &extra))?;
            }
            committing.store(true, std::sync::atomic::Ordering::SeqCst);
            tx.commit().await.map_err(|e| self.err(what, &pg_message(&e), &extra))
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
            let map = |e: tokio_postgres::Error| self.err(what, &pg_message(&e), &[]);
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
    use super::*;

    #[test]
    fn a_quoted_dsn_value_is_never_read_as_options() {
        let dsn = "host=h password='a b sslmode=evil = \\' x' user = u sslmode=disable";
        let (rest, mode, _) = take_tls(dsn).expect("parse");
        assert_eq!(mode, Tls::Disable);
        assert_eq!(rest, "host=h password='a b sslmode=evil = \\' x' user = u");
    }

    #[test]
    fn tls_options_are_taken_out_of_urls_and_dsns() {
        let (u, m, r) = take_tls("postgres://u:p@h:5/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&application_name=x").expect("ok");
        assert_eq!(
            (u.as_str(), m, r.as_deref()),
            ("postgres://u:p@h:5/db?application_name=x", Tls::VerifyFull, Some("/tmp/ca.pem"))
        );
        let (u, m, _) = take_tls("postgres://h/db?sslmode=disable").expect("ok");
        assert_eq!((u.as_str(), m), ("postgres://h/db", Tls::Disable));
        let (_, m, _) = take_tls("postgres://h/db").expect("ok");
        assert_eq!(m, Tls::Prefer);
        let (u, m, _) = take_tls("host=h sslmode=require dbname=d").expect("ok");
        assert_eq!((u.as_str(), m), ("host=h dbname=d", Tls::Require));
        let (_, m, _) = take_tls("postgres://h/?sslmode=require&sslrootcert=/ca").expect("ok");
        assert_eq!(m, Tls::VerifyCa);
        assert!(
            take_tls("postgres://h/?sslmode=bogus").expect_err("bad").to_string().contains("bogus")
        );
        assert!(take_tls("postgres://h/?sslcert=/x").is_err());
    }

    #[test]
    fn unverified_tls_requires_channel_binding_unless_the_url_says_otherwise() {
        assert_eq!(
            channel_binding_for(Tls::Require, "postgres://h/db"),
            Some(ChannelBinding::Require)
        );
        assert_eq!(
            channel_binding_for(Tls::Require, "postgres://h/db?channel_binding=prefer"),
            None
        );
        for m in [Tls::Disable, Tls::Prefer, Tls::VerifyCa, Tls::VerifyFull] {
            assert_eq!(channel_binding_for(m, "postgres://h/db"), None, "{m:?}");
        }
        assert!(unverified_tls("postgres://h/db"));
        assert!(unverified_tls("postgres://h/db?sslmode=require"));
        assert!(!unverified_tls("postgres://h/db?sslmode=require&sslrootcert=/ca"));
        assert!(!unverified_tls("postgres://h/db?sslmode=disable"));
        assert!(!unverified_tls("host=h sslmode=verify-full sslrootcert=/ca"));
    }

    #[test]
    fn scrub_removes_every_form_of_the_password() {
        let forms = secret_forms("p@ss'w rd");
        let m = scrub("failed for p@ss'w rd and p@ss''w rd and p%40ss%27w%20rd", &forms);
        assert_eq!(m, "failed for [password] and [password] and [password]");
        assert_eq!(scrub("nothing", &secret_forms("")), "nothing");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        assert!(client_config(Tls::VerifyFull, None).is_err());
        assert!(client_config(Tls::Require, None).is_ok());
        let e = client_config(Tls::VerifyFull, Some("/nonexistent/ca.pem")).expect_err("missing");
        assert!(e.to_string().contains("cannot read sslrootcert"), "{e}");
    }
}
