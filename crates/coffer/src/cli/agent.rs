//! `coffer agent`: runs the in-container agent (crate `coffer-agent`) from a configuration file
//! in Vault Agent's shape, or only checks one.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
#[command(
    long_about = "Run the Coffer agent: log in with a bootstrap credential (approle, jwt, kubernetes, \
cert or a token file), render secrets into files on a memory filesystem or into an app's \
environment, keep them fresh through rotation and outages, and report on GET /agent/v1/status and \
/agent/v1/metrics. The configuration follows Vault Agent's (HCL or JSON); see docs/agent.md.",
    after_help = "Examples:\n  coffer agent -config /etc/coffer/agent.hcl\n  coffer agent -config agent.hcl -check-config"
)]
pub(crate) struct AgentArgs {
    /// Agent configuration file (HCL or JSON, Vault Agent's shape)
    #[arg(long, value_name = "FILE")]
    pub config: std::path::PathBuf,
    /// Only check the configuration (syntax, templates, destinations) and exit: 0 when valid
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// Log level: trace, debug, info, warn, error (overrides log_level in the file)
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

pub(super) async fn run(a: AgentArgs) -> Result<ExitCode> {
    let cfg = coffer_agent::AgentConfig::load(&a.config)?;
    if a.check_config {
        println!("{}", coffer_agent::check_config(&cfg)?);
        return Ok(ExitCode::SUCCESS);
    }
    let level = match a.log_level.as_deref().or(cfg.log_level.as_deref()) {
        Some(l) => crate::config::check_log_level(l)?,
        None => "info".into(),
    };
    crate::server::init_logging(&level, crate::config::LogFormat::Standard);
    let code = coffer_agent::run(cfg).await?;
    Ok(ExitCode::from(code))
}
