//! The `transit` secrets engine (Vault's "encryption as a service"): named keys whose material
//! never leaves the server unless a key is made exportable; encrypt, decrypt, rewrap, data keys,
//! HMACs, signatures, hashes and random bytes, all in Vault's API shape and wire formats.
//!
//! Guarantees: key material exists only in the engine's own barrier view (`policy/<name>`, one
//! record per key holding all its versions) and in memory in zeroized buffers; no answer,
//! error or log line carries it, except `export/` (only for `exportable` keys) and `backup/`
//! (only with `allow_plaintext_backup`), which exist to hand it out; changes to a key are
//! serialized, so two rotations never make the same version twice; a key used by requests is
//! kept decoded in memory (wiped when dropped), and every change made through this engine
//! replaces that copy before it is answered (a second node changing the same storage, as HA
//! standbys would, needs the change feed to drop it: Coffer has no HA yet); keys with an
//! `auto_rotate_period` are rotated by a task inside the server (checked every
//! [`TICK`]) that holds only a weak reference, so it ends when the mount is unmounted or the
//! server seals. Not supported (each refused with a 400 that names it): BYOK import,
//! `xchacha20-poly1305`, `managed_key`, key soft-deletion, `derive_key`/ECDH, certificate
//! chains, CMAC, the `cache-config` and `config/keys` paths. See docs/transit.md.

mod cipher;
mod der;
mod key;
mod keys;
mod ops;
mod secret;
mod sign;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use coffer_core::framework::{Default, Field, Framework, Path, Paths, handler};
use coffer_core::{BackendConfig, Error, LogicalBackend, Response, Result, View};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use crate::key::Policy;

/// How often the auto-rotation task looks for due keys.
const TICK: Duration = Duration::from_secs(10);

/// How long the auto-rotation schedule is trusted before it is rebuilt from storage (keys
/// changed through another node of an HA cluster are picked up by then).
const SCHEDULE_REFRESH_SECS: u64 = 3600;

/// A per-item failure: the caller's (400) or the server's (500). In a batch it becomes the
/// item's `error`; alone, the request's error.
#[derive(Debug)]
pub(crate) enum ItemError {
    User(String),
    Internal(String),
}

impl ItemError {
    pub(crate) fn message(&self) -> &str {
        match self {
            ItemError::User(m) | ItemError::Internal(m) => m,
        }
    }
}

impl From<ItemError> for Error {
    fn from(e: ItemError) -> Self {
        match e {
            ItemError::User(m) => Error::InvalidRequest(m),
            ItemError::Internal(m) => Error::Internal(m),
        }
    }
}

pub(crate) type ItemResult<T> = std::result::Result<T, ItemError>;

/// The schedule of automatic rotations: key name → Unix second it is due.
#[derive(Default)]
struct Schedule {
    due: HashMap<String, u64>,
    /// Unix second the schedule was last rebuilt from storage; 0: never.
    loaded_at: u64,
}

/// Keys as last stored, shared by the requests that use them, so a request does not decode a
/// key's every version from storage. Every change goes through [`Transit::save`] or
/// [`Transit::forget`] on this engine (there is one active node), which replace or drop the
/// entry; `generation` keeps a reader that loaded before a change from caching what it read.
#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<Policy>>,
    generation: u64,
}

pub(crate) struct Transit {
    view: View,
    cache: std::sync::Mutex<Cache>,
    /// Serializes every change to a key (create, config, rotate, trim, delete, restore, the
    /// upsert of `encrypt`), so versions are numbered once and settings never interleave.
    lock: Mutex<()>,
    schedule: Mutex<Schedule>,
}

/// The engine's factory, registered as `transit` by `coffer_engines::register_builtins`.
pub fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    let t = Transit::new(cfg.view);
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(rotation_task(Arc::downgrade(&t)));
    }
    Ok(t)
}

