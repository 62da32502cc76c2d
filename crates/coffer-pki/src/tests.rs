//! The engine over a memory barrier: issuance, role bounds, revocation into the CRL and OCSP,
//! no_store, leases, and what reaches storage.

use std::sync::Arc;
use std::time::Duration;

use coffer_core::{LeaseRequest, LogicalBackend, Operation, Response};
use serde_json::{Map, Value, json};
use x509_parser::prelude::*;

use super::*;

async fn engine() -> (Pki, Arc<coffer_storage::MemoryBackend>) {
    let (view, storage) = coffer_core::testkit::memory_view("logical/pki/").await;
    (Pki::new(view), storage)
}

async fn call(pki: &Pki, op: Operation, path: &str, body: Value) -> coffer_core::Result<Response> {
    coffer_core::testkit::call(pki, &mount(), op, path, body, true).await
}

fn mount() -> coffer_core::MountInfo {
    coffer_core::testkit::mount_info("pki/", "pki", Duration::from_secs(10 * 365 * 86_400))
}

async fn ok(pki: &Pki, op: Operation, path: &str, body: Value) -> Map<String, Value> {
    match call(pki, op, path, body).await {
        Ok(r) => r.data.unwrap_or_default(),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// Every stored key and value, walked through the backend's own list.
async fn dump(s: &coffer_storage::MemoryBackend) -> Vec<(String, Vec<u8>)> {
    use coffer_storage::Backend as _;
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(prefix) = todo.pop() {
        for child in s.list(&prefix).await.expect("list") {
            let key = format!("{prefix}{child}");
            if key.ends_with('/') {
                todo.push(key);
            } else {
                let v = s.get(&key).await.expect("get").expect("value");
                out.push((key, v));
            }
        }
    }
    out
}

fn der_of(pem_text: &str) -> Vec<u8> {
    crate::keys::pem_blocks(pem_text, "CERTIFICATE").expect("pem").remove(0)
}

async fn with_root(key_type: &str) -> (Pki, Arc<coffer_storage::MemoryBackend>) {
    let (pki, storage) = engine().await;
    ok(
        &pki,
        Operation::Update,
        "root/generate/internal",
        json!({"common_name": "Test Root", "key_type": key_type, "ttl": "8760h"}),
    )
    .await;
    ok(
        &pki,
        Operation::Update,
        "roles/web",
        json!({"allowed_domains": "example.com", "allow_subdomains": true, "key_type": "ec", "ttl": "1h",
               "allowed_uri_sans": "spiffe://cluster.local/*"}),
    )
    .await;
    (pki, storage)
}

#[tokio::test]
async fn issued_certificates_chain_to_the_root_and_carry_the_requested_names() {
    for kt in ["ec", "rsa", "ed25519"] {
        let (pki, _) = with_root(kt).await;
        let d = ok(&pki, Operation::Update, "issue/web", json!({"common_name": "a.example.com", "uri_sans": "spiffe://cluster.local/ns/x/sa/y", "ip_sans": "127.0.0.1"})).await;
        let der = der_of(d["certificate"].as_str().expect("cert"));
        let root = der_of(d["issuing_ca"].as_str().expect("ca"));
        let (_, c) = parse_x509_certificate(&der).expect("parse");
        let (_, rc) = parse_x509_certificate(&root).expect("parse root");
        c.verify_signature(Some(rc.public_key())).expect("signed by the root");
        let san = c.subject_alternative_name().expect("san").expect("has san");
        let names: Vec<String> = san.value.general_names.iter().map(|g| g.to_string()).collect();
        assert!(names.iter().any(|n| n.contains("a.example.com")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("spiffe://cluster.local/ns/x/sa/y")), "{names:?}");
        assert_eq!(d["private_key_type"], json!("ec"));
        assert!(
            d["private_key"].as_str().expect("key").starts_with("-----BEGIN EC PRIVATE KEY-----")
        );
        let serial = d["serial_number"].as_str().expect("serial");
        assert_eq!(serial.split(':').count(), 20, "{serial}");
        assert_eq!(d["ca_chain"].as_array().expect("chain").len(), 1);
        let ttl = d["expiration"].as_u64().expect("exp") - coffer_core::time::now_unix();
        assert!((3590..=3600).contains(&ttl), "{ttl}");
    }
}

#[tokio::test]
async fn role_bounds_refuse_with_the_name_refused() {
    let (pki, _) = with_root("ec").await;
    for (body, want) in [
        (json!({"common_name": "evil.com"}), "common name evil.com not allowed by this role"),
        (
            json!({"common_name": "a.example.com", "alt_names": "b.evil.com"}),
            "subject alternate name b.evil.com not allowed",
        ),
        (
            json!({"common_name": "a.example.com", "uri_sans": "spiffe://other/x"}),
            "not valid for this role: spiffe://other/x",
        ),
        (json!({}), "the common_name field is required"),
        (json!({"common_name": "example.com"}), "common name example.com not allowed"),
        (
            json!({"common_name": "a.example.com", "ttl": "87600h"}),
            "beyond the expiration of the CA",
        ),
    ] {
        let e =
            call(&pki, Operation::Update, "issue/web", body.clone()).await.expect_err("refused");
        assert!(matches!(e, coffer_core::Error::InvalidRequest(_)), "{e}");
        assert!(e.to_string().contains(want), "{body}: {e}");
    }
    let e = call(&pki, Operation::Update, "issue/nope", json!({"common_name": "a.example.com"}))
        .await
        .expect_err("no role");
    assert!(e.to_string().contains("unknown role"), "{e}");
}

#[tokio::test]
async fn ttl_is_capped_by_the_roles_max_ttl_with_a_warning() {
    let (pki, _) = with_root("ec").await;
    ok(
        &pki,
        Operation::Update,
        "roles/short",
        json!({"allow_any_name": true, "key_type": "ec", "max_ttl": "10m"}),
    )
    .await;
    let r =
        call(&pki, Operation::Update, "issue/short", json!({"common_name": "x.test", "ttl": "1h"}))
            .await
            .expect("issue");
    assert!(r.warnings.iter().any(|w| w.contains("max_ttl")), "{:?}", r.warnings);
    let d = r.data.expect("data");
    let ttl = d["expiration"].as_u64().expect("exp") - coffer_core::time::now_unix();
    assert!(ttl <= 600, "{ttl}");
}

#[tokio::test]
async fn no_store_issuance_writes_nothing() {
    let (pki, storage) = with_root("ec").await;
    ok(
        &pki,
        Operation::Update,
        "roles/fast",
        json!({"allow_any_name": true, "key_type": "ec", "no_store": true}),
    )
    .await;
    let before = dump(&storage).await.len();
    for i in 0..20 {
        ok(&pki, Operation::Update, "issue/fast", json!({"common_name": format!("h{i}.test")}))
            .await;
    }
    assert_eq!(dump(&storage).await.len(), before);
    ok(&pki, Operation::Update, "issue/web", json!({"common_name": "a.example.com"})).await;
    assert_eq!(
        dump(&storage).await.len(),
        before + 1,
        "a stored role writes one record per certificate"
    );
}

#[tokio::test]
async fn private_keys_never_reach_storage_in_clear() {
    let (pki, storage) = with_root("ec").await;
    let d = ok(
        &pki,
        Operation::Update,
        "root/generate/exported",
        json!({"common_name": "Exported Root", "key_type": "ec", "issuer_name": "second"}),
    )
    .await;
    let issued =
        ok(&pki, Operation::Update, "issue/web", json!({"common_name": "k.example.com"})).await;
    for pem_text in
        [d["private_key"].as_str().expect("key"), issued["private_key"].as_str().expect("key")]
    {
        let body: String = pem_text.lines().filter(|l| !l.starts_with("-----")).collect();
        let needle = &body.as_bytes()[10..40];
        for (k, v) in dump(&storage).await {
            assert!(!v.windows(needle.len()).any(|w| w == needle), "key text at {k}");
        }
    }
}

#[tokio::test]
async fn revocation_shows_in_the_crl_and_twice_answers_the_first_time() {
    let (pki, _) = with_root("ec").await;
    let d = ok(&pki, Operation::Update, "issue/web", json!({"common_name": "r.example.com"})).await;
    let serial = d["serial_number"].as_str().expect("serial").to_owned();
    let first = ok(&pki, Operation::Update, "revoke", json!({"serial_number": serial})).await;
    let again =
        ok(&pki, Operation::Update, "revoke", json!({"serial_number": serial.replace(':', "-")}))
            .await;
    assert_eq!(first["revocation_time"], again["revocation_time"]);
    let crl =
        call(&pki, Operation::Read, "crl", json!({})).await.expect("crl").raw_body.expect("raw");
    assert_eq!(crl.content_type, "application/pkix-crl");
    let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.body)
        .expect("crl parses");
    let listed: Vec<String> =
        parsed.iter_revoked_certificates().map(|r| serial_colons(trim(r.raw_serial()))).collect();
    assert_eq!(listed, vec![serial.clone()]);
    let cert = ok(&pki, Operation::Read, &format!("cert/{serial}"), json!({})).await;
    assert_eq!(cert["revocation_time"], first["revocation_time"]);
    let e = call(&pki, Operation::Update, "revoke", json!({"serial_number": "01:02"}))
        .await
        .expect_err("unknown");
    assert!(e.to_string().contains("not found"), "{e}");
}

/// A revocation cut short after its entry was stored, before the CRL was rebuilt: revoking
/// again (the lease's retry, or by hand) puts the certificate in the CRL.
#[tokio::test]
async fn a_revocation_cut_short_before_the_crl_is_rebuilt_reaches_the_crl_on_retry() {
    let (pki, _) = with_root("ec").await;
    let d = ok(&pki, Operation::Update, "issue/web", json!({"common_name": "c.example.com"})).await;
    let serial = d["serial_number"].as_str().expect("serial").to_owned();
    let listed = async || {
        let crl = call(&pki, Operation::Read, "crl", json!({})).await.expect("crl");
        let body = crl.raw_body.expect("raw").body;
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&body).expect("crl");
        parsed
            .iter_revoked_certificates()
            .map(|r| serial_colons(trim(r.raw_serial())))
            .collect::<Vec<_>>()
    };
    assert!(listed().await.is_empty(), "a CRL is built and stored, empty");
    let issuer_id = pki.issuer("default").await.expect("issuer").id;
    let entry = crate::revoke::RevokedEntry {
        serial: serial.clone(),
        revocation_time: coffer_core::time::now_unix(),
        not_after: coffer_core::time::now_unix() + 3600,
        issuer_id,
    };
    let key = format!("revoked/{}", crate::serial_key(&serial).expect("key"));
    pki.view.put(&key, &coffer_core::record::encode(&entry).expect("encode")).await.expect("put");
    assert!(listed().await.is_empty(), "the stored CRL does not have it yet");
    ok(&pki, Operation::Update, "revoke", json!({"serial_number": serial})).await;
    assert_eq!(listed().await, vec![serial], "the retry put it in the CRL");
}

