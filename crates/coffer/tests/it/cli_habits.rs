//! The CLI as a Vault user meets it: output into a pipe its reader closed, connection errors that
//! name their cause, and API errors in vault's shape.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::{BIN, Server, ok, tempdir};

/// Runs the CLI with its stdout a pipe whose read end is already closed, so that its first
/// write fails with EPIPE whatever the size of the output; returns (status, stderr).
fn run_into_closed_pipe(s: Option<&Server>, token: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = s {
        cmd.env("COFFER_ADDR", &s.addr).env("HOME", s.dir.join("home"));
    }
    if let Some(t) = token {
        cmd.env("COFFER_TOKEN", t);
    }
    let mut child = cmd.spawn().expect("spawn cli");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("cli output");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    let (code, err) = run_into_closed_pipe(None, None, &["completion", "zsh"]);
    assert_eq!((code, err.as_str()), (0, ""), "completion zsh");

    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    ok(s.cli(Some(&root), &["secrets", "enable", "-path=secret", "kv"]));
    ok(s.cli(Some(&root), &["write", "secret/a", "k=v"]));
    for args in [
        &["secrets", "list", "-detailed"][..],
        &["secrets", "list", "-format=json"],
        &["read", "secret/a"],
        &["read", "-field=k", "secret/a"],
        &["token", "lookup"],
        &["status"],
    ] {
        let (code, err) = run_into_closed_pipe(Some(&s), Some(&root), args);
        assert!(code == 0 && err.is_empty(), "{args:?}: status {code}, stderr:\n{err}");
    }
    // A failure still reports on stderr when stdout is gone.
    let (code, err) = run_into_closed_pipe(Some(&s), Some(&root), &["read", "nomount/x"]);
    assert_ne!(code, 0, "{err}");
    assert!(!err.is_empty() && !err.contains("panicked"), "{err}");
}

