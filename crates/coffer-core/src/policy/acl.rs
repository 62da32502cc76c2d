//! The compiled ACL of a set of policies, and Vault's matching rules.
//!
//! Rules with the same pattern are merged (capabilities united; `deny` wins). For a request path,
//! an exact rule wins outright; otherwise the matching wildcard rule of highest priority wins, and
//! only its capabilities count: rules are never united across different patterns.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Capabilities, PathRule, Policy, PolicyError};
use crate::fast_map::FastMap;

#[derive(Debug, Clone)]
struct Compiled {
    rule: PathRule,
    glob: bool,
    /// The pattern without the trailing `*`.
    prefix: String,
    /// `Some` when the pattern has `+` segments.
    segments: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
    /// Keyed by the patterns an operator wrote; looked up with every request's path.
    exact: FastMap<String, PathRule>,
    wild: Vec<Compiled>,
}

/// What an [`Acl`] grants at one path: its winning rule (none for root, which has every
/// capability and no limits).
#[derive(Debug, Clone, Copy)]
pub struct RuleAt<'a> {
    root: bool,
    rule: Option<&'a PathRule>,
}

impl RuleAt<'_> {
    /// The effective capabilities.
    pub fn capabilities(&self) -> Capabilities {
        if self.root {
            return Capabilities::ALL;
        }
        self.rule.map(|r| r.capabilities.effective()).unwrap_or(Capabilities::NONE)
    }

    /// Whether every capability in `cap` is granted; never under `deny`.
    pub fn allows(&self, cap: Capabilities) -> bool {
        let have = self.capabilities();
        !have.contains(Capabilities::DENY) && have.contains(cap)
    }

    /// Whether the answer must be sealed to the client's key.
    pub fn requires_sealed_response(&self) -> bool {
        self.rule.is_some_and(|r| r.require_sealed_response)
    }

    /// The wrapping TTL bounds, in seconds.
    pub fn wrapping_ttl_bounds(&self) -> (Option<u64>, Option<u64>) {
        self.rule.map(|r| (r.min_wrapping_ttl, r.max_wrapping_ttl)).unwrap_or((None, None))
    }
}

fn merge_params(
    a: &mut Option<BTreeMap<String, Vec<Value>>>,
    b: &Option<BTreeMap<String, Vec<Value>>>,
) {
    let Some(b) = b else { return };
    let a = a.get_or_insert_with(BTreeMap::new);
    for (k, vals) in b {
        match a.get_mut(k) {
            // An empty list means "any value", which is wider than any list.
            Some(existing) if existing.is_empty() || vals.is_empty() => existing.clear(),
            // Appended, not deduplicated: a repeat changes no match, and checking each value
            // against the list made merging two long lists quadratic.
            Some(existing) => existing.extend(vals.iter().cloned()),
            None => {
                a.insert(k.clone(), vals.clone());
            }
        }
    }
}

fn merge(into: &mut PathRule, r: &PathRule) {
    into.capabilities = into.capabilities.union(r.capabilities);
    merge_params(&mut into.allowed_parameters, &r.allowed_parameters);
    merge_params(&mut into.denied_parameters, &r.denied_parameters);
    into.required_parameters.extend(r.required_parameters.iter().cloned());
    into.subscribe_event_types.extend(r.subscribe_event_types.iter().cloned());
    // As Vault does: the widest wrapping window of the merged rules.
    into.min_wrapping_ttl = match (into.min_wrapping_ttl, r.min_wrapping_ttl) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    into.max_wrapping_ttl = match (into.max_wrapping_ttl, r.max_wrapping_ttl) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    // As a `min_wrapping_ttl` of one rule binds the merged rule: one policy asking is enough.
    into.require_sealed_response |= r.require_sealed_response;
}

