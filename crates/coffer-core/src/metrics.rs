//! Telemetry: what `sys/metrics` reports, kept in atomics so that recording costs a few
//! relaxed increments and no lock or allocation per request.
//!
//! Guarantees: a request adds to counters that already exist (its mount's are made when the
//! mount's route is built, its kind's when the core is); label values are mount paths,
//! auth method types and quota names, never a token, key or request datum; a scrape reads the
//! counters without stopping writers (each value is consistent, the set is not a snapshot).
//! Timings are Vault's summaries in milliseconds, reported as `_sum` and `_count` since the
//! start of the process (no quantiles: they would need a sketch on the request path).
//! Not done: the Go runtime metrics Vault also exports, per-device audit timings, and the
//! counters of requests that never reach a mount or `sys/` (a path that does not parse).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::logical::Operation;

/// A summary of durations: count, sum, min, max and the sum of squares (for a standard
/// deviation), in microseconds.
#[derive(Debug)]
pub struct Timer {
    count: AtomicU64,
    sum_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
    /// The sum of squares, in units of [`SQ_UNIT_US`] squared.
    sumsq: AtomicU64,
}

/// The unit of the sum of squares (a standard deviation finer than 10 µs says nothing).
const SQ_UNIT_US: u64 = 10;

impl Default for Timer {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            sumsq: AtomicU64::new(0),
        }
    }
}

impl Timer {
    /// Three relaxed additions; the extremes are written only when they change, which after
    /// the first requests is rare, so concurrent requests mostly share the lines read-only.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        if us < self.min_us.load(Relaxed) {
            self.min_us.fetch_min(us, Relaxed);
        }
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
        // In units of 10 µs, squared: a u64 holds 1.8e9 one-second samples before it wraps.
        let t = us / SQ_UNIT_US;
        self.sumsq.fetch_add(t.saturating_mul(t), Relaxed);
    }

    pub fn since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    fn read(&self) -> Stat {
        let count = self.count.load(Relaxed);
        let ms = |us: u64| us as f64 / 1000.0;
        let sum = ms(self.sum_us.load(Relaxed));
        let (min, max) = if count == 0 {
            (0.0, 0.0)
        } else {
            (ms(self.min_us.load(Relaxed)), ms(self.max_us.load(Relaxed)))
        };
        let mean = if count == 0 { 0.0 } else { sum / count as f64 };
        let stddev = if count < 2 {
            0.0
        } else {
            // Back to ms²: (10 µs)² = 1e-4 ms².
            let unit_ms = SQ_UNIT_US as f64 / 1000.0;
            let sumsq = self.sumsq.load(Relaxed) as f64 * unit_ms * unit_ms;
            let n = count as f64;
            ((sumsq - n * mean * mean) / (n - 1.0)).max(0.0).sqrt()
        };
        Stat { count, sum, min, max, mean, stddev }
    }
}

/// One counter or timer's figures as Vault's JSON format gives them (milliseconds).
struct Stat {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    stddev: f64,
}

impl Stat {
    fn counter(n: u64) -> Self {
        let one = if n == 0 { 0.0 } else { 1.0 };
        Self { count: n, sum: n as f64, min: one, max: one, mean: one, stddev: 0.0 }
    }
}

/// The operations a request can be routed with, in Vault's names.
const OPS: [(Operation, &str); 6] = [
    (Operation::Create, "create"),
    (Operation::Read, "read"),
    (Operation::Update, "update"),
    (Operation::Patch, "patch"),
    (Operation::Delete, "delete"),
    (Operation::List, "list"),
];

fn op_index(op: Operation) -> Option<usize> {
    OPS.iter().position(|(o, _)| *o == op)
}

/// One mount's counters (or `sys/`'s): what its backend took per operation, and for an auth
/// method, its logins.
#[derive(Debug, Default)]
pub struct RouteStats {
    ops: [Timer; 6],
    login_success: AtomicU64,
    login_failure: AtomicU64,
}

impl RouteStats {
    pub fn record(&self, op: Operation, d: Duration) {
        if let Some(i) = op_index(op) {
            self.ops[i].record(d);
        }
    }

