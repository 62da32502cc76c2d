//! The paths that use a key (or none): `encrypt`, `decrypt`, `rewrap`, `datakey`, `hmac`,
//! `sign`, `verify`, and the keyless `hash` and `random`.
//!
//! Guarantees: a single request and each item of a `batch_input` go through the same code, so
//! they answer the same; in a batch one item's failure is that item's `error` and never stops
//! the others; decrypted plaintexts and data keys are held in zeroized buffers until they are
//! put into the answer. `encrypt` on a missing key creates it only when the request is a
//! `create` (the caller has the create capability), as Vault's upsert does.

use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use coffer_core::framework::Req;
use coffer_core::hex::hex;
use coffer_core::{Error, Fields, Operation, Response, Result};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::key::{KeyType, Policy};
use crate::keys::b64_field;
use crate::secret::SecretBytes;
use crate::sign::{Hash, SignOptions};
use crate::{ItemError, ItemResult, Transit, batch_items, batch_response};

/// Vault's limit on `random` bytes per request.
const RANDOM_MAX_BYTES: u64 = 128 * 1024;

fn item_b64(f: &Fields<'_>, k: &str) -> ItemResult<Vec<u8>> {
    match f.str(k).map_err(|e| ItemError::User(e.to_string()))? {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s.trim())
            .map_err(|_| ItemError::User(format!("failed to base64-decode {k}"))),
    }
}

/// Go's message for bad base64, which Vault answers as is.
pub(crate) fn go_b64_error(s: &str, e: base64::DecodeError) -> String {
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let at = match e {
        _ if s.bytes().any(|b| !alphabet(b)) => s.bytes().position(|b| !alphabet(b)).unwrap_or(0),
        base64::DecodeError::InvalidByte(i, _)
        | base64::DecodeError::InvalidLastSymbol { offset: i, .. } => i,
        base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => {
            s.len() - s.len() % 4
        }
    };
    format!("illegal base64 data at input byte {at}")
}

/// A base64 input field (`input`), with Vault's message.
fn item_input(f: &Fields<'_>) -> ItemResult<Vec<u8>> {
    match item_str(f, "input")? {
        None => Ok(Vec::new()),
        Some(s) => B64.decode(s.as_bytes()).map_err(|e| {
            ItemError::User(format!("unable to decode input as base64: {}", go_b64_error(&s, e)))
        }),
    }
}

/// Vault's refusal of `associated_data` for a key that is not an AEAD, naming the item.
fn non_aead_check(p: &Policy, i: usize, f: &Fields<'_>) -> ItemResult<()> {
    let given = item_str(f, "associated_data")?.is_some_and(|s| !s.is_empty());
    if given && !p.key_type.is_aead() {
        return Err(ItemError::User(format!(
            "'[{i}].associated_data' provided for non-AEAD cipher suite {}",
            p.key_type.name()
        )));
    }
    Ok(())
}

fn item_u64(f: &Fields<'_>, k: &str) -> ItemResult<u64> {
    f.u64(k).map(Option::unwrap_or_default).map_err(|e| ItemError::User(e.to_string()))
}

fn item_str(f: &Fields<'_>, k: &str) -> ItemResult<Option<String>> {
    f.str(k).map_err(|e| ItemError::User(e.to_string()))
}

/// A batch's answer items: each result, or its error, with the caller's `reference` echoed.
struct Batch {
    results: Vec<Value>,
    /// Per item: `None` success, `Some(true)` caller's error, `Some(false)` server's error.
    errors: Vec<Option<bool>>,
}

impl Batch {
    fn new() -> Self {
        Batch { results: Vec::new(), errors: Vec::new() }
    }

