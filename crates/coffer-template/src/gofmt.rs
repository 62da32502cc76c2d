//! Go's `fmt` printing for template values: `%v` and the `print`, `println` and `printf` builtins.
//!
//! Guarantees: the output matches Go's `fmt` for the value types templates see (bool, int,
//! float64, string, `json.Number`, `[]interface{}`, `map[string]interface{}`, the secret struct),
//! for the verbs `v s d q x X o b c t f F e E g G %` with the flags `+ - # 0 space`, width and
//! precision (including `*`), and Go's error forms (`%!d(string=x)`, `%!d(MISSING)`,
//! `%!(EXTRA ...)`). Everything is written into the caller's buffer; nothing is kept.
//! Not supported: explicit argument indexes (`%[1]d`), `%T`, `%p`, `%U`, `%#v` Go-syntax output
//! (printed as `%v`), hexadecimal floats.

use std::fmt::Write as _;

use crate::buf::Buf;
use crate::value::{SECRET_FIELDS, Value};

/// Printing flags and sizes of one verb.
#[derive(Clone, Copy, Default)]
struct Spec {
    plus: bool,
    minus: bool,
    sharp: bool,
    zero: bool,
    space: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's `fmt.Sprint`: operands joined, with a space between two operands when neither is a string.
pub(crate) fn sprint(out: &mut Buf, args: &[Value]) {
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = a.as_str().is_some();
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_value(out, a, 'v', Spec::default(), 0);
        prev_string = is_string;
    }
}

/// Go's `fmt.Sprintln`: operands always separated by spaces, then a newline.
pub(crate) fn sprintln(out: &mut Buf, args: &[Value]) {
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_value(out, a, 'v', Spec::default(), 0);
    }
    out.push('\n');
}

/// How a template action prints its result (text/template's `printableValue` then `fmt.Fprint`):
/// no value prints `<no value>` and a pointer to a struct prints the struct.
pub(crate) fn print_action(out: &mut Buf, v: &Value) {
    match v {
        Value::Missing | Value::Nil => out.push_str("<no value>"),
        Value::Secret(_) => write_value(out, v, 'v', Spec::default(), 1),
        _ => write_value(out, v, 'v', Spec::default(), 0),
    }
}

/// Go's `fmt.Sprintf`.
pub(crate) fn sprintf(out: &mut Buf, format: &str, args: &[Value]) {
    let mut next = 0usize;
    let mut chars = format.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&(_, f)) = chars.peek() {
            match f {
                '+' => spec.plus = true,
                '-' => spec.minus = true,
                '#' => spec.sharp = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                _ => break,
            }
            chars.next();
        }
        if chars.peek().map(|&(_, c)| c) == Some('*') {
            chars.next();
            match args.get(next) {
                Some(Value::Int(n)) => {
                    if *n < 0 {
                        spec.minus = true;
                    }
                    spec.width = Some(n.unsigned_abs() as usize);
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            next += 1;
        } else {
            spec.width = digits(&mut chars);
        }
        if chars.peek().map(|&(_, c)| c) == Some('.') {
            chars.next();
            if chars.peek().map(|&(_, c)| c) == Some('*') {
                chars.next();
                match args.get(next) {
                    Some(Value::Int(n)) if *n >= 0 => spec.prec = Some(*n as usize),
                    _ => out.push_str("%!(BADPREC)"),
                }
                next += 1;
            } else {
                spec.prec = Some(digits(&mut chars).unwrap_or(0));
            }
        }
        // Go ignores zero padding when padding on the right.
        if spec.minus {
            spec.zero = false;
        }
        let Some((_, verb)) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.get(next) {
            None => {
                let _ = write!(out, "%!{verb}(MISSING)");
            }
            Some(a) => write_value(out, a, verb, spec, 0),
        }
        next += 1;
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[next..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_typed(out, a);
        }
        out.push(')');
    }
}

fn digits(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(&(_, c)) = chars.peek() {
        let Some(d) = c.to_digit(10) else { break };
        // Go caps widths at 1e6; beyond that it reports a bad width. Saturate instead.
        n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize).min(1_000_000));
        chars.next();
    }
    n
}

/// `type=value`, as inside Go's `%!verb(...)` and `%!(EXTRA ...)`.
fn write_typed(out: &mut Buf, v: &Value) {
    match v {
        Value::Missing | Value::Nil => out.push_str("<nil>"),
        _ => {
            out.push_str(v.type_name());
            out.push('=');
            write_value(out, v, 'v', Spec::default(), 0);
        }
    }
}

