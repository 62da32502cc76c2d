//! Shamir seal: the root key is encrypted by an unseal key that exists only as shares.
//!
//! Guarantees: the unseal key is never stored; the root key is stored only under it; a wrong set
//! of shares yields [`Error::WrongKey`] and never a usable barrier.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::aead::{AeadKey, KEY_LEN, random_key};
use crate::keyring::Keyring;
use crate::{
    Barrier, Error, KEYRING_PATH, ROOT_KEY_PATH, Result, SEAL_CONFIG_PATH, SEAL_CONFIG_SEALED_PATH,
    shamir,
};

/// The root key, held in memory while a chaos `seal` fault lasts; no `Debug`, zeroized on drop.
pub struct HeldRootKey(Zeroizing<[u8; KEY_LEN]>);

/// A fresh unseal key and its shares, made for a rekey. Nothing is stored until
/// [`Barrier::rekey`] installs it; no `Debug`, zeroized on drop.
pub struct NewUnsealKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    config: SealConfig,
    /// The shares to hand out (one share = the key itself when the config has one share).
    pub shares: Vec<Zeroizing<Vec<u8>>>,
}

impl NewUnsealKey {
    /// A random unseal key split as `config` says.
    pub fn generate(config: &SealConfig) -> Result<Self> {
        let key = random_key()?;
        let shares = split_key(key.as_ref(), config)?;
        Ok(Self { key, config: config.clone(), shares })
    }

    pub fn config(&self) -> &SealConfig {
        &self.config
    }

    pub(crate) fn key_bytes(&self) -> &[u8] {
        self.key.as_slice()
    }

    /// Whether `shares` combine to this key (a rekey's verification step); constant-time.
    pub fn combines_from(&self, shares: &[Zeroizing<Vec<u8>>]) -> bool {
        combine_key(shares, &self.config)
            .is_ok_and(|k| subtle::ConstantTimeEq::ct_eq(k.as_slice(), self.key.as_slice()).into())
    }
}

pub(crate) fn split_key(key: &[u8], config: &SealConfig) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    if config.secret_shares == 1 {
        Ok(vec![Zeroizing::new(key.to_vec())])
    } else {
        shamir::split(key, config.secret_shares, config.secret_threshold)
    }
}

pub(crate) fn combine_key(
    shares: &[Zeroizing<Vec<u8>>],
    config: &SealConfig,
) -> Result<Zeroizing<Vec<u8>>> {
    if config.secret_shares == 1 {
        shares.first().cloned().ok_or(Error::WrongKey)
    } else {
        shamir::combine(shares)
    }
}

/// How the unseal key is split. Stored in the clear (it is needed before unseal) and, as a guard
/// against tampering, once more inside the barrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    #[serde(rename = "type")]
    pub seal_type: String,
    pub secret_shares: u8,
    pub secret_threshold: u8,
}

impl SealConfig {
    pub fn shamir(secret_shares: u64, secret_threshold: u64) -> Result<Self> {
        let bad = |m: &str| Err(Error::InvalidSealConfig(m.into()));
        // Vault's checks, in Vault's order and words (clients show them as they are).
        if secret_shares < 1 {
            return bad("shares must be at least one");
        }
        if secret_threshold < 1 {
            return bad("threshold must be at least one");
        }
        if secret_shares > 1 && secret_threshold < 2 {
            return bad("threshold must be greater than one for multiple shares");
        }
        if secret_shares > 255 {
            return bad("shares must be less than 256");
        }
        if secret_threshold > secret_shares {
            return bad("threshold cannot be larger than shares");
        }
        Ok(Self {
            seal_type: "shamir".into(),
            secret_shares: secret_shares as u8,
            secret_threshold: secret_threshold as u8,
        })
    }
}

