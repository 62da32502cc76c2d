//! `coffer chaos report JOURNAL...`: a summary of each journal on standard output, and an HTML
//! report (timeline included) written beside it.
//!
//! Reads journals written by `coffer chaos run` or by Chaos Toolkit. The exit status says
//! whether the reports were written, not the experiments' verdicts (the journals hold those).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args, Debug)]
pub(crate) struct ReportArgs {
    /// Journal files (JSON)
    #[arg(required = true, value_name = "JOURNAL")]
    pub journals: Vec<PathBuf>,
    /// Where to write the HTML report (one journal only). Default: beside the journal, with the
    /// extension .html (journal.json -> journal.html)
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `journal.json` -> `journal.html`; a journal already named `.html` gets `.html` appended
/// rather than being overwritten by its own report.
fn default_output(journal: &Path) -> PathBuf {
    if journal.extension().is_some_and(|e| e.eq_ignore_ascii_case("html")) {
        let mut name = journal.as_os_str().to_owned();
        name.push(".html");
        PathBuf::from(name)
    } else {
        journal.with_extension("html")
    }
}

pub(super) fn run(a: ReportArgs) -> Result<ExitCode> {
    if a.output.is_some() && a.journals.len() > 1 {
        bail!("-output names one report: give one journal, or leave -output out");
    }
    for (i, path) in a.journals.iter().enumerate() {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read the journal {}", path.display()))?;
        let journal: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a JSON journal", path.display()))?;
        if !journal.is_object() {
            bail!("{} is not a journal (not a JSON object)", path.display());
        }
        if i > 0 {
            println!();
        }
        if a.journals.len() > 1 {
            println!("== {} ==", path.display());
        }
        print!("{}", coffer_chaos::report::summary(&journal));
        let out = a.output.clone().unwrap_or_else(|| default_output(path));
        std::fs::write(&out, coffer_chaos::report::html(&journal))
            .with_context(|| format!("cannot write the report {}", out.display()))?;
        println!("HTML report: {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_goes_beside_the_journal() {
        assert_eq!(default_output(Path::new("out/journal.json")), Path::new("out/journal.html"));
        assert_eq!(default_output(Path::new("j")), Path::new("j.html"));
        assert_eq!(default_output(Path::new("a.html")), Path::new("a.html.html"));
    }
}
