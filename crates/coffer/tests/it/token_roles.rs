//! Token roles end to end: `auth/token/roles/:name` CRUD and LIST (HTTP and vaultrs), and what
//! `auth/token/create/:name` makes: policies bounded by the role (not the parent), orphans
//! without sudo, period and explicit max TTL merged, renewability, bound CIDRs, path suffix;
//! `coffer token create -role`.

use serde_json::{Value, json};
use vaultrs::api::token::requests::SetTokenRoleRequest;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, ok, tempdir};

fn vaultrs(s: &Server, token: &str) -> VaultClient {
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&s.addr).token(token);
    VaultClient::new(b.build().expect("settings")).expect("client")
}

/// A token with `policies` that may create tokens with roles (but holds no `sudo`).
async fn delegate(s: &Server, root: &str, policies: &[&str]) -> String {
    let rules = r#"path "auth/token/create/*" { capabilities = ["create", "update"] }"#;
    s.call("PUT", "sys/policies/acl/delegate", Some(root), Some(json!({"policy": rules}))).await;
    let mut p: Vec<&str> = policies.to_vec();
    p.push("delegate");
    let (code, b) =
        s.call("POST", "auth/token/create", Some(root), Some(json!({"policies": p}))).await;
    assert_eq!(code, 200, "{b}");
    b["auth"]["client_token"].as_str().expect("token").to_owned()
}

async fn create(s: &Server, token: &str, role: &str, body: Value) -> (u16, Value) {
    s.call("POST", &format!("auth/token/create/{role}"), Some(token), Some(body)).await
}

#[tokio::test]
async fn roles_are_stored_read_listed_and_deleted_as_vault_shows_them() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    assert_eq!(s.call("LIST", "auth/token/roles", Some(&root), None).await.0, 404);
    let (code, b) = s
        .call(
            "POST",
            "auth/token/roles/web",
            Some(&root),
            Some(json!({"allowed_policies": "b,a", "period": "1h", "token_bound_cidrs": ["127.0.0.1/32"]})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, r) = s.call("GET", "auth/token/roles/web", Some(&root), None).await;
    assert_eq!(code, 200, "{r}");
    let d = &r["data"];
    assert_eq!(d["allowed_policies"], json!(["a", "b"]));
    assert_eq!((d["period"].clone(), d["token_period"].clone()), (json!(3600), json!(3600)));
    assert_eq!((d["renewable"].clone(), d["orphan"].clone()), (json!(true), json!(false)));
    assert_eq!(d["token_type"], "default-service");
    assert_eq!(d["token_bound_cidrs"], json!(["127.0.0.1"]));
    assert_eq!(d["name"], "web");
    assert!(d.get("token_num_uses").is_none(), "shown only when set, as in Vault: {d}");

    for (body, needle) in [
        (json!({"token_type": "batch"}), "not supported"),
        (json!({"path_suffix": "../x"}), "path suffix"),
        (json!({"token_bound_cidrs": "nonsense"}), "token_bound_cidrs"),
    ] {
        let (code, b) = s.call("POST", "auth/token/roles/web", Some(&root), Some(body)).await;
        assert_eq!(code, 400, "{b}");
        assert!(b["errors"][0].as_str().expect("e").contains(needle), "{b}");
    }
    let (_, r) = s.call("GET", "auth/token/roles/web", Some(&root), None).await;
    assert_eq!(r["data"]["token_period"], 3600, "a refused write changed the role");

    // Through vaultrs.
    let client = vaultrs(&s, &root);
    vaultrs::token::role::set(
        &client,
        "ops",
        Some(SetTokenRoleRequest::builder().orphan(true).renewable(false).token_period("10m")),
    )
    .await
    .expect("set");
    let read = vaultrs::token::role::read(&client, "ops").await.expect("read");
    assert!(read.orphan && !read.renewable && read.token_period == 600);
    let list = vaultrs::token::role::list(&client).await.expect("list");
    assert_eq!(list.keys, vec!["ops".to_owned(), "web".to_owned()]);
    vaultrs::token::role::delete(&client, "ops").await.expect("delete");
    assert_eq!(s.call("GET", "auth/token/roles/ops", Some(&root), None).await.0, 404);
}

