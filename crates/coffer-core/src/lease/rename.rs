//! Renaming leases when their mount moves (`sys/remount`): a lease id starts with its mount's
//! path, so a moved mount's leases get new ids under the new path, and renew, revoke, lookup and
//! revoke-prefix find them there.
//!
//! Guarantees: each lease moves in one atomic batch (its entry, its expiry index entry, its
//! token link and, for a failing revocation, its failed entry), under the lock its renewals and
//! revocations take, so none of them sees it half moved and none is lost; the engine that
//! issued a lease is found by the mount's uuid, which a move keeps; a lease whose token is gone
//! or being revoked when it moves is revoked then (that revocation may have listed the token's
//! links before the move). Not guaranteed: that a move that fails midway leaves every lease
//! under one name (the caller renames back, which the per-lease atomicity makes safe to repeat).

use coffer_barrier::BatchOp;

use super::{Expiration, decode_entry, encode, folder};
use crate::due::Due;
use crate::logical::Result;

impl Expiration {
    /// Gives every lease under the folder `from` (a mount's full path, `database/`) an id under
    /// `to` instead, and `to` as its mount path. Returns how many moved.
    pub(crate) async fn rename_prefix(&self, from: &str, to: &str) -> Result<u64> {
        let (from, to) = (folder(from), folder(to));
        let mut moved = 0;
        for rest in self.view.list_recursive(&format!("id/{from}")).await? {
            let old = format!("{from}{rest}");
            let new = format!("{to}{rest}");
            let _g = self.lock_for(&old).lock().await;
            let Some(raw) = self.view.get(&format!("id/{old}")).await? else { continue };
            let mut e = decode_entry(&raw)?;
            let (old_name, old_due_key) = (e.name(), e.due_key(e.due));
            e.lease_id = new.clone();
            e.mount_path = to.clone();
            // Rewritten whole anyway: named in order from now on, whatever it had.
            e.ordered_names = true;
            let raw = encode(&e)?;
            let new_due = Due::Lease(new.clone());
            let idx = new_due.encode(e.due);
            let name = e.name();
            let mut ops = vec![
                BatchOp::Put(format!("id/{new}"), &raw),
                BatchOp::Delete(format!("id/{old}")),
                BatchOp::Delete(old_due_key),
                BatchOp::Put(crate::due::lease_key(&name, e.due), &idx),
            ];
            if let Some(t) = &e.token_id {
                ops.push(BatchOp::Delete(format!("token/{t}/{old_name}")));
                ops.push(BatchOp::Put(format!("token/{t}/{name}"), new.as_bytes()));
            }
            // A failing revocation's entry names the lease too (`sys/leases` lists failing ones).
            if e.failing() {
                ops.push(BatchOp::Delete(format!("failed/{old_name}")));
                ops.push(BatchOp::Put(format!("failed/{name}"), new.as_bytes()));
            }
            self.view.batch(ops).await?;
            // The old name still queued in memory finds no entry when it falls due, and goes.
            self.offer(e.due, new_due);
            moved += 1;
            drop(_g);
            // A revocation of its token marks the token, then lists its links once: one that
            // listed them before this move found the old link pointing at nothing and missed
            // the new one, so the lease would outlive its token. As `register` does for a new
            // lease: a token gone or being revoked takes the moved lease with it. Neither a
            // token that cannot be read nor a revocation that fails stops the move (the lease
            // is moved already; what is left is revoked when it falls due, or by tidy once its
            // token is gone).
            let Some(t) = &e.token_id else { continue };
            let taken = match self.tokens.get_entry(t).await {
                Ok(t) if t.as_ref().is_none_or(|t| t.revoking) => self.take_back(&new).await,
                Ok(_) => continue,
                Err(err) => Err(err),
            };
            if let Err(err) = taken {
                tracing::warn!(lease_id = %new, error = %err, "a lease moved while its token may be revoked could not be revoked now");
            }
        }
        Ok(moved)
    }
}