fn trim(s: &[u8]) -> &[u8] {
    crate::issuers::trim_serial(s)
}

#[tokio::test]
async fn revoking_a_lease_revokes_its_certificate() {
    let (pki, _) = with_root("ec").await;
    ok(
        &pki,
        Operation::Update,
        "roles/leased",
        json!({"allow_any_name": true, "key_type": "ec", "generate_lease": true, "no_store": true}),
    )
    .await;
    let r = call(&pki, Operation::Update, "issue/leased", json!({"common_name": "l.test"}))
        .await
        .expect("issue");
    let secret = r.secret.expect("a lease");
    assert!(secret.ttl > 3500 && !secret.renewable);
    let serial = r.data.expect("data")["serial_number"].as_str().expect("serial").to_owned();
    let m = mount();
    let lease = LeaseRequest {
        lease_id: "pki/issue/leased/x",
        path: "issue/leased",
        mount: &m,
        internal: &secret.internal,
        issue_time: 0,
        expire_time: 0,
    };
    pki.revoke_lease(&lease).await.expect("revoke");
    assert!(pki.revoked_entry(&serial).await.expect("read").is_some());
}

#[tokio::test]
async fn intermediates_are_signed_imported_and_issue_under_their_root() {
    let (root, _) = with_root("rsa").await;
    let (int, _) = engine().await;
    let csr = ok(
        &int,
        Operation::Update,
        "intermediate/generate/internal",
        json!({"common_name": "Int CA", "key_type": "ec"}),
    )
    .await;
    assert!(csr.get("private_key").is_none());
    let signed = ok(
        &root,
        Operation::Update,
        "root/sign-intermediate",
        json!({"csr": csr["csr"], "common_name": "Int CA", "ttl": "4380h"}),
    )
    .await;
    let bundle = format!(
        "{}\n{}",
        signed["certificate"].as_str().expect("c"),
        signed["issuing_ca"].as_str().expect("ca")
    );
    let set =
        ok(&int, Operation::Update, "intermediate/set-signed", json!({"certificate": bundle}))
            .await;
    assert_eq!(set["imported_issuers"].as_array().expect("ids").len(), 1);
    ok(&int, Operation::Update, "roles/web", json!({"allow_any_name": true, "key_type": "ec"}))
        .await;
    let leaf = ok(&int, Operation::Update, "issue/web", json!({"common_name": "svc.test"})).await;
    assert_eq!(leaf["ca_chain"].as_array().expect("chain").len(), 2);
    let leaf_der = der_of(leaf["certificate"].as_str().expect("c"));
    let (_, lc) = parse_x509_certificate(&leaf_der).expect("leaf");
    let int_der = der_of(leaf["issuing_ca"].as_str().expect("ca"));
    let (_, ic) = parse_x509_certificate(&int_der).expect("int");
    lc.verify_signature(Some(ic.public_key())).expect("leaf signed by the intermediate");
    assert!(ic.is_ca());
    // A certificate for a key this mount does not hold is refused.
    let e = call(
        &root,
        Operation::Update,
        "intermediate/set-signed",
        json!({"certificate": signed["certificate"]}),
    )
    .await
    .expect_err("foreign");
    assert!(e.to_string().contains("matches no key"), "{e}");
}

