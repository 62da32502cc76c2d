//! `sys/rekey`: a new unseal key, split anew, from a quorum of the current shares, as Vault does
//! it: `init` (the new `secret_shares`/`secret_threshold`, optionally `require_verification`),
//! `update` with the current shares and the attempt's nonce, and, when verification was asked,
//! `verify` with a threshold of the *new* shares before they take effect.
//!
//! Guarantees: nothing changes until the current shares were checked to combine to this server's
//! unseal key; with verification, nothing changes until the new shares were shown to combine to
//! the new key; the switch itself is one atomic write (see `Barrier::rekey`), after which only
//! the new shares unseal. The root key, the keyring and every stored value stay as they are.
//! Shares live in zeroizing buffers, in memory only, and go with the attempt or with sealing.
//! Every call is audited with its fields, and the new shares in the answer, as HMACs.
//!
//! `sys/rekey-recovery-key/init|update|verify` do the same for the recovery key of an
//! auto-unseal server (its shares prove the quorum, and the new shares replace them; the
//! wrapped unseal key stays), as Vault; on a Shamir server they answer 400 `recovery rekeying not
//! supported`. Each kind has its own attempt; the listener option that serves `sys/rekey/*`
//! serves both, as OpenBao's `disable_unauthed_rekey_endpoints`.
//!
//! Not here: PGP-encrypted shares (`pgp_keys`, refused with a 400) and so `backup`, which Vault
//! allows only with PGP keys.

use base64::Engine as _;
use coffer_barrier::{NewUnsealKey, SealConfig};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::Ctx;
use crate::hex::hex;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};

/// One rekey under way.
pub(crate) struct Attempt {
    nonce: String,
    config: SealConfig,
    verification_required: bool,
    progress: Vec<Zeroizing<Vec<u8>>>,
    /// After the update step, with verification: the new key, waiting for its shares.
    pending: Option<Pending>,
}

struct Pending {
    nonce: String,
    key: NewUnsealKey,
    progress: Vec<Zeroizing<Vec<u8>>>,
}

/// The unseal key (`sys/rekey`) or the recovery key (`sys/rekey-recovery-key`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Barrier,
    Recovery,
}

impl Kind {
    fn slot<'a>(self, ctx: &'a Ctx<'_>) -> &'a tokio::sync::Mutex<Option<Attempt>> {
        match self {
            Kind::Barrier => &ctx.active.rekey,
            Kind::Recovery => &ctx.active.rekey_recovery,
        }
    }
}

/// The threshold of the current shares (for `Recovery`, of the recovery key's).
async fn current_threshold(ctx: &Ctx<'_>, kind: Kind) -> Result<u8> {
    match ctx.core.barrier.seal_config().await? {
        Some(c) if kind == Kind::Recovery && c.seal_type == "shamir" => {
            Err(Error::invalid("recovery rekeying not supported"))
        }
        Some(c) => Ok(c.secret_threshold),
        None => Err(Error::invalid("server is not yet initialized")),
    }
}

fn status(a: Option<&Attempt>, required: u8) -> Value {
    let mut v = json!({
        "nonce": a.map(|a| a.nonce.as_str()).unwrap_or(""),
        "started": a.is_some(),
        "t": a.map(|a| a.config.secret_threshold).unwrap_or(0),
        "n": a.map(|a| a.config.secret_shares).unwrap_or(0),
        "progress": a.map(|a| a.progress.len()).unwrap_or(0),
        "required": required,
        "pgp_fingerprints": Value::Null,
        "backup": false,
        "verification_required": a.is_some_and(|a| a.verification_required),
    });
    // Vault leaves it out when empty.
    if let Some(p) = a.and_then(|a| a.pending.as_ref()) {
        v["verification_nonce"] = json!(p.nonce);
    }
    v
}

fn verify_status(a: &Attempt) -> Value {
    json!({
        "nonce": a.pending.as_ref().map(|p| p.nonce.as_str()).unwrap_or(""),
        "started": a.pending.is_some(),
        "t": a.config.secret_threshold,
        "n": a.config.secret_shares,
        "progress": a.pending.as_ref().map(|p| p.progress.len()).unwrap_or(0),
    })
}

