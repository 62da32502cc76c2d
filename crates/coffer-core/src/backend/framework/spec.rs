//! [`Spec`]: a declared path as help and the OpenAPI document see it, without its handlers.

use super::field::Field;
use crate::logical::Operation;

/// What help and the OpenAPI document need of a path, without its handlers: declared by a
/// framework backend's [`super::Path`]s, and by the `sys/` table.
#[derive(Debug, Clone)]
pub struct Spec {
    pub pattern: &'static str,
    pub synopsis: &'static str,
    pub fields: Vec<&'static Field>,
    pub operations: Vec<Operation>,
    /// The path checks existence, so `create` is decided apart from `update`.
    pub create_supported: bool,
}
