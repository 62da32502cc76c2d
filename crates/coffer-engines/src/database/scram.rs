//! `password_authentication = "scram-sha-256"`: the password goes into statements as the
//! SCRAM-SHA-256 verifier PostgreSQL stores (RFC 5802, 7677; PostgreSQL's
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), computed here, so the server
//! never receives the password itself: not in its statement log, not in `pg_stat_activity`.
//! It saves the server no work: PostgreSQL derives a key from the empty password with a given
//! verifier's salt and count, to refuse a verifier of the empty password.

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coffer_core::{Error, Result};
use zeroize::Zeroizing;

/// PostgreSQL's default (`scram_iterations`).
const ITERATIONS: u32 = 4096;

/// The verifier of `password` with a fresh random salt.
pub(crate) fn verifier(password: &str) -> Result<Zeroizing<String>> {
    verifier_with_salt(password, &coffer_core::random::random_bytes::<16>())
}

fn verifier_with_salt(password: &str, salt: &[u8]) -> Result<Zeroizing<String>> {
    // PostgreSQL prepares a password with SASLprep before deriving its key, which leaves
    // printable ASCII as it is; other text it may rewrite, and the verifier made here from the
    // raw bytes would then never match what a client logging in sends.
    if !password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::invalid(
            "password_authentication scram-sha-256 needs passwords of printable ASCII; the \
             config's password policy generated other characters",
        ));
    }
    let mut salted = Zeroizing::new([0u8; 32]);
    let rounds = std::num::NonZeroU32::new(ITERATIONS).unwrap_or(std::num::NonZeroU32::MIN);
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt, password.as_bytes(), &mut *salted);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &*salted);
    // The client key logs in by itself (its hash is what the server stores): wiped here. The
    // tag aws-lc returns cannot be.
    let client_key = Zeroizing::new(
        <[u8; 32]>::try_from(hmac::sign(&key, b"Client Key").as_ref())
            .map_err(|_| Error::Internal("HMAC-SHA-256 gave a tag that is not 32 bytes".into()))?,
    );
    let stored_key = digest::digest(&digest::SHA256, &*client_key);
    let server_key = hmac::sign(&key, b"Server Key");
    Ok(Zeroizing::new(format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_is_postgresqls_format_and_derivation() {
        // Computed independently (Python's hashlib.pbkdf2_hmac and hmac, RFC 5802's formulas).
        let salt: Vec<u8> = (0u8..16).collect();
        let v = verifier_with_salt("vD0BG3HVaIVGbE3BwHRx", &salt).expect("ascii");
        assert_eq!(
            v.as_str(),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$WCgofKEXYUtbYvB/2YseJuozjM2SocqYkMcfp+KAXDI=:EVH+JS5crwoOacu2lEgWC0nLKniiYEL0AoTZTKmsQFs="
        );
    }

    #[test]
    fn each_verifier_has_its_own_salt_and_text_beyond_ascii_is_refused() {
        let (a, b) = (verifier("same").expect("a"), verifier("same").expect("b"));
        assert_ne!(a.as_str(), b.as_str());
        let e = verifier("pässword").expect_err("not ascii");
        assert!(e.to_string().contains("printable ASCII"), "{e}");
        assert!(!e.to_string().contains("pässword"), "the error holds the password");
    }
}
