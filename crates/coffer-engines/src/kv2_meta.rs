//! kv v2's key metadata record (`meta/<path>`): the key's settings and one entry per version
//! kept. Every read and every write of a key decodes it, and every write encodes it again, so it
//! is stored in a small binary form rather than as JSON.
//!
//! Format (record version 2), little-endian, in the barrier like every record:
//!
//! ```text
//! u8   2                      the record's version; a JSON record (version 1) starts with `{`
//! u64  created_time, updated_time, current_version, oldest_version, max_versions,
//!      delete_version_after   (times in Unix seconds)
//! u8   cas_required           0 or 1
//! u32  custom metadata pairs, then each: u32 length, key (UTF-8), u32 length, value (UTF-8)
//! u32  versions, then each in ascending order:
//!      u64 version, u64 created_time, u64 deletion_time (0: not deleted),
//!      u8  flags: bit 0 destroyed, bit 1 the liveness index keys of its fields follow
//!      [u16 count, count × 48 bytes: the index entries' keys (`leaks::EntryKey`)]
//! ```
//!
//! Guarantees: [`decode`] reads both this form and the JSON records (`record` version 1) that
//! Coffer wrote before, so no migration pass is needed: a key's record is written in this form
//! at its next change. A record of a later version is refused, not misread; truncated,
//! overlong or malformed bytes are an error that names no value. Not here: a downgrade (an
//! older Coffer cannot read this form), encryption (the barrier).

use std::collections::BTreeMap;

