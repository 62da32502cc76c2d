//! Image-bound logins end to end (docs/image-binding.md): the kubernetes, approle and jwt methods
//! against the HTTPS test API server of `kubernetes.rs` (TokenReview and pods, real JSON shapes),
//! with cosign signatures the tests make with keys they create (the openssl CLI signs; the
//! payload is cosign's "simple signing" JSON and the signature object is what `cosign download
//! signature` prints), a keyless signature from a test CA standing in for Fulcio with a Rekor
//! entry signed by a test log key, and `coffer ci bootstrap` minting the wrapped secret ID.

use std::path::Path;
use std::process::Command;

use aws_lc_rs::digest;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

use crate::common::{Server, ok, stderr, tempdir};
use crate::jwt::{Key, now};
use crate::kubernetes::Cluster;

const REPO: &str = "registry.local/team/web";
const A: &str = "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const B: &str = "sha256:b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const PROXY: &str = "docker.io/istio/proxyv2@sha256:c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const DENIED: &str = r#"{"errors":["permission denied"]}"#;

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A P-256 key pair as `cosign generate-key-pair` makes (the test keeps it unencrypted):
/// (private key file, public key PEM).
fn p256_key(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let key_s = key.display().to_string();
    openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", &key_s]);
    let public = String::from_utf8(openssl(&["ec", "-in", &key_s, "-pubout"])).expect("pem");
    (key, public)
}

/// ECDSA/SHA-256 over `data` with the key file, as cosign signs: ASN.1 DER.
fn sign(dir: &Path, key: &Path, data: &[u8]) -> Vec<u8> {
    let file = dir.join("to-sign");
    std::fs::write(&file, data).expect("write");
    openssl(&["dgst", "-sha256", "-sign", &key.display().to_string(), &file.display().to_string()])
}

