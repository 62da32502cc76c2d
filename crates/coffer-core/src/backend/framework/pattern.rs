//! Path patterns: `/`-separated segments, each a literal (`roles`), a named capture of one
//! non-empty segment (`{name}`), or, last only, a capture of the rest of the path (`{path*}`,
//! which may be empty and may hold `/`).
//!
//! Guarantees: matching is a walk over the segments, linear in the path's length, with no
//! backtracking and no regular expressions; a path matches with at most one trailing `/` (Vault's
//! `/?$`, so `LIST role/` finds `role`); a rest capture gets the path as sent, trailing `/` kept.

/// The captures of a matched path, in pattern order.
pub(crate) type Captures<'p> = Vec<(&'static str, &'p str)>;

/// A segment's capture name: `{name}` → `(name, false)`, `{path*}` → `(path, true)`.
pub(crate) fn capture(seg: &str) -> Option<(&str, bool)> {
    let inner = seg.strip_prefix('{')?.strip_suffix('}')?;
    Some(match inner.strip_suffix('*') {
        Some(name) => (name, true),
        None => (inner, false),
    })
}

/// The names a pattern captures, in order.
pub(crate) fn capture_names(pattern: &'static str) -> impl Iterator<Item = &'static str> {
    pattern.split('/').filter_map(|s| capture(s).map(|(n, _)| n))
}

/// The pattern as an OpenAPI path template: `{path*}` becomes `{path}`.
pub(crate) fn template(pattern: &str) -> String {
    pattern.replace("*}", "}")
}

/// Matches `path` against `pattern`; `None` when it does not match. With `folder`, one
/// trailing `/` after the last segment is allowed (a LIST names a folder: `role/`); otherwise
/// `role/x/` is not `role/x`, as in Vault, so an ACL rule on the exact path cannot be stepped
/// around by adding a slash. A `{rest*}` capture keeps its slash either way.
pub(crate) fn matches<'p>(
    pattern: &'static str,
    path: &'p str,
    folder: bool,
) -> Option<Captures<'p>> {
    let mut caps = Vec::new();
    // `None` once the path is used up.
    let mut rest = Some(path);
    for seg in pattern.split('/') {
        if let Some((name, true)) = capture(seg) {
            caps.push((name, rest.unwrap_or("")));
            return Some(caps);
        }
        let r = rest?;
        let (head, tail) = match r.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (r, None),
        };
        match capture(seg) {
            Some((name, _)) if !head.is_empty() => caps.push((name, head)),
            Some(_) => return None,
            None if head == seg => {}
            None => return None,
        }
        rest = tail;
    }
    match rest {
        None => Some(caps),
        Some("") if folder => Some(caps),
        Some(_) => None,
    }
}
