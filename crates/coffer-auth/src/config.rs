//! What the methods with one `config` endpoint share (jwt, kubernetes): their paths, declared
//! once (`login`, `config`, and the role paths of [`role::role_paths`]), and the config record
//! stored at `config` in the mount's own view.
//!
//! Guarantees: reading `config` before one is written is a 404, and a write is a `create` until
//! one is stored (the existence check), so an ACL can allow configuring a method once without
//! allowing later changes; unknown fields of a config write are named in Vault's warning. It does
//! *not* check a config's values: the method's own `write_config` does, before it stores anything.

use async_trait::async_trait;
use coffer_core::framework::{Field, Path, Paths, Req};
use coffer_core::record::{self, Record};
use coffer_core::{Error, Response, Result, View};
use serde_json::{Map, Value};

use crate::role::{self, HasRoles};

/// A method configured at `config`, whose roles live at `role/{name}`.
#[async_trait]
pub(crate) trait Configured: HasRoles + Send + Sized + 'static {
    type Config: Record + Send + Sync;

    /// The mount's own view, where the config is stored.
    fn view(&self) -> &View;

    /// The config as Vault shows it when read (write-only secrets left out).
    fn show(c: &Self::Config) -> Map<String, Value>;

    /// `login`: checks the credential in the request and answers with a login.
    async fn login(&self, req: &Req<'_>) -> Result<Response>;

    /// A write to `config`: checks the fields and stores the config.
    async fn write_config(&self, req: &Req<'_>) -> Result<Response>;

    /// The stored config; `None` before one is written.
    async fn config(&self) -> Result<Option<Self::Config>> {
        record::load(self.view(), "config").await
    }
}

/// What a method says about its two own endpoints.
pub(crate) struct Endpoints {
    pub(crate) login: &'static str,
    pub(crate) login_fields: &'static [Field],
    pub(crate) config: &'static str,
    pub(crate) config_fields: &'static [Field],
}

/// The paths of a [`Configured`] method: `login` (no token needed), `config`, and its roles.
pub(crate) fn paths<B: Configured>(e: Endpoints) -> Paths<B> {
    let mut paths = vec![
        Path::new("login", e.login)
            .fields(e.login_fields)
            .unauthenticated()
            .write(|b: &B, r| b.login(r)),
        Path::new("config", e.config)
            .fields(e.config_fields)
            .read(|b: &B, _| {
                Box::pin(async move {
                    let c = b.config().await?.ok_or(Error::NotFound)?;
                    Ok(Response::data(B::show(&c)))
                })
            })
            .write(|b: &B, r| b.write_config(r))
            .exists(|b: &B, _| Box::pin(async move { Ok(Some(b.config().await?.is_some())) }))
            .warn_unknown(),
    ];
    paths.extend(role::role_paths("role", "role/{name}"));
    Paths::new(paths)
}
