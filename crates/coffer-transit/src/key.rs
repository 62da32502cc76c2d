//! A named transit key (Vault's "policy"): its type, settings and every kept version's material,
//! stored as one record in the engine's barrier view (`policy/<name>`).
//!
//! Guarantees: private and symmetric material is held only in [`SecretBytes`] (zeroized, never
//! printed) and leaves this module only through the export and backup paths, which check
//! `exportable` / `allow_plaintext_backup` first; derived keys are computed with Vault's KDF
//! (HKDF-SHA256, no salt, the context as info) and never stored; version bookkeeping follows
//! Vault's (`min_decryption_version` ≥ 1, `min_encryption_version` 0 = latest,
//! `min_available_version` = the oldest version still stored). Not here: the HTTP fields
//! (see the `paths_*` modules) and the ciphers (see `cipher` and `sign`).

use std::collections::BTreeMap;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{self, KeyPair};
use aws_lc_rs::{hkdf, rsa};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use coffer_core::time::{now_unix, rfc3339};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::der::{pem, pkcs8_inner};
use crate::secret::SecretBytes;
use crate::{ItemError, ItemResult};

/// Vault's key types, with Vault's names on the wire and in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KeyType {
    #[serde(rename = "aes128-gcm96")]
    Aes128Gcm96,
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "ecdsa-p521")]
    EcdsaP521,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
    #[serde(rename = "hmac")]
    Hmac,
}

impl KeyType {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            KeyType::Aes128Gcm96 => "aes128-gcm96",
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::EcdsaP521 => "ecdsa-p521",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::Hmac => "hmac",
        }
    }

    pub(crate) fn is_aead(self) -> bool {
        matches!(self, KeyType::Aes128Gcm96 | KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305)
    }

    pub(crate) fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }

    pub(crate) fn is_ecdsa(self) -> bool {
        matches!(self, KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521)
    }

    pub(crate) fn supports_encryption(self) -> bool {
        self.is_aead() || self.is_rsa()
    }

    pub(crate) fn supports_signing(self) -> bool {
        self.is_ecdsa() || self.is_rsa() || self == KeyType::Ed25519
    }

    pub(crate) fn supports_derivation(self) -> bool {
        self.is_aead() || self == KeyType::Ed25519
    }

    /// Bytes of the symmetric key (the AEAD key, or the derivation base of a derived key).
    pub(crate) fn key_len(self) -> usize {
        match self {
            KeyType::Aes128Gcm96 => 16,
            _ => 32,
        }
    }

    /// The curve's name as Go's `elliptic` package reports it (Vault's `keys.N.name`).
    fn curve_name(self) -> &'static str {
        match self {
            KeyType::EcdsaP384 => "P-384",
            KeyType::EcdsaP521 => "P-521",
            _ => "P-256",
        }
    }
}

/// The default HMAC key size, and Vault's bounds for `key_size`.
pub(crate) const HMAC_DEFAULT_KEY_SIZE: u64 = 32;
pub(crate) const HMAC_MIN_KEY_SIZE: u64 = 32;
pub(crate) const HMAC_MAX_KEY_SIZE: u64 = 512;

/// Vault's current convergent-encryption scheme: the nonce is an HMAC of the plaintext under a
/// key derived with the encryption key.
pub(crate) const CONVERGENT_VERSION: u64 = 3;

/// Vault's error for a version below `min_decryption_version`.
pub(crate) const ERR_TOO_OLD: &str =
    "ciphertext or signature version is disallowed by policy (too old)";

/// One version of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyVersion {
    /// Unix seconds.
    pub(crate) creation_time: u64,
    /// AEAD or HMAC key, derivation base (derived keys), or PKCS#8 private key (asymmetric).
    pub(crate) key: SecretBytes,
    /// The version's HMAC key, for `hmac/` with a key that is not of type `hmac` (as Vault).
    pub(crate) hmac_key: SecretBytes,
    /// Vault's formatted public key: PEM for ECDSA and RSA, base64 for Ed25519; empty for
    /// symmetric and derived keys.
    #[serde(default)]
    pub(crate) public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Stamp {
    pub(crate) time: String,
    pub(crate) version: u64,
}

