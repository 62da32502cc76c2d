//! Finding candidate secrets in one piece of text: Coffer's own tokens (by shape and CRC-32
//! checksum, so a random look-alike is not reported), the gitleaks-format rules, and, when asked,
//! any long string whose Shannon entropy is above a threshold.
//!
//! Guarantees: every hit carries the exact bytes found (no trimming: the server's index hashes
//! values as they are, see docs/leaks.md), in a buffer wiped on drop; the same secret on the same
//! place is reported once, by the most specific detector (Coffer tokens, then rules in file order,
//! then entropy). Not done: decoding (base64, URL encoding) before matching; a secret split
//! across lines is found only by a rule written for it.

use std::collections::HashSet;
use std::sync::LazyLock;

use coffer_api::token_format::{self, TokenKind};
use regex::Regex;
use zeroize::Zeroizing;

use super::rules::{Candidate, Rule, RuleSet};

/// The shape of every new Coffer credential; the checksum is checked after.
#[allow(clippy::unwrap_used)] // a constant pattern, covered by the tests
static COFFER_TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:cfs|cfb|cfw|cfa)_[0-9A-Za-z]{36}\b").unwrap());

/// Candidates for the entropy check: long runs of base64/base64url/hex characters.
#[allow(clippy::unwrap_used)] // a constant pattern, covered by the tests
static ENTROPY_CANDIDATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_-]{20,512}").unwrap());

pub(super) const ENTROPY_RULE: &str = "high-entropy-string";

/// A candidate found in a piece of text.
pub(super) struct Hit {
    pub rule_id: String,
    pub description: String,
    /// Empty for rules that match a file's path only.
    pub secret: Zeroizing<String>,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub entropy: f64,
}

pub(super) struct Detector {
    pub rules: RuleSet,
    /// `-entropy=BITS`: report any candidate string above it (off when `None`).
    pub entropy: Option<f64>,
}

/// Where the text was found, for allowlists.
pub(super) struct Place<'a> {
    pub path: &'a str,
    pub commit: Option<&'a str>,
}

impl Detector {
    /// Whether a path is excluded from reading by a global allowlist.
    pub(super) fn skips_path(&self, path: &str) -> bool {
        self.rules.path_skipped(path)
    }

    /// Hits of rules that match a file by its path alone (e.g. `id_rsa`).
    pub(super) fn scan_path(&self, place: &Place<'_>) -> Vec<Hit> {
        let mut out = Vec::new();
        for rule in self.rules.rules.iter().filter(|r| r.regex.is_none()) {
            let Some(p) = &rule.path else { continue };
            if !p.is_match(place.path) {
                continue;
            }
            let c = Candidate {
                commit: place.commit,
                path: place.path,
                secret: "",
                matched: "",
                line: "",
            };
            if self.allowed(rule, &c) {
                continue;
            }
            out.push(Hit {
                rule_id: rule.id.clone(),
                description: rule.description.clone(),
                secret: Zeroizing::new(String::new()),
                line: 1,
                column: 1,
                entropy: 0.0,
            });
        }
        out
    }

