//! The identity store (Vault's `identity/` mount): entities, their aliases (one per auth mount),
//! internal and external groups with group aliases, the identity OIDC token issuer, and what
//! the rest of the core asks of them: the entity a login belongs to, the policies a token gets
//! from its entity and groups, and the context identity templates are rendered with.
//!
//! Guarantees: every record lives in the barrier under the mount's own view (`entity/<id>`,
//! `group/<id>`, `oidc/...`) and is written before the in-memory indexes change, so an answer
//! that says a change happened means it is durable; writes are serialized, reads never wait on
//! storage. An alias (mount accessor, name) belongs to at most one entity and an entity has at
//! most one alias per mount accessor; group membership has no cycles. A token's identity
//! policies are computed from the store as it is at each request, so a change applies to live
//! tokens at once. Tokens never enter the store (only the entity id goes into a token entry).
//! Not here: the HTTP shapes (`api`, `groups`), templating (`template`), OIDC (`oidc`). Also
//! not done: the store is one node's memory over the barrier; when HA standbys serve reads,
//! they will need a change feed to refresh it.

mod api;
mod groups;
mod oidc;
pub(crate) mod template;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use coffer_barrier::{BatchOp, View};
use serde::{Deserialize, Serialize};

use crate::logical::{Error, Result};
use crate::record;

pub(crate) use api::IdentityBackend;
pub(crate) use template::TemplateCtx;

pub(crate) const GROUP_INTERNAL: &str = "internal";
pub(crate) const GROUP_EXTERNAL: &str = "external";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Alias {
    pub(crate) id: String,
    /// The entity (or group, for a group alias) it belongs to.
    pub(crate) canonical_id: String,
    pub(crate) mount_accessor: String,
    pub(crate) name: String,
    /// Set by the auth method at each login (Vault's alias metadata).
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    /// Set by operators through `identity/entity-alias`; `None` for an alias a login made
    /// (Vault shows `null` there, and `{}` for one made through the API without any).
    #[serde(default)]
    pub(crate) custom_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) merged_from_canonical_ids: Vec<String>,
    pub(crate) creation_time: String,
    pub(crate) last_update_time: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Entity {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) policies: Vec<String>,
    #[serde(default)]
    pub(crate) disabled: bool,
    #[serde(default)]
    pub(crate) aliases: Vec<Alias>,
    #[serde(default)]
    pub(crate) merged_entity_ids: Vec<String>,
    pub(crate) creation_time: String,
    pub(crate) last_update_time: String,
}

record!(Entity, "identity entity", 1);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) policies: Vec<String>,
    #[serde(default)]
    pub(crate) member_entity_ids: Vec<String>,
    #[serde(default)]
    pub(crate) member_group_ids: Vec<String>,
    /// External groups only: the group's name in the auth method that reports it.
    #[serde(default)]
    pub(crate) alias: Option<Alias>,
    pub(crate) creation_time: String,
    pub(crate) last_update_time: String,
    #[serde(default)]
    pub(crate) modify_index: u64,
}

record!(Group, "identity group", 1);

/// The in-memory copy of the store and its indexes.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) entities: HashMap<String, Arc<Entity>>,
    entity_names: HashMap<String, String>,
    /// (mount accessor, alias name) → entity id.
    aliases: HashMap<(String, String), String>,
    /// alias id → entity id.
    alias_ids: HashMap<String, String>,
    pub(crate) groups: HashMap<String, Arc<Group>>,
    group_names: HashMap<String, String>,
    /// (mount accessor, group alias name) → group id.
    group_aliases: HashMap<(String, String), String>,
    group_alias_ids: HashMap<String, String>,
    /// entity id → the groups that list it (directly).
    entity_groups: HashMap<String, BTreeSet<String>>,
    /// group id → the groups that list it as a member.
    parents: HashMap<String, BTreeSet<String>>,
}

