//! Reports from journals: a plain-text summary and a self-contained HTML page with an SVG
//! timeline.
//!
//! Both read the journal as JSON rather than as [`crate::Journal`], so a journal written by
//! Chaos Toolkit itself (`chaoslib-version`, `python` providers) reports the same way.
//!
//! Guarantees: everything taken from the journal is HTML-escaped in the page and stripped of
//! control characters in the summary (a probe's stdout cannot drive the terminal); the page has
//! inline CSS, no script and no external reference. A journal missing fields still reports:
//! missing values show as `?`, runs without a readable time are left off the timeline.
//!
//! Fault windows (the shaded spans of the timeline), by this rule:
//! 1. a method activity whose output states `expires_at` (at its top level, under `data`, in an
//!    http `body` or in a process `stdout` that is JSON; RFC 3339 text or seconds since the
//!    epoch) opened a fault: its window runs from that activity's start to the earliest of
//!    `expires_at`, the end of the rollbacks (they undo faults) and the end of the run;
//! 2. when no activity states `expires_at`, the method's actions are taken as the faults: one
//!    window from the start of the first action to the end of the last rollback (the last
//!    method activity when there are no rollbacks).
//!
//! Does not: read the journal's experiment to guess what a fault did, or draw anything for
//! activities that have no start time.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use serde_json::Value;

/// A span of the run during which a fault was (or may have been) in place.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultWindow {
    pub label: String,
    /// Seconds since the Unix epoch.
    pub start: f64,
    pub end: f64,
    /// True when the window comes from an `expires_at` (rule 1), false for rule 2.
    pub declared: bool,
}

/// One execution of an activity, as the report reads it.
struct Entry<'a> {
    phase: Phase,
    run: &'a Value,
    name: String,
    kind: String,
    start: Option<f64>,
    end: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Before,
    During(usize),
    After,
    Method,
    Rollback,
}

impl Phase {
    fn hypothesis(self) -> bool {
        matches!(self, Phase::Before | Phase::During(_) | Phase::After)
    }

    fn label(self) -> String {
        match self {
            Phase::Before => "before".into(),
            Phase::During(i) => format!("during #{}", i + 1),
            Phase::After => "after".into(),
            Phase::Method => "method".into(),
            Phase::Rollback => "rollback".into(),
        }
    }
}

fn entries(journal: &Value) -> Vec<Entry<'_>> {
    fn push<'a>(out: &mut Vec<Entry<'a>>, phase: Phase, runs: Option<&'a Value>) {
        for run in runs.and_then(Value::as_array).into_iter().flatten() {
            let start = run.get("start").and_then(Value::as_str).and_then(parse_time);
            let end = run
                .get("end")
                .and_then(Value::as_str)
                .and_then(parse_time)
                .or_else(|| Some(start? + run.get("duration").and_then(Value::as_f64)?));
            out.push(Entry {
                phase,
                run,
                name: text(&run["activity"]["name"]),
                kind: text(&run["activity"]["type"]),
                start,
                end,
            });
        }
    }
    let mut out = Vec::new();
    let states = &journal["steady_states"];
    push(&mut out, Phase::Before, states["before"].get("probes"));
    for (i, state) in states["during"].as_array().into_iter().flatten().enumerate() {
        push(&mut out, Phase::During(i), state.get("probes"));
    }
    push(&mut out, Phase::After, states["after"].get("probes"));
    push(&mut out, Phase::Method, journal.get("run"));
    push(&mut out, Phase::Rollback, journal.get("rollbacks"));
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

/// Seconds since the epoch from `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]` (Python's
/// `isoformat()`, RFC 3339); no offset means UTC ([`coffer_time::parse_rfc3339_or_naive_utc`]).
pub fn parse_time(s: &str) -> Option<f64> {
    let t = coffer_time::parse_rfc3339_or_naive_utc(s.trim()).ok()?;
    Some(match t.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    })
}