/// Rotates keys whose `auto_rotate_period` has passed, until the engine is dropped (unmount,
/// seal) or its storage seals.
async fn rotation_task(t: Weak<Transit>) {
    loop {
        tokio::time::sleep(TICK).await;
        let Some(t) = t.upgrade() else { return };
        match t.rotate_due(coffer_core::time::now_unix()).await {
            Ok(()) => {}
            Err(Error::Sealed) => return,
            Err(e) => tracing::warn!(error = %e, "transit engine: auto-rotation pass failed"),
        }
    }
}

/// Vault's name rule (`GenericNameRegex`): word characters, with `-` and `.` inside.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if !name.is_empty()
        && name.chars().all(|c| ok(c) || matches!(c, '-' | '.'))
        && name.starts_with(ok)
        && name.ends_with(ok)
    {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid key name {name:?}: use letters, digits, '_', '-' and '.'"
        )))
    }
}

const NAME: &[Field] = &[Field::str("name", "Name of the key.")];

const BATCH: Field = Field::map(
    "batch_input",
    "A list of items, each with the single-item fields; the answer is `batch_results`, one per \
     item, with per-item errors.",
)
.unchecked();

const PARTIAL: Field = Field::int(
    "partial_failure_response_code",
    "The HTTP status of a batch where some items failed and some succeeded (default 400).",
);

const KEY_FIELDS: &[Field] = &[
    Field::str("type", "Key type: aes128-gcm96, aes256-gcm96 (default), chacha20-poly1305, ed25519, ecdsa-p256, ecdsa-p384, ecdsa-p521, rsa-2048, rsa-3072, rsa-4096, hmac.")
        .default(Default::Str("aes256-gcm96")),
    Field::bool("derived", "Derive a key per request from the `context` (HKDF-SHA256)."),
    Field::bool("convergent_encryption", "Same plaintext and context give the same ciphertext; needs `derived`."),
    Field::bool("exportable", "The key material may be exported; cannot be undone."),
    Field::bool("allow_plaintext_backup", "The key may be backed up in plaintext; cannot be undone."),
    Field::duration("auto_rotate_period", "Rotate automatically this often (at least 1h); 0: never."),
    Field::int("key_size", "HMAC keys only: bytes of key material (32 to 512; default 32)."),
    Field::str("context", "On read: base64 context for the public keys of a derived ed25519 key."),
];

const CONFIG_FIELDS: &[Field] = &[
    Field::int("min_decryption_version", "Oldest version that may decrypt, verify or rewrap."),
    Field::int("min_encryption_version", "Oldest version that may encrypt or sign; 0: latest."),
    Field::bool("deletion_allowed", "The key may be deleted."),
    Field::bool("exportable", "The key material may be exported; cannot be undone."),
    Field::bool(
        "allow_plaintext_backup",
        "The key may be backed up in plaintext; cannot be undone.",
    ),
    Field::duration(
        "auto_rotate_period",
        "Rotate automatically this often (at least 1h); 0: never.",
    ),
];

const TRIM_FIELDS: &[Field] = &[Field::int(
    "min_available_version",
    "Versions below this are deleted for good; at most min_decryption_version and min_encryption_version.",
)];

const ENCRYPT_FIELDS: &[Field] = &[
    Field::str("plaintext", "Base64 plaintext."),
    Field::str("context", "Base64 context, for derived keys."),
    Field::str("nonce", "Refused, as by Vault since convergent version 2 (the nonce is derived)."),
    Field::int("key_version", "Version to encrypt with; 0: latest."),
    Field::str(
        "associated_data",
        "Base64 associated data, authenticated but not encrypted (AEAD keys).",
    ),
    Field::str("type", "Key type when encrypt creates the key (create capability)."),
    Field::bool("convergent_encryption", "When encrypt creates the key: make it convergent."),
    BATCH,
    PARTIAL,
];