fn bad_verb(out: &mut Buf, verb: char, v: &Value) {
    let _ = write!(out, "%!{verb}(");
    write_typed(out, v);
    out.push(')');
}

/// One operand with one verb; `depth` > 0 inside a composite value.
fn write_value(out: &mut Buf, v: &Value, verb: char, spec: Spec, depth: usize) {
    match v {
        Value::Missing | Value::Nil => {
            if depth == 0 && verb != 'v' {
                let _ = write!(out, "%!{verb}(<nil>)");
            } else {
                pad(out, "<nil>", spec);
            }
        }
        Value::Bool(b) => match verb {
            'v' | 't' => pad(out, if *b { "true" } else { "false" }, spec),
            _ => bad_verb(out, verb, v),
        },
        Value::Int(i) => write_int(out, *i, verb, spec, v),
        Value::Float(f) => write_float(out, *f, verb, spec, v),
        Value::String(s) | Value::Number(s) => write_str(out, s, verb, spec, v),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, item, verb, spec, depth + 1);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_str(out, k, verb, spec, &Value::string(k.as_str()));
                out.push(':');
                write_value(out, item, verb, spec, depth + 1);
            }
            out.push(']');
        }
        Value::Secret(s) => {
            if depth == 0 {
                out.push('&');
            }
            out.push('{');
            for (i, name) in SECRET_FIELDS.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if spec.plus {
                    out.push_str(name);
                    out.push(':');
                }
                let field = s.field(name).unwrap_or_default();
                write_value(out, &field, verb, spec, depth + 1);
            }
            out.push('}');
        }
    }
}

/// Pads `s` to the width, counting characters as Go counts runes.
fn pad(out: &mut Buf, s: &str, spec: Spec) {
    let n = s.chars().count();
    let fill = spec.width.map_or(0, |w| w.saturating_sub(n));
    if spec.minus {
        out.push_str(s);
        out.repeat(' ', fill);
    } else {
        out.repeat(if spec.zero { '0' } else { ' ' }, fill);
        out.push_str(s);
    }
}

/// Pads a number: with the `0` flag the zeros go between the sign and the digits.
fn pad_number(out: &mut Buf, sign: &str, body: &str, spec: Spec) {
    if spec.zero && !spec.minus {
        let n = sign.chars().count() + body.chars().count();
        let fill = spec.width.map_or(0, |w| w.saturating_sub(n));
        out.push_str(sign);
        out.repeat('0', fill);
        out.push_str(body);
    } else {
        let mut whole = Buf::new();
        whole.push_str(sign);
        whole.push_str(body);
        pad(out, whole.as_str(), Spec { zero: false, ..spec });
    }
}

fn sign_of(negative: bool, spec: Spec) -> &'static str {
    match (negative, spec.plus, spec.space) {
        (true, _, _) => "-",
        (false, true, _) => "+",
        (false, false, true) => " ",
        _ => "",
    }
}

fn write_int(out: &mut Buf, i: i64, verb: char, spec: Spec, v: &Value) {
    let u = i.unsigned_abs();
    let (mut body, prefix) = match verb {
        'v' | 'd' => (u.to_string(), ""),
        'b' => (format!("{u:b}"), "0b"),
        'o' => (format!("{u:o}"), "0"),
        'O' => (format!("{u:o}"), "0o"),
        'x' => (format!("{u:x}"), "0x"),
        'X' => (format!("{u:X}"), "0X"),
        'c' => {
            let c = u32::try_from(i).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
            return pad(out, c.encode_utf8(&mut [0; 4]), spec);
        }
        'U' => {
            let mut u = format!("U+{:04X}", i);
            if spec.sharp {
                let c = u32::try_from(i).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
                u.push_str(&format!(" '{c}'"));
            }
            return pad(out, &u, spec);
        }
        'q' => {
            let c = u32::try_from(i).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
            let mut q = Buf::new();
            q.push('\'');
            if c == '\'' {
                q.push_str("\\'");
            } else {
                quote_char(&mut q, c, spec.plus);
            }
            q.push('\'');
            return pad(out, q.as_str(), spec);
        }
        _ => return bad_verb(out, verb, v),
    };
    let mut spec = spec;
    if let Some(p) = spec.prec {
        // A precision is a minimum number of digits, and turns off zero padding.
        if p == 0 && i == 0 {
            body.clear();
        }
        while body.len() < p {
            body.insert(0, '0');
        }
        spec.zero = false;
    }
    let with_prefix = match (spec.sharp, verb) {
        (true, 'o') if !body.starts_with('0') => format!("0{body}"),
        (true, 'b' | 'x' | 'X') => format!("{prefix}{body}"),
        (_, 'O') => format!("{prefix}{body}"),
        _ => body,
    };
    pad_number(out, sign_of(i < 0, spec), &with_prefix, spec);
}

