use proptest::prelude::*;
use serde_json::json;

use super::super::{Capabilities as C, DEFAULT_POLICY, Policy};
use super::Acl;

fn pol(name: &str, text: &str) -> Policy {
    Policy::parse(name, text).expect("policy parses")
}

fn rule(pattern: &str, caps: &[&str]) -> String {
    let list: Vec<String> = caps.iter().map(|c| format!("\"{c}\"")).collect();
    format!("path \"{pattern}\" {{\n  capabilities = [{}]\n}}\n", list.join(", "))
}

fn acl(texts: &[String]) -> Acl {
    let ps: Vec<Policy> = texts.iter().enumerate().map(|(i, t)| pol(&format!("p{i}"), t)).collect();
    Acl::new(ps.iter())
}

#[test]
fn deny_wins_over_grants_from_other_policies() {
    let a = acl(&[rule("secret/app", &["read", "update"]), rule("secret/app", &["deny"])]);
    assert_eq!(a.capabilities("secret/app").names(), ["deny"]);
    assert!(!a.allows("secret/app", C::READ));
}

#[test]
fn same_pattern_in_two_policies_unites_capabilities() {
    let a = acl(&[rule("secret/*", &["read"]), rule("secret/*", &["list"])]);
    assert_eq!(a.capabilities("secret/x").names(), ["read", "list"]);
}

#[test]
fn exact_match_beats_glob() {
    let a = acl(&[rule("secret/*", &["read"]), rule("secret/app", &["update"])]);
    assert_eq!(a.capabilities("secret/app").names(), ["update"]);
    assert_eq!(a.capabilities("secret/other").names(), ["read"]);
}

#[test]
fn most_specific_glob_wins_and_does_not_add_up() {
    let a = acl(&[rule("secret/*", &["read", "list"]), rule("secret/app/*", &["create"])]);
    assert_eq!(a.capabilities("secret/app/db").names(), ["create"]);
    assert_eq!(a.capabilities("secret/appx").names(), ["read", "list"]);
}

#[test]
fn plus_matches_exactly_one_segment() {
    let a = acl(&[rule("secret/+/config", &["read"])]);
    assert!(a.allows("secret/team/config", C::READ));
    assert!(!a.allows("secret/config", C::READ));
    assert!(!a.allows("secret/a/b/config", C::READ));
    assert!(!a.allows("secret/team/config/x", C::READ));
}

#[test]
fn plus_with_trailing_glob_matches_deeper_paths() {
    let a = acl(&[rule("secret/+/app*", &["read"])]);
    assert!(a.allows("secret/team/app", C::READ));
    assert!(a.allows("secret/team/apps/x", C::READ));
    assert!(!a.allows("secret/team/other", C::READ));
}

#[test]
fn priority_follows_vaults_rules() {
    // First wildcard later wins.
    let a = acl(&[rule("secret/+/x", &["read"]), rule("secret/a*", &["list"])]);
    assert_eq!(a.capabilities("secret/ab/x").names(), ["list"]);
    // Not ending in `*` beats ending in `*` when the first wildcard is at the same place.
    let a = acl(&[rule("secret/+/x", &["read"]), rule("secret/+/x*", &["list"])]);
    assert_eq!(a.capabilities("secret/a/x").names(), ["read"]);
    // Fewer `+` wins.
    let a = acl(&[rule("a/+/+/d", &["read"]), rule("a/+/c/d", &["list"])]);
    assert_eq!(a.capabilities("a/b/c/d").names(), ["list"]);
}

#[test]
fn create_without_read_is_write_only() {
    let a = acl(&[rule("drop/*", &["create"])]);
    assert!(a.allows("drop/x", C::CREATE));
    assert!(!a.allows("drop/x", C::READ));
    assert!(!a.allows("drop/x", C::UPDATE));
}

#[test]
fn unmatched_paths_have_no_capabilities() {
    let a = acl(&[rule("secret/*", &["read"])]);
    assert!(a.capabilities("other/x").is_empty());
    assert!(Acl::new(std::iter::empty()).capabilities("x").is_empty());
}

#[test]
fn root_acl_allows_everything_including_sudo() {
    let a = Acl::root();
    assert!(a.is_root() && a.allows("sys/seal", C::SUDO) && a.allows("any/path", C::DELETE));
}

#[test]
fn leading_slash_in_pattern_is_ignored() {
    let a = acl(&[rule("/secret/x", &["read"])]);
    assert!(a.allows("secret/x", C::READ));
}

