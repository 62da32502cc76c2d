//! `auth/token/`: the token store's API, with Vault's paths and shapes.

use std::sync::Arc;

use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::backend::BackendRequest;
use crate::backend::framework::{Field, Framework, Path, Paths, Req, handler};
use crate::config::CoreConfig;
use crate::logical::fields::{Fields, ignored_warning};
use crate::logical::login::normalize_policies;
use crate::logical::{Error, Response, Result};
use crate::secret::SecretString;
use crate::time::now_unix;
use crate::token::{DEFAULT_POLICY, ROOT_POLICY, TokenEntry, TokenParams, TokenRole, TokenStore};

pub(crate) struct TokenBackend {
    tokens: Arc<TokenStore>,
    config: CoreConfig,
    /// For `identity_policies` in lookups; set once at unseal, after the identity store loads.
    identity: std::sync::OnceLock<Arc<crate::identity::IdentityStore>>,
    /// For the policy store (warnings about policies that do not exist); weak, as the core
    /// owns this.
    core: std::sync::Weak<crate::core::Core>,
}

const CREATE_FIELDS: &[&str] = &[
    "id",
    "policies",
    "meta",
    "no_parent",
    "no_default_policy",
    "renewable",
    "ttl",
    "type",
    "explicit_max_ttl",
    "display_name",
    "num_uses",
    "period",
    "entity_alias",
    "lease",
];

impl TokenBackend {
    pub(crate) fn new(
        tokens: Arc<TokenStore>,
        config: CoreConfig,
        core: std::sync::Weak<crate::core::Core>,
    ) -> Self {
        Self { tokens, config, identity: std::sync::OnceLock::new(), core }
    }

    pub(crate) fn set_identity(&self, store: Arc<crate::identity::IdentityStore>) {
        let _ = self.identity.set(store);
    }

    /// Vault's lookup answer, with the token's `identity_policies` when its entity gives any.
    fn lookup_answer(&self, e: &TokenEntry, token: Option<&str>) -> Result<Response> {
        let mut data = e.lookup_data(token, now_unix());
        if let Some(store) = self.identity.get()
            && let Some(ident) = store.token_identity(&e.entity_id)?
            && !ident.policies.is_empty()
        {
            data.insert("identity_policies".into(), Value::from(ident.policies));
            // Vault's: the identity policies of other namespaces (Coffer has only the root one).
            data.insert("external_namespace_policies".into(), Value::Object(Map::new()));
        }
        Ok(Response::data(data))
    }

    async fn create_child(&self, r: &Req<'_>) -> Result<Response> {
        self.create(r, false, None).await
    }

    async fn create_orphan(&self, r: &Req<'_>) -> Result<Response> {
        self.create(r, true, None).await
    }

