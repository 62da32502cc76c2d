//! `coffer audit`: enable, disable and list audit devices, and verify a log's hash chain.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Global, client, parse_pairs};
use super::output::{cell, print_value};

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Enable a device: `coffer audit enable file file_path=/var/log/coffer/audit.log`
    Enable {
        /// `file` or `socket`
        kind: String,
        /// Device options as key=value: file_path, log_raw, hmac_accessor (file); address, socket_type (socket)
        options: Vec<String>,
        /// Where to enable it (default: the type name)
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Disable a device
    Disable {
        /// The device's path, e.g. file/
        path: String,
    },
    /// List enabled devices
    List {
        #[arg(long)]
        detailed: bool,
    },
    /// Check a file device's log: every entry unaltered, none missing, none reordered.
    /// Exit status 0 when intact, 1 when broken (the first break is reported with its line).
    Verify {
        /// The log file a file device writes (its file_path)
        file: std::path::PathBuf,
        /// Accept a log that continues a chain begun in an earlier (rotated) file
        #[arg(long = "from-middle")]
        from_middle: bool,
        /// Also ask the server where this device's chain stands (needs a token with sudo on
        /// sys/audit), so entries removed from the end of the log are found too
        #[arg(long, value_name = "PATH")]
        device: Option<String>,
    },
}

pub(crate) async fn run(g: &Global, cmd: AuditCmd) -> Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { file, from_middle, device } => {
            // The server's head first: entries written after it can only make the log longer.
            let expect = match &device {
                Some(path) => {
                    let ans = client(g)?.read("sys/audit").await?;
                    let key = format!("{}/", path.trim_matches('/'));
                    let chain = ans
                        .data()
                        .and_then(|d| d.get(&key))
                        .and_then(|d| d.get("chain"))
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no audit device is enabled at {key:?}"))?;
                    let seq = chain.get("seq").and_then(Value::as_u64).unwrap_or(0);
                    let hash = chain.get("hash").and_then(Value::as_str).unwrap_or("").to_owned();
                    Some((seq, hash))
                }
                None => None,
            };
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let expect_ref = expect.as_ref().map(|(s, h)| (*s, h.as_str()));
            match coffer_core::audit::verify_chain_against(&text, from_middle, expect_ref) {
                Ok(head) => {
                    if g.format.structured() {
                        print_value(
                            &json!({
                                "intact": true, "entries": head.entries, "first_seq": head.first_seq,
                                "last_seq": head.last_seq, "last_hash": head.last_hash,
                            }),
                            g.format,
                        )?;
                    } else {
                        println!(
                            "OK: {} entries, chain intact (entries {}..{}, last hash {})",
                            head.entries, head.first_seq, head.last_seq, head.last_hash
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(b) => {
                    if g.format.structured() {
                        print_value(
                            &json!({ "intact": false, "line": b.line, "reason": b.reason }),
                            g.format,
                        )?;
                    } else {
                        eprintln!("FAILED: {}: line {}: {}", file.display(), b.line, b.reason);
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCmd::Enable { kind, options, path, description } => {
            let path = path.unwrap_or_else(|| kind.clone());
            let path = path.trim_matches('/').to_owned();
            let body = json!({
                "type": kind,
                "description": description.unwrap_or_default(),
                "options": parse_pairs(&options)?,
            });
            client(g)?.write(&format!("sys/audit/{path}"), &body).await?;
            println!("Success! Enabled the {kind} audit device at: {path}/");
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Disable { path } => {
            let path = path.trim_matches('/').to_owned();
            client(g)?.delete(&format!("sys/audit/{path}")).await?;
            println!("Success! Disabled audit device (if it was enabled) at: {path}/");
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::List { detailed } => {
            let ans = client(g)?.read("sys/audit").await?;
            let b = ans.body.unwrap_or(Value::Null);
            let devices = b.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
            if g.format.structured() {
                print_value(&devices, g.format)?;
            } else if devices.is_empty() {
                println!("No audit devices are enabled.");
            } else {
                println!(
                    "{:<16}{:<10}{}",
                    "Path",
                    "Type",
                    if detailed { "Options" } else { "Description" }
                );
                for (p, d) in &devices {
                    let last = if detailed {
                        cell(d.get("options").unwrap_or(&Value::Null))
                    } else {
                        cell(d.get("description").unwrap_or(&Value::Null))
                    };
                    println!(
                        "{:<16}{:<10}{}",
                        p,
                        cell(d.get("type").unwrap_or(&Value::Null)),
                        last
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
