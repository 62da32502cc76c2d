//! Text the database engine builds before it talks to PostgreSQL: statement templating
//! (`{{name}}`, `{{username}}`, `{{password}}`, `{{expiration}}`), statement splitting, the
//! `{{expiration}}` time format, TTL capping, and the connection URL's credential templating.
//!
//! Guarantees: a substituted password is escaped for the single-quoted SQL literal it is
//! written into (`'` doubled), so a password policy's characters cannot end the literal;
//! splitting never breaks inside a quoted string, a quoted identifier or a dollar-quoted body.
//! Not guaranteed: that a statement is valid SQL; PostgreSQL is the judge of that.

use coffer_core::Result;
use zeroize::Zeroizing;

/// Values a statement may name.
#[derive(Default)]
pub(crate) struct Vars<'a> {
    pub(crate) name: &'a str,
    pub(crate) password: Option<&'a str>,
    pub(crate) expiration: Option<&'a str>,
}

/// Substitutes the template variables in one statement, in one pass: text a variable brings
/// in (a username built from a display name, say) is never expanded again. `{{name}}` and
/// `{{username}}` are the same value, as in Vault; a variable without a value, or an unknown
/// one, stays as written.
///
/// The statement may hold a password: it is wiped when dropped, and both it and the escaped
/// password are built in buffers sized up front, so that no reallocation leaves a copy behind
/// (what the PostgreSQL client copies into its own send buffer is not ours to wipe).
pub(crate) fn render(stmt: &str, v: &Vars<'_>) -> Zeroizing<String> {
    let password = v.password.map(|p| {
        let mut escaped = Zeroizing::new(String::with_capacity(2 * p.len()));
        for c in p.chars() {
            if c == '\'' {
                escaped.push('\'');
            }
            escaped.push(c);
        }
        escaped
    });
    let longest = [Some(v.name), password.as_deref().map(String::as_str), v.expiration]
        .into_iter()
        .flatten()
        .map(str::len)
        .max()
        .unwrap_or(0);
    let room = stmt.len() + stmt.matches("{{").count() * longest;
    Zeroizing::new(substitute(stmt, room, |var| match var {
        "name" | "username" => Some(v.name),
        "password" => password.as_deref().map(String::as_str),
        "expiration" => v.expiration,
        _ => None,
    }))
}

