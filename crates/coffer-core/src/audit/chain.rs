//! The hash chain over audit entries: each entry carries `seq`, `prev_hash` and `hash`, where
//! `hash` is SHA-256 over the entry's canonical JSON (keys sorted, without `hash`). Editing,
//! deleting, reordering or cutting entries breaks the chain at the first damaged line.

use aws_lc_rs::digest;
use serde_json::{Map, Value};

use crate::util::hex;

/// JSON with object keys sorted at every level, so writer and verifier hash the same bytes
/// whatever map order a JSON library keeps.
pub(crate) fn canonical(v: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    walk(&m[*k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    walk(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    walk(v, &mut s);
    s
}

/// The hash of an entry that already holds `seq` and `prev_hash` (any `hash` key is ignored).
pub(crate) fn entry_hash(entry: &Map<String, Value>) -> String {
    let mut e = entry.clone();
    e.remove("hash");
    hex(digest::digest(&digest::SHA256, canonical(&Value::Object(e)).as_bytes()).as_ref())
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
        let Ok(Value::Object(entry)) = serde_json::from_str::<Value>(line) else {
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
                let mut e = json!({"type": "request", "request": {"path": format!("p{seq}")}, "seq": seq, "prev_hash": prev})
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let h = entry_hash(&e);
                e.insert("hash".into(), json!(h));
                prev = h;
                serde_json::to_string(&Value::Object(e)).unwrap_or_default()
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
    fn canonical_json_sorts_keys_at_every_level() {
        assert_eq!(
            canonical(&json!({"b": {"d": 1, "c": [true, null]}, "a": "x"})),
            r#"{"a":"x","b":{"c":[true,null],"d":1}}"#
        );
    }
}
