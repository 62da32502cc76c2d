//! `coffer secrets` and `coffer auth`: one mount-table command set, for secrets engines
//! (`sys/mounts`) and auth methods (`sys/auth`).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{Global, client, parse_pairs};
use super::output::{Format, cell, fmt_duration};

#[derive(Subcommand, Debug)]
pub(crate) enum SecretsCmd {
    /// Enable a secrets engine: `coffer secrets enable -path=secret kv`
    Enable(EnableArgs),
    /// Disable a secrets engine and destroy all its data
    Disable { path: String },
    /// List enabled secrets engines
    List {
        #[arg(long)]
        detailed: bool,
    },
    /// Change a secrets engine's TTLs, description or options
    Tune(TuneArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuthCmd {
    /// Enable an auth method
    Enable(EnableArgs),
    /// Disable an auth method; tokens it issued stop working
    Disable { path: String },
    /// List enabled auth methods
    List {
        #[arg(long)]
        detailed: bool,
    },
    /// Change an auth method's TTLs or description
    Tune(TuneArgs),
}

#[derive(Args, Debug)]
pub(crate) struct EnableArgs {
    /// The engine or method type (kv, approle, ...)
    pub kind: String,
    /// Where to mount it (default: the type name)
    #[arg(long)]
    pub path: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "default-lease-ttl")]
    pub default_lease_ttl: Option<String>,
    #[arg(long = "max-lease-ttl")]
    pub max_lease_ttl: Option<String>,
    /// Engine option key=value (repeatable)
    #[arg(long = "options", value_name = "K=V")]
    pub options: Vec<String>,
    /// Shorthand for -options=version=N (kv)
    #[arg(long)]
    pub version: Option<u32>,
}

#[derive(Args, Debug)]
pub(crate) struct TuneArgs {
    pub path: String,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long = "default-lease-ttl")]
    pub default_lease_ttl: Option<String>,
    #[arg(long = "max-lease-ttl")]
    pub max_lease_ttl: Option<String>,
    #[arg(long = "options", value_name = "K=V")]
    pub options: Vec<String>,
}

fn enable_body(a: &EnableArgs) -> Result<Value> {
    let mut config = Map::new();
    if let Some(t) = &a.default_lease_ttl {
        config.insert("default_lease_ttl".into(), json!(t));
    }
    if let Some(t) = &a.max_lease_ttl {
        config.insert("max_lease_ttl".into(), json!(t));
    }
    let mut options = parse_pairs(&a.options)?;
    if let Some(v) = a.version {
        options.insert("version".into(), json!(v.to_string()));
    }
    Ok(json!({
        "type": a.kind,
        "description": a.description.clone().unwrap_or_default(),
        "config": config,
        "options": options,
    }))
}

fn tune_body(a: &TuneArgs) -> Result<Value> {
    let mut body = Map::new();
    if let Some(t) = &a.default_lease_ttl {
        body.insert("default_lease_ttl".into(), json!(t));
    }
    if let Some(t) = &a.max_lease_ttl {
        body.insert("max_lease_ttl".into(), json!(t));
    }
    if let Some(d) = &a.description {
        body.insert("description".into(), json!(d));
    }
    if !a.options.is_empty() {
        body.insert("options".into(), Value::Object(parse_pairs(&a.options)?));
    }
    Ok(Value::Object(body))
}

fn print_mounts(g: &Global, body: Option<Value>, detailed: bool) -> Result<ExitCode> {
    let b = body.unwrap_or(Value::Null);
    if g.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(b.get("data").unwrap_or(&Value::Null))?);
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

/// One mount-table command, for secrets engines (`sys/mounts`) or auth methods (`sys/auth`).
pub(super) enum MountOp {
    Enable(EnableArgs),
    Disable(String),
    List(bool),
    Tune(TuneArgs),
}

impl From<SecretsCmd> for MountOp {
    fn from(c: SecretsCmd) -> Self {
        match c {
            SecretsCmd::Enable(a) => MountOp::Enable(a),
            SecretsCmd::Disable { path } => MountOp::Disable(path),
            SecretsCmd::List { detailed } => MountOp::List(detailed),
            SecretsCmd::Tune(a) => MountOp::Tune(a),
        }
    }
}

impl From<AuthCmd> for MountOp {
    fn from(c: AuthCmd) -> Self {
        match c {
            AuthCmd::Enable(a) => MountOp::Enable(a),
            AuthCmd::Disable { path } => MountOp::Disable(path),
            AuthCmd::List { detailed } => MountOp::List(detailed),
            AuthCmd::Tune(a) => MountOp::Tune(a),
        }
    }
}

/// `table` is `mounts` or `auth`; `noun` names the thing in messages.
pub(super) async fn run(g: &Global, op: MountOp, table: &str, noun: &str) -> Result<ExitCode> {
    let c = client(g)?;
    match op {
        MountOp::Enable(a) => {
            let path = a.path.clone().unwrap_or_else(|| a.kind.clone());
            let path = path.trim_matches('/').to_owned();
            c.write(&format!("sys/{table}/{path}"), &enable_body(&a)?).await?;
            println!("Success! Enabled the {} {noun} at: {path}/", a.kind);
        }
        MountOp::Disable(path) => {
            let path = path.trim_matches('/');
            c.delete(&format!("sys/{table}/{path}")).await?;
            println!("Success! Disabled the {noun} (if it existed) at: {path}/");
        }
        MountOp::List(detailed) => {
            return print_mounts(g, c.read(&format!("sys/{table}")).await?.body, detailed);
        }
        MountOp::Tune(a) => {
            let path = a.path.trim_matches('/').to_owned();
            c.write(&format!("sys/{table}/{path}/tune"), &tune_body(&a)?).await?;
            println!("Success! Tuned the {noun} at: {path}/");
        }
    }
    Ok(ExitCode::SUCCESS)
}
