//! `coffer kv`: versioned (v2) and unversioned (v1) key/value secrets with one set of commands,
//! as `vault kv` does. The mount and its version are found through `sys/internal/ui/mounts`, or
//! given with `-mount`.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use coffer_api::Client;
use serde_json::{Map, Value, json};

use super::client::{Global, client, parse_pairs, parse_write_data, print_answer};
use super::output::{cell, not_found, print_body, print_value, table};

#[derive(Subcommand, Debug)]
pub(crate) enum KvCmd {
    /// Write a secret (a new version on v2): `coffer kv put secret/app password=s3cr3t`
    Put(KvWrite),
    /// Read a secret (the latest version, or -version=N)
    Get(KvRead),
    /// Change some keys of the latest version, keeping the others (v2)
    Patch(KvWrite),
    /// Soft-delete the latest version, or -versions=1,2 (v2); v1 deletes the secret
    Delete(KvVersions),
    /// Restore soft-deleted versions (v2)
    Undelete(KvVersions),
    /// Permanently remove versions' data (v2)
    Destroy(KvVersions),
    /// List the keys below a path
    List(KvPath),
    /// Read or change a secret's metadata, or delete the secret entirely (v2)
    #[command(subcommand)]
    Metadata(KvMetadataCmd),
    /// Write an old version's data as the new latest version (v2)
    Rollback(KvRollback),
}

