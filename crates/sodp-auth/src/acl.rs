//! Per-key access control: who may read (WATCH, RESUME) and write (every
//! mutating CALL) which state key.
//!
//! # File format (JSON)
//!
//! ```json
//! {
//!   "preset": "keycloak",
//!   "claim_mappings": { "groups": "groups" },
//!   "rules": [
//!     { "pattern": "users.{sub}.*",  "read": ["{sub}", "role:admin"], "write": ["{sub}"] },
//!     { "pattern": "public.*",       "read": ["*"],                   "write": ["role:editor"] },
//!     { "pattern": "tenants.acme.*", "read": ["tenant:acme"],         "write": ["perm:write:acme"] },
//!     { "pattern": "feed",           "read": "*",                     "write": "role:admin" }
//!   ]
//! }
//! ```
//!
//! - `rules` (required, non-empty): evaluated in order; the **first rule whose
//!   pattern matches the key decides**. A key no rule matches is denied.
//! - `pattern`: dot-separated segments, each a literal (`[A-Za-z0-9_-]+`),
//!   `{sub}` (exactly one segment, equal to the session's subject), or — as the
//!   last segment only — `*` (one or more further segments). `"*"` alone
//!   matches every key. A `{sub}` pattern does not match an anonymous session,
//!   nor another user's key: evaluation moves on to the next rule.
//! - `read` / `write`: one permission as a string (the reference format's
//!   form, `"read": "*"`) or a list of them (`"read": ["*"]`, the same rule);
//!   absent or `[]` = nobody. A permission grants access when it matches the
//!   session:
//!   - `*` — anyone, including anonymous sessions;
//!   - `{sub}` — any authenticated session (combine with a `{sub}` pattern to
//!     mean "the owner");
//!   - `role:X`, `group:X`, `perm:X` — X is among the roles / groups /
//!     permissions found at the claim paths of the preset or `claim_mappings`;
//!     permission claims that are strings are read as space-separated lists
//!     (the OAuth `scope` convention);
//!   - `CLAIM:VALUE` — the claim equals VALUE or is an array containing it.
//!     Claim names may themselves contain `:` (`cognito:groups:admins`): every
//!     split at a `:` is tried. `role:`, `group:` and `perm:` are reserved
//!     prefixes.
//! - `preset` (optional, default `generic`): where roles, groups and
//!   permissions live in the identity provider's tokens:
//!
//!   | preset   | roles                        | groups           | permissions         |
//!   |----------|------------------------------|------------------|---------------------|
//!   | generic  | `roles`                      | `groups`         | `permissions`, `scope` |
//!   | keycloak | `realm_access.roles`         | `groups`         | `scope`             |
//!   | auth0    | `<namespace>/roles`          | `<namespace>/groups` | `permissions`, `scope` |
//!   | okta     | `roles`                      | `groups`         | `scp`               |
//!   | cognito  | `cognito:roles`              | `cognito:groups` | `scope`             |
//!
//!   For auth0, `"namespace": "https://example.com"` names the namespace of the
//!   custom claims; without it, the plain `roles` and `groups` claims are used.
//! - `claim_mappings` (optional): `roles`, `groups`, `permissions`, each a claim
//!   path or a list of them, replacing the preset's. A claim path is tried as
//!   one literal claim name first, then as a dotted path; a `*` segment fans out
//!   over an object (`resource_access.*.roles`).
//!
//! Unknown fields anywhere are errors (a typo like `"wirte"` must not silently
//! deny or allow), and so is `null` for any field (leave the field out
//! instead). Errors name the file, the location and the problem:
//! `ACL file acl.json: rules[3].write: invalid type: integer `5`, expected a
//! string or a list of strings`.
//!
//! The file is read by serde-derived structs at the end of this file
//! (`deny_unknown_fields`); the private `tracked` module supplies the
//! locations.
//!
//! # Without authentication
//!
//! If an ACL is loaded but no JWT key is configured, every session is
//! [`Identity::anonymous`]: only `*` permissions match and `{sub}` patterns
//! never do.

use std::path::Path;

use serde::de::Deserializer;
use serde::Deserialize;
use serde_json::Value as Json;
use thiserror::Error;

