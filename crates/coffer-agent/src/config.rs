//! The agent's configuration file, in Vault Agent's HCL (or JSON) shape, so an existing agent
//! configuration ports with few edits: `vault { }` is read as `coffer { }`. Parsing is strict: an
//! unknown key, a wrong type or a missing value is an error that names where it is, never a silent
//! default; a Vault Agent key Coffer does not implement is named as such.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub server: ServerConfig,
    pub auto_auth: Option<AutoAuth>,
    pub templates: Vec<TemplateConfig>,
    pub template_config: TemplateSettings,
    pub exec: Option<ExecConfig>,
    pub env_templates: Vec<EnvTemplate>,
    pub cache: Option<CacheConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub pid_file: Option<PathBuf>,
    /// Authenticate, write the sinks, render every template once, then exit (the init-container
    /// form).
    pub exit_after_auth: bool,
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub address: String,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// How often a failed request to the server is retried before the render (or login) that
    /// made it counts as failed.
    pub num_retries: u32,
    /// Coffer: ask for every answer sealed to a key that exists only in the agent's memory
    /// (`X-Coffer-Seal-To`), so nothing between the server and the agent holds it in clear.
    pub seal_responses: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AutoAuth {
    pub method: MethodConfig,
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MethodConfig {
    pub kind: Method,
    /// `auth/<type>` unless set.
    pub mount_path: String,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Exit when a login fails instead of retrying (Vault's `exit_on_err`).
    pub exit_on_err: bool,
    /// Coffer's: a file holding the image's cosign signature(s), sent as `image_signature`
    /// (approle, jwt, kubernetes; docs/image-binding.md).
    pub image_signature_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    AppRole {
        role_id_file_path: PathBuf,
        secret_id_file_path: Option<PathBuf>,
        remove_secret_id_file_after_reading: bool,
        /// The secret-id file holds a wrapping token whose creation path must be this.
        secret_id_response_wrapping_path: Option<String>,
        /// Coffer's: the pod's projected service-account token, sent as the image evidence of
        /// an image-bound secret ID (docs/image-binding.md); read at every login.
        kubernetes_token_path: Option<PathBuf>,
    },
    Jwt {
        role: String,
        path: PathBuf,
        remove_jwt_after_reading: bool,
    },
    Kubernetes {
        role: String,
        token_path: PathBuf,
    },
    Cert {
        name: Option<String>,
    },
    TokenFile {
        token_file_path: PathBuf,
    },
}

impl Method {
    pub fn type_name(&self) -> &'static str {
        match self {
            Method::AppRole { .. } => "approle",
            Method::Jwt { .. } => "jwt",
            Method::Kubernetes { .. } => "kubernetes",
            Method::Cert { .. } => "cert",
            Method::TokenFile { .. } => "token_file",
        }
    }
}

pub const DEFAULT_K8S_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    pub path: PathBuf,
    pub mode: u32,
    /// Vault's `dh_type = "curve25519"`: the token is written encrypted to this public key file.
    pub dh_path: Option<PathBuf>,
    /// Additional authenticated data for the encrypted sink (`aad`, or `aad_env_var`'s value).
    pub aad: String,
    pub derive_key: bool,
    /// Coffer: a token file on a disk-backed filesystem is refused unless this is set.
    pub allow_disk: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateSource {
    File(PathBuf),
    Contents(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateConfig {
    pub source: TemplateSource,
    pub destination: PathBuf,
    pub perms: u32,
    pub user: Option<String>,
    pub group: Option<String>,
    pub error_on_missing_key: bool,
    pub create_dest_dirs: bool,
    /// Coffer: a destination on a disk-backed filesystem is refused unless this is set.
    pub allow_disk: bool,
    pub exec: Option<CommandConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    pub command: Vec<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSettings {
    /// How often secrets without a lease (KV) are read again when no event says they changed.
    pub static_secret_render_interval: Duration,
    /// Exit when a render still fails after `num_retries` retries (Vault's behaviour), instead of
    /// keeping the last good files and trying again later.
    pub exit_on_retry_failure: bool,
    /// How long the agent may serve what it has without reaching the server before it reports
    /// unhealthy.
    pub max_stale: Option<Duration>,
    /// Past `max_stale`, stop the app (exec mode) and exit rather than run on secrets that may
    /// have been revoked.
    pub exit_on_max_stale: bool,
    /// Commands and app restarts after a change wait a random time up to this, so a fleet of
    /// agents does not restart its apps at once.
    pub splay: Duration,
}

impl Default for TemplateSettings {
    fn default() -> Self {
        Self {
            static_secret_render_interval: Duration::from_secs(300),
            exit_on_retry_failure: false,
            max_stale: None,
            exit_on_max_stale: false,
            splay: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecConfig {
    pub command: Vec<String>,
    pub restart_on_secret_changes: RestartPolicy,
    pub restart_stop_signal: Signal,
    /// Coffer: sent to the app when a file template it reads changes (none: files change quietly).
    pub reload_signal: Option<Signal>,
    /// How long a stopping app may take before it is killed.
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnvTemplate {
    pub name: String,
    pub contents: String,
    pub error_on_missing_key: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub persist: Option<PersistConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PersistConfig {
    /// The encrypted cache file.
    pub path: PathBuf,
    /// The cache key; must be on a memory filesystem unless `allow_disk`, and never beside the
    /// cache in the same directory.
    pub key_path: PathBuf,
    pub allow_disk: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ListenerConfig {
    Unix { path: PathBuf, mode: u32 },
    Tcp { address: std::net::SocketAddr },
}

/// The signals an app may be sent, by their usual names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Int,
    Quit,
    Term,
    Usr1,
    Usr2,
    Kill,
}

impl Signal {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_uppercase();
        let s = s.strip_prefix("SIG").unwrap_or(&s);
        Some(match s {
            "HUP" => Signal::Hup,
            "INT" => Signal::Int,
            "QUIT" => Signal::Quit,
            "TERM" => Signal::Term,
            "USR1" => Signal::Usr1,
            "USR2" => Signal::Usr2,
            "KILL" => Signal::Kill,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Term => "SIGTERM",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Kill => "SIGKILL",
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read agent config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
            .with_context(|| format!("invalid agent config file {}", path.display()))
    }

    /// Parses a configuration; relative template `source` paths are taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let root: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).context("JSON parse error")?
        } else {
            let v: hcl::Value = hcl::from_str(text).map_err(|e| anyhow!("HCL parse error: {e}"))?;
            serde_json::to_value(v)?
        };
        let root = Section::root(&root)?;
        root.refuse(&[(
            "api_proxy",
            "the agent has no API proxy; applications read the files or environment it renders",
        )])?;

        let server = match (root.block("coffer")?, root.block("vault")?) {
            (Some(_), Some(_)) => {
                bail!("give either a coffer {{ }} or a vault {{ }} block, not both")
            }
            (Some(b), None) | (None, Some(b)) => parse_server(b)?,
            (None, None) => parse_server(Section::empty("coffer"))?,
        };
        let auto_auth = root.block("auto_auth")?.map(parse_auto_auth).transpose()?;
        let templates = root
            .blocks("template")?
            .into_iter()
            .map(|b| parse_template(b, base))
            .collect::<Result<Vec<_>>>()?;
        let template_config = match root.block("template_config")? {
            Some(b) => parse_template_settings(b)?,
            None => TemplateSettings::default(),
        };
        let exec = root.block("exec")?.map(parse_exec).transpose()?;
        let env_templates = root
            .labelled("env_template")?
            .into_iter()
            .map(|(name, b)| parse_env_template(name, b))
            .collect::<Result<Vec<_>>>()?;
        let cache = root.block("cache")?.map(parse_cache).transpose()?;
        let listeners = root
            .labelled("listener")?
            .into_iter()
            .map(|(kind, b)| parse_listener(kind, b))
            .collect::<Result<Vec<_>>>()?;
        let cfg = AgentConfig {
            server,
            auto_auth,
            templates,
            template_config,
            exec,
            env_templates,
            cache,
            listeners,
            pid_file: root.path("pid_file")?,
            exit_after_auth: root.bool("exit_after_auth")?.unwrap_or(false),
            log_level: root.string("log_level")?,
        };
        root.finish(&[
            "coffer",
            "vault",
            "auto_auth",
            "template",
            "template_config",
            "exec",
            "env_template",
            "cache",
            "listener",
            "pid_file",
            "exit_after_auth",
            "log_level",
        ])?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks that need the whole configuration.
    fn check(&self) -> Result<()> {
        if self.auto_auth.is_none()
            && (!self.templates.is_empty() || !self.env_templates.is_empty())
        {
            bail!("templates need a token: add an auto_auth block");
        }
        if !self.env_templates.is_empty() && self.exec.is_none() {
            bail!(
                "env_template blocks render into the environment of the app the agent runs: add an exec {{ command = [...] }} block"
            );
        }
        if self.exec.is_some() && self.exit_after_auth {
            bail!(
                "exit_after_auth and exec cannot be combined: exec keeps the agent running beside the app"
            );
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.templates {
            if !seen.insert(&t.destination) {
                bail!("two templates write to {}", t.destination.display());
            }
        }
        if let Some(max) = self.template_config.max_stale
            && max.is_zero()
        {
            bail!("template_config.max_stale must be longer than 0s");
        }
        if self.template_config.exit_on_max_stale && self.template_config.max_stale.is_none() {
            bail!("template_config.exit_on_max_stale needs max_stale");
        }
        if let Some(CacheConfig { persist: Some(p) }) = &self.cache
            && p.key_path.parent() == p.path.parent()
        {
            bail!(
                "cache.persist.key_path must not be in the same directory as the cache ({}): whoever copies the cache would copy its key too",
                p.path.parent().unwrap_or(Path::new("/")).display()
            );
        }
        Ok(())
    }
}

fn parse_server(s: Section<'_>) -> Result<ServerConfig> {
    let retry = s.block("retry")?;
    let num_retries = match retry {
        Some(r) => {
            let n = r.int("num_retries")?;
            r.finish(&["num_retries"])?;
            match n {
                None => 12,
                // Vault: -1 disables retries.
                Some(-1) => 0,
                Some(n) if (0..=100).contains(&n) => n as u32,
                Some(n) => bail!("{}.num_retries must be between -1 and 100, not {n}", r.name),
            }
        }
        None => 12,
    };
    let address = s
        .string("address")?
        .or_else(|| env_any(&["COFFER_ADDR", "VAULT_ADDR"]))
        .unwrap_or_else(|| "https://127.0.0.1:8200".into());
    let cfg = ServerConfig {
        address,
        ca_cert: s
            .path("ca_cert")?
            .or_else(|| env_any(&["COFFER_CACERT", "VAULT_CACERT"]).map(PathBuf::from)),
        client_cert: s.path("client_cert")?,
        client_key: s.path("client_key")?,
        num_retries,
        seal_responses: s.bool("seal_responses")?.unwrap_or(true),
    };
    if cfg.client_cert.is_some() != cfg.client_key.is_some() {
        bail!("{}: client_cert and client_key go together", s.name);
    }
    s.refuse(&[("tls_skip_verify", "Coffer never turns certificate checks off: give ca_cert")])?;
    s.finish(&["address", "ca_cert", "client_cert", "client_key", "retry", "seal_responses"])?;
    Ok(cfg)
}

fn env_any(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn parse_auto_auth(s: Section<'_>) -> Result<AutoAuth> {
    let methods = s.labelled("method")?;
    let method = match methods.len() {
        0 => bail!("auto_auth needs a method \"TYPE\" {{ ... }} block"),
        1 => {
            let (kind, b) = methods.into_iter().next().expect("one method");
            parse_method(kind, b)?
        }
        _ => bail!("auto_auth takes one method block"),
    };
    let sinks = s
        .labelled("sink")?
        .into_iter()
        .map(|(kind, b)| parse_sink(kind, b))
        .collect::<Result<Vec<_>>>()?;
    s.finish(&["method", "sink"])?;
    Ok(AutoAuth { method, sinks })
}

fn parse_method(kind: &str, s: Section<'_>) -> Result<MethodConfig> {
    let c = s.block("config")?.unwrap_or_else(|| Section::empty("config"));
    let c = Section { name: format!("{}.config", s.name), map: c.map };
    let req_path =
        |k: &str| -> Result<PathBuf> { c.path(k)?.ok_or_else(|| anyhow!("{} needs {k}", c.name)) };
    let req_str =
        |k: &str| -> Result<String> { c.string(k)?.ok_or_else(|| anyhow!("{} needs {k}", c.name)) };
    let (method, known): (Method, &[&str]) = match kind {
        "approle" => (
            Method::AppRole {
                role_id_file_path: req_path("role_id_file_path")?,
                secret_id_file_path: c.path("secret_id_file_path")?,
                remove_secret_id_file_after_reading: c
                    .bool("remove_secret_id_file_after_reading")?
                    .unwrap_or(true),
                secret_id_response_wrapping_path: c.string("secret_id_response_wrapping_path")?,
                kubernetes_token_path: c.path("kubernetes_token_path")?,
            },
            &[
                "role_id_file_path",
                "secret_id_file_path",
                "remove_secret_id_file_after_reading",
                "secret_id_response_wrapping_path",
                "kubernetes_token_path",
            ],
        ),
        "jwt" => (
            Method::Jwt {
                role: req_str("role")?,
                path: req_path("path")?,
                remove_jwt_after_reading: c.bool("remove_jwt_after_reading")?.unwrap_or(false),
            },
            &["role", "path", "remove_jwt_after_reading"],
        ),
        "kubernetes" => (
            Method::Kubernetes {
                role: req_str("role")?,
                token_path: c.path("token_path")?.unwrap_or_else(|| DEFAULT_K8S_TOKEN_PATH.into()),
            },
            &["role", "token_path"],
        ),
        "cert" => (Method::Cert { name: c.string("name")? }, &["name"]),
        "token_file" => (
            Method::TokenFile { token_file_path: req_path("token_file_path")? },
            &["token_file_path"],
        ),
        other => bail!(
            "auto_auth method {other:?} is not supported (supported: approle, jwt, kubernetes, cert, token_file)"
        ),
    };
    let image_kinds = ["approle", "jwt", "kubernetes"];
    let image_signature_path =
        if image_kinds.contains(&kind) { c.path("image_signature_path")? } else { None };
    let mut known = known.to_vec();
    if image_kinds.contains(&kind) {
        known.push("image_signature_path");
    }
    c.finish(&known)?;
    let default_mount = match kind {
        "token_file" => String::new(),
        k => format!("auth/{k}"),
    };
    let mount_path =
        s.string("mount_path")?.map(|m| m.trim_matches('/').to_owned()).unwrap_or(default_mount);
    let min_backoff = s.duration("min_backoff")?.unwrap_or(Duration::from_secs(1));
    let max_backoff = s.duration("max_backoff")?.unwrap_or(Duration::from_secs(300));
    if min_backoff.is_zero() || min_backoff > max_backoff {
        bail!("{}: min_backoff must be above 0s and at most max_backoff", s.name);
    }
    s.refuse(&[(
        "wrap_ttl",
        "the agent keeps its token; wrapping it for the sink is not supported",
    )])?;
    s.finish(&["config", "mount_path", "min_backoff", "max_backoff", "exit_on_err"])?;
    Ok(MethodConfig {
        kind: method,
        mount_path,
        min_backoff,
        max_backoff,
        exit_on_err: s.bool("exit_on_err")?.unwrap_or(false),
        image_signature_path,
    })
}

fn parse_sink(kind: &str, s: Section<'_>) -> Result<SinkConfig> {
    if kind != "file" {
        bail!("auto_auth sink {kind:?} is not supported (supported: file)");
    }
    s.refuse(&[("wrap_ttl", "response-wrapped sinks")])?;
    let c =
        s.block("config")?.ok_or_else(|| anyhow!("{} needs config = {{ path = ... }}", s.name))?;
    let c = Section { name: format!("{}.config", s.name), map: c.map };
    let path = c.path("path")?.ok_or_else(|| anyhow!("{} needs path", c.name))?;
    // Vault's default sink mode.
    let mode = c.mode("mode")?.unwrap_or(0o640);
    c.finish(&["path", "mode"])?;
    let dh_path = match (s.string("dh_type")?.as_deref(), s.path("dh_path")?) {
        (None, None) => None,
        (Some("curve25519"), Some(p)) => Some(p),
        (Some("curve25519"), None) => {
            bail!("{}: dh_type needs dh_path (the consumer's public key file)", s.name)
        }
        (None, Some(_)) => bail!("{}: dh_path needs dh_type = \"curve25519\"", s.name),
        (Some(other), _) => bail!("{}: dh_type must be \"curve25519\", not {other:?}", s.name),
    };
    let aad = match (s.string("aad")?, s.string("aad_env_var")?) {
        (Some(_), Some(_)) => bail!("{}: give aad or aad_env_var, not both", s.name),
        (Some(a), None) => a,
        (None, Some(var)) => std::env::var(&var)
            .map_err(|_| anyhow!("{}: aad_env_var names {var}, which is not set", s.name))?,
        (None, None) => String::new(),
    };
    let derive_key = s.bool("derive_key")?.unwrap_or(false);
    if dh_path.is_none() && (!aad.is_empty() || derive_key) {
        bail!("{}: aad and derive_key need dh_type and dh_path", s.name);
    }
    let allow_disk = s.bool("allow_disk")?.unwrap_or(false);
    s.finish(&["config", "allow_disk", "dh_type", "dh_path", "aad", "aad_env_var", "derive_key"])?;
    Ok(SinkConfig { path, mode, dh_path, aad, derive_key, allow_disk })
}

fn parse_template(s: Section<'_>, base: &Path) -> Result<TemplateConfig> {
    let source = match (s.path("source")?, s.string("contents")?) {
        (Some(_), Some(_)) => bail!("{}: give source or contents, not both", s.name),
        (Some(p), None) => TemplateSource::File(if p.is_relative() { base.join(p) } else { p }),
        (None, Some(c)) => TemplateSource::Contents(c),
        (None, None) => bail!("{} needs source (a template file) or contents", s.name),
    };
    let destination =
        s.path("destination")?.ok_or_else(|| anyhow!("{} needs destination", s.name))?;
    if destination.is_relative() {
        bail!("{}: destination must be an absolute path, not {}", s.name, destination.display());
    }
    let exec = s.block("exec")?.map(parse_command).transpose()?;
    s.refuse(&[
        ("command", "the command string: use exec { command = [...] }"),
        ("left_delimiter", "custom delimiters"),
        ("right_delimiter", "custom delimiters"),
        ("backup", "backups of the previous file (they would leave old secrets behind)"),
        ("wait", "wait { min, max }: use template_config.splay"),
        ("sandbox_path", "sandbox_path"),
    ])?;
    let t = TemplateConfig {
        source,
        destination,
        perms: s.mode("perms")?.unwrap_or(0o400),
        user: s.string_or_int("user")?,
        group: s.string_or_int("group")?,
        error_on_missing_key: s.bool("error_on_missing_key")?.unwrap_or(false),
        create_dest_dirs: s.bool("create_dest_dirs")?.unwrap_or(true),
        allow_disk: s.bool("allow_disk")?.unwrap_or(false),
        exec,
    };
    s.finish(&[
        "source",
        "contents",
        "destination",
        "perms",
        "user",
        "group",
        "error_on_missing_key",
        "create_dest_dirs",
        "allow_disk",
        "exec",
    ])?;
    Ok(t)
}

fn parse_command(s: Section<'_>) -> Result<CommandConfig> {
    let command = s.string_list("command")?.ok_or_else(|| anyhow!("{} needs command", s.name))?;
    let timeout = s.duration("timeout")?.unwrap_or(Duration::from_secs(30));
    s.finish(&["command", "timeout"])?;
    Ok(CommandConfig { command, timeout })
}

fn parse_template_settings(s: Section<'_>) -> Result<TemplateSettings> {
    let d = TemplateSettings::default();
    let t = TemplateSettings {
        static_secret_render_interval: s
            .duration("static_secret_render_interval")?
            .unwrap_or(d.static_secret_render_interval),
        exit_on_retry_failure: s.bool("exit_on_retry_failure")?.unwrap_or(false),
        max_stale: s.duration("max_stale")?,
        exit_on_max_stale: s.bool("exit_on_max_stale")?.unwrap_or(false),
        splay: s.duration("splay")?.unwrap_or(Duration::ZERO),
    };
    if t.static_secret_render_interval < Duration::from_secs(1) {
        bail!("template_config.static_secret_render_interval must be at least 1s");
    }
    s.refuse(&[("max_connections_per_host", "max_connections_per_host")])?;
    s.finish(&[
        "static_secret_render_interval",
        "exit_on_retry_failure",
        "max_stale",
        "exit_on_max_stale",
        "splay",
    ])?;
    Ok(t)
}

fn parse_exec(s: Section<'_>) -> Result<ExecConfig> {
    let command = s.string_list("command")?.ok_or_else(|| anyhow!("exec needs command = [...]"))?;
    let restart_on_secret_changes = match s.string("restart_on_secret_changes")?.as_deref() {
        None | Some("always") => RestartPolicy::Always,
        Some("never") => RestartPolicy::Never,
        Some(other) => {
            bail!("exec.restart_on_secret_changes must be \"always\" or \"never\", not {other:?}")
        }
    };
    let signal = |k: &str| -> Result<Option<Signal>> {
        s.string(k)?
            .map(|v| {
                Signal::parse(&v).ok_or_else(|| {
                    anyhow!("exec.{k}: unknown signal {v:?} (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGKILL)")
                })
            })
            .transpose()
    };
    let e = ExecConfig {
        command,
        restart_on_secret_changes,
        restart_stop_signal: signal("restart_stop_signal")?.unwrap_or(Signal::Term),
        reload_signal: signal("reload_signal")?,
        stop_timeout: s.duration("stop_timeout")?.unwrap_or(Duration::from_secs(30)),
    };
    s.refuse(&[
        ("child_process_stdout", "redirecting the app's output (it is inherited)"),
        ("child_process_stderr", "redirecting the app's output (it is inherited)"),
    ])?;
    s.finish(&[
        "command",
        "restart_on_secret_changes",
        "restart_stop_signal",
        "reload_signal",
        "stop_timeout",
    ])?;
    Ok(e)
}

fn parse_env_template(name: &str, s: Section<'_>) -> Result<EnvTemplate> {
    if name.is_empty()
        || name.contains('=')
        || name.contains('\0')
        || name.as_bytes()[0].is_ascii_digit()
    {
        bail!("env_template {name:?}: not a valid environment variable name");
    }
    let contents = s.string("contents")?.ok_or_else(|| anyhow!("{} needs contents", s.name))?;
    let e = EnvTemplate {
        name: name.to_owned(),
        contents,
        error_on_missing_key: s.bool("error_on_missing_key")?.unwrap_or(false),
    };
    s.finish(&["contents", "error_on_missing_key"])?;
    Ok(e)
}

fn parse_cache(s: Section<'_>) -> Result<CacheConfig> {
    // Vault writes `persist = { type = "kubernetes", path = ... }` or `persist "kubernetes" { }`.
    let persist = match s.map.get("persist") {
        None => None,
        Some(_) => {
            let labelled = s.labelled("persist").ok().filter(|l| l.len() == 1);
            let b = match labelled {
                Some(mut l) if l[0].1.map.contains_key("path") => l.remove(0).1,
                _ => s.block("persist")?.expect("present"),
            };
            let p = PersistConfig {
                path: b.path("path")?.ok_or_else(|| anyhow!("cache.persist needs path"))?,
                key_path: b
                    .path("key_path")?
                    .ok_or_else(|| anyhow!("cache.persist needs key_path: a file on a memory filesystem that holds the cache's key"))?,
                allow_disk: b.bool("allow_disk")?.unwrap_or(false),
            };
            b.finish(&["path", "key_path", "allow_disk", "type"])?;
            Some(p)
        }
    };
    s.refuse(&[("use_auto_auth_token", "the agent's API proxy")])?;
    s.finish(&["persist"])?;
    Ok(CacheConfig { persist })
}

fn parse_listener(kind: &str, s: Section<'_>) -> Result<ListenerConfig> {
    let address = s.string("address")?.ok_or_else(|| anyhow!("{} needs address", s.name))?;
    let l = match kind {
        "unix" => ListenerConfig::Unix {
            path: address.into(),
            mode: s.mode("socket_mode")?.unwrap_or(0o600),
        },
        "tcp" => {
            let address = address
                .parse()
                .map_err(|_| anyhow!("{}: address must be IP:PORT, not {address:?}", s.name))?;
            if s.bool("tls_disable")? == Some(false) {
                bail!(
                    "{}: the agent's listener serves plain HTTP on loopback or a unix socket only; TLS is not supported",
                    s.name
                );
            }
            ListenerConfig::Tcp { address }
        }
        other => bail!("listener {other:?} is not supported (unix, tcp)"),
    };
    s.finish(&["address", "tls_disable", "socket_mode"])?;
    Ok(l)
}

/// One block of the configuration being read: knows where it is (for error messages) and which
/// keys were looked at, so `finish` can name the unknown ones.
struct Section<'a> {
    map: &'a Map<String, Value>,
    name: String,
}

impl<'a> Section<'a> {
    fn root(v: &'a Value) -> Result<Self> {
        match v {
            Value::Object(m) => Ok(Section { map: m, name: String::new() }),
            _ => bail!("the configuration must be a set of blocks and keys"),
        }
    }

    fn empty(name: &str) -> Section<'static> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        Section { map: EMPTY.get_or_init(Map::new), name: name.to_owned() }
    }

    fn child_name(&self, k: &str) -> String {
        if self.name.is_empty() { k.to_owned() } else { format!("{}.{k}", self.name) }
    }

    fn get(&self, k: &str) -> Option<&'a Value> {
        self.map.get(k).filter(|v| !v.is_null())
    }

    fn string(&self, k: &str) -> Result<Option<String>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!("{} must be a string", self.child_name(k)),
        }
    }

    fn string_or_int(&self, k: &str) -> Result<Option<String>> {
        match self.get(k) {
            Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
            _ => self.string(k),
        }
    }

    fn path(&self, k: &str) -> Result<Option<PathBuf>> {
        match self.string(k)? {
            Some(s) if s.is_empty() => bail!("{} must not be empty", self.child_name(k)),
            other => Ok(other.map(PathBuf::from)),
        }
    }

    fn bool(&self, k: &str) -> Result<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" => Ok(Some(false)),
            Some(_) => bail!("{} must be true or false", self.child_name(k)),
        }
    }

    fn int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| anyhow!("{} must be a whole number", self.child_name(k))),
            Some(_) => bail!("{} must be a whole number", self.child_name(k)),
        }
    }

    /// Durations as Vault writes them: `"90s"`, `"5m"`, `"1h30m"`, or a number of seconds.
    fn duration(&self, k: &str) -> Result<Option<Duration>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|s| Some(Duration::from_secs(s)))
                .ok_or_else(|| anyhow!("{} must be a duration like \"30s\"", self.child_name(k))),
            Some(Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| {
                anyhow!(
                    "{} must be a duration like \"30s\" or \"5m\", not {s:?}",
                    self.child_name(k)
                )
            }),
            Some(_) => bail!("{} must be a duration like \"30s\"", self.child_name(k)),
        }
    }

    /// File modes: `"0400"` or `0400` (HCL reads a bare 0400 as the number 400: its digits are
    /// taken as octal, as Vault does).
    fn mode(&self, k: &str) -> Result<Option<u32>> {
        let digits = match self.get(k) {
            None => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => bail!("{} must be an octal mode like \"0400\"", self.child_name(k)),
        };
        match u32::from_str_radix(digits.trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o777 => Ok(Some(m)),
            _ => {
                bail!("{} must be an octal mode like \"0400\", not {digits:?}", self.child_name(k))
            }
        }
    }

    fn string_list(&self, k: &str) -> Result<Option<Vec<String>>> {
        let list = match self.get(k) {
            None => return Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| anyhow!("{} must be a list of strings", self.child_name(k)))?,
            Some(_) => bail!(
                "{} must be a list of strings, like [\"/app\", \"--flag\"]",
                self.child_name(k)
            ),
        };
        if list.is_empty() || list[0].is_empty() {
            bail!("{} must name a program", self.child_name(k));
        }
        Ok(Some(list))
    }

    /// A block written once (`coffer { ... }`).
    fn block(&self, k: &str) -> Result<Option<Section<'a>>> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Section { map: m, name: self.child_name(k) })),
            Some(Value::Array(_)) => bail!("{} may be given only once", self.child_name(k)),
            Some(_) => bail!("{} must be a block: {k} {{ ... }}", self.child_name(k)),
        }
    }

    /// A block that may repeat (`template { }` ...), in order.
    fn blocks(&self, k: &str) -> Result<Vec<Section<'a>>> {
        let name = self.child_name(k);
        match self.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Object(m)) => Ok(vec![Section { map: m, name }]),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(Section { map: m, name: format!("{name}[{i}]") }),
                    _ => bail!("{name}[{i}] must be a block"),
                })
                .collect(),
            Some(_) => bail!("{name} must be a block: {k} {{ ... }}"),
        }
    }

    /// Labelled blocks (`listener "unix" { ... }`), repeated ones included.
    fn labelled(&self, k: &str) -> Result<Vec<(&'a str, Section<'a>)>> {
        let name = self.child_name(k);
        let mut out = Vec::new();
        let mut add = |m: &'a Map<String, Value>| -> Result<()> {
            for (label, body) in m {
                let bname = format!("{name} \"{label}\"");
                match body {
                    Value::Object(b) => out.push((label.as_str(), Section { map: b, name: bname })),
                    Value::Array(items) => {
                        for it in items {
                            let b =
                                it.as_object().ok_or_else(|| anyhow!("{bname} must be a block"))?;
                            out.push((label.as_str(), Section { map: b, name: bname.clone() }));
                        }
                    }
                    _ => bail!("{bname} must be a block"),
                }
            }
            Ok(())
        };
        match self.get(k) {
            None => {}
            Some(Value::Object(m)) => add(m)?,
            // Vault's JSON form may list them: "listener": [{"unix": {...}}].
            Some(Value::Array(items)) => {
                for it in items {
                    add(it.as_object().ok_or_else(|| anyhow!("{name} must be a block"))?)?;
                }
            }
            Some(_) => bail!("{name} must be a block with a label, like {k} \"TYPE\" {{ ... }}"),
        }
        Ok(out)
    }

    /// Vault Agent keys Coffer does not implement: an error that says so, not "unknown key".
    fn refuse(&self, keys: &[(&str, &str)]) -> Result<()> {
        for (k, what) in keys {
            if self.map.contains_key(*k) {
                bail!("{}: not supported by the Coffer agent ({what})", self.child_name(k));
            }
        }
        Ok(())
    }

    fn finish(&self, known: &[&str]) -> Result<()> {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                let at = if self.name.is_empty() {
                    "the top level".to_owned()
                } else {
                    self.name.clone()
                };
                bail!("unknown key {k:?} in {at} (known: {})", known.join(", "));
            }
        }
        Ok(())
    }
}

/// Go's duration syntax as Vault uses it (`1h30m`, `90s`, `500ms`), or bare whole seconds:
/// [`coffer_time::parse_duration_or_secs`].
pub fn parse_duration(s: &str) -> Option<Duration> {
    coffer_time::parse_duration_or_secs(s).ok()
}

#[cfg(test)]
mod tests;
