//! The parser: items to a tree, following Go's `text/template/parse`.
//!
//! Guarantees: every function name is resolved here, so an unknown function is a parse error
//! naming it and its position (as in Go, where the function map is fixed before parsing);
//! variables must be declared before use and go out of scope at the `{{end}}` of the block that
//! declared them; `{{break}}`/`{{continue}}` only inside `{{range}}`; nesting depth is bounded so
//! hostile input cannot overflow the stack. Not supported (parse errors): `define`, `template`,
//! `block`, custom delimiters, complex and hexadecimal-float literals.

use crate::error::Error;
use crate::funcs::Func;
use crate::lex::{Item, Keyword, Tok};

/// How deep parentheses and blocks may nest.
const MAX_DEPTH: usize = 100;

#[derive(Debug)]
pub(crate) enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    With(Branch),
    Range(Branch),
    Break,
    Continue,
}

#[derive(Debug)]
pub(crate) struct Branch {
    pub(crate) pipe: Pipe,
    pub(crate) list: Vec<Node>,
    pub(crate) else_list: Option<Vec<Node>>,
}

#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) pos: usize,
    /// `=` rather than `:=`.
    pub(crate) is_assign: bool,
    /// Declared or assigned variables, with `$`.
    pub(crate) decl: Vec<String>,
    pub(crate) cmds: Vec<Cmd>,
}

#[derive(Debug)]
pub(crate) struct Cmd {
    pub(crate) args: Vec<Arg>,
}

/// A number constant as Go's `idealConstant` types it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

#[derive(Debug)]
pub(crate) enum Arg {
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    /// Position, value, source text.
    Number(usize, Num, String),
    Str(usize, String),
    /// `.a.b`: the names.
    Field(usize, Vec<String>),
    /// `$x.a.b`: the variable (with `$`) and the names.
    Variable(usize, String, Vec<String>),
    Func(usize, Func),
    Pipe(Box<Pipe>),
    /// `(pipe).a.b`
    Chain(usize, Box<Arg>, Vec<String>),
}

impl Arg {
    pub(crate) fn pos(&self) -> usize {
        match self {
            Arg::Dot(p)
            | Arg::Nil(p)
            | Arg::Bool(p, _)
            | Arg::Number(p, ..)
            | Arg::Str(p, _)
            | Arg::Field(p, _)
            | Arg::Variable(p, ..)
            | Arg::Func(p, _)
            | Arg::Chain(p, ..) => *p,
            Arg::Pipe(pipe) => pipe.pos,
        }
    }

    /// The node as an error message names it; string literals are elided (they may be data).
    pub(crate) fn describe(&self) -> String {
        match self {
            Arg::Dot(_) => ".".to_owned(),
            Arg::Nil(_) => "nil".to_owned(),
            Arg::Bool(_, b) => b.to_string(),
            Arg::Number(_, _, text) => text.clone(),
            Arg::Str(..) => "\"...\"".to_owned(),
            Arg::Field(_, names) => names.iter().map(|n| format!(".{n}")).collect(),
            Arg::Variable(_, var, names) => {
                let mut s = var.clone();
                names.iter().for_each(|n| s.push_str(&format!(".{n}")));
                s
            }
            Arg::Func(_, f) => f.name().to_owned(),
            Arg::Pipe(p) => format!("({})", p.describe()),
            Arg::Chain(_, node, names) => {
                let mut s = node.describe();
                names.iter().for_each(|n| s.push_str(&format!(".{n}")));
                s
            }
        }
    }
}

impl Pipe {
    pub(crate) fn describe(&self) -> String {
        let cmds: Vec<String> = self
            .cmds
            .iter()
            .map(|c| c.args.iter().map(Arg::describe).collect::<Vec<_>>().join(" "))
            .collect();
        let mut s = String::new();
        if !self.decl.is_empty() {
            s.push_str(&self.decl.join(", "));
            s.push_str(if self.is_assign { " = " } else { " := " });
        }
        s.push_str(&cmds.join(" | "));
        s
    }
}

