//! HA on PostgreSQL with three real `coffer server` processes on one private cluster: one
//! active, two standbys that forward; failover when the active is killed with -9 (writes through
//! a standby, none acknowledged lost); a paused (SIGSTOP) active is replaced, its writes are
//! refused by the database, and it comes back as a standby; step-down, and leases revoked by the
//! next active; an active cut off from PostgreSQL (a proxy that swallows its traffic and keeps
//! its connections open, not a network namespace) steps down before another node takes over.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Server, free_port, tempdir};

fn ha_config(url: &str, ttl: &str) -> String {
    ha_config_with(url, ttl, "")
}

/// [`ha_config`] with `storage` (whole lines) added to the storage block.
pub(crate) fn ha_config_with(url: &str, ttl: &str, storage: &str) -> String {
    // Chaos faults on: a latency fault holds a request inside the pipeline, past the point
    // where the core checked it is active, so a test can pause the node with writes in flight.
    format!(
        "storage \"postgresql\" {{\n  connection_url = \"{url}\"\n  ha_enabled = \"true\"\n  ha_lock_ttl = \"{ttl}\"\n{storage}}}\n\
         listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}}\n\
         cluster_addr = \"https://127.0.0.1:{}\"\nlog_level = \"debug\"\n\
         chaos {{\n  enabled = true\n  max_duration = \"60s\"\n}}\n",
        free_port()
    )
}

/// The `cluster_addr` a node was configured with.
fn cluster_addr_of(n: &Server) -> String {
    let cfg = std::fs::read_to_string(&n.config).expect("config");
    let line = cfg.lines().find(|l| l.starts_with("cluster_addr")).expect("cluster_addr");
    line.split('"').nth(1).expect("value").to_owned()
}

/// Three nodes on a fresh database, initialized through the first and unsealed: (nodes, root).
pub(crate) async fn cluster(dir: &Path, db: &str, ttl: &str) -> (Vec<Server>, String) {
    cluster_with(dir, db, ttl, "", &[]).await
}

/// [`cluster`] with `storage` lines added to every node's storage block, and each node's binary
/// run by `wrapper` (see `Server::start_via`).
pub(crate) async fn cluster_with(
    dir: &Path,
    db: &str,
    ttl: &str,
    storage: &str,
    wrapper: &[&str],
) -> (Vec<Server>, String) {
    let url = coffer_pgtest::Cluster::shared().create_database(db);
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let config = ha_config_with(&url, ttl, storage);
            Server::start_via(&dir.join(format!("n{i}")), &config, "http", wrapper)
        })
        .collect();
    let (keys, root) = nodes[0].init(1, 1).await;
    for n in &nodes {
        n.unseal(&keys).await;
    }
    (nodes, root)
}

pub(crate) async fn health(n: &Server) -> Option<u16> {
    let r = n.http().get(format!("{}/v1/sys/health", n.addr)).timeout(Duration::from_secs(2));
    r.send().await.ok().map(|r| r.status().as_u16())
}

