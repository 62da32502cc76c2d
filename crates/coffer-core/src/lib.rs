//! Coffer's core: the request pipeline (seal gate → token → ACL → audit → route), tokens,
//! leases, policies, mounts, audit devices and the `sys/` API. It sees storage only through the
//! barrier, and engines and auth methods only through the [`backend::LogicalBackend`] trait; it
//! never depends on any concrete one (the binary registers them in the [`Registry`]).
//!
//! Guarantees: no request reaches a backend or a `sys/` handler without the proofs of `authz`
//! (token live, ACL allowed, request audited); tokens are stored only as salted hashes, and no
//! token outlives a revoked parent; every lease is revoked by its engine or kept and retried.
//!
//! By noun, lowest first (no two modules depend on each other):
//! - `time`, `random`, `hex`, `glob`, `secret`, `cidr`, `path`: leaf helpers.
//! - `logical`: request, response, errors, typed fields, the `Login` a method hands back.
//! - `policy`, `policy_store`, `password_policy`: ACL policies (parse, compile) and their store.
//! - `token`: the token store; `due`: the expiry index it shares with the lease manager.
//! - `backend` (with `backend::framework`, the path framework backends declare their paths
//!   with), `mount`, `wrapping`, `login`, `audit`, `lease`: what requests are routed to, wrapped,
//!   issued, audited and leased with.
//! - `leaks`: the liveness index of secret values and the `sys/leaks/` check and response.
//! - `detect`: runtime detection rules over the audit stream (fed by `audit`).
//! - `events`: the event bus and subscriptions (Vault's event notifications).
//! - `identity`: entities, aliases, groups, identity templates and the identity token issuer.
//! - `token_backend` (the `auth/token/` API), `config`, `core` (state, bring-up), `authz` (the
//!   checks and their proofs), `sys` (the system API, its paths declared in `sys::paths`),
//!   `pipeline` (one function per request, help requests included).

pub mod audit;
mod authz;
pub mod backend;
mod chaos;
pub mod cidr;
mod config;
mod core;
pub mod detect;
mod due;
pub mod events;
mod fast_map;

pub mod glob;
pub mod ha;
pub mod hex;
mod identity;
pub mod leaks;
mod lease;
pub mod logical;
pub mod login;
pub mod metrics;
pub mod mount;
mod mount_migrate;
mod mount_move;
pub mod password_policy;
mod path;
mod pipeline;
pub mod policy;
mod policy_store;
pub mod quotas;
pub mod random;
pub mod ratelimit;
pub mod record;
mod sealing;
pub mod secret;
mod sys;
#[cfg(test)]
mod test_support;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod time;
pub mod token;
mod token_backend;
pub mod wrapping;

pub use crate::chaos::ChaosConfig;
pub use crate::core::{Core, CoreConfig, InitResult, SealStatus};
pub use backend::framework;
pub use backend::{
    BackendConfig, BackendRequest, Factory, LeaseRequest, LogicalBackend, MountInfo, Registry,
    StorageChange,
};
pub use coffer_barrier::{BatchOp, View};
/// Coffer's credential formats (`coffer_api::token_format` on the client side).
pub use coffer_wire::token_format;
pub use logical::event::Event;
pub use logical::fields::Fields;
pub use logical::login::{Login, LoginAlias};
pub use logical::{
    Auth, Error, Operation, RawBody, Request, Response, Result, SecretLease, UnauthedEndpoints,
};
pub use ratelimit::LoginLimit;
pub use secret::SecretString;
