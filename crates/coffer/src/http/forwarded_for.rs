//! Vault's `X-Forwarded-For` listener options: behind a proxy or load balancer, the client's
//! address is taken from the header, and only when the TCP peer is one of the listener's
//! `x_forwarded_for_authorized_addrs`.
//!
//! Guarantees (OpenBao's `wrapForwardedForHandler`, option for option): without authorized
//! addresses nothing here runs; a request without the header keeps its peer address (or, with
//! `x_forwarded_for_reject_not_present`, is a 400); from a peer that is not authorized the header
//! is removed and the peer address kept (or, with `x_forwarded_for_reject_not_authorized`, a
//! 400); from an authorized peer every `X-Forwarded-For` header's comma-separated entries are
//! read in order and the one `x_forwarded_for_hop_skips` from the end becomes the client address
//! (a 400 when the chain is shorter). The address chosen is what everything after sees: token
//! and secret_id CIDR bindings, audit `remote_address`, detection rules, login rate limits, and
//! what a standby forwards to the active node. Both reject options default to `false`, as
//! OpenBao's code does (its documentation says `true`).
//!
//! Differs from OpenBao: an entry that is not an IP address is a 400 (OpenBao passes any text on
//! as the address; Coffer's address is an IP). Not done: the forwarded client-certificate
//! options (`x_forwarded_for_client_cert_header` and its companions); the cert auth method sees
//! only certificates presented on the TLS connection itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use coffer_core::cidr::Cidr;

use super::ConnInfo;
use super::error::error_body;

/// A listener's `x_forwarded_for_*` options; present only when authorized addresses are set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForwardedFor {
    pub authorized_addrs: Vec<Cidr>,
    pub hop_skips: usize,
    pub reject_not_authorized: bool,
    pub reject_not_present: bool,
}

/// The middleware: rewrites the connection's remote address for this request, or refuses it.
pub(crate) async fn apply(
    State(cfg): State<Arc<ForwardedFor>>,
    mut req: Request,
    next: Next,
) -> Response {
    let values: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    if values.is_empty() {
        if cfg.reject_not_present {
            return bad("missing x-forwarded-for header and configured to reject when not present");
        }
        return next.run(req).await;
    }
    let Some(peer) = req.extensions().get::<ConnInfo>().map(|c| c.remote_addr) else {
        // No connection facts (not served by a listener): nothing to compare against.
        if cfg.reject_not_present {
            return bad("error parsing client address");
        }
        return next.run(req).await;
    };
    if !cfg.authorized_addrs.iter().any(|c| c.contains(peer.ip())) {
        if cfg.reject_not_authorized {
            return bad(
                "client address not authorized for x-forwarded-for and configured to reject connection",
            );
        }
        // Removed, so nothing further along (a standby forwarding the request) trusts it.
        req.headers_mut().remove("x-forwarded-for");
        return next.run(req).await;
    }
    let chain: Vec<&str> = values.iter().flat_map(|v| v.split(',')).map(str::trim).collect();
    let Some(index) = chain.len().checked_sub(1 + cfg.hop_skips) else {
        return bad(&format!(
            "malformed x-forwarded-for configuration or request, hops to skip ({}) would skip \
             before earliest chain link (chain length {})",
            cfg.hop_skips,
            chain.len()
        ));
    };
    let Some(ip) = parse_ip(chain[index]) else {
        return bad("the x-forwarded-for entry chosen as the client address is not an IP address");
    };
    if let Some(c) = req.extensions_mut().get_mut::<ConnInfo>() {
        c.remote_addr = SocketAddr::new(ip, peer.port());
    }
    next.run(req).await
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, or bracketed `[2001:db8::1]`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    s.parse().ok()
}

fn bad(msg: &str) -> Response {
    error_body(StatusCode::BAD_REQUEST, vec![msg.to_owned()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_proxies_write_them() {
        assert_eq!(parse_ip("192.0.2.1"), Some("192.0.2.1".parse().expect("ip")));
        assert_eq!(parse_ip("[2001:db8::1]"), Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(parse_ip("unknown"), None);
        assert_eq!(parse_ip("192.0.2.1:80"), None);
    }
}
