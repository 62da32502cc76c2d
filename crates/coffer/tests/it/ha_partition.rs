//! HA partition with a real network namespace: the active node runs in a namespace of its own,
//! joined to the host by a veth pair, and reaches PostgreSQL and the other nodes only through
//! it. Taking the link down cuts it from the database and from its peers at once (connections
//! stay open and simply stop passing bytes; the kernel here has no netem, a link down is what
//! it can do). The node must stop acting as active before another node takes the lock, a write
//! it held in its pipeline across the cut must never land, and once the link is back it must be
//! a standby that forwards to the new active node. Runs as root (the suite does).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::chaos_host::NetNs;
use crate::common::{Server, free_port, tempdir};

/// A node's config: API listener and cluster address on `ip`, lock TTL 3 s, chaos faults on (a
/// latency fault holds writes inside the pipeline across the cut).
fn config(url: &str, ip: &str) -> String {
    format!(
        "storage \"postgresql\" {{\n  connection_url = \"{url}\"\n  ha_enabled = \"true\"\n  ha_lock_ttl = \"3s\"\n}}\n\
         listener \"tcp\" {{\n  address = \"{ip}:0\"\n  tls_disable = true\n}}\n\
         cluster_addr = \"https://{ip}:{}\"\nlog_level = \"debug\"\n\
         chaos {{\n  enabled = true\n  max_duration = \"60s\"\n}}\n",
        free_port()
    )
}

