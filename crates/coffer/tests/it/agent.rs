//! `coffer agent` end to end: a real server, real agent processes, and an app that is a small
//! shell program. The "container" is a mount + PID namespace (`unshare`) with its own tmpfs: the
//! agent renders into it, and the test looks inside through `/proc/<pid>/root`, as nothing on the
//! host's own view of the filesystem may hold a secret.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{BIN, Server, default_config, free_port, tempdir};

/// An agent process, maybe inside its own namespaces.
pub(crate) struct Agent {
    child: Option<Child>,
    log: PathBuf,
    socket: PathBuf,
    /// The tmpfs mount point inside the container (`None`: the agent runs on the host).
    container_dir: Option<PathBuf>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A host agent leads its own process group: the app it runs in exec mode is in it and
            // goes with it (killed alone, the agent would leave the app running after the test).
            if self.container_dir.is_none() {
                let _ =
                    Command::new("kill").args(["-KILL", "--", &format!("-{}", c.id())]).status();
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Agent {
    /// Runs `coffer agent -config` on the host.
    pub(crate) fn start(dir: &Path, config: &str) -> Agent {
        Self::start_with_env(dir, config, &[])
    }

    /// [`Agent::start`] with these variables added to the agent's environment.
    pub(crate) fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Agent {
        let cfg = dir.join("agent.hcl");
        std::fs::write(&cfg, config).expect("agent config");
        let log = dir.join("agent.log");
        let child = Command::new(BIN)
            .args(["agent", "-log-level", "debug", "-config"])
            .arg(&cfg)
            .envs(env.iter().copied())
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn agent");
        Agent { child: Some(child), log, socket: dir.join("agent.sock"), container_dir: None }
    }

    /// Runs the agent as PID 1 of a new mount + PID namespace whose `mnt` is a fresh tmpfs.
    fn start_in_container(dir: &Path, mnt: &Path, config: &str) -> Agent {
        std::fs::create_dir_all(mnt).expect("mount point");
        let cfg = dir.join("agent.hcl");
        std::fs::write(&cfg, config).expect("agent config");
        let log = dir.join("agent.log");
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--propagation",
                "private",
                "--kill-child",
                "sh",
                "-c",
            ])
            .arg("mount -t tmpfs -o size=8m,mode=0755 coffer-test \"$0\" && exec \"$@\"")
            .arg(mnt)
            .arg(BIN)
            .args(["agent", "-log-level", "debug", "-config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn unshare");
        Agent {
            child: Some(child),
            log,
            socket: dir.join("agent.sock"),
            container_dir: Some(mnt.to_owned()),
        }
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's own pid as the host sees it (inside a container: unshare's child).
    fn inner_pid(&self) -> Option<u32> {
        let outer = self.child.as_ref()?.id();
        if self.container_dir.is_none() {
            return Some(outer);
        }
        let kids = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children")).ok()?;
        kids.split_whitespace().next()?.parse().ok()
    }

    /// A path as the agent sees it.
    fn path(&self, p: &Path) -> PathBuf {
        match (&self.container_dir, self.inner_pid()) {
            (Some(_), Some(pid)) => {
                PathBuf::from(format!("/proc/{pid}/root")).join(p.strip_prefix("/").unwrap_or(p))
            }
            _ => p.to_owned(),
        }
    }

    fn read(&self, p: &Path) -> Option<String> {
        std::fs::read_to_string(self.path(p)).ok()
    }

    /// Waits until `p` holds `want`.
    pub(crate) fn wait_for_content(&self, p: &Path, want: &str, within: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.read(p).as_deref() == Some(want) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} never held {want:?} (now {:?}); agent log:\n{}",
            p.display(),
            self.read(p),
            self.logs()
        );
    }

    fn signal(&self, sig: &str) {
        let pid = self.inner_pid().expect("agent pid");
        Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().expect("kill");
    }

    pub(crate) fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let c = self.child.as_mut().expect("running");
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = c.try_wait() {
                self.child = None;
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the agent did not exit within {within:?}; log:\n{}", self.logs());
    }

    /// `GET` on the agent's unix-socket API: (status code, body).
    fn api(&self, path: &str) -> (u16, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match std::os::unix::net::UnixStream::connect(&self.socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => panic!("agent socket: {e}\n{}", self.logs()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        write!(s, "GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").expect("request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("response");
        let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (code, body)
    }

    fn status(&self) -> (u16, Value) {
        let (code, body) = self.api("/agent/v1/status");
        (code, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
    }
}

/// A server on a fixed port (so a restart comes back where the agent looks for it).
pub(crate) async fn server_on_fixed_port(dir: &Path) -> (Server, Vec<String>, String) {
    let port = free_port();
    let cfg = default_config(dir).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let s = Server::start_with(dir, &cfg, "http");
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    (s, keys, root)
}

/// Reads `secret/data/web/*`, and may be told of changes (Vault's event subscription).
const WEB_POLICY: &str = "path \"secret/data/web/*\" { capabilities = [\"read\"] }\npath \"sys/events/subscribe/*\" { capabilities = [\"read\"] }";

/// approle at auth/approle, kv v2 at secret/, a policy `web` that reads `secret/data/web/*`,
/// and role `web` with that policy. Writes `secret/data/web/db` = {password: `value`}.
pub(crate) async fn setup(s: &Server, root: &str, value: &str) {
    for (path, body) in [
        ("sys/auth/approle", json!({"type": "approle"})),
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        ("sys/policies/acl/web", json!({"policy": WEB_POLICY})),
        ("auth/approle/role/web", json!({"token_policies": ["web"], "token_ttl": "1h"})),
    ] {
        let (code, b) = s.call("POST", path, Some(root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {code} {b}");
    }
    put(s, root, value).await;
}

pub(crate) async fn put(s: &Server, root: &str, value: &str) {
    let (code, b) = s
        .call("POST", "secret/data/web/db", Some(root), Some(json!({"data": {"password": value}})))
        .await;
    assert_eq!(code, 200, "{b}");
}

pub(crate) async fn role_id(s: &Server, root: &str) -> String {
    let (_, b) = s.call("GET", "auth/approle/role/web/role-id", Some(root), None).await;
    b["data"]["role_id"].as_str().expect("role_id").to_owned()
}

pub(crate) async fn secret_id(s: &Server, root: &str) -> String {
    let (code, b) =
        s.call("POST", "auth/approle/role/web/secret-id", Some(root), Some(json!({}))).await;
    assert_eq!(code, 200, "{b}");
    b["data"]["secret_id"].as_str().expect("secret_id").to_owned()
}

/// `auto_auth` (from [`approle_block`]) with a file sink whose block body is `sink`.
fn with_sink(auto_auth: String, sink: &str) -> String {
    auto_auth.replace("}\n}\n", &format!("}}\n  sink \"file\" {{\n{sink}  }}\n}}\n"))
}

/// A ready server (on a fixed port when `fixed`, so it can restart where the agent looks) with
/// [`setup`] done, and the bootstrap files of a reusable secret ID in `dir`: (server, unseal
/// keys, root token, role-id file, secret-id file).
async fn approle_ready(
    dir: &Path,
    fixed: bool,
    value: &str,
) -> (Server, Vec<String>, String, PathBuf, PathBuf) {
    let (s, keys, root) =
        if fixed { server_on_fixed_port(dir).await } else { Server::ready(dir).await };
    setup(&s, &root, value).await;
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let (role, sid) = bootstrap(dir, &rid, &sid_value);
    (s, keys, root, role, sid)
}

/// The bootstrap credential files, in `dir`.
pub(crate) fn bootstrap(dir: &Path, role_id: &str, secret_id: &str) -> (PathBuf, PathBuf) {
    let r = dir.join("role-id");
    let sid = dir.join("secret-id");
    std::fs::write(&r, role_id).expect("role id");
    std::fs::write(&sid, secret_id).expect("secret id");
    (r, sid)
}

const DB_TEMPLATE: &str =
    r#"{{ with secret "secret/data/web/db" }}{{ .Data.data.password }}{{ end }}"#;

fn approle_block(role: &Path, sid: &Path, extra: &str) -> String {
    approle_block_with(role, sid, extra, "")
}

fn approle_block_with(role: &Path, sid: &Path, extra: &str, method_opts: &str) -> String {
    format!(
        "auto_auth {{\n  method \"approle\" {{\n{method_opts}    config = {{\n      role_id_file_path = \"{}\"\n      secret_id_file_path = \"{}\"\n{extra}    }}\n  }}\n}}\n",
        role.display(),
        sid.display()
    )
}

/// Writes the app, a shell script (without its `#!` line), to `dir/app.sh`.
fn write_app(dir: &Path, script: &str) -> PathBuf {
    let app = dir.join("app.sh");
    std::fs::write(&app, format!("#!/bin/sh\n{script}")).expect("app");
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    app
}

/// Writes the app, a shell script, to `dir/app.sh`, and returns an exec-mode configuration: log
/// in with approle (`role`, `sid`, the secret ID kept after reading), render
/// `secret/data/web/db` into `dest` and into the app's `DB_PASSWORD`, run the app. `exec_extra`
/// adds lines to the `exec` block; more blocks may be appended.
pub(crate) fn exec_app(
    dir: &Path,
    addr: &str,
    (role, sid): (&Path, &Path),
    dest: &Path,
    script: &str,
    exec_extra: &str,
) -> String {
    let app = write_app(dir, script);
    format!(
        "coffer {{\n  address = \"{addr}\"\n}}\n{}template {{\n  contents = {DB_TEMPLATE:?}\n  destination = \"{}\"\n}}\nenv_template \"DB_PASSWORD\" {{\n  contents = {DB_TEMPLATE:?}\n}}\nexec {{\n  command = [\"{}\"]\n{exec_extra}}}\n",
        approle_block(role, sid, "      remove_secret_id_file_after_reading = false\n"),
        dest.display(),
        app.display(),
    )
}

#[tokio::test]
async fn wrapped_secret_id_renders_into_the_containers_tmpfs_and_follows_updates() {
    let dir = tempdir();
    let (s, _, root) = server_on_fixed_port(dir.path()).await;
    setup(&s, &root, "first-canary-7f3a").await;
    let rid = role_id(&s, &root).await;
    // The deploy carries only a wrapped, single-use secret ID.
    let resp = s
        .http()
        .post(format!("{}/v1/auth/approle/role/web/secret-id", s.addr))
        .header("X-Vault-Token", &root)
        .header("X-Vault-Wrap-TTL", "120s")
        .json(&json!({}))
        .send()
        .await
        .expect("wrap");
    assert_eq!(resp.status(), 200);
    let b: Value = resp.json().await.expect("json");
    let wrapping = b["wrap_info"]["token"].as_str().expect("wrapping token").to_owned();
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).expect("boot");
    let (role, sid) = bootstrap(&boot, &rid, &wrapping);
    let mnt = dir.path().join("secrets");
    let dest = mnt.join("db-password");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\n{}template_config {{\n  static_secret_render_interval = \"5m\"\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\nlistener \"unix\" {{\n  address = \"{}\"\n}}\n",
        s.addr,
        approle_block(
            &role,
            &sid,
            "      secret_id_response_wrapping_path = \"auth/approle/role/web/secret-id\"\n"
        ),
        DB_TEMPLATE,
        dest.display(),
        dir.path().join("agent.sock").display(),
    );
    let agent = Agent::start_in_container(dir.path(), &mnt, &config);
    agent.wait_for_content(&dest, "first-canary-7f3a", Duration::from_secs(15));

    // Inside the container: mode 0400; outside, the mount point is empty.
    let meta = std::fs::metadata(agent.path(&dest)).expect("meta");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o400);
    assert_eq!(
        std::fs::read_dir(&mnt).expect("host view").count(),
        0,
        "nothing on the host's disk"
    );
    // The wrapped secret ID was unwrapped once and its file removed.
    assert!(!sid.exists(), "the secret-id file is removed after reading");

    // A second agent with the same wrapping token cannot log in.
    std::fs::write(&sid, &wrapping).expect("replay");
    let dir2 = tempdir();
    let mnt2 = dir2.path().join("secrets");
    let config2 = config
        .replace(
            &dir.path().join("agent.sock").display().to_string(),
            &dir2.path().join("agent.sock").display().to_string(),
        )
        .replace(&mnt.display().to_string(), &mnt2.display().to_string())
        .replace("  method \"approle\" {\n", "  method \"approle\" {\n    exit_on_err = true\n");
    let mut replay = Agent::start_in_container(dir2.path(), &mnt2, &config2);
    let st = replay.wait_exit(Duration::from_secs(20));
    assert!(!st.success(), "a replayed wrapping token must not log in");
    assert!(replay.logs().contains("not valid"), "{}", replay.logs());

    // An update reaches the file by push (the poll is 5 minutes away), within a second.
    let start = Instant::now();
    while agent.status().1["events"] != "connected" {
        assert!(start.elapsed() < Duration::from_secs(10), "never subscribed:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    put(&s, &root, "second-canary-91bd").await;
    let took = agent.wait_for_content(&dest, "second-canary-91bd", Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "the update took {took:?}");
    let (code, st) = agent.status();
    assert_eq!(code, 200, "{st}");
    assert_eq!(st["auth"]["state"], "authenticated");
    assert_eq!(st["server"]["reachable"], true);
    let metrics = agent.api("/agent/v1/metrics").1;
    assert!(metrics.contains("coffer_agent_renders_total"), "{metrics}");

    // No secret in the agent's log.
    let log = agent.logs();
    for canary in ["first-canary-7f3a", "second-canary-91bd", &wrapping] {
        assert!(!log.contains(canary), "the agent log holds a secret:\n{log}");
    }
}

#[tokio::test]
async fn exec_mode_puts_secrets_in_the_apps_environment_restarts_it_and_cleans_up() {
    let dir = tempdir();
    let (s, _, root) = server_on_fixed_port(dir.path()).await;
    setup(&s, &root, "env-canary-1").await;
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).expect("boot");
    let (role, sid) = bootstrap(&boot, &rid, &sid_value);
    let mnt = dir.path().join("secrets");
    let dest = mnt.join("db-password");
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(&reports).expect("reports");
    // The app reports a hash of what it saw (never the value: the report dir is on disk), once
    // per start and on every SIGHUP; it exits 7 on SIGUSR1. The traps are set before the start
    // is reported: the test signals the app as soon as it sees the report.
    let script = format!(
        "R={}\ntrap 'cat {} | sha256sum | cut -c1-16 >> $R/hup' HUP\ntrap 'exit 7' USR1\nn=$(ls $R | wc -l)\nprintf %s \"$DB_PASSWORD\" | sha256sum | cut -c1-16 > $R/start-$n\nwhile :; do sleep 0.05; done\n",
        reports.display(),
        dest.display()
    );
    let exec = "  restart_on_secret_changes = \"always\"\n  reload_signal = \"SIGHUP\"\n";
    let config = exec_app(dir.path(), &s.addr, (&role, &sid), &dest, &script, exec)
        + &format!(
            "template_config {{\n  static_secret_render_interval = \"1s\"\n}}\nlistener \"unix\" {{\n  address = \"{}\"\n}}\n",
            dir.path().join("agent.sock").display(),
        );
    let mut agent = Agent::start_in_container(dir.path(), &mnt, &config);
    agent.wait_for_content(&dest, "env-canary-1", Duration::from_secs(15));
    let hash = |v: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s '{v}' | sha256sum | cut -c1-16")])
            .output()
            .expect("sha256sum");
        String::from_utf8(out.stdout).expect("utf8")
    };
    let wait_file = |p: &Path, want: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if std::fs::read_to_string(p).is_ok_and(|s| s.contains(want.trim())) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} never contained {want:?}: {:?}\n{}",
            p.display(),
            std::fs::read_to_string(p),
            agent.logs()
        );
    };
    wait_file(&reports.join("start-0"), &hash("env-canary-1"));

    // A change restarts the app with the new environment (and the file follows).
    put(&s, &root, "env-canary-2").await;
    agent.wait_for_content(&dest, "env-canary-2", Duration::from_secs(5));
    wait_file(&reports.join("start-1"), &hash("env-canary-2"));

    // The agent's own environment and command line hold no secret.
    let pid = agent.inner_pid().expect("pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    for blob in [&environ, &cmdline] {
        assert!(
            !String::from_utf8_lossy(blob).contains("env-canary"),
            "secret in the agent's own process"
        );
    }

    // The app's exit code is the agent's, and the rendered file is gone afterwards.
    let kids =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).expect("children");
    let app_pid = kids
        .split_whitespace()
        .find(|k| {
            std::fs::read(format!("/proc/{k}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("app.sh"))
        })
        .expect("the app among the agent's children")
        .to_owned();
    Command::new("kill").args(["-USR1", &app_pid]).status().expect("kill");
    let st = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(7), "{}", agent.logs());
    let log = agent.logs();
    assert!(log.contains("rendered files and token sinks removed"), "{log}");
    assert!(!log.contains("env-canary"), "secret in the agent log:\n{log}");
}

#[tokio::test]
async fn outage_keeps_the_app_on_its_secrets_and_the_agent_resumes() {
    let dir = tempdir();
    let (mut s, keys, root) = server_on_fixed_port(dir.path()).await;
    setup(&s, &root, "outage-1").await;
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).expect("boot");
    let (role, sid) = bootstrap(&boot, &rid, &sid_value);
    let mnt = dir.path().join("secrets");
    let dest = mnt.join("db-password");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n  retry {{\n    num_retries = 1\n  }}\n}}\n{}template_config {{\n  static_secret_render_interval = \"1s\"\n  max_stale = \"3s\"\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\nlistener \"unix\" {{\n  address = \"{}\"\n}}\n",
        s.addr,
        approle_block(&role, &sid, ""),
        DB_TEMPLATE,
        dest.display(),
        dir.path().join("agent.sock").display(),
    );
    let agent = Agent::start_in_container(dir.path(), &mnt, &config);
    agent.wait_for_content(&dest, "outage-1", Duration::from_secs(15));

    s.kill9();
    std::thread::sleep(Duration::from_secs(5));
    // The file stays; the agent says it is stale and unhealthy.
    assert_eq!(agent.read(&dest).as_deref(), Some("outage-1"));
    let (code, st) = agent.status();
    assert_eq!(code, 503, "{st}");
    assert_eq!(st["server"]["reachable"], false, "{st}");
    assert!(st["stale_seconds"].as_f64().expect("stale") >= 3.0, "{st}");

    // Back: unsealed, a new value written; the agent picks it up without a restart.
    s.restart();
    s.unseal(&keys).await;
    put(&s, &root, "outage-2").await;
    agent.wait_for_content(&dest, "outage-2", Duration::from_secs(20));
    let (code, st) = agent.status();
    assert_eq!(code, 200, "{st}");
}

