//! `sys/remount` (`coffer secrets move`, `coffer auth move`) end to end: a moved mount keeps its
//! data, its leases are renamed so renew and revoke work under the new path, an auth method's
//! tokens keep working and are found under the new path; the refusals Vault makes.

use coffer_pgtest::Cluster;
use serde_json::{Value, json};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, ok, tempdir};
use crate::database_leases::setup;

fn vaultrs(s: &Server, token: &str) -> VaultClient {
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&s.addr).token(token);
    VaultClient::new(b.build().expect("settings")).expect("client")
}

#[tokio::test]
async fn a_moved_secrets_engine_keeps_its_data_and_the_refusals_are_vaults() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, _) =
        s.call("POST", "sys/mounts/old", Some(&root), Some(json!({"type": "kv"}))).await;
    assert_eq!(code, 204);
    s.call("PUT", "old/app", Some(&root), Some(json!({"password": "kept"}))).await;
    s.call("POST", "sys/mounts/other", Some(&root), Some(json!({"type": "kv"}))).await;

    let remount = |body: Value| s.call("POST", "sys/remount", Some(&root), Some(body));
    for (body, msg) in [
        (json!({"from": "old"}), "both 'from' and 'to' path must be specified as a string"),
        (json!({"from": "old ", "to": "x"}), "'from' path cannot contain trailing whitespace"),
        (json!({"from": "nothing", "to": "x"}), "no matching mount at \"nothing/\""),
        (json!({"from": "old", "to": "other"}), "path already in use at \"other/\""),
        (json!({"from": "old", "to": "sys/x"}), "cannot remount to destination sys/x/"),
        (json!({"from": "cubbyhole", "to": "x"}), "cannot remount \"cubbyhole/\""),
        (json!({"from": "auth/token", "to": "auth/t2"}), "cannot remount \"auth/token/\""),
        (json!({"from": "old", "to": "auth/old"}), "cannot remount to destination auth/old/"),
    ] {
        let (code, b) = remount(body.clone()).await;
        assert_eq!((code, b["errors"][0].as_str()), (400, Some(msg)), "{body}");
    }
    // sudo, as in Vault.
    let (_, t) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["default"]})))
        .await;
    let user = t["auth"]["client_token"].as_str().expect("token");
    assert_eq!(
        s.call("POST", "sys/remount", Some(user), Some(json!({"from": "old", "to": "x"}))).await.0,
        403
    );

    // Through a third-party client: the migration id, and its status.
    let client = vaultrs(&s, &root);
    let moved = vaultrs::sys::remount::remount(&client, "old", "new").await.expect("remount");
    let status =
        vaultrs::sys::remount::remount_status(&client, &moved.migration_id).await.expect("status");
    assert_eq!(status.migration_info.status, "success");
    assert_eq!(
        (status.migration_info.source_mount.as_str(), status.migration_info.target_mount.as_str()),
        ("old/", "new/")
    );
    let (code, b) = s.call("GET", "new/app", Some(&root), None).await;
    assert_eq!((code, b["data"]["password"].as_str()), (200, Some("kept")), "{b}");
    assert_eq!(s.call("GET", "old/app", Some(&root), None).await.0, 404);
    let (_, mounts) = s.call("GET", "sys/mounts", Some(&root), None).await;
    assert!(mounts["data"]["new/"].is_object() && mounts["data"]["old/"].is_null());
    assert_eq!(s.call("GET", "sys/remount/status/nope", Some(&root), None).await.0, 404);

    // The CLI, as vault's `secrets move`.
    let out = ok(s.cli(Some(&root), &["secrets", "move", "new", "newer"]));
    assert!(out.contains("Success! Finished moving secrets engine new/ to newer/"), "{out}");
    let (code, _) = s.call("GET", "newer/app", Some(&root), None).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_moved_auth_method_keeps_its_roles_and_its_tokens_move_with_it() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/auth/approle", Some(&root), Some(json!({"type": "approle"}))).await;
    let (code, b) = s
        .call(
            "POST",
            "auth/approle/role/web",
            Some(&root),
            Some(json!({"token_ttl": "1h", "token_policies": ["default"]})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let login = |mount: &'static str| {
        let s = &s;
        let root = root.clone();
        async move {
            let (_, r) =
                s.call("GET", &format!("auth/{mount}/role/web/role-id"), Some(&root), None).await;
            let (_, sid) = s
                .call("POST", &format!("auth/{mount}/role/web/secret-id"), Some(&root), None)
                .await;
            let body =
                json!({"role_id": r["data"]["role_id"], "secret_id": sid["data"]["secret_id"]});
            s.call("POST", &format!("auth/{mount}/login"), None, Some(body)).await
        }
    };
    let (code, b) = login("approle").await;
    assert_eq!(code, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();

    let out = ok(s.cli(Some(&root), &["auth", "move", "approle", "auth/approle2"]));
    assert!(
        out.contains("Success! Finished moving auth method auth/approle/ to auth/approle2/"),
        "{out}"
    );
    // The token still works, and is found under the new path.
    let (code, me) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
    assert_eq!(code, 200, "{me}");
    assert_eq!(me["data"]["path"], "auth/approle2/login");
    let (code, l) =
        s.call("LIST", "sys/leases/lookup/auth/approle2/login/", Some(&root), None).await;
    assert_eq!((code, l["data"]["keys"].as_array().map(Vec::len)), (200, Some(1)), "{l}");
    assert_eq!(
        s.call("LIST", "sys/leases/lookup/auth/approle/login/", Some(&root), None).await.0,
        404
    );
    // The role moved with the method; logins happen at the new path only.
    let (code, b) = login("approle2").await;
    assert_eq!(code, 200, "{b}");
    assert_ne!(
        s.call("POST", "auth/approle/login", None, Some(json!({"role_id": "x"}))).await.0,
        200
    );
    // Revoking by the new prefix takes the tokens.
    assert_eq!(
        s.call("PUT", "sys/leases/revoke-prefix/auth/approle2/", Some(&root), None).await.0,
        204
    );
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&token), None).await.0, 403);
}

