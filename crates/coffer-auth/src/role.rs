//! What every auth method's roles share: the `token_*` fields (Vault's `tokenutil`), the stored
//! role records and their endpoints (declared once for every method by [`role_paths`]), and the
//! login a role turns into.
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

use coffer_core::cidr::Cidr;
use coffer_core::framework::{Field, Path, Req, list_response};
use coffer_core::logical::fields::Fields;
use coffer_core::logical::login::normalize_policies;
use coffer_core::record::{self, Record};
use coffer_core::{Error, Login, Response, Result, View};
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

/// The fields [`TokenFields::update`] reads, declared for every role path.
pub(crate) const TOKEN_FIELDS: &[Field] = &[
    Field::comma_list("token_policies", "Policies of the tokens the role's logins get."),
    Field::duration("token_ttl", "Their initial TTL; 0: the mount's default."),
    Field::duration(
        "token_max_ttl",
        "Their longest lifetime with renewals; 0: the mount's maximum.",
    ),
    Field::duration("token_explicit_max_ttl", "A hard cap no renewal passes; 0: none."),
    Field::duration("token_period", "Makes the tokens periodic: each renewal grants this much."),
    Field::int("token_num_uses", "Uses per token; 0: unlimited."),
    Field::comma_list("token_bound_cidrs", "Source addresses the tokens may be used from."),
    Field::bool("token_no_default_policy", "Leave the `default` policy out of the tokens."),
    Field::str("token_type", "`service` or `default`: Coffer issues service tokens only."),
    // Legacy names Vault still accepts when the `token_` one is absent.
    Field::comma_list("policies", "Legacy name of token_policies."),
    Field::duration("ttl", "Legacy name of token_ttl."),
    Field::duration("max_ttl", "Legacy name of token_max_ttl."),
    Field::duration("period", "Legacy name of token_period."),
    Field::comma_list("bound_cidrs", "Legacy name of token_bound_cidrs."),
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
            alias: None,
        }
    }
}

/// The method's own settings of a role; the shared token fields sit beside them in its
/// [`RoleRecord`].
pub(crate) trait Role: Serialize + DeserializeOwned + Send + Sync {
    /// What errors call a stored role: `jwt role`.
    const KIND: &'static str;
    /// The method's own fields (the token ones are added), declared for its role paths.
    const FIELDS: &'static [Field];

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

/// Roles were stored without a version before the record codec: those read as version 0,
/// whose step to 1 changes nothing.
impl<R: Role> Record for RoleRecord<R> {
    const KIND: &'static str = R::KIND;
    const VERSION: u32 = 1;
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

/// A method's roles: records at `<folder><lower-cased name>` in its view, served by the paths
/// [`role_paths`] declares.
pub(crate) struct Roles<R> {
    view: View,
    /// Storage folder, with its trailing `/`: `role/`.
    folder: &'static str,
    _role: PhantomData<fn() -> R>,
}

impl<R: Role> Roles<R> {
    pub(crate) fn new(view: View, folder: &'static str) -> Self {
        Roles { view, folder, _role: PhantomData }
    }

    fn key(&self, name: &str) -> String {
        format!("{}{}", self.folder, name.to_lowercase())
    }

    pub(crate) async fn get(&self, name: &str) -> Result<Option<RoleRecord<R>>> {
        record::load(&self.view, &self.key(name)).await
    }

    /// The names of the stored roles, in name order.
    pub(crate) async fn names(&self) -> Result<Vec<String>> {
        Ok(self.view.list(self.folder).await?)
    }

    /// The names of the stored roles; an empty list is a 404, as in Vault.
    pub(crate) async fn list(&self) -> Result<Response> {
        list_response(self.names().await?)
    }

    pub(crate) async fn read(&self, name: &str) -> Result<Response> {
        let role = self.get(name).await?.ok_or(Error::NotFound)?;
        Ok(Response::data(role.to_json()))
    }