#[test]
fn default_policy_parses_and_grants_lookup_self_and_cubbyhole() {
    let a = Acl::new([&pol("default", DEFAULT_POLICY)]);
    assert!(a.allows("auth/token/lookup-self", C::READ));
    assert!(a.allows("auth/token/renew-self", C::UPDATE));
    assert!(a.allows("cubbyhole/anything", C::CREATE));
    assert!(!a.allows("secret/x", C::READ));
    assert!(!a.allows("auth/token/create", C::UPDATE));
}

#[test]
fn required_allowed_and_denied_parameters_are_enforced() {
    let text = r#"
path "db/creds" {
  capabilities = ["update"]
  required_parameters = ["role"]
  allowed_parameters = {
    "role" = ["app-*", "readonly"]
    "ttl" = []
  }
  denied_parameters = {
    "ttl" = ["0"]
  }
}
"#;
    let a = Acl::new([&pol("p", text)]);
    let ok = |d: serde_json::Value| a.check_parameters("db/creds", d.as_object().expect("obj"));
    assert!(ok(json!({"role": "app-web"})).is_ok());
    assert!(ok(json!({"role": "readonly", "ttl": "1h"})).is_ok());
    let e = ok(json!({"ttl": "1h"})).expect_err("role required");
    assert!(e.to_string().contains("role"));
    let e = ok(json!({"role": "admin"})).expect_err("value not allowed");
    assert!(e.to_string().contains("role"));
    let e = ok(json!({"role": "readonly", "other": 1})).expect_err("key not allowed");
    assert!(e.to_string().contains("other"));
    let e = ok(json!({"role": "readonly", "ttl": "0"})).expect_err("denied value");
    assert!(e.to_string().contains("ttl"));
}

#[test]
fn a_star_denied_parameter_with_no_values_refuses_any_parameter() {
    let a = Acl::new([&pol(
        "p",
        "path \"x\" {\n  capabilities = [\"update\"]\n  denied_parameters = {\n    \"*\" = []\n  }\n}\n",
    )]);
    assert!(a.check_parameters("x", json!({"a": 1}).as_object().expect("obj")).is_err());
    assert!(a.check_parameters("x", json!({}).as_object().expect("obj")).is_ok());
}

#[test]
fn wrapping_ttl_bounds_come_from_the_winning_rule() {
    let a = Acl::new([&pol(
        "p",
        "path \"w/*\" {\n  capabilities = [\"read\"]\n  min_wrapping_ttl = \"1m\"\n  max_wrapping_ttl = \"1h\"\n}\n",
    )]);
    assert_eq!(a.wrapping_ttl_bounds("w/x"), (Some(60), Some(3600)));
    assert_eq!(a.wrapping_ttl_bounds("other"), (None, None));
}

fn segment() -> impl Strategy<Value = String> {
    "[a-z]{1,6}"
}

fn path_strategy() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(segment(), 1..6)
}

const CAPS: [&str; 7] = ["create", "read", "update", "patch", "delete", "list", "sudo"];

fn caps_strategy() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::subsequence(CAPS.to_vec(), 1..CAPS.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn deny_on_the_winning_pattern_leaves_nothing(segs in path_strategy(), caps in caps_strategy(), cut in 0usize..6) {
        let path = segs.join("/");
        let cut = cut.min(path.len());
        let glob = format!("{}*", &path[..cut]);
        let a = acl(&[rule(&glob, &caps), rule(&glob, &["deny"]), rule(&glob, &caps)]);
        prop_assert_eq!(a.capabilities(&path), C::DENY);
        prop_assert!(!a.allows(&path, C::READ));
    }

    #[test]
    fn a_lone_glob_prefix_grants_exactly_its_capabilities(segs in path_strategy(), caps in caps_strategy(), cut in 0usize..30) {
        let path = segs.join("/");
        let cut = cut.min(path.len());
        let a = acl(&[rule(&format!("{}*", &path[..cut]), &caps)]);
        let got = a.capabilities(&path).names();
        prop_assert_eq!(got, caps);
    }

    #[test]
    fn plus_never_matches_another_segment_count(segs in path_strategy(), extra in segment(), at in 0usize..6) {
        let mut pattern = segs.clone();
        let at = at.min(pattern.len() - 1);
        pattern[at] = "+".to_owned();
        let a = acl(&[rule(&pattern.join("/"), &["read"])]);
        prop_assert!(a.allows(&segs.join("/"), C::READ));
        let mut longer = segs.clone();
        longer.push(extra);
        prop_assert!(!a.allows(&longer.join("/"), C::READ));
        if segs.len() > 1 {
            prop_assert!(!a.allows(&segs[..segs.len() - 1].join("/"), C::READ));
        }
    }

    #[test]
    fn policy_order_does_not_change_the_result(
        rules in prop::collection::vec((path_strategy(), any::<bool>(), caps_strategy(), any::<bool>()), 1..6),
        probe in path_strategy(),
    ) {
        let texts: Vec<String> = rules.iter().map(|(segs, glob, caps, deny)| {
            let p = if *glob { format!("{}*", segs.join("/")) } else { segs.join("/") };
            if *deny { rule(&p, &["deny"]) } else { rule(&p, caps) }
        }).collect();
        let mut reversed = texts.clone();
        reversed.reverse();
        let probe = probe.join("/");
        let forward = acl(&texts);
        let backward = acl(&reversed);
        prop_assert_eq!(forward.capabilities(&probe), backward.capabilities(&probe));
        for (segs, _, _, _) in &rules {
            let p = segs.join("/");
            prop_assert_eq!(forward.capabilities(&p), backward.capabilities(&p));
        }
    }
}

