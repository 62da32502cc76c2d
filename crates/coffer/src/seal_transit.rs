//! `seal "transit"`: the unseal key is wrapped by a named key of another Coffer's (or Vault's,
//! or OpenBao's) transit engine, through its `encrypt`/`decrypt` endpoints, so a server unseals
//! itself as long as that engine answers.
//!
//! Settings come from the stanza and the environment variables OpenBao's transit seal reads,
//! with its precedence (`Settings::resolve`). The token is renewed in the background, as Vault's
//! seal does, unless `disable_renewal` is set: at two thirds of its TTL, with retries while the
//! transit server is unreachable; a token that is refused (revoked, expired) or stops being
//! renewable is logged as an error once, naming what to do.
//!
//! Guarantees: the unseal key leaves this process only inside TLS (or to a loopback `http://`
//! address) to the configured address, trusting only `tls_ca_cert` when given (nothing at all is
//! verified with `tls_skip_verify`, which logs a warning at start), and with the client
//! certificate of `tls_client_cert`/`tls_client_key` when given; the token is never logged;
//! errors name the address, the transit answer's status and, for a TLS failure, the option to
//! look at, never the key. Every call is bounded: [`CONNECT_TIMEOUT`] to connect (TLS
//! included), [`ATTEMPT_TIMEOUT`] for a whole attempt, [`ATTEMPTS`] attempts with a growing pause
//! when the failure may pass (no connection, a timeout, a 5xx or 429), each failed attempt
//! logged as it happens: a transit server that stalls cannot keep a call, or a node's
//! auto-unseal, waiting silently.
//!
//! A wrapped key is stored with the key id OpenBao's transit wrapper gives it: `key_id_prefix`
//! followed by the transit key version that encrypted it (`v1`, ...); the id is logged when the
//! key is unwrapped. Keys wrapped before ids were recorded are the bare ciphertext, and open as
//! before.
//!
//! The transit answers' JSON (with the base64 of the unseal key in a decrypt answer) is parsed
//! into ordinary buffers that are freed, not wiped. With `tls_server_name`, requests go to a URL
//! whose host is that name (resolved to the address's host), so the `Host` header carries it too.
//!
//! Not done: `tls_ca_path` and the `*_bytes` forms of the TLS keys; re-wrapping the unseal key
//! when the recorded key id is no longer the current one (a rotated transit key still decrypts
//! it, as long as its old versions are not trimmed); the token's own renewal cannot outlive its
//! max TTL (a periodic token has none).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use coffer_barrier::{Error, KeyWrapper};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::config::TransitStanza;

/// The longest a connection to the transit server (TCP and the TLS handshake) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest one attempt of a call may take, from the pool's checkout to the answer's body.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of an encrypt or decrypt call when the failure may pass; the pause between them
/// doubles from [`FIRST_PAUSE`].
pub(crate) const ATTEMPTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(250);
/// Idle connections are dropped well before servers' own idle timeouts (Go's default is 90 s
/// of keep-alive; load balancers often cut at 60 s), so a call rarely meets one the server has
/// already closed; one that it does meet fails fast and is retried on a new connection.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The stanza with the environment applied.
#[derive(PartialEq, Eq)]
pub(crate) struct Settings {
    pub address: String,
    pub token: Zeroizing<String>,
    pub key_name: String,
    pub mount_path: String,
    pub namespace: Option<String>,
    pub disable_renewal: bool,
    pub tls_ca_cert: Option<String>,
    pub tls_client_cert: Option<String>,
    pub tls_client_key: Option<String>,
    pub tls_server_name: Option<String>,
    pub tls_skip_verify: bool,
    pub key_id_prefix: String,
}

fn parse_bool(what: &str, v: &str) -> Result<bool> {
    // Go's strconv.ParseBool, which Vault uses for these.
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => bail!("seal \"transit\": {what} must be true or false, not {v:?}"),
    }
}