    pub(super) fn scan(&self, text: &str, place: &Place<'_>) -> Vec<Hit> {
        let mut out = Vec::new();
        // By place and length rather than by value, so no copy of a secret is kept.
        let mut seen: HashSet<(usize, usize, usize)> = HashSet::new();
        let mut push = |out: &mut Vec<Hit>, h: Hit| {
            if seen.insert((h.line, h.column, h.secret.len())) {
                out.push(h);
            }
        };
        for m in COFFER_TOKEN.find_iter(text) {
            let Some(kind) = token_format::is_valid(m.as_str()) else { continue };
            let id = coffer_rule_id(kind);
            let c = candidate(text, m.start(), m.end(), m.as_str(), m.as_str(), place);
            if self.rules.globally_allowed(id, &c) {
                continue;
            }
            let (line, column) = line_col(text, m.start());
            push(
                &mut out,
                Hit {
                    rule_id: id.into(),
                    description: coffer_description(kind).into(),
                    secret: Zeroizing::new(m.as_str().to_owned()),
                    line,
                    column,
                    entropy: shannon(m.as_str()),
                },
            );
        }
        let lower = text.to_ascii_lowercase();
        for rule in &self.rules.rules {
            let Some(re) = &rule.regex else { continue };
            if let Some(p) = &rule.path
                && !p.is_match(place.path)
            {
                continue;
            }
            if !rule.keywords.is_empty()
                && !rule.keywords.iter().any(|k| lower.contains(k.as_str()))
            {
                continue;
            }
            for caps in re.captures_iter(text) {
                let Some(whole) = caps.get(0) else { continue };
                let secret = if rule.secret_group > 0 {
                    caps.get(rule.secret_group)
                } else {
                    caps.iter().skip(1).flatten().find(|g| !g.as_str().is_empty())
                }
                .unwrap_or(whole);
                if secret.as_str().is_empty() {
                    continue;
                }
                let e = shannon(secret.as_str());
                // gitleaks keeps a finding only when its entropy is above the rule's.
                if rule.entropy.is_some_and(|min| e <= min) {
                    continue;
                }
                let c = candidate(
                    text,
                    whole.start(),
                    whole.end(),
                    secret.as_str(),
                    whole.as_str(),
                    place,
                );
                if self.allowed(rule, &c) {
                    continue;
                }
                let (line, column) = line_col(text, secret.start());
                push(
                    &mut out,
                    Hit {
                        rule_id: rule.id.clone(),
                        description: rule.description.clone(),
                        secret: Zeroizing::new(secret.as_str().to_owned()),
                        line,
                        column,
                        entropy: e,
                    },
                );
            }
        }
        if let Some(min) = self.entropy {
            for m in ENTROPY_CANDIDATE.find_iter(text) {
                let e = shannon(m.as_str());
                if e <= min {
                    continue;
                }
                let c = candidate(text, m.start(), m.end(), m.as_str(), m.as_str(), place);
                if self.rules.globally_allowed(ENTROPY_RULE, &c) {
                    continue;
                }
                let (line, column) = line_col(text, m.start());
                push(
                    &mut out,
                    Hit {
                        rule_id: ENTROPY_RULE.into(),
                        description: format!(
                            "String with Shannon entropy above {min} bits per character"
                        ),
                        secret: Zeroizing::new(m.as_str().to_owned()),
                        line,
                        column,
                        entropy: e,
                    },
                );
            }
        }
        out
    }

    fn allowed(&self, rule: &Rule, c: &Candidate<'_>) -> bool {
        rule.allowlists.iter().any(|a| a.allows(c)) || self.rules.globally_allowed(&rule.id, c)
    }
}

fn candidate<'a>(
    text: &'a str,
    start: usize,
    end: usize,
    secret: &'a str,
    matched: &'a str,
    place: &Place<'a>,
) -> Candidate<'a> {
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
    Candidate {
        commit: place.commit,
        path: place.path,
        secret,
        matched,
        line: &text[line_start..line_end],
    }
}

pub(super) fn coffer_rule_id(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Service => "coffer-service-token",
        TokenKind::Batch => "coffer-batch-token",
        TokenKind::Wrapping => "coffer-wrapping-token",
        TokenKind::SecretId => "coffer-approle-secret-id",
    }
}

fn coffer_description(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Service => "Coffer service token (checksum verified)",
        TokenKind::Batch => "Coffer batch token (checksum verified)",
        TokenKind::Wrapping => "Coffer response-wrapping token (checksum verified)",
        TokenKind::SecretId => "Coffer AppRole secret_id (checksum verified)",
    }
}

/// 1-based line and character column of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..at].chars().count() + 1)
}

