//! Coffer's built-in secrets engines. Each sees only `coffer_core`'s logical types and its own
//! storage view; the binary registers them in the core's [`Registry`].

mod approle;
mod cert;
mod cubbyhole;
mod database;
mod jws;
mod jwt;
mod kubernetes;
mod kv;
mod kv2;
mod outbound;

use std::sync::Arc;

use coffer_core::Registry;

/// Registers every built-in engine under its Vault type name.
pub fn register_builtins(registry: &mut Registry) {
    registry.register_secrets("kv", Arc::new(kv::factory));
    registry.register_secrets("generic", Arc::new(kv::factory));
    registry.register_secrets("cubbyhole", Arc::new(cubbyhole::factory));
    registry.register_secrets("database", Arc::new(database::factory));
    registry.register_auth("approle", Arc::new(approle::factory));
    registry.register_auth("jwt", Arc::new(jwt::factory));
    registry.register_auth("oidc", Arc::new(jwt::factory));
    registry.register_auth("kubernetes", Arc::new(kubernetes::factory));
    registry.register_auth("cert", Arc::new(cert::factory));
}
