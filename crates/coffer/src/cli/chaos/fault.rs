//! `coffer chaos fault`: start, list and stop the server's chaos faults (`sys/chaos/faults`)
//! with the usual address, token and CA resolution. One readable line per fault, or
//! `-format=json` for scripts (Chaos Toolkit's process provider runs these).
//!
//! Each kind is one subcommand; kinds that act on the host rather than the server are added
//! beside these.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use coffer_api::chaos::{Fault, FaultKind, FaultSpec, WireDuration};
use serde_json::json;

use crate::cli::client::{Global, client};
use crate::cli::output::Format;

/// Every lasting fault's duration.
#[derive(Args, Debug)]
pub(crate) struct Lasting {
    /// How long the fault lasts, e.g. 60s, 5m (the server caps it at its chaos max_duration);
    /// it ends by itself then, even if nobody stops it
    #[arg(long, value_name = "DURATION")]
    pub duration: String,
}

/// Which requests a latency or error fault touches; none given: every request.
#[derive(Args, Debug)]
pub(crate) struct Scope {
    /// Only requests whose path (after /v1/) starts with this, e.g. secret/data/app
    #[arg(long = "path-prefix", value_name = "PREFIX")]
    pub path_prefix: Option<String>,
    /// Only requests with a token an auth method issued at login to this role
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Only requests with a token of this display name
    #[arg(long = "display-name", value_name = "NAME")]
    pub display_name: Option<String>,
    /// Only requests with a token of this identity entity id
    #[arg(long, value_name = "ID")]
    pub entity: Option<String>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum FaultCmd {
    /// Delay every request in scope by -latency (plus up to -jitter)
    Latency {
        #[command(flatten)]
        lasting: Lasting,
        /// The delay, e.g. 200ms, 2s
        #[arg(long, value_name = "DURATION")]
        latency: String,
        /// Up to this much more, at random
        #[arg(long, value_name = "DURATION")]
        jitter: Option<String>,
        #[command(flatten)]
        scope: Scope,
    },
    /// Answer requests in scope with an error status at a rate
    Error {
        #[command(flatten)]
        lasting: Lasting,
        /// 500, 503 or 429
        #[arg(long, default_value_t = 503)]
        status: u16,
        /// The share of requests in scope that fail, above 0 and at most 1
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
        #[command(flatten)]
        scope: Scope,
    },
    /// Seal the server; it unseals itself at the deadline (an operator unseal ends it early)
    Seal {
        #[command(flatten)]
        lasting: Lasting,
    },
    /// Make every storage operation fail, as a database outage would
    #[command(name = "storage-unavailable", alias = "storage_unavailable")]
    StorageUnavailable {
        #[command(flatten)]
        lasting: Lasting,
    },
    /// Make every audit device write fail: the server refuses requests (fail closed)
    #[command(name = "audit-blocked", alias = "audit_blocked")]
    AuditBlocked {
        #[command(flatten)]
        lasting: Lasting,
    },
    /// Revoke every lease under a prefix now (one-shot)
    #[command(name = "revoke-prefix", alias = "revoke_prefix")]
    RevokePrefix {
        /// A lease id prefix: a mount and a path below it, e.g. database/creds/app
        prefix: String,
    },
    /// Rotate now (one-shot): a database static role's password (PATH is
    /// <mount>/static-roles/<name>), or give -key=K (repeatable) fresh random values in a new
    /// version of the KV secret at PATH
    Rotate {
        /// The database static role (<mount>/static-roles/<name>) or KV secret to rotate
        path: String,
        /// A key of the KV secret to give a fresh random value
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    #[command(flatten)]
    Host(super::host::HostFaultCmd),
    /// The faults in place: the server's (when a token is at hand) and this host's (undoing
    /// those past their deadline whose guard is gone)
    List {
        #[command(flatten)]
        state: super::host::StateDir,
    },
    /// End a fault now (a server fault-... or a hostfault-... id), or every fault with -all
    Stop {
        /// The fault's id
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// End every fault: the server's and this host's
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        state: super::host::StateDir,
    },
}

fn duration(flag: &str, s: &str) -> Result<WireDuration> {
    WireDuration::parse(s).map(WireDuration).map_err(|e| anyhow::anyhow!("-{flag}: {e}"))
}

fn lasting(kind: FaultKind, l: &Lasting) -> Result<FaultSpec> {
    let mut spec = FaultSpec::new(kind);
    spec.duration = Some(duration("duration", &l.duration)?);
    Ok(spec)
}

fn scoped(mut spec: FaultSpec, s: Scope) -> FaultSpec {
    spec.path_prefix = s.path_prefix;
    spec.role = s.role;
    spec.display_name = s.display_name;
    spec.entity = s.entity;
    spec
}

/// The spec a kind's subcommand asks for; `None` for list and stop.
fn spec_of(cmd: FaultCmd) -> Result<std::result::Result<FaultSpec, FaultCmd>> {
    let spec = match cmd {
        FaultCmd::Latency { lasting: l, latency, jitter, scope } => {
            let mut s = lasting(FaultKind::Latency, &l)?;
            s.latency = Some(duration("latency", &latency)?);
            s.jitter = jitter.map(|j| duration("jitter", &j)).transpose()?;
            scoped(s, scope)
        }
        FaultCmd::Error { lasting: l, status, rate, scope } => {
            let mut s = lasting(FaultKind::Error, &l)?;
            s.status = Some(status);
            s.rate = Some(rate);
            scoped(s, scope)
        }
        FaultCmd::Seal { lasting: l } => lasting(FaultKind::Seal, &l)?,
        FaultCmd::StorageUnavailable { lasting: l } => lasting(FaultKind::StorageUnavailable, &l)?,
        FaultCmd::AuditBlocked { lasting: l } => lasting(FaultKind::AuditBlocked, &l)?,
        FaultCmd::RevokePrefix { prefix } => {
            let mut s = FaultSpec::new(FaultKind::RevokePrefix);
            s.prefix = Some(prefix);
            s
        }
        FaultCmd::Rotate { path, keys } => {
            let mut s = FaultSpec::new(FaultKind::Rotate);
            s.path = Some(path);
            s.keys = (!keys.is_empty()).then_some(keys);
            s
        }
        other @ (FaultCmd::List { .. } | FaultCmd::Stop { .. } | FaultCmd::Host(_)) => {
            return Ok(Err(other));
        }
    };
    Ok(Ok(spec))
}

/// `fault-x  latency  2026-...Z -> 2026-...Z  latency=200ms path_prefix=secret/`
fn line(f: &Fault) -> String {
    let s = &f.spec;
    let mut details = Vec::new();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            details.push(format!("{k}={v}"));
        }
    };
    add("duration", s.duration.map(|d| WireDuration::format(d.0)));
    add("latency", s.latency.map(|d| WireDuration::format(d.0)));
    add("jitter", s.jitter.map(|d| WireDuration::format(d.0)));
    add("status", s.status.map(|v| v.to_string()));
    add("rate", s.rate.map(|v| v.to_string()));
    add("prefix", s.prefix.clone());
    add("path", s.path.clone());
    add("keys", s.keys.as_ref().map(|k| k.join(",")));
    add("path_prefix", s.path_prefix.clone());
    add("role", s.role.clone());
    add("display_name", s.display_name.clone());
    add("entity", s.entity.clone());
    add("host_kind", s.host_kind.map(|k| k.as_str().to_owned()));
    add("host_id", s.host_id.clone());
    add("target", s.target.clone());
    let window = if s.one_shot() {
        format!("done {}", f.started_at)
    } else {
        format!("{} -> {}", f.started_at, f.expires_at)
    };
    format!("{}  {}  {}  {}", f.id, s.kind.as_str(), window, details.join(" "))
        .trim_end()
        .to_owned()
}

