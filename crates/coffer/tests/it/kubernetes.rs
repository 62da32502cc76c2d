//! Kubernetes auth end to end against a local API server this test runs over HTTPS (its own CA),
//! speaking the real TokenReview protocol (`POST /apis/authentication.k8s.io/v1/tokenreviews`,
//! bearer-authenticated, `201 Created` with a `TokenReview` status). The fake cluster issues
//! service-account tokens as Kubernetes does, legacy and projected (audience, expiry, pod
//! binding), and authenticates them as its authenticator would: only tokens it issued, while
//! the service account and the bound pod exist, for the audiences they were issued for. It also
//! serves pods (`GET /api/v1/namespaces/{ns}/pods/{name}`, the real Pod JSON with
//! `metadata.uid` and `status.containerStatuses[].imageID`) to callers allowed to read them, for
//! the image-binding tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

use crate::common::{Server, ok, stderr, tempdir};
use crate::jwt::{Key, now};

/// The API server's own audience: what legacy tokens and audience-less reviews mean.
const API_AUDIENCE: &str = "https://kubernetes.default.svc";

#[derive(Clone)]
struct Issued {
    namespace: String,
    name: String,
    aud: Vec<String>,
    exp: Option<u64>,
    pod: Option<String>,
    pod_uid: Option<String>,
}

/// A pod as the API server stores it: what the image-binding checks read.
#[derive(Clone)]
pub(crate) struct Pod {
    pub(crate) uid: String,
    pub(crate) phase: String,
    /// (name, imageID, running).
    pub(crate) containers: Vec<(String, String, bool)>,
}

#[derive(Default)]
struct ClusterState {
    /// (namespace, name) → uid.
    service_accounts: HashMap<(String, String), String>,
    /// (namespace, pod).
    pods: HashMap<(String, String), Pod>,
    /// Callers refused `get pods` (no ClusterRole for it).
    pod_readers_denied: bool,
    tokens: HashMap<String, Issued>,
    /// Service accounts bound to `system:auth-delegator`: they may call TokenReview.
    delegators: HashSet<(String, String)>,
    reviews: usize,
}

pub(crate) struct Cluster {
    pub(crate) url: String,
    pub(crate) ca_pem: String,
    signer: Key,
    state: Arc<Mutex<ClusterState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The identity a token authenticates as right now, or the reason it does not.
fn authenticate(st: &ClusterState, token: &str, audiences: &[String]) -> Result<Value, String> {
    let t = st.tokens.get(token).ok_or("invalid bearer token")?;
    let uid = st
        .service_accounts
        .get(&(t.namespace.clone(), t.name.clone()))
        .ok_or("invalid bearer token, service account deleted")?;
    if t.exp.is_some_and(|e| now() >= e) {
        return Err("invalid bearer token, token has expired".into());
    }
    if let Some(pod) = &t.pod
        && !st.pods.contains_key(&(t.namespace.clone(), pod.clone()))
    {
        return Err(format!("invalid bearer token, pod \"{pod}\" not found"));
    }
    let matched: Vec<&String> = audiences.iter().filter(|a| t.aud.contains(a)).collect();
    if matched.is_empty() {
        return Err(format!(
            "invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}",
            t.aud, audiences
        ));
    }
    let mut extra = json!({});
    if let Some(pod) = &t.pod {
        extra["authentication.kubernetes.io/pod-name"] = json!([pod]);
    }
    if let Some(uid) = &t.pod_uid {
        extra["authentication.kubernetes.io/pod-uid"] = json!([uid]);
    }
    Ok(json!({
        "authenticated": true,
        "user": {
            "username": format!("system:serviceaccount:{}:{}", t.namespace, t.name),
            "uid": uid,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace), "system:authenticated"],
            "extra": extra,
        },
        "audiences": matched,
    }))
}

