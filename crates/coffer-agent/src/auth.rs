//! Auto-auth: turns the bootstrap credential into a token and keeps one valid. The token is
//! renewed at about two thirds of its TTL; when renewal fails for good (revoked, expired, at its
//! max TTL) the agent logs in again, with exponential backoff and jitter between failed attempts.
//! Each new token is written to the sinks and handed to the renderer, which reads every secret
//! again with it (a revoked token's leases are gone with it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;

use crate::backoff::Backoff;
use crate::config::{Method, MethodConfig, SinkConfig};
use crate::conn::{Conn, is_unreachable};
use crate::delivery;
use crate::secret::ValueBox;
use crate::status::{AuthState, Status};

/// A token the agent holds. Its `Debug` leaves the token out.
pub(crate) struct Token {
    pub(crate) secret: Zeroizing<String>,
    pub(crate) accessor: String,
    pub(crate) ttl: Duration,
    pub(crate) renewable: bool,
    pub(crate) obtained: Instant,
    /// Counts logins, so the renderer can tell a new token from a renewed one.
    pub(crate) generation: u64,
    /// When the token ends as of its last renewal (unix seconds; 0: no TTL), for the persisted
    /// cache.
    pub(crate) expires_unix: std::sync::atomic::AtomicU64,
}

impl Token {
    pub(crate) fn expires_unix(&self) -> u64 {
        self.expires_unix.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn unix_in(d: Duration) -> u64 {
    if d.is_zero() { 0 } else { crate::cache::unix(SystemTime::now() + d) }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("accessor", &self.accessor)
            .field("ttl", &self.ttl)
            .field("renewable", &self.renewable)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

pub(crate) type TokenRx = watch::Receiver<Option<Arc<Token>>>;

/// Logs in with one method. Keeps what must survive between logins: a secret ID read from a file
/// that was removed after reading (Vault Agent does the same).
pub(crate) struct Authenticator {
    method: MethodConfig,
    conn: Conn,
    cached_secret_id: Option<Zeroizing<String>>,
}

impl Authenticator {
    pub(crate) fn new(method: MethodConfig, conn: Conn) -> Self {
        Self { method, conn, cached_secret_id: None }
    }

    pub(crate) async fn login(&mut self) -> Result<(Zeroizing<String>, Value)> {
        let mount = &self.method.mount_path;
        let login = format!("{mount}/login");
        let body = match &self.method.kind {
            Method::AppRole {
                role_id_file_path,
                secret_id_file_path,
                remove_secret_id_file_after_reading,
                secret_id_response_wrapping_path,
                kubernetes_token_path,
            } => {
                let role_id = read_secret_file(role_id_file_path, "role ID")?;
                let mut body = json!({ "role_id": role_id.as_str() });
                if let Some(p) = kubernetes_token_path {
                    // Read anew at each login: the kubelet rotates projected tokens.
                    let jwt = read_secret_file(p, "service account token")?;
                    body["kubernetes_jwt"] = Value::String(jwt.to_string());
                }
                if let Some(p) = secret_id_file_path {
                    let secret_id = match read_secret_file(p, "secret ID") {
                        Ok(from_file) => {
                            let id = match secret_id_response_wrapping_path {
                                Some(expected) => {
                                    self.unwrap_secret_id(&from_file, expected).await?
                                }
                                None => from_file,
                            };
                            // Kept first: a wrapped secret ID cannot be unwrapped twice, and a
                            // file on a read-only volume (a Kubernetes Secret) cannot be removed.
                            self.cached_secret_id = Some(id.clone());
                            if *remove_secret_id_file_after_reading {
                                remove_bootstrap_file(p, "secret ID");
                            }
                            id
                        }
                        Err(e) => match &self.cached_secret_id {
                            Some(id) => id.clone(),
                            None => return Err(e),
                        },
                    };
                    body["secret_id"] = Value::String(secret_id.to_string());
                }
                body
            }
            Method::Jwt { role, path, remove_jwt_after_reading } => {
                let jwt = read_secret_file(path, "JWT")?;
                if *remove_jwt_after_reading {
                    remove_bootstrap_file(path, "JWT");
                }
                json!({ "role": role, "jwt": jwt.as_str() })
            }
            Method::Kubernetes { role, token_path } => {
                let jwt = read_secret_file(token_path, "service account token")?;
                json!({ "role": role, "jwt": jwt.as_str() })
            }
            Method::Cert { name } => match name {
                Some(n) => json!({ "name": n }),
                None => json!({}),
            },
            Method::TokenFile { token_file_path } => {
                let token = read_secret_file(token_file_path, "token")?;
                let a = self.conn.call(Some(&token), "GET", "auth/token/lookup-self", None).await?;
                let d = a.data().cloned().unwrap_or_default();
                let auth = json!({
                    "accessor": d.get("accessor").cloned().unwrap_or_default(),
                    "lease_duration": d.get("ttl").cloned().unwrap_or(json!(0)),
                    "renewable": d.get("renewable").cloned().unwrap_or(json!(false)),
                });
                return Ok((token, auth));
            }
        };
        let mut body = body;
        if let Some(p) = &self.method.image_signature_path {
            // Public (a signature of the image digest), read anew at each login.
            let sig = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the image signature file {}", p.display()))?;
            body["image_signature"] = Value::String(sig);
        }
        let body = Zeroizing::new(ValueBox(body));
        let a = self.conn.call(None, "POST", &login, Some(&body.0)).await?;
        let mut auth = a
            .body
            .and_then(|mut b| b.get_mut("auth").map(Value::take))
            .filter(Value::is_object)
            .ok_or_else(|| anyhow!("the login at {login} answered without a token"))?;
        let token = match auth.get_mut("client_token").map(Value::take) {
            Some(Value::String(t)) => Zeroizing::new(t),
            _ => bail!("the login at {login} answered without a token"),
        };
        Ok((token, auth))
    }

    /// The secret-ID file holds a wrapping token: check that it wraps what it should (its creation
    /// path; anything else means someone swapped it), then unwrap it, once.
    async fn unwrap_secret_id(
        &self,
        wrapping_token: &str,
        expected_path: &str,
    ) -> Result<Zeroizing<String>> {
        let look = self
            .conn
            .call(None, "POST", "sys/wrapping/lookup", Some(&json!({ "token": wrapping_token })))
            .await
            .context("the wrapped secret ID's token is not valid (used already, or expired)")?;
        let created = look
            .data()
            .and_then(|d| d.get("creation_path"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if created.trim_matches('/') != expected_path.trim_matches('/') {
            bail!(
                "the wrapped secret ID was created at {created:?}, not at secret_id_response_wrapping_path {expected_path:?}: refusing it"
            );
        }
        let a = self
            .conn
            .call(Some(wrapping_token), "POST", "sys/wrapping/unwrap", None)
            .await
            .context("cannot unwrap the secret ID")?;
        match a.data().and_then(|d| d.get("secret_id")).and_then(Value::as_str) {
            Some(s) => Ok(Zeroizing::new(s.to_owned())),
            None => bail!("the wrapping token did not wrap a secret ID"),
        }
    }
}

/// Removes a bootstrap credential file after reading it; a file that cannot be removed (a
/// read-only volume) is left, with a warning, as Vault Agent does.
fn remove_bootstrap_file(path: &Path, what: &str) {
    if let Err(e) = delivery::remove(path) {
        tracing::warn!(error = %format!("{e:#}"), "cannot remove the {what} file after reading it");
    }
}

fn read_secret_file(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let raw = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?,
    );
    let v = raw.trim();
    if v.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(Zeroizing::new(v.to_owned()))
}

/// What the renderer or anyone else may ask of the auth loop.
#[derive(Default)]
pub(crate) struct AuthSignals {
    /// A request was refused with 403: check whether the token still works.
    pub(crate) check_token: Notify,
}

/// Logs in, writes sinks, renews, and logs in again, for as long as the agent runs. Returns only
/// on a failure the configuration says to exit on.
pub(crate) async fn run(
    mut auth: Authenticator,
    sinks: Vec<SinkConfig>,
    conn: Conn,
    status: Status,
    tx: watch::Sender<Option<Arc<Token>>>,
    signals: Arc<AuthSignals>,
    cached: Option<Token>,
) -> Result<()> {
    let mut backoff = Backoff::new(auth.method.min_backoff, auth.method.max_backoff);
    let mut generation = 1;
    // A token from the persisted cache is used until it no longer works: the bootstrap
    // credential may have been single-use.
    if let Some(t) = cached {
        let token = Arc::new(t);
        status.auth(
            AuthState::Authenticated,
            (token.expires_unix() != 0)
                .then(|| std::time::UNIX_EPOCH + Duration::from_secs(token.expires_unix())),
        );
        tracing::info!(accessor = %token.accessor, "using the token from the persisted cache");
        let _ = tx.send(Some(token.clone()));
        keep_alive(&token, &conn, &status, &signals, &tx).await;
        tracing::info!(accessor = %token.accessor, "the cached token can no longer be used: logging in");
    }
    loop {
        status.auth(AuthState::Authenticating, None);
        let (secret, info) = match auth.login().await {
            Ok(t) => t,
            Err(e) => {
                status.count(|c| &c.auth_failures);
                status.auth(AuthState::Failed, None);
                if auth.method.exit_on_err {
                    return Err(e.context("login failed (exit_on_err is set)"));
                }
                let wait = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "login failed");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        backoff.reset();
        // The same token again (a token file): not a new login, nothing to fetch anew.
        let same = tx.borrow().as_ref().is_some_and(|t| *t.secret == *secret);
        if !same {
            generation += 1;
        }
        let ttl =
            Duration::from_secs(info.get("lease_duration").and_then(Value::as_u64).unwrap_or(0));
        let token = Arc::new(Token {
            secret,
            accessor: info.get("accessor").and_then(Value::as_str).unwrap_or_default().to_owned(),
            ttl,
            renewable: info.get("renewable").and_then(Value::as_bool).unwrap_or(false),
            obtained: Instant::now(),
            generation,
            expires_unix: unix_in(ttl).into(),
        });
        status.count(|c| &c.auth_successes);
        status.auth(AuthState::Authenticated, (!ttl.is_zero()).then(|| SystemTime::now() + ttl));
        tracing::info!(accessor = %token.accessor, ttl = ?ttl, method = auth.method.kind.type_name(), "logged in");
        for s in &sinks {
            if let Err(e) = write_sink(s, &token.secret) {
                tracing::error!(error = %format!("{e:#}"), sink = %s.path.display(), "cannot write the token sink");
            }
        }
        let _ = tx.send(Some(token.clone()));
        keep_alive(&token, &conn, &status, &signals, &tx).await;
        tracing::info!(accessor = %token.accessor, "the token can no longer be used: logging in again");
    }
}

/// Renews `token` until it cannot be kept any longer; returns when a new login is needed.
async fn keep_alive(
    token: &Token,
    conn: &Conn,
    status: &Status,
    signals: &AuthSignals,
    tx: &watch::Sender<Option<Arc<Token>>>,
) {
    let mut expires = token.obtained + token.ttl;
    let mut ttl = token.ttl;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        // A token without a TTL never needs renewing; still look now and then whether it
        // was revoked.
        let next = if ttl.is_zero() {
            Instant::now() + Duration::from_secs(300)
        } else {
            let left = expires.saturating_duration_since(Instant::now());
            Instant::now() + crate::backoff::jitter(left.mul_f64(2.0 / 3.0), 0.1)
        };
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = signals.check_token.notified() => {
                match conn.call(Some(&token.secret), "GET", "auth/token/lookup-self", None).await {
                    Err(coffer_api::Error::Api { status: 403, .. }) => return,
                    _ => continue,
                }
            }
        }
        if ttl.is_zero() {
            match conn.call(Some(&token.secret), "GET", "auth/token/lookup-self", None).await {
                Err(coffer_api::Error::Api { status: 403, .. }) => return,
                _ => continue,
            }
        }
        if !token.renewable {
            return;
        }
        match conn
            .call(Some(&token.secret), "POST", "auth/token/renew-self", Some(&json!({})))
            .await
        {
            Ok(a) => {
                backoff.reset();
                status.count(|c| &c.token_renewals);
                let granted = a
                    .body
                    .as_ref()
                    .and_then(|b| b.pointer("/auth/lease_duration"))
                    .and_then(Value::as_u64)
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::ZERO);
                if granted.is_zero() {
                    return;
                }
                expires = Instant::now() + granted;
                token.expires_unix.store(unix_in(granted), std::sync::atomic::Ordering::Relaxed);
                // Tell the renderer (it writes the persisted cache with the new expiry).
                tx.send_modify(|_| {});
                status.auth(AuthState::Authenticated, Some(SystemTime::now() + granted));
                // At its max TTL the server grants less each time: log in again before it ends
                // rather than renew down to nothing.
                if granted < token.ttl / 3 {
                    tokio::time::sleep(crate::backoff::jitter(granted.mul_f64(2.0 / 3.0), 0.1))
                        .await;
                    return;
                }
                ttl = granted;
            }
            Err(e) if is_unreachable(&e) => {
                if Instant::now() >= expires {
                    return;
                }
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?wait, "cannot renew the token: server unreachable");
                tokio::time::sleep(wait.min(expires.saturating_duration_since(Instant::now())))
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the token cannot be renewed");
                return;
            }
        }
    }
}

fn write_sink(s: &SinkConfig, token: &str) -> Result<()> {
    let contents = match &s.dh_path {
        // Encrypted to the consumer's key (Vault's format): only that consumer can read it, so
        // the file may sit anywhere.
        Some(dh) => {
            let public = std::fs::read(dh)
                .with_context(|| format!("cannot read the sink's dh_path {}", dh.display()))?;
            let enc =
                coffer_api::dhutil::SinkEncryptor::new(&public, s.aad.as_bytes(), s.derive_key)
                    .map_err(|e| anyhow!("sink dh_path {}: {e}", dh.display()))?;
            Zeroizing::new(
                enc.encrypt(token).map_err(|e| anyhow!("cannot encrypt the token: {e}"))?,
            )
        }
        None => Zeroizing::new(token.to_owned()),
    };
    delivery::prepare_dir(
        &s.path,
        true,
        s.allow_disk || s.dh_path.is_some(),
        delivery::Owner::default(),
        "token sink",
    )?;
    delivery::write_atomic(&s.path, contents.as_bytes(), s.mode, delivery::Owner::default())?;
    Ok(())
}

/// Removes the sinks' token files at exit.
pub(crate) fn remove_sinks(sinks: &[SinkConfig]) {
    for s in sinks {
        if let Err(e) = delivery::remove(&s.path) {
            tracing::warn!(error = %format!("{e:#}"), "cannot remove the token sink");
        }
    }
}
