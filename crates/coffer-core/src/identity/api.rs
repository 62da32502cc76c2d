//! `identity/`: the identity store's API, in Vault's paths, fields, answers and error texts.
//! Every path is declared here; entities and entity aliases are served here, groups, group
//! aliases and lookups by `groups`, the OIDC issuer's paths by `oidc`.
//!
//! Guarantees: every change is checked whole before anything is written (a bad member id, a
//! name in use, a cycle, `root` among policies: 400 and nothing changes). Not here: logins
//! (the core calls [`super::IdentityStore::login`]), tokens (the store never holds one).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Weak};

use serde_json::{Map, Value, json};

use super::{Alias, Entity, Group, IdentityStore, now};
use crate::backend::framework::{Field, Framework, Path, Paths, Req, handler};
use crate::core::Core;
use crate::logical::fields::Fields;
use crate::logical::login::normalize_policies;
use crate::logical::{Error, Response, Result};

pub(crate) struct IdentityBackend {
    pub(crate) store: Arc<IdentityStore>,
    /// For the mount table (alias accessors name auth mounts); weak, as the core owns this.
    pub(crate) core: Weak<Core>,
}

/// Mount type and path of the auth mount with this accessor.
pub(crate) struct MountRef {
    pub(crate) kind: String,
    pub(crate) path: String,
}

impl IdentityBackend {
    pub(crate) fn mount(&self, accessor: &str) -> Option<MountRef> {
        let core = self.core.upgrade()?;
        let router = core.active().ok()?.router().ok()?;
        router
            .routes()
            .find(|r| r.entry.accessor == accessor)
            .map(|r| MountRef { kind: r.entry.kind.clone(), path: r.full_path.clone() })
    }

    pub(super) fn alias_json(&self, a: &Alias, with_mount: bool) -> Map<String, Value> {
        let mut m = obj(json!({
            "id": a.id,
            "canonical_id": a.canonical_id,
            "mount_accessor": a.mount_accessor,
            "metadata": nullable_map(&a.metadata),
            "custom_metadata": a.custom_metadata,
            "name": a.name,
            "merged_from_canonical_ids": nullable(&a.merged_from_canonical_ids),
            "creation_time": a.creation_time,
            "last_update_time": a.last_update_time,
            "local": false,
            "namespace_id": "root",
        }));
        if with_mount && let Some(mr) = self.mount(&a.mount_accessor) {
            m.insert("mount_type".into(), mr.kind.into());
            m.insert("mount_path".into(), mr.path.into());
        }
        m
    }

    pub(super) fn entity_json(&self, e: &Entity) -> Result<Map<String, Value>> {
        let (direct, inherited) = self.store.read(|s| s.groups_of(&e.id))?;
        let direct: Vec<String> = direct.iter().map(|g| g.id.clone()).collect();
        let inherited: Vec<String> = inherited.iter().map(|g| g.id.clone()).collect();
        let all: Vec<String> = direct.iter().chain(inherited.iter()).cloned().collect();
        let aliases: Vec<Value> = e
            .aliases
            .iter()
            .map(|a| {
                let mut m = self.alias_json(a, true);
                m.remove("namespace_id");
                Value::Object(m)
            })
            .collect();
        Ok(obj(json!({
            "id": e.id,
            "name": e.name,
            "metadata": nullable_map(&e.metadata),
            "merged_entity_ids": nullable(&e.merged_entity_ids),
            "policies": e.policies,
            "disabled": e.disabled,
            "namespace_id": "root",
            "creation_time": e.creation_time,
            "last_update_time": e.last_update_time,
            "aliases": aliases,
            "direct_group_ids": direct,
            "inherited_group_ids": inherited,
            "group_ids": all,
        })))
    }

