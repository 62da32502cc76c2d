//! PostgreSQL backend: one table `(key text COLLATE "C" PRIMARY KEY, value bytea NOT NULL)`,
//! created on first start, reached through a pool of tokio-postgres connections built by
//! [`coffer_pg`] (which says what each `sslmode` guarantees).
//!
//! Guarantees: a write is acknowledged after PostgreSQL committed it; `batch` is one
//! transaction (all or nothing). Writes use group commit: one task takes every `put`, `delete`
//! and `batch` queued meanwhile and writes each key's last operation in the group with one
//! statement (an INSERT of arrays, with the deletes in a data-modifying CTE). Without HA that
//! statement is the whole transaction: PostgreSQL commits it before it answers, one round trip
//! per group. If it fails, the group runs again in a transaction with a statement per
//! operation, pipelined, and a request whose statement fails is taken out of the group,
//! answered with its error, and the others run again in a new transaction (nothing of the
//! failed attempts was committed); a failed COMMIT fails every request of its group, and none
//! of them is acknowledged. Keys are ordered by bytes (`COLLATE "C"`), as in SQLite, and
//! `list` is a skip-scan ([`crate::list`]) that never reads the subtree under a folder. A
//! pooled connection found closed (the server restarted) is replaced and the operation retried
//! once, but only when nothing can have been committed yet (reads, a group whose COMMIT was not
//! sent, or whose single statement was not): once it was, the outcome is unknown, and the
//! group fails, saying that its write may or may not have been applied (writing it again could
//! land before the first attempt, which the server may still be running, and be undone by it).
//! For the same reason, the next group is sent only once the cut-off session has ended: it is
//! terminated (`pg_terminate_backend`, allowed on a role's own sessions) and waited for, or a
//! later group could land first and then be overwritten by it. (With a transaction the first
//! attempt's row locks are taken before its COMMIT is sent, and a later group waits for them.)
//! Sessions commit with `synchronous_commit=on`, whatever the server's default. Error messages
//! name the host and database and never contain the password or the connection URL.
//!
//! With `ha` set, the backend also opens the HA lock ([`ha`]) and every write is fenced: each
//! group's transaction first checks this node's leadership epoch against the lock row, and the
//! group fails with [`Error::Fenced`] when a newer epoch exists, and notifies the keys it
//! changed on the table's change feed ([`feed`]) in the same transaction: BEGIN with the
//! fencing check, then the writes with the notification, then COMMIT (three round trips).
//!
//! Not done here: a process other than this one writing the same table while a
//! `CachedBackend` is in front (HA nodes run without one).

pub(crate) mod feed;
pub(crate) mod ha;
mod url;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_pg::{PoolOptions, describe, describe_pool};
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use crate::key::validate_prefix;
use crate::list::{BATCH, SkipScan, prefix_end};
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
        if !MAX_PARALLEL_RANGE.contains(&self.max_parallel) {
            return Err(Error::Backend("postgresql max_parallel must be from 1 to 1024".into()));
        }
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
            if h.standby_max_staleness.is_some_and(|d| !ha::MAX_STALENESS_RANGE.contains(&d)) {
                return Err(Error::Backend(
                    "postgresql ha_standby_max_staleness must be from 200ms to 60s".into(),
                ));
            }
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
    /// A group's writes in one statement: its deletes (a key array) in a data-modifying CTE,
    /// its puts (key and value arrays) in the INSERT. The two never name the same key. The
    /// cardinality test is a one-time filter: with no key to delete, no plan scans anything
    /// (PostgreSQL's generic plan for the statement, made while the table was small, can be a
    /// sequential scan).
    write_many: String,
    list_below: String,
    list_open: String,
    scan_below: String,
    scan_open: String,
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
            write_many: format!(
                "WITH gone AS (DELETE FROM {table} WHERE cardinality($3::text[]) > 0 AND key = ANY($3)) \
                 INSERT INTO {table} (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            list_below: format!(
                "SELECT key FROM {table} WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"
            ),
            list_open: format!("SELECT key FROM {table} WHERE key >= $1 ORDER BY key LIMIT $2"),
            scan_below: format!(
                "SELECT key FROM {table} WHERE key >= $1 AND key <> $2 AND key < $3 ORDER BY key LIMIT $4"
            ),
            scan_open: format!(
                "SELECT key FROM {table} WHERE key >= $1 AND key <> $2 ORDER BY key LIMIT $3"
            ),
            fence: ha_table.map(ha::fence_sql),
        }
    }
}

