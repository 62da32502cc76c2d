//! Issuers: generating roots and intermediates, signing intermediates, importing a signed
//! intermediate or a PEM bundle, the default issuer, reading and changing issuers, and the
//! public CA reads (`ca`, `ca/pem`, `ca_chain`, `issuer/:ref/{json,pem,der}`).
//!
//! Guarantees: an issuer is only ever created with a key of this mount whose public key is the
//! certificate's (so every issuer can sign); `root` DELETE removes every issuer and key in one
//! batch; a generated key is answered only for `exported`.

use std::collections::BTreeMap;

use coffer_core::framework::{Field, Req, list_response};
use coffer_core::record;
use coffer_core::{BatchOp, Error, Response, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use crate::keys::{Key, KeySpec, StoredKey, pem, pem_blocks};
use crate::{Pki, internal, new_serial, serial_colons};

pub(crate) const URL_FIELDS: &[Field] = &[
    Field::comma_list("issuing_certificates", "URLs of the issuing CA certificate (AIA)."),
    Field::comma_list("crl_distribution_points", "URLs of the CRL."),
    Field::comma_list("ocsp_servers", "URLs of the OCSP responder (AIA)."),
    Field::bool("enable_templating", "Accepted for compatibility; templating is not done."),
];

pub(crate) const DEFAULT_FIELDS: &[Field] = &[
    Field::str("default", "The default issuer: an id or a name."),
    Field::bool("default_follows_latest_issuer", "A new issuer becomes the default."),
];

pub(crate) const IMPORT_FIELDS: &[Field] =
    &[Field::str("pem_bundle", "A PEM private key and its CA certificate (and chain).").required()];

pub(crate) const SET_SIGNED_FIELDS: &[Field] =
    &[Field::str("certificate", "The signed intermediate certificate, PEM, chain after it.")
        .required()];

pub(crate) const ISSUER_FIELDS: &[Field] = &[
    Field::str("issuer_name", "A new name for the issuer."),
    Field::str("leaf_not_after_behavior", "err, truncate or permit."),
    Field::comma_list("usage", "read-only, issuing-certificates, crl-signing, ocsp-signing."),
    Field::comma_list("manual_chain", "Accepted for compatibility; the chain is built."),
    Field::comma_list("issuing_certificates", "This issuer's AIA URLs."),
    Field::comma_list("crl_distribution_points", "This issuer's CRL URLs."),
    Field::comma_list("ocsp_servers", "This issuer's OCSP URLs."),
    Field::str("revocation_signature_algorithm", "Accepted for compatibility."),
];

/// Vault's content type for PEM certificates.
pub(crate) const PEM_CHAIN: &str = "application/pem-certificate-chain";

const ALL_USAGE: &str = "crl-signing,issuing-certificates,ocsp-signing,read-only";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IssuerEntry {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) key_id: String,
    /// PEM.
    pub(crate) certificate: String,
    /// PEM, this issuer's certificate first, its root last.
    pub(crate) ca_chain: Vec<String>,
    pub(crate) leaf_not_after_behavior: String,
    pub(crate) usage: String,
    #[serde(default)]
    pub(crate) urls: Urls,
}

coffer_core::record!(IssuerEntry, "pki issuer", 1);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Urls {
    pub(crate) issuing_certificates: Vec<String>,
    pub(crate) crl_distribution_points: Vec<String>,
    pub(crate) ocsp_servers: Vec<String>,
    #[serde(default)]
    pub(crate) enable_templating: bool,
}

coffer_core::record!(Urls, "pki urls", 1);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DefaultIssuer {
    default: String,
    default_follows_latest_issuer: bool,
}

coffer_core::record!(DefaultIssuer, "pki default issuer", 1);

impl IssuerEntry {
    pub(crate) fn der(&self) -> Result<Vec<u8>> {
        pem_blocks(&self.certificate, "CERTIFICATE")?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("stored issuer has no certificate".into()))
    }

    pub(crate) fn not_after(&self) -> Result<u64> {
        let der = self.der()?;
        let (_, c) = parse_x509_certificate(&der).map_err(internal("stored issuer"))?;
        Ok(c.validity().not_after.timestamp().max(0) as u64)
    }
}

/// The parsed facts of a certificate the engine answers with.
pub(crate) struct CertFacts {
    pub(crate) serial: String,
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
    pub(crate) spki: Vec<u8>,
    pub(crate) subject: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    pub(crate) is_ca: bool,
}

pub(crate) fn facts(der: &[u8]) -> Result<CertFacts> {
    let (_, c) = parse_x509_certificate(der)
        .map_err(|_| Error::invalid("the certificate does not parse as X.509"))?;
    Ok(CertFacts {
        serial: serial_colons(trim_serial(c.raw_serial())),
        not_before: c.validity().not_before.timestamp().max(0) as u64,
        not_after: c.validity().not_after.timestamp().max(0) as u64,
        spki: c.public_key().raw.to_vec(),
        subject: c.subject().as_raw().to_vec(),
        issuer: c.issuer().as_raw().to_vec(),
        is_ca: c.is_ca(),
    })
}

