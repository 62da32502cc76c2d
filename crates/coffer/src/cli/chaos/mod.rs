//! `coffer chaos`: chaos experiments in Chaos Toolkit's format (crate `coffer-chaos`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

mod report;
mod run;

#[derive(Subcommand, Debug)]
pub(crate) enum ChaosCmd {
    /// Run experiments (Chaos Toolkit's format, JSON or YAML) and write their journals; exit 0
    /// only when every run completed without deviating from its steady state
    Run(run::RunArgs),
    /// Summarize journals and write an HTML report with a timeline beside each
    Report(report::ReportArgs),
}

pub(super) async fn run(cmd: ChaosCmd) -> Result<ExitCode> {
    match cmd {
        ChaosCmd::Run(a) => run::run(a).await,
        ChaosCmd::Report(a) => report::run(a),
    }
}
