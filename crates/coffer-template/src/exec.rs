//! The executor: walks the tree with Go's `text/template` evaluation rules.
//!
//! Guarantees: evaluation order, truthiness, variable scoping, `and`/`or` short-circuiting,
//! argument type checks, missing-key handling and the printing of results follow Go 1.19+ for
//! the supported subset; output is written into one wiped buffer; an error names the template
//! position and the node, never a value. Values are shared, not copied, as they flow between
//! actions. Nesting is bounded by the parser, so recursion here is bounded too.

use crate::Context;
use crate::buf::Buf;
use crate::error::{Error, line_col};
use crate::funcs::{self, Func, Ty};
use crate::gofmt;
use crate::parse::{Arg, Branch, Cmd, Node, Num, Pipe};
use crate::value::Value;

type R<T> = Result<T, Error>;

/// What a walked list asks of the enclosing `range`.
#[derive(PartialEq, Eq)]
enum Flow {
    Next,
    Break,
    Continue,
}

pub(crate) struct Exec<'t, C: Context + ?Sized> {
    pub(crate) name: &'t str,
    pub(crate) src: &'t str,
    pub(crate) missing_key_error: bool,
    pub(crate) ctx: &'t mut C,
    pub(crate) vars: Vec<Var>,
    pub(crate) out: Buf,
    /// Whether dot is an element of a list or map: Go then holds it as an `interface{}`, which
    /// its error messages name as the type.
    pub(crate) dot_iface: bool,
}

/// A variable. `iface` as for dot: set for a `range` element variable.
pub(crate) struct Var {
    pub(crate) name: String,
    pub(crate) value: Value,
    pub(crate) iface: bool,
}

