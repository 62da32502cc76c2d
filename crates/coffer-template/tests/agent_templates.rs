//! Vault Agent template examples, error reporting, secret hygiene, and a property test that
//! no input makes the parser or the renderer panic.

#![allow(clippy::unwrap_used)] // reason: test code

use coffer_template::{Context, Error, Secret, Template, Value};
use proptest::prelude::*;
use serde_json::json;

/// A provider with a KV v2 secret, a database lease, and a record of the calls made.
#[derive(Default)]
struct Agent {
    calls: Vec<String>,
}

impl Context for Agent {
    fn secret(&mut self, path: &str, params: &[(&str, &str)]) -> Result<Secret, String> {
        self.calls.push(format!("{path} {params:?}"));
        match path {
            "secret/data/app" => Ok(Secret {
                data: Value::from(json!({
                    "data": {"username": "app", "password": "hunter2", "api_key": "k-123"},
                    "metadata": {"version": 4}
                })),
                ..Secret::default()
            }),
            "database/creds/ro" => Ok(Secret {
                lease_id: "database/creds/ro/xyz".into(),
                lease_duration: 3600,
                renewable: true,
                data: Value::from(json!({"username": "v-ro-1", "password": "hunter2"})),
                ..Secret::default()
            }),
            "pki/issue/web" => Ok(Secret {
                data: Value::from(json!({"common_name": params.first().map(|p| p.1)})),
                ..Secret::default()
            }),
            _ => Err("permission denied".into()),
        }
    }

    fn pki_cert(&mut self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        self.calls.push(format!("pkiCert {path} {params:?}"));
        Ok(Value::from(json!({
            "Cert": "CERT", "Key": "KEY", "CA": "CA", "CAChain": ["CA", "ROOT"]
        })))
    }

    fn env(&mut self, name: &str) -> String {
        if name == "APP_ENV" { "prod".into() } else { String::new() }
    }
}

fn render(src: &str) -> Result<String, Error> {
    Ok(Template::parse("t", src)?.render(&mut Agent::default())?.to_string())
}

