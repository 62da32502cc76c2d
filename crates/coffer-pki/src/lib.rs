//! The `pki` secrets engine: Vault's API for a certificate authority. Issuers (roots and
//! intermediates, RSA, EC and Ed25519), roles that bound what may be issued, issuance from
//! generated keys (`issue`) or from CSRs (`sign`, `sign-verbatim`), revocation with a CRL and an
//! RFC 6960 OCSP responder, tidy of expired entries.
//!
//! Guarantees: private keys (issuers' and issued ones) exist at rest only inside the mount's
//! barrier view (`keys/<id>`), in memory only in zeroized buffers, and never in a log, error or
//! `Debug` output; an issued key is answered once and never stored. A role's bounds are checked
//! before anything is signed, and a refusal is a 400 naming the name or field refused. With
//! `no_store`, issuing writes nothing at all (no certificate record, no counter), so storage
//! does not grow with issuance. A revoked certificate appears in its issuer's next CRL (rebuilt
//! on every revocation) and in OCSP answers at once. Revoking a certificate's lease
//! (`generate_lease`) revokes the certificate.
//!
//! Not done: ACME, EST, CMPv2, delta and unified CRLs, cross-signing, `sign-self-issued`,
//! external key managers, `issuers/import/*` and `config/ca` beyond a PEM bundle of one key and
//! its certificates, templated `allowed_domains`, `other_sans`, certificate metadata, and
//! periodic background CRL rebuilds (an `auto_rebuild` CRL is rebuilt when read within its
//! grace period instead).
//!
//! Storage (inside the view): `keys/<id>` (private keys), `issuers/<id>`, `config/issuers`,
//! `config/crl`, `config/urls`, `roles/<name>`, `certs/<serial>` (issued certificates),
//! `revoked/<serial>`, `crl/<issuer id>` (the last CRL built and its number).

mod ca;
mod issue;
mod issuers;
mod keys;
mod names;
mod ocsp;
mod revoke;
mod roles;

#[cfg(test)]
mod tests;

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use coffer_core::backend::{BackendConfig, BackendRequest, LeaseRequest, LogicalBackend};
use coffer_core::framework::{Default, Field, Help, Path, Paths, Spec, handler};
use coffer_core::{Error, Response, Result, View};
use tokio::sync::Mutex;

/// Builds the engine for a mount.
pub fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    Ok(Arc::new(Pki::new(cfg.view)))
}

pub(crate) struct Pki {
    view: View,
    /// Serializes changes to issuers, keys, configs and CRLs. Issuance takes it only to read
    /// a consistent issuer, never while signing a leaf.
    lock: Mutex<()>,
    /// The last tidy's report, for `tidy-status`.
    tidy_status: Mutex<Option<serde_json::Value>>,
}

impl Pki {
    pub(crate) fn new(view: View) -> Self {
        Pki { view, lock: Mutex::new(()), tidy_status: Mutex::new(None) }
    }
}

const NAME: &[Field] = &[Field::str("name", "The role's name.")];
const REF: &[Field] = &[Field::str("issuer_ref", "An issuer's id, its name, or \"default\".")];
const SERIAL: &[Field] = &[Field::str(
    "serial",
    "A certificate's serial number (colons or hyphens), or ca, ca_chain, crl.",
)];
const EXPORTED: &[Field] = &[Field::str(
    "exported",
    "internal: the private key stays in Coffer; exported: it is answered once too.",
)];

