//! The `coffer` provider: Coffer's faults and probes as experiment activities,
//! `{"type": "coffer", "func": "seal", "arguments": {"duration": "30s"}}`.
//!
//! Functions (the same names, arguments and outputs as `coffer chaos fault ...` and
//! `coffer chaos probe ...`):
//! - server faults, through `sys/chaos/faults`: `latency`, `error`, `seal`,
//!   `storage_unavailable`, `audit_blocked`, `revoke_prefix`, `rotate` (the fields of
//!   [`crate::chaos::FaultSpec`]);
//! - host faults: `partition`, `netem`, `kill`, `pause`, `agent_cache` (see [`crate::host`]),
//!   recorded on the server as a `host` fault when a server and a token are at hand (see
//!   [`crate::host::record`]);
//! - `stop` (`{"id": ...}`, a server `fault-...` or a `hostfault-...`), `stop_all` (every server
//!   fault, when a server is configured, and every host fault in the state directory), `list`;
//! - probes: `health`, `agent`, `metrics`, `audit` (see [`crate::probe`]).
//!
//! The server is the one the CLI would use: arguments `address`, `ca_cert`, `token` when given,
//! else `COFFER_ADDR`/`VAULT_ADDR`, `COFFER_CACERT`/`VAULT_CACERT`, `COFFER_TOKEN`/`VAULT_TOKEN`
//! (the `health` probe too). A token is better left to the environment or a `secrets` entry:
//! the journal records each activity as written. Host faults take `state_dir` (default
//! [`crate::host::DEFAULT_STATE_DIR`]) and need the guard command the binary set with
//! [`crate::Configuration::with_host_guard`].
//!
//! An unknown `func` is refused when the experiment loads; arguments are checked when the
//! activity runs (they may hold `${name}` references), and an unknown or missing one fails it,
//! named.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::chaos::{FaultKind, FaultSpec};
use crate::experiment::Configuration;
use crate::host::{self, HostOptions};
use crate::server::{self, ServerTarget};

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CofferProvider {
    pub func: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
}

const HOST: [&str; 5] = ["partition", "netem", "kill", "pause", "agent_cache"];
const PROBES: [&str; 4] = ["health", "agent", "metrics", "audit"];
const MANAGE: [&str; 3] = ["stop", "stop_all", "list"];

/// Every function name, for messages and load-time checks.
pub fn functions() -> Vec<&'static str> {
    // `host` records are made by the host faults themselves, never on their own.
    FaultKind::ALL
        .iter()
        .filter(|k| **k != FaultKind::Host)
        .map(|k| k.as_str())
        .chain(HOST)
        .chain(MANAGE)
        .chain(PROBES)
        .collect()
}

impl CofferProvider {
    pub(crate) fn check(&self, activity: &str) -> Result<(), String> {
        if !functions().contains(&self.func.as_str()) {
            return Err(format!(
                "activity '{activity}': unknown coffer function {:?} (known: {})",
                self.func,
                functions().join(", ")
            ));
        }
        match &self.arguments {
            None | Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(format!("activity '{activity}': coffer arguments must be an object")),
        }
    }
}

fn env_any(keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

fn take_str(args: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match args.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{key} must be text, not {other}")),
    }
}

fn target(args: &mut Map<String, Value>) -> Result<ServerTarget, String> {
    let address = take_str(args, "address")?
        .or_else(|| env_any(&["COFFER_ADDR", "VAULT_ADDR"]))
        .ok_or("no server: give arguments.address or set COFFER_ADDR")?;
    let token = take_str(args, "token")?
        .or_else(|| env_any(&["COFFER_TOKEN", "VAULT_TOKEN"]))
        .ok_or("no token for sys/chaos/faults: set COFFER_TOKEN (a token with sudo there)")?;
    let ca_file = take_str(args, "ca_cert")?
        .or_else(|| env_any(&["COFFER_CACERT", "VAULT_CACERT"]))
        .map(PathBuf::from);
    Ok(ServerTarget { address, token, ca_file })
}

