//! `coffer operator` (init, unseal, seal, rotate, key-status; generate-root and rekey in
//! `keyops`) and `coffer status`: the seal and
//! the keys.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Global, client, read_secret_input};
use super::output::{EXIT_NEGATIVE, Format, cell, print_body, print_value, table};

#[derive(Subcommand, Debug)]
pub(crate) enum OperatorCmd {
    /// Initialize a new server: creates the unseal key shares and the root token
    Init {
        /// Number of key shares to split the unseal key into
        #[arg(long = "key-shares", default_value_t = 5)]
        key_shares: u64,
        /// Number of shares needed to unseal
        #[arg(long = "key-threshold", default_value_t = 3)]
        key_threshold: u64,
        /// With auto-unseal (a seal stanza): number of recovery key shares
        #[arg(long = "recovery-shares", default_value_t = 5)]
        recovery_shares: u64,
        /// With auto-unseal: number of recovery shares that make a quorum (generate-root)
        #[arg(long = "recovery-threshold", default_value_t = 3)]
        recovery_threshold: u64,
        /// Only say whether the server is initialized: exit 0 when it is, 2 when not, as vault
        #[arg(long, conflicts_with_all = ["key_shares", "key_threshold", "recovery_shares", "recovery_threshold"])]
        status: bool,
    },
    /// Provide one unseal key share (asked for without echo when not given; `-` reads stdin)
    Unseal {
        /// One unseal key share; `-` reads it from stdin, and without it the command asks for it
        key: Option<String>,
        /// Discard the shares given so far
        #[arg(long)]
        reset: bool,
        /// Seal migration: the share moves a Shamir storage to the configured seal (auto-unseal)
        #[arg(long, conflicts_with = "reset")]
        migrate: bool,
    },
    /// Seal the server: it forgets its keys until unsealed again (needs sudo)
    Seal,
    /// Add a new encryption key term; new writes use it, old data stays readable
    Rotate,
    /// Show the active encryption key term
    KeyStatus,
    /// Make a new root token from a quorum of unseal key shares (-init, then each share holder
    /// gives a share; -decode with the OTP reveals the token)
    GenerateRoot(super::keyops::GenerateRootArgs),
    /// Replace the unseal key and its shares, given a quorum of the current shares (-init, then
    /// each share holder gives a share; -verify to check the new ones before they take effect)
    Rekey(super::keyops::RekeyArgs),
}

fn seal_status_table(b: &Value, leader: Option<&Value>) -> String {
    let g = |k: &str| b.get(k).cloned().unwrap_or(Value::Null);
    let mut rows = vec![
        ("Seal Type".into(), cell(&g("type"))),
        ("Initialized".into(), cell(&g("initialized"))),
        ("Sealed".into(), cell(&g("sealed"))),
        ("Total Shares".into(), cell(&g("n"))),
        ("Threshold".into(), cell(&g("t"))),
    ];
    if g("sealed") == Value::Bool(true) {
        rows.push((
            "Unseal Progress".into(),
            format!("{}/{}", cell(&g("progress")), cell(&g("t"))),
        ));
        // Vault's "n/a" when no unseal is under way (no nonce yet), not a blank.
        let nonce = g("nonce");
        let nonce = if nonce.as_str().is_some_and(str::is_empty) { Value::Null } else { nonce };
        rows.push(("Unseal Nonce".into(), cell(&nonce)));
    }
    rows.push(("Version".into(), cell(&g("version"))));
    rows.push(("Storage Type".into(), cell(&g("storage_type"))));
    // As `vault status`: the HA rows come from sys/leader (read only when unsealed).
    let l = |k: &str| leader.and_then(|v| v.get(k)).cloned().unwrap_or(Value::Null);
    if l("ha_enabled") == Value::Bool(true) {
        rows.push(("HA Enabled".into(), "true".into()));
        rows.push(("HA Cluster".into(), cell(&l("leader_cluster_address"))));
        if l("is_self") == Value::Bool(true) {
            rows.push(("HA Mode".into(), "active".into()));
            rows.push(("Active Since".into(), cell(&l("active_time"))));
        } else {
            rows.push(("HA Mode".into(), "standby".into()));
            rows.push(("Active Node Address".into(), cell(&l("leader_address"))));
        }
    } else {
        rows.push(("HA Enabled".into(), "false".into()));
    }
    table(&rows)
}