impl State {
    pub(crate) fn entity(&self, id: &str) -> Option<&Arc<Entity>> {
        self.entities.get(id)
    }

    pub(crate) fn entity_by_name(&self, name: &str) -> Option<&Arc<Entity>> {
        self.entity_names.get(name).and_then(|id| self.entities.get(id))
    }

    pub(crate) fn entity_by_alias(&self, accessor: &str, name: &str) -> Option<&Arc<Entity>> {
        self.aliases
            .get(&(accessor.to_owned(), name.to_owned()))
            .and_then(|id| self.entities.get(id))
    }

    pub(crate) fn entity_by_alias_id(&self, alias_id: &str) -> Option<&Arc<Entity>> {
        self.alias_ids.get(alias_id).and_then(|id| self.entities.get(id))
    }

    pub(crate) fn group(&self, id: &str) -> Option<&Arc<Group>> {
        self.groups.get(id)
    }

    pub(crate) fn group_by_name(&self, name: &str) -> Option<&Arc<Group>> {
        self.group_names.get(name).and_then(|id| self.groups.get(id))
    }

    pub(crate) fn group_by_alias(&self, accessor: &str, name: &str) -> Option<&Arc<Group>> {
        self.group_aliases
            .get(&(accessor.to_owned(), name.to_owned()))
            .and_then(|id| self.groups.get(id))
    }

    pub(crate) fn group_by_alias_id(&self, alias_id: &str) -> Option<&Arc<Group>> {
        self.group_alias_ids.get(alias_id).and_then(|id| self.groups.get(id))
    }

    fn put_entity(&mut self, e: Entity) {
        self.drop_entity(&e.id);
        self.entity_names.insert(e.name.clone(), e.id.clone());
        for a in &e.aliases {
            self.aliases.insert((a.mount_accessor.clone(), a.name.clone()), e.id.clone());
            self.alias_ids.insert(a.id.clone(), e.id.clone());
        }
        self.entities.insert(e.id.clone(), Arc::new(e));
    }

    fn drop_entity(&mut self, id: &str) -> Option<Arc<Entity>> {
        let old = self.entities.remove(id)?;
        self.entity_names.remove(&old.name);
        for a in &old.aliases {
            self.aliases.remove(&(a.mount_accessor.clone(), a.name.clone()));
            self.alias_ids.remove(&a.id);
        }
        Some(old)
    }

    fn put_group(&mut self, g: Group) {
        self.unindex_group(&g.id);
        self.group_names.insert(g.name.clone(), g.id.clone());
        if let Some(a) = &g.alias {
            self.group_aliases.insert((a.mount_accessor.clone(), a.name.clone()), g.id.clone());
            self.group_alias_ids.insert(a.id.clone(), g.id.clone());
        }
        for e in &g.member_entity_ids {
            self.entity_groups.entry(e.clone()).or_default().insert(g.id.clone());
        }
        for m in &g.member_group_ids {
            self.parents.entry(m.clone()).or_default().insert(g.id.clone());
        }
        self.groups.insert(g.id.clone(), Arc::new(g));
    }

    fn unindex_group(&mut self, id: &str) -> Option<Arc<Group>> {
        let old = self.groups.remove(id)?;
        self.group_names.remove(&old.name);
        if let Some(a) = &old.alias {
            self.group_aliases.remove(&(a.mount_accessor.clone(), a.name.clone()));
            self.group_alias_ids.remove(&a.id);
        }
        for e in &old.member_entity_ids {
            if let Some(s) = self.entity_groups.get_mut(e) {
                s.remove(id);
            }
        }
        for m in &old.member_group_ids {
            if let Some(s) = self.parents.get_mut(m) {
                s.remove(id);
            }
        }
        Some(old)
    }