/// A named key and all its kept versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Policy {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) key_type: KeyType,
    pub(crate) derived: bool,
    pub(crate) convergent_encryption: bool,
    #[serde(default)]
    pub(crate) convergent_version: u64,
    pub(crate) exportable: bool,
    pub(crate) allow_plaintext_backup: bool,
    pub(crate) deletion_allowed: bool,
    /// Seconds; 0: never.
    pub(crate) auto_rotate_period: u64,
    pub(crate) min_decryption_version: u64,
    pub(crate) min_encryption_version: u64,
    pub(crate) min_available_version: u64,
    pub(crate) latest_version: u64,
    /// HMAC keys only: bytes of key material.
    #[serde(default)]
    pub(crate) key_size: u64,
    pub(crate) keys: BTreeMap<u64, KeyVersion>,
    #[serde(default)]
    pub(crate) backup_info: Option<Stamp>,
    #[serde(default)]
    pub(crate) restore_info: Option<Stamp>,
}

coffer_core::record!(Policy, "transit key", 1);

/// What a new key is made with.
pub(crate) struct NewKey {
    pub(crate) key_type: KeyType,
    pub(crate) derived: bool,
    pub(crate) convergent: bool,
    pub(crate) exportable: bool,
    pub(crate) allow_plaintext_backup: bool,
    pub(crate) auto_rotate_period: u64,
    pub(crate) key_size: u64,
}

fn internal(what: &str) -> ItemError {
    ItemError::Internal(format!("transit: {what}"))
}

impl Policy {
    pub(crate) fn create(name: &str, n: &NewKey) -> ItemResult<Self> {
        let mut p = Policy {
            name: name.to_owned(),
            key_type: n.key_type,
            derived: n.derived,
            convergent_encryption: n.convergent,
            convergent_version: if n.convergent { CONVERGENT_VERSION } else { 0 },
            exportable: n.exportable,
            allow_plaintext_backup: n.allow_plaintext_backup,
            deletion_allowed: false,
            auto_rotate_period: n.auto_rotate_period,
            min_decryption_version: 1,
            min_encryption_version: 0,
            min_available_version: 0,
            latest_version: 0,
            key_size: if n.key_type == KeyType::Hmac { n.key_size } else { 0 },
            keys: BTreeMap::new(),
            backup_info: None,
            restore_info: None,
        };
        p.rotate()?;
        Ok(p)
    }

    /// Adds a new latest version with fresh material.
    pub(crate) fn rotate(&mut self) -> ItemResult<()> {
        self.rotate_at(now_unix())
    }

    /// [`Policy::rotate`], the new version created at `now` (the rotation task's clock).
    pub(crate) fn rotate_at(&mut self, now: u64) -> ItemResult<()> {
        let mut v = self.generate()?;
        v.creation_time = now;
        self.latest_version += 1;
        self.keys.insert(self.latest_version, v);
        Ok(())
    }

