//! Capabilities as a bit set, with Vault's names.

use std::fmt;

use super::PolicyError;

#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Capabilities(u16);

const NAMES: [(&str, Capabilities); 9] = [
    ("create", Capabilities::CREATE),
    ("read", Capabilities::READ),
    ("update", Capabilities::UPDATE),
    ("patch", Capabilities::PATCH),
    ("delete", Capabilities::DELETE),
    ("list", Capabilities::LIST),
    ("sudo", Capabilities::SUDO),
    ("subscribe", Capabilities::SUBSCRIBE),
    ("deny", Capabilities::DENY),
];

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    pub const CREATE: Capabilities = Capabilities(1);
    pub const READ: Capabilities = Capabilities(1 << 1);
    pub const UPDATE: Capabilities = Capabilities(1 << 2);
    pub const PATCH: Capabilities = Capabilities(1 << 3);
    pub const DELETE: Capabilities = Capabilities(1 << 4);
    pub const LIST: Capabilities = Capabilities(1 << 5);
    pub const SUDO: Capabilities = Capabilities(1 << 6);
    pub const DENY: Capabilities = Capabilities(1 << 7);
    /// Vault's capability to receive event notifications about a path (with the rule's
    /// `subscribe_event_types`); grants no request on the path itself.
    pub const SUBSCRIBE: Capabilities = Capabilities(1 << 8);
    /// Everything but deny: what the root policy holds.
    pub(crate) const ALL: Capabilities = Capabilities(0x17f);

    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// With `deny` in the set, nothing else counts.
    pub(crate) fn effective(self) -> Capabilities {
        if self.contains(Self::DENY) { Self::DENY } else { self }
    }

    /// Vault's names, in Vault's order; `["deny"]` alone when denied.
    pub fn names(self) -> Vec<&'static str> {
        if self.contains(Self::DENY) {
            return vec!["deny"];
        }
        NAMES
            .iter()
            .filter(|(_, c)| *c != Self::DENY && self.contains(*c))
            .map(|(n, _)| *n)
            .collect()
    }

    /// One capability by name; the error names the bad one.
    pub fn parse(name: &str) -> Result<Capabilities, PolicyError> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| PolicyError::UnknownCapability(name.to_owned()))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities{:?}", self.names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_vaults_order_and_deny_stands_alone() {
        let c = Capabilities::LIST.union(Capabilities::READ).union(Capabilities::CREATE);
        assert_eq!(c.names(), ["create", "read", "list"]);
        assert_eq!(c.union(Capabilities::DENY).names(), ["deny"]);
        assert!(Capabilities::NONE.names().is_empty());
    }

    #[test]
    fn unknown_capability_is_rejected_with_its_name() {
        let e = Capabilities::parse("reed").expect_err("unknown");
        assert!(e.to_string().contains("reed"));
        assert_eq!(Capabilities::parse("sudo").expect("sudo"), Capabilities::SUDO);
    }
}
