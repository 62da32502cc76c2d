//! `coffer chaos run`: Chaos Toolkit experiments run by the real binary against a real server:
//! the verdict in the exit status, the journal on disk, and rollbacks after a deviation and after
//! Ctrl-C.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{BIN, Server, tempdir};

/// An experiment whose hypothesis is "sys/health answers `want`", a method that runs `method`
/// (a shell line), and a rollback that writes `rolled_back`.
fn experiment(addr: &str, want: u16, method: &str, rolled_back: &std::path::Path) -> Value {
    json!({
        "title": "the server stays healthy",
        "description": "a probe of sys/health before and after a harmless action",
        "configuration": {"coffer_addr": addr},
        "steady-state-hypothesis": {
            "title": "sys/health answers",
            "probes": [{
                "type": "probe", "name": "health", "tolerance": want,
                "provider": {"type": "http", "url": "${coffer_addr}/v1/sys/health", "timeout": 5}
            }]
        },
        "method": [{
            "type": "action", "name": "work",
            "provider": {"type": "process", "path": "/bin/sh", "arguments": ["-c", method]}
        }],
        "rollbacks": [{
            "type": "action", "name": "undo",
            "provider": {"type": "process", "path": "/bin/sh", "arguments": ["-c", format!("echo done > {}", rolled_back.display())]}
        }]
    })
}

/// Runs `exp` with `coffer chaos run` (with `token` as COFFER_TOKEN): (output, journal).
fn run(dir: &std::path::Path, exp: &Value, token: &str) -> (std::process::Output, Value) {
    let file = dir.join("experiment.json");
    std::fs::write(&file, exp.to_string()).expect("experiment");
    let journal = dir.join("journal.json");
    let out = Command::new(BIN)
        .args(["chaos", "run", "-journal-path"])
        .arg(&journal)
        .arg(&file)
        .env("COFFER_TOKEN", token)
        .output()
        .expect("coffer chaos run");
    let j = serde_json::from_slice(&std::fs::read(&journal).expect("journal")).expect("json");
    (out, j)
}

#[tokio::test]
async fn a_steady_experiment_completes_and_a_deviating_one_fails_with_its_rollbacks_run() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let rolled_back = dir.path().join("rolled-back");

    let (out, j) = run(dir.path(), &experiment(&s.addr, 200, "true", &rolled_back), &root);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(j["status"], "completed", "{j}");
    assert_eq!(j["deviated"], false);
    for k in ["start", "end", "duration", "steady_states", "run", "rollbacks", "experiment"] {
        assert!(j.get(k).is_some(), "journal lacks {k}: {j}");
    }
    assert!(rolled_back.exists(), "rollbacks run after a completed run too");

    // The method seals the server: the hypothesis after fails, and the rollback still runs.
    std::fs::remove_file(&rolled_back).expect("rm");
    let seal = format!("{BIN} operator seal -address={}", s.addr);
    let (out, j) = run(dir.path(), &experiment(&s.addr, 200, &seal, &rolled_back), &root);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(j["deviated"], true, "{j}");
    let (code, _) = s.call("GET", "sys/health", None, None).await;
    assert_eq!(code, 503, "the method really sealed the server");
    assert!(rolled_back.exists(), "rollbacks run after a deviation");
}

#[tokio::test]
async fn ctrl_c_interrupts_the_method_and_the_rollbacks_run() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let rolled_back = dir.path().join("rolled-back");
    // An uninitialized server answers sys/health with 501.
    let exp = experiment(&s.addr, 501, "sleep 30", &rolled_back);
    let file = dir.path().join("experiment.json");
    std::fs::write(&file, exp.to_string()).expect("experiment");
    let journal = dir.path().join("journal.json");
    let mut child = Command::new(BIN)
        .args(["chaos", "run", "-journal-path"])
        .arg(&journal)
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the run did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let j: Value =
        serde_json::from_slice(&std::fs::read(&journal).expect("journal")).expect("json");
    assert_eq!(j["status"], "interrupted", "{j}");
    assert!(rolled_back.exists(), "rollbacks run after Ctrl-C");
}