    pub(super) fn group_json(&self, g: &Group) -> Result<Map<String, Value>> {
        let parents = self.store.read(|s| s.parent_group_ids(&g.id))?;
        let alias = match &g.alias {
            Some(a) => {
                let mut m = self.alias_json(a, true);
                for k in ["custom_metadata", "local", "namespace_id"] {
                    m.remove(k);
                }
                Value::Object(m)
            }
            None => json!({}),
        };
        Ok(obj(json!({
            "id": g.id,
            "name": g.name,
            "policies": nullable(&g.policies),
            "member_entity_ids": nullable(&g.member_entity_ids),
            "member_group_ids": nullable(&g.member_group_ids),
            "parent_group_ids": nullable(&parents),
            "metadata": nullable_map(&g.metadata),
            "creation_time": g.creation_time,
            "last_update_time": g.last_update_time,
            "modify_index": g.modify_index,
            "type": g.kind,
            "namespace_id": "root",
            "alias": alias,
        })))
    }
}

pub(super) fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Go's nil slice: `null` when empty, as Vault answers.
pub(super) fn nullable(v: &[String]) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

pub(super) fn nullable_map(m: &BTreeMap<String, String>) -> Value {
    if m.is_empty() { Value::Null } else { json!(m) }
}

/// Vault's key/value pairs: a JSON object of strings, or `key=value` strings (a list, or one
/// comma-separated string).
pub(crate) fn kv_pairs(f: &Fields<'_>, k: &str) -> Result<Option<BTreeMap<String, String>>> {
    match f.raw(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(_)) => f
            .string_map(k)
            .map_err(|_| Error::invalid(format!("failed to parse {k}: values must be strings"))),
        Some(_) => {
            let items = f.list(k)?.unwrap_or_default();
            let mut out = BTreeMap::new();
            for item in items {
                let Some((key, value)) = item.split_once('=') else {
                    return Err(Error::invalid(format!(
                        "failed to parse {k}: invalid key/value pair {item:?}, expected key=value"
                    )));
                };
                out.insert(key.trim().to_owned(), value.trim().to_owned());
            }
            Ok(Some(out))
        }
    }
}

pub(super) fn policies(f: &Fields<'_>) -> Result<Option<Vec<String>>> {
    let Some(p) = f.list("policies")? else { return Ok(None) };
    let p = normalize_policies(p);
    if p.iter().any(|p| p == crate::token::ROOT_POLICY) {
        return Err(Error::invalid("policies cannot contain root"));
    }
    Ok(Some(p))
}

const ENTITY_FIELDS: &[Field] = &[
    Field::str("id", "ID of the entity; when set, the entity to update.").unchecked(),
    Field::str("name", "Name of the entity.").unchecked(),
    Field::kv_pairs("metadata", "Metadata: key=value pairs or a JSON object.").unchecked(),
    Field::comma_list("policies", "Policies tokens of this entity also get.").unchecked(),
    Field::bool("disabled", "Refuse the tokens of this entity.").unchecked(),
];
const ALIAS_FIELDS: &[Field] = &[
    Field::str("id", "ID of the alias; when set, the alias to update.").unchecked(),
    Field::str("canonical_id", "Entity (group) ID the alias belongs to.").unchecked(),
    Field::str("entity_id", "Alias of canonical_id.").unchecked(),
    Field::str("mount_accessor", "Accessor of the auth mount the alias is on.").unchecked(),
    Field::str("name", "Name of the alias in that auth method.").unchecked(),
    Field::kv_pairs("custom_metadata", "Operator-set metadata of the alias.").unchecked(),
];
const GROUP_FIELDS: &[Field] = &[
    Field::str("id", "ID of the group.").unchecked(),
    Field::str("name", "Name of the group.").unchecked(),
    Field::str("type", "`internal` (default) or `external`.").unchecked(),
    Field::kv_pairs("metadata", "Metadata: key=value pairs or a JSON object.").unchecked(),
    Field::comma_list("policies", "Policies members' tokens also get.").unchecked(),
    Field::comma_list("member_entity_ids", "Entity members (internal groups).").unchecked(),
    Field::comma_list("member_group_ids", "Group members (internal groups).").unchecked(),
];
const LOOKUP_FIELDS: &[Field] = &[
    Field::str("id", "ID to look up.").unchecked(),
    Field::str("name", "Name to look up.").unchecked(),
    Field::str("alias_id", "Alias ID to look up.").unchecked(),
    Field::str("alias_name", "Alias name (with alias_mount_accessor).").unchecked(),
    Field::str("alias_mount_accessor", "Mount accessor of alias_name.").unchecked(),
];
const IDS_FIELDS: &[Field] =
    &[Field::comma_list("entity_ids", "Entity IDs to delete.").unchecked()];