    pub fn login(&self, success: bool) {
        let c = if success { &self.login_success } else { &self.login_failure };
        c.fetch_add(1, Relaxed);
    }
}

/// Storage operations timed below the barrier.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StorageOp {
    Get = 0,
    Put,
    Delete,
    List,
    Batch,
}

const STORAGE_OPS: [&str; 5] = ["get", "put", "delete", "list", "batch"];

/// The gauges a scrape computes: counts that need storage, and the state.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gauges {
    pub(crate) unsealed: bool,
    pub(crate) tokens: Option<u64>,
    pub(crate) leases: Option<u64>,
    pub(crate) expire_queue: Option<u64>,
}

/// Every counter the server keeps.
pub struct Metrics {
    started: Instant,
    pub(crate) handle_request: Timer,
    pub(crate) handle_login_request: Timer,
    pub(crate) audit_request: Timer,
    pub(crate) audit_response: Timer,
    pub(crate) audit_request_failure: AtomicU64,
    pub(crate) audit_response_failure: AtomicU64,
    storage: [Timer; 5],
    storage_kind: Mutex<&'static str>,
    pub(crate) sys: Arc<RouteStats>,
    /// Per mount (table tag, full path), so a mount's figures outlive a rebuilt router. Locked
    /// only when a route is built and when scraped.
    /// The value holds the mount's current type, for the `method` label.
    routes: Mutex<BTreeMap<MountKey, (String, Arc<RouteStats>)>>,
    /// Rate limit quota violations by quota name.
    quota_violations: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// The last counts that needed storage, and when they were taken: a scrape within
    /// [`COUNT_CACHE`] of the last one reuses them instead of walking storage again.
    pub(crate) counted: tokio::sync::Mutex<Option<Counted>>,
    /// The detection pipeline's counters (shared with [`crate::detect::Detector`]).
    pub(crate) detect: Arc<crate::detect::Stats>,
}

/// A mount's table tag and full path.
type MountKey = (&'static str, String);

/// When the token and lease counts were taken, and what they were.
pub(crate) type Counted = (Instant, Option<u64>, Option<u64>);

/// How long the token and lease counts of one scrape serve the next ones.
pub(crate) const COUNT_CACHE: Duration = Duration::from_secs(10);

impl Default for Metrics {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            handle_request: Timer::default(),
            handle_login_request: Timer::default(),
            audit_request: Timer::default(),
            audit_response: Timer::default(),
            audit_request_failure: AtomicU64::new(0),
            audit_response_failure: AtomicU64::new(0),
            storage: Default::default(),
            storage_kind: Mutex::new(""),
            sys: Arc::new(RouteStats::default()),
            routes: Mutex::new(BTreeMap::new()),
            quota_violations: Mutex::new(BTreeMap::new()),
            counted: tokio::sync::Mutex::new(None),
            detect: Arc::default(),
        }
    }
}

/// One series: a name (Vault's dotted form), labels, and what it measures.
enum Kind {
    Gauge(f64),
    Counter(u64),
    Summary(Stat),
}

struct Series {
    name: String,
    help: &'static str,
    labels: Vec<(&'static str, String)>,
    kind: Kind,
}

impl Metrics {
    /// The counters of the mount at `path` in `table` (`secret/`, `auth/approle/`), made on
    /// first use; `kind` is its engine or method type.
    pub(crate) fn route(&self, table: &'static str, path: &str, kind: &str) -> Arc<RouteStats> {
        let mut m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((table, path.to_owned())).or_default();
        if e.0 != kind {
            kind.clone_into(&mut e.0);
        }
        e.1.clone()
    }

    pub(crate) fn storage(&self, op: StorageOp, d: Duration) {
        self.storage[op as usize].record(d);
    }

    pub(crate) fn set_storage_kind(&self, kind: &'static str) {
        *self.storage_kind.lock().unwrap_or_else(|p| p.into_inner()) = kind;
    }

    /// Counts one request refused by the rate limit quota `name`.
    pub(crate) fn quota_violation(&self, name: &str) {
        let c = {
            let mut m = self.quota_violations.lock().unwrap_or_else(|p| p.into_inner());
            match m.get(name) {
                Some(c) => c.clone(),
                None => m.entry(name.to_owned()).or_default().clone(),
            }
        };
        c.fetch_add(1, Relaxed);
    }

