//! KV version 2 over HTTP and through vaultrs: versions, check-and-set, patch, soft delete,
//! undelete, destroy, metadata, pruning and delete_version_after.

use std::collections::HashMap;

use serde_json::json;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, Storage, tempdir};

async fn kv2_server() -> (tempfile::TempDir, Server, String) {
    kv2_server_on(Storage::Default).await
}

async fn kv2_server_on(storage: Storage) -> (tempfile::TempDir, Server, String) {
    let dir = tempdir();
    let (s, _, root) = Server::ready_on(dir.path(), storage).await;
    s.mount_kv2(&root).await;
    (dir, s, root)
}

#[tokio::test]
async fn versions_are_immutable_and_cas_protects_writers() {
    let (_dir, s, root) = kv2_server().await;
    let t = Some(root.as_str());
    let (code, w1) =
        s.call("POST", "secret/data/app", t, Some(json!({"data": {"password": "one"}}))).await;
    assert_eq!(code, 200, "{w1}");
    assert_eq!(w1["data"]["version"], 1);
    assert_eq!(w1["data"]["destroyed"], false);
    assert_eq!(w1["data"]["deletion_time"], "");
    let (_, w2) = s
        .call("POST", "secret/data/app", t, Some(json!({"data": {"password": "two", "user": "u"}})))
        .await;
    assert_eq!(w2["data"]["version"], 2);

    let (_, r) = s.call("GET", "secret/data/app", t, None).await;
    assert_eq!(r["data"]["data"], json!({"password": "two", "user": "u"}));
    assert_eq!(r["data"]["metadata"]["version"], 2);
    let (_, r1) = s.call("GET", "secret/data/app?version=1", t, None).await;
    assert_eq!(r1["data"]["data"], json!({"password": "one"}), "version 1 unchanged");

    // Check-and-set: a stale cas fails with Vault's message, the right one succeeds.
    let (code, e) = s
        .call(
            "POST",
            "secret/data/app",
            t,
            Some(json!({"data": {"password": "x"}, "options": {"cas": 1}})),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(e["errors"][0], "check-and-set parameter did not match the current version");
    let (code, _) = s
        .call(
            "POST",
            "secret/data/app",
            t,
            Some(json!({"data": {"password": "three"}, "options": {"cas": 2}})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .call(
            "POST",
            "secret/data/new",
            t,
            Some(json!({"data": {"a": "b"}, "options": {"cas": 0}})),
        )
        .await;
    assert_eq!(code, 200, "cas=0 creates");
    let (code, _) = s
        .call(
            "POST",
            "secret/data/new",
            t,
            Some(json!({"data": {"a": "c"}, "options": {"cas": 0}})),
        )
        .await;
    assert_eq!(code, 400, "cas=0 refuses to overwrite");

    // cas_required on the mount.
    s.call("POST", "secret/config", t, Some(json!({"cas_required": true}))).await;
    let (code, e) = s.call("POST", "secret/data/app", t, Some(json!({"data": {"p": "q"}}))).await;
    assert_eq!(
        (code, e["errors"][0].clone()),
        (400, json!("check-and-set parameter required for this call"))
    );
    s.call("POST", "secret/config", t, Some(json!({"cas_required": false}))).await;

    // Merge patch makes a new version from the latest.
    let (code, p) = s
        .call("PATCH", "secret/data/app", t, Some(json!({"data": {"user": null, "extra": "e"}})))
        .await;
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["data"]["version"], 4);
    let (_, r) = s.call("GET", "secret/data/app", t, None).await;
    assert_eq!(r["data"]["data"], json!({"password": "three", "extra": "e"}));
    assert_eq!(
        s.call("PATCH", "secret/data/missing", t, Some(json!({"data": {"a": "b"}}))).await.0,
        404
    );

    let (_, sk) = s.call("GET", "secret/subkeys/app", t, None).await;
    assert_eq!(sk["data"]["subkeys"], json!({"password": null, "extra": null}));
}

#[tokio::test]
async fn delete_undelete_destroy_and_metadata_behave_like_vault() {
    let (_dir, s, root) = kv2_server_on(Storage::Sqlite).await;
    let t = Some(root.as_str());
    for i in 1..=3 {
        s.call("POST", "secret/data/svc/db", t, Some(json!({"data": {"v": i}}))).await;
    }
    assert_eq!(s.call("DELETE", "secret/data/svc/db", t, None).await.0, 204);
    assert_eq!(s.call("GET", "secret/data/svc/db", t, None).await.0, 404, "latest is soft-deleted");
    assert_eq!(
        s.call("GET", "secret/data/svc/db?version=2", t, None).await.1["data"]["data"]["v"],
        2
    );
    s.call("POST", "secret/undelete/svc/db", t, Some(json!({"versions": [3]}))).await;
    assert_eq!(
        s.call("GET", "secret/data/svc/db", t, None).await.1["data"]["data"]["v"],
        3,
        "undeleted"
    );
    s.call("POST", "secret/delete/svc/db", t, Some(json!({"versions": [1]}))).await;
    s.call("PUT", "secret/destroy/svc/db", t, Some(json!({"versions": [2]}))).await;
    s.call("POST", "secret/undelete/svc/db", t, Some(json!({"versions": [2]}))).await;
    assert_eq!(
        s.call("GET", "secret/data/svc/db?version=2", t, None).await.0,
        404,
        "destroyed stays destroyed"
    );

    let (_, m) = s.call("GET", "secret/metadata/svc/db", t, None).await;
    let d = &m["data"];
    assert_eq!(
        (d["current_version"].clone(), d["oldest_version"].clone()),
        (json!(3), json!(0)),
        "0 until pruned, as Vault"
    );
    assert_eq!(d["versions"]["2"]["destroyed"], true);
    assert_ne!(d["versions"]["1"]["deletion_time"], "");
    assert_eq!(d["versions"]["3"]["deletion_time"], "");

    // Destroyed data is gone from storage, not just hidden.
    let (_, mounts) = s.call("GET", "sys/mounts", t, None).await;
    let uuid = mounts["data"]["secret/"]["uuid"].as_str().expect("uuid").to_owned();
    let db = rusqlite::Connection::open(s.dir.join("coffer.db")).expect("db");
    let stored = |v: u32| -> i64 {
        db.query_row(
            "SELECT count(*) FROM coffer_kv WHERE key = ?1",
            [format!("logical/{uuid}/ver/svc/db/{v}")],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert_eq!(
        (stored(1), stored(2), stored(3)),
        (1, 0, 1),
        "soft-deleted kept, destroyed removed"
    );
    assert_eq!(
        s.call("LIST", "secret/metadata/svc", t, None).await.1["data"]["keys"],
        json!(["db"])
    );
    assert_eq!(s.call("LIST", "secret/metadata", t, None).await.1["data"]["keys"], json!(["svc/"]));

    // custom_metadata and max_versions pruning.
    let (code, _) = s
        .call(
            "POST",
            "secret/metadata/svc/db",
            t,
            Some(json!({"max_versions": 2, "custom_metadata": {"owner": "team-a"}})),
        )
        .await;
    assert_eq!(code, 204);
    s.call("POST", "secret/data/svc/db", t, Some(json!({"data": {"v": 4}}))).await;
    let (_, m) = s.call("GET", "secret/metadata/svc/db", t, None).await;
    let versions: Vec<&String> = m["data"]["versions"].as_object().expect("v").keys().collect();
    assert_eq!(versions, ["3", "4"], "only the newest two are kept");
    assert_eq!(m["data"]["oldest_version"], 3);
    assert_eq!(m["data"]["custom_metadata"]["owner"], "team-a");
    assert_eq!(s.call("GET", "secret/data/svc/db?version=1", t, None).await.0, 404, "pruned");
    s.call("PATCH", "secret/metadata/svc/db", t, Some(json!({"custom_metadata": {"tier": "1"}})))
        .await;
    let (_, m) = s.call("GET", "secret/metadata/svc/db", t, None).await;
    assert_eq!(m["data"]["custom_metadata"], json!({"owner": "team-a", "tier": "1"}));

    // delete_version_after: versions expire by themselves.
    s.call("POST", "secret/metadata/short", t, Some(json!({"delete_version_after": "3s"}))).await;
    s.call("POST", "secret/data/short", t, Some(json!({"data": {"a": "b"}}))).await;
    assert_eq!(s.call("GET", "secret/data/short", t, None).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    assert_eq!(s.call("GET", "secret/data/short", t, None).await.0, 404, "deleted after 3s");

    assert_eq!(s.call("DELETE", "secret/metadata/svc/db", t, None).await.0, 204);
    assert_eq!(s.call("GET", "secret/metadata/svc/db", t, None).await.0, 404);
    assert_eq!(
        s.call("GET", "secret/data/svc/db?version=4", t, None).await.0,
        404,
        "all versions gone"
    );
    let (code, e) = s.call("POST", "secret/delete/x", t, Some(json!({"versions": "abc"}))).await;
    assert_eq!(code, 400, "{e}");
}

#[tokio::test]
async fn vaultrs_kv2_reads_and_writes_versions() {
    let (_dir, s, root) = kv2_server().await;
    let client = VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(&s.addr)
            .token(&root)
            .build()
            .expect("settings"),
    )
    .expect("client");
    let mut data = HashMap::new();
    data.insert("key", "v1");
    let meta = vaultrs::kv2::set(&client, "secret", "team/app", &data).await.expect("set");
    assert_eq!(meta.version, 1);
    data.insert("key", "v2");
    vaultrs::kv2::set(&client, "secret", "team/app", &data).await.expect("set 2");
    let latest: HashMap<String, String> =
        vaultrs::kv2::read(&client, "secret", "team/app").await.expect("read");
    assert_eq!(latest["key"], "v2");
    let first: HashMap<String, String> =
        vaultrs::kv2::read_version(&client, "secret", "team/app", 1).await.expect("read v1");
    assert_eq!(first["key"], "v1");
    let m = vaultrs::kv2::read_metadata(&client, "secret", "team/app").await.expect("metadata");
    assert_eq!((m.current_version, m.versions.len()), (2, 2));
    assert_eq!(
        vaultrs::kv2::list(&client, "secret", "team").await.expect("list"),
        vec!["app".to_owned()]
    );
    vaultrs::kv2::delete_latest(&client, "secret", "team/app").await.expect("delete");
    assert!(
        vaultrs::kv2::read::<HashMap<String, String>>(&client, "secret", "team/app").await.is_err()
    );
    vaultrs::kv2::undelete_versions(&client, "secret", "team/app", vec![2])
        .await
        .expect("undelete");
    vaultrs::kv2::destroy_versions(&client, "secret", "team/app", vec![1]).await.expect("destroy");
    assert!(
        vaultrs::kv2::read_version::<HashMap<String, String>>(&client, "secret", "team/app", 1)
            .await
            .is_err()
    );
    vaultrs::kv2::delete_metadata(&client, "secret", "team/app").await.expect("delete metadata");
    assert!(vaultrs::kv2::read_metadata(&client, "secret", "team/app").await.is_err());
}

#[tokio::test]
async fn policies_on_data_paths_govern_kv2_access() {
    let (_dir, s, root) = kv2_server().await;
    s.call("POST", "secret/data/app/db", Some(&root), Some(json!({"data": {"p": "w"}}))).await;
    s.call(
        "PUT",
        "sys/policies/acl/reader",
        Some(&root),
        Some(json!({"policy": "path \"secret/data/app/*\" {\n  capabilities = [\"read\"]\n}\n"})),
    )
    .await;
    let (_, t) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["reader"]})))
        .await;
    let tok = t["auth"]["client_token"].as_str().expect("t").to_owned();
    assert_eq!(
        s.call("GET", "secret/data/app/db", Some(&tok), None).await.1["data"]["data"]["p"],
        "w"
    );
    assert_eq!(s.call("GET", "secret/metadata/app/db", Some(&tok), None).await.0, 403);
    assert_eq!(
        s.call("POST", "secret/data/app/db", Some(&tok), Some(json!({"data": {"p": "x"}}))).await.0,
        403
    );
    assert_eq!(
        s.call("PUT", "secret/destroy/app/db", Some(&tok), Some(json!({"versions": [1]}))).await.0,
        403
    );
}