const MERGE_FIELDS: &[Field] = &[
    Field::comma_list("from_entity_ids", "Entities merged into to_entity_id.").unchecked(),
    Field::str("to_entity_id", "Entity the others are merged into.").unchecked(),
    Field::comma_list("conflicting_alias_ids_to_keep", "Aliases kept on a mount clash.")
        .unchecked(),
    Field::bool("force", "Accepted; settles MFA conflicts in Vault, which Coffer has not.")
        .unchecked(),
];

static PATHS: LazyLock<Paths<IdentityBackend>> = LazyLock::new(|| {
    let mut paths = vec![
        Path::new("entity", "Create or update an entity.")
            .fields(ENTITY_FIELDS)
            .write(handler!(IdentityBackend::entity_write)),
        Path::new("entity/id", "List entities by ID.")
            .list(handler!(IdentityBackend::entity_list_id)),
        Path::new("entity/id/{id}", "An entity, by ID.")
            .fields(ENTITY_FIELDS)
            .read(handler!(IdentityBackend::entity_read_id))
            .write(handler!(IdentityBackend::entity_write))
            .delete(handler!(IdentityBackend::entity_delete_id)),
        Path::new("entity/name", "List entities by name.")
            .list(handler!(IdentityBackend::entity_list_name)),
        Path::new("entity/name/{name}", "An entity, by name.")
            .fields(ENTITY_FIELDS)
            .read(handler!(IdentityBackend::entity_read_name))
            .write(handler!(IdentityBackend::entity_write_name))
            .delete(handler!(IdentityBackend::entity_delete_name)),
        Path::new("entity/batch-delete", "Delete several entities.")
            .fields(IDS_FIELDS)
            .write(handler!(IdentityBackend::entity_batch_delete)),
        Path::new("entity/merge", "Merge entities into one.")
            .fields(MERGE_FIELDS)
            .write(handler!(IdentityBackend::entity_merge)),
        Path::new("entity-alias", "Create or update an entity alias.")
            .fields(ALIAS_FIELDS)
            .write(handler!(IdentityBackend::alias_write)),
        Path::new("entity-alias/id", "List entity aliases by ID.")
            .list(handler!(IdentityBackend::alias_list)),
        Path::new("entity-alias/id/{id}", "An entity alias, by ID.")
            .fields(ALIAS_FIELDS)
            .read(handler!(IdentityBackend::alias_read))
            .write(handler!(IdentityBackend::alias_write))
            .delete(handler!(IdentityBackend::alias_delete)),
        Path::new("group", "Create or update a group.")
            .fields(GROUP_FIELDS)
            .write(handler!(IdentityBackend::group_write)),
        Path::new("group/id", "List groups by ID.").list(handler!(IdentityBackend::group_list_id)),
        Path::new("group/id/{id}", "A group, by ID.")
            .fields(GROUP_FIELDS)
            .read(handler!(IdentityBackend::group_read_id))
            .write(handler!(IdentityBackend::group_write_id))
            .delete(handler!(IdentityBackend::group_delete_id)),
        Path::new("group/name", "List groups by name.")
            .list(handler!(IdentityBackend::group_list_name)),
        Path::new("group/name/{name}", "A group, by name.")
            .fields(GROUP_FIELDS)
            .read(handler!(IdentityBackend::group_read_name))
            .write(handler!(IdentityBackend::group_write_name))
            .delete(handler!(IdentityBackend::group_delete_name)),
        Path::new("group-alias", "Create or update a group alias.")
            .fields(ALIAS_FIELDS)
            .write(handler!(IdentityBackend::group_alias_write)),
        Path::new("group-alias/id", "List group aliases by ID.")
            .list(handler!(IdentityBackend::group_alias_list)),
        Path::new("group-alias/id/{id}", "A group alias, by ID.")
            .fields(ALIAS_FIELDS)
            .read(handler!(IdentityBackend::group_alias_read))
            .write(handler!(IdentityBackend::group_alias_write))
            .delete(handler!(IdentityBackend::group_alias_delete)),
        Path::new("lookup/entity", "Find an entity by ID, name or alias.")
            .fields(LOOKUP_FIELDS)
            .write(handler!(IdentityBackend::lookup_entity)),
        Path::new("lookup/group", "Find a group by ID, name or alias.")
            .fields(LOOKUP_FIELDS)
            .write(handler!(IdentityBackend::lookup_group)),
    ];
    paths.extend(super::oidc::paths());
    Paths::new(paths).with_description(
        "The identity store: entities, aliases and groups, and the identity token issuer.",
    )
});

