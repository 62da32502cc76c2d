//! The identity token issuer (Vault's `identity/oidc/`): named signing keys, roles, signed
//! identity tokens (JWTs) for the calling token's entity, their introspection, and the public
//! discovery document and key set a relying party (Coffer's own jwt auth method included)
//! verifies them with.
//!
//! Guarantees: private keys exist only inside the barrier (PKCS#8 in the key's record) and in
//! memory while a token is signed; no answer, log line or audit entry carries one (their type
//! prints as `<redacted>`). A retired key stays in the published key set until its
//! `verification_ttl` has passed, so every token it signed can still be verified; a role's
//! token TTL never exceeds its key's `verification_ttl`. Keys are generated and used with
//! aws-lc-rs. Not here: Vault's OIDC *provider* (authorization-code flow, `oidc/provider`,
//! `oidc/client`, `oidc/assignment`, `oidc/scope`), and a `default` key made implicitly: keys
//! are created explicitly. Rotation by `rotation_period` happens when the key is next used or
//! the key set is read, not by a timer (the effect on what relying parties see is the same).

use std::collections::BTreeMap;
use std::sync::RwLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_barrier::View;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroize;

use super::api::IdentityBackend;
use super::template::{self, Mode};
use crate::backend::framework::{Field, Path, Req, handler};
use crate::logical::fields::Fields;
use crate::logical::{Error, Response, Result};
use crate::record;
use crate::time::now_unix;

/// Vault's algorithms for identity tokens.
pub(crate) const ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"];

/// Claims a role's template may not set (Vault's list).
const RESERVED_CLAIMS: &[&str] =
    &["iat", "aud", "exp", "iss", "sub", "namespace", "nonce", "auth_time", "at_hash", "c_hash"];

const DAY: u64 = 24 * 3600;

/// The key Vault makes on first use by a role, and never deletes.
const DEFAULT_KEY: &str = "default";

/// A PKCS#8 private key, base64 in its record; zeroized when dropped, never printed.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(transparent)]
struct PrivateKey(String);

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A published verification key: its JWK and, for a retired one, when it leaves the set.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PublicKey {
    kid: String,
    algorithm: String,
    /// The raw public key as aws-lc-rs verifies with it (RSAPublicKey DER, an uncompressed
    /// EC point, or the Ed25519 key), base64url.
    public: String,
    jwk: Value,
    /// Unix seconds; 0 for the key in use.
    expire_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NamedKey {
    name: String,
    algorithm: String,
    rotation_period: u64,
    verification_ttl: u64,
    allowed_client_ids: Vec<String>,
    signing: PublicKey,
    private: PrivateKey,
    retired: Vec<PublicKey>,
    next_rotation: u64,
}

record!(NamedKey, "identity oidc key", 1);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Role {
    name: String,
    key: String,
    template: String,
    ttl: u64,
    client_id: String,
}

record!(Role, "identity oidc role", 1);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Config {
    issuer: String,
}

record!(Config, "identity oidc config", 1);

#[derive(Default)]
struct State {
    config: Config,
    keys: BTreeMap<String, NamedKey>,
    roles: BTreeMap<String, Role>,
}

pub(crate) struct Oidc {
    view: View,
    /// The server's `api_addr`: the issuer's host when `issuer` is not configured.
    api_addr: String,
    state: RwLock<State>,
    write: tokio::sync::Mutex<()>,
}

fn poisoned() -> Error {
    Error::Internal("oidc state lock poisoned".into())
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn internal(what: &str) -> Error {
    Error::Internal(format!("identity token key: {what}"))
}

/// A fresh key pair: the private key (PKCS#8 DER) and its published half.
fn generate(alg: &str) -> Result<(PrivateKey, PublicKey)> {
    let kid = crate::random::uuid_v4();
    let (pkcs8, public, mut jwk) = match alg {
        "RS256" | "RS384" | "RS512" => {
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| internal("RSA generation failed"))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> =
                kp.as_der().map_err(|_| internal("RSA encoding failed"))?;
            let pk = kp.public_key();
            let jwk = json!({
                "kty": "RSA",
                "n": b64(pk.modulus().big_endian_without_leading_zero()),
                "e": b64(pk.exponent().big_endian_without_leading_zero()),
            });
            (der.as_ref().to_vec(), pk.as_ref().to_vec(), jwk)
        }
        "ES256" | "ES384" | "ES512" => {
            let (sa, crv, n) = ec(alg);
            let kp = signature::EcdsaKeyPair::generate(sa)
                .map_err(|_| internal("EC generation failed"))?;
            let doc = kp.to_pkcs8v1().map_err(|_| internal("EC encoding failed"))?;
            let point = kp.public_key().as_ref().to_vec();
            // Uncompressed point: 0x04 || x || y, each `n` bytes.
            if point.len() != 1 + 2 * n {
                return Err(internal("unexpected EC point"));
            }
            let jwk = json!({
                "kty": "EC", "crv": crv,
                "x": b64(&point[1..1 + n]), "y": b64(&point[1 + n..]),
            });
            (doc.as_ref().to_vec(), point, jwk)
        }
        "EdDSA" => {
            let kp = signature::Ed25519KeyPair::generate()
                .map_err(|_| internal("Ed25519 generation failed"))?;
            let doc = kp.to_pkcs8().map_err(|_| internal("Ed25519 encoding failed"))?;
            let public = kp.public_key().as_ref().to_vec();
            let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(&public) });
            (doc.as_ref().to_vec(), public, jwk)
        }
        other => return Err(Error::invalid(format!("unknown signing algorithm {other:?}"))),
    };
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg);
    jwk["use"] = json!("sig");
    let mut der = pkcs8;
    let private = PrivateKey(b64(&der));
    der.zeroize();
    Ok((private, PublicKey { kid, algorithm: alg.into(), public: b64(&public), jwk, expire_at: 0 }))
}

