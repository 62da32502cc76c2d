//! `coffer lease`: look up, renew and revoke leases, as `vault lease` does.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::client::{Global, client, print_answer};
use super::output::Format;

/// Every lease id under `prefix`, sorted: `LIST sys/leases/lookup/...` answers one folder level
/// with the last segments only, so the folders are walked and the ids put back together.
async fn lease_ids(c: &coffer_api::Client, prefix: &str) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut folders = vec![prefix.to_owned()];
    while let Some(folder) = folders.pop() {
        let keys = match c.list(&format!("sys/leases/lookup/{folder}/")).await {
            Ok(ans) => ans.envelope()?.data.and_then(|d| d.get("keys").cloned()),
            Err(coffer_api::Error::Api { status: 404, errors, .. }) if errors.is_empty() => None,
            Err(e) => return Err(e.into()),
        };
        let keys = keys.and_then(|k| k.as_array().cloned()).unwrap_or_default();
        for key in keys.iter().filter_map(Value::as_str) {
            let full = if folder.is_empty() { key.to_owned() } else { format!("{folder}/{key}") };
            match full.strip_suffix('/') {
                Some(sub) => folders.push(sub.to_owned()),
                None => ids.push(full),
            }
        }
    }
    ids.sort();
    Ok(ids)
}

#[derive(Subcommand, Debug)]
pub(crate) enum LeaseCmd {
    /// Show a lease: when it was issued, when it expires, whether it renews
    Lookup {
        /// The lease id, as a read that issued a secret shows it, or as `coffer lease list` finds it
        lease_id: String,
    },
    /// List the full ids of the leases under a prefix (needs sudo on sys/leases/lookup/*)
    #[command(after_help = "Examples:\n  \
coffer lease list database/creds/readonly   # the leases of one database role\n  \
coffer lease list auth/token/create         # the leases of tokens created with `coffer token create`\n  \
coffer lease list auth/approle/login        # the leases of AppRole logins' tokens")]
    List {
        /// A lease id prefix: a mount path and request path, e.g. database/creds/readonly
        prefix: String,
    },
    /// Extend a secret's lease, within the maximum TTL its engine and mount allow (tokens
    /// renew with `coffer token renew`)
    Renew {
        /// The lease id, as a read that issued a secret shows it, or as `coffer lease list` finds it
        lease_id: String,
        /// Requested extension from now, e.g. 1h (default: the mount's default TTL)
        #[arg(long)]
        increment: Option<String>,
    },
    /// Revoke a lease now: the engine takes back what it granted (e.g. drops the database user)
    #[command(after_help = "Examples:\n  \
coffer lease revoke database/creds/readonly/2f6a...\n  \
coffer lease revoke -prefix database/creds/readonly      # every lease of the role (sudo)\n  \
coffer lease revoke -prefix -force database/creds/        # drop leases even if the database refuses (sudo)")]
    Revoke {
        /// A lease id, or with -prefix a prefix of lease ids
        lease_id: String,
        /// Revoke every lease under the folder LEASE_ID (`database/creds/ro` covers
        /// `database/creds/ro/...`, not `database/creds/ro-2`); needs sudo
        #[arg(long)]
        prefix: bool,
        /// With -prefix: remove the leases even when the engine fails to revoke them. The
        /// credentials may then still work: only for when the backing system is gone for good
        #[arg(long, requires = "prefix")]
        force: bool,
        /// Wait for the revocation (the default); -sync=false answers at once and revokes in
        /// the background
        #[arg(long = "sync", default_value_t = true, action = clap::ArgAction::Set)]
        sync: bool,
    },
}

pub(crate) async fn run(g: &Global, cmd: LeaseCmd) -> Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        LeaseCmd::Lookup { lease_id } => {
            let ans = c.write("sys/leases/lookup", &json!({ "lease_id": lease_id })).await?;
            print_answer(g, ans.body.as_ref())
        }
        LeaseCmd::List { prefix } => {
            let ids = lease_ids(&c, prefix.trim_matches('/')).await?;
            if ids.is_empty() {
                eprintln!("No leases found under {}", prefix.trim_matches('/'));
                return Ok(ExitCode::from(2));
            }
            // One id per line in a table, so `coffer lease list ... | xargs` works; the other
            // formats print the list as `vault list` prints keys.
            if matches!(g.format, Format::Table) {
                ids.iter().for_each(|id| println!("{id}"));
                Ok(ExitCode::SUCCESS)
            } else {
                print_answer(g, Some(&json!(ids)))
            }
        }
        LeaseCmd::Renew { lease_id, increment } => {
            let mut body = Map::new();
            body.insert("lease_id".into(), json!(lease_id));
            if let Some(i) = increment {
                body.insert("increment".into(), json!(i));
            }
            let ans = c.write("sys/leases/renew", &Value::Object(body)).await?;
            print_answer(g, ans.body.as_ref())
        }
        LeaseCmd::Revoke { lease_id, prefix, force, sync } => {
            let id = lease_id.trim_matches('/');
            if id.is_empty() {
                bail!("give a lease id (or a prefix with -prefix)");
            }
            match (prefix, force) {
                (true, true) => {
                    c.write(&format!("sys/leases/revoke-force/{id}"), &json!({})).await?;
                    println!("Success! Force revoked any leases with prefix: {id}");
                }
                (true, false) => {
                    c.write(&format!("sys/leases/revoke-prefix/{id}"), &json!({})).await?;
                    println!("Success! Revoked any leases with prefix: {id}");
                }
                (false, _) => {
                    c.write("sys/leases/revoke", &json!({ "lease_id": id, "sync": sync })).await?;
                    if sync {
                        println!("Success! Revoked lease: {id}");
                    } else {
                        println!("Success! Revocation queued for lease: {id}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