pub(super) async fn status(g: &Global) -> Result<ExitCode> {
    let c = client(g)?;
    let ans = c.read("sys/seal-status").await?;
    let b = ans.body.unwrap_or(Value::Null);
    match g.format {
        Format::Json | Format::Yaml => print_value(&b, g.format)?,
        Format::Table => {
            let leader = match b.get("sealed") {
                Some(Value::Bool(false)) => c.read("sys/leader").await.ok().and_then(|a| a.body),
                _ => None,
            };
            print!("{}", seal_status_table(&b, leader.as_ref()))
        }
    }
    Ok(if b.get("sealed") == Some(&Value::Bool(false)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NEGATIVE)
    })
}

/// `operator init -format=json|yaml` prints what `vault operator init` prints (its field names,
/// not the API's `keys`/`keys_base64`), so scripts written for Vault read it unchanged.
fn init_output(api: &Value, shares: (u64, u64), recovery: (u64, u64)) -> Value {
    let list = |k: &str| api.get(k).cloned().unwrap_or_else(|| json!([]));
    // The server answers recovery keys only with auto-unseal; then there are no unseal keys.
    let auto = api.get("recovery_keys").is_some();
    let (shares, threshold) = if auto { (0, 0) } else { shares };
    let (r_shares, r_threshold) = if auto { recovery } else { (0, 0) };
    json!({
        "unseal_keys_b64": list("keys_base64"),
        "unseal_keys_hex": list("keys"),
        "unseal_shares": shares,
        "unseal_threshold": threshold,
        "recovery_keys_b64": list("recovery_keys_base64"),
        "recovery_keys_hex": list("recovery_keys"),
        "recovery_keys_shares": r_shares,
        "recovery_keys_threshold": r_threshold,
        "root_token": api.get("root_token").cloned().unwrap_or(Value::Null),
    })
}

