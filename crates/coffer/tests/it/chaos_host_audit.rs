//! Host faults recorded on the server: a `coffer chaos fault pause` run with a server
//! configured leaves a `host` fault's start entry in the audit log, and its end at the
//! deadline (or `removed` on an early stop); without a server the host fault works alone
//! (`server_record: null`); a paused server records its own pause before it stops; the API
//! refuses a `host` record without `host_id` (400) or without sudo (403).

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::audit::{enable_file_device, entries};
use crate::common::{BIN, Server, tempdir};

async fn chaos_server(dir: &Path) -> (Server, String) {
    let (s, _, root) = crate::chaos_faults::chaos_server(dir).await;
    (s, root)
}

/// A harmless process to pause, killed when dropped.
struct Sleeper(Child);

impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("300").spawn().expect("sleep"))
    }
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state_of(pid: &str) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()).expect("state")
}

/// `coffer ARGS -format=json` with the server (address, token) given, or none at all.
fn coffer(args: &[&str], server: Option<(&str, &str)>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).arg("-format=json");
    for k in ["COFFER_ADDR", "VAULT_ADDR", "COFFER_TOKEN", "VAULT_TOKEN", "COFFER_CACERT"] {
        c.env_remove(k);
    }
    // No token saved by `coffer login` is found either.
    c.env("HOME", "/nonexistent");
    if let Some((addr, token)) = server {
        c.env("COFFER_ADDR", addr).env("COFFER_TOKEN", token);
    }
    c.output().expect("run coffer")
}

fn ok_json(o: &Output) -> Value {
    crate::chaos_host::json_of(o)
}

/// The `chaos` entries about `host` records of host fault `host_id`: (event, reason, fault).
fn host_entries(log: &Path, host_id: &str) -> Vec<(String, String, Value)> {
    entries(log)
        .into_iter()
        .filter(|e| e["type"] == "chaos" && e["chaos"]["fault"]["host_id"] == host_id)
        .map(|e| {
            let c = &e["chaos"];
            (
                c["event"].as_str().unwrap_or("").to_owned(),
                c["reason"].as_str().unwrap_or("").to_owned(),
                c["fault"].clone(),
            )
        })
        .collect()
}

