use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

/// Waits (bounded) until `done` holds; the cleanup after a process exit is asynchronous.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn accepts_tcp(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn a_cluster_starts_and_accepts_a_password_login_over_tcp() {
    let c = Cluster::start();
    assert_eq!(c.sql("postgres", "SELECT 1"), "1");
    assert_eq!(c.sql_at(&c.superuser_url(), "SELECT current_user").as_deref(), Ok(SUPERUSER));
    c.sql("postgres", "CREATE ROLE app LOGIN PASSWORD 'p@ss:/word'");
    let app = c.url_for("app", "p@ss:/word", "postgres");
    assert_eq!(c.sql_at(&app, "SELECT current_user").as_deref(), Ok("app"));
    let wrong = c.url_for("app", "nope", "postgres");
    let err = c.sql_at(&wrong, "SELECT 1").expect_err("a wrong password is refused");
    assert!(err.contains("password authentication failed"), "{err}");
}

#[test]
fn databases_are_separate() {
    let c = Cluster::shared();
    let a = c.create_database("pgtest_sep_a");
    let b = c.create_database("pgtest_sep_b");
    c.sql_at(&a, "CREATE TABLE t (x int)").expect("create in a");
    assert!(c.sql_at(&b, "SELECT * FROM t").is_err(), "table of a visible in b");
    assert_eq!(c.sql("pgtest_sep_a", "SELECT count(*) FROM t"), "0");
}

#[test]
fn stop_then_start_again_keeps_the_data_and_the_port() {
    let c = Cluster::start();
    let port = c.port();
    c.sql("postgres", "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')");
    c.stop();
    assert!(!accepts_tcp(port), "stopped cluster still listens");
    assert!(c.sql_at(&c.superuser_url(), "SELECT 1").is_err(), "stopped cluster answers");
    c.start_again();
    assert_eq!(c.port(), port);
    assert_eq!(c.sql("postgres", "SELECT v FROM kept"), "still here");
}

#[test]
fn dropping_a_cluster_stops_postgres_and_removes_its_dir() {
    let c = Cluster::start();
    let (root, port) = (c.root_dir().to_owned(), c.port());
    assert!(root.join("data").is_dir());
    drop(c);
    assert!(!root.exists(), "{} left behind", root.display());
    assert!(!accepts_tcp(port), "postgres still listens on {port}");
}

#[test]
fn a_tls_cluster_serves_tls_only_with_a_certificate_from_its_ca() {
    let c = Cluster::start_tls();
    let ca = c.ca_pem_path().expect("TLS cluster has a CA");
    assert!(ca.is_file());
    let base = c.superuser_url();
    let full = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    let on = c.sql_at(&full, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert_eq!(on.as_deref(), Ok("t"));
    let plain = c.sql_at(&format!("{base}?sslmode=disable"), "SELECT 1");
    assert!(plain.is_err(), "a TLS cluster must refuse plaintext TCP logins");
    assert!(Cluster::start().ca_pem_path().is_none());
}

/// Set in the child that `a_killed_test_process_leaves_nothing_behind` starts.
const CHILD: &str = "COFFER_PGTEST_KILLED_CHILD";

#[test]
fn a_killed_test_process_leaves_nothing_behind() {
    if std::env::var_os(CHILD).is_some() {
        // The child: hold the shared cluster, say where it is, then die by SIGKILL without
        // running any destructor.
        let c = Cluster::shared();
        println!("CLUSTER {} {}", c.port(), c.root_dir().display());
        std::io::stdout().flush().expect("flush");
        let _ = Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
        std::thread::sleep(Duration::from_secs(60));
        panic!("SIGKILL did not arrive");
    }
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["--exact", "tests::a_killed_test_process_leaves_nothing_behind"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("CLUSTER ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("child did not start a cluster:\n{stdout}"));
    let (port, root) = line.split_once(' ').expect("port and dir");
    let port: u16 = port.parse().expect("port");
    let root = PathBuf::from(root);
    assert!(!out.status.success(), "the child was killed");
    eventually("the cluster's dir is removed", || !root.exists());
    eventually("postgres stops listening", || !accepts_tcp(port));
}

#[test]
fn passwords_stay_off_psqls_command_line_and_out_of_panic_messages() {
    let (url, pw) = split_password("postgres://u:p%40ss@127.0.0.1:5/db?sslmode=disable");
    assert_eq!(url, "postgres://u@127.0.0.1:5/db?sslmode=disable");
    assert_eq!(pw.as_deref(), Some("p@ss"));
    assert_eq!(split_password("postgres://u@h/db").1, None);
    assert_eq!(
        redact_passwords("CREATE ROLE a PASSWORD 'x1'; alter role b with password 'y2'"),
        "CREATE ROLE a PASSWORD '***'; alter role b with password '***'"
    );
}

#[test]
fn urls_encode_what_urls_cannot_hold() {
    assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
    assert_eq!(percent_encode("plain-1._~"), "plain-1._~");
}
