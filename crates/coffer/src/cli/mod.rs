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
mod capabilities;
mod chaos;
mod ci;
mod client;
mod detect;
mod events;
mod generic;
mod keyops;
mod kv;
mod lease;
mod login;
mod mounts;
mod operator;
mod output;
mod policy;
mod prompt;
mod scan;
mod server;
mod token;
mod transit;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches as _, Parser, Subcommand};

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
    #[command(flatten, next_help_heading = "Client options")]
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
    /// CI steps: `coffer ci bootstrap -role=NAME -image=REPO@sha256:...` mints the wrapped,
    /// image-bound bootstrap credential of a deployment
    #[command(subcommand)]
    Ci(ci::CiCmd),
    /// Operator tasks: init, unseal, seal, rotate, key-status, generate-root, rekey
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
    /// Encrypt or decrypt a file or stdin of any size with a transit key (streamed through a data key)
    #[command(subcommand)]
    Transit(transit::TransitCmd),
    /// Look up, renew and revoke the leases of dynamic secrets (and look up and revoke tokens')
    #[command(subcommand)]
    Lease(lease::LeaseCmd),
    /// Subscribe to event notifications (secret changes), one JSON object a line
    #[command(subcommand)]
    Events(events::EventsCmd),
    /// Find secrets in files, git history and image archives, and ask the server which are live
    /// (keyed hashes only); -respond revokes or rotates them. Exit 1 when a live leak is found, 64
    /// on a usage error
    #[command(long_about = scan::LONG_ABOUT, after_help = scan::AFTER_HELP)]
    Scan(scan::ScanArgs),
    /// Detection rules over the audit stream: recent alerts, counters, and the rules
    #[command(subcommand)]
    Detect(detect::DetectCmd),
    /// Read data at PATH (e.g. `coffer read secret/app`)
    Read(generic::PathArgs),
    /// Write data to PATH: `coffer write secret/app password=s3cr3t cert=@cert.pem`, or `-` for a JSON object on stdin
    Write(generic::WriteArgs),
    /// Delete data at PATH
    Delete(generic::PathArgs),
    /// List the keys below PATH
    List(generic::PathArgs),
    /// Print the path framework's help for PATH (routes, fields, their descriptions): `coffer
    /// path-help secret/` or `coffer path-help secret/data/app`
    PathHelp(generic::PathHelpArgs),
    /// Print the token this client uses (COFFER_TOKEN, VAULT_TOKEN, or the one `coffer login` saved)
    #[command(subcommand)]
    Print(PrintCmd),
    /// Print the version of this binary
    Version,
    /// Print a shell completion script: `coffer completion bash > /etc/bash_completion.d/coffer`
    Completion {
        /// The shell the script is for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Commands that are not clients of a server: their help does not list the client options.
const NOT_CLIENTS: [&str; 5] = ["server", "agent", "completion", "version", "print"];

/// The command tree as parsed and documented: [`Cli`]'s, with the client options hidden from
/// the commands that are not clients. Clap has no way to keep a global flag out of one
/// subcommand, but does not propagate it where an argument of that id exists: those commands
/// get a hidden, local copy (which they ignore, as before).
fn command() -> clap::Command {
    client_flags_hidden(Cli::command())
}

/// The client flags, accepted but hidden (and meaningless) on the commands that are no client.
fn client_flags_hidden(cmd: clap::Command) -> clap::Command {
    let client_flags: Vec<clap::Arg> =
        cmd.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    cmd.mut_subcommands(|mut sub| {
        if NOT_CLIENTS.contains(&sub.get_name()) {
            for a in &client_flags {
                sub = sub.arg(a.clone().global(false).hide(true));
            }
        }
        // `coffer scan -format` has a value of its own (sarif): the global flag is kept out of it
        // the same way, under a long name nobody types, so the two do not collide.
        // -field and -wrap-ttl mean nothing to it and are hidden the same way.
        if sub.get_name() == "scan" {
            for a in &client_flags {
                match a.get_id().as_str() {
                    "format" => {
                        sub =
                            sub.arg(a.clone().global(false).hide(true).long("client-output-format"))
                    }
                    "field" | "wrap_ttl" => sub = sub.arg(a.clone().global(false).hide(true)),
                    _ => {}
                }
            }
        }
        sub
    })
}

/// `coffer agent ...` parsed by a tree that holds the agent's command alone, or `None` for
/// anything else and for whatever that tree does not accept, which [`command`]'s full tree then
/// parses (and explains, for errors and help) as always. Why: the agent is the process that
/// stays, in every pod, and the full tree of some hundred commands takes about 700 KiB of heap
/// to build, which the allocator keeps after it is freed (docs/performance.md, the agent
/// section). What the small tree accepts, the full one accepts with the same meaning: the same
/// `AgentArgs` under the same name, beside the same client flags.
fn agent_only(args: &[std::ffi::OsString]) -> Option<Cli> {
    if args.get(1).is_none_or(|a| a != "agent") {
        return None;
    }
    use clap::Args as _;
    let agent = agent::AgentArgs::augment_args(clap::Command::new("agent"));
    let tree = client_flags_hidden(
        Global::augment_args(clap::Command::new("coffer"))
            .subcommand_required(true)
            .subcommand(agent),
    );
    let m = tree.try_get_matches_from(args).ok()?;
    Cli::from_arg_matches(&m).ok()
}

#[derive(Subcommand, Debug)]
pub(crate) enum PrintCmd {
    /// The token this client sends
    Token,
}

pub(crate) fn main() -> ExitCode {
    let typed: Vec<_> = std::env::args_os().collect();
    let normalized = args::normalize(typed.iter().cloned());
    let parsed = match agent_only(&normalized) {
        Some(cli) => Ok(cli),
        None => command().try_get_matches_from(normalized).and_then(|m| Cli::from_arg_matches(&m)),
    };
    let cli = match parsed {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            eprintln!("{}", args::as_typed(e.render().to_string().trim_end(), &typed));
            // `coffer scan` promises CI a usage error distinct from "a leak was found" (1).
            if first_word(&typed) == Some("scan") {
                return ExitCode::from(scan::EXIT_USAGE);
            }
            return ExitCode::from(1);
        }
        Err(e) => {
            // --help and --version: clap prints them, on stdout.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Command::Version = cli.command {
        println!("Coffer v{}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Command::Print(PrintCmd::Token) = cli.command {
        return login::print_token();
    }
    if let Command::Completion { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command(), "coffer", &mut script);
        crate::stdio::stdout_bytes(&script);
        return ExitCode::SUCCESS;
    }
    // The agent waits on the network, timers and its children nearly all the time, and what it
    // computes between (rendering, opening a sealed answer) is short: one thread serves it as
    // well as many. A worker thread per core would each cost a stack and a malloc arena in a
    // process meant to sit in every pod (docs/performance.md, the agent section).
    let mut builder = match cli.command {
        Command::Agent(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

/// The subcommand typed: the first argument that is not a flag. (A global flag given before it
/// with its value as a separate word would be taken for it; `-flag=value` is not.)
fn first_word(typed: &[std::ffi::OsString]) -> Option<&str> {
    typed.iter().skip(1).filter_map(|a| a.to_str()).find(|a| !a.starts_with('-'))
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
        Command::Ci(c) => ci::run(g, c).await,
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
        Command::Transit(t) => transit::run(g, t).await,
        Command::Lease(l) => lease::run(g, l).await,
        Command::Events(e) => events::run(g, e).await,
        Command::Detect(d) => detect::run(g, d).await,
        Command::Read(a) => generic::read(g, a).await,
        Command::List(a) => generic::list(g, a).await,
        Command::Delete(a) => generic::delete(g, a).await,
        Command::Write(a) => generic::write(g, a).await,
        Command::PathHelp(a) => generic::path_help(g, a).await,
        Command::Scan(a) => scan::run(g, a).await,
        // Answered in `main`, before a runtime is started.
        Command::Completion { .. } | Command::Version | Command::Print(_) => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_positionals() {
            if a.get_help().is_none() {
                out.push(format!("{path} <{}>", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_positional_argument_has_a_description() {
        let mut missing = Vec::new();
        walk(&command(), "coffer", &mut missing);
        assert!(missing.is_empty(), "positional arguments without help:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_agent_only_tree_parses_as_the_full_one_or_leaves_it_to_it() {
        let os = |args: &[&str]| args::normalize(args.iter().map(std::ffi::OsString::from));
        let full = |args: &[&str]| {
            let m = command().try_get_matches_from(os(args)).expect("the full tree parses it");
            format!("{:?}", Cli::from_arg_matches(&m))
        };
        for args in [
            &["coffer", "agent", "-config", "a.hcl"][..],
            &["coffer", "agent", "--config=a.hcl", "-check-config"],
            &["coffer", "agent", "-log-level=debug", "-config", "a.hcl"],
            &["coffer", "agent", "-config", "a.hcl", "-address=http://x:1", "-format=json"],
        ] {
            let small = agent_only(&os(args)).unwrap_or_else(|| panic!("{args:?} not parsed"));
            assert_eq!(format!("{:?}", Ok::<_, clap::Error>(small)), full(args), "{args:?}");
        }
        for args in [
            &["coffer", "agent", "--help"][..],
            &["coffer", "agent", "-h"],
            &["coffer", "agent"],
            &["coffer", "agent", "-config"],
            &["coffer", "agent", "-config", "a.hcl", "-bogus"],
            &["coffer", "agent", "-config", "a.hcl", "extra"],
            &["coffer", "-address=http://x:1", "agent", "-config", "a.hcl"],
            &["coffer", "kv", "get", "secret/x"],
            &["coffer"],
        ] {
            assert!(agent_only(&os(args)).is_none(), "{args:?} parsed by the agent-only tree");
        }
    }

    /// The help text clap prints for `args`, as a user gets it.
    fn help(args: &[&str]) -> String {
        let e = command().try_get_matches_from(args).expect_err("help is an early exit");
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        e.render().to_string()
    }

    #[test]
    fn scan_help_explains_and_has_its_own_format() {
        let scan = help(&["coffer", "scan", "--help"]);
        assert!(scan.contains("sarif") && scan.contains("Exit status: 0"), "{scan}");
        assert!(scan.contains("--ca-cert"), "{scan}");
        for flag in ["--field", "--wrap-ttl", "--client-output-format"] {
            assert!(!scan.contains(flag), "{flag} in:\n{scan}");
        }
        let parsed = command()
            .try_get_matches_from(["coffer", "scan", "--format=sarif", "."])
            .and_then(|m| Cli::from_arg_matches(&m))
            .expect("parses");
        assert!(matches!(parsed.command, Command::Scan(_)));
        assert_eq!(parsed.global.format, output::Format::Table);
    }

    #[test]
    fn server_help_lists_no_client_option() {
        let server = help(&["coffer", "server", "--help"]);
        for flag in ["--field", "--wrap-ttl", "--client-cert", "--format", "--tls-skip-verify"] {
            assert!(!server.contains(flag), "{flag} in:\n{server}");
        }
        assert!(server.contains("--dev") && server.contains("--config"), "{server}");
        let read = help(&["coffer", "read", "--help"]);
        assert!(read.contains("Client options:") && read.contains("--field"), "{read}");
    }
}
