//! Request paths as the API takes them: one spelling per path, so that a path cannot be read two
//! ways by the ACL and by the router (`a/../b`, `a//b`, control characters).

use crate::logical::{Error, Result};

/// The path without its leading `/`s; refuses `.`/`..` segments, empty segments and control
/// characters. A trailing `/` stays (it marks a folder).
pub(crate) fn clean(path: &str) -> Result<String> {
    let p = path.trim_start_matches('/');
    let body = p.strip_suffix('/').unwrap_or(p);
    if p.chars().any(char::is_control) {
        return Err(Error::invalid("path contains a control character"));
    }
    if !body.is_empty() && body.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::invalid(format!("invalid path {path:?}: empty, '.' or '..' segment")));
    }
    Ok(p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_dot_segments_are_refused() {
        assert!(clean("secret/../sys/seal").is_err());
        assert!(clean("secret//x").is_err());
        assert_eq!(clean("/secret/x/").expect("ok"), "secret/x/");
    }
}