fn expires_at(output: &Value, depth: u8) -> Option<f64> {
    match output {
        Value::Object(map) => {
            if let Some(at) = map.get("expires_at") {
                return match at {
                    Value::String(s) => parse_time(s),
                    Value::Number(n) => n.as_f64(),
                    Value::Null | Value::Bool(_) | Value::Array(_) | Value::Object(_) => None,
                };
            }
            if depth == 0 {
                return None;
            }
            ["data", "body", "stdout"].iter().find_map(|k| expires_at(map.get(*k)?, depth - 1))
        }
        Value::String(s) if s.trim_start().starts_with('{') => {
            expires_at(&serde_json::from_str(s).ok()?, depth)
        }
        _ => None,
    }
}

/// The fault windows of a journal, by the rule in this module's header.
pub fn fault_windows(journal: &Value) -> Vec<FaultWindow> {
    let all = entries(journal);
    let run_end = journal.get("end").and_then(Value::as_str).and_then(parse_time);
    let last_end = |phase: Phase| {
        all.iter().filter(|e| e.phase == phase).filter_map(|e| e.end).reduce(f64::max)
    };
    let rollbacks_end = last_end(Phase::Rollback);
    let method = all.iter().filter(|e| e.phase == Phase::Method);
    let declared: Vec<FaultWindow> = method
        .clone()
        .filter_map(|e| {
            let start = e.start?;
            let expires = expires_at(&e.run["output"], 3)?;
            let end =
                [Some(expires), rollbacks_end, run_end].into_iter().flatten().reduce(f64::min)?;
            Some(FaultWindow { label: e.name.clone(), start, end: end.max(start), declared: true })
        })
        .collect();
    if !declared.is_empty() {
        return declared;
    }
    let Some(start) =
        method.filter(|e| e.kind == "action").filter_map(|e| e.start).reduce(f64::min)
    else {
        return Vec::new();
    };
    let Some(end) = rollbacks_end.or_else(|| last_end(Phase::Method)) else {
        return Vec::new();
    };
    vec![FaultWindow {
        label: "method actions until rollbacks".into(),
        start,
        end: end.max(start),
        declared: false,
    }]
}

/// What a probe's result is checked on: the tolerance's `target`, or the `status` for a value
/// or list tolerance on an http/process output, else the whole output.
fn checked_value(run: &Value) -> Value {
    let output = &run["output"];
    let tolerance = &run["activity"]["tolerance"];
    let picked = match tolerance.get("target").and_then(Value::as_str) {
        Some(t) => output.get(t),
        None if !tolerance.is_object() => output.get("status"),
        None => None,
    };
    picked.unwrap_or(output).clone()
}

/// Compact JSON, cut to `max` characters.
fn short(v: &Value, max: usize) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() <= max {
        s
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}...")
    }
}

/// The exception's last line (Chaos Toolkit's is a whole traceback).
fn exception(run: &Value) -> Option<String> {
    let lines = run.get("exception")?.as_array()?;
    let last = lines.iter().rev().filter_map(Value::as_str).find(|l| !l.trim().is_empty())?;
    Some(last.trim().to_owned())
}

/// A probe's outcome in the hypothesis: met, not met, or failed to run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Met,
    NotMet,
    Failed,
}

impl Outcome {
    fn of(run: &Value) -> Self {
        if run["status"] != "succeeded" {
            Outcome::Failed
        } else if run["tolerance_met"] == Value::Bool(true) {
            Outcome::Met
        } else {
            Outcome::NotMet
        }
    }

    fn word(self) -> &'static str {
        match self {
            Outcome::Met => "met",
            Outcome::NotMet => "not met",
            Outcome::Failed => "failed",
        }
    }
}

fn verdict(journal: &Value) -> (String, bool) {
    let status = text(&journal["status"]);
    let deviated = journal["deviated"] == Value::Bool(true);
    let ok = status == "completed" && !deviated;
    let words = format!(
        "{status}, {} (exit status {})",
        if deviated { "deviated from the steady state" } else { "no deviation" },
        u8::from(!ok)
    );
    (words, ok)
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |d| format!("{d:.2} s"))
}

