//! Userpass auth method (Vault's `userpass`): a username and a password exchange for a token.
//!
//! Guarantees: a password is stored only as an Argon2id hash (RustCrypto's `argon2`; 19 MiB,
//! 2 passes, 1 lane: OWASP's baseline) with a random 16-byte salt, inside the mount's own
//! barrier view, and is never shown, logged or returned; hashing runs off the async runtime; a
//! login compares hashes in constant time, and a login for an unknown user hashes the password
//! against a dummy hash too, so the answer's timing does not tell which users exist; every
//! credential failure answers the same 400 `invalid username or password`. Logins share the
//! server's login rate limit with every other auth method (the core applies it to every auth
//! method's unauthenticated paths). Not here: Vault's `password_hash` (a bcrypt hash given
//! instead of a password; refused with a 400). A login's identity alias is the username.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use argon2::{Algorithm, Argon2, Params, Version};
use coffer_core::cidr::Cidr;
use coffer_core::framework::{Field, Framework, Path, Paths, Req, handler};
use coffer_core::hex::{hex, unhex};
use coffer_core::logical::fields::Fields;
use coffer_core::{BackendConfig, Error, LogicalBackend, Response, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::role::{self, RoleRecord, Roles};

const BAD_CREDENTIALS: &str = "invalid username or password";
const M_COST: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;
const HASH_LEN: usize = 32;
const SALT_LEN: usize = 16;

pub(crate) struct Userpass {
    users: Roles<User>,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    Ok(Arc::new(Userpass { users: Roles::new(cfg.view, "user/") }))
}

/// A password's Argon2id hash with its parameters, as stored.
#[derive(Clone, Serialize, Deserialize)]
struct PasswordHash {
    algorithm: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    hash: String,
}

/// No `Debug` of the hash and salt: they let an attacker test guesses offline.
impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(redacted)")
    }
}

fn argon2(m: u32, t: u32, p: u32) -> Result<Argon2<'static>> {
    let params = Params::new(m, t, p, Some(HASH_LEN))
        .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn derive(password: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<Vec<u8>>> {
    let mut out = Zeroizing::new(vec![0u8; HASH_LEN]);
    argon2(m, t, p)?
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| Error::Internal(format!("argon2: {e}")))?;
    Ok(out)
}

impl PasswordHash {
    fn new(password: &[u8]) -> Result<Self> {
        let salt = coffer_core::random::random_bytes::<SALT_LEN>();
        let hash = derive(password, &salt, M_COST, T_COST, P_COST)?;
        Ok(Self {
            algorithm: "argon2id".into(),
            m_cost: M_COST,
            t_cost: T_COST,
            p_cost: P_COST,
            salt: hex(&salt),
            hash: hex(&hash),
        })
    }

    /// Whether `password` hashes to this, compared in constant time.
    fn verify(&self, password: &[u8]) -> Result<bool> {
        let (Some(salt), Some(want)) = (unhex(&self.salt), unhex(&self.hash)) else {
            return Err(Error::Internal("a stored password hash does not decode".into()));
        };
        if self.algorithm != "argon2id" {
            return Err(Error::Internal(format!("unknown password hash {:?}", self.algorithm)));
        }
        let got = derive(password, &salt, self.m_cost, self.t_cost, self.p_cost)?;
        Ok(coffer_core::secret::ct_eq(&got, &want))
    }
}

/// Hashing takes tens of milliseconds of CPU: off the async runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("password hashing task: {e}")))?
}

/// A hash of nothing anyone knows, for the logins of users that do not exist.
static DUMMY: LazyLock<Option<PasswordHash>> =
    LazyLock::new(|| PasswordHash::new(&coffer_core::random::random_bytes::<32>()).ok());

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct User {
    password: Option<PasswordHash>,
}

const USER_FIELDS: &[Field] = &[
    Field::str("username", "The user's name (lower-cased)."),
    Field::str("password", "The user's password; required at creation."),
    Field::str("password_hash", "Not supported: Coffer hashes passwords itself (Argon2id)."),
];

impl role::Role for User {
    const KIND: &'static str = "userpass user";
    const FIELDS: &'static [Field] = USER_FIELDS;

    fn fresh() -> Self {
        User::default()
    }

    /// Checks the password fields; the handler hashes the password off the runtime.
    fn apply(&mut self, f: &Fields<'_>, creating: bool) -> Result<()> {
        if f.str("password_hash")?.is_some_and(|h| !h.is_empty()) {
            return Err(Error::invalid(
                "password_hash is not supported: Coffer hashes passwords itself (Argon2id); \
                 give password",
            ));
        }
        if creating && f.str("password")?.is_none_or(|p| p.is_empty()) {
            return Err(Error::invalid("must provide either password or password_hash"));
        }
        Ok(())
    }

    /// Vault shows no password field when a user is read.
    fn own_json(&self) -> Map<String, Value> {
        Map::new()
    }
}

// The handler names a missing password with Vault's message.
const LOGIN_FIELDS: &[Field] =
    &[Field::str("username", "The user's name."), Field::str("password", "The user's password.")];
const PASSWORD_FIELDS: &[Field] = &[
    Field::str("username", "The user's name."),
    Field::str("password", "The new password.").required(),
    Field::str("password_hash", "Not supported."),
];
const POLICIES_FIELDS: &[Field] = &[
    Field::str("username", "The user's name."),
    Field::comma_list("token_policies", "The policies of the user's tokens."),
    Field::comma_list("policies", "Legacy name of token_policies."),
];