fn ec(alg: &str) -> (&'static signature::EcdsaSigningAlgorithm, &'static str, usize) {
    match alg {
        "ES384" => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
        "ES512" => (&signature::ECDSA_P521_SHA512_FIXED_SIGNING, "P-521", 66),
        _ => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
    }
}

fn sign(alg: &str, private: &PrivateKey, msg: &[u8]) -> Result<Vec<u8>> {
    let der = zeroize::Zeroizing::new(
        URL_SAFE_NO_PAD.decode(&private.0).map_err(|_| internal("stored key unreadable"))?,
    );
    let rng = SystemRandom::new();
    match alg {
        "RS256" | "RS384" | "RS512" => {
            let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der)
                .map_err(|_| internal("stored RSA key rejected"))?;
            let pad: &'static dyn signature::RsaEncoding = match alg {
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                _ => &signature::RSA_PKCS1_SHA256,
            };
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(pad, &rng, msg, &mut sig).map_err(|_| internal("RSA signing failed"))?;
            Ok(sig)
        }
        "ES256" | "ES384" | "ES512" => {
            let kp = signature::EcdsaKeyPair::from_pkcs8(ec(alg).0, &der)
                .map_err(|_| internal("stored EC key rejected"))?;
            Ok(kp.sign(&rng, msg).map_err(|_| internal("EC signing failed"))?.as_ref().to_vec())
        }
        "EdDSA" => {
            let kp = signature::Ed25519KeyPair::from_pkcs8(&der)
                .map_err(|_| internal("stored Ed25519 key rejected"))?;
            Ok(kp.sign(msg).as_ref().to_vec())
        }
        other => Err(internal(&format!("unknown algorithm {other}"))),
    }
}

fn verifies(k: &PublicKey, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(public) = URL_SAFE_NO_PAD.decode(&k.public) else { return false };
    let alg: &'static dyn signature::VerificationAlgorithm = match k.algorithm.as_str() {
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
        "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
        "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
        "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
        "ES512" => &signature::ECDSA_P521_SHA512_FIXED,
        "EdDSA" => &signature::ED25519,
        _ => return false,
    };
    UnparsedPublicKey::new(alg, public).verify(msg, sig).is_ok()
}

