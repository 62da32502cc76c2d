//! Audit devices and the broker that writes every request and response to them.
//!
//! Guarantees: when any device is enabled, a request is served only after its request entry was
//! written to at least one device, and answered only after its response entry was; secrets,
//! tokens and accessors appear only as `hmac-sha256:` of a per-device salt (unless the operator
//! chose `log_raw`), the one exemption being the request fields a `sys/` path declares clear
//! (an agent's delivery report: paths and file names), and only in a body that path accepts; each device's entries form a hash chain that continues across restarts.
//! A file device's file is held with an exclusive advisory lock (`flock`) by the node that
//! appends to it: an HA standby serves reads itself (and audits them) only when it can take
//! the lock of every file device, so two processes never continue one file's chain. The active
//! node appends whether or not it got the lock (it must audit), and logs an error when another
//! process holds it.
//! Not guaranteed: that entries reach disk platters (the OS may hold them; a power cut can lose
//! the tail, which the chain then shows as cut short).

mod chain;
mod device;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use aws_lc_rs::hmac;
use coffer_barrier::Barrier;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, RwLock};

pub use chain::{ChainBreak, ChainHead, verify_chain, verify_chain_against};
use device::{Sink, SocketKind};

use crate::hex::{hex, unhex};
use crate::logical::{Error, Request, Response, Result};
use crate::random::random_bytes;
use crate::record;
use crate::secret::SecretString;
use crate::token::TokenEntry;

const TABLE_KEY: &str = "core/audit";

/// A device as stored in the audit table (inside the barrier).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct DeviceConfig {
    pub(crate) path: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) description: String,
    pub(crate) options: BTreeMap<String, String>,
    pub(crate) local: bool,
    /// Hex HMAC key; never leaves the barrier.
    salt: SecretString,
}

#[derive(Serialize, Deserialize)]
struct StoredTable {
    devices: Vec<DeviceConfig>,
}

crate::record!(StoredTable, "audit device table", 1);

/// A device's mutable half: where its chain stands, and its open sink.
struct State {
    seq: u64,
    prev: String,
    sink: Sink,
}

pub(crate) struct Device {
    pub(crate) config: DeviceConfig,
    salt: hmac::Key,
    log_raw: bool,
    hmac_accessor: bool,
    /// Held for a whole write, so entries are chained and written in one order.
    state: Mutex<State>,
}

fn bool_option(opts: &BTreeMap<String, String>, k: &str, default: bool) -> Result<bool> {
    match opts.get(k).map(|s| s.as_str()) {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => {
            Err(Error::invalid(format!("option {k:?} must be true or false, not {other:?}")))
        }
    }
}

/// Checks every option before anything is opened or created.
fn check_options(config: &DeviceConfig) -> Result<()> {
    let o = &config.options;
    let known: &[&str] = match config.kind.as_str() {
        "file" => &["file_path", "path", "log_raw", "hmac_accessor", "mode", "format"],
        "socket" => &["address", "socket_type", "log_raw", "hmac_accessor", "format"],
        other => {
            // Vault's text; the types are `file` and `socket` (docs/audit.md).
            return Err(Error::invalid(format!("unknown backend type: {other:?}")));
        }
    };
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Error::invalid(format!(
            "unknown option {k:?} for a {} audit device (known: {})",
            config.kind,
            known.join(", ")
        )));
    }
    if o.get("format").is_some_and(|f| f != "json") {
        return Err(Error::invalid("audit format must be \"json\""));
    }
    bool_option(o, "log_raw", false)?;
    bool_option(o, "hmac_accessor", true)?;
    file_mode(config)?;
    if config.kind == "file" && o.get("file_path").or_else(|| o.get("path")).is_none() {
        return Err(Error::invalid("file_path is required"));
    }
    if config.kind == "socket" {
        if o.get("address").is_none() {
            return Err(Error::invalid("socket audit device needs option address"));
        }
        if !matches!(o.get("socket_type").map(String::as_str), None | Some("tcp" | "unix")) {
            return Err(Error::invalid("socket_type must be \"tcp\" or \"unix\""));
        }
    }
    Ok(())
}

