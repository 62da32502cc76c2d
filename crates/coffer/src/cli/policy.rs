//! `coffer policy`: write, read, list, delete and format ACL policies.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Global, client, print_answer};
use super::output::{cell, print_value};

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Upload a policy from a file (`-` for stdin)
    Write {
        /// The policy's name
        name: String,
        /// The policy file (HCL or JSON); `-` reads stdin
        file: String,
    },
    /// Print a policy
    Read {
        /// The policy's name
        name: String,
    },
    /// List policy names
    List,
    /// Delete a policy
    Delete {
        /// The policy's name
        name: String,
    },
    /// Check and reformat a policy file in place
    Fmt {
        /// The policy file to rewrite
        file: std::path::PathBuf,
    },
}

pub(super) async fn run(g: &Global, p: PolicyCmd) -> Result<ExitCode> {
    match p {
        PolicyCmd::Fmt { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let formatted = coffer_core::policy::format_hcl(&text)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            std::fs::write(&file, formatted)?;
            println!("Success! Formatted policy: {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Write { name, file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read policy file {file}"))?
            };
            client(g)?
                .write(&format!("sys/policies/acl/{name}"), &json!({ "policy": text }))
                .await?;
            println!("Success! Uploaded policy: {name}");
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Read { name } => {
            let ans =
                client(g)?.read(&format!("sys/policies/acl/{name}")).await.map_err(
                    |e| match e {
                        coffer_api::Error::Api { status: 404, .. } => {
                            anyhow!("no policy named {name:?}")
                        }
                        other => other.into(),
                    },
                )?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format.structured() || g.field.is_some() {
                return print_answer(g, Some(&b));
            }
            println!(
                "{}",
                b.get("data").and_then(|d| d.get("policy")).and_then(Value::as_str).unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::List => {
            let ans = client(g)?.list("sys/policies/acl").await?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format.structured() {
                print_value(
                    b.get("data").and_then(|d| d.get("keys")).unwrap_or(&Value::Null),
                    g.format,
                )?;
            } else if let Some(Value::Array(keys)) = b.get("data").and_then(|d| d.get("keys")) {
                for k in keys {
                    println!("{}", cell(k));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Delete { name } => {
            client(g)?.delete(&format!("sys/policies/acl/{name}")).await?;
            println!("Success! Deleted policy: {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
