//! The functions a template may call: Go's builtins and the consul-template functions Vault Agent
//! templates use.
//!
//! Guarantees: each function has a Go signature (parameter types checked by the executor as Go's
//! `reflect` calls check them); a function's error message names what went wrong and, for
//! `secret` and `pkiCert`, the path, never an argument's value. The set is closed: a name not
//! listed here is a parse error. Not provided: `call`, `secrets`, `caRoot`, `caLeaf`, `key`,
//! `service` and the other Consul/Nomad functions, sprig.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use zeroize::Zeroizing;

use crate::Context;
use crate::buf::Buf;
use crate::encode;
use crate::gofmt;
use crate::value::{Value, text};

/// A parameter type, as Go's reflection sees the function's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// `interface{}`
    Any,
    /// `reflect.Value` (the builtins that inspect their argument)
    Reflect,
    /// `string`
    Str,
    /// `map[string]interface{}`
    Map,
    /// `[]string`
    StrList,
}

impl Ty {
    pub(crate) fn go_name(self) -> &'static str {
        match self {
            Ty::Any => "interface {}",
            Ty::Reflect => "reflect.Value",
            Ty::Str => "string",
            Ty::Map => "map[string]interface {}",
            Ty::StrList => "[]string",
        }
    }
}

macro_rules! funcs {
    ($($variant:ident $name:literal [$($fixed:ident),*] $(... $var:ident)?;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Func { $($variant,)* }

        impl Func {
            pub(crate) fn lookup(name: &str) -> Option<Func> {
                match name { $($name => Some(Func::$variant),)* _ => None }
            }

            pub(crate) fn name(self) -> &'static str {
                match self { $(Func::$variant => $name,)* }
            }

            /// Fixed parameters and the variadic one, if any.
            pub(crate) fn signature(self) -> (&'static [Ty], Option<Ty>) {
                match self { $(Func::$variant => (&[$(Ty::$fixed),*], funcs!(@var $($var)?)),)* }
            }
        }
    };
    (@var) => { None };
    (@var $var:ident) => { Some(Ty::$var) };
}

funcs! {
    And "and" [Reflect] ...Reflect;
    Or "or" [Reflect] ...Reflect;
    Not "not" [Reflect];
    Eq "eq" [Reflect] ...Reflect;
    Ne "ne" [Reflect, Reflect];
    Lt "lt" [Reflect, Reflect];
    Le "le" [Reflect, Reflect];
    Gt "gt" [Reflect, Reflect];
    Ge "ge" [Reflect, Reflect];
    Len "len" [Reflect];
    Index "index" [Reflect] ...Reflect;
    Slice "slice" [Reflect] ...Reflect;
    Print "print" [] ...Any;
    Printf "printf" [Str] ...Any;
    Println "println" [] ...Any;
    Html "html" [] ...Any;
    Js "js" [] ...Any;
    Urlquery "urlquery" [] ...Any;
    Secret "secret" [] ...Str;
    PkiCert "pkiCert" [] ...Str;
    Env "env" [Str];
    File "file" [Str];
    Base64Encode "base64Encode" [Str];
    Base64Decode "base64Decode" [Str];
    Base64UrlEncode "base64URLEncode" [Str];
    Base64UrlDecode "base64URLDecode" [Str];
    ToJson "toJSON" [Any];
    ToJsonPretty "toJSONPretty" [Map];
    ToYaml "toYAML" [Map];
    ToLower "toLower" [Str];
    ToUpper "toUpper" [Str];
    TrimSpace "trimSpace" [Str];
    Split "split" [Str, Str];
    Join "join" [Str, StrList];
    Contains "contains" [Any, Any];
    ReplaceAll "replaceAll" [Str, Str, Str];
    ParseJson "parseJSON" [Str];
}

/// Go's basic kinds for comparison; `None` for values that are not comparable by `lt`.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
}

fn kind(v: &Value) -> Option<Kind> {
    match v {
        Value::Bool(_) => Some(Kind::Bool),
        Value::Int(_) => Some(Kind::Int),
        Value::Float(_) => Some(Kind::Float),
        Value::String(_) | Value::Number(_) => Some(Kind::Str),
        _ => None,
    }
}

fn is_nil(v: &Value) -> bool {
    matches!(v, Value::Missing | Value::Nil)
}

