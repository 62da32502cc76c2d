//! The two spellings of a libpq connection string, read into their parts without judging them:
//! `postgres://user:password@hosts/database?key=value&...` and `key=value key='quoted value'`.
//!
//! Guarantees: the URL is split as libpq splits it (the user part ends at the first `@` that
//! comes before any `/`, so a `?` or `:` in a password stays in the password), and a
//! `key=value` string is tokenized as tokio-postgres tokenizes it (white space around `=`,
//! `'…'` quoting, backslash escapes); a reading that stops at a malformed spot still returns
//! what came before it, so that passwords in a string that does not parse are still found.
//! Percent-decoding keeps a `%` that is not followed by two hex digits, and leaves `+` alone
//! (as libpq does). Nothing here returns text that was not asked for: problems are fixed
//! phrases.

use std::ops::Range;

/// How a connection string is spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `postgres://…` or `postgresql://…`.
    Url,
    /// libpq's `key=value` pairs.
    KeyValue,
}

impl Form {
    /// The form of `s`: a URL when it starts with `scheme://` (only `postgres` and
    /// `postgresql` are accepted later), else `key=value` pairs, even when a value holds `://`.
    pub fn of(s: &str) -> Self {
        let scheme = s.split_once("://").map_or("", |(scheme, _)| scheme);
        let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme { Form::Url } else { Form::KeyValue }
    }
}

const SCHEMES: [&str; 2] = ["postgresql://", "postgres://"];

/// One parameter: a URL query pair or a `key=value` item.
pub(crate) struct Param {
    /// Decoded (lossily: a key that is not UTF-8 matches no known name).
    pub(crate) key: String,
    /// Where the value is written (URL: percent-encoded; `key=value`: with its quotes).
    pub(crate) span: Range<usize>,
    /// The decoded value.
    pub(crate) value: Vec<u8>,
}

/// What a connection string holds, as written.
pub(crate) struct Parts<'a> {
    pub(crate) form: Form,
    /// URL only: the user name as written (percent-encoded).
    pub(crate) user: Option<&'a str>,
    /// URL only: where the password of the user part is written.
    pub(crate) password: Option<Range<usize>>,
    /// URL only: the host list as written (`h1:5432,[::1]:5433`).
    pub(crate) hosts: &'a str,
    /// URL only: the database as written, without its leading `/`.
    pub(crate) path: Option<&'a str>,
    pub(crate) params: Vec<Param>,
    /// Why the reading stopped early or what is malformed; the parts above are what was read.
    pub(crate) problem: Option<&'static str>,
}

impl Parts<'_> {
    fn new(form: Form) -> Self {
        Self {
            form,
            user: None,
            password: None,
            hosts: "",
            path: None,
            params: Vec::new(),
            problem: None,
        }
    }
}

/// Splits `s` into its parts (see the module header).
pub(crate) fn split(s: &str) -> Parts<'_> {
    match Form::of(s) {
        Form::Url => match SCHEMES.iter().find(|p| s.starts_with(*p)) {
            Some(scheme) => split_url(s, scheme.len()),
            None => {
                let mut p = Parts::new(Form::Url);
                p.problem = Some("a URL must start with postgres:// or postgresql://");
                p
            }
        },
        Form::KeyValue => split_key_value(s),
    }
}

fn split_url(s: &str, start: usize) -> Parts<'_> {
    let mut parts = Parts::new(Form::Url);
    let rest = &s[start..];
    // libpq: the user part ends at the first `@` that comes before any `/`.
    let mut at = start;
    if let Some(i) = rest.find(['@', '/'])
        && rest.as_bytes()[i] == b'@'
    {
        let info = &rest[..i];
        match info.find(':') {
            Some(c) => {
                parts.user = Some(&info[..c]);
                parts.password = Some(start + c + 1..start + i);
            }
            None => parts.user = Some(info),
        }
        at = start + i + 1;
    }
    let tail = &s[at..];
    let (host_path, query) = match tail.find('?') {
        Some(q) => (&tail[..q], Some(at + q + 1)),
        None => (tail, None),
    };
    match host_path.find('/') {
        Some(p) => {
            parts.hosts = &host_path[..p];
            parts.path = Some(&host_path[p + 1..]);
        }
        None => parts.hosts = host_path,
    }
    let Some(mut pos) = query else { return parts };
    for pair in s[pos..].split('&') {
        if !pair.is_empty() {
            match pair.split_once('=') {
                Some((k, v)) => parts.params.push(Param {
                    key: String::from_utf8_lossy(&decode(k)).into_owned(),
                    span: pos + k.len() + 1..pos + pair.len(),
                    value: decode(v),
                }),
                None => {
                    parts.problem.get_or_insert("a URL parameter has no '=' (write key=value)");
                }
            }
        }
        pos += pair.len() + 1;
    }
    parts
}