impl Framework for IdentityBackend {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}

impl IdentityBackend {
    // ---- entities ----

    async fn entity_write(&self, r: &Req<'_>) -> Result<Response> {
        let id = match r.capture("id") {
            "" => r.fields().str("id")?.unwrap_or_default(),
            c => c.to_owned(),
        };
        let name = r.fields().str("name")?.unwrap_or_default();
        self.upsert_entity(r, id, name).await
    }

    async fn entity_write_name(&self, r: &Req<'_>) -> Result<Response> {
        self.upsert_entity(r, String::new(), r.capture("name").to_owned()).await
    }

    async fn upsert_entity(&self, r: &Req<'_>, id: String, name: String) -> Result<Response> {
        let f = r.fields();
        let policies = policies(&f)?;
        let metadata = kv_pairs(&f, "metadata")?;
        let disabled = f.bool("disabled")?;
        let _g = self.store.lock().await;
        let ts = now();
        let mut entity = if id.is_empty() {
            None
        } else {
            let e = self.store.read(|s| s.entity(&id).cloned())?;
            Some((*e.ok_or_else(|| Error::invalid("entity not found from id"))?).clone())
        };
        if !name.is_empty() {
            let by = self.store.read(|s| s.entity_by_name(&name).cloned())?;
            match (&entity, by) {
                (_, None) => {}
                (None, Some(found)) => entity = Some((*found).clone()),
                (Some(e), Some(found)) if e.id == found.id => {}
                (Some(_), Some(_)) => return Err(Error::invalid("entity name is already in use")),
            }
        }
        let created = entity.is_none();
        let mut e = match entity {
            Some(e) => e,
            None => Entity {
                id: crate::random::uuid_v4(),
                name: if name.is_empty() { self.store.fresh_entity_name()? } else { name.clone() },
                creation_time: ts.clone(),
                ..Entity::default()
            },
        };
        if !name.is_empty() {
            e.name = name;
        }
        if let Some(p) = policies {
            e.policies = p;
        }
        if let Some(d) = disabled {
            e.disabled = d;
        }
        if let Some(m) = metadata {
            e.metadata = m;
        }
        e.last_update_time = ts;
        let (eid, ename) = (e.id.clone(), e.name.clone());
        let aliases: Vec<String> = e.aliases.iter().map(|a| a.id.clone()).collect();
        self.store.commit(vec![e], Vec::new(), Vec::new(), Vec::new()).await?;
        // Vault answers an update of an existing entity with 204.
        if !created {
            return Ok(Response::empty());
        }
        Ok(Response::from_value(json!({
            "id": eid,
            "name": ename,
            "aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
        })))
    }

    async fn entity_read_id(&self, r: &Req<'_>) -> Result<Response> {
        let e = self.store.read(|s| s.entity(r.capture("id")).cloned())?;
        match e {
            Some(e) => Ok(Response::data(self.entity_json(&e)?)),
            None => Err(Error::NotFound),
        }
    }

    async fn entity_read_name(&self, r: &Req<'_>) -> Result<Response> {
        let e = self.store.read(|s| s.entity_by_name(r.capture("name")).cloned())?;
        match e {
            Some(e) => Ok(Response::data(self.entity_json(&e)?)),
            None => Err(Error::NotFound),
        }
    }