/// The `mode` option (octal, default 0600) a new log file is created with.
fn file_mode(config: &DeviceConfig) -> Result<u32> {
    match config.options.get("mode") {
        None => Ok(0o600),
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                Error::invalid(format!("mode must be an octal file mode like \"0600\", not {m:?}"))
            }),
    }
}

/// Opens the device's sink, and for a file, finds where its chain stands.
fn open_sink(config: &DeviceConfig) -> std::io::Result<(Sink, u64, String)> {
    let o = &config.options;
    let sink = if config.kind == "file" {
        let path = o.get("file_path").or_else(|| o.get("path")).map(String::as_str).unwrap_or("");
        Sink::file(path, file_mode(config).unwrap_or(0o600))?
    } else {
        let kind = if o.get("socket_type").map(String::as_str) == Some("unix") {
            SocketKind::Unix
        } else {
            SocketKind::Tcp
        };
        Sink::socket(kind, o.get("address").map(String::as_str).unwrap_or(""))
    };
    // Continue the chain where the file ends, so a restart does not start a new one.
    let (seq, prev) = sink.file_path().and_then(|p| last_entry(p)).unwrap_or((0, String::new()));
    Ok((sink, seq, prev))
}

impl Device {
    /// A device from its stored config. One that cannot open is kept, failing every write (so
    /// requests are refused rather than served unaudited) and trying to open again each time.
    fn load(config: DeviceConfig) -> Result<Device> {
        check_options(&config)?;
        let (sink, seq, prev) = match open_sink(&config) {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(device = %config.path, error = %e, "audit device failed to open; requests are refused until it can write or is disabled");
                (Sink::Broken(e.to_string()), 0, String::new())
            }
        };
        let salt = unhex(config.salt.expose())
            .ok_or_else(|| Error::Internal("audit salt corrupt".into()))?;
        Ok(Device {
            log_raw: bool_option(&config.options, "log_raw", false)?,
            hmac_accessor: bool_option(&config.options, "hmac_accessor", true)?,
            salt: hmac::Key::new(hmac::HMAC_SHA256, &salt),
            config,
            state: Mutex::new(State { seq, prev, sink }),
        })
    }

    pub(crate) fn hash(&self, s: &str) -> String {
        format!("hmac-sha256:{}", hex(hmac::sign(&self.salt, s.as_bytes()).as_ref()))
    }

    fn hash_strings(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.hash(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.hash_strings(x)),
            Value::Object(m) => m.values_mut().for_each(|x| self.hash_strings(x)),
            _ => {}
        }
    }

    fn hash_field(&self, v: &mut Value, path: &[&str]) {
        let mut cur = v;
        for p in path {
            match cur.get_mut(*p) {
                Some(next) => cur = next,
                None => return,
            }
        }
        if let Value::String(s) = cur
            && !s.is_empty()
        {
            *s = self.hash(s);
        }
    }

    /// An alert names its token by accessor; a device that hashes accessors hashes it there
    /// too, in the fields and in the sentence.
    fn hash_alert_accessor(&self, alert: &mut Value) {
        let Some(acc) = alert["output_fields"]["coffer.accessor"].as_str().map(str::to_owned)
        else {
            return;
        };
        if acc.is_empty() {
            return;
        }
        let hashed = self.hash(&acc);
        alert["output_fields"]["coffer.accessor"] = Value::String(hashed.clone());
        if let Some(Value::String(out)) = alert.get_mut("output") {
            *out = out.replace(&acc, &hashed);
        }
    }

    /// This device's view of an entry: secrets replaced by their HMACs.
    fn redact(&self, mut e: Value, keys: NonHmac<'_>) -> Value {
        if self.log_raw {
            return e;
        }
        for p in [
            &["auth", "client_token"][..],
            &["request", "client_token"],
            &["response", "auth", "client_token"],
            &["response", "wrap_info", "token"],
        ] {
            self.hash_field(&mut e, p);
        }
        if self.hmac_accessor
            && let Some(alert) = e.get_mut("alert")
        {
            self.hash_alert_accessor(alert);
        }
        if self.hmac_accessor {
            for p in [
                &["auth", "accessor"][..],
                &["request", "client_token_accessor"],
                &["response", "auth", "accessor"],
                &["response", "wrap_info", "accessor"],
                &["response", "wrap_info", "wrapped_accessor"],
            ] {
                self.hash_field(&mut e, p);
            }
        }
        let clear = clear_request_keys(&e);
        if let Some(Value::Object(d)) = e.get_mut("request").and_then(|r| r.get_mut("data")) {
            for (k, v) in d.iter_mut() {
                if !clear.contains(&k.as_str()) && !keys.request.iter().any(|c| c == k) {
                    self.hash_strings(v);
                }
            }
        }
        match e.get_mut("response").and_then(|r| r.get_mut("data")) {
            Some(Value::Object(d)) => {
                for (k, v) in d.iter_mut() {
                    if !keys.response.iter().any(|c| c == k) {
                        self.hash_strings(v);
                    }
                }
            }
            Some(d) => self.hash_strings(d),
            None => {}
        }
        e
    }

    async fn write(&self, entry: &Value, keys: NonHmac<'_>) -> std::io::Result<()> {
        let e = self.redact(entry.clone(), keys);
        let mut state = self.state.lock().await;
        if let Sink::Broken(_) = state.sink {
            let (sink, seq, prev) = open_sink(&self.config)?;
            *state = State { seq, prev, sink };
            tracing::info!(device = %self.config.path, "audit device opened");
        }
        let Value::Object(m) = e else { return Ok(()) };
        let (line, hash) = chain::seal_entry(m, state.seq + 1, &state.prev);
        state.sink.write_line(line.as_bytes()).await?;
        state.seq += 1;
        state.prev = hash;
        Ok(())
    }
}

