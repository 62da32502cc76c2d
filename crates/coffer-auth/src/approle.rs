//! AppRole auth method (Vault's `approle`): a role ID (not secret, baked into the deploy) and a
//! secret ID (secret, short-lived, ideally delivered wrapped) exchange for a token.
//!
//! Guarantees: secret IDs and their accessors are stored only as HMACs under a per-mount key, so
//! neither storage nor a backup yields a usable secret ID; a secret ID's use count is taken under
//! the mount's lock, so `num_uses = 1` logs in exactly once however many logins race; expired and
//! used-up secret IDs never log in and are deleted when seen; CIDR bindings are checked against
//! the connection's real peer address. Every credential failure answers the same 400 message, so
//! a caller learns nothing about which half was wrong. A role that binds images, or a secret ID
//! minted for one (`bound_image_digests`, `coffer ci bootstrap`), logs in only with evidence of
//! the image from the cluster of `image-evidence` (a pod's projected token, reviewed, and the pod
//! read); the secret ID is used only after that evidence holds, and a refusal is a bare 403 whose
//! reason is audited.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use aws_lc_rs::hmac;
use coffer_core::cidr::Cidr;
use coffer_core::framework::{Field, Framework, Path, Paths, Req, handler};
use coffer_core::hex::hex;
use coffer_core::logical::fields::Fields;
use coffer_core::random::uuid_v4;
use coffer_core::record;
use coffer_core::time::{now_unix, rfc3339};
use coffer_core::{
    BackendConfig, BatchOp, Error, LogicalBackend, Operation, Response, Result, View,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, OnceCell};
use zeroize::Zeroizing;

use crate::image::{self, ImageBinding, ImageFacts};
use crate::kubernetes;
use crate::role::{self, RoleRecord, Roles, TokenFields, into_map};

/// The one answer to a wrong role ID, a wrong, used-up or expired secret ID, or a source address
/// outside a secret ID's CIDR binding.
const BAD_CREDENTIALS: &str = "invalid role or secret ID";
/// Where the `image-evidence` config is stored in the mount's view.
const EVIDENCE_KEY: &str = "image-evidence";