impl NamedKey {
    /// Retires the signing key (published until `verification_ttl` from now) and makes a new one.
    fn rotate(&mut self, now: u64, verification_ttl: u64) -> Result<()> {
        let (private, public) = generate(&self.algorithm)?;
        let mut old = std::mem::replace(&mut self.signing, public);
        old.expire_at = now.saturating_add(verification_ttl);
        self.retired.push(old);
        self.private = private;
        self.next_rotation = now.saturating_add(self.rotation_period);
        self.prune(now);
        Ok(())
    }

    fn prune(&mut self, now: u64) {
        self.retired.retain(|k| k.expire_at > now);
    }

    fn published(&self, now: u64) -> impl Iterator<Item = &PublicKey> {
        std::iter::once(&self.signing).chain(self.retired.iter().filter(move |k| k.expire_at > now))
    }
}

impl Oidc {
    pub(crate) async fn load(view: View, api_addr: String) -> Result<Self> {
        let mut state = State::default();
        if let Some(raw) = view.get("config").await? {
            state.config = record::decode(&raw)?;
        }
        for name in view.list("key/").await? {
            if let Some(raw) = view.get(&format!("key/{name}")).await? {
                state.keys.insert(name, record::decode(&raw)?);
            }
        }
        for name in view.list("role/").await? {
            if let Some(raw) = view.get(&format!("role/{name}")).await? {
                state.roles.insert(name, record::decode(&raw)?);
            }
        }
        Ok(Self {
            view,
            api_addr: api_addr.trim_end_matches('/').to_owned(),
            state: RwLock::new(state),
            write: tokio::sync::Mutex::new(()),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T> {
        Ok(f(&*self.state.read().map_err(|_| poisoned())?))
    }

    fn issuer(&self) -> Result<String> {
        let base = self.read(|s| s.config.issuer.clone())?;
        let base = if base.is_empty() { self.api_addr.clone() } else { base };
        Ok(format!("{}/v1/identity/oidc", base.trim_end_matches('/')))
    }

    async fn save_key(&self, k: NamedKey) -> Result<()> {
        self.view.put(&format!("key/{}", k.name), &record::encode(&k)?).await?;
        self.state.write().map_err(|_| poisoned())?.keys.insert(k.name.clone(), k);
        Ok(())
    }

    /// Rotates the keys whose `rotation_period` has passed, and drops retired keys no longer
    /// published. The caller holds `write`.
    async fn rotate_due(&self, now: u64) -> Result<()> {
        let due: Vec<NamedKey> = self.read(|s| {
            s.keys
                .values()
                .filter(|k| now >= k.next_rotation || k.retired.iter().any(|r| r.expire_at <= now))
                .cloned()
                .collect()
        })?;
        for mut k in due {
            if now >= k.next_rotation {
                let ttl = k.verification_ttl;
                k.rotate(now, ttl)?;
            } else {
                k.prune(now);
            }
            self.save_key(k).await?;
        }
        Ok(())
    }

    /// Every published key, as a JWK set.
    async fn jwks(&self) -> Result<Value> {
        let now = now_unix();
        {
            let _g = self.write.lock().await;
            self.rotate_due(now).await?;
        }
        let keys: Vec<Value> = self.read(|s| {
            s.keys.values().flat_map(|k| k.published(now).map(|p| p.jwk.clone())).collect()
        })?;
        Ok(json!({ "keys": keys }))
    }
}

const KEY_FIELDS: &[Field] = &[
    Field::duration("rotation_period", "How often the signing key is replaced; default 24h.")
        .unchecked(),
    Field::duration("verification_ttl", "How long a retired key stays published; default 24h.")
        .unchecked(),
    Field::str("algorithm", "RS256 (default), RS384, RS512, ES256, ES384, ES512 or EdDSA.")
        .unchecked(),
    Field::comma_list("allowed_client_ids", "Client IDs of roles that may use the key; '*': all.")
        .unchecked(),
];
const ROLE_FIELDS: &[Field] = &[
    Field::str("key", "The named key that signs the role's tokens.").unchecked(),
    Field::str("template", "JSON claims template, with identity placeholders.").unchecked(),
    Field::duration("ttl", "Lifetime of the role's tokens; default 24h.").unchecked(),
    Field::str("client_id", "The tokens' audience; generated when not given.").unchecked(),
];

const CONFIG_FIELDS: &[Field] =
    &[Field::str("issuer", "scheme://host[:port] of the issuer.").unchecked()];
const ROTATE_FIELDS: &[Field] =
    &[Field::duration("verification_ttl", "How long the old key stays published.").unchecked()];
const INTROSPECT_FIELDS: &[Field] = &[
    Field::str("token", "The token.").unchecked(),
    Field::str("client_id", "The audience the token must have.").unchecked(),
];

pub(super) fn paths() -> Vec<Path<IdentityBackend>> {
    vec![
        Path::new("oidc/config", "The issuer of identity tokens.")
            .fields(CONFIG_FIELDS)
            .read(handler!(IdentityBackend::oidc_config_read))
            .write(handler!(IdentityBackend::oidc_config_write)),
        Path::new("oidc/key", "List named keys.").list(handler!(IdentityBackend::oidc_key_list)),
        Path::new("oidc/key/{name}", "A named signing key.")
            .fields(KEY_FIELDS)
            .read(handler!(IdentityBackend::oidc_key_read))
            .write(handler!(IdentityBackend::oidc_key_write))
            .delete(handler!(IdentityBackend::oidc_key_delete)),
        Path::new("oidc/key/{name}/rotate", "Rotate a named key now.")
            .fields(ROTATE_FIELDS)
            .write(handler!(IdentityBackend::oidc_key_rotate)),
        Path::new("oidc/role", "List roles.").list(handler!(IdentityBackend::oidc_role_list)),
        Path::new("oidc/role/{name}", "A role: which key signs, what the token says.")
            .fields(ROLE_FIELDS)
            .read(handler!(IdentityBackend::oidc_role_read))
            .write(handler!(IdentityBackend::oidc_role_write))
            .delete(handler!(IdentityBackend::oidc_role_delete)),
        Path::new("oidc/token/{name}", "A signed identity token for the caller's entity.")
            .read(handler!(IdentityBackend::oidc_token)),
        Path::new("oidc/introspect", "Whether an identity token is active.")
            .fields(INTROSPECT_FIELDS)
            .write(handler!(IdentityBackend::oidc_introspect)),
        Path::new("oidc/.well-known/openid-configuration", "OpenID discovery document.")
            .read(handler!(IdentityBackend::oidc_discovery))
            .unauthenticated(),
        Path::new("oidc/.well-known/keys", "The public keys that verify identity tokens.")
            .read(handler!(IdentityBackend::oidc_keys))
            .unauthenticated(),
    ]
}

fn secs(f: &Fields<'_>, k: &str) -> Result<Option<u64>> {
    f.secs(k)
}

impl IdentityBackend {
    fn oidc(&self) -> &Oidc {
        &self.store.oidc
    }

    async fn oidc_config_read(&self, _r: &Req<'_>) -> Result<Response> {
        let issuer = self.oidc().read(|s| s.config.issuer.clone())?;
        let mut resp = Response::from_value(json!({ "issuer": issuer }));
        if issuer.is_empty() && self.oidc().api_addr.is_empty() {
            resp.warnings.push(
                "Both \"issuer\" and the server's \"api_addr\" are empty. The issuer claim in \
                 generated tokens will not be network reachable."
                    .into(),
            );
        }
        Ok(resp)
    }

    async fn oidc_config_write(&self, r: &Req<'_>) -> Result<Response> {
        let Some(issuer) = r.fields().str("issuer")? else { return Ok(Response::empty()) };
        if !issuer.is_empty() && !valid_issuer(&issuer) {
            return Err(Error::invalid(
                "invalid issuer, which must include only a scheme, host, and optional port \
                 (e.g. https://example.com:8200)",
            ));
        }
        let o = self.oidc();
        let _g = o.write.lock().await;
        let c = Config { issuer: issuer.clone() };
        o.view.put("config", &record::encode(&c)?).await?;
        o.state.write().map_err(|_| poisoned())?.config = c;
        let mut resp = Response::empty();
        if !issuer.is_empty() {
            resp.warnings.push(
                "If \"issuer\" is set explicitly, all tokens must be validated against that \
                 address, including those issued by secondary clusters. Setting issuer to \"\" \
                 will restore the default behavior of using the cluster's api_addr as the issuer."
                    .into(),
            );
        }
        Ok(resp)
    }

    async fn oidc_key_list(&self, _r: &Req<'_>) -> Result<Response> {
        list(self.oidc().read(|s| s.keys.keys().cloned().collect())?)
    }

    async fn oidc_key_read(&self, r: &Req<'_>) -> Result<Response> {
        let k = self.oidc().read(|s| s.keys.get(r.capture("name")).cloned())?;
        let k = k.ok_or(Error::NotFound)?;
        Ok(Response::from_value(json!({
            "rotation_period": k.rotation_period,
            "verification_ttl": k.verification_ttl,
            "algorithm": k.algorithm,
            "allowed_client_ids": k.allowed_client_ids,
        })))
    }

    async fn oidc_key_write(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name").to_owned();
        let f = r.fields();
        let o = self.oidc();
        let _g = o.write.lock().await;
        let now = now_unix();
        let existing = o.read(|s| s.keys.get(&name).cloned())?;
        let rotation_period = secs(&f, "rotation_period")?
            .or(existing.as_ref().map(|k| k.rotation_period))
            .unwrap_or(DAY);
        let verification_ttl = secs(&f, "verification_ttl")?
            .or(existing.as_ref().map(|k| k.verification_ttl))
            .unwrap_or(DAY);
        if rotation_period < 60 {
            return Err(Error::invalid("rotation_period must be at least one minute"));
        }
        if verification_ttl > rotation_period.saturating_mul(10) {
            return Err(Error::invalid(
                "verification_ttl cannot be longer than 10x rotation_period",
            ));
        }
        if existing.is_some() {
            let too_long = o.read(|s| {
                s.roles.values().any(|role| role.key == name && role.ttl > verification_ttl)
            })?;
            if too_long {
                return Err(Error::invalid(format!(
                    "unable to update key {name:?} because it is currently referenced by one or \
                     more roles with a token ttl greater than {verification_ttl} seconds"
                )));
            }
        }
        let allowed = f
            .list("allowed_client_ids")?
            .or(existing.as_ref().map(|k| k.allowed_client_ids.clone()))
            .unwrap_or_default();
        let algorithm = f
            .str("algorithm")?
            .filter(|a| !a.is_empty())
            .or(existing.as_ref().map(|k| k.algorithm.clone()))
            .unwrap_or_else(|| "RS256".into());
        if !ALGORITHMS.contains(&algorithm.as_str()) {
            return Err(Error::invalid(format!("unknown signing algorithm {algorithm:?}")));
        }
        let key = match existing {
            Some(mut k) => {
                let changed_alg = k.algorithm != algorithm;
                k.rotation_period = rotation_period;
                k.verification_ttl = verification_ttl;
                k.allowed_client_ids = allowed;
                k.algorithm = algorithm;
                // Vault: a shorter period takes effect now; a new algorithm rotates at once.
                k.next_rotation = k.next_rotation.min(now.saturating_add(rotation_period));
                if changed_alg {
                    k.rotate(now, verification_ttl)?;
                }
                k
            }
            None => {
                let (private, signing) = generate(&algorithm)?;
                NamedKey {
                    name,
                    algorithm,
                    rotation_period,
                    verification_ttl,
                    allowed_client_ids: allowed,
                    signing,
                    private,
                    retired: Vec::new(),
                    next_rotation: now.saturating_add(rotation_period),
                }
            }
        };
        o.save_key(key).await?;
        Ok(Response::empty())
    }

    async fn oidc_key_delete(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name").to_owned();
        if name == DEFAULT_KEY {
            return Err(Error::invalid(format!("deletion of key {DEFAULT_KEY:?} not allowed")));
        }
        let o = self.oidc();
        let _g = o.write.lock().await;
        let users: Vec<String> = o.read(|s| {
            s.roles.values().filter(|x| x.key == name).map(|x| x.name.clone()).collect()
        })?;
        if !users.is_empty() {
            return Err(Error::invalid(format!(
                "unable to delete key {name:?} because it is currently referenced by these roles: {}",
                users.join(", ")
            )));
        }
        o.view.delete(&format!("key/{name}")).await?;
        o.state.write().map_err(|_| poisoned())?.keys.remove(&name);
        Ok(Response::empty())
    }

    async fn oidc_key_rotate(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name").to_owned();
        let o = self.oidc();
        let _g = o.write.lock().await;
        let k = o.read(|s| s.keys.get(&name).cloned())?;
        let Some(mut k) = k else {
            return Err(Error::invalid(format!("no named key found at {name:?}")));
        };
        let ttl = secs(&r.fields(), "verification_ttl")?.unwrap_or(k.verification_ttl);
        k.rotate(now_unix(), ttl)?;
        o.save_key(k).await?;
        Ok(Response::empty())
    }

    async fn oidc_role_list(&self, _r: &Req<'_>) -> Result<Response> {
        list(self.oidc().read(|s| s.roles.keys().cloned().collect())?)
    }

    async fn oidc_role_read(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.oidc().read(|s| s.roles.get(r.capture("name")).cloned())?;
        let role = role.ok_or(Error::NotFound)?;
        Ok(Response::from_value(json!({
            "client_id": role.client_id,
            "key": role.key,
            "template": role.template,
            "ttl": role.ttl,
        })))
    }

    async fn oidc_role_write(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name").to_owned();
        let f = r.fields();
        let o = self.oidc();
        let _g = o.write.lock().await;
        let existing = o.read(|s| s.roles.get(&name).cloned())?;
        let key = f
            .str("key")?
            .filter(|k| !k.is_empty())
            .or(existing.as_ref().map(|x| x.key.clone()))
            .ok_or_else(|| Error::invalid("the key parameter is required"))?;
        let template = match f.str("template")? {
            Some(t) => t,
            None => existing.as_ref().map(|x| x.template.clone()).unwrap_or_default(),
        };
        let template = decode_template(&template)?;
        let ttl = secs(&f, "ttl")?.or(existing.as_ref().map(|x| x.ttl)).unwrap_or(DAY);
        let client_id = match f.str("client_id")?.filter(|c| !c.is_empty()) {
            Some(c) => c,
            None => existing
                .as_ref()
                .map(|x| x.client_id.clone())
                .unwrap_or_else(|| crate::random::random_base62(26)),
        };
        if key == DEFAULT_KEY && o.read(|s| !s.keys.contains_key(DEFAULT_KEY))? {
            // As Vault: the default key is made when a role first names it.
            let (private, signing) = generate("RS256")?;
            let now = now_unix();
            o.save_key(NamedKey {
                name: DEFAULT_KEY.into(),
                algorithm: "RS256".into(),
                rotation_period: DAY,
                verification_ttl: DAY,
                allowed_client_ids: vec!["*".into()],
                signing,
                private,
                retired: Vec::new(),
                next_rotation: now.saturating_add(DAY),
            })
            .await?;
        }
        let Some(k) = o.read(|s| s.keys.get(&key).cloned())? else {
            return Err(Error::invalid(format!("cannot find key {key:?}")));
        };
        if ttl > k.verification_ttl {
            return Err(Error::invalid(
                "a role's token ttl cannot be longer than the verification_ttl of the key it \
                 references",
            ));
        }
        let role = Role { name: name.clone(), key, template, ttl, client_id };
        o.view.put(&format!("role/{name}"), &record::encode(&role)?).await?;
        o.state.write().map_err(|_| poisoned())?.roles.insert(name, role);
        Ok(Response::empty())
    }

    async fn oidc_role_delete(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name").to_owned();
        let o = self.oidc();
        let _g = o.write.lock().await;
        o.view.delete(&format!("role/{name}")).await?;
        o.state.write().map_err(|_| poisoned())?.roles.remove(&name);
        Ok(Response::empty())
    }

    async fn oidc_token(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let o = self.oidc();
        let Some(role) = o.read(|s| s.roles.get(name).cloned())? else {
            return Err(Error::invalid(format!("role {name:?} not found")));
        };
        let now = now_unix();
        let key = {
            let _g = o.write.lock().await;
            o.rotate_due(now).await?;
            o.read(|s| s.keys.get(&role.key).cloned())?
        };
        let Some(key) = key else {
            return Err(Error::invalid(format!("key {:?} not found", role.key)));
        };
        if !key.allowed_client_ids.iter().any(|c| c == "*" || *c == role.client_id) {
            return Err(Error::invalid(format!(
                "the key {:?} does not list the client ID of the role {name:?} as an allowed \
                 client ID",
                role.key
            )));
        }
        let entity_id = r.caller.map(|c| c.entity_id.clone()).unwrap_or_default();
        if entity_id.is_empty() {
            return Err(Error::invalid("no entity associated with the request's token"));
        }
        let ident = self
            .store
            .token_identity(&entity_id)?
            .ok_or_else(|| Error::invalid("no entity associated with the request's token"))?;
        let mut resp = Response::default();
        let mut ttl = role.ttl;
        if ttl > key.verification_ttl {
            ttl = key.verification_ttl;
            resp.warnings.push(format!(
                "a role's token ttl cannot be longer than the verification_ttl of the key it \
                 references, setting token ttl to {ttl}"
            ));
        }
        let mut claims = json!({
            "iss": o.issuer()?,
            "namespace": "root",
            "sub": entity_id,
            "aud": role.client_id,
            "exp": now.saturating_add(ttl),
            "iat": now,
        });
        // As Vault: a template that fails for this entity leaves the basic claims, logged.
        if !role.template.is_empty() {
            match template::render(&role.template, &ident.ctx, Mode::Json)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    serde_json::from_str::<Map<String, Value>>(&s).map_err(|e| e.to_string())
                }) {
                Ok(extra) => {
                    for (k, v) in extra {
                        if claims.get(&k).is_none() {
                            claims[k] = v;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(role = name, error = %e, "error populating OIDC token template")
                }
            }
        }
        let header = json!({ "alg": key.algorithm, "kid": key.signing.kid });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = sign(&key.algorithm, &key.private, signing_input.as_bytes())?;
        let token = format!("{signing_input}.{}", b64(&sig));
        resp.data = Some(
            json!({ "token": token, "client_id": role.client_id, "ttl": role.ttl })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        Ok(resp)
    }

    async fn oidc_introspect(&self, r: &Req<'_>) -> Result<Response> {
        let f = r.fields();
        let token = f.str("token")?.unwrap_or_default();
        let client_id = f.str("client_id")?.unwrap_or_default();
        let answer = |e: Option<String>| {
            Response::raw(
                200,
                match e {
                    None => json!({ "active": true }),
                    Some(e) => json!({ "active": false, "error": e }),
                },
            )
        };
        let claims = match self.verify(&token) {
            Ok(c) => c,
            Err(e) => return Ok(answer(Some(e))),
        };
        let now = now_unix();
        if claims.get("exp").and_then(Value::as_u64).is_none_or(|exp| exp <= now) {
            return Ok(answer(Some("error validating claims: token is expired (exp)".into())));
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.oidc().issuer()?.as_str()) {
            return Ok(answer(Some("error validating claims: invalid issuer (iss)".into())));
        }
        if !client_id.is_empty() && claims.get("aud").and_then(Value::as_str) != Some(&client_id) {
            return Ok(answer(Some("error validating claims: invalid audience (aud)".into())));
        }
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or_default();
        let state = self.store.read(|s| s.entity(sub).map(|e| e.disabled))?;
        match state {
            None => Ok(answer(Some("entity was not found".into()))),
            Some(true) => Ok(answer(Some("entity is disabled".into()))),
            Some(false) => Ok(answer(None)),
        }
    }

    /// The claims of a token signed by one of the published keys.
    fn verify(&self, token: &str) -> std::result::Result<Map<String, Value>, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("error parsing token: compact JWS format must have three parts".into());
        };
        let decode = |x: &str| {
            URL_SAFE_NO_PAD.decode(x).map_err(|_| "error parsing token: bad base64".to_owned())
        };
        let header: Map<String, Value> = serde_json::from_slice(&decode(h)?)
            .map_err(|_| "error parsing token: bad header".to_owned())?;
        let sig = decode(s)?;
        let kid = header.get("kid").and_then(Value::as_str).unwrap_or_default();
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
        let now = now_unix();
        let ok = self
            .oidc()
            .read(|st| {
                st.keys.values().flat_map(|k| k.published(now)).any(|k| {
                    k.kid == kid
                        && k.algorithm == alg
                        && verifies(k, format!("{h}.{p}").as_bytes(), &sig)
                })
            })
            .unwrap_or(false);
        if !ok {
            return Err("unable to validate the token signature".into());
        }
        serde_json::from_slice(&decode(p)?).map_err(|_| "error parsing token: bad claims".into())
    }

    async fn oidc_discovery(&self, _r: &Req<'_>) -> Result<Response> {
        let issuer = self.oidc().issuer()?;
        Ok(Response::raw(
            200,
            json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/.well-known/keys"),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ALGORITHMS,
            }),
        ))
    }

