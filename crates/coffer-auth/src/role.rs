//! What every auth method's roles share: the `token_*` fields (Vault's `tokenutil`), the stored
//! role records and their endpoints, the login a role turns into, and the routing of a method's
//! `login`, role and `config` paths ([`Endpoints`]).
//!
//! Guarantees: every method reads the token fields with the same names, legacy aliases, checks
//! (a bad CIDR, an unsupported `token_type`, `token_ttl` above `token_max_ttl` are refused with a
//! message naming the field) and defaults, shows them the same way when a role is read, and hands
//! them to the core unchanged in its [`Login`]; a role is stored as JSON at
//! `<folder><lower-cased name>` in the mount's own view, and a write applies the method's own
//! fields, then the token fields, then the method's whole-role check, before anything is stored,
//! so a refused write changes nothing. It does *not* check credentials, and it does not decide a
//! token's final TTL or policies: the core caps and completes them when it issues the token.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use async_trait::async_trait;
use coffer_core::cidr::Cidr;
use coffer_core::logical::fields::{Fields, ignored_warning};
use coffer_core::logical::login::normalize_policies;
use coffer_core::{
    BackendRequest, Error, LogicalBackend, Login, Operation, Response, Result, View,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The `token_*` fields of a role, with Vault's names, defaults and legacy aliases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct TokenFields {
    pub(crate) token_policies: Vec<String>,
    pub(crate) token_ttl: u64,
    pub(crate) token_max_ttl: u64,
    pub(crate) token_explicit_max_ttl: u64,
    pub(crate) token_period: u64,
    pub(crate) token_num_uses: u64,
    pub(crate) token_bound_cidrs: Vec<Cidr>,
    pub(crate) token_no_default_policy: bool,
    /// `service` or `default`: Coffer issues service tokens only.
    pub(crate) token_type: String,
}

/// Field names [`TokenFields::update`] reads, for an endpoint's list of known fields.
const TOKEN_FIELD_NAMES: &[&str] = &[
    "token_policies",
    "token_ttl",
    "token_max_ttl",
    "token_explicit_max_ttl",
    "token_period",
    "token_num_uses",
    "token_bound_cidrs",
    "token_no_default_policy",
    "token_type",
    // Legacy names Vault still accepts when the `token_` one is absent.
    "policies",
    "ttl",
    "max_ttl",
    "period",
    "bound_cidrs",
];

impl TokenFields {
    /// Applies the fields present in a role write; absent fields keep their value, so the same
    /// call serves create and update.
    pub(crate) fn update(&mut self, f: &Fields<'_>) -> Result<()> {
        let pick = |new: &str, old: &str| if f.has(new) { new.to_owned() } else { old.to_owned() };
        if let Some(p) = f.list(&pick("token_policies", "policies"))? {
            self.token_policies = normalize_policies(p);
        }
        if let Some(v) = f.secs(&pick("token_ttl", "ttl"))? {
            self.token_ttl = v;
        }
        if let Some(v) = f.secs(&pick("token_max_ttl", "max_ttl"))? {
            self.token_max_ttl = v;
        }
        if let Some(v) = f.secs("token_explicit_max_ttl")? {
            self.token_explicit_max_ttl = v;
        }
        if let Some(v) = f.secs(&pick("token_period", "period"))? {
            self.token_period = v;
        }
        if let Some(v) = f.u64("token_num_uses")? {
            self.token_num_uses = v;
        }
        let cidr_field = pick("token_bound_cidrs", "bound_cidrs");
        if let Some(c) = f.list(&cidr_field)? {
            self.token_bound_cidrs = Cidr::parse_list(&cidr_field, &c)?;
        }
        if let Some(v) = f.bool("token_no_default_policy")? {
            self.token_no_default_policy = v;
        }
        if let Some(t) = f.str("token_type")? {
            match t.as_str() {
                "" | "default" | "service" | "default-service" => self.token_type = t,
                "batch" | "default-batch" => {
                    return Err(Error::invalid(format!(
                        "token_type {t:?} is not supported: Coffer issues service tokens only \
                         (use \"service\" or \"default\")"
                    )));
                }
                other => {
                    return Err(Error::invalid(format!(
                        "invalid token_type {other:?}: expected \"service\" or \"default\""
                    )));
                }
            }
        }
        if self.token_max_ttl > 0 && self.token_ttl > self.token_max_ttl {
            return Err(Error::invalid("token_ttl must not be greater than token_max_ttl"));
        }
        Ok(())
    }

