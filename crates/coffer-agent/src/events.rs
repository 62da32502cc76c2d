//! Push: the server's event stream (Vault's `sys/events/subscribe`) tells the agent at once when a
//! KV secret changed, so a rotation reaches the app in milliseconds, not at the next poll. The
//! server sends only events on paths the token may read; the agent re-renders the templates that
//! read the changed path. After any gap in the stream (not subscribed yet, a new token, the
//! server away) the agent looks at every secret again, as events sent meanwhile are lost. The
//! poll at `static_secret_render_interval` goes on regardless, as the fallback.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::auth::TokenRx;
use crate::backoff::Backoff;
use crate::conn::Conn;
use crate::status::{EventStream, Status};

/// Every KV event type: `kv-v1/*` and `kv-v2/*`.
const EVENT_TYPES: &str = "kv*";

/// What the event stream tells the renderer.
#[derive(Debug)]
pub(crate) enum Change {
    /// The secret at this path changed.
    Path(String),
    /// Events may have been missed: look at everything.
    Resync,
}

pub(crate) async fn watch(
    conn: Conn,
    mut token: TokenRx,
    status: Status,
    tx: mpsc::Sender<Change>,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let current = token.borrow_and_update().clone();
        let Some(t) = current else {
            if token.changed().await.is_err() {
                return;
            }
            continue;
        };
        match conn.client(Some(&t.secret)).subscribe_events(EVENT_TYPES).await {
            Ok(mut stream) => {
                tracing::info!("subscribed to change events");
                status.events(EventStream::Connected);
                backoff.reset();
                if tx.send(Change::Resync).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        ev = stream.next() => match ev {
                            Ok(Some(m)) => {
                                status.count(|c| &c.events_received);
                                if let Some(p) = m.data_path().or_else(|| m.path()) {
                                    tracing::debug!(event = %m.event_type(), path = %p, "change event");
                                    if tx.send(Change::Path(p.to_owned())).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::info!(error = %e, "the change event stream ended; polling until it is back");
                                break;
                            }
                        },
                        c = token.changed() => {
                            if c.is_err() {
                                return;
                            }
                            // A new token: subscribe again with it.
                            break;
                        }
                    }
                }
            }
            Err(coffer_api::Error::Api { status: 403, .. }) => {
                tracing::warn!(
                    "the token may not subscribe to change events (its policy needs read on sys/events/subscribe/{EVENT_TYPES}); changes are found by polling"
                );
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to change events"),
        }
        status.events(EventStream::Polling);
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            c = token.changed() => {
                if c.is_err() {
                    return;
                }
            }
        }
    }
}
