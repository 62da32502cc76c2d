//! What `coffer scan` prints: a table, JSON, or SARIF 2.1.0; and the baseline file.
//!
//! Guarantees: no output holds a found secret in full: [`mask`] keeps at most its first 4
//! characters (a fifth of it for shorter ones) and its length; the baseline file holds
//! fingerprints (source, commit or layer, path, rule, line) and nothing of the value. The keyed
//! hashes sent to the server are not printed either.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{Finding, Source, Stats, Status};

pub(super) struct Summary<'a> {
    pub stats: &'a Stats,
    pub baselined: usize,
    /// Why nothing could be checked, when nothing could.
    pub verification: Option<String>,
    pub dry_run: bool,
}

/// The secret as it may be shown: a short prefix, stars, and the length.
pub(super) fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n == 0 {
        return String::new();
    }
    let show = (n / 5).min(4);
    let prefix: String = secret.chars().take(show).collect();
    format!("{prefix}{} ({n} chars)", "*".repeat(6))
}

fn location(f: &Finding) -> String {
    let o = &f.origin;
    let at = format!("{}:{}:{}", o.path, f.hit.line, f.hit.column);
    match o.source {
        Source::File if o.path == o.target => at,
        Source::File if o.target == "." => at,
        Source::File => format!("{}/{at}", o.target.trim_end_matches('/')),
        Source::Git => {
            // A commit id, or the name of a reference that points at a tree or blob.
            let c: String = o.commit.as_deref().unwrap_or("").chars().take(12).collect();
            format!("{at} @ {c}")
        }
        Source::Image => format!("{}: {at} in {}", o.target, o.layer.as_deref().unwrap_or("?")),
    }
}

/// What a finding matched, or why it is unverified (unless that is `common`, said once below
/// the table), and where in an image it sits.
fn detail(f: &Finding, common: Option<&str>) -> String {
    let mut d = match (f.matched.as_slice(), &f.reason) {
        ([], Some(r)) if Some(r.as_str()) != common => r.clone(),
        ([], _) => String::new(),
        (m, _) => m.iter().map(|m| m.describe()).collect::<Vec<_>>().join("; "),
    };
    if let Some(n) = &f.origin.note {
        if !d.is_empty() {
            d.push_str("; ");
        }
        d.push_str(n);
    }
    d
}

fn counts(findings: &[Finding]) -> (usize, usize, usize) {
    let n = |s: Status| findings.iter().filter(|f| f.status == s).count();
    (n(Status::Live), n(Status::NotLive), n(Status::Unverified))
}

pub(super) fn table(findings: &[Finding], s: &Summary<'_>, actions: Option<&[Value]>) {
    let mut out = String::new();
    if !findings.is_empty() {
        let rows: Vec<[String; 5]> = findings
            .iter()
            .map(|f| {
                [
                    f.status.name().to_owned(),
                    f.hit.rule_id.clone(),
                    location(f),
                    mask(&f.hit.secret),
                    detail(f, s.verification.as_deref()),
                ]
            })
            .collect();
        let head = ["STATUS", "RULE", "WHERE", "SECRET", "DETAIL"];
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == 4 {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:<width$}  ", width = w[i]));
                }
            }
            l.trim_end().to_owned() + "\n"
        };
        out.push_str(&line(head));
        for r in &rows {
            out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        }
        out.push('\n');
    }
    let (live, not_live, unverified) = counts(findings);
    out.push_str(&format!(
        "{} finding(s): {live} live, {not_live} not live, {unverified} unverified",
        findings.len()
    ));
    if s.baselined > 0 {
        out.push_str(&format!("; {} ignored by the baseline", s.baselined));
    }
    out.push('\n');
    if let Some(v) = &s.verification
        && !findings.is_empty()
    {
        out.push_str(&format!("Unverified because: {v}\n"));
    }
    let st = s.stats;
    out.push_str(&format!(
        "Scanned {} item(s), {:.1} MiB, {} commit(s), {} layer(s); skipped {} binary, {} too large, \
         {} symbolic link(s)\n",
        st.scanned,
        st.bytes as f64 / 1048576.0,
        st.commits,
        st.layers,
        st.binary,
        st.too_large,
        st.symlinks
    ));
    if let Some(a) = actions {
        out.push('\n');
        out.push_str(&actions_table(a, s.dry_run));
    }
    crate::stdio::stdout_bytes(out.as_bytes());
}

