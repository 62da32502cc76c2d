//! The identity store through the core's pipeline: a fake auth method whose logins name an
//! alias, and the `identity/` API.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use coffer_storage::MemoryBackend;
use serde_json::{Value, json};

use crate::backend::{BackendConfig, BackendRequest, LogicalBackend, Registry};
use crate::logical::login::{Login, LoginAlias};
use crate::logical::{Error, Operation, Response, Result};
use crate::test_support::call;
use crate::{Core, CoreConfig};

struct Nothing;

#[async_trait]
impl LogicalBackend for Nothing {
    async fn handle(&self, _req: &BackendRequest<'_>) -> Result<Response> {
        Ok(Response::empty())
    }
}

/// Logs in anyone as the alias named in the body, with its `meta` as alias metadata.
struct Fake;

#[async_trait]
impl LogicalBackend for Fake {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        let name = req.data.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let meta: BTreeMap<String, String> = req
            .data
            .get("meta")
            .and_then(|m| serde_json::from_value(m.clone()).ok())
            .unwrap_or_default();
        let groups = req
            .data
            .get("groups")
            .and_then(|g| serde_json::from_value::<Vec<String>>(g.clone()).ok());
        Ok(Response::login(Login {
            policies: vec!["own".into()],
            alias: Some(LoginAlias { name, metadata: meta, groups }),
            ..Login::default()
        }))
    }

    fn unauthenticated_paths(&self) -> &'static [&'static str] {
        &["login"]
    }
}

async fn core() -> (Arc<Core>, String) {
    let mut r = Registry::new();
    r.register_secrets(
        "cubbyhole",
        Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
    );
    r.register_secrets(
        "kv",
        Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
    );
    r.register_auth(
        "fake",
        Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Fake) as Arc<dyn LogicalBackend>)),
    );
    let core = Core::new(Arc::new(MemoryBackend::new()), r, CoreConfig::default());
    let init = core.dev_setup(None).await.expect("dev setup");
    let root = init.root_token.expose().to_owned();
    let c = core.clone();
    call(&c, Operation::Update, "sys/auth/fake", json!({"type": "fake"}), &root)
        .await
        .expect("auth");
    call(&c, Operation::Update, "sys/mounts/secret", json!({"type": "kv"}), &root)
        .await
        .expect("mount");
    (core, root)
}

fn data(r: &Response) -> &serde_json::Map<String, Value> {
    r.data.as_ref().expect("data")
}

async fn login(core: &Core, body: Value) -> (String, String) {
    let r = call(core, Operation::Update, "auth/fake/login", body, "").await.expect("login");
    let a = r.auth.expect("auth");
    (a.client_token.expose().to_owned(), a.entity_id)
}

