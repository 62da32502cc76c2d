use thiserror::Error;

/// Barrier failures. None of them carries key material or plaintext.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Vault is sealed")]
    Sealed,
    #[error("Vault is already initialized")]
    AlreadyInitialized,
    #[error("Vault is not initialized")]
    NotInitialized,
    /// The value failed authentication: tampered, moved to another path, or wrong key.
    #[error("stored value at {0:?} failed to decrypt: it was altered or moved")]
    Corrupt(String),
    #[error("unseal failed: the combined key is wrong (invalid or mismatched key shares)")]
    WrongKey,
    #[error("invalid seal configuration: {0}")]
    InvalidSealConfig(String),
    #[error("invalid key share: {0}")]
    InvalidShare(String),
    #[error(transparent)]
    Storage(#[from] coffer_storage::Error),
    #[error("internal barrier error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;
