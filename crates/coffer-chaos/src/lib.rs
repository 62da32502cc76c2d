//! Chaos experiments in Chaos Toolkit's format, run by Coffer.
//!
//! An experiment file written for `chaostoolkit` that uses the `http` and `process` providers
//! loads here unchanged, JSON or YAML ([`Experiment::from_file_text`]), resolves its
//! configuration the same way ([`Configuration::load`]), runs to a journal in Chaos Toolkit's
//! shape with its hypothesis strategies ([`run_with`]), and reads back as a summary and an HTML
//! report ([`report`]).
//!
//! Guarantees:
//! - Rollbacks run after every run that got past loading: completed, deviated, failed, or
//!   cancelled through the `cancel` future (the CLI wires SIGINT/SIGTERM to it).
//! - Anything this crate cannot honour (`python` providers, `probe` tolerances, `ref`
//!   activities, JSONPath filters/slices/unions) is refused when the experiment loads, never
//!   skipped while it runs.
//!
//! Differences from Chaos Toolkit, on purpose: rollbacks always run; a failed method activity
//! fails the run; a hypothesis not met before the method fails the run; one not met during the
//! method deviates it (see [`run_with`]); `expected_status` on http providers. Regexes use Rust's
//! syntax. JSONPath: see [`jsonpath`].
//!
//! Host-side faults (network partition, netem, kill and restart, the agent's cache) are in
//! [`host`], server-side faults (`sys/chaos/faults`) are driven through [`server`], probes
//! (server health, agent status, metrics, audit log) are in [`probe`]; each is a library
//! function taking serde arguments and returning JSON, a CLI command, and a `coffer` provider
//! function of experiments.
//!
//! Scheduling is the CLI's.

#![forbid(unsafe_code)]

pub mod coffer_provider;
mod experiment;
pub mod host;
pub mod jsonpath;
pub mod probe;
mod provider;
pub mod report;
mod run;
pub mod server;
pub mod time;
mod tolerance;

/// The wire types of server-side faults, for callers of [`server`].
pub use coffer_api::chaos;
pub use experiment::{
    Activity, ActivityKind, Configuration, Experiment, Format, HttpProvider, Hypothesis,
    ProcessProvider, Provider,
};
pub use run::{
    HypothesisStrategy, Journal, Options, Run, RunStatus, Status, SteadyState, SteadyStates, run,
    run_with,
};
pub use tolerance::Tolerance;

/// Why an experiment cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid experiment: {0}")]
    Invalid(String),
    #[error("configuration makes reference to an environment key that does not exist: {0}")]
    MissingEnv(String),
}
