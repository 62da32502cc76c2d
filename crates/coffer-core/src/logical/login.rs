//! What an auth method hands the core after it has verified a credential: a description of the
//! token it earned, which the core then issues (`crate::login`).

use std::collections::BTreeMap;

use crate::cidr::Cidr;

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
    /// Who the caller is in this auth method: the core finds (or makes) the identity entity
    /// with this alias on the mount, and the token carries that entity. `None`: no entity.
    pub alias: Option<LoginAlias>,
}

/// The caller's name in an auth method, as the identity store keys its aliases: with the mount
/// accessor, it names one entity.
#[derive(Debug, Clone, Default)]
pub struct LoginAlias {
    /// The method's own name for the caller (an AppRole's role_id, a JWT's `user_claim`...).
    pub name: String,
    /// Stored on the alias at each login (templates read it as
    /// `identity.entity.aliases.<accessor>.metadata.<key>`); never a credential.
    pub metadata: BTreeMap<String, String>,
    /// Group names the method reports (a JWT's `groups_claim`): the entity is made a member of
    /// the external groups with these aliases on the mount, and of no other there (`None`, as
    /// for a method that reports no groups: of none there, as in Vault).
    pub groups: Option<Vec<String>>,
}

impl LoginAlias {
    pub fn new(name: impl Into<String>, metadata: BTreeMap<String, String>) -> Self {
        Self { name: name.into(), metadata, groups: None }
    }
}

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