/// The most requests one group commit takes, bounding one transaction's size and latency.
const MAX_GROUP: usize = 512;

/// One queued write request and where its outcome goes.
struct Job {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<()>>,
}

pub struct PostgresBackend {
    /// The queue to the group-commit task; it ends when the backend is dropped.
    writer: mpsc::UnboundedSender<Job>,
    /// Commits made, so a test can prove concurrent writes shared them.
    #[cfg(test)]
    commits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pool: Pool,
    sql: Sql,
    target: String,
    /// HA: the lock that sets the epoch the commit task's writes carry.
    ha_lock: Option<Arc<ha::PgHaLock>>,
    /// The runtime the backend was opened on: the server's (see [`Self::client`]).
    runtime: tokio::runtime::Handle,
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
        // Every statement of these sessions finds rows by key, which the table's primary key
        // serves. PostgreSQL keeps a prepared statement's generic plan, made from the table's
        // statistics of the time, until the table is analyzed again: one made while the table
        // was small scans it whole, and would go on doing so for every read, list and delete
        // as the table grows, until autovacuum analyzes it again (never, with autovacuum off).
        // Measured: 14 to 17 ms against 0.3 for a group with a delete, at 300,000 rows.
        add_options(&mut conn, "-c enable_seqscan=off");
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
        let (writer, queue) = mpsc::unbounded_channel();
        let committer = Committer {
            pool: pool.clone(),
            sql: Sql::new(&table, ha_table.as_deref()),
            fence,
            channel: opts.ha.as_ref().map(|_| feed::channel(&opts.table)),
            target: target.clone(),
            pids: std::sync::Mutex::default(),
            #[cfg(test)]
            commits: std::sync::Arc::default(),
        };
        #[cfg(test)]
        let commits = std::sync::Arc::clone(&committer.commits);
        tokio::spawn(committer.run(queue));
        let b = Self {
            writer,
            #[cfg(test)]
            commits,
            pool,
            sql: Sql::new(&table, ha_table.as_deref()),
            target,
            ha_lock,
            runtime: tokio::runtime::Handle::current(),
            #[cfg(test)]
            list_reads: std::sync::atomic::AtomicUsize::new(0),
        };
        b.create_table(&table, &opts.table).await?;
        Ok(b)
    }

    /// `host:port/database`, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The HA lock, when the backend was opened with `ha`.
    pub fn ha_lock(&self) -> Option<Arc<ha::PgHaLock>> {
        self.ha_lock.clone()
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
        // A connection the pool makes is driven by a task spawned on the runtime that asked for
        // it. A caller on a runtime of its own (expiry's thread, at the lowest priority, ended
        // at seal) asks from the server's runtime, so that it never owns a connection that
        // requests then share; callers on the server's runtime ask directly.
        let on_server =
            tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == self.runtime.id());
        let got = if on_server {
            self.pool.get().await
        } else {
            let pool = self.pool.clone();
            match self.runtime.spawn(async move { pool.get().await }).await {
                Ok(got) => got,
                Err(e) => {
                    return Err(Failure::Final(Error::Backend(format!(
                        "postgresql {}: cannot get a connection: {e}",
                        self.target
                    ))));
                }
            }
        };
        got.map_err(|e| {
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

    async fn try_scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> std::result::Result<Vec<String>, Failure> {
        let c = self.client().await?;
        let from = format!("{prefix}{}", after.unwrap_or(""));
        // The key itself is skipped after a page; from a folder's start there is no such key.
        let skip = if after.is_some() { from.as_str() } else { "" };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match prefix_end(prefix) {
            Some(end) => {
                let st = c
                    .prepare_cached(&self.sql.scan_below)
                    .await
                    .map_err(|e| self.failure("scan", &e))?;
                c.query(&st, &[&from, &skip, &end, &limit]).await
            }
            None => {
                let st = c
                    .prepare_cached(&self.sql.scan_open)
                    .await
                    .map_err(|e| self.failure("scan", &e))?;
                c.query(&st, &[&from, &skip, &limit]).await
            }
        }
        .map_err(|e| self.failure("scan", &e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let k: String = r.get(0);
                k[prefix.len()..].to_owned()
            })
            .collect())
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

    /// Queues `ops` for the next group commit and waits until that commit returned.
    async fn write(&self, ops: Vec<Op>) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        self.writer.send(Job { ops, done }).map_err(|_| {
            Error::Backend(format!("postgresql {}: the commit task is gone", self.target))
        })?;
        outcome.await.map_err(|_| {
            Error::Backend(format!(
                "postgresql {}: the commit task stopped before answering; the write may or may not have been applied",
                self.target
            ))
        })?
    }
}