/// `sys/rekey/init`, `update`, `verify` and `backup`, and `sys/rekey-recovery-key/init`,
/// `update` and `verify`; `None` for any other path.
pub(crate) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    use Operation::*;
    let rel = rel.trim_end_matches('/');
    let (kind, rel) = match rel.strip_prefix("rekey-recovery-key/") {
        Some("init") => (Kind::Recovery, "rekey/init"),
        Some("update") => (Kind::Recovery, "rekey/update"),
        Some("verify") => (Kind::Recovery, "rekey/verify"),
        Some(_) => return Ok(None),
        None => (Kind::Barrier, rel),
    };
    let f = Fields::new(&ctx.req.data);
    let write = matches!(ctx.op(), Create | Update);
    let resp = match (rel, ctx.op()) {
        ("rekey/init", Read) => {
            let required = current_threshold(ctx, kind).await?;
            Response::raw(200, status(kind.slot(ctx).lock().await.as_ref(), required))
        }
        ("rekey/init", _) if write => init(ctx, kind, &f).await?,
        ("rekey/init", Delete) => {
            *kind.slot(ctx).lock().await = None;
            Response::empty()
        }
        ("rekey/update", _) if write => update(ctx, kind, &f).await?,
        ("rekey/verify", Read) => {
            current_threshold(ctx, kind).await?;
            let r = kind.slot(ctx).lock().await;
            let a = r.as_ref().ok_or_else(|| Error::invalid("no rekey configuration found"))?;
            Response::raw(200, verify_status(a))
        }
        ("rekey/verify", _) if write => verify(ctx, kind, &f).await?,
        ("rekey/verify", Delete) => {
            let mut r = kind.slot(ctx).lock().await;
            let a = r.as_mut().ok_or_else(|| Error::invalid("no rekey configuration found"))?;
            if let Some(p) = a.pending.as_mut() {
                p.progress.clear();
                p.nonce = crate::random::uuid_v4();
            }
            Response::raw(200, verify_status(a))
        }
        // Backups exist only of PGP-encrypted shares, which Coffer does not make.
        ("rekey/backup", Read) => return Err(Error::invalid("no backed-up keys found")),
        ("rekey/backup", Delete) => Response::empty(),
        ("rekey/init" | "rekey/update" | "rekey/verify" | "rekey/backup", _) => {
            return Err(Error::UnsupportedOperation);
        }
        _ => return Ok(None),
    };
    Ok(Some(resp))
}

async fn init(ctx: &Ctx<'_>, kind: Kind, f: &Fields<'_>) -> Result<Response> {
    let pgp = f.list("pgp_keys")?.is_some_and(|k| k.iter().any(|s| !s.is_empty()));
    if f.bool("backup")?.unwrap_or(false) && !pgp {
        return Err(Error::invalid(
            "cannot request a backup of the new keys without providing PGP keys for encryption",
        ));
    }
    if pgp {
        return Err(Error::invalid(
            "pgp_keys: PGP-encrypted key shares are not supported by Coffer",
        ));
    }
    let shares = f.u64("secret_shares")?.unwrap_or(0);
    let threshold = f.u64("secret_threshold")?.unwrap_or(0);
    // Vault's checks, in its order and words (it answers them with a 500; Coffer with a 400).
    let invalid = match (shares, threshold) {
        (0, _) => Some("shares must be at least one"),
        (_, 0) => Some("threshold must be at least one"),
        (s, t) if s > 1 && t < 2 => Some("threshold must be greater than one for multiple shares"),
        (s, _) if s > 255 => Some("shares must be less than 256"),
        (_, t) if t > 255 => Some("threshold must be less than 256"),
        (s, t) if t > s => Some("threshold cannot be larger than shares"),
        _ => None,
    };
    if let Some(m) = invalid {
        return Err(Error::invalid(format!("invalid rekey seal configuration: {m}")));
    }
    let config = SealConfig::shamir(shares, threshold).map_err(|e| match e {
        coffer_barrier::Error::InvalidSealConfig(m) => {
            Error::invalid(format!("invalid rekey seal configuration: {m}"))
        }
        other => Error::from(other),
    })?;
    let verification_required = f.bool("require_verification")?.unwrap_or(false);
    let required = current_threshold(ctx, kind).await?;
    let mut r = kind.slot(ctx).lock().await;
    if r.is_some() {
        return Err(Error::invalid("rekey already in progress"));
    }
    let nonce = crate::random::uuid_v4();
    tracing::info!(
        nonce = %nonce,
        shares,
        threshold,
        verification_required,
        recovery_key = kind == Kind::Recovery,
        "rekey initialized"
    );
    *r =
        Some(Attempt { nonce, config, verification_required, progress: Vec::new(), pending: None });
    Ok(Response::raw(200, status(r.as_ref(), required)))
}

fn new_shares_body(nonce: &str, key: &NewUnsealKey, verification_nonce: Option<&str>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut v = json!({
        "nonce": nonce,
        "complete": true,
        "keys": key.shares.iter().map(|k| hex(k)).collect::<Vec<_>>(),
        "keys_base64": key.shares.iter().map(|k| b64.encode(k.as_slice())).collect::<Vec<_>>(),
        "pgp_fingerprints": Value::Null,
        "backup": false,
        "verification_required": verification_nonce.is_some(),
    });
    if let Some(n) = verification_nonce {
        v["verification_nonce"] = json!(n);
    }
    v
}