#[tokio::test]
async fn issuers_list_default_rename_and_root_delete() {
    let (pki, _) = with_root("ec").await;
    let second = ok(
        &pki,
        Operation::Update,
        "root/generate/internal",
        json!({"common_name": "Second", "key_type": "ec", "issuer_name": "second"}),
    )
    .await;
    let list = ok(&pki, Operation::List, "issuers", json!({})).await;
    assert_eq!(list["keys"].as_array().expect("keys").len(), 2);
    let def = ok(&pki, Operation::Read, "config/issuers", json!({})).await;
    assert_ne!(def["default"], second["issuer_id"], "the first root stays the default");
    ok(&pki, Operation::Update, "config/issuers", json!({"default": "second"})).await;
    let i = ok(&pki, Operation::Read, "issuer/default", json!({})).await;
    assert_eq!(i["issuer_name"], json!("second"));
    let e = call(&pki, Operation::Update, "issuer/second", json!({"issuer_name": "default"}))
        .await
        .expect_err("reserved");
    assert!(e.to_string().contains("reserved"), "{e}");
    call(&pki, Operation::Delete, "root", json!({})).await.expect("delete");
    assert!(call(&pki, Operation::List, "issuers", json!({})).await.is_err());
    assert!(call(&pki, Operation::List, "keys", json!({})).await.is_err());
}