use crate::identity::{claim_contains, Identity};
use crate::tracked;

/// A malformed or unreadable ACL file.
#[derive(Debug, Error)]
pub enum AclError {
    #[error("cannot read ACL file {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ACL file {file}: {location}: {problem}")]
    Invalid {
        file: String,
        /// Where: `JSON`, `top level`, `rules[3].pattern`, …
        location: String,
        problem: String,
    },
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The outcome of one check, with the rule that decided (for debug logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Index into the file's `rules`; `None` when no rule matched.
    pub rule: Option<usize>,
}

/// Identity-provider conventions for where roles, groups and permissions live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Generic,
    Keycloak,
    Auth0,
    Okta,
    Cognito,
}

impl Preset {
    fn parse(s: &str) -> Option<Preset> {
        Some(match s {
            "generic" => Preset::Generic,
            "keycloak" => Preset::Keycloak,
            "auth0" => Preset::Auth0,
            "okta" => Preset::Okta,
            "cognito" => Preset::Cognito,
            _ => return None,
        })
    }

    /// The preset's claim paths; `namespace` is used by auth0 only.
    pub fn mappings(self, namespace: Option<&str>) -> ClaimMappings {
        let v = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        match self {
            Preset::Generic => ClaimMappings {
                roles: v(&["roles"]),
                groups: v(&["groups"]),
                permissions: v(&["permissions", "scope"]),
            },
            Preset::Keycloak => ClaimMappings {
                roles: v(&["realm_access.roles"]),
                groups: v(&["groups"]),
                permissions: v(&["scope"]),
            },
            Preset::Auth0 => {
                let (roles, groups) = match namespace {
                    Some(ns) => {
                        let ns = ns.trim_end_matches('/');
                        (vec![format!("{ns}/roles")], vec![format!("{ns}/groups")])
                    }
                    None => (v(&["roles"]), v(&["groups"])),
                };
                ClaimMappings {
                    roles,
                    groups,
                    permissions: v(&["permissions", "scope"]),
                }
            }
            Preset::Okta => ClaimMappings {
                roles: v(&["roles"]),
                groups: v(&["groups"]),
                permissions: v(&["scp"]),
            },
            Preset::Cognito => ClaimMappings {
                roles: v(&["cognito:roles"]),
                groups: v(&["cognito:groups"]),
                permissions: v(&["scope"]),
            },
        }
    }
}

/// Claim paths where roles, groups and permissions are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMappings {
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub permissions: Vec<String>,
}

/// A loaded ACL. Immutable; share it behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Acl {
    rules: Vec<Rule>,
    mappings: ClaimMappings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object {pattern, read, write}")]
struct Rule {
    pattern: Pattern,
    #[serde(default, deserialize_with = "permissions")]
    read: Vec<Permission>,
    #[serde(default, deserialize_with = "permissions")]
    write: Vec<Permission>,
}

#[derive(Debug, Clone)]
struct Pattern {
    segments: Vec<Segment>,
    /// Ends in `*`: one or more further segments.
    tail: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Sub,
}

#[derive(Debug, Clone)]
enum Permission {
    Anyone,
    Subject,
    Role(String),
    Group(String),
    Perm(String),
    /// Every `(claim, value)` split of `CLAIM:VALUE` at a `:`.
    Claim(Vec<(String, String)>),
}

