//! Shared by the crate's unit tests only.

use crate::backend::{BackendRequest, LogicalBackend};
use crate::logical::{Error, Response, Result};

/// A secrets engine that finds nothing: every core mounts a cubbyhole, and tests that never use
/// one register this in its place.
pub(crate) struct Nothing;

#[async_trait::async_trait]
impl LogicalBackend for Nothing {
    async fn handle(&self, _req: &BackendRequest<'_>) -> Result<Response> {
        Err(Error::NotFound)
    }
}