fn wait_for<F: FnMut() -> bool>(secs: u64, what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within {secs}s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_fault_is_recorded_on_the_server_from_start_to_deadline_or_stop() {
    let dir = tempdir();
    let (s, root) = chaos_server(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    let state = dir.path().join("state").display().to_string();
    let server = Some((s.addr.as_str(), root.as_str()));

    // To its deadline: the server's own timer ends the record when the guard resumes the
    // process.
    let p = Sleeper::new();
    let v = ok_json(&coffer(
        &["chaos", "fault", "pause", "-pid", &p.pid(), "-duration", "5s", "-state-dir", &state],
        server,
    ));
    let host_id = v["id"].as_str().expect("id").to_owned();
    let record = v["server_record"].as_str().expect("server_record").to_owned();
    assert!(record.starts_with("fault-"), "{v}");
    assert!(v.get("server_record_error").is_none(), "{v}");
    assert_eq!(state_of(&p.pid()), 'T', "paused");
    let (code, listed) = s.call("GET", "sys/chaos/faults", Some(&root), None).await;
    assert_eq!(code, 200, "{listed}");
    let f = &listed["data"]["faults"][&record];
    assert_eq!(
        (&f["type"], &f["host_kind"], &f["host_id"], &f["duration"]),
        (&json!("host"), &json!("pause"), &json!(host_id), &json!("5s")),
        "{listed}"
    );
    assert_eq!(f["target"], format!("pid {}", p.pid()));
    let got = host_entries(&log, &host_id);
    assert_eq!(got.len(), 1, "the start entry at once: {got:?}");
    assert_eq!((got[0].0.as_str(), got[0].2["id"].as_str()), ("start", Some(record.as_str())));
    wait_for(11, "the record's end entry", || host_entries(&log, &host_id).len() == 2);
    let got = host_entries(&log, &host_id);
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("end", "deadline"), "{got:?}");
    wait_for(5, "the process resumed", || state_of(&p.pid()) != 'T');
    let (_, listed) = s.call("GET", "sys/chaos/faults", Some(&root), None).await;
    assert_eq!(listed["data"]["keys"], json!([]), "{listed}");

    // Stopped early: the host fault is undone and its record removed.
    let v = ok_json(&coffer(
        &["chaos", "fault", "pause", "-pid", &p.pid(), "-duration", "20s", "-state-dir", &state],
        server,
    ));
    let host_id = v["id"].as_str().expect("id").to_owned();
    let record = v["server_record"].as_str().expect("server_record").to_owned();
    let stopped =
        ok_json(&coffer(&["chaos", "fault", "stop", &host_id, "-state-dir", &state], server));
    assert_eq!(stopped["server_record"], json!(record), "{stopped}");
    assert_ne!(state_of(&p.pid()), 'T', "resumed by the stop");
    let got = host_entries(&log, &host_id);
    let events: Vec<(&str, &str)> = got.iter().map(|(e, r, _)| (e.as_str(), r.as_str())).collect();
    assert_eq!(events, [("start", ""), ("end", "removed")], "{got:?}");
    let (_, listed) = s.call("GET", "sys/chaos/faults", Some(&root), None).await;
    assert_eq!(listed["data"]["keys"], json!([]), "{listed}");

    // A record the server refuses (longer than its max_duration): the host fault stands, a
    // warning says why.
    let o = coffer(
        &["chaos", "fault", "pause", "-pid", &p.pid(), "-duration", "40s", "-state-dir", &state],
        server,
    );
    let v = ok_json(&o);
    assert!(v["server_record_error"].as_str().is_some_and(|e| e.contains("max_duration")), "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not recorded on the server"));
    assert_eq!(state_of(&p.pid()), 'T', "the host fault stands");
    let id = v["id"].as_str().expect("id");
    let stopped = ok_json(&coffer(&["chaos", "fault", "stop", id, "-state-dir", &state], server));
    assert_eq!(stopped["server_record"], Value::Null, "nothing to remove: {stopped}");
    assert_ne!(state_of(&p.pid()), 'T');
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_a_host_fault_works_alone() {
    let dir = tempdir();
    let state = dir.path().join("state").display().to_string();
    let p = Sleeper::new();
    let v = ok_json(&coffer(
        &["chaos", "fault", "pause", "-pid", &p.pid(), "-duration", "1s", "-state-dir", &state],
        None,
    ));
    assert_eq!(v["server_record"], Value::Null, "{v}");
    assert!(v.get("server_record_error").is_none(), "nothing tried: {v}");
    assert_eq!(state_of(&p.pid()), 'T');
    wait_for(5, "resumed at the deadline", || state_of(&p.pid()) != 'T');
}

/// A paused server cannot answer afterwards: its own pause is recorded just before, and the
/// record ends by the server's timer once it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_of_the_server_itself_is_recorded_before_it_stops() {
    let dir = tempdir();
    let (s, root) = chaos_server(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    let state = dir.path().join("state").display().to_string();
    let pid = s.pid().to_string();
    let started = Instant::now();
    let v = ok_json(&coffer(
        &["chaos", "fault", "pause", "-pid", &pid, "-duration", "6s", "-state-dir", &state],
        Some((s.addr.as_str(), root.as_str())),
    ));
    // Well within the pause, so the server is still stopped when it is looked at below.
    assert!(started.elapsed() < Duration::from_secs(4), "no wait on the paused server");
    assert!(v["server_record"].as_str().is_some_and(|r| r.starts_with("fault-")), "{v}");
    assert_eq!(state_of(&pid), 'T');
    let host_id = v["id"].as_str().expect("id").to_owned();
    wait_for(15, "the record's end after the server goes on", || {
        host_entries(&log, &host_id).len() == 2
    });
    let got = host_entries(&log, &host_id);
    let events: Vec<(&str, &str)> = got.iter().map(|(e, r, _)| (e.as_str(), r.as_str())).collect();
    assert_eq!(events, [("start", ""), ("end", "deadline")], "{got:?}");
    assert_eq!(got[0].2["target"], format!("pid {pid} (the server)"));
}

#[tokio::test]
async fn a_host_record_needs_its_host_id_and_sudo() {
    let dir = tempdir();
    let (s, root) = chaos_server(dir.path()).await;
    let body = json!({"type": "host", "host_kind": "partition", "duration": 5,
        "target": "netns app -> 10.0.0.1/32 (drop)"});
    let (code, b) = s.call("POST", "sys/chaos/faults", Some(&root), Some(body.clone())).await;
    assert_eq!(code, 400, "{b}");
    assert!(b.to_string().contains("host_id"), "{b}");
    let (code, b) = s
        .call(
            "POST",
            "sys/chaos/faults",
            Some(&root),
            Some(json!({"type": "host", "host_kind": "reboot", "host_id": "hostfault-1", "duration": 5})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    assert!(b.to_string().contains("reboot"), "{b}");
    let policy = "path \"sys/chaos/*\" { capabilities = [\"create\", \"update\", \"read\", \"list\", \"delete\"] }";
    let (code, b) = s
        .call("PUT", "sys/policies/acl/nosudo", Some(&root), Some(json!({"policy": policy})))
        .await;
    assert_eq!(code, 204, "{b}");
    let (_, t) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["nosudo"]})))
        .await;
    let nosudo = t["auth"]["client_token"].as_str().expect("token");
    let mut full = body;
    full["host_id"] = json!("hostfault-1796444686-18982-036c0d6c");
    let (code, b) = s.call("POST", "sys/chaos/faults", Some(nosudo), Some(full.clone())).await;
    assert_eq!(code, 403, "{b}");
    let (code, b) = s.call("POST", "sys/chaos/faults", Some(&root), Some(full)).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["host_kind"], "partition");
    let (code, b) = s
        .call(
            "POST",
            "sys/chaos/faults",
            Some(&root),
            Some(json!({"type": "host", "host_kind": "agent_cache",
                "host_id": "hostfault-1796444686-18982-036c0d6d", "target": "/x (corrupt)"})),
        )
        .await;
    assert_eq!(code, 200, "one-shot, no duration: {b}");
    assert_eq!(b["data"]["started_at"], b["data"]["expires_at"]);
}