pub(super) async fn run(g: &Global, cmd: FaultCmd) -> Result<ExitCode> {
    // JSON or YAML: the outputs as data (scripts, Chaos Toolkit's process provider).
    let format = g.format;
    let structured = format.structured();
    match spec_of(cmd)? {
        Ok(spec) => {
            let c = client(g)?;
            let kind = spec.kind.as_str();
            let f = coffer_chaos::server::start_with(&c, &spec)
                .await
                .map_err(unwrap_api)
                .with_context(|| format!("starting a {kind} fault"))?;
            if structured {
                crate::cli::output::print_value(&f, format)?;
            } else {
                println!("{}", line(&f));
            }
        }
        Err(FaultCmd::Host(h)) => return super::host::run(g, h, format).await,
        Err(FaultCmd::List { state }) => {
            // Host faults need root and a state directory; server faults a server and a token.
            // Either may be absent where the other is used: say so, and list what can be.
            let opts = super::host::options(state);
            let host = if opts.state_dir.exists() {
                Some(coffer_chaos::host::list(&opts).await)
            } else {
                None
            };
            let server = match client(g) {
                Ok(c) => Some(coffer_chaos::server::list_with(&c).await.map_err(unwrap_api)),
                Err(e) => Some(Err(e)),
            };
            list_both(format, server, host)?;
        }
        Err(FaultCmd::Stop { id, all, state }) => {
            let opts = super::host::options(state);
            let stopped = match (id, all) {
                (_, true) => {
                    let errors = if opts.state_dir.exists() {
                        coffer_chaos::host::stop_all(&opts).await?.1
                    } else {
                        Vec::new()
                    };
                    let c = client(g)?;
                    coffer_chaos::server::stop_all_with(&c).await.map_err(unwrap_api)?;
                    if !errors.is_empty() {
                        bail!("some host faults could not be ended: {}", errors.join("; "));
                    }
                    "all".to_owned()
                }
                (Some(id), false) if id.starts_with("hostfault-") => {
                    let mut out = coffer_chaos::host::stop(&id, &opts).await?;
                    let rec = super::host::recorder(g)?;
                    coffer_chaos::host::record::note_unrecord(&mut out, rec.as_ref(), &id).await;
                    super::host::warn_unrecorded(&out);
                    if structured {
                        // What was undone, and how (e.g. the restarted process's pid).
                        crate::cli::output::print_value(&out, format)?;
                        return Ok(ExitCode::SUCCESS);
                    }
                    id
                }
                (Some(id), false) => {
                    let c = client(g)?;
                    coffer_chaos::server::stop_with(&c, &id).await.map_err(unwrap_api)?;
                    id
                }
                (None, false) => bail!("give a fault id, or -all"),
            };
            if structured {
                crate::cli::output::print_value(&json!({ "stopped": stopped }), format)?;
            } else if stopped == "all" {
                println!("Stopped every chaos fault.");
            } else {
                println!("Stopped chaos fault {stopped}.");
            }
        }
        Err(_) => bail!("not a fault command"),
    }
    Ok(ExitCode::SUCCESS)
}

