//! Where the PostgreSQL server binaries are: `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's layout), else the first directory on PATH that has them.
//! scripts/test searches the same way before it decides to install PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;

const SERVER_BINARIES: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

fn has_server(dir: &Path) -> bool {
    SERVER_BINARIES.iter().all(|b| dir.join(b).is_file())
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`, if this machine has one.
pub fn server_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Some(dir);
        }
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v);
    if let Some((_, bin)) = newest {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| has_server(d))
}
