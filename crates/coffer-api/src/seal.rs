//! Sealed answers, the client's half: a key pair made in memory ([`SealKey`]), the header that
//! asks the server to seal to it, and opening what comes back (docs/sealed-responses.md).
//!
//! Guarantees: the private key never leaves the `SealKey` (no `Debug`, `Clone` or serialization;
//! zeroized on drop); an answer opens only for the path and token it was sealed for; opening
//! never lets a sealed member replace a member the server sent in clear. Not guaranteed: that the
//! answer came from the server (sealing hides, TLS authenticates; see `coffer_hpke`).

use serde_json::{Map, Value};

pub use coffer_hpke::{Binding, HEADER as SEAL_TO_HEADER, Sealed, UNWRAP_PATH};

use crate::Envelope;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Hpke(#[from] coffer_hpke::Error),
    #[error("the answer has a \"sealed\" member that is not a sealed object: {0}")]
    Malformed(String),
    #[error("the sealed answer holds {0:?}, which the answer also has in clear")]
    Conflict(String),
    #[error(
        "the server answered in clear although the request asked for a sealed answer \
         (is it a Coffer server?)"
    )]
    NotSealed,
}

/// An X25519 key pair for sealed answers, made in memory for one process.
pub struct SealKey(coffer_hpke::KeyPair);

impl SealKey {
    pub fn generate() -> Result<Self, SealError> {
        Ok(Self(coffer_hpke::KeyPair::generate()?))
    }

    pub fn public_key(&self) -> &[u8; 32] {
        self.0.public_key()
    }

    /// The value of `X-Coffer-Seal-To`: the public key, base64url without padding.
    pub fn header_value(&self) -> String {
        self.0.header_value()
    }

    /// `envelope` with its sealed parts opened: `data`, `auth` and `wrap_info` as the server had
    /// them. `path` is the request path (as sent after `/v1/`) and `token` the token the request
    /// carried; for `sys/wrapping/unwrap`, the wrapping token. An envelope that is not sealed is
    /// returned as it is.
    pub fn open(
        &self,
        envelope: &Envelope,
        path: &str,
        token: Option<&str>,
    ) -> Result<Envelope, SealError> {
        let mut body =
            serde_json::to_value(envelope).map_err(|e| SealError::Malformed(e.to_string()))?;
        self.open_body(&mut body, &Binding::for_request(path, token, None))?;
        serde_json::from_value(body).map_err(|e| SealError::Malformed(e.to_string()))
    }

    /// Opens a response body in place: removes `sealed` and puts the members it held (for a raw
    /// body such as `sys/init`'s, the whole body) beside the clear ones. Returns whether it was
    /// sealed.
    pub fn open_body(&self, body: &mut Value, binding: &Binding<'_>) -> Result<bool, SealError> {
        let Value::Object(obj) = body else { return Ok(false) };
        let Some(sealed) = obj.remove("sealed") else { return Ok(false) };
        let sealed: Sealed =
            serde_json::from_value(sealed).map_err(|e| SealError::Malformed(e.to_string()))?;
        let members = self.0.open(&sealed, binding)?;
        merge(obj, members)?;
        Ok(true)
    }

    /// [`SealKey::open_body`] for an answer to a request that asked for sealing: an answer
    /// with something to hide that came back in clear is an error, not a success.
    pub(crate) fn open_answer(
        &self,
        body: &mut Value,
        binding: &Binding<'_>,
    ) -> Result<(), SealError> {
        if self.open_body(body, binding)? || !holds_secrets(body) {
            Ok(())
        } else {
            Err(SealError::NotSealed)
        }
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SealKey").field(&self.header_value()).finish()
    }
}

fn merge(obj: &mut Map<String, Value>, members: Map<String, Value>) -> Result<(), SealError> {
    for (k, v) in members {
        match obj.get(&k) {
            None | Some(Value::Null) => {
                obj.insert(k, v);
            }
            Some(_) => return Err(SealError::Conflict(k)),
        }
    }
    Ok(())
}

/// Whether an unsealed body says anything a sealed one would have hidden: an envelope's `data`,
/// `auth` or `wrap_info`, or any raw (non-envelope) body.
fn holds_secrets(body: &Value) -> bool {
    match body {
        Value::Object(m) if m.contains_key("request_id") => {
            ["data", "auth", "wrap_info"].iter().any(|k| m.get(*k).is_some_and(|v| !v.is_null()))
        }
        Value::Object(m) => !m.is_empty(),
        Value::Null => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sealed_envelope(key: &SealKey, path: &str, token: Option<&str>) -> Envelope {
        let to = coffer_hpke::Recipient::from_header(&key.header_value()).expect("recipient");
        let members = match json!({"data": {"password": "canary"}, "auth": {"client_token": "s.x"}})
        {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let sealed = to.seal(&Binding::new(path, token), &members).expect("seal");
        Envelope {
            lease_id: "l".into(),
            lease_duration: 30,
            request_id: "r".into(),
            sealed: Some(sealed),
            ..Envelope::default()
        }
    }

    #[test]
    fn open_gives_back_the_clear_parts_and_keeps_the_lease_fields() {
        let k = SealKey::generate().expect("key");
        let env = sealed_envelope(&k, "secret/app", Some("tok"));
        let open = k.open(&env, "/secret/app", Some("tok")).expect("open");
        assert_eq!(open.data.expect("data")["password"], "canary");
        assert_eq!(open.auth.expect("auth")["client_token"], "s.x");
        assert_eq!((open.lease_id.as_str(), open.lease_duration), ("l", 30));
        assert!(open.sealed.is_none());
    }

    #[test]
    fn open_refuses_another_path_another_token_and_tampering() {
        let k = SealKey::generate().expect("key");
        let env = sealed_envelope(&k, "secret/app", Some("tok"));
        assert!(k.open(&env, "secret/other", Some("tok")).is_err());
        assert!(k.open(&env, "secret/app", Some("tok2")).is_err());
        let mut bad = env.clone();
        if let Some(s) = bad.sealed.as_mut() {
            s.ciphertext[0] ^= 0x80;
        }
        let e = k.open(&bad, "secret/app", Some("tok")).expect_err("tampered");
        assert!(matches!(e, SealError::Hpke(coffer_hpke::Error::Open)), "{e}");
    }

    #[test]
    fn a_sealed_member_may_not_replace_a_clear_one() {
        let k = SealKey::generate().expect("key");
        let mut env = sealed_envelope(&k, "p", None);
        env.data = Some(Map::new());
        let e = k.open(&env, "p", None).expect_err("conflict");
        assert!(matches!(e, SealError::Conflict(ref m) if m == "data"), "{e}");
    }

    #[test]
    fn an_answer_in_clear_to_a_sealed_request_is_refused_when_it_holds_secrets() {
        let k = SealKey::generate().expect("key");
        let b = Binding::new("p", None);
        let mut clear = json!({"request_id": "r", "data": {"password": "x"}});
        assert!(matches!(k.open_answer(&mut clear, &b), Err(SealError::NotSealed)));
        let mut raw = json!({"initialized": true});
        assert!(matches!(k.open_answer(&mut raw, &b), Err(SealError::NotSealed)));
        let mut nothing = json!({"request_id": "r", "data": null, "lease_id": "x"});
        assert!(k.open_answer(&mut nothing, &b).is_ok());
        assert!(k.open_answer(&mut Value::Null, &b).is_ok());
    }

    #[test]
    fn the_key_prints_only_its_public_half() {
        let k = SealKey::generate().expect("key");
        assert_eq!(format!("{k:?}"), format!("SealKey({:?})", k.header_value()));
    }
}
