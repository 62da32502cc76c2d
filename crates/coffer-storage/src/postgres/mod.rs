//! PostgreSQL backend: one table `(key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)`,
//! created on first start, reached through a pool of tokio-postgres connections built by
//! [`coffer_pg`] (which says what each `sslmode` guarantees).
//!
//! Guarantees: a write is acknowledged after PostgreSQL committed it; `batch` is one
//! transaction; keys are ordered by bytes (`COLLATE "C"`), as in SQLite, and `list` is a
//! skip-scan ([`crate::list`]) that never reads the subtree under a folder. A pooled connection
//! found closed (the server restarted) is replaced and the operation retried once, but only
//! when nothing was sent yet (reads, or a write that failed before its statement went out): a
//! write whose connection died after sending may have committed, and repeating it could undo a
//! later write by another request, so it fails with an error instead. Sessions commit with
//! `synchronous_commit=on`, whatever the server's default. Error messages name the
//! host and database and never contain the password or the connection URL.
//!
//! With `ha` set, the backend also opens the HA lock ([`ha`]) and every write is fenced: it
//! runs in a transaction that first checks this node's leadership epoch against the lock row,
//! and fails with [`Error::Fenced`] when a newer epoch exists.
//!
//! Not done here: a process other than this one writing the same table while a
//! `CachedBackend` is in front (HA nodes run without one).

pub(crate) mod ha;
mod url;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_pg::{PoolOptions, describe, describe_pool};
use deadpool_postgres::Pool;

use crate::key::validate_prefix;
use crate::list::{BATCH, SkipScan};
use crate::{Backend, Error, Op, Result, validate_key};

/// Default number of pooled connections (Vault's `max_parallel` default is 128; a single
/// Coffer node rarely has more than a few requests in storage at once).
pub const DEFAULT_MAX_PARALLEL: usize = 16;
/// The pool sizes accepted for `max_parallel`.
pub const MAX_PARALLEL_RANGE: std::ops::RangeInclusive<usize> = 1..=1024;
/// Default table name.
pub const DEFAULT_TABLE: &str = "coffer_kv";

/// How long a request waits for a pooled connection, and for a new connection to be made.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// What the operator configured. `connection_url` holds the password: `Debug` leaves it out.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    pub connection_url: String,
    pub table: String,
    pub max_parallel: usize,
    /// HA mode (`ha_enabled`): the lock table and TTL; `None` for a single node.
    pub ha: Option<ha::HaOptions>,
}

impl PostgresOptions {
    pub fn new(connection_url: impl Into<String>) -> Self {
        Self {
            connection_url: connection_url.into(),
            table: DEFAULT_TABLE.to_owned(),
            max_parallel: DEFAULT_MAX_PARALLEL,
            ha: None,
        }
    }

    /// Checks `table`: a lower-case SQL identifier, optionally `schema.table`.
    pub fn validate_table(table: &str) -> Result<()> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let ok = match table.split_once('.') {
            Some((schema, name)) => ident(schema) && ident(name),
            None => ident(table),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Backend(format!(
                "postgresql table {table:?} must be a lower-case SQL identifier (a-z, 0-9, _), optionally schema.table"
            )))
        }
    }

    /// Checks the options without connecting or reading files: URL (including its TLS
    /// parameters), table, pool size. The CA file is read by [`PostgresBackend::connect`].
    pub fn check(&self) -> Result<()> {
        Self::validate_table(&self.table)?;
        if let Some(h) = &self.ha {
            Self::validate_table(&h.table)?;
            if h.table == self.table {
                return Err(Error::Backend("postgresql ha_table must differ from table".into()));
            }
            if !ha::LOCK_TTL_RANGE.contains(&h.lock_ttl) {
                return Err(Error::Backend(
                    "postgresql ha_lock_ttl must be from 2s to 300s".into(),
                ));
            }
        }
        if !MAX_PARALLEL_RANGE.contains(&self.max_parallel) {
            return Err(Error::Backend("postgresql max_parallel must be from 1 to 1024".into()));
        }
        url::parse(&self.connection_url).map(drop)
    }

    /// `host:port/database` of the URL, for messages; `None` when the URL does not parse.
    pub fn target(&self) -> Option<String> {
        url::parse(&self.connection_url).ok().map(|c| c.target())
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("target", &self.target())
            .field("table", &self.table)
            .field("max_parallel", &self.max_parallel)
            .field("ha", &self.ha)
            .finish_non_exhaustive()
    }
}

/// The statements, with the (validated) table name in place.
struct Sql {
    get: String,
    put: String,
    delete: String,
    list_below: String,
    list_open: String,
    /// HA: the fencing check every write transaction starts with.
    fence: Option<String>,
}

