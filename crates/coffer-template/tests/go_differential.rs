//! Differential test against Go: every case in `cases.json` is rendered by this crate and the
//! output compared with what Go's `text/template` (plus the consul-template functions, as
//! re-implemented in `go/harness.go`) printed for it, recorded in `golden.json`.
//!
//! The comparison always runs, from the checked-in `golden.json`. When a Go toolchain is on PATH
//! (and gopkg.in/yaml.v2 in `/usr/share/gocode`: Debian's `golang-go` and
//! `golang-gopkg-yaml.v2-dev`), `golden_json_is_what_go_prints` also re-runs the harness and
//! checks `golden.json` is current. After adding cases, regenerate it with
//! `COFFER_TEMPLATE_REGEN=1 cargo test -p coffer-template --test go_differential`.
//!
//! Outputs must match byte for byte. For errors, both sides must fail, and the message (without
//! Go's position prefix) must match, except for the differences listed in `KNOWN_DIFFERENCES`,
//! each with its reason; those are documented in docs/agent.md ("Templates").

#![allow(clippy::unwrap_used)] // reason: test code

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use coffer_template::{Context, Secret, Template, Value};
use serde_json::Value as Json;

const CASES: &str = include_str!("cases.json");
const GOLDEN: &str = include_str!("golden.json");

/// Cases where this crate deliberately differs from Go, and why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    ("arg to non-function", "string literals are elided from messages (they may be data)"),
    ("dot after literal", "string literals are elided from messages (they may be data)"),
    ("len of missing", "Go's message is an internal reflect panic"),
    ("kv1 and lease fields", ".Auth and .WrapInfo are not modelled: they print <no value>"),
    ("parseJSON bad", "the JSON parser's message differs"),
    ("unclosed action newline", "both fail; Go's streaming lexer meets the later error first"),
    ("colon alone", "both fail; Go's streaming lexer meets the later error first"),
    ("define unsupported", "define/template/block are not supported"),
    ("range string is error", "the message names the type, not the value (values may be secret)"),
    ("range json number is error", "the message names the type, not the value"),
    ("eq list", "the message names the type, not the values"),
    ("secret toYAML", "YAML: we double-quote every string that needs quoting; yaml.v2 varies"),
    ("toYAML nested", "YAML: quoting as above, and keys in code-point order (yaml.v2: k2 < k10)"),
    ("toYAML quoting", "YAML: we quote more strings than yaml.v2 (always valid, reads back equal)"),
];

struct Fixture {
    secrets: BTreeMap<String, Json>,
    env: BTreeMap<String, String>,
    files: BTreeMap<String, String>,
    data: Option<Json>,
}

impl Context for Fixture {
    fn data(&self) -> Value {
        self.data.clone().map_or(Value::Missing, Value::from)
    }

    fn secret(&mut self, path: &str, params: &[(&str, &str)]) -> Result<Secret, String> {
        if !params.is_empty() {
            let data: serde_json::Map<String, Json> =
                params.iter().map(|(k, v)| (k.to_string(), Json::from(*v))).collect();
            return Ok(Secret {
                lease_id: "write".into(),
                data: Value::from(Json::Object(data)),
                ..Secret::default()
            });
        }
        let f = self.secrets.get(path).ok_or("not found")?;
        Ok(Secret {
            lease_id: f["lease_id"].as_str().unwrap_or_default().into(),
            lease_duration: f["lease_duration"].as_i64().unwrap_or_default(),
            renewable: f["renewable"].as_bool().unwrap_or_default(),
            data: Value::from(f["data"].clone()),
            ..Secret::default()
        })
    }

    fn env(&mut self, name: &str) -> String {
        self.env.get(name).cloned().unwrap_or_default()
    }

    fn file(&mut self, path: &str) -> Result<String, String> {
        self.files.get(path).cloned().ok_or_else(|| "not found".to_owned())
    }
}