#[derive(Args, Debug)]
pub(crate) struct KvPath {
    /// The secret's path; with -mount, relative to that mount
    pub(crate) path: String,
    /// The kv mount (default: found from the path)
    #[arg(long)]
    pub(crate) mount: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct KvWrite {
    #[command(flatten)]
    pub(crate) at: KvPath,
    /// key=value, key=@file, key=-, or a lone `-` for a JSON object on stdin
    pub(crate) data: Vec<String>,
    /// Write only if the current version is this one (0: only if the secret does not exist)
    #[arg(long)]
    pub(crate) cas: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct KvRead {
    #[command(flatten)]
    pub(crate) at: KvPath,
    /// Read this version instead of the latest (v2)
    #[arg(long)]
    pub(crate) version: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct KvVersions {
    #[command(flatten)]
    pub(crate) at: KvPath,
    /// Comma-separated version numbers
    #[arg(long, value_delimiter = ',')]
    pub(crate) versions: Vec<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct KvRollback {
    #[command(flatten)]
    pub(crate) at: KvPath,
    /// The version whose data becomes the new latest version
    #[arg(long)]
    pub(crate) version: u64,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KvMetadataCmd {
    /// Show versions, settings and custom metadata
    Get(KvPath),
    /// Change max versions, check-and-set, automatic deletion or custom metadata
    Put(KvMetadataPut),
    /// Delete the secret: all versions and the metadata
    Delete(KvPath),
}

#[derive(Args, Debug)]
pub(crate) struct KvMetadataPut {
    #[command(flatten)]
    pub(crate) at: KvPath,
    #[arg(long = "max-versions")]
    pub(crate) max_versions: Option<u64>,
    #[arg(long = "cas-required")]
    pub(crate) cas_required: Option<bool>,
    /// e.g. 30d; versions are deleted that long after they are written
    #[arg(long = "delete-version-after")]
    pub(crate) delete_version_after: Option<String>,
    /// key=value (repeatable)
    #[arg(long = "custom-metadata", value_name = "K=V")]
    pub(crate) custom_metadata: Vec<String>,
}

/// Where a kv path lives: its mount (ending in `/`), the path inside it, and the kv version.
struct Target {
    mount: String,
    rel: String,
    v2: bool,
}

impl Target {
    fn api(&self, section: &str) -> String {
        if self.v2 {
            format!("{}{section}/{}", self.mount, self.rel)
        } else {
            format!("{}{}", self.mount, self.rel)
        }
    }

    fn need_v2(&self, what: &str) -> Result<()> {
        if self.v2 {
            Ok(())
        } else {
            bail!("{what} needs a KV version 2 mount; {} is version 1", self.mount)
        }
    }
}

async fn resolve(c: &Client, at: &KvPath) -> Result<Target> {
    let (probe, rel_override) = match &at.mount {
        Some(m) => (
            format!("{}/{}", m.trim_matches('/'), at.path.trim_start_matches('/')),
            Some(at.path.trim_start_matches('/').to_owned()),
        ),
        None => (at.path.trim_start_matches('/').to_owned(), None),
    };
    // The server answers 403 alike for no mount and no access (so that mounts cannot be probed).
    let ans = c.read(&format!("sys/internal/ui/mounts/{probe}")).await.map_err(|e| match e {
        coffer_api::Error::Api { status: 403, .. } => anyhow!(
            "no secrets engine is mounted at {probe:?}, or this token has no access to it ({e})"
        ),
        other => other.into(),
    })?;
    let d = ans.data().cloned().unwrap_or_default();
    let mount = d.get("path").and_then(Value::as_str).unwrap_or_default().to_owned();
    if d.get("type").and_then(Value::as_str) != Some("kv") {
        bail!("{mount} is not a kv secrets engine");
    }
    let v2 = d.get("options").and_then(|o| o.get("version")).and_then(Value::as_str) == Some("2");
    let rel =
        rel_override.unwrap_or_else(|| probe.strip_prefix(&mount).unwrap_or_default().to_owned());
    Ok(Target { mount, rel, v2 })
}

fn print_sections(g: &Global, body: &Value) -> Result<ExitCode> {
    if g.format.structured() {
        print_value(body, g.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    if let Some(f) = &g.field {
        let v = data
            .get("data")
            .and_then(|d| d.get(f))
            .ok_or_else(|| anyhow!("Field {f:?} not present in secret"))?;
        println!("{}", cell(v));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = |v: &Value| -> Vec<(String, String)> {
        v.as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), cell(v))).collect())
            .unwrap_or_default()
    };
    println!("======= Metadata =======");
    print!("{}", table(&rows(data.get("metadata").unwrap_or(&Value::Null))));
    println!("\n====== Data ======");
    print!("{}", table(&rows(data.get("data").unwrap_or(&Value::Null))));
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run(g: &Global, cmd: KvCmd) -> Result<ExitCode> {
    let c = client(g)?;
    match cmd {
        KvCmd::Put(w) | KvCmd::Patch(w) if w.data.is_empty() => bail!(
            "Must supply data: key=value pairs, key=@file, or - for JSON on stdin ({})",
            w.at.path
        ),
        KvCmd::Put(w) => {
            let t = resolve(&c, &w.at).await?;
            let data = parse_write_data(&w.data)?;
            if !t.v2 {
                if w.cas.is_some() {
                    bail!("-cas needs a KV version 2 mount");
                }
                c.write(&t.api("data"), &Value::Object(data)).await?;
                println!("Success! Data written to: {}{}", t.mount, t.rel);
                return Ok(ExitCode::SUCCESS);
            }
            let mut body = json!({ "data": data });
            if let Some(cas) = w.cas {
                body["options"] = json!({ "cas": cas });
            }
            let ans = c.write(&t.api("data"), &body).await?;
            print_answer(g, ans.body.as_ref())
        }
        KvCmd::Patch(w) => {
            let t = resolve(&c, &w.at).await?;
            t.need_v2("kv patch")?;
            let mut body = json!({ "data": parse_pairs(&w.data)? });
            if let Some(cas) = w.cas {
                body["options"] = json!({ "cas": cas });
            }
            let ans =
                c.request("PATCH", &t.api("data"), Some(&body)).await.map_err(|e| match e {
                    coffer_api::Error::Api { status: 404, .. } => {
                        anyhow!("No value found at {}{}: nothing to patch", t.mount, t.rel)
                    }
                    other => other.into(),
                })?;
            print_answer(g, ans.body.as_ref())
        }
        KvCmd::Get(r) => {
            let t = resolve(&c, &r.at).await?;
            let query: Vec<(&str, String)> = match r.version {
                Some(v) => {
                    t.need_v2("-version")?;
                    vec![("version", v.to_string())]
                }
                None => Vec::new(),
            };
            match c.request_with_query("GET", &t.api("data"), &query, None).await {
                Ok(ans) if t.v2 => print_sections(g, ans.body.as_ref().unwrap_or(&Value::Null)),
                Ok(ans) => print_answer(g, ans.body.as_ref()),
                Err(coffer_api::Error::Api { status: 404, .. }) => Ok(not_found(&r.at.path)),
                Err(e) => Err(e.into()),
            }
        }
        KvCmd::Delete(d) => {
            let t = resolve(&c, &d.at).await?;
            if d.versions.is_empty() {
                c.delete(&t.api("data")).await?;
            } else {
                t.need_v2("-versions")?;
                c.write(&t.api("delete"), &json!({ "versions": d.versions })).await?;
            }
            println!("Success! Data deleted (if it existed) at: {}{}", t.mount, t.rel);
            Ok(ExitCode::SUCCESS)
        }
        KvCmd::Undelete(d) | KvCmd::Destroy(d) if d.versions.is_empty() => {
            bail!("-versions=N[,N...] is required")
        }
        KvCmd::Undelete(d) => {
            let t = resolve(&c, &d.at).await?;
            t.need_v2("kv undelete")?;
            c.write(&t.api("undelete"), &json!({ "versions": d.versions })).await?;
            println!("Success! Data written to: {}undelete/{}", t.mount, t.rel);
            Ok(ExitCode::SUCCESS)
        }
        KvCmd::Destroy(d) => {
            let t = resolve(&c, &d.at).await?;
            t.need_v2("kv destroy")?;
            c.write(&t.api("destroy"), &json!({ "versions": d.versions })).await?;
            println!("Success! Data written to: {}destroy/{}", t.mount, t.rel);
            Ok(ExitCode::SUCCESS)
        }
        KvCmd::List(p) => {
            let t = resolve(&c, &p).await?;
            match c.list(&t.api("metadata")).await {
                Ok(ans) => print_answer(g, ans.body.as_ref()),
                Err(coffer_api::Error::Api { status: 404, .. }) => Ok(not_found(&p.path)),
                Err(e) => Err(e.into()),
            }
        }
        KvCmd::Metadata(KvMetadataCmd::Get(p)) => {
            let t = resolve(&c, &p).await?;
            t.need_v2("kv metadata")?;
            match c.read(&t.api("metadata")).await {
                Ok(ans) => {
                    let b = ans.body.unwrap_or(Value::Null);
                    print_body(&b, g.format, g.field.as_deref())?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(coffer_api::Error::Api { status: 404, .. }) => Ok(not_found(&p.path)),
                Err(e) => Err(e.into()),
            }
        }
        KvCmd::Metadata(KvMetadataCmd::Put(m)) => {
            let t = resolve(&c, &m.at).await?;
            t.need_v2("kv metadata")?;
            let mut body = Map::new();
            if let Some(v) = m.max_versions {
                body.insert("max_versions".into(), json!(v));
            }
            if let Some(v) = m.cas_required {
                body.insert("cas_required".into(), json!(v));
            }
            if let Some(v) = &m.delete_version_after {
                body.insert("delete_version_after".into(), json!(v));
            }
            if !m.custom_metadata.is_empty() {
                body.insert(
                    "custom_metadata".into(),
                    Value::Object(parse_pairs(&m.custom_metadata)?),
                );
            }
            c.write(&t.api("metadata"), &Value::Object(body)).await?;
            println!("Success! Data written to: {}metadata/{}", t.mount, t.rel);
            Ok(ExitCode::SUCCESS)
        }
        KvCmd::Metadata(KvMetadataCmd::Delete(p)) => {
            let t = resolve(&c, &p).await?;
            t.need_v2("kv metadata")?;
            c.delete(&t.api("metadata")).await?;
            println!("Success! Data deleted (if it existed) at: {}metadata/{}", t.mount, t.rel);
            Ok(ExitCode::SUCCESS)
        }
        KvCmd::Rollback(r) => {
            let t = resolve(&c, &r.at).await?;
            t.need_v2("kv rollback")?;
            let meta = c.read(&t.api("metadata")).await?;
            let current = meta
                .data()
                .and_then(|d| d.get("current_version"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let old = c
                .request_with_query(
                    "GET",
                    &t.api("data"),
                    &[("version", r.version.to_string())],
                    None,
                )
                .await
                .map_err(|e| match e {
                    coffer_api::Error::Api { status: 404, .. } => anyhow!(
                        "version {} of {}{} is deleted, destroyed or does not exist",
                        r.version,
                        t.mount,
                        t.rel
                    ),
                    other => other.into(),
                })?;
            let data = old.data().and_then(|d| d.get("data")).cloned().unwrap_or(Value::Null);
            let ans = c
                .write(&t.api("data"), &json!({ "data": data, "options": { "cas": current } }))
                .await?;
            print_answer(g, ans.body.as_ref())
        }
    }
}
