//! Test harness: the real `coffer` binary on an ephemeral loopback port, with its own temp dir,
//! captured logs, and helpers to talk to it over HTTP, through the CLI, and to stop or kill it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_coffer");

pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) addr: String,
    pub(crate) dir: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) ca: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Which storage a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    /// What `COFFER_TEST_STORAGE` says: `sqlite` (the default) or `postgresql`.
    Default,
    /// SQLite at `DIR/coffer.db`, for tests that open that file or test sqlite's options.
    Sqlite,
}

/// The storage the suite runs on, from `COFFER_TEST_STORAGE` (unset: sqlite).
fn suite_storage() -> &'static str {
    static KIND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    KIND.get_or_init(|| match std::env::var("COFFER_TEST_STORAGE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => "sqlite",
        Ok("postgresql") => "postgresql",
        Ok(other) => {
            panic!("COFFER_TEST_STORAGE must be \"sqlite\" or \"postgresql\", not {other:?}")
        }
    })
}

/// The `storage` block for a new server in `dir`: sqlite at `dir/coffer.db`, or, when the suite
/// runs on PostgreSQL, a fresh database of its own on this process's shared cluster (a restart
/// of the same server reads the same config, and so keeps its database).
pub(crate) fn storage_block(dir: &Path, storage: Storage) -> String {
    if storage == Storage::Default && suite_storage() == "postgresql" {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = coffer_pgtest::Cluster::shared().create_database(&format!("it_{n}"));
        format!("storage \"postgresql\" {{\n  connection_url = \"{url}\"\n}}\n")
    } else {
        format!("storage \"sqlite\" {{\n  path = \"{}\"\n}}\n", dir.join("coffer.db").display())
    }
}

fn plain_config(dir: &Path, storage: Storage) -> String {
    plain_config_with(dir, storage, "")
}

/// The listener lines that serve `sys/generate-root/*` and `sys/rekey/*` without a token
/// (refused by default, as in OpenBao).
pub(crate) const KEY_SHARE_ENDPOINTS: &str = "  disable_unauthed_generate_root_endpoints = false\n  disable_unauthed_rekey_endpoints = false\n";

/// A plain-HTTP config with `listener` (whole lines) added to its listener block.
pub(crate) fn plain_config_with(dir: &Path, storage: Storage, listener: &str) -> String {
    format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n{listener}}}\nlog_level = \"trace\"\n",
        storage_block(dir, storage)
    )
}

/// A plain-HTTP config on the suite's storage (see [`storage_block`]).
pub(crate) fn default_config(dir: &Path) -> String {
    plain_config(dir, Storage::Default)
}

/// A plain-HTTP config on sqlite at `dir/coffer.db`, whatever the suite runs on.
pub(crate) fn sqlite_config(dir: &Path) -> String {
    plain_config(dir, Storage::Sqlite)
}

impl Server {
    /// Starts `coffer server -config` with `config` written into `dir`.
    pub(crate) fn start_with(dir: &Path, config: &str, scheme: &str) -> Server {
        Self::start_via(dir, config, scheme, &[])
    }

    /// As [`Server::start_with`], with the binary run by `wrapper` (e.g. `ip netns exec NAME`,
    /// which execs it: the child's pid is the server's).
    pub(crate) fn start_via(dir: &Path, config: &str, scheme: &str, wrapper: &[&str]) -> Server {
        std::fs::create_dir_all(dir).expect("dir");
        let cfg = dir.join("coffer.hcl");
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.join(format!(
            "server-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("time")
                .as_nanos()
        ));
        let mut child = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        }
        .args(["server", "-config"])
        .arg(&cfg)
        .env("COFFER_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .spawn()
        .expect("spawn coffer server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut addr = None;
        let mut seen = String::new();
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            seen.push_str(&line);
            seen.push('\n');
            if addr.is_none()
                && let Some(rest) = line.split("addr: \"").nth(1)
            {
                addr = rest.split('"').next().map(str::to_owned);
            }
            if line.contains("Coffer server started") {
                break;
            }
        }
        let log_copy = std::fs::read_to_string(&log).unwrap_or_default();
        let addr = addr.unwrap_or_else(|| {
            panic!("server did not start; stdout:\n{seen}\nstderr:\n{log_copy}")
        });
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Server {
            child: Some(child),
            addr: format!("{scheme}://{addr}"),
            dir: dir.to_owned(),
            config: cfg,
            log,
            ca: None,
        }
    }

    /// A server on the suite's storage (sqlite, or PostgreSQL with COFFER_TEST_STORAGE).
    pub(crate) fn start(dir: &Path) -> Server {
        Self::start_with(dir, &default_config(dir), "http")
    }

    /// A server on sqlite at `dir/coffer.db`, for tests that look into that file.
    pub(crate) fn start_sqlite(dir: &Path) -> Server {
        Self::start_with(dir, &sqlite_config(dir), "http")
    }