/// Replaces each `{{var}}` in `text` by `value(var)` (when that is `Some`), scanning once, into
/// a string of `capacity` bytes (it grows only if that is too little).
fn substitute<'a>(text: &str, capacity: usize, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(capacity);
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        match value(&after[..close]) {
            Some(val) => {
                out.push_str(&rest[..open]);
                out.push_str(val);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[..open + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits statements on `;` outside quotes and dollar-quoted bodies, dropping empty ones. A
/// statement that holds a bare `END` keyword (a function body without dollar quotes) is kept
/// whole, as Vault's PostgreSQL plugin does.
pub(crate) fn split_statements(stmts: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stmts {
        if has_bare_end(s) {
            let t = s.trim();
            if !t.is_empty() {
                out.push(t.to_owned());
            }
            continue;
        }
        let mut cur = String::new();
        for seg in segments(s) {
            match seg {
                Seg::Code(c) => {
                    for (i, part) in c.split(';').enumerate() {
                        if i > 0 {
                            push_trimmed(&mut out, &mut cur);
                        }
                        cur.push_str(part);
                    }
                }
                Seg::Quoted(q) => cur.push_str(q),
            }
        }
        push_trimmed(&mut out, &mut cur);
    }
    out
}

fn push_trimmed(out: &mut Vec<String>, cur: &mut String) {
    let t = cur.trim();
    if !t.is_empty() {
        out.push(t.to_owned());
    }
    cur.clear();
}

enum Seg<'a> {
    Code(&'a str),
    Quoted(&'a str),
}

/// Cuts SQL text into code and quoted parts (`'…'`, `"…"`, `$tag$…$tag$`). An unterminated
/// quote runs to the end of the text.
fn segments(s: &str) -> Vec<Seg<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        let close: Option<String> = match b[i] {
            b'\'' => Some("'".into()),
            b'"' => Some("\"".into()),
            b'$' => dollar_tag(&s[i..]),
            _ => None,
        };
        let Some(close) = close else {
            i += 1;
            continue;
        };
        if start < i {
            out.push(Seg::Code(&s[start..i]));
        }
        let open_len = if close.len() > 1 { close.len() } else { 1 };
        let body = i + open_len;
        let end = s[body..].find(&close).map_or(s.len(), |p| body + p + close.len());
        out.push(Seg::Quoted(&s[i..end]));
        start = end;
        i = end;
    }
    if start < s.len() {
        out.push(Seg::Code(&s[start..]));
    }
    out
}

/// `$$` or `$tag$` at the start of `s`.
fn dollar_tag(s: &str) -> Option<String> {
    let rest = &s[1..];
    let end = rest.find('$')?;
    let tag = &rest[..end];
    if tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !tag.starts_with(|c: char| c.is_ascii_digit())
    {
        Some(format!("${tag}$"))
    } else {
        None
    }
}

fn has_bare_end(s: &str) -> bool {
    segments(s).iter().any(|seg| match seg {
        Seg::Code(c) => c
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .any(|w| w.eq_ignore_ascii_case("end")),
        Seg::Quoted(_) => false,
    })
}

/// Vault's `{{expiration}}` format, Go's `2006-01-02 15:04:05-0700`, in UTC.
pub(crate) fn expiration(unix: u64) -> String {
    let t = coffer_core::time::rfc3339(unix);
    // rfc3339 gives `YYYY-MM-DDTHH:MM:SSZ`.
    format!("{} {}+0000", &t[..10], &t[11..19])
}

/// The lease TTL and max TTL for a role: role values win when set, the mount's fill in, and
/// both are capped by the mount's maximum (0 there: no cap).
pub(crate) fn lease_ttls(
    role_default: u64,
    role_max: u64,
    mount_default: u64,
    mount_max: u64,
) -> (u64, u64) {
    let cap = |v: u64| if mount_max > 0 { v.min(mount_max) } else { v };
    let max = if role_max > 0 { cap(role_max) } else { mount_max };
    let ttl = cap(if role_default > 0 { role_default } else { mount_default });
    let ttl = if max > 0 { ttl.min(max) } else { ttl };
    (ttl, max)
}

/// `connection_url` with `{{username}}`/`{{password}}` filled (in one pass), each
/// percent-encoded for a URL (key=value connection strings get them raw, single-quoted when
/// needed). It holds the password: wiped when dropped, and sized up front so that no
/// reallocation leaves a copy behind.
pub(crate) fn connection_url(url: &str, username: &str, password: &str) -> Zeroizing<String> {
    let encode = match coffer_pg::Form::of(url) {
        coffer_pg::Form::Url => coffer_pg::url_encode,
        coffer_pg::Form::KeyValue => coffer_pg::kv_quote,
    };
    let (u, p) = (encode(username), Zeroizing::new(encode(password)));
    let room = url.len() + url.matches("{{").count() * u.len().max(p.len());
    Zeroizing::new(substitute(url, room, |var| match var {
        "username" => Some(u.as_str()),
        "password" => Some(p.as_str()),
        _ => None,
    }))
}

/// Whether a generated username may hold `c`: letters, digits and `_ . @ -`.
fn username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-')
}

/// A generated username made safe for SQL: every character other than letters, digits and
/// `_ . @ -` (which a display name may bring in) becomes `_`; it must then fit PostgreSQL's
/// 63-byte identifier limit.
pub(crate) fn safe_username(u: &str) -> Result<String> {
    let safe: String = u.chars().map(|c| if username_char(c) { c } else { '_' }).collect();
    check_username(&safe)?;
    Ok(safe)
}

/// A username must be usable inside `"…"` and `'…'` without escaping, hold nothing a
/// template or statement could read as syntax, and fit PostgreSQL's 63-byte identifier limit.
pub(crate) fn check_username(u: &str) -> Result<()> {
    if u.is_empty() || u.len() > 63 {
        return Err(coffer_core::Error::invalid(format!(
            "generated username {u:?} must be 1 to 63 bytes long"
        )));
    }
    if !u.chars().all(username_char) {
        return Err(coffer_core::Error::invalid(format!(
            "generated username {u:?} may hold only letters, digits, '_', '.', '@' and '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(stmts: &[&str]) -> Vec<String> {
        split_statements(&stmts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn render_fills_every_variable_and_escapes_the_password() {
        let s = render(
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT r TO \"{{username}}\"",
            &Vars {
                name: "v-x",
                password: Some("a'b"),
                expiration: Some("2030-01-01 00:00:00+0000"),
            },
        );
        assert_eq!(
            s.as_str(),
            "CREATE ROLE \"v-x\" WITH LOGIN PASSWORD 'a''b' VALID UNTIL '2030-01-01 00:00:00+0000'; GRANT r TO \"v-x\""
        );
    }

    #[test]
    fn statements_split_on_semicolons_outside_quotes() {
        assert_eq!(
            v(&["CREATE ROLE \"a;b\" PASSWORD 'x;y';  GRANT SELECT ON t TO \"a;b\";", " ;; "]),
            vec!["CREATE ROLE \"a;b\" PASSWORD 'x;y'", "GRANT SELECT ON t TO \"a;b\""]
        );
        assert_eq!(
            v(&["SELECT 1", "SELECT 2; SELECT 3"]),
            vec!["SELECT 1", "SELECT 2", "SELECT 3"]
        );
    }

    #[test]
    fn dollar_quoted_bodies_and_bare_end_blocks_stay_whole() {
        assert_eq!(
            v(&["DO $$ BEGIN PERFORM 1; PERFORM 2; END $$; SELECT 3"]),
            vec!["DO $$ BEGIN PERFORM 1; PERFORM 2; END $$", "SELECT 3"]
        );
        let bare = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END";
        assert_eq!(v(&[bare]), vec![bare]);
        let tagged = "DO $f$ BEGIN PERFORM 1; END $f$; SELECT 3";
        assert_eq!(
            v(&["SELECT 0; DO $f$ BEGIN PERFORM 1; END $f$; SELECT 3"]).len(),
            3,
            "{tagged}"
        );
        assert_eq!(v(&["SELECT 'end'; SELECT 2"]), vec!["SELECT 'end'", "SELECT 2"]);
        assert_eq!(v(&["SELECT 'append'; SELECT \"appendix\""]).len(), 2);
        assert_eq!(v(&["SELECT $1; SELECT 2"]), vec!["SELECT $1", "SELECT 2"]);
    }

    #[test]
    fn expiration_uses_vaults_format() {
        assert_eq!(expiration(1_700_000_000), "2023-11-14 22:13:20+0000");
        assert_eq!(expiration(0), "1970-01-01 00:00:00+0000");
    }

    #[test]
    fn ttls_prefer_the_role_and_are_capped_by_the_mount() {
        assert_eq!(lease_ttls(0, 0, 3600, 86_400), (3600, 86_400));
        assert_eq!(lease_ttls(60, 0, 3600, 86_400), (60, 86_400));
        assert_eq!(lease_ttls(60, 120, 3600, 86_400), (60, 120));
        assert_eq!(lease_ttls(0, 120, 3600, 86_400), (120, 120));
        assert_eq!(lease_ttls(100_000, 200_000, 3600, 86_400), (86_400, 86_400));
        assert_eq!(lease_ttls(0, 0, 0, 0), (0, 0));
    }

    #[test]
    fn connection_urls_get_encoded_credentials() {
        assert_eq!(
            connection_url("postgres://{{username}}:{{password}}@h/db", "u@x", "p:/@ ?").as_str(),
            "postgres://u%40x:p%3A%2F%40%20%3F@h/db"
        );
        assert_eq!(
            connection_url("host=h user={{username}} password={{password}}", "u", "a b'c").as_str(),
            "host=h user=u password='a b\\'c'"
        );
    }

    #[test]
    fn usernames_must_be_safe_identifiers() {
        assert!(check_username("v-token-ro-abc-1").is_ok());
        assert!(check_username(&"a".repeat(63)).is_ok());
        for bad in ["", "a\"b", "a'b", "a\\b", "a\nb", "a$b", "a;b", "{{password}}", "a b"] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
        assert!(check_username(&"a".repeat(64)).is_err());
        assert_eq!(safe_username("v-{{password}}-x;$y").expect("ok"), "v-__password__-x__y");
        assert_eq!(safe_username("v-a@b.c_d-1").expect("ok"), "v-a@b.c_d-1");
        assert!(safe_username("").is_err());
    }

    #[test]
    fn a_statement_with_a_password_is_built_without_reallocating() {
        // A reallocation would leave a copy of the password in freed memory: the buffer must
        // be the one sized up front (`with_capacity` gives exactly that for bytes).
        let stmt = "ALTER ROLE \"{{name}}\" PASSWORD '{{password}}'; COMMENT ON ROLE \"{{name}}\" IS '{{password}}{{password}}'";
        let password = "x'".repeat(40);
        let s = render(stmt, &Vars { name: "n", password: Some(&password), expiration: None });
        assert!(s.contains(&"x''".repeat(40)));
        // Five variables, each given room for the longest value: the escaped password.
        assert_eq!(s.capacity(), stmt.len() + 5 * "x''".len() * 40);
        // The same for a connection string: two variables, room for the encoded password.
        let url = "postgres://{{username}}:{{password}}@h/db";
        let filled = connection_url(url, "u", &"/".repeat(30));
        assert!(filled.contains(&"%2F".repeat(30)));
        assert_eq!(filled.capacity(), url.len() + 2 * "%2F".len() * 30);
    }

    #[test]
    fn substituted_text_is_never_expanded_again() {
        let s = render(
            "CREATE ROLE \"{{name}}\" PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' {{other}}",
            &Vars {
                name: "{{password}}{{expiration}}",
                password: Some("{{name}}"),
                expiration: Some("e"),
            },
        );
        assert_eq!(
            s.as_str(),
            "CREATE ROLE \"{{password}}{{expiration}}\" PASSWORD '{{name}}' VALID UNTIL 'e' {{other}}"
        );
        assert_eq!(
            render("{{password}} {{ x", &Vars { name: "n", ..Vars::default() }).as_str(),
            "{{password}} {{ x"
        );
        assert_eq!(
            connection_url("host=h user={{username}} password={{password}}", "{{password}}", "p")
                .as_str(),
            "host=h user={{password}} password=p"
        );
    }
}
