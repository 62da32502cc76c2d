//! How a command reaches the server: the flags every command takes (`Global`); the address, CA,
//! client certificate and token they resolve to (the flag, then `COFFER_*`, then `VAULT_*`, and
//! for the token the one saved by `coffer login`); the input helpers for `k=v` arguments and
//! secrets read from stdin; and the advice printed when a request fails. It depends on `output`
//! only, so every command module can use it without a cycle.

use std::io::{BufRead, IsTerminal, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use coffer_api::{Client, ClientConfig, SealKey};
use serde_json::{Map, Value};

use super::output::{Format, print_body};

#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// Address of the Coffer server [env: COFFER_ADDR, VAULT_ADDR] [default: https://127.0.0.1:8200]
    #[arg(long, global = true, value_name = "URL")]
    pub address: Option<String>,
    /// PEM file of the CA(s) that signed the server's certificate [env: COFFER_CACERT, VAULT_CACERT]
    #[arg(long = "ca-cert", global = true, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS [env: COFFER_CLIENT_CERT, VAULT_CLIENT_CERT]
    #[arg(long = "client-cert", global = true, value_name = "FILE")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key for -client-cert [env: COFFER_CLIENT_KEY, VAULT_CLIENT_KEY]
    #[arg(long = "client-key", global = true, value_name = "FILE")]
    pub client_key: Option<std::path::PathBuf>,
    /// Do not check the server's certificate: for a throwaway test server only, as anyone on the
    /// network path can then read and change the traffic, the token included; a warning says so
    /// each time [env: COFFER_SKIP_VERIFY, VAULT_SKIP_VERIFY]
    #[arg(
        long = "tls-skip-verify",
        global = true,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub tls_skip_verify: Option<bool>,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print only this field of the response, raw
    #[arg(long, global = true, value_name = "NAME")]
    pub field: Option<String>,
    /// Have the server wrap the answer in a single-use token valid this long (e.g. 60s); unwrap
    /// it with `coffer unwrap` [env: COFFER_WRAP_TTL, VAULT_WRAP_TTL]
    #[arg(long = "wrap-ttl", global = true, value_name = "DURATION")]
    pub wrap_ttl: Option<String>,
    /// Have the server seal the answer to a key this command makes in memory (HPKE, sent as
    /// X-Coffer-Seal-To) and open it here, so nothing between holds it in clear; an answer that
    /// comes back unsealed is refused. See docs/sealed-responses.md
    #[arg(long, global = true)]
    pub seal: bool,
}

/// Go's `strconv.ParseBool`, which vault uses for its boolean flags and variables.
fn parse_go_bool(s: &str) -> std::result::Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true, false, 1, 0, t, f)")),
    }
}

/// The flag, else COFFER_SKIP_VERIFY, else VAULT_SKIP_VERIFY; an unparsable variable is an
/// error, as in vault, rather than a silent "verify" or "skip".
fn tls_skip_verify(g: &Global) -> Result<bool> {
    if let Some(b) = g.tls_skip_verify {
        return Ok(b);
    }
    for name in ["COFFER_SKIP_VERIFY", "VAULT_SKIP_VERIFY"] {
        if let Some(v) = env_any(&[name]) {
            return parse_go_bool(&v).map_err(|e| anyhow!("{name}: {e}"));
        }
    }
    Ok(false)
}

pub(super) fn env_any(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

pub(super) fn token_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".coffer-token"))
}

/// The token requests carry: COFFER_TOKEN, VAULT_TOKEN, else the one `coffer login` saved.
pub(super) fn current_token() -> Option<String> {
    env_any(&["COFFER_TOKEN", "VAULT_TOKEN"]).or_else(saved_token)
}