    /// Stores `role` as `name`, for a method whose writes need more than [`Self::write`] (a
    /// hash computed off the async runtime, say).
    pub(crate) async fn put(&self, name: &str, role: &RoleRecord<R>) -> Result<()> {
        self.view.put(&self.key(name), &record::encode(role)?).await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<Response> {
        self.view.delete(&self.key(name)).await?;
        Ok(Response::empty())
    }

    /// Creates or updates a role from a write's fields (see [`Role::update`]); the framework
    /// names the ignored ones.
    pub(crate) async fn write(&self, data: &Map<String, Value>, name: &str) -> Result<Response> {
        let f = Fields::new(data);
        let existing = self.get(name).await?;
        let creating = existing.is_none();
        let mut role = existing.unwrap_or_else(RoleRecord::fresh);
        role.update(&f, creating)?;
        self.view.put(&self.key(name), &record::encode(&role)?).await?;
        Ok(Response::empty())
    }
}

/// A backend with a [`Roles`] collection, for [`role_paths`].
pub(crate) trait HasRoles: Sync {
    type Role: Role;

    fn roles(&self) -> &Roles<Self::Role>;
}

/// The role paths every method shares: `collection` (list) and `item` (read, create, update,
/// delete, with an existence check), whose one capture is the role's name. The item path takes
/// the method's own fields and the token ones, and names any other field in a warning.
pub(crate) fn role_paths<B: HasRoles + 'static>(
    collection: &'static str,
    item: &'static str,
) -> Vec<Path<B>> {
    fn name<'r>(r: &Req<'r>) -> &'r str {
        r.captures().next().map_or("", |(_, v)| v)
    }
    vec![
        Path::<B>::new(collection, "The roles, by name.").list(|b, _| Box::pin(b.roles().list())),
        Path::<B>::new(item, "A role: who may log in with it and the tokens its logins get.")
            .fields(B::Role::FIELDS)
            .fields(TOKEN_FIELDS)
            .read(|b, r| Box::pin(b.roles().read(name(r))))
            .write(|b, r| Box::pin(b.roles().write(r.data, name(r))))
            .delete(|b, r| Box::pin(b.roles().delete(name(r))))
            .exists(|b, r| {
                Box::pin(async move { Ok(Some(b.roles().get(name(r)).await?.is_some())) })
            })
            .warn_unknown(),
    ]
}

pub(crate) use coffer_core::logical::into_map;

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
        assert_eq!(m["token_bound_cidrs"], json!(["10.0.0.0/8", "127.0.0.1"]));
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
        const KIND: &'static str = "demo role";
        const FIELDS: &'static [Field] = &[Field::comma_list("bound", "Bound.")];

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
        let r: RoleRecord<Demo> = record::decode(raw.to_string().as_bytes()).expect("decode");
        assert_eq!(
            (r.bound.clone(), r.leeway, r.claims["env"].clone()),
            (vec!["a".into()], -1, json!("prod"))
        );
        assert_eq!((r.token.token_policies.clone(), r.token.token_ttl), (vec!["web".into()], 60));
        let back: Value =
            serde_json::from_slice(&record::encode(&r).expect("encode")).expect("json");
        for (k, v) in into_map(raw) {
            assert_eq!(back[&k], v, "{k}");
        }
        assert!(back.get("role").is_none() && back.get("token").is_none(), "{back}");
        let empty: RoleRecord<Demo> = record::decode(b"{}").expect("defaults");
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
    }

    struct Demos(Roles<Demo>);

    impl HasRoles for Demos {
        type Role = Demo;

        fn roles(&self) -> &Roles<Demo> {
            &self.0
        }
    }

    #[test]
    fn role_paths_name_one_segment_and_declare_the_token_fields() {
        let paths = coffer_core::framework::Paths::new(role_paths::<Demos>("role", "role/{name}"));
        let first_line = |p: &str| paths.matching(p);
        for p in ["role/web", "role/web/"] {
            assert_eq!(first_line(p), Some("role/{name}"), "{p}");
        }
        for p in ["role", "role/"] {
            assert_eq!(first_line(p), Some("role"), "{p}");
        }
        for other in ["roles/web", "role/web/x", "config", "certs/ca"] {
            assert_eq!(first_line(other), None, "{other}");
        }
        let help = paths.help("role/web").map(|h| h.text).unwrap_or_default();
        assert!(
            help.contains("bound (slice)") && help.contains("token_ttl (duration (sec))"),
            "{help}"
        );
    }
}
