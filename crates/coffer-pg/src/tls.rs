//! TLS to PostgreSQL: the one rustls client configuration Coffer uses, for the storage backend
//! and the database secrets engine alike. rustls on aws-lc-rs (the project's one crypto
//! provider), trusting only the CA in `sslrootcert`, never a system bundle.
//!
//! Guarantees, by `sslmode` (libpq's meanings):
//! - `verify-full`: the chain must lead to the given CA (validity dates, key usage and
//!   signatures checked) and the certificate must name the host.
//! - `verify-ca`: the chain must lead to the given CA, checked as for `verify-full`; the host
//!   name is not checked.
//! - `require` / `prefer`: with `sslrootcert`, as `verify-ca` (libpq does the same when a root
//!   certificate is present); without it, the channel is encrypted but the server is not
//!   authenticated: any certificate is accepted (its handshake signature is still checked).
//!   This is what libpq does, and why `verify-full` is the mode to use.
//! - `allow` is read as `prefer`: TLS is tried first, so the channel is never less protected
//!   than libpq's `allow` (plaintext first) would leave it.
//! - `verify-ca` / `verify-full` without `sslrootcert`: an error, never a weaker mode.
//! - `disable`: no TLS; tokio-postgres does not use the connector.
//!
//! Not done: client certificates, certificate revocation lists, OCSP (a stapled response is
//! ignored), `sslrootcert=system`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::Error;

/// libpq's `sslmode` (`allow` is read as `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, else plaintext; the certificate is checked only against an
    /// explicit `sslrootcert`.
    Prefer,
    /// TLS or fail; the certificate is checked only against an explicit `sslrootcert`.
    Require,
    /// TLS; the chain must lead to `sslrootcert`; the host name is not checked.
    VerifyCa,
    /// TLS; the chain must lead to `sslrootcert` and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// The mode libpq spells `s` (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`); `None` for anything else. `allow` (plaintext first, TLS only when the
    /// server insists) is taken as `prefer` (TLS first): never less protection than asked for,
    /// and a stored configuration that says `allow` keeps working.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

/// The rustls client configuration for `mode`, trusting exactly the certificates in the PEM
/// file `root_cert` (see the crate documentation for what each mode checks).
pub fn client_config(mode: SslMode, root_cert: Option<&Path>) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let verifier = verifier(mode, root_cert, provider)?;
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn verifier(
    mode: SslMode,
    root_cert: Option<&Path>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    let Some(path) = root_cert else {
        return match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => Err(Error::RootCertRequired),
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Ok(Arc::new(Lenient {
                chain: None,
                algorithms: provider.signature_verification_algorithms,
            })),
        };
    };
    let algorithms = provider.signature_verification_algorithms;
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(path)?), provider)
        .build()
        .map_err(|e| Error::BadRootCert { path: path.to_owned(), why: e.to_string() })?;
    Ok(match mode {
        SslMode::VerifyFull => webpki,
        SslMode::VerifyCa | SslMode::Require | SslMode::Prefer | SslMode::Disable => {
            Arc::new(Lenient { chain: Some(webpki), algorithms })
        }
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, Error> {
    let bad = |why: String| Error::BadRootCert { path: path.to_owned(), why };
    let pem = std::fs::read(path)
        .map_err(|source| Error::ReadRootCert { path: path.to_owned(), source })?;
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

/// `verify-ca` (`chain` set): rustls' full verification, except that a certificate not naming
/// the host is accepted; rustls checks the chain (to a trusted root, within its validity dates,
/// for server authentication) before the name, so a name error means the chain was good.
/// `require`/`prefer` without a root certificate (`chain` unset): encryption without server
/// authentication. Either way the handshake signature is checked against the presented
/// certificate's key.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
