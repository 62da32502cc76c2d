//! `coffer server`: the server's flags, and the configuration they make (a `-dev` one in memory,
//! or a file's) before `crate::server` brings it up.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::Args;

use super::client::env_any;
use crate::config::{ListenerConfig, LogFormat, ServerConfig, StorageConfig};

#[derive(Args, Debug)]
pub(crate) struct ServerArgs {
    /// Server configuration file (HCL or JSON)
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Development mode: in-memory, unsealed, root token printed. Never for production.
    #[arg(long, conflicts_with = "config")]
    pub dev: bool,
    /// Use this string as the dev root token [env: COFFER_DEV_ROOT_TOKEN_ID, VAULT_DEV_ROOT_TOKEN_ID]
    #[arg(long = "dev-root-token-id", value_name = "TOKEN", requires = "dev")]
    pub dev_root_token_id: Option<String>,
    /// Address the dev server listens on
    #[arg(
        long = "dev-listen-address",
        value_name = "IP:PORT",
        default_value = "127.0.0.1:8200",
        requires = "dev"
    )]
    pub dev_listen_address: String,
    /// Log level: trace, debug, info, warn, error (overrides the config file)
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

pub(super) async fn run(a: ServerArgs) -> Result<ExitCode> {
    let (cfg, dev) = if a.dev {
        let cfg = ServerConfig {
            storage: StorageConfig::Inmem,
            listeners: vec![ListenerConfig::plain(crate::config::resolve_address(
                &a.dev_listen_address,
            )?)],
            api_addr: None,
            cluster_addr: None,
            seal: None,
            seal_disabled: false,
            seal_from: None,
            default_lease_ttl: std::time::Duration::from_secs(768 * 3600),
            max_lease_ttl: std::time::Duration::from_secs(768 * 3600),
            log_level: "info".into(),
            log_format: LogFormat::Standard,
            login_limit: coffer_core::LoginLimit::default(),
            pid_file: None,
            chaos: coffer_core::ChaosConfig::default(),
            detect: coffer_core::detect::DetectConfig::default(),
            prometheus_retention: std::time::Duration::from_secs(24 * 3600),
        };
        let root = a
            .dev_root_token_id
            .or_else(|| env_any(&["COFFER_DEV_ROOT_TOKEN_ID", "VAULT_DEV_ROOT_TOKEN_ID"]));
        (cfg, Some(crate::server::DevOptions { root_token_id: root }))
    } else {
        let path = a.config.ok_or_else(|| {
            anyhow!(
                "coffer server needs -config=FILE for a real server (see docs/configuration.md), \
                 or -dev for an in-memory development server (never for production)"
            )
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
