//! The expiry index: what falls due when, in storage and (for the near future only) in memory.
//!
//! Storage holds one small entry per pending expiry at `due/<bucket>/<name>`, where a bucket is
//! one minute of unix time, zero-padded so buckets sort in time order. Listing `due/` yields
//! only the buckets (the storage backends skip over a folder's contents), so at unseal the
//! manager reads the buckets that are overdue or due within [`HORIZON_BUCKETS`] and nothing
//! else: start-up work grows with the leases due soon, not with the leases alive.
//!
//! Memory is bounded: at most [`MEMORY_LIMIT`] entries are held. A bucket with more than that
//! (a million leases issued in one minute), or one whose offers would push the set past it, is
//! *streamed*: its entries stay in storage only, and the manager pages through them once they
//! fall due ([`Stream`]), a page at a time, whatever the bucket's size.
//!
//! Guarantees: an index entry is written in the same batch as the record it points at, so a
//! record with an expiry always has one; an entry may outlive its record (a renewal or
//! revocation that raced), and the manager treats such a dangling entry as nothing to do.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::hex::hex;
use crate::record;

/// Seconds per bucket. Unit tests use short buckets, so that crossing the horizon happens
/// within a test's patience.
pub(crate) const BUCKET_SECS: u64 = if cfg!(test) { 2 } else { 60 };
/// Buckets ahead of the current one that are kept in memory.
pub(crate) const HORIZON_BUCKETS: u64 = 2;
/// The most entries held in memory; beyond it, buckets are streamed from storage.
pub(crate) const MEMORY_LIMIT: usize = if cfg!(test) { 64 } else { 20_000 };

/// What falls due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Due {
    /// A secret's lease, by lease id.
    Lease(String),
    /// A token, by its name in the token store's indexes (`token::link_name`): its id (the
    /// salted hash the token store keys it by) after its creation order, so that the entries
    /// of tokens created together sit together in storage; the bare id for older tokens. The
    /// id is `token::link_id` of it.
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

/// A short, storage-safe name for a lease id (lease ids contain `/`), which names its expiry
/// entry, its token link and its failed-revocation entry. `ordered`: the id's last part (which
/// sorts by when the lease was made) then a hash of the whole id, so that the entries of leases
/// made together are written side by side in storage, as their records are; otherwise the hash
/// alone, which scattered them (one random page written per entry), as leases stored before
/// were named (`LeaseEntry::ordered_names`).
pub(crate) fn lease_name(lease_id: &str, ordered: bool) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, lease_id.as_bytes());
    if !ordered {
        return hex(&d.as_ref()[..16]);
    }
    let last = lease_id.rsplit('/').next().unwrap_or_default();
    format!("{last}.{}", hex(&d.as_ref()[..8]))
}

/// The key, relative to the expiration manager's view, of the entry of the lease named `name`
/// ([`lease_name`]) due at `at`.
pub(crate) fn lease_key(name: &str, at: u64) -> String {
    format!("{}l.{name}", bucket_dir(bucket_of(at)))
}

/// The key of the entry of the token named `name` (`token::link_name`) due at `at`.
pub(crate) fn token_key(name: &str, at: u64) -> String {
    format!("{}t.{name}", bucket_dir(bucket_of(at)))
}

impl Due {
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

/// Where the manager is in a streamed bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Stream {
    /// The last entry name handled in the pass under way; `None` between passes.
    pub(crate) after: Option<String>,
    /// When the pass under way (or the last one) began; 0 before the first.
    pub(crate) pass_began: u64,
    /// The earliest expiry not yet due that the pass under way has read (0: unknown).
    pub(crate) pending: u64,
    /// The earliest expiry offered since the pass under way (or the last one) began (0:
    /// unknown): an entry written meanwhile, possibly where the pass had already been.
    pub(crate) offered: u64,
    /// After a whole pass: the earliest expiry it left for later (0: unknown).
    pub(crate) wake: u64,
}

/// Seconds between two passes over a streamed bucket that is not over yet: entries in it are
/// revoked at most this late (and a token is refused at its expiry regardless).
pub(crate) const STREAM_INTERVAL_SECS: u64 = if cfg!(test) { 1 } else { 10 };

