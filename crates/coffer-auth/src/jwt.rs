//! JWT auth method (Vault's `jwt`, also mounted as `oidc`): a workload presents a JWT its
//! identity provider signed (a CI job's OIDC token, a cloud workload identity) and gets a token
//! for the role whose bindings the JWT's claims satisfy. No secret is handed to the workload.
//!
//! Guarantees: only asymmetric signatures verify (see [`crate::jws`]); the issuer, audience,
//! subject and bound claims are checked before any token is issued; a JWT without `exp` is
//! refused; keys come from static PEM keys, a JWKS URL or OIDC discovery, and a JWKS is refetched
//! when a token names an unknown `kid` (key rotation) at most once a second, so a stream of bogus
//! tokens cannot turn Coffer into a request amplifier against the identity provider.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coffer_core::framework::{Field, Framework, Paths, Req};
use coffer_core::glob::glob_match;
use coffer_core::logical::fields::Fields;
use coffer_core::record;
use coffer_core::time::now_unix;
use coffer_core::{BackendConfig, Error, LogicalBackend, Response, Result, View};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, RwLock};

use crate::config::{self, Configured, Endpoints};
use crate::image::{self, ImageBinding, Running};
use crate::jws::{self, Jwk, PublicKey};
use crate::outbound;
use crate::role::{self, Roles, TokenFields, into_map};

/// A fetched key set is trusted this long before it is fetched again.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Unknown `kid`s refetch the JWKS no more often than this.
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(1);

const DEFAULT_CLOCK_SKEW: i64 = 60;
const DEFAULT_EXPIRATION_LEEWAY: i64 = 150;
const DEFAULT_NOT_BEFORE_LEEWAY: i64 = 150;

pub(crate) struct JwtAuth {
    view: View,
    roles: Roles<Role>,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// One JWKS fetch at a time; logins that wait for it use its result.
    fetching: Mutex<()>,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    Ok(Arc::new(JwtAuth {
        roles: Roles::new(cfg.view.clone(), "role/"),
        view: cfg.view,
        keys: RwLock::new(None),
        fetching: Mutex::new(()),
    }))
}

static PATHS: LazyLock<Paths<JwtAuth>> = LazyLock::new(|| {
    config::paths(Endpoints {
        login: "Log in with a JWT signed by the configured issuer.",
        login_fields: LOGIN_FIELDS,
        config: "Where the issuer's keys come from, and which tokens are accepted.",
        config_fields: CONFIG_FIELDS,
    })
});

