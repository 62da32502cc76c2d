//! What an engine's own tests need to drive it without a server: a barrier opened over memory
//! storage and one request made the way the router makes it. Behind the `testkit` feature,
//! which engines enable for their tests only; nothing here is in a server build.

use std::sync::Arc;
use std::time::Duration;

use coffer_barrier::{Barrier, SealConfig, View};
use coffer_storage::MemoryBackend;
use serde_json::{Map, Value};

use crate::{BackendRequest, LogicalBackend, MountInfo, Operation, Response, Result};

/// An initialized, unsealed barrier over memory storage, and the storage under it (to check
/// what reaches it).
pub async fn memory_barrier() -> (Arc<Barrier>, Arc<MemoryBackend>) {
    let storage = Arc::new(MemoryBackend::new());
    let barrier = Barrier::new(storage.clone());
    barrier.initialize(&SealConfig::shamir(1, 1).expect("seal config")).await.expect("init");
    (Arc::new(barrier), storage)
}

/// A view at `prefix` of [`memory_barrier`]'s barrier, and the storage under it.
pub async fn memory_view(prefix: &str) -> (View, Arc<MemoryBackend>) {
    let (barrier, storage) = memory_barrier().await;
    (View::new(barrier, prefix), storage)
}

/// A mount of `kind` at `path` with a one-hour default lease TTL (its uuid is `u`).
pub fn mount_info(path: &str, kind: &str, max_lease_ttl: Duration) -> MountInfo {
    MountInfo {
        path: path.into(),
        kind: kind.into(),
        uuid: "u".into(),
        accessor: "a".into(),
        default_lease_ttl: Duration::from_secs(3600),
        max_lease_ttl,
        options: Default::default(),
    }
}

/// One request to `backend` on `mount`, with `body` as its data (an object, or nothing), from
/// no particular caller; `sudo` as the ACL would have granted it.
pub async fn call(
    backend: &dyn LogicalBackend,
    mount: &MountInfo,
    op: Operation,
    path: &str,
    body: Value,
    sudo: bool,
) -> Result<Response> {
    let data: Map<String, Value> = crate::logical::into_map(body);
    let req = BackendRequest {
        id: "t",
        operation: op,
        path,
        data: &data,
        caller: None,
        mount,
        remote_addr: None,
        sudo,
        client_token: None,
        client_cert_chain: &[],
    };
    backend.handle(&req).await
}
