//! Host-side faults: a network partition or netem on a workload's network namespace, a process
//! killed and restarted, the agent's persisted cache corrupted or deleted. They need root.
//!
//! Guarantees (DESIGN invariant 10): a lasting fault is written to the state directory before it
//! is applied and a guard process is started for it, in its own process group, so Ctrl-C or a
//! kill of the runner does not reach it. The guard undoes the fault at its deadline (or at once
//! on SIGTERM), whoever started it and whether or not that process is still alive; `stop` undoes
//! it earlier. Ending is claimed by an atomic rename of the record, so a fault is undone once.
//! A fault whose guard was itself killed with SIGKILL is undone by the next `list` or fault start
//! that finds it past its deadline.
//!
//! Blast radius: network faults change only the target's own network namespace (a route, or the
//! root qdisc of one interface there) and refuse the host's own namespace.
//!
//! Not done: port-level partitions (routes cut a whole address or prefix); netem needs the
//! kernel's `sch_netem`; a restarted process in another user namespace is refused; a process
//! that was PID 1 of its own PID namespace comes back as PID 1 of a new one (a PID namespace
//! ends with its init, so it cannot be re-entered); its other namespaces (mount, network, UTS,
//! IPC) are the very same ones, held open by the guard while the process is down.

use std::ffi::OsString;
use std::net::IpAddr;
use std::os::unix::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::time::{de_duration, de_opt_duration, rfc3339};

pub mod record;
mod state;

use state::{RestartSpec, Undo, start, start_with_id};
pub use state::{guard, list, stop, stop_all};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/coffer-chaos";
/// Longest lasting fault: a typo must not leave a partition for a day.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Why a host fault could not be started, stopped or listed.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("host faults need root (they change network namespaces, routes and processes)")]
    NotRoot,
    #[error("{0}")]
    Invalid(String),
    #[error("no host fault {0} in the state directory (already ended?)")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

type Result<T> = std::result::Result<T, FaultError>;

/// Where records live and how to start a guard.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub state_dir: PathBuf,
    /// The guard's argv before `-state-dir DIR ID` (the CLI: `[coffer, chaos, fault-guard]`).
    pub guard: Vec<OsString>,
}

/// `partition`: cut a network namespace from an address or prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionArgs {
    /// An `ip netns` name.
    #[serde(default)]
    pub netns: Option<String>,
    /// Or the network namespace of this process.
    #[serde(default)]
    pub pid: Option<u32>,
    /// `IP` or `CIDR`.
    pub target: String,
    /// `drop` (default: packets vanish, connections time out) or `reject` (immediate error).
    #[serde(default)]
    pub mode: PartitionMode,
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartitionMode {
    #[default]
    Drop,
    Reject,
}

/// `netem`: delay, jitter and loss on one interface of a network namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetemArgs {
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// Default: the namespace's only interface other than `lo`.
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub delay: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub jitter: Option<Duration>,
    /// Percent of packets lost, 0 to 100.
    #[serde(default)]
    pub loss: Option<f64>,
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
}

/// `kill`: kill a process and start it again after `duration`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillArgs {
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// `KILL` (default), `TERM`, `INT`, `HUP`, `QUIT`, `USR1`, `USR2`, with or without `SIG`.
    #[serde(default)]
    pub signal: Option<String>,
    /// Where the restarted process's stdout and stderr go (default: `STATE_DIR/ID.log`).
    #[serde(default)]
    pub log: Option<PathBuf>,
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
}

/// `pause`: stop a process (SIGSTOP) and let it go on (SIGCONT) after `duration`: a server
/// that hangs rather than one that is gone (connections are accepted by the kernel and never
/// answered), with everything it held in memory intact.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseArgs {
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
}

/// `agent-cache`: a one-shot fault on the agent's persisted cache file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCacheArgs {
    /// The cache file (`cache { persist { path } }` of the agent's configuration).
    pub path: PathBuf,
    pub mode: CacheMode,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Flip bytes in the middle of the file.
    Corrupt,
    /// Cut the file to half its length.
    Truncate,
    Delete,
}

/// A network namespace as the record names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NsRef {
    /// `ip netns` name, or `pid:N`.
    name: String,
    /// The path that enters it (`/run/netns/NAME` or `/proc/N/ns/net`).
    path: String,
    /// Its inode when the fault started; another inode at undo time means it is gone.
    inode: u64,
}

