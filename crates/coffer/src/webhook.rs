//! The HTTP client detection webhooks post with (`detect { webhook_url }`, a rule's
//! `webhook_url`): JSON, no redirects followed, the server's TLS stack, and only the CA in
//! `webhook_ca_file` when one is given (else the system's roots).
//!
//! The client is built when the configuration names a webhook (`webhook_url` or
//! `webhook_ca_file`), so a bad CA file or trust store fails the start; otherwise on the first
//! post (a rule stored later may name a `webhook_url`). Building it with the system's roots
//! reads the whole trust store (the bundle and the certificate directory, about 19 million
//! instructions on Debian): a server without a webhook does not pay that at every start.
//!
//! Not done: client certificates, or headers such as an authorization token (put a token a
//! receiver needs in the URL's query, as Falcosidekick's webhook output allows).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};

pub(crate) struct Sender {
    /// The CA bundle of `webhook_ca_file` when one is given.
    roots: Option<Vec<reqwest::Certificate>>,
    client: OnceLock<reqwest::Client>,
}

impl Sender {
    pub(crate) fn from_config(
        c: &coffer_core::detect::DetectConfig,
    ) -> Result<Arc<dyn coffer_core::detect::WebhookSender>> {
        let mut roots = None;
        if !c.webhook_ca_file.is_empty() {
            let pem = std::fs::read(&c.webhook_ca_file).with_context(|| {
                format!("cannot read detect webhook_ca_file {}", c.webhook_ca_file)
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!("invalid PEM in detect webhook_ca_file {}", c.webhook_ca_file)
            })?;
            roots = Some(certs);
        }
        let me = Sender { roots, client: OnceLock::new() };
        if !c.webhook_url.is_empty() || me.roots.is_some() {
            let client = me.build().context("detection webhook client")?;
            let _ = me.client.set(client);
        }
        Ok(Arc::new(me))
    }

    fn build(&self) -> reqwest::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")));
        if let Some(certs) = &self.roots {
            b = b.tls_certs_only(certs.clone());
        }
        b.build()
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        // Two first posts at once may both build one; the second is dropped.
        let built = self.build().map_err(|e| {
            tracing::error!(error = %e, "cannot build the detection webhook client");
            "no HTTP client (see the server log)".to_owned()
        })?;
        Ok(self.client.get_or_init(|| built))
    }
}

#[async_trait::async_trait]
impl coffer_core::detect::WebhookSender for Sender {
    async fn post(&self, url: &str, body: Vec<u8>, timeout: Duration) -> Result<u16, String> {
        let r = self
            .client()?
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