const LOGIN_FIELDS: &[Field] = &[
    Field::str("role", "The role to log in with; empty: the config's default_role."),
    Field::str("jwt", "The signed JWT."),
    image::SIGNATURE_FIELD,
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Config {
    oidc_discovery_url: String,
    oidc_discovery_ca_pem: String,
    jwks_url: String,
    jwks_ca_pem: String,
    jwt_validation_pubkeys: Vec<String>,
    bound_issuer: String,
    jwt_supported_algs: Vec<String>,
    default_role: String,
}

coffer_core::record!(Config, "jwt config", 1);

const CONFIG_FIELDS: &[Field] = &[
    Field::str(
        "oidc_discovery_url",
        "The issuer's OIDC discovery URL (one of the three key sources).",
    ),
    Field::str("oidc_discovery_ca_pem", "CA certificates (PEM) trusted for the discovery URL."),
    Field::str("jwks_url", "The issuer's JWKS URL (one of the three key sources)."),
    Field::str("jwks_ca_pem", "CA certificates (PEM) trusted for the JWKS URL."),
    Field::comma_list("jwt_validation_pubkeys", "PEM public keys (one of the three key sources)."),
    Field::str("bound_issuer", "The `iss` every token must carry."),
    Field::comma_list("jwt_supported_algs", "Signature algorithms accepted; empty: all supported."),
    Field::str("default_role", "The role of a login that names none."),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Role {
    role_type: String,
    bound_audiences: Vec<String>,
    bound_subject: String,
    bound_claims: Map<String, Value>,
    bound_claims_type: String,
    claim_mappings: BTreeMap<String, String>,
    user_claim: String,
    user_claim_json_pointer: bool,
    groups_claim: String,
    clock_skew_leeway: i64,
    expiration_leeway: i64,
    not_before_leeway: i64,
    /// The claim (or `/`-pointer) of the verified JWT that reports the workload's image.
    image_reference_claim: String,
    #[serde(flatten)]
    image: ImageBinding,
}

const ROLE_FIELDS: &[Field] = &[
    Field::str("name", "The role's name."),
    Field::str("role_type", "Only `jwt`."),
    Field::comma_list("bound_audiences", "`aud` values of which a token must carry one."),
    Field::str("bound_subject", "The `sub` a token must carry."),
    Field::map("bound_claims", "Claims a token must carry, with the values allowed.").unchecked(),
    Field::str("bound_claims_type", "`string` (exact values) or `glob`."),
    Field::kv_pairs("claim_mappings", "Claims copied into the token's metadata, by claim name."),
    Field::str("user_claim", "The claim that names the user."),
    Field::bool("user_claim_json_pointer", "user_claim is a JSON pointer."),
    Field::str("groups_claim", "The claim that lists the user's groups."),
    Field::duration("clock_skew_leeway", "Leeway on all time claims; negative: none.").unchecked(),
    Field::duration("expiration_leeway", "Leeway on `exp`; negative: none.").unchecked(),
    Field::duration("not_before_leeway", "Leeway on `nbf`; negative: none.").unchecked(),
    Field::str(
        "image_reference_claim",
        "The claim that reports the workload's image (`repo@sha256:...`, a list, or an object of \
         container name to reference); needed with bound_image_*.",
    ),
    image::DIGESTS_FIELD,
    image::SIGNERS_FIELD,
    image::REPOSITORIES_FIELD,
];

/// Keys in force, and where they came from.
struct KeySet {
    keys: Vec<Jwk>,
    /// The issuer OIDC discovery announced; tokens must carry it.
    discovered_issuer: Option<String>,
    fetched: Instant,
}

fn claims_error(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("error validating claims: {msg}"))
}

/// Vault checks times and audiences while it validates the token itself (its JWT library), and
/// words those failures so; `bound_claims` and the like come after, as claims.
fn token_error(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("error validating token: {msg}"))
}

/// A leeway as Vault reads it: 0 takes the default, a negative value means none.
fn leeway(set: i64, default: i64) -> u64 {
    match set {
        0 => default.unsigned_abs(),
        n if n < 0 => 0,
        n => n.unsigned_abs(),
    }
}

/// A claim by name, or by JSON pointer when it starts with `/` (Vault's nested claims).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        let mut cur = claims.get(name.split('/').nth(1)?)?;
        for seg in name.split('/').skip(2) {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            cur = match cur {
                Value::Object(m) => m.get(&seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    } else {
        claims.get(name)
    }
}

/// A scalar claim as the string Vault shows it in metadata; lists and objects have none.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn claim_number(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)) {
            Some(v) => Ok(Some(v)),
            None => Err(claims_error(format!("the {name} claim is not a time"))),
        },
        Some(_) => Err(claims_error(format!("the {name} claim is not a number"))),
    }
}

