//! Help for `?help=1`, built from path declarations in the shapes of OpenBao's `sdk/framework`
//! templates: one path's help (the request, the matching route, its synopsis, its parameters
//! in name order with their types) and a backend's root help (every route with its synopsis).
//!
//! Guarantees: the text names only what the declarations say (patterns, synopses, fields), never
//! a stored value, so help can be served to any live token, as Vault serves it. It does *not*
//! build the OpenAPI part of a help answer; [`super::openapi`] does, from the same [`Spec`]s.

use super::field::Kind;
use super::spec::Spec;

/// What a help request answers: the text, and the paths its OpenAPI part describes.
#[derive(Debug, Clone)]
pub struct Help {
    pub text: String,
    pub specs: Vec<Spec>,
}

/// Vault's name of a field type in help text.
fn type_name(k: Kind) -> &'static str {
    match k {
        Kind::Str => "string",
        Kind::Int => "int",
        Kind::Bool => "bool",
        Kind::Duration => "duration (sec)",
        Kind::CommaList | Kind::StrList | Kind::IntList => "slice",
        Kind::KvPairs => "keypair",
        Kind::Map => "map",
    }
}

/// Every line of `text` indented by `n` spaces.
fn indent(n: usize, text: &str) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}

/// The help of one path, for a request to `request` (relative to the mount).
pub(crate) fn path_help(request: &str, s: &Spec) -> String {
    let mut h = format!("Request:        {request}\nMatching Route: {}\n\n", s.pattern);
    h.push_str(non_empty(s.synopsis, "<no synopsis>"));
    h.push_str("\n\n");
    let mut fields = s.fields.clone();
    fields.sort_by_key(|f| f.name);
    fields.dedup_by_key(|f| f.name);
    if !fields.is_empty() {
        h.push_str("## PARAMETERS\n");
        for f in fields {
            h.push_str(&format!("\n{} ({})\n\n", indent(4, f.name), type_name(f.kind)));
            let mut d = non_empty(f.description, "<no description>").to_owned();
            if f.required {
                d.push_str(" Required.");
            }
            if let Some(v) = f.default {
                d.push_str(&format!(" Default: {}.", v.to_value()));
            }
            h.push_str(&indent(8, &d));
            h.push('\n');
        }
        h.push('\n');
    }
    let ops: Vec<&str> = s.operations.iter().map(|o| o.as_str()).collect();
    h.push_str(&format!("## DESCRIPTION\n\nOperations: {}.", ops.join(", ")));
    h
}

/// A backend's root help: its description (if it has one), then every route and its synopsis.
pub(crate) fn root_help(description: &str, specs: &[Spec]) -> String {
    let mut h = String::new();
    if !description.is_empty() {
        h.push_str(&format!("## DESCRIPTION\n\n{description}\n\n"));
    }
    h.push_str(
        "## PATHS\n\nThe following paths are supported by this backend. To view help for\n\
         any of the paths below, use the help command with any route matching\n\
         the path pattern. Note that depending on the policy of your auth token,\n\
         you may or may not be able to access certain paths.\n",
    );
    let mut routes: Vec<&Spec> = specs.iter().collect();
    routes.sort_by_key(|s| s.pattern);
    for s in routes {
        h.push_str(&format!("\n{}\n{}\n", indent(4, s.pattern), indent(8, s.synopsis)));
    }
    h.trim_end().to_owned()
}

fn non_empty<'a>(s: &'a str, instead: &'a str) -> &'a str {
    if s.trim().is_empty() { instead } else { s.trim() }
}
