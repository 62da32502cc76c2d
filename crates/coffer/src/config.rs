//! The server configuration file, in Vault's HCL (or JSON) shape. Parsing is strict: an unknown
//! key, a wrong type or a missing block is an error that names it, never a silent default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StorageConfig {
    Inmem,
    Sqlite {
        path: PathBuf,
        synchronous: String,
    },
    /// The options' `Debug` leaves the connection URL (and so the password) out.
    Postgresql(coffer_storage::PostgresOptions),
}

/// Where a static seal key comes from: `file://PATH`, `env://VAR`, or the key itself in base64
/// or hex (OpenBao's forms). Read at start by the server, never here.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    File(PathBuf),
    Env(String),
    Inline(String),
}

// The inline form is key material.
impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "File({})", p.display()),
            KeySource::Env(v) => write!(f, "Env({v})"),
            KeySource::Inline(_) => f.write_str("Inline(<redacted>)"),
        }
    }
}

/// A `seal` stanza (auto-unseal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SealStanza {
    /// OpenBao's `seal "static"`.
    Static { current: (String, KeySource), previous: Option<(String, KeySource)> },
    /// Vault's `seal "transit"`.
    Transit(TransitStanza),
}

/// `seal "transit"`: Vault's keys, as written in the file. The environment variables Vault reads
/// for this seal are applied when the seal is made (`seal_transit::Settings::resolve`). The
/// token's `Debug` is redacted.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct TransitStanza {
    pub address: Option<String>,
    pub token: Option<String>,
    pub key_name: Option<String>,
    pub mount_path: Option<String>,
    pub namespace: Option<String>,
    pub disable_renewal: Option<bool>,
    pub tls_ca_cert: Option<PathBuf>,
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub tls_skip_verify: Option<bool>,
    pub key_id_prefix: Option<String>,
}

impl std::fmt::Debug for TransitStanza {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransitStanza")
            .field("address", &self.address)
            .field("key_name", &self.key_name)
            .field("mount_path", &self.mount_path)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Where `connection_url` may come from instead of the file; Coffer's name, then Vault's.
pub(crate) const PG_URL_ENV: [&str; 2] = ["COFFER_PG_CONNECTION_URL", "VAULT_PG_CONNECTION_URL"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAuth {
    /// No client certificate is asked for (`tls_disable_client_certs = true`).
    None,
    /// Asked for, not required, and only proven held (the handshake signature): the cert auth
    /// method verifies the chain against its own trusted certificates. Vault's default.
    Any,
    /// Asked for and verified against the client CA when presented; not required.
    Request,
    /// Required and verified against the client CA.
    Require,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: Option<TlsConfig>,
    pub max_request_size: usize,
    /// The request line and headers must arrive within this (hyper's timer: it also runs while
    /// a kept-alive connection waits for its next request).
    pub read_header_timeout: Duration,
    /// The whole body must arrive within this, counted from the end of the headers.
    pub read_timeout: Duration,
    /// Request body bytes this listener holds at once while reading bodies, over all requests.
    pub max_buffered_request_bytes: usize,
    /// `telemetry { unauthenticated_metrics_access = true }`: `GET sys/metrics` needs no token
    /// on this listener (Vault's listener option).
    pub unauthenticated_metrics_access: bool,
    /// Which endpoints that take unseal key shares instead of a token this listener serves
    /// (OpenBao's `disable_unauthed_generate_root_endpoints` and
    /// `disable_unauthed_rekey_endpoints`, both `true` by default: neither).
    pub unauthed: coffer_core::UnauthedEndpoints,
    /// Vault's `x_forwarded_for_*` options; `None` without `x_forwarded_for_authorized_addrs`.
    pub forwarded_for: Option<crate::http::ForwardedFor>,
}

impl ListenerConfig {
    /// A plain-HTTP listener with every limit at its default.
    pub(crate) fn plain(address: SocketAddr) -> Self {
        Self {
            address,
            tls: None,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_buffered_request_bytes: 2 * DEFAULT_MAX_REQUEST_SIZE,
            unauthenticated_metrics_access: false,
            unauthed: coffer_core::UnauthedEndpoints::default(),
            forwarded_for: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Standard,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerConfig {
    pub storage: StorageConfig,
    pub listeners: Vec<ListenerConfig>,
    pub api_addr: Option<String>,
    /// HA: where other nodes reach this one (advertised in the lock row and `sys/leader`).
    pub cluster_addr: Option<String>,
    pub default_lease_ttl: Duration,
    pub max_lease_ttl: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub login_limit: coffer_core::LoginLimit,
    /// Written with the server's pid once its listeners are bound; removed at a clean stop.
    pub pid_file: Option<std::path::PathBuf>,
    pub chaos: coffer_core::ChaosConfig,
    /// `detect { ... }`: detection rules over the audit stream (docs/detect.md).
    pub detect: coffer_core::detect::DetectConfig,
    /// `telemetry { prometheus_retention_time }`: zero turns `format=prometheus` off.
    pub prometheus_retention: Duration,
    /// Auto-unseal (`seal "static"`); none: Shamir shares.
    pub seal: Option<SealStanza>,
    /// The seal stanza says `disabled = true`: it only opens the storage once more, for a
    /// migration back to Shamir shares (`unseal -migrate`).
    pub seal_disabled: bool,
    /// Two seal stanzas, this one `disabled = true`: the seal to migrate from, to `seal`.
    pub seal_from: Option<SealStanza>,
}

/// Vault's default request size limit: 32 MiB.
pub(crate) const DEFAULT_MAX_REQUEST_SIZE: usize = 32 << 20;
/// Vault's defaults for `http_read_header_timeout` and `http_read_timeout`.
const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Listener timeouts longer than this are refused: a timeout of days protects nothing.
const MAX_LISTENER_TIMEOUT: Duration = Duration::from_secs(3600);
const DEFAULT_TTL: Duration = Duration::from_secs(768 * 3600);

impl ServerConfig {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        Self::parse_with_env(text, &|k| std::env::var(k).ok())
    }

    /// [`ServerConfig::parse`] with the environment given as a lookup (tests never set_var).
    pub(crate) fn parse_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let root: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).context("JSON parse error")?
        } else {
            let v: hcl::Value = hcl::from_str(text).map_err(|e| anyhow!("{e}"))?;
            serde_json::to_value(v)?
        };
        let root =
            root.as_object().ok_or_else(|| anyhow!("the configuration must be an object"))?;
        let known = [
            "storage",
            "listener",
            "api_addr",
            "cluster_addr",
            "default_lease_ttl",
            "max_lease_ttl",
            "log_level",
            "log_format",
            "disable_mlock",
            "ui",
            "cluster_name",
            "pid_file",
            "login_failure_burst",
            "login_failure_refill",
            "chaos",
            "detect",
            "telemetry",
            "seal",
        ];
        for k in root.keys() {
            if !known.contains(&k.as_str()) {
                bail!("unknown configuration key {k:?} (known: {})", known.join(", "));
            }
        }
        let storage = parse_storage(env, root.get("storage").ok_or_else(|| anyhow!("missing storage block: add e.g. storage \"sqlite\" {{ path = \"/var/lib/coffer/coffer.db\" }}"))?)?;
        let listeners = match root.get("listener") {
            None => bail!(
                "missing listener block: add e.g. listener \"tcp\" {{ address = \"127.0.0.1:8200\" }}"
            ),
            Some(v) => parse_listeners(v)?,
        };
        let default_lease_ttl = opt_duration(root, "default_lease_ttl")?.unwrap_or(DEFAULT_TTL);
        let max_lease_ttl = opt_duration(root, "max_lease_ttl")?.unwrap_or(DEFAULT_TTL);
        if default_lease_ttl > max_lease_ttl {
            bail!(
                "default_lease_ttl ({}s) cannot exceed max_lease_ttl ({}s)",
                default_lease_ttl.as_secs(),
                max_lease_ttl.as_secs()
            );
        }
        let log_level =
            check_log_level(&opt_str(root, "log_level")?.unwrap_or_else(|| "info".into()))?;
        let log_format = match opt_str(root, "log_format")?.as_deref() {
            None | Some("standard") => LogFormat::Standard,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log_format must be \"standard\" or \"json\", not {other:?}"),
        };
        let mut login_limit = coffer_core::LoginLimit::default();
        if let Some(v) = root.get("login_failure_burst") {
            login_limit.burst = v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    anyhow!("login_failure_burst must be a whole number (0 turns the limit off)")
                })?;
        }
        if let Some(d) = opt_duration(root, "login_failure_refill")? {
            if d.is_zero() {
                bail!(
                    "login_failure_refill must be longer than 0s (set login_failure_burst = 0 to turn the limit off)"
                );
            }
            login_limit.refill = d;
        }
        let chaos = match root.get("chaos") {
            None | Some(Value::Null) => coffer_core::ChaosConfig::default(),
            Some(v) => parse_chaos(v)?,
        };
        let detect = match root.get("detect") {
            None | Some(Value::Null) => coffer_core::detect::DetectConfig::default(),
            Some(v) => parse_detect(v)?,
        };
        let prometheus_retention = match root.get("telemetry") {
            None | Some(Value::Null) => DEFAULT_PROMETHEUS_RETENTION,
            Some(v) => parse_telemetry(v)?,
        };
        let (seal, seal_disabled, seal_from) = match root.get("seal") {
            None | Some(Value::Null) => (None, false, None),
            Some(v) => parse_seals(v)?,
        };
        Ok(Self {
            prometheus_retention,
            seal,
            seal_disabled,
            seal_from,
            chaos,
            detect,
            login_limit,
            storage,
            listeners,
            api_addr: opt_str(root, "api_addr")?,
            cluster_addr: opt_str(root, "cluster_addr")?,
            pid_file: opt_str(root, "pid_file")?.filter(|p| !p.is_empty()).map(Into::into),
            default_lease_ttl,
            max_lease_ttl,
            log_level,
            log_format,
        })
    }
}

