use crate::{Error, Result};

/// Longest key any backend accepts; PostgreSQL btree entries and SQLite pages stay small.
pub(crate) const MAX_KEY_LEN: usize = 2048;

/// Refuses keys that could alias another key or escape a prefix: empty, absolute, `..`/`.`
/// segments, empty segments, control characters.
pub fn validate_key(key: &str) -> Result<()> {
    // The reason only: a storage key holds mount UUIDs and hashed ids that callers need not see.
    let bad = |why: &str| Err(Error::InvalidKey(why.to_owned()));
    if key.is_empty() {
        return bad("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey(format!(
            "key longer than the storage limit of {MAX_KEY_LEN} bytes"
        )));
    }
    let b = key.as_bytes();
    if b[0] == b'/' {
        return bad("key starts with '/'");
    }
    // Every storage operation checks its key, several per request, so this works on bytes
    // rather than decoding chars. The reasons keep their order of precedence: a control
    // character anywhere is reported before a bad segment, which is reported before a trailing
    // '/'. Unicode's control characters (category Cc, `char::is_control`) are C0, DEL and C1;
    // UTF-8 writes C1 (U+0080..=U+009F) as 0xC2 then 0x80..=0x9F, and 0xC2 only ever leads a
    // character, so such a pair cannot be the tail of another one. The first scan has no early
    // exit so that it vectorizes; a key with a 0xC2 byte (also Latin-1 letters) is looked at
    // again pair by pair.
    let suspect = b.iter().fold(false, |acc, &c| acc | (c < 0x20) | (c == 0x7f) | (c == 0xc2));
    if suspect
        && b.iter().enumerate().any(|(i, &c)| {
            c < 0x20 || c == 0x7f || (c == 0xc2 && matches!(b.get(i + 1), Some(0x80..=0x9f)))
        })
    {
        return Err(Error::InvalidKey("key contains a control character".into()));
    }
    let body = b.strip_suffix(b"/").unwrap_or(b);
    if body.split(|&c| c == b'/').any(|s| s.is_empty() || s == b"." || s == b"..") {
        return bad("key has an empty, '.' or '..' segment");
    }
    if body.len() != b.len() {
        return bad("key ends with '/'");
    }
    Ok(())
}

/// A list prefix is empty or a key-like string ending in `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let Some(body) = prefix.strip_suffix('/') else {
        return Err(Error::InvalidKey(format!("list prefix must end with '/': {prefix:?}")));
    };
    validate_key(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for k in ["a", "a/b", "logical/0f3a/secret/x y", "core/keyring"] {
            assert!(validate_key(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn refuses_keys_that_could_alias() {
        for k in ["", "/a", "a//b", "a/../b", "./a", "a/", "a\0b", "a\nb"] {
            assert!(validate_key(k).is_err(), "{k:?}");
        }
    }

    #[test]
    fn prefixes_end_in_slash() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("a/b/").is_ok());
        assert!(validate_prefix("a/b").is_err());
        assert!(validate_prefix("/").is_err());
    }

    /// The check as it was written before the one-pass version, to compare against.
    fn reference(key: &str) -> Result<()> {
        // The reason only: a storage key holds mount UUIDs and hashed ids that callers need not see.
        let bad = |why: &str| Err(Error::InvalidKey(why.to_owned()));
        if key.is_empty() {
            return bad("empty key");
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "key longer than the storage limit of {MAX_KEY_LEN} bytes"
            )));
        }
        if key.starts_with('/') {
            return bad("key starts with '/'");
        }
        if key.chars().any(char::is_control) {
            return Err(Error::InvalidKey("key contains a control character".into()));
        }
        let body = key.strip_suffix('/').unwrap_or(key);
        if body.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return bad("key has an empty, '.' or '..' segment");
        }
        if key.ends_with('/') {
            return bad("key ends with '/'");
        }
        Ok(())
    }

    /// Every string of up to five characters from an alphabet of the characters that matter
    /// (separators, dots, C0/DEL/C1 controls and their UTF-8 neighbours) gets the same answer,
    /// reason included, from both versions.
    #[test]
    fn one_pass_matches_the_reference() {
        let alphabet = [
            'a',
            '/',
            '.',
            '\0',
            '\n',
            '\u{1f}',
            ' ',
            '\u{7f}',
            '\u{80}',
            '\u{9f}',
            '\u{a0}',
            '\u{c2}',
            '\u{2080}',
            '\u{10080}',
        ];
        let mut keys = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            let mut next = Vec::new();
            for k in &last {
                for c in alphabet {
                    let mut k = k.clone();
                    k.push(c);
                    next.push(k);
                }
            }
            keys.extend(next.iter().cloned());
            last = next;
        }
        keys.push("a".repeat(MAX_KEY_LEN));
        keys.push("a".repeat(MAX_KEY_LEN + 1));
        keys.push(format!("{}/", "a".repeat(MAX_KEY_LEN - 1)));
        for k in &keys {
            let (new, old) = (validate_key(k), reference(k));
            assert_eq!(
                new.as_ref().err().map(ToString::to_string),
                old.as_ref().err().map(ToString::to_string),
                "{k:?}"
            );
            assert_eq!(new.is_ok(), old.is_ok(), "{k:?}");
        }
    }
}