const BAD_COMPARISON_TYPE: &str = "invalid type for comparison";
const BAD_COMPARISON: &str = "incompatible types for comparison";

/// Go's `eq`: true if `a` equals any of `rest`.
fn eq(a: &Value, rest: &[Value]) -> Result<bool, String> {
    if rest.is_empty() {
        return Err("missing argument for comparison".to_owned());
    }
    let k1 = kind(a);
    for b in rest {
        let k2 = kind(b);
        let truth = if k1 != k2 {
            if !is_nil(a) && !is_nil(b) {
                return Err(BAD_COMPARISON.to_owned());
            }
            false
        } else {
            match (a, b) {
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Int(x), Value::Int(y)) => x == y,
                (Value::Float(x), Value::Float(y)) => x == y,
                _ if k1 == Some(Kind::Str) => a.as_str() == b.as_str(),
                _ if is_nil(a) || is_nil(b) => is_nil(a) == is_nil(b),
                (Value::Secret(x), Value::Secret(y)) => Arc::ptr_eq(x, y),
                _ => return Err(format!("non-comparable type {}", b.type_name())),
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Go's `lt`.
fn lt(a: &Value, b: &Value) -> Result<bool, String> {
    let (Some(k1), Some(k2)) = (kind(a), kind(b)) else {
        return Err(BAD_COMPARISON_TYPE.to_owned());
    };
    if k1 != k2 {
        return Err(BAD_COMPARISON.to_owned());
    }
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        _ if k1 == Kind::Str => a.as_str() < b.as_str(),
        _ => return Err(BAD_COMPARISON_TYPE.to_owned()),
    })
}

fn le(a: &Value, b: &Value) -> Result<bool, String> {
    Ok(lt(a, b)? || eq(a, std::slice::from_ref(b))?)
}

fn length(v: &Value) -> Result<Value, String> {
    let n = match v {
        Value::String(s) | Value::Number(s) => s.len(),
        Value::List(l) => l.len(),
        Value::Map(m) => m.len(),
        Value::Nil => return Err("len of nil pointer".to_owned()),
        Value::Missing => return Err("len of untyped nil".to_owned()),
        Value::Secret(_) => return Err("len of type dependency.Secret".to_owned()),
        other => return Err(format!("len of type {}", other.type_name())),
    };
    Ok(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)))
}

/// An index into a sequence of `len` elements (Go's `indexArg`; `len` itself is allowed, for
/// slicing).
fn index_arg(index: &Value, len: usize) -> Result<usize, String> {
    let x = match index {
        Value::Int(x) => *x,
        Value::Missing | Value::Nil => return Err("cannot index slice/array with nil".to_owned()),
        other => return Err(format!("cannot index slice/array with type {}", other.type_name())),
    };
    match usize::try_from(x) {
        Ok(i) if i <= len => Ok(i),
        _ => Err(format!("index out of range: {x}")),
    }
}

