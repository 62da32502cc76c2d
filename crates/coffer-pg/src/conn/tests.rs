//! The one connection-string parser: both spellings, TLS modes, percent-decoding, and that no
//! form of password survives into an error, a `Debug` output or a redacted string.

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::{redact, written_passwords};

fn parse(s: &str) -> ConnString {
    ConnString::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn err(s: &str) -> String {
    match ConnString::parse(s) {
        Ok(_) => panic!("accepted: {s}"),
        Err(e) => e.to_string(),
    }
}

fn password(c: &ConnString) -> Option<&[u8]> {
    c.config().get_password()
}

#[test]
fn a_plain_url_defaults_to_prefer() {
    let c = parse("postgres://coffer:s3cret@db.internal:5433/vault");
    assert_eq!(c.ssl_mode(), SslMode::Prefer);
    assert_eq!(c.form(), Form::Url);
    assert_eq!(c.target(), "db.internal:5433/vault");
    assert_eq!(c.config().get_user(), Some("coffer"));
    assert_eq!(password(&c), Some(&b"s3cret"[..]));
    assert!(!c.is_local());
    assert!(parse("postgres://u@127.0.0.1,localhost/db").is_local());
}

#[test]
fn ssl_parameters_are_taken_out_before_tokio_postgres_sees_them() {
    let c = parse(
        "postgresql://u:p%40ss@127.0.0.1/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=coffer&fallback_application_name=x",
    );
    assert_eq!(c.ssl_mode(), SslMode::VerifyFull);
    assert_eq!(c.root_cert(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(c.config().get_ssl_mode(), tokio_postgres::config::SslMode::Require);
    assert_eq!(password(&c), Some(&b"p@ss"[..]));
    assert_eq!(c.config().get_application_name(), Some("coffer"));
    assert!(c.has_param("application_name") && !c.has_param("fallback_application_name"));
}

#[test]
fn every_sslmode_value_means_what_libpq_says() {
    let mode = |q: &str| parse(&format!("postgres://u@h/db?{q}")).ssl_mode();
    assert_eq!(mode("sslmode=disable"), SslMode::Disable);
    // `allow` (plaintext first) is read as `prefer` (TLS first): never less than asked for.
    assert_eq!(mode("sslmode=allow"), SslMode::Prefer);
    assert_eq!(mode("sslmode=prefer"), SslMode::Prefer);
    assert_eq!(mode("sslmode=require"), SslMode::Require);
    assert_eq!(mode("sslmode=verify-ca&sslrootcert=/ca"), SslMode::VerifyCa);
    assert_eq!(mode("sslmode=verify-full&sslrootcert=/ca"), SslMode::VerifyFull);
    // libpq: a root certificate makes `require` (and no sslmode at all) check the chain.
    assert_eq!(mode("sslmode=require&sslrootcert=/ca"), SslMode::VerifyCa);
    assert_eq!(mode("sslrootcert=/ca"), SslMode::VerifyCa);
    assert_eq!(mode("sslmode=prefer&sslrootcert=/ca"), SslMode::Prefer);
    let tp = |q: &str| parse(&format!("postgres://u@h/db?{q}")).config().get_ssl_mode();
    assert_eq!(tp("sslmode=disable"), tokio_postgres::config::SslMode::Disable);
    assert_eq!(tp("sslmode=allow"), tokio_postgres::config::SslMode::Prefer);
    assert_eq!(tp("sslmode=require"), tokio_postgres::config::SslMode::Require);
    let e = err("postgres://u@h/db?sslmode=maybe");
    assert!(e.contains("sslmode must be one of") && !e.contains("maybe"), "{e}");
    assert_eq!(parse("host=h sslmode=require dbname=d").ssl_mode(), SslMode::Require);
}

#[test]
fn verify_modes_need_an_explicit_ca() {
    for mode in ["verify-ca", "verify-full"] {
        let e = err(&format!("postgres://u:p@h/db?sslmode={mode}"));
        assert!(e.contains("sslrootcert"), "{e}");
        assert!(err(&format!("host=h sslmode={mode}")).contains("sslrootcert"));
    }
    assert!(err("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=system").contains("system"));
}

#[test]
fn unknown_and_unsupported_parameters_are_refused_by_name() {
    assert!(err("postgres://u:p@h/db?sslcert=/c.pem").contains("sslcert"));
    assert!(err("host=h sslkey=/k.pem").contains("sslkey"));
    assert!(err("postgres://u:p@h/db?bogus=1").contains("bogus"));
    assert!(err("host=h bogus=1").contains("bogus"));
    assert!(err("mysql://u:p@h/db").contains("postgres://"));
    assert!(err("postgres://u:p@h/db?user").contains("no '='"));
}

#[test]
fn key_value_strings_with_quoted_values_holding_spaces() {
    let c = parse("host=h password='a b sslmode=evil = \\' x' user = u sslmode=disable");
    assert_eq!(c.form(), Form::KeyValue);
    assert_eq!(c.ssl_mode(), SslMode::Disable);
    assert_eq!(password(&c), Some(&b"a b sslmode=evil = ' x"[..]));
    assert_eq!(c.config().get_user(), Some("u"));
    let c = parse("host = h port=5433 dbname='my db' options='-c search_path=x'");
    assert_eq!(c.target(), "h:5433/my db");
    assert_eq!(c.config().get_options(), Some("-c search_path=x"));
    let c = parse("host=h password=a\\ b");
    assert_eq!(password(&c), Some(&b"a b"[..]));
    let c = parse("host=h password=x://y options='-c a=b://c'");
    assert_eq!((c.form(), password(&c)), (Form::KeyValue, Some(&b"x://y"[..])));
    assert_eq!(Form::of(" postgres://h"), Form::KeyValue);
    assert_eq!(Form::of("postgresql://h"), Form::Url);
    assert!(err("host=h password='open").contains("closing quote"));
    assert!(err("host=h password=a b").contains("quote a value"));
    assert!(err("host=h password=").contains("no value"));
    assert_eq!(password(&parse("host=h password=''")), Some(&b""[..]));
}

#[test]
fn percent_decoding() {
    assert_eq!(decode("a%2Fb%"), b"a/b%");
    assert_eq!(decode("%zz%4"), b"%zz%4");
    assert_eq!(decode("a+b%2b"), b"a+b+");
    assert_eq!(decode("%ff"), [0xff]);
    let c = parse(
        "postgres://us%65r:p%25%2B+x%zz@h/d%62?options=-c%20a%3Db&sslrootcert=%2Fca%20dir%2Fca.pem",
    );
    assert_eq!(c.config().get_user(), Some("user"));
    assert_eq!(password(&c), Some(&b"p%++x%zz"[..]));
    assert_eq!(c.config().get_dbname(), Some("db"));
    assert_eq!(c.config().get_options(), Some("-c a=b"));
    assert_eq!(c.root_cert(), Some(Path::new("/ca dir/ca.pem")));
    // A password need not be UTF-8; other parts must be.
    assert_eq!(password(&parse("postgres://u:%ff@h/db")), Some(&[0xff][..]));
    assert!(err("postgres://%ff@h/db").contains("user name is not valid UTF-8"));
    assert!(err("postgres://u@h/db?application_name=%ff").contains("not valid UTF-8"));
}

#[test]
fn urls_are_read_as_libpq_reads_them() {
    // The user part ends at the first `@` before any `/`: a `?` or `:` in the password stays.
    let c = parse("postgres://u:s3c?ret:x@h/db");
    assert_eq!(password(&c), Some(&b"s3c?ret:x"[..]));
    assert_eq!(c.target(), "h:5432/db");
    // An `@` after the path is not a user part, though tokio-postgres alone would take it as one.
    let c = parse("postgres://h/db?application_name=a@b");
    assert_eq!(c.config().get_user(), None);
    assert_eq!(c.config().get_application_name(), Some("a@b"));
    assert_eq!(c.target(), "h:5432/db");
    let c = parse("postgresql://u@[::1]:5433,h2:5434/db?password=p%26w");
    assert_eq!(c.target(), "::1:5433,h2:5434/db");
    assert_eq!(password(&c), Some(&b"p&w"[..]));
}

#[test]
fn every_form_of_password_is_kept_out_of_errors_debug_and_display() {
    let pw = "hunter2Secret";
    // (string, whether the password is written only where a password goes)
    let forms = [
        (format!("postgres://u:{pw}@h:notaport/db"), true),
        (format!("postgres://u:{pw}@h/db?port=x"), true),
        ("postgres://u:hunter2%53ecret@h/db?port=x".to_owned(), true),
        (format!("postgres://u:{pw}@h/db?sslmode={pw}"), false),
        (format!("postgres://u:{pw}@h/db?{pw}=1"), false),
        (format!("postgres://u@h/db?password={pw}&port=x"), true),
        (format!("host=h password={pw} port=x"), true),
        (format!("host=h password = '{pw} x' port=x"), true),
        (format!("host=h password='{pw}"), true),
        (format!("host=h password={pw} {pw}"), false),
    ];
    for (s, only_as_password) in &forms {
        let e = err(s);
        assert!(!e.contains("hunter2") && !e.contains("Secret"), "{s} -> {e}");
        let shown = redact(s, |_| false);
        assert!(shown.contains("xxxxx"), "{s} -> {shown}");
        if *only_as_password {
            assert!(!shown.contains("hunter2") && !shown.contains("Secret"), "{s} -> {shown}");
        }
        let written = written_passwords(s);
        assert!(written.iter().any(|w| w.starts_with(pw)), "{s}");
        let scrubbed = Scrubber::for_conn_string(s).scrub(&format!("failed: {s} / {written:?}"));
        assert!(!scrubbed.contains("hunter2"), "{s} -> {scrubbed}");
    }
    for s in [
        format!("postgres://u:{pw}@h/db"),
        format!("postgres://u@h/db?password={pw}"),
        format!("host=h user=u password='{pw} x'"),
    ] {
        let c = parse(&s);
        let dbg = format!("{c:?} {:?}", c.scrubber());
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!c.target().contains("hunter2"));
    }
    assert_eq!(
        redact("host=h password = 'a b\\'c' user=u", |_| false),
        "host=h password = xxxxx user=u"
    );
    assert_eq!(redact("postgres://u:p@h/pdb", |_| false), "postgres://u:xxxxx@h/pdb");
    // A raw `@` in the password: libpq splits at the first one, but nothing of it shows.
    assert_eq!(redact("postgres://u:p@ss@h/db", |_| false), "postgres://u:xxxxx@h/db");
    assert!(written_passwords("postgres://u:p@ss@h/db").contains(&"p@ss".to_owned()));
    assert_eq!(
        redact("postgres://u:{{password}}@h/db", |p| p == "{{password}}"),
        "postgres://u:{{password}}@h/db"
    );
}

#[test]
fn the_scrubber_removes_every_spelling_of_a_password() {
    let mut s = Scrubber::new();
    s.add("p@ss'w rd");
    let m = s.scrub("failed for p@ss'w rd and p@ss''w rd and p%40ss%27w%20rd and 'p@ss\\'w rd'");
    assert_eq!(m, "failed for [password] and [password] and [password] and [password]");
    let mut empty = Scrubber::new();
    empty.add("");
    assert_eq!(empty.scrub("nothing"), "nothing");
    assert_eq!(format!("{s:?}"), "Scrubber(4 secrets)");
}

#[test]
fn defaults_apply_only_where_the_string_says_nothing() {
    let d = Defaults {
        connect_timeout: Some(Duration::from_secs(10)),
        tcp_user_timeout: Some(Duration::from_secs(30)),
        keepalives_idle: Some(Duration::from_secs(60)),
        keepalives_interval: Some(Duration::from_secs(10)),
        keepalives_retries: Some(3),
        application_name: Some("coffer"),
    };
    let mut c = parse("postgres://u@h/db");
    c.apply(&d);
    assert_eq!(c.config().get_connect_timeout(), Some(&Duration::from_secs(10)));
    assert_eq!(c.config().get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
    assert_eq!(c.config().get_keepalives_idle(), Duration::from_secs(60));
    assert_eq!(c.config().get_keepalives_interval(), Some(Duration::from_secs(10)));
    assert_eq!(c.config().get_keepalives_retries(), Some(3));
    assert_eq!(c.config().get_application_name(), Some("coffer"));
    let mut c = parse(
        "host=h connect_timeout=3 tcp_user_timeout=4 keepalives_idle=7200 keepalives_interval=5 keepalives_retries=9 application_name=x",
    );
    c.apply(&d);
    assert_eq!(c.config().get_connect_timeout(), Some(&Duration::from_secs(3)));
    assert_eq!(c.config().get_tcp_user_timeout(), Some(&Duration::from_secs(4)));
    assert_eq!(c.config().get_keepalives_idle(), Duration::from_secs(7200));
    assert_eq!(c.config().get_keepalives_interval(), Some(Duration::from_secs(5)));
    assert_eq!(c.config().get_keepalives_retries(), Some(9));
    assert_eq!(c.config().get_application_name(), Some("x"));
}

#[test]
fn unverified_tls_requires_channel_binding_unless_the_string_says_otherwise() {
    let bound = |s: &str| {
        let mut c = parse(s);
        c.bind_channel_when_unauthenticated();
        c.config().get_channel_binding()
    };
    assert_eq!(bound("postgres://h/db?sslmode=require"), ChannelBinding::Require);
    assert_eq!(bound("host=h sslmode=require"), ChannelBinding::Require);
    assert_eq!(
        bound("postgres://h/db?sslmode=require&channel_binding=disable"),
        ChannelBinding::Disable
    );
    for q in ["sslmode=disable", "sslmode=prefer", "sslmode=require&sslrootcert=/ca"] {
        assert_eq!(bound(&format!("postgres://h/db?{q}")), ChannelBinding::Prefer, "{q}");
    }
    assert!(!parse("postgres://h/db?sslmode=require").authenticates_server());
    assert!(parse("postgres://h/db?sslmode=require&sslrootcert=/ca").authenticates_server());
}

#[test]
fn a_pool_needs_a_readable_root_certificate() {
    let opts = PoolOptions {
        max_size: 1,
        wait_timeout: Duration::from_secs(1),
        create_timeout: Duration::from_secs(1),
        recycle_timeout: None,
        max_lifetime: None,
    };
    let e = parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
        .into_pool(&opts)
        .expect_err("missing CA");
    assert!(e.to_string().contains("cannot read sslrootcert") && !e.is_internal(), "{e}");
}

#[tokio::test]
async fn a_pool_builds_without_connecting() {
    let opts = PoolOptions {
        max_size: 2,
        wait_timeout: Duration::from_secs(1),
        create_timeout: Duration::from_secs(1),
        recycle_timeout: Some(Duration::from_secs(1)),
        max_lifetime: Some(Duration::from_secs(60)),
    };
    let pool = parse("postgres://u@127.0.0.1:1/db?sslmode=disable").into_pool(&opts).expect("pool");
    assert_eq!(pool.status().size, 0);
}

proptest! {
    /// Whatever the password, written percent-encoded into a URL or quoted into a `key=value`
    /// string, it is read back exactly and redacted from the string.
    #[test]
    fn any_password_round_trips_and_is_redacted(pw in "[ -~]{1,24}") {
        let url = format!("postgres://u:{}@h/db", url_encode(&pw));
        let kv = format!("host=h password={} user=u", kv_quote(&pw));
        for (s, want) in [(url, "postgres://u:xxxxx@h/db"), (kv, "host=h password=xxxxx user=u")] {
            let c = ConnString::parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(c.config().get_password(), Some(pw.as_bytes()));
            prop_assert_eq!(written_passwords(&s), vec![pw.clone()]);
            prop_assert_eq!(redact(&s, |_| false), want);
        }
    }
}
