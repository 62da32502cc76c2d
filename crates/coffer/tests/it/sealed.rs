//! Sealed responses end to end (`X-Coffer-Seal-To`): the real server, the `coffer_api` client
//! and the CLI, with every byte the server sends captured by a TCP relay in between, as a proxy
//! or TLS terminator would see them. The canary must be absent there, and present once opened.

use std::sync::{Arc, Mutex};

use coffer_api::{Client, ClientConfig, SealKey};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Server, ok, tempdir};

const CANARY: &str = "canary-5ea1ed-9c1d";

/// A TCP relay between clients and the server that keeps a copy of every byte the server sent.
pub(crate) struct Relay {
    pub(crate) addr: String,
    from_server: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    pub(crate) async fn start(server: &Server) -> Relay {
        let upstream = server.addr.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let from_server = Arc::new(Mutex::new(Vec::new()));
        let seen = from_server.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.expect("connect upstream");
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                    let _ = sw.shutdown().await;
                });
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        seen.lock().expect("lock").extend_from_slice(&buf[..n]);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = cw.shutdown().await;
                });
            }
        });
        Relay { addr, from_server }
    }

    /// Everything the server has sent so far, as text.
    pub(crate) fn wire(&self) -> String {
        String::from_utf8_lossy(&self.from_server.lock().expect("lock")).into_owned()
    }

    fn client(&self, token: &str, key: Option<Arc<SealKey>>) -> Client {
        let cfg = ClientConfig { address: self.addr.clone(), ..ClientConfig::default() };
        Client::new(&cfg).expect("client").with_token(Some(token.to_owned())).with_seal_key(key)
    }
}

fn key() -> Arc<SealKey> {
    Arc::new(SealKey::generate().expect("seal key"))
}

/// A ready server set up as [`setup`] says: (its directory, the server, the root token).
async fn ready() -> (tempfile::TempDir, Server, String) {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    setup(&s, &root).await;
    (dir, s, root)
}

