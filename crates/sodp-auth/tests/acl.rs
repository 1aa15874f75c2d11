//! The ACL matrix: patterns, permissions, every preset, and malformed files.

use serde_json::{json, Value};
use sodp_auth::acl::{Access, Acl, AclError};
use sodp_auth::Identity;

fn acl(v: Value) -> Acl {
    Acl::from_json_str(&v.to_string()).expect("valid ACL")
}

fn user(sub: &str, claims: Value) -> Identity {
    let mut claims = claims;
    if let Some(o) = claims.as_object_mut() {
        o.insert("sub".into(), json!(sub));
    }
    Identity::new(sub, claims)
}

fn alice() -> Identity {
    user("alice", json!({}))
}

fn bob() -> Identity {
    user("bob", json!({}))
}

fn owner_acl() -> Acl {
    acl(json!({"rules": [
        {"pattern": "users.{sub}.*", "read": ["{sub}"], "write": ["{sub}"]},
        {"pattern": "users.{sub}", "read": ["{sub}"], "write": ["{sub}"]},
        {"pattern": "public.*", "read": ["*"], "write": ["role:editor"]},
        {"pattern": "feed", "read": ["*"]},
    ]}))
}

// ---- patterns ----

#[test]
fn sub_capture_gives_each_user_their_own_keys() {
    let a = owner_acl();
    assert!(a.can_read("users.alice.profile", &alice()));
    assert!(a.can_write("users.alice.profile", &alice()));
    assert!(a.can_write("users.alice.deeply.nested.key", &alice()));
    assert!(a.can_write("users.alice", &alice()));
    assert!(!a.can_read("users.alice.profile", &bob()));
    assert!(!a.can_write("users.alice.profile", &bob()));
    assert!(!a.can_write("users.alice", &bob()));
    assert!(a.can_write("users.bob.profile", &bob()));
}

#[test]
fn sub_capture_never_matches_anonymous() {
    let a = owner_acl();
    let anon = Identity::anonymous();
    assert!(!a.can_read("users.alice.profile", &anon));
    assert!(!a.can_write("users.alice", &anon));
}

#[test]
fn sub_must_equal_a_whole_segment() {
    let a = owner_acl();
    // A subject containing a dot can never equal a single segment.
    let dotted = user("alice.profile", json!({}));
    assert!(!a.can_read("users.alice.profile", &dotted));
    let prefix = user("ali", json!({}));
    assert!(!a.can_read("users.alice.x", &prefix));
}

#[test]
fn trailing_wildcard_needs_at_least_one_segment() {
    let a = owner_acl();
    assert!(a.can_read("public.news", &Identity::anonymous()));
    assert!(a.can_read("public.a.b.c", &Identity::anonymous()));
    assert!(!a.can_read("public", &Identity::anonymous()));
    assert!(!a.can_read("publicity.x", &Identity::anonymous()));
}

#[test]
fn star_alone_matches_every_key() {
    let a = acl(json!({"rules": [{"pattern": "*", "read": ["*"]}]}));
    for key in ["a", "a.b", "x.y.z.w"] {
        assert!(a.can_read(key, &Identity::anonymous()), "{key}");
        assert!(!a.can_write(key, &alice()), "{key}");
    }
}

#[test]
fn literal_patterns_match_exactly() {
    let a = owner_acl();
    assert!(a.can_read("feed", &alice()));
    assert!(!a.can_read("feed.x", &alice()));
    assert!(!a.can_read("Feed", &alice()));
}

#[test]
fn first_matching_rule_wins() {
    let a = acl(json!({"rules": [
        {"pattern": "docs.secret", "read": ["role:admin"]},
        {"pattern": "docs.*", "read": ["*"]},
    ]}));
    assert!(!a.can_read("docs.secret", &alice()));
    assert!(a.can_read("docs.public", &alice()));
    let d = a.decide("docs.secret", Access::Read, &alice());
    assert_eq!((d.allowed, d.rule), (false, Some(0)));
    let d = a.decide("docs.readme", Access::Read, &alice());
    assert_eq!((d.allowed, d.rule), (true, Some(1)));
}

