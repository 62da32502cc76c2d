//! Names in certificates: building SANs, and a role's rules on which names it allows (Vault's
//! `validateNames`: bare domains, subdomains, globs, localhost, any name, hostname syntax, IP
//! and URI SANs).
//!
//! Guarantees: every DNS name, email, IP and URI a certificate would carry is checked against
//! the role before signing, and a refusal names the value and the rule. Not done: templated
//! `allowed_domains`, `allowed_other_sans`, `allowed_user_ids`, punycode conversion.

use coffer_core::glob::glob_match;
use coffer_core::{Error, Result};
use rcgen::SanType;

use crate::roles::Role;

pub(crate) fn dns_or_email_san(name: &str) -> Result<SanType> {
    let ia5 = |s: &str| {
        rcgen::string::Ia5String::try_from(s.to_owned())
            .map_err(|_| Error::invalid(format!("invalid name {s:?}: only ASCII is allowed")))
    };
    if name.contains('@') {
        Ok(SanType::Rfc822Name(ia5(name)?))
    } else {
        Ok(SanType::DnsName(ia5(name)?))
    }
}

pub(crate) fn uri_san(uri: &str) -> Result<SanType> {
    let scheme_ok = uri.split_once(':').is_some_and(|(s, rest)| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && !rest.is_empty()
    });
    if !scheme_ok {
        return Err(Error::invalid(format!("invalid URI SAN {uri:?}: expected scheme:rest")));
    }
    rcgen::string::Ia5String::try_from(uri.to_owned())
        .map(SanType::URI)
        .map_err(|_| Error::invalid(format!("invalid URI SAN {uri:?}: only ASCII is allowed")))
}

/// A hostname as Vault's `enforce_hostnames` takes it: labels of letters, digits and `-` (and
/// `_`, which Vault allows), optionally a leading `*.` label.
fn valid_hostname(name: &str, wildcard_ok: bool) -> bool {
    let name = match name.strip_prefix("*.") {
        Some(rest) if wildcard_ok => rest,
        Some(_) => return false,
        None => name,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Whether `role` allows the DNS name or email `name`.
fn name_allowed(role: &Role, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    // An email is judged by its domain, as Vault does.
    let (is_email, host) = match name.rsplit_once('@') {
        Some((_, domain)) => (true, domain),
        None => (false, name),
    };
    if !is_email
        && role.enforce_hostnames
        && !valid_hostname(host, role.allow_wildcard_certificates)
    {
        return false;
    }
    if role.allow_any_name {
        return true;
    }
    if role.allow_localhost && (host == "localhost" || host == "localdomain") {
        return true;
    }
    let bare = host.strip_prefix("*.").unwrap_or(host);
    let wildcard = host.starts_with("*.");
    for d in &role.allowed_domains {
        if d.is_empty() {
            continue;
        }
        if role.allow_bare_domains && host == d {
            return true;
        }
        if role.allow_subdomains && bare.len() > d.len() && bare.ends_with(&format!(".{d}")) {
            return true;
        }
        // `*.example.com` names subdomains of `example.com`.
        if role.allow_subdomains && wildcard && bare == d {
            return true;
        }
        if role.allow_glob_domains && d.contains('*') && glob_match(d, host) {
            return true;
        }
    }
    false
}

/// Checks the common name and DNS/email SANs against the role.
pub(crate) fn check_names(role: &Role, cn: &str, dns: &[String]) -> Result<()> {
    if !cn.is_empty() && !role.cn_validations.iter().any(|v| v == "disabled") {
        let as_email = cn.contains('@') && role.cn_validations.iter().any(|v| v == "email");
        let as_host = !cn.contains('@') && role.cn_validations.iter().any(|v| v == "hostname");
        if (as_email || as_host || role.cn_validations.is_empty()) && !name_allowed(role, cn) {
            return Err(Error::invalid(format!("common name {cn} not allowed by this role")));
        }
    }
    for name in dns.iter().filter(|n| !n.contains('@')) {
        if !name_allowed(role, name) {
            return Err(Error::invalid(format!(
                "subject alternate name {name} not allowed by this role"
            )));
        }
    }
    for email in dns.iter().filter(|n| n.contains('@')) {
        if !name_allowed(role, email) {
            return Err(Error::invalid(format!("email address {email} not allowed by this role")));
        }
    }
    Ok(())
}

pub(crate) fn check_ips(role: &Role, ips: &[String]) -> Result<()> {
    if !ips.is_empty() && !role.allow_ip_sans {
        return Err(Error::invalid(format!(
            "IP Subject Alternative Names are not allowed in this role, but was provided via API \
             ({})",
            ips.join(", ")
        )));
    }
    Ok(())
}

pub(crate) fn check_uris(role: &Role, uris: &[String]) -> Result<()> {
    if uris.is_empty() {
        return Ok(());
    }
    if role.allowed_uri_sans.is_empty() {
        return Err(Error::invalid(
            "URI Subject Alternative Names are not allowed in this role, but were provided via the API",
        ));
    }
    for u in uris {
        if !role.allowed_uri_sans.iter().any(|p| glob_match(p, u)) {
            // Vault's text, and then the URI it refers to.
            return Err(Error::invalid(format!(
                "URI Subject Alternative Names were provided via the API which are not valid for \
                 this role: {u}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> Role {
        Role { allowed_domains: vec!["example.com".into()], ..Role::default() }
    }

    #[test]
    fn subdomains_bare_domains_and_globs_follow_their_flags() {
        let mut r = role();
        assert!(!name_allowed(&r, "a.example.com"));
        r.allow_subdomains = true;
        assert!(name_allowed(&r, "a.example.com"));
        assert!(name_allowed(&r, "*.example.com"));
        assert!(!name_allowed(&r, "example.com"));
        assert!(!name_allowed(&r, "aexample.com"));
        r.allow_bare_domains = true;
        assert!(name_allowed(&r, "example.com"));
        let mut g = Role { allowed_domains: vec!["*.svc.cluster.local".into()], ..Role::default() };
        assert!(!name_allowed(&g, "web.svc.cluster.local"));
        g.allow_glob_domains = true;
        assert!(name_allowed(&g, "web.svc.cluster.local"));
        assert!(!name_allowed(&g, "evil.com"));
    }

    #[test]
    fn localhost_any_name_and_hostname_syntax() {
        let mut r = role();
        assert!(name_allowed(&r, "localhost"));
        r.allow_localhost = false;
        assert!(!name_allowed(&r, "localhost"));
        r.allow_any_name = true;
        assert!(name_allowed(&r, "anything.test"));
        assert!(!name_allowed(&r, "bad host"));
        r.enforce_hostnames = false;
        assert!(name_allowed(&r, "bad host"));
    }

    #[test]
    fn refusals_name_the_value() {
        let r = role();
        let e = check_names(&r, "evil.com", &[]).expect_err("refused").to_string();
        assert_eq!(e, "common name evil.com not allowed by this role");
        let e = check_uris(&r, &["spiffe://x/y".into()]).expect_err("refused").to_string();
        assert!(e.contains("URI Subject Alternative Names are not allowed"), "{e}");
        let s = Role { allowed_uri_sans: vec!["spiffe://cluster.local/ns/*".into()], ..role() };
        assert!(check_uris(&s, &["spiffe://cluster.local/ns/a/sa/b".into()]).is_ok());
        assert!(check_uris(&s, &["spiffe://other/ns/a".into()]).is_err());
        let no_ip = Role { allow_ip_sans: false, ..role() };
        assert!(check_ips(&no_ip, &["10.0.0.1".into()]).is_err());
    }
}
