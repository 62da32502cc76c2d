//! `sys/mounts` and `sys/auth`: list, enable, disable and tune secrets engines and auth methods.

use serde_json::{Map, Value, json};

use super::Ctx;
use crate::logical::fields::duration_field;
use crate::logical::fields::{Fields, ignored_warning};
use crate::logical::into_map;
use crate::logical::{Error, Operation, Response, Result};
use crate::mount::{MountEntry, Table, load_table, normalize_mount_path};

pub(super) async fn handle(ctx: &Ctx<'_>, rel: &str) -> Result<Option<Response>> {
    let (table, rest) = if let Some(r) = rel.strip_prefix("mounts") {
        (Table::Secrets, r)
    } else if let Some(r) = rel.strip_prefix("auth") {
        (Table::Auth, r)
    } else {
        return Ok(None);
    };
    let op = ctx.op();
    let write = matches!(op, Operation::Create | Operation::Update);
    if rest.is_empty() || rest == "/" {
        return match op {
            Operation::Read => list(ctx, table).await.map(Some),
            _ => Err(Error::UnsupportedOperation),
        };
    }
    let Some(path) = rest.strip_prefix('/') else {
        return Ok(None);
    };
    if let Some(path) = path.strip_suffix("/tune") {
        return match op {
            Operation::Read => read_tune(ctx, table, path).await.map(Some),
            _ if write => tune(ctx, table, path).await.map(Some),
            _ => Err(Error::UnsupportedOperation),
        };
    }
    match op {
        _ if write => enable(ctx, table, path).await.map(Some),
        Operation::Delete => {
            ctx.core.remove_mount(table, path).await?;
            Ok(Some(Response::empty()))
        }
        Operation::Read => {
            let entry = find(ctx, table, path).await?;
            Ok(Some(Response::data(into_map(entry.to_json()))))
        }
        _ => Err(Error::UnsupportedOperation),
    }
}

async fn find(ctx: &Ctx<'_>, table: Table, path: &str) -> Result<MountEntry> {
    let path = normalize_mount_path(path)?;
    load_table(&ctx.core.barrier, table)
        .await?
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.path == path)
        .ok_or_else(|| Error::invalid(format!("no mount at {:?}", table.full_path(&path))))
}

async fn list(ctx: &Ctx<'_>, table: Table) -> Result<Response> {
    let entries = load_table(&ctx.core.barrier, table).await?.unwrap_or_default();
    let mut data = Map::new();
    for e in entries {
        data.insert(e.path.clone(), e.to_json());
    }
    Ok(Response::data(data))
}

/// A TTL field of a mount config: seconds, a duration string, or "system" (= 0, the default).
fn ttl_field(v: &Value, name: &str) -> Result<u64> {
    match v {
        Value::String(s) if s.is_empty() || s == "system" => Ok(0),
        other => duration_field(other, name).map(|d| d.as_secs()),
    }
}

const CONFIG_FIELDS: &[&str] = &[
    "default_lease_ttl",
    "max_lease_ttl",
    "listing_visibility",
    "force_no_cache",
    "audit_non_hmac_request_keys",
    "audit_non_hmac_response_keys",
    "passthrough_request_headers",
    "allowed_response_headers",
    "plugin_version",
    "token_type",
    "allowed_managed_keys",
    "description",
    "options",
];

fn apply_config(
    entry: &mut MountEntry,
    config: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if let Some(v) = config.get("default_lease_ttl") {
        entry.config.default_lease_ttl = ttl_field(v, "default_lease_ttl")?;
    }
    if let Some(v) = config.get("max_lease_ttl") {
        entry.config.max_lease_ttl = ttl_field(v, "max_lease_ttl")?;
    }
    if let Some(v) = config.get("listing_visibility") {
        let s = v.as_str().unwrap_or_default();
        if !matches!(s, "" | "hidden" | "unauth") {
            return Err(Error::invalid(format!(
                "listing_visibility must be \"hidden\" or \"unauth\", not {s:?}"
            )));
        }
        entry.config.listing_visibility = s.to_owned();
    }
    warnings.extend(ignored_warning(Fields::new(config).unknown(CONFIG_FIELDS)));
    Ok(())
}

fn check_ttls(sys_max: u64, entry: &MountEntry) -> Result<()> {
    let max = if entry.config.max_lease_ttl == 0 { sys_max } else { entry.config.max_lease_ttl };
    if entry.config.max_lease_ttl > sys_max {
        return Err(Error::invalid("max_lease_ttl cannot be greater than the system maximum"));
    }
    if entry.config.default_lease_ttl > max {
        return Err(Error::invalid("default_lease_ttl cannot be greater than max_lease_ttl"));
    }
    Ok(())
}