    /// The fields as Vault shows them when a role is read, with the legacy `policies` and
    /// `period` beside the `token_` ones, as Vault still shows them.
    pub(crate) fn to_json(&self, into: &mut Map<String, Value>) {
        let cidrs: Vec<String> = self.token_bound_cidrs.iter().map(Cidr::to_string).collect();
        let t = if self.token_type.is_empty() { "default" } else { self.token_type.as_str() };
        into.extend(into_map(json!({
            "token_policies": self.token_policies,
            "token_ttl": self.token_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_period": self.token_period,
            "token_num_uses": self.token_num_uses,
            "token_bound_cidrs": cidrs,
            "token_no_default_policy": self.token_no_default_policy,
            "token_type": t,
            "policies": self.token_policies,
            "period": self.token_period,
        })));
    }

    /// The login for a role with these settings, shown as `display_name` (appended to the
    /// mount's name; empty: the mount's name alone) with `metadata` as the token's `meta`.
    pub(crate) fn login(&self, display_name: String, metadata: BTreeMap<String, String>) -> Login {
        Login {
            policies: self.token_policies.clone(),
            metadata,
            display_name,
            ttl: self.token_ttl,
            max_ttl: self.token_max_ttl,
            explicit_max_ttl: self.token_explicit_max_ttl,
            period: self.token_period,
            num_uses: self.token_num_uses,
            bound_cidrs: self.token_bound_cidrs.clone(),
            no_default_policy: self.token_no_default_policy,
        }
    }
}

/// The method's own settings of a role; the shared token fields sit beside them in its
/// [`RoleRecord`].
pub(crate) trait Role: Serialize + DeserializeOwned + Send + Sync {
    /// The names of the method's own fields (the token ones are added), for the warning that
    /// names ignored fields.
    const FIELDS: &'static [&'static str];

    /// A new role, before the first write applies its fields.
    fn fresh() -> Self;

    /// Applies the method's own fields present in a write; `creating` when no role of that
    /// name exists yet.
    fn apply(&mut self, f: &Fields<'_>, creating: bool) -> Result<()>;

    /// Checks the role as a whole once every field, its token fields too, applied.
    fn check(&self, _token: &TokenFields) -> Result<()> {
        Ok(())
    }

    /// The method's own fields as Vault shows them when a role is read.
    fn own_json(&self) -> Map<String, Value>;
}

/// A stored role: the method's settings and the token fields, flattened into one JSON object
/// (the shape roles have always been stored in). It derefs to the method's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoleRecord<R> {
    #[serde(flatten)]
    pub(crate) role: R,
    #[serde(flatten)]
    pub(crate) token: TokenFields,
}

impl<R: Role> RoleRecord<R> {
    /// A new role, before the first write applies its fields.
    pub(crate) fn fresh() -> Self {
        RoleRecord { role: R::fresh(), token: TokenFields::default() }
    }

    /// Applies a write: the method's own fields, then the token fields, then the whole-role
    /// check. The first refusal wins and the caller stores nothing.
    pub(crate) fn update(&mut self, f: &Fields<'_>, creating: bool) -> Result<()> {
        self.role.apply(f, creating)?;
        self.token.update(f)?;
        self.role.check(&self.token)
    }

    /// The whole role as Vault shows it when read.
    pub(crate) fn to_json(&self) -> Map<String, Value> {
        let mut m = self.role.own_json();
        self.token.to_json(&mut m);
        m
    }
}

impl<R> std::ops::Deref for RoleRecord<R> {
    type Target = R;

    fn deref(&self) -> &R {
        &self.role
    }
}

impl<R> std::ops::DerefMut for RoleRecord<R> {
    fn deref_mut(&mut self) -> &mut R {
        &mut self.role
    }
}

/// The answer to a role write: no data, and a warning naming the fields it ignored.
pub(crate) fn written<R: Role>(f: &Fields<'_>) -> Response {
    let mut known: Vec<&str> = R::FIELDS.to_vec();
    known.extend_from_slice(TOKEN_FIELD_NAMES);
    Response { warnings: ignored_warning(f.unknown(&known)), ..Response::default() }
}

