//! Issuers as stored: finding one by id, name or `default`, the default issuer, listing,
//! reading, changing and deleting them, the URLs written into certificates (`config/urls`), and
//! the public CA reads (`ca`, `ca/pem`, `ca_chain`, `issuer/:ref/{json,pem,der}`). Making them
//! is `ca`'s.
//!
//! Guarantees: a new issuer, its key (when new) and the default-issuer change are written in one
//! batch; `root` DELETE removes every issuer and key in one batch; issuer names are unique and
//! never `default`; an issuer without `issuing-certificates` in its `usage` signs nothing.

use coffer_core::framework::{Field, Req, list_response};
use coffer_core::record;
use coffer_core::{BatchOp, Error, Response, Result};
use rcgen::CertificateParams;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use x509_parser::prelude::*;

use crate::keys::{StoredKey, pem, pem_blocks};
use crate::{Pki, internal, serial_colons};

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
        // Vault's text, which does not repeat the value.
        _ => Err(Error::invalid(
            "the \"format\" path parameter must be \"pem\", \"der\", or \"pem_bundle\"",
        )),
    }
}

pub(crate) fn odt(unix: u64) -> ::time::OffsetDateTime {
    ::time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH)
}

impl Pki {
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
    ) -> Result<rcgen::Issuer<'static, crate::keys::Signer>> {
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
    pub(crate) async fn add_issuer(
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

    pub(crate) async fn check_issuer_name_free(&self, name: &str, except: &str) -> Result<()> {
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