/// How one attempt at a group went.
enum GroupFailure {
    /// The job at this index failed on its own statement; nothing was committed.
    Job(usize, Error),
    /// The connection was closed before anything was committed: the group can be retried.
    Closed(String),
    /// Every job fails with this error.
    All(Error),
    /// The group's writes as one statement failed, for a reason that may be one job's: run it
    /// again with a statement per operation, which tells which job it was.
    Combined,
}

/// The task that commits queued writes in groups, on one pooled connection at a time.
struct Committer {
    pool: Pool,
    sql: Sql,
    /// HA: the epoch every group's transaction checks first.
    fence: Option<Arc<crate::ha::Fence>>,
    /// HA: the change feed's channel every group's transaction notifies last.
    channel: Option<String>,
    target: String,
    /// The server's process id of each pooled connection a group was written on, by the
    /// pool's object id: to end the session of one cut off after its group was sent.
    pids: std::sync::Mutex<std::collections::HashMap<String, i32>>,
    #[cfg(test)]
    commits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Committer {
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Job>) {
        // Takes one request, then whatever queued up behind it (typically during the previous
        // group's commit): the group grows with the load, with no timer.
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            self.commit(group).await;
        }
    }

    async fn commit(&self, mut group: Vec<Job>) {
        let mut retried = false;
        let mut combined = true;
        while !group.is_empty() {
            let failure = match self.try_group(&group, combined).await {
                Ok(()) => {
                    for job in group {
                        // The requester may have gone; its write is committed all the same.
                        let _ = job.done.send(Ok(()));
                    }
                    return;
                }
                Err(f) => f,
            };
            let all = match failure {
                GroupFailure::Job(i, e) => {
                    // Its transaction was rolled back whole: run the others again without it.
                    let _ = group.remove(i).done.send(Err(e));
                    continue;
                }
                GroupFailure::Closed(msg) if !retried => {
                    tracing::debug!(target = %self.target, "{msg}; retrying the group on a new connection");
                    retried = true;
                    continue;
                }
                GroupFailure::Closed(msg) => Error::Backend(msg),
                GroupFailure::All(e) => e,
                GroupFailure::Combined => {
                    combined = false;
                    continue;
                }
            };
            // A fenced group keeps its kind: the core answers it as a standby's refusal.
            let fenced = matches!(all, Error::Fenced(_));
            if !fenced {
                tracing::error!(target = %self.target, error = %all, requests = group.len(), "postgresql group commit failed; every request in it fails");
            }
            let msg = match all {
                Error::Fenced(m) | Error::Backend(m) => m,
                other => other.to_string(),
            };
            for job in group {
                let e =
                    if fenced { Error::Fenced(msg.clone()) } else { Error::Backend(msg.clone()) };
                let _ = job.done.send(Err(e));
            }
            return;
        }
    }

    fn error(&self, what: &str, e: &tokio_postgres::Error) -> Error {
        Error::Backend(format!("postgresql {}: {what}: {}", self.target, describe(e)))
    }

    /// The group's writes, a statement per operation, pipelined.
    async fn write_each(
        &self,
        tx: &deadpool_postgres::ClientWrapper,
        group: &[Job],
    ) -> std::result::Result<(), GroupFailure> {
        let put =
            tx.prepare_cached(&self.sql.put).await.map_err(|e| self.before_commit("put", &e))?;
        let delete = tx
            .prepare_cached(&self.sql.delete)
            .await
            .map_err(|e| self.before_commit("delete", &e))?;
        let (put, delete) = (&put, &delete);
        // Polled together, the statements go out back to back without waiting for each answer.
        let results = futures_util::future::join_all(
            group
                .iter()
                .enumerate()
                .flat_map(|(i, job)| job.ops.iter().map(move |op| (i, op)))
                .map(|(i, op)| async move {
                    let r = match op {
                        Op::Put(k, v) => tx.execute(put, &[k, v]).await,
                        Op::Delete(k) => tx.execute(delete, &[k]).await,
                    };
                    (i, r)
                }),
        )
        .await;
        // The first statement that failed for its own reason; those after it only report
        // the aborted transaction.
        let mut aborted = None;
        for (i, r) in results {
            let Err(e) = r else { continue };
            if coffer_pg::Failure::of(&e) == coffer_pg::Failure::Closed {
                return Err(self.before_commit("write", &e));
            }
            if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) {
                aborted.get_or_insert_with(|| self.error("write", &e));
                continue;
            }
            return Err(GroupFailure::Job(i, self.error("write failed, not applied", &e)));
        }
        if let Some(e) = aborted {
            return Err(GroupFailure::All(e));
        }
        Ok(())
    }

    /// The group's writes as one statement inside the group's transaction (HA): see
    /// [`final_values`]. Any failure but a closed connection is [`GroupFailure::Combined`]: the
    /// group is run again a statement per operation.
    async fn write_combined(
        &self,
        tx: &deadpool_postgres::ClientWrapper,
        group: &[Job],
    ) -> std::result::Result<(), GroupFailure> {
        let st = tx
            .prepare_cached(&self.sql.write_many)
            .await
            .map_err(|e| self.before_commit("write", &e))?;
        let (keys, values, gone) = final_values(group);
        tx.execute(&st, &[&keys, &values, &gone]).await.map(drop).map_err(|e| {
            if coffer_pg::Failure::of(&e) == coffer_pg::Failure::Closed {
                return self.before_commit("write", &e);
            }
            tracing::debug!(target = %self.target, error = %describe(&e), "a group's combined write failed; running it a statement per operation");
            GroupFailure::Combined
        })
    }

    /// Without HA, a combined group is that one statement and nothing else: PostgreSQL runs it
    /// in a transaction of its own and commits it before it answers, so the group costs one
    /// round trip, and a statement that fails leaves nothing behind. Once it was sent, a closed
    /// connection leaves the outcome unknown: the group then fails, saying so (writing it
    /// again could land before the first attempt, still running on the server, and be undone
    /// by it), once the cut-off session has ended ([`Self::end_session`]).
    async fn write_alone(
        &self,
        c: &deadpool_postgres::Object,
        group: &[Job],
    ) -> std::result::Result<(), GroupFailure> {
        let st = c
            .prepare_cached(&self.sql.write_many)
            .await
            .map_err(|e| self.before_commit("write", &e))?;
        let pid = self.pid_of(c).await?;
        let (keys, values, gone) = final_values(group);
        if c.is_closed() {
            return Err(GroupFailure::Closed(format!(
                "postgresql {}: write: connection closed",
                self.target
            )));
        }
        #[cfg(test)]
        self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match c.execute(&st, &[&keys, &values, &gone]).await {
            Ok(_) => Ok(()),
            Err(e) if coffer_pg::Failure::of(&e) == coffer_pg::Failure::Closed => {
                self.end_session(pid).await;
                Err(GroupFailure::All(Error::Backend(format!(
                    "postgresql {}: write: the connection closed before the server answered; the write may or may not have been applied",
                    self.target
                ))))
            }
            Err(e) => {
                tracing::debug!(target = %self.target, error = %describe(&e), "a group's combined write failed; running it a statement per operation");
                Err(GroupFailure::Combined)
            }
        }
    }

    /// The server's process id of `c`'s session (asked once per connection).
    async fn pid_of(
        &self,
        c: &deadpool_postgres::Object,
    ) -> std::result::Result<i32, GroupFailure> {
        let id = deadpool_postgres::Object::id(c).to_string();
        if let Some(pid) = self.pids.lock().ok().and_then(|p| p.get(&id).copied()) {
            return Ok(pid);
        }
        let pid: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| self.before_commit("session id", &e))?
            .get(0);
        if let Ok(mut pids) = self.pids.lock() {
            // Connections the pool replaced leave their entries behind: bounded, not pruned.
            if pids.len() >= 256 {
                pids.clear();
            }
            pids.insert(id, pid);
        }
        Ok(pid)
    }

    /// Ends the server's session `pid`, cut off after a group's statement was sent, and waits
    /// until it is gone (at most 10 s): until then it could still run that statement after a
    /// later group had written the same key, and undo it. With a transaction this cannot
    /// happen: a group's row locks are taken before its COMMIT is sent, and a later group
    /// waits for them.
    async fn end_session(&self, pid: i32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let gone = async {
                let c = self.pool.get().await.ok()?;
                c.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.ok()?;
                let row = c
                    .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
                    .await
                    .ok()?;
                Some(row.is_none())
            };
            if gone.await == Some(true) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(target = %self.target, pid, "the session of a connection cut off after a write was sent could not be ended; a later write of the same key could be overwritten by it");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A failure before COMMIT: retryable on a closed connection, since nothing was committed.
    fn before_commit(&self, what: &str, e: &tokio_postgres::Error) -> GroupFailure {
        match coffer_pg::Failure::of(e) == coffer_pg::Failure::Closed {
            true => GroupFailure::Closed(format!(
                "postgresql {}: {what}: connection closed",
                self.target
            )),
            false => GroupFailure::All(self.error(what, e)),
        }
    }

    /// One transaction for the whole group, one COMMIT. `combined`: the group's final value of
    /// each key it writes in one statement (what PostgreSQL executes per statement is most of a
    /// group's time: a KV v2 write is four to six operations), alone without HA
    /// ([`Self::write_alone`]); else a statement per operation, pipelined, so that a failing
    /// one names its job.
    async fn try_group(
        &self,
        group: &[Job],
        combined: bool,
    ) -> std::result::Result<(), GroupFailure> {
        let c = self.pool.get().await.map_err(|e| {
            GroupFailure::All(Error::Backend(format!(
                "postgresql {}: cannot get a connection: {}",
                self.target,
                describe_pool(&e)
            )))
        })?;
        if combined && self.fence.is_none() && self.channel.is_none() {
            return self.write_alone(&c, group).await;
        }
        // --- HA fencing (the only HA code in the write path): the epoch check comes first in
        // the transaction, and its FOR SHARE lock on the lock row holds off a new leader's
        // taking until this transaction ends. It goes out with BEGIN: had BEGIN failed, it
        // would have run on its own, and it only reads.
        let epoch = self.fence.as_ref().map(|f| f.epoch());
        let fence = async {
            match (&self.sql.fence, epoch) {
                (Some(sql), Some(epoch)) => {
                    let st = c.prepare_cached(sql).await?;
                    c.query_one(&st, &[&epoch]).await.map(|r| r.get::<_, bool>(0))
                }
                _ => Ok(true),
            }
        };
        let (begun, fenced) = futures_util::future::join(c.batch_execute("BEGIN"), fence).await;
        begun.map_err(|e| self.before_commit("begin", &e))?;
        let in_transaction = async {
            let ok = fenced.map_err(|e| self.before_commit("fencing check", &e))?;
            if !ok {
                tracing::warn!(
                    target_db = %self.target,
                    epoch,
                    "write refused by HA fencing: another node leads now"
                );
                return Err(GroupFailure::All(Error::Fenced(format!(
                    "postgresql {}: write refused: this node does not hold the newest leadership epoch",
                    self.target
                ))));
            }
            // --- end of HA fencing
            let writes = async {
                match combined {
                    true => self.write_combined(&c, group).await,
                    false => self.write_each(&c, group).await,
                }
            };
            // HA change feed: delivered by PostgreSQL only once this transaction committed.
            let notify = async {
                let Some(channel) = &self.channel else { return Ok(()) };
                let keys = feed::payload(group.iter().flat_map(|j| j.ops.iter().map(Op::key)));
                let st = c
                    .prepare_cached("SELECT pg_notify($1, $2)")
                    .await
                    .map_err(|e| self.before_commit("notify", &e))?;
                c.execute(&st, &[channel, &keys])
                    .await
                    .map(drop)
                    .map_err(|e| self.before_commit("notify", &e))
            };
            let (written, notified) = futures_util::future::join(writes, notify).await;
            written.and(notified)
        };
        if let Err(failure) = in_transaction.await {
            self.roll_back(c).await;
            return Err(failure);
        }
        #[cfg(test)]
        self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.batch_execute("COMMIT").await.map_err(|e| match coffer_pg::Failure::of(&e) {
            coffer_pg::Failure::Closed => GroupFailure::All(Error::Backend(format!(
                "postgresql {}: commit: the connection closed before the server answered; the write may or may not have been applied",
                self.target
            ))),
            _ => GroupFailure::All(self.error("commit failed, the write was not applied", &e)),
        })
    }

    /// Ends a group's transaction without committing it, so that its connection goes back to
    /// the pool outside any transaction; a connection that cannot is closed instead.
    async fn roll_back(&self, c: deadpool_postgres::Object) {
        if c.is_closed() {
            return;
        }
        if let Err(e) = c.batch_execute("ROLLBACK").await {
            tracing::debug!(target = %self.target, error = %describe(&e), "rollback of a failed group failed; closing its connection");
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

/// Each key's last operation in `group` (later requests' after earlier ones', as the queue
/// ordered them), as the arrays of the combined statement: keys and values to put, keys to
/// delete (no key in both).
fn final_values(group: &[Job]) -> (Vec<&str>, Vec<&[u8]>, Vec<&str>) {
    let mut last: std::collections::BTreeMap<&str, Option<&[u8]>> =
        std::collections::BTreeMap::new();
    for op in group.iter().flat_map(|j| j.ops.iter()) {
        match op {
            Op::Put(k, v) => last.insert(k.as_str(), Some(v.as_slice())),
            Op::Delete(k) => last.insert(k.as_str(), None),
        };
    }
    let (mut keys, mut values, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in last {
        match v {
            Some(v) => {
                keys.push(k);
                values.push(v);
            }
            None => gone.push(k),
        }
    }
    (keys, values, gone)
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
        self.write(vec![Op::Put(key.to_owned(), value)]).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.write(vec![Op::Delete(key.to_owned())]).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        retry_closed!(self, self.try_list(prefix))
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        retry_closed!(self, self.try_scan(prefix, after, limit))
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        for op in &ops {
            validate_key(op.key())?;
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.write(ops).await
    }

    fn kind(&self) -> &'static str {
        "postgresql"
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

#[cfg(test)]
mod tests;
