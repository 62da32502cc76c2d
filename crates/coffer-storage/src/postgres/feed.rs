//! The change feed of an HA cluster: how a node learns, without polling, which keys other nodes
//! wrote, so that a standby can invalidate what it keeps in memory.
//!
//! The writer's side is in the group commit (the parent module's `Committer`): in HA mode each
//! group's transaction ends with one `pg_notify` on the table's channel naming the keys it
//! changed (or "everything" when they do not fit a notification). PostgreSQL delivers a notification only
//! after its transaction committed, and to each listener in commit order, so a listener never
//! hears of a change before it is readable, and hears of changes in the order they happened.
//!
//! The reader's side is [`ChangeFeed`]: one connection of its own (never the request pool) that
//! LISTENs and hands every change to a callback, in order. Guarantees:
//! - [`ChangeFeed::sync`] is a barrier: it sends a notification on the feed's own session and
//!   returns once that notification came back. Every write committed before `sync` was called
//!   was delivered (and handed to the callback) before it returns: a read that starts after
//!   `sync` sees at least every change acknowledged before `sync` started (read-your-writes,
//!   across nodes). It costs one round trip to PostgreSQL.
//! - When the connection drops, [`ChangeFeed::is_live`] turns false at once, pending syncs fail,
//!   and the feed reconnects every second; after each (re)connection the callback gets
//!   [`Change::All`] first (what happened while it was away is unknown).
//!
//! - At most `QUEUE` notifications wait between the socket and the callback; a callback that
//!   falls further behind ends the session (PostgreSQL's notification queue is never held back
//!   by a slow reader that stays connected), which then reconnects with [`Change::All`].
//!
//! The consumer is a standby's read replica (`coffer_core::ha::replica`); the callback must be
//! quick (it runs on the feed's task): it hands changes on, it does not apply them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_pg::describe;
use futures_util::future::poll_fn;
use tokio::sync::oneshot;
use tokio_postgres::AsyncMessage;

use crate::{Error, Result};

/// The payload format's version, first in every notification.
const VERSION: &str = "1";
/// Notifications received and not yet handed to the callback, at most: beyond it the session is
/// dropped (and the callback told "everything changed" at the reconnection).
const QUEUE: usize = 4096;
/// PostgreSQL's limit is 8000 bytes; longer key lists become "everything".
const MAX_PAYLOAD: usize = 7900;

/// What a notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These keys were written or deleted.
    Keys(Vec<String>),
    /// Anything may have changed: too many keys for one notification, or the feed was away.
    All,
}

/// The channel of a data table: one per table, so clusters sharing a database do not hear
/// each other. At most 63 bytes, PostgreSQL's identifier limit.
pub(crate) fn channel(table: &str) -> String {
    let mut c = format!("coffer_changes:{table}");
    c.truncate(63);
    c
}

/// The payload naming the keys of one group's operations.
pub(crate) fn payload<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut p = String::from(VERSION);
    for k in keys {
        // Keys have no control characters (validate_key), so a newline separates them.
        if p.len() + 1 + k.len() > MAX_PAYLOAD {
            return format!("{VERSION}\n*");
        }
        p.push('\n');
        p.push_str(k);
    }
    p
}

enum Message {
    Change(Change),
    Sync(u64),
    /// Not ours (a newer format, another feed's sync): ignored.
    Other,
}

fn parse(payload: &str) -> Message {
    let mut lines = payload.split('\n');
    match lines.next() {
        Some(VERSION) => {}
        Some(first) => {
            return match first.strip_prefix("1 sync ") {
                Some(n) => n.parse().map(Message::Sync).unwrap_or(Message::Other),
                None => Message::Other,
            };
        }
        None => return Message::Other,
    }
    let keys: Vec<String> = lines.map(str::to_owned).collect();
    if keys.iter().any(|k| k == "*") {
        Message::Change(Change::All)
    } else {
        Message::Change(Change::Keys(keys))
    }
}

type OnChange = Box<dyn Fn(Change) + Send + Sync>;

struct Shared {
    live: AtomicBool,
    /// Changes handed to the callback since the feed opened (a position that only grows).
    applied: AtomicU64,
    next_sync: AtomicU64,
    /// The session's id plus the sync number make the token only this feed waits for.
    session: Mutex<Option<(Arc<tokio_postgres::Client>, i32)>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    on_change: OnChange,
    channel: String,
    target: String,
}

/// A standby's subscription to the cluster's changes; the listening task ends when it is dropped.
pub struct ChangeFeed {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChangeFeed {
    /// Opens the feed for `table` (the data table's name, as configured) and waits until it
    /// listens; `on_change` is called from the feed's task, in commit order.
    pub async fn open(
        connection_url: &str,
        table: &str,
        on_change: impl Fn(Change) + Send + Sync + 'static,
    ) -> Result<ChangeFeed> {
        let conn = super::url::parse(connection_url)?;
        let shared = Arc::new(Shared {
            live: AtomicBool::new(false),
            applied: AtomicU64::new(0),
            next_sync: AtomicU64::new(1),
            session: Mutex::new(None),
            waiting: Mutex::new(HashMap::new()),
            on_change: Box::new(on_change),
            channel: channel(table),
            target: conn.target(),
        });
        let (ready_tx, ready) = oneshot::channel();
        let task = tokio::spawn(run(conn, shared.clone(), ready_tx));
        match ready.await {
            Ok(Ok(())) => Ok(ChangeFeed { shared, task }),
            Ok(Err(e)) => {
                task.abort();
                Err(e)
            }
            Err(_) => Err(Error::Backend("postgresql change feed: its task ended".into())),
        }
    }

