//! Kubernetes auth method (Vault's `kubernetes`): a pod logs in with its service-account token,
//! which Coffer has the cluster itself vouch for through the TokenReview API.
//!
//! The cluster is the authority: a token is accepted only when the API server's TokenReview says
//! it is authenticated now (so deleted service accounts, deleted pods of bound tokens and expired
//! projected tokens are refused), and the identity the review returns must be the one the token
//! claims. Before any call leaves Coffer the token must already name a service account and a
//! namespace the role binds, so an unrelated token costs no round trip.
//!
//! A role that binds images (`bound_image_*`, see `crate::image`) also has the cluster vouch
//! for the image: the pod the review says the token is bound to is read from the API server
//! (its uid must be the review's, it must be running) and its running containers' `imageID`s
//! are the evidence. The same review-and-pod evidence serves AppRole's image-bound logins
//! ([`image_evidence`]). Not done: watching pods (a pod is read once, at login).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use coffer_core::framework::{Field, Framework, Paths, Req};
use coffer_core::glob::glob_match;
use coffer_core::logical::fields::Fields;
use coffer_core::record;
use coffer_core::time::now_unix;
use coffer_core::{BackendConfig, Error, LogicalBackend, Response, Result, View};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::config::{self, Configured, Endpoints};
use crate::image::{self, Demand, ImageBinding, ImageFacts, Running};
use crate::role::{self, Roles, TokenFields, into_map};
use crate::{jws, outbound};

/// Where a pod finds its own service-account token and the cluster CA.
const LOCAL_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
const LOCAL_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
const TOKEN_REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// Clock skew allowed on a projected token's `exp` before Coffer refuses it without asking.
const EXP_SKEW: u64 = 60;

pub(crate) struct Kubernetes {
    view: View,
    roles: Roles<Role>,
}

pub(crate) fn factory(cfg: BackendConfig) -> Result<Arc<dyn LogicalBackend>> {
    let roles = Roles::new(cfg.view.clone(), "role/");
    Ok(Arc::new(Kubernetes { view: cfg.view, roles }))
}

static PATHS: LazyLock<Paths<Kubernetes>> = LazyLock::new(|| {
    config::paths(Endpoints {
        login: "Log in with a service-account token, checked by the TokenReview API.",
        login_fields: LOGIN_FIELDS,
        config: "The cluster whose TokenReview API vouches for tokens.",
        config_fields: CONFIG_FIELDS,
    })
});

const LOGIN_FIELDS: &[Field] = &[
    Field::str("role", "The role to log in with."),
    Field::str("jwt", "The service-account token."),
    image::SIGNATURE_FIELD,
];

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Config {
    kubernetes_host: String,
    kubernetes_ca_cert: String,
    /// Write-only: the bearer token Coffer presents to the TokenReview API.
    token_reviewer_jwt: Zeroizing<String>,
    issuer: String,
    disable_iss_validation: bool,
    disable_local_ca_jwt: bool,
}

coffer_core::record!(Config, "kubernetes config", 1);