async fn token_review(
    State(st): State<Arc<Mutex<ClusterState>>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, axum::Json<Value>) {
    let unauthorized = (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
        ),
    );
    let mut st = st.lock().expect("cluster");
    st.reviews += 1;
    let Some(bearer) = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
    else {
        return unauthorized;
    };
    let Ok(caller) = authenticate(&st, bearer, &[API_AUDIENCE.to_owned()]) else {
        return unauthorized;
    };
    let caller_name = caller["user"]["username"].as_str().unwrap_or_default().to_owned();
    let delegator = st
        .delegators
        .iter()
        .any(|(ns, n)| caller_name == format!("system:serviceaccount:{ns}:{n}"));
    if !delegator {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                "message": format!("tokenreviews.authentication.k8s.io is forbidden: User \"{caller_name}\" cannot create resource \"tokenreviews\"")}),
            ),
        );
    }
    let Ok(review) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"kind": "Status", "code": 400})));
    };
    if review["kind"] != "TokenReview" || review["apiVersion"] != "authentication.k8s.io/v1" {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"kind": "Status", "code": 400, "message": "not a TokenReview"})),
        );
    }
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let audiences: Vec<String> = match review["spec"]["audiences"].as_array() {
        Some(a) if !a.is_empty() => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => vec![API_AUDIENCE.to_owned()],
    };
    let status = match authenticate(&st, token, &audiences) {
        Ok(s) => s,
        Err(e) => json!({"authenticated": false, "user": {}, "error": e}),
    };
    let mut out = review.clone();
    out["metadata"] = json!({"creationTimestamp": null});
    out["status"] = status;
    (StatusCode::CREATED, axum::Json(out))
}

/// `GET /api/v1/namespaces/{ns}/pods/{name}`, for callers that may call TokenReview (the
/// reviewer's ClusterRole in docs/image-binding.md grants both), in the API server's JSON.
async fn get_pod(
    State(st): State<Arc<Mutex<ClusterState>>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    let st = st.lock().expect("cluster");
    let caller = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|b| authenticate(&st, b, &[API_AUDIENCE.to_owned()]).ok());
    let Some(caller) = caller else {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"kind": "Status", "code": 401})));
    };
    let user = caller["user"]["username"].as_str().unwrap_or_default().to_owned();
    let allowed =
        st.delegators.iter().any(|(ns, n)| user == format!("system:serviceaccount:{ns}:{n}"));
    if !allowed || st.pod_readers_denied {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                "message": format!("pods \"{name}\" is forbidden: User \"{user}\" cannot get resource \"pods\" in API group \"\" in the namespace \"{ns}\"")}),
            ),
        );
    }
    let Some(pod) = st.pods.get(&(ns.clone(), name.clone())) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("pods \"{name}\" not found"), "reason": "NotFound",
                "details": {"name": name, "kind": "pods"}, "code": 404}),
            ),
        );
    };
    let image_of = |id: &str| id.split('@').next().unwrap_or(id).to_owned();
    let containers: Vec<Value> =
        pod.containers.iter().map(|(n, id, _)| json!({"name": n, "image": image_of(id)})).collect();
    let statuses: Vec<Value> = pod
        .containers
        .iter()
        .map(|(n, id, running)| {
            let state = if *running {
                json!({"running": {"startedAt": "2026-12-05T09:00:00Z"}})
            } else {
                json!({"waiting": {"reason": "ContainerCreating"}})
            };
            json!({"name": n, "image": image_of(id), "imageID": id, "ready": running,
                "restartCount": 0, "started": running, "state": state,
                "containerID": format!("containerd://{}", "0".repeat(64))})
        })
        .collect();
    (
        StatusCode::OK,
        axum::Json(json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "uid": pod.uid, "resourceVersion": "4711",
                "creationTimestamp": "2026-12-05T09:00:00Z"},
            "spec": {"containers": containers, "serviceAccountName": "web", "nodeName": "node-1"},
            "status": {"phase": pod.phase, "podIP": "10.0.0.7", "containerStatuses": statuses},
        })),
    )
}

impl Cluster {
    pub(crate) async fn start() -> Cluster {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "kubernetes");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("server cert");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .expect("tls config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(ClusterState::default()));
        let app = Router::new()
            .route("/apis/authentication.k8s.io/v1/tokenreviews", post(token_review))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Cluster { url, ca_pem: ca_cert.pem(), signer: Key::rsa(), state, task }
    }

    pub(crate) fn service_account(&self, ns: &str, name: &str) {
        let uid = format!("uid-{ns}-{name}");
        self.state.lock().expect("cluster").service_accounts.insert((ns.into(), name.into()), uid);
    }

