use thiserror::Error;

/// What can go wrong below the barrier. Messages never contain values.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid storage key: {0}")]
    InvalidKey(String),
    #[error("storage backend error: {0}")]
    Backend(String),
    /// HA: the write was refused because another node leads now (a newer epoch exists).
    #[error("{0}")]
    Fenced(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Backend(format!("sqlite: {e}"))
    }
}
