//! `sys/metrics` through HTTP and the CLI: Vault's JSON format and Prometheus text (checked by a
//! strict parser of the 0.0.4 text format below), authenticated by default and open on a
//! listener with `telemetry { unauthenticated_metrics_access = true }`, and no secret in any
//! name, label or value.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::common::{Server, ok, storage_block, tempdir};

/// GET `sys/metrics` with an optional token and query; (status, content type, body).
async fn scrape(s: &Server, token: Option<&str>, query: &str) -> (u16, String, String) {
    let mut rb = s.http().get(format!("{}/v1/sys/metrics{query}", s.addr));
    if let Some(t) = token {
        rb = rb.header("X-Vault-Token", t);
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (status, ct, resp.text().await.expect("body"))
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// A strict reader of the text exposition format 0.0.4: every line a comment (`# HELP`/`# TYPE`)
/// or a sample; names and label names well formed; label values with only `\\`, `\"`, `\n`
/// escapes; each family's TYPE once, before its samples, and its samples together; summary
/// samples only `_sum`, `_count` or quantiles. Returns the samples and each family's type.
fn parse_prometheus(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "no empty lines: {text}");
        if let Some(rest) = line.strip_prefix("# ") {
            let (kw, rest) = rest.split_once(' ').expect("comment keyword");
            let (name, val) = rest.split_once(' ').expect("comment name and text");
            assert!(is_name(name), "name {name:?}");
            match kw {
                "HELP" => assert!(!val.is_empty()),
                "TYPE" => {
                    assert!(["counter", "gauge", "summary", "histogram", "untyped"].contains(&val));
                    assert!(
                        types.insert(name.to_owned(), val.to_owned()).is_none(),
                        "TYPE {name} twice"
                    );
                    if let Some(prev) = current.replace(name.to_owned()) {
                        done.insert(prev);
                    }
                }
                other => panic!("unknown comment {other:?}"),
            }
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = match value {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value {v:?} in {line:?}")),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(is_name(&key) && !key.starts_with("__"), "label name {key:?}");
                    assert_eq!(chars.next(), Some('"'), "label value opens in {line}");
                    let mut v = String::new();
                    loop {
                        match chars.next().expect("label value closes") {
                            '\\' => match chars.next() {
                                Some('\\') => v.push('\\'),
                                Some('"') => v.push('"'),
                                Some('n') => v.push('\n'),
                                other => panic!("bad escape {other:?} in {line}"),
                            },
                            '"' => break,
                            c => v.push(c),
                        }
                    }
                    assert!(labels.insert(key, v).is_none(), "label twice in {line}");
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        Some(c) => panic!("unexpected {c:?} in {line}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "sample name {name:?}");
        let family = current.clone().expect("a sample follows its TYPE");
        assert!(!done.contains(&family));
        let ty = &types[&family];
        let ok_name = if ty == "summary" {
            name == format!("{family}_sum")
                || name == format!("{family}_count")
                || (name == family && labels.contains_key("quantile"))
        } else {
            name == family
        };
        assert!(ok_name, "sample {name} in family {family} ({ty})");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    (samples, types)
}

fn sample<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
    })
}

/// Mounts kv v2 and approle, reads and writes a secret, and logs in once right and once wrong.
/// Returns the secrets that must never appear in metrics.
async fn exercise(s: &Server, root: &str) -> Vec<String> {
    for (path, body) in [
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        ("sys/auth/approle", json!({"type": "approle"})),
        ("auth/approle/role/web", json!({"token_policies": ["default"]})),
    ] {
        let (code, b) = s.call("POST", path, Some(root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {b}");
    }
    let (code, b) = s
        .call(
            "POST",
            "secret/data/app",
            Some(root),
            Some(json!({"data": {"pw": "hunter2-metrics"}})),
        )
        .await;
    assert_eq!(code, 200, "{b}");
    let (code, _) = s.call("GET", "secret/data/app", Some(root), None).await;
    assert_eq!(code, 200);
    let (role_id, secret_id) = s.approle_credentials(root, "web").await;
    let (code, b) = s.approle_login(&role_id, &secret_id).await;
    assert_eq!(code, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();
    let (code, _) = s.approle_login(&role_id, "wrong").await;
    assert_eq!(code, 400);
    vec![root.to_owned(), role_id, secret_id, token, "hunter2-metrics".to_owned()]
}

#[tokio::test]
async fn metrics_in_json_and_prometheus_text_count_requests_logins_and_tokens() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let secrets = exercise(&s, &root).await;

    // Vault's JSON format is the default.
    let (code, ct, body) = scrape(&s, Some(&root), "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ct, "application/json");
    let v: Value = serde_json::from_str(&body).expect("json");
    for k in ["Timestamp", "Gauges", "Points", "Counters", "Samples"] {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }
    assert!(v["Timestamp"].as_str().expect("ts").ends_with(" +0000 UTC"));
    let gauge = |name: &str| {
        v["Gauges"].as_array().expect("gauges").iter().find(|g| g["Name"] == name).cloned()
    };
    assert_eq!(gauge("vault.core.unsealed").expect("unsealed")["Value"], json!(1.0));
    // Root, and the approle login's token.
    assert!(gauge("vault.token.count").expect("tokens")["Value"].as_f64().expect("n") >= 2.0);
    assert!(gauge("vault.expire.num_leases").is_some());
    let samples = v["Samples"].as_array().expect("samples");
    let read = samples.iter().find(|x| x["Name"] == "vault.route.read.secret-").expect("route");
    assert_eq!(read["Count"], json!(1));
    assert_eq!(read["Labels"]["mount_point"], "secret/");
    for k in ["Rate", "Sum", "Min", "Max", "Mean", "Stddev"] {
        assert!(read[k].is_number(), "{k}: {read}");
    }
    let counters = v["Counters"].as_array().expect("counters");
    let login = |outcome: &str| {
        counters
            .iter()
            .find(|c| {
                c["Name"] == "coffer.login"
                    && c["Labels"]["method"] == "approle"
                    && c["Labels"]["outcome"] == outcome
            })
            .map(|c| c["Count"].clone())
    };
    assert_eq!(login("success"), Some(json!(1)));
    assert_eq!(login("failure"), Some(json!(1)));

    // Prometheus text.
    let (code, ct, text) = scrape(&s, Some(&root), "?format=prometheus").await;
    assert_eq!(code, 200, "{text}");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let (samples, types) = parse_prometheus(&text);
    assert_eq!(types["vault_core_handle_request"], "summary");
    assert_eq!(types["vault_token_count"], "gauge");
    assert_eq!(types["vault_audit_log_request_failure"], "counter");
    let one = |name: &str, labels: &[(&str, &str)]| {
        sample(&samples, name, labels)
            .unwrap_or_else(|| panic!("{name} {labels:?} in {text}"))
            .value
    };
    assert_eq!(one("vault_core_unsealed", &[]), 1.0);
    assert!(one("vault_core_handle_request_count", &[]) >= 5.0);
    assert!(one("vault_core_handle_login_request_count", &[]) >= 2.0);
    assert_eq!(one("vault_route_read_secret__count", &[("mount_point", "secret/")]), 1.0);
    let written = ["create", "update"].iter().filter_map(|op| {
        sample(&samples, &format!("vault_route_{op}_secret__count"), &[("mount_point", "secret/")])
    });
    assert_eq!(written.map(|x| x.value).sum::<f64>(), 1.0, "{text}");
    assert!(one("vault_route_read_sys__count", &[("mount_point", "sys/")]) >= 1.0);
    let login = [("method", "approle"), ("mount_point", "auth/approle/")];
    assert_eq!(one("coffer_login", &[login[0], login[1], ("outcome", "success")]), 1.0);
    assert_eq!(one("coffer_login", &[login[0], login[1], ("outcome", "failure")]), 1.0);
    assert!(one("coffer_storage_get_count", &[]) > 0.0);
    assert!(one("coffer_storage_put_count", &[]) + one("coffer_storage_batch_count", &[]) > 0.0);
    assert!(one("vault_audit_log_request_count", &[]) >= 5.0);
    assert_eq!(one("vault_audit_log_request_failure", &[]), 0.0);
    assert!(one("vault_token_count", &[]) >= 2.0);
    assert!(sample(&samples, "coffer_expire_queue_length", &[]).is_some());

    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "a secret in the Prometheus text");
        assert!(!body.contains(secret.as_str()), "a secret in the JSON metrics");
    }

    // Prometheus's own scraper asks with Accept, without `format`, as Vault reads it.
    let resp = s
        .http()
        .get(format!("{}/v1/sys/metrics", s.addr))
        .header("X-Vault-Token", &root)
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .expect("send");
    let ct = resp.headers()["content-type"].to_str().expect("ct").to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_prometheus(&resp.text().await.expect("text"));

    // An unknown format is Vault's 400 with a text body.
    let (code, ct, body) = scrape(&s, Some(&root), "?format=statsd").await;
    assert_eq!(code, 400);
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(body, "metric response format \"statsd\" unknown");

    // The CLI reads it as any path.
    let out = ok(s.cli(Some(&root), &["read", "-format=json", "sys/metrics"]));
    let v: Value = serde_json::from_str(&out).expect("cli json");
    assert!(v["Gauges"].is_array(), "{v}");
}

#[tokio::test]
async fn metrics_need_a_token_with_read_on_sys_metrics_by_default() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let (code, _, _) = scrape(&s, None, "").await;
    assert_eq!(code, 403);
    for (name, policy) in [
        ("metrics", "path \"sys/metrics\" { capabilities = [\"read\"] }"),
        ("other", "path \"secret/*\" { capabilities = [\"read\"] }"),
    ] {
        s.put_policy(&root, name, policy).await;
    }
    let reader = s.token_with(&root, &["metrics"]).await;
    let other = s.token_with(&root, &["other"]).await;
    let (code, _, text) = scrape(&s, Some(&reader), "?format=prometheus").await;
    assert_eq!(code, 200, "{text}");
    parse_prometheus(&text);
    let (code, _, _) = scrape(&s, Some(&other), "?format=prometheus").await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn a_listener_with_unauthenticated_metrics_access_serves_them_without_a_token() {
    let dir = tempdir();
    let config = format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n  telemetry {{\n    unauthenticated_metrics_access = true\n  }}\n}}\ntelemetry {{\n  prometheus_retention_time = \"12h\"\n  disable_hostname = true\n}}\n",
        storage_block(dir.path(), crate::common::Storage::Default)
    );
    let s = Server::start_with(dir.path(), &config, "http");
    // Sealed (not even initialized): the seal state is what there is to report.
    let (code, _, text) = scrape(&s, None, "?format=prometheus").await;
    assert_eq!(code, 200, "{text}");
    let (samples, _) = parse_prometheus(&text);
    assert_eq!(sample(&samples, "vault_core_unsealed", &[]).expect("unsealed").value, 0.0);
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    let (code, _, text) = scrape(&s, None, "?format=prometheus").await;
    assert_eq!(code, 200);
    let (samples, _) = parse_prometheus(&text);
    assert_eq!(sample(&samples, "vault_core_unsealed", &[]).expect("unsealed").value, 1.0);
    assert!(!text.contains(&root));
    let (code, ct, _) = scrape(&s, None, "").await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
}

#[tokio::test]
async fn prometheus_retention_time_zero_turns_the_prometheus_format_off() {
    let dir = tempdir();
    let config = format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n}}\ntelemetry {{\n  prometheus_retention_time = 0\n}}\n",
        storage_block(dir.path(), crate::common::Storage::Default)
    );
    let s = Server::start_with(dir.path(), &config, "http");
    let (keys, root) = s.init(1, 1).await;
    s.unseal(&keys).await;
    let (code, _, body) = scrape(&s, Some(&root), "?format=prometheus").await;
    assert_eq!((code, body.as_str()), (400, "prometheus is not enabled"));
    let (code, _, _) = scrape(&s, Some(&root), "").await;
    assert_eq!(code, 200);
}

#[test]
fn unknown_telemetry_keys_are_refused_at_start_up() {
    let dir = tempdir();
    let config = format!(
        "{}listener \"tcp\" {{\n  address = \"127.0.0.1:0\"\n  tls_disable = true\n  telemetry {{\n    metrics_only = true\n  }}\n}}\n",
        storage_block(dir.path(), crate::common::Storage::Sqlite)
    );
    let path = dir.path().join("bad.hcl");
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(crate::common::BIN)
        .args(["server", &format!("-config={}", path.display())])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metrics_only") && err.contains("unauthenticated_metrics_access"),
        "{err}"
    );
}
