//! Hashes, HMACs and signatures with a transit key, in Vault's formats: `vault:v<N>:` +
//! base64 of the HMAC or signature (base64url without padding for `marshaling_algorithm=jws`).
//!
//! Guarantees: HMAC comparison is constant-time; ECDSA signs the message digest exactly as Go's
//! `ecdsa.Sign` does for any hash (the digest truncated to the curve order's length, or
//! left-padded with zeros, which is the same integer), so a signature verifies with `openssl`
//! and with Vault; RSA-PSS signs with a salt as long as the digest. Not supported (refused with
//! a 400 naming it): `sha3-224` (no implementation in aws-lc-rs), RSA with a hash other than
//! SHA-2 256/384/512, and `hash_algorithm=none` (raw PKCS#1 v1.5 without DigestInfo).

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::cipher::{prefix, split_versioned};
use crate::key::{ERR_TOO_OLD, KeyType, Policy, ecdsa_alg};
use crate::{ItemError, ItemResult};

/// Vault's hash names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    None,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    Sha3_512,
}

impl Hash {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Hash::None,
            "sha1" => Hash::Sha1,
            "sha2-224" => Hash::Sha224,
            "sha2-256" => Hash::Sha256,
            "sha2-384" => Hash::Sha384,
            "sha2-512" => Hash::Sha512,
            "sha3-224" => Hash::Sha3_224,
            "sha3-256" => Hash::Sha3_256,
            "sha3-384" => Hash::Sha3_384,
            "sha3-512" => Hash::Sha3_512,
            _ => return None,
        })
    }

    /// The aws-lc-rs digest; an error for the names it has none for.
    pub(crate) fn digest_alg(self, name: &str) -> ItemResult<&'static digest::Algorithm> {
        Ok(match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha224 => &digest::SHA224,
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
            Hash::Sha3_256 => &digest::SHA3_256,
            Hash::Sha3_384 => &digest::SHA3_384,
            Hash::Sha3_512 => &digest::SHA3_512,
            Hash::None | Hash::Sha3_224 => {
                return Err(ItemError::User(format!("unsupported hash algorithm {name}")));
            }
        })
    }
}

/// Vault's answers for an ECDSA signature that is not DER `SEQUENCE { INTEGER, INTEGER }`: it
/// is refused (400) rather than merely invalid.
fn check_asn1_signature(raw: &[u8]) -> ItemResult<()> {
    let invalid = || ItemError::User("supplied signature is invalid".into());
    let (tag, body, rest) = crate::der::tlv(raw).ok_or_else(invalid)?;
    let (t1, _, after_r) = crate::der::tlv(body).ok_or_else(invalid)?;
    let (t2, _, after_s) = crate::der::tlv(after_r).ok_or_else(invalid)?;
    if tag != 0x30 || t1 != 0x02 || t2 != 0x02 || !after_s.is_empty() {
        return Err(invalid());
    }
    if !rest.is_empty() {
        return Err(ItemError::User("supplied signature contains extra data".into()));
    }
    Ok(())
}

/// HMAC (RFC 2104) over any of the digests, so the SHA-3 family works as in Vault.
pub(crate) fn hmac(alg: &'static digest::Algorithm, key: &[u8], msg: &[u8]) -> Vec<u8> {
    let block = alg.block_len();
    let mut k = Zeroizing::new(vec![0u8; block]);
    if key.len() > block {
        let d = digest::digest(alg, key);
        k[..d.as_ref().len()].copy_from_slice(d.as_ref());
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = digest::Context::new(alg);
    let ipad: Zeroizing<Vec<u8>> = Zeroizing::new(k.iter().map(|b| b ^ 0x36).collect());
    inner.update(&ipad);
    inner.update(msg);
    let inner = inner.finish();
    let mut outer = digest::Context::new(alg);
    let opad: Zeroizing<Vec<u8>> = Zeroizing::new(k.iter().map(|b| b ^ 0x5c).collect());
    outer.update(&opad);
    outer.update(inner.as_ref());
    outer.finish().as_ref().to_vec()
}

/// What `sign/` and `verify/` were asked for.
pub(crate) struct SignOptions<'a> {
    pub(crate) hash: Hash,
    pub(crate) hash_name: &'a str,
    pub(crate) prehashed: bool,
    /// `pss` (default) or `pkcs1v15`; RSA only.
    pub(crate) rsa_pss: bool,
    pub(crate) jws: bool,
}

