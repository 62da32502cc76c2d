//! `coffer chaos run FILE...`: for each experiment, the steady-state hypothesis, the method, the
//! hypothesis again, and the rollbacks always (also on deviation, failure, Ctrl-C or SIGTERM),
//! then its journal; optionally in rounds, every `-interval`, for CI jobs and CronJobs.
//!
//! Guarantees: every file is read, parsed and has its configuration resolved before anything
//! runs, so a typo in the third experiment does not leave the first two run; each run writes its
//! own journal before the next starts; the exit status is 0 only when every run completed
//! without deviating. On SIGINT/SIGTERM the run in flight is interrupted, its rollbacks run, its
//! journal is written, and no further run starts; the exit status is the worst of the runs
//! (a signal while waiting between rounds is not a failure).
//!
//! Does not: prune old journals, run experiments concurrently, or keep to the interval when a
//! round takes longer than it (the next round then starts at once).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use coffer_chaos::{Configuration, Experiment, HypothesisStrategy, Journal, Options, Status};
use tokio::sync::watch;

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Experiment files (JSON or YAML, by extension, else by content), run in this order
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where journals go. One run of one experiment: this file (default ./journal.json).
    /// Several experiments, -count or -interval: a directory (default ./journals), created if
    /// missing, with one NAME-YYYYMMDDTHHMMSSZ.json per run (NAME: the experiment file's name
    /// without extension; -2, -3... appended if taken)
    #[arg(long = "journal-path", value_name = "PATH")]
    pub journal_path: Option<PathBuf>,
    /// When the steady-state hypothesis runs: default (before and after the method),
    /// before-method-only, after-method-only, during-method-only, continuously (before, during
    /// and after). Default: the experiment's runtime.hypothesis.strategy, else default
    #[arg(long = "hypothesis-strategy", value_name = "STRATEGY", value_parser = parse_strategy)]
    pub hypothesis_strategy: Option<HypothesisStrategy>,
    /// Seconds between two checks of the hypothesis during the method
    #[arg(long = "hypothesis-frequency", value_name = "SECONDS", default_value_t = 1.0)]
    pub hypothesis_frequency: f64,
    /// Stop the method and fail the run the first time the hypothesis is not met during it
    #[arg(long = "fail-fast")]
    pub fail_fast: bool,
    /// Run the experiments again every DURATION (`90s`, `30m`, `1h`), from the start of one
    /// round to the start of the next; forever unless -count is given
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Number of rounds (each runs every experiment once). Default: 1, or forever with -interval
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

fn parse_strategy(s: &str) -> Result<HypothesisStrategy, String> {
    s.parse().map_err(|e: coffer_chaos::Error| e.to_string())
}

/// An experiment ready to run.
struct Loaded {
    file: PathBuf,
    experiment: Experiment,
    config: Configuration,
    options: Options,
}

/// Where each run's journal goes.
enum Journals {
    File(PathBuf),
    Dir(PathBuf),
}

impl Journals {
    fn path_for(&self, file: &Path, journal: &Journal) -> PathBuf {
        let dir = match self {
            Journals::File(p) => return p.clone(),
            Journals::Dir(d) => d,
        };
        let stem = file.file_stem().map_or_else(|| "experiment".into(), |s| s.to_string_lossy());
        // `2026-01-02T03:04:05.678901+00:00` -> `20260102T030405Z`
        let stamp: String =
            journal.start.chars().take(19).filter(|c| *c != '-' && *c != ':').collect();
        let mut path = dir.join(format!("{stem}-{stamp}Z.json"));
        let mut n = 2;
        while path.exists() {
            path = dir.join(format!("{stem}-{stamp}Z-{n}.json"));
            n += 1;
        }
        path
    }
}

pub(super) async fn run(a: RunArgs) -> Result<ExitCode> {
    let interval = match &a.interval {
        None => None,
        Some(s) => match coffer_agent::config::parse_duration(s) {
            Some(d) if !d.is_zero() => Some(d),
            _ => bail!("-interval: {s:?} is not a duration such as 90s, 30m or 1h"),
        },
    };
    if a.count == Some(0) {
        bail!("-count must be at least 1");
    }
    let frequency = Duration::try_from_secs_f64(a.hypothesis_frequency)
        .ok()
        .filter(|f| !f.is_zero())
        .context("-hypothesis-frequency must be a positive number of seconds")?;
    let rounds = a.count.or(if interval.is_some() { None } else { Some(1) });
    let several = a.files.len() > 1 || rounds != Some(1);
    let journals = if several {
        let dir = a.journal_path.clone().unwrap_or_else(|| PathBuf::from("./journals"));
        if dir.is_file() {
            bail!(
                "-journal-path {} is a file: with several experiments, -count or -interval it \
                 names a directory",
                dir.display()
            );
        }
        Journals::Dir(dir)
    } else {
        Journals::File(a.journal_path.clone().unwrap_or_else(|| PathBuf::from("./journal.json")))
    };

    let mut loaded = Vec::with_capacity(a.files.len());
    for file in &a.files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the experiment {}", file.display()))?;
        let experiment = Experiment::from_file_text(file, &text)
            .with_context(|| format!("invalid experiment {}", file.display()))?;
        let config = Configuration::load(&experiment, |k| std::env::var(k).ok())
            .with_context(|| format!("experiment {}", file.display()))?
            .with_host_guard(super::host::host_options(Default::default()).guard);
        let strategy = match a.hypothesis_strategy {
            Some(s) => s,
            None => experiment.hypothesis_strategy()?.unwrap_or_default(),
        };
        let options = Options { strategy, frequency, fail_fast: a.fail_fast };
        loaded.push(Loaded { file: file.clone(), experiment, config, options });
    }

    if let Journals::Dir(dir) = &journals {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the journal directory {}", dir.display()))?;
    }

    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        coffer_agent::shutdown_signal().await;
        eprintln!("interrupted: stopping the method, running the rollbacks, starting no other run");
        let _ = stop_tx.send(true);
        // Keep the sender, so that receivers never see the channel closed.
        std::future::pending::<()>().await;
    });
    let stopped = || {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };

    let mut failed_runs = 0_u64;
    let mut round = 0_u64;
    'rounds: loop {
        let round_started = Instant::now();
        for l in &loaded {
            if *stop.borrow() {
                break 'rounds;
            }
            eprintln!("running experiment: {} ({})", l.experiment.title, l.file.display());
            let journal =
                coffer_chaos::run_with(&l.experiment, &l.config, &l.options, stopped()).await;
            let path = journals.path_for(&l.file, &journal);
            let json = serde_json::to_vec_pretty(&journal)?;
            std::fs::write(&path, json)
                .with_context(|| format!("cannot write the journal {}", path.display()))?;
            eprintln!(
                "experiment ended at {}: {}: status {}, {}; journal written to {}",
                journal.end,
                l.file.display(),
                serde_json::to_value(journal.status)?.as_str().unwrap_or("?"),
                if journal.deviated { "deviated from its steady state" } else { "no deviation" },
                path.display()
            );
            if journal.exit_code() != 0 {
                failed_runs += 1;
            }
            if journal.status == Status::Interrupted {
                break 'rounds;
            }
        }
        round += 1;
        if rounds.is_some_and(|n| round >= n) {
            break;
        }
        let Some(interval) = interval else { continue };
        let next = round_started + interval;
        if Instant::now() >= next {
            eprintln!("round {round} took longer than -interval: the next starts now");
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = stopped() => break,
        }
    }
    if several {
        eprintln!("{round} round(s) done, {failed_runs} run(s) failed or deviated");
    }
    Ok(if failed_runs == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
