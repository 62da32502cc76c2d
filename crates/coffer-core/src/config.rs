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
    /// `telemetry { prometheus_retention_time }`: zero turns the Prometheus format off, as in
    /// Vault; any other value turns it on (counters here are kept for the process's life).
    pub prometheus_retention: Duration,
    /// What `sys/config/state/sanitized` answers: the running configuration in Vault's shape,
    /// built by the binary with every secret (storage options, keys, passwords) left out.
    pub sanitized_config: serde_json::Value,
    /// What this node says of itself in `sys/ha-status` (and, in HA mode, to the other nodes).
    pub node: coffer_storage::ha::Advert,
    /// `detect { ... }`: the detection engine's settings and the config file's rules.
    pub detect: crate::detect::DetectConfig,
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
            prometheus_retention: Duration::from_secs(24 * 3600),
            sanitized_config: serde_json::Value::Null,
            node: coffer_storage::ha::Advert::default(),
            detect: crate::detect::DetectConfig::default(),
        }
    }
}
