//! `sys/metrics`: the server's telemetry in Vault's JSON format (the default) or Prometheus
//! text (`format=prometheus`), answered as a raw body like Vault's.
//!
//! Guarantees: what is reported comes from [`crate::metrics`], whose labels carry no secret;
//! token and lease counts walk storage at most once per [`crate::metrics::COUNT_CACHE`].
//! The HTTP layer turns an `Accept` asking for OpenMetrics into `format=prometheus`, as Vault's
//! handler does.

use std::time::Instant;

use crate::core::Core;
use crate::logical::fields::Fields;
use crate::logical::{Response, Result};
use crate::metrics::{COUNT_CACHE, Gauges, go_timestamp};
use crate::time::now_unix;

pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Core {
    /// The `sys/metrics` answer for `format` (`""` or `prometheus`): the handler's, and the
    /// listener's when it serves metrics without a token (`unauthenticated_metrics_access`).
    pub async fn metrics_response(&self, format: &str) -> Response {
        let text_error = |msg: String| {
            let mut r = Response::raw_body("text/plain", msg.into_bytes());
            if let Some(b) = r.raw_body.as_mut() {
                b.status = 400;
            }
            r
        };
        match format {
            "" | "prometheus" => {}
            other => return text_error(format!("metric response format {other:?} unknown")),
        }
        if format == "prometheus" && self.config.prometheus_retention.is_zero() {
            return text_error("prometheus is not enabled".into());
        }
        let gauges = self.gauges().await;
        if format == "prometheus" {
            let text = self.metrics.prometheus(&gauges);
            return Response::raw_body(PROMETHEUS_CONTENT_TYPE, text.into_bytes());
        }
        let body = self.metrics.json(&gauges, &go_timestamp(now_unix()));
        match serde_json::to_vec(&body) {
            Ok(b) => Response::raw_body("application/json", b),
            Err(e) => text_error(format!("error while marshalling the in-memory metrics: {e}")),
        }
    }

    async fn gauges(&self) -> Gauges {
        let Ok(active) = self.active() else {
            return Gauges::default();
        };
        let mut cached = self.metrics.counted.lock().await;
        let (tokens, leases) = match *cached {
            Some((at, t, l)) if at.elapsed() < COUNT_CACHE => (t, l),
            _ => {
                // A count that fails (storage down) is left out rather than reported as zero.
                let t = active.tokens.count().await.ok();
                let l = active.leases.count().await.ok();
                *cached = Some((Instant::now(), t, l));
                (t, l)
            }
        };
        Gauges { unsealed: true, tokens, leases, expire_queue: Some(active.leases.queued()) }
    }
}

/// The authenticated `sys/metrics` (a token with `read` on it). A bad `format` is Vault's
/// 400 with a text body, not the JSON error envelope.
pub(crate) async fn read(
    core: &Core,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<Response> {
    let format = Fields::new(data).str("format")?.unwrap_or_default();
    Ok(core.metrics_response(&format).await)
}
