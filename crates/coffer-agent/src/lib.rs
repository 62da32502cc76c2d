//! `coffer agent`: what runs inside (or beside) a container so that its app never talks to
//! Coffer itself. It turns a minimal bootstrap credential into a token and keeps it valid
//! (`auth`), renders the secrets the app needs into files on a memory filesystem or into the
//! app's environment (`render`, `delivery`, `exec`), keeps them fresh through rotation and lease
//! ends, keeps the app on its last good secrets while the server cannot be reached, says how
//! it is doing (`status`), and reports each delivery and removal to the server's audit log
//! (`report`).
//!
//! Guarantees: no secret in the agent's log, command line or environment; files are written
//! atomically with their mode set before any content, and only on a memory filesystem unless a
//! template allows disk; in exec mode the rendered files and token sinks are removed when the app
//! exits.

mod auth;
mod backoff;
mod cache;
pub mod config;
mod conn;
mod delivery;
mod events;
mod exec;
mod render;
mod report;
mod secret;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::auth::{AuthSignals, Authenticator};
use crate::backoff::Backoff;
pub use crate::config::AgentConfig;
use crate::conn::Conn;
use crate::exec::AppEvent;
use crate::render::Renderer;
use crate::status::Status;

/// Checks a configuration as far as it can be without a server: the file, every template, the
/// files the methods read from, and where the outputs go. Returns a summary to print.
pub fn check_config(cfg: &AgentConfig) -> Result<String> {
    render::parse_templates(&cfg.templates, &cfg.env_templates)?;
    for t in &cfg.templates {
        if let Some(dir) = t.destination.parent().filter(|d| d.is_dir()) {
            delivery::check_memory_fs(
                dir,
                t.allow_disk,
                &format!("template for {}", t.destination.display()),
            )?;
        }
    }
    if let Some(a) = &cfg.auto_auth {
        for s in &a.sinks {
            if let Some(dir) = s.path.parent().filter(|d| d.is_dir()) {
                delivery::check_memory_fs(dir, s.allow_disk, "token sink")?;
            }
        }
    }
    Ok(format!(
        "configuration is valid: server {}, auth method {}, {} template(s), {} env template(s){}",
        cfg.server.address,
        cfg.auto_auth.as_ref().map_or("none", |a| a.method.kind.type_name()),
        cfg.templates.len(),
        cfg.env_templates.len(),
        if cfg.exec.is_some() { ", exec mode" } else { "" },
    ))
}

