//! HTTPS calls an auth method makes to an identity provider (a JWKS, OIDC discovery, the
//! Kubernetes TokenReview API): bounded in time and size, and trusting only the CA the operator
//! configured when there is one.

use std::time::Duration;

use serde_json::Value;

/// Identity providers answer in milliseconds; a login should not hang on one that does not.
const TIMEOUT: Duration = Duration::from_secs(10);
/// JWKS documents and TokenReview answers are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// A client trusting exactly the certificates in `ca_pem`, or the system's roots when empty.
pub(crate) fn client(ca_pem: &str) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("coffer/", env!("CARGO_PKG_VERSION")));
    if !ca_pem.trim().is_empty() {
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())
            .map_err(|e| format!("the CA PEM cannot be parsed: {e}"))?;
        if certs.is_empty() {
            return Err("the CA PEM holds no certificate".into());
        }
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| format!("cannot build an HTTPS client: {e}"))
}

/// Reads a JSON answer of at most [`MAX_BODY`] bytes; a non-2xx status is an error naming it.
pub(crate) async fn json(mut resp: reqwest::Response) -> Result<Value, String> {
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the answer: {e}"))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(format!("the server answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// GETs a JSON document.
pub(crate) async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let resp = client.get(url).send().await.map_err(|e| describe(url, &e))?;
    json(resp).await.map_err(|e| format!("{url}: {e}"))
}

/// A transport error with its causes, which reqwest keeps in the source chain.
pub(crate) fn describe(url: &str, e: &reqwest::Error) -> String {
    let mut msg = format!("{url}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
