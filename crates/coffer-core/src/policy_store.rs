//! ACL policies by name, stored in the barrier, parsed once and cached; compiled ACLs are cached
//! by policy set and dropped whenever any policy changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use coffer_barrier::View;
use serde::{Deserialize, Serialize};

use crate::logical::{Error, Result};
use crate::policy::{Acl, DEFAULT_POLICY as DEFAULT_POLICY_HCL, Policy};
use crate::token::{DEFAULT_POLICY, ROOT_POLICY};
use crate::wrapping::WRAPPING_POLICY;

#[derive(Serialize, Deserialize)]
struct StoredPolicy {
    version: u32,
    name: String,
    raw: String,
}

pub(crate) struct PolicyStore {
    view: View,
    policies: RwLock<HashMap<String, Arc<Policy>>>,
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
}

/// Vault lowercases policy names; we also refuse characters that would make a bad storage key.
pub(crate) fn normalize_name(name: &str) -> Result<String> {
    let n = name.trim().to_lowercase();
    if n.is_empty() {
        return Err(Error::invalid("policy name cannot be empty"));
    }
    if !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        return Err(Error::invalid(format!(
            "invalid policy name {name:?}: use letters, digits, '-', '_', '.' or '@'"
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
        let store =
            Self { view, policies: RwLock::new(HashMap::new()), acls: RwLock::new(HashMap::new()) };
        for name in store.view.list("").await? {
            if let Some(p) = store.read_stored(&name).await? {
                store.policies.write().map_err(|_| poisoned())?.insert(name, Arc::new(p));
            }
        }
        if store.get(DEFAULT_POLICY)?.is_none() {
            store.set(DEFAULT_POLICY, DEFAULT_POLICY_HCL, u64::MAX).await?;
        }
        Ok(store)
    }

    async fn read_stored(&self, name: &str) -> Result<Option<Policy>> {
        let Some(raw) = self.view.get(name).await? else { return Ok(None) };
        let stored: StoredPolicy = serde_json::from_slice(&raw)
            .map_err(|e| Error::Internal(format!("policy decode: {e}")))?;
        Policy::parse(&stored.name, &stored.raw)
            .map(Some)
            .map_err(|e| Error::Internal(format!("stored policy {name:?} no longer parses: {e}")))
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<Arc<Policy>>> {
        Ok(self.policies.read().map_err(|_| poisoned())?.get(name).cloned())
    }

    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> =
            self.policies.read().map_err(|_| poisoned())?.keys().cloned().collect();
        names.push(ROOT_POLICY.to_owned());
        names.sort();
        Ok(names)
    }

    /// Writes a policy, held to the caps of [`Policy::parse_new`]; `max_wrapping_ttl` is the
    /// system max_lease_ttl in seconds.
    pub(crate) async fn set(&self, name: &str, raw: &str, max_wrapping_ttl: u64) -> Result<()> {
        let name = normalize_name(name)?;
        if name == ROOT_POLICY || name == WRAPPING_POLICY {
            return Err(Error::invalid(format!("cannot update {name:?} policy: it is built in")));
        }
        let policy = Policy::parse_new(&name, raw, max_wrapping_ttl)
            .map_err(|e| Error::invalid(format!("failed to parse policy: {e}")))?;
        let stored = serde_json::to_vec(&StoredPolicy {
            version: 1,
            name: name.clone(),
            raw: raw.to_owned(),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        self.view.put(&name, &stored).await?;
        self.policies.write().map_err(|_| poisoned())?.insert(name, Arc::new(policy));
        self.acls.write().map_err(|_| poisoned())?.clear();
        Ok(())
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<()> {
        let name = normalize_name(name)?;
        if name == ROOT_POLICY || name == DEFAULT_POLICY || name == WRAPPING_POLICY {
            return Err(Error::invalid(format!("cannot delete {name:?} policy")));
        }
        self.view.delete(&name).await?;
        self.policies.write().map_err(|_| poisoned())?.remove(&name);
        self.acls.write().map_err(|_| poisoned())?.clear();
        Ok(())
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
            let policies = self.policies.read().map_err(|_| poisoned())?;
            let found: Vec<&Policy> =
                key.iter().filter_map(|n| policies.get(n).map(|p| p.as_ref())).collect();
            Arc::new(Acl::new(found))
        };
        self.acls.write().map_err(|_| poisoned())?.insert(key, acl.clone());
        Ok(acl)
    }
}
