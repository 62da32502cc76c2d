//! The key-management paths: `keys` (list), `keys/:name` (create, read, delete),
//! `keys/:name/config`, `rotate`, `trim`, `export/:type/:name(/:version)`, `backup/:name` and
//! `restore(/:name)`.
//!
//! Guarantees: every change runs under the engine's lock and re-reads the key inside it, so a
//! change is never lost to a concurrent one; `exportable` and `allow_plaintext_backup` can only
//! be turned on, never off (as in Vault), since material may already be out; a key is deleted
//! only when `deletion_allowed`; trimming keeps every version that may still decrypt or sign.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use coffer_core::framework::{Req, list_response};
use coffer_core::time::{now_unix, rfc3339};
use coffer_core::{Error, Response, Result};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::key::{
    HMAC_DEFAULT_KEY_SIZE, HMAC_MAX_KEY_SIZE, HMAC_MIN_KEY_SIZE, KeyType, NewKey, Policy, Stamp,
};
use crate::{Transit, check_name};

/// Vault's lower bound on `auto_rotate_period`.
const MIN_AUTO_ROTATE_SECS: u64 = 3600;

fn check_auto_rotate(secs: u64) -> Result<()> {
    if secs != 0 && secs < MIN_AUTO_ROTATE_SECS {
        return Err(Error::invalid("auto rotate period must be 0 to disable or at least an hour"));
    }
    Ok(())
}

/// A base64 request field decoded; `what` names it in the error.
pub(crate) fn b64_field(v: Option<String>, what: &str) -> Result<Vec<u8>> {
    match v {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s.trim())
            .map_err(|_| Error::invalid(format!("failed to base64-decode {what}"))),
    }
}

impl Transit {
    async fn policy(&self, name: &str) -> Result<Policy> {
        self.load(name).await?.ok_or_else(|| Error::invalid(format!("key {name:?} not found")))
    }