fn role_exists(c: &Cluster, db: &str, user: &str) -> bool {
    c.sql(db, &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")) == "1"
}

#[tokio::test]
async fn a_moved_database_engines_leases_renew_and_revoke_under_the_new_path() {
    let c = Cluster::shared();
    let dir = tempdir();
    let (s, _, root) = setup(dir.path(), c, "lz_remount", "1h", "24h").await;
    let (code, b) = s.call("GET", "database/creds/readonly", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let old_id = b["lease_id"].as_str().expect("lease").to_owned();
    let user = b["data"]["username"].as_str().expect("user").to_owned();

    let (code, b) = s
        .call("POST", "sys/remount", Some(&root), Some(json!({"from": "database", "to": "db2"})))
        .await;
    assert_eq!(code, 200, "{b}");
    let new_id = old_id.replacen("database/", "db2/", 1);
    let renew =
        |id: String| s.call("PUT", "sys/leases/renew", Some(&root), Some(json!({"lease_id": id})));
    assert_eq!(renew(old_id.clone()).await.0, 400, "the old lease id still renews");
    let (code, b) = renew(new_id.clone()).await;
    assert_eq!((code, b["lease_id"].as_str()), (200, Some(&*new_id)), "{b}");
    assert!(role_exists(c, "lz_remount", &user));
    let (code, b) =
        s.call("PUT", "sys/leases/revoke", Some(&root), Some(json!({"lease_id": new_id}))).await;
    assert_eq!(code, 204, "{b}");
    assert!(!role_exists(c, "lz_remount", &user), "revoking under the new name dropped nothing");
    let (code, b) = s.call("GET", "db2/creds/readonly", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert!(b["lease_id"].as_str().expect("lease").starts_with("db2/creds/readonly/"));
}

/// As OpenBao: a move takes the rate limit quotas on the mount with it (on the whole mount, or
/// on a path below it); a quota on another mount stays. Coffer stores the moved quotas with the
/// mount table, so they are still on the new path after a restart.
#[tokio::test]
async fn quotas_on_a_moved_mount_move_with_it_and_stay_moved_after_a_restart() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    for (path, body) in [
        ("sys/mounts/old", json!({"type": "kv"})),
        ("sys/mounts/older", json!({"type": "kv"})),
        ("sys/quotas/rate-limit/on-mount", json!({"path": "old/", "rate": 2, "interval": "1h"})),
        ("sys/quotas/rate-limit/below", json!({"path": "old/hot", "rate": 1, "interval": "1h"})),
        ("sys/quotas/rate-limit/beside", json!({"path": "older/", "rate": 1, "interval": "1h"})),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    let (code, b) =
        s.call("POST", "sys/remount", Some(&root), Some(json!({"from": "old", "to": "new"}))).await;
    assert_eq!(code, 200, "{b}");
    let path_of = async |s: &Server, name: &str| {
        let (_, b) =
            s.call("GET", &format!("sys/quotas/rate-limit/{name}"), Some(&root), None).await;
        b["data"]["path"].as_str().expect("path").to_owned()
    };
    for restarted in [false, true] {
        if restarted {
            s.restart();
            s.unseal(&keys).await;
        }
        assert_eq!(path_of(&s, "on-mount").await, "new/", "restarted: {restarted}");
        assert_eq!(path_of(&s, "below").await, "new/hot", "restarted: {restarted}");
        assert_eq!(path_of(&s, "beside").await, "older/", "restarted: {restarted}");
        // In force on the new path: the mount's budget of 2, and the path's own of 1.
        let codes = async |p: &str, n: usize| {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(s.call("GET", p, Some(&root), None).await.0);
            }
            out
        };
        assert_eq!(codes("new/x", 3).await, [404, 404, 429], "restarted: {restarted}");
        assert_eq!(codes("new/hot", 2).await, [404, 429], "restarted: {restarted}");
        // A new mount at the old path is not covered.
        if !restarted {
            let (code, _) =
                s.call("POST", "sys/mounts/old", Some(&root), Some(json!({"type": "kv"}))).await;
            assert_eq!(code, 204);
        }
        assert_eq!(codes("old/x", 3).await, [404, 404, 404], "restarted: {restarted}");
    }
}
