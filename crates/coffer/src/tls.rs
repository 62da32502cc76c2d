//! rustls server configuration for a listener: certificate chain and key from PEM files, and
//! optional client-certificate verification (mTLS) in `request` or `require` mode. aws-lc-rs is
//! the one crypto provider.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::config::{ClientAuth, TlsConfig};

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Refuses a private key file that group or others can read, as SSH does.
fn check_key_permissions(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "TLS key file {} is readable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

pub(crate) fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .with_context(|| format!("cannot read TLS certificate {}", cfg.cert_file.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("invalid PEM in {}", cfg.cert_file.display()))?;
    if certs.is_empty() {
        bail!("no certificate found in {}", cfg.cert_file.display());
    }
    check_key_permissions(&cfg.key_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .with_context(|| format!("cannot read a private key from {}", cfg.key_file.display()))?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (&cfg.client_ca_file, cfg.client_auth) {
        (Some(ca), mode @ (ClientAuth::Request | ClientAuth::Require)) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read client CA {}", ca.display()))?
            {
                roots
                    .add(c.with_context(|| format!("invalid PEM in {}", ca.display()))?)
                    .context("client CA certificate")?;
            }
            if roots.is_empty() {
                bail!("no certificate found in client CA file {}", ca.display());
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if mode == ClientAuth::Request { v.allow_unauthenticated() } else { v };
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
        (None, ClientAuth::Any) => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(certs, key).context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Asks for a client certificate without requiring one, and checks only that the client holds
/// the leaf's private key (the handshake signature). Whether the chain is trusted is the cert
/// auth method's decision, made at login against the certificates its operator configured, as
/// Vault does; nothing else in Coffer reads a client certificate.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
