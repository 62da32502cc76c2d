//! Password policies (Vault's `sys/policies/password`): an HCL description of length and
//! character rules, and a generator that satisfies it.
//!
//! Guarantees: every generated password has exactly `length` characters, each rule's
//! `min-chars` are met, and every position is drawn uniformly from the policy's characters by
//! rejection sampling (no modulo bias), then the whole is shuffled uniformly.

use coffer_barrier::View;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::logical::{Error, Result};
use crate::random::random_bytes;
use crate::record;
use crate::secret::SecretString;

/// Where `sys/policies/password` keeps its policies, below the barrier.
pub(crate) const STORAGE_PREFIX: &str = "sys/password_policy/";

#[derive(Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) policy: String,
}

crate::record!(Stored, "password policy", 1);

/// The stored text of the named policy.
pub(crate) async fn load(v: &View, name: &str) -> Result<Option<String>> {
    match v.get(name).await? {
        None => Ok(None),
        Some(raw) => {
            let s: Stored = record::decode(&raw)?;
            Ok(Some(s.policy))
        }
    }
}

/// The named password policies as an engine may use them: to generate passwords, not to read
/// or change the policies.
#[derive(Clone)]
pub struct Passwords {
    view: View,
}

impl Passwords {
    pub(crate) fn new(barrier: std::sync::Arc<coffer_barrier::Barrier>) -> Self {
        Self { view: View::new(barrier, STORAGE_PREFIX) }
    }

    /// A password from the policy `name`, or from [`PasswordPolicy::default_policy`] when
    /// `name` is empty. A named policy that does not exist is a 400, not a fallback.
    pub async fn generate(&self, name: &str) -> Result<SecretString> {
        let policy = if name.is_empty() {
            PasswordPolicy::default_policy()
        } else {
            let name = crate::policy_store::normalize_name(name)?;
            let text = load(&self.view, &name).await?.ok_or_else(|| {
                Error::invalid(format!("password policy {name:?} does not exist"))
            })?;
            PasswordPolicy::parse(&text)?
        };
        Ok(SecretString::new(policy.generate()))
    }
}

/// Longest password a policy may ask for.
const MAX_LENGTH: u64 = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct PasswordPolicy {
    pub length: usize,
    rules: Vec<CharsetRule>,
    /// The union of every rule's characters, deduplicated, in first-seen order.
    alphabet: Vec<char>,
}

#[derive(Debug, Clone, PartialEq)]
struct CharsetRule {
    charset: Vec<char>,
    min_chars: usize,
}

/// Vault's form for every refused policy: its handler's text in a Go multierror.
fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(multierror(&[format!("invalid password policy: {}", msg.into())]))
}

/// Go's `go-multierror` text, which Vault's answers carry verbatim.
fn multierror(errors: &[String]) -> String {
    let points: Vec<String> = errors.iter().map(|e| format!("* {e}")).collect();
    match errors.len() {
        1 => format!("1 error occurred:\n\t{}\n\n", points[0]),
        n => format!("{n} errors occurred:\n\t{}\n\n", points.join("\n\t")),
    }
}

