//! Coffer's HTTP API from the client side: Vault's wire envelope and a small typed client used by
//! the CLI, the agent and the tests, and Vault's event subscription over a WebSocket (`events`).
//! Trust is explicit: a CA file, or the platform store when none is given; never "accept any
//! certificate". With a [`SealKey`], every request asks for its answer sealed to that key
//! (`X-Coffer-Seal-To`) and every answer is opened before it is returned; one that comes back in
//! clear with something to hide is an error.

/// The wire types of server-side chaos faults (they live in `coffer-wire`, shared with the server).
pub use coffer_wire::chaos;
/// A string that must not leak (what [`token_format::mint`] returns).
pub use coffer_wire::secret::SecretString;
/// Coffer's credential formats (prefix and checksum), for minting and for scanners.
pub use coffer_wire::token_format;
mod delivery;
pub mod dhutil;
pub mod events;
mod seal;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use delivery::{AgentIdentity, DELIVERY_PATH, Delivery, DeliveryEvent};
pub use seal::{Binding, SEAL_TO_HEADER, SealError, SealKey, Sealed, UNWRAP_PATH};

/// Vault's response envelope: the one definition, which the server serializes its answers
/// through and clients read them with.
///
/// `auth` and `wrap_info` are free JSON for a client; the server fills them with its own typed
/// blocks, so this crate needs no server types. Fields are declared in alphabetical order: the
/// order Coffer's answers have always had on the wire (the order of a `serde_json` map), so
/// serializing this struct sends the same bytes. Every field is always sent, `null` when empty.
/// `data` is a JSON object: a map for a client; the server may write one it holds as JSON
/// already (`D` = `Box<serde_json::value::RawValue>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Envelope<A = Value, W = Value, D = Map<String, Value>> {
    #[serde(default)]
    pub auth: Option<A>,
    #[serde(default)]
    pub data: Option<D>,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default)]
    pub lease_id: String,
    /// Always `""` from Coffer; Vault names the mount's type here.
    #[serde(default)]
    pub mount_type: String,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub request_id: String,
    /// Coffer only, and only when the request named a key in `X-Coffer-Seal-To`: `data`, `auth`
    /// and `wrap_info`, sealed to it (`null` beside it). Absent otherwise, so the bytes of an
    /// unsealed answer are Vault's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<coffer_hpke::Sealed>,
    /// `null` rather than `[]` when there are none, as Vault sends it.
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
    #[serde(default)]
    pub wrap_info: Option<W>,
}

/// Vault's error body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    pub errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Coffer server at {addr}: {cause}")]
    Unreachable { addr: String, cause: String },
    /// The server's refusal, and the request it refused (`method` as sent, `url` in full with
    /// its query), which vault's CLI prints beside the errors.
    #[error("{status}: {}", .errors.join("; "))]
    Api { status: u16, errors: Vec<String>, method: String, url: String },
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("unexpected response from the server: {0}")]
    Decode(String),
    #[error("sealed answer: {0}")]
    Seal(#[from] SealError),
    /// The server closed an event stream with this WebSocket close code and reason.
    #[error("the server closed the event stream ({code}): {reason}")]
    EventStreamClosed { code: u16, reason: String },
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Where and how to reach a server. `Debug` shows whether a client identity is set, never its
/// key.
#[derive(Clone, Default)]
pub struct ClientConfig {
    pub address: String,
    /// PEM bundle of the CAs to trust; when `None`, the platform's trust store.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for mutually authenticated TLS.
    pub client_identity_pem: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    /// Accept any server certificate (vault's `-tls-skip-verify`): for a test server only, as
    /// anyone on the path can then read and change the traffic, tokens included.
    pub tls_skip_verify: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("address", &self.address)
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(Vec::len))
            .field("client_identity_pem", &self.client_identity_pem.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .finish()
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    address: String,
    /// Wiped when the client is dropped; sent as a sensitive header (never in hyper's debug output).
    token: Option<zeroize::Zeroizing<String>>,
    wrap_ttl: Option<String>,
    seal_key: Option<Arc<SealKey>>,
    /// How it was made: the event stream connects with the same trust (`events`).
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("seal_key", &self.seal_key)
            .finish()
    }
}

/// A successful answer: status and body (an envelope, a bare object, or nothing for 204).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
}

impl Answer {
    pub fn envelope(&self) -> Result<Envelope> {
        match &self.body {
            None => Ok(Envelope::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| Error::Decode(e.to_string())),
        }
    }

    pub fn data(&self) -> Option<&Map<String, Value>> {
        self.body.as_ref()?.get("data")?.as_object()
    }
}

