//! HTTPS calls an auth method makes to an identity provider (a JWKS, OIDC discovery, the
//! Kubernetes TokenReview API): bounded in time and size, and trusting only the CA the operator
//! configured when there is one.
//!
//! A configured CA bundle is read as Vault reads it (Go's `CertPool.AppendCertsFromPEM`): any
//! text around and between the blocks, CRLF line ends and blanks or tabs at line ends are
//! allowed; blocks that are not `CERTIFICATE`, carry PEM headers, or do not decode are skipped;
//! the bundle is refused only when no certificate in it can be used. Each certificate becomes a
//! trust anchor (subject, key, name constraints) without the stricter parse rustls gives a
//! certificate, so an old-style CA certificate that Go accepts (version 2, a UTCTime without
//! seconds, a duplicated extension) is trusted too. Not done: the operating system's roots are
//! used only when no CA is configured, never merged with it.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, Der, TrustAnchor};
use serde_json::Value;

/// Identity providers answer in milliseconds; a login should not hang on one that does not.
const TIMEOUT: Duration = Duration::from_secs(10);
/// JWKS documents and TokenReview answers are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// A client trusting exactly the certificates in `ca_pem`, or the system's roots when empty.
pub(crate) fn client(ca_pem: &str) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")));
    if !ca_pem.trim().is_empty() {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(trust_anchors(ca_pem)?);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot configure TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        b = b.tls_backend_preconfigured(tls);
    }
    b.build().map_err(|e| format!("cannot build an HTTPS client: {}", chain(&e)))
}

/// An error with its causes (reqwest's own text is only its kind, "builder error").
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// The DER of every `CERTIFICATE` block of a PEM bundle, found as Go's `pem.Decode` finds them.
pub(crate) fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    pem_blocks(pem, "CERTIFICATE")
}

/// The DER of every block labelled `want` (`CERTIFICATE`, `PUBLIC KEY`) of a PEM text.
pub(crate) fn pem_blocks(pem: &str, want: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let lines: Vec<&str> = pem.lines().map(|l| l.trim_end_matches([' ', '\t', '\r'])).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let begin = i;
        i += 1;
        let Some(label) =
            lines[begin].strip_prefix("-----BEGIN ").and_then(|r| r.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let Some(len) = lines[i..].iter().position(|l| *l == end) else { continue };
        let body_lines = &lines[i..i + len];
        // RFC 1421 headers (`Proc-Type: ...`): Go's certificate pool skips such blocks.
        if label != want || body_lines.iter().any(|l| l.contains(':')) {
            i += len + 1;
            continue;
        }
        let body: String = body_lines
            .iter()
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        // As Go: a block that does not decode is not a block; the search goes on after its
        // BEGIN line (it may have swallowed the next block's).
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
            out.push(der);
            i += len + 1;
        }
    }
    out
}

/// The trust anchors of a PEM bundle; an error only when none of its certificates can be used.
pub(crate) fn trust_anchors(pem: &str) -> Result<Vec<TrustAnchor<'static>>, String> {
    let ders = pem_certificates(pem);
    if ders.is_empty() {
        return Err("the CA PEM holds no certificate".into());
    }
    let mut anchors = Vec::new();
    let mut refused = Vec::new();
    for (i, der) in ders.iter().enumerate() {
        match anchor(der) {
            Ok(a) => anchors.push(a),
            Err(e) => refused.push(format!("certificate {}: {e}", i + 1)),
        }
    }
    if anchors.is_empty() {
        return Err(format!("the CA PEM holds no usable certificate ({})", refused.join("; ")));
    }
    if !refused.is_empty() {
        tracing::warn!(skipped = %refused.join("; "), "CA bundle: certificates skipped, as Vault skips them");
    }
    Ok(anchors)
}

/// One certificate as a trust anchor: webpki's reading when it has one, else the subject, key
/// and name constraints as x509-parser (lenient, like Go's parser) finds them.
fn anchor(der: &[u8]) -> Result<TrustAnchor<'static>, String> {
    if let Ok(a) = webpki::anchor_from_trusted_cert(&CertificateDer::from(der)) {
        return Ok(a.to_owned());
    }
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let subject = der_contents(tbs.subject.as_raw()).ok_or("its subject does not decode")?;
    let spki = der_contents(tbs.subject_pki.raw).ok_or("its public key does not decode")?;
    let mut name_constraints = None;
    for ext in tbs.extensions() {
        if ext.oid == x509_parser::oid_registry::OID_X509_EXT_NAME_CONSTRAINTS {
            let nc = der_contents(ext.value).ok_or("its name constraints do not decode")?;
            name_constraints = Some(Der::from(nc.to_vec()));
        }
    }
    Ok(TrustAnchor {
        subject: Der::from(subject.to_vec()),
        subject_public_key_info: Der::from(spki.to_vec()),
        name_constraints,
    })
}

