//! Compact JWS parsing and signature checks for the JWT and Kubernetes auth methods, on the one
//! crypto provider (aws-lc-rs).
//!
//! Only asymmetric algorithms exist here: `none` and the HMAC family are refused by name, so a
//! public key can never be mistaken for a shared secret (the classic `alg` confusion attack), and
//! a key only verifies under the algorithm family of its own type.

use aws_lc_rs::signature::{self, RsaParameters, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffer_core::{Error, Result};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};

/// Every algorithm Coffer verifies, in Vault's spelling.
pub(crate) const ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

#[derive(Clone, Copy)]
enum Family {
    Rsa(&'static RsaParameters),
    Ec(Curve, &'static dyn VerificationAlgorithm),
    Ed25519,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn from_jwk(crv: &str) -> Option<Curve> {
        match crv {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }
}

fn family(alg: &str) -> Option<Family> {
    use signature::*;
    Some(match alg {
        "RS256" => Family::Rsa(&RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Family::Rsa(&RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Family::Rsa(&RSA_PKCS1_2048_8192_SHA512),
        "PS256" => Family::Rsa(&RSA_PSS_2048_8192_SHA256),
        "PS384" => Family::Rsa(&RSA_PSS_2048_8192_SHA384),
        "PS512" => Family::Rsa(&RSA_PSS_2048_8192_SHA512),
        "ES256" => Family::Ec(Curve::P256, &ECDSA_P256_SHA256_FIXED),
        "ES384" => Family::Ec(Curve::P384, &ECDSA_P384_SHA384_FIXED),
        "ES512" => Family::Ec(Curve::P521, &ECDSA_P521_SHA512_FIXED),
        "EdDSA" => Family::Ed25519,
        _ => return None,
    })
}

/// A public key from a JWKS or a PEM block.
#[derive(Debug, Clone)]
pub(crate) enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo): its type shows when it is used.
    Spki(Vec<u8>),
}

impl PublicKey {
    /// Parses one PEM `PUBLIC KEY` block, refusing anything aws-lc-rs cannot verify with.
    pub(crate) fn from_pem(pem: &str) -> std::result::Result<PublicKey, String> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.trim().as_bytes())
            .map_err(|e| format!("not a PEM \"PUBLIC KEY\" block: {e}"))?;
        let der = der.as_ref().to_vec();
        use signature::*;
        let kinds: [&'static dyn VerificationAlgorithm; 5] = [
            &RSA_PKCS1_2048_8192_SHA256,
            &ECDSA_P256_SHA256_FIXED,
            &ECDSA_P384_SHA384_FIXED,
            &ECDSA_P521_SHA512_FIXED,
            &ED25519,
        ];
        if kinds.iter().any(|alg| ParsedPublicKey::new(*alg, &der).is_ok()) {
            Ok(PublicKey::Spki(der))
        } else {
            Err("unsupported public key: use RSA (2048 bits or more), ECDSA P-256/384/521 or \
                 Ed25519"
                .into())
        }
    }

    /// Parses one JWK; `None` for keys that are not for signatures or of a type Coffer does not
    /// verify with, which a JWKS may legitimately hold.
    pub(crate) fn from_jwk(jwk: &Map<String, Value>) -> Option<PublicKey> {
        let s = |k: &str| jwk.get(k).and_then(Value::as_str);
        let b = |k: &str| s(k).and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
        if s("use").is_some_and(|u| u != "sig") {
            return None;
        }
        match s("kty")? {
            "RSA" => Some(PublicKey::Rsa { n: b("n")?, e: b("e")? }),
            "EC" => {
                let curve = Curve::from_jwk(s("crv")?)?;
                let (x, y) = (b("x")?, b("y")?);
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Some(PublicKey::Ec { curve, point })
            }
            "OKP" if s("crv")? == "Ed25519" => Some(PublicKey::Ed25519(b("x")?)),
            _ => None,
        }
    }

    /// Whether `sig` is this key's signature of `msg` under `alg`; a key of another type than
    /// `alg` names never verifies.
    fn verifies(&self, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
        let Some(fam) = family(alg) else { return false };
        match (fam, self) {
            (Family::Rsa(params), PublicKey::Rsa { n, e }) => {
                signature::RsaPublicKeyComponents { n, e }.verify(params, msg, sig).is_ok()
            }
            (Family::Rsa(params), PublicKey::Spki(der)) => {
                UnparsedPublicKey::new(params, der).verify(msg, sig).is_ok()
            }
            (Family::Ec(curve, alg), PublicKey::Ec { curve: c, point }) if curve == *c => {
                UnparsedPublicKey::new(alg, point).verify(msg, sig).is_ok()
            }
            (Family::Ec(_, alg), PublicKey::Spki(der)) => {
                UnparsedPublicKey::new(alg, der).verify(msg, sig).is_ok()
            }
            (Family::Ed25519, PublicKey::Ed25519(x) | PublicKey::Spki(x)) => {
                UnparsedPublicKey::new(&signature::ED25519, x).verify(msg, sig).is_ok()
            }
            _ => false,
        }
    }
}

/// A key as a JWKS lists it: the key and the `kid`/`alg` it is published under.
#[derive(Debug, Clone)]
pub(crate) struct Jwk {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Option<String>,
    pub(crate) key: PublicKey,
}

/// Parses a JWKS document (`{"keys": [...]}`), keeping the signature keys Coffer can use.
pub(crate) fn parse_jwks(doc: &Value) -> std::result::Result<Vec<Jwk>, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS document has no \"keys\" array")?;
    Ok(keys
        .iter()
        .filter_map(Value::as_object)
        .filter_map(|k| {
            Some(Jwk {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_owned),
                alg: k.get("alg").and_then(Value::as_str).map(str::to_owned),
                key: PublicKey::from_jwk(k)?,
            })
        })
        .collect())
}

