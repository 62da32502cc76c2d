//! A private, throwaway PostgreSQL cluster for tests: `initdb` into a fresh temp dir, a server on
//! a free loopback port, and helpers to make databases and run SQL as the superuser.
//!
//! Guarantees:
//! - The cluster is private to the test process: its own data dir, its own port on 127.0.0.1, its
//!   own random superuser password (`coffer_admin`, SCRAM), unix sockets inside the temp dir.
//! - It goes away with the test process, however that process ends (normal exit with a `static`
//!   that is never dropped, a panic, `SIGKILL`): postgres is started by a small `sh` supervisor
//!   that blocks reading a pipe only this process holds; when the pipe closes, the supervisor
//!   stops postgres (fast shutdown) and removes the temp dir. Dropping a [`Cluster`] does the
//!   same, synchronously.
//! - When the tests run as root, initdb and postgres run as an unprivileged user (`postgres` when
//!   it exists, else a system user `coffer-pg` made with `useradd`), since postgres refuses root.
//! - Every failure panics with a message that says what to do: a test that needs PostgreSQL fails
//!   when it cannot have it; it never skips.
//!
//! Not guaranteed: durability (fsync is off: a throwaway cluster does not need it) or speed of
//! the first start (an `initdb`, about a second). `Cluster::shared()` is one cluster per test
//! process; give each test its own database with [`Cluster::create_database`] so tests can run in
//! parallel.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

mod find;
mod tls;
mod user;

pub use find::server_bindir;

/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "coffer_admin";

/// How many times a first start retries on a fresh port when another process took the one picked.
const PORT_ATTEMPTS: usize = 5;

/// A running (or deliberately stopped) PostgreSQL cluster private to this test process.
pub struct Cluster {
    root: PathBuf,
    port: u16,
    password: String,
    bindir: PathBuf,
    tls: bool,
    supervisor: Mutex<Supervisor>,
}

/// The `sh` process that owns postgres and the temp dir: it obeys one-word commands on stdin,
/// answers `ok`/`failed` on stdout, and on end of input stops postgres and removes the dir.
struct Supervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

const SUPERVISOR: &str = r#"
trap '' INT HUP
say() { if "$@"; then echo ok; else echo failed; fi; }
pg_start() { "$PGBIN/pg_ctl" start -w -t 60 -s -D "$ROOT/data" -l "$ROOT/postgres.log" >>"$ROOT/pg_ctl.log" 2>&1; }
pg_stop() { "$PGBIN/pg_ctl" stop -w -t 60 -s -m fast -D "$ROOT/data" >>"$ROOT/pg_ctl.log" 2>&1; }
pg_init() {
  "$PGBIN/initdb" -D "$ROOT/data" -U coffer_admin --pwfile="$ROOT/pwfile" --auth=scram-sha-256 \
    -E UTF8 --locale=C --no-sync >"$ROOT/initdb.log" 2>&1
  r=$?; rm -f "$ROOT/pwfile"; return $r
}
while IFS= read -r cmd; do
  case "$cmd" in
    init) say pg_init ;;
    start) say pg_start ;;
    stop) say pg_stop ;;
    *) echo failed ;;
  esac
done
if [ -f "$ROOT/data/postmaster.pid" ]; then pg_stop; fi
rm -rf "$ROOT"
"#;

