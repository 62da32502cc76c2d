//! Types for secret material: zeroized on drop, no `Debug` that prints the value, and equality
//! only in constant time. Shared by the server (which re-exports it as `coffer_core::SecretString`)
//! and its clients.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A string that must not leak: tokens, passwords, key shares.
///
/// Serialization writes the value itself (as a plain JSON string), deliberately: it is how a
/// token reaches the client that asked for it, and how a password is kept in a record that the
/// barrier encrypts. `Debug` never shows it, and equality is constant-time.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        Self(Zeroizing::new(s))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The one deliberate way to read the value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn ct_eq(&self, other: &str) -> bool {
        ct_eq(self.0.as_bytes(), other.as_bytes())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        Self::new(s.to_owned())
    }
}

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for SecretString {}

/// Constant-time byte comparison (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let s = SecretString::new("s3cr3t-token".into());
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }

    #[test]
    fn comparison_is_exact() {
        let s = SecretString::new("abc".into());
        assert!(s.ct_eq("abc"));
        assert!(!s.ct_eq("abd"));
        assert!(!s.ct_eq("ab"));
    }
}