impl<C: Context + ?Sized> Exec<'_, C> {
    fn fail(&self, pos: usize, node: String, message: impl Into<String>) -> Error {
        let (line, col) = line_col(self.src, pos);
        // Go shortens the node to 20 bytes.
        let node = match node.char_indices().nth(20) {
            Some((at, _)) => format!("{}...", &node[..at]),
            None => node,
        };
        Error::Render { name: self.name.to_owned(), line, col, node, message: message.into() }
    }

    fn fail_at(&self, arg: &Arg, message: impl Into<String>) -> Error {
        self.fail(arg.pos(), arg.describe(), message)
    }

    pub(crate) fn run(&mut self, nodes: &[Node], dot: &Value) -> R<()> {
        self.walk(nodes, dot).map(|_| ())
    }

    fn walk(&mut self, nodes: &[Node], dot: &Value) -> R<Flow> {
        for node in nodes {
            let flow = match node {
                Node::Text(t) => {
                    self.out.push_str(t);
                    Flow::Next
                }
                Node::Action(pipe) => {
                    let v = self.pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        gofmt::print_action(&mut self.out, &v);
                    }
                    Flow::Next
                }
                Node::If(b) => self.if_or_with(dot, b, false)?,
                Node::With(b) => self.if_or_with(dot, b, true)?,
                Node::Range(b) => self.range(dot, b)?,
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if flow != Flow::Next {
                return Ok(flow);
            }
        }
        Ok(Flow::Next)
    }

    fn if_or_with(&mut self, dot: &Value, b: &Branch, with: bool) -> R<Flow> {
        let mark = self.vars.len();
        let result = (|| {
            let v = self.pipeline(dot, &b.pipe)?;
            if v.truth() && with {
                let saved = std::mem::replace(&mut self.dot_iface, false);
                let flow = self.walk(&b.list, &v);
                self.dot_iface = saved;
                flow
            } else if v.truth() {
                self.walk(&b.list, dot)
            } else if let Some(else_list) = &b.else_list {
                self.walk(else_list, dot)
            } else {
                Ok(Flow::Next)
            }
        })();
        self.vars.truncate(mark);
        result
    }

    fn range(&mut self, dot: &Value, b: &Branch) -> R<Flow> {
        let outer = self.vars.len();
        let result = self.range_inner(dot, b);
        self.vars.truncate(outer);
        result
    }

    fn range_inner(&mut self, dot: &Value, b: &Branch) -> R<Flow> {
        let v = self.pipeline(dot, &b.pipe)?;
        let mark = self.vars.len();
        let decls = if b.pipe.is_assign { 0 } else { b.pipe.decl.len() };
        let one = |this: &mut Self, index: Value, elem: &Value| -> R<bool> {
            // The last declared variable gets the element, the first of two the index.
            if decls > 0 {
                this.vars[mark - 1].value = elem.clone();
                this.vars[mark - 1].iface = true;
            }
            if decls > 1 {
                this.vars[mark - 2].value = index;
            }
            let saved = std::mem::replace(&mut this.dot_iface, true);
            let flow = this.walk(&b.list, elem);
            this.dot_iface = saved;
            this.vars.truncate(mark);
            Ok(flow? == Flow::Break)
        };
        let ran = match &v {
            Value::List(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    if one(self, Value::Int(i64::try_from(i).unwrap_or(i64::MAX)), item)? {
                        break;
                    }
                }
                true
            }
            Value::Map(m) if !m.is_empty() => {
                for (k, item) in m.iter() {
                    if one(self, Value::string(k.as_str()), item)? {
                        break;
                    }
                }
                true
            }
            Value::List(_) | Value::Map(_) | Value::Missing | Value::Nil => false,
            other => {
                return Err(self.fail(
                    b.pipe.pos,
                    format!("range {}", b.pipe.describe()),
                    format!("range can't iterate over a value of type {}", other.type_name()),
                ));
            }
        };
        if !ran && let Some(else_list) = &b.else_list {
            return self.walk(else_list, dot);
        }
        Ok(Flow::Next)
    }

    fn pipeline(&mut self, dot: &Value, pipe: &Pipe) -> R<Value> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            let v = self.command(dot, cmd, value.take())?;
            // Go digs into interface{} values: a nil interface becomes "no value".
            value = Some(if matches!(v, Value::Nil) { Value::Missing } else { v });
        }
        let value = value.unwrap_or_default();
        for name in &pipe.decl {
            if pipe.is_assign {
                if let Some(slot) = self.vars.iter_mut().rev().find(|v| &v.name == name) {
                    slot.value = value.clone();
                    slot.iface = false;
                }
            } else {
                self.vars.push(Var { name: name.clone(), value: value.clone(), iface: false });
            }
        }
        Ok(value)
    }

    fn var(&self, name: &str) -> (Value, bool) {
        self.vars
            .iter()
            .rev()
            .find(|v| v.name == name)
            .map_or((Value::Missing, false), |v| (v.value.clone(), v.iface))
    }

    fn not_a_function(&self, cmd_args: &[Arg], fin: &Option<Value>) -> R<()> {
        if (cmd_args.len() > 1 || fin.is_some())
            && let Some(first) = cmd_args.first()
        {
            {
                return Err(self.fail_at(
                    first,
                    format!("can't give argument to non-function {}", first.describe()),
                ));
            }
        }
        Ok(())
    }

    fn command(&mut self, dot: &Value, cmd: &Cmd, fin: Option<Value>) -> R<Value> {
        let Some(first) = cmd.args.first() else { return Ok(Value::Missing) };
        let has_args = cmd.args.len() > 1 || fin.is_some();
        match first {
            Arg::Field(_, names) => {
                self.field_chain(dot.clone(), self.dot_iface, names, first, has_args)
            }
            Arg::Chain(_, node, names) => {
                let receiver = self.chain_receiver(dot, node, first)?;
                self.field_chain(receiver, false, names, first, has_args)
            }
            Arg::Variable(_, name, names) => {
                let (v, iface) = self.var(name);
                if names.is_empty() {
                    self.not_a_function(&cmd.args, &fin)?;
                    return Ok(v);
                }
                self.field_chain(v, iface, names, first, has_args)
            }
            Arg::Func(_, f) => self.function(dot, *f, first, &cmd.args[1..], fin),
            Arg::Pipe(p) => {
                self.not_a_function(&cmd.args, &fin)?;
                self.pipeline(dot, p)
            }
            Arg::Bool(_, b) => {
                self.not_a_function(&cmd.args, &fin)?;
                Ok(Value::Bool(*b))
            }
            Arg::Dot(_) => {
                self.not_a_function(&cmd.args, &fin)?;
                Ok(dot.clone())
            }
            Arg::Nil(_) => {
                self.not_a_function(&cmd.args, &fin)?;
                Err(self.fail_at(first, "nil is not a command"))
            }
            Arg::Number(_, n, _) => {
                self.not_a_function(&cmd.args, &fin)?;
                Ok(number(*n))
            }
            Arg::Str(_, s) => {
                self.not_a_function(&cmd.args, &fin)?;
                Ok(Value::string(s.as_str()))
            }
        }
    }

    fn chain_receiver(&mut self, dot: &Value, node: &Arg, at: &Arg) -> R<Value> {
        if matches!(node, Arg::Nil(_)) {
            return Err(self.fail_at(at, "indirection through explicit nil"));
        }
        let v = self.arg(dot, Ty::Any, node)?;
        // An untyped nil receiver behaves as no value.
        Ok(if matches!(v, Value::Nil) { Value::Missing } else { v })
    }

    /// `.a.b.c` on `receiver`; `has_args` when the last name is given arguments.
    fn field_chain(
        &self,
        receiver: Value,
        iface: bool,
        names: &[String],
        at: &Arg,
        has_args: bool,
    ) -> R<Value> {
        let mut v = receiver;
        let mut iface = iface;
        for (i, name) in names.iter().enumerate() {
            let from_map = matches!(v, Value::Map(_));
            v = self.field(&v, iface, name, at, has_args && i + 1 == names.len())?;
            // A map's elements are `interface{}` values; a struct's fields are typed.
            iface = from_map;
        }
        Ok(v)
    }

    fn field(
        &self,
        receiver: &Value,
        iface: bool,
        name: &str,
        at: &Arg,
        has_args: bool,
    ) -> R<Value> {
        match receiver {
            Value::Missing => {
                if self.missing_key_error {
                    return Err(self.fail_at(at, format!("nil data; no entry for key {name:?}")));
                }
                Ok(Value::Missing)
            }
            Value::Nil => {
                Err(self.fail_at(at, format!("nil pointer evaluating interface {{}}.{name}")))
            }
            Value::Map(m) => {
                if has_args {
                    return Err(
                        self.fail_at(at, format!("{name} is not a method but has arguments"))
                    );
                }
                match m.get(name) {
                    Some(v) => Ok(v.clone()),
                    None if self.missing_key_error => {
                        Err(self.fail_at(at, format!("map has no entry for key {name:?}")))
                    }
                    None => Ok(Value::Missing),
                }
            }
            Value::Secret(s) => match s.field(name) {
                Some(_) if has_args => Err(self.fail_at(
                    at,
                    format!("{name} has arguments but cannot be invoked as function"),
                )),
                Some(v) => Ok(v),
                None => Err(self.fail_at(
                    at,
                    format!("can't evaluate field {name} in type *dependency.Secret"),
                )),
            },
            other => Err(self.fail_at(
                at,
                format!(
                    "can't evaluate field {name} in type {}",
                    if iface { "interface {}" } else { other.type_name() }
                ),
            )),
        }
    }

    fn function(
        &mut self,
        dot: &Value,
        f: Func,
        at: &Arg,
        args: &[Arg],
        fin: Option<Value>,
    ) -> R<Value> {
        let (fixed, variadic) = f.signature();
        let num_in = args.len() + usize::from(fin.is_some());
        let name = f.name();
        if variadic.is_some() {
            if num_in < fixed.len() {
                return Err(self.fail_at(
                    at,
                    format!(
                        "wrong number of args for {name}: want at least {} got {}",
                        fixed.len(),
                        args.len()
                    ),
                ));
            }
        } else if num_in != fixed.len() {
            return Err(self.fail_at(
                at,
                format!("wrong number of args for {name}: want {} got {num_in}", fixed.len()),
            ));
        }
        let ty_of = |i: usize| fixed.get(i).copied().or(variadic).unwrap_or(Ty::Any);
        if matches!(f, Func::And | Func::Or) {
            let want = f == Func::Or;
            let mut v = Value::Missing;
            for arg in args {
                v = self.arg(dot, Ty::Reflect, arg)?;
                if v.truth() == want {
                    return Ok(v);
                }
            }
            if let Some(fin) = fin {
                v = self.validate(fin, Ty::Reflect, at)?;
            }
            return Ok(v);
        }
        let mut argv = Vec::with_capacity(num_in);
        for (i, arg) in args.iter().enumerate() {
            argv.push(self.arg(dot, ty_of(i), arg)?);
        }
        if let Some(fin) = fin {
            argv.push(self.validate(fin, ty_of(num_in - 1), at)?);
        }
        funcs::call(f, &argv, &mut *self.ctx)
            .map_err(|e| self.fail_at(at, format!("error calling {name}: {e}")))
    }

    /// An argument evaluated for a parameter of type `ty` (Go's `evalArg`).
    fn arg(&mut self, dot: &Value, ty: Ty, arg: &Arg) -> R<Value> {
        let v = match arg {
            Arg::Dot(_) => dot.clone(),
            Arg::Nil(_) => {
                return match ty {
                    Ty::Any => Ok(Value::Nil),
                    Ty::Reflect | Ty::Map | Ty::StrList => Ok(Value::Missing),
                    Ty::Str => {
                        Err(self.fail_at(arg, format!("cannot assign nil to {}", ty.go_name())))
                    }
                };
            }
            Arg::Field(_, names) => {
                self.field_chain(dot.clone(), self.dot_iface, names, arg, false)?
            }
            Arg::Variable(_, name, names) => {
                let (v, iface) = self.var(name);
                self.field_chain(v, iface, names, arg, false)?
            }
            Arg::Pipe(p) => self.pipeline(dot, p)?,
            Arg::Func(_, f) => self.function(dot, *f, arg, &[], None)?,
            Arg::Chain(_, node, names) => {
                let receiver = self.chain_receiver(dot, node, arg)?;
                self.field_chain(receiver, false, names, arg, false)?
            }
            Arg::Bool(_, b) => return self.literal(Value::Bool(*b), ty, arg),
            Arg::Number(_, n, _) => return self.literal(number(*n), ty, arg),
            Arg::Str(_, s) => return self.literal(Value::string(s.as_str()), ty, arg),
        };
        self.validate(v, ty, arg)
    }

    fn literal(&self, v: Value, ty: Ty, at: &Arg) -> R<Value> {
        match (ty, &v) {
            (Ty::Any | Ty::Reflect, _) | (Ty::Str, Value::String(_)) => Ok(v),
            (Ty::Str, _) => {
                Err(self.fail_at(at, format!("expected string; found {}", at.describe())))
            }
            (Ty::Map | Ty::StrList, _) => Err(self.fail_at(
                at,
                format!("can't handle {} for arg of type {}", at.describe(), ty.go_name()),
            )),
        }
    }

    /// Go's `validateType`: is `v` acceptable for a parameter of type `ty`?
    fn validate(&self, v: Value, ty: Ty, at: &Arg) -> R<Value> {
        let ok = match (&v, ty) {
            (Value::Missing, Ty::Any) => return Ok(Value::Nil),
            (Value::Missing, Ty::Reflect | Ty::Map | Ty::StrList) => return Ok(Value::Missing),
            (Value::Missing, Ty::Str) => {
                return Err(self.fail_at(at, format!("invalid value; expected {}", ty.go_name())));
            }
            (_, Ty::Any | Ty::Reflect) => true,
            (Value::String(_), Ty::Str) | (Value::Map(_), Ty::Map) => true,
            (_, Ty::StrList) => funcs::is_str_list(&v),
            _ => false,
        };
        if ok {
            Ok(v)
        } else {
            Err(self.fail_at(
                at,
                format!("wrong type for value; expected {}; got {}", ty.go_name(), v.type_name()),
            ))
        }
    }
}

fn number(n: Num) -> Value {
    match n {
        Num::Int(i) => Value::Int(i),
        Num::Float(f) => Value::Float(f),
    }
}
