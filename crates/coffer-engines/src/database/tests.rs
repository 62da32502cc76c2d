//! The engine against a real PostgreSQL (coffer-pgtest), built directly over a memory
//! barrier, for what the HTTP tests cannot reach: lease renewal and revocation, TLS modes, and
//! finishing a root rotation a crash interrupted.

use std::sync::Arc;
use std::time::Duration;

use coffer_barrier::{Barrier, SealConfig};
use coffer_core::{BackendRequest, LeaseRequest, LogicalBackend, MountInfo, Operation, Response};
use coffer_pgtest::Cluster;
use serde_json::{Map, Value, json};

use super::*;

async fn engine() -> Arc<Database> {
    let (view, _) = coffer_core::testkit::memory_view("logical/db/").await;
    Database::new(view, PasswordSource::DefaultOnly, None)
}

async fn call(
    db: &Database,
    op: Operation,
    path: &str,
    body: Value,
) -> coffer_core::Result<Response> {
    coffer_core::testkit::call(db, &mount(), op, path, body, false).await
}

fn mount() -> MountInfo {
    coffer_core::testkit::mount_info("database/", "database", Duration::from_secs(86_400))
}

/// A superuser of its own (so rotating it disturbs no other test) and its password.
fn admin(c: &Cluster, name: &str) -> String {
    let pw = format!("pw-{}", coffer_core::random::random_base62(16));
    c.sql("postgres", &format!("CREATE ROLE {name} WITH LOGIN SUPERUSER PASSWORD '{pw}'"));
    pw
}

fn templated(c: &Cluster, db: &str, extra: &str) -> String {
    format!("postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{db}{extra}", c.port())
}

fn logs_in(c: &Cluster, user: &str, pw: &str, db: &str) -> bool {
    c.sql_at(&format!("{}?sslmode=disable", c.url_for(user, pw, db)), "SELECT 1").is_ok()
}

