//! The OCSP responder (RFC 6960): `POST ocsp` with a DER request
//! (`application/ocsp-request`, which the HTTP layer hands over base64 in `http_raw_body`) and
//! `GET ocsp/<base64 DER request>`.
//!
//! Guarantees: every answer is a DER `OCSPResponse` with status 200, as RFC 6960 and Vault
//! have it; a request that does not parse gets `malformedRequest`, one naming no issuer of this
//! mount `unauthorized`, a disabled responder `unauthorized`. A successful answer is signed by
//! the issuer itself (responder id by key hash), for each requested certificate says `good`
//! (issued and stored, or unknown to the store when `no_store` made it so: Vault says
//! `unknown` there too) / `revoked` (with its time) / `unknown`, and echoes the request's nonce.
//! Not done: delegated OCSP signing certificates, SHA-256 CertIDs from clients that hash with
//! something other than SHA-1 or SHA-256.

use aws_lc_rs::digest;
use base64::Engine as _;
use coffer_core::framework::{Field, Req};
use coffer_core::{Response, Result};
use x509_parser::prelude::*;
use yasna::Tag;
use yasna::models::{GeneralizedTime, ObjectIdentifier};

use crate::issuers::{IssuerEntry, odt, trim_serial};
use crate::{Pki, serial_colons};

pub(crate) const FIELDS: &[Field] =
    &[Field::str("http_raw_body", "The DER OCSP request, as the HTTP layer passes it.")];

const CONTENT_TYPE: &str = "application/ocsp-response";
const SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
const SHA256: &[u64] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const NONCE: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 2];
const BASIC: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 1];

/// One `CertID` of a request.
#[derive(Debug, Clone)]
struct CertId {
    /// The request's own DER for it, echoed in the answer.
    der: Vec<u8>,
    hash_alg: Vec<u64>,
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    serial: Vec<u8>,
}

struct Request {
    ids: Vec<CertId>,
    /// The nonce extension as sent (whole `Extension` DER).
    nonce: Option<Vec<u8>>,
}

fn parse_cert_id(der: &[u8]) -> yasna::ASN1Result<CertId> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let hash_alg = r.next().read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_null())?;
                Ok(oid.components().clone())
            })?;
            let name_hash = r.next().read_bytes()?;
            let key_hash = r.next().read_bytes()?;
            let (serial, _) = r.next().read_bigint_bytes()?;
            Ok(CertId { der: der.to_vec(), hash_alg, name_hash, key_hash, serial })
        })
    })
}

fn parse_request(der: &[u8]) -> Option<Request> {
    let (ids, exts) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_sequence(|r| {
                r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_u8()))?;
                r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
                let ids = r.next().collect_sequence_of(|r| {
                    r.read_sequence(|r| {
                        let id = r.next().read_der()?;
                        r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
                        Ok(id)
                    })
                })?;
                let exts = r.read_optional(|r| {
                    r.read_tagged(Tag::context(2), |r| r.collect_sequence_of(|r| r.read_der()))
                })?;
                Ok((ids, exts))
            })?;
            r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_der()))?;
            Ok(tbs)
        })
    })
    .ok()?;
    let ids = ids.iter().map(|d| parse_cert_id(d)).collect::<yasna::ASN1Result<Vec<_>>>().ok()?;
    if ids.is_empty() {
        return None;
    }
    let nonce = exts.unwrap_or_default().into_iter().find(|ext| {
        yasna::parse_der(ext, |r| {
            r.read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_bool())?;
                r.next().read_bytes()?;
                Ok(oid)
            })
        })
        .is_ok_and(|oid| oid.components().as_slice() == NONCE)
    });
    Some(Request { ids, nonce })
}

/// An `OCSPResponse` carrying only an error status.
fn status_only(status: i64) -> Vec<u8> {
    yasna::construct_der(|w| w.write_sequence(|w| w.next().write_enum(status)))
}

