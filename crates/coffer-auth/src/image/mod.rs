//! Image binding: a role's constraints on the container image a login comes from
//! (`bound_image_digests`, `bound_image_signers`, `bound_image_repositories`), shared by the
//! kubernetes, jwt and approle methods, and the check of a login's evidence against them.
//!
//! Guarantees: the evidence is what the orchestrator reported (the methods gather it: the pod's
//! container statuses from the API server, or a verified token's claims), never what the
//! workload says about itself; a signature the workload presents only adds a proof that the
//! digest the orchestrator reported was signed. Only manifest digests count (`sha256:` and 64
//! hex digits in a reference `repo@sha256:...`): a tag, or an image id without a repository
//! digest, proves nothing and is refused. A role with a container-named digest refuses a pod in
//! which that container is missing or runs another digest; otherwise one container meeting every
//! constraint suffices (sidecars are not held to the role's image). A refusal carries its reason
//! for the audit log; the method answers the caller with a bare 403 ([`Error::Refused`]).
//! Not done here: fetching evidence (the methods do) and fetching signatures from registries.

pub(crate) mod cosign;

use std::collections::BTreeMap;

use coffer_core::framework::{Field, Kind};
use coffer_core::glob::glob_match;
use coffer_core::logical::fields::Fields;
use coffer_core::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub(crate) use cosign::Signer;

pub(crate) const DIGESTS_FIELD: Field = Field::comma_list(
    "bound_image_digests",
    "Image manifest digests allowed (`sha256:...`), or `CONTAINER=sha256:...` for one container.",
);
pub(crate) const SIGNERS_FIELD: Field = Field::new(
    "bound_image_signers",
    Kind::StrList,
    "Signers the image digest must be signed by (cosign): PEM public keys, or objects \
     {issuer, subject, fulcio_ca, rekor_public_key} for keyless signatures.",
)
.unchecked();
pub(crate) const REPOSITORIES_FIELD: Field = Field::comma_list(
    "bound_image_repositories",
    "Image repositories allowed (`registry/path`, `*` globs).",
);
/// The login field carrying signatures, for the methods that take them.
pub(crate) const SIGNATURE_FIELD: Field = Field::new(
    "image_signature",
    Kind::StrList,
    "Cosign signature(s) of the image digest, as `cosign download signature` prints them.",
)
.unchecked();

/// The token metadata keys an image-bound login sets (read by detection rules and policies).
pub(crate) const METADATA_KEYS: &[&str] = &["image_digest", "image_repository", "image_signer"];

/// At most this many signatures are looked at per login.
const MAX_SIGNATURES: usize = 8;

/// A role's image constraints; all empty: the role does not bind images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ImageBinding {
    /// `sha256:<hex>` or `<container>=sha256:<hex>`.
    pub(crate) bound_image_digests: Vec<String>,
    pub(crate) bound_image_signers: Vec<Signer>,
    pub(crate) bound_image_repositories: Vec<String>,
}

/// What a login proved about its image; goes into the token's metadata.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageFacts {
    pub(crate) digest: String,
    pub(crate) repository: String,
    pub(crate) signer: Option<String>,
}

impl ImageFacts {
    pub(crate) fn add_to(&self, metadata: &mut BTreeMap<String, String>) {
        metadata.insert("image_digest".into(), self.digest.clone());
        metadata.insert("image_repository".into(), self.repository.clone());
        if let Some(s) = &self.signer {
            metadata.insert("image_signer".into(), s.clone());
        }
    }
}

/// What a login must prove about its image, and who asks (named in a refusal's reason).
#[derive(Clone, Copy)]
pub(crate) struct Demand<'a> {
    pub(crate) binding: &'a ImageBinding,
    /// The signatures the login presented.
    pub(crate) signatures: &'a [Value],
    /// Digests the credential itself is bound to (an AppRole secret ID's).
    pub(crate) also: &'a [String],
    pub(crate) method: &'a str,
    pub(crate) role: &'a str,
}

