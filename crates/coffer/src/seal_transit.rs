//! `seal "transit"`: the unseal key is wrapped by a named key of another Coffer's (or Vault's,
//! or OpenBao's) transit engine, through its `encrypt`/`decrypt` endpoints, so a server unseals
//! itself as long as that engine answers.
//!
//! Settings come from the stanza and the environment variables Vault's transit seal reads, with
//! Vault's precedence (`Settings::resolve`). The token is renewed in the background, as Vault's
//! seal does, unless `disable_renewal` is set: at two thirds of its TTL, with retries while the
//! transit server is unreachable; a token that is refused (revoked, expired) or stops being
//! renewable is logged as an error once, naming what to do.
//!
//! Guarantees: the unseal key leaves this process only inside TLS (or to a loopback `http://`
//! address) to the configured address, trusting only `tls_ca_cert` when given (nothing at all is
//! verified with `tls_skip_verify`, which logs a warning at start); the token is never logged;
//! errors name the address and the transit answer's status, never the key.
//!
//! The transit answers' JSON (with the base64 of the unseal key in a decrypt answer) is parsed
//! into ordinary buffers that are freed, not wiped. With `tls_server_name`, requests go to a URL
//! whose host is that name (resolved to the address's host), so the `Host` header carries it too.
//!
//! Not done: `tls_ca_path` and the `*_bytes` forms of the TLS keys; the token's own renewal
//! cannot outlive its max TTL (a periodic token has none).

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use coffer_barrier::{Error, KeyWrapper};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::config::TransitStanza;

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
    /// Vault's order: the seal's own variables (`TRANSIT_WRAPPER_*`, then
    /// `VAULT_TRANSIT_SEAL_*`) win over the stanza for the address, token, key name, mount path
    /// and `disable_renewal`; `VAULT_NAMESPACE` (or `BAO_NAMESPACE`) wins over `namespace`; the
    /// API client's variables (`BAO_*`, then `VAULT_*`) fill only what the stanza leaves out.
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
        let path = |p: &Option<std::path::PathBuf>, names: &[&str]| {
            p.as_ref().map(|p| p.display().to_string()).or_else(|| first(names))
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
            tls_ca_cert: path(&s.tls_ca_cert, &["BAO_CACERT", "VAULT_CACERT"]),
            tls_client_cert: path(&s.tls_client_cert, &["BAO_CLIENT_CERT", "VAULT_CLIENT_CERT"]),
            tls_client_key: path(&s.tls_client_key, &["BAO_CLIENT_KEY", "VAULT_CLIENT_KEY"]),
            tls_server_name: s
                .tls_server_name
                .clone()
                .or_else(|| first(&["BAO_TLS_SERVER_NAME", "VAULT_TLS_SERVER_NAME"])),
            tls_skip_verify,
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
}

/// What a call to the transit server came to.
enum CallError {
    /// The server refused the token (401/403).
    Refused(String),
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
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &s.tls_ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read tls_ca_cert {ca}"))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("invalid PEM in tls_ca_cert {ca}"))?;
            b = b.tls_certs_only(certs);
        }
        match (&s.tls_client_cert, &s.tls_client_key) {
            (Some(c), Some(k)) => {
                let mut pem =
                    std::fs::read(c).with_context(|| format!("cannot read tls_client_cert {c}"))?;
                pem.extend_from_slice(
                    &std::fs::read(k).with_context(|| format!("cannot read tls_client_key {k}"))?,
                );
                b = b.identity(
                    reqwest::Identity::from_pem(&pem).context("tls_client_cert/tls_client_key")?,
                );
            }
            (None, None) => {}
            _ => bail!("seal \"transit\": tls_client_cert and tls_client_key go together"),
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
        }))
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, CallError> {
        let mut req = self
            .client
            .post(format!("{}/v1/{path}", self.base))
            .header("X-Vault-Token", self.token.as_str())
            .json(&body);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let resp = req.send().await.map_err(|e| CallError::Other(format!("{e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        match status.as_u16() {
            200..=299 => Ok(v),
            401 | 403 => Err(CallError::Refused(format!("{status}: {}", v["errors"]))),
            _ => Err(CallError::Other(format!("{status}: {}", v["errors"]))),
        }
    }

    async fn call(&self, op: &str, body: Value) -> coffer_barrier::Result<Value> {
        let path = format!("{}/{op}/{}", self.mount_path, self.key_name);
        self.post(&path, body).await.map_err(|e| {
            let why = match e {
                CallError::Refused(why) => format!(
                    "{why}: the seal token was refused (revoked, expired, or without the update capability on {path})"
                ),
                CallError::Other(why) => why,
            };
            Error::Internal(format!("transit seal {}: {op}: {why}", self.address))
        })
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

/// Vault renews at about two thirds of the TTL; a failure that is not a refusal (the transit
/// server down, a timeout) is retried every 5 s, which is enough for tokens of 15 s and more.
async fn renew_loop(seal: Weak<TransitSeal>) {
    const RETRY: Duration = Duration::from_secs(5);
    let mut last_ttl: Option<u64> = None;
    let mut reported_down = false;
    loop {
        let Some(s) = seal.upgrade() else { return };
        let next = match s.post("auth/token/renew-self", json!({})).await {
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
            Err(CallError::Other(why)) => {
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

#[async_trait::async_trait]
impl KeyWrapper for TransitSeal {
    fn seal_type(&self) -> &'static str {
        "transit"
    }

    async fn wrap(&self, key: &[u8]) -> coffer_barrier::Result<Vec<u8>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let plaintext = Zeroizing::new(b64.encode(key));
        let v = self.call("encrypt", json!({ "plaintext": plaintext.as_str() })).await?;
        v["data"]["ciphertext"]
            .as_str()
            .map(|c| c.as_bytes().to_vec())
            .ok_or_else(|| Error::Internal("transit seal: encrypt answered no ciphertext".into()))
    }

    async fn unwrap(&self, blob: &[u8]) -> coffer_barrier::Result<Zeroizing<Vec<u8>>> {
        let ciphertext = std::str::from_utf8(blob)
            .map_err(|_| Error::Corrupt("core/seal/wrapped-unseal-key".into()))?;
        let v = self.call("decrypt", json!({ "ciphertext": ciphertext })).await?;
        let plaintext = Zeroizing::new(
            v["data"]["plaintext"]
                .as_str()
                .ok_or_else(|| {
                    Error::Internal("transit seal: decrypt answered no plaintext".into())
                })?
                .to_owned(),
        );
        base64::engine::general_purpose::STANDARD
            .decode(plaintext.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| {
                Error::Internal(
                    "transit seal: decrypt answered a plaintext that is not base64".into(),
                )
            })
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
}
