//! AppRole and response wrapping end to end: the bootstrap flow a deploy uses (a wrapped,
//! single-use, short-lived secret ID), through the CLI and through the third-party `vaultrs`
//! client; CIDR bindings against the real source address; the rate limit on failed logins.

use serde_json::{Value, json};
use vaultrs::api::ResponseWrapper;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, ok, stderr, tempdir};

pub(crate) fn vault(s: &Server, token: &str) -> VaultClient {
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&s.addr).token(token);
    VaultClient::new(b.build().expect("settings")).expect("client")
}

/// Mounts approle and kv v2 at `secret/`, with a policy `web` that reads `secret/data/web/*`.
async fn setup(s: &Server, root: &str) {
    for (path, body) in [
        ("sys/auth/approle", json!({"type": "approle"})),
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        (
            "sys/policies/acl/web",
            json!({"policy": "path \"secret/data/web/*\" { capabilities = [\"read\"] }"}),
        ),
    ] {
        let (code, b) = s.call("POST", path, Some(root), Some(body)).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    let (code, b) = s
        .call(
            "POST",
            "secret/data/web/db",
            Some(root),
            Some(json!({"data": {"password": "db-pass-1"}})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
}

fn audit_entries(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[tokio::test]
async fn bootstrap_flow_with_the_cli_wrapped_single_use_secret_id() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    let log = dir.path().join("audit.log");
    let (code, b) = s
        .call(
            "PUT",
            "sys/audit/file",
            Some(&root),
            Some(json!({"type": "file", "options": {"file_path": log.display().to_string()}})),
        )
        .await;
    assert_eq!(code, 204, "{b}");

    // Admin: a role whose secret IDs work once, for 60 s, and whose tokens live 10 minutes.
    ok(s.cli(
        Some(&root),
        &[
            "write",
            "auth/approle/role/web",
            "token_policies=web",
            "secret_id_num_uses=1",
            "secret_id_ttl=60s",
            "token_ttl=10m",
            "token_max_ttl=30m",
        ],
    ));
    let role_id =
        ok(s.cli(Some(&root), &["read", "-field=role_id", "auth/approle/role/web/role-id"]))
            .trim()
            .to_owned();
    let wrapped = ok(s.cli(
        Some(&root),
        &[
            "write",
            "-wrap-ttl=60s",
            "-field=wrapping_token",
            "-f",
            "auth/approle/role/web/secret-id",
        ],
    ))
    .trim()
    .to_owned();
    assert!(wrapped.starts_with("cfw_"), "{wrapped}");

    // Anyone may see what a wrapping token is without using it up.
    let (code, look) =
        s.call("POST", "sys/wrapping/lookup", None, Some(json!({"token": wrapped}))).await;
    assert_eq!(code, 200, "{look}");
    assert_eq!(look["data"]["creation_path"], "auth/approle/role/web/secret-id");
    assert_eq!(look["data"]["creation_ttl"], 60);

    // Workload: unwrap (no token of its own), log in, read its secret.
    let secret_id = ok(s.cli(None, &["unwrap", "-field=secret_id", &wrapped])).trim().to_owned();
    assert_eq!(
        coffer_api::token_format::is_valid(&secret_id),
        Some(coffer_api::token_format::TokenKind::SecretId),
        "{secret_id}"
    );
    let login = s.cli_stdin(
        None,
        &["login", "-method=approle", "-format=json", &format!("role_id={role_id}"), "secret_id=-"],
        Some(&secret_id),
    );
    let login: Value = serde_json::from_str(&ok(login)).expect("login json");
    let token = login["auth"]["client_token"].as_str().expect("token").to_owned();
    assert_eq!(login["auth"]["policies"], json!(["default", "web"]));
    assert_eq!(login["auth"]["metadata"]["role_name"], "web");
    assert_eq!(login["auth"]["lease_duration"], 600);
    assert_eq!(login["auth"]["renewable"], true);
    let pw = ok(s.cli(None, &["kv", "get", "-field=password", "secret/web/db"]));
    assert_eq!(pw.trim(), "db-pass-1", "the login saved the token for later commands");
    let (code, _) = s.call("GET", "secret/data/other", Some(&token), None).await;
    assert_eq!(code, 403, "the token reads only what its policy allows");

    // The second unwrap and the second login fail, and say so.
    let again = s.cli(None, &["unwrap", &wrapped]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("wrapping token is not valid or does not exist"),
        "{}",
        stderr(&again)
    );
    let relogin = s.cli(
        None,
        &[
            "login",
            "-method=approle",
            &format!("role_id={role_id}"),
            &format!("secret_id={secret_id}"),
        ],
    );
    assert!(!relogin.status.success());
    assert!(stderr(&relogin).contains("invalid role or secret ID"), "{}", stderr(&relogin));

    // Both failures are in the audit log, with the credentials only as HMACs.
    let entries = audit_entries(&log);
    let failed = |path: &str, msg: &str| {
        entries.iter().any(|e| {
            e["request"]["path"] == path && e["error"].as_str().is_some_and(|x| x.contains(msg))
        })
    };
    assert!(failed("sys/wrapping/unwrap", "wrapping token is not valid"), "second unwrap audited");
    assert!(failed("auth/approle/login", "invalid role or secret ID"), "second login audited");
    let text = std::fs::read_to_string(&log).expect("log");
    for secret in [&secret_id, &wrapped, &token] {
        assert!(!text.contains(secret.as_str()), "no cleartext credential in the audit log");
    }
    // The wrapped answer's entry shows the wrapping token hashed.
    assert!(entries.iter().any(|e| {
        e["response"]["wrap_info"]["token"].as_str().is_some_and(|t| t.starts_with("hmac-sha256:"))
    }));
}

#[tokio::test]
async fn vaultrs_drives_approle_and_wrapping() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    let admin = vault(&s, &root);
    vaultrs::auth::approle::role::set(
        &admin,
        "approle",
        "web",
        Some(
            vaultrs::api::auth::approle::requests::SetAppRoleRequest::builder()
                .token_policies(vec!["web".to_owned()])
                .secret_id_num_uses(1u64)
                .secret_id_ttl("60s")
                .token_ttl("5m"),
        ),
    )
    .await
    .expect("role");
    let role_id = vaultrs::auth::approle::role::read_id(&admin, "approle", "web")
        .await
        .expect("role id")
        .role_id;
    let endpoint = vaultrs::api::auth::approle::requests::GenerateNewSecretIDRequest::builder()
        .mount("approle")
        .role_name("web")
        .metadata(r#"{"pod":"web-1"}"#)
        .build()
        .expect("endpoint");
    let wrapped = endpoint.wrap(&admin).await.expect("wrapped secret id");
    assert_eq!(wrapped.info.creation_path, "auth/approle/role/web/secret-id");
    let look = vaultrs::sys::wrapping::lookup(&admin, &wrapped.info.token).await.expect("lookup");
    assert_eq!(look.creation_ttl, 600);

    let workload = vault(&s, "");
    let sid = wrapped.unwrap(&workload).await.expect("unwrap");
    let auth = vaultrs::auth::approle::login(&workload, "approle", &role_id, &sid.secret_id)
        .await
        .expect("login");
    assert_eq!(auth.policies, vec!["default".to_owned(), "web".to_owned()]);
    assert_eq!(
        auth.metadata.as_ref().and_then(|m| m.get("pod")).map(String::as_str),
        Some("web-1")
    );
    let app = vault(&s, &auth.client_token);
    let secret: Value =
        vaultrs::kv2::read(&app, "secret", "web/db").await.expect("the workload reads its secret");
    assert_eq!(secret["password"], "db-pass-1");

    let second = wrapped.unwrap(&workload).await;
    assert!(second.is_err(), "a wrapping token unwraps once");
    let relogin =
        vaultrs::auth::approle::login(&workload, "approle", &role_id, &sid.secret_id).await;
    assert!(relogin.is_err(), "a 1-use secret ID logs in once");

    // Accessors list, look up and destroy secret IDs without revealing them.
    let fresh = vaultrs::auth::approle::role::secret::generate(&admin, "approle", "web", None)
        .await
        .expect("secret id");
    let list =
        vaultrs::auth::approle::role::secret::list(&admin, "approle", "web").await.expect("list");
    assert_eq!(list.keys, vec![fresh.secret_id_accessor.clone()]);
    let (code, b) = s
        .call(
            "POST",
            "auth/approle/role/web/secret-id-accessor/lookup",
            Some(&root),
            Some(json!({"secret_id_accessor": fresh.secret_id_accessor})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["secret_id_num_uses"], 1);
    assert!(!b.to_string().contains(&fresh.secret_id), "lookups never show the secret ID");
    vaultrs::auth::approle::role::secret::delete_accessor(
        &admin,
        "approle",
        "web",
        &fresh.secret_id_accessor,
    )
    .await
    .expect("destroy");
    let gone =
        vaultrs::auth::approle::login(&workload, "approle", &role_id, &fresh.secret_id).await;
    assert!(gone.is_err(), "a destroyed secret ID does not log in");
}

#[tokio::test]
async fn secret_ids_expire_and_bind_to_source_addresses() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    let (code, b) = s
        .call(
            "POST",
            "auth/approle/role/svc",
            Some(&root),
            Some(json!({
                "token_policies": ["web"],
                "secret_id_bound_cidrs": ["127.0.0.0/8"],
                "token_bound_cidrs": "127.0.0.1/32"
            })),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (_, rid) = s.call("GET", "auth/approle/role/svc/role-id", Some(&root), None).await;
    let role_id = rid["data"]["role_id"].as_str().expect("role id").to_owned();
    let new_secret_id = |body: Value| {
        let s = &s;
        let root = &root;
        async move {
            let (code, b) =
                s.call("POST", "auth/approle/role/svc/secret-id", Some(root), Some(body)).await;
            (code, b["data"]["secret_id"].as_str().unwrap_or_default().to_owned(), b)
        }
    };
    // A secret ID's binding must lie inside the role's.
    let (code, _, b) = new_secret_id(json!({"cidr_list": "10.0.0.0/8"})).await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().unwrap_or_default().contains("cidr_list"), "{b}");
    let (code, bound, b) = new_secret_id(json!({"cidr_list": "127.0.0.1/32"})).await;
    assert_eq!(code, 200, "{b}");

    let login_from = |ip: &'static str, secret: String| {
        let addr = s.addr.clone();
        let role_id = role_id.clone();
        async move {
            let http = reqwest::Client::builder()
                .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
                .build()
                .expect("client");
            let resp = http
                .post(format!("{addr}/v1/auth/approle/login"))
                .json(&json!({"role_id": role_id, "secret_id": secret}))
                .send()
                .await
                .expect("send");
            let code = resp.status().as_u16();
            (code, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // 127.0.0.2 is another source address on the same loopback: the binding refuses it.
    let (code, b) = login_from("127.0.0.2", bound.clone()).await;
    assert_eq!(code, 400, "{b}");
    assert_eq!(b["errors"][0], "invalid role or secret ID", "no hint about which part failed");
    let (code, b) = login_from("127.0.0.1", bound).await;
    assert_eq!(code, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();
    // The token itself is bound to 127.0.0.1: from 127.0.0.2 it is refused.
    let from2 = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let resp = from2
        .get(format!("{}/v1/secret/data/web/db", s.addr))
        .header("X-Vault-Token", &token)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 403);
    let (code, _) = s.call("GET", "secret/data/web/db", Some(&token), None).await;
    assert_eq!(code, 200);

    // A secret ID with a 1 s TTL stops working.
    let (code, short, b) = new_secret_id(json!({"ttl": "1s"})).await;
    assert_eq!(code, 200, "{b}");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (code, b) = login_from("127.0.0.1", short.clone()).await;
    assert_eq!(code, 400, "{b}");
    let (code, b) = s
        .call(
            "POST",
            "auth/approle/role/svc/secret-id/lookup",
            Some(&root),
            Some(json!({"secret_id": short})),
        )
        .await;
    assert_eq!(code, 204, "an expired secret ID is gone: {b}");
    let (code, b) = s.call("POST", "auth/approle/tidy/secret-id", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
}

#[tokio::test]
async fn roles_validate_their_fields_and_read_back_like_vault() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    for (body, needle) in [
        (json!({"bind_secret_id": false}), "at least one constraint"),
        (json!({"token_ttl": "2h", "token_max_ttl": "1h"}), "token_max_ttl"),
        (json!({"secret_id_bound_cidrs": ["999.1.1.1/8"]}), "secret_id_bound_cidrs"),
        (json!({"token_type": "batch"}), "service tokens"),
        (json!({"token_policies": ["root"]}), ""),
    ] {
        let (code, b) =
            s.call("POST", "auth/approle/role/bad", Some(&root), Some(body.clone())).await;
        if needle.is_empty() {
            // A role may name root, but no login will ever issue a root token from it.
            assert_eq!(code, 204, "{b}");
            continue;
        }
        assert_eq!(code, 400, "{body}: {b}");
        assert!(b["errors"][0].as_str().unwrap_or_default().contains(needle), "{body}: {b}");
    }
    let (_, rid) = s.call("GET", "auth/approle/role/bad/role-id", Some(&root), None).await;
    let (_, sid) = s.call("POST", "auth/approle/role/bad/secret-id", Some(&root), None).await;
    let (code, b) = s
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": rid["data"]["role_id"], "secret_id": sid["data"]["secret_id"]})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    assert!(b.to_string().contains("root tokens"), "{b}");

    let (code, b) = s
        .call(
            "POST",
            "auth/approle/role/Web",
            Some(&root),
            Some(json!({"policies": "web", "period": "1h", "secret_id_ttl": 600, "role_id": "my-role-id"})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, r) = s.call("GET", "auth/approle/role/web", Some(&root), None).await;
    assert_eq!(code, 200, "{r}");
    let d = &r["data"];
    assert_eq!(d["token_policies"], json!(["web"]));
    assert_eq!(d["token_period"], 3600);
    assert_eq!(d["secret_id_ttl"], 600);
    assert_eq!(d["bind_secret_id"], true);
    assert_eq!(d["token_type"], "default");
    let (_, rid) = s.call("GET", "auth/approle/role/web/role-id", Some(&root), None).await;
    assert_eq!(rid["data"]["role_id"], "my-role-id");
    let (code, b) = s
        .call(
            "POST",
            "auth/approle/role/bad/role-id",
            Some(&root),
            Some(json!({"role_id": "my-role-id"})),
        )
        .await;
    assert_eq!(code, 400, "role IDs are unique: {b}");
    let (code, list) = s.call("LIST", "auth/approle/role", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(list["data"]["keys"], json!(["bad", "web"]));
    let (code, _) = s.call("DELETE", "auth/approle/role/web", Some(&root), None).await;
    assert_eq!(code, 204);
    let (code, _) = s.call("GET", "auth/approle/role/web", Some(&root), None).await;
    assert_eq!(code, 404);
    let (code, b) = s
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": "my-role-id", "secret_id": "x"})),
        )
        .await;
    assert_eq!(code, 400, "a deleted role's ID no longer logs in: {b}");
}

#[tokio::test]
async fn repeated_failed_logins_are_rate_limited_per_source() {
    let dir = tempdir();
    let s = Server::start_with(
        dir.path(),
        &format!(
            "{}login_failure_burst = 3\nlogin_failure_refill = \"2s\"\n",
            crate::common::default_config(dir.path())
        ),
        "http",
    );
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    setup(&s, &root).await;
    let body = json!({"role_id": "guess", "secret_id": "guess"});
    for _ in 0..3 {
        let (code, b) = s.call("POST", "auth/approle/login", None, Some(body.clone())).await;
        assert_eq!(code, 400, "{b}");
    }
    let (code, b) = s.call("POST", "auth/approle/login", None, Some(body.clone())).await;
    assert_eq!(code, 429, "{b}");
    // The limit is on logins only: other requests go on.
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&root), None).await;
    assert_eq!(code, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let (code, b) = s.call("POST", "auth/approle/login", None, Some(body)).await;
    assert_eq!(code, 400, "the allowance refills: {b}");
}

#[tokio::test]
async fn sys_wrapping_wraps_rewraps_and_enforces_policy_bounds() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let wrap = |token: &str, ttl: &str, path: &str, body: Value| {
        let http = s.http();
        let url = format!("{}/v1/{path}", s.addr);
        let token = token.to_owned();
        let ttl = ttl.to_owned();
        async move {
            let resp = http
                .post(url)
                .header("X-Vault-Token", token)
                .header("X-Vault-Wrap-TTL", ttl)
                .json(&body)
                .send()
                .await
                .expect("send");
            let code = resp.status().as_u16();
            (code, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (code, w) = wrap(&root, "2m", "sys/wrapping/wrap", json!({"api_key": "k-123"})).await;
    assert_eq!(code, 200, "{w}");
    assert!(w["data"].is_null(), "a wrapped answer carries no data: {w}");
    let t1 = w["wrap_info"]["token"].as_str().expect("token").to_owned();
    assert_eq!(w["wrap_info"]["ttl"], 120);
    assert_eq!(w["wrap_info"]["creation_path"], "sys/wrapping/wrap");

    let (code, r) =
        s.call("POST", "sys/wrapping/rewrap", Some(&root), Some(json!({"token": t1}))).await;
    assert_eq!(code, 200, "{r}");
    let t2 = r["wrap_info"]["token"].as_str().expect("token").to_owned();
    assert_ne!(t1, t2);
    let (code, b) =
        s.call("POST", "sys/wrapping/unwrap", Some(&root), Some(json!({"token": t1}))).await;
    assert_eq!(code, 400, "rewrapping retires the old token: {b}");
    let (code, b) = s.call("POST", "sys/wrapping/unwrap", Some(&t2), None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["api_key"], "k-123");

    // Any response can be wrapped; the wrapped token cannot be used for anything else.
    let (code, w) =
        wrap(&root, "30s", "auth/token/create", json!({"policies": ["default"], "ttl": "1h"}))
            .await;
    assert_eq!(code, 200, "{w}");
    let wt = w["wrap_info"]["token"].as_str().expect("token").to_owned();
    assert!(!w["wrap_info"]["wrapped_accessor"].as_str().unwrap_or_default().is_empty());
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&wt), None).await;
    assert_eq!(code, 403, "a wrapping token's policy allows only unwrapping");
    let (code, b) = s.call("POST", "sys/wrapping/unwrap", None, Some(json!({"token": wt}))).await;
    assert_eq!(code, 200, "a refused request took no use; the body token is its own credential");
    let child = b["auth"]["client_token"].as_str().expect("wrapped token").to_owned();
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&child), None).await;
    assert_eq!(code, 200);
    let (code, b) = s.call("POST", "sys/wrapping/unwrap", Some(&wt), None).await;
    assert_eq!(code, 400, "...and that one use is gone now: {b}");

    // Policies can require wrapping and bound its TTL.
    let (code, b) = s
        .call(
            "POST",
            "sys/policies/acl/wrapped",
            Some(&root),
            Some(json!({"policy": "path \"auth/token/create\" {\n capabilities = [\"update\"]\n min_wrapping_ttl = \"10s\"\n max_wrapping_ttl = \"60s\"\n}"})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (_, t) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["wrapped"]})))
        .await;
    let limited = t["auth"]["client_token"].as_str().expect("token").to_owned();
    let (code, b) = s.call("POST", "auth/token/create", Some(&limited), Some(json!({}))).await;
    assert_eq!(code, 400, "unwrapped is refused: {b}");
    let (code, b) = wrap(&limited, "5m", "auth/token/create", json!({})).await;
    assert_eq!(code, 400, "too long is refused: {b}");
    let (code, b) = wrap(&limited, "30s", "auth/token/create", json!({})).await;
    assert_eq!(code, 200, "{b}");

    // The reserved policy cannot be edited or handed out.
    let (code, _) = s
        .call(
            "PUT",
            "sys/policies/acl/response-wrapping",
            Some(&root),
            Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
        )
        .await;
    assert_eq!(code, 400);
    let (code, _) = s
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            Some(json!({"policies": ["response-wrapping"]})),
        )
        .await;
    assert_eq!(code, 400);
    let out = s.cli(Some(&root), &["write", "-wrap-ttl=soon", "sys/wrapping/wrap", "a=b"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("X-Vault-Wrap-TTL"), "{}", stderr(&out));
    let out = ok(s.cli(Some(&root), &["write", "-wrap-ttl=1m", "sys/wrapping/wrap", "a=b"]));
    assert!(out.contains("wrapping_token:") && out.contains("wrapping_token_ttl:"), "{out}");
}
