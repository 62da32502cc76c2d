//! `sys/quotas/config` and `sys/quotas/rate-limit/:name`, with Vault's fields, checks and
//! error texts; the rules themselves are enforced by [`crate::quotas`].

use coffer_barrier::View;
use serde_json::json;

use super::Ctx;
use crate::core::Core;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};
use crate::quotas::{QuotaConfig, RateLimitRule, role_field};

const PREFIX: &str = "sys/quotas/";
const CONFIG_KEY: &str = "config";
const RULES: &str = "rate-limit/";

fn view(core: &Core) -> View {
    View::new(core.barrier.clone(), PREFIX)
}

/// Reads the stored rules and configuration into the core's quotas (at unseal).
pub(crate) async fn load(core: &Core) -> Result<()> {
    let v = view(core);
    let config = match v.get(CONFIG_KEY).await? {
        Some(raw) => crate::record::decode::<QuotaConfig>(&raw)?,
        None => QuotaConfig::default(),
    };
    let mut rules = Vec::new();
    for name in v.list(RULES).await? {
        if let Some(raw) = v.get(&format!("{RULES}{name}")).await? {
            rules.push(crate::record::decode::<RateLimitRule>(&raw)?);
        }
    }
    core.quotas.install(rules, config);
    Ok(())
}

/// Whether any rate limit quota is stored (a standby's replica serves nothing then: a quota is
/// counted on the active node only).
pub(crate) async fn any_stored(core: &Core) -> Result<bool> {
    Ok(!view(core).list(RULES).await?.is_empty())
}

/// A rule to store: its storage key (within the root view), its stored form, and the rule.
pub(crate) type StoredRule = (String, zeroize::Zeroizing<Vec<u8>>, RateLimitRule);

/// The rules on the mount at `from` (a full mount path: `secret/`, `auth/approle/`) moved to
/// `to`, as OpenBao's remount moves them: every rule whose mount is `from`, with a path suffix or a role or neither;
/// a rule on another mount, even one below `from`'s path, stays.
pub(crate) fn moved_rules(core: &Core, from: &str, to: &str) -> Result<Vec<StoredRule>> {
    core.quotas
        .rules()
        .into_iter()
        .filter(|r| r.mount_path == from)
        .map(|mut r| {
            r.mount_path = to.to_owned();
            let raw = crate::record::encode(&r)?;
            Ok((format!("{PREFIX}{RULES}{}", r.name), raw, r))
        })
        .collect()
}

/// The storage keys (within the root view) and names of the rules on the mount at `mount`,
/// which OpenBao deletes with the mount.
pub(crate) fn rules_on(core: &Core, mount: &str) -> Vec<(String, String)> {
    core.quotas
        .rules()
        .into_iter()
        .filter(|r| r.mount_path == mount)
        .map(|r| (format!("{PREFIX}{RULES}{}", r.name), r.name))
        .collect()
}

impl Core {
    /// The rate limit quota covering `req`, applied: `None` when no rule covers it (always,
    /// at the cost of one atomic load, when no rule exists). The HTTP layer calls it before the
    /// request runs and refuses with 429 when the answer says so, as Vault's handler does.
    pub fn rate_limit(&self, req: &crate::logical::Request) -> Option<crate::quotas::RateLimited> {
        if !self.quotas.active() {
            return None;
        }
        let path = crate::path::clean(&req.path).ok()?;
        let (mount, kind) = if path == "sys" || path.starts_with("sys/") {
            ("sys/".to_owned(), "system".to_owned())
        } else {
            match self.active().ok().and_then(|a| a.router().ok()) {
                Some(router) => match router.route(&path) {
                    Some((r, _)) => (r.full_path.clone(), r.entry.kind.clone()),
                    None => (String::new(), String::new()),
                },
                None => (String::new(), String::new()),
            }
        };
        let (name, limited) =
            self.quotas.check(&path, &mount, &kind, req.remote_addr, &req.data)?;
        if !limited.decision.allowed {
            self.metrics.quota_violation(&name);
        }
        Some(limited)
    }

    /// Audits a request a quota refused (`enable_rate_limit_audit_logging`), with the refusal
    /// as its error, as Vault does; best effort, as the request is refused either way.
    pub async fn audit_rate_limited(&self, req: &crate::logical::Request, message: &str) {
        let Ok(active) = self.active() else { return };
        let path = crate::path::clean(&req.path).unwrap_or_else(|_| req.path.clone());
        let record = crate::audit::Record {
            req,
            path: &path,
            operation: req.operation.as_str(),
            caller: None,
            mount_type: "",
            non_hmac: Default::default(),
            login: false,
        };
        if let Err(e) = active.audit.log_request(&record, message).await {
            tracing::warn!(error = %e, "a request refused by a rate limit quota could not be audited");
        }
    }
}

