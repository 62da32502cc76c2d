//! The little DER and PEM the engine needs to answer keys in Vault's formats: PEM armour, and
//! the inner `RSAPrivateKey` (PKCS#1) of a PKCS#8 `PrivateKeyInfo`.
//!
//! Guarantees: the reader never panics on any input (every length is checked) and reads only
//! definite-length DER; it is only ever given documents aws-lc-rs produced. Not a general ASN.1
//! parser: it knows exactly the one structure above.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

/// PEM armour with 64-character lines, as Go's `pem.EncodeToMemory` writes it.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(B64.encode(der));
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// One TLV: (tag, contents, rest after it).
pub(crate) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The `privateKey` OCTET STRING of a PKCS#8 `PrivateKeyInfo`: for RSA, the PKCS#1
/// `RSAPrivateKey` DER.
pub(crate) fn pkcs8_inner(pkcs8: &[u8]) -> Option<&[u8]> {
    let (tag, seq, _) = tlv(pkcs8)?;
    if tag != 0x30 {
        return None;
    }
    let (t_ver, _, rest) = tlv(seq)?;
    let (t_alg, _, rest) = tlv(rest)?;
    let (t_key, key, _) = tlv(rest)?;
    (t_ver == 0x02 && t_alg == 0x30 && t_key == 0x04).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_64_characters() {
        let p = pem("PUBLIC KEY", &[7u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END PUBLIC KEY-----"));
    }

    #[test]
    fn truncated_or_odd_der_is_refused_not_a_panic() {
        for bad in
            [&[][..], &[0x30], &[0x30, 0x85, 1, 2, 3, 4, 5], &[0x30, 0x05, 0x02], &[0x04, 0x00]]
        {
            assert!(pkcs8_inner(bad).is_none());
        }
    }
}
