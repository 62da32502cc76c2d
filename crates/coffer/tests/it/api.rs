//! The HTTP API end to end: seal lifecycle, health, tokens, policies, mounts, kv and cubbyhole.

use serde_json::{Value, json};

use crate::common::{Server, tempdir};

#[tokio::test]
async fn init_unseal_and_seal_follow_vaults_lifecycle() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    assert_eq!(s.call("GET", "sys/init", None, None).await, (200, json!({"initialized": false})));
    let (code, h) = s.call("GET", "sys/health", None, None).await;
    assert_eq!(code, 501, "uninitialized: {h}");
    assert_eq!(s.call("GET", "sys/health?uninitcode=200", None, None).await.0, 200);

    let (keys, root) = s.init(5, 3).await;
    assert_eq!(keys.len(), 5);
    assert!(keys.iter().all(|k| k.len() == 66), "33-byte shares in hex");
    let (code, again) = s
        .call("PUT", "sys/init", None, Some(json!({"secret_shares": 1, "secret_threshold": 1})))
        .await;
    assert_eq!(code, 400, "{again}");

    assert_eq!(s.call("GET", "sys/health", None, None).await.0, 503);
    assert_eq!(s.call("GET", "sys/health?sealedcode=299", None, None).await.0, 299);
    let (code, b) = s.call("GET", "sys/mounts", Some(&root), None).await;
    assert_eq!(code, 503, "sealed server refuses: {b}");
    assert_eq!(b["errors"][0], "Vault is sealed");

    let (_, st) = s.call("PUT", "sys/unseal", None, Some(json!({"key": keys[0]}))).await;
    assert_eq!(
        (st["sealed"].clone(), st["progress"].clone(), st["t"].clone(), st["n"].clone()),
        (json!(true), json!(1), json!(3), json!(5))
    );
    let nonce = st["nonce"].as_str().expect("nonce").to_owned();
    assert!(!nonce.is_empty());
    let (_, st) = s.call("PUT", "sys/unseal", None, Some(json!({"key": keys[0]}))).await;
    assert_eq!(st["progress"], 1, "the same share twice counts once");
    let (_, st) = s.call("PUT", "sys/unseal", None, Some(json!({"reset": true}))).await;
    assert_eq!(st["progress"], 0, "reset discards progress");
    for k in &keys[2..4] {
        s.call("PUT", "sys/unseal", None, Some(json!({"key": k}))).await;
    }
    let (_, st) = s.call("PUT", "sys/unseal", None, Some(json!({"key": keys[1]}))).await;
    assert_eq!(st["sealed"], false, "{st}");
    let (code, h) = s.call("GET", "sys/health", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(
        (h["initialized"].clone(), h["sealed"].clone(), h["standby"].clone()),
        (json!(true), json!(false), json!(false))
    );
    assert_eq!(s.call("GET", "sys/health?activecode=204", None, None).await.0, 204);
    assert_eq!(s.call("GET", "sys/health?activecode=abc", None, None).await.0, 400);

    let head = s.http().head(format!("{}/v1/sys/health", s.addr)).send().await.expect("head");
    assert_eq!(head.status().as_u16(), 200, "HEAD sys/health answers with the status code");

    assert_eq!(s.call("PUT", "sys/seal", Some(&root), None).await.0, 204);
    let (_, st) = s.call("GET", "sys/seal-status", None, None).await;
    assert_eq!(st["sealed"], true);
    let head = s.http().head(format!("{}/v1/sys/health", s.addr)).send().await.expect("head");
    assert_eq!(head.status().as_u16(), 503);
}