/// Relays TCP from `ip:<returned port>` to PostgreSQL on the host's loopback, for the node in
/// the namespace (the test cluster listens on 127.0.0.1 only). The relay lives on the host side
/// of the link: cutting the link cuts the node from the database.
async fn relay(ip: &str, to: u16) -> u16 {
    let sock = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind relay");
    let port = sock.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = sock.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

/// An HTTP status from inside the namespace (the test's own route to it is down during the cut).
async fn status_in(ns: &str, url: String) -> Option<u16> {
    let ns = ns.to_owned();
    tokio::task::spawn_blocking(move || {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", "2", &url])
            .output()
            .expect("ip netns exec curl");
        String::from_utf8_lossy(&o.stdout).trim().parse().ok().filter(|c| *c != 0)
    })
    .await
    .expect("blocking task")
}

async fn health(n: &Server) -> Option<u16> {
    let r = n.http().get(format!("{}/v1/sys/health", n.addr)).timeout(Duration::from_secs(2));
    r.send().await.ok().map(|r| r.status().as_u16())
}

/// The one node (among `nodes`) answering health 200 while the others answer 429.
async fn active_of(nodes: &[Server], within: Duration) -> usize {
    let start = Instant::now();
    loop {
        let mut codes = Vec::new();
        for n in nodes {
            codes.push(health(n).await);
        }
        let active: Vec<usize> = (0..nodes.len()).filter(|i| codes[*i] == Some(200)).collect();
        if active.len() == 1 && codes.iter().filter(|c| **c == Some(429)).count() == nodes.len() - 1
        {
            return active[0];
        }
        assert!(start.elapsed() < within, "no single active node within {within:?}: {codes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_in_a_network_namespace_cut_from_everything_steps_down_first_and_never_writes_again()
 {
    let dir = tempdir();
    let ns = NetNs::new();
    let pg = coffer_pgtest::Cluster::shared();
    let url = pg.create_database("ha_netns");
    let relayed = relay(&ns.host_ip, pg.port()).await;
    let ns_url =
        url.replace(&format!("127.0.0.1:{}/", pg.port()), &format!("{}:{relayed}/", ns.host_ip));
    assert_ne!(ns_url, url, "the test cluster's URL changed shape: {url}");
    // Node 0 in the namespace; nodes 1 and 2 on the host side's address of the link, which stays
    // reachable on the host while the link is down (and from the namespace while it is up).
    let wrapper = ["ip", "netns", "exec", ns.name.as_str()];
    let nodes = vec![
        Server::start_via(&dir.path().join("n0"), &config(&ns_url, &ns.ns_ip), "http", &wrapper),
        Server::start_with(&dir.path().join("n1"), &config(&url, &ns.host_ip), "http"),
        Server::start_with(&dir.path().join("n2"), &config(&url, &ns.host_ip), "http"),
    ];
    let (keys, root) = nodes[0].init(1, 1).await;
    nodes[0].unseal(&keys).await;
    assert_eq!(active_of(&nodes[..1], Duration::from_secs(10)).await, 0);
    for n in &nodes[1..] {
        n.unseal(&keys).await;
    }
    assert_eq!(active_of(&nodes, Duration::from_secs(10)).await, 0);
    let old = &nodes[0];
    let (s, b) = old
        .call(
            "POST",
            "sys/mounts/secret",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "1"}})),
        )
        .await;
    assert_eq!(s, 204, "mount: {b}");
    // Through a standby: forwarded over the link into the namespace.
    let (s, b) = nodes[1].call("PUT", "secret/before", Some(&root), Some(json!({"v": 1}))).await;
    assert_eq!(s, 204, "a forwarded write before the cut: {b}");

    // Writes that passed every check of the active and wait (a latency fault) when the cut
    // comes; they reach storage only after it.
    let (s, b) = old
        .call(
            "POST",
            "sys/chaos/faults",
            Some(&root),
            Some(json!({"type": "latency", "duration": "30s", "latency": "1s", "path_prefix": "secret/stale"})),
        )
        .await;
    assert_eq!(s, 200, "latency fault: {b}");
    let mut held = Vec::new();
    for i in 0..3 {
        let url = format!("{}/v1/secret/stale{i}", old.addr);
        let token = root.clone();
        held.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .put(url)
                .header("X-Vault-Token", token)
                .json(&json!({"by": "old"}))
                .timeout(Duration::from_secs(45))
                .send()
                .await;
            r.map(|r| r.status().as_u16()).ok()
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    ns.set_link(false);
    let cut_at = Instant::now();
    let old_health = format!("{}/v1/sys/health", old.addr);
    let (mut down_at, mut new_at, mut new) = (None, None, None);
    while down_at.is_none() || new_at.is_none() {
        let now = Instant::now();
        if down_at.is_none() && status_in(&ns.name, old_health.clone()).await == Some(429) {
            down_at = Some(now);
        }
        for i in [1, 2] {
            if new_at.is_none() && health(&nodes[i]).await == Some(200) {
                (new_at, new) = (Some(now), Some(i));
            }
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(20),
            "no step-down or no takeover: stepped down {down_at:?}, taken over {new_at:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (down, taken) = (down_at.expect("down") - cut_at, new_at.expect("new") - cut_at);
    eprintln!("cut: stepped down after {down:?}, another node active after {taken:?}");
    assert!(
        down < Duration::from_secs(3),
        "the cut-off node stepped down after {down:?} (TTL 3 s)"
    );
    assert!(
        down < taken,
        "another node led ({taken:?}) before the cut-off one stepped down ({down:?})"
    );
    let new = new.expect("new");
    // The cut-off node knows no active node and reaches none: it refuses, it does not hang.
    let through_old = status_in(&ns.name, format!("{}/v1/sys/mounts", old.addr)).await;
    assert_eq!(through_old, Some(503), "a request to the cut-off standby");
    let (s, b) =
        nodes[new].call("PUT", "secret/shared", Some(&root), Some(json!({"by": "new"}))).await;
    assert_eq!(s, 204, "a write on the new active during the cut: {b}");

    ns.set_link(true);
    for h in held {
        let status = h.await.expect("task");
        assert!(
            !matches!(status, Some(200..=299)),
            "a write held on the cut-off node was acknowledged after the heal: {status:?}"
        );
    }
    for i in 0..3 {
        let (s, _) = nodes[new].call("GET", &format!("secret/stale{i}"), Some(&root), None).await;
        assert_eq!(s, 404, "the cut-off node's held write stale{i} reached storage");
    }
    let (_, b) = nodes[new].call("GET", "secret/shared", Some(&root), None).await;
    assert_eq!(b["data"]["by"], json!("new"));
    let (_, b) = nodes[new].call("GET", "secret/before", Some(&root), None).await;
    assert_eq!(b["data"]["v"], json!(1), "a write acknowledged before the cut was lost");
    // Healed: the old node stays a standby and forwards (out of its namespace) to the new one.
    assert_eq!(active_of(&nodes, Duration::from_secs(10)).await, new);
    let healed = Instant::now();
    loop {
        let (s, b) = old.call("GET", "secret/shared", Some(&root), None).await;
        if s == 200 {
            assert_eq!(b["data"]["by"], json!("new"));
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "no forwarding after the heal: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(old.logs().contains("no longer active"));
}
