//! TLS certificate auth method (Vault's `cert`): a client logs in with the certificate it
//! presented on its mutually authenticated TLS connection to Coffer.
//!
//! The listener only proves the client holds the leaf's private key; trust is decided here,
//! against the certificates the operator registered under `certs/:name`: a CA (the client's
//! chain must verify up to it, with the client-auth usage, at the current time) or a pinned
//! leaf (the very same certificate, within its validity). Then the entry's constraints on
//! common name, DNS/email/URI SANs and organizational units must all hold. The first entry,
//! in name order, that accepts the certificate decides the token's policies.
//!
//! `config` (Vault's fields) is stored and read back; of its settings only the checks have an
//! effect here: Coffer's cert method does no OCSP and keeps no role cache, and a token it
//! issued renews in the token store without presenting the certificate again, which is what
//! Vault does with `disable_binding = true` (see docs/auth.md).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use coffer_core::framework::{Field, Framework, Path, Paths, Req, handler};
use coffer_core::glob::glob_match;
use coffer_core::logical::fields::Fields;
use coffer_core::{BackendConfig, Error, LogicalBackend, Response, Result, View};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use crate::role::{self, Roles, into_map};

/// Vault's answer to any certificate no entry accepts, whichever check failed.
const NOT_ACCEPTED: &str = "invalid certificate or no client certificate supplied";

pub(crate) struct CertAuth {
    /// Vault calls them certificate roles: stored under `cert/`, served at `certs/:name`.
    roles: Roles<Entry>,
    /// The mount's view, where `config` is stored.
    view: View,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    Ok(Arc::new(CertAuth { roles: Roles::new(cfg.view.clone(), "cert/"), view: cfg.view }))
}

/// `config`, as stored; Vault's defaults (all zero) until written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct CertConfig {
    disable_binding: bool,
    enable_identity_alias_metadata: bool,
    ocsp_cache_size: u64,
}

coffer_core::record!(CertConfig, "cert auth configuration", 1);

/// Vault's bounds on `ocsp_cache_size`.
const MAX_OCSP_CACHE: u64 = 100_000;

const CONFIG_FIELDS: &[Field] = &[
    Field::bool("disable_binding", "Renewals need not present the login's certificate."),
    Field::bool("enable_identity_alias_metadata", "Certificate metadata on the identity alias."),
    Field::int("ocsp_cache_size", "OCSP response cache size, 2 to 100000 (Coffer: no OCSP)."),
    // -1 is valid (Vault: no cache), which the framework's non-negative `int` would refuse.
    Field::int("role_cache_size", "Vault's role cache size; accepted, Coffer caches no roles.")
        .unchecked(),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Entry {
    certificate: String,
    display_name: String,
    allowed_common_names: Vec<String>,
    allowed_dns_sans: Vec<String>,
    allowed_email_sans: Vec<String>,
    allowed_uri_sans: Vec<String>,
    allowed_organizational_units: Vec<String>,
}

const ENTRY_FIELDS: &[Field] = &[
    Field::str("name", "The entry's name."),
    Field::str("certificate", "CA or leaf certificates (PEM) a client's chain must lead to."),
    Field::str("display_name", "Shown in the token's display name."),
    Field::comma_list("allowed_common_names", "Client common names allowed (`*` globs)."),
    Field::comma_list("allowed_names", "Legacy name of allowed_common_names."),
    Field::comma_list("allowed_dns_sans", "DNS SANs allowed (`*` globs)."),
    Field::comma_list("allowed_email_sans", "Email SANs allowed (`*` globs)."),
    Field::comma_list("allowed_uri_sans", "URI SANs allowed (`*` globs)."),
    Field::comma_list("allowed_organizational_units", "Organizational units allowed (`*` globs)."),
];

static PATHS: LazyLock<Paths<CertAuth>> = LazyLock::new(|| {
    let mut paths = vec![
        Path::new("login", "Log in with the TLS client certificate of the connection.")
            .fields(LOGIN_FIELDS)
            .unauthenticated()
            .write(handler!(CertAuth::login)),
    ];
    paths.push(
        Path::new("config", "The method's settings.")
            .fields(CONFIG_FIELDS)
            .read(handler!(CertAuth::read_config))
            .write(handler!(CertAuth::write_config)),
    );
    paths.extend(role::role_paths("certs", "certs/{name}"));
    Paths::new(paths)
});

const LOGIN_FIELDS: &[Field] =
    &[Field::str("name", "The entry to log in with; empty: every entry is tried.")];

/// The DER certificates of a PEM bundle; an error names what is wrong with it.
fn pem_certs(pem: &str) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate PEM cannot be read: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM \"CERTIFICATE\" block found".into());
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| format!("a certificate cannot be parsed: {e}"))?;
    }
    Ok(certs)
}

/// What the constraints and the token metadata read from a client certificate.
#[derive(Debug, Default)]
struct Subject {
    common_names: Vec<String>,
    organizational_units: Vec<String>,
    dns: Vec<String>,
    email: Vec<String>,
    uri: Vec<String>,
    serial: String,
    subject_key_id: String,
    authority_key_id: String,
}

