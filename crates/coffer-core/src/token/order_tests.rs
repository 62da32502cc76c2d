//! Token index names in creation order (`TokenEntry::order`), token ids and accessors that
//! begin with their minting order, and the tokens created before either: stored under bare
//! hashes and bare-id names, they keep working for lookup, listing, revocation and expiry.

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

/// Writes `ops` (entry and accessor changes) and moves `e`'s path-index, parent-link and expiry
/// entries to the names they have for `old`, in one batch.
async fn rewrite(store: &TokenStore, e: &TokenEntry, old: &TokenEntry, mut ops: Vec<BatchOp<'_>>) {
    ops.push(BatchOp::Delete(path_key(e)));
    ops.push(BatchOp::Put(path_key(old), b""));
    if let Some(parent) = &e.parent {
        ops.push(BatchOp::Delete(parent_key(parent, e)));
        ops.push(BatchOp::Put(parent_key(parent, old), b""));
    }
    let gone = ExpiryChange::new(link_name(e), e.expire_time, 0);
    let back = ExpiryChange::new(link_name(old), 0, old.expire_time);
    let mut expiry = gone.ops();
    expiry.extend(back.ops());
    View::batch_across(vec![(&store.view, ops), (&store.expire, expiry)]).await.expect("rewrite");
    store.forget(&e.id);
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
    rewrite(store, e, &old, vec![BatchOp::Put(format!("id/{}", e.id), &raw[..])]).await;
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

/// Rewrites the token `e` as a build before order parts stored it: under its bare hash (the
/// token's string has the same shape either way), with a 24-character accessor stored under
/// that accessor's bare hash, and its index entries named after that id.
async fn make_unordered(store: &TokenStore, e: &TokenEntry) -> TokenEntry {
    let bare = e.id[coffer_wire::token_format::ORDER_LEN..].to_owned();
    let accessor = crate::random::random_base62(24);
    let old = TokenEntry { id: bare.clone(), accessor: accessor.clone(), ..e.clone() };
    let raw = crate::record::encode(&old).expect("encode");
    let acc = crate::record::encode(&super::AccessorEntry {
        accessor: accessor.clone(),
        id: bare.clone(),
    })
    .expect("encode");
    let ops = vec![
        BatchOp::Delete(format!("id/{}", e.id)),
        BatchOp::Put(format!("id/{bare}"), &raw[..]),
        BatchOp::Delete(store.accessor_key(&e.accessor)),
        BatchOp::Put(format!("accessor/{}", store.hash(&accessor)), &acc[..]),
    ];
    rewrite(store, e, &old, ops).await;
    old
}

#[tokio::test]
async fn tokens_and_accessors_minted_together_are_stored_in_minting_order() {
    let (core, mem, root) = core().await;
    let mut made = Vec::new();
    for _ in 0..6 {
        made.push(create(&core, &root, "1h").await);
        // The order part counts 65.5 µs steps: apart by more, each sorts after the one before.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let store = store(&core);
    let ids = keys(&mem, "sys/token/id/").await;
    let accessors = keys(&mem, "sys/token/accessor/").await;
    let mut at_id = Vec::new();
    let mut at_accessor = Vec::new();
    for (token, e) in &made {
        let order = coffer_wire::token_format::order_of(token).expect("current format");
        assert!(e.id.starts_with(order) && e.id.len() == order.len() + 64, "{} {token}", e.id);
        assert_eq!(e.id, store.id_of(token));
        assert_eq!(e.accessor.len(), 26, "{}", e.accessor);
        let key = store.accessor_key(&e.accessor);
        assert!(key.starts_with(&format!("accessor/{}", &e.accessor[..8])), "{key}");
        at_id.push(ids.iter().position(|k| *k == format!("sys/token/id/{}", e.id)).expect("id"));
        at_accessor.push(
            accessors.iter().position(|k| *k == format!("sys/token/{key}")).expect("accessor"),
        );
    }
    for w in at_id.windows(2).chain(at_accessor.windows(2)) {
        assert!(w[0] < w[1], "not in minting order: {at_id:?} {at_accessor:?}");
    }
}

#[tokio::test]
async fn tokens_stored_under_their_bare_hash_keep_working_and_are_revoked_whole() {
    let (core, mem, root) = core().await;
    let (token, e) = create(&core, &root, "1h").await;
    let store = store(&core);
    let old = make_unordered(&store, &e).await;
    assert!(!keys(&mem, "sys/token/id/").await.contains(&format!("sys/token/id/{}", e.id)));

    // It authenticates, by token and by its old accessor, and may have children.
    let me = call(&core, Operation::Read, "auth/token/lookup-self", json!({}), &token)
        .await
        .expect("lookup-self");
    assert_eq!(me.data.expect("data")["accessor"], json!(old.accessor));
    let by_accessor = call(
        &core,
        Operation::Update,
        "auth/token/lookup-accessor",
        json!({"accessor": old.accessor}),
        &root,
    )
    .await
    .expect("lookup-accessor");
    assert_eq!(by_accessor.data.expect("data")["accessor"], json!(old.accessor));
    let (child_token, child) = create(&core, &token, "1h").await;
    assert_eq!(child.parent.as_deref(), Some(old.id.as_str()));

    // Its string cannot be chosen for another token, under either id.
    let dup = call(
        &core,
        Operation::Update,
        "auth/token/create",
        json!({"id": token, "policies": ["default"]}),
        &root,
    )
    .await;
    assert!(format!("{dup:?}").contains("duplicate ID"), "{dup:?}");

    // Revoked by the token it was issued as: it, its child, and every key of both go.
    call(&core, Operation::Update, "auth/token/revoke", json!({"token": token}), &root)
        .await
        .expect("revoke");
    for t in [&token, &child_token] {
        assert!(store.lookup(t).await.expect("lookup").is_none(), "a token survived");
    }
    let left = keys(&mem, "sys/token/").await;
    for id in [&old.id, &child.id] {
        assert!(!left.iter().any(|k| k.contains(id.as_str())), "{id} left in {left:?}");
    }
    for accessor in [&old.accessor, &child.accessor] {
        let key = format!("sys/token/{}", store.accessor_key(accessor));
        assert!(!left.contains(&key), "accessor {key} left");
    }
    let due = keys(&mem, "sys/expire/due/").await;
    assert!(!due.iter().any(|k| k.contains(&old.id) || k.contains(&child.id)), "{due:?}");
}

#[tokio::test]
async fn a_token_stored_under_its_bare_hash_is_revoked_by_accessor() {
    let (core, mem, root) = core().await;
    let (token, e) = create(&core, &root, "1h").await;
    let store = store(&core);
    let old = make_unordered(&store, &e).await;
    call(
        &core,
        Operation::Update,
        "auth/token/revoke-accessor",
        json!({"accessor": old.accessor}),
        &root,
    )
    .await
    .expect("revoke-accessor");
    assert!(store.lookup(&token).await.expect("lookup").is_none());
    let left = keys(&mem, "sys/token/").await;
    assert!(!left.iter().any(|k| k.contains(&old.id)), "{left:?}");
}

#[tokio::test]
async fn an_entry_under_the_ordered_id_that_refuses_the_token_is_not_bypassed_by_the_bare_hash() {
    let (core, _mem, root) = core().await;
    let (token, e) = create(&core, &root, "1h").await;
    let store = store(&core);
    // A second entry for the same string under its bare hash, as an earlier build could leave
    // (it looked only there before accepting a chosen id).
    let bare = e.id[coffer_wire::token_format::ORDER_LEN..].to_owned();
    let copy = TokenEntry { id: bare.clone(), ..e.clone() };
    let raw = crate::record::encode(&copy).expect("encode");
    store.view.put(&format!("id/{bare}"), &raw).await.expect("put");
    assert_eq!(store.lookup(&token).await.expect("lookup").expect("live").id, e.id);
    // Its revocation under way: refused, although the bare hash holds a live-looking entry.
    store.mark_revoking(&e.id).await.expect("mark");
    assert!(store.lookup(&token).await.expect("lookup").is_none(), "the bare hash was used");
}
