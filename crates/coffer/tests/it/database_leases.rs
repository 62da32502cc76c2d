//! Database credentials and their leases end to end, against a real PostgreSQL: revocation,
//! expiry, renewal capped at max_ttl, revoke-prefix, the creating token's revocation, a restart
//! in between, and a database that is down when the lease ends.

use std::time::{Duration, Instant};

use coffer_pgtest::Cluster;
use serde_json::{Value, json};

use crate::common::{Server, stderr, stdout, tempdir};
use crate::database::{READONLY, admin, config, login, mount, write};

/// A server with `database/` configured against `db` on `c`, and a `readonly` role with these
/// TTLs. Returns (server, unseal keys, root token).
pub(crate) async fn setup(
    dir: &std::path::Path,
    c: &Cluster,
    db: &str,
    default_ttl: &str,
    max_ttl: &str,
) -> (Server, Vec<String>, String) {
    c.create_database(db);
    c.sql(db, "CREATE TABLE reports (x int); INSERT INTO reports VALUES (42)");
    let pw = admin(c, &format!("{db}_admin"));
    let (s, keys, root) = Server::ready(dir).await;
    mount(&s, &root).await;
    config(&s, &root, c, db, &format!("{db}_admin"), &pw).await;
    let (code, b) = write(
        &s,
        &root,
        "roles/readonly",
        json!({"db_name": "pg", "creation_statements": READONLY, "default_ttl": default_ttl, "max_ttl": max_ttl}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    (s, keys, root)
}

/// Reads creds: (username, password, lease id, lease duration).
async fn creds(s: &Server, token: &str) -> (String, String, String, u64) {
    let (code, b) = s.call("GET", "database/creds/readonly", Some(token), None).await;
    assert_eq!(code, 200, "{b}");
    let lease_id = b["lease_id"].as_str().expect("lease_id").to_owned();
    assert!(lease_id.starts_with("database/creds/readonly/"), "{b}");
    assert_eq!(b["renewable"], true, "{b}");
    (
        b["data"]["username"].as_str().expect("username").to_owned(),
        b["data"]["password"].as_str().expect("password").to_owned(),
        lease_id,
        b["lease_duration"].as_u64().expect("lease_duration"),
    )
}

fn role_exists(c: &Cluster, db: &str, user: &str) -> bool {
    c.sql(db, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")) == "1"
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {secs} s waiting until {what}");
}

async fn lookup(s: &Server, root: &str, lease_id: &str) -> (u16, Value) {
    s.call("POST", "sys/leases/lookup", Some(root), Some(json!({"lease_id": lease_id}))).await
}

#[tokio::test]
async fn revoked_and_expired_credentials_stop_working_and_their_roles_are_dropped() {
    let c = Cluster::shared();
    let dir = tempdir();
    let (s, _, root) = setup(dir.path(), c, "lz_rev", "1h", "24h").await;

    // Revoked through sys/leases/revoke.
    let (user, pw, lease, ttl) = creds(&s, &root).await;
    assert!((3590..=3600).contains(&ttl), "the role's default_ttl: {ttl}");
    assert_eq!(login(c, &user, &pw, "lz_rev", "SELECT x FROM reports").expect("login"), "42");
    let (code, b) = lookup(&s, &root, &lease).await;
    assert_eq!(code, 200, "{b}");
    let (code, b) =
        s.call("POST", "sys/leases/revoke", Some(&root), Some(json!({"lease_id": lease}))).await;
    assert_eq!(code, 204, "{b}");
    assert!(login(c, &user, &pw, "lz_rev", "SELECT 1").is_err(), "revoked creds still log in");
    assert!(!role_exists(c, "lz_rev", &user), "the role is dropped");
    assert_eq!(lookup(&s, &root, &lease).await.0, 400, "the lease is gone");

    // Expired: a role with a 2 s TTL.
    let (code, b) = write(
        &s,
        &root,
        "roles/readonly",
        json!({"db_name": "pg", "creation_statements": READONLY, "default_ttl": "2s", "max_ttl": "10s"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let (user, pw, lease, ttl) = creds(&s, &root).await;
    assert_eq!(ttl, 2);
    assert!(login(c, &user, &pw, "lz_rev", "SELECT 1").is_ok());
    wait_until("the expired role was dropped", 15, || !role_exists(c, "lz_rev", &user)).await;
    assert!(login(c, &user, &pw, "lz_rev", "SELECT 1").is_err());
    // The engine drops the role first and the lease record goes right after: allow for that.
    let mut code = 0;
    for _ in 0..50 {
        code = lookup(&s, &root, &lease).await.0;
        if code == 400 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(code, 400, "the expired lease is gone");
}

#[tokio::test]
async fn renewal_extends_valid_until_and_is_capped_at_max_ttl() {
    let c = Cluster::shared();
    let dir = tempdir();
    let (s, _, root) = setup(dir.path(), c, "lz_renew", "30s", "90s").await;
    let (user, _, lease, ttl) = creds(&s, &root).await;
    assert_eq!(ttl, 30);
    let until = |c: &Cluster| {
        c.sql("lz_renew", &format!("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"))
    };
    let before: i64 = until(c).parse().expect("valid until");
    let (code, b) = s
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&root),
            Some(json!({"lease_id": lease, "increment": "60s"})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["lease_id"], json!(lease));
    let d = b["lease_duration"].as_u64().expect("duration");
    assert!((58..=60).contains(&d), "{b}");
    let after: i64 = until(c).parse().expect("valid until");
    assert!(after >= before + 28, "VALID UNTIL moved from {before} to {after}");

    // Beyond max_ttl (90 s from issue): capped, with a warning.
    let (code, b) = s
        .call("PUT", "sys/renew", Some(&root), Some(json!({"lease_id": lease, "increment": "1h"})))
        .await;
    assert_eq!(code, 200, "{b}");
    let d = b["lease_duration"].as_u64().expect("duration");
    assert!(d <= 90, "renewal went past max_ttl: {b}");
    assert!(b["warnings"].to_string().contains("capped"), "{b}");
}

#[tokio::test]
async fn revoke_prefix_and_revoking_the_token_remove_every_user_they_cover() {
    let c = Cluster::shared();
    let dir = tempdir();
    let (s, _, root) = setup(dir.path(), c, "lz_prefix", "1h", "24h").await;
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(creds(&s, &root).await.0);
    }
    assert!(users.iter().all(|u| role_exists(c, "lz_prefix", u)));
    let out = s.cli(Some(&root), &["lease", "revoke", "-prefix", "database/creds/readonly"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for u in &users {
        assert!(!role_exists(c, "lz_prefix", u), "{u} survived revoke-prefix");
    }

    // The token that asked for the creds goes: so do the creds.
    let (_, b) = s.call("POST", "auth/token/create", Some(&root), Some(json!({"ttl": "1h"}))).await;
    let app = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let (user, pw, _, _) = creds(&s, &app).await;
    let (keep, _, keep_lease, _) = creds(&s, &root).await;
    let (code, _) = s.call("POST", "auth/token/revoke-self", Some(&app), None).await;
    assert_eq!(code, 204);
    assert!(!role_exists(c, "lz_prefix", &user), "the token's creds survived it");
    assert!(login(c, &user, &pw, "lz_prefix", "SELECT 1").is_err());
    assert!(role_exists(c, "lz_prefix", &keep), "another token's creds were revoked");
    assert_eq!(lookup(&s, &root, &keep_lease).await.0, 200);
}

#[tokio::test]
async fn the_cli_prints_creds_with_their_lease_and_renews_and_revokes_them() {
    let c = Cluster::shared();
    let dir = tempdir();
    let (s, _, root) = setup(dir.path(), c, "lz_cli", "1h", "24h").await;
    let out = s.cli(Some(&root), &["read", "database/creds/readonly"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for want in [
        "lease_id",
        "database/creds/readonly/",
        "lease_duration",
        "1h",
        "lease_renewable",
        "true",
        "username",
        "password",
    ] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }
    let lease = table
        .lines()
        .find_map(|l| l.strip_prefix("lease_id").map(|v| v.trim().to_owned()))
        .expect("lease_id row");
    let user = table
        .lines()
        .find_map(|l| l.strip_prefix("username").map(|v| v.trim().to_owned()))
        .expect("username row");
    let out = s.cli(Some(&root), &["lease", "renew", "-increment=2h", &lease]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2h"), "{}", stdout(&out));
    let out = s.cli(Some(&root), &["lease", "revoke", &lease]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!role_exists(c, "lz_cli", &user));
}

#[tokio::test]
async fn a_restart_keeps_leases_and_still_revokes_them_on_time() {
    let c = Cluster::shared();
    let dir = tempdir();
    let (mut s, keys, root) = setup(dir.path(), c, "lz_restart", "6s", "1h").await;
    let (user, pw, lease, _) = creds(&s, &root).await;
    s.restart();
    s.unseal(&keys).await;
    let (code, b) = lookup(&s, &root, &lease).await;
    assert_eq!(code, 200, "the lease survived the restart: {b}");
    assert!(login(c, &user, &pw, "lz_restart", "SELECT 1").is_ok());
    wait_until("the lease expired after the restart", 20, || !role_exists(c, "lz_restart", &user))
        .await;
    assert!(login(c, &user, &pw, "lz_restart", "SELECT 1").is_err());
}

#[tokio::test]
async fn a_lease_that_ends_while_the_database_is_down_is_kept_and_revoked_when_it_is_back() {
    // A cluster of this test's own: it is stopped and started again.
    let c = Cluster::start();
    let dir = tempdir();
    let (s, _, root) = setup(dir.path(), &c, "lz_down", "3s", "1h").await;
    let (user, _, lease, _) = creds(&s, &root).await;
    c.stop();
    // The lease falls due while PostgreSQL is down: the revocation fails and is kept.
    let deadline = Instant::now() + Duration::from_secs(20);
    let failing = loop {
        let (code, b) = lookup(&s, &root, &lease).await;
        assert_eq!(code, 200, "the lease must stay while its revocation fails: {b}");
        if b["data"]["revoke_attempts"].as_u64().unwrap_or(0) >= 1 {
            break b;
        }
        assert!(Instant::now() < deadline, "no revocation attempt was recorded: {b}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(failing["data"]["revoke_error"].as_str().is_some_and(|e| !e.is_empty()), "{failing}");
    let (code, b) = s.call("GET", "sys/leases?type=irrevocable", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["leases"][0]["lease_id"], json!(lease), "{b}");
    assert!(s.logs().contains("lease revocation failed"), "the failure is logged");

    c.start_again();
    wait_until("the retried revocation dropped the role", 40, || {
        !role_exists(&c, "lz_down", &user)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lookup(&s, &root, &lease).await.0 != 400 {
        assert!(Instant::now() < deadline, "the lease stayed after its revocation succeeded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn database_passwords_follow_the_policy_and_reach_no_storage_log_or_audit_entry_in_clear() {
    let c = Cluster::shared();
    let db = "lz_secret";
    c.create_database(db);
    c.sql(
        db,
        "CREATE TABLE reports (x int); CREATE ROLE lz_static_user LOGIN PASSWORD 'Initial-1'",
    );
    let admin_pw = admin(c, "lz_secret_admin");
    let dir = tempdir();
    let (mut s, _, root) = Server::ready_sqlite(dir.path()).await;
    let audit_log = dir.path().join("audit.log");
    crate::audit::enable_file_device(&s, &root, &audit_log).await;
    let policy =
        "length = 24\nrule \"charset\" {\n  charset = \"abcdef0123\"\n  min-chars = 1\n}\n";
    let (code, b) = s
        .call("PUT", "sys/policies/password/dbpw", Some(&root), Some(json!({"policy": policy})))
        .await;
    assert_eq!(code, 204, "{b}");
    mount(&s, &root).await;
    let (code, b) = write(
        &s,
        &root,
        "config/pg",
        json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": crate::database::url(c, db),
            "username": "lz_secret_admin",
            "password": admin_pw,
            "allowed_roles": "*",
            "password_policy": "dbpw",
        }),
    )
    .await;
    assert!(code == 200 || code == 204, "{b}");
    let (code, b) = write(
        &s,
        &root,
        "roles/readonly",
        json!({"db_name": "pg", "creation_statements": READONLY, "default_ttl": "1h"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let (user, dyn_pw, _, _) = creds(&s, &root).await;
    assert_eq!(dyn_pw.len(), 24, "the dynamic password's length");
    assert!(
        dyn_pw.chars().all(|ch| "abcdef0123".contains(ch)),
        "the dynamic password breaks the policy"
    );
    assert!(login(c, &user, &dyn_pw, db, "SELECT x FROM reports").is_ok());
    let (code, b) = write(
        &s,
        &root,
        "static-roles/st",
        json!({"db_name": "pg", "username": "lz_static_user", "rotation_period": "1h"}),
    )
    .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s.call("GET", "database/static-creds/st", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let static_pw = b["data"]["password"].as_str().expect("password").to_owned();
    assert!(
        static_pw.chars().all(|ch| "abcdef0123".contains(ch)),
        "the static password breaks the policy"
    );
    assert!(login(c, "lz_static_user", &static_pw, db, "SELECT 1").is_ok());
    s.stop();

    let stored = crate::invariants::storage_bytes(dir.path());
    let audit = std::fs::read_to_string(&audit_log).expect("audit log");
    assert!(audit.contains("database/creds/readonly"), "the creds read was audited");
    let logs = s.logs();
    for (what, secret) in [("root", &admin_pw), ("dynamic", &dyn_pw), ("static", &static_pw)] {
        assert!(!crate::invariants::contains(&stored, secret), "storage holds the {what} password");
        assert!(!logs.contains(secret.as_str()), "the server log holds the {what} password");
        assert!(!audit.contains(secret.as_str()), "the audit log holds the {what} password");
    }
}

/// The engine through a third-party Vault client: every answer must deserialize into vaultrs'
/// types, which follow Vault's shapes.
#[tokio::test]
async fn vaultrs_drives_the_database_engine() {
    use vaultrs::api::database::requests::{
        PostgreSQLConnectionRequest, SetRoleRequest, SetStaticRoleRequest,
    };
    use vaultrs::database::{connection, role, static_role};

    let c = Cluster::shared();
    let db = "lz_vaultrs";
    c.create_database(db);
    c.sql(
        db,
        "CREATE TABLE reports (x int); INSERT INTO reports VALUES (7); CREATE ROLE lz_vr_static LOGIN PASSWORD 'Initial-1'",
    );
    let pw = admin(c, "lz_vaultrs_admin");
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root).await;
    let v = crate::approle::vault(&s, &root);

    connection::postgres(
        &v,
        "database",
        "pg",
        Some(
            PostgreSQLConnectionRequest::builder()
                .plugin_name("postgresql-database-plugin")
                .connection_url(crate::database::url(c, db))
                .username("lz_vaultrs_admin")
                .password(pw.clone())
                .allowed_roles(vec!["*".to_owned()]),
        ),
    )
    .await
    .expect("config");
    let cfg = connection::read(&v, "database", "pg").await.expect("read config");
    assert_eq!(cfg.plugin_name, "postgresql-database-plugin");
    assert_eq!(cfg.connection_details.username, "lz_vaultrs_admin");
    assert!(!format!("{cfg:?}").contains(&pw), "the config read shows the password");
    assert_eq!(connection::list(&v, "database").await.expect("list").keys, ["pg"]);
    connection::rotate(&v, "database", "pg").await.expect("rotate-root");
    assert!(
        login(c, "lz_vaultrs_admin", &pw, db, "SELECT 1").is_err(),
        "the old root password works"
    );
    connection::reset(&v, "database", "pg").await.expect("reset");

    role::set(
        &v,
        "database",
        "readonly",
        Some(
            SetRoleRequest::builder()
                .db_name("pg")
                .creation_statements(vec![READONLY.to_owned()])
                .default_ttl("1h")
                .max_ttl("24h"),
        ),
    )
    .await
    .expect("role");
    let r = role::read(&v, "database", "readonly").await.expect("read role");
    assert_eq!((r.default_ttl, r.max_ttl), (3600, 86_400));
    assert_eq!(role::list(&v, "database").await.expect("roles").keys, ["readonly"]);
    let creds = role::creds(&v, "database", "readonly").await.expect("creds");
    assert_eq!(
        login(c, &creds.username, &creds.password, db, "SELECT x FROM reports").expect("login"),
        "7"
    );

    static_role::set(
        &v,
        "database",
        "st",
        Some(
            SetStaticRoleRequest::builder()
                .db_name("pg")
                .username("lz_vr_static")
                .rotation_period("1h"),
        ),
    )
    .await
    .expect("static role");
    let first = static_role::creds(&v, "database", "st").await.expect("static creds");
    assert_eq!((first.username.as_str(), first.rotation_period), ("lz_vr_static", 3600));
    assert!(login(c, "lz_vr_static", &first.password, db, "SELECT 1").is_ok());
    static_role::rotate(&v, "database", "st").await.expect("rotate-role");
    let second = static_role::creds(&v, "database", "st").await.expect("static creds");
    assert_ne!(first.password, second.password);
    assert!(login(c, "lz_vr_static", &first.password, db, "SELECT 1").is_err());
    assert!(login(c, "lz_vr_static", &second.password, db, "SELECT 1").is_ok());
}
