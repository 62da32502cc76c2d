//! ACL policies by name, stored in the barrier, parsed once and cached; compiled ACLs are cached
//! by policy set and dropped whenever any policy changes.
//!
//! A stored policy that cannot be read (altered in storage, or no longer parsing) does not stop
//! the unseal: it is logged by path and kept aside as damaged. Reading it is a 500 naming it, a
//! token holding it is refused (403: its rules, denials included, are unknown, so no access is
//! safe to grant), and writing or deleting it repairs it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use coffer_barrier::View;
use serde::{Deserialize, Serialize};

use crate::fast_map::FastMap;
use crate::logical::{Error, Result};
use crate::policy::{Acl, DEFAULT_POLICY as DEFAULT_POLICY_HCL, Policy};
use crate::record;
use crate::token::{DEFAULT_POLICY, ROOT_POLICY};
use crate::wrapping::WRAPPING_POLICY;

#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    name: String,
    raw: String,
}

crate::record!(StoredPolicy, "ACL policy", 1);

pub(crate) struct PolicyStore {
    view: View,
    policies: RwLock<HashMap<String, Arc<Policy>>>,
    /// Stored policies that could not be read at unseal, until written or deleted.
    damaged: RwLock<HashSet<String>>,
    /// By policy names, which only those who may write policies or create tokens choose (a
    /// token role's `allowed_policies_glob` lets its users name policies that do not exist, so
    /// the cache starts over when it grows past [`ACL_CACHE`] rather than grow with them).
    acls: RwLock<FastMap<Vec<String>, Arc<Acl>>>,
    /// Policies with identity templates in their paths: their ACL depends on the token's entity,
    /// so it is compiled per request instead of cached by policy set.
    templated: RwLock<HashSet<String>>,
    /// Compiled ACLs of sets with templated policies, by set, entity and identity-store
    /// generation (a change to any entity or group makes a new generation, so nothing stale is
    /// found); dropped whenever any policy changes, and when it grows past [`TEMPLATED_CACHE`].
    templated_acls: RwLock<HashMap<TemplatedKey, Arc<Acl>>>,
    /// The same for tokens without an entity (their templated paths are all left out), looked
    /// up by set without allocating: most requests come from such tokens, with `default`.
    unbound_acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
}

/// A policy set, an entity id and the identity store's generation.
type TemplatedKey = (Vec<String>, String, u64);

/// Entries the templated-ACL cache holds before it starts over.
const TEMPLATED_CACHE: usize = 4096;

/// Entries the ACL cache by policy set holds before it starts over.
const ACL_CACHE: usize = 4096;

fn has_templates(p: &Policy) -> bool {
    p.rules.iter().any(|r| crate::identity::template::is_templated(&r.pattern))
}

/// Vault lowercases policy names and accepts any other character; we refuse only those that
/// would make a bad storage key (`/` would nest it) or a log line that lies (control characters).
pub(crate) fn normalize_name(name: &str) -> Result<String> {
    let n = name.trim().to_lowercase();
    if n.is_empty() {
        return Err(Error::invalid("policy name cannot be empty"));
    }
    if n.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Error::invalid(format!(
            "invalid policy name {name:?}: it may not contain '/' or control characters"
        )));
    }
    Ok(n)
}

fn poisoned() -> Error {
    Error::Internal("policy cache lock poisoned".into())
}

impl PolicyStore {
    /// Loads every stored policy and writes the built-in `default` policy when it is missing.
    pub(crate) async fn load(view: View) -> Result<Self> {
        let store = Self {
            view,
            policies: RwLock::new(HashMap::new()),
            damaged: RwLock::new(HashSet::new()),
            acls: RwLock::new(FastMap::default()),
            templated: RwLock::new(HashSet::new()),
            templated_acls: RwLock::new(HashMap::new()),
            unbound_acls: RwLock::new(HashMap::new()),
        };
        for name in store.view.list("").await? {
            match store.read_stored(&name).await {
                Ok(Some(p)) => {
                    if has_templates(&p) {
                        store.templated.write().map_err(|_| poisoned())?.insert(name.clone());
                    }
                    store.policies.write().map_err(|_| poisoned())?.insert(name, Arc::new(p));
                }
                Ok(None) => {}
                Err(e @ (Error::Damaged(_) | Error::Internal(_))) => {
                    tracing::error!(
                        path = %format!("sys/policy/{name}"),
                        error = %e,
                        "a stored policy cannot be read; tokens holding it are refused until \
                         it is written again or deleted"
                    );
                    store.damaged.write().map_err(|_| poisoned())?.insert(name);
                }
                Err(e) => return Err(e),
            }
        }
        if store.get(DEFAULT_POLICY)?.is_none() && !store.is_damaged(DEFAULT_POLICY)? {
            store.set(DEFAULT_POLICY, DEFAULT_POLICY_HCL, u64::MAX).await?;
        }
        Ok(store)
    }