    /// Whether the feed's connection is up and listening now.
    pub fn is_live(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// How many changes were handed to the callback so far.
    pub fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::SeqCst)
    }

    /// The feed session's backend pid (for tests, and for operators reading pg_stat_activity).
    pub fn backend_pid(&self) -> Option<i32> {
        self.shared.session.lock().ok()?.as_ref().map(|(_, pid)| *pid)
    }

    /// Returns once every change committed before this call was handed to the callback; fails
    /// when the feed is down or the round trip takes longer than `within`.
    pub async fn sync(&self, within: Duration) -> Result<()> {
        let s = &self.shared;
        let down = || Error::Backend(format!("postgresql {}: the change feed is down", s.target));
        let (client, pid) = s.session.lock().map_err(|_| down())?.clone().ok_or_else(down)?;
        let n = s.next_sync.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        s.waiting.lock().map_err(|_| down())?.insert(n, tx);
        let token = format!("{VERSION} sync {}", (u64::from(pid.unsigned_abs()) << 40) | n);
        let sent = client.execute("SELECT pg_notify($1, $2)", &[&s.channel, &token]).await;
        let outcome = match sent {
            Err(e) => Err(Error::Backend(format!(
                "postgresql {}: change feed sync: {}",
                s.target,
                describe(&e)
            ))),
            Ok(_) => match tokio::time::timeout(within, rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(down()),
                Err(_) => Err(Error::Backend(format!(
                    "postgresql {}: change feed sync not answered within {within:?}",
                    s.target
                ))),
            },
        };
        if let Ok(mut w) = s.waiting.lock() {
            w.remove(&n);
        }
        outcome
    }
}

/// Connects, listens and delivers until the connection ends; then again, every second.
async fn run(conn: coffer_pg::ConnString, s: Arc<Shared>, ready: oneshot::Sender<Result<()>>) {
    let mut ready = Some(ready);
    loop {
        match listen_once(&conn, &s, &mut ready).await {
            Ok(()) => {
                tracing::warn!(target_db = %s.target, "change feed connection closed; reconnecting")
            }
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tracing::warn!(target_db = %s.target, error = %e, "change feed down; reconnecting");
            }
        }
        s.live.store(false, Ordering::SeqCst);
        if let Ok(mut g) = s.session.lock() {
            *g = None;
        }
        // Dropping the senders fails every pending sync.
        if let Ok(mut w) = s.waiting.lock() {
            w.clear();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    conn: &coffer_pg::ConnString,
    s: &Arc<Shared>,
    ready: &mut Option<oneshot::Sender<Result<()>>>,
) -> Result<()> {
    let err = |what: &str, e: &tokio_postgres::Error| {
        Error::Backend(format!("postgresql {}: change feed: {what}: {}", s.target, describe(e)))
    };
    let tls = conn.tls().map_err(|e| Error::Backend(format!("postgresql {}: {e}", s.target)))?;
    let (client, mut connection) =
        conn.config().connect(tls).await.map_err(|e| err("connect", &e))?;
    let (notes_tx, mut notes) = tokio::sync::mpsc::channel(QUEUE);
    // The connection is driven here, and its notifications passed on, until it ends. A full
    // queue ends the session: a listener that does not keep up must not hold back PostgreSQL's
    // notification queue (every HA write fails once that is full); the reconnection reports
    // "everything changed".
    let target = s.target.clone();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => match notes_tx.try_send(n) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(target_db = %target, "change feed: {QUEUE} notifications not yet handled; dropping the session");
                        return;
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(|e| err("pg_backend_pid", &e))?
        .get(0);
    let quoted = format!("\"{}\"", s.channel.replace('"', "\"\""));
    client.batch_execute(&format!("LISTEN {quoted}")).await.map_err(|e| err("listen", &e))?;
    if let Ok(mut g) = s.session.lock() {
        *g = Some((Arc::new(client), pid));
    }
    // Whatever happened while nobody listened is unknown.
    (s.on_change)(Change::All);
    s.applied.fetch_add(1, Ordering::SeqCst);
    s.live.store(true, Ordering::SeqCst);
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    }
    while let Some(n) = notes.recv().await {
        match parse(n.payload()) {
            Message::Change(c) => {
                (s.on_change)(c);
                s.applied.fetch_add(1, Ordering::SeqCst);
            }
            Message::Sync(token) if token >> 40 == u64::from(pid.unsigned_abs()) => {
                let n = token & ((1 << 40) - 1);
                if let Some(tx) = s.waiting.lock().ok().and_then(|mut w| w.remove(&n)) {
                    let _ = tx.send(());
                }
            }
            Message::Sync(_) | Message::Other => {}
        }
    }
    driver.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_overflow_to_everything() {
        let p = payload(["a/b", "c"].into_iter());
        assert!(matches!(parse(&p), Message::Change(Change::Keys(k)) if k == ["a/b", "c"]));
        let long = "k".repeat(1000);
        let p = payload(std::iter::repeat_n(long.as_str(), 10));
        assert!(p.len() < 8000);
        assert!(matches!(parse(&p), Message::Change(Change::All)));
        assert!(matches!(parse("1 sync 7"), Message::Sync(7)));
        assert!(matches!(parse("2\nx"), Message::Other));
        assert!(channel(&"t".repeat(100)).len() <= 63);
    }
}