    /// Restarts on the same config (and so the same storage); the port may change.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let cfg = std::fs::read_to_string(&self.config).expect("config");
        let scheme = if self.addr.starts_with("https") { "https" } else { "http" };
        let ca = self.ca.take();
        let mut next = Server::start_with(&self.dir, &cfg, scheme);
        next.ca = ca;
        std::mem::swap(self, &mut next);
    }

    /// SIGTERM and wait: the graceful path.
    /// Returns the exit status when the server stopped by itself within 20 s.
    pub(crate) fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// SIGKILL: the crash path.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("server is running")
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn http(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).expect("ca");
            b = b.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("ca pem"));
        }
        b.build().expect("client")
    }

    /// One request; returns status and JSON body (Null for an empty body).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_with(method, path, token, body, &[]).await
    }

    /// [`Server::call`] with extra request headers.
    pub(crate) async fn call_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http().request(m, format!("{}/v1/{}", self.addr, path));
        if let Some(t) = token {
            rb = rb.header("X-Vault-Token", t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, v)
    }

    /// `sys/init` with `shares`/`threshold`; returns (hex keys, root token).
    pub(crate) async fn init(&self, shares: u64, threshold: u64) -> (Vec<String>, String) {
        let (s, b) = self
            .call(
                "PUT",
                "sys/init",
                None,
                Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
            )
            .await;
        assert_eq!(s, 200, "init: {b}");
        let keys = b["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_owned())
            .collect();
        (keys, b["root_token"].as_str().expect("root").to_owned())
    }

    pub(crate) async fn unseal(&self, keys: &[String]) {
        for k in keys {
            let (s, b) = self.call("PUT", "sys/unseal", None, Some(json!({"key": k}))).await;
            assert_eq!(s, 200, "unseal: {b}");
            if b["sealed"] == json!(false) {
                return;
            }
        }
        panic!("still sealed after {} keys", keys.len());
    }

    /// A fresh server on the suite's storage, initialized (1 share) and unsealed:
    /// (server, key, root token).
    pub(crate) async fn ready(dir: &Path) -> (Server, Vec<String>, String) {
        Self::ready_on(dir, Storage::Default).await
    }

    /// [`Server::ready`] on sqlite at `dir/coffer.db`, for tests that look into that file.
    pub(crate) async fn ready_sqlite(dir: &Path) -> (Server, Vec<String>, String) {
        Self::ready_on(dir, Storage::Sqlite).await
    }

    pub(crate) async fn ready_on(dir: &Path, storage: Storage) -> (Server, Vec<String>, String) {
        Self::ready_with(dir, &plain_config(dir, storage)).await
    }

    /// [`Server::ready`] on `config`.
    pub(crate) async fn ready_with(dir: &Path, config: &str) -> (Server, Vec<String>, String) {
        let s = Server::start_with(dir, config, "http");
        let (keys, root) = s.init(1, 1).await;
        s.unseal(&keys).await;
        (s, keys, root)
    }

    /// Mounts kv version 2 at `secret/` with `root` (a 204 is expected).
    pub(crate) async fn mount_kv2(&self, root: &str) {
        let (code, b) = self
            .call(
                "POST",
                "sys/mounts/secret",
                Some(root),
                Some(json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        assert_eq!(code, 204, "mount kv v2 at secret/: {b}");
    }

    /// Writes the ACL policy `name` with `root` (a 204 is expected).
    pub(crate) async fn put_policy(&self, root: &str, name: &str, hcl: &str) {
        let (code, b) = self
            .call(
                "PUT",
                &format!("sys/policies/acl/{name}"),
                Some(root),
                Some(json!({"policy": hcl})),
            )
            .await;
        assert_eq!(code, 204, "policy {name}: {b}");
    }

    /// A new child token of `parent` with `policies`.
    pub(crate) async fn token_with(&self, parent: &str, policies: &[&str]) -> String {
        let (code, b) = self
            .call("POST", "auth/token/create", Some(parent), Some(json!({"policies": policies})))
            .await;
        assert_eq!(code, 200, "token create: {b}");
        b["auth"]["client_token"].as_str().expect("token").to_owned()
    }

    /// The role id of AppRole role `role` and a new secret id for it.
    pub(crate) async fn approle_credentials(&self, root: &str, role: &str) -> (String, String) {
        let (_, b) =
            self.call("GET", &format!("auth/approle/role/{role}/role-id"), Some(root), None).await;
        let role_id = b["data"]["role_id"].as_str().expect("role_id").to_owned();
        let (_, b) = self
            .call("POST", &format!("auth/approle/role/{role}/secret-id"), Some(root), None)
            .await;
        let secret_id = b["data"]["secret_id"].as_str().expect("secret_id").to_owned();
        (role_id, secret_id)
    }

    /// `auth/approle/login`: status and body, whatever they are.
    pub(crate) async fn approle_login(&self, role_id: &str, secret_id: &str) -> (u16, Value) {
        self.call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": role_id, "secret_id": secret_id})),
        )
        .await
    }

    /// Runs the CLI against this server with `token` in COFFER_TOKEN and a private HOME.
    pub(crate) fn cli(&self, token: Option<&str>, args: &[&str]) -> Output {
        self.cli_stdin(token, args, None)
    }

    pub(crate) fn cli_stdin(
        &self,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Output {
        let home = self.dir.join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("COFFER_ADDR", &self.addr)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("COFFER_TOKEN", t);
        }
        if let Some(ca) = &self.ca {
            cmd.env("COFFER_CACERT", ca);
        }
        let mut child = cmd.spawn().expect("spawn cli");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("cli output")
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the CLI succeeded, showing its output otherwise; returns stdout.
pub(crate) fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("coffer-it-").tempdir().expect("tempdir")
}

/// A loopback port nothing listens on now, from 10000 to 19999: below the kernel's ephemeral
/// range (32768 and up by default) and below the ports `coffer-pgtest` picks for its clusters
/// (20000 to 31999). A port found free by binding `127.0.0.1:0` comes from the ephemeral range,
/// where every server the tests start on port 0 (and every outgoing connection) also lands: one
/// of them could take it before the process it was meant for binds it (seen: an OpenBao's port
/// taken by another test's Coffer, which answered as uninitialized, then was initialized under
/// bao's `init`).
pub(crate) fn free_port() -> u16 {
    use std::io::Read as _;
    let mut random = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    for _ in 0..200 {
        let mut b = [0u8; 2];
        random.read_exact(&mut b).expect("/dev/urandom");
        let port = 10_000 + u16::from_le_bytes(b) % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 10000 and 19999")
}
