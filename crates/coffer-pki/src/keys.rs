//! Key pairs: generation (RSA 2048/3072/4096, EC P-256/P-384/P-521, Ed25519, all by aws-lc-rs
//! through rcgen), the stored form, and the PEM encodings Vault answers with.
//!
//! Guarantees: a private key exists in memory only in [`Zeroizing`] buffers (rcgen's own key
//! object aside, which lives for one signing) and at rest only as a record inside the mount's
//! barrier view; no `Debug` output shows it. Not done: RSA 8192 and EC P-224 (aws-lc-rs does
//! not generate them), imported keys from outside (`keys/import`).

use std::fmt;

use base64::Engine as _;
use coffer_core::{Error, Result};
use rcgen::{KeyPair, PublicKeyData};
use serde::{Deserialize, Serialize};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;
use yasna::Tag;
use zeroize::Zeroizing;

/// The kind and size of a key, as roles and requests name it (`key_type`, `key_bits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySpec {
    Rsa(u32),
    Ec(u32),
    Ed25519,
}

impl KeySpec {
    /// `key_type` and `key_bits` as Vault takes them: 0 bits is the type's default (RSA 2048,
    /// EC 256).
    pub(crate) fn parse(key_type: &str, key_bits: u64) -> Result<Self> {
        match (key_type, key_bits) {
            ("rsa", 0) => Ok(KeySpec::Rsa(2048)),
            ("rsa", b @ (2048 | 3072 | 4096)) => Ok(KeySpec::Rsa(b as u32)),
            ("rsa", b) => Err(Error::invalid(format!("unsupported bit length for RSA key: {b}"))),
            ("ec", 0) => Ok(KeySpec::Ec(256)),
            ("ec", b @ (256 | 384 | 521)) => Ok(KeySpec::Ec(b as u32)),
            ("ec", b) => Err(Error::invalid(format!("unsupported bit length for EC key: {b}"))),
            ("ed25519", _) => Ok(KeySpec::Ed25519),
            (t, _) => Err(Error::invalid(format!(
                "unknown key type {t:?}: use \"rsa\", \"ec\" or \"ed25519\""
            ))),
        }
    }

    pub(crate) fn type_name(self) -> &'static str {
        match self {
            KeySpec::Rsa(_) => "rsa",
            KeySpec::Ec(_) => "ec",
            KeySpec::Ed25519 => "ed25519",
        }
    }

    pub(crate) fn bits(self) -> u32 {
        match self {
            KeySpec::Rsa(b) | KeySpec::Ec(b) => b,
            KeySpec::Ed25519 => 0,
        }
    }

    pub(crate) fn generate(self) -> Result<Key> {
        let kp = match self {
            KeySpec::Rsa(bits) => {
                let size = match bits {
                    3072 => rcgen::RsaKeySize::_3072,
                    4096 => rcgen::RsaKeySize::_4096,
                    _ => rcgen::RsaKeySize::_2048,
                };
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
            }
            KeySpec::Ec(384) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeySpec::Ec(521) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512),
            KeySpec::Ec(_) => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeySpec::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        }
        .map_err(|e| Error::Internal(format!("key generation failed: {e}")))?;
        let key = Key { spec: self, pkcs8: Zeroizing::new(kp.serialize_der()) };
        drop(Signer(kp));
        Ok(key)
    }

    /// The kind and size of the key in a DER SubjectPublicKeyInfo.
    pub(crate) fn of_spki(spki_der: &[u8]) -> Result<Self> {
        let bad = || Error::invalid("the public key is of a type Coffer does not sign");
        let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| bad())?;
        let alg = &spki.algorithm.algorithm;
        if *alg == OID_PKCS1_RSAENCRYPTION {
            let bits = match spki.parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => rsa.key_size() as u32,
                _ => return Err(bad()),
            };
            Ok(KeySpec::Rsa(bits))
        } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve =
                spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).ok_or_else(bad)?;
            match curve {
                c if c == OID_EC_P256 => Ok(KeySpec::Ec(256)),
                c if c == OID_NIST_EC_P384 => Ok(KeySpec::Ec(384)),
                c if c == OID_NIST_EC_P521 => Ok(KeySpec::Ec(521)),
                _ => Err(bad()),
            }
        } else if *alg == OID_SIG_ED25519 {
            Ok(KeySpec::Ed25519)
        } else {
            Err(bad())
        }
    }
}

