//! What an auth method hands the core after it has verified a credential, and the `token_*`
//! settings every method's roles share (Vault's `tokenutil`).
//!
//! An auth method never creates tokens itself: it answers a login with a [`Login`], and the core
//! turns that into a token (capped by the mount's and the server's TTL limits), so every method's
//! tokens obey the same rules and are audited the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::backend::MountInfo;
use crate::cidr::Cidr;
use crate::fields::Fields;
use crate::logical::{Auth, Error, Result};
use crate::token::{DEFAULT_POLICY, ROOT_POLICY, TokenParams, TokenStore};

/// A successful login, before it becomes a token.
#[derive(Debug, Clone, Default)]
pub struct Login {
    pub policies: Vec<String>,
    /// Shown in the token's `meta` and the `auth.metadata` of the answer.
    pub metadata: BTreeMap<String, String>,
    /// Appended to the mount's name: `approle`, `jwt-alice`.
    pub display_name: String,
    /// Seconds; 0: the mount's default TTL.
    pub ttl: u64,
    /// Seconds; 0: the mount's maximum TTL. Renewals stop here.
    pub max_ttl: u64,
    pub explicit_max_ttl: u64,
    pub period: u64,
    pub num_uses: u64,
    pub bound_cidrs: Vec<Cidr>,
    pub no_default_policy: bool,
}

/// The `token_*` fields of a role, with Vault's names, defaults and legacy aliases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenFields {
    pub token_policies: Vec<String>,
    pub token_ttl: u64,
    pub token_max_ttl: u64,
    pub token_explicit_max_ttl: u64,
    pub token_period: u64,
    pub token_num_uses: u64,
    pub token_bound_cidrs: Vec<Cidr>,
    pub token_no_default_policy: bool,
    /// `service` or `default`: Coffer issues service tokens only.
    pub token_type: String,
}

/// Field names [`TokenFields::update`] reads, for an endpoint's list of known fields.
pub const TOKEN_FIELD_NAMES: &[&str] = &[
    "token_policies",
    "token_ttl",
    "token_max_ttl",
    "token_explicit_max_ttl",
    "token_period",
    "token_num_uses",
    "token_bound_cidrs",
    "token_no_default_policy",
    "token_type",
    // Legacy names Vault still accepts when the `token_` one is absent.
    "policies",
    "ttl",
    "max_ttl",
    "period",
    "bound_cidrs",
];

/// Lower-cased, trimmed, sorted and deduplicated policy names.
pub fn normalize_policies(mut p: Vec<String>) -> Vec<String> {
    for s in &mut p {
        *s = s.trim().to_lowercase();
    }
    p.retain(|s| !s.is_empty());
    p.sort();
    p.dedup();
    p
}

impl TokenFields {
    /// Applies the fields present in a role write; absent fields keep their value, so the same
    /// call serves create and update.
    pub fn update(&mut self, f: &Fields<'_>) -> Result<()> {
        let pick = |new: &str, old: &str| if f.has(new) { new.to_owned() } else { old.to_owned() };
        if let Some(p) = f.list(&pick("token_policies", "policies"))? {
            self.token_policies = normalize_policies(p);
        }
        if let Some(v) = f.secs(&pick("token_ttl", "ttl"))? {
            self.token_ttl = v;
        }
        if let Some(v) = f.secs(&pick("token_max_ttl", "max_ttl"))? {
            self.token_max_ttl = v;
        }
        if let Some(v) = f.secs("token_explicit_max_ttl")? {
            self.token_explicit_max_ttl = v;
        }
        if let Some(v) = f.secs(&pick("token_period", "period"))? {
            self.token_period = v;
        }
        if let Some(v) = f.u64("token_num_uses")? {
            self.token_num_uses = v;
        }
        let cidr_field = pick("token_bound_cidrs", "bound_cidrs");
        if let Some(c) = f.list(&cidr_field)? {
            self.token_bound_cidrs = Cidr::parse_list(&cidr_field, &c)?;
        }
        if let Some(v) = f.bool("token_no_default_policy")? {
            self.token_no_default_policy = v;
        }
        if let Some(t) = f.str("token_type")? {
            match t.as_str() {
                "" | "default" | "service" | "default-service" => self.token_type = t,
                "batch" | "default-batch" => {
                    return Err(Error::invalid(format!(
                        "token_type {t:?} is not supported: Coffer issues service tokens only \
                         (use \"service\" or \"default\")"
                    )));
                }
                other => {
                    return Err(Error::invalid(format!(
                        "invalid token_type {other:?}: expected \"service\" or \"default\""
                    )));
                }
            }
        }
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(Error::invalid("token_ttl must not be greater than token_max_ttl"));
        }
        Ok(())
    }

    /// The fields as Vault shows them when a role is read.
    pub fn to_json(&self, into: &mut Map<String, Value>) {
        let cidrs: Vec<String> = self.token_bound_cidrs.iter().map(Cidr::to_string).collect();
        let t = if self.token_type.is_empty() { "default" } else { self.token_type.as_str() };
        let fields = json!({
            "token_policies": self.token_policies,
            "token_ttl": self.token_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_period": self.token_period,
            "token_num_uses": self.token_num_uses,
            "token_bound_cidrs": cidrs,
            "token_no_default_policy": self.token_no_default_policy,
            "token_type": t,
        });
        if let Value::Object(m) = fields {
            into.extend(m);
        }
    }

    /// A login for a role with these settings; the method adds its metadata and display name.
    pub fn login(&self) -> Login {
        Login {
            policies: self.token_policies.clone(),
            ttl: self.token_ttl,
            max_ttl: self.token_max_ttl,
            explicit_max_ttl: self.token_explicit_max_ttl,
            period: self.token_period,
            num_uses: self.token_num_uses,
            bound_cidrs: self.token_bound_cidrs.clone(),
            no_default_policy: self.token_no_default_policy,
            ..Login::default()
        }
    }
}

