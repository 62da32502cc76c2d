//! Hash maps with a fast hasher (foldhash) instead of std's SipHash, for the per-request
//! lookups of maps whose keys nobody can choose to collide: keys that are already uniformly
//! random (a token's salted HMAC) or that only an operator writes (policy paths and names), or
//! maps whose size is capped so that colliding keys cost a bounded scan (policy-name sets,
//! which a token role's `allowed_policies_glob` lets its users choose; foldhash's seed is
//! random per map as well). A KV v2 read hashed such keys four times, about 1,000 of its
//! instructions under SipHash (`scripts/cost`).
//!
//! Not for maps keyed by what a client chooses (storage paths in the read cache, request
//! paths): there SipHash's keyed resistance to flooding is what bounds the cost of a lookup.

/// A `HashMap` with foldhash's per-map random seed. Make one with `FastMap::default()`.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
