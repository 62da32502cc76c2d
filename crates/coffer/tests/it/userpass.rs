//! The userpass auth method end to end: users CRUD and LIST, password and policies endpoints,
//! logins (HTTP, vaultrs, `coffer login -method=userpass` with the password on stdin), one
//! answer for every credential failure, the login rate limit, bound CIDRs, and no password in
//! the audit log or in the answers.

use serde_json::json;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::audit::enable_file_device;
use crate::common::{Server, ok, stderr, tempdir};

const PASSWORD: &str = "pl4nted-Passw0rd-canary";

fn vaultrs(s: &Server, token: Option<&str>) -> VaultClient {
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&s.addr);
    if let Some(t) = token {
        b.token(t);
    }
    VaultClient::new(b.build().expect("settings")).expect("client")
}

async fn login(s: &Server, user: &str, password: &str) -> (u16, serde_json::Value) {
    s.call(
        "POST",
        &format!("auth/userpass/login/{user}"),
        None,
        Some(json!({"password": password})),
    )
    .await
}

#[tokio::test]
async fn users_log_in_with_their_password_only_and_it_is_never_shown() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    let (code, b) =
        s.call("POST", "sys/auth/userpass", Some(&root), Some(json!({"type": "userpass"}))).await;
    assert_eq!(code, 204, "{b}");

    // Creation needs a password; a bcrypt hash is not taken.
    let (code, b) = s
        .call("POST", "auth/userpass/users/alice", Some(&root), Some(json!({"policies": "x"})))
        .await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (400, Some("must provide either password or password_hash"))
    );
    let (code, b) = s
        .call(
            "POST",
            "auth/userpass/users/alice",
            Some(&root),
            Some(json!({"password_hash": "$2a$10$abcdefghijklmnopqrstuv"})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    let (code, b) = s
        .call(
            "POST",
            "auth/userpass/users/Alice",
            Some(&root),
            Some(json!({"password": PASSWORD, "token_policies": "dev,ops", "token_ttl": "1h"})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, u) = s.call("GET", "auth/userpass/users/alice", Some(&root), None).await;
    assert_eq!(code, 200, "{u}");
    assert_eq!(u["data"]["token_policies"], json!(["dev", "ops"]));
    assert_eq!(u["data"]["token_ttl"], 3600);
    assert!(!u.to_string().contains("password"), "a read shows a password field: {u}");
    let (_, l) = s.call("LIST", "auth/userpass/users", Some(&root), None).await;
    assert_eq!(l["data"]["keys"], json!(["alice"]));

    // One answer for every credential failure.
    for (user, pw) in
        [("alice", "wrong"), ("nobody", PASSWORD), ("alice", "pl4nted-Passw0rd-canarY")]
    {
        let (code, b) = login(&s, user, pw).await;
        assert_eq!((code, b["errors"][0].as_str()), (400, Some("invalid username or password")));
    }
    let (code, b) = login(&s, "alice", "").await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("missing password")));

    let (code, b) = login(&s, "ALICE", PASSWORD).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["auth"]["policies"], json!(["default", "dev", "ops"]));
    assert_eq!(b["auth"]["metadata"]["username"], "alice");
    assert_eq!(b["auth"]["lease_duration"], 3600);
    let t = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let (_, me) = s.call("GET", "auth/token/lookup-self", Some(&t), None).await;
    assert_eq!(me["data"]["display_name"], "userpass-alice");
    // The request path as sent, as in Vault.
    assert_eq!(me["data"]["path"], "auth/userpass/login/ALICE");

    // The password endpoint: the old one stops working.
    let (code, _) = s
        .call(
            "POST",
            "auth/userpass/users/alice/password",
            Some(&root),
            Some(json!({"password": "n3w-secret-value"})),
        )
        .await;
    assert_eq!(code, 204);
    assert_eq!(login(&s, "alice", PASSWORD).await.0, 400);
    assert_eq!(login(&s, "alice", "n3w-secret-value").await.0, 200);
    let (code, b) = s
        .call(
            "POST",
            "auth/userpass/users/bob/password",
            Some(&root),
            Some(json!({"password": "x"})),
        )
        .await;
    assert_eq!((code, b["errors"][0].as_str()), (400, Some("username does not exist")));

    // The policies endpoint; the password stays.
    let (code, _) = s
        .call(
            "POST",
            "auth/userpass/users/alice/policies",
            Some(&root),
            Some(json!({"policies": "reader"})),
        )
        .await;
    assert_eq!(code, 204);
    let (_, b) = login(&s, "alice", "n3w-secret-value").await;
    assert_eq!(b["auth"]["policies"], json!(["default", "reader"]));

    // Through vaultrs.
    let admin = vaultrs(&s, Some(&root));
    vaultrs::auth::userpass::user::set(&admin, "userpass", "carol", "c4rol-pass", None)
        .await
        .expect("set");
    let read =
        vaultrs::auth::userpass::user::read(&admin, "userpass", "carol").await.expect("read");
    assert!(read.token_policies.is_empty());
    vaultrs::auth::userpass::user::update_policies(&admin, "userpass", "carol", "dev")
        .await
        .expect("policies");
    let auth =
        vaultrs::auth::userpass::login(&vaultrs(&s, None), "userpass", "carol", "c4rol-pass")
            .await
            .expect("login");
    assert!(auth.policies.contains(&"dev".to_owned()), "{:?}", auth.policies);
    vaultrs::auth::userpass::user::delete(&admin, "userpass", "carol").await.expect("delete");
    assert_eq!(login(&s, "carol", "c4rol-pass").await.0, 400);

    let text = std::fs::read_to_string(&log).expect("audit log");
    for secret in [PASSWORD, "n3w-secret-value", "c4rol-pass"] {
        assert!(!text.contains(secret), "a password appears raw in the audit log");
    }
    assert!(!s.logs().contains(PASSWORD), "a password appears in the server log");
}

#[tokio::test]
async fn logins_are_rate_limited_bound_and_work_from_the_cli() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/auth/userpass", Some(&root), Some(json!({"type": "userpass"}))).await;
    s.call(
        "POST",
        "auth/userpass/users/dave",
        Some(&root),
        Some(json!({"password": PASSWORD, "policies": "dev"})),
    )
    .await;

    // The CLI reads the password from stdin when it is not a terminal, and saves the token.
    let out = ok(s.cli_stdin(
        None,
        &["login", "-method=userpass", "username=dave"],
        Some(&format!("{PASSWORD}\n")),
    ));
    assert!(out.contains("Success!") && !out.contains(PASSWORD), "{out}");
    let me = ok(s.cli(None, &["token", "lookup", "-format=json"]));
    assert!(me.contains("userpass-dave"), "{me}");
    let o = s.cli_stdin(None, &["login", "-method=userpass", "username=dave"], Some("wrong\n"));
    assert!(stderr(&o).contains("invalid username or password"), "{}", stderr(&o));
    let o = s.cli(None, &["login", "-method=userpass", "password=x"]);
    assert!(stderr(&o).contains("missing username"), "{}", stderr(&o));

    // Bound CIDRs: a login from elsewhere is refused with 403.
    s.call(
        "POST",
        "auth/userpass/users/erin",
        Some(&root),
        Some(json!({"password": PASSWORD, "token_bound_cidrs": "10.0.0.0/8"})),
    )
    .await;
    assert_eq!(login(&s, "erin", PASSWORD).await.0, 403);

    // The login rate limit applies as for every method: guesses end in 429.
    let mut limited = false;
    for _ in 0..40 {
        if login(&s, "dave", "guess").await.0 == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "40 wrong passwords in a row were never rate limited");
}
