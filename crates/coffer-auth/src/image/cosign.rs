//! Cosign signatures of an image digest, verified on aws-lc-rs (the project's one crypto provider)
//! with the X.509 crates already in the tree (x509-parser, rustls-webpki).
//!
//! What is verified: a signature in the shape `cosign download signature` prints (one JSON object
//! per signature: `Base64Signature`, `Payload` = base64 of the "simple signing" JSON, and for a
//! keyless signature `Cert`, `Chain` and the Rekor `Bundle`). The payload must be a
//! `cosign container image signature` whose `docker-manifest-digest` is the digest the
//! orchestrator reported and whose `docker-reference` is the image's repository; the signature
//! over the payload's exact bytes must verify with
//! - a trusted public key (PEM `PUBLIC KEY`: ECDSA P-256/SHA-256 as `cosign generate-key-pair`
//!   makes, ECDSA P-384/SHA-384, Ed25519, or RSA PKCS#1 v1.5/SHA-256 of 2048 bits or more), or
//! - keyless: a certificate that chains to the signer's Fulcio root(s) for code signing, whose
//!   OIDC issuer (Fulcio's extension 1.3.6.1.4.1.57264.1.8, or the older .1.1) equals the
//!   signer's `issuer` and whose subject (its e-mail or URI name) matches the signer's `subject`
//!   glob. With a `rekor_public_key`, the Rekor bundle is required: its signed entry timestamp
//!   must verify with that key, its entry must be the `hashedrekord` of this payload, signature
//!   and certificate, and the certificate is checked at the entry's integrated time (Fulcio's
//!   certificates live ten minutes); without one, the certificate must be valid now.
//!
//! Not done: fetching signatures from the image's registry (Coffer has no registry client; the
//! workload presents the signature it was deployed with), the newer protobuf "sigstore bundle"
//! format, Rekor inclusion proofs (the signed entry timestamp is Rekor's promise of inclusion;
//! the proof against a checkpoint is not checked), the Fulcio SCT, and TUF-distributed trust
//! roots (the operator configures the Fulcio root and Rekor key per signer).
//!
//! Why not the `sigstore` crate: with no features at all, sigstore 0.11 depends on `ring`,
//! RustCrypto's `rsa`, `p256`, `p384` and `ed25519-dalek` (three more crypto providers beside
//! aws-lc-rs, one of them with an open timing advisory), ~440 packages in its tree; its cosign
//! feature adds a second HTTP stack (reqwest 0.12, oci-client). The formats checked here are
//! small and stable, so they are verified on the crates Coffer already trusts.

use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_core::glob::glob_match;
use coffer_core::hex::hex;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Map, Value, json};
use x509_parser::extensions::GeneralName;

use crate::outbound;

/// The `type` of a cosign image signature's payload.
const SIGNATURE_TYPE: &str = "cosign container image signature";
/// Extended key usage `codeSigning` (1.3.6.1.5.5.7.3.3), the OID's DER contents.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
const OID_ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const OID_ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// Signatures and certificates are a few KiB; more is not a signature.
const MAX_FIELD: usize = 64 * 1024;

/// A trusted signer of a role: a public key, or a keyless identity (OIDC issuer and subject
/// glob) certified by a Fulcio root.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Signer {
    /// PEM `PUBLIC KEY`; empty for a keyless signer.
    pub(crate) public_key: String,
    pub(crate) issuer: String,
    pub(crate) subject: String,
    /// PEM of the Fulcio root(s) (and intermediates) keyless certificates must chain to.
    pub(crate) fulcio_ca: String,
    /// PEM of the Rekor log's key; empty: no transparency-log check.
    pub(crate) rekor_public_key: String,
}

