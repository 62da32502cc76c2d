//! Server-side chaos faults on the wire (`sys/chaos/faults`): the body that starts one
//! ([`FaultSpec`]) and the fault the server answers with ([`Fault`]), shared by the server, the
//! CLI and the experiment runner so the two sides cannot drift apart.
//!
//! Guarantees: a body with an unknown field or type is refused when it is read (serde
//! `deny_unknown_fields`), and durations are parsed once, here, into [`std::time::Duration`].
//! Not done here: checking that the fields fit the kind, or the duration cap; the server does
//! that (it knows its configured `max_duration`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a fault does. The server side of the catalogue; host-side faults (network, process)
/// act on the host, and are only recorded here, as a `host` fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Requests in scope wait `latency` (+ up to `jitter`) before they are served.
    Latency,
    /// Requests in scope are answered `status` (500, 503 or 429) at `rate`.
    Error,
    /// The server seals itself and unseals itself at the deadline.
    Seal,
    /// Every storage operation fails until the deadline.
    StorageUnavailable,
    /// Every audit device write fails until the deadline: requests are refused.
    AuditBlocked,
    /// One-shot: revokes the leases under `prefix`.
    RevokePrefix,
    /// One-shot: rotates a database static role's password, or writes a new KV version.
    Rotate,
    /// Does nothing to the server: records the window of a host fault (`host_kind`,
    /// `host_id`), so its start and end are in the audit log too.
    Host,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Latency,
        FaultKind::Error,
        FaultKind::Seal,
        FaultKind::StorageUnavailable,
        FaultKind::AuditBlocked,
        FaultKind::RevokePrefix,
        FaultKind::Rotate,
        FaultKind::Host,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::Error => "error",
            FaultKind::Seal => "seal",
            FaultKind::StorageUnavailable => "storage_unavailable",
            FaultKind::AuditBlocked => "audit_blocked",
            FaultKind::RevokePrefix => "revoke_prefix",
            FaultKind::Rotate => "rotate",
            FaultKind::Host => "host",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == s.replace('-', "_"))
    }

    /// One-shot kinds act once when started and take no duration (a `host` record is one-shot
    /// when its host fault is: see [`FaultSpec::one_shot`]).
    pub fn one_shot(self) -> bool {
        matches!(self, FaultKind::RevokePrefix | FaultKind::Rotate)
    }
}

/// The host fault a `host` record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostKind {
    Partition,
    Netem,
    Kill,
    Pause,
    /// One-shot, as the host fault is: its record takes no duration.
    #[serde(alias = "agent-cache")]
    AgentCache,
}

impl HostKind {
    pub const ALL: [HostKind; 5] = [
        HostKind::Partition,
        HostKind::Netem,
        HostKind::Kill,
        HostKind::Pause,
        HostKind::AgentCache,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Partition => "partition",
            HostKind::Netem => "netem",
            HostKind::Kill => "kill",
            HostKind::Pause => "pause",
            HostKind::AgentCache => "agent_cache",
        }
    }

    /// `agent-cache` (the CLI's spelling and the host fault's `kind`) is `agent_cache`.
    pub fn parse(s: &str) -> Option<HostKind> {
        HostKind::ALL.into_iter().find(|k| k.as_str() == s.replace('-', "_"))
    }
}

/// A duration on the wire: seconds as a number, or a string like `"250ms"`, `"60s"`, `"1m30s"`,
/// `"1h"`, `"1d"` (a bare whole number in a string is seconds). Sent back as such a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct WireDuration(pub Duration);

impl WireDuration {
    /// Go's syntax as Vault reads it (`coffer_time::parse_duration_or_secs`), at most 10⁹ s
    /// (a fault or probe longer than 31 years is a typo).
    pub fn parse(s: &str) -> Result<Duration, String> {
        match coffer_time::parse_duration_or_secs(s) {
            Ok(d) if d.as_secs() <= 1_000_000_000 => Ok(d),
            Ok(_) => Err(format!("invalid duration {:?}: too long", s.trim())),
            Err(e) => Err(format!("{e}: {:?}", s.trim())),
        }
    }

    /// `"60s"` for whole seconds, else `"250ms"`.
    pub fn format(d: Duration) -> String {
        if d.subsec_millis() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}ms", d.as_millis())
        }
    }
}

impl Serialize for WireDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&WireDuration::format(self.0))
    }
}

