//! Issuance: `issue/:role` (a new key and its certificate), `sign/:role` (a CSR's key, the
//! role's bounds), `sign-verbatim` (a CSR as it is), and the stored certificates (`cert/:serial`,
//! `certs`).
//!
//! Guarantees: nothing is signed before every name, IP, URI, key type and lifetime the
//! certificate would carry has passed the role; the issued private key is answered once and
//! never stored; with the role's `no_store` nothing at all is written; a certificate never
//! outlives its issuer unless the issuer's `leaf_not_after_behavior` is `permit`.

use std::net::IpAddr;

use coffer_core::framework::{Field, Req, list_response};
use coffer_core::record;
use coffer_core::{Error, Response, Result, SecretLease};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, PublicKeyData, SanType,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use x509_parser::prelude::FromDer;

use crate::ca::add_private_key;
use crate::issuers::{IssuerEntry, check_format, encode_cert, facts, odt};
use crate::keys::{KeySpec, pem_blocks};
use crate::names::{check_ips, check_names, check_uris, dns_or_email_san, uri_san};
use crate::roles::Role;
use crate::{Pki, internal, new_serial, serial_key};

pub(crate) const ISSUE_FIELDS: &[Field] = &[
    Field::str("role", "The role's name."),
    Field::str("common_name", "The subject common name."),
    Field::comma_list("alt_names", "DNS or email subject alternative names."),
    Field::comma_list("ip_sans", "IP subject alternative names."),
    Field::comma_list("uri_sans", "URI subject alternative names (SPIFFE IDs)."),
    Field::comma_list("other_sans", "Not supported: refused when sent."),
    Field::duration("ttl", "Lifetime; default: the role's ttl, then the mount's default."),
    Field::str("not_after", "An explicit expiry (RFC 3339), instead of ttl."),
    Field::str(
        "not_before",
        "An explicit notBefore (RFC 3339), as the role's not_before_bound allows.",
    ),
    Field::str("format", "pem, der or pem_bundle.")
        .default(coffer_core::framework::Default::Str("pem")),
    Field::str("private_key_format", "der (the key type's own format) or pkcs8."),
    Field::bool("exclude_cn_from_sans", "Leave the common name out of the SANs."),
    Field::str("csr", "sign, sign-verbatim: the CSR (PEM)."),
    Field::comma_list("ext_key_usage", "sign-verbatim: extended key usages by name."),
    Field::comma_list("ext_key_usage_oids", "sign-verbatim: extended key usages by OID."),
    Field::comma_list("key_usage", "sign-verbatim: key usages."),
    Field::bool("remove_roots_from_chain", "Leave self-signed roots out of ca_chain."),
];

/// An issued certificate as stored under `certs/<serial>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CertEntry {
    /// PEM.
    pub(crate) certificate: String,
    pub(crate) issuer_id: String,
    pub(crate) not_after: u64,
}

coffer_core::record!(CertEntry, "pki certificate", 1);

/// A CSR, its signature checked: what signing takes from it. Extensions other than the SANs are
/// ignored, as Vault ignores them (key usages come from the role).
pub(crate) struct Csr {
    pub(crate) common_name: String,
    /// The subject as requested, for `sign-verbatim` and `use_csr_values`.
    pub(crate) subject: rcgen::DistinguishedName,
    pub(crate) sans: Vec<SanType>,
    /// DER SubjectPublicKeyInfo.
    pub(crate) spki: Vec<u8>,
    pub(crate) public_key: rcgen::SubjectPublicKeyInfo,
}