#[tokio::test]
async fn sigterm_finishes_gracefully_and_exits_zero() {
    let dir = tempdir();
    let (mut s, _, root) = Server::ready(dir.path()).await;
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&root), None).await.0, 200);
    let started = std::time::Instant::now();
    let status = s.stop().expect("the server stops by itself on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn key_rotation_adds_a_term_and_keeps_old_data() {
    let dir = tempdir();
    let (s, keys, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/kv", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "kv/before", Some(&root), Some(json!({"v": "1"}))).await;
    let (_, ks) = s.call("GET", "sys/key-status", Some(&root), None).await;
    assert_eq!(ks["data"]["term"], 1);
    assert_eq!(s.call("PUT", "sys/rotate", Some(&root), None).await.0, 204);
    let (_, ks) = s.call("GET", "sys/key-status", Some(&root), None).await;
    assert_eq!(ks["data"]["term"], 2);
    s.call("POST", "kv/after", Some(&root), Some(json!({"v": "2"}))).await;
    s.call("PUT", "sys/seal", Some(&root), None).await;
    s.unseal(&keys).await;
    assert_eq!(s.call("GET", "kv/before", Some(&root), None).await.1["data"]["v"], "1");
    assert_eq!(s.call("GET", "kv/after", Some(&root), None).await.1["data"]["v"], "2");
    assert_eq!(s.call("GET", "sys/key-status", Some(&root), None).await.1["data"]["term"], 2);
}

async fn token(s: &Server, parent: &str, body: Value) -> (String, String) {
    let (code, b) = s.call("POST", "auth/token/create", Some(parent), Some(body)).await;
    assert_eq!(code, 200, "token create: {b}");
    (
        b["auth"]["client_token"].as_str().expect("token").to_owned(),
        b["auth"]["accessor"].as_str().expect("accessor").to_owned(),
    )
}

#[tokio::test]
async fn tokens_are_created_looked_up_renewed_and_revoked_with_their_children() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, b) = s.call("POST", "auth/token/create", Some(&root), Some(json!({
        "policies": ["default"], "ttl": "1h", "explicit_max_ttl": "2h", "meta": {"team": "payments"}, "display_name": "ci"
    }))).await;
    assert_eq!(code, 200, "{b}");
    let parent = b["auth"]["client_token"].as_str().expect("token").to_owned();
    assert!(parent.starts_with("cfs_"));
    assert_eq!(b["auth"]["lease_duration"], 3600);
    assert_eq!(b["auth"]["renewable"], true);
    assert_eq!(b["auth"]["metadata"]["team"], "payments");
    assert_eq!(b["data"], Value::Null);

    let (_, me) = s.call("GET", "auth/token/lookup-self", Some(&parent), None).await;
    assert_eq!(me["data"]["id"], parent);
    assert_eq!(me["data"]["display_name"], "token-ci");
    assert_eq!(me["data"]["policies"], json!(["default"]));
    assert_eq!(me["data"]["explicit_max_ttl"], 7200);
    let (_, by_acc) = s
        .call(
            "POST",
            "auth/token/lookup-accessor",
            Some(&root),
            Some(json!({"accessor": b["auth"]["accessor"]})),
        )
        .await;
    assert_eq!(by_acc["data"]["id"], "", "lookup by accessor never reveals the token");
    assert_eq!(by_acc["data"]["meta"]["team"], "payments");

    // default policy allows renew-self; renewal is capped by explicit_max_ttl.
    let (code, r) = s
        .call("POST", "auth/token/renew-self", Some(&parent), Some(json!({"increment": "10h"})))
        .await;
    assert_eq!(code, 200, "{r}");
    let d = r["auth"]["lease_duration"].as_u64().expect("ttl");
    assert!(d <= 7200 && d > 7000, "capped at explicit_max_ttl: {d}");

    // A child of a non-root token may not hold policies its parent lacks.
    s.call(
        "PUT",
        "sys/policies/acl/other",
        Some(&root),
        Some(json!({"policy": "path \"x/*\" {\n capabilities = [\"read\"]\n}"})),
    )
    .await;
    s.call(
        "PUT",
        "sys/policies/acl/tokens",
        Some(&root),
        Some(json!({"policy": "path \"auth/token/create\" {\n capabilities = [\"update\"]\n}"})),
    )
    .await;
    let (creator, _) = token(&s, &root, json!({"policies": ["tokens"]})).await;
    let (code, e) = s
        .call("POST", "auth/token/create", Some(&creator), Some(json!({"policies": ["other"]})))
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(e["errors"][0].as_str().expect("msg").contains("subset"), "{e}");
    let (code, e) =
        s.call("POST", "auth/token/create", Some(&creator), Some(json!({"no_parent": true}))).await;
    assert_eq!(code, 400, "orphans need sudo: {e}");

    // Revoking a parent revokes its children and grandchildren; revoke-orphan spares them.
    let (child, _) = token(&s, &creator, json!({})).await;
    let (grandchild, _) = token(&s, &root, json!({})).await;
    let _ = grandchild;
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&child), None).await.0, 200);
    assert_eq!(
        s.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": creator}))).await.0,
        204
    );
    assert_eq!(
        s.call("GET", "auth/token/lookup-self", Some(&child), None).await.0,
        403,
        "child dies with parent"
    );

    let (p2, _) = token(&s, &root, json!({"policies": ["default", "tokens"]})).await;
    let (c2, _) = token(&s, &p2, json!({"policies": ["default"]})).await;
    assert_eq!(
        s.call("POST", "auth/token/revoke-orphan", Some(&root), Some(json!({"token": p2}))).await.0,
        204
    );
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&p2), None).await.0, 403);
    let (code, orphan) = s.call("GET", "auth/token/lookup-self", Some(&c2), None).await;
    assert_eq!(code, 200, "child survives revoke-orphan");
    assert_eq!(orphan["data"]["orphan"], true);

    // revoke-accessor and revoke-self.
    let (t3, a3) = token(&s, &root, json!({})).await;
    assert_eq!(
        s.call("POST", "auth/token/revoke-accessor", Some(&root), Some(json!({"accessor": a3})))
            .await
            .0,
        204
    );
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&t3), None).await.0, 403);
    let (t4, _) = token(&s, &root, json!({})).await;
    assert_eq!(s.call("POST", "auth/token/revoke-self", Some(&t4), None).await.0, 204);
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&t4), None).await.0, 403);

    // The accessor list needs sudo: root has it.
    let (code, l) = s.call("LIST", "auth/token/accessors", Some(&root), None).await;
    assert_eq!(code, 200, "{l}");
    assert!(l["data"]["keys"].as_array().expect("keys").len() >= 2);
}