const CONFIG_FIELDS: &[Field] = &[
    Field::str("kubernetes_host", "The API server's URL."),
    Field::str("kubernetes_ca_cert", "CA certificate (PEM) of the API server."),
    Field::str("token_reviewer_jwt", "Bearer token for the TokenReview API; write-only."),
    Field::str("issuer", "The `iss` tokens must carry, unless disable_iss_validation."),
    Field::bool("disable_iss_validation", "Do not check `iss`."),
    Field::bool("disable_local_ca_jwt", "Do not use the pod's own token and CA."),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Role {
    bound_service_account_names: Vec<String>,
    bound_service_account_namespaces: Vec<String>,
    audience: String,
    alias_name_source: String,
    #[serde(flatten)]
    image: ImageBinding,
}

const ROLE_FIELDS: &[Field] = &[
    Field::str("name", "The role's name."),
    Field::comma_list("bound_service_account_names", "Service accounts allowed (`*` globs)."),
    Field::comma_list("bound_service_account_namespaces", "Namespaces allowed (`*` globs)."),
    Field::str("audience", "The audience a token must carry."),
    Field::str("alias_name_source", "`serviceaccount_uid` or `serviceaccount_name`."),
    image::DIGESTS_FIELD,
    image::SIGNERS_FIELD,
    image::REPOSITORIES_FIELD,
];

const ALIAS_SOURCES: &[&str] = &["serviceaccount_uid", "serviceaccount_name"];

/// Who a service-account token says it is, from its claims (not yet vouched for).
#[derive(Debug, PartialEq)]
struct ServiceAccount {
    namespace: String,
    name: String,
    uid: String,
    /// Legacy (secret-based) tokens only.
    secret_name: Option<String>,
    /// Projected tokens bound to a pod only.
    pod_name: Option<String>,
}

impl ServiceAccount {
    /// Reads the legacy `kubernetes.io/serviceaccount/*` claims or the projected
    /// `kubernetes.io` object.
    fn from_claims(c: &Map<String, Value>) -> Option<ServiceAccount> {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        if let Some(k) = c.get("kubernetes.io").and_then(Value::as_object) {
            let sa = k.get("serviceaccount")?;
            return Some(ServiceAccount {
                namespace: s(k.get("namespace"))?,
                name: s(sa.get("name"))?,
                uid: s(sa.get("uid")).unwrap_or_default(),
                secret_name: None,
                pod_name: s(k.get("pod").and_then(|p| p.get("name"))),
            });
        }
        let legacy = |k: &str| s(c.get(&format!("kubernetes.io/serviceaccount/{k}")));
        Some(ServiceAccount {
            namespace: legacy("namespace")?,
            name: legacy("service-account.name")?,
            uid: legacy("service-account.uid").unwrap_or_default(),
            secret_name: legacy("secret.name"),
            pod_name: None,
        })
    }
}

impl role::Role for Role {
    const KIND: &'static str = "kubernetes role";
    const FIELDS: &'static [Field] = ROLE_FIELDS;

    fn fresh() -> Self {
        Role { alias_name_source: "serviceaccount_uid".into(), ..Role::default() }
    }

    fn apply(&mut self, f: &Fields<'_>, _creating: bool) -> Result<()> {
        if let Some(n) = f.list("bound_service_account_names")? {
            self.bound_service_account_names = n.into_iter().filter(|s| !s.is_empty()).collect();
        }
        if let Some(n) = f.list("bound_service_account_namespaces")? {
            self.bound_service_account_namespaces =
                n.into_iter().filter(|s| !s.is_empty()).collect();
        }
        if let Some(a) = f.str("audience")? {
            self.audience = a;
        }
        if let Some(a) = f.str("alias_name_source")? {
            if !ALIAS_SOURCES.contains(&a.as_str()) {
                return Err(Error::invalid(format!(
                    "invalid alias_name_source {a:?}: use {}",
                    ALIAS_SOURCES.join(" or ")
                )));
            }
            self.alias_name_source = a;
        }
        self.image.apply(f)
    }

    fn check(&self, _token: &TokenFields) -> Result<()> {
        let star = |l: &[String]| l.len() == 1 && l[0] == "*";
        for (field, list) in [
            ("bound_service_account_names", &self.bound_service_account_names),
            ("bound_service_account_namespaces", &self.bound_service_account_namespaces),
        ] {
            if list.is_empty() {
                return Err(Error::invalid(format!("{field:?} can not be empty")));
            }
            if list.len() > 1 && list.iter().any(|v| v == "*") {
                return Err(Error::invalid(format!(
                    "{field:?} can not contain \"*\" together with other values"
                )));
            }
        }
        if star(&self.bound_service_account_names) && star(&self.bound_service_account_namespaces) {
            return Err(Error::invalid(
                "service_account_names and service_account_namespaces can not both be \"*\"",
            ));
        }
        Ok(())
    }

    fn own_json(&self) -> Map<String, Value> {
        let mut m = into_map(json!({
            "bound_service_account_names": self.bound_service_account_names,
            "bound_service_account_namespaces": self.bound_service_account_namespaces,
            "audience": self.audience,
            "alias_name_source": self.alias_name_source,
        }));
        self.image.to_json(&mut m);
        m
    }
}

/// A bound list allows `value` when it holds `*`, `value`, or a glob matching it.
fn bound(list: &[String], value: &str) -> bool {
    list.iter().any(|b| b == "*" || glob_match(b, value))
}

/// The API server as Coffer calls it: the configured CA and bearer (the reviewer JWT, the
/// pod's own when Coffer runs in the cluster, or else the token under review, as Vault does).
struct Api {
    client: reqwest::Client,
    host: String,
    bearer: Zeroizing<String>,
}

fn unreachable(host: &str, detail: String) -> Error {
    tracing::warn!(host = %host, error = %detail, "kubernetes: TokenReview failed");
    Error::Internal("kubernetes: the TokenReview API could not be used; see the server log".into())
}

impl Api {
    async fn new(c: &Config, jwt: &str) -> Result<Api> {
        let mut ca = c.kubernetes_ca_cert.clone();
        let mut reviewer = c.token_reviewer_jwt.clone();
        if !c.disable_local_ca_jwt {
            if ca.is_empty() {
                ca = tokio::fs::read_to_string(LOCAL_CA).await.unwrap_or_default();
            }
            if reviewer.is_empty() {
                *reviewer = tokio::fs::read_to_string(LOCAL_JWT).await.unwrap_or_default();
            }
        }
        if reviewer.trim().is_empty() {
            *reviewer = jwt.to_owned();
        }
        let client = outbound::client(&ca).map_err(|e| unreachable(&c.kubernetes_host, e))?;
        let bearer = Zeroizing::new(reviewer.trim().to_owned());
        Ok(Api { client, host: c.kubernetes_host.clone(), bearer })
    }

    /// Asks the TokenReview API whether `jwt` is authenticated.
    async fn review(&self, jwt: &str, audience: &str) -> Result<Reviewed> {
        let mut spec = json!({ "token": jwt });
        if !audience.is_empty() {
            spec["audiences"] = json!([audience]);
        }
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": spec,
        });
        let url = format!("{}{TOKEN_REVIEW_PATH}", self.host);
        let resp = self
            .client
            .post(&url)
            .bearer_auth(self.bearer.as_str())
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(&self.host, outbound::describe(&url, &e)))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            tracing::warn!(%status, "kubernetes: the API server refused the reviewer JWT; check token_reviewer_jwt and its system:auth-delegator binding");
            return Err(Error::PermissionDenied);
        }
        let answer = outbound::json(resp).await.map_err(|e| unreachable(&self.host, e))?;
        parse_review(&answer)
    }

    /// The pod a reviewed projected token is bound to, read from the API server: its uid must
    /// be the token's, it must be running, and its running containers are the evidence.
    async fn pod(&self, ns: &str, pod: &PodRef) -> std::result::Result<Vec<Running>, PodError> {
        let url = format!("{}/api/v1/namespaces/{ns}/pods/{}", self.host, pod.name);
        let resp =
            self.client.get(&url).bearer_auth(self.bearer.as_str()).send().await.map_err(|e| {
                PodError::Api(unreachable(&self.host, outbound::describe(&url, &e)))
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(PodError::Refused(format!("pod {ns}/{} does not exist", pod.name)));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            tracing::warn!(%status, "kubernetes: the API server refused to show a pod; Coffer's service account needs `get` on `pods` (docs/image-binding.md has the ClusterRole)");
            return Err(PodError::Refused("the API server refused to show the pod".into()));
        }
        let answer =
            outbound::json(resp).await.map_err(|e| PodError::Api(unreachable(&self.host, e)))?;
        parse_pod(&answer, pod).map_err(PodError::Refused)
    }
}