    async fn entity_delete_id(&self, r: &Req<'_>) -> Result<Response> {
        self.delete_entities(vec![r.capture("id").to_owned()]).await
    }

    async fn entity_delete_name(&self, r: &Req<'_>) -> Result<Response> {
        let id = self.store.read(|s| s.entity_by_name(r.capture("name")).map(|e| e.id.clone()))?;
        match id {
            Some(id) => self.delete_entities(vec![id]).await,
            None => Ok(Response::empty()),
        }
    }

    async fn entity_batch_delete(&self, r: &Req<'_>) -> Result<Response> {
        let ids = r.fields().list("entity_ids")?.unwrap_or_default();
        if ids.is_empty() {
            return Err(Error::invalid("missing entity ids to delete"));
        }
        self.delete_entities(ids).await
    }

    /// Deletes entities (unknown ids are skipped, as in Vault) and takes them out of every
    /// group, in one batch.
    async fn delete_entities(&self, ids: Vec<String>) -> Result<Response> {
        let _g = self.store.lock().await;
        let ids: Vec<String> =
            self.store.read(|s| ids.into_iter().filter(|i| s.entity(i).is_some()).collect())?;
        if ids.is_empty() {
            return Ok(Response::empty());
        }
        let groups = self.store.read(|s| {
            s.groups
                .values()
                .filter(|g| g.member_entity_ids.iter().any(|m| ids.contains(m)))
                .map(|g| {
                    let mut g = (**g).clone();
                    g.member_entity_ids.retain(|m| !ids.contains(m));
                    g.modify_index += 1;
                    g
                })
                .collect::<Vec<_>>()
        })?;
        self.store.commit(Vec::new(), groups, ids, Vec::new()).await?;
        Ok(Response::empty())
    }

    async fn entity_list_id(&self, _r: &Req<'_>) -> Result<Response> {
        self.entity_list(true)
    }

    async fn entity_list_name(&self, _r: &Req<'_>) -> Result<Response> {
        self.entity_list(false)
    }

    /// Vault's list with `key_info` keyed by entity id, for both listings.
    fn entity_list(&self, by_id: bool) -> Result<Response> {
        let mut entities: Vec<Arc<Entity>> =
            self.store.read(|s| s.entities.values().cloned().collect())?;
        // Vault lists both in id order (its index's), names too.
        entities.sort_by(|a, b| a.id.cmp(&b.id));
        let mut keys = Vec::new();
        let mut info = Map::new();
        for e in &entities {
            keys.push(if by_id { e.id.clone() } else { e.name.clone() });
            let mut entry = obj(json!({ "name": e.name }));
            if !e.aliases.is_empty() {
                let aliases: Vec<Value> = e
                    .aliases
                    .iter()
                    .map(|a| {
                        let mut m = obj(json!({
                            "id": a.id, "name": a.name, "mount_accessor": a.mount_accessor,
                        }));
                        if let Some(mr) = self.mount(&a.mount_accessor) {
                            m.insert("mount_type".into(), mr.kind.into());
                            m.insert("mount_path".into(), mr.path.into());
                        }
                        Value::Object(m)
                    })
                    .collect();
                entry.insert("aliases".into(), aliases.into());
            }
            info.insert(e.id.clone(), Value::Object(entry));
        }
        list_with_info(keys, info, by_id)
    }

