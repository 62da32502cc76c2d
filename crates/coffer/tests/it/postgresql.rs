//! The binary on PostgreSQL storage, whatever COFFER_TEST_STORAGE says: start-up refuses a
//! database it cannot log in to, naming host and database but never the password, and takes
//! the connection URL from the environment when the file has none.

use std::process::Command;

use coffer_pgtest::Cluster;

use crate::common::{BIN, stderr, tempdir};

fn config_without_url() -> &'static str {
    "storage \"postgresql\" {\n  table = \"coffer_kv\"\n}\nlistener \"tcp\" {\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}\n"
}

#[test]
fn start_up_fails_on_a_refused_login_without_showing_the_password() {
    let cluster = Cluster::shared();
    let dir = tempdir();
    let cfg = dir.path().join("coffer.hcl");
    std::fs::write(&cfg, config_without_url()).expect("write");
    let secret = "NotThePassw0rd-Sentinel";
    let url = cluster.url_for("coffer_admin", secret, "postgres");
    let out = Command::new(BIN)
        .args(["server", "-config"])
        .arg(&cfg)
        .env("COFFER_PG_CONNECTION_URL", &url)
        .output()
        .expect("run");
    assert!(!out.status.success(), "started with a wrong password");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(all.contains(&format!("127.0.0.1:{}/postgres", cluster.port())), "{all}");
    assert!(!all.contains(secret), "the password is shown: {all}");
}

#[test]
fn the_connection_url_comes_from_vaults_variable_when_the_file_has_none() {
    let cluster = Cluster::shared();
    let url = cluster.create_database("it_from_env");
    let dir = tempdir();
    let cfg = dir.path().join("coffer.hcl");
    std::fs::write(&cfg, config_without_url()).expect("write");
    // `-dev` is not used: the config file is the thing under test. The server is stopped as soon
    // as it has created its table, which proves it reached the database named in the variable.
    let mut child = Command::new(BIN)
        .args(["server", "-config"])
        .arg(&cfg)
        .env("VAULT_PG_CONNECTION_URL", &url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let started = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .any(|l| l.contains("Coffer server started"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "server did not start on VAULT_PG_CONNECTION_URL");
    assert_eq!(cluster.sql("it_from_env", "SELECT to_regclass('coffer_kv') IS NOT NULL"), "t");
}
