//! The CLI as a Vault user meets it: output into a pipe its reader closed, connection errors that
//! name their cause, and API errors in vault's shape.

use std::process::{Command, Stdio};

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
