//! The contract between the core and the engines and auth methods mounted on it.
//!
//! A backend sees only what [`BackendRequest`] carries: its own relative path, the request data,
//! the authenticated caller, and its mount's settings; and only its own storage [`View`]. It never
//! sees the token itself, other mounts, or the raw storage. Backends declare their paths with
//! the [`framework`] (re-exported as `coffer_core::framework`), which implements this contract.

pub mod framework;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coffer_barrier::View;
use serde_json::{Map, Value};

use crate::logical::{Operation, Response, Result};
use crate::token::TokenEntry;

/// A mount's settings as its backend sees them.
#[derive(Debug, Clone)]
pub struct MountInfo {
    /// `secret/`, or `auth/approle/` for auth methods.
    pub path: String,
    pub kind: String,
    pub uuid: String,
    pub accessor: String,
    pub default_lease_ttl: Duration,
    pub max_lease_ttl: Duration,
    pub options: BTreeMap<String, String>,
}

/// One request as a backend receives it.
pub struct BackendRequest<'a> {
    pub id: &'a str,
    pub operation: Operation,
    /// Relative to the mount: `app/db` for `secret/app/db`.
    pub path: &'a str,
    pub data: &'a Map<String, Value>,
    /// The authenticated token; `None` only on a backend's unauthenticated paths.
    pub caller: Option<&'a TokenEntry>,
    pub mount: &'a MountInfo,
    pub remote_addr: Option<IpAddr>,
    /// The caller holds `sudo` on this path (root tokens always do).
    pub sudo: bool,
    /// The token as presented, for the few token-store answers that echo it back.
    pub client_token: Option<&'a crate::secret::SecretString>,
    /// The client's TLS certificate chain (DER, leaf first), for the cert auth method.
    pub client_cert_chain: &'a [Vec<u8>],
}

/// A lease being renewed or revoked, as the engine that issued its secret sees it.
pub struct LeaseRequest<'a> {
    pub lease_id: &'a str,
    /// Relative to the mount, where the secret was issued: `creds/readonly`.
    pub path: &'a str,
    pub mount: &'a MountInfo,
    /// What the engine put in [`crate::logical::SecretLease::internal`] at issue.
    pub internal: &'a Map<String, Value>,
    /// Unix seconds.
    pub issue_time: u64,
    /// Unix seconds: at renewal the new expiry the manager settled on, at revocation the old one.
    pub expire_time: u64,
}

/// One change to a mount's storage, relative to its view: what a backend hands the core to
/// carry its data over to new options ([`LogicalBackend::migrate_options`]).
pub enum StorageChange {
    Put(String, zeroize::Zeroizing<Vec<u8>>),
    Delete(String),
}

#[async_trait]
pub trait LogicalBackend: Send + Sync + 'static {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response>;

    /// The storage changes that carry this backend's data over to a mount with `options` (a
    /// tune changing them: kv version 1 to 2), read while nothing is routed to the mount. The
    /// core writes them in one atomic batch with the mount table, then serves the mount with
    /// a backend made for the new options. The default: no such change exists.
    async fn migrate_options(
        &self,
        _options: &BTreeMap<String, String>,
    ) -> Result<Vec<StorageChange>> {
        Err(crate::logical::Error::invalid("this mount's options cannot change in place"))
    }

    /// Extends the credential behind a lease to `lease.expire_time` (e.g. `VALID UNTIL`).
    /// Backends whose secrets have nothing to extend keep the default, which refuses.
    async fn renew_lease(&self, _lease: &LeaseRequest<'_>) -> Result<()> {
        Err(crate::logical::Error::invalid("lease is not renewable"))
    }

    /// Takes away what the secret behind a lease granted (e.g. drops the database user). An
    /// error leaves the lease in place, to be retried; it must be safe to call again.
    async fn revoke_lease(&self, _lease: &LeaseRequest<'_>) -> Result<()> {
        Ok(())
    }

    /// Puts the secret values this mount already holds into the liveness index, for a mount
    /// whose values were written before the index existed (an upgrade). Run once per mount, in
    /// the background, by the core; must be safe to run again. Returns how many entries it
    /// wrote. The default: the backend holds no values that are indexed.
    async fn index_live_values(&self) -> Result<u64> {
        Ok(0)
    }

    /// HA standby reads: the key below this mount's view (`config`, `meta/a/b`) was written or
    /// deleted by the active node. A backend that keeps anything read from its storage in
    /// memory drops or reloads it here, before the call returns: the standby counts itself
    /// fresh only after it returned. The default: nothing is kept.
    fn invalidate(&self, _key: &str) {}

    /// Whether the path already exists, so a write can be checked as `create` or `update`.
    /// `None`: the backend does not distinguish, and every write is an `update`.
    async fn exists(&self, _req: &BackendRequest<'_>) -> Result<Option<bool>> {
        Ok(None)
    }

    /// Relative paths reachable without a token (`login`, or a prefix ending in `*`).
    fn unauthenticated_paths(&self) -> &'static [&'static str] {
        &[]
    }

    /// Relative paths that need `sudo` on top of the operation's capability.
    fn sudo_paths(&self) -> &'static [&'static str] {
        &[]
    }

    /// The paths the backend declares with the [`crate::backend::framework`], for the OpenAPI
    /// document; empty for a backend that routes by hand.
    fn specs(&self) -> Vec<crate::backend::framework::Spec> {
        Vec::new()
    }

    /// `?help=1` on the relative path `rel` (empty: the mount itself); `None`: no such path.
    fn help(&self, _rel: &str) -> Option<crate::backend::framework::Help> {
        None
    }
}

