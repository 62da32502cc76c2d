//! [`ConnString`]: a connection string parsed once, into what tokio-postgres understands and
//! what Coffer handles itself (`sslmode`, `sslrootcert`), and the pool built from it.
//!
//! Guarantees: parameters are passed to tokio-postgres, ignored (only those with no effect
//! here), or refused by name (those that would change security if honoured, which Coffer does
//! not do yet, so that nobody believes they are in force); an unknown one is refused. The
//! string tokio-postgres reads is rebuilt from the decoded parts (every part re-encoded), so
//! its looser URL reading (the user part up to the first `@` anywhere) can never see a
//! different user, password or host than the one reported here. `sslrootcert` without
//! `sslmode` means `verify-ca`, and so does `require` with `sslrootcert` (libpq's rule).
//! Errors never contain the string, its password or any text that could be a piece of it.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{ChannelBinding, Host};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::syntax::{Form, Param, Parts, decode, kv_quote, split, url_encode};
use crate::{Error, Scrubber, SslMode, client_config};

/// Parameters tokio-postgres parses itself; they pass through.
const PASSED: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// libpq parameters with no effect here, dropped before tokio-postgres sees them.
const IGNORED: &[&str] = &["fallback_application_name", "sslcompression", "sslsni"];

/// libpq parameters that would change security if honoured, which Coffer does not (yet) do.
const REFUSED: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "requiressl",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "passfile",
    "service",
    "require_auth",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
];

/// A parsed connection string. `Debug` shows the target and TLS mode only.
pub struct ConnString {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
    form: Form,
    /// The names of the parameters the string sets (not their values).
    given: Vec<String>,
    scrubber: Scrubber,
}

/// Settings a connection string may set itself: each applies only where it does not.
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub connect_timeout: Option<Duration>,
    /// How long unacknowledged writes may wait before the connection is given up (a host that
    /// vanished without closing it), instead of TCP's 15 minutes.
    pub tcp_user_timeout: Option<Duration>,
    pub keepalives_idle: Option<Duration>,
    pub keepalives_interval: Option<Duration>,
    pub keepalives_retries: Option<u32>,
    pub application_name: Option<&'static str>,
}

/// The pool's size and limits.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: usize,
    /// How long a caller waits for a pooled connection.
    pub wait_timeout: Duration,
    /// How long making a new connection may take.
    pub create_timeout: Duration,
    /// How long checking a pooled connection before reuse may take (`None`: no limit).
    pub recycle_timeout: Option<Duration>,
    /// A connection older than this is closed instead of being reused (`None`: no limit).
    pub max_lifetime: Option<Duration>,
}