/// A DER INTEGER's bytes without the sign-padding zero bytes.
pub(crate) fn trim_serial(raw: &[u8]) -> &[u8] {
    let mut s = raw;
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    s
}

pub(crate) fn cert_pem(der: &[u8]) -> String {
    pem("CERTIFICATE", der).to_string()
}

/// `format`: the certificate as PEM (`pem`, `pem_bundle`) or base64 DER (`der`).
pub(crate) fn encode_cert(der: &[u8], format: &str) -> String {
    use base64::Engine as _;
    match format {
        "der" => base64::engine::general_purpose::STANDARD.encode(der),
        _ => cert_pem(der),
    }
}

pub(crate) fn check_format(format: &str) -> Result<()> {
    match format {
        "pem" | "der" | "pem_bundle" => Ok(()),
        f => Err(Error::invalid(format!(
            "unknown format {f:?}: use \"pem\", \"der\" or \"pem_bundle\""
        ))),
    }
}

fn exported(r: &Req<'_>) -> Result<bool> {
    match r.capture("exported") {
        "internal" => Ok(false),
        "exported" => Ok(true),
        "existing" | "kms" => {
            Err(Error::invalid("only \"internal\" and \"exported\" keys are supported by Coffer"))
        }
        t => Err(Error::invalid(format!("invalid type {t:?}: use \"internal\" or \"exported\""))),
    }
}

/// The subject a CA request names.
pub(crate) fn subject_of(r: &Req<'_>, cn: &str) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    if !cn.is_empty() {
        dn.push(DnType::CommonName, cn);
    }
    for (field, ty) in [
        ("country", DnType::CountryName),
        ("province", DnType::StateOrProvinceName),
        ("locality", DnType::LocalityName),
        ("organization", DnType::OrganizationName),
        ("ou", DnType::OrganizationalUnitName),
    ] {
        for v in r.list(field)?.unwrap_or_default() {
            dn.push(ty.clone(), v);
        }
    }
    Ok(dn)
}

/// SANs from `alt_names`, `ip_sans`, `uri_sans` (unchecked: CA requests have no role).
fn ca_sans(r: &Req<'_>, cn: &str) -> Result<Vec<SanType>> {
    let mut sans = Vec::new();
    let mut dns = r.list("alt_names")?.unwrap_or_default();
    if !cn.is_empty()
        && !r.bool("exclude_cn_from_sans")?.unwrap_or(false)
        && !dns.iter().any(|d| d == cn)
    {
        dns.insert(0, cn.to_owned());
    }
    for d in dns {
        sans.push(crate::names::dns_or_email_san(&d)?);
    }
    for ip in r.list("ip_sans")?.unwrap_or_default() {
        sans.push(SanType::IpAddress(
            ip.parse().map_err(|_| Error::invalid(format!("invalid IP SAN {ip:?}")))?,
        ));
    }
    for u in r.list("uri_sans")?.unwrap_or_default() {
        sans.push(crate::names::uri_san(&u)?);
    }
    Ok(sans)
}

/// The lifetime a CA request asks for, within the mount's maximum.
pub(crate) fn requested_not_after(r: &Req<'_>, now: u64) -> Result<(u64, Vec<String>)> {
    let mut warnings = Vec::new();
    if let Some(na) = r.str("not_after")?.filter(|s| !s.is_empty()) {
        let t =
            ::time::OffsetDateTime::parse(&na, &::time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    Error::invalid(format!("invalid not_after {na:?}: expected RFC 3339"))
                })?;
        return Ok((t.unix_timestamp().max(0) as u64, warnings));
    }
    let max = r.mount.max_lease_ttl.as_secs();
    let mut ttl = r.secs("ttl")?.unwrap_or(0);
    if ttl == 0 {
        ttl = r.mount.default_lease_ttl.as_secs();
    }
    if max > 0 && ttl > max {
        warnings.push(format!(
            "TTL {ttl}s exceeds the mount's max TTL of {max}s; the certificate expires at the max"
        ));
        ttl = max;
    }
    Ok((now + ttl, warnings))
}

pub(crate) fn odt(unix: u64) -> ::time::OffsetDateTime {
    ::time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH)
}

fn ca_params(
    r: &Req<'_>,
    dn: DistinguishedName,
    sans: Vec<SanType>,
    not_after: u64,
) -> Result<CertificateParams> {
    let now = coffer_core::time::now_unix();
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.not_before = odt(now.saturating_sub(30));
    p.not_after = odt(not_after);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&new_serial()));
    p.is_ca = match r.fields().raw("max_path_length").and_then(Value::as_i64) {
        Some(n) if n >= 0 => IsCa::Ca(BasicConstraints::Constrained(n.min(255) as u8)),
        _ => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    if let Some(domains) = r.list("permitted_dns_domains")?.filter(|d| !d.is_empty()) {
        let mut permitted = Vec::new();
        for d in domains {
            permitted.push(rcgen::GeneralSubtree::DnsName(d));
        }
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: vec![],
        });
    }
    Ok(p)
}