/// The request fields an entry shows in clear: those its path declares (see
/// [`crate::sys::paths::AuditClear`]), and only when the body is one that path accepts.
fn clear_request_keys(e: &Value) -> &'static [&'static str] {
    let req = &e["request"];
    // Only a report an authenticated caller made, as an update, and that was not refused: an
    // unauthenticated, refused or wrong-verb request keeps its body hashed like any other, so
    // nobody can write text of their choosing into the log in clear.
    let authenticated = e["auth"]["accessor"].as_str().is_some_and(|a| !a.is_empty());
    let refused = e["error"].as_str().is_some_and(|x| !x.is_empty());
    if !authenticated || refused || req["operation"] != "update" {
        return &[];
    }
    match (req["path"].as_str(), req["data"].as_object()) {
        (Some(path), Some(data)) => crate::sys::paths::audit_clear_keys(path, data),
        _ => &[],
    }
}

/// `(seq, hash)` of a regular file's last complete entry, reading backwards from the end in
/// growing windows (an entry can be large); `None` for an empty file, or for devices like
/// `/dev/full` or FIFOs, which have no end to read.
fn last_entry(path: &std::path::Path) -> Option<(u64, String)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() == 0 {
        return None;
    }
    let mut window = 64 * 1024u64;
    loop {
        let start = meta.len().saturating_sub(window);
        f.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf);
        // A cut-off first line is no entry: skip to the first full line when not at the start.
        let text =
            if start > 0 { text.split_once('\n').map(|(_, r)| r).unwrap_or("") } else { &text };
        if let Some(head) = chain::tail_head(text) {
            return Some(head);
        }
        if start == 0 {
            return None;
        }
        window *= 4;
    }
}