    /// `failed`: the fields a failed item still carries (Vault's decrypt answers
    /// `"plaintext": ""` beside the error).
    fn push(
        &mut self,
        item: &Map<String, Value>,
        r: ItemResult<Map<String, Value>>,
        failed: &Map<String, Value>,
    ) {
        let reference = item.get("reference").cloned().unwrap_or(json!(""));
        let mut out = match r {
            Ok(m) => {
                self.errors.push(None);
                m
            }
            Err(e) => {
                self.errors.push(Some(matches!(e, ItemError::User(_))));
                let mut m = failed.clone();
                m.insert("error".into(), json!(e.message()));
                m
            }
        };
        out.insert("reference".into(), reference);
        self.results.push(Value::Object(out));
    }
}

/// How a batch with failed items is answered.
#[derive(Clone, Copy, PartialEq)]
enum Failures {
    /// `encrypt`, `decrypt`: 400/500 or `partial_failure_response_code`, as Vault.
    Status,
    /// `rewrap`, `hmac`, `sign`, `verify`: 200, the failures only in the items, as Vault.
    ItemsOnly,
}

/// Runs `one` on the request (single) or on each batch item, and answers in Vault's shape.
fn run(
    r: &Req<'_>,
    items: Option<Vec<Map<String, Value>>>,
    failures: Failures,
    one: impl FnMut(usize, &Map<String, Value>) -> ItemResult<Map<String, Value>>,
) -> Result<Response> {
    run_with(r, items, failures, &Map::new(), one)
}

/// `run`, where a failed batch item also carries `failed`'s fields.
fn run_with(
    r: &Req<'_>,
    items: Option<Vec<Map<String, Value>>>,
    failures: Failures,
    failed: &Map<String, Value>,
    mut one: impl FnMut(usize, &Map<String, Value>) -> ItemResult<Map<String, Value>>,
) -> Result<Response> {
    match items {
        None => Ok(Response::data(one(0, r.data)?)),
        Some(items) => {
            let mut b = Batch::new();
            for (i, item) in items.iter().enumerate() {
                let res = one(i, item);
                b.push(item, res, failed);
            }
            if failures == Failures::ItemsOnly {
                b.errors.iter_mut().for_each(|e| *e = None);
            }
            let code = r.u64("partial_failure_response_code").ok().flatten();
            Ok(batch_response(r.id, b.results, &b.errors, code))
        }
    }
}

/// Vault's rule: in a batch, `context` is in every item or in none.
fn check_contexts(items: &Option<Vec<Map<String, Value>>>) -> Result<bool> {
    let Some(items) = items else { return Ok(false) };
    let has = |m: &Map<String, Value>| {
        m.get("context").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
    };
    let first = has(&items[0]);
    if items.iter().any(|m| has(m) != first) {
        return Err(Error::invalid(
            "context should be set either in all the request blocks or in none",
        ));
    }
    Ok(first)
}

fn hash_from(r: &Req<'_>, keys: &[&str]) -> Result<(Hash, String)> {
    let name = r.capture("urlalgorithm");
    let mut name = name.to_owned();
    for k in keys {
        if !name.is_empty() {
            break;
        }
        name = r.str(k)?.unwrap_or_default();
    }
    if name.is_empty() {
        name = "sha2-256".into();
    }
    let h = Hash::parse(&name)
        .ok_or_else(|| Error::invalid(format!("invalid hash algorithm {name:?}")))?;
    Ok((h, name))
}

impl Transit {
    /// The named key, or Vault's 400 `<what> key not found`.
    async fn key_for(&self, r: &Req<'_>, what: &str) -> Result<Arc<Policy>> {
        self.cached(r.capture("name"))
            .await?
            .ok_or_else(|| Error::invalid(format!("{what} not found")))
    }

