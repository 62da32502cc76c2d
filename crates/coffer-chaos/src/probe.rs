//! Probes: what an experiment checks its hypothesis against. The server's health, the agent's
//! status, Prometheus text metrics, and a query over an audit log file.
//!
//! Guarantees: no probe output holds a secret. Health and agent status carry none by design
//! (the agent's status holds paths, times and counts only); metrics are numbers; the audit
//! probe returns counts and whether the canary was found, never the canary nor any entry.
//! Not done: authentication to the agent's listener (it has none), TLS client certificates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::time::{parse_duration, parse_rfc3339};

/// Why a probe could not run (an unreachable target is an answer for `health` and `agent`, not
/// an error: see their outputs).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

type Result<T> = std::result::Result<T, ProbeError>;

const TIMEOUT: Duration = Duration::from_secs(10);

/// `health`: `GET ADDRESS/v1/sys/health`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthArgs {
    /// The server's address, e.g. `http://127.0.0.1:8200`.
    pub address: String,
    /// PEM CA bundle to trust (default: the system's roots).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

/// `agent`: the agent's `GET /agent/v1/status`, over TCP or its unix socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentArgs {
    /// `http://127.0.0.1:8100` (a `listener "tcp"`).
    #[serde(default)]
    pub address: Option<String>,
    /// Or the path of a `listener "unix"` socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// `metrics`: Prometheus text from a URL or the agent's socket, as `{"name{labels}": value}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsArgs {
    #[serde(default)]
    pub url: Option<String>,
    /// Or a unix socket, with `path` (default `/agent/v1/metrics`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub path: Option<String>,
    /// Only the samples of this metric.
    #[serde(default)]
    pub name: Option<String>,
}

/// `audit`: counts over a file audit device's log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditArgs {
    pub file: PathBuf,
    /// Only entries at or after this time: RFC 3339, or a duration meaning "that long ago".
    #[serde(default)]
    pub since: Option<String>,
    /// A cleartext string that must not be in the log; the output says whether it is (anywhere
    /// in the file, whatever `since` says), never the string itself.
    #[serde(default)]
    pub canary: Option<String>,
}

fn client(ca: Option<&PathBuf>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(TIMEOUT);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca)
            .map_err(|e| ProbeError::Invalid(format!("ca_cert {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ProbeError::Invalid(format!("ca_cert {}: {e}", ca.display())))?;
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| ProbeError::Failed(format!("http client: {e}")))
}

/// `(status, body)` of `GET url`; `Err` carries why nothing answered.
async fn get_url(c: &reqwest::Client, url: &str) -> std::result::Result<(u16, String), String> {
    let r = c.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| format!("{url}: {e}"))?;
    Ok((status, body))
}

/// `(status, body)` of `GET path` on a unix socket (HTTP/1.0: the answer ends with the
/// connection, no chunking).
async fn get_unix(socket: &PathBuf, path: &str) -> std::result::Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{}: timed out", socket.display()))?
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{}: not an HTTP answer", socket.display()))?;
    Ok((status, body.to_owned()))
}

fn body_value(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
}

/// The probes by name, for an experiment's `coffer` provider: `health`, `agent`, `metrics`,
/// `audit`, with the fields of the matching `*Args` struct as arguments.
pub async fn call(func: &str, arguments: Value) -> Result<Value> {
    fn parse<T: serde::de::DeserializeOwned>(func: &str, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| ProbeError::Invalid(format!("{func}: {e}")))
    }
    let arguments = if arguments.is_null() { json!({}) } else { arguments };
    match func {
        "health" => health(&parse(func, arguments)?).await,
        "agent" => agent(&parse(func, arguments)?).await,
        "metrics" => metrics(&parse(func, arguments)?).await,
        "audit" => audit(&parse(func, arguments)?).await,
        other => Err(ProbeError::Invalid(format!(
            "unknown probe {other:?}: health, agent, metrics, audit"
        ))),
    }
}

/// `{status, body, reachable}`; status 0 and `error` when the server did not answer.
pub async fn health(a: &HealthArgs) -> Result<Value> {
    let c = client(a.ca_cert.as_ref())?;
    let url = format!("{}/v1/sys/health", a.address.trim_end_matches('/'));
    Ok(match get_url(&c, &url).await {
        Ok((status, body)) => {
            json!({"reachable": true, "status": status, "body": body_value(&body)})
        }
        Err(e) => json!({"reachable": false, "status": 0, "error": e}),
    })
}

