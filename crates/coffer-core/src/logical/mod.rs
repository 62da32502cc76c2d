//! The logical request and response every layer above storage speaks. HTTP is mapped onto these
//! in exactly one place (the binary's `http` module), and back again. Here too: typed access to a
//! request's fields (`fields`) and what a login earns (`login`).

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::secret::SecretString;

pub mod event;
pub mod fields;
pub mod login;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Read,
    Update,
    Patch,
    Delete,
    List,
    /// `?help=1`: the path's documentation. Any live token may ask (no capability is needed, as
    /// in Vault); a path reachable without a token documents itself without one too.
    Help,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Read => "read",
            Operation::Update => "update",
            Operation::Patch => "patch",
            Operation::Delete => "delete",
            Operation::List => "list",
            Operation::Help => "help",
        }
    }

    /// Writes are decided between create and update by the engine's existence check.
    pub fn is_write(self) -> bool {
        matches!(self, Operation::Create | Operation::Update)
    }
}

/// One API request, after transport and before authentication. `Debug` shows the field names
/// of its data, never their values (written secrets, passwords, JWTs travel there).
pub struct Request {
    pub id: String,
    pub operation: Operation,
    /// Without leading `/` and without `v1/`, e.g. `secret/app/db`.
    pub path: String,
    pub data: Map<String, Value>,
    pub client_token: Option<SecretString>,
    pub remote_addr: Option<IpAddr>,
    /// The DER certificates the client presented on its TLS connection, leaf first; empty
    /// without one. The listener checked only that the client holds the leaf's key.
    pub client_cert_chain: Vec<Vec<u8>>,
    pub wrap_ttl: Option<Duration>,
    /// The client's key from `X-Coffer-Seal-To`: the answer's secret-bearing parts are sealed
    /// to it (see `crate::sealing`).
    pub seal_to: Option<coffer_hpke::Recipient>,
    /// Which of the endpoints that take unseal key shares instead of a token the listener the
    /// request came in on serves; the others answer as OpenBao's do then (405).
    pub unauthed: UnauthedEndpoints,
    /// The connection's memo of the last token presented on it (see
    /// [`crate::token::TokenMemo`]); `None` outside a client's connection.
    pub token_memo: Option<std::sync::Arc<crate::token::TokenMemo>>,
}

/// OpenBao's listener options `disable_unauthed_generate_root_endpoints` and
/// `disable_unauthed_rekey_endpoints`, turned the other way: `true` here is the option set to
/// `false`. Default: neither is served, as in OpenBao (anyone who can reach them can cancel an
/// operator's root generation or rekey).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnauthedEndpoints {
    /// `sys/generate-root/attempt` and `sys/generate-root/update`.
    pub generate_root: bool,
    /// `sys/rekey/init`, `sys/rekey/update` and `sys/rekey/verify`, and the same three below
    /// `sys/rekey-recovery-key/`.
    pub rekey: bool,
}

impl Request {
    pub fn new(operation: Operation, path: impl Into<String>) -> Self {
        Self::with_id(crate::random::uuid_v4(), operation, path)
    }

    /// A request whose id the transport already chose (one random id per request is enough).
    pub fn with_id(id: String, operation: Operation, path: impl Into<String>) -> Self {
        Self {
            id,
            operation,
            path: path.into(),
            data: Map::new(),
            client_token: None,
            remote_addr: None,
            client_cert_chain: Vec::new(),
            wrap_ttl: None,
            seal_to: None,
            unauthed: UnauthedEndpoints::default(),
            token_memo: None,
        }
    }

    pub fn with_data(mut self, data: Map<String, Value>) -> Self {
        self.data = data;
        self
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = Some(SecretString::new(token.into()));
        self
    }
}

/// The `auth` block of a login or token creation.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Auth {
    pub client_token: SecretString,
    pub accessor: String,
    pub policies: Vec<String>,
    pub token_policies: Vec<String>,
    pub metadata: Option<Map<String, Value>>,
    pub lease_duration: u64,
    pub renewable: bool,
    pub entity_id: String,
    pub token_type: String,
    pub orphan: bool,
    pub mfa_requirement: Option<Value>,
    pub num_uses: u64,
    /// The policies the token gets from its identity entity and groups (Vault's
    /// `identity_policies`, also in `policies`); `None` for a token without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_policies: Option<Vec<String>>,
}

