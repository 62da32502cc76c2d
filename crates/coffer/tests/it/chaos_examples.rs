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