fn need_root() -> Result<()> {
    if rustix::process::geteuid().is_root() { Ok(()) } else { Err(FaultError::NotRoot) }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn at(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

/// A fresh `hostfault-...` id.
pub fn new_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("hostfault-{}-{}-{nanos:08x}", now_ms() / 1000, std::process::id())
}

fn check_duration(d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(FaultError::Invalid("duration must be more than zero".into()));
    }
    if d > MAX_DURATION {
        return Err(FaultError::Invalid("duration is capped at 24h".into()));
    }
    Ok(())
}

fn inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// The network namespace of `netns` or `pid` (exactly one), never the host's own.
fn resolve_ns(netns: Option<&str>, pid: Option<u32>) -> Result<NsRef> {
    let (name, path) = match (netns, pid) {
        (Some(n), None) => {
            if n.is_empty() || !n.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
            {
                return Err(FaultError::Invalid(format!("invalid netns name {n:?}")));
            }
            (n.to_owned(), format!("/run/netns/{n}"))
        }
        (None, Some(p)) => (format!("pid:{p}"), format!("/proc/{p}/ns/net")),
        _ => return Err(FaultError::Invalid("give exactly one of netns and pid".into())),
    };
    let ino = inode(&path)
        .ok_or_else(|| FaultError::Invalid(format!("no network namespace {name} ({path})")))?;
    if Some(ino) == inode("/proc/self/ns/net") {
        return Err(FaultError::Invalid(format!(
            "{name} is the host's own network namespace: the fault would cut the whole host"
        )));
    }
    Ok(NsRef { name, path, inode: ino })
}

/// Runs `argv` inside `ns` (through nsenter, which enters a namespace file).
async fn run_in(ns: &NsRef, argv: &[String]) -> Result<String> {
    let mut full = vec!["nsenter".to_owned(), format!("--net={}", ns.path), "--".to_owned()];
    full.extend(argv.iter().cloned());
    run(&full).await
}