/// A method's roles: records at `<folder><lower-cased name>` in its view, served at
/// `<route>` (list) and `<route>/<name>` (read, create, update, delete).
pub(crate) struct Roles<R> {
    view: View,
    /// Storage folder, with its trailing `/`: `role/`.
    folder: &'static str,
    /// Request path of the collection, without a trailing `/`: `role`.
    route: &'static str,
    /// Names the record in decode errors: `jwt role`.
    what: &'static str,
    _role: PhantomData<fn() -> R>,
}

impl<R: Role> Roles<R> {
    pub(crate) fn new(
        view: View,
        folder: &'static str,
        route: &'static str,
        what: &'static str,
    ) -> Self {
        Roles { view, folder, route, what, _role: PhantomData }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{}", self.folder, name.to_lowercase())
    }

    pub(crate) async fn get(&self, name: &str) -> Result<Option<RoleRecord<R>>> {
        load(&self.view, &self.key(name), self.what).await
    }

    /// The names of the stored roles, in name order.
    pub(crate) async fn names(&self) -> Result<Vec<String>> {
        Ok(self.view.list(self.folder).await?)
    }

    /// The names of the stored roles; an empty list is a 404, as in Vault.
    pub(crate) async fn list(&self) -> Result<Response> {
        let keys = self.names().await?;
        if keys.is_empty() {
            return Err(Error::NotFound);
        }
        Ok(Response::list(keys))
    }

    pub(crate) async fn read(&self, name: &str) -> Result<Response> {
        let role = self.get(name).await?.ok_or(Error::NotFound)?;
        Ok(Response::data(role.to_json()))
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<Response> {
        self.view.delete(&self.key(name)).await?;
        Ok(Response::empty())
    }

    /// Creates or updates a role from a write's fields (see [`Role::update`]).
    pub(crate) async fn write(&self, req: &BackendRequest<'_>, name: &str) -> Result<Response> {
        let f = Fields::new(req.data);
        let existing = self.get(name).await?;
        let creating = existing.is_none();
        let mut role = existing.unwrap_or_else(RoleRecord::fresh);
        role.update(&f, creating)?;
        self.view.put(&self.key(name), &encode(&role)?).await?;
        Ok(written::<R>(&f))
    }

    /// Serves the role endpoints; `None` when the request is for another path.
    pub(crate) async fn handle(&self, req: &BackendRequest<'_>) -> Option<Result<Response>> {
        let path = req.path.trim_end_matches('/');
        if path == self.route {
            return Some(match req.operation {
                Operation::List => self.list().await,
                _ => Err(Error::UnsupportedOperation),
            });
        }
        let name = named(self.route, path)?;
        Some(match req.operation {
            Operation::Read => self.read(name).await,
            Operation::Create | Operation::Update => self.write(req, name).await,
            Operation::Delete => self.delete(name).await,
            _ => Err(Error::UnsupportedOperation),
        })
    }

    /// Whether the role a request path names exists; `None` for any other path.
    pub(crate) async fn exists(&self, req: &BackendRequest<'_>) -> Option<Result<bool>> {
        let name = named(self.route, req.path)?;
        Some(self.get(name).await.map(|r| r.is_some()))
    }
}

/// An auth method whose endpoints are `login`, its role collection and, for some, `config`:
/// [`Endpoints`] routes them, so the methods only say what each one does.
#[async_trait]
pub(crate) trait Method: Send + Sync + 'static {
    type Role: Role;

    /// Whether the method has a `config` endpoint (read, create, update).
    const CONFIG: bool;

    fn roles(&self) -> &Roles<Self::Role>;

