//! Reports of delivery to the server (`sys/agent/delivery`), so that its audit log shows, per
//! agent identity, when each secret path was delivered where (a file, `env:NAME`), delivered
//! again after a change, and removed at exit.
//!
//! Guarantees: a report holds secret paths, destinations, a reason and the agent's own identity
//! (a random instance id made at start, the hostname, the pod and container names from the
//! environment), never a value. Reporting is best effort and never in rendering's way: reports
//! are queued and sent in order by one task, each once, with a short timeout; a failure (or a
//! full queue) is logged at debug and counted (`delivery_report_failures_total`), never retried.
//! Not guaranteed: that every delivery is reported (the server away, no token yet: the report is
//! lost, and the next change reports again).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_api::{AgentIdentity, Client, Delivery, DeliveryEvent};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::auth::Token;
use crate::status::Status;

/// How long one report may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Reports waiting to be sent; more are dropped (and counted), never waited for.
const QUEUE: usize = 64;
/// The server's caps on what the agent says about itself.
const MAX_IDENTITY: usize = 253;

/// Why a template was delivered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reason {
    /// A secret it reads changed (an event said so, or the poll found it).
    Rotation,
    /// A leased secret it reads was fetched anew (renewal no longer extends it, or failed).
    LeaseReissue,
    /// The agent logged in again: everything was fetched anew with the new token.
    NewToken,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Rotation => "rotation",
            Reason::LeaseReissue => "lease-reissue",
            Reason::NewToken => "new-token",
        }
    }
}

struct Job {
    delivery: Delivery,
    token: Zeroizing<String>,
    done: Option<oneshot::Sender<()>>,
}

/// Sends the reports; cheap to clone.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::Sender<Job>,
    agent: Arc<AgentIdentity>,
    /// Each destination reported delivered, with the paths it was made from.
    delivered: Arc<Mutex<HashMap<String, BTreeSet<String>>>>,
    status: Status,
}

impl Reporter {
    /// Starts the task that sends reports with `client`.
    pub(crate) fn start(client: Client, status: Status) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(client, rx, status.clone()));
        Self {
            tx,
            agent: Arc::new(identity(|k| std::env::var(k).ok())),
            delivered: Arc::default(),
            status,
        }
    }

    /// After `destination` rendered from `paths`: the first time with a token, a `delivered`
    /// report; later, when the output `changed`, a `redelivered` one with `reason`.
    pub(crate) fn rendered<'a>(
        &self,
        token: Option<&Token>,
        destination: &str,
        paths: impl IntoIterator<Item = &'a str>,
        changed: bool,
        reason: Reason,
    ) {
        // Without a token (rendered from the persisted cache) nothing can be reported: the
        // first render with one reports the delivery.
        let Some(token) = token else { return };
        let paths: BTreeSet<String> = paths.into_iter().map(str::to_owned).collect();
        let event = {
            let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
            let first = !delivered.contains_key(destination);
            if !first && !changed {
                return;
            }
            delivered.insert(destination.to_owned(), paths.clone());
            if first {
                (DeliveryEvent::Delivered, "initial")
            } else {
                (DeliveryEvent::Redelivered, reason.as_str())
            }
        };
        self.send(token, event, paths, vec![destination.to_owned()], None);
    }

    /// At exit, after `files` were removed (and the app, with its environment, is gone): one
    /// `removed` report of them and of the environment delivered. Waits at most `wait` for it.
    pub(crate) async fn removed(&self, token: Option<&Token>, files: &[PathBuf], wait: Duration) {
        let Some(token) = token else { return };
        let (paths, destinations) = {
            let delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
            let mut destinations: Vec<String> =
                files.iter().map(|f| f.display().to_string()).collect();
            destinations.extend(delivered.keys().filter(|d| d.starts_with("env:")).cloned());
            destinations.sort();
            let paths: BTreeSet<String> = destinations
                .iter()
                .filter_map(|d| delivered.get(d))
                .flat_map(|p| p.iter().cloned())
                .collect();
            (paths, destinations)
        };
        if destinations.is_empty() {
            return;
        }
        let (done, sent) = oneshot::channel();
        self.send(token, (DeliveryEvent::Removed, "exit"), paths, destinations, Some(done));
        let _ = tokio::time::timeout(wait, sent).await;
    }

    fn send(
        &self,
        token: &Token,
        (event, reason): (DeliveryEvent, &str),
        paths: BTreeSet<String>,
        destinations: Vec<String>,
        done: Option<oneshot::Sender<()>>,
    ) {
        let delivery = Delivery {
            event,
            reason: reason.to_owned(),
            paths: paths.into_iter().collect(),
            destinations,
            agent: (*self.agent).clone(),
        };
        let job = Job { delivery, token: token.secret.clone(), done };
        if self.tx.try_send(job).is_err() {
            self.status.count(|c| &c.delivery_report_failures);
            tracing::debug!("delivery report dropped: too many waiting");
        }
    }
}

