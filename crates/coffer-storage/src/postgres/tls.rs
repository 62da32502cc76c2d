//! TLS to PostgreSQL with rustls on aws-lc-rs, the project's one crypto provider, and only the
//! trust the operator configured: the CA in `sslrootcert`, never a system bundle.
//!
//! Guarantees, by `sslmode` (libpq's meanings):
//! - `verify-full`: the chain must lead to the given CA and the certificate must name the host.
//! - `verify-ca`: the chain must lead to the given CA; the host name is not checked.
//! - `require` / `prefer`: with `sslrootcert`, as `verify-ca` (libpq does the same when a root
//!   certificate is present); without it, the channel is encrypted but the server is not
//!   authenticated: any certificate is accepted (its handshake signature is still checked).
//!   This is what libpq does, and why the docs say to use `verify-full`.
//! - `disable`: no TLS (the connector is never used).
//!
//! Not done: client certificates, CRLs, OCSP.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::url::SslMode;
use crate::{Error, Result};

/// The rustls client configuration for `mode`, trusting exactly the certificates in `root_cert`.
pub(crate) fn client_config(mode: SslMode, root_cert: Option<&Path>) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Backend(format!("postgresql TLS set-up: {e}")))?;
    let algorithms = provider.signature_verification_algorithms;
    let roots = match root_cert {
        Some(path) => Some(Arc::new(load_roots(path)?)),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| Error::Backend(format!("postgresql TLS set-up: {e}")))?
        }
        (SslMode::VerifyFull | SslMode::VerifyCa, None) => {
            return Err(Error::Backend(
                "postgresql: sslmode=verify-ca and verify-full need sslrootcert".into(),
            ));
        }
        (
            SslMode::VerifyCa | SslMode::Require | SslMode::Prefer | SslMode::Disable,
            Some(roots),
        ) => Arc::new(ChainOnly { roots, algorithms }),
        (SslMode::Require | SslMode::Prefer | SslMode::Disable, None) => {
            Arc::new(EncryptOnly { algorithms })
        }
    };
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let bad =
        |why: String| Error::Backend(format!("postgresql sslrootcert {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        roots.add(cert).map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `require`/`prefer` without a root certificate: encryption, no server authentication.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
