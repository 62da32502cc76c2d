//! Server-side faults from the client side: start, list and stop the faults of a Coffer
//! server's `sys/chaos/faults` (the server must have `chaos { enabled = true }` and the token
//! `sudo` there). Used by `coffer chaos fault` and by experiments.
//!
//! Guarantees: the token is sent only as a sensitive header and never appears in an error or
//! `Debug` output; TLS trusts the CA file given, else the platform's store (never "accept
//! any"). Stopping a fault that already ended succeeds, so a rollback after the deadline is no
//! failure. Not done: retries (a failed call is reported, the fault's deadline still ends it).

use std::path::PathBuf;
use std::time::Duration;

use coffer_api::chaos::{FAULTS_PATH, Fault, FaultSpec};
use coffer_api::{Client, ClientConfig};
use serde_json::Value;

/// A server and the credentials to reach its fault API.
#[derive(Clone)]
pub struct ServerTarget {
    /// `https://host:8200`
    pub address: String,
    pub token: String,
    /// PEM bundle of the CAs to trust for `address`.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for ServerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTarget")
            .field("address", &self.address)
            .field("token", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("cannot read CA file {path}: {cause}")]
    CaFile { path: String, cause: String },
    #[error(transparent)]
    Api(#[from] coffer_api::Error),
    #[error("unexpected answer from sys/chaos/faults: {0}")]
    Decode(String),
}

impl ServerTarget {
    /// The typed API client for this target (30 s timeout: a latency fault never applies to
    /// `sys/chaos/*`, so these calls are quick).
    pub fn client(&self) -> Result<Client, FaultError> {
        let ca_cert_pem = match &self.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| FaultError::CaFile {
                path: p.display().to_string(),
                cause: e.to_string(),
            })?),
            None => None,
        };
        let cfg = ClientConfig {
            address: self.address.trim_end_matches('/').to_owned(),
            ca_cert_pem,
            client_identity_pem: None,
            timeout: Some(Duration::from_secs(30)),
            tls_skip_verify: false,
        };
        Ok(Client::new(&cfg)?.with_token(Some(self.token.clone())))
    }
}

fn data(body: Option<Value>) -> Result<Value, FaultError> {
    body.and_then(|mut b| b.get_mut("data").map(Value::take))
        .ok_or_else(|| FaultError::Decode("no data in the answer".into()))
}

/// Starts a fault; the server's answer, with its id and deadline.
pub async fn start_with(client: &Client, spec: &FaultSpec) -> Result<Fault, FaultError> {
    let body = serde_json::to_value(spec).map_err(|e| FaultError::Decode(e.to_string()))?;
    let answer = client.write(FAULTS_PATH, &body).await?;
    serde_json::from_value(data(answer.body)?).map_err(|e| FaultError::Decode(e.to_string()))
}

/// The faults running, oldest first.
pub async fn list_with(client: &Client) -> Result<Vec<Fault>, FaultError> {
    let answer = client.read(FAULTS_PATH).await?;
    let d = data(answer.body)?;
    let faults = d.get("faults").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut faults = faults
        .into_values()
        .map(|v| serde_json::from_value(v).map_err(|e| FaultError::Decode(e.to_string())))
        .collect::<Result<Vec<Fault>, _>>()?;
    faults.sort_by(|a, b| (&a.started_at, &a.id).cmp(&(&b.started_at, &b.id)));
    Ok(faults)
}

/// Ends one fault now (success also when it has ended already).
pub async fn stop_with(client: &Client, id: &str) -> Result<(), FaultError> {
    if id.is_empty() || id.contains('/') {
        return Err(FaultError::Decode(format!("{id:?} is not a fault id")));
    }
    client.delete(&format!("{FAULTS_PATH}/{id}")).await?;
    Ok(())
}

/// Ends every fault now.
pub async fn stop_all_with(client: &Client) -> Result<(), FaultError> {
    client.delete(FAULTS_PATH).await?;
    Ok(())
}

pub async fn start(t: &ServerTarget, spec: &FaultSpec) -> Result<Fault, FaultError> {
    start_with(&t.client()?, spec).await
}

pub async fn list(t: &ServerTarget) -> Result<Vec<Fault>, FaultError> {
    list_with(&t.client()?).await
}

pub async fn stop(t: &ServerTarget, id: &str) -> Result<(), FaultError> {
    stop_with(&t.client()?, id).await
}

pub async fn stop_all(t: &ServerTarget) -> Result<(), FaultError> {
    stop_all_with(&t.client()?).await
}