impl Settings {
    /// OpenBao's order: the seal's own variables (`TRANSIT_WRAPPER_*`, then
    /// `VAULT_TRANSIT_SEAL_*`) win over the stanza for the address, token, key name, mount path
    /// and `disable_renewal`; `VAULT_NAMESPACE` (or `BAO_NAMESPACE`) wins over `namespace`; the
    /// API client's variables (`BAO_*`, then `VAULT_*`) fill only what the stanza leaves out.
    /// The client certificate and key go as a pair: the stanza's when it names either, else the
    /// environment's; half a pair is refused, naming the missing half. `key_id_prefix` has no
    /// variable.
    pub(crate) fn resolve(s: &TransitStanza, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let first = |names: &[&str]| names.iter().find_map(|n| env(n));
        let address = first(&["TRANSIT_WRAPPER_ADDR", "VAULT_TRANSIT_SEAL_ADDR"])
            .or_else(|| s.address.clone())
            .or_else(|| first(&["BAO_ADDR", "VAULT_ADDR"]))
            .ok_or_else(|| {
                anyhow!("seal \"transit\" needs address = \"https://coffer-kms:8200\"")
            })?;
        let token = first(&["TRANSIT_WRAPPER_TOKEN", "VAULT_TRANSIT_SEAL_TOKEN"])
            .or_else(|| s.token.clone())
            .or_else(|| first(&["BAO_TOKEN", "VAULT_TOKEN"]))
            .map(Zeroizing::new)
            .ok_or_else(|| {
                anyhow!(
                    "seal \"transit\" needs token = \"...\" (or the VAULT_TRANSIT_SEAL_TOKEN or VAULT_TOKEN environment variable)"
                )
            })?;
        let key_name = first(&["TRANSIT_WRAPPER_KEY_NAME", "VAULT_TRANSIT_SEAL_KEY_NAME"])
            .or_else(|| s.key_name.clone())
            .ok_or_else(|| anyhow!("seal \"transit\" needs key_name = \"autounseal\""))?;
        let mount_path = first(&["TRANSIT_WRAPPER_MOUNT_PATH", "VAULT_TRANSIT_SEAL_MOUNT_PATH"])
            .or_else(|| s.mount_path.clone())
            .unwrap_or_else(|| "transit/".into());
        let disable_renewal =
            match first(&["TRANSIT_WRAPPER_DISABLE_RENEWAL", "VAULT_TRANSIT_SEAL_DISABLE_RENEWAL"])
            {
                Some(v) => parse_bool("disable_renewal", &v)?,
                None => s.disable_renewal.unwrap_or(false),
            };
        let namespace = first(&["VAULT_NAMESPACE", "BAO_NAMESPACE"])
            .or_else(|| s.namespace.clone())
            .map(|n| n.trim_matches('/').to_owned())
            .filter(|n| !n.is_empty());
        let shown = |p: &std::path::PathBuf| p.display().to_string();
        let (tls_client_cert, tls_client_key) = match (&s.tls_client_cert, &s.tls_client_key) {
            (Some(c), Some(k)) => (Some(shown(c)), Some(shown(k))),
            (Some(_), None) => {
                bail!(
                    "seal \"transit\": tls_client_cert is set but tls_client_key is not; give both"
                )
            }
            (None, Some(_)) => {
                bail!(
                    "seal \"transit\": tls_client_key is set but tls_client_cert is not; give both"
                )
            }
            (None, None) => {
                match (
                    first(&["BAO_CLIENT_CERT", "VAULT_CLIENT_CERT"]),
                    first(&["BAO_CLIENT_KEY", "VAULT_CLIENT_KEY"]),
                ) {
                    (Some(c), Some(k)) => (Some(c), Some(k)),
                    (None, None) => (None, None),
                    (Some(_), None) => bail!(
                        "seal \"transit\": VAULT_CLIENT_CERT (or BAO_CLIENT_CERT) is set but neither VAULT_CLIENT_KEY nor BAO_CLIENT_KEY is; give both, or tls_client_cert and tls_client_key in the stanza"
                    ),
                    (None, Some(_)) => bail!(
                        "seal \"transit\": VAULT_CLIENT_KEY (or BAO_CLIENT_KEY) is set but neither VAULT_CLIENT_CERT nor BAO_CLIENT_CERT is; give both, or tls_client_cert and tls_client_key in the stanza"
                    ),
                }
            }
        };
        let tls_skip_verify = match s.tls_skip_verify {
            Some(b) => b,
            None => match first(&["BAO_SKIP_VERIFY", "VAULT_SKIP_VERIFY"]) {
                Some(v) => parse_bool("tls_skip_verify", &v)?,
                None => false,
            },
        };
        Ok(Self {
            address: address.trim_end_matches('/').to_owned(),
            token,
            key_name,
            mount_path: mount_path.trim_matches('/').to_owned(),
            namespace,
            disable_renewal,
            tls_ca_cert: s
                .tls_ca_cert
                .as_ref()
                .map(shown)
                .or_else(|| first(&["BAO_CACERT", "VAULT_CACERT"])),
            tls_client_cert,
            tls_client_key,
            tls_server_name: s
                .tls_server_name
                .clone()
                .or_else(|| first(&["BAO_TLS_SERVER_NAME", "VAULT_TLS_SERVER_NAME"])),
            tls_skip_verify,
            key_id_prefix: match &s.key_id_prefix {
                Some(p) if p.len() > 200 => {
                    bail!("seal \"transit\": key_id_prefix may be at most 200 bytes")
                }
                p => p.clone().unwrap_or_default(),
            },
        })
    }
}

