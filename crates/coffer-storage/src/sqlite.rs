//! Embedded SQLite backend: the default. One file, WAL journal, `synchronous=FULL` unless the
//! operator chooses otherwise, so an acknowledged write survives `kill -9` and power loss.
//!
//! Calls run on tokio's blocking pool; one connection writes and one reads, so reads are not
//! queued behind a write's fsync (WAL allows that).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::key::validate_prefix;
use crate::list::{BATCH, SkipScan};
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

pub struct SqliteBackend {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
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
        let reader = open(&opts.path, opts.synchronous)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            #[cfg(test)]
            list_reads: Arc::default(),
        })
    }

    async fn with<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| Error::Backend("sqlite connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::Backend(format!("sqlite task failed: {e}")))?
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        validate_key(key)?;
        let key = key.to_owned();
        Self::with(&self.reader, move |c| {
            let mut st = c.prepare_cached("SELECT value FROM coffer_kv WHERE key = ?1")?;
            Ok(st.query_row(params![key], |r| r.get(0)).optional()?)
        })
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        validate_key(key)?;
        let key = key.to_owned();
        Self::with(&self.writer, move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO coffer_kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )?;
            st.execute(params![key, value])?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let key = key.to_owned();
        Self::with(&self.writer, move |c| {
            c.prepare_cached("DELETE FROM coffer_kv WHERE key = ?1")?.execute(params![key])?;
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let mut scan = SkipScan::new(prefix);
        #[cfg(test)]
        let reads = Arc::clone(&self.list_reads);
        Self::with(&self.reader, move |c| {
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

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        for op in &ops {
            validate_key(op.key())?;
        }
        Self::with(&self.writer, move |c| {
            let tx = c.transaction()?;
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        tx.prepare_cached(
                            "INSERT INTO coffer_kv (key, value) VALUES (?1, ?2)
                             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        )?
                        .execute(params![k, v])?;
                    }
                    Op::Delete(k) => {
                        tx.prepare_cached("DELETE FROM coffer_kv WHERE key = ?1")?
                            .execute(params![k])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
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