#[tokio::test]
async fn limited_use_and_expiring_tokens_stop_working() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (two_uses, _) = token(&s, &root, json!({"num_uses": 2})).await;
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&two_uses), None).await.0, 200);
    let (code, last) = s.call("GET", "auth/token/lookup-self", Some(&two_uses), None).await;
    assert_eq!(code, 200, "{last}");
    assert_eq!(
        s.call("GET", "auth/token/lookup-self", Some(&two_uses), None).await.0,
        403,
        "third use refused"
    );

    // Long enough to mint a child even on a loaded machine, short enough to wait out.
    let (short, _) = token(&s, &root, json!({"ttl": "4s"})).await;
    let (child, _) = token(&s, &root, json!({"ttl": "1h"})).await;
    let (_, grandchild) = (child.clone(), token(&s, &short, json!({"ttl": "1h"})).await.0);
    let (_, gl) = s.call("GET", "auth/token/lookup-self", Some(&grandchild), None).await;
    assert!(
        gl["data"]["ttl"].as_u64().expect("ttl") <= 4,
        "a child never outlives its parent: {gl}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&short), None).await.0, 403, "expired");
    assert_eq!(
        s.call("GET", "auth/token/lookup-self", Some(&grandchild), None).await.0,
        403,
        "expired with its parent"
    );
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&child), None).await.0, 200);
}

