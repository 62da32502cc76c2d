//! The barrier: everything Coffer stores passes through here and is sealed with AES-256-GCM.
//!
//! Guarantees: no value reaches the [`Backend`] in cleartext; each value is bound to its storage
//! path (a ciphertext moved to another key fails to open); a flipped bit anywhere in a stored value
//! makes the read fail; key material lives in zeroizing buffers and has no `Debug`.
//! Not guaranteed here: *who* may read what. That is the core's ACL, above.

mod aead;
mod autoseal;
mod error;
mod keyring;
mod seal;
pub mod shamir;
mod view;

use std::sync::{Arc, RwLock};

use coffer_storage::{Backend, Op};
use zeroize::Zeroizing;

pub use autoseal::{KeyWrapper, StaticSeal};
pub use error::{Error, Result};
pub use keyring::TermInfo;
pub use seal::{HeldRootKey, NewUnsealKey, SealConfig};
pub use view::View;

use keyring::Keyring;

/// Storage keys the barrier keeps for itself; nothing above may write them.
pub(crate) const SEAL_CONFIG_PATH: &str = "core/seal-config";
pub(crate) const ROOT_KEY_PATH: &str = "core/root-key";
pub(crate) const KEYRING_PATH: &str = "core/keyring";
/// An encrypted copy of the seal config, so a tampered plaintext config is noticed at unseal.
pub(crate) const SEAL_CONFIG_SEALED_PATH: &str = "core/seal-config-sealed";

/// Encrypting access to a [`Backend`]. Sealed until [`Barrier::unseal`] gets the right key.
pub struct Barrier {
    backend: Arc<dyn Backend>,
    keyring: RwLock<Option<Arc<Keyring>>>,
    /// One rotation at a time: two would both create term N+1 with different keys.
    rotate_lock: tokio::sync::Mutex<()>,
}

impl Barrier {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self { backend, keyring: RwLock::new(None), rotate_lock: tokio::sync::Mutex::new(()) }
    }

    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    pub fn is_sealed(&self) -> bool {
        self.keyring.read().map(|k| k.is_none()).unwrap_or(true)
    }

    /// Forgets every key; all reads and writes fail with [`Error::Sealed`] until unsealed again.
    pub fn seal(&self) {
        if let Ok(mut k) = self.keyring.write() {
            // Dropping the last Arc zeroizes the keys.
            *k = None;
        }
    }

    fn keyring(&self) -> Result<Arc<Keyring>> {
        self.keyring
            .read()
            .map_err(|_| Error::Internal("keyring lock poisoned".into()))?
            .clone()
            .ok_or(Error::Sealed)
    }

    fn install(&self, keyring: Keyring) -> Result<()> {
        *self.keyring.write().map_err(|_| Error::Internal("keyring lock poisoned".into()))? =
            Some(Arc::new(keyring));
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let keyring = self.keyring()?;
        match self.backend.get(key).await? {
            None => Ok(None),
            Some(blob) => keyring.open(key, &blob).map(Some),
        }
    }

    /// Whether a value is stored at `key`, without opening it: a damaged value is there too.
    /// For the checks that only need that (a write's create-or-update probe), which need not
    /// pay for the decryption.
    pub async fn contains(&self, key: &str) -> Result<bool> {
        self.keyring()?;
        Ok(self.backend.get(key).await?.is_some())
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let keyring = self.keyring()?;
        let blob = keyring.seal(key, value)?;
        Ok(self.backend.put(key, blob).await?)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.keyring()?;
        Ok(self.backend.delete(key).await?)
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.keyring()?;
        Ok(self.backend.list(prefix).await?)
    }

    /// A page of keys below `prefix`, see [`coffer_storage::Backend::scan`].
    pub async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.keyring()?;
        Ok(self.backend.scan(prefix, after, limit).await?)
    }

    /// Atomically applies puts (encrypted here) and deletes.
    pub async fn batch(&self, ops: Vec<BatchOp<'_>>) -> Result<()> {
        let keyring = self.keyring()?;
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                BatchOp::Put(k, v) => {
                    let blob = keyring.seal(&k, v)?;
                    Op::Put(k, blob)
                }
                BatchOp::Delete(k) => Op::Delete(k),
            });
        }
        Ok(self.backend.batch(out).await?)
    }

    /// Adds a new key term and makes it the one new writes use; old terms still decrypt.
    pub async fn rotate(&self) -> Result<TermInfo> {
        let _g = self.rotate_lock.lock().await;
        let current = self.keyring()?;
        let next = current.with_new_term()?;
        let sealed = next.sealed_form()?;
        self.backend.put(KEYRING_PATH, sealed).await?;
        let info = next.active_info();
        // Sealed meanwhile: the new term is stored and will load at unseal, but the keys must
        // not come back into memory now.
        let mut slot =
            self.keyring.write().map_err(|_| Error::Internal("keyring lock poisoned".into()))?;
        if slot.is_none() {
            return Err(Error::Sealed);
        }
        *slot = Some(Arc::new(next));
        Ok(info)
    }

    pub fn key_status(&self) -> Result<TermInfo> {
        Ok(self.keyring()?.active_info())
    }

    /// Every key below `prefix` (recursively), for unmounting.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        self.keyring()?;
        let mut stack = vec![prefix.to_owned()];
        let mut keys = Vec::new();
        while let Some(p) = stack.pop() {
            for child in self.backend.list(&p).await? {
                let full = format!("{p}{child}");
                if full.ends_with('/') {
                    stack.push(full);
                } else {
                    keys.push(Op::Delete(full));
                }
            }
        }
        for chunk in keys.chunks(500) {
            self.backend.batch(chunk.to_vec()).await?;
        }
        Ok(())
    }
}

/// One change in [`Barrier::batch`]; puts carry cleartext that the barrier encrypts.
pub enum BatchOp<'a> {
    Put(String, &'a [u8]),
    Delete(String),
}

#[cfg(test)]
mod tests;