impl Pki {
    /// Keeps a CA certificate this mount made under `certs/`, as Vault does, so it can be read
    /// and revoked by serial number.
    async fn store_cert(&self, der: &[u8], issuer_id: &str) -> Result<()> {
        let f = facts(der)?;
        let entry = crate::issue::CertEntry {
            certificate: cert_pem(der),
            issuer_id: issuer_id.to_owned(),
            not_after: f.not_after,
        };
        self.view
            .put(&format!("certs/{}", crate::serial_key(&f.serial)?), &record::encode(&entry)?)
            .await
            .map_err(Error::from)
    }

    pub(crate) async fn urls(&self) -> Result<Urls> {
        Ok(record::load(&self.view, "config/urls").await?.unwrap_or_default())
    }

    async fn default_config(&self) -> Result<DefaultIssuer> {
        Ok(record::load(&self.view, "config/issuers").await?.unwrap_or_default())
    }

    pub(crate) async fn issuer_ids(&self) -> Result<Vec<String>> {
        self.view.list("issuers/").await.map_err(Error::from)
    }

    pub(crate) async fn issuer_by_id(&self, id: &str) -> Result<Option<IssuerEntry>> {
        record::load(&self.view, &format!("issuers/{id}")).await
    }

    /// The issuer an `issuer_ref` names: `default`, an id, or a name.
    pub(crate) async fn issuer(&self, reference: &str) -> Result<IssuerEntry> {
        let reference = if reference.is_empty() { "default" } else { reference };
        if reference == "default" {
            let d = self.default_config().await?;
            if d.default.is_empty() {
                return Err(Error::invalid("no default issuer currently configured"));
            }
            return self
                .issuer_by_id(&d.default)
                .await?
                .ok_or_else(|| Error::invalid("no default issuer currently configured"));
        }
        if let Some(i) = self.issuer_by_id(reference).await? {
            return Ok(i);
        }
        for id in self.issuer_ids().await? {
            if let Some(i) = self.issuer_by_id(&id).await?
                && i.name == reference
            {
                return Ok(i);
            }
        }
        Err(Error::invalid(format!("unable to find PKI issuer for reference: {reference}")))
    }

    pub(crate) async fn key_by_id(&self, id: &str) -> Result<StoredKey> {
        record::load(&self.view, &format!("keys/{id}"))
            .await?
            .ok_or_else(|| Error::invalid(format!("unable to find PKI key for reference: {id}")))
    }

    /// rcgen's issuer for `issuer`: its certificate and its private key.
    pub(crate) async fn signer(
        &self,
        issuer: &IssuerEntry,
    ) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>> {
        if !issuer.usage.contains("issuing-certificates") {
            return Err(Error::invalid(format!(
                "issuer {} is not allowed to issue certificates (usage: {})",
                issuer.id, issuer.usage
            )));
        }
        let key = self.key_by_id(&issuer.key_id).await?.key()?;
        let der = issuer.der()?;
        rcgen::Issuer::from_ca_cert_der(&der.into(), key.key_pair()?)
            .map_err(internal("issuer certificate"))
    }

    /// Stores a new issuer (and its key when new), making it the default when there was none
    /// or the mount says the latest issuer is the default. Returns its id.
    async fn add_issuer(
        &self,
        name: String,
        key_id: &str,
        new_key: Option<&StoredKey>,
        cert_der: &[u8],
        chain_rest: Vec<String>,
    ) -> Result<IssuerEntry> {
        if !name.is_empty() {
            self.check_issuer_name_free(&name, "").await?;
        }
        let id = coffer_core::random::uuid_v4();
        let mut ca_chain = vec![cert_pem(cert_der)];
        ca_chain.extend(chain_rest);
        let entry = IssuerEntry {
            id: id.clone(),
            name,
            key_id: key_id.to_owned(),
            certificate: cert_pem(cert_der),
            ca_chain,
            leaf_not_after_behavior: "err".into(),
            usage: ALL_USAGE.into(),
            urls: Urls::default(),
        };
        let mut def = self.default_config().await?;
        let mut ops = Vec::new();
        let key_raw;
        if let Some(k) = new_key {
            key_raw = record::encode(k)?;
            ops.push(BatchOp::Put(format!("keys/{}", k.id), &key_raw));
        }
        let issuer_raw = record::encode(&entry)?;
        ops.push(BatchOp::Put(format!("issuers/{id}"), &issuer_raw));
        let def_raw;
        if def.default.is_empty() || def.default_follows_latest_issuer {
            def.default = id.clone();
            def_raw = record::encode(&def)?;
            ops.push(BatchOp::Put("config/issuers".into(), &def_raw));
        }
        self.view.batch(ops).await?;
        Ok(entry)
    }