/// All enabled devices. Loaded at unseal; changed through `sys/audit`.
pub(crate) struct Broker {
    devices: RwLock<Vec<Arc<Device>>>,
    /// How many `devices` holds, stored while its write lock is held: a request without a
    /// device to write to learns so without taking the lock (twice per request). A request
    /// that reads it just before a device is enabled goes unaudited, exactly as one that took
    /// the lock just before would.
    enabled: AtomicUsize,
    /// A chaos `audit_blocked` fault: every write fails, except for `sys/chaos/*` requests and
    /// the faults' own entries (so a fault can be removed, and its end recorded).
    blocked: Arc<AtomicBool>,
    /// The detection rules' feed: every request's outcome is offered to it, devices or not.
    detect: Arc<crate::detect::Detector>,
    /// The file devices' files, each held with an exclusive advisory lock while this broker
    /// lives (see the module's header).
    locks: std::sync::Mutex<Vec<(String, std::fs::File)>>,
}

/// The file a `file` device appends to (`None` for other kinds and for `stdout`).
fn file_of(config: &DeviceConfig) -> Option<&str> {
    let o = &config.options;
    let p = o.get("file_path").or_else(|| o.get("path")).map(String::as_str)?;
    (config.kind == "file" && p != "stdout" && !p.is_empty()).then_some(p)
}

/// Opens the device's file and takes its exclusive advisory lock: `Ok(None)` when another
/// process (or another open of it in this one) holds it.
fn lock_file(config: &DeviceConfig) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(path) = file_of(config) else { return Ok(None) };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(file_mode(config).unwrap_or(0o600))
        .open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

fn now_rfc3339_nanos() -> String {
    coffer_time::format_rfc3339(SystemTime::now(), coffer_time::Fraction::Nanos)
}

/// What an entry says about one request.
pub(crate) struct Record<'a> {
    pub(crate) req: &'a Request,
    pub(crate) path: &'a str,
    pub(crate) operation: &'a str,
    pub(crate) caller: Option<&'a TokenEntry>,
    pub(crate) mount_type: &'a str,
    pub(crate) non_hmac: NonHmac<'a>,
    /// A request to an auth method's login path (the detection rules count failed ones).
    pub(crate) login: bool,
}

/// The `data` keys an entry shows in clear because the mount serving the request says so
/// (`audit_non_hmac_request_keys`, `audit_non_hmac_response_keys`): an operator's choice, made
/// with `sudo`-free tune rights on the mount, as in Vault.
#[derive(Clone, Copy, Default)]
pub(crate) struct NonHmac<'a> {
    pub(crate) request: &'a [String],
    pub(crate) response: &'a [String],
}

impl Record<'_> {
    fn base(&self, kind: &str, error: &str) -> Value {
        let auth = match self.caller {
            Some(t) => json!({
                "client_token": self.req.client_token.as_ref().map(|s| s.expose()).unwrap_or(""),
                "accessor": t.accessor,
                "display_name": t.display_name,
                "policies": t.policies,
                "token_policies": t.policies,
                "metadata": if t.meta.is_empty() { Value::Null } else { json!(t.meta) },
                "entity_id": t.entity_id,
                "token_type": "service",
                "token_issue_time": crate::time::rfc3339(t.creation_time),
            }),
            None => json!({}),
        };
        json!({
            "time": now_rfc3339_nanos(),
            "type": kind,
            "auth": auth,
            "request": {
                "id": self.req.id,
                "operation": self.operation,
                "mount_type": self.mount_type,
                "client_token": self.req.client_token.as_ref().map(|s| s.expose()).unwrap_or(""),
                "client_token_accessor": self.caller.map(|t| t.accessor.as_str()).unwrap_or(""),
                "namespace": { "id": "root" },
                "path": self.path,
                "data": if self.req.data.is_empty() { Value::Null } else { Value::Object(self.req.data.clone()) },
                "remote_address": self.req.remote_addr.map(|a| a.to_string()).unwrap_or_default(),
            },
            "error": error,
        })
    }
}