impl Sql {
    fn new(table: &str, ha_table: Option<&str>) -> Self {
        Self {
            get: format!("SELECT value FROM {table} WHERE key = $1"),
            put: format!(
                "INSERT INTO {table} (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            delete: format!("DELETE FROM {table} WHERE key = $1"),
            list_below: format!(
                "SELECT key FROM {table} WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"
            ),
            list_open: format!("SELECT key FROM {table} WHERE key >= $1 ORDER BY key LIMIT $2"),
            fence: ha_table.map(ha::fence_sql),
        }
    }
}

pub struct PostgresBackend {
    pool: Pool,
    sql: Sql,
    target: String,
    /// HA: the epoch writes carry, and the lock that sets it.
    fence: Option<Arc<crate::ha::Fence>>,
    ha_lock: Option<Arc<ha::PgHaLock>>,
    /// Index reads made by `list`, so a test can prove a listing skips subtrees.
    #[cfg(test)]
    list_reads: std::sync::atomic::AtomicUsize,
}

/// One try of an operation: closed connections are retried, anything else is final.
enum Failure {
    Closed(String),
    Final(Error),
}

impl PostgresBackend {
    /// Connects, creates the table when missing and checks its shape. Fails (naming the host
    /// and database, never the password) when the server cannot be reached or refuses the login.
    pub async fn connect(opts: &PostgresOptions) -> Result<Self> {
        opts.check()?;
        let conn = url::parse(&opts.connection_url)?;
        if !conn.is_local() && !conn.authenticates_server() {
            // libpq's default, and Vault's: but an attacker between Coffer and the database can
            // then pose as the server (and ask for the password in clear).
            tracing::warn!(
                target_db = %conn.target(),
                "the PostgreSQL server is not authenticated (sslmode is not verify-full): use sslmode=verify-full with sslrootcert=/path/to/ca.pem unless the database is on this host"
            );
        }
        let target = conn.target();
        let lock_pool = match &opts.ha {
            // The lock's own connection: a request pool at its limit cannot delay a renewal.
            // No statement of it may wait past a fraction of the TTL: a taking blocked behind
            // a row lock would otherwise complete after the node gave up waiting for it.
            Some(h) => Some(
                {
                    let mut c = url::parse(&opts.connection_url)?;
                    let ms = (h.lock_ttl / 4).as_millis();
                    add_options(&mut c, &format!("-c lock_timeout={ms} -c statement_timeout={ms}"));
                    c
                }
                .into_pool(&PoolOptions {
                    max_size: 1,
                    wait_timeout: POOL_WAIT,
                    create_timeout: POOL_WAIT,
                    recycle_timeout: None,
                    max_lifetime: None,
                })
                .map_err(|e| Error::Backend(format!("postgresql {target}: {e}")))?,
            ),
            None => None,
        };
        let mut conn = conn;
        if let Some(h) = &opts.ha {
            // A node paused inside a write transaction holds the lock row FOR SHARE, which
            // would hold off a new leader for as long as the pause: PostgreSQL ends such a
            // session after a quarter of the TTL, and the paused write fails.
            let ms = (h.lock_ttl / 4).as_millis();
            add_options(&mut conn, &format!("-c idle_in_transaction_session_timeout={ms}"));
        }
        let pool = conn
            .into_pool(&PoolOptions {
                max_size: opts.max_parallel,
                wait_timeout: POOL_WAIT,
                create_timeout: POOL_WAIT,
                recycle_timeout: None,
                max_lifetime: None,
            })
            .map_err(|e| Error::Backend(format!("postgresql {target}: {e}")))?;
        let table = quote_table(&opts.table);
        let ha_table = opts.ha.as_ref().map(|h| quote_table(&h.table));
        let fence = opts.ha.as_ref().map(|_| Arc::new(crate::ha::Fence::new()));
        let ha_lock = match (&opts.ha, &ha_table, lock_pool, &fence) {
            (Some(h), Some(t), Some(p), Some(f)) => Some(Arc::new(
                ha::PgHaLock::open(p, t, &h.table, h.lock_ttl, f.clone(), target.clone()).await?,
            )),
            _ => None,
        };
        let b = Self {
            pool,
            sql: Sql::new(&table, ha_table.as_deref()),
            target,
            fence,
            ha_lock,
            #[cfg(test)]
            list_reads: std::sync::atomic::AtomicUsize::new(0),
        };
        b.create_table(&table, &opts.table).await?;
        Ok(b)
    }

    /// The HA lock, when the backend was opened with `ha`.
    pub fn ha_lock(&self) -> Option<Arc<ha::PgHaLock>> {
        self.ha_lock.clone()
    }

