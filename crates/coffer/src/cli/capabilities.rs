//! `coffer token capabilities [TOKEN] PATH`: what a token may do on a path, as `vault token
//! capabilities` prints it (sorted and comma-separated; the bare list with -format=json|yaml).

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::Args;
use serde_json::{Value, json};

use coffer_api::Client;

use super::client::Global;
use super::output::print_value;

#[derive(Args, Debug)]
pub(crate) struct CapabilitiesArgs {
    /// The token (or, with -accessor, its accessor); the current token when only PATH is given
    #[arg(value_name = "TOKEN")]
    first: String,
    /// The path to check, e.g. secret/data/app
    #[arg(value_name = "PATH")]
    second: Option<String>,
    /// Treat TOKEN as a token accessor
    #[arg(long)]
    accessor: bool,
}

pub(super) async fn run(g: &Global, c: &Client, a: CapabilitiesArgs) -> Result<ExitCode> {
    let (token, path) = match a.second {
        Some(path) => (Some(a.first), path),
        None => (None, a.first),
    };
    let (endpoint, body) = match token {
        None if a.accessor => return Err(anyhow!("-accessor needs ACCESSOR and PATH")),
        None => ("sys/capabilities-self", json!({ "paths": [path] })),
        Some(t) if a.accessor => {
            ("sys/capabilities-accessor", json!({ "accessor": t, "paths": [path] }))
        }
        Some(t) => ("sys/capabilities", json!({ "token": t, "paths": [path] })),
    };
    let ans = c.write(endpoint, &body).await?;
    let data = ans.data().cloned().unwrap_or_default();
    let caps = data
        .get(path.trim_start_matches('/'))
        .or_else(|| data.get("capabilities"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<String> = caps.iter().filter_map(Value::as_str).map(str::to_owned).collect();
    if g.format.structured() {
        print_value(&names, g.format)?;
    } else {
        names.sort();
        println!("{}", names.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