fn colon_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn subject(cert: &X509Certificate<'_>) -> Subject {
    let strs = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_owned)).collect::<Vec<_>>()
    };
    let mut s = Subject {
        common_names: strs(&mut cert.subject().iter_common_name()),
        organizational_units: strs(&mut cert.subject().iter_organizational_unit()),
        serial: cert.serial.to_string(),
        ..Subject::default()
    };
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => s.dns.push((*d).to_owned()),
                        GeneralName::RFC822Name(e) => s.email.push((*e).to_owned()),
                        GeneralName::URI(u) => s.uri.push((*u).to_owned()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::SubjectKeyIdentifier(k) => s.subject_key_id = colon_hex(k.0),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                if let Some(k) = &a.key_identifier {
                    s.authority_key_id = colon_hex(k.0);
                }
            }
            _ => {}
        }
    }
    s
}

/// Every non-empty list of patterns must match at least one of the certificate's values.
fn constraints_hold(e: &Entry, s: &Subject) -> bool {
    let one = |patterns: &[String], values: &[String]| {
        patterns.is_empty() || values.iter().any(|v| patterns.iter().any(|p| glob_match(p, v)))
    };
    one(&e.allowed_common_names, &s.common_names)
        && one(&e.allowed_dns_sans, &s.dns)
        && one(&e.allowed_email_sans, &s.email)
        && one(&e.allowed_uri_sans, &s.uri)
        && one(&e.allowed_organizational_units, &s.organizational_units)
}

