//! The `connection_url` of the PostgreSQL backend: a libpq-style `postgres://` URL, split into
//! what tokio-postgres understands and what Coffer handles itself (`sslmode`, `sslrootcert`).
//!
//! Guarantees: no error message built here contains the URL, its password, or any text that
//! could be a piece of it (a parameter name is only named when it is a plain identifier, since a
//! stray unencoded `?` in a password would otherwise make part of it look like one). Parameters
//! neither side understands are refused by name rather than silently dropped. Does not read
//! `PG*` environment variables or `~/.pgpass`: the URL says everything.

use std::path::PathBuf;
use std::str::FromStr;

use coffer_pg::SslMode;

use crate::{Error, Result};

/// libpq's `sslmode`, as this backend spells it (`allow` is refused).
fn parse_ssl_mode(s: &str) -> Result<SslMode> {
    if s == "allow" {
        return Err(Error::Backend(
            "postgresql connection_url: sslmode=allow is not supported (use prefer, require or verify-full)"
                .into(),
        ));
    }
    SslMode::parse(s).ok_or_else(|| {
        Error::Backend(
            "postgresql connection_url: sslmode must be one of disable, prefer, require, verify-ca, verify-full"
                .into(),
        )
    })
}

/// A parsed connection URL.
pub(crate) struct Connection {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) ssl_mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
    /// `host:port/database`, for logs and errors: never the user's password.
    pub(crate) target: String,
}

/// Parameters tokio-postgres parses itself; they pass through unchanged.
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

/// libpq parameters that would change security if honoured, which Coffer does not (yet) do:
/// refused, so that nobody believes they are in force.
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

const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const DEFAULT_TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Instead of tokio-postgres's (and libpq's) 2 hours, unless the URL sets one.
const DEFAULT_KEEPALIVES_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) fn parse(url: &str) -> Result<Connection> {
    let bad = |why: &str| Error::Backend(format!("postgresql connection_url: {why}"));
    let Some(rest) = url.strip_prefix("postgres://").or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err(bad("must be a URL starting with postgres:// or postgresql://"));
    };
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, q),
        None => (rest, ""),
    };
    let mut passed = Vec::new();
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(raw_key).ok_or_else(|| bad("a parameter name is not valid UTF-8"))?;
        let value = || decode(raw_value).ok_or_else(|| bad("a parameter value is not valid UTF-8"));
        match key.as_str() {
            "sslmode" => ssl_mode = parse_ssl_mode(&value()?)?,
            "sslrootcert" => {
                let v = value()?;
                if v == "system" {
                    return Err(bad(
                        "sslrootcert=system is not supported: name the CA file (there is no system CA bundle in a scratch container)",
                    ));
                }
                root_cert = Some(PathBuf::from(v));
            }
            k if PASSED.contains(&k) => passed.push(pair),
            k if IGNORED.contains(&k) => {}
            k if REFUSED.contains(&k) => {
                return Err(bad(&format!("parameter {k} is not supported by Coffer")));
            }
            k if is_identifier(k) => return Err(bad(&format!("unknown parameter {k}"))),
            _ => {
                return Err(bad(
                    "unknown parameter (if the password contains '?', '&', '@', ':' or '/', percent-encode them)",
                ));
            }
        }
    }
    if matches!(ssl_mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(bad(
            "sslmode=verify-ca and verify-full need sslrootcert=/path/to/ca.pem (Coffer trusts only the CA it is given)",
        ));
    }
    // tokio-postgres knows disable/prefer/require; verification is the TLS connector's job.
    passed.push(match ssl_mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
    });
    let rebuilt = format!("postgresql://{base}?{}", passed.join("&"));
    let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
        // tokio-postgres does not echo values today; scrub anyway, in case a later one does.
        bad(&format!("not a valid PostgreSQL URL: {}", scrub(&e.to_string(), url)))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    // A database host that vanishes (no FIN, no RST) must not hold a pooled connection for
    // TCP's 15-minute retransmission limit: unacknowledged writes give up after 30 s.
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEFAULT_TCP_USER_TIMEOUT);
    }
    if !passed.iter().any(|p| p.starts_with("keepalives_idle=")) {
        config.keepalives_idle(DEFAULT_KEEPALIVES_IDLE);
    }
    // An acknowledged write survives a crash only if it is committed durably: whatever the
    // server's, role's or database's default, Coffer's sessions commit synchronously.
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} -c synchronous_commit=on"),
        _ => "-c synchronous_commit=on".to_owned(),
    };
    config.options(options);
    if config.get_hosts().is_empty() {
        return Err(bad("no host: write postgres://USER:PASSWORD@HOST:5432/DATABASE"));
    }
    if config.get_user().is_none() {
        return Err(bad("no user: write postgres://USER:PASSWORD@HOST:5432/DATABASE"));
    }
    let target = describe(&config);
    Ok(Connection { config, ssl_mode, root_cert, target })
}

