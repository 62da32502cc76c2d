//! `coffer detect`: recent detection alerts, the pipeline's counters, and the rules
//! (`sys/detect/*`, docs/detect.md).

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Global, client, parse_write_data, print_answer};
use super::output::{cell, print_value};

#[derive(Subcommand, Debug)]
pub(crate) enum DetectCmd {
    /// Recent alerts, newest first, with the pipeline's counters (dropped included)
    Alerts {
        /// How many alerts at most
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Whether detection is on, the rules running, and the pipeline's counters
    Status,
    /// List, read, write and delete detection rules (sudo)
    #[command(subcommand)]
    Rules(RulesCmd),
}

#[derive(Subcommand, Debug)]
pub(crate) enum RulesCmd {
    /// The rules' names, types, sources and whether they run
    List,
    /// One rule, with every parameter and its default filled in
    Read {
        /// The rule's name
        name: String,
    },
    /// Write a rule: `coffer detect rules write honey type=honeytoken paths=secret/data/honey/*
    /// actions=audit,revoke_token`, or `-` for a JSON object on stdin
    Write {
        /// The rule's name
        name: String,
        /// key=value, key=@file, or a lone `-` for a JSON object on stdin
        data: Vec<String>,
    },
    /// Delete a rule written through the API (a config file's rule stays)
    Delete {
        /// The rule's name
        name: String,
    },
}

/// The counters line the alert table ends with: what was dropped is never left unsaid.
fn counters_line(s: &Value) -> String {
    let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
    format!(
        "received {}, processed {}, dropped {} (queue full {} time(s)), queued {}/{}, alerts {}, webhooks sent {} failed {} dropped {}",
        n("received"),
        n("processed"),
        n("dropped"),
        n("queue_full_episodes"),
        n("queued"),
        n("queue_capacity"),
        n("alerts"),
        n("webhook_sent"),
        n("webhook_failed"),
        n("webhook_dropped"),
    )
}

pub(crate) async fn run(g: &Global, cmd: DetectCmd) -> Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        DetectCmd::Alerts { limit } => {
            let q = [("limit", limit.to_string())];
            let ans = c.request_with_query("GET", "sys/detect/alerts", &q, None).await?;
            let data = Value::Object(ans.data().cloned().unwrap_or_default());
            if g.format.structured() {
                print_value(&data, g.format)?;
                return Ok(ExitCode::SUCCESS);
            }
            let alerts = data.get("alerts").and_then(Value::as_array).cloned().unwrap_or_default();
            if alerts.is_empty() {
                println!("No alerts.");
            } else {
                println!("{:<32}{:<14}{:<24}{:<12}Output", "Time", "Priority", "Rule", "Actions");
                for a in &alerts {
                    let actions: Vec<String> = a
                        .get("actions")
                        .and_then(Value::as_array)
                        .map(|v| {
                            v.iter()
                                .map(|x| {
                                    let ok = x["done"].as_bool().unwrap_or(false);
                                    format!("{}{}", cell(&x["action"]), if ok { "" } else { "!" })
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    println!(
                        "{:<32}{:<14}{:<24}{:<12}{}",
                        cell(&a["time"]),
                        cell(&a["priority"]),
                        cell(&a["rule"]),
                        if actions.is_empty() { "-".to_owned() } else { actions.join(",") },
                        cell(&a["output"])
                    );
                }
                println!("(an action marked ! failed; -format=json shows why)");
            }
            println!("{}", counters_line(data.get("stats").unwrap_or(&Value::Null)));
            Ok(ExitCode::SUCCESS)
        }
        DetectCmd::Status => {
            let ans = c.read("sys/detect/status").await?;
            let data = Value::Object(ans.data().cloned().unwrap_or_default());
            if g.format.structured() {
                print_value(&data, g.format)?;
            } else {
                println!(
                    "Detection {}; {} rule(s), {} enabled",
                    if data["enabled"].as_bool().unwrap_or(false) { "on" } else { "off" },
                    cell(&data["rules"]),
                    cell(&data["rules_enabled"])
                );
                println!("{}", counters_line(&data["stats"]));
            }
            Ok(ExitCode::SUCCESS)
        }
        DetectCmd::Rules(RulesCmd::List) => {
            let ans = match c.list("sys/detect/rules").await {
                Ok(a) => a,
                Err(coffer_api::Error::Api { status: 404, errors, .. }) if errors.is_empty() => {
                    if g.format.structured() {
                        print_value(&json!([]), g.format)?;
                    } else {
                        println!("No detection rules.");
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e.into()),
            };
            let data = Value::Object(ans.data().cloned().unwrap_or_default());
            if g.format.structured() {
                print_value(&data, g.format)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<28}{:<16}{:<9}Enabled", "Name", "Type", "Source");
            let info = &data["key_info"];
            for k in data["keys"].as_array().cloned().unwrap_or_default() {
                let name = cell(&k);
                let i = &info[&name];
                println!(
                    "{:<28}{:<16}{:<9}{}",
                    name,
                    cell(&i["type"]),
                    cell(&i["source"]),
                    cell(&i["enabled"])
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DetectCmd::Rules(RulesCmd::Read { name }) => {
            let ans = c.read(&format!("sys/detect/rules/{name}")).await?;
            print_answer(g, ans.body.as_ref())
        }
        DetectCmd::Rules(RulesCmd::Write { name, data }) => {
            let body = parse_write_data(&data)?;
            if body.is_empty() {
                bail!(
                    "a rule needs at least its type: type=honeytoken|login_failures|token_cidr|many_paths|image_digest|rate_baseline"
                );
            }
            c.write(&format!("sys/detect/rules/{name}"), &Value::Object(body)).await?;
            println!("Success! Wrote detection rule {name}");
            Ok(ExitCode::SUCCESS)
        }
        DetectCmd::Rules(RulesCmd::Delete { name }) => {
            c.delete(&format!("sys/detect/rules/{name}")).await?;
            println!("Success! Deleted detection rule {name} (if it existed)");
            Ok(ExitCode::SUCCESS)
        }
    }
}
