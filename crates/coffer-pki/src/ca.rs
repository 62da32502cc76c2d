//! CA certificates: generating roots and intermediates (`root/generate`,
//! `intermediate/generate`), signing an intermediate's CSR (`root/sign-intermediate`), and
//! importing a signed intermediate (`intermediate/set-signed`) or a PEM bundle (`config/ca`).
//!
//! Guarantees: an issuer is only ever created with a key of this mount whose public key is the
//! certificate's, so every issuer can sign; a generated key is answered only for `exported`, and
//! otherwise never leaves the barrier. Not done: cross-signing, `root/rotate`, key-less issuers.

use std::collections::BTreeMap;

use coffer_core::framework::{Field, Req};
use coffer_core::record;
use coffer_core::{Error, Response, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::issuers::{cert_pem, check_format, encode_cert, facts, odt};
use crate::keys::{Key, KeySpec, StoredKey, pem, pem_blocks};
use crate::{Pki, internal, new_serial};

pub(crate) const IMPORT_FIELDS: &[Field] =
    &[Field::str("pem_bundle", "A PEM private key and its CA certificate (and chain).").required()];

pub(crate) const SET_SIGNED_FIELDS: &[Field] =
    &[Field::str("certificate", "The signed intermediate certificate, PEM, chain after it.")
        .required()];

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
        resp.warnings.extend(self.aia_warning().await?);
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
        let dn = if use_csr { csr.subject.clone() } else { subject_of(r, &cn)? };
        let sans = if use_csr { csr.sans.clone() } else { ca_sans(r, &cn)? };
        let mut params = ca_params(r, dn, sans, not_after)?;
        params.use_authority_key_identifier_extension = true;
        self.apply_urls(&mut params, &issuer).await?;
        let signer = self.signer(&issuer).await?;
        let cert = params
            .signed_by(&csr.public_key, &signer)
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
        resp.warnings.extend(self.aia_warning().await?);
        Ok(resp)
    }

    /// Vault's warning for a new issuer when the mount writes no AIA URLs into certificates.
    async fn aia_warning(&self) -> Result<Option<String>> {
        let urls = self.urls().await?;
        Ok((urls.issuing_certificates.is_empty() && urls.ocsp_servers.is_empty()).then(|| {
            "This mount hasn't configured any authority information access (AIA) fields; \
             this may make it harder for systems to find missing certificates in the chain \
             or to validate revocation status of certificates. Consider updating \
             /config/urls or the newly generated issuer with this information."
                .into()
        }))
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
            .map(crate::keys::Signer)
            .map_err(|_| Error::invalid("the bundle's private key does not parse"))?;
        use rcgen::PublicKeyData as _;
        if kp.subject_public_key_info() != f.spki {
            return Err(Error::invalid("the bundle's private key does not match its certificate"));
        }
        let spec = KeySpec::of_spki(&f.spki)?;
        let key = Key::from_pkcs8(spec, kp.0.serialize_der());
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
}