pub(crate) fn parse_csr(text: &str) -> Result<Csr> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let der = pem_blocks(text, "CERTIFICATE REQUEST")?
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid("the csr holds no PEM CERTIFICATE REQUEST block"))?;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|_| Error::invalid("certificate request could not be parsed"))?;
    req.verify_signature()
        .map_err(|_| Error::invalid("the certificate request's signature does not verify"))?;
    let info = &req.certification_request_info;
    let mut subject = rcgen::DistinguishedName::new();
    let mut common_name = String::new();
    for attr in info.subject.iter_attributes() {
        let Some(oid) = attr.attr_type().iter() else { continue };
        let oid: Vec<u64> = oid.collect();
        let value = attr
            .as_str()
            .map_err(|_| Error::invalid("the CSR's subject holds a value that is not a string"))?;
        let ty = DnType::from_oid(&oid);
        if ty == DnType::CommonName && common_name.is_empty() {
            common_name = value.to_owned();
        }
        subject.push(ty, value);
    }
    let mut sans = Vec::new();
    for ext in req.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else { continue };
        for name in &san.general_names {
            sans.push(match name {
                GeneralName::DNSName(d) | GeneralName::RFC822Name(d) => dns_or_email_san(d)?,
                GeneralName::URI(u) => uri_san(u)?,
                GeneralName::IPAddress(b) => SanType::IpAddress(match b.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()),
                    16 => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()),
                    _ => return Err(Error::invalid("the CSR holds a malformed IP SAN")),
                }),
                _ => {
                    return Err(Error::invalid(
                        "the CSR holds a SAN of a kind Coffer does not sign (other names, \
                         directory names)",
                    ));
                }
            });
        }
    }
    let spki = info.subject_pki.raw.to_vec();
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(&spki)
        .map_err(|_| Error::invalid("the CSR's public key is of a type Coffer does not sign"))?;
    Ok(Csr { common_name, subject, sans, spki, public_key })
}

pub(crate) fn eku(name: &str) -> Result<ExtendedKeyUsagePurpose> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "serverauth" => ExtendedKeyUsagePurpose::ServerAuth,
        "clientauth" => ExtendedKeyUsagePurpose::ClientAuth,
        "codesigning" => ExtendedKeyUsagePurpose::CodeSigning,
        "emailprotection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timestamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocspsigning" => ExtendedKeyUsagePurpose::OcspSigning,
        "any" => ExtendedKeyUsagePurpose::Any,
        _ => {
            return Err(Error::invalid(format!(
                "unknown ext_key_usage {name:?}: use ServerAuth, ClientAuth, CodeSigning, \
                 EmailProtection, TimeStamping, OcspSigning or Any"
            )));
        }
    })
}

pub(crate) fn key_usage(name: &str) -> Result<KeyUsagePurpose> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "digitalsignature" => KeyUsagePurpose::DigitalSignature,
        "contentcommitment" | "nonrepudiation" => KeyUsagePurpose::ContentCommitment,
        "keyencipherment" => KeyUsagePurpose::KeyEncipherment,
        "dataencipherment" => KeyUsagePurpose::DataEncipherment,
        "keyagreement" => KeyUsagePurpose::KeyAgreement,
        "certsign" => KeyUsagePurpose::KeyCertSign,
        "crlsign" => KeyUsagePurpose::CrlSign,
        "encipheronly" => KeyUsagePurpose::EncipherOnly,
        "decipheronly" => KeyUsagePurpose::DecipherOnly,
        _ => return Err(Error::invalid(format!("unknown key_usage {name:?}"))),
    })
}

pub(crate) fn parse_oid(oid: &str) -> Result<Vec<u64>> {
    let parts: Option<Vec<u64>> = oid.split('.').map(|p| p.parse().ok()).collect();
    match parts {
        Some(p) if p.len() >= 2 => Ok(p),
        _ => Err(Error::invalid(format!("invalid OID {oid:?}: expected dotted numbers"))),
    }
}

/// What a certificate will say, once the role has allowed it.
struct Plan {
    cn: String,
    dns: Vec<String>,
    ips: Vec<String>,
    uris: Vec<String>,
}

impl Plan {
    fn from_request(r: &Req<'_>, cn: String) -> Result<Self> {
        if r.list("other_sans")?.is_some_and(|o| !o.is_empty()) {
            return Err(Error::invalid("other_sans are not supported by Coffer"));
        }
        let mut dns = r.list("alt_names")?.unwrap_or_default();
        if !cn.is_empty() && !r.bool("exclude_cn_from_sans")?.unwrap_or(false) && !dns.contains(&cn)
        {
            dns.insert(0, cn.clone());
        }
        Ok(Plan {
            cn,
            dns,
            ips: r.list("ip_sans")?.unwrap_or_default(),
            uris: r.list("uri_sans")?.unwrap_or_default(),
        })
    }