    async fn entity_merge(&self, r: &Req<'_>) -> Result<Response> {
        let f = r.fields();
        let to = f.str("to_entity_id")?.unwrap_or_default();
        if to.is_empty() {
            return Err(Error::invalid("missing entity id to merge to"));
        }
        let from = f.list("from_entity_ids")?.unwrap_or_default();
        if from.is_empty() {
            return Err(Error::invalid("missing entity ids to merge from"));
        }
        let keep = f.list("conflicting_alias_ids_to_keep")?.unwrap_or_default();
        // `force` settles MFA secret conflicts in Vault; Coffer has no MFA, so it changes nothing.
        let _force = f.bool("force")?;
        if from.len() > 1 && keep.len() > 1 {
            return Err(Error::invalid(
                "aliases conflicts cannot be resolved with multiple from entity ids - merge one \
                 entity at a time",
            ));
        }
        let _g = self.store.lock().await;
        let target = self.store.read(|s| s.entity(&to).cloned())?;
        let mut target =
            (*target.ok_or_else(|| Error::invalid("entity id to merge to is invalid"))?).clone();
        let mut sources = Vec::new();
        for id in &from {
            if *id == to {
                return Err(Error::invalid(
                    "to_entity_id should not be present in from_entity_ids",
                ));
            }
            let Some(src) = self.store.read(|s| s.entity(id).cloned())? else {
                return Err(Error::invalid("entity id to merge from is invalid"));
            };
            sources.push(src);
        }
        // Vault's checks, over every source before anything changes: one alias per mount.
        if keep.is_empty() {
            let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
            let mut clashes = Vec::new();
            for src in &sources {
                for fa in &src.aliases {
                    if let Some(other) = seen.insert(&fa.mount_accessor, &src.id)
                        && other != src.id
                    {
                        return Err(Error::invalid(format!(
                            "mount accessor {} found in multiple fromEntities, merge should be \
                             done with one fromEntity at a time",
                            fa.mount_accessor
                        )));
                    }
                    for ta in
                        target.aliases.iter().filter(|t| t.mount_accessor == fa.mount_accessor)
                    {
                        clashes.push(format!(
                            "mountAccessor: {}, toEntity ID: {}, fromEntity ID: {}, conflicting \
                             toEntity alias ID: {}, conflicting fromEntity alias ID: {}",
                            ta.mount_accessor, target.id, src.id, ta.id, fa.id
                        ));
                    }
                }
            }
            if !clashes.is_empty() {
                return Err(Error::invalid(format!(
                    "toEntity and at least one fromEntity have aliases with the same mount \
                     accessor, repeat the merge request specifying exactly one fromEntity, \
                     clashes: {}",
                    clashes.join("; ")
                )));
            }
        }
        let mut deleted = Vec::new();
        for src in sources {
            for mut alias in src.aliases.iter().cloned() {
                if let Some(pos) =
                    target.aliases.iter().position(|a| a.mount_accessor == alias.mount_accessor)
                {
                    // The operator named which of the two stays; the other goes.
                    if keep.contains(&alias.id) {
                        target.aliases.remove(pos);
                    } else {
                        continue;
                    }
                }
                alias.merged_from_canonical_ids.push(src.id.clone());
                alias.canonical_id = target.id.clone();
                target.aliases.push(alias);
            }
            // Vault's API merge leaves the target's policies as they are.
            target.merged_entity_ids.push(src.id.clone());
            deleted.push(src.id.clone());
        }
        target.last_update_time = now();
        // Group memberships move with the entity.
        let groups = self.store.read(|s| {
            s.groups
                .values()
                .filter(|g| g.member_entity_ids.iter().any(|m| deleted.contains(m)))
                .map(|g| {
                    let mut g = (**g).clone();
                    g.member_entity_ids.retain(|m| !deleted.contains(m));
                    if !g.member_entity_ids.contains(&to) {
                        g.member_entity_ids.push(to.clone());
                    }
                    g.modify_index += 1;
                    g
                })
                .collect::<Vec<_>>()
        })?;
        // The merged entities' records go in the same batch that moves their aliases.
        self.store.commit(vec![target], groups, deleted, Vec::new()).await?;
        Ok(Response::empty())
    }

    // ---- entity aliases ----