#[tokio::test]
async fn policies_grant_exactly_what_they_say() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    for (p, v) in [
        ("secret/app/db", "db-pass"),
        ("secret/app/admin", "admin-pass"),
        ("secret/other/x", "other"),
    ] {
        s.call("POST", p, Some(&root), Some(json!({"value": v}))).await;
    }
    let policy = r#"
path "secret/app/*" {
  capabilities = ["read", "list"]
}
path "secret/app/admin" {
  capabilities = ["deny"]
}
path "secret/drop/*" {
  capabilities = ["create"]
}
path "secret/other" {
  capabilities = ["list"]
}
"#;
    let (code, b) =
        s.call("PUT", "sys/policies/acl/app", Some(&root), Some(json!({"policy": policy}))).await;
    assert_eq!(code, 204, "{b}");
    let (_, read_back) = s.call("GET", "sys/policies/acl/app", Some(&root), None).await;
    assert_eq!(read_back["data"]["policy"], policy);
    let (_, legacy) = s.call("GET", "sys/policy/app", Some(&root), None).await;
    assert_eq!(legacy["data"]["rules"], policy);
    let (_, list) = s.call("LIST", "sys/policies/acl", Some(&root), None).await;
    assert_eq!(list["data"]["keys"], json!(["app", "default", "root"]));

    let (app, _) = token(&s, &root, json!({"policies": ["app"]})).await;
    assert_eq!(
        s.call("GET", "secret/app/db", Some(&app), None).await.1["data"]["value"],
        "db-pass"
    );
    assert_eq!(
        s.call("LIST", "secret/app", Some(&app), None).await.1["data"]["keys"],
        json!(["admin", "db"])
    );
    assert_eq!(s.call("GET", "secret/app/admin", Some(&app), None).await.0, 403, "deny wins");
    assert_eq!(s.call("GET", "secret/other/x", Some(&app), None).await.0, 403, "nothing granted");
    assert_eq!(
        s.call("LIST", "secret/other", Some(&app), None).await.1["data"]["keys"],
        json!(["x"]),
        "a list rule on the folder's own path grants its listing, as in Vault"
    );
    assert_eq!(
        s.call("POST", "secret/app/db", Some(&app), Some(json!({"value": "x"}))).await.0,
        403,
        "read-only"
    );

    // create without read: a write-only drop box.
    assert_eq!(
        s.call("POST", "secret/drop/report", Some(&app), Some(json!({"value": "written"}))).await.0,
        204
    );
    assert_eq!(
        s.call("GET", "secret/drop/report", Some(&app), None).await.0,
        403,
        "cannot read back"
    );
    assert_eq!(
        s.call("POST", "secret/drop/report", Some(&app), Some(json!({"value": "again"}))).await.0,
        403,
        "no update"
    );
    assert_eq!(
        s.call("GET", "secret/drop/report", Some(&root), None).await.1["data"]["value"],
        "written"
    );

    let (_, caps) = s
        .call(
            "POST",
            "sys/capabilities-self",
            Some(&app),
            Some(json!({"paths": ["secret/app/db", "secret/app/admin", "secret/nope"]})),
        )
        .await;
    assert_eq!(caps["data"]["secret/app/db"], json!(["list", "read"]), "sorted by name, as Vault");
    assert_eq!(caps["data"]["secret/app/admin"], json!(["deny"]));
    assert_eq!(caps["data"]["secret/nope"], json!(["deny"]));
    let (_, caps) = s
        .call(
            "POST",
            "sys/capabilities",
            Some(&root),
            Some(json!({"token": app, "path": "secret/drop/x"})),
        )
        .await;
    assert_eq!(caps["data"]["capabilities"], json!(["create"]));
    let (_, caps) = s
        .call("POST", "sys/capabilities-self", Some(&root), Some(json!({"path": "anything"})))
        .await;
    assert_eq!(caps["data"]["capabilities"], json!(["root"]));

    // Policy changes apply to live tokens at once.
    s.call("DELETE", "sys/policies/acl/app", Some(&root), None).await;
    assert_eq!(s.call("GET", "secret/app/db", Some(&app), None).await.0, 403);
    assert_eq!(
        s.call("DELETE", "sys/policies/acl/default", Some(&root), None).await.0,
        400,
        "default cannot be deleted"
    );
    assert_eq!(
        s.call("PUT", "sys/policies/acl/root", Some(&root), Some(json!({"policy": ""}))).await.0,
        400,
        "root cannot be changed"
    );
}