    fn sans(&self) -> Result<Vec<SanType>> {
        let mut out = Vec::new();
        for d in &self.dns {
            out.push(dns_or_email_san(d)?);
        }
        for ip in &self.ips {
            let ip: IpAddr =
                ip.parse().map_err(|_| Error::invalid(format!("invalid IP SAN {ip:?}")))?;
            out.push(SanType::IpAddress(ip));
        }
        for u in &self.uris {
            out.push(uri_san(u)?);
        }
        Ok(out)
    }
}

/// An RFC 3339 time as Unix seconds (before 1970: 0).
pub(crate) fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339);
    t.ok().map(|t| t.unix_timestamp().max(0) as u64)
}

fn request_time(name: &str, v: &str) -> Result<u64> {
    parse_rfc3339(v)
        .ok_or_else(|| Error::invalid(format!("invalid {name} {v:?}: expected RFC 3339")))
}

/// The leaf's notBefore: now less the role's `not_before_duration`, or the request's
/// `not_before` as the role's `not_before_bound` allows (OpenBao's rules and texts: `forbid`
/// refuses the field even empty; `duration` takes no time earlier than `not_before_duration`
/// ago; `permit` takes any, an empty one meaning the default).
fn leaf_not_before(r: &Req<'_>, role: &Role, now: u64) -> Result<u64> {
    let backdated = now.saturating_sub(role.not_before_duration);
    let Some(asked) = r.str("not_before")? else { return Ok(backdated) };
    match role.not_before_bound.as_str() {
        "forbid" => {
            Err(Error::invalid("not_before_bound is set to forbid. not_before cannot be provided."))
        }
        "duration" => {
            let t = request_time("not_before", &asked)?;
            if t < backdated {
                return Err(Error::invalid(format!(
                    "not_before_bound is set to duration. Cannot satisfy request as it would \
                     result in notBefore of {} that is older than the allowed \
                     not_before_duration of {}",
                    coffer_core::time::rfc3339(t),
                    coffer_core::time::format_go(role.not_before_duration)
                )));
            }
            Ok(t)
        }
        _ if asked.is_empty() => Ok(backdated),
        _ => request_time("not_before", &asked),
    }
}

/// The leaf's lifetime: the request's, the role's, the mount's, within the role's maximum,
/// the role's `not_after_bound` and, per the issuer's `leaf_not_after_behavior`, the issuer's
/// expiry.
fn leaf_not_after(
    r: &Req<'_>,
    role: &Role,
    issuer: &IssuerEntry,
    now: u64,
    warnings: &mut Vec<String>,
) -> Result<u64> {
    let bound = role.not_after_bound.as_str();
    let asked = r.str("not_after")?;
    if bound == "forbid" && asked.is_some() {
        return Err(Error::invalid(
            "not_after_bound is set to forbid. not_after cannot be provided.",
        ));
    }
    let asked = asked.filter(|s| !s.is_empty());
    let asked_ttl = r.secs("ttl")?.unwrap_or(0);
    if asked_ttl > 0 && asked.is_some() {
        return Err(Error::invalid(
            "Either ttl or not_after should be provided. Both should not be provided in the \
             same request.",
        ));
    }
    let max = if role.max_ttl > 0 { role.max_ttl } else { r.mount.max_lease_ttl.as_secs() };
    let mut ttl = asked_ttl;
    if ttl == 0 {
        ttl = if role.ttl > 0 { role.ttl } else { r.mount.default_lease_ttl.as_secs() };
    }
    if max > 0 && ttl > max {
        if asked.is_none() {
            warnings.push(format!(
                "TTL {ttl}s is greater than the role's max_ttl of {max}s; capping to max_ttl"
            ));
        }
        ttl = max;
    }
    let mut not_after = match asked {
        Some(na) => {
            let t = request_time("not_after", &na)?;
            if bound == "ttl-limited" && t > now + ttl {
                return Err(Error::invalid(format!(
                    "not_after_bound is set to ttl-limited. Cannot satisfy request as that would \
                     result in notAfter of {} that is beyond the TTL of {}",
                    coffer_core::time::rfc3339(t),
                    coffer_core::time::format_go(ttl)
                )));
            }
            t
        }
        None => now + ttl,
    };
    if not_after <= now {
        return Err(Error::invalid("the certificate's expiry must be in the future"));
    }
    let ca = issuer.not_after()?;
    if not_after > ca {
        match issuer.leaf_not_after_behavior.as_str() {
            "permit" => {}
            "truncate" => not_after = ca,
            _ => {
                return Err(Error::invalid(format!(
                    "cannot satisfy request, as TTL would result in notAfter of {} that is \
                     beyond the expiration of the CA certificate at {}",
                    coffer_core::time::rfc3339(not_after),
                    coffer_core::time::rfc3339(ca)
                )));
            }
        }
    }
    if !matches!(bound, "permit" | "ttl-limited" | "forbid") {
        let limit = parse_rfc3339(bound).ok_or_else(|| {
            Error::Internal(format!("stored not_after_bound {bound:?} is not a time"))
        })?;
        if not_after > limit {
            // "statisfy": OpenBao's text as it is.
            return Err(Error::invalid(format!(
                "not_after_bound is set to {bound}. Cannot statisfy request as that would result \
                 in notAfter of {} that is beyond the maximum timestamp of {}",
                coffer_core::time::rfc3339(not_after),
                coffer_core::time::rfc3339(limit)
            )));
        }
    }
    Ok(not_after)
}