/// A running container as the orchestrator reports it.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) name: String,
    /// The image reference it resolved to (Kubernetes' `imageID`): `repo@sha256:...`.
    pub(crate) image_id: String,
}

/// A parsed digest reference: normalized repository and `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reference {
    pub(crate) repository: String,
    pub(crate) digest: String,
}

pub(crate) fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `repo[:tag]@sha256:<hex>` (Docker's `docker-pullable://` prefix allowed); `None` for a
/// reference without a manifest digest.
pub(crate) fn parse_reference(r: &str) -> Option<Reference> {
    let r = r.trim();
    let r =
        r.strip_prefix("docker-pullable://").or_else(|| r.strip_prefix("docker://")).unwrap_or(r);
    let (name, digest) = r.rsplit_once('@')?;
    if !valid_digest(digest) || name.is_empty() {
        return None;
    }
    // A tag is after the last `/`, so a registry's `:port` is not mistaken for one.
    let name = match name.rsplit_once('/') {
        Some((head, last)) => match last.split_once(':') {
            Some((repo, _tag)) => format!("{head}/{repo}"),
            None => name.to_owned(),
        },
        None => name.split_once(':').map_or(name, |(n, _)| n).to_owned(),
    };
    Some(Reference { repository: normalize_repository(&name), digest: digest.to_owned() })
}

/// Docker's normalization: `nginx` is `docker.io/library/nginx`, `team/app` is
/// `docker.io/team/app`, `index.docker.io` is `docker.io`.
pub(crate) fn normalize_repository(name: &str) -> String {
    let name = name.trim().to_ascii_lowercase();
    let (first, rest) = match name.split_once('/') {
        None => return format!("docker.io/library/{name}"),
        Some(p) => p,
    };
    if first == "index.docker.io" || first == "docker.io" {
        return if rest.contains('/') {
            format!("docker.io/{rest}")
        } else {
            format!("docker.io/library/{rest}")
        };
    }
    if first.contains('.') || first.contains(':') || first == "localhost" {
        name
    } else {
        format!("docker.io/{name}")
    }
}

impl ImageBinding {
    pub(crate) fn is_set(&self) -> bool {
        !self.bound_image_digests.is_empty()
            || !self.bound_image_signers.is_empty()
            || !self.bound_image_repositories.is_empty()
    }

    /// Applies the three fields present in a role write; a bad entry is a 400 naming it.
    pub(crate) fn apply(&mut self, f: &Fields<'_>) -> Result<()> {
        if let Some(list) = f.list("bound_image_digests")? {
            let mut out = Vec::new();
            for d in list.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
                let (container, digest) = match d.split_once('=') {
                    Some((c, dg)) if !c.trim().is_empty() => (Some(c.trim()), dg.trim()),
                    Some(_) => (None, ""),
                    None => (None, d),
                };
                if !valid_digest(digest) {
                    return Err(Error::invalid(format!(
                        "bound_image_digests: {d:?} is not a manifest digest \
                         (sha256: and 64 lower-case hex digits, optionally after CONTAINER=)"
                    )));
                }
                out.push(container.map_or_else(|| digest.to_owned(), |c| format!("{c}={digest}")));
            }
            self.bound_image_digests = out;
        }
        if let Some(list) = f.list("bound_image_repositories")? {
            self.bound_image_repositories =
                list.iter()
                    .map(|r| r.trim())
                    .filter(|r| !r.is_empty())
                    .map(|r| {
                        if r.contains('*') {
                            r.to_ascii_lowercase()
                        } else {
                            normalize_repository(r)
                        }
                    })
                    .collect();
        }
        if let Some(v) = f.raw("bound_image_signers") {
            self.bound_image_signers = parse_signers(v)?;
        }
        Ok(())
    }

    /// The three fields as a role read shows them; a role that binds no image reads as
    /// Vault's role does (the fields are Coffer's own, so Vault clients never see them unset).
    pub(crate) fn to_json(&self, into: &mut Map<String, Value>) {
        if !self.is_set() {
            return;
        }
        let signers: Vec<Value> = self.bound_image_signers.iter().map(Signer::to_json).collect();
        into.insert("bound_image_digests".into(), json!(self.bound_image_digests));
        into.insert("bound_image_signers".into(), Value::Array(signers));
        into.insert("bound_image_repositories".into(), json!(self.bound_image_repositories));
    }

    /// Checks the orchestrator's report of the running containers (and the signatures the
    /// login presented) against the role; `also` are digests the credential itself is bound to
    /// (an AppRole secret ID minted for one image). The reason of a refusal is for the audit log.
    pub(crate) fn evaluate(
        &self,
        containers: &[Running],
        signatures: &[Value],
        also: &[String],
        now: u64,
    ) -> std::result::Result<ImageFacts, String> {
        let mut named: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut unnamed: Vec<&str> = Vec::new();
        for d in &self.bound_image_digests {
            match d.split_once('=') {
                Some((c, dg)) => named.entry(c).or_default().push(dg),
                None => unnamed.push(d),
            }
        }
        let parsed: Vec<(&Running, Option<Reference>)> =
            containers.iter().map(|c| (c, parse_reference(&c.image_id))).collect();
        for (name, digests) in &named {
            let Some((c, r)) = parsed.iter().find(|(c, _)| c.name == *name) else {
                return Err(format!("the pod has no running container {name:?}"));
            };
            let Some(r) = r else {
                return Err(format!("container {:?} runs an image without a digest", c.name));
            };
            if !digests.contains(&r.digest.as_str()) {
                return Err(format!(
                    "container {name:?} runs {}, which is not bound to the role",
                    r.digest
                ));
            }
        }
        // Named containers first: the reported image is the one the role names.
        let mut order: Vec<&(&Running, Option<Reference>)> = parsed.iter().collect();
        order.sort_by_key(|(c, _)| !named.contains_key(c.name.as_str()));
        let presented: Vec<cosign::Presented> = signatures
            .iter()
            .take(MAX_SIGNATURES)
            .filter_map(|s| cosign::Presented::parse(s).ok())
            .collect();
        let mut first_reason = None;
        for (c, r) in order {
            let Some(r) = r else {
                first_reason.get_or_insert_with(|| {
                    format!("container {:?} runs an image without a digest", c.name)
                });
                continue;
            };
            match self.check(c, r, &named, &unnamed, also, &presented, now) {
                Ok(signer) => {
                    return Ok(ImageFacts {
                        digest: r.digest.clone(),
                        repository: r.repository.clone(),
                        signer,
                    });
                }
                Err(why) => {
                    first_reason.get_or_insert(why);
                }
            }
        }
        Err(first_reason.unwrap_or_else(|| "no running container was reported".into()))
    }

    #[allow(clippy::too_many_arguments)] // one call site; the parts of one check
    fn check(
        &self,
        c: &Running,
        r: &Reference,
        named: &BTreeMap<&str, Vec<&str>>,
        unnamed: &[&str],
        also: &[String],
        presented: &[cosign::Presented],
        now: u64,
    ) -> std::result::Result<Option<String>, String> {
        let own = named.get(c.name.as_str());
        if !self.bound_image_digests.is_empty()
            && !unnamed.contains(&r.digest.as_str())
            && !own.is_some_and(|d| d.contains(&r.digest.as_str()))
        {
            return Err(format!("image digest {} is not bound to the role", r.digest));
        }
        if !also.is_empty() && !also.contains(&r.digest) {
            return Err(format!(
                "image digest {} is not the one the secret ID is bound to",
                r.digest
            ));
        }
        if !self.bound_image_repositories.is_empty()
            && !self.bound_image_repositories.iter().any(|g| glob_match(g, &r.repository))
        {
            return Err(format!("image repository {} is not bound to the role", r.repository));
        }
        if self.bound_image_signers.is_empty() {
            return Ok(None);
        }
        let mut why = format!("no signature of {} by a trusted signer was presented", r.digest);
        for p in presented {
            for s in &self.bound_image_signers {
                match p.verify(s, &r.digest, Some(&r.repository), now) {
                    Ok(name) => return Ok(Some(name)),
                    Err(e) => why = format!("signature of {} refused: {e}", r.digest),
                }
            }
        }
        Err(why)
    }
}

