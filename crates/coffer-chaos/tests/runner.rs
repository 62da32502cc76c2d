//! The runner against real local processes (`/bin/sh`) and a real local HTTP server.

#![allow(clippy::unwrap_used)] // reason: test code

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use coffer_chaos::{Configuration, Experiment, Journal, RunStatus, Status, run};
use serde_json::{Value, json};

/// A service with a health endpoint that turns 503 once `/break` was posted.
async fn server() -> String {
    let broken = Arc::new(AtomicBool::new(false));
    let app = Router::new()
        .route(
            "/health",
            get(|State(b): State<Arc<AtomicBool>>| async move {
                if b.load(Ordering::SeqCst) {
                    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"sealed": true})))
                } else {
                    (StatusCode::OK, Json(json!({"sealed": false, "nodes": [{"up": true}]})))
                }
            }),
        )
        .route(
            "/echo",
            get(|uri: axum::http::Uri| async move { uri.query().unwrap_or_default().to_owned() })
                .post(|body: String| async move { body }),
        )
        .route(
            "/break",
            post(|State(b): State<Arc<AtomicBool>>| async move {
                b.store(true, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(broken);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn health_hypothesis() -> Value {
    json!({
        "title": "the service is healthy and unsealed",
        "probes": [
            {"type": "probe", "name": "health-200", "tolerance": 200,
             "provider": {"type": "http", "url": "${base}/health", "timeout": 3}},
            {"type": "probe", "name": "unsealed",
             "tolerance": {"type": "jsonpath", "path": "$.sealed", "expect": false, "target": "body"},
             "provider": {"type": "http", "url": "${base}/health"}},
            {"type": "probe", "name": "a-count-in-range",
             "tolerance": {"type": "range", "range": [1, 5], "target": "stdout"},
             "provider": {"type": "process", "path": "/bin/sh", "arguments": ["-c", "echo 3"]}}
        ]
    })
}

fn rollback_writing(file: &str) -> Value {
    json!({"type": "action", "name": "restore",
           "provider": {"type": "process", "path": "/bin/sh",
                        "arguments": format!("-c 'echo restored > ${{dir}}/{file}'")}})
}

async fn run_with(
    base: &str,
    dir: &Path,
    mut experiment: Value,
    cancel: impl Future<Output = ()>,
) -> Journal {
    experiment["configuration"] = json!({
        "base": base,
        "dir": {"type": "env", "key": "CHAOS_TEST_DIR_UNSET", "default": dir.to_str().unwrap()},
    });
    let e = Experiment::from_json(&experiment.to_string()).unwrap();
    let config = Configuration::load(&e, |_| None).unwrap();
    run(&e, &config, cancel).await
}

fn never() -> impl Future<Output = ()> {
    std::future::pending()
}

#[tokio::test]
async fn hypothesis_holds_so_the_run_completes_without_deviation() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "nothing breaks",
        "steady-state-hypothesis": health_hypothesis(),
        "method": [
            {"type": "action", "name": "background-load", "background": true,
             "provider": {"type": "process", "path": "/bin/sh",
                          "arguments": "-c 'sleep 0.3; echo done > ${dir}/background'"}},
            {"type": "action", "name": "touch", "pauses": {"before": 0.05, "after": "0.05"},
             "provider": {"type": "process", "path": "/bin/sh", "arguments": ["-c", "echo hi; echo oops >&2; exit 3"]}},
            {"type": "probe", "name": "health", "provider": {"type": "http", "url": "${base}/health"}}
        ],
        "rollbacks": [rollback_writing("rolled-back")]
    });
    let journal = run_with(&base, dir.path(), experiment, never()).await;

    assert_eq!(journal.status, Status::Completed);
    assert!(!journal.deviated);
    assert_eq!(journal.exit_code(), 0);
    let before = journal.steady_states.before.as_ref().unwrap();
    let after = journal.steady_states.after.as_ref().unwrap();
    assert_eq!(before.steady_state_met, Some(true));
    assert_eq!(after.steady_state_met, Some(true));
    assert_eq!(after.probes.len(), 3);
    // A non-zero exit is the process's output, not a failed activity, as in Chaos Toolkit.
    let touch = &journal.run[1];
    assert_eq!(touch.status, RunStatus::Succeeded);
    assert_eq!(touch.output, json!({"status": 3, "stdout": "hi\n", "stderr": "oops\n"}));
    // The background activity finished before the hypothesis after.
    assert_eq!(journal.run[0].status, RunStatus::Succeeded);
    assert!(dir.path().join("background").exists());
    assert_eq!(journal.run[2].output["body"]["nodes"][0]["up"], json!(true));
    assert_eq!(journal.rollbacks.len(), 1);
    assert!(dir.path().join("rolled-back").exists());
}

#[tokio::test]
async fn a_probe_out_of_tolerance_after_the_method_deviates_and_rollbacks_run() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "breaking the service shows",
        "steady-state-hypothesis": health_hypothesis(),
        "method": [
            {"type": "action", "name": "break", "provider":
                {"type": "http", "method": "POST", "url": "${base}/break", "expected_status": 204}}
        ],
        "rollbacks": [rollback_writing("rolled-back")]
    });
    let journal = run_with(&base, dir.path(), experiment, never()).await;

    assert_eq!(journal.status, Status::Completed);
    assert!(journal.deviated);
    assert_eq!(journal.exit_code(), 1);
    let after = journal.steady_states.after.as_ref().unwrap();
    assert_eq!(after.steady_state_met, Some(false));
    assert_eq!(after.probes.len(), 1, "the hypothesis stops at the first probe out of tolerance");
    assert_eq!(after.probes[0].tolerance_met, Some(false));
    assert_eq!(after.probes[0].output["status"], json!(503));
    assert!(dir.path().join("rolled-back").exists());
}

