//! Cubbyhole: private storage for each token. The core mounts it once at `cubbyhole/` and
//! destroys a token's folder when the token is revoked. No token can reach another's cubbyhole:
//! the folder is named by the caller's token id (a salted hash), never by the request path.

use std::sync::{Arc, LazyLock};

use coffer_core::View;
use coffer_core::framework::{Framework, Path, Paths, Req, handler};
use coffer_core::{BackendConfig, BackendRequest, Error, LogicalBackend, Response, Result};

use crate::kv::{KvStore, SECRET_SYNOPSIS};

pub(crate) struct Cubbyhole {
    view: View,
}

static PATHS: LazyLock<Paths<Cubbyhole>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("{path*}", SECRET_SYNOPSIS)
            .read(handler!(Cubbyhole::read))
            .list(handler!(Cubbyhole::list))
            .write(handler!(Cubbyhole::write))
            .delete(handler!(Cubbyhole::delete))
            .exists(handler!(Cubbyhole::secret_exists)),
    ])
});

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    Ok(Arc::new(Cubbyhole { view: cfg.view }))
}

impl Cubbyhole {
    fn view_for(&self, req: &BackendRequest<'_>) -> Result<View> {
        let caller = req.caller.ok_or(Error::PermissionDenied)?;
        Ok(self.view.sub_view(&format!("{}/", caller.id)))
    }

    /// Cubbyhole values carry no lease.
    async fn read(&self, r: &Req<'_>) -> Result<Response> {
        KvStore::read(&self.view_for(r)?, r.capture("path"), 0).await
    }

    async fn list(&self, r: &Req<'_>) -> Result<Response> {
        KvStore::list(&self.view_for(r)?, r.capture("path")).await
    }

    async fn write(&self, r: &Req<'_>) -> Result<Response> {
        KvStore::write(&self.view_for(r)?, r.capture("path"), r.data, None).await
    }

    async fn delete(&self, r: &Req<'_>) -> Result<Response> {
        KvStore::delete(&self.view_for(r)?, r.capture("path"), None).await
    }

    async fn secret_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(KvStore::read_entry(&self.view_for(r)?, r.capture("path")).await?.is_some()))
    }
}

impl Framework for Cubbyhole {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}
