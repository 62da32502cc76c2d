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
use crate::token::{DEFAULT_POLICY, ROOT_POLICY, TokenEntry, TokenParams, TokenStore};

pub(crate) struct TokenBackend {
    tokens: Arc<TokenStore>,
    config: CoreConfig,
    /// For `identity_policies` in lookups; set once at unseal, after the identity store loads.
    identity: std::sync::OnceLock<Arc<crate::identity::IdentityStore>>,
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
    pub(crate) fn new(tokens: Arc<TokenStore>, config: CoreConfig) -> Self {
        Self { tokens, config, identity: std::sync::OnceLock::new() }
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
        }
        Ok(Response::data(data))
    }

    async fn create_child(&self, r: &Req<'_>) -> Result<Response> {
        self.create(r, false).await
    }

    async fn create_orphan(&self, r: &Req<'_>) -> Result<Response> {
        self.create(r, true).await
    }

    async fn create(&self, req: &BackendRequest<'_>, orphan_endpoint: bool) -> Result<Response> {
        let parent = req.caller.ok_or(Error::PermissionDenied)?;
        if parent.num_uses > 0 {
            return Err(Error::invalid("restricted use token cannot generate child tokens"));
        }
        let f = Fields::new(req.data);
        let is_root = parent.is_root();
        let no_parent = orphan_endpoint || f.bool("no_parent")?.unwrap_or(false);
        if no_parent && !orphan_endpoint && !(is_root || req.sudo) {
            return Err(Error::invalid("root or sudo privileges required to create orphan token"));
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
        let mut policies = match f.list("policies")? {
            Some(p) if !p.is_empty() => normalize_policies(p),
            _ => parent.policies.iter().filter(|p| *p != ROOT_POLICY || is_root).cloned().collect(),
        };
        if policies.iter().any(|p| p == crate::wrapping::WRAPPING_POLICY) {
            return Err(Error::invalid(
                "the response-wrapping policy is reserved for wrapping tokens",
            ));
        }
        if !is_root
            && let Some(extra) =
                policies.iter().find(|p| *p != DEFAULT_POLICY && !parent.policies.contains(p))
        {
            return Err(Error::invalid(format!(
                "child policies must be subset of parent: {extra:?} is not held by the parent token"
            )));
        }
        let no_default = f.bool("no_default_policy")?.unwrap_or(false);
        if no_default {
            policies.retain(|p| p != DEFAULT_POLICY);
        } else if !policies.iter().any(|p| p == ROOT_POLICY || p == DEFAULT_POLICY) {
            policies.push(DEFAULT_POLICY.into());
            policies.sort();
        }
        if policies.is_empty() {
            return Err(Error::invalid("token must have at least one policy"));
        }
        let max = self.config.max_lease_ttl.as_secs();
        let explicit_max_ttl = f.secs("explicit_max_ttl")?.unwrap_or(0);
        let period = f.secs("period")?.unwrap_or(0);
        if period > 0 && !(is_root || req.sudo) {
            return Err(Error::invalid(
                "root or sudo privileges required to create periodic token",
            ));
        }
        let requested = f.secs("ttl")?.or(f.secs("lease")?);
        let mut ttl = match (requested, period) {
            (_, p) if p > 0 => p,
            (Some(t), _) if t > 0 => t,
            _ if policies.iter().any(|p| p == ROOT_POLICY) && requested.is_none() => 0,
            _ => self.config.default_lease_ttl.as_secs(),
        };
        if ttl != 0 {
            ttl = ttl.min(max);
            if explicit_max_ttl > 0 {
                ttl = ttl.min(explicit_max_ttl);
            }
        }
        let display = f.str("display_name")?.unwrap_or_default();
        let display_name = if display.is_empty() {
            "token".to_owned()
        } else {
            let cleaned: String = display
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
                .collect();
            format!("token-{cleaned}")
        };
        let params = TokenParams {
            id,
            policies,
            meta: f.string_map("meta")?.unwrap_or_default(),
            display_name,
            num_uses: f.u64("num_uses")?.unwrap_or(0),
            ttl,
            explicit_max_ttl,
            period,
            renewable: f.bool("renewable")?.unwrap_or(true),
            orphan: no_parent,
            // As Vault: a token acts for the entity of the token that made it.
            entity_id: parent.entity_id.clone(),
            path: if orphan_endpoint {
                "auth/token/create-orphan".into()
            } else {
                "auth/token/create".into()
            },
            ..TokenParams::default()
        };
        let (token, entry) = self.tokens.create(Some(parent), params).await?;
        Ok(Response {
            auth: Some(entry.auth(&token)),
            warnings: ignored_warning(f.unknown(CREATE_FIELDS)),
            ..Response::default()
        })
    }

    /// The token named in the body (`token`), which must exist; the caller's token for `-self`.
    async fn named_token(&self, req: &BackendRequest<'_>) -> Result<(SecretString, TokenEntry)> {
        let t = Fields::new(req.data).required_str("token")?;
        let entry = self.tokens.lookup(&t).await?.ok_or(Error::PermissionDenied)?;
        Ok((SecretString::new(t), entry))
    }

    async fn named_accessor(&self, req: &BackendRequest<'_>) -> Result<TokenEntry> {
        let a = Fields::new(req.data).required_str("accessor")?;
        self.tokens.lookup_accessor(&a).await?.ok_or_else(|| Error::invalid("invalid accessor"))
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
        let (t, e) = self.named_token(r).await?;
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
        if let Some(e) = self.tokens.entry_for_revocation(&self.tokens.hash(&t)).await? {
            self.tokens.revoke_tree(&e.id).await?;
        }
        Ok(Response::empty())
    }

    async fn revoke_orphan(&self, r: &Req<'_>) -> Result<Response> {
        let t = Fields::new(r.data).required_str("token")?;
        let found = self.tokens.entry_for_revocation(&self.tokens.hash(&t)).await?;
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

    async fn accessors(&self, _r: &Req<'_>) -> Result<Response> {
        Ok(Response::list(self.tokens.accessors().await?))
    }
}

impl Framework for TokenBackend {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}
