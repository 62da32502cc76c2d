//! The bus alone (fan-out, overflow, closing), and subscriptions through a whole core on memory
//! storage with an engine that reports an event for each write it makes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_storage::MemoryBackend;
use serde_json::{Value, json};

use super::*;
use crate::backend::{BackendConfig, BackendRequest, LogicalBackend, Registry};
use crate::logical::{Error, Operation, Request, Response, Result};
use crate::{Core, CoreConfig};

fn published(event_type: &str) -> Arc<Published> {
    Arc::new(Published {
        id: crate::random::uuid_v4(),
        time: String::new(),
        event_type: event_type.to_owned(),
        metadata: BTreeMap::new(),
        plugin: PluginInfo {
            mount_class: "secret",
            mount_accessor: String::new(),
            mount_path: String::new(),
            plugin: String::new(),
            version: String::new(),
        },
        readable_at: Vec::new(),
        encoded: OnceLock::new(),
    })
}

#[test]
fn the_bus_sends_each_event_to_the_patterns_it_matches() {
    let bus = EventBus::new(8);
    let (_, mut all, _) = bus.subscribe("*", "a");
    let (_, mut kv2, _) = bus.subscribe("kv-v2/*", "b");
    let (_, mut writes, _) = bus.subscribe("kv-v2/data-write", "c");
    bus.send(published("kv-v2/data-write"));
    bus.send(published("kv-v2/delete"));
    bus.send(published("kv-v1/write"));
    let types = |rx: &mut mpsc::Receiver<Arc<Published>>| {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e.event_type.clone());
        }
        v
    };
    assert_eq!(types(&mut all), ["kv-v2/data-write", "kv-v2/delete", "kv-v1/write"]);
    assert_eq!(types(&mut kv2), ["kv-v2/data-write", "kv-v2/delete"]);
    assert_eq!(types(&mut writes), ["kv-v2/data-write"]);
    assert_eq!(bus.stats().published, 3);
}

#[test]
fn a_full_queue_disconnects_its_subscriber_and_never_blocks_the_publisher() {
    let bus = EventBus::new(2);
    let (_, _stalled, ended) = bus.subscribe("*", "slow");
    let (_, mut reader, _) = bus.subscribe("*", "fast");
    for _ in 0..5 {
        bus.send(published("kv-v1/write"));
        let _ = reader.try_recv();
    }
    assert_eq!(ended.get(), Some(&EndReason::Overflow { capacity: 2 }));
    let stats = bus.stats();
    assert_eq!(stats.overflow_disconnects, 1);
    assert_eq!(stats.subscribers, 1, "the reader stays subscribed");
}

#[test]
fn closing_the_bus_ends_every_subscription_with_the_reason() {
    let bus = EventBus::new(2);
    let (_, mut rx, ended) = bus.subscribe("*", "a");
    bus.close_all(EndReason::Sealed);
    assert_eq!(ended.get(), Some(&EndReason::Sealed));
    assert!(rx.try_recv().is_err());
    assert_eq!(bus.stats().subscribers, 0);
}

/// `<key>` writes: stores nothing, reports a `test-v1/write` event; `fail/<key>` fails after
/// reporting one (which must not be published).
struct Engine;

#[async_trait]
impl LogicalBackend for Engine {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        let event = Event::new("test-v1", "write", req.path).data_path(req.path);
        if req.path.starts_with("fail/") {
            return Err(Error::invalid("refused"));
        }
        Ok(Response::empty().with_event(event.with("note", "no secret here")))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    for kind in ["eventtest", "cubbyhole"] {
        r.register_secrets(
            kind,
            Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Engine) as Arc<dyn LogicalBackend>)),
        );
    }
    r
}

struct Fixture {
    core: Arc<Core>,
    root: String,
}

