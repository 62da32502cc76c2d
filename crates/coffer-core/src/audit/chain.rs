//! The hash chain over audit entries: each entry carries `seq`, `prev_hash` and `hash`, where
//! `hash` is SHA-256 over the entry's canonical JSON (keys sorted, without `hash`). Each line is
//! written as exactly the canonical JSON of the whole entry, and a line is accepted only when it
//! is byte for byte that form, so what is verified is what a reader of the file sees: a
//! duplicated or reordered key, a space, an escape or trailing bytes make a line fail. Editing,
//! deleting, reordering or cutting entries breaks the chain at the first damaged line.
//! Not found here: a chain rewritten from some entry on, or cut at its end (the hash has no
//! key); `verify_chain_against` finds those while the server that wrote the chain runs.

use aws_lc_rs::digest;
use serde_json::{Map, Value};

use crate::hex::hex;

/// JSON with object keys sorted at every level, so writer and verifier hash the same bytes
/// whatever map order a JSON library keeps.
pub(crate) fn canonical(v: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    walk(v, &mut out);
    into_string(out)
}

/// [`canonical`] of an object without its top-level key `skip`: what is hashed, made without
/// copying the entry to remove its `hash`.
fn canonical_object(m: &Map<String, Value>, skip: Option<&str>) -> String {
    let mut out = Vec::with_capacity(1024);
    walk_object(m, skip, &mut out);
    into_string(out)
}

fn walk(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => walk_object(m, None, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                walk(x, out);
            }
            out.push(b']');
        }
        other => leaf(other, out),
    }
}

fn walk_object(m: &Map<String, Value>, skip: Option<&str>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = m.keys().filter(|k| Some(k.as_str()) != skip).collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        leaf(*k, out);
        out.push(b':');
        walk(&m[*k], out);
    }
    out.push(b'}');
}

/// A string or scalar as serde_json writes it (its escapes and number forms), appended in place.
fn leaf<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing a string or a JSON scalar into a Vec cannot fail: no I/O, no map keys to check.
    if let Err(e) = serde_json::to_writer(&mut *out, v) {
        tracing::error!(error = %e, "an audit value did not serialize");
    }
}

/// serde_json writes UTF-8 only; the lossy path is never taken.
fn into_string(out: Vec<u8>) -> String {
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The hash of an entry that already holds `seq` and `prev_hash` (any `hash` key is ignored).
pub(crate) fn entry_hash(entry: &Map<String, Value>) -> String {
    hex(digest::digest(&digest::SHA256, canonical_object(entry, Some("hash")).as_bytes()).as_ref())
}

/// Completes an entry with its place in the chain and returns `(line, hash)`: the line is the
/// canonical JSON the verifier requires, without its newline.
pub(crate) fn seal_entry(
    mut entry: Map<String, Value>,
    seq: u64,
    prev_hash: &str,
) -> (String, String) {
    entry.insert("seq".into(), Value::from(seq));
    entry.insert("prev_hash".into(), Value::from(prev_hash));
    entry.remove("hash");
    let hash = entry_hash(&entry);
    entry.insert("hash".into(), Value::from(hash.clone()));
    (canonical(&Value::Object(entry)), hash)
}

/// Where a verified chain ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub entries: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
}

/// The first place a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number in the file.
    pub line: usize,
    pub reason: String,
}

/// Verifies a whole audit log. With `from_middle`, the first entry may continue a chain whose
/// beginning is elsewhere (a rotated file); otherwise it must be entry 1 of a new chain.
pub fn verify_chain(text: &str, from_middle: bool) -> Result<ChainHead, ChainBreak> {
    verify_chain_against(text, from_middle, None)
}