impl Broker {
    fn empty(blocked: Arc<AtomicBool>, detect: Arc<crate::detect::Detector>) -> Broker {
        Broker {
            devices: RwLock::new(Vec::new()),
            enabled: AtomicUsize::new(0),
            blocked,
            detect,
            locks: Default::default(),
        }
    }

    pub(crate) async fn load(
        barrier: &Barrier,
        blocked: Arc<AtomicBool>,
        detect: Arc<crate::detect::Detector>,
    ) -> Result<Broker> {
        let broker = Broker::empty(blocked, detect);
        for cfg in load_table(barrier).await? {
            broker.hold_lock(&cfg);
            broker.add(Arc::new(Device::load(cfg)?)).await;
        }
        Ok(broker)
    }

    /// A standby's read replica's broker: every file device's lock must be free (this node is
    /// then its only writer); otherwise an error that says which file is held.
    /// `previous`: the replica's broker this one replaces, whose locks it takes over.
    pub(crate) async fn load_replica(
        barrier: &Barrier,
        blocked: Arc<AtomicBool>,
        detect: Arc<crate::detect::Detector>,
        previous: Option<&Broker>,
    ) -> Result<Broker> {
        let poisoned = || Error::Internal("audit lock list poisoned".into());
        let mut held = match previous {
            Some(p) => std::mem::take(&mut *p.locks.lock().map_err(|_| poisoned())?),
            None => Vec::new(),
        };
        let broker = Broker::empty(blocked, detect);
        for cfg in load_table(barrier).await? {
            if let Some(path) = file_of(&cfg) {
                let kept = held.iter().position(|(p, _)| p == path).map(|i| held.swap_remove(i).1);
                let locked = match kept {
                    Some(f) => Ok(Some(f)),
                    None => lock_file(&cfg),
                };
                match locked {
                    Ok(Some(f)) => {
                        broker.locks.lock().map_err(|_| poisoned())?.push((path.to_owned(), f))
                    }
                    Ok(None) => {
                        return Err(Error::Refused(format!(
                            "audit device {:?}: its file {path:?} is held by another process; each node needs its own audit file system to serve reads as a standby",
                            cfg.path
                        )));
                    }
                    Err(e) => {
                        return Err(Error::Refused(format!(
                            "audit device {:?}: cannot open {path:?}: {e}",
                            cfg.path
                        )));
                    }
                }
            }
            broker.add(Arc::new(Device::load(cfg)?)).await;
        }
        Ok(broker)
    }

    /// The active node's lock of a file device: taken when free; when another process holds
    /// it, the node appends all the same (it must audit) and says so.
    fn hold_lock(&self, cfg: &DeviceConfig) {
        match lock_file(cfg) {
            Ok(Some(f)) => {
                if let (Ok(mut l), Some(p)) = (self.locks.lock(), file_of(cfg)) {
                    l.push((p.to_owned(), f));
                }
            }
            Ok(None) if file_of(cfg).is_some() => tracing::error!(
                device = %cfg.path,
                "the audit file is locked by another process (a standby serving reads with the same file?); each node needs its own audit file system"
            ),
            Ok(None) => {}
            // Opening fails again in the device itself, which reports it.
            Err(_) => {}
        }
    }

    /// Each device's config and chain head (entries written, last hash).
    pub(crate) async fn list(&self) -> Vec<(DeviceConfig, u64, String)> {
        let devices = self.devices.read().await.clone();
        let mut out = Vec::new();
        for d in devices {
            let st = d.state.lock().await;
            out.push((d.config.clone(), st.seq, st.prev.clone()));
        }
        out
    }

    pub(crate) async fn device(&self, path: &str) -> Option<Arc<Device>> {
        self.devices.read().await.iter().find(|d| d.config.path == path).cloned()
    }