    async fn create_with_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("role_name");
        let role = self
            .tokens
            .role(name)
            .await?
            .ok_or_else(|| Error::invalid(format!("unknown role {name}")))?;
        self.create(r, false, Some(&role)).await
    }

    async fn create(
        &self,
        req: &BackendRequest<'_>,
        orphan_endpoint: bool,
        role: Option<&TokenRole>,
    ) -> Result<Response> {
        let parent = req.caller.ok_or(Error::PermissionDenied)?;
        if parent.num_uses > 0 {
            return Err(Error::invalid("restricted use token cannot generate child tokens"));
        }
        let f = Fields::new(req.data);
        let is_root = parent.is_root();
        // A role decides orphanhood itself (Vault ignores `no_parent` then).
        let no_parent = match role {
            Some(r) => r.orphan,
            None => orphan_endpoint || f.bool("no_parent")?.unwrap_or(false),
        };
        if no_parent && role.is_none() && !orphan_endpoint && !(is_root || req.sudo) {
            return Err(Error::invalid("root or sudo privileges required to create orphan token"));
        }
        // As Vault: the token acts for its parent's entity, or for the entity of an alias on
        // the token store's mount that the role allows (made on first use).
        let mut entity_id = parent.entity_id.clone();
        if let Some(alias) = f.str("entity_alias")?.filter(|a| !a.is_empty()) {
            let Some(role) = role else {
                return Err(Error::invalid(
                    "'entity_alias' is only allowed in combination with token role",
                ));
            };
            let lower = alias.to_lowercase();
            let allowed = role.allowed_entity_aliases.iter().any(|a| {
                let a = a.to_lowercase();
                a == lower || crate::glob::glob_match(&a, &lower)
            });
            if !allowed {
                return Err(Error::invalid("invalid 'entity_alias' value"));
            }
            let store = self
                .identity
                .get()
                .ok_or_else(|| Error::Internal("identity store not set".into()))?;
            let none = std::collections::BTreeMap::new();
            let login = crate::identity::AliasLogin {
                mount_accessor: &req.mount.accessor,
                name: &alias,
                metadata: &none,
                groups: None,
            };
            entity_id = match store.login(&login).await {
                Err(Error::PermissionDenied) => {
                    return Err(Error::Forbidden(
                        "entity from given entity alias is disabled".into(),
                    ));
                }
                other => other?,
            };
        }
        if let Some(t) = f.str("type")?
            && t != "service"
            && t != "default"
        {
            return Err(Error::invalid(format!(
                "unsupported token type {t:?}: Coffer issues service tokens"
            )));
        }
        let id = match f.str("id")? {
            Some(id) if !id.is_empty() => {
                if !is_root {
                    return Err(Error::invalid("root privileges required to specify token id"));
                }
                Some(SecretString::new(id))
            }
            _ => None,
        };
        let asked = f.list("policies")?.filter(|p| !p.is_empty()).map(normalize_policies);
        let no_default = f.bool("no_default_policy")?.unwrap_or(false)
            || role.is_some_and(|r| r.token_no_default_policy);
        let constrained = role.filter(|r| {
            !(r.allowed_policies.is_empty()
                && r.disallowed_policies.is_empty()
                && r.allowed_policies_glob.is_empty()
                && r.disallowed_policies_glob.is_empty())
        });
        let mut policies = match constrained {
            // The role, not the parent, bounds the policies (Vault's delegation by role).
            Some(r) => role_policies(r, asked, parent, no_default)?,
            None => {
                let policies = match asked {
                    Some(p) => p,
                    None => parent
                        .policies
                        .iter()
                        .filter(|p| *p != ROOT_POLICY || is_root)
                        .cloned()
                        .collect(),
                };
                // Vault's text, which clients match on (it names no policy).
                if !is_root
                    && policies.iter().any(|p| p != DEFAULT_POLICY && !parent.policies.contains(p))
                {
                    return Err(Error::invalid("child policies must be subset of parent"));
                }
                policies
            }
        };
        if policies.iter().any(|p| p == crate::wrapping::WRAPPING_POLICY) {
            return Err(Error::invalid(
                "the response-wrapping policy is reserved for wrapping tokens",
            ));
        }
        if policies.iter().any(|p| p == ROOT_POLICY) && !is_root {
            return Err(Error::invalid(
                "root tokens may not be created without parent token being root",
            ));
        }
        if no_default {
            policies.retain(|p| p != DEFAULT_POLICY);
        } else if constrained.is_none()
            && !policies.iter().any(|p| p == ROOT_POLICY || p == DEFAULT_POLICY)
        {
            policies.push(DEFAULT_POLICY.into());
            policies.sort();
        }
        if policies.is_empty() {
            return Err(Error::invalid("token must have at least one policy"));
        }
        let max = self.config.max_lease_ttl.as_secs();
        let mut warnings = ignored_warning(f.unknown(CREATE_FIELDS));
        let mut explicit_max_ttl = f.secs("explicit_max_ttl")?.unwrap_or(0);
        let mut period = f.secs("period")?.unwrap_or(0);
        if period > 0 && !(is_root || req.sudo) {
            return Err(Error::invalid(
                "root or sudo privileges required to create periodic token",
            ));
        }
        // A role's limits merge with the request's: the lesser wins, as in Vault.
        if let Some(r) = role {
            if r.token_explicit_max_ttl > 0 {
                if explicit_max_ttl > 0 {
                    explicit_max_ttl = explicit_max_ttl.min(r.token_explicit_max_ttl);
                    warnings.push(format!("Explicit max TTL specified both during creation call and in role; using the lesser value of {explicit_max_ttl} seconds"));
                } else {
                    explicit_max_ttl = r.token_explicit_max_ttl;
                }
            }
            if r.token_period > 0 {
                if period > 0 {
                    period = period.min(r.token_period);
                    warnings.push(format!("Period specified both during creation call and in role; using the lesser value of {period} seconds"));
                } else {
                    period = r.token_period;
                }
            }
        }
        let requested = f.secs("ttl")?.or(f.secs("lease")?);
        let mut ttl = match (requested, period) {
            (_, p) if p > 0 => p,
            (Some(t), _) if t > 0 => t,
            _ if policies.iter().any(|p| p == ROOT_POLICY) && requested.is_none() => 0,
            _ => self.config.default_lease_ttl.as_secs(),
        };
        if ttl != 0 {
            let cap = if explicit_max_ttl > 0 { max.min(explicit_max_ttl) } else { max };
            if ttl > cap {
                // Vault's warning (its SDK's CalculateTTL), durations in its words.
                let what = if period > 0 { "period" } else { "TTL" };
                warnings.push(format!(
                    "{what} of {:?} exceeded the effective max_ttl of {:?}; {what} value is capped accordingly",
                    coffer_time::format_human(ttl),
                    coffer_time::format_human(cap),
                ));
            }
            ttl = ttl.min(cap);
        }
        let display = f.str("display_name")?.unwrap_or_default();
        let display_name = if display.is_empty() {
            "token".to_owned()
        } else {
            // Vault's rule: case kept, other characters become `-`, one trailing `-` dropped.
            let cleaned: String = display
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
                .collect();
            let full = format!("token-{cleaned}");
            full.strip_suffix('-').map(str::to_owned).unwrap_or(full)
        };
        let mut num_uses = f.u64("num_uses")?.unwrap_or(0);
        let mut renewable = f.bool("renewable")?.unwrap_or(true);
        let mut path = if orphan_endpoint {
            "auth/token/create-orphan".to_owned()
        } else {
            "auth/token/create".to_owned()
        };
        let mut bound_cidrs = Vec::new();
        if let Some(r) = role {
            renewable &= r.renewable;
            if r.token_num_uses > 0 && (num_uses == 0 || r.token_num_uses < num_uses) {
                num_uses = r.token_num_uses;
            }
            path = format!("auth/token/create/{}", r.name);
            if !r.path_suffix.is_empty() {
                path = format!("{path}/{}", r.path_suffix);
            }
            bound_cidrs = r.token_bound_cidrs.clone();
        }
        let params = TokenParams {
            id,
            policies,
            meta: f.string_map("meta")?.unwrap_or_default(),
            display_name,
            num_uses,
            ttl,
            explicit_max_ttl,
            period,
            renewable,
            orphan: no_parent,
            // As Vault: a token acts for the entity of the token that made it.
            entity_id,
            path,
            bound_cidrs,
            ..TokenParams::default()
        };
        let (token, entry) = self.tokens.create(Some(parent), params).await?;
        // As Vault: a token may name policies that do not exist (yet); it is made, with a
        // warning for each. `root` is not stored but exists.
        if let Some(active) = self.core.upgrade().and_then(|c| c.active().ok()) {
            for p in entry.policies.iter().filter(|p| *p != ROOT_POLICY) {
                if active.policies.get(p)?.is_none() {
                    warnings.push(format!("Policy {p:?} does not exist"));
                }
            }
        }
        Ok(Response { auth: Some(entry.auth(&token)), warnings, ..Response::default() })
    }

    /// The token named in the body (`token`), which must exist; the caller's token for `-self`.
    async fn named_token(&self, req: &BackendRequest<'_>) -> Result<(SecretString, TokenEntry)> {
        let t = Fields::new(req.data).required_str("token")?;
        let entry = self.tokens.lookup(&t).await?.ok_or(Error::PermissionDenied)?;
        Ok((SecretString::new(t), entry))
    }

    async fn named_accessor(&self, req: &BackendRequest<'_>) -> Result<TokenEntry> {
        let a = Fields::new(req.data).required_str("accessor")?;
        self.tokens
            .lookup_accessor(&a)
            .await?
            .ok_or_else(|| Error::invalid(crate::logical::multierror("invalid accessor")))
    }

    async fn renew(
        &self,
        entry: &TokenEntry,
        token: Option<&SecretString>,
        data: &Map<String, Value>,
    ) -> Result<Response> {
        let increment = Fields::new(data).secs("increment")?.filter(|i| *i > 0);
        let renewed =
            self.tokens.renew(entry, increment, self.config.max_lease_ttl.as_secs()).await?;
        let shown = token.cloned().unwrap_or_else(|| SecretString::new(String::new()));
        Ok(Response { auth: Some(renewed.auth(&shown)), ..Response::default() })
    }
}