    fn generate(&self) -> ItemResult<KeyVersion> {
        let t = self.key_type;
        let (key, public_key) = match t {
            KeyType::Aes128Gcm96 | KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305 => {
                (SecretBytes::random(t.key_len()), String::new())
            }
            KeyType::Hmac => (SecretBytes::random(self.key_size as usize), String::new()),
            // A derived Ed25519 key is a derivation base; each context makes its own key pair.
            KeyType::Ed25519 if self.derived => (SecretBytes::random(32), String::new()),
            KeyType::Ed25519 => {
                let kp = signature::Ed25519KeyPair::generate()
                    .map_err(|_| internal("ed25519 key generation failed"))?;
                let doc: Pkcs8V1Der<'_> =
                    kp.as_der().map_err(|_| internal("ed25519 key does not encode"))?;
                (SecretBytes::new(doc.as_ref().to_vec()), B64.encode(kp.public_key().as_ref()))
            }
            KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
                let kp = signature::EcdsaKeyPair::generate(ecdsa_alg(t, false))
                    .map_err(|_| internal("ecdsa key generation failed"))?;
                let doc = kp.to_pkcs8v1().map_err(|_| internal("ecdsa key does not encode"))?;
                let spki: PublicKeyX509Der<'_> =
                    kp.public_key().as_der().map_err(|_| internal("ecdsa public key"))?;
                (SecretBytes::new(doc.as_ref().to_vec()), pem("PUBLIC KEY", spki.as_ref()))
            }
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let size = match t {
                    KeyType::Rsa2048 => rsa::KeySize::Rsa2048,
                    KeyType::Rsa3072 => rsa::KeySize::Rsa3072,
                    _ => rsa::KeySize::Rsa4096,
                };
                let kp = rsa::KeyPair::generate(size)
                    .map_err(|_| internal("rsa key generation failed"))?;
                let doc: Pkcs8V1Der<'_> =
                    kp.as_der().map_err(|_| internal("rsa key does not encode"))?;
                let spki: PublicKeyX509Der<'_> =
                    kp.public_key().as_der().map_err(|_| internal("rsa public key"))?;
                (SecretBytes::new(doc.as_ref().to_vec()), pem("PUBLIC KEY", spki.as_ref()))
            }
        };
        Ok(KeyVersion {
            creation_time: now_unix(),
            key,
            hmac_key: SecretBytes::random(32),
            public_key,
        })
    }

    pub(crate) fn version(&self, ver: u64) -> ItemResult<&KeyVersion> {
        self.keys.get(&ver).ok_or_else(|| ItemError::User("no such key version".into()))
    }

    /// The version an encryption or signature uses: `0` is the latest.
    pub(crate) fn encryption_version(&self, requested: u64, what: &str) -> ItemResult<u64> {
        match requested {
            0 => Ok(self.latest_version),
            v if v > self.latest_version => Err(ItemError::User(format!(
                "requested version for {what} is higher than the latest key version"
            ))),
            v if v < self.min_encryption_version => Err(ItemError::User(format!(
                "requested version for {what} is less than the minimum encryption key version"
            ))),
            v => Ok(v),
        }
    }

    /// Vault's KDF: HKDF-SHA256 over the version's base key, no salt, the context as info.
    pub(crate) fn derive(&self, context: &[u8], ver: u64, len: usize) -> ItemResult<SecretBytes> {
        if !self.key_type.supports_derivation() {
            return Err(ItemError::User(format!(
                "derivation not supported for key type {}",
                self.key_type.name()
            )));
        }
        if context.is_empty() {
            return Err(ItemError::User(
                "missing 'context' for key derivation; the key was created using a derived key, \
                 which means additional, per-request information must be included in order to \
                 perform operations with the key"
                    .into(),
            ));
        }
        let base = self.version(ver)?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(base.key.expose());
        let info = [context];
        let okm = prk.expand(&info, Len(len)).map_err(|_| internal("key derivation failed"))?;
        let mut out = SecretBytes::new(vec![0u8; len]);
        okm.fill(out.expose_mut()).map_err(|_| internal("key derivation failed"))?;
        Ok(out)
    }

    /// The symmetric key of `ver` for `context`: derived when the key is, else as stored.
    pub(crate) fn symmetric_key(
        &self,
        context: &[u8],
        ver: u64,
        len: usize,
    ) -> ItemResult<SecretBytes> {
        if self.derived {
            self.derive(context, ver, len)
        } else {
            Ok(self.version(ver)?.key.clone())
        }
    }

    /// The Ed25519 key pair of `ver` (for `context`, when derived).
    pub(crate) fn ed25519(
        &self,
        context: &[u8],
        ver: u64,
    ) -> ItemResult<signature::Ed25519KeyPair> {
        if self.derived {
            let seed = self.derive(context, ver, 32)?;
            signature::Ed25519KeyPair::from_seed_unchecked(seed.expose())
                .map_err(|_| internal("derived ed25519 key rejected"))
        } else {
            signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(self.version(ver)?.key.expose())
                .map_err(|_| internal("stored ed25519 key rejected"))
        }
    }

    /// The versions a read or an export shows: Vault archives the versions below
    /// `min_decryption_version` out of the key's live set, so they are not listed (they come
    /// back when the minimum is lowered).
    pub(crate) fn live_keys(&self) -> impl Iterator<Item = (&u64, &KeyVersion)> {
        self.keys.iter().filter(|(v, _)| **v >= self.min_decryption_version)
    }

    /// Vault's key read (`GET keys/:name`), `context` for the public keys of a derived
    /// Ed25519 key.
    pub(crate) fn read_json(&self, context: &[u8]) -> ItemResult<Map<String, Value>> {
        let t = self.key_type;
        let mut d = Map::new();
        d.insert("name".into(), json!(self.name));
        d.insert("type".into(), json!(t.name()));
        d.insert("derived".into(), json!(self.derived));
        d.insert("deletion_allowed".into(), json!(self.deletion_allowed));
        d.insert("min_available_version".into(), json!(self.min_available_version));
        d.insert("min_decryption_version".into(), json!(self.min_decryption_version));
        d.insert("min_encryption_version".into(), json!(self.min_encryption_version));
        d.insert("latest_version".into(), json!(self.latest_version));
        d.insert("exportable".into(), json!(self.exportable));
        d.insert("allow_plaintext_backup".into(), json!(self.allow_plaintext_backup));
        d.insert("supports_encryption".into(), json!(t.supports_encryption()));
        d.insert("supports_decryption".into(), json!(t.supports_encryption()));
        d.insert("supports_signing".into(), json!(t.supports_signing()));
        d.insert("supports_derivation".into(), json!(t.supports_derivation()));
        d.insert("auto_rotate_period".into(), json!(self.auto_rotate_period));
        d.insert("imported_key".into(), json!(false));
        d.insert("soft_deleted".into(), json!(false));
        if self.key_size != 0 {
            d.insert("key_size".into(), json!(self.key_size));
        }
        for (k, stamp) in [("backup_info", &self.backup_info), ("restore_info", &self.restore_info)]
        {
            if let Some(s) = stamp {
                d.insert(k.into(), json!({"time": s.time, "version": s.version}));
            }
        }
        if self.derived {
            d.insert("kdf".into(), json!("hkdf_sha256"));
            d.insert("convergent_encryption".into(), json!(self.convergent_encryption));
            if self.convergent_encryption {
                d.insert("convergent_encryption_version".into(), json!(self.convergent_version));
            }
        }
        if t.is_aead() {
            let keys: Map<String, Value> =
                self.live_keys().map(|(v, k)| (v.to_string(), json!(k.creation_time))).collect();
            d.insert("keys".into(), Value::Object(keys));
        } else if t.supports_signing() {
            let mut keys = Map::new();
            for (v, k) in self.live_keys() {
                let public_key = if t == KeyType::Ed25519 && self.derived {
                    if context.is_empty() {
                        String::new()
                    } else {
                        B64.encode(self.ed25519(context, *v)?.public_key().as_ref())
                    }
                } else {
                    k.public_key.clone()
                };
                let name = match t {
                    KeyType::Ed25519 => "ed25519",
                    _ if t.is_rsa() => t.name(),
                    _ => t.curve_name(),
                };
                keys.insert(
                    v.to_string(),
                    json!({
                        "name": name,
                        "public_key": public_key,
                        "certificate_chain": "",
                        "creation_time": rfc3339(k.creation_time),
                    }),
                );
            }
            d.insert("keys".into(), Value::Object(keys));
        }
        Ok(d)
    }

    /// One version's material in the form Vault's `export/:type` answers.
    pub(crate) fn export_one(&self, kind: &str, format: &str, ver: u64) -> ItemResult<String> {
        let t = self.key_type;
        let k = self.version(ver)?;
        let bad_format = |what: &str, allowed: &str| {
            ItemError::User(format!(
                "unknown key format for {what}; supported values are {allowed}"
            ))
        };
        match kind {
            "hmac-key" => {
                if matches!(format, "der" | "pem") {
                    return Err(bad_format("HMAC key", "`` or `raw`"));
                }
                let src = if t == KeyType::Hmac { &k.key } else { &k.hmac_key };
                Ok(B64.encode(src.expose()))
            }
            "encryption-key" if t.is_aead() => {
                if matches!(format, "der" | "pem") {
                    return Err(bad_format("symmetric key", "`` or `raw`"));
                }
                Ok(B64.encode(k.key.expose()))
            }
            "encryption-key" | "signing-key" if t.is_rsa() => {
                if format == "raw" {
                    return Err(bad_format("rsa key", "``, `der`, or `pem`"));
                }
                match format {
                    "" => {
                        let pkcs1 = pkcs8_inner(k.key.expose())
                            .ok_or_else(|| internal("stored rsa key is not PKCS#8"))?;
                        Ok(pem("RSA PRIVATE KEY", pkcs1))
                    }
                    "der" => Ok(B64.encode(k.key.expose())),
                    _ => Ok(pem("PRIVATE KEY", k.key.expose())),
                }
            }
            "signing-key" if t.is_ecdsa() => {
                if format == "raw" {
                    return Err(bad_format("ec key", "``, `der`, or `pem`"));
                }
                match format {
                    "" => {
                        let kp = signature::EcdsaKeyPair::from_pkcs8(
                            ecdsa_alg(t, false),
                            k.key.expose(),
                        )
                        .map_err(|_| internal("stored ecdsa key rejected"))?;
                        let sec1: aws_lc_rs::encoding::EcPrivateKeyRfc5915Der<'_> = kp
                            .private_key()
                            .as_der()
                            .map_err(|_| internal("ecdsa key does not encode"))?;
                        Ok(pem("EC PRIVATE KEY", sec1.as_ref()))
                    }
                    "der" => Ok(B64.encode(k.key.expose())),
                    _ => Ok(pem("PRIVATE KEY", k.key.expose())),
                }
            }
            "signing-key" if t == KeyType::Ed25519 => {
                if self.derived {
                    return Ok(String::new());
                }
                let kp = self.ed25519(&[], ver)?;
                match format {
                    // Go's ed25519.PrivateKey: the 32-byte seed followed by the public key.
                    "" | "raw" => {
                        let seed = kp.seed().map_err(|_| internal("ed25519 seed"))?;
                        let seed: aws_lc_rs::encoding::Curve25519SeedBin<'_> =
                            aws_lc_rs::encoding::AsBigEndian::as_be_bytes(&seed)
                                .map_err(|_| internal("ed25519 seed"))?;
                        let mut full = zeroize::Zeroizing::new(seed.as_ref().to_vec());
                        full.extend_from_slice(kp.public_key().as_ref());
                        Ok(B64.encode(full.as_slice()))
                    }
                    "der" => Ok(B64.encode(k.key.expose())),
                    _ => Ok(pem("PRIVATE KEY", k.key.expose())),
                }
            }
            "public-key" if t.supports_signing() => self.public_export(format, ver),
            "encryption-key" => Err(ItemError::User("encryption not supported for the key".into())),
            "signing-key" => Err(ItemError::User("signing not supported for the key".into())),
            _ => Err(ItemError::User(format!(
                "unknown key type {} for export type {kind}",
                t.name()
            ))),
        }
    }

    fn public_export(&self, format: &str, ver: u64) -> ItemResult<String> {
        let t = self.key_type;
        let k = self.version(ver)?;
        if t == KeyType::Ed25519 {
            if self.derived {
                return Ok(String::new());
            }
            let kp = self.ed25519(&[], ver)?;
            return match format {
                "" | "raw" => Ok(B64.encode(kp.public_key().as_ref())),
                _ => {
                    let spki: PublicKeyX509Der<'_> =
                        kp.public_key().as_der().map_err(|_| internal("ed25519 public key"))?;
                    Ok(if format == "der" {
                        B64.encode(spki.as_ref())
                    } else {
                        pem("PUBLIC KEY", spki.as_ref())
                    })
                }
            };
        }
        match format {
            "raw" => Err(ItemError::User(
                "unknown key format for public key; supported values are ``, `der`, or `pem`"
                    .into(),
            )),
            "der" => Ok(B64.encode(self.spki(k)?)),
            _ => Ok(k.public_key.clone()),
        }
    }

    /// The DER SubjectPublicKeyInfo of an ECDSA or RSA version.
    pub(crate) fn spki(&self, k: &KeyVersion) -> ItemResult<Vec<u8>> {
        let t = self.key_type;
        let der: PublicKeyX509Der<'_> = if t.is_rsa() {
            rsa::KeyPair::from_pkcs8(k.key.expose())
                .map_err(|_| internal("stored rsa key rejected"))?
                .public_key()
                .as_der()
                .map_err(|_| internal("rsa public key"))?
        } else {
            signature::EcdsaKeyPair::from_pkcs8(ecdsa_alg(t, false), k.key.expose())
                .map_err(|_| internal("stored ecdsa key rejected"))?
                .public_key()
                .as_der()
                .map_err(|_| internal("ecdsa public key"))?
        };
        Ok(der.as_ref().to_vec())
    }

    /// Drops versions below `min_available_version`.
    pub(crate) fn trim(&mut self) {
        let min = self.min_available_version;
        self.keys.retain(|v, _| *v >= min);
    }

    /// When the next automatic rotation is due (Unix seconds); `None`: never.
    pub(crate) fn next_rotation(&self) -> Option<u64> {
        if self.auto_rotate_period == 0 {
            return None;
        }
        let last = self.keys.get(&self.latest_version).map_or(0, |k| k.creation_time);
        Some(last.saturating_add(self.auto_rotate_period))
    }
}

/// HKDF output length, as aws-lc-rs wants it.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The ECDSA signing algorithm whose curve is `t`'s and whose digest is the one the curve's
/// digest-sized inputs are signed with (see `sign`): SHA-256, SHA-384, SHA-512.
pub(crate) fn ecdsa_alg(t: KeyType, fixed: bool) -> &'static signature::EcdsaSigningAlgorithm {
    match (t, fixed) {
        (KeyType::EcdsaP384, false) => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        (KeyType::EcdsaP384, true) => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        (KeyType::EcdsaP521, false) => &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        (KeyType::EcdsaP521, true) => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        (_, false) => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        (_, true) => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    }
}