/// The agent's status, with its key facts lifted to the top: `healthy`, `serving_stale` (the
/// server is unreachable and templates are served from what was rendered before),
/// `stale_seconds`, `auth_state`, `server_reachable`, `templates`, and `status` (200 healthy,
/// 503 past `max_stale`, 0 when the agent did not answer).
pub async fn agent(a: &AgentArgs) -> Result<Value> {
    let path = "/agent/v1/status";
    let answer = match (&a.address, &a.socket) {
        (Some(addr), None) => {
            get_url(&client(None)?, &format!("{}{path}", addr.trim_end_matches('/'))).await
        }
        (None, Some(s)) => get_unix(s, path).await,
        _ => return Err(ProbeError::Invalid("give exactly one of address and socket".into())),
    };
    let (status, body) = match answer {
        Ok(x) => x,
        Err(e) => return Ok(json!({"reachable": false, "status": 0, "error": e})),
    };
    let b = body_value(&body);
    let reachable = b["server"]["reachable"].as_bool();
    let rendered =
        b["templates"].as_array().is_some_and(|t| t.iter().any(|t| !t["last_render"].is_null()));
    Ok(json!({
        "reachable": true,
        "status": status,
        "healthy": b["healthy"],
        "serving_stale": reachable.map(|r| !r && rendered),
        "stale_seconds": b["stale_seconds"],
        "max_stale_seconds": b["max_stale_seconds"],
        "auth_state": b["auth"]["state"],
        "token_expires": b["auth"]["token_expires"],
        "server_reachable": reachable,
        "server_last_error": b["server"]["last_error"],
        "events": b["events"],
        "templates": b["templates"],
    }))
}

/// `{"metrics": {"name{labels}": value}}` (labels as the exporter wrote them).
pub async fn metrics(a: &MetricsArgs) -> Result<Value> {
    let (status, text) = match (&a.url, &a.socket) {
        (Some(url), None) => get_url(&client(None)?, url).await,
        (None, Some(s)) => get_unix(s, a.path.as_deref().unwrap_or("/agent/v1/metrics")).await,
        _ => return Err(ProbeError::Invalid("give exactly one of url and socket".into())),
    }
    .map_err(ProbeError::Failed)?;
    if status != 200 {
        return Err(ProbeError::Failed(format!("metrics answered {status}")));
    }
    let parsed = parse_prometheus(&text, a.name.as_deref())?;
    Ok(json!({"metrics": parsed}))
}

/// Prometheus text exposition (version 0.0.4): `name{labels} value [timestamp]` lines; comments
/// and blank lines skipped; `NaN`, `+Inf`, `-Inf` become strings (JSON has no such numbers).
pub fn parse_prometheus(text: &str, only: Option<&str>) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || ProbeError::Failed(format!("metrics line {}: not a sample", n + 1));
        // Labels may hold spaces inside quotes: the series ends at the closing brace.
        let (series, rest) = match line.find('{') {
            Some(open) if line[..open].bytes().all(|c| c != b' ') => {
                let close = line.rfind('}').ok_or_else(bad)?;
                (&line[..=close], &line[close + 1..])
            }
            _ => line.split_once(char::is_whitespace).ok_or_else(bad)?,
        };
        let name = series.split('{').next().unwrap_or(series);
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let raw = rest.split_whitespace().next().ok_or_else(bad)?;
        let value = match raw {
            "NaN" | "+Inf" | "-Inf" | "Inf" => Value::String(raw.to_owned()),
            _ => json!(raw.parse::<f64>().map_err(|_| bad())?),
        };
        out.insert(series.to_owned(), value);
    }
    Ok(out)
}

fn since_time(s: &str) -> Result<SystemTime> {
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    parse_duration(s)
        .and_then(|d| SystemTime::now().checked_sub(d))
        .ok_or_else(|| ProbeError::Invalid(format!("since {s:?}: neither RFC 3339 nor a duration")))
}

/// Counts over the log: `entries` (since `since`), `errors` (requests with an entry whose
/// `error` is set), `failed_logins` (those on a login path: `auth/<mount>/login[/...]`),
/// `invalid_lines`, and `canary_found` when a canary was given.
pub async fn audit(a: &AuditArgs) -> Result<Value> {
    let bytes = tokio::fs::read(&a.file)
        .await
        .map_err(|e| ProbeError::Invalid(format!("audit file {}: {e}", a.file.display())))?;
    let since = a.since.as_deref().map(since_time).transpose()?;
    let mut entries = 0u64;
    let mut invalid = 0u64;
    let mut errors = std::collections::BTreeSet::new();
    let mut failed_logins = std::collections::BTreeSet::new();
    let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
    for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.trim().is_empty()) {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            invalid += 1;
            continue;
        };
        let time = e["time"].as_str();
        if let Some(since) = since
            && time.and_then(parse_rfc3339).is_none_or(|t| t < since)
        {
            continue;
        }
        entries += 1;
        if first.is_none() {
            first = time.map(str::to_owned);
        }
        last = time.map(str::to_owned).or(last);
        if e["error"].as_str().is_none_or(str::is_empty) {
            continue;
        }
        // One failed request writes a request and a response entry: count requests by id.
        let id =
            e["request"]["id"].as_str().map_or_else(|| format!("line:{entries}"), str::to_owned);
        let path = e["request"]["path"].as_str().unwrap_or("");
        if is_login(path) {
            failed_logins.insert(id.clone());
        }
        errors.insert(id);
    }
    let mut out = json!({
        "file": a.file, "entries": entries, "errors": errors.len(),
        "failed_logins": failed_logins.len(), "invalid_lines": invalid,
        "first": first, "last": last,
    });
    if let Some(c) = &a.canary {
        if c.is_empty() {
            return Err(ProbeError::Invalid("canary must not be empty".into()));
        }
        out["canary_found"] = json!(bytes.windows(c.len()).any(|w| w == c.as_bytes()));
    }
    Ok(out)
}