/// The server host faults are recorded on: `None` unless both an address and a token are at
/// hand (then nothing is tried).
fn recorder(args: &mut Map<String, Value>) -> Result<Option<host::record::Recorder>, String> {
    let address = take_str(args, "address")?.or_else(|| env_any(&["COFFER_ADDR", "VAULT_ADDR"]));
    let token = take_str(args, "token")?.or_else(|| env_any(&["COFFER_TOKEN", "VAULT_TOKEN"]));
    let ca_file = take_str(args, "ca_cert")?
        .or_else(|| env_any(&["COFFER_CACERT", "VAULT_CACERT"]))
        .map(PathBuf::from);
    let (Some(address), Some(token)) = (address, token) else { return Ok(None) };
    let t = ServerTarget { address: address.clone(), token, ca_file };
    let client = t.client().map_err(|e| e.to_string())?;
    Ok(Some(host::record::Recorder { client, address }))
}

fn host_options(args: &mut Map<String, Value>, guard: &[OsString]) -> Result<HostOptions, String> {
    if guard.is_empty() {
        return Err(
            "host faults need the coffer binary's guard: run them with `coffer chaos run`".into()
        );
    }
    let state_dir = take_str(args, "state_dir")?.unwrap_or_else(|| host::DEFAULT_STATE_DIR.into());
    Ok(HostOptions { state_dir: state_dir.into(), guard: guard.to_vec() })
}

fn to_value<T: Serialize>(v: &T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// Runs one `coffer` activity: its JSON output, or why it failed.
pub(crate) async fn run(p: &CofferProvider, config: &Configuration) -> Result<Value, String> {
    let arguments = p.arguments.as_ref().map(|a| config.substitute(a)).unwrap_or(json!({}));
    let Value::Object(mut args) = arguments else {
        return Err("coffer arguments must be an object".into());
    };
    let func = p.func.as_str();
    let guard = config.host_guard();
    if let Some(kind) = FaultKind::parse(func).filter(|k| *k != FaultKind::Host) {
        let t = target(&mut args)?;
        args.insert("type".into(), Value::String(kind.as_str().into()));
        let spec: FaultSpec =
            serde_json::from_value(Value::Object(args)).map_err(|e| format!("{func}: {e}"))?;
        let fault = server::start(&t, &spec).await.map_err(|e| format!("{func}: {e}"))?;
        return to_value(&fault);
    }
    if HOST.contains(&func) {
        let rec = recorder(&mut args)?;
        let o = host_options(&mut args, guard)?;
        return host::record::call(func, Value::Object(args), &o, rec.as_ref())
            .await
            .map_err(|e| e.to_string());
    }
    if PROBES.contains(&func) {
        if func == "health" {
            // The server the faults go to, unless the probe names another.
            if !args.contains_key("address")
                && let Some(a) = env_any(&["COFFER_ADDR", "VAULT_ADDR"])
            {
                args.insert("address".into(), Value::String(a));
            }
            if !args.contains_key("ca_cert")
                && let Some(c) = env_any(&["COFFER_CACERT", "VAULT_CACERT"])
            {
                args.insert("ca_cert".into(), Value::String(c));
            }
        }
        return crate::probe::call(func, Value::Object(args)).await.map_err(|e| e.to_string());
    }
    match func {
        "stop" => {
            let id = take_str(&mut args, "id")?.ok_or("stop needs arguments.id")?;
            if id.starts_with("hostfault-") {
                let rec = recorder(&mut args)?;
                let o = host_options(&mut args, guard)?;
                only(&args, func)?;
                let mut out = host::stop(&id, &o).await.map_err(|e| e.to_string())?;
                host::record::note_unrecord(&mut out, rec.as_ref(), &id).await;
                Ok(out)
            } else {
                let t = target(&mut args)?;
                only(&args, func)?;
                server::stop(&t, &id).await.map_err(|e| e.to_string())?;
                Ok(json!({"stopped": id}))
            }
        }
        "stop_all" => stop_all(args, guard).await,
        "list" => {
            let o = host_options(&mut args, guard)?;
            let t = target(&mut args).ok();
            only(&args, func)?;
            let server = match t {
                Some(t) => to_value(&server::list(&t).await.map_err(|e| e.to_string())?)?,
                None => Value::Null,
            };
            let host = if o.state_dir.exists() {
                host::list(&o).await.map_err(|e| e.to_string())?
            } else {
                json!({"faults": []})
            };
            Ok(json!({"server": server, "host": host}))
        }
        other => Err(format!("unknown coffer function {other:?}")),
    }
}

fn only(args: &Map<String, Value>, func: &str) -> Result<(), String> {
    match args.keys().next() {
        Some(k) => Err(format!("{func}: unknown argument {k:?}")),
        None => Ok(()),
    }
}

/// Every fault ended: the server's when a server and token are at hand (a rollback must not
/// fail because an experiment used host faults only), and the host's in the state directory.
async fn stop_all(mut args: Map<String, Value>, guard: &[OsString]) -> Result<Value, String> {
    let state_dir_given = args.contains_key("state_dir");
    let o = host_options(&mut args, guard)?;
    let t = target(&mut args).ok();
    only(&args, "stop_all")?;
    let mut out = json!({"server": Value::Null, "host": []});
    let mut errors = Vec::new();
    if let Some(t) = t {
        match server::stop_all(&t).await {
            Ok(()) => out["server"] = json!("stopped"),
            Err(e) => errors.push(format!("server faults: {e}")),
        }
    }
    if o.state_dir.exists() || state_dir_given {
        let (stopped, failed) = host::stop_all(&o).await.map_err(|e| e.to_string())?;
        errors.extend(failed);
        out["host"] = Value::Array(stopped);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors.join("; ")) }
}