    fn series(&self, g: &Gauges) -> Vec<Series> {
        let mut out = Vec::new();
        let mut push = |name: &str, help, labels, kind| {
            out.push(Series { name: name.to_owned(), help, labels, kind });
        };
        push(
            "vault.core.unsealed",
            "Whether the server is unsealed (1) or sealed (0).",
            vec![],
            Kind::Gauge(if g.unsealed { 1.0 } else { 0.0 }),
        );
        if let Some(n) = g.tokens {
            push(
                "vault.token.count",
                "Live tokens in the token store.",
                vec![],
                Kind::Gauge(n as f64),
            );
        }
        if let Some(n) = g.leases {
            push(
                "vault.expire.num_leases",
                "Leases of secrets that will be revoked when they expire.",
                vec![],
                Kind::Gauge(n as f64),
            );
        }
        if let Some(n) = g.expire_queue {
            push(
                "coffer.expire.queue_length",
                "Lease and token expiries held in memory, due within the loaded window.",
                vec![],
                Kind::Gauge(n as f64),
            );
        }
        push(
            "vault.core.handle_request",
            "Milliseconds to answer a request that is not a login.",
            vec![],
            Kind::Summary(self.handle_request.read()),
        );
        push(
            "vault.core.handle_login_request",
            "Milliseconds to answer a login request.",
            vec![],
            Kind::Summary(self.handle_login_request.read()),
        );
        push(
            "vault.audit.log_request",
            "Milliseconds to write a request entry to every enabled audit device.",
            vec![],
            Kind::Summary(self.audit_request.read()),
        );
        push(
            "vault.audit.log_response",
            "Milliseconds to write a response entry to every enabled audit device.",
            vec![],
            Kind::Summary(self.audit_response.read()),
        );
        push(
            "vault.audit.log_request_failure",
            "Request entries no audit device could write.",
            vec![],
            Kind::Counter(self.audit_request_failure.load(Relaxed)),
        );
        push(
            "vault.audit.log_response_failure",
            "Response entries no audit device could write.",
            vec![],
            Kind::Counter(self.audit_response_failure.load(Relaxed)),
        );
        let backend = (*self.storage_kind.lock().unwrap_or_else(|p| p.into_inner())).to_owned();
        for (i, op) in STORAGE_OPS.iter().enumerate() {
            push(
                &format!("coffer.storage.{op}"),
                "Milliseconds the storage backend took for one operation.",
                vec![("backend", backend.clone())],
                Kind::Summary(self.storage[i].read()),
            );
        }
        let routes: Vec<_> = {
            let m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|((t, p), (k, s))| (*t, p.clone(), k.clone(), s.clone())).collect()
        };
        let sys = ("system", "sys/".to_owned(), "system".to_owned(), self.sys.clone());
        for (table, path, kind, stats) in std::iter::once(sys).chain(routes) {
            for (i, (_, op)) in OPS.iter().enumerate() {
                let s = stats.ops[i].read();
                if s.count == 0 {
                    continue;
                }
                // Vault's name: the mount path with `/` as `-` in it.
                push(
                    &format!("vault.route.{op}.{}", path.replace('/', "-")),
                    "Milliseconds a mount's backend took to answer an operation.",
                    vec![("mount_point", path.clone())],
                    Kind::Summary(s),
                );
            }
            if table == "auth" {
                for (outcome, c) in
                    [("success", &stats.login_success), ("failure", &stats.login_failure)]
                {
                    push(
                        "coffer.login",
                        "Logins through an auth method, by outcome.",
                        vec![
                            ("method", kind.clone()),
                            ("mount_point", path.clone()),
                            ("outcome", outcome.to_owned()),
                        ],
                        Kind::Counter(c.load(Relaxed)),
                    );
                }
            }
        }
        let d = &self.detect;
        for (name, help, c) in [
            ("received", "Request outcomes offered to the detection rules.", &d.received),
            ("processed", "Request outcomes the detection rules evaluated.", &d.processed),
            (
                "dropped",
                "Request outcomes dropped because the detection queue was full.",
                &d.dropped,
            ),
            (
                "queue_full_episodes",
                "Times the detection queue filled up (one alert each).",
                &d.queue_full_episodes,
            ),
            ("alerts", "Alerts the detection rules raised.", &d.alerts),
            ("webhook_sent", "Alerts a webhook accepted.", &d.webhook_sent),
            ("webhook_retried", "Webhook attempts made again after a failure.", &d.webhook_retried),
            ("webhook_failed", "Alerts no webhook attempt delivered.", &d.webhook_failed),
            (
                "webhook_dropped",
                "Alerts not posted because the webhook queue was full.",
                &d.webhook_dropped,
            ),
            (
                "action_failures",
                "Alert actions (revocations, audit entries) that failed.",
                &d.action_failures,
            ),
        ] {
            push(&format!("coffer.detect.{name}"), help, vec![], Kind::Counter(c.load(Relaxed)));
        }
        let quotas: Vec<_> = {
            let m = self.quota_violations.lock().unwrap_or_else(|p| p.into_inner());
            m.iter().map(|(k, v)| (k.clone(), v.load(Relaxed))).collect()
        };
        for (name, n) in quotas {
            push(
                "vault.quota.rate_limit.violation",
                "Requests refused by a rate limit quota.",
                vec![("name", name)],
                Kind::Counter(n),
            );
        }
        out
    }