#[tokio::test]
async fn sign_takes_the_csr_key_and_checks_its_type() {
    let (pki, _) = with_root("ec").await;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("kp");
    let mut p = rcgen::CertificateParams::new(vec!["c.example.com".to_owned()]).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, "c.example.com");
    let csr = p.serialize_request(&kp).expect("csr").pem().expect("pem");
    let d = ok(&pki, Operation::Update, "sign/web", json!({"csr": csr})).await;
    assert!(d.get("private_key").is_none());
    let cert_der = der_of(d["certificate"].as_str().expect("c"));
    let (_, c) = parse_x509_certificate(&cert_der).expect("cert");
    assert_eq!(c.public_key().raw, rcgen::PublicKeyData::subject_public_key_info(&kp).as_slice());
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("rsa");
    let csr = p.serialize_request(&rsa).expect("csr").pem().expect("pem");
    let e = call(&pki, Operation::Update, "sign/web", json!({"csr": csr})).await.expect_err("rsa");
    assert!(e.to_string().contains("role requires keys of type ec"), "{e}");
    let v = ok(&pki, Operation::Update, "sign-verbatim", json!({"csr": csr, "ttl": "1h"})).await;
    assert!(v["certificate"].as_str().is_some());
}

#[tokio::test]
async fn tidy_removes_only_certificates_expired_beyond_the_buffer() {
    let (pki, _) = with_root("ec").await;
    ok(&pki, Operation::Update, "issue/web", json!({"common_name": "t.example.com", "ttl": "1h"}))
        .await;
    let now = coffer_core::time::now_unix();
    // Two certificates that expired: one long ago, one within the safety buffer.
    for (serial, not_after) in [("0a-01", now - 10 * 86_400), ("0a-02", now - 60)] {
        let e = crate::issue::CertEntry {
            certificate: String::new(),
            issuer_id: "x".into(),
            not_after,
        };
        pki.view
            .put(&format!("certs/{serial}"), &coffer_core::record::encode(&e).expect("encode"))
            .await
            .expect("put");
        let r = crate::revoke::RevokedEntry {
            serial: serial.replace('-', ":"),
            revocation_time: not_after - 5,
            not_after,
            issuer_id: "x".into(),
        };
        pki.view
            .put(&format!("revoked/{serial}"), &coffer_core::record::encode(&r).expect("encode"))
            .await
            .expect("put");
    }
    let certs = || async {
        let mut k: Vec<String> = ok(&pki, Operation::List, "certs", json!({})).await["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|v| v.as_str().expect("key").to_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(certs().await.len(), 4, "root, leaf and the two expired ones");
    ok(&pki, Operation::Update, "tidy", json!({"tidy_cert_store": true, "safety_buffer": "1h"}))
        .await;
    let left = certs().await;
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(!left.contains(&"0a:01".to_owned()) && left.contains(&"0a:02".to_owned()));
    let status = ok(&pki, Operation::Read, "tidy-status", json!({})).await;
    assert_eq!(status["cert_store_deleted_count"], json!(1));
    ok(&pki, Operation::Update, "tidy", json!({"tidy_revoked_certs": true, "safety_buffer": 0}))
        .await;
    let revoked = call(&pki, Operation::List, "certs/revoked", json!({})).await;
    assert!(matches!(revoked, Err(coffer_core::Error::NotFound)), "both revocations tidied");
    assert_eq!(certs().await.len(), 2, "the live root and leaf are kept");
}

#[tokio::test]
async fn csrs_with_other_extensions_are_signed_and_forged_ones_refused() {
    let (pki, _) = with_root("ec").await;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("kp");
    let mut p = rcgen::CertificateParams::new(vec!["x.example.com".to_owned()]).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, "x.example.com");
    // A subject key identifier and an unknown EKU, which Vault ignores in a CSR.
    p.custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 14], vec![4, 2, 1, 2]));
    p.extended_key_usages.push(rcgen::ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 4, 1, 99]));
    let csr = p.serialize_request(&kp).expect("csr");
    let pem_text = csr.pem().expect("pem");
    ok(&pki, Operation::Update, "roles/any", json!({"allow_any_name": true, "key_type": "any"}))
        .await;
    let d = ok(&pki, Operation::Update, "sign/any", json!({"csr": pem_text})).await;
    let cert_der = der_of(d["certificate"].as_str().expect("c"));
    let (_, c) = parse_x509_certificate(&cert_der).expect("cert");
    assert_eq!(c.public_key().raw, rcgen::PublicKeyData::subject_public_key_info(&kp).as_slice());
    let v = ok(&pki, Operation::Update, "sign-verbatim", json!({"csr": pem_text})).await;
    let cert_der = der_of(v["certificate"].as_str().expect("c"));
    let (_, c) = parse_x509_certificate(&cert_der).expect("cert");
    assert_eq!(c.subject().to_string(), "CN=x.example.com");
    // The same request with its last signature byte changed.
    let mut forged = csr.der().to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = crate::keys::pem("CERTIFICATE REQUEST", &forged).to_string();
    let e = call(&pki, Operation::Update, "sign/any", json!({"csr": forged}))
        .await
        .expect_err("forged");
    assert!(e.to_string().contains("signature does not verify"), "{e}");
}

