//! ACL policies in Vault's syntax (HCL, or the same structure as JSON): parsing, and the
//! compiled [`Acl`] that answers "which capabilities does this token have on this path".
//!
//! Guarantees: parsing is strict (unknown keys and capabilities are errors that name them);
//! `deny` on the winning rule leaves no capability; an exact rule beats any wildcard; among
//! wildcards Vault's priority order decides; a path no rule matches has no capability.
//! Not here: where policies are stored, or which policies a token holds.

mod acl;
mod body;
mod capabilities;
mod parse;

pub use acl::{Acl, RuleAt};
pub use capabilities::Capabilities;
pub use parse::{MAX_POLICY_ASSIGNMENTS, MAX_POLICY_BYTES, PolicyError, format_hcl};

use std::collections::BTreeMap;

use serde_json::Value;

/// One `path "PATTERN" { ... }` block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PathRule {
    pub(crate) pattern: String,
    pub(crate) capabilities: Capabilities,
    /// `None`: no constraint. A key with an empty list allows any value.
    pub(crate) allowed_parameters: Option<BTreeMap<String, Vec<Value>>>,
    pub(crate) denied_parameters: Option<BTreeMap<String, Vec<Value>>>,
    pub(crate) required_parameters: Vec<String>,
    pub(crate) min_wrapping_ttl: Option<u64>,
    pub(crate) max_wrapping_ttl: Option<u64>,
    /// Coffer only: requests here must name a key in `X-Coffer-Seal-To`, so the answer leaves
    /// the server only sealed to it.
    pub(crate) require_sealed_response: bool,
    /// Event types (Vault's `*` globs) the `subscribe` capability covers on this path.
    pub(crate) subscribe_event_types: Vec<String>,
}

/// A named, parsed policy. `raw` is the text exactly as written, for reading back.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub raw: String,
    pub(crate) rules: Vec<PathRule>,
}

impl Policy {
    /// Parses Vault's policy syntax: HCL, or the same structure in JSON.
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let rules = parse::rules(text)?;
        Ok(Policy { name: name.to_owned(), raw: text.to_owned(), rules })
    }

    /// [`Policy::parse`] for a policy being written: also held to the size caps
    /// ([`MAX_POLICY_BYTES`], [`MAX_POLICY_ASSIGNMENTS`]) and to wrapping TTLs of at most
    /// `max_wrapping_ttl` seconds (the system max_lease_ttl).
    pub fn parse_new(name: &str, text: &str, max_wrapping_ttl: u64) -> Result<Policy, PolicyError> {
        parse::check_size(text)?;
        let p = Self::parse(name, text)?;
        parse::check_wrapping_ttls(&p.rules, max_wrapping_ttl)?;
        Ok(p)
    }
}

/// The built-in `default` policy: what every token may do about itself, as in Vault.
pub const DEFAULT_POLICY: &str = r#"# Granted to every token unless it was created with no_default_policy.

# A token may read its own properties, renew itself and revoke itself.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}

# A token may ask which capabilities it has.
path "sys/capabilities-self" {
  capabilities = ["update"]
}

# A token may read its own identity entity, by id or by name (rendered for each token; a
# token without an entity gets nothing from these).
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}

path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}

path "sys/internal/ui/resultant-acl" {
  capabilities = ["read"]
}

# A token may renew and look up the leases it was given.
path "sys/renew" {
  capabilities = ["update"]
}

path "sys/leases/renew" {
  capabilities = ["update"]
}

path "sys/leases/lookup" {
  capabilities = ["update"]
}

# A token's cubbyhole is its own private storage.
path "cubbyhole/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# Response wrapping: a token may wrap data and look up or unwrap wrapping tokens.
path "sys/wrapping/wrap" {
  capabilities = ["update"]
}

path "sys/wrapping/lookup" {
  capabilities = ["update"]
}

path "sys/wrapping/unwrap" {
  capabilities = ["update"]
}

# Hashing and random bytes are harmless utilities.
path "sys/tools/hash" {
  capabilities = ["update"]
}

path "sys/tools/hash/*" {
  capabilities = ["update"]
}
"#;
