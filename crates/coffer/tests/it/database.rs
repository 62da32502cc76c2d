//! The database secrets engine end to end against a real PostgreSQL (coffer-pgtest): config
//! with connection checks, dynamic credentials that log in and can do only what their role
//! granted, root rotation, static roles rotated on create, on demand and by the clock, and bad
//! input that is refused by name without changing anything.
//! Lease renewal, revocation and expiry through `sys/leases` are the core's to test; the
//! engine's side of them is tested in coffer-engines against the same kind of cluster.

use std::time::{Duration, Instant};

use coffer_pgtest::Cluster;
use serde_json::{Value, json};

use crate::common::{Server, tempdir};

/// A superuser of the test's own, so rotating its password disturbs nobody else.
pub(crate) fn admin(c: &Cluster, name: &str) -> String {
    let pw = format!("Adm1n-{}", std::process::id());
    c.sql("postgres", &format!("CREATE ROLE {name} WITH LOGIN SUPERUSER PASSWORD '{pw}'"));
    pw
}

pub(crate) fn url(c: &Cluster, db: &str) -> String {
    format!(
        "postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{db}?sslmode=disable",
        c.port()
    )
}

pub(crate) fn login(
    c: &Cluster,
    user: &str,
    pw: &str,
    db: &str,
    sql: &str,
) -> Result<String, String> {
    c.sql_at(&format!("{}?sslmode=disable", c.url_for(user, pw, db)), sql)
}

pub(crate) async fn mount(s: &Server, root: &str) {
    let (code, b) =
        s.call("POST", "sys/mounts/database", Some(root), Some(json!({"type": "database"}))).await;
    assert_eq!(code, 204, "{b}");
}

pub(crate) async fn write(s: &Server, token: &str, path: &str, body: Value) -> (u16, Value) {
    s.call("POST", &format!("database/{path}"), Some(token), Some(body)).await
}

pub(crate) async fn config(s: &Server, root: &str, c: &Cluster, db: &str, user: &str, pw: &str) {
    let (code, b) = write(
        s,
        root,
        "config/pg",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": url(c, db),
            "username": user,
            "password": pw,
            "allowed_roles": ["readonly", "app-*"],
        }),
    )
    .await;
    assert!(code == 200 || code == 204, "config: {code} {b}");
}

pub(crate) const READONLY: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON reports TO \"{{name}}\";";