#[tokio::test]
async fn a_revoked_token_makes_the_agent_log_in_again() {
    let dir = tempdir();
    let (s, _, root, role, sid) = approle_ready(dir.path(), true, "revoke-1").await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("db-password");
    let sink = shm.path().join("token");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\n{}template_config {{\n  static_secret_render_interval = \"1s\"\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\n",
        s.addr,
        with_sink(
            approle_block(&role, &sid, "      remove_secret_id_file_after_reading = false\n"),
            &format!("    config = {{ path = \"{}\" }}\n", sink.display()),
        ),
        DB_TEMPLATE,
        dest.display(),
    );
    let agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "revoke-1", Duration::from_secs(15));
    let first = std::fs::read_to_string(&sink).expect("sink");
    let (code, b) =
        s.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": first}))).await;
    assert_eq!(code, 204, "{b}");
    put(&s, &root, "revoke-2").await;
    agent.wait_for_content(&dest, "revoke-2", Duration::from_secs(15));
    let second = std::fs::read_to_string(&sink).expect("sink");
    assert_ne!(first, second, "a new token after the revocation");
    assert!(agent.logs().contains("logging in again"), "{}", agent.logs());
}

#[test]
fn check_config_validates_and_names_problems() {
    let dir = tempdir();
    let good = dir.path().join("good.hcl");
    std::fs::write(
        &good,
        "coffer {\n  address = \"http://127.0.0.1:1\"\n}\nauto_auth {\n  method \"token_file\" {\n    config = { token_file_path = \"/t\" }\n  }\n}\ntemplate {\n  contents = \"{{ with secret \\\"kv/x\\\" }}{{ .Data.v }}{{ end }}\"\n  destination = \"/dev/shm/coffer-check/x\"\n}\n",
    )
    .expect("write");
    let o = Command::new(BIN)
        .args(["agent", "-check-config", "-config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("configuration is valid"));

    // A destination on disk is refused, with the reason.
    let disk = dir.path().join("disk.hcl");
    let on_disk = dir.path().join("out");
    std::fs::create_dir_all(&on_disk).expect("dir");
    std::fs::write(
        &disk,
        std::fs::read_to_string(&good)
            .expect("read")
            .replace("/dev/shm/coffer-check", &on_disk.display().to_string()),
    )
    .expect("write");
    let o = Command::new(BIN)
        .args(["agent", "-check-config", "-config"])
        .arg(&disk)
        .output()
        .expect("run");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("disk-backed filesystem") && err.contains("allow_disk"), "{err}");

    // A broken template is named.
    let bad = dir.path().join("bad.hcl");
    std::fs::write(&bad, std::fs::read_to_string(&good).expect("read").replace("{{ end }}", ""))
        .expect("write");
    let o = Command::new(BIN)
        .args(["agent", "-check-config", "-config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("template for /dev/shm/coffer-check/x"));
}

#[tokio::test]
async fn an_agent_restarted_during_an_outage_starts_from_its_encrypted_cache() {
    restarted_during_an_outage(Outage::Down).await;
}

/// A server that hangs (paused; a partition that drops packets looks the same) must not hold the
/// render from the cache for a request timeout, even with a token restored from the cache.
#[tokio::test]
async fn an_agent_restarted_while_the_server_hangs_renders_from_its_cache_at_once() {
    restarted_during_an_outage(Outage::Hung).await;
}

#[derive(PartialEq)]
enum Outage {
    /// Killed: connections are refused.
    Down,
    /// SIGSTOP: connections are accepted by the kernel and never answered.
    Hung,
}

async fn restarted_during_an_outage(outage: Outage) {
    let dir = tempdir();
    let (mut s, keys, root, role, sid) = approle_ready(dir.path(), true, "cache-canary-1").await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("db-password");
    let cache = dir.path().join("cache").join("agent.cache");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n  retry {{\n    num_retries = 0\n  }}\n}}\n{}template_config {{\n  static_secret_render_interval = \"1s\"\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\ncache {{\n  persist {{\n    path = \"{}\"\n    key_path = \"{}\"\n  }}\n}}\n",
        s.addr,
        approle_block(&role, &sid, ""),
        DB_TEMPLATE,
        dest.display(),
        cache.display(),
        shm.path().join("cache.key").display(),
    );
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "cache-canary-1", Duration::from_secs(15));
    assert!(!sid.exists(), "the secret ID was read once and removed: no second login is possible");
    // The cache is written just after the pass that delivered the file.
    let start = Instant::now();
    while !cache.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sealed = std::fs::read_to_string(&cache).expect("cache written");
    assert!(!sealed.contains("cache-canary-1"), "the cache on disk is encrypted");

    // The server goes away, then the agent restarts (the rendered file lost with it).
    let pid = s.pid().to_string();
    match outage {
        Outage::Down => s.kill9(),
        Outage::Hung => {
            assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success())
        }
    }
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
    std::fs::remove_file(&dest).expect("rm");
    let agent = Agent::start(dir.path(), &config);
    // Well within the agent's 30 s request timeout.
    agent.wait_for_content(&dest, "cache-canary-1", Duration::from_secs(5));
    assert!(agent.logs().contains("secrets restored from the persisted cache"), "{}", agent.logs());

    // The server is back: the cached token still works, and new values arrive.
    match outage {
        Outage::Down => {
            s.restart();
            s.unseal(&keys).await;
        }
        Outage::Hung => {
            assert!(Command::new("kill").args(["-CONT", &pid]).status().expect("kill").success())
        }
    }
    put(&s, &root, "cache-canary-2").await;
    agent.wait_for_content(&dest, "cache-canary-2", Duration::from_secs(20));
    assert!(agent.logs().contains("using the token from the persisted cache"), "{}", agent.logs());
    let log = agent.logs();
    assert!(!log.contains("cache-canary"), "secret in the agent log:\n{log}");
}