/// The policies of a token made with a role that constrains them, as Vault decides them: the
/// request's (or else the role's allowed ones, or else the parent's), each of which must be
/// allowed (by name or glob) when the role lists allowed ones, and none disallowed.
fn role_policies(
    r: &TokenRole,
    asked: Option<Vec<String>>,
    parent: &TokenEntry,
    no_default: bool,
) -> Result<Vec<String>> {
    use crate::glob::glob_match;
    let globbed = |list: &[String], p: &str| list.iter().any(|g| glob_match(g, p));
    let add_default = !no_default
        && !r.disallowed_policies.iter().any(|p| p == DEFAULT_POLICY)
        && !globbed(&r.disallowed_policies_glob, DEFAULT_POLICY);
    let with_default = |mut p: Vec<String>| {
        if add_default && !p.iter().any(|x| x == DEFAULT_POLICY) {
            p.push(DEFAULT_POLICY.into());
        }
        normalize_policies(p)
    };
    let allowed_set = !r.allowed_policies.is_empty() || !r.allowed_policies_glob.is_empty();
    let policies = match (asked, allowed_set) {
        (Some(p), true) => {
            let p = with_default(p);
            let allowed = with_default(r.allowed_policies.clone());
            if p.iter().any(|x| !allowed.contains(x) && !globbed(&r.allowed_policies_glob, x)) {
                return Err(Error::invalid(format!(
                    "token policies ({}) must be subset of the role's allowed policies ({}) or \
                     glob policies ({})",
                    go_quoted(&p),
                    go_quoted(&allowed),
                    go_quoted(&r.allowed_policies_glob)
                )));
            }
            p
        }
        (None, true) => with_default(r.allowed_policies.clone()),
        (Some(p), false) => with_default(p),
        (None, false) => with_default(parent.policies.clone()),
    };
    if let Some(bad) = policies
        .iter()
        .find(|p| r.disallowed_policies.contains(p) || globbed(&r.disallowed_policies_glob, p))
    {
        return Err(Error::invalid(format!("token policy {bad:?} is disallowed by this role")));
    }
    let mut policies = policies;
    if no_default {
        policies.retain(|p| p != DEFAULT_POLICY);
    }
    Ok(policies)
}

