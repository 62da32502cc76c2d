//! The certificates of a TLS cluster: a fresh test CA and a server certificate it issued for
//! `127.0.0.1` and `localhost`. The CA's private key is never written anywhere.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub(crate) const CA_FILE: &str = "ca.pem";
pub(crate) const CERT_FILE: &str = "server.crt";
pub(crate) const KEY_FILE: &str = "server.key";

/// Writes the CA certificate, server certificate and server key into `root` through `write`.
pub(crate) fn write_files(root: &Path, mut write: impl FnMut(&Path, &[u8])) {
    let fail = |what: &str, e: rcgen::Error| -> ! { panic!("cannot make the test {what}: {e}") };
    let ca_key = KeyPair::generate().unwrap_or_else(|e| fail("CA key", e));
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail("CA", e));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "coffer-pgtest CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| fail("CA certificate", e));
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().unwrap_or_else(|e| fail("server key", e));
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap_or_else(|e| fail("server certificate", e));
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).unwrap_or_else(|e| fail("server certificate", e));

    write(&root.join(CA_FILE), ca_cert.pem().as_bytes());
    write(&root.join(CERT_FILE), cert.pem().as_bytes());
    write(&root.join(KEY_FILE), key.serialize_pem().as_bytes());
}
