//! JWT/OIDC auth end to end, against a local identity provider this test runs (a JWKS and an
//! OIDC discovery document over HTTP) and keys it generates: RS256, ES256 and EdDSA logins
//! through the CLI, `vaultrs` and plain HTTP; every refusal the method owes (expired, wrong
//! audience, wrong issuer, unknown kid, alg=none, HMAC, a forged signature, unmet bound claims);
//! key rotation; logins surviving an identity provider that went down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, ok, stderr, tempdir};

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_secs()
}

/// A signing key the test holds, and the JWK its identity provider publishes for it.
pub(crate) enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Key {
    pub(crate) fn rsa() -> Key {
        Key::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa"))
    }
    pub(crate) fn ec() -> Key {
        Key::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec"))
    }
    pub(crate) fn ed() -> Key {
        Key::Ed(Ed25519KeyPair::generate().expect("ed"))
    }

    pub(crate) fn alg(&self) -> &'static str {
        match self {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
            Key::Ed(_) => "EdDSA",
        }
    }

    pub(crate) fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Rsa(k) => json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(k.public_key().modulus().big_endian_without_leading_zero()),
                "e": b64(k.public_key().exponent().big_endian_without_leading_zero()),
            }),
            Key::Ec(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
            Key::Ed(k) => {
                json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
        }
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub(crate) fn pem(&self) -> String {
        let der = match self {
            Key::Rsa(k) => k.public_key().as_der().expect("der").as_ref().to_vec(),
            Key::Ec(k) => k.public_key().as_der().expect("der").as_ref().to_vec(),
            Key::Ed(k) => k.public_key().as_der().expect("der").as_ref().to_vec(),
        };
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(der))
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).expect("sign");
                sig
            }
            Key::Ec(k) => k.sign(&rng, msg).expect("sign").as_ref().to_vec(),
            Key::Ed(k) => k.sign(msg).as_ref().to_vec(),
        }
    }

    /// A compact JWS of `claims` under `kid`.
    pub(crate) fn jwt(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }
}