/// Runs the agent until it is told to stop, or (exec mode) until the app exits; returns the
/// process exit code.
pub async fn run(cfg: AgentConfig) -> Result<u8> {
    let status = Status::new(cfg.template_config.max_stale);
    let conn = Conn::new(&cfg.server, status.clone())?;
    let parsed = render::parse_templates(&cfg.templates, &cfg.env_templates)?;
    if let Some(p) = &cfg.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", p.display()))?;
    }
    status::serve(&cfg.listeners, status.clone()).await?;

    let persisted = match cfg.cache.as_ref().and_then(|c| c.persist.as_ref()) {
        Some(p) => Some(Arc::new(cache::Cache::open(p)?)),
        None => None,
    };
    let mut restored = match &persisted {
        Some(c) => match c.load() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), cache = %c.path().display(), "the persisted cache cannot be used; starting without it");
                None
            }
        },
        None => None,
    };
    let cached_token = restored.as_mut().and_then(|r| r.token.take()).map(|t| auth::Token {
        secret: t.secret.clone(),
        accessor: t.accessor.clone(),
        ttl: cache::instant_at(t.expires).saturating_duration_since(std::time::Instant::now()),
        renewable: t.renewable,
        obtained: std::time::Instant::now(),
        generation: 0,
        expires_unix: t.expires.into(),
    });

    let (token_tx, token_rx) = watch::channel(None);
    let signals = Arc::new(AuthSignals::default());
    let sinks = cfg.auto_auth.as_ref().map(|a| a.sinks.clone()).unwrap_or_default();
    let auth_task = match &cfg.auto_auth {
        Some(a) => {
            let authn = Authenticator::new(a.method.clone(), conn.clone());
            let (sinks, conn, status, signals) =
                (sinks.clone(), conn.clone(), status.clone(), signals.clone());
            Some(tokio::spawn(auth::run(
                authn,
                sinks,
                conn,
                status,
                token_tx,
                signals,
                cached_token,
            )))
        }
        None => None,
    };
    tracing::info!(server = conn.address(), "agent started");

    let (app_tx, app_rx) = match cfg.exec {
        Some(_) => {
            let (t, r) = mpsc::channel(16);
            (Some(t), Some(r))
        }
        None => (None, None),
    };
    let destinations: Vec<PathBuf> = cfg.templates.iter().map(|t| t.destination.clone()).collect();
    // Exec mode removes what it rendered however the agent ends (an error, a signal before the
    // app started, the app failing to start), not only when the app exits.
    let _cleanup =
        cfg.exec.is_some().then(|| Cleanup { files: destinations.clone(), sinks: sinks.clone() });
    let reporter = report::Reporter::start(conn.client(None), status.clone());
    let mut renderer = Renderer::new(
        conn.clone(),
        status.clone(),
        cfg.template_config.clone(),
        parsed,
        signals.clone(),
        app_tx,
    )
    .with_reporter(reporter.clone());
    if let Some(r) = restored.as_mut() {
        tracing::info!(secrets = r.secrets.len(), "secrets restored from the persisted cache");
        renderer.import(&mut r.secrets);
    }
    drop(restored);
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let (events_tx, events_rx) = mpsc::channel::<events::Change>(256);
    if cfg.auto_auth.is_some() && !(cfg.templates.is_empty() && cfg.env_templates.is_empty()) {
        tokio::spawn(events::watch(
            conn.clone(),
            token_rx.clone(),
            status.clone(),
            events_tx,
            signals.clone(),
        ));
    }
    let render_task = tokio::spawn(drive(
        renderer,
        token_rx.clone(),
        cfg.template_config.clone(),
        cfg.server.num_retries,
        ready_tx,
        events_rx,
        persisted,
    ));

    let watchdog = stale_watchdog(status.clone(), cfg.template_config.exit_on_max_stale);
    tokio::pin!(watchdog);
    let mut render_task = render_task;
    let mut auth_task = auth_task;

    // Wait until everything has rendered once (the app must not start without its secrets).
    let has_work = cfg.auto_auth.is_some();
    if has_work {
        let ready = async {
            loop {
                if *ready_rx.borrow_and_update() && token_rx.borrow().is_some() {
                    return;
                }
                if ready_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = ready => {}
            r = &mut render_task => return finished("renderer", r),
            r = async { auth_task.as_mut().expect("auth task").await } => return finished("auth", r),
            () = &mut watchdog => bail!("the server could not be reached for longer than max_stale before the first render"),
            () = shutdown_signal() => {
                tracing::info!("stopping");
                return Ok(0);
            }
        }
        tracing::info!("every template rendered");
    }
    if cfg.exit_after_auth {
        tracing::info!("exit_after_auth is set: exiting");
        return Ok(0);
    }

    let Some(exec_cfg) = cfg.exec.clone() else {
        // Sidecar mode: run until told to stop; the files stay for the app.
        tokio::select! {
            r = &mut render_task => return finished("renderer", r),
            r = async { match auth_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => return finished("auth", r),
            () = &mut watchdog => {
                tracing::error!("out of touch with the server for longer than max_stale: exiting (exit_on_max_stale)");
                return Ok(1);
            }
            () = shutdown_signal() => {
                tracing::info!("stopping");
                return Ok(0);
            }
        }
    };

    // Exec mode: the app's environment is the first render's.
    let mut app_rx = app_rx.expect("exec channel");
    let mut env = exec::Env::new();
    while let Ok(ev) = app_rx.try_recv() {
        if let AppEvent::Env(e) = ev {
            env = e;
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let app =
        exec::supervise(exec_cfg, cfg.template_config.splay, env, app_rx, status.clone(), stop_rx);
    tokio::pin!(app);
    let mut stop_tx = Some(stop_tx);
    let mut stop_app = |why: &str| {
        if let Some(t) = stop_tx.take() {
            tracing::error!("{why}: stopping the app");
            let _ = t.send(());
        }
    };
    let (mut render_done, mut auth_done, mut stale_done) = (false, auth_task.is_none(), false);
    let code = loop {
        tokio::select! {
            ended = &mut app => {
                let code = match ended {
                    Ok(exec::Ended::App(s)) => {
                        tracing::info!(code = exec::exit_code(s), "the app exited");
                        exec::exit_code(s)
                    }
                    Ok(exec::Ended::Stopped) => 1,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "the app could not be run");
                        1
                    }
                };
                break code;
            }
            () = &mut watchdog, if !stale_done => {
                stale_done = true;
                stop_app("out of touch with the server for longer than max_stale (exit_on_max_stale)");
            }
            r = &mut render_task, if !render_done => {
                render_done = true;
                let e = finished("renderer", r).err().map(|e| format!("{e:#}")).unwrap_or_default();
                stop_app(&format!("rendering gave up: {e}"));
            }
            r = async { match auth_task.as_mut() { Some(t) => t.await, None => std::future::pending().await } }, if !auth_done => {
                auth_done = true;
                let e = finished("auth", r).err().map(|e| format!("{e:#}")).unwrap_or_default();
                stop_app(&format!("authentication gave up: {e}"));
            }
        }
    };
    render_task.abort();
    if let Some(t) = auth_task {
        t.abort();
    }
    let mut removed = Vec::new();
    for d in &destinations {
        match delivery::remove(d) {
            Ok(()) => removed.push(d.clone()),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot remove a rendered file"),
        }
    }
    auth::remove_sinks(&sinks);
    tracing::info!("rendered files and token sinks removed");
    let token = token_rx.borrow().clone();
    reporter.removed(token.as_deref(), &removed, Duration::from_secs(3)).await;
    Ok(code)
}

/// Removes rendered files and token sinks when dropped.
struct Cleanup {
    files: Vec<PathBuf>,
    sinks: Vec<config::SinkConfig>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for f in &self.files {
            if let Err(e) = delivery::remove(f) {
                tracing::warn!(error = %format!("{e:#}"), "cannot remove a rendered file");
            }
        }
        auth::remove_sinks(&self.sinks);
    }
}

