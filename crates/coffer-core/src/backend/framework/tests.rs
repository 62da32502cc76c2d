use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::pattern::matches;
use super::*;
use crate::backend::MountInfo;

/// A toy backend: roles with a name, a TTL and some policies, held in memory.
struct Toy {
    roles: std::sync::Mutex<BTreeMap<String, Value>>,
}

const ROLE_FIELDS: &[Field] = &[
    Field::str("db_name", "The database the role belongs to.").required(),
    Field::duration("ttl", "The lease's lifetime.").default(Default::Str("1h")),
    Field::int("max_uses", "How often.").default(Default::Int(3)),
    Field::bool("enabled", "Whether it is on.").default(Default::Bool(true)),
    Field::comma_list("policies", "Policies."),
    Field::int_list("versions", "Versions."),
    Field::map("extra", "Anything."),
];

impl Toy {
    fn paths() -> Paths<Toy> {
        Paths::new(vec![
            Path::new("roles", "List the roles.").list(handler!(Toy::list)),
            Path::new("roles/{name}", "Manage a role.")
                .fields(ROLE_FIELDS)
                .read(handler!(Toy::read))
                .write(handler!(Toy::write))
                .delete(handler!(Toy::delete))
                .exists(handler!(Toy::role_exists))
                .warn_unknown(),
            Path::new("data/{path*}", "Any path.").read(handler!(Toy::echo)),
        ])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Value>> {
        self.roles.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn list(&self, _r: &Req<'_>) -> Result<Response> {
        list_response(self.lock().keys().cloned().collect())
    }

    async fn read(&self, r: &Req<'_>) -> Result<Response> {
        let v = self.lock().get(r.capture("name")).cloned().ok_or(Error::NotFound)?;
        Ok(Response::from_value(v))
    }

    async fn write(&self, r: &Req<'_>) -> Result<Response> {
        let v = json!({
            "db_name": r.str("db_name")?,
            "ttl": r.secs("ttl")?,
            "max_uses": r.u64("max_uses")?,
            "enabled": r.bool("enabled")?,
            "policies": r.list("policies")?,
            "versions": r.ints("versions")?,
            "op": r.operation.as_str(),
        });
        self.lock().insert(r.capture("name").to_owned(), v);
        Ok(Response::empty())
    }

    async fn delete(&self, r: &Req<'_>) -> Result<Response> {
        self.lock().remove(r.capture("name"));
        Ok(Response::empty())
    }

    async fn role_exists(&self, r: &Req<'_>) -> Result<Option<bool>> {
        Ok(Some(self.lock().contains_key(r.capture("name"))))
    }

    async fn echo(&self, r: &Req<'_>) -> Result<Response> {
        Ok(Response::from_value(json!({ "path": r.capture("path") })))
    }
}

fn mount() -> MountInfo {
    MountInfo {
        path: "toy/".into(),
        kind: "toy".into(),
        uuid: "u".into(),
        accessor: "a".into(),
        default_lease_ttl: Duration::ZERO,
        max_lease_ttl: Duration::ZERO,
        options: BTreeMap::new(),
    }
}

async fn call(
    b: &Toy,
    paths: &Paths<Toy>,
    op: Operation,
    path: &str,
    body: Value,
) -> Result<Response> {
    let data: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
    let mount = mount();
    let req = BackendRequest {
        id: "r",
        operation: op,
        path,
        data: &data,
        caller: None,
        mount: &mount,
        remote_addr: None,
        sudo: false,
        client_token: None,
        client_cert_chain: &[],
    };
    paths.handle(b, &req).await
}

fn toy() -> (Toy, Paths<Toy>) {
    (Toy { roles: std::sync::Mutex::new(BTreeMap::new()) }, Toy::paths())
}

#[test]
fn patterns_capture_segments_and_the_rest() {
    let caps = |p, s| matches(p, s, true).map(|c| c.into_iter().collect::<Vec<_>>());
    assert_eq!(caps("roles/{name}", "roles/web"), Some(vec![("name", "web")]));
    assert_eq!(caps("roles/{name}", "roles/web/"), Some(vec![("name", "web")]));
    assert_eq!(caps("roles", "roles/"), Some(vec![]));
    // Outside a LIST, `roles/web/` is not `roles/web`: an exact ACL rule must not be escaped
    // by adding a slash.
    assert_eq!(matches("roles/{name}", "roles/web/", false), None);
    assert_eq!(matches("roles", "roles/", false), None);
    assert!(matches("roles/{name}", "roles/web", false).is_some());
    assert_eq!(
        matches("data/{path*}", "data/a/", false).map(|c| c.into_iter().collect::<Vec<_>>()),
        Some(vec![("path", "a/")]),
        "a rest capture keeps its slash for the backend to judge"
    );
    assert_eq!(caps("roles/{name}", "roles/"), None);
    assert_eq!(caps("roles/{name}", "roles/a/b"), None);
    assert_eq!(caps("roles/{name}", "roles//"), None);
    assert_eq!(caps("roles", "rolesx"), None);
    assert_eq!(caps("data/{path*}", "data/a/b/"), Some(vec![("path", "a/b/")]));
    assert_eq!(caps("data/{path*}", "data"), Some(vec![("path", "")]));
    assert_eq!(caps("data/{path*}", "data/"), Some(vec![("path", "")]));
    assert_eq!(caps("{path*}", ""), Some(vec![("path", "")]));
    assert_eq!(
        caps("role/{name}/secret-id/{rest*}", "role/web/secret-id/x/y"),
        Some(vec![("name", "web"), ("rest", "x/y")])
    );
    assert_eq!(caps("config", ""), None);
}

#[tokio::test]
async fn routes_by_pattern_and_operation() {
    let (b, p) = toy();
    call(&b, &p, Operation::Update, "roles/web", json!({"db_name": "pg"})).await.expect("write");
    let r = call(&b, &p, Operation::Read, "roles/web", json!({})).await.expect("read");
    assert_eq!(r.data.expect("data")["db_name"], "pg");
    let r = call(&b, &p, Operation::List, "roles/", json!({})).await.expect("list");
    assert_eq!(r.data.expect("data")["keys"], json!(["web"]));
    let r = call(&b, &p, Operation::Read, "data/a/b", json!({})).await.expect("rest");
    assert_eq!(r.data.expect("data")["path"], "a/b");
}

#[tokio::test]
async fn create_is_served_by_the_update_handler() {
    let (b, p) = toy();
    call(&b, &p, Operation::Create, "roles/web", json!({"db_name": "pg"})).await.expect("create");
    let r = call(&b, &p, Operation::Read, "roles/web", json!({})).await.expect("read");
    assert_eq!(r.data.expect("data")["op"], "create");
}

#[tokio::test]
async fn an_empty_list_is_a_404() {
    let (b, p) = toy();
    let e = call(&b, &p, Operation::List, "roles/", json!({})).await.expect_err("empty");
    assert!(matches!(e, Error::NotFound), "{e:?}");
}

#[tokio::test]
async fn unknown_paths_are_404_and_undeclared_operations_405() {
    let (b, p) = toy();
    let e = call(&b, &p, Operation::Read, "nope/x", json!({})).await.expect_err("404");
    assert!(matches!(&e, Error::UnsupportedPath(p) if p == "toy/nope/x"), "{e:?}");
    let e = call(&b, &p, Operation::Delete, "roles", json!({})).await.expect_err("405");
    assert!(matches!(e, Error::UnsupportedOperation), "{e:?}");
    let e = call(&b, &p, Operation::Patch, "roles/web", json!({})).await.expect_err("405");
    assert!(matches!(e, Error::UnsupportedOperation), "{e:?}");
}

#[tokio::test]
async fn wrong_types_are_refused_naming_the_field() {
    let (b, p) = toy();
    for (body, field) in [
        (json!({"db_name": "pg", "ttl": "soon"}), "ttl"),
        (json!({"db_name": "pg", "max_uses": -1}), "max_uses"),
        (json!({"db_name": "pg", "enabled": "maybe"}), "enabled"),
        (json!({"db_name": "pg", "policies": 3}), "policies"),
        (json!({"db_name": "pg", "versions": "1,x"}), "versions"),
        (json!({"db_name": "pg", "extra": "x"}), "extra"),
        (json!({"db_name": ["pg"]}), "db_name"),
    ] {
        let e = call(&b, &p, Operation::Update, "roles/web", body).await.expect_err(field);
        assert!(matches!(&e, Error::InvalidRequest(m) if m.contains(field)), "{field}: {e:?}");
    }
    assert!(b.lock().is_empty(), "a refused write stores nothing");
}

#[tokio::test]
async fn required_fields_are_refused_by_name_on_writes_only() {
    let (b, p) = toy();
    for body in [json!({}), json!({"db_name": ""}), json!({"db_name": null})] {
        let e = call(&b, &p, Operation::Update, "roles/web", body).await.expect_err("missing");
        assert!(
            matches!(&e, Error::InvalidRequest(m) if m == "missing required parameter \"db_name\""),
            "{e:?}"
        );
    }
    // A read does not need the write's required fields.
    let e = call(&b, &p, Operation::Read, "roles/web", json!({})).await.expect_err("absent");
    assert!(matches!(e, Error::NotFound), "{e:?}");
}

#[tokio::test]
async fn getters_answer_declared_defaults_for_absent_fields() {
    let (b, p) = toy();
    call(&b, &p, Operation::Update, "roles/web", json!({"db_name": "pg"})).await.expect("write");
    let r = call(&b, &p, Operation::Read, "roles/web", json!({})).await.expect("read");
    let d = r.data.expect("data");
    assert_eq!((d["ttl"].clone(), d["max_uses"].clone()), (json!(3600), json!(3)));
    assert_eq!((d["enabled"].clone(), d["policies"].clone()), (json!(true), Value::Null));
    let body = json!({"db_name": "pg", "ttl": 60, "max_uses": "7", "enabled": "false",
                      "policies": "a, b", "versions": [1, "2"]});
    call(&b, &p, Operation::Update, "roles/web", body).await.expect("write");
    let d = call(&b, &p, Operation::Read, "roles/web", json!({})).await.expect("read").data;
    let d = d.expect("data");
    assert_eq!((d["ttl"].clone(), d["max_uses"].clone()), (json!(60), json!(7)));
    assert_eq!((d["enabled"].clone(), d["policies"].clone()), (json!(false), json!(["a", "b"])));
    assert_eq!(d["versions"], json!([1, 2]));
}

#[tokio::test]
async fn unknown_fields_are_named_in_a_warning_where_the_path_asks() {
    let (b, p) = toy();
    let body = json!({"db_name": "pg", "zeta": 1, "alpha": 2});
    let r = call(&b, &p, Operation::Update, "roles/web", body).await.expect("write");
    assert_eq!(r.warnings, vec!["Endpoint ignored these unrecognized parameters: [alpha zeta]"]);
    let r = call(&b, &p, Operation::Read, "data/x", json!({"zeta": 1})).await.expect("read");
    assert!(r.warnings.is_empty());
}

#[tokio::test]
async fn exists_answers_only_for_paths_that_check() {
    let (b, p) = toy();
    let data = Map::new();
    let mount = mount();
    let probe = |path| BackendRequest {
        id: "r",
        operation: Operation::Update,
        path,
        data: &data,
        caller: None,
        mount: &mount,
        remote_addr: None,
        sudo: false,
        client_token: None,
        client_cert_chain: &[],
    };
    assert_eq!(p.exists(&b, &probe("roles/web")).await.expect("probe"), Some(false));
    call(&b, &p, Operation::Update, "roles/web", json!({"db_name": "pg"})).await.expect("write");
    assert_eq!(p.exists(&b, &probe("roles/web")).await.expect("probe"), Some(true));
    assert_eq!(p.exists(&b, &probe("data/x")).await.expect("probe"), None);
    assert_eq!(p.exists(&b, &probe("nope")).await.expect("probe"), None);
}

#[test]
fn help_names_the_route_its_operations_and_fields() {
    let (_, p) = toy();
    let h = p.help("roles/web").expect("help");
    let t = &h.text;
    assert!(
        t.starts_with("Request:        roles/web\nMatching Route: roles/{name}\n\nManage a role."),
        "{t}"
    );
    assert!(t.contains("Operations: read, create, update, delete"), "{t}");
    assert!(
        t.contains("    db_name (string)\n\n        The database the role belongs to. Required.")
    );
    assert!(
        t.contains("    ttl (duration (sec))\n\n        The lease's lifetime. Default: \"1h\".")
    );
    // Parameters in name order, as Vault lists them.
    let at = |s: &str| t.find(s).unwrap_or(usize::MAX);
    assert!(
        at("    db_name (") < at("    enabled (") && at("    enabled (") < at("    ttl ("),
        "{t}"
    );
    let patterns: Vec<&str> = h.specs.iter().map(|s| s.pattern).collect();
    assert_eq!(patterns, vec!["roles/{name}"]);
    assert!(p.help("nope").is_none());
    assert_eq!(p.matching("roles/"), Some("roles"));

    let root = p.help("").expect("root help");
    assert!(root.text.contains("## PATHS"), "{}", root.text);
    assert!(root.text.contains("\n    roles\n        List the roles.\n"), "{}", root.text);
    assert_eq!(root.specs.len(), 3);
}

#[test]
fn the_openapi_document_lists_paths_operations_and_fields() {
    let (_, p) = toy();
    let m = openapi::Mount {
        path: "auth/toy/",
        tag: "auth",
        specs: p.specs(),
        unauthenticated: &["roles"],
        sudo: &[],
    };
    let doc = openapi::document("1.0.0", &[m]);
    assert_eq!(doc["openapi"], "3.0.2");
    let paths = doc["paths"].as_object().expect("paths");
    let keys: Vec<&String> = paths.keys().collect();
    assert_eq!(keys, vec!["/auth/toy/data/{path}", "/auth/toy/roles", "/auth/toy/roles/{name}"]);
    let role = &paths["/auth/toy/roles/{name}"];
    assert_eq!(role["parameters"][0]["name"], "name");
    assert_eq!(role["parameters"][0]["in"], "path");
    assert_eq!(role["x-vault-createSupported"], true);
    assert!(role.get("x-vault-unauthenticated").is_none());
    assert_eq!(paths["/auth/toy/roles"]["x-vault-unauthenticated"], true);
    assert_eq!(paths["/auth/toy/roles"]["get"]["parameters"][0]["required"], true);
    for m in ["get", "post", "delete"] {
        assert_eq!(role[m]["tags"], json!(["auth"]), "{m}");
    }
    let schema_ref = role["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .expect("ref");
    assert_eq!(schema_ref, "#/components/schemas/WriteAuthToyRolesNameRequest");
    let schema = &doc["components"]["schemas"]["WriteAuthToyRolesNameRequest"];
    assert_eq!(schema["required"], json!(["db_name"]));
    assert_eq!(schema["properties"]["ttl"]["type"], "integer");
    assert_eq!(schema["properties"]["ttl"]["format"], "seconds");
    assert_eq!(schema["properties"]["ttl"]["default"], "1h");
    assert_eq!(schema["properties"]["policies"]["items"]["type"], "string");
    assert_eq!(schema["properties"]["extra"]["type"], "object");
}
