use super::*;

fn parse(text: &str) -> Result<AgentConfig> {
    AgentConfig::parse(text, Path::new("/etc/coffer"))
}

fn err(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("should be refused"))
}

const FULL: &str = r#"
pid_file = "/run/agent.pid"
vault {
  address = "https://coffer.internal:8200"
  ca_cert = "/etc/coffer/ca.pem"
  retry { num_retries = 3 }
}
auto_auth {
  method "approle" {
    mount_path = "auth/apps"
    config = {
      role_id_file_path = "/boot/role-id"
      secret_id_file_path = "/boot/secret-id"
      secret_id_response_wrapping_path = "auth/apps/role/web/secret-id"
    }
  }
  sink "file" {
    config = { path = "/run/secrets/token", mode = 0600 }
  }
}
template_config {
  static_secret_render_interval = "2m"
  max_stale = "10m"
  exit_on_max_stale = true
  splay = "5s"
}
template {
  source      = "db.tpl"
  destination = "/run/secrets/db.env"
  perms       = "0440"
  exec {
    command = ["/bin/kill", "-HUP", "1"]
    timeout = "10s"
  }
}
template {
  contents    = "{{ with secret \"secret/data/web\" }}{{ .Data.data.key }}{{ end }}"
  destination = "/run/secrets/key"
  error_on_missing_key = true
}
exec {
  command = ["/app/server", "--port", "8080"]
  restart_on_secret_changes = "never"
  restart_stop_signal = "SIGINT"
  reload_signal = "SIGHUP"
}
env_template "DB_PASSWORD" {
  contents = "{{ with secret \"database/creds/web\" }}{{ .Data.password }}{{ end }}"
}
listener "unix" { address = "/run/coffer/agent.sock" }
listener "tcp" {
  address = "127.0.0.1:8100"
  tls_disable = true
}
cache {
  persist "kubernetes" {
    path = "/var/cache/coffer/agent.cache"
    key_path = "/run/coffer/cache.key"
  }
}
"#;

#[test]
fn parses_a_vault_agent_config() {
    let c = parse(FULL).expect("parses");
    assert_eq!(c.server.address, "https://coffer.internal:8200");
    assert_eq!(c.server.ca_cert.as_deref(), Some(Path::new("/etc/coffer/ca.pem")));
    assert_eq!(c.server.num_retries, 3);
    let a = c.auto_auth.expect("auto_auth");
    assert_eq!(a.method.mount_path, "auth/apps");
    assert_eq!(
        a.method.kind,
        Method::AppRole {
            role_id_file_path: "/boot/role-id".into(),
            secret_id_file_path: Some("/boot/secret-id".into()),
            remove_secret_id_file_after_reading: true,
            secret_id_response_wrapping_path: Some("auth/apps/role/web/secret-id".into()),
            kubernetes_token_path: None,
        }
    );
    assert_eq!(
        a.sinks,
        vec![SinkConfig {
            path: "/run/secrets/token".into(),
            mode: 0o600,
            dh_path: None,
            aad: String::new(),
            derive_key: false,
            allow_disk: false
        }]
    );
    assert!(c.server.seal_responses, "sealed responses are the default");
    assert_eq!(c.templates.len(), 2);
    assert_eq!(c.templates[0].source, TemplateSource::File("/etc/coffer/db.tpl".into()));
    assert_eq!(c.templates[0].perms, 0o440);
    assert_eq!(
        c.templates[0].exec,
        Some(CommandConfig {
            command: vec!["/bin/kill".into(), "-HUP".into(), "1".into()],
            timeout: Duration::from_secs(10)
        })
    );
    assert_eq!(c.templates[1].perms, 0o400, "the default mode is 0400");
    assert!(c.templates[1].error_on_missing_key);
    assert_eq!(c.template_config.static_secret_render_interval, Duration::from_secs(120));
    assert_eq!(c.template_config.max_stale, Some(Duration::from_secs(600)));
    assert_eq!(c.template_config.splay, Duration::from_secs(5));
    let e = c.exec.expect("exec");
    assert_eq!(e.command, ["/app/server", "--port", "8080"]);
    assert_eq!(e.restart_on_secret_changes, RestartPolicy::Never);
    assert_eq!(e.restart_stop_signal, Signal::Int);
    assert_eq!(e.reload_signal, Some(Signal::Hup));
    assert_eq!(c.env_templates.len(), 1);
    assert_eq!(c.env_templates[0].name, "DB_PASSWORD");
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(
        c.cache.expect("cache").persist.expect("persist").key_path,
        PathBuf::from("/run/coffer/cache.key")
    );
    assert_eq!(c.pid_file.as_deref(), Some(Path::new("/run/agent.pid")));
}

#[test]
fn the_json_form_parses_too() {
    let c = parse(
        r#"{"coffer": {"address": "http://127.0.0.1:8200"},
            "auto_auth": {"method": [{"kubernetes": {"config": {"role": "web"}}}],
                          "sink": [{"file": {"config": {"path": "/run/t"}}}]},
            "template": [{"contents": "x", "destination": "/run/a"}, {"contents": "y", "destination": "/run/b"}]}"#,
    )
    .expect("parses");
    let a = c.auto_auth.expect("auto_auth");
    assert_eq!(a.method.mount_path, "auth/kubernetes");
    assert_eq!(
        a.method.kind,
        Method::Kubernetes { role: "web".into(), token_path: DEFAULT_K8S_TOKEN_PATH.into() }
    );
    assert_eq!(a.sinks[0].mode, 0o640);
    assert_eq!(c.templates.len(), 2);
}

