//! kv v2 keeps the liveness index current: a written version's string fields go in with it,
//! and go out when the version is destroyed, pruned or its key deleted (a soft delete keeps
//! them: an undelete makes the version live again).

use std::sync::Arc;
use std::time::Duration;

use coffer_core::leaks::LeakIndex;
use coffer_core::{LogicalBackend, Operation, View};
use serde_json::{Value, json};

async fn engine() -> (Arc<dyn LogicalBackend>, View) {
    let (kv, index, _) = engine_and_view().await;
    (kv, index)
}

/// The engine, the index's entries, and the engine's own storage view.
async fn engine_and_view() -> (Arc<dyn LogicalBackend>, View, View) {
    let (barrier, _) = coffer_core::testkit::memory_barrier().await;
    let leaks = LeakIndex::new(barrier.clone(), "kv-uuid");
    let index = leaks.view().sub_view("index/");
    let view = View::new(barrier, "logical/kv/");
    (crate::kv2::new(view.clone(), Some(leaks)), index, view)
}

async fn call(kv: &Arc<dyn LogicalBackend>, op: Operation, path: &str, body: Value) -> Value {
    let mut m = coffer_core::testkit::mount_info("secret/", "kv", Duration::from_secs(86_400));
    m.uuid = "kv-uuid".into();
    m.options = [("version".to_owned(), "2".to_owned())].into();
    let r = coffer_core::testkit::call(kv.as_ref(), &m, op, path, body, false)
        .await
        .expect(path)
        .materialized()
        .expect("answer");
    Value::Object(r.data.unwrap_or_default())
}

async fn answer(kv: &Arc<dyn LogicalBackend>, op: Operation, path: &str) -> Value {
    call(kv, op, path, json!({})).await
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

/// A key as the Coffer before the binary metadata record left it: its metadata a JSON record
/// (version 1), its versions' index entries written but their keys not kept with the versions.
/// It still answers as before, and its versions' entries still leave the index when they are
/// pruned, destroyed or the key deleted (found from the data, as then).
#[tokio::test]
async fn a_key_written_before_the_binary_metadata_is_read_and_leaves_the_index() {
    let (barrier, _) = coffer_core::testkit::memory_barrier().await;
    let leaks = LeakIndex::new(barrier.clone(), "kv-uuid");
    let index = leaks.view().sub_view("index/");
    let view = View::new(barrier, "logical/kv/");
    let old_meta = br#"{"version":1,"created_time":1700000000,"updated_time":1700000100,"current_version":2,"oldest_version":1,"max_versions":2,"cas_required":false,"delete_version_after":0,"custom_metadata":{"owner":"ops"},"versions":{"1":{"created_time":1700000000,"deletion_time":0,"destroyed":false},"2":{"created_time":1700000100,"deletion_time":0,"destroyed":false}}}"#;
    view.put("meta/app", old_meta).await.expect("meta");
    for n in 1..=2 {
        let data = json!({"a": format!("a-{n}"), "b": format!("b-{n}")});
        let raw = serde_json::to_vec(&data).expect("json");
        view.put(&format!("ver/app/{n}"), &raw).await.expect("version");
        let live = leaks.kv("app", Some(n), data.as_object().expect("object")).await.expect("kv");
        View::batch_across(vec![(leaks.view(), coffer_core::leaks::ops(&live))])
            .await
            .expect("index");
    }
    assert_eq!(entries(&index).await, 4);
    let kv = crate::kv2::new(view.clone(), Some(leaks));

    let read = answer(&kv, Operation::Read, "data/app").await;
    assert_eq!(
        read,
        json!({"data": {"a": "a-2", "b": "b-2"}, "metadata": {
            "created_time": "2023-11-14T22:15:00Z", "custom_metadata": {"owner": "ops"},
            "deletion_time": "", "destroyed": false, "version": 2}})
    );
    let meta = answer(&kv, Operation::Read, "metadata/app").await;
    assert_eq!(meta["current_version"], json!(2));
    assert_eq!(meta["max_versions"], json!(2));
    assert_eq!(meta["versions"]["1"]["created_time"], json!("2023-11-14T22:13:20Z"));

    // Version 3 prunes version 1, whose keys were not kept: found from its data.
    call(&kv, Operation::Update, "data/app", json!({"data": {"a": "a-3"}})).await;
    assert_eq!(entries(&index).await, 3);
    assert_eq!(view.get("meta/app").await.expect("get").expect("meta")[0], 2, "now binary");
    // Version 2 destroyed: its keys were not kept either.
    call(&kv, Operation::Update, "destroy/app", json!({"versions": [2]})).await;
    assert_eq!(entries(&index).await, 1);
    // Version 4 prunes version 2 (destroyed, nothing left) and keeps 3 and 4.
    call(&kv, Operation::Update, "data/app", json!({"data": {"a": "a-4"}})).await;
    assert_eq!(entries(&index).await, 2);
    let meta = answer(&kv, Operation::Read, "metadata/app").await;
    assert_eq!(meta["custom_metadata"], json!({"owner": "ops"}));
    assert_eq!(meta["oldest_version"], json!(3));
    call(&kv, Operation::Delete, "metadata/app", json!({})).await;
    assert_eq!(entries(&index).await, 0);
}

#[tokio::test]
async fn pruning_a_version_whose_index_keys_were_kept_reads_no_data() {
    let (kv, index, view) = engine_and_view().await;
    call(&kv, Operation::Update, "metadata/app", json!({"max_versions": 1})).await;
    call(&kv, Operation::Update, "data/app", json!({"data": {"a": "a-1"}})).await;
    assert_eq!(entries(&index).await, 1);
    // Version 1's data damaged in storage: the prune that drops it must not need it.
    view.put("ver/app/1", b"not json").await.expect("damage");
    call(&kv, Operation::Update, "data/app", json!({"data": {"a": "a-2"}})).await;
    assert_eq!(entries(&index).await, 1, "version 1's entry went with it");
}
