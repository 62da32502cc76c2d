//! The `connection_url` of the PostgreSQL backend: a libpq-style `postgres://` URL, parsed by
//! [`coffer_pg::ConnString`] (which owns the parameters, TLS modes and password scrubbing),
//! with this backend's own rules on top: a URL (not `key=value` pairs), a host and a user,
//! timeouts that notice a vanished host, and sessions that commit synchronously.
//!
//! Guarantees: no error message built here contains the URL or its password (see
//! [`coffer_pg`]). Does not read `PG*` environment variables or `~/.pgpass`: the URL says
//! everything.

use std::time::Duration;

use coffer_pg::{ConnString, Defaults, Form};

use crate::{Error, Result};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A database host that vanishes (no FIN, no RST) must not hold a pooled connection for TCP's
/// 15-minute retransmission limit: unacknowledged writes give up after 30 s.
const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// Instead of tokio-postgres's (and libpq's) 2 hours, unless the URL sets one.
const DEFAULT_KEEPALIVES_IDLE: Duration = Duration::from_secs(60);

const DEFAULTS: Defaults = Defaults {
    connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
    tcp_user_timeout: Some(DEFAULT_TCP_USER_TIMEOUT),
    keepalives_idle: Some(DEFAULT_KEEPALIVES_IDLE),
    keepalives_interval: None,
    keepalives_retries: None,
    application_name: None,
};

pub(crate) fn parse(url: &str) -> Result<ConnString> {
    let bad = |why: &str| Error::Backend(format!("postgresql connection_url: {why}"));
    if Form::of(url) != Form::Url {
        return Err(bad("must be a URL starting with postgres:// or postgresql://"));
    }
    let mut conn = ConnString::parse(url).map_err(|e| Error::Backend(format!("postgresql {e}")))?;
    conn.apply(&DEFAULTS);
    // An acknowledged write survives a crash only if it is committed durably: whatever the
    // server's, role's or database's default, Coffer's sessions commit synchronously.
    let config = conn.config_mut();
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
    Ok(conn)
}

#[cfg(test)]
mod tests {
    //! The backend's own rules; the parser itself is tested in coffer-pg.

    use coffer_pg::SslMode;

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
        assert_eq!(c.ssl_mode(), SslMode::Prefer);
        assert_eq!(c.target(), "db.internal:5433/vault");
        assert_eq!(c.config().get_user(), Some("coffer"));
        assert_eq!(c.config().get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.config().get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn only_urls_with_a_host_and_a_user_are_taken() {
        assert!(err("host=h user=u password=p").contains("must be a URL"));
        assert!(err("mysql://u:p@h/db").contains("postgres://"));
        assert!(err("postgres://h/db").contains("no user"));
        assert!(
            err("postgres://u:p@h/db?bogus=1")
                .contains("postgresql connection_url: unknown parameter bogus")
        );
    }

    #[test]
    fn errors_never_contain_the_password() {
        let cases = [
            "postgres://u:hunter2?Secret@h:notaport/db",
            "postgres://u:hunter2Secret@h:notaport/db",
            "postgres://u:hunter2Secret@h/db?sslmode=hunter2Secret",
            "postgres://u:hunter2%53ecret@h/db?port=x",
            "postgres://u@h/db?password=hunter2Secret&port=x",
        ];
        for url in cases {
            let e = err(url);
            assert!(!e.contains("hunter2") && !e.contains("Secret"), "{url} -> {e}");
        }
    }

    #[test]
    fn sessions_commit_synchronously_and_give_up_on_a_silent_host() {
        let c = parse("postgres://u:p@db.example:5432/coffer").expect("parse");
        assert_eq!(c.config().get_options(), Some("-c synchronous_commit=on"));
        assert_eq!(c.config().get_tcp_user_timeout(), Some(&DEFAULT_TCP_USER_TIMEOUT));
        assert_eq!(c.config().get_keepalives_idle(), DEFAULT_KEEPALIVES_IDLE);
        let c =
            parse("postgres://u:p@db.example/coffer?options=-c%20search_path%3Dx").expect("parse");
        assert_eq!(c.config().get_options(), Some("-c search_path=x -c synchronous_commit=on"));
        let c = parse("postgres://u:p@db.example/coffer?keepalives_idle=7200").expect("parse");
        assert_eq!(c.config().get_keepalives_idle(), Duration::from_secs(7200));
    }
}