/// How a block ended.
enum Stop {
    End(usize),
    Else(usize),
    Eof,
}

struct Parser<'a> {
    name: &'a str,
    src: &'a str,
    items: Vec<Item>,
    at: usize,
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
}

pub(crate) fn parse(name: &str, src: &str, items: Vec<Item>) -> Result<Vec<Node>, Error> {
    let mut p =
        Parser { name, src, items, at: 0, vars: vec!["$".to_owned()], range_depth: 0, depth: 0 };
    let (list, stop) = p.list()?;
    match stop {
        Stop::Eof => Ok(list),
        Stop::End(pos) => Err(p.err(pos, "unexpected {{end}}")),
        Stop::Else(pos) => Err(p.err(pos, "unexpected {{else}}")),
    }
}

fn describe_tok(tok: Option<&Tok>) -> String {
    let Some(tok) = tok else { return "EOF".to_owned() };
    match tok {
        Tok::Text(_) => "text".to_owned(),
        Tok::LeftDelim => "\"{{\"".to_owned(),
        Tok::RightDelim => "\"}}\"".to_owned(),
        Tok::Space => "space".to_owned(),
        Tok::Bool(b) => format!("{b:?}"),
        Tok::CharConst(s) | Tok::Number(s) => format!("{s:?}"),
        Tok::Str(_) => "string".to_owned(),
        Tok::Ident(s) | Tok::Variable(s) => format!("{s:?}"),
        Tok::Field(s) => format!("\".{s}\""),
        Tok::Dot => "\".\"".to_owned(),
        Tok::Nil => "nil".to_owned(),
        Tok::Pipe => "\"|\"".to_owned(),
        Tok::LeftParen => "\"(\"".to_owned(),
        Tok::RightParen => "\")\"".to_owned(),
        Tok::Declare => "\":=\"".to_owned(),
        Tok::Assign => "\"=\"".to_owned(),
        Tok::Char(c) => format!("{c:?}").replace('\'', "\""),
        Tok::Keyword(k) => format!("<{}>", format!("{k:?}").to_lowercase()),
    }
}