    /// A standby replica: the stored policy `name` changed on the active node; it is read again
    /// (or forgotten), and every compiled ACL is dropped.
    pub(crate) async fn reload(&self, name: &str) -> Result<()> {
        let read = self.read_stored(name).await;
        {
            let mut policies = self.policies.write().map_err(|_| poisoned())?;
            let mut templated = self.templated.write().map_err(|_| poisoned())?;
            let mut damaged = self.damaged.write().map_err(|_| poisoned())?;
            policies.remove(name);
            templated.remove(name);
            damaged.remove(name);
            match read {
                Ok(Some(p)) => {
                    if has_templates(&p) {
                        templated.insert(name.to_owned());
                    }
                    policies.insert(name.to_owned(), Arc::new(p));
                }
                Ok(None) => {}
                Err(Error::Damaged(_) | Error::Internal(_)) => {
                    damaged.insert(name.to_owned());
                }
                Err(e) => return Err(e),
            }
        }
        self.acls.write().map_err(|_| poisoned())?.clear();
        self.templated_acls.write().map_err(|_| poisoned())?.clear();
        self.unbound_acls.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }

    fn is_damaged(&self, name: &str) -> Result<bool> {
        Ok(self.damaged.read().map_err(|_| poisoned())?.contains(name))
    }

    async fn read_stored(&self, name: &str) -> Result<Option<Policy>> {
        let Some(raw) = self.view.get(name).await? else { return Ok(None) };
        let stored: StoredPolicy = record::decode(&raw)?;
        Policy::parse(&stored.name, &stored.raw)
            .map(Some)
            .map_err(|e| Error::Internal(format!("stored policy {name:?} no longer parses: {e}")))
    }

    /// The policy, `None` when there is none; a damaged one is an error naming it.
    pub(crate) fn read(&self, name: &str) -> Result<Option<Arc<Policy>>> {
        if self.is_damaged(name)? {
            return Err(Error::Damaged(format!("sys/policy/{name}")));
        }
        self.get(name)
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<Arc<Policy>>> {
        Ok(self.policies.read().map_err(|_| poisoned())?.get(name).cloned())
    }

    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> =
            self.policies.read().map_err(|_| poisoned())?.keys().cloned().collect();
        names.extend(self.damaged.read().map_err(|_| poisoned())?.iter().cloned());
        names.sort();
        // Vault lists the stored names in order, then `root`, which is not stored.
        names.push(ROOT_POLICY.to_owned());
        Ok(names)
    }

    /// Writes a policy, held to the caps of [`Policy::parse_new`]; `max_wrapping_ttl` is the
    /// system max_lease_ttl in seconds.
    pub(crate) async fn set(&self, name: &str, raw: &str, max_wrapping_ttl: u64) -> Result<()> {
        let name = normalize_name(name)?;
        if name == ROOT_POLICY || name == WRAPPING_POLICY {
            return Err(Error::invalid(format!("cannot update {name:?} policy")));
        }
        let policy = Policy::parse_new(&name, raw, max_wrapping_ttl)
            .map_err(|e| Error::invalid(format!("failed to parse policy: {e}")))?;
        for r in &policy.rules {
            crate::identity::template::check_syntax(&r.pattern).map_err(|e| {
                Error::invalid(format!("failed to parse policy: path {:?}: {e}", r.pattern))
            })?;
        }
        let templated = has_templates(&policy);
        let stored = record::encode(&StoredPolicy { name: name.clone(), raw: raw.to_owned() })?;
        self.view.put(&name, &stored).await?;
        self.damaged.write().map_err(|_| poisoned())?.remove(&name);
        {
            let mut t = self.templated.write().map_err(|_| poisoned())?;
            if templated {
                t.insert(name.clone());
            } else {
                t.remove(&name);
            }
        }
        self.policies.write().map_err(|_| poisoned())?.insert(name, Arc::new(policy));
        self.acls.write().map_err(|_| poisoned())?.clear();
        self.templated_acls.write().map_err(|_| poisoned())?.clear();
        self.unbound_acls.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        let name = normalize_name(name)?;
        if name == DEFAULT_POLICY {
            return Err(Error::invalid("cannot delete default policy"));
        }
        if name == ROOT_POLICY || name == WRAPPING_POLICY {
            return Err(Error::invalid(format!("cannot delete {name:?} policy")));
        }
        self.view.delete(&name).await?;
        self.damaged.write().map_err(|_| poisoned())?.remove(&name);
        self.policies.write().map_err(|_| poisoned())?.remove(&name);
        self.templated.write().map_err(|_| poisoned())?.remove(&name);
        self.acls.write().map_err(|_| poisoned())?.clear();
        self.templated_acls.write().map_err(|_| poisoned())?.clear();
        self.unbound_acls.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }

