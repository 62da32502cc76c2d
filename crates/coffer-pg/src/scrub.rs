//! Keeping passwords out of messages: a [`Scrubber`] knows the secrets of one connection and
//! replaces each, in every spelling it may take in a message, by `[password]`.
//!
//! Guarantees: every non-empty secret added is replaced however short (a message may become
//! odd; it never holds the secret), in the spellings a message can carry it: as is, doubled
//! quotes (an SQL literal), quoted as a `key=value` value, percent-encoded, and as written in
//! the connection string. Longer secrets are replaced first, so one that contains another is
//! not left in pieces. Not guaranteed: a secret split or transformed otherwise by whoever wrote
//! the message (PostgreSQL does not echo passwords; this is the second line).

use std::fmt;

use crate::syntax::{find_passwords, kv_quote, url_encode};

/// What a scrubbed secret becomes.
const MARK: &str = "[password]";

/// The secrets of a connection, to be kept out of messages. `Debug` shows only how many.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Longest first.
    secrets: Vec<String>,
}

impl Scrubber {
    pub fn new() -> Self {
        Self::default()
    }

    /// One that knows the connection string `s` itself and every password written into it.
    pub fn for_conn_string(s: &str) -> Self {
        let mut me = Self::new();
        me.push(s.to_owned());
        for w in find_passwords(s) {
            me.push(s[w.span].to_owned());
            me.add(&w.value);
        }
        me.sort();
        me
    }

    /// Adds `password` in every spelling listed in the module header.
    pub fn add(&mut self, password: &str) {
        if password.is_empty() {
            return;
        }
        self.push(password.to_owned());
        self.push(password.replace('\'', "''"));
        self.push(kv_quote(password));
        self.push(url_encode(password));
        self.sort();
    }

    /// Adds the secrets `other` knows.
    pub fn extend(&mut self, other: &Scrubber) {
        self.secrets.extend(other.secrets.iter().cloned());
        self.sort();
    }

    /// `msg` with every known secret replaced by `[password]`.
    pub fn scrub(&self, msg: &str) -> String {
        let mut out = msg.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MARK);
            }
        }
        out
    }

    fn push(&mut self, s: String) {
        if !s.is_empty() {
            self.secrets.push(s);
        }
    }

    fn sort(&mut self) {
        self.secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.secrets.dedup();
    }
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}