/// Shannon entropy in bits per character.
pub(super) fn shannon(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::<char, usize>::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_default() += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Text files only: a NUL byte in the first 8 KiB marks a binary file, as git decides.
pub(super) fn is_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8192)].contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> Detector {
        Detector { rules: RuleSet::builtin().expect("rules"), entropy: None }
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.rule_id.as_str()).collect()
    }

    const PLACE: Place<'static> = Place { path: "app/config.env", commit: None };

    #[test]
    fn coffer_tokens_are_found_only_with_a_good_checksum() {
        let good = token_format::mint(TokenKind::Service).expose().to_owned();
        let mut bad = good.clone();
        bad.replace_range(8..9, if &bad[8..9] == "a" { "b" } else { "a" });
        let text = format!("one {good}\ntwo {bad}\n");
        let hits = detector().scan(&text, &PLACE);
        let coffer: Vec<_> = hits.iter().filter(|h| h.rule_id.starts_with("coffer-")).collect();
        assert_eq!(coffer.len(), 1);
        assert_eq!(coffer[0].secret.as_str(), good.as_str());
        assert_eq!((coffer[0].line, coffer[0].column), (1, 5));
    }

    #[test]
    fn builtin_rules_find_common_secrets_and_skip_placeholders() {
        let text = "AWS_ACCESS_KEY_ID=AKIAZ5X2Q7LMN3PQRS4T\n\
                    DATABASE_URL=postgres://app:Vq8!tR2zLp9wKx@db:5432/app\n\
                    DB_PASSWORD=${DB_PASSWORD}\n\
                    password = \"changeme\"\n\
                    GITHUB_TOKEN=ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6\n";
        let hits = detector().scan(text, &PLACE);
        let found = ids(&hits);
        assert!(found.contains(&"aws-access-key-id"), "{found:?}");
        assert!(found.contains(&"url-credentials"), "{found:?}");
        assert!(found.contains(&"github-token"), "{found:?}");
        let url = hits.iter().find(|h| h.rule_id == "url-credentials").expect("url");
        assert_eq!(url.secret.as_str(), "Vq8!tR2zLp9wKx");
        assert!(hits.iter().all(|h| h.line != 3 && h.line != 4), "placeholders: {found:?}");
    }

    #[test]
    fn path_rules_match_files_by_name() {
        let d = detector();
        assert_eq!(
            ids(&d.scan_path(&Place { path: "home/.ssh/id_ed25519", commit: None })),
            ["private-key-file"]
        );
        assert!(d.scan_path(&Place { path: "home/.ssh/id_ed25519.pub", commit: None }).is_empty());
    }

    #[test]
    fn entropy_check_is_off_unless_asked_and_ignores_low_entropy() {
        let text = "blob: Zx8Qp3Lr7Wt2Nv6Ks9Hj4Bf1Dm5Gc0Ya\nnote: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\n";
        assert!(detector().scan(text, &PLACE).is_empty());
        let d = Detector { entropy: Some(4.0), ..detector() };
        let hits = d.scan(text, &PLACE);
        assert_eq!(ids(&hits), [ENTROPY_RULE]);
        assert_eq!(hits[0].line, 1);
    }

    proptest::proptest! {
        /// Any text, with any rule's match at any place (multi-byte characters included), is
        /// scanned without a panic, and every hit's line and column are inside the text.
        #[test]
        fn scanning_any_text_never_panics(
            text in "(\\PC|\n|password=|cfs_|AKIA|://u:|@){0,120}",
        ) {
            static D: LazyLock<Detector> = LazyLock::new(|| Detector {
                rules: RuleSet::builtin().expect("rules"),
                entropy: Some(3.0),
            });
            for h in D.scan(&text, &PLACE) {
                proptest::prop_assert!(h.line <= text.lines().count().max(1));
                proptest::prop_assert!(h.column >= 1);
            }
        }
    }

    #[test]
    fn shannon_entropy_values() {
        assert_eq!(shannon(""), 0.0);
        assert_eq!(shannon("aaaa"), 0.0);
        assert!((shannon("ab") - 1.0).abs() < 1e-9);
        assert!((shannon("0123456789abcdef") - 4.0).abs() < 1e-9);
    }
}