    async fn oidc_keys(&self, _r: &Req<'_>) -> Result<Response> {
        Ok(Response::raw(200, self.oidc().jwks().await?))
    }
}

/// A list; an empty one is a 404, as Vault answers.
fn list(keys: Vec<String>) -> Result<Response> {
    if keys.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(Response::list(keys))
}

/// Vault accepts a template as JSON or as base64-encoded JSON; it must be a JSON object once
/// its placeholders are filled, and may not set the reserved claims.
fn decode_template(t: &str) -> Result<String> {
    if t.is_empty() {
        return Ok(String::new());
    }
    let t = match base64::engine::general_purpose::STANDARD.decode(t) {
        Ok(b) => String::from_utf8(b).unwrap_or_else(|_| t.to_owned()),
        Err(_) => t.to_owned(),
    };
    let rendered =
        template::render(&t, &template::TemplateCtx::default().with_empty_entity(), Mode::Json)
            .map_err(|e| Error::invalid(format!("error parsing template: {e}")))?;
    let v: Map<String, Value> = serde_json::from_str(&rendered)
        .map_err(|e| Error::invalid(format!("error parsing template JSON: {e}")))?;
    let mut reserved: Vec<&str> =
        v.keys().map(String::as_str).filter(|k| RESERVED_CLAIMS.contains(k)).collect();
    if let Some(k) = reserved.pop() {
        return Err(Error::invalid(format!(
            "top level key {k:?} not allowed. Restricted keys: {}",
            RESERVED_CLAIMS.join(", ")
        )));
    }
    Ok(t)
}

