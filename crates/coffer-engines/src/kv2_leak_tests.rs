//! kv v2 keeps the liveness index current: a written version's string fields go in with it,
//! and go out when the version is destroyed, pruned or its key deleted (a soft delete keeps
//! them: an undelete makes the version live again).

use std::sync::Arc;
use std::time::Duration;

use coffer_core::leaks::LeakIndex;
use coffer_core::{LogicalBackend, Operation, View};
use serde_json::{Value, json};

async fn engine() -> (Arc<dyn LogicalBackend>, View) {
    let (barrier, _) = coffer_core::testkit::memory_barrier().await;
    let leaks = LeakIndex::new(barrier.clone(), "kv-uuid");
    let index = leaks.view().sub_view("index/");
    (crate::kv2::new(View::new(barrier, "logical/kv/"), Some(leaks)), index)
}

async fn call(kv: &Arc<dyn LogicalBackend>, op: Operation, path: &str, body: Value) {
    let mut m = coffer_core::testkit::mount_info("secret/", "kv", Duration::from_secs(86_400));
    m.uuid = "kv-uuid".into();
    m.options = [("version".to_owned(), "2".to_owned())].into();
    coffer_core::testkit::call(kv.as_ref(), &m, op, path, body, false).await.expect(path);
}

async fn entries(index: &View) -> usize {
    index.list_recursive("").await.expect("list").len()
}

#[tokio::test]
async fn versions_enter_and_leave_the_index_with_their_data() {
    let (kv, index) = engine().await;
    let w = |n: u32| json!({"data": {"a": format!("a-{n}"), "b": format!("b-{n}"), "n": n}});
    call(&kv, Operation::Update, "data/app", w(1)).await;
    // Two string fields; a number is no secret value.
    assert_eq!(entries(&index).await, 2);
    call(&kv, Operation::Update, "data/app", w(2)).await;
    call(&kv, Operation::Update, "data/app", w(3)).await;
    assert_eq!(entries(&index).await, 6);
    call(&kv, Operation::Update, "delete/app", json!({"versions": [3]})).await;
    assert_eq!(entries(&index).await, 6, "a soft delete keeps the entries");
    call(&kv, Operation::Update, "destroy/app", json!({"versions": [1]})).await;
    assert_eq!(entries(&index).await, 4);
    // Pruning to one version drops version 2's; version 3's stay.
    call(&kv, Operation::Update, "metadata/app", json!({"max_versions": 1})).await;
    assert_eq!(entries(&index).await, 2);
    call(&kv, Operation::Delete, "metadata/app", json!({})).await;
    assert_eq!(entries(&index).await, 0);
}
