//! Stored records: JSON inside the barrier, each carrying a `version`, upgraded step by step when
//! read. One codec for the core, the engines and the auth methods, so that old data is migrated,
//! never misread, and a record written by a newer Coffer is refused rather than half-understood.
//!
//! Guarantees: [`encode`] always writes [`Record::VERSION`]; [`decode`] hands back only records
//! at that version, after running [`Record::upgrade`] once for every step from the stored one (a
//! record stored without a `version`, as some were before this codec, counts as version 0);
//! a decoding error names the record kind and the position, never a value (records hold
//! passwords). Not here: encryption (the barrier) and where records live (their owners).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use coffer_barrier::View;

use crate::logical::{Error, Result};

/// A kind of stored record.
pub trait Record: Serialize + DeserializeOwned {
    /// What errors call it: "token entry", "kv metadata".
    const KIND: &'static str;
    /// The version this build writes and understands.
    const VERSION: u32;

    /// Turns the fields of a record at version `from` into those of version `from + 1`. The
    /// default changes nothing: a step that only added fields with serde defaults, or the step
    /// from 0 for records that simply had no `version` before.
    fn upgrade(from: u32, fields: &mut Map<String, Value>) -> Result<()> {
        let _ = (from, fields);
        Ok(())
    }
}

/// Declares a stored record's kind and version, for the records whose upgrade from any older
/// version changes nothing (fields were only added, with serde defaults):
/// `record!(StoredPolicy, "ACL policy", 1);`. A record with a real upgrade step implements
/// [`Record`] by hand.
#[macro_export]
macro_rules! record {
    ($ty:ty, $kind:literal, $version:literal) => {
        impl $crate::record::Record for $ty {
            const KIND: &'static str = $kind;
            const VERSION: u32 = $version;
        }
    };
}

/// What is stored: the record's own fields, and its version beside them.
#[derive(Serialize)]
struct Versioned<'a, R> {
    version: u32,
    #[serde(flatten)]
    record: &'a R,
}

/// Only the version of a stored record, read without building the rest.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u32>,
}

/// The version of a record as [`encode`] writes it, from its first bytes: `{"version":N,`.
fn leading_version(raw: &[u8]) -> Option<u32> {
    let rest = raw.strip_prefix(b"{\"version\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 || !matches!(rest.get(digits), Some(b',' | b'}')) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The record as stored: its fields and `"version": VERSION`, in a buffer wiped on drop.
pub fn encode<R: Record>(record: &R) -> Result<Zeroizing<Vec<u8>>> {
    serde_json::to_vec(&Versioned { version: R::VERSION, record })
        .map(Zeroizing::new)
        .map_err(|e| Error::Internal(format!("{} does not encode: {e}", R::KIND)))
}

/// The record from its stored bytes, upgraded to [`Record::VERSION`].
pub fn decode<R: Record>(raw: &[u8]) -> Result<R> {
    let bad = |e: serde_json::Error| {
        Error::Internal(format!(
            "stored {} does not decode ({:?} error at line {}, column {})",
            R::KIND,
            e.classify(),
            e.line(),
            e.column()
        ))
    };
    // Records read on every request (a kv v2 key's metadata, a token) are at the current
    // version: those are decoded straight into their type, without a JSON tree in between.
    // `encode` writes the version first, so it is read from the first bytes, without a pass
    // over the whole record; one stored otherwise is checked by a full pass.
    let version = match leading_version(raw) {
        Some(v) => Some(v),
        None => match serde_json::from_slice::<VersionOnly>(raw) {
            Ok(VersionOnly { version }) => version,
            Err(_) => None,
        },
    };
    if version == Some(R::VERSION) {
        return serde_json::from_slice(raw).map_err(bad);
    }
    let mut fields = match serde_json::from_slice::<Value>(raw).map_err(bad)? {
        Value::Object(m) => m,
        _ => return Err(Error::Internal(format!("stored {} is not a JSON object", R::KIND))),
    };
    let stored = match fields.get("version") {
        None => 0,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| Error::Internal(format!("stored {} has a bad version", R::KIND)))?,
    };
    if stored > R::VERSION {
        return Err(Error::Internal(format!(
            "stored {} has version {stored}, newer than this build understands ({}): it was \
             written by a newer Coffer",
            R::KIND,
            R::VERSION
        )));
    }
    for from in stored..R::VERSION {
        R::upgrade(from, &mut fields)?;
    }
    fields.insert("version".into(), Value::from(R::VERSION));
    serde_json::from_value(Value::Object(fields)).map_err(bad)
}

/// The record stored at `key` in `view`, upgraded; `None` when nothing is stored there.
pub async fn load<R: Record>(view: &View, key: &str) -> Result<Option<R>> {
    match view.get(key).await? {
        None => Ok(None),
        Some(raw) => decode(&raw).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    /// Version 2 renamed `name` to `title` and added `size` (default 0).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        title: String,
        #[serde(default)]
        size: u64,
    }

    impl Record for Thing {
        const KIND: &'static str = "thing";
        const VERSION: u32 = 2;

        fn upgrade(from: u32, fields: &mut Map<String, Value>) -> Result<()> {
            if from == 1
                && let Some(n) = fields.remove("name")
            {
                fields.insert("title".into(), n);
            }
            Ok(())
        }
    }

    #[test]
    fn records_round_trip_with_their_version() {
        let t = Thing { title: "a".into(), size: 3 };
        let raw = encode(&t).expect("encode");
        let v: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(v["version"], json!(2));
        assert_eq!(decode::<Thing>(&raw).expect("decode"), t);
    }

    #[test]
    fn old_records_are_upgraded_step_by_step() {
        let v1 = json!({"version": 1, "name": "old"}).to_string();
        assert_eq!(
            decode::<Thing>(v1.as_bytes()).expect("v1"),
            Thing { title: "old".into(), size: 0 }
        );
        // No version at all: version 0, upgraded through every step (0 → 1 changes nothing).
        let v0 = json!({"name": "older"}).to_string();
        assert_eq!(decode::<Thing>(v0.as_bytes()).expect("v0").title, "older");
    }

    #[test]
    fn the_version_is_read_from_the_first_bytes_only_when_it_is_exactly_there() {
        assert_eq!(leading_version(br#"{"version":2,"title":"a"}"#), Some(2));
        assert_eq!(leading_version(br#"{"version":12}"#), Some(12));
        for other in [
            &br#"{"version": 2,"title":"a"}"#[..],
            br#"{"title":"a","version":2}"#,
            br#"{"version":2x}"#,
            br#"{"version":"2"}"#,
            br#"{"version":99999999999}"#,
            b"",
        ] {
            assert_eq!(leading_version(other), None, "{}", String::from_utf8_lossy(other));
        }
        // Written another way, a record at an older version is still upgraded.
        let spaced = br#"{ "version" : 1, "name": "old" }"#;
        assert_eq!(decode::<Thing>(spaced).expect("v1").title, "old");
    }

    #[test]
    fn a_record_from_a_newer_coffer_is_refused() {
        let v3 = json!({"version": 3, "title": "new"}).to_string();
        let e = decode::<Thing>(v3.as_bytes()).expect_err("newer");
        assert!(e.to_string().contains("newer Coffer"), "{e}");
    }

    #[test]
    fn decoding_errors_never_show_a_value() {
        let bad =
            json!({"version": 2, "title": "hunter2-secret", "size": "hunter2-size"}).to_string();
        let e = decode::<Thing>(bad.as_bytes()).expect_err("bad type");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = decode::<Thing>(b"{\"title\": \"hunter2").expect_err("truncated");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
