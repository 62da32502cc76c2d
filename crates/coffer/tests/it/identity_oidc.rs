//! The identity token issuer end to end: a workload logs in, asks `identity/oidc/token/:role`
//! for a JWT about its entity, the token verifies against the unauthenticated published key set
//! (checked here with aws-lc-rs from the JWK alone, not with Coffer's code), introspection says
//! it is active, a rotation keeps it verifiable, and Coffer's own jwt auth method, pointed at
//! Coffer's discovery document or key set, accepts it: Coffer trusts itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::common::{Server, tempdir};

async fn post(s: &Server, token: &str, path: &str, body: Value) -> Value {
    let (code, b) = s.call("POST", path, Some(token), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
    b
}

fn part(jwt: &str, i: usize) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).expect("part")).expect("base64url")
}

/// Verifies a compact JWS against a JWK set with aws-lc-rs, from the JWK's own fields.
fn verified_by(jwt: &str, jwks: &Value) -> bool {
    use aws_lc_rs::signature;
    let header: Value = serde_json::from_slice(&part(jwt, 0)).expect("header");
    let kid = header["kid"].as_str().expect("kid");
    let Some(jwk) = jwks["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == kid) else {
        return false;
    };
    let (h, p, _) = (jwt.split('.').next().unwrap_or(""), jwt.split('.').nth(1).unwrap_or(""), ());
    let msg = format!("{h}.{p}");
    let sig = part(jwt, 2);
    let b = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().expect("jwk field")).expect("b64");
    assert_eq!(jwk["alg"], header["alg"]);
    match jwk["kty"].as_str() {
        Some("RSA") => signature::RsaPublicKeyComponents { n: b("n"), e: b("e") }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg.as_bytes(), &sig)
            .is_ok(),
        Some("EC") => {
            let mut point = vec![4u8];
            point.extend(b("x"));
            point.extend(b("y"));
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(msg.as_bytes(), &sig)
                .is_ok()
        }
        Some("OKP") => signature::UnparsedPublicKey::new(&signature::ED25519, b("x"))
            .verify(msg.as_bytes(), &sig)
            .is_ok(),
        other => panic!("unexpected kty {other:?}"),
    }
}

