//! `coffer`: one binary that is the server, the command-line client and the agent.

#![forbid(unsafe_code)]

// First, so that its printing macros shadow std's everywhere below.
#[macro_use]
mod stdio;

mod cli;
mod cluster;
mod config;
mod http;
mod seal_transit;
mod server;
mod tls;
mod webhook;

fn main() -> std::process::ExitCode {
    cli::main()
}
