//! Key material as it lives in memory and in the engine's stored records: zeroized on drop,
//! never printed, base64 inside the record (which only the barrier ever sees in clear).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// Secret bytes: a symmetric key, an HMAC key, a PKCS#8 private key.
#[derive(Clone, Default, PartialEq)]
pub(crate) struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub(crate) fn new(v: Vec<u8>) -> Self {
        Self(Zeroizing::new(v))
    }

    /// `n` bytes from the system RNG.
    pub(crate) fn random(n: usize) -> Self {
        let mut v = Zeroizing::new(vec![0u8; n]);
        fill_random(&mut v);
        Self(v)
    }

    /// The one deliberate way to use the bytes.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// Fills `buf` from the system RNG.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // The only failure is an unusable system RNG, after which no key Coffer makes is safe.
    #[allow(clippy::expect_used)] // reason: see above; continuing without randomness is worse
    aws_lc_rs::rand::fill(buf).expect("system RNG failed");
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

impl Serialize for SecretBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(B64.encode(self.0.as_slice()));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        B64.decode(text.as_bytes())
            .map(SecretBytes::new)
            .map_err(|_| serde::de::Error::custom("stored key material is not base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_never_print_and_round_trip_through_json() {
        let s = SecretBytes::new(b"hunter2-key-bytes".to_vec());
        assert!(!format!("{s:?}").contains("hunter2"));
        let j = serde_json::to_string(&s).expect("json");
        let back: SecretBytes = serde_json::from_str(&j).expect("back");
        assert_eq!(back.expose(), b"hunter2-key-bytes");
    }
}