fn saved_token() -> Option<String> {
    let t = std::fs::read_to_string(token_file()?).ok()?;
    Some(t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The server's address when one is configured (the flag or the environment, not the default)
/// and a token is at hand: what recording a host fault on the server needs.
pub(super) fn configured_server(g: &Global) -> Option<String> {
    let address = g.address.clone().or_else(|| env_any(&["COFFER_ADDR", "VAULT_ADDR"]))?;
    env_any(&["COFFER_TOKEN", "VAULT_TOKEN"]).or_else(saved_token)?;
    Some(address)
}

fn address(g: &Global) -> String {
    g.address
        .clone()
        .or_else(|| env_any(&["COFFER_ADDR", "VAULT_ADDR"]))
        .unwrap_or_else(|| "https://127.0.0.1:8200".into())
}

pub(super) fn client(g: &Global) -> Result<Client> {
    let ca = g
        .ca_cert
        .clone()
        .or_else(|| env_any(&["COFFER_CACERT", "VAULT_CACERT"]).map(PathBuf::from));
    let ca_cert_pem = match ca {
        Some(p) => Some(
            std::fs::read(&p)
                .with_context(|| format!("cannot read CA certificate {}", p.display()))?,
        ),
        None => None,
    };
    let cert = g
        .client_cert
        .clone()
        .or_else(|| env_any(&["COFFER_CLIENT_CERT", "VAULT_CLIENT_CERT"]).map(PathBuf::from));
    let key = g
        .client_key
        .clone()
        .or_else(|| env_any(&["COFFER_CLIENT_KEY", "VAULT_CLIENT_KEY"]).map(PathBuf::from));
    let client_identity_pem = match (cert, key) {
        (Some(c), Some(k)) => {
            let mut pem = std::fs::read(&c)
                .with_context(|| format!("cannot read client certificate {}", c.display()))?;
            pem.extend(
                std::fs::read(&k)
                    .with_context(|| format!("cannot read client key {}", k.display()))?,
            );
            Some(pem)
        }
        (None, None) => None,
        _ => bail!("a client certificate needs both -client-cert and -client-key"),
    };
    let tls_skip_verify = tls_skip_verify(g)?;
    if tls_skip_verify {
        eprintln!(
            "WARNING! -tls-skip-verify: the server's certificate is not checked; anyone on the \
             network path can read and change this traffic, the token included."
        );
    }
    let cfg = ClientConfig {
        address: address(g),
        ca_cert_pem,
        client_identity_pem,
        timeout: None,
        tls_skip_verify,
    };
    let token = current_token();
    let wrap_ttl = g.wrap_ttl.clone().or_else(|| env_any(&["COFFER_WRAP_TTL", "VAULT_WRAP_TTL"]));
    let seal_key = if g.seal { Some(Arc::new(SealKey::generate()?)) } else { None };
    Ok(Client::new(&cfg)?.with_token(token).with_wrap_ttl(wrap_ttl).with_seal_key(seal_key))
}

/// What a failed command prints on stderr: a refusal in vault's shape (`Error making API
/// request.` with the method and URL), followed by advice for the common refusals; a failure to
/// connect with advice by cause; anything else as `Error: ` and its chain.
/// What turns on the unseal-share endpoints a listener refuses by default (OpenBao's 405 does
/// not say).
fn key_share_advice(url: &str) -> String {
    let option = if url.contains("/v1/sys/generate-root/") {
        "disable_unauthed_generate_root_endpoints"
    } else if url.contains("/v1/sys/rekey/") || url.contains("/v1/sys/rekey-recovery-key/") {
        "disable_unauthed_rekey_endpoints"
    } else {
        return String::new();
    };
    format!(
        "\n\nThe server's listener does not serve this endpoint without a token (the default). An \
         operator can set {option} = false on a listener only operators reach and restart the \
         server (see docs/operations.md)."
    )
}

pub(super) fn explain(e: &anyhow::Error) -> String {
    if let Some(api) = e.downcast_ref::<coffer_api::Error>() {
        return match api {
            coffer_api::Error::Unreachable { addr, cause } => format!(
                "Error: cannot reach the Coffer server at {addr}: {cause}\n\n{}",
                connection_advice(addr, cause)
            ),
            coffer_api::Error::Api { status, errors, method, url } => {
                let advice = match status {
                    503 => "\n\nCoffer is sealed (or a standby without an active node). Unseal it \
                            with `coffer operator unseal`, repeated with different key shares until \
                            the threshold is reached."
                        .to_owned(),
                    403 => "\n\nPermission denied: the token is missing, expired, revoked, or its \
                            policies do not allow this. Log in with `coffer login` or set \
                            COFFER_TOKEN, and check the token's policies with `coffer token lookup`."
                        .to_owned(),
                    405 => key_share_advice(url),
                    _ => String::new(),
                };
                format!("{}{advice}", api_error(*status, errors, method, url))
            }
            other => format!("Error: {other}"),
        };
    }
    format!("Error: {e:#}")
}

/// Vault's `ResponseError` text, with one change: each error on a line of its own (vault runs
/// them together).
fn api_error(status: u16, errors: &[String], method: &str, url: &str) -> String {
    format!(
        "Error making API request.\n\nURL: {method} {url}\nCode: {status}. Errors:\n\n{}",
        errors.iter().map(|e| format!("* {e}")).collect::<Vec<_>>().join("\n")
    )
}

/// What to do about a failed connection, by its cause as the error chain names it (rustls,
/// hyper and the resolver each word theirs their own way, so this matches their words).
fn connection_advice(addr: &str, cause: &str) -> String {
    let c = cause.to_ascii_lowercase();
    let tls_addr = addr.starts_with("https://");
    if c.contains("unknownissuer") || c.contains("unknown issuer") {
        return "The server's certificate is not signed by a CA this client trusts. Give the CA's PEM \
file with -ca-cert=FILE or export COFFER_CACERT=FILE (VAULT_CACERT also works). For a throwaway \
test server only, -tls-skip-verify skips the check."
            .into();
    }
    if c.contains("notvalidforname") || c.contains("not valid for name") {
        return "The server's certificate is not issued for the host name in the address. Use a name \
(or IP address) the certificate lists in COFFER_ADDR."
            .into();
    }
    if c.contains("invalid peer certificate")
        || (c.contains("certificate") && c.contains("expired"))
    {
        return "The server's certificate was refused (see the cause above). Check it, and the CA \
given with -ca-cert or COFFER_CACERT."
            .into();
    }
    if tls_addr
        && (c.contains("invalidcontenttype")
            || c.contains("corrupt message")
            || c.contains("invalid message")
            || c.contains("wrong version number"))
    {
        return format!(
            "The server answers plain HTTP, not TLS. Use http:// in the address: export \
COFFER_ADDR={}",
            addr.replacen("https://", "http://", 1)
        );
    }
    if !tls_addr
        && (c.contains("connection reset")
            || c.contains("connection closed before message completed")
            || c.contains("invalid http version")
            || c.contains("unexpected eof")
            || c.contains("incomplete message"))
    {
        return format!(
            "The server may be speaking TLS: try https:// in the address, export COFFER_ADDR={}",
            addr.replacen("http://", "https://", 1)
        );
    }
    if c.contains("dns error") || c.contains("failed to lookup address") {
        return "The host name in the address does not resolve. Check COFFER_ADDR (or -address), e.g. \
export COFFER_ADDR=https://coffer.example.com:8200."
            .into();
    }
    if c.contains("connection refused") {
        return "Nothing listens there. Is the server running, and is this its address? Point \
COFFER_ADDR at it, e.g. export COFFER_ADDR=http://127.0.0.1:8200 for a `coffer server -dev`."
            .into();
    }
    "Is the server running at that address? Point COFFER_ADDR at it, and set COFFER_CACERT if \
its certificate is signed by your own CA."
        .into()
}

pub(super) fn print_answer(g: &Global, body: Option<&Value>) -> Result<ExitCode> {
    match body {
        Some(b) => print_body(b, g.format, g.field.as_deref())?,
        None => println!("Success!"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `k=v` pairs; `k=@file` reads the file; `k=-` reads stdin.
pub(super) fn parse_pairs(items: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for item in items {
        let (k, v) = item.split_once('=').ok_or_else(|| anyhow!("{item:?} is not key=value"))?;
        if k.is_empty() {
            bail!("{item:?} has an empty key");
        }
        let v = if let Some(path) = v.strip_prefix('@') {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {path} for key {k:?}"))?
        } else if v == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s.trim_end_matches('\n').to_owned()
        } else {
            v.to_owned()
        };
        m.insert(k.to_owned(), Value::String(v));
    }
    Ok(m)
}

pub(super) fn parse_write_data(items: &[String]) -> Result<Map<String, Value>> {
    if items.len() == 1 && items[0] == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        return match serde_json::from_str(&s).context("stdin must hold a JSON object")? {
            Value::Object(m) => Ok(m),
            _ => bail!("stdin must hold a JSON object"),
        };
    }
    parse_pairs(items)
}

pub(super) fn read_secret_input(prompt: &str, arg: Option<String>) -> Result<String> {
    match arg.as_deref() {
        Some("-") | None => {
            let stdin = std::io::stdin();
            if arg.is_none() && stdin.is_terminal() {
                eprint!("{prompt}");
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            let v = line.trim().to_owned();
            if v.is_empty() {
                bail!("no value given on standard input");
            }
            Ok(v)
        }
        Some(v) => Ok(v.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_read_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("v.txt");
        std::fs::write(&f, "from-file").expect("write");
        let m = parse_pairs(&["a=1".into(), format!("b=@{}", f.display()), "c=x=y".into()])
            .expect("parse");
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "from-file");
        assert_eq!(m["c"], "x=y");
        assert!(parse_pairs(&["novalue".into()]).is_err());
        assert!(parse_pairs(&["=v".into()]).is_err());
    }
}