fn check_key(role: &Role, spec: KeySpec) -> Result<()> {
    if role.key_type == "any" {
        return Ok(());
    }
    if role.key_type != spec.type_name() {
        return Err(Error::invalid(format!("role requires keys of type {}", role.key_type)));
    }
    let want = role.key_bits as u32;
    let ok = match spec {
        KeySpec::Rsa(b) => b >= want,
        KeySpec::Ec(b) => want == 0 || b == want,
        KeySpec::Ed25519 => true,
    };
    if !ok {
        return Err(Error::invalid(format!(
            "role requires {} keys of {} bits, but the CSR's key has {} bits",
            role.key_type,
            want,
            spec.bits()
        )));
    }
    Ok(())
}

fn leaf_params(
    role: &Role,
    spec: KeySpec,
    plan: &Plan,
    (not_before, not_after): (u64, u64),
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    if !plan.cn.is_empty() {
        dn.push(DnType::CommonName, plan.cn.as_str());
    }
    for (vals, ty) in [
        (&role.country, DnType::CountryName),
        (&role.province, DnType::StateOrProvinceName),
        (&role.locality, DnType::LocalityName),
        (&role.organization, DnType::OrganizationName),
        (&role.ou, DnType::OrganizationalUnitName),
    ] {
        for v in vals {
            dn.push(ty.clone(), v.as_str());
        }
    }
    p.distinguished_name = dn;
    p.subject_alt_names = plan.sans()?;
    p.not_before = odt(not_before);
    p.not_after = odt(not_after);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&new_serial()));
    p.use_authority_key_identifier_extension = true;
    for u in &role.key_usage {
        let ku = key_usage(u)?;
        // Only RSA keys encipher keys; Vault drops the usage for other key types too.
        if ku == KeyUsagePurpose::KeyEncipherment && !matches!(spec, KeySpec::Rsa(_)) {
            continue;
        }
        if !p.key_usages.contains(&ku) {
            p.key_usages.push(ku);
        }
    }
    let mut ekus = Vec::new();
    for (flag, e) in [
        (role.server_flag, ExtendedKeyUsagePurpose::ServerAuth),
        (role.client_flag, ExtendedKeyUsagePurpose::ClientAuth),
        (role.code_signing_flag, ExtendedKeyUsagePurpose::CodeSigning),
        (role.email_protection_flag, ExtendedKeyUsagePurpose::EmailProtection),
    ] {
        if flag {
            ekus.push(e);
        }
    }
    for e in &role.ext_key_usage {
        ekus.push(eku(e)?);
    }
    for o in &role.ext_key_usage_oids {
        ekus.push(ExtendedKeyUsagePurpose::Other(parse_oid(o)?));
    }
    for e in ekus {
        if !p.extended_key_usages.contains(&e) {
            p.extended_key_usages.push(e);
        }
    }
    Ok(p)
}

impl Pki {
    async fn role_for(&self, r: &Req<'_>) -> Result<Role> {
        let name = r.capture("role");
        self.role(name).await?.ok_or_else(|| Error::invalid(format!("unknown role: {name}")))
    }

