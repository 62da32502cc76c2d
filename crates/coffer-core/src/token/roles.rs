//! Token roles (`auth/token/roles/:name`): what `auth/token/create/:name` may make, with
//! Vault's fields, defaults and checks.
//!
//! Guarantees: a role is stored as one versioned record in the token store's own view
//! (`roles/<lower-cased name>`); a write checks every field before anything is stored, so a
//! refused write changes nothing; `token_type` accepts only service tokens (Coffer issues no
//! batch tokens). What a role *means* at token creation (policies, orphan, period, TTL caps,
//! bound CIDRs, path suffix, the `entity_alias` it allows) is applied by the token backend's
//! create.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::TokenStore;
use crate::cidr::Cidr;
use crate::logical::fields::Fields;
use crate::logical::{Error, Result};
use crate::record;

/// One token role, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TokenRole {
    pub(crate) name: String,
    pub(crate) allowed_policies: Vec<String>,
    pub(crate) disallowed_policies: Vec<String>,
    pub(crate) allowed_policies_glob: Vec<String>,
    pub(crate) disallowed_policies_glob: Vec<String>,
    pub(crate) orphan: bool,
    pub(crate) renewable: bool,
    pub(crate) path_suffix: String,
    pub(crate) allowed_entity_aliases: Vec<String>,
    pub(crate) token_period: u64,
    pub(crate) token_explicit_max_ttl: u64,
    pub(crate) token_bound_cidrs: Vec<Cidr>,
    pub(crate) token_no_default_policy: bool,
    pub(crate) token_num_uses: u64,
    /// `service` or `default-service`.
    pub(crate) token_type: String,
    /// The legacy names, shown as Vault shows them: set only when the legacy field was used.
    pub(crate) period: u64,
    pub(crate) explicit_max_ttl: u64,
    pub(crate) bound_cidrs: Vec<Cidr>,
}

impl Default for TokenRole {
    fn default() -> Self {
        Self {
            name: String::new(),
            allowed_policies: Vec::new(),
            disallowed_policies: Vec::new(),
            allowed_policies_glob: Vec::new(),
            disallowed_policies_glob: Vec::new(),
            orphan: false,
            renewable: true,
            path_suffix: String::new(),
            allowed_entity_aliases: Vec::new(),
            token_period: 0,
            token_explicit_max_ttl: 0,
            token_bound_cidrs: Vec::new(),
            token_no_default_policy: false,
            token_num_uses: 0,
            token_type: "default-service".into(),
            period: 0,
            explicit_max_ttl: 0,
            bound_cidrs: Vec::new(),
        }
    }
}

crate::record!(TokenRole, "token role", 1);

/// Vault's role name rule for `roles/:role_name`: word characters, `-` and `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Vault's `\w[\w-.]+\w`, anywhere in the suffix, and no `..`.
fn valid_suffix(s: &str) -> bool {
    let w = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = s.chars().collect();
    chars.windows(3).any(|t| w(t[0]) && t[1..].iter().all(|c| w(*c) || matches!(c, '-' | '.')))
        && chars.iter().all(|c| w(*c) || matches!(c, '-' | '.' | '/'))
}

/// Policy names as Vault sanitizes them: trimmed, lower-cased, no empties or repeats, sorted.
fn policy_list(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> =
        v.into_iter().map(|p| p.trim().to_lowercase()).filter(|p| !p.is_empty()).collect();
    out.sort();
    out.dedup();
    out
}

