//! Revocation: `revoke`, the CRLs (`crl`, `crl/pem`, `crl/rotate`, `config/crl`,
//! `issuer/:ref/crl*`), revocation through a certificate's lease, and `tidy`.
//!
//! Guarantees: a revocation is stored before it is answered, and each issuer's CRL is rebuilt
//! (with a CRL number one above the last) in the same call, so the next CRL read and every OCSP
//! answer after it show the certificate revoked. Revoking twice answers the first revocation's
//! time. A certificate already expired is not added to a CRL (as Vault). Tidy removes only
//! entries whose certificate expired more than `safety_buffer` ago.

use coffer_core::backend::LeaseRequest;
use coffer_core::framework::{Field, Req, list_response};
use coffer_core::record;
use coffer_core::{BatchOp, Error, Response, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::issuers::{IssuerEntry, facts, odt};
use crate::keys::{pem, pem_blocks};
use crate::{Pki, internal, serial_key};

pub(crate) const REVOKE_FIELDS: &[Field] = &[
    Field::str("serial_number", "The serial number of the certificate to revoke."),
    Field::str("certificate", "Or the certificate itself (PEM)."),
];

pub(crate) const CRL_CONFIG_FIELDS: &[Field] = &[
    Field::str("expiry", "How long a built CRL is valid (default 72h)."),
    Field::bool("disable", "Build CRLs without entries."),
    Field::bool("ocsp_disable", "Turn the OCSP responder off."),
    Field::bool("auto_rebuild", "Rebuild a CRL when it is read within its grace period."),
    Field::str("auto_rebuild_grace_period", "How long before expiry a CRL is rebuilt (12h)."),
    Field::str("ocsp_expiry", "How long an OCSP answer is valid (12h; 0: no nextUpdate)."),
    Field::bool("enable_delta", "Not supported: refused when true."),
    Field::str("delta_rebuild_interval", "Accepted for compatibility."),
    Field::bool("allow_expired_cert_revocation", "Accepted; expired certificates are never added."),
];

pub(crate) const TIDY_FIELDS: &[Field] = &[
    Field::bool("tidy_cert_store", "Remove expired certificates from the store."),
    Field::bool("tidy_revoked_certs", "Remove expired certificates' revocation entries."),
    Field::bool("tidy_revoked_cert_issuer_associations", "Accepted for compatibility."),
    Field::duration("safety_buffer", "How long after expiry an entry is kept (default 72h)."),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RevokedEntry {
    pub(crate) serial: String,
    pub(crate) revocation_time: u64,
    pub(crate) not_after: u64,
    pub(crate) issuer_id: String,
}

coffer_core::record!(RevokedEntry, "pki revocation", 1);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CrlConfig {
    pub(crate) expiry: String,
    pub(crate) disable: bool,
    pub(crate) ocsp_disable: bool,
    pub(crate) ocsp_expiry: String,
    pub(crate) auto_rebuild: bool,
    pub(crate) auto_rebuild_grace_period: String,
}

impl Default for CrlConfig {
    fn default() -> Self {
        CrlConfig {
            expiry: "72h".into(),
            disable: false,
            ocsp_disable: false,
            ocsp_expiry: "12h".into(),
            auto_rebuild: false,
            auto_rebuild_grace_period: "12h".into(),
        }
    }
}

coffer_core::record!(CrlConfig, "pki crl config", 1);

/// The last CRL built for an issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CrlState {
    number: u64,
    next_update: u64,
    /// When it was built (0 in CRLs stored before the field): a revocation no later than this
    /// may be missing from it.
    #[serde(default)]
    built: u64,
    /// base64 DER.
    der: String,
}

coffer_core::record!(CrlState, "pki crl", 1);

pub(crate) fn secs(s: &str, field: &str) -> Result<u64> {
    if s.is_empty() || s == "0" {
        return Ok(0);
    }
    coffer_core::time::parse_duration(s).map(|d| d.as_secs()).ok_or_else(|| {
        Error::invalid(format!("invalid {field} {s:?}: expected a duration like \"72h\""))
    })
}

impl Pki {
    pub(crate) async fn crl_config(&self) -> Result<CrlConfig> {
        Ok(record::load(&self.view, "config/crl").await?.unwrap_or_default())
    }

    pub(crate) async fn revoked_entry(&self, serial: &str) -> Result<Option<RevokedEntry>> {
        record::load(&self.view, &format!("revoked/{}", serial_key(serial)?)).await
    }

    pub(crate) async fn read_crl_config(&self, _r: &Req<'_>) -> Result<Response> {
        let c = self.crl_config().await?;
        Ok(Response::from_value(json!({
            "expiry": c.expiry, "disable": c.disable, "ocsp_disable": c.ocsp_disable,
            "ocsp_expiry": c.ocsp_expiry, "auto_rebuild": c.auto_rebuild,
            "auto_rebuild_grace_period": c.auto_rebuild_grace_period,
            "enable_delta": false, "delta_rebuild_interval": "15m",
            "allow_expired_cert_revocation": false,
        })))
    }

    pub(crate) async fn write_crl_config(&self, r: &Req<'_>) -> Result<Response> {
        let f = r.fields();
        if f.bool("enable_delta")? == Some(true) {
            return Err(Error::invalid("delta CRLs are not supported by Coffer"));
        }
        let _g = self.lock.lock().await;
        let mut c = self.crl_config().await?;
        if let Some(v) = f.str("expiry")? {
            if secs(&v, "expiry")? == 0 {
                return Err(Error::invalid("expiry must be a positive duration"));
            }
            c.expiry = v;
        }
        if let Some(v) = f.str("ocsp_expiry")? {
            secs(&v, "ocsp_expiry")?;
            c.ocsp_expiry = v;
        }
        if let Some(v) = f.str("auto_rebuild_grace_period")? {
            secs(&v, "auto_rebuild_grace_period")?;
            c.auto_rebuild_grace_period = v;
        }
        if let Some(b) = f.bool("disable")? {
            c.disable = b;
        }
        if let Some(b) = f.bool("ocsp_disable")? {
            c.ocsp_disable = b;
        }
        if let Some(b) = f.bool("auto_rebuild")? {
            c.auto_rebuild = b;
        }
        if secs(&c.auto_rebuild_grace_period, "auto_rebuild_grace_period")?
            >= secs(&c.expiry, "expiry")?
        {
            return Err(Error::invalid(
                "CRL auto-rebuilding grace period must be strictly shorter than CRL expiry",
            ));
        }
        self.view.put("config/crl", &record::encode(&c)?).await?;
        // A new expiry or `disable` shows in the next CRL at once.
        self.rebuild_all_locked(&c).await?;
        Ok(Response::empty())
    }

    /// Builds and stores `issuer`'s CRL. The caller holds `self.lock`.
    async fn build_crl(&self, issuer: &IssuerEntry, cfg: &CrlConfig) -> Result<Vec<u8>> {
        use base64::Engine as _;
        let now = coffer_core::time::now_unix();
        let mut revoked = Vec::new();
        if !cfg.disable {
            for s in self.view.list("revoked/").await? {
                let Some(e) =
                    record::load::<RevokedEntry>(&self.view, &format!("revoked/{s}")).await?
                else {
                    continue;
                };
                if e.issuer_id != issuer.id {
                    continue;
                }
                let bytes = serial_bytes(&e.serial)?;
                revoked.push(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(&bytes),
                    revocation_time: odt(e.revocation_time),
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
        let prev: Option<CrlState> =
            record::load(&self.view, &format!("crl/{}", issuer.id)).await?;
        let number = prev.map_or(1, |p| p.number + 1);
        let next_update = now + secs(&cfg.expiry, "expiry")?.max(60);
        let params = rcgen::CertificateRevocationListParams {
            this_update: odt(now),
            next_update: odt(next_update),
            crl_number: rcgen::SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let key = self.key_by_id(&issuer.key_id).await?.key()?;
        let signer = rcgen::Issuer::from_ca_cert_der(&issuer.der()?.into(), key.key_pair()?)
            .map_err(internal("issuer certificate"))?;
        let crl = params.signed_by(&signer).map_err(internal("signing the CRL"))?;
        let der = crl.der().to_vec();
        let state = CrlState {
            number,
            next_update,
            built: now,
            der: base64::engine::general_purpose::STANDARD.encode(&der),
        };
        self.view.put(&format!("crl/{}", issuer.id), &record::encode(&state)?).await?;
        Ok(der)
    }

    async fn rebuild_all_locked(&self, cfg: &CrlConfig) -> Result<()> {
        for id in self.issuer_ids().await? {
            if let Some(i) = self.issuer_by_id(&id).await? {
                self.build_crl(&i, cfg).await?;
            }
        }
        Ok(())
    }

    /// `issuer`'s current CRL: the stored one, rebuilt when there is none, when it has expired,
    /// or (with `auto_rebuild`) when it is within its grace period.
    pub(crate) async fn crl_der(&self, issuer: &IssuerEntry) -> Result<Vec<u8>> {
        use base64::Engine as _;
        let cfg = self.crl_config().await?;
        let now = coffer_core::time::now_unix();
        let grace =
            if cfg.auto_rebuild { secs(&cfg.auto_rebuild_grace_period, "grace")? } else { 0 };
        let state: Option<CrlState> =
            record::load(&self.view, &format!("crl/{}", issuer.id)).await?;
        if let Some(s) = state
            && now + grace < s.next_update
        {
            return base64::engine::general_purpose::STANDARD
                .decode(&s.der)
                .map_err(|_| Error::Internal("stored CRL does not decode".into()));
        }
        let _g = self.lock.lock().await;
        self.build_crl(issuer, &cfg).await
    }

    pub(crate) async fn read_crl_der(&self, _r: &Req<'_>) -> Result<Response> {
        let i = self.issuer("default").await?;
        Ok(Response::raw_body("application/pkix-crl", self.crl_der(&i).await?))
    }

    pub(crate) async fn read_crl_pem(&self, _r: &Req<'_>) -> Result<Response> {
        let i = self.issuer("default").await?;
        let der = self.crl_der(&i).await?;
        Ok(Response::raw_body(
            "application/x-pem-file",
            format!("{}\n", &*pem("X509 CRL", &der)).into_bytes(),
        ))
    }

    pub(crate) async fn read_issuer_crl_der(&self, r: &Req<'_>) -> Result<Response> {
        let i = self.issuer(r.capture("issuer_ref")).await?;
        Ok(Response::raw_body("application/pkix-crl", self.crl_der(&i).await?))
    }

    pub(crate) async fn read_issuer_crl_pem(&self, r: &Req<'_>) -> Result<Response> {
        let i = self.issuer(r.capture("issuer_ref")).await?;
        let der = self.crl_der(&i).await?;
        Ok(Response::raw_body(
            "application/x-pem-file",
            format!("{}\n", &*pem("X509 CRL", &der)).into_bytes(),
        ))
    }

    pub(crate) async fn read_issuer_crl_json(&self, r: &Req<'_>) -> Result<Response> {
        let i = self.issuer(r.capture("issuer_ref")).await?;
        let der = self.crl_der(&i).await?;
        Ok(Response::from_value(json!({ "crl": pem("X509 CRL", &der).to_string() })))
    }

    pub(crate) async fn rotate_crl(&self, _r: &Req<'_>) -> Result<Response> {
        let cfg = self.crl_config().await?;
        let _g = self.lock.lock().await;
        self.rebuild_all_locked(&cfg).await?;
        Ok(Response::from_value(json!({ "success": true })))
    }

    pub(crate) async fn list_revoked(&self, _r: &Req<'_>) -> Result<Response> {
        list_response(
            self.view.list("revoked/").await?.iter().map(|k| k.replace('-', ":")).collect(),
        )
    }

    pub(crate) async fn revoke(&self, r: &Req<'_>) -> Result<Response> {
        let f = r.fields();
        let (serial, cert) = match (
            f.str("serial_number")?.filter(|s| !s.is_empty()),
            f.str("certificate")?.filter(|s| !s.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "must provide either the certificate or the serial number to revoke, not both",
                ));
            }
            (Some(s), None) => (s, None),
            (None, Some(c)) => {
                let der = pem_blocks(&c, "CERTIFICATE")?.into_iter().next().ok_or_else(|| {
                    Error::invalid("the certificate field holds no PEM CERTIFICATE block")
                })?;
                (facts(&der)?.serial, Some(der))
            }
            (None, None) => {
                return Err(Error::invalid(
                    "The serial number or certificate to revoke must be provided.",
                ));
            }
        };
        let serial = serial_key(&serial)?.replace('-', ":");
        let entry = self.cert_entry(&serial).await?;
        let (issuer_id, not_after) = match (&entry, &cert) {
            (Some(e), _) => (e.issuer_id.clone(), e.not_after),
            (None, Some(der)) => {
                // A certificate not stored (no_store): it must be one of ours.
                let cf = facts(der)?;
                let mut found = None;
                for id in self.issuer_ids().await? {
                    if let Some(i) = self.issuer_by_id(&id).await?
                        && facts(&i.der()?)?.subject == cf.issuer
                    {
                        let parsed = x509_parser::parse_x509_certificate(der)
                            .map_err(internal("certificate"))?
                            .1;
                        let idf = i.der()?;
                        let parent = x509_parser::parse_x509_certificate(&idf)
                            .map_err(internal("issuer"))?
                            .1;
                        if parsed.verify_signature(Some(parent.public_key())).is_ok() {
                            found = Some(id);
                            break;
                        }
                    }
                }
                let id = found.ok_or_else(|| {
                    Error::invalid("the certificate was not issued by any issuer of this mount")
                })?;
                (id, cf.not_after)
            }
            (None, None) => {
                return Err(Error::invalid(format!("certificate with serial {serial} not found.")));
            }
        };
        for id in self.issuer_ids().await? {
            if let Some(i) = self.issuer_by_id(&id).await?
                && facts(&i.der()?)?.serial == serial
            {
                return Err(Error::invalid(format!(
                    "adding issuer (id: {id}) to its own CRL is not allowed"
                )));
            }
        }
        let t = self.revoke_serial(&serial, &issuer_id, not_after).await?;
        Ok(Response::from_value(json!({
            "revocation_time": t,
            "revocation_time_rfc3339": coffer_core::time::rfc3339(t),
            "state": "revoked",
        })))
    }

    /// Records the revocation (or finds the earlier one) and rebuilds the issuer's CRL.
    async fn revoke_serial(&self, serial: &str, issuer_id: &str, not_after: u64) -> Result<u64> {
        let _g = self.lock.lock().await;
        if let Some(e) = self.revoked_entry(serial).await? {
            // A revocation cut short after its entry was stored (a storage error, the lease
            // engine's timeout) left the CRL without it: the retry rebuilds it, unless the
            // stored CRL was built after the revocation (a second of overlap rebuilds again).
            let crl: Option<CrlState> =
                record::load(&self.view, &format!("crl/{}", e.issuer_id)).await?;
            if crl.is_none_or(|c| c.built <= e.revocation_time)
                && let Some(i) = self.issuer_by_id(&e.issuer_id).await?
            {
                let cfg = self.crl_config().await?;
                self.build_crl(&i, &cfg).await?;
            }
            return Ok(e.revocation_time);
        }
        let now = coffer_core::time::now_unix();
        let e = RevokedEntry {
            serial: serial.to_owned(),
            revocation_time: now,
            not_after,
            issuer_id: issuer_id.to_owned(),
        };
        self.view.put(&format!("revoked/{}", serial_key(serial)?), &record::encode(&e)?).await?;
        let cfg = self.crl_config().await?;
        if let Some(i) = self.issuer_by_id(issuer_id).await? {
            self.build_crl(&i, &cfg).await?;
        }
        Ok(now)
    }

    /// A certificate lease ended early (revoked) or at expiry: revoke the certificate, unless
    /// it has expired anyway.
    pub(crate) async fn revoke_for_lease(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        let serial = lease
            .internal
            .get("serial_number")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::Internal("pki lease without a serial number".into()))?;
        let issuer_id =
            lease.internal.get("issuer_id").and_then(|v| v.as_str()).unwrap_or_default();
        let not_after = lease.internal.get("not_after").and_then(|v| v.as_u64()).unwrap_or(0);
        if not_after <= coffer_core::time::now_unix() {
            return Ok(());
        }
        self.revoke_serial(serial, issuer_id, not_after).await.map(|_| ())
    }

    pub(crate) async fn tidy(&self, r: &Req<'_>) -> Result<Response> {
        let started = coffer_core::time::now_unix();
        let certs = r.bool("tidy_cert_store")?.unwrap_or(false);
        let revoked = r.bool("tidy_revoked_certs")?.unwrap_or(false);
        let buffer = r.secs("safety_buffer")?.unwrap_or(72 * 3600);
        let cutoff = started.saturating_sub(buffer);
        let (mut cert_count, mut revoked_count) = (0u64, 0u64);
        let _g = self.lock.lock().await;
        if certs {
            let mut gone = Vec::new();
            for s in self.view.list("certs/").await? {
                if let Some(e) =
                    record::load::<crate::issue::CertEntry>(&self.view, &format!("certs/{s}"))
                        .await?
                    && e.not_after < cutoff
                {
                    gone.push(format!("certs/{s}"));
                }
            }
            cert_count = gone.len() as u64;
            if !gone.is_empty() {
                self.view.batch(gone.into_iter().map(BatchOp::Delete).collect()).await?;
            }
        }
        if revoked {
            let mut gone = Vec::new();
            for s in self.view.list("revoked/").await? {
                if let Some(e) =
                    record::load::<RevokedEntry>(&self.view, &format!("revoked/{s}")).await?
                    && e.not_after < cutoff
                {
                    gone.push(format!("revoked/{s}"));
                    gone.push(format!("certs/{s}"));
                }
            }
            revoked_count = (gone.len() / 2) as u64;
            if !gone.is_empty() {
                self.view.batch(gone.into_iter().map(BatchOp::Delete).collect()).await?;
                let cfg = self.crl_config().await?;
                self.rebuild_all_locked(&cfg).await?;
            }
        }
        let finished = coffer_core::time::now_unix();
        *self.tidy_status.lock().await = Some(json!({
            "state": "Finished",
            "error": null,
            "tidy_cert_store": certs,
            "tidy_revoked_certs": revoked,
            "safety_buffer": buffer,
            "time_started": coffer_core::time::rfc3339(started),
            "time_finished": coffer_core::time::rfc3339(finished),
            "cert_store_deleted_count": cert_count,
            "revoked_cert_deleted_count": revoked_count,
        }));
        // Vault answers 202 and runs tidy in the background; Coffer has finished it already.
        Ok(Response::raw(
            202,
            json!({
                "request_id": r.id, "lease_id": "", "renewable": false, "lease_duration": 0,
                "data": null, "wrap_info": null, "auth": null,
                "warnings": ["Tidy operation successfully started. Any information from the operation will be printed to Coffer's server logs."],
            }),
        ))
    }

    pub(crate) async fn tidy_status(&self, _r: &Req<'_>) -> Result<Response> {
        let s = self.tidy_status.lock().await.clone();
        Ok(Response::from_value(s.unwrap_or_else(|| json!({"state": "Inactive", "error": null}))))
    }
}

/// A serial number's bytes from its colon or hyphen form.
pub(crate) fn serial_bytes(serial: &str) -> Result<Vec<u8>> {
    serial
        .split([':', '-'])
        .map(|h| {
            u8::from_str_radix(h, 16)
                .map_err(|_| Error::invalid(format!("invalid serial number {serial:?}")))
        })
        .collect()
}