/// Vault's default `prometheus_retention_time`.
const DEFAULT_PROMETHEUS_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// One block given as HCL's object or as a JSON list of one object.
fn one_block<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        Value::Array(items) if items.len() == 1 => {
            items[0].as_object().ok_or_else(|| anyhow!("{what} must be a block"))
        }
        _ => bail!("{what} must be one block"),
    }
}

/// `telemetry { prometheus_retention_time = "24h", disable_hostname = true }`. Coffer never
/// puts the host name in metric names, so `disable_hostname` is accepted (Vault configurations
/// set it for Prometheus) and changes nothing; `prometheus_retention_time = 0` turns the
/// Prometheus format off, as in Vault.
fn parse_telemetry(v: &Value) -> Result<Duration> {
    let m = one_block(v, "telemetry")?;
    check_keys(m, &["prometheus_retention_time", "disable_hostname"], "telemetry")?;
    opt_bool(m, "disable_hostname")?;
    Ok(opt_duration(m, "prometheus_retention_time")?.unwrap_or(DEFAULT_PROMETHEUS_RETENTION))
}

impl ServerConfig {
    /// `sys/config/state/sanitized`: the running configuration with Vault's field names and
    /// shape (durations in nanoseconds, as Vault's JSON gives them). Built from named fields
    /// only, never by copying the file, so that nothing secret can slip in: the storage block
    /// shows only its type (never a path or `connection_url`), listeners their addresses,
    /// limits and certificate file paths (the files are not read).
    pub(crate) fn sanitized(&self) -> Value {
        let ns = |d: Duration| Value::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let secs = |d: Duration| Value::String(format!("{}s", d.as_secs()));
        let storage_type = match &self.storage {
            StorageConfig::Inmem => "inmem",
            StorageConfig::Sqlite { .. } => "sqlite",
            StorageConfig::Postgresql(_) => "postgresql",
        };
        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|l| {
                let mut c = serde_json::json!({
                    "address": l.address.to_string(),
                    "tls_disable": l.tls.is_none(),
                    "max_request_size": l.max_request_size,
                    "max_buffered_request_bytes": l.max_buffered_request_bytes,
                    "http_read_header_timeout": secs(l.read_header_timeout),
                    "http_read_timeout": secs(l.read_timeout),
                    "telemetry": {"unauthenticated_metrics_access": l.unauthenticated_metrics_access},
                    "disable_unauthed_generate_root_endpoints": !l.unauthed.generate_root,
                    "disable_unauthed_rekey_endpoints": !l.unauthed.rekey,
                });
                if let Some(t) = &l.tls {
                    c["tls_cert_file"] = Value::from(t.cert_file.display().to_string());
                    c["tls_key_file"] = Value::from(t.key_file.display().to_string());
                    if let Some(ca) = &t.client_ca_file {
                        c["tls_client_ca_file"] = Value::from(ca.display().to_string());
                    }
                    c["tls_require_and_verify_client_cert"] =
                        Value::from(t.client_auth == ClientAuth::Require);
                    c["tls_disable_client_certs"] = Value::from(t.client_auth == ClientAuth::None);
                }
                serde_json::json!({"type": "tcp", "config": c})
            })
            .collect();
        let api_addr = self.api_addr.clone().unwrap_or_default();
        serde_json::json!({
            "api_addr": api_addr,
            "cache_size": 0,
            "cluster_addr": self.cluster_addr.clone().unwrap_or_default(),
            "cluster_name": "",
            "default_lease_ttl": ns(self.default_lease_ttl),
            "max_lease_ttl": ns(self.max_lease_ttl),
            "disable_cache": false,
            // The cluster port (HA request forwarding) exists only with `cluster_addr`.
            "disable_clustering": self.cluster_addr.is_none(),
            "disable_mlock": true,
            "enable_ui": false,
            "log_format": match self.log_format {
                LogFormat::Standard => "standard",
                LogFormat::Json => "json",
            },
            "log_level": self.log_level,
            "pid_file": self.pid_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            "raw_storage_endpoint": false,
            "listeners": listeners,
            "seals": [{"disabled": false, "type": "shamir"}],
            "storage": {
                "type": storage_type,
                "redirect_addr": api_addr,
                "cluster_addr": "",
                "disable_clustering": false,
            },
            "telemetry": {
                "disable_hostname": true,
                "prometheus_retention_time": ns(self.prometheus_retention),
            },
            "login_failure_burst": self.login_limit.burst,
            "login_failure_refill": ns(self.login_limit.refill),
            "chaos": {
                "enabled": self.chaos.enabled,
                "max_duration": ns(self.chaos.max_duration),
            },
            // Webhook URLs may carry a credential in their query: only whether one is set.
            "detect": {
                "enabled": self.detect.enabled,
                "queue_size": self.detect.queue_size,
                "alert_history": self.detect.alert_history,
                "webhook_url_set": !self.detect.webhook_url.is_empty(),
                "webhook_timeout": ns(self.detect.webhook_timeout),
                "webhook_retries": self.detect.webhook_retries,
                "webhook_queue": self.detect.webhook_queue,
                "rules": self.detect.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            },
        })
    }
}