#[tokio::test]
async fn mounts_are_enabled_listed_tuned_and_disabled_with_their_data() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, b) = s.call("POST", "sys/mounts/team/kv", Some(&root), Some(json!({
        "type": "kv", "description": "team secrets", "config": {"default_lease_ttl": "1h", "max_lease_ttl": "2h"}
    }))).await;
    assert_eq!(code, 204, "{b}");
    let (_, m) = s.call("GET", "sys/mounts", Some(&root), None).await;
    let e = &m["data"]["team/kv/"];
    assert_eq!((e["type"].clone(), e["description"].clone()), (json!("kv"), json!("team secrets")));
    assert_eq!(e["config"]["default_lease_ttl"], 3600);
    assert!(m["data"]["cubbyhole/"].is_object() && m["data"]["sys/"].is_object());

    assert_eq!(
        s.call("POST", "sys/mounts/team", Some(&root), Some(json!({"type": "kv"}))).await.0,
        400,
        "overlapping mount"
    );
    assert_eq!(
        s.call("POST", "sys/mounts/sys/x", Some(&root), Some(json!({"type": "kv"}))).await.0,
        400,
        "reserved"
    );
    let (code, b) = s
        .call("POST", "sys/mounts/nope", Some(&root), Some(json!({"type": "no-such-engine"})))
        .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("msg").contains("no-such-engine"));

    s.call("POST", "team/kv/a", Some(&root), Some(json!({"k": "v"}))).await;
    assert_eq!(s.call("GET", "team/kv/a", Some(&root), None).await.1["lease_duration"], 3600);
    assert_eq!(
        s.call(
            "POST",
            "sys/mounts/team/kv/tune",
            Some(&root),
            Some(json!({"default_lease_ttl": "30m", "description": "tuned"}))
        )
        .await
        .0,
        204
    );
    let (_, t) = s.call("GET", "sys/mounts/team/kv/tune", Some(&root), None).await;
    assert_eq!(
        (
            t["data"]["default_lease_ttl"].clone(),
            t["data"]["max_lease_ttl"].clone(),
            t["data"]["description"].clone()
        ),
        (json!(1800), json!(7200), json!("tuned"))
    );
    assert_eq!(s.call("GET", "team/kv/a", Some(&root), None).await.1["lease_duration"], 1800);
    assert_eq!(
        s.call(
            "POST",
            "sys/mounts/team/kv/tune",
            Some(&root),
            Some(json!({"default_lease_ttl": "3h"}))
        )
        .await
        .0,
        400,
        "default above max"
    );

    assert_eq!(s.call("DELETE", "sys/mounts/team/kv", Some(&root), None).await.0, 204);
    assert_eq!(s.call("GET", "team/kv/a", Some(&root), None).await.0, 404, "route gone");
    s.call("POST", "sys/mounts/team/kv", Some(&root), Some(json!({"type": "kv"}))).await;
    assert_eq!(
        s.call("GET", "team/kv/a", Some(&root), None).await.0,
        404,
        "data went with the old mount"
    );
    assert_eq!(s.call("DELETE", "sys/mounts/cubbyhole", Some(&root), None).await.0, 400);

    let (_, a) = s.call("GET", "sys/auth", Some(&root), None).await;
    assert_eq!(a["data"]["token/"]["type"], "token");
    assert_eq!(
        s.call("DELETE", "sys/auth/token", Some(&root), None).await.0,
        400,
        "token auth cannot be disabled"
    );
}