impl Client {
    pub fn new(cfg: &ClientConfig) -> Result<Self> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout.unwrap_or(Duration::from_secs(60)))
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_cert_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("CA certificate file holds no certificate".into()));
            }
            b = b.tls_certs_only(certs);
        }
        if let Some(pem) = &cfg.client_identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|e| Error::Config(format!("client certificate: {e}")))?;
            b = b.identity(id);
        }
        if cfg.tls_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| Error::Config(e.to_string()))?;
        let address = cfg.address.trim_end_matches('/').to_owned();
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(Error::Config(format!(
                "address {address:?} must start with http:// or https://"
            )));
        }
        Ok(Self {
            http,
            address,
            token: None,
            wrap_ttl: None,
            seal_key: None,
            config: Arc::new(cfg.clone()),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.map(zeroize::Zeroizing::new);
        self
    }

    /// Asks the server to wrap every answer for this long (`X-Vault-Wrap-TTL`, e.g. `60s`).
    pub fn with_wrap_ttl(mut self, ttl: Option<String>) -> Self {
        self.wrap_ttl = ttl;
        self
    }

    /// Asks for every answer sealed to `key`, and opens them (see [`SealKey`]).
    pub fn with_seal_key(mut self, key: Option<Arc<SealKey>>) -> Self {
        self.seal_key = key;
        self
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().map(String::as_str)
    }

    pub fn seal_key(&self) -> Option<&SealKey> {
        self.seal_key.as_deref()
    }

    /// Sends one request to `/v1/<path>`; `method` may be `LIST`.
    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
        self.request_with_query(method, path, &[], body).await
    }

    pub async fn request_with_query(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Error::Config(format!("bad method {method}")))?;
        let url = format!("{}/v1/{}", self.address, path.trim_start_matches('/'));
        let method_name = method.to_string();
        let mut rb = self.http.request(method, &url).query(query);
        if let Some(t) = &self.token {
            let mut v = reqwest::header::HeaderValue::from_str(t)
                .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
            v.set_sensitive(true);
            rb = rb.header("X-Vault-Token", v);
        }
        if let Some(w) = &self.wrap_ttl {
            rb = rb.header("X-Vault-Wrap-TTL", w);
        }
        if let Some(k) = &self.seal_key {
            rb = rb.header(SEAL_TO_HEADER, k.header_value());
        }
        let body_data = body;
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await.map_err(|e| Error::Unreachable {
            addr: self.address.clone(),
            cause: error_chain(&e),
        })?;
        let status = resp.status();
        let sent_url = resp.url().to_string();
        let bytes = resp.bytes().await.map_err(|e| Error::Decode(e.to_string()))?;
        let mut body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Decode(format!("{status}: {e}")))?,
            )
        };
        if status.is_success() || is_health_status(path, status) {
            if let (Some(k), Some(b)) = (&self.seal_key, body.as_mut()) {
                let sent = body_data.and_then(Value::as_object);
                k.open_answer(b, &Binding::for_request(path, self.token(), sent))?;
            }
            return Ok(Answer { status: status.as_u16(), body });
        }
        let errors = body
            .as_ref()
            .and_then(|b| serde_json::from_value::<ErrorBody>(b.clone()).ok())
            .map(|e| e.errors)
            .unwrap_or_default();
        Err(Error::Api { status: status.as_u16(), errors, method: method_name, url: sent_url })
    }

    pub async fn read(&self, path: &str) -> Result<Answer> {
        self.request("GET", path, None).await
    }

    pub async fn write(&self, path: &str, body: &Value) -> Result<Answer> {
        self.request("POST", path, Some(body)).await
    }

    pub async fn list(&self, path: &str) -> Result<Answer> {
        self.request("LIST", path, None).await
    }

    pub async fn delete(&self, path: &str) -> Result<Answer> {
        self.request("DELETE", path, None).await
    }

    /// Reports a delivery with this client's token (`sys/agent/delivery`, Coffer only): one
    /// attempt, no retry.
    pub async fn report_delivery(&self, d: &Delivery) -> Result<()> {
        // Plain strings and lists: serializing cannot fail, but is not unwrapped.
        let body =
            serde_json::to_value(d).map_err(|e| Error::Config(format!("delivery report: {e}")))?;
        self.write(DELIVERY_PATH, &body).await.map(drop)
    }
}

/// `sys/health` reports state through its status code; those answers are not errors.
fn is_health_status(path: &str, status: StatusCode) -> bool {
    path.trim_start_matches('/').starts_with("sys/health")
        && matches!(status.as_u16(), 429 | 472 | 473 | 501 | 503)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn envelope_serializes_to_the_bytes_coffer_has_always_sent() {
        let mut data = Map::new();
        data.insert("password".into(), json!("pw"));
        let env: Envelope = Envelope {
            auth: Some(json!({"client_token": "t"})),
            data: Some(data),
            lease_duration: 60,
            lease_id: "db/creds/x/1".into(),
            mount_type: String::new(),
            renewable: true,
            request_id: "r".into(),
            sealed: None,
            warnings: None,
            wrap_info: None,
        };
        // What the server built by hand before this type was shared (a `serde_json` map,
        // whose keys come out sorted).
        let by_hand = json!({
            "request_id": "r",
            "lease_id": "db/creds/x/1",
            "renewable": true,
            "lease_duration": 60,
            "data": {"password": "pw"},
            "wrap_info": null,
            "warnings": null,
            "auth": {"client_token": "t"},
            "mount_type": "",
        });
        assert_eq!(
            serde_json::to_string(&env).expect("serialize"),
            serde_json::to_string(&by_hand).expect("serialize")
        );
    }

    #[test]
    fn envelope_reads_answers_that_lack_fields() {
        let env: Envelope =
            serde_json::from_value(json!({"request_id": "r", "data": {"a": 1}})).expect("parse");
        assert_eq!(env.request_id, "r");
        assert_eq!(env.mount_type, "");
        assert!(env.auth.is_none() && env.warnings.is_none());
    }
}