/// As [`verify_chain`], and the log must hold entry `expect.0` with hash `expect.1`: the chain
/// head the server reported. This finds what the chain alone cannot: whole entries removed
/// from the end, or a chain rewritten from some point on.
pub fn verify_chain_against(
    text: &str,
    from_middle: bool,
    expect: Option<(u64, &str)>,
) -> Result<ChainHead, ChainBreak> {
    let mut checkpoint_seen = false;
    let mut prev: Option<(u64, String)> = None;
    let mut head = ChainHead { entries: 0, first_seq: 0, last_seq: 0, last_hash: String::new() };
    let broken = |line: usize, reason: String| Err(ChainBreak { line, reason });
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        if !line.ends_with('\n') {
            return broken(n, "the last entry is cut short (no end of line): the log was truncated or is still being written".into());
        }
        let line = line.trim_end_matches('\n');
        if line.trim().is_empty() {
            return broken(n, "empty line: an entry was removed or the file was edited".into());
        }
        let Ok(parsed) = serde_json::from_str::<Value>(line) else {
            return broken(n, "not a JSON audit entry: the line was edited or truncated".into());
        };
        // A parse forgets duplicate keys (the last one wins), key order, spaces and escapes:
        // hashing it would vouch for bytes it never saw. The line must be what the writer emits.
        if canonical(&parsed) != line {
            return broken(
                n,
                "not the exact form Coffer writes (a duplicate or reordered key, spaces, escapes or trailing bytes): the line was edited".into(),
            );
        }
        let Value::Object(entry) = parsed else {
            return broken(n, "not a JSON audit entry: the line was edited or truncated".into());
        };
        let (Some(seq), Some(prev_hash), Some(hash)) = (
            entry.get("seq").and_then(Value::as_u64),
            entry.get("prev_hash").and_then(Value::as_str),
            entry.get("hash").and_then(Value::as_str),
        ) else {
            return broken(n, "entry has no seq/prev_hash/hash: it was not written by a Coffer audit device, or was edited".into());
        };
        if entry_hash(&entry) != hash {
            return broken(
                n,
                format!("entry {seq} was altered: its content does not match its hash"),
            );
        }
        match &prev {
            None => {
                if !from_middle && (seq != 1 || !prev_hash.is_empty()) {
                    return broken(
                        n,
                        format!(
                            "the log starts at entry {seq}, not 1: earlier entries were deleted (use -from-middle for a rotated file)"
                        ),
                    );
                }
                head.first_seq = seq;
            }
            Some((pseq, phash)) => {
                if prev_hash != phash {
                    return broken(
                        n,
                        format!(
                            "entry {seq} does not follow entry {pseq}: entries were deleted, inserted or reordered"
                        ),
                    );
                }
                if seq != pseq + 1 {
                    return broken(
                        n,
                        format!(
                            "entry {seq} follows entry {pseq}: entries are missing or reordered"
                        ),
                    );
                }
            }
        }
        if let Some((s, h)) = expect
            && s == seq
        {
            if h != hash {
                return broken(
                    n,
                    format!(
                        "entry {seq} is not the one the server wrote: the log was rewritten from here or earlier"
                    ),
                );
            }
            checkpoint_seen = true;
        }
        prev = Some((seq, hash.to_owned()));
        head.entries += 1;
        head.last_seq = seq;
        head.last_hash = hash.to_owned();
    }
    if let Some((s, _)) = expect
        && !checkpoint_seen
        && s > 0
    {
        let lines = text.lines().count();
        return broken(
            lines + 1,
            format!(
                "the server has written {s} entries, the log ends at entry {}: entries were removed from its end",
                head.last_seq
            ),
        );
    }
    Ok(head)
}

