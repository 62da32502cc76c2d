//! Shamir's secret sharing over GF(256), by `vsss-rs` (audited, constant-time field arithmetic).
//! A share is `[x][y_1..y_n]`: one identifier byte and one byte per secret byte.

use std::convert::Infallible;

use zeroize::Zeroizing;

use crate::{Error, Result};

/// aws-lc-rs's RNG, which rustls and the AEAD already trust, as the `rand_core` RNG vsss-rs needs.
struct SystemRng;

impl rand_core::TryRng for SystemRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> std::result::Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> std::result::Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> std::result::Result<(), Infallible> {
        #[allow(clippy::expect_used)]
        // reason: no safe way to continue splitting a key without randomness
        aws_lc_rs::rand::fill(dst).expect("system RNG failed");
        Ok(())
    }
}

impl rand_core::TryCryptoRng for SystemRng {}

/// Splits `secret` into `shares` shares, any `threshold` of which recover it.
pub fn split(secret: &[u8], shares: u8, threshold: u8) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    if threshold < 2 || threshold > shares {
        return Err(Error::InvalidSealConfig(
            "threshold must be between 2 and the share count".into(),
        ));
    }
    let parts = vsss_rs::Gf256::split_bytes(threshold as usize, shares as usize, secret, SystemRng)
        .map_err(|e| Error::Internal(format!("shamir split: {e:?}")))?;
    Ok(parts.into_iter().map(Zeroizing::new).collect())
}

/// Recovers a secret from shares. Shares of different lengths, or repeated identifiers, are
/// refused; shares from different splits combine to garbage, which the caller's AEAD catches.
pub fn combine(parts: &[Zeroizing<Vec<u8>>]) -> Result<Zeroizing<Vec<u8>>> {
    let Some(first) = parts.first() else {
        return Err(Error::InvalidShare("no shares given".into()));
    };
    if first.len() < 2 || parts.iter().any(|p| p.len() != first.len()) {
        return Err(Error::InvalidShare("key shares have different lengths".into()));
    }
    let mut ids: Vec<u8> = parts.iter().map(|p| p[0]).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) || ids.contains(&0) {
        return Err(Error::InvalidShare("key shares repeat an identifier".into()));
    }
    let raw: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    let out = vsss_rs::Gf256::combine_bytes(&raw).map(Zeroizing::new);
    for mut r in raw {
        zeroize::Zeroize::zeroize(&mut r);
    }
    out.map_err(|_| Error::InvalidShare("key shares could not be combined".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_subset_recovers_the_secret() {
        let secret = [7u8; 32];
        let shares = split(&secret, 5, 3).expect("split");
        assert_eq!(shares.len(), 5);
        for pick in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let subset: Vec<_> = pick.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(combine(&subset).expect("combine").as_slice(), &secret);
        }
    }

    #[test]
    fn fewer_than_threshold_shares_do_not_recover_the_secret() {
        let secret = [9u8; 32];
        let shares = split(&secret, 5, 3).expect("split");
        let two = combine(&shares[..2]).expect("combine runs");
        assert_ne!(two.as_slice(), &secret);
    }

    #[test]
    fn repeated_shares_are_refused() {
        let shares = split(&[1u8; 32], 3, 2).expect("split");
        assert!(combine(&[shares[0].clone(), shares[0].clone()]).is_err());
    }
}
