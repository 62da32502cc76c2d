//! What an alert does: revoke the token or the role's tokens, write an `alert` entry to the
//! audit devices, post it to a webhook in Falco's output format, and keep it among the recent
//! alerts.
//!
//! Guarantees: the webhook sender has its own bounded queue and at most [`IN_FLIGHT`] posts
//! under way, so a slow or dead receiver never holds the detection task; each alert is tried
//! at most `1 + webhook_retries` times, with doubling waits (0.5 s, 1 s, 2 s, ... at most 30 s),
//! again only after a 5xx, a 429 or no answer; an alert the webhook queue has no room for is
//! counted (`webhook_dropped`) and logged. An alert names tokens by accessor and carries no
//! request or response data. Not done: delivery across a restart (the audit entry is the
//! lasting record), or signing the webhook's body.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};

use super::eval::Finding;
use super::rules::{Action, Rule};
use super::{Caller, Detector, Observation};
use crate::core::Core;

/// Posts under way at once, at most.
const IN_FLIGHT: usize = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The HTTP client the webhook action posts with (the binary's, on the server's TLS stack).
#[async_trait::async_trait]
pub trait WebhookSender: Send + Sync {
    /// POSTs `body` (JSON) to `url`: the answer's status, or why there was none.
    async fn post(&self, url: &str, body: Vec<u8>, timeout: Duration) -> Result<u16, String>;
}

fn hostname() -> String {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
    .clone()
}

fn now_nanos_text() -> String {
    coffer_time::format_rfc3339(std::time::SystemTime::now(), coffer_time::Fraction::Nanos)
}

/// An alert in Falco's output format (`uuid`, `output`, `priority`, `rule`, `time`,
/// `output_fields`, `source`, `tags`, `hostname`), the request's facts in `output_fields`.
pub(crate) fn alert(rule: &Rule, f: &Finding, o: &Observation) -> Value {
    let mut fields = Map::new();
    fields.insert("coffer.rule_type".into(), json!(rule.params.kind()));
    fields.insert("coffer.request_id".into(), json!(o.request_id));
    fields.insert("coffer.path".into(), json!(o.path));
    fields.insert("coffer.operation".into(), json!(o.operation));
    fields.insert("coffer.mount_type".into(), json!(o.mount_type));
    fields.insert(
        "coffer.remote_address".into(),
        json!(o.remote.map(|a| a.to_string()).unwrap_or_default()),
    );
    fields.insert("coffer.error".into(), json!(o.error));
    if let Some(c) = &o.caller {
        fields.insert("coffer.accessor".into(), json!(c.accessor));
        fields.insert("coffer.display_name".into(), json!(c.display_name));
        fields.insert("coffer.entity_id".into(), json!(c.entity_id));
        fields.insert("coffer.policies".into(), json!(c.policies));
        if let Some(r) = &c.role_key {
            fields.insert("coffer.role".into(), json!(r));
        }
        if let Some(d) = &c.image_digest {
            fields.entry("coffer.image_digest").or_insert_with(|| json!(d));
        }
    }
    if let Some(r) = &o.login_role {
        fields.insert("coffer.login_role".into(), json!(r));
    }
    fields.extend(f.fields.clone());
    let mut tags = vec!["coffer".to_owned(), rule.params.kind().to_owned()];
    tags.extend(rule.tags.iter().cloned());
    json!({
        "uuid": crate::random::uuid_v4(),
        "output": f.output,
        "priority": rule.priority,
        "rule": rule.name,
        "time": now_nanos_text(),
        "output_fields": fields,
        "source": "coffer",
        "tags": tags,
        "hostname": hostname(),
    })
}