#[tokio::test]
async fn kv_v1_and_cubbyhole_store_what_they_are_given() {
    let dir = tempdir();
    let (s, _, root) = Server::ready_sqlite(dir.path()).await;
    s.call(
        "POST",
        "sys/mounts/secret",
        Some(&root),
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    let doc = json!({"user": "app", "n": 3, "nested": {"a": [1, 2]}});
    assert_eq!(s.call("PUT", "secret/app/config", Some(&root), Some(doc.clone())).await.0, 204);
    let (code, b) = s.call("GET", "secret/app/config", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(b["data"], doc);
    assert_eq!(b["lease_duration"], 2_764_800, "kv v1 reports the mount TTL as refresh interval");
    s.call("PUT", "secret/app/other", Some(&root), Some(json!({"x": "y"}))).await;
    s.call("PUT", "secret/top", Some(&root), Some(json!({"x": "y"}))).await;
    assert_eq!(
        s.call("GET", "secret/?list=true", Some(&root), None).await.1["data"]["keys"],
        json!(["app/", "top"])
    );
    assert_eq!(
        s.call("LIST", "secret/app", Some(&root), None).await.1["data"]["keys"],
        json!(["config", "other"])
    );
    let (code, b) = s.call("GET", "secret/missing", Some(&root), None).await;
    assert_eq!((code, b), (404, json!({"errors": []})));
    assert_eq!(s.call("LIST", "secret/none", Some(&root), None).await.0, 404);
    assert_eq!(s.call("DELETE", "secret/app/config", Some(&root), None).await.0, 204);
    assert_eq!(s.call("GET", "secret/app/config", Some(&root), None).await.0, 404);
    assert_eq!(
        s.call("PATCH", "secret/app/other", Some(&root), Some(json!({"x": "z"}))).await.0,
        405
    );
    let (code, e) = s
        .call(
            "POST",
            "sys/mounts/v3",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "3"}})),
        )
        .await;
    assert_eq!(code, 400, "{e}");
    assert!(e["errors"][0].as_str().expect("msg").contains("1 or 2"));
    // Version 1 to 2 upgrades the data in place (mount_tune.rs); back to 1 is refused.
    let (code, e) = s
        .call(
            "POST",
            "sys/mounts/secret/tune",
            Some(&root),
            Some(json!({"options": {"version": "2"}})),
        )
        .await;
    assert_eq!(code, 200, "{e}");
    assert_eq!(
        s.call("GET", "secret/data/app/other", Some(&root), None).await.1["data"]["data"]["x"],
        "y"
    );
    assert_eq!(
        s.call(
            "POST",
            "sys/mounts/secret/tune",
            Some(&root),
            Some(json!({"options": {"version": "1"}}))
        )
        .await
        .0,
        400
    );

    let (a, _) = token(&s, &root, json!({})).await;
    let (b_tok, _) = token(&s, &root, json!({})).await;
    assert_eq!(
        s.call("POST", "cubbyhole/note", Some(&a), Some(json!({"msg": "for a only"}))).await.0,
        204
    );
    assert_eq!(
        s.call("GET", "cubbyhole/note", Some(&a), None).await.1["data"]["msg"],
        "for a only"
    );
    assert_eq!(
        s.call("GET", "cubbyhole/note", Some(&b_tok), None).await.0,
        404,
        "b has its own cubbyhole"
    );
    assert_eq!(
        s.call("GET", "cubbyhole/note", Some(&root), None).await.0,
        404,
        "not even root sees it"
    );
    assert_eq!(s.call("GET", "cubbyhole/note", Some(&a), None).await.1["lease_duration"], 0);
    let (_, m) = s.call("GET", "sys/mounts", Some(&root), None).await;
    let prefix = format!("logical/{}/", m["data"]["cubbyhole/"]["uuid"].as_str().expect("uuid"));
    let rows = || -> i64 {
        let db = rusqlite::Connection::open(dir.path().join("coffer.db")).expect("open db");
        db.query_row(
            "SELECT count(*) FROM coffer_kv WHERE substr(key, 1, length(?1)) = ?1",
            [&prefix],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert_eq!(rows(), 1, "a's cubbyhole entry is stored");
    s.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": a}))).await;
    assert_eq!(rows(), 0, "the cubbyhole is destroyed with its token");
}

#[tokio::test]
async fn a_tokens_last_use_is_taken_once_even_under_concurrency() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    for _ in 0..15 {
        let (once, _) = token(&s, &root, json!({"num_uses": 1})).await;
        let calls = (0..4).map(|_| s.call("GET", "auth/token/lookup-self", Some(&once), None));
        let codes: Vec<u16> = futures_join(calls).await;
        assert_eq!(codes.iter().filter(|c| **c == 200).count(), 1, "exactly one use: {codes:?}");
        assert!(codes.iter().all(|c| *c == 200 || *c == 403), "{codes:?}");
    }
}