    /// `host:port/database`, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    async fn create_table(&self, table: &str, name: &str) -> Result<()> {
        let client = self.client().await.map_err(|f| self.final_error(f))?;
        // Keys are UTF-8 text: a database in another encoding would refuse some of them later.
        let encoding: String = client
            .query_one("SHOW server_encoding", &[])
            .await
            .map_err(|e| self.error("cannot read server_encoding", &e))?
            .get(0);
        if !matches!(encoding.as_str(), "UTF8" | "SQL_ASCII") {
            return Err(Error::Backend(format!(
                "postgresql {}: the database's encoding is {encoding}; Coffer needs a UTF8 database (CREATE DATABASE ... ENCODING 'UTF8')",
                self.target
            )));
        }
        // Only create what is missing: CREATE ... IF NOT EXISTS still needs CREATE on the
        // schema, which a role given only the table's privileges does not have.
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await
            .map_err(|e| self.error(&format!("cannot look up table {name}"), &e))?
            .get(0);
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 key   text COLLATE \"C\" PRIMARY KEY,
                 value bytea NOT NULL
             )"
        );
        if let Err(e) = match exists {
            true => Ok(()),
            false => client.batch_execute(&create).await,
        } {
            // Two nodes creating the table at the same moment: one loses the race on the
            // catalog's unique index, and the table exists.
            let raced = e.code().is_some_and(|c| {
                *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    || *c == tokio_postgres::error::SqlState::DUPLICATE_TABLE
            });
            if !raced {
                return Err(self.error(&format!("cannot create table {name}"), &e));
            }
        }
        // A table made by hand (or by an older tool) must order keys by bytes, or list breaks.
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), coalesce(c.collname::text, '')
                 FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&table],
            )
            .await
            .map_err(|e| self.error(&format!("cannot inspect table {name}"), &e))?;
        let columns: Vec<(String, String, String)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let has = |col: &str, ty: &str, coll: Option<&str>| {
            columns.iter().any(|(c, t, k)| c == col && t == ty && coll.is_none_or(|want| k == want))
        };
        // Upserts need `key` to be unique on its own.
        let unique: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1 AND a.attname = 'key')",
                &[&table],
            )
            .await
            .map_err(|e| self.error(&format!("cannot inspect table {name}"), &e))?
            .get(0);
        if !(has("key", "text", Some("C")) && has("value", "bytea", None) && unique) {
            return Err(Error::Backend(format!(
                "postgresql {}: table {name} exists but is not (key text COLLATE \"C\" PRIMARY KEY, value bytea NOT NULL): choose another table name or fix it",
                self.target
            )));
        }
        Ok(())
    }

    async fn client(&self) -> std::result::Result<deadpool_postgres::Client, Failure> {
        self.pool.get().await.map_err(|e| {
            Failure::Final(Error::Backend(format!(
                "postgresql {}: cannot get a connection: {}",
                self.target,
                describe_pool(&e)
            )))
        })
    }

    fn error(&self, what: &str, e: &tokio_postgres::Error) -> Error {
        Error::Backend(format!("postgresql {}: {what}: {}", self.target, describe(e)))
    }

    /// A failure before anything that changes data was sent: on a closed connection, retryable.
    fn failure(&self, what: &str, e: &tokio_postgres::Error) -> Failure {
        match coffer_pg::Failure::of(e) == coffer_pg::Failure::Closed {
            true => {
                Failure::Closed(format!("postgresql {}: {what}: connection closed", self.target))
            }
            false => Failure::Final(self.error(what, e)),
        }
    }

    /// A write failed after it was sent: with a closed connection, whether it committed is not
    /// known, so it is never retried.
    fn sent_failure(&self, what: &str, e: &tokio_postgres::Error) -> Failure {
        match self.failure(what, e) {
            Failure::Closed(_) => Failure::Final(Error::Backend(format!(
                "postgresql {}: {what}: the connection closed before the server answered; the write may or may not have been applied",
                self.target
            ))),
            f => f,
        }
    }

    fn final_error(&self, f: Failure) -> Error {
        match f {
            Failure::Closed(msg) => Error::Backend(msg),
            Failure::Final(e) => e,
        }
    }

    async fn try_get(&self, key: &str) -> std::result::Result<Option<Vec<u8>>, Failure> {
        let c = self.client().await?;
        let st = c.prepare_cached(&self.sql.get).await.map_err(|e| self.failure("get", &e))?;
        let row = c.query_opt(&st, &[&key]).await.map_err(|e| self.failure("get", &e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn try_put(&self, key: &str, value: &[u8]) -> std::result::Result<(), Failure> {
        // HA fencing: a lone write, too, must check the epoch in its own transaction.
        if self.fence.is_some() {
            return self.try_batch(&[Op::Put(key.to_owned(), value.to_vec())]).await;
        }
        let c = self.client().await?;
        let st = c.prepare_cached(&self.sql.put).await.map_err(|e| self.failure("put", &e))?;
        c.execute(&st, &[&key, &value]).await.map_err(|e| self.sent_failure("put", &e))?;
        Ok(())
    }

    async fn try_delete(&self, key: &str) -> std::result::Result<(), Failure> {
        // HA fencing: as in try_put.
        if self.fence.is_some() {
            return self.try_batch(&[Op::Delete(key.to_owned())]).await;
        }
        let c = self.client().await?;
        let st =
            c.prepare_cached(&self.sql.delete).await.map_err(|e| self.failure("delete", &e))?;
        c.execute(&st, &[&key]).await.map_err(|e| self.sent_failure("delete", &e))?;
        Ok(())
    }

    async fn try_list(&self, prefix: &str) -> std::result::Result<Vec<String>, Failure> {
        let c = self.client().await?;
        let below =
            c.prepare_cached(&self.sql.list_below).await.map_err(|e| self.failure("list", &e))?;
        let open =
            c.prepare_cached(&self.sql.list_open).await.map_err(|e| self.failure("list", &e))?;
        let mut scan = SkipScan::new(prefix);
        while let Some(read) = scan.next_read() {
            #[cfg(test)]
            self.list_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rows = match &read.below {
                Some(end) => c.query(&below, &[&read.from, end, &BATCH]).await,
                None => c.query(&open, &[&read.from, &BATCH]).await,
            }
            .map_err(|e| self.failure("list", &e))?;
            let keys: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            scan.feed(&keys);
        }
        Ok(scan.finish())
    }

    async fn try_batch(&self, ops: &[Op]) -> std::result::Result<(), Failure> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| self.failure("batch", &e))?;
        // --- HA fencing (the only HA code in the write path): the epoch check comes first in
        // the transaction, and its FOR SHARE lock on the lock row holds off a new leader's
        // taking until this transaction ends.
        if let (Some(sql), Some(fence)) = (&self.sql.fence, &self.fence) {
            let epoch = fence.epoch();
            let ok: bool = tx
                .query_one(sql.as_str(), &[&epoch])
                .await
                .map_err(|e| self.failure("fencing check", &e))?
                .get(0);
            if !ok {
                tracing::warn!(
                    target_db = %self.target,
                    epoch,
                    "write refused by HA fencing: another node leads now"
                );
                return Err(Failure::Final(Error::Fenced(format!(
                    "postgresql {}: write refused: this node does not hold the newest leadership epoch",
                    self.target
                ))));
            }
        }
        // --- end of HA fencing
        let put = tx.prepare_cached(&self.sql.put).await.map_err(|e| self.failure("batch", &e))?;
        let delete =
            tx.prepare_cached(&self.sql.delete).await.map_err(|e| self.failure("batch", &e))?;
        for op in ops {
            match op {
                Op::Put(k, v) => tx.execute(&put, &[k, v]).await,
                Op::Delete(k) => tx.execute(&delete, &[k]).await,
            }
            // Inside the transaction nothing is committed before COMMIT: a retry is safe.
            .map_err(|e| self.failure("batch", &e))?;
        }
        tx.commit().await.map_err(|e| self.sent_failure("batch commit", &e))
    }
}