const DECRYPT_FIELDS: &[Field] = &[
    Field::str("ciphertext", "The `vault:vN:` ciphertext."),
    Field::str("context", "Base64 context, for derived keys."),
    Field::str("nonce", "Ignored (convergent nonces are part of the ciphertext)."),
    Field::str("associated_data", "Base64 associated data given at encryption."),
    BATCH,
    PARTIAL,
];

const REWRAP_FIELDS: &[Field] = &[
    Field::str("ciphertext", "The `vault:vN:` ciphertext."),
    Field::str("context", "Base64 context, for derived keys."),
    Field::str("nonce", "Refused (see encrypt)."),
    Field::int("key_version", "Version to re-encrypt with; 0: latest."),
    Field::str("associated_data", "Base64 associated data, the same for both."),
    BATCH,
];

const DATAKEY_FIELDS: &[Field] = &[
    Field::str(
        "plaintext",
        "`plaintext` (answer the key in clear too) or `wrapped` (only encrypted).",
    ),
    Field::str("context", "Base64 context, for derived keys."),
    Field::str("nonce", "Refused (see encrypt)."),
    Field::int("bits", "Bits of the data key: 128, 256 (default) or 512.")
        .default(Default::Int(256)),
    Field::int("key_version", "Version to encrypt with; 0: latest."),
    Field::str("associated_data", "Base64 associated data."),
];

const RANDOM_FIELDS: &[Field] = &[
    Field::str("source", "Entropy source: platform (default), seal or all; or the byte count."),
    Field::str("urlbytes", "Byte count, in the path."),
    Field::int("bytes", "Bytes to generate (default 32, at most 131072).")
        .default(Default::Int(32)),
    Field::str("format", "base64 (default) or hex.").default(Default::Str("base64")),
];

const HASH_FIELDS: &[Field] = &[
    Field::str("input", "Base64 input."),
    Field::str("urlalgorithm", "Algorithm, in the path."),
    Field::str(
        "algorithm",
        "sha2-224, sha2-256 (default), sha2-384, sha2-512, sha3-256, sha3-384, sha3-512, sha1.",
    )
    .default(Default::Str("sha2-256")),
    Field::str("format", "hex (default) or base64.").default(Default::Str("hex")),
];

const HMAC_FIELDS: &[Field] = &[
    Field::str("input", "Base64 input."),
    Field::str("urlalgorithm", "Algorithm, in the path."),
    Field::str("algorithm", "Hash algorithm (default sha2-256)."),
    Field::str("hash_algorithm", "Hash algorithm (default sha2-256)."),
    Field::int("key_version", "Version; 0: latest."),
    BATCH,
];

const SIGN_FIELDS: &[Field] = &[
    Field::str("input", "Base64 input."),
    Field::str("context", "Base64 context, for derived ed25519 keys."),
    Field::str("urlalgorithm", "Hash algorithm, in the path."),
    Field::str("hash_algorithm", "Hash algorithm (default sha2-256); ignored for ed25519."),
    Field::str("algorithm", "Older name of hash_algorithm."),
    Field::int("key_version", "Version to sign with; 0: latest."),
    Field::bool("prehashed", "The input is already the digest."),
    Field::str("signature_algorithm", "RSA: pss (default) or pkcs1v15."),
    Field::str("marshaling_algorithm", "asn1 (default) or jws.").default(Default::Str("asn1")),
    Field::str(
        "salt_length",
        "RSA-PSS salt length: auto (default) or hash; both mean the digest's length.",
    ),
    BATCH,
];

const VERIFY_FIELDS: &[Field] = &[
    Field::str("input", "Base64 input."),
    Field::str("signature", "The `vault:vN:` signature to check."),
    Field::str("hmac", "The `vault:vN:` HMAC to check."),
    Field::str("context", "Base64 context, for derived ed25519 keys."),
    Field::str("urlalgorithm", "Hash algorithm, in the path."),
    Field::str("hash_algorithm", "Hash algorithm (default sha2-256)."),
    Field::str("algorithm", "Older name of hash_algorithm."),
    Field::bool("prehashed", "The input is already the digest."),
    Field::str("signature_algorithm", "RSA: pss (default) or pkcs1v15."),
    Field::str("marshaling_algorithm", "asn1 (default) or jws.").default(Default::Str("asn1")),
    Field::str("salt_length", "RSA-PSS salt length: auto (default) or hash."),
    BATCH,
];

