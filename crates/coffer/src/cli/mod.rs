//! The command line. Flags follow `vault`'s habits: single-dash long flags (`-format=json`),
//! `COFFER_ADDR`/`COFFER_TOKEN` with `VAULT_*` fallbacks, `k=v`, `k=@file` and `-` for stdin.
//!
//! One module per noun (`kv`, `token`, `mounts`...), each owning its flags and what its commands
//! do; all of them reach the server through `client` and print through `output`, and none uses
//! another, so the modules here form no cycle. This file holds the command tree and hands each
//! command to its module.

mod agent;
mod args;
mod audit;
mod chaos;
mod client;
mod events;
mod generic;
mod kv;
mod lease;
mod login;
mod mounts;
mod operator;
mod output;
mod policy;
mod server;
mod token;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use client::{Global, explain};

#[derive(Parser, Debug)]
#[command(
    name = "coffer",
    version,
    about = "Coffer: a zero-trust secrets manager for containerized workloads",
    long_about = "Coffer keeps secrets in sealed, encrypted storage and hands each workload only what its \
policy allows. One binary is the server (`coffer server`), the agent (`coffer agent`) and this client.\n\n\
The client reads COFFER_ADDR (or VAULT_ADDR), COFFER_TOKEN (or VAULT_TOKEN, or the token saved by \
`coffer login`) and COFFER_CACERT (or VAULT_CACERT). Flags may be written with one dash, as with vault: \
-format=json."
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a Coffer server
    Server(server::ServerArgs),
    /// Run the agent: log in, render secrets into files or an app's environment, keep them fresh
    Agent(agent::AgentArgs),
    /// Chaos experiments in Chaos Toolkit's format: `coffer chaos run experiment.json`
    #[command(subcommand)]
    Chaos(chaos::ChaosCmd),
    /// Operator tasks: init, unseal, seal, rotate, key-status
    #[command(subcommand)]
    Operator(operator::OperatorCmd),
    /// Print the seal status of the server (exit 0 unsealed, 2 sealed, 1 error)
    Status,
    /// Log in (with a token, or an auth method: -method=approle|jwt|kubernetes|cert) and save the token
    Login(login::LoginArgs),
    /// Unwrap a wrapped response (the current token, or TOKEN); works only once per token
    Unwrap {
        /// The wrapping token; `-` reads it from stdin
        token: Option<String>,
    },
    /// Create, look up, renew and revoke tokens
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Write, read, list, delete and format ACL policies
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Enable, disable, list and tune secrets engines
    #[command(subcommand)]
    Secrets(mounts::MountCmd),
    /// Enable, disable and list auth methods
    #[command(subcommand)]
    Auth(mounts::MountCmd),
    /// Audit devices, and `coffer audit verify FILE` to check a log's hash chain
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Key/value secrets, versioned (kv v2) or not (v1): put, get, patch, delete, metadata...
    #[command(subcommand)]
    Kv(kv::KvCmd),
    /// Look up, renew and revoke the leases of dynamic secrets (and look up and revoke tokens')
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Subscribe to event notifications (secret changes), one JSON object a line
    #[command(subcommand)]
    Events(events::EventsCmd),
    /// Read data at PATH (e.g. `coffer read secret/app`)
    Read(generic::PathArgs),
    /// Write data to PATH: `coffer write secret/app password=s3cr3t cert=@cert.pem`, or `-` for a JSON object on stdin
    Write(generic::WriteArgs),
    /// Delete data at PATH
    Delete(generic::PathArgs),
    /// List the keys below PATH
    List(generic::PathArgs),
    /// Print a shell completion script: `coffer completion bash > /etc/bash_completion.d/coffer`
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

pub(crate) fn main() -> ExitCode {
    let typed: Vec<_> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(args::normalize(typed.iter().cloned())) {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            eprintln!("{}", args::as_typed(e.render().to_string().trim_end(), &typed));
            return ExitCode::from(1);
        }
        Err(e) => {
            // --help and --version: clap prints them, on stdout.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Command::Completion { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut script);
        crate::stdio::stdout_bytes(&script);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", explain(&e));
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Server(a) => server::run(a).await,
        Command::Agent(a) => agent::run(a).await,
        Command::Chaos(c) => chaos::run(g, c).await,
        Command::Operator(op) => operator::run(g, op).await,
        Command::Status => operator::status(g).await,
        Command::Login(a) => login::run(g, a).await,
        Command::Unwrap { token } => token::unwrap(g, token).await,
        Command::Token(t) => token::run(g, t).await,
        Command::Policy(p) => policy::run(g, p).await,
        Command::Secrets(s) => mounts::run(g, s, "mounts", "secrets engine").await,
        Command::Auth(a) => mounts::run(g, a, "auth", "auth method").await,
        Command::Kv(k) => kv::run(g, k).await,
        Command::Audit(a) => audit::run(g, a).await,
        Command::Lease(l) => lease::run(g, l).await,
        Command::Events(e) => events::run(g, e).await,
        Command::Read(a) => generic::read(g, a).await,
        Command::List(a) => generic::list(g, a).await,
        Command::Delete(a) => generic::delete(g, a).await,
        Command::Write(a) => generic::write(g, a).await,
        // Answered in `main`, before a runtime is started.
        Command::Completion { .. } => Ok(ExitCode::SUCCESS),
    }
}
