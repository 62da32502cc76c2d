//! Detection rules in gitleaks' TOML format (v8): `[[rules]]` with `id`, `description`, `regex`,
//! `secretGroup`, `entropy`, `keywords`, `path`, per-rule allowlists (`[rules.allowlist]` or
//! `[[rules.allowlists]]`), global allowlists (`[allowlist]` or `[[allowlists]]` with
//! `targetRules`), and `[extend]` (`useDefault`, `path`, `disabledRules`), so that existing rule
//! files load unchanged. Keys this scanner has no use for (`title`, `tags`, `[[rules.required]]`
//! composite rules) are ignored rather than refused, as their findings would only be a subset.
//!
//! Guarantees: a rule file either loads whole or is refused with the file and the rule id named;
//! regexes are compiled with a size limit, so a hostile rule file cannot exhaust memory; matching
//! is linear-time (the `regex` crate, RE2 semantics like Go's). Not done: Go-only syntax the
//! `regex` crate lacks (`\Q..\E`) is refused with the rule named, not translated.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// The rule set built into the binary (`coffer scan -print-rules` prints it).
pub(super) const DEFAULT_RULES: &str = include_str!("default-rules.toml");

/// How deep `[extend] path` may chain: enough for a base and an override, and no loop.
const MAX_EXTEND_DEPTH: usize = 3;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileConfig {
    #[serde(default)]
    extend: Option<Extend>,
    #[serde(default)]
    rules: Vec<FileRule>,
    #[serde(default)]
    allowlist: Option<FileAllowlist>,
    #[serde(default)]
    allowlists: Vec<FileAllowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Extend {
    #[serde(default)]
    use_default: bool,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    disabled_rules: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileRule {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    allowlist: Option<FileAllowlist>,
    #[serde(default)]
    allowlists: Vec<FileAllowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileAllowlist {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
}

/// What an allowlist's regexes are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegexTarget {
    Secret,
    Match,
    Line,
}

#[derive(Debug)]
pub(super) struct Allowlist {
    /// `condition = "AND"`: every criterion given must hold; else any one of them.
    all: bool,
    commits: Vec<String>,
    paths: Vec<Regex>,
    regexes: Vec<Regex>,
    target: RegexTarget,
    /// Lowercased: gitleaks compares stopwords without case.
    stopwords: Vec<String>,
    /// Global allowlists only: the rules it applies to (empty: all).
    target_rules: Vec<String>,
}

/// What a finding is checked against an allowlist with.
pub(super) struct Candidate<'a> {
    pub commit: Option<&'a str>,
    pub path: &'a str,
    pub secret: &'a str,
    pub matched: &'a str,
    pub line: &'a str,
}

impl Allowlist {
    pub(super) fn allows(&self, c: &Candidate<'_>) -> bool {
        let target = match self.target {
            RegexTarget::Secret => c.secret,
            RegexTarget::Match => c.matched,
            RegexTarget::Line => c.line,
        };
        let lower = c.secret.to_lowercase();
        let checks = [
            (!self.commits.is_empty())
                .then(|| c.commit.is_some_and(|id| self.commits.iter().any(|x| id.starts_with(x)))),
            (!self.paths.is_empty()).then(|| self.paths.iter().any(|r| r.is_match(c.path))),
            (!self.regexes.is_empty()).then(|| self.regexes.iter().any(|r| r.is_match(target))),
            (!self.stopwords.is_empty())
                .then(|| self.stopwords.iter().any(|w| lower.contains(w.as_str()))),
        ];
        let mut given = checks.iter().flatten().peekable();
        if given.peek().is_none() {
            return false;
        }
        if self.all { given.all(|&b| b) } else { given.any(|&b| b) }
    }

    fn applies_to(&self, rule_id: &str) -> bool {
        self.target_rules.is_empty() || self.target_rules.iter().any(|r| r == rule_id)
    }
}

#[derive(Debug)]
pub(super) struct Rule {
    pub id: String,
    pub description: String,
    pub regex: Option<Regex>,
    /// 0: the first non-empty capture group, else the whole match (gitleaks' rule).
    pub secret_group: usize,
    pub entropy: Option<f64>,
    /// Lowercased; a fragment must contain one of them (without case) for the rule to run.
    pub keywords: Vec<String>,
    pub path: Option<Regex>,
    pub allowlists: Vec<Allowlist>,
}

#[derive(Debug)]
pub(super) struct RuleSet {
    pub rules: Vec<Rule>,
    pub global: Vec<Allowlist>,
}

impl RuleSet {
    /// The embedded defaults.
    pub(super) fn builtin() -> Result<Self> {
        let cfg = parse(DEFAULT_RULES, "the built-in rules")?;
        compile(vec![("the built-in rules".into(), cfg)])
    }

    /// A gitleaks rule file; with `[extend] useDefault = true` it adds to (and by id overrides)
    /// the built-in rules, else it replaces them, as in gitleaks.
    pub(super) fn load(path: &Path) -> Result<Self> {
        let mut layers = Vec::new();
        let mut next = Some(path.to_path_buf());
        let mut disabled = HashSet::new();
        let mut use_default = false;
        while let Some(p) = next.take() {
            if layers.len() == MAX_EXTEND_DEPTH {
                bail!(
                    "{}: [extend] path chains deeper than {MAX_EXTEND_DEPTH} files",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read rule file {}", p.display()))?;
            let name = p.display().to_string();
            let cfg = parse(&text, &name)?;
            if let Some(ext) = &cfg.extend {
                use_default |= ext.use_default;
                disabled.extend(ext.disabled_rules.iter().cloned());
                next = ext.path.as_ref().map(|x| relative_to(&p, x));
            }
            layers.push((name, cfg));
        }
        if use_default {
            layers.push(("the built-in rules".into(), parse(DEFAULT_RULES, "the built-in rules")?));
        }
        let mut set = compile(layers)?;
        set.rules.retain(|r| !disabled.contains(&r.id));
        Ok(set)
    }
}

fn relative_to(file: &Path, other: &str) -> PathBuf {
    let o = Path::new(other);
    if o.is_absolute() { o.to_path_buf() } else { file.parent().unwrap_or(Path::new(".")).join(o) }
}

fn parse(text: &str, name: &str) -> Result<FileConfig> {
    toml::from_str(text).with_context(|| format!("{name} is not a gitleaks rule file"))
}

/// Layers first to last, most specific first: a rule id seen in an earlier layer wins.
fn compile(layers: Vec<(String, FileConfig)>) -> Result<RuleSet> {
    let mut rules: Vec<Rule> = Vec::new();
    let mut global = Vec::new();
    for (name, cfg) in layers {
        for r in cfg.rules {
            if rules.iter().any(|x| x.id == r.id) {
                continue;
            }
            rules.push(compile_rule(r, &name)?);
        }
        for a in cfg.allowlist.into_iter().chain(cfg.allowlists) {
            global.push(compile_allowlist(a, &format!("{name}: [allowlist]"))?);
        }
    }
    Ok(RuleSet { rules, global })
}

fn compile_rule(r: FileRule, file: &str) -> Result<Rule> {
    let at = format!("{file}: rule {:?}", r.id);
    if r.id.is_empty() {
        bail!("{file}: a rule has no id");
    }
    if r.regex.is_none() && r.path.is_none() {
        bail!("{at} has neither regex nor path");
    }
    let regex =
        r.regex.as_deref().map(|x| compile_regex(x, &format!("{at}: regex"))).transpose()?;
    let groups = regex.as_ref().map_or(0, |x| x.captures_len() - 1);
    let secret_group = r.secret_group.unwrap_or(0);
    if secret_group > groups {
        bail!("{at}: secretGroup {secret_group} but the regex has {groups} group(s)");
    }
    if let Some(e) = r.entropy
        && !(0.0..=8.0).contains(&e)
    {
        bail!("{at}: entropy {e} is outside 0..8 (bits per character)");
    }
    let mut allowlists = Vec::new();
    for a in r.allowlist.into_iter().chain(r.allowlists) {
        allowlists.push(compile_allowlist(a, &format!("{at}: allowlist"))?);
    }
    Ok(Rule {
        id: r.id,
        description: r.description,
        regex,
        secret_group,
        entropy: r.entropy.filter(|e| *e > 0.0),
        keywords: r.keywords.iter().map(|k| k.to_lowercase()).collect(),
        path: r.path.as_deref().map(|x| compile_regex(x, &format!("{at}: path"))).transpose()?,
        allowlists,
    })
}

fn compile_allowlist(a: FileAllowlist, at: &str) -> Result<Allowlist> {
    let all = match a.condition.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("OR") => false,
        Some("AND") => true,
        Some(other) => bail!("{at}: condition {other:?} is neither OR nor AND"),
    };
    let target = match a.regex_target.as_deref() {
        None | Some("secret") => RegexTarget::Secret,
        Some("match") => RegexTarget::Match,
        Some("line") => RegexTarget::Line,
        Some(other) => bail!("{at}: regexTarget {other:?} is not secret, match or line"),
    };
    Ok(Allowlist {
        all,
        commits: a.commits,
        paths: a
            .paths
            .iter()
            .map(|p| compile_regex(p, &format!("{at}: paths")))
            .collect::<Result<_>>()?,
        regexes: a
            .regexes
            .iter()
            .map(|p| compile_regex(p, &format!("{at}: regexes")))
            .collect::<Result<_>>()?,
        target,
        stopwords: a.stopwords.iter().map(|w| w.to_lowercase()).collect(),
        target_rules: a.target_rules,
    })
}

fn compile_regex(pattern: &str, at: &str) -> Result<Regex> {
    RegexBuilder::new(pattern)
        .size_limit(8 << 20)
        .dfa_size_limit(8 << 20)
        .build()
        .with_context(|| format!("{at}: not a regex this scanner can run"))
}

impl RuleSet {
    /// Whether a global allowlist that applies to `rule_id` allows the candidate.
    pub(super) fn globally_allowed(&self, rule_id: &str, c: &Candidate<'_>) -> bool {
        self.global.iter().any(|a| a.applies_to(rule_id) && a.allows(c))
    }

    /// Whether a path is allowed for every rule (global allowlists with only paths): such files
    /// are not read at all.
    pub(super) fn path_skipped(&self, path: &str) -> bool {
        self.global.iter().any(|a| {
            a.target_rules.is_empty()
                && a.commits.is_empty()
                && a.regexes.is_empty()
                && a.stopwords.is_empty()
                && a.paths.iter().any(|r| r.is_match(path))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand<'a>(secret: &'a str, path: &'a str) -> Candidate<'a> {
        Candidate { commit: Some("abc123"), path, secret, matched: secret, line: secret }
    }

    #[test]
    fn the_builtin_rules_compile_and_have_unique_ids() {
        let set = RuleSet::builtin().expect("built-in rules");
        assert!(set.rules.len() >= 20, "{}", set.rules.len());
        let ids: HashSet<_> = set.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), set.rules.len());
    }

    #[test]
    fn allowlist_conditions_or_and() {
        let a = compile_allowlist(
            FileAllowlist {
                paths: vec![r"^test/".into()],
                stopwords: vec!["EXAMPLE".into()],
                ..Default::default()
            },
            "t",
        )
        .expect("compile");
        assert!(a.allows(&cand("real-secret", "test/x")));
        assert!(a.allows(&cand("myexamplekey", "src/x")));
        assert!(!a.allows(&cand("real-secret", "src/x")));
        let and = compile_allowlist(
            FileAllowlist {
                condition: Some("AND".into()),
                paths: vec![r"^test/".into()],
                commits: vec!["abc".into()],
                ..Default::default()
            },
            "t",
        )
        .expect("compile");
        assert!(and.allows(&cand("s", "test/x")));
        let other_commit =
            Candidate { commit: Some("def"), path: "test/x", secret: "s", matched: "s", line: "s" };
        assert!(!and.allows(&other_commit));
    }

    #[test]
    fn bad_rules_are_refused_with_their_id() {
        let e = compile_rule(
            FileRule { id: "r1".into(), regex: Some("(unclosed".into()), ..Default::default() },
            "f.toml",
        )
        .expect_err("bad regex");
        assert!(format!("{e:#}").contains("\"r1\""), "{e:#}");
        let e = compile_rule(
            FileRule {
                id: "r2".into(),
                regex: Some("a(b)".into()),
                secret_group: Some(2),
                ..Default::default()
            },
            "f.toml",
        )
        .expect_err("group");
        assert!(format!("{e:#}").contains("secretGroup 2"), "{e:#}");
        assert!(
            compile_rule(FileRule { id: "r3".into(), ..Default::default() }, "f").is_err(),
            "a rule needs a regex or a path"
        );
    }
}