impl Signer {
    /// Reads one `bound_image_signers` entry: a PEM public key, or an object with either
    /// `public_key` or `issuer`, `subject` and `fulcio_ca` (and optionally `rekor_public_key`).
    pub(crate) fn parse(v: &Value) -> Result<Signer, String> {
        let s = match v {
            Value::String(pem) => Signer { public_key: pem.clone(), ..Signer::default() },
            Value::Object(m) => {
                let allowed = ["public_key", "issuer", "subject", "fulcio_ca", "rekor_public_key"];
                if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
                    return Err(format!("unknown key {k:?} (use {})", allowed.join(", ")));
                }
                let get = |k: &str| -> Result<String, String> {
                    match m.get(k) {
                        None | Some(Value::Null) => Ok(String::new()),
                        Some(Value::String(s)) => Ok(s.clone()),
                        Some(_) => Err(format!("{k:?} must be a string")),
                    }
                };
                Signer {
                    public_key: get("public_key")?,
                    issuer: get("issuer")?,
                    subject: get("subject")?,
                    fulcio_ca: get("fulcio_ca")?,
                    rekor_public_key: get("rekor_public_key")?,
                }
            }
            _ => return Err("an entry must be a PEM public key or an object".into()),
        };
        if !s.public_key.is_empty() {
            if !s.issuer.is_empty() || !s.subject.is_empty() || !s.fulcio_ca.is_empty() {
                return Err("a key signer takes no issuer, subject or fulcio_ca".into());
            }
            Key::from_pem(&s.public_key)?;
            return Ok(s);
        }
        if s.issuer.is_empty() || s.subject.is_empty() || s.fulcio_ca.is_empty() {
            return Err("a keyless signer needs issuer, subject and fulcio_ca".into());
        }
        outbound::trust_anchors(&s.fulcio_ca).map_err(|e| format!("fulcio_ca: {e}"))?;
        if !s.rekor_public_key.is_empty() {
            Key::from_pem(&s.rekor_public_key).map_err(|e| format!("rekor_public_key: {e}"))?;
        }
        Ok(s)
    }

    pub(crate) fn to_json(&self) -> Value {
        if !self.public_key.is_empty() {
            return json!({ "public_key": self.public_key });
        }
        json!({
            "issuer": self.issuer,
            "subject": self.subject,
            "fulcio_ca": self.fulcio_ca,
            "rekor_public_key": self.rekor_public_key,
        })
    }
}

/// A public key of one of the algorithms cosign signs with.
pub(crate) struct Key {
    alg: &'static dyn signature::VerificationAlgorithm,
    bytes: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo DER: how the key is named in token metadata.
    fingerprint: String,
}

impl Key {
    pub(crate) fn from_pem(pem: &str) -> Result<Key, String> {
        let blocks = outbound::pem_blocks(pem, "PUBLIC KEY");
        let [der] = blocks.as_slice() else {
            return Err("expected exactly one PEM \"PUBLIC KEY\" block".into());
        };
        Key::from_spki(der)
    }

    fn from_spki(der: &[u8]) -> Result<Key, String> {
        use x509_parser::prelude::FromDer;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der)
            .map_err(|_| "the public key does not decode".to_owned())?;
        let bytes = spki.subject_public_key.data.to_vec();
        let alg: &'static dyn signature::VerificationAlgorithm =
            match (spki.algorithm.algorithm.to_id_string().as_str(), bytes.len()) {
                ("1.2.840.10045.2.1", 65) => &signature::ECDSA_P256_SHA256_ASN1,
                ("1.2.840.10045.2.1", 97) => &signature::ECDSA_P384_SHA384_ASN1,
                ("1.3.101.112", 32) => &signature::ED25519,
                ("1.2.840.113549.1.1.1", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (oid, _) => return Err(format!("unsupported public key algorithm {oid}")),
            };
        let fingerprint = hex(digest::digest(&digest::SHA256, der).as_ref());
        Ok(Key { alg, bytes, fingerprint })
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(self.alg, &self.bytes).verify(msg, sig).is_ok()
    }
}

/// One presented signature, as `cosign download signature` prints it.
pub(crate) struct Presented {
    signature: Vec<u8>,
    payload: Vec<u8>,
    cert: Option<Vec<u8>>,
    chain: Vec<Vec<u8>>,
    rekor: Option<Rekor>,
}