/// A server with the database engine on database `db` (role `readonly`, `ttl`, `max_ttl`) and
/// an AppRole role whose tokens may read its credentials and renew leases: (server, root token,
/// role-id file, secret-id file).
async fn db_agent_setup(
    dir: &Path,
    c: &coffer_pgtest::Cluster,
    db: &str,
    ttl: &str,
    max_ttl: &str,
) -> (Server, String, PathBuf, PathBuf) {
    let (s, _, root) = crate::database_leases::setup(dir, c, db, ttl, max_ttl).await;
    for (path, body) in [
        ("sys/auth/approle", json!({"type": "approle"})),
        (
            "sys/policies/acl/dbweb",
            json!({"policy": "path \"database/creds/readonly\" { capabilities = [\"read\"] }\npath \"sys/leases/renew\" { capabilities = [\"update\"] }"}),
        ),
        ("auth/approle/role/web", json!({"token_policies": ["dbweb"], "token_ttl": "1h"})),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {code} {b}");
    }
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let (role, sid) = bootstrap(dir, &rid, &sid_value);
    (s, root, role, sid)
}

/// Restarted with its persisted cache while the server is up, the agent keeps the database
/// credential it had (renewing its lease) rather than leaving a second user behind.
#[tokio::test]
async fn a_restarted_agent_keeps_its_cached_database_credential_and_renews_it() {
    let c = coffer_pgtest::Cluster::shared();
    let dir = tempdir();
    let (s, root, role, sid) = db_agent_setup(dir.path(), c, "ag_keep", "1h", "2h").await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("db.user");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\n{}template {{\n  contents = {:?}\n  destination = \"{}\"\n}}\ncache {{\n  persist {{\n    path = \"{}\"\n    key_path = \"{}\"\n  }}\n}}\n",
        s.addr,
        approle_block(&role, &sid, ""),
        r#"{{ with secret "database/creds/readonly" }}{{ .Data.username }}{{ end }}"#,
        dest.display(),
        dir.path().join("cache").join("agent.cache").display(),
        shm.path().join("cache.key").display(),
    );
    let read = || std::fs::read_to_string(&dest).ok().filter(|u| !u.is_empty());
    let mut agent = Agent::start(dir.path(), &config);
    let start = Instant::now();
    let first = loop {
        if let Some(u) = read() {
            break u;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never rendered:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    // The cache is written just after the pass that delivered the file.
    std::thread::sleep(Duration::from_millis(500));
    agent.signal("TERM");
    assert!(agent.wait_exit(Duration::from_secs(10)).success());

    let agent = Agent::start(dir.path(), &config);
    let start = Instant::now();
    while !agent.logs().contains("lease renewed") {
        assert!(start.elapsed() < Duration::from_secs(10), "no renewal:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read().as_deref(), Some(first.as_str()), "the same credential after the restart");
    let (code, b) =
        s.call("LIST", "sys/leases/lookup/database/creds/readonly", Some(&root), None).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["keys"].as_array().map(Vec::len), Some(1), "one lease, one user: {b}");
}

#[tokio::test]
async fn a_dynamic_database_credential_is_renewed_then_reissued_before_its_max_ttl() {
    let c = coffer_pgtest::Cluster::shared();
    let dir = tempdir();
    let (s, root, role, sid) = db_agent_setup(dir.path(), c, "ag_dyn", "4s", "12s").await;
    let audit_log = dir.path().join("audit.log");
    crate::audit::enable_file_device(&s, &root, &audit_log).await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("db.creds");
    // The app: on SIGHUP it connects again with the credential in its file and reports the
    // query's answer.
    let reports = dir.path().join("reconnects");
    let app = write_app(
        dir.path(),
        &format!(
            "trap 'read u p < {creds}; PGPASSWORD=\"$p\" {psql} -X -q -A -t -h 127.0.0.1 -p {port} -U \"$u\" -d ag_dyn -c \"SELECT x FROM reports\" >> {reports} 2>&1' HUP\nwhile :; do sleep 0.05; done\n",
            creds = dest.display(),
            psql = psql().display(),
            port = c.port(),
            reports = reports.display(),
        ),
    );
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\n{}template {{\n  contents = {:?}\n  destination = \"{}\"\n}}\nexec {{\n  command = [\"{}\"]\n  reload_signal = \"SIGHUP\"\n}}\nlistener \"unix\" {{\n  address = \"{}\"\n}}\n",
        s.addr,
        approle_block(&role, &sid, ""),
        r#"{{ with secret "database/creds/readonly" }}{{ .Data.username }} {{ .Data.password }}{{ end }}"#,
        dest.display(),
        app.display(),
        dir.path().join("agent.sock").display(),
    );
    let agent = Agent::start(dir.path(), &config);
    let read_creds = || -> Option<(String, String)> {
        let t = std::fs::read_to_string(&dest).ok()?;
        let (u, p) = t.split_once(' ')?;
        Some((u.to_owned(), p.to_owned()))
    };
    let start = Instant::now();
    let first = loop {
        if let Some(c) = read_creds() {
            break c;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never rendered:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    let issued = Instant::now();
    assert_eq!(
        crate::database::login(c, &first.0, &first.1, "ag_dyn", "SELECT x FROM reports").as_deref(),
        Ok("42")
    );

    // Renewed at about 2/3 of its 4 s lease (the file does not change), then, once renewal no
    // longer extends it as asked, replaced by a new credential before the 12 s max TTL.
    let second = loop {
        match read_creds() {
            Some(c) if c != first => break c,
            _ => {}
        }
        assert!(
            issued.elapsed() < Duration::from_secs(12),
            "not re-issued before max TTL:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let metrics = agent.api("/agent/v1/metrics").1;
    let renewals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("coffer_agent_lease_renewals_total "))
        .and_then(|v| v.parse().ok())
        .expect("renewals metric");
    assert!(renewals >= 1, "the lease was renewed before being replaced:\n{metrics}");
    assert_eq!(
        crate::database::login(c, &second.0, &second.1, "ag_dyn", "SELECT x FROM reports")
            .as_deref(),
        Ok("42")
    );
    // The app was signalled and connected again with the new credential.
    let start = Instant::now();
    while !std::fs::read_to_string(&reports).is_ok_and(|r| r.lines().any(|l| l == "42")) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the app did not reconnect: {:?}\n{}",
            std::fs::read_to_string(&reports),
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = agent.logs();
    assert!(
        !log.contains(&first.1) && !log.contains(&second.1),
        "password in the agent log:\n{log}"
    );
    // The server's audit log says why the file changed, and holds neither password.
    let reissued = crate::agent_audit::reports(&audit_log, 2).into_iter().any(|e| {
        let d = &e["request"]["data"];
        d["event"] == "redelivered"
            && d["reason"] == "lease-reissue"
            && d["paths"] == json!(["database/creds/readonly"])
    });
    assert!(reissued, "no lease-reissue report in the audit log");
    let audit = std::fs::read_to_string(&audit_log).expect("audit log");
    assert!(!audit.contains(&first.1) && !audit.contains(&second.1), "password in the audit log");
}

/// kv v2 at `secret/` with `secret/data/web/db` = `value`, readable under the policy `web`.
async fn kv_for_web(s: &Server, root: &str, value: &str) {
    for (path, body) in [
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        ("sys/policies/acl/web", json!({"policy": WEB_POLICY})),
    ] {
        let (code, b) = s.call("POST", path, Some(root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {code} {b}");
    }
    put(s, root, value).await;
}

/// An agent config with `method`, rendering DB_TEMPLATE to `dest`.
fn method_config(addr: &str, method: &str, dest: &Path) -> String {
    format!(
        "coffer {{\n  address = \"{addr}\"\n}}\nauto_auth {{\n{method}}}\ntemplate_config {{\n  static_secret_render_interval = \"1s\"\n}}\ntemplate {{\n  contents = {DB_TEMPLATE:?}\n  destination = \"{}\"\n}}\n",
        dest.display()
    )
}

// The test's identity provider runs on this runtime while the test thread waits: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_reads_the_token_file_again_at_every_login() {
    use crate::jwt::{Idp, Key, now};
    let key = Key::rsa();
    let idp = Idp::start(vec![key.jwk("k1")]).await;
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    kv_for_web(&s, &root, "jwt-canary-1").await;
    for (path, body) in [
        ("sys/auth/jwt", json!({"type": "jwt"})),
        (
            "auth/jwt/config",
            json!({"jwks_url": format!("{}/jwks", idp.url), "bound_issuer": "https://ci.example.com"}),
        ),
        (
            "auth/jwt/role/web",
            json!({"role_type": "jwt", "bound_audiences": ["coffer"], "user_claim": "sub", "token_policies": ["web"], "token_ttl": "1h"}),
        ),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {code} {b}");
    }
    let jwt = |sub: &str| {
        let t = now();
        key.jwt(
            Some("k1"),
            &json!({"iss": "https://ci.example.com", "aud": "coffer", "sub": sub, "iat": t, "nbf": t, "exp": t + 600}),
        )
    };
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm");
    let token_file = shm.path().join("jwt");
    std::fs::write(&token_file, jwt("system:serviceaccount:prod:web")).expect("jwt");
    let dest = shm.path().join("db-password");
    let sink = shm.path().join("token");
    let method = format!(
        "  method \"jwt\" {{\n    config = {{\n      role = \"web\"\n      path = \"{}\"\n    }}\n  }}\n  sink \"file\" {{\n    config = {{ path = \"{}\" }}\n  }}\n",
        token_file.display(),
        sink.display()
    );
    let agent = Agent::start(dir.path(), &method_config(&s.addr, &method, &dest));
    agent.wait_for_content(&dest, "jwt-canary-1", Duration::from_secs(15));
    assert!(token_file.exists(), "a projected token file is not removed");

    // The platform rotates the JWT; after a revocation the agent logs in with the new one.
    std::fs::write(&token_file, jwt("system:serviceaccount:prod:web-2")).expect("rotate");
    let first = std::fs::read_to_string(&sink).expect("sink");
    let (code, b) =
        s.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": first}))).await;
    assert_eq!(code, 204, "{b}");
    put(&s, &root, "jwt-canary-2").await;
    agent.wait_for_content(&dest, "jwt-canary-2", Duration::from_secs(15));
    let second = std::fs::read_to_string(&sink).expect("sink");
    let (code, b) =
        s.call("POST", "auth/token/lookup", Some(&root), Some(json!({"token": second}))).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["data"]["display_name"], "jwt-system:serviceaccount:prod:web-2", "{b}");
}

// The test's API server runs on this runtime while the test thread waits: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_auth_logs_in_with_the_projected_service_account_token() {
    use crate::kubernetes::Cluster;
    let cluster = Cluster::start().await;
    cluster.service_account("prod", "web");
    cluster.service_account("kube-system", "coffer");
    cluster.delegator("kube-system", "coffer", true);
    cluster.pod("prod", "web-7d9f", true);
    let reviewer = cluster.legacy_token("kube-system", "coffer");
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    kv_for_web(&s, &root, "k8s-canary-1").await;
    for (path, body) in [
        ("sys/auth/kubernetes", json!({"type": "kubernetes"})),
        (
            "auth/kubernetes/config",
            json!({"kubernetes_host": cluster.url, "kubernetes_ca_cert": cluster.ca_pem, "token_reviewer_jwt": reviewer, "disable_local_ca_jwt": true}),
        ),
        (
            "auth/kubernetes/role/web",
            json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "prod", "audience": "coffer", "token_policies": "web", "token_ttl": "1h"}),
        ),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {code} {b}");
    }
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm");
    let token_path = shm.path().join("token");
    let exp = crate::jwt::now() + 600;
    std::fs::write(&token_path, cluster.projected_token("prod", "web", "coffer", "web-7d9f", exp))
        .expect("projected token");
    let dest = shm.path().join("db-password");
    let method = format!(
        "  method \"kubernetes\" {{\n    config = {{\n      role = \"web\"\n      token_path = \"{}\"\n    }}\n  }}\n",
        token_path.display()
    );
    let agent = Agent::start(dir.path(), &method_config(&s.addr, &method, &dest));
    agent.wait_for_content(&dest, "k8s-canary-1", Duration::from_secs(15));
}

#[tokio::test]
async fn after_exit_a_canary_is_nowhere_on_disk_nor_in_any_log() {
    let dir = tempdir();
    let (s, _, root) = server_on_fixed_port(dir.path()).await;
    let canary = "canary-e1d7c0ffee-4b2a";
    setup(&s, &root, canary).await;
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let (role, sid) = bootstrap(dir.path(), &rid, &sid_value);
    let mnt = dir.path().join("secrets");
    let dest = mnt.join("db-password");
    // The app checks it got the secret (file and environment) and exits 0 only then.
    let script = format!(
        "[ \"$DB_PASSWORD\" = \"$(cat {})\" ] && [ -n \"$DB_PASSWORD\" ] || exit 9\nexit 0\n",
        dest.display()
    );
    let config = exec_app(dir.path(), &s.addr, (&role, &sid), &dest, &script, "");
    let mut agent = Agent::start_in_container(dir.path(), &mnt, &config);
    let st = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(
        st.code(),
        Some(0),
        "the app saw the secret in its file and environment:\n{}",
        agent.logs()
    );
    drop(s);
    // Every byte the server, the agent and the test wrote on disk: storage, logs, configs.
    let mut stack = vec![dir.path().to_owned()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                files += 1;
                assert!(
                    !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                    "the secret is in {}",
                    p.display()
                );
            }
        }
    }
    assert!(files >= 4, "scanned server storage, logs and configs ({files} files)");
}

// The relay runs on this runtime while the test thread waits: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_answers_are_sealed_on_the_wire_and_its_sink_encrypted_to_the_consumer() {
    use coffer_api::dhutil::{DhKey, decrypt};
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let canary = "sealed-agent-canary-31f0";
    setup(&s, &root, canary).await;
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let (role, sid) = bootstrap(dir.path(), &rid, &sid_value);
    let relay = crate::sealed::Relay::start(&s).await;
    // The consumer of the token sink publishes its curve25519 key, as Vault's dh_path expects.
    let consumer = DhKey::generate().expect("dh key");
    let dh_path = dir.path().join("consumer.pub.json");
    std::fs::write(&dh_path, serde_json::to_vec(&consumer.public_key_info()).expect("json"))
        .expect("public key");
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm");
    let dest = shm.path().join("db-password");
    // Encrypted to its consumer, the sink may go to disk.
    let sink = dir.path().join("token.sealed");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\n{}template {{\n  contents = {:?}\n  destination = \"{}\"\n}}\n",
        relay.addr,
        with_sink(
            approle_block(&role, &sid, ""),
            &format!(
                "    dh_type = \"curve25519\"\n    dh_path = \"{}\"\n    aad = \"web-7d9f\"\n    config = {{ path = \"{}\" }}\n",
                dh_path.display(),
                sink.display()
            ),
        ),
        DB_TEMPLATE,
        dest.display(),
    );
    let agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, canary, Duration::from_secs(15));
    let token = decrypt(&consumer, &std::fs::read(&sink).expect("sink"), b"web-7d9f", false)
        .expect("the consumer opens the sink");
    let (code, b) = s.call("GET", "auth/token/lookup-self", Some(&token), None).await;
    assert_eq!(code, 200, "{b}");
    let wire = relay.wire();
    assert!(wire.contains("\"sealed\""), "the answers were sealed");
    assert!(!wire.contains(canary), "the secret crossed the wire in clear");
    assert!(!wire.contains(token.as_str()), "the agent's token crossed the wire in clear");
    assert!(!std::fs::read_to_string(&sink).expect("sink").contains(token.as_str()));
}

#[tokio::test]
async fn a_changed_file_signals_the_app_within_a_second() {
    let dir = tempdir();
    let (s, _, root, role, sid) = approle_ready(dir.path(), false, "hup-canary-1").await;
    let mnt = dir.path().join("secrets");
    let dest = mnt.join("db-password");
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(&reports).expect("reports");
    // On SIGHUP the app reads its file again and reports (a hash of) what it read.
    let app = write_app(
        dir.path(),
        &format!(
            "trap 'sha256sum < {} | cut -c1-16 >> {}/hup' HUP\nwhile :; do sleep 0.02; done\n",
            dest.display(),
            reports.display()
        ),
    );
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\n{}template_config {{\n  static_secret_render_interval = \"5m\"\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\nexec {{\n  command = [\"{}\"]\n  reload_signal = \"SIGHUP\"\n}}\nlistener \"unix\" {{\n  address = \"{}\"\n}}\n",
        s.addr,
        approle_block(&role, &sid, ""),
        DB_TEMPLATE,
        dest.display(),
        app.display(),
        dir.path().join("agent.sock").display(),
    );
    let agent = Agent::start_in_container(dir.path(), &mnt, &config);
    agent.wait_for_content(&dest, "hup-canary-1", Duration::from_secs(15));
    let start = Instant::now();
    while agent.status().1["events"] != "connected" {
        assert!(start.elapsed() < Duration::from_secs(10), "never subscribed:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("sh")
        .args(["-c", "printf %s hup-canary-2 | sha256sum | cut -c1-16"])
        .output()
        .expect("sha");
    let want = String::from_utf8(out.stdout).expect("utf8");
    put(&s, &root, "hup-canary-2").await;
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(reports.join("hup")).is_ok_and(|r| r.contains(want.trim())) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the app was not signalled with the new file within 1 s:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let metrics = agent.api("/agent/v1/metrics").1;
    assert!(metrics.contains("coffer_agent_app_signals_total 1"), "{metrics}");
    assert!(metrics.contains("coffer_agent_event_stream_connected 1"), "{metrics}");
}

#[tokio::test]
async fn cert_auth_logs_in_over_mutual_tls() {
    use crate::cert::{ca, client, start};
    let dir = tempdir();
    let (s, server_ca) = start(dir.path());
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    kv_for_web(&s, &root, "cert-canary-1").await;
    let workload_ca = ca("Workload CA");
    let ca_file = dir.path().join("workload-ca.pem");
    std::fs::write(&ca_file, &workload_ca.pem).expect("write");
    for (path, body) in [
        ("sys/auth/cert", json!({"type": "cert"})),
        (
            "auth/cert/certs/web",
            json!({"certificate": workload_ca.pem, "allowed_common_names": "web*.prod.svc", "token_policies": "web", "token_ttl": "20m"}),
        ),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {code} {b}");
    }
    let (cert, key) =
        client(Some(&workload_ca), "web1.prod.svc", None, None, |_| {}).files(dir.path(), "web1");
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm");
    let dest = shm.path().join("db-password");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n  ca_cert = \"{}\"\n  client_cert = \"{}\"\n  client_key = \"{}\"\n}}\nauto_auth {{\n  method \"cert\" {{\n    config = {{ name = \"web\" }}\n  }}\n}}\ntemplate {{\n  contents = {DB_TEMPLATE:?}\n  destination = \"{}\"\n}}\n",
        s.addr,
        server_ca.display(),
        cert.display(),
        key.display(),
        dest.display(),
    );
    let agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "cert-canary-1", Duration::from_secs(15));
}

#[tokio::test]
async fn a_template_command_runs_on_change_owner_is_set_and_max_stale_stops_the_app() {
    let dir = tempdir();
    let (mut s, _, _, role, sid) = approle_ready(dir.path(), true, "owner-canary-1").await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm");
    let dest = shm.path().join("db-password");
    let marker = dir.path().join("command-ran");
    let app = write_app(dir.path(), "trap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n  retry {{\n    num_retries = 0\n  }}\n}}\n{}template_config {{\n  static_secret_render_interval = \"1s\"\n  max_stale = \"2s\"\n  exit_on_max_stale = true\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n  user = \"nobody\"\n  group = \"nogroup\"\n  perms = \"0440\"\n  exec {{\n    command = [\"/bin/sh\", \"-c\", \"echo ran >> {}\"]\n  }}\n}}\nexec {{\n  command = [\"{}\"]\n}}\n",
        s.addr,
        approle_block(&role, &sid, "      remove_secret_id_file_after_reading = false\n"),
        DB_TEMPLATE,
        dest.display(),
        marker.display(),
        app.display(),
    );
    let mut agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "owner-canary-1", Duration::from_secs(15));
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = std::fs::metadata(&dest).expect("meta");
    assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    let nobody = crate::agent::id_of("/etc/passwd", "nobody");
    let nogroup = crate::agent::id_of("/etc/group", "nogroup");
    assert_eq!((meta.uid(), meta.gid()), (nobody, nogroup), "owner set from user/group");
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the template's command never ran:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The server goes away for longer than max_stale: the agent stops the app and exits 1, and
    // (exec mode) removes the file.
    s.kill9();
    let st = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(1), "{}", agent.logs());
    assert!(agent.logs().contains("max_stale"), "{}", agent.logs());
    assert!(!dest.exists(), "the rendered file is removed when the agent stops the app");
}

/// The psql of the PostgreSQL the tests run (the newest in /usr/lib/postgresql, else on PATH).
fn psql() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin/psql")).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from("psql"))
}