#[test]
fn image_bound_logins_take_the_pod_token_and_the_signature_from_files() {
    let c = parse(
        r#"{"coffer": {"address": "http://127.0.0.1:8200"},
            "auto_auth": {"method": [{"approle": {"config": {"role_id_file_path": "/boot/role-id",
                "secret_id_file_path": "/var/run/coffer/secret-id",
                "kubernetes_token_path": "/var/run/coffer/token",
                "image_signature_path": "/var/run/coffer/signature.json"}}}],
                          "sink": [{"file": {"config": {"path": "/run/t"}}}]}}"#,
    )
    .expect("parses");
    let a = c.auto_auth.expect("auto_auth");
    assert_eq!(
        a.method.image_signature_path.as_deref(),
        Some(Path::new("/var/run/coffer/signature.json"))
    );
    assert!(matches!(&a.method.kind, Method::AppRole { kubernetes_token_path: Some(p), .. }
        if p == Path::new("/var/run/coffer/token")));
    let e = parse(
        r#"{"coffer": {"address": "http://127.0.0.1:8200"},
            "auto_auth": {"method": [{"cert": {"config": {"image_signature_path": "/x"}}}]}}"#,
    )
    .expect_err("cert logins take no image signature");
    assert!(e.to_string().contains("image_signature_path"), "{e}");
}

#[test]
fn errors_name_the_problem() {
    let base = "auto_auth {\n method \"token_file\" { config = { token_file_path = \"/t\" } }\n}\n";
    let cases: &[(&str, &str)] = &[
        ("colour = 1", "unknown key \"colour\" in the top level"),
        ("vault {\n tls_skip_verify = true\n}", "never turns certificate checks off"),
        ("vault {\n address = 1\n}", "vault.address must be a string"),
        ("coffer {}\nvault {}", "either a coffer"),
        ("auto_auth {\n method \"ldap\" {}\n}", "\"ldap\" is not supported"),
        ("auto_auth {\n method \"approle\" { config = {} }\n}", "needs role_id_file_path"),
        ("auto_auth {\n method \"jwt\" { config = { role = \"x\" } }\n}", "needs path"),
        (&format!("{base}template {{\n contents = \"x\"\n}}"), "needs destination"),
        (
            &format!("{base}template {{\n contents = \"x\"\n destination = \"rel/path\"\n}}"),
            "must be an absolute path",
        ),
        (
            &format!(
                "{base}template {{\n contents = \"x\"\n destination = \"/a\"\n perms = \"0999\"\n}}"
            ),
            "octal mode",
        ),
        (
            &format!(
                "{base}template {{\n contents = \"x\"\n destination = \"/a\"\n left_delimiter = \"[[\"\n}}"
            ),
            "custom delimiters",
        ),
        (
            &format!(
                "{base}template {{\n source = \"a\"\n contents = \"x\"\n destination = \"/a\"\n}}"
            ),
            "not both",
        ),
        (
            &format!(
                "{base}template {{\n contents = \"x\"\n destination = \"/a\"\n}}\ntemplate {{\n contents = \"y\"\n destination = \"/a\"\n}}"
            ),
            "two templates write to /a",
        ),
        ("template {\n contents = \"x\"\n destination = \"/a\"\n}", "add an auto_auth block"),
        (&format!("{base}env_template \"X\" {{\n contents = \"x\"\n}}"), "add an exec"),
        (&format!("{base}exec {{\n command = []\n}}"), "must name a program"),
        (
            &format!("{base}exec {{\n command = [\"/a\"]\n restart_stop_signal = \"SIGFOO\"\n}}"),
            "unknown signal",
        ),
        (&format!("{base}template_config {{\n exit_on_max_stale = true\n}}"), "needs max_stale"),
        (
            &format!("{base}template_config {{\n max_stale = \"ten minutes\"\n}}"),
            "must be a duration",
        ),
        (
            &format!(
                "{base}cache {{\n persist {{\n path = \"/c/cache\"\n key_path = \"/c/key\"\n}}\n}}"
            ),
            "same directory",
        ),
        (&format!("{base}listener \"tcp\" {{\n address = \"localhost\"\n}}"), "IP:PORT"),
        (
            "auto_auth {\n method \"approle\" {\n config = { role_id_file_path = \"/r\" }\n wrap_ttl = \"5m\"\n }\n}",
            "wrap_ttl",
        ),
        ("template {", "HCL parse error"),
        (
            "auto_auth {\n method \"token_file\" { config = { token_file_path = \"/t\" } }\n sink \"file\" {\n dh_type = \"curve25519\"\n config = { path = \"/s\" }\n }\n}",
            "needs dh_path",
        ),
        (
            "auto_auth {\n method \"token_file\" { config = { token_file_path = \"/t\" } }\n sink \"file\" {\n aad = \"x\"\n config = { path = \"/s\" }\n }\n}",
            "need dh_type",
        ),
    ];
    for (text, want) in cases {
        let got = err(text);
        assert!(got.contains(want), "config:\n{text}\nerror {got:?} does not contain {want:?}");
    }
}

#[test]
fn durations_follow_go_syntax() {
    assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    for bad in ["", "s", "5 m", "5x", "-5s", "m5"] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in proptest::prelude::any::<String>()) {
        let _ = parse(&text);
    }
}
