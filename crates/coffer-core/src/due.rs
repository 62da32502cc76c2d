//! The expiry index: what falls due when, in storage and (for the near future only) in memory.
//!
//! Storage holds one small entry per pending expiry at `due/<bucket>/<name>`, where a bucket is
//! one minute of unix time, zero-padded so buckets sort in time order. Listing `due/` yields
//! only the buckets (the storage backends skip over a folder's contents), so at unseal the
//! manager reads the buckets that are overdue or due within [`HORIZON_BUCKETS`] and nothing
//! else: start-up work grows with the leases due soon, not with the leases alive.
//!
//! Guarantees: an index entry is written in the same batch as the record it points at, so a
//! record with an expiry always has one; an entry may outlive its record (a renewal or
//! revocation that raced), and the manager treats such a dangling entry as nothing to do.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::hex::hex;
use crate::record;

/// Seconds per bucket. Unit tests use short buckets, so that crossing the horizon happens
/// within a test's patience.
pub(crate) const BUCKET_SECS: u64 = if cfg!(test) { 2 } else { 60 };
/// Buckets ahead of the current one that are kept in memory.
pub(crate) const HORIZON_BUCKETS: u64 = 2;

/// What falls due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Due {
    /// A secret's lease, by lease id.
    Lease(String),
    /// A token, by its id (the salted hash the token store keys it by).
    Token(String),
}

#[derive(Serialize, Deserialize)]
struct Stored {
    /// Unix seconds at which it falls due.
    at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

crate::record!(Stored, "expiry index entry", 1);

pub(crate) fn bucket_of(unix: u64) -> u64 {
    unix / BUCKET_SECS
}

pub(crate) fn bucket_dir(bucket: u64) -> String {
    format!("due/{bucket:012}/")
}

/// A short, storage-safe name for a lease id (lease ids contain `/`).
pub(crate) fn lease_name(lease_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, lease_id.as_bytes());
    hex(&d.as_ref()[..16])
}

impl Due {
    fn name(&self) -> String {
        match self {
            Due::Lease(id) => format!("l.{}", lease_name(id)),
            Due::Token(id) => format!("t.{id}"),
        }
    }

    /// The key, relative to the expiration manager's view, of this entry due at `at`.
    pub(crate) fn key(&self, at: u64) -> String {
        format!("{}{}", bucket_dir(bucket_of(at)), self.name())
    }

    /// The index entry's value: what is due, and when.
    pub(crate) fn encode(&self, at: u64) -> Vec<u8> {
        let s = match self {
            Due::Lease(id) => Stored { at, lease_id: Some(id.clone()), token: None },
            Due::Token(id) => Stored { at, lease_id: None, token: Some(id.clone()) },
        };
        // A struct of strings and integers always serializes.
        record::encode(&s).map(|raw| raw.to_vec()).unwrap_or_default()
    }

    pub(crate) fn decode(raw: &[u8]) -> Option<(u64, Due)> {
        let s: Stored = record::decode(raw).ok()?;
        match (s.lease_id, s.token) {
            (Some(l), None) => Some((s.at, Due::Lease(l))),
            (None, Some(t)) => Some((s.at, Due::Token(t))),
            _ => None,
        }
    }
}

/// Parses a bucket folder name (`000029123456/`) back into its number.
pub(crate) fn parse_bucket(child: &str) -> Option<u64> {
    child.strip_suffix('/')?.parse().ok()
}

/// The in-memory part: everything due up to the end of bucket `loaded_through`.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) set: BTreeSet<(u64, Due)>,
    /// Every bucket up to and including this one has been read from storage; an expiry in it
    /// must also be put in `set`, or it would be missed.
    pub(crate) loaded_through: u64,
}

impl Queue {
    /// Adds `due` at `at` when its bucket is already loaded; later ones wait in storage.
    pub(crate) fn offer(&mut self, at: u64, due: Due) {
        if bucket_of(at) <= self.loaded_through {
            self.set.insert((at, due));
        }
    }

    /// The lowest bucket that may still hold an unprocessed entry: everything below it is done.
    /// New entries are never written below the current bucket.
    pub(crate) fn low_water(&self, now: u64) -> u64 {
        let first = self.set.first().map(|(at, _)| bucket_of(*at));
        let mut low = bucket_of(now).min(self.loaded_through + 1);
        if let Some(f) = first {
            low = low.min(f);
        }
        low
    }

    /// Takes everything due at or before `now`.
    pub(crate) fn take_due(&mut self, now: u64, limit: usize) -> Vec<(u64, Due)> {
        let mut out = Vec::new();
        while out.len() < limit {
            match self.set.first() {
                Some((at, _)) if *at <= now => {
                    if let Some(x) = self.set.pop_first() {
                        out.push(x);
                    }
                }
                _ => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_folders_sort_in_time_order() {
        let a = bucket_dir(bucket_of(999));
        let b = bucket_dir(bucket_of(100_000_000));
        assert!(a < b, "{a} < {b}");
        assert_eq!(parse_bucket(&b["due/".len()..]), Some(bucket_of(100_000_000)));
    }

    #[test]
    fn entries_round_trip_and_keys_are_distinct_per_kind() {
        for d in [Due::Lease("database/creds/ro/abc".into()), Due::Token("ab12".into())] {
            assert_eq!(Due::decode(&d.encode(120)), Some((120, d.clone())));
            assert!(d.key(2 * BUCKET_SECS).starts_with("due/000000000002/"));
        }
        assert!(Due::decode(b"{\"version\":1}").is_none());
        assert_ne!(Due::Lease("x".into()).key(0), Due::Token("x".into()).key(0));
    }

    #[test]
    fn only_loaded_buckets_are_kept_in_memory_and_taken_in_order() {
        let b = BUCKET_SECS;
        let mut q = Queue { loaded_through: bucket_of(4 * b), ..Queue::default() };
        q.offer(3 * b, Due::Token("b".into()));
        q.offer(2 * b, Due::Token("a".into()));
        q.offer(100 * b, Due::Token("later".into()));
        assert_eq!(q.set.len(), 2);
        let taken = q.take_due(2 * b + 1, 10);
        assert_eq!(taken, vec![(2 * b, Due::Token("a".into()))]);
        assert_eq!(q.take_due(50 * b, 10).len(), 1);
        assert!(q.set.is_empty());
    }
}