/// AppRole login with a policy that may ask for tokens of every identity role; returns
/// (client token, entity id).
async fn workload(s: &Server, root: &str) -> (String, String) {
    post(s, root, "sys/auth/approle", json!({"type": "approle"})).await;
    post(
        s,
        root,
        "sys/policies/acl/workload",
        json!({"policy": "path \"identity/oidc/token/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    post(s, root, "auth/approle/role/app", json!({"token_policies": ["workload"]})).await;
    let (role_id, secret_id) = s.approle_credentials(root, "app").await;
    let (code, b) = s.approle_login(&role_id, &secret_id).await;
    assert_eq!(code, 200, "{b}");
    let entity = b["auth"]["entity_id"].as_str().expect("entity").to_owned();
    post(
        s,
        root,
        &format!("identity/entity/id/{entity}"),
        json!({"name": "billing", "metadata": {"team": "pay"}}),
    )
    .await;
    (b["auth"]["client_token"].as_str().expect("token").to_owned(), entity)
}

async fn identity_token(s: &Server, token: &str, role: &str) -> Value {
    let (code, b) = s.call("GET", &format!("identity/oidc/token/{role}"), Some(token), None).await;
    assert_eq!(code, 200, "{b}");
    b["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_gets_a_verifiable_identity_token_and_coffers_jwt_method_accepts_it() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let audit = dir.path().join("audit.log");
    post(
        &s,
        &root,
        "sys/audit/file",
        json!({"type": "file", "options": {"file_path": audit.display().to_string()}}),
    )
    .await;
    let (token, entity) = workload(&s, &root).await;
    post(
        &s,
        &root,
        "identity/oidc/key/main",
        json!({"allowed_client_ids": ["*"], "rotation_period": "1h", "verification_ttl": "2h"}),
    )
    .await;
    post(
        &s,
        &root,
        "identity/oidc/role/app",
        json!({
            "key": "main",
            "ttl": "30m",
            "template": "{\"team\": {{identity.entity.metadata.team}}, \"groups\": {{identity.entity.groups.names}}}",
        }),
    )
    .await;
    let (_, role) = s.call("GET", "identity/oidc/role/app", Some(&root), None).await;
    let client_id = role["data"]["client_id"].as_str().expect("client_id").to_owned();
    assert_eq!(role["data"]["ttl"], 1800);
    let (_, key) = s.call("GET", "identity/oidc/key/main", Some(&root), None).await;
    assert_eq!(
        key["data"],
        json!({"algorithm": "RS256", "allowed_client_ids": ["*"], "rotation_period": 3600, "verification_ttl": 7200})
    );

    let issued = identity_token(&s, &token, "app").await;
    let jwt = issued["token"].as_str().expect("jwt").to_owned();
    assert_eq!(issued["client_id"], json!(client_id));
    assert_eq!(issued["ttl"], 1800);

    // Discovery and keys are public, as in Vault.
    let (code, disco) =
        s.call("GET", "identity/oidc/.well-known/openid-configuration", None, None).await;
    assert_eq!(code, 200, "{disco}");
    let issuer = disco["issuer"].as_str().expect("issuer").to_owned();
    assert_eq!(issuer, format!("{}/v1/identity/oidc", s.addr));
    assert_eq!(disco["jwks_uri"], json!(format!("{issuer}/.well-known/keys")));
    let (code, jwks) = s.call("GET", "identity/oidc/.well-known/keys", None, None).await;
    assert_eq!(code, 200);
    assert!(jwks["keys"].as_array().expect("keys").iter().all(|k| k.get("d").is_none()));
    assert!(verified_by(&jwt, &jwks), "the published key verifies the token");
    let mut tampered = jwt.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert!(!verified_by(&tampered, &jwks));

    let claims: Value = serde_json::from_slice(&part(&jwt, 1)).expect("claims");
    assert_eq!(claims["iss"], json!(issuer));
    assert_eq!(claims["sub"], json!(entity));
    assert_eq!(claims["aud"], json!(client_id));
    assert_eq!(claims["namespace"], "root");
    assert_eq!(claims["team"], "pay");
    assert_eq!(claims["groups"], Value::Null, "no groups: null, as Vault's nil list");
    let exp = claims["exp"].as_u64().expect("exp");
    let iat = claims["iat"].as_u64().expect("iat");
    assert_eq!(exp - iat, 1800);

    let (code, b) = s
        .call(
            "POST",
            "identity/oidc/introspect",
            Some(&root),
            Some(json!({"token": jwt, "client_id": client_id})),
        )
        .await;
    assert_eq!((code, b.clone()), (200, json!({"active": true})), "{b}");
    let (_, b) = s
        .call("POST", "identity/oidc/introspect", Some(&root), Some(json!({"token": tampered})))
        .await;
    assert_eq!(b["active"], false);

    // Coffer trusts itself: its jwt method, with the key set URL and with discovery.
    for (mount, config) in [
        ("jwt", json!({"jwks_url": format!("{issuer}/.well-known/keys"), "bound_issuer": issuer})),
        ("oidc-self", json!({"oidc_discovery_url": issuer})),
    ] {
        post(&s, &root, &format!("sys/auth/{mount}"), json!({"type": "jwt"})).await;
        post(&s, &root, &format!("auth/{mount}/config"), config).await;
        post(
            &s,
            &root,
            &format!("auth/{mount}/role/workload"),
            json!({"role_type": "jwt", "bound_audiences": [client_id], "user_claim": "sub", "token_policies": ["workload"]}),
        )
        .await;
        let (code, b) = s
            .call(
                "POST",
                &format!("auth/{mount}/login"),
                None,
                Some(json!({"role": "workload", "jwt": jwt})),
            )
            .await;
        assert_eq!(code, 200, "{mount}: {b}");
        assert!(b["auth"]["policies"].as_array().expect("policies").contains(&json!("workload")));
        let (code, _) = s
            .call(
                "POST",
                &format!("auth/{mount}/login"),
                None,
                Some(json!({"role": "workload", "jwt": tampered})),
            )
            .await;
        assert_eq!(code, 400, "{mount}: a tampered token is refused");
    }

    // The jwt login has an entity of its own, its alias named by the token's `sub`; the groups
    // the issuer puts in the token become external groups through the role's groups_claim.
    post(&s, &root, "identity/group", json!({"name": "payments", "member_entity_ids": [entity]}))
        .await;
    let ext = post(
        &s,
        &root,
        "identity/group",
        json!({"name": "payments-ext", "type": "external", "policies": ["from-issuer"]}),
    )
    .await;
    let (_, auths) = s.call("GET", "sys/auth", Some(&root), None).await;
    let jwt_accessor = auths["data"]["jwt/"]["accessor"].as_str().expect("accessor").to_owned();
    post(
        &s,
        &root,
        "identity/group-alias",
        json!({"name": "payments", "mount_accessor": jwt_accessor, "canonical_id": ext["data"]["id"]}),
    )
    .await;
    post(
        &s,
        &root,
        "auth/jwt/role/grouped",
        json!({"role_type": "jwt", "bound_audiences": [client_id], "user_claim": "sub", "groups_claim": "groups", "token_policies": ["workload"]}),
    )
    .await;
    let grouped = identity_token(&s, &token, "app").await;
    let grouped = grouped["token"].as_str().expect("jwt").to_owned();
    let claims: Value = serde_json::from_slice(&part(&grouped, 1)).expect("claims");
    assert_eq!(claims["groups"], json!(["payments"]));
    let (code, b) = s
        .call("POST", "auth/jwt/login", None, Some(json!({"role": "grouped", "jwt": grouped})))
        .await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["auth"]["identity_policies"], json!(["from-issuer"]));
    let jwt_entity = b["auth"]["entity_id"].as_str().expect("entity").to_owned();
    assert_ne!(jwt_entity, entity, "an entity of the jwt mount's own");
    let (_, e) =
        s.call("GET", &format!("identity/entity/id/{jwt_entity}"), Some(&root), None).await;
    assert_eq!(e["data"]["aliases"][0]["name"], json!(entity), "the alias is the token's sub");

    // Rotation: the old key stays published for verification_ttl, so the token still verifies.
    post(&s, &root, "identity/oidc/key/main/rotate", json!({})).await;
    let (_, after) = s.call("GET", "identity/oidc/.well-known/keys", None, None).await;
    assert_eq!(after["keys"].as_array().expect("keys").len(), 2);
    assert!(verified_by(&jwt, &after));
    let newer = identity_token(&s, &token, "app").await;
    let newer = newer["token"].as_str().expect("jwt");
    assert_ne!(part(newer, 0), part(&jwt, 0), "signed with the new key");
    assert!(verified_by(newer, &after));

    // No private key in the audit log or the server's log: every long base64 run there would
    // be one (a JWT in an answer is HMAC'd by the audit device).
    let audit = std::fs::read_to_string(&audit).expect("audit");
    for (what, text) in [("audit", audit.as_str()), ("log", s.logs().as_str())] {
        let longest = text
            .split(|c: char| {
                !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '+' || c == '/')
            })
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(longest < 600, "{what} holds a {longest}-character base64 run");
        assert!(!text.contains(&jwt), "{what} holds the identity token");
    }
}

#[tokio::test]
async fn keys_of_every_algorithm_roles_and_their_errors() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (token, _) = workload(&s, &root).await;
    for alg in ["ES256", "EdDSA"] {
        let name = alg.to_lowercase();
        post(
            &s,
            &root,
            &format!("identity/oidc/key/{name}"),
            json!({"algorithm": alg, "allowed_client_ids": ["*"]}),
        )
        .await;
        post(&s, &root, &format!("identity/oidc/role/{name}"), json!({"key": name})).await;
        let t = identity_token(&s, &token, &name).await;
        let (_, jwks) = s.call("GET", "identity/oidc/.well-known/keys", None, None).await;
        assert!(verified_by(t["token"].as_str().expect("jwt"), &jwks), "{alg}");
    }
    let cases = [
        (
            "identity/oidc/key/bad",
            json!({"algorithm": "HS256"}),
            "unknown signing algorithm \"HS256\"",
        ),
        (
            "identity/oidc/key/bad",
            json!({"rotation_period": "10s"}),
            "rotation_period must be at least one minute",
        ),
        ("identity/oidc/role/bad", json!({}), "the key parameter is required"),
        ("identity/oidc/role/bad", json!({"key": "missing"}), "cannot find key \"missing\""),
        (
            "identity/oidc/role/bad",
            json!({"key": "es256", "ttl": "48h"}),
            "a role's token ttl cannot be longer than the verification_ttl of the key it references",
        ),
        (
            "identity/oidc/role/bad",
            json!({"key": "es256", "template": "{\"sub\": \"x\"}"}),
            "top level key \"sub\" not allowed",
        ),
        ("identity/oidc/config", json!({"issuer": "https://x.example/path"}), "invalid issuer"),
    ];
    for (path, body, want) in cases {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert_eq!(code, 400, "{path}: {b}");
        let msg = b["errors"][0].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{path}: {msg:?} lacks {want:?}");
    }
    let (code, b) = s.call("DELETE", "identity/oidc/key/es256", Some(&root), None).await;
    assert_eq!(code, 400, "a key in use by a role stays: {b}");
    // A key that does not list the role's client id refuses to sign for it.
    post(&s, &root, "identity/oidc/key/narrow", json!({"allowed_client_ids": ["someone-else"]}))
        .await;
    post(&s, &root, "identity/oidc/role/narrow", json!({"key": "narrow"})).await;
    let (code, b) = s.call("GET", "identity/oidc/token/narrow", Some(&token), None).await;
    assert_eq!(code, 400, "{b}");
    // The root token has no entity.
    let (code, b) = s.call("GET", "identity/oidc/token/es256", Some(&root), None).await;
    assert_eq!(
        (code, b["errors"][0].as_str()),
        (400, Some("no entity associated with the request's token"))
    );
    let (code, b) = s.call("LIST", "identity/oidc/key", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(b["data"]["keys"], json!(["eddsa", "es256", "narrow"]));
    // Configured issuer: tokens and discovery name it.
    post(&s, &root, "identity/oidc/config", json!({"issuer": "https://coffer.example:8200"})).await;
    let (_, disco) =
        s.call("GET", "identity/oidc/.well-known/openid-configuration", None, None).await;
    assert_eq!(disco["issuer"], "https://coffer.example:8200/v1/identity/oidc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_store_and_its_keys_survive_a_restart() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    let (token, entity) = workload(&s, &root).await;
    post(&s, &root, "identity/oidc/config", json!({"issuer": "https://coffer.example:8200"})).await;
    post(
        &s,
        &root,
        "identity/oidc/key/k",
        json!({"algorithm": "ES256", "allowed_client_ids": ["*"]}),
    )
    .await;
    post(&s, &root, "identity/oidc/role/r", json!({"key": "k", "ttl": "1h"})).await;
    let g = post(
        &s,
        &root,
        "identity/group",
        json!({"name": "g", "policies": ["extra"], "member_entity_ids": [entity]}),
    )
    .await;
    let jwt = identity_token(&s, &token, "r").await["token"].as_str().expect("jwt").to_owned();

    s.restart();
    s.unseal(&keys).await;
    let (code, e) = s.call("GET", &format!("identity/entity/id/{entity}"), Some(&root), None).await;
    assert_eq!(code, 200, "{e}");
    assert_eq!(e["data"]["name"], "billing");
    assert_eq!(e["data"]["direct_group_ids"], json!([g["data"]["id"]]));
    let (_, lookup) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
    assert_eq!(lookup["data"]["identity_policies"], json!(["extra"]), "the token keeps its entity");
    let (_, jwks) = s.call("GET", "identity/oidc/.well-known/keys", None, None).await;
    assert!(verified_by(&jwt, &jwks), "the same key verifies after the restart");
    let (_, b) =
        s.call("POST", "identity/oidc/introspect", Some(&root), Some(json!({"token": jwt}))).await;
    assert_eq!(b, json!({"active": true}));
    let newer = identity_token(&s, &token, "r").await;
    let newer = newer["token"].as_str().expect("jwt");
    assert_eq!(part(newer, 0), part(&jwt, 0), "signed with the same stored key");
}
