//! Leases through the real binary: token leases with the CLI, and that they survive a restart.
//! Secret leases end to end (database credentials) are in database.rs.

use serde_json::{Value, json};

use crate::common::{Server, stderr, stdout, tempdir};

async fn token(s: &Server, root: &str, ttl: &str) -> String {
    let (code, b) = s
        .call(
            "POST",
            "auth/token/create",
            Some(root),
            Some(json!({"ttl": ttl, "policies": ["default"]})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    b["auth"]["client_token"].as_str().expect("token").to_owned()
}

async fn token_lease_ids(s: &Server, root: &str) -> Vec<String> {
    let (code, b) = s.call("LIST", "sys/leases/lookup/auth/token/create/", Some(root), None).await;
    if code == 404 {
        return Vec::new();
    }
    assert_eq!(code, 200, "{b}");
    let keys = b["data"]["keys"].as_array().expect("keys");
    keys.iter().map(|k| format!("auth/token/create/{}", k.as_str().expect("key"))).collect()
}

#[tokio::test]
async fn the_cli_looks_up_and_revokes_token_leases_and_they_survive_a_restart() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    let t = token(&s, &root, "10m").await;
    let ids = token_lease_ids(&s, &root).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids[0].clone();

    let out = s.cli(Some(&root), &["lease", "lookup", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("expire_time") && text.contains("renewable"), "{text}");

    // A token renews as a token (as in Vault, not through sys/leases/renew).
    let out = s.cli(Some(&root), &["lease", "renew", "-increment=1h", &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tokens cannot be renewed through this endpoint"),
        "{}",
        stderr(&out)
    );
    let out = s.cli(Some(&root), &["token", "renew", "-increment=1h", "-format=json", &t]);
    assert!(out.status.success(), "{}", stderr(&out));
    let renewed: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let ttl = renewed["auth"]["lease_duration"].as_u64().expect("duration");
    assert!((3500..=3600).contains(&ttl), "{renewed}");

    s.restart();
    s.unseal(&keys).await;
    assert_eq!(
        token_lease_ids(&s, &root).await,
        vec![id.clone()],
        "the lease survived the restart"
    );
    let (code, b) =
        s.call("POST", "sys/leases/lookup", Some(&root), Some(json!({"lease_id": id}))).await;
    assert_eq!(code, 200, "{b}");
    assert!(b["data"]["ttl"].as_u64().expect("ttl") > 3000, "the renewal survived too: {b}");

    // A non-sudo token may not revoke by prefix.
    let out = s.cli(Some(&t), &["lease", "revoke", "-prefix", "auth/token/create"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("permission denied"), "{}", stderr(&out));

    let out = s.cli(Some(&root), &["lease", "revoke", "-prefix", "auth/token/create"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Revoked any leases with prefix"), "{}", stdout(&out));
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&t), None).await;
    assert_eq!(code, 403, "the token behind the lease is revoked");
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&root), None).await;
    assert_eq!(code, 200, "the root token was not created at auth/token/create");

    let out = s.cli(Some(&root), &["lease", "lookup", &id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid lease"), "{}", stderr(&out));
}

#[tokio::test]
async fn lease_requests_with_bad_input_are_refused_with_400s_that_name_the_problem() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let cases = [
        ("sys/leases/lookup", json!({}), "lease_id"),
        ("sys/leases/renew", json!({"lease_id": "secret/x/abc"}), "lease not found"),
        ("sys/leases/renew", json!({"lease_id": "x/y", "increment": "soon"}), "increment"),
        ("sys/leases/revoke", json!({"lease_id": "x", "sync": "maybe"}), "sync"),
    ];
    for (path, body, want) in cases {
        let (code, b) = s.call("POST", path, Some(&root), Some(body.clone())).await;
        assert_eq!(code, 400, "{path} {body}: {b}");
        assert!(b.to_string().contains(want), "{path} {body}: {b}");
    }
    let (code, b) = s.call("GET", "sys/leases?type=expired", Some(&root), None).await;
    assert_eq!(code, 400, "{b}");
    // Revoking what does not exist is not an error, as in Vault.
    let (code, b) = s.call("POST", "sys/revoke/secret/none/abc", Some(&root), None).await;
    assert_eq!(code, 204, "{b}");
}

#[tokio::test]
async fn lease_list_prints_the_full_lease_ids_under_a_prefix() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    let out = s.cli(Some(&root), &["lease", "list", "auth/token/create"]);
    assert_eq!(out.status.code(), Some(2), "none yet: {}", stdout(&out));
    assert!(stderr(&out).contains("No leases found under auth/token/create"), "{}", stderr(&out));

    let a = token(&s, &root, "10m").await;
    let b = token(&s, &root, "10m").await;
    let mut want = token_lease_ids(&s, &root).await;
    want.sort();
    assert_eq!(want.len(), 2, "{want:?}");

    for prefix in ["auth/token/create", "auth/token/create/"] {
        let out = s.cli(Some(&root), &["lease", "list", prefix]);
        assert!(out.status.success(), "{prefix}: {}", stderr(&out));
        assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want, "{prefix}");
    }
    // From a parent folder the listing walks the sub-folders and joins the segments (the root
    // token's lease, under auth/token/root/, comes along).
    for prefix in ["auth/token", "auth"] {
        let out = s.cli(Some(&root), &["lease", "list", prefix]);
        assert!(out.status.success(), "{prefix}: {}", stderr(&out));
        let got: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        assert!(want.iter().all(|id| got.contains(id)), "{prefix}: {got:?}");
        assert!(got.iter().all(|id| id.starts_with("auth/token/")), "{prefix}: {got:?}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "sorted, once each: {got:?}");
    }
    let out = s.cli(Some(&root), &["lease", "list", "-format=json", "auth/token/create"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(serde_json::from_str::<Value>(&stdout(&out)).expect("json"), json!(want));

    // Each listed id is a lease the other lease commands take: revoking one revokes one token.
    let out = s.cli(Some(&root), &["lease", "revoke", &want[0]]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut alive = 0;
    for t in [&a, &b] {
        let (code, _) = s.call("GET", "auth/token/lookup-self", Some(t), None).await;
        alive += usize::from(code == 200);
    }
    assert_eq!(alive, 1, "exactly the listed lease's token was revoked");
    let out = s.cli(Some(&root), &["lease", "list", "auth/token/create"]);
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want[1..].to_vec());

    // Listing needs sudo on sys/leases/lookup/*, as the LIST itself does.
    let out = s.cli(Some(&a), &["lease", "list", "auth/token/create"]);
    let out = if out.status.success() { s.cli(Some(&b), &["lease", "list", "auth"]) } else { out };
    assert!(!out.status.success());
    assert!(stderr(&out).contains("permission denied"), "{}", stderr(&out));
}
