//! HA standby reads (docs/ha.md, "Reads and caches"): three real nodes on a private PostgreSQL
//! cluster; standbys answer KV reads from their read replica, kept current by the change feed,
//! never staler than `ha_standby_max_staleness` (the default, 500 ms, here).
//!
//! "Served by the standby itself" is proven by pausing the active node (SIGSTOP, much shorter
//! than the lock TTL, so no failover): a standby that forwarded would get no answer; and, with
//! per-node audit file systems, by the audit entries each node wrote.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Server, tempdir};
use crate::ha::{active_of, cluster, cluster_with, signal};

/// `ha_standby_max_staleness`'s default.
const BOUND: Duration = Duration::from_millis(500);
/// What a loaded test machine adds to the bound: request latencies, scheduling.
const SLACK: Duration = Duration::from_millis(1500);

/// A GET with a deadline: `None` when no answer came within it.
async fn get(n: &Server, path: &str, token: &str, within: Duration) -> Option<(u16, Value)> {
    let r = n
        .http()
        .get(format!("{}/v1/{path}", n.addr))
        .header("X-Vault-Token", token)
        .timeout(within)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

/// Resumes a paused node when dropped, so a failed assertion does not leave it stopped.
struct Paused(u32);

impl Paused {
    fn new(n: &Server) -> Self {
        signal(n.pid(), "-STOP");
        Self(n.pid())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

/// The standby's answer to a GET while the active node is paused (`None`: no answer within
/// 2 s, so it was not served by the standby itself).
async fn while_paused(
    active: &Server,
    standby: &Server,
    path: &str,
    token: &str,
) -> Option<(u16, Value)> {
    let _p = Paused::new(active);
    get(standby, path, token, Duration::from_secs(2)).await
}

/// Waits until the standby answers `path` itself (its replica built and proven fresh).
async fn until_served_locally(active: &Server, standby: &Server, path: &str, token: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some((200, b)) = while_paused(active, standby, path, token).await {
            return b;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the standby never served {path} itself"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polls the standby until `done` holds for its answer; returns how long that took.
async fn until(
    standby: &Server,
    path: &str,
    token: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Some((s, b)) = get(standby, path, token, Duration::from_secs(5)).await
            && done(s, &b)
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{path}: the standby never changed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A file audit device writing to `log`, enabled through `n`.
async fn enable_file_audit(n: &Server, root: &str, log: &std::path::Path) {
    let (st, b) = n
        .call(
            "PUT",
            "sys/audit/file",
            Some(root),
            Some(json!({"type": "file", "options": {"file_path": log}})),
        )
        .await;
    assert_eq!(st, 204, "{b}");
}

async fn setup(nodes: &[Server], root: &str) -> (usize, usize) {
    let a = active_of(nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    let active = &nodes[a];
    active.mount_kv2(root).await;
    for k in ["a", "b"] {
        let (s, b) = active
            .call("PUT", &format!("secret/data/{k}"), Some(root), Some(json!({"data": {"v": k}})))
            .await;
        assert_eq!(s, 200, "{b}");
    }
    (a, (a + 1) % 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_reads_itself_and_applies_changes_within_the_staleness_bound() {
    let dir = tempdir();
    let (nodes, root) = cluster(dir.path(), "ha_reads_bound", "15s").await;
    let (a, s) = setup(&nodes, &root).await;
    let (active, standby) = (&nodes[a], &nodes[s]);
    let policy = |paths: &[&str]| {
        let rules: Vec<String> = paths
            .iter()
            .map(|p| format!("path \"secret/data/{p}\" {{ capabilities = [\"read\"] }}"))
            .collect();
        json!({"policy": rules.join("\n")})
    };
    let (st, b) =
        active.call("PUT", "sys/policies/acl/reader", Some(&root), Some(policy(&["a", "b"]))).await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = active
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["reader"]})))
        .await;
    assert_eq!(st, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();

    // Served by the standby itself: it answers while the active node is paused.
    let b = until_served_locally(active, standby, "secret/data/a", &token).await;
    assert_eq!(b["data"]["data"]["v"], "a", "{b}");

    // Data is read from storage at each request: a value acknowledged by the active node is
    // read through the standby at once.
    for i in 0..20 {
        let (st, b) =
            active.call("PUT", "secret/data/k", Some(&root), Some(json!({"data": {"v": i}}))).await;
        assert_eq!(st, 200, "{b}");
        let (st, b) = standby.call("GET", "secret/data/k", Some(&root), None).await;
        assert_eq!((st, &b["data"]["data"]["v"]), (200, &json!(i)), "read {i}: {b}");
    }

    // A policy tightened on the active node: refused through the standby within the bound.
    let (st, b) =
        active.call("PUT", "sys/policies/acl/reader", Some(&root), Some(policy(&["b"]))).await;
    assert_eq!(st, 204, "{b}");
    let took = until(standby, "secret/data/a", &token, |s, _| s == 403).await;
    assert!(took <= BOUND + SLACK, "policy applied after {took:?}");
    for _ in 0..5 {
        assert_eq!(standby.call("GET", "secret/data/a", Some(&token), None).await.0, 403);
    }
    // ... and the replica still serves what the new policy allows, itself.
    let b = until_served_locally(active, standby, "secret/data/b", &token).await;
    assert_eq!(b["data"]["data"]["v"], "b", "{b}");

    // A token revoked on the active node: refused through the standby within the bound.
    let (st, b) =
        active.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": token}))).await;
    assert_eq!(st, 204, "{b}");
    let took = until(standby, "secret/data/b", &token, |s, _| s == 403).await;
    assert!(took <= BOUND + SLACK, "revocation applied after {took:?}");
    assert_eq!(
        while_paused(active, standby, "secret/data/b", &token).await.map(|r| r.0),
        None,
        "a token the replica does not know is the active node's to refuse"
    );

    // A mount tuned on the active node (kv version 1 upgraded to 2): the standby reads the new
    // layout within the bound.
    let (st, b) = active
        .call(
            "POST",
            "sys/mounts/old",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = active.call("PUT", "old/k", Some(&root), Some(json!({"v": "1"}))).await;
    assert_eq!(st, 204, "{b}");
    let b = until_served_locally(active, standby, "old/k", &root).await;
    assert_eq!(b["data"]["v"], "1", "{b}");
    let (st, b) = active
        .call(
            "POST",
            "sys/mounts/old/tune",
            Some(&root),
            Some(json!({"options": {"version": "2"}})),
        )
        .await;
    assert!(st == 200 || st == 204, "tune: {st} {b}");
    let took =
        until(standby, "old/data/k", &root, |s, b| s == 200 && b["data"]["data"]["v"] == "1").await;
    assert!(took <= BOUND + SLACK, "tune applied after {took:?}");
    let b = until_served_locally(active, standby, "old/data/k", &root).await;
    assert_eq!(b["data"]["data"]["v"], "1", "{b}");

    // A mount disabled on the active node: gone through the standby within the bound.
    let (st, b) = active.call("DELETE", "sys/mounts/old", Some(&root), None).await;
    assert_eq!(st, 204, "{b}");
    let took = until(standby, "old/data/k", &root, |s, _| s == 404).await;
    assert!(took <= BOUND + SLACK, "unmount applied after {took:?}");
}

/// What a standby must not answer itself goes to the active node: a use-counted token (the
/// count is spent once, by the active), response wrapping, a read outside kv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_counted_tokens_wrapping_and_non_kv_reads_are_forwarded() {
    let dir = tempdir();
    let (nodes, root) = cluster(dir.path(), "ha_reads_forwarded", "15s").await;
    let (a, s) = setup(&nodes, &root).await;
    let (active, standby) = (&nodes[a], &nodes[s]);
    until_served_locally(active, standby, "secret/data/a", &root).await;

    let limited_token = || async {
        let (st, b) = active
            .call(
                "POST",
                "auth/token/create",
                Some(&root),
                Some(json!({"policies": ["root"], "num_uses": 2})),
            )
            .await;
        assert_eq!(st, 200, "{b}");
        b["auth"]["client_token"].as_str().expect("token").to_owned()
    };
    // (this one is spent by the active node once it resumes)
    let probe = limited_token().await;
    assert_eq!(while_paused(active, standby, "secret/data/a", &probe).await.map(|r| r.0), None);
    let limited = limited_token().await;
    assert_eq!(standby.call("GET", "secret/data/a", Some(&limited), None).await.0, 200);
    assert_eq!(active.call("GET", "secret/data/a", Some(&limited), None).await.0, 200);
    assert_eq!(
        standby.call("GET", "secret/data/a", Some(&limited), None).await.0,
        403,
        "a third use"
    );

    let (st, b) = standby
        .call_with("GET", "secret/data/a", Some(&root), None, &[("X-Vault-Wrap-TTL", "60")])
        .await;
    assert_eq!(st, 200, "{b}");
    let wrapping = b["wrap_info"]["token"].as_str().expect("wrapped by the active node").to_owned();
    let (st, b) = active.call("POST", "sys/wrapping/unwrap", Some(&wrapping), None).await;
    assert_eq!((st, &b["data"]["data"]["v"]), (200, &json!("a")), "{b}");

    assert_eq!(while_paused(active, standby, "sys/mounts", &root).await.map(|r| r.0), None);
    let (st, b) = standby.call("GET", "sys/mounts", Some(&root), None).await;
    assert_eq!(st, 200, "{b}");
}

/// The standby's change feed killed over and over (`pg_terminate_backend`): the standby stops
/// answering itself while the feed is down, and never serves a revoked token past the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_change_feed_is_down_does_not_serve_stale() {
    let dir = tempdir();
    let db = "ha_reads_feed_down";
    let (nodes, root) = cluster(dir.path(), db, "15s").await;
    let (a, s) = setup(&nodes, &root).await;
    let (active, standby) = (&nodes[a], &nodes[s]);
    let (st, b) = active
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["root"]})))
        .await;
    assert_eq!(st, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();
    until_served_locally(active, standby, "secret/data/a", &token).await;

    let pg = coffer_pgtest::Cluster::shared();
    let kill_feeds = || {
        pg.sql(
            db,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND state = 'idle' \
             AND (query LIKE 'LISTEN%' OR query = 'SELECT pg_notify($1, $2)')",
        )
    };
    // The feed down: no answer of the standby's own while the active node is paused.
    {
        let _p = Paused::new(active);
        // (a feed in the middle of its barrier is not idle: again until both were cut)
        let mut n: u64 = 0;
        for _ in 0..20 {
            n += kill_feeds().parse::<u64>().expect("count");
            if n >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(n >= 2, "both standbys' feeds: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = get(standby, "secret/data/a", &token, Duration::from_millis(600)).await;
        assert_eq!(r.map(|r| r.0), None, "served while its change feed was down");
    }
    // Revoked while the feeds keep being cut: refused within the bound, and from then on.
    let (st, b) =
        active.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": token}))).await;
    assert_eq!(st, 204, "{b}");
    let revoked = Instant::now();
    while revoked.elapsed() < Duration::from_secs(4) {
        kill_feeds();
        if let Some((st, b)) = get(standby, "secret/data/a", &token, Duration::from_secs(5)).await
            && revoked.elapsed() > BOUND + SLACK
        {
            assert_eq!(st, 403, "a revoked token served {:?} after: {b}", revoked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The feed back: the standby serves reads itself again.
    until_served_locally(active, standby, "secret/data/a", &root).await;
}

/// `sys/rotate` on the active node, then a new value: the standby decrypts it itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_keyring_rotation_the_standby_reads_values_of_the_new_term() {
    let dir = tempdir();
    let (nodes, root) = cluster(dir.path(), "ha_reads_rotate", "15s").await;
    let (a, s) = setup(&nodes, &root).await;
    let (active, standby) = (&nodes[a], &nodes[s]);
    until_served_locally(active, standby, "secret/data/a", &root).await;
    let (st, b) = active.call("POST", "sys/rotate", Some(&root), None).await;
    assert_eq!(st, 204, "{b}");
    let (st, b) = active
        .call("PUT", "secret/data/new", Some(&root), Some(json!({"data": {"v": "rotated"}})))
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = standby.call("GET", "secret/data/new", Some(&root), None).await;
    assert_eq!((st, &b["data"]["data"]["v"]), (200, &json!("rotated")), "{b}");
    let b = until_served_locally(active, standby, "secret/data/new", &root).await;
    assert_eq!(b["data"]["data"]["v"], "rotated", "{b}");
}

/// Audit on standbys: each node in a mount namespace of its own with a private tmpfs at the
/// audit directory (as separate hosts or containers would have). A read served by a standby is
/// in that standby's audit file and not in the active node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_served_by_a_standby_is_audited_by_that_standby() {
    let dir = tempdir();
    let audit_dir = dir.path().join("audit");
    std::fs::create_dir_all(&audit_dir).expect("audit dir");
    let script = format!("mount -t tmpfs tmpfs {} && exec \"$0\" \"$@\"", audit_dir.display());
    let wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c", script.as_str()];
    let (nodes, root) = cluster_with(dir.path(), "ha_reads_audit", "15s", "", &wrapper).await;
    let (a, s) = setup(&nodes, &root).await;
    let (active, standby) = (&nodes[a], &nodes[s]);
    let log = audit_dir.join("audit.log");
    enable_file_audit(active, &root, &log).await;
    let read_log = |n: &Server| {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &n.pid().to_string(), "-m", "cat"])
            .arg(&log)
            .output()
            .expect("nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let b = until_served_locally(active, standby, "secret/data/b", &root).await;
    assert_eq!(b["data"]["data"]["v"], "b", "{b}");
    let entries = |n: &Server| read_log(n).lines().filter(|l| l.contains("secret/data/b")).count();
    // A request and a response entry on the standby, none on the active node.
    assert!(entries(standby) >= 2, "standby's audit log:\n{}", read_log(standby));
    assert_eq!(entries(active), 0, "active's audit log:\n{}", read_log(active));
}

/// One audit file shared by every node (one file system): a standby cannot take its lock, so it
/// serves nothing itself, and says why in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_sharing_the_active_nodes_audit_file_forwards_every_read() {
    let dir = tempdir();
    let (nodes, root) = cluster(dir.path(), "ha_reads_shared_audit", "15s").await;
    let (a, s) = setup(&nodes, &root).await;
    let (active, standby) = (&nodes[a], &nodes[s]);
    until_served_locally(active, standby, "secret/data/a", &root).await;
    let log = dir.path().join("shared-audit.log");
    enable_file_audit(active, &root, &log).await;
    // Generous: once, in a full test run on PostgreSQL, nothing was logged within 10 s (cause
    // not found; alone the reason comes within a second).
    let start = Instant::now();
    while !standby.logs().contains("held by another process") {
        assert!(start.elapsed() < Duration::from_secs(30), "no reason logged:\n{}", standby.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(while_paused(active, standby, "secret/data/a", &root).await.map(|r| r.0), None);
    let (st, b) = standby.call("GET", "secret/data/a", Some(&root), None).await;
    assert_eq!(st, 200, "forwarded: {b}");
    let lines = std::fs::read_to_string(&log).expect("log");
    assert!(lines.lines().filter(|l| l.contains("secret/data/a")).count() >= 2);
}

/// Detection rules are evaluated on the active node: while one is in force, a standby serves
/// nothing itself (a honeytoken read through it must reach the rules), and once it is gone the
/// standby serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_detection_rule_in_force_standbys_forward_every_read() {
    let dir = tempdir();
    let (nodes, root) = cluster(dir.path(), "ha_reads_detect", "15s").await;
    let (a, s) = setup(&nodes, &root).await;
    let (active, standby) = (&nodes[a], &nodes[s]);
    until_served_locally(active, standby, "secret/data/a", &root).await;

    let rule =
        json!({"type": "honeytoken", "paths": ["secret/data/honey/*"], "actions": ["audit"]});
    let (st, b) = active.call("PUT", "sys/detect/rules/honey", Some(&root), Some(rule)).await;
    assert_eq!(st, 204, "{b}");
    tokio::time::sleep(BOUND + SLACK).await;
    assert_eq!(
        while_paused(active, standby, "secret/data/a", &root).await.map(|r| r.0),
        None,
        "served by the standby with a detection rule in force"
    );
    // Through the active node, the honeytoken read is seen.
    let (st, _) = standby.call("GET", "secret/data/honey/x", Some(&root), None).await;
    assert_eq!(st, 404);
    let seen = Instant::now();
    loop {
        let (st, b) = active.call("GET", "sys/detect/alerts?limit=1000", Some(&root), None).await;
        assert_eq!(st, 200, "{b}");
        if b["data"]["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["rule"] == "honey")) {
            break;
        }
        assert!(seen.elapsed() < Duration::from_secs(10), "no alert for the read: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (st, b) = active.call("DELETE", "sys/detect/rules/honey", Some(&root), None).await;
    assert_eq!(st, 204, "{b}");
    until_served_locally(active, standby, "secret/data/a", &root).await;
}
