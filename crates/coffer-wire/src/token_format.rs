//! The format of the credentials Coffer hands out, so that a scanner recognises them offline:
//! `<prefix>_<order><random><checksum>`, e.g. `cfs_` + 36 characters.
//!
//! - prefix: `cfs` service token, `cfb` batch token, `cfw` wrapping token, `cfa` AppRole
//!   secret_id;
//! - order: 8 characters, the minting time in units of 2^16 ns (about 65.5 µs) since the Unix
//!   epoch, in base62 (the alphabet `0-9A-Za-z`, in that order, most significant digit first;
//!   it wraps after about 453 years). Values minted together sort together, so the records
//!   stored under them sit together in storage's B-tree (see [`order_of`]);
//! - random: 22 characters of the same alphabet from the system CSPRNG (aws-lc-rs), each drawn
//!   uniformly by rejection sampling: about 131 bits;
//! - checksum: CRC-32 (IEEE 802.3, zlib's: reflected, polynomial 0xEDB88320, initial value and
//!   final xor 0xFFFFFFFF) of the 30 characters of order and random part (their ASCII bytes), in
//!   base62 (same alphabet, most significant digit first), left-padded with `0` to 6 characters.
//!
//! Every value matches `\b(cfs|cfb|cfw|cfa)_[0-9A-Za-z]{36}\b`. Guarantees: [`is_valid`] accepts
//! exactly the strings [`mint`] can produce; any single changed character and any swap of two
//! adjacent different characters in the 30 characters before the checksum are detected (CRC-32
//! detects every burst error of up to 32 bits). Not a guarantee: the checksum is no
//! authenticator; anyone can make a well-formed value, and only the server knows which ones are
//! live. A value tells whoever holds it when it was minted, and nothing else. Values minted
//! before the order part existed (30 random characters, same shape) and tokens of earlier
//! formats (`cfs.` + 32 characters) keep working: the server looks a token up by its hash,
//! whatever its shape.

use crate::secret::SecretString;

/// What a credential is, as its prefix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Service,
    Batch,
    Wrapping,
    SecretId,
}

impl TokenKind {
    pub const ALL: [TokenKind; 4] =
        [TokenKind::Service, TokenKind::Batch, TokenKind::Wrapping, TokenKind::SecretId];

    /// The three letters before the `_`.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Service => "cfs",
            TokenKind::Batch => "cfb",
            TokenKind::Wrapping => "cfw",
            TokenKind::SecretId => "cfa",
        }
    }

    fn from_prefix(p: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.prefix() == p)
    }
}

/// The base62 alphabet, in the order the checksum's digits use.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of the order part, at the start of the 30 before the checksum.
pub const ORDER_LEN: usize = 8;
/// Characters before the checksum: the order part and the random part.
pub const RANDOM_LEN: usize = 30;
/// Checksum characters at its end.
pub const CHECKSUM_LEN: usize = 6;
/// The whole value: prefix, `_`, random part and checksum.
pub const TOKEN_LEN: usize = 4 + RANDOM_LEN + CHECKSUM_LEN;

/// A new credential of `kind`, with fresh randomness.
pub fn mint(kind: TokenKind) -> SecretString {
    let body = order_and_random(order_chars(now_ns()));
    let mut s = String::with_capacity(TOKEN_LEN);
    s.push_str(kind.prefix());
    s.push('_');
    s.push_str(&body);
    s.push_str(&checksum(body.as_bytes()));
    SecretString::new(s)
}

