//! Who is asking: the subject and claims an ACL decision is made on.
//!
//! An [`Identity`] is either authenticated (built from verified [`Claims`]) or
//! anonymous (no auth configured). Claim lookup is shared with the ACL: a claim
//! path is tried first as one literal claim name (`cognito:groups`,
//! `https://example.com/roles` — names that contain `.` or `:`), then as a
//! dotted path into nested objects (`realm_access.roles`), where a `*` segment
//! stands for every value of an object (`resource_access.*.roles`).

use serde_json::Value as Json;

use crate::jwt::Claims;

/// The subject and claims of a session, as the ACL sees them.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    sub: Option<String>,
    claims: Json,
}

impl Identity {
    /// No authentication: matches only `*` permissions and no `{sub}` pattern.
    pub fn anonymous() -> Identity {
        Identity {
            sub: None,
            claims: Json::Null,
        }
    }

    /// An authenticated session.
    pub fn from_claims(claims: &Claims) -> Identity {
        Identity::new(claims.sub.clone(), claims.raw.clone())
    }

    /// An authenticated session from its parts (`claims` should be the JSON
    /// object of all claims; anything else is treated as no claims).
    pub fn new(sub: impl Into<String>, claims: Json) -> Identity {
        Identity {
            sub: Some(sub.into()),
            claims,
        }
    }

    /// The subject, `None` when anonymous.
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    pub fn is_anonymous(&self) -> bool {
        self.sub.is_none()
    }

    /// All claims (JSON `null` when anonymous).
    pub fn claims(&self) -> &Json {
        &self.claims
    }

    /// Every value found at the claim path `path` (see the module doc).
    pub fn lookup(&self, path: &str) -> Vec<&Json> {
        lookup_claim(&self.claims, path)
    }
}

/// Every value at claim path `path` in `claims`: the literal top-level name
/// if present, else the dotted traversal (with `*` fanning out over objects).
/// Empty when nothing is there. Work is bounded by the size of `claims`.
pub fn lookup_claim<'a>(claims: &'a Json, path: &str) -> Vec<&'a Json> {
    let Some(obj) = claims.as_object() else {
        return Vec::new();
    };
    if let Some(v) = obj.get(path) {
        return vec![v];
    }
    let mut current = vec![claims];
    for segment in path.split('.') {
        let mut next = Vec::new();
        for v in current {
            let Some(o) = v.as_object() else { continue };
            if segment == "*" {
                next.extend(o.values());
            } else if let Some(child) = o.get(segment) {
                next.push(child);
            }
        }
        if next.is_empty() {
            return next;
        }
        current = next;
    }
    current
}

/// True when a claim value "contains" `wanted`: equal to it, or an array with
/// an element equal to it. Numbers and booleans compare by their JSON text
/// (`42`, `true`). With `split_words`, a string claim is also read as a
/// space-separated list (the OAuth `scope` convention).
pub fn claim_contains(value: &Json, wanted: &str, split_words: bool) -> bool {
    match value {
        Json::Array(items) => items.iter().any(|i| scalar_equals(i, wanted)),
        Json::String(s) if split_words => s.split_ascii_whitespace().any(|w| w == wanted),
        other => scalar_equals(other, wanted),
    }
}

fn scalar_equals(value: &Json, wanted: &str) -> bool {
    match value {
        Json::String(s) => s == wanted,
        Json::Number(n) => n.to_string() == wanted,
        Json::Bool(b) => (if *b { "true" } else { "false" }) == wanted,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literal_name_wins_over_dotted_path() {
        let c = json!({"a.b": 1, "a": {"b": 2}});
        assert_eq!(lookup_claim(&c, "a.b"), vec![&json!(1)]);
    }

    #[test]
    fn dotted_path_traverses_objects() {
        let c = json!({"realm_access": {"roles": ["admin"]}});
        assert_eq!(
            lookup_claim(&c, "realm_access.roles"),
            vec![&json!(["admin"])]
        );
        assert!(lookup_claim(&c, "realm_access.missing").is_empty());
        assert!(lookup_claim(&c, "realm_access.roles.x").is_empty());
    }

    #[test]
    fn colon_names_are_literal() {
        let c = json!({"cognito:groups": ["g1"]});
        assert_eq!(lookup_claim(&c, "cognito:groups"), vec![&json!(["g1"])]);
    }

    #[test]
    fn star_fans_out_over_objects() {
        let c = json!({"resource_access": {"app": {"roles": ["r1"]}, "other": {"roles": ["r2"]}}});
        let found = lookup_claim(&c, "resource_access.*.roles");
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn non_object_claims_find_nothing() {
        assert!(lookup_claim(&Json::Null, "sub").is_empty());
        assert!(lookup_claim(&json!([1, 2]), "0").is_empty());
    }

    #[test]
    fn contains_matches_scalars_and_arrays() {
        assert!(claim_contains(&json!("x"), "x", false));
        assert!(claim_contains(&json!(["a", "x"]), "x", false));
        assert!(claim_contains(&json!(42), "42", false));
        assert!(claim_contains(&json!(true), "true", false));
        assert!(!claim_contains(&json!("a x"), "x", false));
        assert!(claim_contains(&json!("a x"), "x", true));
        assert!(!claim_contains(&json!({"x": 1}), "x", false));
        assert!(!claim_contains(&json!([["x"]]), "x", false));
    }

    #[test]
    fn anonymous_has_no_subject_or_claims() {
        let a = Identity::anonymous();
        assert!(a.is_anonymous());
        assert_eq!(a.sub(), None);
        assert!(a.lookup("sub").is_empty());
    }
}
