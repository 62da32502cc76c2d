//! Fault records in the state directory, the guard that ends each fault at its deadline, and
//! `stop`/`list`. A record is written (0600, in a 0700 directory owned by root) before the fault
//! is applied; ending is claimed by renaming it, so one caller undoes a fault, once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    FaultError, HostOptions, NsRef, Result, alive, at, inode, need_root, new_id, now_ms, run_in,
};

const RECORD_VERSION: u32 = 1;

/// How a fault is undone, as stored in its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Undo {
    /// Commands run in the namespace; `netns_inode` guards against a reused pid.
    Commands {
        ns: NsRef,
        commands: Vec<Vec<String>>,
    },
    Restart(RestartSpec),
    /// SIGCONT to a paused process, if it is still the one paused (pid and start time).
    Resume {
        pid: u32,
        started: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RestartSpec {
    pub(super) argv: Vec<String>,
    pub(super) cwd: String,
    pub(super) log: PathBuf,
    /// Namespace kinds the guard holds open and the process re-enters.
    pub(super) enter: Vec<String>,
    /// The process was PID 1 of its own PID namespace: it comes back as PID 1 of a new one.
    pub(super) new_pid_ns: bool,
    /// The killed process's pid, whose namespaces the guard opens before it is killed.
    pub(super) pid: u32,
    /// Its start time, to tell it from a later process with the same pid.
    pub(super) started: Option<u64>,
    /// nsenter and unshare as found when the fault started (the guard runs with the killed
    /// process's environment, whose PATH may not find them).
    pub(super) nsenter: String,
    pub(super) unshare: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    id: String,
    kind: String,
    /// Unix milliseconds.
    started_ms: u64,
    expires_ms: u64,
    undo: Undo,
    /// What the fault's output says (no secret: addresses, names, pids).
    output: Value,
}

fn record_path(o: &HostOptions, id: &str) -> PathBuf {
    o.state_dir.join(format!("{id}.json"))
}

pub(super) fn valid_id(id: &str) -> Result<()> {
    if id.starts_with("hostfault-") && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        Ok(())
    } else {
        Err(FaultError::Invalid(format!("{id:?} is not a host fault id")))
    }
}

fn write_record(o: &HostOptions, r: &Record) -> Result<()> {
    let fail = |e: std::io::Error| {
        FaultError::Failed(format!("state directory {}: {e}", o.state_dir.display()))
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&o.state_dir).map_err(fail)?;
    check_state_dir(o)?;
    let tmp = o.state_dir.join(format!(".{}.tmp", r.id));
    let bytes = serde_json::to_vec_pretty(r).map_err(|e| FaultError::Failed(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, record_path(o, &r.id)).map_err(fail)
}

/// Records say what root runs at the deadline (commands, a process to start): a directory
/// another user could write into would let them choose. Refused unless it is a directory (not a
/// symlink) owned by this user, with no access for group or others. Absent is fine.
pub(super) fn check_state_dir(o: &HostOptions) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let m = match std::fs::symlink_metadata(&o.state_dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(FaultError::Failed(format!(
                "state directory {}: {e}",
                o.state_dir.display()
            )));
        }
    };
    if !m.is_dir() || m.uid() != rustix::process::geteuid().as_raw() || m.mode() & 0o077 != 0 {
        return Err(FaultError::Invalid(format!(
            "state directory {} must be a directory owned by this user with mode 0700 (no symlink)",
            o.state_dir.display()
        )));
    }
    Ok(())
}

fn read_record(path: &Path) -> Option<Record> {
    let r: Record = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (r.version == RECORD_VERSION).then_some(r)
}

fn public(r: &Record) -> Value {
    let mut v = json!({
        "id": r.id, "kind": r.kind,
        "started_at": at(r.started_ms), "expires_at": at(r.expires_ms),
        "duration_seconds": (r.expires_ms - r.started_ms) as f64 / 1000.0,
    });
    if let (Some(m), Some(extra)) = (v.as_object_mut(), r.output.as_object()) {
        for (k, x) in extra {
            m.insert(k.clone(), x.clone());
        }
    }
    v
}

pub(super) async fn start<F, Fut>(
    o: &HostOptions,
    kind: &str,
    d: Duration,
    undo: Undo,
    output: Value,
    apply: F,
) -> Result<Value>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    start_with_id(o, new_id(), kind, d, undo, output, None, apply).await
}