pub(super) async fn run(g: &Global, op: OperatorCmd) -> Result<ExitCode> {
    let op = match op {
        OperatorCmd::GenerateRoot(a) => return super::keyops::generate_root(g, a).await,
        OperatorCmd::Rekey(a) => return super::keyops::rekey(g, a).await,
        other => other,
    };
    let c = client(g)?;
    match op {
        OperatorCmd::Init { status: true, .. } => {
            let b = c.read("sys/init").await?.body.unwrap_or(Value::Null);
            let initialized = b.get("initialized") == Some(&Value::Bool(true));
            if g.format.structured() {
                print_value(&b, g.format)?;
            } else if initialized {
                println!("Coffer is initialized");
            } else {
                println!("Coffer is not initialized");
            }
            Ok(if initialized { ExitCode::SUCCESS } else { ExitCode::from(EXIT_NEGATIVE) })
        }
        OperatorCmd::Init {
            key_shares,
            key_threshold,
            recovery_shares,
            recovery_threshold,
            status: false,
        } => {
            // Both splits: the server uses the one its seal needs (recovery with auto-unseal).
            let ans = c
                .write(
                    "sys/init",
                    &json!({
                        "secret_shares": key_shares, "secret_threshold": key_threshold,
                        "recovery_shares": recovery_shares, "recovery_threshold": recovery_threshold,
                    }),
                )
                .await?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format.structured() {
                let out = init_output(
                    &b,
                    (key_shares, key_threshold),
                    (recovery_shares, recovery_threshold),
                );
                print_value(&out, g.format)?;
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(Value::Array(keys)) = b.get("recovery_keys_base64") {
                for (i, k) in keys.iter().enumerate() {
                    println!("Recovery Key {}: {}", i + 1, cell(k));
                }
                println!(
                    "\nInitial Root Token: {}\n",
                    cell(b.get("root_token").unwrap_or(&Value::Null))
                );
                println!(
                    "Coffer initialized with {recovery_shares} recovery key shares and a recovery key threshold of\n\
                     {recovery_threshold}. The server unseals itself with its seal; the recovery keys cannot unseal\n\
                     it, they authorize generate-root. Give them to different people and keep them apart.\n\
                     Use the root token only for set-up, then revoke it (`coffer token revoke -self`)."
                );
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(Value::Array(keys)) = b.get("keys_base64") {
                for (i, k) in keys.iter().enumerate() {
                    println!("Unseal Key {}: {}", i + 1, cell(k));
                }
            }
            println!(
                "\nInitial Root Token: {}\n",
                cell(b.get("root_token").unwrap_or(&Value::Null))
            );
            println!(
                "Coffer initialized with {key_shares} key shares and a key threshold of {key_threshold}.\n\
                 Give the key shares to different people and keep them apart: any {key_threshold} of them\n\
                 unseal the server, fewer reveal nothing. Coffer does not keep them.\n\n\
                 The server is sealed. Unseal it with `coffer operator unseal`, {key_threshold} times.\n\
                 Use the root token only for set-up, then revoke it (`coffer token revoke -self`)."
            );
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::Unseal { key, reset, migrate } => {
            let body = if reset {
                json!({ "reset": true })
            } else {
                // As vault: asked for without echo; `-` or a piped stdin reads it from stdin.
                let key = match key {
                    Some(k) => read_secret_input("", Some(k))?,
                    None => super::prompt::hidden("Unseal Key (will be hidden): ")?.to_string(),
                };
                match migrate {
                    true => json!({ "key": key, "migrate": true }),
                    false => json!({ "key": key }),
                }
            };
            let ans = c.write("sys/unseal", &body).await?;
            let b = ans.body.unwrap_or(Value::Null);
            match g.format {
                Format::Json | Format::Yaml => print_value(&b, g.format)?,
                Format::Table => {
                    let leader = match b.get("sealed") {
                        Some(Value::Bool(false)) => {
                            c.read("sys/leader").await.ok().and_then(|a| a.body)
                        }
                        _ => None,
                    };
                    print!("{}", seal_status_table(&b, leader.as_ref()))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::Seal => {
            c.write("sys/seal", &json!({})).await?;
            println!("Success! Coffer is sealed.");
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::Rotate => {
            c.write("sys/rotate", &json!({})).await?;
            let ans = c.read("sys/key-status").await?;
            let b = ans.body.unwrap_or(Value::Null);
            let term = b.get("data").and_then(|d| d.get("term")).map(cell).unwrap_or_default();
            println!("Success! Rotated key\n\nKey Term        {term}");
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::KeyStatus => {
            let ans = c.read("sys/key-status").await?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format.structured() || g.field.is_some() {
                print_body(&b, g.format, g.field.as_deref())?;
            } else {
                let d = b.get("data").cloned().unwrap_or(Value::Null);
                print!(
                    "{}",
                    table(&[
                        ("Key Term".into(), cell(d.get("term").unwrap_or(&Value::Null))),
                        (
                            "Install Time".into(),
                            cell(d.get("install_time").unwrap_or(&Value::Null))
                        ),
                        (
                            "Encryption Count".into(),
                            cell(d.get("encryptions").unwrap_or(&Value::Null))
                        ),
                    ])
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::GenerateRoot(_) | OperatorCmd::Rekey(_) => Ok(ExitCode::SUCCESS),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_status_table_shows_progress_when_sealed() {
        let t = seal_status_table(
            &json!({"type": "shamir", "initialized": true, "sealed": true, "n": 5, "t": 3, "progress": 1, "nonce": "x", "version": "0.1.0", "storage_type": "sqlite"}),
            None,
        );
        assert!(t.contains("Unseal Progress    1/3"), "{t}");
        assert!(t.contains("HA Enabled         false"), "{t}");
    }

    #[test]
    fn seal_status_table_shows_the_ha_mode_as_vault_status_does() {
        let status = json!({"type": "shamir", "initialized": true, "sealed": false, "n": 1, "t": 1, "version": "0.1.0", "storage_type": "postgresql"});
        let standby = json!({"ha_enabled": true, "is_self": false, "leader_address": "https://a:8200", "leader_cluster_address": "https://a:8201", "active_time": "0001-01-01T00:00:00Z"});
        let t = seal_status_table(&status, Some(&standby));
        for want in [
            "HA Enabled         true",
            "HA Cluster         https://a:8201",
            "HA Mode            standby",
            "Active Node Address    https://a:8200",
        ] {
            assert!(
                t.contains(want) || t.replace(' ', "").contains(&want.replace(' ', "")),
                "{want:?} in {t}"
            );
        }
        let active = json!({"ha_enabled": true, "is_self": true, "leader_cluster_address": "https://a:8201", "active_time": "2026-12-05T08:00:00Z"});
        let t = seal_status_table(&status, Some(&active));
        assert!(t.contains("active") && t.contains("2026-12-05T08:00:00Z"), "{t}");
    }
}