#[tokio::test]
async fn a_failing_action_fails_the_run_and_rollbacks_run() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "the fault cannot be injected",
        "steady-state-hypothesis": health_hypothesis(),
        "method": [
            {"type": "action", "name": "too-slow", "provider":
                {"type": "process", "path": "/bin/sh", "arguments": "-c 'sleep 5'", "timeout": 0.2}},
            {"type": "action", "name": "never-reached", "provider":
                {"type": "process", "path": "/bin/sh", "arguments": "-c 'echo x > ${dir}/reached'"}}
        ],
        "rollbacks": [rollback_writing("rolled-back")]
    });
    let journal = run_with(&base, dir.path(), experiment, never()).await;

    assert_eq!(journal.status, Status::Failed);
    assert!(!journal.deviated);
    assert_eq!(journal.exit_code(), 1);
    assert_eq!(journal.run.len(), 1);
    assert_eq!(journal.run[0].status, RunStatus::Failed);
    let exception = journal.run[0].exception.as_ref().unwrap();
    assert!(exception[0].contains("too long"), "{exception:?}");
    assert!(!dir.path().join("reached").exists());
    assert!(journal.steady_states.after.is_none());
    assert!(dir.path().join("rolled-back").exists());
}

#[tokio::test]
async fn an_unreachable_http_action_and_an_unexpected_status_fail_the_activity() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    for provider in [
        json!({"type": "http", "url": "${base}/health", "expected_status": 204}),
        json!({"type": "http", "url": "http://127.0.0.1:9/nothing", "timeout": 2}),
        json!({"type": "process", "path": "/no/such/executable"}),
    ] {
        let experiment = json!({"title": "t", "method": [{"type": "action", "name": "a", "provider": provider}]});
        let journal = run_with(&base, dir.path(), experiment, never()).await;
        assert_eq!(journal.status, Status::Failed, "{provider}");
        assert_eq!(journal.run[0].status, RunStatus::Failed, "{provider}");
    }
}

#[tokio::test]
async fn cancellation_mid_method_interrupts_and_rollbacks_run() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "the operator presses Ctrl-C",
        "steady-state-hypothesis": health_hypothesis(),
        "method": [
            {"type": "action", "name": "long-fault", "provider":
                {"type": "process", "path": "/bin/sh", "arguments": ["-c", "sleep 30"]}},
            {"type": "action", "name": "background-fault", "background": true, "provider":
                {"type": "process", "path": "/bin/sh", "arguments": ["-c", "sleep 30"]}}
        ],
        "rollbacks": [rollback_writing("rolled-back")]
    });
    let started = Instant::now();
    let journal =
        run_with(&base, dir.path(), experiment, tokio::time::sleep(Duration::from_millis(500)))
            .await;

    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(journal.status, Status::Interrupted);
    assert_eq!(journal.exit_code(), 1);
    assert_eq!(journal.run.len(), 1);
    assert_eq!(journal.run[0].status, RunStatus::Failed);
    assert_eq!(journal.run[0].exception, Some(vec!["interrupted".to_owned()]));
    assert!(journal.steady_states.after.is_none());
    assert!(dir.path().join("rolled-back").exists());
}

