//! `coffer scan`: finds secrets in files, directories, git history and container image archives,
//! asks the Coffer server which of them are live without sending it any of them in clear
//! (`sys/leaks/check`, keyed hashes only), and with `-respond` has the server revoke or rotate
//! them (`sys/leaks/report`). docs/scan.md is the user's guide; docs/leaks.md the server side.
//!
//! Guarantees: a found secret is never printed in full (at most its first 4 characters, fewer for
//! short ones), never logged and never sent anywhere in clear; candidates live in buffers wiped
//! on drop. The exit status says what was found (see [`EXIT_LEAK`], [`EXIT_ERROR`],
//! [`EXIT_USAGE`]). Not done: scanning a remote repository or registry (clone or `docker save`
//! first), decoding encoded values before matching.

mod detect;
mod fs;
mod git;
mod image;
mod live;
mod report;
mod rules;

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};

use super::client::{Global, client};
use detect::{Detector, Hit, Place};
use live::{Checker, Match, Unverified};

/// A leak at or above `-fail-on` was found (by default: a live one).
pub(crate) const EXIT_LEAK: u8 = 1;
/// The scan could not be completed: a target unreadable, a repository or archive damaged, or
/// `-respond` refused.
pub(crate) const EXIT_ERROR: u8 = 2;
/// Bad flags or arguments, an unreadable or invalid rule or baseline file (sysexits' EX_USAGE).
pub(crate) const EXIT_USAGE: u8 = 64;

/// `coffer scan --help`: set on the command in `cli`, where the one-line summary is.
pub(crate) const LONG_ABOUT: &str = "Find secrets in files, directories, git history (every blob reachable from every \
reference) and container image archives (`docker save` / `podman save` tarballs: every layer, files \
deleted by later layers included, and the image config's Env and history), and ask the Coffer server \
which are live.\n\n\
Detectors: Coffer's own tokens (cfs_, cfb_, cfw_, cfa_; confirmed offline by their checksum), rules in \
gitleaks' TOML format (a built-in set, or -rules=FILE), and with -entropy=BITS any long string above \
that Shannon entropy.\n\n\
Liveness: with the usual server and token (COFFER_ADDR/VAULT_ADDR or -address, COFFER_TOKEN/VAULT_TOKEN, \
-ca-cert), each candidate is hashed here with the server's key (HMAC-SHA256 from sys/leaks/check) and \
only the hashes are sent. Each finding is then `live` (with what it is: token, KV field, lease...), \
`not live` (matches nothing live in Coffer; a third-party credential may still be valid where it was \
issued) or `unverified` (no server reachable, no permission, or -offline; the reason is printed).\n\n\
Exit status: 0 nothing at or above -fail-on; 1 a leak at or above -fail-on (default: live); 2 the scan \
could not be completed; 64 usage error (bad flag, rule file or baseline). See docs/scan.md.";

pub(crate) const AFTER_HELP: &str = "Examples:\n  coffer scan .                                  # a directory, or a repository's history\n  \
coffer scan -format=sarif . > coffer.sarif      # for code-scanning UIs\n  \
coffer scan -offline -fail-on=any app.tar       # an image archive, no server\n  \
coffer scan -write-baseline=.coffer-baseline.json .\n  \
coffer scan -baseline=.coffer-baseline.json .   # report only new findings\n  \
coffer scan -respond -dry-run .                 # what -respond would revoke or rotate";