impl JwtAuth {
    /// The key set a config names; `None` for static keys, which need no fetching.
    async fn fetch(&self, c: &Config) -> std::result::Result<Option<KeySet>, String> {
        let (jwks_url, ca, discovered_issuer) = if !c.oidc_discovery_url.is_empty() {
            let client = outbound::client(&c.oidc_discovery_ca_pem)?;
            let url = format!("{}/.well-known/openid-configuration", c.oidc_discovery_url);
            let doc = outbound::get_json(&client, &url)
                .await
                .map_err(|e| format!("error checking oidc discovery URL: {e}"))?;
            let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or_default();
            if issuer.trim_end_matches('/') != c.oidc_discovery_url {
                return Err(format!(
                    "error checking oidc discovery URL: the provider's issuer {issuer:?} is not \
                     the discovery URL {:?}",
                    c.oidc_discovery_url
                ));
            }
            let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| {
                "error checking oidc discovery URL: the discovery document has no jwks_uri"
                    .to_owned()
            })?;
            (jwks.to_owned(), c.oidc_discovery_ca_pem.clone(), Some(issuer.to_owned()))
        } else if !c.jwks_url.is_empty() {
            (c.jwks_url.clone(), c.jwks_ca_pem.clone(), None)
        } else {
            return Ok(None);
        };
        let client = outbound::client(&ca)?;
        let doc = outbound::get_json(&client, &jwks_url)
            .await
            .map_err(|e| format!("error checking jwks URL: {e}"))?;
        let keys = jws::parse_jwks(&doc).map_err(|e| format!("error checking jwks URL: {e}"))?;
        Ok(Some(KeySet { keys, discovered_issuer, fetched: Instant::now() }))
    }

    /// The keys to verify `token` with: static keys, or the cached key set, refetched when it is
    /// old or does not know the token's `kid`.
    async fn keys_for(&self, c: &Config, token: &jws::Token) -> Result<Arc<KeySet>> {
        if !c.jwt_validation_pubkeys.is_empty() {
            let keys = c
                .jwt_validation_pubkeys
                .iter()
                .filter_map(|p| PublicKey::from_pem(p).ok())
                .map(|key| Jwk { kid: None, alg: None, key })
                .collect();
            return Ok(Arc::new(KeySet { keys, discovered_issuer: None, fetched: Instant::now() }));
        }
        let usable = |ks: &KeySet| ks.fetched.elapsed() < JWKS_MAX_AGE && token.kid_known(&ks.keys);
        let current = self.keys.read().await.clone();
        if let Some(ks) = &current
            && usable(ks)
        {
            return Ok(ks.clone());
        }
        let _one = self.fetching.lock().await;
        let current = self.keys.read().await.clone();
        if let Some(ks) = &current
            && (usable(ks) || ks.fetched.elapsed() < JWKS_MIN_REFRESH)
        {
            return Ok(ks.clone());
        }
        match self.fetch(c).await {
            Ok(Some(ks)) => {
                let ks = Arc::new(ks);
                *self.keys.write().await = Some(ks.clone());
                Ok(ks)
            }
            Ok(None) => Err(Error::Internal("jwt: no key source configured".into())),
            Err(e) => match current {
                // An identity provider that is down must not stop logins with known keys.
                Some(ks) => {
                    tracing::warn!(error = %e, "jwt: refreshing the JWKS failed; using the keys fetched before");
                    Ok(ks)
                }
                None => Err(Error::Internal(format!("jwt: {e}"))),
            },
        }
    }
}

impl role::Role for Role {
    const KIND: &'static str = "jwt role";
    const FIELDS: &'static [Field] = ROLE_FIELDS;

    fn fresh() -> Self {
        Role {
            role_type: "jwt".into(),
            user_claim: "sub".into(),
            bound_claims_type: "string".into(),
            ..Role::default()
        }
    }

