//! The identity store end to end, over HTTP and through the third-party `vaultrs` client: logins
//! make one entity and alias and reuse them, tokens carry the entity (lookup, audit), group
//! policies apply and go away on live tokens, a templated policy gives each entity its own
//! path, a disabled entity's token is refused, and the CLI's generic read/write/list work.

use serde_json::{Value, json};
use vaultrs::api::identity::entity::requests::{CreateEntityRequest, UpdateEntityByIdRequest};
use vaultrs::api::identity::group::requests::CreateGroupByNameRequest;

use crate::approle::vault;
use crate::common::{Server, ok, tempdir};

async fn post(s: &Server, token: &str, path: &str, body: Value) -> Value {
    let (code, b) = s.call("POST", path, Some(token), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
    b
}

async fn get(s: &Server, token: &str, path: &str) -> (u16, Value) {
    s.call("GET", path, Some(token), None).await
}

/// AppRole at `auth/approle/`, kv v2 at `secret/`, and a role `name` whose logins get `web`.
async fn approle_role(s: &Server, root: &str, name: &str) -> (String, String) {
    post(s, root, &format!("auth/approle/role/{name}"), json!({"token_policies": ["web"]})).await;
    s.approle_credentials(root, name).await
}

async fn setup(s: &Server, root: &str) {
    post(s, root, "sys/auth/approle", json!({"type": "approle"})).await;
    post(s, root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
}

async fn login(s: &Server, role_id: &str, secret_id: &str) -> Value {
    let (code, b) = s.approle_login(role_id, secret_id).await;
    assert_eq!(code, 200, "{b}");
    b["auth"].clone()
}

#[tokio::test]
async fn a_login_makes_one_entity_and_alias_and_the_next_login_reuses_them() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    let log = dir.path().join("audit.log");
    post(
        &s,
        &root,
        "sys/audit/file",
        json!({"type": "file", "options": {"file_path": log.display().to_string()}}),
    )
    .await;
    let (role_id, secret_id) = approle_role(&s, &root, "web").await;
    let first = login(&s, &role_id, &secret_id).await;
    let second = login(&s, &role_id, &secret_id).await;
    let entity = first["entity_id"].as_str().expect("entity_id").to_owned();
    assert!(!entity.is_empty(), "{first}");
    assert_eq!(second["entity_id"], json!(entity));

    let client = vault(&s, &root);
    let list = vaultrs::identity::entity::list_by_id(&client).await.expect("list");
    assert_eq!(list.keys, vec![entity.clone()], "one entity for two logins");
    let (_, counters) = get(&s, &root, "sys/internal/counters/entities").await;
    assert_eq!(counters["data"]["counters"]["entities"]["total"], 1);
    let e = vaultrs::identity::entity::read_by_id(&client, &entity).await.expect("read");
    assert_eq!(e.aliases.len(), 1);
    let (_, sys_auth) = get(&s, &root, "sys/auth").await;
    let accessor = sys_auth["data"]["approle/"]["accessor"].as_str().expect("accessor");
    let (_, raw) = get(&s, &root, &format!("identity/entity/id/{entity}")).await;
    let alias = &raw["data"]["aliases"][0];
    assert_eq!(alias["mount_accessor"], json!(accessor));
    assert_eq!(alias["name"], json!(role_id), "AppRole's alias is the role_id");
    assert_eq!(alias["metadata"]["role_name"], "web");
    assert_eq!(alias["mount_type"], "approle");
    let token = first["client_token"].as_str().expect("token");
    assert!(!raw.to_string().contains(token), "no token in the entity");

    // Vault's default policy: a token reads its own entity, and no other.
    let (code, own) = get(&s, token, &format!("identity/entity/id/{entity}")).await;
    assert_eq!(code, 200, "{own}");
    let other = post(&s, &root, "identity/entity", json!({"name": "someone-else"})).await;
    let other = other["data"]["id"].as_str().expect("id").to_owned();
    assert_eq!(get(&s, token, &format!("identity/entity/id/{other}")).await.0, 403);
    assert_eq!(get(&s, token, "identity/entity/name/someone-else").await.0, 403);

    // The token says whose it is, and so do the audit entries of its requests.
    let (code, lookup) = get(&s, token, "auth/token/lookup-self").await;
    assert_eq!(code, 200, "{lookup}");
    assert_eq!(lookup["data"]["entity_id"], json!(entity));
    let (code, by_alias) = s
        .call(
            "POST",
            "identity/lookup/entity",
            Some(&root),
            Some(json!({"alias_name": role_id, "alias_mount_accessor": accessor})),
        )
        .await;
    assert_eq!(code, 200, "{by_alias}");
    assert_eq!(by_alias["data"]["id"], json!(entity));
    let audit = std::fs::read_to_string(&log).expect("audit");
    let carried = audit.lines().map(|l| serde_json::from_str::<Value>(l).expect("line")).any(|e| {
        e["request"]["path"] == "auth/token/lookup-self" && e["auth"]["entity_id"] == json!(entity)
    });
    assert!(carried, "audit entries of the token's requests name its entity");
    let answered =
        audit.lines().map(|l| serde_json::from_str::<Value>(l).expect("line")).any(|e| {
            e["type"] == "response"
                && e["request"]["path"] == "auth/approle/login"
                && e["response"]["auth"]["entity_id"] == json!(entity)
        });
    assert!(answered, "the login's response entry names the entity");
}

#[tokio::test]
async fn group_policies_apply_to_a_live_token_and_go_when_it_leaves_the_group() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    post(
        &s,
        &root,
        "sys/policies/acl/team",
        json!({"policy": "path \"secret/data/team/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    post(&s, &root, "secret/data/team/db", json!({"data": {"password": "p1"}})).await;
    let (role_id, secret_id) = approle_role(&s, &root, "web").await;
    let auth = login(&s, &role_id, &secret_id).await;
    let token = auth["client_token"].as_str().expect("token").to_owned();
    let entity = auth["entity_id"].as_str().expect("entity").to_owned();
    assert_eq!(get(&s, &token, "secret/data/team/db").await.0, 403);

    let client = vault(&s, &root);
    vaultrs::identity::group::create_or_update_by_name(
        &client,
        "team",
        Some(
            &mut CreateGroupByNameRequest::builder()
                .policies(vec!["team".to_owned()])
                .member_entity_ids(vec![entity.clone()]),
        ),
    )
    .await
    .expect("group");
    let g = vaultrs::identity::group::read_by_name(&client, "team").await.expect("read group");
    let (code, b) = get(&s, &token, "secret/data/team/db").await;
    assert_eq!(code, 200, "the group's policy applies without a new login: {b}");
    let (_, lookup) = get(&s, &token, "auth/token/lookup-self").await;
    assert_eq!(lookup["data"]["identity_policies"], json!(["team"]));
    let e = vaultrs::identity::entity::read_by_id(&client, &entity).await.expect("entity");
    assert_eq!(e.direct_group_ids, vec![g.id.clone()]);

    // A second login answers with the identity policies, as Vault's does (the CLI shows them).
    let out = ok(s.cli(
        None,
        &[
            "write",
            "auth/approle/login",
            &format!("role_id={role_id}"),
            &format!("secret_id={secret_id}"),
        ],
    ));
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["identity_policies", "[team]"]),
        "{out}"
    );
    let again = login(&s, &role_id, &secret_id).await;
    assert_eq!(again["identity_policies"], json!(["team"]));
    assert!(again["policies"].as_array().expect("policies").contains(&json!("team")));

    post(&s, &root, &format!("identity/group/id/{}", g.id), json!({"member_entity_ids": []})).await;
    assert_eq!(get(&s, &token, "secret/data/team/db").await.0, 403, "gone with the membership");
}

#[tokio::test]
async fn a_templated_policy_gives_each_entity_only_its_own_path() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    post(
        &s,
        &root,
        "sys/policies/acl/web",
        json!({"policy": "path \"secret/data/{{identity.entity.name}}/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    for app in ["alpha", "beta"] {
        post(&s, &root, &format!("secret/data/{app}/db"), json!({"data": {"owner": app}})).await;
    }
    let client = vault(&s, &root);
    let mut tokens = Vec::new();
    for app in ["alpha", "beta"] {
        let (role_id, secret_id) = approle_role(&s, &root, app).await;
        let auth = login(&s, &role_id, &secret_id).await;
        let entity = auth["entity_id"].as_str().expect("entity").to_owned();
        vaultrs::identity::entity::update_by_id(
            &client,
            &entity,
            Some(&mut UpdateEntityByIdRequest::builder().name(app)),
        )
        .await
        .expect("rename");
        tokens.push(auth["client_token"].as_str().expect("token").to_owned());
    }
    let (code, b) = get(&s, &tokens[0], "secret/data/alpha/db").await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["data"]["owner"], "alpha");
    assert_eq!(get(&s, &tokens[0], "secret/data/beta/db").await.0, 403);
    assert_eq!(get(&s, &tokens[1], "secret/data/beta/db").await.0, 200);
    assert_eq!(get(&s, &tokens[1], "secret/data/alpha/db").await.0, 403);
    // A token without an entity gets nothing from the templated path.
    let (code, b) =
        s.call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["web"]}))).await;
    assert_eq!(code, 200, "{b}");
    let plain = b["auth"]["client_token"].as_str().expect("token");
    assert_eq!(get(&s, plain, "secret/data/alpha/db").await.0, 403);
}