impl Barrier {
    pub async fn seal_config(&self) -> Result<Option<SealConfig>> {
        match self.backend.get(SEAL_CONFIG_PATH).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|_| Error::Corrupt(SEAL_CONFIG_PATH.into())),
        }
    }

    pub async fn is_initialized(&self) -> Result<bool> {
        Ok(self.seal_config().await?.is_some())
    }

    /// Creates root key, keyring and unseal key; returns the unseal key's shares. The barrier is
    /// left *unsealed* so the caller can write its initial state, then seal.
    pub async fn initialize(&self, config: &SealConfig) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        if self.is_initialized().await? {
            return Err(Error::AlreadyInitialized);
        }
        let unseal_key = random_key()?;
        let root_key = random_key()?;
        let keyring = Keyring::generate(root_key.clone())?;
        let sealed_root =
            AeadKey::new(unseal_key.as_ref())?.seal(0, ROOT_KEY_PATH, root_key.as_ref())?;
        let sealed_ring = keyring.sealed_form()?;
        let [sealed_config, config_json] = config_records(&keyring, config)?;
        let shares = split_key(unseal_key.as_ref(), config)?;
        // The seal config goes last: until it exists, the store counts as uninitialized.
        self.backend
            .batch(vec![
                coffer_storage::Op::Put(ROOT_KEY_PATH.into(), sealed_root),
                coffer_storage::Op::Put(KEYRING_PATH.into(), sealed_ring),
                sealed_config,
                config_json,
            ])
            .await?;
        self.install(keyring)?;
        Ok(shares)
    }

    /// Combines `shares` (one share = the key itself when the config has one share) and opens
    /// the barrier with the result.
    pub async fn unseal_with_shares(&self, shares: &[Zeroizing<Vec<u8>>]) -> Result<()> {
        let config = self.seal_config().await?.ok_or(Error::NotInitialized)?;
        if config.seal_type != "shamir" {
            // Recovery shares never unseal (as in Vault): the seal does.
            return Err(Error::InvalidSealConfig(format!(
                "this server auto-unseals with its {} seal; key shares cannot unseal it",
                config.seal_type
            )));
        }
        let key = combine_key(shares, &config)?;
        self.unseal_with_key(&key, &config).await
    }

    /// Checks, on an unsealed barrier, that `shares` combine to its unseal key: the proof that
    /// generate-root and rekey ask of their operators. Changes nothing; a wrong set is
    /// [`Error::WrongKey`] (or [`Error::InvalidShare`] when they do not even combine).
    pub async fn verify_unseal_shares(&self, shares: &[Zeroizing<Vec<u8>>]) -> Result<()> {
        let keyring = self.keyring()?;
        let config = self.seal_config().await?.ok_or(Error::NotInitialized)?;
        if config.seal_type != "shamir" {
            // Auto-unseal: the quorum is of recovery key shares.
            return self.verify_recovery_shares(&keyring, &config, shares).await;
        }
        let key = combine_key(shares, &config)?;
        let root = self.open_root_key(&key).await?;
        // The stored root key opened, so the key is right; comparing with the root key in use
        // also refuses a storage whose root key was swapped under a running server.
        if bool::from(subtle::ConstantTimeEq::ct_eq(root.as_slice(), keyring.root_key())) {
            Ok(())
        } else {
            Err(Error::WrongKey)
        }
    }

    /// Replaces the unseal key (and the seal config) with `new`, on an unsealed barrier: the
    /// root key is stored again under the new key, in one atomic batch with the new config, so
    /// a crash leaves either the old key working or the new one, never neither. The keyring and
    /// every stored value are untouched.
    pub async fn rekey(&self, new: &NewUnsealKey) -> Result<()> {
        let keyring = self.keyring()?;
        if self.seal_config().await?.is_some_and(|c| c.seal_type != "shamir") {
            return Err(Error::InvalidSealConfig(
                "rekey replaces Shamir unseal shares; this server auto-unseals (recovery key rekey is not supported)".into(),
            ));
        }
        let sealed_root =
            AeadKey::new(new.key.as_ref())?.seal(0, ROOT_KEY_PATH, keyring.root_key())?;
        let [sealed_config, config_json] = config_records(&keyring, &new.config)?;
        self.backend
            .batch(vec![
                coffer_storage::Op::Put(ROOT_KEY_PATH.into(), sealed_root),
                sealed_config,
                config_json,
            ])
            .await?;
        Ok(())
    }

    async fn open_root_key(&self, unseal_key: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if unseal_key.len() != KEY_LEN {
            return Err(Error::WrongKey);
        }
        let sealed_root = self.backend.get(ROOT_KEY_PATH).await?.ok_or(Error::NotInitialized)?;
        AeadKey::new(unseal_key)?.open(ROOT_KEY_PATH, &sealed_root).map_err(|e| match e {
            Error::Corrupt(_) => Error::WrongKey,
            other => other,
        })
    }

    /// A copy of the root key, for a server that seals itself for a while (a chaos fault) and
    /// must open again at a deadline without an operator. The deliberate declassification: the
    /// key stays in process memory, in a zeroizing buffer without `Debug`, for as long as the
    /// [`HeldRootKey`] lives; it is never serialized.
    pub fn hold_root_key(&self) -> Result<HeldRootKey> {
        let keyring = self.keyring()?;
        let key: [u8; KEY_LEN] =
            keyring.root_key().try_into().map_err(|_| Error::Internal("root key length".into()))?;
        Ok(HeldRootKey(Zeroizing::new(key)))
    }

    /// Opens the barrier with a root key held by [`Barrier::hold_root_key`]; the stored keyring
    /// and the sealed copy of the seal config are checked as at any unseal.
    pub async fn unseal_with_held_key(&self, held: &HeldRootKey) -> Result<()> {
        let config = self.seal_config().await?.ok_or(Error::NotInitialized)?;
        let sealed_ring = self.backend.get(KEYRING_PATH).await?.ok_or(Error::NotInitialized)?;
        let keyring = Keyring::from_sealed(held.0.clone(), &sealed_ring)?;
        self.check_config_and_install(keyring, &config).await
    }

    pub(crate) async fn unseal_with_key(
        &self,
        unseal_key: &[u8],
        config: &SealConfig,
    ) -> Result<()> {
        let root = self.open_root_key(unseal_key).await?;
        let root: [u8; KEY_LEN] =
            root.as_slice().try_into().map_err(|_| Error::Corrupt(ROOT_KEY_PATH.into()))?;
        let sealed_ring = self.backend.get(KEYRING_PATH).await?.ok_or(Error::NotInitialized)?;
        let keyring = Keyring::from_sealed(Zeroizing::new(root), &sealed_ring)?;
        self.check_config_and_install(keyring, config).await
    }

    async fn check_config_and_install(&self, keyring: Keyring, config: &SealConfig) -> Result<()> {
        let sealed_config = self
            .backend
            .get(SEAL_CONFIG_SEALED_PATH)
            .await?
            .ok_or_else(|| Error::Corrupt(SEAL_CONFIG_SEALED_PATH.into()))?;
        let inner: SealConfig =
            serde_json::from_slice(&keyring.open(SEAL_CONFIG_SEALED_PATH, &sealed_config)?)
                .map_err(|_| Error::Corrupt(SEAL_CONFIG_SEALED_PATH.into()))?;
        if &inner != config {
            return Err(Error::Corrupt(SEAL_CONFIG_PATH.into()));
        }
        self.install(keyring)
    }
}

/// A seal configuration's two records, for the batch that changes it: sealed by the keyring
/// (what an unsealed barrier trusts) and in the clear (read before unseal; put it last: until it
/// exists, the store counts as uninitialized).
pub(crate) fn config_records(
    keyring: &Keyring,
    config: &SealConfig,
) -> Result<[coffer_storage::Op; 2]> {
    let json =
        serde_json::to_vec(config).map_err(|e| Error::Internal(format!("seal config: {e}")))?;
    let sealed = keyring.seal(SEAL_CONFIG_SEALED_PATH, &json)?;
    Ok([
        coffer_storage::Op::Put(SEAL_CONFIG_SEALED_PATH.into(), sealed),
        coffer_storage::Op::Put(SEAL_CONFIG_PATH.into(), json),
    ])
}
