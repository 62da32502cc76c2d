//! Vault Agent's token-sink encryption (`dh_type = "curve25519"`), both halves: the agent's
//! ([`SinkEncryptor`], what a sink writes) and the consumer's ([`DhKey`] and [`decrypt`]), so a
//! token sink configured for Vault Agent works unchanged with `coffer agent`, and whatever reads
//! Vault Agent's encrypted sink files reads Coffer's.
//!
//! The algorithm, as Vault's `helper/dhutil` and the agent's sink do it: the consumer publishes
//! its X25519 public key in the file at `dh_path` as `{"curve25519_public_key": "<base64>"}`; the
//! agent keeps an X25519 key pair of its own for the sink's life, agrees a shared secret with the
//! consumer's key, and uses it as the AES-256-GCM key, or with `derive_key = true` the 32 bytes
//! of HKDF-SHA256(secret, salt = the lower of the two public keys, info = the higher one); it
//! seals the token with a random 96-bit nonce and `aad` as associated data, and writes
//! `{"curve25519_public_key", "nonce", "encrypted_payload"}` (standard base64, padded, as Go
//! encodes bytes), followed by a newline.
//!
//! Guarantees: private keys are zeroized on drop and cannot be printed or serialized; a flipped
//! bit, another `aad` or another key makes [`decrypt`] fail; a low-order public key is refused.
//! Not guaranteed: forward secrecy across tokens (the agent's key lives as long as the sink, as
//! in Vault), or who wrote the file (anyone with the consumer's public key can).

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{agreement, hkdf};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The one `dh_type` Vault Agent knows.
pub const DH_TYPE: &str = "curve25519";

const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum DhError {
    #[error("the public key file is not {{\"curve25519_public_key\": \"<base64>\"}}: {0}")]
    PublicKeyFile(String),
    #[error("the encrypted sink file is not a curve25519 sink envelope: {0}")]
    Envelope(String),
    #[error("a curve25519 public key has 32 bytes, not {0}")]
    KeyLength(usize),
    #[error("no shared secret can be agreed with this public key (a low-order point?)")]
    Agreement,
    #[error("the agent's and the consumer's public keys are the same")]
    SameKey,
    #[error("nothing to encrypt: the token is empty")]
    Empty,
    #[error("the nonce has {0} bytes, not {NONCE_LEN}")]
    Nonce(usize),
    #[error(
        "the sink file does not decrypt: it was altered, or made for another key, another aad or \
         another derive_key setting"
    )]
    Decrypt,
    #[error("crypto failure: {0}")]
    Crypto(String),
}

type Result<T> = std::result::Result<T, DhError>;

/// Go's `[]byte` in JSON: standard base64, written padded, read with or without padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

mod b64std {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::B64.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        super::B64.decode(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The file at `dh_path`: the consumer's public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyInfo {
    #[serde(with = "b64std")]
    pub curve25519_public_key: Vec<u8>,
}

impl PublicKeyInfo {
    pub fn parse(file: &[u8]) -> Result<Self> {
        let info: Self =
            serde_json::from_slice(file).map_err(|e| DhError::PublicKeyFile(e.to_string()))?;
        key_bytes(&info.curve25519_public_key)?;
        Ok(info)
    }
}

/// What an encrypted sink holds (Vault calls it `dhutil.Envelope`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhEnvelope {
    /// The agent's public key.
    #[serde(with = "b64std")]
    pub curve25519_public_key: Vec<u8>,
    #[serde(with = "b64std")]
    pub nonce: Vec<u8>,
    /// The token, AES-256-GCM, tag appended.
    #[serde(with = "b64std")]
    pub encrypted_payload: Vec<u8>,
}

/// An X25519 key pair: the consumer's (who decrypts) or the agent's (held by a
/// [`SinkEncryptor`]).
pub struct DhKey {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
}

impl DhKey {
    pub fn generate() -> Result<Self> {
        let mut private = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(&mut *private).map_err(|e| DhError::Crypto(e.to_string()))?;
        Self::from_private_bytes(&private)
    }

    /// A key pair from its private key, for a consumer that keeps its key between runs.
    pub fn from_private_bytes(private: &[u8; KEY_LEN]) -> Result<Self> {
        let public = agreement::PrivateKey::from_private_key(&agreement::X25519, private)
            .map_err(|e| DhError::Crypto(e.to_string()))?
            .compute_public_key()
            .map_err(|e| DhError::Crypto(e.to_string()))?;
        Ok(Self { private: Zeroizing::new(*private), public: key_bytes(public.as_ref())? })
    }

    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// What to write at the agent's `dh_path` for this key.
    pub fn public_key_info(&self) -> PublicKeyInfo {
        PublicKeyInfo { curve25519_public_key: self.public.to_vec() }
    }