fn write_float(out: &mut Buf, f: f64, verb: char, spec: Spec, v: &Value) {
    let body = match verb {
        'v' | 'g' | 'G' => format_g(f.abs(), spec.prec, verb == 'G'),
        'e' | 'E' => format_e(f.abs(), spec.prec.unwrap_or(6), verb == 'E'),
        'f' | 'F' => format!("{:.*}", spec.prec.unwrap_or(6), f.abs()),
        _ => return bad_verb(out, verb, v),
    };
    if f.is_nan() {
        let sign = if spec.plus {
            "+"
        } else if spec.space {
            " "
        } else {
            ""
        };
        return pad(out, &format!("{sign}NaN"), Spec { zero: false, ..spec });
    }
    if f.is_infinite() {
        let sign = if f < 0.0 {
            "-"
        } else if spec.space && !spec.plus {
            " "
        } else {
            "+"
        };
        return pad(out, &format!("{sign}Inf"), Spec { zero: false, ..spec });
    }
    let body = if spec.sharp && !body.contains('.') {
        match body.find(['e', 'E']) {
            Some(at) => format!("{}.{}", &body[..at], &body[at..]),
            None => format!("{body}."),
        }
    } else {
        body
    };
    pad_number(out, sign_of(f.is_sign_negative(), spec), &body, spec);
}

/// Decimal digits and exponent of `f` (non-negative, finite): `d.ddd × 10^exp`. With `prec`,
/// rounded to `prec + 1` significant digits; otherwise the shortest that reads back exactly.
fn decimal(f: f64, prec: Option<usize>) -> (String, i32) {
    let e = match prec {
        Some(p) => format!("{:.*e}", p, f),
        None => format!("{f:e}"),
    };
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    (mant.replace('.', ""), exp.parse().unwrap_or(0))
}

/// Go's `%e` body: `d.ddde+XX`, at least two exponent digits.
fn format_e(f: f64, prec: usize, upper: bool) -> String {
    let (digits, exp) = decimal(f, Some(prec));
    e_form(&digits, exp, upper)
}

/// Shortest `%e` form with sign, as `strconv.FormatFloat(f, 'e', -1, 64)`.
pub(crate) fn shortest_e(f: f64) -> String {
    let (digits, exp) = decimal(f.abs(), None);
    let e = e_form(&digits, exp, false);
    if f.is_sign_negative() { format!("-{e}") } else { e }
}

fn e_form(digits: &str, exp: i32, upper: bool) -> String {
    let mut s = String::new();
    s.push_str(&digits[..1]);
    if digits.len() > 1 {
        s.push('.');
        s.push_str(&digits[1..]);
    }
    s.push(if upper { 'E' } else { 'e' });
    s.push(if exp < 0 { '-' } else { '+' });
    let _ = write!(s, "{:02}", exp.unsigned_abs());
    s
}

/// Go's `%g` (and `%v` for floats): `%e` when the exponent is < -4 or >= the precision (6 for the
/// shortest form), else `%f`, both without trailing zeros.
fn format_g(f: f64, prec: Option<usize>, upper: bool) -> String {
    if f == 0.0 {
        return "0".to_owned();
    }
    let (digits, exp) = decimal(f, prec.map(|p| p.max(1) - 1));
    let digits = {
        let t = digits.trim_end_matches('0');
        if t.is_empty() { "0" } else { t }
    };
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let mut eprec = prec.map_or(6, |p| p.max(1) as i32);
    if prec.is_some() && eprec > nd && nd >= dp {
        eprec = nd;
    }
    if prec.is_none() {
        eprec = 6;
    }
    if exp < -4 || exp >= eprec {
        return e_form(digits, exp, upper);
    }
    // Fixed notation with exactly the significant digits.
    if dp <= 0 {
        format!("0.{}{}", "0".repeat((-dp) as usize), digits)
    } else if dp >= nd {
        format!("{}{}", digits, "0".repeat((dp - nd) as usize))
    } else {
        format!("{}.{}", &digits[..dp as usize], &digits[dp as usize..])
    }
}

