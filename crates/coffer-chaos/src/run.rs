//! The runner and its journal.
//!
//! Order: steady-state hypothesis before; when it holds, the method (pauses honoured, background
//! activities started and awaited before anything follows the method), with the hypothesis
//! repeated during it when the strategy asks; the hypothesis after; then the rollbacks,
//! **always**. Chaos Toolkit's default skips rollbacks after a failure or an interruption; Coffer
//! runs them after a deviation, a failure and a cancellation too, because a fault left in place
//! is the worst outcome of an experiment.
//!
//! Hypothesis strategies ([`HypothesisStrategy`], Chaos Toolkit's `--hypothesis-strategy`):
//! `default` (before and after), `before-method-only`, `after-method-only`,
//! `during-method-only`, `continuously` (before, during and after). During the method the
//! hypothesis runs at once, then `frequency` after each iteration ends (as Chaos Toolkit), until
//! the method ends; the iteration in flight then completes (so every entry of
//! `steady_states.during` is whole) before the hypothesis after starts (Chaos Toolkit lets the
//! two overlap). At least one iteration runs.
//!
//! Status (Chaos Toolkit's vocabulary, `completed | failed | aborted | interrupted`):
//! - a hypothesis probe that fails to run makes the run `failed`; one outside its tolerance
//!   after the method makes it `completed` and `deviated`. Before the method, either makes the
//!   run `failed` and the method is not run. Chaos Toolkit 1.19 records `completed` there (and
//!   exits 0) when the probes ran but were out of tolerance, although its log says "failing this
//!   experiment": a run that never played its method proved nothing, and a CI job must not pass it;
//! - a hypothesis not met during the method makes the run `deviated` (Coffer's difference: Chaos
//!   Toolkit only records it), and with `fail_fast` also `failed`, stops the method at once
//!   (activities in flight are dropped and recorded as failed) and skips the hypothesis after
//!   (Chaos Toolkit stops at the next activity and still runs it);
//! - Coffer's difference: a method activity that fails (process not found or timed out, HTTP
//!   unreachable, `expected_status` not met) makes the run `failed`, stops the method and skips
//!   the hypothesis after, since the fault it was to inject may not be in place. Chaos Toolkit
//!   records the failed activity and carries on (and refuses to start at all when a process
//!   path does not exist);
//! - `cancel` resolving makes it `interrupted`: in-flight activities are dropped (their processes
//!   killed), each recorded as failed with the exception `interrupted`;
//! - a background activity that panicked makes it `aborted`.
//!
//! Does not: dry runs, controls, `--rollback-strategy` (rollbacks always run), background
//! rollbacks (rollbacks run in order), or Chaos Toolkit's `fail_fast_ratio` (fail fast means the
//! first iteration not met). Rollbacks are not cancellable: the caller decides whether a second
//! signal kills the process.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::experiment::{Activity, Configuration, Experiment, Hypothesis, Provider};
use crate::provider;

/// When the steady-state hypothesis is checked (Chaos Toolkit's `--hypothesis-strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HypothesisStrategy {
    /// Before and after the method.
    #[default]
    Default,
    BeforeMethodOnly,
    AfterMethodOnly,
    DuringMethodOnly,
    /// Before, during and after the method.
    Continuously,
}

impl HypothesisStrategy {
    pub const NAMES: [&'static str; 5] = [
        "default",
        "before-method-only",
        "after-method-only",
        "during-method-only",
        "continuously",
    ];

    fn before(self) -> bool {
        matches!(self, Self::Default | Self::BeforeMethodOnly | Self::Continuously)
    }

    fn during(self) -> bool {
        matches!(self, Self::DuringMethodOnly | Self::Continuously)
    }

    fn after(self) -> bool {
        matches!(self, Self::Default | Self::AfterMethodOnly | Self::Continuously)
    }
}

impl std::str::FromStr for HypothesisStrategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "default" => Self::Default,
            "before-method-only" => Self::BeforeMethodOnly,
            "after-method-only" => Self::AfterMethodOnly,
            "during-method-only" => Self::DuringMethodOnly,
            // Chaos Toolkit still accepts its old misspelling, with a warning.
            "continuously" | "continously" => Self::Continuously,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown hypothesis strategy '{other}' (one of: {})",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }
}

/// How a run checks its hypothesis; [`Options::default`] is Chaos Toolkit's default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    pub strategy: HypothesisStrategy,
    /// Pause between two iterations of the hypothesis during the method.
    pub frequency: Duration,
    /// Stop the method and fail the run the first time the hypothesis is not met during it.
    pub fail_fast: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            strategy: HypothesisStrategy::Default,
            frequency: Duration::from_secs(1),
            fail_fast: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Completed,
    Failed,
    Aborted,
    Interrupted,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    Failed,
}