    pub(crate) async fn encrypt(&self, r: &Req<'_>) -> Result<Response> {
        let items = batch_items(r.data)?;
        if items.is_none() && !Fields::new(r.data).has("plaintext") {
            return Err(Error::invalid("missing plaintext to encrypt"));
        }
        let batch_context = check_contexts(&items)?;
        let mut warnings = Vec::new();
        let p = match self.cached(r.capture("name")).await? {
            Some(p) => p,
            None if r.operation == Operation::Create => {
                let context_set = match &items {
                    Some(_) => batch_context,
                    None => r.str("context")?.is_some_and(|s| !s.is_empty()),
                };
                if r.bool("convergent_encryption")?.unwrap_or(false) && !context_set {
                    return Err(Error::invalid(
                        "convergent encryption requires derivation to be enabled, so context is required",
                    ));
                }
                let type_name = r.str("type")?.unwrap_or_else(|| "aes256-gcm96".into());
                match KeyType::parse(&type_name) {
                    Some(t) if t.is_aead() => {}
                    Some(t) if t.is_ecdsa() => {
                        return Err(Error::invalid(format!(
                            "key type {type_name} not supported for this operation"
                        )));
                    }
                    _ => return Err(Error::invalid(format!("unknown key type {type_name}"))),
                }
                let n = Self::new_key(r, context_set)?;
                let _g = self.lock.lock().await;
                match self.load(r.capture("name")).await? {
                    Some(p) => {
                        warnings.push("Attempted creation of the key during the encrypt operation, but it was created beforehand".to_owned());
                        Arc::new(p)
                    }
                    None => {
                        let p = Policy::create(r.capture("name"), &n)?;
                        self.save(&p).await?;
                        Arc::new(p)
                    }
                }
            }
            None => return Err(Error::invalid("encryption key not found")),
        };
        let mut resp = run(r, items, Failures::Status, |i, item| {
            let f = Fields::new(item);
            let plaintext = Zeroizing::new(match item_str(&f, "plaintext")? {
                None => return Err(ItemError::User("missing plaintext to encrypt".into())),
                Some(s) => {
                    B64.decode(s.as_bytes()).map_err(|e| ItemError::User(go_b64_error(&s, e)))?
                }
            });
            non_aead_check(&p, i, &f)?;
            let (c, v) = p.encrypt(
                item_u64(&f, "key_version")?,
                &item_b64(&f, "context")?,
                &item_b64(&f, "nonce")?,
                &plaintext,
                &item_b64(&f, "associated_data")?,
            )?;
            Ok(obj(json!({"ciphertext": c, "key_version": v})))
        })?;
        resp.warnings.extend(warnings);
        Ok(resp)
    }

    pub(crate) async fn decrypt(&self, r: &Req<'_>) -> Result<Response> {
        let items = batch_items(r.data)?;
        if items.is_none() && !Fields::new(r.data).has("ciphertext") {
            return Err(Error::invalid("missing ciphertext to decrypt"));
        }
        check_contexts(&items)?;
        let p = self.key_for(r, "encryption key").await?;
        run_with(r, items, Failures::Status, &obj(json!({"plaintext": ""})), |i, item| {
            let f = Fields::new(item);
            let c = item_str(&f, "ciphertext")?
                .ok_or_else(|| ItemError::User("missing ciphertext to decrypt".into()))?;
            non_aead_check(&p, i, &f)?;
            let (plain, _) =
                p.decrypt(&item_b64(&f, "context")?, &c, &item_b64(&f, "associated_data")?)?;
            let encoded = Zeroizing::new(B64.encode(plain.as_slice()));
            Ok(obj(json!({"plaintext": encoded.as_str()})))
        })
    }

    pub(crate) async fn rewrap(&self, r: &Req<'_>) -> Result<Response> {
        let items = batch_items(r.data)?;
        if items.is_none() && !Fields::new(r.data).has("ciphertext") {
            return Err(Error::invalid("missing ciphertext to decrypt"));
        }
        check_contexts(&items)?;
        let p = self.key_for(r, "encryption key").await?;
        let top_version = r.u64("key_version")?.unwrap_or(0);
        run(r, items, Failures::ItemsOnly, |_, item| {
            let f = Fields::new(item);
            let c = item_str(&f, "ciphertext")?
                .ok_or_else(|| ItemError::User("missing ciphertext to decrypt".into()))?;
            let context = item_b64(&f, "context")?;
            let aad = item_b64(&f, "associated_data")?;
            let (plain, _) = p.decrypt(&context, &c, &aad)?;
            let ver = match item_u64(&f, "key_version")? {
                0 => top_version,
                v => v,
            };
            let (c, v) = p.encrypt(ver, &context, &item_b64(&f, "nonce")?, &plain, &aad)?;
            Ok(obj(json!({"ciphertext": c, "key_version": v})))
        })
    }