async fn run(argv: &[String]) -> Result<String> {
    let (prog, args) =
        argv.split_first().ok_or_else(|| FaultError::Failed("empty command".into()))?;
    let out = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| FaultError::Failed(format!("cannot run {prog}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(FaultError::Failed(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `IP` or `IP/len`; a port is refused (routes cut whole addresses).
fn parse_target(t: &str) -> Result<String> {
    let (addr, len) = match t.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (t, None),
    };
    let ip: IpAddr = match addr.parse() {
        Ok(ip) => ip,
        Err(_) if addr.parse::<std::net::SocketAddr>().is_ok() => {
            return Err(FaultError::Invalid(format!(
                "target {t}: a partition cuts a whole address (a route), not one port; give the address only"
            )));
        }
        Err(_) => {
            return Err(FaultError::Invalid(format!("target {t}: not an IP address or CIDR")));
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| FaultError::Invalid(format!("target {t}: bad prefix length")))?,
    };
    Ok(format!("{ip}/{len}"))
}

/// The host faults by name, for an experiment's `coffer` provider
/// (`{"type": "coffer", "func": "partition", "arguments": {...}}`): `partition`, `netem`,
/// `kill`, `pause`, `agent_cache` (also `agent-cache`), `stop` and `list` (`{"id": ...}` / `{}`).
/// Arguments are the fields of the matching `*Args` struct; an unknown or missing field is
/// refused, naming it.
pub async fn call(func: &str, arguments: Value, o: &HostOptions) -> Result<Value> {
    fn parse<T: serde::de::DeserializeOwned>(func: &str, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| FaultError::Invalid(format!("{func}: {e}")))
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Id {
        id: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nothing {}
    let arguments = if arguments.is_null() { json!({}) } else { arguments };
    match func {
        "partition" => partition(&parse(func, arguments)?, o).await,
        "netem" => netem(&parse(func, arguments)?, o).await,
        "kill" => kill(&parse(func, arguments)?, o).await,
        "pause" => pause(&parse(func, arguments)?, o).await,
        "agent_cache" | "agent-cache" => agent_cache(&parse(func, arguments)?).await,
        "stop" => stop(&parse::<Id>(func, arguments)?.id, o).await,
        "list" => {
            parse::<Nothing>(func, arguments)?;
            list(o).await
        }
        other => Err(FaultError::Invalid(format!(
            "unknown host fault {other:?}: partition, netem, kill, pause, agent_cache, stop, list"
        ))),
    }
}

/// Starts a partition; returns its output (`id`, `kind`, `started_at`, `expires_at`...).
pub async fn partition(a: &PartitionArgs, o: &HostOptions) -> Result<Value> {
    need_root()?;
    check_duration(a.duration)?;
    let target = parse_target(&a.target)?;
    let ns = resolve_ns(a.netns.as_deref(), a.pid)?;
    // `dev lo`: packets to the target loop back into the namespace, are not addressed to it and
    // are not forwarded, so they vanish as on a cut link (connections time out). `prohibit`: the
    // kernel answers at once (EACCES), like a firewall's reject.
    let route: Vec<String> = match a.mode {
        PartitionMode::Drop => vec![target.clone(), "dev".into(), "lo".into()],
        PartitionMode::Reject => vec!["prohibit".into(), target.clone()],
    };
    let cmd = |verb: &str| {
        let mut c = vec!["ip".to_owned(), "route".into(), verb.into()];
        c.extend(route.iter().cloned());
        c
    };
    let output = json!({
        "netns": ns.name, "target": target, "mode": a.mode,
        "effect": match a.mode {
            PartitionMode::Drop => "packets to the target are dropped: connections time out",
            PartitionMode::Reject => "connections to the target fail at once (EACCES)",
        },
    });
    let undo = Undo::Commands { ns: ns.clone(), commands: vec![cmd("del")] };
    start(o, "partition", a.duration, undo, output, || async {
        run_in(&ns, &cmd("add")).await.map(|_| ())
    })
    .await
}

/// The interface netem shapes: `given`, or the namespace's only one other than `lo`.
async fn pick_interface(ns: &NsRef, given: Option<&str>) -> Result<String> {
    if let Some(i) = given {
        return Ok(i.to_owned());
    }
    let out = run_in(ns, &["ip".into(), "-o".into(), "link".into(), "show".into()]).await?;
    let names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .filter(|n| !n.is_empty() && n != "lo")
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(FaultError::Invalid(format!(
            "namespace {} has interfaces {names:?}: name one with interface",
            ns.name
        ))),
    }
}

/// Starts netem on the namespace's interface.
pub async fn netem(a: &NetemArgs, o: &HostOptions) -> Result<Value> {
    need_root()?;
    check_duration(a.duration)?;
    if a.delay.is_none() && a.loss.is_none() {
        return Err(FaultError::Invalid("netem needs delay or loss".into()));
    }
    if a.jitter.is_some() && a.delay.is_none() {
        return Err(FaultError::Invalid("jitter needs delay".into()));
    }
    if let Some(l) = a.loss
        && !(0.0..=100.0).contains(&l)
    {
        return Err(FaultError::Invalid("loss is a percentage, 0 to 100".into()));
    }
    let ns = resolve_ns(a.netns.as_deref(), a.pid)?;
    let dev = pick_interface(&ns, a.interface.as_deref()).await?;
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut add: Vec<String> =
        ["tc", "qdisc", "add", "dev", &dev, "root", "netem"].map(String::from).to_vec();
    if let Some(d) = a.delay {
        add.extend(["delay".into(), ms(d)]);
        if let Some(j) = a.jitter {
            add.push(ms(j));
        }
    }
    if let Some(l) = a.loss {
        add.extend(["loss".into(), format!("{l}%")]);
    }
    let del: Vec<String> = ["tc", "qdisc", "del", "dev", &dev, "root"].map(String::from).to_vec();
    let output = json!({
        "netns": ns.name, "interface": dev,
        "delay_ms": a.delay.map(|d| d.as_millis() as u64),
        "jitter_ms": a.jitter.map(|d| d.as_millis() as u64),
        "loss_percent": a.loss,
    });
    let undo = Undo::Commands { ns: ns.clone(), commands: vec![del] };
    start(o, "netem", a.duration, undo, output, || async {
        run_in(&ns, &add).await.map(|_| ()).map_err(|e| match e {
            FaultError::Failed(m) if m.contains("qdisc kind is unknown") => FaultError::Failed(
                "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM, module sch_netem)".into(),
            ),
            other => other,
        })
    })
    .await
}

/// `(canonical name, signal)`.
fn signal_named(s: Option<&str>) -> Result<(&'static str, rustix::process::Signal)> {
    use rustix::process::Signal;
    let name = s.unwrap_or("KILL").to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let sig = match name {
        "KILL" | "9" => Signal::KILL,
        "TERM" | "15" => Signal::TERM,
        "INT" | "2" => Signal::INT,
        "HUP" | "1" => Signal::HUP,
        "QUIT" | "3" => Signal::QUIT,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        _ => return Err(FaultError::Invalid(format!("unknown signal {name:?}"))),
    };
    let canonical = [
        (Signal::KILL, "KILL"),
        (Signal::TERM, "TERM"),
        (Signal::INT, "INT"),
        (Signal::HUP, "HUP"),
        (Signal::QUIT, "QUIT"),
        (Signal::USR1, "USR1"),
        (Signal::USR2, "USR2"),
    ]
    .into_iter()
    .find_map(|(s, n)| (s == sig).then_some(n))
    .unwrap_or("KILL");
    Ok((canonical, sig))
}

/// `prog` as this process's PATH finds it (the name itself when it does not).
fn which(prog: &str) -> String {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .map_or_else(|| prog.to_owned(), |p| p.to_string_lossy().into_owned())
}

/// The process's start time (clock ticks since boot, field 22 of /proc/PID/stat): with the
/// pid, it names one process, whatever pids are reused later.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the command: state is field 3, so starttime (22) is the 20th here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The process's state letter (field 3 of /proc/PID/stat); `None` when it is gone.
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).map(|z| !z))
        .unwrap_or(false)
}