/// Where the first wildcard (`+` segment or trailing `*`) starts.
fn first_wildcard(c: &Compiled) -> usize {
    let plus = c.segments.as_ref().and_then(|segs| {
        let mut pos = 0;
        for s in segs {
            if s == "+" {
                return Some(pos);
            }
            pos += s.len() + 1;
        }
        None
    });
    match (plus, c.glob) {
        (Some(p), _) => p,
        (None, true) => c.prefix.len(),
        (None, false) => usize::MAX,
    }
}

fn plus_count(c: &Compiled) -> usize {
    c.segments.as_ref().map(|s| s.iter().filter(|x| *x == "+").count()).unwrap_or(0)
}

/// Vault's priority between two matching wildcard rules: `Greater` means `a` wins.
fn priority(a: &Compiled, b: &Compiled) -> Ordering {
    first_wildcard(a)
        .cmp(&first_wildcard(b))
        .then_with(|| b.glob.cmp(&a.glob))
        .then_with(|| plus_count(b).cmp(&plus_count(a)))
        .then_with(|| a.rule.pattern.len().cmp(&b.rule.pattern.len()))
        .then_with(|| a.rule.pattern.cmp(&b.rule.pattern))
}

fn matches(c: &Compiled, path: &str) -> bool {
    let Some(psegs) = &c.segments else {
        return path.starts_with(&c.prefix);
    };
    let segs: Vec<&str> = path.split('/').collect();
    if c.glob {
        if segs.len() < psegs.len() {
            return false;
        }
        let last = psegs.len() - 1;
        psegs.iter().enumerate().all(|(i, p)| {
            if p == "+" {
                true
            } else if i == last {
                segs[i].starts_with(p.as_str())
            } else {
                segs[i] == p
            }
        })
    } else {
        segs.len() == psegs.len() && psegs.iter().zip(&segs).all(|(p, s)| p == "+" || p == s)
    }
}

/// A policy value against a request value: strings may use a leading or trailing `*`.
fn value_matches(pattern: &Value, v: &Value) -> bool {
    match (pattern, v) {
        (Value::String(p), Value::String(s)) => {
            if p == "*" {
                true
            } else if p.len() > 1 && p.starts_with('*') && p.ends_with('*') {
                s.contains(&p[1..p.len() - 1])
            } else if let Some(prefix) = p.strip_suffix('*') {
                s.starts_with(prefix)
            } else if let Some(suffix) = p.strip_prefix('*') {
                s.ends_with(suffix)
            } else {
                p == s
            }
        }
        (p, v) => p == v,
    }
}