    async fn issuer_for(&self, r: &Req<'_>, role: &Role) -> Result<IssuerEntry> {
        match r.capture("issuer_ref") {
            "" => self.issuer(&role.issuer_ref).await,
            reference => self.issuer(reference).await,
        }
    }

    pub(crate) async fn issue(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.role_for(r).await?;
        if role.key_type == "any" {
            return Err(Error::invalid(
                "role key type \"any\" not allowed for issuing certificates, only signing",
            ));
        }
        let format = r.str("format")?.unwrap_or_else(|| "pem".into());
        check_format(&format)?;
        let cn = r.str("common_name")?.unwrap_or_default();
        let plan = Plan::from_request(r, cn)?;
        self.check_plan(&role, &plan)?;
        let issuer = self.issuer_for(r, &role).await?;
        let spec = KeySpec::parse(&role.key_type, role.key_bits)?;
        let key = spec.generate()?;
        let kp = key.key_pair()?;
        let (mut resp, der) = self.sign_leaf(r, &role, &issuer, spec, &plan, &kp, &format).await?;
        if let Some(data) = resp.data.as_mut() {
            let mut v = Value::Object(std::mem::take(data));
            add_private_key(&mut v, &key, r, &format)?;
            if let Value::Object(m) = v {
                *data = m;
            }
        }
        drop(der);
        Ok(resp)
    }

    pub(crate) async fn sign(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.role_for(r).await?;
        let format = r.str("format")?.unwrap_or_else(|| "pem".into());
        check_format(&format)?;
        let csr = parse_csr(&r.str("csr")?.unwrap_or_default())?;
        let spec = KeySpec::of_spki(&csr.spki)?;
        check_key(&role, spec)?;
        let mut cn = r.str("common_name")?.unwrap_or_default();
        if role.use_csr_common_name && !csr.common_name.is_empty() {
            cn = csr.common_name.clone();
        }
        let mut plan = Plan::from_request(r, cn)?;
        if role.use_csr_sans {
            for san in &csr.sans {
                match san {
                    SanType::DnsName(d) | SanType::Rfc822Name(d) => {
                        let d = d.as_str().to_owned();
                        if !plan.dns.contains(&d) {
                            plan.dns.push(d);
                        }
                    }
                    SanType::IpAddress(ip) => plan.ips.push(ip.to_string()),
                    SanType::URI(u) => plan.uris.push(u.as_str().to_owned()),
                    _ => {
                        return Err(Error::invalid(
                            "the CSR holds an other-name SAN, which Coffer does not sign",
                        ));
                    }
                }
            }
        }
        self.check_plan(&role, &plan)?;
        let issuer = self.issuer_for(r, &role).await?;
        let (resp, _) =
            self.sign_leaf(r, &role, &issuer, spec, &plan, &csr.public_key, &format).await?;
        Ok(resp)
    }

    /// sign-verbatim: the CSR's subject and SANs as they are; the role (when named) gives only
    /// lifetimes, storage and leases.
    pub(crate) async fn sign_verbatim(&self, r: &Req<'_>) -> Result<Response> {
        let mut role = match r.capture("role") {
            "" => Role { key_type: "any".into(), ..Role::default() },
            _ => self.role_for(r).await?,
        };
        let format = r.str("format")?.unwrap_or_else(|| "pem".into());
        check_format(&format)?;
        let csr = parse_csr(&r.str("csr")?.unwrap_or_default())?;
        let spec = KeySpec::of_spki(&csr.spki)?;
        let issuer = self.issuer_for(r, &role).await?;
        let now = coffer_core::time::now_unix();
        let mut warnings = Vec::new();
        let validity = (
            leaf_not_before(r, &role, now)?,
            leaf_not_after(r, &role, &issuer, now, &mut warnings)?,
        );
        role.server_flag = false;
        role.client_flag = false;
        role.ext_key_usage = r.list("ext_key_usage")?.unwrap_or_default();
        role.ext_key_usage_oids = r.list("ext_key_usage_oids")?.unwrap_or_default();
        if let Some(ku) = r.list("key_usage")? {
            role.key_usage = ku;
        }
        let plan = Plan { cn: String::new(), dns: vec![], ips: vec![], uris: vec![] };
        let mut p = leaf_params(&role, spec, &plan, validity)?;
        p.distinguished_name = csr.subject.clone();
        p.subject_alt_names = csr.sans.clone();
        self.apply_urls(&mut p, &issuer).await?;
        let signer = self.signer(&issuer).await?;
        let cert = p.signed_by(&csr.public_key, &signer).map_err(internal("signing"))?;
        let mut resp = self.finish_leaf(r, &role, &issuer, cert.der(), &format).await?;
        resp.warnings.extend(warnings);
        Ok(resp)
    }

