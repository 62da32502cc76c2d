//! Real TLS on the listener: server certificates from a test CA, the CLI trusting that CA, and
//! client certificates (mTLS) in `require` and `request` modes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

use crate::common::{Server, ok, stderr, tempdir};

pub(crate) struct Pki {
    pub(crate) ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    pub(crate) client_cert: std::path::PathBuf,
    pub(crate) client_key: std::path::PathBuf,
}

pub(crate) fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Coffer Test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");

    let client_key = KeyPair::generate().expect("key");
    let mut cp = CertificateParams::new(vec!["workload.example".to_owned()]).expect("params");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    cp.distinguished_name.push(rcgen::DnType::CommonName, "workload");
    let client = cp.signed_by(&client_key, &issuer).expect("client cert");

    let p = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
    };
    std::fs::write(&p.ca, ca_cert.pem()).expect("write");
    std::fs::write(&p.cert, server.pem()).expect("write");
    std::fs::write(&p.key, server_key.serialize_pem()).expect("write");
    std::fs::set_permissions(&p.key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&p.client_cert, client.pem()).expect("write");
    std::fs::write(&p.client_key, client_key.serialize_pem()).expect("write");
    p
}

pub(crate) fn tls_config(dir: &Path, p: &Pki, extra: &str) -> String {
    format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n{extra}}}\n",
        crate::common::storage_block(dir, crate::common::Storage::Default),
        p.cert.display(),
        p.key.display()
    )
}

#[tokio::test]
async fn the_server_speaks_tls_and_the_cli_trusts_the_given_ca() {
    let dir = tempdir();
    let p = pki(dir.path());
    let mut s = Server::start_with(dir.path(), &tls_config(dir.path(), &p, ""), "https");
    s.ca = Some(p.ca.clone());
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    ok(s.cli(Some(&root), &["secrets", "enable", "-path=secret", "kv"]));
    ok(s.cli(Some(&root), &["write", "secret/tls", "v=over-tls"]));
    assert_eq!(ok(s.cli(Some(&root), &["read", "-field=v", "secret/tls"])).trim(), "over-tls");

    // Without the CA, the certificate is not trusted and the CLI says so.
    let untrusted = std::process::Command::new(crate::common::BIN)
        .args(["read", "secret/tls"])
        .env("COFFER_ADDR", &s.addr)
        .env("COFFER_TOKEN", &root)
        .env_remove("COFFER_CACERT")
        .env_remove("VAULT_CACERT")
        .output()
        .expect("run");
    assert!(!untrusted.status.success());
    assert!(stderr(&untrusted).to_lowercase().contains("certificate"), "{}", stderr(&untrusted));

    // Plain HTTP to a TLS listener gets nowhere.
    let plain = reqwest::get(s.addr.replace("https://", "http://") + "/v1/sys/health").await;
    assert!(plain.is_err() || !plain.expect("resp").status().is_success());
}

#[tokio::test]
async fn mtls_require_mode_refuses_clients_without_a_certificate() {
    let dir = tempdir();
    let p = pki(dir.path());
    let extra = format!(
        "  tls_client_ca_file = \"{}\"\n  tls_require_and_verify_client_cert = true\n",
        p.ca.display()
    );
    let s = Server::start_with(dir.path(), &tls_config(dir.path(), &p, &extra), "https");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&p.ca).expect("ca")).expect("ca");
    let anonymous =
        reqwest::Client::builder().tls_certs_only([ca.clone()]).build().expect("client");
    assert!(
        anonymous.get(format!("{}/v1/sys/health", s.addr)).send().await.is_err(),
        "no certificate, no connection"
    );

    let mut pem = std::fs::read(&p.client_cert).expect("cert");
    pem.extend(std::fs::read(&p.client_key).expect("key"));
    let with_cert = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(&pem).expect("identity"))
        .build()
        .expect("client");
    let resp =
        with_cert.get(format!("{}/v1/sys/health", s.addr)).send().await.expect("mTLS connection");
    assert_eq!(resp.status().as_u16(), 501, "reached the server (uninitialized)");

    // The CLI presents a client certificate from COFFER_CLIENT_CERT / COFFER_CLIENT_KEY.
    let out = std::process::Command::new(crate::common::BIN)
        .args(["status", "-format=json"])
        .env("COFFER_ADDR", &s.addr)
        .env("COFFER_CACERT", &p.ca)
        .env("COFFER_CLIENT_CERT", &p.client_cert)
        .env("COFFER_CLIENT_KEY", &p.client_key)
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"initialized\": false"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn mtls_request_mode_accepts_clients_with_or_without_a_certificate() {
    let dir = tempdir();
    let p = pki(dir.path());
    let extra = format!("  tls_client_ca_file = \"{}\"\n", p.ca.display());
    let s = Server::start_with(dir.path(), &tls_config(dir.path(), &p, &extra), "https");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&p.ca).expect("ca")).expect("ca");
    let anonymous = reqwest::Client::builder().tls_certs_only([ca]).build().expect("client");
    let resp = anonymous
        .get(format!("{}/v1/sys/health", s.addr))
        .send()
        .await
        .expect("connects without a cert");
    assert_eq!(resp.status().as_u16(), 501);
}

#[test]
fn a_private_key_readable_by_others_is_refused_at_start() {
    let dir = tempdir();
    let p = pki(dir.path());
    std::fs::set_permissions(&p.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(dir.path().join("c.hcl"), tls_config(dir.path(), &p, "")).expect("write");
    let out = std::process::Command::new(crate::common::BIN)
        .args(["server", "-config"])
        .arg(dir.path().join("c.hcl"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}
