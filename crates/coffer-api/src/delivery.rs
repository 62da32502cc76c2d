//! An agent's delivery report (`sys/agent/delivery`, Coffer only): which secret paths it
//! delivered where, delivered again after a change, or removed. The server checks it and writes
//! it to the audit log in clear, beside the verified identity of the token that sent it; it
//! holds paths and file names, never a value.

use serde::{Deserialize, Serialize};

/// Where reports go.
pub const DELIVERY_PATH: &str = "sys/agent/delivery";

/// What happened to the secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryEvent {
    /// First written (a file) or first given to the app (its environment).
    Delivered,
    /// Written again with different contents.
    Redelivered,
    /// Removed (at exit).
    Removed,
}

/// The agent's own account of itself; every field optional, none verified by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    /// A random id the agent makes at start: tells one run from the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// One report: the body of `POST sys/agent/delivery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub event: DeliveryEvent,
    /// Why, in one short word: `initial`, `rotation`, `lease-reissue`, `new-token`, `exit`
    /// (`a-z`, `0-9`, `-`; at most 32 bytes).
    pub reason: String,
    /// The secret paths read (at most 256).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Where they went: file paths, `env:NAME` (at most 256).
    #[serde(default)]
    pub destinations: Vec<String>,
    #[serde(default)]
    pub agent: AgentIdentity,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_report_has_the_wire_shape_the_server_checks() {
        let d = Delivery {
            event: DeliveryEvent::Redelivered,
            reason: "rotation".into(),
            paths: vec!["secret/data/web/db".into()],
            destinations: vec!["/run/secrets/db".into(), "env:DB_PASSWORD".into()],
            agent: AgentIdentity { instance: Some("0f3a".into()), ..AgentIdentity::default() },
        };
        assert_eq!(
            serde_json::to_value(&d).expect("json"),
            json!({
                "event": "redelivered",
                "reason": "rotation",
                "paths": ["secret/data/web/db"],
                "destinations": ["/run/secrets/db", "env:DB_PASSWORD"],
                "agent": {"instance": "0f3a"},
            })
        );
    }
}