#[tokio::test]
async fn a_role_bounds_the_policies_of_the_tokens_made_with_it() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    // The delegate holds neither `app` nor `app-ro`: the role, not the parent, bounds them.
    let d = delegate(&s, &root, &[]).await;
    s.call(
        "POST",
        "auth/token/roles/app",
        Some(&root),
        Some(json!({"allowed_policies": ["app"], "allowed_policies_glob": ["app-*"],
                    "disallowed_policies": ["app-admin"]})),
    )
    .await;
    let (code, b) = create(&s, &d, "app", json!({})).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["auth"]["policies"], json!(["app", "default"]));
    let (code, b) = create(&s, &d, "app", json!({"policies": ["app-ro"]})).await;
    assert_eq!((code, b["auth"]["policies"].clone()), (200, json!(["app-ro", "default"])), "{b}");
    let (code, b) = create(&s, &d, "app", json!({"policies": ["other"]})).await;
    assert_eq!(code, 400, "{b}");
    assert!(
        b["errors"][0]
            .as_str()
            .expect("e")
            .contains("must be subset of the role's allowed policies")
    );
    let (code, b) = create(&s, &d, "app", json!({"policies": ["app-admin"]})).await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (400, Some("token policy \"app-admin\" is disallowed by this role"))
    );
    let (code, b) = create(&s, &d, "nope", json!({})).await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("unknown role nope")));

    // Only disallowed ones: the parent's policies are the default set, minus those.
    s.call(
        "POST",
        "auth/token/roles/nodefault",
        Some(&root),
        Some(json!({"disallowed_policies_glob": ["def*"]})),
    )
    .await;
    let (code, b) = create(&s, &d, "nodefault", json!({"policies": ["x"]})).await;
    assert_eq!((code, b["auth"]["policies"].clone()), (200, json!(["x"])), "{b}");
    let (code, _) = create(&s, &d, "nodefault", json!({"policies": ["default"]})).await;
    assert_eq!(code, 400);
    // Root is never handed out by a role to a non-root parent.
    s.call(
        "POST",
        "auth/token/roles/any",
        Some(&root),
        Some(json!({"allowed_policies": ["root"]})),
    )
    .await;
    let (code, b) = create(&s, &d, "any", json!({"policies": ["root"]})).await;
    assert_eq!(code, 400, "{b}");
}

#[tokio::test]
async fn a_role_makes_orphans_periodic_capped_bound_and_suffixed_tokens() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let d = delegate(&s, &root, &["default"]).await;
    let (code, b) = s
        .call(
            "POST",
            "auth/token/roles/svc",
            Some(&root),
            Some(json!({
                "orphan": true, "token_period": "1h", "renewable": true, "path_suffix": "app-v1",
                "token_explicit_max_ttl": "2h", "token_num_uses": 5,
                "token_bound_cidrs": ["127.0.0.1/32"],
            })),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    // Orphan and periodic without sudo: the role allows it.
    let (code, b) = create(&s, &d, "svc", json!({})).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["auth"]["orphan"], true);
    assert_eq!(b["auth"]["lease_duration"], 3600);
    let t = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let (code, me) = s.call("GET", "auth/token/lookup-self", Some(&t), None).await;
    assert_eq!(code, 200, "{me}");
    let m = &me["data"];
    assert_eq!(m["path"], "auth/token/create/svc/app-v1");
    assert_eq!(m["role"], "svc");
    assert_eq!(m["period"], 3600);
    assert_eq!(m["explicit_max_ttl"], 7200);
    assert_eq!(m["bound_cidrs"], json!(["127.0.0.1"]));
    assert!(m["num_uses"].as_u64().expect("num_uses") <= 5, "{m}");
    // revoke-prefix by the suffixed path.
    assert_eq!(
        s.call("PUT", "sys/leases/revoke-prefix/auth/token/create/svc/app-v1", Some(&root), None)
            .await
            .0,
        204
    );
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&t), None).await.0, 403);
    // A shorter period in the request wins, with Vault's warning.
    let (code, b) = create(&s, &root, "svc", json!({"period": "10m"})).await;
    assert_eq!((code, b["auth"]["lease_duration"].clone()), (200, json!(600)), "{b}");
    assert!(b["warnings"][0].as_str().expect("w").starts_with("Period specified both"), "{b}");

    // A role that forbids renewals.
    s.call("POST", "auth/token/roles/fixed", Some(&root), Some(json!({"renewable": false}))).await;
    let (_, b) = create(&s, &d, "fixed", json!({"ttl": "1h"})).await;
    assert_eq!(b["auth"]["renewable"], false, "{b}");
    let t = b["auth"]["client_token"].as_str().expect("token").to_owned();
    assert_eq!(s.call("PUT", "auth/token/renew-self", Some(&t), None).await.0, 400);

    // The CLI, and vaultrs.
    let out = ok(s.cli(Some(&d), &["token", "create", "-role=fixed", "-format=json"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["auth"]["renewable"], false, "{v}");
    let auth = vaultrs::token::new_role(&vaultrs(&s, &d), "fixed", None).await.expect("new_role");
    assert!(!auth.client_token.is_empty());
}