    /// Writes `entry` to every device; succeeds when at least one wrote (or none is enabled).
    async fn write_all(&self, entry: &Value, keys: NonHmac<'_>) -> Result<()> {
        let devices = self.devices.read().await.clone();
        if devices.is_empty() {
            return Ok(());
        }
        let chaos_entry = entry["type"] == "chaos" || entry["type"] == "alert";
        if self.blocked.load(Ordering::Acquire) && !chaos_entry && !crate::chaos::exempt() {
            tracing::error!(
                "audit devices blocked by a chaos fault (audit_blocked); request refused"
            );
            return Err(Error::Internal(
                "no audit device could write the entry; request refused".into(),
            ));
        }
        let mut ok = 0;
        for d in &devices {
            match d.write(entry, keys).await {
                Ok(()) => ok += 1,
                Err(e) => {
                    tracing::error!(device = %d.config.path, error = %e, "audit device failed to write")
                }
            }
        }
        if ok == 0 {
            return Err(Error::Internal(
                "no audit device could write the entry; request refused".into(),
            ));
        }
        Ok(())
    }

    /// A chaos fault's start or end (`event`), with the fault as it was given; `reason`: why it
    /// ended. Not refused by an `audit_blocked` fault, whose own start and end these are.
    pub(crate) async fn log_chaos(
        &self,
        event: &str,
        fault: &coffer_wire::chaos::Fault,
        reason: Option<&str>,
    ) -> Result<()> {
        if !self.active().await {
            return Ok(());
        }
        let entry = json!({
            "time": now_rfc3339_nanos(),
            "type": "chaos",
            "chaos": { "event": event, "reason": reason, "fault": fault },
        });
        self.write_all(&entry, NonHmac::default()).await
    }

    /// One leak response action (`sys/leaks/report`), done or, in a dry run, planned. The entry
    /// holds keyed hashes, paths and accessors, never a value.
    pub(crate) async fn log_leak(&self, action: Value) -> Result<()> {
        if !self.active().await {
            return Ok(());
        }
        let entry = json!({ "time": now_rfc3339_nanos(), "type": "leak", "leak": action });
        self.write_all(&entry, NonHmac::default()).await
    }

    /// A detection alert (see [`crate::detect`]), in every device's chain. Not refused by an
    /// `audit_blocked` chaos fault either: it records, it serves no request.
    pub(crate) async fn log_alert(&self, alert: &Value) -> Result<()> {
        if !self.active().await {
            return Ok(());
        }
        let entry = json!({ "time": now_rfc3339_nanos(), "type": "alert", "alert": alert });
        self.write_all(&entry, NonHmac::default()).await
    }

    pub(crate) async fn has_devices(&self) -> bool {
        self.active().await
    }

    /// Whether any device is enabled: without one there is nothing to build entries for.
    async fn active(&self) -> bool {
        self.enabled.load(Ordering::SeqCst) > 0
    }

    async fn add(&self, device: Arc<Device>) {
        let mut devices = self.devices.write().await;
        devices.push(device);
        self.enabled.store(devices.len(), Ordering::SeqCst);
    }

    pub(crate) async fn log_request(&self, r: &Record<'_>, error: &str) -> Result<()> {
        // A refused request gets no response entry: its request entry is its outcome.
        if !error.is_empty() {
            self.detect.observe(r, error, None, None);
        }
        if !self.active().await {
            return Ok(());
        }
        self.write_all(&r.base("request", error), r.non_hmac).await
    }