impl Parser<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> Error {
        Error::parse(self.name, self.src, pos, msg)
    }

    fn pos(&self) -> usize {
        self.items.get(self.at).map_or(self.src.len(), |i| i.pos)
    }

    fn peek(&self) -> Option<&Tok> {
        self.items.get(self.at).map(|i| &i.tok)
    }

    fn next(&mut self) -> Option<Item> {
        let item = self.items.get(self.at).cloned();
        if item.is_some() {
            self.at += 1;
        }
        item
    }

    fn skip_space(&mut self) {
        while self.peek() == Some(&Tok::Space) {
            self.at += 1;
        }
    }

    fn peek_non_space(&mut self) -> Option<&Tok> {
        self.skip_space();
        self.peek()
    }

    fn next_non_space(&mut self) -> Option<Item> {
        self.skip_space();
        self.next()
    }

    fn unexpected(&self, item: Option<&Item>, context: &str) -> Error {
        let pos = item.map_or(self.src.len(), |i| i.pos);
        self.err(pos, format!("unexpected {} in {context}", describe_tok(item.map(|i| &i.tok))))
    }

    fn expect_right_delim(&mut self, context: &str) -> Result<usize, Error> {
        let item = self.next_non_space();
        match &item {
            Some(Item { tok: Tok::RightDelim, pos }) => Ok(*pos),
            _ => Err(self.unexpected(item.as_ref(), context)),
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(pos, format!("nesting deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    /// Nodes up to `{{end}}`, `{{else}}` or the end of input.
    fn list(&mut self) -> Result<(Vec<Node>, Stop), Error> {
        let mut nodes = Vec::new();
        loop {
            let Some(item) = self.next() else { return Ok((nodes, Stop::Eof)) };
            match item.tok {
                Tok::Text(t) => nodes.push(Node::Text(t)),
                Tok::LeftDelim => match self.action()? {
                    Action::Node(n) => nodes.push(n),
                    Action::End(pos) => return Ok((nodes, Stop::End(pos))),
                    Action::Else(pos) => return Ok((nodes, Stop::Else(pos))),
                },
                _ => return Err(self.unexpected(Some(&item), "input")),
            }
        }
    }

    fn action(&mut self) -> Result<Action, Error> {
        let pos = self.pos();
        if let Some(Tok::Keyword(k)) = self.peek_non_space().cloned() {
            let kw_pos = self.pos();
            self.at += 1;
            return match k {
                Keyword::End => Ok(Action::End(self.expect_right_delim("end")?)),
                Keyword::Else => {
                    // `{{else if ...}}`: leave the `if` for the enclosing `if` to parse.
                    if self.peek_non_space() == Some(&Tok::Keyword(Keyword::If)) {
                        return Ok(Action::Else(kw_pos));
                    }
                    self.expect_right_delim("else")?;
                    Ok(Action::Else(kw_pos))
                }
                Keyword::If => Ok(Action::Node(Node::If(self.control(kw_pos, "if", true)?))),
                Keyword::With => Ok(Action::Node(Node::With(self.control(kw_pos, "with", false)?))),
                Keyword::Range => {
                    Ok(Action::Node(Node::Range(self.control(kw_pos, "range", false)?)))
                }
                Keyword::Break | Keyword::Continue => {
                    let word = if k == Keyword::Break { "break" } else { "continue" };
                    self.expect_right_delim(&format!("{{{{{word}}}}}"))?;
                    if self.range_depth == 0 {
                        return Err(
                            self.err(kw_pos, format!("{{{{{word}}}}} outside {{{{range}}}}"))
                        );
                    }
                    Ok(Action::Node(if k == Keyword::Break { Node::Break } else { Node::Continue }))
                }
                Keyword::Block | Keyword::Define | Keyword::Template => {
                    let word = format!("{k:?}").to_lowercase();
                    Err(self.err(kw_pos, format!("{{{{{word}}}}} is not supported")))
                }
            };
        }
        let pipe = self.pipeline("command", pos, false)?;
        Ok(Action::Node(Node::Action(pipe)))
    }

    /// `if`/`with`/`range`: pipeline, body, optional else body, end.
    fn control(&mut self, pos: usize, context: &str, allow_else_if: bool) -> Result<Branch, Error> {
        self.enter(pos)?;
        let mark = self.vars.len();
        let result = self.control_body(pos, context, allow_else_if);
        self.vars.truncate(mark);
        self.depth -= 1;
        result
    }

    fn control_body(
        &mut self,
        pos: usize,
        context: &str,
        allow_else_if: bool,
    ) -> Result<Branch, Error> {
        let pipe = self.pipeline(context, pos, false)?;
        let is_range = context == "range";
        if is_range {
            self.range_depth += 1;
        }
        let body = self.list();
        if is_range {
            self.range_depth -= 1;
        }
        let (list, stop) = body?;
        let else_list = match stop {
            Stop::End(_) => None,
            Stop::Eof => return Err(self.err(self.src.len(), "unexpected EOF")),
            Stop::Else(else_pos) => {
                if allow_else_if && self.peek_non_space() == Some(&Tok::Keyword(Keyword::If)) {
                    let if_pos = self.pos();
                    self.at += 1;
                    // The nested `if` consumes the shared `{{end}}`.
                    Some(vec![Node::If(self.control(if_pos, "if", true)?)])
                } else {
                    let (else_list, stop) = self.list()?;
                    match stop {
                        Stop::End(_) => Some(else_list),
                        Stop::Else(p) => return Err(self.err(p, "expected end; found {{else}}")),
                        Stop::Eof => {
                            let _ = else_pos;
                            return Err(self.err(self.src.len(), "unexpected EOF"));
                        }
                    }
                }
            }
        };
        Ok(Branch { pipe, list, else_list })
    }

    /// A pipeline up to `}}` (or `)` when `in_paren`), with its declarations.
    fn pipeline(&mut self, context: &str, pos: usize, in_paren: bool) -> Result<Pipe, Error> {
        let mut pipe = Pipe { pos, is_assign: false, decl: Vec::new(), cmds: Vec::new() };
        self.declarations(&mut pipe, context)?;
        loop {
            let item = self.next_non_space();
            match item.as_ref().map(|i| &i.tok) {
                Some(Tok::RightDelim) if !in_paren => break,
                Some(Tok::RightParen) if in_paren => break,
                Some(
                    Tok::Bool(_)
                    | Tok::CharConst(_)
                    | Tok::Dot
                    | Tok::Field(_)
                    | Tok::Ident(_)
                    | Tok::Number(_)
                    | Tok::Nil
                    | Tok::Str(_)
                    | Tok::Variable(_)
                    | Tok::LeftParen,
                ) => {
                    self.at -= 1;
                    pipe.cmds.push(self.command()?);
                }
                _ => return Err(self.unexpected(item.as_ref(), context)),
            }
        }
        if pipe.cmds.is_empty() {
            return Err(self.err(pos, format!("missing value for {context}")));
        }
        for (i, cmd) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                cmd.args.first(),
                Some(Arg::Bool(..) | Arg::Dot(_) | Arg::Nil(_) | Arg::Number(..) | Arg::Str(..))
            ) {
                return Err(
                    self.err(pos, format!("non executable command in pipeline stage {}", i + 1))
                );
            }
        }
        // Declared variables come into scope after the pipeline that sets them.
        if !pipe.is_assign {
            self.vars.extend(pipe.decl.iter().cloned());
        }
        Ok(pipe)
    }

    /// `$x :=`, `$x =`, `$i, $v :=` (range only).
    fn declarations(&mut self, pipe: &mut Pipe, context: &str) -> Result<(), Error> {
        loop {
            let start = self.at;
            let Some(Tok::Variable(name)) = self.peek_non_space().cloned() else { return Ok(()) };
            let var_pos = self.pos();
            self.at += 1;
            match self.peek_non_space() {
                Some(Tok::Declare) | Some(Tok::Assign) => {
                    let assign = self.peek() == Some(&Tok::Assign);
                    if assign && !pipe.decl.is_empty() {
                        return Err(
                            self.err(var_pos, format!("too many declarations in {context}"))
                        );
                    }
                    if assign && !self.vars.contains(&name) {
                        return Err(self.err(var_pos, format!("undefined variable {name:?}")));
                    }
                    self.at += 1;
                    pipe.is_assign = assign;
                    pipe.decl.push(name);
                    return Ok(());
                }
                Some(Tok::Char(',')) => {
                    self.at += 1;
                    pipe.decl.push(name);
                    if context == "range" && pipe.decl.len() < 2 {
                        if let Some(Tok::Variable(_)) = self.peek_non_space() {
                            continue;
                        }
                        return Err(self.err(var_pos, "range can only initialize variables"));
                    }
                    return Err(self.err(var_pos, format!("too many declarations in {context}")));
                }
                _ => {
                    if !pipe.decl.is_empty() {
                        return Err(self.err(var_pos, "expected := or = after variables"));
                    }
                    self.at = start;
                    return Ok(());
                }
            }
        }
    }

    fn command(&mut self) -> Result<Cmd, Error> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            if let Some(arg) = self.operand()? {
                args.push(arg);
            }
            let item = self.next();
            match item.as_ref().map(|i| &i.tok) {
                Some(Tok::Space) => continue,
                // The pipeline decides whether this closer is the one it expects.
                Some(Tok::RightDelim | Tok::RightParen) => self.at -= 1,
                Some(Tok::Pipe) => {}
                _ => return Err(self.unexpected(item.as_ref(), "operand")),
            }
            break;
        }
        if args.is_empty() {
            return Err(self.err(self.pos(), "empty command"));
        }
        Ok(Cmd { args })
    }

    /// A term followed by `.field`s without space.
    fn operand(&mut self) -> Result<Option<Arg>, Error> {
        let Some(term) = self.term()? else { return Ok(None) };
        let mut names = Vec::new();
        // Go places a chain at its first `.field` after the term.
        let chain_pos = self.pos();
        while let Some(Tok::Field(name)) = self.peek().cloned() {
            self.at += 1;
            names.push(name);
        }
        if names.is_empty() {
            return Ok(Some(term));
        }
        Ok(Some(match term {
            Arg::Field(_, mut first) => {
                first.extend(names);
                Arg::Field(chain_pos, first)
            }
            Arg::Variable(_, var, mut first) => {
                first.extend(names);
                Arg::Variable(chain_pos, var, first)
            }
            Arg::Bool(pos, _)
            | Arg::Str(pos, _)
            | Arg::Number(pos, ..)
            | Arg::Nil(pos)
            | Arg::Dot(pos) => {
                return Err(self.err(pos, format!("unexpected . after term {:?}", term.describe())));
            }
            other => Arg::Chain(chain_pos, Box::new(other), names),
        }))
    }

    fn term(&mut self) -> Result<Option<Arg>, Error> {
        let Some(item) = self.next_non_space() else { return Ok(None) };
        let pos = item.pos;
        Ok(Some(match item.tok {
            Tok::Ident(name) => match Func::lookup(&name) {
                Some(f) => Arg::Func(pos, f),
                None => return Err(self.err(pos, format!("function {name:?} not defined"))),
            },
            Tok::Dot => Arg::Dot(pos),
            Tok::Nil => Arg::Nil(pos),
            Tok::Variable(name) => {
                if !self.vars.contains(&name) {
                    return Err(self.err(pos, format!("undefined variable {name:?}")));
                }
                Arg::Variable(pos, name, Vec::new())
            }
            Tok::Field(name) => Arg::Field(pos, vec![name]),
            Tok::Bool(b) => Arg::Bool(pos, b),
            Tok::CharConst(text) => match unquote_char(&text) {
                Some(c) => Arg::Number(pos, Num::Int(i64::from(u32::from(c))), text),
                None => return Err(self.err(pos, format!("malformed character constant: {text}"))),
            },
            Tok::Number(text) => match number(&text) {
                Ok(n) => Arg::Number(pos, n, text),
                Err(msg) => return Err(self.err(pos, msg)),
            },
            Tok::LeftParen => {
                self.enter(pos)?;
                let pipe = self.pipeline("parenthesized pipeline", pos, true);
                self.depth -= 1;
                Arg::Pipe(Box::new(pipe?))
            }
            Tok::Str(text) => match unquote(&text) {
                Some(s) => Arg::Str(pos, s),
                None => return Err(self.err(pos, "invalid syntax")),
            },
            _ => {
                self.at -= 1;
                return Ok(None);
            }
        }))
    }
}