/// `sys/leaks/report`'s actions, one a line.
pub(super) fn actions_table(actions: &[Value], dry_run: bool) -> String {
    let mut out = format!(
        "Response{}: {} action(s)\n",
        if dry_run { " (dry run: nothing changed)" } else { "" },
        actions.len()
    );
    for a in actions {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let on = [s("path"), s("lease_id"), s("accessor")]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let done = if a.get("done").and_then(Value::as_bool) == Some(true) {
            "done"
        } else if dry_run {
            "would do"
        } else {
            "not done"
        };
        let mut l = format!("  {:<20} {:<9} {:<16} {on}", s("action"), done, s("kind"));
        let err = s("error");
        if !err.is_empty() {
            l.push_str(&format!(" ({err})"));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

fn finding_json(f: &Finding) -> Value {
    let o = &f.origin;
    let mut loc = json!({
        "source": o.source.name(),
        "target": o.target,
        "path": o.path,
        "line": f.hit.line,
        "column": f.hit.column,
    });
    for (k, v) in [("commit", &o.commit), ("layer", &o.layer), ("note", &o.note)] {
        if let Some(v) = v {
            loc[k] = json!(v);
        }
    }
    let mut v = json!({
        "rule_id": f.hit.rule_id,
        "description": f.hit.description,
        "status": match f.status { Status::Live => "live", Status::NotLive => "not_live", Status::Unverified => "unverified" },
        "secret": mask(&f.hit.secret),
        "secret_length": f.hit.secret.chars().count(),
        "entropy": (f.hit.entropy * 100.0).round() / 100.0,
        "fingerprint": f.fingerprint(),
        "location": loc,
    });
    if !f.matched.is_empty() {
        v["matches"] = json!(f.matched);
    }
    if let Some(r) = &f.reason {
        v["reason"] = json!(r);
    }
    v
}

pub(super) fn json(findings: &[Finding], s: &Summary<'_>, actions: Option<&[Value]>) -> Result<()> {
    let (live, not_live, unverified) = counts(findings);
    let mut doc = json!({
        "findings": findings.iter().map(finding_json).collect::<Vec<_>>(),
        "summary": {
            "findings": findings.len(),
            "live": live,
            "not_live": not_live,
            "unverified": unverified,
            "baselined": s.baselined,
            "verification": s.verification,
            "scanned": s.stats,
        },
    });
    if let Some(a) = actions {
        doc["response"] = json!({"dry_run": s.dry_run, "actions": a});
    }
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    crate::stdio::stdout_bytes(text.as_bytes());
    Ok(())
}

/// A relative URI reference for a path: `/` kept, everything outside RFC 3986's unreserved
/// set percent-encoded.
fn uri(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The artifact a finding is in, as code-scanning UIs resolve it (relative to the checkout
/// when the scan was given a relative path).
fn artifact(f: &Finding) -> String {
    let o = &f.origin;
    let joined = match o.source {
        Source::Image => o.target.clone(),
        Source::File if o.path == o.target => o.target.clone(),
        Source::File | Source::Git => {
            let base = o.target.trim_end_matches('/');
            if base == "." || base.is_empty() {
                o.path.clone()
            } else {
                format!("{base}/{}", o.path)
            }
        }
    };
    let joined = joined.trim_start_matches("./");
    if let Some(abs) = joined.strip_prefix('/') {
        format!("file:///{}", uri(abs))
    } else {
        uri(joined)
    }
}

pub(super) fn sarif_doc(findings: &[Finding]) -> Value {
    let mut rule_ids: Vec<&str> = Vec::new();
    let mut rules = Vec::new();
    for f in findings {
        if !rule_ids.contains(&f.hit.rule_id.as_str()) {
            rule_ids.push(&f.hit.rule_id);
            let text =
                if f.hit.description.is_empty() { &f.hit.rule_id } else { &f.hit.description };
            rules.push(json!({
                "id": f.hit.rule_id,
                "name": f.hit.rule_id,
                "shortDescription": {"text": text},
                "helpUri": "https://github.com/coffer/coffer/blob/main/docs/scan.md",
            }));
        }
    }
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let level = match f.status {
                Status::Live => "error",
                Status::Unverified => "warning",
                Status::NotLive => "note",
            };
            let mut msg = format!("{} ({}): {}", f.hit.description, f.hit.rule_id, f.status.name());
            let d = detail(f, None);
            if !d.is_empty() {
                msg.push_str(&format!(" — {d}"));
            }
            if !f.hit.secret.is_empty() {
                msg.push_str(&format!(". Secret: {}", mask(&f.hit.secret)));
            }
            let mut props = json!({"status": f.status.name(), "source": f.origin.source.name()});
            if let Some(c) = &f.origin.commit {
                props["commit"] = json!(c);
            }
            if let Some(l) = &f.origin.layer {
                props["layer"] = json!(l);
                props["path"] = json!(f.origin.path);
            }
            if !f.matched.is_empty() {
                props["matches"] = json!(f.matched);
            }
            json!({
                "ruleId": f.hit.rule_id,
                "ruleIndex": rule_ids.iter().position(|r| *r == f.hit.rule_id).unwrap_or(0),
                "level": level,
                "message": {"text": msg},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": artifact(f)},
                        "region": {"startLine": f.hit.line, "startColumn": f.hit.column},
                    }
                }],
                "partialFingerprints": {"cofferScan/v1": f.fingerprint()},
                "properties": props,
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "coffer scan",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/coffer/coffer/blob/main/docs/scan.md",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

pub(super) fn sarif(findings: &[Finding]) -> Result<()> {
    let mut text = serde_json::to_string_pretty(&sarif_doc(findings))?;
    text.push('\n');
    crate::stdio::stdout_bytes(text.as_bytes());
    Ok(())
}

/// Fingerprints from a baseline written by `-write-baseline`, or from a `-format=json` report.
pub(super) fn read_baseline(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the baseline {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("the baseline {} is not JSON", path.display()))?;
    let Some(list) = v.get("findings").and_then(Value::as_array) else {
        bail!("the baseline {} has no \"findings\" list", path.display());
    };
    list.iter()
        .map(|f| {
            f.get("fingerprint").and_then(Value::as_str).map(str::to_owned).with_context(|| {
                format!("the baseline {}: a finding without a \"fingerprint\"", path.display())
            })
        })
        .collect()
}

pub(super) fn write_baseline(path: &Path, findings: &[Finding]) -> Result<()> {
    let list: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "fingerprint": f.fingerprint(),
                "rule_id": f.hit.rule_id,
                "path": f.origin.path,
                "line": f.hit.line,
            })
        })
        .collect();
    let doc = json!({"coffer_scan_baseline": 1, "findings": list});
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::scan::detect::Hit;
    use crate::cli::scan::{Origin, Source};
    use zeroize::Zeroizing;

    fn finding(secret: &str, status: Status) -> Finding {
        Finding {
            hit: Hit {
                rule_id: "password-assignment".into(),
                description: "Password".into(),
                secret: Zeroizing::new(secret.into()),
                line: 3,
                column: 7,
                entropy: 3.2,
            },
            origin: Origin::new(Source::File, ".", "dir with space/app.env"),
            status,
            reason: None,
            matched: Vec::new(),
            hash: None,
        }
    }

    #[test]
    fn mask_never_shows_more_than_a_fifth_or_four_characters() {
        assert_eq!(mask(""), "");
        assert_eq!(mask("abc"), "****** (3 chars)");
        assert_eq!(mask("Vq8!tR2zLp9wKx"), "Vq****** (14 chars)");
        assert!(mask("cfs_0123456789012345678901234567890123456").starts_with("cfs_******"));
    }

    /// The required properties of SARIF 2.1.0 (OASIS standard, §3.13 sarifLog, §3.14 run,
    /// §3.18 tool, §3.19 toolComponent, §3.27 result, §3.11 message, §3.28 location, §3.29
    /// physicalLocation, §3.4 artifactLocation, §3.30 region, §3.49 reportingDescriptor).
    #[test]
    fn sarif_has_the_spec_required_shape() {
        let findings = vec![finding("Vq8!tR2zLp9wKx", Status::Live), finding("x", Status::NotLive)];
        let doc = sarif_doc(&findings);
        assert_eq!(doc["version"], "2.1.0");
        let runs = doc["runs"].as_array().expect("runs is an array");
        assert_eq!(runs.len(), 1);
        let driver = &runs[0]["tool"]["driver"];
        assert!(driver["name"].as_str().is_some_and(|n| !n.is_empty()));
        for r in driver["rules"].as_array().expect("rules") {
            assert!(r["id"].is_string());
        }
        let results = runs[0]["results"].as_array().expect("results");
        assert_eq!(results.len(), 2);
        for r in results {
            assert!(r["message"]["text"].is_string(), "{r}");
            assert!(
                ["none", "note", "warning", "error"].contains(&r["level"].as_str().unwrap_or(""))
            );
            let idx = r["ruleIndex"].as_u64().expect("ruleIndex") as usize;
            assert_eq!(driver["rules"][idx]["id"], r["ruleId"]);
            let pl = &r["locations"][0]["physicalLocation"];
            assert_eq!(pl["artifactLocation"]["uri"], "dir%20with%20space/app.env");
            assert!(pl["region"]["startLine"].as_u64().is_some_and(|l| l >= 1));
            assert!(pl["region"]["startColumn"].as_u64().is_some_and(|c| c >= 1));
        }
        let text = doc.to_string();
        assert!(!text.contains("Vq8!tR2zLp9wKx"), "the secret is in the SARIF: {text}");
        assert_eq!(results[0]["level"], "error");
        assert_eq!(results[1]["level"], "note");
    }

    #[test]
    fn baselines_round_trip_and_hold_no_secret() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("b.json");
        let f = finding("Vq8!tR2zLp9wKx", Status::Unverified);
        write_baseline(&p, std::slice::from_ref(&f)).expect("write");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(!text.contains("Vq8"), "{text}");
        let set = read_baseline(&p).expect("read");
        assert!(set.contains(&f.fingerprint()));
        std::fs::write(&p, "{\"nope\": 1}").expect("write");
        assert!(read_baseline(&p).is_err());
    }
}