    pub(crate) async fn datakey(&self, r: &Req<'_>) -> Result<Response> {
        let kind = r.capture("plaintext");
        let with_plaintext = match kind {
            "plaintext" => true,
            "wrapped" => false,
            _ => return Err(Error::invalid("Invalid path, must be 'plaintext' or 'wrapped'")),
        };
        let context = b64_field(r.str("context")?, "context")?;
        let nonce = b64_field(r.str("nonce")?, "nonce")?;
        let aad = b64_field(r.str("associated_data")?, "associated_data")?;
        let p = self.key_for(r, "encryption key").await?;
        let bits = r.u64("bits")?.unwrap_or(256);
        if !matches!(bits, 128 | 256 | 512) {
            return Err(Error::invalid("invalid bit length"));
        }
        let data_key = SecretBytes::random((bits / 8) as usize);
        let (c, v) = p.encrypt(
            r.u64("key_version")?.unwrap_or(0),
            &context,
            &nonce,
            data_key.expose(),
            &aad,
        )?;
        let mut d = obj(json!({"ciphertext": c, "key_version": v}));
        if with_plaintext {
            let encoded = Zeroizing::new(B64.encode(data_key.expose()));
            d.insert("plaintext".into(), json!(encoded.as_str()));
        }
        Ok(Response::data(d))
    }

