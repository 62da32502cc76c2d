//! `sys/chaos/faults` (Coffer only): start, list, read and end chaos faults. Reached only with
//! `sudo` (see [`crate::authz::is_sudo_sys`]) and only when the server config enables chaos
//! (else the paths do not exist); what the faults do is in [`crate::chaos`].

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::chaos::{EndReason, OnBehalf};
use crate::logical::{Error, Operation, Response, Result};
use coffer_wire::chaos::FaultSpec;

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let Some(rest) = rel.strip_prefix("chaos/faults") else { return Ok(None) };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Ok(None);
    }
    let id = rest.trim_matches('/');
    let core = ctx.core;
    let resp = match (ctx.op(), id.is_empty()) {
        (Operation::Read | Operation::List, true) => {
            let faults = core.chaos.list();
            let keys: Vec<&str> = faults.iter().map(|f| f.id.as_str()).collect();
            let mut by_id = Map::new();
            for f in &faults {
                by_id.insert(f.id.clone(), to_json(f)?);
            }
            Response::from_value(json!({ "keys": keys, "faults": by_id }))
        }
        (Operation::Create | Operation::Update, true) => {
            let spec: FaultSpec = serde_json::from_value(Value::Object(ctx.req.data.clone()))
                .map_err(|e| Error::invalid(format!("invalid fault: {e}")))?;
            let by = OnBehalf { request_id: &ctx.req.id, caller: ctx.caller() };
            let fault = core.chaos_start(ctx.active, spec, &by).await?;
            Response::from_value(to_json(&fault)?)
        }
        (Operation::Delete, true) => {
            core.chaos_end_all(None, EndReason::Removed).await;
            Response::empty()
        }
        (Operation::Read, false) => {
            let fault = core.chaos.get(id).ok_or(Error::NotFound)?;
            Response::from_value(to_json(&fault)?)
        }
        // Ending a fault that already ended is no error: a rollback may run after the deadline.
        (Operation::Delete, false) => {
            core.chaos_end(id, EndReason::Removed).await;
            Response::empty()
        }
        _ => return Err(Error::UnsupportedOperation),
    };
    Ok(Some(resp))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(format!("fault encode: {e}")))
}