#[tokio::test]
async fn dynamic_credentials_log_in_and_can_do_only_what_the_role_granted() {
    let c = Cluster::shared();
    c.create_database("it_dyn");
    c.sql("it_dyn", "CREATE TABLE reports (x int); INSERT INTO reports VALUES (42); CREATE TABLE payroll (y int)");
    let pw = admin(c, "it_dyn_admin");
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root).await;
    config(&s, &root, c, "it_dyn", "it_dyn_admin", &pw).await;

    let (code, b) = s.call("GET", "database/config/pg", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert!(!b.to_string().contains(&pw), "config read shows the password: {b}");
    assert_eq!(b["data"]["plugin_name"], "postgresql-database-plugin");
    assert_eq!(b["data"]["connection_details"]["username"], "it_dyn_admin");
    // As in Vault: the pool settings show only when a write named them.
    assert!(b["data"]["connection_details"].get("max_open_connections").is_none(), "{b}");
    assert_eq!(b["data"]["allowed_roles"], json!(["readonly", "app-*"]));
    assert!(b["data"].get("verify_connection").is_none(), "{b}");
    assert!(b["data"]["connection_details"].get("password").is_none());
    let (code, b) = s.call("LIST", "database/config", Some(&root), None).await;
    assert_eq!((code, &b["data"]["keys"]), (200, &json!(["pg"])), "{b}");

    let (code, b) = write(
        &s,
        &root,
        "roles/readonly",
        json!({
            "db_name": "pg", "creation_statements": READONLY, "default_ttl": "1h", "max_ttl": "24h",
        }),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s.call("GET", "database/roles/readonly", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["default_ttl"], 3600);
    assert_eq!(b["data"]["max_ttl"], 86_400);
    assert_eq!(b["data"]["creation_statements"], json!([READONLY]));
    assert_eq!(b["data"]["credential_type"], "password");

    // A workload token with only creds access, and a display name to trace it by.
    let (code, b) = s
        .call(
            "POST",
            "sys/policies/acl/dbread",
            Some(&root),
            Some(json!({
                "policy": "path \"database/creds/readonly\" { capabilities = [\"read\"] }"
            })),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            Some(json!({
                "policies": ["dbread"], "display_name": "reporting"
            })),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let app = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let (_, me) = s.call("GET", "auth/token/lookup-self", Some(&app), None).await;
    let display: String =
        me["data"]["display_name"].as_str().expect("display").chars().take(8).collect();

    let (code, b) = s.call("GET", "database/creds/readonly", Some(&app), None).await;
    assert_eq!(code, 200, "{b}");
    let user = b["data"]["username"].as_str().expect("username").to_owned();
    let upw = b["data"]["password"].as_str().expect("password").to_owned();
    // lease_id, lease_duration and renewable come from the core's expiration manager, which
    // registers the engine's SecretLease; its tests cover them (the engine's TTLs and lease
    // data are checked in coffer-engines).
    assert!(
        user.starts_with(&format!("v-{display}-readonly-")),
        "{user} is not traceable to {display}"
    );
    assert!(user.len() <= 63);

    assert_eq!(login(c, &user, &upw, "it_dyn", "SELECT x FROM reports").expect("granted"), "42");
    let denied = login(c, &user, &upw, "it_dyn", "SELECT y FROM payroll").expect_err("not granted");
    assert!(denied.contains("permission denied"), "{denied}");
    assert!(login(c, &user, &upw, "it_dyn", "INSERT INTO reports VALUES (1)").is_err());
    assert!(login(c, &user, "wrong", "it_dyn", "SELECT 1").is_err());
    let valid = c.sql(
        "it_dyn",
        &format!("SELECT rolvaliduntil IS NOT NULL FROM pg_roles WHERE rolname = '{user}'"),
    );
    assert_eq!(valid, "t", "{{expiration}} was set");

    let (_, b2) = s.call("GET", "database/creds/readonly", Some(&app), None).await;
    assert_ne!(b2["data"]["username"], json!(user), "usernames are unique");
    let (code, _) = s.call("GET", "database/config/pg", Some(&app), None).await;
    assert_eq!(code, 403);
    assert!(!s.logs().contains(&upw), "a creds password reached the server log");
    assert!(!s.logs().contains(&pw), "the root password reached the server log");
}

#[tokio::test]
async fn bad_input_gets_400s_naming_the_problem_and_changes_nothing() {
    let c = Cluster::shared();
    c.create_database("it_bad");
    let pw = admin(c, "it_bad_admin");
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root).await;

    let wrong = "Wr0ng-Pa55word-xyz";
    let (code, b) = write(
        &s,
        &root,
        "config/pg",
        json!({
            "plugin_name": "postgresql-database-plugin", "connection_url": url(c, "it_bad"),
            "username": "it_bad_admin", "password": wrong,
        }),
    )
    .await;
    assert_eq!(code, 400, "{b}");
    let msg = b["errors"][0].as_str().expect("error").to_owned();
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(!b.to_string().contains(wrong), "the error shows the password: {b}");
    assert_eq!(s.call("GET", "database/config/pg", Some(&root), None).await.0, 404);

    let (code, b) = write(
        &s,
        &root,
        "config/pg",
        json!({
            "plugin_name": "mysql-database-plugin", "connection_url": url(c, "it_bad"),
        }),
    )
    .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("mysql-database-plugin"), "{b}");

    let (code, b) = write(
        &s,
        &root,
        "config/pg",
        json!({
            "plugin_name": "postgresql-database-plugin", "connection_url": url(c, "it_bad"),
            "username": "it_bad_admin", "password": pw, "allowed_roles": ["readonly"],
            "username_template": "{{ nosuch 3 }}",
        }),
    )
    .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("nosuch"), "{b}");
    config(&s, &root, c, "it_bad", "it_bad_admin", &pw).await;

    let (code, b) = write(
        &s,
        &root,
        "roles/readonly",
        json!({
            "db_name": "nosuchdb", "creation_statements": READONLY,
        }),
    )
    .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("nosuchdb"), "{b}");
    let (code, b) = write(
        &s,
        &root,
        "roles/readonly",
        json!({
            "db_name": "pg", "creation_statements": READONLY, "credential_type": "rsa_private_key",
        }),
    )
    .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("rsa_private_key"), "{b}");
    assert_eq!(s.call("GET", "database/roles/readonly", Some(&root), None).await.0, 404);

    // Not in allowed_roles.
    let (code, _) =
        write(&s, &root, "roles/other", json!({"db_name": "pg", "creation_statements": READONLY}))
            .await;
    assert_eq!(code, 204);
    let (code, b) = s.call("GET", "database/creds/other", Some(&root), None).await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("not an allowed role"), "{b}");

    // Statements PostgreSQL rejects: nothing is created, the role stays as it was.
    let count =
        || c.sql("it_bad", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%-app-bad-%'");
    let before = count();
    let bad = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'; GRANT SELECT ON no_such_table TO \"{{name}}\";";
    let (code, _) =
        write(&s, &root, "roles/app-bad", json!({"db_name": "pg", "creation_statements": bad}))
            .await;
    assert_eq!(code, 204);
    let (code, b) = s.call("GET", "database/creds/app-bad", Some(&root), None).await;
    assert_eq!(code, 400, "{b}");
    let msg = b["errors"][0].as_str().expect("e");
    assert!(msg.contains("creation statements failed") && msg.contains("no_such_table"), "{msg}");
    assert_eq!(count(), before, "a failed creation left a user behind");
    assert!(b.get("lease_id").is_none_or(|l| l == ""), "{b}");

    let (code, b) = s.call("GET", "database/creds/nosuch", Some(&root), None).await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("unknown role: nosuch"), "{b}");

    let (code, b) = write(
        &s,
        &root,
        "static-roles/st",
        json!({
            "db_name": "pg", "username": "nobody_here", "rotation_period": "1h",
        }),
    )
    .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("not an allowed role"), "{b}");
    for (body, want) in [
        (json!({"db_name": "pg", "username": "x", "rotation_period": "2s"}), "5 seconds"),
        (json!({"db_name": "pg", "username": "x", "rotation_schedule": "61 * * * *"}), "minute"),
        (
            json!({"db_name": "pg", "username": "x", "rotation_period": 60, "rotation_schedule": "* * * * *"}),
            "mutually exclusive",
        ),
        (json!({"db_name": "pg", "username": "x"}), "rotation_period"),
        (
            json!({"db_name": "pg", "username": "nobody_here", "rotation_period": 60}),
            "does not exist",
        ),
    ] {
        let (code, b) = write(&s, &root, "static-roles/app-x", body.clone()).await;
        assert_eq!(code, 400, "{body}: {b}");
        assert!(b["errors"][0].as_str().expect("e").contains(want), "{body}: {b}");
    }
    assert_eq!(s.call("GET", "database/static-roles/app-x", Some(&root), None).await.0, 404);
}