const EXPORT_FIELDS: &[Field] = &[
    Field::str("type", "encryption-key, signing-key, hmac-key or public-key."),
    Field::str("version", "A version, `latest`, or absent for all."),
    Field::str("format", "Empty (the type's default), raw, der or pem."),
];

const RESTORE_FIELDS: &[Field] = &[
    Field::str("backup", "The backup, as `backup/:name` answered it."),
    Field::bool("force", "Overwrite a key of the same name."),
];

static PATHS: LazyLock<Paths<Transit>> = LazyLock::new(|| {
    Paths::new(vec![
        Path::new("keys", "The named keys.").list(handler!(Transit::list_keys)),
        Path::new("keys/{name}", "A named key: create, read (versions, public keys), delete.")
            .fields(NAME)
            .fields(KEY_FIELDS)
            .read(handler!(Transit::read_key))
            .write(handler!(Transit::create_key))
            .delete(handler!(Transit::delete_key))
            .exists(handler!(Transit::key_exists)),
        Path::new("keys/{name}/config", "A key's settings.")
            .fields(NAME)
            .fields(CONFIG_FIELDS)
            .write(handler!(Transit::config_key)),
        Path::new("keys/{name}/rotate", "Add a new latest version.")
            .fields(NAME)
            .write(handler!(Transit::rotate_key)),
        Path::new("keys/{name}/trim", "Delete versions below min_available_version for good.")
            .fields(NAME)
            .fields(TRIM_FIELDS)
            .write(handler!(Transit::trim_key)),
        Path::new("encrypt/{name}", "Encrypt plaintext (or a batch) with a key.")
            .fields(NAME)
            .fields(ENCRYPT_FIELDS)
            .write(handler!(Transit::encrypt))
            .exists(handler!(Transit::key_exists)),
        Path::new("decrypt/{name}", "Decrypt a ciphertext (or a batch).")
            .fields(NAME)
            .fields(DECRYPT_FIELDS)
            .write(handler!(Transit::decrypt)),
        Path::new("rewrap/{name}", "Re-encrypt ciphertexts with the latest (or a given) version.")
            .fields(NAME)
            .fields(REWRAP_FIELDS)
            .write(handler!(Transit::rewrap)),
        Path::new("datakey/{plaintext}/{name}", "A new data key, encrypted with the named key.")
            .fields(NAME)
            .fields(DATAKEY_FIELDS)
            .write(handler!(Transit::datakey)),
        Path::new("random", "Random bytes.").fields(RANDOM_FIELDS).write(handler!(Transit::random)),
        Path::new("random/{source}", "Random bytes.")
            .fields(RANDOM_FIELDS)
            .write(handler!(Transit::random)),
        Path::new("random/{source}/{urlbytes}", "Random bytes.")
            .fields(RANDOM_FIELDS)
            .write(handler!(Transit::random)),
        Path::new("hash", "Hash of the input.").fields(HASH_FIELDS).write(handler!(Transit::hash)),
        Path::new("hash/{urlalgorithm}", "Hash of the input.")
            .fields(HASH_FIELDS)
            .write(handler!(Transit::hash)),
        Path::new("hmac/{name}", "HMAC of the input with a key.")
            .fields(NAME)
            .fields(HMAC_FIELDS)
            .write(handler!(Transit::hmac)),
        Path::new("hmac/{name}/{urlalgorithm}", "HMAC of the input with a key.")
            .fields(NAME)
            .fields(HMAC_FIELDS)
            .write(handler!(Transit::hmac)),
        Path::new("sign/{name}", "Sign the input with a key.")
            .fields(NAME)
            .fields(SIGN_FIELDS)
            .write(handler!(Transit::sign)),
        Path::new("sign/{name}/{urlalgorithm}", "Sign the input with a key.")
            .fields(NAME)
            .fields(SIGN_FIELDS)
            .write(handler!(Transit::sign)),
        Path::new("verify/{name}", "Verify a signature or an HMAC.")
            .fields(NAME)
            .fields(VERIFY_FIELDS)
            .write(handler!(Transit::verify)),
        Path::new("verify/{name}/{urlalgorithm}", "Verify a signature or an HMAC.")
            .fields(NAME)
            .fields(VERIFY_FIELDS)
            .write(handler!(Transit::verify)),
        Path::new("export/{type}/{name}", "Export every version of an exportable key.")
            .fields(NAME)
            .fields(EXPORT_FIELDS)
            .read(handler!(Transit::export)),
        Path::new("export/{type}/{name}/{version}", "Export one version of an exportable key.")
            .fields(NAME)
            .fields(EXPORT_FIELDS)
            .read(handler!(Transit::export)),
        Path::new("backup/{name}", "A plaintext backup of a key (allow_plaintext_backup).")
            .fields(NAME)
            .read(handler!(Transit::backup)),
        Path::new("restore", "Restore a key from a backup, under its own name.")
            .fields(RESTORE_FIELDS)
            .write(handler!(Transit::restore)),
        Path::new("restore/{name}", "Restore a key from a backup, under this name.")
            .fields(NAME)
            .fields(RESTORE_FIELDS)
            .write(handler!(Transit::restore)),
    ])
    .with_description(
        "Encryption as a service: named keys that never leave the server encrypt, decrypt, \
         sign, verify and HMAC data, in Vault's transit API.",
    )
});