fn hash(alg: &[u64], data: &[u8]) -> Option<Vec<u8>> {
    let a = match alg {
        SHA1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        SHA256 => &digest::SHA256,
        _ => return None,
    };
    Some(digest::digest(a, data).as_ref().to_vec())
}

/// The signature AlgorithmIdentifier for the issuer's key, as rcgen signs with it.
fn write_sig_alg(w: yasna::DERWriter<'_>, spec: crate::keys::KeySpec) {
    use crate::keys::KeySpec;
    w.write_sequence(|w| match spec {
        KeySpec::Rsa(_) => {
            w.next().write_oid(&ObjectIdentifier::from_slice(&[1, 2, 840, 113549, 1, 1, 11]));
            w.next().write_null();
        }
        KeySpec::Ec(384) => {
            w.next().write_oid(&ObjectIdentifier::from_slice(&[1, 2, 840, 10045, 4, 3, 3]))
        }
        KeySpec::Ec(521) => {
            w.next().write_oid(&ObjectIdentifier::from_slice(&[1, 2, 840, 10045, 4, 3, 4]))
        }
        KeySpec::Ec(_) => {
            w.next().write_oid(&ObjectIdentifier::from_slice(&[1, 2, 840, 10045, 4, 3, 2]))
        }
        KeySpec::Ed25519 => w.next().write_oid(&ObjectIdentifier::from_slice(&[1, 3, 101, 112])),
    })
}

enum Status {
    Good,
    Revoked(u64),
    Unknown,
}

impl Pki {
    pub(crate) async fn ocsp_post(&self, r: &Req<'_>) -> Result<Response> {
        let raw = r.str("http_raw_body")?.unwrap_or_default();
        let der = base64::engine::general_purpose::STANDARD.decode(raw.trim()).unwrap_or_default();
        self.ocsp(&der).await
    }