static SHARED: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// The cluster shared by every test in this process, started on first use.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(Cluster::start)
    }

    /// A cluster of its own, for a test that stops and restarts it; dropped = gone.
    pub fn start() -> Cluster {
        Self::start_with(false)
    }

    /// A cluster that accepts TCP logins over TLS only (`hostssl`), with a server certificate for
    /// `127.0.0.1` and `localhost` issued by a fresh test CA; see [`Cluster::ca_pem_path`].
    pub fn start_tls() -> Cluster {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Cluster {
        let bindir = find::server_bindir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found via pg_config, \
                 /usr/lib/postgresql/*/bin or PATH: run scripts/test (it installs them) or \
                 `apt-get install -y postgresql`"
            )
        });
        let run_as = user::unprivileged();
        let root = make_root(run_as.as_ref());
        let password = random_hex(24);
        write_private(&root.join("pwfile"), password.as_bytes(), run_as.as_ref());

        let mut supervisor = Supervisor::spawn(&bindir, &root, run_as.as_ref());
        if !supervisor.command("init") {
            let log = read_lossy(&root.join("initdb.log"));
            drop(supervisor);
            panic!("initdb failed in {}:\n{log}", root.display());
        }

        let data = root.join("data");
        let hba_type = if tls { "hostssl" } else { "host" };
        write_private(
            &data.join("pg_hba.conf"),
            format!("local all all scram-sha-256\n{hba_type} all all 127.0.0.1/32 scram-sha-256\n")
                .as_bytes(),
            run_as.as_ref(),
        );
        let mut conf = read_lossy(&data.join("postgresql.conf"));
        conf.push_str("\ninclude 'coffer.conf'\n");
        write_private(&data.join("postgresql.conf"), conf.as_bytes(), run_as.as_ref());
        if tls {
            tls::write_files(&root, |path, bytes| write_private(path, bytes, run_as.as_ref()));
        }

        let mut port = 0;
        for attempt in 1..=PORT_ATTEMPTS {
            port = free_port();
            write_private(
                &data.join("coffer.conf"),
                settings(&root, port, tls).as_bytes(),
                run_as.as_ref(),
            );
            if supervisor.command("start") {
                break;
            }
            if attempt == PORT_ATTEMPTS {
                let log = read_lossy(&root.join("postgres.log"));
                drop(supervisor);
                panic!("postgres did not start after {PORT_ATTEMPTS} attempts; log:\n{log}");
            }
        }
        Cluster { root, port, password, bindir, tls, supervisor: Mutex::new(supervisor) }
    }

    /// The TCP port on 127.0.0.1; the same across [`Cluster::stop`] and [`Cluster::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://coffer_admin:PASSWORD@127.0.0.1:PORT/postgres`
    pub fn superuser_url(&self) -> String {
        self.url_for(SUPERUSER, &self.password, "postgres")
    }

    /// A connection URL for `user` with `password` to database `db` (percent-encoded).
    pub fn url_for(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(db)
        )
    }

    /// Creates database `name` (lower-case letters, digits, `_`) and returns the superuser's URL
    /// to it. Panics when it exists already: one name per test.
    pub fn create_database(&self, name: &str) -> String {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        assert!(valid, "database name {name:?} must be lower-case letters, digits and '_'");
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url_for(SUPERUSER, &self.password, name)
    }

    /// Runs `sql` as the superuser in database `db` and returns psql's unaligned, tuples-only
    /// output (one row a line, `|` between columns), trimmed. Panics on any error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let url = self.url_for(SUPERUSER, &self.password, db);
        self.sql_at(&url, sql)
            .unwrap_or_else(|e| panic!("SQL failed in {db:?}: {}\n{e}", redact_passwords(sql)))
    }

    /// Runs `sql` through `psql` on any connection URL (e.g. one from [`Cluster::url_for`], with
    /// `?sslmode=...` added); `Err` holds psql's error output.
    pub fn sql_at(&self, url: &str, sql: &str) -> Result<String, String> {
        let psql = self.bindir.join("psql");
        let psql = if psql.is_file() { psql } else { PathBuf::from("psql") };
        let mut cmd = Command::new(&psql);
        clear_pg_env(&mut cmd);
        // The password goes through the environment, not the command line others can read.
        let (url, password) = split_password(url);
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        let out = cmd
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", psql.display()));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Stops the server (fast shutdown), keeping its data dir and port: the database is "down".
    pub fn stop(&self) {
        let ok = self.supervisor().command("stop");
        assert!(ok, "postgres did not stop; pg_ctl said:\n{}", self.pg_ctl_log());
    }

    /// Starts the server again after [`Cluster::stop`], on the same data dir and port.
    pub fn start_again(&self) {
        let ok = self.supervisor().command("start");
        assert!(
            ok,
            "postgres did not start again on port {}; log:\n{}",
            self.port,
            read_lossy(&self.root.join("postgres.log"))
        );
    }

    /// The test CA's certificate (PEM) for a [`Cluster::start_tls`] cluster, else `None`.
    pub fn ca_pem_path(&self) -> Option<PathBuf> {
        self.tls.then(|| self.root.join(tls::CA_FILE))
    }

    /// The temp dir that holds the cluster (data dir, log, sockets); removed when it goes away.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The server's log so far, for a test's failure message.
    pub fn server_log(&self) -> String {
        read_lossy(&self.root.join("postgres.log"))
    }

    fn pg_ctl_log(&self) -> String {
        read_lossy(&self.root.join("pg_ctl.log"))
    }

    fn supervisor(&self) -> std::sync::MutexGuard<'_, Supervisor> {
        // A panic while holding the lock leaves the supervisor as usable as before.
        self.supervisor.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let s = self.supervisor.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.finish();
    }
}

impl Supervisor {
    fn spawn(bindir: &Path, root: &Path, run_as: Option<&user::RunAs>) -> Supervisor {
        let mut cmd = Command::new("/bin/sh");
        clear_pg_env(&mut cmd);
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .env("PGBIN", bindir)
            .env("ROOT", root)
            .env("LC_ALL", "C")
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(u) = run_as {
            cmd.uid(u.uid).gid(u.gid).env("HOME", root).env("USER", &u.name);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start /bin/sh: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        let Some(stdout) = stdout else { panic!("supervisor has no stdout pipe") };
        Supervisor { child, stdin, stdout }
    }

    /// Sends one command and waits for its answer; false when it failed or the shell is gone.
    fn command(&mut self, cmd: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else { return false };
        if writeln!(stdin, "{cmd}").and_then(|()| stdin.flush()).is_err() {
            return false;
        }
        let mut line = String::new();
        matches!(self.stdout.read_line(&mut line), Ok(n) if n > 0) && line.trim() == "ok"
    }

    /// Closes the pipe (the shell stops postgres and removes the dir) and waits for the shell.
    fn finish(&mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.finish();
    }
}

fn settings(root: &Path, port: u16, tls: bool) -> String {
    let mut s = format!(
        "listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{}'\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         shared_buffers = 16MB\n\
         max_connections = 200\n\
         max_parallel_workers_per_gather = 0\n\
         dynamic_shared_memory_type = posix\n",
        root.display()
    );
    if tls {
        s.push_str(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            root.join(tls::CERT_FILE).display(),
            root.join(tls::KEY_FILE).display()
        ));
    }
    s
}

/// A fresh directory for one cluster, mode 0700, owned by the user postgres runs as.
fn make_root(run_as: Option<&user::RunAs>) -> PathBuf {
    // Root's TMPDIR may be private to root; /tmp is reachable by the unprivileged user.
    let base = if run_as.is_some() { PathBuf::from("/tmp") } else { std::env::temp_dir() };
    for _ in 0..16 {
        let dir = base.join(format!("coffer-pg-{}", random_hex(8)));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                    .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.display()));
                if let Some(u) = run_as {
                    std::os::unix::fs::chown(&dir, Some(u.uid), Some(u.gid))
                        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", dir.display()));
                }
                return dir;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create a temp dir in {}: {e}", base.display()),
        }
    }
    panic!("cannot find a free temp dir name in {}", base.display())
}

/// Writes `bytes` to `path` with mode 0600, owned by the user postgres runs as.
fn write_private(path: &Path, bytes: &[u8], run_as: Option<&user::RunAs>) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
    if let Some(u) = run_as {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
            .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// A port that is free now, from below Linux's ephemeral range (32768-60999), so that the
/// tests' own outgoing connections cannot take it before postgres binds it.
fn free_port() -> u16 {
    for _ in 0..200 {
        let r = u16::from_str_radix(&random_hex(2), 16).unwrap_or(0);
        let port = 20_000 + r % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("cannot find a free loopback port between 20000 and 32000")
}

/// `n` random bytes from the kernel, as lower-case hex.
fn random_hex(n: usize) -> String {
    use std::io::Read as _;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .unwrap_or_else(|e| panic!("cannot read /dev/urandom: {e}"));
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// libpq reads PG* variables (PGHOST, PGSSLMODE, ...); the fixture's commands say everything
/// they mean on the command line, so the caller's environment cannot redirect them.
/// `postgres://user:pw@host/...` as the URL without its password, and the password decoded.
fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (url.to_owned(), None) };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return (url.to_owned(), None) };
    let Some((user, pw)) = rest[..at].split_once(':') else { return (url.to_owned(), None) };
    (format!("{scheme}://{user}@{}", &rest[at + 1..]), Some(percent_decode(pw)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `sql` with every `PASSWORD '...'` literal blanked, for a panic message.
fn redact_passwords(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.to_ascii_uppercase().find("PASSWORD '") {
        let (head, tail) = rest.split_at(i + "PASSWORD '".len());
        out.push_str(head);
        out.push_str("***'");
        rest = tail.find('\'').map_or("", |j| &tail[j + 1..]);
    }
    out.push_str(rest);
    out
}

fn clear_pg_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
}

#[cfg(test)]
mod tests;
