//! Cubbyhole: private storage for each token. The core mounts it once at `cubbyhole/` and
//! destroys a token's folder when the token is revoked. No token can reach another's cubbyhole:
//! the folder is named by the caller's token id (a salted hash), never by the request path.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::View;
use coffer_core::{BackendConfig, BackendRequest, Error, LogicalBackend, Response, Result};

use crate::kv::KvStore;

pub(crate) struct Cubbyhole {
    view: View,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    Ok(Arc::new(Cubbyhole { view: cfg.view }))
}

impl Cubbyhole {
    fn view_for(&self, req: &BackendRequest<'_>) -> Result<View> {
        let caller = req.caller.ok_or(Error::PermissionDenied)?;
        Ok(self.view.sub_view(&format!("{}/", caller.id)))
    }
}

#[async_trait]
impl LogicalBackend for Cubbyhole {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        // Cubbyhole values carry no lease.
        KvStore::handle(&self.view_for(req)?, req, 0).await
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>> {
        Ok(Some(KvStore::read(&self.view_for(req)?, req.path).await?.is_some()))
    }
}
