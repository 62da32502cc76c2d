//! Roles: the bounds on what a certificate issued or signed under them may say, with Vault's
//! field names and defaults. A write replaces the role (absent fields take their defaults, as
//! in Vault); a patch changes only the fields sent.

use coffer_core::framework::{Field, Req, list_response};
use coffer_core::record;
use coffer_core::{Error, Response, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Pki;
use crate::keys::KeySpec;

pub(crate) const FIELDS: &[Field] = &[
    Field::duration("ttl", "Default lifetime of issued certificates; 0: the mount's default."),
    Field::duration("max_ttl", "Longest lifetime; 0: the mount's maximum."),
    Field::bool("allow_localhost", "Allow `localhost` (default true)."),
    Field::comma_list("allowed_domains", "Domains the role issues for (see the allow_* flags)."),
    Field::bool("allow_bare_domains", "Allow the allowed domains themselves."),
    Field::bool("allow_subdomains", "Allow subdomains of the allowed domains (and wildcards)."),
    Field::bool("allow_glob_domains", "Allowed domains may hold `*` globs."),
    Field::bool("allow_wildcard_certificates", "Allow `*.` names (default true)."),
    Field::bool("allow_any_name", "Allow any name."),
    Field::bool("enforce_hostnames", "Names must be valid hostnames (default true)."),
    Field::bool("allow_ip_sans", "Allow IP SANs (default true)."),
    Field::comma_list("allowed_uri_sans", "URI SANs allowed, `*` globs (SPIFFE IDs)."),
    Field::comma_list("allowed_other_sans", "Accepted; other SANs are not issued."),
    Field::bool("server_flag", "TLS server authentication EKU (default true)."),
    Field::bool("client_flag", "TLS client authentication EKU (default true)."),
    Field::bool("code_signing_flag", "Code signing EKU."),
    Field::bool("email_protection_flag", "Email protection EKU."),
    Field::str("key_type", "rsa, ec, ed25519 or any (sign only).")
        .default(coffer_core::framework::Default::Str("rsa")),
    Field::int("key_bits", "Key size; 0: the type's default."),
    Field::int("signature_bits", "Accepted; the signature hash follows the issuer's key."),
    Field::comma_list(
        "key_usage",
        "Key usages (DigitalSignature, KeyAgreement, KeyEncipherment...).",
    ),
    Field::comma_list("ext_key_usage", "Extended key usages by name (ServerAuth, ClientAuth...)."),
    Field::comma_list("ext_key_usage_oids", "Extended key usages by OID."),
    Field::bool("use_csr_common_name", "sign: take the CN from the CSR (default true)."),
    Field::bool("use_csr_sans", "sign: take the SANs from the CSR (default true)."),
    Field::comma_list("ou", "Subject OU."),
    Field::comma_list("organization", "Subject O."),
    Field::comma_list("country", "Subject C."),
    Field::comma_list("locality", "Subject L."),
    Field::comma_list("province", "Subject ST."),
    Field::comma_list("street_address", "Accepted; not written into the subject."),
    Field::comma_list("postal_code", "Accepted; not written into the subject."),
    Field::bool(
        "generate_lease",
        "Register a lease per certificate; revoking it revokes the cert.",
    ),
    Field::bool(
        "no_store",
        "Store nothing per certificate (it cannot be listed or revoked by serial).",
    ),
    Field::bool("require_cn", "A common name is required (default true)."),
    Field::str("issuer_ref", "The issuer that signs (default: the default issuer)."),
    Field::duration("not_before_duration", "Backdating of notBefore (default 30s)."),
    Field::str(
        "not_before_bound",
        "Whether a request may set not_before: permit (default), duration (no earlier than \
         not_before_duration ago) or forbid.",
    ),
    Field::str(
        "not_after_bound",
        "Whether a request may set not_after: permit (default), ttl-limited (within the TTL), \
         forbid, or an RFC 3339 time no certificate may outlive.",
    ),
    Field::comma_list("cn_validations", "email, hostname or disabled (default email,hostname)."),
    Field::comma_list("policy_identifiers", "Accepted; no policies are written."),
    Field::bool("basic_constraints_valid_for_non_ca", "Accepted."),
];

fn t() -> bool {
    true
}

fn rsa() -> String {
    "rsa".into()
}

fn default_issuer() -> String {
    "default".into()
}

fn default_usage() -> Vec<String> {
    vec!["DigitalSignature".into(), "KeyAgreement".into(), "KeyEncipherment".into()]
}

fn default_cn_validations() -> Vec<String> {
    vec!["email".into(), "hostname".into()]
}

fn thirty() -> u64 {
    30
}

fn permit() -> String {
    "permit".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Role {
    #[serde(default)]
    pub(crate) ttl: u64,
    #[serde(default)]
    pub(crate) max_ttl: u64,
    #[serde(default = "t")]
    pub(crate) allow_localhost: bool,
    #[serde(default)]
    pub(crate) allowed_domains: Vec<String>,
    #[serde(default)]
    pub(crate) allow_bare_domains: bool,
    #[serde(default)]
    pub(crate) allow_subdomains: bool,
    #[serde(default)]
    pub(crate) allow_glob_domains: bool,
    #[serde(default = "t")]
    pub(crate) allow_wildcard_certificates: bool,
    #[serde(default)]
    pub(crate) allow_any_name: bool,
    #[serde(default = "t")]
    pub(crate) enforce_hostnames: bool,
    #[serde(default = "t")]
    pub(crate) allow_ip_sans: bool,
    #[serde(default)]
    pub(crate) allowed_uri_sans: Vec<String>,
    #[serde(default)]
    pub(crate) allowed_other_sans: Vec<String>,
    #[serde(default = "t")]
    pub(crate) server_flag: bool,
    #[serde(default = "t")]
    pub(crate) client_flag: bool,
    #[serde(default)]
    pub(crate) code_signing_flag: bool,
    #[serde(default)]
    pub(crate) email_protection_flag: bool,
    #[serde(default = "rsa")]
    pub(crate) key_type: String,
    #[serde(default)]
    pub(crate) key_bits: u64,
    #[serde(default)]
    pub(crate) signature_bits: u64,
    #[serde(default = "default_usage")]
    pub(crate) key_usage: Vec<String>,
    #[serde(default)]
    pub(crate) ext_key_usage: Vec<String>,
    #[serde(default)]
    pub(crate) ext_key_usage_oids: Vec<String>,
    #[serde(default = "t")]
    pub(crate) use_csr_common_name: bool,
    #[serde(default = "t")]
    pub(crate) use_csr_sans: bool,
    #[serde(default)]
    pub(crate) ou: Vec<String>,
    #[serde(default)]
    pub(crate) organization: Vec<String>,
    #[serde(default)]
    pub(crate) country: Vec<String>,
    #[serde(default)]
    pub(crate) locality: Vec<String>,
    #[serde(default)]
    pub(crate) province: Vec<String>,
    #[serde(default)]
    pub(crate) street_address: Vec<String>,
    #[serde(default)]
    pub(crate) postal_code: Vec<String>,
    #[serde(default)]
    pub(crate) generate_lease: bool,
    #[serde(default)]
    pub(crate) no_store: bool,
    #[serde(default = "t")]
    pub(crate) require_cn: bool,
    #[serde(default = "default_issuer")]
    pub(crate) issuer_ref: String,
    #[serde(default = "thirty")]
    pub(crate) not_before_duration: u64,
    /// `permit`, `duration` or `forbid` (OpenBao's); roles stored before it have `permit`.
    #[serde(default = "permit")]
    pub(crate) not_before_bound: String,
    /// `permit`, `ttl-limited`, `forbid`, or an RFC 3339 time.
    #[serde(default = "permit")]
    pub(crate) not_after_bound: String,
    #[serde(default = "default_cn_validations")]
    pub(crate) cn_validations: Vec<String>,
    #[serde(default)]
    pub(crate) policy_identifiers: Vec<String>,
    #[serde(default)]
    pub(crate) basic_constraints_valid_for_non_ca: bool,
}

/// Vault's defaults, the same as the serde defaults of a stored role.
impl Default for Role {
    fn default() -> Self {
        Role {
            ttl: 0,
            max_ttl: 0,
            allow_localhost: true,
            allowed_domains: vec![],
            allow_bare_domains: false,
            allow_subdomains: false,
            allow_glob_domains: false,
            allow_wildcard_certificates: true,
            allow_any_name: false,
            enforce_hostnames: true,
            allow_ip_sans: true,
            allowed_uri_sans: vec![],
            allowed_other_sans: vec![],
            server_flag: true,
            client_flag: true,
            code_signing_flag: false,
            email_protection_flag: false,
            key_type: rsa(),
            key_bits: 0,
            signature_bits: 0,
            key_usage: default_usage(),
            ext_key_usage: vec![],
            ext_key_usage_oids: vec![],
            use_csr_common_name: true,
            use_csr_sans: true,
            ou: vec![],
            organization: vec![],
            country: vec![],
            locality: vec![],
            province: vec![],
            street_address: vec![],
            postal_code: vec![],
            generate_lease: false,
            no_store: false,
            require_cn: true,
            issuer_ref: default_issuer(),
            not_before_duration: 30,
            not_before_bound: permit(),
            not_after_bound: permit(),
            cn_validations: default_cn_validations(),
            policy_identifiers: vec![],
            basic_constraints_valid_for_non_ca: false,
        }
    }
}

coffer_core::record!(Role, "pki role", 1);

pub(crate) fn check_role_name(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if name.is_empty() || !name.chars().all(ok) {
        return Err(Error::invalid(format!(
            "invalid role name {name:?}: use letters, digits, '_', '-' and '.'"
        )));
    }
    Ok(())
}

impl Role {
    /// The role with every field `r` sent applied, then checked.
    fn apply(mut self, r: &Req<'_>) -> Result<Self> {
        let f = r.fields();
        macro_rules! set {
            ($($name:ident: $get:ident),* $(,)?) => {
                $(if let Some(v) = f.$get(stringify!($name))? { self.$name = v; })*
            };
        }
        set!(
            ttl: secs, max_ttl: secs, allow_localhost: bool, allowed_domains: list,
            allow_bare_domains: bool, allow_subdomains: bool, allow_glob_domains: bool,
            allow_wildcard_certificates: bool, allow_any_name: bool, enforce_hostnames: bool,
            allow_ip_sans: bool, allowed_uri_sans: list, allowed_other_sans: list,
            server_flag: bool, client_flag: bool, code_signing_flag: bool,
            email_protection_flag: bool, key_type: str, key_bits: u64, signature_bits: u64,
            key_usage: list, ext_key_usage: list, ext_key_usage_oids: list,
            use_csr_common_name: bool, use_csr_sans: bool, ou: list, organization: list,
            country: list, locality: list, province: list, street_address: list,
            postal_code: list, generate_lease: bool, no_store: bool, require_cn: bool,
            issuer_ref: str, not_before_duration: secs, not_before_bound: str,
            not_after_bound: str, cn_validations: list,
            policy_identifiers: list, basic_constraints_valid_for_non_ca: bool,
        );
        // OpenBao's texts, its backticks included.
        if !matches!(self.not_before_bound.as_str(), "permit" | "duration" | "forbid") {
            return Err(Error::invalid(
                "Unknown value for field `not_before_bound`. Possible values are `permit` \
                 `duration` or `forbid`",
            ));
        }
        if !matches!(self.not_after_bound.as_str(), "permit" | "ttl-limited" | "forbid")
            && crate::issue::parse_rfc3339(&self.not_after_bound).is_none()
        {
            return Err(Error::invalid(
                "Unknown value for field `not_after_bound`. Possible values are `permit`, \
                 `ttl-limited`, `forbid`, or an explicit timestamp.",
            ));
        }
        if self.key_type != "any" {
            let spec = KeySpec::parse(&self.key_type, self.key_bits)?;
            self.key_bits = u64::from(spec.bits());
        }
        if self.max_ttl > 0 && self.ttl > self.max_ttl {
            return Err(Error::invalid(format!(
                "\"ttl\" value must be less than \"max_ttl\" value ({}s > {}s)",
                self.ttl, self.max_ttl
            )));
        }
        for e in &self.ext_key_usage {
            crate::issue::eku(e)?;
        }
        for o in &self.ext_key_usage_oids {
            crate::issue::parse_oid(o)?;
        }
        for u in &self.key_usage {
            crate::issue::key_usage(u)?;
        }
        for v in &self.cn_validations {
            if !matches!(v.as_str(), "email" | "hostname" | "disabled") {
                return Err(Error::invalid(format!(
                    "invalid cn_validations value {v:?}: use email, hostname or disabled"
                )));
            }
        }
        Ok(self)
    }

    pub(crate) fn json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            for (k, x) in [
                ("allow_token_displayname", json!(false)),
                ("allowed_domains_template", json!(false)),
                ("allowed_uri_sans_template", json!(false)),
                ("allowed_serial_numbers", json!([])),
                ("allowed_user_ids", json!([])),
                ("not_after", json!("")),
                ("use_pss", json!(false)),
                ("allow_globs_in_identity_templates", json!(false)),
                ("allowed_ip_sans_cidr", json!([])),
                ("not_before", json!("")),
            ] {
                m.insert(k.into(), x);
            }
        }
        v
    }
}