/// Go's error text without its `template: t:LINE[:COL]: [executing "t" at <...>: ]` prefix.
fn go_message(err: &str) -> &str {
    if let Some(i) = err.find(">: ")
        && err.contains(": executing \"t\" at <")
    {
        return &err[i + 3..];
    }
    let rest = err.strip_prefix("template: t:").unwrap_or(err);
    let after_line = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ':');
    after_line.trim_start()
}

fn render(suite: &Json, case: &Json) -> Result<String, coffer_template::Error> {
    let obj = |v: &Json| -> BTreeMap<String, Json> {
        v.as_object().map(|o| o.clone().into_iter().collect()).unwrap_or_default()
    };
    let strings = |v: &Json| -> BTreeMap<String, String> {
        obj(v).into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned())).collect()
    };
    let mut fixture = Fixture {
        secrets: obj(&suite["secrets"]),
        env: strings(&suite["env"]),
        files: strings(&suite["files"]),
        data: case.get("data").cloned(),
    };
    let t = Template::parse("t", case["tmpl"].as_str().unwrap())?
        .missing_key_error(case["missingkey"].as_bool().unwrap_or(false));
    t.render(&mut fixture).map(|s| s.to_string())
}

#[test]
fn renders_as_go_does() {
    let suite: Json = serde_json::from_str(CASES).unwrap();
    let golden: Vec<Json> = serde_json::from_str(GOLDEN).unwrap();
    let cases = suite["cases"].as_array().unwrap();
    assert_eq!(cases.len(), golden.len(), "golden.json is stale: regenerate it");
    let mut failures = Vec::new();
    for (case, want) in cases.iter().zip(&golden) {
        let name = case["name"].as_str().unwrap();
        assert_eq!(want["name"].as_str(), Some(name), "golden.json is stale: regenerate it");
        if KNOWN_DIFFERENCES.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let got = render(&suite, case);
        match (got, want.get("out").and_then(Json::as_str), want.get("err").and_then(Json::as_str))
        {
            (Ok(out), Some(w), _) if out == w => {}
            (Err(e), _, Some(w)) if e.message() == go_message(w) => {}
            (got, out, err) => failures.push(format!(
                "{name}:\n  tmpl: {}\n  go:   {}\n  rust: {}",
                case["tmpl"],
                out.map_or_else(
                    || format!("error {:?}", err.unwrap_or_default()),
                    |o| format!("{o:?}")
                ),
                match got {
                    Ok(o) => format!("{o:?}"),
                    Err(e) => format!("error {:?}", e.to_string()),
                }
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from Go:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn known_differences_still_fail_both_or_differ_only_as_documented() {
    // A listed case must still exist, so the list does not rot.
    let suite: Json = serde_json::from_str(CASES).unwrap();
    let names: Vec<&str> =
        suite["cases"].as_array().unwrap().iter().filter_map(|c| c["name"].as_str()).collect();
    for (name, _) in KNOWN_DIFFERENCES {
        assert!(names.contains(name), "known difference {name:?} has no case");
    }
}

#[test]
fn golden_json_is_what_go_prints() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let go = Command::new("go").arg("version").output();
    if go.is_err() || !Path::new("/usr/share/gocode/src/gopkg.in/yaml.v2").exists() {
        eprintln!(
            "skipped: no Go toolchain with gopkg.in/yaml.v2; golden.json checked as recorded"
        );
        return;
    }
    let out = Command::new("go")
        .args(["run", "harness.go"])
        .current_dir(dir.join("go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOFLAGS", "")
        .stdin(std::fs::File::open(dir.join("cases.json")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "harness failed: {}", String::from_utf8_lossy(&out.stderr));
    let fresh = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("COFFER_TEMPLATE_REGEN").is_some() {
        std::fs::write(dir.join("golden.json"), &fresh).unwrap();
        return;
    }
    let fresh: Json = serde_json::from_str(&fresh).unwrap();
    let recorded: Json = serde_json::from_str(GOLDEN).unwrap();
    assert!(fresh == recorded, "golden.json differs from Go's output: regenerate it");
}
