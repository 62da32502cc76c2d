//! Liveness without disclosure: the client side of `sys/leaks/check` and `sys/leaks/report`
//! (docs/leaks.md). The scanner reads the server's HMAC key, hashes each candidate locally
//! (HMAC-SHA256 of its UTF-8 bytes, exactly as found, lowercase hex) and sends only the hashes,
//! at most [`BATCH`] per request; the server answers which hashes match a live value.
//!
//! Guarantees: no candidate's cleartext is put in a request, a log line or an error; the key is
//! held in a buffer wiped on drop. A stale key (the server replaced it between the read and the
//! check) is read again once. Not done: anything about values the server does not hold (a cloud
//! provider's key is "not live" here only in the sense that it is not a live Coffer secret).

use std::collections::HashMap;

use aws_lc_rs::hmac;
use base64::Engine as _;
use coffer_api::Client;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

/// The contract's limit on hashes per request.
pub(super) const BATCH: usize = 10_000;

const CHECK: &str = "sys/leaks/check";
const REPORT: &str = "sys/leaks/report";

/// What the server says a live value is (`sys/leaks/check`'s match object, less the hash).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Match {
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Match {
    /// One line: `kv secret/data/app v3 field password`.
    pub(super) fn describe(&self) -> String {
        let mut s = self.kind.clone();
        for (label, v) in [
            ("", self.path.clone()),
            ("v", self.version.map(|v| v.to_string())),
            ("field ", self.field.clone()),
            ("lease ", self.lease_id.clone()),
            ("accessor ", self.accessor.clone()),
            ("role ", self.role.clone()),
        ] {
            if let Some(v) = v {
                s.push(' ');
                s.push_str(label);
                s.push_str(&v);
            }
        }
        s
    }
}

#[derive(Deserialize)]
struct WireMatch {
    hash: String,
    #[serde(flatten)]
    m: Match,
}

/// Why candidates could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Unverified {
    NoServer(String),
    NoPermission(String),
    Other(String),
}

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unverified::NoServer(s) => write!(f, "no server reachable: {s}"),
            Unverified::NoPermission(s) => write!(f, "no permission: {s}"),
            Unverified::Other(s) => f.write_str(s),
        }
    }
}

pub(super) struct Checker {
    client: Client,
    key_id: String,
    key: hmac::Key,
}

impl Checker {
    /// Reads the key. Every failure becomes the reason findings stay unverified.
    pub(super) async fn connect(client: Client) -> Result<Self, Unverified> {
        if client.token().is_none() {
            return Err(Unverified::NoPermission(
                "no token (set COFFER_TOKEN or run `coffer login`)".into(),
            ));
        }
        let (key_id, key) = read_key(&client).await?;
        Ok(Self { client, key_id, key })
    }

    /// The keyed hash the server compares: lowercase hex HMAC-SHA256 of the UTF-8 bytes.
    pub(super) fn hash(&self, candidate: &str) -> String {
        hex(hmac::sign(&self.key, candidate.as_bytes()).as_ref())
    }