/// libpq's `key = value` pairs, tokenized as tokio-postgres does.
fn split_key_value(s: &str) -> Parts<'_> {
    let mut parts = Parts::new(Form::KeyValue);
    let mut it = s.char_indices().peekable();
    let end = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        it.peek().map_or(s.len(), |&(i, _)| i)
    };
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let key_start = end(&mut it);
        while it.next_if(|&(_, c)| !c.is_whitespace() && c != '=').is_some() {}
        let key_end = end(&mut it);
        if key_start == key_end && it.peek().is_none() {
            return parts;
        }
        skip_ws(&mut it);
        if it.next_if(|&(_, c)| c == '=').is_none() || key_start == key_end {
            parts.problem =
                Some("a parameter is not key=value (quote a value that holds spaces: key='a b')");
            return parts;
        }
        skip_ws(&mut it);
        let value_start = end(&mut it);
        let quoted = it.next_if(|&(_, c)| c == '\'').is_some();
        let mut value = String::new();
        let mut closed = !quoted;
        while let Some(&(_, c)) = it.peek() {
            if quoted && c == '\'' {
                it.next();
                closed = true;
                break;
            }
            if !quoted && c.is_whitespace() {
                break;
            }
            it.next();
            if c == '\\' {
                if let Some((_, escaped)) = it.next() {
                    value.push(escaped);
                }
            } else {
                value.push(c);
            }
        }
        let key = s[key_start..key_end].to_owned();
        let empty = !quoted && value.is_empty();
        parts.params.push(Param {
            key,
            span: value_start..end(&mut it),
            value: value.into_bytes(),
        });
        if !closed {
            parts.problem = Some("a quoted value has no closing quote");
            return parts;
        }
        if empty {
            parts.problem = Some("a parameter has no value (write key='' for an empty one)");
            return parts;
        }
    }
}

/// Percent-decoding: `%` and two hex digits is that byte; anything else, a lone `%` and `+`
/// included, is itself.
pub(crate) fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |i: usize| b.get(i).and_then(|c| char::from(*c).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2))
            && let Ok(byte) = u8::try_from(h * 16 + l)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// `s` percent-encoded for any part of a URL: everything but letters, digits and `- . _ ~`.
/// Built in one buffer of the largest size it can need, so that encoding a password leaves no
/// partial copy behind in memory a reallocation freed.
pub fn url_encode(s: impl AsRef<[u8]>) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let s = s.as_ref();
    let mut out = String::with_capacity(3 * s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// `s` as a value of a `key=value` string: as is when it has no white space, quote or
/// backslash, else `'…'` with `\` and `'` escaped by a backslash. Built in one buffer, as
/// [`url_encode`] is.
pub fn kv_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| !c.is_whitespace() && c != '\'' && c != '\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(2 * s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A password written into a connection string: where, and what it is (decoded).
pub(crate) struct Written {
    pub(crate) span: Range<usize>,
    pub(crate) value: String,
}

/// Every password written into `s` (user part of a URL, `password=` parameter, `password=`
/// key), found by the same reading that parses it.
pub(crate) fn find_passwords(s: &str) -> Vec<Written> {
    let parts = split(s);
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    if let Some(span) = parts.password {
        out.push(Written { value: lossy(&decode(&s[span.clone()])), span: span.clone() });
        // libpq ends the password at the first `@`; one written with a raw `@` in it spills into
        // the host. Up to the authority's last `@` is hidden too, so no part of it shows.
        let authority_end = s[span.end..].find('/').map_or(s.len(), |i| span.end + i);
        if let Some(i) = s[span.end..authority_end].rfind('@').filter(|i| *i > 0) {
            let wide = span.start..span.end + i;
            out.push(Written { value: lossy(&decode(&s[wide.clone()])), span: wide });
        }
    }
    for p in parts.params.into_iter().filter(|p| p.key == "password") {
        out.push(Written { value: lossy(&p.value), span: p.span });
    }
    out
}

/// The passwords written into `s`, decoded, in the order they are written (empty ones left out).
pub fn written_passwords(s: &str) -> Vec<String> {
    find_passwords(s).into_iter().map(|w| w.value).filter(|v| !v.is_empty()).collect()
}

/// `s` with every password written into it replaced by `xxxxx` (as Go's `url.Redacted`, which
/// Vault's read answers use), except those `keep` accepts (a template placeholder) and empty
/// ones.
pub fn redact(s: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut out = s.to_owned();
    let mut found = find_passwords(s);
    // From the end, the widest of those starting at the same place first (and only it).
    found.sort_by_key(|w| (std::cmp::Reverse(w.span.start), std::cmp::Reverse(w.span.end)));
    found.dedup_by_key(|w| w.span.start);
    for w in found {
        if !w.value.is_empty() && !keep(&w.value) {
            out.replace_range(w.span, "xxxxx");
        }
    }
    out
}
