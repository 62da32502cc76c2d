//! Response wrapping: a response is put in the cubbyhole of a fresh single-use token, and the
//! client gets only that token (`wrap_info`). Whoever unwraps first gets the response; everybody
//! after gets an error, so a wrapping token that was intercepted and used is noticed by the
//! legitimate receiver when its own unwrap fails.
//!
//! Guarantees: a wrapped response is stored only behind the barrier, in the wrapping token's
//! cubbyhole, which is destroyed with the token; the wrapping token has one use, which is taken
//! atomically, so of any number of racing unwraps exactly one succeeds; wrapping tokens carry the
//! reserved `response-wrapping` policy, which no other token can be given. A request that also
//! names a key in `X-Coffer-Seal-To` has the response sealed to that key before it is stored, so
//! the store (and whoever unwraps) holds only the sealed form; it is bound to `sys/wrapping/unwrap`
//! and the wrapping token, and so cannot be rewrapped (the new token would not open it).

use coffer_hpke::{Binding, Recipient, Sealed, UNWRAP_PATH};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::logical::fields::Fields;
use crate::logical::{Auth, Error, Response, Result, WrapInfo};
use crate::secret::SecretString;
use crate::time::rfc3339;
use crate::token::{TokenEntry, TokenParams, TokenStore, Use};

/// The reserved policy of wrapping tokens (Vault's name).
pub const WRAPPING_POLICY: &str = "response-wrapping";

/// What a wrapping token may do: read its response and unwrap, as in Vault.
pub(crate) const WRAPPING_POLICY_HCL: &str = r#"
path "cubbyhole/response" {
  capabilities = ["create", "read"]
}

path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}
"#;

/// Vault's error for a wrapping token that was used, expired, revoked or never existed.
pub const INVALID_WRAPPING_TOKEN: &str = "wrapping token is not valid or does not exist";

/// Applies when `sys/wrapping/wrap` is called without a wrap TTL.
const DEFAULT_WRAP_TTL: u64 = 300;

/// The cubbyhole key of the wrapped response.
const RESPONSE_KEY: &str = "response";

/// A response as it waits in a cubbyhole.
#[derive(Serialize, Deserialize)]
struct Stored {
    data: Option<Map<String, Value>>,
    auth: Option<Auth>,
    lease_id: String,
    lease_duration: u64,
    renewable: bool,
    warnings: Vec<String>,
    /// Version 2: `data` and `auth`, sealed to the key the wrapping request named (both `None`
    /// beside it).
    #[serde(default)]
    sealed: Option<Sealed>,
}

// 2 added `sealed`: a version-1 build would read a sealed response as an empty one.
crate::record!(Stored, "wrapped response", 2);

impl Stored {
    /// `data` and `auth` sealed to `to`, for whoever unwraps with `wrapping_token`.
    fn seal(mut self, to: &Recipient, wrapping_token: &str) -> Result<Self> {
        let mut members = Map::new();
        if let Some(d) = self.data.take() {
            members.insert("data".into(), Value::Object(d));
        }
        if let Some(a) = self.auth.take() {
            members.insert("auth".into(), crate::sealing::to_value(&a)?);
        }
        let binding = Binding::new(UNWRAP_PATH, Some(wrapping_token));
        self.sealed = Some(crate::sealing::seal_members(to, &binding, &members)?);
        Ok(self)
    }
}

pub(crate) fn is_wrapping_token(e: &TokenEntry) -> bool {
    e.policies.len() == 1 && e.policies[0] == WRAPPING_POLICY
}

/// Whether a response has anything to wrap (a bare status answer or a 204 does not).
pub(crate) fn wrappable(resp: &Response) -> bool {
    resp.raw.is_none()
        && resp.wrap_info.is_none()
        && (resp.data.is_some() || resp.data_json.is_some() || resp.auth.is_some())
}

/// Stores `resp` in a new wrapping token's cubbyhole (sealed to `seal_to` when the request named
/// a key) and answers with only its `wrap_info`.
pub(crate) async fn wrap(
    tokens: &TokenStore,
    resp: Response,
    ttl: u64,
    creation_path: &str,
    seal_to: Option<&Recipient>,
) -> Result<Response> {
    let resp = resp.materialized()?;
    let wrapped_accessor = resp.auth.as_ref().map(|a| a.accessor.clone()).unwrap_or_default();
    let stored = Stored {
        data: resp.data,
        auth: resp.auth,
        lease_id: resp.lease_id,
        lease_duration: resp.lease_duration,
        renewable: resp.renewable,
        warnings: resp.warnings,
        sealed: resp.sealed,
    };
    store(tokens, stored, ttl, creation_path, wrapped_accessor, seal_to).await
}