#[tokio::test]
async fn password_policies_generate_passwords_that_follow_their_rules() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let t = Some(root.as_str());
    let policy = "length = 32\nrule \"charset\" {\n  charset = \"abcdefghijklmnopqrstuvwxyz\"\n  min-chars = 2\n}\nrule \"charset\" {\n  charset = \"0123456789\"\n  min-chars = 5\n}\n";
    assert_eq!(
        s.call("PUT", "sys/policies/password/db", t, Some(json!({"policy": policy}))).await.0,
        204
    );
    assert_eq!(
        s.call("GET", "sys/policies/password/db", t, None).await.1["data"]["policy"],
        policy
    );
    assert_eq!(
        s.call("LIST", "sys/policies/password", t, None).await.1["data"]["keys"],
        json!(["db"])
    );
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let (code, b) = s.call("GET", "sys/policies/password/db/generate", t, None).await;
        assert_eq!(code, 200, "{b}");
        let pw = b["data"]["password"].as_str().expect("password").to_owned();
        assert_eq!(pw.len(), 32);
        assert!(pw.chars().filter(char::is_ascii_digit).count() >= 5, "{pw}");
        assert!(pw.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{pw}");
        seen.insert(pw);
    }
    assert_eq!(seen.len(), 20, "no two passwords alike");
    let (code, e) = s.call("PUT", "sys/policies/password/bad", t, Some(json!({"policy": "length = 3\nrule \"charset\" {\n  charset = \"ab\"\n  min-chars = 4\n}\n"}))).await;
    assert_eq!(code, 400);
    assert!(e["errors"][0].as_str().expect("msg").contains("at least 4"), "{e}");
    assert_eq!(s.call("GET", "sys/policies/password/bad/generate", t, None).await.0, 404);
    let pw = crate::common::ok(
        s.cli(t, &["read", "-field=password", "sys/policies/password/db/generate"]),
    );
    assert_eq!(pw.trim().len(), 32);
    assert_eq!(s.call("DELETE", "sys/policies/password/db", t, None).await.0, 204);
    assert_eq!(s.call("GET", "sys/policies/password/db/generate", t, None).await.0, 404);
}
