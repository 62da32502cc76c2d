use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

fn observation(path: &str) -> Observation {
    Observation {
        at_ms: 1,
        request_id: "r".into(),
        path: path.into(),
        operation: "read".into(),
        remote: "10.0.0.1".parse().ok(),
        error: String::new(),
        login: false,
        login_role: None,
        mount_type: "kv".into(),
        caller: Some(Caller {
            accessor: "acc1".into(),
            display_name: "token".into(),
            entity_id: String::new(),
            policies: vec!["default".into()],
            role_key: None,
            image_digest: None,
        }),
        issued: None,
    }
}

fn config(v: Value) -> DetectConfig {
    DetectConfig::parse(v.as_object().expect("object")).expect("config")
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_queue_counts_every_drop_and_alerts_once_per_episode() {
    let c = config(json!({
        "queue_size": 2,
        "rule": {"honey": {"type": "honeytoken", "paths": ["secret/honey"]}}
    }));
    let d = Arc::new(Detector::new(c, Arc::default()));
    assert!(d.armed());
    // The task is not started: the queue holds two, the rest are dropped, never waited for.
    let started = Instant::now();
    for _ in 0..5 {
        d.offer(observation("secret/honey"));
    }
    assert!(started.elapsed() < Duration::from_millis(500), "offering never waits");
    let s = &d.stats;
    assert_eq!((s.received.load(Relaxed), s.dropped.load(Relaxed)), (5, 3));
    assert_eq!(s.queue_full_episodes.load(Relaxed), 1, "one episode, however many drops");
    d.start(Weak::new());
    eventually("the queue to drain", || s.processed.load(Relaxed) == 2).await;
    let alerts = d.recent(10);
    let full: Vec<_> = alerts.iter().filter(|a| a["rule"] == "coffer_detect_queue_full").collect();
    assert_eq!(full.len(), 1, "{alerts:?}");
    assert!(full[0]["output"].as_str().expect("output").contains("3 so far"), "{}", full[0]);
    assert_eq!(alerts.iter().filter(|a| a["rule"] == "honey").count(), 2);
    // A second episode is a second alert.
    eventually("the episode to end", || !d.episode.load(Relaxed)).await;
    assert_eq!(
        s.received.load(Relaxed),
        s.processed.load(Relaxed) + s.dropped.load(Relaxed),
        "nothing dropped silently"
    );
}

/// Answers 500 to the first post and 200 after, recording the bodies.
struct Flaky {
    posts: Mutex<Vec<(String, Value)>>,
}

#[async_trait::async_trait]
impl WebhookSender for Flaky {
    async fn post(&self, url: &str, body: Vec<u8>, _t: Duration) -> Result<u16, String> {
        let mut p = self.posts.lock().expect("lock");
        p.push((url.to_owned(), serde_json::from_slice(&body).map_err(|e| e.to_string())?));
        Ok(if p.len() == 1 { 500 } else { 200 })
    }
}

#[tokio::test]
async fn a_webhook_is_retried_after_a_500_and_carries_falcos_fields_without_secrets() {
    let c = config(json!({
        "webhook_url": "http://127.0.0.1:9/hook",
        "rule": {"honey": {"type": "honeytoken", "paths": "secret/*", "actions": "audit,webhook", "tags": ["pci"]}}
    }));
    let d = Arc::new(Detector::new(c, Arc::default()));
    let flaky = Arc::new(Flaky { posts: Mutex::new(Vec::new()) });
    let sender: Arc<dyn WebhookSender> = flaky.clone();
    assert!(d.webhook.set(sender).is_ok());
    d.start(Weak::new());
    d.offer(observation("secret/honey"));
    eventually("the retry", || d.stats.webhook_sent.load(Relaxed) == 1).await;
    assert_eq!(d.stats.webhook_retried.load(Relaxed), 1);
    let posts = flaky.posts.lock().expect("lock").clone();
    assert_eq!(posts.len(), 2);
    let (url, body) = &posts[1];
    assert_eq!(url, "http://127.0.0.1:9/hook");
    for k in ["output", "priority", "rule", "time", "output_fields", "source", "tags", "hostname"] {
        assert!(body.get(k).is_some(), "{k} missing from {body}");
    }
    assert_eq!(body["priority"], "Critical");
    assert_eq!(body["source"], "coffer");
    assert_eq!(body["output_fields"]["coffer.accessor"], "acc1");
    assert_eq!(body["tags"], json!(["coffer", "honeytoken", "pci"]));
    assert!(body["time"].as_str().expect("time").ends_with('Z'));
}

#[test]
fn the_detect_block_parses_with_defaults_and_refuses_mistakes() {
    let c = config(json!({}));
    assert_eq!(c, DetectConfig::default());
    let c = config(
        json!({"queue_size": 10, "rule": [{"a": {"type": "many_paths"}}, {"b": [{"type": "token_cidr"}]}]}),
    );
    assert_eq!(c.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let err = |v: Value| DetectConfig::parse(v.as_object().expect("o")).expect_err("refused");
    assert!(err(json!({"queue": 1})).contains("unknown key \"queue\""));
    assert!(err(json!({"queue_size": 0})).contains("queue_size"));
    assert!(
        err(json!({"rule": {"a": {"type": "x"}}})).contains("detect rule \"a\": unknown rule type")
    );
    assert!(
        err(json!({"rule": [{"a": {"type": "many_paths"}}, {"a": {"type": "many_paths"}}]}))
            .contains("twice")
    );
}

#[test]
fn login_targets_name_the_role_or_user_and_never_a_role_id() {
    let data = |v: Value| v.as_object().cloned().expect("o");
    assert_eq!(
        login_target("auth/jwt/login", &data(json!({"role": "web", "jwt": "x"})), None).as_deref(),
        Some("auth/jwt:web")
    );
    assert_eq!(
        login_target("auth/userpass/login/bob", &data(json!({"password": "p"})), None).as_deref(),
        Some("auth/userpass:bob")
    );
    assert_eq!(
        login_target("auth/approle/login", &data(json!({"role_id": "r", "secret_id": "s"})), None)
            .as_deref(),
        Some("auth/approle")
    );
    // The role the method found the role_id to belong to, never the role_id itself.
    assert_eq!(
        login_target(
            "auth/approle/login",
            &data(json!({"role_id": "r", "secret_id": "s"})),
            Some("web")
        )
        .as_deref(),
        Some("auth/approle:web")
    );
}
