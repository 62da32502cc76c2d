//! The lexer: template source to items, following Go's `text/template/parse` lexer.
//!
//! Guarantees: text outside actions is passed through byte for byte except where a trim marker
//! (`{{- ` / ` -}}`) removes the adjacent white space (space, tab, CR, LF); comments
//! (`{{/* */}}`, only directly inside the delimiters) produce nothing; every item carries the byte
//! offset where it starts. Never panics: every index is checked against the input's length and
//! char boundaries. Delimiters are fixed to `{{` `}}`.

use crate::error::Error;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Text(String),
    LeftDelim,
    RightDelim,
    Space,
    /// `true` or `false`.
    Bool(bool),
    /// A character constant: its text, e.g. `'a'`.
    CharConst(String),
    Number(String),
    /// A quoted or raw string: its source text, quotes included.
    Str(String),
    Ident(String),
    /// `.name`
    Field(String),
    /// `$` or `$name`, with the `$`.
    Variable(String),
    Dot,
    Nil,
    Pipe,
    LeftParen,
    RightParen,
    Declare,
    Assign,
    /// Any other printable ASCII character in an action, e.g. `,`.
    Char(char),
    Keyword(Keyword),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    Block,
    Break,
    Continue,
    Define,
    Else,
    End,
    If,
    Range,
    Template,
    With,
}

#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
}

const LEFT: &str = "{{";
const RIGHT: &str = "}}";

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// `- ` right after a left delimiter.
fn has_left_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(b[1] as char)
}

/// ` -` right before a right delimiter.
fn has_right_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && is_space(b[0] as char) && b[1] == b'-'
}

struct Lexer<'a> {
    name: &'a str,
    src: &'a str,
    pos: usize,
    items: Vec<Item>,
    paren_depth: usize,
    /// Set by a ` -}}`: the next text starts after its leading white space.
    trim_next: bool,
}