#[tokio::test]
async fn a_disabled_entity_has_its_tokens_refused_until_enabled_again() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    let (role_id, secret_id) = approle_role(&s, &root, "web").await;
    let auth = login(&s, &role_id, &secret_id).await;
    let token = auth["client_token"].as_str().expect("token").to_owned();
    let entity = auth["entity_id"].as_str().expect("entity").to_owned();
    let client = vault(&s, &root);
    vaultrs::identity::entity::update_by_id(
        &client,
        &entity,
        Some(&mut UpdateEntityByIdRequest::builder().disabled(true)),
    )
    .await
    .expect("disable");
    assert_eq!(get(&s, &token, "auth/token/lookup-self").await.0, 403);
    let (code, _) = s.approle_login(&role_id, &secret_id).await;
    assert_eq!(code, 403, "no new token for a disabled entity");
    post(&s, &root, &format!("identity/entity/id/{entity}"), json!({"disabled": false})).await;
    assert_eq!(get(&s, &token, "auth/token/lookup-self").await.0, 200);
}

#[tokio::test]
async fn entities_groups_and_lookups_in_vaults_shapes_and_errors() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let client = vault(&s, &root);
    let e = vaultrs::identity::entity::create(
        &client,
        Some(
            &mut CreateEntityRequest::builder()
                .name("svc")
                .policies(vec!["Reader".to_owned()])
                .metadata(std::collections::HashMap::from([("team".to_owned(), "web".to_owned())])),
        ),
    )
    .await
    .expect("create");
    let read = vaultrs::identity::entity::read_by_name(&client, "svc").await.expect("by name");
    assert_eq!(read.id, e.id);
    assert_eq!(read.policies, vec!["reader"]);
    // An update of an existing entity answers 204, as Vault's does.
    let (code, _) = s
        .call(
            "POST",
            "identity/entity",
            Some(&root),
            Some(json!({"name": "svc", "disabled": false})),
        )
        .await;
    assert_eq!(code, 204);
    let (code, b) =
        s.call("POST", "identity/entity", Some(&root), Some(json!({"policies": ["root"]}))).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("policies cannot contain root")));
    let (code, b) =
        s.call("POST", "identity/entity", Some(&root), Some(json!({"id": "nope"}))).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("entity not found from id")));
    let (code, b) = s.call("LIST", "identity/entity/name", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["keys"], json!(["svc"]));
    assert_eq!(b["data"].get("key_info"), None, "as Vault's: by-id info matches no name");
    let (_, b) = s.call("LIST", "identity/entity/id", Some(&root), None).await;
    assert_eq!(b["data"]["key_info"][&e.id]["name"], "svc");
    let (code, b) = s.call("POST", "identity/lookup/entity", Some(&root), Some(json!({}))).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("query parameter not supplied")));
    let (code, _) = s
        .call("POST", "identity/lookup/entity", Some(&root), Some(json!({"name": "missing"})))
        .await;
    assert_eq!(code, 204);

    // Entity aliases: one per mount accessor per entity.
    post(&s, &root, "sys/auth/approle", json!({"type": "approle"})).await;
    let (_, sys_auth) = get(&s, &root, "sys/auth").await;
    let accessor = sys_auth["data"]["approle/"]["accessor"].as_str().expect("accessor").to_owned();
    let a = post(
        &s,
        &root,
        "identity/entity-alias",
        json!({"name": "one", "mount_accessor": accessor, "canonical_id": e.id}),
    )
    .await;
    assert_eq!(a["data"]["canonical_id"], json!(e.id));
    let (code, b) = s
        .call(
            "POST",
            "identity/entity-alias",
            Some(&root),
            Some(json!({"name": "two", "mount_accessor": accessor, "canonical_id": e.id})),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(b["errors"][0], "Alias already exists for requested entity and mount accessor");
    let (code, b) = s
        .call(
            "POST",
            "identity/entity-alias",
            Some(&root),
            Some(json!({"name": "x", "mount_accessor": "auth_nope_1"})),
        )
        .await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (400, Some("invalid mount accessor \"auth_nope_1\""))
    );
    let (code, b) = s.call("LIST", "identity/entity-alias/id", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(b["data"]["keys"], json!([a["data"]["id"]]));

    // Merge: the second entity's alias moves to the first, and the second is gone.
    let other = post(&s, &root, "identity/entity", json!({"name": "other"})).await;
    let other_id = other["data"]["id"].as_str().expect("id").to_owned();
    let (code, _) = s
        .call(
            "POST",
            "identity/entity-alias",
            Some(&root),
            Some(json!({"name": "three", "mount_accessor": accessor, "canonical_id": other_id})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, b) = s
        .call(
            "POST",
            "identity/entity/merge",
            Some(&root),
            Some(json!({"from_entity_ids": [other_id], "to_entity_id": e.id})),
        )
        .await;
    assert_eq!(code, 400, "two aliases on one mount need a choice: {b}");
    assert!(b["errors"][0].as_str().expect("error").starts_with(
        "toEntity and at least one fromEntity have aliases with the same mount accessor"
    ));
    post(
        &s,
        &root,
        "identity/entity/merge",
        json!({"from_entity_ids": [other_id], "to_entity_id": e.id, "conflicting_alias_ids_to_keep": [a["data"]["id"]]}),
    )
    .await;
    assert_eq!(get(&s, &root, &format!("identity/entity/id/{other_id}")).await.0, 404);
    let (_, merged) = get(&s, &root, &format!("identity/entity/id/{}", e.id)).await;
    assert_eq!(merged["data"]["merged_entity_ids"], json!([other_id]));
    assert_eq!(
        merged["data"]["aliases"][0]["id"], a["data"]["id"],
        "the alias named to keep stays"
    );
    assert_eq!(merged["data"]["aliases"].as_array().map(Vec::len), Some(1));

    // Groups: nesting, cycles refused, batch delete takes entities out of groups.
    let inner =
        post(&s, &root, "identity/group", json!({"name": "inner", "member_entity_ids": [e.id]}))
            .await;
    let inner_id = inner["data"]["id"].as_str().expect("id").to_owned();
    let outer =
        post(&s, &root, "identity/group", json!({"name": "outer", "member_group_ids": [inner_id]}))
            .await;
    let outer_id = outer["data"]["id"].as_str().expect("id").to_owned();
    let (code, b) = s
        .call(
            "POST",
            &format!("identity/group/id/{inner_id}"),
            Some(&root),
            Some(json!({"member_group_ids": [outer_id]})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("error").starts_with("cyclic relationship detected"));
    let (_, g) = get(&s, &root, &format!("identity/group/id/{inner_id}")).await;
    assert_eq!(g["data"]["parent_group_ids"], json!([outer_id]));
    assert_eq!(g["data"]["type"], "internal");
    let (_, ent) = get(&s, &root, &format!("identity/entity/id/{}", e.id)).await;
    assert_eq!(ent["data"]["inherited_group_ids"], json!([outer_id]));
    let (code, b) = s
        .call(
            "POST",
            "identity/group",
            Some(&root),
            Some(json!({"name": "ext", "type": "external", "member_entity_ids": [e.id]})),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(b["errors"][0], "member entities can't be set manually for external groups");
    post(&s, &root, "identity/entity/batch-delete", json!({"entity_ids": [e.id]})).await;
    let (_, g) = get(&s, &root, &format!("identity/group/id/{inner_id}")).await;
    assert_eq!(g["data"]["member_entity_ids"], Value::Null);

    // The identity store is always mounted and cannot be moved away.
    let (_, mounts) = get(&s, &root, "sys/mounts").await;
    assert_eq!(mounts["data"]["identity/"]["type"], "identity");
    let (code, _) = s.call("DELETE", "sys/mounts/identity", Some(&root), None).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn the_cli_reads_writes_and_lists_identity_paths() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let out = ok(s.cli(
        Some(&root),
        &[
            "write",
            "-format=json",
            "identity/entity",
            "name=cli-app",
            "policies=a,b",
            "metadata=team=web",
        ],
    ));
    let v: Value = serde_json::from_str(&out).expect("json");
    let id = v["data"]["id"].as_str().expect("id").to_owned();
    let out = ok(s.cli(Some(&root), &["read", "-format=json", "identity/entity/name/cli-app"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["data"]["id"], json!(id));
    assert_eq!(v["data"]["policies"], json!(["a", "b"]));
    assert_eq!(v["data"]["metadata"]["team"], "web");
    let out = ok(s.cli(Some(&root), &["list", "identity/entity/id"]));
    assert!(out.contains(&id), "{out}");
}

#[tokio::test]
async fn token_roles_entity_alias_and_userpass_logins_act_for_entities() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    post(
        &s,
        &root,
        "auth/token/roles/ci",
        json!({"allowed_entity_aliases": ["build-*"], "orphan": true}),
    )
    .await;
    let (code, b) = s
        .call("POST", "auth/token/create/ci", Some(&root), Some(json!({"entity_alias": "build-7"})))
        .await;
    assert_eq!(code, 200, "{b}");
    let entity = b["auth"]["entity_id"].as_str().expect("entity").to_owned();
    assert!(!entity.is_empty());
    let (_, again) = s
        .call("POST", "auth/token/create/ci", Some(&root), Some(json!({"entity_alias": "BUILD-7"})))
        .await;
    assert_ne!(again["auth"]["entity_id"], json!(entity), "alias names keep their case");
    let (_, e) = get(&s, &root, &format!("identity/entity/id/{entity}")).await;
    assert_eq!(e["data"]["aliases"][0]["name"], "build-7");
    assert_eq!(e["data"]["aliases"][0]["mount_type"], "token");
    let (code, b) = s
        .call("POST", "auth/token/create/ci", Some(&root), Some(json!({"entity_alias": "deploy"})))
        .await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("invalid 'entity_alias' value")));
    let (code, b) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"entity_alias": "build-1"})))
        .await;
    assert_eq!(code, 400, "{b}");
    // A child token acts for its parent's entity.
    let token = again["auth"]["client_token"].as_str().expect("token");
    let (code, child) = s
        .call("POST", "auth/token/create", Some(token), Some(json!({"policies": ["default"]})))
        .await;
    assert_eq!(code, 200, "{child}");
    assert_eq!(child["auth"]["entity_id"], again["auth"]["entity_id"]);

    post(&s, &root, "sys/auth/userpass", json!({"type": "userpass"})).await;
    post(&s, &root, "auth/userpass/users/alice", json!({"password": "correct horse battery"}))
        .await;
    let (code, b) = s
        .call(
            "POST",
            "auth/userpass/login/alice",
            None,
            Some(json!({"password": "correct horse battery"})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let alice = b["auth"]["entity_id"].as_str().expect("entity");
    let (_, e) = get(&s, &root, &format!("identity/entity/id/{alice}")).await;
    assert_eq!(e["data"]["aliases"][0]["name"], "alice");
}