fn parse_signers(v: &Value) -> Result<Vec<Signer>> {
    let bad = |i: usize, e: String| Error::invalid(format!("bound_image_signers[{i}]: {e}"));
    let items: Vec<Value> = match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.clone(),
        // A JSON list given as a string (`bound_image_signers=@signers.json` on the CLI).
        Value::String(s) if s.trim_start().starts_with('[') => serde_json::from_str(s)
            .map_err(|e| Error::invalid(format!("bound_image_signers: not a JSON list: {e}")))?,
        Value::String(s) if s.trim().is_empty() => Vec::new(),
        other => vec![other.clone()],
    };
    items.iter().enumerate().map(|(i, v)| Signer::parse(v).map_err(|e| bad(i, e))).collect()
}

/// The signatures a login presented in `image_signature`: one object, a list, or either as a
/// JSON string (or `cosign download signature`'s output: one object per line).
pub(crate) fn presented_signatures(data: &Map<String, Value>) -> Result<Vec<Value>> {
    let bad =
        || Error::invalid("image_signature must be a cosign signature object or a list of them");
    match data.get("image_signature") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(o @ Value::Object(_)) => Ok(vec![o.clone()]),
        Some(Value::String(s)) => {
            if let Ok(v) = serde_json::from_str::<Value>(s) {
                return match v {
                    Value::Array(a) => Ok(a),
                    o @ Value::Object(_) => Ok(vec![o]),
                    _ => Err(bad()),
                };
            }
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).map_err(|_| bad()))
                .collect()
        }
        Some(_) => Err(bad()),
    }
}