#[tokio::test]
async fn a_pem_bundle_imports_an_outside_ca_that_then_issues() {
    let (pki, _) = engine().await;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("kp");
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(rcgen::DnType::CommonName, "Outside CA");
    let ca = p.self_signed(&kp).expect("ca");
    let bundle = format!("{}\n{}", kp.serialize_pem(), ca.pem());
    let e = call(&pki, Operation::Update, "config/ca", json!({"pem_bundle": ca.pem()}))
        .await
        .expect_err("no key");
    assert!(e.to_string().contains("exactly one private key"), "{e}");
    let d = ok(&pki, Operation::Update, "config/ca", json!({"pem_bundle": bundle})).await;
    assert_eq!(d["imported_issuers"].as_array().expect("ids").len(), 1);
    ok(
        &pki,
        Operation::Update,
        "roles/r",
        json!({"allow_any_name": true, "key_type": "ec", "ttl": "1h"}),
    )
    .await;
    let leaf = ok(&pki, Operation::Update, "issue/r", json!({"common_name": "in.test"})).await;
    let leaf_der = der_of(leaf["certificate"].as_str().expect("c"));
    let (_, lc) = parse_x509_certificate(&leaf_der).expect("leaf");
    let (_, cc) = parse_x509_certificate(ca.der()).expect("ca");
    lc.verify_signature(Some(cc.public_key())).expect("signed by the imported CA");
    let crl =
        call(&pki, Operation::Read, "crl", json!({})).await.expect("crl").raw_body.expect("raw");
    let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl.body)
        .expect("crl parses");
    parsed.verify_signature(cc.public_key()).expect("the CRL is signed by the imported CA");
}

