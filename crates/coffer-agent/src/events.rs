//! Push: the server's event stream (Vault's `sys/events/subscribe`) tells the agent at once when a
//! KV secret changed, so a rotation reaches the app in milliseconds, not at the next poll. The
//! server sends only events on paths the token may read; the agent re-renders the templates that
//! read the changed path. After any gap in the stream (not subscribed yet, a new token, the
//! server away) the agent looks at every secret again, as events sent meanwhile are lost. The
//! poll at `static_secret_render_interval` goes on regardless, as the fallback.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::auth::{AuthSignals, TokenRx};
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

/// The path templates read for the secret an event is about. KV v2 names some events by another
/// path of the same key (`secret/delete/k`, `secret/destroy/k`, `secret/metadata/k`): templates
/// read `secret/data/k`.
fn changed_path(m: &coffer_api::events::EventMessage) -> Option<String> {
    if let Some(d) = m.data_path() {
        return Some(d.to_owned());
    }
    let path = m.path()?;
    if m.event_type().starts_with("kv-v2/")
        && let Some(mount) = m.data.plugin_info.as_ref().map(|i| i.mount_path.as_str())
        && let Some(rest) = path.strip_prefix(mount)
        && let Some((_, key)) = rest.split_once('/')
    {
        return Some(format!("{mount}data/{key}"));
    }
    Some(path.to_owned())
}

/// Follows change events with the current token. The server ends a token's subscriptions when
/// the token is revoked, and refuses it a new one: either way the auth loop is asked to check
/// the token (`lookup-self`), so a revoked token is replaced at once rather than at its next
/// renewal.
pub(crate) async fn watch(
    conn: Conn,
    mut token: TokenRx,
    status: Status,
    tx: mpsc::Sender<Change>,
    signals: Arc<AuthSignals>,
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
                                if let Some(p) = changed_path(&m) {
                                    tracing::debug!(event = %m.event_type(), path = %p, "change event");
                                    if tx.send(Change::Path(p)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(None) => {
                                signals.check_token.notify_one();
                                break;
                            }
                            Err(e) => {
                                tracing::info!(error = %e, "the change event stream ended; polling until it is back");
                                signals.check_token.notify_one();
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
                // A revoked token is refused too: have it checked before blaming the policy.
                signals.check_token.notify_one();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, metadata: serde_json::Value) -> coffer_api::events::EventMessage {
        serde_json::from_value(serde_json::json!({
            "id": "1", "source": "coffer", "specversion": "1.0", "type": "*",
            "datacontentype": "application/cloudevents", "time": "2026-12-05T00:00:00Z",
            "data": {
                "event": {"id": "1", "metadata": metadata},
                "event_type": event_type,
                "plugin_info": {"mount_class": "secret", "mount_accessor": "kv_1", "mount_path": "secret/", "plugin": "kv"}
            }
        }))
        .expect("event")
    }

    #[test]
    fn every_kv_event_names_the_path_templates_read() {
        let cases = [
            (
                "kv-v2/data-write",
                serde_json::json!({"path": "secret/data/web/db", "data_path": "secret/data/web/db"}),
                "secret/data/web/db",
            ),
            (
                "kv-v2/delete",
                serde_json::json!({"path": "secret/delete/web/db"}),
                "secret/data/web/db",
            ),
            (
                "kv-v2/destroy",
                serde_json::json!({"path": "secret/destroy/web/db"}),
                "secret/data/web/db",
            ),
            (
                "kv-v2/metadata-delete",
                serde_json::json!({"path": "secret/metadata/web/db"}),
                "secret/data/web/db",
            ),
            ("kv-v1/write", serde_json::json!({"path": "kv/web/db"}), "kv/web/db"),
        ];
        for (t, md, want) in cases {
            assert_eq!(changed_path(&event(t, md)).as_deref(), Some(want), "{t}");
        }
    }
}
