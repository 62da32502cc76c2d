//! Changing a mount's options where its backend must rewrite its data (kv version 1 to 2).
//!
//! Guarantees: while the backend reads its data and computes the rewrite, nothing new is routed
//! to the mount (it answers as unmounted); the rewritten data and the mount table with the new
//! options are stored in one atomic batch, so a crash leaves the mount either wholly as it was
//! or wholly converted; afterwards the mount is served by a backend made for the new options.
//! A refusal or failure puts the mount back as it was. Serialized with every other mount-table
//! change. Not guaranteed: a request already inside the old backend when the migration starts
//! finishes against the old layout, and a write it makes then can be lost (Vault, too, makes
//! the mount unavailable "for a brief period" and does not promise more).

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
        let others: Vec<_> = router.routes().filter(|r| r.full_path != full).cloned().collect();
        let set_router = |routes: Vec<Arc<mount::Route>>| -> Result<()> {
            *active.router.write().map_err(|_| Error::Internal("router lock poisoned".into()))? =
                Arc::new(Router::new(routes));
            Ok(())
        };
        set_router(others.clone())?;
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
        match migrated {
            Ok((route, changes)) => {
                let mut routes = others;
                routes.push(route);
                set_router(routes)?;
                tracing::info!(mount = %full, changes, "mount migrated to its new options");
                Ok(())
            }
            Err(e) => {
                set_router(router.routes().cloned().collect())?;
                Err(e)
            }
        }
    }
}