/// Replaces control characters (a terminal's escape sequences among them) with `\u{..}`.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let shown: Vec<char> =
                if c.is_control() && c != '\n' { c.escape_unicode().collect() } else { vec![c] };
            shown
        })
        .collect()
}

fn probe_line(run: &Value) -> String {
    let outcome = Outcome::of(run);
    let name = text(&run["activity"]["name"]);
    let detail = match outcome {
        Outcome::Failed => format!("failed to run: {}", exception(run).unwrap_or_default()),
        Outcome::Met | Outcome::NotMet => format!(
            "{} against tolerance {}: {}",
            short(&checked_value(run), 60),
            short(&run["activity"]["tolerance"], 60),
            outcome.word()
        ),
    };
    format!("{name}: {detail}")
}

/// A plain-text summary of a journal, for a terminal or a CI log.
pub fn summary(journal: &Value) -> String {
    let mut out = String::new();
    let (words, _) = verdict(journal);
    let _ = writeln!(out, "Experiment: {}", text(&journal["experiment"]["title"]));
    let _ = writeln!(out, "Verdict: {words}");
    let _ = writeln!(
        out,
        "Ran: {} to {} ({})",
        text(&journal["start"]),
        text(&journal["end"]),
        seconds(journal["duration"].as_f64())
    );
    let states = &journal["steady_states"];
    let title = &journal["experiment"]["steady-state-hypothesis"]["title"];
    if !title.is_null() {
        let _ = writeln!(out, "Steady-state hypothesis: {}", text(title));
    }
    for (label, state) in [("before", &states["before"]), ("after", &states["after"])] {
        if state.is_null() {
            let _ = writeln!(out, "  {label} the method: not run");
            continue;
        }
        let met = if state["steady_state_met"] == Value::Bool(true) { "met" } else { "NOT MET" };
        let _ = writeln!(out, "  {label} the method: {met}");
        for run in state["probes"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    - {}", probe_line(run));
        }
    }
    let during = states["during"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !during.is_empty() {
        let missed: Vec<&Value> =
            during.iter().filter(|s| s["steady_state_met"] != Value::Bool(true)).collect();
        let _ =
            writeln!(out, "  during the method: {} checks, {} not met", during.len(), missed.len());
        for state in missed {
            if let Some(run) = state["probes"].as_array().and_then(|p| p.last()) {
                let _ = writeln!(out, "    - at {}: {}", text(&run["start"]), probe_line(run));
            }
        }
    }
    for (label, runs) in [("Method", &journal["run"]), ("Rollbacks", &journal["rollbacks"])] {
        let runs = runs.as_array().map(Vec::as_slice).unwrap_or_default();
        let _ = writeln!(out, "{label}:{}", if runs.is_empty() { " none" } else { "" });
        for run in runs {
            let _ = write!(
                out,
                "  - {} {}: {} in {}",
                text(&run["activity"]["type"]),
                text(&run["activity"]["name"]),
                text(&run["status"]),
                seconds(run["duration"].as_f64())
            );
            match exception(run) {
                Some(e) => {
                    let _ = writeln!(out, ": {e}");
                }
                None => out.push('\n'),
            }
        }
    }
    for w in fault_windows(journal) {
        let _ = writeln!(
            out,
            "Fault window: {} ({}, {:.2} s)",
            w.label,
            if w.declared { "until its expires_at or the rollbacks" } else { "inferred" },
            w.end - w.start
        );
    }
    clean(&out)
}

/// HTML escaping for text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const LABEL_WIDTH: f64 = 260.0;
const PLOT_WIDTH: f64 = 700.0;
const LANE: f64 = 22.0;

/// One row of the timeline: a hypothesis probe (markers), a method activity or a rollback (bars).
struct Lane<'a> {
    label: String,
    entries: Vec<&'a Entry<'a>>,
}

