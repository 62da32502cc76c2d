//! Who postgres runs as. postgres refuses to run as root, so when the tests run as root the
//! cluster belongs to an unprivileged user: `postgres` when it exists, else a system user
//! `coffer-pg` created on first use.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) name: String,
}

const OWN_USER: &str = "coffer-pg";

/// `None` when this process is not root (postgres then runs as this user).
pub(crate) fn unprivileged() -> Option<RunAs> {
    // /proc/self is owned by the process's effective uid.
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok().or_else(|| {
        let out = Command::new("id").arg("-u").output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    });
    if euid != Some(0) {
        return None;
    }
    if let Some(u) = lookup("postgres").or_else(|| lookup(OWN_USER)) {
        return Some(u);
    }
    let out = Command::new("useradd")
        .args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"])
        .arg(OWN_USER)
        .output();
    // Another test process may have created it at the same moment: look again either way.
    lookup(OWN_USER).or_else(|| {
        let why = match out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        panic!(
            "running as root, postgres needs an unprivileged user: no `postgres` user, and \
             `useradd {OWN_USER}` failed: {why}"
        )
    })
}

fn lookup(name: &str) -> Option<RunAs> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some(RunAs { uid: id("-u")?, gid: id("-g")?, name: name.to_owned() })
}