async fn store(
    tokens: &TokenStore,
    stored: Stored,
    ttl: u64,
    creation_path: &str,
    wrapped_accessor: String,
    seal_to: Option<&Recipient>,
) -> Result<Response> {
    let params = TokenParams {
        policies: vec![WRAPPING_POLICY.to_owned()],
        display_name: WRAPPING_POLICY.to_owned(),
        num_uses: 1,
        ttl,
        renewable: false,
        orphan: true,
        path: creation_path.to_owned(),
        wrapping: true,
        ..TokenParams::default()
    };
    let (token, entry) = tokens.create(None, params).await?;
    if let Err(e) = put_response(tokens, &entry.id, stored, seal_to, token.expose()).await {
        // A wrapping token with nothing behind it must not be handed out.
        tokens.revoke_tree(&entry.id).await?;
        return Err(e);
    }
    Ok(Response {
        wrap_info: Some(WrapInfo {
            token: token.clone(),
            accessor: entry.accessor.clone(),
            ttl,
            creation_time: rfc3339(entry.creation_time),
            creation_path: creation_path.to_owned(),
            wrapped_accessor,
        }),
        ..Response::default()
    })
}

/// Puts the response in the wrapping token's cubbyhole, sealed first when the request named a key
/// (and it is not sealed already).
async fn put_response(
    tokens: &TokenStore,
    token_id: &str,
    stored: Stored,
    seal_to: Option<&Recipient>,
    wrapping_token: &str,
) -> Result<()> {
    let stored = match seal_to {
        Some(to) if stored.sealed.is_none() => stored.seal(to, wrapping_token)?,
        _ => stored,
    };
    let raw = crate::record::encode(&stored)?;
    tokens.cubbyhole_of(token_id)?.put(RESPONSE_KEY, &raw).await?;
    Ok(())
}

/// The wrapping token a `sys/wrapping/*` call is about: the `token` field, or else the token
/// the request was made with. `caller` is the authenticated caller, when there is one.
struct Target {
    entry: TokenEntry,
    /// The request was made with the wrapping token itself, whose use the pipeline has taken.
    is_caller: bool,
}

async fn target(
    tokens: &TokenStore,
    data: &Map<String, Value>,
    header_token: Option<&SecretString>,
    caller: Option<&TokenEntry>,
) -> Result<Target> {
    let invalid = || Error::invalid(INVALID_WRAPPING_TOKEN);
    let f = Fields::new(data);
    if let Some(t) = f.str("token")?.filter(|t| !t.is_empty()) {
        let entry = tokens.lookup(&t).await?.ok_or_else(invalid)?;
        return if is_wrapping_token(&entry) {
            Ok(Target { entry, is_caller: false })
        } else {
            Err(invalid())
        };
    }
    if let Some(c) = caller {
        return if is_wrapping_token(c) {
            Ok(Target { entry: c.clone(), is_caller: true })
        } else {
            Err(Error::invalid(
                "no wrapping token given: set \"token\" or use it as the request's token",
            ))
        };
    }
    // Unauthenticated lookups name the token in the header.
    let t = header_token.filter(|t| !t.expose().is_empty()).ok_or_else(|| {
        Error::invalid("no wrapping token given: set \"token\" or use it as the request's token")
    })?;
    let entry = tokens.lookup(t.expose()).await?.ok_or_else(invalid)?;
    if is_wrapping_token(&entry) { Ok(Target { entry, is_caller: false }) } else { Err(invalid()) }
}

/// Takes the wrapping token's single use and reads its response; the token is revoked before
/// this returns (or, when it made the request, by the pipeline right after).
async fn consume(tokens: &TokenStore, t: Target) -> Result<Stored> {
    let mut entry = t.entry;
    if !t.is_caller && tokens.use_token(&mut entry).await? != Use::Last {
        return Err(Error::invalid(INVALID_WRAPPING_TOKEN));
    }
    let cubby = tokens.cubbyhole_of(&entry.id)?;
    let raw = cubby.get(RESPONSE_KEY).await;
    if !t.is_caller {
        tokens.revoke_tree(&entry.id).await?;
    }
    let raw = raw?.ok_or_else(|| Error::invalid(INVALID_WRAPPING_TOKEN))?;
    crate::record::decode(&raw)
}