/// Waits until exactly one of the nodes (among `live`) answers health 200 and the other live
/// ones 429; returns its index.
pub(crate) async fn active_of(nodes: &[Server], live: &[usize], within: Duration) -> usize {
    let start = Instant::now();
    loop {
        let mut codes = BTreeMap::new();
        for &i in live {
            codes.insert(i, health(&nodes[i]).await);
        }
        let active: Vec<usize> =
            codes.iter().filter(|(_, c)| **c == Some(200)).map(|(i, _)| *i).collect();
        if active.len() == 1
            && codes.values().filter(|c| **c == Some(429)).count() == live.len() - 1
        {
            return active[0];
        }
        assert!(start.elapsed() < within, "no single active node within {within:?}: {codes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
    assert!(ok.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_is_active_and_a_kill9_fails_over_within_5s_without_losing_a_write() {
    let dir = tempdir();
    // The lock's TTL is Vault's 15 s: failover faster than that comes from PostgreSQL ending the
    // killed node's session, which frees the lock at once.
    let (mut nodes, root) = cluster(dir.path(), "ha_failover", "15s").await;
    let first = active_of(&nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    let a = &nodes[first];
    let (s, b) = a
        .call(
            "POST",
            "sys/mounts/secret",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    assert_eq!(s, 204, "mount: {b}");

    // sys/leader on every node names the active's API address.
    // (a standby's view of the leader is at most one poll, 1 s, old)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in &nodes {
        let (s, b) = n.call("GET", "sys/leader", None, None).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["ha_enabled"], json!(true));
        assert_eq!(b["leader_address"], json!(a.addr), "{b}");
        assert_eq!(b["is_self"], json!(n.addr == a.addr), "{b}");
        assert_eq!(b["leader_cluster_address"], json!(cluster_addr_of(a)));
    }
    // A standby: 429, 200 with standbyok; every other request is forwarded to the active.
    let standby = (first + 1) % 3;
    let (s, b) = nodes[standby].call("GET", "sys/health?standbyok=true", None, None).await;
    assert_eq!((s, &b["standby"], &b["sealed"]), (200, &json!(true), &json!(false)), "{b}");
    let (s, b) = nodes[standby].call("PUT", "secret/x", Some(&root), Some(json!({"v": "x"}))).await;
    assert_eq!(s, 204, "a write through a standby: {b}");
    let (s, b) = a.call("GET", "secret/x", Some(&root), None).await;
    assert_eq!((s, &b["data"]["v"]), (200, &json!("x")), "{b}");
    let (s, b) = nodes[standby].call("GET", "secret/x", Some(&root), None).await;
    assert_eq!((s, &b["data"]["v"]), (200, &json!("x")), "a read through a standby: {b}");
    let (s, _) = nodes[standby].call("GET", "secret/x", Some("not-a-token"), None).await;
    assert_eq!(s, 403, "the token travels with the request, and is checked by the active");
    // The cluster port takes only the cluster's own certificates.
    let outsider =
        reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("client");
    let port = cluster_addr_of(a).rsplit(':').next().expect("port").to_owned();
    let r = outsider.get(format!("https://127.0.0.1:{port}/v1/sys/health")).send().await;
    assert!(r.is_err(), "a client without the cluster certificate was served: {r:?}");
    let (s, b) = a.call("GET", "sys/ha-status", Some(&root), None).await;
    assert_eq!(s, 200, "{b}");
    let listed = b["data"]["nodes"].as_array().expect("nodes");
    assert_eq!(listed.len(), 3, "{b}");
    assert_eq!(listed.iter().filter(|n| n["active_node"] == json!(true)).count(), 1, "{b}");

    // A writer through a standby (never the node killed below), keeping what was acknowledged.
    let addrs: Vec<String> = vec![nodes[standby].addr.clone()];
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let token = root.clone();
    let writer = tokio::spawn(async move {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
        let mut acked: Vec<(u32, Instant)> = Vec::new();
        let mut failures = 0u32;
        let mut target = 0usize;
        let mut i = 0u32;
        while !*stop_rx.borrow() {
            let r = http
                .put(format!("{}/v1/secret/k{i}", addrs[target]))
                .header("X-Vault-Token", &token)
                .json(&json!({"v": i}))
                .send()
                .await;
            match r.map(|r| r.status().as_u16()) {
                Ok(204) => {
                    acked.push((i, Instant::now()));
                    i += 1;
                }
                _ => {
                    target = (target + 1) % addrs.len();
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        (acked, failures)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = Instant::now();
    nodes[first].kill9();
    let live: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let second = active_of(&nodes, &live, Duration::from_secs(10)).await;
    // Writes go on until some were acknowledged after the kill (or 10 s passed).
    let probe = reqwest::Client::new();
    while killed_at.elapsed() < Duration::from_secs(10) {
        let r = probe
            .get(format!("{}/v1/sys/leader", nodes[standby].addr))
            .send()
            .await
            .expect("leader");
        let b: serde_json::Value = r.json().await.unwrap_or_default();
        if b["leader_address"] == json!(nodes[second].addr) || standby == second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true).expect("stop");
    let (acked, failures) = writer.await.expect("writer");
    eprintln!("writes acknowledged: {}, refused during failover: {failures}", acked.len());
    let first_after = acked.iter().find(|(_, t)| *t > killed_at).expect("a write after the kill");
    let failover = first_after.1 - killed_at;
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    assert!(acked.len() > 5, "too few writes: {}", acked.len());
    // Every acknowledged write is there, read from the new active.
    let b2 = &nodes[second];
    for (i, _) in &acked {
        let (s, b) = b2.call("GET", &format!("secret/k{i}"), Some(&root), None).await;
        assert_eq!((s, &b["data"]["v"]), (200, &json!(i)), "acknowledged write k{i} lost: {b}");
    }
    let logs = b2.logs();
    assert!(logs.contains("becoming active"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_is_replaced_its_writes_are_refused_and_it_returns_as_standby() {
    let dir = tempdir();
    let (nodes, root) = cluster(dir.path(), "ha_sigstop", "3s").await;
    let first = active_of(&nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    let old = &nodes[first];
    let (s, b) = old
        .call(
            "POST",
            "sys/mounts/secret",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    assert_eq!(s, 204, "mount: {b}");
    let (s, _) = old.call("PUT", "secret/shared", Some(&root), Some(json!({"by": "old"}))).await;
    assert_eq!(s, 204);

    // Writes that passed every check of the core and wait (a latency fault) before storage.
    let (s, b) = old
        .call(
            "POST",
            "sys/chaos/faults",
            Some(&root),
            Some(json!({"type": "latency", "duration": "30s", "latency": "1500ms", "path_prefix": "secret/stale"})),
        )
        .await;
    assert_eq!(s, 200, "latency fault: {b}");
    let mut queued = Vec::new();
    for i in 0..4 {
        let url = format!("{}/v1/secret/stale{i}", old.addr);
        let token = root.clone();
        queued.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .put(url)
                .header("X-Vault-Token", token)
                .json(&json!({"by": "old"}))
                .timeout(Duration::from_secs(30))
                .send()
                .await;
            r.map(|r| r.status().as_u16()).ok()
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(old.pid(), "-STOP");
    let paused_at = Instant::now();
    let live: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let new = active_of(&nodes, &live, Duration::from_secs(15)).await;
    let took = paused_at.elapsed();
    assert!(took >= Duration::from_secs(2), "taken over after {took:?}, before the lock's expiry");
    let (s, b) =
        nodes[new].call("PUT", "secret/shared", Some(&root), Some(json!({"by": "new"}))).await;
    assert_eq!(s, 204, "{b}");

    signal(old.pid(), "-CONT");
    for q in queued {
        let status = q.await.expect("task");
        assert!(
            !matches!(status, Some(200..=299)),
            "a write queued on the paused node was acknowledged after it resumed: {status:?}"
        );
    }
    for i in 0..4 {
        let (s, _) = nodes[new].call("GET", &format!("secret/stale{i}"), Some(&root), None).await;
        assert_eq!(s, 404, "the paused node's write stale{i} reached storage");
    }
    let (_, b) = nodes[new].call("GET", "secret/shared", Some(&root), None).await;
    assert_eq!(b["data"]["by"], json!("new"));
    // The old node is a standby again; the new one stays active.
    assert_eq!(active_of(&nodes, &[0, 1, 2], Duration::from_secs(10)).await, new);
    let logs = nodes[first].logs();
    assert!(logs.contains("no longer active"), "{logs}");
    eprintln!(
        "DEBUGLOG {}",
        logs.lines()
            .filter(|l| l.contains("HA")
                || l.contains("stale")
                || l.contains("refused")
                || l.contains("standby"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_hands_leadership_to_another_node_which_revokes_the_old_ones_leases() {
    let dir = tempdir();
    let (nodes, root) = cluster(dir.path(), "ha_step_down", "3s").await;
    let first = active_of(&nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    // A token lease made on the first active, due in 8 s.
    let (s, b) = nodes[first]
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            Some(json!({"ttl": "8s", "policies": ["default"]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let created = Instant::now();
    let leases = |n: &Server| {
        let root = root.clone();
        let addr = n.addr.clone();
        async move {
            let r = reqwest::Client::new()
                .request(
                    reqwest::Method::from_bytes(b"LIST").expect("method"),
                    format!("{addr}/v1/sys/leases/lookup/auth/token/create/"),
                )
                .header("X-Vault-Token", root)
                .send()
                .await
                .expect("list");
            let code = r.status().as_u16();
            let b: serde_json::Value = r.json().await.unwrap_or_default();
            match code {
                404 => 0,
                // Leases right under auth/token/create/ (not those of role tokens, in folders).
                200 => b["data"]["keys"]
                    .as_array()
                    .map(|k| k.iter().filter(|k| !k.as_str().unwrap_or("/").ends_with('/')).count())
                    .unwrap_or(0),
                other => panic!("lease list: {other} {b}"),
            }
        }
    };
    assert_eq!(leases(&nodes[first]).await, 1);

    // The client's address travels with a forwarded request: a token bound to 127.0.0.2 works
    // through a standby from 127.0.0.2 only (the standby itself connects from 127.0.0.1).
    let (s, b) = nodes[first]
        .call(
            "POST",
            "auth/token/roles/near",
            Some(&root),
            Some(json!({"token_bound_cidrs": ["127.0.0.2/32"]})),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) =
        nodes[first].call("POST", "auth/token/create/near", Some(&root), Some(json!({}))).await;
    assert_eq!(s, 200, "{b}");
    let near = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let standby = &nodes[(first + 1) % 3];
    let from = |ip: [u8; 4]| {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .expect("client");
        let url = format!("{}/v1/auth/token/lookup-self", standby.addr);
        let near = near.clone();
        async move {
            client
                .get(url)
                .header("X-Vault-Token", near)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    };
    assert_eq!(from([127, 0, 0, 2]).await, 200, "the bound address, through a standby");
    assert_eq!(from([127, 0, 0, 1]).await, 403, "another address, through a standby");
    // Sent to a standby, the step-down is forwarded to the active node.
    let (s, b) = nodes[(first + 1) % 3].call("PUT", "sys/step-down", Some(&root), None).await;
    assert_eq!(s, 204, "{b}");
    let start = Instant::now();
    let next = loop {
        let now = active_of(&nodes, &[0, 1, 2], Duration::from_secs(10)).await;
        if now != first {
            break now;
        }
        assert!(start.elapsed() < Duration::from_secs(8), "still the same active");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (s, b) = nodes[next].call("GET", "sys/leader", None, None).await;
    assert_eq!((s, &b["is_self"]), (200, &json!(true)), "{b}");
    assert!(b["active_time"].as_str().is_some_and(|t| !t.starts_with("0001")), "{b}");
    // The new active loaded the lease and revokes it when due, not before.
    assert_eq!(leases(&nodes[next]).await, 1, "revoked early");
    loop {
        if leases(&nodes[next]).await == 0 {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(20),
            "the lease was not revoked by the new active"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(created.elapsed() >= Duration::from_secs(7), "revoked after {:?}", created.elapsed());
}

/// A TCP proxy to PostgreSQL that can stop passing bytes both ways while keeping every
/// connection open: a partition neither side sees as a closed connection.
struct Blackhole {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Blackhole {
    async fn start(to: u16) -> Blackhole {
        use std::sync::atomic::Ordering::SeqCst;
        let sock = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = sock.local_addr().expect("addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = sock.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut r, mut w) in [(cr, sw), (sr, cw)].map(|(r, w)| (Box::new(r), Box::new(w)))
                {
                    let c = c.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Cut: the bytes are swallowed and the connection stays open.
                            while c.load(SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                if !c.load(SeqCst) {
                                    return;
                                }
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Blackhole { port, cut }
    }

    fn cut(&self, on: bool) {
        self.cut.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_cut_off_from_postgresql_steps_down_before_another_node_takes_over() {
    let dir = tempdir();
    let pg = coffer_pgtest::Cluster::shared();
    let url = pg.create_database("ha_partition");
    let proxy = Blackhole::start(pg.port()).await;
    let proxied = url.replace(&format!(":{}/", pg.port()), &format!(":{}/", proxy.port));
    assert_ne!(proxied, url);
    let nodes: Vec<Server> = (0..3)
        .map(|i| {
            let url = if i == 0 { &proxied } else { &url };
            Server::start_with(&dir.path().join(format!("n{i}")), &ha_config(url, "3s"), "http")
        })
        .collect();
    let (keys, root) = nodes[0].init(1, 1).await;
    // Node 0 (behind the proxy) first, so that it leads.
    nodes[0].unseal(&keys).await;
    assert_eq!(active_of(&nodes, &[0], Duration::from_secs(10)).await, 0);
    for n in &nodes[1..] {
        n.unseal(&keys).await;
    }
    assert_eq!(active_of(&nodes, &[0, 1, 2], Duration::from_secs(10)).await, 0);

    proxy.cut(true);
    let cut_at = Instant::now();
    let (mut down_at, mut new_at) = (None, None);
    while down_at.is_none() || new_at.is_none() {
        let now = Instant::now();
        if down_at.is_none() && health(&nodes[0]).await == Some(429) {
            down_at = Some(now);
        }
        for i in [1, 2] {
            if new_at.is_none() && health(&nodes[i]).await == Some(200) {
                new_at = Some(now);
            }
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(15),
            "no step-down or takeover: {down_at:?} {new_at:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (down, new) = (down_at.expect("down") - cut_at, new_at.expect("new") - cut_at);
    assert!(
        down < Duration::from_secs(3),
        "the cut-off node stepped down after {down:?} (lock TTL 3 s)"
    );
    assert!(
        down < new,
        "another node led ({new:?}) before the cut-off node stepped down ({down:?})"
    );
    // Healed: the old node stays a standby and forwards to the new active node.
    proxy.cut(false);
    let active = active_of(&nodes, &[0, 1, 2], Duration::from_secs(10)).await;
    assert_ne!(active, 0);
    // (it learns the new leader at its next poll over a new database connection)
    let healed = Instant::now();
    loop {
        let (s, b) = nodes[0].call("GET", "sys/mounts", Some(&root), None).await;
        if s == 200 {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "no forwarding after the heal: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(nodes[0].logs().contains("no longer active"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_a_static_seal_unseal_themselves_after_a_restart_of_all() {
    let dir = tempdir();
    let url = coffer_pgtest::Cluster::shared().create_database("ha_static_seal");
    let key = dir.path().join("unseal.key");
    std::fs::write(&key, [42u8; 32]).expect("key");
    let seal = format!(
        "seal \"static\" {{\n  current_key_id = \"2026-12-1\"\n  current_key = \"file://{}\"\n}}\n",
        key.display()
    );
    // A key file others can read is refused.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cfg = dir.path().join("refused.hcl");
    std::fs::write(&cfg, format!("{}{seal}", ha_config(&url, "3s"))).expect("write");
    let out = Command::new(crate::common::BIN)
        .args(["server", "-config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"), "{out:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let mut nodes: Vec<Server> = (0..3)
        .map(|i| {
            Server::start_with(
                &dir.path().join(format!("n{i}")),
                &format!("{}{seal}", ha_config(&url, "3s")),
                "http",
            )
        })
        .collect();
    let (s, b) = nodes[1]
        .call("PUT", "sys/init", None, Some(json!({"recovery_shares": 3, "recovery_threshold": 2})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["keys"], json!([]), "{b}");
    assert_eq!(b["recovery_keys"].as_array().map(Vec::len), Some(3), "{b}");
    let root = b["root_token"].as_str().expect("root").to_owned();
    let recovery = b["recovery_keys"][0].as_str().expect("share").to_owned();
    // Every node unseals by itself, one becomes active.
    let first = active_of(&nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    let (s, b) = nodes[first].call("GET", "sys/seal-status", None, None).await;
    assert_eq!(
        (s, &b["type"], &b["recovery_seal"], &b["n"]),
        (200, &json!("static"), &json!(true), &json!(3)),
        "{b}"
    );
    // A recovery share does not unseal.
    let (s, _) = nodes[first].call("PUT", "sys/seal", Some(&root), None).await;
    assert_eq!(s, 204);
    let (s, b) = nodes[first].call("PUT", "sys/unseal", None, Some(json!({"key": recovery}))).await;
    assert_eq!(s, 400, "{b}");
    let live: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let next = active_of(&nodes, &live, Duration::from_secs(15)).await;
    let (s, b) = nodes[next]
        .call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"})))
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, _) = nodes[next].call("PUT", "secret/x", Some(&root), Some(json!({"v": 1}))).await;
    assert_eq!(s, 204);

    // All nodes restart; nobody unseals them.
    for n in &mut nodes {
        n.kill9();
    }
    for n in &mut nodes {
        n.restart();
    }
    let active = active_of(&nodes, &[0, 1, 2], Duration::from_secs(30)).await;
    let (s, b) = nodes[(active + 1) % 3].call("GET", "secret/x", Some(&root), None).await;
    assert_eq!((s, &b["data"]["v"]), (200, &json!(1)), "{b}");
}

/// With standby reads off (`ha_standby_reads = false`), what a client sees through a standby
/// right after a change acknowledged by the active node: the new value, the new policy, the
/// revocation, the spent use count, never an older state (every request is forwarded). With
/// standby reads on, see `ha_reads.rs`: the same within the staleness bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_standby_every_change_acknowledged_by_the_active_is_seen_at_once() {
    let dir = tempdir();
    let (nodes, root) =
        cluster_with(dir.path(), "ha_fresh_reads", "15s", "  ha_standby_reads = false\n", &[])
            .await;
    let a = active_of(&nodes, &[0, 1, 2], Duration::from_secs(20)).await;
    let (active, standby) = (&nodes[a], &nodes[(a + 1) % 3]);
    let (s, b) = active
        .call(
            "POST",
            "sys/mounts/secret",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    assert_eq!(s, 204, "mount: {b}");
    // (the standby's view of the leader is at most one poll, 1 s, old)
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Read-your-writes: each value, written on the active, read back at once through the standby.
    for i in 0..20 {
        let (s, b) = active.call("PUT", "secret/k", Some(&root), Some(json!({"v": i}))).await;
        assert_eq!(s, 204, "{b}");
        let (s, b) = standby.call("GET", "secret/k", Some(&root), None).await;
        assert_eq!((s, &b["data"]["v"]), (200, &json!(i)), "read {i} through the standby: {b}");
    }
    for p in ["a", "b"] {
        let (s, _) =
            active.call("PUT", &format!("secret/{p}"), Some(&root), Some(json!({"v": p}))).await;
        assert_eq!(s, 204);
    }

    // A policy change applies at once through the standby.
    let policy = |path: &str| json!({"policy": format!("path \"secret/{path}\" {{ capabilities = [\"read\"] }}")});
    let (s, b) =
        active.call("PUT", "sys/policies/acl/reader", Some(&root), Some(policy("a"))).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = active
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["reader"]})))
        .await;
    assert_eq!(s, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();
    assert_eq!(standby.call("GET", "secret/a", Some(&token), None).await.0, 200);
    assert_eq!(standby.call("GET", "secret/b", Some(&token), None).await.0, 403);
    let (s, b) =
        active.call("PUT", "sys/policies/acl/reader", Some(&root), Some(policy("b"))).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(standby.call("GET", "secret/a", Some(&token), None).await.0, 403, "old policy used");
    assert_eq!(
        standby.call("GET", "secret/b", Some(&token), None).await.0,
        200,
        "new policy unused"
    );

    // A revoked token is refused at once through the standby.
    let (s, b) =
        active.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": token}))).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(
        standby.call("GET", "secret/b", Some(&token), None).await.0,
        403,
        "revoked token served"
    );

    // Use counts are spent wherever the token is used: two uses, one on each node, then none.
    let (s, b) = active
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            Some(json!({"policies": ["reader"], "num_uses": 2})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let limited = b["auth"]["client_token"].as_str().expect("token").to_owned();
    assert_eq!(standby.call("GET", "secret/b", Some(&limited), None).await.0, 200);
    assert_eq!(active.call("GET", "secret/b", Some(&limited), None).await.0, 200);
    assert_eq!(standby.call("GET", "secret/b", Some(&limited), None).await.0, 403, "a third use");
}