fn key_source(v: &str, what: &str) -> Result<KeySource> {
    Ok(if let Some(p) = v.strip_prefix("file://") {
        if !p.starts_with('/') {
            bail!("{what} must be file:///ABSOLUTE/PATH");
        }
        KeySource::File(PathBuf::from(p))
    } else if let Some(var) = v.strip_prefix("env://") {
        if var.is_empty() {
            bail!("{what}: env:// needs a variable name");
        }
        KeySource::Env(var.to_owned())
    } else if v.is_empty() {
        bail!("{what} is empty")
    } else {
        KeySource::Inline(v.to_owned())
    })
}

/// One seal block; or two, as Vault's seal migration has them, one with `disabled = "true"`
/// (the seal to migrate from). Answers (the seal, whether it is disabled, the seal to migrate
/// from).
fn parse_seals(v: &Value) -> Result<(Option<SealStanza>, bool, Option<SealStanza>)> {
    let blocks = labelled(v, "seal")?;
    let disabled = |body: &Map<String, Value>| -> Result<bool> {
        Ok(opt_bool(body, "disabled")?.unwrap_or(false))
    };
    match blocks.as_slice() {
        [] => Ok((None, false, None)),
        [(kind, body)] => Ok((Some(parse_seal(kind, body)?), disabled(body)?, None)),
        [(k1, b1), (k2, b2)] => match (disabled(b1)?, disabled(b2)?) {
            (true, false) => Ok((Some(parse_seal(k2, b2)?), false, Some(parse_seal(k1, b1)?))),
            (false, true) => Ok((Some(parse_seal(k1, b1)?), false, Some(parse_seal(k2, b2)?))),
            _ => bail!(
                "two seal blocks are a seal migration: exactly one of them must have disabled = \"true\" (the seal to migrate from)"
            ),
        },
        more => bail!("at most two seal blocks (for a migration), found {}", more.len()),
    }
}

/// `seal "static" { current_key_id = "...", current_key = "file:///..." }` (OpenBao's keys).
fn parse_seal(kind: &str, body: &Map<String, Value>) -> Result<SealStanza> {
    match kind {
        "static" => {
            const WHAT: &str = "seal \"static\"";
            check_keys(
                body,
                &["current_key_id", "current_key", "previous_key_id", "previous_key", "disabled"],
                WHAT,
            )?;
            let id = |k: &str| opt_str(body, k).map(|v| v.filter(|s| !s.is_empty()));
            let current_id =
                id("current_key_id")?.ok_or_else(|| anyhow!("{WHAT} needs current_key_id"))?;
            let current = opt_str(body, "current_key")?
                .ok_or_else(|| anyhow!("{WHAT} needs current_key = \"file:///path/to/key\""))?;
            let previous = match (id("previous_key_id")?, opt_str(body, "previous_key")?) {
                (Some(i), Some(k)) => Some((i, key_source(&k, "previous_key")?)),
                (None, None) => None,
                _ => bail!("{WHAT}: previous_key_id and previous_key go together"),
            };
            Ok(SealStanza::Static {
                current: (current_id, key_source(&current, "current_key")?),
                previous,
            })
        }
        "transit" => {
            const WHAT: &str = "seal \"transit\"";
            check_keys(
                body,
                &[
                    "address",
                    "token",
                    "key_name",
                    "mount_path",
                    "namespace",
                    "disable_renewal",
                    "tls_ca_cert",
                    "tls_client_cert",
                    "tls_client_key",
                    "tls_server_name",
                    "tls_skip_verify",
                    "key_id_prefix",
                    "disabled",
                ],
                WHAT,
            )?;
            let text = |k: &str| opt_str(body, k).map(|v| v.filter(|s| !s.is_empty()));
            let path = |k: &str| text(k).map(|v| v.map(PathBuf::from));
            Ok(SealStanza::Transit(TransitStanza {
                address: text("address")?,
                token: text("token")?,
                key_name: text("key_name")?,
                mount_path: text("mount_path")?,
                namespace: text("namespace")?,
                disable_renewal: opt_bool(body, "disable_renewal")?,
                tls_ca_cert: path("tls_ca_cert")?,
                tls_client_cert: path("tls_client_cert")?,
                tls_client_key: path("tls_client_key")?,
                tls_server_name: text("tls_server_name")?,
                tls_skip_verify: opt_bool(body, "tls_skip_verify")?,
                key_id_prefix: text("key_id_prefix")?,
            }))
        }
        other => bail!(
            "unsupported seal type {other:?}: Coffer has \"static\" and \"transit\" (Shamir shares when there is no seal block)"
        ),
    }
}

/// `detect { queue_size = 65536, webhook_url = "...", rule "NAME" { type = "...", ... } }`.
fn parse_detect(v: &Value) -> Result<coffer_core::detect::DetectConfig> {
    let m = match v {
        Value::Object(m) => m,
        Value::Array(items) if items.len() == 1 => items[0]
            .as_object()
            .ok_or_else(|| anyhow!("detect must be a block: detect {{ ... }}"))?,
        _ => bail!("detect must be one block: detect {{ ... }}"),
    };
    let c = coffer_core::detect::DetectConfig::parse(m).map_err(|e| anyhow!("{e}"))?;
    if !c.webhook_ca_file.is_empty() && !c.webhook_ca_file.starts_with('/') {
        bail!("detect webhook_ca_file must be an absolute path");
    }
    Ok(c)
}

/// `chaos { enabled = true, max_duration = "1h" }`: off unless enabled.
fn parse_chaos(v: &Value) -> Result<coffer_core::ChaosConfig> {
    // HCL gives one block as an object; Vault-style JSON may list it.
    let m = match v {
        Value::Object(m) => m,
        Value::Array(items) if items.len() == 1 => items[0]
            .as_object()
            .ok_or_else(|| anyhow!("chaos must be a block: chaos {{ enabled = true }}"))?,
        _ => bail!("chaos must be one block: chaos {{ enabled = true }}"),
    };
    check_keys(m, &["enabled", "max_duration"], "chaos")?;
    let mut c = coffer_core::ChaosConfig {
        enabled: opt_bool(m, "enabled")?.unwrap_or(false),
        ..Default::default()
    };
    if let Some(d) = opt_duration(m, "max_duration")? {
        if d.is_zero() {
            bail!("chaos max_duration must be longer than 0s");
        }
        c.max_duration = d;
    }
    Ok(c)
}

pub(crate) fn check_log_level(level: &str) -> Result<String> {
    let l = level.to_lowercase();
    if !["trace", "debug", "info", "warn", "error"].contains(&l.as_str()) {
        bail!("log level must be one of trace, debug, info, warn, error; not {level:?}");
    }
    Ok(l)
}