/// Turns an auth method's [`Login`] into an orphan service token, as Vault's core does: the TTL
/// is the role's or the mount's default, capped by the role's, the mount's and the server's
/// maximum; a periodic token's TTL is its period.
pub(crate) async fn issue(
    tokens: &TokenStore,
    mount: &MountInfo,
    request_path: &str,
    login: Login,
) -> Result<Auth> {
    let mut policies = normalize_policies(login.policies);
    if policies.iter().any(|p| p == ROOT_POLICY) {
        return Err(Error::invalid("auth methods cannot create root tokens"));
    }
    if policies.iter().any(|p| p == crate::wrapping::WRAPPING_POLICY) {
        return Err(Error::invalid("cannot issue a token with the response-wrapping policy"));
    }
    if !login.no_default_policy && !policies.iter().any(|p| p == DEFAULT_POLICY) {
        policies.push(DEFAULT_POLICY.to_owned());
        policies.sort();
    }
    if policies.is_empty() {
        return Err(Error::invalid("token must have at least one policy"));
    }
    let mount_max = mount.max_lease_ttl.as_secs();
    let max_ttl = if login.max_ttl > 0 { login.max_ttl.min(mount_max) } else { mount_max };
    let mut ttl = if login.period > 0 {
        login.period
    } else if login.ttl > 0 {
        login.ttl
    } else {
        mount.default_lease_ttl.as_secs()
    };
    if login.explicit_max_ttl > 0 {
        ttl = ttl.min(login.explicit_max_ttl);
    }
    if login.period == 0 {
        ttl = ttl.min(max_ttl);
    }
    let name = mount.path.trim_start_matches("auth/").trim_end_matches('/').replace('/', "-");
    let display_name =
        if login.display_name.is_empty() { name } else { format!("{name}-{}", login.display_name) };
    let params = TokenParams {
        policies,
        meta: login.metadata,
        display_name,
        num_uses: login.num_uses,
        ttl,
        explicit_max_ttl: login.explicit_max_ttl,
        period: login.period,
        renewable: true,
        orphan: true,
        path: request_path.to_owned(),
        bound_cidrs: login.bound_cidrs,
        max_ttl,
        ..TokenParams::default()
    };
    let (token, entry) = tokens.create(None, params).await?;
    Ok(entry.auth(&token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(t: &mut TokenFields, v: Value) -> Result<()> {
        let m = match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        t.update(&Fields::new(&m))
    }

    #[test]
    fn legacy_names_apply_when_new_ones_are_absent() {
        let mut t = TokenFields::default();
        update(&mut t, json!({"policies": "B, a", "ttl": "1h", "period": 60})).expect("update");
        assert_eq!(t.token_policies, vec!["a", "b"]);
        assert_eq!(t.token_ttl, 3600);
        assert_eq!(t.token_period, 60);
        update(&mut t, json!({"policies": "x", "token_policies": ["y"]})).expect("update");
        assert_eq!(t.token_policies, vec!["y"]);
        // Absent fields keep their value.
        assert_eq!(t.token_ttl, 3600);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut t = TokenFields::default();
        let e = update(&mut t, json!({"token_bound_cidrs": ["300.0.0.1/8"]})).expect_err("refused");
        assert!(e.to_string().contains("token_bound_cidrs"), "{e}");
        let e = update(&mut t, json!({"token_type": "batch"})).expect_err("refused");
        assert!(e.to_string().contains("service tokens"), "{e}");
        let e =
            update(&mut t, json!({"token_ttl": "2h", "token_max_ttl": "1h"})).expect_err("refused");
        assert!(e.to_string().contains("token_max_ttl"), "{e}");
        let e = update(&mut t, json!({"token_ttl": "soon"})).expect_err("refused");
        assert!(e.to_string().contains("token_ttl"), "{e}");
    }

    #[test]
    fn read_shape_matches_vault() {
        let mut t = TokenFields::default();
        update(&mut t, json!({"token_bound_cidrs": "10.0.0.0/8,127.0.0.1"})).expect("update");
        let mut m = Map::new();
        t.to_json(&mut m);
        assert_eq!(m["token_bound_cidrs"], json!(["10.0.0.0/8", "127.0.0.1/32"]));
        assert_eq!(m["token_type"], "default");
        assert_eq!(m["token_policies"], json!([]));
    }
}