pub(crate) struct AppRole {
    view: View,
    roles: Roles<Role>,
    salt: OnceCell<hmac::Key>,
    /// Serializes every change to roles and secret IDs, so use counts and deletions are exact.
    lock: Mutex<()>,
    /// The liveness index: every new secret ID goes in with it, in its batch.
    leaks: coffer_core::leaks::LeakIndex,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    Ok(Arc::new(AppRole {
        roles: Roles::new(cfg.view.clone(), "role/"),
        view: cfg.view,
        salt: OnceCell::new(),
        lock: Mutex::new(()),
        leaks: cfg.leaks,
    }))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Role {
    name: String,
    role_id: String,
    bind_secret_id: bool,
    secret_id_bound_cidrs: Vec<Cidr>,
    secret_id_num_uses: u64,
    secret_id_ttl: u64,
    local_secret_ids: bool,
    #[serde(flatten)]
    image: ImageBinding,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SecretId {
    accessor: String,
    creation_time: u64,
    /// Unix seconds; 0: never.
    expiration_time: u64,
    last_updated_time: u64,
    metadata: BTreeMap<String, String>,
    cidr_list: Vec<Cidr>,
    token_bound_cidrs: Vec<Cidr>,
    /// Uses left; 0: unlimited.
    num_uses: u64,
    ttl: u64,
    /// Manifest digests a login with this secret ID must prove it runs (`coffer ci
    /// bootstrap`); empty: only the role's image binding applies.
    #[serde(default)]
    bound_image_digests: Vec<String>,
    /// Its liveness index entry, removed with it (empty for secret IDs made before the index).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    leak_key: String,
}

coffer_core::record!(SecretId, "approle secret id", 1);

impl SecretId {
    fn expired(&self, now: u64) -> bool {
        self.expiration_time != 0 && now >= self.expiration_time
    }

    fn to_json(&self) -> Map<String, Value> {
        let cidrs = |c: &[Cidr]| c.iter().map(Cidr::to_string).collect::<Vec<_>>();
        let v = json!({
            "secret_id_accessor": self.accessor,
            "creation_time": rfc3339(self.creation_time),
            "expiration_time": if self.expiration_time == 0 {
                "0001-01-01T00:00:00Z".to_owned()
            } else {
                rfc3339(self.expiration_time)
            },
            "last_updated_time": rfc3339(self.last_updated_time),
            "metadata": self.metadata,
            "cidr_list": cidrs(&self.cidr_list),
            "token_bound_cidrs": cidrs(&self.token_bound_cidrs),
            "secret_id_num_uses": self.num_uses,
            "secret_id_ttl": self.ttl,
        });
        let mut m = into_map(v);
        // Coffer's own field, shown only where set so a Vault client's view is unchanged.
        if !self.bound_image_digests.is_empty() {
            m.insert("bound_image_digests".into(), json!(self.bound_image_digests));
        }
        m
    }
}

#[derive(Serialize, Deserialize)]
struct AccessorEntry {
    /// HMAC of the secret ID: the key of its entry under the role's folder.
    secret_id_hmac: String,
    role_hmac: String,
}

coffer_core::record!(AccessorEntry, "approle secret id accessor", 1);

#[derive(Serialize, Deserialize)]
struct RoleIdEntry {
    name: String,
}

coffer_core::record!(RoleIdEntry, "approle role id index", 1);

const ROLE_FIELDS: &[Field] = &[
    Field::str("role_name", "The role's name: letters, digits, '_', '-', '.' and '@'."),
    Field::str("role_id", "The role ID; absent at creation: a random UUID."),
    Field::bool("bind_secret_id", "Logins need a secret ID."),
    Field::comma_list("secret_id_bound_cidrs", "Addresses secret IDs may be used from."),
    Field::comma_list("bound_cidr_list", "Legacy name of secret_id_bound_cidrs."),
    Field::int("secret_id_num_uses", "Uses per secret ID; 0: unlimited."),
    Field::duration("secret_id_ttl", "Lifetime of secret IDs; 0: unlimited."),
    Field::bool("local_secret_ids", "Set at creation only."),
    image::DIGESTS_FIELD,
    image::SIGNERS_FIELD,
    image::REPOSITORIES_FIELD,
];

/// What a new secret ID may carry; the custom-secret-id path adds the `secret_id` itself.
const SECRET_ID_FIELDS: &[Field] = &[
    Field::str("role_name", "The role's name."),
    Field::kv_pairs(
        "metadata",
        "String pairs for the tokens' metadata (an object, or it JSON-encoded).",
    )
    .unchecked(),
    Field::comma_list(
        "cidr_list",
        "Addresses this secret ID may be used from (within the role's).",
    ),
    Field::comma_list(
        "token_bound_cidrs",
        "Addresses its tokens may be used from (within the role's).",
    ),
    Field::int("num_uses", "Uses of this secret ID; at most the role's secret_id_num_uses."),
    Field::duration("ttl", "Lifetime of this secret ID; at most the role's secret_id_ttl."),
    Field::comma_list(
        "bound_image_digests",
        "Manifest digests (`sha256:...`) a login with this secret ID must prove it runs.",
    ),
];

const CUSTOM_SECRET_ID: &[Field] = &[Field::str("secret_id", "The secret ID to register.")];

const SECRET_ID_LOOKUP: &[Field] =
    &[Field::str("role_name", "The role's name."), Field::str("secret_id", "The secret ID.")];

const ACCESSOR_LOOKUP: &[Field] = &[
    Field::str("role_name", "The role's name."),
    Field::str("secret_id_accessor", "The accessor of the secret ID."),
];

const LOGIN_FIELDS: &[Field] = &[
    Field::str("role_id", "The role ID.").required(),
    Field::str("secret_id", "The secret ID, when the role binds one."),
    Field::str(
        "kubernetes_jwt",
        "Image evidence: the pod's projected service-account token, reviewed by the cluster of \
         `image-evidence`.",
    ),
    image::SIGNATURE_FIELD,
];

/// The cluster that vouches for the pods of image-bound AppRole logins.
const EVIDENCE_FIELDS: &[Field] = &[
    Field::str("kubernetes_host", "The API server's URL."),
    Field::str("kubernetes_ca_cert", "CA certificate (PEM) of the API server."),
    Field::str("token_reviewer_jwt", "Bearer token for the TokenReview and pod reads; write-only."),
    Field::bool("disable_local_ca_jwt", "Do not use Coffer's own pod token and CA."),
    Field::str("audience", "The audience the pods' projected tokens must carry."),
];

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct EvidenceConfig {
    #[serde(flatten)]
    cluster: kubernetes::Config,
    audience: String,
}

coffer_core::record!(EvidenceConfig, "approle image evidence config", 1);

/// `role/:role_name/<field>`: Vault's per-field endpoints, each on one field of the role.
const ROLE_FIELD_PATHS: &[&str] = &[
    "role/{role_name}/role-id",
    "role/{role_name}/policies",
    "role/{role_name}/token-policies",
    "role/{role_name}/secret-id-num-uses",
    "role/{role_name}/secret-id-ttl",
    "role/{role_name}/token-ttl",
    "role/{role_name}/token-max-ttl",
    "role/{role_name}/token-num-uses",
    "role/{role_name}/token-bound-cidrs",
    "role/{role_name}/secret-id-bound-cidrs",
    "role/{role_name}/bind-secret-id",
    "role/{role_name}/period",
    "role/{role_name}/token-period",
];

static PATHS: LazyLock<Paths<AppRole>> = LazyLock::new(|| {
    let mut paths = vec![
        Path::new("login", "Exchange a role ID and a secret ID for a token.")
            .fields(LOGIN_FIELDS)
            .unauthenticated()
            .write(handler!(AppRole::login)),
        Path::new("tidy/secret-id", "Remove expired secret IDs and dangling accessors.")
            .write(handler!(AppRole::tidy)),
        Path::new(
            "image-evidence",
            "The Kubernetes cluster whose pods prove the image of image-bound logins (Coffer).",
        )
        .fields(EVIDENCE_FIELDS)
        .read(handler!(AppRole::read_evidence))
        .write(handler!(AppRole::write_evidence))
        .warn_unknown(),
        Path::new("role", "The roles, by name.").list(handler!(AppRole::list_roles)),
        Path::new("role/{role_name}", "A role: its secret-ID rules and its tokens' settings.")
            .fields(ROLE_FIELDS)
            .fields(role::TOKEN_FIELDS)
            .read(handler!(AppRole::read_role))
            .write(handler!(AppRole::write_role))
            .delete(handler!(AppRole::delete_role))
            .exists(handler!(AppRole::role_exists))
            .warn_unknown(),
        Path::new("role/{role_name}/secret-id", "Issue a secret ID; LIST: their accessors.")
            .fields(SECRET_ID_FIELDS)
            .write(handler!(AppRole::generate_secret_id))
            .list(handler!(AppRole::list_accessors))
            .warn_unknown(),
        Path::new(
            "role/{role_name}/custom-secret-id",
            "Register a secret ID chosen by the caller.",
        )
        .fields(SECRET_ID_FIELDS)
        .fields(CUSTOM_SECRET_ID)
        .write(handler!(AppRole::register_secret_id))
        .warn_unknown(),
        Path::new("role/{role_name}/secret-id/lookup", "A secret ID's properties.")
            .fields(SECRET_ID_LOOKUP)
            .write(handler!(AppRole::lookup_secret_id)),
        Path::new("role/{role_name}/secret-id/destroy", "Destroy a secret ID.")
            .fields(SECRET_ID_LOOKUP)
            .write(handler!(AppRole::destroy_secret_id))
            .delete(handler!(AppRole::destroy_secret_id)),
        Path::new(
            "role/{role_name}/secret-id-accessor/lookup",
            "A secret ID's properties, by accessor.",
        )
        .fields(ACCESSOR_LOOKUP)
        .write(handler!(AppRole::lookup_accessor)),
        Path::new(
            "role/{role_name}/secret-id-accessor/destroy",
            "Destroy a secret ID, by accessor.",
        )
        .fields(ACCESSOR_LOOKUP)
        .write(handler!(AppRole::destroy_accessor))
        .delete(handler!(AppRole::destroy_accessor)),
    ];
    for pattern in ROLE_FIELD_PATHS {
        paths.push(
            Path::new(pattern, "One setting of a role: read, set or reset it.")
                .read(handler!(AppRole::role_field))
                .write(handler!(AppRole::role_field))
                .delete(handler!(AppRole::role_field)),
        );
    }
    Paths::new(paths)
});

/// Vault's role name rule: word characters, with `-`, `.` and `@` inside.
fn valid_role_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
    !name.is_empty()
        && name.chars().all(|c| ok(c) || matches!(c, '-' | '.' | '@'))
        && name.starts_with(ok)
        && name.ends_with(ok)
}

impl role::Role for Role {
    const KIND: &'static str = "approle role";
    const FIELDS: &'static [Field] = ROLE_FIELDS;

