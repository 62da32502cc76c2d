//! `coffer chaos`: chaos experiments in Chaos Toolkit's format (crate `coffer-chaos`).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

mod run;

#[derive(Subcommand, Debug)]
pub(crate) enum ChaosCmd {
    /// Run an experiment (Chaos Toolkit's JSON format) and write its journal; exit 0 only when it
    /// completed without deviating from its steady state
    Run(run::RunArgs),
}

pub(super) async fn run(cmd: ChaosCmd) -> Result<ExitCode> {
    match cmd {
        ChaosCmd::Run(a) => run::run(a).await,
    }
}
