//! Key/value secrets engine, version 1 (Vault's `kv` with no version option): one unversioned
//! JSON object per path. A write replaces the whole object.

use std::sync::Arc;

use async_trait::async_trait;
use coffer_core::View;
use coffer_core::time::parse_duration;
use coffer_core::{
    BackendConfig, BackendRequest, Error, LogicalBackend, Operation, Response, Result,
};
use serde_json::{Map, Value};

/// The storage half of kv v1, shared with cubbyhole, which is the same thing per token.
pub(crate) struct KvStore;

impl KvStore {
    pub(crate) async fn read(view: &View, path: &str) -> Result<Option<Map<String, Value>>> {
        if path.is_empty() || path.ends_with('/') {
            return Ok(None);
        }
        match view.get(path).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Internal(format!("kv entry decode: {e}"))),
        }
    }

    pub(crate) async fn handle(
        view: &View,
        req: &BackendRequest<'_>,
        default_ttl: u64,
    ) -> Result<Response> {
        let path = req.path;
        match req.operation {
            Operation::Read => {
                let data = Self::read(view, path).await?.ok_or(Error::NotFound)?;
                let ttl = data
                    .get("ttl")
                    .and_then(|v| match v {
                        Value::String(s) => parse_duration(s).map(|d| d.as_secs()),
                        Value::Number(n) => n.as_u64(),
                        _ => None,
                    })
                    .unwrap_or(default_ttl);
                Ok(Response { data: Some(data), lease_duration: ttl, ..Response::default() })
            }
            Operation::List => {
                let prefix = if path.is_empty() || path.ends_with('/') {
                    path.to_owned()
                } else {
                    format!("{path}/")
                };
                let keys = view.list(&prefix).await?;
                if keys.is_empty() {
                    return Err(Error::NotFound);
                }
                Ok(Response::list(keys))
            }
            Operation::Create | Operation::Update => {
                if path.is_empty() || path.ends_with('/') {
                    return Err(Error::invalid("a secret's path must name a key, not end in '/'"));
                }
                if req.data.is_empty() {
                    return Err(Error::invalid("missing data fields"));
                }
                let raw =
                    serde_json::to_vec(req.data).map_err(|e| Error::Internal(e.to_string()))?;
                view.put(path, &raw).await?;
                Ok(Response::empty())
            }
            Operation::Delete => {
                if !path.is_empty() {
                    view.delete(path).await?;
                }
                Ok(Response::empty())
            }
            Operation::Patch => Err(Error::UnsupportedOperation),
        }
    }
}

pub(crate) struct KvV1 {
    view: View,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    match cfg.mount.options.get("version").map(String::as_str) {
        None | Some("" | "1") => Ok(Arc::new(KvV1 { view: cfg.view })),
        Some("2") => Ok(crate::kv2::new(cfg.view)),
        Some(v) => Err(Error::invalid(format!("kv version must be 1 or 2, not {v:?}"))),
    }
}

#[async_trait]
impl LogicalBackend for KvV1 {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        KvStore::handle(&self.view, req, req.mount.default_lease_ttl.as_secs()).await
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>> {
        Ok(Some(KvStore::read(&self.view, req.path).await?.is_some()))
    }
}