#[cfg(test)]
mod tests {
    use crate::Experiment;

    fn with(provider: &str) -> Result<Experiment, crate::Error> {
        Experiment::from_json(&format!(
            r#"{{"title": "t", "method": [{{"type": "action", "name": "a", "provider": {provider}}}]}}"#
        ))
    }

    #[test]
    fn functions_are_checked_when_the_experiment_loads() {
        assert!(
            with(r#"{"type": "coffer", "func": "seal", "arguments": {"duration": "5s"}}"#).is_ok()
        );
        assert!(with(r#"{"type": "coffer", "func": "partition"}"#).is_ok());
        let e = with(r#"{"type": "coffer", "func": "explode"}"#).expect_err("unknown").to_string();
        assert!(
            e.contains("unknown coffer function \"explode\"") && e.contains("audit_blocked"),
            "{e}"
        );
        let e = with(r#"{"type": "coffer", "func": "seal", "arguments": ["5s"]}"#)
            .expect_err("not an object")
            .to_string();
        assert!(e.contains("must be an object"), "{e}");
    }

    #[tokio::test]
    async fn arguments_are_checked_when_the_activity_runs() {
        let e = with(r#"{"type": "coffer", "func": "seal", "arguments": {"duration": "5s", "address": "http://127.0.0.1:1", "token": "t", "colour": "red"}}"#)
            .expect("loads");
        let crate::Provider::Coffer(p) = &e.method[0].provider else { panic!("coffer") };
        let err = super::run(p, &crate::Configuration::default()).await.expect_err("bad field");
        assert!(err.contains("colour"), "{err}");
        let e = with(r#"{"type": "coffer", "func": "partition", "arguments": {}}"#).expect("loads");
        let crate::Provider::Coffer(p) = &e.method[0].provider else { panic!("coffer") };
        let err = super::run(p, &crate::Configuration::default()).await.expect_err("no guard");
        assert!(err.contains("coffer chaos run"), "{err}");
    }
}
