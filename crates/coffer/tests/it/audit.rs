//! Audit devices end to end: every request and response logged before it is answered, secrets
//! only as HMACs, a hash chain that `coffer audit verify` checks and that survives restarts, and
//! refusal when no device can write.

use serde_json::{Value, json};

use crate::common::{Server, ok, stderr, tempdir};

/// Enables a file device at `file/` writing to `log`.
pub(crate) async fn enable_file_device(s: &Server, root: &str, log: &std::path::Path) {
    let body = json!({"type": "file", "options": {"file_path": log.display().to_string()}});
    let (code, b) = s.call("PUT", "sys/audit/file", Some(root), Some(body)).await;
    assert_eq!(code, 204, "{b}");
}

pub(crate) fn entries(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[tokio::test]
async fn every_request_is_logged_with_secrets_hashed_and_a_verifiable_chain() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    let (_, list) = s.call("GET", "sys/audit", Some(&root), None).await;
    assert_eq!(list["data"]["file/"]["type"], "file");
    assert!(list["data"]["file/"].get("salt").is_none(), "the salt never leaves the server");

    let planted = "PLANTED-AUDIT-SECRET-42";
    s.call(
        "POST",
        "sys/mounts/secret",
        Some(&root),
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    s.call("POST", "secret/data/app", Some(&root), Some(json!({"data": {"password": planted}})))
        .await;
    assert_eq!(
        s.call("GET", "secret/data/app", Some(&root), None).await.1["data"]["data"]["password"],
        planted
    );
    let (_, t) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["default"]})))
        .await;
    let child = t["auth"]["client_token"].as_str().expect("token").to_owned();
    assert_eq!(s.call("GET", "secret/data/app", Some(&child), None).await.0, 403);
    s.call("POST", "auth/token/revoke", Some(&root), Some(json!({"token": child}))).await;

    let text = std::fs::read_to_string(&log).expect("log");
    for secret in [planted, root.as_str(), child.as_str()] {
        assert!(!text.contains(secret), "a secret or token appears raw in the audit log");
    }
    let all = entries(&log);
    let paths: Vec<(String, String)> = all
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["request"]["path"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for p in ["secret/data/app", "auth/token/create", "auth/token/revoke", "sys/mounts/secret"] {
        assert!(paths.contains(&("request".into(), p.into())), "request entry for {p}");
        assert!(paths.contains(&("response".into(), p.into())), "response entry for {p}");
    }
    let denied =
        all.iter().find(|e| e["error"] == "permission denied").expect("the refused read is logged");
    assert_eq!(denied["request"]["path"], "secret/data/app");

    // The operator can find the planted secret by its HMAC.
    let (_, h) =
        s.call("POST", "sys/audit-hash/file", Some(&root), Some(json!({"input": planted}))).await;
    let hashed = h["data"]["hash"].as_str().expect("hash").to_owned();
    assert!(hashed.starts_with("hmac-sha256:"));
    let write = all
        .iter()
        .find(|e| {
            e["type"] == "request"
                && e["request"]["operation"] == "create"
                && e["request"]["path"] == "secret/data/app"
        })
        .expect("write entry");
    assert_eq!(write["request"]["data"]["data"]["password"], hashed.as_str());
    let read = all
        .iter()
        .find(|e| {
            e["type"] == "response"
                && e["request"]["operation"] == "read"
                && e["request"]["path"] == "secret/data/app"
        })
        .expect("read response");
    assert_eq!(read["response"]["data"]["data"]["password"], hashed.as_str());
    assert!(write["auth"]["client_token"].as_str().expect("t").starts_with("hmac-sha256:"));
    assert!(write["auth"]["accessor"].as_str().expect("a").starts_with("hmac-sha256:"));

    let verified = ok(s.cli(None, &["audit", "verify", log.to_str().expect("p")]));
    assert!(verified.starts_with("OK: "), "{verified}");

    // The chain continues across a restart, in the same file.
    let before = all.len();
    s.restart();
    s.unseal(&keys).await;
    s.call("GET", "secret/data/app", Some(&root), None).await;
    let after = entries(&log);
    assert!(after.len() > before);
    assert_eq!(after[before]["seq"].as_u64(), Some(before as u64 + 1), "sequence continues");
    assert_eq!(after[before]["prev_hash"], after[before - 1]["hash"], "hash chain continues");
    ok(s.cli(None, &["audit", "verify", log.to_str().expect("p")]));
}

