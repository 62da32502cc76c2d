//! The agent's connection to the server: the client built from `coffer { }`, retries with
//! backoff for what may pass (the server unreachable or answering 5xx), none for what will not
//! (4xx: the request itself is wrong or not allowed), and the status kept up to date with every
//! answer.

use std::time::Duration;

use anyhow::{Context, Result};
use coffer_api::{Answer, Client, ClientConfig};
use serde_json::Value;

use crate::backoff::Backoff;
use crate::config::ServerConfig;
use crate::status::Status;

#[derive(Clone)]
pub(crate) struct Conn {
    client: Client,
    num_retries: u32,
    status: Status,
}

impl Conn {
    pub(crate) fn new(cfg: &ServerConfig, status: Status) -> Result<Self> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let ca_cert_pem = cfg.ca_cert.as_deref().map(read).transpose()?;
        let client_identity_pem = match (&cfg.client_cert, &cfg.client_key) {
            (Some(c), Some(k)) => {
                let mut pem = read(c)?;
                pem.push(b'\n');
                pem.extend(read(k)?);
                Some(pem)
            }
            _ => None,
        };
        let mut client = Client::new(&ClientConfig {
            address: cfg.address.clone(),
            ca_cert_pem,
            client_identity_pem,
            timeout: Some(Duration::from_secs(30)),
            tls_skip_verify: false,
        })?;
        if cfg.seal_responses {
            // Made here, never written anywhere: answers sealed to it open only in this process.
            let key = coffer_api::SealKey::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
            client = client.with_seal_key(Some(std::sync::Arc::new(key)));
        }
        Ok(Self { client, num_retries: cfg.num_retries, status })
    }

    /// The client with `token`, for what `call` does not cover (the event stream).
    pub(crate) fn client(&self, token: Option<&str>) -> Client {
        self.client.clone().with_token(token.map(str::to_owned))
    }

    pub(crate) fn address(&self) -> &str {
        self.client.address()
    }

    /// One request with `token` (none for logins), retried while the failure may pass.
    pub(crate) async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> coffer_api::Result<Answer> {
        let client = self.client(token);
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));
        let mut attempt = 0;
        loop {
            let r = client.request(method, path, body).await;
            match &r {
                Ok(_) => self.status.contact(),
                // A 4xx is the server working and saying no. A 5xx (sealed, storage or audit
                // failing) is a server that cannot serve secrets: for max_stale it counts as
                // out of touch, or a sealed server answering every retry would keep the app
                // running on stale credentials forever.
                Err(coffer_api::Error::Api { status, .. }) if *status < 500 => {
                    self.status.contact();
                    return r;
                }
                Err(e @ coffer_api::Error::Api { .. }) => {
                    self.status.unreachable(&e.to_string());
                    if attempt >= self.num_retries {
                        return r;
                    }
                }
                Err(e) => {
                    self.status.unreachable(&e.to_string());
                    if attempt >= self.num_retries {
                        return r;
                    }
                }
            }
            if r.is_ok() {
                return r;
            }
            attempt += 1;
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
}

/// Whether an error means the server could not be asked (as opposed to an answer saying no).
pub(crate) fn is_unreachable(e: &coffer_api::Error) -> bool {
    match e {
        coffer_api::Error::Unreachable { .. } => true,
        coffer_api::Error::Api { status, .. } => *status >= 500,
        _ => false,
    }
}