struct Rekor {
    set: Vec<u8>,
    /// The `Payload` object the signed entry timestamp signs.
    payload: Map<String, Value>,
    integrated_time: u64,
}

impl Presented {
    /// Reads a signature object, or `None` with the reason it is not one (for the audit log).
    pub(crate) fn parse(v: &Value) -> Result<Presented, String> {
        let m = v.as_object().ok_or("a signature must be a JSON object")?;
        let b64 = |k: &str| -> Result<Vec<u8>, String> {
            let s = m.get(k).and_then(Value::as_str).ok_or(format!("{k} is missing"))?;
            if s.len() > MAX_FIELD {
                return Err(format!("{k} is too long"));
            }
            STANDARD.decode(s.trim()).map_err(|_| format!("{k} is not base64"))
        };
        let signature = b64("Base64Signature")?;
        let payload = b64("Payload")?;
        let pem = |k: &str| m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        let cert = match pem("Cert") {
            Some(p) => Some(
                outbound::pem_certificates(p)
                    .into_iter()
                    .next()
                    .ok_or("Cert holds no certificate")?,
            ),
            None => None,
        };
        let chain = pem("Chain").map(outbound::pem_certificates).unwrap_or_default();
        let rekor = match m.get("Bundle") {
            None | Some(Value::Null) => None,
            Some(b) => {
                let set = b
                    .get("SignedEntryTimestamp")
                    .and_then(Value::as_str)
                    .and_then(|s| STANDARD.decode(s).ok())
                    .ok_or("Bundle.SignedEntryTimestamp is missing or not base64")?;
                let payload = b
                    .get("Payload")
                    .and_then(Value::as_object)
                    .cloned()
                    .ok_or("Bundle.Payload is missing")?;
                let integrated_time = payload
                    .get("integratedTime")
                    .and_then(Value::as_u64)
                    .ok_or("Bundle.Payload.integratedTime is missing")?;
                Some(Rekor { set, payload, integrated_time })
            }
        };
        Ok(Presented { signature, payload, cert, chain, rekor })
    }

    /// Whether the payload is a cosign signature of `digest` in `repository` (when known).
    fn names(&self, digest: &str, repository: Option<&str>) -> Result<(), String> {
        let p: Value = serde_json::from_slice(&self.payload)
            .map_err(|_| "the signed payload is not JSON".to_owned())?;
        let c = &p["critical"];
        if c["type"] != SIGNATURE_TYPE {
            return Err("the signed payload is not a cosign container image signature".into());
        }
        if c["image"]["docker-manifest-digest"].as_str() != Some(digest) {
            return Err(format!("the signature is of another digest than {digest}"));
        }
        if let Some(repo) = repository {
            let signed = c["identity"]["docker-reference"].as_str().unwrap_or_default();
            if super::normalize_repository(signed) != repo {
                return Err(format!("the signature names repository {signed:?}, not {repo:?}"));
            }
        }
        Ok(())
    }