fn write_str(out: &mut Buf, s: &str, verb: char, spec: Spec, v: &Value) {
    // A precision truncates the string to that many characters before formatting.
    let s = match spec.prec {
        Some(p) => match s.char_indices().nth(p) {
            Some((at, _)) => &s[..at],
            None => s,
        },
        None => s,
    };
    match verb {
        'v' | 's' => pad(out, s, spec),
        'q' => {
            let mut q = Buf::new();
            if spec.sharp && !s.contains('`') && s.chars().all(|c| c == '\t' || !c.is_control()) {
                q.push('`');
                q.push_str(s);
                q.push('`');
            } else {
                quote(&mut q, s, spec.plus);
            }
            pad(out, q.as_str(), spec);
        }
        'x' | 'X' => {
            let mut h = Buf::new();
            for (i, b) in s.bytes().enumerate() {
                if spec.space && i > 0 {
                    h.push(' ');
                }
                if spec.sharp && (spec.space || i == 0) {
                    h.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                let _ = if verb == 'x' { write!(h, "{b:02x}") } else { write!(h, "{b:02X}") };
            }
            pad(out, h.as_str(), spec);
        }
        _ => bad_verb(out, verb, v),
    }
}

/// Go's `strconv.Quote` (or `QuoteToASCII` when `ascii`).
pub(crate) fn quote(out: &mut Buf, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push_str("\\\"");
        } else {
            quote_char(out, c, ascii);
        }
    }
    out.push('"');
}

fn quote_char(out: &mut Buf, c: char, ascii: bool) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
        c if !ascii && !c.is_control() && c != '\u{FFFD}' && !is_unprintable(c) => out.push(c),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// Runes Go's `unicode.IsPrint` rejects beyond control characters: format characters and
/// separators other than the ASCII space (an approximation of the full Unicode tables).
fn is_unprintable(c: char) -> bool {
    matches!(c as u32, 0xAD | 0x2028 | 0x2029 | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0xFEFF)
        || (c.is_whitespace() && c != ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printf(format: &str, args: &[Value]) -> String {
        let mut out = Buf::new();
        sprintf(&mut out, format, args);
        out.as_str().to_owned()
    }

    #[test]
    fn floats_print_as_go_prints_them() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (100000.0, "100000"),
            (1_000_000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (3.0e21, "3e+21"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (f, want) in cases {
            let mut out = Buf::new();
            print_action(&mut out, &Value::Float(f));
            assert_eq!(out.as_str(), want, "{f}");
        }
    }

    #[test]
    fn printf_verbs_match_go() {
        let s = Value::string("hi");
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("%d|%5d|%-5d|%05d", vec![Value::Int(42); 4], "42|   42|42   |00042"),
            ("%x %X %o %b %#x", vec![Value::Int(255); 5], "ff FF 377 11111111 0xff"),
            ("%s|%q|%x|%8s|%-4s|", vec![s.clone(); 5], "hi|\"hi\"|6869|      hi|hi  |"),
            ("%.2f %f %e %g", vec![Value::Float(1.23456); 4], "1.23 1.234560 1.234560e+00 1.23456"),
            ("%t %v", vec![Value::Bool(true), Value::Nil], "true <nil>"),
            ("%d", vec![s.clone()], "%!d(string=hi)"),
            ("%d %d", vec![Value::Int(1)], "1 %!d(MISSING)"),
            ("%d", vec![Value::Int(1), s.clone()], "1%!(EXTRA string=hi)"),
            ("100%%", vec![], "100%"),
            (
                "%+d % d %+.1e",
                vec![Value::Int(5), Value::Int(5), Value::Float(12345.0)],
                "+5  5 +1.2e+04",
            ),
            ("%6.2f|%-8.3s|", vec![Value::Float(2.0), s.clone()], "  2.00|hi      |"),
            ("%s", vec![Value::Nil], "%!s(<nil>)"),
            ("%c%q", vec![Value::Int(65), Value::Int(66)], "A'B'"),
        ];
        for (format, args, want) in cases {
            assert_eq!(printf(format, &args), want, "{format}");
        }
    }

    #[test]
    fn quote_escapes_like_strconv_quote() {
        let mut out = Buf::new();
        quote(&mut out, "a\"b\\c\n\t\x01é", false);
        assert_eq!(out.as_str(), r#""a\"b\\c\n\t\x01é""#);
    }

    #[test]
    fn sprint_puts_spaces_only_between_non_strings() {
        let mut out = Buf::new();
        sprint(&mut out, &[Value::Int(1), Value::Int(2), Value::string("a"), Value::Int(3)]);
        assert_eq!(out.as_str(), "1 2a3");
    }
}