/// The alert of a queue-full episode.
pub(crate) fn queue_full_alert(d: &Detector) -> Value {
    let dropped = d.stats.dropped.load(Relaxed);
    json!({
        "uuid": crate::random::uuid_v4(),
        "output": format!(
            "Detection queue full (capacity {}): observations were dropped and counted, {dropped} so far; rules did not see them",
            d.config.queue_size
        ),
        "priority": "Error",
        "rule": "coffer_detect_queue_full",
        "time": now_nanos_text(),
        "output_fields": {
            "coffer.rule_type": "queue_full",
            "coffer.dropped": dropped,
            "coffer.queue_capacity": d.config.queue_size,
            "coffer.queue_full_episodes": d.stats.queue_full_episodes.load(Relaxed),
        },
        "source": "coffer",
        "tags": ["coffer", "queue_full"],
        "hostname": hostname(),
    })
}

/// Carries out `actions` for `alert`, then keeps it among the recent alerts with their outcome.
pub(crate) async fn deliver(
    d: &Detector,
    core: &Weak<Core>,
    hooks: &Webhooks,
    mut alert: Value,
    caller: Option<&Caller>,
    actions: &[Action],
    rule_url: &str,
) {
    d.stats.alerts.fetch_add(1, Relaxed);
    tracing::warn!(rule = %alert["rule"].as_str().unwrap_or(""), priority = %alert["priority"].as_str().unwrap_or(""), "detection alert: {}", alert["output"].as_str().unwrap_or(""));
    let mut outcomes: Vec<Value> = Vec::new();
    let outcome = |outcomes: &mut Vec<Value>, action: Action, r: Result<String, String>| {
        if r.is_err() {
            d.stats.action_failures.fetch_add(1, Relaxed);
        }
        outcomes.push(match r {
            Ok(detail) => json!({"action": action.name(), "done": true, "detail": detail}),
            Err(e) => json!({"action": action.name(), "done": false, "error": e}),
        });
    };
    let revoke_role = actions.contains(&Action::RevokeRole);
    let revoke_token = actions.contains(&Action::RevokeToken);
    if revoke_role || revoke_token {
        match (caller, core.upgrade()) {
            (None, _) => {
                for a in [Action::RevokeRole, Action::RevokeToken] {
                    if actions.contains(&a) {
                        outcome(&mut outcomes, a, Err("no token: the request carried none".into()));
                    }
                }
            }
            (Some(_), None) => {}
            (Some(c), Some(core)) => {
                if revoke_role {
                    outcome(
                        &mut outcomes,
                        Action::RevokeRole,
                        revoke_role_of(&core, &c.accessor).await,
                    );
                }
                if revoke_token {
                    outcome(
                        &mut outcomes,
                        Action::RevokeToken,
                        revoke_accessor(&core, &c.accessor).await,
                    );
                }
            }
        }
    }
    if let Some(f) = alert.get_mut("output_fields").and_then(Value::as_object_mut) {
        let done: Vec<String> = outcomes
            .iter()
            .map(|o| {
                let ok = o["done"].as_bool().unwrap_or(false);
                format!(
                    "{}={}",
                    o["action"].as_str().unwrap_or(""),
                    if ok { "done" } else { "failed" }
                )
            })
            .collect();
        if !done.is_empty() {
            f.insert("coffer.actions".into(), json!(done));
        }
    }
    if actions.contains(&Action::Audit) {
        let r = match core.upgrade().map(|c| c.active()) {
            Some(Ok(active)) => active
                .audit
                .log_alert(&alert)
                .await
                .map(|()| String::new())
                .map_err(|e| e.to_string()),
            Some(Err(e)) => Err(format!("not written: {e}")),
            None => Err("not written: the server is stopping".into()),
        };
        outcome(&mut outcomes, Action::Audit, r);
    }
    if actions.contains(&Action::Webhook) {
        let url = if rule_url.is_empty() { d.config.webhook_url.as_str() } else { rule_url };
        if url.is_empty() {
            // Only the queue-full alert asks for a webhook without one being configured.
        } else {
            let body = serde_json::to_vec(&alert).unwrap_or_default();
            outcome(
                &mut outcomes,
                Action::Webhook,
                hooks.send(d, url, body).map(|()| "queued".to_owned()),
            );
        }
    }
    if let Some(m) = alert.as_object_mut() {
        m.insert("actions".into(), Value::Array(outcomes));
    }
    d.remember(alert);
}