/// Sends requests for `tls_server_name` to the address's host, looked up at each connection.
struct ServerNameResolver {
    server_name: String,
    host: String,
}

impl reqwest::dns::Resolve for ServerNameResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = if name.as_str().eq_ignore_ascii_case(&self.server_name) {
            self.host.clone()
        } else {
            name.as_str().to_owned()
        };
        Box::pin(async move {
            // The URL's port replaces this 0.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Which TLS settings were given: what a handshake failure's hint names.
#[derive(Clone, Copy)]
struct TlsGiven {
    ca_cert: bool,
    client_cert: bool,
    server_name: bool,
}

pub(crate) struct TransitSeal {
    client: reqwest::Client,
    /// The address as configured: what errors and logs name.
    address: String,
    /// Where requests go: the address, with `tls_server_name` as its host when given.
    base: String,
    token: Zeroizing<String>,
    namespace: Option<String>,
    mount_path: String,
    key_name: String,
    disable_renewal: bool,
    key_id_prefix: String,
    tls: TlsGiven,
    /// The last retry warning and when it was logged: the same one is repeated at most once a
    /// minute (at debug level in between), so a long outage does not flood the log.
    last_warning: std::sync::Mutex<Option<(String, Instant)>>,
}

/// What a call to the transit server came to.
enum CallError {
    /// The server refused the token (401/403).
    Refused(String),
    /// No answer, or a 5xx or 429: another attempt may succeed.
    Transient(String),
    /// Anything else (a TLS setting, a 4xx): another attempt would fail alike.
    Other(String),
}

impl TransitSeal {
    pub(crate) fn new(stanza: &TransitStanza) -> Result<Arc<Self>> {
        let s = Settings::resolve(stanza, |k| std::env::var(k).ok())?;
        let url = reqwest::Url::parse(&s.address)
            .with_context(|| format!("seal \"transit\" address {:?} is not a URL", s.address))?;
        let loopback_http = url.scheme() == "http"
            && matches!(url.host_str(), Some("localhost" | "[::1]"))
            || url.scheme() == "http" && url.host_str().is_some_and(|h| h.starts_with("127."));
        if url.scheme() != "https" && !loopback_http {
            bail!(
                "seal \"transit\" address {:?} must be https:// (plain http only to this host)",
                s.address
            );
        }
        let mut b = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE)
            .tcp_keepalive(Duration::from_secs(15));
        if let Some(ca) = &s.tls_ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("seal \"transit\": cannot read tls_ca_cert {ca}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    anyhow!("seal \"transit\": tls_ca_cert {ca} holds no PEM certificate")
                })?;
            b = b.tls_certs_only(certs);
        }
        if let (Some(c), Some(k)) = (&s.tls_client_cert, &s.tls_client_key) {
            let mut pem =
                Zeroizing::new(std::fs::read(c).with_context(|| {
                    format!("seal \"transit\": cannot read tls_client_cert {c}")
                })?);
            if !pem.ends_with(b"\n") {
                pem.push(b'\n');
            }
            let key =
                Zeroizing::new(std::fs::read(k).with_context(|| {
                    format!("seal \"transit\": cannot read tls_client_key {k}")
                })?);
            pem.extend_from_slice(&key);
            // The parser's own error text is not passed on: it could quote the PEM.
            let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                anyhow!(
                    "seal \"transit\": tls_client_cert {c} and tls_client_key {k} must hold a PEM certificate and its PEM private key (PKCS#8, PKCS#1 or SEC1)"
                )
            })?;
            b = b.identity(identity);
        }
        if s.tls_skip_verify {
            tracing::warn!(
                address = %s.address,
                "seal \"transit\": tls_skip_verify is set: the transit server's certificate is not verified, so anyone on the path can read the unseal key"
            );
            b = b.tls_danger_accept_invalid_certs(true);
        }
        let mut base = s.address.clone();
        if let Some(name) = s.tls_server_name.as_ref().filter(|_| url.scheme() == "https") {
            let host = url
                .host_str()
                .ok_or_else(|| anyhow!("seal \"transit\" address {:?} has no host", s.address))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let mut u = url.clone();
            u.set_host(Some(name))
                .with_context(|| format!("seal \"transit\": tls_server_name {name:?}"))?;
            if u.port().is_none() {
                // The address's port (or https' 443) still applies.
                let _ = u.set_port(url.port_or_known_default());
            }
            base = u.as_str().trim_end_matches('/').to_owned();
            b = b.dns_resolver(ServerNameResolver { server_name: name.clone(), host });
        }
        Ok(Arc::new(Self {
            client: b.build().context("transit seal client")?,
            address: s.address.clone(),
            base,
            token: s.token,
            namespace: s.namespace,
            mount_path: s.mount_path,
            key_name: s.key_name,
            disable_renewal: s.disable_renewal,
            key_id_prefix: s.key_id_prefix,
            tls: TlsGiven {
                ca_cert: s.tls_ca_cert.is_some(),
                client_cert: s.tls_client_cert.is_some(),
                server_name: s.tls_server_name.is_some(),
            },
            last_warning: std::sync::Mutex::new(None),
        }))
    }

    /// One attempt, bounded by the client's timeouts.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut req = self
            .client
            .post(format!("{}/v1/{path}", self.base))
            .header("X-Vault-Token", self.token.as_str())
            .json(body);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let resp = req.send().await.map_err(|e| self.failed(&e))?;
        let status = resp.status();
        let v: Value = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(e) => return Err(self.failed(&e)),
        };
        match status.as_u16() {
            200..=299 => Ok(v),
            401 | 403 => Err(CallError::Refused(format!("{status}: {}", v["errors"]))),
            429 | 500..=599 => Err(CallError::Transient(format!("{status}: {}", v["errors"]))),
            _ => Err(CallError::Other(format!("{status}: {}", v["errors"]))),
        }
    }

    /// A request that got no answer: a TLS failure names the setting to look at and is not
    /// retried; anything else (refused, reset, timed out) may pass.
    fn failed(&self, e: &reqwest::Error) -> CallError {
        // reqwest's text names the URL (mount path and key name, no secret) and the cause.
        let text = format!("{e}: {}", error_chain(e));
        match tls_hint(e, self.tls) {
            Some(hint) => CallError::Other(format!("{hint} ({text})")),
            None if e.is_timeout() => CallError::Transient(format!(
                "no answer within {} s ({text})",
                if e.is_connect() { CONNECT_TIMEOUT } else { ATTEMPT_TIMEOUT }.as_secs()
            )),
            None => CallError::Transient(text),
        }
    }

    /// `encrypt` or `decrypt` with the seal's key: up to [`ATTEMPTS`] attempts while the failure
    /// may pass, each failure logged.
    async fn call(&self, op: &str, body: Value) -> coffer_barrier::Result<Value> {
        let path = format!("{}/{op}/{}", self.mount_path, self.key_name);
        let started = Instant::now();
        let mut pause = FIRST_PAUSE;
        let mut attempt = 1;
        let why = loop {
            match self.post(&path, &body).await {
                Ok(v) => {
                    if attempt > 1 {
                        tracing::info!(address = %self.address, op, attempt, "seal \"transit\": the transit server answered");
                    }
                    return Ok(v);
                }
                Err(CallError::Refused(why)) => {
                    break format!(
                        "{why}: the seal token was refused (revoked, expired, or without the update capability on {path})"
                    );
                }
                Err(CallError::Other(why)) => break why,
                Err(CallError::Transient(why)) if attempt < ATTEMPTS => {
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    if self.warn_again(&why) {
                        tracing::warn!(address = %self.address, op, attempt, elapsed_ms, error = %why, "seal \"transit\": call failed; retrying");
                    } else {
                        tracing::debug!(address = %self.address, op, attempt, elapsed_ms, error = %why, "seal \"transit\": call failed; retrying");
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                // No elapsed time in the text: the auto-unseal loop logs a repeated error once
                // a minute only, and recognizes a repeat by its text.
                Err(CallError::Transient(why)) => break format!("{why} (tried {ATTEMPTS} times)"),
            }
        };
        Err(Error::Internal(format!("transit seal {}: {op}: {why}", self.address)))
    }

    /// Whether a retry warning with this text is due (a new one, or a minute since the last).
    fn warn_again(&self, why: &str) -> bool {
        let Ok(mut last) = self.last_warning.lock() else { return true };
        let due =
            last.as_ref().is_none_or(|(w, at)| w != why || at.elapsed() >= Duration::from_secs(60));
        if due {
            *last = Some((why.to_owned(), Instant::now()));
        }
        due
    }

    /// Renews the token in the background for as long as this seal exists, unless
    /// `disable_renewal` is set.
    pub(crate) fn start_renewal(self: &Arc<Self>) {
        if self.disable_renewal {
            return;
        }
        tokio::spawn(renew_loop(Arc::downgrade(self)));
    }
}

/// The causes under a reqwest error, outermost first (its own text often stops at "error
/// sending request").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    parts.join(": ")
}