async fn update(ctx: &Ctx<'_>, kind: Kind, f: &Fields<'_>) -> Result<Response> {
    let key = super::required_share(f, "")?;
    let nonce = f.str("nonce")?.unwrap_or_default();
    let required = current_threshold(ctx, kind).await?;
    let mut r = kind.slot(ctx).lock().await;
    let Some(a) = r.as_mut() else {
        return Err(Error::invalid(match kind {
            Kind::Barrier => "no barrier rekey in progress",
            Kind::Recovery => "no recovery rekey in progress",
        }));
    };
    if let Some(p) = &a.pending {
        return Err(Error::invalid(format!(
            "rekey operation already finished; verification must be performed; nonce for the \
             verification operation is \"{}\"",
            p.nonce
        )));
    }
    if !crate::secret::ct_eq(nonce.as_bytes(), a.nonce.as_bytes()) {
        return Err(Error::invalid(format!(
            "incorrect nonce supplied; nonce for this rekey operation is \"{}\"",
            a.nonce
        )));
    }
    if a.progress.iter().any(|s| crate::secret::ct_eq(s, &key)) {
        return Err(Error::invalid(
            "given key has already been provided during this generation operation",
        ));
    }
    a.progress.push(key);
    if a.progress.len() < required as usize {
        return Ok(Response::raw(200, status(Some(a), required)));
    }
    // The shares are spent whatever the outcome: a wrong set starts the count again.
    let shares = std::mem::take(&mut a.progress);
    if let Err(e) = ctx.core.barrier.verify_unseal_shares(&shares).await {
        tracing::warn!("rekey: the key shares are wrong");
        return Err(match e {
            coffer_barrier::Error::WrongKey | coffer_barrier::Error::InvalidShare(_) => {
                Error::invalid(
                    "root key verification failed: the key shares do not combine to this \
                     server's unseal key",
                )
            }
            other => Error::from(other),
        });
    }
    let new = NewUnsealKey::generate(&a.config)?;
    if a.verification_required {
        let vnonce = crate::random::uuid_v4();
        let body = new_shares_body(&nonce, &new, Some(&vnonce));
        a.pending = Some(Pending { nonce: vnonce, key: new, progress: Vec::new() });
        return Ok(Response::raw(200, body));
    }
    commit(ctx, kind, &new).await?;
    *r = None;
    Ok(Response::raw(200, new_shares_body(&nonce, &new, None)))
}

async fn verify(ctx: &Ctx<'_>, kind: Kind, f: &Fields<'_>) -> Result<Response> {
    let key = super::required_share(f, "")?;
    let nonce = f.str("nonce")?.unwrap_or_default();
    let mut r = kind.slot(ctx).lock().await;
    let Some(a) = r.as_mut() else {
        return Err(Error::invalid("no rekey in progress"));
    };
    let threshold = a.config.secret_threshold as usize;
    let Some(p) = a.pending.as_mut() else {
        return Err(Error::invalid("no rekey verification in progress"));
    };
    if !crate::secret::ct_eq(nonce.as_bytes(), p.nonce.as_bytes()) {
        return Err(Error::invalid(format!(
            "incorrect nonce supplied; nonce for this verify operation is \"{}\"",
            p.nonce
        )));
    }
    if p.progress.iter().any(|s| crate::secret::ct_eq(s, &key)) {
        return Err(Error::invalid(
            "given key has already been provided during this verify operation",
        ));
    }
    p.progress.push(key);
    if p.progress.len() < threshold {
        return Ok(Response::raw(200, verify_status(a)));
    }
    let shares = std::mem::take(&mut p.progress);
    if !p.key.combines_from(&shares) {
        // As Vault does: a failed verification starts over under a new nonce.
        p.nonce = crate::random::uuid_v4();
        tracing::warn!("rekey verification failed");
        return Err(Error::invalid("rekey verification failed; incorrect key shares supplied"));
    }
    let done_nonce = p.nonce.clone();
    commit(ctx, kind, &p.key).await?;
    *r = None;
    Ok(Response::raw(200, json!({ "nonce": done_nonce, "complete": true })))
}

/// The switch, serialized with seal, unseal and rotation.
async fn commit(ctx: &Ctx<'_>, kind: Kind, new: &NewUnsealKey) -> Result<()> {
    let _g = ctx.core.admin_lock.lock().await;
    let what = match kind {
        Kind::Barrier => {
            ctx.core.barrier.rekey(new).await?;
            "rekey complete: the unseal key was replaced"
        }
        Kind::Recovery => {
            ctx.core.barrier.rekey_recovery(new).await?;
            "recovery key rekey complete: the recovery key was replaced"
        }
    };
    tracing::info!(
        shares = new.config().secret_shares,
        threshold = new.config().secret_threshold,
        "{what}"
    );
    Ok(())
}