/// Nanoseconds since the Unix epoch (0 for a clock set before it): the clock of order parts.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An order part for the time `ns` (nanoseconds since the Unix epoch): `ns / 2^16` in base62,
/// [`ORDER_LEN`] digits, most significant first, so that later times sort after earlier ones
/// as strings (for about 453 years, after which it wraps). For other identifiers that want the
/// same storage locality (token accessors, lease ids).
pub fn order_chars(ns: u64) -> OrderChars {
    let mut n = ns >> 16;
    let mut digits = [b'0'; ORDER_LEN];
    for d in digits.iter_mut().rev() {
        *d = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    OrderChars(digits)
}

/// [`order_chars`]' digits, all ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderChars([u8; ORDER_LEN]);

impl OrderChars {
    pub fn as_str(&self) -> &str {
        // Only ALPHABET's ASCII bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("00000000")
    }
}

/// The order part of a well-formed value with a matching checksum, for the server to store
/// what it keeps under the value near what was minted at the same time. `None` for anything
/// [`is_valid`] refuses. A value minted before the order part existed has random characters
/// there: the server looks such a value up where it was stored then as well.
pub fn order_of(s: &str) -> Option<&str> {
    is_valid(s)?;
    s.get(4..4 + ORDER_LEN)
}

/// The kind of a well-formed value whose checksum matches; `None` for anything else (including
/// tokens of the earlier formats, which are valid credentials but carry no checksum).
pub fn is_valid(s: &str) -> Option<TokenKind> {
    if s.len() != TOKEN_LEN || !s.is_ascii() {
        return None;
    }
    let (prefix, rest) = s.split_at(3);
    let kind = TokenKind::from_prefix(prefix)?;
    let rest = rest.strip_prefix('_')?;
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let (random, sum) = rest.split_at(RANDOM_LEN);
    // Not constant-time: the checksum is a function of the value the caller already holds.
    (checksum(random.as_bytes()) == sum).then_some(kind)
}

/// The 6-character checksum of `random`.
fn checksum(random: &[u8]) -> String {
    let mut n = crc32(random);
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    // 62^6 > 2^32, so nothing is left over and every digit is ASCII.
    digits.iter().map(|&b| char::from(b)).collect()
}

/// CRC-32 as zlib computes it, bit by bit: the input is 30 bytes, a table would cost more.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// `order` followed by random characters, [`RANDOM_LEN`] in all.
fn order_and_random(order: OrderChars) -> zeroize::Zeroizing<String> {
    let mut out = zeroize::Zeroizing::new(String::with_capacity(RANDOM_LEN));
    out.push_str(order.as_str());
    while out.len() < RANDOM_LEN {
        let mut buf = zeroize::Zeroizing::new([0u8; 64]);
        // The only failure is an unusable system RNG, after which nothing Coffer does is safe.
        #[allow(clippy::expect_used)] // reason: see above; continuing without randomness is worse
        aws_lc_rs::rand::fill(&mut buf[..]).expect("system RNG failed");
        for &b in buf.iter() {
            // 248 = 4 * 62: bytes above are rejected so every character is equally likely.
            if b < 248 && out.len() < RANDOM_LEN {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_zlib() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_known_value_has_the_documented_checksum() {
        // zlib.crc32(b"0" * 30) = 0x77E5DB82 = "2C8GjS" in base62 (computed with Python's zlib).
        let random = "0".repeat(RANDOM_LEN);
        assert_eq!(crc32(random.as_bytes()), 0x77E5_DB82, "{:08x}", crc32(random.as_bytes()));
        assert_eq!(checksum(random.as_bytes()), "2C8GjS");
        assert_eq!(is_valid(&format!("cfs_{random}2C8GjS")), Some(TokenKind::Service));
    }

    #[test]
    fn minted_values_are_valid_and_of_their_kind() {
        for kind in TokenKind::ALL {
            let t = mint(kind);
            let s = t.expose();
            assert_eq!(s.len(), TOKEN_LEN);
            assert!(s.starts_with(&format!("{}_", kind.prefix())), "{s}");
            assert!(s[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(is_valid(s), Some(kind));
        }
        assert_ne!(mint(TokenKind::Service), mint(TokenKind::Service));
    }

    #[test]
    fn the_order_part_sorts_by_minting_time() {
        assert_eq!(order_chars(0).as_str(), "00000000");
        assert_eq!(order_chars(65_535).as_str(), "00000000");
        assert_eq!(order_chars(65_536).as_str(), "00000001");
        assert_eq!(order_chars(62 << 16).as_str(), "00000010");
        // December 2026, and a minute later: later sorts after, as strings.
        let t = 1_796_500_000_000_000_000u64;
        let (a, b) = (order_chars(t), order_chars(t + 60_000_000_000));
        assert!(a.as_str() < b.as_str(), "{a:?} {b:?}");
        let before = order_chars(now_ns());
        let minted = mint(TokenKind::Service);
        let after = order_chars(now_ns());
        let part = order_of(minted.expose()).expect("a minted value has an order part");
        assert!(before.as_str() <= part && part <= after.as_str(), "{part}");
        assert_eq!(order_of("cfs.abcdefghijklmnopqrstuvwxyz012345"), None);
        let mut typo = minted.expose().to_owned();
        typo.replace_range(5..6, if &typo[5..6] == "a" { "b" } else { "a" });
        assert_eq!(order_of(&typo), None);
    }

    #[test]
    fn a_typo_is_detected() {
        let t = mint(TokenKind::Service);
        let s = t.expose();
        for i in 4..TOKEN_LEN {
            for &c in ALPHABET {
                if s.as_bytes()[i] == c {
                    continue;
                }
                let mut typo = s.as_bytes().to_vec();
                typo[i] = c;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(is_valid(&typo), None, "changed position {i}");
            }
        }
        for i in 4..TOKEN_LEN - 1 {
            let mut b = s.as_bytes().to_vec();
            if b[i] != b[i + 1] {
                b.swap(i, i + 1);
                assert_eq!(is_valid(&String::from_utf8(b).expect("ascii")), None, "swap at {i}");
            }
        }
    }

    #[test]
    fn other_shapes_are_refused() {
        let t = mint(TokenKind::Batch);
        let s = t.expose();
        for bad in [
            "",
            "cfs.abcdefghijklmnopqrstuvwxyz012345",
            &s[..TOKEN_LEN - 1],
            &format!("{s}0"),
            &format!("cfx{}", &s[3..]),
            &format!("cfb-{}", &s[4..]),
            &format!("CFB{}", &s[3..]),
            &format!("{}é", &s[..TOKEN_LEN - 2]),
        ] {
            assert_eq!(is_valid(bad), None, "{bad:?}");
        }
    }
}
