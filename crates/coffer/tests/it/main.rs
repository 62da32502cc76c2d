//! Integration tests: one binary (one link) for all of them, each module a capability.

mod common;

mod agent;
mod agent_audit;
mod agent_pki;
mod api;
mod approle;
mod audit;
mod bad_input;
mod cert;
mod chaos;
mod chaos_examples;
mod chaos_faults;
mod chaos_host;
mod chaos_host_audit;
mod cli;
mod cli_habits;
mod database;
mod database_leases;
mod docs;
mod events;
mod help;
mod identity;
mod identity_oidc;
mod invariants;
mod jwt;
mod kubernetes;
mod kv2;
mod leases;
mod limits;
mod pki;
mod postgresql;
mod sealed;
mod tls;
mod transit;
mod vault_client;