    fn apply(&mut self, f: &Fields<'_>, _creating: bool) -> Result<()> {
        if let Some(t) = f.str("role_type")? {
            match t.as_str() {
                "jwt" => self.role_type = t,
                "oidc" => {
                    return Err(Error::invalid(
                        "role_type \"oidc\" (the browser redirect flow) is not supported by \
                         Coffer: use role_type \"jwt\" and have the client obtain the JWT",
                    ));
                }
                _ => return Err(Error::invalid(format!("invalid role_type {t:?}: use \"jwt\""))),
            }
        }
        if let Some(a) = f.list("bound_audiences")? {
            self.bound_audiences = a.into_iter().filter(|s| !s.is_empty()).collect();
        }
        if let Some(s) = f.str("bound_subject")? {
            self.bound_subject = s;
        }
        if let Some(t) = f.str("bound_claims_type")? {
            if t != "string" && t != "glob" {
                return Err(Error::invalid(format!(
                    "invalid bound_claims_type {t:?}: use \"string\" or \"glob\""
                )));
            }
            self.bound_claims_type = t;
        }
        match f.raw("bound_claims") {
            None => {}
            Some(Value::Null) => self.bound_claims.clear(),
            Some(Value::Object(m)) => self.bound_claims = m.clone(),
            Some(Value::String(s)) if s.trim().is_empty() => self.bound_claims.clear(),
            Some(Value::String(s)) => match serde_json::from_str(s) {
                Ok(Value::Object(m)) => self.bound_claims = m,
                _ => return Err(Error::invalid("bound_claims must be a JSON object")),
            },
            Some(_) => return Err(Error::invalid("bound_claims must be a JSON object")),
        }
        for (k, v) in &self.bound_claims {
            let ok = |v: &Value| match v {
                Value::String(_) => true,
                Value::Number(_) | Value::Bool(_) => self.bound_claims_type == "string",
                _ => false,
            };
            let valid = match v {
                Value::Array(a) => !a.is_empty() && a.iter().all(ok),
                v => ok(v),
            };
            if !valid {
                return Err(Error::invalid(format!(
                    "bound claim {k:?} must be a string or a list of strings{}",
                    if self.bound_claims_type == "glob" {
                        " when bound_claims_type is glob"
                    } else {
                        ""
                    }
                )));
            }
        }
        match f.raw("claim_mappings") {
            None => {}
            Some(Value::Null) => self.claim_mappings.clear(),
            Some(_) => self.claim_mappings = f.string_map("claim_mappings")?.unwrap_or_default(),
        }
        let mut targets = std::collections::HashSet::new();
        for target in self.claim_mappings.values() {
            if target == "role" {
                return Err(Error::invalid(
                    "claim_mappings: metadata key \"role\" is reserved for the role's name",
                ));
            }
            if image::METADATA_KEYS.contains(&target.as_str()) {
                return Err(Error::invalid(format!(
                    "claim_mappings: metadata key {target:?} is reserved for the image a login proves"
                )));
            }
            if !targets.insert(target) {
                return Err(Error::invalid(format!(
                    "claim_mappings: two claims map to the metadata key {target:?}"
                )));
            }
        }
        if let Some(u) = f.str("user_claim")? {
            self.user_claim = u;
        }
        if self.user_claim.is_empty() {
            return Err(Error::invalid("a user_claim is required"));
        }
        if let Some(b) = f.bool("user_claim_json_pointer")? {
            self.user_claim_json_pointer = b;
        }
        if let Some(g) = f.str("groups_claim")? {
            self.groups_claim = g;
        }
        for (field, slot) in [
            ("clock_skew_leeway", &mut self.clock_skew_leeway),
            ("expiration_leeway", &mut self.expiration_leeway),
            ("not_before_leeway", &mut self.not_before_leeway),
        ] {
            if let Some(v) = signed_secs(f, field)? {
                *slot = v;
            }
        }
        if let Some(c) = f.str("image_reference_claim")? {
            self.image_reference_claim = c;
        }
        self.image.apply(f)
    }

    fn check(&self, _token: &TokenFields) -> Result<()> {
        if self.bound_audiences.is_empty()
            && self.bound_subject.is_empty()
            && self.bound_claims.is_empty()
        {
            return Err(Error::invalid(
                "must have at least one bound constraint when creating/updating a role: \
                 bound_audiences, bound_subject or bound_claims",
            ));
        }
        if self.image.is_set() && self.image_reference_claim.is_empty() {
            return Err(Error::invalid(
                "bound_image_* need image_reference_claim: the claim of the verified JWT that \
                 reports the workload's image",
            ));
        }
        Ok(())
    }