#[test]
fn sub_rule_falls_through_for_other_users() {
    let a = acl(json!({"rules": [
        {"pattern": "users.{sub}.*", "read": ["{sub}"], "write": ["{sub}"]},
        {"pattern": "users.*", "read": ["role:admin"]},
    ]}));
    let admin = user("root", json!({"roles": ["admin"]}));
    assert!(a.can_read("users.alice.x", &admin));
    assert!(!a.can_write("users.alice.x", &admin));
    assert!(!a.can_read("users.alice.x", &bob()));
}

#[test]
fn unmatched_key_is_denied() {
    let a = owner_acl();
    let d = a.decide("other.key", Access::Read, &alice());
    assert_eq!((d.allowed, d.rule), (false, None));
    assert!(!a.can_write("other.key", &alice()));
}

#[test]
fn read_allowed_but_write_denied() {
    let a = owner_acl();
    assert!(a.can_read("public.news", &alice()));
    assert!(!a.can_write("public.news", &alice()));
    assert!(a.can_read("feed", &alice()));
    assert!(!a.can_write("feed", &alice()), "absent write list = nobody");
}

#[test]
fn odd_keys_do_not_panic() {
    let a = owner_acl();
    for key in [
        "",
        ".",
        "..",
        "users..",
        "users.alice.",
        ".users.alice.x",
        "users.{sub}.x",
    ] {
        let _ = a.can_read(key, &alice());
        let _ = a.can_write(key, &Identity::anonymous());
    }
    assert!(!a.can_read("users.{sub}.x", &alice()));
}

// ---- permissions ----

#[test]
fn sub_permission_means_any_authenticated_session() {
    let a = acl(json!({"rules": [{"pattern": "lobby", "read": ["{sub}"]}]}));
    assert!(a.can_read("lobby", &alice()));
    assert!(!a.can_read("lobby", &Identity::anonymous()));
}

#[test]
fn anonymous_matches_only_star() {
    let a = acl(json!({"rules": [
        {"pattern": "a", "read": ["*"], "write": ["{sub}", "role:x", "group:x", "perm:x", "sub:x"]},
    ]}));
    let anon = Identity::anonymous();
    assert!(a.can_read("a", &anon));
    assert!(!a.can_write("a", &anon));
}

#[test]
fn claim_value_permissions() {
    let a = acl(json!({"rules": [
        {"pattern": "tenants.acme.*", "read": ["tenant:acme"], "write": ["email_verified:true"]},
        {"pattern": "level", "read": ["level:3"]},
        {"pattern": "nested", "read": ["org.id:o1"]},
    ]}));
    let member = user(
        "m",
        json!({"tenant": "acme", "email_verified": true, "level": 3}),
    );
    let multi = user(
        "n",
        json!({"tenant": ["other", "acme"], "email_verified": false}),
    );
    let outsider = user("o", json!({"tenant": "globex"}));
    assert!(a.can_read("tenants.acme.x", &member));
    assert!(a.can_write("tenants.acme.x", &member));
    assert!(a.can_read("tenants.acme.x", &multi));
    assert!(!a.can_write("tenants.acme.x", &multi));
    assert!(!a.can_read("tenants.acme.x", &outsider));
    assert!(a.can_read("level", &member));
    assert!(a.can_read("nested", &user("p", json!({"org": {"id": "o1"}}))));
    assert!(!a.can_read("nested", &user("p", json!({"org": {"id": "o2"}}))));
}

#[test]
fn claim_names_with_colons() {
    let a = acl(json!({"rules": [
        {"pattern": "c", "read": ["cognito:groups:admins"]},
        {"pattern": "u", "read": ["https://example.com/tier:gold"]},
    ]}));
    assert!(a.can_read("c", &user("x", json!({"cognito:groups": ["admins"]}))));
    assert!(!a.can_read("c", &user("x", json!({"cognito:groups": ["users"]}))));
    assert!(a.can_read("u", &user("x", json!({"https://example.com/tier": "gold"}))));
}

#[test]
fn claim_sub_permission_names_one_user() {
    let a = acl(json!({"rules": [{"pattern": "ops", "write": ["sub:alice"]}]}));
    assert!(a.can_write("ops", &alice()));
    assert!(!a.can_write("ops", &bob()));
}

// ---- presets ----