async fn fixture() -> Fixture {
    let core = Core::new(Arc::new(MemoryBackend::new()), registry(), CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    core.mount_secrets("test/", "eventtest", "", &[("version", "1")]).await.expect("mount");
    Fixture { core, root: init.root_token.expose().to_owned() }
}

impl Fixture {
    async fn call(&self, op: Operation, path: &str, body: Value, token: &str) -> Result<Response> {
        let data = crate::logical::into_map(body);
        self.core.handle(Request::new(op, path).with_data(data).with_token(token)).await
    }

    async fn write(&self, key: &str) {
        self.call(Operation::Update, &format!("test/{key}"), json!({"v": "1"}), &self.root)
            .await
            .expect("write");
    }

    async fn subscribe(&self, pattern: &str, token: &str) -> Result<Subscription> {
        let r = self
            .call(
                Operation::Read,
                &format!("sys/events/subscribe/{pattern}"),
                json!({"json": "true"}),
                token,
            )
            .await?;
        Ok(r.subscription.expect("a subscription"))
    }

    /// A token with `policy` (written under that name) besides `default`.
    async fn revoke(&self, token: &str) {
        self.call(Operation::Update, "auth/token/revoke", json!({"token": token}), &self.root)
            .await
            .expect("revoke");
    }

    async fn token_with(&self, name: &str, policy: &str) -> String {
        self.call(
            Operation::Update,
            &format!("sys/policies/acl/{name}"),
            json!({"policy": policy}),
            &self.root,
        )
        .await
        .expect("policy");
        let r = self
            .call(Operation::Update, "auth/token/create", json!({"policies": [name]}), &self.root)
            .await
            .expect("token");
        r.auth.expect("auth").client_token.expose().to_owned()
    }
}

async fn next_event(sub: &mut Subscription) -> Arc<Published> {
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("in time") {
        Delivery::Event(e) => e,
        Delivery::End(r) => panic!("stream ended: {r}"),
    }
}

async fn end_of(sub: &mut Subscription) -> EndReason {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("in time") {
            Delivery::Event(_) => {}
            Delivery::End(r) => return r,
        }
    }
}

#[tokio::test]
async fn a_write_is_published_with_the_mount_path_and_plugin_info() {
    let f = fixture().await;
    let mut sub = f.subscribe("test-v1/*", &f.root).await.expect("subscribe");
    f.write("app/db").await;
    let e = next_event(&mut sub).await;
    assert_eq!(e.event_type, "test-v1/write");
    assert_eq!(e.metadata["path"], "test/app/db");
    assert_eq!(e.metadata["data_path"], "test/app/db");
    assert_eq!(e.metadata["operation"], "write");
    assert_eq!(e.metadata["modified"], "true");
    assert_eq!(e.plugin.mount_class, "secret");
    assert_eq!(e.plugin.mount_path, "test/");
    assert_eq!(e.plugin.plugin, "eventtest");
    assert_eq!(e.plugin.version, "1");
    assert!(e.plugin.mount_accessor.starts_with("eventtest_"), "{}", e.plugin.mount_accessor);
    assert_eq!(e.id.len(), 36);
    assert!(e.time.ends_with('Z'));
    assert_eq!(f.core.event_stats().subscribers, 1);
    drop(sub);
    assert_eq!(f.core.event_stats().subscribers, 0, "dropping a subscription unsubscribes");
}

#[tokio::test]
async fn a_failed_write_publishes_nothing() {
    let f = fixture().await;
    let mut sub = f.subscribe("*", &f.root).await.expect("subscribe");
    let failed = f.call(Operation::Update, "test/fail/x", json!({"v": "1"}), &f.root).await;
    assert!(failed.is_err());
    f.write("after").await;
    assert_eq!(next_event(&mut sub).await.metadata["path"], "test/after");
    assert_eq!(f.core.event_stats().published, 1);
}

/// The path of the first event a token holding `policy` sees when `writes` are made in order.
async fn first_seen(policy: &str, writes: &[&str]) -> String {
    let f = fixture().await;
    let t = f.token_with("under-test", policy).await;
    let mut sub = f.subscribe("*", &t).await.expect("subscribe");
    for w in writes {
        f.write(w).await;
    }
    next_event(&mut sub).await.metadata["path"].clone()
}

#[tokio::test]
async fn subscribers_see_only_events_on_paths_their_token_may_read() {
    let policy = r#"path "sys/events/subscribe/*" { capabilities = ["read"] }
                    path "test/a/*" { capabilities = ["read"] }
                    path "test/b/*" { capabilities = ["list", "update"] }"#;
    assert_eq!(first_seen(policy, &["b/hidden", "a/seen"]).await, "test/a/seen");
}

#[tokio::test]
async fn vaults_subscribe_capability_admits_the_listed_event_types() {
    let policy = r#"path "sys/events/subscribe/*" { capabilities = ["read"] }
                    path "test/s/*" {
                      capabilities = ["subscribe"]
                      subscribe_event_types = ["test-v1/write"]
                    }
                    path "test/other/*" {
                      capabilities = ["subscribe"]
                      subscribe_event_types = ["kv-v2/*"]
                    }"#;
    assert_eq!(first_seen(policy, &["other/x", "s/x"]).await, "test/s/x");
}