#[derive(Args, Debug)]
pub(crate) struct ScanArgs {
    /// Files, directories, git repositories or image archives (.tar, .tar.gz) to scan
    #[arg(value_name = "TARGET", required_unless_present = "print_rules")]
    targets: Vec<PathBuf>,
    /// Output: a table, JSON, or SARIF 2.1.0 for code-scanning UIs
    #[arg(id = "scan_format", long = "format", value_name = "FORMAT", value_enum, default_value_t = ScanFormat::Table)]
    format: ScanFormat,
    /// Rules in gitleaks' TOML format; they replace the built-in ones unless the file has
    /// `[extend] useDefault = true`
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Also report any string of 20 or more base64/hex characters whose Shannon entropy is above
    /// BITS per character (4.5 is a good start)
    #[arg(long, value_name = "BITS")]
    entropy: Option<f64>,
    /// Scan a git repository's working tree as plain files instead of its history
    #[arg(long = "no-git")]
    no_git: bool,
    /// Skip files and blobs larger than this many bytes
    #[arg(long = "max-file-size", value_name = "BYTES", default_value_t = 10 << 20)]
    max_file_size: u64,
    /// Do not contact the server: every finding is `unverified`
    #[arg(long)]
    offline: bool,
    /// Exit 1 when a finding at this level or above remains: live, unverified (live or
    /// unverified) or any
    #[arg(long = "fail-on", value_enum, default_value_t = FailOn::Live)]
    fail_on: FailOn,
    /// Ignore the findings listed in FILE (written by -write-baseline, or a -format=json report)
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write the findings of this scan to FILE as a baseline (no secret in it), then report as usual
    #[arg(long = "write-baseline", value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    /// Have the server respond to the live findings: revoke tokens and leases, destroy secret
    /// IDs, rotate static roles and opted-in KV secrets (sys/leaks/report)
    #[arg(long)]
    respond: bool,
    /// With -respond: list what the server would do, change nothing
    #[arg(long = "dry-run", requires = "respond")]
    dry_run: bool,
    /// No progress line on stderr (there is none when stderr is not a terminal anyway)
    #[arg(long)]
    quiet: bool,
    /// Print the built-in rules (gitleaks TOML) and exit
    #[arg(long = "print-rules")]
    print_rules: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScanFormat {
    Table,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FailOn {
    Live,
    Unverified,
    Any,
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    File,
    Git,
    Image,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Git => "git",
            Source::Image => "image",
        }
    }
}

#[derive(Debug, Clone)]
struct Origin {
    pub source: Source,
    /// The target as given on the command line.
    pub target: String,
    /// Inside the target: relative to a directory, repository or layer root.
    pub path: String,
    pub commit: Option<String>,
    pub layer: Option<String>,
    pub note: Option<String>,
}

impl Origin {
    fn new(source: Source, target: &str, path: &str) -> Self {
        Self {
            source,
            target: target.to_owned(),
            path: path.to_owned(),
            commit: None,
            layer: None,
            note: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Live,
    NotLive,
    Unverified,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::NotLive => "not live",
            Status::Unverified => "unverified",
        }
    }
}

struct Finding {
    pub hit: Hit,
    pub origin: Origin,
    pub status: Status,
    /// Why it is unverified, when it is.
    pub reason: Option<String>,
    /// Where it is live (several places when the value is stored in several).
    pub matched: Vec<Match>,
    /// The keyed hash sent to the server (for -respond), when it was checked.
    pub hash: Option<String>,
}

impl Finding {
    /// Stable across runs while the finding stays where it is; holds no part of the secret.
    fn fingerprint(&self) -> String {
        let o = &self.origin;
        let at = o.commit.as_deref().or(o.layer.as_deref()).unwrap_or("-");
        format!("{}:{at}:{}:{}:{}", o.source.name(), o.path, self.hit.rule_id, self.hit.line)
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct Stats {
    /// Files, blobs, layer files and config sections read.
    pub scanned: u64,
    pub bytes: u64,
    pub commits: u64,
    pub layers: u64,
    pub binary: u64,
    pub too_large: u64,
    pub symlinks: u64,
}

/// The state of one run: what is found, counted and warned about.
struct Scanner<'a> {
    pub detector: &'a Detector,
    pub max_size: u64,
    pub findings: Vec<Finding>,
    pub stats: Stats,
    pub warnings: Vec<String>,
    progress: Progress,
}

impl Scanner<'_> {
    /// One file's (blob's) content.
    fn blob(&mut self, origin: &Origin, bytes: &[u8]) {
        let place = Place { path: &origin.path, commit: origin.commit.as_deref() };
        let mut hits = self.detector.scan_path(&place);
        self.stats.scanned += 1;
        self.stats.bytes += bytes.len() as u64;
        if detect::is_binary(bytes) {
            self.stats.binary += 1;
        } else {
            hits.extend(self.detector.scan(&String::from_utf8_lossy(bytes), &place));
        }
        for hit in hits {
            self.findings.push(Finding {
                hit,
                origin: origin.clone(),
                status: Status::Unverified,
                reason: None,
                matched: Vec::new(),
                hash: None,
            });
        }
        self.progress.tick(&self.stats, self.findings.len());
    }