    /// Verifies a credential; the answer carries a [`Login`].
    async fn login(&self, req: &BackendRequest<'_>) -> Result<Response>;

    /// The stored `config` as Vault shows it; `None` before one is written.
    async fn read_config(&self) -> Result<Option<Map<String, Value>>> {
        Ok(None)
    }

    async fn write_config(&self, _req: &BackendRequest<'_>) -> Result<Response> {
        Err(Error::UnsupportedOperation)
    }
}

/// Serves a [`Method`] to the core: `login` (create, update; reachable without a token), the
/// role endpoints and `config`; any other path is unsupported.
pub(crate) struct Endpoints<M>(pub(crate) M);

#[async_trait]
impl<M: Method> LogicalBackend for Endpoints<M> {
    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Response> {
        use Operation::*;
        if let Some(answer) = self.0.roles().handle(req).await {
            return answer;
        }
        match (req.path.trim_end_matches('/'), req.operation) {
            ("login", Create | Update) => self.0.login(req).await,
            ("config", Read) if M::CONFIG => {
                self.0.read_config().await?.map(Response::data).ok_or(Error::NotFound)
            }
            ("config", Create | Update) if M::CONFIG => self.0.write_config(req).await,
            ("login", _) => Err(Error::UnsupportedOperation),
            ("config", _) if M::CONFIG => Err(Error::UnsupportedOperation),
            _ => Err(Error::UnsupportedPath(format!("{}{}", req.mount.path, req.path))),
        }
    }

    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>> {
        if let Some(exists) = self.0.roles().exists(req).await {
            return exists.map(Some);
        }
        if M::CONFIG && req.path.trim_end_matches('/') == "config" {
            return Ok(Some(self.0.read_config().await?.is_some()));
        }
        Ok(None)
    }

    fn unauthenticated_paths(&self) -> &'static [&'static str] {
        LOGIN_PATHS
    }
}

/// The paths of every auth method that are reachable without a token.
pub(crate) const LOGIN_PATHS: &[&str] = &["login"];

/// The role name a request path names: `<route>/<name>`, one non-empty segment.
fn named<'p>(route: &str, path: &'p str) -> Option<&'p str> {
    let name = path.trim_end_matches('/').strip_prefix(route)?.strip_prefix('/')?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// The record at `key`, if there is one (a role, a method's `config`).
pub(crate) async fn load<T: DeserializeOwned>(
    view: &View,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    match view.get(key).await? {
        None => Ok(None),
        Some(raw) => decode(&raw, what).map(Some),
    }
}

/// A stored record; a record that does not decode is an internal error naming `what`.
pub(crate) fn decode<T: DeserializeOwned>(raw: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| Error::Internal(format!("{what} decode: {e}")))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(e.to_string()))
}

