//! `coffer chaos`: chaos experiments in Chaos Toolkit's format (crate `coffer-chaos`), the
//! faults they inject (`coffer chaos fault`) and the probes that check them (`coffer chaos
//! probe`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::client::Global;

mod fault;
mod host;
mod probe;
mod report;
mod run;

#[derive(Subcommand, Debug)]
pub(crate) enum ChaosCmd {
    /// Run experiments (Chaos Toolkit's format, JSON or YAML) and write their journals; exit 0
    /// only when every run completed without deviating from its steady state
    Run(run::RunArgs),
    /// Summarize journals and write an HTML report with a timeline beside each
    Report(report::ReportArgs),
    /// Start, list or stop a fault: `coffer chaos fault latency -duration=60s -latency=200ms`,
    /// `coffer chaos fault partition -netns app -target 10.0.0.1 -duration=60s`,
    /// `coffer chaos fault list`, `coffer chaos fault stop ID|-all`. Server faults need the
    /// server's `chaos { enabled = true }` and a token with sudo on sys/chaos/faults; host
    /// faults (partition, netem, kill, pause, agent-cache) need root
    #[command(subcommand)]
    Fault(fault::FaultCmd),
    /// Probes, printing JSON: health, agent, metrics, audit
    #[command(subcommand)]
    Probe(probe::ProbeCmd),
    /// The guard that ends a host fault at its deadline (started by `fault`, not by hand)
    #[command(name = "fault-guard", hide = true)]
    FaultGuard(host::GuardArgs),
}

pub(super) async fn run(g: &Global, cmd: ChaosCmd) -> Result<ExitCode> {
    match cmd {
        ChaosCmd::Run(a) => run::run(a).await,
        ChaosCmd::Report(a) => report::run(a),
        ChaosCmd::Fault(f) => fault::run(g, f).await,
        ChaosCmd::Probe(c) => probe::run(c).await,
        ChaosCmd::FaultGuard(a) => host::guard(a).await,
    }
}