#[test]
fn generic_preset_is_the_default() {
    let a = acl(json!({"rules": [
        {"pattern": "r", "read": ["role:admin"]},
        {"pattern": "g", "read": ["group:staff"]},
        {"pattern": "p", "read": ["perm:read:docs"]},
    ]}));
    let u = user(
        "u",
        json!({"roles": ["admin"], "groups": ["staff"], "permissions": ["read:docs"]}),
    );
    assert!(a.can_read("r", &u) && a.can_read("g", &u) && a.can_read("p", &u));
    assert!(!a.can_read("r", &alice()));
    assert!(!a.can_read("g", &alice()));
    assert!(!a.can_read("p", &alice()));
    // OAuth scope strings count as permission lists.
    assert!(a.can_read("p", &user("s", json!({"scope": "openid read:docs"}))));
}

#[test]
fn keycloak_preset() {
    let a = acl(json!({"preset": "keycloak", "rules": [
        {"pattern": "r", "read": ["role:admin"]},
        {"pattern": "g", "read": ["group:/staff"]},
    ]}));
    let u = user(
        "u",
        json!({"realm_access": {"roles": ["admin", "offline_access"]}, "groups": ["/staff"]}),
    );
    assert!(a.can_read("r", &u));
    assert!(a.can_read("g", &u));
    // A top-level `roles` claim is not where Keycloak puts realm roles.
    assert!(!a.can_read("r", &user("v", json!({"roles": ["admin"]}))));
    // Client roles are not realm roles unless mapped.
    let client_role = user(
        "w",
        json!({"resource_access": {"app": {"roles": ["admin"]}}}),
    );
    assert!(!a.can_read("r", &client_role));
}

#[test]
fn keycloak_client_roles_through_claim_mappings() {
    let a = acl(json!({"preset": "keycloak",
        "claim_mappings": {"roles": ["realm_access.roles", "resource_access.app.roles"]},
        "rules": [{"pattern": "r", "read": ["role:admin"]}]}));
    let client_role = user(
        "w",
        json!({"resource_access": {"app": {"roles": ["admin"]}}}),
    );
    assert!(a.can_read("r", &client_role));
    let other_client = user(
        "w",
        json!({"resource_access": {"other": {"roles": ["admin"]}}}),
    );
    assert!(!a.can_read("r", &other_client));
    let any = acl(json!({"preset": "keycloak",
        "claim_mappings": {"roles": "resource_access.*.roles"},
        "rules": [{"pattern": "r", "read": ["role:admin"]}]}));
    assert!(any.can_read("r", &other_client));
}

#[test]
fn auth0_preset_with_namespace() {
    let a = acl(
        json!({"preset": "auth0", "namespace": "https://sodp.example.com/", "rules": [
            {"pattern": "r", "read": ["role:admin"]},
            {"pattern": "g", "read": ["group:staff"]},
            {"pattern": "p", "read": ["perm:write:state"]},
        ]}),
    );
    let u = user(
        "auth0|123",
        json!({
            "https://sodp.example.com/roles": ["admin"],
            "https://sodp.example.com/groups": ["staff"],
            "permissions": ["write:state"],
        }),
    );
    assert!(a.can_read("r", &u) && a.can_read("g", &u) && a.can_read("p", &u));
    // Un-namespaced roles do not count once a namespace is configured.
    assert!(!a.can_read("r", &user("x", json!({"roles": ["admin"]}))));
    assert_eq!(
        a.mappings().roles,
        vec!["https://sodp.example.com/roles".to_string()]
    );
}

#[test]
fn auth0_preset_without_namespace() {
    let a = acl(json!({"preset": "auth0", "rules": [{"pattern": "r", "read": ["role:admin"]}]}));
    assert!(a.can_read("r", &user("x", json!({"roles": ["admin"]}))));
}

#[test]
fn okta_preset() {
    let a = acl(json!({"preset": "okta", "rules": [
        {"pattern": "g", "read": ["group:Everyone"]},
        {"pattern": "p", "read": ["perm:sodp.write"]},
    ]}));
    let u = user(
        "00u1",
        json!({"groups": ["Everyone"], "scp": ["openid", "sodp.write"]}),
    );
    assert!(a.can_read("g", &u));
    assert!(a.can_read("p", &u));
    assert!(!a.can_read("g", &user("00u2", json!({"groups": ["Other"]}))));
}

#[test]
fn cognito_preset() {
    let a = acl(json!({"preset": "cognito", "rules": [
        {"pattern": "g", "read": ["group:admins"]},
        {"pattern": "p", "read": ["perm:sodp/write"]},
    ]}));
    let u = user(
        "uuid",
        json!({"cognito:groups": ["admins"], "scope": "aws.cognito.signin.user.admin sodp/write"}),
    );
    assert!(a.can_read("g", &u));
    assert!(a.can_read("p", &u));
    assert!(!a.can_read("g", &user("v", json!({"groups": ["admins"]}))));
}