    /// A file over the size limit: path rules still apply.
    fn too_large(&mut self, origin: &Origin) {
        self.stats.too_large += 1;
        let place = Place { path: &origin.path, commit: origin.commit.as_deref() };
        for hit in self.detector.scan_path(&place) {
            self.findings.push(Finding {
                hit,
                origin: origin.clone(),
                status: Status::Unverified,
                reason: None,
                matched: Vec::new(),
                hash: None,
            });
        }
    }

    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }
}

/// A one-line progress report on stderr, at most five times a second, only on a terminal.
struct Progress {
    enabled: bool,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn tick(&mut self, s: &Stats, findings: usize) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last = Instant::now();
        self.shown = true;
        eprint!(
            "\r\x1b[2Kscanning: {} items, {:.1} MiB, {} commits, {} layers, {findings} findings",
            s.scanned,
            s.bytes as f64 / 1048576.0,
            s.commits,
            s.layers
        );
        let _ = std::io::stderr().flush();
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// A usage error: exits [`EXIT_USAGE`].
#[derive(Debug)]
struct Usage(anyhow::Error);

pub(crate) async fn run(g: &Global, a: ScanArgs) -> Result<ExitCode> {
    match scan(g, a).await {
        Ok(code) => Ok(code),
        Err(e) => match e.downcast::<Usage>() {
            Ok(Usage(u)) => {
                eprintln!("Error: {u:#}");
                Ok(ExitCode::from(EXIT_USAGE))
            }
            Err(e) => {
                eprintln!("Error: {e:#}");
                Ok(ExitCode::from(EXIT_ERROR))
            }
        },
    }
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Usage(e))
}