    fn own_json(&self) -> Map<String, Value> {
        let mut m = into_map(json!({
            "role_type": self.role_type,
            "bound_audiences": self.bound_audiences,
            "bound_subject": self.bound_subject,
            "bound_claims": if self.bound_claims.is_empty() { Value::Null } else { Value::Object(self.bound_claims.clone()) },
            "bound_claims_type": self.bound_claims_type,
            "claim_mappings": if self.claim_mappings.is_empty() { Value::Null } else { json!(self.claim_mappings) },
            "user_claim": self.user_claim,
            "user_claim_json_pointer": self.user_claim_json_pointer,
            "groups_claim": self.groups_claim,
            "clock_skew_leeway": self.clock_skew_leeway,
            "expiration_leeway": self.expiration_leeway,
            "not_before_leeway": self.not_before_leeway,
        }));
        if self.image.is_set() || !self.image_reference_claim.is_empty() {
            m.insert("image_reference_claim".into(), json!(self.image_reference_claim));
        }
        self.image.to_json(&mut m);
        m
    }
}

/// The containers a verified JWT reports in `name` (a claim or a `/`-pointer): one reference,
/// a list of them, or an object of container name to reference. Anything else reports none.
fn image_claim(claims: &Map<String, Value>, name: &str) -> Vec<Running> {
    let one = |n: &str, v: &Value| {
        v.as_str().map(|r| Running { name: n.to_owned(), image_id: r.to_owned() })
    };
    match claim(claims, name) {
        Some(Value::String(r)) => vec![Running { name: String::new(), image_id: r.clone() }],
        Some(Value::Array(a)) => a.iter().filter_map(|v| one("", v)).collect(),
        Some(Value::Object(m)) => m.iter().filter_map(|(n, v)| one(n, v)).collect(),
        _ => Vec::new(),
    }
}

/// `exp` is required; `exp`, `nbf` and `iat` are checked with the role's leeways.
fn validate_times(claims: &Map<String, Value>, role: &Role, now: u64) -> Result<()> {
    let skew = leeway(role.clock_skew_leeway, DEFAULT_CLOCK_SKEW);
    let exp_leeway = leeway(role.expiration_leeway, DEFAULT_EXPIRATION_LEEWAY);
    let nbf_leeway = leeway(role.not_before_leeway, DEFAULT_NOT_BEFORE_LEEWAY);
    let exp = claim_number(claims, "exp")?
        .ok_or_else(|| token_error("the token has no expiration (exp) claim"))?;
    if now > exp.saturating_add(exp_leeway).saturating_add(skew) {
        return Err(token_error("token is expired (exp)"));
    }
    if let Some(nbf) = claim_number(claims, "nbf")?
        && now.saturating_add(nbf_leeway).saturating_add(skew) < nbf
    {
        return Err(token_error("token not valid yet (nbf)"));
    }
    if let Some(iat) = claim_number(claims, "iat")?
        && now.saturating_add(skew) < iat
    {
        return Err(token_error("token issued in the future (iat)"));
    }
    Ok(())
}

fn validate_audience(claims: &Map<String, Value>, role: &Role) -> Result<()> {
    let aud: Vec<&str> = match claims.get("aud") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(token_error("the aud claim is not a string or a list")),
    };
    if role.bound_audiences.is_empty() {
        if !aud.is_empty() {
            return Err(token_error(
                "audience claim found in JWT but no audiences bound to the role",
            ));
        }
        return Ok(());
    }
    if !aud.iter().any(|a| role.bound_audiences.iter().any(|b| b == a)) {
        return Err(token_error(
            "invalid audience (aud) claim: audience claim does not match any expected audience",
        ));
    }
    Ok(())
}