impl Pki {
    pub(crate) async fn role(&self, name: &str) -> Result<Option<Role>> {
        record::load(&self.view, &format!("roles/{name}")).await
    }

    pub(crate) async fn role_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(self.role(r.capture("name")).await?.is_some()))
    }

    pub(crate) async fn list_roles(&self, _r: &Req<'_>) -> Result<Response> {
        list_response(self.view.list("roles/").await?)
    }

    pub(crate) async fn read_role(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.role(r.capture("name")).await?.ok_or(Error::NotFound)?;
        Ok(Response::from_value(role.json()))
    }

    pub(crate) async fn write_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        check_role_name(name)?;
        let role = Role::default().apply(r)?;
        self.view.put(&format!("roles/{name}"), &record::encode(&role)?).await?;
        Ok(Response::from_value(role.json()))
    }

    pub(crate) async fn patch_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _g = self.lock.lock().await;
        // Vault's answer for a missing role: a 400 with its text, not a 404.
        let role = self
            .role(name)
            .await?
            .ok_or_else(|| Error::invalid("Unable to fetch role entry to patch"))?
            .apply(r)?;
        self.view.put(&format!("roles/{name}"), &record::encode(&role)?).await?;
        Ok(Response::from_value(role.json()))
    }

    pub(crate) async fn delete_role(&self, r: &Req<'_>) -> Result<Response> {
        self.view.delete(&format!("roles/{}", r.capture("name"))).await?;
        Ok(Response::empty())
    }
}