    pub(crate) async fn log_response(
        &self,
        r: &Record<'_>,
        result: &Result<Response>,
    ) -> Result<()> {
        match result {
            Ok(resp) => self.detect.observe(r, "", resp.auth.as_ref(), None),
            Err(e) => {
                let role = match e {
                    Error::LoginFailed { role, .. } => Some(role.as_str()),
                    _ => None,
                };
                self.detect.observe(r, &public_error(e), None, role)
            }
        }
        if !self.active().await {
            return Ok(());
        }
        let (error, response) = match result {
            Ok(resp) => {
                let mut out = Map::new();
                out.insert("mount_type".into(), json!(r.mount_type));
                if let Some(d) = &resp.data {
                    out.insert("data".into(), Value::Object(d.clone()));
                }
                if let Some(j) = &resp.data_json {
                    let d: Value = serde_json::from_str(j.get()).map_err(|e| {
                        Error::Internal(format!(
                            "an answer's data does not decode (column {})",
                            e.column()
                        ))
                    })?;
                    out.insert("data".into(), d);
                }
                if let Some((status, body)) = &resp.raw {
                    out.insert("data".into(), body.clone());
                    out.insert("status".into(), json!(status));
                }
                if let Some(b) = &resp.raw_body {
                    out.insert("status".into(), json!(b.status));
                    out.insert(
                        "raw_body".into(),
                        json!({"content_type": b.content_type, "length": b.body.len()}),
                    );
                }
                if let Some(a) = &resp.auth {
                    let mut auth = json!({
                        "client_token": a.client_token,
                        "accessor": a.accessor,
                        "policies": a.policies,
                        "token_policies": a.token_policies,
                        "entity_id": a.entity_id,
                        "metadata": a.metadata,
                        "lease_duration": a.lease_duration,
                        "renewable": a.renewable,
                    });
                    if let Some(ip) = &a.identity_policies {
                        auth["identity_policies"] = json!(ip);
                    }
                    out.insert("auth".into(), auth);
                }
                if let Some(w) = &resp.wrap_info {
                    out.insert(
                        "wrap_info".into(),
                        json!({
                            "token": w.token,
                            "accessor": w.accessor,
                            "ttl": w.ttl,
                            "creation_time": w.creation_time,
                            "creation_path": w.creation_path,
                            "wrapped_accessor": w.wrapped_accessor,
                        }),
                    );
                }
                if !resp.warnings.is_empty() {
                    out.insert("warnings".into(), json!(resp.warnings));
                }
                // The answer leaves sealed to the client's key (sealed now, or when it was
                // wrapped); what it holds is above, HMAC'd, when the server had it in clear.
                let sealed_now =
                    r.req.seal_to.is_some() && crate::sealing::has_sealable_parts(resp);
                if sealed_now || resp.sealed.is_some() {
                    out.insert("sealed".into(), json!(true));
                }
                (String::new(), Value::Object(out))
            }
            Err(e) => (public_error(e), json!({ "mount_type": r.mount_type })),
        };
        let mut entry = r.base("response", &error);
        entry["response"] = response;
        self.write_all(&entry, r.non_hmac).await
    }

    pub(crate) async fn enable(
        &self,
        barrier: &Barrier,
        path: &str,
        kind: &str,
        description: &str,
        options: BTreeMap<String, String>,
        local: bool,
    ) -> Result<()> {
        let path = crate::mount::normalize_mount_path(path)?;
        let mut table = load_table(barrier).await?;
        if table.iter().any(|d| d.path == path) {
            return Err(Error::invalid("path already in use"));
        }
        let config = DeviceConfig {
            path,
            kind: kind.to_owned(),
            description: description.to_owned(),
            options,
            local,
            salt: SecretString::new(hex(&random_bytes::<32>())),
        };
        check_options(&config)?;
        let device = Device::load(config.clone())?;
        // Prove the device can write before it is enabled: its first entry says it was enabled.
        let first = json!({
            "time": now_rfc3339_nanos(),
            "type": "audit-device-enabled",
            "device": { "path": config.path, "type": config.kind },
        });
        device.write(&first, NonHmac::default()).await.map_err(|e| {
            Error::invalid(format!("audit device {:?} cannot write: {e}", config.path))
        })?;
        table.push(config);
        save_table(barrier, &table).await?;
        if let Some(c) = table.last() {
            self.hold_lock(c);
        }
        self.add(Arc::new(device)).await;
        Ok(())
    }

