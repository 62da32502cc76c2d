//! `identity/` groups, group aliases and lookups (Vault's `handleGroupUpdateCommon`,
//! `group-alias` and `lookup/*`), beside the entity paths in `api`, which declares them all.
//!
//! Guarantees: as `api`'s: a change is checked whole (names in use, member ids that exist, no
//! membership cycle, the group type) before anything is written.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::api::{IdentityBackend, kv_pairs, list_with_info, obj, policies};
use super::{Alias, GROUP_EXTERNAL, GROUP_INTERNAL, Group, now};
use crate::backend::framework::Req;
use crate::logical::{Error, Response, Result};

/// Which record a lookup names, after Vault's checks of the query.
enum Query {
    Id(String),
    Name(String),
    AliasId(String),
    Alias(String, String),
}

fn query(r: &Req<'_>) -> Result<Query> {
    let f = r.fields();
    let s = |k| f.str(k).map(|v| v.filter(|s| !s.is_empty()));
    let (id, name, alias_id) = (s("id")?, s("name")?, s("alias_id")?);
    let (alias_name, accessor) = (s("alias_name")?, s("alias_mount_accessor")?);
    let given = [
        id.is_some(),
        name.is_some(),
        alias_id.is_some(),
        alias_name.is_some() || accessor.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given == 0 {
        return Err(Error::invalid("query parameter not supplied"));
    }
    if given > 1 {
        return Err(Error::invalid(
            "query parameter conflict; please supply distinct set of query parameters",
        ));
    }
    Ok(match (id, name, alias_id, alias_name, accessor) {
        (Some(i), ..) => Query::Id(i),
        (_, Some(n), ..) => Query::Name(n),
        (_, _, Some(a), ..) => Query::AliasId(a),
        (_, _, _, Some(n), Some(a)) => Query::Alias(a, n),
        _ => {
            return Err(Error::invalid(
                "both 'alias_name' and 'alias_mount_accessor' needs to be set",
            ));
        }
    })
}

impl IdentityBackend {
    // ---- groups ----

    pub(super) async fn group_write(&self, r: &Req<'_>) -> Result<Response> {
        let id = r.fields().str("id")?.unwrap_or_default();
        let name = r.fields().str("name")?.unwrap_or_default();
        let _g = self.store.lock().await;
        let existing = if id.is_empty() {
            None
        } else {
            let g = self.store.read(|s| s.group(&id).cloned())?;
            Some(g.ok_or_else(|| Error::invalid("invalid group ID"))?)
        };
        let existing = match existing {
            Some(g) => Some(g),
            // Vault: a create naming an existing group updates it.
            None if !name.is_empty() => self.store.read(|s| s.group_by_name(&name).cloned())?,
            None => None,
        };
        self.upsert_group(r, existing, name).await
    }

    pub(super) async fn group_write_id(&self, r: &Req<'_>) -> Result<Response> {
        let _g = self.store.lock().await;
        let g = self.store.read(|s| s.group(r.capture("id")).cloned())?;
        let g = g.ok_or_else(|| Error::invalid("invalid group ID"))?;
        let name = r.fields().str("name")?.unwrap_or_default();
        self.upsert_group(r, Some(g), name).await
    }

    pub(super) async fn group_write_name(&self, r: &Req<'_>) -> Result<Response> {
        let name = r.capture("name").to_owned();
        let _g = self.store.lock().await;
        let g = self.store.read(|s| s.group_by_name(&name).cloned())?;
        self.upsert_group(r, g, name).await
    }

    /// Vault's `handleGroupUpdateCommon`; the caller holds the store's lock.
    pub(super) async fn upsert_group(
        &self,
        r: &Req<'_>,
        existing: Option<Arc<Group>>,
        name: String,
    ) -> Result<Response> {
        let f = r.fields();
        let created = existing.is_none();
        let ts = now();
        let mut g = match existing {
            Some(g) => (*g).clone(),
            None => Group {
                id: crate::random::uuid_v4(),
                creation_time: ts.clone(),
                ..Group::default()
            },
        };
        if let Some(p) = policies(&f)? {
            g.policies = p;
        }
        if let Some(t) = f.str("type")?.filter(|t| !t.is_empty()) {
            if !g.kind.is_empty() && t != g.kind {
                return Err(Error::invalid("group type cannot be changed"));
            }
            g.kind = t;
        }
        if g.kind.is_empty() {
            g.kind = GROUP_INTERNAL.into();
        }
        if g.kind != GROUP_INTERNAL && g.kind != GROUP_EXTERNAL {
            return Err(Error::invalid(format!("invalid group type {:?}", g.kind)));
        }
        if !name.is_empty() {
            if self.store.read(|s| s.group_by_name(&name).is_some_and(|o| o.id != g.id))? {
                return Err(Error::invalid("group name is already in use"));
            }
            g.name = name;
        }
        if g.name.is_empty() {
            g.name = self.store.fresh_group_name()?;
        }
        if let Some(m) = kv_pairs(&f, "metadata")? {
            g.metadata = m;
        }
        if let Some(members) = f.list("member_entity_ids")? {
            if g.kind == GROUP_EXTERNAL {
                return Err(Error::invalid(
                    "member entities can't be set manually for external groups",
                ));
            }
            let mut members = members;
            members.sort();
            members.dedup();
            if let Some(bad) =
                self.store.read(|s| members.iter().find(|m| s.entity(m).is_none()).cloned())?
            {
                return Err(Error::invalid(format!("invalid entity ID {bad:?}")));
            }
            g.member_entity_ids = members;
        }
        let mut touched: Vec<Group> = Vec::new();
        if let Some(members) = f.list("member_group_ids")? {
            if g.kind == GROUP_EXTERNAL {
                return Err(Error::invalid("member groups can't be set for external groups"));
            }
            let mut members = members;
            members.sort();
            members.dedup();
            if let Some(bad) =
                self.store.read(|s| members.iter().find(|m| s.group(m).is_none()).cloned())?
            {
                return Err(Error::invalid(format!("invalid member group ID {bad:?}")));
            }
            self.store.check_cycle(&g.id, &members)?;
            // Vault keeps a membership on the member group (its parent_group_ids): a group that
            // joins or leaves is changed too, and its modify_index says so.
            let moved: Vec<String> = members
                .iter()
                .filter(|m| !g.member_group_ids.contains(m))
                .chain(g.member_group_ids.iter().filter(|m| !members.contains(m)))
                .cloned()
                .collect();
            touched = self.store.read(|s| {
                moved
                    .iter()
                    .filter_map(|m| s.group(m))
                    .map(|m| {
                        let mut m = (**m).clone();
                        m.modify_index += 1;
                        m
                    })
                    .collect()
            })?;
            g.member_group_ids = members;
        }
        g.last_update_time = ts;
        g.modify_index += 1;
        let (id, name) = (g.id.clone(), g.name.clone());
        touched.push(g);
        self.store.commit(Vec::new(), touched, Vec::new(), Vec::new()).await?;
        if !created {
            return Ok(Response::empty());
        }
        Ok(Response::from_value(json!({ "id": id, "name": name })))
    }

    pub(super) async fn group_read_id(&self, r: &Req<'_>) -> Result<Response> {
        let g = self.store.read(|s| s.group(r.capture("id")).cloned())?;
        match g {
            Some(g) => Ok(Response::data(self.group_json(&g)?)),
            None => Err(Error::NotFound),
        }
    }

    pub(super) async fn group_read_name(&self, r: &Req<'_>) -> Result<Response> {
        let g = self.store.read(|s| s.group_by_name(r.capture("name")).cloned())?;
        match g {
            Some(g) => Ok(Response::data(self.group_json(&g)?)),
            None => Err(Error::NotFound),
        }
    }

    pub(super) async fn group_delete_id(&self, r: &Req<'_>) -> Result<Response> {
        let id = r.capture("id").to_owned();
        self.delete_group(Some(id)).await
    }

    pub(super) async fn group_delete_name(&self, r: &Req<'_>) -> Result<Response> {
        let id = self.store.read(|s| s.group_by_name(r.capture("name")).map(|g| g.id.clone()))?;
        self.delete_group(id).await
    }

    /// Deletes a group and takes it out of the groups that list it.
    pub(super) async fn delete_group(&self, id: Option<String>) -> Result<Response> {
        let _g = self.store.lock().await;
        let Some(id) = id.filter(|i| self.store.read(|s| s.group(i).is_some()).unwrap_or(false))
        else {
            return Ok(Response::empty());
        };
        // Its parents no longer list it (Vault keeps memberships on the member, so neither
        // side's modify_index moves).
        let changed = self.store.read(|s| {
            s.parent_group_ids(&id)
                .into_iter()
                .filter_map(|p| s.group(&p).cloned())
                .map(|p| {
                    let mut p = (*p).clone();
                    p.member_group_ids.retain(|m| *m != id);
                    p
                })
                .collect::<Vec<_>>()
        })?;
        self.store.commit(Vec::new(), changed, Vec::new(), vec![id]).await?;
        Ok(Response::empty())
    }

    pub(super) async fn group_list_id(&self, _r: &Req<'_>) -> Result<Response> {
        self.group_list(true)
    }

    pub(super) async fn group_list_name(&self, _r: &Req<'_>) -> Result<Response> {
        self.group_list(false)
    }

    pub(super) fn group_list(&self, by_id: bool) -> Result<Response> {
        let mut groups: Vec<Arc<Group>> =
            self.store.read(|s| s.groups.values().cloned().collect())?;
        // Vault lists both in id order (its index's), names too.
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        let mut keys = Vec::new();
        let mut info = Map::new();
        for g in &groups {
            keys.push(if by_id { g.id.clone() } else { g.name.clone() });
            let parents = self.store.read(|s| s.parent_group_ids(&g.id).len())?;
            let mut entry = obj(json!({
                "name": g.name,
                "num_member_entities": g.member_entity_ids.len(),
                "num_parent_groups": parents,
            }));
            if let Some(a) = &g.alias {
                let mut m = obj(json!({
                    "id": a.id, "name": a.name, "mount_accessor": a.mount_accessor,
                }));
                if let Some(mr) = self.mount(&a.mount_accessor) {
                    m.insert("mount_type".into(), mr.kind.into());
                    m.insert("mount_path".into(), mr.path.into());
                }
                entry.insert("alias".into(), Value::Object(m));
            }
            info.insert(g.id.clone(), Value::Object(entry));
        }
        list_with_info(keys, info, by_id)
    }

    // ---- group aliases ----

    pub(super) async fn group_alias_write(&self, r: &Req<'_>) -> Result<Response> {
        let f = r.fields();
        let s = |k| f.str(k).map(|v| v.unwrap_or_default());
        let id = match r.capture("id") {
            "" => s("id")?,
            c => c.to_owned(),
        };
        let (mut accessor, mut name, mut canonical) =
            (s("mount_accessor")?, s("name")?, s("canonical_id")?);
        let _g = self.store.lock().await;
        let ts = now();
        let mut old_group = None;
        let mut alias = if id.is_empty() {
            Alias { id: crate::random::uuid_v4(), creation_time: ts.clone(), ..Alias::default() }
        } else {
            let g = self.store.read(|s| s.group_by_alias_id(&id).cloned())?;
            let g = g.ok_or_else(|| Error::invalid("invalid group alias ID"))?;
            let a = g.alias.clone().ok_or_else(|| Error::Internal("group alias index".into()))?;
            if accessor.is_empty() {
                accessor = a.mount_accessor.clone();
            }
            if name.is_empty() {
                name = a.name.clone();
            }
            if canonical.is_empty() {
                canonical = g.id.clone();
            }
            old_group = Some(g);
            a
        };
        if name.is_empty() {
            return Err(Error::invalid("missing alias name"));
        }
        if accessor.is_empty() {
            return Err(Error::invalid("missing mount_accessor"));
        }
        if self.mount(&accessor).is_none() {
            return Err(Error::invalid(format!("invalid mount accessor {accessor:?}")));
        }
        if let Some(other) = self.store.read(|s| s.group_by_alias(&accessor, &name).cloned())?
            && other.alias.as_ref().is_none_or(|a| a.id != alias.id)
        {
            return Err(Error::invalid(
                "combination of mount and group alias name is already in use",
            ));
        }
        if canonical.is_empty() {
            return Err(Error::invalid("missing canonical_id"));
        }
        let group = self.store.read(|s| s.group(&canonical).cloned())?;
        let mut group = (*group
            .ok_or_else(|| Error::invalid("invalid group ID given in 'canonical_id'"))?)
        .clone();
        if group.kind != GROUP_EXTERNAL {
            return Err(Error::invalid("alias can't be set on an internal group"));
        }
        if group.alias.as_ref().is_some_and(|a| a.id != alias.id) {
            return Err(Error::invalid("group already has an alias"));
        }
        alias.name = name;
        alias.mount_accessor = accessor;
        alias.canonical_id = group.id.clone();
        alias.last_update_time = ts.clone();
        group.alias = Some(alias.clone());
        group.last_update_time = ts;
        group.modify_index += 1;
        let mut changed = vec![group];
        if let Some(old) = old_group.filter(|o| o.id != alias.canonical_id) {
            let mut old = (*old).clone();
            old.alias = None;
            old.modify_index += 1;
            changed.push(old);
        }
        self.store.commit(Vec::new(), changed, Vec::new(), Vec::new()).await?;
        Ok(Response::from_value(json!({ "id": alias.id, "canonical_id": alias.canonical_id })))
    }

    pub(super) async fn group_alias_read(&self, r: &Req<'_>) -> Result<Response> {
        let g = self.store.read(|s| s.group_by_alias_id(r.capture("id")).cloned())?;
        match g.as_ref().and_then(|g| g.alias.as_ref()) {
            Some(a) => Ok(Response::data(self.alias_json(a, true))),
            None => Err(Error::NotFound),
        }
    }

    pub(super) async fn group_alias_delete(&self, r: &Req<'_>) -> Result<Response> {
        let _g = self.store.lock().await;
        let Some(g) = self.store.read(|s| s.group_by_alias_id(r.capture("id")).cloned())? else {
            return Ok(Response::empty());
        };
        let mut g = (*g).clone();
        g.alias = None;
        g.modify_index += 1;
        g.last_update_time = now();
        self.store.commit(Vec::new(), vec![g], Vec::new(), Vec::new()).await?;
        Ok(Response::empty())
    }

    pub(super) async fn group_alias_list(&self, _r: &Req<'_>) -> Result<Response> {
        let mut aliases: Vec<Alias> =
            self.store.read(|s| s.groups.values().filter_map(|g| g.alias.clone()).collect())?;
        aliases.sort_by(|a, b| a.id.cmp(&b.id));
        self.alias_listing(aliases)
    }

    // ---- lookups ----

    pub(super) async fn lookup_entity(&self, r: &Req<'_>) -> Result<Response> {
        let q = query(r)?;
        let e = self.store.read(|s| {
            match &q {
                Query::Id(i) => s.entity(i),
                Query::Name(n) => s.entity_by_name(n),
                Query::AliasId(a) => s.entity_by_alias_id(a),
                Query::Alias(acc, n) => s.entity_by_alias(acc, n),
            }
            .cloned()
        })?;
        match e {
            Some(e) => Ok(Response::data(self.entity_json(&e)?)),
            None => Ok(Response::empty()),
        }
    }

    pub(super) async fn lookup_group(&self, r: &Req<'_>) -> Result<Response> {
        let q = query(r)?;
        let g = self.store.read(|s| {
            match &q {
                Query::Id(i) => s.group(i),
                Query::Name(n) => s.group_by_name(n),
                Query::AliasId(a) => s.group_by_alias_id(a),
                Query::Alias(acc, n) => s.group_by_alias(acc, n),
            }
            .cloned()
        })?;
        match g {
            Some(g) => Ok(Response::data(self.group_json(&g)?)),
            None => Ok(Response::empty()),
        }
    }
}
