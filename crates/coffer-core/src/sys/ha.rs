//! `sys/leader`, `sys/ha-status` and `sys/step-down`, in Vault's shapes. Without HA mode the
//! node is its own leader (`ha_enabled: false`), as a single Vault server answers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::core::Core;
use crate::ha::Role;
use crate::logical::{Error, Response, Result};
use crate::time::rfc3339_nanos;

/// Go's zero time, which Vault prints for "never".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `GET sys/leader` (public); the leader is at most one poll interval (1 s) old.
pub(crate) async fn leader(core: &Core) -> Result<Response> {
    if core.is_sealed() {
        return Err(Error::Sealed);
    }
    let Some(ha) = core.ha.get() else {
        return Ok(Response::raw(
            200,
            json!({
                "ha_enabled": false, "is_self": true, "active_time": "", "leader_address": "",
                "leader_cluster_address": "", "performance_standby": false,
                "performance_standby_last_remote_wal": 0,
            }),
        ));
    };
    let role = ha.role();
    // The election loop's copy: a load balancer polling this public endpoint never reaches the
    // lock's own connection.
    let leader = ha.leader();
    let (address, cluster_address) = match &leader {
        Some(l) if l.live => (l.advert.api_addr.clone(), l.advert.cluster_addr.clone()),
        _ => (String::new(), String::new()),
    };
    let active_time = match role {
        Role::Active { since, .. } => rfc3339_nanos(since),
        _ => ZERO_TIME.to_owned(),
    };
    Ok(Response::raw(
        200,
        json!({
            "ha_enabled": true,
            "is_self": matches!(role, Role::Active { .. }),
            "active_time": active_time,
            "leader_address": address,
            "leader_cluster_address": cluster_address,
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }),
    ))
}

/// How recently a node must have reported itself to be listed.
fn listed_within(ttl: Duration) -> Duration {
    ttl * 2
}

/// `GET sys/ha-status` (authenticated; served by the active node).
pub(crate) async fn status(core: &Core) -> Result<Response> {
    let Some(ha) = core.ha.get() else {
        // As OpenBao: a node without HA lists itself, as the active node.
        let me = &core.config.node;
        return Ok(Response::from_value(json!({ "nodes": [{
            "hostname": me.hostname,
            "api_address": me.api_addr,
            "cluster_address": me.cluster_addr,
            "active_node": true,
            "last_echo": null,
            "version": env!("CARGO_PKG_VERSION"),
        }] })));
    };
    let lock = &ha.lock;
    let internal = |e: coffer_storage::Error| Error::Internal(e.to_string());
    let leader = lock.leader().await.map_err(internal)?.filter(|l| l.live);
    let nodes = lock.nodes(listed_within(lock.ttl())).await.map_err(internal)?;
    let version = env!("CARGO_PKG_VERSION");
    let list: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let active = leader.as_ref().is_some_and(|l| l.node_id == n.node_id);
            json!({
                "hostname": n.advert.hostname,
                "api_address": n.advert.api_addr,
                "cluster_address": n.advert.cluster_addr,
                "active_node": active,
                "last_echo": if active { Value::Null } else { json!(rfc3339_nanos(n.last_seen)) },
                "version": version,
                "upgrade_version": version,
                "redundancy_zone": "",
            })
        })
        .collect();
    Ok(Response::from_value(json!({ "nodes": list })))
}

/// `PUT sys/step-down` (sudo): the active node gives up leadership; 204 either way, as Vault.
pub(crate) fn step_down(core: &Core) -> Response {
    if core.step_down() {
        tracing::info!("step-down requested: this node gives up leadership");
    }
    Response::empty()
}
