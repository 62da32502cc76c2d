//! Vault Agent's template language for `coffer agent`: Go's `text/template` with the
//! consul-template functions agent templates use (`secret`, `pkiCert`, `env`, `file`, `base64Encode`,
//! `toJSON`, `toYAML`, ...). The supported set, and where it differs from Vault Agent, is in
//! docs/agent.md ("Templates").
//!
//! ```
//! use coffer_template::{Context, Secret, Template, Value};
//!
//! struct Agent;
//! impl Context for Agent {
//!     fn secret(&mut self, path: &str, _params: &[(&str, &str)]) -> Result<Secret, String> {
//!         let data = serde_json::json!({"data": {"password": "s3cret"}});
//!         Ok(Secret { data: Value::from(data), ..Secret::default() })
//!     }
//! }
//!
//! let t = Template::parse("db.tmpl", r#"{{ with secret "secret/data/db" }}{{ .Data.data.password }}{{ end }}"#)?;
//! assert_eq!(t.render(&mut Agent)?.as_str(), "s3cret");
//! # Ok::<(), coffer_template::Error>(())
//! ```
//!
//! # Why this crate and not a Go-template crate
//! We looked at the Rust ports. `gtmpl` has had no release since 2021 and documents `printf` as
//! unstable. `gotmpl` (2026, one maintainer, weeks old, API still moving) is careful about Go
//! parity, but its functions are `Arc<dyn Fn(&[Value]) + Send + Sync + 'static>` registered
//! before parsing, so `secret` could not borrow the agent's per-render state (its client, token
//! and lease bookkeeping) without a global or a lock; its values hold strings in `Arc<str>`,
//! which cannot be wiped, and data would be copied in from JSON. The subset Vault Agent uses is
//! small enough to own: about 3,000 lines here, with outputs checked against Go itself
//! (`tests/go_differential.rs`).
//!
//! # Guarantees
//! - Go semantics for the supported subset: parse errors where Go has them (including unknown
//!   functions, with name and position), Go's truthiness, scoping, missing-key behaviour and
//!   `fmt` printing; JSON numbers in secret data behave as Go's `json.Number`, as in Vault Agent.
//! - Secret hygiene: a render writes into one buffer that is wiped when it grows and when it is
//!   dropped, and returns it as `Zeroizing<String>`; template values keep strings in wiped,
//!   shared buffers, so walking data does not copy it; errors never contain data values (a
//!   `secret` error names the path and the provider's message).
//! - Never panics on any template source (property-tested); parsing is bounded in depth.
//!
//! # Not guaranteed
//! - Binary data: Go strings may hold any bytes, Rust strings only UTF-8, so `base64Decode` of
//!   non-UTF-8 data is an error.
//! - Number-to-text conversions inside `printf` use short-lived unwiped buffers.

#![forbid(unsafe_code)]

mod buf;
mod encode;
mod error;
mod exec;
mod funcs;
mod gofmt;
mod lex;
mod parse;
mod value;

use zeroize::Zeroizing;

pub use error::Error;
pub use value::{Secret, Text, Value};

/// What a render needs from its caller: the secrets, the environment and files, and the data
/// `.` starts as. One `Context` serves one render; calls happen in template order, lazily (an
/// untaken `{{ if }}` branch calls nothing).
pub trait Context {
    /// The root data (`.` and `$`). Vault Agent renders with no data, so `{{ .x }}` prints
    /// `<no value>`; that is the default.
    fn data(&self) -> Value {
        Value::Missing
    }

    /// `{{ secret "path" }}` reads; `{{ secret "path" "k=v" ... }}` writes `params` and returns the
    /// response. An `Err` message ends the render and is shown with the path: it must not
    /// contain secret values.
    fn secret(&mut self, path: &str, params: &[(&str, &str)]) -> Result<Secret, String>;

    /// `{{ pkiCert "pki/issue/role" "common_name=..." }}`: a certificate issued at `path` with
    /// `params`, as consul-template's `pkiCert` gives it: a map with `Cert`, `Key`, `CA` (PEM
    /// strings) and `CAChain` (a list of PEM strings). The caller decides when to issue a new
    /// one; an `Err` message is shown with the path and must not contain secret values.
    fn pki_cert(&mut self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let _ = (path, params);
        Err("pkiCert is not available here".to_owned())
    }

    /// `{{ env "NAME" }}`: the variable's value, or `""` when unset (as consul-template).
    fn env(&mut self, name: &str) -> String {
        let _ = name;
        String::new()
    }

    /// `{{ file "path" }}`: the file's contents. Refused unless the caller allows it.
    fn file(&mut self, path: &str) -> Result<String, String> {
        let _ = path;
        Err("reading files is not allowed here".to_owned())
    }
}

/// A parsed template, ready to render any number of times. Holds no data values.
#[derive(Debug)]
pub struct Template {
    name: String,
    src: String,
    nodes: Vec<parse::Node>,
    missing_key_error: bool,
}

impl Template {
    /// Parses `source`; `name` is used in error messages (`template: name:line:col: ...`).
    pub fn parse(name: &str, source: &str) -> Result<Template, Error> {
        let items = lex::lex(name, source)?;
        let nodes = parse::parse(name, source, items)?;
        Ok(Template {
            name: name.to_owned(),
            src: source.to_owned(),
            nodes,
            missing_key_error: false,
        })
    }

    /// Go's `missingkey=error` (Vault Agent's `error_on_missing_key`): a missing map key fails
    /// the render instead of printing `<no value>`.
    pub fn missing_key_error(mut self, on: bool) -> Self {
        self.missing_key_error = on;
        self
    }

    /// The name given to [`Template::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders the template; the output is wiped when dropped.
    pub fn render<C: Context + ?Sized>(&self, ctx: &mut C) -> Result<Zeroizing<String>, Error> {
        let root = ctx.data();
        let mut exec = exec::Exec {
            name: &self.name,
            src: &self.src,
            missing_key_error: self.missing_key_error,
            ctx,
            vars: vec![exec::Var { name: "$".to_owned(), value: root.clone(), iface: false }],
            out: buf::Buf::new(),
            dot_iface: false,
        };
        exec.run(&self.nodes, &root)?;
        Ok(exec.out.into_zeroizing())
    }
}