/// kv v2 at `secret/` with the canary at `secret/app`, and an approle role `web` that reads it.
async fn setup(s: &Server, root: &str) {
    for (path, body) in [
        ("sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})),
        ("sys/auth/approle", json!({"type": "approle"})),
        (
            "sys/policies/acl/web",
            json!({"policy": "path \"secret/data/app\" { capabilities = [\"read\"] }"}),
        ),
    ] {
        let (code, b) = s.call("POST", path, Some(root), Some(body)).await;
        assert_eq!(code, 204, "{path}: {b}");
    }
    let (code, b) = s
        .call("POST", "secret/data/app", Some(root), Some(json!({"data": {"password": CANARY}})))
        .await;
    assert_eq!(code, 200, "{b}");
    let (code, b) = s
        .call("POST", "auth/approle/role/web", Some(root), Some(json!({"token_policies": "web"})))
        .await;
    assert_eq!(code, 204, "{b}");
}

#[tokio::test]
async fn a_sealed_read_puts_no_cleartext_on_the_wire_and_the_client_opens_it() {
    let (dir, s, root) = ready().await;
    let log = dir.path().join("audit.log");
    crate::audit::enable_file_device(&s, &root, &log).await;
    let relay = Relay::start(&s).await;

    let answer = relay.client(&root, Some(key())).read("secret/data/app").await.expect("read");
    assert_eq!(answer.data().expect("data")["data"]["password"], CANARY);
    let wire = relay.wire();
    assert!(wire.contains("\"sealed\":{\"version\":1"), "{wire}");
    assert!(!wire.contains(CANARY), "the canary crossed the wire in clear:\n{wire}");
    // The lease fields stay in clear beside the sealed parts.
    assert!(wire.contains("\"request_id\":") && wire.contains("\"data\":null"), "{wire}");

    // The audit entry is as for any read: values HMAC'd, and marked as sealed.
    let text = std::fs::read_to_string(&log).expect("audit log");
    assert!(!text.contains(CANARY));
    let entry: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .find(|e| e["type"] == "response" && e["request"]["path"] == "secret/data/app")
        .expect("response entry");
    assert_eq!(entry["response"]["sealed"], true);
    let hashed = entry["response"]["data"]["data"]["password"].as_str().expect("hmac");
    assert!(hashed.starts_with("hmac-sha256:"), "{hashed}");

    // A client that does not ask for sealing, a third-party one included, is served as before.
    let plain = relay.client(&root, None).read("secret/data/app").await.expect("read");
    assert_eq!(plain.data().expect("data")["data"]["password"], CANARY);
    assert!(plain.body.as_ref().is_some_and(|b| b.get("sealed").is_none()));
    let v = crate::approle::vault(&s, &root);
    let secret: Value = vaultrs::kv2::read(&v, "secret", "app").await.expect("vaultrs read");
    assert_eq!(secret["password"], CANARY);
}

#[tokio::test]
async fn a_sealed_login_puts_no_token_on_the_wire() {
    let (_dir, s, root) = ready().await;
    let (_, r) = s.call("GET", "auth/approle/role/web/role-id", Some(&root), None).await;
    let role_id = r["data"]["role_id"].as_str().expect("role id").to_owned();
    let (_, r) = s.call("POST", "auth/approle/role/web/secret-id", Some(&root), None).await;
    let secret_id = r["data"]["secret_id"].as_str().expect("secret id").to_owned();
    let relay = Relay::start(&s).await;

    let k = key();
    let workload = relay.client("", Some(k.clone())).with_token(None);
    let login = workload
        .write("auth/approle/login", &json!({"role_id": role_id, "secret_id": secret_id}))
        .await
        .expect("login");
    let env = login.envelope().expect("envelope");
    let auth = env.auth.expect("auth");
    let token = auth["client_token"].as_str().expect("client token").to_owned();
    let accessor = auth["accessor"].as_str().expect("accessor").to_owned();
    let wire = relay.wire();
    assert!(wire.contains("\"sealed\":"), "{wire}");
    assert!(!wire.contains(&token), "the client token crossed the wire in clear");
    assert!(!wire.contains(&accessor), "the accessor crossed the wire in clear");

    // The token works, and its reads come back sealed too.
    let app = relay.client(&token, Some(k));
    let read = app.read("secret/data/app").await.expect("read");
    assert_eq!(read.data().expect("data")["data"]["password"], CANARY);
    assert!(!relay.wire().contains(CANARY));
}

#[tokio::test]
async fn a_wrapped_answer_is_stored_sealed_and_only_the_key_holder_can_read_it() {
    let (_dir, s, root) = ready().await;
    let relay = Relay::start(&s).await;
    let k = key();

    // Wrap and seal in one request: the wrapping token itself comes back sealed.
    let wrapping = relay.client(&root, Some(k.clone())).with_wrap_ttl(Some("60s".into()));
    let answer = wrapping.read("secret/data/app").await.expect("wrapped read");
    let env = answer.envelope().expect("envelope");
    let info = env.wrap_info.expect("wrap_info");
    let wtoken = info["token"].as_str().expect("wrapping token").to_owned();
    assert_eq!(info["creation_path"], "secret/data/app");
    assert!(!relay.wire().contains(&wtoken), "the wrapping token crossed the wire in clear");

    // Unwrapped by a client without the key, the store gives back only the sealed form.
    let (code, body) = s.call("POST", "sys/wrapping/unwrap", Some(&wtoken), None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["data"].is_null() && body["sealed"].is_object(), "{body}");
    assert!(!body.to_string().contains(CANARY));
    // ... which the key holder opens, bound to the unwrap path and the wrapping token.
    let env: coffer_api::Envelope = serde_json::from_value(body).expect("envelope");
    let opened = k.open(&env, "sys/wrapping/unwrap", Some(&wtoken)).expect("open");
    assert_eq!(opened.data.expect("data")["data"]["password"], CANARY);
    assert!(k.open(&env, "sys/wrapping/unwrap", Some("another-token")).is_err());

    // The key holder unwrapping through the client gets it opened, the token in the body.
    let second = wrapping.read("secret/data/app").await.expect("wrapped read");
    let w2 = second.envelope().expect("env").wrap_info.expect("wrap_info")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    // A sealed wrapped answer cannot be rewrapped (the new token would not open it), and the
    // refusal leaves it unwrappable.
    let (code, body) =
        s.call("POST", "sys/wrapping/rewrap", Some(&root), Some(json!({"token": w2}))).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("cannot be rewrapped"), "{body}");
    let unwrapper = relay.client(&root, Some(k.clone()));
    let un = unwrapper.write("sys/wrapping/unwrap", &json!({"token": w2})).await.expect("unwrap");
    assert_eq!(un.data().expect("data")["data"]["password"], CANARY);
    assert!(!relay.wire().contains(CANARY));

    // An answer wrapped in clear and unwrapped with a key is sealed on the way out.
    let (code, b) = s
        .call_with("GET", "secret/data/app", Some(&root), None, &[("X-Vault-Wrap-TTL", "60s")])
        .await;
    assert_eq!(code, 200, "{b}");
    let w3 = b["wrap_info"]["token"].as_str().expect("token").to_owned();
    let un = relay.client(&w3, Some(k)).write("sys/wrapping/unwrap", &json!({})).await;
    assert_eq!(un.expect("unwrap").data().expect("data")["data"]["password"], CANARY);
    assert!(!relay.wire().contains(CANARY));
}

