//! `auth/token/`: the token store's API, with Vault's paths and shapes.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::backend::{BackendRequest, LogicalBackend};
use crate::config::CoreConfig;
use crate::logical::fields::{Fields, ignored_warning};
use crate::logical::login::normalize_policies;
use crate::logical::{Error, Operation, Response, Result};
use crate::secret::SecretString;
use crate::time::now_unix;
use crate::token::{DEFAULT_POLICY, ROOT_POLICY, TokenEntry, TokenParams, TokenStore};

pub(crate) struct TokenBackend {
    tokens: Arc<TokenStore>,
    config: CoreConfig,
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
        Self { tokens, config }
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

#[async_trait]
impl LogicalBackend for TokenBackend {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        use Operation::*;
        let now = now_unix();
        let write = matches!(req.operation, Create | Update);
        match (req.path, req.operation) {
            ("create", _) if write => self.create(req, false).await,
            ("create-orphan", _) if write => self.create(req, true).await,
            ("lookup-self", Read) | ("lookup-self", Create | Update) => {
                let e = self_caller(req)?;
                Ok(Response::data(e.lookup_data(req.client_token.map(|t| t.expose()), now)))
            }
            ("lookup", _) if write => {
                let (t, e) = self.named_token(req).await?;
                Ok(Response::data(e.lookup_data(Some(t.expose()), now)))
            }
            ("lookup-accessor", _) if write => {
                let e = self.named_accessor(req).await?;
                Ok(Response::data(e.lookup_data(None, now)))
            }
            ("renew-self", _) if write => {
                let e = self_caller(req)?;
                self.renew(e, req.client_token, req.data).await
            }
            ("renew", _) if write => {
                let (t, e) = self.named_token(req).await?;
                self.renew(&e, Some(&t), req.data).await
            }
            ("renew-accessor", _) if write => {
                let e = self.named_accessor(req).await?;
                self.renew(&e, None, req.data).await
            }
            ("revoke-self", _) if write => {
                self.tokens.revoke_tree(&self_caller(req)?.id).await?;
                Ok(Response::empty())
            }
            ("revoke", _) if write => {
                // Vault answers success for a token that is already gone.
                // A token whose revocation failed part-way is found too, so a retry finishes it.
                let t = Fields::new(req.data).required_str("token")?;
                if let Some(e) = self.tokens.entry_for_revocation(&self.tokens.hash(&t)).await? {
                    self.tokens.revoke_tree(&e.id).await?;
                }
                Ok(Response::empty())
            }
            ("revoke-orphan", _) if write => {
                let t = Fields::new(req.data).required_str("token")?;
                let found = self.tokens.entry_for_revocation(&self.tokens.hash(&t)).await?;
                let e = found.ok_or(Error::PermissionDenied)?;
                self.tokens.revoke_orphan(&e.id).await?;
                Ok(Response::empty())
            }
            ("revoke-accessor", _) if write => {
                let a = Fields::new(req.data).required_str("accessor")?;
                let found = self.tokens.accessor_for_revocation(&a).await?;
                let e = found.ok_or_else(|| Error::invalid("invalid accessor"))?;
                self.tokens.revoke_tree(&e.id).await?;
                Ok(Response::empty())
            }
            ("accessors" | "accessors/", List) => {
                Ok(Response::list(self.tokens.accessors().await?))
            }
            (
                "create" | "create-orphan" | "lookup" | "lookup-accessor" | "renew" | "renew-self"
                | "renew-accessor" | "revoke" | "revoke-self" | "revoke-orphan" | "revoke-accessor"
                | "accessors" | "accessors/" | "lookup-self",
                _,
            ) => Err(Error::UnsupportedOperation),
            _ => Err(Error::UnsupportedPath(format!("auth/token/{}", req.path))),
        }
    }

    fn sudo_paths(&self) -> &'static [&'static str] {
        &["revoke-orphan", "accessors*"]
    }
}
