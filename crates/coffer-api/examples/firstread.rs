//! Benchmark helper for scripts/bench (not a test): measures a server's restart to its first
//! served read from one process that is already running when the server starts, so the figure
//! holds no process start-up of the measuring side (a `curl` per poll costs several
//! milliseconds on a busy machine, more than a poll of Coffer itself).
//!
//! Started before the server, it polls, every 0.5 ms and each time on a new connection (plain
//! HTTP/1.1, `Connection: close`, as curl's polls did): `GET /v1/sys/health` until it answers
//! 503 (sealed), then sends one `PUT /v1/sys/unseal` with the key (its answer must be 200 and
//! say `"sealed":false`), then `GET READ_PATH` with `X-Vault-Token` until it answers 200. It
//! prints the wall-clock times (Unix microseconds, comparable with bash's `$EPOCHREALTIME`) of
//! the first accepted connection, the 503, the unseal's answer and the 200, and the number of
//! requests sent. It measures any server with Vault's API the same way (Coffer and OpenBao in
//! `scripts/bench --peers`). Only plain HTTP: the benchmark it serves runs without TLS.
//!
//! firstread ADDRESS UNSEAL_KEY TOKEN READ_PATH TIMEOUT_SECONDS
//! e.g. firstread 127.0.0.1:8200 "$KEY" "$TOKEN" /v1/secret/data/bench 120

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const POLL: Duration = Duration::from_micros(500);

fn unix_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

/// What one request on a new connection got.
enum Outcome {
    /// Nothing listens yet.
    Refused,
    /// Connected, but the connection ended before a whole answer (a server still starting).
    Dropped,
    Answer(u16, String),
}

fn request(addr: &str, method: &str, path: &str, header: &str, body: &str) -> Outcome {
    let Ok(mut s) = TcpStream::connect(addr) else { return Outcome::Refused };
    let msg = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{header}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut answer = Vec::new();
    let sent = s.set_nodelay(true).is_ok()
        && s.set_read_timeout(Some(Duration::from_secs(30))).is_ok()
        && s.write_all(msg.as_bytes()).is_ok()
        && s.read_to_end(&mut answer).is_ok();
    let text = String::from_utf8_lossy(&answer);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)?.parse().ok());
    match status {
        Some(status) if sent => {
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
            Outcome::Answer(status, body)
        }
        _ => Outcome::Dropped,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        return Err("usage: firstread ADDRESS UNSEAL_KEY TOKEN READ_PATH TIMEOUT_SECONDS".into());
    }
    let (addr, key, token, path) = (&a[1], &a[2], &a[3], &a[4]);
    let deadline = Instant::now() + Duration::from_secs(a[5].parse()?);
    let mut requests = 0u64;
    let mut listening = None;
    let mut poll = |path: &str, header: &str, want: u16| -> Result<u128, String> {
        loop {
            match request(addr, "GET", path, header, "") {
                Outcome::Refused => {}
                outcome => {
                    listening.get_or_insert_with(unix_micros);
                    requests += 1;
                    if matches!(outcome, Outcome::Answer(status, _) if status == want) {
                        return Ok(unix_micros());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{path} did not answer {want} in time"));
            }
            std::thread::sleep(POLL);
        }
    };
    let sealed = poll("/v1/sys/health", "", 503)?;
    let unseal = format!("{{\"key\":\"{key}\"}}");
    let Outcome::Answer(status, body) = request(addr, "PUT", "/v1/sys/unseal", "", &unseal) else {
        return Err("sys/unseal: no answer".into());
    };
    let unsealed = unix_micros();
    if status != 200 || !body.replace([' ', '\n'], "").contains("\"sealed\":false") {
        return Err(format!("sys/unseal answered {status}: {body}").into());
    }
    let served = poll(path, &format!("X-Vault-Token: {token}\r\n"), 200)?;
    println!(
        "listen={} sealed={sealed} unsealed={unsealed} served={served} requests={}",
        listening.unwrap_or(0),
        requests + 1
    );
    Ok(())
}
