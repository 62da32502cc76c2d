//! The persisted cache (`cache { persist { path, key_path } }`): what the agent needs to carry on
//! after a restart while the server cannot be reached: its token and the secrets its templates
//! read, with their leases. It is sealed with AES-256-GCM under a key kept in another file, which
//! must be on a memory filesystem (a container restart keeps a pod's memory-backed `emptyDir`; a
//! copy of the cache's volume, a backup or a node's disk holds ciphertext only) and never in the
//! cache's directory. A leased secret whose lease has ended is dropped on load, never served.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::config::PersistConfig;
use crate::delivery::{self, Owner};

const AAD: &[u8] = b"coffer-agent-cache-v1";

/// The token as cached; `secret` is wiped on drop.
#[derive(Serialize, Deserialize)]
pub(crate) struct CachedToken {
    pub(crate) secret: Zeroizing<String>,
    pub(crate) accessor: String,
    /// Unix seconds; 0 for a token without a TTL.
    pub(crate) expires: u64,
    pub(crate) ttl: u64,
    pub(crate) renewable: bool,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CachedLease {
    pub(crate) id: String,
    pub(crate) issued: u64,
    pub(crate) expires: u64,
    pub(crate) renew: bool,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CachedSecret {
    pub(crate) path: String,
    pub(crate) args: Vec<(String, String)>,
    /// A `pkiCert` certificate (absent from caches written before there was one).
    #[serde(default)]
    pub(crate) pki: bool,
    pub(crate) value: Value,
    pub(crate) lease: Option<CachedLease>,
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct Contents {
    pub(crate) token: Option<CachedToken>,
    pub(crate) secrets: Vec<CachedSecret>,
}

impl Drop for Contents {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for s in &mut self.secrets {
            crate::secret::ValueBox(std::mem::take(&mut s.value)).zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    version: u32,
    nonce: String,
    ciphertext: String,
}

pub(crate) struct Cache {
    cfg: PersistConfig,
    key: LessSafeKey,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An `Instant` for a unix time (`now` if it has passed).
pub(crate) fn instant_at(unix_secs: u64) -> Instant {
    let left = UNIX_EPOCH + Duration::from_secs(unix_secs);
    Instant::now() + left.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

impl Cache {
    /// Opens (or creates) the key; checks where key and cache live.
    pub(crate) fn open(cfg: &PersistConfig) -> Result<Self> {
        let key_dir = delivery::prepare_dir(
            &cfg.key_path,
            true,
            cfg.allow_disk,
            Owner::default(),
            "cache.persist.key_path",
        )?;
        delivery::prepare_dir(&cfg.path, true, true, Owner::default(), "cache.persist.path")?;
        let _ = key_dir;
        let raw = match std::fs::read(&cfg.key_path) {
            Ok(b) => Zeroizing::new(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                aws_lc_rs::rand::fill(&mut k)
                    .map_err(|_| anyhow!("no randomness for the cache key"))?;
                delivery::write_atomic(&cfg.key_path, &k, 0o400, Owner::default())?;
                // A new key makes an old cache unreadable: remove it rather than fail on it.
                let _ = delivery::remove(&cfg.path);
                k
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", cfg.key_path.display()));
            }
        };
        if raw.len() != 32 {
            bail!("{} is not a cache key (32 bytes)", cfg.key_path.display());
        }
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| anyhow!("bad cache key"))?,
        );
        Ok(Self { cfg: cfg.clone(), key })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.cfg.path
    }

    pub(crate) fn save(&self, c: &Contents) -> Result<()> {
        let mut plain = Zeroizing::new(serde_json::to_vec(c)?);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow!("no randomness for the cache"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut *plain,
            )
            .map_err(|_| anyhow!("cannot seal the cache"))?;
        let sealed =
            Sealed { version: 1, nonce: B64.encode(nonce), ciphertext: B64.encode(&*plain) };
        delivery::write_atomic(
            &self.cfg.path,
            &serde_json::to_vec(&sealed)?,
            0o600,
            Owner::default(),
        )?;
        Ok(())
    }

    /// The cache's contents, without anything expired; `None` when there is no cache yet.
    pub(crate) fn load(&self) -> Result<Option<Contents>> {
        let bytes = match std::fs::read(&self.cfg.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.cfg.path.display()));
            }
        };
        let sealed: Sealed = serde_json::from_slice(&bytes).context("the cache file is damaged")?;
        if sealed.version != 1 {
            bail!("the cache file has version {}, this agent reads version 1", sealed.version);
        }
        let nonce: [u8; NONCE_LEN] = B64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| anyhow!("the cache file is damaged"))?;
        let mut buf =
            Zeroizing::new(B64.decode(&sealed.ciphertext).context("the cache file is damaged")?);
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(AAD), &mut buf)
            .map_err(|_| {
                anyhow!("the cache cannot be opened with this key (another key, or tampered with)")
            })?;
        let mut c: Contents = serde_json::from_slice(plain).context("the cache file is damaged")?;
        let now = unix(SystemTime::now());
        if c.token.as_ref().is_some_and(|t| t.expires != 0 && t.expires <= now) {
            c.token = None;
        }
        c.secrets.retain(|s| s.lease.as_ref().is_none_or(|l| l.expires > now));
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(dir: &Path) -> PersistConfig {
        PersistConfig {
            path: dir.join("cache/agent.cache"),
            key_path: dir.join("key/agent.key"),
            allow_disk: true,
        }
    }

