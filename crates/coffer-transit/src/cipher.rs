//! Encryption and decryption with a transit key, in Vault's wire format:
//! `vault:v<version>:` + base64(nonce ‖ ciphertext ‖ tag) for the AEAD types (96-bit nonce,
//! 128-bit tag), `vault:v<version>:` + base64(RSA-OAEP-SHA256 ciphertext) for RSA keys.
//!
//! Guarantees: a fresh random nonce per encryption, except for convergent keys, whose nonce is
//! Vault's (version 3): the first 12 bytes of HMAC-SHA256 of the plaintext under a key derived
//! together with the encryption key, so the same (context, plaintext) always gives the same
//! ciphertext and nothing else does; versions below `min_decryption_version` are refused;
//! plaintext buffers are zeroized. Not here: batch handling and the HTTP fields.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::key::{ERR_TOO_OLD, KeyType, Policy};
use crate::secret::{SecretBytes, fill_random};
use crate::{ItemError, ItemResult};

const NONCE_LEN: usize = 12;

fn aead_alg(t: KeyType) -> &'static aead::Algorithm {
    match t {
        KeyType::Aes128Gcm96 => &aead::AES_128_GCM,
        KeyType::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        _ => &aead::AES_256_GCM,
    }
}

fn internal(what: &str) -> ItemError {
    ItemError::Internal(format!("transit: {what}"))
}

/// `vault:v<ver>:`
pub(crate) fn prefix(ver: u64) -> String {
    format!("vault:v{ver}:")
}

/// Splits `vault:vN:rest` into (N, rest), with Vault's messages; `what` is "ciphertext" or
/// "signature".
pub(crate) fn split_versioned<'a>(value: &'a str, what: &str) -> ItemResult<(u64, &'a str)> {
    let rest = value
        .strip_prefix("vault:v")
        .ok_or_else(|| ItemError::User(format!("invalid {what}: no prefix")))?;
    let (ver, body) = rest
        .split_once(':')
        .ok_or_else(|| ItemError::User(format!("invalid {what}: wrong number of fields")))?;
    let ver: u64 = ver.parse().map_err(|_| {
        ItemError::User(format!("invalid {what}: version number could not be decoded"))
    })?;
    // Vault's first ciphertexts counted from zero.
    Ok((ver.max(1), body))
}

