//! Benchmark helper for scripts/bench (not a test): holds N event subscriptions open against a
//! server, as N agents would, then writes a KV v2 secret W times and measures how long each write
//! takes to reach every subscriber. Prints `key=value` lines for the script.
//!
//! fanout ADDRESS CA_FILE TOKEN SUBSCRIBERS WRITES KV_PATH
//! e.g. fanout https://127.0.0.1:8200 tls.crt $TOKEN 1000 20 secret/data/fanout

use std::sync::Arc;
use std::time::{Duration, Instant};

use coffer_api::{Client, ClientConfig};
use serde_json::json;
use tokio::sync::{Barrier, mpsc};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        return Err("usage: fanout ADDRESS CA_FILE TOKEN SUBSCRIBERS WRITES KV_PATH".into());
    }
    let (n, writes): (usize, usize) = (a[4].parse()?, a[5].parse()?);
    let client = Client::new(&ClientConfig {
        address: a[1].clone(),
        ca_cert_pem: Some(std::fs::read(&a[2])?),
        client_identity_pem: None,
        timeout: Some(Duration::from_secs(60)),
        tls_skip_verify: false,
    })?
    .with_token(Some(a[3].clone()));
    let path = a[6].clone();

    // Subscribers: each reports (write number, when it saw it).
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let ready = Arc::new(Barrier::new(n + 1));
    let t_sub = Instant::now();
    for i in 0..n {
        let (client, tx, ready) = (client.clone(), tx.clone(), ready.clone());
        tokio::spawn(async move {
            // Spread the TLS handshakes a little; a fleet does not start in one millisecond.
            tokio::time::sleep(Duration::from_micros(500 * i as u64)).await;
            let mut stream = match client.subscribe_events("kv-v2/data-write").await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("subscriber {i}: {e}");
                    std::process::exit(1);
                }
            };
            ready.wait().await;
            while let Ok(Some(m)) = stream.next().await {
                if let Some(v) = m.metadata("current_version").and_then(|v| v.parse().ok()) {
                    let _ = tx.send((v, Instant::now()));
                }
            }
        });
    }
    ready.wait().await;
    println!("subscribed={n}");
    println!("subscribe_seconds={:.2}", t_sub.elapsed().as_secs_f64());
    // The script measures the server's memory and idle CPU now.
    println!("ready=1");
    let idle: u64 =
        std::env::var("FANOUT_IDLE_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(idle)).await;

    let mut all = Vec::new();
    let mut each = Vec::new();
    for _ in 0..writes {
        let t0 = Instant::now();
        let answer = client.write(&path, &json!({"data": {"v": "fanout"}})).await?;
        let version = answer
            .data()
            .and_then(|d| d.get("version"))
            .and_then(|v| v.as_u64())
            .ok_or("no version")?;
        let mut seen = 0;
        let deadline = t0 + Duration::from_secs(30);
        while seen < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((v, at))) if v == version => {
                    seen += 1;
                    each.push(at - t0);
                    if seen == n {
                        all.push(at - t0);
                    }
                }
                Ok(Some(_)) => {}
                _ => {
                    return Err(format!(
                        "write {version}: only {seen} of {n} subscribers heard of it within 30 s"
                    )
                    .into());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1000.0
    };
    println!("all_p50_ms={:.2}", pct(&mut all, 0.50));
    println!("all_p99_ms={:.2}", pct(&mut all, 0.99));
    println!("each_p50_ms={:.2}", pct(&mut each, 0.50));
    println!("each_p99_ms={:.2}", pct(&mut each, 0.99));
    Ok(())
}