/// Runs the calls concurrently and returns their status codes in order.
async fn futures_join<F>(calls: impl Iterator<Item = F>) -> Vec<u16>
where
    F: std::future::Future<Output = (u16, Value)>,
{
    let mut set = Vec::new();
    for c in calls {
        set.push(c);
    }
    let mut out = Vec::new();
    let results = join_all(set).await;
    for (code, _) in results {
        out.push(code);
    }
    out
}

async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().flatten().collect()
}

#[tokio::test]
async fn use_limited_tokens_cannot_mint_children() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    s.call(
        "PUT",
        "sys/policies/acl/tokens",
        Some(&root),
        Some(json!({"policy": "path \"auth/token/create\" {\n capabilities = [\"update\"]\n}"})),
    )
    .await;
    let (limited, _) = token(&s, &root, json!({"num_uses": 3, "policies": ["tokens"]})).await;
    let (code, b) = s.call("POST", "auth/token/create", Some(&limited), Some(json!({}))).await;
    assert_eq!(code, 400, "{b}");
    assert_eq!(b["errors"][0], "restricted use token cannot generate child tokens");
}

#[tokio::test]
async fn unknown_paths_need_a_valid_token_before_they_say_404() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    assert_eq!(s.call("GET", "nothing-here/x", None, None).await.0, 403, "no token: no hint");
    assert_eq!(s.call("GET", "nothing-here/x", Some("cfs.bogus"), None).await.0, 403);
    assert_eq!(s.call("GET", "nothing-here/x", Some(&root), None).await.0, 404);
}

#[tokio::test]
async fn sighup_does_not_stop_the_server() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let pid = s.pid().to_string();
    assert!(
        std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success()
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.call("GET", "auth/token/lookup-self", Some(&root), None).await.0, 200);
    assert!(s.logs().contains("SIGHUP received"));
}