/// The CLI with only the given environment (and PATH): (status, stdout, stderr).
fn cli_env(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn connection_errors_advise_by_cause() {
    let (code, _, err) = cli_env(&[("COFFER_ADDR", "http://127.0.0.1:1")], &["status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Nothing listens there") && err.contains("COFFER_ADDR"), "{err}");
    let (_, _, err) = cli_env(&[("COFFER_ADDR", "http://no-such-host.invalid:8200")], &["status"]);
    assert!(err.contains("does not resolve") && err.contains("COFFER_ADDR"), "{err}");

    let dir = tempdir();
    let p = crate::tls::pki(dir.path());
    let tls = Server::start_with(dir.path(), &crate::tls::tls_config(dir.path(), &p, ""), "https");
    let (_, _, err) = cli_env(&[("COFFER_ADDR", &tls.addr)], &["status"]);
    assert!(err.contains("-ca-cert") && err.contains("COFFER_CACERT"), "{err}");
    assert!(!err.contains("export COFFER_ADDR"), "{err}");
    let plain_addr = tls.addr.replacen("https://", "http://", 1);
    let (_, _, err) = cli_env(&[("COFFER_ADDR", &plain_addr)], &["status"]);
    assert!(err.contains(&format!("export COFFER_ADDR={}", tls.addr)), "{err}");

    // -tls-skip-verify, and its variables with Go's booleans: the answer, and a warning each time.
    let warning = "WARNING! -tls-skip-verify";
    for env in [&[][..], &[("VAULT_SKIP_VERIFY", "1")], &[("COFFER_SKIP_VERIFY", "True")]] {
        let mut env = env.to_vec();
        env.push(("COFFER_ADDR", &tls.addr));
        let args: &[&str] =
            if env.len() == 1 { &["status", "-tls-skip-verify"] } else { &["status"] };
        let (code, out, err) = cli_env(&env, args);
        // Exit 2: the fresh server is sealed; what matters is that it answered.
        assert_eq!(code, 2, "{env:?}: {out}{err}");
        assert!(out.contains("Sealed") && err.contains(warning), "{env:?}: {out}{err}");
    }
    let env = [("COFFER_ADDR", tls.addr.as_str()), ("VAULT_SKIP_VERIFY", "true")];
    let (_, _, err) = cli_env(&env, &["status", "-tls-skip-verify=false"]);
    assert!(err.contains("-ca-cert") && !err.contains(warning), "the flag wins: {err}");
    let env = [("COFFER_ADDR", tls.addr.as_str()), ("VAULT_SKIP_VERIFY", "maybe")];
    let (code, _, err) = cli_env(&env, &["status"]);
    assert!(code == 1 && err.contains("VAULT_SKIP_VERIFY"), "{err}");

    let dir2 = tempdir();
    let plain = Server::start(dir2.path());
    let tls_addr = plain.addr.replacen("http://", "https://", 1);
    let (_, _, err) = cli_env(&[("COFFER_ADDR", &tls_addr)], &["status"]);
    assert!(err.contains(&format!("export COFFER_ADDR={}", plain.addr)), "{err}");

    // A mistyped single-dash flag is reported as typed.
    let (code, _, err) = cli_env(&[("COFFER_ADDR", &tls_addr)], &["status", "-tls-skipverify"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unexpected argument '-tls-skipverify'"), "{err}");
    assert!(err.contains("similar argument exists: '-tls-skip-verify'"), "{err}");
}

#[tokio::test]
async fn api_errors_name_the_method_and_url_as_vault_does() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    ok(s.cli(Some(&root), &["secrets", "enable", "-path=secret", "kv"]));
    let limited = ok(s.cli(Some(&root), &["token", "create", "-policy=default", "-field=token"]));
    let out = s.cli(Some(limited.trim()), &["read", "secret/a"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // A refusal by policy: Vault's multierror text, shown as vault shows it.
    let want = format!(
        "Error making API request.\n\nURL: GET {}/v1/secret/a\nCode: 403. Errors:\n\n* 1 error occurred:\n\t* permission denied\n\n",
        s.addr
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("coffer login"), "{err}");

    let out = s.cli(Some(&root), &["write", "sys/mounts/x", "type=no-such-engine"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let want = format!(
        "Error making API request.\n\nURL: POST {}/v1/sys/mounts/x\nCode: 400. Errors:\n\n* ",
        s.addr
    );
    assert!(err.starts_with(&want), "{err}");
}

#[test]
fn a_server_without_a_config_says_to_use_dev_or_config() {
    let (code, out, err) = cli_env(&[], &["server"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("-config=FILE") && err.contains("-dev"), "{err}");
}

#[tokio::test]
async fn vault_habits_version_print_token_init_status_and_seal_status() {
    let (code, out, _) = cli_env(&[], &["version"]);
    assert_eq!((code, out.as_str()), (0, &*format!("Coffer v{}\n", env!("CARGO_PKG_VERSION"))));
    let (code, out, _) = cli_env(&[("VAULT_TOKEN", "s.from-env")], &["print", "token"]);
    assert_eq!((code, out.as_str()), (0, "s.from-env\n"));

    let dir = tempdir();
    let s = Server::start(dir.path());
    let out = s.cli(None, &["operator", "init", "-status"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Coffer is not initialized\n");
    // Sealed with no unseal under way: vault's n/a, not a blank.
    let out = s.cli(None, &["status"]);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status.contains("Unseal Nonce       n/a\n"), "{status}");
    let (keys, _) = s.init(1, 1).await;
    s.unseal(&keys).await;
    let out = s.cli(None, &["operator", "init", "-status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Coffer is initialized\n");
}

#[tokio::test]
async fn vault_habits_capabilities_path_help_formats_and_tidy() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    ok(s.cli(Some(&root), &["secrets", "enable", "-path=secret", "kv"]));
    ok(s.cli(Some(&root), &["write", "secret/a", "k=v"]));
    let limited = ok(s.cli(Some(&root), &["token", "create", "-policy=default", "-field=token"]));
    let limited = limited.trim();

    // token capabilities: of the current token, of another one, as data.
    assert_eq!(ok(s.cli(Some(&root), &["token", "capabilities", "secret/a"])), "root\n");
    assert_eq!(ok(s.cli(Some(limited), &["token", "capabilities", "secret/a"])), "deny\n");
    assert_eq!(ok(s.cli(Some(&root), &["token", "capabilities", limited, "secret/a"])), "deny\n");
    // An accessor is looked up as one: the root token's gives root (as a token, it would be
    // unknown, and deny).
    let accessor =
        ok(s.cli(Some(&root), &["token", "lookup", "-field=accessor"])).trim().to_owned();
    let by_accessor = ["token", "capabilities", "-accessor", &accessor, "secret/a"];
    assert_eq!(ok(s.cli(Some(&root), &by_accessor)), "root\n");
    let own = ok(s.cli(Some(limited), &["token", "capabilities", "auth/token/lookup-self"]));
    assert_eq!(own, "read\n", "the default policy lets a token look itself up");
    let json = ok(s.cli(Some(&root), &["token", "capabilities", "-format=json", "secret/a"]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&json).expect("json"), json!(["root"]));

    // path-help: the path framework's text.
    let help = ok(s.cli(Some(&root), &["path-help", "secret/"]));
    assert!(help.contains("## PATHS"), "{help}");

    // list as data is the bare list of keys, as vault prints it.
    let keys = ok(s.cli(Some(&root), &["list", "-format=json", "secret/"]));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&keys).expect("json"), json!(["a"]));
    assert_eq!(ok(s.cli(Some(&root), &["list", "-format=yaml", "secret/"])), "- a\n");

    // -format=yaml, and the envelope's mount_type filled as Vault fills it.
    let yaml = ok(s.cli(Some(&root), &["read", "-format=yaml", "secret/a"]));
    assert!(yaml.contains("data:\n  k: v\n") && yaml.contains("mount_type: kv\n"), "{yaml}");
    let read = ok(s.cli(Some(&root), &["read", "-format=json", "secret/a"]));
    let read: serde_json::Value = serde_json::from_str(&read).expect("json");
    assert_eq!(read["mount_type"], "kv", "{read}");
    let mounts = ok(s.cli(Some(&root), &["read", "-format=json", "sys/mounts"]));
    let mounts: serde_json::Value = serde_json::from_str(&mounts).expect("json");
    assert_eq!(mounts["mount_type"], "system", "{mounts}");

    // A tidy that finished is reported as done, not as a warning.
    let out = s.cli(Some(&root), &["write", "-f", "sys/leases/tidy"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && !err.contains("WARNING"), "{err}");
}