/// `sys/wrapping/unwrap`.
pub(crate) async fn unwrap(
    tokens: &TokenStore,
    data: &Map<String, Value>,
    caller: Option<&TokenEntry>,
) -> Result<Response> {
    let t = target(tokens, data, None, caller).await?;
    let s = consume(tokens, t).await?;
    Ok(Response {
        data: s.data,
        auth: s.auth,
        lease_id: s.lease_id,
        lease_duration: s.lease_duration,
        renewable: s.renewable,
        warnings: s.warnings,
        sealed: s.sealed,
        ..Response::default()
    })
}

/// `sys/wrapping/lookup`: what a wrapping token is, without using it.
pub(crate) async fn lookup(
    tokens: &TokenStore,
    data: &Map<String, Value>,
    header_token: Option<&SecretString>,
    caller: Option<&TokenEntry>,
) -> Result<Response> {
    let t = target(tokens, data, header_token, caller).await?;
    let e = t.entry;
    let mut m = Map::new();
    m.insert("creation_path".into(), Value::from(e.path.clone()));
    m.insert("creation_time".into(), Value::from(rfc3339(e.creation_time)));
    m.insert("creation_ttl".into(), Value::from(e.creation_ttl));
    Ok(Response::data(m))
}

/// `sys/wrapping/rewrap`: the same response behind a new wrapping token, with the old TTL.
pub(crate) async fn rewrap(
    tokens: &TokenStore,
    data: &Map<String, Value>,
    caller: Option<&TokenEntry>,
) -> Result<Response> {
    let t = target(tokens, data, None, caller).await?;
    // Checked before the single use is taken: a refused rewrap leaves the response unwrappable.
    let peek = tokens.cubbyhole_of(&t.entry.id)?.get(RESPONSE_KEY).await?;
    if let Some(raw) = peek
        && crate::record::decode::<Stored>(&raw)?.sealed.is_some()
    {
        return Err(Error::invalid(
            "this wrapped response is sealed to a client's key and bound to its wrapping token, \
             so it cannot be rewrapped; unwrap it instead",
        ));
    }
    let path = t.entry.path.clone();
    let ttl = t.entry.creation_ttl;
    let s = consume(tokens, t).await?;
    let accessor = s.auth.as_ref().map(|a| a.accessor.clone()).unwrap_or_default();
    store(tokens, s, ttl, &path, accessor, None).await
}

/// `sys/wrapping/wrap`: wraps the request's own data (sealed to `seal_to` when the request named
/// a key).
pub(crate) async fn wrap_data(
    tokens: &TokenStore,
    data: &Map<String, Value>,
    wrap_ttl: Option<u64>,
    seal_to: Option<&Recipient>,
) -> Result<Response> {
    // Vault wraps an empty request too: the wrapping token is then proof of nothing but itself.
    let ttl = wrap_ttl.unwrap_or(DEFAULT_WRAP_TTL);
    wrap(tokens, Response::data(data.clone()), ttl, "sys/wrapping/wrap", seal_to).await
}

/// The wrap TTL a request asks for, checked against the bounds its policies set.
pub(crate) fn check_ttl(requested: Option<u64>, bounds: (Option<u64>, Option<u64>)) -> Result<()> {
    let (min, max) = bounds;
    match requested {
        None if min.is_some() => {
            Err(Error::invalid("this path requires response wrapping (min_wrapping_ttl is set)"))
        }
        Some(t) if min.is_some_and(|m| t < m) => {
            Err(Error::invalid("wrapping TTL is lower than the specified minimum"))
        }
        Some(t) if max.is_some_and(|m| t > m) => {
            Err(Error::invalid("wrapping TTL exceeds the specified maximum"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_ttl_bounds() {
        assert!(check_ttl(None, (None, None)).is_ok());
        assert!(check_ttl(Some(60), (Some(30), Some(120))).is_ok());
        assert!(check_ttl(None, (Some(30), None)).is_err());
        assert!(check_ttl(Some(10), (Some(30), None)).is_err());
        assert!(check_ttl(Some(600), (None, Some(300))).is_err());
    }
}