/// Fields of root and intermediate generation.
pub(crate) const CA_FIELDS: &[Field] = &[
    Field::str("common_name", "The CA certificate's subject common name."),
    Field::comma_list("alt_names", "DNS subject alternative names."),
    Field::comma_list("ip_sans", "IP subject alternative names."),
    Field::comma_list("uri_sans", "URI subject alternative names."),
    Field::duration("ttl", "Lifetime of the certificate; default: the mount's default lease TTL."),
    Field::str("key_type", "rsa, ec or ed25519.").default(Default::Str("rsa")),
    Field::int("key_bits", "RSA: 2048, 3072, 4096; EC: 256, 384, 521; 0: the default."),
    Field::str("issuer_name", "A name for the new issuer."),
    Field::str("key_name", "A name for the new key."),
    Field::int("max_path_length", "The CA's path length constraint; -1: none.").unchecked(),
    Field::str("format", "pem, der or pem_bundle.").default(Default::Str("pem")),
    Field::str("private_key_format", "der (the key type's own format) or pkcs8."),
    Field::comma_list("ou", "Organizational units."),
    Field::comma_list("organization", "Organizations."),
    Field::comma_list("country", "Countries."),
    Field::comma_list("locality", "Localities."),
    Field::comma_list("province", "Provinces."),
    Field::comma_list("street_address", "Street addresses."),
    Field::comma_list("postal_code", "Postal codes."),
    Field::comma_list("permitted_dns_domains", "Name constraints: permitted DNS domains."),
    Field::bool("exclude_cn_from_sans", "Leave the common name out of the DNS SANs."),
    Field::str("csr", "root/sign-intermediate: the intermediate's CSR (PEM)."),
    Field::bool("use_csr_values", "root/sign-intermediate: take subject and SANs from the CSR."),
    Field::str("not_after", "An explicit expiry (RFC 3339), instead of ttl."),
];