    fn check_plan(&self, role: &Role, plan: &Plan) -> Result<()> {
        if plan.cn.is_empty() && role.require_cn {
            return Err(Error::invalid(
                "the common_name field is required, or must be provided in a CSR with \
                 \"use_csr_common_name\" set to true, unless \"require_cn\" is set to false",
            ));
        }
        let sans: Vec<String> = plan.dns.iter().filter(|d| **d != plan.cn).cloned().collect();
        check_names(role, &plan.cn, &sans)?;
        check_ips(role, &plan.ips)?;
        check_uris(role, &plan.uris)
    }

    #[allow(clippy::too_many_arguments)] // reason: one signing step with what it needs, no more
    async fn sign_leaf(
        &self,
        r: &Req<'_>,
        role: &Role,
        issuer: &IssuerEntry,
        spec: KeySpec,
        plan: &Plan,
        public: &impl PublicKeyData,
        format: &str,
    ) -> Result<(Response, Vec<u8>)> {
        let now = coffer_core::time::now_unix();
        let mut warnings = Vec::new();
        let validity =
            (leaf_not_before(r, role, now)?, leaf_not_after(r, role, issuer, now, &mut warnings)?);
        let mut p = leaf_params(role, spec, plan, validity)?;
        self.apply_urls(&mut p, issuer).await?;
        let signer = self.signer(issuer).await?;
        let cert = p.signed_by(public, &signer).map_err(internal("signing the certificate"))?;
        let der = cert.der().to_vec();
        let mut resp = self.finish_leaf(r, role, issuer, &der, format).await?;
        resp.warnings.extend(warnings);
        Ok((resp, der))
    }

    /// Stores (unless `no_store`), leases (with `generate_lease`) and answers a signed leaf.
    async fn finish_leaf(
        &self,
        r: &Req<'_>,
        role: &Role,
        issuer: &IssuerEntry,
        der: &[u8],
        format: &str,
    ) -> Result<Response> {
        let f = facts(der)?;
        if !role.no_store {
            let entry = CertEntry {
                certificate: crate::issuers::cert_pem(der),
                issuer_id: issuer.id.clone(),
                not_after: f.not_after,
            };
            self.view
                .put(&format!("certs/{}", serial_key(&f.serial)?), &record::encode(&entry)?)
                .await?;
        }
        let remove_roots = r.bool("remove_roots_from_chain")?.unwrap_or(false);
        let chain: Vec<&String> = issuer
            .ca_chain
            .iter()
            .filter(|c| {
                !remove_roots
                    || pem_blocks(c, "CERTIFICATE")
                        .ok()
                        .and_then(|d| d.into_iter().next())
                        .and_then(|d| facts(&d).ok())
                        .is_none_or(|f| f.subject != f.issuer)
            })
            .collect();
        let mut resp = Response::from_value(json!({
            "certificate": encode_cert(der, format),
            "issuing_ca": issuer.certificate,
            "ca_chain": chain,
            "serial_number": f.serial,
            "not_before": f.not_before,
            "expiration": f.not_after,
        }));
        if role.generate_lease {
            let ttl = f.not_after.saturating_sub(coffer_core::time::now_unix());
            resp.secret = Some(SecretLease {
                ttl,
                max_ttl: ttl,
                renewable: false,
                internal: coffer_core::logical::into_map(json!({
                    "serial_number": f.serial,
                    "issuer_id": issuer.id,
                    "not_after": f.not_after,
                })),
                live_values: Vec::new(),
            });
        }
        Ok(resp)
    }

    pub(crate) async fn cert_entry(&self, serial: &str) -> Result<Option<CertEntry>> {
        record::load(&self.view, &format!("certs/{}", serial_key(serial)?)).await
    }