    /// The signer's name for token metadata when this signature of `digest` verifies with
    /// `signer`; otherwise why not.
    pub(crate) fn verify(
        &self,
        signer: &Signer,
        digest: &str,
        repository: Option<&str>,
        now: u64,
    ) -> Result<String, String> {
        self.names(digest, repository)?;
        if !signer.public_key.is_empty() {
            let key = Key::from_pem(&signer.public_key)?;
            if !key.verify(&self.payload, &self.signature) {
                return Err("the signature does not verify with a trusted key".into());
            }
            return Ok(format!("key:sha256:{}", key.fingerprint));
        }
        let leaf = self.cert.as_deref().ok_or("a keyless signature needs its certificate")?;
        let at = if signer.rekor_public_key.is_empty() {
            now
        } else {
            let rekor = self.rekor.as_ref().ok_or("the Rekor bundle is missing")?;
            self.check_rekor(rekor, leaf, &signer.rekor_public_key)?;
            rekor.integrated_time
        };
        let anchors = outbound::trust_anchors(&signer.fulcio_ca)?;
        let intermediates: Vec<CertificateDer<'_>> =
            self.chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let leaf_der = CertificateDer::from(leaf);
        let ee = webpki::EndEntityCert::try_from(&leaf_der)
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(Duration::from_secs(at)),
            // Fulcio's own CA certificates may carry no EKU: absent is allowed up the chain,
            // and the leaf's `codeSigning` is required by `identity`.
            webpki::KeyUsage::required_if_present(CODE_SIGNING),
            None,
            None,
        )
        .map_err(|e| format!("the certificate is not trusted for code signing: {e}"))?;
        let (issuer, subject, spki) = identity(leaf)?;
        if issuer != signer.issuer {
            return Err(format!("the certificate's issuer {issuer:?} is not trusted"));
        }
        if !glob_match(&signer.subject, &subject) {
            return Err(format!("the certificate's subject {subject:?} is not trusted"));
        }
        if !Key::from_spki(&spki)?.verify(&self.payload, &self.signature) {
            return Err("the signature does not verify with its certificate".into());
        }
        Ok(subject)
    }

    /// The signed entry timestamp verifies with the log's key, and the entry is this signature.
    fn check_rekor(&self, rekor: &Rekor, leaf: &[u8], key_pem: &str) -> Result<(), String> {
        let key = Key::from_pem(key_pem)?;
        // Rekor signs the canonical JSON (sorted keys, no blanks) of the four fields.
        let signed = canonical(&Value::Object(rekor.payload.clone()));
        if !key.verify(signed.as_bytes(), &rekor.set) {
            return Err("the Rekor signed entry timestamp does not verify".into());
        }
        let body = rekor
            .payload
            .get("body")
            .and_then(Value::as_str)
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or("the Rekor entry's body does not decode")?;
        if body["kind"] != "hashedrekord" {
            return Err("the Rekor entry is not a hashedrekord".into());
        }
        let spec = &body["spec"];
        let hash = hex(digest::digest(&digest::SHA256, &self.payload).as_ref());
        let b64 = |v: &Value| v.as_str().and_then(|s| STANDARD.decode(s).ok());
        let entry_cert = b64(&spec["signature"]["publicKey"]["content"])
            .and_then(|pem| String::from_utf8(pem).ok())
            .and_then(|pem| outbound::pem_certificates(&pem).into_iter().next());
        if spec["data"]["hash"]["algorithm"] != "sha256"
            || spec["data"]["hash"]["value"].as_str() != Some(hash.as_str())
            || b64(&spec["signature"]["content"]).as_deref() != Some(self.signature.as_slice())
            || entry_cert.as_deref() != Some(leaf)
        {
            return Err("the Rekor entry is for another signature".into());
        }
        Ok(())
    }
}

/// The issuer, subject and SubjectPublicKeyInfo DER of a Fulcio certificate.
fn identity(der: &[u8]) -> Result<(String, String, Vec<u8>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| "the certificate does not parse".to_owned())?;
    let mut issuer = None;
    for ext in cert.tbs_certificate.extensions() {
        match ext.oid.to_id_string().as_str() {
            OID_ISSUER_V2 => issuer = der_utf8(ext.value),
            OID_ISSUER_V1 if issuer.is_none() => {
                issuer = std::str::from_utf8(ext.value).ok().map(str::to_owned);
            }
            _ => {}
        }
    }
    let issuer = issuer.ok_or("the certificate names no OIDC issuer")?;
    let code_signing =
        cert.extended_key_usage().ok().flatten().is_some_and(|e| e.value.code_signing);
    if !code_signing {
        return Err("the certificate is not for code signing".into());
    }
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|s| {
            s.value.general_names.iter().find_map(|n| match n {
                GeneralName::RFC822Name(e) => Some((*e).to_owned()),
                GeneralName::URI(u) => Some((*u).to_owned()),
                _ => None,
            })
        })
        .ok_or("the certificate names no subject")?;
    Ok((issuer, san, cert.tbs_certificate.subject_pki.raw.to_vec()))
}

