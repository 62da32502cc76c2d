//! `roles/:name` and `creds/:name`: dynamic roles, and the leased database users they issue;
//! with the lease's renewal and revocation.
//!
//! Guarantees: a creds request either creates the user (all creation statements committed in
//! one transaction) and answers it with a lease, or creates nothing and answers an error
//! naming the problem; the lease's internal data (never shown to clients) names the user, the
//! role, the config and the revocation statements, so revocation still works after the role
//! is deleted; revocation of a user that no longer exists succeeds.
//! Not guaranteed: that a custom revocation statement list removes everything the creation
//! statements granted; that is the role author's contract, as in Vault.

use coffer_core::framework::{Default, Field, Req};
use coffer_core::record;
use coffer_core::{Error, Fields, LeaseRequest, Response, Result, SecretLease};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::postgres::DEFAULT_RENEW;
use super::template::{Vars, expiration, lease_ttls, safe_username};
use super::username::Meta;
use super::{Database, check_name, into_map, statements};
use coffer_core::time::now_unix;

/// Vault adds this to the lease TTL for `{{expiration}}`, so the database never expires a
/// user before its lease does.
const EXPIRATION_GRACE: u64 = 5;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Role {
    pub(crate) db_name: String,
    pub(crate) creation_statements: Vec<String>,
    pub(crate) revocation_statements: Vec<String>,
    pub(crate) rollback_statements: Vec<String>,
    pub(crate) renew_statements: Vec<String>,
    pub(crate) default_ttl: u64,
    pub(crate) max_ttl: u64,
    pub(crate) credential_type: String,
}

coffer_core::record!(Role, "database role", 1);

pub(crate) const FIELDS: &[Field] = &[
    Field::str("db_name", "The database config the role's users are created in."),
    Field::str_list(
        "creation_statements",
        "SQL that creates a user (`{{name}}`, `{{password}}`, `{{expiration}}`).",
    ),
    Field::str_list("revocation_statements", "SQL that drops a user; empty: Coffer's default."),
    Field::str_list("rollback_statements", "SQL run when creation fails part-way."),
    Field::str_list("renew_statements", "SQL run when a lease is renewed."),
    Field::duration("default_ttl", "The credentials' lease TTL; 0: the mount's default."),
    Field::duration("max_ttl", "The credentials' longest lifetime; 0: the mount's maximum."),
    Field::str("credential_type", "Only `password`.").default(Default::Str("password")),
    Field::map("credential_config", "Not supported: set password_policy on the config."),
];

pub(crate) fn check_credential_type(t: &str) -> Result<()> {
    if t == "password" {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid credential_type {t:?}: Coffer supports only \"password\""
        )))
    }
}

/// The credential fields of a role or static role write: `credential_type` (only `password`)
/// into `slot`, and `credential_config` refused (generated passwords follow the config's policy).
pub(crate) fn apply_credential_fields(f: &Fields<'_>, slot: &mut String) -> Result<()> {
    if let Some(t) = f.str("credential_type")? {
        check_credential_type(&t)?;
        *slot = t;
    }
    if f.has("credential_config") {
        return Err(Error::invalid(
            "credential_config is not supported: set password_policy on the config instead",
        ));
    }
    Ok(())
}

/// The role a creds request names, or the 400 Vault answers for an unknown one.
pub(crate) fn known<T>(role: Option<T>, name: &str) -> Result<T> {
    role.ok_or_else(|| Error::invalid(format!("unknown role: {name}")))
}

fn internal_str<'a>(lease: &'a LeaseRequest<'_>, k: &str) -> Result<&'a str> {
    lease
        .internal
        .get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Internal(format!("database lease {} has no {k}", lease.lease_id)))
}

impl Database {
    pub(crate) async fn role(&self, name: &str) -> Result<Option<Role>> {
        record::load(&self.view, &format!("role/{name}")).await
    }

    pub(crate) async fn write_role(&self, req: &Req<'_>) -> Result<Response> {
        let name = req.capture("name");
        check_name("role", name)?;
        let f = req.fields();
        let _g = self.lock.lock().await;
        if self.view.get(&format!("static-role/{name}")).await?.is_some() {
            return Err(Error::invalid("Role and Static Role names must be unique"));
        }
        let mut r = self
            .role(name)
            .await?
            .unwrap_or_else(|| Role { credential_type: "password".into(), ..Role::default() });
        if let Some(d) = f.str("db_name")? {
            r.db_name = d;
        }
        if r.db_name.is_empty() {
            return Err(Error::invalid("database name is required"));
        }
        self.must_config(&r.db_name).await?;
        apply_credential_fields(&f, &mut r.credential_type)?;
        for (k, slot) in [
            ("creation_statements", &mut r.creation_statements),
            ("revocation_statements", &mut r.revocation_statements),
            ("rollback_statements", &mut r.rollback_statements),
            ("renew_statements", &mut r.renew_statements),
        ] {
            if let Some(s) = statements(req.data, k)? {
                *slot = s;
            }
        }
        if r.creation_statements.is_empty() {
            return Err(Error::invalid("creation_statements are required"));
        }
        if let Some(t) = f.secs("default_ttl")? {
            r.default_ttl = t;
        }
        if let Some(t) = f.secs("max_ttl")? {
            r.max_ttl = t;
        }
        if r.max_ttl > 0 && r.default_ttl > r.max_ttl {
            return Err(Error::invalid("default_ttl cannot be greater than max_ttl"));
        }
        self.view.put(&format!("role/{name}"), &record::encode(&r)?).await?;
        Ok(Response::empty())
    }

