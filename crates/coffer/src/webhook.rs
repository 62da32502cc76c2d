//! The HTTP client detection webhooks post with (`detect { webhook_url }`, a rule's
//! `webhook_url`): JSON, no redirects followed, the server's TLS stack, and only the CA in
//! `webhook_ca_file` when one is given (else the system's roots).
//!
//! Not done: client certificates, or headers such as an authorization token (put a token a
//! receiver needs in the URL's query, as Falcosidekick's webhook output allows).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

pub(crate) struct Sender {
    client: reqwest::Client,
}

impl Sender {
    pub(crate) fn from_config(
        c: &coffer_core::detect::DetectConfig,
    ) -> Result<Arc<dyn coffer_core::detect::WebhookSender>> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")));
        if !c.webhook_ca_file.is_empty() {
            let pem = std::fs::read(&c.webhook_ca_file).with_context(|| {
                format!("cannot read detect webhook_ca_file {}", c.webhook_ca_file)
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("invalid PEM in detect webhook_ca_file {}", c.webhook_ca_file)
            })?;
            b = b.tls_certs_only(certs);
        }
        Ok(Arc::new(Sender { client: b.build().context("detection webhook client")? }))
    }
}

#[async_trait::async_trait]
impl coffer_core::detect::WebhookSender for Sender {
    async fn post(&self, url: &str, body: Vec<u8>, timeout: Duration) -> Result<u16, String> {
        let r = self
            .client
            .post(url)
            .timeout(timeout)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            // reqwest's error text names the URL, which may hold a credential: the kind only.
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_connect() {
                    "could not connect".to_owned()
                } else {
                    "request failed".to_owned()
                }
            })?;
        Ok(r.status().as_u16())
    }
}