enum PodError {
    /// The API server could not be used: a 500.
    Api(Error),
    /// The evidence refuses the login: a 403 with the reason audited.
    Refused(String),
}

/// The pod a projected token is bound to, as the TokenReview's `extra` names it.
#[derive(Debug, Clone, PartialEq)]
struct PodRef {
    name: String,
    uid: String,
}

fn parse_pod(pod: &Value, want: &PodRef) -> std::result::Result<Vec<Running>, String> {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    if uid.is_empty() || uid != want.uid {
        return Err(format!(
            "pod {:?} has uid {uid:?}, not the {:?} the token is bound to",
            want.name, want.uid
        ));
    }
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if phase != "Running" {
        return Err(format!("pod {:?} is not running (phase {phase:?})", want.name));
    }
    let running: Vec<Running> = pod["status"]["containerStatuses"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|c| c["state"]["running"].is_object())
        .map(|c| Running {
            name: c["name"].as_str().unwrap_or_default().to_owned(),
            image_id: c["imageID"].as_str().unwrap_or_default().to_owned(),
        })
        .collect();
    if running.is_empty() {
        return Err(format!("pod {:?} has no running container", want.name));
    }
    Ok(running)
}

/// The image evidence of a kubernetes-style login: the token is reviewed, the pod it is bound
/// to read, and its containers checked against `binding` (and `also`, digests the credential
/// itself is bound to). Shared with AppRole's image evidence.
pub(crate) async fn image_evidence(
    c: &Config,
    jwt: &str,
    audience: &str,
    demand: &Demand<'_>,
) -> Result<ImageFacts> {
    let api = Api::new(c, jwt).await?;
    let review = api.review(jwt, audience).await?;
    image_facts(&api, &review, demand).await
}