fn index(item: &Value, indexes: &[Value]) -> Result<Value, String> {
    if is_nil(item) {
        return Err("index of untyped nil".to_owned());
    }
    let mut item = item.clone();
    for ix in indexes {
        item = match &item {
            Value::Nil => return Err("index of nil pointer".to_owned()),
            Value::List(l) => {
                let i = index_arg(ix, l.len())?;
                l.get(i).cloned().ok_or("reflect: slice index out of range")?
            }
            Value::String(s) | Value::Number(s) => {
                let i = index_arg(ix, s.len())?;
                // Indexing a Go string gives a byte (uint8).
                Value::Int(i64::from(
                    *s.as_bytes().get(i).ok_or_else(|| format!("index out of range: {i}"))?,
                ))
            }
            Value::Map(m) => match ix {
                Value::String(k) => m.get(k.as_str()).cloned().unwrap_or(Value::Nil),
                Value::Missing | Value::Nil => {
                    return Err("value is nil; should be of type string".to_owned());
                }
                other => {
                    return Err(format!("value has type {}; should be string", other.type_name()));
                }
            },
            Value::Secret(_) => return Err("can't index item of type dependency.Secret".to_owned()),
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

fn slice(item: &Value, indexes: &[Value]) -> Result<Value, String> {
    if is_nil(item) {
        return Err("slice of untyped nil".to_owned());
    }
    if indexes.len() > 3 {
        return Err(format!("too many slice indexes: {}", indexes.len()));
    }
    let len = match item {
        Value::String(s) | Value::Number(s) => {
            if indexes.len() == 3 {
                return Err("cannot 3-index slice a string".to_owned());
            }
            s.len()
        }
        Value::List(l) => l.len(),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    let mut idx = [0, len, len];
    for (i, ix) in indexes.iter().enumerate() {
        idx[i] = index_arg(ix, len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if indexes.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    let (lo, hi) = (idx[0], idx[1]);
    Ok(match item {
        Value::String(s) | Value::Number(s) => {
            let part = s.get(lo..hi).ok_or("slice would split a UTF-8 character")?;
            let t = text(part.to_owned());
            if matches!(item, Value::Number(_)) { Value::Number(t) } else { Value::String(t) }
        }
        Value::List(l) => Value::List(Arc::new(l[lo..hi].to_vec())),
        _ => Value::Missing,
    })
}

/// The string the escaping builtins work on: the one string argument, or `fmt.Sprint` of all.
fn sprint_args(args: &[Value]) -> Buf {
    let mut b = Buf::new();
    match args {
        [v] if matches!(v, Value::String(_)) => b.push_str(v.as_str().unwrap_or_default()),
        _ => gofmt::sprint(&mut b, args),
    }
    b
}

/// `s` with each character `replace` maps to `Some` replaced.
fn escape(s: &str, replace: impl Fn(char) -> Option<String>) -> Buf {
    let mut b = Buf::new();
    for c in s.chars() {
        match replace(c) {
            Some(r) => b.push_str(&r),
            None => b.push(c),
        }
    }
    b
}

/// Go's `template.HTMLEscapeString`.
fn html_escape(s: &str) -> Buf {
    escape(s, |c| {
        Some(match c {
            '\0' => "\u{FFFD}".to_owned(),
            '"' => "&#34;".to_owned(),
            '\'' => "&#39;".to_owned(),
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            _ => return None,
        })
    })
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> Buf {
    escape(s, |c| {
        Some(match c {
            '\\' => "\\\\".to_owned(),
            '\'' => "\\'".to_owned(),
            '"' => "\\\"".to_owned(),
            '<' | '>' | '&' | '=' => format!("\\u{:04X}", c as u32),
            c if c.is_control() => format!("\\u{:04X}", c as u32),
            _ => return None,
        })
    })
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> Buf {
    let mut b = Buf::new();
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                b.push(byte as char)
            }
            b' ' => b.push('+'),
            _ => b.push_str(&format!("%{byte:02X}")),
        }
    }
    b
}

fn string_value(s: String) -> Value {
    Value::String(text(s))
}

fn arg_str(args: &[Value], i: usize) -> &str {
    args.get(i).and_then(Value::as_str).unwrap_or_default()
}

fn decode(engine: &base64::engine::GeneralPurpose, name: &str, s: &str) -> Result<Value, String> {
    let bytes = Zeroizing::new(engine.decode(s).map_err(|e| {
        // Go's wording: the offset of the first byte it could not use.
        let at = match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol { offset: at, .. } => at,
            base64::DecodeError::InvalidLength(len) => len,
            base64::DecodeError::InvalidPadding => s.len(),
        };
        format!("{name}: illegal base64 data at input byte {at}")
    })?);
    match std::str::from_utf8(&bytes) {
        Ok(t) => Ok(string_value(t.to_owned())),
        Err(_) => {
            Err(format!("{name}: the decoded data is not UTF-8 text, which a template cannot hold"))
        }
    }
}

/// Go's `strings.Split`.
fn split(sep: &str, s: &str) -> Value {
    let parts: Vec<Value> = if sep.is_empty() {
        s.chars().map(|c| string_value(c.to_string())).collect()
    } else {
        s.split(sep).map(|p| string_value(p.to_owned())).collect()
    };
    Value::List(Arc::new(parts))
}

/// consul-template's `contains`/`in`: membership in a list (same type and value), or a
/// substring of a string.
fn contains(needle: &Value, haystack: &Value) -> bool {
    let same = |a: &Value, b: &Value| match (a, b) {
        (Value::String(x), Value::String(y)) | (Value::Number(x), Value::Number(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    };
    match (haystack, needle) {
        (Value::List(l), _) => l.iter().any(|item| same(item, needle)),
        (Value::String(h), Value::String(n)) => h.contains(n.as_str()),
        _ => false,
    }
}

/// JSON parsed as Go's `json.Unmarshal` into `interface{}` does: numbers become float64.
fn from_go_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::Array(a) => {
            Value::List(Arc::new(a.into_iter().map(from_go_json).collect()))
        }
        serde_json::Value::Object(o) => {
            Value::Map(Arc::new(o.into_iter().map(|(k, v)| (k, from_go_json(v))).collect()))
        }
        other => Value::from(other),
    }
}

/// Calls `f` (not `and`/`or`, which the executor evaluates lazily) with checked arguments.
pub(crate) fn call<C: Context + ?Sized>(
    f: Func,
    args: &[Value],
    ctx: &mut C,
) -> Result<Value, String> {
    let first = || args.first().cloned().unwrap_or_default();
    let buf = |b: Buf| Value::String(b.into_text());
    Ok(match f {
        Func::And | Func::Or => return Err("and/or are evaluated by the executor".to_owned()),
        Func::Not => Value::Bool(!first().truth()),
        Func::Eq => Value::Bool(eq(&first(), &args[1.min(args.len())..])?),
        Func::Ne => Value::Bool(!eq(&first(), &args[1.min(args.len())..])?),
        Func::Lt => Value::Bool(lt(&args[0], &args[1])?),
        Func::Le => Value::Bool(le(&args[0], &args[1])?),
        Func::Gt => Value::Bool(!le(&args[0], &args[1])?),
        Func::Ge => Value::Bool(!lt(&args[0], &args[1])?),
        Func::Len => length(&first())?,
        Func::Index => index(&first(), &args[1.min(args.len())..])?,
        Func::Slice => slice(&first(), &args[1.min(args.len())..])?,
        Func::Print => {
            let mut b = Buf::new();
            gofmt::sprint(&mut b, args);
            buf(b)
        }
        Func::Println => {
            let mut b = Buf::new();
            gofmt::sprintln(&mut b, args);
            buf(b)
        }
        Func::Printf => {
            let mut b = Buf::new();
            gofmt::sprintf(&mut b, arg_str(args, 0), &args[1.min(args.len())..]);
            buf(b)
        }
        Func::Html => buf(html_escape(sprint_args(args).as_str())),
        Func::Js => buf(js_escape(sprint_args(args).as_str())),
        Func::Urlquery => buf(query_escape(sprint_args(args).as_str())),
        Func::Secret => return secret(args, ctx),
        Func::PkiCert => return pki_cert(args, ctx),
        Func::Env => string_value(ctx.env(arg_str(args, 0))),
        Func::File => {
            let path = arg_str(args, 0);
            Value::String(text(ctx.file(path).map_err(|e| format!("file {path:?}: {e}"))?))
        }
        Func::Base64Encode => string_value(STANDARD.encode(arg_str(args, 0))),
        Func::Base64Decode => decode(&STANDARD, "base64Decode", arg_str(args, 0))?,
        Func::Base64UrlEncode => string_value(URL_SAFE.encode(arg_str(args, 0))),
        Func::Base64UrlDecode => decode(&URL_SAFE, "base64URLDecode", arg_str(args, 0))?,
        Func::ToJson => buf(encode::to_json(&first(), false).map_err(|e| format!("toJSON: {e}"))?),
        Func::ToJsonPretty => {
            buf(encode::to_json(&first(), true).map_err(|e| format!("toJSONPretty: {e}"))?)
        }
        Func::ToYaml => buf(encode::to_yaml(&first())),
        Func::ToLower => string_value(arg_str(args, 0).to_lowercase()),
        Func::ToUpper => string_value(arg_str(args, 0).to_uppercase()),
        Func::TrimSpace => string_value(arg_str(args, 0).trim().to_owned()),
        Func::Split => split(arg_str(args, 0), arg_str(args, 1)),
        Func::Join => {
            let mut b = Buf::new();
            if let Some(Value::List(items)) = args.get(1) {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        b.push_str(arg_str(args, 0));
                    }
                    b.push_str(item.as_str().unwrap_or_default());
                }
            }
            buf(b)
        }
        Func::Contains => Value::Bool(contains(&first(), args.get(1).unwrap_or(&Value::Missing))),
        Func::ReplaceAll => {
            string_value(arg_str(args, 2).replace(arg_str(args, 0), arg_str(args, 1)))
        }
        Func::ParseJson => {
            let s = arg_str(args, 0);
            if s.is_empty() {
                Value::Map(Arc::default())
            } else {
                let v: serde_json::Value =
                    serde_json::from_str(s).map_err(|e| format!("parseJSON: {e}"))?;
                from_go_json(v)
            }
        }
    })
}

/// `secret "path"` reads; `secret "path" "k=v" ...` writes with data.
/// A path and its `key=value` parameters.
type PathParams<'a> = (&'a str, Vec<(&'a str, &'a str)>);

/// The path and the `key=value` parameters of `secret` and `pkiCert`.
fn path_and_params(args: &[Value]) -> Result<PathParams<'_>, String> {
    let Some(path) = args.first().and_then(Value::as_str) else {
        return Err("missing path".to_owned());
    };
    let mut params: Vec<(&str, &str)> = Vec::with_capacity(args.len().saturating_sub(1));
    for (i, a) in args.iter().enumerate().skip(1) {
        match a.as_str().and_then(|s| s.split_once('=')) {
            Some(kv) => params.push(kv),
            None => return Err(format!("{path}: argument {} is not of the form key=value", i + 1)),
        }
    }
    Ok((path, params))
}