    pub(crate) fn pod(&self, ns: &str, pod: &str, live: bool) {
        let mut st = self.state.lock().expect("cluster");
        if live {
            let p =
                Pod { uid: format!("pod-uid-{pod}"), phase: "Running".into(), containers: vec![] };
            st.pods.insert((ns.into(), pod.into()), p);
        } else {
            st.pods.remove(&(ns.into(), pod.into()));
        }
    }

    /// Creates (or replaces) a pod with `uid`, in `phase`, running `(name, imageID)` containers.
    pub(crate) fn run_pod(
        &self,
        ns: &str,
        pod: &str,
        uid: &str,
        phase: &str,
        containers: &[(&str, &str)],
    ) {
        let p = Pod {
            uid: uid.into(),
            phase: phase.into(),
            containers: containers
                .iter()
                .map(|(n, id)| ((*n).to_owned(), (*id).to_owned(), phase == "Running"))
                .collect(),
        };
        self.state.lock().expect("cluster").pods.insert((ns.into(), pod.into()), p);
    }

    pub(crate) fn deny_pod_reads(&self, deny: bool) {
        self.state.lock().expect("cluster").pod_readers_denied = deny;
    }

    pub(crate) fn delegator(&self, ns: &str, name: &str, bound: bool) {
        let mut st = self.state.lock().expect("cluster");
        if bound {
            st.delegators.insert((ns.into(), name.into()));
        } else {
            st.delegators.remove(&(ns.into(), name.into()));
        }
    }

    fn uid(&self, ns: &str, name: &str) -> String {
        format!("uid-{ns}-{name}")
    }

    /// A legacy (secret-based) token: no audience, no expiry.
    pub(crate) fn legacy_token(&self, ns: &str, name: &str) -> String {
        let jwt = self.signer.jwt(
            Some("sa-key"),
            &json!({
                "iss": "kubernetes/serviceaccount",
                "kubernetes.io/serviceaccount/namespace": ns,
                "kubernetes.io/serviceaccount/secret.name": format!("{name}-token-x7k2p"),
                "kubernetes.io/serviceaccount/service-account.name": name,
                "kubernetes.io/serviceaccount/service-account.uid": self.uid(ns, name),
                "sub": format!("system:serviceaccount:{ns}:{name}"),
            }),
        );
        let issued = Issued {
            namespace: ns.into(),
            name: name.into(),
            aud: vec![API_AUDIENCE.into()],
            exp: None,
            pod: None,
            pod_uid: None,
        };
        self.state.lock().expect("cluster").tokens.insert(jwt.clone(), issued);
        jwt
    }

    /// A projected token, as the kubelet mounts it: audience, expiry, bound to a pod.
    pub(crate) fn projected_token(
        &self,
        ns: &str,
        name: &str,
        aud: &str,
        pod: &str,
        exp: u64,
    ) -> String {
        let t = now();
        let pod_uid = self
            .state
            .lock()
            .expect("cluster")
            .pods
            .get(&(ns.to_owned(), pod.to_owned()))
            .map_or_else(|| format!("pod-uid-{pod}"), |p| p.uid.clone());
        let jwt = self.signer.jwt(
            Some("sa-key"),
            &json!({
                "aud": [aud], "exp": exp, "iat": t, "nbf": t,
                "iss": API_AUDIENCE,
                "kubernetes.io": {
                    "namespace": ns,
                    "pod": {"name": pod, "uid": pod_uid},
                    "serviceaccount": {"name": name, "uid": self.uid(ns, name)},
                },
                "sub": format!("system:serviceaccount:{ns}:{name}"),
            }),
        );
        let issued = Issued {
            namespace: ns.into(),
            name: name.into(),
            aud: vec![aud.into()],
            exp: Some(exp),
            pod: Some(pod.into()),
            pod_uid: Some(pod_uid),
        };
        self.state.lock().expect("cluster").tokens.insert(jwt.clone(), issued);
        jwt
    }

    fn reviews(&self) -> usize {
        self.state.lock().expect("cluster").reviews
    }
}

async fn write(s: &Server, token: &str, path: &str, body: Value) {
    let (code, b) = s.call("POST", path, Some(token), Some(body)).await;
    assert!(code == 200 || code == 204, "{path}: {code} {b}");
}

async fn login(s: &Server, role: &str, jwt: &str) -> (u16, Value) {
    s.call("POST", "auth/kubernetes/login", None, Some(json!({"role": role, "jwt": jwt}))).await
}

