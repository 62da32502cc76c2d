//! Embedded SQLite backend: the default. One file, WAL journal, `synchronous=FULL` unless the
//! operator chooses otherwise, so an acknowledged write survives `kill -9` and power loss.
//!
//! Writes use group commit: one thread owns the write connection; every `put`, `delete` and
//! `batch` is queued to it, and it applies everything queued meanwhile in one transaction,
//! then commits once (one fsync for the group). No request is acknowledged before the commit
//! that holds it returned. A request whose own statements fail fails alone: the group is then
//! rolled back and applied again, each request inside its own savepoint, and the failing one is
//! rolled back to its savepoint. A failed COMMIT fails every request of its group (none of them
//! is acknowledged, and none is on disk).
//!
//! Reads run on tokio's blocking pool on their own connection, so they are not queued behind a
//! group's fsync (WAL allows that) and see every acknowledged write.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::key::validate_prefix;
use crate::list::{BATCH, SkipScan, prefix_end};
use crate::{Backend, Error, Op, Result, validate_key};

/// How hard SQLite works to make a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync on every commit (the default).
    Full,
    /// fsync at WAL checkpoints only: a power loss may drop the last commits, a process crash not.
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub synchronous: Synchronous,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), synchronous: Synchronous::Full }
    }

    /// Parses the `synchronous` config value.
    pub fn parse_synchronous(s: &str) -> Result<Synchronous> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            other => Err(Error::Backend(format!(
                "sqlite synchronous must be \"full\" or \"normal\", not {other:?}"
            ))),
        }
    }
}

/// The most requests one group commit takes: a bound on the transaction's size, so one
/// flood of writes cannot make a single commit (and every waiter's latency) arbitrarily long.
const MAX_GROUP: usize = 512;

/// One queued write request and where its outcome goes.
struct Job {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<()>>,
}

pub struct SqliteBackend {
    /// The queue to the committer thread; it ends when the backend is dropped.
    writer: Mutex<mpsc::Sender<Job>>,
    reader: Arc<Mutex<Connection>>,
    /// The blocking pool reads run on: the runtime's the backend was opened in (the server's),
    /// whichever runtime asks. A read holds the read connection's lock, and a thread of a
    /// lower priority (expiry's, whose blocking threads inherit it) preempted while holding
    /// it would make every request that reads storage wait for it.
    runtime: Option<tokio::runtime::Handle>,
    /// Commits made, so a test can prove concurrent writes shared them.
    #[cfg(test)]
    commits: Arc<std::sync::atomic::AtomicUsize>,
    /// Groups applied again with a savepoint per request after one of them failed.
    #[cfg(test)]
    retries: Arc<std::sync::atomic::AtomicUsize>,
    /// Held by a test to stop the committer between groups, so the next group is known.
    #[cfg(test)]
    gate: Arc<Mutex<()>>,
    /// Index reads made by `list`, so a test can prove a listing skips subtrees.
    #[cfg(test)]
    list_reads: Arc<std::sync::atomic::AtomicUsize>,
}

fn open(path: &Path, sync: Synchronous) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Backend(format!("sqlite refused WAL journal mode (got {mode})")));
    }
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;"))?;
    Ok(conn)
}

