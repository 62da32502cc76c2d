//! Coffer's core: the request pipeline (seal gate → token → ACL → route), tokens, policies,
//! mounts and the `sys/` API. It sees storage only through the barrier, and engines only through
//! the [`backend::LogicalBackend`] trait; it never depends on any concrete engine.

pub mod audit;
mod authz;
pub mod backend;
pub mod cidr;
mod config;
mod core;
mod due;
pub mod framework;
pub mod glob;
pub mod hex;
mod lease;
pub mod logical;
pub mod login;
pub mod mount;
pub mod password_policy;
mod path;
mod pipeline;
pub mod policy;
mod policy_store;
pub mod random;
pub mod ratelimit;
pub mod secret;
mod sys;
pub mod time;
pub mod token;
mod token_backend;
pub mod wrapping;

pub use crate::core::{Core, CoreConfig, InitResult, SealStatus};
pub use backend::{
    BackendConfig, BackendRequest, Factory, LeaseRequest, LogicalBackend, MountInfo, Registry,
};
pub use coffer_barrier::{BatchOp, View};
pub use logical::fields::Fields;
pub use logical::login::Login;
pub use logical::{Auth, Error, Operation, Request, Response, Result, SecretLease};
pub use ratelimit::LoginLimit;
pub use secret::SecretString;