/// A list as Go's `%q` prints a `[]string`, which Vault's messages use: `["a" "b"]`.
fn go_quoted(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

fn self_caller<'a>(req: &'a BackendRequest<'_>) -> Result<&'a TokenEntry> {
    req.caller.ok_or(Error::PermissionDenied)
}

/// The handlers parse their fields themselves (with Vault's lenient encodings, as before the
/// framework): the declarations document them for help and the OpenAPI document.
const CREATE_DOC: &[Field] = &[
    Field::str("id", "The token's own string (root only).").unchecked(),
    Field::comma_list("policies", "Policies; default: the parent's.").unchecked(),
    Field::kv_pairs("meta", "Metadata shown with the token.").unchecked(),
    Field::bool("no_parent", "Create an orphan (root or sudo).").unchecked(),
    Field::bool("no_default_policy", "Leave out the default policy.").unchecked(),
    Field::bool("renewable", "Whether the token can be renewed.").unchecked(),
    Field::duration("ttl", "Time to live.").unchecked(),
    Field::str("type", "Only `service` (or `default`).").unchecked(),
    Field::duration("explicit_max_ttl", "A hard limit renewals cannot pass.").unchecked(),
    Field::str("display_name", "Shown in lookups and audit entries.").unchecked(),
    Field::int("num_uses", "Uses before the token is revoked; 0: unlimited.").unchecked(),
    Field::duration("period", "Renew to this TTL each time (root or sudo).").unchecked(),
];
const ROLE_NAME_DOC: &[Field] = &[Field::str("role_name", "The role's name.").unchecked()];
const ROLE_DOC: &[Field] = &[
    Field::comma_list(
        "allowed_policies",
        "Policies its tokens may have; empty: any the caller's \
        (see disallowed_policies).",
    )
    .unchecked(),
    Field::comma_list("disallowed_policies", "Policies its tokens may not have.").unchecked(),
    Field::comma_list("allowed_policies_glob", "As allowed_policies, with `*` globs.").unchecked(),
    Field::comma_list("disallowed_policies_glob", "As disallowed_policies, with `*` globs.")
        .unchecked(),
    Field::bool("orphan", "Its tokens have no parent (no sudo needed).").unchecked(),
    Field::bool("renewable", "Its tokens may be renewed (default true).").unchecked(),
    Field::str("path_suffix", "Appended to the tokens' creation path, for revoke-prefix.")
        .unchecked(),
    Field::comma_list("allowed_entity_aliases", "Stored; Coffer has no identity store yet.")
        .unchecked(),
    Field::duration("token_period", "Makes its tokens periodic.").unchecked(),
    Field::duration("token_explicit_max_ttl", "A hard cap on its tokens' lifetime.").unchecked(),
    Field::comma_list("token_bound_cidrs", "Addresses its tokens may be used from.").unchecked(),
    Field::bool("token_no_default_policy", "Leave out the default policy.").unchecked(),
    Field::int("token_num_uses", "Uses per token; 0: unlimited.").unchecked(),
    Field::str("token_type", "`service` or `default-service` (no batch tokens).").unchecked(),
    Field::duration("period", "Legacy name of token_period.").unchecked(),
    Field::duration("explicit_max_ttl", "Legacy name of token_explicit_max_ttl.").unchecked(),
    Field::comma_list("bound_cidrs", "Legacy name of token_bound_cidrs.").unchecked(),
];
const TOKEN_DOC: &[Field] = &[Field::str("token", "The token.").required().unchecked()];
const ACCESSOR_DOC: &[Field] =
    &[Field::str("accessor", "The token's accessor.").required().unchecked()];
const INCREMENT_DOC: &[Field] =
    &[Field::duration("increment", "The TTL asked for; default: the token's own.").unchecked()];

static PATHS: LazyLock<Paths<TokenBackend>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("create", "Create a child token of the caller.")
            .fields(CREATE_DOC)
            .write(handler!(TokenBackend::create_child)),
        Path::new("create-orphan", "Create a token without a parent.")
            .fields(CREATE_DOC)
            .write(handler!(TokenBackend::create_orphan)),
        Path::new("create/{role_name}", "Create a token as a token role allows.")
            .fields(ROLE_NAME_DOC)
            .fields(CREATE_DOC)
            .write(handler!(TokenBackend::create_with_role)),
        Path::new("roles", "The token roles, by name.").list(handler!(TokenBackend::list_roles)),
        Path::new("roles/{role_name}", "A token role: what auth/token/create/:role_name makes.")
            .fields(ROLE_NAME_DOC)
            .fields(ROLE_DOC)
            .read(handler!(TokenBackend::read_role))
            .write(handler!(TokenBackend::write_role))
            .delete(handler!(TokenBackend::delete_role))
            .exists(handler!(TokenBackend::role_exists)),
        Path::new("lookup-self", "The caller's own token.")
            .read(handler!(TokenBackend::lookup_self))
            .write(handler!(TokenBackend::lookup_self)),
        Path::new("lookup", "A token's properties.")
            .fields(TOKEN_DOC)
            .write(handler!(TokenBackend::lookup)),
        Path::new("lookup-accessor", "A token's properties, by its accessor.")
            .fields(ACCESSOR_DOC)
            .write(handler!(TokenBackend::lookup_accessor)),
        Path::new("renew-self", "Renew the caller's own token.")
            .fields(INCREMENT_DOC)
            .write(handler!(TokenBackend::renew_self)),
        Path::new("renew", "Renew a token.")
            .fields(TOKEN_DOC)
            .fields(INCREMENT_DOC)
            .write(handler!(TokenBackend::renew_named)),
        Path::new("renew-accessor", "Renew a token, by its accessor.")
            .fields(ACCESSOR_DOC)
            .fields(INCREMENT_DOC)
            .write(handler!(TokenBackend::renew_by_accessor)),
        Path::new("revoke-self", "Revoke the caller's own token and its children.")
            .write(handler!(TokenBackend::revoke_self)),
        Path::new("revoke", "Revoke a token and its children.")
            .fields(TOKEN_DOC)
            .write(handler!(TokenBackend::revoke)),
        Path::new("revoke-orphan", "Revoke a token; its children become orphans.")
            .fields(TOKEN_DOC)
            .write(handler!(TokenBackend::revoke_orphan))
            .sudo(),
        Path::new("revoke-accessor", "Revoke a token and its children, by its accessor.")
            .fields(ACCESSOR_DOC)
            .write(handler!(TokenBackend::revoke_accessor)),
        Path::new("accessors", "The accessors of every live token.")
            .list(handler!(TokenBackend::accessors))
            .sudo(),
    ])
});