/// The pid given, or read from a pid file; never init or this process.
fn target_pid(pid: Option<u32>, pid_file: Option<&std::path::Path>) -> Result<u32> {
    let pid = match (pid, pid_file) {
        (Some(p), None) => p,
        (None, Some(f)) => std::fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| FaultError::Invalid(format!("{} holds no pid", f.display())))?,
        _ => return Err(FaultError::Invalid("give exactly one of pid and pid_file".into())),
    };
    if pid <= 1 || pid == std::process::id() {
        return Err(FaultError::Invalid(format!("refusing to signal pid {pid}")));
    }
    Ok(pid)
}

/// Stops a process (SIGSTOP) until the deadline, when the guard sends SIGCONT to that same
/// process (pid and start time), if it still exists.
pub async fn pause(a: &PauseArgs, o: &HostOptions) -> Result<Value> {
    pause_with_id(a, o, new_id()).await
}

/// [`pause`] under an id chosen beforehand (from [`new_id`]): its record on the server may have
/// to be made before the pause, when the process paused is the server.
pub async fn pause_with_id(a: &PauseArgs, o: &HostOptions, id: String) -> Result<Value> {
    need_root()?;
    state::valid_id(&id)?;
    check_duration(a.duration)?;
    let pid = target_pid(a.pid, a.pid_file.as_deref())?;
    let started = start_time(pid)
        .filter(|_| alive(pid))
        .ok_or_else(|| FaultError::Invalid(format!("no process {pid}")))?;
    let target = rustix::process::Pid::from_raw(
        i32::try_from(pid).map_err(|_| FaultError::Invalid(format!("bad pid {pid}")))?,
    )
    .ok_or_else(|| FaultError::Invalid(format!("bad pid {pid}")))?;
    let output = json!({"pid": pid});
    let stop_it = || async move {
        rustix::process::kill_process(target, rustix::process::Signal::STOP)
            .map_err(|e| FaultError::Failed(format!("cannot stop {pid}: {e}")))?;
        // The signal is delivered when the process next runs, which on a loaded machine is
        // later than kill's return: the fault is in place only once the kernel says stopped,
        // and a probe right after the pause must see the process stopped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match state_of(pid) {
                Some('T' | 't') | None => return Ok(()),
                Some(other) if std::time::Instant::now() >= deadline => {
                    // Failing means nothing stays applied: take the pending stop back.
                    let _ = rustix::process::kill_process(target, rustix::process::Signal::CONT);
                    return Err(FaultError::Failed(format!(
                        "process {pid} did not stop within 5 s of SIGSTOP (state {other})"
                    )));
                }
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
    };
    let undo = Undo::Resume { pid, started };
    start_with_id(o, id, "pause", a.duration, undo, output, None, stop_it).await
}