    pub(crate) async fn ocsp_get(&self, r: &Req<'_>) -> Result<Response> {
        let b64 = r.capture("req");
        // The path was percent-decoded already; some clients use the URL-safe alphabet, and the HTTP
        // layer does for a request whose `/`s came encoded.
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(b64))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64))
            .unwrap_or_default();
        self.ocsp(&der).await
    }

    async fn ocsp(&self, der: &[u8]) -> Result<Response> {
        let answer = |b: Vec<u8>| Ok(Response::raw_body(CONTENT_TYPE, b));
        if self.crl_config().await?.ocsp_disable {
            return answer(status_only(6));
        }
        let Some(req) = parse_request(der) else { return answer(status_only(1)) };
        // The issuer is the one the first CertID names; every other must name it too.
        let mut issuer: Option<IssuerEntry> = None;
        for id in self.issuer_ids().await? {
            let Some(i) = self.issuer_by_id(&id).await? else { continue };
            let cert_der = i.der()?;
            let Ok((_, c)) = parse_x509_certificate(&cert_der) else { continue };
            let first = &req.ids[0];
            let name = hash(&first.hash_alg, c.subject().as_raw());
            let key = hash(&first.hash_alg, &c.public_key().subject_public_key.data);
            if name.as_deref() == Some(&first.name_hash[..])
                && key.as_deref() == Some(&first.key_hash[..])
            {
                issuer = Some(i);
                break;
            }
        }
        let Some(issuer) = issuer else { return answer(status_only(6)) };
        let issuer_der = issuer.der()?;
        let (_, ic) = parse_x509_certificate(&issuer_der)
            .map_err(|e| coffer_core::Error::Internal(format!("stored issuer: {e}")))?;
        let key_bits = ic.public_key().subject_public_key.data.to_vec();
        let subject = ic.subject().as_raw().to_vec();
        let now = coffer_core::time::now_unix();
        let cfg = self.crl_config().await?;
        let validity = crate::revoke::secs(&cfg.ocsp_expiry, "ocsp_expiry")?;
        let mut statuses = Vec::new();
        for id in &req.ids {
            let same = hash(&id.hash_alg, &subject).as_deref() == Some(&id.name_hash[..])
                && hash(&id.hash_alg, &key_bits).as_deref() == Some(&id.key_hash[..]);
            if !same {
                return answer(status_only(6));
            }
            let serial = serial_colons(trim_serial(&id.serial));
            let status = match self.revoked_entry(&serial).await? {
                Some(e) if e.issuer_id == issuer.id => Status::Revoked(e.revocation_time),
                _ => match self.cert_entry(&serial).await? {
                    Some(c) if c.issuer_id == issuer.id => Status::Good,
                    _ => Status::Unknown,
                },
            };
            statuses.push(status);
        }
        let key_hash =
            digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &key_bits).as_ref().to_vec();
        let gt = |t: u64| GeneralizedTime::from_datetime(odt(t));
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged(Tag::context(2), |w| w.write_bytes(&key_hash));
                w.next().write_generalized_time(&gt(now));
                w.next().write_sequence(|w| {
                    for (id, status) in req.ids.iter().zip(&statuses) {
                        w.next().write_sequence(|w| {
                            w.next().write_der(&id.der);
                            match status {
                                Status::Good => w
                                    .next()
                                    .write_tagged_implicit(Tag::context(0), |w| w.write_null()),
                                Status::Revoked(t) => {
                                    w.next().write_tagged_implicit(Tag::context(1), |w| {
                                        w.write_sequence(|w| {
                                            w.next().write_generalized_time(&gt(*t))
                                        })
                                    })
                                }
                                Status::Unknown => w
                                    .next()
                                    .write_tagged_implicit(Tag::context(2), |w| w.write_null()),
                            }
                            w.next().write_generalized_time(&gt(now));
                            if validity > 0 {
                                w.next().write_tagged(Tag::context(0), |w| {
                                    w.write_generalized_time(&gt(now + validity))
                                });
                            }
                        });
                    }
                });
                if let Some(nonce) = &req.nonce {
                    w.next().write_tagged(Tag::context(1), |w| {
                        w.write_sequence(|w| w.next().write_der(nonce))
                    });
                }
            })
        });
        let key = self.key_by_id(&issuer.key_id).await?.key()?;
        let spec = key.spec;
        let signature = {
            use rcgen::SigningKey as _;
            key.key_pair()?.sign(&tbs).map_err(|e| {
                coffer_core::Error::Internal(format!("signing the OCSP answer: {e}"))
            })?
        };
        let basic = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                write_sig_alg(w.next(), spec);
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
            })
        });
        let resp = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_enum(0);
                w.next().write_tagged(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next().write_oid(&ObjectIdentifier::from_slice(BASIC));
                        w.next().write_bytes(&basic);
                    })
                });
            })
        });
        answer(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_request() {
        assert!(parse_request(b"").is_none());
        assert!(parse_request(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_none());
        assert_eq!(status_only(1), vec![0x30, 0x03, 0x0a, 0x01, 0x01]);
    }

    #[test]
    fn a_request_with_a_nonce_parses() {
        let id = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&ObjectIdentifier::from_slice(SHA1));
                    w.next().write_null();
                });
                w.next().write_bytes(&[1; 20]);
                w.next().write_bytes(&[2; 20]);
                w.next().write_bigint_bytes(&[0x00, 0x80, 0x01], true);
            })
        });
        let nonce = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(NONCE));
                w.next().write_bytes(&[4, 2, 9, 9]);
            })
        });
        let req = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| w.next().write_der(&id));
                    });
                    w.next().write_tagged(Tag::context(2), |w| {
                        w.write_sequence(|w| w.next().write_der(&nonce))
                    });
                })
            })
        });
        let parsed = parse_request(&req).expect("parses");
        assert_eq!(parsed.ids.len(), 1);
        assert_eq!(parsed.ids[0].hash_alg, SHA1);
        assert_eq!(serial_colons(trim_serial(&parsed.ids[0].serial)), "80:01");
        assert_eq!(parsed.nonce, Some(nonce));
    }
}
