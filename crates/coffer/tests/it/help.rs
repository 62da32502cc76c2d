//! `?help=1` on any path, in Vault's shape (`{"help", "openapi", "see_also"}`, not inside the
//! response envelope) and under Vault's rule (a live token, no capability), and the `sys/` paths
//! in the OpenAPI document.

use serde_json::{Value, json};

use crate::common::{Server, tempdir};

async fn mount(s: &Server, root: &str, path: &str, body: Value) {
    let (code, b) = s.call("POST", path, Some(root), Some(body)).await;
    assert_eq!(code, 204, "{path}: {b}");
}

/// A token with only the `default` policy: nothing under `secret/` or `sys/mounts`.
async fn default_token(s: &Server, root: &str) -> String {
    let body = json!({"policies": ["default"]});
    let (code, b) = s.call("POST", "auth/token/create", Some(root), Some(body)).await;
    assert_eq!(code, 200, "{b}");
    b["auth"]["client_token"].as_str().expect("token").to_owned()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default()
}

#[tokio::test]
async fn help_for_a_kv_path_names_its_route_and_fields_in_vaults_shape() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    let (code, b) = s.call("GET", "secret/data/app/db?help=1", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    // Vault answers the help object itself: no envelope, no request id.
    assert_eq!(keys(&b), vec!["help", "openapi", "see_also"], "{b}");
    assert_eq!(b["see_also"], Value::Null);
    let help = b["help"].as_str().expect("help text");
    assert!(
        help.starts_with("Request:        data/app/db\nMatching Route: data/{path*}"),
        "{help}"
    );
    assert!(help.contains("## PARAMETERS") && help.contains("    options (map)"), "{help}");
    // The OpenAPI part covers the matching path, relative to the mount, as Vault's does.
    let doc = &b["openapi"];
    assert_eq!(doc["openapi"], "3.0.2");
    assert_eq!(keys(&doc["paths"]), vec!["/data/{path}"], "{doc}");
    assert!(doc["paths"]["/data/{path}"]["post"]["requestBody"].is_object(), "{doc}");

    // The mount itself: every route with its synopsis.
    let (code, b) = s.call("GET", "secret?help=1", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let help = b["help"].as_str().expect("help text");
    assert!(help.contains("## PATHS") && help.contains("    metadata/{path*}\n"), "{help}");
    assert!(keys(&b["openapi"]["paths"]).contains(&"/config"), "{b}");

    // Any method with ?help=1 is a help request: a write is not carried out.
    let body = json!({"data": {"password": "s3cr3t"}});
    let (code, b) = s.call("POST", "secret/data/app/db?help=1", Some(&root), Some(body)).await;
    assert_eq!(code, 200, "{b}");
    assert!(b["help"].is_string(), "{b}");
    let (code, b) = s.call("GET", "secret/data/app/db", Some(&root), None).await;
    assert_eq!(code, 404, "nothing was written: {b}");
}

#[tokio::test]
async fn help_for_an_auth_method_path_and_its_login_without_a_token() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root, "sys/auth/approle", json!({"type": "approle"})).await;
    let (code, b) = s.call("GET", "auth/approle/role/web?help=1", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let help = b["help"].as_str().expect("help text");
    assert!(help.contains("Matching Route: role/{role_name}"), "{help}");
    assert!(help.contains("    token_ttl (duration (sec))"), "{help}");
    assert!(help.contains("    bind_secret_id (bool)"), "{help}");
    assert_eq!(b["openapi"]["paths"]["/role/{role_name}"]["post"]["tags"], json!(["auth"]));
    // A login needs no token, so neither does its help (Vault's unauthenticated paths).
    let (code, b) = s.call("GET", "auth/approle/login?help=1", None, None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["openapi"]["paths"]["/login"]["x-vault-unauthenticated"], true, "{b}");
    // So do the public system endpoints.
    let (code, b) = s.call("GET", "sys/health?help=1", None, None).await;
    assert_eq!(code, 200, "{b}");
    assert!(b["help"].as_str().is_some_and(|h| h.contains("    sealedcode (int)")), "{b}");
}

