//! Username templates: the subset of Vault's Go-template `username_template` language that its
//! built-in templates and documentation use.
//!
//! Supported: literal text and `{{ pipeline }}` actions; operands `.DisplayName`, `.RoleName`,
//! string and integer literals, `(pipeline)`; functions `random N`, `unix_time`,
//! `unix_time_millis`, `uuid`, `truncate N`, `lowercase`, `uppercase`, `replace OLD NEW`,
//! `printf FORMAT ARGS…` (verbs `%s`, `%d`, `%v`, `%%`). A pipeline's value is passed as the
//! last argument of the next command, as in Go.
//! Guarantees: parsing never panics on any input; a template that does not parse is refused
//! at config write with a message naming the problem. Not supported: Go's `if`/`range`/
//! variables, `timestamp`, `sha256`, `base64`.

use coffer_core::random::{random_base62, uuid_v4};

use coffer_core::time::now_unix;
use coffer_core::{Error, Result};

/// Vault's default PostgreSQL template.
pub(crate) const DEFAULT_TEMPLATE: &str = r#"{{ printf "v-%s-%s-%s-%s" (.DisplayName | truncate 8) (.RoleName | truncate 8) (random 20) (unix_time) | truncate 63 }}"#;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
}

type Pipeline = Vec<Command>;

#[derive(Debug, Clone, PartialEq)]
struct Command {
    args: Vec<Arg>,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Ident(String),
    Field(String),
    Str(String),
    Int(i64),
    Sub(Pipeline),
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
}

impl Val {
    fn text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Int(i) => i.to_string(),
        }
    }
}

/// What a username is built from.
pub(crate) struct Meta<'a> {
    pub(crate) display_name: &'a str,
    pub(crate) role_name: &'a str,
}

/// A parsed username template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    nodes: Vec<Node>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(format!("invalid username_template: {}", msg.into()))
}

impl Template {
    pub(crate) fn parse(src: &str) -> Result<Self> {
        let mut nodes = Vec::new();
        let mut rest = src;
        while !rest.is_empty() {
            match rest.find("{{") {
                None => {
                    nodes.push(Node::Text(rest.to_owned()));
                    break;
                }
                Some(i) => {
                    if i > 0 {
                        nodes.push(Node::Text(rest[..i].to_owned()));
                    }
                    let after = &rest[i + 2..];
                    let end = find_close(after).ok_or_else(|| bad("unclosed {{"))?;
                    let inner = after[..end].trim_start_matches('-').trim_end_matches('-');
                    let toks = tokenize(inner)?;
                    let mut pos = 0;
                    let p = parse_pipeline(&toks, &mut pos)?;
                    if pos != toks.len() {
                        return Err(bad(format!("unexpected {:?}", toks[pos])));
                    }
                    nodes.push(Node::Action(p));
                    rest = &after[end + 2..];
                }
            }
        }
        let t = Self { nodes };
        // Catch unknown functions and wrong arguments now, not at the first creds request.
        t.render(&Meta { display_name: "display", role_name: "role" })?;
        Ok(t)
    }

    pub(crate) fn render(&self, m: &Meta<'_>) -> Result<String> {
        let mut out = String::new();
        for n in &self.nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => out.push_str(&eval_pipeline(p, m)?.text()),
            }
        }
        Ok(out)
    }
}

