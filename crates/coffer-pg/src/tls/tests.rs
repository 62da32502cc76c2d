//! The verifiers, exercised by in-memory handshakes against certificates made here: a test
//! CA, a server certificate it issued for `localhost`/`127.0.0.1`, an expired one, one not yet
//! valid, one from another CA, and a server that signs with a key its certificate does not hold.

use std::io::Write as _;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, ServerConfig, ServerConnection, SupportedProtocolVersion};

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: tempfile::NamedTempFile,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    let mut pem = tempfile::NamedTempFile::new().expect("temp file");
    pem.write_all(cert.pem().as_bytes()).expect("write CA");
    Ca { issuer: Issuer::new(params, key), pem }
}

struct Leaf {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A server certificate from `ca`, valid from 1 January of the first year to 1 January of the
/// second when `years` is given (else rcgen's default, valid now).
fn leaf(ca: &Ca, years: Option<(i32, i32)>) -> Leaf {
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params.distinguished_name.push(DnType::CommonName, "localhost");
    if let Some((from, to)) = years {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.issuer).expect("server certificate");
    Leaf {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// Presents `cert` but signs the handshake with `key`, which need not match.
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesServerCert for Presents {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

fn server(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
) -> ServerConfig {
    let p = provider();
    let signer = p.key_provider.load_private_key(key.clone_key()).expect("signing key");
    ServerConfig::builder_with_provider(p)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Presents(Arc::new(CertifiedKey::new(
            vec![cert.clone()],
            signer,
        )))))
}

/// Runs a handshake in memory; the client's error if it refused, else the server's.
fn handshake(client: ClientConfig, name: &str, server: ServerConfig) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let mut c = ClientConnection::new(Arc::new(client), name)?;
    let mut s = ServerConnection::new(Arc::new(server))?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client write");
        }
        s.read_tls(&mut buf.as_slice()).expect("server read");
        let server_result = s.process_new_packets().map(drop);
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server write");
        }
        c.read_tls(&mut buf.as_slice()).expect("client read");
        c.process_new_packets()?;
        server_result?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake did not finish");
}

const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

fn connect(mode: SslMode, ca: Option<&Ca>, name: &str, leaf: &Leaf) -> Result<(), rustls::Error> {
    let config = client_config(mode, ca.map(|c| c.pem.path())).expect("client config");
    handshake(config, name, server(&leaf.cert, &leaf.key, TLS13))
}

fn cert_error(r: Result<(), rustls::Error>) -> CertificateError {
    match r {
        Err(rustls::Error::InvalidCertificate(e)) => e,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn parse_knows_libpq_modes_and_reads_allow_as_prefer() {
    assert_eq!(SslMode::parse("disable"), Some(SslMode::Disable));
    assert_eq!(SslMode::parse("prefer"), Some(SslMode::Prefer));
    assert_eq!(SslMode::parse("require"), Some(SslMode::Require));
    assert_eq!(SslMode::parse("verify-ca"), Some(SslMode::VerifyCa));
    assert_eq!(SslMode::parse("verify-full"), Some(SslMode::VerifyFull));
    assert_eq!(SslMode::parse("allow"), Some(SslMode::Prefer));
    assert_eq!(SslMode::parse("VERIFY-FULL"), None);
}

#[test]
fn verify_modes_need_a_root_certificate() {
    for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
        assert!(matches!(client_config(mode, None), Err(Error::RootCertRequired)), "{mode:?}");
    }
    for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
        assert!(client_config(mode, None).is_ok(), "{mode:?}");
    }
}