fn secret<C: Context + ?Sized>(args: &[Value], ctx: &mut C) -> Result<Value, String> {
    let (path, params) = path_and_params(args)?;
    let s = ctx.secret(path, &params).map_err(|e| format!("{path}: {e}"))?;
    Ok(Value::from(s))
}

fn pki_cert<C: Context + ?Sized>(args: &[Value], ctx: &mut C) -> Result<Value, String> {
    let (path, params) = path_and_params(args)?;
    ctx.pki_cert(path, &params).map_err(|e| format!("{path}: {e}"))
}

/// The parameter types `join` and friends accept: `[]string` is a list of strings.
pub(crate) fn is_str_list(v: &Value) -> bool {
    matches!(v, Value::List(l) if l.iter().all(|x| matches!(x, Value::String(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_follow_go_kinds() {
        let s = |x: &str| Value::string(x);
        assert_eq!(eq(&Value::Int(1), &[Value::Int(2), Value::Int(1)]), Ok(true));
        assert_eq!(eq(&s("a"), &[s("a")]), Ok(true));
        assert_eq!(eq(&Value::Missing, &[s("a")]), Ok(false));
        assert!(eq(&Value::Int(1), &[Value::Float(1.0)]).is_err());
        assert!(lt(&Value::Bool(true), &Value::Bool(false)).is_err());
        assert_eq!(lt(&s("10"), &s("9")), Ok(true));
        assert_eq!(le(&Value::Int(2), &Value::Int(2)), Ok(true));
    }

    #[test]
    fn index_and_slice_follow_go() {
        let list = Value::from(serde_json::json!(["a", "b", "c"]));
        assert!(
            matches!(index(&list, &[Value::Int(1)]), Ok(Value::String(s)) if s.as_str() == "b")
        );
        assert_eq!(index(&list, &[Value::Int(5)]).err().as_deref(), Some("index out of range: 5"));
        let sliced = slice(&list, &[Value::Int(1)]).unwrap_or_default();
        assert!(matches!(sliced, Value::List(l) if l.len() == 2));
        let map = Value::from(serde_json::json!({"k": 1}));
        assert!(matches!(index(&map, &[Value::string("nope")]), Ok(Value::Nil)));
    }

    #[test]
    fn escapers_match_go() {
        assert_eq!(html_escape("<a href='x'>&\"").as_str(), "&lt;a href=&#39;x&#39;&gt;&amp;&#34;");
        assert_eq!(js_escape("a'b<\n").as_str(), "a\\'b\\u003C\\u000A");
        assert_eq!(query_escape("a b&c=d/é").as_str(), "a+b%26c%3Dd%2F%C3%A9");
    }
}