fn validate_bound_claims(claims: &Map<String, Value>, role: &Role) -> Result<()> {
    let glob = role.bound_claims_type == "glob";
    for (name, expected) in &role.bound_claims {
        let wanted: Vec<&Value> = match expected {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        let actual: Vec<&Value> = match claim(claims, name).or_else(|| claims.get(name)) {
            None => return Err(claims_error(format!("claim {name:?} is missing"))),
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v) => vec![v],
        };
        let hit = actual.iter().any(|a| {
            wanted.iter().any(|w| match (glob, w, scalar_string(a)) {
                (true, Value::String(p), Some(a)) => glob_match(p, &a),
                (false, w, Some(a)) => scalar_string(w).is_some_and(|w| w == a),
                _ => false,
            })
        });
        if !hit {
            return Err(claims_error(format!(
                "claim {name:?} does not match any associated bound claim values"
            )));
        }
    }
    Ok(())
}

/// A leeway field: seconds or a duration string, and negative numbers for "none".
fn signed_secs(f: &Fields<'_>, field: &str) -> Result<Option<i64>> {
    match f.str(field) {
        Ok(Some(s)) if s.trim_start().starts_with('-') => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| Error::invalid(format!("{field} must be seconds or a duration"))),
        _ => Ok(f.secs(field)?.map(|v| i64::try_from(v).unwrap_or(i64::MAX))),
    }
}

impl role::HasRoles for JwtAuth {
    type Role = Role;

    fn roles(&self) -> &Roles<Role> {
        &self.roles
    }
}

#[async_trait]
impl Configured for JwtAuth {
    type Config = Config;

    fn view(&self) -> &View {
        &self.view
    }

