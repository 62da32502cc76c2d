//! AES-256-GCM with a random 96-bit nonce per message and the storage path as associated data.
//! Blob layout: `[version=1][term: u32 BE][nonce: 12][ciphertext || tag: 16]`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::Zeroizing;

use crate::{Error, Result};

pub(crate) const BLOB_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
pub(crate) const KEY_LEN: usize = 32;

pub(crate) struct AeadKey(LessSafeKey);

impl AeadKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| Error::Internal("AES-256-GCM key of the wrong length".into()))?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    pub(crate) fn seal(&self, term: u32, path: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce_bytes = random_array::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        out.push(BLOB_VERSION);
        out.extend_from_slice(&term.to_be_bytes());
        out.extend_from_slice(&nonce_bytes);
        // Encrypted where it lies in the blob: no second buffer and copy per value written.
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(path.as_bytes()),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| Error::Internal("encryption failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    pub(crate) fn open(&self, path: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let parts = split_blob(path, blob)?;
        let mut buf = Zeroizing::new(parts.body.to_vec());
        let nonce = Nonce::try_assume_unique_for_key(parts.nonce)
            .map_err(|_| Error::Corrupt(path.into()))?;
        let len = self
            .0
            .open_in_place(nonce, Aad::from(path.as_bytes()), &mut buf)
            .map_err(|_| Error::Corrupt(path.into()))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

pub(crate) struct BlobParts<'a> {
    pub(crate) term: u32,
    nonce: &'a [u8],
    body: &'a [u8],
}

/// The term a blob names, and its nonce and body; a blob too short or of an unknown version is
/// corrupt.
pub(crate) fn split_blob<'a>(path: &str, blob: &'a [u8]) -> Result<BlobParts<'a>> {
    if blob.len() < HEADER_LEN + 16 || blob[0] != BLOB_VERSION {
        return Err(Error::Corrupt(path.into()));
    }
    let term = u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]);
    Ok(BlobParts { term, nonce: &blob[5..HEADER_LEN], body: &blob[HEADER_LEN..] })
}

pub(crate) fn random_array<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| Error::Internal("system RNG failed".into()))?;
    Ok(b)
}

pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| Error::Internal("system RNG failed".into()))?;
    Ok(k)
}
