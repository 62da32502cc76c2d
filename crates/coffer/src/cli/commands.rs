//! What each command does: build the request, send it, print the answer, and turn failures into
//! messages that say what to do next.

use std::io::{BufRead, IsTerminal, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use coffer_api::{Client, ClientConfig};
use serde_json::{Map, Value, json};

use super::output::{Format, cell, fmt_duration, print_body, table};
use super::{
    AuthCmd, Cli, Command, EnableArgs, Global, OperatorCmd, PolicyCmd, SecretsCmd, TokenCmd,
    TuneArgs,
};
use crate::config::{ListenerConfig, LogFormat, ServerConfig, StorageConfig};

/// Exit code 2: the command ran, but the answer is "no" (sealed, nothing at that path).
const EXIT_NEGATIVE: u8 = 2;

fn env_any(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn token_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".coffer-token"))
}

fn saved_token() -> Option<String> {
    let t = std::fs::read_to_string(token_file()?).ok()?;
    Some(t.trim().to_owned()).filter(|t| !t.is_empty())
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
    let cfg = ClientConfig { address: address(g), ca_cert_pem, client_identity_pem, timeout: None };
    let token = env_any(&["COFFER_TOKEN", "VAULT_TOKEN"]).or_else(saved_token);
    let wrap_ttl = g.wrap_ttl.clone().or_else(|| env_any(&["COFFER_WRAP_TTL", "VAULT_WRAP_TTL"]));
    Ok(Client::new(&cfg)?.with_token(token).with_wrap_ttl(wrap_ttl))
}

/// Turns an API failure into advice.
fn explain(e: &anyhow::Error, g: &Global) -> String {
    if let Some(api) = e.downcast_ref::<coffer_api::Error>() {
        return match api {
            coffer_api::Error::Unreachable { addr, cause } => format!(
                "cannot reach the Coffer server at {addr}: {cause}\n\nIs the server running? Point COFFER_ADDR at it, e.g. export COFFER_ADDR=http://127.0.0.1:8200 for a dev server, and set COFFER_CACERT if its certificate is signed by your own CA."
            ),
            coffer_api::Error::Api { status: 503, .. } => "Coffer is sealed. Unseal it with `coffer operator unseal` (repeat with different key shares until the threshold is reached).".into(),
            coffer_api::Error::Api { status: 403, errors } => format!(
                "permission denied{}.\n\nThe token is missing, expired, revoked, or its policies do not allow this. Log in with `coffer login`, set COFFER_TOKEN, and check the token's policies with `coffer token lookup`.",
                if errors.is_empty() || errors == &["permission denied"] { String::new() } else { format!(" ({})", errors.join("; ")) }
            ),
            coffer_api::Error::Api { status, errors } => format!(
                "Error making API request.\n\nURL: {}\nCode: {status}. Errors:\n\n{}",
                address(g),
                errors.iter().map(|e| format!("* {e}")).collect::<Vec<_>>().join("\n")
            ),
            other => other.to_string(),
        };
    }
    format!("{e:#}")
}

