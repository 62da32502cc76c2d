//! `coffer secrets` and `coffer auth`: one mount-table command set, for secrets engines
//! (`sys/mounts`) and auth methods (`sys/auth`).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{Global, client, parse_pairs};
use super::output::{cell, fmt_duration, print_value};

/// One command set for both mount tables: `coffer secrets ...` (secrets engines, `sys/mounts`)
/// and `coffer auth ...` (auth methods, `sys/auth`).
#[derive(Subcommand, Debug)]
pub(crate) enum MountCmd {
    /// Enable a secrets engine (`coffer secrets enable -path=secret kv`) or an auth method
    /// (`coffer auth enable approle`)
    Enable(EnableArgs),
    /// Disable a mount: a secrets engine's data is destroyed, an auth method's tokens stop working
    Disable {
        /// The mount's path, e.g. secret/ (or approle/ for `coffer auth disable`)
        path: String,
    },
    /// List the enabled secrets engines or auth methods
    List {
        #[arg(long)]
        detailed: bool,
    },
    /// Change a mount's TTLs, description or options
    Tune(TuneArgs),
    /// Move a mount to another path, with its data and leases (`sys/remount`)
    Move {
        /// The mount's path now, e.g. secret/ (approle/ or auth/approle/ for `coffer auth move`)
        source: String,
        /// Its new path
        destination: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct EnableArgs {
    /// The engine or method type (kv, approle, ...)
    pub kind: String,
    /// Where to mount it (default: the type name)
    #[arg(long)]
    pub path: Option<String>,
    #[command(flatten)]
    pub settings: Settings,
    /// Shorthand for -options=version=N (kv)
    #[arg(long)]
    pub version: Option<u32>,
}

#[derive(Args, Debug)]
pub(crate) struct TuneArgs {
    /// The mount's path, e.g. secret/
    pub path: String,
    #[command(flatten)]
    pub settings: Settings,
}

/// What `enable` and `tune` both set.
#[derive(Args, Debug)]
pub(crate) struct Settings {
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "default-lease-ttl")]
    pub default_lease_ttl: Option<String>,
    #[arg(long = "max-lease-ttl")]
    pub max_lease_ttl: Option<String>,
    /// Engine option key=value (repeatable)
    #[arg(long = "options", value_name = "K=V")]
    pub options: Vec<String>,
}

impl Settings {
    /// The TTLs given, as the mount API names them.
    fn ttls(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in
            [("default_lease_ttl", &self.default_lease_ttl), ("max_lease_ttl", &self.max_lease_ttl)]
        {
            if let Some(t) = v {
                m.insert(k.into(), json!(t));
            }
        }
        m
    }
}

fn enable_body(a: &EnableArgs) -> Result<Value> {
    let s = &a.settings;
    let mut options = parse_pairs(&s.options)?;
    if let Some(v) = a.version {
        options.insert("version".into(), json!(v.to_string()));
    }
    Ok(json!({
        "type": a.kind,
        "description": s.description.clone().unwrap_or_default(),
        "config": s.ttls(),
        "options": options,
    }))
}

/// Only what was given: an absent flag leaves the mount's setting as it is.
fn tune_body(s: &Settings) -> Result<Value> {
    let mut body = s.ttls();
    if let Some(d) = &s.description {
        body.insert("description".into(), json!(d));
    }
    if !s.options.is_empty() {
        body.insert("options".into(), Value::Object(parse_pairs(&s.options)?));
    }
    Ok(Value::Object(body))
}

fn print_mounts(g: &Global, body: Option<Value>, detailed: bool) -> Result<ExitCode> {
    let b = body.unwrap_or(Value::Null);
    if g.format.structured() {
        print_value(b.get("data").unwrap_or(&Value::Null), g.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let Some(Value::Object(m)) = b.get("data") else { return Ok(ExitCode::SUCCESS) };
    let w = m.keys().map(String::len).max().unwrap_or(4).max(4);
    if detailed {
        println!(
            "{:<w$}    {:<10}    {:<22}    {:<11}    {:<8}    Description",
            "Path", "Type", "Accessor", "Default TTL", "Max TTL"
        );
    } else {
        println!("{:<w$}    {:<10}    {:<22}    Description", "Path", "Type", "Accessor");
    }
    for (path, e) in m {
        let s = |k: &str| e.get(k).map(cell).unwrap_or_default();
        if detailed {
            let ttl = |k: &str| match e.get("config").and_then(|c| c.get(k)).and_then(Value::as_u64)
            {
                Some(0) | None => "system".to_owned(),
                Some(v) => fmt_duration(v),
            };
            println!(
                "{path:<w$}    {:<10}    {:<22}    {:<11}    {:<8}    {}",
                s("type"),
                s("accessor"),
                ttl("default_lease_ttl"),
                ttl("max_lease_ttl"),
                s("description")
            );
        } else {
            println!(
                "{path:<w$}    {:<10}    {:<22}    {}",
                s("type"),
                s("accessor"),
                s("description")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `table` is `mounts` or `auth`; `noun` names the thing in messages.
pub(super) async fn run(g: &Global, op: MountCmd, table: &str, noun: &str) -> Result<ExitCode> {
    let c = client(g)?;
    match op {
        MountCmd::Enable(a) => {
            let path = a.path.clone().unwrap_or_else(|| a.kind.clone());
            let path = path.trim_matches('/').to_owned();
            c.write(&format!("sys/{table}/{path}"), &enable_body(&a)?).await?;
            println!("Success! Enabled the {} {noun} at: {path}/", a.kind);
        }
        MountCmd::Disable { path } => {
            let path = path.trim_matches('/');
            c.delete(&format!("sys/{table}/{path}")).await?;
            println!("Success! Disabled the {noun} (if it existed) at: {path}/");
        }
        MountCmd::List { detailed } => {
            return print_mounts(g, c.read(&format!("sys/{table}")).await?.body, detailed);
        }
        MountCmd::Tune(a) => {
            let path = a.path.trim_matches('/').to_owned();
            c.write(&format!("sys/{table}/{path}/tune"), &tune_body(&a.settings)?).await?;
            println!("Success! Tuned the {noun} at: {path}/");
        }
        MountCmd::Move { source, destination } => {
            // As vault: the paths given as they are (with `auth/` for auth methods), with a
            // trailing `/`; `coffer auth move approle/ ...` adds the `auth/`.
            let full = |p: &str| {
                let p = p.trim_matches('/');
                if table == "auth" && !p.starts_with("auth/") {
                    format!("auth/{p}/")
                } else {
                    format!("{p}/")
                }
            };
            let (from, to) = (full(&source), full(&destination));
            let ans = c.write("sys/remount", &json!({ "from": from, "to": to })).await?;
            let b = ans.body.unwrap_or(Value::Null);
            let id = b.pointer("/data/migration_id").map(cell).unwrap_or_default();
            println!("Started moving {noun} {from} to {to}, with migration ID {id}");
            loop {
                let st =
                    c.read(&format!("sys/remount/status/{id}")).await?.body.unwrap_or_default();
                match st.pointer("/data/migration_info/status").and_then(Value::as_str) {
                    Some("success") => {
                        println!(
                            "Success! Finished moving {noun} {from} to {to}, with migration ID {id}"
                        );
                        break;
                    }
                    Some("failure") => {
                        anyhow::bail!(
                            "Failure! Error encountered moving {noun} {from} to {to}, with migration ID {id}"
                        );
                    }
                    _ => {
                        println!(
                            "Waiting for terminal status in migration of {noun} {from} to {to}, with migration ID {id}"
                        );
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