/// What a handler answers. Most answers use Vault's envelope; a few `sys/` endpoints (health,
/// seal-status, init) answer a bare JSON object with their own status code, as Vault's do.
/// `Debug` shows the field names of `data` and `raw`, never their values (secrets read, the
/// unseal keys and root token of `sys/init`).
#[derive(Default)]
pub struct Response {
    pub data: Option<Map<String, Value>>,
    /// `data` already written out as one JSON object, for an answer that passes stored JSON
    /// through unchanged (a kv v2 read), so it is not built as a tree, written out and dropped
    /// on the way. Set instead of `data`, never beside it. Only the HTTP transport takes it as
    /// it is: the core turns it into `data` ([`Response::materialize`]) before anything else
    /// reads the answer (audit, wrapping, sealing, internal callers, [`Core::handle`]).
    ///
    /// [`Core::handle`]: crate::Core::handle
    pub data_json: Option<Box<RawValue>>,
    pub auth: Option<Auth>,
    pub lease_duration: u64,
    pub renewable: bool,
    pub lease_id: String,
    pub warnings: Vec<String>,
    pub raw: Option<(u16, Value)>,
    /// A body that is not JSON (a PEM or DER certificate, a CRL, an OCSP answer), sent as it
    /// is with its own content type: Vault's `http_raw_body`. Only for public data: it is
    /// neither sealed nor wrapped, and audit entries record its type and length, not its bytes.
    pub raw_body: Option<RawBody>,
    /// An envelope answered with another status than 200, as Vault's kv version 2 answers a
    /// read of a deleted version: 404 with the version's metadata in `data`.
    pub status: Option<u16>,
    /// An auth method's successful login; the core turns it into a token and fills `auth`.
    pub login: Option<login::Login>,
    /// Set when the answer was wrapped: the client gets only this.
    pub wrap_info: Option<WrapInfo>,
    /// A secret with a lifetime: the core registers a lease for it before the answer leaves,
    /// and fills `lease_id`, `lease_duration` and `renewable`.
    pub secret: Option<SecretLease>,
    /// Set when the answer was sealed to the client's key: `data`, `auth` and `wrap_info` (or a
    /// raw body) are inside, and the envelope carries only the lease fields beside it.
    pub sealed: Option<coffer_hpke::Sealed>,
    /// Changes the handler made, published to event subscribers by the core when the handler
    /// succeeded; never sent to the client.
    pub events: Vec<event::Event>,
    /// `sys/events/subscribe/...`: the subscription the transport serves over a WebSocket.
    pub subscription: Option<crate::events::Subscription>,
    /// The type of the mount that answered (`kv`, `token`, `system` for `sys/`), as Vault's
    /// envelope has it; filled by the core, not by handlers.
    pub mount_type: String,
}

/// The object a `json!({...})` literal builds (an empty one for anything else).
pub fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The keys of a JSON object (or the kind of a non-object value), for `Debug` output that must
/// not carry values.
struct KeysOnly<'a>(&'a Value);

impl fmt::Debug for KeysOnly<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Object(m) => f.debug_set().entries(m.keys()).finish(),
            Value::Null => f.write_str("null"),
            _ => f.write_str("<redacted>"),
        }
    }
}

fn keys_of(m: &Map<String, Value>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("id", &self.id)
            .field("operation", &self.operation)
            .field("path", &self.path)
            .field("data_keys", &keys_of(&self.data))
            .field("client_token", &self.client_token)
            .field("remote_addr", &self.remote_addr)
            .field("client_cert_chain_len", &self.client_cert_chain.len())
            .field("wrap_ttl", &self.wrap_ttl)
            .field("seal_to", &self.seal_to)
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("data_keys", &self.data.as_ref().map(keys_of))
            .field("data_json", &self.data_json.as_ref().map(|j| j.get().len()))
            .field("auth", &self.auth)
            .field("lease_duration", &self.lease_duration)
            .field("renewable", &self.renewable)
            .field("lease_id", &self.lease_id)
            .field("warnings", &self.warnings)
            .field("raw", &self.raw.as_ref().map(|(status, body)| (status, KeysOnly(body))))
            .field(
                "raw_body",
                &self.raw_body.as_ref().map(|b| (b.status, b.content_type, b.body.len())),
            )
            .field("login", &self.login)
            .field("wrap_info", &self.wrap_info)
            .field("secret", &self.secret)
            .field("sealed", &self.sealed.is_some())
            .field("events", &self.events)
            .field("subscription", &self.subscription)
            .finish()
    }
}