impl TokenBackend {
    async fn lookup_self(&self, r: &Req<'_>) -> Result<Response> {
        let e = self_caller(r)?;
        self.lookup_answer(e, r.client_token.map(|t| t.expose()))
    }

    async fn lookup(&self, r: &Req<'_>) -> Result<Response> {
        let (t, e) = match self.named_token(r).await {
            // Vault's text for this one endpoint.
            Err(Error::PermissionDenied) => return Err(Error::Forbidden("bad token".into())),
            other => other?,
        };
        self.lookup_answer(&e, Some(t.expose()))
    }

    async fn lookup_accessor(&self, r: &Req<'_>) -> Result<Response> {
        let e = self.named_accessor(r).await?;
        self.lookup_answer(&e, None)
    }

    async fn renew_self(&self, r: &Req<'_>) -> Result<Response> {
        self.renew(self_caller(r)?, r.client_token, r.data).await
    }

    async fn renew_named(&self, r: &Req<'_>) -> Result<Response> {
        let (t, e) = self.named_token(r).await?;
        self.renew(&e, Some(&t), r.data).await
    }

    async fn renew_by_accessor(&self, r: &Req<'_>) -> Result<Response> {
        let e = self.named_accessor(r).await?;
        self.renew(&e, None, r.data).await
    }