#[tokio::test]
async fn openapi_document_lists_the_mounted_paths_with_their_fields() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    for (path, body) in [
        ("sys/mounts/kv1", json!({"type": "kv"})),
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        ("sys/mounts/database", json!({"type": "database"})),
        ("sys/auth/approle", json!({"type": "approle"})),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    let (code, doc) = s.call("GET", "sys/internal/specs/openapi", Some(&root), None).await;
    assert_eq!(code, 200, "{doc}");
    // The document itself, not inside Vault's envelope.
    assert_eq!(doc["openapi"], "3.0.2", "{doc}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/kv1/{path}",
        "/secret/config",
        "/secret/data/{path}",
        "/secret/metadata/{path}",
        "/database/config/{name}",
        "/database/roles/{name}",
        "/database/creds/{name}",
        "/auth/approle/login",
        "/auth/approle/role/{role_name}",
        "/auth/approle/role/{role_name}/secret-id",
        "/cubbyhole/{path}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    // Every operation answers something and every $ref resolves.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (p, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            if !["get", "post", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            assert!(op["responses"].is_object(), "{p} {method}");
            assert!(op["operationId"].is_string(), "{p} {method}");
            if let Some(r) =
                op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
            {
                let name = r.strip_prefix("#/components/schemas/").expect("local ref");
                assert!(schemas.contains_key(name), "{p} {method}: {r}");
            }
        }
        for param in item["parameters"].as_array().expect("parameters") {
            let name = param["name"].as_str().expect("name");
            assert!(p.contains(&format!("{{{name}}}")), "{p}: {name}");
            assert_eq!(param["in"], "path");
        }
    }
    let body = |p: &str| {
        let r = paths[p]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{p} has no request body"));
        schemas[r.trim_start_matches("#/components/schemas/")].clone()
    };
    let role = body("/auth/approle/role/{role_name}");
    assert_eq!(role["properties"]["secret_id_ttl"]["type"], "integer");
    assert_eq!(role["properties"]["secret_id_ttl"]["format"], "seconds");
    assert_eq!(role["properties"]["token_policies"]["type"], "array");
    assert!(
        role["properties"]["bind_secret_id"]["description"].as_str().is_some_and(|d| !d.is_empty())
    );
    assert_eq!(paths["/auth/approle/login"]["x-vault-unauthenticated"], true);
    assert_eq!(body("/auth/approle/login")["required"], json!(["role_id"]));
    let data = body("/secret/data/{path}");
    assert_eq!(data["properties"]["data"]["type"], "object");
    assert_eq!(body("/secret/metadata/{path}")["properties"]["custom_metadata"]["type"], "object");
    assert_eq!(
        body("/database/roles/{name}")["properties"]["creation_statements"]["type"],
        "array"
    );
    assert_eq!(paths["/secret/metadata/{path}"]["get"]["parameters"][0]["name"], "list");
    assert_eq!(paths["/database/roles"]["get"]["parameters"][0]["required"], true);

    // As in Vault, the default policy does not grant the document.
    let (code, b) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["default"]})))
        .await;
    assert_eq!(code, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token");
    let (code, b) = s.call("GET", "sys/internal/specs/openapi", Some(token), None).await;
    assert_eq!(code, 403, "{b}");
    let (code, _) = s.call("GET", "sys/internal/specs/openapi", None, None).await;
    assert_eq!(code, 403);
}

/// `auth/token/accessors` and `revoke-orphan` need `sudo`, as in Vault, whether the list is
/// asked for with its folder's trailing `/` or without.
#[tokio::test]
async fn token_accessors_and_revoke_orphan_need_sudo() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let mk = async |caps: &str| {
        let policy = format!(
            "path \"auth/token/accessors\" {{ capabilities = [{caps}] }}\n\
             path \"auth/token/accessors/\" {{ capabilities = [{caps}] }}\n\
             path \"auth/token/revoke-orphan\" {{ capabilities = [{caps}] }}\n"
        );
        let name = if caps.contains("sudo") { "with-sudo" } else { "without-sudo" };
        s.call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(&root),
            Some(json!({"policy": policy})),
        )
        .await;
        let (_, b) = s
            .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": [name]})))
            .await;
        b["auth"]["client_token"].as_str().expect("token").to_owned()
    };
    let plain = mk("\"list\", \"update\"").await;
    let sudo = mk("\"list\", \"update\", \"sudo\"").await;
    for path in ["auth/token/accessors", "auth/token/accessors/"] {
        assert_eq!(s.call("LIST", path, Some(&plain), None).await.0, 403, "{path}");
        let (code, b) = s.call("LIST", path, Some(&sudo), None).await;
        assert_eq!(code, 200, "{path}: {b}");
    }
    let (_, b) = s.call("POST", "auth/token/create", Some(&root), Some(json!({}))).await;
    let victim = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let body = json!({"token": victim});
    assert_eq!(
        s.call("POST", "auth/token/revoke-orphan", Some(&plain), Some(body.clone())).await.0,
        403
    );
    assert_eq!(s.call("POST", "auth/token/revoke-orphan", Some(&sudo), Some(body)).await.0, 204);
}