/// The digest size each curve's signing algorithm in aws-lc-rs takes (see [`ecdsa_alg`]).
fn curve_digest(t: KeyType) -> &'static digest::Algorithm {
    match t {
        KeyType::EcdsaP384 => &digest::SHA384,
        KeyType::EcdsaP521 => &digest::SHA512,
        _ => &digest::SHA256,
    }
}

/// `h` as the integer Go's ECDSA signs: the leading bytes when longer than the curve's
/// digest size (P-256, P-384: exactly the order's bit length), else zero-padded on the left.
fn ecdsa_digest(t: KeyType, h: &[u8]) -> ItemResult<Digest> {
    let alg = curve_digest(t);
    let n = alg.output_len();
    let mut buf = [0u8; digest::MAX_OUTPUT_LEN];
    if h.len() >= n {
        buf[..n].copy_from_slice(&h[..n]);
    } else {
        buf[n - h.len()..n].copy_from_slice(h);
    }
    Digest::import_less_safe(&buf[..n], alg)
        .map_err(|_| ItemError::Internal("transit: digest import failed".into()))
}

fn rsa_encoding(
    hash: Hash,
    pss: bool,
    name: &str,
) -> ItemResult<(&'static dyn signature::RsaEncoding, &'static signature::RsaParameters)> {
    Ok(match (hash, pss) {
        (Hash::Sha256, true) => (&signature::RSA_PSS_SHA256, &signature::RSA_PSS_2048_8192_SHA256),
        (Hash::Sha384, true) => (&signature::RSA_PSS_SHA384, &signature::RSA_PSS_2048_8192_SHA384),
        (Hash::Sha512, true) => (&signature::RSA_PSS_SHA512, &signature::RSA_PSS_2048_8192_SHA512),
        (Hash::Sha256, false) => {
            (&signature::RSA_PKCS1_SHA256, &signature::RSA_PKCS1_2048_8192_SHA256)
        }
        (Hash::Sha384, false) => {
            (&signature::RSA_PKCS1_SHA384, &signature::RSA_PKCS1_2048_8192_SHA384)
        }
        (Hash::Sha512, false) => {
            (&signature::RSA_PKCS1_SHA512, &signature::RSA_PKCS1_2048_8192_SHA512)
        }
        _ => {
            return Err(ItemError::User(format!(
                "hash algorithm {name} is not supported with RSA keys; use sha2-256, sha2-384 or sha2-512"
            )));
        }
    })
}

/// The digest of `input` unless the caller hashed it already.
fn message_digest(o: &SignOptions<'_>, input: &[u8]) -> ItemResult<Vec<u8>> {
    if o.prehashed {
        return Ok(input.to_vec());
    }
    Ok(digest::digest(o.hash.digest_alg(o.hash_name)?, input).as_ref().to_vec())
}

impl Policy {
    /// Signs `input` with version `requested` (0: latest); the signature and the version.
    pub(crate) fn sign(
        &self,
        requested: u64,
        context: &[u8],
        input: &[u8],
        o: &SignOptions<'_>,
    ) -> ItemResult<(String, u64, Option<String>)> {
        let t = self.key_type;
        if !t.supports_signing() {
            return Err(ItemError::User(format!(
                "message signing not supported for key type {}",
                t.name()
            )));
        }
        let ver = self.encryption_version(requested, "signing")?;
        let internal = |w: &str| ItemError::Internal(format!("transit: {w}"));
        let mut public_key = None;
        let sig: Vec<u8> = if t == KeyType::Ed25519 {
            let kp = self.ed25519(context, ver)?;
            if self.derived {
                use aws_lc_rs::signature::KeyPair;
                public_key = Some(B64.encode(kp.public_key().as_ref()));
            }
            kp.sign(input).as_ref().to_vec()
        } else if t.is_ecdsa() {
            let h = message_digest(o, input)?;
            let kp = signature::EcdsaKeyPair::from_pkcs8(
                ecdsa_alg(t, o.jws),
                self.version(ver)?.key.expose(),
            )
            .map_err(|_| internal("stored ecdsa key rejected"))?;
            kp.sign_digest(&ecdsa_digest(t, &h)?)
                .map_err(|_| internal("ecdsa signing failed"))?
                .as_ref()
                .to_vec()
        } else {
            let (enc, _) = rsa_encoding(o.hash, o.rsa_pss, o.hash_name)?;
            let alg = o.hash.digest_alg(o.hash_name)?;
            let h = message_digest(o, input)?;
            let d = Digest::import_less_safe(&h, alg).map_err(|_| {
                ItemError::User(format!(
                    "prehashed input must be a {}-byte {} digest",
                    alg.output_len(),
                    o.hash_name
                ))
            })?;
            let kp = rsa::KeyPair::from_pkcs8(self.version(ver)?.key.expose())
                .map_err(|_| internal("stored rsa key rejected"))?;
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign_digest(enc, &d, &mut sig).map_err(|_| internal("rsa signing failed"))?;
            sig
        };
        let encoded = if o.jws { B64URL.encode(&sig) } else { B64.encode(&sig) };
        Ok((format!("{}{encoded}", prefix(ver)), ver, public_key))
    }