    async fn check_issuer_name_free(&self, name: &str, except: &str) -> Result<()> {
        if name == "default" {
            return Err(Error::invalid(
                "reserved name \"default\" cannot be used as an issuer name",
            ));
        }
        for id in self.issuer_ids().await? {
            if id != except
                && let Some(i) = self.issuer_by_id(&id).await?
                && i.name == name
            {
                return Err(Error::invalid(format!("issuer name already in use: {name}")));
            }
        }
        Ok(())
    }

    pub(crate) async fn generate_root(&self, r: &Req<'_>) -> Result<Response> {
        let exported = exported(r)?;
        let format = r.str("format")?.unwrap_or_else(|| "pem".into());
        check_format(&format)?;
        let cn = r.str("common_name")?.unwrap_or_default();
        if cn.is_empty() {
            return Err(Error::invalid("the common_name field is required"));
        }
        let spec = KeySpec::parse(
            &r.str("key_type")?.unwrap_or_else(|| "rsa".into()),
            r.u64("key_bits")?.unwrap_or(0),
        )?;
        let now = coffer_core::time::now_unix();
        let (not_after, warnings) = requested_not_after(r, now)?;
        let params = ca_params(r, subject_of(r, &cn)?, ca_sans(r, &cn)?, not_after)?;
        let key = spec.generate()?;
        let cert =
            params.self_signed(&key.key_pair()?).map_err(internal("self-signing the root"))?;
        let _g = self.lock.lock().await;
        let key_id = coffer_core::random::uuid_v4();
        let stored = StoredKey::new(key_id.clone(), r.str("key_name")?.unwrap_or_default(), &key);
        let entry = self
            .add_issuer(
                r.str("issuer_name")?.unwrap_or_default(),
                &key_id,
                Some(&stored),
                cert.der(),
                vec![],
            )
            .await?;
        let f = facts(cert.der())?;
        self.store_cert(cert.der(), &entry.id).await?;
        let mut data = json!({
            "certificate": encode_cert(cert.der(), &format),
            "issuing_ca": encode_cert(cert.der(), &format),
            "serial_number": f.serial,
            "expiration": f.not_after,
            "issuer_id": entry.id,
            "issuer_name": entry.name,
            "key_id": key_id,
            "key_name": stored.name,
        });
        if exported {
            add_private_key(&mut data, &key, r, &format)?;
        }
        let mut resp = Response::from_value(data);
        resp.warnings = warnings;
        Ok(resp)
    }