impl ConnString {
    /// Parses either spelling (see the crate documentation).
    pub fn parse(s: &str) -> Result<Self, Error> {
        let scrubber = Scrubber::for_conn_string(s);
        let bad = |why: &str| Error::Invalid(why.to_owned());
        let parts = split(s);
        if let Some(problem) = parts.problem {
            let hint = match parts.form {
                Form::Url => " (percent-encode '@', '/', '?', '&', '%' in the user and password)",
                Form::KeyValue => "",
            };
            return Err(Error::Invalid(format!("{problem}{hint}")));
        }
        let mut ssl_mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        let mut given = Vec::new();
        for p in &parts.params {
            let value = || {
                String::from_utf8(p.value.clone())
                    .map_err(|_| bad("a parameter value is not valid UTF-8"))
            };
            match p.key.as_str() {
                "sslmode" => {
                    ssl_mode = Some(SslMode::parse(&value()?).ok_or_else(|| {
                        bad("sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full")
                    })?);
                }
                "sslrootcert" => {
                    let v = value()?;
                    if v == "system" {
                        return Err(bad(
                            "sslrootcert=system is not supported: name the CA file (there is no system CA bundle in a scratch container)",
                        ));
                    }
                    root_cert = Some(PathBuf::from(v));
                }
                k if PASSED.contains(&k) => kept.push((p, value()?)),
                k if IGNORED.contains(&k) => continue,
                k if REFUSED.contains(&k) => {
                    return Err(Error::Invalid(format!(
                        "parameter {k} is not supported by Coffer"
                    )));
                }
                k if is_identifier(k) => {
                    return Err(Error::Invalid(format!("unknown parameter {k}")));
                }
                _ => {
                    return Err(bad(match parts.form {
                        Form::Url => {
                            "unknown parameter (if the password contains '@', '/', '&' or '%', percent-encode them)"
                        }
                        Form::KeyValue => {
                            "unknown parameter (quote a value that holds spaces: key='a b')"
                        }
                    }));
                }
            }
            given.push(p.key.clone());
        }
        let ssl_mode = match (ssl_mode, &root_cert) {
            (None, Some(_)) | (Some(SslMode::Require), Some(_)) => SslMode::VerifyCa,
            (Some(SslMode::VerifyCa | SslMode::VerifyFull), None) => {
                return Err(bad(
                    "sslmode=verify-ca and verify-full need sslrootcert=/path/to/ca.pem (Coffer trusts only the CA it is given)",
                ));
            }
            (Some(mode), _) => mode,
            (None, None) => SslMode::Prefer,
        };
        let rebuilt = rebuild(s, &parts, &kept)?;
        let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
            // tokio-postgres does not echo values today; scrub anyway, in case a later one does.
            Error::Invalid(format!(
                "not a valid connection string: {}",
                scrubber.scrub(&e.to_string())
            ))
        })?;
        // tokio-postgres knows disable/prefer/require; verification is the TLS connector's job.
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        Ok(Self { config, ssl_mode, root_cert, form: parts.form, given, scrubber })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// For the caller's own settings (a user and password from elsewhere, session options).
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    pub fn root_cert(&self) -> Option<&std::path::Path> {
        self.root_cert.as_deref()
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// Whether the string sets parameter `name` itself.
    pub fn has_param(&self, name: &str) -> bool {
        self.given.iter().any(|g| g == name)
    }

    /// Knows the string and every password written into it.
    pub fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }

    /// Whether the TLS mode checks who the server is (`verify-ca`, `verify-full`).
    pub fn authenticates_server(&self) -> bool {
        matches!(self.ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// Whether every host is this machine (loopback or a Unix socket).
    pub fn is_local(&self) -> bool {
        self.config.get_hosts().iter().all(|h| match h {
            Host::Tcp(name) => {
                name == "localhost"
                    || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            Host::Unix(_) => true,
        })
    }

    /// `host:port/database` (several hosts joined by commas), for logs and errors: never the
    /// password.
    pub fn target(&self) -> String {
        let c = &self.config;
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(dir) => format!("{}:{port}", dir.display()),
                }
            })
            .collect();
        let db = c.get_dbname().or(c.get_user()).unwrap_or("postgres");
        format!("{}/{db}", hosts.join(","))
    }

    /// Applies `d` where the string does not say otherwise.
    pub fn apply(&mut self, d: &Defaults) {
        let c = &mut self.config;
        if let Some(t) = d.connect_timeout
            && c.get_connect_timeout().is_none()
        {
            c.connect_timeout(t);
        }
        if let Some(t) = d.tcp_user_timeout
            && c.get_tcp_user_timeout().is_none()
        {
            c.tcp_user_timeout(t);
        }
        if let Some(name) = d.application_name
            && c.get_application_name().is_none()
        {
            c.application_name(name);
        }
        let given = |k: &str| self.given.iter().any(|g| g == k);
        if let Some(t) = d.keepalives_idle
            && !given("keepalives_idle")
        {
            c.keepalives_idle(t);
        }
        if let Some(t) = d.keepalives_interval
            && !given("keepalives_interval")
        {
            c.keepalives_interval(t);
        }
        if let Some(n) = d.keepalives_retries
            && !given("keepalives_retries")
        {
            c.keepalives_retries(n);
        }
    }

    /// With TLS that does not authenticate the server (`require` without `sslrootcert`),
    /// requires channel binding unless the string sets `channel_binding` itself:
    /// SCRAM-SHA-256-PLUS ties the login to the TLS session, and a server asking for a
    /// cleartext or MD5 password (or none) is refused, so a man in the middle gets no password.
    /// `prefer` cannot be protected this way: it falls back to plaintext.
    pub fn bind_channel_when_unauthenticated(&mut self) {
        if self.ssl_mode == SslMode::Require && !self.has_param("channel_binding") {
            self.config.channel_binding(ChannelBinding::Require);
        }
    }

    /// The TLS connector the string's `sslmode` asks for (reads `sslrootcert`), for a
    /// connection made outside a pool with [`ConnString::config`] (e.g. one that LISTENs).
    pub fn tls(&self) -> Result<MakeRustlsConnect, Error> {
        Ok(MakeRustlsConnect::new(client_config(self.ssl_mode, self.root_cert.as_deref())?))
    }

    /// The pool, with TLS as the string's `sslmode` says (reads `sslrootcert`); no connection
    /// is made until one is asked for.
    pub fn into_pool(self, o: &PoolOptions) -> Result<Pool, Error> {
        let tls = self.tls()?;
        let manager = Manager::from_config(
            self.config,
            tls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let mut b = Pool::builder(manager)
            .max_size(o.max_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(o.wait_timeout))
            .create_timeout(Some(o.create_timeout))
            .recycle_timeout(o.recycle_timeout);
        if let Some(lifetime) = o.max_lifetime {
            b = b.pre_recycle(deadpool_postgres::Hook::sync_fn(move |_, m| {
                if m.age() > lifetime {
                    Err(deadpool_postgres::HookError::Message("max_connection_lifetime".into()))
                } else {
                    Ok(())
                }
            }));
        }
        b.build().map_err(|e| Error::Pool(e.to_string()))
    }
}

impl std::fmt::Debug for ConnString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnString")
            .field("target", &self.target())
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// The string tokio-postgres reads: the parts, decoded and encoded again, without Coffer's own
/// parameters.
fn rebuild(s: &str, parts: &Parts<'_>, kept: &[(&Param, String)]) -> Result<String, Error> {
    let utf8 = |raw: &str, what: &str| {
        String::from_utf8(decode(raw))
            .map_err(|_| Error::Invalid(format!("{what} is not valid UTF-8")))
    };
    match parts.form {
        Form::Url => {
            let mut out = String::from("postgresql://");
            if let Some(user) = parts.user {
                out.push_str(&url_encode(utf8(user, "the user name")?));
                if let Some(span) = &parts.password {
                    out.push(':');
                    out.push_str(&url_encode(decode(&s[span.clone()])));
                }
                out.push('@');
            }
            out.push_str(parts.hosts);
            if let Some(path) = parts.path {
                out.push('/');
                out.push_str(&url_encode(utf8(path, "the database name")?));
            }
            let query: Vec<String> =
                kept.iter().map(|(p, v)| format!("{}={}", p.key, url_encode(v))).collect();
            if !query.is_empty() {
                out.push('?');
                out.push_str(&query.join("&"));
            }
            Ok(out)
        }
        Form::KeyValue => {
            let items: Vec<String> =
                kept.iter().map(|(p, v)| format!("{}={}", p.key, kv_quote(v))).collect();
            Ok(items.join(" "))
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

#[cfg(test)]
mod tests;