fn opt_str(m: &Map<String, Value>, k: &str) -> Result<Option<String>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => bail!("{k} must be a string"),
    }
}

fn opt_bool(m: &Map<String, Value>, k: &str) -> Result<Option<bool>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" || s == "0" => Ok(Some(false)),
        Some(_) => bail!("{k} must be true or false"),
    }
}

fn opt_duration(m: &Map<String, Value>, k: &str) -> Result<Option<Duration>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            coffer_core::logical::fields::duration_field(v, k).map(Some).map_err(|e| anyhow!("{e}"))
        }
    }
}

/// A duration below the second (`"250ms"`, `"1.5s"`, or whole seconds as a number), not rounded
/// to whole seconds as TTLs are.
fn opt_fine_duration(m: &Map<String, Value>, k: &str) -> Result<Option<Duration>> {
    let bad = || anyhow!("invalid duration for {k:?}: expected a string like \"500ms\" or seconds");
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(|s| Some(Duration::from_secs(s))).ok_or_else(bad),
        Some(Value::String(s)) => {
            coffer_time::parse_duration_or_secs(s).map(Some).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

/// A labelled block (`storage "sqlite" { ... }`) as (label, body) pairs, repeated blocks included.
fn labelled(v: &Value, what: &str) -> Result<Vec<(String, Map<String, Value>)>> {
    // Vault's JSON form may list the blocks: "listener": [{"tcp": {...}}, {"tcp": {...}}].
    if let Value::Array(items) = v {
        let mut out = Vec::new();
        for item in items {
            out.extend(labelled(item, what)?);
        }
        return Ok(out);
    }
    let m = v.as_object().ok_or_else(|| {
        anyhow!("{what} must be a block with a type label, like {what} \"TYPE\" {{ ... }}")
    })?;
    let mut out = Vec::new();
    for (label, body) in m {
        match body {
            Value::Object(b) => out.push((label.clone(), b.clone())),
            Value::Array(items) => {
                for i in items {
                    let b = i
                        .as_object()
                        .ok_or_else(|| anyhow!("{what} \"{label}\" must be a block"))?;
                    out.push((label.clone(), b.clone()));
                }
            }
            _ => bail!("{what} \"{label}\" must be a block"),
        }
    }
    Ok(out)
}

fn check_keys(m: &Map<String, Value>, known: &[&str], what: &str) -> Result<()> {
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            bail!("unknown key {k:?} in {what} (known: {})", known.join(", "));
        }
    }
    Ok(())
}

fn parse_storage(env: &dyn Fn(&str) -> Option<String>, v: &Value) -> Result<StorageConfig> {
    let blocks = labelled(v, "storage")?;
    let [(kind, body)] = blocks.as_slice() else {
        bail!("exactly one storage block is needed, found {}", blocks.len());
    };
    match kind.as_str() {
        "inmem" => {
            check_keys(body, &[], "storage \"inmem\"")?;
            Ok(StorageConfig::Inmem)
        }
        "sqlite" => {
            check_keys(body, &["path", "synchronous"], "storage \"sqlite\"")?;
            let path = opt_str(body, "path")?
                .ok_or_else(|| anyhow!("storage \"sqlite\" needs path = \"/path/to/coffer.db\""))?;
            let synchronous = opt_str(body, "synchronous")?.unwrap_or_else(|| "full".into());
            coffer_storage::SqliteOptions::parse_synchronous(&synchronous)
                .map_err(|e| anyhow!("{e}"))?;
            Ok(StorageConfig::Sqlite { path: PathBuf::from(path), synchronous })
        }
        "postgresql" => parse_postgresql(env, body),
        other => bail!(
            "unknown storage type {other:?}: use \"sqlite\" (the default, embedded), \"postgresql\" or \"inmem\" (testing only)"
        ),
    }
}

fn parse_postgresql(
    env: &dyn Fn(&str) -> Option<String>,
    body: &Map<String, Value>,
) -> Result<StorageConfig> {
    const WHAT: &str = "storage \"postgresql\"";
    check_keys(
        body,
        &[
            "connection_url",
            "table",
            "max_parallel",
            "ha_enabled",
            "ha_table",
            "ha_lock_ttl",
            "ha_standby_reads",
            "ha_standby_max_staleness",
        ],
        WHAT,
    )?;
    let ha = match opt_bool(body, "ha_enabled").map_err(|e| anyhow!("{WHAT}: {e}"))? {
        Some(true) => Some(coffer_storage::HaOptions {
            table: opt_str(body, "ha_table")?
                .unwrap_or_else(|| coffer_storage::DEFAULT_HA_TABLE.to_owned()),
            lock_ttl: opt_duration(body, "ha_lock_ttl")?
                .unwrap_or(coffer_storage::DEFAULT_LOCK_TTL),
            standby_max_staleness: match opt_bool(body, "ha_standby_reads")
                .map_err(|e| anyhow!("{WHAT}: {e}"))?
            {
                Some(false) => None,
                _ => Some(
                    opt_fine_duration(body, "ha_standby_max_staleness")?
                        .unwrap_or(coffer_storage::DEFAULT_MAX_STALENESS),
                ),
            },
        }),
        _ if ["ha_lock_ttl", "ha_standby_reads", "ha_standby_max_staleness"]
            .iter()
            .any(|k| body.contains_key(*k)) =>
        {
            bail!(
                "{WHAT}: ha_lock_ttl, ha_standby_reads and ha_standby_max_staleness need ha_enabled = \"true\""
            )
        }
        // As in Vault, ha_table alone changes nothing.
        _ => None,
    };
    // As in Vault, the environment wins: it keeps the password out of the file.
    let from_env = PG_URL_ENV.iter().find_map(|k| env(k).filter(|v| !v.trim().is_empty()));
    let connection_url = match from_env {
        Some(url) => url,
        None => opt_str(body, "connection_url")?.ok_or_else(|| {
            anyhow!(
                "{WHAT} needs connection_url = \"postgres://USER:PASSWORD@HOST:5432/DATABASE\" (or the {} environment variable)",
                PG_URL_ENV[0]
            )
        })?,
    };
    let table = opt_str(body, "table")?.unwrap_or_else(|| coffer_storage::DEFAULT_TABLE.to_owned());
    let max_parallel = match body.get("max_parallel") {
        None | Some(Value::Null) => coffer_storage::DEFAULT_MAX_PARALLEL,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| coffer_storage::MAX_PARALLEL_RANGE.contains(n))
            .ok_or_else(|| {
                anyhow!("{WHAT}: max_parallel must be a whole number of connections from 1 to 1024")
            })?,
    };
    let opts = coffer_storage::PostgresOptions { connection_url, table, max_parallel, ha };
    // The storage error never contains the URL or its password.
    opts.check().map_err(|e| anyhow!("{WHAT}: {e}"))?;
    Ok(StorageConfig::Postgresql(opts))
}

/// `IP:PORT`, or `HOST:PORT` for a name this machine resolves (e.g. `localhost:8200`).
pub(crate) fn resolve_address(address: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    if let Ok(a) = address.parse() {
        return Ok(a);
    }
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| anyhow!("listener address {address:?} must be IP:PORT or HOST:PORT"))
}

