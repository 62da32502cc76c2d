//! The path framework: a backend declares its paths as data (a [`Path`] per endpoint: pattern,
//! fields, operations with their handlers, existence check, help), and [`Paths`] routes requests
//! to the handlers, checks their fields, answers the existence probe, and documents the paths
//! (through [`Spec`]: `?help=1` answers and the server's OpenAPI document).
//!
//! Guarantees: a handler runs only for a path that matched its pattern and an operation it
//! declared, after every declared field present in the body passed its type check and every
//! required one is there (on writes); an unknown path is a 404 naming it, a known path with an
//! undeclared operation a 405; `create` falls back to the `update` handler, as every Coffer
//! write endpoint serves both. It does *not* authorize (the core did before), does not refuse
//! unknown fields (they are ignored, or named in Vault's warning where a path asks for it), and
//! does not know what a handler stores.

mod field;
pub(crate) mod help;
pub mod openapi;
pub(crate) mod pattern;
mod spec;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

pub use self::field::{Default, Field, Kind};
pub use self::help::Help;
pub use self::spec::Spec;
use async_trait::async_trait;

use crate::backend::{BackendRequest, LeaseRequest, LogicalBackend};
pub use crate::handler;
use crate::logical::fields::{Fields, ignored_warning};
use crate::logical::{Error, Operation, Response, Result};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An operation's handler: `handler!(Self::read_role)` makes one from an
/// `async fn read_role(&self, req: &Req<'_>) -> Result<Response>`.
pub type Handler<B> = for<'a, 'r> fn(&'a B, &'a Req<'r>) -> BoxFuture<'a, Result<Response>>;

/// A path's existence check, for deciding a write between `create` and `update`:
/// `handler!(Self::role_exists)` with an `async fn(&self, &Req<'_>) -> Result<Option<bool>>`
/// (`None`: no answer for this request, e.g. a folder; the write stays an `update`).
pub type Exists<B> = for<'a, 'r> fn(&'a B, &'a Req<'r>) -> BoxFuture<'a, Result<Option<bool>>>;

/// Makes a [`Handler`] or [`Exists`] from a backend's async method.
#[macro_export]
macro_rules! handler {
    ($f:path) => {
        |b, r| ::std::boxed::Box::pin($f(b, r))
    };
}

/// A backend whose paths are all declared with the framework. Its [`LogicalBackend`] comes from
/// here, so every such backend routes, checks existence and describes itself the same way; it
/// adds only what is its own (logins without a token, what renewing and revoking a lease mean).
#[async_trait]
pub trait Framework: Send + Sync + Sized + 'static {
    /// The backend's declared paths.
    fn paths() -> &'static Paths<Self>;

    /// As [`LogicalBackend::renew_lease`].
    async fn renew_lease(&self, _lease: &LeaseRequest<'_>) -> Result<()> {
        Err(Error::invalid("lease is not renewable"))
    }

    /// As [`LogicalBackend::revoke_lease`].
    async fn revoke_lease(&self, _lease: &LeaseRequest<'_>) -> Result<()> {
        Ok(())
    }

    /// As [`LogicalBackend::migrate_options`].
    async fn migrate_options(
        &self,
        _options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<crate::backend::StorageChange>> {
        Err(Error::invalid("this mount's options cannot change in place"))
    }

    /// As [`LogicalBackend::index_live_values`].
    async fn index_live_values(&self) -> Result<u64> {
        Ok(0)
    }
}

#[async_trait]
impl<B: Framework> LogicalBackend for B {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        B::paths().handle(self, req).await
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>> {
        B::paths().exists(self, req).await
    }

    async fn renew_lease(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        <B as Framework>::renew_lease(self, lease).await
    }

    async fn revoke_lease(&self, lease: &LeaseRequest<'_>) -> Result<()> {
        <B as Framework>::revoke_lease(self, lease).await
    }

    async fn migrate_options(
        &self,
        options: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<crate::backend::StorageChange>> {
        <B as Framework>::migrate_options(self, options).await
    }

    async fn index_live_values(&self) -> Result<u64> {
        <B as Framework>::index_live_values(self).await
    }

    fn unauthenticated_paths(&self) -> &'static [&'static str] {
        B::paths().unauthenticated()
    }

    fn sudo_paths(&self) -> &'static [&'static str] {
        B::paths().sudo()
    }

    fn specs(&self) -> Vec<Spec> {
        B::paths().specs()
    }

    fn help(&self, rel: &str) -> Option<Help> {
        B::paths().help(rel)
    }
}

/// One endpoint of a backend, declared as data.
pub struct Path<B> {
    pub pattern: &'static str,
    /// Groups of fields (so a role path can list the method's own and the shared token ones).
    pub fields: Vec<&'static [Field]>,
    operations: Vec<(Operation, Handler<B>)>,
    exists: Option<Exists<B>>,
    /// One line: what the path is for.
    pub synopsis: &'static str,
    /// Name ignored fields in Vault's warning on success.
    warn_unknown: bool,
    /// Reachable without a token (a login).
    unauthenticated: bool,
    /// Needs `sudo` on top of the operation's capability.
    sudo: bool,
}

impl<B> Path<B> {
    pub fn new(pattern: &'static str, synopsis: &'static str) -> Self {
        Path {
            pattern,
            fields: Vec::new(),
            operations: Vec::new(),
            exists: None,
            synopsis,
            warn_unknown: false,
            unauthenticated: false,
            sudo: false,
        }
    }

    pub fn fields(mut self, group: &'static [Field]) -> Self {
        self.fields.push(group);
        self
    }

    pub fn op(mut self, op: Operation, h: Handler<B>) -> Self {
        self.operations.push((op, h));
        self
    }

    pub fn read(self, h: Handler<B>) -> Self {
        self.op(Operation::Read, h)
    }

    pub fn list(self, h: Handler<B>) -> Self {
        self.op(Operation::List, h)
    }

    /// Serves `update`, and `create` too unless the path declares its own.
    pub fn write(self, h: Handler<B>) -> Self {
        self.op(Operation::Update, h)
    }

    pub fn patch(self, h: Handler<B>) -> Self {
        self.op(Operation::Patch, h)
    }

    pub fn delete(self, h: Handler<B>) -> Self {
        self.op(Operation::Delete, h)
    }

    pub fn exists(mut self, e: Exists<B>) -> Self {
        self.exists = Some(e);
        self
    }

    pub fn warn_unknown(mut self) -> Self {
        self.warn_unknown = true;
        self
    }

    /// Reachable without a token: a login, whose credential is in the request.
    pub fn unauthenticated(mut self) -> Self {
        self.unauthenticated = true;
        self
    }

    /// Needs `sudo` on the path, on top of the operation's capability.
    pub fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    fn all_fields(&self) -> impl Iterator<Item = &'static Field> + '_ {
        self.fields.iter().flat_map(|g| g.iter())
    }

    fn handler(&self, op: Operation) -> Option<Handler<B>> {
        let find = |o: Operation| self.operations.iter().find(|(x, _)| *x == o).map(|(_, h)| *h);
        match op {
            Operation::Create => find(Operation::Create).or_else(|| find(Operation::Update)),
            other => find(other),
        }
    }

    /// The declared operations, `create` included where the `update` handler serves it.
    pub fn operations(&self) -> Vec<Operation> {
        use Operation::*;
        [Read, List, Create, Update, Patch, Delete]
            .into_iter()
            .filter(|o| self.handler(*o).is_some())
            .collect()
    }

    /// What help and the OpenAPI document say of the path.
    pub fn spec(&self) -> Spec {
        Spec {
            pattern: self.pattern,
            synopsis: self.synopsis,
            fields: self.all_fields().collect(),
            operations: self.operations(),
            create_supported: self.exists.is_some(),
        }
    }
}

/// A backend's paths, tried in order: the first pattern that matches serves the request.
pub struct Paths<B> {
    paths: Vec<Path<B>>,
    /// What the backend is for, at the top of its root help.
    description: &'static str,
    /// The patterns of the paths declared [`Path::unauthenticated`].
    unauthenticated: Vec<&'static str>,
    /// The patterns of the paths declared [`Path::sudo`].
    sudo: Vec<&'static str>,
}

impl<B: Sync> Paths<B> {
    pub fn new(paths: Vec<Path<B>>) -> Self {
        let unauthenticated =
            paths.iter().filter(|p| p.unauthenticated).map(|p| p.pattern).collect();
        let sudo = paths.iter().filter(|p| p.sudo).map(|p| p.pattern).collect();
        Paths { paths, description: "", unauthenticated, sudo }
    }

    /// What the backend is for, shown at the top of its root help (`?help=1` on the mount).
    pub fn with_description(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }

    /// The patterns reachable without a token, as [`LogicalBackend::unauthenticated_paths`]
    /// lists them.
    pub fn unauthenticated(&self) -> &[&'static str] {
        &self.unauthenticated
    }

    /// The patterns that need `sudo`, as [`LogicalBackend::sudo_paths`] lists them (the core
    /// checks a LIST's folder path without its trailing `/` too).
    pub fn sudo(&self) -> &[&'static str] {
        &self.sudo
    }

    /// The declared path `path` names; `folder`: a trailing `/` is allowed (LIST, help).
    fn find<'p>(&self, path: &'p str, folder: bool) -> Option<(&Path<B>, pattern::Captures<'p>)> {
        self.paths.iter().find_map(|p| pattern::matches(p.pattern, path, folder).map(|c| (p, c)))
    }

    /// Routes a request to its handler, after checking its fields.
    pub async fn handle(&self, backend: &B, req: &BackendRequest<'_>) -> Result<Response> {
        let folder = req.operation == Operation::List;
        let Some((path, captures)) = self.find(req.path, folder) else {
            return Err(Error::UnsupportedPath(format!("{}{}", req.mount.path, req.path)));
        };
        let handler = path.handler(req.operation).ok_or(Error::UnsupportedOperation)?;
        // A field named like a capture documents it: its value comes from the path.
        let captured = |f: &Field| pattern::capture_names(path.pattern).any(|c| c == f.name);
        // Without data, no field has a value to check and only a write can lack one: a read
        // without a query string (most of them) skips the walk over the declared fields.
        if !req.data.is_empty() || is_write(req.operation) {
            for f in path.all_fields().filter(|f| !captured(f)) {
                f.check(req.data)?;
                if f.required && is_write(req.operation) && f.missing(req.data) {
                    let name = f.name;
                    return Err(Error::invalid(format!("missing required parameter {name:?}")));
                }
            }
        }
        let r = Req { req, captures, path };
        let mut resp = handler(backend, &r).await?;
        if path.warn_unknown {
            let known: Vec<&str> = path.all_fields().map(|f| f.name).collect();
            let mut w = ignored_warning(Fields::new(req.data).unknown(&known));
            w.append(&mut resp.warnings);
            resp.warnings = w;
        }
        Ok(resp)
    }

    /// Whether the path a write names exists; `None` where the path declares no check.
    pub async fn exists(&self, backend: &B, req: &BackendRequest<'_>) -> Result<Option<bool>> {
        let Some((path, captures)) = self.find(req.path, false) else { return Ok(None) };
        let Some(check) = path.exists else { return Ok(None) };
        let r = Req { req, captures, path };
        check(backend, &r).await
    }

    /// The pattern of the path `rel` names (a trailing `/` allowed); `None` for an unknown path.
    pub fn matching(&self, rel: &str) -> Option<&'static str> {
        self.find(rel, true).map(|(p, _)| p.pattern)
    }

    /// `?help=1` on `rel`: the root help for the mount itself (`rel` empty), else the help of the
    /// path it names; `None` for an unknown path.
    pub fn help(&self, rel: &str) -> Option<Help> {
        if rel.is_empty() {
            let specs = self.specs();
            return Some(Help { text: help::root_help(self.description, &specs), specs });
        }
        let spec = self.find(rel, true)?.0.spec();
        Some(Help { text: help::path_help(rel, &spec), specs: vec![spec] })
    }

    /// Every path, for the OpenAPI document.
    pub fn specs(&self) -> Vec<Spec> {
        self.paths.iter().map(Path::spec).collect()
    }
}