/// What a backend factory is given when its mount is enabled or loaded at unseal.
pub struct BackendConfig {
    pub view: View,
    pub mount: MountInfo,
    /// The server's named password policies, for engines that generate credentials.
    pub passwords: crate::password_policy::Passwords,
    /// The liveness index (issue 20), for engines that hold secret values: entries go in the
    /// same batch as the value they describe.
    pub leaks: crate::leaks::LeakIndex,
}

pub type Factory = Arc<dyn Fn(BackendConfig) -> Result<Arc<dyn LogicalBackend>> + Send + Sync>;

/// The engines and auth methods the binary has registered, by type name.
#[derive(Default, Clone)]
pub struct Registry {
    pub(crate) secrets: BTreeMap<String, Factory>,
    pub(crate) auth: BTreeMap<String, Factory>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register_secrets(&mut self, kind: &str, f: Factory) {
        self.secrets.insert(kind.to_owned(), f);
    }

    pub fn register_auth(&mut self, kind: &str, f: Factory) {
        self.auth.insert(kind.to_owned(), f);
    }
}

fn captures_match(pattern: &str, path: &str) -> bool {
    let mut segs = path.split('/');
    for want in pattern.split('/') {
        if want.starts_with('{') && want.ends_with("*}") {
            return segs.next().is_some_and(|s| !s.is_empty());
        }
        match segs.next() {
            Some(s) if want.starts_with('{') && want.ends_with('}') => {
                if s.is_empty() {
                    return false;
                }
            }
            Some(s) if s == want => {}
            _ => return false,
        }
    }
    segs.next().is_none()
}

/// Whether `path` matches one of `patterns`, as Vault's special paths match: exact, a prefix
/// when the pattern ends in `*`, and `+` standing for any one non-empty segment
/// (`issuer/+/pem`), or a framework pattern with captures.
pub(crate) fn path_matches(patterns: &[&str], path: &str) -> bool {
    patterns.iter().any(|p| {
        // A framework pattern with captures (`login/{username}`): `{x}` is one segment, `{x*}`
        // the rest of the path.
        if p.contains('{') {
            return captures_match(p, path);
        }
        pattern_matches(p, path)
    })
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    let (pattern, prefix) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if !pattern.contains('+') {
        return if prefix { path.starts_with(pattern) } else { pattern == path };
    }
    let mut rest = path;
    let segments: Vec<&str> = pattern.split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let (head, tail) = match rest.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (rest, None),
        };
        match *seg {
            "+" if head.is_empty() => return false,
            "+" => {}
            // The pattern's last piece with `*`: the rest of the path only has to begin with it.
            lit if last && prefix => return rest.starts_with(lit),
            lit if lit == head => {}
            _ => return false,
        }
        if last {
            return if prefix { true } else { tail.is_none() };
        }
        match tail {
            Some(t) => rest = t,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod path_match_tests {
    use super::path_matches;

    #[test]
    fn special_paths_match_exactly_by_prefix_and_with_plus_segments() {
        let p = ["ca", "cert/*", "issuer/+/pem", "issuer/+/crl*", "issuers/"];
        for yes in [
            "ca",
            "cert/01:02",
            "cert/",
            "issuer/abc/pem",
            "issuer/x/crl",
            "issuer/x/crl/pem",
            "issuers/",
        ] {
            assert!(path_matches(&p, yes), "{yes}");
        }
        for no in [
            "ca/x",
            "cax",
            "issuer//pem",
            "issuer/abc/pem/x",
            "issuer/abc",
            "issuer/a/b/pem",
            "issuers",
        ] {
            assert!(!path_matches(&p, no), "{no}");
        }
    }
}
