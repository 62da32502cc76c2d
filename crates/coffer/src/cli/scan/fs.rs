//! Files and directories. A directory is walked in name order; symbolic links are never followed
//! (a link's target inside the tree is scanned where it lives, one outside the tree is not
//! scanned at all), `.git` directories are left to the git scanner, and files larger than the
//! size limit or with a NUL byte in their first 8 KiB are skipped (counted in the summary).
//! A target given on the command line that is itself a link is followed: the user named it.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Origin, Scanner, Source};

pub(super) fn scan_target(s: &mut Scanner<'_>, root: &Path, target: &str) -> Result<()> {
    let meta = std::fs::metadata(root).with_context(|| format!("cannot read {target}"))?;
    if meta.is_file() {
        let name = target.to_owned();
        return scan_file(s, root, target, &name, meta.len());
    }
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut entries = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("cannot list {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        // Reversed onto the stack, so directories are visited in name order.
        for e in entries.into_iter().rev() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let ft = e.file_type().with_context(|| format!("cannot stat {path}"))?;
            if ft.is_symlink() {
                s.stats.symlinks += 1;
            } else if ft.is_dir() {
                if name != ".git" && !s.detector.skips_path(&format!("{path}/")) {
                    stack.push((e.path(), path));
                }
            } else if ft.is_file() {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                scan_file(s, &e.path(), target, &path, len)?;
            }
        }
    }
    Ok(())
}

fn scan_file(s: &mut Scanner<'_>, file: &Path, target: &str, path: &str, len: u64) -> Result<()> {
    if s.detector.skips_path(path) {
        return Ok(());
    }
    let origin = Origin::new(Source::File, target, path);
    if len > s.max_size {
        s.too_large(&origin);
        return Ok(());
    }
    match std::fs::read(file) {
        Ok(bytes) => s.blob(&origin, &bytes),
        // A file that vanished or is unreadable mid-scan is reported, not fatal: the rest of
        // the tree is still worth scanning.
        Err(e) => s.warn(format!("cannot read {path}: {e}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Detector;
    use super::super::rules::RuleSet;
    use super::super::tests::scanner;
    use super::*;

    #[test]
    fn links_out_of_the_tree_git_dirs_binaries_and_large_files_are_not_read() {
        let outside = tempfile::tempdir().expect("tmp");
        let secret = "AWS_ACCESS_KEY_ID=AKIAZ5X2Q7LMN3PQRS4T\n";
        std::fs::write(outside.path().join("creds"), secret).expect("write");
        let tree = tempfile::tempdir().expect("tmp");
        let root = tree.path();
        std::os::unix::fs::symlink(outside.path().join("creds"), root.join("link")).expect("ln");
        std::os::unix::fs::symlink(outside.path(), root.join("dirlink")).expect("ln");
        std::fs::create_dir(root.join(".git")).expect("mkdir");
        std::fs::write(root.join(".git/config"), secret).expect("write");
        std::fs::write(root.join("bin.dat"), [secret.as_bytes(), b"\0"].concat()).expect("write");
        std::fs::write(root.join("big.env"), secret.repeat(100)).expect("write");
        std::fs::create_dir(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/app.env"), secret).expect("write");
        let d = Detector { rules: RuleSet::builtin().expect("rules"), entropy: None };
        let mut s = scanner(&d);
        s.max_size = 1000;
        scan_target(&mut s, root, "t").expect("scan");
        let paths: Vec<&str> = s.findings.iter().map(|f| f.origin.path.as_str()).collect();
        assert_eq!(paths, ["sub/app.env"]);
        assert_eq!((s.stats.symlinks, s.stats.binary, s.stats.too_large), (2, 1, 1));
    }
}
