//! Invariant 8: no token works whose parent has been revoked, whatever the interleaving of
//! creation and revocation. Minters keep creating children (and grandchildren) of a parent
//! through the whole pipeline while the parent is revoked one way or another; afterwards no
//! token they were given may still authenticate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_storage::MemoryBackend;
use serde_json::{Value, json};

use crate::logical::{Error, Operation, Result};
use crate::{Core, CoreConfig};

use super::REVOKING_PREFIX as REVOKING;

/// Rounds per way of revoking, and minters per round: enough that the old code (which listed
/// the children once and never re-checked the parent) left live children in every run.
const ROUNDS: usize = 6;
const MINTERS: usize = 4;
/// A minter stops after this many children even if it was never refused.
const MAX_PER_MINTER: usize = 400;

use crate::test_support::{call, registry};

#[derive(Clone, Copy, Debug)]
enum Way {
    /// `auth/token/revoke` by root.
    Revoke,
    /// `auth/token/revoke-self` by the parent itself.
    RevokeSelf,
    /// `auth/token/revoke-accessor` by root.
    RevokeAccessor,
    /// `sys/leases/revoke` of the parent's token lease.
    LeaseRevoke,
    /// The parent's TTL runs out.
    Expiry,
}

async fn core() -> (Arc<Core>, String) {
    let core = Core::new(Arc::new(MemoryBackend::new()), registry(), CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    (core, init.root_token.expose().to_owned())
}

async fn mint(core: &Core, parent: &str, ttl: &str) -> Result<(String, String)> {
    let body = json!({"policies": ["minter"], "ttl": ttl});
    let r = call(core, Operation::Update, "auth/token/create", body, parent).await?;
    let auth = r.auth.ok_or_else(|| Error::Internal("no auth block".into()))?;
    Ok((auth.client_token.expose().to_owned(), auth.accessor.clone()))
}

async fn accessors(core: &Core, root: &str) -> Vec<Value> {
    let r = call(core, Operation::List, "auth/token/accessors", json!({}), root).await;
    let keys = r.expect("list accessors").data.expect("data")["keys"].clone();
    keys.as_array().cloned().unwrap_or_default()
}

async fn race(way: Way) {
    let (core, root) = core().await;
    let policy = r#"path "auth/token/create" { capabilities = ["update"] }"#;
    call(&core, Operation::Update, "sys/policies/acl/minter", json!({"policy": policy}), &root)
        .await
        .expect("policy");
    let before = accessors(&core, &root).await;
    // An expiry takes its parent's TTL to happen: fewer rounds.
    let rounds = if matches!(way, Way::Expiry) { 2 } else { ROUNDS };
    for round in 0..rounds {
        let ttl = if matches!(way, Way::Expiry) { "2s" } else { "1h" };
        let (parent, parent_accessor) = mint(&core, &root, ttl).await.expect("parent");
        let minted: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut minters = Vec::new();
        for _ in 0..MINTERS {
            let (core, parent, minted) = (core.clone(), parent.clone(), minted.clone());
            minters.push(tokio::spawn(async move {
                for _ in 0..MAX_PER_MINTER {
                    if matches!(way, Way::Expiry) {
                        // Spread over the parent's two seconds, up to and past its end.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let Ok((child, _)) = mint(&core, &parent, "1h").await else { return };
                    minted.lock().expect("lock").push(child.clone());
                    // A grandchild too: the revocation must reach every level.
                    if let Ok((grandchild, _)) = mint(&core, &child, "1h").await {
                        minted.lock().expect("lock").push(grandchild);
                    }
                }
            }));
        }
        // Let the minters get going, so the revocation meets a tree that is still growing.
        while minted.lock().expect("lock").len() < 8 && !minters.iter().all(|m| m.is_finished()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        match way {
            Way::Revoke => {
                call(
                    &core,
                    Operation::Update,
                    "auth/token/revoke",
                    json!({"token": parent}),
                    &root,
                )
                .await
                .expect("revoke");
            }
            Way::RevokeSelf => {
                call(&core, Operation::Update, "auth/token/revoke-self", json!({}), &parent)
                    .await
                    .expect("revoke-self");
            }
            Way::RevokeAccessor => {
                let body = json!({"accessor": parent_accessor});
                call(&core, Operation::Update, "auth/token/revoke-accessor", body, &root)
                    .await
                    .expect("revoke-accessor");
            }
            Way::LeaseRevoke => {
                let id = core.active().expect("unsealed").tokens.id_of(&parent);
                let body = json!({"lease_id": format!("auth/token/create/{id}")});
                call(&core, Operation::Update, "sys/leases/revoke", body, &root)
                    .await
                    .expect("lease revoke");
            }
            Way::Expiry => {
                // The minters run until the parent's TTL ends them.
            }
        }
        for m in minters {
            m.await.expect("minter");
        }
        if matches!(way, Way::Expiry) {
            // A minter may have stopped at its limit before the end: wait for it.
            tokio::time::sleep(Duration::from_millis(2_100)).await;
        }
        let minted = minted.lock().expect("lock").clone();
        assert!(!minted.is_empty());
        for t in std::iter::once(&parent).chain(&minted) {
            let r = call(&core, Operation::Read, "auth/token/lookup-self", json!({}), t).await;
            assert!(
                matches!(r, Err(Error::PermissionDenied)),
                "{way:?}, round {round}: a token minted under a revoked parent still works \
                 ({} minted in all)",
                minted.len()
            );
        }
        // Nothing lingers in the store either (expired tokens go when looked up, above).
        assert_eq!(accessors(&core, &root).await, before, "{way:?}, round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_child_survives_its_parents_revocation() {
    race(Way::Revoke).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_child_survives_its_parent_revoking_itself() {
    race(Way::RevokeSelf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_child_survives_its_parents_revocation_by_accessor() {
    race(Way::RevokeAccessor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_child_survives_the_revocation_of_its_parents_token_lease() {
    race(Way::LeaseRevoke).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_child_survives_its_parents_expiry() {
    race(Way::Expiry).await;
}

#[tokio::test]
async fn a_revocation_cut_short_by_a_stop_is_finished_at_the_next_unseal() {
    let storage = Arc::new(MemoryBackend::new());
    let core = Core::new(storage.clone(), registry(), CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    let root = init.root_token.expose().to_owned();
    let policy = r#"path "auth/token/create" { capabilities = ["update"] }"#;
    call(&core, Operation::Update, "sys/policies/acl/minter", json!({"policy": policy}), &root)
        .await
        .expect("policy");
    let (parent, _) = mint(&core, &root, "1h").await.expect("parent");
    let (child, _) = mint(&core, &parent, "1h").await.expect("child");
    // The process stops right after the parent was marked: nothing else of the revocation ran.
    let tokens = core.active().expect("unsealed").tokens.clone();
    tokens.mark_revoking(&tokens.id_of(&parent)).await.expect("mark");
    drop(tokens);
    let lookup = async |core: &Core, t: &str| {
        call(core, Operation::Read, "auth/token/lookup-self", json!({}), t).await
    };
    assert!(matches!(lookup(&core, &parent).await, Err(Error::PermissionDenied)));
    assert!(lookup(&core, &child).await.is_ok(), "not revoked yet, only its parent is marked");

    core.seal().await.expect("seal");
    let core = Core::new(storage, registry(), CoreConfig::default());
    core.unseal_with(&init.keys).await.expect("unseal");
    for _ in 0..300 {
        if matches!(lookup(&core, &child).await, Err(Error::PermissionDenied)) {
            let pending = core.active().expect("unsealed").tokens.view.list(REVOKING).await;
            assert_eq!(pending.expect("list"), Vec::<String>::new());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the child of a token whose revocation was cut short still works after unseal");
}

#[tokio::test]
async fn retrying_a_revocation_that_stopped_part_way_finishes_it() {
    let (core, root) = core().await;
    let policy = r#"path "auth/token/create" { capabilities = ["update"] }"#;
    call(&core, Operation::Update, "sys/policies/acl/minter", json!({"policy": policy}), &root)
        .await
        .expect("policy");
    let tokens = core.active().expect("unsealed").tokens.clone();
    let lookup =
        async |t: &str| call(&core, Operation::Read, "auth/token/lookup-self", json!({}), t).await;
    for way in ["revoke", "revoke-accessor", "lease"] {
        let (parent, accessor) = mint(&core, &root, "1h").await.expect("parent");
        let (child, _) = mint(&core, &parent, "1h").await.expect("child");
        // The revocation stopped right after the parent was marked (a storage error, say).
        tokens.mark_revoking(&tokens.id_of(&parent)).await.expect("mark");
        assert!(lookup(&child).await.is_ok(), "{way}: the child is not revoked yet");
        let (path, body) = match way {
            "revoke" => ("auth/token/revoke", json!({"token": parent})),
            "revoke-accessor" => ("auth/token/revoke-accessor", json!({"accessor": accessor})),
            _ => (
                "sys/leases/revoke",
                json!({"lease_id": format!("auth/token/create/{}", tokens.id_of(&parent))}),
            ),
        };
        call(&core, Operation::Update, path, body, &root).await.expect("retry");
        assert!(
            matches!(lookup(&child).await, Err(Error::PermissionDenied)),
            "{way}: the retried revocation reached the child"
        );
        assert_eq!(tokens.view.list(REVOKING).await.expect("list"), Vec::<String>::new());
    }
}