enum Action {
    Node(Node),
    End(usize),
    Else(usize),
}

/// A number literal's value, typed as Go's `idealConstant` would: a float when it has a `.`,
/// an exponent, and is not hexadecimal; otherwise an int.
fn number(text: &str) -> Result<Num, String> {
    let illegal = || format!("illegal number syntax: {text:?}");
    if text.ends_with('i') {
        return Err(format!("complex number {text:?} is not supported"));
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let (neg, digits) = match clean.as_bytes().first() {
        Some(b'-') => (true, &clean[1..]),
        Some(b'+') => (false, &clean[1..]),
        _ => (false, clean.as_str()),
    };
    let lower = digits.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        if h.contains(['.', 'p']) {
            return Err(format!("hexadecimal float {text:?} is not supported"));
        }
        u64::from_str_radix(h, 16).ok()
    } else if let Some(o) = lower.strip_prefix("0o") {
        u64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        u64::from_str_radix(b, 2).ok()
    } else if lower.len() > 1 && lower.starts_with('0') && lower.bytes().all(|b| b.is_ascii_digit())
    {
        u64::from_str_radix(&lower[1..], 8).ok()
    } else if lower.bytes().all(|b| b.is_ascii_digit()) && !lower.is_empty() {
        lower.parse::<u64>().ok()
    } else {
        None
    };
    if let Some(u) = int {
        let value = if neg { 0i128 - i128::from(u) } else { i128::from(u) };
        return i64::try_from(value).map(Num::Int).map_err(|_| format!("{text} overflows int"));
    }
    if lower.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-'))
        && lower.bytes().any(|b| b.is_ascii_digit())
    {
        if let Ok(f) = digits.parse::<f64>()
            && f.is_finite()
        {
            return Ok(Num::Float(if neg { -f } else { f }));
        }
        if lower.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{text} overflows int"));
        }
    }
    Err(illegal())
}