/// Whether the client's chain is trusted by an entry's certificates: the leaf is one of them
/// (pinned, and within its validity), or its chain verifies to one of them as a root.
fn trusted_by(
    trusted: &[CertificateDer<'static>],
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> bool {
    let Some(leaf) = chain.first() else { return false };
    if trusted.iter().any(|t| t.as_ref() == leaf.as_ref()) {
        return x509_parser::parse_x509_certificate(leaf).is_ok_and(|(_, c)| {
            c.validity().is_valid_at(
                x509_parser::time::ASN1Time::from_timestamp(
                    i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                )
                .unwrap_or_else(|_| x509_parser::time::ASN1Time::now()),
            )
        });
    }
    let anchors: Vec<_> =
        trusted.iter().filter_map(|t| webpki::anchor_from_trusted_cert(t).ok()).collect();
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else { return false };
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

impl role::Role for Entry {
    const KIND: &'static str = "cert entry";
    const FIELDS: &'static [Field] = ENTRY_FIELDS;

    fn fresh() -> Self {
        Entry::default()
    }

    fn apply(&mut self, f: &Fields<'_>, _creating: bool) -> Result<()> {
        if let Some(c) = f.str("certificate")? {
            self.certificate = c;
        }
        if self.certificate.trim().is_empty() {
            return Err(Error::invalid("missing certificate: a PEM CA or client certificate"));
        }
        pem_certs(&self.certificate).map_err(|m| Error::invalid(format!("certificate: {m}")))?;
        if let Some(d) = f.str("display_name")? {
            self.display_name = d;
        }
        let lists: [(&str, &mut Vec<String>); 5] = [
            ("allowed_common_names", &mut self.allowed_common_names),
            ("allowed_dns_sans", &mut self.allowed_dns_sans),
            ("allowed_email_sans", &mut self.allowed_email_sans),
            ("allowed_uri_sans", &mut self.allowed_uri_sans),
            ("allowed_organizational_units", &mut self.allowed_organizational_units),
        ];
        for (field, slot) in lists {
            // `allowed_names` is Vault's older name for common-name patterns.
            let given = match f.list(field)? {
                None if field == "allowed_common_names" => f.list("allowed_names")?,
                other => other,
            };
            if let Some(v) = given {
                *slot = v.into_iter().filter(|s| !s.is_empty()).collect();
            }
        }
        Ok(())
    }

    fn own_json(&self) -> Map<String, Value> {
        into_map(json!({
            "certificate": self.certificate,
            "display_name": self.display_name,
            "allowed_common_names": self.allowed_common_names,
            "allowed_names": self.allowed_common_names,
            "allowed_dns_sans": self.allowed_dns_sans,
            "allowed_email_sans": self.allowed_email_sans,
            "allowed_uri_sans": self.allowed_uri_sans,
            "allowed_organizational_units": self.allowed_organizational_units,
        }))
    }
}

impl role::HasRoles for CertAuth {
    type Role = Entry;

    fn roles(&self) -> &Roles<Entry> {
        &self.roles
    }
}

impl CertAuth {
    async fn config(&self) -> Result<CertConfig> {
        Ok(coffer_core::record::load(&self.view, "config").await?.unwrap_or_default())
    }

    async fn read_config(&self, _req: &Req<'_>) -> Result<Response> {
        let c = self.config().await?;
        Ok(Response::from_value(json!({
            "disable_binding": c.disable_binding,
            "enable_identity_alias_metadata": c.enable_identity_alias_metadata,
            "ocsp_cache_size": c.ocsp_cache_size,
        })))
    }

    /// Only the fields sent change, as in Vault; a field Coffer does not know is a 400 (Vault
    /// ignores it), so a typo is not taken for a setting.
    async fn write_config(&self, req: &Req<'_>) -> Result<Response> {
        let f = req.fields();
        let known: Vec<&str> = CONFIG_FIELDS.iter().map(|x| x.name).collect();
        let unknown = f.unknown(&known);
        if !unknown.is_empty() {
            return Err(Error::invalid(format!(
                "unknown fields for auth/cert/config: {} (known: {})",
                unknown.join(", "),
                known.join(", ")
            )));
        }
        let mut c = self.config().await?;
        if let Some(b) = f.bool("disable_binding")? {
            c.disable_binding = b;
        }
        if let Some(b) = f.bool("enable_identity_alias_metadata")? {
            c.enable_identity_alias_metadata = b;
        }
        if let Some(v) = f.raw("ocsp_cache_size").filter(|v| !v.is_null()) {
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| Error::invalid("\"ocsp_cache_size\" must be an integer"))?;
            if !(2..=MAX_OCSP_CACHE as i64).contains(&n) {
                return Err(Error::invalid(format!(
                    "invalid cache size, must be >= 2 and <= {MAX_OCSP_CACHE}"
                )));
            }
            c.ocsp_cache_size = n as u64;
        }
        if let Some(v) = f.raw("role_cache_size").filter(|v| !v.is_null()) {
            let n = v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .ok_or_else(|| Error::invalid("\"role_cache_size\" must be an integer"))?;
            // Vault: -1 turns the cache off; 0 and above size it.
            if n < -1 {
                return Err(Error::invalid("role_cache_size must be -1 or more"));
            }
        }
        self.view.put("config", &coffer_core::record::encode(&c)?).await?;
        Ok(Response::empty())
    }

    async fn login(&self, req: &Req<'_>) -> Result<Response> {
        let f = Fields::new(req.data);
        if req.client_cert_chain.is_empty() {
            return Err(Error::invalid(
                "client certificate must be supplied: log in over TLS with a client certificate",
            ));
        }
        let chain: Vec<CertificateDer<'_>> =
            req.client_cert_chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|_| Error::invalid(NOT_ACCEPTED))?;
        let subject = subject(&leaf);
        let names = match f.str("name")?.filter(|n| !n.is_empty()) {
            Some(n) => vec![n.to_lowercase()],
            None => self.roles.names().await?,
        };
        let now = UnixTime::now();
        for name in names {
            let Some(entry) = self.roles.get(&name).await? else { continue };
            let Ok(trusted) = pem_certs(&entry.certificate) else { continue };
            if !trusted_by(&trusted, &chain, now) || !constraints_hold(&entry, &subject) {
                continue;
            }
            let display_name = if entry.display_name.is_empty() {
                name.clone()
            } else {
                entry.display_name.clone()
            };
            let metadata = BTreeMap::from([
                ("cert_name".to_owned(), name),
                (
                    "common_name".to_owned(),
                    subject.common_names.first().cloned().unwrap_or_default(),
                ),
                ("serial_number".to_owned(), subject.serial.clone()),
                ("subject_key_id".to_owned(), subject.subject_key_id.clone()),
                ("authority_key_id".to_owned(), subject.authority_key_id.clone()),
            ]);
            // Vault's alias: the certificate's common name, with the login's metadata.
            let cn = subject.common_names.first().cloned().unwrap_or_default();
            let alias = coffer_core::LoginAlias::new(cn, metadata.clone());
            let mut login = entry.token.login(display_name, metadata);
            login.alias = Some(alias);
            return Ok(Response::login(login));
        }
        Err(Error::invalid(NOT_ACCEPTED))
    }
}

impl Framework for CertAuth {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry::default()
    }

    #[test]
    fn constraints_are_all_required_and_globbed() {
        let s = Subject {
            common_names: vec!["web.prod.svc".into()],
            organizational_units: vec!["payments".into()],
            dns: vec!["web.prod.svc".into(), "web".into()],
            uri: vec!["spiffe://acme/ns/prod/sa/web".into()],
            ..Subject::default()
        };
        assert!(constraints_hold(&entry(), &s));
        let cn = Entry { allowed_common_names: vec!["*.prod.svc".into()], ..entry() };
        assert!(constraints_hold(&cn, &s));
        let both = Entry {
            allowed_common_names: vec!["*.prod.svc".into()],
            allowed_organizational_units: vec!["billing".into()],
            ..entry()
        };
        assert!(!constraints_hold(&both, &s), "every constraint list must match");
        let uri = Entry { allowed_uri_sans: vec!["spiffe://acme/ns/prod/*".into()], ..entry() };
        assert!(constraints_hold(&uri, &s));
        let email = Entry { allowed_email_sans: vec!["*@acme.com".into()], ..entry() };
        assert!(!constraints_hold(&email, &s), "a certificate without email SANs fails");
    }

    #[test]
    fn pem_bundles() {
        assert!(pem_certs("").is_err());
        assert!(
            pem_certs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        assert_eq!(colon_hex(&[0xab, 0x01]), "ab:01");
    }
}
