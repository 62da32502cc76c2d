//! `sys/events/subscribe/<event_type>`: Vault's event subscription, once the request has passed
//! the pipeline (the token may `read` this path, and the request was audited). The answer carries
//! a [`Subscription`] that the transport serves as a WebSocket; the events themselves are checked
//! against the token one by one (`crate::events`).

use crate::events::Subscription;
use crate::logical::fields::Fields;
use crate::logical::{Error, Operation, Response, Result};

use super::Ctx;

pub(super) const PREFIX: &str = "events/subscribe/";
const MAX_PATTERN_LEN: usize = 256;
const MAX_PATTERN_STARS: usize = 4;

pub(super) fn subscribe(ctx: &Ctx<'_>, pattern: &str) -> Result<Response> {
    if ctx.op() != Operation::Read {
        return Err(Error::UnsupportedOperation);
    }
    let pattern = pattern.trim();
    if pattern.is_empty() {
        // Vault's words.
        return Err(Error::invalid("did not specify eventType to subscribe to"));
    }
    // Every write matches every subscriber's pattern: a long pattern with many wildcards would
    // make each write pay for it.
    if pattern.len() > MAX_PATTERN_LEN || pattern.matches('*').count() > MAX_PATTERN_STARS {
        return Err(Error::invalid(format!(
            "the event type pattern may be at most {MAX_PATTERN_LEN} bytes with at most \
             {MAX_PATTERN_STARS} wildcards"
        )));
    }
    let f = Fields::new(&ctx.req.data);
    // Go's ParseBool, as Vault parses it; an empty value is false.
    let json = match f.str("json")? {
        Some(raw) if !raw.is_empty() => f
            .bool("json")
            .map_err(|_| Error::invalid("invalid parameter for JSON: json must be true or false"))?
            .unwrap_or(false),
        _ => false,
    };
    if !json {
        return Err(Error::invalid(
            "Coffer sends events as JSON only: add json=true to the query (without it Vault \
             sends protobuf, which Coffer does not)",
        ));
    }
    if f.str("filter")?.is_some_and(|s| !s.trim().is_empty()) {
        return Err(Error::invalid(
            "the filter parameter (a go-bexpr expression) is not supported by Coffer: subscribe \
             to an event type pattern and filter on the metadata yourself",
        ));
    }
    // `namespaces` names child namespaces to include besides the request's own; Coffer has only
    // the root namespace, which every subscription covers, so there is nothing to add.
    let caller = ctx.caller().ok_or(Error::PermissionDenied)?;
    let sub =
        Subscription::new(ctx.active, &caller.id, &caller.accessor, ctx.req.remote_addr, pattern);
    Ok(Response { subscription: Some(sub), ..Response::default() })
}