/// A private key: its kind and its PKCS#8 DER, wiped on drop.
pub(crate) struct Key {
    pub(crate) spec: KeySpec,
    pkcs8: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("spec", &self.spec).finish_non_exhaustive()
    }
}

/// rcgen's key pair, with its copy of the private key wiped when dropped (rcgen keeps one in
/// the clear; aws-lc wipes its own key objects when it frees them).
pub(crate) struct Signer(pub(crate) KeyPair);

impl Drop for Signer {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl PublicKeyData for Signer {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        PublicKeyData::algorithm(&self.0)
    }
}

impl rcgen::SigningKey for Signer {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}

/// A key as stored (inside the barrier): kind, size and the PKCS#8 DER in base64.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredKey {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    pub(crate) key_type: String,
    pub(crate) key_bits: u32,
    pkcs8: Zeroizing<String>,
}

coffer_core::record!(StoredKey, "pki key", 1);

impl StoredKey {
    pub(crate) fn new(id: String, name: String, key: &Key) -> Self {
        StoredKey {
            id,
            name,
            key_type: key.spec.type_name().to_owned(),
            key_bits: key.spec.bits(),
            pkcs8: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*key.pkcs8)),
        }
    }

    pub(crate) fn key(&self) -> Result<Key> {
        let spec = KeySpec::parse(&self.key_type, u64::from(self.key_bits))?;
        let der = base64::engine::general_purpose::STANDARD
            .decode(self.pkcs8.as_bytes())
            .map_err(|_| Error::Internal("stored pki key does not decode".into()))?;
        Ok(Key { spec, pkcs8: Zeroizing::new(der) })
    }
}

impl Key {
    pub(crate) fn from_pkcs8(spec: KeySpec, pkcs8: Vec<u8>) -> Self {
        Key { spec, pkcs8: Zeroizing::new(pkcs8) }
    }

    /// rcgen's signing key, for one use. rcgen picks the signature algorithm from the key
    /// (RSA: PKCS#1 v1.5 with SHA-256; EC: ECDSA with the curve's hash; Ed25519).
    pub(crate) fn key_pair(&self) -> Result<Signer> {
        KeyPair::try_from(self.pkcs8.as_slice())
            .map(Signer)
            .map_err(|e| Error::Internal(format!("stored pki key does not load: {e}")))
    }

    /// The DER SubjectPublicKeyInfo.
    pub(crate) fn spki(&self) -> Result<Vec<u8>> {
        Ok(self.key_pair()?.subject_public_key_info())
    }

