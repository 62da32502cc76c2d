//! `coffer read`, `write`, `delete` and `list`: any path, as the API has it.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

use super::client::{Global, client, parse_pairs, parse_write_data, print_answer};
use super::output::{cell, not_found, print_value};

#[derive(Args, Debug)]
pub(crate) struct PathArgs {
    /// The API path below /v1/, e.g. secret/app or sys/mounts
    pub path: String,
    /// key=value query parameters (read)
    pub params: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct WriteArgs {
    /// The API path below /v1/, e.g. secret/app or auth/approle/role/web
    pub path: String,
    /// key=value, key=@file, key=- (stdin), or a lone `-` for a JSON object on stdin
    pub data: Vec<String>,
    /// Send the request even with no data
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub(crate) struct PathHelpArgs {
    /// The API path below /v1/: a mount (secret/) or a path in it (secret/data/app)
    pub path: String,
}

/// `coffer path-help PATH`: the server's `?help=1` text (the whole answer with -format=json|yaml).
pub(super) async fn path_help(g: &Global, a: PathHelpArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let q = [("help", "1".to_owned())];
    let ans = c.request_with_query("GET", &a.path, &q, None).await?;
    let body = ans.body.unwrap_or(Value::Null);
    if g.format.structured() {
        print_value(&body, g.format)?;
    } else {
        match body.get("help").and_then(Value::as_str) {
            Some(h) => println!("{}", h.trim_end()),
            None => bail!("the server sent no help for {}", a.path),
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn read(g: &Global, a: PathArgs) -> Result<ExitCode> {
    let c = client(g)?;
    let query = parse_pairs(&a.params)?;
    let q: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), cell(v))).collect();
    match c.request_with_query("GET", &a.path, &q, None).await {
        Ok(ans) => print_answer(g, ans.body.as_ref()),
        Err(coffer_api::Error::Api { status: 404, errors, .. }) if errors.is_empty() => {
            Ok(not_found(&a.path))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn list(g: &Global, a: PathArgs) -> Result<ExitCode> {
    let c = client(g)?;
    match c.list(&a.path).await {
        // Vault prints the bare list of keys as data, not the envelope.
        Ok(ans) if g.format.structured() && g.field.is_none() => {
            let keys = ans.data().and_then(|d| d.get("keys")).cloned().unwrap_or(Value::Null);
            print_value(&keys, g.format)?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(ans) => print_answer(g, ans.body.as_ref()),
        Err(coffer_api::Error::Api { status: 404, errors, .. }) if errors.is_empty() => {
            Ok(not_found(&a.path))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn delete(g: &Global, a: PathArgs) -> Result<ExitCode> {
    client(g)?.delete(&a.path).await?;
    println!("Success! Data deleted (if it existed) at: {}", a.path);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn write(g: &Global, a: WriteArgs) -> Result<ExitCode> {
    let data = parse_write_data(&a.data)?;
    if data.is_empty() && !a.force {
        bail!("Must supply data or use -force");
    }
    let ans = client(g)?.write(&a.path, &Value::Object(data)).await?;
    match ans.body {
        Some(b) => print_answer(g, Some(&b)),
        None => {
            println!("Success! Data written to: {}", a.path);
            Ok(ExitCode::SUCCESS)
        }
    }
}
