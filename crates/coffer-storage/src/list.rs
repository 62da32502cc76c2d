//! Listing by skip-scan: the immediate children of a prefix from a handful of ordered index
//! range reads, without reading the subtrees under them.
//!
//! Each read fetches up to [`BATCH`] keys at or after a cursor, under the prefix, in byte order.
//! A file child moves the cursor just past its key; a folder child `x/` moves it past the whole
//! folder, to `prefix + "x0"` ('0' is the byte after '/'), so a folder holding a million keys costs
//! one read, not a million rows. Batches (rather than one key per read) keep a prefix holding many
//! plain files cheap too: reads <= 1 + folders + files / BATCH.
//!
//! Guarantees the same answer as folding the full sorted key list (`immediate_children`), for any
//! set of valid keys; relies on the backend ordering keys by bytes (SQLite's BINARY collation,
//! PostgreSQL's `COLLATE "C"`) and on keys holding no control characters.

/// Keys fetched per read.
pub(crate) const BATCH: i64 = 32;

/// The state of one listing: feed it the keys each read returned, until [`SkipScan::next_read`]
/// says it is done.
pub(crate) struct SkipScan {
    prefix: String,
    cursor: String,
    done: bool,
    out: Vec<String>,
}

/// What to read next: keys `>= from`, below `below` when set, ordered, at most [`BATCH`].
pub(crate) struct Read<'a> {
    pub(crate) from: &'a str,
    pub(crate) below: Option<String>,
}

impl SkipScan {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), cursor: prefix.to_owned(), done: false, out: Vec::new() }
    }

    /// The next range to read, or `None` when the listing is complete.
    pub(crate) fn next_read(&self) -> Option<Read<'_>> {
        (!self.done).then(|| Read { from: &self.cursor, below: prefix_end(&self.prefix) })
    }

    /// Takes the keys one read returned (in order, all `>= from` and under the prefix).
    pub(crate) fn feed(&mut self, keys: &[String]) {
        let full = i64::try_from(keys.len()).map_or(true, |n| n >= BATCH);
        for key in keys {
            if key.as_str() < self.cursor.as_str() {
                continue; // inside a folder already listed
            }
            let Some(rest) = key.strip_prefix(self.prefix.as_str()).filter(|r| !r.is_empty())
            else {
                continue;
            };
            match rest.find('/') {
                Some(i) => {
                    self.push(&rest[..=i]);
                    // Past every key under prefix + "x/": '0' is the byte after '/'.
                    self.cursor = format!("{}{}0", self.prefix, &rest[..i]);
                }
                None => {
                    self.push(rest);
                    // The smallest string after `key`: keys hold no control characters, so no
                    // key lies between `key` and `key + "\x01"`.
                    self.cursor = format!("{key}\u{1}");
                }
            }
        }
        // A short read saw the end of the range: a jump only skips keys that read returned.
        self.done = !full;
    }

    pub(crate) fn finish(mut self) -> Vec<String> {
        // Children arrive in key order, which is their order; sort anyway so that the contract
        // does not rest on that argument.
        self.out.sort();
        self.out.dedup();
        self.out
    }

    fn push(&mut self, child: &str) {
        if self.out.last().map(String::as_str) != Some(child) {
            self.out.push(child.to_owned());
        }
    }
}

/// The smallest string greater than every string starting with `prefix`, if any.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        if let Some(next) = char::from_u32(last as u32 + 1) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::immediate_children;

    /// Runs a skip-scan over a sorted in-memory key list; returns (children, reads).
    fn scan(keys: &[String], prefix: &str) -> (Vec<String>, usize) {
        let mut s = SkipScan::new(prefix);
        let mut reads = 0;
        while let Some(r) = s.next_read() {
            reads += 1;
            let batch: Vec<String> = keys
                .iter()
                .filter(|k| {
                    k.as_str() >= r.from && r.below.as_deref().is_none_or(|b| k.as_str() < b)
                })
                .take(BATCH as usize)
                .cloned()
                .collect();
            s.feed(&batch);
        }
        (s.finish(), reads)
    }

    #[test]
    fn folders_with_huge_subtrees_cost_one_read_each() {
        let mut keys: Vec<String> =
            (0..3).flat_map(|b| (0..5000).map(move |i| format!("lease/b{b}/{i:05}"))).collect();
        keys.push("lease/z".into());
        keys.sort();
        let (children, reads) = scan(&keys, "lease/");
        assert_eq!(children, ["b0/", "b1/", "b2/", "z"]);
        assert!(reads <= 5, "{reads} reads");
    }

    #[test]
    fn many_files_are_read_in_batches() {
        let mut keys: Vec<String> = (0..1000).map(|i| format!("kv/{i:04}")).collect();
        keys.sort();
        let (children, reads) = scan(&keys, "kv/");
        assert_eq!(children.len(), 1000);
        assert!(reads <= 1000 / BATCH as usize + 2, "{reads} reads");
    }

    #[test]
    fn prefix_end_is_the_next_string() {
        assert_eq!(prefix_end("a/").as_deref(), Some("a0"));
        assert_eq!(prefix_end("").as_deref(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn skip_scan_lists_what_a_full_scan_lists(
            raw in proptest::collection::vec("[ab0/.-]{1,3}(/[ab0 -]{1,3}){0,3}", 0..120),
            pick in 0usize..8,
        ) {
            let mut keys: Vec<String> =
                raw.into_iter().filter(|k| crate::validate_key(k).is_ok()).collect();
            keys.sort();
            keys.dedup();
            let prefixes: Vec<String> = std::iter::once(String::new())
                .chain(keys.iter().filter_map(|k| k.rfind('/').map(|i| k[..=i].to_owned())))
                .collect();
            let prefix = &prefixes[pick % prefixes.len()];
            let want = immediate_children(prefix, keys.iter().map(String::as_str));
            prop_assert_eq!(scan(&keys, prefix).0, want);
        }
    }
}