    pub(crate) async fn generate_intermediate(&self, r: &Req<'_>) -> Result<Response> {
        let exported = exported(r)?;
        let format = r.str("format")?.unwrap_or_else(|| "pem".into());
        check_format(&format)?;
        let cn = r.str("common_name")?.unwrap_or_default();
        let spec = KeySpec::parse(
            &r.str("key_type")?.unwrap_or_else(|| "rsa".into()),
            r.u64("key_bits")?.unwrap_or(0),
        )?;
        let mut params = ca_params(r, subject_of(r, &cn)?, ca_sans(r, &cn)?, 0)?;
        params.serial_number = None;
        let key = spec.generate()?;
        let csr =
            params.serialize_request(&key.key_pair()?).map_err(internal("building the CSR"))?;
        let key_id = coffer_core::random::uuid_v4();
        let stored = StoredKey::new(key_id.clone(), r.str("key_name")?.unwrap_or_default(), &key);
        self.view.put(&format!("keys/{key_id}"), &record::encode(&stored)?).await?;
        let csr_out = match format.as_str() {
            "der" => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(csr.der())
            }
            _ => pem("CERTIFICATE REQUEST", csr.der()).to_string(),
        };
        let mut data = json!({ "csr": csr_out, "key_id": key_id });
        if exported {
            add_private_key(&mut data, &key, r, &format)?;
        }
        Ok(Response::from_value(data))
    }

    pub(crate) async fn sign_intermediate(&self, r: &Req<'_>) -> Result<Response> {
        let format = r.str("format")?.unwrap_or_else(|| "pem".into());
        check_format(&format)?;
        let csr_pem = r.str("csr")?.filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::invalid("the csr field is required: the intermediate CA's CSR in PEM")
        })?;
        let csr = crate::issue::parse_csr(&csr_pem)?;
        let issuer = self.issuer(r.capture("issuer_ref")).await?;
        let use_csr = r.bool("use_csr_values")?.unwrap_or(false);
        let mut cn = r.str("common_name")?.unwrap_or_default();
        if use_csr || cn.is_empty() {
            cn = csr.common_name.clone();
        }
        if cn.is_empty() {
            return Err(Error::invalid("the common_name field is required"));
        }
        let now = coffer_core::time::now_unix();
        let (mut not_after, mut warnings) = requested_not_after(r, now)?;
        let ca_not_after = issuer.not_after()?;
        if not_after > ca_not_after {
            warnings.push(format!(
                "the requested lifetime ends after the issuer's certificate (at {}); the \
                 intermediate ends with it",
                coffer_core::time::rfc3339(ca_not_after)
            ));
            not_after = ca_not_after;
        }
        let dn = if use_csr {
            csr.params.params.distinguished_name.clone()
        } else {
            subject_of(r, &cn)?
        };
        let sans =
            if use_csr { csr.params.params.subject_alt_names.clone() } else { ca_sans(r, &cn)? };
        let mut params = ca_params(r, dn, sans, not_after)?;
        params.use_authority_key_identifier_extension = true;
        self.apply_urls(&mut params, &issuer).await?;
        let signer = self.signer(&issuer).await?;
        let cert = params
            .signed_by(&csr.params.public_key, &signer)
            .map_err(internal("signing the intermediate"))?;
        let f = facts(cert.der())?;
        self.store_cert(cert.der(), &issuer.id).await?;
        let mut chain = vec![encode_cert(cert.der(), &format)];
        chain.extend(issuer.ca_chain.iter().cloned());
        let mut resp = Response::from_value(json!({
            "certificate": encode_cert(cert.der(), &format),
            "issuing_ca": issuer.certificate,
            "ca_chain": chain,
            "serial_number": f.serial,
            "expiration": f.not_after,
        }));
        resp.warnings = warnings;
        Ok(resp)
    }

    /// Writes AIA and CRL distribution points from the issuer's URLs, or the mount's.
    pub(crate) async fn apply_urls(
        &self,
        p: &mut CertificateParams,
        issuer: &IssuerEntry,
    ) -> Result<()> {
        let mount = self.urls().await?;
        let pick = |own: &Vec<String>, m: &Vec<String>| {
            if own.is_empty() { m.clone() } else { own.clone() }
        };
        let crl = pick(&issuer.urls.crl_distribution_points, &mount.crl_distribution_points);
        let aia = pick(&issuer.urls.issuing_certificates, &mount.issuing_certificates);
        let ocsp = pick(&issuer.urls.ocsp_servers, &mount.ocsp_servers);
        if !crl.is_empty() {
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: crl }];
        }
        if !aia.is_empty() || !ocsp.is_empty() {
            let der = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    for (method, urls) in [
                        (&[1u64, 3, 6, 1, 5, 5, 7, 48, 1][..], &ocsp),
                        (&[1, 3, 6, 1, 5, 5, 7, 48, 2][..], &aia),
                    ] {
                        for u in urls {
                            w.next().write_sequence(|w| {
                                w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(
                                    method,
                                ));
                                w.next().write_tagged_implicit(yasna::Tag::context(6), |w| {
                                    w.write_ia5_string(u)
                                });
                            });
                        }
                    }
                })
            });
            p.custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], der));
        }
        Ok(())
    }

    pub(crate) async fn set_signed(&self, r: &Req<'_>) -> Result<Response> {
        let text = r.str("certificate")?.unwrap_or_default();
        let certs = pem_blocks(&text, "CERTIFICATE")?;
        let Some(first) = certs.first() else {
            return Err(Error::invalid("the certificate field holds no PEM CERTIFICATE block"));
        };
        let f = facts(first)?;
        if !f.is_ca {
            return Err(Error::invalid(
                "the certificate is not a CA certificate (no CA basic constraint)",
            ));
        }
        let _g = self.lock.lock().await;
        let key_id = self.key_matching(&f.spki).await?.ok_or_else(|| {
            Error::invalid("the certificate's public key matches no key of this mount: generate the CSR with intermediate/generate first")
        })?;
        let mut existing = Vec::new();
        for id in self.issuer_ids().await? {
            if let Some(i) = self.issuer_by_id(&id).await?
                && i.der()? == *first
            {
                existing.push(id);
            }
        }
        if !existing.is_empty() {
            return Ok(Response::from_value(json!({
                "imported_issuers": Value::Null, "imported_keys": Value::Null,
                "existing_issuers": existing, "existing_keys": [key_id],
                "mapping": {}
            })));
        }
        let mut rest: Vec<String> = certs[1..].iter().map(|d| cert_pem(d)).collect();
        if rest.is_empty() {
            // The parent is one of this mount's issuers, when it signed the intermediate.
            for id in self.issuer_ids().await? {
                if let Some(i) = self.issuer_by_id(&id).await?
                    && facts(&i.der()?)?.subject == f.issuer
                {
                    rest = i.ca_chain.clone();
                    break;
                }
            }
        }
        let entry = self.add_issuer(String::new(), &key_id, None, first, rest).await?;
        let mut mapping = BTreeMap::new();
        mapping.insert(entry.id.clone(), key_id.clone());
        let mut resp = Response::from_value(json!({
            "imported_issuers": [entry.id],
            "imported_keys": Value::Null,
            "existing_issuers": Value::Null,
            "existing_keys": Value::Null,
            "mapping": mapping,
        }));
        let urls = self.urls().await?;
        if urls.issuing_certificates.is_empty() && urls.ocsp_servers.is_empty() {
            resp.warnings.push(
                "This mount hasn't configured any authority information access (AIA) fields; \
                 this may make it harder for systems to find missing certificates in the chain \
                 or to validate revocation status of certificates. Consider updating \
                 /config/urls or the newly generated issuer with this information."
                    .into(),
            );
        }
        Ok(resp)
    }

    /// The id of the stored key whose public key is `spki`.
    async fn key_matching(&self, spki: &[u8]) -> Result<Option<String>> {
        for id in self.view.list("keys/").await? {
            let k = self.key_by_id(&id).await?;
            if k.key()?.spki()? == spki {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub(crate) async fn import_bundle(&self, r: &Req<'_>) -> Result<Response> {
        let bundle = Zeroizing::new(r.str("pem_bundle")?.unwrap_or_default());
        let certs = pem_blocks(&bundle, "CERTIFICATE")?;
        let first =
            certs.first().ok_or_else(|| Error::invalid("the pem_bundle holds no CERTIFICATE"))?;
        let f = facts(first)?;
        if !f.is_ca {
            return Err(Error::invalid("the bundle's first certificate is not a CA certificate"));
        }
        let mut keys = Vec::new();
        for label in ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"] {
            keys.extend(pem_blocks(&bundle, label)?.into_iter().map(Zeroizing::new));
        }
        let [key_der] = keys.as_slice() else {
            return Err(Error::invalid(
                "the pem_bundle must hold exactly one private key (PKCS#8, SEC 1 or PKCS#1)",
            ));
        };
        let kp = rcgen::KeyPair::try_from(key_der.as_slice())
            .map_err(|_| Error::invalid("the bundle's private key does not parse"))?;
        use rcgen::PublicKeyData as _;
        if kp.subject_public_key_info() != f.spki {
            return Err(Error::invalid("the bundle's private key does not match its certificate"));
        }
        let spec = KeySpec::of_spki(&f.spki)?;
        let key = Key::from_pkcs8(spec, kp.serialize_der());
        let _g = self.lock.lock().await;
        let key_id = match self.key_matching(&f.spki).await? {
            Some(id) => id,
            None => coffer_core::random::uuid_v4(),
        };
        let stored = StoredKey::new(key_id.clone(), String::new(), &key);
        let rest = certs[1..].iter().map(|d| cert_pem(d)).collect();
        let entry = self.add_issuer(String::new(), &key_id, Some(&stored), first, rest).await?;
        let mut mapping = BTreeMap::new();
        mapping.insert(entry.id.clone(), key_id.clone());
        Ok(Response::from_value(json!({
            "imported_issuers": [entry.id], "imported_keys": [key_id],
            "existing_issuers": Value::Null, "existing_keys": Value::Null, "mapping": mapping,
        })))
    }

    pub(crate) async fn list_issuers(&self, _r: &Req<'_>) -> Result<Response> {
        let def = self.default_config().await?;
        let ids = self.issuer_ids().await?;
        let mut info = serde_json::Map::new();
        for id in &ids {
            if let Some(i) = self.issuer_by_id(id).await? {
                let f = facts(&i.der()?)?;
                info.insert(
                    id.clone(),
                    json!({
                        "issuer_name": i.name, "is_default": def.default == *id,
                        "key_id": i.key_id, "serial_number": f.serial,
                    }),
                );
            }
        }
        let mut resp = list_response(ids)?;
        if let Some(d) = resp.data.as_mut() {
            d.insert("key_info".into(), Value::Object(info));
        }
        Ok(resp)
    }

    pub(crate) async fn list_keys(&self, _r: &Req<'_>) -> Result<Response> {
        let ids = self.view.list("keys/").await?;
        let mut info = serde_json::Map::new();
        for id in &ids {
            let k = self.key_by_id(id).await?;
            info.insert(id.clone(), json!({"key_name": k.name, "key_type": k.key_type}));
        }
        let mut resp = list_response(ids)?;
        if let Some(d) = resp.data.as_mut() {
            d.insert("key_info".into(), Value::Object(info));
        }
        Ok(resp)
    }

    fn issuer_json(i: &IssuerEntry) -> Value {
        json!({
            "issuer_id": i.id,
            "issuer_name": i.name,
            "key_id": i.key_id,
            "certificate": i.certificate,
            "ca_chain": i.ca_chain,
            "manual_chain": Value::Null,
            "leaf_not_after_behavior": i.leaf_not_after_behavior,
            "usage": i.usage,
            "revocation_signature_algorithm": "",
            "revoked": false,
            "issuing_certificates": i.urls.issuing_certificates,
            "crl_distribution_points": i.urls.crl_distribution_points,
            "ocsp_servers": i.urls.ocsp_servers,
            "delta_crl_distribution_points": [],
        })
    }

    pub(crate) async fn read_issuer(&self, r: &Req<'_>) -> Result<Response> {
        let i = self.issuer(r.capture("issuer_ref")).await?;
        Ok(Response::from_value(Self::issuer_json(&i)))
    }

    pub(crate) async fn read_issuer_json(&self, r: &Req<'_>) -> Result<Response> {
        let i = self.issuer(r.capture("issuer_ref")).await?;
        Ok(Response::from_value(json!({
            "issuer_id": i.id, "issuer_name": i.name, "certificate": i.certificate, "ca_chain": i.ca_chain,
        })))
    }

    pub(crate) async fn read_issuer_pem(&self, r: &Req<'_>) -> Result<Response> {
        let i = self.issuer(r.capture("issuer_ref")).await?;
        Ok(Response::raw_body(PEM_CHAIN, format!("{}\n", i.certificate).into_bytes()))
    }

    pub(crate) async fn read_issuer_der(&self, r: &Req<'_>) -> Result<Response> {
        let i = self.issuer(r.capture("issuer_ref")).await?;
        Ok(Response::raw_body("application/pkix-cert", i.der()?))
    }

    pub(crate) async fn update_issuer(&self, r: &Req<'_>) -> Result<Response> {
        let _g = self.lock.lock().await;
        let mut i = self.issuer(r.capture("issuer_ref")).await?;
        let f = r.fields();
        if let Some(name) = f.str("issuer_name")? {
            if !name.is_empty() && name != i.name {
                self.check_issuer_name_free(&name, &i.id).await?;
            }
            i.name = name;
        }
        if let Some(b) = f.str("leaf_not_after_behavior")? {
            if !matches!(b.as_str(), "err" | "truncate" | "permit") {
                return Err(Error::invalid(format!(
                    "invalid leaf_not_after_behavior {b:?}: use err, truncate or permit"
                )));
            }
            i.leaf_not_after_behavior = b;
        }
        if let Some(mut usage) = f.list("usage")? {
            for u in &usage {
                if !ALL_USAGE.split(',').any(|a| a == u) {
                    return Err(Error::invalid(format!("unknown usage {u:?}: use {ALL_USAGE}")));
                }
            }
            usage.sort();
            usage.dedup();
            i.usage = usage.join(",");
        }
        if let Some(v) = f.list("issuing_certificates")? {
            i.urls.issuing_certificates = v;
        }
        if let Some(v) = f.list("crl_distribution_points")? {
            i.urls.crl_distribution_points = v;
        }
        if let Some(v) = f.list("ocsp_servers")? {
            i.urls.ocsp_servers = v;
        }
        self.view.put(&format!("issuers/{}", i.id), &record::encode(&i)?).await?;
        Ok(Response::from_value(Self::issuer_json(&i)))
    }

    pub(crate) async fn delete_issuer(&self, r: &Req<'_>) -> Result<Response> {
        let _g = self.lock.lock().await;
        let i = match self.issuer(r.capture("issuer_ref")).await {
            Ok(i) => i,
            Err(Error::InvalidRequest(_)) => return Ok(Response::empty()),
            Err(e) => return Err(e),
        };
        let mut def = self.default_config().await?;
        let mut ops = vec![
            BatchOp::Delete(format!("issuers/{}", i.id)),
            BatchOp::Delete(format!("crl/{}", i.id)),
        ];
        let def_raw;
        if def.default == i.id {
            def.default.clear();
            def_raw = record::encode(&def)?;
            ops.push(BatchOp::Put("config/issuers".into(), &def_raw));
        }
        self.view.batch(ops).await?;
        let mut resp = Response::empty();
        if def.default.is_empty() {
            resp.warnings.push(
                "the deleted issuer was the default; no default issuer is configured now".into(),
            );
        }
        Ok(resp)
    }

    pub(crate) async fn delete_root(&self, _r: &Req<'_>) -> Result<Response> {
        let _g = self.lock.lock().await;
        let mut deletes = Vec::new();
        for id in self.issuer_ids().await? {
            deletes.push(format!("issuers/{id}"));
            deletes.push(format!("crl/{id}"));
        }
        for id in self.view.list("keys/").await? {
            deletes.push(format!("keys/{id}"));
        }
        deletes.push("config/issuers".into());
        self.view.batch(deletes.into_iter().map(BatchOp::Delete).collect()).await?;
        let mut resp = Response::empty();
        resp.warnings.push(
            "DELETE /root deletes all keys and issuers; prefer the new DELETE /key/:key_ref and \
             DELETE /issuer/:issuer_ref for finer granularity, unless removal of all keys and \
             issuers is desired."
                .into(),
        );
        Ok(resp)
    }

    pub(crate) async fn read_default_issuer(&self, _r: &Req<'_>) -> Result<Response> {
        let d = self.default_config().await?;
        Ok(Response::from_value(json!({
            "default": d.default, "default_follows_latest_issuer": d.default_follows_latest_issuer,
        })))
    }

    pub(crate) async fn write_default_issuer(&self, r: &Req<'_>) -> Result<Response> {
        let _g = self.lock.lock().await;
        let mut d = self.default_config().await?;
        if let Some(reference) = r.fields().str("default")?.filter(|s| !s.is_empty()) {
            if reference == "default" {
                return Err(Error::invalid(
                    "invalid issuer specification; must be an issuer id or name, not \"default\"",
                ));
            }
            d.default = self.issuer(&reference).await?.id;
        }
        if let Some(b) = r.fields().bool("default_follows_latest_issuer")? {
            d.default_follows_latest_issuer = b;
        }
        self.view.put("config/issuers", &record::encode(&d)?).await?;
        Ok(Response::from_value(json!({
            "default": d.default, "default_follows_latest_issuer": d.default_follows_latest_issuer,
        })))
    }

    pub(crate) async fn read_urls(&self, _r: &Req<'_>) -> Result<Response> {
        let u = self.urls().await?;
        Ok(Response::from_value(json!({
            "issuing_certificates": u.issuing_certificates,
            "crl_distribution_points": u.crl_distribution_points,
            "ocsp_servers": u.ocsp_servers,
            "delta_crl_distribution_points": [],
            "enable_templating": u.enable_templating,
        })))
    }

    pub(crate) async fn write_urls(&self, r: &Req<'_>) -> Result<Response> {
        let _g = self.lock.lock().await;
        let mut u = self.urls().await?;
        let f = r.fields();
        for (k, slot) in [
            ("issuing_certificates", &mut u.issuing_certificates),
            ("crl_distribution_points", &mut u.crl_distribution_points),
            ("ocsp_servers", &mut u.ocsp_servers),
        ] {
            if let Some(v) = f.list(k)? {
                for url in &v {
                    if !(url.starts_with("http://")
                        || url.starts_with("https://")
                        || url.starts_with("ldap://"))
                    {
                        return Err(Error::invalid(format!("invalid URL in {k}: {url:?}")));
                    }
                }
                *slot = v;
            }
        }
        if let Some(b) = f.bool("enable_templating")? {
            u.enable_templating = b;
        }
        self.view.put("config/urls", &record::encode(&u)?).await?;
        drop(_g);
        self.read_urls(r).await
    }

    pub(crate) async fn read_ca_der(&self, _r: &Req<'_>) -> Result<Response> {
        let der = match self.issuer("default").await {
            Ok(i) => i.der()?,
            Err(_) => Vec::new(),
        };
        Ok(Response::raw_body("application/pkix-cert", der))
    }

    pub(crate) async fn read_ca_pem(&self, _r: &Req<'_>) -> Result<Response> {
        let body = match self.issuer("default").await {
            Ok(i) => format!("{}\n", i.certificate),
            Err(_) => String::new(),
        };
        Ok(Response::raw_body(PEM_CHAIN, body.into_bytes()))
    }

    pub(crate) async fn read_ca_chain(&self, _r: &Req<'_>) -> Result<Response> {
        let body = match self.issuer("default").await {
            Ok(i) => i.ca_chain.iter().map(|c| format!("{c}\n")).collect::<String>(),
            Err(_) => String::new(),
        };
        Ok(Response::raw_body("application/pkix-cert", body.into_bytes()))
    }
}

/// Adds `private_key` and `private_key_type` to a generation answer.
pub(crate) fn add_private_key(
    data: &mut Value,
    key: &Key,
    r: &Req<'_>,
    format: &str,
) -> Result<()> {
    let pkcs8 = match r.str("private_key_format")?.unwrap_or_default().as_str() {
        "" | "der" => false,
        "pkcs8" => true,
        f => {
            return Err(Error::invalid(format!(
                "unknown private_key_format {f:?}: use \"der\" or \"pkcs8\""
            )));
        }
    };
    let encoded = if format == "der" {
        use base64::Engine as _;
        let (_, der) = key.der(pkcs8)?;
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*der))
    } else {
        key.pem(pkcs8)?
    };
    if let Value::Object(m) = data {
        if format == "pem_bundle"
            && let Some(Value::String(c)) = m.get("certificate")
        {
            let bundle = format!("{}\n{c}", &*encoded);
            m.insert("certificate".into(), Value::String(bundle));
        }
        m.insert("private_key".into(), Value::String(encoded.to_string()));
        m.insert("private_key_type".into(), Value::String(key.type_name().into()));
    }
    Ok(())
}
