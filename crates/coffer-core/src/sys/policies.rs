//! `sys/policy`, `sys/policies/acl` and the capabilities endpoints.

use serde_json::{Map, json};

use super::Ctx;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};
use crate::token::TokenEntry;

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    let store = &ctx.active.policies;
    // The old `sys/policy` API and the newer `sys/policies/acl` differ only in field names.
    let (name, legacy) = match rel {
        "policy" | "policy/" => {
            return match op {
                Operation::Read | Operation::List => {
                    let names = store.list()?;
                    Ok(Some(Response::from_value(json!({ "policies": names, "keys": names }))))
                }
                _ => Err(Error::UnsupportedOperation),
            };
        }
        "policies/acl" | "policies/acl/" => {
            return match op {
                // Vault lists here and reads nothing: GET is 405 (use LIST or ?list=true).
                Operation::List => Ok(Some(Response::list(store.list()?))),
                _ => Err(Error::UnsupportedOperation),
            };
        }
        _ => {
            if let Some(n) = rel.strip_prefix("policy/") {
                (n, true)
            } else if let Some(n) = rel.strip_prefix("policies/acl/") {
                (n, false)
            } else {
                return Ok(None);
            }
        }
    };
    let name = crate::policy_store::normalize_name(name)?;
    let resp = match op {
        Operation::Read => {
            let raw = if name == "root" {
                String::new()
            } else {
                store.read(&name)?.ok_or(Error::NotFound)?.raw.clone()
            };
            if legacy {
                Response::from_value(json!({ "name": name, "rules": raw }))
            } else {
                Response::from_value(json!({ "name": name, "policy": raw }))
            }
        }
        _ if write => {
            let f = Fields::new(&ctx.req.data);
            let mut warnings = Vec::new();
            let raw = match f.str("policy")?.filter(|p| !p.is_empty()) {
                Some(p) => Some(p),
                None if legacy => {
                    let rules = f.str("rules")?.filter(|p| !p.is_empty());
                    if rules.is_some() {
                        warnings
                            .push("'rules' is deprecated, please use 'policy' instead".to_owned());
                    }
                    rules
                }
                None => None,
            };
            let raw =
                raw.ok_or_else(|| Error::invalid("'policy' parameter not supplied or empty"))?;
            let raw = super::maybe_base64(&raw);
            store.set(&name, &raw, ctx.core.config.max_lease_ttl.as_secs()).await?;
            Response { warnings, ..Response::default() }
        }
        Operation::Delete => {
            store.delete(&name).await?;
            Response::empty()
        }
        _ => return Err(Error::UnsupportedOperation),
    };
    Ok(Some(resp))
}

/// `capabilities-self`, `capabilities`, `capabilities-accessor`: per path, the token's
/// capabilities; an unknown token has none (`deny`).
pub(super) async fn capabilities(ctx: &Ctx<'_>, entry: Option<&TokenEntry>) -> Result<Response> {
    let f = Fields::new(&ctx.req.data);
    let mut paths = f.list("paths")?.unwrap_or_default();
    if let Some(p) = f.str("path")? {
        paths.push(p);
    }
    if paths.is_empty() {
        return Err(Error::invalid("paths must be supplied"));
    }
    let acl = match entry {
        Some(e) => Some(ctx.active.acl_for(e)?),
        None => None,
    };
    let mut out = Map::new();
    let mut all: Vec<&str> = Vec::new();
    for p in &paths {
        let p = p.trim_start_matches('/');
        let mut names: Vec<&'static str> = match &acl {
            Some(a) if a.is_root() => vec!["root"],
            Some(a) => {
                let n = a.capabilities(p).names();
                if n.is_empty() { vec!["deny"] } else { n }
            }
            None => vec!["deny"],
        };
        // Vault sorts them by name.
        names.sort_unstable();
        for n in &names {
            if !all.contains(n) {
                all.push(n);
            }
        }
        out.insert(p.to_owned(), json!(names));
    }
    if paths.len() == 1 {
        all.sort_unstable();
        out.insert("capabilities".into(), json!(all));
    }
    Ok(Response::data(out))
}