/// Kills a process and starts it again after `duration`, in the same namespaces.
pub async fn kill(a: &KillArgs, o: &HostOptions) -> Result<Value> {
    need_root()?;
    check_duration(a.duration)?;
    let pid = target_pid(a.pid, a.pid_file.as_deref())?;
    let (signal_name, signal) = signal_named(a.signal.as_deref())?;
    let proc = format!("/proc/{pid}");
    let argv: Vec<String> = std::fs::read(format!("{proc}/cmdline"))
        .map_err(|_| FaultError::Invalid(format!("no process {pid}")))?
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    if argv.is_empty() {
        return Err(FaultError::Invalid(format!("process {pid} is a kernel thread or a zombie")));
    }
    let cwd = std::fs::read_link(format!("{proc}/cwd"))
        .map_err(|e| FaultError::Failed(format!("cannot read the cwd of {pid}: {e}")))?
        .to_string_lossy()
        .into_owned();
    // The environment goes to the guard as its own environment, never into the record: an app's
    // environment may hold secrets, and the state directory is a file system.
    let environ = std::fs::read(format!("{proc}/environ"))
        .map_err(|e| FaultError::Failed(format!("cannot read the environment of {pid}: {e}")))?;
    let env: Vec<(OsString, OsString)> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let i = kv.iter().position(|b| *b == b'=')?;
            Some((OsString::from_vec(kv[..i].to_vec()), OsString::from_vec(kv[i + 1..].to_vec())))
        })
        .collect();
    if inode(&format!("{proc}/ns/user")) != inode("/proc/self/ns/user") {
        return Err(FaultError::Invalid(format!(
            "process {pid} is in another user namespace: restarting it there is not supported"
        )));
    }
    let mut enter = Vec::new();
    for kind in ["mnt", "net", "uts", "ipc", "pid"] {
        if inode(&format!("{proc}/ns/{kind}")) != inode(&format!("/proc/self/ns/{kind}")) {
            enter.push(kind.to_owned());
        }
    }
    let status = std::fs::read_to_string(format!("{proc}/status")).unwrap_or_default();
    let init_of_own_ns = status.lines().find_map(|l| l.strip_prefix("NSpid:")).is_some_and(|l| {
        l.split_whitespace().count() > 1 && l.split_whitespace().last() == Some("1")
    });
    let new_pid_ns = enter.iter().any(|k| k == "pid") && init_of_own_ns;
    if new_pid_ns {
        enter.retain(|k| k != "pid");
    }
    let id = new_id();
    let log = a.log.clone().unwrap_or_else(|| o.state_dir.join(format!("{id}.log")));
    // The executable itself, so a relative argv[0] needs no PATH; unless it was replaced since.
    let mut argv = argv;
    if let Ok(exe) = std::fs::read_link(format!("{proc}/exe")) {
        let exe = exe.to_string_lossy().into_owned();
        if !exe.ends_with(" (deleted)") && !argv[0].contains('/') {
            argv[0] = exe;
        }
    }
    let spec = RestartSpec {
        argv: argv.clone(),
        cwd: cwd.clone(),
        log: log.clone(),
        enter,
        new_pid_ns,
        pid,
        started: start_time(pid),
        nsenter: which("nsenter"),
        unshare: which("unshare"),
    };
    let output = json!({
        "pid": pid, "signal": signal_name, "argv0": argv[0], "cwd": cwd,
        "namespaces": spec.enter, "new_pid_namespace": new_pid_ns, "restart_log": log,
    });
    let kill_it = || async move {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32)
                .ok_or_else(|| FaultError::Invalid(format!("bad pid {pid}")))?,
            signal,
        )
        .map_err(|e| FaultError::Failed(format!("cannot signal {pid}: {e}")))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            if tokio::time::Instant::now() > deadline {
                return Err(FaultError::Failed(format!(
                    "process {pid} still runs 10 s after the signal: the fault is abandoned, nothing will be restarted"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    };
    start_with_id(o, id, "kill", a.duration, Undo::Restart(spec), output, Some(env), kill_it).await
}

/// Corrupts, truncates or deletes the agent's persisted cache. One-shot: nothing to undo, and
/// `expires_at` equals `started_at`.
pub async fn agent_cache(a: &AgentCacheArgs) -> Result<Value> {
    need_root()?;
    let p = &a.path;
    let len = std::fs::metadata(p)
        .map_err(|e| FaultError::Invalid(format!("cache file {}: {e}", p.display())))?
        .len();
    let fail = |e: std::io::Error| FaultError::Failed(format!("{}: {e}", p.display()));
    match a.mode {
        CacheMode::Delete => std::fs::remove_file(p).map_err(fail)?,
        CacheMode::Truncate => std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|f| f.set_len(len / 2))
            .map_err(fail)?,
        CacheMode::Corrupt => {
            let mut bytes = std::fs::read(p).map_err(fail)?;
            if bytes.is_empty() {
                return Err(FaultError::Invalid(format!("{} is empty", p.display())));
            }
            // Flip 16 bytes around the middle: inside the ciphertext of any sane cache.
            let mid = bytes.len() / 2;
            let from = mid.saturating_sub(8);
            for b in bytes.iter_mut().skip(from).take(16) {
                *b ^= 0x5a;
            }
            std::fs::write(p, bytes).map_err(fail)?;
        }
    }
    let now = at(now_ms());
    Ok(json!({
        "id": new_id(), "kind": "agent-cache", "started_at": now, "expires_at": now,
        "one_shot": true, "path": p, "mode": a.mode, "size_before": len,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use super::*;

    #[test]
    fn targets_are_addresses_or_prefixes_never_ports() {
        assert_eq!(parse_target("10.0.0.1").unwrap(), "10.0.0.1/32");
        assert_eq!(parse_target("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(parse_target("::1").unwrap(), "::1/128");
        let e = parse_target("10.0.0.1:8200").unwrap_err().to_string();
        assert!(e.contains("not one port"), "{e}");
        assert!(parse_target("10.0.0.0/33").is_err());
        assert!(parse_target("coffer.internal").is_err());
    }

    #[test]
    fn durations_are_mandatory_and_bounded() {
        let e =
            serde_json::from_value::<PartitionArgs>(json!({"netns": "x", "target": "10.0.0.1"}))
                .unwrap_err()
                .to_string();
        assert!(e.contains("duration"), "{e}");
        let a: PartitionArgs =
            serde_json::from_value(json!({"netns": "x", "target": "10.0.0.1", "duration": "90s"}))
                .unwrap();
        assert_eq!(a.duration, Duration::from_secs(90));
        assert_eq!(a.mode, PartitionMode::Drop);
        assert!(check_duration(Duration::ZERO).is_err());
        assert!(check_duration(Duration::from_secs(25 * 3600)).is_err());
        assert!(
            serde_json::from_value::<KillArgs>(json!({"pid": 5, "duration": "5s", "x": 1}))
                .is_err()
        );
    }

    #[test]
    fn the_hosts_own_namespace_is_refused() {
        let me = std::process::id();
        let e = resolve_ns(None, Some(me)).unwrap_err().to_string();
        assert!(e.contains("host's own network namespace"), "{e}");
        assert!(resolve_ns(Some("x"), Some(me)).is_err());
        assert!(resolve_ns(Some("../etc"), None).is_err());
    }

    #[tokio::test]
    async fn call_names_an_unknown_function_or_field() {
        let o = HostOptions { state_dir: "/nonexistent".into(), guard: Vec::new() };
        let e = call("explode", json!({}), &o).await.unwrap_err().to_string();
        assert!(e.contains("unknown host fault \"explode\""), "{e}");
        if rustix::process::geteuid().is_root() {
            let e = call(
                "partition",
                json!({"netns": "x", "target": "10.0.0.1", "duration": "5s", "port": 1}),
                &o,
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(e.contains("partition: unknown field `port`"), "{e}");
        }
    }

    #[test]
    fn a_process_is_named_by_pid_and_start_time() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert!(alive(me));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(signal_named(None).unwrap(), ("KILL", rustix::process::Signal::KILL));
        assert_eq!(signal_named(Some("sigterm")).unwrap(), ("TERM", rustix::process::Signal::TERM));
        assert_eq!(signal_named(Some("15")).unwrap().0, "TERM");
        assert!(signal_named(Some("BOGUS")).is_err());
    }

    #[test]
    fn a_state_dir_others_can_reach_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let o = HostOptions { state_dir: dir.path().join("s"), guard: Vec::new() };
        assert!(state::check_state_dir(&o).is_ok(), "absent is fine");
        std::fs::create_dir(&o.state_dir).unwrap();
        std::fs::set_permissions(&o.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = state::check_state_dir(&o).unwrap_err().to_string();
        assert!(e.contains("mode 0700"), "{e}");
        std::fs::set_permissions(&o.state_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(state::check_state_dir(&o).is_ok());
    }

    #[test]
    fn only_host_fault_ids_are_accepted() {
        assert!(state::valid_id("hostfault-1-2-0000000a").is_ok());
        assert!(state::valid_id("../x").is_err());
        assert!(state::valid_id("hostfault-../x").is_err());
    }
}