/// Go's `strconv.Unquote` for a double-quoted or raw string literal.
pub(crate) fn unquote(lit: &str) -> Option<String> {
    if let Some(raw) = lit.strip_prefix('`') {
        return raw.strip_suffix('`').map(|s| s.replace('\r', ""));
    }
    let body = lit.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        unescape(&mut chars, &mut out, '"')?;
    }
    Some(out)
}

fn unquote_char(lit: &str) -> Option<char> {
    let body = lit.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut chars = body.chars().peekable();
    let c = chars.next()?;
    let mut out = String::new();
    if c == '\\' {
        unescape(&mut chars, &mut out, '\'')?;
    } else {
        out.push(c);
    }
    if chars.next().is_some() {
        return None;
    }
    let mut it = out.chars();
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// One escape sequence after `\`.
fn unescape(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    out: &mut String,
    quote: char,
) -> Option<()> {
    let hex = |n: usize, chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut v = 0u32;
        for _ in 0..n {
            v = v * 16 + chars.next()?.to_digit(16)?;
        }
        Some(v)
    };
    match chars.next()? {
        'a' => out.push('\x07'),
        'b' => out.push('\x08'),
        'f' => out.push('\x0c'),
        'n' => out.push('\n'),
        'r' => out.push('\r'),
        't' => out.push('\t'),
        'v' => out.push('\x0b'),
        '\\' => out.push('\\'),
        c if c == quote => out.push(c),
        'x' => {
            // A byte; Go strings may hold invalid UTF-8, Rust strings may not: accept ASCII only.
            let b = hex(2, chars)?;
            out.push(char::from_u32(b).filter(char::is_ascii)?);
        }
        'u' => out.push(char::from_u32(hex(4, chars)?)?),
        'U' => out.push(char::from_u32(hex(8, chars)?)?),
        c @ '0'..='7' => {
            let mut v = c.to_digit(8)?;
            for _ in 0..2 {
                v = v * 8 + chars.next()?.to_digit(8)?;
            }
            out.push(char::from_u32(v).filter(char::is_ascii)?);
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_literals_are_typed_as_go_types_them() {
        let cases = [
            ("1", "Int(1)"),
            ("-0x1F", "Int(-31)"),
            ("017", "Int(15)"),
            ("0b101", "Int(5)"),
            ("1_000", "Int(1000)"),
        ];
        for (text, want) in cases {
            assert_eq!(format!("{:?}", number(text)), format!("Ok({want})"), "{text}");
        }
        assert!(matches!(number("1.5"), Ok(Num::Float(f)) if f == 1.5));
        assert!(matches!(number("1e3"), Ok(Num::Float(f)) if f == 1000.0));
        assert!(number("9223372036854775808").is_err());
        assert!(number("1x").is_err());
        assert!(number("-").is_err());
    }

    #[test]
    fn string_literals_unquote_go_escapes() {
        assert_eq!(unquote(r#""a\tb\n\"\\\x41\u00e9\101""#).as_deref(), Some("a\tb\n\"\\AéA"));
        assert_eq!(unquote("`raw\\n`").as_deref(), Some("raw\\n"));
        assert_eq!(unquote(r#""bad\q""#), None);
        assert_eq!(unquote_char(r"'\n'"), Some('\n'));
    }
}
