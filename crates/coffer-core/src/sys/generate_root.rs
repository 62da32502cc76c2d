//! `sys/generate-root`: a new root token from a quorum of unseal key shares, as Vault makes it.
//! An operator starts an attempt (with a one-time pad, `otp`, of the token's length, or lets the
//! server make one and show it once), the share holders each submit a share with the attempt's
//! nonce, and the last one gets the new root token XORed with the pad, base64 (unpadded): the
//! encoded token is useless without the pad, which only the operator who started holds.
//!
//! Guarantees: the token is made only after the shares were checked to combine to this server's
//! unseal key (a wrong set aborts the attempt's progress and makes nothing); a share counts only
//! with the attempt's nonce; the shares and the pad live in zeroizing buffers, only in memory,
//! and go with the attempt (cancel, completion, or sealing, which drops the whole unsealed
//! state). Like every request, these are audited with their fields (shares, pad, encoded token)
//! as HMACs. Not here: PGP-encrypted tokens (`pgp_key`, refused with a 400), the DR and recovery
//! token variants (Coffer has neither replication nor recovery keys).

use base64::Engine as _;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::Ctx;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};
/// The length of a token Coffer makes (`coffer_wire::token_format::TOKEN_LEN`): the pad's.
pub(crate) const OTP_LENGTH: usize = coffer_wire::token_format::TOKEN_LEN;

/// One root generation under way.
pub(crate) struct Attempt {
    nonce: String,
    otp: Zeroizing<String>,
    progress: Vec<Zeroizing<Vec<u8>>>,
}

fn status(nonce: &str, started: bool, progress: usize, required: u8, otp: &str) -> Value {
    json!({
        "nonce": nonce,
        "started": started,
        "progress": progress,
        "required": required,
        "complete": false,
        "encoded_token": "",
        "encoded_root_token": "",
        "pgp_fingerprint": "",
        "otp": otp,
        "otp_length": OTP_LENGTH,
    })
}

async fn threshold(ctx: &Ctx<'_>) -> Result<u8> {
    match ctx.core.barrier.seal_config().await? {
        Some(c) => Ok(c.secret_threshold),
        None => Err(Error::invalid("server is not yet initialized")),
    }
}

/// `XOR(token, otp)`, base64 without padding: Vault's encoding of a generated root token.
pub(crate) fn encode_token(token: &str, otp: &str) -> Result<String> {
    if token.len() != otp.len() {
        return Err(Error::Internal("the OTP and the token differ in length".into()));
    }
    let x: Zeroizing<Vec<u8>> =
        Zeroizing::new(token.bytes().zip(otp.bytes()).map(|(a, b)| a ^ b).collect());
    Ok(base64::engine::general_purpose::STANDARD_NO_PAD.encode(x.as_slice()))
}

/// The inverse of [`encode_token`], with Vault's error messages (`sys/decode-token`).
pub(crate) fn decode_token(encoded: &str, otp: &str) -> Result<Zeroizing<String>> {
    let raw = Zeroizing::new(
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded).map_err(|e| {
            // Go's wording, which Vault's message carries: the offset of the bad input.
            use base64::DecodeError as D;
            let at = match e {
                D::InvalidByte(at, _) | D::InvalidLastSymbol { offset: at, .. } => at,
                D::InvalidLength(len) => len,
                D::InvalidPadding => encoded.find('=').unwrap_or(encoded.len()),
            };
            Error::invalid(format!(
                "error decoding base64'd token: illegal base64 data at input byte {at}"
            ))
        })?,
    );
    if raw.len() != otp.len() {
        return Err(Error::invalid(format!(
            "error xoring token: length of byte slices is not equivalent: {} != {}",
            raw.len(),
            otp.len()
        )));
    }
    let bytes: Vec<u8> = raw.iter().zip(otp.bytes()).map(|(a, b)| a ^ b).collect();
    String::from_utf8(bytes).map(Zeroizing::new).map_err(|_| {
        Error::invalid("the decoded token is not text: the encoded token or the OTP is wrong")
    })
}