impl<'de> Deserialize<'de> for WireDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Str(String),
        }
        let d = match Raw::deserialize(d)? {
            Raw::Int(n) => Duration::from_secs(n),
            Raw::Float(f) if f.is_finite() && (0.0..1e9).contains(&f) => Duration::from_secs_f64(f),
            Raw::Float(f) => {
                return Err(serde::de::Error::custom(format!("invalid duration {f}")));
            }
            Raw::Str(s) => WireDuration::parse(&s).map_err(serde::de::Error::custom)?,
        };
        Ok(WireDuration(d))
    }
}

/// The body of `POST sys/chaos/faults`: `type`, `duration`, the kind's own fields, and (for
/// `latency` and `error`) the scope. Absent scope fields: every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(rename = "type")]
    pub kind: FaultKind,
    /// Mandatory for lasting kinds; refused for one-shot kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<WireDuration>,
    /// `latency`: the added delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<WireDuration>,
    /// `latency`: up to this much more, uniformly at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<WireDuration>,
    /// `error`: 500, 503 or 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `error`: the share of requests in scope that fail, 0 < rate <= 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// `revoke_prefix`: a lease id prefix (a mount and a path below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// `rotate`: `<mount>/static-roles/<name>` of a database mount, or a KV secret's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `rotate` on KV: the keys given fresh random values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Scope: request paths (relative to `/v1/`) starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Scope: tokens an auth method issued at login to this role (its `role` or `role_name`
    /// metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Scope: tokens with this display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Scope: tokens of this identity entity id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// `host`: which host fault this records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_kind: Option<HostKind>,
    /// `host`: the host fault's `hostfault-...` id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// `host`: what it acts on, as text (a namespace and an address, a pid, a file); never a
    /// secret, since it is written to the audit log as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl FaultSpec {
    /// A spec of `kind` with nothing else set.
    pub fn new(kind: FaultKind) -> FaultSpec {
        FaultSpec {
            kind,
            duration: None,
            latency: None,
            jitter: None,
            status: None,
            rate: None,
            prefix: None,
            path: None,
            keys: None,
            path_prefix: None,
            role: None,
            display_name: None,
            entity: None,
            host_kind: None,
            host_id: None,
            target: None,
        }
    }

    /// Whether this fault acts once and takes no duration: the one-shot kinds, and the record
    /// of a one-shot host fault (`agent_cache`).
    pub fn one_shot(&self) -> bool {
        self.kind.one_shot()
            || (self.kind == FaultKind::Host && self.host_kind == Some(HostKind::AgentCache))
    }
}

/// A fault the server runs (or ran, for one-shot kinds): the spec, its id and its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub id: String,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC; equal to `started_at` for one-shot kinds.
    pub expires_at: String,
}

/// `sys/chaos/faults` and its sub-paths, relative to `/v1/`.
pub const FAULTS_PATH: &str = "sys/chaos/faults";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_seconds_or_units() {
        let p = |s| WireDuration::parse(s).expect(s);
        assert_eq!(p("60"), Duration::from_secs(60));
        assert_eq!(p("60s"), Duration::from_secs(60));
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p("1.5s"), Duration::from_millis(1500));
        assert_eq!(p("1h"), Duration::from_secs(3600));
        assert_eq!(p("1d"), Duration::from_secs(86_400));
        for bad in ["", "s", "10x", "-1s", "1.5", "99999999999h"] {
            assert!(WireDuration::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(WireDuration::format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(WireDuration::format(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn a_spec_reads_numbers_and_strings_and_refuses_unknown_fields() {
        let s: FaultSpec =
            serde_json::from_str(r#"{"type":"latency","duration":60,"latency":"200ms"}"#)
                .expect("spec");
        assert_eq!(s.kind, FaultKind::Latency);
        assert_eq!(s.duration, Some(WireDuration(Duration::from_secs(60))));
        assert_eq!(s.latency, Some(WireDuration(Duration::from_millis(200))));
        let e = serde_json::from_str::<FaultSpec>(r#"{"type":"seal","duration":1,"nope":1}"#)
            .expect_err("unknown field");
        assert!(e.to_string().contains("nope"), "{e}");
        let e = serde_json::from_str::<FaultSpec>(r#"{"type":"boom"}"#).expect_err("kind");
        assert!(e.to_string().contains("boom"), "{e}");
        let f =
            Fault { id: "fault-x".into(), spec: s, started_at: "a".into(), expires_at: "b".into() };
        let v = serde_json::to_value(&f).expect("json");
        assert_eq!(v["type"], "latency");
        assert_eq!(v["duration"], "60s");
        let back: Fault = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, f);
    }
}
