//! Host faults recorded on the server: after a host fault is applied, a `host` server fault
//! (`sys/chaos/faults`) with the same kind, id, duration and target, so the server's audit log
//! has its start and, by the server's own timer at the same deadline, its end. Used by
//! `coffer chaos fault <host kind>` and by the `coffer` provider.
//!
//! Guarantees: the host fault stands whatever happens to its record; a record that could not be
//! made says why in the output (`server_record_error`), and without a server nothing is tried
//! (`server_record: null`). Every call to the server gives up after [`RECORD_TIMEOUT`], so a
//! fault on the server's own network cannot hold the command up. Nothing here writes a token
//! anywhere: the guard never needs one, the server's deadline ends the record.
//! A `pause` of the server's own process (a process listening on the server address's port)
//! is recorded just before it is applied, since a paused server cannot answer afterwards (the
//! record is removed again if the pause then fails); a `kill` of it is not recorded (its faults
//! end with it, so the record would never get an end entry), and says so.
//! Not done: recording host faults started elsewhere, or retrying a failed record.

use std::collections::HashSet;
use std::time::Duration;

use coffer_api::Client;
use coffer_api::chaos::{FaultKind, FaultSpec, HostKind, WireDuration};
use serde_json::{Value, json};

use super::{FaultError, HostOptions, PauseArgs, Result};

/// The longest any call to the server for a record may take.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// The server host faults are recorded on.
pub struct Recorder {
    pub client: Client,
    /// As configured (`https://host:8200`): its port tells whether a target is the server.
    pub address: String,
}

/// What a record's `target` says, from the host fault's output; capped at 256 bytes (the
/// server's limit), cut at a character boundary.
fn target_text(kind: HostKind, out: &Value) -> Option<String> {
    let s = |k: &str| out.get(k).and_then(Value::as_str).map(str::to_owned);
    let n = |k: &str| out.get(k).and_then(Value::as_u64);
    let t = match kind {
        HostKind::Partition => format!(
            "netns {} -> {} ({})",
            s("netns")?,
            s("target").unwrap_or_default(),
            s("mode").unwrap_or_default()
        ),
        HostKind::Netem => {
            format!("netns {} dev {}", s("netns")?, s("interface").unwrap_or_default())
        }
        HostKind::Kill => match s("signal") {
            Some(sig) => format!("pid {} (SIG{sig})", n("pid")?),
            None => format!("pid {}", n("pid")?),
        },
        HostKind::Pause => format!("pid {}", n("pid")?),
        HostKind::AgentCache => {
            format!("{} ({})", s("path")?, s("mode").unwrap_or_default())
        }
    };
    let t: String = t.chars().filter(|c| !c.is_control()).collect();
    let mut end = t.len().min(256);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    Some(t[..end].to_owned())
}

/// The record of a host fault, from the output it printed.
pub fn spec_of(out: &Value) -> std::result::Result<FaultSpec, String> {
    let kind = out
        .get("kind")
        .and_then(Value::as_str)
        .and_then(HostKind::parse)
        .ok_or("the host fault's output names no known kind")?;
    let id = out.get("id").and_then(Value::as_str).ok_or("the host fault's output has no id")?;
    let mut spec = FaultSpec::new(FaultKind::Host);
    spec.host_kind = Some(kind);
    spec.host_id = Some(id.to_owned());
    spec.target = target_text(kind, out);
    if kind != HostKind::AgentCache {
        let secs = out
            .get("duration_seconds")
            .and_then(Value::as_f64)
            .ok_or("the host fault's output has no duration_seconds")?;
        spec.duration = Some(WireDuration(Duration::from_secs_f64(secs)));
    }
    Ok(spec)
}

async fn bounded<T, F>(what: &str, f: F) -> std::result::Result<T, String>
where
    F: std::future::Future<Output = std::result::Result<T, crate::server::FaultError>>,
{
    match tokio::time::timeout(RECORD_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => {
            Err(format!("{what}: the server did not answer within {}s", RECORD_TIMEOUT.as_secs()))
        }
    }
}

/// Records `spec`; the server fault's id.
async fn post(r: &Recorder, spec: &FaultSpec) -> std::result::Result<String, String> {
    bounded("recording the host fault on the server", crate::server::start_with(&r.client, spec))
        .await
        .map(|f| f.id)
}

/// `server_record` (the server fault's id, or null) or `server_record_error` in `out`.
fn note(out: &mut Value, record: Option<std::result::Result<String, String>>) {
    let Some(m) = out.as_object_mut() else { return };
    match record {
        None => {
            m.insert("server_record".into(), Value::Null);
        }
        Some(Ok(id)) => {
            m.insert("server_record".into(), json!(id));
        }
        Some(Err(e)) => {
            m.insert("server_record_error".into(), json!(e));
        }
    }
}

/// The pid a `pause` or `kill` names (`pid`, or the number in `pid_file`), if it can be told.
fn named_pid(arguments: &Value) -> Option<u32> {
    if let Some(p) = arguments.get("pid").and_then(Value::as_u64) {
        return u32::try_from(p).ok();
    }
    let file = arguments.get("pid_file").and_then(Value::as_str)?;
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether `pid` has a listening TCP socket on the port of `address` (in its own network
/// namespace, as `/proc/PID/net` shows it): then it is the server, or stands in front of it.
pub fn serves(pid: u32, address: &str) -> bool {
    let Some(port) = reqwest::Url::parse(address).ok().and_then(|u| u.port_or_known_default())
    else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    let sockets: HashSet<String> = fds
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).map(str::to_owned)
        })
        .collect();
    let port_hex = format!("{port:04X}");
    ["tcp", "tcp6"].iter().any(|t| {
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default();
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN; the inode is field 9.
            f.len() > 9
                && f[3] == "0A"
                && f[1].rsplit(':').next() == Some(port_hex.as_str())
                && sockets.contains(f[9])
        })
    })
}