/// Vault's rule: help needs a live token (403 without one, with a bogus or a revoked one) but no
/// capability on the path, `sudo` paths included.
#[tokio::test]
async fn help_is_denied_without_a_live_token_and_needs_no_capability() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    for token in [None, Some("not-a-token")] {
        for path in ["secret/data/app?help=1", "sys/mounts?help=1", "sys?help=1"] {
            let (code, b) = s.call("GET", path, token, None).await;
            assert_eq!(code, 403, "{path} with {token:?}: {b}");
            assert_eq!(b["errors"], json!(["permission denied"]), "{b}");
        }
    }
    let token = default_token(&s, &root).await;
    let (code, b) = s.call("GET", "secret/data/app", Some(&token), None).await;
    assert_eq!(code, 403, "the default policy grants nothing here: {b}");
    for path in ["secret/data/app?help=1", "sys/mounts?help=1", "sys/audit?help=1"] {
        let (code, b) = s.call("GET", path, Some(&token), None).await;
        assert_eq!(code, 200, "{path}: {b}");
        assert!(b["help"].is_string(), "{path}: {b}");
    }
    let (code, b) = s.call("POST", "auth/token/revoke-self", Some(&token), None).await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s.call("GET", "secret/data/app?help=1", Some(&token), None).await;
    assert_eq!(code, 403, "a revoked token: {b}");
}

#[tokio::test]
async fn help_for_an_unknown_path_is_a_404() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    mount(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    for path in ["nope/x?help=1", "secret/nope?help=1", "sys/nope?help=1"] {
        let (code, b) = s.call("GET", path, Some(&root), None).await;
        assert_eq!(code, 404, "{path}: {b}");
        // Vault's texts: its system backend says "unsupported path", the router the rest.
        let want =
            if path.starts_with("sys/") { "unsupported path" } else { "no handler for route" };
        assert!(b["errors"][0].as_str().is_some_and(|e| e.contains(want)), "{b}");
    }
    // Without a token, which paths exist stays hidden.
    let (code, _) = s.call("GET", "nope/x?help=1", None, None).await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn help_for_sys_paths_comes_from_their_declarations() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, b) = s.call("GET", "sys/mounts/secret/tune?help=1", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let help = b["help"].as_str().expect("help text");
    assert!(help.contains("Matching Route: mounts/{path}/tune"), "{help}");
    assert!(help.contains("    default_lease_ttl (duration (sec))"), "{help}");
    let item = &b["openapi"]["paths"]["/mounts/{path}/tune"];
    assert_eq!(item["post"]["tags"], json!(["system"]), "{b}");
    let (code, b) = s.call("GET", "sys?help=1", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert!(b["help"].as_str().is_some_and(|h| h.contains("    policies/acl/{name*}")), "{b}");
}

/// The OpenAPI document describes `sys/` too, from the same declarations the router serves.
#[tokio::test]
async fn the_openapi_document_includes_the_sys_paths() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, doc) = s.call("GET", "sys/internal/specs/openapi", Some(&root), None).await;
    assert_eq!(code, 200, "{doc}");
    let paths = &doc["paths"];
    for p in [
        "/sys/mounts",
        "/sys/mounts/{path}",
        "/sys/mounts/{path}/tune",
        "/sys/policies/acl/{name}",
        "/sys/leases/renew",
        "/sys/leases/lookup/{prefix}",
        "/sys/internal/specs/openapi",
        "/sys/health",
    ] {
        assert!(paths[p].is_object(), "{p} missing from {:?}", keys(paths));
    }
    assert_eq!(paths["/sys/seal"]["x-vault-sudo"], true);
    assert_eq!(paths["/sys/audit/{path}"]["x-vault-sudo"], true);
    assert!(paths["/sys/mounts/{path}/tune"].get("x-vault-sudo").is_none());
    assert_eq!(paths["/sys/health"]["x-vault-unauthenticated"], true);
    assert_eq!(paths["/sys/policies/acl/{name}"]["delete"]["tags"], json!(["system"]));
    assert_eq!(paths["/sys/policies/acl"]["get"]["parameters"][0]["name"], "list");
}