#[tokio::test]
async fn leases_renew_the_user_and_revocation_drops_it_once_and_for_all() {
    let c = Cluster::shared();
    c.create_database("eng_lease");
    c.sql("eng_lease", "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let pw = admin(c, "eng_lease_admin");
    let db = engine().await;
    call(
        &db,
        Operation::Update,
        "config/pg",
        json!({
            "plugin_name": PLUGIN,
            "connection_url": templated(c, "eng_lease", "?sslmode=disable"),
            "username": "eng_lease_admin",
            "password": pw,
            "allowed_roles": "*",
        }),
    )
    .await
    .expect("config");
    call(
        &db,
        Operation::Update,
        "roles/owner",
        json!({
            "db_name": "pg",
            "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON t TO \"{{name}}\"; GRANT CREATE ON SCHEMA public TO \"{{name}}\";",
            "default_ttl": "1h",
        }),
    )
    .await
    .expect("role");
    let r = call(&db, Operation::Read, "creds/owner", json!({})).await.expect("creds");
    let data = r.data.expect("data");
    let user = data["username"].as_str().expect("username").to_owned();
    let upw = data["password"].as_str().expect("password").to_owned();
    let secret = r.secret.expect("a lease");
    assert_eq!((secret.ttl, secret.max_ttl, secret.renewable), (3600, 86_400, true));
    assert_eq!(secret.internal["username"], json!(user));
    assert_eq!(secret.internal["role"], json!("owner"));
    assert_eq!(secret.internal["db_name"], json!("pg"));
    assert!(!format!("{:?}", secret.internal).contains(&upw), "internal holds the password");
    // The user makes an object of its own: revocation must hand it over, not fail on it.
    c.sql_at(
        &format!("{}?sslmode=disable", c.url_for(&user, &upw, "eng_lease")),
        "CREATE TABLE mine (y int)",
    )
    .expect("the user can create what it was granted");

    let valid = |c: &Cluster| {
        c.sql("eng_lease", &format!("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"))
    };
    let before: u64 = valid(c).parse().expect("valid until");
    let new_expiry = coffer_core::time::now_unix() + 7200;
    let m = mount();
    let lease = LeaseRequest {
        lease_id: "database/creds/owner/x",
        path: "creds/owner",
        mount: &m,
        internal: &secret.internal,
        issue_time: coffer_core::time::now_unix(),
        expire_time: new_expiry,
    };
    db.renew_creds(&lease).await.expect("renew");
    let after: u64 = valid(c).parse().expect("valid until");
    assert!(after > before + 3000, "VALID UNTIL moved from {before} to {after}");
    assert_eq!(after, new_expiry + 5);

    db.revoke_creds(&lease).await.expect("revoke");
    assert_eq!(
        c.sql("eng_lease", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")),
        "0"
    );
    assert!(!logs_in(c, &user, &upw, "eng_lease"));
    assert_eq!(
        c.sql("eng_lease", "SELECT tableowner FROM pg_tables WHERE tablename = 'mine'"),
        "eng_lease_admin",
        "the revoked user's table went to the connection user"
    );
    db.revoke_creds(&lease).await.expect("revoking again is success");
    let e = db.renew_creds(&lease).await.expect_err("renewing a revoked user fails");
    assert!(e.to_string().contains("renew statements failed"), "{e}");
}

#[tokio::test]
async fn custom_revocation_statements_run_and_are_idempotent() {
    let c = Cluster::shared();
    c.create_database("eng_custom");
    let pw = admin(c, "eng_custom_admin");
    let db = engine().await;
    call(
        &db,
        Operation::Update,
        "config/pg",
        json!({
            "plugin_name": PLUGIN,
            "connection_url": templated(c, "eng_custom", "?sslmode=disable"),
            "username": "eng_custom_admin", "password": pw, "allowed_roles": ["app"],
        }),
    )
    .await
    .expect("config");
    call(
        &db,
        Operation::Update,
        "roles/app",
        json!({
            "db_name": "pg",
            "creation_statements": ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'"],
            "revocation_statements": ["DROP ROLE \"{{name}}\""],
        }),
    )
    .await
    .expect("role");
    let r = call(&db, Operation::Read, "creds/app", json!({})).await.expect("creds");
    let secret = r.secret.expect("lease");
    let user = r.data.expect("data")["username"].as_str().expect("u").to_owned();
    // The lease carries the statements, so deleting the role does not strand the user.
    call(&db, Operation::Delete, "roles/app", json!({})).await.expect("delete role");
    let m = mount();
    let lease = LeaseRequest {
        lease_id: "database/creds/app/y",
        path: "creds/app",
        mount: &m,
        internal: &secret.internal,
        issue_time: 0,
        expire_time: 0,
    };
    db.revoke_creds(&lease).await.expect("revoke");
    assert_eq!(
        c.sql("eng_custom", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")),
        "0"
    );
    db.revoke_creds(&lease).await.expect("a plain DROP ROLE is not run twice");
}

#[tokio::test]
async fn tls_verify_full_connects_and_a_plaintext_url_is_refused() {
    let c = Cluster::start_tls();
    let ca = c.ca_pem_path().expect("ca");
    let pw = admin(&c, "tls_admin");
    let db = engine().await;
    let write = |url: String| {
        let db = db.clone();
        let pw = pw.clone();
        async move {
            call(
                &db,
                Operation::Update,
                "config/pg",
                json!({
                    "plugin_name": PLUGIN, "connection_url": url,
                    "username": "tls_admin", "password": pw, "allowed_roles": "*",
                }),
            )
            .await
        }
    };
    write(templated(&c, "postgres", &format!("?sslmode=verify-full&sslrootcert={}", ca.display())))
        .await
        .expect("verify-full against the test CA");
    // Unverified TLS logs in with SCRAM-SHA-256-PLUS (channel binding is required), and the
    // write warns that the server is not authenticated.
    let r = write(templated(&c, "postgres", "?sslmode=require")).await.expect("require encrypts");
    assert!(r.warnings.iter().any(|w| w.contains("does not authenticate the server")), "{r:?}");
    let r = write(templated(
        &c,
        "postgres",
        &format!("?sslmode=verify-full&sslrootcert={}", ca.display()),
    ))
    .await
    .expect("verify-full");
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let e =
        write(templated(&c, "postgres", "?sslmode=disable")).await.expect_err("no TLS, no login");
    let msg = e.to_string();
    assert!(msg.contains("error creating database object"), "{msg}");
    assert!(!msg.contains(&pw), "{msg}");
    // A CA that did not issue the server certificate is refused.
    let other = std::env::temp_dir().join(format!("coffer-db-other-ca-{}.pem", std::process::id()));
    let key = rcgen_free_ca();
    std::fs::write(&other, key).expect("write other ca");
    let e = write(templated(
        &c,
        "postgres",
        &format!("?sslmode=verify-full&sslrootcert={}", other.display()),
    ))
    .await
    .expect_err("wrong CA");
    let _ = std::fs::remove_file(&other);
    assert!(e.to_string().contains("error creating database object"), "{e}");
}

/// A CA certificate that did not issue the cluster's server certificate.
fn rcgen_free_ca() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).expect("self-signed").pem().into_bytes()
}

#[tokio::test]
async fn an_interrupted_root_rotation_is_settled_on_next_use() {
    let c = Cluster::shared();
    let pw = admin(c, "eng_settle_admin");
    let db = engine().await;
    call(
        &db,
        Operation::Update,
        "config/pg",
        json!({
            "plugin_name": PLUGIN,
            "connection_url": templated(c, "postgres", "?sslmode=disable"),
            "username": "eng_settle_admin", "password": pw, "allowed_roles": "*",
        }),
    )
    .await
    .expect("config");
    // As if the process died after ALTER ROLE but before storing the new password.
    let mut cfg = db.must_config("pg").await.expect("cfg");
    cfg.pending_password = Some(SecretString::from("pending-Pw-123"));
    db.store_config("pg", &cfg).await.expect("store");
    c.sql("postgres", "ALTER ROLE eng_settle_admin WITH PASSWORD 'pending-Pw-123'");
    db.close_conn("pg").await;
    db.conn("pg").await.expect("settles").verify().await.expect("connects");
    let cfg = db.must_config("pg").await.expect("cfg");
    assert_eq!(cfg.password.expose(), "pending-Pw-123");
    assert!(cfg.pending_password.is_none());
}

/// A config `pg` on the shared cluster with its own superuser; returns the engine and the
/// superuser's password.
async fn configured(c: &Cluster, admin_name: &str, extra: Value) -> (Arc<Database>, String) {
    let pw = admin(c, admin_name);
    let db = engine().await;
    let mut body = json!({
        "plugin_name": PLUGIN,
        "connection_url": templated(c, "postgres", "?sslmode=disable"),
        "username": admin_name, "password": pw, "allowed_roles": "*",
    });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    call(&db, Operation::Update, "config/pg", body).await.expect("config");
    (db, pw)
}

#[tokio::test]
async fn rotate_root_waits_for_a_config_write_in_progress() {
    let c = Cluster::shared();
    let (db, _) = configured(c, "eng_race_admin", json!({})).await;
    // A config write (or delete) in progress holds the engine lock; rotation must not run
    // underneath it, or the write's stale record (old password) would be stored last.
    let held = db.lock.lock().await;
    let task = tokio::spawn({
        let db = db.clone();
        async move { call(&db, Operation::Update, "rotate-root/pg", json!({})).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!task.is_finished(), "rotate-root ran while a config write held the lock");
    drop(held);
    task.await.expect("join").expect("rotate");
    let cfg = db.must_config("pg").await.expect("cfg");
    assert!(logs_in(c, "eng_race_admin", cfg.password.expose(), "postgres"));
    // A delete that waited for the rotation is not undone by it.
    call(&db, Operation::Delete, "config/pg", json!({})).await.expect("delete");
    assert!(db.config("pg").await.expect("read").is_none());
}

#[tokio::test]
async fn a_root_rotation_whose_change_committed_despite_an_error_keeps_the_new_password() {
    let c = Cluster::shared();
    // The password change commits, then an error comes back: as a lost COMMIT reply would.
    let (db, _) = configured(
        c,
        "eng_ambig_admin",
        json!({"root_rotation_statements": [
            "ALTER ROLE \"{{name}}\" WITH PASSWORD '{{password}}'; COMMIT; SELECT 1/0"
        ]}),
    )
    .await;
    let e = call(&db, Operation::Update, "rotate-root/pg", json!({}))
        .await
        .expect_err("the statements report an error");
    assert!(e.to_string().contains("failed to update user"), "{e}");
    assert!(db.must_config("pg").await.expect("cfg").pending_password.is_some());
    // The engine still reaches the database, settling on the password that logs in.
    db.conn("pg").await.expect("settles").verify().await.expect("connects");
    let cfg = db.must_config("pg").await.expect("cfg");
    assert!(cfg.pending_password.is_none());
    assert!(logs_in(c, "eng_ambig_admin", cfg.password.expose(), "postgres"));
}

#[tokio::test]
async fn a_password_written_into_the_connection_string_is_never_read_back() {
    let c = Cluster::shared();
    let pw = admin(c, "eng_redact_admin");
    let db = engine().await;
    let port = c.port();
    for url in [
        format!("postgres://eng_redact_admin:{pw}@127.0.0.1:{port}/postgres?sslmode=disable"),
        format!(
            "postgres://eng_redact_admin@127.0.0.1:{port}/postgres?sslmode=disable&password={pw}"
        ),
        format!(
            "host=127.0.0.1 port={port} user=eng_redact_admin password={pw} dbname=postgres \
             sslmode=disable"
        ),
        format!(
            "host=127.0.0.1 port={port} user=eng_redact_admin password = '{pw}' dbname=postgres \
             sslmode=disable"
        ),
    ] {
        let r = call(
            &db,
            Operation::Update,
            "config/pg",
            json!({"plugin_name": PLUGIN, "connection_url": url, "allowed_roles": "*"}),
        )
        .await
        .expect("config with the password in the URL connects");
        assert!(r.warnings.iter().any(|w| w.contains("Password found in connection_url")), "{url}");
        let read = call(&db, Operation::Read, "config/pg", json!({})).await.expect("read");
        let text = serde_json::to_string(&read.data).expect("json");
        assert!(!text.contains(&pw), "{url}: {text}");
        assert!(text.contains("xxxxx"), "{url}: {text}");
    }
}

#[tokio::test]
async fn rotate_root_is_refused_while_the_url_holds_a_written_in_password() {
    let c = Cluster::shared();
    let pw = admin(c, "eng_literal_admin");
    let db = engine().await;
    let url = format!(
        "postgres://eng_literal_admin:{pw}@127.0.0.1:{}/postgres?sslmode=disable",
        c.port()
    );
    call(
        &db,
        Operation::Update,
        "config/pg",
        json!({
            "plugin_name": PLUGIN, "connection_url": url,
            "username": "eng_literal_admin", "password": pw, "allowed_roles": "*",
        }),
    )
    .await
    .expect("config");
    let e = call(&db, Operation::Update, "rotate-root/pg", json!({}))
        .await
        .expect_err("a literal password in the URL would outlive the rotation");
    assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
    assert!(e.to_string().contains("{{password}}"), "{e}");
    assert!(!e.to_string().contains(&pw), "{e}");
    assert!(logs_in(c, "eng_literal_admin", &pw, "postgres"), "the password was not changed");
    db.conn("pg").await.expect("conn").verify().await.expect("the config still works");
}

#[tokio::test]
async fn a_statement_that_hangs_is_abandoned_after_the_query_timeout() {
    let c = Cluster::shared();
    let (db, pw) = configured(c, "eng_timeout_admin", json!({})).await;
    let cfg = db.must_config("pg").await.expect("cfg");
    let mut conn = cfg.open(&pw).expect("pool");
    conn.set_query_timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let e = conn
        .run_tx(
            "creation statements failed",
            &["SELECT pg_sleep(5)".into()],
            &template::Vars::default(),
        )
        .await
        .expect_err("times out");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(e.to_string().contains("timed out after 0.5s"), "{e}");
    let e = conn.drop_user("nobody; SELECT pg_sleep(5)").await;
    assert!(e.is_ok(), "a missing user is revoked: {e:?}");
    // The abandoned connection was closed, not handed out again.
    conn.verify().await.expect("the pool still works");
}

#[tokio::test]
async fn a_slow_static_rotation_does_not_stall_other_writes_and_rotations_do_not_interleave() {
    let c = Cluster::shared();
    let (db, _) = configured(c, "eng_slow_admin", json!({})).await;
    c.sql("postgres", "CREATE ROLE eng_slow_user WITH LOGIN PASSWORD 'x'");
    call(
        &db,
        Operation::Update,
        "static-roles/slow",
        json!({
            "db_name": "pg", "username": "eng_slow_user", "rotation_period": "1h",
            "rotation_statements": [
                "ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}'; SELECT pg_sleep(2)"
            ],
        }),
    )
    .await
    .expect("static role");
    let rotate = || {
        let db = db.clone();
        tokio::spawn(
            async move { call(&db, Operation::Update, "rotate-role/slow", json!({})).await },
        )
    };
    let (a, b) = (rotate(), rotate());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    call(
        &db,
        Operation::Update,
        "roles/other",
        json!({"db_name": "pg", "creation_statements": "SELECT 1"}),
    )
    .await
    .expect("role write");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a role write waited {:?} for a rotation",
        started.elapsed()
    );
    a.await.expect("join").expect("first rotation");
    b.await.expect("join").expect("second rotation");
    let r = call(&db, Operation::Read, "static-creds/slow", json!({})).await.expect("creds");
    let pw = r.data.expect("data")["password"].as_str().expect("pw").to_owned();
    assert!(logs_in(c, "eng_slow_user", &pw, "postgres"), "the stored password logs in");
}

#[tokio::test]
async fn a_revocation_that_cannot_drop_the_user_still_leaves_no_login() {
    let c = Cluster::shared();
    c.create_database("eng_nologin");
    c.create_database("eng_nologin_other");
    let pw = admin(c, "eng_nologin_admin");
    let db = engine().await;
    call(
        &db,
        Operation::Update,
        "config/pg",
        json!({
            "plugin_name": PLUGIN,
            "connection_url": templated(c, "eng_nologin", "?sslmode=disable"),
            "username": "eng_nologin_admin", "password": pw, "allowed_roles": "*",
        }),
    )
    .await
    .expect("config");
    call(
        &db,
        Operation::Update,
        "roles/app",
        json!({
            "db_name": "pg",
            "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}'",
        }),
    )
    .await
    .expect("role");
    let r = call(&db, Operation::Read, "creds/app", json!({})).await.expect("creds");
    let data = r.data.expect("data");
    let user = data["username"].as_str().expect("u").to_owned();
    let upw = data["password"].as_str().expect("p").to_owned();
    let secret = r.secret.expect("lease");
    // Something it owns in a database the config does not reach: DROP ROLE must fail.
    c.sql(
        "eng_nologin_other",
        &format!("CREATE TABLE stuck (x int); ALTER TABLE stuck OWNER TO \"{user}\""),
    );
    assert!(logs_in(c, &user, &upw, "eng_nologin"));
    let m = mount();
    let lease = LeaseRequest {
        lease_id: "database/creds/app/z",
        path: "creds/app",
        mount: &m,
        internal: &secret.internal,
        issue_time: 0,
        expire_time: 0,
    };
    let e = db.revoke_creds(&lease).await.expect_err("the role cannot be dropped yet");
    assert!(e.to_string().contains("revocation failed"), "{e}");
    assert!(!logs_in(c, &user, &upw, "eng_nologin"), "a failed revocation left a login");
    // Once the obstacle is gone, the retried revocation finishes.
    c.sql("eng_nologin_other", "DROP TABLE stuck");
    db.revoke_creds(&lease).await.expect("retry");
    assert_eq!(
        c.sql("eng_nologin", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")),
        "0"
    );
}

#[tokio::test]
async fn a_config_that_roles_still_name_cannot_be_deleted() {
    let c = Cluster::shared();
    let (db, _) = configured(c, "eng_inuse_admin", json!({})).await;
    call(
        &db,
        Operation::Update,
        "roles/ro",
        json!({"db_name": "pg", "creation_statements": "SELECT 1"}),
    )
    .await
    .expect("role");
    let e = call(&db, Operation::Delete, "config/pg", json!({})).await.expect_err("in use");
    assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
    assert!(e.to_string().contains("role \"ro\""), "{e}");
    assert!(db.config("pg").await.expect("read").is_some());
    call(&db, Operation::Delete, "roles/ro", json!({})).await.expect("delete role");
    call(&db, Operation::Delete, "config/pg", json!({})).await.expect("delete config");
    assert!(db.config("pg").await.expect("read").is_none());
}

#[tokio::test]
async fn a_display_name_holding_template_syntax_creates_the_user_the_lease_names() {
    let c = Cluster::shared();
    let (db, _) = configured(
        c,
        "eng_tmpl_admin",
        json!({"username_template": "v-{{.DisplayName}}-{{random 8}}"}),
    )
    .await;
    call(
        &db,
        Operation::Update,
        "roles/app",
        json!({
            "db_name": "pg",
            "creation_statements":
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'",
        }),
    )
    .await
    .expect("role");
    let caller = coffer_core::token::TokenEntry {
        id: "id".into(),
        accessor: "acc".into(),
        parent: None,
        policies: vec![],
        path: "auth/token/create".into(),
        meta: Default::default(),
        display_name: "{{password}}$;x".into(),
        num_uses: 0,
        creation_time: 0,
        creation_ttl: 0,
        expire_time: 0,
        explicit_max_ttl: 0,
        period: 0,
        renewable: false,
        orphan: false,
        entity_id: String::new(),
        last_renewal_time: 0,
        spent: false,
        bound_cidrs: vec![],
        max_ttl: 0,
        revoking: false,
        leak_key: String::new(),
        order: None,
    };
    let data = Map::new();
    let m = mount();
    let req = BackendRequest {
        id: "t",
        operation: Operation::Read,
        path: "creds/app",
        data: &data,
        caller: Some(&caller),
        mount: &m,
        remote_addr: None,
        sudo: false,
        client_token: None,
        client_cert_chain: &[],
    };
    let r = db.handle(&req).await.expect("creds");
    let user = r.secret.expect("lease").internal["username"].as_str().expect("u").to_owned();
    assert_eq!(
        c.sql("postgres", &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")),
        "1",
        "the user the lease names is the one created"
    );
    assert!(user.starts_with("v-__password____x-"), "{user}");
}

#[tokio::test]
async fn a_static_role_creation_interrupted_mid_change_is_finished_by_the_rotation_pass() {
    let c = Cluster::shared();
    let (db, _) = configured(c, "eng_crash_admin", json!({})).await;
    c.sql("postgres", "CREATE ROLE eng_crash_user WITH LOGIN PASSWORD 'old-Pw-1'");
    let create = tokio::spawn({
        let db = db.clone();
        async move {
            call(
                &db,
                Operation::Update,
                "static-roles/crash",
                json!({
                    "db_name": "pg", "username": "eng_crash_user", "rotation_period": "1h",
                    "rotation_statements": [
                        "SELECT pg_sleep(1); ALTER ROLE \"{{username}}\" WITH PASSWORD '{{password}}'"
                    ],
                }),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Before PostgreSQL is changed, the role is already stored with its password pending.
    let r = db.static_role("crash").await.expect("read").expect("stored before the change");
    assert!(r.pending_password.is_some());
    // The process "dies" here, mid-transaction.
    create.abort();
    let _ = create.await;
    assert!(logs_in(c, "eng_crash_user", "old-Pw-1", "postgres"), "nothing changed yet");
    db.rotate_due().await.expect("rotation pass");
    let r = call(&db, Operation::Read, "static-creds/crash", json!({})).await.expect("creds");
    let pw = r.data.expect("data")["password"].as_str().expect("pw").to_owned();
    assert!(logs_in(c, "eng_crash_user", &pw, "postgres"), "the stored password logs in");
    assert!(!logs_in(c, "eng_crash_user", "old-Pw-1", "postgres"));
}

#[tokio::test]
async fn a_deleted_static_roles_index_entry_goes_in_the_same_write() {
    let c = Cluster::shared();
    let pw = admin(c, "eng_leak_admin");
    c.sql("postgres", "CREATE ROLE eng_leak_user WITH LOGIN PASSWORD 'x'");
    let barrier = Barrier::new(Arc::new(coffer_storage::MemoryBackend::new()));
    barrier.initialize(&SealConfig::shamir(1, 1).expect("seal config")).await.expect("init");
    let barrier = Arc::new(barrier);
    let leaks = coffer_core::leaks::LeakIndex::new(barrier.clone(), "u");
    let db = Database::new(
        View::new(barrier, "logical/db/"),
        PasswordSource::DefaultOnly,
        Some(leaks.clone()),
    );
    let body = json!({
        "plugin_name": PLUGIN,
        "connection_url": templated(c, "postgres", "?sslmode=disable"),
        "username": "eng_leak_admin", "password": pw, "allowed_roles": "*",
    });
    call(&db, Operation::Update, "config/pg", body).await.expect("config");
    let entries = || async { leaks.view().list_recursive("index/").await.expect("list").len() };
    let role = json!({"db_name": "pg", "username": "eng_leak_user", "rotation_period": "1h"});
    call(&db, Operation::Update, "static-roles/app", role).await.expect("static role");
    assert_eq!(entries().await, 1, "the static password is indexed");
    call(&db, Operation::Update, "rotate-role/app", json!({})).await.expect("rotate");
    assert_eq!(entries().await, 1, "the old password's entry left with the rotation");
    call(&db, Operation::Delete, "static-roles/app", json!({})).await.expect("delete");
    assert_eq!(entries().await, 0, "the deleted role's entry is gone");
}

/// `password_authentication = "scram-sha-256"`: PostgreSQL receives verifiers, never passwords.
/// The connection user's sessions hash what they are given with MD5 here, so a password sent
/// in clear would be stored as an MD5 hash; a verifier is stored as it came.
#[tokio::test]
async fn with_scram_sha_256_postgresql_stores_coffers_verifier_and_the_password_logs_in() {
    let c = Cluster::shared();
    let pw = admin(c, "eng_scram_admin");
    c.sql("postgres", "ALTER ROLE eng_scram_admin SET password_encryption = 'md5'");
    let db = engine().await;
    let config = |auth: &str| {
        json!({
            "plugin_name": PLUGIN,
            "connection_url": templated(c, "postgres", "?sslmode=disable"),
            "username": "eng_scram_admin", "password": pw, "allowed_roles": "*",
            "password_authentication": auth,
        })
    };
    let e = call(&db, Operation::Update, "config/pg", config("scram")).await.expect_err("bad");
    assert!(e.to_string().contains("must be \"password\" or \"scram-sha-256\""), "{e}");
    call(&db, Operation::Update, "config/pg", config("scram-sha-256")).await.expect("config");
    let read = call(&db, Operation::Read, "config/pg", json!({})).await.expect("read");
    let data = read.data.expect("data");
    assert_eq!(data["connection_details"]["password_authentication"], json!("scram-sha-256"));
    call(
        &db,
        Operation::Update,
        "roles/app",
        json!({
            "db_name": "pg",
            "creation_statements": "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            "default_ttl": "1h",
        }),
    )
    .await
    .expect("role");
    let stored = |user: &str| {
        c.sql("postgres", &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"))
    };
    let creds = call(&db, Operation::Read, "creds/app", json!({})).await.expect("creds");
    let data = creds.data.expect("data");
    let (user, upw) =
        (data["username"].as_str().expect("user"), data["password"].as_str().expect("pw"));
    assert!(stored(user).starts_with("SCRAM-SHA-256$4096:"), "{}", stored(user));
    assert!(logs_in(c, user, upw, "postgres"), "the generated password logs in");
    assert!(!logs_in(c, user, "not-the-password", "postgres"));

    // The root password too: rotated to a verifier, and the engine logs in with the password.
    call(&db, Operation::Update, "rotate-root/pg", json!({})).await.expect("rotate root");
    assert!(stored("eng_scram_admin").starts_with("SCRAM-SHA-256$4096:"));
    let again = call(&db, Operation::Read, "creds/app", json!({})).await.expect("creds after");
    let data = again.data.expect("data");
    let user = data["username"].as_str().expect("user");
    assert!(stored(user).starts_with("SCRAM-SHA-256$4096:"));

    // A static role: created (its first password set) and rotated with verifiers.
    c.sql("postgres", "CREATE ROLE eng_scram_static WITH LOGIN PASSWORD 'x'");
    call(
        &db,
        Operation::Update,
        "static-roles/st",
        json!({"db_name": "pg", "username": "eng_scram_static", "rotation_period": "1h"}),
    )
    .await
    .expect("static role");
    call(&db, Operation::Update, "rotate-role/st", json!({})).await.expect("rotate role");
    assert!(stored("eng_scram_static").starts_with("SCRAM-SHA-256$4096:"));
    let r = call(&db, Operation::Read, "static-creds/st", json!({})).await.expect("static creds");
    let spw = r.data.expect("data")["password"].as_str().expect("pw").to_owned();
    assert!(logs_in(c, "eng_scram_static", &spw, "postgres"), "the rotated password logs in");

    // Back to the default: PostgreSQL gets the password, and hashes it as its session says.
    call(
        &db,
        Operation::Update,
        "config/pg",
        json!({"password_authentication": "password", "plugin_name": PLUGIN}),
    )
    .await
    .expect("back to password");
    let plain = call(&db, Operation::Read, "creds/app", json!({})).await.expect("creds plain");
    let data = plain.data.expect("data");
    let user = data["username"].as_str().expect("user");
    assert!(stored(user).starts_with("md5"), "{}", stored(user));
}