/// Cosign's simple-signing payload for `digest` in `repo`.
fn payload(repo: &str, digest: &str) -> Vec<u8> {
    json!({"critical": {"identity": {"docker-reference": repo},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature"}, "optional": null})
    .to_string()
    .into_bytes()
}

/// A key-signed signature object, as `cosign download signature` prints it.
fn key_signature(dir: &Path, key: &Path, repo: &str, digest: &str) -> Value {
    let p = payload(repo, digest);
    json!({"Base64Signature": b64(&sign(dir, key, &p)), "Payload": b64(&p),
        "Cert": null, "Chain": null, "Bundle": null, "RFC3161Timestamp": null})
}

async fn write(s: &Server, token: &str, path: &str, body: Value) {
    let (code, b) = s.call("POST", path, Some(token), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
}

async fn k8s_login(s: &Server, role: &str, jwt: &str, sig: Option<Value>) -> (u16, Value) {
    let mut body = json!({"role": role, "jwt": jwt});
    if let Some(sig) = sig {
        body["image_signature"] = sig;
    }
    s.call("POST", "auth/kubernetes/login", None, Some(body)).await
}

/// The error of the audit log's last response entry.
fn last_reason(audit: &Path) -> String {
    let log = std::fs::read_to_string(audit).expect("audit log");
    let last = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|e| e["type"] == "response")
        .expect("a response entry");
    last["error"].as_str().unwrap_or_default().to_owned()
}

/// The login is refused with a bare 403, and the audit log holds the reason.
async fn refused(audit: &Path, got: (u16, Value), reason: &str) {
    assert_eq!(got.0, 403, "{reason}: {}", got.1);
    assert_eq!(got.1.to_string(), DENIED, "nothing that helps an attacker");
    let why = last_reason(audit);
    assert!(why.starts_with("permission denied: image binding"), "{why}");
    assert!(why.contains(reason), "expected {reason:?} in the audited reason {why:?}");
}

/// A cluster with Coffer's reviewer (allowed TokenReview and pod reads) and the service
/// account `prod/web`, and a server with the kubernetes method pointed at it and a file audit
/// device. Returns the audit log's path.
async fn cluster_and_server(dir: &Path) -> (Cluster, Server, String, std::path::PathBuf) {
    let cluster = Cluster::start().await;
    cluster.service_account("prod", "web");
    cluster.service_account("kube-system", "coffer");
    cluster.delegator("kube-system", "coffer", true);
    let (s, _, root) = Server::ready(dir).await;
    let audit = dir.join("audit.log");
    write(
        &s,
        &root,
        "sys/audit/file",
        json!({"type": "file", "options": {"file_path": audit.display().to_string()}}),
    )
    .await;
    write(&s, &root, "sys/auth/kubernetes", json!({"type": "kubernetes"})).await;
    write(
        &s,
        &root,
        "auth/kubernetes/config",
        json!({"kubernetes_host": cluster.url, "kubernetes_ca_cert": cluster.ca_pem,
            "token_reviewer_jwt": cluster.legacy_token("kube-system", "coffer"),
            "disable_local_ca_jwt": true}),
    )
    .await;
    (cluster, s, root, audit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_logins_are_bound_to_the_digest_the_api_server_reports() {
    let dir = tempdir();
    let (cluster, s, root, audit) = cluster_and_server(dir.path()).await;
    write(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    write(&s, &root, &format!("secret/data/images/{A}"), json!({"data": {"k": "for-a"}})).await;
    write(&s, &root, &format!("secret/data/images/{B}"), json!({"data": {"k": "for-b"}})).await;
    // A templated policy: each token reads the path of the digest its own login proved.
    write(
        &s,
        &root,
        "sys/policies/acl/per-image",
        json!({"policy": "path \"secret/data/images/{{token.metadata.image_digest}}\" { capabilities = [\"read\"] }"}),
    )
    .await;
    ok(s.cli(
        Some(&root),
        &[
            "write",
            "auth/kubernetes/role/web",
            "bound_service_account_names=web",
            "bound_service_account_namespaces=prod",
            "audience=coffer",
            &format!("bound_image_digests={A},{B}"),
            "bound_image_repositories=registry.local/team/*",
            "token_policies=per-image",
        ],
    ));
    let (_, role) = s.call("GET", "auth/kubernetes/role/web", Some(&root), None).await;
    assert_eq!(role["data"]["bound_image_digests"], json!([A, B]), "{role}");
    assert_eq!(role["data"]["bound_image_repositories"], json!(["registry.local/team/*"]));
    for (body, want) in [
        (json!({"bound_image_digests": "registry.local/team/web:1.0"}), "not a manifest digest"),
        (json!({"bound_image_signers": ["not a key"]}), "bound_image_signers[0]"),
    ] {
        let (code, b) = s.call("POST", "auth/kubernetes/role/web", Some(&root), Some(body)).await;
        assert_eq!(code, 400, "{b}");
        assert!(b.to_string().contains(want), "{want}: {b}");
    }

    // The bound digest, with a sidecar beside it: allowed; the token says what it proved.
    let exp = now() + 600;
    cluster.run_pod(
        "prod",
        "web-a",
        "uid-a",
        "Running",
        &[("web", &format!("{REPO}@{A}")), ("istio-proxy", PROXY)],
    );
    let jwt_a = cluster.projected_token("prod", "web", "coffer", "web-a", exp);
    let (code, b) = k8s_login(&s, "web", &jwt_a, None).await;
    assert_eq!(code, 200, "{b}");
    let meta = &b["auth"]["metadata"];
    assert_eq!(
        (meta["image_digest"].as_str(), meta["image_repository"].as_str()),
        (Some(A), Some(REPO))
    );
    assert!(meta.get("image_signer").is_none(), "no signer was asked for: {meta}");
    let token_a = b["auth"]["client_token"].as_str().expect("token").to_owned();
    // `coffer token lookup` shows it.
    let shown = ok(s.cli(Some(&token_a), &["token", "lookup", "-format=json"]));
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["data"]["meta"]["image_digest"], A);
    // The templated path is this image's, and no other's.
    let (code, got) = s.call("GET", &format!("secret/data/images/{A}"), Some(&token_a), None).await;
    assert_eq!((code, got["data"]["data"]["k"].as_str()), (200, Some("for-a")), "{got}");
    let (code, _) = s.call("GET", &format!("secret/data/images/{B}"), Some(&token_a), None).await;
    assert_eq!(code, 403);
    // A pod of the other bound digest logs in as the same service account (the same entity):
    // the first token still reads only its own image's path.
    cluster.run_pod("prod", "web-b", "uid-b", "Running", &[("web", &format!("{REPO}@{B}"))]);
    let (code, b) =
        k8s_login(&s, "web", &cluster.projected_token("prod", "web", "coffer", "web-b", exp), None)
            .await;
    assert_eq!(code, 200, "{b}");
    let (code, _) = s.call("GET", &format!("secret/data/images/{B}"), Some(&token_a), None).await;
    assert_eq!(code, 403, "a token's templated paths are its own login's");
    // Every request of the token is audited with the image it proved.
    let log = std::fs::read_to_string(&audit).expect("audit");
    let read = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["request"]["path"] == format!("secret/data/images/{A}")
                && e["request"]["operation"] == "read"
                && e["type"] == "response"
        })
        .expect("the read's entry");
    assert_eq!(read["auth"]["metadata"]["image_digest"], A);

    // Refused, each with its reason audited and a bare 403 to the caller.
    let c = "sha256:c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4";
    cluster.run_pod("prod", "web-c", "uid-c", "Running", &[("web", &format!("{REPO}@{c}"))]);
    let got =
        k8s_login(&s, "web", &cluster.projected_token("prod", "web", "coffer", "web-c", exp), None)
            .await;
    refused(&audit, got, "is not bound to the role").await;
    // A tag only: the runtime reports no repository digest.
    cluster.run_pod("prod", "web-t", "uid-t", "Running", &[("web", "registry.local/team/web:1.0")]);
    let got =
        k8s_login(&s, "web", &cluster.projected_token("prod", "web", "coffer", "web-t", exp), None)
            .await;
    refused(&audit, got, "without a digest").await;
    // Another repository with a bound digest.
    cluster.run_pod(
        "prod",
        "web-r",
        "uid-r",
        "Running",
        &[("web", &format!("registry.local/other/web@{A}"))],
    );
    let got =
        k8s_login(&s, "web", &cluster.projected_token("prod", "web", "coffer", "web-r", exp), None)
            .await;
    refused(&audit, got, "repository").await;
    // Not running yet.
    cluster.run_pod("prod", "web-p", "uid-p", "Pending", &[("web", &format!("{REPO}@{A}"))]);
    let got =
        k8s_login(&s, "web", &cluster.projected_token("prod", "web", "coffer", "web-p", exp), None)
            .await;
    refused(&audit, got, "not running").await;
    // The pod was replaced under the same name: its uid is not the token's. (A real API server
    // already refuses such a token at review; Coffer checks the uid itself all the same.)
    cluster.run_pod("prod", "web-a", "uid-a-2", "Running", &[("web", &format!("{REPO}@{A}"))]);
    let got = k8s_login(&s, "web", &jwt_a, None).await;
    refused(&audit, got, "uid").await;
    // A legacy token names no pod: no image evidence.
    let got = k8s_login(&s, "web", &cluster.legacy_token("prod", "web"), None).await;
    assert_eq!(got.0, 400, "a legacy token has no audience: {}", got.1);
    // Coffer's service account cannot read pods: refused, and the log says what to grant.
    cluster.run_pod("prod", "web-a", "uid-a", "Running", &[("web", &format!("{REPO}@{A}"))]);
    cluster.deny_pod_reads(true);
    let got = k8s_login(&s, "web", &jwt_a, None).await;
    refused(&audit, got, "refused to show the pod").await;
    assert!(s.logs().contains("`get` on `pods`"), "the operator is told what to grant");
    cluster.deny_pod_reads(false);
    let (code, b) = k8s_login(&s, "web", &jwt_a, None).await;
    assert_eq!(code, 200, "{b}");
    // A deleted pod: its token no longer authenticates.
    cluster.pod("prod", "web-a", false);
    let (code, b) = k8s_login(&s, "web", &jwt_a, None).await;
    assert_eq!((code, b.to_string().as_str()), (403, DENIED));

    // Per container: the container named `web` must run A; a pod whose `web` runs B is refused
    // even though the role allows B for other containers.
    write(
        &s,
        &root,
        "auth/kubernetes/role/web",
        json!({"bound_image_digests": [format!("web={A}")]}),
    )
    .await;
    cluster.run_pod(
        "prod",
        "web-x",
        "uid-x",
        "Running",
        &[("web", &format!("{REPO}@{B}")), ("tool", &format!("{REPO}@{A}"))],
    );
    let got =
        k8s_login(&s, "web", &cluster.projected_token("prod", "web", "coffer", "web-x", exp), None)
            .await;
    refused(&audit, got, "container \"web\"").await;
    cluster.run_pod("prod", "web-y", "uid-y", "Running", &[("web", &format!("{REPO}@{A}"))]);
    let (code, b) =
        k8s_login(&s, "web", &cluster.projected_token("prod", "web", "coffer", "web-y", exp), None)
            .await;
    assert_eq!(code, 200, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_by_a_trusted_key_or_keyless_identity_are_required_and_recorded() {
    let dir = tempdir();
    let d = dir.path();
    let (cluster, s, root, audit) = cluster_and_server(d).await;
    let (key, public) = p256_key(d, "cosign");
    let (stranger, _) = p256_key(d, "stranger");
    write(
        &s,
        &root,
        "auth/kubernetes/role/signed",
        json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "prod",
            "audience": "coffer", "bound_image_signers": [public]}),
    )
    .await;
    let exp = now() + 600;
    cluster.run_pod("prod", "web-a", "uid-a", "Running", &[("web", &format!("{REPO}@{A}"))]);
    let jwt = cluster.projected_token("prod", "web", "coffer", "web-a", exp);

    // Signed by the trusted key, presented through the CLI from the file `cosign download
    // signature` writes: allowed, the signer recorded.
    let good = key_signature(d, &key, REPO, A);
    let sig_file = d.join("sig.json");
    std::fs::write(&sig_file, format!("{good}\n")).expect("sig");
    let out = ok(s.cli(
        None,
        &[
            "write",
            "-format=json",
            "auth/kubernetes/login",
            "role=signed",
            &format!("jwt={jwt}"),
            &format!("image_signature=@{}", sig_file.display()),
        ],
    ));
    let out: Value = serde_json::from_str(&out).expect("json");
    let signer = out["auth"]["metadata"]["image_signer"].as_str().expect("signer").to_owned();
    assert!(signer.starts_with("key:sha256:"), "{signer}");
    assert_eq!(out["auth"]["metadata"]["image_digest"], A);

    // Unsigned, signed for another digest, by an untrusted key, a payload altered after
    // signing, a signature that is not one.
    refused(&audit, k8s_login(&s, "signed", &jwt, None).await, "no signature").await;
    let other = key_signature(d, &key, REPO, B);
    refused(&audit, k8s_login(&s, "signed", &jwt, Some(other)).await, "another digest").await;
    let untrusted = key_signature(d, &stranger, REPO, A);
    refused(&audit, k8s_login(&s, "signed", &jwt, Some(untrusted)).await, "does not verify").await;
    let mut altered = good.clone();
    altered["Payload"] = json!(b64(&payload("registry.local/evil/web", A)));
    refused(&audit, k8s_login(&s, "signed", &jwt, Some(altered)).await, "repository").await;
    let junk = json!({"Base64Signature": "!!", "Payload": "x"});
    refused(&audit, k8s_login(&s, "signed", &jwt, Some(junk)).await, "no signature").await;

    // Keyless: a test CA stands in for Fulcio (root and intermediate), a test key for Rekor.
    let root_key = KeyPair::generate().expect("key");
    let mut rp = CertificateParams::new(Vec::<String>::new()).expect("params");
    rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    rp.distinguished_name.push(rcgen::DnType::CommonName, "sigstore");
    let root_cert = rp.self_signed(&root_key).expect("root");
    let root_issuer = Issuer::new(rp, root_key);
    let mid_key = KeyPair::generate().expect("key");
    let mut mp = CertificateParams::new(Vec::<String>::new()).expect("params");
    mp.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    mp.distinguished_name.push(rcgen::DnType::CommonName, "sigstore-intermediate");
    let mid_cert = mp.signed_by(&mid_key, &root_issuer).expect("intermediate");
    let mid_issuer = Issuer::new(mp, mid_key);
    // Fulcio's certificates live ten minutes: this one ended five minutes ago.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let t = now();
    let leaf = |subject: &str, issuer_url: &str| {
        let k = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = vec![SanType::Rfc822Name(subject.try_into().expect("email"))];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut v = vec![0x0c, u8::try_from(issuer_url.len()).expect("short")];
        v.extend_from_slice(issuer_url.as_bytes());
        p.custom_extensions =
            vec![CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 57264, 1, 8], v)];
        p.not_before = epoch + std::time::Duration::from_secs(t - 900);
        p.not_after = epoch + std::time::Duration::from_secs(t - 300);
        let cert = p.signed_by(&k, &mid_issuer).expect("leaf");
        (cert, k)
    };
    let (rekor_key, rekor_public) = p256_key(d, "rekor");
    let keyless = |subject: &str, issuer_url: &str, digest: &str| {
        let (cert, k) = leaf(subject, issuer_url);
        let leaf_key = d.join("leaf.key");
        std::fs::write(&leaf_key, k.serialize_pem()).expect("leaf key");
        let p = payload(REPO, digest);
        let sig = sign(d, &leaf_key, &p);
        let body = json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex(digest::digest(&digest::SHA256, &p).as_ref())}},
            "signature": {"content": b64(&sig), "publicKey": {"content": b64(cert.pem().as_bytes())}}}});
        let entry = json!({"body": b64(body.to_string().as_bytes()), "integratedTime": t - 600,
            "logID": "c0d23d6ad406973f9559f3ba2d1ca01f84147d8ffc5b8445c224f98b9591801d", "logIndex": 4711});
        // Rekor signs the entry's canonical JSON: keys sorted, no blanks (serde_json sorts).
        let set = sign(d, &rekor_key, entry.to_string().as_bytes());
        json!({"Base64Signature": b64(&sig), "Payload": b64(&p), "Cert": cert.pem(),
            "Chain": format!("{}{}", mid_cert.pem(), root_cert.pem()),
            "Bundle": {"SignedEntryTimestamp": b64(&set), "Payload": entry}})
    };
    let issuer_url = "https://token.actions.example";
    let keyless_signer = json!({"issuer": issuer_url, "subject": "ci@*.example.com",
        "fulcio_ca": root_cert.pem(), "rekor_public_key": rekor_public});
    write(
        &s,
        &root,
        "auth/kubernetes/role/signed",
        json!({"bound_image_signers": [keyless_signer]}),
    )
    .await;
    let (code, b) =
        k8s_login(&s, "signed", &jwt, Some(keyless("ci@build.example.com", issuer_url, A))).await;
    assert_eq!(code, 200, "{b}: {}", last_reason(&audit));
    assert_eq!(b["auth"]["metadata"]["image_signer"], "ci@build.example.com");
    let got =
        k8s_login(&s, "signed", &jwt, Some(keyless("mallory@evil.test", issuer_url, A))).await;
    refused(&audit, got, "subject").await;
    let got =
        k8s_login(&s, "signed", &jwt, Some(keyless("ci@build.example.com", "https://other", A)))
            .await;
    refused(&audit, got, "issuer").await;
    let got =
        k8s_login(&s, "signed", &jwt, Some(keyless("ci@build.example.com", issuer_url, B))).await;
    refused(&audit, got, "another digest").await;
    // Without the Rekor entry the (expired) certificate proves nothing.
    let mut no_log = keyless("ci@build.example.com", issuer_url, A);
    no_log["Bundle"] = Value::Null;
    refused(&audit, k8s_login(&s, "signed", &jwt, Some(no_log)).await, "Rekor").await;
    // A certificate from another CA.
    let other_ca = {
        let k = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.self_signed(&k).expect("ca").pem()
    };
    let signer = json!({"issuer": issuer_url, "subject": "*", "fulcio_ca": other_ca, "rekor_public_key": rekor_public});
    write(&s, &root, "auth/kubernetes/role/signed", json!({"bound_image_signers": [signer]})).await;
    let got =
        k8s_login(&s, "signed", &jwt, Some(keyless("ci@build.example.com", issuer_url, A))).await;
    refused(&audit, got, "not trusted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_bootstrap_mints_a_wrapped_single_use_secret_id_only_that_image_can_use() {
    let dir = tempdir();
    let (cluster, s, root, audit) = cluster_and_server(dir.path()).await;
    write(&s, &root, "sys/auth/approle", json!({"type": "approle"})).await;
    write(
        &s,
        &root,
        "auth/approle/role/deploy",
        json!({"token_policies": "default", "token_ttl": "10m"}),
    )
    .await;
    ok(s.cli(
        Some(&root),
        &[
            "write",
            "auth/approle/image-evidence",
            &format!("kubernetes_host={}", cluster.url),
            &format!("kubernetes_ca_cert={}", cluster.ca_pem),
            &format!("token_reviewer_jwt={}", cluster.legacy_token("kube-system", "coffer")),
            "disable_local_ca_jwt=true",
            "audience=coffer",
        ],
    ));
    let (_, ev) = s.call("GET", "auth/approle/image-evidence", Some(&root), None).await;
    assert_eq!(
        (ev["data"]["audience"].as_str(), ev["data"]["token_reviewer_jwt_set"].as_bool()),
        (Some("coffer"), Some(true)),
        "{ev}"
    );
    let (_, rid) = s.call("GET", "auth/approle/role/deploy/role-id", Some(&root), None).await;
    let role_id = rid["data"]["role_id"].as_str().expect("role id").to_owned();

    // CI, after the push: the wrapping token is the last line.
    let out = ok(s.cli(
        Some(&root),
        &["ci", "bootstrap", "-role=deploy", &format!("-image={REPO}@{A}"), "-ttl=5m"],
    ));
    let wrapping = out.lines().last().expect("a line").trim().to_owned();
    assert!(out.contains("wrapping_token_accessor"), "{out}");
    let tag =
        s.cli(Some(&root), &["ci", "bootstrap", "-role=deploy", &format!("-image={REPO}:1.0")]);
    assert!(!tag.status.success() && stderr(&tag).contains("names no digest"), "{}", stderr(&tag));

    // The pod unwraps it once; a second unwrap fails.
    let unwrap = |t: String| {
        let s = &s;
        async move { s.call("POST", "sys/wrapping/unwrap", None, Some(json!({"token": t}))).await }
    };
    let (code, w) = unwrap(wrapping.clone()).await;
    assert_eq!(code, 200, "{w}");
    let secret_id = w["data"]["secret_id"].as_str().expect("secret id").to_owned();
    assert_eq!(w["data"]["secret_id_num_uses"], 1);
    assert_eq!(unwrap(wrapping).await.0, 400, "the wrapping token is single-use");
    let (_, look) = s
        .call(
            "POST",
            "auth/approle/role/deploy/secret-id/lookup",
            Some(&root),
            Some(json!({"secret_id": secret_id})),
        )
        .await;
    assert_eq!(look["data"]["bound_image_digests"], json!([A]), "{look}");

    let exp = now() + 600;
    cluster.run_pod("prod", "web-a", "uid-a", "Running", &[("web", &format!("{REPO}@{A}"))]);
    cluster.run_pod("prod", "web-b", "uid-b", "Running", &[("web", &format!("{REPO}@{B}"))]);
    let login = |k8s: Option<String>| {
        let (s, role_id, secret_id) = (&s, role_id.clone(), secret_id.clone());
        async move {
            let mut body = json!({"role_id": role_id, "secret_id": secret_id});
            if let Some(j) = k8s {
                body["kubernetes_jwt"] = json!(j);
            }
            s.call("POST", "auth/approle/login", None, Some(body)).await
        }
    };
    // Whoever holds the secret ID: without evidence, or from a pod of another digest, refused;
    // the secret ID stays unused for the pod it was minted for.
    refused(&audit, login(None).await, "no image evidence").await;
    let other = cluster.projected_token("prod", "web", "coffer", "web-b", exp);
    refused(&audit, login(Some(other)).await, "secret ID is bound to").await;
    let forged = Key::rsa().jwt(
        Some("k"),
        &json!({"kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "web"}}}),
    );
    refused(&audit, login(Some(forged)).await, "did not authenticate").await;
    let (code, b) =
        login(Some(cluster.projected_token("prod", "web", "coffer", "web-a", exp))).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["auth"]["metadata"]["image_digest"], A);
    assert_eq!(b["auth"]["metadata"]["role_name"], "deploy");
    // A second use: refused like any used-up secret ID.
    let (code, b) =
        login(Some(cluster.projected_token("prod", "web", "coffer", "web-a", exp))).await;
    assert_eq!(code, 400, "{b}");

    // -format=json; and an unused one expires: neither the wrapping token nor the secret ID
    // unwrapped early works after the TTL.
    let out = ok(s.cli(
        Some(&root),
        &[
            "ci",
            "bootstrap",
            "-format=json",
            "-role=deploy",
            &format!("-image={REPO}@{A}"),
            "-ttl=2s",
        ],
    ));
    let j: Value = serde_json::from_str(&out).expect("json");
    let late = j["wrap_info"]["token"].as_str().expect("token").to_owned();
    let out = ok(s.cli(
        Some(&root),
        &["ci", "bootstrap", "-role=deploy", &format!("-image={REPO}@{A}"), "-ttl=2s"],
    ));
    let (_, w) = unwrap(out.lines().last().expect("line").trim().to_owned()).await;
    let early = w["data"]["secret_id"].as_str().expect("secret id").to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(unwrap(late).await.0, 400, "an unused wrapping token expires");
    let body = json!({"role_id": role_id, "secret_id": early,
        "kubernetes_jwt": cluster.projected_token("prod", "web", "coffer", "web-a", exp)});
    let (code, b) = s.call("POST", "auth/approle/login", None, Some(body)).await;
    assert_eq!(code, 400, "an unused secret ID expires: {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_logins_take_the_image_from_a_verified_claim() {
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    let key = Key::rsa();
    write(&s, &root, "sys/auth/jwt", json!({"type": "jwt"})).await;
    write(
        &s,
        &root,
        "auth/jwt/config",
        json!({"jwt_validation_pubkeys": [key.pem()], "bound_issuer": "https://attestor.example"}),
    )
    .await;
    let (code, b) = s
        .call(
            "POST",
            "auth/jwt/role/app",
            Some(&root),
            Some(json!({"bound_audiences": "coffer", "bound_image_digests": A})),
        )
        .await;
    assert_eq!(code, 400, "a binding needs the claim that reports the image: {b}");
    write(
        &s,
        &root,
        "auth/jwt/role/app",
        json!({"bound_audiences": "coffer", "user_claim": "sub", "bound_image_digests": A,
            "image_reference_claim": "/workload/images"}),
    )
    .await;
    let jwt = |images: Value| {
        key.jwt(
            None,
            &json!({"iss": "https://attestor.example", "aud": "coffer", "sub": "app",
            "exp": now() + 300, "workload": {"images": images}}),
        )
    };
    let login = |j: String| {
        let s = &s;
        async move {
            s.call("POST", "auth/jwt/login", None, Some(json!({"role": "app", "jwt": j}))).await
        }
    };
    let (code, b) = login(jwt(json!({"web": format!("{REPO}@{A}")}))).await;
    assert_eq!(code, 200, "{b}");
    assert_eq!(b["auth"]["metadata"]["image_digest"], A);
    for images in [json!({"web": format!("{REPO}@{B}")}), json!(format!("{REPO}:1.0")), json!(null)]
    {
        let (code, b) = login(jwt(images.clone())).await;
        assert_eq!((code, b.to_string()), (403, DENIED.to_owned()), "{images}");
    }
    let (code, b) = s
        .call(
            "POST",
            "auth/jwt/role/app",
            Some(&root),
            Some(json!({"claim_mappings": {"img": "image_digest"}})),
        )
        .await;
    assert_eq!(code, 400, "a claim cannot pose as proven image metadata: {b}");
}

/// The deployment half of the CI example in docs/image-binding.md: the agent in the pod unwraps
/// the bootstrap secret ID, sends the pod's projected token and the image's signature from their
/// files, and renders the secret; the token it got says which image it proved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_logs_in_with_the_wrapped_image_bound_secret_id_and_its_signature() {
    let dir = tempdir();
    let d = dir.path();
    let (cluster, s, root, _) = cluster_and_server(d).await;
    let (key, public) = p256_key(d, "cosign");
    write(&s, &root, "sys/auth/approle", json!({"type": "approle"})).await;
    write(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    write(&s, &root, "secret/data/web/db", json!({"data": {"password": "image-canary"}})).await;
    write(
        &s,
        &root,
        "sys/policies/acl/web",
        json!({"policy": "path \"secret/data/web/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    write(
        &s,
        &root,
        "auth/approle/role/web",
        json!({"token_policies": "web", "token_ttl": "10m", "bound_image_signers": [public],
            "bound_image_repositories": "registry.local/team/*"}),
    )
    .await;
    write(
        &s,
        &root,
        "auth/approle/image-evidence",
        json!({"kubernetes_host": cluster.url, "kubernetes_ca_cert": cluster.ca_pem,
            "token_reviewer_jwt": cluster.legacy_token("kube-system", "coffer"),
            "disable_local_ca_jwt": true, "audience": "coffer"}),
    )
    .await;
    let (_, rid) = s.call("GET", "auth/approle/role/web/role-id", Some(&root), None).await;
    let image = format!("{REPO}@{A}");
    let out = ok(s.cli(Some(&root), &["ci", "bootstrap", "-role=web", &format!("-image={image}")]));
    let wrapped = out.lines().last().expect("line").trim().to_owned();

    // What the Deployment mounts: role ID, the wrapped secret ID and signature (a Secret), the
    // projected token (the kubelet).
    cluster.run_pod("prod", "web-a", "uid-a", "Running", &[("web", &image)]);
    let shm = tempfile::tempdir_in("/dev/shm").expect("shm");
    let file = |name: &str, content: &str| {
        let p = shm.path().join(name);
        std::fs::write(&p, content).expect("write");
        p
    };
    let role_id = file("role-id", rid["data"]["role_id"].as_str().expect("role id"));
    let secret_id = file("secret-id", &wrapped);
    let token =
        file("token", &cluster.projected_token("prod", "web", "coffer", "web-a", now() + 600));
    let signature = file("signature.json", &format!("{}\n", key_signature(d, &key, REPO, A)));
    let dest = shm.path().join("db-password");
    let sink = shm.path().join("coffer-token");
    let config = format!(
        "coffer {{\n  address = \"{}\"\n}}\nauto_auth {{\n  method \"approle\" {{\n    config = {{\n      role_id_file_path = \"{}\"\n      secret_id_file_path = \"{}\"\n      secret_id_response_wrapping_path = \"auth/approle/role/web/secret-id\"\n      kubernetes_token_path = \"{}\"\n      image_signature_path = \"{}\"\n    }}\n  }}\n  sink \"file\" {{\n    config = {{ path = \"{}\" }}\n  }}\n}}\ntemplate {{\n  contents = {:?}\n  destination = \"{}\"\n}}\n",
        s.addr,
        role_id.display(),
        secret_id.display(),
        token.display(),
        signature.display(),
        sink.display(),
        r#"{{ with secret "secret/data/web/db" }}{{ .Data.data.password }}{{ end }}"#,
        dest.display(),
    );
    let agent = crate::agent::Agent::start(d, &config);
    agent.wait_for_content(&dest, "image-canary", std::time::Duration::from_secs(20));
    let agent_token = std::fs::read_to_string(&sink).expect("sink");
    let (_, me) = s.call("GET", "auth/token/lookup-self", Some(agent_token.trim()), None).await;
    assert_eq!(me["data"]["meta"]["image_digest"], A, "{me}");
    assert!(me["data"]["meta"]["image_signer"].as_str().is_some_and(|s| s.starts_with("key:")));
    assert!(!secret_id.exists(), "the bootstrap file is removed once read");
}