    /// The AES-256-GCM key this key pair shares with `their_public`.
    fn shared_key(&self, their_public: &[u8], derive: bool) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let their_public = key_bytes(their_public)?;
        let ours = agreement::PrivateKey::from_private_key(&agreement::X25519, &*self.private)
            .map_err(|e| DhError::Crypto(e.to_string()))?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, their_public);
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        agreement::agree(&ours, peer, DhError::Agreement, |s| {
            secret.copy_from_slice(s);
            Ok(())
        })?;
        if !derive {
            return Ok(secret);
        }
        let (low, high) = match self.public.cmp(&their_public) {
            std::cmp::Ordering::Less => (self.public, their_public),
            std::cmp::Ordering::Greater => (their_public, self.public),
            std::cmp::Ordering::Equal => return Err(DhError::SameKey),
        };
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &low).extract(&*secret);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        prk.expand(&[&high], Len32)
            .and_then(|okm| okm.fill(&mut *key))
            .map_err(|e| DhError::Crypto(e.to_string()))?;
        Ok(key)
    }
}

impl fmt::Debug for DhKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DhKey").field("public", &B64.encode(self.public)).finish_non_exhaustive()
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

fn key_bytes(b: &[u8]) -> Result<[u8; KEY_LEN]> {
    <[u8; KEY_LEN]>::try_from(b).map_err(|_| DhError::KeyLength(b.len()))
}

/// The agent's half of one encrypted sink: its own key pair (kept for the sink's life, as Vault
/// Agent does), the consumer's public key, the `aad` and the `derive_key` setting.
pub struct SinkEncryptor {
    ours: DhKey,
    theirs: [u8; KEY_LEN],
    aad: Vec<u8>,
    derive_key: bool,
}

impl SinkEncryptor {
    /// `public_key_file` is the content of `dh_path`; `aad` the sink's `aad` (or the value of
    /// its `aad_env_var`), empty when none.
    pub fn new(public_key_file: &[u8], aad: &[u8], derive_key: bool) -> Result<Self> {
        let theirs = key_bytes(&PublicKeyInfo::parse(public_key_file)?.curve25519_public_key)?;
        let s = Self { ours: DhKey::generate()?, theirs, aad: aad.to_vec(), derive_key };
        // Refuse a key that cannot work now, not at the first token.
        s.ours.shared_key(&s.theirs, s.derive_key)?;
        Ok(s)
    }

    /// The sink file's content for `token`: the JSON envelope and a newline.
    pub fn encrypt(&self, token: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|e| DhError::Crypto(e.to_string()))?;
        self.encrypt_with_nonce(token, nonce)
    }

    fn encrypt_with_nonce(&self, token: &str, nonce: [u8; NONCE_LEN]) -> Result<String> {
        if token.is_empty() {
            return Err(DhError::Empty);
        }
        let key = self.ours.shared_key(&self.theirs, self.derive_key)?;
        let mut payload = token.as_bytes().to_vec();
        aead_key(&key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.aad),
                &mut payload,
            )
            .map_err(|e| DhError::Crypto(e.to_string()))?;
        let env = DhEnvelope {
            curve25519_public_key: self.ours.public.to_vec(),
            nonce: nonce.to_vec(),
            encrypted_payload: payload,
        };
        let mut out = serde_json::to_string(&env).map_err(|e| DhError::Crypto(e.to_string()))?;
        out.push('\n');
        Ok(out)
    }
}

impl fmt::Debug for SinkEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkEncryptor")
            .field("ours", &self.ours)
            .field("theirs", &B64.encode(self.theirs))
            .field("derive_key", &self.derive_key)
            .finish_non_exhaustive()
    }
}

/// The consumer's half: the token in an encrypted sink file.
pub fn decrypt(
    ours: &DhKey,
    sink_file: &[u8],
    aad: &[u8],
    derive_key: bool,
) -> Result<Zeroizing<String>> {
    let env: DhEnvelope =
        serde_json::from_slice(sink_file).map_err(|e| DhError::Envelope(e.to_string()))?;
    let nonce = <[u8; NONCE_LEN]>::try_from(env.nonce.as_slice())
        .map_err(|_| DhError::Nonce(env.nonce.len()))?;
    let key = ours.shared_key(&env.curve25519_public_key, derive_key)?;
    let mut buf = Zeroizing::new(env.encrypted_payload);
    let plain = aead_key(&key)?
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| DhError::Decrypt)?;
    let token = std::str::from_utf8(plain).map_err(|_| DhError::Decrypt)?;
    Ok(Zeroizing::new(token.to_owned()))
}