/// Revokes the token with this accessor and its children.
async fn revoke_accessor(core: &Core, accessor: &str) -> Result<String, String> {
    let active = core.active().map_err(|e| e.to_string())?;
    match active.tokens.lookup_accessor(accessor).await.map_err(|e| e.to_string())? {
        Some(entry) => {
            active.tokens.revoke_tree(&entry.id).await.map_err(|e| e.to_string())?;
            Ok(format!("token {accessor} revoked"))
        }
        None => Ok(format!("token {accessor} was already gone")),
    }
}

/// Revokes every live token issued at the same login path to the same role as this one.
async fn revoke_role_of(core: &Core, accessor: &str) -> Result<String, String> {
    let active = core.active().map_err(|e| e.to_string())?;
    let entry = active
        .tokens
        .lookup_accessor(accessor)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("token {accessor} is gone: its role is unknown"))?;
    let role = |e: &crate::token::TokenEntry| {
        super::role_key(&e.path, &|k| e.meta.get(k).cloned(), &e.display_name)
    };
    let key = role(&entry).ok_or("the token was not issued to a role at login")?;
    let mut revoked = 0u64;
    let mut after: Option<String> = None;
    let prefix = format!("{}/", entry.path);
    loop {
        let page = active
            .tokens
            .scan_path(&prefix, after.as_deref(), 512)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last().cloned() else { break };
        for id in page.iter().filter(|k| !k.contains('/')).map(|k| crate::token::link_id(k)) {
            if let Ok(Some(t)) = active.tokens.lookup_id(id).await
                && role(&t).as_deref() == Some(key.as_str())
            {
                active.tokens.revoke_tree(&t.id).await.map_err(|e| e.to_string())?;
                revoked += 1;
            }
        }
        after = Some(last);
    }
    Ok(format!("{revoked} token(s) of {key} revoked"))
}

/// The webhook sender's queue.
pub(crate) struct Webhooks {
    tx: mpsc::Sender<(String, Vec<u8>)>,
}

impl Webhooks {
    pub(crate) fn start(d: Arc<Detector>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(String, Vec<u8>)>(d.config.webhook_queue.max(1));
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            while let Some((url, body)) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else { break };
                let d = d.clone();
                tokio::spawn(async move {
                    post_with_retries(&d, &url, body).await;
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    fn send(&self, d: &Detector, url: &str, body: Vec<u8>) -> Result<(), String> {
        self.tx.try_send((url.to_owned(), body)).map_err(|_| {
            d.stats.webhook_dropped.fetch_add(1, Relaxed);
            tracing::warn!(
                capacity = d.config.webhook_queue,
                "webhook queue full: an alert was not posted (counted in webhook_dropped)"
            );
            "the webhook queue is full: not posted".to_owned()
        })
    }
}

async fn post_with_retries(d: &Detector, url: &str, body: Vec<u8>) {
    let Some(sender) = d.webhook.get() else {
        d.stats.webhook_failed.fetch_add(1, Relaxed);
        tracing::error!("detection webhook: this server has no HTTP client for webhooks");
        return;
    };
    let mut wait = FIRST_BACKOFF;
    for attempt in 0..=d.config.webhook_retries {
        if attempt > 0 {
            d.stats.webhook_retried.fetch_add(1, Relaxed);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        let why = match sender.post(url, body.clone(), d.config.webhook_timeout).await {
            Ok(s) if (200..300).contains(&s) => {
                d.stats.webhook_sent.fetch_add(1, Relaxed);
                return;
            }
            Ok(s) if s >= 500 || s == 429 => format!("answered {s}"),
            Ok(s) => {
                d.stats.webhook_failed.fetch_add(1, Relaxed);
                tracing::error!(status = s, "detection webhook refused the alert; not retried");
                return;
            }
            Err(e) => e,
        };
        tracing::warn!(attempt = attempt + 1, "detection webhook failed: {why}");
    }
    d.stats.webhook_failed.fetch_add(1, Relaxed);
    tracing::error!(
        attempts = d.config.webhook_retries + 1,
        "detection webhook gave up on an alert"
    );
}
