//! `seal "transit"`: the unseal key is wrapped by a named key of another Coffer's (or Vault's)
//! transit engine, through its `encrypt`/`decrypt` endpoints, so a server unseals itself as long
//! as that engine answers.
//!
//! Guarantees: the unseal key leaves this process only inside TLS (or to a loopback `http://`
//! address) to the configured address, trusting only `tls_ca_cert` when given; the token is
//! never logged; errors name the address and the transit answer's status, never the key.
//!
//! The transit answers' JSON (with the base64 of the unseal key in a decrypt answer) is parsed
//! into ordinary buffers that are freed, not wiped.
//!
//! Not done: renewing the token (use a periodic or non-expiring token: `disable_renewal` is
//! accepted and changes nothing), namespaces, `tls_server_name`, `tls_skip_verify`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use coffer_barrier::{Error, KeyWrapper};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::config::TransitStanza;

pub(crate) struct TransitSeal {
    client: reqwest::Client,
    address: String,
    token: Zeroizing<String>,
    mount_path: String,
    key_name: String,
}

impl TransitSeal {
    pub(crate) fn new(s: &TransitStanza) -> Result<Arc<Self>> {
        let token = match &s.token {
            Some(t) => Zeroizing::new(t.clone()),
            None => Zeroizing::new(std::env::var("VAULT_TOKEN").context(
                "seal \"transit\" needs token = \"...\" (or the VAULT_TOKEN environment variable)",
            )?),
        };
        let loopback_http = s.address.starts_with("http://127.")
            || s.address.starts_with("http://localhost")
            || s.address.starts_with("http://[::1]");
        if !s.address.starts_with("https://") && !loopback_http {
            bail!(
                "seal \"transit\" address {:?} must be https:// (plain http only to this host)",
                s.address
            );
        }
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &s.tls_ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read tls_ca_cert {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("invalid PEM in tls_ca_cert {}", ca.display()))?;
            b = b.tls_certs_only(certs);
        }
        match (&s.tls_client_cert, &s.tls_client_key) {
            (Some(c), Some(k)) => {
                let mut pem = std::fs::read(c)
                    .with_context(|| format!("cannot read tls_client_cert {}", c.display()))?;
                pem.extend_from_slice(
                    &std::fs::read(k)
                        .with_context(|| format!("cannot read tls_client_key {}", k.display()))?,
                );
                b = b.identity(
                    reqwest::Identity::from_pem(&pem).context("tls_client_cert/tls_client_key")?,
                );
            }
            (None, None) => {}
            _ => bail!("seal \"transit\": tls_client_cert and tls_client_key go together"),
        }
        Ok(Arc::new(Self {
            client: b.build().context("transit seal client")?,
            address: s.address.trim_end_matches('/').to_owned(),
            token,
            mount_path: s.mount_path.trim_matches('/').to_owned(),
            key_name: s.key_name.clone(),
        }))
    }

    async fn call(&self, op: &str, body: Value) -> coffer_barrier::Result<Value> {
        let url = format!("{}/v1/{}/{op}/{}", self.address, self.mount_path, self.key_name);
        let fail =
            |why: String| Error::Internal(format!("transit seal {}: {op}: {why}", self.address));
        let resp = self
            .client
            .post(url)
            .header("X-Vault-Token", self.token.as_str())
            .json(&body)
            .send()
            .await
            .map_err(|e| fail(format!("{e}")))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(fail(format!("{status}: {}", v["errors"])));
        }
        Ok(v)
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