#[tokio::test]
async fn bad_seal_to_headers_are_refused_naming_the_problem_before_anything_runs() {
    let (_dir, s, root) = ready().await;
    let b64 = |b: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    };
    for (value, problem) in [
        ("%%%".to_owned(), "not base64url"),
        (b64(&[1u8; 16]), "16 bytes"),
        (b64(&[0u8; 32]), "low-order"),
    ] {
        let (code, body) = s
            .call_with(
                "POST",
                "secret/data/new",
                Some(&root),
                Some(json!({"data": {"password": "x"}})),
                &[("X-Coffer-Seal-To", &value)],
            )
            .await;
        assert_eq!(code, 400, "{value}: {body}");
        let msg = body["errors"][0].as_str().expect("error");
        assert!(msg.contains("X-Coffer-Seal-To") && msg.contains(problem), "{msg}");
    }
    let (code, _) = s.call("GET", "secret/data/new", Some(&root), None).await;
    assert_eq!(code, 404, "a refused request wrote nothing");
}

#[tokio::test]
async fn the_cli_reads_sealed_with_the_seal_flag() {
    let (_dir, s, root) = ready().await;
    let pw = ok(s.cli(Some(&root), &["kv", "get", "-seal", "-field=password", "secret/app"]));
    assert_eq!(pw.trim(), CANARY);
    let out = ok(s.cli(Some(&root), &["read", "-seal", "-format=json", "secret/data/app"]));
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["data"]["data"]["password"], CANARY);
    assert!(v.get("sealed").is_none(), "the CLI prints the opened answer: {v}");
}

#[tokio::test]
async fn a_policy_can_require_sealed_answers_on_a_path() {
    let (_dir, s, root) = ready().await;
    let policy = "path \"secret/data/app\" {\n  capabilities = [\"read\"]\n  require_sealed_response = true\n}\n";
    let (code, b) = s
        .call("PUT", "sys/policies/acl/sealed", Some(&root), Some(json!({"policy": policy})))
        .await;
    assert_eq!(code, 204, "{b}");
    let (code, b) = s
        .call("POST", "auth/token/create", Some(&root), Some(json!({"policies": ["sealed"]})))
        .await;
    assert_eq!(code, 200, "{b}");
    let token = b["auth"]["client_token"].as_str().expect("token").to_owned();

    let (code, b) = s.call("GET", "secret/data/app", Some(&token), None).await;
    assert_eq!(code, 400, "{b}");
    let msg = b["errors"][0].as_str().expect("error");
    assert!(
        msg.contains("requires a sealed response") && msg.contains("X-Coffer-Seal-To"),
        "{msg}"
    );
    assert!(!b.to_string().contains(CANARY));

    let relay = Relay::start(&s).await;
    let read = relay.client(&token, Some(key())).read("secret/data/app").await.expect("read");
    assert_eq!(read.data().expect("data")["data"]["password"], CANARY);
    assert!(!relay.wire().contains(CANARY));
}
