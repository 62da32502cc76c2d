//! Identity templates, Vault's syntax: `{{identity.entity.id}}`, `.name`, `.metadata.<key>`,
//! `.aliases.<mount accessor>.id|name|metadata.<key>|custom_metadata.<key>`,
//! `{{identity.groups.ids.<id>.name}}`, `{{identity.groups.names.<name>.id}}` (and `.metadata.<key>`
//! of a group), and `{{time.now}}`, `{{time.now.plus.<duration>}}`, `{{time.now.minus.<duration>}}`;
//! and Coffer's own `{{token.metadata.<key>}}`: the requesting token's metadata, set by its login
//! (an image-bound login's `image_digest`, say), which no later login changes.
//!
//! Two modes, as Vault's `identitytpl`: in ACL mode (policy paths) a directive that cannot be
//! resolved for the token (no entity, a missing metadata key, an alias on another mount, a group
//! the entity is not in) is an error, and the policy's path is skipped for that token; a value
//! that would widen the path (`*` or `+`) is refused the same way. In JSON mode (OIDC token
//! templates) every value is rendered as JSON (a string, a list or a map), missing ones as `""`
//! or `{}`, and the lists `identity.entity.groups.ids|names` and maps `.metadata` are allowed.
//! Not here: where templates come from or what the rendered text is used for.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Alias, Entity, Group};

/// Who a template is rendered for: the token's entity and every group it is in (directly or
/// through a parent), as the store knew them when the request was authorized.
#[derive(Clone, Default)]
pub(crate) struct TemplateCtx {
    pub(crate) entity: Option<Arc<Entity>>,
    pub(crate) groups: Vec<Arc<Group>>,
    /// The requesting token's own metadata (Coffer's `token.metadata.<key>`; ACL mode only).
    pub(crate) token_meta: BTreeMap<String, String>,
}

impl TemplateCtx {
    /// An entity with nothing set, for checking a JSON template when it is written.
    pub(crate) fn with_empty_entity(mut self) -> Self {
        self.entity = Some(Arc::new(Entity::default()));
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Acl,
    Json,
}

/// Why a template could not be rendered; the message is Vault's where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError(pub(crate) String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(s: impl Into<String>) -> TemplateError {
    TemplateError(s.into())
}

static NO_METADATA: BTreeMap<String, String> = BTreeMap::new();

const NOT_FOUND: &str = "no value could be found for one of the template directives";

/// Whether `s` holds a template directive at all.
pub(crate) fn is_templated(s: &str) -> bool {
    s.contains("{{")
}

