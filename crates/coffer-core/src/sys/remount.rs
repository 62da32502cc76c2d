//! `sys/remount` and `sys/remount/status/:migration_id`: move a secrets engine or an auth method
//! to another path with its data and leases (see `mount_move`), with Vault's answer shape: a
//! `migration_id` whose status reads `success` once the move is done. Coffer moves before it
//! answers, so the status is final when the client first asks; a move that cannot be made is
//! an error answer, not a `failure` status. The last 100 moves' statuses are kept in memory
//! (sealing forgets them, as Vault's node forgets them at restart).

use serde_json::{Value, json};

use super::Ctx;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result, into_map};

const KEPT: usize = 100;

/// The moves made since unseal, oldest first: (migration id, its `migration_info`).
pub(crate) type Migrations = std::sync::Mutex<std::collections::VecDeque<(String, Value)>>;

pub(crate) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let rel = rel.trim_end_matches('/');
    if rel == "remount" {
        return match ctx.op() {
            Operation::Create | Operation::Update => remount(ctx).await.map(Some),
            _ => Err(Error::UnsupportedOperation),
        };
    }
    let Some(id) = rel.strip_prefix("remount/status/") else { return Ok(None) };
    if ctx.op() != Operation::Read {
        return Err(Error::UnsupportedOperation);
    }
    let found = ctx
        .active
        .migrations
        .lock()
        .map_err(|_| Error::Internal("migrations lock poisoned".into()))?
        .iter()
        .find(|(m, _)| m == id)
        .map(|(_, info)| info.clone());
    match found {
        Some(info) => Ok(Some(Response::data(into_map(
            json!({ "migration_id": id, "migration_info": info }),
        )))),
        None => Err(Error::NotFound),
    }
}

async fn remount(ctx: &Ctx<'_>) -> Result<Response> {
    let f = Fields::new(&ctx.req.data);
    let from = f.str("from")?.unwrap_or_default();
    let to = f.str("to")?.unwrap_or_default();
    if from.is_empty() || to.is_empty() {
        return Err(Error::invalid("both 'from' and 'to' path must be specified as a string"));
    }
    for (name, p) in [("from", &from), ("to", &to)] {
        if p.starts_with(' ') || p.ends_with(' ') {
            return Err(Error::invalid(format!(
                "'{name}' path cannot contain trailing whitespace"
            )));
        }
    }
    ctx.core.move_mount(&from, &to).await?;
    let id = crate::random::uuid_v4();
    let (table, src) = crate::mount_move::split(&from)?;
    let (_, dst) = crate::mount_move::split(&to)?;
    let info = json!({
        "source_mount": table.full_path(&src),
        "target_mount": table.full_path(&dst),
        "status": "success",
    });
    {
        let mut m = ctx
            .active
            .migrations
            .lock()
            .map_err(|_| Error::Internal("migrations lock poisoned".into()))?;
        if m.len() >= KEPT {
            m.pop_front();
        }
        m.push_back((id.clone(), info));
    }
    let mut resp = Response::data(into_map(json!({ "migration_id": id })));
    resp.warnings.push(
        "Mount move has been completed; its status is at sys/remount/status/<migration_id>".into(),
    );
    Ok(resp)
}