async fn image_facts(api: &Api, review: &Reviewed, demand: &Demand<'_>) -> Result<ImageFacts> {
    let Demand { binding, signatures, also, method, role } = *demand;
    let Some(pod) = &review.pod else {
        return Err(image::refuse(
            method,
            role,
            "the token is not bound to a pod (image evidence needs a projected service-account token)"
                .into(),
        ));
    };
    let containers = match api.pod(&review.namespace, pod).await {
        Ok(c) => c,
        Err(PodError::Api(e)) => return Err(e),
        Err(PodError::Refused(why)) => return Err(image::refuse(method, role, why)),
    };
    binding
        .evaluate(&containers, signatures, also, now_unix())
        .map_err(|why| image::refuse(method, role, why))
}

/// The identity a TokenReview vouches for.
#[derive(Debug)]
struct Reviewed {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    /// Projected tokens bound to a pod: the pod the API server says the token belongs to.
    pod: Option<PodRef>,
}

fn parse_review(answer: &Value) -> Result<Reviewed> {
    let status = answer.get("status").cloned().unwrap_or(Value::Null);
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        let why = status.get("error").and_then(Value::as_str).unwrap_or("not authenticated");
        tracing::info!(reason = %why, "kubernetes: the TokenReview did not authenticate the token");
        return Err(Error::PermissionDenied);
    }
    let user = status.get("user").cloned().unwrap_or(Value::Null);
    let username = user.get("username").and_then(Value::as_str).unwrap_or_default();
    let parts: Vec<&str> = username.split(':').collect();
    let ["system", "serviceaccount", namespace, name] = parts.as_slice() else {
        tracing::warn!(%username, "kubernetes: the reviewed token is not a service account's");
        return Err(Error::PermissionDenied);
    };
    let extra = |k: &str| {
        user["extra"][k]
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let pod = match (
        extra("authentication.kubernetes.io/pod-name"),
        extra("authentication.kubernetes.io/pod-uid"),
    ) {
        (Some(name), Some(uid)) => Some(PodRef { name, uid }),
        _ => None,
    };
    Ok(Reviewed {
        pod,
        namespace: (*namespace).to_owned(),
        name: (*name).to_owned(),
        uid: user.get("uid").and_then(Value::as_str).unwrap_or_default().to_owned(),
        audiences: status
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

impl role::HasRoles for Kubernetes {
    type Role = Role;

    fn roles(&self) -> &Roles<Role> {
        &self.roles
    }
}

#[async_trait]
impl Configured for Kubernetes {
    type Config = Config;

    fn view(&self) -> &View {
        &self.view
    }

    async fn login(&self, req: &Req<'_>) -> Result<Response> {
        let f = Fields::new(req.data);
        let role_name = f
            .str("role")?
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Error::invalid("missing role"))?
            .to_lowercase();
        let jwt = Zeroizing::new(
            f.str("jwt")?.filter(|j| !j.is_empty()).ok_or_else(|| Error::invalid("missing jwt"))?,
        );
        let role = self
            .roles
            .get(&role_name)
            .await?
            .ok_or_else(|| Error::invalid(format!("invalid role name {role_name:?}")))?;
        let config = self
            .config()
            .await?
            .ok_or_else(|| Error::invalid("could not load backend configuration"))?;

        // What the token claims, checked before the cluster is asked.
        let token = jws::parse(&jwt)?;
        let claims = &token.claims;
        let sa = ServiceAccount::from_claims(claims)
            .ok_or_else(|| Error::invalid("the JWT is not a Kubernetes service-account token"))?;
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64)
            && now_unix() > exp.saturating_add(EXP_SKEW)
        {
            return Err(Error::invalid("error validating claims: token is expired"));
        }
        if !config.disable_iss_validation
            && !config.issuer.is_empty()
            && claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str())
        {
            return Err(Error::invalid("error validating claims: invalid issuer (iss) claim"));
        }
        if !bound(&role.bound_service_account_names, &sa.name) {
            return Err(Error::invalid("service account name not authorized"));
        }
        if !bound(&role.bound_service_account_namespaces, &sa.namespace) {
            return Err(Error::invalid("namespace not authorized"));
        }
        if !role.audience.is_empty() {
            let aud = match claims.get("aud") {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !aud.contains(&role.audience.as_str()) {
                return Err(Error::invalid(
                    "error validating claims: invalid audience (aud) claim",
                ));
            }
        }

        // The cluster's word on it.
        let api = Api::new(&config, &jwt).await?;
        let review = api.review(&jwt, &role.audience).await?;
        if review.namespace != sa.namespace
            || review.name != sa.name
            || (!sa.uid.is_empty() && review.uid != sa.uid)
        {
            tracing::warn!(
                claimed = %format!("{}/{}", sa.namespace, sa.name),
                reviewed = %format!("{}/{}", review.namespace, review.name),
                "kubernetes: the TokenReview names another service account than the token"
            );
            return Err(Error::PermissionDenied);
        }
        if !role.audience.is_empty() && !review.audiences.contains(&role.audience) {
            return Err(Error::PermissionDenied);
        }
        let image = if role.image.is_set() {
            let signatures = image::presented_signatures(req.data)?;
            let demand = Demand {
                binding: &role.image,
                signatures: &signatures,
                also: &[],
                method: "kubernetes",
                role: &role_name,
            };
            Some(image_facts(&api, &review, &demand).await?)
        } else {
            None
        };

        let mut metadata = BTreeMap::from([
            ("role".to_owned(), role_name),
            ("service_account_name".to_owned(), sa.name.clone()),
            ("service_account_namespace".to_owned(), sa.namespace.clone()),
            ("service_account_uid".to_owned(), review.uid.clone()),
        ]);
        if let Some(secret) = &sa.secret_name {
            metadata.insert("service_account_secret_name".into(), secret.clone());
        }
        if let Some(pod) = &sa.pod_name {
            metadata.insert("pod_name".into(), pod.clone());
        }
        if let Some(facts) = &image {
            facts.add_to(&mut metadata);
        }
        let display_name = format!("{}-{}", sa.namespace, sa.name);
        // Vault's alias: the service account's UID, or `namespace/name` with
        // alias_name_source = serviceaccount_name; the login's metadata goes with it.
        let alias_name = if role.alias_name_source == "serviceaccount_name" {
            format!("{}/{}", sa.namespace, sa.name)
        } else {
            review.uid.clone()
        };
        let alias = coffer_core::LoginAlias::new(alias_name, metadata.clone());
        let mut login = role.token.login(display_name, metadata);
        login.alias = Some(alias);
        Ok(Response::login(login))
    }

    fn show(c: &Config) -> Map<String, Value> {
        show_config(c)
    }

    async fn write_config(&self, req: &Req<'_>) -> Result<Response> {
        let f = Fields::new(req.data);
        let mut c = self
            .config()
            .await?
            .unwrap_or(Config { disable_iss_validation: true, ..Config::default() });
        apply_config(&mut c, &f)?;
        self.view.put("config", &record::encode(&c)?).await?;
        Ok(Response::empty())
    }
}

/// A config as a read shows it (the reviewer JWT only as whether one is set).
pub(crate) fn show_config(c: &Config) -> Map<String, Value> {
    into_map(json!({
        "kubernetes_host": c.kubernetes_host,
        "kubernetes_ca_cert": c.kubernetes_ca_cert,
        "token_reviewer_jwt_set": !c.token_reviewer_jwt.is_empty(),
        "issuer": c.issuer,
        "disable_iss_validation": c.disable_iss_validation,
        "disable_local_ca_jwt": c.disable_local_ca_jwt,
        "pem_keys": [],
    }))
}

/// Applies a config write's fields (kubernetes' own `config`, AppRole's `image-evidence`):
/// the host and CA are checked before anything is stored.
pub(crate) fn apply_config(c: &mut Config, f: &Fields<'_>) -> Result<()> {
    if let Some(h) = f.str("kubernetes_host")? {
        c.kubernetes_host = h.trim_end_matches('/').to_owned();
    }
    if c.kubernetes_host.is_empty() {
        return Err(Error::invalid("no host provided: kubernetes_host is required"));
    }
    if !c.kubernetes_host.starts_with("https://") && !c.kubernetes_host.starts_with("http://") {
        return Err(Error::invalid("kubernetes_host must be a URL such as https://10.0.0.1:443"));
    }
    if let Some(ca) = f.str("kubernetes_ca_cert")? {
        c.kubernetes_ca_cert = ca;
    }
    outbound::client(&c.kubernetes_ca_cert)
        .map_err(|e| Error::invalid(format!("kubernetes_ca_cert: {e}")))?;
    if let Some(j) = f.str("token_reviewer_jwt")? {
        let j = Zeroizing::new(j);
        if !j.is_empty() && jws::parse(&j).is_err() {
            return Err(Error::invalid("token_reviewer_jwt is not a JWT"));
        }
        c.token_reviewer_jwt = j;
    }
    if let Some(i) = f.str("issuer")? {
        c.issuer = i;
    }
    if let Some(b) = f.bool("disable_iss_validation")? {
        c.disable_iss_validation = b;
    }
    if let Some(b) = f.bool("disable_local_ca_jwt")? {
        c.disable_local_ca_jwt = b;
    }
    Ok(())
}

impl Framework for Kubernetes {
    fn paths() -> &'static Paths<Self> {
        &PATHS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_projected_claims() {
        let legacy = into_map(json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "prod",
            "kubernetes.io/serviceaccount/secret.name": "web-token-abc",
            "kubernetes.io/serviceaccount/service-account.name": "web",
            "kubernetes.io/serviceaccount/service-account.uid": "u-1",
        }));
        let sa = ServiceAccount::from_claims(&legacy).expect("legacy");
        assert_eq!(
            (sa.namespace.as_str(), sa.name.as_str(), sa.uid.as_str()),
            ("prod", "web", "u-1")
        );
        assert_eq!(sa.secret_name.as_deref(), Some("web-token-abc"));

        let projected = into_map(json!({
            "aud": ["coffer"], "exp": 1, "iss": "https://kubernetes.default.svc",
            "kubernetes.io": {
                "namespace": "prod",
                "pod": {"name": "web-7d9", "uid": "p-1"},
                "serviceaccount": {"name": "web", "uid": "u-1"},
            },
        }));
        let sa = ServiceAccount::from_claims(&projected).expect("projected");
        assert_eq!(sa.pod_name.as_deref(), Some("web-7d9"));
        assert_eq!(sa.name, "web");
        assert!(ServiceAccount::from_claims(&into_map(json!({"sub": "x"}))).is_none());
    }

    #[test]
    fn reviews() {
        let ok = json!({"status": {"authenticated": true, "user": {
            "username": "system:serviceaccount:prod:web", "uid": "u-1"}, "audiences": ["coffer"]}});
        let r = parse_review(&ok).expect("authenticated");
        assert_eq!((r.namespace.as_str(), r.name.as_str(), r.uid.as_str()), ("prod", "web", "u-1"));
        assert_eq!(r.audiences, vec!["coffer".to_owned()]);
        assert_eq!(r.pod, None, "a token bound to no pod");
        let bound = json!({"status": {"authenticated": true, "user": {
            "username": "system:serviceaccount:prod:web", "uid": "u-1", "extra": {
                "authentication.kubernetes.io/pod-name": ["web-1"],
                "authentication.kubernetes.io/pod-uid": ["p-1"]}}}});
        let r = parse_review(&bound).expect("authenticated");
        assert_eq!(r.pod, Some(PodRef { name: "web-1".into(), uid: "p-1".into() }));
        for bad in [
            json!({"status": {"authenticated": false, "error": "invalid bearer token"}}),
            json!({"status": {"authenticated": true, "user": {"username": "alice"}}}),
            json!({"status": {"authenticated": true, "user": {"username": "system:node:n1"}}}),
            json!({}),
        ] {
            assert!(matches!(parse_review(&bad), Err(Error::PermissionDenied)), "{bad}");
        }
    }

    #[test]
    fn pods_give_their_running_containers_when_the_uid_is_the_tokens() {
        let want = PodRef { name: "web-1".into(), uid: "p-1".into() };
        let pod = |uid: &str, phase: &str| {
            json!({"metadata": {"uid": uid}, "status": {"phase": phase, "containerStatuses": [
                {"name": "web", "imageID": "r.io/web@sha256:ab", "state": {"running": {}}},
                {"name": "init", "imageID": "r.io/x@sha256:cd", "state": {"terminated": {}}}]}})
        };
        let running = parse_pod(&pod("p-1", "Running"), &want).expect("running");
        assert_eq!(running.len(), 1);
        assert_eq!(
            (running[0].name.as_str(), running[0].image_id.as_str()),
            ("web", "r.io/web@sha256:ab")
        );
        assert!(parse_pod(&pod("p-2", "Running"), &want).expect_err("uid").contains("uid"));
        assert!(
            parse_pod(&pod("p-1", "Pending"), &want).expect_err("phase").contains("not running")
        );
        assert!(parse_pod(&json!({}), &want).is_err());
    }

    #[test]
    fn bindings() {
        let l = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(bound(&l(&["web", "api"]), "api"));
        assert!(!bound(&l(&["web"]), "webx"));
        assert!(bound(&l(&["*"]), "anything"));
        assert!(bound(&l(&["team-*"]), "team-a"));
        assert!(!bound(&l(&["team-*"]), "other"));
    }
}
