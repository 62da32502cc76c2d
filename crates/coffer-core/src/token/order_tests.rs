//! Token index names in creation order (`TokenEntry::order`), and the tokens created before
//! them: their bare-id names keep working for listing, revocation and expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_storage::{Backend, MemoryBackend};
use serde_json::json;

use coffer_barrier::{BatchOp, View};

use super::{ExpiryChange, TokenEntry, TokenStore, link_id, link_name, parent_key, path_key};
use crate::logical::Operation;
use crate::test_support::{call, registry};
use crate::{Core, CoreConfig};

async fn core() -> (Arc<Core>, Arc<MemoryBackend>, String) {
    let mem = Arc::new(MemoryBackend::new());
    let core = Core::new(mem.clone(), registry(), CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    (core, mem, init.root_token.expose().to_owned())
}

/// Creates a token as `parent`: (the token, its entry).
async fn create(core: &Core, parent: &str, ttl: &str) -> (String, TokenEntry) {
    let body = json!({"policies": ["root"], "ttl": ttl});
    let r = call(core, Operation::Update, "auth/token/create", body, parent).await.expect("create");
    let token = r.auth.expect("auth").client_token.expose().to_owned();
    let entry = store(core).lookup(&token).await.expect("lookup").expect("entry");
    (token, entry)
}

fn store(core: &Core) -> Arc<TokenStore> {
    Arc::clone(&core.active().expect("active").tokens)
}

/// Every storage key (in clear: only values are sealed) under `prefix`, recursively.
async fn keys(mem: &MemoryBackend, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![prefix.to_owned()];
    while let Some(dir) = dirs.pop() {
        for k in mem.list(&dir).await.expect("list") {
            match k.ends_with('/') {
                true => dirs.push(format!("{dir}{k}")),
                false => out.push(format!("{dir}{k}")),
            }
        }
    }
    out.sort();
    out
}

/// Rewrites `e` as a build before `TokenEntry::order` stored it: entry without an order, its
/// path-index, parent-link and expiry entries named by the bare id.
async fn make_old(store: &TokenStore, e: &TokenEntry) -> TokenEntry {
    let old = TokenEntry { order: None, ..e.clone() };
    // As that build wrote it: record version 1, no `order`.
    let raw = crate::record::encode(&old).expect("encode");
    let raw = String::from_utf8(raw.to_vec()).expect("json");
    let raw = raw.replacen("{\"version\":2,", "{\"version\":1,", 1).into_bytes();
    assert!(raw.starts_with(b"{\"version\":1,") && !raw.windows(7).any(|w| w == b"\"order\""));
    let mut ops = vec![
        BatchOp::Put(format!("id/{}", e.id), &raw[..]),
        BatchOp::Delete(path_key(e)),
        BatchOp::Put(path_key(&old), b""),
    ];
    if let Some(parent) = &e.parent {
        ops.push(BatchOp::Delete(parent_key(parent, e)));
        ops.push(BatchOp::Put(parent_key(parent, &old), b""));
    }
    let gone = ExpiryChange::new(link_name(e), e.expire_time, 0);
    let back = ExpiryChange::new(link_name(&old), 0, old.expire_time);
    let mut expiry = gone.ops();
    expiry.extend(back.ops());
    View::batch_across(vec![(&store.view, ops), (&store.expire, expiry)]).await.expect("rewrite");
    store.forget(&e.id);
    old
}

#[tokio::test]
async fn tokens_created_together_are_named_in_creation_order() {
    let (core, mem, root) = core().await;
    let (parent, p) = create(&core, &root, "1h").await;
    let mut children = Vec::new();
    for _ in 0..5 {
        children.push(create(&core, &parent, "1h").await.1);
    }
    // Under the parent, in the path index and in the expiry index: `<order>.<id>`, sorted as
    // created, so a group commit's new entries land next to each other.
    let links = keys(&mem, &format!("sys/token/parent/{}/", p.id)).await;
    let names: Vec<String> = children.iter().map(link_name).collect();
    let expected: Vec<String> =
        names.iter().map(|n| format!("sys/token/parent/{}/{n}", p.id)).collect();
    assert_eq!(links, expected, "parent links in creation order");
    for (c, name) in children.iter().zip(&names) {
        assert!(name.len() == 16 + 1 + c.id.len() && name.ends_with(&c.id), "{name}");
        assert_eq!(link_id(name), c.id);
    }
    let path = keys(&mem, "sys/token/path/auth/token/create/").await;
    for name in &names {
        assert!(path.iter().any(|k| k.ends_with(&format!("/{name}"))), "{name} in {path:?}");
    }
    let due = keys(&mem, "sys/expire/due/").await;
    for name in &names {
        assert!(due.iter().any(|k| k.ends_with(&format!("/t.{name}"))), "{name} in {due:?}");
    }
    // Listing the creation path's leases shows token ids, as before: the order is storage's.
    let r = call(&core, Operation::List, "sys/leases/lookup/auth/token/create/", json!({}), &root)
        .await
        .expect("list");
    let listed = r.data.expect("data")["keys"].clone();
    for c in &children {
        assert!(listed.as_array().expect("keys").contains(&json!(c.id)), "{} in {listed}", c.id);
    }
    assert!(!listed.to_string().contains('.'), "names leaked into the listing: {listed}");
}

#[tokio::test]
async fn tokens_named_by_bare_id_are_listed_and_revoked_with_everything_they_left() {
    let (core, mem, root) = core().await;
    let (parent, p) = create(&core, &root, "1h").await;
    let (new_token, new) = create(&core, &parent, "1h").await;
    let (old_token, old) = create(&core, &parent, "1h").await;
    let store = store(&core);
    let old = make_old(&store, &old).await;
    assert!(
        keys(&mem, &format!("sys/token/parent/{}/", p.id))
            .await
            .contains(&format!("sys/token/parent/{}/{}", p.id, old.id))
    );
    assert!(store.lookup(&old_token).await.expect("lookup").is_some(), "an old token works");
    let r = call(&core, Operation::List, "sys/leases/lookup/auth/token/create/", json!({}), &root)
        .await
        .expect("list");
    let listed = r.data.expect("data")["keys"].clone();
    for id in [&new.id, &old.id] {
        assert!(listed.as_array().expect("keys").contains(&json!(id)), "{id} in {listed}");
    }

    call(&core, Operation::Update, "auth/token/revoke-self", json!({}), &parent)
        .await
        .expect("revoke the parent");
    for t in [&parent, &new_token, &old_token] {
        assert!(store.lookup(t).await.expect("lookup").is_none(), "a token survived its parent");
    }
    for prefix in
        [format!("sys/token/parent/{}/", p.id), "sys/token/path/auth/token/create/".to_owned()]
    {
        let left = keys(&mem, &prefix).await;
        for id in [&p.id, &new.id, &old.id] {
            assert!(!left.iter().any(|k| k.contains(id.as_str())), "{id} left in {left:?}");
        }
    }
    let due = keys(&mem, "sys/expire/due/").await;
    for id in [&p.id, &new.id, &old.id] {
        assert!(!due.iter().any(|k| k.contains(id.as_str())), "expiry entry of {id} left: {due:?}");
    }
}

#[tokio::test]
async fn tokens_named_either_way_expire_and_leave_nothing() {
    let (core, mem, root) = core().await;
    let (new_token, new) = create(&core, &root, "1s").await;
    let (old_token, old) = create(&core, &root, "1s").await;
    let store = store(&core);
    make_old(&store, &old).await;
    // The expiration manager revokes both; a lookup alone would refuse them at their expiry.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let due = keys(&mem, "sys/expire/due/").await;
        let ids = keys(&mem, "sys/token/id/").await;
        let left: Vec<_> = [&new.id, &old.id]
            .into_iter()
            .filter(|id| due.iter().chain(&ids).any(|k| k.contains(id.as_str())))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not expired: {left:?} in {due:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in [&new_token, &old_token] {
        assert!(store.lookup(t).await.expect("lookup").is_none());
    }
    let path = keys(&mem, "sys/token/path/").await;
    assert!(!path.iter().any(|k| k.contains(&new.id) || k.contains(&old.id)), "{path:?}");
}
