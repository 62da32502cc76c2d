//! `coffer token` (create, lookup, renew, revoke) and `coffer unwrap`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{Global, client, parse_pairs, print_answer, read_secret_input};

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCmd {
    /// Create a child token of the current token (or an orphan with -orphan)
    Create(TokenCreateArgs),
    /// Show a token's properties (the current token when none is given)
    Lookup {
        /// The token, or its accessor with -accessor; the current token when omitted
        token: Option<String>,
        /// Treat the argument as a token accessor
        #[arg(long)]
        accessor: bool,
    },
    /// Extend a token's TTL (the current token when none is given)
    Renew {
        /// The token, or its accessor with -accessor; the current token when omitted
        token: Option<String>,
        /// Requested TTL extension, e.g. 1h
        #[arg(long)]
        increment: Option<String>,
        /// Treat the argument as a token accessor
        #[arg(long)]
        accessor: bool,
    },
    /// Revoke a token and its children
    Revoke {
        /// The token, or its accessor with -accessor (or -self for the current token)
        token: Option<String>,
        /// Revoke the current token
        #[arg(long = "self")]
        self_: bool,
        /// Treat the argument as a token accessor
        #[arg(long)]
        accessor: bool,
        /// `orphan`: revoke only this token; its children become orphans
        #[arg(long, value_parser = ["orphan", "path"])]
        mode: Option<String>,
    },
    /// Print a token's capabilities on a path: `coffer token capabilities [TOKEN] PATH`
    Capabilities(super::capabilities::CapabilitiesArgs),
}

#[derive(Args, Debug)]
pub(crate) struct TokenCreateArgs {
    /// A policy to attach (repeatable)
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Initial TTL, e.g. 30m
    #[arg(long)]
    pub ttl: Option<String>,
    /// Hard limit on the token's lifetime, renewals included
    #[arg(long = "explicit-max-ttl")]
    pub explicit_max_ttl: Option<String>,
    /// Renew period for a periodic token (sudo)
    #[arg(long)]
    pub period: Option<String>,
    /// Number of uses after which the token is revoked (0 = unlimited)
    #[arg(long = "use-limit", alias = "num-uses", default_value_t = 0)]
    pub use_limit: u64,
    /// Create a token with no parent (through auth/token/create-orphan)
    #[arg(long)]
    pub orphan: bool,
    /// Allow renewing the token
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub renewable: bool,
    /// Name shown in the audit log
    #[arg(long = "display-name")]
    pub display_name: Option<String>,
    /// Metadata key=value (repeatable)
    #[arg(long = "metadata", value_name = "K=V")]
    pub metadata: Vec<String>,
    /// Don't attach the default policy
    #[arg(long = "no-default-policy")]
    pub no_default_policy: bool,
    /// Custom token ID (root only)
    #[arg(long)]
    pub id: Option<String>,
    /// Create the token with a token role (auth/token/create/ROLE); the role decides orphanhood
    #[arg(long)]
    pub role: Option<String>,
}

pub(super) async fn run(g: &Global, t: TokenCmd) -> Result<ExitCode> {
    let c = client(g)?;
    let ans = match t {
        TokenCmd::Capabilities(a) => return super::capabilities::run(g, &c, a).await,
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
            let path = match (&a.role, a.orphan) {
                (Some(r), _) => format!("auth/token/create/{}", r.trim_matches('/')),
                (None, true) => "auth/token/create-orphan".to_owned(),
                (None, false) => "auth/token/create".to_owned(),
            };
            c.write(&path, &Value::Object(body)).await?
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

/// `coffer unwrap [TOKEN]`: as vault does, the wrapping token goes in the body when the client
/// has a token of its own, and is the request's token otherwise.
pub(super) async fn unwrap(g: &Global, token: Option<String>) -> Result<ExitCode> {
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
