//! The keyring: one AES-256 key per term. New writes use the active (newest) term; reads use the
//! term named in the blob, so `rotate` never re-encrypts existing data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{AeadKey, KEY_LEN, random_key, split_blob};
use crate::{Error, KEYRING_PATH, Result};

struct TermKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    aead: AeadKey,
    install_time: u64,
}

pub(crate) struct Keyring {
    root_key: Zeroizing<[u8; KEY_LEN]>,
    terms: BTreeMap<u32, TermKey>,
    active: u32,
    encryptions: AtomicU64,
}

/// What `sys/key-status` reports about the active term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermInfo {
    pub term: u32,
    /// Unix seconds.
    pub install_time: u64,
    /// Encryptions with this term since this process unsealed.
    pub encryptions: u64,
}

/// The on-disk form of the keyring, inside an envelope sealed by the root key.
#[derive(Serialize, Deserialize)]
struct StoredKeyring {
    version: u32,
    active_term: u32,
    terms: Vec<StoredTerm>,
}

#[derive(Serialize, Deserialize)]
struct StoredTerm {
    term: u32,
    key: Vec<u8>,
    install_time: u64,
}

impl Drop for StoredTerm {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Keyring {
    /// A fresh keyring with term 1, under `root_key`.
    pub(crate) fn generate(root_key: Zeroizing<[u8; KEY_LEN]>) -> Result<Self> {
        let mut ring =
            Self { root_key, terms: BTreeMap::new(), active: 0, encryptions: AtomicU64::new(0) };
        ring.add_term(1, random_key()?, now())?;
        Ok(ring)
    }

    fn add_term(
        &mut self,
        term: u32,
        key: Zeroizing<[u8; KEY_LEN]>,
        install_time: u64,
    ) -> Result<()> {
        let aead = AeadKey::new(key.as_ref())?;
        self.terms.insert(term, TermKey { key, aead, install_time });
        self.active = self.active.max(term);
        Ok(())
    }

    pub(crate) fn with_new_term(&self) -> Result<Self> {
        let mut next = Self {
            root_key: self.root_key.clone(),
            terms: BTreeMap::new(),
            active: 0,
            encryptions: AtomicU64::new(0),
        };
        for (term, k) in &self.terms {
            next.add_term(*term, k.key.clone(), k.install_time)?;
        }
        let term = self.active.checked_add(1).ok_or(Error::Internal("key term overflow".into()))?;
        next.add_term(term, random_key()?, now())?;
        Ok(next)
    }

    pub(crate) fn root_key(&self) -> &[u8] {
        self.root_key.as_ref()
    }

    pub(crate) fn seal(&self, path: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let key =
            self.terms.get(&self.active).ok_or(Error::Internal("active term missing".into()))?;
        self.encryptions.fetch_add(1, Ordering::Relaxed);
        key.aead.seal(self.active, path, plaintext)
    }

    pub(crate) fn open(&self, path: &str, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let term = split_blob(path, blob)?.term;
        let key = self.terms.get(&term).ok_or_else(|| Error::Corrupt(path.into()))?;
        key.aead.open(path, blob)
    }

    pub(crate) fn active_info(&self) -> TermInfo {
        TermInfo {
            term: self.active,
            install_time: self.terms.get(&self.active).map(|t| t.install_time).unwrap_or(0),
            encryptions: self.encryptions.load(Ordering::Relaxed),
        }
    }

    /// The keyring sealed under the root key, ready for storage at [`KEYRING_PATH`].
    pub(crate) fn sealed_form(&self) -> Result<Vec<u8>> {
        let stored = StoredKeyring {
            version: 1,
            active_term: self.active,
            terms: self
                .terms
                .iter()
                .map(|(t, k)| StoredTerm {
                    term: *t,
                    key: k.key.to_vec(),
                    install_time: k.install_time,
                })
                .collect(),
        };
        let json = Zeroizing::new(
            serde_json::to_vec(&stored)
                .map_err(|e| Error::Internal(format!("keyring encode: {e}")))?,
        );
        AeadKey::new(self.root_key())?.seal(0, KEYRING_PATH, &json)
    }

    /// Opens a stored keyring with `root_key`.
    pub(crate) fn from_sealed(root_key: Zeroizing<[u8; KEY_LEN]>, blob: &[u8]) -> Result<Self> {
        let json = AeadKey::new(root_key.as_ref())?.open(KEYRING_PATH, blob)?;
        let stored: StoredKeyring =
            serde_json::from_slice(&json).map_err(|_| Error::Corrupt(KEYRING_PATH.into()))?;
        if stored.version != 1 {
            return Err(Error::Internal(format!("unknown keyring version {}", stored.version)));
        }
        let mut ring =
            Self { root_key, terms: BTreeMap::new(), active: 0, encryptions: AtomicU64::new(0) };
        for t in &stored.terms {
            let key: [u8; KEY_LEN] =
                t.key.as_slice().try_into().map_err(|_| Error::Corrupt(KEYRING_PATH.into()))?;
            ring.add_term(t.term, Zeroizing::new(key), t.install_time)?;
        }
        if ring.active != stored.active_term {
            return Err(Error::Corrupt(KEYRING_PATH.into()));
        }
        Ok(ring)
    }
}