fn finished(what: &str, r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<u8> {
    match r {
        Ok(Ok(())) => bail!("the {what} stopped unexpectedly"),
        Ok(Err(e)) => Err(e),
        Err(e) => bail!("the {what} failed: {e}"),
    }
}

/// Resolves on SIGTERM or SIGINT (never, when signals cannot be handled). The binary's other
/// long-running commands (`coffer chaos run`) stop on the same signals.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Resolves when the agent has been out of touch longer than `max_stale` and is configured to
/// act on it; never otherwise.
async fn stale_watchdog(status: Status, act: bool) {
    if !act {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if !status.healthy() {
            return;
        }
    }
}

/// The renderer's loop: a pass at start, on a new token, on events, at the poll interval, when
/// a lease is due, and after a failure (with backoff).
async fn drive(
    mut r: Renderer,
    mut token: auth::TokenRx,
    settings: config::TemplateSettings,
    num_retries: u32,
    ready: watch::Sender<bool>,
    mut events: mpsc::Receiver<events::Change>,
    persisted: Option<Arc<cache::Cache>>,
) -> Result<()> {
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut next_poll = Instant::now() + settings.static_secret_render_interval;
    // Written when a secret was fetched, and when the token was renewed (its new expiry is what
    // lets a restarted agent keep using it).
    let mut saved_expiry = None;
    let mut save = |r: &mut Renderer, token: &auth::TokenRx| {
        let Some(c) = &persisted else { return };
        let t = token.borrow().clone();
        let expiry = t.as_ref().map(|t| (t.generation, t.expires_unix()));
        let secrets = match r.export() {
            Some(s) => s,
            None if expiry != saved_expiry => r.export_all(),
            None => return,
        };
        saved_expiry = expiry;
        let contents = cache::Contents {
            token: t.map(|t| cache::CachedToken {
                secret: t.secret.clone(),
                accessor: t.accessor.clone(),
                expires: t.expires_unix(),
                ttl: t.ttl.as_secs(),
                renewable: t.renewable,
            }),
            secrets,
        };
        if let Err(e) = c.save(&contents) {
            tracing::warn!(error = %format!("{e:#}"), "cannot write the persisted cache");
        }
    };
    // Secrets restored from the persisted cache render before anything asks the server, so an
    // agent restarted while the server is away still gives the app what it had at once. Without
    // a token the pass cannot ask; a token restored with the cache must not be used here either:
    // a server that hangs (paused, or a partition that drops packets) would hold this first
    // render for a whole request timeout.
    if r.has_secrets() {
        let (_no_login, no_token) = tokio::sync::watch::channel(None);
        r.pass(&no_token).await;
        if r.complete() {
            tracing::info!(
                "rendered from the persisted cache; the server has not been reached yet"
            );
            let _ = ready.send(true);
        }
    }
    // The token channel closes only when the auth loop returned: its result is what the agent
    // reports, so the renderer just stops.
    while token.borrow_and_update().is_none() {
        if token.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
    let mut run_pass = true;
    loop {
        if run_pass {
            let p = r.pass(&token).await;
            save(&mut r, &token);
            if p.retry {
                failures += 1;
                if settings.exit_on_retry_failure && failures > num_retries {
                    bail!(
                        "rendering still fails after {num_retries} retries (exit_on_retry_failure is set)"
                    );
                }
                retry_at = Some(Instant::now() + backoff.next_delay());
            } else {
                failures = 0;
                backoff.reset();
                retry_at = None;
            }
            if r.complete() && !*ready.borrow() {
                let _ = ready.send(true);
            }
        }
        let lease_due = r.next_lease_due().map(Instant::from_std).unwrap_or_else(far);
        run_pass = tokio::select! {
            c = token.changed() => {
                if c.is_err() {
                    return std::future::pending().await;
                }
                true
            }
            () = tokio::time::sleep_until(next_poll) => {
                r.poll();
                next_poll = Instant::now() + settings.static_secret_render_interval;
                true
            }
            () = tokio::time::sleep_until(lease_due) => { r.leases_due().await; true }
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(far)) => true,
            Some(change) = events.recv() => match change {
                events::Change::Path(path) => r.changed(&path),
                events::Change::Resync => {
                    r.poll();
                    true
                }
            },
        };
    }
}