/// The object a `json!({...})` literal builds.
pub(crate) fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(t: &mut TokenFields, v: Value) -> Result<()> {
        let m = match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        t.update(&Fields::new(&m))
    }

    #[test]
    fn legacy_names_apply_when_new_ones_are_absent() {
        let mut t = TokenFields::default();
        update(&mut t, json!({"policies": "B, a", "ttl": "1h", "period": 60})).expect("update");
        assert_eq!(t.token_policies, vec!["a", "b"]);
        assert_eq!(t.token_ttl, 3600);
        assert_eq!(t.token_period, 60);
        update(&mut t, json!({"policies": "x", "token_policies": ["y"]})).expect("update");
        assert_eq!(t.token_policies, vec!["y"]);
        // Absent fields keep their value.
        assert_eq!(t.token_ttl, 3600);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut t = TokenFields::default();
        let e = update(&mut t, json!({"token_bound_cidrs": ["300.0.0.1/8"]})).expect_err("refused");
        assert!(e.to_string().contains("token_bound_cidrs"), "{e}");
        let e = update(&mut t, json!({"token_type": "batch"})).expect_err("refused");
        assert!(e.to_string().contains("service tokens"), "{e}");
        let e =
            update(&mut t, json!({"token_ttl": "2h", "token_max_ttl": "1h"})).expect_err("refused");
        assert!(e.to_string().contains("token_max_ttl"), "{e}");
        let e = update(&mut t, json!({"token_ttl": "soon"})).expect_err("refused");
        assert!(e.to_string().contains("token_ttl"), "{e}");
    }

    #[test]
    fn read_shape_matches_vault() {
        let mut t = TokenFields::default();
        update(&mut t, json!({"token_bound_cidrs": "10.0.0.0/8,127.0.0.1"})).expect("update");
        let mut m = Map::new();
        t.to_json(&mut m);
        assert_eq!(m["token_bound_cidrs"], json!(["10.0.0.0/8", "127.0.0.1/32"]));
        assert_eq!(m["token_type"], "default");
        assert_eq!(m["token_policies"], json!([]));
        // The legacy names are shown beside the token_ ones.
        assert_eq!(m["policies"], json!([]));
        assert_eq!(m["period"], json!(0));
    }

    #[test]
    fn a_login_carries_every_token_field() {
        let mut t = TokenFields::default();
        let fields = json!({
            "token_policies": "web", "token_ttl": 60, "token_max_ttl": 120,
            "token_explicit_max_ttl": 300, "token_period": 30, "token_num_uses": 2,
            "token_bound_cidrs": "10.0.0.0/8", "token_no_default_policy": true,
        });
        update(&mut t, fields).expect("update");
        let meta = BTreeMap::from([("role".to_owned(), "web".to_owned())]);
        let l = t.login("alice".into(), meta.clone());
        assert_eq!(l.policies, vec!["web"]);
        assert_eq!((l.ttl, l.max_ttl, l.explicit_max_ttl, l.period), (60, 120, 300, 30));
        assert_eq!(l.num_uses, 2);
        assert_eq!(l.bound_cidrs, t.token_bound_cidrs);
        assert!(l.no_default_policy);
        assert_eq!((l.display_name.as_str(), l.metadata), ("alice", meta));
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Demo {
        bound: Vec<String>,
        leeway: i64,
        claims: Map<String, Value>,
    }

    impl Role for Demo {
        const FIELDS: &'static [&'static str] = &["bound"];

        fn fresh() -> Self {
            Demo { leeway: 5, ..Demo::default() }
        }

        fn apply(&mut self, f: &Fields<'_>, _creating: bool) -> Result<()> {
            if let Some(b) = f.list("bound")? {
                self.bound = b;
            }
            Ok(())
        }

        fn check(&self, token: &TokenFields) -> Result<()> {
            if self.bound.is_empty() && token.token_bound_cidrs.is_empty() {
                return Err(Error::invalid("bind something"));
            }
            Ok(())
        }

        fn own_json(&self) -> Map<String, Value> {
            into_map(json!({ "bound": self.bound }))
        }
    }

    #[test]
    fn a_record_is_stored_as_one_flat_object() {
        let raw = json!({
            "bound": ["a"], "leeway": -1, "claims": {"env": "prod"},
            "token_policies": ["web"], "token_ttl": 60, "token_bound_cidrs": ["10.0.0.0/8"],
        });
        let r: RoleRecord<Demo> = decode(raw.to_string().as_bytes(), "demo").expect("decode");
        assert_eq!(
            (r.bound.clone(), r.leeway, r.claims["env"].clone()),
            (vec!["a".into()], -1, json!("prod"))
        );
        assert_eq!((r.token.token_policies.clone(), r.token.token_ttl), (vec!["web".into()], 60));
        let back: Value = serde_json::from_slice(&encode(&r).expect("encode")).expect("json");
        for (k, v) in into_map(raw) {
            assert_eq!(back[&k], v, "{k}");
        }
        assert!(back.get("role").is_none() && back.get("token").is_none(), "{back}");
        let empty: RoleRecord<Demo> = decode(b"{}", "demo").expect("defaults");
        assert_eq!((empty.leeway, empty.token.token_ttl), (0, 0));
    }

    #[test]
    fn a_write_applies_own_then_token_fields_then_checks() {
        let write = |r: &mut RoleRecord<Demo>, v: Value| {
            let m = into_map(v);
            r.update(&Fields::new(&m), true)
        };
        let mut r = RoleRecord::<Demo>::fresh();
        assert_eq!(r.leeway, 5);
        let e = write(&mut r, json!({"token_ttl": "soon"})).expect_err("token field first");
        assert!(e.to_string().contains("token_ttl"), "{e}");
        let e = write(&mut r, json!({"token_ttl": 1})).expect_err("then the check");
        assert!(e.to_string().contains("bind something"), "{e}");
        write(&mut r, json!({"bound": "x", "policies": "web"})).expect("write");
        assert_eq!(r.to_json()["policies"], json!(["web"]));
        assert_eq!(r.to_json()["bound"], json!(["x"]));
        let f = into_map(json!({"bound": "x", "nope": 1, "token_ttl": 1}));
        assert_eq!(written::<Demo>(&Fields::new(&f)).warnings.len(), 1);
    }

    #[test]
    fn role_paths_name_one_segment() {
        assert_eq!(named("role", "role/web"), Some("web"));
        assert_eq!(named("role", "role/web/"), Some("web"));
        assert_eq!(named("certs", "certs/ca"), Some("ca"));
        for other in ["role", "role/", "roles/web", "role/web/x", "config", "certs/ca"] {
            assert_eq!(named("role", other), None, "{other}");
        }
    }
}
