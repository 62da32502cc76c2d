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
