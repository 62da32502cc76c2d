//! GitHub's secret-scanning partner program, received directly: `sys/leaks/github/keys` (the
//! public keys GitHub signs alerts with, written by an operator) and `sys/leaks/github` (the
//! endpoint GitHub posts alerts to, without a Coffer token).
//!
//! Guarantees: an alert is read only after its raw body verified as an ASN.1 ECDSA P-256/SHA-256
//! signature (`Github-Public-Key-Signature`, base64) by the configured key named in
//! `Github-Public-Key-Identifier`; anything else (no keys configured, a header missing or not
//! base64, an unknown key identifier, a bad signature, a body over [`MAX_BODY`]) is one 403
//! `permission denied`, whose reason goes to the audit log only, so a caller learns neither
//! which keys are configured nor what failed. The alerts are read from the verified bytes
//! themselves, never from anything parsed before. Keys are P-256 public keys in PEM
//! (SubjectPublicKeyInfo), GitHub's published form; they are stored inside the barrier.
//! Nothing here is secret (public keys, a signature), so no comparison needs to be
//! constant-time; the alert tokens are hashed as they are read (see [`super::report`]).
//!
//! Not done: fetching GitHub's keys (`https://api.github.com/meta/public_keys/secret_scanning`);
//! an operator writes them, or a job that can reach GitHub does. Replay of a signed body is not
//! refused (GitHub's format has no nonce or timestamp); a replay re-reports the same tokens,
//! which finds nothing left to act on once they were revoked.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::logical::{Error, Operation, Response, Result};
use crate::sys::Ctx;

/// The request field the HTTP layer puts the raw body in (base64), as for OCSP requests.
pub const RAW_BODY: &str = "http_raw_body";
/// The request field carrying `Github-Public-Key-Identifier`.
pub const KEY_ID_FIELD: &str = "github_public_key_identifier";
/// The request field carrying `Github-Public-Key-Signature`.
pub const SIGNATURE_FIELD: &str = "github_public_key_signature";
/// The largest alert body accepted: GitHub sends alerts in small batches.
pub const MAX_BODY: usize = 1024 * 1024;
/// The most keys kept (GitHub publishes a handful; rotation keeps two or three current).
const MAX_KEYS: usize = 32;

/// Where the keys are kept, in the leak index's view.
const KEYS: &str = "github/keys";

/// A SubjectPublicKeyInfo for a P-256 key, up to the uncompressed point: every key GitHub
/// publishes starts so (`MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE`).
const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];

#[derive(Serialize, Deserialize, Clone)]
struct StoredKeys {
    keys: Vec<StoredKey>,
}
crate::record!(StoredKeys, "GitHub secret-scanning keys", 1);

#[derive(Serialize, Deserialize, Clone)]
struct StoredKey {
    key_identifier: String,
    /// The PEM as written (answered back on read).
    key: String,
    /// The DER SubjectPublicKeyInfo.
    #[serde(with = "b64")]
    der: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// `sys/leaks/github/keys` (read, write, delete) and `sys/leaks/github` (write, no token).
pub(crate) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    let view = ctx.active.leaks.view();
    match rel {
        "leaks/github/keys" if op == Operation::Read => {
            let Some(stored) = load(view).await? else { return Err(Error::NotFound) };
            let keys: Vec<Value> = stored
                .keys
                .iter()
                .map(|k| json!({ "key_identifier": k.key_identifier, "key": k.key }))
                .collect();
            Ok(Some(Response::from_value(json!({ "public_keys": keys }))))
        }
        "leaks/github/keys" if write => {
            let keys = parse_keys(&ctx.req.data)?;
            let raw = crate::record::encode(&StoredKeys { keys })?;
            view.put(KEYS, &raw).await?;
            Ok(Some(Response::empty()))
        }
        "leaks/github/keys" if op == Operation::Delete => {
            view.delete(KEYS).await?;
            Ok(Some(Response::empty()))
        }
        "leaks/github" if write => {
            let body = verified_body(view, &ctx.req.data).await?;
            let alerts: Value = serde_json::from_slice(&body)
                .map_err(|e| Error::invalid(format!("failed to parse JSON input: {e}")))?;
            super::report::github(ctx, &alerts).await.map(Some)
        }
        "leaks/github/keys" | "leaks/github" => Err(Error::UnsupportedOperation),
        _ => Ok(None),
    }
}

async fn load(view: &coffer_barrier::View) -> Result<Option<StoredKeys>> {
    match view.get(KEYS).await? {
        Some(raw) => crate::record::decode(&raw).map(Some),
        None => Ok(None),
    }
}