/// Applies the host fault `func` (as [`super::call`] does) and records it on `server` when one
/// is given; the fault's output with `server_record` or `server_record_error`.
pub async fn call(
    func: &str,
    arguments: Value,
    o: &HostOptions,
    server: Option<&Recorder>,
) -> Result<Value> {
    let Some(r) = server else {
        let mut out = super::call(func, arguments, o).await?;
        note(&mut out, None);
        return Ok(out);
    };
    let kind = HostKind::parse(func);
    let own = matches!(kind, Some(HostKind::Pause | HostKind::Kill))
        && named_pid(&arguments).is_some_and(|p| serves(p, &r.address));
    if own && kind == Some(HostKind::Pause) {
        return pause_of_the_server(arguments, o, r).await;
    }
    let mut out = super::call(func, arguments, o).await?;
    let record = if own {
        Err(format!(
            "not recorded: the process killed is the server at {} itself, whose faults end with it",
            r.address
        ))
    } else {
        match spec_of(&out) {
            Ok(spec) => post(r, &spec).await,
            Err(e) => Err(e),
        }
    };
    note(&mut out, Some(record));
    Ok(out)
}

/// A paused server cannot answer: its record is made first, under the id the fault will have.
async fn pause_of_the_server(arguments: Value, o: &HostOptions, r: &Recorder) -> Result<Value> {
    let a: PauseArgs = serde_json::from_value(arguments)
        .map_err(|e| FaultError::Invalid(format!("pause: {e}")))?;
    let id = super::new_id();
    let mut spec = FaultSpec::new(FaultKind::Host);
    spec.host_kind = Some(HostKind::Pause);
    spec.host_id = Some(id.clone());
    spec.duration = Some(WireDuration(a.duration));
    spec.target = a
        .pid
        .or_else(|| named_pid(&json!({"pid_file": a.pid_file})))
        .map(|p| format!("pid {p} (the server)"));
    let record = post(r, &spec).await;
    match super::pause_with_id(&a, o, id).await {
        Ok(mut out) => {
            note(&mut out, Some(record));
            Ok(out)
        }
        Err(e) => {
            if let Ok(fid) = &record {
                // The pause did not happen: its record ends now (reason removed).
                let _ = bounded("", crate::server::stop_with(&r.client, fid)).await;
            }
            Err(e)
        }
    }
}

/// Ends the server's record of host fault `host_id`, if there is one running: its id, or
/// `None` when there is none (ended at its deadline already, or never made).
pub async fn unrecord(r: &Recorder, host_id: &str) -> std::result::Result<Option<String>, String> {
    let faults =
        bounded("listing the server's faults", crate::server::list_with(&r.client)).await?;
    let Some(f) = faults
        .into_iter()
        .find(|f| f.spec.kind == FaultKind::Host && f.spec.host_id.as_deref() == Some(host_id))
    else {
        return Ok(None);
    };
    bounded("ending the server's record", crate::server::stop_with(&r.client, &f.id)).await?;
    Ok(Some(f.id))
}

/// [`unrecord`] as `server_record` / `server_record_error` in a `stop`'s output.
pub async fn note_unrecord(out: &mut Value, r: Option<&Recorder>, host_id: &str) {
    let record = match r {
        None => None,
        Some(r) => Some(unrecord(r, host_id).await.map(|id| id.unwrap_or_default())),
    };
    match record {
        Some(Ok(id)) if id.is_empty() => note(out, None),
        other => note(out, other),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_the_faults_kind_id_duration_and_target() {
        let out = json!({"id": "hostfault-1-2-0000000a", "kind": "partition",
            "duration_seconds": 1.5, "netns": "app", "target": "10.0.0.1/32", "mode": "drop"});
        let s = spec_of(&out).unwrap();
        assert_eq!(s.kind, FaultKind::Host);
        assert_eq!(s.host_kind, Some(HostKind::Partition));
        assert_eq!(s.host_id.as_deref(), Some("hostfault-1-2-0000000a"));
        assert_eq!(s.duration, Some(WireDuration(Duration::from_millis(1500))));
        assert_eq!(s.target.as_deref(), Some("netns app -> 10.0.0.1/32 (drop)"));
        let cache = json!({"id": "hostfault-1-2-0000000b", "kind": "agent-cache",
            "path": "/x/agent.cache", "mode": "corrupt"});
        let s = spec_of(&cache).unwrap();
        assert_eq!(s.host_kind, Some(HostKind::AgentCache));
        assert_eq!(s.duration, None, "one-shot");
        assert!(s.one_shot());
        let long = json!({"id": "hostfault-1", "kind": "agent-cache", "path": "é".repeat(300), "mode": "delete"});
        assert!(spec_of(&long).unwrap().target.unwrap().len() <= 256);
        assert!(spec_of(&json!({"id": "hostfault-1", "kind": "pause"})).is_err());
    }

    #[test]
    fn a_process_serves_an_address_when_it_listens_on_its_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = std::process::id();
        assert!(serves(me, &format!("http://127.0.0.1:{port}")));
        drop(l);
        assert!(!serves(me, &format!("http://127.0.0.1:{port}")));
        assert!(!serves(me, "not a url"));
    }
}