/// The numeric id of `name` in /etc/passwd or /etc/group.
pub(crate) fn id_of(db: &str, name: &str) -> u32 {
    std::fs::read_to_string(db)
        .expect("db")
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f[2].parse().expect("id"))
        })
        .unwrap_or_else(|| panic!("no {name} in {db}"))
}

/// The server closes a revoked token's event stream: the agent checks its token at once and
/// logs in again, so the next change still arrives within seconds (the token's renewal, at two
/// thirds of an hour, is far away).
#[tokio::test]
async fn a_revoked_token_is_replaced_at_once_and_changes_keep_arriving() {
    let dir = tempdir();
    let (s, _, root, role, sid) = approle_ready(dir.path(), false, "revoked-canary-1").await;
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("db-password");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\n{}template {{\n  contents = {:?}\n  destination = \"{}\"\n}}\n",
        s.addr,
        approle_block(&role, &sid, "      remove_secret_id_file_after_reading = false\n"),
        DB_TEMPLATE,
        dest.display(),
    );
    let agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "revoked-canary-1", Duration::from_secs(15));
    let start = Instant::now();
    while !agent.logs().contains("subscribed to change events") {
        assert!(start.elapsed() < Duration::from_secs(10), "never subscribed:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, b) =
        s.call("POST", "sys/leases/revoke-prefix/auth/approle/login", Some(&root), None).await;
    assert_eq!(code, 204, "{b}");
    put(&s, &root, "revoked-canary-2").await;
    let took = agent.wait_for_content(&dest, "revoked-canary-2", Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "the change took {took:?}:\n{}", agent.logs());
    assert!(agent.logs().contains("logging in again"), "{}", agent.logs());
}