    /// A new role binds a secret ID; its name is set by the caller.
    fn fresh() -> Self {
        Role { bind_secret_id: true, ..Role::default() }
    }

    fn apply(&mut self, f: &Fields<'_>, creating: bool) -> Result<()> {
        if let Some(b) = f.bool("bind_secret_id")? {
            self.bind_secret_id = b;
        }
        let cidr_field = if f.has("secret_id_bound_cidrs") {
            "secret_id_bound_cidrs"
        } else {
            "bound_cidr_list"
        };
        if let Some(c) = f.list(cidr_field)? {
            self.secret_id_bound_cidrs = Cidr::parse_list(cidr_field, &c)?;
        }
        if let Some(n) = f.u64("secret_id_num_uses")? {
            self.secret_id_num_uses = n;
        }
        if let Some(t) = f.secs("secret_id_ttl")? {
            self.secret_id_ttl = t;
        }
        if let Some(l) = f.bool("local_secret_ids")? {
            if !creating && l != self.local_secret_ids {
                return Err(Error::invalid("local_secret_ids can only be set at role creation"));
            }
            self.local_secret_ids = l;
        }
        self.image.apply(f)
    }

    fn check(&self, token: &TokenFields) -> Result<()> {
        if !self.bind_secret_id
            && self.secret_id_bound_cidrs.is_empty()
            && token.token_bound_cidrs.is_empty()
        {
            return Err(Error::invalid(
                "at least one constraint should be enabled on the role: bind_secret_id, \
                 secret_id_bound_cidrs or token_bound_cidrs",
            ));
        }
        Ok(())
    }

    fn own_json(&self) -> Map<String, Value> {
        // Vault's unset list is `null`, not `[]`.
        let cidrs: Option<Vec<String>> = (!self.secret_id_bound_cidrs.is_empty())
            .then(|| self.secret_id_bound_cidrs.iter().map(Cidr::to_string).collect());
        let mut m = into_map(json!({
            "bind_secret_id": self.bind_secret_id,
            "local_secret_ids": self.local_secret_ids,
            "secret_id_bound_cidrs": cidrs,
            "secret_id_num_uses": self.secret_id_num_uses,
            "secret_id_ttl": self.secret_id_ttl,
        }));
        self.image.to_json(&mut m);
        m
    }
}

impl AppRole {
    async fn salt(&self) -> Result<&hmac::Key> {
        self.salt
            .get_or_try_init(|| async {
                let key = match self.view.get("salt").await? {
                    Some(s) => hmac::Key::new(hmac::HMAC_SHA256, &s),
                    None => {
                        let fresh =
                            zeroize::Zeroizing::new(coffer_core::random::random_bytes::<32>());
                        self.view.put("salt", fresh.as_slice()).await?;
                        hmac::Key::new(hmac::HMAC_SHA256, fresh.as_slice())
                    }
                };
                Ok::<_, Error>(key)
            })
            .await
    }

