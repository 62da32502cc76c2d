//! The `http` and `process` providers, with Chaos Toolkit's outputs and failure rules.
//!
//! - `http` returns `{"status", "headers", "body"}`; the body is parsed JSON when the response's
//!   `Content-Type` is exactly `application/json`, text otherwise. A 4xx/5xx answer is an
//!   output, not a failure (the tolerance decides); a connection error or timeout fails the
//!   activity, and so does a status other than `expected_status` when one is set (Coffer's
//!   addition). GET sends `arguments` as query parameters; other methods send them as JSON when
//!   the `Content-Type` header is `application/json`, else form-encoded (an object) or raw (text).
//! - `process` returns `{"status", "stdout", "stderr"}`; a non-zero exit is an output, not a
//!   failure; a missing executable or a timeout fails the activity. A string `arguments` is
//!   appended to the path and run by `/bin/sh -c` (Chaos Toolkit's `shell=True`); a list is passed
//!   as separate arguments, empty and null items dropped. A process killed by signal N reports
//!   status -N, as Python does. The child's stdin is closed; it inherits the environment. It runs
//!   in its own process group, killed on a timeout or cancellation so the children of a shell
//!   die with it; after a normal exit, what it left running on purpose stays (as in Chaos
//!   Toolkit).
//!
//! Does not: retry (`max_retries`), or trust a CA other than the built-in roots.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::experiment::{Configuration, HttpProvider, ProcessProvider, py_str};

pub(crate) async fn run_http(p: &HttpProvider, config: &Configuration) -> Result<Value, String> {
    let url = config.substitute_text(&p.url);
    let method = p.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("invalid HTTP method {method:?}"))?;
    let headers = p.headers.as_ref().map(|h| config.substitute(&Value::Object(h.clone())));
    let arguments = p.arguments.as_ref().map(|a| config.substitute(a));
    let (connect, read) = match p.timeout.as_ref().map(|t| config.substitute(t)) {
        None | Some(Value::Null) => (None, None),
        Some(Value::Array(pair)) => match pair.as_slice() {
            [c, r] => (seconds(c), seconds(r)),
            _ => return Err("timeout must be seconds or [connect, read]".into()),
        },
        Some(t) => (seconds(&t), seconds(&t)),
    };

    let mut builder = reqwest::Client::builder().danger_accept_invalid_certs(!p.verify_tls);
    if let Some(c) = connect {
        builder = builder.connect_timeout(c);
    }
    if let Some(r) = read {
        builder = builder.read_timeout(r);
    }
    let client = builder.build().map_err(|e| format!("HTTP client: {e}"))?;
    // `requests` appends a text `params` to the query as it is.
    let target = match &arguments {
        Some(Value::String(q)) if method == reqwest::Method::GET && !q.is_empty() => {
            format!("{url}{}{q}", if url.contains('?') { '&' } else { '?' })
        }
        _ => url.clone(),
    };
    let mut req = client.request(method.clone(), &target);
    let mut json_body = false;
    if let Some(Value::Object(h)) = &headers {
        for (k, v) in h {
            req = req.header(k.as_str(), py_str(v));
        }
        json_body = h.get("Content-Type").and_then(Value::as_str) == Some("application/json");
    }
    match arguments {
        None | Some(Value::Null) => {}
        Some(args) if method == reqwest::Method::GET => {
            if let Value::Object(map) = &args {
                req = req.query(&pairs(map));
            } // a string was put in the URL above; other shapes are not parameters.
        }
        Some(args) if json_body => req = req.json(&args),
        Some(Value::Object(map)) => {
            let mut form =
                reqwest::Url::parse("http://form.invalid/").map_err(|e| e.to_string())?;
            form.query_pairs_mut().extend_pairs(pairs(&map));
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(form.query().unwrap_or_default().to_owned());
        }
        Some(Value::String(s)) => req = req.body(s),
        Some(other) => req = req.body(other.to_string()),
    }

    let response = req.send().await.map_err(|e| {
        if e.is_timeout() {
            "activity took too long to complete".to_owned()
        } else {
            format!("failed to connect to {url}: {e}")
        }
    })?;
    let status = response.status().as_u16();
    let mut header_map = Map::new();
    for (k, v) in response.headers() {
        header_map.insert(
            k.as_str().to_owned(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let text = response.text().await.map_err(|e| {
        if e.is_timeout() {
            "activity took too long to complete".to_owned()
        } else {
            format!("reading the answer from {url}: {e}")
        }
    })?;
    let body = if is_json {
        serde_json::from_str(&text).map_err(|e| format!("invalid JSON from {url}: {e}"))?
    } else {
        Value::String(text)
    };
    if let Some(want) = p.expected_status
        && want != status
    {
        return Err(format!("{url} answered {status}, expected {want}"));
    }
    Ok(serde_json::json!({"status": status, "headers": header_map, "body": body}))
}

fn pairs(map: &Map<String, Value>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), py_str(v))).collect()
}

