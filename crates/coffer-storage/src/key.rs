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
}