    async fn mac(&self, value: &str) -> Result<String> {
        Ok(hex(hmac::sign(self.salt().await?, value.as_bytes()).as_ref()))
    }

    async fn must_role(&self, name: &str) -> Result<RoleRecord<Role>> {
        self.roles.get(name).await?.ok_or_else(|| {
            Error::invalid(format!("role \"{}\" does not exist", name.to_lowercase()))
        })
    }

    async fn list_roles(&self, _r: &Req<'_>) -> Result<Response> {
        self.roles.list().await
    }

    async fn read_role(&self, r: &Req<'_>) -> Result<Response> {
        self.roles.read(r.capture("role_name")).await
    }

    async fn role_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(self.roles.get(r.capture("role_name")).await?.is_some()))
    }

    async fn write_role(&self, r: &Req<'_>) -> Result<Response> {
        self.write_role_fields(r.data, r.capture("role_name")).await
    }

    /// Creates or updates a role from `data`; the framework names the fields it ignored.
    async fn write_role_fields(&self, data: &Map<String, Value>, name: &str) -> Result<Response> {
        let name = name.to_lowercase();
        if !valid_role_name(&name) {
            return Err(Error::invalid(format!(
                "invalid role name {name:?}: use letters, digits, '_', '-', '.' and '@'"
            )));
        }
        let f = Fields::new(data);
        let _g = self.lock.lock().await;
        let existing = self.roles.get(&name).await?;
        let creating = existing.is_none();
        let mut role = existing.unwrap_or_else(|| {
            let mut fresh = RoleRecord::<Role>::fresh();
            fresh.name = name.clone();
            fresh
        });
        role.update(&f, creating)?;
        let old_role_id = role.role_id.clone();
        match f.str("role_id")? {
            Some(id) if !id.is_empty() => role.role_id = id,
            Some(_) => return Err(Error::invalid("role_id must not be empty")),
            None if role.role_id.is_empty() => role.role_id = uuid_v4(),
            None => {}
        }
        self.save_role(&role, &old_role_id).await?;
        Ok(Response::empty())
    }

    /// Stores the role and its role-ID index in one batch; a role ID is unique per mount.
    async fn save_role(&self, role: &RoleRecord<Role>, old_role_id: &str) -> Result<()> {
        let id_key = format!("role_id/{}", self.mac(&role.role_id).await?);
        if role.role_id != old_role_id
            && let Some(raw) = self.view.get(&id_key).await?
        {
            let owner: RoleIdEntry = record::decode(&raw)?;
            if owner.name != role.name {
                return Err(Error::invalid("role_id already in use"));
            }
        }
        let raw = record::encode(role)?;
        let idx = record::encode(&RoleIdEntry { name: role.name.clone() })?;
        let mut ops =
            vec![BatchOp::Put(format!("role/{}", role.name), &raw), BatchOp::Put(id_key, &idx)];
        if !old_role_id.is_empty() && old_role_id != role.role_id {
            ops.push(BatchOp::Delete(format!("role_id/{}", self.mac(old_role_id).await?)));
        }
        self.view.batch(ops).await?;
        Ok(())
    }

    async fn delete_role(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("role_name");
        let _g = self.lock.lock().await;
        let Some(role) = self.roles.get(name).await? else {
            return Ok(Response::empty());
        };
        let role_hmac = self.mac(&role.name).await?;
        let folder = format!("secret_id/{role_hmac}/");
        for key in self.view.list(&folder).await? {
            self.delete_secret_id_entry(&role_hmac, &key).await?;
        }
        self.view
            .batch(vec![
                BatchOp::Delete(format!("role/{}", role.name)),
                BatchOp::Delete(format!("role_id/{}", self.mac(&role.role_id).await?)),
            ])
            .await?;
        Ok(Response::empty())
    }

    /// `role/:role_name/<field>`: the field is the pattern's last segment.
    async fn role_field(&self, req: &Req<'_>) -> Result<Response> {
        let name = req.capture("role_name");
        let field = req.path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
        let key = field.replace('-', "_");
        match req.operation {
            Operation::Read => {
                let role = self.roles.get(name).await?.ok_or(Error::NotFound)?;
                let all = role.to_json();
                let mut m = Map::new();
                if key == "role_id" {
                    m.insert("role_id".into(), json!(role.role_id));
                } else if let Some(v) = all.get(&key) {
                    m.insert(key, v.clone());
                }
                Ok(Response::data(m))
            }
            Operation::Create | Operation::Update => {
                self.must_role(name).await?;
                if !Fields::new(req.data).has(&key) {
                    return Err(Error::invalid(format!("missing required parameter {key:?}")));
                }
                let mut body = Map::new();
                body.insert(key.clone(), req.data[&key].clone());
                self.write_role_fields(&body, name).await
            }
            Operation::Delete => {
                if key == "role_id" {
                    return Err(Error::invalid("role_id cannot be deleted"));
                }
                let mut role = self.must_role(name).await?;
                let _g = self.lock.lock().await;
                let d = Role::default();
                match key.as_str() {
                    "policies" | "token_policies" => role.token.token_policies.clear(),
                    "secret_id_num_uses" => role.secret_id_num_uses = d.secret_id_num_uses,
                    "secret_id_ttl" => role.secret_id_ttl = 0,
                    "token_ttl" => role.token.token_ttl = 0,
                    "token_max_ttl" => role.token.token_max_ttl = 0,
                    "token_num_uses" => role.token.token_num_uses = 0,
                    "token_bound_cidrs" => role.token.token_bound_cidrs.clear(),
                    "secret_id_bound_cidrs" => role.secret_id_bound_cidrs.clear(),
                    "bind_secret_id" => role.bind_secret_id = true,
                    "period" | "token_period" => role.token.token_period = 0,
                    _ => return Err(Error::UnsupportedOperation),
                }
                let id = role.role_id.clone();
                self.save_role(&role, &id).await?;
                Ok(Response::empty())
            }
            _ => Err(Error::UnsupportedOperation),
        }
    }

    async fn generate_secret_id(&self, r: &Req<'_>) -> Result<Response> {
        self.new_secret_id(r, false).await
    }

    async fn register_secret_id(&self, r: &Req<'_>) -> Result<Response> {
        self.new_secret_id(r, true).await
    }

    async fn new_secret_id(&self, req: &Req<'_>, custom: bool) -> Result<Response> {
        let name = req.capture("role_name");
        let f = req.fields();
        let role = self.must_role(name).await?;
        if !role.bind_secret_id {
            return Err(Error::invalid("bind_secret_id is not set on the role"));
        }
        let secret_id = if custom {
            f.required_str("secret_id")?
        } else {
            // `cfa_…`: a scanner recognises it offline (coffer_api::token_format).
            coffer_core::token_format::mint(coffer_core::token_format::TokenKind::SecretId)
                .expose()
                .to_owned()
        };
        let metadata = match req.data.get("metadata") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::String(s)) if s.is_empty() => BTreeMap::new(),
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|_| {
                Error::invalid("metadata must be a JSON object of strings, given as a string")
            })?,
            Some(Value::Object(_)) => f.string_map("metadata")?.unwrap_or_default(),
            Some(_) => return Err(Error::invalid("metadata must be a JSON object of strings")),
        };
        let cidr_list = Cidr::parse_list("cidr_list", &f.list("cidr_list")?.unwrap_or_default())?;
        let token_cidrs = Cidr::parse_list(
            "token_bound_cidrs",
            &f.list("token_bound_cidrs")?.unwrap_or_default(),
        )?;
        check_subset("cidr_list", &cidr_list, &role.secret_id_bound_cidrs)?;
        check_subset("token_bound_cidrs", &token_cidrs, &role.token.token_bound_cidrs)?;
        let num_uses = match f.u64("num_uses")? {
            None => role.secret_id_num_uses,
            Some(n) if role.secret_id_num_uses > 0 && (n == 0 || n > role.secret_id_num_uses) => {
                return Err(Error::invalid(
                    "num_uses cannot be higher than the role's secret_id_num_uses",
                ));
            }
            Some(n) => n,
        };
        let ttl = match f.secs("ttl")? {
            None => role.secret_id_ttl,
            Some(t) if role.secret_id_ttl > 0 && (t == 0 || t > role.secret_id_ttl) => {
                return Err(Error::invalid("ttl cannot be longer than the role's secret_id_ttl"));
            }
            Some(t) => t,
        };
        let mut digests = Vec::new();
        for d in f.list("bound_image_digests")?.unwrap_or_default() {
            let d = d.trim().to_owned();
            if !image::valid_digest(&d) {
                return Err(Error::invalid(format!(
                    "bound_image_digests: {d:?} is not a manifest digest (sha256: and 64 \
                     lower-case hex digits)"
                )));
            }
            let role_digests = &role.image.bound_image_digests;
            if !role_digests.is_empty()
                && !role_digests.iter().any(|b| b.rsplit('=').next() == Some(d.as_str()))
            {
                return Err(Error::invalid(format!(
                    "bound_image_digests: {d} is not among the role's bound_image_digests"
                )));
            }
            digests.push(d);
        }
        let now = now_unix();
        let accessor = uuid_v4();
        let live = self.leaks.secret_id(&secret_id, &role.name, &accessor).await?;
        let entry = SecretId {
            bound_image_digests: digests,
            leak_key: live.key().to_owned(),
            accessor,
            creation_time: now,
            expiration_time: if ttl == 0 { 0 } else { now + ttl },
            last_updated_time: now,
            metadata,
            cidr_list,
            token_bound_cidrs: token_cidrs,
            num_uses,
            ttl,
        };
        let role_hmac = self.mac(&role.name).await?;
        let sid_hmac = self.mac(&secret_id).await?;
        let key = format!("secret_id/{role_hmac}/{sid_hmac}");
        let _g = self.lock.lock().await;
        if self.view.get(&key).await?.is_some() {
            return Err(Error::invalid("secret_id is already registered"));
        }
        let raw = record::encode(&entry)?;
        let acc = record::encode(&AccessorEntry { secret_id_hmac: sid_hmac, role_hmac })?;
        View::batch_across(vec![
            (
                &self.view,
                vec![
                    BatchOp::Put(key, &raw),
                    BatchOp::Put(format!("accessor/{}", self.mac(&entry.accessor).await?), &acc),
                ],
            ),
            (self.leaks.view(), vec![live.op()]),
        ])
        .await?;
        Ok(Response::data(into_map(json!({
            "secret_id": secret_id,
            "secret_id_accessor": entry.accessor,
            "secret_id_ttl": ttl,
            "secret_id_num_uses": num_uses,
        }))))
    }

    async fn delete_secret_id_entry(&self, role_hmac: &str, sid_hmac: &str) -> Result<()> {
        let key = format!("secret_id/{role_hmac}/{sid_hmac}");
        let mut ops = vec![BatchOp::Delete(key.clone())];
        let mut leak = Vec::new();
        if let Some(raw) = self.view.get(&key).await? {
            let e: SecretId = record::decode(&raw)?;
            ops.push(BatchOp::Delete(format!("accessor/{}", self.mac(&e.accessor).await?)));
            if !e.leak_key.is_empty() {
                leak.push(BatchOp::Delete(e.leak_key));
            }
        }
        View::batch_across(vec![(&self.view, ops), (self.leaks.view(), leak)]).await?;
        Ok(())
    }

    /// The live entry for a secret ID of `role`; expired ones are deleted on sight.
    async fn find_secret_id(
        &self,
        role: &Role,
        secret_id: &str,
    ) -> Result<Option<(String, SecretId)>> {
        let role_hmac = self.mac(&role.name).await?;
        let sid_hmac = self.mac(secret_id).await?;
        let Some(raw) = self.view.get(&format!("secret_id/{role_hmac}/{sid_hmac}")).await? else {
            return Ok(None);
        };
        let e: SecretId = record::decode(&raw)?;
        if e.expired(now_unix()) {
            self.delete_secret_id_entry(&role_hmac, &sid_hmac).await?;
            return Ok(None);
        }
        Ok(Some((sid_hmac, e)))
    }

    async fn by_accessor(&self, role: &Role, accessor: &str) -> Result<(String, SecretId)> {
        self.find_accessor(role, accessor)
            .await?
            .ok_or_else(|| Error::invalid(no_accessor(accessor)))
    }

    async fn find_accessor(
        &self,
        role: &Role,
        accessor: &str,
    ) -> Result<Option<(String, SecretId)>> {
        let Some(raw) = self.view.get(&format!("accessor/{}", self.mac(accessor).await?)).await?
        else {
            return Ok(None);
        };
        let acc: AccessorEntry = record::decode(&raw)?;
        if acc.role_hmac != self.mac(&role.name).await? {
            return Ok(None);
        }
        let Some(raw) =
            self.view.get(&format!("secret_id/{}/{}", acc.role_hmac, acc.secret_id_hmac)).await?
        else {
            return Ok(None);
        };
        Ok(Some((acc.secret_id_hmac, record::decode(&raw)?)))
    }

    async fn list_accessors(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("role_name");
        let role = self.roles.get(name).await?.ok_or(Error::NotFound)?;
        let role_hmac = self.mac(&role.name).await?;
        let now = now_unix();
        let mut keys = Vec::new();
        for k in self.view.list(&format!("secret_id/{role_hmac}/")).await? {
            if let Some(raw) = self.view.get(&format!("secret_id/{role_hmac}/{k}")).await? {
                let e: SecretId = record::decode(&raw)?;
                if !e.expired(now) {
                    keys.push(e.accessor);
                }
            }
        }
        if keys.is_empty() {
            return Err(Error::NotFound);
        }
        keys.sort();
        Ok(Response::list(keys))
    }

    async fn login(&self, req: &Req<'_>) -> Result<Response> {
        let f = Fields::new(req.data);
        let role_id = f.required_str("role_id")?;
        let bad = || Error::invalid(BAD_CREDENTIALS);
        let raw = self.view.get(&format!("role_id/{}", self.mac(&role_id).await?)).await?;
        let owner: RoleIdEntry = record::decode(&raw.ok_or_else(bad)?)?;
        let role = self.roles.get(&owner.name).await?.ok_or_else(bad)?;
        if !coffer_core::secret::ct_eq(role.role_id.as_bytes(), role_id.as_bytes()) {
            return Err(bad());
        }
        // From here the role is known: a refusal names it to the audit log and the detection
        // rules (failed logins per role), and the answer stays the same as for a role_id that
        // names no role.
        self.login_as(req, role).await.map_err(|e| match e {
            Error::InvalidRequest(_) | Error::PermissionDenied | Error::Refused(_) => {
                Error::LoginFailed { role: owner.name.clone(), error: Box::new(e) }
            }
            e => e,
        })
    }

    /// The rest of a login whose `role_id` named `role`.
    async fn login_as(&self, req: &Req<'_>, role: RoleRecord<Role>) -> Result<Response> {
        let f = Fields::new(req.data);
        let bad = || Error::invalid(BAD_CREDENTIALS);
        let mut metadata = BTreeMap::new();
        let mut token_cidrs = role.token.token_bound_cidrs.clone();
        let mut image_facts = None;
        if role.bind_secret_id {
            let secret_id = f.str("secret_id")?.filter(|s| !s.is_empty()).ok_or_else(|| {
                Error::invalid("missing secret_id: the role requires a secret ID")
            })?;
            // The image evidence is checked before the secret ID is used and outside the lock
            // (it asks the cluster): a login that cannot prove its image leaves the secret ID
            // as it was, for the pod it was minted for. The use below re-reads it under the
            // lock, so two logins racing on a single-use secret ID still get one token.
            let (_, peek) = self.find_secret_id(&role, &secret_id).await?.ok_or_else(bad)?;
            if !Cidr::any_contains(&peek.cidr_list, req.remote_addr) {
                return Err(bad());
            }
            if role.image.is_set() || !peek.bound_image_digests.is_empty() {
                image_facts =
                    Some(self.image_evidence(req, &role, &peek.bound_image_digests).await?);
            }
            let _g = self.lock.lock().await;
            let (sid_hmac, mut entry) =
                self.find_secret_id(&role, &secret_id).await?.ok_or_else(bad)?;
            if !Cidr::any_contains(&entry.cidr_list, req.remote_addr) {
                return Err(bad());
            }
            let role_hmac = self.mac(&role.name).await?;
            let key = format!("secret_id/{role_hmac}/{sid_hmac}");
            match entry.num_uses {
                0 => {}
                1 => self.delete_secret_id_entry(&role_hmac, &sid_hmac).await?,
                _ => {
                    entry.num_uses -= 1;
                    entry.last_updated_time = now_unix();
                    self.view.put(&key, &record::encode(&entry)?).await?;
                }
            }
            if !entry.token_bound_cidrs.is_empty() {
                token_cidrs = entry.token_bound_cidrs.clone();
            }
            metadata = entry.metadata;
        } else if role.image.is_set() {
            image_facts = Some(self.image_evidence(req, &role, &[]).await?);
        }
        if !Cidr::any_contains(&role.secret_id_bound_cidrs, req.remote_addr) {
            return Err(bad());
        }
        // Image metadata is what a login proved, never what a secret ID's creator wrote.
        for k in image::METADATA_KEYS {
            metadata.remove(*k);
        }
        if let Some(facts) = &image_facts {
            facts.add_to(&mut metadata);
        }
        metadata.insert("role_name".into(), role.name.clone());
        // Vault's alias: the role's role_id, with the role's name as its metadata.
        let alias_meta = BTreeMap::from([("role_name".to_owned(), role.name.clone())]);
        let mut login = role.token.login(String::new(), metadata);
        login.bound_cidrs = token_cidrs;
        login.alias = Some(coffer_core::LoginAlias::new(role.role_id.clone(), alias_meta));
        Ok(Response::login(login))
    }

    /// The image a login runs, as the cluster of `image-evidence` reports the pod its
    /// `kubernetes_jwt` is bound to, checked against the role and the secret ID's digests.
    async fn image_evidence(
        &self,
        req: &Req<'_>,
        role: &RoleRecord<Role>,
        also: &[String],
    ) -> Result<ImageFacts> {
        let refuse = |why: &str| image::refuse("approle", &role.name, why.to_owned());
        let f = Fields::new(req.data);
        let Some(jwt) = f.str("kubernetes_jwt")?.filter(|j| !j.is_empty()).map(Zeroizing::new)
        else {
            return Err(refuse("no image evidence was presented (kubernetes_jwt)"));
        };
        let Some(cfg) = record::load::<EvidenceConfig>(&self.view, EVIDENCE_KEY).await? else {
            return Err(refuse("image-evidence is not configured on the mount"));
        };
        let signatures = image::presented_signatures(req.data)?;
        let demand = image::Demand {
            binding: &role.image,
            signatures: &signatures,
            also,
            method: "approle",
            role: &role.name,
        };
        kubernetes::image_evidence(&cfg.cluster, &jwt, &cfg.audience, &demand).await.map_err(|e| {
            match e {
                Error::PermissionDenied => {
                    refuse("the cluster did not authenticate kubernetes_jwt")
                }
                other => other,
            }
        })
    }

    async fn read_evidence(&self, _r: &Req<'_>) -> Result<Response> {
        let c = record::load::<EvidenceConfig>(&self.view, EVIDENCE_KEY)
            .await?
            .ok_or(Error::NotFound)?;
        let mut m = kubernetes::show_config(&c.cluster);
        for jwt_only in ["issuer", "disable_iss_validation", "pem_keys"] {
            m.remove(jwt_only);
        }
        m.insert("audience".into(), json!(c.audience));
        Ok(Response::data(m))
    }

    async fn write_evidence(&self, r: &Req<'_>) -> Result<Response> {
        let f = Fields::new(r.data);
        let _g = self.lock.lock().await;
        let mut c =
            record::load::<EvidenceConfig>(&self.view, EVIDENCE_KEY).await?.unwrap_or_default();
        kubernetes::apply_config(&mut c.cluster, &f)?;
        if let Some(a) = f.str("audience")? {
            c.audience = a;
        }
        self.view.put(EVIDENCE_KEY, &record::encode(&c)?).await?;
        Ok(Response::empty())
    }

    async fn tidy(&self, _r: &Req<'_>) -> Result<Response> {
        let _g = self.lock.lock().await;
        let now = now_unix();
        let mut removed = 0u64;
        let mut live_accessors = std::collections::HashSet::new();
        for role_folder in self.view.list("secret_id/").await? {
            let folder = format!("secret_id/{role_folder}");
            for k in self.view.list(&folder).await? {
                let Some(raw) = self.view.get(&format!("{folder}{k}")).await? else { continue };
                let e: SecretId = record::decode(&raw)?;
                if e.expired(now) {
                    self.delete_secret_id_entry(role_folder.trim_end_matches('/'), &k).await?;
                    removed += 1;
                } else {
                    live_accessors.insert(self.mac(&e.accessor).await?);
                }
            }
        }
        let mut dangling = 0u64;
        for k in self.view.list("accessor/").await? {
            if !live_accessors.contains(&k) {
                self.view.delete(&format!("accessor/{k}")).await?;
                dangling += 1;
            }
        }
        Ok(Response::data(into_map(json!({
            "expired_secret_ids_removed": removed,
            "dangling_accessors_removed": dangling,
        }))))
    }
}