/// A non-JSON answer body (Vault's `http_raw_body`, `http_content_type`, `http_status_code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// What an engine says about a secret it just issued, for the expiration manager.
#[derive(Debug, Clone, Default)]
pub struct SecretLease {
    /// Seconds; 0: the mount's default lease TTL.
    pub ttl: u64,
    /// Seconds from issue beyond which no renewal goes; 0: the mount's maximum.
    pub max_ttl: u64,
    pub renewable: bool,
    /// Kept with the lease (in the barrier) and handed back at renewal and revocation; never
    /// sent to a client. E.g. the database user to drop.
    pub internal: Map<String, Value>,
    /// Secret values that are live exactly as long as the lease (a database user's password),
    /// for the liveness index: written with the lease, in its batch. Never stored in clear.
    pub live_values: Vec<crate::secret::SecretString>,
}

/// Vault's `wrap_info` block: where a wrapped response waits and for how long.
#[derive(Debug, Clone, Serialize)]
pub struct WrapInfo {
    pub token: SecretString,
    pub accessor: String,
    pub ttl: u64,
    pub creation_time: String,
    pub creation_path: String,
    /// The wrapped token's accessor; Vault leaves it out when no token was wrapped.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub wrapped_accessor: String,
}

impl Response {
    pub fn data(data: Map<String, Value>) -> Self {
        Self { data: Some(data), ..Self::default() }
    }

    /// An answer whose `data` is the JSON object `json` (see [`Response::data_json`]).
    pub fn data_json(json: Box<RawValue>) -> Self {
        Self { data_json: Some(json), ..Self::default() }
    }

    /// Turns [`Response::data_json`] into `data`, for a reader of the answer's fields.
    pub fn materialize(&mut self) -> Result<()> {
        if let Some(json) = self.data_json.take() {
            let data = serde_json::from_str(json.get()).map_err(|e| {
                // The position only: the answer may hold a secret.
                Error::Internal(format!("an answer's data does not decode (column {})", e.column()))
            })?;
            self.data = Some(data);
        }
        Ok(())
    }

    /// [`Response::materialize`] by value.
    pub fn materialized(mut self) -> Result<Self> {
        self.materialize()?;
        Ok(self)
    }

    pub fn from_value(v: Value) -> Self {
        match v {
            Value::Object(m) => Self::data(m),
            _ => Self::default(),
        }
    }

    pub fn raw(status: u16, body: Value) -> Self {
        Self { raw: Some((status, body)), ..Self::default() }
    }

    /// A non-JSON body with its content type, answered with status 200.
    pub fn raw_body(content_type: &'static str, body: Vec<u8>) -> Self {
        Self { raw_body: Some(RawBody { status: 200, content_type, body }), ..Self::default() }
    }

    pub fn list(keys: Vec<String>) -> Self {
        let mut m = Map::new();
        m.insert("keys".into(), Value::from(keys));
        Self::data(m)
    }

    /// A successful login, for the core to turn into a token.
    pub fn login(login: login::Login) -> Self {
        Self { login: Some(login), ..Self::default() }
    }

    pub fn empty() -> Self {
        Self::default()
    }

    /// This answer, with a change to publish once it is sent (see [`event::Event`]).
    pub fn with_event(mut self, event: event::Event) -> Self {
        self.events.push(event);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_none()
            && self.data_json.is_none()
            && self.auth.is_none()
            && self.login.is_none()
            && self.wrap_info.is_none()
            && self.secret.is_none()
            && self.lease_id.is_empty()
            && self.warnings.is_empty()
            && self.raw.is_none()
            && self.raw_body.is_none()
            && self.status.is_none()
            && self.sealed.is_none()
    }
}

/// The text of a Go `multierror` holding one error: Vault's core gathers some errors in one, and
/// its text is what Vault's clients see (and some match on).
pub fn multierror(msg: &str) -> String {
    format!("1 error occurred:\n\t* {msg}\n\n")
}

