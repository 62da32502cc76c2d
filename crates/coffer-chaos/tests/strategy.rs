//! Hypothesis strategies and the continuous hypothesis, against real local processes: the
//! steady state is "a flag file exists", which the method removes and puts back.

#![allow(clippy::unwrap_used)] // reason: test code

use std::path::Path;
use std::time::{Duration, Instant};

use coffer_chaos::{
    Configuration, Experiment, HypothesisStrategy, Journal, Options, RunStatus, Status, run_with,
};
use serde_json::{Value, json};

fn sh(line: &str) -> Value {
    json!({"type": "process", "path": "/bin/sh", "arguments": ["-c", line]})
}

/// Hypothesis: `DIR/flag` exists. Method: `method` (a shell line). Rollback: writes
/// `DIR/rolled-back` and puts the flag back.
fn experiment(dir: &Path, method: &str) -> Experiment {
    let d = dir.display();
    let e = json!({
        "title": "the flag stays",
        "steady-state-hypothesis": {"title": "the flag exists", "probes": [
            {"type": "probe", "name": "flag", "tolerance": 0, "provider": sh(&format!("test -e {d}/flag"))}
        ]},
        "method": [{"type": "action", "name": "work", "provider": sh(method)}],
        "rollbacks": [{"type": "action", "name": "restore",
                       "provider": sh(&format!("touch {d}/flag {d}/rolled-back"))}]
    });
    Experiment::from_json(&e.to_string()).unwrap()
}

async fn go(dir: &Path, method: &str, strategy: HypothesisStrategy, fail_fast: bool) -> Journal {
    std::fs::write(dir.join("flag"), "").unwrap();
    let e = experiment(dir, method);
    let options = Options { strategy, frequency: Duration::from_millis(100), fail_fast };
    run_with(&e, &Configuration::default(), &options, std::future::pending()).await
}

fn met(j: &Journal) -> Vec<Option<bool>> {
    j.steady_states.during.iter().map(|s| s.steady_state_met).collect()
}

#[tokio::test]
async fn continuously_records_the_hypothesis_during_the_method_and_a_miss_deviates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let method = format!("sleep 0.3; rm {d}/flag; sleep 0.6; touch {d}/flag; sleep 0.3");
    let j = go(dir.path(), &method, HypothesisStrategy::Continuously, false).await;

    let during = met(&j);
    assert!(during.len() >= 4, "{during:?}");
    assert!(during.contains(&Some(true)) && during.contains(&Some(false)), "{during:?}");
    assert!(j.steady_states.during.iter().all(|s| s.probes.len() == 1));
    // The flag was back before the hypothesis after: only the continuous check saw the outage.
    assert_eq!(j.steady_states.before.as_ref().unwrap().steady_state_met, Some(true));
    assert_eq!(j.steady_states.after.as_ref().unwrap().steady_state_met, Some(true));
    assert_eq!(j.status, Status::Completed);
    assert!(j.deviated);
    assert_eq!(j.exit_code(), 1);
    assert_eq!(j.run[0].status, RunStatus::Succeeded);
    assert!(dir.path().join("rolled-back").exists());
    let shape = serde_json::to_value(&j).unwrap();
    assert_eq!(shape["steady_states"]["during"][0]["probes"][0]["activity"]["name"], "flag");
}

#[tokio::test]
async fn continuously_without_a_miss_completes_and_runs_at_least_once() {
    let dir = tempfile::tempdir().unwrap();
    let j = go(dir.path(), "true", HypothesisStrategy::Continuously, true).await;
    assert_eq!(j.status, Status::Completed);
    assert!(!j.deviated);
    assert_eq!(met(&j), vec![Some(true)], "a method shorter than the frequency is checked once");

    let j = go(dir.path(), "sleep 0.5", HypothesisStrategy::Continuously, true).await;
    assert!(met(&j).len() >= 3 && met(&j).iter().all(|m| *m == Some(true)), "{:?}", met(&j));
    assert_eq!(j.exit_code(), 0);
}

#[tokio::test]
async fn fail_fast_stops_the_method_at_the_first_miss_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let method = format!("rm {d}/flag; sleep 30; touch {d}/never");
    let started = Instant::now();
    let j = go(dir.path(), &method, HypothesisStrategy::DuringMethodOnly, true).await;

    assert!(started.elapsed() < Duration::from_secs(10), "the method was not stopped");
    assert_eq!(j.status, Status::Failed);
    assert!(j.deviated);
    assert_eq!(met(&j).last(), Some(&Some(false)));
    assert_eq!(j.run[0].status, RunStatus::Failed);
    let exception = j.run[0].exception.as_ref().unwrap();
    assert!(exception[0].contains("fail fast"), "{exception:?}");
    assert!(j.steady_states.before.is_none() && j.steady_states.after.is_none());
    assert!(!dir.path().join("never").exists());
    assert!(dir.path().join("rolled-back").exists(), "rollbacks run after fail fast");
}

#[tokio::test]
async fn each_strategy_runs_the_hypothesis_where_it_says() {
    use HypothesisStrategy::*;
    let dir = tempfile::tempdir().unwrap();
    // (strategy, before, during, after)
    for (strategy, before, during, after) in [
        (Default, true, false, true),
        (BeforeMethodOnly, true, false, false),
        (AfterMethodOnly, false, false, true),
        (DuringMethodOnly, false, true, false),
        (Continuously, true, true, true),
    ] {
        let j = go(dir.path(), "true", strategy, false).await;
        assert_eq!(j.steady_states.before.is_some(), before, "{strategy:?}");
        assert_eq!(!j.steady_states.during.is_empty(), during, "{strategy:?}");
        assert_eq!(j.steady_states.after.is_some(), after, "{strategy:?}");
        assert_eq!(j.exit_code(), 0, "{strategy:?}");
    }
    // after-method-only: no gate, so a system out of its steady state still gets the method
    // played, and the hypothesis after shows the deviation.
    let d = dir.path().display();
    let e = experiment(dir.path(), &format!("touch {d}/played"));
    std::fs::remove_file(dir.path().join("flag")).unwrap();
    let options = Options { strategy: AfterMethodOnly, ..Options::default() };
    let j = run_with(&e, &Configuration::default(), &options, std::future::pending()).await;
    assert!(dir.path().join("played").exists());
    assert_eq!(j.steady_states.after.as_ref().unwrap().steady_state_met, Some(false));
    assert!(j.deviated);
    assert_eq!(j.status, Status::Completed);
}

#[test]
fn strategy_names_are_chaostoolkits() {
    for name in HypothesisStrategy::NAMES {
        assert!(name.parse::<HypothesisStrategy>().is_ok(), "{name}");
    }
    assert_eq!(
        "continously".parse::<HypothesisStrategy>().unwrap(),
        HypothesisStrategy::Continuously
    );
    assert!("always".parse::<HypothesisStrategy>().is_err());
}
