//! `sys/detect/rules/:name` (Coffer only, sudo): the detection rules, stored in the barrier;
//! `sys/detect/alerts` and `sys/detect/status` (a policy's `read`): recent alerts and the
//! pipeline's counters. See docs/detect.md.
//!
//! Guarantees: a rule is checked completely before it is stored, and the running set is
//! replaced only once the store has it; rules from the config file are shown (`source:
//! config`) and cannot be changed or deleted here. Recent alerts are kept in memory only.

use coffer_barrier::{Barrier, View};
use serde_json::{Map, Value, json};

use super::Ctx;
use crate::detect::Rule;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};

const PREFIX: &str = "sys/detect/rules/";

fn view(barrier: &std::sync::Arc<Barrier>) -> View {
    View::new(barrier.clone(), PREFIX)
}

/// The rules written through the API (at unseal).
pub(crate) async fn load(barrier: &std::sync::Arc<Barrier>) -> Result<Vec<Rule>> {
    let v = view(barrier);
    let mut out = Vec::new();
    for name in v.list("").await? {
        if let Some(raw) = v.get(&name).await? {
            out.push(crate::record::decode::<Rule>(&raw)?);
        }
    }
    Ok(out)
}

fn off() -> Error {
    Error::invalid("detection is turned off in the server config (detect { enabled = false })")
}

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let Some(rest) = rel.strip_prefix("detect/") else { return Ok(None) };
    let d = &ctx.core.detect;
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    match rest.trim_end_matches('/') {
        "status" if op == Operation::Read => {
            let rules = d.rules();
            Ok(Some(Response::from_value(json!({
                "enabled": d.config.enabled,
                "rules": rules.len(),
                "rules_enabled": rules.iter().filter(|(r, _)| r.enabled).count(),
                "stats": d.stats.json(d.config.queue_size),
            }))))
        }
        "alerts" if op == Operation::Read => {
            let limit = Fields::new(&ctx.req.data).u64("limit")?.unwrap_or(100);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            Ok(Some(Response::from_value(json!({
                "alerts": d.recent(limit),
                "stats": d.stats.json(d.config.queue_size),
            }))))
        }
        "rules" if op == Operation::List || op == Operation::Read => {
            let rules = d.rules();
            let mut keys: Vec<&str> = rules.iter().map(|(r, _)| r.name.as_str()).collect();
            keys.sort();
            let info: Map<String, Value> = rules
                .iter()
                .map(|(r, s)| {
                    (
                        r.name.clone(),
                        json!({"type": r.params.kind(), "enabled": r.enabled, "source": s.name()}),
                    )
                })
                .collect();
            if keys.is_empty() {
                return Err(Error::NotFound);
            }
            Ok(Some(Response::from_value(json!({"keys": keys, "key_info": info}))))
        }
        r if r.starts_with("rules/") => {
            let name = &r["rules/".len()..];
            let rules = d.rules();
            let found = rules.iter().find(|(x, _)| x.name == name);
            match op {
                Operation::Read => match found {
                    Some((rule, source)) => Ok(Some(Response::from_value(
                        rule.to_json(source.name())
                            .as_object()
                            .cloned()
                            .map(Value::Object)
                            .unwrap_or(Value::Null),
                    ))),
                    None => Err(Error::NotFound),
                },
                _ if write => {
                    if !d.config.enabled {
                        return Err(off());
                    }
                    if found.is_some_and(|(_, s)| *s == crate::detect::Source::Config) {
                        return Err(Error::invalid(format!(
                            "rule {name:?} is defined in the server config file: change it there"
                        )));
                    }
                    let rule = Rule::parse(name, &ctx.req.data, &d.config.webhook_url)
                        .map_err(Error::invalid)?;
                    let _g = d.writes.lock().await;
                    let v = view(&ctx.core.barrier);
                    v.put(name, &crate::record::encode(&rule)?).await?;
                    d.install_stored(load(&ctx.core.barrier).await?);
                    Ok(Some(Response::empty()))
                }
                Operation::Delete => {
                    if found.is_some_and(|(_, s)| *s == crate::detect::Source::Config) {
                        return Err(Error::invalid(format!(
                            "rule {name:?} is defined in the server config file: remove it there"
                        )));
                    }
                    let _g = d.writes.lock().await;
                    view(&ctx.core.barrier).delete(name).await?;
                    d.install_stored(load(&ctx.core.barrier).await?);
                    Ok(Some(Response::empty()))
                }
                _ => Err(Error::UnsupportedOperation),
            }
        }
        _ => Err(Error::UnsupportedOperation),
    }
}
