//! `seal "transit"` against a real OpenBao (`bao server`): a namespace (X-Vault-Namespace), token
//! renewal in the background (and none with `disable_renewal`), a revoked token reported as lost,
//! and the TLS keys `tls_ca_cert`, `tls_server_name` and `tls_skip_verify`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Server, default_config, free_port, tempdir};

struct Bao {
    child: Child,
    /// Plain HTTP, for the test's own calls.
    http: String,
    /// TLS with a certificate for `kms.test` only (not for 127.0.0.1).
    https: String,
    ca: std::path::PathBuf,
    root: String,
    log: std::path::PathBuf,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    async fn start(dir: &std::path::Path) -> Bao {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["kms.test".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        std::fs::create_dir_all(dir).expect("dir");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_cert.pem()).expect("ca");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key");
        let (p1, p2) = (free_port(), free_port());
        let cfg = dir.join("bao.hcl");
        std::fs::write(
            &cfg,
            format!(
                "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{p1}\"\n  tls_disable = true\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{p2}\"\n  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n}}\ndisable_mlock = true\nlog_level = \"info\"\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        )
        .expect("config");
        let log = dir.join("bao.log");
        let child = Command::new(crate::differential::bao_binary())
            .args(["server", "-config"])
            .arg(&cfg)
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(std::fs::File::create(dir.join("bao.err")).expect("log")))
            .spawn()
            .expect("spawn bao");
        let mut bao = Bao {
            child,
            http: format!("http://127.0.0.1:{p1}"),
            https: format!("https://127.0.0.1:{p2}"),
            ca,
            root: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/v1/sys/health", bao.http)).await.is_err() {
            assert!(Instant::now() < deadline, "bao did not answer: {}", bao.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (s, b) = bao
            .call("PUT", "sys/init", None, json!({"secret_shares": 1, "secret_threshold": 1}))
            .await;
        assert_eq!(s, 200, "{b}");
        let key = b["keys_base64"][0].as_str().expect("key").to_owned();
        bao.root = b["root_token"].as_str().expect("root").to_owned();
        let (s, b) = bao.call("PUT", "sys/unseal", None, json!({ "key": key })).await;
        assert_eq!((s, &b["sealed"]), (200, &json!(false)), "{b}");
        bao
    }

    fn logs(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(self.log.with_file_name("bao.err")).unwrap_or_default()
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        namespace: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method.parse().expect("method"), format!("{}/v1/{path}", self.http))
            .json(&body);
        if !self.root.is_empty() {
            req = req.header("X-Vault-Token", &self.root);
        }
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let r = req.send().await.expect("bao request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or_default())
    }

    /// A transit key `autounseal` at `transit/` (in `ns` when given), and a token of `ttl` that
    /// may only encrypt and decrypt with it.
    async fn transit_token(&self, ns: Option<&str>, ttl: &str) -> String {
        for (path, body) in [
            ("sys/mounts/transit", json!({"type": "transit"})),
            ("transit/keys/autounseal", json!({})),
            (
                "sys/policies/acl/seal",
                json!({"policy": "path \"transit/encrypt/autounseal\" { capabilities = [\"update\"] }\npath \"transit/decrypt/autounseal\" { capabilities = [\"update\"] }"}),
            ),
        ] {
            let (s, b) = self.call("POST", path, ns, body).await;
            assert!(
                s == 200 || s == 204 || (s == 400 && path == "sys/mounts/transit"),
                "{path}: {s} {b}"
            );
        }
        let (s, b) = self
            .call(
                "POST",
                "auth/token/create",
                ns,
                json!({"policies": ["seal"], "ttl": ttl, "no_parent": true}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["auth"]["renewable"], json!(true), "{b}");
        b["auth"]["client_token"].as_str().expect("token").to_owned()
    }

    /// The token's remaining TTL, or the status of a failed lookup.
    async fn ttl(&self, ns: Option<&str>, token: &str) -> Result<u64, u16> {
        let (s, b) = self.call("POST", "auth/token/lookup", ns, json!({ "token": token })).await;
        if s == 200 { Ok(b["data"]["ttl"].as_u64().expect("ttl")) } else { Err(s) }
    }
}

async fn sealed(s: &Server) -> bool {
    s.call("GET", "sys/seal-status", None, None).await.1["sealed"] != json!(false)
}

async fn wait_unsealed(s: &Server, within: Duration) {
    let start = Instant::now();
    while sealed(s).await {
        assert!(start.elapsed() < within, "still sealed after {within:?}: {}", s.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_log(s: &Server, what: &str, within: Duration) {
    let start = Instant::now();
    while !s.logs().contains(what) {
        assert!(start.elapsed() < within, "{what:?} not logged within {within:?}: {}", s.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `base` (a config from `default_config`, made once per node: on PostgreSQL each call makes a
/// new database) with a transit seal stanza.
fn seal(base: &str, body: &str) -> String {
    format!("{base}seal \"transit\" {{\n{body}}}\n")
}

async fn init(s: &Server) {
    let (code, b) = s
        .call("PUT", "sys/init", None, Some(json!({"recovery_shares": 1, "recovery_threshold": 1})))
        .await;
    assert_eq!(code, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespaced_seal_token_is_renewed_and_a_revoked_one_is_reported_lost() {
    let dir = tempdir();
    let bao = Bao::start(&dir.path().join("bao")).await;
    let (s, b) = bao.call("POST", "sys/namespaces/ns1", None, json!({})).await;
    assert_eq!(s, 200, "{b}");
    let ns = Some("ns1");
    // Tokens of 6 s: one renewed by its node, one not (disable_renewal).
    let renewed = bao.transit_token(ns, "6s").await;
    let unrenewed = bao.transit_token(ns, "6s").await;
    let stanza = |token: &str, extra: &str| {
        format!(
            "  address = \"{}\"\n  token = \"{token}\"\n  key_name = \"autounseal\"\n  mount_path = \"transit/\"\n  namespace = \"ns1/\"\n{extra}",
            bao.http
        )
    };
    let d1 = dir.path().join("renewing");
    let mut node =
        Server::start_with(&d1, &seal(&default_config(&d1), &stanza(&renewed, "")), "http");
    let d2 = dir.path().join("not-renewing");
    let other = Server::start_with(
        &d2,
        &seal(&default_config(&d2), &stanza(&unrenewed, "  disable_renewal = \"true\"\n")),
        "http",
    );
    init(&node).await;
    init(&other).await;
    wait_unsealed(&node, Duration::from_secs(10)).await;
    wait_unsealed(&other, Duration::from_secs(10)).await;
    // The key lives in the namespace only: the seal sent X-Vault-Namespace.
    let (s, _) = bao.call("GET", "transit/keys/autounseal", None, json!({})).await;
    assert_eq!(s, 404, "the key is not outside ns1");

    // Past the tokens' first TTL: the renewed one lives on, the other has expired.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let ttl = bao.ttl(ns, &renewed).await;
    assert!(ttl.is_ok_and(|t| t > 0), "the seal token was not renewed: {ttl:?}\n{}", node.logs());
    assert!(bao.ttl(ns, &unrenewed).await.is_err(), "disable_renewal: the token should expire");
    // A restart unwraps the unseal key with the renewed token.
    node.restart();
    wait_unsealed(&node, Duration::from_secs(10)).await;

    // Revoked: the node says so at its next renewal (within 2/3 of 6 s), naming what to do.
    let (s, b) = bao.call("POST", "auth/token/revoke", ns, json!({ "token": renewed })).await;
    assert_eq!(s, 204, "{b}");
    wait_log(&node, "the token is lost", Duration::from_secs(8)).await;
    node.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(sealed(&node).await, "unsealed with a revoked token");
    wait_log(&node, "the seal token was refused", Duration::from_secs(5)).await;
    for (n, t) in [(&node, &renewed), (&other, &unrenewed)] {
        assert!(!n.logs().contains(t.as_str()), "the seal token reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_and_tls_skip_verify_reach_a_server_whose_certificate_names_another_host() {
    let dir = tempdir();
    let bao = Bao::start(&dir.path().join("bao")).await;
    let token = bao.transit_token(None, "1h").await;
    let d = dir.path().join("node");
    let cfg = default_config(&d);
    let base = format!(
        "  address = \"{}\"\n  token = \"{token}\"\n  key_name = \"autounseal\"\n",
        bao.https
    );
    let ca = format!("  tls_ca_cert = \"{}\"\n", bao.ca.display());
    // The certificate names kms.test, not 127.0.0.1: the CA alone is not enough.
    let mut node = Server::start_with(&d, &seal(&cfg, &format!("{base}{ca}")), "http");
    let (code, b) = node
        .call("PUT", "sys/init", None, Some(json!({"recovery_shares": 1, "recovery_threshold": 1})))
        .await;
    assert!(code >= 500, "init through a certificate for another name: {code} {b}");
    std::fs::write(
        &node.config,
        seal(&cfg, &format!("{base}{ca}  tls_server_name = \"kms.test\"\n")),
    )
    .expect("config");
    node.restart();
    init(&node).await;
    wait_unsealed(&node, Duration::from_secs(10)).await;
    // No CA, verification off: it unseals, and the start-up log warns.
    std::fs::write(&node.config, seal(&cfg, &format!("{base}  tls_skip_verify = \"true\"\n")))
        .expect("config");
    node.restart();
    wait_unsealed(&node, Duration::from_secs(10)).await;
    assert!(node.logs().contains("tls_skip_verify is set"), "{}", node.logs());
    // No CA and verification on: the server's certificate is refused, the node stays sealed.
    std::fs::write(&node.config, seal(&cfg, &base)).expect("config");
    node.restart();
    wait_log(&node, "auto-unseal failed", Duration::from_secs(5)).await;
    assert!(sealed(&node).await);
}

/// `sys/init` fails (the seal cannot wrap the key), and the node's log says `want`.
async fn init_fails_naming(node: &Server, want: &str) {
    let (code, b) = node
        .call("PUT", "sys/init", None, Some(json!({"recovery_shares": 1, "recovery_threshold": 1})))
        .await;
    assert!(code >= 500, "init went through: {code} {b}");
    assert!(node.logs().contains(want), "{want:?} not logged: {}", node.logs());
}

/// A client of `kms` (a listener that requires client certificates) with `pki`'s CA and
/// client certificate.
fn mtls_client(pki: &crate::tls::Pki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).expect("ca")).expect("ca");
    let mut pem = std::fs::read(&pki.client_cert).expect("cert");
    pem.extend(std::fs::read(&pki.client_key).expect("key"));
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(reqwest::Identity::from_pem(&pem).expect("identity"))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_a_coffer_transit_server_that_requires_client_certificates() {
    let dir = tempdir();
    let kms_dir = dir.path().join("kms");
    std::fs::create_dir_all(&kms_dir).expect("dir");
    let pki = crate::tls::pki(&kms_dir);
    // Another CA, with a client certificate of its own: trusted by no one here.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).expect("dir");
    let other = crate::tls::pki(&other_dir);
    let listener = format!(
        "  tls_client_ca_file = \"{}\"\n  tls_require_and_verify_client_cert = true\n",
        pki.ca.display()
    );
    let kms =
        Server::start_with(&kms_dir, &crate::tls::tls_config(&kms_dir, &pki, &listener), "https");
    let http = mtls_client(&pki);
    let call = |method: &str, path: &str, token: Option<&str>, body: Value| {
        let mut req = http
            .request(method.parse().expect("method"), format!("{}/v1/{path}", kms.addr))
            .json(&body);
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        async move {
            let r = req.send().await.expect("kms request");
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (s, b) =
        call("PUT", "sys/init", None, json!({"secret_shares": 1, "secret_threshold": 1})).await;
    assert_eq!(s, 200, "{b}");
    let root = b["root_token"].as_str().expect("root").to_owned();
    let (s, b) = call("PUT", "sys/unseal", None, json!({"key": b["keys"][0]})).await;
    assert_eq!((s, &b["sealed"]), (200, &json!(false)), "{b}");
    let (s, b) = call("POST", "sys/mounts/transit", Some(&root), json!({"type": "transit"})).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = call("POST", "transit/keys/autounseal", Some(&root), json!({})).await;
    assert!(s == 200 || s == 204, "{b}");

    let d = dir.path().join("node");
    let cfg = default_config(&d);
    let stanza = |ca: &std::path::Path, client: Option<&crate::tls::Pki>| {
        let mut body = format!(
            "  address = \"{}\"\n  token = \"{root}\"\n  key_name = \"autounseal\"\n  disable_renewal = \"true\"\n  key_id_prefix = \"kms-\"\n  tls_ca_cert = \"{}\"\n",
            kms.addr,
            ca.display()
        );
        if let Some(c) = client {
            body.push_str(&format!(
                "  tls_client_cert = \"{}\"\n  tls_client_key = \"{}\"\n",
                c.client_cert.display(),
                c.client_key.display()
            ));
        }
        seal(&cfg, &body)
    };
    // No client certificate: the transit server's refusal names the options to set.
    let mut node = Server::start_with(&d, &stanza(&pki.ca, None), "http");
    init_fails_naming(
        &node,
        "the transit server requires a client certificate: set tls_client_cert and tls_client_key",
    )
    .await;
    // The wrong CA: the transit server's certificate is not trusted.
    std::fs::write(&node.config, stanza(&other.ca, Some(&pki))).expect("config");
    node.restart();
    init_fails_naming(&node, "it is not signed by a CA in tls_ca_cert").await;
    // A client certificate the transit server does not trust.
    std::fs::write(&node.config, stanza(&pki.ca, Some(&other))).expect("config");
    node.restart();
    init_fails_naming(&node, "refused the client certificate in tls_client_cert").await;

    // The CA and a client certificate it trusts: init wraps the key over mutual TLS, and a
    // restart unwraps it; the key id recorded with it is the prefix and the key's version.
    std::fs::write(&node.config, stanza(&pki.ca, Some(&pki))).expect("config");
    node.restart();
    init(&node).await;
    wait_unsealed(&node, Duration::from_secs(10)).await;
    node.restart();
    wait_unsealed(&node, Duration::from_secs(10)).await;
    wait_log(&node, "key_id=kms-v1", Duration::from_secs(2)).await;
    // Restarted without the client certificate: it stays sealed and says which options to set.
    std::fs::write(&node.config, stanza(&pki.ca, None)).expect("config");
    node.restart();
    wait_log(&node, "auto-unseal failed", Duration::from_secs(5)).await;
    assert!(node.logs().contains("set tls_client_cert and tls_client_key"), "{}", node.logs());
    assert!(sealed(&node).await);
    let logs = node.logs();
    assert!(!logs.contains(&root), "the transit token reached the log");
    assert!(!logs.contains("vault:v1:"), "the wrapped key reached the log");
    assert!(!logs.contains("PRIVATE KEY"), "the client key reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transit_server_that_never_answers_is_given_up_on_and_logged_within_the_timeout() {
    // Accepts connections and never answers: the stall a loaded or wedged transit server shows.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = stalled.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in stalled.incoming() {
            held.push(c);
        }
    });
    let d = tempdir();
    let dir = d.path().join("node");
    let node = Server::start_with(
        &dir,
        &seal(
            &default_config(&dir),
            &format!(
                "  address = \"http://127.0.0.1:{port}\"\n  token = \"t\"\n  key_name = \"autounseal\"\n  disable_renewal = \"true\"\n"
            ),
        ),
        "http",
    );
    let started = Instant::now();
    let init = {
        let (addr, http) = (node.addr.clone(), node.http());
        tokio::spawn(async move {
            http.put(format!("{addr}/v1/sys/init"))
                .json(&json!({"recovery_shares": 1, "recovery_threshold": 1}))
                .send()
                .await
        })
    };
    // The first attempt is given up on after 10 s, and the log says so at once.
    wait_log(&node, "seal \"transit\": call failed; retrying", Duration::from_secs(13)).await;
    assert!(started.elapsed() >= Duration::from_secs(9), "gave up early: {:?}", started.elapsed());
    assert!(node.logs().contains("no answer within 10 s"), "{}", node.logs());
    assert!(!init.is_finished(), "init should still be retrying");
    init.abort();
}
