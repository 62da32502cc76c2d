//! TLS certificate auth over real mTLS: a listener with no client CA of its own asks for a
//! certificate, and the cert method decides trust against its registered CA and pinned leaf,
//! with constraints on common name, OU and URI SANs; through the CLI, `vaultrs` and raw HTTPS.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use serde_json::{Value, json};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, ok, stderr, tempdir};

pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pem: String,
}

pub(crate) fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().expect("ca key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.self_signed(&key).expect("ca cert");
    Ca { pem: cert.pem(), issuer: Issuer::new(p, key) }
}

/// A client certificate and key as one PEM (what reqwest's Identity reads) and as files.
pub(crate) struct Client {
    cert_pem: String,
    key_pem: String,
}

impl Client {
    fn identity(&self) -> Vec<u8> {
        format!("{}{}", self.cert_pem, self.key_pem).into_bytes()
    }

    pub(crate) fn files(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&c, &self.cert_pem).expect("write");
        std::fs::write(&k, &self.key_pem).expect("write");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (c, k)
    }
}

pub(crate) fn client(
    signer: Option<&Ca>,
    cn: &str,
    ou: Option<&str>,
    uri: Option<&str>,
    edit: impl FnOnce(&mut CertificateParams),
) -> Client {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![cn.to_owned()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(ou) = ou {
        p.distinguished_name.push(DnType::OrganizationalUnitName, ou);
    }
    if let Some(uri) = uri {
        p.subject_alt_names.push(SanType::URI(uri.try_into().expect("uri")));
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    edit(&mut p);
    let cert = match signer {
        Some(ca) => p.signed_by(&key, &ca.issuer).expect("cert"),
        None => p.self_signed(&key).expect("cert"),
    };
    Client { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// A TLS server with no `tls_client_ca_file`: it asks any client for a certificate.
pub(crate) fn start(dir: &Path) -> (Server, PathBuf) {
    let server_ca = ca("Coffer Server CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &server_ca.issuer)
        .expect("server cert");
    let (ca_file, cert_file, key_file) =
        (dir.join("server-ca.pem"), dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(&ca_file, &server_ca.pem).expect("write");
    std::fs::write(&cert_file, cert.pem()).expect("write");
    std::fs::write(&key_file, key.serialize_pem()).expect("write");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\n",
        crate::common::storage_block(dir, crate::common::Storage::Default),
        cert_file.display(),
        key_file.display()
    );
    let mut s = Server::start_with(dir, &config, "https");
    s.ca = Some(ca_file.clone());
    (s, ca_file)
}

async fn login_with(s: &Server, ca: &Path, id: Option<&Client>, body: Value) -> (u16, Value) {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([
            reqwest::Certificate::from_pem(&std::fs::read(ca).expect("ca")).expect("ca")
        ]);
    if let Some(id) = id {
        b = b.identity(reqwest::Identity::from_pem(&id.identity()).expect("identity"));
    }
    let resp = b
        .build()
        .expect("client")
        .post(format!("{}/v1/auth/cert/login", s.addr))
        .json(&body)
        .send()
        .await
        .expect("send");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn mtls_logins_against_a_trusted_ca_and_a_pinned_leaf() {
    let dir = tempdir();
    let (s, server_ca) = start(dir.path());
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    for (path, body) in [
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        (
            "sys/policies/acl/web",
            json!({"policy": "path \"secret/data/web/*\" { capabilities = [\"read\"] }"}),
        ),
        ("secret/data/web/db", json!({"data": {"password": "pw-9"}})),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert!(code == 200 || code == 204, "{path}: {b}");
    }

    // Admin: trust the workload CA for web-tier names in OU payments; pin one laptop's cert.
    let workload_ca = ca("Workload CA");
    let laptop = client(None, "alice-laptop", None, None, |_| {});
    let ca_file = dir.path().join("workload-ca.pem");
    std::fs::write(&ca_file, &workload_ca.pem).expect("write");
    ok(s.cli(Some(&root), &["auth", "enable", "cert"]));
    ok(s.cli(
        Some(&root),
        &[
            "write",
            "auth/cert/certs/web",
            &format!("certificate=@{}", ca_file.display()),
            "allowed_common_names=web*.prod.svc",
            "allowed_organizational_units=payments",
            "allowed_uri_sans=spiffe://acme/ns/prod/*",
            "token_policies=web",
            "token_ttl=20m",
        ],
    ));
    let (code, b) = s
        .call(
            "POST",
            "auth/cert/certs/laptop",
            Some(&root),
            Some(json!({"certificate": laptop.cert_pem, "token_policies": "web", "display_name": "alice"})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s
        .call("POST", "auth/cert/certs/bad", Some(&root), Some(json!({"certificate": "nope"})))
        .await;
    assert_eq!(code, 400, "{b}");
    let (code, list) = s.call("LIST", "auth/cert/certs", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(list["data"]["keys"], json!(["laptop", "web"]));

    // The workload logs in through the CLI with its certificate and reads its secret.
    let web = client(
        Some(&workload_ca),
        "web-1.prod.svc",
        Some("payments"),
        Some("spiffe://acme/ns/prod/sa/web"),
        |_| {},
    );
    let (cert_file, key_file) = web.files(dir.path(), "web");
    let tls_args = [
        format!("-ca-cert={}", server_ca.display()),
        format!("-client-cert={}", cert_file.display()),
        format!("-client-key={}", key_file.display()),
    ];
    let mut args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    args.extend(["login", "-method=cert", "-format=json"]);
    let out: Value = serde_json::from_str(&ok(s.cli(None, &args))).expect("json");
    assert_eq!(out["auth"]["policies"], json!(["default", "web"]));
    assert_eq!(out["auth"]["lease_duration"], 1200);
    assert_eq!(out["auth"]["metadata"]["cert_name"], "web");
    assert_eq!(out["auth"]["metadata"]["common_name"], "web-1.prod.svc");
    // The login's identity: an entity whose alias on this mount is the common name.
    let entity = out["auth"]["entity_id"].as_str().expect("entity_id");
    let (_, e) = s.call("GET", &format!("identity/entity/id/{entity}"), Some(&root), None).await;
    assert_eq!(e["data"]["aliases"][0]["name"], "web-1.prod.svc");
    assert_eq!(e["data"]["aliases"][0]["mount_type"], "cert");
    let mut args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    args.extend(["kv", "get", "-field=password", "secret/web/db"]);
    assert_eq!(ok(s.cli(None, &args)).trim(), "pw-9");

    // vaultrs, naming the entry as its cert login does.
    let vault = VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(&s.addr)
            .ca_certs(vec![server_ca.display().to_string()])
            .identity(Some(reqwest::Identity::from_pem(&web.identity()).expect("identity")))
            .build()
            .expect("settings"),
    )
    .expect("client");
    let auth = vaultrs::auth::cert::login(&vault, "cert", "web").await.expect("vaultrs cert login");
    assert_eq!(auth.policies, vec!["default".to_owned(), "web".to_owned()]);

    // The pinned self-signed leaf logs in as its entry; its display name shows on the token.
    let (code, b) = login_with(&s, &server_ca, Some(&laptop), json!({})).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["auth"]["metadata"]["cert_name"], "laptop");
    let token = b["auth"]["client_token"].as_str().expect("token");
    let (_, me) = s.call("GET", "auth/token/lookup-self", Some(token), None).await;
    assert_eq!(me["data"]["display_name"], "cert-alice");

    // Refusals, all with Vault's one message.
    let refused = |what: &'static str| {
        move |(code, b): (u16, Value)| {
            assert_eq!(code, 400, "{what}: {b}");
            assert_eq!(
                b["errors"][0], "invalid certificate or no client certificate supplied",
                "{what}"
            );
        }
    };
    let wrong_cn = client(
        Some(&workload_ca),
        "db-1.prod.svc",
        Some("payments"),
        Some("spiffe://acme/ns/prod/sa/db"),
        |_| {},
    );
    refused("common name")(login_with(&s, &server_ca, Some(&wrong_cn), json!({})).await);
    let wrong_ou = client(
        Some(&workload_ca),
        "web-2.prod.svc",
        Some("marketing"),
        Some("spiffe://acme/ns/prod/sa/web"),
        |_| {},
    );
    refused("organizational unit")(login_with(&s, &server_ca, Some(&wrong_ou), json!({})).await);
    let other_ca = ca("Some Other CA");
    let stranger = client(
        Some(&other_ca),
        "web-1.prod.svc",
        Some("payments"),
        Some("spiffe://acme/ns/prod/sa/web"),
        |_| {},
    );
    refused("untrusted CA")(login_with(&s, &server_ca, Some(&stranger), json!({})).await);
    let expired = client(
        Some(&workload_ca),
        "web-3.prod.svc",
        Some("payments"),
        Some("spiffe://acme/ns/prod/sa/web"),
        |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        },
    );
    refused("expired")(login_with(&s, &server_ca, Some(&expired), json!({})).await);
    let server_only = client(
        Some(&workload_ca),
        "web-4.prod.svc",
        Some("payments"),
        Some("spiffe://acme/ns/prod/sa/web"),
        |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        },
    );
    refused("no client-auth usage")(
        login_with(&s, &server_ca, Some(&server_only), json!({})).await,
    );
    refused("wrong entry named")(
        login_with(&s, &server_ca, Some(&web), json!({"name": "laptop"})).await,
    );
    let (code, b) = login_with(&s, &server_ca, None, json!({})).await;
    assert_eq!(code, 400, "{b}");
    assert!(
        b["errors"][0].as_str().unwrap_or_default().contains("client certificate must be supplied")
    );

    // A client certificate never authenticates anything but a cert login.
    let (code, _) = {
        let c = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(
                &std::fs::read(&server_ca).expect("ca"),
            )
            .expect("ca")])
            .identity(reqwest::Identity::from_pem(&web.identity()).expect("identity"))
            .build()
            .expect("client");
        let r = c.get(format!("{}/v1/secret/data/web/db", s.addr)).send().await.expect("send");
        (r.status().as_u16(), ())
    };
    assert_eq!(code, 403);
    let cli_without_cert =
        s.cli(None, &[&format!("-ca-cert={}", server_ca.display()), "login", "-method=cert"]);
    assert!(!cli_without_cert.status.success());
    assert!(
        stderr(&cli_without_cert).contains("client certificate must be supplied"),
        "{}",
        stderr(&cli_without_cert)
    );
}

/// `auth/cert/config` with Vault's fields and checks: zero values until written, only the
/// fields sent change, `ocsp_cache_size` within 2..=100000, and a field Coffer does not know is
/// a 400 naming it; through HTTP and the CLI.
#[tokio::test]
async fn the_cert_config_endpoint_reads_and_writes_vaults_fields() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, b) =
        s.call("POST", "sys/auth/cert", Some(&root), Some(json!({"type": "cert"}))).await;
    assert_eq!(code, 204, "{b}");
    let read = || async {
        let (code, b) = s.call("GET", "auth/cert/config", Some(&root), None).await;
        assert_eq!(code, 200, "{b}");
        b["data"].clone()
    };
    assert_eq!(
        read().await,
        json!({"disable_binding": false, "enable_identity_alias_metadata": false, "ocsp_cache_size": 0})
    );
    for (body, want) in [
        (json!({"ocsp_cache_size": 1}), "invalid cache size, must be >= 2 and <= 100000"),
        (json!({"ocsp_cache_size": 100_001}), "invalid cache size, must be >= 2 and <= 100000"),
        (json!({"ocsp_cache_size": "x"}), "\"ocsp_cache_size\" must be a non-negative integer"),
        (json!({"disable_binding": "maybe"}), "\"disable_binding\" must be a boolean"),
        (json!({"role_cache_size": -2}), "role_cache_size must be -1 or more"),
        (
            json!({"disable_binding": true, "bogus": 1}),
            "unknown fields for auth/cert/config: bogus",
        ),
    ] {
        let (code, b) = s.call("POST", "auth/cert/config", Some(&root), Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {b}");
        let msg = b["errors"][0].as_str().unwrap_or_default();
        assert!(msg.starts_with(want), "{body}: {msg}");
    }
    // Nothing was stored by the refused writes.
    assert_eq!(read().await["disable_binding"], false);
    let (code, b) = s
        .call(
            "POST",
            "auth/cert/config",
            Some(&root),
            Some(json!({"disable_binding": true, "ocsp_cache_size": 500, "role_cache_size": -1})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    ok(s.cli(Some(&root), &["write", "auth/cert/config", "enable_identity_alias_metadata=true"]));
    assert_eq!(
        read().await,
        json!({"disable_binding": true, "enable_identity_alias_metadata": true, "ocsp_cache_size": 500})
    );
    let out = ok(s.cli(Some(&root), &["read", "-format=json", "auth/cert/config"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["data"]["ocsp_cache_size"], 500);

    // Through vaultrs, which sends `role_cache_size` too.
    let client = VaultClient::new(
        VaultClientSettingsBuilder::default()
            .address(&s.addr)
            .token(&root)
            .build()
            .expect("settings"),
    )
    .expect("client");
    let mut opts = vaultrs::api::auth::cert::requests::ConfigureTlsCertificateMethod::builder();
    opts.disable_binding(false).ocsp_cache_size(64u64).role_cache_size(200u64);
    vaultrs::auth::cert::configure_tls_certificate_method(&client, "cert", Some(&mut opts))
        .await
        .expect("vaultrs configure");
    assert_eq!(
        read().await,
        json!({"disable_binding": false, "enable_identity_alias_metadata": true, "ocsp_cache_size": 64})
    );
}
