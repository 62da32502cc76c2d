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
            let entry = find(ctx, table, path, Looking::Mount).await?;
            Ok(Some(Response::data(into_map(entry.to_json(table)))))
        }
        _ => Err(Error::UnsupportedOperation),
    }
}

/// What a [`find`] is for: Vault's error texts for a missing mount differ by endpoint.
#[derive(Clone, Copy)]
enum Looking {
    Mount,
    Tune,
    TuneWrite,
}

async fn find(ctx: &Ctx<'_>, table: Table, path: &str, looking: Looking) -> Result<MountEntry> {
    let path = normalize_mount_path(path)?;
    load_table(&ctx.core.barrier, table)
        .await?
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.path == path)
        .ok_or_else(|| {
            Error::invalid(match (looking, table) {
                (Looking::Mount, Table::Secrets) => format!("No secret engine mount at {path}"),
                (Looking::Mount, Table::Auth) => format!("No auth engine at {path}"),
                (Looking::Tune, _) => {
                    format!("cannot fetch sysview for path {:?}", table.full_path(&path))
                }
                (Looking::TuneWrite, _) => {
                    format!(
                        "tune of path {:?} failed: no mount entry found",
                        table.full_path(&path)
                    )
                }
            })
        })
}

async fn list(ctx: &Ctx<'_>, table: Table) -> Result<Response> {
    let entries = load_table(&ctx.core.barrier, table).await?.unwrap_or_default();
    let mut data = Map::new();
    for e in entries {
        data.insert(e.path.clone(), e.to_json(table));
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
            return Err(Error::invalid(format!("invalid listing_visibility {s}")));
        }
        entry.config.listing_visibility = s.to_owned();
    }
    if let Some(v) = config.get("token_type") {
        // Vault's values; Coffer issues service tokens only, so the batch ones are refused
        // with the same words as a token role's.
        entry.config.token_type = match v.as_str().unwrap_or_default() {
            "" | "default" | "default-service" => String::new(),
            "service" => "service".into(),
            t @ ("batch" | "default-batch") => {
                return Err(Error::invalid(format!(
                    "token_type {t:?} is not supported: Coffer issues service tokens only"
                )));
            }
            _ => return Err(Error::invalid("invalid value for 'token_type'")),
        };
    }
    let f = Fields::new(config);
    for (name, slot) in [
        ("audit_non_hmac_request_keys", &mut entry.config.audit_non_hmac_request_keys),
        ("audit_non_hmac_response_keys", &mut entry.config.audit_non_hmac_response_keys),
        ("passthrough_request_headers", &mut entry.config.passthrough_request_headers),
        ("allowed_response_headers", &mut entry.config.allowed_response_headers),
    ] {
        if let Some(list) = f.list(name)? {
            // Vault drops empty entries; an empty list clears the setting.
            *slot =
                list.into_iter().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect();
        }
    }
    warnings.extend(ignored_warning(Fields::new(config).unknown(CONFIG_FIELDS)));
    Ok(())
}

/// Vault's checks when a mount is enabled: the default may not exceed the mount's own max, nor
/// the system's when the mount has none. A max above the system's is allowed, as in Vault.
fn check_mount_ttls(sys_max: u64, entry: &MountEntry) -> Result<()> {
    let (def, max) = (entry.config.default_lease_ttl, entry.config.max_lease_ttl);
    if max != 0 && def > max {
        return Err(Error::invalid("given default lease TTL greater than given max lease TTL"));
    }
    if max == 0 && def > sys_max {
        return Err(Error::invalid(format!(
            "given default lease TTL greater than system max lease TTL of {sys_max}"
        )));
    }
    Ok(())
}

/// Vault's check when a mount is tuned: only a default above a max, both set, is refused.
fn check_tune_ttls(entry: &MountEntry) -> Result<()> {
    let (def, max) = (entry.config.default_lease_ttl, entry.config.max_lease_ttl);
    if def != 0 && max != 0 && max < def {
        return Err(Error::invalid(format!(
            "backend max lease TTL of {max} would be less than backend default lease TTL of {def}"
        )));
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
    let kind = f
        .str("type")?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Error::invalid("backend type must be specified as a string"))?;
    // Vault's aliases: `kv-v1` and `kv-v2` are `kv` with that version, whatever the options say.
    let alias_version = match kind.as_str() {
        "kv-v1" => Some("1"),
        "kv-v2" => Some("2"),
        _ => None,
    };
    let requested = kind.clone();
    let kind = if alias_version.is_some() { "kv".to_owned() } else { kind };
    let mut entry = MountEntry::new(
        &normalize_mount_path(path)?,
        &kind,
        &f.str("description")?.unwrap_or_default(),
    );
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
    if let Some(v) = alias_version {
        entry.options.insert("version".into(), v.into());
    } else if requested != "kv" && entry.options.get("version").is_some_and(|v| !v.is_empty()) {
        // Only kv has versions (Vault checks the type as given, so `generic` has none either).
        return Err(Error::invalid(match table {
            Table::Secrets => {
                format!("secrets engine {requested:?} does not allow setting a version")
            }
            Table::Auth => format!("auth method {requested:?} does not allow setting a version"),
        }));
    }
    entry.local = f.bool("local")?.unwrap_or(false);
    entry.seal_wrap = f.bool("seal_wrap")?.unwrap_or(false);
    check_mount_ttls(ctx.core.config.max_lease_ttl.as_secs(), &entry)?;
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
    let e = find(ctx, table, path, Looking::Tune).await?;
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
    for (k, v) in e.config.lists() {
        m.insert(k.into(), json!(v));
    }
    if table == Table::Auth {
        m.insert("token_type".into(), json!(e.config.token_type_shown()));
    }
    Ok(Response::data(m))
}