impl Transit {
    pub(crate) fn new(view: View) -> Arc<Self> {
        Arc::new(Self {
            view,
            cache: std::sync::Mutex::new(Cache::default()),
            lock: Mutex::new(()),
            schedule: Mutex::new(Schedule::default()),
        })
    }

    pub(crate) async fn load(&self, name: &str) -> Result<Option<Policy>> {
        check_name(name)?;
        coffer_core::record::load(&self.view, &format!("policy/{name}")).await
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> T {
        // A panic while the lock was held cannot leave the map half-changed (each change is one
        // insert or remove), so a poisoned lock is still usable.
        let mut c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut c)
    }

    /// The key `name` for a request that uses it: from the cache, or loaded and cached.
    pub(crate) async fn cached(&self, name: &str) -> Result<Option<Arc<Policy>>> {
        check_name(name)?;
        let (hit, generation) = self.with_cache(|c| (c.keys.get(name).cloned(), c.generation));
        if hit.is_some() {
            return Ok(hit);
        }
        let Some(p) = self.load(name).await? else { return Ok(None) };
        let p = Arc::new(p);
        self.with_cache(|c| {
            if c.generation == generation {
                c.keys.insert(name.to_owned(), p.clone());
            }
        });
        Ok(Some(p))
    }

    /// Stores `p` and updates the cache and the rotation schedule.
    pub(crate) async fn save(&self, p: &Policy) -> Result<()> {
        let stored =
            self.view.put(&format!("policy/{}", p.name), &coffer_core::record::encode(p)?).await;
        // Whatever the outcome, no reader may keep what it read before this write.
        self.with_cache(|c| {
            c.generation += 1;
            match &stored {
                Ok(()) => c.keys.insert(p.name.clone(), Arc::new(p.clone())),
                Err(_) => c.keys.remove(&p.name),
            };
        });
        stored?;
        let mut s = self.schedule.lock().await;
        match p.next_rotation() {
            Some(at) => s.due.insert(p.name.clone(), at),
            None => s.due.remove(&p.name),
        };
        Ok(())
    }