/// The `}}` closing an action, skipping any inside string literals.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        match b[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'}' if !in_str && b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(String),
    Str(String),
    Int(i64),
    Pipe,
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok>> {
    let cs: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err(bad("unterminated string")),
                        Some('"') => break,
                        Some('\\') => {
                            match cs.get(i + 1) {
                                Some('n') => v.push('\n'),
                                Some('t') => v.push('\t'),
                                Some(&o) => v.push(o),
                                None => return Err(bad("unterminated string")),
                            }
                            i += 1;
                        }
                        Some(&o) => v.push(o),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Str(v));
            }
            '.' | '_' | 'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => {
                let start = i;
                while i < cs.len() && (cs[i].is_alphanumeric() || matches!(cs[i], '_' | '.' | '-'))
                {
                    i += 1;
                }
                let w: String = cs[start..i].iter().collect();
                if let Some(f) = w.strip_prefix('.') {
                    out.push(Tok::Field(f.to_owned()));
                } else if w.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
                    out.push(Tok::Int(w.parse().map_err(|_| bad(format!("bad number {w:?}")))?));
                } else {
                    out.push(Tok::Ident(w));
                }
            }
            other => return Err(bad(format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

/// Nesting deeper than this is refused, so a hostile template cannot exhaust the stack.
const MAX_DEPTH: usize = 16;

fn parse_pipeline(toks: &[Tok], pos: &mut usize) -> Result<Pipeline> {
    parse_pipeline_at(toks, pos, 0)
}

fn parse_pipeline_at(toks: &[Tok], pos: &mut usize, depth: usize) -> Result<Pipeline> {
    if depth > MAX_DEPTH {
        return Err(bad("too deeply nested"));
    }
    let mut cmds = Vec::new();
    loop {
        let mut args = Vec::new();
        while let Some(t) = toks.get(*pos) {
            let a = match t {
                Tok::Ident(s) => Arg::Ident(s.clone()),
                Tok::Field(s) => Arg::Field(s.clone()),
                Tok::Str(s) => Arg::Str(s.clone()),
                Tok::Int(n) => Arg::Int(*n),
                Tok::Open => {
                    *pos += 1;
                    let p = parse_pipeline_at(toks, pos, depth + 1)?;
                    if toks.get(*pos) != Some(&Tok::Close) {
                        return Err(bad("missing )"));
                    }
                    Arg::Sub(p)
                }
                Tok::Pipe | Tok::Close => break,
            };
            args.push(a);
            *pos += 1;
        }
        if args.is_empty() {
            return Err(bad("empty command"));
        }
        cmds.push(Command { args });
        if toks.get(*pos) == Some(&Tok::Pipe) {
            *pos += 1;
        } else {
            return Ok(cmds);
        }
    }
}

fn eval_pipeline(p: &Pipeline, m: &Meta<'_>) -> Result<Val> {
    let mut prev: Option<Val> = None;
    for c in p {
        prev = Some(eval_command(c, m, prev.take())?);
    }
    prev.ok_or_else(|| bad("empty pipeline"))
}

fn eval_arg(a: &Arg, m: &Meta<'_>) -> Result<Val> {
    Ok(match a {
        Arg::Field(f) => Val::Str(match f.as_str() {
            "DisplayName" => m.display_name.to_owned(),
            "RoleName" => m.role_name.to_owned(),
            other => return Err(bad(format!("unknown field .{other}"))),
        }),
        Arg::Str(s) => Val::Str(s.clone()),
        Arg::Int(n) => Val::Int(*n),
        Arg::Sub(p) => eval_pipeline(p, m)?,
        Arg::Ident(f) => call(f, &[])?,
    })
}

fn eval_command(c: &Command, m: &Meta<'_>, piped: Option<Val>) -> Result<Val> {
    let (first, rest) = c.args.split_first().ok_or_else(|| bad("empty command"))?;
    let mut args = rest.iter().map(|a| eval_arg(a, m)).collect::<Result<Vec<_>>>()?;
    match first {
        Arg::Ident(f) => {
            args.extend(piped);
            call(f, &args)
        }
        other if args.is_empty() && piped.is_none() => eval_arg(other, m),
        _ => Err(bad("only a function can take arguments")),
    }
}

fn int_arg(f: &str, v: Option<&Val>) -> Result<usize> {
    match v {
        Some(Val::Int(n)) if *n >= 0 => usize::try_from(*n).map_err(|_| bad("number too large")),
        _ => Err(bad(format!("{f} needs a non-negative number"))),
    }
}

fn str_arg(f: &str, v: Option<&Val>) -> Result<String> {
    v.map(Val::text).ok_or_else(|| bad(format!("{f} needs a string")))
}

fn arity(f: &str, args: &[Val], n: usize) -> Result<()> {
    if args.len() == n {
        Ok(())
    } else {
        Err(bad(format!("{f} takes {n} argument(s), got {}", args.len())))
    }
}

fn call(f: &str, args: &[Val]) -> Result<Val> {
    Ok(match f {
        "random" => {
            arity(f, args, 1)?;
            let n = int_arg(f, args.first())?;
            if n > 1024 {
                return Err(bad("random is limited to 1024 characters"));
            }
            Val::Str(random_base62(n))
        }
        "unix_time" => {
            arity(f, args, 0)?;
            Val::Int(i64::try_from(now_unix()).unwrap_or(i64::MAX))
        }
        "unix_time_millis" => {
            arity(f, args, 0)?;
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            Val::Int(i64::try_from(ms).unwrap_or(i64::MAX))
        }
        "uuid" => {
            arity(f, args, 0)?;
            Val::Str(uuid_v4())
        }
        "truncate" => {
            arity(f, args, 2)?;
            let n = int_arg(f, args.first())?;
            let s = str_arg(f, args.get(1))?;
            Val::Str(s.chars().take(n).collect())
        }
        "lowercase" => {
            arity(f, args, 1)?;
            Val::Str(str_arg(f, args.first())?.to_lowercase())
        }
        "uppercase" => {
            arity(f, args, 1)?;
            Val::Str(str_arg(f, args.first())?.to_uppercase())
        }
        "replace" => {
            arity(f, args, 3)?;
            let (old, new) = (str_arg(f, args.first())?, str_arg(f, args.get(1))?);
            let s = str_arg(f, args.get(2))?;
            if old.is_empty() {
                return Err(bad("replace needs a non-empty string to find"));
            }
            Val::Str(s.replace(&old, &new))
        }
        "printf" => {
            let (fmt, rest) = args.split_first().ok_or_else(|| bad("printf needs a format"))?;
            Val::Str(printf(&fmt.text(), rest)?)
        }
        other => return Err(bad(format!("unknown function {other:?}"))),
    })
}

fn printf(fmt: &str, args: &[Val]) -> Result<String> {
    let mut out = String::new();
    let mut it = args.iter();
    let mut cs = fmt.chars();
    while let Some(c) = cs.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match cs.next() {
            Some('%') => out.push('%'),
            Some('s' | 'd' | 'v') => {
                out.push_str(&it.next().ok_or_else(|| bad("printf: too few arguments"))?.text())
            }
            other => {
                return Err(bad(format!("printf: unsupported verb %{}", other.unwrap_or(' '))));
            }
        }
    }
    if it.next().is_some() {
        return Err(bad("printf: too many arguments"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta<'a>(d: &'a str, r: &'a str) -> Meta<'a> {
        Meta { display_name: d, role_name: r }
    }

    #[test]
    fn the_default_template_is_traceable_unique_and_short() {
        let t = Template::parse(DEFAULT_TEMPLATE).expect("parse");
        let a = t.render(&meta("approle-webservice", "readonly-reporting")).expect("render");
        let b = t.render(&meta("approle-webservice", "readonly-reporting")).expect("render");
        assert_ne!(a, b);
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(parts[0], "v");
        assert_eq!(parts[1], "approle");
        assert!(a.starts_with("v-approle--readonly-"), "{a}");
        assert!(a.len() <= 63, "{a}");
        let short = t.render(&meta("token", "ro")).expect("render");
        let p: Vec<&str> = short.split('-').collect();
        assert_eq!((p[0], p[1], p[2]), ("v", "token", "ro"));
        assert_eq!(p[3].len(), 20);
        let ts: u64 = p[4].parse().expect("unix time");
        assert!(ts.abs_diff(now_unix()) < 5);
    }

    #[test]
    fn long_names_are_cut_to_63() {
        let t = Template::parse("{{ printf \"%s-%s\" .DisplayName (random 60) | truncate 63 }}")
            .expect("parse");
        assert_eq!(t.render(&meta("abcdefghij", "r")).expect("render").len(), 63);
    }

    #[test]
    fn functions_compose_like_go_templates() {
        let t = Template::parse(
            "app-{{.RoleName | uppercase}}_{{ replace \"-\" \"_\" .DisplayName | lowercase }}",
        )
        .expect("parse");
        assert_eq!(t.render(&meta("My-App", "ro")).expect("render"), "app-RO_my_app");
        let u = Template::parse("{{uuid}}").expect("parse").render(&meta("", "")).expect("r");
        assert_eq!(u.len(), 36);
    }

    #[test]
    fn bad_templates_name_the_problem() {
        for (src, want) in [
            ("{{ .Nope }}", "unknown field"),
            ("{{ nope 3 }}", "unknown function"),
            ("{{ truncate .RoleName }}", "truncate"),
            ("{{ printf \"%s\" }}", "too few"),
            ("{{ random 3", "unclosed"),
            ("{{ (random 3 }}", "missing )"),
            ("{{ \"abc }}", "unclosed"),
            ("{{ \"abc\\\" }}x", "unclosed"),
            ("{{ | }}", "empty command"),
            ("{{ printf \"%x\" 1 }}", "unsupported verb"),
        ] {
            let e = Template::parse(src).expect_err(src).to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
        let deep = format!("{{{{ {}random 1{} }}}}", "(".repeat(40), ")".repeat(40));
        assert!(Template::parse(&deep).is_err());
    }
}
