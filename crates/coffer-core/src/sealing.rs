//! Sealed responses, the server's half: which parts of an answer are secret, and sealing them to
//! the key a request named in `X-Coffer-Seal-To` (the format is `coffer_hpke`'s, documented in
//! docs/sealed-responses.md).
//!
//! Guarantees: when a request names a key, `data`, `auth` (the token and everything about it)
//! and `wrap_info` (the wrapping token), or the whole of a raw body (`sys/init`'s keys and root
//! token, say), leave the core only sealed; the lease fields (`lease_id`, `lease_duration`,
//! `renewable`) and `warnings` stay in clear so a client can manage leases, and errors are never
//! sealed (they carry no secret). A failure to seal is an error, never a cleartext answer. An
//! answer that is already sealed (one sealed when it was wrapped) is passed on as it is. Not
//! here: the audit entries, which are written from the answer in clear, HMAC'd as always, before
//! it is sealed (pipeline); and wrapping, which seals what it stores itself (wrapping). Not
//! sealed either: a non-JSON body (`Response::raw_body`), which carries only public data
//! (certificates, CRLs, OCSP answers).

use coffer_hpke::{Binding, Recipient};
use serde_json::{Map, Value, json};

use crate::logical::{Error, Request, Response, Result};

/// The binding of the answer to `req` (its path and token; see `Binding::for_request`).
pub(crate) fn binding(req: &Request) -> Binding<'_> {
    Binding::for_request(&req.path, req.client_token.as_ref().map(|t| t.expose()), Some(&req.data))
}

/// `resp` with its secret-bearing parts sealed to `to`.
pub(crate) fn seal(mut resp: Response, to: &Recipient, binding: &Binding<'_>) -> Result<Response> {
    if resp.sealed.is_some() {
        return Ok(resp);
    }
    resp.materialize()?;
    if let Some((status, body)) = resp.raw.take() {
        let body = match body {
            Value::Object(m) if !m.is_empty() => {
                json!({ "sealed": seal_members(to, binding, &m)? })
            }
            Value::Object(_) | Value::Null => body,
            _ => return Err(Error::Internal("a raw answer that is not a JSON object".into())),
        };
        resp.raw = Some((status, body));
    }
    let mut members = Map::new();
    if let Some(d) = resp.data.take() {
        members.insert("data".into(), Value::Object(d));
    }
    if let Some(a) = resp.auth.take() {
        members.insert("auth".into(), to_value(&a)?);
    }
    if let Some(w) = resp.wrap_info.take() {
        members.insert("wrap_info".into(), to_value(&w)?);
    }
    if !members.is_empty() {
        resp.sealed = Some(seal_members(to, binding, &members)?);
    }
    Ok(resp)
}

/// Whether [`seal`] would seal anything of `resp`.
pub(crate) fn has_sealable_parts(resp: &Response) -> bool {
    resp.data.is_some()
        || resp.data_json.is_some()
        || resp.auth.is_some()
        || resp.wrap_info.is_some()
        || matches!(&resp.raw, Some((_, Value::Object(m))) if !m.is_empty())
}

pub(crate) fn seal_members(
    to: &Recipient,
    binding: &Binding<'_>,
    members: &Map<String, Value>,
) -> Result<coffer_hpke::Sealed> {
    to.seal(binding, members).map_err(|e| Error::Internal(format!("sealing the answer: {e}")))
}

pub(crate) fn to_value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::Internal(format!("encoding the answer: {e}")))
}

#[cfg(test)]
mod tests {
    use coffer_hpke::KeyPair;

    use super::*;
    use crate::logical::{Auth, Operation};
    use crate::secret::SecretString;

    fn key() -> (KeyPair, Recipient) {
        let k = KeyPair::generate().expect("key");
        let r = Recipient::from_header(&k.header_value()).expect("recipient");
        (k, r)
    }

    #[test]
    fn data_and_auth_are_sealed_and_lease_fields_stay_in_clear() {
        let (k, r) = key();
        let req = Request::new(Operation::Read, "/secret/app").with_token("tok");
        let mut resp = Response::data(crate::logical::into_map(json!({"password": "canary"})));
        resp.auth = Some(Auth {
            client_token: SecretString::from("s.child"),
            accessor: "acc".into(),
            ..Auth::default()
        });
        resp.lease_id = "secret/app/x".into();
        resp.lease_duration = 60;
        resp.renewable = true;
        let sealed = seal(resp, &r, &binding(&req)).expect("seal");
        assert!(sealed.data.is_none() && sealed.auth.is_none() && sealed.wrap_info.is_none());
        assert_eq!((sealed.lease_id.as_str(), sealed.lease_duration), ("secret/app/x", 60));
        let opened = k
            .open(sealed.sealed.as_ref().expect("sealed"), &Binding::new("secret/app", Some("tok")))
            .expect("open");
        assert_eq!(opened["data"]["password"], "canary");
        assert_eq!(opened["auth"]["client_token"], "s.child");
    }

    #[test]
    fn raw_bodies_are_sealed_whole_and_empty_answers_stay_empty() {
        let (k, r) = key();
        let req = Request::new(Operation::Update, "sys/init");
        let resp = Response::raw(200, json!({"root_token": "s.root", "keys": ["k"]}));
        let sealed = seal(resp, &r, &binding(&req)).expect("seal");
        let (status, body) = sealed.raw.expect("raw");
        assert_eq!(status, 200);
        assert_eq!(body.as_object().map(Map::len), Some(1), "{body}");
        let s: coffer_hpke::Sealed = serde_json::from_value(body["sealed"].clone()).expect("s");
        let opened = k.open(&s, &Binding::new("sys/init", None)).expect("open");
        assert_eq!(opened["root_token"], "s.root");

        assert!(!has_sealable_parts(&Response::empty()));
        let empty = seal(Response::empty(), &r, &binding(&req)).expect("seal");
        assert!(empty.is_empty());
        let null = seal(Response::raw(202, Value::Null), &r, &binding(&req)).expect("seal");
        assert_eq!(null.raw, Some((202, Value::Null)));
    }

    /// A PEM or DER body (a CA certificate, a CRL) is public: it goes out as it is.
    #[test]
    fn non_json_bodies_carry_public_data_and_pass_unsealed() {
        let (_, r) = key();
        let req = Request::new(Operation::Read, "pki/ca/pem");
        let pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        let resp = Response::raw_body("application/pem-certificate-chain", pem.clone());
        assert!(!has_sealable_parts(&resp));
        let out = seal(resp, &r, &binding(&req)).expect("seal");
        let body = out.raw_body.expect("raw body");
        assert_eq!((body.content_type, body.body), ("application/pem-certificate-chain", pem));
        assert!(out.sealed.is_none());
    }
}