/// The rustls error inside `e`'s causes, if any. An `io::Error`'s own `source` skips the error
/// it wraps, so that one is looked into by hand.
fn rustls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(inner) = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(t) = rustls_cause(inner)
        {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// For a TLS failure: what went wrong, naming the option to look at.
fn tls_hint(e: &reqwest::Error, given: TlsGiven) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C};
    let t = rustls_cause(e)?;
    let ca = if given.ca_cert {
        "it is not signed by a CA in tls_ca_cert"
    } else {
        "give the CA that signed it in tls_ca_cert"
    };
    Some(match t {
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            if given.server_name {
                "the transit server's certificate does not hold the name in tls_server_name".into()
            } else {
                "the transit server's certificate does not hold the address's host: set tls_server_name to a name it holds".into()
            }
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("the transit server's certificate is not trusted: {ca}")
        }
        rustls::Error::InvalidCertificate(other) => {
            format!("the transit server's certificate was refused ({other:?}); check tls_ca_cert")
        }
        rustls::Error::AlertReceived(A::CertificateRequired) => {
            "the transit server requires a client certificate: set tls_client_cert and tls_client_key".into()
        }
        rustls::Error::AlertReceived(
            A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::AccessDenied
            | A::HandshakeFailure
            // rustls' answer to a client certificate of a CA it does not trust.
            | A::DecryptError,
        ) if given.client_cert => {
            "the transit server refused the client certificate in tls_client_cert (not signed by a CA it trusts for clients, expired, or not for client use)".into()
        }
        rustls::Error::AlertReceived(
            A::BadCertificate | A::CertificateUnknown | A::HandshakeFailure | A::AccessDenied,
        ) => {
            "the transit server refused the TLS handshake; if it requires a client certificate, set tls_client_cert and tls_client_key".into()
        }
        other => format!("TLS with the transit server failed ({other}); check the tls_* options"),
    })
}