/// Vault's `x_forwarded_for_*` listener options, read as OpenBao reads them: the addresses as a
/// comma-separated string or a list (IPs or CIDR blocks), hop skips a non-negative integer
/// (number or string), the two reject options booleans defaulting to `false`. Without
/// authorized addresses the other options change nothing, as in OpenBao.
fn forwarded_for(body: &Map<String, Value>) -> Result<Option<crate::http::ForwardedFor>> {
    let addrs: Vec<String> = match body.get("x_forwarded_for_authorized_addrs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => {
            s.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect()
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(|s| s.trim().to_owned()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| anyhow!("x_forwarded_for_authorized_addrs entries must be strings"))?,
        Some(_) => bail!(
            "x_forwarded_for_authorized_addrs must be a comma-separated string or a list of addresses"
        ),
    };
    let authorized_addrs =
        coffer_core::cidr::Cidr::parse_list("x_forwarded_for_authorized_addrs", &addrs)
            .map_err(|e| anyhow!("error parsing x_forwarded_for_authorized_addrs: {e}"))?;
    let hop_skips = match body.get("x_forwarded_for_hop_skips") {
        None | Some(Value::Null) => 0,
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| anyhow!("error parsing x_forwarded_for_hop_skips: not an integer"))?;
            usize::try_from(n).map_err(|_| {
                anyhow!("x_forwarded_for_hop_skips cannot be negative but set to {n}")
            })?
        }
    };
    let reject_not_authorized = opt_bool(body, "x_forwarded_for_reject_not_authorized")?;
    let reject_not_present = opt_bool(body, "x_forwarded_for_reject_not_present")?;
    if authorized_addrs.is_empty() {
        return Ok(None);
    }
    Ok(Some(crate::http::ForwardedFor {
        authorized_addrs,
        hop_skips,
        reject_not_authorized: reject_not_authorized.unwrap_or(false),
        reject_not_present: reject_not_present.unwrap_or(false),
    }))
}