    async fn login(&self, req: &Req<'_>) -> Result<Response> {
        let f = Fields::new(req.data);
        let config =
            self.config().await?.ok_or_else(|| Error::invalid("could not load configuration"))?;
        let role_name = match f.str("role")?.filter(|r| !r.is_empty()) {
            Some(r) => r.to_lowercase(),
            None if !config.default_role.is_empty() => config.default_role.clone(),
            None => return Err(Error::invalid("missing role")),
        };
        let role = self
            .roles
            .get(&role_name)
            .await?
            .ok_or_else(|| Error::invalid(format!("role {role_name:?} could not be found")))?;
        let raw = f
            .str("jwt")?
            .filter(|j| !j.is_empty())
            .ok_or_else(|| Error::invalid("missing token"))?;
        let token = jws::parse(&raw)?;
        let allowed = if config.jwt_supported_algs.is_empty() {
            jws::ALGORITHMS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            config.jwt_supported_algs.clone()
        };
        if !allowed.contains(&token.alg) {
            return Err(Error::invalid(format!(
                "error validating token: signing algorithm {:?} is not in jwt_supported_algs",
                token.alg
            )));
        }
        let keys = self.keys_for(&config, &token).await?;
        if !token.verified_by(&keys.keys) {
            return Err(Error::invalid("error validating token: failed to verify signature"));
        }
        let claims = &token.claims;
        validate_times(claims, &role, now_unix())?;
        let issuer = claims.get("iss").and_then(Value::as_str);
        for want in [Some(config.bound_issuer.as_str()), keys.discovered_issuer.as_deref()]
            .into_iter()
            .flatten()
            .filter(|w| !w.is_empty())
        {
            if issuer != Some(want) {
                return Err(claims_error("invalid issuer (iss) claim"));
            }
        }
        validate_audience(claims, &role)?;
        if !role.bound_subject.is_empty()
            && claims.get("sub").and_then(Value::as_str) != Some(role.bound_subject.as_str())
        {
            return Err(claims_error("invalid subject (sub) claim"));
        }
        validate_bound_claims(claims, &role)?;
        let user = if role.user_claim_json_pointer {
            claim(claims, &role.user_claim)
        } else {
            claims.get(&role.user_claim)
        }
        .and_then(scalar_string)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::invalid(format!("claim {:?} not found in token", role.user_claim)))?;
        let mut groups = None;
        if !role.groups_claim.is_empty() {
            match claim(claims, &role.groups_claim).or_else(|| claims.get(&role.groups_claim)) {
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                    groups = Some(a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
                }
                Some(Value::String(g)) => groups = Some(vec![g.clone()]),
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "claim {:?} is not a list of strings",
                        role.groups_claim
                    )));
                }
                None => {
                    return Err(Error::invalid(format!(
                        "{:?} claim not found in token",
                        role.groups_claim
                    )));
                }
            }
        }
        let mut metadata = BTreeMap::new();
        for (source, target) in &role.claim_mappings {
            if let Some(v) = claim(claims, source).or_else(|| claims.get(source)) {
                let s = scalar_string(v).ok_or_else(|| {
                    Error::invalid(format!("error converting claim {source:?} to a string"))
                })?;
                metadata.insert(target.clone(), s);
            }
        }
        if role.image.is_set() {
            let containers = image_claim(claims, &role.image_reference_claim);
            let signatures = image::presented_signatures(req.data)?;
            role.image
                .evaluate(&containers, &signatures, &[], now_unix())
                .map_err(|why| image::refuse("jwt", &role_name, why))?
                .add_to(&mut metadata);
        }
        // Vault's alias: the user_claim's value, with the claim_mappings as its metadata and
        // the groups_claim's names as group aliases.
        let alias =
            coffer_core::LoginAlias { name: user.clone(), metadata: metadata.clone(), groups };
        metadata.insert("role".into(), role_name);
        let mut login = role.token.login(user, metadata);
        login.alias = Some(alias);
        Ok(Response::login(login))
    }

    fn show(c: &Config) -> Map<String, Value> {
        into_map(json!({
            "oidc_discovery_url": c.oidc_discovery_url,
            "oidc_discovery_ca_pem": c.oidc_discovery_ca_pem,
            "jwks_url": c.jwks_url,
            "jwks_ca_pem": c.jwks_ca_pem,
            "jwt_validation_pubkeys": c.jwt_validation_pubkeys,
            "bound_issuer": c.bound_issuer,
            "jwt_supported_algs": c.jwt_supported_algs,
            "default_role": c.default_role,
        }))
    }

    async fn write_config(&self, req: &Req<'_>) -> Result<Response> {
        let f = Fields::new(req.data);
        let mut c = Config {
            oidc_discovery_url: f.str("oidc_discovery_url")?.unwrap_or_default(),
            oidc_discovery_ca_pem: f.str("oidc_discovery_ca_pem")?.unwrap_or_default(),
            jwks_url: f.str("jwks_url")?.unwrap_or_default(),
            jwks_ca_pem: f.str("jwks_ca_pem")?.unwrap_or_default(),
            jwt_validation_pubkeys: f.list("jwt_validation_pubkeys")?.unwrap_or_default(),
            bound_issuer: f.str("bound_issuer")?.unwrap_or_default(),
            jwt_supported_algs: f.list("jwt_supported_algs")?.unwrap_or_default(),
            default_role: f.str("default_role")?.unwrap_or_default().to_lowercase(),
        };
        c.oidc_discovery_url = c.oidc_discovery_url.trim_end_matches('/').to_owned();
        let sources = [
            !c.oidc_discovery_url.is_empty(),
            !c.jwks_url.is_empty(),
            !c.jwt_validation_pubkeys.is_empty(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(Error::invalid(
                "exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' \
                 must be set",
            ));
        }
        for (i, pem) in c.jwt_validation_pubkeys.iter().enumerate() {
            PublicKey::from_pem(pem)
                .map_err(|e| Error::invalid(format!("jwt_validation_pubkeys[{i}]: {e}")))?;
        }
        for alg in &c.jwt_supported_algs {
            if !jws::ALGORITHMS.contains(&alg.as_str()) {
                return Err(Error::invalid(format!(
                    "invalid jwt_supported_algs entry {alg:?}: use one of {}",
                    jws::ALGORITHMS.join(", ")
                )));
            }
        }
        for (field, pem) in
            [("jwks_ca_pem", &c.jwks_ca_pem), ("oidc_discovery_ca_pem", &c.oidc_discovery_ca_pem)]
        {
            outbound::client(pem).map_err(|e| Error::invalid(format!("{field}: {e}")))?;
        }
        // As Vault does, a URL is tried before it is saved, so a typo shows now and not at the
        // first login.
        let fresh = self.fetch(&c).await.map_err(|e| Error::invalid(e.to_string()))?;
        self.view.put("config", &record::encode(&c)?).await?;
        *self.keys.write().await = fresh.map(Arc::new);
        Ok(Response::empty())
    }
}

