//! Auto-unseal: the unseal key is stored wrapped by a key the server can reach without a person
//! (a [`KeyWrapper`]: a static key file, a KMS), so a server unseals itself at start. Operators
//! get *recovery* key shares instead of unseal shares: they prove a quorum for generate-root, and
//! cannot unseal (as in Vault).
//!
//! Guarantees: the unseal key is stored only wrapped; the recovery key only inside the barrier
//! (readable once unsealed), and its shares are checked against it in constant time; a wrapped
//! key names the wrapping key's id, so a wrapper with a previous key still opens it after the
//! current key changed.
//!
//! The recovery key is replaced with [`Barrier::rekey_recovery`] (`sys/rekey-recovery-key`).
//!
//! Seal-to-seal migration ([`Barrier::migrate_between`]) re-wraps the same unseal key.
//!
//! Not done: re-wrapping under a new current key without a migration (a static seal's
//! `previous_key` keeps opening what it wrapped).

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::aead::{AeadKey, KEY_LEN, random_key};
use crate::keyring::Keyring;
use crate::seal::{config_records, split_key};
use crate::{Barrier, Error, KEYRING_PATH, ROOT_KEY_PATH, Result, SealConfig};

/// The wrapped unseal key (plain storage: it is read before unseal).
pub(crate) const WRAPPED_KEY_PATH: &str = "core/seal/wrapped-unseal-key";
/// The recovery key, sealed by the keyring.
pub(crate) const RECOVERY_KEY_PATH: &str = "core/seal/recovery-key";
/// Present (plain storage) from an auto-unseal init until its initial state and root token are
/// written: other nodes on the same storage must not auto-unseal and take over before then, or
/// the initializing node's remaining writes are fenced and its init fails halfway.
pub(crate) const INIT_PENDING_PATH: &str = "core/seal/init-pending";

/// What wraps the unseal key of an auto-unseal barrier.
#[async_trait]
pub trait KeyWrapper: Send + Sync + 'static {
    /// The seal type, as `sys/seal-status` shows it (`static`, `transit`).
    fn seal_type(&self) -> &'static str;
    async fn wrap(&self, key: &[u8]) -> Result<Vec<u8>>;
    async fn unwrap(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>>;
}

/// OpenBao's `seal "static"`: AES-256-GCM under a 32-byte key given in the configuration, with
/// an optional previous key that still opens what it wrapped.
pub struct StaticSeal {
    current: (String, Zeroizing<Vec<u8>>),
    previous: Option<(String, Zeroizing<Vec<u8>>)>,
}

impl StaticSeal {
    pub fn new(
        current_id: String,
        current: Zeroizing<Vec<u8>>,
        previous: Option<(String, Zeroizing<Vec<u8>>)>,
    ) -> Result<Self> {
        for (id, k) in
            std::iter::once((&current_id, &current)).chain(previous.iter().map(|(i, k)| (i, k)))
        {
            if k.len() != KEY_LEN {
                return Err(Error::InvalidSealConfig(format!(
                    "static seal key {id:?} must be 32 bytes, not {}",
                    k.len()
                )));
            }
            if id.is_empty() || id.len() > 255 {
                return Err(Error::InvalidSealConfig(
                    "static seal key ids must be 1 to 255 bytes".into(),
                ));
            }
        }
        Ok(Self { current: (current_id, current), previous })
    }

    fn aad(id: &str) -> String {
        format!("{WRAPPED_KEY_PATH}#static#{id}")
    }
}

#[async_trait]
impl KeyWrapper for StaticSeal {
    fn seal_type(&self) -> &'static str {
        "static"
    }

    async fn wrap(&self, key: &[u8]) -> Result<Vec<u8>> {
        let (id, k) = &self.current;
        let ct = AeadKey::new(k)?.seal(0, &Self::aad(id), key)?;
        // [id length][id][AEAD blob]
        let mut out = Vec::with_capacity(1 + id.len() + ct.len());
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&ct);
        Ok(out)
    }

    async fn unwrap(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let corrupt = || Error::Corrupt(WRAPPED_KEY_PATH.into());
        let n = *blob.first().ok_or_else(corrupt)? as usize;
        let id =
            blob.get(1..1 + n).and_then(|b| std::str::from_utf8(b).ok()).ok_or_else(corrupt)?;
        let ct = &blob[1 + n..];
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|(i, _)| i == id)
            .ok_or_else(|| {
                Error::InvalidSealConfig(format!(
                    "the unseal key is wrapped by static key {id:?}, which the seal stanza does not give (current_key_id or previous_key_id)"
                ))
            })?;
        AeadKey::new(&key.1)?.open(&Self::aad(id), ct).map_err(|_| Error::WrongKey)
    }
}

