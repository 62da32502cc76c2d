//! The index kept current: a token's entry goes in with the token and goes out with it, and
//! the keys are made once.

use std::sync::Arc;

use coffer_barrier::View;
use coffer_storage::MemoryBackend;
use serde_json::{Value, json};

use crate::backend::{BackendConfig, LogicalBackend, Registry};
use crate::logical::{Operation, Request, Response, Result};
use crate::{Core, CoreConfig};

use crate::test_support::Nothing;

async fn core() -> (Arc<Core>, String) {
    let mut r = Registry::new();
    r.register_secrets(
        "cubbyhole",
        Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
    );
    let core = Core::new(Arc::new(MemoryBackend::new()), r, CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    (core, init.root_token.expose().to_owned())
}

async fn call(core: &Core, op: Operation, path: &str, body: Value, token: &str) -> Response {
    let data = crate::logical::into_map(body);
    core.handle(Request::new(op, path).with_data(data).with_token(token)).await.expect(path)
}

async fn entries(core: &Core) -> usize {
    let v = View::new(core.barrier.clone(), super::index::STORAGE_PREFIX);
    v.list_recursive("index/").await.expect("list").len()
}

#[tokio::test]
async fn a_tokens_index_entry_lives_exactly_as_long_as_the_token() {
    let (core, root) = core().await;
    // The root token's.
    assert_eq!(entries(&core).await, 1);
    let mut accessors = Vec::new();
    for _ in 0..5 {
        let r = call(&core, Operation::Update, "auth/token/create", json!({}), &root).await;
        accessors.push(r.auth.expect("auth").accessor);
    }
    assert_eq!(entries(&core).await, 6);
    for a in &accessors {
        let body = json!({ "accessor": a });
        call(&core, Operation::Update, "auth/token/revoke-accessor", body, &root).await;
    }
    assert_eq!(entries(&core).await, 1);
}

/// Counts how often the core asks it to index its values.
struct Counting(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl LogicalBackend for Counting {
    async fn handle(&self, _req: &crate::backend::BackendRequest<'_>) -> Result<Response> {
        Err(crate::logical::Error::NotFound)
    }

    async fn index_live_values(&self) -> Result<u64> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(3)
    }
}

#[tokio::test]
async fn existing_values_are_indexed_once_per_mount_in_the_background() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut r = Registry::new();
    r.register_secrets(
        "cubbyhole",
        Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
    );
    let c = calls.clone();
    r.register_secrets(
        "counting",
        Arc::new(move |_cfg: BackendConfig| {
            Ok(Arc::new(Counting(c.clone())) as Arc<dyn LogicalBackend>)
        }),
    );
    let core = Core::new(Arc::new(MemoryBackend::new()), r, CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    let root = init.root_token.expose().to_owned();
    call(&core, Operation::Update, "sys/mounts/c", json!({"type": "counting"}), &root).await;
    let seen = |n: usize| {
        let calls = calls.clone();
        async move {
            for _ in 0..200 {
                if calls.load(std::sync::atomic::Ordering::SeqCst) >= n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    };
    // Mounted after unseal: indexed at the next unseal, as a store from before the index is.
    core.seal().await.expect("seal");
    for k in &init.keys {
        core.submit_unseal_key(Some(k.clone()), false, false).await.expect("unseal");
    }
    seen(1).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let done = View::new(core.barrier.clone(), super::index::STORAGE_PREFIX);
    for _ in 0..200 {
        if !done.list("backfilled/").await.expect("list").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Once: the next unseal leaves it alone.
    core.seal().await.expect("seal");
    for k in &init.keys {
        core.submit_unseal_key(Some(k.clone()), false, false).await.expect("unseal");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_keys_are_made_once_and_shared_by_every_handle() {
    let (core, _) = core().await;
    let a = super::LeakIndex::new(core.barrier.clone(), "a");
    let b = super::LeakIndex::new(core.barrier.clone(), "b");
    let (ka, kb) = tokio::join!(a.keys(), b.keys());
    let (ka, kb) = (ka.expect("a"), kb.expect("b"));
    assert_eq!(ka.id, kb.id);
    assert_eq!(ka.hash("x"), kb.hash("x"));
    assert_eq!(ka.published(), kb.published());
}

/// Indexes each write's `value` as a KV field of its own mount, as the KV engine does.
struct Indexing(super::LeakIndex);

#[async_trait::async_trait]
impl LogicalBackend for Indexing {
    async fn handle(&self, req: &crate::backend::BackendRequest<'_>) -> Result<Response> {
        let data: serde_json::Map<String, Value> =
            req.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let ops = self.0.kv(req.path, None, &data).await?;
        View::batch_across(vec![(self.0.view(), super::ops(&ops))]).await?;
        Ok(Response::empty())
    }
}

#[tokio::test]
async fn a_disabled_mounts_entries_are_swept_and_other_mounts_entries_stay() {
    let mut r = Registry::new();
    r.register_secrets(
        "cubbyhole",
        Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
    );
    r.register_secrets(
        "indexing",
        Arc::new(|cfg: BackendConfig| {
            Ok(Arc::new(Indexing(cfg.leaks.clone())) as Arc<dyn LogicalBackend>)
        }),
    );
    let core = Core::new(Arc::new(MemoryBackend::new()), r, CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    let root = init.root_token.expose().to_owned();
    for m in ["a", "b"] {
        call(
            &core,
            Operation::Update,
            &format!("sys/mounts/{m}"),
            json!({"type": "indexing"}),
            &root,
        )
        .await;
        for i in 0..3 {
            let body = json!({"password": format!("{m}-value-{i}"), "user": format!("{m}-u{i}")});
            call(&core, Operation::Update, &format!("{m}/s{i}"), body, &root).await;
        }
    }
    // The root token's, and two fields of three secrets on each mount.
    assert_eq!(entries(&core).await, 13);
    call(&core, Operation::Delete, "sys/mounts/a", json!({}), &root).await;
    let v = View::new(core.barrier.clone(), super::index::STORAGE_PREFIX);
    for _ in 0..200 {
        if entries(&core).await == 7 && v.list("sweep/").await.expect("list").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(entries(&core).await, 7, "mount a's six entries are gone, b's and the token's stay");
    assert!(v.list("sweep/").await.expect("list").is_empty(), "the sweep marker is removed");

    // A sweep cut short is run again at the next unseal: a marker left behind is honoured.
    let uuid = core
        .active()
        .expect("active")
        .router()
        .expect("router")
        .routes()
        .find(|r| r.full_path == "b/")
        .expect("b")
        .entry
        .uuid
        .clone();
    v.put(&format!("sweep/{uuid}"), b"1").await.expect("marker");
    core.seal().await.expect("seal");
    for k in &init.keys {
        core.submit_unseal_key(Some(k.clone()), false, false).await.expect("unseal");
    }
    for _ in 0..200 {
        if entries(&core).await == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(entries(&core).await, 1);
}