fn aead_key(key: &[u8; KEY_LEN]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|e| DhError::Crypto(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer() -> DhKey {
        DhKey::from_private_bytes(&[0x22; 32]).expect("consumer")
    }

    fn agent_for(consumer: &DhKey, aad: &[u8], derive_key: bool) -> SinkEncryptor {
        SinkEncryptor {
            ours: DhKey::from_private_bytes(&[0x11; 32]).expect("agent"),
            theirs: *consumer.public_key(),
            aad: aad.to_vec(),
            derive_key,
        }
    }

    // Produced by an independent implementation of Vault's algorithm (Python `cryptography`:
    // X25519, HKDF-SHA256 with salt/info the sorted public keys, AES-256-GCM), with the agent's
    // private key 0x11 * 32, the consumer's 0x22 * 32, nonce 00..0b, aad "coffer-dh-aad".
    const TOKEN: &str = "hvs.CAESIexampletoken";
    const AAD: &[u8] = b"coffer-dh-aad";
    const RAW_KEY_FILE: &str = r#"{"curve25519_public_key":"e06Qm75//kTEZaIgA31gjuNYl9Me+XLwf3SJLLD3PxM=","nonce":"AAECAwQFBgcICQoL","encrypted_payload":"WMqO+YXInpw+oXubRTbsm61MoeKpa1AyT/5nzyzw31YlDSYHSw=="}"#;
    const DERIVED_KEY_FILE: &str = r#"{"curve25519_public_key":"e06Qm75//kTEZaIgA31gjuNYl9Me+XLwf3SJLLD3PxM=","nonce":"AAECAwQFBgcICQoL","encrypted_payload":"ffH4Bo9+3ZNUIy9qg9sVS8Dn5qshhx4h5g31s9mg5QYPRpKQUQ=="}"#;

    #[test]
    fn known_answers_of_vaults_algorithm_decrypt_and_encrypt_byte_for_byte() {
        let c = consumer();
        assert_eq!(
            serde_json::to_string(&c.public_key_info()).expect("json"),
            r#"{"curve25519_public_key":"D6poTtKIZ7l/Smot7l34zpdOdrcBjj8iocTPJnhXDyA="}"#
        );
        let nonce: [u8; 12] = std::array::from_fn(|i| i as u8);
        for (file, derive) in [(RAW_KEY_FILE, false), (DERIVED_KEY_FILE, true)] {
            let token = decrypt(&c, file.as_bytes(), AAD, derive).expect("decrypt");
            assert_eq!(token.as_str(), TOKEN);
            let out = agent_for(&c, AAD, derive).encrypt_with_nonce(TOKEN, nonce).expect("enc");
            assert_eq!(out, format!("{file}\n"));
        }
    }

    #[test]
    fn a_round_trip_opens_and_anything_else_fails() {
        let c = DhKey::generate().expect("consumer");
        let file = serde_json::to_vec(&c.public_key_info()).expect("json");
        for derive in [false, true] {
            let agent = SinkEncryptor::new(&file, b"aad", derive).expect("agent");
            let sink = agent.encrypt("s.token").expect("encrypt");
            assert!(!sink.contains("s.token"));
            let token = decrypt(&c, sink.as_bytes(), b"aad", derive).expect("decrypt");
            assert_eq!(token.as_str(), "s.token");
            assert!(matches!(
                decrypt(&c, sink.as_bytes(), b"other", derive),
                Err(DhError::Decrypt)
            ));
            assert!(decrypt(&c, sink.as_bytes(), b"aad", !derive).is_err());
            let other = DhKey::generate().expect("other");
            assert!(decrypt(&other, sink.as_bytes(), b"aad", derive).is_err());
            let mut env: DhEnvelope = serde_json::from_str(&sink).expect("env");
            env.encrypted_payload[0] ^= 1;
            let tampered = serde_json::to_vec(&env).expect("json");
            assert!(matches!(decrypt(&c, &tampered, b"aad", derive), Err(DhError::Decrypt)));
        }
    }

    #[test]
    fn bad_inputs_are_refused_by_name() {
        let bad = |file: &str| SinkEncryptor::new(file.as_bytes(), b"", false).expect_err(file);
        assert!(matches!(bad("{}"), DhError::PublicKeyFile(_)));
        assert!(matches!(bad(r#"{"curve25519_public_key":"AAAA"}"#), DhError::KeyLength(3)));
        let zero = format!(r#"{{"curve25519_public_key":"{}"}}"#, B64.encode([0u8; 32]));
        assert!(matches!(bad(&zero), DhError::Agreement));
        let c = consumer();
        let agent = agent_for(&c, b"", false);
        assert!(matches!(agent.encrypt(""), Err(DhError::Empty)));
        let same = SinkEncryptor {
            ours: DhKey::from_private_bytes(&[0x22; 32]).expect("k"),
            theirs: *c.public_key(),
            aad: Vec::new(),
            derive_key: true,
        };
        assert!(matches!(same.encrypt("t"), Err(DhError::SameKey)));
    }

    #[test]
    fn keys_print_only_their_public_half() {
        let c = consumer();
        let shown = format!("{c:?} {:?}", agent_for(&c, b"", false));
        assert!(shown.contains(&B64.encode(c.public_key())));
        assert!(!shown.contains(&B64.encode([0x22u8; 32])));
    }
}