#[tokio::test]
async fn subscribing_needs_read_on_the_subscribe_path() {
    let f = fixture().await;
    let t = f
        .token_with(
            "kv-only",
            r#"path "sys/events/subscribe/kv*" { capabilities = ["read"] }
               path "test/*" { capabilities = ["read"] }"#,
        )
        .await;
    assert!(matches!(f.subscribe("test-v1/*", &t).await, Err(Error::PermissionDenied)));
    assert!(matches!(f.subscribe("*", "not-a-token").await, Err(Error::PermissionDenied)));
    assert!(f.subscribe("kv-v2/data-write", &t).await.is_ok());
}

#[tokio::test]
async fn bad_subscription_parameters_are_refused_naming_them() {
    let f = fixture().await;
    let sub = |q: Value| f.call(Operation::Read, "sys/events/subscribe/kv*", q, &f.root);
    let msg = |r: Result<Response>| match r {
        Err(Error::InvalidRequest(m)) => m,
        other => panic!("expected a 400, got {other:?}"),
    };
    assert!(msg(sub(json!({})).await).contains("json=true"));
    assert!(msg(sub(json!({"json": "yes"})).await).contains("invalid parameter for JSON"));
    assert!(msg(sub(json!({"json": "true", "filter": "a == b"})).await).contains("filter"));
    assert!(sub(json!({"json": "1", "namespaces": "*"})).await.is_ok());
    let r = f.call(Operation::Read, "sys/events/subscribe/", json!({"json": "true"}), &f.root);
    assert!(msg(r.await).contains("eventType"));
}

/// May subscribe, and read everything the test engine has.
const READ_ALL: &str = r#"path "sys/events/subscribe/*" { capabilities = ["read"] }
                          path "test/*" { capabilities = ["read"] }"#;

#[tokio::test]
async fn a_revoked_token_ends_the_stream_at_the_next_event() {
    let f = fixture().await;
    let t = f.token_with("all", READ_ALL).await;
    let mut sub = f.subscribe("*", &t).await.expect("subscribe");
    f.write("one").await;
    next_event(&mut sub).await;
    f.revoke(&t).await;
    f.write("two").await;
    assert_eq!(end_of(&mut sub).await, EndReason::TokenInvalid);
    assert!(matches!(sub.next().await, Delivery::End(EndReason::TokenInvalid)), "it stays over");
}

#[tokio::test]
async fn a_quiet_stream_of_a_revoked_token_ends_however_often_the_transport_polls() {
    let f = fixture().await;
    let t = f.token_with("all", READ_ALL).await;
    let mut sub =
        f.subscribe("*", &t).await.expect("subscribe").with_recheck(Duration::from_millis(200));
    f.revoke(&t).await;
    // No event comes; the transport cancels `next` every 50 ms (a client's pings), as a
    // WebSocket server's select does.
    let start = std::time::Instant::now();
    loop {
        if let Ok(Delivery::End(r)) =
            tokio::time::timeout(Duration::from_millis(50), sub.next()).await
        {
            assert_eq!(r, EndReason::TokenInvalid);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "the periodic check never ran");
    }
}

#[tokio::test]
async fn losing_read_on_the_subscribe_path_ends_the_stream() {
    let f = fixture().await;
    let policy = |subscribe: &str| {
        format!(
            r#"path "sys/events/subscribe/*" {{ capabilities = [{subscribe}] }}
               path "test/*" {{ capabilities = ["read"] }}"#
        )
    };
    let t = f.token_with("changing", &policy("\"read\"")).await;
    let mut sub = f.subscribe("*", &t).await.expect("subscribe");
    f.call(
        Operation::Update,
        "sys/policies/acl/changing",
        json!({"policy": policy("\"deny\"")}),
        &f.root,
    )
    .await
    .expect("policy");
    f.write("x").await;
    assert_eq!(end_of(&mut sub).await, EndReason::AccessLost);
}

#[tokio::test]
async fn sealing_ends_every_stream() {
    let f = fixture().await;
    let mut sub = f.subscribe("*", &f.root).await.expect("subscribe");
    f.core.seal().await.expect("seal");
    assert_eq!(end_of(&mut sub).await, EndReason::Sealed);
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_and_writes_go_on() {
    let f = fixture().await;
    let _stalled = f.subscribe("*", &f.root).await.expect("subscribe");
    for i in 0..=SUBSCRIBER_QUEUE {
        f.write(&format!("k{i}")).await;
    }
    let stats = f.core.event_stats();
    assert_eq!(stats.overflow_disconnects, 1);
    assert_eq!(stats.subscribers, 0);
    assert_eq!(stats.published, SUBSCRIBER_QUEUE as u64 + 1);
}