/// Vault renews at about two thirds of the TTL; a failure that is not a refusal (the transit
/// server down, a timeout) is retried every 5 s, which is enough for tokens of 15 s and more.
async fn renew_loop(seal: Weak<TransitSeal>) {
    const RETRY: Duration = Duration::from_secs(5);
    let mut last_ttl: Option<u64> = None;
    let mut reported_down = false;
    loop {
        let Some(s) = seal.upgrade() else { return };
        let next = match s.post("auth/token/renew-self", &json!({})).await {
            Ok(v) => {
                reported_down = false;
                let auth = &v["auth"];
                let ttl = auth["lease_duration"].as_u64().unwrap_or(0);
                if ttl == 0 {
                    tracing::info!(address = %s.address, "seal \"transit\": the token does not expire; it is not renewed");
                    return;
                }
                if auth["renewable"] == json!(false) {
                    tracing::error!(
                        address = %s.address,
                        ttl_seconds = ttl,
                        "seal \"transit\": the token is not renewable: auto-unseal fails once it expires; give the stanza a renewable (periodic) token and restart"
                    );
                    return;
                }
                if last_ttl.is_some_and(|l| ttl < l) {
                    tracing::warn!(
                        address = %s.address,
                        ttl_seconds = ttl,
                        "seal \"transit\": the token is nearing its max TTL and cannot be renewed past it: auto-unseal fails once it expires; use a periodic token"
                    );
                }
                tracing::debug!(ttl_seconds = ttl, "seal \"transit\": token renewed");
                last_ttl = Some(ttl);
                Duration::from_secs(ttl.saturating_mul(2) / 3).max(Duration::from_secs(1))
            }
            Err(CallError::Refused(why)) => {
                tracing::error!(
                    address = %s.address,
                    answer = %why,
                    "seal \"transit\": the token was refused when renewing it (revoked or expired): the token is lost; auto-unseal fails until the stanza gets a valid token and the server is restarted"
                );
                return;
            }
            Err(CallError::Transient(why) | CallError::Other(why)) => {
                if !reported_down {
                    tracing::warn!(
                        address = %s.address,
                        error = %why,
                        "seal \"transit\": the token could not be renewed; retrying every 5 s"
                    );
                    reported_down = true;
                }
                RETRY
            }
        };
        drop(s);
        tokio::time::sleep(next).await;
    }
}

