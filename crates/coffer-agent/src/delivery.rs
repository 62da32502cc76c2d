//! Putting rendered secrets on the filesystem: only on a memory filesystem unless a template says
//! otherwise, with the permissions and owner set before the first byte of content is written, and
//! replaced atomically (a temporary file in the same directory, then a rename), so an app never
//! reads a half-written file and never finds a file more open than configured.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

/// Linux filesystem magic numbers (statfs(2)) of the filesystems that keep data in memory only.
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Who a delivered file belongs to; `None` keeps the agent's own user or group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
}

impl Owner {
    /// Resolves `user`/`group` given as names (looked up in /etc/passwd and /etc/group) or ids.
    pub(crate) fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Self> {
        Ok(Self {
            uid: user.map(|u| lookup_id(u, "/etc/passwd", "user")).transpose()?,
            gid: group.map(|g| lookup_id(g, "/etc/group", "group")).transpose()?,
        })
    }
}

fn lookup_id(name: &str, db: &str, what: &str) -> Result<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let text = fs::read_to_string(db)
        .with_context(|| format!("cannot read {db} to find {what} {name:?}"))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, id)| id.parse().ok())
        .ok_or_else(|| anyhow!("no {what} named {name:?} in {db}"))
}

/// Refuses a destination whose directory is on a disk-backed filesystem, unless allowed.
pub(crate) fn check_memory_fs(dir: &Path, allow_disk: bool, what: &str) -> Result<()> {
    if allow_disk {
        return Ok(());
    }
    let st = rustix::fs::statfs(dir)
        .with_context(|| format!("cannot inspect the filesystem of {}", dir.display()))?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    let kind = st.f_type as u64;
    if kind == TMPFS_MAGIC || kind == RAMFS_MAGIC {
        return Ok(());
    }
    bail!(
        "{what}: {} is on a disk-backed filesystem, where a secret outlives the container and reaches \
         the host's disk and its backups; put it on a memory filesystem (tmpfs; in Kubernetes an \
         emptyDir with medium: Memory), or set allow_disk = true if this is intended",
        dir.display()
    )
}

/// Makes `dir` (and its parents) when asked, readable by `owner` (whose files go in it), then
/// checks where it lives.
pub(crate) fn prepare_dir(
    dest: &Path,
    create: bool,
    allow_disk: bool,
    owner: Owner,
    what: &str,
) -> Result<PathBuf> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| anyhow!("{what}: {} has no directory", dest.display()))?
        .to_path_buf();
    if !dir.is_dir() {
        if !create {
            bail!("{what}: directory {} does not exist", dir.display());
        }
        // Listing the directory shows file names, not secrets; the files are what is protected.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&dir)
            .with_context(|| format!("{what}: cannot create {}", dir.display()))?;
        if owner.uid.is_some() || owner.gid.is_some() {
            rustix::fs::chown(
                &dir,
                owner.uid.map(rustix::fs::Uid::from_raw),
                owner.gid.map(rustix::fs::Gid::from_raw),
            )
            .with_context(|| format!("{what}: cannot change the owner of {}", dir.display()))?;
        }
    }
    check_memory_fs(&dir, allow_disk, what)?;
    Ok(dir)
}

/// Writes `contents` to `dest` atomically with mode `perms` and `owner`. Returns whether the
/// file changed (an identical file is left as it is, so its readers see no event).
pub(crate) fn write_atomic(dest: &Path, contents: &[u8], perms: u32, owner: Owner) -> Result<bool> {
    if let Ok(old) = fs::read(dest) {
        let same = old == contents;
        let mut old = zeroize::Zeroizing::new(old);
        old.clear();
        if same && mode_of(dest) == Some(perms) {
            return Ok(false);
        }
    }
    let dir = dest.parent().ok_or_else(|| anyhow!("{} has no directory", dest.display()))?;
    let name = dest.file_name().ok_or_else(|| anyhow!("{} has no file name", dest.display()))?;
    // An unpredictable name: in a shared directory nobody can plant it first.
    let mut r = [0u8; 8];
    aws_lc_rs::rand::fill(&mut r)
        .map_err(|_| anyhow!("no randomness for a temporary file name"))?;
    let suffix: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{}.coffer-tmp-{suffix}", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        // Created empty and unreadable by anyone else; the mode is then set exactly (the umask
        // would narrow it) and the owner changed, all before any content.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600 & perms | 0o200)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        if owner.uid.is_some() || owner.gid.is_some() {
            rustix::fs::fchown(
                &f,
                owner.uid.map(rustix::fs::Uid::from_raw),
                owner.gid.map(rustix::fs::Gid::from_raw),
            )
            .with_context(|| format!("cannot change the owner of {}", dest.display()))?;
        }
        f.set_permissions(fs::Permissions::from_mode(perms))
            .with_context(|| format!("cannot set the mode of {}", dest.display()))?;
        f.write_all(contents).with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, dest)
            .with_context(|| format!("cannot move the new file into place at {}", dest.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

fn mode_of(p: &Path) -> Option<u32> {
    fs::metadata(p).ok().map(|m| m.permissions().mode() & 0o7777)
}

/// Removes a delivered file; a file already gone is not an error.
pub(crate) fn remove(dest: &Path) -> Result<()> {
    match fs::remove_file(dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dest.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_the_mode_and_replaces_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("secret.txt");
        assert!(write_atomic(&dest, b"one", 0o400, Owner::default()).expect("write"));
        assert_eq!(fs::read(&dest).expect("read"), b"one");
        assert_eq!(mode_of(&dest), Some(0o400));
        // A read-only file is replaced by rename, not rewritten in place.
        assert!(write_atomic(&dest, b"two", 0o440, Owner::default()).expect("rewrite"));
        assert_eq!(fs::read(&dest).expect("read"), b"two");
        assert_eq!(mode_of(&dest), Some(0o440));
        assert!(!write_atomic(&dest, b"two", 0o440, Owner::default()).expect("same"));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("secret.txt")]);
    }

    #[test]
    fn disk_destinations_are_refused_unless_allowed() {
        // The current directory of a test run is on the build's disk.
        let here = std::env::current_dir().expect("cwd");
        let err = check_memory_fs(&here, false, "template").expect_err("disk refused");
        assert!(format!("{err}").contains("disk-backed"), "{err}");
        check_memory_fs(&here, true, "template").expect("allowed");
        // /dev/shm is a tmpfs on Linux.
        if Path::new("/dev/shm").is_dir() {
            check_memory_fs(Path::new("/dev/shm"), false, "template").expect("tmpfs accepted");
        }
    }

    #[test]
    fn owners_resolve_by_name_or_id() {
        assert_eq!(
            Owner::resolve(Some("0"), Some("0")).expect("ids"),
            Owner { uid: Some(0), gid: Some(0) }
        );
        assert_eq!(
            Owner::resolve(Some("root"), None).expect("name"),
            Owner { uid: Some(0), gid: None }
        );
        let err = Owner::resolve(Some("no-such-user-here"), None).expect_err("unknown");
        assert!(format!("{err}").contains("no-such-user-here"));
    }
}
