//! Host-side chaos faults and probes (`coffer chaos fault ...`, `coffer chaos probe ...`) against
//! real network namespaces, real servers and agents. Runs as root (the suite does). Each network
//! test makes its own namespace and veth pair with unique names, removed by a Drop guard even
//! when the test fails.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agent::{Agent, bootstrap, put, role_id, secret_id, server_on_fixed_port, setup};
use crate::common::{BIN, Server, tempdir};

/// A network namespace joined to the host by a veth pair: host side `.1`, namespace side `.2`
/// of its own /30. Removed on drop. (Also used by the HA partition test.)
pub(crate) struct NetNs {
    pub(crate) name: String,
    host_if: String,
    pub(crate) host_ip: String,
    pub(crate) ns_ip: String,
}

impl NetNs {
    pub(crate) fn new() -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}{n}", pid % 100_000);
        let name = format!("coffer-it-{tag}");
        // A /30 per namespace in 10.200.0.0/15, unique within this process (and likely across).
        let block = (pid % 64) * 1024 + n * 4;
        let base = format!("10.{}.{}", 200 + (block / 65_536) % 50, (block / 256) % 256);
        let last = block % 256;
        let ns_ip = format!("{base}.{}", last + 2);
        let ns = NetNs {
            host_if: format!("cvh{tag}"),
            host_ip: format!("{base}.{}", last + 1),
            ns_ip: ns_ip.clone(),
            name,
        };
        let peer = format!("cvn{tag}");
        for cmd in [
            format!("ip netns add {}", ns.name),
            format!("ip link add {} type veth peer name {peer}", ns.host_if),
            format!("ip link set {peer} netns {}", ns.name),
            format!("ip addr add {}/30 dev {}", ns.host_ip, ns.host_if),
            format!("ip link set {} up", ns.host_if),
            format!("ip -n {} addr add {ns_ip}/30 dev {peer}", ns.name),
            format!("ip -n {} link set {peer} up", ns.name),
            format!("ip -n {} link set lo up", ns.name),
        ] {
            sh(&cmd);
        }
        ns
    }

    /// Whether a TCP connection from inside the namespace to `addr` succeeds within `within`,
    /// and how long the attempt took.
    fn connect(&self, addr: SocketAddr, within: Duration) -> (bool, Duration) {
        let start = Instant::now();
        let ok = Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout"])
            .arg(format!("{}", within.as_secs_f64()))
            .args(["bash", "-c"])
            .arg(format!(": > /dev/tcp/{}/{}", addr.ip(), addr.port()))
            .stderr(Stdio::null())
            .status()
            .expect("ip netns exec")
            .success();
        (ok, start.elapsed())
    }

    /// Waits until `connect` gives `want`.
    fn wait_reachable(&self, addr: SocketAddr, want: bool, within: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.connect(addr, Duration::from_millis(500)).0 == want {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{addr} reachable from {} never became {want} within {within:?}", self.name);
    }

    fn routes(&self) -> String {
        sh_out(&format!("ip -n {} route", self.name))
    }

    /// Takes the host side of the veth pair down (`false`) or up: down, nothing passes between
    /// the namespace and the host, and every open connection stays open on both sides, as with
    /// a pulled cable.
    pub(crate) fn set_link(&self, up: bool) {
        sh(&format!("ip link set {} {}", self.host_if, if up { "up" } else { "down" }));
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ =
            Command::new("ip").args(["link", "del", &self.host_if]).stderr(Stdio::null()).status();
    }
}

fn sh(cmd: &str) {
    let o = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
}

fn sh_out(cmd: &str) -> String {
    String::from_utf8_lossy(&Command::new("sh").args(["-c", cmd]).output().expect("sh").stdout)
        .into_owned()
}

/// A TCP server on `ip` that accepts and closes, in a thread that lives as long as the test.
fn listen(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || for _ in l.incoming() {});
    addr
}

/// `coffer ARGS`; fault commands print JSON with -format=json (probes always do).
fn coffer(args: &[&str]) -> Output {
    let json = (args.get(1) == Some(&"fault")).then_some("-format=json");
    Command::new(BIN).args(args).args(json).output().expect("run coffer")
}

/// Runs `coffer ARGS`, asserts it succeeded, returns its JSON.
fn coffer_json(args: &[&str]) -> Value {
    json_of(&coffer(args))
}