fn is_write(op: Operation) -> bool {
    matches!(op, Operation::Create | Operation::Update | Operation::Patch)
}

/// A request as a handler sees it: the backend request (it derefs to it), the pattern's
/// captures, and typed getters for the declared fields that answer the declared default when
/// a field is absent.
pub struct Req<'r> {
    req: &'r BackendRequest<'r>,
    captures: pattern::Captures<'r>,
    path: &'r dyn Declared,
}

/// What [`Req`] needs of its path, whatever the backend type.
trait Declared: Sync {
    fn field(&self, name: &str) -> Option<&'static Field>;
}

impl<B> Declared for Path<B> {
    fn field(&self, name: &str) -> Option<&'static Field> {
        self.all_fields().find(|f| f.name == name)
    }
}

impl<'r> std::ops::Deref for Req<'r> {
    type Target = BackendRequest<'r>;

    fn deref(&self) -> &BackendRequest<'r> {
        self.req
    }
}

impl<'r> Req<'r> {
    /// The backend request, for helpers that take one.
    pub fn backend(&self) -> &'r BackendRequest<'r> {
        self.req
    }

    /// A capture of the pattern (`name` of `role/{name}`); empty if the pattern has none such.
    pub fn capture(&self, name: &str) -> &'r str {
        self.captures.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v)
    }

    /// Every capture, in pattern order.
    pub fn captures(&self) -> impl Iterator<Item = (&'static str, &'r str)> + '_ {
        self.captures.iter().copied()
    }

    /// The body as sent, without defaults: for "absent keeps the stored value" updates.
    pub fn fields(&self) -> Fields<'r> {
        Fields::new(self.req.data)
    }

    fn value(&self, k: &str) -> Option<std::borrow::Cow<'r, Value>> {
        match self.path.field(k) {
            Some(f) => f.value(self.req.data),
            None => self.req.data.get(k).filter(|v| !v.is_null()).map(std::borrow::Cow::Borrowed),
        }
    }

    /// Reads `k` (sent, or its default) with one of [`Fields`]'s getters.
    fn with<T>(
        &self,
        k: &str,
        get: impl Fn(&Fields<'_>) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        let Some(v) = self.value(k) else { return Ok(None) };
        let mut one = Map::new();
        one.insert(k.to_owned(), v.into_owned());
        get(&Fields::new(&one))
    }

    pub fn str(&self, k: &str) -> Result<Option<String>> {
        self.with(k, |f| f.str(k))
    }

    pub fn u64(&self, k: &str) -> Result<Option<u64>> {
        // A JSON number (sent, or an integer field's default) reads as itself, which is what
        // the getter answers for one: without the one-field map `with` builds for it.
        if let Some(n) = self.value(k).and_then(|v| v.as_u64()) {
            return Ok(Some(n));
        }
        self.with(k, |f| f.u64(k))
    }

    pub fn bool(&self, k: &str) -> Result<Option<bool>> {
        self.with(k, |f| f.bool(k))
    }

    /// Seconds, from a number or a duration string.
    pub fn secs(&self, k: &str) -> Result<Option<u64>> {
        match self.value(k) {
            None => Ok(None),
            Some(v) => field::secs_of(&v, k),
        }
    }

    pub fn list(&self, k: &str) -> Result<Option<Vec<String>>> {
        self.with(k, |f| f.list(k))
    }

    /// A `TypeCommaIntSlice` field.
    pub fn ints(&self, k: &str) -> Result<Option<Vec<u64>>> {
        field::int_list(self.req.data, k)
    }

    /// A `TypeStringSlice` field: one string is one item, never split.
    pub fn strings(&self, k: &str) -> Result<Option<Vec<String>>> {
        field::str_list(self.req.data, k)
    }

    /// A `TypeMap` field.
    pub fn object(&self, k: &str) -> Option<&'r Map<String, Value>> {
        self.req.data.get(k).and_then(Value::as_object)
    }
}

/// A list answer: the keys, or Vault's 404 when there are none.
pub fn list_response(keys: Vec<String>) -> Result<Response> {
    if keys.is_empty() {
        return Err(Error::NotFound);
    }
    Ok(Response::list(keys))
}