#[test]
fn an_unusable_root_certificate_file_is_an_error() {
    let e = client_config(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem")))
        .expect_err("missing");
    assert!(e.to_string().starts_with("cannot read sslrootcert /nonexistent/ca.pem: "), "{e}");
    let mut empty = tempfile::NamedTempFile::new().expect("temp file");
    empty.write_all(b"not a certificate\n").expect("write");
    let e = client_config(SslMode::Require, Some(empty.path())).expect_err("empty");
    assert!(e.to_string().contains("holds no certificate"), "{e}");
}

#[test]
fn verify_full_checks_chain_and_name() {
    let ca = new_ca("test CA");
    let good = leaf(&ca, None);
    connect(SslMode::VerifyFull, Some(&ca), "localhost", &good).expect("localhost");
    connect(SslMode::VerifyFull, Some(&ca), "127.0.0.1", &good).expect("127.0.0.1");
    let e = cert_error(connect(SslMode::VerifyFull, Some(&ca), "db.example", &good));
    assert!(matches!(e, CertificateError::NotValidForNameContext { .. }), "{e:?}");
    let other = new_ca("other CA");
    let e = cert_error(connect(SslMode::VerifyFull, Some(&other), "localhost", &good));
    assert_eq!(e, CertificateError::UnknownIssuer);
}

#[test]
fn verify_ca_and_require_or_prefer_with_a_root_check_the_chain_but_not_the_name() {
    let ca = new_ca("test CA");
    let other = new_ca("other CA");
    let good = leaf(&ca, None);
    let expired = leaf(&ca, Some((2000, 2001)));
    let not_yet = leaf(&ca, Some((2200, 2201)));
    let foreign = leaf(&other, None);
    for mode in [SslMode::VerifyCa, SslMode::Require, SslMode::Prefer] {
        connect(mode, Some(&ca), "localhost", &good).expect("right name");
        connect(mode, Some(&ca), "db.example", &good).expect("the name is not checked");
        let e = cert_error(connect(mode, Some(&ca), "localhost", &foreign));
        assert_eq!(e, CertificateError::UnknownIssuer, "{mode:?}");
        // The chain is checked before the name, so a wrong name hides no chain error.
        let e = cert_error(connect(mode, Some(&ca), "db.example", &foreign));
        assert_eq!(e, CertificateError::UnknownIssuer, "{mode:?}");
        let e = cert_error(connect(mode, Some(&ca), "db.example", &expired));
        assert!(matches!(e, CertificateError::ExpiredContext { .. }), "{mode:?}: {e:?}");
        let e = cert_error(connect(mode, Some(&ca), "localhost", &not_yet));
        assert!(matches!(e, CertificateError::NotValidYetContext { .. }), "{mode:?}: {e:?}");
    }
}

#[test]
fn require_and_prefer_without_a_root_accept_any_certificate() {
    let other = new_ca("other CA");
    let foreign = leaf(&other, None);
    let expired = leaf(&other, Some((2000, 2001)));
    for mode in [SslMode::Require, SslMode::Prefer] {
        connect(mode, None, "db.example", &foreign).expect("any issuer, any name");
        connect(mode, None, "localhost", &expired).expect("any dates");
    }
}

#[test]
fn every_mode_checks_the_handshake_signature() {
    let ca = new_ca("test CA");
    let good = leaf(&ca, None);
    let impostor = KeyPair::generate().expect("key");
    let wrong_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(impostor.serialize_der()));
    for versions in [TLS13, TLS12] {
        for (mode, root) in [
            (SslMode::Require, None),
            (SslMode::Prefer, None),
            (SslMode::VerifyCa, Some(&ca)),
            (SslMode::VerifyFull, Some(&ca)),
        ] {
            // The same server, honest, connects: the forged case fails only on the signature.
            let config = client_config(mode, root.map(|c| c.pem.path())).expect("config");
            handshake(config, "localhost", server(&good.cert, &good.key, versions))
                .expect("honest server");
            let config = client_config(mode, root.map(|c| c.pem.path())).expect("config");
            let e = handshake(config, "localhost", server(&good.cert, &wrong_key, versions))
                .expect_err("a signature by another key is refused");
            assert!(
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(CertificateError::BadSignature)
                        | rustls::Error::PeerMisbehaved(_)
                ),
                "{mode:?} {versions:?}: {e:?}"
            );
        }
    }
}