    #[test]
    fn round_trips_and_drops_what_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cache::open(&cfg(dir.path())).expect("open");
        let now = unix(SystemTime::now());
        let contents = Contents {
            token: Some(CachedToken {
                secret: Zeroizing::new("token-canary-1".into()),
                accessor: "acc".into(),
                expires: now + 600,
                ttl: 600,
                renewable: true,
            }),
            secrets: vec![
                CachedSecret {
                    path: "secret/data/a".into(),
                    args: vec![],
                    pki: false,
                    value: json!({"Data": {"v": "kv-canary"}}),
                    lease: None,
                },
                CachedSecret {
                    path: "database/creds/live".into(),
                    args: vec![],
                    pki: false,
                    value: json!({"Data": {"password": "live-canary"}}),
                    lease: Some(CachedLease {
                        id: "l1".into(),
                        issued: 60,
                        expires: now + 60,
                        renew: true,
                    }),
                },
                CachedSecret {
                    path: "database/creds/dead".into(),
                    args: vec![],
                    pki: false,
                    value: json!({"Data": {"password": "dead-canary"}}),
                    lease: Some(CachedLease {
                        id: "l2".into(),
                        issued: 60,
                        expires: now - 1,
                        renew: true,
                    }),
                },
            ],
        };
        c.save(&contents).expect("save");
        let on_disk = std::fs::read_to_string(dir.path().join("cache/agent.cache")).expect("read");
        for canary in ["token-canary-1", "kv-canary", "live-canary", "dead-canary"] {
            assert!(!on_disk.contains(canary), "cleartext in the cache file");
        }
        let back =
            Cache::open(&cfg(dir.path())).expect("reopen").load().expect("load").expect("some");
        assert_eq!(back.token.as_ref().map(|t| t.secret.as_str()), Some("token-canary-1"));
        let paths: Vec<&str> = back.secrets.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(
            paths,
            ["secret/data/a", "database/creds/live"],
            "an ended lease is never loaded"
        );
    }

    #[test]
    fn another_key_or_a_flipped_byte_cannot_open_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cache::open(&cfg(dir.path())).expect("open");
        c.save(&Contents::default()).expect("save");
        let path = dir.path().join("cache/agent.cache");
        let mut sealed: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let mut ct = B64.decode(sealed["ciphertext"].as_str().expect("ct")).expect("b64");
        ct[0] ^= 1;
        sealed["ciphertext"] = json!(B64.encode(&ct));
        std::fs::write(&path, serde_json::to_vec(&sealed).expect("json")).expect("write");
        let err = c.load().err().expect("refused");
        assert!(format!("{err}").contains("cannot be opened"), "{err}");
        // A new key (the old one lost) discards the old cache instead of failing on it.
        std::fs::remove_file(dir.path().join("key/agent.key")).expect("rm key");
        let c2 = Cache::open(&cfg(dir.path())).expect("new key");
        assert!(c2.load().expect("load").is_none());
    }

    #[test]
    fn the_key_must_be_on_a_memory_filesystem() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tempdir on disk");
        let mut c = cfg(dir.path());
        c.allow_disk = false;
        let err = Cache::open(&c).err().expect("refused");
        assert!(format!("{err:#}").contains("disk-backed"), "{err:#}");
    }
}
