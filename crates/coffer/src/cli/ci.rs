//! `coffer ci bootstrap`: the step a CI pipeline runs after it pushed (and signed) an image, to
//! mint the one credential the deployment carries for that image.
//!
//! What it guarantees: the secret ID it asks for is single-use (`num_uses=1`), lives no longer
//! than `-ttl`, is bound to the image's manifest digest (the server accepts it only from a pod
//! the cluster reports running that digest, see docs/image-binding.md), and reaches this
//! command only response-wrapped with the same TTL, so the CI log and the deployment hold a
//! wrapping token, never the secret ID. It refuses an image given by tag: a tag is not evidence.
//! It does not push, sign or deploy.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Global, client};
use super::output::print_value;

#[derive(Subcommand, Debug)]
pub(crate) enum CiCmd {
    /// Mint a single-use, short-lived, response-wrapped AppRole secret ID bound to an image
    /// digest; prints the wrapping token on the last line (or the answer with -format=json)
    Bootstrap(BootstrapArgs),
}

#[derive(Args, Debug)]
pub(crate) struct BootstrapArgs {
    /// The AppRole role the deployment logs in with
    #[arg(long)]
    pub role: String,
    /// The image as pushed, by digest: REPOSITORY@sha256:<64 hex digits>
    #[arg(long)]
    pub image: String,
    /// The path the AppRole auth method is mounted at
    #[arg(long, default_value = "approle")]
    pub mount: String,
    /// How long the wrapped secret ID may wait for its one use (also its wrapping TTL)
    #[arg(long, default_value = "15m")]
    pub ttl: String,
}

pub(super) async fn run(g: &Global, c: CiCmd) -> Result<ExitCode> {
    match c {
        CiCmd::Bootstrap(a) => bootstrap(g, a).await,
    }
}

/// The manifest digest of `REPOSITORY@sha256:<hex>`.
fn digest_of(image: &str) -> Result<&str> {
    let Some((repo, digest)) = image.rsplit_once('@') else {
        bail!(
            "-image={image:?} names no digest: give the image as pushed, REPOSITORY@sha256:<digest> \
             (a tag can be moved to another image, so it cannot be bound)"
        );
    };
    let hex_ok = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if repo.is_empty() || !hex_ok {
        bail!("-image={image:?}: expected REPOSITORY@sha256: and 64 lower-case hex digits");
    }
    Ok(digest)
}

async fn bootstrap(g: &Global, a: BootstrapArgs) -> Result<ExitCode> {
    let digest = digest_of(&a.image)?;
    let mount = a.mount.trim_matches('/');
    let path = format!("auth/{mount}/role/{}/secret-id", a.role);
    let body = json!({
        "num_uses": 1,
        "ttl": a.ttl,
        "bound_image_digests": [digest],
        "metadata": {"bootstrap_image": a.image},
    });
    let c = client(g)?.with_wrap_ttl(Some(a.ttl.clone()));
    let ans = c.write(&path, &body).await?;
    let body = ans.body.unwrap_or(Value::Null);
    let wrap = &body["wrap_info"];
    let Some(token) = wrap["token"].as_str() else {
        bail!("the server answered {path} without wrapping it; refusing to print a bare secret ID");
    };
    if g.format.structured() {
        print_value(&body, g.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("role                      {}", a.role);
    println!("image                     {}", a.image);
    println!("wrapping_token_ttl        {}", wrap["ttl"]);
    println!("wrapping_token_accessor   {}", wrap["accessor"].as_str().unwrap_or_default());
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_digest_references_are_accepted() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(digest_of(&format!("registry.local/web@{d}")).expect("digest"), d);
        assert_eq!(digest_of(&format!("registry.local/web:1.0@{d}")).expect("digest"), d);
        for bad in ["registry.local/web:1.0", "web@sha256:abc", &format!("@{d}"), &d.to_uppercase()]
        {
            assert!(digest_of(bad).is_err(), "{bad}");
        }
    }
}