/// A compact JWS split into its parts, its signature not yet checked.
pub(crate) struct Token {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    pub(crate) claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Refuses `none`, HMAC and anything else Coffer cannot
/// verify, before any key is looked at.
pub(crate) fn parse(jwt: &str) -> Result<Token> {
    let malformed = || Error::invalid("error validating token: the JWT is malformed");
    let mut parts = jwt.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let json = |part: &str| -> Result<Map<String, Value>> {
        let raw = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed())?;
        match serde_json::from_slice(&raw) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(malformed()),
        }
    };
    let header = json(h)?;
    let alg = header.get("alg").and_then(Value::as_str).ok_or_else(malformed)?.to_owned();
    if family(&alg).is_none() {
        return Err(Error::invalid(format!(
            "error validating token: unsupported signing algorithm {alg:?}"
        )));
    }
    if header.get("crit").is_some() {
        return Err(Error::invalid(
            "error validating token: critical header extensions are not supported",
        ));
    }
    Ok(Token {
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        alg,
        claims: json(p)?,
        signing_input: format!("{h}.{p}"),
        signature: URL_SAFE_NO_PAD.decode(s).map_err(|_| malformed())?,
    })
}

impl Token {
    /// Whether one of `keys` signed this token: with a `kid`, only keys under that `kid`;
    /// keys that name an `alg` only for that `alg`.
    pub(crate) fn verified_by(&self, keys: &[Jwk]) -> bool {
        keys.iter()
            .filter(|k| self.kid.is_none() || k.kid.is_none() || k.kid == self.kid)
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == self.alg))
            .any(|k| k.key.verifies(&self.alg, self.signing_input.as_bytes(), &self.signature))
    }

    /// Whether any key carries this token's `kid` (a token without one matches any set).
    pub(crate) fn kid_known(&self, keys: &[Jwk]) -> bool {
        match &self.kid {
            None => true,
            Some(kid) => keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn signed(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let h = b64(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#).as_bytes());
        let p = b64(br#"{"sub":"alice"}"#);
        let input = format!("{h}.{p}");
        format!("{input}.{}", b64(&sign(input.as_bytes())))
    }

    #[test]
    fn es256_and_ed25519_verify_only_with_their_own_key_type() {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec");
        let ed = Ed25519KeyPair::generate().expect("ed");
        let ec_key = PublicKey::Ec { curve: Curve::P256, point: ec.public_key().as_ref().to_vec() };
        let ed_key = PublicKey::Ed25519(ed.public_key().as_ref().to_vec());
        let jwk = |key: PublicKey| Jwk { kid: Some("k1".into()), alg: None, key };

        let es = parse(&signed("ES256", |m| ec.sign(&rng, m).expect("sign").as_ref().to_vec()))
            .expect("parse");
        assert_eq!(es.claims["sub"], "alice");
        assert!(es.verified_by(&[jwk(ec_key.clone())]));
        assert!(!es.verified_by(&[jwk(ed_key.clone())]));

        let eddsa = parse(&signed("EdDSA", |m| ed.sign(m).as_ref().to_vec())).expect("parse");
        assert!(eddsa.verified_by(&[jwk(ed_key.clone())]));
        assert!(!eddsa.verified_by(&[jwk(ec_key)]));
        // The same key published under another kid is not consulted.
        let other = Jwk { kid: Some("k2".into()), alg: None, key: ed_key.clone() };
        assert!(!eddsa.verified_by(std::slice::from_ref(&other)));
        assert!(!eddsa.kid_known(&[other]));
        // A key pinned to another algorithm is not consulted either.
        let pinned = Jwk { kid: None, alg: Some("ES256".into()), key: ed_key };
        assert!(!eddsa.verified_by(&[pinned]));
    }

    #[test]
    fn none_and_hmac_are_refused_before_any_key() {
        for alg in ["none", "HS256", "RS1", ""] {
            let h = b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes());
            let err = parse(&format!("{h}.{}.", b64(b"{}"))).err().expect("refused");
            assert!(err.to_string().contains("unsupported signing algorithm"), "{alg}: {err}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.W10.", "e30.e30."] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jwks_skips_encryption_and_unknown_keys() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(&[7; 32]), "kid": "ed"},
        ]});
        let keys = parse_jwks(&doc).expect("jwks");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert!(parse_jwks(&serde_json::json!({"nope": []})).is_err());
    }

    #[test]
    fn pem_keys_must_be_usable() {
        let ed = Ed25519KeyPair::generate().expect("ed");
        let der = ed.public_key().as_der().expect("der");
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        assert!(PublicKey::from_pem(&pem).is_ok());
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .is_err()
        );
        assert!(PublicKey::from_pem("hello").is_err());
    }
}