fn lanes<'a>(all: &'a [Entry<'a>]) -> Vec<Lane<'a>> {
    let mut out: Vec<Lane<'a>> = Vec::new();
    // Hypothesis probes share a lane per probe name across before/during/after.
    for e in all.iter().filter(|e| e.phase.hypothesis()) {
        let label = format!("hypothesis: {}", e.name);
        match out.iter_mut().find(|l| l.label == label) {
            Some(lane) => lane.entries.push(e),
            None => out.push(Lane { label, entries: vec![e] }),
        }
    }
    for e in all.iter().filter(|e| !e.phase.hypothesis()) {
        out.push(Lane { label: format!("{}: {}", e.phase.label(), e.name), entries: vec![e] });
    }
    out
}

/// A lane's label, cut to fit the label column (the full text is in the title).
fn lane_label(label: &str) -> String {
    const FITS: usize = 42;
    if label.chars().count() <= FITS {
        label.to_owned()
    } else {
        format!("{}...", label.chars().take(FITS - 3).collect::<String>())
    }
}

/// A step for axis ticks that gives at most ten of them.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 17] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
        3600.0, 7200.0,
    ];
    STEPS.into_iter().find(|s| span / s <= 10.0).unwrap_or(span / 10.0)
}

/// The timeline as an inline SVG: a time axis, one lane per hypothesis probe and per method or
/// rollback activity, bars for durations coloured by status, markers for probe results, and
/// the fault windows shaded behind.
pub fn timeline_svg(journal: &Value) -> String {
    let all = entries(journal);
    let windows = fault_windows(journal);
    let times = all
        .iter()
        .flat_map(|e| [e.start, e.end])
        .chain(
            ["start", "end"].map(|k| journal.get(k).and_then(Value::as_str).and_then(parse_time)),
        )
        .flatten();
    let (t0, t1) = times.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), t| (a.min(t), b.max(t)));
    if !t0.is_finite() {
        return "<p>No timed activity in this journal.</p>".into();
    }
    let span = (t1 - t0).max(0.001);
    let x = |t: f64| LABEL_WIDTH + (t - t0) / span * PLOT_WIDTH;
    let lanes = lanes(&all);
    #[allow(clippy::cast_precision_loss)] // reason: a handful of lanes
    let plot_height = lanes.len() as f64 * LANE;
    let height = plot_height + 60.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="timeline">"#
    );
    for w in &windows {
        let _ = write!(
            s,
            r#"<rect class="fault" x="{:.1}" y="0" width="{:.1}" height="{plot_height}"><title>fault window: {} ({:.2} s)</title></rect>"#,
            x(w.start),
            (x(w.end) - x(w.start)).max(1.0),
            escape(&w.label),
            w.end - w.start
        );
    }
    for (i, lane) in lanes.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)] // reason: a handful of lanes
        let y = i as f64 * LANE;
        let _ = write!(
            s,
            r#"<g class="lane"><line class="grid" x1="{LABEL_WIDTH}" x2="{}" y1="{:.1}" y2="{:.1}"/><text class="label" x="4" y="{:.1}"><title>{}</title>{}</text>"#,
            LABEL_WIDTH + PLOT_WIDTH,
            y + LANE / 2.0,
            y + LANE / 2.0,
            y + 15.0,
            escape(&lane.label),
            escape(&lane_label(&lane.label))
        );
        for e in &lane.entries {
            let Some(start) = e.start else { continue };
            let end = e.end.unwrap_or(t1);
            if e.phase.hypothesis() {
                let outcome = Outcome::of(e.run);
                let class = match outcome {
                    Outcome::Met => "met",
                    Outcome::NotMet => "notmet",
                    Outcome::Failed => "failed",
                };
                let _ = write!(
                    s,
                    r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="5"><title>{}: {}</title></circle>"#,
                    x((start + end) / 2.0),
                    y + LANE / 2.0,
                    escape(&e.phase.label()),
                    escape(&probe_line(e.run))
                );
            } else {
                let status = text(&e.run["status"]);
                let class = if status == "succeeded" { "ok" } else { "bad" };
                let why = exception(e.run).map(|x| format!(": {x}")).unwrap_or_default();
                let _ = write!(
                    s,
                    r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{} {}: {} in {}{}</title></rect>"#,
                    x(start),
                    y + 4.0,
                    (x(end) - x(start)).max(2.0),
                    LANE - 8.0,
                    escape(&e.kind),
                    escape(&e.name),
                    escape(&status),
                    seconds(e.end.map(|end| end - start)),
                    escape(&why)
                );
            }
        }
        s.push_str("</g>");
    }
    let step = tick_step(span);
    let axis_y = plot_height + 4.0;
    let _ = write!(
        s,
        r#"<g class="axis"><line x1="{LABEL_WIDTH}" x2="{}" y1="{axis_y}" y2="{axis_y}"/>"#,
        LABEL_WIDTH + PLOT_WIDTH
    );
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let _ = write!(
            s,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{axis_y}" y2="{1}"/><text x="{0:.1}" y="{2}" text-anchor="middle">+{3}s</text>"#,
            x(t0 + t),
            axis_y + 5.0,
            axis_y + 18.0,
            if step < 1.0 { format!("{t:.1}") } else { format!("{t:.0}") }
        );
        t += step;
    }
    s.push_str("</g>");
    let legend_y = axis_y + 40.0;
    let _ = write!(
        s,
        r#"<g class="legend"><rect class="ok" x="{LABEL_WIDTH}" y="{0}" width="14" height="10"/><text x="{1}" y="{2}">succeeded</text><rect class="bad" x="{3}" y="{0}" width="14" height="10"/><text x="{4}" y="{2}">failed</text><circle class="met" cx="{5}" cy="{6}" r="5"/><text x="{7}" y="{2}">met</text><circle class="notmet" cx="{8}" cy="{6}" r="5"/><text x="{9}" y="{2}">not met</text><circle class="failed" cx="{10}" cy="{6}" r="5"/><text x="{11}" y="{2}">probe failed</text><rect class="fault" x="{12}" y="{0}" width="14" height="10"/><text x="{13}" y="{2}">fault window</text></g>"#,
        legend_y - 9.0,
        LABEL_WIDTH + 18.0,
        legend_y,
        LABEL_WIDTH + 100.0,
        LABEL_WIDTH + 118.0,
        LABEL_WIDTH + 180.0,
        legend_y - 4.0,
        LABEL_WIDTH + 190.0,
        LABEL_WIDTH + 240.0,
        LABEL_WIDTH + 250.0,
        LABEL_WIDTH + 320.0,
        LABEL_WIDTH + 330.0,
        LABEL_WIDTH + 430.0,
        LABEL_WIDTH + 448.0,
    );
    s.push_str("</svg>");
    s
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.5em}\
table{border-collapse:collapse;width:100%;font-size:.9em}\
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.verdict{font-weight:bold;padding:.4em .8em;display:inline-block}\
.pass{background:#d8f5d8}.fail{background:#f9d6d6}code{font-size:.9em;word-break:break-all}\
svg.timeline{font-size:11px;overflow:visible}svg .grid{stroke:#eee}svg .axis line{stroke:#888}\
svg rect.ok{fill:#3a9d3a}svg rect.bad{fill:#d33}svg circle.met{fill:#3a9d3a}\
svg circle.notmet{fill:#f0a020}svg circle.failed{fill:#d33}svg rect.fault{fill:#f5c6c6;opacity:.6}\
td.met,td.succeeded{color:#1d6b1d}td.notmet{color:#a06000}td.failed{color:#b00}";

fn state_table(out: &mut String, caption: &str, state: &Value) {
    let _ = write!(out, "<h3>{}</h3>", escape(caption));
    if state.is_null() {
        out.push_str("<p>Not run.</p>");
        return;
    }
    out.push_str(
        "<table><tr><th>probe</th><th>checked value</th><th>tolerance</th><th>result</th></tr>",
    );
    for run in state["probes"].as_array().into_iter().flatten() {
        let outcome = Outcome::of(run);
        let (value, result) = match outcome {
            Outcome::Failed => {
                (String::new(), format!("failed: {}", exception(run).unwrap_or_default()))
            }
            Outcome::Met | Outcome::NotMet => {
                (short(&checked_value(run), 200), outcome.word().to_owned())
            }
        };
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td class="{}">{}</td></tr>"#,
            escape(&text(&run["activity"]["name"])),
            escape(&value),
            escape(&short(&run["activity"]["tolerance"], 200)),
            outcome.word().replace(' ', ""),
            escape(&result)
        );
    }
    out.push_str("</table>");
}

fn runs_table(out: &mut String, runs: &Value, t0: Option<f64>) {
    let runs = runs.as_array().map(Vec::as_slice).unwrap_or_default();
    if runs.is_empty() {
        out.push_str("<p>None.</p>");
        return;
    }
    out.push_str("<table><tr><th>activity</th><th>type</th><th>started</th><th>duration</th><th>status</th><th>output or failure</th></tr>");
    for run in runs {
        let started = match (t0, run["start"].as_str().and_then(parse_time)) {
            (Some(t0), Some(t)) => format!("+{:.2} s", t - t0),
            _ => "?".into(),
        };
        let detail = exception(run).unwrap_or_else(|| short(&run["output"], 300));
        let status = text(&run["status"]);
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="{}">{}</td><td><code>{}</code></td></tr>"#,
            escape(&text(&run["activity"]["name"])),
            escape(&text(&run["activity"]["type"])),
            started,
            seconds(run["duration"].as_f64()),
            escape(&status),
            escape(&status),
            escape(&detail)
        );
    }
    out.push_str("</table>");
}

/// The HTML report: a self-contained page (inline CSS, no script, no external asset).
pub fn html(journal: &Value) -> String {
    let title = text(&journal["experiment"]["title"]);
    let (words, ok) = verdict(journal);
    let t0 = journal["start"].as_str().and_then(parse_time);
    let version = journal
        .get("coffer-chaos-version")
        .map(|v| format!("coffer {}", text(v)))
        .or_else(|| journal.get("chaoslib-version").map(|v| format!("chaoslib {}", text(v))))
        .unwrap_or_else(|| "?".into());
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Chaos report: {t}</title><style>{CSS}</style></head><body><h1>{t}</h1><p>{d}</p><p class="verdict {c}">{v}</p>"#,
        t = escape(&title),
        d = escape(journal["experiment"]["description"].as_str().unwrap_or_default()),
        c = if ok { "pass" } else { "fail" },
        v = escape(&words)
    );
    let _ = write!(
        out,
        "<table><tr><th>started</th><td>{}</td><th>ended</th><td>{}</td><th>duration</th><td>{}</td></tr><tr><th>node</th><td>{}</td><th>platform</th><td>{}</td><th>runner</th><td>{}</td></tr></table>",
        escape(&text(&journal["start"])),
        escape(&text(&journal["end"])),
        seconds(journal["duration"].as_f64()),
        escape(&text(&journal["node"])),
        escape(&text(&journal["platform"])),
        escape(&version)
    );
    out.push_str("<h2>Timeline</h2>");
    out.push_str(&timeline_svg(journal));
    let windows = fault_windows(journal);
    if !windows.is_empty() {
        out.push_str("<ul>");
        for w in &windows {
            let _ = write!(
                out,
                "<li>Fault window <b>{}</b>: {:.2} s from +{:.2} s ({})</li>",
                escape(&w.label),
                w.end - w.start,
                t0.map_or(0.0, |t0| w.start - t0),
                if w.declared {
                    "the activity's output stated expires_at; ends then or at the rollbacks"
                } else {
                    "no activity stated expires_at: from the first action to the rollbacks"
                }
            );
        }
        out.push_str("</ul>");
    }
    let hypothesis = &journal["experiment"]["steady-state-hypothesis"]["title"];
    let _ = write!(out, "<h2>Steady-state hypothesis: {}</h2>", escape(&text(hypothesis)));
    let states = &journal["steady_states"];
    state_table(&mut out, "Before the method", &states["before"]);
    let during = states["during"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !during.is_empty() {
        let missed = during.iter().filter(|s| s["steady_state_met"] != Value::Bool(true)).count();
        let _ = write!(
            out,
            "<h3>During the method</h3><p>{} checks, {} not met.</p>",
            during.len(),
            missed
        );
        for (i, state) in during.iter().enumerate() {
            if state["steady_state_met"] != Value::Bool(true) {
                state_table(&mut out, &format!("Check #{} (not met)", i + 1), state);
            }
        }
    }
    state_table(&mut out, "After the method", &states["after"]);
    out.push_str("<h2>Method</h2>");
    runs_table(&mut out, &journal["run"], t0);
    out.push_str("<h2>Rollbacks</h2>");
    runs_table(&mut out, &journal["rollbacks"], t0);
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: test code
mod tests {
    use serde_json::json;

    use super::*;

    fn run(name: &str, kind: &str, start: &str, end: &str, status: &str, output: Value) -> Value {
        json!({"activity": {"type": kind, "name": name, "tolerance": 200,
                            "provider": {"type": "http", "url": "http://x"}},
               "output": output, "status": status, "start": start, "end": end, "duration": 1.0})
    }

    fn probe(name: &str, at: &str, met: bool) -> Value {
        let mut r =
            run(name, "probe", at, at, "succeeded", json!({"status": if met {200} else {503}}));
        r["tolerance_met"] = json!(met);
        r
    }

    const T: &str = "2026-01-02T03:04:";

    fn journal() -> Value {
        json!({
            "chaoslib-version": "1.44.0",
            "experiment": {"title": "outage <script>alert(1)</script>", "description": "d & e",
                           "steady-state-hypothesis": {"title": "app \"answers\""}},
            "start": format!("{T}00.000000+00:00"), "end": format!("{T}20.000000+00:00"),
            "duration": 20.0, "status": "completed", "deviated": true,
            "steady_states": {
                "before": {"steady_state_met": true, "probes": [probe("app-health", &format!("{T}01+00:00"), true)]},
                "during": [
                    {"steady_state_met": true, "probes": [probe("app-health", &format!("{T}05+00:00"), true)]},
                    {"steady_state_met": false, "probes": [probe("app-health", &format!("{T}08+00:00"), false)]}
                ],
                "after": {"steady_state_met": false, "probes": [probe("app-health", &format!("{T}15+00:00"), false)]}
            },
            "run": [
                run("partition", "action", &format!("{T}02+00:00"), &format!("{T}03+00:00"), "succeeded",
                    json!({"status": 0, "stdout": format!("{{\"expires_at\": \"{T}12+00:00\"}}"), "stderr": ""})),
                run("<b>load</b>", "action", &format!("{T}03+00:00"), &format!("{T}14+00:00"), "failed", Value::Null)
            ],
            "rollbacks": [run("heal", "action", &format!("{T}16+00:00"), &format!("{T}17+00:00"), "succeeded", json!({}))]
        })
    }

    #[test]
    fn times_parse_like_python_isoformat_and_rfc3339() {
        assert_eq!(parse_time("1970-01-01T00:00:00+00:00"), Some(0.0));
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Some(0.0));
        assert_eq!(parse_time("2024-02-29T00:00:00"), Some(1_709_164_800.0));
        assert_eq!(parse_time("2024-13-01T00:00:00"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn the_summary_gives_the_verdict_each_probe_against_its_tolerance_and_the_activities() {
        let s = summary(&journal());
        assert!(
            s.contains("Verdict: completed, deviated from the steady state (exit status 1)"),
            "{s}"
        );
        assert!(s.contains("before the method: met"), "{s}");
        assert!(s.contains("after the method: NOT MET"), "{s}");
        assert!(s.contains("app-health: 503 against tolerance 200: not met"), "{s}");
        assert!(s.contains("during the method: 2 checks, 1 not met"), "{s}");
        assert!(s.contains("action <b>load</b>: failed in 1.00 s"), "{s}");
        assert!(s.contains("Rollbacks:\n  - action heal: succeeded"), "{s}");
        assert!(s.contains("Fault window: partition"), "{s}");
    }

    #[test]
    fn the_summary_cannot_carry_terminal_escapes() {
        let mut j = journal();
        j["experiment"]["title"] = json!("evil\u{1b}[2Jtitle");
        let s = summary(&j);
        assert!(!s.contains('\u{1b}') && s.contains("evil\\u{1b}[2Jtitle"), "{s}");
    }

    #[test]
    fn declared_fault_windows_end_at_expiry_or_rollbacks() {
        let base = parse_time(&format!("{T}00+00:00")).unwrap();
        let w = fault_windows(&journal());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].label, "partition");
        assert!(w[0].declared);
        assert_eq!((w[0].start - base, w[0].end - base), (2.0, 12.0));
        // An expiry after the rollbacks: the rollbacks ended it.
        let mut j = journal();
        j["run"][0]["output"] =
            json!({"status": 200, "body": {"data": {"expires_at": base + 60.0}}});
        let w = fault_windows(&j);
        assert_eq!(w[0].end - base, 17.0);
    }

    #[test]
    fn without_expires_at_the_window_runs_from_the_first_action_to_the_rollbacks() {
        let base = parse_time(&format!("{T}00+00:00")).unwrap();
        let mut j = journal();
        j["run"][0]["output"] = json!({"status": 0, "stdout": "", "stderr": ""});
        let w = fault_windows(&j);
        assert_eq!(w.len(), 1);
        assert!(!w[0].declared);
        assert_eq!((w[0].start - base, w[0].end - base), (2.0, 17.0));
        j["rollbacks"] = json!([]);
        assert_eq!(fault_windows(&j)[0].end - base, 14.0);
        j["run"] = json!([]);
        assert!(fault_windows(&j).is_empty());
    }

    #[test]
    fn the_html_escapes_the_journal_and_is_self_contained() {
        let h = html(&journal());
        assert!(!h.contains("<script>") && !h.contains("<b>load"), "unescaped journal text");
        assert!(h.contains("outage &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(h.contains("&lt;b&gt;load&lt;/b&gt;"));
        assert!(h.contains("app &quot;answers&quot;"));
        assert!(h.contains("d &amp; e"));
        assert!(
            !h.contains("<script")
                && !h.contains("src=")
                && !h.contains("href=")
                && !h.contains("@import")
        );
        assert!(h.contains("<style>") && h.contains("<svg"));
        assert!(h.contains("chaoslib 1.44.0"), "a Chaos Toolkit journal reports too");
    }

    #[test]
    fn the_timeline_has_one_lane_per_probe_and_activity_markers_and_fault_windows() {
        let svg = timeline_svg(&journal());
        let lanes = svg.matches(r#"<g class="lane">"#).count();
        // One hypothesis lane (the same probe before, during, after), two method, one rollback.
        assert_eq!(lanes, 4, "{svg}");
        assert!(svg.contains("</title>hypothesis: app-health</text>"));
        assert!(svg.contains("</title>method: &lt;b&gt;load&lt;/b&gt;</text>"));
        assert!(svg.contains("</title>rollback: heal</text>"));
        let long = "x".repeat(100);
        assert_eq!(lane_label(&long).chars().count(), 42);
        assert_eq!(lane_label("short"), "short");
        // Markers: 2 met, 2 not met (+ one of each class in the legend); bars by status.
        assert_eq!(svg.matches(r#"<circle class="met""#).count(), 3);
        assert_eq!(svg.matches(r#"<circle class="notmet""#).count(), 3);
        assert_eq!(svg.matches(r#"<rect class="bad""#).count(), 2);
        assert_eq!(svg.matches(r#"<rect class="ok""#).count(), 3);
        assert_eq!(svg.matches(r#"<rect class="fault""#).count(), 2);
        // The axis spans the run: 20 s with a 2 s step.
        assert!(svg.contains(">+0s</text>") && svg.contains(">+20s</text>"), "{svg}");
        // A fault window from +2 s to +12 s: x from 260 + 2/20*700 = 330, width 350.
        assert!(svg.contains(r#"<rect class="fault" x="330.0" y="0" width="350.0""#), "{svg}");
    }

    #[test]
    fn a_journal_without_times_still_reports() {
        let j = json!({"status": "failed"});
        assert!(summary(&j).contains("Verdict: failed, no deviation (exit status 1)"));
        assert!(html(&j).contains("No timed activity"));
    }
}
