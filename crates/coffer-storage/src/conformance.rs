//! The storage contract as one executable exercise. Every backend's tests call [`exercise`] on a
//! fresh, empty instance; it panics with a message naming the broken rule.

use crate::{Backend, Op};

pub async fn exercise(b: &dyn Backend) {
    missing_keys_read_as_none(b).await;
    put_get_overwrite_delete(b).await;
    values_are_opaque_bytes(b).await;
    list_returns_immediate_children(b).await;
    batch_is_atomic(b).await;
    scan_pages_through_a_folder_at_any_depth(b).await;
    invalid_keys_are_refused(b).await;
}

async fn missing_keys_read_as_none(b: &dyn Backend) {
    assert_eq!(b.get("conf/missing").await.expect("get"), None, "missing key must read as None");
    b.delete("conf/missing").await.expect("deleting a missing key is not an error");
}

async fn put_get_overwrite_delete(b: &dyn Backend) {
    b.put("conf/k", b"one".to_vec()).await.expect("put");
    assert_eq!(b.get("conf/k").await.expect("get").as_deref(), Some(&b"one"[..]));
    b.put("conf/k", b"two".to_vec()).await.expect("overwrite");
    assert_eq!(b.get("conf/k").await.expect("get").as_deref(), Some(&b"two"[..]));
    b.delete("conf/k").await.expect("delete");
    assert_eq!(b.get("conf/k").await.expect("get"), None, "deleted key must be gone");
}

async fn values_are_opaque_bytes(b: &dyn Backend) {
    let all: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    b.put("conf/bin", all.clone()).await.expect("put");
    assert_eq!(b.get("conf/bin").await.expect("get"), Some(all), "bytes must round-trip");
    b.put("conf/empty", Vec::new()).await.expect("put empty");
    assert_eq!(b.get("conf/empty").await.expect("get"), Some(Vec::new()));
    b.delete("conf/bin").await.expect("delete");
    b.delete("conf/empty").await.expect("delete");
}

async fn list_returns_immediate_children(b: &dyn Backend) {
    for k in ["ls/a", "ls/b/c", "ls/b/d/e", "ls/b", "ls/c d", "lsx/no"] {
        b.put(k, b"v".to_vec()).await.expect("put");
    }
    assert_eq!(b.list("ls/").await.expect("list"), ["a", "b", "b/", "c d"]);
    assert_eq!(b.list("ls/b/").await.expect("list"), ["c", "d/"]);
    assert_eq!(b.list("ls/none/").await.expect("list"), Vec::<String>::new());
    let top = b.list("").await.expect("list root");
    assert!(top.contains(&"ls/".to_owned()) && top.contains(&"lsx/".to_owned()), "{top:?}");
    b.delete("ls/b/d/e").await.expect("delete");
    assert_eq!(b.list("ls/b/").await.expect("list"), ["c"], "empty folders disappear");
    for k in ["ls/a", "ls/b/c", "ls/b", "ls/c d", "lsx/no"] {
        b.delete(k).await.expect("delete");
    }
}

async fn batch_is_atomic(b: &dyn Backend) {
    b.put("batch/old", b"v".to_vec()).await.expect("put");
    b.batch(vec![Op::Put("batch/new".into(), b"n".to_vec()), Op::Delete("batch/old".into())])
        .await
        .expect("batch");
    assert_eq!(b.get("batch/new").await.expect("get").as_deref(), Some(&b"n"[..]));
    assert_eq!(b.get("batch/old").await.expect("get"), None);

    let failed = b
        .batch(vec![Op::Put("batch/x".into(), b"x".to_vec()), Op::Put("/bad".into(), vec![])])
        .await;
    assert!(failed.is_err(), "a batch with an invalid key must fail");
    assert_eq!(b.get("batch/x").await.expect("get"), None, "a failed batch must apply nothing");
    b.delete("batch/new").await.expect("delete");
}

async fn scan_pages_through_a_folder_at_any_depth(b: &dyn Backend) {
    let keys = ["sc/a", "sc/b/c", "sc/b/d/e", "sc/b0", "sc/c d", "scx/no", "sc"];
    for k in keys {
        b.put(k, b"v".to_vec()).await.expect("put");
    }
    let want = ["a", "b/c", "b/d/e", "b0", "c d"];
    assert_eq!(b.scan("sc/", None, 100).await.expect("scan"), want, "every key, in order");
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = b.scan("sc/", after.as_deref(), 2).await.expect("scan page");
        assert!(page.len() <= 2, "a page holds at most its limit: {page:?}");
        let Some(last) = page.last().cloned() else { break };
        paged.extend(page);
        after = Some(last);
    }
    assert_eq!(paged, want, "pages follow each other without gaps or repeats");
    assert_eq!(b.scan("sc/b/", Some("c"), 10).await.expect("scan"), ["d/e"]);
    assert_eq!(b.scan("sc/none/", None, 10).await.expect("scan"), Vec::<String>::new());
    assert!(b.scan("sc", None, 10).await.is_err(), "a scan prefix must end in '/'");
    for k in keys {
        b.delete(k).await.expect("delete");
    }
}

async fn invalid_keys_are_refused(b: &dyn Backend) {
    for k in ["", "/abs", "a/../b", "a//b"] {
        assert!(b.put(k, vec![1]).await.is_err(), "put {k:?} must fail");
        assert!(b.get(k).await.is_err(), "get {k:?} must fail");
    }
    assert!(b.list("no-slash").await.is_err(), "a list prefix must end in '/'");
}