static PATHS: LazyLock<Paths<Pki>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("ca", "The default issuer's certificate, DER.")
            .read(handler!(Pki::read_ca_der))
            .unauthenticated(),
        Path::new("ca/pem", "The default issuer's certificate, PEM.")
            .read(handler!(Pki::read_ca_pem))
            .unauthenticated(),
        Path::new("ca_chain", "The default issuer's chain, PEM.")
            .read(handler!(Pki::read_ca_chain))
            .unauthenticated(),
        Path::new("crl", "The default issuer's CRL, DER.")
            .read(handler!(Pki::read_crl_der))
            .unauthenticated(),
        Path::new("crl/pem", "The default issuer's CRL, PEM.")
            .read(handler!(Pki::read_crl_pem))
            .unauthenticated(),
        Path::new("crl/rotate", "Rebuild every issuer's CRL now.").read(handler!(Pki::rotate_crl)),
        Path::new("cert/{serial}/raw", "A certificate, DER.")
            .fields(SERIAL)
            .read(handler!(Pki::read_cert_der))
            .unauthenticated(),
        Path::new("cert/{serial}/raw/pem", "A certificate, PEM.")
            .fields(SERIAL)
            .read(handler!(Pki::read_cert_pem))
            .unauthenticated(),
        Path::new("cert/{serial}", "A certificate (or ca, ca_chain, crl) as JSON.")
            .fields(SERIAL)
            .read(handler!(Pki::read_cert))
            .unauthenticated(),
        Path::new("certs", "Serial numbers of the stored certificates.")
            .list(handler!(Pki::list_certs)),
        Path::new("certs/revoked", "Serial numbers of the revoked certificates.")
            .list(handler!(Pki::list_revoked)),
        Path::new("config/crl", "CRL settings: expiry, disable, auto_rebuild.")
            .fields(revoke::CRL_CONFIG_FIELDS)
            .read(handler!(Pki::read_crl_config))
            .write(handler!(Pki::write_crl_config)),
        Path::new("config/urls", "URLs written into issued certificates (AIA, CRL DP).")
            .fields(issuers::URL_FIELDS)
            .read(handler!(Pki::read_urls))
            .write(handler!(Pki::write_urls)),
        Path::new("config/issuers", "The default issuer.")
            .fields(issuers::DEFAULT_FIELDS)
            .read(handler!(Pki::read_default_issuer))
            .write(handler!(Pki::write_default_issuer)),
        Path::new("root/replace", "Set the default issuer (as config/issuers).")
            .fields(issuers::DEFAULT_FIELDS)
            .write(handler!(Pki::write_default_issuer)),
        Path::new("config/ca", "Import a PEM bundle: a private key and its CA certificate.")
            .fields(ca::IMPORT_FIELDS)
            .write(handler!(Pki::import_bundle)),
        Path::new("issuers/import/bundle", "Import a PEM bundle (as config/ca).")
            .fields(ca::IMPORT_FIELDS)
            .write(handler!(Pki::import_bundle)),
        Path::new("root/generate/{exported}", "Generate a self-signed root issuer.")
            .fields(EXPORTED)
            .fields(CA_FIELDS)
            .write(handler!(Pki::generate_root)),
        Path::new("issuers/generate/root/{exported}", "Generate a root issuer (as root/generate).")
            .fields(EXPORTED)
            .fields(CA_FIELDS)
            .write(handler!(Pki::generate_root)),
        Path::new("root", "Delete every issuer and key of the mount.")
            .delete(handler!(Pki::delete_root))
            .sudo(),
        Path::new(
            "root/sign-intermediate",
            "Sign an intermediate CA's CSR with the default issuer.",
        )
        .fields(CA_FIELDS)
        .write(handler!(Pki::sign_intermediate)),
        Path::new("issuer/{issuer_ref}/sign-intermediate", "Sign an intermediate CA's CSR.")
            .fields(REF)
            .fields(CA_FIELDS)
            .write(handler!(Pki::sign_intermediate)),
        Path::new(
            "intermediate/generate/{exported}",
            "Generate a key and a CSR for an intermediate CA.",
        )
        .fields(EXPORTED)
        .fields(CA_FIELDS)
        .write(handler!(Pki::generate_intermediate)),
        Path::new("issuers/generate/intermediate/{exported}", "As intermediate/generate.")
            .fields(EXPORTED)
            .fields(CA_FIELDS)
            .write(handler!(Pki::generate_intermediate)),
        Path::new("intermediate/set-signed", "Import the signed intermediate certificate.")
            .fields(ca::SET_SIGNED_FIELDS)
            .write(handler!(Pki::set_signed)),
        Path::new("issuers", "The issuers, with their names and serial numbers.")
            .list(handler!(Pki::list_issuers)),
        Path::new("keys", "The keys, with their names and types.").list(handler!(Pki::list_keys)),
        Path::new("issuer/{issuer_ref}/json", "An issuer's certificate and chain.")
            .fields(REF)
            .read(handler!(Pki::read_issuer_json)),
        Path::new("issuer/{issuer_ref}/pem", "An issuer's certificate, PEM.")
            .fields(REF)
            .read(handler!(Pki::read_issuer_pem)),
        Path::new("issuer/{issuer_ref}/der", "An issuer's certificate, DER.")
            .fields(REF)
            .read(handler!(Pki::read_issuer_der)),
        Path::new("issuer/{issuer_ref}/crl", "An issuer's CRL as JSON.")
            .fields(REF)
            .read(handler!(Pki::read_issuer_crl_json)),
        Path::new("issuer/{issuer_ref}/crl/pem", "An issuer's CRL, PEM.")
            .fields(REF)
            .read(handler!(Pki::read_issuer_crl_pem)),
        Path::new("issuer/{issuer_ref}/crl/der", "An issuer's CRL, DER.")
            .fields(REF)
            .read(handler!(Pki::read_issuer_crl_der)),
        Path::new("issuer/{issuer_ref}/issue/{role}", "Issue a certificate from a given issuer.")
            .fields(REF)
            .fields(issue::ISSUE_FIELDS)
            .write(handler!(Pki::issue)),
        Path::new("issuer/{issuer_ref}/sign/{role}", "Sign a CSR with a given issuer.")
            .fields(REF)
            .fields(issue::ISSUE_FIELDS)
            .write(handler!(Pki::sign)),
        Path::new("issuer/{issuer_ref}", "An issuer: read, rename, set its behaviour, delete.")
            .fields(REF)
            .fields(issuers::ISSUER_FIELDS)
            .read(handler!(Pki::read_issuer))
            .write(handler!(Pki::update_issuer))
            .patch(handler!(Pki::update_issuer))
            .delete(handler!(Pki::delete_issuer)),
        Path::new("roles", "The roles.").list(handler!(Pki::list_roles)),
        Path::new("roles/{name}", "A role: what its certificates may name and how long they live.")
            .fields(NAME)
            .fields(roles::FIELDS)
            .read(handler!(Pki::read_role))
            .write(handler!(Pki::write_role))
            .patch(handler!(Pki::patch_role))
            .delete(handler!(Pki::delete_role))
            .exists(handler!(Pki::role_exists)),
        Path::new("issue/{role}", "Issue a certificate and a new private key under a role.")
            .fields(issue::ISSUE_FIELDS)
            .write(handler!(Pki::issue)),
        Path::new("sign/{role}", "Sign a CSR under a role.")
            .fields(issue::ISSUE_FIELDS)
            .write(handler!(Pki::sign)),
        Path::new("sign-verbatim", "Sign a CSR as it is, without a role's bounds.")
            .fields(issue::ISSUE_FIELDS)
            .write(handler!(Pki::sign_verbatim)),
        Path::new("sign-verbatim/{role}", "Sign a CSR as it is, with a role's TTLs and storage.")
            .fields(issue::ISSUE_FIELDS)
            .write(handler!(Pki::sign_verbatim)),
        Path::new("revoke", "Revoke a certificate by serial number or PEM.")
            .fields(revoke::REVOKE_FIELDS)
            .write(handler!(Pki::revoke)),
        Path::new("ocsp", "RFC 6960 OCSP: POST a DER request (application/ocsp-request).")
            .fields(ocsp::FIELDS)
            .write(handler!(Pki::ocsp_post))
            .unauthenticated(),
        Path::new("ocsp/{req*}", "RFC 6960 OCSP: GET with the base64 DER request in the path.")
            .read(handler!(Pki::ocsp_get))
            .unauthenticated(),
        Path::new("tidy", "Remove expired certificates (and their revocation entries).")
            .fields(revoke::TIDY_FIELDS)
            .write(handler!(Pki::tidy)),
        Path::new("tidy-status", "What the last tidy did.").read(handler!(Pki::tidy_status)),
    ])
    .with_description(
        "The PKI engine: a certificate authority with roles, revocation, CRLs and OCSP.",
    )
});