#[tokio::test]
async fn a_hypothesis_not_met_before_stops_the_run_and_rollbacks_still_run() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "not in steady state",
        "steady-state-hypothesis": {"title": "h", "probes": [
            {"type": "probe", "name": "says-ready",
             "tolerance": {"type": "regex", "pattern": "^ready$", "target": "stdout"},
             "provider": {"type": "process", "path": "/bin/sh", "arguments": "-c 'echo starting'"}}
        ]},
        "method": [
            {"type": "action", "name": "never", "provider":
                {"type": "process", "path": "/bin/sh", "arguments": "-c 'echo x > ${dir}/reached'"}}
        ],
        "rollbacks": [rollback_writing("rolled-back")]
    });
    let journal = run_with(&base, dir.path(), experiment, never()).await;

    // Failed (the experiment proved nothing, and a CI job must not pass it), not deviated, the
    // method not played.
    assert_eq!(journal.status, Status::Failed);
    assert_ne!(journal.exit_code(), 0);
    assert!(!journal.deviated);
    assert_eq!(journal.steady_states.before.as_ref().unwrap().steady_state_met, Some(false));
    assert!(journal.run.is_empty());
    assert!(!dir.path().join("reached").exists());
    assert!(dir.path().join("rolled-back").exists());
}

#[tokio::test]
async fn the_journal_has_chaostoolkit_fields() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "journal shape",
        "steady-state-hypothesis": health_hypothesis(),
        "method": [{"type": "probe", "name": "health", "provider": {"type": "http", "url": "${base}/health"}}],
        "rollbacks": [rollback_writing("rolled-back")]
    });
    let journal = run_with(&base, dir.path(), experiment, never()).await;
    let j = serde_json::to_value(&journal).unwrap();

    for key in [
        "coffer-chaos-version",
        "platform",
        "node",
        "experiment",
        "start",
        "end",
        "duration",
        "status",
        "deviated",
        "steady_states",
        "run",
        "rollbacks",
    ] {
        assert!(j.get(key).is_some(), "journal lacks {key}");
    }
    assert_eq!(j["status"], json!("completed"));
    assert_eq!(j["deviated"], json!(false));
    assert_eq!(j["experiment"]["title"], json!("journal shape"));
    assert!(j["steady_states"]["before"]["probes"].is_array());
    assert_eq!(j["steady_states"]["during"], json!([]));
    assert!(j["duration"].as_f64().unwrap() > 0.0);
    for activity in [&j["run"][0], &j["rollbacks"][0], &j["steady_states"]["after"]["probes"][0]] {
        for key in ["activity", "output", "status", "start", "end", "duration"] {
            assert!(activity.get(key).is_some(), "activity lacks {key}: {activity}");
        }
        assert_eq!(activity["status"], json!("succeeded"));
        assert!(activity.get("exception").is_none());
    }
    assert_eq!(j["run"][0]["activity"]["name"], json!("health"));
    assert_eq!(j["run"][0]["output"]["status"], json!(200));
    let back: Journal = serde_json::from_value(j).unwrap();
    assert_eq!(back.status, Status::Completed);
}

#[tokio::test]
async fn cancellation_kills_what_a_shell_activity_started() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "a fault that forks",
        "method": [
            {"type": "action", "name": "forking-fault", "provider":
                {"type": "process", "path": "/bin/sh",
                 "arguments": "-c '(sleep 1; echo leaked > ${dir}/leaked) & wait'"}}
        ]
    });
    let journal =
        run_with(&base, dir.path(), experiment, tokio::time::sleep(Duration::from_millis(300)))
            .await;
    assert_eq!(journal.status, Status::Interrupted);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!dir.path().join("leaked").exists(), "the shell's child outlived the activity");
}

#[tokio::test]
async fn http_arguments_go_in_the_query_for_get_and_in_the_body_otherwise() {
    let base = server().await;
    let dir = tempfile::tempdir().unwrap();
    let experiment = json!({
        "title": "arguments",
        "method": [
            {"type": "probe", "name": "query", "provider":
                {"type": "http", "url": "${base}/echo", "arguments": {"a": 1, "b": true}}},
            {"type": "probe", "name": "raw-query", "provider":
                {"type": "http", "url": "${base}/echo", "arguments": "x=${dir}"}},
            {"type": "probe", "name": "json", "provider":
                {"type": "http", "method": "post", "url": "${base}/echo",
                 "headers": {"Content-Type": "application/json"}, "arguments": {"n": "${n}"}}},
            {"type": "probe", "name": "form", "provider":
                {"type": "http", "method": "POST", "url": "${base}/echo", "arguments": {"k": "v w"}}}
        ]
    });
    let journal = run_with(&base, dir.path(), experiment, never()).await;
    assert_eq!(journal.status, Status::Completed);
    let bodies: Vec<&Value> = journal.run.iter().map(|r| &r.output["body"]).collect();
    assert_eq!(bodies[0], &json!("a=1&b=True"));
    assert_eq!(bodies[1], &json!(format!("x={}", dir.path().display())));
    assert_eq!(bodies[2], &json!(r#"{"n":"${n}"}"#));
    assert_eq!(bodies[3], &json!("k=v+w"));
}