#[tokio::test]
async fn rotate_root_retires_the_old_password_and_the_engine_keeps_working() {
    let c = Cluster::shared();
    c.create_database("it_root");
    c.sql("it_root", "CREATE TABLE reports (x int)");
    let pw = admin(c, "it_root_admin");
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root).await;
    config(&s, &root, c, "it_root", "it_root_admin", &pw).await;
    let (code, _) = write(
        &s,
        &root,
        "roles/readonly",
        json!({"db_name": "pg", "creation_statements": READONLY}),
    )
    .await;
    assert_eq!(code, 204);

    let (code, b) = write(&s, &root, "rotate-root/pg", json!({})).await;
    assert_eq!(code, 204, "{b}");
    assert!(
        login(c, "it_root_admin", &pw, "it_root", "SELECT 1").is_err(),
        "old root password still works"
    );
    let (code, b) = s.call("GET", "database/creds/readonly", Some(&root), None).await;
    assert_eq!(code, 200, "creds after rotate-root: {b}");
    let (user, upw) =
        (b["data"]["username"].as_str().expect("u"), b["data"]["password"].as_str().expect("p"));
    assert!(login(c, user, upw, "it_root", "SELECT count(*) FROM reports").is_ok());
    let (_, cfg) = s.call("GET", "database/config/pg", Some(&root), None).await;
    assert!(cfg["data"]["connection_details"].get("password").is_none(), "{cfg}");
    let (code, b) = write(&s, &root, "reset/pg", json!({})).await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = write(&s, &root, "rotate-root/pg", json!({})).await;
    assert_eq!(code, 204, "a second rotation works with the stored password: {b}");
    assert_eq!(s.call("GET", "database/creds/readonly", Some(&root), None).await.0, 200);
}

async fn static_creds(s: &Server, root: &str) -> Value {
    let (code, b) = s.call("GET", "database/static-creds/app-static", Some(root), None).await;
    assert_eq!(code, 200, "{b}");
    b["data"].clone()
}

