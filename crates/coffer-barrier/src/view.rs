//! A [`View`] is the barrier seen through one prefix: the only storage a mount ever gets.
//! Keys given to a view are relative; a view cannot name a key outside its prefix, because
//! storage keys with `..` or empty segments are refused below.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::{Barrier, BatchOp, Result};

#[derive(Clone)]
pub struct View {
    barrier: Arc<Barrier>,
    prefix: String,
}

impl View {
    /// `prefix` must end in `/`.
    pub fn new(barrier: Arc<Barrier>, prefix: impl Into<String>) -> Self {
        Self { barrier, prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn sub_view(&self, sub: &str) -> View {
        View { barrier: Arc::clone(&self.barrier), prefix: format!("{}{}", self.prefix, sub) }
    }

    fn full(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    pub async fn get(&self, key: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.barrier.get(&self.full(key)).await
    }

    /// See [`Barrier::contains`].
    pub async fn contains(&self, key: &str) -> Result<bool> {
        self.barrier.contains(&self.full(key)).await
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.barrier.put(&self.full(key), value).await
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.barrier.delete(&self.full(key)).await
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.barrier.list(&self.full(prefix)).await
    }

    pub async fn batch(&self, ops: Vec<BatchOp<'_>>) -> Result<()> {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Put(k, v) => BatchOp::Put(self.full(&k), v),
                BatchOp::Delete(k) => BatchOp::Delete(self.full(&k)),
            })
            .collect();
        self.barrier.batch(ops).await
    }

    /// Up to `limit` keys below the folder `prefix` (at any depth, relative to it, in order)
    /// after the relative key `after`: a page, for walking a folder too large to hold.
    pub async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        self.barrier.scan(&self.full(prefix), after, limit).await
    }

    /// Every key below the folder `prefix` (which ends in `/`), at any depth, relative to it.
    pub async fn list_recursive(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            for child in self.list(&format!("{prefix}{dir}")).await? {
                let rel = format!("{dir}{child}");
                if child.ends_with('/') {
                    stack.push(rel);
                } else {
                    out.push(rel);
                }
            }
        }
        Ok(out)
    }

    /// One atomic batch over several views of the same barrier, for records that live in two
    /// places (a token and its entry in the expiry index) and must change together.
    pub async fn batch_across(parts: Vec<(&View, Vec<BatchOp<'_>>)>) -> Result<()> {
        let Some((first, _)) = parts.first() else { return Ok(()) };
        let barrier = Arc::clone(&first.barrier);
        let mut all = Vec::new();
        for (view, ops) in parts {
            if !Arc::ptr_eq(&view.barrier, &barrier) {
                return Err(crate::Error::Internal(
                    "batch across views of different barriers".into(),
                ));
            }
            all.extend(ops.into_iter().map(|op| match op {
                BatchOp::Put(k, v) => BatchOp::Put(view.full(&k), v),
                BatchOp::Delete(k) => BatchOp::Delete(view.full(&k)),
            }));
        }
        barrier.batch(all).await
    }

    /// Removes everything in this view.
    pub async fn clear(&self) -> Result<()> {
        self.barrier.delete_prefix(&self.prefix).await
    }
}