impl Stream {
    /// Whether bucket `bucket` needs a page handled at `now`.
    ///
    /// While its minute runs, a new pass starts only once something in it can be due: the
    /// earliest expiry the last whole pass left for later, or one offered since. Reading a
    /// large bucket again every few seconds while none of it is due would cost as much as
    /// revoking it. Once its minute is over, every entry in it is due.
    pub(crate) fn ready(&self, bucket: u64, now: u64) -> bool {
        if bucket > bucket_of(now) {
            return false;
        }
        let rested = now >= self.pass_began + STREAM_INTERVAL_SECS;
        self.after.is_some()
            || self.pass_began == 0
            || (bucket == bucket_of(now) && rested && now >= self.wake.min(self.offered))
            || (bucket < bucket_of(now) && rested)
            // The bucket ended after the last pass began: one more pass sees all of it due.
            || (bucket < bucket_of(now) && bucket_of(self.pass_began) <= bucket)
    }

    /// Starts a pass at `now`. What brought it on stays in `wake` until it finishes, so a pass
    /// cut short by a storage error is made again.
    fn begin(&mut self, now: u64) {
        self.wake = self.wake.min(self.offered);
        self.pass_began = now;
        self.pending = u64::MAX;
        self.offered = u64::MAX;
    }

    /// Notes entries read in the pass under way that fall due after `now`.
    pub(crate) fn saw_later(&mut self, at: u64) {
        self.pending = self.pending.min(at);
    }

    /// Ends the pass under way: the next one waits for what it left, or for what was offered
    /// while it ran (`offered`, from the queue's own copy).
    pub(crate) fn finish(&mut self, offered: u64) {
        self.offered = offered;
        self.wake = self.pending.min(offered);
    }
}

/// The in-memory part: everything due up to the end of bucket `loaded_through`, except the
/// streamed buckets, whose entries are read from storage when they fall due.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) set: BTreeSet<(u64, Due)>,
    /// Every bucket up to and including this one has been read from storage (or is streamed);
    /// an expiry in it must also be put in `set` (unless streamed), or it would be missed.
    pub(crate) loaded_through: u64,
    /// Buckets too large to hold, by number.
    pub(crate) streamed: BTreeMap<u64, Stream>,
}

impl Queue {
    /// Adds `due` at `at` when its bucket is already loaded; later ones wait in storage, and
    /// so do those of a streamed bucket. When the set is full, the bucket becomes streamed.
    pub(crate) fn offer(&mut self, at: u64, due: Due) {
        let bucket = bucket_of(at);
        if let Some(s) = self.streamed.get_mut(&bucket) {
            s.offered = s.offered.min(at);
            return;
        }
        if bucket > self.loaded_through {
            return;
        }
        if self.set.len() >= MEMORY_LIMIT {
            self.stream(bucket);
            return;
        }
        self.set.insert((at, due));
    }

    /// Turns `bucket` into a streamed one: its entries leave memory (storage has them all).
    pub(crate) fn stream(&mut self, bucket: u64) {
        let start = bucket * BUCKET_SECS;
        let end = start + BUCKET_SECS;
        self.set.retain(|(at, _)| *at < start || *at >= end);
        self.streamed.entry(bucket).or_default();
    }

    /// The lowest bucket that may still hold an unprocessed entry: everything below it is done.
    /// New entries are never written below the current bucket.
    pub(crate) fn low_water(&self, now: u64) -> u64 {
        let first = self.set.first().map(|(at, _)| bucket_of(*at));
        let mut low = bucket_of(now).min(self.loaded_through + 1);
        if let Some(f) = first {
            low = low.min(f);
        }
        if let Some((b, _)) = self.streamed.first_key_value() {
            low = low.min(*b);
        }
        low
    }