/// A value a directive names, before it is written in the mode's form.
enum Val<'a> {
    Str(&'a str),
    List(Vec<&'a str>),
    Map(Option<&'a BTreeMap<String, String>>),
    Key(&'a BTreeMap<String, String>, &'a str),
}

fn emit(mode: Mode, v: Val<'_>) -> Result<String, TemplateError> {
    match mode {
        Mode::Acl => match v {
            Val::Str(s) if !s.is_empty() => Ok(s.to_owned()),
            Val::Key(m, k) => m.get(k).cloned().ok_or_else(|| err(NOT_FOUND)),
            _ => Err(err(NOT_FOUND)),
        },
        Mode::Json => Ok(match v {
            Val::Str(s) => serde_json::Value::from(s).to_string(),
            // Go's nil slice: an entity in no group renders `null`, as Vault's does.
            Val::List(l) if l.is_empty() => "null".to_owned(),
            Val::List(l) => serde_json::Value::from(l).to_string(),
            Val::Map(m) => match m {
                Some(m) => serde_json::to_value(m).map_err(|e| err(e.to_string()))?.to_string(),
                None => "{}".to_owned(),
            },
            Val::Key(m, k) => {
                serde_json::Value::from(m.get(k).map_or("", |s| s.as_str())).to_string()
            }
        }),
    }
}

/// Renders every directive in `s`. `Ok(s)` unchanged when there is none.
pub(crate) fn render(s: &str, ctx: &TemplateCtx, mode: Mode) -> Result<String, TemplateError> {
    let mut parts = s.split("{{");
    let first = parts.next().unwrap_or("");
    if first.contains("}}") {
        return Err(err("unbalanced templating characters"));
    }
    let mut out = String::with_capacity(s.len() * 2);
    out.push_str(first);
    for piece in parts {
        let mut inner = piece.split("}}");
        let (Some(directive), Some(rest), None) = (inner.next(), inner.next(), inner.next()) else {
            return Err(err("unbalanced templating characters"));
        };
        let value = directive_value(directive.trim(), ctx, mode)?;
        if mode == Mode::Acl {
            for blocked in ["*", "+"] {
                if value.contains(blocked) {
                    return Err(err(format!(
                        "template substitution contains forbidden value {blocked:?}"
                    )));
                }
            }
        }
        out.push_str(&value);
        out.push_str(rest);
    }
    Ok(out)
}

/// Checks a template's syntax without an entity (role and policy writes).
pub(crate) fn check_syntax(s: &str) -> Result<(), TemplateError> {
    let mut parts = s.split("{{");
    if parts.next().unwrap_or("").contains("}}") {
        return Err(err("unbalanced templating characters"));
    }
    for piece in parts {
        if piece.split("}}").count() != 2 {
            return Err(err("unbalanced templating characters"));
        }
    }
    Ok(())
}

fn directive_value(d: &str, ctx: &TemplateCtx, mode: Mode) -> Result<String, TemplateError> {
    if let Some(rest) = d.strip_prefix("identity.entity.") {
        let Some(entity) = ctx.entity.as_deref() else {
            return Err(err(
                "string contains entity template directives but no entity was provided",
            ));
        };
        return entity_value(rest, entity, ctx, mode);
    }
    if let Some(rest) = d.strip_prefix("identity.groups.") {
        if ctx.groups.is_empty() {
            return Err(err(
                "string contains groups template directives but no groups were provided",
            ));
        }
        return group_value(rest, ctx);
    }
    if let Some(rest) = d.strip_prefix("time.") {
        return time_value(rest);
    }
    // Coffer's: what the token's login proved (set once, at login), such as `image_digest`.
    // Unlike an alias's metadata, which the entity's latest login rewrites, it is the token's.
    if let Some(k) = d.strip_prefix("token.metadata.") {
        return emit(mode, Val::Key(&ctx.token_meta, k));
    }
    Err(err(NOT_FOUND))
}

fn entity_value(
    d: &str,
    e: &Entity,
    ctx: &TemplateCtx,
    mode: Mode,
) -> Result<String, TemplateError> {
    let v = match d {
        "id" => Val::Str(&e.id),
        "name" => Val::Str(&e.name),
        "metadata" => Val::Map(Some(&e.metadata)),
        "groups.names" => Val::List(ctx.groups.iter().map(|g| g.name.as_str()).collect()),
        "groups.ids" => Val::List(ctx.groups.iter().map(|g| g.id.as_str()).collect()),
        _ => {
            if let Some(k) = d.strip_prefix("metadata.") {
                Val::Key(&e.metadata, k)
            } else if let Some(a) = d.strip_prefix("aliases.") {
                let Some((accessor, field)) = a.split_once('.') else {
                    return Err(err("invalid alias selector"));
                };
                let empty = Alias::default();
                let alias = match e.aliases.iter().find(|a| a.mount_accessor == accessor) {
                    Some(a) => a,
                    None if mode == Mode::Acl => return Err(err("alias not found")),
                    None => &empty,
                };
                return alias_value(field, alias, mode);
            } else {
                return Err(err(NOT_FOUND));
            }
        }
    };
    emit(mode, v)
}

fn alias_value(d: &str, a: &Alias, mode: Mode) -> Result<String, TemplateError> {
    let v = match d {
        "id" => Val::Str(&a.id),
        "name" => Val::Str(&a.name),
        "metadata" => Val::Map(Some(&a.metadata)),
        "custom_metadata" => Val::Map(a.custom_metadata.as_ref()),
        _ => match (d.strip_prefix("metadata."), d.strip_prefix("custom_metadata.")) {
            (Some(k), _) => Val::Key(&a.metadata, k),
            (_, Some(k)) => Val::Key(a.custom_metadata.as_ref().unwrap_or(&NO_METADATA), k),
            _ => return Err(err(NOT_FOUND)),
        },
    };
    emit(mode, v)
}

/// Group directives answer bare strings in both modes, as Vault's do.
fn group_value(d: &str, ctx: &TemplateCtx) -> Result<String, TemplateError> {
    let (by_id, rest) = match d.split_once('.') {
        Some(("ids", rest)) => (true, rest),
        Some(("names", rest)) => (false, rest),
        _ => return Err(err("invalid groups selector")),
    };
    let Some((key, field)) = rest.split_once('.') else {
        return Err(err("invalid groups accessor"));
    };
    let found = ctx
        .groups
        .iter()
        .find(|g| if by_id { g.id == key } else { g.name == key })
        .ok_or_else(|| err(format!("entity is not a member of group {key:?}")))?;
    match field {
        "id" => Ok(found.id.clone()),
        "name" if !found.name.is_empty() => Ok(found.name.clone()),
        _ => match field.strip_prefix("metadata.") {
            Some(k) => found.metadata.get(k).cloned().ok_or_else(|| err(NOT_FOUND)),
            None => Err(err(NOT_FOUND)),
        },
    }
}

fn time_value(d: &str) -> Result<String, TemplateError> {
    let now = crate::time::now_unix();
    let mut ops = d.splitn(3, '.');
    if ops.next() != Some("now") {
        return Err(err(format!("invalid time selector {d:?}")));
    }
    let t = match (ops.next(), ops.next()) {
        (None, _) => now,
        (Some(_), None) => return Err(err("missing time operand")),
        (Some(op), Some(dur)) => {
            let secs = crate::time::parse_duration(dur)
                .ok_or_else(|| err(format!("invalid duration: {dur:?}")))?
                .as_secs();
            match op {
                "plus" => now.saturating_add(secs),
                "minus" => now.saturating_sub(secs),
                other => return Err(err(format!("invalid time operator {other:?}"))),
            }
        }
    };
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TemplateCtx {
        let alias = Alias {
            id: "alias-1".into(),
            mount_accessor: "auth_jwt_1".into(),
            name: "alice@example.com".into(),
            metadata: BTreeMap::from([("digest".into(), "sha256:ab".into())]),
            ..Alias::default()
        };
        let entity = Entity {
            id: "ent-1".into(),
            name: "alice".into(),
            metadata: BTreeMap::from([("team".into(), "web".into()), ("bad".into(), "*".into())]),
            aliases: vec![alias],
            ..Entity::default()
        };
        let group = Group {
            id: "grp-1".into(),
            name: "devs".into(),
            metadata: BTreeMap::from([("env".into(), "prod".into())]),
            ..Group::default()
        };
        TemplateCtx {
            entity: Some(Arc::new(entity)),
            groups: vec![Arc::new(group)],
            token_meta: BTreeMap::from([("image_digest".to_owned(), "sha256:ab".to_owned())]),
        }
    }

    #[test]
    fn acl_templates_resolve_entity_alias_and_group_values() {
        let c = ctx();
        let r = |s: &str| render(s, &c, Mode::Acl);
        assert_eq!(
            r("secret/data/{{identity.entity.name}}/*").expect("render"),
            "secret/data/alice/*"
        );
        assert_eq!(r("a/{{ identity.entity.id }}").expect("render"), "a/ent-1");
        assert_eq!(r("a/{{identity.entity.metadata.team}}").expect("render"), "a/web");
        assert_eq!(
            r("a/{{identity.entity.aliases.auth_jwt_1.name}}").expect("render"),
            "a/alice@example.com"
        );
        assert_eq!(
            r("a/{{identity.entity.aliases.auth_jwt_1.metadata.digest}}").expect("render"),
            "a/sha256:ab"
        );
        assert_eq!(r("a/{{identity.groups.ids.grp-1.name}}").expect("render"), "a/devs");
        assert_eq!(r("a/{{identity.groups.names.devs.id}}").expect("render"), "a/grp-1");
        assert_eq!(r("a/{{identity.groups.names.devs.metadata.env}}").expect("render"), "a/prod");
        assert_eq!(r("plain/path").expect("render"), "plain/path");
    }

    #[test]
    fn acl_templates_that_cannot_resolve_or_would_widen_the_path_fail() {
        let c = ctx();
        let r = |s: &str| render(s, &c, Mode::Acl);
        assert!(r("a/{{identity.entity.metadata.missing}}").is_err());
        assert_eq!(r("a/{{token.metadata.image_digest}}").expect("render"), "a/sha256:ab");
        assert!(r("a/{{token.metadata.image_signer}}").is_err(), "unproven: the path is left out");
        assert!(r("a/{{identity.entity.aliases.other.name}}").is_err());
        assert!(r("a/{{identity.groups.names.ops.id}}").is_err());
        assert!(r("a/{{identity.entity.metadata.bad}}").is_err(), "a '*' value widens the path");
        assert!(r("a/{{identity.entity.groups.names}}").is_err(), "lists are JSON only");
        assert!(r("a/{{identity.entity.name").is_err());
        assert!(r("a/}}x").is_err());
        let none = TemplateCtx::default();
        assert!(render("a/{{identity.entity.id}}", &none, Mode::Acl).is_err());
    }

    #[test]
    fn json_templates_render_json_values_and_defaults() {
        let c = ctx();
        let out = render(
            r#"{"n": {{identity.entity.name}}, "g": {{identity.entity.groups.names}}, "m": {{identity.entity.metadata}}, "x": {{identity.entity.metadata.none}}, "d": {{identity.entity.aliases.nope.metadata.digest}}}"#,
            &c,
            Mode::Json,
        )
        .expect("render");
        let v: serde_json::Value = serde_json::from_str(&out).expect("render");
        assert_eq!(v["n"], "alice");
        assert_eq!(v["g"], serde_json::json!(["devs"]));
        assert_eq!(v["m"]["team"], "web");
        assert_eq!(v["x"], "");
        assert_eq!(v["d"], "");
    }
}
