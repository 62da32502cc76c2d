//! Coffer's built-in secrets engines, and only those: kv (versions 1 and 2), cubbyhole,
//! database, transit and pki (each of the last two in its own crate, `coffer-transit` and
//! `coffer-pki`, registered here). Each sees only `coffer_core`'s logical types and its own
//! storage view; the binary registers them in the core's [`Registry`]. Auth methods live in
//! `coffer-auth`.

mod cubbyhole;
mod database;
mod kv;
mod kv2;
#[cfg(test)]
mod kv2_leak_tests;
mod kv2_meta;

use std::sync::Arc;

use coffer_core::Registry;

/// Registers every built-in secrets engine under its Vault type name.
pub fn register_builtins(registry: &mut Registry) {
    registry.register_secrets("kv", Arc::new(kv::factory));
    registry.register_secrets("generic", Arc::new(kv::factory));
    registry.register_secrets("cubbyhole", Arc::new(cubbyhole::factory));
    registry.register_secrets("database", Arc::new(database::factory));
    registry.register_secrets("transit", Arc::new(coffer_transit::factory));
    registry.register_secrets("pki", Arc::new(coffer_pki::factory));
}