type Listed<T> = Option<std::result::Result<T, anyhow::Error>>;

fn list_both(
    format: Format,
    server: Listed<Vec<Fault>>,
    host: Option<std::result::Result<serde_json::Value, coffer_chaos::host::FaultError>>,
) -> Result<()> {
    let host = host.map(|h| h.map_err(anyhow::Error::from));
    match (&server, &host) {
        (Some(Err(s)), Some(Err(h))) => {
            bail!("cannot list server faults: {s:#}; nor host faults: {h:#}")
        }
        // No host faults were ever started here: the server's answer is the whole answer.
        (Some(Err(s)), None) => bail!("cannot list server faults: {s:#}"),
        _ => {}
    }
    if format.structured() {
        let part = |r: Option<std::result::Result<serde_json::Value, anyhow::Error>>| match r {
            None => serde_json::Value::Null,
            Some(Ok(v)) => v,
            Some(Err(e)) => json!({ "error": format!("{e:#}") }),
        };
        let server = server.map(|r| r.map(|f| json!(f)));
        let both = json!({ "server": part(server), "host": part(host) });
        crate::cli::output::print_value(&both, format)?;
        return Ok(());
    }
    match server {
        Some(Ok(faults)) if faults.is_empty() => println!("No server faults running."),
        Some(Ok(faults)) => faults.iter().for_each(|f| println!("{}", line(f))),
        Some(Err(e)) => eprintln!("server faults: cannot list them: {e:#}"),
        None => {}
    }
    match host {
        Some(Ok(v)) => {
            let faults = v.get("faults").and_then(serde_json::Value::as_array).cloned();
            let faults = faults.unwrap_or_default();
            if faults.is_empty() {
                println!("No host faults in place.");
            }
            for f in faults {
                let s = |k: &str| {
                    f.get(k).and_then(serde_json::Value::as_str).unwrap_or("?").to_owned()
                };
                println!("{}  {}  {} -> {}", s("id"), s("kind"), s("started_at"), s("expires_at"));
            }
        }
        Some(Err(e)) => eprintln!("host faults: cannot list them: {e:#}"),
        None => {}
    }
    Ok(())
}

/// API errors go back as `coffer_api::Error`, so the CLI's advice (sealed, permission denied,
/// the server's messages) applies to them as to any command.
fn unwrap_api(e: coffer_chaos::server::FaultError) -> anyhow::Error {
    match e {
        coffer_chaos::server::FaultError::Api(api) => api.into(),
        other => other.into(),
    }
}