/// Vault's `GenericNameRegex`: word characters, with `-`, `.` and `@` inside.
fn valid_name(n: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let first = n.chars().next().is_some_and(word);
    let last = n.chars().last().is_some_and(word);
    first && last && n.chars().all(|c| word(c) || matches!(c, '-' | '.' | '@'))
}

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let Some(rest) = rel.strip_prefix("quotas/") else { return Ok(None) };
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    let f = Fields::new(&ctx.req.data);
    let v = view(ctx.core);
    if rest == "config" {
        return match op {
            Operation::Read => {
                let c = ctx.core.quotas.config();
                Ok(Some(Response::from_value(json!({
                    "enable_rate_limit_audit_logging": c.enable_rate_limit_audit_logging,
                    "enable_rate_limit_response_headers": c.enable_rate_limit_response_headers,
                    "rate_limit_exempt_paths": c.rate_limit_exempt_paths,
                }))))
            }
            // As Vault: a field left out is set to its zero value, not kept.
            _ if write => {
                let c = QuotaConfig {
                    enable_rate_limit_audit_logging: f
                        .bool("enable_rate_limit_audit_logging")?
                        .unwrap_or(false),
                    enable_rate_limit_response_headers: f
                        .bool("enable_rate_limit_response_headers")?
                        .unwrap_or(false),
                    rate_limit_exempt_paths: f
                        .list("rate_limit_exempt_paths")?
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| p.trim_start_matches('/').to_owned())
                        .collect(),
                };
                v.put(CONFIG_KEY, &crate::record::encode(&c)?).await?;
                ctx.core.quotas.set_config(c);
                Ok(Some(Response::empty()))
            }
            _ => Err(Error::UnsupportedOperation),
        };
    }
    let Some(name) = rest.strip_prefix("rate-limit") else { return Ok(None) };
    let name = name.trim_matches('/');
    if name.is_empty() {
        return match op {
            Operation::List => {
                let keys: Vec<String> =
                    ctx.core.quotas.rules().into_iter().map(|r| r.name).collect();
                if keys.is_empty() {
                    return Err(Error::NotFound);
                }
                Ok(Some(Response::list(keys)))
            }
            _ => Err(Error::UnsupportedOperation),
        };
    }
    if !valid_name(name) {
        return Err(Error::UnsupportedPath(format!("sys/{rel}")));
    }
    match op {
        Operation::Read => {
            let rule = ctx.core.quotas.rules().into_iter().find(|r| r.name == name);
            let r = rule.ok_or(Error::NotFound)?;
            Ok(Some(Response::from_value(json!({
                "type": "rate-limit",
                "name": r.name,
                "path": format!("{}{}", r.mount_path, r.path_suffix),
                "role": r.role,
                "rate": go_float(r.rate),
                "interval": r.interval_secs,
                "block_interval": r.block_interval_secs,
                "inheritable": r.inheritable,
            }))))
        }
        _ if write => {
            let rule = parse_rule(ctx, name, &f)?;
            if let Some(other) = ctx
                .core
                .quotas
                .rules()
                .into_iter()
                .find(|r| r.name != rule.name && r.same_scope(&rule))
            {
                return Err(Error::invalid(format!(
                    "quota rule with similar properties exists under the name {:?}",
                    other.name
                )));
            }
            v.put(&format!("{RULES}{name}"), &crate::record::encode(&rule)?).await?;
            ctx.core.quotas.put_rule(rule);
            Ok(Some(Response::empty()))
        }
        Operation::Delete => {
            v.delete(&format!("{RULES}{name}")).await?;
            ctx.core.quotas.delete_rule(name);
            Ok(Some(Response::empty()))
        }
        _ => Err(Error::UnsupportedOperation),
    }
}

/// A rule from a write, checked as Vault checks it.
fn parse_rule(ctx: &Ctx<'_>, name: &str, f: &Fields<'_>) -> Result<RateLimitRule> {
    let rate = match f.raw("rate") {
        None | Some(serde_json::Value::Null) => 0.0,
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(serde_json::Value::String(s)) => {
            s.trim().parse::<f64>().map_err(|_| Error::invalid("\"rate\" must be a number"))?
        }
        Some(_) => return Err(Error::invalid("\"rate\" must be a number")),
    };
    if rate.is_nan() || rate <= 0.0 || rate.is_infinite() {
        return Err(Error::invalid("'rate' is invalid"));
    }
    let interval_secs = f.secs("interval")?.filter(|s| *s > 0).unwrap_or(1);
    let block_interval_secs = f.secs("block_interval")?.unwrap_or(0);
    let path = f.str("path")?.unwrap_or_default();
    let path = path.trim().trim_start_matches('/');
    let (mount_path, path_suffix, kind) = if path.is_empty() {
        (String::new(), String::new(), String::new())
    } else if path == "sys" || path.starts_with("sys/") {
        let suffix = path.trim_start_matches("sys").trim_matches('/');
        ("sys/".to_owned(), suffix.to_owned(), "system".to_owned())
    } else {
        let router = ctx.active.router()?;
        let (route, rest) = router
            .route(path)
            .ok_or_else(|| Error::invalid(format!("invalid mount path {path:?}")))?;
        (route.full_path.clone(), rest.trim_matches('/').to_owned(), route.entry.kind.clone())
    };
    let role = f.str("role")?.unwrap_or_default();
    if !role.is_empty() {
        if !path_suffix.is_empty() {
            return Err(Error::invalid(
                "Quotas cannot contain both a path suffix and a role. If a role is provided, path must be a valid auth mount with a concept of roles",
            ));
        }
        if !mount_path.starts_with("auth/") {
            return Err(Error::invalid(format!(
                "Mount path {mount_path:?} is not a valid auth method and therefore unsuitable for use with role-based quotas"
            )));
        }
        if role_field(&kind).is_none() {
            return Err(Error::invalid(format!(
                "Mount path {mount_path:?} does not support use with role-based quotas"
            )));
        }
    }
    // Vault: a global rule is inheritable unless told otherwise.
    let inheritable = f.bool("inheritable")?.unwrap_or(mount_path.is_empty());
    Ok(RateLimitRule {
        name: name.to_owned(),
        mount_path,
        path_suffix,
        role,
        rate,
        interval_secs,
        block_interval_secs,
        inheritable,
    })
}

/// A float as Go's encoding/json writes it: a whole number without a fraction (`2`, not `2.0`).
fn go_float(x: f64) -> serde_json::Value {
    // Exact below 2^53, where every whole f64 is an integer.
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 { json!(x as i64) } else { json!(x) }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_follow_vaults_generic_name_pattern() {
        for ok in ["a", "global", "kv-app.1@x", "a_b"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
