//! The `coffer` CLI against a real server: the commands an operator types, and the errors that
//! tell them what to do.

use crate::common::{Server, ok, stderr, stdout, tempdir};

/// Table output with runs of spaces folded, so checks do not depend on column widths.
fn squash(s: &str) -> String {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn an_operator_sets_up_and_uses_coffer_from_the_cli() {
    let dir = tempdir();
    let s = Server::start(dir.path());
    let out = s.cli(None, &["status"]);
    assert_eq!(out.status.code(), Some(2), "uninitialized/sealed status exits 2");
    assert!(squash(&stdout(&out)).contains("Initialized false"), "{}", stdout(&out));

    let init =
        ok(s.cli(None, &["operator", "init", "-key-shares=3", "-key-threshold=2", "-format=json"]));
    let v: serde_json::Value = serde_json::from_str(&init).expect("json");
    // Vault's CLI shape, not the API's.
    assert_eq!((v["unseal_shares"].as_u64(), v["unseal_threshold"].as_u64()), (Some(3), Some(2)));
    assert_eq!(v["unseal_keys_hex"].as_array().map(Vec::len), Some(3), "{v}");
    let keys: Vec<String> = v["unseal_keys_b64"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k.as_str().expect("k").to_owned())
        .collect();
    let root = v["root_token"].as_str().expect("root").to_owned();

    let out = s.cli(Some(&root), &["read", "sys/mounts"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("sealed") && stderr(&out).contains("coffer operator unseal"),
        "{}",
        stderr(&out)
    );

    let first = ok(s.cli(None, &["operator", "unseal", &keys[0]]));
    assert!(squash(&first).contains("Unseal Progress 1/2"), "{first}");
    ok(s.cli_stdin(None, &["operator", "unseal", "-"], Some(&format!("{}\n", keys[1]))));
    assert_eq!(s.cli(None, &["status"]).status.code(), Some(0));

    // login saves the token, mode 0600, and later commands use it.
    let out = ok(s.cli(None, &["login", &root]));
    assert!(out.contains("Success!"), "{out}");
    let saved = dir.path().join("home/.coffer-token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&saved).expect("token file").permissions().mode() & 0o777, 0o600);
    let out = ok(s.cli(None, &["token", "lookup", "-format=json"]));
    assert!(out.contains("\"root\""), "{out}");

    ok(s.cli(None, &["secrets", "enable", "-path=secret", "-description=app secrets", "kv"]));
    let list = ok(s.cli(None, &["secrets", "list"]));
    assert!(list.contains("secret/") && list.contains("app secrets"), "{list}");
    ok(s.cli(None, &["secrets", "tune", "-default-lease-ttl=1h", "secret"]));
    let detailed = ok(s.cli(None, &["secrets", "list", "-detailed"]));
    assert!(detailed.contains("1h"), "{detailed}");

    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        .expect("write");
    ok(s.cli(
        None,
        &[
            "write",
            "secret/app/db",
            "username=app",
            "password=s3cr3t",
            &format!("cert=@{}", cert.display()),
        ],
    ));
    ok(s.cli_stdin(None, &["write", "secret/app/json", "-"], Some("{\"a\": \"b\", \"n\": 1}")));
    assert_eq!(ok(s.cli(None, &["read", "-field=password", "secret/app/db"])).trim(), "s3cr3t");
    assert!(
        ok(s.cli(None, &["read", "-field=cert", "secret/app/db"])).contains("BEGIN CERTIFICATE")
    );
    let table = ok(s.cli(None, &["read", "secret/app/db"]));
    assert!(
        squash(&table).contains("refresh_interval 1h") && squash(&table).contains("username app"),
        "{table}"
    );
    let json_out = ok(s.cli(None, &["read", "-format=json", "secret/app/json"]));
    let v: serde_json::Value = serde_json::from_str(&json_out).expect("json");
    assert_eq!(v["data"]["n"], 1);
    assert_eq!(ok(s.cli(None, &["list", "secret/app"])), "Keys\n----\ndb\njson\n");
    let missing = s.cli(None, &["read", "secret/nope"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("No value found at secret/nope"));
    ok(s.cli(None, &["delete", "secret/app/json"]));
    assert_eq!(s.cli(None, &["read", "secret/app/json"]).status.code(), Some(2));

    // Policies from files, formatted and checked.
    let pfile = dir.path().join("app.hcl");
    std::fs::write(&pfile, "path \"secret/app/*\" {\ncapabilities = [\"read\",\"list\"]\n}\n")
        .expect("write");
    ok(s.cli(None, &["policy", "fmt", pfile.to_str().expect("p")]));
    let formatted = std::fs::read_to_string(&pfile).expect("read");
    assert!(formatted.contains("  capabilities"), "indented: {formatted}");
    ok(s.cli(None, &["policy", "write", "app", pfile.to_str().expect("p")]));
    assert!(ok(s.cli(None, &["policy", "list"])).lines().any(|l| l == "app"));
    assert!(ok(s.cli(None, &["policy", "read", "app"])).contains("secret/app/*"));
    let bad = dir.path().join("bad.hcl");
    std::fs::write(&bad, "path \"x\" {\n  capabilities = [\"fly\"]\n}\n").expect("write");
    let out = s.cli(None, &["policy", "write", "bad", bad.to_str().expect("p")]);
    assert!(!out.status.success() && stderr(&out).contains("fly"), "{}", stderr(&out));

    // Tokens: create with a policy, use it, renew, revoke.
    let t = ok(s.cli(
        None,
        &["token", "create", "-policy=app", "-ttl=30m", "-metadata=team=web", "-field=token"],
    ));
    let app = t.trim().to_owned();
    assert_eq!(ok(s.cli(Some(&app), &["read", "-field=username", "secret/app/db"])).trim(), "app");
    let denied = s.cli(Some(&app), &["write", "secret/app/db", "x=y"]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("permission denied") && stderr(&denied).contains("coffer login"),
        "{}",
        stderr(&denied)
    );
    let looked = ok(s.cli(Some(&app), &["token", "lookup"]));
    assert!(looked.contains("team:web") || looked.contains("map[team:web]"), "{looked}");
    let renewed = ok(s.cli(Some(&app), &["token", "renew", "-increment=20m"]));
    assert!(squash(&renewed).contains("token_duration 20m"), "{renewed}");
    ok(s.cli(None, &["token", "revoke", &app]));
    assert!(!s.cli(Some(&app), &["token", "lookup"]).status.success());

    // Seal and key rotation from the CLI.
    let rotated = ok(s.cli(None, &["operator", "rotate"]));
    assert!(squash(&rotated).contains("Key Term 2"), "{rotated}");
    assert!(ok(s.cli(None, &["operator", "key-status"])).contains("Key Term"));
    ok(s.cli(None, &["auth", "list"]));
    ok(s.cli(None, &["policy", "delete", "app"]));
    ok(s.cli(None, &["secrets", "disable", "secret"]));
    ok(s.cli(None, &["operator", "seal"]));
    assert_eq!(s.cli(None, &["status"]).status.code(), Some(2));
}

#[test]
fn cli_errors_say_what_to_do_when_the_server_is_unreachable() {
    let out = std::process::Command::new(crate::common::BIN)
        .args(["read", "secret/x"])
        .env("COFFER_ADDR", "http://127.0.0.1:9")
        .env("COFFER_TOKEN", "t")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach the Coffer server at http://127.0.0.1:9")
            && err.contains("COFFER_ADDR"),
        "{err}"
    );
}

#[test]
fn vault_environment_variables_are_the_fallback() {
    let out = std::process::Command::new(crate::common::BIN)
        .args(["status"])
        .env_remove("COFFER_ADDR")
        .env("VAULT_ADDR", "http://127.0.0.1:9")
        .output()
        .expect("run");
    assert!(stderr(&out).contains("http://127.0.0.1:9"), "{}", stderr(&out));
}

#[test]
fn help_and_completions_are_available() {
    let help = std::process::Command::new(crate::common::BIN).arg("--help").output().expect("run");
    let text = stdout(&help);
    for cmd in [
        "server",
        "operator",
        "login",
        "token",
        "policy",
        "secrets",
        "auth",
        "read",
        "write",
        "completion",
    ] {
        assert!(text.contains(cmd), "help lists {cmd}");
    }
    let bash = std::process::Command::new(crate::common::BIN)
        .args(["completion", "bash"])
        .output()
        .expect("run");
    assert!(stdout(&bash).contains("_coffer"), "a bash completion function");
    let bad = std::process::Command::new(crate::common::BIN)
        .args(["read", "-bogus-flag"])
        .output()
        .expect("run");
    assert!(!bad.status.success() && stderr(&bad).contains("bogus-flag"));
}

#[tokio::test]
async fn coffer_kv_works_on_v2_and_v1_mounts() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let r = Some(root.as_str());
    ok(s.cli(r, &["secrets", "enable", "-path=secret", "-version=2", "kv"]));
    ok(s.cli(r, &["secrets", "enable", "-path=old", "kv"]));

    let put = ok(s.cli(r, &["kv", "put", "secret/app/db", "password=one", "user=app"]));
    assert!(squash(&put).contains("version 1"), "{put}");
    ok(s.cli(r, &["kv", "put", "-mount=secret", "app/db", "password=two", "user=app"]));
    assert_eq!(ok(s.cli(r, &["kv", "get", "-field=password", "secret/app/db"])).trim(), "two");
    assert_eq!(
        ok(s.cli(r, &["kv", "get", "-version=1", "-field=password", "secret/app/db"])).trim(),
        "one"
    );
    let shown = ok(s.cli(r, &["kv", "get", "secret/app/db"]));
    assert!(
        shown.contains("Metadata")
            && squash(&shown).contains("version 2")
            && squash(&shown).contains("password two"),
        "{shown}"
    );

    let stale = s.cli(r, &["kv", "put", "-cas=1", "secret/app/db", "password=x"]);
    assert!(!stale.status.success());
    assert!(stderr(&stale).contains("check-and-set parameter did not match"), "{}", stderr(&stale));
    ok(s.cli(r, &["kv", "patch", "secret/app/db", "password=three"]));
    let v = ok(s.cli(r, &["kv", "get", "-format=json", "secret/app/db"]));
    let v: serde_json::Value = serde_json::from_str(&v).expect("json");
    assert_eq!(v["data"]["data"], serde_json::json!({"password": "three", "user": "app"}));

    ok(s.cli(r, &["kv", "delete", "secret/app/db"]));
    assert_eq!(s.cli(r, &["kv", "get", "secret/app/db"]).status.code(), Some(2));
    ok(s.cli(r, &["kv", "undelete", "-versions=3", "secret/app/db"]));
    assert_eq!(ok(s.cli(r, &["kv", "get", "-field=password", "secret/app/db"])).trim(), "three");
    ok(s.cli(r, &["kv", "rollback", "-version=1", "secret/app/db"]));
    assert_eq!(ok(s.cli(r, &["kv", "get", "-field=password", "secret/app/db"])).trim(), "one");
    ok(s.cli(r, &["kv", "destroy", "-versions=2", "secret/app/db"]));
    assert_eq!(s.cli(r, &["kv", "get", "-version=2", "secret/app/db"]).status.code(), Some(2));
    assert_eq!(ok(s.cli(r, &["kv", "list", "secret/app"])), "Keys\n----\ndb\n");

    ok(s.cli(
        r,
        &[
            "kv",
            "metadata",
            "put",
            "-max-versions=2",
            "-custom-metadata=owner=web",
            "secret/app/db",
        ],
    ));
    let meta = ok(s.cli(r, &["kv", "metadata", "get", "-format=json", "secret/app/db"]));
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(meta["data"]["custom_metadata"]["owner"], "web");
    assert_eq!(meta["data"]["versions"].as_object().expect("versions").len(), 2);
    ok(s.cli(r, &["kv", "metadata", "delete", "secret/app/db"]));
    assert_eq!(s.cli(r, &["kv", "get", "secret/app/db"]).status.code(), Some(2));

    // The same commands on a v1 mount, and clear errors for v2-only ones.
    ok(s.cli(r, &["kv", "put", "old/thing", "k=v"]));
    assert_eq!(ok(s.cli(r, &["kv", "get", "-field=k", "old/thing"])).trim(), "v");
    assert_eq!(ok(s.cli(r, &["kv", "list", "old/"])), "Keys\n----\nthing\n");
    let e = s.cli(r, &["kv", "patch", "old/thing", "k=w"]);
    assert!(stderr(&e).contains("version 2"), "{}", stderr(&e));
    ok(s.cli(r, &["kv", "delete", "old/thing"]));
    let e = s.cli(r, &["kv", "get", "nomount/x"]);
    assert!(!e.status.success() && stderr(&e).contains("no secrets engine"), "{}", stderr(&e));

    // An app token with a data-only policy can still use `coffer kv` (mount lookup allowed).
    s.call("PUT", "sys/policies/acl/app", r, Some(serde_json::json!({"policy": "path \"secret/data/app/*\" {\n  capabilities = [\"create\", \"read\", \"update\"]\n}\n"}))).await;
    let (_, t) = s
        .call("POST", "auth/token/create", r, Some(serde_json::json!({"policies": ["app"]})))
        .await;
    let app = t["auth"]["client_token"].as_str().expect("token").to_owned();
    ok(s.cli(Some(&app), &["kv", "put", "secret/app/cfg", "a=b"]));
    assert_eq!(ok(s.cli(Some(&app), &["kv", "get", "-field=a", "secret/app/cfg"])).trim(), "b");
    let (code, _) = s.call("GET", "sys/internal/ui/mounts/old/x", Some(&app), None).await;
    assert_eq!(code, 403, "no access inside old/: its existence is not revealed");
}

#[test]
fn dev_and_config_cannot_be_combined() {
    let out = std::process::Command::new(crate::common::BIN)
        .args(["server", "-dev", "-config", "/nonexistent.hcl"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
}

#[test]
fn the_server_writes_its_pid_file_and_removes_it_when_it_stops() {
    let dir = tempdir();
    let pid_file = dir.path().join("coffer.pid");
    let config = format!(
        "{}pid_file = \"{}\"\n",
        crate::common::default_config(dir.path()),
        pid_file.display()
    );
    let mut s = Server::start_with(dir.path(), &config, "http");
    let written = std::fs::read_to_string(&pid_file).expect("pid file written at start");
    assert_eq!(written.trim(), s.pid().to_string());
    assert!(s.stop().is_some_and(|st| st.success()), "{}", s.logs());
    assert!(!pid_file.exists(), "pid file removed at a clean stop");
}