#[tokio::test]
async fn static_roles_rotate_on_create_on_demand_and_by_the_clock_across_restarts() {
    let c = Cluster::shared();
    c.create_database("it_static");
    c.sql("it_static", "CREATE ROLE it_static_app WITH LOGIN PASSWORD 'Initial-pw-1'");
    let pw = admin(c, "it_static_admin");
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    mount(&s, &root).await;
    config(&s, &root, c, "it_static", "it_static_admin", &pw).await;

    let (code, b) = write(
        &s,
        &root,
        "static-roles/app-static",
        json!({
            "db_name": "pg", "username": "it_static_app", "rotation_period": "1h",
        }),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    assert!(
        login(c, "it_static_app", "Initial-pw-1", "it_static", "SELECT 1").is_err(),
        "creating did not rotate"
    );
    let d = static_creds(&s, &root).await;
    let p1 = d["password"].as_str().expect("password").to_owned();
    assert_eq!(d["username"], "it_static_app");
    assert_eq!(d["rotation_period"], 3600);
    assert!(d["ttl"].as_u64().expect("ttl") > 3500, "{d}");
    assert!(d["last_vault_rotation"].as_str().expect("rfc3339").ends_with('Z'));
    login(c, "it_static_app", &p1, "it_static", "SELECT 1").expect("rotated password works");
    let (code, r) = s.call("GET", "database/static-roles/app-static", Some(&root), None).await;
    assert_eq!(code, 200);
    assert!(r["data"].get("password").is_none() && !r.to_string().contains(&p1), "{r}");

    let (code, b) = write(&s, &root, "rotate-role/app-static", json!({})).await;
    assert_eq!(code, 204, "{b}");
    let p2 = static_creds(&s, &root).await["password"].as_str().expect("p").to_owned();
    assert_ne!(p1, p2);
    assert!(
        login(c, "it_static_app", &p1, "it_static", "SELECT 1").is_err(),
        "old password still works"
    );
    login(c, "it_static_app", &p2, "it_static", "SELECT 1").expect("new password works");

    // A short period: the background task rotates by itself.
    let (code, b) =
        write(&s, &root, "static-roles/app-static", json!({"rotation_period": "5s"})).await;
    assert_eq!(code, 204, "{b}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let p3 = loop {
        let p = static_creds(&s, &root).await["password"].as_str().expect("p").to_owned();
        if p != p2 {
            break p;
        }
        assert!(Instant::now() < deadline, "no rotation within 20 s of a 5 s period");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    login(c, "it_static_app", &p3, "it_static", "SELECT 1").ok();

    // The schedule and the last rotation survive a restart, and rotation goes on.
    let (code, b) =
        write(&s, &root, "static-roles/app-static", json!({"rotation_period": "1h"})).await;
    assert_eq!(code, 204, "{b}");
    let before = static_creds(&s, &root).await;
    s.restart();
    s.unseal(&keys).await;
    let after = static_creds(&s, &root).await;
    assert_eq!(before["password"], after["password"]);
    assert_eq!(before["last_vault_rotation"], after["last_vault_rotation"]);
    assert!(after["ttl"].as_u64().expect("ttl") <= before["ttl"].as_u64().expect("ttl"));
    let pw_now = after["password"].as_str().expect("p");
    login(c, "it_static_app", pw_now, "it_static", "SELECT 1").expect("stored password is live");

    let (code, b) = write(
        &s,
        &root,
        "static-roles/app-static",
        json!({
            "rotation_schedule": "*/30 * * * *", "rotation_window": "1h",
        }),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let d = static_creds(&s, &root).await;
    assert_eq!(d["rotation_schedule"], "*/30 * * * *");
    assert_eq!(d["rotation_window"], 3600);
    assert!(d["ttl"].as_u64().expect("ttl") <= 1800, "{d}");
    assert!(d.get("rotation_period").is_none(), "{d}");
    let (code, b) = s.call("LIST", "database/static-roles", Some(&root), None).await;
    assert_eq!((code, &b["data"]["keys"]), (200, &json!(["app-static"])), "{b}");
    // The config cannot go while the static role names it.
    let (code, b) = s.call("DELETE", "database/config/pg", Some(&root), None).await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().expect("e").contains("static role \"app-static\""), "{b}");
    let (code, _) = s.call("DELETE", "database/static-roles/app-static", Some(&root), None).await;
    assert_eq!(code, 204);
    let (code, b) = s.call("DELETE", "database/config/pg", Some(&root), None).await;
    assert_eq!(code, 204, "{b}");
    assert!(!s.logs().contains(pw_now), "a static password reached the server log");
}