/// Paths reachable without a token, as Vault's PKI has them: public CA material only.
const UNAUTHENTICATED: &[&str] = &[
    "cert/*",
    "ca/pem",
    "ca_chain",
    "ca",
    "crl/pem",
    "crl",
    "issuer/+/crl/der",
    "issuer/+/crl/pem",
    "issuer/+/crl",
    "issuer/+/pem",
    "issuer/+/der",
    "issuer/+/json",
    "issuers",
    "issuers/",
    "ocsp",
    "ocsp/*",
];

#[async_trait]
impl LogicalBackend for Pki {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        PATHS.handle(self, req).await
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>> {
        PATHS.exists(self, req).await
    }

    async fn revoke_lease(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        self.revoke_for_lease(lease).await
    }

    fn unauthenticated_paths(&self) -> &'static [&'static str] {
        UNAUTHENTICATED
    }

    fn sudo_paths(&self) -> &'static [&'static str] {
        PATHS.sudo()
    }

    fn specs(&self) -> Vec<Spec> {
        PATHS.specs()
    }

    fn help(&self, rel: &str) -> Option<Help> {
        PATHS.help(rel)
    }
}

/// A serial number as Vault shows it: lowercase hex bytes joined by `:`.
pub(crate) fn serial_colons(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The storage form of a serial number (Vault's: hyphens), from either spelling.
pub(crate) fn serial_key(serial: &str) -> Result<String> {
    let s = serial.trim().to_ascii_lowercase().replace(':', "-");
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Error::invalid(format!(
            "invalid serial number {serial:?}: expected hex bytes separated by ':' or '-'"
        )));
    }
    Ok(s)
}

/// A fresh serial number: 20 random bytes, positive, with a non-zero first byte (so its DER
/// form is exactly these 20 bytes).
pub(crate) fn new_serial() -> Vec<u8> {
    let mut b = coffer_core::random::random_bytes::<20>().to_vec();
    b[0] = (b[0] & 0x7f).max(1);
    b
}

pub(crate) fn internal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Internal(format!("{what}: {e}"))
}