    /// Whether `sig` (`vault:vN:...`) is a valid signature of `input`.
    pub(crate) fn verify(
        &self,
        context: &[u8],
        input: &[u8],
        sig: &str,
        o: &SignOptions<'_>,
    ) -> ItemResult<bool> {
        let t = self.key_type;
        if !t.supports_signing() {
            return Err(ItemError::User(format!(
                "message verification not supported for key type {}",
                t.name()
            )));
        }
        let (ver, body) = split_versioned(sig, "signature")?;
        if ver > self.latest_version {
            return Err(ItemError::User("invalid signature: version is too new".into()));
        }
        if ver < self.min_decryption_version {
            return Err(ItemError::User(ERR_TOO_OLD.into()));
        }
        let raw = if o.jws { B64URL.decode(body) } else { B64.decode(body) }
            .map_err(|_| ItemError::User("invalid base64 signature value".into()))?;
        if t == KeyType::Ed25519 {
            use aws_lc_rs::signature::KeyPair;
            let kp = self.ed25519(context, ver)?;
            let pk = UnparsedPublicKey::new(&signature::ED25519, kp.public_key().as_ref());
            return Ok(pk.verify(input, &raw).is_ok());
        }
        let spki = self.spki(self.version(ver)?)?;
        if t.is_ecdsa() {
            let h = message_digest(o, input)?;
            let alg: &'static signature::EcdsaVerificationAlgorithm = match (t, o.jws) {
                (KeyType::EcdsaP384, false) => &signature::ECDSA_P384_SHA384_ASN1,
                (KeyType::EcdsaP384, true) => &signature::ECDSA_P384_SHA384_FIXED,
                (KeyType::EcdsaP521, false) => &signature::ECDSA_P521_SHA512_ASN1,
                (KeyType::EcdsaP521, true) => &signature::ECDSA_P521_SHA512_FIXED,
                (_, false) => &signature::ECDSA_P256_SHA256_ASN1,
                (_, true) => &signature::ECDSA_P256_SHA256_FIXED,
            };
            if !o.jws {
                check_asn1_signature(&raw)?;
            }
            let pk = UnparsedPublicKey::new(alg, &spki);
            return Ok(pk.verify_digest(&ecdsa_digest(t, &h)?, &raw).is_ok());
        }
        let (_, params) = rsa_encoding(o.hash, o.rsa_pss, o.hash_name)?;
        let alg = o.hash.digest_alg(o.hash_name)?;
        let h = message_digest(o, input)?;
        let d = Digest::import_less_safe(&h, alg).map_err(|_| {
            ItemError::User(format!(
                "prehashed input must be a {}-byte {} digest",
                alg.output_len(),
                o.hash_name
            ))
        })?;
        let pk = UnparsedPublicKey::new(params, &spki);
        Ok(pk.verify_digest(&d, &raw).is_ok())
    }

    /// The HMAC key of `ver`: the key itself for `hmac` keys, else the version's HMAC key.
    pub(crate) fn hmac_of(&self, ver: u64) -> ItemResult<&[u8]> {
        let k = self.version(ver)?;
        Ok(if self.key_type == KeyType::Hmac { k.key.expose() } else { k.hmac_key.expose() })
    }

    /// `vault:vN:` + base64(HMAC(input)).
    pub(crate) fn hmac_value(
        &self,
        requested: u64,
        alg: &'static digest::Algorithm,
        input: &[u8],
    ) -> ItemResult<String> {
        let ver = if requested == 0 { self.latest_version } else { requested };
        if ver > self.latest_version {
            return Err(ItemError::User("invalid key version".into()));
        }
        if ver < self.min_encryption_version {
            return Err(ItemError::User(
                "cannot generate HMAC: version is too old (disallowed by policy)".into(),
            ));
        }
        Ok(format!("{}{}", prefix(ver), B64.encode(hmac(alg, self.hmac_of(ver)?, input))))
    }

    /// Whether `given` (`vault:vN:...`) is the HMAC of `input`, compared in constant time.
    pub(crate) fn hmac_verify(
        &self,
        alg: &'static digest::Algorithm,
        input: &[u8],
        given: &str,
    ) -> ItemResult<bool> {
        let (ver, body) = split_versioned(given, "hmac")?;
        if ver > self.latest_version {
            return Err(ItemError::User("invalid hmac: version is too new".into()));
        }
        if ver < self.min_decryption_version {
            return Err(ItemError::User(ERR_TOO_OLD.into()));
        }
        let given =
            B64.decode(body).map_err(|_| ItemError::User("invalid base64 hmac value".into()))?;
        let want = hmac(alg, self.hmac_of(ver)?, input);
        Ok(want.len() == given.len() && bool::from(want.ct_eq(&given)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NewKey;

    fn key(t: KeyType) -> Policy {
        Policy::create(
            "k",
            &NewKey {
                key_type: t,
                derived: false,
                convergent: false,
                exportable: true,
                allow_plaintext_backup: false,
                auto_rotate_period: 0,
                key_size: 32,
            },
        )
        .expect("key")
    }

    fn opts(hash: &str, jws: bool, pss: bool) -> SignOptions<'_> {
        SignOptions {
            hash: Hash::parse(hash).expect("hash"),
            hash_name: hash,
            prehashed: false,
            rsa_pss: pss,
            jws,
        }
    }

    #[test]
    fn hmac_matches_aws_lc_for_sha2() {
        let key = b"k3y";
        let ours = hmac(&digest::SHA256, key, b"msg");
        let theirs = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key),
            b"msg",
        );
        assert_eq!(ours, theirs.as_ref());
        let long_key = [9u8; 200];
        let ours = hmac(&digest::SHA512, &long_key, b"msg");
        let theirs = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA512, &long_key),
            b"msg",
        );
        assert_eq!(ours, theirs.as_ref());
    }

    #[test]
    fn every_signing_type_signs_and_verifies_and_a_changed_input_fails() {
        for t in [
            KeyType::Ed25519,
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::EcdsaP521,
            KeyType::Rsa2048,
        ] {
            for hash in ["sha2-256", "sha2-384", "sha2-512"] {
                for jws in [false, true] {
                    for pss in [true, false] {
                        let k = key(t);
                        let o = opts(hash, jws, pss);
                        let (sig, v, _) = k.sign(0, b"", b"input", &o).expect("sign");
                        assert_eq!(v, 1);
                        assert!(k.verify(b"", b"input", &sig, &o).expect("verify"), "{t:?} {hash}");
                        assert!(!k.verify(b"", b"other", &sig, &o).expect("verify"), "{t:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn hmac_verification_accepts_its_own_and_nothing_else() {
        let k = key(KeyType::Hmac);
        let h = k.hmac_value(0, &digest::SHA3_256, b"data").expect("hmac");
        assert!(h.starts_with("vault:v1:"));
        assert!(k.hmac_verify(&digest::SHA3_256, b"data", &h).expect("verify"));
        assert!(!k.hmac_verify(&digest::SHA3_256, b"datb", &h).expect("verify"));
        assert!(!k.hmac_verify(&digest::SHA256, b"data", &h).expect("verify"));
    }

    #[test]
    fn unsupported_hashes_are_named() {
        let k = key(KeyType::Rsa2048);
        let e = k.sign(0, b"", b"x", &opts("sha1", false, true)).expect_err("sha1");
        assert!(e.message().contains("sha1"), "{}", e.message());
        assert!(Hash::Sha3_224.digest_alg("sha3-224").is_err());
    }
}