#[test]
fn claim_mappings_override_the_preset() {
    let a = acl(
        json!({"preset": "okta", "claim_mappings": {"groups": "teams"},
        "rules": [{"pattern": "g", "read": ["group:red"]}]}),
    );
    assert!(a.can_read("g", &user("x", json!({"teams": ["red"]}))));
    assert!(!a.can_read("g", &user("x", json!({"groups": ["red"]}))));
}

#[test]
fn role_strings_are_not_split_but_permission_strings_are() {
    let a = acl(json!({"rules": [
        {"pattern": "r", "read": ["role:admin"]},
        {"pattern": "p", "read": ["perm:admin"]},
    ]}));
    let u = user(
        "x",
        json!({"roles": "super admin", "permissions": "super admin"}),
    );
    assert!(!a.can_read("r", &u));
    assert!(a.can_read("p", &u));
    assert!(a.can_read("r", &user("y", json!({"roles": "admin"}))));
}

// ---- the reference's string form ----

#[test]
fn reference_string_form() {
    // A file written the way the published reference format writes it: every
    // permission one string (`"read": "*"`, `"write": "role:admin"`).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference_acl.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let doc: Value = serde_json::from_str(&text).expect("json");
    for rule in doc["rules"].as_array().expect("rules") {
        for field in ["read", "write"] {
            assert!(
                rule.get(field).is_none_or(Value::is_string),
                "the fixture must use only the one-string form: {rule}"
            );
        }
    }
    let a = Acl::load(path).expect("the reference's form loads");
    assert_eq!(a.len(), 5);
    let admin = user("root", json!({"roles": ["admin"]}));
    let anon = Identity::anonymous();

    assert!(a.can_read("public.news", &anon));
    assert!(!a.can_write("public.news", &alice()));
    assert!(a.can_write("public.news", &admin));

    assert!(a.can_read("users.alice.profile", &alice()));
    assert!(a.can_write("users.alice.profile", &alice()));
    assert!(!a.can_read("users.alice.profile", &bob()));
    assert!(!a.can_read("users.alice.profile", &anon));

    assert!(a.can_read("admin.panel", &admin));
    assert!(!a.can_read("admin.panel", &alice()));

    let member = user(
        "m",
        json!({"tenant": "acme", "permissions": ["write:acme"]}),
    );
    assert!(a.can_read("tenants.acme.x", &member));
    assert!(a.can_write("tenants.acme.x", &member));
    assert!(!a.can_write("tenants.acme.x", &user("o", json!({"tenant": "acme"}))));

    // The catch-all: admins read anything, nobody writes it.
    assert!(a.can_read("misc", &admin));
    assert!(!a.can_read("misc", &alice()));
    assert!(!a.can_write("misc", &admin));
    assert_eq!(
        a.decide("misc", Access::Read, &admin).rule,
        Some(4),
        "rule order kept"
    );
}

#[test]
fn string_and_list_forms_mean_the_same() {
    let one = acl(json!({"rules": [{"pattern": "k", "read": "*", "write": "role:admin"}]}));
    let list = acl(json!({"rules": [{"pattern": "k", "read": ["*"], "write": ["role:admin"]}]}));
    let admin = user("root", json!({"roles": ["admin"]}));
    for who in [Identity::anonymous(), alice(), admin] {
        for access in [Access::Read, Access::Write] {
            assert_eq!(
                one.decide("k", access, &who),
                list.decide("k", access, &who),
                "{access:?} {who:?}"
            );
        }
    }
    assert!(one.can_read("k", &Identity::anonymous()));
    assert!(!one.can_write("k", &alice()));
    // Both forms in one file, and an empty list still means nobody.
    let mixed = acl(json!({"rules": [
        {"pattern": "a", "read": "{sub}", "write": ["{sub}", "role:admin"]},
        {"pattern": "b", "read": [], "write": "*"},
    ]}));
    assert!(mixed.can_read("a", &alice()));
    assert!(!mixed.can_read("a", &Identity::anonymous()));
    assert!(!mixed.can_read("b", &alice()));
    assert!(mixed.can_write("b", &Identity::anonymous()));
}

