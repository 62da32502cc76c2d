//! `coffer chaos run FILE`: the steady-state hypothesis, the method, the hypothesis again, and
//! the rollbacks always (also on deviation, failure, Ctrl-C or SIGTERM), then the journal.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// The experiment file (JSON)
    pub file: std::path::PathBuf,
    /// Where to write the journal
    #[arg(long = "journal-path", value_name = "FILE", default_value = "./journal.json")]
    pub journal_path: std::path::PathBuf,
}

pub(super) async fn run(a: RunArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read the experiment {}", a.file.display()))?;
    let experiment = coffer_chaos::Experiment::from_json(&text)
        .with_context(|| format!("invalid experiment {}", a.file.display()))?;
    let config = coffer_chaos::Configuration::load(&experiment, |k| std::env::var(k).ok())
        .with_context(|| format!("experiment {}", a.file.display()))?;
    eprintln!("running experiment: {}", experiment.title);
    let journal = coffer_chaos::run(&experiment, &config, interrupted()).await;
    let json = serde_json::to_vec_pretty(&journal)?;
    std::fs::write(&a.journal_path, json)
        .with_context(|| format!("cannot write the journal {}", a.journal_path.display()))?;
    eprintln!(
        "experiment ended: status {}, {}; journal written to {}",
        serde_json::to_value(journal.status)?.as_str().unwrap_or("?"),
        if journal.deviated { "deviated from its steady state" } else { "no deviation" },
        a.journal_path.display()
    );
    Ok(ExitCode::from(u8::try_from(journal.exit_code()).unwrap_or(1)))
}

/// Resolves on Ctrl-C or SIGTERM: the run is interrupted and its rollbacks run.
async fn interrupted() {
    coffer_agent::shutdown_signal().await;
    eprintln!("interrupted: stopping the method and running the rollbacks");
}