pub(super) async fn run(cli: Cli) -> ExitCode {
    let g = cli.global.clone();
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", explain(&e, &g));
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Server(a) => server(a).await,
        Command::Operator(op) => operator(g, op).await,
        Command::Status => status(g).await,
        Command::Login(a) => login(g, a).await,
        Command::Unwrap { token } => unwrap(g, token).await,
        Command::Token(t) => token(g, t).await,
        Command::Policy(p) => policy(g, p).await,
        Command::Secrets(s) => mounts(g, s.into(), "mounts", "secrets engine").await,
        Command::Auth(a) => mounts(g, a.into(), "auth", "auth method").await,
        Command::Kv(k) => super::kv::run(g, k).await,
        Command::Audit(a) => super::audit::run(g, a).await,
        Command::Lease(l) => super::lease::run(g, l).await,
        Command::Read(a) => {
            let c = client(g)?;
            let query = parse_pairs(&a.params)?;
            let q: Vec<(&str, String)> = query.iter().map(|(k, v)| (k.as_str(), cell(v))).collect();
            match c.request_with_query("GET", &a.path, &q, None).await {
                Ok(ans) => print_answer(g, ans.body.as_ref()),
                Err(coffer_api::Error::Api { status: 404, errors }) if errors.is_empty() => {
                    eprintln!("No value found at {}", a.path);
                    Ok(ExitCode::from(EXIT_NEGATIVE))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::List(a) => {
            let c = client(g)?;
            match c.list(&a.path).await {
                Ok(ans) => print_answer(g, ans.body.as_ref()),
                Err(coffer_api::Error::Api { status: 404, errors }) if errors.is_empty() => {
                    eprintln!("No value found at {}", a.path);
                    Ok(ExitCode::from(EXIT_NEGATIVE))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Delete(a) => {
            client(g)?.delete(&a.path).await?;
            println!("Success! Data deleted (if it existed) at: {}", a.path);
            Ok(ExitCode::SUCCESS)
        }
        Command::Write(a) => {
            let data = parse_write_data(&a.data)?;
            if data.is_empty() && !a.force {
                bail!("Must supply data or use -force");
            }
            let ans = client(g)?.write(&a.path, &Value::Object(data)).await?;
            match ans.body {
                Some(b) => print_answer(g, Some(&b)),
                None => {
                    println!("Success! Data written to: {}", a.path);
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Completion { .. } => Ok(ExitCode::SUCCESS),
    }
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

async fn server(a: super::ServerArgs) -> Result<ExitCode> {
    let (cfg, dev) = if a.dev {
        let cfg = ServerConfig {
            storage: StorageConfig::Inmem,
            listeners: vec![ListenerConfig::plain(crate::config::resolve_address(
                &a.dev_listen_address,
            )?)],
            api_addr: None,
            default_lease_ttl: std::time::Duration::from_secs(768 * 3600),
            max_lease_ttl: std::time::Duration::from_secs(768 * 3600),
            log_level: "info".into(),
            log_format: LogFormat::Standard,
            login_limit: coffer_core::LoginLimit::default(),
        };
        let root = a
            .dev_root_token_id
            .or_else(|| env_any(&["COFFER_DEV_ROOT_TOKEN_ID", "VAULT_DEV_ROOT_TOKEN_ID"]));
        (cfg, Some(crate::server::DevOptions { root_token_id: root }))
    } else {
        let path = a.config.ok_or_else(|| {
            anyhow!("-config FILE is required (or -dev for a development server)")
        })?;
        (ServerConfig::load(&path)?, None)
    };
    let level = match a.log_level {
        Some(l) => crate::config::check_log_level(&l)?,
        None => cfg.log_level.clone(),
    };
    crate::server::init_logging(&level, cfg.log_format);
    crate::server::run(cfg, dev).await?;
    Ok(ExitCode::SUCCESS)
}

fn read_secret_input(prompt: &str, arg: Option<String>) -> Result<String> {
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

fn seal_status_table(b: &Value) -> String {
    let g = |k: &str| b.get(k).cloned().unwrap_or(Value::Null);
    let mut rows = vec![
        ("Seal Type".into(), cell(&g("type"))),
        ("Initialized".into(), cell(&g("initialized"))),
        ("Sealed".into(), cell(&g("sealed"))),
        ("Total Shares".into(), cell(&g("n"))),
        ("Threshold".into(), cell(&g("t"))),
    ];
    if g("sealed") == Value::Bool(true) {
        rows.push((
            "Unseal Progress".into(),
            format!("{}/{}", cell(&g("progress")), cell(&g("t"))),
        ));
        rows.push(("Unseal Nonce".into(), cell(&g("nonce"))));
    }
    rows.push(("Version".into(), cell(&g("version"))));
    rows.push(("Storage Type".into(), cell(&g("storage_type"))));
    rows.push(("HA Enabled".into(), "false".into()));
    table(&rows)
}

async fn status(g: &Global) -> Result<ExitCode> {
    let c = client(g)?;
    let ans = c.read("sys/seal-status").await?;
    let b = ans.body.unwrap_or(Value::Null);
    match g.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&b)?),
        Format::Table => print!("{}", seal_status_table(&b)),
    }
    Ok(if b.get("sealed") == Some(&Value::Bool(false)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NEGATIVE)
    })
}

async fn operator(g: &Global, op: OperatorCmd) -> Result<ExitCode> {
    let c = client(g)?;
    match op {
        OperatorCmd::Init { key_shares, key_threshold } => {
            let ans = c
                .write(
                    "sys/init",
                    &json!({ "secret_shares": key_shares, "secret_threshold": key_threshold }),
                )
                .await?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&b)?);
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(Value::Array(keys)) = b.get("keys_base64") {
                for (i, k) in keys.iter().enumerate() {
                    println!("Unseal Key {}: {}", i + 1, cell(k));
                }
            }
            println!(
                "\nInitial Root Token: {}\n",
                cell(b.get("root_token").unwrap_or(&Value::Null))
            );
            println!(
                "Coffer initialized with {key_shares} key shares and a key threshold of {key_threshold}.\n\
                 Give the key shares to different people and keep them apart: any {key_threshold} of them\n\
                 unseal the server, fewer reveal nothing. Coffer does not keep them.\n\n\
                 The server is sealed. Unseal it with `coffer operator unseal`, {key_threshold} times.\n\
                 Use the root token only for set-up, then revoke it (`coffer token revoke -self`)."
            );
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::Unseal { key, reset } => {
            let body = if reset {
                json!({ "reset": true })
            } else {
                json!({ "key": read_secret_input("Unseal Key (input is shown; pass - to read it from a pipe): ", key)? })
            };
            let ans = c.write("sys/unseal", &body).await?;
            let b = ans.body.unwrap_or(Value::Null);
            match g.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&b)?),
                Format::Table => print!("{}", seal_status_table(&b)),
            }
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::Seal => {
            c.write("sys/seal", &json!({})).await?;
            println!("Success! Coffer is sealed.");
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::Rotate => {
            c.write("sys/rotate", &json!({})).await?;
            let ans = c.read("sys/key-status").await?;
            let b = ans.body.unwrap_or(Value::Null);
            let term = b.get("data").and_then(|d| d.get("term")).map(cell).unwrap_or_default();
            println!("Success! Rotated key\n\nKey Term        {term}");
            Ok(ExitCode::SUCCESS)
        }
        OperatorCmd::KeyStatus => {
            let ans = c.read("sys/key-status").await?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format == Format::Json || g.field.is_some() {
                print_body(&b, g.format, g.field.as_deref())?;
            } else {
                let d = b.get("data").cloned().unwrap_or(Value::Null);
                print!(
                    "{}",
                    table(&[
                        ("Key Term".into(), cell(d.get("term").unwrap_or(&Value::Null))),
                        (
                            "Install Time".into(),
                            cell(d.get("install_time").unwrap_or(&Value::Null))
                        ),
                        (
                            "Encryption Count".into(),
                            cell(d.get("encryptions").unwrap_or(&Value::Null))
                        ),
                    ])
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn login(g: &Global, a: super::LoginArgs) -> Result<ExitCode> {
    let method = a.method.to_lowercase();
    let (token, body) = if method == "token" {
        if a.args.len() > 1 {
            bail!("-method=token takes one argument, the token; got {}", a.args.len());
        }
        let token = read_secret_input(
            "Token (input is shown; pass - to read it from a pipe): ",
            a.args.into_iter().next(),
        )?;
        let c = client(g)?.with_token(Some(token.clone())).with_wrap_ttl(None);
        let ans = c.read("auth/token/lookup-self").await?;
        let mut b = ans.body.unwrap_or(Value::Null);
        // Shown like a login's auth block, so both kinds print alike.
        if let Some(d) = b.get("data").cloned() {
            b["auth"] = json!({
                "client_token": token,
                "accessor": d.get("accessor"),
                "lease_duration": d.get("ttl"),
                "renewable": d.get("renewable"),
                "policies": d.get("policies"),
                "token_policies": d.get("policies"),
                "metadata": d.get("meta"),
            });
        }
        (token, b)
    } else {
        let kind = match method.as_str() {
            "approle" | "jwt" | "oidc" | "kubernetes" | "cert" => method.as_str(),
            other => bail!(
                "unknown login method {other:?}: use token, approle, jwt, oidc, kubernetes or cert \
                 (or `coffer write auth/<path>/login ...` for another method)"
            ),
        };
        let path = a.path.as_deref().unwrap_or(kind).trim_matches('/').to_owned();
        let data = parse_pairs(&a.args)?;
        let c = client(g)?;
        // A login needs no token; sending a stale saved one would only confuse the audit log.
        let c = c.with_token(None);
        let ans = c.write(&format!("auth/{path}/login"), &Value::Object(data)).await?;
        let b = ans.body.ok_or_else(|| anyhow!("the server answered the login with no body"))?;
        if b.get("wrap_info").is_some_and(|w| !w.is_null()) {
            // Wrapped (-wrap-ttl): the token is in the wrapping token's cubbyhole, not here.
            return print_answer(g, Some(&b));
        }
        let token = b
            .get("auth")
            .and_then(|a| a.get("client_token"))
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("the server's answer has no auth block"))?
            .to_owned();
        (token, b)
    };
    if a.token_only {
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    if !a.no_store {
        let path = token_file().ok_or_else(|| {
            anyhow!("HOME is not set; cannot save the token (use -no-store and COFFER_TOKEN)")
        })?;
        write_private(&path, token.as_bytes())?;
    }
    if g.format == Format::Json || g.field.is_some() {
        return print_answer(g, Some(&body));
    }
    println!(
        "Success! You are now authenticated. Future commands use this token{}.\n",
        if a.no_store {
            " only if you set COFFER_TOKEN"
        } else {
            " (saved with mode 0600 in ~/.coffer-token)"
        }
    );
    print_answer(g, Some(&body))
}

/// `coffer unwrap [TOKEN]`: as vault does, the wrapping token goes in the body when the client
/// has a token of its own, and is the request's token otherwise.
async fn unwrap(g: &Global, token: Option<String>) -> Result<ExitCode> {
    let c = client(g)?.with_wrap_ttl(None);
    let wrapping = match token {
        Some(t) => Some(read_secret_input("", Some(t))?),
        None => None,
    };
    let ans = match (wrapping, c.token().map(str::to_owned)) {
        (Some(w), Some(own)) if w != own => {
            c.write("sys/wrapping/unwrap", &json!({ "token": w })).await?
        }
        (Some(w), _) => c.with_token(Some(w)).write("sys/wrapping/unwrap", &json!({})).await?,
        (None, Some(_)) => c.write("sys/wrapping/unwrap", &json!({})).await?,
        (None, None) => bail!(
            "no wrapping token: pass it as an argument (or `-` to read stdin), or set COFFER_TOKEN"
        ),
    };
    match ans.body {
        Some(b) => print_answer(g, Some(&b)),
        None => {
            println!("Success! The wrapped response was empty.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes a file only its owner can read, creating it with that mode (no window where it is
/// readable by others).
fn write_private(path: &std::path::Path, content: &[u8]) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(content)?;
    Ok(())
}

async fn token(g: &Global, t: TokenCmd) -> Result<ExitCode> {
    let c = client(g)?;
    let ans = match t {
        TokenCmd::Create(a) => {
            let mut body = Map::new();
            if !a.policies.is_empty() {
                body.insert("policies".into(), json!(a.policies));
            }
            for (k, v) in [
                ("ttl", &a.ttl),
                ("explicit_max_ttl", &a.explicit_max_ttl),
                ("period", &a.period),
                ("display_name", &a.display_name),
                ("id", &a.id),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if a.use_limit > 0 {
                body.insert("num_uses".into(), json!(a.use_limit));
            }
            body.insert("renewable".into(), json!(a.renewable));
            if a.no_default_policy {
                body.insert("no_default_policy".into(), json!(true));
            }
            if !a.metadata.is_empty() {
                body.insert("meta".into(), Value::Object(parse_pairs(&a.metadata)?));
            }
            let path = if a.orphan { "auth/token/create-orphan" } else { "auth/token/create" };
            c.write(path, &Value::Object(body)).await?
        }
        TokenCmd::Lookup { token, accessor } => match (token, accessor) {
            (None, false) => c.read("auth/token/lookup-self").await?,
            (Some(t), false) => c.write("auth/token/lookup", &json!({ "token": t })).await?,
            (Some(a), true) => {
                c.write("auth/token/lookup-accessor", &json!({ "accessor": a })).await?
            }
            (None, true) => bail!("-accessor needs the accessor as an argument"),
        },
        TokenCmd::Renew { token, increment, accessor } => {
            let mut body = Map::new();
            if let Some(i) = increment {
                body.insert("increment".into(), json!(i));
            }
            match (token, accessor) {
                (None, false) => c.write("auth/token/renew-self", &Value::Object(body)).await?,
                (Some(t), false) => {
                    body.insert("token".into(), json!(t));
                    c.write("auth/token/renew", &Value::Object(body)).await?
                }
                (Some(a), true) => {
                    body.insert("accessor".into(), json!(a));
                    c.write("auth/token/renew-accessor", &Value::Object(body)).await?
                }
                (None, true) => bail!("-accessor needs the accessor as an argument"),
            }
        }
        TokenCmd::Revoke { token, self_, accessor, mode } => {
            match (token, self_, accessor, mode.as_deref()) {
                (None, true, false, None) => c.write("auth/token/revoke-self", &json!({})).await?,
                (Some(t), false, false, None) => {
                    c.write("auth/token/revoke", &json!({ "token": t })).await?
                }
                (Some(t), false, false, Some("orphan")) => {
                    c.write("auth/token/revoke-orphan", &json!({ "token": t })).await?
                }
                (Some(a), false, true, None) => {
                    c.write("auth/token/revoke-accessor", &json!({ "accessor": a })).await?
                }
                (None, false, _, _) => {
                    bail!("give a token (or -self, or an accessor with -accessor)")
                }
                _ => bail!("-self, -accessor and -mode=orphan cannot be combined"),
            };
            println!("Success! Revoked token (if it existed)");
            return Ok(ExitCode::SUCCESS);
        }
    };
    print_answer(g, ans.body.as_ref())
}

async fn policy(g: &Global, p: PolicyCmd) -> Result<ExitCode> {
    match p {
        PolicyCmd::Fmt { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let formatted = coffer_core::policy::format_hcl(&text)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            std::fs::write(&file, formatted)?;
            println!("Success! Formatted policy: {}", file.display());
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Write { name, file } => {
            let text = if file == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                s
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read policy file {file}"))?
            };
            client(g)?
                .write(&format!("sys/policies/acl/{name}"), &json!({ "policy": text }))
                .await?;
            println!("Success! Uploaded policy: {name}");
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Read { name } => {
            let ans =
                client(g)?.read(&format!("sys/policies/acl/{name}")).await.map_err(
                    |e| match e {
                        coffer_api::Error::Api { status: 404, .. } => {
                            anyhow!("no policy named {name:?}")
                        }
                        other => other.into(),
                    },
                )?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format == Format::Json || g.field.is_some() {
                return print_answer(g, Some(&b));
            }
            println!(
                "{}",
                b.get("data").and_then(|d| d.get("policy")).and_then(Value::as_str).unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::List => {
            let ans = client(g)?.list("sys/policies/acl").await?;
            let b = ans.body.unwrap_or(Value::Null);
            if g.format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        b.get("data").and_then(|d| d.get("keys")).unwrap_or(&Value::Null)
                    )?
                );
            } else if let Some(Value::Array(keys)) = b.get("data").and_then(|d| d.get("keys")) {
                for k in keys {
                    println!("{}", cell(k));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Delete { name } => {
            client(g)?.delete(&format!("sys/policies/acl/{name}")).await?;
            println!("Success! Deleted policy: {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn enable_body(a: &EnableArgs) -> Result<Value> {
    let mut config = Map::new();
    if let Some(t) = &a.default_lease_ttl {
        config.insert("default_lease_ttl".into(), json!(t));
    }
    if let Some(t) = &a.max_lease_ttl {
        config.insert("max_lease_ttl".into(), json!(t));
    }
    let mut options = parse_pairs(&a.options)?;
    if let Some(v) = a.version {
        options.insert("version".into(), json!(v.to_string()));
    }
    Ok(json!({
        "type": a.kind,
        "description": a.description.clone().unwrap_or_default(),
        "config": config,
        "options": options,
    }))
}

fn tune_body(a: &TuneArgs) -> Result<Value> {
    let mut body = Map::new();
    if let Some(t) = &a.default_lease_ttl {
        body.insert("default_lease_ttl".into(), json!(t));
    }
    if let Some(t) = &a.max_lease_ttl {
        body.insert("max_lease_ttl".into(), json!(t));
    }
    if let Some(d) = &a.description {
        body.insert("description".into(), json!(d));
    }
    if !a.options.is_empty() {
        body.insert("options".into(), Value::Object(parse_pairs(&a.options)?));
    }
    Ok(Value::Object(body))
}

fn print_mounts(g: &Global, body: Option<Value>, detailed: bool) -> Result<ExitCode> {
    let b = body.unwrap_or(Value::Null);
    if g.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(b.get("data").unwrap_or(&Value::Null))?);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(Value::Object(m)) = b.get("data") else { return Ok(ExitCode::SUCCESS) };
    let w = m.keys().map(String::len).max().unwrap_or(4).max(4);
    if detailed {
        println!(
            "{:<w$}    {:<10}    {:<22}    {:<11}    {:<8}    Description",
            "Path", "Type", "Accessor", "Default TTL", "Max TTL"
        );
    } else {
        println!("{:<w$}    {:<10}    {:<22}    Description", "Path", "Type", "Accessor");
    }
    for (path, e) in m {
        let s = |k: &str| e.get(k).map(cell).unwrap_or_default();
        if detailed {
            let ttl = |k: &str| match e.get("config").and_then(|c| c.get(k)).and_then(Value::as_u64)
            {
                Some(0) | None => "system".to_owned(),
                Some(v) => fmt_duration(v),
            };
            println!(
                "{path:<w$}    {:<10}    {:<22}    {:<11}    {:<8}    {}",
                s("type"),
                s("accessor"),
                ttl("default_lease_ttl"),
                ttl("max_lease_ttl"),
                s("description")
            );
        } else {
            println!(
                "{path:<w$}    {:<10}    {:<22}    {}",
                s("type"),
                s("accessor"),
                s("description")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One mount-table command, for secrets engines (`sys/mounts`) or auth methods (`sys/auth`).
enum MountOp {
    Enable(EnableArgs),
    Disable(String),
    List(bool),
    Tune(TuneArgs),
}

impl From<SecretsCmd> for MountOp {
    fn from(c: SecretsCmd) -> Self {
        match c {
            SecretsCmd::Enable(a) => MountOp::Enable(a),
            SecretsCmd::Disable { path } => MountOp::Disable(path),
            SecretsCmd::List { detailed } => MountOp::List(detailed),
            SecretsCmd::Tune(a) => MountOp::Tune(a),
        }
    }
}

impl From<AuthCmd> for MountOp {
    fn from(c: AuthCmd) -> Self {
        match c {
            AuthCmd::Enable(a) => MountOp::Enable(a),
            AuthCmd::Disable { path } => MountOp::Disable(path),
            AuthCmd::List { detailed } => MountOp::List(detailed),
            AuthCmd::Tune(a) => MountOp::Tune(a),
        }
    }
}

/// `table` is `mounts` or `auth`; `noun` names the thing in messages.
async fn mounts(g: &Global, op: MountOp, table: &str, noun: &str) -> Result<ExitCode> {
    let c = client(g)?;
    match op {
        MountOp::Enable(a) => {
            let path = a.path.clone().unwrap_or_else(|| a.kind.clone());
            let path = path.trim_matches('/').to_owned();
            c.write(&format!("sys/{table}/{path}"), &enable_body(&a)?).await?;
            println!("Success! Enabled the {} {noun} at: {path}/", a.kind);
        }
        MountOp::Disable(path) => {
            let path = path.trim_matches('/');
            c.delete(&format!("sys/{table}/{path}")).await?;
            println!("Success! Disabled the {noun} (if it existed) at: {path}/");
        }
        MountOp::List(detailed) => {
            return print_mounts(g, c.read(&format!("sys/{table}")).await?.body, detailed);
        }
        MountOp::Tune(a) => {
            let path = a.path.trim_matches('/').to_owned();
            c.write(&format!("sys/{table}/{path}/tune"), &tune_body(&a)?).await?;
            println!("Success! Tuned the {noun} at: {path}/");
        }
    }
    Ok(ExitCode::SUCCESS)
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

    #[test]
    fn token_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("t");
        write_private(&p, b"tok").expect("write");
        assert_eq!(std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn seal_status_table_shows_progress_when_sealed() {
        let t = seal_status_table(
            &json!({"type": "shamir", "initialized": true, "sealed": true, "n": 5, "t": 3, "progress": 1, "nonce": "x", "version": "0.1.0", "storage_type": "sqlite"}),
        );
        assert!(t.contains("Unseal Progress    1/3"), "{t}");
    }
}
