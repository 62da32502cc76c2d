//! `coffer chaos`: chaos experiments in Chaos Toolkit's format (crate `coffer-chaos`), and the
//! faults they inject (`coffer chaos fault`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use super::client::Global;

mod fault;
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
    /// `coffer chaos fault list`, `coffer chaos fault stop ID|-all`. Server faults need the
    /// server's `chaos { enabled = true }` and a token with sudo on sys/chaos/faults
    #[command(subcommand)]
    Fault(fault::FaultCmd),
}

pub(super) async fn run(g: &Global, cmd: ChaosCmd) -> Result<ExitCode> {
    match cmd {
        ChaosCmd::Run(a) => run::run(a).await,
        ChaosCmd::Report(a) => report::run(a),
        ChaosCmd::Fault(f) => fault::run(g, f).await,
    }
}