fn apply_options(entry: &mut MountEntry, v: &Value) -> Result<()> {
    match v {
        Value::Null => Ok(()),
        Value::Object(m) => {
            for (k, v) in m {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(Error::invalid(format!("option {k:?} must be a string"))),
                };
                entry.options.insert(k.clone(), s);
            }
            Ok(())
        }
        _ => Err(Error::invalid("\"options\" must be an object of strings")),
    }
}

async fn enable(ctx: &Ctx<'_>, table: Table, path: &str) -> Result<Response> {
    let data = &ctx.req.data;
    let f = Fields::new(data);
    let kind = f.required_str("type")?;
    let kind = if kind == "kv-v2" { "kv".to_owned() } else { kind };
    let mut entry = MountEntry::new(
        &normalize_mount_path(path)?,
        &kind,
        &f.str("description")?.unwrap_or_default(),
    );
    if f.str("type")?.as_deref() == Some("kv-v2") {
        entry.options.insert("version".into(), "2".into());
    }
    let mut warnings = Vec::new();
    if let Some(c) = data.get("config") {
        match c {
            Value::Object(m) => apply_config(&mut entry, m, &mut warnings)?,
            Value::Null => {}
            _ => return Err(Error::invalid("\"config\" must be an object")),
        }
    }
    if let Some(o) = data.get("options") {
        apply_options(&mut entry, o)?;
    }
    entry.local = f.bool("local")?.unwrap_or(false);
    entry.seal_wrap = f.bool("seal_wrap")?.unwrap_or(false);
    check_ttls(ctx.core.config.max_lease_ttl.as_secs(), &entry)?;
    warnings.extend(ignored_warning(f.unknown(&[
        "type",
        "description",
        "config",
        "options",
        "local",
        "seal_wrap",
        "plugin_name",
        "external_entropy_access",
        "plugin_version",
        "path",
    ])));
    ctx.core.add_mount(table, entry).await?;
    Ok(Response { warnings, ..Response::default() })
}

async fn read_tune(ctx: &Ctx<'_>, table: Table, path: &str) -> Result<Response> {
    let e = find(ctx, table, path).await?;
    let eff = |v: u64, sys: std::time::Duration| if v == 0 { sys.as_secs() } else { v };
    let mut m = into_map(json!({
        "description": e.description,
        "default_lease_ttl": eff(e.config.default_lease_ttl, ctx.core.config.default_lease_ttl),
        "max_lease_ttl": eff(e.config.max_lease_ttl, ctx.core.config.max_lease_ttl),
        "force_no_cache": false,
    }));
    if !e.options.is_empty() {
        m.insert("options".into(), json!(e.options));
    }
    if !e.config.listing_visibility.is_empty() {
        m.insert("listing_visibility".into(), json!(e.config.listing_visibility));
    }
    Ok(Response::data(m))
}

async fn tune(ctx: &Ctx<'_>, table: Table, path: &str) -> Result<Response> {
    let data = ctx.req.data.clone();
    let mut warnings = Vec::new();
    let sys_max = ctx.core.config.max_lease_ttl.as_secs();
    ctx.core
        .tune_mount(table, path, |entry| {
            apply_config(entry, &data, &mut warnings)?;
            if let Some(d) = data.get("description").and_then(Value::as_str) {
                entry.description = d.to_owned();
            }
            if let Some(o) = data.get("options") {
                let version = |e: &MountEntry| {
                    e.options.get("version").filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| "1".into())
                };
                let before = version(entry);
                apply_options(entry, o)?;
                // The running engine's data layout depends on the version: refuse to switch it
                // under existing data rather than hide or misread that data.
                if entry.kind == "kv" && version(entry) != before {
                    return Err(Error::invalid(
                        "changing a kv mount's version is not supported: enable a new mount with the version you want and copy the secrets",
                    ));
                }
            }
            check_ttls(sys_max, entry)
        })
        .await?;
    Ok(Response { warnings, ..Response::default() })
}

/// `sys/internal/ui/mounts/<path>`: the mount serving `path`, for clients (like `coffer kv`) that
/// must know an engine's type and version. The caller needs some capability inside the mount.
pub(super) async fn mount_of(ctx: &Ctx<'_>, path: &str) -> Result<Response> {
    let router = ctx.active.router()?;
    let (route, _) =
        router.route(path).ok_or_else(|| Error::invalid(format!("no mount serves {path:?}")))?;
    let caller = ctx.caller().ok_or(Error::PermissionDenied)?;
    let acl = ctx.active.acl_for(caller)?;
    if !acl.has_access_under(&route.full_path) {
        return Err(Error::PermissionDenied);
    }
    let e = &route.entry;
    let mut m = into_map(e.to_json());
    m.insert("path".into(), json!(route.full_path));
    Ok(Response::data(m))
}