impl Barrier {
    /// Initializes for auto-unseal: a random unseal key stored wrapped by `wrapper`, and a
    /// random recovery key split as `recovery` says, stored inside the barrier. Returns the
    /// recovery shares; the barrier is left unsealed, as [`Barrier::initialize`] leaves it.
    pub async fn initialize_auto(
        &self,
        recovery: &SealConfig,
        wrapper: &dyn KeyWrapper,
    ) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        if self.is_initialized().await? {
            return Err(Error::AlreadyInitialized);
        }
        let config = SealConfig { seal_type: wrapper.seal_type().into(), ..recovery.clone() };
        let unseal_key = random_key()?;
        let recovery_key = random_key()?;
        let root_key = random_key()?;
        let keyring = Keyring::generate(root_key.clone())?;
        let sealed_root =
            AeadKey::new(unseal_key.as_ref())?.seal(0, ROOT_KEY_PATH, root_key.as_ref())?;
        let wrapped = wrapper.wrap(unseal_key.as_ref()).await?;
        let sealed_recovery = keyring.seal(RECOVERY_KEY_PATH, recovery_key.as_ref())?;
        let sealed_ring = keyring.sealed_form()?;
        let [sealed_config, config_json] = config_records(&keyring, &config)?;
        let shares = split_key(recovery_key.as_ref(), &config)?;
        self.backend
            .batch(vec![
                coffer_storage::Op::Put(ROOT_KEY_PATH.into(), sealed_root),
                coffer_storage::Op::Put(KEYRING_PATH.into(), sealed_ring),
                coffer_storage::Op::Put(WRAPPED_KEY_PATH.into(), wrapped),
                coffer_storage::Op::Put(RECOVERY_KEY_PATH.into(), sealed_recovery),
                sealed_config,
                coffer_storage::Op::Put(INIT_PENDING_PATH.into(), b"1".to_vec()),
                // Last: until it exists, the store counts as uninitialized.
                config_json,
            ])
            .await?;
        self.install(keyring)?;
        Ok(shares)
    }

    /// Whether an auto-unseal init has written its keys but not yet finished
    /// ([`Barrier::finish_auto_init`]): until then no node auto-unseals.
    pub async fn auto_init_pending(&self) -> Result<bool> {
        Ok(self.backend.get(INIT_PENDING_PATH).await?.is_some())
    }

    /// Ends an auto-unseal init, once the initial state and root token are written.
    pub async fn finish_auto_init(&self) -> Result<()> {
        self.backend.delete(INIT_PENDING_PATH).await?;
        Ok(())
    }

    /// Opens an auto-unseal barrier with its wrapper. [`Error::NotInitialized`] before init;
    /// [`Error::InvalidSealConfig`] when the storage was initialized for another seal.
    pub async fn unseal_auto(&self, wrapper: &dyn KeyWrapper) -> Result<()> {
        self.unseal_wrapped(wrapper, |stored, configured| {
            format!(
                "the storage uses seal type {stored:?}, the configuration has {configured:?}: to migrate, keep the old seal's stanza with disabled = \"true\" (or, from Shamir, none) and run `coffer operator unseal -migrate` with the shares"
            )
        })
        .await
        .map(drop)
    }

    /// Unseals with the key `wrapper` unwraps, once the stored seal type is the wrapper's;
    /// otherwise [`Error::InvalidSealConfig`] with `mismatch(stored, configured)`. Returns the
    /// seal config and the unseal key.
    /// [`Self::unseal_wrapped`] with the seal of a disabled stanza (a migration away from it).
    async fn unseal_disabled(
        &self,
        wrapper: &dyn KeyWrapper,
    ) -> Result<(SealConfig, Zeroizing<Vec<u8>>)> {
        self.unseal_wrapped(wrapper, |stored, configured| {
            format!("the storage uses seal type {stored:?}, not the disabled {configured:?} seal")
        })
        .await
    }

    async fn unseal_wrapped(
        &self,
        wrapper: &dyn KeyWrapper,
        mismatch: impl FnOnce(&str, &str) -> String,
    ) -> Result<(SealConfig, Zeroizing<Vec<u8>>)> {
        let config = self.seal_config().await?.ok_or(Error::NotInitialized)?;
        if config.seal_type != wrapper.seal_type() {
            return Err(Error::InvalidSealConfig(mismatch(&config.seal_type, wrapper.seal_type())));
        }
        let wrapped = self
            .backend
            .get(WRAPPED_KEY_PATH)
            .await?
            .ok_or_else(|| Error::Corrupt(WRAPPED_KEY_PATH.into()))?;
        let key = wrapper.unwrap(&wrapped).await?;
        self.unseal_with_key(&key, &config).await?;
        Ok((config, key))
    }

    /// On an unsealed auto-unseal barrier: whether `shares` combine to the recovery key
    /// (constant-time); [`Error::WrongKey`] when they do not.
    pub(crate) async fn verify_recovery_shares(
        &self,
        keyring: &Keyring,
        config: &SealConfig,
        shares: &[Zeroizing<Vec<u8>>],
    ) -> Result<()> {
        let stored = self
            .backend
            .get(RECOVERY_KEY_PATH)
            .await?
            .ok_or_else(|| Error::Corrupt(RECOVERY_KEY_PATH.into()))?;
        let recovery = keyring.open(RECOVERY_KEY_PATH, &stored)?;
        let given = crate::seal::combine_key(shares, config)?;
        if bool::from(subtle::ConstantTimeEq::ct_eq(given.as_slice(), recovery.as_slice())) {
            Ok(())
        } else {
            Err(Error::WrongKey)
        }
    }
}