fn username(r: &Req<'_>) -> String {
    r.capture("username").to_lowercase()
}

static PATHS: LazyLock<Paths<Userpass>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("login/{username}", "Log in with a username and a password.")
            .fields(LOGIN_FIELDS)
            .unauthenticated()
            .write(handler!(Userpass::login)),
        Path::new("users", "The users, by name.").list(handler!(Userpass::list)),
        Path::new("users/{username}", "A user: its password and its tokens' settings.")
            .fields(USER_FIELDS)
            .fields(role::TOKEN_FIELDS)
            .read(handler!(Userpass::read))
            .write(handler!(Userpass::write))
            .delete(handler!(Userpass::delete))
            .exists(handler!(Userpass::exists))
            .warn_unknown(),
        Path::new("users/{username}/password", "Change a user's password.")
            .fields(PASSWORD_FIELDS)
            .write(handler!(Userpass::set_password)),
        Path::new("users/{username}/policies", "Change a user's token policies.")
            .fields(POLICIES_FIELDS)
            .write(handler!(Userpass::set_policies)),
    ])
});

impl Userpass {
    async fn list(&self, _r: &Req<'_>) -> Result<Response> {
        self.users.list().await
    }

    async fn read(&self, r: &Req<'_>) -> Result<Response> {
        self.users.read(&username(r)).await
    }

    async fn delete(&self, r: &Req<'_>) -> Result<Response> {
        self.users.delete(&username(r)).await
    }

    async fn exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(self.users.get(&username(r)).await?.is_some()))
    }

    /// Hashes `password` when one is given (and not empty) in the write.
    async fn hash_of(f: &Fields<'_>) -> Result<Option<PasswordHash>> {
        match f.str("password")? {
            Some(p) if !p.is_empty() => {
                let p = Zeroizing::new(p.into_bytes());
                Ok(Some(blocking(move || PasswordHash::new(&p)).await?))
            }
            _ => Ok(None),
        }
    }

    async fn write(&self, r: &Req<'_>) -> Result<Response> {
        let name = username(r);
        let f = Fields::new(r.data);
        let existing = self.users.get(&name).await?;
        let creating = existing.is_none();
        let mut user: RoleRecord<User> = existing.unwrap_or_else(RoleRecord::fresh);
        user.update(&f, creating)?;
        if let Some(h) = Self::hash_of(&f).await? {
            user.password = Some(h);
        }
        self.users.put(&name, &user).await?;
        Ok(Response::empty())
    }

    async fn set_password(&self, r: &Req<'_>) -> Result<Response> {
        let name = username(r);
        let f = Fields::new(r.data);
        let mut user = self
            .users
            .get(&name)
            .await?
            .ok_or_else(|| Error::invalid("username does not exist"))?;
        role::Role::apply(&mut user.role, &f, true)?;
        user.password = Self::hash_of(&f).await?;
        self.users.put(&name, &user).await?;
        Ok(Response::empty())
    }

    async fn set_policies(&self, r: &Req<'_>) -> Result<Response> {
        let name = username(r);
        let mut user = self
            .users
            .get(&name)
            .await?
            .ok_or_else(|| Error::invalid("username does not exist"))?;
        let mut only = Map::new();
        for k in ["token_policies", "policies"] {
            if let Some(v) = r.data.get(k) {
                only.insert(k.into(), v.clone());
            }
        }
        user.token.update(&Fields::new(&only))?;
        self.users.put(&name, &user).await?;
        Ok(Response::empty())
    }

    async fn login(&self, r: &Req<'_>) -> Result<Response> {
        let name = username(r);
        let f = Fields::new(r.data);
        let password = match f.str("password")? {
            Some(p) if !p.is_empty() => Zeroizing::new(p.into_bytes()),
            _ => return Err(Error::invalid("missing password")),
        };
        let user = self.users.get(&name).await?;
        let hash = match user.as_ref().and_then(|u| u.password.clone()) {
            Some(h) => h,
            None => DUMMY.clone().ok_or_else(|| Error::Internal("no dummy hash".into()))?,
        };
        let matched = blocking(move || hash.verify(&password)).await?;
        let user = match user {
            Some(u) if matched && u.password.is_some() => u,
            _ => return Err(Error::invalid(BAD_CREDENTIALS)),
        };
        // Vault refuses a login from outside the user's token CIDRs with a 403.
        if !Cidr::any_contains(&user.token.token_bound_cidrs, r.remote_addr) {
            return Err(Error::PermissionDenied);
        }
        let metadata = BTreeMap::from([("username".to_owned(), name.clone())]);
        // Vault's alias: the username, with no metadata of its own.
        let alias = coffer_core::LoginAlias::new(name.clone(), BTreeMap::new());
        let mut login = user.token.login(name, metadata);
        login.alias = Some(alias);
        Ok(Response::login(login))
    }
}

impl Framework for Userpass {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_shows_nothing() {
        let h = PasswordHash::new(b"correct horse").expect("hash");
        assert!(h.verify(b"correct horse").expect("verify"));
        assert!(!h.verify(b"correct horsf").expect("verify"));
        assert!(!h.hash.contains("correct") && format!("{h:?}") == "PasswordHash(redacted)");
        let again = PasswordHash::new(b"correct horse").expect("hash");
        assert_ne!(h.salt, again.salt, "a fresh salt each time");
        assert_ne!(h.hash, again.hash);
    }
}