/// A wrapped key as stored: `[BLOB_V1][key id length][key id][transit ciphertext]`. Keys
/// wrapped before key ids were recorded are the bare ciphertext (`vault:v1:...`), whose first
/// byte is never `BLOB_V1`.
const BLOB_V1: u8 = 1;

/// OpenBao's key id for a transit ciphertext: the prefix and the key version (`vault:v3:...`
/// gives `v3`). `None` for a ciphertext not of that shape.
fn key_id(prefix: &str, ciphertext: &str) -> Option<String> {
    let parts: Vec<&str> = ciphertext.split(':').collect();
    match parts.as_slice() {
        [_, version, _] if !version.is_empty() => Some(format!("{prefix}{version}")),
        _ => None,
    }
}

/// The key id and ciphertext of a stored blob (`None` as the id for a blob stored without one).
fn parse_blob(blob: &[u8]) -> Option<(Option<&str>, &str)> {
    match blob.split_first() {
        Some((&BLOB_V1, rest)) => {
            let (&n, rest) = rest.split_first()?;
            let id = std::str::from_utf8(rest.get(..n as usize)?).ok()?;
            let ct = std::str::from_utf8(&rest[n as usize..]).ok()?;
            Some((Some(id), ct))
        }
        _ => Some((None, std::str::from_utf8(blob).ok()?)),
    }
}