    /// [`Self::acl`], with the paths of templated policies rendered for the token's identity:
    /// a path whose template cannot be resolved for it (no entity, a missing value, one that
    /// would widen the path) is left out, as in Vault. Sets without a templated policy come from
    /// the by-set cache; the others from a cache keyed by entity and identity generation.
    /// `token_meta` is the token's own metadata, for Coffer's `{{token.metadata.<key>}}`
    /// (what the login proved, e.g. the image digest): sets using it are rendered per token
    /// and not cached, as sets using `time.` are not.
    pub(crate) fn acl_templated(
        &self,
        names: &[String],
        ident: Option<&crate::identity::TemplateCtx>,
        token_meta: &std::collections::BTreeMap<String, String>,
        generation: u64,
    ) -> Result<Arc<Acl>> {
        let any = {
            let t = self.templated.read().map_err(|_| poisoned())?;
            !t.is_empty() && names.iter().any(|n| t.contains(n))
        };
        if !any || names.iter().any(|n| n == ROOT_POLICY) {
            return self.acl(names);
        }
        if let Some(bad) = names.iter().find(|n| self.is_damaged(n).unwrap_or(true)) {
            tracing::warn!(policy = %bad, "refused a token holding a damaged policy");
            return Err(Error::PermissionDenied);
        }
        let none = crate::identity::TemplateCtx::default();
        let ctx = ident.unwrap_or(&none);
        // Only on a cache miss: a clone of the token's metadata for its directives.
        let mut with_token = None;
        let unbound = ctx.entity.is_none();
        if unbound && let Some(acl) = self.unbound_acls.read().map_err(|_| poisoned())?.get(names) {
            return Ok(acl.clone());
        }
        let entity = ctx.entity.as_ref().map(|e| e.id.clone()).unwrap_or_default();
        let key = (names.to_vec(), entity, generation);
        if !unbound && let Some(acl) = self.templated_acls.read().map_err(|_| poisoned())?.get(&key)
        {
            return Ok(acl.clone());
        }
        // `time.*` directives change from one second to the next: such sets are not cached.
        let mut cacheable = true;
        let policies = self.policies.read().map_err(|_| poisoned())?;
        let mut rendered: Vec<Policy> = Vec::new();
        for n in names {
            let Some(p) = policies.get(n) else { continue };
            if !has_templates(p) {
                rendered.push((**p).clone());
                continue;
            }
            let mut p = (**p).clone();
            p.rules.retain_mut(|r| {
                if !crate::identity::template::is_templated(&r.pattern) {
                    return true;
                }
                if r.pattern.contains("time.") || r.pattern.contains("token.") {
                    cacheable = false;
                }
                let ctx: &crate::identity::TemplateCtx = with_token.get_or_insert_with(|| {
                    let mut c = ctx.clone();
                    c.token_meta = token_meta.clone();
                    c
                });
                match crate::identity::template::render(
                    &r.pattern,
                    ctx,
                    crate::identity::template::Mode::Acl,
                ) {
                    Ok(path) => {
                        r.pattern = path;
                        true
                    }
                    Err(_) => false,
                }
            });
            rendered.push(p);
        }
        let acl = Arc::new(Acl::new(rendered.iter()));
        // Cached before the policies' read lock goes, as in [`Self::acl`].
        if cacheable && unbound {
            let mut cache = self.unbound_acls.write().map_err(|_| poisoned())?;
            if cache.len() >= TEMPLATED_CACHE {
                cache.clear();
            }
            cache.insert(key.0, acl.clone());
        } else if cacheable {
            let mut cache = self.templated_acls.write().map_err(|_| poisoned())?;
            if cache.len() >= TEMPLATED_CACHE {
                cache.clear();
            }
            cache.insert(key, acl.clone());
        }
        drop(policies);
        Ok(acl)
    }

