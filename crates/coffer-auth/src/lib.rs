//! Coffer's built-in auth methods: approle, userpass, jwt (also mounted as `oidc`, with JWS verification
//! and OIDC discovery), kubernetes and cert, the outbound HTTPS client the ones that call an
//! identity provider share, and image binding (`image`: the `bound_image_*` role constraints of
//! kubernetes, jwt and approle, and cosign signature verification).
//!
//! Guarantees: a method only verifies a credential and answers a login with a
//! [`coffer_core::Login`]; it never creates a token, so every method's tokens are issued, capped
//! and audited by the core in one place. Each method sees only `coffer_core`'s logical types and
//! its own mount's storage view (never storage, never another mount, never a secrets engine).
//! The four methods share one role helper (`role.rs`): the `token_*` fields, how a role is
//! read, written, stored and shown, and the login it turns into, so those behave alike across
//! methods; the methods with one `config` endpoint (jwt, kubernetes) share its paths and storage
//! (`config.rs`). What does *not* live here: the `token` auth method (core), the issuing of tokens
//! (core's `login::issue`), and the `*` glob (`coffer_core::glob`).

mod approle;
mod cert;
mod config;
mod image;
mod jws;
mod jwt;
mod kubernetes;
mod outbound;
mod role;
mod userpass;

use std::sync::Arc;

use coffer_core::Registry;

/// Registers every built-in auth method under its Vault type name.
pub fn register_builtins(registry: &mut Registry) {
    registry.register_auth("approle", Arc::new(approle::factory));
    registry.register_auth("jwt", Arc::new(jwt::factory));
    registry.register_auth("oidc", Arc::new(jwt::factory));
    registry.register_auth("kubernetes", Arc::new(kubernetes::factory));
    registry.register_auth("cert", Arc::new(cert::factory));
    registry.register_auth("userpass", Arc::new(userpass::factory));
}
