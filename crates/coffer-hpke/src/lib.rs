//! Sealed responses: the secret-bearing parts of an answer encrypted to an X25519 key that only
//! the client holds, so that nothing between the server and that client (a proxy, a TLS
//! terminator, a response cache, the wrapping store) holds them in clear. The format is
//! documented in `docs/sealed-responses.md`; this crate is its one implementation, used by the
//! server (`Recipient::seal`) and by clients (`KeyPair::open`).
//!
//! Cryptography: RFC 9180 HPKE in base mode with one suite, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305 (ids 0x0020, 0x0001, 0x0003), from rustls' aws-lc-rs provider,
//! the project's one crypto provider. `info` names the format version; the associated data
//! binds the answer to the request it answers ([`Binding`]).
//!
//! Guarantees: a sealed answer opens only with the private key it was sealed to, for the same
//! path and the same token; a flipped bit anywhere in it makes the open fail; a header that is not
//! a usable X25519 public key (not base64url, not 32 bytes, a low-order point) is refused before
//! anything is sealed; the private key is zeroized on drop, has no `Debug` and cannot be
//! serialized. Not guaranteed: who sealed it. Base-mode HPKE does not authenticate the sender:
//! anyone who saw the public key (it travels in a request header) can seal a message to it, so
//! the answer's authenticity still rests on TLS to the server. Nor are lengths hidden.

use std::fmt;

use aws_lc_rs::{agreement, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::crypto::aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_CHACHA20_POLY1305 as SUITE;
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke as _, HpkePrivateKey, HpkePublicKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// The request header that carries the client's public key (base64url, 32 bytes).
pub const HEADER: &str = "X-Coffer-Seal-To";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// RFC 9180 KEM id: DHKEM(X25519, HKDF-SHA256).
pub const KEM_ID: u16 = 0x0020;
/// RFC 9180 KDF id: HKDF-SHA256.
pub const KDF_ID: u16 = 0x0001;
/// RFC 9180 AEAD id: ChaCha20-Poly1305.
pub const AEAD_ID: u16 = 0x0003;
/// HPKE `info` of format version 1.
pub const INFO: &[u8] = b"coffer sealed response v1";
/// The first bytes of the associated data of format version 1 (the label, then a NUL).
pub const AAD_LABEL: &[u8] = b"coffer sealed response v1\0";
/// The path every answer out of a wrapping token is bound to (see [`Binding::for_request`]).
pub const UNWRAP_PATH: &str = "sys/wrapping/unwrap";

const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The header does not hold a usable X25519 public key; the text names the problem.
    #[error("invalid {HEADER} header: {0}")]
    BadKey(String),
    #[error("the sealed answer has format version {0}; this build reads version {VERSION}")]
    Version(u32),
    #[error(
        "the sealed answer uses HPKE suite kem {kem:#06x}, kdf {kdf:#06x}, aead {aead:#06x}; \
         this build reads only kem {KEM_ID:#06x}, kdf {KDF_ID:#06x}, aead {AEAD_ID:#06x}"
    )]
    Suite { kem: u16, kdf: u16, aead: u16 },
    #[error(
        "the sealed answer does not open: it was altered, or sealed to another key, for another \
         path or for another token"
    )]
    Open,
    #[error("the sealed answer opened to something other than a JSON object")]
    Plaintext,
    #[error("HPKE failed: {0}")]
    Crypto(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a sealed answer is bound to: the request path (without its leading `/`, as sent after
/// `/v1/`) and the token the request carried (`""` without one). The associated data is
/// `AAD_LABEL || SHA-256(token) || path`: the hash has a fixed length, so the concatenation
/// reads one way only.
#[derive(Clone, Copy)]
pub struct Binding<'a> {
    path: &'a str,
    token: &'a str,
}

impl<'a> Binding<'a> {
    pub fn new(path: &'a str, token: Option<&'a str>) -> Self {
        Self { path: path.trim_start_matches('/'), token: token.unwrap_or_default() }
    }

    /// The binding of the answer to a request: its path and token, except for
    /// `sys/wrapping/unwrap`, whose answer is bound to that path and to the wrapping token (the
    /// `token` field of the body when it has one, else the request's token), so that an answer
    /// sealed when it was wrapped and one sealed when it is unwrapped open the same way.
    pub fn for_request(
        path: &'a str,
        token: Option<&'a str>,
        body: Option<&'a Map<String, Value>>,
    ) -> Self {
        let b = Self::new(path, token);
        if b.path.trim_end_matches('/') != UNWRAP_PATH {
            return b;
        }
        let wrapping = body
            .and_then(|m| m.get("token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .or(token);
        Self::new(UNWRAP_PATH, wrapping)
    }

    pub fn path(&self) -> &str {
        self.path
    }

    fn aad(&self) -> Vec<u8> {
        let hash = digest::digest(&digest::SHA256, self.token.as_bytes());
        [AAD_LABEL, hash.as_ref(), self.path.as_bytes()].concat()
    }
}

impl fmt::Debug for Binding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding").field("path", &self.path).finish_non_exhaustive()
    }
}

/// A sealed answer's `sealed` object, as it travels and as the wrapping store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    pub version: u32,
    pub kem_id: u16,
    pub kdf_id: u16,
    pub aead_id: u16,
    /// The encapsulated key (the sender's ephemeral X25519 public key), base64url.
    #[serde(with = "b64url")]
    pub enc: Vec<u8>,
    /// The sealed JSON object, tag included, base64url.
    #[serde(with = "b64url")]
    pub ciphertext: Vec<u8>,
}

