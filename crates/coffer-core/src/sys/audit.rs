//! `sys/audit` (list, enable, disable devices) and `sys/audit-hash` (hash a value with a
//! device's salt, to search its log for a known secret).

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    let broker = &ctx.active.audit;
    if rel == "audit" || rel == "audit/" {
        if op != Operation::Read {
            return Err(Error::UnsupportedOperation);
        }
        let mut data = Map::new();
        for (d, seq, hash) in broker.list().await {
            data.insert(
                d.path.clone(),
                json!({
                    "type": d.kind,
                    "description": d.description,
                    "options": d.options,
                    "local": d.local,
                    "path": d.path,
                    // Coffer's: where the device's chain stands, for `coffer audit verify -device`.
                    "chain": { "seq": seq, "hash": hash },
                }),
            );
        }
        return Ok(Some(Response::data(data)));
    }
    if let Some(path) = rel.strip_prefix("audit/") {
        let f = Fields::new(&ctx.req.data);
        return match op {
            _ if write => {
                let kind = f.required_str("type")?;
                let options = match ctx.req.data.get("options") {
                    None | Some(Value::Null) => Default::default(),
                    Some(Value::Object(m)) => m
                        .iter()
                        .map(|(k, v)| match v {
                            Value::String(s) => Ok((k.clone(), s.clone())),
                            Value::Bool(b) => Ok((k.clone(), b.to_string())),
                            Value::Number(n) => Ok((k.clone(), n.to_string())),
                            _ => {
                                Err(Error::invalid(format!("audit option {k:?} must be a string")))
                            }
                        })
                        .collect::<Result<_>>()?,
                    Some(_) => return Err(Error::invalid("\"options\" must be an object")),
                };
                let description = f.str("description")?.unwrap_or_default();
                let local = f.bool("local")?.unwrap_or(false);
                broker.enable(&ctx.core.barrier, path, &kind, &description, options, local).await?;
                Ok(Some(Response::empty()))
            }
            Operation::Delete => {
                broker.disable(&ctx.core.barrier, path).await?;
                Ok(Some(Response::empty()))
            }
            _ => Err(Error::UnsupportedOperation),
        };
    }
    if let Some(path) = rel.strip_prefix("audit-hash/") {
        if !write {
            return Err(Error::UnsupportedOperation);
        }
        let input = Fields::new(&ctx.req.data).required_str("input")?;
        let path = crate::mount::normalize_mount_path(path)?;
        let device = broker
            .device(&path)
            .await
            .ok_or_else(|| Error::invalid(format!("unknown audit backend {path:?}")))?;
        return Ok(Some(Response::from_value(json!({ "hash": device.hash(&input) }))));
    }
    Ok(None)
}