fn parse_listeners(v: &Value) -> Result<Vec<ListenerConfig>> {
    let mut out = Vec::new();
    for (kind, body) in labelled(v, "listener")? {
        if kind != "tcp" {
            bail!("unknown listener type {kind:?}: only \"tcp\" is supported");
        }
        check_keys(
            &body,
            &[
                "address",
                "tls_disable",
                "tls_cert_file",
                "tls_key_file",
                "tls_client_ca_file",
                "tls_require_and_verify_client_cert",
                "tls_disable_client_certs",
                "max_request_size",
                "max_buffered_request_bytes",
                "http_read_header_timeout",
                "http_read_timeout",
                "http_idle_timeout",
                "telemetry",
                "disable_unauthed_generate_root_endpoints",
                "disable_unauthed_rekey_endpoints",
                "x_forwarded_for_authorized_addrs",
                "x_forwarded_for_hop_skips",
                "x_forwarded_for_reject_not_authorized",
                "x_forwarded_for_reject_not_present",
            ],
            "listener \"tcp\"",
        )?;
        let address = opt_str(&body, "address")?.unwrap_or_else(|| "127.0.0.1:8200".into());
        let address = resolve_address(&address)?;
        let tls_disable = opt_bool(&body, "tls_disable")?.unwrap_or(false);
        let tls = if tls_disable {
            None
        } else {
            let cert = opt_str(&body, "tls_cert_file")?.ok_or_else(|| {
                anyhow!("listener {address}: tls_cert_file is required unless tls_disable = true")
            })?;
            let key = opt_str(&body, "tls_key_file")?.ok_or_else(|| {
                anyhow!("listener {address}: tls_key_file is required unless tls_disable = true")
            })?;
            let client_ca_file = opt_str(&body, "tls_client_ca_file")?.map(PathBuf::from);
            let require = opt_bool(&body, "tls_require_and_verify_client_cert")?.unwrap_or(false);
            let disable = opt_bool(&body, "tls_disable_client_certs")?.unwrap_or(false);
            let client_auth = match (client_ca_file.is_some(), require, disable) {
                (_, true, true) => bail!(
                    "listener {address}: tls_require_and_verify_client_cert and tls_disable_client_certs contradict each other"
                ),
                (false, true, _) => bail!(
                    "listener {address}: tls_require_and_verify_client_cert needs tls_client_ca_file"
                ),
                (true, true, false) => ClientAuth::Require,
                (true, false, false) => ClientAuth::Request,
                (_, false, true) => ClientAuth::None,
                (false, false, false) => ClientAuth::Any,
            };
            Some(TlsConfig {
                cert_file: cert.into(),
                key_file: key.into(),
                client_ca_file,
                client_auth,
            })
        };
        let max_request_size = match body.get("max_request_size") {
            None => DEFAULT_MAX_REQUEST_SIZE,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(n) if n > 0 => n as usize,
                // Vault: 0 means the default, negative means no limit; we keep a limit always.
                _ => DEFAULT_MAX_REQUEST_SIZE,
            },
            Some(_) => bail!("listener {address}: max_request_size must be a number of bytes"),
        };
        let timeout = |k: &str, default: Duration| -> Result<Duration> {
            match opt_duration(&body, k).map_err(|e| anyhow!("listener {address}: {e}"))? {
                None => Ok(default),
                // Vault reads 0 as "no timeout"; here a timeout cannot be turned off.
                Some(d) if d.is_zero() || d > MAX_LISTENER_TIMEOUT => bail!(
                    "listener {address}: {k} must be longer than 0s and at most {}s, not {}s",
                    MAX_LISTENER_TIMEOUT.as_secs(),
                    d.as_secs()
                ),
                Some(d) => Ok(d),
            }
        };
        let read_header_timeout = timeout("http_read_header_timeout", DEFAULT_READ_HEADER_TIMEOUT)?;
        let read_timeout = timeout("http_read_timeout", DEFAULT_READ_TIMEOUT)?;
        // Accepted so that Vault configurations load, and checked like the others; hyper's header
        // timer already closes a kept-alive connection idle for http_read_header_timeout.
        timeout("http_idle_timeout", Duration::from_secs(300))?;
        let max_buffered_request_bytes = match body.get("max_buffered_request_bytes") {
            None => max_request_size.saturating_mul(2),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n >= max_request_size)
                .ok_or_else(|| {
                    anyhow!(
                        "listener {address}: max_buffered_request_bytes must be a number of bytes no smaller than max_request_size ({max_request_size}), or one largest request could never be read"
                    )
                })?,
        };
        let unauthenticated_metrics_access = match body.get("telemetry") {
            None | Some(Value::Null) => false,
            Some(v) => {
                let what = format!("listener {address}: telemetry");
                let t = one_block(v, &what)?;
                check_keys(t, &["unauthenticated_metrics_access"], &what)?;
                opt_bool(t, "unauthenticated_metrics_access")
                    .map_err(|e| anyhow!("{what}: {e}"))?
                    .unwrap_or(false)
            }
        };
        // OpenBao's defaults (since 2.5.0 for rekey, 2.5.3 for generate-root): not served.
        let disabled = |k: &str| -> Result<bool> {
            Ok(opt_bool(&body, k).map_err(|e| anyhow!("listener {address}: {e}"))?.unwrap_or(true))
        };
        let unauthed = coffer_core::UnauthedEndpoints {
            generate_root: !disabled("disable_unauthed_generate_root_endpoints")?,
            rekey: !disabled("disable_unauthed_rekey_endpoints")?,
        };
        let forwarded_for = forwarded_for(&body).map_err(|e| anyhow!("listener {address}: {e}"))?;
        out.push(ListenerConfig {
            unauthenticated_metrics_access,
            unauthed,
            forwarded_for,
            address,
            tls,
            max_request_size,
            read_header_timeout,
            read_timeout,
            max_buffered_request_bytes,
        });
    }
    if out.is_empty() {
        bail!("at least one listener \"tcp\" block is needed");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = ServerConfig::parse(
            r#"
storage "sqlite" {
  path = "/var/lib/coffer/coffer.db"
}
listener "tcp" {
  address       = "0.0.0.0:8200"
  tls_cert_file = "/etc/coffer/tls.crt"
  tls_key_file  = "/etc/coffer/tls.key"
  tls_client_ca_file = "/etc/coffer/ca.crt"
  tls_require_and_verify_client_cert = true
}
listener "tcp" {
  address     = "127.0.0.1:8300"
  tls_disable = true
}
api_addr          = "https://coffer.internal:8200"
default_lease_ttl = "1h"
max_lease_ttl     = "24h"
log_format        = "json"
"#,
        )
        .expect("parse");
        assert_eq!(
            c.storage,
            StorageConfig::Sqlite {
                path: "/var/lib/coffer/coffer.db".into(),
                synchronous: "full".into()
            }
        );
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].tls.as_ref().map(|t| t.client_auth), Some(ClientAuth::Require));
        assert!(c.listeners[1].tls.is_none());
        assert_eq!(c.default_lease_ttl, Duration::from_secs(3600));
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn client_certificate_modes() {
        let mode = |extra: &str| {
            let c = ServerConfig::parse(&format!(
                "storage \"inmem\" {{\n}}\nlistener \"tcp\" {{\n tls_cert_file = \"c.pem\"\n tls_key_file = \"k.pem\"\n{extra}}}\n"
            ))
            .expect("parse");
            c.listeners[0].tls.as_ref().map(|t| t.client_auth)
        };
        assert_eq!(mode(""), Some(ClientAuth::Any), "asked for, for the cert auth method");
        assert_eq!(mode("tls_disable_client_certs = true\n"), Some(ClientAuth::None));
        assert_eq!(mode("tls_client_ca_file = \"ca.pem\"\n"), Some(ClientAuth::Request));
        assert_eq!(
            mode("tls_client_ca_file = \"ca.pem\"\ntls_require_and_verify_client_cert = true\n"),
            Some(ClientAuth::Require)
        );
    }

    #[test]
    fn login_rate_limit_settings() {
        let base = "storage \"inmem\" {\n}\nlistener \"tcp\" {\n tls_disable = true\n}\n";
        let c = ServerConfig::parse(base).expect("parse");
        assert_eq!(c.login_limit, coffer_core::LoginLimit::default());
        let c = ServerConfig::parse(&format!(
            "{base}login_failure_burst = 5\nlogin_failure_refill = \"10s\"\n"
        ))
        .expect("parse");
        assert_eq!(c.login_limit.burst, 5);
        assert_eq!(c.login_limit.refill, Duration::from_secs(10));
    }

    #[test]
    fn detect_block_parses_its_rules_from_hcl() {
        let base = "storage \"sqlite\" {\n path = \"/tmp/x.db\"\n}\nlistener \"tcp\" {\n address = \"127.0.0.1:8200\"\n tls_disable = true\n}\n";
        let c = ServerConfig::parse(base).expect("parse");
        assert!(c.detect.rules.is_empty() && c.detect.enabled);
        let text = format!(
            "{base}detect {{\n queue_size = 128\n webhook_url = \"http://127.0.0.1:2801/\"\n rule \"honey\" {{\n type = \"honeytoken\"\n paths = [\"secret/data/honey/*\"]\n actions = [\"audit\", \"revoke_token\", \"webhook\"]\n }}\n rule \"logins\" {{\n type = \"login_failures\"\n threshold = 5\n window = \"30s\"\n }}\n}}\n"
        );
        let c = ServerConfig::parse(&text).expect("parse");
        assert_eq!(c.detect.queue_size, 128);
        let names: Vec<&str> = c.detect.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["honey", "logins"]);
        let err = ServerConfig::parse(&format!(
            "{base}detect {{\n rule \"x\" {{\n type = \"honeytoken\"\n }}\n}}\n"
        ))
        .expect_err("no paths");
        assert!(format!("{err:#}").contains("paths is required"), "{err:#}");
    }

    #[test]
    fn chaos_stanza_is_off_by_default_and_parses_in_hcl_and_json() {
        let base = "storage \"inmem\" {\n}\nlistener \"tcp\" {\n tls_disable = true\n}\n";
        let c = ServerConfig::parse(base).expect("parse");
        assert_eq!(c.chaos, coffer_core::ChaosConfig::default());
        assert!(!c.chaos.enabled);
        assert_eq!(c.chaos.max_duration, Duration::from_secs(3600));
        let c = ServerConfig::parse(&format!(
            "{base}chaos {{\n enabled = true\n max_duration = \"10m\"\n}}\n"
        ))
        .expect("parse");
        assert!(c.chaos.enabled);
        assert_eq!(c.chaos.max_duration, Duration::from_secs(600));
        let json = r#"{"storage": {"inmem": {}}, "listener": {"tcp": {"tls_disable": true}},
            "chaos": {"enabled": true, "max_duration": 90}}"#;
        let c = ServerConfig::parse(json).expect("json");
        assert!(c.chaos.enabled);
        assert_eq!(c.chaos.max_duration, Duration::from_secs(90));
        let e = ServerConfig::parse(&format!("{base}chaos {{\n enable = true\n}}\n"))
            .expect_err("typo");
        assert!(format!("{e:#}").contains("unknown key \"enable\" in chaos"), "{e:#}");
        let e = ServerConfig::parse(&format!("{base}chaos {{\n max_duration = \"0s\"\n}}\n"))
            .expect_err("zero");
        assert!(format!("{e:#}").contains("max_duration"), "{e:#}");
    }

    #[test]
    fn unauthenticated_key_share_endpoints_are_refused_unless_the_listener_allows_them() {
        let listener = |extra: &str| {
            ServerConfig::parse(&format!(
                "storage \"inmem\" {{\n}}\nlistener \"tcp\" {{\n tls_disable = true\n{extra}}}\n"
            ))
            .map(|c| c.listeners[0].unauthed)
        };
        let none = coffer_core::UnauthedEndpoints::default();
        assert_eq!(listener("").expect("default"), none, "OpenBao's default: neither");
        let both = "disable_unauthed_generate_root_endpoints = false\ndisable_unauthed_rekey_endpoints = \"false\"\n";
        assert_eq!(
            listener(both).expect("both"),
            coffer_core::UnauthedEndpoints { generate_root: true, rekey: true }
        );
        assert_eq!(
            listener("disable_unauthed_rekey_endpoints = false\n").expect("rekey"),
            coffer_core::UnauthedEndpoints { generate_root: false, rekey: true }
        );
        assert_eq!(listener("disable_unauthed_generate_root_endpoints = true\n").expect("x"), none);
        let e = format!(
            "{:#}",
            listener("disable_unauthed_rekey_endpoints = \"maybe\"\n").expect_err("bad")
        );
        assert!(e.contains("disable_unauthed_rekey_endpoints must be true or false"), "{e}");
    }

    #[test]
    fn listener_timeouts_and_body_budget() {
        let listener = |extra: &str| {
            ServerConfig::parse(&format!(
                "storage \"inmem\" {{\n}}\nlistener \"tcp\" {{\n tls_disable = true\n{extra}}}\n"
            ))
            .map(|c| c.listeners[0].clone())
        };
        let d = listener("").expect("defaults");
        assert_eq!(d.read_header_timeout, Duration::from_secs(10), "Vault's default");
        assert_eq!(d.read_timeout, Duration::from_secs(30), "Vault's default");
        assert_eq!(d.max_buffered_request_bytes, 2 * DEFAULT_MAX_REQUEST_SIZE);
        let c = listener(
            "http_read_header_timeout = \"2s\"\nhttp_read_timeout = 5\nhttp_idle_timeout = \"5m\"\nmax_request_size = 1024\nmax_buffered_request_bytes = 4096\n",
        )
        .expect("set");
        assert_eq!(c.read_header_timeout, Duration::from_secs(2));
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        assert_eq!((c.max_request_size, c.max_buffered_request_bytes), (1024, 4096));
        assert_eq!(
            listener("max_request_size = 1000\n").expect("x").max_buffered_request_bytes,
            2000
        );
        for (extra, want) in [
            ("http_read_timeout = \"0s\"\n", "http_read_timeout must be longer than 0s"),
            ("http_read_timeout = \"2h\"\n", "at most 3600s"),
            ("http_read_header_timeout = \"soon\"\n", "http_read_header_timeout"),
            ("http_idle_timeout = true\n", "http_idle_timeout"),
            (
                "max_request_size = 100\nmax_buffered_request_bytes = 99\n",
                "max_buffered_request_bytes",
            ),
            ("max_buffered_request_bytes = \"lots\"\n", "max_buffered_request_bytes"),
            ("http_write_timeout = \"1s\"\n", "http_write_timeout"),
        ] {
            let e = format!("{:#}", listener(extra).expect_err(extra));
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn vaults_json_form_with_listener_lists_parses() {
        let c = ServerConfig::parse(
            r#"{"storage": {"inmem": {}}, "listener": [{"tcp": {"address": "localhost:8300", "tls_disable": true}}, {"tcp": {"address": "127.0.0.1:8301", "tls_disable": "true"}}]}"#,
        )
        .expect("parse");
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners[0].address.ip().is_loopback(), "host names resolve");
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            (
                "storage \"sqlite\" {\n path = \"x\"\n}\nlistener \"tcp\" {\n tls_disable = true\n}\nbogus = 1\n",
                "bogus",
            ),
            ("listener \"tcp\" {\n tls_disable = true\n}\n", "missing storage"),
            ("storage \"s3\" {\n}\nlistener \"tcp\" {\n tls_disable = true\n}\n", "s3"),
            (
                "storage \"inmem\" {\n}\nlistener \"tcp\" {\n address = \"x\"\n tls_disable = true\n}\n",
                "IP:PORT",
            ),
            ("storage \"inmem\" {\n}\nlistener \"tcp\" {\n}\n", "tls_cert_file"),
            (
                "storage \"inmem\" {\n}\nlistener \"tcp\" {\n tls_disable = true\n}\ndefault_lease_ttl = \"2h\"\nmax_lease_ttl = \"1h\"\n",
                "cannot exceed",
            ),
            ("storage \"inmem\" {\n path = \n}\n", "line 2"),
            (
                "storage \"inmem\" {\n}\nlistener \"tcp\" {\n tls_disable = true\n}\nlogin_failure_burst = -1\n",
                "login_failure_burst",
            ),
            (
                "storage \"inmem\" {\n}\nlistener \"tcp\" {\n tls_disable = true\n}\nlogin_failure_refill = \"0s\"\n",
                "login_failure_refill",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", ServerConfig::parse(text).expect_err(want));
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    fn pg(body: &str, env: &[(&str, &str)]) -> Result<StorageConfig> {
        let text = format!(
            "storage \"postgresql\" {{\n{body}\n}}\nlistener \"tcp\" {{\n tls_disable = true\n}}\n"
        );
        let env: Vec<(String, String)> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ServerConfig::parse_with_env(&text, &|k| {
            env.iter().find(|(name, _)| name == k).map(|(_, v)| v.clone())
        })
        .map(|c| c.storage)
    }

    fn pg_err(body: &str, env: &[(&str, &str)]) -> String {
        match pg(body, env) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn parses_a_postgresql_storage_block() {
        let c = pg(
            "connection_url = \"postgres://coffer:pw@db:5432/coffer?sslmode=verify-full&sslrootcert=/etc/ca.pem\"\ntable = \"vault_kv\"\nmax_parallel = \"8\"",
            &[],
        )
        .expect("parse");
        let StorageConfig::Postgresql(o) = c else { panic!("{c:?}") };
        assert_eq!(o.table, "vault_kv");
        assert_eq!(o.max_parallel, 8);
        assert!(o.connection_url.contains("@db:5432/coffer"));
        let c =
            pg("connection_url = \"postgres://u:p@h/db\"\nmax_parallel = 4", &[]).expect("parse");
        let StorageConfig::Postgresql(o) = c else { panic!("{c:?}") };
        assert_eq!((o.table.as_str(), o.max_parallel), ("coffer_kv", 4), "defaults");
        assert_eq!(
            pg("connection_url = \"postgres://u:p@h/db\"", &[]).expect("parse"),
            StorageConfig::Postgresql(coffer_storage::PostgresOptions::new("postgres://u:p@h/db"))
        );
    }

    #[test]
    fn a_static_seal_stanza_takes_openbaos_keys() {
        let parse = |seal: &str| {
            ServerConfig::parse(&format!(
                "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n tls_disable = true\n}}\n{seal}"
            ))
        };
        let c = parse("seal \"static\" {\n current_key_id = \"k2\"\n current_key = \"file:///etc/k2\"\n previous_key_id = \"k1\"\n previous_key = \"env://OLD_KEY\"\n}")
            .expect("parse");
        assert_eq!(
            c.seal,
            Some(SealStanza::Static {
                current: ("k2".into(), KeySource::File("/etc/k2".into())),
                previous: Some(("k1".into(), KeySource::Env("OLD_KEY".into()))),
            })
        );
        let t = parse("seal \"transit\" {\n address = \"https://kms:8200\"\n token = \"s.SecretTok\"\n key_name = \"autounseal\"\n tls_ca_cert = \"/etc/ca.pem\"\n disable_renewal = \"false\"\n}")
            .expect("parse");
        let Some(SealStanza::Transit(ts)) = &t.seal else { panic!("{t:?}") };
        assert_eq!(
            (ts.mount_path.as_deref(), ts.key_name.as_deref(), ts.disable_renewal),
            (None, Some("autounseal"), Some(false)),
        );
        assert!(!format!("{t:?}").contains("SecretTok"), "Debug shows the token");
        // Vault's migration form: the old seal disabled beside the new one, in either order.
        let two = parse("seal \"transit\" {\n address = \"https://kms:8200\"\n key_name = \"k\"\n}\nseal \"static\" {\n current_key_id = \"old\"\n current_key = \"file:///old\"\n disabled = \"true\"\n}")
            .expect("parse");
        assert!(matches!(two.seal, Some(SealStanza::Transit(_))), "{two:?}");
        assert!(matches!(two.seal_from, Some(SealStanza::Static { .. })), "{two:?}");
        assert!(!two.seal_disabled);
        let inline = parse("seal \"static\" {\n current_key_id = \"k\"\n current_key = \"SecretKeyMaterialBase64==\"\n}").expect("parse");
        assert!(!format!("{inline:?}").contains("SecretKeyMaterial"), "Debug shows the key");
        for (seal, want) in [
            ("seal \"static\" {\n current_key = \"file:///k\"\n}", "current_key_id"),
            ("seal \"static\" {\n current_key_id = \"k\"\n}", "current_key"),
            (
                "seal \"static\" {\n current_key_id = \"k\"\n current_key = \"file://rel\"\n}",
                "ABSOLUTE",
            ),
            (
                "seal \"static\" {\n current_key_id = \"k\"\n current_key = \"x\"\n previous_key_id = \"j\"\n}",
                "together",
            ),
            ("seal \"awskms\" {}", "unsupported seal type"),
            (
                "seal \"static\" {\n current_key_id = \"a\"\n current_key = \"file:///a\"\n}\nseal \"static\" {\n current_key_id = \"b\"\n current_key = \"file:///b\"\n}",
                "exactly one of them must have disabled",
            ),
            (
                "seal \"transit\" {\n key_name = \"k\"\n tls_skip_verify = \"maybe\"\n}",
                "tls_skip_verify",
            ),
            ("seal \"transit\" {\n key_name = \"k\"\n kms_key_id = \"x\"\n}", "kms_key_id"),
        ] {
            let e = format!("{:#}", parse(seal).expect_err(want));
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn ha_keys_take_vaults_forms() {
        let ha = |body: &str| match pg(
            &format!("connection_url = \"postgres://u:p@h/db\"\n{body}"),
            &[],
        )
        .expect("parse")
        {
            StorageConfig::Postgresql(o) => o.ha,
            other => panic!("{other:?}"),
        };
        let default = Some(coffer_storage::HaOptions::default());
        assert_eq!(ha("ha_enabled = \"true\""), default, "a string, as Vault writes it");
        assert_eq!(ha("ha_enabled = true"), default, "bare");
        assert_eq!(ha("ha_enabled = \"false\"\nha_table = \"x\""), None);
        assert_eq!(ha(""), None);
        let o =
            ha("ha_enabled = \"true\"\nha_table = \"vault_ha\"\nha_lock_ttl = \"5s\"").expect("ha");
        assert_eq!((o.table.as_str(), o.lock_ttl), ("vault_ha", Duration::from_secs(5)));
        assert_eq!(o.standby_max_staleness, Some(coffer_storage::DEFAULT_MAX_STALENESS));
        let o = ha("ha_enabled = true\nha_standby_reads = \"false\"").expect("ha");
        assert_eq!(o.standby_max_staleness, None, "standby reads off");
        let o = ha("ha_enabled = true\nha_standby_max_staleness = \"250ms\"").expect("ha");
        assert_eq!(o.standby_max_staleness, Some(Duration::from_millis(250)));
        let c = ServerConfig::parse(
            "storage \"inmem\" {}\nlistener \"tcp\" {\n tls_disable = true\n}\ncluster_addr = \"https://10.0.0.1:8201\"",
        )
        .expect("parse");
        assert_eq!(c.cluster_addr.as_deref(), Some("https://10.0.0.1:8201"));
    }

    #[test]
    fn the_connection_url_may_come_from_the_environment() {
        let from = |env: &[(&str, &str)], body: &str| match pg(body, env).expect("parse") {
            StorageConfig::Postgresql(o) => o.connection_url,
            other => panic!("{other:?}"),
        };
        let coffer = ("COFFER_PG_CONNECTION_URL", "postgres://c:p@coffer-host/db");
        let vault = ("VAULT_PG_CONNECTION_URL", "postgres://v:p@vault-host/db");
        assert_eq!(from(&[coffer], ""), coffer.1);
        assert_eq!(from(&[vault], ""), vault.1, "Vault's variable is the fallback");
        assert_eq!(from(&[vault, coffer], ""), coffer.1, "Coffer's wins over Vault's");
        assert_eq!(
            from(&[coffer], "connection_url = \"postgres://f:p@file-host/db\""),
            coffer.1,
            "the environment wins over the file, as in Vault"
        );
        assert!(pg_err("", &[]).contains("COFFER_PG_CONNECTION_URL"));
    }

    #[test]
    fn postgresql_errors_name_the_problem_but_not_the_password() {
        let url = |q: &str| format!("connection_url = \"postgres://u:TopSecretPw@h/db{q}\"");
        let cases = [
            (format!("{}\nha_enabled = \"yes\"", url("")), "ha_enabled"),
            (format!("{}\nha_lock_ttl = \"5s\"", url("")), "ha_enabled"),
            (format!("{}\nha_enabled = true\nha_lock_ttl = \"1s\"", url("")), "ha_lock_ttl"),
            (format!("{}\nha_enabled = true\nha_table = \"coffer_kv\"", url("")), "ha_table"),
            (format!("{}\nha_standby_reads = false", url("")), "ha_enabled"),
            (
                format!("{}\nha_enabled = true\nha_standby_max_staleness = \"50ms\"", url("")),
                "ha_standby_max_staleness",
            ),
            (format!("{}\ntable = \"Bad-Name\"", url("")), "identifier"),
            (format!("{}\nmax_parallel = 0", url("")), "max_parallel"),
            (format!("{}\nmax_parallel = \"many\"", url("")), "max_parallel"),
            (format!("{}\nbogus = 1", url("")), "bogus"),
            (url("?sslmode=verify-full"), "sslrootcert"),
            (url("?sslmode=nope"), "sslmode"),
            ("connection_url = \"mysql://u:TopSecretPw@h/db\"".to_owned(), "postgres://"),
        ];
        for (body, want) in cases {
            let e = pg_err(&body, &[]);
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(!e.contains("TopSecretPw"), "password in {e:?}");
        }
        assert_eq!(
            pg(&format!("{}\nha_enabled = false", url("")), &[]).map(|_| ()).ok(),
            Some(()),
            "ha_enabled = false is accepted"
        );
        let c = pg(&url(""), &[]).expect("parse");
        assert!(!format!("{c:?}").contains("TopSecretPw"), "Debug shows the password: {c:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_config_text_never_panics(text in proptest::prelude::any::<String>(), pick in proptest::collection::vec(0usize..14, 0..30)) {
            let parts = ["storage", "\"sqlite\"", "listener", "\"tcp\"", "{", "}", "\n", "path", "=", "\"x\"", "address", "tls_disable", "true", "[1]"];
            let assembled: Vec<&str> = pick.iter().map(|i| parts[*i]).collect();
            let _ = ServerConfig::parse(&text);
            let _ = ServerConfig::parse(&assembled.join(" "));
        }
    }
}