pub(crate) fn lex(name: &str, src: &str) -> Result<Vec<Item>, Error> {
    let mut l = Lexer { name, src, pos: 0, items: Vec::new(), paren_depth: 0, trim_next: false };
    l.run()?;
    Ok(l.items)
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> Error {
        Error::parse(self.name, self.src, pos, msg)
    }

    fn emit(&mut self, tok: Tok, pos: usize) {
        self.items.push(Item { tok, pos });
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn run(&mut self) -> Result<(), Error> {
        while self.pos < self.src.len() {
            self.text();
            if self.pos < self.src.len() {
                self.left_delim()?;
            }
        }
        Ok(())
    }

    /// Text up to the next left delimiter (or the end).
    fn text(&mut self) {
        let mut start = self.pos;
        if std::mem::take(&mut self.trim_next) {
            let rest = self.rest();
            start += rest.len() - rest.trim_start_matches(is_space).len();
        }
        let (end, next) = match self.src[self.pos..].find(LEFT) {
            Some(i) => (self.pos + i, self.pos + i),
            None => (self.src.len(), self.src.len()),
        };
        let mut text_end = end;
        if next < self.src.len() && has_left_trim(&self.src[next + LEFT.len()..]) {
            let t = &self.src[start.min(end)..end];
            text_end = start.min(end) + t.trim_end_matches(is_space).len();
        }
        if start < text_end {
            self.emit(Tok::Text(self.src[start..text_end].to_owned()), start);
        }
        self.pos = next;
    }

    fn left_delim(&mut self) -> Result<(), Error> {
        let delim_pos = self.pos;
        self.pos += LEFT.len();
        let trim = has_left_trim(self.rest());
        let after_marker = if trim { 2 } else { 0 };
        if self.src[self.pos + after_marker..].starts_with("/*") {
            self.pos += after_marker;
            return self.comment(delim_pos);
        }
        self.emit(Tok::LeftDelim, delim_pos);
        self.pos += after_marker;
        self.paren_depth = 0;
        self.inside_action()
    }

    fn comment(&mut self, delim_pos: usize) -> Result<(), Error> {
        let Some(i) = self.rest().find("*/") else {
            return Err(self.err(delim_pos, "unclosed comment"));
        };
        self.pos += i + 2;
        match self.at_right_delim() {
            Some((len, trim)) => {
                self.pos += len;
                self.trim_next = trim;
                Ok(())
            }
            None => Err(self.err(delim_pos, "comment ends before closing delimiter")),
        }
    }

    /// At `}}` or ` -}}`: the length to skip and whether it trims.
    fn at_right_delim(&self) -> Option<(usize, bool)> {
        let rest = self.rest();
        if has_right_trim(rest) && rest[2..].starts_with(RIGHT) {
            return Some((2 + RIGHT.len(), true));
        }
        rest.starts_with(RIGHT).then_some((RIGHT.len(), false))
    }

    fn inside_action(&mut self) -> Result<(), Error> {
        loop {
            if let Some((len, trim)) = self.at_right_delim() {
                if self.paren_depth > 0 {
                    return Err(self.err(self.pos, "unclosed left paren"));
                }
                let at = if trim { self.pos + 2 } else { self.pos };
                self.emit(Tok::RightDelim, at);
                self.pos += len;
                self.trim_next = trim;
                return Ok(());
            }
            let start = self.pos;
            let Some(c) = self.peek() else {
                return Err(self.err(start, "unclosed action"));
            };
            match c {
                c if is_space(c) => self.space(),
                '=' => {
                    self.pos += 1;
                    self.emit(Tok::Assign, start);
                }
                ':' => {
                    if !self.rest().starts_with(":=") {
                        return Err(self.err(start, "expected :="));
                    }
                    self.pos += 2;
                    self.emit(Tok::Declare, start);
                }
                '|' => {
                    self.pos += 1;
                    self.emit(Tok::Pipe, start);
                }
                '"' => self.quote()?,
                '`' => self.raw_quote()?,
                '$' => {
                    self.pos += 1;
                    let name = self.alnum_run();
                    self.check_terminator(start)?;
                    self.emit(Tok::Variable(format!("${name}")), start);
                }
                '\'' => self.char_const()?,
                '.' => {
                    let next = self.rest().as_bytes().get(1).copied();
                    if next.is_some_and(|b| b.is_ascii_digit()) {
                        self.number()?;
                    } else {
                        self.pos += 1;
                        let name = self.alnum_run();
                        self.check_terminator(start)?;
                        if name.is_empty() {
                            self.emit(Tok::Dot, start);
                        } else {
                            self.emit(Tok::Field(name), start);
                        }
                    }
                }
                '+' | '-' | '0'..='9' => self.number()?,
                c if is_alnum(c) => self.identifier()?,
                '(' => {
                    self.pos += 1;
                    self.paren_depth += 1;
                    self.emit(Tok::LeftParen, start);
                }
                ')' => {
                    // An unbalanced `)` is left for the parser to report in its context.
                    self.pos += 1;
                    self.paren_depth = self.paren_depth.saturating_sub(1);
                    self.emit(Tok::RightParen, start);
                }
                c if c.is_ascii() && !c.is_ascii_control() => {
                    self.pos += 1;
                    self.emit(Tok::Char(c), start);
                }
                c => {
                    return Err(self.err(
                        start,
                        format!("unrecognized character in action: U+{:04X}", c as u32),
                    ));
                }
            }
        }
    }

    /// White space, stopping before a ` -}}` (whose space belongs to the delimiter).
    fn space(&mut self) {
        let start = self.pos;
        let rest = self.rest();
        let n = rest.len() - rest.trim_start_matches(is_space).len();
        let mut end = start + n;
        let last = end - 1;
        if has_right_trim(&self.src[last..]) && self.src[last + 2..].starts_with(RIGHT) {
            end = last;
        }
        self.pos = end;
        if end > start {
            self.emit(Tok::Space, start);
        }
    }

    fn alnum_run(&mut self) -> String {
        let rest = self.rest();
        let n = rest.len() - rest.trim_start_matches(is_alnum).len();
        let word = rest[..n].to_owned();
        self.pos += n;
        word
    }

    /// After a word, only a separator may follow.
    fn check_terminator(&self, start: usize) -> Result<(), Error> {
        match self.peek() {
            None => Ok(()),
            Some(c) if is_space(c) || matches!(c, '.' | ',' | '|' | ':' | ')' | '(') => Ok(()),
            Some(_) if self.rest().starts_with(RIGHT) => Ok(()),
            Some(c) => Err(self.err(start, format!("bad character U+{:04X} '{c}'", c as u32))),
        }
    }

    fn identifier(&mut self) -> Result<(), Error> {
        let start = self.pos;
        let word = self.alnum_run();
        self.check_terminator(start)?;
        let tok = match word.as_str() {
            "true" => Tok::Bool(true),
            "false" => Tok::Bool(false),
            "nil" => Tok::Nil,
            "block" => Tok::Keyword(Keyword::Block),
            "break" => Tok::Keyword(Keyword::Break),
            "continue" => Tok::Keyword(Keyword::Continue),
            "define" => Tok::Keyword(Keyword::Define),
            "else" => Tok::Keyword(Keyword::Else),
            "end" => Tok::Keyword(Keyword::End),
            "if" => Tok::Keyword(Keyword::If),
            "range" => Tok::Keyword(Keyword::Range),
            "template" => Tok::Keyword(Keyword::Template),
            "with" => Tok::Keyword(Keyword::With),
            _ => Tok::Ident(word),
        };
        self.emit(tok, start);
        Ok(())
    }

    /// Go's `scanNumber`: a sign, a base prefix, digits with `_`, a fraction, an exponent, an
    /// imaginary `i`. The text is checked when the parser converts it.
    fn number(&mut self) -> Result<(), Error> {
        let start = self.pos;
        let b = self.src.as_bytes();
        let mut i = self.pos;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let mut digits: &[u8] = b"0123456789_";
        let mut exp: &[u8] = b"eE";
        if i + 1 < b.len() && b[i] == b'0' {
            match b[i + 1] {
                b'x' | b'X' => {
                    i += 2;
                    digits = b"0123456789abcdefABCDEF_";
                    exp = b"pP";
                }
                b'o' | b'O' => {
                    i += 2;
                    digits = b"01234567_";
                    exp = b"";
                }
                b'b' | b'B' => {
                    i += 2;
                    digits = b"01_";
                    exp = b"";
                }
                _ => {}
            }
        }
        let run = |i: &mut usize, set: &[u8]| {
            while *i < b.len() && set.contains(&b[*i]) {
                *i += 1;
            }
        };
        run(&mut i, digits);
        if i < b.len() && b[i] == b'.' {
            i += 1;
            run(&mut i, digits);
        }
        if i < b.len() && exp.contains(&b[i]) {
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            run(&mut i, b"0123456789_");
        }
        if i < b.len() && b[i] == b'i' {
            i += 1;
        }
        self.pos = i;
        if self.peek().is_some_and(is_alnum) {
            let end = self.pos + self.peek().map_or(0, char::len_utf8);
            return Err(self.err(start, format!("bad number syntax: {:?}", &self.src[start..end])));
        }
        self.emit(Tok::Number(self.src[start..i].to_owned()), start);
        Ok(())
    }

    fn quote(&mut self) -> Result<(), Error> {
        let (lit, at) = self.quoted('"', "unterminated quoted string")?;
        self.emit(Tok::Str(lit), at);
        Ok(())
    }

    /// A literal from the quote at `pos` to its closing `quote` (escapes skipped, no newline).
    fn quoted(&mut self, quote: char, unterminated: &str) -> Result<(String, usize), Error> {
        let start = self.pos;
        let mut chars = self.rest().char_indices().skip(1);
        loop {
            match chars.next() {
                Some((_, '\\')) => {
                    if matches!(chars.next(), None | Some((_, '\n'))) {
                        return Err(self.err(start, unterminated));
                    }
                }
                Some((_, '\n')) | None => return Err(self.err(start, unterminated)),
                Some((i, c)) if c == quote => {
                    self.pos += i + 1;
                    return Ok((self.src[start..self.pos].to_owned(), start));
                }
                Some(_) => {}
            }
        }
    }

    fn raw_quote(&mut self) -> Result<(), Error> {
        let start = self.pos;
        match self.src[start + 1..].find('`') {
            Some(i) => {
                self.pos = start + 1 + i + 1;
                self.emit(Tok::Str(self.src[start..self.pos].to_owned()), start);
                Ok(())
            }
            None => Err(self.err(start, "unterminated raw quoted string")),
        }
    }

    fn char_const(&mut self) -> Result<(), Error> {
        let (lit, at) = self.quoted('\'', "unterminated character constant")?;
        self.emit(Tok::CharConst(lit), at);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex("t", src).map(|items| items.into_iter().map(|i| i.tok).collect()).unwrap_or_default()
    }

    #[test]
    fn trim_markers_remove_adjacent_white_space_only() {
        assert_eq!(
            toks("a \n {{- 3 -}} \n b"),
            vec![
                Tok::Text("a".into()),
                Tok::LeftDelim,
                Tok::Number("3".into()),
                Tok::RightDelim,
                Tok::Text("b".into())
            ]
        );
    }

    #[test]
    fn minus_without_space_is_a_negative_number() {
        assert_eq!(toks("{{-3}}"), vec![Tok::LeftDelim, Tok::Number("-3".into()), Tok::RightDelim]);
    }

    #[test]
    fn comments_produce_nothing() {
        assert_eq!(
            toks("a{{/* x */}}b{{- /* y */ -}} c"),
            vec![Tok::Text("a".into()), Tok::Text("b".into()), Tok::Text("c".into())]
        );
    }

    #[test]
    fn unclosed_action_is_reported_where_it_starts() {
        let err = lex("t", "ab\n{{ .x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("unclosed action"), "{err}");
        assert!(err.starts_with("template: t:2:"), "{err}");
    }
}