impl Framework for JwtAuth {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> Role {
        Role { bound_claims_type: "string".into(), ..Role::default() }
    }

    fn claims(v: Value) -> Map<String, Value> {
        into_map(v)
    }

    #[test]
    fn times_with_leeways() {
        let now = 1_000_000;
        let r = role();
        let c = |v| claims(v);
        assert!(validate_times(&c(json!({"exp": now + 10})), &r, now).is_ok());
        // Default leeway: 150 s expiration + 60 s clock skew.
        assert!(validate_times(&c(json!({"exp": now - 200})), &r, now).is_ok());
        assert!(validate_times(&c(json!({"exp": now - 211})), &r, now).is_err());
        let strict = Role { expiration_leeway: -1, clock_skew_leeway: -1, ..role() };
        assert!(validate_times(&c(json!({"exp": now - 1})), &strict, now).is_err());
        assert!(validate_times(&c(json!({})), &r, now).is_err());
        assert!(validate_times(&c(json!({"exp": "soon"})), &r, now).is_err());
        assert!(validate_times(&c(json!({"exp": now + 9, "iat": now + 3600})), &r, now).is_err());
        assert!(validate_times(&c(json!({"exp": now + 9, "nbf": now + 3600})), &r, now).is_err());
        assert!(validate_times(&c(json!({"exp": now + 9, "nbf": now + 100})), &r, now).is_ok());
    }

    #[test]
    fn audiences() {
        let bound = Role { bound_audiences: vec!["coffer".into()], ..role() };
        assert!(validate_audience(&claims(json!({"aud": "coffer"})), &bound).is_ok());
        assert!(validate_audience(&claims(json!({"aud": ["x", "coffer"]})), &bound).is_ok());
        assert!(validate_audience(&claims(json!({"aud": "other"})), &bound).is_err());
        assert!(validate_audience(&claims(json!({})), &bound).is_err());
        assert!(validate_audience(&claims(json!({"aud": "coffer"})), &role()).is_err());
        assert!(validate_audience(&claims(json!({})), &role()).is_ok());
    }

    #[test]
    fn bound_claims_string_glob_and_nested() {
        let mut r = role();
        r.bound_claims = claims(json!({"/org/team": ["web", "ops"], "env": "prod"}));
        let c = claims(json!({"org": {"team": "ops"}, "env": "prod"}));
        assert!(validate_bound_claims(&c, &r).is_ok());
        let wrong = claims(json!({"org": {"team": "dev"}, "env": "prod"}));
        assert!(validate_bound_claims(&wrong, &r).is_err());
        let missing = claims(json!({"env": "prod"}));
        assert!(validate_bound_claims(&missing, &r).is_err());
        let list = claims(json!({"org": {"team": ["dev", "web"]}, "env": "prod"}));
        assert!(validate_bound_claims(&list, &r).is_ok());

        r.bound_claims_type = "glob".into();
        r.bound_claims = claims(json!({"sub": "repo:acme/*"}));
        assert!(validate_bound_claims(&claims(json!({"sub": "repo:acme/web"})), &r).is_ok());
        assert!(validate_bound_claims(&claims(json!({"sub": "repo:evil/web"})), &r).is_err());
    }

    #[test]
    fn leeway_defaults() {
        assert_eq!(leeway(0, 150), 150);
        assert_eq!(leeway(-1, 150), 0);
        assert_eq!(leeway(30, 150), 30);
    }
}