fn elements(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

impl Acl {
    /// Merges the rules of `policies` into one ACL.
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Acl {
        let mut merged: BTreeMap<String, PathRule> = BTreeMap::new();
        for p in policies {
            for r in &p.rules {
                match merged.get_mut(&r.pattern) {
                    Some(existing) => merge(existing, r),
                    None => {
                        merged.insert(r.pattern.clone(), r.clone());
                    }
                }
            }
        }
        let mut acl = Acl::default();
        for (pattern, mut rule) in merged {
            rule.required_parameters.sort_unstable();
            rule.required_parameters.dedup();
            let glob = pattern.ends_with('*');
            let prefix = pattern.strip_suffix('*').unwrap_or(&pattern).to_owned();
            let has_plus = prefix.split('/').any(|s| s == "+");
            if !glob && !has_plus {
                acl.exact.insert(pattern, rule);
            } else {
                let segments = has_plus.then(|| prefix.split('/').map(str::to_owned).collect());
                acl.wild.push(Compiled { rule, glob, prefix, segments });
            }
        }
        acl
    }

    /// Everything allowed, including `sudo`.
    pub fn root() -> Acl {
        Acl { root: true, ..Acl::default() }
    }

    pub fn is_root(&self) -> bool {
        self.root
    }

    fn winning_rule(&self, path: &str) -> Option<&PathRule> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        self.wild.iter().filter(|c| matches(c, path)).max_by(|a, b| priority(a, b)).map(|c| &c.rule)
    }

    /// The winning rule at `path` (no leading `/`), found once for every question a request
    /// asks about its path.
    pub fn at(&self, path: &str) -> RuleAt<'_> {
        RuleAt { root: self.root, rule: if self.root { None } else { self.winning_rule(path) } }
    }

    /// The effective capabilities at `path` (no leading `/`).
    pub fn capabilities(&self, path: &str) -> Capabilities {
        self.at(path).capabilities()
    }

    /// Whether every capability in `cap` is granted at `path`; never under `deny`.
    pub fn allows(&self, path: &str, cap: Capabilities) -> bool {
        self.at(path).allows(cap)
    }

    /// Vault's event check: whether the winning rule at `path` holds `subscribe` (not under
    /// `deny`) with an entry of its `subscribe_event_types` that matches `event_type`.
    pub fn allows_subscribe(&self, path: &str, event_type: &str) -> bool {
        if self.root {
            return true;
        }
        let Some(r) = self.winning_rule(path) else { return false };
        r.capabilities.effective().contains(Capabilities::SUBSCRIBE)
            && r.subscribe_event_types.iter().any(|p| crate::glob::glob_match(p, event_type))
    }

    /// Whether any rule grants something (not `deny`) at or below `prefix`, or covers it with a
    /// wildcard: enough to learn that a mount exists.
    pub fn has_access_under(&self, prefix: &str) -> bool {
        if self.root {
            return true;
        }
        let grants = |r: &PathRule| {
            !r.capabilities.is_empty() && !r.capabilities.contains(Capabilities::DENY)
        };
        self.exact.iter().any(|(p, r)| p.starts_with(prefix) && grants(r))
            || self.wild.iter().any(|c| {
                grants(&c.rule)
                    && (c.rule.pattern.starts_with(prefix)
                        || (c.segments.is_none() && prefix.starts_with(&c.prefix))
                        || matches(c, prefix))
            })
    }

    /// Whether the winning rule at `path` requires the answer sealed to the client's key.
    pub fn requires_sealed_response(&self, path: &str) -> bool {
        self.at(path).requires_sealed_response()
    }

    /// The winning rule's wrapping TTL bounds, in seconds.
    pub fn wrapping_ttl_bounds(&self, path: &str) -> (Option<u64>, Option<u64>) {
        self.at(path).wrapping_ttl_bounds()
    }

    /// Checks a write's parameters against the winning rule's required, denied and allowed
    /// parameters, as Vault does. The error names the offending parameter.
    pub fn check_parameters(
        &self,
        path: &str,
        data: &Map<String, Value>,
    ) -> Result<(), PolicyError> {
        if self.root {
            return Ok(());
        }
        let Some(rule) = self.winning_rule(path) else { return Ok(()) };
        for req in &rule.required_parameters {
            if !data.contains_key(req) {
                return Err(PolicyError::MissingParameter(req.clone()));
            }
        }
        if let Some(denied) = &rule.denied_parameters {
            if let Some(any) = denied.get("*")
                && any.is_empty()
                && let Some(k) = data.keys().next()
            {
                return Err(PolicyError::ParameterDenied(k.clone()));
            }
            for (k, v) in data {
                let list = denied.get(k).or_else(|| denied.get("*").filter(|l| !l.is_empty()));
                if let Some(list) = list
                    && (list.is_empty()
                        || elements(v).iter().any(|e| list.iter().any(|p| value_matches(p, e))))
                {
                    return Err(PolicyError::ParameterDenied(k.clone()));
                }
            }
        }
        if let Some(allowed) = rule.allowed_parameters.as_ref().filter(|a| !a.is_empty()) {
            for (k, v) in data {
                let Some(list) = allowed.get(k).or_else(|| allowed.get("*")) else {
                    return Err(PolicyError::ParameterDenied(k.clone()));
                };
                if !list.is_empty()
                    && !elements(v).iter().all(|e| list.iter().any(|p| value_matches(p, e)))
                {
                    return Err(PolicyError::ParameterDenied(k.clone()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
