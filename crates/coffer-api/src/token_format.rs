//! The shape of Coffer's new credentials, so that a scanner recognises them offline:
//! `<prefix>_<30 base62 random characters><6 base62 checksum characters>`, where the prefix names
//! the kind (`cfs` service token, `cfb` batch token, `cfw` wrapping token, `cfa` AppRole
//! secret_id) and the checksum is the CRC-32 (IEEE, zlib's) of the 30 random characters.
//!
//! Guarantees: [`is_valid`] accepts exactly the strings of that shape whose checksum matches, and
//! never panics. It does not say whether the credential is live (only the server knows: see
//! `sys/leaks/check`), and a checksum is no integrity protection against anyone who wants to
//! forge one: it only keeps random look-alikes out of scanners' reports.

use zeroize::Zeroizing;

/// 0-9, A-Z, a-z: the digits' order for the checksum too.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;

/// What a prefixed credential is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Service,
    Batch,
    Wrapping,
    SecretId,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Service => "cfs",
            TokenKind::Batch => "cfb",
            TokenKind::Wrapping => "cfw",
            TokenKind::SecretId => "cfa",
        }
    }

    fn from_prefix(p: &str) -> Option<Self> {
        match p {
            "cfs" => Some(TokenKind::Service),
            "cfb" => Some(TokenKind::Batch),
            "cfw" => Some(TokenKind::Wrapping),
            "cfa" => Some(TokenKind::SecretId),
            _ => None,
        }
    }
}

/// A new credential of `kind`, from the CSPRNG, in a buffer wiped on drop.
///
/// # Errors
/// Only when the system's random source fails.
pub fn mint(kind: TokenKind) -> Result<Zeroizing<String>, aws_lc_rs::error::Unspecified> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let rng = SystemRandom::new();
    let mut random = Zeroizing::new(String::with_capacity(RANDOM_LEN));
    let mut byte = [0u8; 1];
    while random.len() < RANDOM_LEN {
        rng.fill(&mut byte)?;
        // Rejection sampling keeps the 62 characters equally likely: 248 = 4 * 62.
        if byte[0] < 248 {
            random.push(char::from(BASE62[usize::from(byte[0] % 62)]));
        }
    }
    let mut out = Zeroizing::new(String::with_capacity(4 + RANDOM_LEN + CHECKSUM_LEN));
    out.push_str(kind.prefix());
    out.push('_');
    out.push_str(&random);
    out.push_str(&checksum(random.as_bytes()));
    Ok(out)
}

/// The kind of `s` when it has the shape of a new credential and its checksum matches.
pub fn is_valid(s: &str) -> Option<TokenKind> {
    let (prefix, rest) = s.split_once('_')?;
    let kind = TokenKind::from_prefix(prefix)?;
    if rest.len() != RANDOM_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (random, sum) = rest.split_at(RANDOM_LEN);
    (checksum(random.as_bytes()) == sum).then_some(kind)
}

/// CRC-32 of `data` in base62, most significant digit first, left-padded to 6.
fn checksum(data: &[u8]) -> String {
    let mut n = crc32(data);
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// CRC-32/ISO-HDLC (zlib's): reflected, polynomial 0xEDB88320, init and xorout 0xFFFFFFFF.
/// Bitwise: it runs over 30 bytes at a time, where a table buys nothing.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The catalogue's check value for CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn minted_tokens_are_valid_and_of_their_kind() {
        for kind in [TokenKind::Service, TokenKind::Batch, TokenKind::Wrapping, TokenKind::SecretId]
        {
            let t = mint(kind).expect("rng");
            assert_eq!(t.len(), 40);
            assert!(t.starts_with(kind.prefix()));
            assert_eq!(is_valid(&t), Some(kind));
        }
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let t = mint(TokenKind::Service).expect("rng");
        let mut bytes = t.as_bytes().to_vec();
        bytes[10] = if bytes[10] == b'a' { b'b' } else { b'a' };
        let changed = String::from_utf8(bytes).expect("ascii");
        assert_eq!(is_valid(&changed), None);
        assert_eq!(is_valid("cfx_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(is_valid("cfs_short"), None);
        assert_eq!(is_valid("cfs_ééééééééééééééééééééééééééééééééééé"), None);
    }
}