    pub(crate) async fn key_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        let name = r.capture("name");
        if check_name(name).is_err() {
            return Ok(None);
        }
        Ok(Some(self.view.get(&format!("policy/{name}")).await?.is_some()))
    }

    pub(crate) async fn list_keys(&self, _r: &Req<'_>) -> Result<Response> {
        list_response(self.view.list("policy/").await?)
    }

    pub(crate) async fn read_key(&self, r: &Req<'_>) -> Result<Response> {
        let Some(p) = self.cached(r.capture("name")).await? else { return Err(Error::NotFound) };
        let context = b64_field(r.str("context")?, "context")?;
        Ok(Response::data(p.read_json(&context)?))
    }

    /// The settings of a new key from a create request (also `encrypt`'s upsert).
    pub(crate) fn new_key(r: &Req<'_>, derived_default: bool) -> Result<NewKey> {
        let type_name = r.str("type")?.unwrap_or_else(|| "aes256-gcm96".into());
        let key_type = KeyType::parse(&type_name)
            .ok_or_else(|| Error::invalid(format!("unknown key type {type_name}")))?;
        let derived = r.bool("derived")?.unwrap_or(derived_default);
        let convergent = r.bool("convergent_encryption")?.unwrap_or(false);
        if convergent && !derived {
            return Err(Error::invalid("convergent encryption requires derivation to be enabled"));
        }
        if derived && !key_type.supports_derivation() {
            return Err(Error::invalid(format!(
                "key derivation and convergent encryption not supported for keys of type {}",
                key_type.name()
            )));
        }
        if convergent && !key_type.is_aead() {
            return Err(Error::invalid(format!(
                "convergent encryption not supported for keys of type {}",
                key_type.name()
            )));
        }
        let auto_rotate_period = r.secs("auto_rotate_period")?.unwrap_or(0);
        check_auto_rotate(auto_rotate_period)?;
        let key_size = match r.u64("key_size")?.unwrap_or(0) {
            0 => HMAC_DEFAULT_KEY_SIZE,
            _ if key_type != KeyType::Hmac => {
                return Err(Error::invalid(format!(
                    "key_size is not valid for algorithm {}",
                    key_type.name()
                )));
            }
            n if !(HMAC_MIN_KEY_SIZE..=HMAC_MAX_KEY_SIZE).contains(&n) => {
                return Err(Error::invalid(format!("invalid key_size {n}")));
            }
            n => n,
        };
        Ok(NewKey {
            key_type,
            derived,
            convergent,
            exportable: r.bool("exportable")?.unwrap_or(false),
            allow_plaintext_backup: r.bool("allow_plaintext_backup")?.unwrap_or(false),
            auto_rotate_period,
            key_size,
        })
    }

    pub(crate) async fn create_key(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        check_name(name)?;
        let n = Self::new_key(r, false)?;
        let _g = self.lock.lock().await;
        if let Some(p) = self.load(name).await? {
            // Vault answers an existing key as it is and changes nothing.
            return Ok(Response::data(p.read_json(&[])?));
        }
        // RSA key generation takes a while: off the async workers.
        let owned = name.to_owned();
        let p = tokio::task::spawn_blocking(move || Policy::create(&owned, &n))
            .await
            .map_err(|e| Error::Internal(format!("transit: key generation task failed: {e}")))??;
        self.save(&p).await?;
        Ok(Response::data(p.read_json(&[])?))
    }

    pub(crate) async fn delete_key(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _g = self.lock.lock().await;
        let Some(p) = self.load(name).await? else {
            return Err(Error::invalid(format!(
                "error deleting policy {name}: could not delete key; not found"
            )));
        };
        if !p.deletion_allowed {
            return Err(Error::invalid(format!(
                "error deleting policy {name}: deletion is not allowed for this key"
            )));
        }
        self.view.delete(&format!("policy/{name}")).await?;
        self.forget(name).await;
        Ok(Response::empty())
    }

    pub(crate) async fn config_key(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let f = r.fields();
        let _g = self.lock.lock().await;
        let Some(mut p) = self.load(name).await? else {
            return Err(Error::invalid(format!("no existing key named {name} could be found")));
        };
        if let Some(v) = f.u64("min_decryption_version")? {
            if v.max(1) != p.min_decryption_version && v > p.latest_version {
                return Err(Error::invalid(format!(
                    "cannot set min decryption version of {v}, latest key version is {}",
                    p.latest_version
                )));
            }
            // 0 means "the first version", as in Vault.
            p.min_decryption_version = v.max(1);
        }
        if let Some(v) = f.u64("min_encryption_version")? {
            if v != p.min_encryption_version && v > p.latest_version {
                return Err(Error::invalid(format!(
                    "cannot set min encryption version of {v}, latest key version is {}",
                    p.latest_version
                )));
            }
            p.min_encryption_version = v;
        }
        if p.min_encryption_version > 0 && p.min_encryption_version < p.min_decryption_version {
            return Err(Error::invalid(format!(
                "cannot set min encryption/decryption values; min encryption version of {} must \
                 be greater than or equal to min decryption version of {}",
                p.min_encryption_version, p.min_decryption_version
            )));
        }
        if let Some(b) = f.bool("deletion_allowed")? {
            p.deletion_allowed = b;
        }
        if let Some(b) = f.bool("exportable")? {
            if p.exportable && !b {
                return Err(Error::invalid("exportable cannot be disabled after being enabled"));
            }
            p.exportable = b;
        }
        if let Some(b) = f.bool("allow_plaintext_backup")? {
            if p.allow_plaintext_backup && !b {
                return Err(Error::invalid(
                    "allow_plaintext_backup cannot be disabled after being enabled",
                ));
            }
            p.allow_plaintext_backup = b;
        }
        if let Some(s) = f.secs("auto_rotate_period")? {
            check_auto_rotate(s)?;
            p.auto_rotate_period = s;
        }
        if p.min_available_version > 0 {
            if p.min_encryption_version > 0 && p.min_encryption_version < p.min_available_version {
                return Err(Error::invalid(
                    "min encryption version should not be less than min available version",
                ));
            }
            if p.min_decryption_version < p.min_available_version {
                return Err(Error::invalid(
                    "min decryption version should not be less then min available version",
                ));
            }
        }
        self.save(&p).await?;
        Ok(Response::data(p.read_json(&[])?))
    }

    pub(crate) async fn rotate_key(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _g = self.lock.lock().await;
        let Some(mut p) = self.load(name).await? else {
            return Err(Error::invalid("key not found"));
        };
        let p = tokio::task::spawn_blocking(move || p.rotate().map(|()| p))
            .await
            .map_err(|e| Error::Internal(format!("transit: key generation task failed: {e}")))??;
        self.save(&p).await?;
        Ok(Response::data(p.read_json(&[])?))
    }

    pub(crate) async fn trim_key(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let min = r
            .u64("min_available_version")?
            .ok_or_else(|| Error::invalid("missing min_available_version"))?;
        let _g = self.lock.lock().await;
        let mut p = self.policy(name).await?;
        let refuse = |m: &str| Err(Error::invalid(m.to_owned()));
        if min < p.min_available_version {
            return refuse("minimum available version cannot be decremented");
        }
        if p.min_encryption_version == 0 {
            return refuse(
                "minimum available version cannot be set when minimum encryption version is not set",
            );
        }
        if min > p.min_encryption_version {
            return refuse(
                "minimum available version cannot be greater than minmum encryption version",
            );
        }
        if min > p.min_decryption_version {
            return refuse(
                "minimum available version cannot be greater than minimum decryption version",
            );
        }
        if min == 0 {
            return refuse("minimum available version should be positive");
        }
        p.min_available_version = min;
        p.trim();
        self.save(&p).await?;
        Ok(Response::data(p.read_json(&[])?))
    }

    pub(crate) async fn export(&self, r: &Req<'_>) -> Result<Response> {
        let kind = r.capture("type");
        if !matches!(kind, "encryption-key" | "signing-key" | "hmac-key" | "public-key") {
            return Err(Error::invalid(format!("invalid export type: {kind}")));
        }
        let format = r.str("format")?.unwrap_or_default();
        if !matches!(format.as_str(), "" | "raw" | "der" | "pem") {
            return Err(Error::invalid(format!("invalid format: {format}")));
        }
        let Some(p) = self.load(r.capture("name")).await? else { return Err(Error::NotFound) };
        if !p.exportable && kind != "public-key" {
            return Err(Error::invalid("private key material is not exportable"));
        }
        match kind {
            "encryption-key" if !p.key_type.supports_encryption() => {
                return Err(Error::invalid("encryption not supported for the key"));
            }
            "signing-key" if !p.key_type.supports_signing() => {
                return Err(Error::invalid("signing not supported for the key"));
            }
            "public-key" if !p.key_type.supports_signing() => {
                return Err(Error::invalid("public key not available for the key type"));
            }
            _ => {}
        }
        let versions: Vec<u64> = match r.capture("version") {
            "" => p.live_keys().map(|(v, _)| *v).collect(),
            v => {
                let n = if v == "latest" {
                    p.latest_version
                } else {
                    v.trim_start_matches('v')
                        .parse()
                        .map_err(|_| Error::invalid("invalid key version"))?
                };
                if n < p.min_decryption_version {
                    return Err(Error::invalid(
                        "version for export is below minimum decryption version",
                    ));
                }
                if !p.keys.contains_key(&n) {
                    return Err(Error::invalid("version does not exist or cannot be found"));
                }
                vec![n]
            }
        };
        let mut keys = Map::new();
        for v in versions {
            keys.insert(v.to_string(), Value::String(p.export_one(kind, &format, v)?));
        }
        Ok(Response::from_value(json!({
            "name": p.name,
            "type": p.key_type.name(),
            "keys": keys,
        })))
    }

    pub(crate) async fn backup(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name");
        let _g = self.lock.lock().await;
        let Some(mut p) = self.load(name).await? else {
            return Err(Error::invalid(format!("key {name:?} not found")));
        };
        if !p.exportable {
            return Err(Error::invalid("exporting is disallowed on the policy"));
        }
        if !p.allow_plaintext_backup {
            return Err(Error::invalid("plaintext backup is disallowed on the policy"));
        }
        p.backup_info = Some(Stamp { time: rfc3339(now_unix()), version: p.latest_version });
        self.save(&p).await?;
        let raw = coffer_core::record::encode(&p)?;
        let backup = Zeroizing::new(B64.encode(raw.as_slice()));
        Ok(Response::from_value(json!({ "backup": backup.as_str() })))
    }

    pub(crate) async fn restore(&self, r: &Req<'_>) -> Result<Response> {
        let backup = Zeroizing::new(
            r.str("backup")?
                .filter(|b| !b.is_empty())
                .ok_or_else(|| Error::invalid("'backup' must be supplied"))?,
        );
        let force = r.bool("force")?.unwrap_or(false);
        let raw = Zeroizing::new(
            B64.decode(backup.trim()).map_err(|_| Error::invalid("the backup is not base64"))?,
        );
        let mut p: Policy = coffer_core::record::decode(&raw).map_err(|_| {
            Error::invalid("the backup does not decode as a Coffer transit key backup")
        })?;
        let name = match r.capture("name") {
            "" => p.name.clone(),
            n => n.to_owned(),
        };
        if name.contains('/') {
            return Err(Error::invalid("key names cannot be paths"));
        }
        check_name(&name)?;
        if p.latest_version == 0 || !p.keys.contains_key(&p.latest_version) {
            return Err(Error::invalid("the backup holds no key versions"));
        }
        let _g = self.lock.lock().await;
        if !force && self.load(&name).await?.is_some() {
            return Err(Error::invalid(format!("key {name:?} already exists")));
        }
        p.name = name;
        p.restore_info = Some(Stamp { time: rfc3339(now_unix()), version: p.latest_version });
        self.save(&p).await?;
        Ok(Response::empty())
    }
}