/// Adds `-c name=value` settings to the session's startup options.
fn add_options(conn: &mut coffer_pg::ConnString, more: &str) {
    let config = conn.config_mut();
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {more}"),
        _ => more.to_owned(),
    };
    config.options(options);
}

/// `"schema"."table"` or `"table"`; the parts were validated as plain identifiers.
fn quote_table(table: &str) -> String {
    table.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")
}

/// Runs one operation, once more when its pooled connection turned out to be closed (the
/// server restarted since it was last used): the pool then opens a fresh one.
macro_rules! retry_closed {
    ($self:ident, $op:expr) => {{
        match $op.await {
            Ok(v) => Ok(v),
            Err(Failure::Final(e)) => Err(e),
            Err(Failure::Closed(msg)) => {
                tracing::debug!(target = %$self.target, "{msg}; retrying on a new connection");
                $op.await.map_err(|f| $self.final_error(f))
            }
        }
    }};
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        validate_key(key)?;
        retry_closed!(self, self.try_get(key))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        validate_key(key)?;
        retry_closed!(self, self.try_put(key, &value))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        retry_closed!(self, self.try_delete(key))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        retry_closed!(self, self.try_list(prefix))
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        for op in &ops {
            validate_key(op.key())?;
        }
        if ops.is_empty() {
            return Ok(());
        }
        retry_closed!(self, self.try_batch(&ops))
    }

    fn kind(&self) -> &'static str {
        "postgresql"
    }
}

#[cfg(test)]
mod tests;