/// Asserts a `coffer` run succeeded; its stdout as JSON.
pub(crate) fn json_of(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "{:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

fn state_dir(dir: &Path) -> String {
    dir.join("state").display().to_string()
}

fn assert_fault_window(v: &Value, kind: &str) {
    assert_eq!(v["kind"], kind, "{v}");
    assert!(v["id"].as_str().is_some_and(|i| i.starts_with("hostfault-")), "{v}");
    for k in ["started_at", "expires_at"] {
        let t = v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"));
        assert!(t.ends_with('Z') && t.len() == 20, "{k} = {t}");
    }
}

#[test]
fn a_partition_cuts_the_namespace_from_the_server_and_ends_at_its_deadline() {
    let dir = tempdir();
    let ns = NetNs::new();
    let server = listen(&ns.host_ip);
    ns.wait_reachable(server, true, Duration::from_secs(5));
    let state = state_dir(dir.path());

    let v = coffer_json(&[
        "chaos",
        "fault",
        "partition",
        "-netns",
        &ns.name,
        "-target",
        &ns.host_ip,
        "-duration",
        "3s",
        "-state-dir",
        &state,
    ]);
    assert_fault_window(&v, "partition");
    assert_eq!(v["mode"], "drop");
    let (ok, took) = ns.connect(server, Duration::from_secs(1));
    assert!(!ok, "the namespace still reaches the server; routes:\n{}", ns.routes());
    assert!(took >= Duration::from_millis(900), "drop mode times out, it took {took:?}");
    let listed = coffer_json(&["chaos", "fault", "list", "-state-dir", &state]);
    assert_eq!(listed["host"]["faults"][0]["id"], v["id"], "{listed}");
    assert_eq!(listed["host"]["faults"][0]["guard_running"], true, "{listed}");

    // The guard removes it at the deadline: reachable again, nothing left in the state dir.
    ns.wait_reachable(server, true, Duration::from_secs(6));
    assert!(!ns.routes().contains("dev lo"), "{}", ns.routes());
    let listed = coffer_json(&["chaos", "fault", "list", "-state-dir", &state]);
    assert_eq!(listed["host"]["faults"], json!([]), "{listed}");

    // Reject mode fails at once; `stop` ends it before its deadline.
    let v = coffer_json(&[
        "chaos",
        "fault",
        "partition",
        "-netns",
        &ns.name,
        "-target",
        &ns.host_ip,
        "-mode",
        "reject",
        "-duration",
        "60s",
        "-state-dir",
        &state,
    ]);
    let (ok, took) = ns.connect(server, Duration::from_secs(2));
    assert!(!ok && took < Duration::from_millis(900), "reject fails at once ({ok}, {took:?})");
    let id = v["id"].as_str().expect("id");
    let stopped = coffer_json(&["chaos", "fault", "stop", id, "-state-dir", &state]);
    assert_eq!(stopped["undone"], true, "{stopped}");
    ns.wait_reachable(server, true, Duration::from_secs(2));
}

#[test]
fn a_partition_whose_runner_was_killed_still_ends_at_its_deadline() {
    let dir = tempdir();
    let ns = NetNs::new();
    let server = listen(&ns.host_ip);
    ns.wait_reachable(server, true, Duration::from_secs(5));
    let state = state_dir(dir.path());
    // The runner: a shell that starts the fault then lingers, in its own process group, as a
    // chaos runner would; the whole group is killed with SIGKILL once the fault is in place.
    let mut runner = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{BIN} chaos fault partition -netns {} -target {} -duration 4s -state-dir {state}; sleep 60",
            ns.name, ns.host_ip
        ))
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("runner");
    let start = Instant::now();
    while !ns.routes().contains("dev lo") {
        assert!(start.elapsed() < Duration::from_secs(10), "the fault never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let group = runner.id().to_string();
    let killed = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
    assert!(killed.expect("kill").success());
    let _ = runner.wait();
    assert!(!ns.connect(server, Duration::from_millis(500)).0, "partitioned");
    ns.wait_reachable(server, true, Duration::from_secs(8));
    assert!(start.elapsed() >= Duration::from_millis(3500), "ended early: {:?}", start.elapsed());
}

#[test]
fn host_faults_refuse_the_hosts_own_namespace_and_a_missing_duration() {
    let dir = tempdir();
    let state = state_dir(dir.path());
    let me = std::process::id().to_string();
    let o = coffer(&[
        "chaos",
        "fault",
        "partition",
        "-pid",
        &me,
        "-target",
        "10.1.2.3",
        "-duration",
        "5s",
        "-state-dir",
        &state,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("host's own network namespace"));
    let o = coffer(&["chaos", "fault", "partition", "-netns", "x", "-target", "10.1.2.3"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--duration"), "{o:?}");
}

#[test]
fn netem_delays_the_namespaces_traffic_or_names_the_missing_kernel_support() {
    let dir = tempdir();
    let ns = NetNs::new();
    let server = listen(&ns.host_ip);
    ns.wait_reachable(server, true, Duration::from_secs(5));
    let state = state_dir(dir.path());
    let o = coffer(&[
        "chaos",
        "fault",
        "netem",
        "-netns",
        &ns.name,
        "-delay",
        "300ms",
        "-duration",
        "3s",
        "-state-dir",
        &state,
    ]);
    // The kernel may lack netem (CONFIG_NET_SCH_NETEM): then the command must say exactly that,
    // and the kernel must indeed refuse the qdisc.
    let kernel_has_netem = Command::new("ip")
        .args(["netns", "exec", &ns.name, "tc", "qdisc", "add", "dev", "lo", "root", "netem"])
        .stderr(Stdio::null())
        .status()
        .expect("tc")
        .success();
    if !o.status.success() {
        assert!(!kernel_has_netem, "netem failed on a kernel that has it: {o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("no netem qdisc"), "{o:?}");
        return;
    }
    let _ = Command::new("ip")
        .args(["netns", "exec", &ns.name, "tc", "qdisc", "del", "dev", "lo", "root"])
        .status();
    let (ok, took) = ns.connect(server, Duration::from_secs(3));
    assert!(ok && took >= Duration::from_millis(200), "connect took {took:?} under 300ms netem");
    let start = Instant::now();
    loop {
        let (ok, took) = ns.connect(server, Duration::from_secs(3));
        if ok && took < Duration::from_millis(150) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(8), "netem still in place");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of the restarted process, from the guard's log (its last line is the end's JSON).
fn restarted_pid(state: &str, id: &str) -> u32 {
    let log = std::fs::read_to_string(format!("{state}/{id}.guard.log")).expect("guard log");
    let last: Value = serde_json::from_str(log.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["undone"], true, "{log}");
    u32::try_from(last["restarted_pid"].as_u64().expect("restarted_pid")).expect("pid")
}

/// Kills a pid on drop (the restarted server is no child of the test).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_restarted_after_the_duration_on_the_same_port_and_config() {
    let dir = tempdir();
    let (s, _keys, _root) = server_on_fixed_port(dir.path()).await;
    let state = state_dir(dir.path());
    let pid = s.pid().to_string();
    let probe = |addr: &str| coffer_json(&["chaos", "probe", "health", "-address", addr]);
    assert_eq!(probe(&s.addr)["status"], 200);

    let v = coffer_json(&[
        "chaos",
        "fault",
        "kill",
        "-pid",
        &pid,
        "-duration",
        "2s",
        "-state-dir",
        &state,
    ]);
    assert_fault_window(&v, "kill");
    assert_eq!(v["signal"], "KILL");
    let id = v["id"].as_str().expect("id");
    let down = probe(&s.addr);
    assert_eq!(down["reachable"], false, "{down}");

    let start = Instant::now();
    let up = loop {
        let h = probe(&s.addr);
        if h["reachable"] == true {
            break h;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never came back: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _restarted = KillOnDrop(restarted_pid(&state, id));
    // Same storage: initialized, and sealed as any restarted server is.
    assert_eq!(up["body"]["initialized"], true, "{up}");
    assert_eq!(up["body"]["sealed"], true, "{up}");
    let log =
        std::fs::read_to_string(v["restart_log"].as_str().expect("restart_log")).expect("log");
    assert!(log.contains("Coffer server started"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_copes_with_a_corrupted_then_deleted_cache_and_the_probes_see_it() {
    let dir = tempdir();
    let (s, _keys, root) = server_on_fixed_port(dir.path()).await;
    setup(&s, &root, "cache-fault-1").await;
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let (role, sid) = bootstrap(dir.path(), &rid, &sid_value);
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("db-password");
    let cache = dir.path().join("cache").join("agent.cache");
    let socket = dir.path().join("agent.sock");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\nauto_auth {{\n  method \"approle\" {{\n    config = {{\n      role_id_file_path = \"{}\"\n      secret_id_file_path = \"{}\"\n      remove_secret_id_file_after_reading = false\n    }}\n  }}\n}}\ntemplate_config {{\n  static_secret_render_interval = \"1s\"\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\ncache {{\n  persist {{\n    path = \"{}\"\n    key_path = \"{}\"\n  }}\n}}\nlistener \"unix\" {{\n  address = \"{}\"\n}}\n",
        s.addr,
        role.display(),
        sid.display(),
        r#"{{ with secret "secret/data/web/db" }}{{ .Data.data.password }}{{ end }}"#,
        dest.display(),
        cache.display(),
        shm.path().join("cache.key").display(),
        socket.display(),
    );
    let wait_cache = || {
        let start = Instant::now();
        while !cache.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "no cache written");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "cache-fault-1", Duration::from_secs(15));
    wait_cache();

    let sock = socket.display().to_string();
    let status = coffer_json(&["chaos", "probe", "agent", "-socket", &sock]);
    assert_eq!(status["status"], 200, "{status}");
    assert_eq!(status["auth_state"], "authenticated", "{status}");
    assert_eq!(status["serving_stale"], false, "{status}");
    assert!(status["stale_seconds"].as_f64().is_some(), "{status}");
    let m = coffer_json(&[
        "chaos",
        "probe",
        "metrics",
        "-socket",
        &sock,
        "-name",
        "coffer_agent_auth_successes_total",
    ]);
    let metrics = m["metrics"].as_object().expect("metrics");
    assert_eq!(metrics.len(), 1, "{m}");
    assert!(metrics["coffer_agent_auth_successes_total"].as_f64() >= Some(1.0), "{m}");

    // Corrupted: the restarted agent says the cache cannot be used, logs in and renders anew.
    drop(agent);
    let c = cache.display().to_string();
    let v = coffer_json(&["chaos", "fault", "agent-cache", "-path", &c, "-mode", "corrupt"]);
    assert_eq!(v["kind"], "agent-cache");
    assert_eq!(v["started_at"], v["expires_at"], "one-shot");
    std::fs::remove_file(&dest).expect("rm");
    put(&s, &root, "cache-fault-2").await;
    let agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "cache-fault-2", Duration::from_secs(15));
    assert!(agent.logs().contains("the persisted cache cannot be used"), "{}", agent.logs());

    // Deleted: the agent starts without it and writes a new one.
    wait_cache();
    drop(agent);
    coffer_json(&["chaos", "fault", "agent-cache", "-path", &c, "-mode", "delete"]);
    assert!(!cache.exists());
    std::fs::remove_file(&dest).expect("rm");
    let agent = Agent::start(dir.path(), &config);
    agent.wait_for_content(&dest, "cache-fault-2", Duration::from_secs(15));
    wait_cache();
    let log = agent.logs();
    assert!(!log.contains("restored from the persisted cache"), "{log}");
    assert!(!log.contains("cache-fault"), "secret in the agent log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_report_health_and_audit_counts_and_find_only_a_cleartext_canary() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    let h = coffer_json(&["chaos", "probe", "health", "-address", &s.addr]);
    assert_eq!(h["status"], 200, "{h}");
    assert_eq!(h["body"]["sealed"], false, "{h}");

    let log: PathBuf = dir.path().join("audit.log");
    let body = json!({"type": "file", "options": {"file_path": log.display().to_string()}});
    let (code, b) = s.call("PUT", "sys/audit/file", Some(&root), Some(body)).await;
    assert!(code == 204 || code == 200, "{b}");
    setup(&s, &root, "audit-canary-7f3e").await;
    let rid = role_id(&s, &root).await;
    let (code, _) = s
        .call(
            "POST",
            "auth/approle/login",
            None,
            Some(json!({"role_id": rid, "secret_id": "wrong"})),
        )
        .await;
    assert!(code == 400 || code == 403, "a failed login: {code}");

    let f = log.display().to_string();
    let v = coffer_json(&[
        "chaos",
        "probe",
        "audit",
        "-file",
        &f,
        "-since",
        "10m",
        "-canary",
        "audit-canary-7f3e",
    ]);
    assert_eq!(v["canary_found"], false, "values are HMACed in the audit log: {v}");
    assert_eq!(v["failed_logins"], 1, "{v}");
    assert!(v["errors"].as_u64() >= Some(1), "{v}");
    assert!(v["entries"].as_u64() >= Some(10), "{v}");
    assert!(!v.to_string().contains("audit-canary"), "the probe never prints the canary");
    let future =
        coffer_json(&["chaos", "probe", "audit", "-file", &f, "-since", "2100-01-01T00:00:00Z"]);
    assert_eq!(future["entries"], 0, "{future}");
    assert!(future.get("canary_found").is_none());

    // Written in clear by hand, it is found.
    let mut text = std::fs::read_to_string(&log).expect("log");
    text.push_str("{\"note\": \"audit-canary-7f3e\"}\n");
    std::fs::write(&log, text).expect("write");
    let v = coffer_json(&["chaos", "probe", "audit", "-file", &f, "-canary", "audit-canary-7f3e"]);
    assert_eq!(v["canary_found"], true, "{v}");
}

fn ns_inode(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn a_process_killed_in_a_container_comes_back_in_the_same_mount_and_network_namespaces() {
    let dir = tempdir();
    let state = state_dir(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mnt");
    // The container: mount, network and PID namespaces, a tmpfs only it sees, its init a sleep.
    let mut container = Command::new("unshare")
        .args(["--mount", "--net", "--pid", "--fork", "--propagation", "private", "--kill-child"])
        .args(["sh", "-c"])
        .arg("mount -t tmpfs coffer-test \"$0\" && echo inside > \"$0/marker\" && cd \"$0\" && exec sleep 300")
        .arg(&mnt)
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare");
    let outer = container.id();
    let start = Instant::now();
    let inner = loop {
        let kids = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
            .unwrap_or_default();
        let pid = kids.split_whitespace().next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
        {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the container did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mnt_ns, net_ns) = (ns_inode(inner, "mnt"), ns_inode(inner, "net"));

    let v = coffer_json(&[
        "chaos",
        "fault",
        "kill",
        "-pid",
        &inner.to_string(),
        "-duration",
        "1s",
        "-state-dir",
        &state,
    ]);
    assert_eq!(v["namespaces"], json!(["mnt", "net"]), "{v}");
    assert_eq!(v["new_pid_namespace"], true, "{v}");
    // The container's init died, and with it unshare (--kill-child): nothing else holds the
    // namespaces but the guard.
    let _ = container.wait();
    let id = v["id"].as_str().expect("id");
    let start = Instant::now();
    while !Path::new(&format!("{state}/{id}.guard.log")).exists()
        || std::fs::read_to_string(format!("{state}/{id}.guard.log")).is_ok_and(|l| l.is_empty())
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    let wrapper = restarted_pid(&state, id);
    let _w = KillOnDrop(wrapper);
    let start = Instant::now();
    let again = loop {
        let kids = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
            .unwrap_or_default();
        if let Some(pid) = kids.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()) {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no restarted process");
        std::thread::sleep(Duration::from_millis(10));
    };
    let _a = KillOnDrop(again);
    assert_eq!(ns_inode(again, "mnt"), mnt_ns, "same mount namespace");
    assert_eq!(ns_inode(again, "net"), net_ns, "same network namespace");
    let marker = std::fs::read_to_string(format!("/proc/{again}/root{}/marker", mnt.display()));
    assert_eq!(marker.expect("the container's tmpfs"), "inside\n");
    assert_eq!(
        std::fs::read_link(format!("/proc/{again}/cwd")).expect("cwd"),
        mnt,
        "same working directory"
    );
    let status = std::fs::read_to_string(format!("/proc/{again}/status")).expect("status");
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).expect("NSpid");
    assert!(nspid.ends_with("\t1"), "PID 1 of its new PID namespace: {nspid}");
}

fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()).expect("state")
}

/// A paused server hangs (its port accepts, nothing answers) and goes on at the deadline with
/// what it held in memory: no restart, no unseal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_hangs_then_goes_on_by_itself_at_the_deadline() {
    let dir = tempdir();
    let state = state_dir(dir.path());
    let (s, _, root) = Server::ready(dir.path()).await;
    let pid = s.pid().to_string();
    let runner = Command::new(BIN)
        .args(["chaos", "fault", "pause", "-pid", &pid, "-duration", "2s", "-state-dir", &state])
        .args(["-format=json"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("coffer chaos fault pause");
    let out = runner.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_fault_window(&v, "pause");
    assert_eq!(process_state(s.pid()), 'T', "stopped");
    let hung = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client")
        .get(format!("{}/v1/sys/health", s.addr))
        .send()
        .await;
    assert!(hung.is_err_and(|e| e.is_timeout()), "a paused server does not answer");
    let start = Instant::now();
    while process_state(s.pid()) == 'T' {
        assert!(start.elapsed() < Duration::from_secs(6), "not resumed at the deadline");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _) = s.call("GET", "auth/token/lookup-self", Some(&root), None).await;
    assert_eq!(code, 200, "the same process goes on, unsealed, with its tokens");
    let listed = coffer_json(&["chaos", "fault", "list", "-state-dir", &state]);
    assert_eq!(listed["host"]["faults"], json!([]), "{listed}");
}