    async fn alias_write(&self, r: &Req<'_>) -> Result<Response> {
        let f = r.fields();
        let s = |k| f.str(k).map(|v| v.unwrap_or_default());
        let id = match r.capture("id") {
            "" => s("id")?,
            c => c.to_owned(),
        };
        let mut canonical = s("canonical_id")?;
        if canonical.is_empty() {
            canonical = s("entity_id")?;
        }
        let (mut accessor, mut name) = (s("mount_accessor")?, s("name")?);
        let mut custom = kv_pairs(&f, "custom_metadata")?;
        // Vault's quirk, kept: an update that names the alias by accessor and name (not by id)
        // without custom_metadata clears it.
        if id.is_empty() && custom.is_none() {
            custom = Some(BTreeMap::new());
        }
        let _g = self.store.lock().await;
        let existing = if !id.is_empty() {
            let e = self.store.read(|s| s.entity_by_alias_id(&id).cloned())?;
            let e = e.ok_or_else(|| Error::invalid("invalid alias ID provided"))?;
            Some(e)
        } else {
            if accessor.is_empty() || name.is_empty() {
                return Err(Error::invalid("'id' or 'mount_accessor' and 'name' must be provided"));
            }
            if self.mount(&accessor).is_none() {
                return Err(Error::invalid(format!("invalid mount accessor {accessor:?}")));
            }
            self.store.read(|s| s.entity_by_alias(&accessor, &name).cloned())?
        };
        let ts = now();
        if let Some(owner) = existing {
            // An update: of the alias with this id, or of the one with this accessor and name.
            let old = owner
                .aliases
                .iter()
                .find(|a| {
                    if id.is_empty() {
                        a.mount_accessor == accessor && a.name == name
                    } else {
                        a.id == id
                    }
                })
                .cloned()
                .ok_or_else(|| Error::Internal("alias index out of step".into()))?;
            if accessor.is_empty() {
                accessor = old.mount_accessor.clone();
            }
            if name.is_empty() {
                name = old.name.clone();
            }
            if accessor != old.mount_accessor && self.mount(&accessor).is_none() {
                return Err(Error::invalid(format!("invalid mount accessor {accessor:?}")));
            }
            let target_id = if canonical.is_empty() { owner.id.clone() } else { canonical.clone() };
            let unchanged = name == old.name
                && accessor == old.mount_accessor
                && target_id == owner.id
                && custom
                    .as_ref()
                    .is_none_or(|c| *c == old.custom_metadata.clone().unwrap_or_default());
            if unchanged {
                return Ok(Response::empty());
            }
            if (accessor != old.mount_accessor || name != old.name)
                && self.store.read(|s| s.entity_by_alias(&accessor, &name).is_some())?
            {
                return Err(Error::invalid(
                    "alias with combination of mount accessor and name already exists",
                ));
            }
            let mut alias = old.clone();
            alias.name = name;
            alias.mount_accessor = accessor.clone();
            if let Some(c) = custom {
                alias.custom_metadata = Some(c);
            }
            alias.last_update_time = ts.clone();
            let mut from = (*owner).clone();
            from.aliases.retain(|a| a.id != old.id);
            let mut changed = Vec::new();
            if target_id == owner.id {
                if from.aliases.iter().any(|a| a.mount_accessor == accessor) {
                    return Err(Error::invalid(
                        "Alias cannot be updated as the entity already has an alias for the given 'mount_accessor' ",
                    ));
                }
                from.aliases.push(alias.clone());
                from.last_update_time = ts;
                changed.push(from);
            } else {
                let to = self.store.read(|s| s.entity(&target_id).cloned())?;
                let mut to = (*to.ok_or_else(|| {
                    Error::invalid("given 'canonical_id' is not associated with an entity")
                })?)
                .clone();
                if to.aliases.iter().any(|a| a.mount_accessor == accessor) {
                    return Err(Error::invalid(
                        "Alias cannot be updated as the given entity already has an alias for this mount ",
                    ));
                }
                alias.canonical_id = to.id.clone();
                to.aliases.push(alias.clone());
                to.last_update_time = ts.clone();
                from.last_update_time = ts;
                changed.push(from);
                changed.push(to);
            }
            self.store.commit(changed, Vec::new(), Vec::new(), Vec::new()).await?;
            return Ok(Response::from_value(json!({
                "id": alias.id,
                "canonical_id": alias.canonical_id,
            })));
        }
        // A new alias, on the named entity or on a new one.
        let mut entity = if canonical.is_empty() {
            Entity {
                id: crate::random::uuid_v4(),
                name: self.store.fresh_entity_name()?,
                creation_time: ts.clone(),
                ..Entity::default()
            }
        } else {
            let e = self.store.read(|s| s.entity(&canonical).cloned())?;
            (*e.ok_or_else(|| Error::invalid("invalid canonical ID"))?).clone()
        };
        if entity.aliases.iter().any(|a| a.mount_accessor == accessor) {
            return Err(Error::invalid(
                "Alias already exists for requested entity and mount accessor",
            ));
        }
        let alias = Alias {
            id: crate::random::uuid_v4(),
            canonical_id: entity.id.clone(),
            mount_accessor: accessor,
            name,
            custom_metadata: Some(custom.unwrap_or_default()),
            creation_time: ts.clone(),
            last_update_time: ts.clone(),
            ..Alias::default()
        };
        entity.aliases.push(alias.clone());
        entity.last_update_time = ts;
        self.store.commit(vec![entity], Vec::new(), Vec::new(), Vec::new()).await?;
        Ok(Response::from_value(json!({ "id": alias.id, "canonical_id": alias.canonical_id })))
    }