async fn allowed(core: &Core, token: &str, path: &str) -> bool {
    match call(core, Operation::Read, path, json!({}), token).await {
        Ok(_) => true,
        Err(Error::PermissionDenied) => false,
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test]
async fn a_second_login_with_the_same_alias_reuses_its_entity_and_updates_alias_metadata() {
    let (core, root) = core().await;
    let (_, e1) = login(&core, json!({"name": "alice", "meta": {"digest": "sha256:1"}})).await;
    let (_, e2) = login(&core, json!({"name": "alice", "meta": {"digest": "sha256:2"}})).await;
    let (_, other) = login(&core, json!({"name": "bob"})).await;
    assert!(!e1.is_empty());
    assert_eq!(e1, e2);
    assert_ne!(e1, other);
    let r = call(&core, Operation::Read, &format!("identity/entity/id/{e1}"), json!({}), &root)
        .await
        .expect("read");
    let aliases = data(&r)["aliases"].as_array().expect("aliases").clone();
    assert_eq!(aliases.len(), 1);
    assert_eq!(aliases[0]["name"], "alice");
    assert_eq!(aliases[0]["metadata"]["digest"], "sha256:2");
    assert_eq!(aliases[0]["mount_type"], "fake");
}

#[tokio::test]
async fn group_policies_apply_to_live_tokens_and_nested_groups_pass_them_on() {
    let (core, root) = core().await;
    call(
        &core,
        Operation::Update,
        "sys/policy/reader",
        json!({"policy": "path \"secret/x\" { capabilities = [\"read\"] }"}),
        &root,
    )
    .await
    .expect("policy");
    let (token, entity) = login(&core, json!({"name": "carol"})).await;
    assert!(!allowed(&core, &token, "secret/x").await);
    let inner = call(
        &core,
        Operation::Update,
        "identity/group",
        json!({"name": "inner", "member_entity_ids": [entity]}),
        &root,
    )
    .await
    .expect("inner");
    let inner_id = data(&inner)["id"].as_str().expect("id").to_owned();
    let outer = call(
        &core,
        Operation::Update,
        "identity/group",
        json!({"name": "outer", "policies": ["reader"], "member_group_ids": [inner_id]}),
        &root,
    )
    .await
    .expect("outer");
    let outer_id = data(&outer)["id"].as_str().expect("id").to_owned();
    assert!(allowed(&core, &token, "secret/x").await, "inherited through the outer group");
    // A cycle is refused and changes nothing.
    let e = call(
        &core,
        Operation::Update,
        &format!("identity/group/id/{inner_id}"),
        json!({"member_group_ids": [outer_id]}),
        &root,
    )
    .await
    .expect_err("cycle");
    assert!(e.to_string().contains("cyclic relationship detected"), "{e}");
    call(&core, Operation::Delete, &format!("identity/group/id/{outer_id}"), json!({}), &root)
        .await
        .expect("delete");
    assert!(!allowed(&core, &token, "secret/x").await, "gone with the group");
    let r = call(&core, Operation::Read, "auth/token/lookup-self", json!({}), &token)
        .await
        .expect("lookup");
    assert_eq!(data(&r)["entity_id"], json!(entity));
}

#[tokio::test]
async fn templated_paths_grant_each_entity_its_own_and_skip_unresolvable_ones() {
    let (core, root) = core().await;
    let policy = "path \"secret/{{identity.entity.name}}/*\" { capabilities = [\"read\"] }\n\
                  path \"secret/team/{{identity.entity.metadata.team}}\" { capabilities = [\"read\"] }";
    call(&core, Operation::Update, "sys/policy/own", json!({"policy": policy}), &root)
        .await
        .expect("policy");
    let (dave, dave_id) = login(&core, json!({"name": "dave"})).await;
    call(
        &core,
        Operation::Update,
        &format!("identity/entity/id/{dave_id}"),
        json!({"name": "dave"}),
        &root,
    )
    .await
    .expect("rename");
    let (erin, _) = login(&core, json!({"name": "erin"})).await;
    assert!(allowed(&core, &dave, "secret/dave/db").await);
    assert!(!allowed(&core, &erin, "secret/dave/db").await);
    assert!(!allowed(&core, &dave, "secret/team/").await, "no team metadata: the path is skipped");
    call(
        &core,
        Operation::Update,
        &format!("identity/entity/id/{dave_id}"),
        json!({"metadata": {"team": "web"}}),
        &root,
    )
    .await
    .expect("meta");
    assert!(allowed(&core, &dave, "secret/team/web").await, "applies without a new login");
    // A value that would widen the path is not substituted.
    call(
        &core,
        Operation::Update,
        &format!("identity/entity/id/{dave_id}"),
        json!({"metadata": {"team": "*"}}),
        &root,
    )
    .await
    .expect("meta");
    assert!(!allowed(&core, &dave, "secret/team/web").await);
}

#[tokio::test]
async fn a_disabled_entity_refuses_its_tokens_and_its_logins() {
    let (core, root) = core().await;
    let (token, entity) = login(&core, json!({"name": "frank"})).await;
    call(
        &core,
        Operation::Update,
        &format!("identity/entity/id/{entity}"),
        json!({"disabled": true}),
        &root,
    )
    .await
    .expect("disable");
    let e = call(&core, Operation::Read, "auth/token/lookup-self", json!({}), &token).await;
    assert!(matches!(e, Err(Error::PermissionDenied)));
    let e = call(&core, Operation::Update, "auth/fake/login", json!({"name": "frank"}), "").await;
    assert!(matches!(e, Err(Error::PermissionDenied)));
    call(
        &core,
        Operation::Update,
        &format!("identity/entity/id/{entity}"),
        json!({"disabled": false}),
        &root,
    )
    .await
    .expect("enable");
    call(&core, Operation::Read, "auth/token/lookup-self", json!({}), &token)
        .await
        .expect("works again");
}

#[tokio::test]
async fn external_groups_follow_the_groups_a_login_reports() {
    let (core, root) = core().await;
    let r = call(&core, Operation::Read, "sys/auth", json!({}), &root).await.expect("auth");
    let accessor = data(&r)["fake/"]["accessor"].as_str().expect("accessor").to_owned();
    let g = call(
        &core,
        Operation::Update,
        "identity/group",
        json!({"name": "ops", "type": "external", "policies": ["ops"]}),
        &root,
    )
    .await
    .expect("group");
    let gid = data(&g)["id"].as_str().expect("id").to_owned();
    call(
        &core,
        Operation::Update,
        "identity/group-alias",
        json!({"name": "ops-team", "mount_accessor": accessor, "canonical_id": gid}),
        &root,
    )
    .await
    .expect("alias");
    let r = call(
        &core,
        Operation::Update,
        "auth/fake/login",
        json!({"name": "gina", "groups": ["ops-team"]}),
        "",
    )
    .await
    .expect("login");
    let auth = r.auth.expect("auth");
    assert_eq!(auth.identity_policies, Some(vec!["ops".to_owned()]));
    assert!(auth.policies.contains(&"ops".to_owned()));
    login(&core, json!({"name": "gina", "groups": []})).await;
    let r = call(&core, Operation::Read, &format!("identity/group/id/{gid}"), json!({}), &root)
        .await
        .expect("read");
    assert_eq!(data(&r)["member_entity_ids"], Value::Null, "left the group with the claim");
}