    pub(crate) async fn read_cert(&self, r: &Req<'_>) -> Result<Response> {
        let serial = r.capture("serial");
        let cert_json = |c: String| {
            Response::from_value(
                json!({"certificate": c, "revocation_time": 0, "revocation_time_rfc3339": ""}),
            )
        };
        match serial {
            "ca" => return Ok(cert_json(self.issuer("default").await?.certificate)),
            "ca_chain" => {
                let i = self.issuer("default").await?;
                let chain = i.ca_chain.join("\n");
                return Ok(Response::from_value(json!({
                    "certificate": chain.clone(), "ca_chain": chain,
                    "revocation_time": 0, "revocation_time_rfc3339": "",
                })));
            }
            "crl" => {
                let i = self.issuer("default").await?;
                let der = self.crl_der(&i).await?;
                return Ok(cert_json(crate::keys::pem("X509 CRL", &der).to_string()));
            }
            _ => {}
        }
        let entry = self.cert_entry(serial).await?.ok_or(Error::NotFound)?;
        let revoked = self.revoked_entry(serial).await?;
        let (t, t3339) = match &revoked {
            Some(rv) => (rv.revocation_time, coffer_core::time::rfc3339(rv.revocation_time)),
            None => (0, String::new()),
        };
        let mut out = json!({
            "certificate": entry.certificate,
            "revocation_time": t,
            "revocation_time_rfc3339": t3339,
        });
        // Vault answers the issuer only for a revoked certificate: the one whose CRL lists it.
        if revoked.is_some() {
            out["issuer_id"] = json!(entry.issuer_id);
        }
        Ok(Response::from_value(out))
    }

    /// The certificate `cert/{serial}/raw[/pem]` names, DER (`ca` for the default issuer's).
    async fn cert_der_for(&self, r: &Req<'_>) -> Result<Vec<u8>> {
        match r.capture("serial") {
            "ca" => self.issuer("default").await?.der(),
            serial => {
                let e = self.cert_entry(serial).await?.ok_or(Error::NotFound)?;
                Ok(pem_blocks(&e.certificate, "CERTIFICATE")?
                    .into_iter()
                    .next()
                    .unwrap_or_default())
            }
        }
    }

    pub(crate) async fn read_cert_der(&self, r: &Req<'_>) -> Result<Response> {
        Ok(Response::raw_body("application/pkix-cert", self.cert_der_for(r).await?))
    }

    pub(crate) async fn read_cert_pem(&self, r: &Req<'_>) -> Result<Response> {
        let pem = crate::issuers::cert_pem(&self.cert_der_for(r).await?);
        Ok(Response::raw_body(crate::issuers::PEM_CHAIN, format!("{pem}\n").into_bytes()))
    }

    /// Serial numbers with colons, as Vault lists them (they are stored with hyphens).
    pub(crate) async fn list_certs(&self, _r: &Req<'_>) -> Result<Response> {
        list_response(self.view.list("certs/").await?.iter().map(|k| k.replace('-', ":")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_key_types_are_checked_against_the_role() {
        let role = Role { key_type: "ec".into(), key_bits: 256, ..Role::default() };
        assert!(check_key(&role, KeySpec::Ec(256)).is_ok());
        let e = check_key(&role, KeySpec::Rsa(2048)).expect_err("refused").to_string();
        assert!(e.contains("role requires keys of type ec"), "{e}");
        assert!(check_key(&role, KeySpec::Ec(384)).is_err());
        let rsa = Role { key_type: "rsa".into(), key_bits: 3072, ..Role::default() };
        assert!(check_key(&rsa, KeySpec::Rsa(2048)).is_err());
        assert!(check_key(&rsa, KeySpec::Rsa(4096)).is_ok());
        let any = Role { key_type: "any".into(), ..Role::default() };
        assert!(check_key(&any, KeySpec::Ed25519).is_ok());
    }

    #[test]
    fn eku_and_key_usage_names_are_vaults() {
        assert_eq!(eku("ServerAuth").expect("eku"), ExtendedKeyUsagePurpose::ServerAuth);
        assert!(eku("Teleport").is_err());
        assert_eq!(key_usage("CertSign").expect("ku"), KeyUsagePurpose::KeyCertSign);
        assert_eq!(parse_oid("1.3.6.1.5.5.7.3.1").expect("oid").len(), 9);
        assert!(parse_oid("x").is_err());
    }
}
