//! In-memory backend for `-dev` and tests. Durable only for the life of the process.

use std::collections::BTreeMap;
use std::sync::RwLock;

use async_trait::async_trait;

use crate::key::validate_prefix;
use crate::{Backend, Error, Op, Result, immediate_children, validate_key};

#[derive(Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn poisoned() -> Error {
        Error::Backend("memory backend lock poisoned".into())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        validate_key(key)?;
        Ok(self.map.read().map_err(|_| Self::poisoned())?.get(key).cloned())
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<()> {
        validate_key(key)?;
        self.map.write().map_err(|_| Self::poisoned())?.insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.map.write().map_err(|_| Self::poisoned())?.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        let keys = map
            .range(prefix.to_owned()..)
            .map(|(k, _)| k.as_str())
            .take_while(|k| k.starts_with(prefix));
        Ok(immediate_children(prefix, keys))
    }

    async fn scan(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        validate_prefix(prefix)?;
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        let from = format!("{prefix}{}", after.unwrap_or(""));
        Ok(map
            .range(from.clone()..)
            .map(|(k, _)| k.as_str())
            .take_while(|k| k.starts_with(prefix))
            .filter(|k| after.is_none() || *k != from)
            .take(limit)
            .map(|k| k[prefix.len()..].to_owned())
            .collect())
    }

    async fn batch(&self, ops: Vec<Op>) -> Result<()> {
        for op in &ops {
            validate_key(op.key())?;
        }
        let mut map = self.map.write().map_err(|_| Self::poisoned())?;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k, v);
                }
                Op::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "inmem"
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::conformance::exercise(&super::MemoryBackend::new()).await;
    }
}
