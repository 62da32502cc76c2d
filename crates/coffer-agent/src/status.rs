//! What the agent knows about itself, and the local API that tells it: `GET /agent/v1/status`
//! (JSON; 200 while healthy, 503 once it has been out of touch with the server longer than
//! `max_stale`, so it can serve as a readiness probe) and `GET /agent/v1/metrics` (Prometheus
//! text). Neither ever holds a secret: paths, times, counts and error messages only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use coffer_time::rfc3339;
use serde_json::{Value, json};

use crate::config::ListenerConfig;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) renders: AtomicU64,
    pub(crate) render_failures: AtomicU64,
    pub(crate) auth_successes: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) token_renewals: AtomicU64,
    pub(crate) lease_renewals: AtomicU64,
    pub(crate) secret_fetches: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) events_received: AtomicU64,
    pub(crate) app_restarts: AtomicU64,
    pub(crate) app_signals: AtomicU64,
    pub(crate) delivery_report_failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthState {
    Authenticating,
    Authenticated,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventStream {
    /// No subscription (no token yet, or nothing to watch).
    Off,
    Connected,
    /// The stream is down (or refused); changes are found by polling until it is back.
    Polling,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TemplateStatus {
    pub(crate) last_render: Option<SystemTime>,
    pub(crate) last_change: Option<SystemTime>,
    pub(crate) last_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    auth: AuthState,
    token_expires: Option<SystemTime>,
    last_contact: Option<(Instant, SystemTime)>,
    last_server_error: Option<String>,
    events: EventStream,
    templates: BTreeMap<String, TemplateStatus>,
}

/// The agent's shared state; cheap to clone.
#[derive(Clone)]
pub(crate) struct Status {
    inner: Arc<Mutex<Inner>>,
    pub(crate) counters: Arc<Counters>,
    started: Instant,
    max_stale: Option<Duration>,
}

impl Status {
    pub(crate) fn new(max_stale: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                auth: AuthState::Authenticating,
                token_expires: None,
                last_contact: None,
                last_server_error: None,
                events: EventStream::Off,
                templates: BTreeMap::new(),
            })),
            counters: Arc::new(Counters::default()),
            started: Instant::now(),
            max_stale,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub(crate) fn count(&self, c: impl Fn(&Counters) -> &AtomicU64) {
        c(&self.counters).fetch_add(1, Ordering::Relaxed);
    }

    /// The server answered: a success, or a refusal (4xx) that proves it works.
    pub(crate) fn contact(&self) {
        self.with(|i| {
            i.last_contact = Some((Instant::now(), SystemTime::now()));
            i.last_server_error = None;
        });
    }

    pub(crate) fn unreachable(&self, err: &str) {
        self.with(|i| i.last_server_error = Some(err.to_owned()));
    }

    pub(crate) fn auth(&self, state: AuthState, expires: Option<SystemTime>) {
        self.with(|i| {
            i.auth = state;
            if state == AuthState::Authenticated {
                i.token_expires = expires;
            }
        });
    }

    pub(crate) fn events(&self, s: EventStream) {
        self.with(|i| i.events = s);
    }

    pub(crate) fn template(&self, name: &str, f: impl FnOnce(&mut TemplateStatus)) {
        self.with(|i| f(i.templates.entry(name.to_owned()).or_default()));
    }

    /// How long since the server last answered (since start when it never has).
    pub(crate) fn stale_for(&self) -> Duration {
        self.with(|i| match i.last_contact {
            Some((at, _)) => at.elapsed(),
            None => self.started.elapsed(),
        })
    }

    pub(crate) fn healthy(&self) -> bool {
        self.max_stale.is_none_or(|m| self.stale_for() <= m)
    }

    pub(crate) fn to_json(&self) -> Value {
        let stale = self.stale_for();
        let healthy = self.healthy();
        self.with(|i| {
            let templates: Vec<Value> = i
                .templates
                .iter()
                .map(|(name, t)| {
                    json!({
                        "name": name,
                        "last_render": t.last_render.map(rfc3339),
                        "last_change": t.last_change.map(rfc3339),
                        "last_error": t.last_error,
                    })
                })
                .collect();
            json!({
                "healthy": healthy,
                "auth": {
                    "state": match i.auth {
                        AuthState::Authenticating => "authenticating",
                        AuthState::Authenticated => "authenticated",
                        AuthState::Failed => "failed",
                    },
                    "token_expires": i.token_expires.map(rfc3339),
                },
                "server": {
                    "reachable": i.last_server_error.is_none() && i.last_contact.is_some(),
                    "last_contact": i.last_contact.map(|(_, t)| rfc3339(t)),
                    "last_error": i.last_server_error,
                },
                "stale_seconds": stale.as_secs_f64(),
                "max_stale_seconds": self.max_stale.map(|d| d.as_secs()),
                "events": match i.events {
                    EventStream::Off => "off",
                    EventStream::Connected => "connected",
                    EventStream::Polling => "polling",
                },
                "templates": templates,
            })
        })
    }

    pub(crate) fn metrics(&self) -> String {
        let c = &self.counters;
        let stale = self.stale_for().as_secs_f64();
        let (auth_ok, events_up, reachable) = self.with(|i| {
            (
                i.auth == AuthState::Authenticated,
                i.events == EventStream::Connected,
                i.last_server_error.is_none() && i.last_contact.is_some(),
            )
        });
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64;
        let flag = |b: bool| f64::from(u8::from(b));
        let metrics: [(&str, &str, &str, f64); 17] = [
            ("renders_total", "counter", "Templates rendered (changed or not).", load(&c.renders)),
            (
                "render_failures_total",
                "counter",
                "Template renders that failed.",
                load(&c.render_failures),
            ),
            ("auth_successes_total", "counter", "Successful logins.", load(&c.auth_successes)),
            ("auth_failures_total", "counter", "Failed logins.", load(&c.auth_failures)),
            (
                "token_renewals_total",
                "counter",
                "Successful renewals of the agent's token.",
                load(&c.token_renewals),
            ),
            (
                "lease_renewals_total",
                "counter",
                "Successful renewals of secret leases.",
                load(&c.lease_renewals),
            ),
            (
                "secret_fetches_total",
                "counter",
                "Secrets read from the server.",
                load(&c.secret_fetches),
            ),
            (
                "cache_hits_total",
                "counter",
                "Secrets served from the agent's cache instead of the server.",
                load(&c.cache_hits),
            ),
            (
                "events_received_total",
                "counter",
                "Change events received from the server.",
                load(&c.events_received),
            ),
            (
                "app_restarts_total",
                "counter",
                "Restarts of the app after a secret changed.",
                load(&c.app_restarts),
            ),
            (
                "app_signals_total",
                "counter",
                "Signals sent to the app after a file changed.",
                load(&c.app_signals),
            ),
            (
                "delivery_report_failures_total",
                "counter",
                "Delivery reports to the server's audit log that failed or were dropped.",
                load(&c.delivery_report_failures),
            ),
            ("stale_seconds", "gauge", "Seconds since the server last answered.", stale),
            ("authenticated", "gauge", "1 while the agent holds a valid token.", flag(auth_ok)),
            ("server_reachable", "gauge", "1 while the server answers.", flag(reachable)),
            (
                "event_stream_connected",
                "gauge",
                "1 while change events arrive by push.",
                flag(events_up),
            ),
            ("healthy", "gauge", "0 once stale past max_stale.", flag(self.healthy())),
        ];
        let mut out = String::new();
        for (name, kind, help, v) in metrics {
            out.push_str(&format!(
                "# HELP coffer_agent_{name} {help}\n# TYPE coffer_agent_{name} {kind}\ncoffer_agent_{name} {v}\n"
            ));
        }
        out
    }
}