/// `sys/generate-root/attempt`, `sys/generate-root/update` and `sys/decode-token`; `None` for
/// any other path.
pub(crate) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let rel = rel.trim_end_matches('/');
    let f = Fields::new(&ctx.req.data);
    let resp = match (rel, ctx.op()) {
        ("generate-root/attempt", Operation::Read) => {
            let required = threshold(ctx).await?;
            let g = ctx.active.root_generation.lock().await;
            let body = match g.as_ref() {
                Some(a) => status(&a.nonce, true, a.progress.len(), required, ""),
                None => status("", false, 0, required, ""),
            };
            Response::raw(200, body)
        }
        ("generate-root/attempt", Operation::Create | Operation::Update) => {
            if f.str("pgp_key")?.is_some_and(|k| !k.is_empty()) {
                return Err(Error::invalid(
                    "pgp_key: PGP-encrypted root tokens are not supported by Coffer; give an \
                     otp, or none to have one generated",
                ));
            }
            let required = threshold(ctx).await?;
            let (otp, generated) = match f.str("otp")? {
                Some(o) if !o.is_empty() => {
                    if o.len() != OTP_LENGTH {
                        return Err(Error::invalid("OTP string has incorrect length"));
                    }
                    (Zeroizing::new(o), false)
                }
                _ => (Zeroizing::new(crate::random::random_base62(OTP_LENGTH)), true),
            };
            let mut g = ctx.active.root_generation.lock().await;
            if g.is_some() {
                return Err(Error::invalid("root generation already in progress"));
            }
            let nonce = crate::random::uuid_v4();
            tracing::info!(nonce = %nonce, "root generation initialized");
            let shown = if generated { otp.as_str() } else { "" };
            let body = status(&nonce, true, 0, required, shown);
            *g = Some(Attempt { nonce, otp, progress: Vec::new() });
            Response::raw(200, body)
        }
        ("generate-root/attempt", Operation::Delete) => {
            *ctx.active.root_generation.lock().await = None;
            Response::empty()
        }
        ("generate-root/update", Operation::Create | Operation::Update) => update(ctx, &f).await?,
        ("decode-token", Operation::Create | Operation::Update) => {
            let encoded = f.str("encoded_token")?.unwrap_or_default();
            let otp = Zeroizing::new(f.str("otp")?.unwrap_or_default());
            if encoded.is_empty() || otp.is_empty() {
                return Err(Error::invalid("provided 'encoded_token' or 'otp' is empty"));
            }
            let token = decode_token(&encoded, &otp)?;
            let mut data = serde_json::Map::new();
            data.insert("token".into(), Value::String(token.to_string()));
            Response::data(data)
        }
        ("decode-token", _) => return Err(Error::UnsupportedOperation),
        // `sys/generate-root` itself is only documented in Vault's system backend: every
        // operation on it is unsupported, as there.
        ("generate-root/attempt" | "generate-root" | "generate-root/update", _) => {
            return Err(Error::UnsupportedOperation);
        }
        _ => return Ok(None),
    };
    Ok(Some(resp))
}

async fn update(ctx: &Ctx<'_>, f: &Fields<'_>) -> Result<Response> {
    let key = super::required_share(f, "invalid key: ")?;
    let nonce = f.str("nonce")?.unwrap_or_default();
    let required = threshold(ctx).await?;
    let mut g = ctx.active.root_generation.lock().await;
    let Some(a) = g.as_mut() else {
        return Err(Error::invalid("no root generation in progress"));
    };
    if !crate::secret::ct_eq(nonce.as_bytes(), a.nonce.as_bytes()) {
        return Err(Error::invalid(format!(
            "incorrect nonce supplied; nonce for this root generation operation is \"{}\"",
            a.nonce
        )));
    }
    if a.progress.iter().any(|s| crate::secret::ct_eq(s, &key)) {
        return Err(Error::invalid(
            "given key has already been provided during this generation operation",
        ));
    }
    a.progress.push(key);
    let progress = a.progress.len();
    if progress < required as usize {
        return Ok(Response::raw(
            200,
            json!({
                "nonce": nonce, "started": true, "progress": progress, "required": required,
                "complete": false, "encoded_token": "", "encoded_root_token": "",
                "pgp_fingerprint": "", "otp": "", "otp_length": 0,
            }),
        ));
    }
    // The shares are spent whatever the outcome: a wrong set starts the count again.
    let shares = std::mem::take(&mut a.progress);
    if let Err(e) = ctx.core.barrier.verify_unseal_shares(&shares).await {
        tracing::warn!("root generation aborted: the key shares are wrong");
        return Err(match e {
            coffer_barrier::Error::WrongKey | coffer_barrier::Error::InvalidShare(_) => {
                Error::invalid(
                    "root generation aborted: the key shares do not combine to this server's \
                     unseal key",
                )
            }
            other => Error::from(other),
        });
    }
    let token = ctx.core.create_root_token(ctx.active, None).await?;
    let encoded = encode_token(token.expose(), &a.otp)?;
    tracing::info!(nonce = %a.nonce, "root generation finished");
    *g = None;
    Ok(Response::raw(
        200,
        json!({
            "nonce": nonce, "started": true, "progress": progress, "required": required,
            "complete": true, "encoded_token": encoded, "encoded_root_token": encoded,
            "pgp_fingerprint": "", "otp": "", "otp_length": 0,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoded_token_is_the_token_xor_the_pad_in_unpadded_base64() {
        let token = format!("{}{}", crate::token::TOKEN_PREFIX, "a".repeat(36));
        let otp = "b".repeat(OTP_LENGTH);
        let enc = encode_token(&token, &otp).expect("encode");
        assert!(!enc.ends_with('='));
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(&enc).expect("b64");
        let back: String = raw.iter().zip(otp.bytes()).map(|(a, b)| (a ^ b) as char).collect();
        assert_eq!(back, token);
        assert!(encode_token(&token, "short").is_err());
        assert_eq!(decode_token(&enc, &otp).expect("decode").as_str(), token);
        assert!(decode_token(&enc, "short").is_err() && decode_token("!!", &otp).is_err());
    }
}