/// The text of a DER UTF8String.
fn der_utf8(v: &[u8]) -> Option<String> {
    let (&tag, rest) = v.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if tag != 0x0c {
        return None;
    }
    let (len, rest) = match len {
        n if n < 0x80 => (usize::from(n), rest),
        0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
        0x82 => (usize::from(*rest.first()?) << 8 | usize::from(*rest.get(1)?), rest.get(2..)?),
        _ => return None,
    };
    (rest.len() == len).then(|| String::from_utf8(rest.to_vec()).ok()).flatten()
}

/// JSON with object keys sorted and no blanks (RFC 8785 for the values Rekor signs: strings
/// and integers).
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};

    use super::*;

    const DIGEST: &str = "sha256:4a5e6bc1a0a0f6a0ba8b1b7c2c3f0d6e1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b";

    fn payload(digest: &str, repo: &str) -> Vec<u8> {
        json!({"critical": {"identity": {"docker-reference": repo},
            "image": {"docker-manifest-digest": digest}, "type": SIGNATURE_TYPE},
            "optional": null})
        .to_string()
        .into_bytes()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", STANDARD.encode(der))
    }

    /// A P-256 key as `cosign generate-key-pair` makes, and its public half as a PEM SPKI.
    fn key() -> (EcdsaKeyPair, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("generate");
        let kp =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                .expect("parse");
        // The SPKI of a P-256 key: a fixed 26-byte header and the 65-byte point.
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(kp.public_key().as_ref());
        (kp, pem("PUBLIC KEY", &spki))
    }

    fn presented(kp: &EcdsaKeyPair, payload: &[u8]) -> Presented {
        let sig = kp.sign(&SystemRandom::new(), payload).expect("sign");
        Presented::parse(&json!({
            "Base64Signature": STANDARD.encode(sig.as_ref()),
            "Payload": STANDARD.encode(payload),
        }))
        .expect("parse")
    }

    #[test]
    fn a_key_signature_of_the_digest_verifies_and_names_the_key() {
        let (kp, public) = key();
        let signer = Signer::parse(&Value::from(public.clone())).expect("signer");
        let p = presented(&kp, &payload(DIGEST, "registry.example/team/web"));
        let name = p.verify(&signer, DIGEST, Some("registry.example/team/web"), 0).expect("ok");
        assert!(name.starts_with("key:sha256:") && name.len() == 11 + 64, "{name}");
        // Another digest, another repository, another key, a flipped payload byte: refused.
        let other = DIGEST.replace("4a5e", "4a5f");
        assert!(
            p.verify(&signer, &other, None, 0).expect_err("refused").contains("another digest")
        );
        assert!(p.verify(&signer, DIGEST, Some("registry.example/x"), 0).is_err());
        let (_, stranger) = key();
        let stranger = Signer::parse(&Value::from(stranger)).expect("signer");
        assert!(p.verify(&stranger, DIGEST, None, 0).is_err());
        let mut forged = presented(&kp, &payload(DIGEST, "registry.example/team/web"));
        forged.payload = payload(DIGEST, "registry.example/team/web ");
        assert!(forged.verify(&signer, DIGEST, None, 0).is_err());
    }

    #[test]
    fn signer_entries_are_checked_when_written() {
        assert!(Signer::parse(&json!("not a pem")).is_err());
        assert!(
            Signer::parse(&json!({"issuer": "https://x"}))
                .expect_err("refused")
                .contains("keyless")
        );
        assert!(Signer::parse(&json!({"public_key": "x", "extra": 1})).is_err());
        assert!(Signer::parse(&json!(3)).is_err());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v = json!({"logIndex": 3, "body": "YQ==", "integratedTime": 17, "logID": "ab"});
        assert_eq!(
            canonical(&v),
            r#"{"body":"YQ==","integratedTime":17,"logID":"ab","logIndex":3}"#
        );
    }

    #[test]
    fn der_utf8_strings() {
        assert_eq!(der_utf8(&[0x0c, 0x03, b'a', b'b', b'c']).as_deref(), Some("abc"));
        assert_eq!(der_utf8(&[0x13, 0x01, b'a']), None);
        assert_eq!(der_utf8(&[0x0c, 0x05, b'a']), None);
    }
}