/// Logical errors; the HTTP layer maps each to a status code in one exhaustive match.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Vault is sealed")]
    Sealed,
    #[error("Vault is not initialized")]
    NotInitialized,
    /// HA: this node is unsealed but another one is active (Vault's `ErrStandby`).
    #[error("Vault is in standby mode")]
    Standby,
    #[error("permission denied")]
    PermissionDenied,
    /// A refused login whose reason belongs in the audit log and the server log, never in the
    /// answer: the client reads `permission denied` (403), as for [`Error::PermissionDenied`],
    /// so a caller probing what the server checks learns nothing from it. The reason must hold
    /// no credential.
    #[error("permission denied")]
    Refused(String),
    /// A 403 with Vault's own text for the case (`bad token` for a lookup of an unknown token).
    #[error("{0}")]
    Forbidden(String),
    /// A missing secret: Vault answers 404 with an empty error list.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("unsupported operation")]
    UnsupportedOperation,
    #[error("no handler for route {0:?}. route entry not found.")]
    UnsupportedPath(String),
    #[error("rate limit exceeded")]
    RateLimited,
    /// A stored record that fails to open (altered or moved in storage). Its storage path is
    /// named so an operator can find it; an authorized overwrite or delete repairs it.
    #[error(
        "stored record {0:?} is damaged and cannot be read: it was altered or moved in storage \
         (an overwrite or delete by an authorized caller replaces it)"
    )]
    Damaged(String),
    #[error("{0}")]
    Internal(String),
    /// A failed login attributed to the role it aimed at when the request named that role only
    /// indirectly (an AppRole `role_id`): answered exactly as `error`, so the answer does not
    /// tell whether the credential named a role; the pipeline takes it apart before answering,
    /// and only the audit entry and the detection rules see `role`.
    #[error("{error}")]
    LoginFailed { role: String, error: Box<Error> },
    /// An error answer a chaos fault injected: `status` is 500, 503 or 429.
    #[error("error injected by chaos fault {fault}")]
    Injected { status: u16, fault: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidRequest(msg.into())
    }
}

impl From<coffer_barrier::Error> for Error {
    fn from(e: coffer_barrier::Error) -> Self {
        use coffer_barrier::Error as B;
        match e {
            B::Sealed => Error::Sealed,
            B::NotInitialized => Error::NotInitialized,
            B::AlreadyInitialized => Error::invalid("Vault is already initialized"),
            B::InvalidSealConfig(m) => {
                Error::InvalidRequest(format!("invalid seal configuration: {m}"))
            }
            B::InvalidShare(m) => Error::InvalidRequest(format!("invalid key share: {m}")),
            B::WrongKey => Error::invalid(
                "unseal failed: the key shares do not combine to this server's unseal key",
            ),
            // A key the storage refuses (too long, say) is the caller's path: a 400.
            B::Storage(s) => Error::from(s),
            B::Corrupt(path) => Error::Damaged(path),
            B::Internal(_) => Error::Internal(e.to_string()),
        }
    }
}

impl From<coffer_storage::Error> for Error {
    fn from(e: coffer_storage::Error) -> Self {
        match e {
            coffer_storage::Error::InvalidKey(m) => {
                Error::InvalidRequest(format!("invalid path: {m}"))
            }
            coffer_storage::Error::Backend(_) => Error::Internal(e.to_string()),
            coffer_storage::Error::Fenced(_) => Error::Standby,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::token::TokenParams;

    const PLANTED: &str = "planted-SECRET-8e1f";

    /// Everything that carries a token, a password, a secret's value or a key share prints
    /// without it: a stray `{:?}` in a log line or an error cannot leak one.
    #[test]
    fn debug_output_of_secret_bearing_types_holds_no_secret() {
        let secret = || SecretString::new(PLANTED.to_owned());
        let auth = Auth { client_token: secret(), accessor: "acc".into(), ..Auth::default() };
        let wrap = WrapInfo {
            token: secret(),
            accessor: "acc".into(),
            ttl: 60,
            creation_time: String::new(),
            creation_path: "secret/x".into(),
            wrapped_accessor: String::new(),
        };
        let request = Request::new(Operation::Update, "secret/app")
            .with_data(into_map(json!({"password": PLANTED, "nested": {"k": PLANTED}})))
            .with_token(PLANTED);
        let response = Response {
            data: Some(into_map(json!({"password": PLANTED}))),
            auth: Some(auth.clone()),
            wrap_info: Some(wrap.clone()),
            raw: Some((200, json!({"keys": [PLANTED], "root_token": PLANTED}))),
            ..Response::default()
        };
        let params = TokenParams { id: Some(secret()), ..TokenParams::default() };
        for (what, shown) in [
            ("Auth", format!("{auth:?}")),
            ("WrapInfo", format!("{wrap:?}")),
            ("Request", format!("{request:?}")),
            ("Response", format!("{response:?}")),
            ("TokenParams", format!("{params:?}")),
            ("SecretString", format!("{:?}", secret())),
        ] {
            assert!(!shown.contains(PLANTED), "{what} printed a secret: {shown}");
        }
        // The field names are still there to debug with.
        assert!(format!("{response:?}").contains("password"));
        // And the wire form is what the client asked for: the token itself.
        assert_eq!(serde_json::to_value(&auth).expect("json")["client_token"], json!(PLANTED));
    }
}
