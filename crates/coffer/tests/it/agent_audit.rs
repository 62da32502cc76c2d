//! The audit of delivery end to end: a real server with a file audit device, a real agent in
//! exec mode (approle), a secret updated, the app exiting. The audit log tells which agent
//! (accessor, role, pod, container) got which secret path where and when, when it got it again
//! after the change and when it was removed, and holds no secret value in clear.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agent::{
    Agent, bootstrap, exec_app, put, role_id, secret_id, server_on_fixed_port, setup,
};
use crate::audit::{enable_file_device, entries};
use crate::common::{Server, tempdir};

/// The accessor of the one token whose metadata names role `web`.
async fn agent_accessor(s: &Server, root: &str) -> String {
    let (code, list) = s.call("LIST", "auth/token/accessors", Some(root), None).await;
    assert_eq!(code, 200, "{list}");
    for a in list["data"]["keys"].as_array().expect("keys") {
        let body = json!({"accessor": a});
        let (_, t) = s.call("POST", "auth/token/lookup-accessor", Some(root), Some(body)).await;
        if t["data"]["meta"]["role_name"] == "web" {
            return a.as_str().expect("accessor").to_owned();
        }
    }
    panic!("no token of role web among {list}");
}

/// The request entries of delivery reports, once `want` of them are in the log.
pub(crate) fn reports(log: &Path, want: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let found: Vec<Value> = entries(log)
            .into_iter()
            .filter(|e| e["type"] == "request" && e["request"]["path"] == "sys/agent/delivery")
            .collect();
        if found.len() >= want || start.elapsed() > Duration::from_secs(10) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn the_audit_log_shows_each_delivery_redelivery_and_removal_per_agent_without_values() {
    let dir = tempdir();
    let (s, _, root) = server_on_fixed_port(dir.path()).await;
    let log = dir.path().join("audit.log");
    enable_file_device(&s, &root, &log).await;
    setup(&s, &root, "delivery-canary-1").await;
    let rid = role_id(&s, &root).await;
    let sid_value = secret_id(&s, &root).await;
    let (role, sid) = bootstrap(dir.path(), &rid, &sid_value);
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("db-password");
    let stop = dir.path().join("stop");
    // The app runs until told to stop, then exits 0.
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done\nexit 0\n", stop.display());
    let exec = "  restart_on_secret_changes = \"always\"\n";
    let config = exec_app(dir.path(), &s.addr, (&role, &sid), &dest, &script, exec)
        + "template_config {\n  static_secret_render_interval = \"1s\"\n}\n";
    let env = [("POD_NAME", "web-7d9"), ("CONTAINER_NAME", "app")];
    let mut agent = Agent::start_with_env(dir.path(), &config, &env);
    agent.wait_for_content(&dest, "delivery-canary-1", Duration::from_secs(15));
    put(&s, &root, "delivery-canary-2").await;
    agent.wait_for_content(&dest, "delivery-canary-2", Duration::from_secs(10));
    // Both redeliveries (the file, the environment) are reported before the app stops.
    reports(&log, 4);
    std::fs::write(&stop, "").expect("stop");
    let st = agent.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0), "{}", agent.logs());
    assert!(!dest.exists(), "the rendered file is removed at exit");

    let found = reports(&log, 5);
    let file = dest.display().to_string();
    let summary: Vec<(String, String, Vec<String>)> = found
        .iter()
        .map(|e| {
            let d = &e["request"]["data"];
            let list = |k: &str| -> Vec<String> {
                d[k].as_array()
                    .map(|a| a.iter().map(|x| x.as_str().unwrap_or("?").to_owned()).collect())
                    .unwrap_or_default()
            };
            (
                d["event"].as_str().unwrap_or("?").to_owned(),
                d["reason"].as_str().unwrap_or("?").to_owned(),
                list("destinations"),
            )
        })
        .collect();
    let has = |event: &str, reason: &str, dests: &[&str]| {
        summary.iter().any(|(e, r, d)| e == event && r == reason && d == dests)
    };
    assert!(has("delivered", "initial", &[&file]), "{summary:?}");
    assert!(has("delivered", "initial", &["env:DB_PASSWORD"]), "{summary:?}");
    assert!(has("redelivered", "rotation", &[&file]), "{summary:?}");
    assert!(has("redelivered", "rotation", &["env:DB_PASSWORD"]), "{summary:?}");
    assert!(has("removed", "exit", &[&file, "env:DB_PASSWORD"]), "{summary:?}");
    assert_eq!(summary.len(), 5, "one report per event: {summary:?}");

    // Every entry names the same agent: its token's accessor (as the device's HMAC), the role
    // the server verified, the pod and container the agent said, one instance id; and the
    // secret path in clear.
    let accessor = agent_accessor(&s, &root).await;
    let (_, h) =
        s.call("POST", "sys/audit-hash/file", Some(&root), Some(json!({"input": accessor}))).await;
    let hashed = h["data"]["hash"].clone();
    let instance = found[0]["request"]["data"]["agent"]["instance"].clone();
    assert!(instance.as_str().is_some_and(|i| i.len() == 16), "{instance}");
    for e in &found {
        assert_eq!(e["auth"]["accessor"], hashed, "{e}");
        assert_eq!(e["auth"]["metadata"]["role_name"], "web", "{e}");
        assert_eq!(e["auth"]["policies"], json!(["default", "web"]), "{e}");
        let d = &e["request"]["data"];
        assert_eq!(d["paths"], json!(["secret/data/web/db"]), "{e}");
        assert_eq!(d["agent"]["pod"], "web-7d9", "{e}");
        assert_eq!(d["agent"]["container"], "app", "{e}");
        assert_eq!(d["agent"]["instance"], instance, "{e}");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }

    // No secret value, nor the bootstrap credential, anywhere in the log in clear.
    let text = std::fs::read_to_string(&log).expect("log");
    for secret in ["delivery-canary-1", "delivery-canary-2", sid_value.as_str()] {
        assert!(!text.contains(secret), "a secret in the audit log in clear");
    }
    let metrics_free = agent.logs();
    assert!(!metrics_free.contains("delivery report failed"), "{metrics_free}");
}