/// A kv mount's version as its options give it (absent or empty: 1).
fn kv_version(e: &MountEntry) -> String {
    e.options.get("version").filter(|v| !v.is_empty()).cloned().unwrap_or_else(|| "1".into())
}

/// Applies a tune's body to `entry`; a kv version change only when `upgrading`.
fn apply_tune(
    entry: &mut MountEntry,
    data: &serde_json::Map<String, Value>,
    warnings: &mut Vec<String>,
    upgrading: bool,
) -> Result<()> {
    apply_config(entry, data, warnings)?;
    if let Some(d) = data.get("description").and_then(Value::as_str) {
        entry.description = d.to_owned();
    }
    if let Some(o) = data.get("options") {
        let before = kv_version(entry);
        apply_options(entry, o)?;
        // The running engine's data layout depends on the version: it changes only through
        // the migration (1 to 2), never under the running engine.
        if entry.kind == "kv" && kv_version(entry) != before && !upgrading {
            return Err(Error::Internal("a kv version change outside its migration".into()));
        }
    }
    check_tune_ttls(entry)
}

async fn tune(ctx: &Ctx<'_>, table: Table, path: &str) -> Result<Response> {
    let data = ctx.req.data.clone();
    let mut warnings = Vec::new();
    // Vault's kv version rules: 1 or 2 only, no downgrade; an upgrade rewrites the data.
    let asked = data.get("options").and_then(|o| o.get("version")).and_then(|v| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });
    let entry = find(ctx, table, path, Looking::TuneWrite).await?;
    if let (Some(asked), "kv") = (asked, entry.kind.as_str()) {
        let new: u64 = match asked.parse() {
            Ok(v @ (1 | 2)) => v,
            _ => return Err(Error::invalid(format!("invalid version provided: {asked}"))),
        };
        let old: u64 = kv_version(&entry).parse().unwrap_or(1);
        if old > new {
            return Err(Error::invalid(format!("cannot downgrade mount from version {old}")));
        }
        if old < new {
            ctx.core
                .migrate_mount(table, path, |e| apply_tune(e, &data, &mut warnings, true))
                .await?;
            warnings.push(format!(
                "Upgrading mount from version {old} to version {new}. This mount will be \
                 unavailable for a brief period and will resume service shortly."
            ));
            return Ok(Response { warnings, ..Response::default() });
        }
    }
    ctx.core.tune_mount(table, path, |e| apply_tune(e, &data, &mut warnings, false)).await?;
    Ok(Response { warnings, ..Response::default() })
}

/// `sys/internal/ui/mounts/<path>`: the mount serving `path`, for clients (like `coffer kv`) that
/// must know an engine's type and version. The caller needs some capability inside the mount.
pub(super) async fn mount_of(ctx: &Ctx<'_>, path: &str) -> Result<Response> {
    // Vault's one answer for "no such mount" and "no access to it", so that this path does not
    // tell which mounts exist.
    let shown = format!("{}/", path.trim_matches('/'));
    let preflight = || {
        Error::Forbidden(format!(
            "preflight capability check returned 403, please ensure client's policies grant \
             access to path {shown:?}"
        ))
    };
    let router = ctx.active.router()?;
    let (route, _) = router.route(path).ok_or_else(preflight)?;
    let caller = ctx.caller().ok_or(Error::PermissionDenied)?;
    let acl = ctx.active.acl_for(caller)?;
    if !acl.has_access_under(&route.full_path) {
        return Err(preflight());
    }
    let e = &route.entry;
    let table = if route.full_path.starts_with("auth/") { Table::Auth } else { Table::Secrets };
    let mut m = into_map(e.to_json(table));
    // As Vault: the path within its table (`approle/` for `auth/approle/`).
    m.insert("path".into(), json!(e.path));
    Ok(Response::data(m))
}