impl Barrier {
    /// Seal migration from Shamir to auto-unseal (`unseal -migrate`): `shares` must open this
    /// sealed Shamir barrier. The unseal key is then stored wrapped by `wrapper`, and becomes the
    /// recovery key too, so the same shares go on proving a quorum (as in Vault). One atomic
    /// batch: a crash leaves the Shamir barrier or the migrated one. The barrier is left
    /// unsealed.
    pub async fn migrate_to_auto(
        &self,
        shares: &[Zeroizing<Vec<u8>>],
        wrapper: &dyn KeyWrapper,
    ) -> Result<()> {
        let config = self.seal_config().await?.ok_or(Error::NotInitialized)?;
        if config.seal_type != "shamir" {
            return Err(Error::InvalidSealConfig(format!(
                "the storage already uses the {} seal",
                config.seal_type
            )));
        }
        let key = crate::seal::combine_key(shares, &config)?;
        self.unseal_with_key(&key, &config).await?;
        let keyring = self.keyring()?;
        let migrated = SealConfig { seal_type: wrapper.seal_type().into(), ..config };
        self.commit_migration(async {
            let wrapped = wrapper.wrap(&key).await?;
            let sealed_recovery = keyring.seal(RECOVERY_KEY_PATH, &key)?;
            let [sealed_config, config_json] = config_records(&keyring, &migrated)?;
            Ok(vec![
                coffer_storage::Op::Put(WRAPPED_KEY_PATH.into(), wrapped),
                coffer_storage::Op::Put(RECOVERY_KEY_PATH.into(), sealed_recovery),
                sealed_config,
                config_json,
            ])
        })
        .await
    }

    /// The last step of a seal migration, on the barrier the migration just unsealed: the
    /// records `ops` computes, written in one atomic batch. Any failure (computing them, the
    /// seal, the write) seals the barrier again, so a migration that did not happen leaves the
    /// barrier as it found it.
    async fn commit_migration(
        &self,
        ops: impl std::future::Future<Output = Result<Vec<coffer_storage::Op>>>,
    ) -> Result<()> {
        let result = async { Ok(self.backend.batch(ops.await?).await?) }.await;
        if result.is_err() {
            self.seal();
        }
        result
    }
}