/// A local identity provider: `/.well-known/openid-configuration` and `/jwks`, counting fetches.
pub(crate) struct Idp {
    pub(crate) url: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct IdpState {
    url: String,
    jwks: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl Idp {
    pub(crate) async fn start(keys: Vec<Value>) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let jwks = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let state = IdpState { url: url.clone(), jwks: jwks.clone(), fetches: fetches.clone() };
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(|State(s): State<IdpState>| async move {
                    axum::Json(json!({"issuer": s.url, "jwks_uri": format!("{}/jwks", s.url)}))
                }),
            )
            .route(
                "/jwks",
                get(|State(s): State<IdpState>| async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = s.jwks.lock().expect("jwks").clone();
                    axum::Json(json!({ "keys": keys }))
                }),
            )
            .with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("idp");
        });
        Idp { url, jwks, fetches, task }
    }

    pub(crate) fn publish(&self, jwk: Value) {
        self.jwks.lock().expect("jwks").push(jwk);
    }

    pub(crate) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn write(s: &Server, token: &str, path: &str, body: Value) -> Value {
    let (code, b) = s.call("POST", path, Some(token), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
    b
}

/// Mounts kv v2 at `secret/` with `secret/data/ci/deploy`, readable under the policy `ci`.
async fn secret_for_ci(s: &Server, root: &str) {
    write(s, root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    write(
        s,
        root,
        "sys/policies/acl/ci",
        json!({"policy": "path \"secret/data/ci/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    write(s, root, "secret/data/ci/deploy", json!({"data": {"key": "deploy-key-1"}})).await;
}

async fn login(s: &Server, mount: &str, body: Value) -> (u16, Value) {
    s.call("POST", &format!("auth/{mount}/login"), None, Some(body)).await
}

/// Asserts a refused login: 400 and a message containing `want`.
async fn refused(s: &Server, role: &str, jwt: &str, want: &str) {
    let (code, b) = login(s, "jwt", json!({"role": role, "jwt": jwt})).await;
    assert_eq!(code, 400, "{want}: {b}");
    let msg = b["errors"][0].as_str().unwrap_or_default();
    assert!(msg.contains(want), "expected {want:?} in {msg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_logins_refusals_rotation_and_an_idp_outage() {
    let (rsa, ec, ed) = (Key::rsa(), Key::ec(), Key::ed());
    let idp = Idp::start(vec![rsa.jwk("rsa-1"), ec.jwk("ec-1"), ed.jwk("ed-1")]).await;
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    secret_for_ci(&s, &root).await;
    let audit = dir.path().join("audit.log");
    write(
        &s,
        &root,
        "sys/audit/file",
        json!({"type": "file", "options": {"file_path": audit.display().to_string()}}),
    )
    .await;

    // Admin set-up, as docs/auth.md shows it, through the CLI.
    ok(s.cli(Some(&root), &["auth", "enable", "jwt"]));
    ok(s.cli(
        Some(&root),
        &[
            "write",
            "auth/jwt/config",
            &format!("jwks_url={}/jwks", idp.url),
            "bound_issuer=https://ci.example.com",
        ],
    ));
    let fetched_at_config = idp.fetches();
    assert_eq!(fetched_at_config, 1, "the JWKS URL is checked when the config is written");
    write(
        &s,
        &root,
        "auth/jwt/role/deploy",
        json!({
            "bound_audiences": ["coffer"],
            "bound_claims_type": "glob",
            "bound_claims": {"repository": "acme/*", "ref": "refs/heads/main"},
            "user_claim": "repository",
            "claim_mappings": {"ref": "git_ref", "run_id": "run"},
            "token_policies": ["ci"],
            "token_ttl": "5m",
        }),
    )
    .await;
    let (code, role) = s.call("GET", "auth/jwt/role/deploy", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(role["data"]["bound_audiences"], json!(["coffer"]));
    assert_eq!(role["data"]["token_policies"], json!(["ci"]));
    assert_eq!(role["data"]["role_type"], "jwt");

    let t = now();
    let claims = |over: Value| {
        let mut c = json!({
            "iss": "https://ci.example.com", "aud": "coffer", "sub": "job-1",
            "repository": "acme/web", "ref": "refs/heads/main", "run_id": 42,
            "iat": t, "nbf": t, "exp": t + 300,
        });
        for (k, v) in over.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };

    // RS256 through the CLI: the token it stores reads the secret.
    let jwt = rsa.jwt(Some("rsa-1"), &claims(json!({})));
    let out = ok(s.cli(
        None,
        &["login", "-method=jwt", "-format=json", "role=deploy", &format!("jwt={jwt}")],
    ));
    let out: Value = serde_json::from_str(&out).expect("login json");
    assert_eq!(out["auth"]["policies"], json!(["ci", "default"]));
    assert_eq!(out["auth"]["lease_duration"], 300);
    assert_eq!(
        out["auth"]["metadata"],
        json!({"role": "deploy", "git_ref": "refs/heads/main", "run": "42"})
    );
    let key = ok(s.cli(None, &["kv", "get", "-field=key", "secret/ci/deploy"]));
    assert_eq!(key.trim(), "deploy-key-1");
    let token = out["auth"]["client_token"].as_str().expect("token");
    let (_, me) = s.call("GET", "auth/token/lookup-self", Some(token), None).await;
    assert_eq!(me["data"]["display_name"], "jwt-acme/web");
    assert_eq!(me["data"]["path"], "auth/jwt/login");

    // ES256 through vaultrs, the third-party client.
    let client = VaultClient::new(
        VaultClientSettingsBuilder::default().address(&s.addr).build().expect("settings"),
    )
    .expect("client");
    let jwt = ec.jwt(Some("ec-1"), &claims(json!({"aud": ["other", "coffer"]})));
    let auth = vaultrs::auth::oidc::login(&client, "jwt", &jwt, Some("deploy".into()))
        .await
        .expect("vaultrs jwt login");
    assert_eq!(auth.policies, vec!["ci".to_owned(), "default".to_owned()]);
    assert_eq!(auth.lease_duration, 300);

    // EdDSA over plain HTTP, signed without a kid.
    let (code, b) =
        login(&s, "jwt", json!({"role": "deploy", "jwt": ed.jwt(None, &claims(json!({})))})).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(fetched_at_config, idp.fetches(), "known keys are served from the cache");

    // Every refusal the method owes, each with Vault's 400 and a message naming the cause.
    refused(&s, "deploy", &rsa.jwt(Some("rsa-1"), &claims(json!({"exp": t - 600}))), "expired")
        .await;
    refused(
        &s,
        "deploy",
        &rsa.jwt(Some("rsa-1"), &claims(json!({"aud": "elsewhere"}))),
        "audience",
    )
    .await;
    refused(
        &s,
        "deploy",
        &rsa.jwt(Some("rsa-1"), &claims(json!({"iss": "https://evil"}))),
        "issuer",
    )
    .await;
    refused(
        &s,
        "deploy",
        &rsa.jwt(Some("rsa-1"), &claims(json!({"repository": "evil/web"}))),
        "\"repository\" does not match",
    )
    .await;
    let stranger = Key::rsa();
    refused(&s, "deploy", &stranger.jwt(Some("rsa-9"), &claims(json!({}))), "failed to verify")
        .await;
    // A key the provider publishes under a kid, misused by a token claiming it.
    refused(&s, "deploy", &stranger.jwt(Some("rsa-1"), &claims(json!({}))), "failed to verify")
        .await;
    let no_alg = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(json!({})).to_string().as_bytes())
    );
    refused(&s, "deploy", &no_alg, "unsupported signing algorithm \"none\"").await;
    // HS256 "signed" with the public key as the HMAC secret: the alg confusion attack.
    let hs_input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","kid":"rsa-1"}"#),
        b64(claims(json!({})).to_string().as_bytes())
    );
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, rsa.pem().as_bytes()),
        hs_input.as_bytes(),
    );
    refused(
        &s,
        "deploy",
        &format!("{hs_input}.{}", b64(mac.as_ref())),
        "unsupported signing algorithm",
    )
    .await;
    // A genuine token with its payload edited.
    let good = rsa.jwt(Some("rsa-1"), &claims(json!({})));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims(json!({"repository": "acme/admin"})).to_string().as_bytes()),
        parts[2]
    );
    refused(&s, "deploy", &forged, "failed to verify").await;
    refused(&s, "nope", &good, "role \"nope\" could not be found").await;
    let (code, b) = login(&s, "jwt", json!({"jwt": good})).await;
    assert_eq!(code, 400, "no role and no default_role: {b}");

    // Unknown kids refetch the JWKS, but at most once a second, however many bogus tokens come.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = idp.fetches();
    let started = std::time::Instant::now();
    for _ in 0..6 {
        refused(
            &s,
            "deploy",
            &stranger.jwt(Some("unknown"), &claims(json!({}))),
            "failed to verify",
        )
        .await;
    }
    let spent = idp.fetches() - before;
    let allowed = 1 + started.elapsed().as_secs() as usize;
    assert!(
        (1..=allowed).contains(&spent),
        "6 unknown-kid logins in {:?} fetched the JWKS {spent} times",
        started.elapsed()
    );

    // Rotation: the provider publishes a new key; its first token triggers a refetch.
    let next = Key::ec();
    idp.publish(next.jwk("ec-2"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, b) = login(
        &s,
        "jwt",
        json!({"role": "deploy", "jwt": next.jwt(Some("ec-2"), &claims(json!({})))}),
    )
    .await;
    assert_eq!(code, 200, "a rotated-in key logs in: {b}");

    // The provider goes down: tokens signed by keys already fetched still log in.
    idp.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, b) = login(
        &s,
        "jwt",
        json!({"role": "deploy", "jwt": rsa.jwt(Some("rsa-1"), &claims(json!({})))}),
    )
    .await;
    assert_eq!(code, 200, "cached keys outlive the provider: {b}");

    // No JWT reaches the audit log in clear; refusals are audited with their error.
    let log = std::fs::read_to_string(&audit).expect("audit");
    assert!(!log.contains(&good), "a JWT is in the audit log in clear");
    assert!(!log.contains(&jwt), "a JWT is in the audit log in clear");
    assert!(
        log.lines().any(|l| l.contains("auth/jwt/login") && l.contains("token is expired")),
        "the expired-token refusal is audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_keys_oidc_discovery_and_config_validation() {
    let (ed, ec) = (Key::ed(), Key::ec());
    let idp = Idp::start(vec![ec.jwk("ec-1")]).await;
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    secret_for_ci(&s, &root).await;
    let t = now();

    // Static PEM keys on a jwt mount, with a default role.
    write(&s, &root, "sys/auth/jwt", json!({"type": "jwt"})).await;
    for (body, want) in [
        (json!({"jwt_validation_pubkeys": ["nope"]}), "jwt_validation_pubkeys[0]"),
        (json!({}), "exactly one of"),
        (
            json!({"jwt_validation_pubkeys": [ed.pem()], "jwks_url": format!("{}/jwks", idp.url)}),
            "exactly one of",
        ),
        (json!({"jwks_url": "http://127.0.0.1:9/jwks"}), "error checking jwks URL"),
        (json!({"jwt_validation_pubkeys": [ed.pem()], "jwt_supported_algs": ["HS256"]}), "HS256"),
    ] {
        let (code, b) = s.call("POST", "auth/jwt/config", Some(&root), Some(body)).await;
        assert_eq!(code, 400, "{b}");
        assert!(b["errors"][0].as_str().unwrap_or_default().contains(want), "{want}: {b}");
    }
    write(
        &s,
        &root,
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [ed.pem()], "default_role": "svc", "jwt_supported_algs": ["EdDSA"]}),
    )
    .await;
    for (body, want) in [
        (json!({"role_type": "oidc", "bound_subject": "x"}), "not supported"),
        (json!({"token_policies": ["ci"]}), "at least one bound constraint"),
        (json!({"bound_subject": "x", "bound_claims_type": "regex"}), "bound_claims_type"),
        (json!({"bound_subject": "x", "claim_mappings": {"a": "role"}}), "reserved"),
    ] {
        let (code, b) = s.call("POST", "auth/jwt/role/svc", Some(&root), Some(body)).await;
        assert_eq!(code, 400, "{b}");
        assert!(b["errors"][0].as_str().unwrap_or_default().contains(want), "{want}: {b}");
    }
    write(
        &s,
        &root,
        "auth/jwt/role/svc",
        json!({"bound_subject": "system:svc", "token_policies": "ci", "expiration_leeway": -1, "clock_skew_leeway": -1}),
    )
    .await;
    let claims = json!({"sub": "system:svc", "exp": t + 60});
    let (code, b) = login(&s, "jwt", json!({"jwt": ed.jwt(None, &claims)})).await;
    assert_eq!(code, 200, "the default role logs in: {b}");
    let token = b["auth"]["client_token"].as_str().expect("token");
    let (code, _) = s.call("GET", "secret/data/ci/deploy", Some(token), None).await;
    assert_eq!(code, 200);
    for (jwt, want) in [
        (ed.jwt(None, &json!({"sub": "system:other", "exp": t + 60})), "subject"),
        (ed.jwt(None, &json!({"sub": "system:svc", "exp": t - 2})), "expired"),
        (ed.jwt(None, &json!({"sub": "system:svc"})), "no expiration"),
        (ec.jwt(None, &claims), "jwt_supported_algs"),
    ] {
        let (code, b) = login(&s, "jwt", json!({"jwt": jwt})).await;
        assert_eq!(code, 400, "{want}: {b}");
        assert!(b["errors"][0].as_str().unwrap_or_default().contains(want), "{want}: {b}");
    }

    // OIDC discovery on a mount of type oidc: the issuer must be the discovery URL.
    write(&s, &root, "sys/auth/oidc", json!({"type": "oidc"})).await;
    write(&s, &root, "auth/oidc/config", json!({"oidc_discovery_url": idp.url})).await;
    write(
        &s,
        &root,
        "auth/oidc/role/app",
        json!({"bound_audiences": "coffer", "token_policies": "ci", "user_claim": "email"}),
    )
    .await;
    let good = json!({"iss": idp.url, "aud": "coffer", "email": "app@example.com", "exp": t + 60});
    let jwt = ec.jwt(Some("ec-1"), &good);
    let out =
        s.cli(None, &["login", "-method=oidc", "-no-store", "role=app", &format!("jwt={jwt}")]);
    let text = ok(out);
    assert!(text.contains("token"), "{text}");
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://elsewhere.example.com");
    let (code, b) =
        login(&s, "oidc", json!({"role": "app", "jwt": ec.jwt(Some("ec-1"), &wrong_iss)})).await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().unwrap_or_default().contains("issuer"), "{b}");
    let mut no_email = good;
    no_email.as_object_mut().expect("obj").remove("email");
    let relogin = s.cli(
        None,
        &["login", "-method=oidc", "role=app", &format!("jwt={}", ec.jwt(Some("ec-1"), &no_email))],
    );
    assert!(!relogin.status.success());
    assert!(stderr(&relogin).contains("claim \"email\" not found"), "{}", stderr(&relogin));

    let (code, c) = s.call("GET", "auth/oidc/config", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(c["data"]["oidc_discovery_url"], idp.url);
}