fn seconds(v: &Value) -> Option<Duration> {
    let s = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => return None,
    };
    Duration::try_from_secs_f64(s).ok()
}

/// `shutil.which(os.path.expanduser(path))`.
fn which(path: &str) -> Option<PathBuf> {
    let expanded = match path.strip_prefix("~/") {
        Some(rest) => PathBuf::from(std::env::var_os("HOME")?).join(rest),
        None => PathBuf::from(path),
    };
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && (m.permissions().mode() & 0o111) != 0)
    };
    if expanded.components().count() > 1 || expanded.is_absolute() {
        return executable(&expanded).then_some(expanded);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(&expanded))
        .find(|p| executable(p))
}

pub(crate) async fn run_process(
    p: &ProcessProvider,
    config: &Configuration,
) -> Result<Value, String> {
    let path = which(&p.path).ok_or_else(|| format!("path '{}' cannot be found", p.path))?;
    let arguments = p.arguments.as_ref().map(|a| config.substitute(a));
    let mut cmd = match arguments {
        Some(Value::String(s)) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(format!("{} {s}", path.display()));
            c
        }
        other => {
            let mut c = tokio::process::Command::new(&path);
            let items: Vec<Value> = match other {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(Value::Object(map)) => {
                    map.into_iter().flat_map(|(k, v)| [Value::String(k), v]).collect()
                }
                Some(other) => vec![other],
            };
            for item in items {
                match &item {
                    Value::Null => {}
                    Value::String(s) if s.is_empty() => {}
                    _ => {
                        c.arg(py_str(&item));
                    }
                }
            }
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("starting {}: {e}", path.display()))?;
    let mut running = Running(child);
    let mut stdout = running.0.stdout.take();
    let mut stderr = running.0.stderr.take();
    let work = async {
        let (status, out, err) =
            tokio::join!(running.0.wait(), read_all(&mut stdout), read_all(&mut stderr));
        Ok::<_, std::io::Error>((status?, out?, err?))
    };
    let timeout = p.timeout.and_then(|t| Duration::try_from_secs_f64(t).ok());
    let (status, stdout, stderr) = match timeout {
        Some(t) => tokio::time::timeout(t, work)
            .await
            .map_err(|_| "process activity took too long to complete".to_owned())?,
        None => work.await,
    }
    .map_err(|e| format!("waiting for {}: {e}", path.display()))?;
    let status = status.code().or_else(|| status.signal().map(|s| -s)).unwrap_or(-1);
    Ok(serde_json::json!({
        "status": status,
        "stdout": String::from_utf8_lossy(&stdout),
        "stderr": String::from_utf8_lossy(&stderr),
    }))
}

async fn read_all(pipe: &mut Option<impl AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(pipe) = pipe {
        pipe.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// A process activity's child, leader of its own process group. Dropped before it was reaped
/// (timeout, cancellation), it kills the whole group, so the children a shell started die with
/// it; the `Child` itself (`kill_on_drop`) drops after, so the group id cannot have been reused.
/// Once reaped, `id()` is `None` and nothing is killed: what a process left running on purpose
/// after a normal exit stays, as with Chaos Toolkit.
struct Running(tokio::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.0.id().and_then(|id| i32::try_from(id).ok());
        if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
            // ESRCH (the group already ended) is an expected outcome, not an error.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}