impl TokenRole {
    /// Applies a write's fields (absent ones keep their value); returns Vault's warnings.
    pub(crate) fn apply(&mut self, f: &Fields<'_>) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        for (name, slot) in [
            ("allowed_policies", &mut self.allowed_policies),
            ("disallowed_policies", &mut self.disallowed_policies),
            ("allowed_policies_glob", &mut self.allowed_policies_glob),
            ("disallowed_policies_glob", &mut self.disallowed_policies_glob),
        ] {
            if let Some(p) = f.list(name)? {
                *slot = policy_list(p);
            }
        }
        if let Some(a) = f.list("allowed_entity_aliases")? {
            self.allowed_entity_aliases = a;
        }
        if let Some(b) = f.bool("orphan")? {
            self.orphan = b;
        }
        if let Some(b) = f.bool("renewable")? {
            self.renewable = b;
        }
        if let Some(s) = f.str("path_suffix")? {
            if !s.is_empty() && !valid_suffix(&s) {
                return Err(Error::invalid(
                    "given role path suffix contains invalid characters; must match \\w[\\w-.]+\\w",
                ));
            }
            if s.contains("..") {
                return Err(Error::invalid(
                    "error registering path suffix: path cannot contain parent references",
                ));
            }
            self.path_suffix = s;
        }
        if let Some(n) = f.u64("token_num_uses")? {
            self.token_num_uses = n;
        }
        if let Some(b) = f.bool("token_no_default_policy")? {
            self.token_no_default_policy = b;
        }
        match f.raw("token_type") {
            None => {}
            Some(Value::Null) => return Err(Error::invalid("Invalid 'token_type' value: null")),
            Some(_) => {
                let t = f.str("token_type")?.unwrap_or_default();
                self.token_type = match t.as_str() {
                    "service" => "service".into(),
                    "default-service" | "default" => "default-service".into(),
                    "batch" | "default-batch" => {
                        return Err(Error::invalid(format!(
                            "token_type {t:?} is not supported: Coffer issues service tokens only"
                        )));
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "invalid 'token_type' value {other:?}"
                        )));
                    }
                };
            }
        }
        // The `token_` names win over the legacy ones, as in Vault, which warns when both come.
        let both = |new: &str, old: &str| f.has(new) && f.has(old);
        if let Some(v) = f.secs("token_period")? {
            self.token_period = v;
            self.period = 0;
            if both("token_period", "period") {
                warnings.push("Both 'token_period' and deprecated 'period' value supplied, ignoring the deprecated value".into());
            }
        } else if let Some(v) = f.secs("period")? {
            self.period = v;
            self.token_period = v;
        }
        if let Some(v) = f.secs("token_explicit_max_ttl")? {
            self.token_explicit_max_ttl = v;
            self.explicit_max_ttl = 0;
            if both("token_explicit_max_ttl", "explicit_max_ttl") {
                warnings.push("Both 'token_explicit_max_ttl' and deprecated 'explicit_max_ttl' value supplied, ignoring the deprecated value".into());
            }
        } else if let Some(v) = f.secs("explicit_max_ttl")? {
            self.explicit_max_ttl = v;
            self.token_explicit_max_ttl = v;
        }
        if let Some(c) = f.list("token_bound_cidrs")? {
            self.token_bound_cidrs = Cidr::parse_list("token_bound_cidrs", &c)?;
            self.bound_cidrs.clear();
            if both("token_bound_cidrs", "bound_cidrs") {
                warnings.push("Both 'token_bound_cidrs' and deprecated 'bound_cidrs' value supplied, ignoring the deprecated value".into());
            }
        } else if let Some(c) = f.list("bound_cidrs")? {
            self.bound_cidrs = Cidr::parse_list("bound_cidrs", &c)?;
            self.token_bound_cidrs = self.bound_cidrs.clone();
        }
        Ok(warnings)
    }

    /// What a read shows, with Vault's names (the CIDRs and `token_num_uses` only when set).
    pub(crate) fn to_json(&self) -> Map<String, Value> {
        let cidrs = |c: &[Cidr]| c.iter().map(Cidr::to_string).collect::<Vec<_>>();
        let mut m = crate::logical::into_map(json!({
            "name": self.name,
            "allowed_policies": self.allowed_policies,
            "disallowed_policies": self.disallowed_policies,
            "allowed_policies_glob": self.allowed_policies_glob,
            "disallowed_policies_glob": self.disallowed_policies_glob,
            "orphan": self.orphan,
            "renewable": self.renewable,
            "path_suffix": self.path_suffix,
            // Vault shows `null` for none.
            "allowed_entity_aliases": if self.allowed_entity_aliases.is_empty() {
                Value::Null
            } else {
                json!(self.allowed_entity_aliases)
            },
            "period": self.period,
            "token_period": self.token_period,
            "explicit_max_ttl": self.explicit_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_no_default_policy": self.token_no_default_policy,
            "token_type": self.token_type,
        }));
        if !self.token_bound_cidrs.is_empty() {
            m.insert("token_bound_cidrs".into(), json!(cidrs(&self.token_bound_cidrs)));
        }
        if !self.bound_cidrs.is_empty() {
            m.insert("bound_cidrs".into(), json!(cidrs(&self.bound_cidrs)));
        }
        if self.token_num_uses > 0 {
            m.insert("token_num_uses".into(), json!(self.token_num_uses));
        }
        m
    }
}

impl TokenStore {
    fn role_key(name: &str) -> String {
        format!("roles/{}", name.to_lowercase())
    }

    pub(crate) async fn role(&self, name: &str) -> Result<Option<TokenRole>> {
        if !valid_name(name) {
            return Ok(None);
        }
        record::load(&self.view, &Self::role_key(name)).await
    }

    /// Creates or updates the role `name` from a write; returns Vault's warnings.
    pub(crate) async fn write_role(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<String>> {
        if !valid_name(name) {
            return Err(Error::invalid(format!(
                "invalid role name {name:?}: letters, digits, '_', '-' and '.' only"
            )));
        }
        let _g = self.write_lock.lock().await;
        let mut role = self.role(name).await?.unwrap_or_default();
        role.name = name.to_lowercase();
        let warnings = role.apply(&Fields::new(data))?;
        self.view.put(&Self::role_key(name), &record::encode(&role)?).await?;
        Ok(warnings)
    }

    pub(crate) async fn delete_role(&self, name: &str) -> Result<()> {
        if valid_name(name) {
            self.view.delete(&Self::role_key(name)).await?;
        }
        Ok(())
    }

    pub(crate) async fn role_names(&self) -> Result<Vec<String>> {
        Ok(self.view.list("roles/").await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(role: &mut TokenRole, v: Value) -> Result<Vec<String>> {
        let m = crate::logical::into_map(v);
        role.apply(&Fields::new(&m))
    }

    #[test]
    fn legacy_names_fill_the_token_ones_and_lose_to_them() {
        let mut r = TokenRole::default();
        apply(&mut r, json!({"period": "1h", "explicit_max_ttl": 60})).expect("apply");
        assert_eq!((r.token_period, r.period, r.token_explicit_max_ttl), (3600, 3600, 60));
        let w = apply(&mut r, json!({"token_period": 10, "period": 99})).expect("apply");
        assert_eq!((r.token_period, r.period, w.len()), (10, 0, 1));
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let mut r = TokenRole::default();
        assert!(apply(&mut r, json!({"token_type": "batch"})).is_err());
        assert!(apply(&mut r, json!({"token_type": null})).is_err());
        assert!(apply(&mut r, json!({"path_suffix": "a/../b"})).is_err());
        assert!(apply(&mut r, json!({"path_suffix": "!!"})).is_err());
        assert!(apply(&mut r, json!({"token_bound_cidrs": "nope"})).is_err());
        apply(&mut r, json!({"path_suffix": "v1.2-x"})).expect("a good suffix");
        assert_eq!(r.path_suffix, "v1.2-x");
        assert!(valid_name("web-1.x") && !valid_name("a/b") && !valid_name(""));
    }
}