async fn send_all(client: Client, mut rx: mpsc::Receiver<Job>, status: Status) {
    while let Some(job) = rx.recv().await {
        let c = client.clone().with_token(Some(job.token.to_string()));
        let d = &job.delivery;
        match tokio::time::timeout(TIMEOUT, c.report_delivery(d)).await {
            Ok(Ok(())) => {
                tracing::debug!(event = ?d.event, reason = %d.reason, "delivery reported");
            }
            Ok(Err(e)) => {
                status.count(|c| &c.delivery_report_failures);
                tracing::debug!(event = ?d.event, error = %e, "delivery report failed");
            }
            Err(_) => {
                status.count(|c| &c.delivery_report_failures);
                tracing::debug!(event = ?d.event, "delivery report timed out");
            }
        }
        if let Some(done) = job.done {
            let _ = done.send(());
        }
    }
}

/// The agent's account of itself: a random instance id; the hostname from the kernel; the pod
/// from `POD_NAME` (the downward API) or else `HOSTNAME` (which Kubernetes sets to the pod's
/// name); the container from `CONTAINER_NAME`. A value the server would refuse is left out.
fn identity(env: impl Fn(&str) -> Option<String>) -> AgentIdentity {
    let clean = |s: Option<String>| {
        s.map(|s| s.trim().to_owned()).filter(|s| {
            !s.is_empty() && s.len() <= MAX_IDENTITY && !s.chars().any(char::is_control)
        })
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    AgentIdentity {
        instance: instance_id(),
        hostname: clean(hostname),
        pod: clean(env("POD_NAME")).or_else(|| clean(env("HOSTNAME"))),
        container: clean(env("CONTAINER_NAME")),
    }
}

/// 8 random bytes in hex.
fn instance_id() -> Option<String> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_comes_from_the_environment_and_leaves_out_what_the_server_refuses() {
        let a = identity(|k| match k {
            "POD_NAME" => Some("web-7d9".into()),
            "HOSTNAME" => Some("ignored".into()),
            "CONTAINER_NAME" => Some("bad\nname".into()),
            _ => None,
        });
        assert_eq!(a.pod.as_deref(), Some("web-7d9"));
        assert_eq!(a.container, None);
        let id = a.instance.expect("instance");
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_ne!(Some(id), identity(|_| None).instance, "a new id each start");
        let b = identity(|k| (k == "HOSTNAME").then(|| "web-7d9-abcde".to_owned()));
        assert_eq!(b.pod.as_deref(), Some("web-7d9-abcde"));
    }

    fn token() -> Token {
        Token {
            secret: Zeroizing::new("s.test".into()),
            accessor: "a".into(),
            ttl: Duration::from_secs(60),
            renewable: false,
            obtained: std::time::Instant::now(),
            generation: 1,
            expires_unix: 0.into(),
        }
    }

    /// The reports queued, in order, without a server.
    fn reporter() -> (Reporter, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let r = Reporter {
            tx,
            agent: Arc::new(AgentIdentity::default()),
            delivered: Arc::default(),
            status: Status::new(None),
        };
        (r, rx)
    }

    fn next(rx: &mut mpsc::Receiver<Job>) -> Option<(DeliveryEvent, String, Vec<String>)> {
        rx.try_recv().ok().map(|j| (j.delivery.event, j.delivery.reason, j.delivery.destinations))
    }

    #[tokio::test]
    async fn first_render_then_changes_then_exit() {
        let (r, mut rx) = reporter();
        let t = token();
        // Rendered from the persisted cache before any login: nothing to report with.
        r.rendered(None, "/s/db", ["secret/data/db"], true, Reason::Rotation);
        assert!(next(&mut rx).is_none());
        // The first render with a token is the delivery, changed or not.
        r.rendered(Some(&t), "/s/db", ["secret/data/db"], false, Reason::NewToken);
        let d = (DeliveryEvent::Delivered, "initial".to_owned(), vec!["/s/db".to_owned()]);
        assert_eq!(next(&mut rx), Some(d));
        // Unchanged output: nothing; changed: redelivered, with the reason.
        r.rendered(Some(&t), "/s/db", ["secret/data/db"], false, Reason::Rotation);
        assert!(next(&mut rx).is_none());
        r.rendered(Some(&t), "/s/db", ["secret/data/db"], true, Reason::LeaseReissue);
        let d = (DeliveryEvent::Redelivered, "lease-reissue".to_owned(), vec!["/s/db".to_owned()]);
        assert_eq!(next(&mut rx), Some(d));
        r.rendered(Some(&t), "env:DB", ["secret/data/db"], true, Reason::Rotation);
        assert_eq!(next(&mut rx).map(|d| d.0), Some(DeliveryEvent::Delivered));
        // At exit: the removed files and the environment, with the paths they held.
        // No task sends it here: the wait ends at its bound.
        r.removed(Some(&t), &[PathBuf::from("/s/db")], Duration::from_millis(10)).await;
        let job = rx.try_recv().expect("removed");
        assert_eq!(job.delivery.event, DeliveryEvent::Removed);
        assert_eq!(job.delivery.reason, "exit");
        assert_eq!(job.delivery.destinations, ["/s/db", "env:DB"]);
        assert_eq!(job.delivery.paths, ["secret/data/db"]);
    }
}