/// The refusal of a login whose image evidence failed: the reason goes to the server log and
/// (through the error) to the audit log, never to the caller.
pub(crate) fn refuse(method: &str, role: &str, reason: String) -> Error {
    tracing::info!(method, role, %reason, "image-bound login refused");
    Error::Refused(format!("image binding of role {role:?}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn running(name: &str, id: &str) -> Running {
        Running { name: name.into(), image_id: id.into() }
    }

    fn binding(v: Value) -> Result<ImageBinding> {
        let mut b = ImageBinding::default();
        let m = coffer_core::logical::into_map(v);
        b.apply(&Fields::new(&m))?;
        Ok(b)
    }

    #[test]
    fn references() {
        let r = parse_reference(&format!("docker-pullable://nginx@{A}")).expect("ref");
        assert_eq!(r, Reference { repository: "docker.io/library/nginx".into(), digest: A.into() });
        let r = parse_reference(&format!("registry.local:5000/team/web:1.2@{A}")).expect("ref");
        assert_eq!(r.repository, "registry.local:5000/team/web");
        assert_eq!(
            parse_reference(&format!("team/web@{A}")).expect("r").repository,
            "docker.io/team/web"
        );
        for bad in [
            "nginx:1.25",
            A,
            "nginx@sha256:abc",
            "@sha256:x",
            "",
            &format!("x@{}", A.to_uppercase()),
        ] {
            assert!(parse_reference(bad).is_none(), "{bad}");
        }
        assert_eq!(
            normalize_repository("index.docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
    }

    #[test]
    fn role_fields_are_checked_and_normalized() {
        let b = binding(json!({"bound_image_digests": format!("{A}, web={B}"),
            "bound_image_repositories": "nginx,registry.local/team/*"}))
        .expect("binding");
        assert_eq!(b.bound_image_digests, vec![A.to_owned(), format!("web={B}")]);
        assert_eq!(
            b.bound_image_repositories,
            vec!["docker.io/library/nginx", "registry.local/team/*"]
        );
        for bad in [
            json!({"bound_image_digests": "nginx:latest"}),
            json!({"bound_image_digests": "=sha256:x"}),
            json!({"bound_image_signers": ["junk"]}),
        ] {
            let e = binding(bad.clone()).expect_err("refused");
            assert!(e.to_string().contains("bound_image_"), "{bad}: {e}");
        }
    }

    #[test]
    fn evidence_against_the_role() {
        let b = binding(json!({"bound_image_digests": [A]})).expect("binding");
        let ok = b
            .evaluate(
                &[
                    running("istio-proxy", &format!("proxy@{B}")),
                    running("web", &format!("r.io/web@{A}")),
                ],
                &[],
                &[],
                0,
            )
            .expect("one container matches");
        assert_eq!((ok.digest.as_str(), ok.repository.as_str(), ok.signer), (A, "r.io/web", None));
        let e = b
            .evaluate(&[running("web", &format!("r.io/web@{B}"))], &[], &[], 0)
            .expect_err("refused");
        assert!(e.contains("not bound"), "{e}");
        let e = b.evaluate(&[running("web", "r.io/web:latest")], &[], &[], 0).expect_err("refused");
        assert!(e.contains("without a digest"), "{e}");
        let e = b
            .evaluate(&[running("web", &format!("r.io/web@{A}"))], &[], &[B.to_owned()], 0)
            .expect_err("refused");
        assert!(e.contains("secret ID"), "{e}");

        let per = binding(json!({"bound_image_digests": [format!("web={A}")]})).expect("binding");
        assert!(per.evaluate(&[running("web", &format!("r.io/web@{A}"))], &[], &[], 0).is_ok());
        let e = per
            .evaluate(&[running("other", &format!("r.io/web@{A}"))], &[], &[], 0)
            .expect_err("refused");
        assert!(e.contains("no running container"), "{e}");
        let e = per
            .evaluate(
                &[running("web", &format!("r.io/web@{B}")), running("x", &format!("r.io/web@{A}"))],
                &[],
                &[],
                0,
            )
            .expect_err("refused");
        assert!(e.contains("\"web\""), "{e}");

        let repos = binding(json!({"bound_image_repositories": ["r.io/team/*"]})).expect("binding");
        assert!(
            repos.evaluate(&[running("a", &format!("r.io/team/web@{A}"))], &[], &[], 0).is_ok()
        );
        assert!(
            repos.evaluate(&[running("a", &format!("r.io/other/web@{A}"))], &[], &[], 0).is_err()
        );
    }

    proptest::proptest! {
        /// The parsers of attacker-supplied input (a pod's `imageID`, a JWT claim, a presented
        /// signature) never panic, and what they accept is a digest reference.
        #[test]
        fn untrusted_input_never_panics(text in proptest::prelude::any::<String>()) {
            if let Some(r) = parse_reference(&text) {
                proptest::prop_assert!(valid_digest(&r.digest));
            }
            let _ = normalize_repository(&text);
            let sig = json!({"Base64Signature": text, "Payload": text, "Cert": text,
                "Chain": text, "Bundle": {"SignedEntryTimestamp": text, "Payload": {"integratedTime": 1, "body": text}}});
            let b = ImageBinding { bound_image_digests: vec![A.into()], ..ImageBinding::default() };
            let _ = b.evaluate(&[running(&text, &text)], &[sig, json!(text)], &[], 0);
        }
    }

    #[test]
    fn signatures_are_read_in_every_shape() {
        let o = json!({"Base64Signature": "YQ==", "Payload": "YQ=="});
        let m = |v: Value| coffer_core::logical::into_map(json!({ "image_signature": v }));
        assert_eq!(presented_signatures(&m(o.clone())).expect("object").len(), 1);
        assert_eq!(presented_signatures(&m(json!([o, o]))).expect("list").len(), 2);
        assert_eq!(presented_signatures(&m(json!(format!("{o}\n{o}\n")))).expect("lines").len(), 2);
        assert!(presented_signatures(&m(json!(3))).is_err());
        assert!(presented_signatures(&m(json!("nope"))).is_err());
    }
}
