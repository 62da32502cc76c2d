//! Group commit under a crash: many writers at once share commits (and fsyncs), and still no
//! write that was acknowledged is lost when the process is killed with SIGKILL mid-load. KV v2
//! writes to distinct keys, to one shared key, and token creations (each a lease in the expiry
//! index) run side by side. On the suite's storage (sqlite, or PostgreSQL).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::common::{Server, tempdir};

/// What one writer saw acknowledged before the kill.
#[derive(Default)]
struct Acked {
    keys: Vec<(String, u64)>,
    shared: u64,
    tokens: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_acknowledged_writes_survive_kill_9() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    s.mount_kv2(&root).await;
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..32u64 {
        let (addr, root, acked, stop) = (s.addr.clone(), root.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // 20 writers on their own keys, 4 on one shared key, 8 creating tokens.
                let (path, body) = match w {
                    0..20 => (format!("secret/data/w{w}/k{i}"), json!({"data": {"n": i}})),
                    20..24 => ("secret/data/shared".to_owned(), json!({"data": {"w": w, "n": i}})),
                    _ => (
                        "auth/token/create".to_owned(),
                        json!({"ttl": "1h", "policies": ["default"]}),
                    ),
                };
                let r = http
                    .post(format!("{addr}/v1/{path}"))
                    .header("X-Vault-Token", &root)
                    .json(&body)
                    .send()
                    .await;
                let Ok(resp) = r else { break };
                if resp.status().as_u16() != 200 {
                    break;
                }
                let Ok(b) = resp.json::<serde_json::Value>().await else { break };
                let mut a = acked.lock().expect("lock");
                match w {
                    0..20 => a.keys.push((path, i)),
                    20..24 => a.shared += 1,
                    _ => match b["auth"]["client_token"].as_str() {
                        Some(t) => a.tokens.push(t.to_owned()),
                        None => break,
                    },
                }
                i += 1;
            }
        }));
    }
    // Killed mid-load once every kind of write has been acknowledged a few times (a loaded
    // machine, or PostgreSQL's pool filling with new connections, may take a while to get there).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a = acked.lock().expect("lock");
        if a.keys.len() > 100 && a.shared > 10 && a.tokens.len() > 20 {
            break;
        }
    }
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(
        acked.keys.len() > 20 && acked.shared > 4 && acked.tokens.len() > 8,
        "the writers made progress before the kill ({} keys, {} shared, {} tokens)",
        acked.keys.len(),
        acked.shared,
        acked.tokens.len()
    );
    s.restart();
    s.unseal(&keys).await;
    let mut lost = Vec::new();
    for (path, n) in &acked.keys {
        let (code, b) = s.call("GET", path, Some(&root), None).await;
        if code != 200 || b["data"]["data"]["n"] != json!(n) {
            lost.push(path.clone());
        }
    }
    // Every acknowledged write to the shared key made a version of its own.
    let (code, meta) = s.call("GET", "secret/metadata/shared", Some(&root), None).await;
    assert_eq!(code, 200, "{meta}");
    let current = meta["data"]["current_version"].as_u64().expect("current_version");
    if current < acked.shared {
        lost.push(format!("shared: {current} versions for {} acknowledged writes", acked.shared));
    }
    for t in &acked.tokens {
        let (code, _) = s.call("GET", "auth/token/lookup-self", Some(t), None).await;
        if code != 200 {
            lost.push("an acknowledged token".to_owned());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.keys.len() + acked.tokens.len() + 1,
        &lost[..lost.len().min(10)]
    );
}