    /// The groups that list the entity themselves, and those reached from them through
    /// `member_group_ids` upwards, each once, in a stable order (ids sorted within each).
    pub(crate) fn groups_of(&self, entity_id: &str) -> (Vec<Arc<Group>>, Vec<Arc<Group>>) {
        let direct: Vec<String> = self
            .entity_groups
            .get(entity_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut seen: BTreeSet<String> = direct.iter().cloned().collect();
        let mut inherited = Vec::new();
        let mut frontier = direct.clone();
        while let Some(g) = frontier.pop() {
            for p in self.parents.get(&g).into_iter().flatten() {
                if seen.insert(p.clone()) {
                    inherited.push(p.clone());
                    frontier.push(p.clone());
                }
            }
        }
        inherited.sort();
        let get =
            |ids: Vec<String>| ids.iter().filter_map(|i| self.groups.get(i).cloned()).collect();
        (get(direct), get(inherited))
    }

    /// The groups `group_id` is a member of (its parents), directly.
    pub(crate) fn parent_group_ids(&self, group_id: &str) -> Vec<String> {
        self.parents.get(group_id).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }

    /// Whether making `members` the member groups of `group_id` would make a cycle: one of them
    /// is the group itself or one of its ancestors.
    fn cycle(&self, group_id: &str, members: &[String]) -> Option<String> {
        let mut ancestors = BTreeSet::from([group_id.to_owned()]);
        let mut frontier = vec![group_id.to_owned()];
        while let Some(g) = frontier.pop() {
            for p in self.parents.get(&g).into_iter().flatten() {
                if ancestors.insert(p.clone()) {
                    frontier.push(p.clone());
                }
            }
        }
        members.iter().find(|m| ancestors.contains(*m)).cloned()
    }
}

/// The identity of the token behind a request, as templates and policies need it.
pub(crate) struct TokenIdentity {
    pub(crate) ctx: TemplateCtx,
    /// The entity's and its groups' policies, sorted, each once.
    pub(crate) policies: Vec<String>,
    /// The store's generation this was read at.
    pub(crate) generation: u64,
}

/// What an auth method reported about the caller at login.
pub(crate) struct AliasLogin<'a> {
    pub(crate) mount_accessor: &'a str,
    pub(crate) name: &'a str,
    pub(crate) metadata: &'a BTreeMap<String, String>,
    /// Group names the method reported (external groups' aliases); `None`: the method reports
    /// none, which leaves every external group on the mount as no group reported does.
    pub(crate) groups: Option<&'a [String]>,
}

pub(crate) struct IdentityStore {
    view: View,
    state: RwLock<State>,
    /// Serializes writes: each reads the state, writes storage, then updates the state.
    write: tokio::sync::Mutex<()>,
    /// Bumped by every change, so what was computed from an older state is known stale.
    generation: std::sync::atomic::AtomicU64,
    pub(crate) oidc: oidc::Oidc,
}

fn poisoned() -> Error {
    Error::Internal("identity store lock poisoned".into())
}

pub(crate) fn now() -> String {
    crate::time::rfc3339_nanos(std::time::SystemTime::now())
}

impl IdentityStore {
    /// Loads every stored entity and group. A record that cannot be read stops the unseal: its
    /// aliases and memberships decide who gets which policies, so none is safely left out.
    pub(crate) async fn load(view: View, api_addr: String) -> Result<Arc<Self>> {
        let mut state = State::default();
        for id in view.list("entity/").await? {
            if let Some(raw) = view.get(&format!("entity/{id}")).await? {
                state.put_entity(record::decode(&raw)?);
            }
        }
        for id in view.list("group/").await? {
            if let Some(raw) = view.get(&format!("group/{id}")).await? {
                state.put_group(record::decode(&raw)?);
            }
        }
        let oidc = oidc::Oidc::load(view.sub_view("oidc/"), api_addr).await?;
        Ok(Arc::new(Self {
            view,
            state: RwLock::new(state),
            write: tokio::sync::Mutex::new(()),
            generation: std::sync::atomic::AtomicU64::new(0),
            oidc,
        }))
    }