/// HCL-ish fragments, so generated texts get past the first character more often than noise.
fn policy_text() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "path",
        "\"secret/*\"",
        "\"a/+/b\"",
        "{",
        "}",
        "capabilities",
        "=",
        "[",
        "]",
        "\"read\"",
        "\"deny\"",
        ",",
        "\n",
        "policy",
        "\"write\"",
        "allowed_parameters",
        "\"*\"",
        "#",
        "\"",
        "min_wrapping_ttl",
        "\"1h\"",
        "null",
        "1",
        "{\"path\":",
        ":",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics_the_policy_parser(text in any::<String>(), fragments in policy_text()) {
        for t in [&text, &fragments] {
            if let Ok(p) = Policy::parse("fuzz", t) {
                let a = Acl::new([&p]);
                let _ = a.capabilities("secret/a/b");
                let _ = a.check_parameters("secret/a/b", json!({"k": "v"}).as_object().expect("obj"));
            }
            let _ = super::super::format_hcl(t);
        }
    }
}

#[test]
fn a_sealed_response_is_required_where_the_winning_rule_says_so() {
    let sealed = "path \"secret/data/app\" {\n  capabilities = [\"read\"]\n  require_sealed_response = true\n}\n";
    let a = acl(&[sealed.to_owned(), rule("secret/*", &["read"])]);
    assert!(a.requires_sealed_response("secret/data/app"));
    assert!(!a.requires_sealed_response("secret/data/other"));
    // One policy asking is enough when rules for the same pattern merge.
    let b = acl(&[sealed.to_owned(), rule("secret/data/app", &["read"])]);
    assert!(b.requires_sealed_response("secret/data/app"));
    assert!(!Acl::root().requires_sealed_response("secret/data/app"));
    let e = Policy::parse("p", "path \"a\" {\n  require_sealed_response = \"yes\"\n}\n")
        .expect_err("not a bool");
    assert!(e.to_string().contains("require_sealed_response must be true or false"), "{e}");
}

#[test]
fn subscribe_needs_the_capability_and_a_matching_event_type() {
    let a = acl(&[
        "path \"secret/data/*\" {\n  capabilities = [\"read\", \"subscribe\"]\n  subscribe_event_types = [\"kv-v2/data-*\"]\n}\n"
            .to_owned(),
        rule("secret/metadata/*", &["subscribe"]),
        "path \"secret/data/hidden\" {\n  capabilities = [\"deny\"]\n  subscribe_event_types = [\"*\"]\n}\n"
            .to_owned(),
    ]);
    assert!(a.allows_subscribe("secret/data/app", "kv-v2/data-write"));
    assert!(!a.allows_subscribe("secret/data/app", "kv-v2/delete"), "event type not listed");
    assert!(!a.allows_subscribe("secret/metadata/app", "kv-v2/metadata-write"), "no types listed");
    assert!(!a.allows_subscribe("secret/data/hidden", "kv-v2/data-write"), "deny wins");
    assert!(!a.allows_subscribe("other/x", "kv-v2/data-write"));
    assert_eq!(a.capabilities("secret/data/app").names(), ["read", "subscribe"]);
    assert!(Acl::root().allows_subscribe("anything", "any-type"));
}

#[test]
fn subscribe_event_types_of_one_pattern_in_two_policies_unite() {
    let p = |types: &str| {
        format!(
            "path \"kv/*\" {{\n  capabilities = [\"subscribe\"]\n  subscribe_event_types = [{types}]\n}}\n"
        )
    };
    let a = acl(&[p("\"kv-v1/write\""), p("\"kv-v1/delete\"")]);
    assert!(a.allows_subscribe("kv/x", "kv-v1/write"));
    assert!(a.allows_subscribe("kv/x", "kv-v1/delete"));
    assert!(Policy::parse("bad", "path \"kv/*\" { subscribe_event_types = \"x\" }").is_err());
}
