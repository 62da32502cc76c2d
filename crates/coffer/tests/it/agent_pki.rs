//! The agent's `pkiCert`: a certificate issued from `pki/issue/:role` rendered into a file, and
//! issued anew at about two thirds of its lifetime, as Vault Agent does.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::agent::{Agent, bootstrap, role_id, secret_id};
use crate::common::{Server, tempdir};

#[tokio::test]
async fn pki_cert_renders_a_certificate_and_reissues_it_at_two_thirds_of_its_life() {
    let dir = tempdir();
    let (s, _keys, root) = Server::ready(dir.path()).await;
    for (path, body) in [
        ("sys/mounts/pki", json!({"type": "pki"})),
        (
            "pki/root/generate/internal",
            json!({"common_name": "Agent Test Root", "key_type": "ec", "ttl": "768h"}),
        ),
        ("pki/roles/web", json!({"allow_any_name": true, "key_type": "ec", "ttl": "12s"})),
        ("sys/auth/approle", json!({"type": "approle"})),
        (
            "sys/policies/acl/pkiweb",
            json!({"policy": "path \"pki/issue/web\" { capabilities = [\"update\"] }"}),
        ),
        ("auth/approle/role/web", json!({"token_policies": ["pkiweb"], "token_ttl": "1h"})),
    ] {
        let (code, b) = s.call("POST", path, Some(&root), Some(body)).await;
        assert!(code == 204 || code == 200, "{path}: {code} {b}");
    }
    let (_, ca) = s.call("GET", "pki/cert/ca", None, None).await;
    std::fs::write(dir.path().join("root.pem"), ca["data"]["certificate"].as_str().expect("ca"))
        .expect("write");
    let rid = role_id(&s, &root).await;
    let sid = secret_id(&s, &root).await;
    let (role_file, sid_file) = bootstrap(dir.path(), &rid, &sid);
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm dir");
    let dest = shm.path().join("tls.pem");
    let template = r#"{{ with pkiCert "pki/issue/web" "common_name=web.test" }}{{ .Cert }}
{{ .Key }}
{{ .CA }}
{{ end }}"#;
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\nauto_auth {{\n  method \"approle\" {{\n    config = {{\n      role_id_file_path = \"{}\"\n      secret_id_file_path = \"{}\"\n    }}\n  }}\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\n",
        s.addr,
        role_file.display(),
        sid_file.display(),
        template,
        dest.display(),
    );
    let agent = Agent::start(dir.path(), &config);
    let start = Instant::now();
    let first = loop {
        if let Ok(t) = std::fs::read_to_string(&dest)
            && t.contains("END CERTIFICATE")
        {
            break t;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never rendered:\n{}", agent.logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    let rendered = Instant::now();
    assert!(first.contains("-----BEGIN EC PRIVATE KEY-----"), "no key in the file");
    let check = |pem: &str, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write");
        let out = Command::new("openssl")
            .args(["verify", "-CAfile", "root.pem", name])
            .current_dir(dir.path())
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && text.contains(": OK"), "{text}");
    };
    check(&first, "first.pem");

    // Issued anew at about 2/3 of its 12 s (8 s), well before it ends.
    let second = loop {
        if let Ok(t) = std::fs::read_to_string(&dest)
            && t.contains("END CERTIFICATE")
            && t != first
        {
            break t;
        }
        assert!(
            rendered.elapsed() < Duration::from_secs(11),
            "not re-issued before the certificate ended:\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let after = rendered.elapsed();
    assert!(after > Duration::from_secs(6), "re-issued too early, after {after:?}");
    check(&second, "second.pem");
    let key_of = |t: &str| t.split("-----BEGIN EC PRIVATE KEY-----").nth(1).map(str::to_owned);
    assert_ne!(key_of(&first), key_of(&second), "a new key with the new certificate");
    let log = agent.logs();
    for t in [&first, &second] {
        let key = key_of(t).expect("key");
        let body: String = key.lines().nth(1).unwrap_or_default().to_owned();
        assert!(body.len() > 20 && !log.contains(&body), "a private key in the agent log");
    }
}