impl Barrier {
    /// Seal migration from auto-unseal back to Shamir shares (`unseal -migrate` with the old
    /// seal stanza marked `disabled`): `wrapper` opens the barrier, `shares` must be a quorum of
    /// the recovery key, which becomes the unseal key (so the same shares now unseal, as in
    /// Vault). One atomic batch; the barrier is left unsealed.
    pub async fn migrate_to_shamir(
        &self,
        shares: &[Zeroizing<Vec<u8>>],
        wrapper: &dyn KeyWrapper,
    ) -> Result<()> {
        let (config, _) = self.unseal_disabled(wrapper).await?;
        let keyring = self.keyring()?;
        self.commit_migration(async {
            self.verify_recovery_shares(&keyring, &config, shares).await?;
            let recovery = crate::seal::combine_key(shares, &config)?;
            let sealed_root =
                AeadKey::new(&recovery)?.seal(0, ROOT_KEY_PATH, keyring.root_key())?;
            let shamir = SealConfig { seal_type: "shamir".into(), ..config.clone() };
            let [sealed_config, config_json] = config_records(&keyring, &shamir)?;
            Ok(vec![
                coffer_storage::Op::Put(ROOT_KEY_PATH.into(), sealed_root),
                coffer_storage::Op::Delete(WRAPPED_KEY_PATH.into()),
                coffer_storage::Op::Delete(RECOVERY_KEY_PATH.into()),
                sealed_config,
                config_json,
            ])
        })
        .await
    }
}

impl Barrier {
    /// Replaces the recovery key (and its split in the seal config) with `new`, on an unsealed
    /// auto-unseal barrier (`sys/rekey-recovery-key`). The seal type and the wrapped unseal key
    /// stay; one atomic batch, so a crash leaves the old recovery shares working or the new ones.
    pub async fn rekey_recovery(&self, new: &crate::NewUnsealKey) -> Result<()> {
        let keyring = self.keyring()?;
        let config = self.seal_config().await?.ok_or(Error::NotInitialized)?;
        if config.seal_type == "shamir" {
            return Err(Error::InvalidSealConfig("recovery rekeying not supported".into()));
        }
        let rekeyed = SealConfig { seal_type: config.seal_type, ..new.config().clone() };
        let sealed_recovery = keyring.seal(RECOVERY_KEY_PATH, new.key_bytes())?;
        let [sealed_config, config_json] = config_records(&keyring, &rekeyed)?;
        self.backend
            .batch(vec![
                coffer_storage::Op::Put(RECOVERY_KEY_PATH.into(), sealed_recovery),
                sealed_config,
                config_json,
            ])
            .await?;
        Ok(())
    }
}

impl Barrier {
    /// Seal migration from one seal to another (`unseal -migrate` with the old seal's stanza
    /// marked `disabled` beside the new one): `from` opens the barrier, `shares` must be a
    /// quorum of the recovery key, and the same unseal key is stored wrapped by `to`, with the
    /// seal type changed, in one atomic batch. The recovery key and its shares stay. The barrier
    /// is left unsealed.
    pub async fn migrate_between(
        &self,
        shares: &[Zeroizing<Vec<u8>>],
        from: &dyn KeyWrapper,
        to: &dyn KeyWrapper,
    ) -> Result<()> {
        let (config, key) = self.unseal_disabled(from).await?;
        let keyring = self.keyring()?;
        self.commit_migration(async {
            self.verify_recovery_shares(&keyring, &config, shares).await?;
            let wrapped = to.wrap(&key).await?;
            let migrated = SealConfig { seal_type: to.seal_type().into(), ..config.clone() };
            let [sealed_config, config_json] = config_records(&keyring, &migrated)?;
            Ok(vec![
                coffer_storage::Op::Put(WRAPPED_KEY_PATH.into(), wrapped),
                sealed_config,
                config_json,
            ])
        })
        .await
    }
}