#[test]
fn vault_agent_documentation_examples_render() {
    let cases = [
        (r#"{{ with secret "secret/data/app" }}{{ .Data.data.password }}{{ end }}"#, "hunter2"),
        (
            "{{- with secret \"secret/data/app\" -}}\n{{ range $k, $v := .Data.data }}{{ $k }}={{ $v }}\n{{ end }}{{- end }}",
            "api_key=k-123\npassword=hunter2\nusername=app\n",
        ),
        (
            "{{ with secret \"database/creds/ro\" }}postgres://{{ .Data.username }}:{{ .Data.password }}@db/app{{ end }}",
            "postgres://v-ro-1:hunter2@db/app",
        ),
        (
            r#"{{ with secret "database/creds/ro" }}{{ .LeaseID }} {{ .LeaseDuration }} {{ .Renewable }}{{ end }}"#,
            "database/creds/ro/xyz 3600 true",
        ),
        (
            r#"{{ with secret "pki/issue/web" "common_name=www.example.com" "ttl=24h" }}{{ .Data.common_name }}{{ end }}"#,
            "www.example.com",
        ),
        (
            r#"{{ with secret "secret/data/app" }}{{ .Data.data | toJSON }}{{ end }}"#,
            r#"{"api_key":"k-123","password":"hunter2","username":"app"}"#,
        ),
        (
            r#"{{ with secret "secret/data/app" }}{{ .Data.data | toYAML }}{{ end }}"#,
            "api_key: k-123\npassword: hunter2\nusername: app",
        ),
        (
            r#"{{ with secret "secret/data/app" }}{{ .Data.data.password | base64Encode }}{{ end }}"#,
            "aHVudGVyMg==",
        ),
        (r#"{{ if eq (env "APP_ENV") "prod" }}prod{{ else }}dev{{ end }}"#, "prod"),
        (
            r#"{{ with secret "secret/data/app" }}{{ index .Data.data "api_key" | toUpper }}{{ end }}"#,
            "K-123",
        ),
        (r#"{{ with secret "secret/data/app" }}v{{ .Data.metadata.version }}{{ end }}"#, "v4"),
        (
            r#"{{ $s := secret "secret/data/app" }}{{ printf "%s:%s" $s.Data.data.username $s.Data.data.password }}"#,
            "app:hunter2",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(render(src).unwrap(), want, "{src}");
    }
}

#[test]
fn secrets_are_fetched_lazily_in_template_order() {
    let t = Template::parse(
        "t",
        r#"{{ if false }}{{ secret "database/creds/ro" }}{{ end }}{{ with secret "secret/data/app" }}{{ end }}{{ with secret "pki/issue/web" "common_name=a" }}{{ end }}"#,
    )
    .unwrap();
    let mut agent = Agent::default();
    t.render(&mut agent).unwrap();
    assert_eq!(
        agent.calls,
        vec![r#"secret/data/app []"#, r#"pki/issue/web [("common_name", "a")]"#]
    );
}

#[test]
fn pki_cert_gives_consul_templates_fields() {
    let t = Template::parse(
        "t",
        r#"{{ with pkiCert "pki/issue/web" "common_name=a.example.com" "ttl=1h" }}{{ .Cert }}|{{ .Key }}|{{ .CA }}|{{ range .CAChain }}{{ . }};{{ end }}{{ end }}"#,
    )
    .unwrap();
    let mut agent = Agent::default();
    assert_eq!(t.render(&mut agent).unwrap().as_str(), "CERT|KEY|CA|CA;ROOT;");
    assert_eq!(
        agent.calls,
        vec![r#"pkiCert pki/issue/web [("common_name", "a.example.com"), ("ttl", "1h")]"#]
    );
    let e = Template::parse("t", r#"{{ pkiCert "pki/issue/web" "oops" }}"#)
        .unwrap()
        .render(&mut agent)
        .unwrap_err();
    assert!(e.to_string().contains("argument 2 is not of the form key=value"), "{e}");
}

#[test]
fn unknown_function_is_a_parse_error_naming_it_and_its_position() {
    let err = Template::parse("web.tmpl", "line1\n  {{ caRoot \"pki/issue/x\" }}").unwrap_err();
    assert_eq!(err.to_string(), "template: web.tmpl:2:5: function \"caRoot\" not defined");
    assert!(matches!(err, Error::Parse { line: 2, .. }));
}

#[test]
fn unclosed_action_is_a_parse_error() {
    let err = Template::parse("t", "a {{ .x ").unwrap_err();
    assert_eq!(err.message(), "unclosed action");
}

#[test]
fn wrong_argument_count_is_a_render_error_at_the_call() {
    let err = Template::parse("t", "x\n{{ base64Encode \"a\" \"b\" }}")
        .unwrap()
        .render(&mut Agent::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "template: t:2:3: executing \"t\" at <base64Encode>: wrong number of args for base64Encode: want 1 got 2"
    );
}

#[test]
fn missing_key_prints_no_value_unless_the_option_is_on() {
    let src = r#"{{ with secret "secret/data/app" }}{{ .Data.data.nope }}{{ end }}"#;
    assert_eq!(render(src).unwrap(), "<no value>");
    let err = Template::parse("t", src)
        .unwrap()
        .missing_key_error(true)
        .render(&mut Agent::default())
        .unwrap_err();
    assert_eq!(err.message(), "map has no entry for key \"nope\"");
}

#[test]
fn secret_errors_name_the_path_and_not_the_data() {
    let err = render(r#"{{ with secret "secret/data/other" }}{{ end }}"#).unwrap_err();
    assert_eq!(err.message(), "error calling secret: secret/data/other: permission denied");
    // A failing write names the argument's position, not its content.
    let err = render(r#"{{ secret "pki/issue/web" "password-hunter2" }}"#).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn render_errors_never_contain_secret_values() {
    let failing = [
        r#"{{ with secret "secret/data/app" }}{{ .Data.data.password.x }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ range .Data.data.password }}{{ end }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ eq .Data.data.password 1 }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ index .Data.data.password "x" }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ len (index .Data "data") 1 }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ .Data.data.password 1 }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ base64Decode .Data.data.password }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ parseJSON .Data.data.password }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ .Data.data | toYAML | toJSONPretty }}{{ end }}"#,
        r#"{{ with secret "secret/data/app" }}{{ eq .Data.data .Data.data }}{{ end }}"#,
    ];
    for src in failing {
        let err = render(src).expect_err(src);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{src}: {shown}");
    }
}

#[test]
fn value_debug_output_is_redacted() {
    let v = Value::from(json!({"password": "hunter2"}));
    assert!(!format!("{v:?}").contains("hunter2"));
    let s = Secret { data: v, ..Secret::default() };
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn files_are_refused_by_default() {
    let err = render(r#"{{ file "/etc/passwd" }}"#).unwrap_err();
    assert_eq!(
        err.message(),
        "error calling file: file \"/etc/passwd\": reading files is not allowed here"
    );
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let src = "{{ if 1 }}".repeat(500);
    assert!(Template::parse("t", &src).unwrap_err().message().contains("nesting"));
    let parens = format!("{{{{ {}1{} }}}}", "(".repeat(500), ")".repeat(500));
    assert!(Template::parse("t", &parens).is_err());
}

/// Fragments that make arbitrary but template-shaped input.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{{- ".to_owned()),
        Just(" -}}".to_owned()),
        Just("/*".to_owned()),
        Just("*/".to_owned()),
        Just("if ".to_owned()),
        Just("else ".to_owned()),
        Just("end".to_owned()),
        Just("range ".to_owned()),
        Just("with ".to_owned()),
        Just("break".to_owned()),
        Just("$x := ".to_owned()),
        Just("$i, $v := ".to_owned()),
        Just("$x = ".to_owned()),
        Just(".Data.data".to_owned()),
        Just(" | ".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\"s\\t\"".to_owned()),
        Just("`raw`".to_owned()),
        Just("'c'".to_owned()),
        Just(" 1.5e3 ".to_owned()),
        Just(" -0x1F ".to_owned()),
        Just(" nil ".to_owned()),
        Just(" . ".to_owned()),
        Just("$".to_owned()),
        Just("printf \"%5.2f %q %x %v %d\" ".to_owned()),
        Just("index ".to_owned()),
        Just("slice ".to_owned()),
        Just("secret \"secret/data/app\" ".to_owned()),
        Just("toYAML ".to_owned()),
        Just("toJSON ".to_owned()),
        Just("len ".to_owned()),
        Just("and ".to_owned()),
        Just("eq ".to_owned()),
        "[ -~\n\té]{0,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_text(src in "\\PC{0,64}") {
        let _ = Template::parse("t", &src);
    }

    #[test]
    fn parse_and_render_never_panic_on_template_shaped_input(parts in prop::collection::vec(fragment(), 0..24)) {
        let src: String = parts.concat();
        if let Ok(t) = Template::parse("t", &src) {
            let _ = t.render(&mut Agent::default());
            let _ = t.missing_key_error(true).render(&mut Agent::default());
        }
    }
}

#[test]
fn nesting_at_the_limit_renders() {
    // 48 blocks, then 50 parentheses inside the innermost: 98 levels, under the limit of 100.
    let blocks = 24;
    let parens = 50;
    let src = format!(
        "{}{{{{ {}1{} }}}}{}",
        "{{ if 1 }}{{ range $i, $v := (slice (printf \"%s\" \"ab\") 0 1 | len | printf \"%d\" | split \"\") }}".repeat(blocks),
        "(print ".repeat(parens),
        ")".repeat(parens),
        "{{ end }}{{ end }}".repeat(blocks)
    );
    assert_eq!(render(&src).unwrap(), "1");
}
