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

/// A process-only experiment in YAML: the hypothesis "DIR/flag exists", a method running
/// `method`, a rollback that writes DIR/rolled-back and puts the flag back. `title` is quoted
/// YAML text.
fn yaml_experiment(dir: &std::path::Path, title: &str, method: &str) -> String {
    let d = dir.display();
    format!(
        "title: {title}\n\
         steady-state-hypothesis:\n  title: the flag exists\n  probes:\n\
         \x20   - type: probe\n      name: flag\n      tolerance: 0\n\
         \x20     provider: {{type: process, path: /bin/sh, arguments: [\"-c\", \"test -e {d}/flag\"]}}\n\
         method:\n  - type: action\n    name: work\n\
         \x20   provider: {{type: process, path: /bin/sh, arguments: [\"-c\", \"{method}\"]}}\n\
         rollbacks:\n  - type: action\n    name: restore\n\
         \x20   provider: {{type: process, path: /bin/sh, arguments: [\"-c\", \"touch {d}/flag {d}/rolled-back\"]}}\n"
    )
}

fn coffer(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(BIN).args(args).current_dir(dir).output().expect("coffer")
}

#[test]
fn a_yaml_experiment_runs_with_the_continuous_hypothesis_and_reports() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(d.join("flag"), "").expect("flag");
    let method = format!("rm {}/flag; sleep 0.6; touch {}/flag", d.display(), d.display());
    let title = "\"flag <b>outage</b> & back\"";
    std::fs::write(d.join("outage.yml"), yaml_experiment(d, title, &method)).expect("yaml");

    // Default strategy: the flag is back before the hypothesis after, so no deviation.
    let out = coffer(&["chaos", "run", "outage.yml"], d);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let j: Value =
        serde_json::from_slice(&std::fs::read(d.join("journal.json")).expect("j")).expect("json");
    assert_eq!(j["steady_states"]["during"], json!([]));

    // Continuously: the checks during the method see the flag gone: deviated, exit 1.
    let out = coffer(
        &[
            "chaos",
            "run",
            "-hypothesis-strategy=continuously",
            "-hypothesis-frequency=0.1",
            "-journal-path=cont.json",
            "outage.yml",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let j: Value =
        serde_json::from_slice(&std::fs::read(d.join("cont.json")).expect("j")).expect("json");
    assert_eq!(j["status"], "completed");
    assert_eq!(j["deviated"], true);
    let during = j["steady_states"]["during"].as_array().expect("during");
    assert!(during.iter().any(|s| s["steady_state_met"] == false), "{j}");
    assert!(d.join("rolled-back").exists());

    // The report: a summary on stdout, the HTML beside the journal, journal text escaped.
    let out = coffer(&["chaos", "report", "cont.json"], d);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("Experiment: flag <b>outage</b> & back"), "{summary}");
    assert!(summary.contains("Verdict: completed, deviated"), "{summary}");
    assert!(summary.contains("not met"), "{summary}");
    assert!(summary.contains("Rollbacks:\n  - action restore: succeeded"), "{summary}");
    let html = std::fs::read_to_string(d.join("cont.html")).expect("cont.html beside cont.json");
    assert!(html.contains("flag &lt;b&gt;outage&lt;/b&gt; &amp; back"));
    assert!(html.contains("<svg") && html.contains("</title>hypothesis: flag</text>"));
    assert!(!html.contains("<script"));

    // Two journals: one summary each; -output with two is refused.
    let out = coffer(&["chaos", "report", "-output=x.html", "cont.json", "journal.json"], d);
    assert_ne!(out.status.code(), Some(0));
    let out = coffer(&["chaos", "report", "cont.json", "journal.json"], d);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(summary.matches("Experiment: ").count(), 2, "{summary}");
    assert!(d.join("journal.html").exists());
    let out = coffer(&["chaos", "report", "outage.yml"], d);
    assert_ne!(out.status.code(), Some(0), "an experiment is not a journal");
}

#[test]
fn scheduled_runs_write_one_journal_each_and_exit_with_the_worst_verdict() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(d.join("flag"), "").expect("flag");
    std::fs::write(d.join("steady.yaml"), yaml_experiment(d, "steady", "true")).expect("yaml");
    let breaks = format!("rm {}/flag", d.display());
    std::fs::write(d.join("breaks.yaml"), yaml_experiment(d, "breaks", &breaks)).expect("yaml");

    let out = coffer(&["chaos", "run", "-count=2", "-journal-path=out", "steady.yaml"], d);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let names = |sub: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.join(sub))
            .expect("journal dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let two = names("out");
    assert_eq!(two.len(), 2, "{two:?}");
    assert!(two.iter().all(|n| n.starts_with("steady-2") && n.ends_with(".json")), "{two:?}");

    // One deviating experiment among two: exit 1, and both ran (the rollback restores the flag).
    let out = coffer(&["chaos", "run", "breaks.yaml", "steady.yaml"], d);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let all = names("journals");
    assert_eq!(all.len(), 2, "{all:?}");
    let verdicts: Vec<(Value, Value)> = all
        .iter()
        .map(|n| {
            let j: Value =
                serde_json::from_slice(&std::fs::read(d.join("journals").join(n)).expect("j"))
                    .expect("json");
            (j["experiment"]["title"].clone(), j["deviated"].clone())
        })
        .collect();
    assert!(verdicts.contains(&(json!("breaks"), json!(true))), "{verdicts:?}");
    assert!(verdicts.contains(&(json!("steady"), json!(false))), "{verdicts:?}");

    // A bad file among good ones: nothing runs.
    std::fs::write(d.join("bad.yaml"), "title: [").expect("bad");
    let out = coffer(&["chaos", "run", "-journal-path=none", "steady.yaml", "bad.yaml"], d);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml"));
    assert!(!d.join("none").exists(), "nothing is created when a file is invalid");
    let out = coffer(&["chaos", "run", "-interval=soon", "steady.yaml"], d);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn sigterm_stops_a_forever_schedule_after_the_rollbacks_with_the_worst_status() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(d.join("flag"), "").expect("flag");
    std::fs::write(d.join("slow.yaml"), yaml_experiment(d, "slow", "sleep 30")).expect("yaml");
    let mut child = Command::new(BIN)
        .args(["chaos", "run", "-interval=1h", "slow.yaml"])
        .current_dir(d)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "the schedule did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "the interrupted run is the worst status");
    assert!(d.join("rolled-back").exists(), "rollbacks run before exiting");
    let journals: Vec<_> = std::fs::read_dir(d.join("journals")).expect("dir").collect();
    assert_eq!(journals.len(), 1);

    // A signal while waiting for the next round is not a failure: the runs so far decide.
    std::fs::write(d.join("quick.yaml"), yaml_experiment(d, "quick", "true")).expect("yaml");
    let mut child = Command::new(BIN)
        .args(["chaos", "run", "-interval=1h", "-journal-path=quick", "quick.yaml"])
        .current_dir(d)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while std::fs::read_dir(d.join("quick")).map_or(0, |r| r.count()) == 0 {
        assert!(start.elapsed() < Duration::from_secs(15), "the first round did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the schedule did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "every run so far completed without deviation");
}
