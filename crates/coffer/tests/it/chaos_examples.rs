//! The experiments shipped in examples/chaos, each run by `coffer chaos run` against the setup
//! its own script starts (examples/chaos/demo.sh: a server on the host, agent and app in a
//! container made of namespaces), with the outage windows shortened through the experiments'
//! configuration variables. Each must complete without deviation; against an agent without a
//! persisted cache, the container-restart experiment must deviate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use crate::common::{BIN, tempdir};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/chaos")
}

/// A running demo (examples/chaos/demo.sh start), stopped when dropped.
struct Demo {
    script: PathBuf,
    vars: HashMap<String, String>,
    settings: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Demo {
    /// `settings`: demo.sh's variables (DEMO_MAX_STALE, DEMO_CACHE, ...).
    fn start(settings: &[(&str, &str)]) -> Demo {
        // Unique per test in this process; the pid keeps two suites apart (sqlite, postgresql
        // runs are sequential, but a crashed run may have left its namespace behind).
        let n = NEXT.fetch_add(1, Ordering::Relaxed) + (std::process::id() % 50) * 5;
        let dir = tempdir();
        let mut all = vec![
            ("DEMO_DIR".to_owned(), dir.path().join("demo").display().to_string()),
            ("DEMO_NS".to_owned(), format!("cx{n}")),
            ("DEMO_NET".to_owned(), format!("10.232.{n}")),
            ("COFFER_BIN".to_owned(), BIN.to_owned()),
        ];
        all.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let script = examples().join("demo.sh");
        let run = |cmd: &str| -> Output {
            Command::new("bash")
                .arg(&script)
                .arg(cmd)
                .envs(all.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .expect("demo.sh")
        };
        let _ = run("stop");
        let out = run("start");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut demo = Demo { script, vars: HashMap::new(), settings: all, _dir: dir };
        if !out.status.success() {
            let logs = demo.logs();
            panic!("demo.sh start failed:\n{err}\n{logs}");
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) else {
                continue;
            };
            demo.vars.insert(k.to_owned(), v.trim_matches('\'').to_owned());
        }
        let init: Value = serde_json::from_slice(
            &std::fs::read(Path::new(&demo.vars["DEMO_DIR"]).join("init.json")).expect("init"),
        )
        .expect("json");
        let token = init["root_token"].as_str().expect("root token").to_owned();
        demo.vars.insert("COFFER_TOKEN".to_owned(), token);
        demo
    }

    fn logs(&self) -> String {
        let dir = self.settings.iter().find(|(k, _)| k == "DEMO_DIR").map(|(_, v)| v.clone());
        let Some(dir) = dir else { return String::new() };
        ["server.log", "agent.log", "app.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(Path::new(&dir).join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                format!("--- {f}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect()
    }

    /// Runs an experiment of examples/chaos with `config` as extra environment: (exit code,
    /// journal, stderr).
    fn run(&self, experiment: &str, config: &[(&str, &str)]) -> (Option<i32>, Value, String) {
        let journal = Path::new(&self.vars["DEMO_DIR"]).join(format!("{experiment}.journal.json"));
        let out = Command::new(BIN)
            .args(["chaos", "run", "-journal-path"])
            .arg(&journal)
            .arg(examples().join(format!("{experiment}.json")))
            .envs(&self.vars)
            .envs(config.iter().copied())
            .output()
            .expect("coffer chaos run");
        let j: Value = std::fs::read(&journal)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        (out.status.code(), j, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Asserts the experiment completed without deviation.
    fn passes(&self, experiment: &str, config: &[(&str, &str)]) -> Value {
        let (code, j, err) = self.run(experiment, config);
        assert_eq!(
            code,
            Some(0),
            "{experiment} did not pass:\n{err}\njournal: {}\n{}",
            serde_json::to_string_pretty(&j).unwrap_or_default(),
            self.logs()
        );
        assert_eq!(j["status"], "completed");
        assert_eq!(j["deviated"], false);
        j
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .envs(self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
    }
}

/// PATH with the binary's directory first: the Chaos Toolkit variant runs `coffer` by name.
fn path_with_bin() -> String {
    let dir = Path::new(BIN).parent().expect("bin dir").display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

#[test]
fn secret_store_outage_the_app_keeps_serving() {
    let demo = Demo::start(&[]);
    let j = demo.passes("secret-store-outage", &[("OUTAGE_SECONDS", "4")]);
    let during = j["steady_states"]["during"].as_array().map_or(0, Vec::len);
    assert!(during >= 2, "the hypothesis was checked during the outage: {during} times");
    assert_eq!(j["run"][0]["output"]["kind"], "pause", "{}", j["run"][0]);
}

#[test]
fn network_partition_the_app_keeps_serving() {
    let demo = Demo::start(&[]);
    let j = demo.passes("network-partition", &[("PARTITION_SECONDS", "4")]);
    assert_eq!(j["run"][0]["output"]["kind"], "partition", "{}", j["run"][0]);
    // Only the container lost the server: the host still reached it meanwhile.
    assert_eq!(j["run"][1]["output"]["status"], 200, "{}", j["run"][1]);
}

#[test]
fn dynamic_credential_revoked_new_credentials_reach_the_app() {
    let demo = Demo::start(&[("DEMO_POSTGRES", "1"), ("DEMO_DB_TTL", "9s")]);
    let j = demo.passes("dynamic-credential-revoked", &[("RECOVERY_SECONDS", "20")]);
    let lost = &j["run"][1]["output"]["body"];
    assert_eq!(lost["database"], "login failed", "the revocation really cut the app off: {lost}");
}

#[test]
fn token_revoked_the_agent_logs_in_again() {
    let demo = Demo::start(&[]);
    let j = demo.passes("token-revoked", &[("RECOVERY_SECONDS", "20")]);
    assert_eq!(j["run"][3]["output"]["auth_state"], "authenticated", "{}", j["run"][3]);
    let log = std::fs::read_to_string(Path::new(&demo.vars["DEMO_DIR"]).join("agent.log"))
        .expect("agent log");
    assert!(log.contains("logging in again"), "{log}");
}

#[test]
fn audit_blocked_the_server_fails_closed_and_recovers() {
    let demo = Demo::start(&[]);
    let j = demo.passes("audit-blocked", &[("AUDIT_SECONDS", "4")]);
    let refused = j["run"][1]["output"]["stdout"].as_str().unwrap_or_default();
    assert!(refused.starts_with("refused with 5"), "reads were refused meanwhile: {refused}");
}

#[test]
fn sealed_server_the_app_is_stopped_past_max_stale() {
    let demo = Demo::start(&[("DEMO_EXIT_ON_MAX_STALE", "true"), ("DEMO_MAX_STALE", "4s")]);
    let j = demo.passes("sealed-server", &[("SEAL_SECONDS", "10")]);
    let log = std::fs::read_to_string(Path::new(&demo.vars["DEMO_DIR"]).join("agent.log"))
        .expect("agent log");
    assert!(log.contains("longer than max_stale (exit_on_max_stale): stopping the app"), "{log}");
    assert_eq!(j["steady_states"]["after"]["steady_state_met"], true);
}

/// The persisted cache is what carries the app through a container restart during an outage:
/// with it the experiment passes; without it, it deviates (the probes can fail).
#[test]
fn container_restart_during_outage_needs_the_agent_cache() {
    let demo = Demo::start(&[]);
    demo.passes(
        "container-restart-during-outage",
        &[("OUTAGE_SECONDS", "20"), ("APP_START_SECONDS", "5")],
    );
    drop(demo);

    let demo = Demo::start(&[("DEMO_CACHE", "0")]);
    let (code, j, err) = demo.run(
        "container-restart-during-outage",
        &[("OUTAGE_SECONDS", "20"), ("APP_START_SECONDS", "5")],
    );
    assert_eq!(code, Some(1), "{err}\n{j}");
    assert_eq!((j["status"].as_str(), j["deviated"].as_bool()), (Some("completed"), Some(true)));
    assert_eq!(j["steady_states"]["after"]["probes"][0]["output"]["status"], 503, "{j}");
    assert_eq!(j["rollbacks"][0]["status"], "succeeded", "rollbacks run after a deviation");
}

/// The real Chaos Toolkit runs the http/process variant of secret-store-outage to the same
/// verdict as `coffer chaos run` does.
#[test]
fn chaostoolkit_gives_the_http_process_variant_the_same_verdict() {
    let chaos = std::env::var("COFFER_TEST_CHAOSTOOLKIT").unwrap_or_else(|_| {
        panic!("COFFER_TEST_CHAOSTOOLKIT is not set: run scripts/test, which installs chaostoolkit from PyPI and sets it")
    });
    let demo = Demo::start(&[]);
    let config = [("OUTAGE_SECONDS", "4"), ("PATH", &path_with_bin())];
    let ours = demo.passes("secret-store-outage.ctk", &config);

    let journal = Path::new(&demo.vars["DEMO_DIR"]).join("ctk-journal.json");
    let out = Command::new(&chaos)
        .args(["--no-version-check", "--no-log-file", "run", "--journal-path"])
        .arg(&journal)
        .arg(examples().join("secret-store-outage.ctk.json"))
        .envs(&demo.vars)
        .envs(config.iter().copied())
        .output()
        .expect("chaos run");
    let theirs: Value =
        serde_json::from_slice(&std::fs::read(&journal).expect("chaostoolkit journal"))
            .expect("json");
    assert_eq!(
        out.status.code(),
        Some(0),
        "chaostoolkit:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for k in ["status", "deviated"] {
        assert_eq!(theirs[k], ours[k], "{k}: chaostoolkit {} vs coffer {}", theirs[k], ours[k]);
    }
    let during = theirs["steady_states"]["during"].as_array().map_or(0, Vec::len);
    assert!(during >= 2, "chaostoolkit checked the hypothesis during the outage too: {during}");
    assert_eq!(theirs["run"][0]["status"], "succeeded", "{}", theirs["run"][0]);
}