/// One activity's execution.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Run {
    pub activity: Activity,
    pub output: Value,
    pub status: RunStatus,
    pub start: String,
    pub end: Option<String>,
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_met: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SteadyState {
    pub steady_state_met: Option<bool>,
    pub probes: Vec<Run>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct SteadyStates {
    pub before: Option<SteadyState>,
    pub after: Option<SteadyState>,
    pub during: Vec<SteadyState>,
}

/// The journal, in Chaos Toolkit's shape (`coffer-chaos-version` where it has `chaoslib-version`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Journal {
    #[serde(rename = "coffer-chaos-version")]
    pub version: String,
    pub platform: String,
    pub node: String,
    pub experiment: Experiment,
    pub start: String,
    pub end: String,
    pub duration: f64,
    pub status: Status,
    pub deviated: bool,
    pub steady_states: SteadyStates,
    pub run: Vec<Run>,
    pub rollbacks: Vec<Run>,
}

impl Journal {
    /// The process exit status for this run: 0 only when completed and not deviated.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.status != Status::Completed || self.deviated)
    }
}

/// Runs `experiment` with the default [`Options`]; `cancel` resolving interrupts it (the
/// rollbacks still run).
pub async fn run(
    experiment: &Experiment,
    config: &Configuration,
    cancel: impl Future<Output = ()>,
) -> Journal {
    run_with(experiment, config, &Options::default(), cancel).await
}

/// Runs `experiment` with `options`; `cancel` resolving interrupts it (the rollbacks still run).
pub async fn run_with(
    experiment: &Experiment,
    config: &Configuration,
    options: &Options,
    cancel: impl Future<Output = ()>,
) -> Journal {
    let started = Instant::now();
    let mut journal = Journal {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        platform: platform(),
        node: node(),
        experiment: experiment.clone(),
        start: now(),
        end: String::new(),
        duration: 0.0,
        status: Status::Completed,
        deviated: false,
        steady_states: SteadyStates::default(),
        run: Vec::new(),
        rollbacks: Vec::new(),
    };
    let interrupted = tokio::select! {
        biased;
        () = cancel => true,
        () = body(experiment, config, options, &mut journal) => false,
    };
    if interrupted {
        journal.status = Status::Interrupted;
    }
    for activity in &experiment.rollbacks {
        sequential(activity, config, &mut journal.rollbacks).await;
    }
    journal.end = now();
    journal.duration = started.elapsed().as_secs_f64();
    journal
}

async fn body(
    experiment: &Experiment,
    config: &Configuration,
    options: &Options,
    journal: &mut Journal,
) {
    let hypothesis = experiment.steady_state_hypothesis.as_ref().filter(|h| !h.probes.is_empty());
    if let Some(h) = hypothesis.filter(|_| options.strategy.before()) {
        let state = journal.steady_states.before.insert(SteadyState::default());
        if !hypothesis_holds(&h.probes, config, state).await {
            // The system was not in its steady state to begin with: the experiment proved
            // nothing, and a CI job running it must not pass (see the module header).
            journal.status = Status::Failed;
            return;
        }
    }

    match hypothesis.filter(|_| options.strategy.during()) {
        None => journal.status = method(experiment, config, &mut journal.run).await,
        Some(h) => {
            let (status, met) = {
                let (stop, stopped) = watch::channel(false);
                let during = &mut journal.steady_states.during;
                let method = method(experiment, config, &mut journal.run);
                let continuous = continuously(h, config, options, stopped, during);
                tokio::pin!(method, continuous);
                tokio::select! {
                    status = &mut method => {
                        // `continuous` holds the receiver until it returns: this cannot fail.
                        let _ = stop.send(true);
                        (status, continuous.await)
                    }
                    // Only fail-fast returns before the method ends; dropping the method (at
                    // the end of this block) kills what it runs, as a cancellation does.
                    met = &mut continuous => (Status::Failed, met),
                }
            };
            journal.status = status;
            if !met {
                journal.deviated = true;
                if options.fail_fast {
                    journal.status = Status::Failed;
                    for run in journal.run.iter_mut().filter(|r| r.end.is_none()) {
                        run.exception = Some(vec![FAIL_FAST.to_owned()]);
                    }
                }
            }
        }
    }
    if journal.status != Status::Completed {
        return;
    }

    if let Some(h) = hypothesis.filter(|_| options.strategy.after()) {
        let state = journal.steady_states.after.insert(SteadyState::default());
        if !hypothesis_holds(&h.probes, config, state).await {
            journal.deviated = true;
            journal.status = gate_status(state);
        }
    }
}

const FAIL_FAST: &str =
    "stopped: the steady-state hypothesis was not met during the method (fail fast)";

/// The method: `completed`, or why it was not.
async fn method(experiment: &Experiment, config: &Configuration, runs: &mut Vec<Run>) -> Status {
    let mut status = Status::Completed;
    let mut background = JoinSet::new();
    for activity in &experiment.method {
        if activity.background {
            let index = runs.len();
            runs.push(interrupted_run(activity));
            let (activity, config) = (activity.clone(), config.clone());
            background.spawn(async move {
                pause(&activity, "before", &config).await;
                let run = call(&activity, &config).await;
                pause(&activity, "after", &config).await;
                (index, run)
            });
        } else if sequential(activity, config, runs).await == RunStatus::Failed {
            status = Status::Failed;
            break;
        }
    }
    while let Some(done) = background.join_next().await {
        match done {
            Ok((index, run)) => {
                if run.status == RunStatus::Failed && status == Status::Completed {
                    status = Status::Failed;
                }
                runs[index] = run;
            }
            Err(_) => status = Status::Aborted,
        }
    }
    status
}