    /// A standby replica: the key below this store's view changed on the active node. An
    /// entity or group is read again (or dropped) and the generation moves on, so no ACL
    /// compiled from the old state is found again. Other keys (OIDC) are not used by a replica.
    pub(crate) async fn reload(&self, key: &str) -> Result<()> {
        if let Some(id) = key.strip_prefix("entity/") {
            let e: Option<Entity> = match self.view.get(key).await? {
                Some(raw) => Some(record::decode(&raw)?),
                None => None,
            };
            let mut s = self.state.write().map_err(|_| poisoned())?;
            match e {
                Some(e) => s.put_entity(e),
                None => drop(s.drop_entity(id)),
            }
            self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        } else if let Some(id) = key.strip_prefix("group/") {
            let g: Option<Group> = match self.view.get(key).await? {
                Some(raw) => Some(record::decode(&raw)?),
                None => None,
            };
            let mut s = self.state.write().map_err(|_| poisoned())?;
            match g {
                Some(g) => s.put_group(g),
                None => drop(s.unindex_group(id)),
            }
            self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    }

    /// Whether the entity exists and is disabled (its tokens are refused).
    pub(crate) fn is_disabled(&self, entity_id: &str) -> Result<bool> {
        if entity_id.is_empty() {
            return Ok(false);
        }
        self.read(|s| s.entity(entity_id).is_some_and(|e| e.disabled))
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T> {
        Ok(f(&*self.state.read().map_err(|_| poisoned())?))
    }

    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write.lock().await
    }

    /// Stores entities and groups (and deletes others) in one batch, then updates the state.
    /// Callers hold [`Self::lock`].
    pub(crate) async fn commit(
        &self,
        entities: Vec<Entity>,
        groups: Vec<Group>,
        deleted_entities: Vec<String>,
        deleted_groups: Vec<String>,
    ) -> Result<()> {
        let mut raws = Vec::new();
        for e in &entities {
            raws.push((format!("entity/{}", e.id), record::encode(e)?));
        }
        for g in &groups {
            raws.push((format!("group/{}", g.id), record::encode(g)?));
        }
        let mut ops: Vec<BatchOp<'_>> =
            raws.iter().map(|(k, v)| BatchOp::Put(k.clone(), v.as_slice())).collect();
        ops.extend(deleted_entities.iter().map(|id| BatchOp::Delete(format!("entity/{id}"))));
        ops.extend(deleted_groups.iter().map(|id| BatchOp::Delete(format!("group/{id}"))));
        if ops.is_empty() {
            return Ok(());
        }
        self.view.batch(ops).await?;
        let mut s = self.state.write().map_err(|_| poisoned())?;
        for id in &deleted_entities {
            s.drop_entity(id);
        }
        for id in &deleted_groups {
            s.unindex_group(id);
        }
        for e in entities {
            s.put_entity(e);
        }
        for g in groups {
            s.put_group(g);
        }
        // Under the state's write lock: a reader that sees the new state sees the new number.
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Refuses `member_group_ids` that would make `group_id` its own ancestor (Vault's message).
    pub(crate) fn check_cycle(&self, group_id: &str, members: &[String]) -> Result<()> {
        match self.read(|s| s.cycle(group_id, members))? {
            Some(m) => Err(Error::invalid(format!(
                "cyclic relationship detected for member group ID {m:?}"
            ))),
            None => Ok(()),
        }
    }

    /// The identity of a token's entity; `None` when the token has none, or its entity is gone
    /// (the token then keeps only its own policies, as in Vault).
    pub(crate) fn token_identity(&self, entity_id: &str) -> Result<Option<TokenIdentity>> {
        if entity_id.is_empty() {
            return Ok(None);
        }
        self.read(|s| {
            let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
            let entity = s.entity(entity_id)?.clone();
            let (direct, inherited) = s.groups_of(entity_id);
            let mut groups = direct;
            groups.extend(inherited);
            let mut policies: Vec<String> = entity.policies.clone();
            for g in &groups {
                policies.extend(g.policies.iter().cloned());
            }
            policies.sort();
            policies.dedup();
            Some(TokenIdentity {
                generation,
                ctx: TemplateCtx { entity: Some(entity), groups, token_meta: BTreeMap::new() },
                policies,
            })
        })
    }

    /// The entity a login belongs to, found by its alias or made for it (with the alias), its
    /// alias metadata brought up to date, and its external-group memberships on this mount set
    /// to the groups the method reported. A disabled entity's login is refused.
    pub(crate) async fn login(&self, l: &AliasLogin<'_>) -> Result<String> {
        let _g = self.lock().await;
        let ts = now();
        let found = self.read(|s| s.entity_by_alias(l.mount_accessor, l.name).cloned())?;
        let mut changed = Vec::new();
        let entity = match found {
            Some(e) => {
                if e.disabled {
                    return Err(Error::PermissionDenied);
                }
                let mut e = (*e).clone();
                if let Some(a) = e
                    .aliases
                    .iter_mut()
                    .find(|a| a.mount_accessor == l.mount_accessor && a.name == l.name)
                    && a.metadata != *l.metadata
                {
                    a.metadata = l.metadata.clone();
                    a.last_update_time = ts.clone();
                    e.last_update_time = ts.clone();
                    changed.push(e.clone());
                }
                e
            }
            None => {
                let id = crate::random::uuid_v4();
                let name = self.fresh_entity_name()?;
                let e = Entity {
                    aliases: vec![Alias {
                        id: crate::random::uuid_v4(),
                        canonical_id: id.clone(),
                        mount_accessor: l.mount_accessor.to_owned(),
                        name: l.name.to_owned(),
                        metadata: l.metadata.clone(),
                        creation_time: ts.clone(),
                        last_update_time: ts.clone(),
                        ..Alias::default()
                    }],
                    id,
                    name,
                    creation_time: ts.clone(),
                    last_update_time: ts.clone(),
                    ..Entity::default()
                };
                changed.push(e.clone());
                e
            }
        };
        // As Vault: every login refreshes the external memberships on its mount, so a login
        // that reports no groups leaves them all.
        let groups =
            self.external_memberships(&entity.id, l.mount_accessor, l.groups.unwrap_or(&[]))?;
        self.commit(changed, groups, Vec::new(), Vec::new()).await?;
        Ok(entity.id)
    }

    /// The external groups on `accessor` whose membership of `entity_id` must change so that it
    /// is in exactly those whose alias is among `names`.
    fn external_memberships(
        &self,
        entity_id: &str,
        accessor: &str,
        names: &[String],
    ) -> Result<Vec<Group>> {
        self.read(|s| {
            let mut out = Vec::new();
            for g in s.groups.values() {
                let Some(a) = g.alias.as_ref().filter(|a| a.mount_accessor == accessor) else {
                    continue;
                };
                let want = names.contains(&a.name);
                let has = g.member_entity_ids.iter().any(|e| e == entity_id);
                if want != has {
                    let mut g = (**g).clone();
                    if want {
                        g.member_entity_ids.push(entity_id.to_owned());
                    } else {
                        g.member_entity_ids.retain(|e| e != entity_id);
                    }
                    g.modify_index += 1;
                    out.push(g);
                }
            }
            out
        })
    }

    pub(crate) fn fresh_entity_name(&self) -> Result<String> {
        self.read(|s| {
            loop {
                let n = format!("entity_{}", &crate::random::uuid_v4()[..8]);
                if s.entity_by_name(&n).is_none() {
                    break n;
                }
            }
        })
    }

    pub(crate) fn fresh_group_name(&self) -> Result<String> {
        self.read(|s| {
            loop {
                let n = format!("group_{}", &crate::random::uuid_v4()[..8]);
                if s.group_by_name(&n).is_none() {
                    break n;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