impl SqliteBackend {
    /// Opens (creating when missing, mode 0600) the database file at `opts.path`.
    pub fn open(opts: &SqliteOptions) -> Result<Self> {
        if let Some(dir) = opts.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Backend(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        // Create the file ourselves so that it is never world-readable, not even for a moment;
        // SQLite gives its -wal and -shm files the main file's mode.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&opts.path)
            .map_err(|e| Error::Backend(format!("cannot open {}: {e}", opts.path.display())))?;
        // An existing file must be as private as one we create: refuse it otherwise.
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&opts.path)
                .map_err(|e| Error::Backend(format!("cannot stat {}: {e}", opts.path.display())))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::Backend(format!(
                    "database file {} is readable or writable by group or others (mode {:o}); run: chmod 600 {}",
                    opts.path.display(),
                    mode & 0o777,
                    opts.path.display()
                )));
            }
        }
        let writer = open(&opts.path, opts.synchronous)?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS coffer_kv (
                 key   TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL
             ) WITHOUT ROWID;",
        )?;
        // A group applied again with a savepoint per request (after one failed) journals the
        // pages each savepoint changes: in memory, not in a temporary file the commit thread
        // would write, create and delete each time.
        writer.execute_batch("PRAGMA temp_store=MEMORY;")?;
        let reader = open(&opts.path, opts.synchronous)?;
        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            conn: writer,
            #[cfg(test)]
            commits: Arc::default(),
            #[cfg(test)]
            retries: Arc::default(),
            #[cfg(test)]
            gate: Arc::default(),
        };
        let me = Self {
            writer: Mutex::new(tx),
            reader: Arc::new(Mutex::new(reader)),
            runtime: tokio::runtime::Handle::try_current().ok(),
            #[cfg(test)]
            commits: Arc::clone(&committer.commits),
            #[cfg(test)]
            retries: Arc::clone(&committer.retries),
            #[cfg(test)]
            gate: Arc::clone(&committer.gate),
            #[cfg(test)]
            list_reads: Arc::default(),
        };
        std::thread::Builder::new()
            .name("sqlite-commit".into())
            .spawn(move || committer.run(rx))
            .map_err(|e| Error::Backend(format!("cannot start the sqlite commit thread: {e}")))?;
        Ok(me)
    }

    /// Queues `ops` for the next group commit and waits until that commit returned.
    async fn write(&self, ops: Vec<Op>) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        self.writer
            .lock()
            .map_err(|_| Error::Backend("sqlite write queue lock poisoned".into()))?
            .send(Job { ops, done })
            .map_err(|_| Error::Backend("sqlite commit thread is gone".into()))?;
        // Dropped unanswered only if the thread died mid-group: whether it committed is unknown.
        outcome.await.map_err(|_| {
            Error::Backend(
                "sqlite commit thread stopped before answering; the write may or may not have been applied"
                    .into(),
            )
        })?
    }

    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.reader);
        let read = move || {
            let mut guard = conn
                .lock()
                .map_err(|_| Error::Backend("sqlite connection lock poisoned".into()))?;
            f(&mut guard)
        };
        match &self.runtime {
            Some(rt) => rt.spawn_blocking(read).await,
            None => tokio::task::spawn_blocking(read).await,
        }
        .map_err(|e| Error::Backend(format!("sqlite task failed: {e}")))?
    }
}

/// The thread that owns the write connection and commits queued requests in groups.
struct Committer {
    conn: Connection,
    #[cfg(test)]
    commits: Arc<std::sync::atomic::AtomicUsize>,
    #[cfg(test)]
    retries: Arc<std::sync::atomic::AtomicUsize>,
    #[cfg(test)]
    gate: Arc<Mutex<()>>,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        // Waits for one request, then takes whatever queued up behind it (typically while the
        // previous group's fsync ran): the group grows with the load, with no timer.
        while let Ok(first) = rx.recv() {
            #[cfg(test)]
            let gate = Arc::clone(&self.gate);
            #[cfg(test)]
            let _held = gate.lock();
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let outcomes = self.commit(&group);
            #[cfg(test)]
            self.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (job, outcome) in group.into_iter().zip(outcomes) {
                // The requester may have gone away; its write stands (or not) all the same.
                let _ = job.done.send(outcome);
            }
        }
    }

    /// Applies `group` in one transaction and commits it: one outcome per job, in order.
    ///
    /// Every request's statements go straight into the transaction. Only when one of them
    /// fails is the transaction rolled back and the group applied again, each request in its
    /// own savepoint, so that the failing one fails alone. With a savepoint per request on
    /// every group, SQLite copies each page a request changes into a sub-journal first, and a
    /// group of token creations (six keys each, in six places of the tree) outgrew the
    /// sub-journal's memory and spilled it to a temporary file: the commit thread, the one
    /// thread every write waits for, wrote most pages twice (docs/performance.md).
    fn commit(&mut self, group: &[Job]) -> Vec<Result<()>> {
        let tx = match begin(&mut self.conn) {
            Ok(tx) => tx,
            Err(e) => return fail_all(group, &e),
        };
        let failed =
            group.iter().find_map(|job| job.ops.iter().try_for_each(|op| apply(&tx, op)).err());
        let Some(e) = failed else {
            return finish(tx, group, group.iter().map(|_| Ok(())).collect());
        };
        // Part of the failing request may be applied: none of this transaction may stand.
        drop(tx);
        if let [_] = group {
            return vec![Err(Error::Backend(format!("sqlite write failed, not applied: {e}")))];
        }
        #[cfg(test)]
        self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tx = match begin(&mut self.conn) {
            Ok(tx) => tx,
            Err(e) => return fail_all(group, &e),
        };
        let mut outcomes = Vec::with_capacity(group.len());
        for job in group {
            match apply_in_savepoint(&tx, &job.ops) {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    // Dropping `tx` rolls everything back: nothing of this group is applied.
                    drop(tx);
                    tracing::error!(error = %e, requests = group.len(), "sqlite savepoint failed; the group is rolled back");
                    let msg = format!("sqlite write failed, not applied: {e}");
                    return group.iter().map(|_| Err(Error::Backend(msg.clone()))).collect();
                }
            }
        }
        finish(tx, group, outcomes)
    }
}