    /// Drops `name` from the cache and the rotation schedule (the key was deleted).
    pub(crate) async fn forget(&self, name: &str) {
        self.with_cache(|c| {
            c.generation += 1;
            c.keys.remove(name);
        });
        self.schedule.lock().await.due.remove(name);
    }

    /// Rotates every key whose automatic rotation is due at `now`.
    pub(crate) async fn rotate_due(&self, now: u64) -> Result<()> {
        let due: Vec<String> = {
            let mut s = self.schedule.lock().await;
            if s.loaded_at == 0 || now.saturating_sub(s.loaded_at) >= SCHEDULE_REFRESH_SECS {
                drop(s);
                let fresh = self.load_schedule().await?;
                s = self.schedule.lock().await;
                s.due = fresh;
                s.loaded_at = now.max(1);
            }
            s.due.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect()
        };
        for name in due {
            let _g = self.lock.lock().await;
            // Read again under the lock: a manual rotation or a config change may have moved it.
            let Some(mut p) = self.load(&name).await? else {
                self.forget(&name).await;
                continue;
            };
            if p.next_rotation().is_some_and(|at| at <= now) {
                p = tokio::task::spawn_blocking(move || p.rotate_at(now).map(|()| p))
                    .await
                    .map_err(|e| {
                        Error::Internal(format!("transit: key generation task failed: {e}"))
                    })??;
                self.save(&p).await?;
                tracing::info!(key = %name, version = p.latest_version, "transit key rotated automatically");
            } else {
                self.save(&p).await?;
            }
        }
        Ok(())
    }

    async fn load_schedule(&self) -> Result<HashMap<String, u64>> {
        let mut due = HashMap::new();
        for name in self.view.list("policy/").await? {
            if let Some(p) = self.load(&name).await?
                && let Some(at) = p.next_rotation()
            {
                due.insert(name, at);
            }
        }
        Ok(due)
    }
}

/// A batch's `batch_input`: `None` when absent; each item must be an object.
pub(crate) fn batch_items(data: &Map<String, Value>) -> Result<Option<Vec<Map<String, Value>>>> {
    match data.get("batch_input") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            if a.is_empty() {
                return Err(Error::invalid("missing batch input to process"));
            }
            a.iter()
                .map(|v| {
                    v.as_object().cloned().ok_or_else(|| {
                        Error::invalid("failed to parse batch input: every item must be an object")
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        }
        Some(_) => Err(Error::invalid("failed to parse batch input: expected a list of objects")),
    }
}

/// A batch's answer: 200 when every item succeeded; else Vault's status (400 for a caller's
/// error, 500 for only server errors, or `partial_failure_response_code` when some succeeded),
/// with the whole envelope as the body, as Vault's `RespondWithStatusCode` does.
pub(crate) fn batch_response(
    request_id: &str,
    results: Vec<Value>,
    errors: &[Option<bool>],
    partial_code: Option<u64>,
) -> Response {
    let mut data = Map::new();
    data.insert("batch_results".into(), Value::Array(results));
    let user = errors.contains(&Some(true));
    let internal = errors.contains(&Some(false));
    if !user && !internal {
        return Response::data(data);
    }
    let mut status: u16 = if user { 400 } else { 500 };
    let mut warnings = Value::Null;
    let some_ok = errors.iter().any(Option::is_none);
    if let Some(code) = partial_code.filter(|_| some_ok) {
        match u16::try_from(code).ok().filter(|c| (1..=599).contains(c)) {
            Some(c) => status = c,
            None => {
                warnings = json!([format!(
                    "invalid HTTP response code override from partial_failure_response_code, reverting to {status}"
                )])
            }
        }
    }
    Response::raw(
        status,
        json!({
            "request_id": request_id,
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": warnings,
            "auth": null,
            "mount_type": "transit",
        }),
    )
}

#[async_trait]
impl Framework for Transit {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod vectors;