/// Records the fault, starts its guard, then applies it (so that no applied fault is ever
/// without a guard); a failed apply ends the guard and removes the record.
#[allow(clippy::too_many_arguments)] // one call site per fault kind; a struct would only rename them
pub(super) async fn start_with_id<F, Fut>(
    o: &HostOptions,
    id: String,
    kind: &str,
    d: Duration,
    undo: Undo,
    output: Value,
    guard_env: Option<Vec<(OsString, OsString)>>,
    apply: F,
) -> Result<Value>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    reap(o).await;
    let started = now_ms();
    let r = Record {
        version: RECORD_VERSION,
        id: id.clone(),
        kind: kind.to_owned(),
        started_ms: started,
        expires_ms: started + d.as_millis() as u64,
        undo,
        output,
    };
    write_record(o, &r)?;
    let ready = o.state_dir.join(format!("{id}.ready"));
    let spawned = spawn_guard(o, &id, guard_env);
    let guard_pid = match spawned {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(record_path(o, &id));
            return Err(e);
        }
    };
    // The guard says it is ready once it holds what it needs (namespaces of a process to kill).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        if tokio::time::Instant::now() > deadline || !alive(guard_pid) {
            let _ = std::fs::remove_file(record_path(o, &id));
            return Err(FaultError::Failed(format!(
                "the guard did not start; see {}",
                o.state_dir.join(format!("{id}.guard.log")).display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = std::fs::remove_file(&ready);
    if let Err(e) = apply().await {
        // Nothing was applied: the guard sees the record gone and exits (a kill fault's guard
        // restarts nothing), and there is nothing for its log to tell.
        let _ = std::fs::remove_file(record_path(o, &id));
        let _ = std::fs::remove_file(o.state_dir.join(format!("{id}.guard.log")));
        return Err(e);
    }
    let mut out = public(&r);
    out["guard_pid"] = json!(guard_pid);
    out["state_file"] = json!(record_path(o, &id));
    Ok(out)
}

fn spawn_guard(o: &HostOptions, id: &str, env: Option<Vec<(OsString, OsString)>>) -> Result<u32> {
    let (prog, args) = o
        .guard
        .split_first()
        .ok_or_else(|| FaultError::Failed("no guard command configured".into()))?;
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(o.state_dir.join(format!("{id}.guard.log")))
        .map_err(|e| FaultError::Failed(format!("guard log: {e}")))?;
    // Absolute, as the guard runs from `/` (so it keeps no file system busy).
    let state_dir = std::path::absolute(&o.state_dir)
        .map_err(|e| FaultError::Failed(format!("state directory: {e}")))?;
    let mut c = std::process::Command::new(prog);
    c.args(args)
        .arg("-state-dir")
        .arg(&state_dir)
        .arg(id)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: Ctrl-C in the runner's terminal, or a kill of the runner's
        // group, does not reach it.
        .process_group(0);
    if let Some(env) = env {
        c.env_clear().envs(env);
    }
    // The guard outlives this process on purpose; the child handle is dropped, never waited on
    // (init reaps it once this process is gone).
    let child =
        c.spawn().map_err(|e| FaultError::Failed(format!("cannot start the guard: {e}")))?;
    Ok(child.id())
}

/// Claims the end of fault `id` (one caller wins the rename) and undoes it.
async fn end(o: &HostOptions, id: &str, held: &BTreeMap<String, String>) -> Result<Value> {
    let path = record_path(o, id);
    let claimed = o.state_dir.join(format!(".{id}.ending"));
    std::fs::rename(&path, &claimed).map_err(|_| FaultError::NotFound(id.to_owned()))?;
    let r = read_record(&claimed).ok_or_else(|| FaultError::NotFound(id.to_owned()))?;
    let result = undo(&r, held).await;
    let _ = std::fs::remove_file(&claimed);
    let mut out = public(&r);
    out["ended_at"] = json!(at(now_ms()));
    match result {
        Ok(extra) => {
            out["undone"] = json!(true);
            if let (Some(m), Some(e)) = (out.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
        }
        Err(e) => {
            out["undone"] = json!(false);
            out["undo_error"] = json!(e.to_string());
        }
    }
    Ok(out)
}

async fn undo(r: &Record, held: &BTreeMap<String, String>) -> Result<Value> {
    match &r.undo {
        Undo::Commands { ns, commands } => {
            if inode(&ns.path) != Some(ns.inode) {
                return Ok(
                    json!({"note": format!("namespace {} is gone: nothing left to undo", ns.name)}),
                );
            }
            for c in commands {
                run_in(ns, c).await?;
            }
            Ok(json!({}))
        }
        // The runner died between starting the guard and the kill: the process still runs, and
        // a second copy must not be started beside it.
        Undo::Restart(s)
            if s.started.is_some() && super::start_time(s.pid) == s.started && alive(s.pid) =>
        {
            Ok(json!({"note": format!("process {} was never killed: not restarted", s.pid)}))
        }
        Undo::Restart(s) => restart(s, held).map(|pid| json!({"restarted_pid": pid})),
        Undo::Resume { pid, started } => {
            if super::start_time(*pid) != Some(*started) {
                return Ok(json!({"note": format!("process {pid} is gone: nothing to resume")}));
            }
            let target = rustix::process::Pid::from_raw(*pid as i32)
                .ok_or_else(|| FaultError::Failed(format!("bad pid {pid}")))?;
            rustix::process::kill_process(target, rustix::process::Signal::CONT)
                .map_err(|e| FaultError::Failed(format!("cannot resume {pid}: {e}")))?;
            Ok(json!({"resumed_pid": pid}))
        }
    }
}

/// Starts the process again: the guard's own environment (the process's, see [`kill`]), the
/// recorded argv and cwd, the namespaces the guard holds in `held` (kind -> path).
fn restart(s: &RestartSpec, held: &BTreeMap<String, String>) -> Result<u32> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&s.log)
        .map_err(|e| FaultError::Failed(format!("restart log {}: {e}", s.log.display())))?;
    let log2 = log.try_clone().map_err(|e| FaultError::Failed(e.to_string()))?;
    let mut argv: Vec<String> = Vec::new();
    if !s.enter.is_empty() || s.new_pid_ns {
        argv.push(s.nsenter.clone());
        for kind in &s.enter {
            let path = held.get(kind).ok_or_else(|| {
                FaultError::Failed(format!("the guard does not hold the {kind} namespace"))
            })?;
            let flag = match kind.as_str() {
                "mnt" => "--mount",
                "net" => "--net",
                "uts" => "--uts",
                "ipc" => "--ipc",
                _ => "--pid",
            };
            argv.push(format!("{flag}={path}"));
        }
        argv.push(format!("--wd={}", s.cwd));
        argv.push("--".into());
        if s.new_pid_ns {
            argv.push(s.unshare.clone());
            argv.extend(["--pid", "--fork", "--kill-child", "--"].map(String::from));
        }
    }
    argv.extend(s.argv.iter().cloned());
    let (prog, args) = argv.split_first().ok_or_else(|| FaultError::Failed("empty argv".into()))?;
    let mut c = std::process::Command::new(prog);
    c.args(args).stdin(Stdio::null()).stdout(log).stderr(log2);
    if s.enter.is_empty() && !s.new_pid_ns {
        c.current_dir(&s.cwd);
    }
    let mut child =
        c.spawn().map_err(|e| FaultError::Failed(format!("cannot restart {prog}: {e}")))?;
    let pid = child.id();
    // nsenter opens the namespaces through this guard's /proc entries: the guard must not exit
    // (closing them) before it has entered them.
    let entered = |kind: &String| {
        kind == "pid"
            || held.get(kind).and_then(|p| inode(p)) == inode(&format!("/proc/{pid}/ns/{kind}"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !s.enter.iter().all(entered) && std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(FaultError::Failed(format!(
                "the restarted process exited at once ({status}); see {}",
                s.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(pid)
}

/// Ends fault `id` now (the guard notices and exits).
pub async fn stop(id: &str, o: &HostOptions) -> Result<Value> {
    need_root()?;
    valid_id(id)?;
    check_state_dir(o)?;
    let r = read_record(&record_path(o, id)).ok_or_else(|| FaultError::NotFound(id.to_owned()))?;
    if matches!(r.undo, Undo::Restart(_)) {
        // Only the guard holds the namespaces the process must re-enter: ask it to end now.
        return signal_guard(o, id).await;
    }
    end(o, id, &BTreeMap::new()).await
}

/// A kill fault ends in its guard, which holds the process's namespaces: SIGTERM it and wait.
async fn signal_guard(o: &HostOptions, id: &str) -> Result<Value> {
    let Some(pid) = guard_pid(id) else {
        // No guard (killed with SIGKILL): restart with what can be entered without it.
        return end(o, id, &BTreeMap::new()).await;
    };
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while record_path(o, id).exists() || o.state_dir.join(format!(".{id}.ending")).exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(FaultError::Failed(format!(
                "the guard of {id} did not end it within 10 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(json!({"id": id, "ended_at": at(now_ms()), "undone": true}))
}

/// The pid of the guard of `id`, found by its argv (so a reused pid is never mistaken for it).
fn guard_pid(id: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        // The guard's argv ends with `-state-dir DIR ID`; the id is unique to one fault.
        if args.iter().any(|a| *a == b"-state-dir") && args.contains(&id.as_bytes()) && alive(pid) {
            return Some(pid);
        }
    }
    None
}

/// Undoes faults past their deadline whose guard is gone (killed with SIGKILL, or the host
/// rebooted into the same state directory).
async fn reap(o: &HostOptions) -> Vec<Value> {
    let mut out = Vec::new();
    if check_state_dir(o).is_err() {
        return out;
    }
    let Ok(entries) = std::fs::read_dir(&o.state_dir) else { return out };
    for e in entries.flatten() {
        let Some(r) = read_record(&e.path()) else { continue };
        if r.expires_ms <= now_ms()
            && guard_pid(&r.id).is_none()
            && let Ok(v) = end(o, &r.id, &BTreeMap::new()).await
        {
            out.push(v);
        }
    }
    out
}

/// The host faults in place (after undoing any whose deadline passed without a guard).
pub async fn list(o: &HostOptions) -> Result<Value> {
    need_root()?;
    check_state_dir(o)?;
    let reaped = reap(o).await;
    let mut faults = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&o.state_dir) {
        for e in entries.flatten() {
            if let Some(r) = read_record(&e.path()) {
                let mut v = public(&r);
                v["guard_running"] = json!(guard_pid(&r.id).is_some());
                faults.push(v);
            }
        }
    }
    faults.sort_by(|a, b| a["started_at"].as_str().cmp(&b["started_at"].as_str()));
    Ok(json!({"faults": faults, "reaped": reaped}))
}

/// Ends every host fault in the state directory now: what each undo said, and why any could
/// not be ended. One that ended by itself meanwhile (its guard got there first) is no error.
pub async fn stop_all(o: &HostOptions) -> Result<(Vec<Value>, Vec<String>)> {
    let listed = list(o).await?;
    let ids: Vec<String> = listed["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect();
    let (mut stopped, mut errors) = (Vec::new(), Vec::new());
    for id in ids {
        match stop(&id, o).await {
            Ok(v) => stopped.push(v),
            Err(FaultError::NotFound(_)) => {}
            Err(e) => errors.push(format!("{id}: {e}")),
        }
    }
    Ok((stopped, errors))
}

/// The guard of fault `id`: holds what the undo needs, says it is ready, waits for the deadline
/// (or SIGTERM: end now), undoes the fault and exits. Exits quietly when the fault ended by
/// other means (`stop`, a failed apply). SIGHUP and SIGINT are ignored: the guard outlives
/// terminals and Ctrl-C.
pub async fn guard(id: &str, o: &HostOptions) -> Result<Value> {
    use tokio::signal::unix::{SignalKind, signal};
    valid_id(id)?;
    check_state_dir(o)?;
    let path = record_path(o, id);
    let r = read_record(&path).ok_or_else(|| FaultError::NotFound(id.to_owned()))?;
    let sig = |k| signal(k).map_err(|e| FaultError::Failed(format!("signal handler: {e}")));
    let (mut term, _hup, _int) =
        (sig(SignalKind::terminate())?, sig(SignalKind::hangup())?, sig(SignalKind::interrupt())?);
    // Namespace files held open while the process is down: they keep the namespaces alive even
    // when nothing else is in them, and nsenter re-enters them through /proc/GUARD/fd/N.
    let mut files = Vec::new();
    let mut held = BTreeMap::new();
    if let Undo::Restart(s) = &r.undo {
        for kind in &s.enter {
            let f = std::fs::File::open(format!("/proc/{}/ns/{kind}", s.pid)).map_err(|e| {
                FaultError::Failed(format!("cannot hold the {kind} namespace of {}: {e}", s.pid))
            })?;
            held.insert(kind.clone(), format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()));
            files.push(f);
        }
    }
    std::fs::write(o.state_dir.join(format!("{id}.ready")), b"")
        .map_err(|e| FaultError::Failed(format!("ready file: {e}")))?;
    let deadline = UNIX_EPOCH + Duration::from_millis(r.expires_ms);
    loop {
        if !path.exists() {
            return Ok(json!({"id": id, "ended": "by other means"}));
        }
        let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
        if left.is_zero() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(left.min(Duration::from_millis(200))) => {}
            _ = term.recv() => break,
        }
    }
    let out = end(o, id, &held).await;
    drop(files);
    out
}