    pub(crate) async fn read_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let r = self.role(name).await?.ok_or(Error::NotFound)?;
        Ok(Response::data(into_map(json!({
            "db_name": r.db_name,
            "creation_statements": r.creation_statements,
            "revocation_statements": r.revocation_statements,
            "rollback_statements": r.rollback_statements,
            "renew_statements": r.renew_statements,
            "default_ttl": r.default_ttl,
            "max_ttl": r.max_ttl,
            "credential_type": r.credential_type,
        }))))
    }

    pub(crate) async fn delete_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _g = self.lock.lock().await;
        self.view.delete(&format!("role/{name}")).await?;
        Ok(Response::empty())
    }

    pub(crate) async fn creds(&self, req: &Req<'_>) -> Result<Response> {
        let name = req.capture("name");
        let role = known(self.role(name).await?, name)?;
        let cfg = self.config_for_role(&role.db_name, name).await?;
        check_credential_type(&role.credential_type)?;
        let (ttl, max_ttl) = lease_ttls(
            role.default_ttl,
            role.max_ttl,
            req.mount.default_lease_ttl.as_secs(),
            req.mount.max_lease_ttl.as_secs(),
        );
        let expires = expiration(now_unix() + ttl + EXPIRATION_GRACE);
        let display = req.caller.map(|c| c.display_name.as_str()).unwrap_or_default();
        let username = safe_username(
            &cfg.template()?.render(&Meta { display_name: display, role_name: name })?,
        )?;
        let password = self.passwords.generate(&cfg.password_policy).await?;
        let conn = self.conn(&role.db_name).await?;
        let in_statements = cfg.statement_password(password.expose()).await?;
        let vars =
            Vars { name: &username, password: Some(&in_statements), expiration: Some(&expires) };
        if let Err(e) =
            conn.run_tx("creation statements failed", &role.creation_statements, &vars).await
        {
            if !role.rollback_statements.is_empty() {
                let failed = conn.run_each(&role.rollback_statements, &vars).await.unwrap_or(0);
                if failed > 0 {
                    tracing::warn!(
                        role = name,
                        failed,
                        "database engine: rollback statements failed"
                    );
                }
            }
            return Err(e);
        }
        tracing::info!(role = name, db = role.db_name, username, "database engine: user created");
        let internal = into_map(json!({
            "username": username,
            "role": name,
            "db_name": role.db_name,
            "revocation_statements": role.revocation_statements,
        }));
        Ok(Response {
            data: Some(into_map(json!({ "username": username, "password": password.expose() }))),
            secret: Some(SecretLease {
                ttl,
                max_ttl,
                renewable: true,
                internal,
                live_values: vec![password.clone()],
            }),
            ..Response::default()
        })
    }

    pub(crate) async fn renew_creds(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        let username = internal_str(lease, "username")?;
        let role_name = internal_str(lease, "role")?;
        let db_name = internal_str(lease, "db_name")?;
        let role = self.role(role_name).await?.ok_or_else(|| {
            Error::invalid(format!(
                "error during renew: could not find role with name {role_name:?}"
            ))
        })?;
        let stmts = if role.renew_statements.is_empty() {
            vec![DEFAULT_RENEW.to_owned()]
        } else {
            role.renew_statements
        };
        let expires = expiration(lease.expire_time + EXPIRATION_GRACE);
        let conn = self.conn(db_name).await?;
        conn.run_tx(
            "renew statements failed",
            &stmts,
            &Vars { name: username, password: None, expiration: Some(&expires) },
        )
        .await
    }

    pub(crate) async fn revoke_creds(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        let username = internal_str(lease, "username")?;
        let db_name = internal_str(lease, "db_name")?;
        let mut stmts: Vec<String> = match lease.internal.get("revocation_statements") {
            Some(Value::Array(a)) => {
                a.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        if stmts.is_empty()
            && let Ok(role_name) = internal_str(lease, "role")
            && let Some(r) = self.role(role_name).await?
        {
            stmts = r.revocation_statements;
        }
        let conn = self.conn(db_name).await?;
        if stmts.is_empty() {
            conn.drop_user(username).await?;
        } else if conn.role_exists(username).await? {
            conn.run_tx(
                "revocation statements failed",
                &stmts,
                &Vars { name: username, password: None, expiration: None },
            )
            .await?;
        }
        tracing::info!(db = db_name, username, "database engine: user revoked");
        Ok(())
    }
}
