//! `coffer chaos fault <kind>` for host-side faults (crate `coffer-chaos`, module `host`): each
//! prints its JSON (`id`, `kind`, `started_at`, `expires_at`...) and leaves a guard process that
//! undoes it at its deadline, also when this command is killed. Needs root. With a server
//! configured (address and token), each is also recorded there as a `host` fault (see
//! `coffer_chaos::host::record`); a record that fails is a warning, never a failed fault.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use coffer_chaos::host::record::Recorder;
use coffer_chaos::host::{self, HostOptions};

use crate::cli::client::{Global, client, configured_server};
use crate::cli::output::Format;

#[derive(Args, Debug, Clone)]
pub(crate) struct StateDir {
    /// Where fault records (and guard and restart logs) are kept
    #[arg(long = "state-dir", value_name = "DIR", default_value = host::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct Namespace {
    /// The workload's network namespace, by `ip netns` name
    #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
    pub netns: Option<String>,
    /// Or the network namespace of this process (e.g. the agent in a container)
    #[arg(long)]
    pub pid: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum HostFaultCmd {
    /// Cut a network namespace from an address or prefix (a route inside that namespace only)
    Partition {
        #[command(flatten)]
        ns: Namespace,
        /// The server's address: IP or CIDR (routes cut whole addresses, not ports)
        #[arg(long)]
        target: String,
        /// drop: packets vanish, connections time out; reject: connections fail at once
        #[arg(long, default_value = "drop", value_parser = ["drop", "reject"])]
        mode: String,
        /// How long until it removes itself (e.g. 60s, 5m); mandatory
        #[arg(long)]
        duration: String,
        #[command(flatten)]
        state: StateDir,
    },
    /// Delay, jitter and loss (tc netem) on an interface of a network namespace
    Netem {
        #[command(flatten)]
        ns: Namespace,
        /// Default: the namespace's only interface other than lo
        #[arg(long)]
        interface: Option<String>,
        /// Added delay, e.g. 300ms
        #[arg(long)]
        delay: Option<String>,
        /// Jitter around the delay, e.g. 50ms
        #[arg(long)]
        jitter: Option<String>,
        /// Percent of packets lost
        #[arg(long)]
        loss: Option<f64>,
        /// How long until it removes itself; mandatory
        #[arg(long)]
        duration: String,
        #[command(flatten)]
        state: StateDir,
    },
    /// Kill a process and start it again after the duration (same argv, cwd, environment,
    /// namespaces)
    Kill {
        #[arg(long, conflicts_with = "pid_file", required_unless_present = "pid_file")]
        pid: Option<u32>,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// KILL (default), TERM, INT, HUP, QUIT, USR1, USR2
        #[arg(long)]
        signal: Option<String>,
        /// The restarted process's output (default: STATE_DIR/ID.log)
        #[arg(long)]
        log: Option<PathBuf>,
        /// How long the process stays down; mandatory
        #[arg(long)]
        duration: String,
        #[command(flatten)]
        state: StateDir,
    },
    /// Stop a process (SIGSTOP) and let it go on (SIGCONT) after the duration: a server that
    /// hangs, with connections accepted and never answered
    Pause {
        #[arg(long, conflicts_with = "pid_file", required_unless_present = "pid_file")]
        pid: Option<u32>,
        #[arg(long = "pid-file")]
        pid_file: Option<PathBuf>,
        /// How long the process stays stopped; mandatory
        #[arg(long)]
        duration: String,
        #[command(flatten)]
        state: StateDir,
    },
    /// Corrupt, truncate or delete the agent's persisted cache file (one-shot: nothing to undo)
    AgentCache {
        /// The cache file (`cache { persist { path } }`)
        #[arg(long)]
        path: PathBuf,
        #[arg(long, value_parser = ["corrupt", "truncate", "delete"])]
        mode: String,
    },
}

/// Host fault options for this binary; also what a `coffer` provider in `coffer chaos run`
/// passes to `coffer_chaos::host::call`. The guard's argv: this very executable (by
/// /proc/self/exe, so a binary replaced on disk meanwhile still runs the same code).
pub(crate) fn host_options(state_dir: PathBuf) -> HostOptions {
    HostOptions {
        state_dir,
        guard: vec!["/proc/self/exe".into(), "chaos".into(), "fault-guard".into()],
    }
}

pub(super) fn options(state: StateDir) -> HostOptions {
    host_options(state.state_dir)
}

/// The server host faults are recorded on, when one is configured; `None`: nothing is tried.
pub(super) fn recorder(g: &Global) -> Result<Option<Recorder>> {
    let Some(address) = configured_server(g) else { return Ok(None) };
    Ok(Some(Recorder { client: client(g)?, address }))
}

/// The host fault stands without its record: say so where a person running it will see.
pub(super) fn warn_unrecorded(out: &serde_json::Value) {
    if let Some(e) = out.get("server_record_error").and_then(serde_json::Value::as_str) {
        eprintln!("Warning: the host fault is in place, but not recorded on the server: {e}");
    }
}

/// The output as data with `-format=json|yaml`; else one line: `ID  KIND  START -> END  k=v ...`.
fn print(v: &serde_json::Value, format: Format) -> Result<ExitCode> {
    if format.structured() {
        crate::cli::output::print_value(v, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("?").to_owned();
    let shown = ["id", "kind", "started_at", "expires_at", "state_file", "guard_pid"];
    let details: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| !shown.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    let window = if text("started_at") == text("expires_at") {
        format!("done {}", text("started_at"))
    } else {
        format!("{} -> {}", text("started_at"), text("expires_at"))
    };
    println!("{}  {}  {}  {}", text("id"), text("kind"), window, details.join(" "));
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn run(g: &Global, cmd: HostFaultCmd, format: Format) -> Result<ExitCode> {
    use serde_json::json;
    // Absent options are left out: the arguments are checked as an experiment's would be.
    let (func, args, state) = match cmd {
        HostFaultCmd::Partition { ns, target, mode, duration, state } => (
            "partition",
            json!({"netns": ns.netns, "pid": ns.pid, "target": target, "mode": mode,
                "duration": duration}),
            Some(state),
        ),
        HostFaultCmd::Netem { ns, interface, delay, jitter, loss, duration, state } => (
            "netem",
            json!({"netns": ns.netns, "pid": ns.pid, "interface": interface, "delay": delay,
                "jitter": jitter, "loss": loss, "duration": duration}),
            Some(state),
        ),
        HostFaultCmd::Kill { pid, pid_file, signal, log, duration, state } => (
            "kill",
            json!({"pid": pid, "pid_file": pid_file, "signal": signal, "log": log,
                "duration": duration}),
            Some(state),
        ),
        HostFaultCmd::AgentCache { path, mode } => {
            ("agent_cache", json!({"path": path, "mode": mode}), None)
        }
        HostFaultCmd::Pause { pid, pid_file, duration, state } => {
            ("pause", json!({"pid": pid, "pid_file": pid_file, "duration": duration}), Some(state))
        }
    };
    let args = match args {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    };
    let opts = options(state.unwrap_or(StateDir { state_dir: host::DEFAULT_STATE_DIR.into() }));
    let rec = recorder(g)?;
    let out = host::record::call(func, args, &opts, rec.as_ref()).await?;
    warn_unrecorded(&out);
    print(&out, format)
}

/// The hidden guard: `coffer chaos fault-guard -state-dir DIR ID`.
#[derive(Args, Debug)]
pub(crate) struct GuardArgs {
    /// The host fault this guard ends at its deadline
    pub id: String,
    #[command(flatten)]
    pub state: StateDir,
}

pub(super) async fn guard(a: GuardArgs) -> Result<ExitCode> {
    let out = host::guard(&a.id, &options(a.state)).await?;
    eprintln!("{out}");
    Ok(ExitCode::SUCCESS)
}