/// The hypothesis over and over until `stopped` turns true, recording each iteration in
/// `during`. Returns whether every iteration was met; with `fail_fast`, returns at the first
/// that was not.
async fn continuously(
    hypothesis: &Hypothesis,
    config: &Configuration,
    options: &Options,
    mut stopped: watch::Receiver<bool>,
    during: &mut Vec<SteadyState>,
) -> bool {
    let mut all_met = true;
    loop {
        let mut state = SteadyState::default();
        let met = hypothesis_holds(&hypothesis.probes, config, &mut state).await;
        during.push(state);
        all_met &= met;
        if !met && options.fail_fast {
            return false;
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return all_met,
            () = tokio::time::sleep(options.frequency) => {}
        }
    }
}

/// `failed` when a probe could not run, `completed` when one was out of tolerance.
fn gate_status(state: &SteadyState) -> Status {
    if state.probes.iter().any(|p| p.status == RunStatus::Failed) {
        Status::Failed
    } else {
        Status::Completed
    }
}

/// Runs the probes in order, stopping at the first that fails or is out of tolerance.
async fn hypothesis_holds(
    probes: &[Activity],
    config: &Configuration,
    state: &mut SteadyState,
) -> bool {
    for probe in probes {
        let status = sequential(probe, config, &mut state.probes).await;
        let Some(run) = state.probes.last_mut() else {
            return false;
        };
        let met = status == RunStatus::Succeeded
            && probe.tolerance.as_ref().is_some_and(|t| t.check(&run.output, config));
        run.tolerance_met = Some(met);
        if !met {
            state.steady_state_met = Some(false);
            return false;
        }
    }
    state.steady_state_met = Some(true);
    true
}

/// Pause before, the call (recorded as interrupted until it returns), pause after.
async fn sequential(activity: &Activity, config: &Configuration, runs: &mut Vec<Run>) -> RunStatus {
    pause(activity, "before", config).await;
    let index = runs.len();
    runs.push(interrupted_run(activity));
    let run = call(activity, config).await;
    let status = run.status;
    runs[index] = run;
    pause(activity, "after", config).await;
    status
}

fn interrupted_run(activity: &Activity) -> Run {
    Run {
        activity: activity.clone(),
        output: Value::Null,
        status: RunStatus::Failed,
        start: now(),
        end: None,
        duration: None,
        exception: Some(vec!["interrupted".to_owned()]),
        tolerance_met: None,
    }
}

async fn call(activity: &Activity, config: &Configuration) -> Run {
    let start = now();
    let clock = Instant::now();
    let result = match &activity.provider {
        Provider::Http(p) => provider::run_http(p, config).await,
        Provider::Process(p) => provider::run_process(p, config).await,
        Provider::Coffer(p) => crate::coffer_provider::run(p, config).await,
    };
    let (output, status, exception) = match result {
        Ok(output) => (output, RunStatus::Succeeded, None),
        Err(e) => (Value::Null, RunStatus::Failed, Some(vec![e])),
    };
    Run {
        activity: activity.clone(),
        output,
        status,
        start,
        end: Some(now()),
        duration: Some(clock.elapsed().as_secs_f64()),
        exception,
        tolerance_met: None,
    }
}

async fn pause(activity: &Activity, when: &str, config: &Configuration) {
    let Some(pauses) = &activity.pauses else {
        return;
    };
    let seconds = match pauses.get(when).map(|v| config.substitute(v)) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    if let Some(d) = seconds.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
        tokio::time::sleep(d).await;
    }
}

/// Python's `datetime.now(UTC).isoformat()`: `2026-01-02T03:04:05.678901+00:00` (always six
/// digits, where Python drops a zero fraction: a reader of either form reads both).
fn now() -> String {
    let t = coffer_time::format_rfc3339(SystemTime::now(), coffer_time::Fraction::Micros);
    format!("{}+00:00", t.trim_end_matches('Z'))
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Like Python's `platform.platform()`: `Linux-6.1.0-x86_64`.
fn platform() -> String {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        other => other,
    };
    match read_trimmed("/proc/sys/kernel/osrelease") {
        Some(release) => format!("{os}-{release}-{}", std::env::consts::ARCH),
        None => format!("{os}-{}", std::env::consts::ARCH),
    }
}

fn node() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_python_isoformat() {
        let t = now();
        assert_eq!(t.len(), "2026-01-02T03:04:05.678901+00:00".len(), "{t}");
        assert!(t.ends_with("+00:00") && t.as_bytes()[10] == b'T', "{t}");
    }
}
