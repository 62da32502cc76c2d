//! Changing a mount's options where its backend must rewrite its data (kv version 1 to 2).
//!
//! Guarantees: the migration starts only once every request already inside the old backend has
//! finished, and requests that arrive while it runs wait for it (the mount's [`Gate`]); they are
//! then served by the backend made for the new options, so no acknowledged write is lost or
//! left in the old layout. The rewritten data and the mount table with the new options are
//! stored in one atomic batch, so a crash leaves the mount either wholly as it was or wholly
//! converted. A refusal or failure leaves the mount as it was, and the waiting requests are
//! served by it. Serialized with every other mount-table change. Not guaranteed: a bound on the
//! wait (a request inside the old backend delays the migration, and the migration delays every
//! request to the mount, as Vault's "unavailable for a brief period").
//!
//! [`Gate`]: crate::mount::Gate

use std::sync::Arc;

use coffer_barrier::{BatchOp, View};

use crate::backend::StorageChange;
use crate::core::Core;
use crate::logical::{Error, Result};
use crate::mount::{self, MountEntry, Router, Table};

impl Core {
    /// Applies `f` to the mount at `path` (in `table`) and has its backend migrate its data to
    /// the entry's new options.
    pub(crate) async fn migrate_mount(
        &self,
        table: Table,
        path: &str,
        f: impl FnOnce(&mut MountEntry) -> Result<()>,
    ) -> Result<()> {
        let _g = self.admin_lock.lock().await;
        let active = self.active()?;
        let path = mount::normalize_mount_path(path)?;
        let full = table.full_path(&path);
        let mut entries = mount::load_table(&self.barrier, table).await?.unwrap_or_default();
        let pos = entries
            .iter()
            .position(|e| e.path == path)
            .ok_or_else(|| Error::invalid(format!("no mount at {full:?}")))?;
        let mut updated = entries[pos].clone();
        f(&mut updated)?;
        let router = active.router()?;
        let old =
            router.routes().find(|r| r.full_path == full).cloned().ok_or_else(|| {
                Error::Internal(format!("{full} is in the mount table, not routed"))
            })?;
        // The old route stays routed: new requests find it and wait at its gate.
        let closed = old.gate.close().await;
        let migrated = async {
            let changes = old.backend.migrate_options(&updated.options).await?;
            entries[pos] = updated.clone();
            let (table_key, table_raw) = mount::table_record(table, &entries)?;
            let data_ops: Vec<BatchOp<'_>> = changes
                .iter()
                .map(|c| match c {
                    StorageChange::Put(k, v) => BatchOp::Put(k.clone(), v.as_slice()),
                    StorageChange::Delete(k) => BatchOp::Delete(k.clone()),
                })
                .collect();
            let root = View::new(self.barrier.clone(), "");
            View::batch_across(vec![
                (&old.view, data_ops),
                (&root, vec![BatchOp::Put(table_key.to_owned(), &table_raw)]),
            ])
            .await?;
            let route = self.route_for(table, updated.clone(), None)?;
            // Its values are indexed again in their new shape (kv v1 entries name no version).
            let n = route.backend.index_live_values().await?;
            tracing::debug!(mount = %full, entries = n, "liveness index: migrated values indexed");
            Ok::<_, Error>((route, changes.len()))
        }
        .await;
        // On failure nothing changed: dropping `closed` lets the waiting requests into the old
        // backend.
        let (route, changes) = migrated?;
        let mut routes: Vec<_> = router.routes().filter(|r| r.full_path != full).cloned().collect();
        routes.push(route);
        *active.router.write().map_err(|_| Error::Internal("router lock poisoned".into()))? =
            Arc::new(Router::new(routes));
        // Routed first, retired second: a waiting request that looks its mount up again finds
        // the new backend.
        old.gate.retire(&closed);
        drop(closed);
        tracing::info!(mount = %full, changes, "mount migrated to its new options");
        Ok(())
    }
}