    /// The compiled ACL for a token's policies; unknown names grant nothing, as in Vault.
    pub(crate) fn acl(&self, names: &[String]) -> Result<Arc<Acl>> {
        // Tokens keep their policies sorted and unique: look those up without allocating.
        if names.windows(2).all(|w| w[0] < w[1])
            && let Some(acl) = self.acls.read().map_err(|_| poisoned())?.get(names)
        {
            return Ok(acl.clone());
        }
        let mut key: Vec<String> = names.to_vec();
        key.sort();
        key.dedup();
        // Not cached: the set clears when the policy is repaired, and this is the rare case.
        if let Some(bad) = key.iter().find(|n| self.is_damaged(n).unwrap_or(true)) {
            tracing::warn!(policy = %bad, "refused a token holding a damaged policy");
            return Err(Error::PermissionDenied);
        }
        if let Some(acl) = self.acls.read().map_err(|_| poisoned())?.get(&key) {
            return Ok(acl.clone());
        }
        let acl = if key.iter().any(|n| n == ROOT_POLICY) {
            Arc::new(Acl::root())
        } else if key.len() == 1 && key[0] == WRAPPING_POLICY {
            let p = Policy::parse(WRAPPING_POLICY, crate::wrapping::WRAPPING_POLICY_HCL)
                .map_err(|e| Error::Internal(format!("built-in wrapping policy: {e}")))?;
            Arc::new(Acl::new(vec![&p]))
        } else {
            // Cached while the policies it was compiled from are still read-locked: a change
            // (which clears the cache after it) cannot slip in between and leave it stale.
            let policies = self.policies.read().map_err(|_| poisoned())?;
            let found: Vec<&Policy> =
                key.iter().filter_map(|n| policies.get(n).map(|p| p.as_ref())).collect();
            let acl = Arc::new(Acl::new(found));
            self.cache_acl(key, acl.clone())?;
            return Ok(acl);
        };
        self.cache_acl(key, acl.clone())?;
        Ok(acl)
    }

    fn cache_acl(&self, key: Vec<String>, acl: Arc<Acl>) -> Result<()> {
        let mut cache = self.acls.write().map_err(|_| poisoned())?;
        if cache.len() >= ACL_CACHE {
            cache.clear();
        }
        cache.insert(key, acl);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Capabilities;

    async fn store() -> PolicyStore {
        let backend = Arc::new(coffer_storage::MemoryBackend::new());
        let barrier = Arc::new(coffer_barrier::Barrier::new(backend));
        let shares = barrier
            .initialize(&coffer_barrier::SealConfig::shamir(1, 1).expect("seal config"))
            .await
            .expect("initialize");
        barrier.unseal_with_shares(&shares).await.expect("unseal");
        PolicyStore::load(View::new(barrier, "sys/policy/")).await.expect("load")
    }

    /// A token role's `allowed_policies_glob` lets its users name policies that do not exist:
    /// each new set of names compiles an ACL (granting nothing), and the cache of them stays
    /// bounded however many sets are asked for.
    #[tokio::test]
    async fn the_acl_cache_by_policy_set_stays_bounded() {
        let s = store().await;
        for i in 0..ACL_CACHE + 10 {
            let acl = s.acl(&[format!("made-up-{i:05}")]).expect("acl");
            assert!(
                !acl.allows("secret/data/x", Capabilities::READ),
                "an unknown name grants nothing"
            );
        }
        let held = s.acls.read().expect("lock").len();
        assert!(held <= ACL_CACHE, "{held} ACLs cached");
        // Still a cache: the same set again is the same compiled ACL.
        let a = s.acl(&["made-up-x".to_owned()]).expect("acl");
        let b = s.acl(&["made-up-x".to_owned()]).expect("acl");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
