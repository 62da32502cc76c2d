//! Accepts vault-style single-dash long flags (`-format=json`) by rewriting them to clap's
//! `--format=json` before parsing. A lone `-` (stdin), negative numbers and everything after
//! `--` are left alone.

use std::ffi::OsString;

pub(super) fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    normalize_noting(args).0
}

/// [`normalize`], and the names (without dashes) of the flags it rewrote.
fn normalize_noting(args: impl IntoIterator<Item = OsString>) -> (Vec<OsString>, Vec<String>) {
    let mut out = Vec::new();
    let mut rewritten = Vec::new();
    let mut passthrough = false;
    for (i, a) in args.into_iter().enumerate() {
        if i == 0 || passthrough {
            out.push(a);
            continue;
        }
        let Some(s) = a.to_str() else {
            out.push(a);
            continue;
        };
        if s == "--" {
            passthrough = true;
            out.push(a);
            continue;
        }
        let bytes = s.as_bytes();
        let single_dash_long = bytes.len() > 2
            && bytes[0] == b'-'
            && bytes[1] != b'-'
            && bytes[1].is_ascii_alphabetic()
            && bytes[2] != b'='
            && !s.split('=').next().unwrap_or_default().contains(char::is_whitespace);
        if single_dash_long {
            rewritten.push(s[1..].split('=').next().unwrap_or_default().to_owned());
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(a);
        }
    }
    (out, rewritten)
}

/// Clap's message about `args` (as typed), naming each flag the way the user wrote it: the
/// message comes from the rewritten arguments, so `-tls-skipverify` would otherwise be reported
/// as `--tls-skipverify`, a flag nobody typed.
pub(super) fn as_typed(message: &str, args: &[OsString]) -> String {
    let (_, rewritten) = normalize_noting(args.iter().cloned());
    let mut out = message.to_owned();
    if !rewritten.is_empty() {
        // Suggest the spelling in the style the user writes in.
        out = out.replace("argument exists: '--", "argument exists: '-");
    }
    for name in rewritten {
        out = out.replace(&format!("'--{name}'"), &format!("'-{name}'"));
        out = out.replace(&format!("'--{name}="), &format!("'-{name}="));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: &[&str]) -> Vec<String> {
        normalize(v.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().expect("utf8"))
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            n(&["coffer", "read", "-format=json", "-field", "x", "secret/a"]),
            ["coffer", "read", "--format=json", "--field", "x", "secret/a"]
        );
    }

    #[test]
    fn errors_name_flags_as_typed() {
        let typed: Vec<OsString> =
            ["coffer", "status", "-tls-skipverify", "--format=x"].map(OsString::from).to_vec();
        let msg = "error: unexpected argument '--tls-skipverify' found\n\n  tip: a similar \
                   argument exists: '--tls-skip-verify'; '--format=x'";
        assert_eq!(
            as_typed(msg, &typed),
            "error: unexpected argument '-tls-skipverify' found\n\n  tip: a similar \
             argument exists: '-tls-skip-verify'; '--format=x'"
        );
    }

    #[test]
    fn stdin_dash_short_flags_and_passthrough_are_kept() {
        assert_eq!(
            n(&["coffer", "write", "p", "-", "-h", "--", "-dev"]),
            ["coffer", "write", "p", "-", "-h", "--", "-dev"]
        );
        assert_eq!(n(&["coffer", "x", "-1"]), ["coffer", "x", "-1"]);
        assert_eq!(n(&["coffer", "-description=two words"]), ["coffer", "--description=two words"]);
    }
}