use coffer_core::leaks::EntryKey;
use coffer_core::{Error, Result, record};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The first byte of a binary record, its version.
const BINARY: u8 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct VersionMeta {
    pub(crate) created_time: u64,
    /// Unix seconds; 0 = not deleted. May lie in the future (`delete_version_after`).
    pub(crate) deletion_time: u64,
    pub(crate) destroyed: bool,
    /// The liveness index entries of this version's string fields, kept so that pruning or
    /// destroying it deletes them without reading and hashing its data again. `None`: not
    /// recorded (written before they were, or without an index); those are found from the
    /// data. They reveal no value: each is an HMAC under the index's inner key, which never
    /// leaves the barrier, of the value's published hash and of the location, and both are
    /// what raw storage already shows as the entry's storage key (docs/leaks.md). Here, inside
    /// the barrier, they add only the link from the version to its entries, which whoever can
    /// open this record could make anyway by reading the version's data.
    #[serde(skip)]
    pub(crate) leak_keys: Option<Vec<EntryKey>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct KeyMeta {
    pub(crate) created_time: u64,
    pub(crate) updated_time: u64,
    pub(crate) current_version: u64,
    pub(crate) oldest_version: u64,
    pub(crate) max_versions: u64,
    pub(crate) cas_required: bool,
    pub(crate) delete_version_after: u64,
    pub(crate) custom_metadata: BTreeMap<String, String>,
    pub(crate) versions: BTreeMap<u64, VersionMeta>,
}

// The JSON form, read only: what Coffer wrote before the binary form.
coffer_core::record!(KeyMeta, "kv v2 metadata", 1);

const DESTROYED: u8 = 1;
const LEAK_KEYS: u8 = 2;

/// The record as stored, in a buffer wiped on drop (custom metadata may be sensitive).
pub(crate) fn encode(meta: &KeyMeta) -> Result<Zeroizing<Vec<u8>>> {
    let custom: usize = meta.custom_metadata.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let versions: usize = meta
        .versions
        .values()
        .map(|v| 25 + v.leak_keys.as_ref().map_or(0, |k| 2 + k.len() * EntryKey::LEN))
        .sum();
    let mut out = Zeroizing::new(Vec::with_capacity(1 + 48 + 1 + 4 + custom + 4 + versions));
    out.push(BINARY);
    for n in [
        meta.created_time,
        meta.updated_time,
        meta.current_version,
        meta.oldest_version,
        meta.max_versions,
        meta.delete_version_after,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.push(u8::from(meta.cas_required));
    out.extend_from_slice(&len32(meta.custom_metadata.len())?.to_le_bytes());
    for (k, v) in &meta.custom_metadata {
        for s in [k, v] {
            out.extend_from_slice(&len32(s.len())?.to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out.extend_from_slice(&len32(meta.versions.len())?.to_le_bytes());
    for (n, v) in &meta.versions {
        for x in [*n, v.created_time, v.deletion_time] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        let mut flags = 0;
        if v.destroyed {
            flags |= DESTROYED;
        }
        if v.leak_keys.is_some() {
            flags |= LEAK_KEYS;
        }
        out.push(flags);
        if let Some(keys) = &v.leak_keys {
            let count = u16::try_from(keys.len()).map_err(|_| {
                Error::Internal("a kv v2 version has more than 65535 indexed fields".into())
            })?;
            out.extend_from_slice(&count.to_le_bytes());
            for k in keys {
                out.extend_from_slice(k.as_bytes());
            }
        }
    }
    Ok(out)
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Internal("kv v2 metadata too large to encode".into()))
}

/// The record from its stored bytes, in either form.
pub(crate) fn decode(raw: &[u8]) -> Result<KeyMeta> {
    decode_with(raw, true)
}

/// [`decode`] without the versions' liveness index keys (all `None`), for a reader that
/// answers from the record and never writes it back: no allocation per version for them.
pub(crate) fn decode_to_answer(raw: &[u8]) -> Result<KeyMeta> {
    decode_with(raw, false)
}

fn decode_with(raw: &[u8], leak_keys: bool) -> Result<KeyMeta> {
    match raw.first() {
        Some(&BINARY) => {
            let mut r = Reader { raw, at: 1 };
            binary(&mut r, leak_keys).ok_or_else(|| {
                Error::Internal(format!(
                    "stored kv v2 metadata does not decode (binary record, at byte {} of {})",
                    r.at,
                    raw.len()
                ))
            })
        }
        // Bytes no JSON text starts with, below the printable range: a later binary version.
        Some(&v) if v > BINARY && v < b'\t' => Err(Error::Internal(format!(
            "stored kv v2 metadata has version {v}, newer than this build understands \
             ({BINARY}): it was written by a newer Coffer"
        ))),
        _ => record::decode(raw),
    }
}

fn binary(r: &mut Reader<'_>, with_leak_keys: bool) -> Option<KeyMeta> {
    let mut meta = KeyMeta {
        created_time: r.u64()?,
        updated_time: r.u64()?,
        current_version: r.u64()?,
        oldest_version: r.u64()?,
        max_versions: r.u64()?,
        delete_version_after: r.u64()?,
        cas_required: match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        },
        ..KeyMeta::default()
    };
    for _ in 0..r.u32()? {
        let k = r.str()?;
        let v = r.str()?;
        if meta.custom_metadata.insert(k, v).is_some() {
            return None;
        }
    }
    let mut last = None;
    for _ in 0..r.u32()? {
        let n = r.u64()?;
        // Ascending, as written: a repeat or a step back is damage, not a second version.
        if last.is_some_and(|l| l >= n) {
            return None;
        }
        last = Some(n);
        let created_time = r.u64()?;
        let deletion_time = r.u64()?;
        let flags = r.u8()?;
        if flags & !(DESTROYED | LEAK_KEYS) != 0 {
            return None;
        }
        let leak_keys = if flags & LEAK_KEYS != 0 && !with_leak_keys {
            let count = r.u16()?;
            r.take(usize::from(count) * EntryKey::LEN)?;
            None
        } else if flags & LEAK_KEYS != 0 {
            let count = r.u16()?;
            let mut keys = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                keys.push(EntryKey::from_bytes(r.take(EntryKey::LEN)?)?);
            }
            Some(keys)
        } else {
            None
        };
        meta.versions.insert(
            n,
            VersionMeta {
                created_time,
                deletion_time,
                destroyed: flags & DESTROYED != 0,
                leak_keys,
            },
        );
    }
    (r.at == r.raw.len()).then_some(meta)
}

/// Reads the binary form; every read is bounds-checked, so damage is `None`, never a panic.
struct Reader<'a> {
    raw: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.raw.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.u32()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeyMeta {
        let key = |b: u8| EntryKey::from_bytes(&[b; EntryKey::LEN]).expect("48 bytes");
        KeyMeta {
            created_time: 1_700_000_000,
            updated_time: 1_700_000_100,
            current_version: 12,
            oldest_version: 3,
            max_versions: 10,
            cas_required: true,
            delete_version_after: 3600,
            custom_metadata: BTreeMap::from([
                ("owner".into(), "ops \"team\" é".into()),
                ("rotate_on_leak".into(), "true".into()),
            ]),
            versions: BTreeMap::from([
                (
                    3,
                    VersionMeta {
                        created_time: 1,
                        deletion_time: 0,
                        destroyed: false,
                        leak_keys: None,
                    },
                ),
                (
                    11,
                    VersionMeta {
                        created_time: 2,
                        deletion_time: 5,
                        destroyed: true,
                        leak_keys: Some(Vec::new()),
                    },
                ),
                (
                    12,
                    VersionMeta {
                        created_time: 3,
                        deletion_time: u64::MAX,
                        destroyed: false,
                        leak_keys: Some(vec![key(1), key(2)]),
                    },
                ),
            ]),
        }
    }

    #[test]
    fn metadata_round_trips_in_the_binary_form() {
        let meta = sample();
        let raw = encode(&meta).expect("encode");
        assert_eq!(raw[0], BINARY);
        assert_eq!(decode(&raw).expect("decode"), meta);
        let mut without = meta.clone();
        for v in without.versions.values_mut() {
            v.leak_keys = None;
        }
        assert_eq!(decode_to_answer(&raw).expect("decode"), without);
        let empty = KeyMeta::default();
        assert_eq!(decode(&encode(&empty).expect("encode")).expect("decode"), empty);
    }

    #[test]
    fn metadata_written_as_json_before_is_read() {
        // A record exactly as the JSON codec wrote it (record version 1).
        let old = br#"{"version":1,"created_time":1700000000,"updated_time":1700000100,"current_version":2,"oldest_version":1,"max_versions":0,"cas_required":false,"delete_version_after":0,"custom_metadata":{"owner":"ops"},"versions":{"1":{"created_time":1700000000,"deletion_time":0,"destroyed":false},"2":{"created_time":1700000100,"deletion_time":1700000200,"destroyed":true}}}"#;
        let meta = decode(old).expect("decode");
        assert_eq!(meta.current_version, 2);
        assert_eq!(meta.custom_metadata["owner"], "ops");
        assert_eq!(
            meta.versions[&2],
            VersionMeta {
                created_time: 1_700_000_100,
                deletion_time: 1_700_000_200,
                destroyed: true,
                leak_keys: None
            }
        );
        // Written again, it is in the binary form and reads back the same.
        assert_eq!(decode(&encode(&meta).expect("encode")).expect("decode"), meta);
    }

    #[test]
    fn damaged_or_newer_binary_records_are_refused_without_a_panic() {
        let raw = encode(&sample()).expect("encode");
        for n in 0..raw.len() {
            let e = decode(&raw[..n]).expect_err("truncated");
            assert!(!e.to_string().contains("ops"), "{e}");
        }
        let mut longer = raw.to_vec();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
        let mut newer = raw.to_vec();
        newer[0] = 3;
        assert!(decode(&newer).expect_err("newer").to_string().contains("newer Coffer"));
        // A flag this build does not know.
        let meta = KeyMeta {
            versions: BTreeMap::from([(
                1,
                VersionMeta {
                    created_time: 0,
                    deletion_time: 0,
                    destroyed: false,
                    leak_keys: None,
                },
            )]),
            ..KeyMeta::default()
        };
        let mut raw = encode(&meta).expect("encode").to_vec();
        let flags = raw.len() - 1;
        raw[flags] = 4;
        assert!(decode(&raw).is_err(), "unknown flag");
        // Every single flipped bit either fails or decodes: never a panic.
        let good = encode(&sample()).expect("encode").to_vec();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = decode(&b);
            }
        }
    }
}