fn check_subset(field: &str, requested: &[Cidr], allowed: &[Cidr]) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    for c in requested {
        if !allowed.iter().any(|a| a.contains_block(c)) {
            return Err(Error::invalid(format!(
                "{field} entry \"{c}\" is not within the role's bound CIDR blocks"
            )));
        }
    }
    Ok(())
}

impl AppRole {
    async fn lookup_secret_id(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.must_role(r.capture("role_name")).await?;
        let sid = r.fields().required_str("secret_id")?;
        match self.find_secret_id(&role, &sid).await? {
            Some((_, e)) => Ok(Response::data(e.to_json())),
            None => Ok(Response::empty()),
        }
    }

    async fn destroy_secret_id(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.must_role(r.capture("role_name")).await?;
        let sid = r.fields().required_str("secret_id")?;
        let _g = self.lock.lock().await;
        let role_hmac = self.mac(&role.name).await?;
        self.delete_secret_id_entry(&role_hmac, &self.mac(&sid).await?).await?;
        Ok(Response::empty())
    }

    async fn lookup_accessor(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.must_role(r.capture("role_name")).await?;
        let acc = r.fields().required_str("secret_id_accessor")?;
        match self.find_accessor(&role, &acc).await? {
            Some((_, e)) => Ok(Response::data(e.to_json())),
            // Vault answers this one lookup with a 404 whose body is a whole response envelope
            // carrying the error in `data.error` (its `RespondWithStatusCode`), not `errors`.
            None => Ok(Response::raw(
                404,
                json!({
                    "request_id": r.backend().id,
                    "lease_id": "",
                    "renewable": false,
                    "lease_duration": 0,
                    "data": {"error": no_accessor(&acc)},
                    "wrap_info": null,
                    "warnings": null,
                    "auth": null,
                }),
            )),
        }
    }