/// A login endpoint: `auth/<mount...>/login` or below it (userpass's `login/NAME`).
fn is_login(path: &str) -> bool {
    path.starts_with("auth/") && path.split('/').skip(2).any(|s| s == "login")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_becomes_a_map_and_filters_by_name() {
        let text = "# HELP coffer_agent_stale_seconds x\n# TYPE coffer_agent_stale_seconds gauge\n\
coffer_agent_stale_seconds 1.5\nhttp_requests_total{code=\"200\",path=\"a b\"} 3 1700000000\n\
x_nan NaN\n\n";
        let all = parse_prometheus(text, None).unwrap();
        assert_eq!(all["coffer_agent_stale_seconds"], json!(1.5));
        assert_eq!(all["http_requests_total{code=\"200\",path=\"a b\"}"], json!(3.0));
        assert_eq!(all["x_nan"], json!("NaN"));
        let one = parse_prometheus(text, Some("http_requests_total")).unwrap();
        assert_eq!(one.len(), 1);
        assert!(parse_prometheus("name_only\n", None).is_err());
        assert!(parse_prometheus("a notanumber\n", None).is_err());
    }

    #[tokio::test]
    async fn call_names_an_unknown_probe_or_field() {
        let e = call("nope", json!({})).await.unwrap_err().to_string();
        assert!(e.contains("unknown probe \"nope\""), "{e}");
        let e = call("audit", json!({"file": "/x", "canary_": "y"})).await.unwrap_err().to_string();
        assert!(e.contains("audit: unknown field `canary_`"), "{e}");
        let e = call("agent", json!({})).await.unwrap_err().to_string();
        assert!(e.contains("exactly one of address and socket"), "{e}");
    }

    #[test]
    fn login_paths() {
        assert!(is_login("auth/approle/login"));
        assert!(is_login("auth/userpass/login/alice"));
        assert!(is_login("auth/team/jwt/login"));
        assert!(!is_login("auth/token/lookup-self"));
        assert!(!is_login("secret/data/login"));
        assert!(!is_login("auth/login"));
    }

    #[tokio::test]
    async fn audit_counts_failed_logins_once_and_never_prints_the_canary() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("audit.log");
        let lines = [
            json!({"time": "2020-01-01T00:00:00Z", "type": "request", "error": "", "request": {"id": "old", "path": "auth/approle/login"}}),
            json!({"time": "2030-01-01T00:00:00Z", "type": "request", "error": "", "request": {"id": "a", "path": "auth/approle/login"}}),
            json!({"time": "2030-01-01T00:00:01Z", "type": "response", "error": "invalid role or secret ID", "request": {"id": "a", "path": "auth/approle/login"}}),
            json!({"time": "2030-01-01T00:00:02Z", "type": "response", "error": "permission denied", "request": {"id": "b", "path": "secret/data/x"}}),
            json!({"time": "2030-01-01T00:00:03Z", "type": "response", "error": "", "request": {"id": "c", "path": "secret/data/x", "data": "top-canary-123"}}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect::<String>() + "garbage\n";
        std::fs::write(&f, text).unwrap();
        let a = AuditArgs {
            file: f.clone(),
            since: Some("2029-12-31T00:00:00Z".into()),
            canary: Some("top-canary-123".into()),
        };
        let out = audit(&a).await.unwrap();
        assert_eq!(out["entries"], json!(4));
        assert_eq!(out["errors"], json!(2));
        assert_eq!(out["failed_logins"], json!(1));
        assert_eq!(out["invalid_lines"], json!(1));
        assert_eq!(out["canary_found"], json!(true));
        assert!(!out.to_string().contains("top-canary-123"));
        let none = audit(&AuditArgs { file: f, since: None, canary: Some("absent-x".into()) })
            .await
            .unwrap();
        assert_eq!(none["canary_found"], json!(false));
        assert_eq!(none["entries"], json!(5));
    }
}