    pub(crate) async fn random(&self, r: &Req<'_>) -> Result<Response> {
        let source_seg = r.capture("source");
        let url_bytes = r.capture("urlbytes");
        let valid_source = |s: &str| matches!(s, "" | "platform" | "seal" | "all");
        // Go's strconv message, which Vault answers as is.
        let parse_bytes = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                Error::invalid(format!(
                    "error parsing url-set byte count: strconv.Atoi: parsing {s:?}: invalid syntax"
                ))
            })
        };
        let (source, bytes) = if source_seg.is_empty() {
            (r.str("source")?.unwrap_or_else(|| "platform".into()), r.u64("bytes")?.unwrap_or(32))
        } else if url_bytes.is_empty() && valid_source(source_seg) {
            (source_seg.to_owned(), r.u64("bytes")?.unwrap_or(32))
        } else if url_bytes.is_empty() {
            ("platform".to_owned(), parse_bytes(source_seg)?)
        } else {
            (source_seg.to_owned(), parse_bytes(url_bytes)?)
        };
        if bytes < 1 {
            return Err(Error::invalid("'bytes' cannot be less than 1"));
        }
        if bytes > RANDOM_MAX_BYTES {
            return Err(Error::invalid(format!("'bytes' should be less than {RANDOM_MAX_BYTES}")));
        }
        let format = r.str("format")?.unwrap_or_else(|| "base64".into());
        if !matches!(format.as_str(), "hex" | "base64") {
            return Err(Error::invalid(format!(
                "unsupported encoding format {format:?}; must be \"hex\" or \"base64\""
            )));
        }
        let mut warnings = Vec::new();
        match source.as_str() {
            "" | "platform" | "all" => {}
            // The seal has no entropy source of its own (Shamir), so this is the platform's.
            "seal" => warnings.push(
                "no seal/entropy augmentation available, using platform entropy source".to_owned(),
            ),
            other => {
                return Err(Error::invalid(format!(
                    "unsupported entropy source {other:?}; must be \"platform\" or \"seal\", or \"all\""
                )));
            }
        }
        let b = SecretBytes::random(bytes as usize);
        let out = if format == "hex" { hex(b.expose()) } else { B64.encode(b.expose()) };
        let mut resp = Response::data(obj(json!({ "random_bytes": out })));
        resp.warnings = warnings;
        Ok(resp)
    }

    pub(crate) async fn hash(&self, r: &Req<'_>) -> Result<Response> {
        let input = r.str("input")?.ok_or_else(|| Error::invalid("input missing"))?;
        let input = B64.decode(input.as_bytes()).map_err(|e| {
            Error::invalid(format!("unable to decode input as base64: {}", go_b64_error(&input, e)))
        })?;
        let format = r.str("format")?.unwrap_or_else(|| "hex".into());
        if !matches!(format.as_str(), "hex" | "base64") {
            return Err(Error::invalid(format!(
                "unsupported encoding format {format}; must be \"hex\" or \"base64\""
            )));
        }
        let name = match r.capture("urlalgorithm") {
            "" => r.str("algorithm")?.unwrap_or_else(|| "sha2-256".into()),
            a => a.to_owned(),
        };
        let alg = Hash::parse(&name)
            .filter(|h| *h != Hash::None)
            .ok_or_else(|| Error::invalid(format!("unsupported algorithm {name}")))?
            .digest_alg(&name)?;
        let sum = digest::digest(alg, &input);
        let out = if format == "hex" { hex(sum.as_ref()) } else { B64.encode(sum.as_ref()) };
        Ok(Response::data(obj(json!({ "sum": out }))))
    }

    pub(crate) async fn hmac(&self, r: &Req<'_>) -> Result<Response> {
        let (hash, name) = hash_from(r, &["algorithm", "hash_algorithm"])?;
        let alg = hash
            .digest_alg(&name)
            .map_err(|_| Error::invalid(format!("unsupported algorithm {name:?}")))?;
        let items = batch_items(r.data)?;
        if items.is_none() && !Fields::new(r.data).has("input") {
            return Err(Error::invalid("missing input for HMAC"));
        }
        let p = self.key_for(r, "encryption key").await?;
        let top_version = r.u64("key_version")?.unwrap_or(0);
        run(r, items, Failures::ItemsOnly, |_, item| {
            let f = Fields::new(item);
            let input = item_input(&f)?;
            let ver = match item_u64(&f, "key_version")? {
                0 => top_version,
                v => v,
            };
            Ok(obj(json!({ "hmac": p.hmac_value(ver, alg, &input)? })))
        })
    }

    pub(crate) async fn sign(&self, r: &Req<'_>) -> Result<Response> {
        let (hash, hash_name) = hash_from(r, &["hash_algorithm", "algorithm"])?;
        let o = self.sign_options(r, hash, &hash_name)?;
        let p = self.key_for(r, "signing key").await?;
        if !p.key_type.supports_signing() {
            return Err(Error::invalid(format!(
                "key type {} does not support signing",
                p.key_type.name()
            )));
        }
        let items = batch_items(r.data)?;
        let ver = r.u64("key_version")?.unwrap_or(0);
        run(r, items, Failures::ItemsOnly, |_, item| {
            let f = Fields::new(item);
            let input = item_input(&f)?;
            let (sig, v, public_key) = p.sign(ver, &item_b64(&f, "context")?, &input, &o)?;
            let mut m = obj(json!({"signature": sig, "key_version": v}));
            if let Some(pk) = public_key {
                m.insert("public_key".into(), json!(pk));
            }
            Ok(m)
        })
    }

    fn sign_options<'a>(
        &self,
        r: &Req<'_>,
        hash: Hash,
        hash_name: &'a str,
    ) -> Result<SignOptions<'a>> {
        let marshaling = r.str("marshaling_algorithm")?.unwrap_or_else(|| "asn1".into());
        let jws = match marshaling.as_str() {
            "asn1" => false,
            "jws" => true,
            m => return Err(Error::invalid(format!("invalid marshaling type {m:?}"))),
        };
        let sig_alg = r.str("signature_algorithm")?.unwrap_or_default();
        let rsa_pss = match sig_alg.as_str() {
            "" | "pss" => true,
            "pkcs1v15" => false,
            a => return Err(Error::invalid(format!("unsupported rsa signature algorithm {a}"))),
        };
        match r.str("salt_length")?.as_deref() {
            None | Some("" | "auto" | "hash") => {}
            Some(s) => {
                return Err(Error::invalid(format!(
                    "salt_length {s:?} is not supported: Coffer signs RSA-PSS with a salt as long as the digest (\"auto\" or \"hash\")"
                )));
            }
        }
        let prehashed = r.bool("prehashed")?.unwrap_or(false);
        if hash == Hash::None && (!prehashed || rsa_pss) {
            return Err(Error::invalid(
                "hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15",
            ));
        }
        Ok(SignOptions { hash, hash_name, prehashed, rsa_pss, jws })
    }

    pub(crate) async fn verify(&self, r: &Req<'_>) -> Result<Response> {
        let items = batch_items(r.data)?;
        let has = |m: &Map<String, Value>, k: &str| m.get(k).is_some_and(|v| !v.is_null());
        // As Vault: an item with a `signature` is a signature to check, whatever else it has.
        let one = [r.data.clone()];
        let list: &[Map<String, Value>] = items.as_deref().unwrap_or(&one);
        let s = list.iter().filter(|m| has(m, "signature")).count();
        let h = list.iter().filter(|m| has(m, "hmac") && !has(m, "signature")).count();
        let (sig_found, hmac_found, missing) = (s > 0, h > 0, s + h < list.len());
        match (sig_found, hmac_found, missing) {
            (false, false, _) if items.is_none() => {
                return Err(Error::invalid(
                    "neither a 'signature' nor an 'hmac' were given to verify",
                ));
            }
            (true, true, _) => {
                return Err(Error::invalid(
                    "elements of batch_input must all provide 'signature' or all provide 'hmac'",
                ));
            }
            (true, false, true) => {
                return Err(Error::invalid("some elements of batch_input are missing 'signature'"));
            }
            (false, true, true) => {
                return Err(Error::invalid("some elements of batch_input are missing 'hmac'"));
            }
            (false, false, _) => {
                return Err(Error::invalid("no batch_input elements have 'signature' or 'hmac'"));
            }
            _ => {}
        }
        if hmac_found {
            let (hash, name) = hash_from(r, &["algorithm", "hash_algorithm"])?;
            let alg = hash
                .digest_alg(&name)
                .map_err(|_| Error::invalid(format!("unsupported algorithm {name:?}")))?;
            let p = self.key_for(r, "encryption key").await?;
            return run(r, items, Failures::ItemsOnly, |_, item| {
                let f = Fields::new(item);
                let input = item_input(&f)?;
                let given = item_str(&f, "hmac")?.unwrap_or_default();
                Ok(obj(json!({ "valid": p.hmac_verify(alg, &input, &given)? })))
            });
        }
        let (hash, hash_name) = hash_from(r, &["hash_algorithm", "algorithm"])?;
        let o = self.sign_options(r, hash, &hash_name)?;
        let p = self.key_for(r, "signature verification key").await?;
        if !p.key_type.supports_signing() {
            return Err(Error::invalid(format!(
                "key type {} does not support verification",
                p.key_type.name()
            )));
        }
        run(r, items, Failures::ItemsOnly, |_, item| {
            let f = Fields::new(item);
            let input = item_input(&f)?;
            let sig = item_str(&f, "signature")?
                .ok_or_else(|| ItemError::User("missing signature".into()))?;
            Ok(obj(json!({ "valid": p.verify(&item_b64(&f, "context")?, &input, &sig, &o)? })))
        })
    }
}

fn obj(v: Value) -> Map<String, Value> {
    coffer_core::logical::into_map(v)
}