    async fn revoke_self(&self, r: &Req<'_>) -> Result<Response> {
        self.tokens.revoke_tree(&self_caller(r)?.id).await?;
        Ok(Response::empty())
    }

    /// Vault answers success for a token that is already gone. A token whose revocation failed
    /// part-way is found too, so a retry finishes it.
    async fn revoke(&self, r: &Req<'_>) -> Result<Response> {
        let t = Fields::new(r.data).required_str("token")?;
        if let Some(e) = self.tokens.token_for_revocation(&t).await? {
            self.tokens.revoke_tree(&e.id).await?;
        }
        Ok(Response::empty())
    }

    async fn revoke_orphan(&self, r: &Req<'_>) -> Result<Response> {
        let t = Fields::new(r.data).required_str("token")?;
        let found = self.tokens.token_for_revocation(&t).await?;
        let e = found.ok_or(Error::PermissionDenied)?;
        self.tokens.revoke_orphan(&e.id).await?;
        Ok(Response::empty())
    }

    async fn revoke_accessor(&self, r: &Req<'_>) -> Result<Response> {
        let a = Fields::new(r.data).required_str("accessor")?;
        let found = self.tokens.accessor_for_revocation(&a).await?;
        let e = found.ok_or_else(|| Error::invalid("invalid accessor"))?;
        self.tokens.revoke_tree(&e.id).await?;
        Ok(Response::empty())
    }

    async fn list_roles(&self, _r: &Req<'_>) -> Result<Response> {
        crate::backend::framework::list_response(self.tokens.role_names().await?)
    }

    async fn read_role(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.tokens.role(r.capture("role_name")).await?.ok_or(Error::NotFound)?;
        Ok(Response::data(role.to_json()))
    }

    async fn write_role(&self, r: &Req<'_>) -> Result<Response> {
        let warnings = self.tokens.write_role(r.capture("role_name"), r.data).await?;
        Ok(Response { warnings, ..Response::default() })
    }

    async fn delete_role(&self, r: &Req<'_>) -> Result<Response> {
        self.tokens.delete_role(r.capture("role_name")).await?;
        Ok(Response::empty())
    }

    async fn role_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(self.tokens.role(r.capture("role_name")).await?.is_some()))
    }

    async fn accessors(&self, _r: &Req<'_>) -> Result<Response> {
        Ok(Response::list(self.tokens.accessors().await?))
    }
}

impl Framework for TokenBackend {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}