fn router(status: Status) -> Router {
    Router::new()
        .route(
            "/agent/v1/status",
            get(|State(s): State<Status>| async move {
                let code =
                    if s.healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                (code, axum::Json(s.to_json()))
            }),
        )
        .route(
            "/agent/v1/metrics",
            get(|State(s): State<Status>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics()).into_response()
            }),
        )
        .with_state(status)
}

/// Binds every listener (so a bad address fails the start, not later) and serves them.
pub(crate) async fn serve(listeners: &[ListenerConfig], status: Status) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt as _;
    for l in listeners {
        let app = router(status.clone());
        match l {
            ListenerConfig::Tcp { address } => {
                let sock = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on {address}"))?;
                tokio::spawn(async move { axum::serve(sock, app).await });
            }
            ListenerConfig::Unix { path, mode } => {
                let _ = std::fs::remove_file(path);
                // Created with no access for others, then opened to `mode`: never more open
                // than configured, not even for a moment.
                let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
                let bound = tokio::net::UnixListener::bind(path);
                rustix::process::umask(old);
                let sock = bound.with_context(|| format!("cannot listen on {}", path.display()))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))
                    .with_context(|| format!("cannot set the mode of {}", path.display()))?;
                tokio::spawn(async move { axum::serve(sock, app).await });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_makes_the_agent_unhealthy() {
        let s = Status::new(Some(Duration::from_millis(30)));
        s.contact();
        assert!(s.healthy());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!s.healthy());
        assert_eq!(s.to_json()["healthy"], false);
        assert!(s.metrics().contains("coffer_agent_healthy 0\n"));
        s.contact();
        assert!(s.healthy());
    }
}
