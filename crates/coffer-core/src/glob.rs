//! Vault's `*` glob, the one matcher shared by every place that binds a name to a pattern: JWT
//! bound claims, Kubernetes service-account bindings, certificate name constraints and a database
//! connection's `allowed_roles`.
//!
//! Guarantees: `*` matches any run of characters (the empty one too) and nothing else is special;
//! a pattern without `*` matches only itself. It does not do `?`, classes or escapes, and it is
//! not the ACL path matcher (`policy/`), whose `*` and `+` follow other rules.

/// Whether `value` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || !value.ends_with(last) || value.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("repo:acme/*:ref:refs/heads/main", "repo:acme/web:ref:refs/heads/main"));
        assert!(!glob_match("repo:acme/*:ref:refs/heads/main", "repo:evil/web:ref:refs/heads/dev"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "abc"));
        assert!(glob_match("a*b*c", "a--b--c"));
        assert!(!glob_match("a*b*c", "a--c--b"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
    }

    #[test]
    fn allowed_roles_glob() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("ro", "ro"));
        assert!(!glob_match("ro", "rw"));
        assert!(glob_match("app-*", "app-web"));
        assert!(!glob_match("app-*", "ap"));
        assert!(glob_match("*-ro", "web-ro"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxc"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