fn begin(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// Commits `tx`; the requests' own `outcomes` stand only if the commit does.
fn finish(
    tx: rusqlite::Transaction<'_>,
    group: &[Job],
    outcomes: Vec<Result<()>>,
) -> Vec<Result<()>> {
    match tx.commit() {
        Ok(()) => outcomes,
        Err(e) => {
            tracing::error!(error = %e, requests = group.len(), "sqlite group commit failed; every request in it fails");
            group
                .iter()
                .map(|_| {
                    Err(Error::Backend(format!(
                        "sqlite commit failed, the write was not applied: {e}"
                    )))
                })
                .collect()
        }
    }
}

fn fail_all(group: &[Job], e: &rusqlite::Error) -> Vec<Result<()>> {
    let msg = format!("sqlite cannot begin the write transaction, not applied: {e}");
    group.iter().map(|_| Err(Error::Backend(msg.clone()))).collect()
}

/// One request's ops inside its own savepoint: all of them, or (rolled back) none. The outer
/// error is the savepoint itself failing: the transaction's state is then unknown, and the
/// whole group must be rolled back.
fn apply_in_savepoint(tx: &rusqlite::Transaction<'_>, ops: &[Op]) -> rusqlite::Result<Result<()>> {
    // Prepared once per connection: parsing these on every request costs more than the
    // inserts themselves.
    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
    match ops.iter().try_for_each(|op| apply(tx, op)) {
        Ok(()) => {
            tx.prepare_cached("RELEASE job")?.execute([])?;
            Ok(Ok(()))
        }
        Err(e) => {
            // Undo this request only; the others in the group stand.
            tx.prepare_cached("ROLLBACK TO job")?.execute([])?;
            tx.prepare_cached("RELEASE job")?.execute([])?;
            Ok(Err(Error::Backend(format!("sqlite write failed, not applied: {e}"))))
        }
    }
}

fn apply(c: &Connection, op: &Op) -> rusqlite::Result<()> {
    match op {
        Op::Put(k, v) => {
            c.prepare_cached(
                "INSERT INTO coffer_kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![k, v])?;
        }
        Op::Delete(k) => {
            c.prepare_cached("DELETE FROM coffer_kv WHERE key = ?1")?.execute(params![k])?;
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        validate_key(key)?;
        let key = key.to_owned();
        self.with(move |c| {
            let mut st = c.prepare_cached("SELECT value FROM coffer_kv WHERE key = ?1")?;
            Ok(st.query_row(params![key], |r| r.get(0)).optional()?)
        })
        .await
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
        let mut scan = SkipScan::new(prefix);
        #[cfg(test)]
        let reads = Arc::clone(&self.list_reads);
        self.with(move |c| {
            while let Some(read) = scan.next_read() {
                #[cfg(test)]
                reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let keys: Vec<String> = match &read.below {
                    Some(below) => c
                        .prepare_cached(
                            "SELECT key FROM coffer_kv WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3",
                        )?
                        .query_map(params![read.from, below, BATCH], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?,
                    None => c
                        .prepare_cached("SELECT key FROM coffer_kv WHERE key >= ?1 ORDER BY key LIMIT ?2")?
                        .query_map(params![read.from, BATCH], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?,
                };
                scan.feed(&keys);
            }
            Ok(scan.finish())
        })
        .await
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let (prefix, from) = (prefix.to_owned(), format!("{prefix}{}", after.unwrap_or("")));
        let (end, after) = (prefix_end(&prefix), after.is_some());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            // `>` after a key, `>=` from the folder's start (which is not itself a key).
            let op = if after { ">" } else { ">=" };
            let keys: Vec<String> = match &end {
                Some(end) => c
                    .prepare_cached(&format!(
                        "SELECT key FROM coffer_kv WHERE key {op} ?1 AND key < ?2 ORDER BY key LIMIT ?3"
                    ))?
                    .query_map(params![from, end, limit], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
                None => c
                    .prepare_cached(&format!(
                        "SELECT key FROM coffer_kv WHERE key {op} ?1 ORDER BY key LIMIT ?2"
                    ))?
                    .query_map(params![from, limit], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            };
            Ok(keys.into_iter().map(|k| k[prefix.len()..].to_owned()).collect())
        })
        .await
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
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = SqliteBackend::open(&SqliteOptions::new(dir.path().join("c.db"))).expect("open");
        crate::conformance::exercise(&b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_a_commit_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let b = Arc::new(SqliteBackend::open(&SqliteOptions::new(&path)).expect("open"));
        // A write SQLite itself refuses, as a full disk or a constraint would.
        Connection::open(&path)
            .expect("second connection")
            .execute_batch(
                "CREATE TRIGGER poison BEFORE INSERT ON coffer_kv WHEN NEW.key = 'bad/key'
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
            )
            .expect("trigger");
        let before = b.commits.load(std::sync::atomic::Ordering::Relaxed);
        let gate = Arc::clone(&b.gate);
        let held = gate.lock().expect("gate");
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let b = Arc::clone(&b);
                tokio::spawn(async move {
                    let ops = match i {
                        // Several keys, one of them refused: the whole request must go.
                        13 => vec![
                            Op::Put("ok/13".into(), b"v".to_vec()),
                            Op::Put("bad/key".into(), b"v".to_vec()),
                        ],
                        i => vec![Op::Put(format!("ok/{i}"), b"v".to_vec())],
                    };
                    (i, b.batch(ops).await)
                })
            })
            .collect();
        // Let every request reach the queue while the committer waits at the gate.
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
        for w in writes {
            let (i, r) = w.await.expect("task");
            match i {
                13 => {
                    let e = r.expect_err("the refused request fails");
                    assert!(e.to_string().contains("poisoned"), "{e}");
                }
                _ => r.expect("the other requests stand"),
            }
        }
        let commits = b.commits.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert!(commits < 10, "40 concurrent requests took {commits} commits");
        // The refused request's group was applied a second time, a savepoint per request.
        assert!(b.retries.load(std::sync::atomic::Ordering::Relaxed) >= 1, "no group was retried");
        // Alone in its group (no savepoint then), a refused request leaves nothing either.
        let lone =
            vec![Op::Put("ok/lone".into(), b"v".to_vec()), Op::Put("bad/key".into(), vec![])];
        assert!(b.batch(lone).await.is_err(), "the refused request fails");
        drop(b);
        // From disk, through a fresh connection: the others committed, the refused one not at all.
        let b = SqliteBackend::open(&SqliteOptions::new(&path)).expect("reopen");
        for i in (0..40).filter(|i| *i != 13) {
            assert_eq!(b.get(&format!("ok/{i}")).await.expect("get"), Some(b"v".to_vec()), "{i}");
        }
        assert_eq!(b.get("ok/13").await.expect("get"), None, "a failed request left nothing");
        assert_eq!(b.get("bad/key").await.expect("get"), None);
        assert_eq!(b.get("ok/lone").await.expect("get"), None, "nor did a lone one");
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SqliteOptions::new(dir.path().join("c.db"));
        {
            let b = SqliteBackend::open(&opts).expect("open");
            b.put("a/b", b"v".to_vec()).await.expect("put");
        }
        let b = SqliteBackend::open(&opts).expect("reopen");
        assert_eq!(b.get("a/b").await.expect("get"), Some(b"v".to_vec()));
    }

    #[test]
    fn database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        let _b = SqliteBackend::open(&SqliteOptions::new(&path)).expect("open");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn an_existing_database_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.db");
        std::fs::write(&path, b"").expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SqliteBackend::open(&SqliteOptions::new(&path)).err().expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[tokio::test]
    async fn listing_skips_the_subtrees_of_large_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = SqliteBackend::open(&SqliteOptions::new(dir.path().join("c.db"))).expect("open");
        let ops: Vec<Op> = (0..3)
            .flat_map(|f| {
                (0..50_000).map(move |i| Op::Put(format!("sys/expire/b{f}/lease{i:06}"), vec![1]))
            })
            .chain([Op::Put("sys/expire/note".into(), vec![2])])
            .collect();
        b.batch(ops).await.expect("150,000 keys");
        let before = b.list_reads.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(b.list("sys/expire/").await.expect("list"), ["b0/", "b1/", "b2/", "note"]);
        let reads = b.list_reads.load(std::sync::atomic::Ordering::Relaxed) - before;
        // One read per folder, one for the file and the end: never a read per key.
        assert!(reads <= 5, "listing 4 children took {reads} index reads");
        assert_eq!(b.list("sys/expire/b1/").await.expect("list").len(), 50_000);
    }
}