/// The keys of a write: GitHub's published shape, `{"public_keys": [{"key_identifier", "key",
/// "is_current"}]}` (so its JSON can be written as fetched), each key a P-256 public key in PEM.
fn parse_keys(data: &Map<String, Value>) -> Result<Vec<StoredKey>> {
    for k in data.keys() {
        if k != "public_keys" {
            return Err(Error::invalid(format!("unknown field {k:?}")));
        }
    }
    let Some(Value::Array(list)) = data.get("public_keys") else {
        return Err(Error::invalid(
            "public_keys is required: a list of {\"key_identifier\", \"key\"} objects, as GitHub \
             publishes them",
        ));
    };
    if list.is_empty() || list.len() > MAX_KEYS {
        return Err(Error::invalid(format!("public_keys must hold 1 to {MAX_KEYS} keys")));
    }
    let mut out: Vec<StoredKey> = Vec::with_capacity(list.len());
    for (i, k) in list.iter().enumerate() {
        let Some(obj) = k.as_object() else {
            return Err(Error::invalid(format!("public_keys[{i}] is not an object")));
        };
        for f in obj.keys() {
            if !matches!(f.as_str(), "key_identifier" | "key" | "is_current") {
                return Err(Error::invalid(format!("public_keys[{i}] has an unknown field {f:?}")));
            }
        }
        let id = obj
            .get("key_identifier")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "public_keys[{i}].key_identifier is required (a string of 1 to 256 characters)"
                ))
            })?;
        if out.iter().any(|o| o.key_identifier == id) {
            return Err(Error::invalid(format!(
                "public_keys[{i}]: key_identifier {id:?} is given twice"
            )));
        }
        let pem = obj.get("key").and_then(Value::as_str).ok_or_else(|| {
            Error::invalid(format!("public_keys[{i}].key is required (a PEM public key)"))
        })?;
        let der = p256_spki_from_pem(pem).ok_or_else(|| {
            Error::invalid(format!(
                "public_keys[{i}].key is not a P-256 public key in PEM (-----BEGIN PUBLIC KEY-----)"
            ))
        })?;
        out.push(StoredKey { key_identifier: id.to_owned(), key: pem.to_owned(), der });
    }
    Ok(out)
}

/// The DER of a `PUBLIC KEY` PEM block holding an uncompressed P-256 point on the curve.
fn p256_spki_from_pem(pem: &str) -> Option<Vec<u8>> {
    let pem = pem.trim();
    let inner =
        pem.strip_prefix("-----BEGIN PUBLIC KEY-----")?.strip_suffix("-----END PUBLIC KEY-----")?;
    let b64: String = inner.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    if der.len() != P256_SPKI_PREFIX.len() + 64 || !der.starts_with(&P256_SPKI_PREFIX) {
        return None;
    }
    // A point off the curve is refused now rather than at the first alert.
    aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1, &der)
        .ok()?;
    Some(der)
}

/// The raw alert body, once its signature verified; [`Error::Refused`] (a 403 that names
/// nothing) otherwise.
async fn verified_body(view: &coffer_barrier::View, data: &Map<String, Value>) -> Result<Vec<u8>> {
    let text = |k: &str| data.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let (Some(id), Some(sig)) = (text(KEY_ID_FIELD), text(SIGNATURE_FIELD)) else {
        return Err(Error::Refused("GitHub alert without its signature headers".into()));
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = text(RAW_BODY)
        .and_then(|b| b64.decode(b).ok())
        .ok_or_else(|| Error::Refused("GitHub alert without a body".into()))?;
    if body.len() > MAX_BODY {
        return Err(Error::Refused(format!("GitHub alert body over {MAX_BODY} bytes")));
    }
    let sig = b64
        .decode(sig.trim())
        .map_err(|_| Error::Refused("GitHub alert signature is not base64".into()))?;
    let Some(keys) = load(view).await? else {
        return Err(Error::Refused("no GitHub keys are configured (sys/leaks/github/keys)".into()));
    };
    let Some(key) = keys.keys.iter().find(|k| k.key_identifier == id) else {
        return Err(Error::Refused("GitHub alert signed by a key that is not configured".into()));
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
        &key.der,
    )
    .verify(&body, &sig)
    .map_err(|_| Error::Refused("GitHub alert signature does not verify".into()))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_that_is_not_a_p256_key_is_refused() {
        assert!(
            p256_spki_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_none()
        );
        assert!(p256_spki_from_pem("not pem").is_none());
        // The right prefix, but a point that is not on the curve.
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend([1u8; 64]);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert!(p256_spki_from_pem(&pem).is_none());
    }

    #[test]
    fn keys_are_read_in_githubs_published_shape() {
        // Made with `openssl ec -pubout`, the form GitHub publishes its keys in.
        let pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESiPCn6rng9rZyNJ4ifcVf56ggeGB\nGfdjBJgl+k37Gk8jotIKDwt2xtPmyYheiT3QwjzHYU9xcwu9lLrGzf9HCg==\n-----END PUBLIC KEY-----";
        let data = json!({ "public_keys": [
            { "key_identifier": "bcb53661c06b4728e59d897fb6165d5c9cda0fd9cdf9d09ead458168deb7518c",
              "key": pem, "is_current": true }
        ]});
        let keys = parse_keys(data.as_object().expect("object")).expect("GitHub's key");
        assert_eq!(keys.len(), 1);
        let dup = json!({ "public_keys": [
            { "key_identifier": "a", "key": pem }, { "key_identifier": "a", "key": pem }
        ]});
        assert!(parse_keys(dup.as_object().expect("object")).is_err());
    }
}
