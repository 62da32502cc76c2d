//! Git repositories, whole history: every blob reachable from every reference (branches, tags,
//! remote-tracking branches, notes, stash) and from HEAD, each scanned once, and reported with
//! the first commit (oldest first, in topological order) and path it was found at. Read through
//! libgit2 (the `git2` crate, built without network, SSH or TLS): nothing is fetched and the
//! repository is not changed.
//!
//! Not scanned: objects no reference reaches (dangling, reflog-only), submodules' contents
//! (scan their repositories as targets of their own), the working tree's uncommitted changes
//! (scan with `-no-git` for those), blobs over the size limit and binary blobs.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use git2::{ObjectType, Oid, Repository, RepositoryOpenFlags, Sort};

use super::{Origin, Scanner, Source};

/// A work tree with `.git`, or a bare repository.
pub(super) fn is_repository(path: &Path) -> bool {
    path.join(".git").exists()
        || (path.join("HEAD").is_file()
            && path.join("objects").is_dir()
            && path.join("refs").is_dir())
}

pub(super) fn scan_repository(s: &mut Scanner<'_>, path: &Path, target: &str) -> Result<()> {
    let repo =
        Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&str>())
            .with_context(|| format!("{target} is not a git repository libgit2 can open"))?;
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
    // Trees a reference points at directly (rare: `git tag t <tree>`), scanned after commits.
    let mut loose_trees = Vec::new();
    let mut pushed = 0usize;
    let mut seen_ref_blobs = HashSet::new();
    for r in repo.references().context("cannot list the repository's references")? {
        let r = r?;
        let name = r.name().unwrap_or("(non-UTF-8 reference)").to_owned();
        if let Ok(c) = r.peel_to_commit() {
            walk.push(c.id())?;
            pushed += 1;
        } else if let Ok(t) = r.peel_to_tree() {
            loose_trees.push((name, t.id()));
        } else if let Ok(b) = r.peel_to_blob() {
            // `git tag NAME <blob>`: the blob has no path; the reference names it.
            if seen_ref_blobs.insert(b.id()) {
                let mut origin = Origin::new(Source::Git, target, &name);
                origin.commit = Some(name.clone());
                s.blob(&origin, b.content());
            }
        }
    }
    if let Ok(head) = repo.head()
        && let Ok(c) = head.peel_to_commit()
    {
        walk.push(c.id())?;
        pushed += 1;
    }
    if pushed == 0 && loose_trees.is_empty() && seen_ref_blobs.is_empty() {
        s.warn(format!("{target}: the repository has no commits"));
        return Ok(());
    }
    let mut seen_trees = HashSet::new();
    let mut seen_blobs = HashSet::new();
    let odb = repo.odb()?;
    for oid in walk {
        let commit = repo.find_commit(oid?)?;
        let id = commit.id().to_string();
        s.stats.commits += 1;
        walk_tree(s, &repo, &odb, commit.tree_id(), &id, target, &mut seen_trees, &mut seen_blobs)?;
    }
    for (name, tree) in loose_trees {
        walk_tree(s, &repo, &odb, tree, &name, target, &mut seen_trees, &mut seen_blobs)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one walk's state, passed down rather than wrapped once
fn walk_tree(
    s: &mut Scanner<'_>,
    repo: &Repository,
    odb: &git2::Odb<'_>,
    root: Oid,
    commit: &str,
    target: &str,
    seen_trees: &mut HashSet<Oid>,
    seen_blobs: &mut HashSet<Oid>,
) -> Result<()> {
    // An explicit stack: a hostile repository may nest trees deeper than the call stack.
    let mut stack = vec![(root, String::new())];
    while let Some((tree_id, prefix)) = stack.pop() {
        // A tree seen before holds only blobs seen before.
        if !seen_trees.insert(tree_id) {
            continue;
        }
        let tree = repo.find_tree(tree_id)?;
        for entry in tree.iter() {
            let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
            let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            match entry.kind() {
                Some(ObjectType::Tree) => stack.push((entry.id(), path)),
                // Links (mode 120000) hold a path, not content.
                Some(ObjectType::Blob) if entry.filemode() != 0o120000 => {
                    if !seen_blobs.insert(entry.id()) || s.detector.skips_path(&path) {
                        continue;
                    }
                    let mut origin = Origin::new(Source::Git, target, &path);
                    origin.commit = Some(commit.to_owned());
                    let (size, _) = odb.read_header(entry.id())?;
                    if size as u64 > s.max_size {
                        s.too_large(&origin);
                        continue;
                    }
                    let blob = repo.find_blob(entry.id())?;
                    s.blob(&origin, blob.content());
                }
                // Submodule commits and links.
                _ => {}
            }
        }
    }
    Ok(())
}