/// The chain head of an existing log's last complete, well-formed entry, to continue after a
/// restart. `None` when the file has no entries.
pub(crate) fn tail_head(text: &str) -> Option<(u64, String)> {
    text.lines().rev().filter(|l| !l.trim().is_empty()).find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        Some((v.get("seq")?.as_u64()?, v.get("hash")?.as_str()?.to_owned()))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chain(n: u64) -> Vec<String> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let e = json!({"type": "request", "request": {"path": format!("p{seq}")}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let (line, h) = seal_entry(e, seq, &prev);
                prev = h;
                line
            })
            .collect()
    }

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let head = verify_chain(&text(&chain(5)), false).expect("intact");
        assert_eq!((head.entries, head.last_seq), (5, 5));
    }

    #[test]
    fn an_edited_entry_is_found() {
        let mut l = chain(5);
        l[2] = l[2].replace("p3", "pX");
        assert_eq!(verify_chain(&text(&l), false).expect_err("edited").line, 3);
    }

    #[test]
    fn a_deleted_entry_is_found() {
        let mut l = chain(5);
        l.remove(1);
        assert_eq!(verify_chain(&text(&l), false).expect_err("deleted").line, 2);
        let mut first = chain(3);
        first.remove(0);
        assert_eq!(verify_chain(&text(&first), false).expect_err("head deleted").line, 1);
        assert!(verify_chain(&text(&first), true).is_ok(), "a rotated file continues a chain");
    }

    #[test]
    fn swapped_entries_are_found() {
        let mut l = chain(5);
        l.swap(1, 2);
        assert_eq!(verify_chain(&text(&l), false).expect_err("swapped").line, 2);
    }

    #[test]
    fn a_cut_last_line_is_found() {
        let l = chain(3);
        let mut t = text(&l);
        t.truncate(t.len() - 10);
        assert_eq!(verify_chain(&t, false).expect_err("cut").line, 3);
    }

    #[test]
    fn removed_tail_entries_are_found_against_the_servers_head() {
        let l = chain(5);
        let head = verify_chain(&text(&l), false).expect("intact");
        let expect = Some((head.last_seq, head.last_hash.as_str()));
        assert!(verify_chain_against(&text(&l), false, expect).is_ok());
        let cut = verify_chain_against(&text(&l[..3]), false, expect).expect_err("tail removed");
        assert_eq!(cut.line, 4);
        assert!(cut.reason.contains("removed from its end"), "{}", cut.reason);
        let rewritten = chain(5);
        let e = verify_chain_against(&text(&rewritten), false, Some((5, "not-the-hash")))
            .expect_err("rewritten");
        assert_eq!(e.line, 5);
    }

    #[test]
    fn a_forged_duplicate_key_in_front_of_an_entry_is_refused() {
        let honest = chain(5);
        let head = verify_chain(&text(&honest), false).expect("intact");
        let mut l = honest.clone();
        // serde_json keeps the last of duplicate keys: a reader that only looks at the parse
        // sees the original entry, while `grep` and any first-key-wins reader see the forgery.
        l[2] = l[2].replacen('{', r#"{"request":{"path":"sys/FORGED"},"#, 1);
        let e = verify_chain(&text(&l), false).expect_err("forged");
        assert_eq!(e.line, 3, "{}", e.reason);
        let e =
            verify_chain_against(&text(&l), false, Some((head.last_seq, head.last_hash.as_str())))
                .expect_err("forged, even with the server's head");
        assert_eq!(e.line, 3, "{}", e.reason);
    }

    #[test]
    fn a_line_not_byte_for_byte_as_written_is_refused() {
        let honest = chain(3);
        let variants: Vec<(&str, String)> = vec![
            ("space after a colon", honest[1].replacen("\":", "\": ", 1)),
            ("reordered keys", {
                let v: Value = serde_json::from_str(&honest[1]).expect("json");
                let m = v.as_object().expect("object");
                let mut parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical(v)))
                    .collect();
                parts.reverse();
                format!("{{{}}}", parts.join(","))
            }),
            ("an escaped character", honest[1].replacen("\"p2\"", r#""\u0070\u0032""#, 1)),
            ("trailing spaces", format!("{} ", honest[1])),
            ("a carriage return", format!("{}\r", honest[1])),
            ("leading spaces", format!(" {}", honest[1])),
        ];
        for (what, forged) in variants {
            assert_ne!(forged, honest[1], "{what}: the variant must differ");
            let mut l = honest.clone();
            l[1] = forged;
            let e = verify_chain(&text(&l), false).expect_err(what);
            assert_eq!(e.line, 2, "{what}: {}", e.reason);
        }
    }

    #[test]
    fn entries_with_numbers_of_every_kind_verify() {
        let mut prev = String::new();
        let lines: Vec<String> = [
            json!({"data": {"f": 0.1, "g": 0.30000000000000004, "h": 1e300, "i": 5e-324, "j": -5.7619659084676676e-151}}),
            json!({"data": {"n": -1, "u": u64::MAX, "m": i64::MIN, "big": 1.2345678901234567e29}}),
            json!({"data": {"s": "é \u{1F600} \\ \" \n \u{7f}", "t": [1.5, -0.0, 2.2250738585072014e-308]}}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let (line, h) = seal_entry(v.as_object().cloned().unwrap_or_default(), i as u64 + 1, &prev);
            prev = h;
            line
        })
        .collect();
        let head = verify_chain(&text(&lines), false).expect("numbers and strings round-trip");
        assert_eq!(head.entries, 3);
    }

    #[test]
    fn a_log_written_by_earlier_versions_still_verifies() {
        // An entry as the server wrote it before lines were written through `canonical`
        // (docs/audit.md's example): serde_json's sorted, compact form.
        let old = r#"{"auth":{"accessor":"hmac-sha256:3d65051f88ca2af0425ba6e8d7eeeb168e01d7352eb0447a089372aeeb3a7f1a","client_token":"hmac-sha256:b5a18a28bab2ed5b79bfc901bed775b870a202289d264d419e8d53b362225586","display_name":"root","entity_id":"","metadata":null,"policies":["root"],"token_issue_time":"2026-11-23T00:40:27Z","token_policies":["root"],"token_type":"service"},"error":"","hash":"5b038e6f831fcefbd6d5afba3c53c9897a981bfc05c9ab06710ee7c0a15c2b21","prev_hash":"1e1ca84ca5716cec607e92404d78fd9b458074adfaf8f69a172212c53a4c81a8","request":{"client_token":"hmac-sha256:b5a18a28bab2ed5b79bfc901bed775b870a202289d264d419e8d53b362225586","client_token_accessor":"hmac-sha256:3d65051f88ca2af0425ba6e8d7eeeb168e01d7352eb0447a089372aeeb3a7f1a","data":{"data":{"password":"hmac-sha256:5d1427616883c8701411c8b4580f9803fe7fd949cf3726fd202f9f9c99a5d03a"}},"id":"ce1ae992-631d-478f-98df-ea789a345c0e","mount_type":"kv","namespace":{"id":"root"},"operation":"create","path":"secret/data/myapp/db","remote_address":"127.0.0.1"},"seq":82,"time":"2026-11-23T00:40:38.940103557Z","type":"request"}"#;
        let head = verify_chain(&format!("{old}\n"), true).expect("an old entry verifies");
        assert_eq!(head.last_seq, 82);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        assert_eq!(
            canonical(&json!({"b": {"d": 1, "c": [true, null]}, "a": "x"})),
            r#"{"a":"x","b":{"c":[true,null],"d":1}}"#
        );
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    proptest! {
        /// Whatever a client sends in request data, the server's own line verifies: the
        /// verifier's parse and re-serialization must give back the very bytes written.
        #[test]
        fn any_number_or_string_in_an_entry_verifies(
            f in any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()),
            i in any::<i64>(),
            u in any::<u64>(),
            s in any::<String>(),
        ) {
            let e = json!({"data": {"f": f, "i": i, "u": u, "s": s, "l": [f, s]}});
            let (line, _) = seal_entry(e.as_object().cloned().unwrap_or_default(), 1, "");
            prop_assert!(verify_chain(&format!("{line}\n"), false).is_ok(), "{}", line);
            let _: Value = serde_json::from_str(&line).expect("json");
        }
    }
}