async fn scan(g: &Global, a: ScanArgs) -> Result<ExitCode> {
    if a.print_rules {
        print!("{}", rules::DEFAULT_RULES);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(e) = a.entropy
        && !(0.0..8.0).contains(&e)
    {
        return Err(usage(anyhow!("-entropy={e}: bits per character are between 0 and 8")));
    }
    if a.respond && a.offline {
        return Err(usage(anyhow!("-respond needs the server: it cannot be used with -offline")));
    }
    let rule_set = match &a.rules {
        Some(p) => rules::RuleSet::load(p).map_err(usage)?,
        None => rules::RuleSet::builtin()?,
    };
    let baseline = match &a.baseline {
        Some(p) => report::read_baseline(p).map_err(usage)?,
        None => HashSet::new(),
    };
    for t in &a.targets {
        if !t.exists() {
            return Err(usage(anyhow!("{}: no such file or directory", t.display())));
        }
    }
    let detector = Detector { rules: rule_set, entropy: a.entropy };
    let mut s = Scanner {
        detector: &detector,
        max_size: a.max_file_size,
        findings: Vec::new(),
        stats: Stats::default(),
        warnings: Vec::new(),
        progress: Progress {
            enabled: !a.quiet && std::io::stderr().is_terminal(),
            last: Instant::now(),
            shown: false,
        },
    };
    let mut failed = false;
    for t in &a.targets {
        let name = t.display().to_string();
        let result = if t.is_dir() && !a.no_git && git::is_repository(t) {
            git::scan_repository(&mut s, t, &name)
        } else if t.is_file() && image::is_archive(t) {
            image::scan_archive(&mut s, t, &name)
        } else {
            fs::scan_target(&mut s, t, &name)
        };
        if let Err(e) = result {
            s.progress.clear();
            eprintln!("Error: {e:#}");
            failed = true;
        }
    }
    s.progress.clear();
    for w in &s.warnings {
        eprintln!("Warning: {w}");
    }
    let mut findings = std::mem::take(&mut s.findings);
    findings.sort_by(|x, y| {
        let key = |f: &Finding| {
            (f.origin.target.clone(), f.origin.path.clone(), f.hit.line, f.hit.column)
        };
        key(x).cmp(&key(y))
    });
    let stats = std::mem::take(&mut s.stats);
    // Before the baseline is applied: with both flags, the file is refreshed, not emptied.
    if let Some(p) = &a.write_baseline {
        report::write_baseline(p, &findings)
            .with_context(|| format!("cannot write the baseline {}", p.display()))?;
    }
    let before = findings.len();
    findings.retain(|f| !baseline.contains(&f.fingerprint()));
    let baselined = before - findings.len();

    let verification = if a.offline {
        Err(Unverified::Other("not checked (-offline)".into()))
    } else if findings.iter().all(|f| f.hit.secret.is_empty()) {
        Ok(None)
    } else {
        match Checker::connect(client(g)?).await {
            Ok(c) => Ok(Some(c)),
            Err(u) => Err(u),
        }
    };
    let mut checker = None;
    let verification = match verification {
        Ok(Some(mut c)) => {
            let verdict = verify(&mut c, &mut findings).await;
            checker = Some(c);
            verdict
        }
        Ok(None) => Ok(()),
        Err(u) => Err(u),
    };
    if let Err(u) = &verification {
        for f in &mut findings {
            f.reason = Some(u.to_string());
        }
    }
    for f in findings.iter_mut().filter(|f| f.hit.secret.is_empty()) {
        f.reason = Some("a path rule: there is no value to check".into());
    }

    let response = if a.respond {
        let live: Vec<String> = {
            let mut seen = HashSet::new();
            findings
                .iter()
                .filter(|f| f.status == Status::Live)
                .filter_map(|f| f.hash.clone())
                .filter(|h| seen.insert(h.clone()))
                .collect()
        };
        match (&checker, &verification) {
            (Some(c), Ok(())) => match c.report(&live, a.dry_run).await {
                Ok(actions) => Some(actions),
                Err(e) => {
                    eprintln!("{}", super::client::explain(&e));
                    failed = true;
                    None
                }
            },
            (_, Err(u)) => {
                eprintln!("Error: -respond: cannot reach sys/leaks/report: {u}");
                failed = true;
                None
            }
            (None, Ok(())) => Some(Vec::new()),
        }
    } else {
        None
    };

    let summary = report::Summary {
        stats: &stats,
        baselined,
        verification: verification.as_ref().err().map(ToString::to_string),
        dry_run: a.dry_run,
    };
    match a.format {
        ScanFormat::Table => report::table(&findings, &summary, response.as_deref()),
        ScanFormat::Json => report::json(&findings, &summary, response.as_deref())?,
        ScanFormat::Sarif => {
            report::sarif(&findings)?;
            if let Some(actions) = &response {
                // stdout is the SARIF document: the actions go to stderr.
                eprint!("{}", report::actions_table(actions, a.dry_run));
            }
        }
    }

    if failed {
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    let leak = findings.iter().any(|f| match a.fail_on {
        FailOn::Live => f.status == Status::Live,
        FailOn::Unverified => f.status != Status::NotLive,
        FailOn::Any => true,
    });
    Ok(if leak { ExitCode::from(EXIT_LEAK) } else { ExitCode::SUCCESS })
}

/// Checks every distinct candidate once; marks each finding live or not live.
async fn verify(c: &mut Checker, findings: &mut [Finding]) -> Result<(), Unverified> {
    // Distinct values, borrowed from the findings: no extra copy of a secret is made.
    let mut distinct: Vec<&str> = Vec::new();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    for f in findings.iter().filter(|f| !f.hit.secret.is_empty()) {
        let s: &str = &f.hit.secret;
        slot.entry(s).or_insert_with(|| {
            distinct.push(s);
            distinct.len() - 1
        });
    }
    let live = c.check(&distinct).await?;
    let verdicts: Vec<(Option<Vec<Match>>, String)> =
        distinct.iter().enumerate().map(|(i, s)| (live.get(&i).cloned(), c.hash(s))).collect();
    let per_finding: Vec<Option<usize>> = findings
        .iter()
        .map(|f| (!f.hit.secret.is_empty()).then(|| slot[f.hit.secret.as_str()]))
        .collect();
    for (f, i) in findings.iter_mut().zip(per_finding) {
        let Some(i) = i else { continue };
        let (m, hash) = &verdicts[i];
        f.hash = Some(hash.clone());
        match m {
            Some(m) => {
                f.status = Status::Live;
                f.matched = m.clone();
            }
            None => f.status = Status::NotLive,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scanner with no progress line, for the target modules' tests.
    pub(super) fn scanner(detector: &Detector) -> Scanner<'_> {
        Scanner {
            detector,
            max_size: 1 << 20,
            findings: Vec::new(),
            stats: Stats::default(),
            warnings: Vec::new(),
            progress: Progress { enabled: false, last: Instant::now(), shown: false },
        }
    }
}