    /// The Prometheus text format (0.0.4): one family per name, `_sum` and `_count` for
    /// summaries.
    pub(crate) fn prometheus(&self, g: &Gauges) -> String {
        let mut families: BTreeMap<String, Vec<Series>> = BTreeMap::new();
        for s in self.series(g) {
            families.entry(prom_name(&s.name)).or_default().push(s);
        }
        let mut out = String::new();
        for (name, series) in families {
            let (help, ty) = match series[0].kind {
                Kind::Gauge(_) => (series[0].help, "gauge"),
                Kind::Counter(_) => (series[0].help, "counter"),
                Kind::Summary(_) => (series[0].help, "summary"),
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {ty}");
            for s in &series {
                let labels = prom_labels(&s.labels);
                match &s.kind {
                    Kind::Gauge(v) => {
                        let _ = writeln!(out, "{name}{labels} {}", prom_float(*v));
                    }
                    Kind::Counter(n) => {
                        let _ = writeln!(out, "{name}{labels} {n}");
                    }
                    Kind::Summary(st) => {
                        let _ = writeln!(out, "{name}_sum{labels} {}", prom_float(st.sum));
                        let _ = writeln!(out, "{name}_count{labels} {}", st.count);
                    }
                }
            }
        }
        out
    }

    /// Vault's JSON format (go-metrics' in-memory sink): `Gauges`, `Counters` and `Samples`,
    /// dotted names, labels as an object. `Rate` is per second since the server started.
    pub(crate) fn json(&self, g: &Gauges, now: &str) -> Value {
        let secs = self.started.elapsed().as_secs_f64().max(1.0);
        let mut gauges = Vec::new();
        let mut counters = Vec::new();
        let mut samples = Vec::new();
        for s in self.series(g) {
            let labels: Map<String, Value> =
                s.labels.iter().map(|(k, v)| ((*k).to_owned(), Value::String(v.clone()))).collect();
            let agg = |st: &Stat| {
                json!({
                    "Name": s.name, "Count": st.count, "Rate": st.sum / secs, "Sum": st.sum,
                    "Min": st.min, "Max": st.max, "Mean": st.mean, "Stddev": st.stddev,
                    "Labels": labels,
                })
            };
            match &s.kind {
                Kind::Gauge(v) => {
                    gauges.push(json!({"Name": s.name, "Value": v, "Labels": labels}))
                }
                Kind::Counter(n) => counters.push(agg(&Stat::counter(*n))),
                Kind::Summary(st) => samples.push(agg(st)),
            }
        }
        json!({
            "Timestamp": now,
            "Gauges": gauges,
            "Points": [],
            "Counters": counters,
            "Samples": samples,
        })
    }
}

/// Prometheus names allow `[a-zA-Z0-9_:]`; Vault's sink turns everything else into `_`.
fn prom_name(dotted: &str) -> String {
    dotted.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn prom_labels(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

fn prom_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// The storage backend with every operation timed (below the barrier: what storage itself
/// takes, without encryption).
pub(crate) struct MeteredBackend {
    inner: Arc<dyn coffer_storage::Backend>,
    metrics: Arc<Metrics>,
}

impl MeteredBackend {
    pub(crate) fn new(inner: Arc<dyn coffer_storage::Backend>, metrics: Arc<Metrics>) -> Self {
        metrics.set_storage_kind(inner.kind());
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl coffer_storage::Backend for MeteredBackend {
    async fn get(&self, key: &str) -> coffer_storage::Result<Option<Vec<u8>>> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        self.metrics.storage(StorageOp::Get, t.elapsed());
        r
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> coffer_storage::Result<()> {
        let t = Instant::now();
        let r = self.inner.put(key, value).await;
        self.metrics.storage(StorageOp::Put, t.elapsed());
        r
    }

    async fn delete(&self, key: &str) -> coffer_storage::Result<()> {
        let t = Instant::now();
        let r = self.inner.delete(key).await;
        self.metrics.storage(StorageOp::Delete, t.elapsed());
        r
    }

    async fn list(&self, prefix: &str) -> coffer_storage::Result<Vec<String>> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        self.metrics.storage(StorageOp::List, t.elapsed());
        r
    }

    async fn batch(&self, ops: Vec<coffer_storage::Op>) -> coffer_storage::Result<()> {
        let t = Instant::now();
        let r = self.inner.batch(ops).await;
        self.metrics.storage(StorageOp::Batch, t.elapsed());
        r
    }

    async fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> coffer_storage::Result<Vec<String>> {
        // A page of a folder walk: timed as a list, which is what it replaces.
        let t = Instant::now();
        let r = self.inner.scan(prefix, after, limit).await;
        self.metrics.storage(StorageOp::List, t.elapsed());
        r
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

/// go's `time.Time.String()` for a UTC instant, the form Vault's JSON `Timestamp` has.
pub(crate) fn go_timestamp(unix: u64) -> String {
    let r = crate::time::rfc3339(unix);
    // `2024-05-01T10:00:00Z` → `2024-05-01 10:00:00 +0000 UTC`
    format!("{} +0000 UTC", r.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_report_milliseconds_and_spread() {
        let t = Timer::default();
        t.record(Duration::from_millis(2));
        t.record(Duration::from_millis(4));
        let s = t.read();
        assert_eq!(s.count, 2);
        assert!((s.sum - 6.0).abs() < 1e-9);
        assert!((s.min - 2.0).abs() < 1e-9 && (s.max - 4.0).abs() < 1e-9);
        assert!((s.mean - 3.0).abs() < 1e-9);
        assert!((s.stddev - 2f64.sqrt()).abs() < 1e-6, "{}", s.stddev);
    }

    #[test]
    fn prometheus_text_groups_families_and_escapes_labels() {
        let m = Metrics::default();
        let a = m.route("secrets", "secret/", "kv");
        a.record(Operation::Read, Duration::from_millis(1));
        let b = m.route("secrets", "a\"b\\c/", "kv");
        b.record(Operation::Read, Duration::from_millis(1));
        m.quota_violation("global");
        let text = m.prometheus(&Gauges { unsealed: true, ..Gauges::default() });
        assert!(text.contains("vault_core_unsealed 1\n"), "{text}");
        assert!(
            text.contains("vault_route_read_secret__count{mount_point=\"secret/\"} 1\n"),
            "{text}"
        );
        assert!(text.contains(r#"mount_point="a\"b\\c/""#), "{text}");
        assert!(text.contains("vault_quota_rate_limit_violation{name=\"global\"} 1\n"), "{text}");
        // Each family's TYPE line appears once.
        let types: Vec<_> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut dedup = types.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(types.len(), dedup.len());
    }

    #[test]
    fn go_timestamps_look_like_gos() {
        assert_eq!(go_timestamp(0), "1970-01-01 00:00:00 +0000 UTC");
    }
}