    async fn destroy_accessor(&self, r: &Req<'_>) -> Result<Response> {
        let role = self.must_role(r.capture("role_name")).await?;
        let acc = r.fields().required_str("secret_id_accessor")?;
        let _g = self.lock.lock().await;
        let (sid_hmac, _) = self.by_accessor(&role, &acc).await?;
        self.delete_secret_id_entry(&self.mac(&role.name).await?, &sid_hmac).await?;
        Ok(Response::empty())
    }
}

fn no_accessor(accessor: &str) -> String {
    format!("failed to find accessor entry for secret_id_accessor: {accessor:?}")
}

impl Framework for AppRole {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let first = |p: &str| PATHS.matching(p);
        assert_eq!(first("role/web/secret-id"), Some("role/{role_name}/secret-id"));
        assert_eq!(first("role/web/secret-id/"), Some("role/{role_name}/secret-id"));
        assert_eq!(first("role/web/role-id"), Some("role/{role_name}/role-id"));
        assert_eq!(first("role/"), Some("role"));
        assert_eq!(first("role/web/nope"), None);
        assert_eq!(first("role/a/b/c/d"), None);
    }

    #[test]
    fn role_names() {
        for ok in ["web", "web-1", "a", "svc@prod", "a.b"] {
            assert!(valid_role_name(ok), "{ok}");
        }
        for bad in ["", "-web", "web-", "a b", "a/b", ".x"] {
            assert!(!valid_role_name(bad), "{bad}");
        }
    }

    #[test]
    fn secret_id_cidrs_must_lie_within_the_roles() {
        let role: Vec<Cidr> = vec!["10.0.0.0/8".parse().expect("cidr")];
        let inside: Vec<Cidr> = vec!["10.1.0.0/16".parse().expect("cidr")];
        let wider: Vec<Cidr> = vec!["10.0.0.0/7".parse().expect("cidr")];
        let outside: Vec<Cidr> = vec!["11.0.0.0/16".parse().expect("cidr")];
        assert!(check_subset("cidr_list", &inside, &role).is_ok());
        assert!(check_subset("cidr_list", &wider, &role).is_err());
        assert!(check_subset("cidr_list", &outside, &role).is_err());
        assert!(check_subset("cidr_list", &outside, &[]).is_ok());
    }
}
