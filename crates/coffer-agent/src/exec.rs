//! Exec mode: the agent runs the app as its child, with the rendered `env_template`s in the
//! child's environment only (never in the agent's own, nor on its command line), forwards the
//! signals it receives, restarts or signals the app when its secrets change (after a random
//! splay), and ends with the app's exit status.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::backoff::splay;
use crate::config::{ExecConfig, RestartPolicy, Signal};
use crate::status::Status;

pub(crate) type Env = BTreeMap<String, Zeroizing<String>>;

/// What the app supervisor is told.
#[derive(Debug)]
pub(crate) enum AppEvent {
    /// The environment rendered from `env_template`s (first, or changed).
    Env(Env),
    /// A file template changed.
    FilesChanged,
}

/// The children the agent started itself (the app, template commands): tokio waits for those.
/// Any other child that ends is an orphan the agent inherited as a container's PID 1.
static OWN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Starts `cmd` and records it as the agent's own in one step: the orphan reaper holds the same
/// lock, so it can never take the child's exit status from tokio between the two.
pub(crate) fn spawn_tracked(cmd: &mut Command) -> std::io::Result<Child> {
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    if let Some(p) = child.id() {
        own.push(p);
    }
    Ok(child)
}

pub(crate) fn untrack(pid: Option<u32>) {
    if let Some(p) = pid {
        OWN.lock().unwrap_or_else(|e| e.into_inner()).retain(|o| *o != p);
    }
}

/// As PID 1 of a container, the agent inherits every orphaned process (the app's own children
/// whose parent ended): it must reap them, or they stay as zombies. Its own children are left to
/// tokio, which waits for them.
fn reap_orphans() {
    if std::process::id() != 1 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    let own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if own.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": the name may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut f = rest.split_whitespace();
        if f.next() == Some("Z")
            && f.next() == Some("1")
            && let Some(p) = rustix::process::Pid::from_raw(pid as i32)
        {
            let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
        }
    }
}

fn raw(sig: Signal) -> rustix::process::Signal {
    use rustix::process::Signal as S;
    match sig {
        Signal::Hup => S::HUP,
        Signal::Int => S::INT,
        Signal::Quit => S::QUIT,
        Signal::Term => S::TERM,
        Signal::Usr1 => S::USR1,
        Signal::Usr2 => S::USR2,
        Signal::Kill => S::KILL,
    }
}

fn send(child: &Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = rustix::process::kill_process(pid, raw(sig));
    }
}

fn start(cfg: &ExecConfig, env: &Env) -> Result<Child> {
    let mut c = Command::new(&cfg.command[0]);
    c.args(&cfg.command[1..]).kill_on_drop(true);
    for (k, v) in env {
        c.env(k, v.as_str());
    }
    let child = spawn_tracked(&mut c)
        .with_context(|| format!("cannot start the app {:?}", cfg.command[0]))?;
    tracing::info!(command = %cfg.command[0], pid = child.id(), "app started");
    Ok(child)
}

/// Stops the app: the stop signal, then SIGKILL once `timeout` has passed.
async fn stop(child: &mut Child, sig: Signal, timeout: Duration) -> Option<ExitStatus> {
    send(child, sig);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            tracing::warn!(timeout = ?timeout, "the app did not stop in time: killing it");
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// How the app ended, as an exit code for the agent: its own code, or 128 + the signal number.
pub(crate) fn exit_code(s: Option<ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match s {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => c as u8,
            (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
            _ => 1,
        },
        None => 1,
    }
}

/// Why the supervisor returned.
pub(crate) enum Ended {
    /// The app exited by itself (or after a forwarded signal).
    App(Option<ExitStatus>),
    /// The agent was told to stop (`stop` resolved): the app was stopped.
    Stopped,
}

/// Runs the app until it exits, handling secret changes and forwarding signals.
pub(crate) async fn supervise(
    cfg: ExecConfig,
    splay_max: Duration,
    mut env: Env,
    mut events: mpsc::Receiver<AppEvent>,
    status: Status,
    stop_rx: tokio::sync::oneshot::Receiver<()>,
) -> Result<Ended> {
    let mut child = start(&cfg, &env)?;
    let mut sigs = Vec::new();
    for (kind, s) in [
        (SignalKind::terminate(), Signal::Term),
        (SignalKind::interrupt(), Signal::Int),
        (SignalKind::hangup(), Signal::Hup),
        (SignalKind::quit(), Signal::Quit),
        (SignalKind::user_defined1(), Signal::Usr1),
        (SignalKind::user_defined2(), Signal::Usr2),
    ] {
        sigs.push((signal(kind).context("cannot handle signals")?, s));
    }
    let mut stop_rx = stop_rx;
    let mut sigchld = signal(SignalKind::child()).context("cannot handle signals")?;
    let far = || Instant::now() + Duration::from_secs(86400 * 365);
    let mut restart_at: Option<Instant> = None;
    let mut renderer_alive = true;
    let mut reload_at: Option<Instant> = None;
    loop {
        let forwarded = async {
            let futs = sigs.iter_mut().map(|(st, s)| {
                let s = *s;
                Box::pin(async move {
                    st.recv().await;
                    s
                })
            });
            futures_select_all(futs).await
        };
        tokio::select! {
            s = child.wait() => {
                untrack(child.id());
                return Ok(Ended::App(s.ok()));
            }
            _ = sigchld.recv() => reap_orphans(),
            _ = &mut stop_rx => {
                stop(&mut child, cfg.restart_stop_signal, cfg.stop_timeout).await;
                return Ok(Ended::Stopped);
            }
            sig = forwarded => {
                tracing::info!(signal = sig.name(), "forwarding a signal to the app");
                send(&child, sig);
            }
            ev = events.recv(), if renderer_alive => match ev {
                Some(AppEvent::Env(new)) => {
                    env = new;
                    if cfg.restart_on_secret_changes == RestartPolicy::Always {
                        restart_at = Some(Instant::now() + splay(splay_max));
                    }
                }
                Some(AppEvent::FilesChanged) => {
                    if cfg.reload_signal.is_some() {
                        reload_at = Some(Instant::now() + splay(splay_max));
                    }
                }
                // The renderer is gone (the agent is stopping the app, see lib.rs): nothing more
                // will change.
                None => renderer_alive = false,
            },
            () = tokio::time::sleep_until(restart_at.unwrap_or_else(far)) => {
                restart_at = None;
                reload_at = None;
                tracing::info!("secrets changed: restarting the app");
                let old = child.id();
                stop(&mut child, cfg.restart_stop_signal, cfg.stop_timeout).await;
                untrack(old);
                child = start(&cfg, &env)?;
                status.count(|c| &c.app_restarts);
            }
            () = tokio::time::sleep_until(reload_at.unwrap_or_else(far)) => {
                reload_at = None;
                if let Some(sig) = cfg.reload_signal {
                    tracing::info!(signal = sig.name(), "a file changed: signalling the app");
                    send(&child, sig);
                    status.count(|c| &c.app_signals);
                }
            }
        }
    }
}

/// The first of several futures to finish (a few signal streams; no extra crate for it).
async fn futures_select_all<F: std::future::Future + Unpin>(
    futs: impl Iterator<Item = F>,
) -> F::Output {
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
