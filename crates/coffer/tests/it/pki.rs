//! The PKI engine end to end: a root and an intermediate on two mounts, issuance and signing
//! under roles, certificates checked by `openssl verify`, revocation seen by `openssl crl` and
//! by `openssl ocsp` against Coffer's own responder (POST and GET), PEM/DER endpoints with their
//! content types and without a token, role refusals, leases, `no_store` writing nothing, a real
//! TLS handshake with an issued certificate, the `vaultrs` client, and private keys kept out of
//! storage, logs and audit.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{Server, tempdir};

async fn put(s: &Server, token: &str, path: &str, body: Value) -> Value {
    let (code, b) = s.call("POST", path, Some(token), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
    b
}

/// A raw GET: status, content type, body.
async fn raw(s: &Server, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut rb = s.http().get(format!("{}/v1/{path}", s.addr));
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, resp.bytes().await.expect("body").to_vec())
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A root on `pki/`, an intermediate signed by it on `pki_int/`, a role `web` on the latter.
async fn two_tier(s: &Server, root: &str) -> (String, String) {
    for m in ["pki", "pki_int"] {
        put(s, root, &format!("sys/mounts/{m}"), json!({"type": "pki"})).await;
    }
    let r = put(
        s,
        root,
        "pki/root/generate/internal",
        json!({"common_name": "Coffer Test Root", "key_type": "ec", "key_bits": 384, "ttl": "768h", "issuer_name": "root-2026"}),
    )
    .await;
    let root_pem = r["data"]["certificate"].as_str().expect("root").to_owned();
    assert_eq!(r["data"]["issuer_name"], "root-2026");
    assert!(r["data"].get("private_key").is_none(), "internal keys stay inside");
    let csr = put(
        s,
        root,
        "pki_int/intermediate/generate/internal",
        json!({"common_name": "Coffer Test Intermediate", "key_type": "rsa", "key_bits": 2048}),
    )
    .await;
    let signed = put(
        s,
        root,
        "pki/root/sign-intermediate",
        json!({"csr": csr["data"]["csr"], "common_name": "Coffer Test Intermediate", "ttl": "720h"}),
    )
    .await;
    let int_pem = signed["data"]["certificate"].as_str().expect("int").to_owned();
    let set = put(
        s,
        root,
        "pki_int/intermediate/set-signed",
        json!({"certificate": format!("{int_pem}\n{root_pem}")}),
    )
    .await;
    assert_eq!(set["data"]["imported_issuers"].as_array().expect("ids").len(), 1);
    put(
        s,
        root,
        "pki_int/config/urls",
        json!({"ocsp_servers": format!("{}/v1/pki_int/ocsp", s.addr), "crl_distribution_points": format!("{}/v1/pki_int/crl", s.addr)}),
    )
    .await;
    put(
        s,
        root,
        "pki_int/roles/web",
        json!({"allowed_domains": "example.com", "allow_subdomains": true, "key_type": "ec",
               "ttl": "1h", "max_ttl": "24h", "allowed_uri_sans": "spiffe://cluster.local/ns/*"}),
    )
    .await;
    (root_pem, int_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_verify_and_revocation_shows_in_crl_and_ocsp() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    let (root_pem, int_pem) = two_tier(&s, &root).await;
    let d = dir.path();
    std::fs::write(d.join("root.pem"), &root_pem).expect("write");
    std::fs::write(d.join("int.pem"), &int_pem).expect("write");

    let issued = put(
        &s,
        &root,
        "pki_int/issue/web",
        json!({"common_name": "api.example.com", "alt_names": "www.example.com",
               "uri_sans": "spiffe://cluster.local/ns/prod/sa/api", "ip_sans": "127.0.0.1"}),
    )
    .await;
    let data = &issued["data"];
    assert_eq!(data["private_key_type"], "ec");
    assert_eq!(data["ca_chain"].as_array().expect("chain").len(), 2, "intermediate and root");
    assert_eq!(data["issuing_ca"].as_str(), Some(int_pem.as_str()));
    let serial = data["serial_number"].as_str().expect("serial").to_owned();
    assert!(serial.contains(':'));
    std::fs::write(d.join("leaf.pem"), data["certificate"].as_str().expect("cert")).expect("write");
    let (ok, out) =
        openssl(&["verify", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"], d);
    assert!(ok && out.contains("leaf.pem: OK"), "{out}");
    let (_, text) = openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"], d);
    for want in [
        "DNS:api.example.com",
        "DNS:www.example.com",
        "URI:spiffe://cluster.local/ns/prod/sa/api",
        "IP Address:127.0.0.1",
        "TLS Web Server Authentication",
        "TLS Web Client Authentication",
        "OCSP - URI:",
        "/v1/pki_int/crl",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }

    // Good before revocation, through the POST responder openssl speaks.
    let url = format!("{}/v1/pki_int/ocsp", s.addr);
    std::fs::write(d.join("chain.pem"), format!("{int_pem}\n{root_pem}\n")).expect("write");
    let ocsp = |d: &Path| {
        openssl(
            &[
                "ocsp",
                "-issuer",
                "int.pem",
                "-cert",
                "leaf.pem",
                "-url",
                &url,
                "-CAfile",
                "chain.pem",
            ],
            d,
        )
    };
    let (ok, out) = ocsp(d);
    assert!(ok && out.contains("Response verify OK") && out.contains("leaf.pem: good"), "{out}");

    let rev = put(&s, &root, "pki_int/revoke", json!({"serial_number": serial})).await;
    assert!(rev["data"]["revocation_time"].as_u64().expect("time") > 0);
    let (ok, out) = ocsp(d);
    assert!(ok && out.contains("Response verify OK") && out.contains("leaf.pem: revoked"), "{out}");

    // GET with the base64 request in the path, URL-encoded (RFC 6960 appendix A.1). The nonce
    // makes each request differ: the one sent is the first whose base64 has `//`, which decoded
    // would be an empty path segment (about one request in forty has it).
    let b64 = (0..4000)
        .map(|_| {
            let (ok, out) = openssl(
                &["ocsp", "-issuer", "int.pem", "-cert", "leaf.pem", "-reqout", "req.der"],
                d,
            );
            assert!(ok, "{out}");
            let req = std::fs::read(d.join("req.der")).expect("req");
            base64::engine::general_purpose::STANDARD.encode(req)
        })
        .find(|b| b.contains("//"))
        .expect("a request whose base64 has //");
    let url_encoded = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let (code, ct, body) = raw(&s, &format!("pki_int/ocsp/{url_encoded}"), None).await;
    assert_eq!((code, ct.as_str()), (200, "application/ocsp-response"), "{b64}");
    std::fs::write(d.join("resp.der"), body).expect("write");
    let (ok, out) = openssl(
        &[
            "ocsp",
            "-respin",
            "resp.der",
            "-no_nonce",
            "-issuer",
            "int.pem",
            "-cert",
            "leaf.pem",
            "-CAfile",
            "chain.pem",
        ],
        d,
    );
    assert!(ok && out.contains("leaf.pem: revoked"), "{out}");

    // The CRL, without a token, in PEM and DER.
    let (code, ct, pem) = raw(&s, "pki_int/crl/pem", None).await;
    assert_eq!((code, ct.as_str()), (200, "application/x-pem-file"));
    std::fs::write(d.join("crl.pem"), &pem).expect("write");
    let (ok, out) =
        openssl(&["crl", "-in", "crl.pem", "-noout", "-text", "-CAfile", "chain.pem"], d);
    let hex = serial.replace(':', "").to_uppercase();
    assert!(ok && out.contains(&hex) && out.contains("verify OK"), "{hex} not in\n{out}");
    let (code, ct, der) = raw(&s, "pki_int/crl", None).await;
    assert_eq!((code, ct.as_str()), (200, "application/pkix-crl"));
    std::fs::write(d.join("crl.der"), &der).expect("write");
    let (ok, out) = openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], d);
    assert!(ok && out.contains(&hex), "{out}");

    // A certificate of another CA is unknown to this responder: unauthorized.
    let (ok, out) = openssl(
        &["ocsp", "-issuer", "root.pem", "-cert", "int.pem", "-url", &url, "-CAfile", "chain.pem"],
        d,
    );
    assert!(out.contains("unauthorized") || !ok, "{out}");
}

#[tokio::test]
async fn public_ca_reads_answer_raw_bodies_without_a_token() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    let (root_pem, int_pem) = two_tier(&s, &root).await;
    let (code, ct, body) = raw(&s, "pki/ca/pem", None).await;
    assert_eq!((code, ct.as_str()), (200, "application/pem-certificate-chain"));
    assert_eq!(String::from_utf8(body).expect("utf8").trim(), root_pem.trim());
    let (code, ct, der) = raw(&s, "pki/ca", None).await;
    assert_eq!((code, ct.as_str()), (200, "application/pkix-cert"));
    assert_eq!(der[0], 0x30, "DER");
    let (code, _, chain) = raw(&s, "pki_int/ca_chain", None).await;
    let chain = String::from_utf8(chain).expect("utf8");
    assert_eq!(code, 200);
    assert!(chain.starts_with(int_pem.trim()) && chain.contains(root_pem.trim()));
    let (code, b) = s.call("GET", "pki/cert/ca", None, None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["certificate"].as_str(), Some(root_pem.as_str()));
    let (code, b) = s.call("LIST", "pki/issuers", None, None).await;
    assert_eq!(code, 200, "issuers are listed without a token, as in Vault: {b}");
    let (code, b) = s
        .call(
            "GET",
            &format!("pki/issuer/{}/json", b["data"]["keys"][0].as_str().expect("id")),
            None,
            None,
        )
        .await;
    assert_eq!((code, b["data"]["certificate"].as_str()), (200, Some(root_pem.as_str())));
    // Everything else needs a token.
    let (code, _) = s.call("GET", "pki/issuer/default", None, None).await;
    assert_eq!(code, 403);
    let (code, _) = s.call("GET", "pki/config/crl", None, None).await;
    assert_eq!(code, 403);
    let (code, _) = s.call("POST", "pki/issue/web", None, Some(json!({}))).await;
    assert_eq!(code, 403);
    let (code, b) = s.call("LIST", "pki/issuers", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    let id = b["data"]["keys"][0].as_str().expect("id").to_owned();
    assert_eq!(b["data"]["key_info"][&id]["issuer_name"], "root-2026");
    assert_eq!(b["data"]["key_info"][&id]["is_default"], true);
    let (code, b) = s.call("GET", "pki/issuer/root-2026", Some(&root), None).await;
    assert_eq!((code, b["data"]["issuer_id"].as_str()), (200, Some(id.as_str())));
    let (code, b) = s
        .call(
            "POST",
            "pki/issuer/default",
            Some(&root),
            Some(json!({"leaf_not_after_behavior": "truncate"})),
        )
        .await;
    assert_eq!((code, &b["data"]["leaf_not_after_behavior"]), (200, &json!("truncate")));
}

#[tokio::test]
async fn role_bounds_are_refused_with_400_naming_the_problem() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    two_tier(&s, &root).await;
    for (body, want) in [
        (json!({"common_name": "evil.com"}), "common name evil.com not allowed by this role"),
        (
            json!({"common_name": "a.example.com", "alt_names": "x.evil.com"}),
            "x.evil.com not allowed",
        ),
        (
            json!({"common_name": "a.example.com", "uri_sans": "spiffe://elsewhere/x"}),
            "not valid for this role: spiffe://elsewhere/x",
        ),
        (json!({"common_name": "a.example.com", "ttl": "not-a-duration"}), "ttl"),
        (
            json!({"common_name": "a.example.com", "format": "p12"}),
            "the \"format\" path parameter must be",
        ),
        (json!({}), "common_name field is required"),
    ] {
        let (code, b) = s.call("POST", "pki_int/issue/web", Some(&root), Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {b}");
        let msg = b["errors"][0].as_str().expect("error");
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let (code, b) = s
        .call(
            "POST",
            "pki_int/roles/bad",
            Some(&root),
            Some(json!({"key_type": "ec", "key_bits": 1024})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("1024"), "{b}");
    let (code, b) =
        s.call("POST", "pki_int/issue/none", Some(&root), Some(json!({"common_name": "a"}))).await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("unknown role"), "{b}");
    // An RSA CSR under an EC role.
    let kp = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("rsa");
    let csr = rcgen::CertificateParams::new(vec!["c.example.com".to_owned()])
        .expect("params")
        .serialize_request(&kp)
        .expect("csr")
        .pem()
        .expect("pem");
    let (code, b) = s
        .call(
            "POST",
            "pki_int/sign/web",
            Some(&root),
            Some(json!({"csr": csr, "common_name": "c.example.com"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("role requires keys of type ec"), "{b}");
}

#[tokio::test]
async fn no_store_issues_without_writing_and_a_revoked_lease_revokes_the_certificate() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready_sqlite(dir.path()).await;
    two_tier(&s, &root).await;
    put(
        &s,
        &root,
        "pki_int/roles/fast",
        json!({"allow_any_name": true, "key_type": "ec", "no_store": true, "ttl": "1h"}),
    )
    .await;
    // The mount's own rows: other parts of the server may write in the background meanwhile.
    let (_, m) = s.call("GET", "sys/mounts", Some(&root), None).await;
    let prefix = format!("logical/{}/", m["data"]["pki_int/"]["uuid"].as_str().expect("uuid"));
    let rows = || -> i64 {
        let db = rusqlite::Connection::open(dir.path().join("coffer.db")).expect("open db");
        db.query_row(
            "SELECT count(*) FROM coffer_kv WHERE substr(key, 1, length(?1)) = ?1",
            [&prefix],
            |r| r.get(0),
        )
        .expect("count")
    };
    let before = rows();
    assert!(before > 3, "the mount's issuer, key and role are counted: {before}");
    for i in 0..50 {
        put(&s, &root, "pki_int/issue/fast", json!({"common_name": format!("h{i}.test")})).await;
    }
    assert_eq!(rows(), before, "no_store issuance wrote to storage");
    let (code, _) = s.call("LIST", "pki_int/certs", Some(&root), None).await;
    assert_eq!(code, 404, "nothing listed");

    put(
        &s,
        &root,
        "pki_int/roles/leased",
        json!({"allow_any_name": true, "key_type": "ec", "generate_lease": true, "ttl": "1h"}),
    )
    .await;
    let b = put(&s, &root, "pki_int/issue/leased", json!({"common_name": "leased.test"})).await;
    let lease = b["lease_id"].as_str().expect("lease").to_owned();
    assert!(lease.starts_with("pki_int/issue/leased/"), "{lease}");
    assert!(b["lease_duration"].as_u64().expect("ttl") > 3500);
    let serial = b["data"]["serial_number"].as_str().expect("serial").to_owned();
    let (code, c) = s.call("GET", &format!("pki_int/cert/{serial}"), None, None).await;
    assert_eq!((code, &c["data"]["revocation_time"]), (200, &json!(0)));
    put(&s, &root, "sys/leases/revoke", json!({"lease_id": lease})).await;
    let (_, c) = s.call("GET", &format!("pki_int/cert/{serial}"), None, None).await;
    assert!(c["data"]["revocation_time"].as_u64().expect("t") > 0, "{c}");
    let (code, b) = s.call("LIST", "pki_int/certs/revoked", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(b["data"]["keys"], json!([serial]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issued_certificate_serves_a_real_tls_handshake() {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    let (root_pem, _) = two_tier(&s, &root).await;
    let b = put(
        &s,
        &root,
        "pki_int/issue/web",
        json!({"common_name": "tls.example.com", "private_key_format": "pkcs8"}),
    )
    .await;
    let pem_der = |text: &str, label: &str| -> Vec<Vec<u8>> {
        let begin = format!("-----BEGIN {label}-----");
        text.split(&begin)
            .skip(1)
            .map(|part| {
                let body: String = part
                    .split("-----END")
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                base64::engine::general_purpose::STANDARD.decode(body).expect("b64")
            })
            .collect()
    };
    let mut chain: Vec<CertificateDer<'static>> =
        pem_der(b["data"]["certificate"].as_str().expect("c"), "CERTIFICATE")
            .into_iter()
            .map(CertificateDer::from)
            .collect();
    chain.extend(
        pem_der(b["data"]["issuing_ca"].as_str().expect("ca"), "CERTIFICATE")
            .into_iter()
            .map(CertificateDer::from),
    );
    let key_pem = b["data"]["private_key"].as_str().expect("key");
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let key = PrivateKeyDer::try_from(pem_der(key_pem, "PRIVATE KEY").remove(0)).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(pem_der(&root_pem, "CERTIFICATE").remove(0))).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let srv = tokio::spawn(async move {
        let mut tls = acceptor.accept(a).await.expect("server handshake");
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.expect("read");
        tls.write_all(&buf).await.expect("echo");
        tls.shutdown().await.ok();
    });
    let name = ServerName::try_from("tls.example.com").expect("name");
    let mut tls = connector.connect(name, b).await.expect("client handshake verifies the chain");
    tls.write_all(b"hello").await.expect("write");
    let mut echo = [0u8; 5];
    tls.read_exact(&mut echo).await.expect("read");
    assert_eq!(&echo, b"hello");
    srv.await.expect("server");
}

#[tokio::test]
async fn private_keys_stay_out_of_storage_logs_and_audit() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready_sqlite(dir.path()).await;
    let log = dir.path().join("audit.log");
    crate::audit::enable_file_device(&s, &root, &log).await;
    two_tier(&s, &root).await;
    let exported = put(
        &s,
        &root,
        "pki/root/generate/exported",
        json!({"common_name": "Exported", "key_type": "ec", "issuer_name": "exp"}),
    )
    .await;
    let issued = put(&s, &root, "pki_int/issue/web", json!({"common_name": "k.example.com"})).await;
    let db = rusqlite::Connection::open(dir.path().join("coffer.db")).expect("db");
    let blobs: Vec<Vec<u8>> = {
        let mut st = db.prepare("SELECT value FROM coffer_kv").expect("prep");
        st.query_map([], |r| r.get(0)).expect("q").collect::<Result<_, _>>().expect("rows")
    };
    let audit = std::fs::read_to_string(&log).expect("audit");
    let logs = s.logs();
    for key in [&exported["data"]["private_key"], &issued["data"]["private_key"]] {
        let key = key.as_str().expect("key");
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        let needle = &body[8..48];
        assert!(!audit.contains(needle), "a private key in the audit log");
        assert!(!logs.contains(needle), "a private key in the server log");
        let raw = base64::engine::general_purpose::STANDARD.decode(&body).expect("der");
        for b in &blobs {
            assert!(!b.windows(24).any(|w| w == &raw[raw.len() - 24..]), "key bytes in storage");
            assert!(
                !b.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "key text in storage"
            );
        }
    }
}

#[tokio::test]
async fn vaultrs_drives_the_pki_engine() {
    use vaultrs::api::pki::requests::{
        GenerateCertificateRequest, GenerateRootRequest, SetRoleRequest,
    };
    use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    put(&s, &root, "sys/mounts/pki", json!({"type": "pki"})).await;
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&s.addr).token(&root);
    let c = VaultClient::new(b.build().expect("settings")).expect("client");

    let generated = vaultrs::pki::cert::ca::generate(
        &c,
        "pki",
        "internal",
        Some(GenerateRootRequest::builder().common_name("vaultrs root").key_type("ec").ttl("768h")),
    )
    .await
    .expect("root")
    .expect("an answer");
    assert!(generated.certificate.starts_with("-----BEGIN CERTIFICATE-----"));
    vaultrs::pki::role::set(
        &c,
        "pki",
        "svc",
        Some(
            SetRoleRequest::builder()
                .allowed_domains(vec!["svc.test".into()])
                .allow_subdomains(true)
                .key_type("ec")
                .ttl("1h"),
        ),
    )
    .await
    .expect("role");
    let role = vaultrs::pki::role::read(&c, "pki", "svc").await.expect("read role");
    assert_eq!(role.allowed_domains, vec!["svc.test".to_owned()]);
    assert!(role.allow_subdomains && role.server_flag && role.ttl == 3600);
    assert_eq!(
        vaultrs::pki::role::list(&c, "pki").await.expect("roles").keys,
        vec!["svc".to_owned()]
    );
    let cert = vaultrs::pki::cert::generate(
        &c,
        "pki",
        "svc",
        Some(GenerateCertificateRequest::builder().common_name("a.svc.test")),
    )
    .await
    .expect("issue");
    assert_eq!(cert.private_key_type, "ec");
    let listed = vaultrs::pki::cert::list(&c, "pki").await.expect("list");
    assert!(listed.contains(&cert.serial_number), "{listed:?}");
    let read = vaultrs::pki::cert::read(&c, "pki", &cert.serial_number).await.expect("read");
    assert_eq!(read.certificate, cert.certificate);
    let revoked = vaultrs::pki::cert::revoke(&c, "pki", &cert.serial_number).await.expect("revoke");
    assert!(revoked.revocation_time > 0);
    assert!(vaultrs::pki::cert::crl::rotate(&c, "pki").await.expect("rotate").success);
    let cfg = vaultrs::pki::cert::crl::read_config(&c, "pki").await.expect("crl config");
    assert_eq!((cfg.expiry.as_str(), cfg.disable), ("72h", false));
    vaultrs::pki::cert::urls::set(
        &c,
        "pki",
        Some(
            vaultrs::api::pki::requests::SetURLsRequest::builder()
                .ocsp_servers(vec!["http://127.0.0.1/v1/pki/ocsp".into()]),
        ),
    )
    .await
    .expect("urls");
    let urls = vaultrs::pki::cert::urls::read(&c, "pki").await.expect("urls");
    assert_eq!(urls.ocsp_servers, vec!["http://127.0.0.1/v1/pki/ocsp".to_owned()]);
    let issuers = vaultrs::pki::issuer::list(&c, "pki").await.expect("issuers");
    assert_eq!(issuers.keys, vec![generated.issuer_id.clone()]);
    let issuer = vaultrs::pki::issuer::read(&c, "pki", Some(generated.issuer_id.as_str()))
        .await
        .expect("issuer");
    assert_eq!(issuer.certificate.trim(), generated.certificate.trim());
    vaultrs::pki::cert::tidy(&c, "pki").await.expect("tidy");
    vaultrs::pki::cert::ca::delete(&c, "pki").await.expect("delete root");
    let (code, _) = s.call("LIST", "pki/issuers", Some(&root), None).await;
    assert_eq!(code, 404);
}