    /// The first streamed bucket that needs a page handled at `now`, its pass begun if none
    /// was under way.
    pub(crate) fn ready_stream(&mut self, now: u64) -> Option<(u64, Stream)> {
        let (b, s) = self.streamed.iter_mut().find(|(b, s)| s.ready(**b, now))?;
        if s.after.is_none() {
            s.begin(now);
        }
        Some((*b, s.clone()))
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
        }
        assert!(Due::decode(b"{\"version\":1}").is_none());
        for name in [lease_key("x", 2 * BUCKET_SECS), token_key("x", 2 * BUCKET_SECS)] {
            assert!(name.starts_with("due/000000000002/"), "{name}");
        }
        assert_ne!(lease_key("x", 0), token_key("x", 0));
    }

    #[test]
    fn leases_made_together_are_named_side_by_side_and_apart_from_older_names() {
        let (a, b) =
            ("pki/issue/web/7mccpL0IJAimWWySHwicliGYWw", "db/creds/ro/7mccpL0IJBxxxxxxxxxxxxxxxx");
        let (na, nb) = (lease_name(a, true), lease_name(b, true));
        assert!(na.starts_with("7mccpL0IJAimWWySHwicliGYWw."), "{na}");
        assert!(na < nb, "names sort as the ids' last parts: {na} < {nb}");
        // The same last part under another path (a moved mount's lease) is another name.
        assert_ne!(na, lease_name("pki2/issue/web/7mccpL0IJAimWWySHwicliGYWw", true));
        assert_eq!(lease_name(a, false).len(), 32);
        assert_ne!(lease_name(a, false), na);
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

    #[test]
    fn a_full_set_streams_the_bucket_instead_of_growing() {
        let b = BUCKET_SECS;
        let mut q = Queue { loaded_through: 10, ..Queue::default() };
        q.offer(2 * b, Due::Token("early".into()));
        for i in 0..(MEMORY_LIMIT as u64 * 3) {
            q.offer(5 * b + i % b, Due::Token(format!("t{i}")));
            assert!(q.set.len() <= MEMORY_LIMIT);
        }
        assert!(q.streamed.contains_key(&5), "the crowded bucket is streamed");
        assert_eq!(q.set.len(), 1, "its entries left memory; the others stay");
        q.offer(5 * b, Due::Token("late".into()));
        assert_eq!(q.set.len(), 1, "a streamed bucket takes no more offers");
        assert_eq!(q.low_water(20 * b), 2);
        q.set.clear();
        assert_eq!(q.low_water(20 * b), 5, "a streamed bucket holds the low-water mark");
    }

    #[test]
    fn a_streamed_bucket_is_passed_over_while_current_and_once_more_after_it_ends() {
        let b = BUCKET_SECS;
        let fresh = Stream::default();
        assert!(!fresh.ready(5, 4 * b), "not before it begins");
        assert!(fresh.ready(5, 5 * b));
        let mid = Stream { after: Some("x".into()), pass_began: 5 * b, ..Stream::default() };
        assert!(mid.ready(5, 5 * b), "a pass under way goes on");
        let done = Stream { after: None, pass_began: 5 * b, ..Stream::default() };
        assert!(!done.ready(5, 5 * b), "no new pass at once");
        assert!(done.ready(5, 6 * b), "one more pass once the bucket is over");
        let after_end = Stream { after: None, pass_began: 6 * b, ..Stream::default() };
        assert!(!after_end.ready(5, 6 * b), "a pass that began after its end saw it all");
        assert!(after_end.ready(5, 6 * b + STREAM_INTERVAL_SECS));
    }

    #[test]
    fn a_current_streamed_bucket_is_read_again_only_once_something_in_it_can_be_due() {
        let b = BUCKET_SECS;
        let rested = 5 * b + STREAM_INTERVAL_SECS;
        assert_eq!(bucket_of(rested), 5, "the test needs a second pass within the minute");
        let mut q = Queue { loaded_through: 9, ..Queue::default() };
        q.stream(5);
        let (bucket, mut s) = q.ready_stream(5 * b).expect("a first pass");
        assert_eq!((bucket, s.pass_began), (5, 5 * b));
        // Everything the pass read was due and handled: nothing is left for later.
        s.finish(q.streamed[&5].offered);
        q.streamed.insert(5, s);
        assert!(q.ready_stream(rested).is_none(), "nothing in it can be due");
        // An expiry offered since (written where the pass had been, say) brings a pass.
        q.offer(rested, Due::Token("late".into()));
        assert!(q.ready_stream(rested).is_some(), "the offered one is due");
        // Were that pass cut short (a storage error), what brought it on still calls for one.
        assert!(q.streamed[&5].wake <= rested, "a pass cut short is made again");

        // A pass that read entries due later in the minute comes back for them.
        let mut q = Queue { loaded_through: 9, ..Queue::default() };
        q.stream(5);
        let (_, mut s) = q.ready_stream(5 * b).expect("a first pass");
        s.saw_later(rested);
        s.finish(q.streamed[&5].offered);
        q.streamed.insert(5, s);
        let (_, mut s) = q.ready_stream(rested).expect("what it left is due");
        assert_eq!(s.pass_began, rested);
        s.finish(q.streamed[&5].offered);
        q.streamed.insert(5, s);
        // Once the minute is over, every entry is due: one more pass, as before.
        assert!(q.ready_stream(6 * b).is_some(), "one pass after its minute");
    }
}