    /// `private_key_type` as Vault names it.
    pub(crate) fn type_name(&self) -> &'static str {
        self.spec.type_name()
    }

    /// The private key in PEM: PKCS#8 (`PRIVATE KEY`) when `pkcs8`, else the key type's own
    /// format as Vault's default `private_key_format=der` gives it (`RSA PRIVATE KEY`, `EC
    /// PRIVATE KEY`; Ed25519 has only PKCS#8).
    pub(crate) fn pem(&self, pkcs8: bool) -> Result<Zeroizing<String>> {
        let (label, der) = self.der(pkcs8)?;
        Ok(pem(label, &der))
    }

    /// The private key in DER, with its PEM label (see [`Key::pem`]).
    pub(crate) fn der(&self, pkcs8: bool) -> Result<(&'static str, Zeroizing<Vec<u8>>)> {
        if pkcs8 || self.spec == KeySpec::Ed25519 {
            return Ok(("PRIVATE KEY", self.pkcs8.clone()));
        }
        let bad = |_| Error::Internal("generated key does not parse as PKCS#8".into());
        // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier { oid, params }, OCTET STRING }
        let (curve, inner) = yasna::parse_der(&self.pkcs8, |r| {
            r.read_sequence(|r| {
                r.next().read_u8()?;
                let curve = r.next().read_sequence(|r| {
                    r.next().read_oid()?;
                    r.read_optional(|r| r.read_der())
                })?;
                let inner = r.next().read_bytes()?;
                r.read_optional(|r| r.read_der())?;
                Ok((curve, Zeroizing::new(inner)))
            })
        })
        .map_err(bad)?;
        match self.spec {
            KeySpec::Rsa(_) => Ok(("RSA PRIVATE KEY", inner)),
            _ => {
                // ECPrivateKey as PKCS#8 carries it omits the curve, which a standalone SEC 1
                // key must name.
                let curve = curve.ok_or_else(|| Error::Internal("EC key without curve".into()))?;
                let (d, public) = yasna::parse_der(&inner, |r| {
                    r.read_sequence(|r| {
                        r.next().read_u8()?;
                        let d = Zeroizing::new(r.next().read_bytes()?);
                        r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                        let public = r.read_optional(|r| {
                            r.read_tagged(Tag::context(1), |r| r.read_bitvec_bytes())
                        })?;
                        Ok((d, public))
                    })
                })
                .map_err(bad)?;
                let sec1 = yasna::construct_der(|w| {
                    w.write_sequence(|w| {
                        w.next().write_u8(1);
                        w.next().write_bytes(&d);
                        w.next().write_tagged(Tag::context(0), |w| w.write_der(&curve));
                        if let Some((bits, len)) = &public {
                            w.next().write_tagged(Tag::context(1), |w| {
                                w.write_bitvec_bytes(bits, *len)
                            });
                        }
                    })
                });
                Ok(("EC PRIVATE KEY", Zeroizing::new(sec1)))
            }
        }
    }
}

/// PEM with 64-column lines, as Go's encoder (and so Vault) writes it.
pub(crate) fn pem(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----");
    out
}

/// The DER blocks labelled `label` in a PEM text, in order.
pub(crate) fn pem_blocks(text: &str, label: &str) -> Result<Vec<Vec<u8>>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let stop = after
            .find(&end)
            .ok_or_else(|| Error::invalid(format!("a PEM {label} block has no END line")))?;
        let b64: String = after[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| Error::invalid(format!("a PEM {label} block is not valid base64")))?;
        out.push(der);
        rest = &after[stop + end.len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_generates_and_names_its_public_key() {
        for spec in [KeySpec::Ec(256), KeySpec::Ec(384), KeySpec::Ed25519, KeySpec::Rsa(2048)] {
            let key = spec.generate().expect("generate");
            let spki = key.spki().expect("spki");
            assert_eq!(KeySpec::of_spki(&spki).expect("of_spki"), spec);
            let native = key.pem(false).expect("pem");
            let pkcs8 = key.pem(true).expect("pem");
            assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
            match spec {
                KeySpec::Rsa(_) => assert!(native.starts_with("-----BEGIN RSA PRIVATE KEY-----")),
                KeySpec::Ec(_) => assert!(native.starts_with("-----BEGIN EC PRIVATE KEY-----")),
                KeySpec::Ed25519 => assert_eq!(*native, *pkcs8),
            }
            assert!(!format!("{key:?}").contains(&pkcs8[30..60]));
        }
    }

    #[test]
    fn bad_key_types_and_sizes_are_refused_by_name() {
        assert!(KeySpec::parse("rsa", 1024).expect_err("refused").to_string().contains("1024"));
        assert!(KeySpec::parse("ec", 224).expect_err("refused").to_string().contains("224"));
        assert!(KeySpec::parse("dsa", 0).expect_err("refused").to_string().contains("dsa"));
        assert_eq!(KeySpec::parse("ec", 0).expect("ec"), KeySpec::Ec(256));
    }

    #[test]
    fn pem_round_trips() {
        let p = pem("CERTIFICATE", &[1u8; 100]);
        assert_eq!(pem_blocks(&p, "CERTIFICATE").expect("blocks"), vec![vec![1u8; 100]]);
    }
}
