//! Randomness from the system RNG (aws-lc-rs): raw bytes, token-style strings, UUIDs.

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The only failure is an unusable system RNG, after which nothing Coffer does is safe.
    #[allow(clippy::expect_used)] // reason: see above; continuing without randomness is worse
    aws_lc_rs::rand::fill(&mut b).expect("system RNG failed");
    b
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters from [0-9A-Za-z], unbiased (rejection sampling).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>() {
            // 248 = 4 * 62: values above are rejected so every character is equally likely.
            if b < 248 && out.len() < len {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    out
}

/// An identifier that sorts by when it was made: the order part of `order_ns` (nanoseconds
/// since the epoch; `token_format::order_chars`, 8 characters) and `random` random characters.
/// For identifiers whose records should sit together in storage's B-tree when they are made
/// together (token accessors, lease ids): a group commit of many then writes fewer pages.
pub fn ordered_base62(order_ns: u64, random: usize) -> String {
    let order = coffer_wire::token_format::order_chars(order_ns);
    let mut out = String::with_capacity(order.as_str().len() + random);
    out.push_str(order.as_str());
    out.push_str(&random_base62(random));
    out
}

/// Nanoseconds since the Unix epoch, for [`ordered_base62`] (0 for a clock set before it).
pub use coffer_wire::token_format::now_ns;

pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_text(&b)
}

/// The 8-4-4-4-12 lowercase hex form. Written directly, not through `format!`: every request
/// draws one (its request id), and the formatting machinery cost as much as the randomness.
fn uuid_text(b: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::hex;
    #[test]
    fn base62_has_the_asked_length_and_alphabet() {
        let s = random_base62(40);
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_base62(24), random_base62(24));
    }
    #[test]
    fn uuids_have_version_4_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
    #[test]
    fn uuid_text_is_what_format_wrote() {
        for _ in 0..64 {
            let b = random_bytes::<16>();
            let h = hex(&b);
            let formatted =
                format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
            assert_eq!(uuid_text(&b), formatted);
        }
    }
}
