//! `coffer chaos probe <name>`: the probes of crate `coffer-chaos` (module `probe`), each
//! printing its JSON on stdout, for Chaos Toolkit's `process` provider. Exit status 0 when the
//! probe ran (an unreachable server or agent is an answer: `"reachable": false`), 1 when it
//! could not (bad arguments, an unreadable file, metrics that are not Prometheus text).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use coffer_chaos::probe;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub(crate) enum ProbeCmd {
    /// The server's sys/health: status code and body
    Health {
        /// The server (default: $COFFER_ADDR, then $VAULT_ADDR)
        #[arg(long, env = "COFFER_ADDR")]
        address: Option<String>,
        /// PEM CA bundle to trust
        #[arg(long = "ca-cert", env = "COFFER_CACERT")]
        ca_cert: Option<PathBuf>,
    },
    /// The agent's status: healthy, serving_stale, stale_seconds, auth_state, templates
    Agent {
        /// The agent's TCP listener, e.g. http://127.0.0.1:8100
        #[arg(long, conflicts_with = "socket", required_unless_present = "socket")]
        address: Option<String>,
        /// Or its unix socket
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Prometheus text metrics as JSON {"name{labels}": value}
    Metrics {
        #[arg(long, conflicts_with = "socket", required_unless_present = "socket")]
        url: Option<String>,
        /// Or a unix socket (the agent's), with -path (default /agent/v1/metrics)
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long)]
        path: Option<String>,
        /// Only this metric's samples
        #[arg(long)]
        name: Option<String>,
    },
    /// Counts over a file audit log: entries, errors, failed logins; whether a canary is in it
    Audit {
        #[arg(long)]
        file: PathBuf,
        /// RFC 3339 time, or a duration meaning that long ago (e.g. 10m)
        #[arg(long)]
        since: Option<String>,
        /// A cleartext string that must not be in the log (never printed)
        #[arg(long)]
        canary: Option<String>,
    },
}

fn args<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    Ok(serde_json::from_value(v)?)
}

pub(super) async fn run(cmd: ProbeCmd) -> Result<ExitCode> {
    let out = match cmd {
        ProbeCmd::Health { address, ca_cert } => {
            let address = address
                .or_else(|| std::env::var("VAULT_ADDR").ok())
                .ok_or_else(|| anyhow::anyhow!("no server address: -address or COFFER_ADDR"))?;
            probe::health(&args(json!({"address": address, "ca_cert": ca_cert}))?).await?
        }
        ProbeCmd::Agent { address, socket } => {
            probe::agent(&args(json!({"address": address, "socket": socket}))?).await?
        }
        ProbeCmd::Metrics { url, socket, path, name } => {
            probe::metrics(&args(
                json!({"url": url, "socket": socket, "path": path, "name": name}),
            )?)
            .await?
        }
        ProbeCmd::Audit { file, since, canary } => {
            probe::audit(&args(json!({"file": file, "since": since, "canary": canary}))?).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