#[tokio::test]
async fn verify_finds_an_edited_a_deleted_and_a_swapped_line() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    for _ in 0..5 {
        s.call("GET", "auth/token/lookup-self", Some(&root), None).await;
    }
    let lines: Vec<String> =
        std::fs::read_to_string(&log).expect("log").lines().map(str::to_owned).collect();
    assert!(lines.len() >= 10);
    let check = |name: &str, content: Vec<String>, want_line: usize| {
        let f = dir.path().join(name);
        std::fs::write(&f, content.iter().map(|l| format!("{l}\n")).collect::<String>())
            .expect("write");
        let out = s.cli(None, &["audit", "verify", f.to_str().expect("p")]);
        assert_eq!(out.status.code(), Some(1), "{name} must fail verification");
        let err = stderr(&out);
        assert!(err.contains(&format!("line {want_line}:")), "{name}: {err}");
    };
    let mut edited = lines.clone();
    edited[4] = edited[4].replace("lookup-self", "lookup-selF");
    check("edited.log", edited, 5);
    let mut deleted = lines.clone();
    deleted.remove(6);
    check("deleted.log", deleted, 7);
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    check("swapped.log", swapped, 3);
    let truncated = lines[1..].to_vec();
    check("truncated-head.log", truncated, 1);
    // A duplicate key in front: a JSON parser keeps the last one (the original), `grep` and a
    // reader who looks at the line see the first (the forgery).
    let mut forged = lines.clone();
    forged[4] = forged[4].replacen('{', r#"{"request":{"path":"sys/FORGED"},"#, 1);
    check("forged-duplicate-key.log", forged, 5);
    let mut spaced = lines.clone();
    spaced[5] = spaced[5].replacen("\":", "\": ", 1);
    check("spaced.log", spaced, 6);

    // Whole entries cut from the end leave a valid chain; the server's head shows them missing.
    let log_arg = log.to_str().expect("p");
    ok(s.cli(Some(&root), &["audit", "verify", "-device=file", log_arg]));
    let current: Vec<String> =
        std::fs::read_to_string(&log).expect("log").lines().map(str::to_owned).collect();
    let cut = dir.path().join("cut-tail.log");
    std::fs::write(
        &cut,
        current[..current.len() - 4].iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .expect("write");
    ok(s.cli(None, &["audit", "verify", cut.to_str().expect("p")]));
    let out = s.cli(Some(&root), &["audit", "verify", "-device=file", cut.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("removed from its end"), "{}", stderr(&out));
}

#[tokio::test]
async fn when_no_device_can_write_requests_are_refused_and_nothing_changes() {
    let dir = tempdir();
    let (mut s, keys, root) = Server::ready_sqlite(dir.path()).await;
    s.call("POST", "sys/mounts/secret", Some(&root), Some(json!({"type": "kv"}))).await;
    s.call("POST", "secret/keep", Some(&root), Some(json!({"v": "original"}))).await;

    // A device that cannot write is refused at enable, and nothing is enabled.
    let (code, b) = s
        .call(
            "PUT",
            "sys/audit/full",
            Some(&root),
            Some(json!({"type": "file", "options": {"file_path": "/dev/full"}})),
        )
        .await;
    assert_eq!(code, 400, "{b}");
    assert!(b["errors"][0].as_str().expect("msg").contains("cannot write"), "{b}");
    assert!(
        s.call("GET", "sys/audit", Some(&root), None).await.1["data"]
            .as_object()
            .expect("obj")
            .is_empty()
    );

    // The only device's directory becomes a plain file: even root cannot open the log then.
    let logdir = dir.path().join("auditlogs");
    std::fs::create_dir(&logdir).expect("mkdir");
    let log = logdir.join("audit.log");
    enable_file_device(&s, &root, &log).await;
    s.stop();
    std::fs::remove_dir_all(&logdir).expect("rm");
    std::fs::write(&logdir, b"not a directory").expect("block");
    s.restart();
    s.unseal(&keys).await;

    let rows = || -> Vec<(String, Vec<u8>)> {
        let db = rusqlite::Connection::open(dir.path().join("coffer.db")).expect("db");
        let mut st = db
            .prepare("SELECT key, value FROM coffer_kv WHERE key LIKE 'logical/%' ORDER BY key")
            .expect("prep");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("q")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let before = rows();
    let (code, b) = s.call("POST", "secret/keep", Some(&root), Some(json!({"v": "changed"}))).await;
    assert_eq!((code, b), (500, json!({"errors": ["internal error"]})));
    assert_eq!(s.call("POST", "secret/new", Some(&root), Some(json!({"v": "x"}))).await.0, 500);
    assert_eq!(
        s.call("GET", "secret/keep", Some(&root), None).await.0,
        500,
        "reads are refused too"
    );
    assert_eq!(rows(), before, "no stored value changed or was added");
    assert!(s.logs().contains("no audit device could write"), "the cause is in the server log");

    // Once the log can be written again, the device opens by itself and requests flow.
    std::fs::remove_file(&logdir).expect("unblock");
    std::fs::create_dir(&logdir).expect("mkdir");
    assert_eq!(s.call("GET", "secret/keep", Some(&root), None).await.1["data"]["v"], "original");
    ok(s.cli(None, &["audit", "verify", log.to_str().expect("p")]));
}

#[tokio::test]
async fn a_socket_device_receives_the_entries() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // The collector keeps the connection open for the whole test: a device whose peer went
    // away cannot write, and then (correctly) nothing is answered.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let (sock, _) = listener.accept().await.expect("accept");
        let mut lines = tokio::io::BufReader::new(sock).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let (code, b) = s
        .call(
            "PUT",
            "sys/audit/sock",
            Some(&root),
            Some(json!({"type": "socket", "options": {"address": addr, "socket_type": "tcp"}})),
        )
        .await;
    assert_eq!(code, 204, "{b}");
    s.call("GET", "auth/token/lookup-self", Some(&root), None).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("in time")
            .expect("line");
        got.push(line);
    }
    assert!(got.len() >= 2, "{got:?}");
    let first: Value = serde_json::from_str(&got[0]).expect("json");
    assert_eq!(first["seq"], 1);
    assert!(!got.concat().contains(&root), "token hashed");
    assert_eq!(s.call("DELETE", "sys/audit/sock", Some(&root), None).await.0, 204);
    let (_, list) = s.call("GET", "sys/audit", Some(&root), None).await;
    assert!(list["data"].as_object().expect("obj").is_empty());
}

/// A TCP audit collector in the test: reads lines from one connection at a time and sends each
/// entry, tagged with the collector's name, until stopped. Stopping closes its listener and its
/// connection, as a collector process that dies does.
struct Collector {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start(
        name: &'static str,
        addr: &str,
        tx: tokio::sync::mpsc::UnboundedSender<(&'static str, Value)>,
    ) -> Collector {
        use tokio::io::AsyncBufReadExt;
        // tokio sets SO_REUSEADDR: a new collector can take the address of one that died.
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the collector");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                let sock = tokio::select! {
                    _ = &mut stopped => return,
                    a = listener.accept() => a.expect("accept").0,
                };
                let mut lines = tokio::io::BufReader::new(sock).lines();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        l = lines.next_line() => match l {
                            Ok(Some(l)) => {
                                let v = serde_json::from_str(&l).expect("each line is JSON");
                                let _ = tx.send((name, v));
                            }
                            _ => break,
                        },
                    }
                }
            }
        });
        Collector { stop: Some(stop), task }
    }

    /// Closes the listener and the connection, and returns once both are closed.
    async fn kill(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Receives entries until one matches `want`; all of them are appended to `seen`.
async fn receive_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(&'static str, Value)>,
    seen: &mut Vec<(&'static str, Value)>,
    what: &str,
    want: impl Fn(&str, &Value) -> bool,
) {
    loop {
        let (name, e) = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no entry for {what} within 10 s; got {seen:#?}"))
            .expect("collector channel");
        let done = want(name, &e);
        seen.push((name, e));
        if done {
            return;
        }
    }
}

fn is_entry(e: &Value, kind: &str, op: &str, path: &str) -> bool {
    e["type"] == kind && e["request"]["operation"] == op && e["request"]["path"] == path
}

#[tokio::test]
async fn a_socket_device_whose_collector_died_refuses_the_request_before_it_runs() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let root = Some(root.as_str());
    assert_eq!(s.call("POST", "sys/mounts/secret", root, Some(json!({"type": "kv"}))).await.0, 204);
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut seen = Vec::new();
    let c1 = Collector::start("c1", &addr, tx.clone()).await;
    let body = json!({"type": "socket", "options": {"address": addr, "socket_type": "tcp"}});
    let (code, b) = s.call("PUT", "sys/audit/sock", root, Some(body)).await;
    assert_eq!(code, 204, "{b}");
    assert_eq!(s.call("POST", "secret/keep", root, Some(json!({"v": "one"}))).await.0, 204);
    receive_until(&mut rx, &mut seen, "the first write", |_, e| {
        is_entry(e, "response", "create", "secret/keep")
    })
    .await;

    // The collector dies between two requests. Its connection still takes bytes into the
    // kernel's buffer, but nobody reads them: the write must be refused before it runs.
    c1.kill().await;
    let (code, b) = s.call("POST", "secret/keep", root, Some(json!({"v": "two"}))).await;
    assert_eq!((code, b), (500, json!({"errors": ["internal error"]})));

    // A collector comes back: the device reconnects, and the refused write changed nothing.
    let c2 = Collector::start("c2", &addr, tx.clone()).await;
    let (code, b) = s.call("GET", "secret/keep", root, None).await;
    assert_eq!((code, &b["data"]["v"]), (200, &json!("one")), "{b}");
    receive_until(&mut rx, &mut seen, "the read", |_, e| {
        is_entry(e, "response", "read", "secret/keep")
    })
    .await;

    // The collector dies and a new one is already listening at its address before the next
    // request: the request's entry must reach the new one, not the dead connection.
    c2.kill().await;
    let c3 = Collector::start("c3", &addr, tx.clone()).await;
    assert_eq!(s.call("POST", "secret/keep", root, Some(json!({"v": "three"}))).await.0, 204);
    receive_until(&mut rx, &mut seen, "the third write", |_, e| {
        is_entry(e, "response", "update", "secret/keep")
    })
    .await;
    assert!(
        seen.iter().any(|(c, e)| *c == "c3" && is_entry(e, "request", "update", "secret/keep")),
        "the request entry of the write reached the new collector: {seen:#?}"
    );
    assert_eq!(s.call("GET", "secret/keep", root, None).await.1["data"]["v"], "three");

    // Across the three collectors the chain has no gap: every entry arrived, in order.
    for (i, (_, e)) in seen.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1), "entry {i} of {seen:#?}");
        if i > 0 {
            assert_eq!(e["prev_hash"], seen[i - 1].1["hash"], "entry {i} of {seen:#?}");
        }
    }
    c3.kill().await;
}