#[async_trait::async_trait]
impl KeyWrapper for TransitSeal {
    fn seal_type(&self) -> &'static str {
        "transit"
    }

    async fn wrap(&self, key: &[u8]) -> coffer_barrier::Result<Vec<u8>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let plaintext = Zeroizing::new(b64.encode(key));
        let v = self.call("encrypt", json!({ "plaintext": plaintext.as_str() })).await?;
        let ct = v["data"]["ciphertext"].as_str().ok_or_else(|| {
            Error::Internal("transit seal: encrypt answered no ciphertext".into())
        })?;
        let id = key_id(&self.key_id_prefix, ct)
            .filter(|id| id.len() <= usize::from(u8::MAX))
            .ok_or_else(|| {
                Error::Internal(
                    "transit seal: encrypt answered a ciphertext that is not <prefix>:<version>:<data>"
                        .into(),
                )
            })?;
        let mut out = Vec::with_capacity(2 + id.len() + ct.len());
        out.push(BLOB_V1);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(ct.as_bytes());
        Ok(out)
    }

    async fn unwrap(&self, blob: &[u8]) -> coffer_barrier::Result<Zeroizing<Vec<u8>>> {
        let (id, ciphertext) = parse_blob(blob)
            .ok_or_else(|| Error::Corrupt("core/seal/wrapped-unseal-key".into()))?;
        let v = self.call("decrypt", json!({ "ciphertext": ciphertext })).await?;
        let plaintext = Zeroizing::new(
            v["data"]["plaintext"]
                .as_str()
                .ok_or_else(|| {
                    Error::Internal("transit seal: decrypt answered no plaintext".into())
                })?
                .to_owned(),
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(plaintext.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Internal(
                    "transit seal: decrypt answered a plaintext that is not base64".into(),
                )
            })?;
        tracing::info!(
            address = %self.address,
            key_id = %id.unwrap_or("(not recorded)"),
            "seal \"transit\": unseal key unwrapped"
        );
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(s: &TransitStanza, env: &[(&str, &str)]) -> Result<Settings> {
        let env: HashMap<String, String> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::resolve(s, |k| env.get(k).cloned())
    }

    #[test]
    fn the_environment_applies_in_vaults_order() {
        let stanza = TransitStanza {
            address: Some("https://file:8200/".into()),
            token: Some("file-token".into()),
            key_name: Some("file-key".into()),
            namespace: Some("ns-file/".into()),
            tls_skip_verify: Some(false),
            ..Default::default()
        };
        let s = resolve(&stanza, &[]).expect("resolve");
        assert_eq!(
            (s.address.as_str(), s.token.as_str(), s.key_name.as_str(), s.mount_path.as_str()),
            ("https://file:8200", "file-token", "file-key", "transit")
        );
        assert_eq!((s.namespace.as_deref(), s.disable_renewal), (Some("ns-file"), false));
        // The seal's own variables win over the file; TRANSIT_WRAPPER_* over VAULT_TRANSIT_SEAL_*.
        let s = resolve(
            &stanza,
            &[
                ("VAULT_TRANSIT_SEAL_ADDR", "https://vts:8200"),
                ("TRANSIT_WRAPPER_ADDR", "https://tw:8200"),
                ("VAULT_TRANSIT_SEAL_TOKEN", "env-token"),
                ("VAULT_TRANSIT_SEAL_KEY_NAME", "env-key"),
                ("VAULT_TRANSIT_SEAL_MOUNT_PATH", "/kms/"),
                ("VAULT_TRANSIT_SEAL_DISABLE_RENEWAL", "true"),
                ("VAULT_NAMESPACE", "ns-env"),
                ("VAULT_ADDR", "https://ignored:8200"),
                ("VAULT_TOKEN", "ignored"),
                ("VAULT_SKIP_VERIFY", "true"),
            ],
        )
        .expect("resolve");
        assert_eq!(
            (s.address.as_str(), s.token.as_str(), s.key_name.as_str(), s.mount_path.as_str()),
            ("https://tw:8200", "env-token", "env-key", "kms")
        );
        assert_eq!((s.namespace.as_deref(), s.disable_renewal), (Some("ns-env"), true));
        assert!(!s.tls_skip_verify, "the stanza's tls_skip_verify = false stands");
        // The API client's variables only fill what the stanza leaves out; BAO_* before VAULT_*.
        let bare = TransitStanza { key_name: Some("k".into()), ..Default::default() };
        let s = resolve(
            &bare,
            &[
                ("VAULT_ADDR", "https://v:8200"),
                ("BAO_ADDR", "https://b:8200"),
                ("VAULT_TOKEN", "vt"),
                ("BAO_SKIP_VERIFY", "1"),
                ("VAULT_TLS_SERVER_NAME", "kms.internal"),
                ("VAULT_CACERT", "/etc/ca.pem"),
            ],
        )
        .expect("resolve");
        assert_eq!((s.address.as_str(), s.token.as_str()), ("https://b:8200", "vt"));
        assert!(s.tls_skip_verify);
        assert_eq!(
            (s.tls_server_name.as_deref(), s.tls_ca_cert.as_deref()),
            (Some("kms.internal"), Some("/etc/ca.pem"))
        );
    }

    #[test]
    fn missing_or_malformed_settings_are_named() {
        let with = |f: fn(&mut TransitStanza)| {
            let mut s = TransitStanza {
                address: Some("https://k".into()),
                token: Some("t".into()),
                key_name: Some("k".into()),
                ..Default::default()
            };
            f(&mut s);
            s
        };
        for (stanza, env, want) in [
            (with(|s| s.address = None), vec![], "address"),
            (with(|s| s.token = None), vec![], "token"),
            (with(|s| s.key_name = None), vec![], "key_name"),
            (with(|_| {}), vec![("VAULT_TRANSIT_SEAL_DISABLE_RENEWAL", "yes")], "disable_renewal"),
            (with(|_| {}), vec![("VAULT_SKIP_VERIFY", "sometimes")], "tls_skip_verify"),
        ] {
            let e = match resolve(&stanza, &env) {
                Ok(_) => panic!("{want}: resolved"),
                Err(e) => format!("{e:#}"),
            };
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn the_client_certificate_and_key_go_as_a_pair() {
        let base = TransitStanza {
            address: Some("https://k".into()),
            token: Some("t".into()),
            key_name: Some("k".into()),
            ..Default::default()
        };
        // The environment's pair, BAO_* before VAULT_*, when the stanza names neither.
        let env = [
            ("VAULT_CLIENT_CERT", "/v/cert.pem"),
            ("VAULT_CLIENT_KEY", "/v/key.pem"),
            ("BAO_CLIENT_CERT", "/b/cert.pem"),
        ];
        let s = resolve(&base, &env).expect("resolve");
        assert_eq!(
            (s.tls_client_cert.as_deref(), s.tls_client_key.as_deref()),
            (Some("/b/cert.pem"), Some("/v/key.pem"))
        );
        // The stanza's pair wins over the environment's, as a whole.
        let both = TransitStanza {
            tls_client_cert: Some("/s/cert.pem".into()),
            tls_client_key: Some("/s/key.pem".into()),
            ..base.clone()
        };
        let s = resolve(&both, &env).expect("resolve");
        assert_eq!(
            (s.tls_client_cert.as_deref(), s.tls_client_key.as_deref()),
            (Some("/s/cert.pem"), Some("/s/key.pem"))
        );
        // Half a pair is refused, naming the missing half, and never completed from elsewhere.
        let half = TransitStanza { tls_client_cert: Some("/s/cert.pem".into()), ..base.clone() };
        let e = resolve(&half, &env).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("tls_client_key is not"), "{e}");
        let e = resolve(&base, &[("VAULT_CLIENT_KEY", "/v/key.pem")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("VAULT_CLIENT_CERT"), "{e}");
        // key_id_prefix comes from the stanza only.
        let s = resolve(&TransitStanza { key_id_prefix: Some("kms-".into()), ..base }, &[])
            .expect("resolve");
        assert_eq!(s.key_id_prefix, "kms-");
    }

    #[test]
    fn a_wrapped_key_records_the_prefixed_key_version_and_old_blobs_still_parse() {
        assert_eq!(key_id("kms-", "vault:v3:AAAA").as_deref(), Some("kms-v3"));
        assert_eq!(key_id("", "vault:v1:AAAA").as_deref(), Some("v1"));
        assert_eq!(key_id("", "vault:v1"), None);
        let mut blob = vec![BLOB_V1, 6];
        blob.extend_from_slice(b"kms-v3vault:v3:AAAA");
        assert_eq!(parse_blob(&blob), Some((Some("kms-v3"), "vault:v3:AAAA")));
        // Stored before key ids were recorded: the bare ciphertext.
        assert_eq!(parse_blob(b"vault:v1:AAAA"), Some((None, "vault:v1:AAAA")));
        // A length past the end, or bytes that are not text, are corrupt.
        assert_eq!(parse_blob(&[BLOB_V1, 40, b'v']), None);
        assert_eq!(parse_blob(&[BLOB_V1, 1, b'v', 0xff]), None);
    }
}