// ---- loading ----

fn load_error(v: &str) -> String {
    match Acl::from_json_str(v) {
        Ok(_) => panic!("expected an error for {v}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_files_name_the_problem() {
    // Each needle is "location: problem" (or the part of the problem that
    // names what is wrong).
    let cases: &[(&str, &str)] = &[
        ("not json", "JSON: expected ident at line 1 column 2"),
        (
            "[]",
            "top level: invalid type: sequence, expected a JSON object",
        ),
        ("{}", "top level: missing field `rules`"),
        (r#"{"rules": []}"#, "rules: empty"),
        (
            r#"{"rules": {}}"#,
            "rules: invalid type: map, expected an array of rules",
        ),
        (
            r#"{"rules": ["x"]}"#,
            "rules[0]: invalid type: string \"x\", expected an object",
        ),
        (
            r#"{"rules": [["a", "*"]]}"#,
            "rules[0]: invalid type: sequence, expected an object",
        ),
        (
            r#"{"rules": [{"read": ["*"]}]}"#,
            "rules[0]: missing field `pattern`",
        ),
        (
            r#"{"rules": [{"pattern": 5}]}"#,
            "rules[0].pattern: invalid type: integer `5`",
        ),
        (
            r#"{"rules": [{"pattern": null}]}"#,
            "rules[0].pattern: invalid type: null",
        ),
        (
            r#"{"rules": [{"pattern": ""}]}"#,
            "rules[0].pattern: empty pattern",
        ),
        (
            r#"{"rules": [{"pattern": "a..b"}]}"#,
            "rules[0].pattern: \"a..b\": empty segment",
        ),
        (
            r#"{"rules": [{"pattern": "a.*.b"}]}"#,
            "rules[0].pattern: \"a.*.b\": `*` is only allowed as the last segment",
        ),
        (
            r#"{"rules": [{"pattern": "a.{user}"}]}"#,
            "rules[0].pattern: \"a.{user}\": segment \"{user}\"",
        ),
        (
            r#"{"rules": [{"pattern": "a.b c"}]}"#,
            "rules[0].pattern: \"a.b c\": segment \"b c\"",
        ),
        (
            r#"{"rules": [{"pattern": "a.x*"}]}"#,
            "rules[0].pattern: \"a.x*\": segment \"x*\"",
        ),
        // `"read": "*"` (one string) is valid: see `reference_string_form`.
        (
            r#"{"rules": [{"pattern": "a", "read": 5}]}"#,
            "rules[0].read: invalid type: integer `5`, expected a string or a list of strings",
        ),
        (
            r#"{"rules": [{"pattern": "a", "write": {"role": "admin"}}]}"#,
            "rules[0].write: invalid type: map, expected a string or a list of strings",
        ),
        (
            r#"{"rules": [{"pattern": "a", "write": null}]}"#,
            "rules[0].write: invalid type: null, expected a string or a list of strings",
        ),
        (
            r#"{"rules": [{"pattern": "a", "read": [1]}]}"#,
            "rules[0].read[0]: invalid type: integer `1`, expected a permission string",
        ),
        (
            r#"{"rules": [{"pattern": "a", "read": [["*"]]}]}"#,
            "rules[0].read[0]: invalid type: sequence, expected a permission string",
        ),
        (
            r#"{"rules": [{"pattern": "a", "read": ["admin"]}]}"#,
            "rules[0].read[0]: \"admin\": expected `*`, `{sub}`",
        ),
        (
            r#"{"rules": [{"pattern": "a", "read": "admin"}]}"#,
            "rules[0].read: \"admin\": expected `*`, `{sub}`",
        ),
        (
            r#"{"rules": [{"pattern": "a", "write": ["role:"]}]}"#,
            "rules[0].write[0]: \"role:\": empty name after \"role:\"",
        ),
        (
            r#"{"rules": [{"pattern": "a", "write": "role:"}]}"#,
            "rules[0].write: \"role:\": empty name after \"role:\"",
        ),
        (
            r#"{"rules": [{"pattern": "a", "write": [":x"]}]}"#,
            "rules[0].write[0]: \":x\": expected",
        ),
        (
            r#"{"rules": [{"pattern": "a", "wirte": ["*"]}]}"#,
            "rules[0].wirte: unknown field `wirte`, expected one of `pattern`, `read`, `write`",
        ),
        (
            r#"{"rules": [{"pattern": "a"}], "extra": 1}"#,
            "extra: unknown field `extra`",
        ),
        (
            r#"{"preset": "azure", "rules": [{"pattern": "a"}]}"#,
            "preset: unknown preset \"azure\"",
        ),
        (
            r#"{"preset": 1, "rules": [{"pattern": "a"}]}"#,
            "preset: invalid type: integer `1`, expected a preset name",
        ),
        (
            r#"{"preset": null, "rules": [{"pattern": "a"}]}"#,
            "preset: invalid type: null",
        ),
        (
            r#"{"preset": "okta", "namespace": "x", "rules": [{"pattern": "a"}]}"#,
            "namespace: only used by the auth0 preset",
        ),
        (
            r#"{"preset": "auth0", "namespace": "", "rules": [{"pattern": "a"}]}"#,
            "namespace: expected a non-empty string",
        ),
        (
            r#"{"preset": "auth0", "namespace": 7, "rules": [{"pattern": "a"}]}"#,
            "namespace: invalid type: integer `7`",
        ),
        (
            r#"{"claim_mappings": [], "rules": [{"pattern": "a"}]}"#,
            "claim_mappings: invalid type: sequence, expected an object",
        ),
        (
            r#"{"claim_mappings": {"role": "x"}, "rules": [{"pattern": "a"}]}"#,
            "claim_mappings.role: unknown field `role`",
        ),
        (
            r#"{"claim_mappings": {"roles": ""}, "rules": [{"pattern": "a"}]}"#,
            "claim_mappings.roles: empty claim path",
        ),
        (
            r#"{"claim_mappings": {"roles": [1]}, "rules": [{"pattern": "a"}]}"#,
            "claim_mappings.roles[0]: invalid type: integer `1`, expected a claim path",
        ),
        (
            r#"{"claim_mappings": {"roles": 1}, "rules": [{"pattern": "a"}]}"#,
            "claim_mappings.roles: invalid type: integer `1`, expected a claim path or a list",
        ),
        ("\"\\ud800\"", "JSON: "),
    ];

    for (text, needle) in cases {
        let msg = load_error(text);
        assert!(msg.contains(needle), "{text}: {msg:?} lacks {needle:?}");
        assert!(msg.starts_with("ACL file <inline>: "), "{msg}");
    }
}

#[test]
fn error_names_the_rule_index_and_field() {
    // The shape of message the issue asks for: file, rule index, field, problem.
    let msg = load_error(
        r#"{"rules": [{"pattern": "a"}, {"pattern": "b"}, {"pattern": "c"},
                      {"pattern": "d", "write": 42}]}"#,
    );
    assert_eq!(
        msg,
        "ACL file <inline>: rules[3].write: invalid type: integer `42`, \
         expected a string or a list of strings"
    );
}

#[test]
fn invalid_utf8_is_a_located_json_error() {
    let err = Acl::from_json_slice(b"{\"rules\": [{\"pattern\": \"a\xff\"}]}").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, AclError::Invalid { .. }), "{msg}");
    assert!(
        msg.contains("JSON: invalid unicode code point at line 1"),
        "{msg}"
    );
    let ok = Acl::from_json_slice(br#"{"rules": [{"pattern": "a", "read": "*"}]}"#).expect("valid");
    assert!(ok.can_read("a", &Identity::anonymous()));
}

#[test]
fn error_names_the_rule_index() {
    let msg = load_error(
        r#"{"rules": [{"pattern": "ok", "read": ["*"]}, {"pattern": "ok2"}, {"pattern": "bad.*.x"}]}"#,
    );
    assert!(msg.contains("rules[2].pattern"), "{msg}");
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sodp-auth-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let good = temp_file(
        "good.json",
        r#"{"rules": [{"pattern": "a", "read": ["*"]}]}"#,
    );
    let a = Acl::load(&good).expect("loads");
    assert_eq!(a.len(), 1);
    assert!(!a.is_empty());

    let bad = temp_file("bad.json", r#"{"rules": [{"pattern": "a.*.b"}]}"#);
    let msg = Acl::load(&bad).unwrap_err().to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains("rules[0]"), "{msg}");

    let missing = good.with_file_name("missing.json");
    let err = Acl::load(&missing).unwrap_err();
    assert!(matches!(err, AclError::Io { .. }));
    assert!(err.to_string().contains("missing.json"));
}