fn dedup(chars: impl Iterator<Item = char>) -> Vec<char> {
    let mut out: Vec<char> = Vec::new();
    for c in chars {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

impl PasswordPolicy {
    pub fn parse(text: &str) -> Result<Self> {
        let v: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| bad(format!("unable to decode: JSON: {e}")))?
        } else {
            // Stricter than Vault's HCL 1 parser, which reads some broken documents (`length =`)
            // as empty ones: the error then names the line and column instead.
            let h: hcl::Value =
                hcl::from_str(text).map_err(|e| bad(format!("unable to decode: {e}")))?;
            serde_json::to_value(h).map_err(|e| bad(e.to_string()))?
        };
        let m = v.as_object().ok_or_else(|| bad("expected length and rule blocks"))?;
        let mut length = None;
        let mut rules = Vec::new();
        for (k, v) in m {
            match k.as_str() {
                "length" => {
                    let n = v.as_u64().ok_or_else(|| bad("length must be a whole number"))?;
                    if n > MAX_LENGTH {
                        return Err(bad(format!("length must be between 1 and {MAX_LENGTH}")));
                    }
                    length = Some(n as usize);
                }
                "rule" => {
                    let kinds = v
                        .as_object()
                        .ok_or_else(|| bad("rule must be written rule \"charset\" { ... }"))?;
                    for (kind, body) in kinds {
                        if kind != "charset" {
                            return Err(bad(format!(
                                "unknown rule type {kind:?}: only \"charset\" is supported"
                            )));
                        }
                        let bodies: Vec<&Value> = match body {
                            Value::Array(a) => a.iter().collect(),
                            other => vec![other],
                        };
                        for b in bodies {
                            rules.push(charset_rule(b)?);
                        }
                    }
                }
                other => {
                    return Err(bad(format!("unknown key {other:?} (expected length and rule)")));
                }
            }
        }
        // Vault's checks of a policy that parsed, all reported at once in its words.
        let length = length.unwrap_or(0);
        let mut problems = Vec::new();
        let min_total: usize = rules.iter().map(|r| r.min_chars).sum();
        if length == 0 {
            problems.push("length must be > 0".to_owned());
        } else if min_total > length {
            problems.push(format!(
                "specified rules require at least {min_total} characters but {length} is specified"
            ));
        }
        if rules.is_empty() {
            problems.push("no charset specified".to_owned());
        }
        if !problems.is_empty() {
            return Err(Error::invalid(multierror(&[format!(
                "invalid password policy: {}",
                multierror(&problems)
            )])));
        }
        let alphabet = dedup(rules.iter().flat_map(|r| r.charset.iter().copied()));
        Ok(Self { length, rules, alphabet })
    }

    /// The policy Coffer uses when none is named: 20 characters from letters and digits, at
    /// least one lowercase, one uppercase and one digit.
    pub fn default_policy() -> Self {
        let rule = |s: &str, min| CharsetRule { charset: s.chars().collect(), min_chars: min };
        let rules = vec![
            rule("abcdefghijklmnopqrstuvwxyz", 1),
            rule("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 1),
            rule("0123456789", 1),
        ];
        let alphabet = dedup(rules.iter().flat_map(|r| r.charset.iter().copied()));
        Self { length: 20, rules, alphabet }
    }

    pub fn generate(&self) -> String {
        let mut out: Vec<char> = Vec::with_capacity(self.length);
        for r in &self.rules {
            for _ in 0..r.min_chars {
                out.push(r.charset[uniform(r.charset.len())]);
            }
        }
        while out.len() < self.length {
            out.push(self.alphabet[uniform(self.alphabet.len())]);
        }
        // Fisher–Yates, so the required characters are not always at the front.
        for i in (1..out.len()).rev() {
            out.swap(i, uniform(i + 1));
        }
        out.into_iter().collect()
    }
}

fn charset_rule(b: &Value) -> Result<CharsetRule> {
    let m = b.as_object().ok_or_else(|| bad("a charset rule must be a block"))?;
    let mut charset = None;
    let mut min_chars = 0usize;
    for (k, v) in m {
        match k.as_str() {
            "charset" => {
                let s = v.as_str().ok_or_else(|| bad("charset must be a string"))?;
                let chars = dedup(s.chars());
                if chars.is_empty() {
                    return Err(bad("charset cannot be empty"));
                }
                if chars.iter().any(|c| c.is_control()) {
                    return Err(bad("charset cannot hold control characters"));
                }
                charset = Some(chars);
            }
            "min-chars" | "min_chars" => {
                min_chars =
                    v.as_u64().ok_or_else(|| bad("min-chars must be a whole number"))? as usize;
            }
            other => return Err(bad(format!("unknown key {other:?} in rule \"charset\""))),
        }
    }
    Ok(CharsetRule {
        charset: charset.ok_or_else(|| bad("rule \"charset\" needs charset"))?,
        min_chars,
    })
}

/// A uniform index below `n` (n ≥ 1), by rejection sampling over u32.
fn uniform(n: usize) -> usize {
    let n = n as u64;
    let zone = (u64::from(u32::MAX) + 1) / n * n;
    loop {
        let v = u64::from(u32::from_le_bytes(random_bytes::<4>()));
        if v < zone {
            return (v % n) as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
length = 24
rule "charset" {
  charset   = "abcdefghijklmnopqrstuvwxyz"
  min-chars = 1
}
rule "charset" {
  charset   = "0123456789"
  min-chars = 4
}
rule "charset" {
  charset   = "!@#$"
  min-chars = 2
}
"#;

    #[test]
    fn generated_passwords_meet_every_rule() {
        let p = PasswordPolicy::parse(POLICY).expect("parse");
        for _ in 0..200 {
            let pw = p.generate();
            assert_eq!(pw.chars().count(), 24);
            assert!(pw.chars().filter(char::is_ascii_digit).count() >= 4, "{pw}");
            assert!(pw.chars().filter(|c| "!@#$".contains(*c)).count() >= 2, "{pw}");
            assert!(pw.chars().any(|c| c.is_ascii_lowercase()), "{pw}");
            assert!(
                pw.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "!@#$".contains(c)),
                "{pw}"
            );
        }
    }

    #[test]
    fn every_character_of_the_alphabet_appears() {
        let p = PasswordPolicy::parse("length = 64\nrule \"charset\" {\n  charset = \"abc\"\n}\n")
            .expect("parse");
        let pw = p.generate();
        assert!(pw.contains('a') && pw.contains('b') && pw.contains('c'), "{pw}");
    }

    #[test]
    fn the_default_policy_mixes_cases_and_digits() {
        let pw = PasswordPolicy::default_policy().generate();
        assert_eq!(pw.len(), 20);
        assert!(
            pw.chars().any(|c| c.is_ascii_uppercase()) && pw.chars().any(|c| c.is_ascii_digit())
        );
    }

    #[test]
    fn bad_policies_name_the_problem() {
        for (text, want) in [
            ("rule \"charset\" {\n charset = \"a\"\n}\n", "* length must be > 0\n"),
            ("length = 5\n", "1 error occurred:\n\t* no charset specified\n\n"),
            (
                "length = 2\nrule \"charset\" {\n charset = \"ab\"\n min-chars = 3\n}\n",
                "specified rules require at least 3 characters but 2 is specified",
            ),
            ("length = 5\nrule \"charset\" {\n charset = \"\"\n}\n", "empty"),
            ("length = 5\nrule \"other\" {\n charset = \"a\"\n}\n", "other"),
            ("length = 5\nlenght = 4\nrule \"charset\" {\n charset = \"a\"\n}\n", "lenght"),
            (
                "length = 0\nrule \"charset\" {\n charset = \"a\"\n}\n",
                "1 error occurred:\n\t* invalid password policy: 1 error occurred:\n\t* length \
                 must be > 0\n\n\n\n",
            ),
            ("length = 0\n", "2 errors occurred:\n\t* length must be > 0\n\t* no charset"),
            ("length = ", "1 error occurred:\n\t* invalid password policy: unable to decode: "),
            ("length = 5\nrule \"other\" {\n charset = \"a\"\n}\n", "1 error occurred:\n\t* "),
        ] {
            let e = PasswordPolicy::parse(text).expect_err(want).to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
    }

    #[test]
    fn uniform_stays_in_range() {
        for n in [1, 2, 3, 7, 62, 1000] {
            for _ in 0..200 {
                assert!(uniform(n) < n);
            }
        }
    }
}
