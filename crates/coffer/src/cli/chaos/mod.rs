//! `coffer chaos`: chaos experiments in Chaos Toolkit's format (crate `coffer-chaos`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

mod host;
mod probe;
mod run;

#[derive(Subcommand, Debug)]
pub(crate) enum ChaosCmd {
    /// Run an experiment (Chaos Toolkit's JSON format) and write its journal; exit 0 only when it
    /// completed without deviating from its steady state
    Run(run::RunArgs),
    /// Host-side faults (need root): partition, netem, kill, agent-cache; stop, list
    #[command(subcommand, name = "fault")]
    Host(host::HostFaultCmd),
    /// Probes, printing JSON: health, agent, metrics, audit
    #[command(subcommand)]
    Probe(probe::ProbeCmd),
    /// The guard that ends a host fault at its deadline (started by `fault`, not by hand)
    #[command(name = "fault-guard", hide = true)]
    FaultGuard(host::GuardArgs),
}

pub(super) async fn run(cmd: ChaosCmd) -> Result<ExitCode> {
    match cmd {
        ChaosCmd::Run(a) => run::run(a).await,
        ChaosCmd::Host(c) => host::run(c).await,
        ChaosCmd::Probe(c) => probe::run(c).await,
        ChaosCmd::FaultGuard(a) => host::guard(a).await,
    }
}
