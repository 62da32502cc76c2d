//! Moving a mount to another path (`sys/remount`), with its data and its leases.
//!
//! Guarantees: the data moves by itself (a mount's storage is keyed by its uuid, which the move
//! keeps, never by its path); the running backend is kept; every lease under the old path gets
//! the same id under the new one (so renew, revoke and revoke-prefix work under the new name),
//! for an auth method every token it issued gets the new creation path, and every rate limit
//! quota on the mount (whole, a path below it, or a role) moves with it, as in OpenBao (stored
//! with the mount table in one atomic write; OpenBao stores the quota's old path and loses the
//! move at its next restart). While the move
//! runs, the mount is out of the router (nothing is issued under either name) but its leases
//! can still expire and be revoked. A move that fails puts everything back under the old name.
//! It is serialized with every other mount-table change. Not here: Vault's asynchronous
//! execution (the move is done before `sys/remount` answers; its status reads `success`), and
//! moving between the secrets and the auth tables (refused, as in Vault).

use std::sync::Arc;

use coffer_barrier::{BatchOp, View};

use crate::core::Core;
use crate::logical::{Error, Result};
use crate::mount::{self, Router, Table};

/// Kinds that stay where they are.
const FIXED: &[&str] = &["system", "token", "cubbyhole", "identity"];

/// The table and the path within it of a full mount path given to `sys/remount`.
pub(crate) fn split(full: &str) -> Result<(Table, String)> {
    match full.trim_start_matches('/').strip_prefix("auth/") {
        Some(rest) => Ok((Table::Auth, mount::normalize_mount_path(rest)?)),
        None => Ok((Table::Secrets, mount::normalize_mount_path(full)?)),
    }
}

impl Core {
    /// Moves the mount at `from` to `to` (full paths: `secret/`, `auth/approle/`).
    pub(crate) async fn move_mount(&self, from: &str, to: &str) -> Result<()> {
        let (table, from_rel) = split(from)?;
        let (to_table, to_rel) =
            split(to).map_err(|e| Error::invalid(format!("invalid destination mount: {e}")))?;
        let (from, to) = (table.full_path(&from_rel), to_table.full_path(&to_rel));
        if table != to_table {
            return Err(Error::invalid(match table {
                Table::Auth => format!("cannot remount auth mount to non-auth mount {to:?}"),
                Table::Secrets => format!("cannot remount to destination {to}"),
            }));
        }
        let reserved = ["sys/", "cubbyhole/", "identity/", "audit/", "auth/token/"];
        if reserved.iter().any(|r| mount::conflicts(r, &to)) {
            return Err(Error::invalid(format!("cannot remount to destination {to}")));
        }
        let _g = self.admin_lock.lock().await;
        let active = self.active()?;
        let router = active.router()?;
        let mut entries = mount::load_table(&self.barrier, table).await?.unwrap_or_default();
        let pos = entries
            .iter()
            .position(|e| e.path == from_rel)
            .ok_or_else(|| Error::invalid(format!("no matching mount at {from:?}")))?;
        if FIXED.contains(&entries[pos].kind.as_str()) {
            return Err(Error::invalid(format!("cannot remount {from:?}")));
        }
        if mount::conflicts(&from, &to) {
            return Err(Error::invalid(format!("path already in use at {from:?}")));
        }
        if let Some(r) =
            router.routes().find(|r| r.full_path != from && mount::conflicts(&r.full_path, &to))
        {
            return Err(Error::invalid(format!("path already in use at {:?}", r.full_path)));
        }
        let old =
            router.routes().find(|r| r.full_path == from).cloned().ok_or_else(|| {
                Error::Internal(format!("{from} is in the mount table, not routed"))
            })?;
        let others: Vec<_> = router.routes().filter(|r| r.full_path != from).cloned().collect();
        let set_router = |routes: Vec<Arc<mount::Route>>| -> Result<()> {
            *active.router.write().map_err(|_| Error::Internal("router lock poisoned".into()))? =
                Arc::new(Router::new(routes));
            Ok(())
        };
        // Out of the router, still reachable for the expiry of its leases.
        active.leases.retire(old.clone());
        set_router(others.clone())?;
        let moved = async {
            let leases = active.leases.rename_prefix(&from, &to).await?;
            let tokens = match table {
                Table::Auth => active.tokens.rename_path_prefix(&from, &to).await?,
                Table::Secrets => 0,
            };
            let mut entry = entries[pos].clone();
            entry.path = to_rel.clone();
            entries[pos] = entry.clone();
            let route = self.route_keeping(table, entry, &old)?;
            // The mount table and the quotas on the mount change in one atomic write.
            let quotas = crate::sys::moved_quota_rules(self, &from, &to)?;
            let (table_key, table_raw) = mount::table_record(table, &entries)?;
            let mut ops = vec![BatchOp::Put(table_key.to_owned(), table_raw.as_slice())];
            ops.extend(quotas.iter().map(|(k, raw, _)| BatchOp::Put(k.clone(), raw.as_slice())));
            let root = View::new(self.barrier.clone(), "");
            View::batch_across(vec![(&root, ops)]).await?;
            Ok::<_, Error>((route, leases, tokens, quotas))
        }
        .await;
        let result = match moved {
            Ok((route, leases, tokens, quotas)) => {
                let mut routes = others;
                routes.push(route);
                set_router(routes)?;
                let moved_quotas = quotas.len();
                for (_, _, rule) in quotas {
                    self.quotas.put_rule(rule);
                }
                tracing::info!(from, to, leases, tokens, moved_quotas, "mount moved");
                Ok(())
            }
            Err(e) => {
                // Back under the old name; a rename is per lease and repeatable.
                let _ = active.leases.rename_prefix(&to, &from).await;
                if table == Table::Auth {
                    let _ = active.tokens.rename_path_prefix(&to, &from).await;
                }
                set_router(router.routes().cloned().collect())?;
                tracing::error!(from, to, error = %e, "moving a mount failed; it stays where it was");
                Err(e)
            }
        };
        active.leases.forget_retired(&old.entry.uuid);
        result
    }
}