async fn refused(s: &Server, role: &str, jwt: &str, code: u16, want: &str) {
    let (got, b) = login(s, role, jwt).await;
    assert_eq!(got, code, "{want}: {b}");
    let msg = b["errors"][0].as_str().unwrap_or_default();
    assert!(msg.contains(want), "expected {want:?} in {msg:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_logins_through_the_token_review_api() {
    let cluster = Cluster::start().await;
    for (ns, name) in [("prod", "web"), ("prod", "api"), ("dev", "web"), ("kube-system", "coffer")]
    {
        cluster.service_account(ns, name);
    }
    cluster.delegator("kube-system", "coffer", true);
    cluster.pod("prod", "web-7d9f", true);
    let reviewer = cluster.legacy_token("kube-system", "coffer");

    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    write(&s, &root, "sys/mounts/secret", json!({"type": "kv", "options": {"version": "2"}})).await;
    write(
        &s,
        &root,
        "sys/policies/acl/web",
        json!({"policy": "path \"secret/data/web/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    write(&s, &root, "secret/data/web/db", json!({"data": {"password": "pw-1"}})).await;

    // Admin set-up, as docs/auth.md shows it, through the CLI.
    let ca = dir.path().join("k8s-ca.pem");
    std::fs::write(&ca, &cluster.ca_pem).expect("ca");
    let reviewer_file = dir.path().join("reviewer.jwt");
    std::fs::write(&reviewer_file, &reviewer).expect("jwt");
    ok(s.cli(Some(&root), &["auth", "enable", "kubernetes"]));
    ok(s.cli(
        Some(&root),
        &[
            "write",
            "auth/kubernetes/config",
            &format!("kubernetes_host={}", cluster.url),
            &format!("kubernetes_ca_cert=@{}", ca.display()),
            &format!("token_reviewer_jwt=@{}", reviewer_file.display()),
            "disable_local_ca_jwt=true",
        ],
    ));
    let (code, cfg) = s.call("GET", "auth/kubernetes/config", Some(&root), None).await;
    assert_eq!(code, 200);
    assert_eq!(cfg["data"]["token_reviewer_jwt_set"], true);
    assert!(!cfg.to_string().contains(&reviewer), "the reviewer JWT is write-only");
    ok(s.cli(
        Some(&root),
        &[
            "write",
            "auth/kubernetes/role/web",
            "bound_service_account_names=web",
            "bound_service_account_namespaces=prod",
            "audience=coffer",
            "token_policies=web",
            "token_ttl=1h",
        ],
    ));
    write(
        &s,
        &root,
        "auth/kubernetes/role/legacy",
        json!({"bound_service_account_names": ["web", "api"], "bound_service_account_namespaces": "prod", "token_policies": "web"}),
    )
    .await;
    for (body, want) in [
        (json!({"bound_service_account_namespaces": "prod"}), "can not be empty"),
        (
            json!({"bound_service_account_names": "*", "bound_service_account_namespaces": "*"}),
            "can not both be",
        ),
        (
            json!({"bound_service_account_names": "a", "bound_service_account_namespaces": "p", "alias_name_source": "nope"}),
            "alias_name_source",
        ),
    ] {
        let (code, b) = s.call("POST", "auth/kubernetes/role/bad", Some(&root), Some(body)).await;
        assert_eq!(code, 400, "{b}");
        assert!(b.to_string().contains(want), "{want}: {b}");
    }

    // A projected token, through vaultrs: the pod's identity lands in the token's metadata.
    let exp = now() + 600;
    let projected = cluster.projected_token("prod", "web", "coffer", "web-7d9f", exp);
    let client = VaultClient::new(
        VaultClientSettingsBuilder::default().address(&s.addr).build().expect("settings"),
    )
    .expect("client");
    let auth = vaultrs::auth::kubernetes::login(&client, "kubernetes", "web", &projected)
        .await
        .expect("vaultrs kubernetes login");
    assert_eq!(auth.policies, vec!["default".to_owned(), "web".to_owned()]);
    assert_eq!(auth.lease_duration, 3600);
    let meta = auth.metadata.expect("metadata");
    assert_eq!(meta["service_account_name"], "web");
    assert_eq!(meta["service_account_namespace"], "prod");
    assert_eq!(meta["service_account_uid"], cluster.uid("prod", "web"));
    assert_eq!(meta["pod_name"], "web-7d9f");
    let (code, b) = s.call("GET", "secret/data/web/db", Some(&auth.client_token), None).await;
    assert_eq!(code, 200, "{b}");
    let (_, me) = s.call("GET", "auth/token/lookup-self", Some(&auth.client_token), None).await;
    assert_eq!(me["data"]["display_name"], "kubernetes-prod-web");

    // A legacy token, through the CLI, read from a file as a pod would.
    let legacy_file = dir.path().join("token");
    std::fs::write(&legacy_file, cluster.legacy_token("prod", "api")).expect("token");
    let out = ok(s.cli(
        None,
        &[
            "login",
            "-method=kubernetes",
            "-format=json",
            "role=legacy",
            &format!("jwt=@{}", legacy_file.display()),
        ],
    ));
    let out: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(out["auth"]["metadata"]["service_account_secret_name"], "api-token-x7k2p");
    let pw = ok(s.cli(None, &["kv", "get", "-field=password", "secret/web/db"]));
    assert_eq!(pw.trim(), "pw-1");

    // Refused before the cluster is asked: bindings, audience, expiry.
    let before = cluster.reviews();
    refused(
        &s,
        "web",
        &cluster.projected_token("dev", "web", "coffer", "x", exp),
        400,
        "namespace not authorized",
    )
    .await;
    refused(
        &s,
        "web",
        &cluster.projected_token("prod", "api", "coffer", "x", exp),
        400,
        "service account name not authorized",
    )
    .await;
    refused(
        &s,
        "web",
        &cluster.projected_token("prod", "web", "other", "web-7d9f", exp),
        400,
        "audience",
    )
    .await;
    refused(
        &s,
        "web",
        &cluster.projected_token("prod", "web", "coffer", "web-7d9f", now() - 120),
        400,
        "expired",
    )
    .await;
    refused(&s, "nope", &projected, 400, "invalid role name").await;
    assert_eq!(cluster.reviews(), before, "no TokenReview for tokens the role cannot accept");

    // Refused by the cluster: a forged token, a deleted pod, a legacy token for an audience.
    let forged = Key::rsa().jwt(
        Some("sa-key"),
        &json!({"kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "web", "uid": cluster.uid("prod", "web")}}, "aud": ["coffer"], "exp": exp}),
    );
    refused(&s, "web", &forged, 403, "permission denied").await;
    refused(&s, "web", &cluster.legacy_token("prod", "web"), 400, "audience").await;
    cluster.pod("prod", "web-7d9f", false);
    refused(&s, "web", &projected, 403, "permission denied").await;
    cluster.pod("prod", "web-7d9f", true);
    let (code, b) = login(&s, "web", &projected).await;
    assert_eq!(code, 200, "the pod is back: {b}");
    // The login's identity: an entity whose alias is the service account's UID (the default
    // alias_name_source), the same entity at every login of that service account.
    let entity = b["auth"]["entity_id"].as_str().expect("entity_id").to_owned();
    let (_, e) = s.call("GET", &format!("identity/entity/id/{entity}"), Some(&root), None).await;
    assert_eq!(e["data"]["aliases"][0]["name"], json!(cluster.uid("prod", "web")));
    assert_eq!(e["data"]["aliases"][0]["metadata"]["service_account_name"], "web");
    let (_, again) = login(&s, "web", &projected).await;
    assert_eq!(again["auth"]["entity_id"], json!(entity));

    // The reviewer loses system:auth-delegator: logins stop, and the server log says why.
    cluster.delegator("kube-system", "coffer", false);
    refused(&s, "web", &projected, 403, "permission denied").await;
    assert!(s.logs().contains("auth-delegator"), "the operator is told what to fix");

    // Without a reviewer JWT, the pod's own token is the bearer (it needs auth-delegator).
    // A projected token for the audience `coffer` cannot call the API server at all; a legacy
    // token can, once its service account is bound.
    write(&s, &root, "auth/kubernetes/config", json!({"token_reviewer_jwt": ""})).await;
    refused(&s, "web", &projected, 403, "permission denied").await;
    let own = cluster.legacy_token("prod", "web");
    refused(&s, "legacy", &own, 403, "permission denied").await;
    cluster.delegator("prod", "web", true);
    let (code, b) = login(&s, "legacy", &own).await;
    assert_eq!(code, 200, "{b}");

    // An unreachable API server: a 500 that says nothing about the cluster; the log tells.
    write(&s, &root, "auth/kubernetes/config", json!({"kubernetes_host": "https://127.0.0.1:9"}))
        .await;
    let (code, b) = login(&s, "legacy", &own).await;
    assert_eq!(code, 500, "{b}");
    assert!(!b.to_string().contains("127.0.0.1"), "{b}");
    let relogin =
        s.cli(None, &["login", "-method=kubernetes", "role=web", &format!("jwt={projected}")]);
    assert!(!relogin.status.success());
    assert!(stderr(&relogin).contains("500"), "{}", stderr(&relogin));
    assert!(s.logs().contains("kubernetes: TokenReview failed"), "the log says what failed");
}

/// CA bundles as Vault takes them (Go's PEM reading): with comments, other CAs around the
/// cluster's, CRLF line ends, and blanks and tabs at line ends. Each is accepted by the config
/// write and trusted for the TokenReview call; a bundle with no certificate still gets a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_bundles_vault_accepts_are_accepted_and_trusted() {
    let cluster = Cluster::start().await;
    cluster.service_account("prod", "web");
    cluster.service_account("kube-system", "coffer");
    cluster.delegator("kube-system", "coffer", true);
    cluster.pod("prod", "web-1", true);
    let reviewer = cluster.legacy_token("kube-system", "coffer");
    let dir = tempdir();
    let (s, _, root) = Server::ready(dir.path()).await;
    write(&s, &root, "sys/auth/kubernetes", json!({"type": "kubernetes"})).await;
    write(
        &s,
        &root,
        "auth/kubernetes/role/web",
        json!({"bound_service_account_names": "web", "bound_service_account_namespaces": "prod", "audience": "coffer"}),
    )
    .await;
    let other = {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.self_signed(&key).expect("other ca").pem()
    };
    let ca = &cluster.ca_pem;
    let bundles = [
        format!("# kube-root-ca.crt\nsubject=CN = kubernetes\n{other}\nsome text\n{ca}"),
        format!("{other}{ca}").replace('\n', "\r\n"),
        format!("{ca}{other}").replace('\n', " \t\n"),
    ];
    for (i, bundle) in bundles.iter().enumerate() {
        // The last one through vaultrs, as a Vault client configures it.
        if i == bundles.len() - 1 {
            let client = VaultClient::new(
                VaultClientSettingsBuilder::default()
                    .address(&s.addr)
                    .token(&root)
                    .build()
                    .expect("settings"),
            )
            .expect("client");
            let mut opts =
                vaultrs::api::auth::kubernetes::requests::ConfigureKubernetesAuthRequest::builder();
            // vaultrs has no token_reviewer_jwt: the one written before is kept.
            opts.kubernetes_ca_cert(bundle.as_str())
                .disable_iss_validation(true)
                .disable_local_ca_jwt(true);
            vaultrs::auth::kubernetes::configure(
                &client,
                "kubernetes",
                &cluster.url,
                Some(&mut opts),
            )
            .await
            .expect("vaultrs configure");
            let jwt = cluster.projected_token("prod", "web", "coffer", "web-1", now() + 600);
            let (code, b) = login(&s, "web", &jwt).await;
            assert_eq!(code, 200, "bundle {i} through vaultrs: {b}");
            continue;
        }
        let (code, b) = s
            .call(
                "POST",
                "auth/kubernetes/config",
                Some(&root),
                Some(json!({
                    "kubernetes_host": cluster.url,
                    "kubernetes_ca_cert": bundle,
                    "token_reviewer_jwt": reviewer,
                    "disable_local_ca_jwt": true,
                })),
            )
            .await;
        assert_eq!(code, 204, "bundle {i}: {b}");
        let jwt = cluster.projected_token("prod", "web", "coffer", "web-1", now() + 600);
        let (code, b) = login(&s, "web", &jwt).await;
        assert_eq!(code, 200, "bundle {i}: {b}");
    }
    let (code, b) = s
        .call(
            "POST",
            "auth/kubernetes/config",
            Some(&root),
            Some(json!({"kubernetes_host": cluster.url, "kubernetes_ca_cert": "not a pem"})),
        )
        .await;
    assert_eq!(code, 400);
    assert!(b["errors"][0].as_str().expect("e").contains("holds no certificate"), "{b}");
}