/// `scheme://host[:port]` and nothing more, scheme http or https.
fn valid_issuer(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    (scheme == "http" || scheme == "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_and_its_published_key_verifies_only_its_own_signatures() {
        for alg in ALGORITHMS {
            let (private, public) = generate(alg).expect("generate");
            let sig = sign(alg, &private, b"message").expect("sign");
            assert!(verifies(&public, b"message", &sig), "{alg}");
            assert!(!verifies(&public, b"other", &sig), "{alg}");
            assert_eq!(public.jwk["alg"], *alg);
            assert!(public.jwk.get("d").is_none(), "no private part in a JWK");
            assert_eq!(format!("{private:?}"), "<redacted>");
        }
    }

    #[test]
    fn issuers_are_scheme_host_and_port_only() {
        assert!(valid_issuer("https://coffer.example:8200"));
        assert!(valid_issuer("http://127.0.0.1:8200"));
        for bad in ["coffer.example", "ftp://x", "https://x/path", "https://", "https://x?y"] {
            assert!(!valid_issuer(bad), "{bad}");
        }
    }

    #[test]
    fn templates_must_be_json_objects_without_reserved_claims() {
        assert!(decode_template(r#"{"name": {{identity.entity.name}}}"#).is_ok());
        assert!(decode_template(r#"{"sub": "x"}"#).is_err());
        assert!(decode_template("[1]").is_err());
        let b = base64::engine::general_purpose::STANDARD.encode(r#"{"a": 1}"#);
        assert_eq!(decode_template(&b).expect("base64"), r#"{"a": 1}"#);
    }
}
