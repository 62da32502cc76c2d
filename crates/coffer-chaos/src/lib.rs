//! Chaos experiments in Chaos Toolkit's format, run by Coffer.
//!
//! An experiment file written for `chaostoolkit` that uses the `http` and `process` providers
//! loads here unchanged ([`Experiment::from_json`]), resolves its configuration the same way
//! ([`Configuration::load`]), and runs to a journal in Chaos Toolkit's shape ([`run`]).
//!
//! Guarantees:
//! - Rollbacks run after every run that got past loading: completed, deviated, failed, or
//!   cancelled through the `cancel` future (the CLI wires SIGINT/SIGTERM to it).
//! - Anything this crate cannot honour (YAML, `python` providers, `probe` tolerances, `ref`
//!   activities, JSONPath filters/slices/unions) is refused when the experiment loads, never
//!   skipped while it runs.
//!
//! Differences from Chaos Toolkit, on purpose: rollbacks always run; a failed method activity
//! fails the run (see [`run`]'s module); `expected_status` on http providers. Regexes use Rust's
//! syntax. JSONPath: see [`jsonpath`].
//!
//! Host-side faults (network partition, netem, kill and restart, the agent's cache) are in
//! [`host`], probes (server health, agent status, metrics, audit log) in [`probe`]; both are
//! library functions taking serde arguments and returning JSON, and CLI commands.
//!
//! Not here yet: YAML, the `coffer` provider, server-side faults, the continuous hypothesis
//! (`steady_states.during`), reports, scheduling.

#![forbid(unsafe_code)]

mod experiment;
pub mod host;
pub mod jsonpath;
pub mod probe;
mod provider;
mod run;
pub mod time;
mod tolerance;

pub use experiment::{
    Activity, ActivityKind, Configuration, Experiment, HttpProvider, Hypothesis, ProcessProvider,
    Provider,
};
pub use run::{Journal, Run, RunStatus, Status, SteadyState, SteadyStates, run};
pub use tolerance::Tolerance;

/// Why an experiment cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid experiment: {0}")]
    Invalid(String),
    #[error("configuration makes reference to an environment key that does not exist: {0}")]
    MissingEnv(String),
}
