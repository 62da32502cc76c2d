//! The server-wide settings the core runs with (the config file's top-level TTLs and limits).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub default_lease_ttl: Duration,
    pub max_lease_ttl: Duration,
    pub login_limit: crate::ratelimit::LoginLimit,
    pub chaos: crate::chaos::ChaosConfig,
    /// The address clients reach this server at (`api_addr`): the default issuer of identity
    /// tokens. Empty: unknown.
    pub api_addr: String,
}

impl Default for CoreConfig {
    fn default() -> Self {
        // Vault's defaults: 32 days.
        Self {
            default_lease_ttl: Duration::from_secs(768 * 3600),
            max_lease_ttl: Duration::from_secs(768 * 3600),
            login_limit: crate::ratelimit::LoginLimit::default(),
            chaos: crate::chaos::ChaosConfig::default(),
            api_addr: String::new(),
        }
    }
}