impl Acl {
    /// Loads and validates an ACL file.
    pub fn load(path: impl AsRef<Path>) -> Result<Acl, AclError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| AclError::Io {
            file: file.clone(),
            source,
        })?;
        Acl::parse(&bytes, &file)
    }

    /// Parses an ACL from JSON text (errors name the source as `<inline>`).
    pub fn from_json_str(text: &str) -> Result<Acl, AclError> {
        Acl::parse(text.as_bytes(), "<inline>")
    }

    /// Parses an ACL from the bytes of a file (errors name the source as
    /// `<inline>`); invalid UTF-8 is a `JSON` error with its position.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Acl, AclError> {
        Acl::parse(bytes, "<inline>")
    }

    fn parse(bytes: &[u8], file: &str) -> Result<Acl, AclError> {
        let invalid = |location: String, problem: String| AclError::Invalid {
            file: file.to_owned(),
            location,
            problem,
        };
        let json: Json =
            serde_json::from_slice(bytes).map_err(|e| invalid("JSON".into(), e.to_string()))?;
        let raw: AclFile = tracked::from_value(&json)
            .map_err(|e| invalid(tracked::dotted(e.path()), e.problem().to_owned()))?;
        raw.build()
            .map_err(|(location, problem)| invalid(location, problem))
    }

    /// The claim paths in force (preset, then overrides), for a start-up log.
    pub fn mappings(&self) -> &ClaimMappings {
        &self.mappings
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Always false: a loaded ACL has at least one rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// May `who` WATCH / RESUME `key`?
    pub fn can_read(&self, key: &str, who: &Identity) -> bool {
        self.decide(key, Access::Read, who).allowed
    }

    /// May `who` mutate `key` (set, patch, set_in, delete, presence)?
    pub fn can_write(&self, key: &str, who: &Identity) -> bool {
        self.decide(key, Access::Write, who).allowed
    }

    /// The first rule whose pattern matches `key` decides; no match = denied.
    pub fn decide(&self, key: &str, access: Access, who: &Identity) -> Decision {
        let segments: Vec<&str> = key.split('.').collect();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.pattern.matches(&segments, who.sub()) {
                continue;
            }
            let perms = match access {
                Access::Read => &rule.read,
                Access::Write => &rule.write,
            };
            let allowed = perms.iter().any(|p| self.grants(p, who));
            return Decision {
                allowed,
                rule: Some(i),
            };
        }
        Decision {
            allowed: false,
            rule: None,
        }
    }

    fn grants(&self, perm: &Permission, who: &Identity) -> bool {
        let any_at = |paths: &[String], wanted: &str, split_words: bool| {
            paths.iter().any(|p| {
                who.lookup(p)
                    .into_iter()
                    .any(|v| claim_contains(v, wanted, split_words))
            })
        };
        match perm {
            Permission::Anyone => true,
            Permission::Subject => !who.is_anonymous(),
            Permission::Role(r) => any_at(&self.mappings.roles, r, false),
            Permission::Group(g) => any_at(&self.mappings.groups, g, false),
            Permission::Perm(p) => any_at(&self.mappings.permissions, p, true),
            Permission::Claim(splits) => splits.iter().any(|(claim, value)| {
                who.lookup(claim)
                    .into_iter()
                    .any(|v| claim_contains(v, value, false))
            }),
        }
    }
}

impl Pattern {
    fn matches(&self, key: &[&str], sub: Option<&str>) -> bool {
        let n = self.segments.len();
        let len_ok = if self.tail {
            key.len() > n
        } else {
            key.len() == n
        };
        len_ok
            && self.segments.iter().zip(key).all(|(seg, k)| match seg {
                Segment::Literal(l) => l == k,
                Segment::Sub => sub == Some(*k),
            })
    }
}

// ---- the file, as serde reads it ----
//
// Shapes and unknown fields are the derived structs' business; errors are
// located by `crate::tracked`. What a derive cannot say (a preset name, a
// pattern's grammar, a permission's form) is checked by the `Deserialize`
// impls of those types, so it is located too. What spans fields (namespace
// only with auth0, a non-empty rule list) is checked in `AclFile::build`.

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object {preset, namespace, claim_mappings, rules}"
)]
struct AclFile {
    preset: Option<Preset>,
    namespace: Option<String>,
    claim_mappings: Option<MappingsFile>,
    #[serde(deserialize_with = "rules")]
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object {roles, groups, permissions}"
)]
struct MappingsFile {
    #[serde(default, deserialize_with = "claim_paths")]
    roles: Option<Vec<String>>,
    #[serde(default, deserialize_with = "claim_paths")]
    groups: Option<Vec<String>>,
    #[serde(default, deserialize_with = "claim_paths")]
    permissions: Option<Vec<String>>,
}

fn rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
    tracked::list_of(d, "an array of rules")
}

impl<'de> Deserialize<'de> for Preset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Preset, D::Error> {
        tracked::parsed_str(d, "a preset name", |s| {
            Preset::parse(s).ok_or_else(|| {
                format!("unknown preset {s:?} (expected keycloak, auth0, okta, cognito or generic)")
            })
        })
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        tracked::parsed_str(d, "a pattern string", parse_pattern)
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Permission, D::Error> {
        tracked::parsed_str(d, "a permission string", parse_permission)
    }
}