impl Policy {
    /// Encrypts `plaintext` with version `requested` (0: latest); `nonce` is refused, as in
    /// Vault since convergent version 2.
    pub(crate) fn encrypt(
        &self,
        requested: u64,
        context: &[u8],
        nonce: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> ItemResult<(String, u64)> {
        let t = self.key_type;
        if !t.supports_encryption() {
            return Err(ItemError::User(format!(
                "message encryption not supported for key type {}",
                t.name()
            )));
        }
        let ver = self.encryption_version(requested, "encryption")?;
        let raw = if t.is_rsa() {
            if !aad.is_empty() {
                return Err(ItemError::User(format!(
                    "'associated_data' provided for non-AEAD cipher suite {}",
                    t.name()
                )));
            }
            let key = PrivateDecryptingKey::from_pkcs8(self.version(ver)?.key.expose())
                .map_err(|_| internal("stored rsa key rejected"))?;
            let enc = OaepPublicEncryptingKey::new(key.public_key())
                .map_err(|_| internal("rsa public key"))?;
            let mut out = vec![0u8; enc.ciphertext_size()];
            let n = enc
                .encrypt(&OAEP_SHA256_MGF1SHA256, plaintext, &mut out, None)
                .map_err(|_| {
                    ItemError::User("plaintext too long for RSA-OAEP with this key".into())
                })?
                .len();
            out.truncate(n);
            out
        } else {
            if !nonce.is_empty() {
                return Err(ItemError::User("nonce provided when not allowed".into()));
            }
            let enc_len = t.key_len();
            let mut nonce_bytes = [0u8; NONCE_LEN];
            let enc_key = if self.convergent_encryption {
                let both = self.derive(context, ver, enc_len + 32)?;
                let (ek, hk) = both.expose().split_at(enc_len);
                let tag = aws_lc_rs::hmac::sign(
                    &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, hk),
                    plaintext,
                );
                nonce_bytes.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
                SecretBytes::new(ek.to_vec())
            } else {
                fill_random(&mut nonce_bytes);
                self.symmetric_key(context, ver, enc_len)?
            };
            let key = LessSafeKey::new(
                UnboundKey::new(aead_alg(t), enc_key.expose())
                    .map_err(|_| internal("bad symmetric key length"))?,
            );
            let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
            buf.extend_from_slice(&nonce_bytes);
            buf.extend_from_slice(plaintext);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce_bytes),
                    Aad::from(aad),
                    &mut buf[NONCE_LEN..],
                )
                .map_err(|_| internal("encryption failed"))?;
            buf.extend_from_slice(tag.as_ref());
            buf
        };
        Ok((format!("{}{}", prefix(ver), B64.encode(&raw)), ver))
    }

    /// Decrypts a `vault:vN:` ciphertext; the plaintext in a buffer wiped on drop.
    pub(crate) fn decrypt(
        &self,
        context: &[u8],
        value: &str,
        aad: &[u8],
    ) -> ItemResult<(Zeroizing<Vec<u8>>, u64)> {
        let t = self.key_type;
        if !t.supports_encryption() {
            return Err(ItemError::User(format!(
                "message decryption not supported for key type {}",
                t.name()
            )));
        }
        let (ver, body) = split_versioned(value, "ciphertext")?;
        if ver > self.latest_version {
            return Err(ItemError::User("invalid ciphertext: version is too new".into()));
        }
        if ver < self.min_decryption_version {
            return Err(ItemError::User(ERR_TOO_OLD.into()));
        }
        let mut raw =
            Zeroizing::new(B64.decode(body.trim()).map_err(|_| {
                ItemError::User("invalid ciphertext: could not decode base64".into())
            })?);
        if t.is_rsa() {
            if !aad.is_empty() {
                return Err(ItemError::User(format!(
                    "'associated_data' provided for non-AEAD cipher suite {}",
                    t.name()
                )));
            }
            let key = OaepPrivateDecryptingKey::new(
                PrivateDecryptingKey::from_pkcs8(self.version(ver)?.key.expose())
                    .map_err(|_| internal("stored rsa key rejected"))?,
            )
            .map_err(|_| internal("stored rsa key rejected"))?;
            let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
            let n = key
                .decrypt(&OAEP_SHA256_MGF1SHA256, &raw, &mut out, None)
                .map_err(|_| ItemError::User("failed to RSA decrypt the ciphertext".into()))?
                .len();
            out.truncate(n);
            return Ok((out, ver));
        }
        if raw.len() < NONCE_LEN + 16 {
            return Err(ItemError::User("invalid ciphertext length".into()));
        }
        let key_bytes = self.symmetric_key(context, ver, t.key_len())?;
        let key = LessSafeKey::new(
            UnboundKey::new(aead_alg(t), key_bytes.expose())
                .map_err(|_| internal("bad symmetric key length"))?,
        );
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut raw[NONCE_LEN..],
            )
            .map_err(|_| ItemError::User("cipher: message authentication failed".into()))?
            .len();
        let out = Zeroizing::new(raw[NONCE_LEN..NONCE_LEN + plain_len].to_vec());
        Ok((out, ver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NewKey;

    fn key(t: KeyType, derived: bool, convergent: bool) -> Policy {
        Policy::create(
            "k",
            &NewKey {
                key_type: t,
                derived,
                convergent,
                exportable: false,
                allow_plaintext_backup: false,
                auto_rotate_period: 0,
                key_size: 32,
            },
        )
        .expect("key")
    }

    #[test]
    fn every_encryption_type_round_trips_with_associated_data() {
        for t in [KeyType::Aes128Gcm96, KeyType::Aes256Gcm96, KeyType::ChaCha20Poly1305] {
            let k = key(t, false, false);
            let (c, v) = k.encrypt(0, b"", b"", b"hello", b"ad").expect("enc");
            assert!(c.starts_with("vault:v1:"), "{c}");
            assert_eq!(v, 1);
            let raw = B64.decode(&c[9..]).expect("b64");
            assert_eq!(raw.len(), 12 + 5 + 16, "nonce || ciphertext || tag");
            assert_eq!(k.decrypt(b"", &c, b"ad").expect("dec").0.as_slice(), b"hello");
            assert!(k.decrypt(b"", &c, b"other").is_err(), "associated data is authenticated");
        }
        let k = key(KeyType::Rsa2048, false, false);
        let (c, _) = k.encrypt(0, b"", b"", b"hello", b"").expect("rsa enc");
        assert_eq!(k.decrypt(b"", &c, b"").expect("rsa dec").0.as_slice(), b"hello");
    }

    #[test]
    fn aes_gcm_ciphertext_is_the_standard_layout() {
        // Decrypting by hand with the raw key proves the byte layout Vault documents.
        let k = key(KeyType::Aes256Gcm96, false, false);
        let (c, _) = k.encrypt(0, b"", b"", b"layout", b"").expect("enc");
        let mut raw = B64.decode(&c[9..]).expect("b64");
        let (nonce, rest) = raw.split_at_mut(12);
        let lk = LessSafeKey::new(
            UnboundKey::new(&aead::AES_256_GCM, k.version(1).expect("v1").key.expose()).expect("k"),
        );
        let n = Nonce::try_assume_unique_for_key(nonce).expect("nonce");
        assert_eq!(lk.open_in_place(n, Aad::empty(), rest).expect("open"), b"layout");
    }

    #[test]
    fn convergent_encryption_is_deterministic_per_context_and_derived_keys_differ() {
        let k = key(KeyType::Aes256Gcm96, true, true);
        let a = k.encrypt(0, b"ctx-a", b"", b"same", b"").expect("a").0;
        let a2 = k.encrypt(0, b"ctx-a", b"", b"same", b"").expect("a2").0;
        let b = k.encrypt(0, b"ctx-b", b"", b"same", b"").expect("b").0;
        let other = k.encrypt(0, b"ctx-a", b"", b"different", b"").expect("c").0;
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_ne!(a, other);
        assert!(k.decrypt(b"ctx-b", &a, b"").is_err(), "another context's key cannot open it");
        assert_eq!(k.decrypt(b"ctx-a", &a, b"").expect("dec").0.as_slice(), b"same");
        assert!(k.encrypt(0, b"", b"", b"x", b"").is_err(), "derived keys need a context");
        assert!(k.encrypt(0, b"ctx", b"123456789012", b"x", b"").is_err(), "no nonce");
    }

    #[test]
    fn versions_below_min_decryption_version_are_refused() {
        let mut k = key(KeyType::Aes256Gcm96, false, false);
        let (old, _) = k.encrypt(0, b"", b"", b"v1", b"").expect("enc");
        k.rotate().expect("rotate");
        let (new, v) = k.encrypt(0, b"", b"", b"v2", b"").expect("enc");
        assert_eq!(v, 2);
        assert!(new.starts_with("vault:v2:"));
        assert_eq!(k.decrypt(b"", &old, b"").expect("old").0.as_slice(), b"v1");
        k.min_decryption_version = 2;
        let e = k.decrypt(b"", &old, b"").expect_err("too old");
        assert_eq!(e.message(), ERR_TOO_OLD);
        assert!(k.decrypt(b"", "vault:v9:AAAA", b"").is_err());
        assert!(k.decrypt(b"", "nope", b"").is_err());
        assert!(k.decrypt(b"", "vault:v2:!!!", b"").is_err());
        assert!(k.decrypt(b"", "vault:v2:AAAA", b"").is_err());
    }
}