mod b64url {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(serde::de::Error::custom)
    }
}

/// A client's public key, from the [`HEADER`], checked: what the server seals to.
#[derive(Clone)]
pub struct Recipient(HpkePublicKey);

impl Recipient {
    /// Parses and checks a header value: base64url (padding optional) of 32 bytes that is not a
    /// low-order point. The check agrees a secret with a throwaway key, so a key that would fail
    /// to seal is refused here, before the request runs.
    pub fn from_header(value: &str) -> Result<Self> {
        let v = value.trim();
        if v.is_empty() {
            return Err(Error::BadKey(
                "it is empty; send the X25519 public key in base64url".into(),
            ));
        }
        let bytes = URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).map_err(|_| {
            Error::BadKey("it is not base64url (RFC 4648 §5: A-Z a-z 0-9 - _)".into())
        })?;
        if bytes.len() != KEY_LEN {
            return Err(Error::BadKey(format!(
                "it decodes to {} bytes; an X25519 public key has {KEY_LEN}",
                bytes.len()
            )));
        }
        let probe = agreement::PrivateKey::generate(&agreement::X25519)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, &bytes);
        agreement::agree(&probe, peer, (), |_| Ok(())).map_err(|()| {
            Error::BadKey("it is a low-order X25519 point: no secret can be agreed with it".into())
        })?;
        Ok(Self(HpkePublicKey(bytes)))
    }

    /// Seals `members` (the parts of an answer to hide, as one JSON object) to this key.
    pub fn seal(&self, binding: &Binding<'_>, members: &Map<String, Value>) -> Result<Sealed> {
        let plaintext = Zeroizing::new(
            serde_json::to_vec(members).map_err(|e| Error::Crypto(format!("encode: {e}")))?,
        );
        let (enc, ciphertext) = SUITE
            .seal(INFO, &binding.aad(), &plaintext, &self.0)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        Ok(Sealed {
            version: VERSION,
            kem_id: KEM_ID,
            kdf_id: KDF_ID,
            aead_id: AEAD_ID,
            enc: enc.0,
            ciphertext,
        })
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", URL_SAFE_NO_PAD.encode(&self.0.0))
    }
}

/// A client's X25519 key pair, made in memory. The private half is zeroized on drop and has no
/// way out: no `Debug`, no `Clone`, no serialization.
pub struct KeyPair {
    public: [u8; KEY_LEN],
    private: HpkePrivateKey,
}

impl KeyPair {
    pub fn generate() -> Result<Self> {
        let (public, private) =
            SUITE.generate_key_pair().map_err(|e| Error::Crypto(e.to_string()))?;
        let public = <[u8; KEY_LEN]>::try_from(public.0.as_slice())
            .map_err(|_| Error::Crypto("X25519 public key of the wrong length".into()))?;
        Ok(Self { public, private })
    }

    /// A key pair from a known private key: for test vectors only.
    #[cfg(test)]
    fn from_private_bytes(private: &[u8; KEY_LEN]) -> Result<Self> {
        let key = agreement::PrivateKey::from_private_key(&agreement::X25519, private)
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let public = key.compute_public_key().map_err(|e| Error::Crypto(e.to_string()))?;
        let public = <[u8; KEY_LEN]>::try_from(public.as_ref())
            .map_err(|_| Error::Crypto("X25519 public key of the wrong length".into()))?;
        Ok(Self { public, private: HpkePrivateKey::from(private.to_vec()) })
    }

    pub fn public_key(&self) -> &[u8; KEY_LEN] {
        &self.public
    }

    /// The value of the [`HEADER`]: the public key in base64url without padding.
    pub fn header_value(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public)
    }

    /// Opens a sealed answer made for `binding`; returns the hidden members.
    pub fn open(&self, sealed: &Sealed, binding: &Binding<'_>) -> Result<Map<String, Value>> {
        if sealed.version != VERSION {
            return Err(Error::Version(sealed.version));
        }
        if (sealed.kem_id, sealed.kdf_id, sealed.aead_id) != (KEM_ID, KDF_ID, AEAD_ID) {
            return Err(Error::Suite {
                kem: sealed.kem_id,
                kdf: sealed.kdf_id,
                aead: sealed.aead_id,
            });
        }
        let plaintext = self.open_raw(&sealed.enc, INFO, &binding.aad(), &sealed.ciphertext)?;
        match serde_json::from_slice(&plaintext) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(Error::Plaintext),
        }
    }

    fn open_raw(
        &self,
        enc: &[u8],
        info: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        SUITE
            .open(&EncapsulatedSecret(enc.to_vec()), info, aad, ciphertext, &self.private)
            .map(Zeroizing::new)
            .map_err(|_| Error::Open)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &URL_SAFE_NO_PAD.encode(self.public))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
