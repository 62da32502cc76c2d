//! `sys/policies/password`: store, read, list and delete password policies, and generate
//! passwords from them.

use coffer_barrier::View;
use serde_json::json;

use super::Ctx;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};
use crate::password_policy::{PasswordPolicy, STORAGE_PREFIX, Stored, load};

fn view(ctx: &Ctx<'_>) -> View {
    View::new(ctx.core.barrier.clone(), STORAGE_PREFIX)
}

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let Some(rest) = rel.strip_prefix("policies/password") else { return Ok(None) };
    let v = view(ctx);
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    if rest.is_empty() || rest == "/" {
        return match op {
            Operation::List => {
                let keys = v.list("").await?;
                if keys.is_empty() {
                    return Err(Error::NotFound);
                }
                Ok(Some(Response::list(keys)))
            }
            _ => Err(Error::UnsupportedOperation),
        };
    }
    let Some(rest) = rest.strip_prefix('/') else { return Ok(None) };
    if let Some(name) = rest.strip_suffix("/generate") {
        if op != Operation::Read {
            return Err(Error::UnsupportedOperation);
        }
        let Some(text) = load(&v, &crate::policy_store::normalize_name(name)?).await? else {
            return Ok(Some(no_such_policy()));
        };
        let policy = PasswordPolicy::parse(&text)?;
        return Ok(Some(Response::from_value(json!({ "password": policy.generate() }))));
    }
    let name = crate::policy_store::normalize_name(rest)?;
    match op {
        Operation::Read => {
            let Some(text) = load(&v, &name).await? else { return Ok(Some(no_such_policy())) };
            Ok(Some(Response::from_value(json!({ "policy": text }))))
        }
        _ if write => {
            let text = super::maybe_base64(&Fields::new(&ctx.req.data).required_str("policy")?);
            let policy = PasswordPolicy::parse(&text)?;
            // Vault checks that a policy can actually produce passwords before storing it.
            let _ = policy.generate();
            let raw = crate::record::encode(&Stored { policy: text })?;
            v.put(&name, &raw).await?;
            Ok(Some(Response::empty()))
        }
        Operation::Delete => {
            v.delete(&name).await?;
            Ok(Some(Response::empty()))
        }
        _ => Err(Error::UnsupportedOperation),
    }
}

/// Vault's answer for a password policy that does not exist: 404 with its error text (not the
/// empty error list of a missing secret).
fn no_such_policy() -> Response {
    Response::raw(404, json!({ "errors": [crate::logical::multierror("policy does not exist")] }))
}