    pub(crate) async fn disable(&self, barrier: &Barrier, path: &str) -> Result<()> {
        let path = crate::mount::normalize_mount_path(path)?;
        let mut table = load_table(barrier).await?;
        table.retain(|d| d.path != path);
        save_table(barrier, &table).await?;
        let mut devices = self.devices.write().await;
        devices.retain(|d| d.config.path != path);
        self.enabled.store(devices.len(), Ordering::SeqCst);
        Ok(())
    }
}

/// The error text an audit entry records: a 5xx's cause stays in the server log only.
pub(crate) fn public_error(e: &Error) -> String {
    match e {
        Error::Internal(_) => "internal error".into(),
        // The audit log is where an operator learns why a login was refused.
        Error::Refused(reason) => format!("permission denied: {reason}"),
        Error::LoginFailed { role, error } => {
            format!("{} (login role {role:?})", public_error(error))
        }
        other => other.to_string(),
    }
}

async fn load_table(barrier: &Barrier) -> Result<Vec<DeviceConfig>> {
    match barrier.get(TABLE_KEY).await? {
        None => Ok(Vec::new()),
        Some(raw) => {
            let t: StoredTable = record::decode(&raw)?;
            Ok(t.devices)
        }
    }
}

async fn save_table(barrier: &Barrier, devices: &[DeviceConfig]) -> Result<()> {
    let raw = record::encode(&StoredTable { devices: devices.to_vec() })?;
    barrier.put(TABLE_KEY, &raw).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_config_prints_without_its_hmac_salt() {
        let c = DeviceConfig {
            path: "file/".into(),
            kind: "file".into(),
            description: String::new(),
            options: BTreeMap::new(),
            local: false,
            salt: SecretString::new("a1b2c3d4e5f60718".into()),
        };
        assert!(!format!("{c:?}").contains("a1b2c3d4e5f60718"), "{c:?}");
        // Stored as before: the salt is a plain hex string inside the (encrypted) table.
        let stored = serde_json::to_value(&c).expect("json");
        assert_eq!(stored["salt"], serde_json::json!("a1b2c3d4e5f60718"));
    }

    #[test]
    fn the_chain_head_is_found_behind_a_very_long_last_entry() {
        let dir =
            std::env::temp_dir().join(format!("coffer-audit-tail-{}", crate::random::uuid_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("audit.log");
        let big = "x".repeat(300 * 1024);
        let text = format!(
            "{{\"seq\":1,\"hash\":\"h1\",\"prev_hash\":\"\"}}\n{{\"seq\":2,\"hash\":\"h2\",\"prev_hash\":\"h1\",\"pad\":\"{big}\"}}\n"
        );
        std::fs::write(&path, text).expect("write");
        assert_eq!(last_entry(&path), Some((2, "h2".to_owned())));
        assert_eq!(last_entry(std::path::Path::new("/dev/full")), None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn options_are_checked_before_anything_is_opened() {
        let cfg = |kind: &str, opts: &[(&str, &str)]| DeviceConfig {
            path: "x/".into(),
            kind: kind.into(),
            description: String::new(),
            options: opts.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            local: false,
            salt: "00".into(),
        };
        assert!(
            check_options(&cfg("file", &[("file_path", "/tmp/x"), ("format", "text")])).is_err()
        );
        assert!(check_options(&cfg("file", &[("file_path", "/tmp/x"), ("prefix", "p")])).is_err());
        assert!(check_options(&cfg("file", &[("file_path", "/tmp/x"), ("mode", "0640")])).is_ok());
        assert!(check_options(&cfg("file", &[("file_path", "/tmp/x"), ("mode", "999")])).is_err());
        assert!(check_options(&cfg("socket", &[])).is_err());
        assert!(check_options(&cfg("syslog", &[])).is_err());
    }
}