/// The contents of one DER SEQUENCE (tag and length removed), as trust anchors hold them.
fn der_contents(tlv: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = tlv.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

/// Reads a JSON answer of at most [`MAX_BODY`] bytes; a non-2xx status is an error naming it.
pub(crate) async fn json(mut resp: reqwest::Response) -> Result<Value, String> {
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the answer: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// GETs a JSON document.
pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = client.get(url).send().await.map_err(|e| describe(url, &e))?;
    json(resp).await.map_err(|e| format!("{url}: {e}"))
}

/// A transport error with its causes, which reqwest keeps in the source chain.
pub(crate) fn describe(url: &str, e: &reqwest::Error) -> String {
    let mut msg = format!("{url}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA: &str = include_str!("../testdata/ca/rsa.pem");
    const EC: &str = include_str!("../testdata/ca/ec.pem");
    const ED: &str = include_str!("../testdata/ca/ed.pem");
    const V1: &str = include_str!("../testdata/ca/v1.pem");
    /// A version 2 certificate (made from V1 with the version field added): Go parses it,
    /// webpki refuses it.
    const V2: &str = include_str!("../testdata/ca/v2.pem");
    /// An intermediate CA signed by RSA, given without its root.
    const INT: &str = include_str!("../testdata/ca/int.pem");

    fn count(pem: &str) -> usize {
        trust_anchors(pem).unwrap_or_else(|e| panic!("{e}: {pem}")).len()
    }

    #[test]
    fn every_bundle_vault_accepts_builds_a_client() {
        let bundles = [
            RSA.to_owned(),
            EC.to_owned(),
            ED.to_owned(),
            V1.to_owned(),
            V2.to_owned(),
            INT.to_owned(),
            format!("{RSA}{EC}{INT}"),
            // Comments and text around and between the blocks.
            format!(
                "# kube-root-ca.crt\nsubject=CN = kubernetes\n{RSA}\nissuer: x\n\n{EC}trailing text"
            ),
            // CRLF line ends.
            format!("{RSA}{EC}").replace('\n', "\r\n"),
            // Blanks and tabs at line ends, markers included.
            format!("{RSA}{EC}").replace('\n', " \t\n"),
            // Blocks of other kinds are skipped.
            format!("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n{EC}"),
        ];
        for b in &bundles {
            assert!(count(b) >= 1);
            client(b).unwrap_or_else(|e| panic!("{e}: {b}"));
        }
        assert_eq!(count(&format!("{RSA}{EC}{INT}")), 3);
    }

    #[test]
    fn undecodable_and_header_blocks_are_skipped_as_go_skips_them() {
        let junk = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let headers = format!(
            "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n{}",
            RSA.trim_start_matches("-----BEGIN CERTIFICATE-----\n")
        );
        let not_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert_eq!(count(&format!("{junk}{EC}")), 1);
        assert_eq!(count(&format!("{headers}{EC}")), 1);
        assert_eq!(count(&format!("{not_base64}{EC}")), 1);
        // A block left open swallows nothing: the next one is still found.
        assert_eq!(count(&format!("-----BEGIN CERTIFICATE-----\nAAAA\n{EC}")), 1);
    }

    #[test]
    fn a_bundle_with_no_usable_certificate_is_refused_with_the_reason() {
        assert_eq!(
            trust_anchors("no pem here").expect_err("none"),
            "the CA PEM holds no certificate"
        );
        let junk = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let e = trust_anchors(junk).expect_err("junk");
        assert!(e.starts_with("the CA PEM holds no usable certificate (certificate 1: "), "{e}");
        assert!(client(junk).expect_err("junk").contains("no usable certificate"));
    }

    #[test]
    fn a_lenient_anchor_matches_webpkis_where_both_read_the_certificate() {
        for pem in [RSA, EC, ED, INT] {
            let der = &pem_certificates(pem)[0];
            let cd = CertificateDer::from(der.as_slice());
            let strict = webpki::anchor_from_trusted_cert(&cd).expect("webpki");
            let (_, cert) = x509_parser::parse_x509_certificate(der).expect("x509");
            let tbs = &cert.tbs_certificate;
            assert_eq!(der_contents(tbs.subject.as_raw()), Some(strict.subject.as_ref()));
            assert_eq!(
                der_contents(tbs.subject_pki.raw),
                Some(strict.subject_public_key_info.as_ref())
            );
        }
        assert!(
            webpki::anchor_from_trusted_cert(&CertificateDer::from(
                pem_certificates(V2)[0].as_slice()
            ))
            .is_err(),
            "the version 2 fixture is one webpki refuses"
        );
    }
}