/// A claim path: a non-empty string.
struct ClaimPath(String);

impl<'de> Deserialize<'de> for ClaimPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ClaimPath, D::Error> {
        tracked::parsed_str(d, "a claim path (a non-empty string)", |s| {
            if s.is_empty() {
                Err("empty claim path".into())
            } else {
                Ok(ClaimPath(s.to_owned()))
            }
        })
    }
}

fn claim_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let paths: Vec<ClaimPath> = tracked::one_or_many(
        d,
        "a claim path or a list of claim paths (non-empty strings)",
    )?;
    Ok(Some(paths.into_iter().map(|p| p.0).collect()))
}

/// `read` / `write`: the spec's single string (`"read": "*"`) or a list.
fn permissions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Permission>, D::Error> {
    tracked::one_or_many(d, "a string or a list of strings")
}

impl AclFile {
    /// The checks that span fields. Errors are `(location, problem)`.
    fn build(self) -> Result<Acl, (String, String)> {
        let err = |location: &str, problem: &str| Err((location.to_owned(), problem.to_owned()));
        let preset = self.preset.unwrap_or(Preset::Generic);
        let namespace = match self.namespace.as_deref() {
            None => None,
            Some(_) if preset != Preset::Auth0 => {
                return err("namespace", "only used by the auth0 preset")
            }
            Some("") => return err("namespace", "expected a non-empty string"),
            Some(ns) => Some(ns),
        };
        let mut mappings = preset.mappings(namespace);
        if let Some(m) = self.claim_mappings {
            for (from, slot) in [
                (m.roles, &mut mappings.roles),
                (m.groups, &mut mappings.groups),
                (m.permissions, &mut mappings.permissions),
            ] {
                if let Some(paths) = from {
                    *slot = paths;
                }
            }
        }
        if self.rules.is_empty() {
            return err("rules", "empty: every key would be denied");
        }
        Ok(Acl {
            rules: self.rules,
            mappings,
        })
    }
}

fn parse_pattern(p: &str) -> Result<Pattern, String> {
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    let parts: Vec<&str> = p.split('.').collect();
    let mut segments = Vec::with_capacity(parts.len());
    let mut tail = false;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match *part {
            "" => return Err(format!("{p:?}: empty segment")),
            "*" if last => tail = true,
            "*" => return Err(format!("{p:?}: `*` is only allowed as the last segment")),
            "{sub}" => segments.push(Segment::Sub),
            lit if lit.bytes().all(is_key_byte) => segments.push(Segment::Literal(lit.into())),
            other => {
                return Err(format!(
                    "{p:?}: segment {other:?} must be `{{sub}}`, a trailing `*`, or letters, digits, `_` and `-`"
                ))
            }
        }
    }
    Ok(Pattern { segments, tail })
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn parse_permission(s: &str) -> Result<Permission, String> {
    let prefixed = |prefix: &str| s.strip_prefix(prefix);
    if s == "*" {
        return Ok(Permission::Anyone);
    }
    if s == "{sub}" {
        return Ok(Permission::Subject);
    }
    for (prefix, make) in [
        ("role:", Permission::Role as fn(String) -> Permission),
        ("group:", Permission::Group),
        ("perm:", Permission::Perm),
    ] {
        if let Some(name) = prefixed(prefix) {
            return if name.is_empty() {
                Err(format!("{s:?}: empty name after {prefix:?}"))
            } else {
                Ok(make(name.to_owned()))
            };
        }
    }
    let splits: Vec<(String, String)> = s
        .match_indices(':')
        .map(|(i, _)| (&s[..i], &s[i + 1..]))
        .filter(|(c, v)| !c.is_empty() && !v.is_empty())
        .map(|(c, v)| (c.to_owned(), v.to_owned()))
        .collect();
    if splits.is_empty() {
        return Err(format!(
            "{s:?}: expected `*`, `{{sub}}`, `role:X`, `group:X`, `perm:X` or `CLAIM:VALUE`"
        ));
    }
    Ok(Permission::Claim(splits))
}