    /// Where each live candidate is live, by index: one match per place (a value stored in two
    /// places is live in both).
    pub(super) async fn check(
        &mut self,
        candidates: &[&str],
    ) -> Result<HashMap<usize, Vec<Match>>, Unverified> {
        let mut retried = false;
        'again: loop {
            let hashes: Vec<String> = candidates.iter().map(|c| self.hash(c)).collect();
            let index: HashMap<&str, usize> =
                hashes.iter().enumerate().map(|(i, h)| (h.as_str(), i)).collect();
            let mut out: HashMap<usize, Vec<Match>> = HashMap::new();
            for batch in hashes.chunks(BATCH) {
                let body = json!({"key_id": self.key_id, "hashes": batch});
                let answer = match self.client.write(CHECK, &body).await {
                    Ok(a) => a,
                    Err(e) if !retried && is_stale_key(&e) => {
                        retried = true;
                        (self.key_id, self.key) = read_key(&self.client).await?;
                        continue 'again;
                    }
                    Err(e) => return Err(reason(&e, "update", self.client.address())),
                };
                let matches = answer
                    .data()
                    .and_then(|d| d.get("matches"))
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new()));
                let matches: Vec<WireMatch> = serde_json::from_value(matches).map_err(|e| {
                    Unverified::Other(format!(
                        "the server's answer to {CHECK} is not understood: {e}"
                    ))
                })?;
                for m in matches {
                    if let Some(&i) = index.get(m.hash.as_str()) {
                        out.entry(i).or_default().push(m.m);
                    }
                }
            }
            return Ok(out);
        }
    }

    /// `sys/leaks/report` for these (live) hashes: the actions, as the server lists them.
    pub(super) async fn report(
        &self,
        hashes: &[String],
        dry_run: bool,
    ) -> anyhow::Result<Vec<Value>> {
        let mut actions = Vec::new();
        for batch in hashes.chunks(BATCH) {
            let body = json!({"key_id": self.key_id, "hashes": batch, "dry_run": dry_run});
            let answer = self.client.write(REPORT, &body).await?;
            if let Some(Value::Array(a)) = answer.data().and_then(|d| d.get("actions")) {
                actions.extend(a.iter().cloned());
            }
        }
        Ok(actions)
    }
}

async fn read_key(client: &Client) -> Result<(String, hmac::Key), Unverified> {
    let answer = client.read(CHECK).await.map_err(|e| reason(&e, "read", client.address()))?;
    let data =
        answer.data().ok_or_else(|| Unverified::Other(format!("{CHECK} answered no data")))?;
    if data.get("algorithm").and_then(Value::as_str) != Some("hmac-sha256") {
        return Err(Unverified::Other(format!(
            "{CHECK} offers algorithm {}, this client knows hmac-sha256 only",
            data.get("algorithm").unwrap_or(&Value::Null)
        )));
    }
    let key_id = data.get("key_id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let key = data
        .get("key")
        .and_then(Value::as_str)
        .and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
        .map(Zeroizing::new)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            Unverified::Other(format!("{CHECK} answered a key that is not 32 bytes of base64"))
        })?;
    Ok((key_id, hmac::Key::new(hmac::HMAC_SHA256, &key)))
}

fn is_stale_key(e: &coffer_api::Error) -> bool {
    matches!(e, coffer_api::Error::Api { status: 400, errors, .. }
        if errors.iter().any(|m| m.contains("key_id")))
}

/// Why the check could not be made, from the error of a request to it.
fn reason(e: &coffer_api::Error, capability: &str, addr: &str) -> Unverified {
    match e {
        coffer_api::Error::Unreachable { cause, .. } => {
            Unverified::NoServer(format!("{addr}: {cause}"))
        }
        coffer_api::Error::Api { status: 403, .. } => {
            Unverified::NoPermission(format!("the token may not {capability} {CHECK} (403)"))
        }
        coffer_api::Error::Api { status: 404, .. } => Unverified::Other(format!(
            "the server at {addr} has no {CHECK} (404): a Coffer without leak checking"
        )),
        coffer_api::Error::Api { status: 503, .. } => {
            Unverified::Other(format!("the server at {addr} is sealed or has no active node (503)"))
        }
        coffer_api::Error::Api { status, errors, .. } => {
            Unverified::Other(format!("{CHECK} refused ({status}): {}", errors.join("; ")))
        }
        other => Unverified::Other(format!("{CHECK}: {other}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_hmac_sha256_in_lowercase_hex() {
        // RFC 4231 test case 2: key "Jefe".
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn match_describes_itself_in_one_line() {
        let m = Match {
            kind: "kv".into(),
            path: Some("secret/data/app".into()),
            version: Some(3),
            field: Some("password".into()),
            ..Default::default()
        };
        assert_eq!(m.describe(), "kv secret/data/app v3 field password");
    }
}
