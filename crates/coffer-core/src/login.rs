//! A verified login becomes a token here.
//!
//! An auth method never creates tokens itself: it answers a login with a [`Login`], and the core
//! turns that into a token (capped by the mount's and the server's TTL limits), so every method's
//! tokens obey the same rules and are audited the same way.

use crate::backend::MountInfo;
use crate::identity::{AliasLogin, IdentityStore};
use crate::logical::login::{Login, normalize_policies};
use crate::logical::{Auth, Error, Result};
use crate::token::{DEFAULT_POLICY, ROOT_POLICY, TokenParams, TokenStore};

/// Turns an auth method's [`Login`] into an orphan service token, as Vault's core does: the TTL
/// is the role's or the mount's default, capped by the role's, the mount's and the server's
/// maximum; a periodic token's TTL is its period.
pub(crate) async fn issue(
    tokens: &TokenStore,
    identity: &IdentityStore,
    mount: &MountInfo,
    request_path: &str,
    login: Login,
) -> Result<Auth> {
    let mut policies = normalize_policies(login.policies);
    if policies.iter().any(|p| p == ROOT_POLICY) {
        return Err(Error::invalid("auth methods cannot create root tokens"));
    }
    if policies.iter().any(|p| p == crate::wrapping::WRAPPING_POLICY) {
        return Err(Error::invalid("cannot issue a token with the response-wrapping policy"));
    }
    if !login.no_default_policy && !policies.iter().any(|p| p == DEFAULT_POLICY) {
        policies.push(DEFAULT_POLICY.to_owned());
        policies.sort();
    }
    if policies.is_empty() {
        return Err(Error::invalid("token must have at least one policy"));
    }
    let mount_max = mount.max_lease_ttl.as_secs();
    let max_ttl = if login.max_ttl > 0 { login.max_ttl.min(mount_max) } else { mount_max };
    let mut ttl = if login.period > 0 {
        login.period
    } else if login.ttl > 0 {
        login.ttl
    } else {
        mount.default_lease_ttl.as_secs()
    };
    if login.explicit_max_ttl > 0 {
        ttl = ttl.min(login.explicit_max_ttl);
    }
    if login.period == 0 {
        ttl = ttl.min(max_ttl);
    }
    // After every check of the login itself, so a refused login makes no entity.
    let entity_id = match login.alias.as_ref().filter(|a| !a.name.is_empty()) {
        Some(a) => {
            identity
                .login(&AliasLogin {
                    mount_accessor: &mount.accessor,
                    name: &a.name,
                    metadata: &a.metadata,
                    groups: a.groups.as_deref(),
                })
                .await?
        }
        None => String::new(),
    };
    let name = mount.path.trim_start_matches("auth/").trim_end_matches('/').replace('/', "-");
    let display_name =
        if login.display_name.is_empty() { name } else { format!("{name}-{}", login.display_name) };
    let params = TokenParams {
        policies,
        meta: login.metadata,
        display_name,
        num_uses: login.num_uses,
        ttl,
        explicit_max_ttl: login.explicit_max_ttl,
        period: login.period,
        renewable: true,
        orphan: true,
        path: request_path.to_owned(),
        bound_cidrs: login.bound_cidrs,
        max_ttl,
        entity_id,
        ..TokenParams::default()
    };
    let (token, entry) = tokens.create(None, params).await?;
    let mut auth = entry.auth(&token);
    if let Some(ident) = identity.token_identity(&entry.entity_id)?
        && !ident.policies.is_empty()
    {
        // Vault's login answer: `policies` holds both, `identity_policies` the entity's.
        auth.policies.extend(ident.policies.iter().cloned());
        auth.policies.sort();
        auth.policies.dedup();
        auth.identity_policies = Some(ident.policies);
    }
    Ok(auth)
}