/// `host:port/database` (several hosts joined by commas).
fn describe(c: &tokio_postgres::Config) -> String {
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match h {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect();
    let db = c.get_dbname().or(c.get_user()).unwrap_or("postgres");
    format!("{}/{db}", hosts.join(","))
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

/// Percent-decoding (`+` stays `+`, as libpq's URI parser has it); `None` when not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: &u8| char::from(*b).to_digit(16);
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex))
            && let Ok(b) = u8::try_from(h * 16 + l)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `msg` with the URL's userinfo (raw and decoded) and the URL itself blanked out.
pub(crate) fn scrub(msg: &str, url: &str) -> String {
    let mut secrets: Vec<String> = vec![url.to_owned()];
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pw)) = userinfo.split_once(':')
            && !pw.is_empty()
        {
            secrets.push(pw.to_owned());
            if let Some(d) = decode(pw) {
                secrets.push(d);
            }
        }
    }
    let mut out = msg.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match parse(url) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_plain_url_defaults_to_prefer_and_a_connect_timeout() {
        let c = parse("postgres://coffer:s3cret@db.internal:5433/vault").expect("parse");
        assert_eq!(c.ssl_mode, SslMode::Prefer);
        assert_eq!(c.target, "db.internal:5433/vault");
        assert_eq!(c.config.get_user(), Some("coffer"));
        assert_eq!(c.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.config.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn ssl_parameters_are_taken_out_before_tokio_postgres_sees_them() {
        let c = parse(
            "postgresql://u:p%40ss@127.0.0.1/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=coffer&fallback_application_name=x",
        )
        .expect("parse");
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
        assert_eq!(c.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(c.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(c.config.get_application_name(), Some("coffer"));
    }

    #[test]
    fn verify_modes_need_an_explicit_ca() {
        for mode in ["verify-ca", "verify-full"] {
            let e = err(&format!("postgres://u:p@h/db?sslmode={mode}"));
            assert!(e.contains("sslrootcert"), "{e}");
        }
        assert!(
            err("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=system").contains("system")
        );
    }

    #[test]
    fn unknown_and_unsupported_parameters_are_refused_by_name() {
        assert!(err("postgres://u:p@h/db?sslcert=/c.pem").contains("sslcert"));
        assert!(err("postgres://u:p@h/db?bogus=1").contains("bogus"));
        assert!(err("postgres://u:p@h/db?sslmode=maybe").contains("sslmode must be"));
        assert!(err("mysql://u:p@h/db").contains("postgres://"));
    }

    #[test]
    fn errors_never_contain_the_password() {
        let cases = [
            "postgres://u:hunter2?Secret@h/db",
            "postgres://u:hunter2Secret@h:notaport/db",
            "postgres://u:hunter2Secret@h/db?sslmode=hunter2Secret",
            "postgres://u:hunter2%53ecret@h/db?port=x",
        ];
        for url in cases {
            let e = err(url);
            assert!(!e.contains("hunter2") && !e.contains("Secret"), "{url} -> {e}");
        }
    }

    #[test]
    fn sessions_commit_synchronously_and_give_up_on_a_silent_host() {
        let c = parse("postgres://u:p@db.example:5432/coffer").expect("parse");
        assert_eq!(c.config.get_options(), Some("-c synchronous_commit=on"));
        assert_eq!(c.config.get_tcp_user_timeout(), Some(&DEFAULT_TCP_USER_TIMEOUT));
        assert_eq!(c.config.get_keepalives_idle(), DEFAULT_KEEPALIVES_IDLE);
        let c =
            parse("postgres://u:p@db.example/coffer?options=-c%20search_path%3Dx").expect("parse");
        assert_eq!(c.config.get_options(), Some("-c search_path=x -c synchronous_commit=on"));
        let c = parse("postgres://u:p@db.example/coffer?keepalives_idle=7200").expect("parse");
        assert_eq!(c.config.get_keepalives_idle(), std::time::Duration::from_secs(7200));
    }

    #[test]
    fn decoding() {
        assert_eq!(decode("a%2Fb%").as_deref(), Some("a/b%"));
        assert_eq!(decode("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(decode("%ff"), None);
    }
}
