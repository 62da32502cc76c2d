//! HCL policy text to the JSON structure the rule parser reads, in O(n log n).
//!
//! `hcl::from_str::<hcl::Value>` builds every level through hcl-rs's `VecMap`, whose insert is a
//! linear search: a policy of n distinct `path` blocks took O(n²) (40,000 rules: 5.7 s). This walks
//! the parsed `hcl::Body` instead and merges blocks as the HCL JSON specification says (the same
//! result hcl-rs gives), keyed by `BTreeMap`s.
//!
//! Not here: hcl-edit's parser itself also builds object *literals* (`{ a = 1, ... }`) through a
//! `VecMap`, so one literal with k entries costs O(k²) before this code sees it. The caps that
//! [`super::Policy::parse_new`] applies bound k; this module cannot.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::PolicyError;

/// Block bodies and attributes by key, merged as hcl-rs merges them for its JSON form.
enum Node {
    Map(BTreeMap<String, Node>),
    Bodies(Vec<hcl::Body>),
    Expr(hcl::Expression),
}

impl Node {
    fn merge_into(self, map: &mut BTreeMap<String, Node>, key: String) {
        match map.entry(key) {
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().merge(self),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(self);
            }
        }
    }

    fn merge(&mut self, other: Node) {
        match (self, other) {
            (Node::Map(lhs), Node::Map(rhs)) => {
                for (k, n) in rhs {
                    n.merge_into(lhs, k);
                }
            }
            (Node::Bodies(lhs), Node::Bodies(mut rhs)) => lhs.append(&mut rhs),
            (lhs, rhs) => *lhs = rhs,
        }
    }

    fn into_json(self) -> Result<Value, PolicyError> {
        match self {
            Node::Map(m) => {
                let mut out = Map::new();
                for (k, n) in m {
                    out.insert(k, n.into_json()?);
                }
                Ok(Value::Object(out))
            }
            // One block is an object, repeated blocks an array of objects (HCL's JSON form).
            Node::Bodies(mut bodies) if bodies.len() == 1 => body_to_json(bodies.remove(0)),
            Node::Bodies(bodies) => bodies
                .into_iter()
                .map(body_to_json)
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Node::Expr(e) => expr_to_json(e),
        }
    }
}

fn block_node(labels: Vec<hcl::BlockLabel>, body: hcl::Body) -> Node {
    let mut labels = labels.into_iter();
    match labels.next() {
        None => Node::Bodies(vec![body]),
        Some(first) => {
            let inner = block_node(labels.collect(), body);
            Node::Map(BTreeMap::from([(first.into_inner(), inner)]))
        }
    }
}

/// An HCL body as its JSON form.
pub(super) fn body_to_json(body: hcl::Body) -> Result<Value, PolicyError> {
    let mut map: BTreeMap<String, Node> = BTreeMap::new();
    for s in body {
        match s {
            hcl::Structure::Attribute(a) => {
                map.insert(a.key.into_inner(), Node::Expr(a.expr));
            }
            hcl::Structure::Block(b) => {
                let node = block_node(b.labels, b.body);
                node.merge_into(&mut map, b.identifier.into_inner());
            }
        }
    }
    Node::Map(map).into_json()
}

fn expr_to_json(e: hcl::Expression) -> Result<Value, PolicyError> {
    use hcl::Expression as E;
    Ok(match e {
        E::Null => Value::Null,
        E::Bool(b) => Value::Bool(b),
        E::Number(n) => serde_json::to_value(n).map_err(|e| PolicyError::Syntax(e.to_string()))?,
        E::String(s) => Value::String(s),
        E::Array(items) => {
            Value::Array(items.into_iter().map(expr_to_json).collect::<Result<Vec<_>, _>>()?)
        }
        E::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                let key = match k {
                    hcl::ObjectKey::Identifier(i) => i.into_inner(),
                    hcl::ObjectKey::Expression(E::String(s)) => s,
                    // Non-exhaustive upstream: any other key form is refused too.
                    _ => {
                        return Err(PolicyError::Syntax(
                            "object keys in a policy must be names or quoted strings".into(),
                        ));
                    }
                };
                out.insert(key, expr_to_json(v)?);
            }
            Value::Object(out)
        }
        // A quoted string with `${...}` in it is kept as written, as the policy's own text.
        E::TemplateExpr(t) => Value::String(t.to_string()),
        E::Parenthesis(inner) => expr_to_json(*inner)?,
        // Variables, traversals, calls, conditionals, operators, `for` (and any form hcl-rs
        // adds later, as the enum is non-exhaustive): a policy is data, nothing is evaluated.
        _ => {
            return Err(PolicyError::Syntax(
                "a policy holds only literal values: variables, functions and operators are not supported".into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON form must be the one hcl-rs gives, which the rule parser has always read.
    #[test]
    fn same_json_as_hcl_rs_for_blocks_attributes_and_repeats() {
        let text = r#"
name = "x"
path "a/*" {
  capabilities = ["read", "list"]
  allowed_parameters = {
    "k" = ["v", 1, true]
    other = []
  }
  min_wrapping_ttl = "1m"
}
path "b" {
  capabilities = ["update"]
}
path "a/*" {
  capabilities = ["create"]
  required_parameters = ["k"]
}
path "t" {
  allowed_parameters = { "x" = ["${literal}"] }
  denied_parameters { y = [] }
}
"#;
        let ours = body_to_json(hcl::parse(text).expect("parse")).expect("ours");
        let theirs: hcl::Value = hcl::from_str(text).expect("hcl-rs");
        assert_eq!(ours, serde_json::to_value(theirs).expect("json"));
    }

    #[test]
    fn expressions_are_refused_not_evaluated() {
        for text in ["path \"a\" {\n capabilities = [var.x]\n}\n", "path \"a\" {\n x = 1 + 2\n}\n"]
        {
            let e = body_to_json(hcl::parse(text).expect("parse")).expect_err(text);
            assert!(e.to_string().contains("literal"), "{e}");
        }
    }
}