/// The certificate's validity as Unix seconds.
fn validity(d: &Map<String, Value>) -> (i64, i64) {
    let der = der_of(d["certificate"].as_str().expect("cert"));
    let (_, c) = parse_x509_certificate(&der).expect("parse");
    (c.validity().not_before.timestamp(), c.validity().not_after.timestamp())
}

fn at(unix: u64) -> String {
    coffer_core::time::rfc3339(unix)
}

#[tokio::test]
async fn requests_set_the_validity_only_as_the_roles_bounds_allow() {
    let (pki, _) = with_root("ec").await;
    let now = coffer_core::time::now_unix();
    let role = |name: &str, extra: Value| {
        let mut body = json!({"allow_any_name": true, "key_type": "ec"});
        body.as_object_mut().expect("obj").extend(extra.as_object().expect("obj").clone());
        let pki = &pki;
        let path = format!("roles/{name}");
        async move { ok(pki, Operation::Update, &path, body).await }
    };
    let issue = |name: &str, body: Value| {
        let pki = &pki;
        let path = format!("issue/{name}");
        async move { call(pki, Operation::Update, &path, body).await }
    };
    let refused = |r: coffer_core::Result<Response>| r.expect_err("refused").to_string();

    // permit (the default): the request's times, exactly.
    let d = role("permit", json!({})).await;
    assert_eq!(
        (d["not_before_bound"].clone(), d["not_after_bound"].clone()),
        (json!("permit"), json!("permit"))
    );
    let r = issue(
        "permit",
        json!({"common_name": "a", "not_before": at(now - 600), "not_after": at(now + 3600)}),
    );
    let v = validity(&r.await.expect("issue").data.expect("data"));
    assert_eq!(v, ((now - 600) as i64, (now + 3600) as i64));
    let e = refused(
        issue("permit", json!({"common_name": "a", "ttl": "1h", "not_after": at(now + 60)})).await,
    );
    assert!(e.contains("Either ttl or not_after should be provided"), "{e}");

    // forbid: neither field, not even empty; without them the usual backdating.
    role("forbid", json!({"not_before_bound": "forbid", "not_after_bound": "forbid"})).await;
    for (body, want) in [
        (json!({"not_before": at(now)}), "not_before cannot be provided"),
        (json!({"not_before": ""}), "not_before cannot be provided"),
        (json!({"not_after": at(now + 60)}), "not_after cannot be provided"),
    ] {
        let mut b = body;
        b["common_name"] = json!("a");
        let e = refused(issue("forbid", b).await);
        assert!(e.contains(want), "{want}: {e}");
    }
    let r = issue("forbid", json!({"common_name": "a", "ttl": "1h"})).await.expect("issue");
    let (nb, _) = validity(&r.data.expect("data"));
    assert!((now as i64 - 31..=now as i64 - 29).contains(&nb), "{nb} vs {now}");

    // duration and ttl-limited: no earlier than not_before_duration ago, no later than the TTL.
    role("limited", json!({"not_before_bound": "duration", "not_before_duration": "1h", "not_after_bound": "ttl-limited", "ttl": "1h"})).await;
    let r = issue(
        "limited",
        json!({"common_name": "a", "not_before": at(now - 1800), "not_after": at(now + 1800)}),
    );
    let v = validity(&r.await.expect("within").data.expect("data"));
    assert_eq!(v, ((now - 1800) as i64, (now + 1800) as i64));
    let e =
        refused(issue("limited", json!({"common_name": "a", "not_before": at(now - 7200)})).await);
    assert!(e.contains("older than the allowed not_before_duration of 1h0m0s"), "{e}");
    let e =
        refused(issue("limited", json!({"common_name": "a", "not_after": at(now + 7200)})).await);
    assert!(e.contains("is beyond the TTL of 1h0m0s"), "{e}");

    // An explicit time: no certificate outlives it, whichever way its expiry was asked for.
    let deadline = now + 86_400;
    role("deadline", json!({"not_after_bound": at(deadline)})).await;
    let e = refused(issue("deadline", json!({"common_name": "a", "ttl": "48h"})).await);
    assert!(e.contains(&format!("beyond the maximum timestamp of {}", at(deadline))), "{e}");
    issue("deadline", json!({"common_name": "a", "ttl": "1h"})).await.expect("before it");

    // Unknown bounds are refused, on write and patch, and nothing is stored.
    for (field, value) in
        [("not_before_bound", "sometimes"), ("not_after_bound", "never"), ("not_after_bound", "")]
    {
        let body = json!({"allow_any_name": true, field: value});
        let e =
            call(&pki, Operation::Update, "roles/bad", body).await.expect_err(field).to_string();
        assert!(e.contains(&format!("Unknown value for field `{field}`")), "{e}");
    }
    assert!(
        call(&pki, Operation::Read, "roles/bad", json!({}))
            .await
            .is_err_and(|e| matches!(e, coffer_core::Error::NotFound))
    );
}
