//! Shared by the crate's unit tests only.

use std::sync::Arc;

use serde_json::Value;

use crate::Core;
use crate::backend::{BackendConfig, BackendRequest, LogicalBackend, Registry};
use crate::logical::{Error, Operation, Request, Response, Result};

/// A secrets engine that finds nothing: every core mounts a cubbyhole, and tests that never use
/// one register this in its place.
pub(crate) struct Nothing;

#[async_trait::async_trait]
impl LogicalBackend for Nothing {
    async fn handle(&self, _req: &BackendRequest<'_>) -> Result<Response> {
        Err(Error::NotFound)
    }
}

/// A registry with only [`Nothing`] as the cubbyhole, for cores whose tests mount nothing else
/// from a registry.
pub(crate) fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_secrets(
        "cubbyhole",
        Arc::new(|_cfg: BackendConfig| Ok(Arc::new(Nothing) as Arc<dyn LogicalBackend>)),
    );
    r
}

/// One request through the whole core, as `token`, with `body` as its data.
pub(crate) async fn call(
    core: &Core,
    op: Operation,
    path: &str,
    body: Value,
    token: &str,
) -> Result<Response> {
    let data = crate::logical::into_map(body);
    core.handle(Request::new(op, path).with_data(data).with_token(token)).await
}