    async fn alias_read(&self, r: &Req<'_>) -> Result<Response> {
        let id = r.capture("id");
        let e = self.store.read(|s| s.entity_by_alias_id(id).cloned())?;
        let alias = e.as_ref().and_then(|e| e.aliases.iter().find(|a| a.id == id));
        match alias {
            Some(a) => Ok(Response::data(self.alias_json(a, true))),
            None => Err(Error::NotFound),
        }
    }

    async fn alias_delete(&self, r: &Req<'_>) -> Result<Response> {
        let id = r.capture("id");
        let _g = self.store.lock().await;
        let Some(e) = self.store.read(|s| s.entity_by_alias_id(id).cloned())? else {
            return Ok(Response::empty());
        };
        let mut e = (*e).clone();
        e.aliases.retain(|a| a.id != id);
        e.last_update_time = now();
        self.store.commit(vec![e], Vec::new(), Vec::new(), Vec::new()).await?;
        Ok(Response::empty())
    }

    async fn alias_list(&self, _r: &Req<'_>) -> Result<Response> {
        let mut aliases: Vec<Alias> = self
            .store
            .read(|s| s.entities.values().flat_map(|e| e.aliases.iter().cloned()).collect())?;
        aliases.sort_by(|a, b| a.id.cmp(&b.id));
        self.alias_listing(aliases)
    }

    pub(super) fn alias_listing(&self, aliases: Vec<Alias>) -> Result<Response> {
        let mut keys = Vec::new();
        let mut info = Map::new();
        for a in aliases {
            let mut m = obj(json!({
                "canonical_id": a.canonical_id,
                "custom_metadata": a.custom_metadata,
                "local": false,
                "metadata": nullable_map(&a.metadata),
                "mount_accessor": a.mount_accessor,
                "name": a.name,
            }));
            if let Some(mr) = self.mount(&a.mount_accessor) {
                m.insert("mount_type".into(), mr.kind.into());
                m.insert("mount_path".into(), mr.path.into());
            }
            keys.push(a.id.clone());
            info.insert(a.id, Value::Object(m));
        }
        list_with_info(keys, info, true)
    }
}

/// Vault's `ListResponseWithInfo`: `keys` and `key_info` (by id); an empty list is a 404. Listings by name answer
/// `keys` alone: Vault's HTTP layer keeps only the `key_info` entries whose key is listed, and
/// the by-id entries of a by-name listing match none.
pub(super) fn list_with_info(
    keys: Vec<String>,
    info: Map<String, Value>,
    with_info: bool,
) -> Result<Response> {
    if keys.is_empty() {
        return Err(Error::NotFound);
    }
    let mut m = Map::new();
    m.insert("keys".into(), json!(keys));
    if with_info {
        m.insert("key_info".into(), Value::Object(info));
    }
    Ok(Response::data(m))
}
