//! Hostile-input properties: no input makes any policy component panic.

use proptest::prelude::*;
use serde_json::json;
use sodp_auth::jwt::{JwtConfig, JwtVerifier};
use sodp_auth::{Acl, Identity, OriginPolicy, Schema};

fn verifier() -> JwtVerifier {
    JwtVerifier::new(&JwtConfig {
        hs256_secret: Some("secret".into()),
        rs256_public_key_pem: Some(include_str!("keys/rsa_public.pem").into()),
        es256_public_key_pem: Some(include_str!("keys/ec_public.pem").into()),
        ..JwtConfig::default()
    })
    .expect("config")
    .expect("enabled")
}

/// Strings shaped like tokens: three base64url-ish parts, sometimes JSON.
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,40}",
        (any::<String>(), any::<String>()).prop_map(|(h, p)| {
            use base64::Engine as _;
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("{}.{}.{}", e.encode(h), e.encode(p), e.encode("sig"))
        }),
        ("(HS|RS|ES|PS)[0-9]{3}|none", any::<u64>()).prop_map(|(alg, exp)| {
            use base64::Engine as _;
            let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!(
                "{}.{}.{}",
                e.encode(json!({"alg": alg}).to_string()),
                e.encode(json!({"sub": "x", "exp": exp}).to_string()),
                e.encode([0u8; 64])
            )
        }),
    ]
}

/// A correctly signed HS256 token (secret "secret") with `exp` / `nbf`.
fn signed(exp: serde_json::Value, nbf: Option<serde_json::Value>) -> String {
    let mut claims = json!({"sub": "x", "exp": exp});
    if let Some(nbf) = nbf {
        claims["nbf"] = nbf;
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .expect("sign")
}

/// Any JSON number a NumericDate might be.
fn numeric_date() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(u64::MAX)),
        Just(json!(10_000_000_000_000_000_000u64)),
    ]
}

proptest! {
    /// Validly signed tokens with any dates, at any time: verification and
    /// every expiry computation on the claims are total (no overflow panic).
    #[test]
    fn claims_arithmetic_never_panics(
        exp in numeric_date(),
        nbf in proptest::option::of(numeric_date()),
        now in any::<u64>(),
        nanos in 0u32..1_000_000_000,
        leeway in 0u64..=300,
    ) {
        let v = JwtVerifier::new(&JwtConfig {
            hs256_secret: Some("secret".into()),
            leeway_secs: leeway,
            ..JwtConfig::default()
        })
        .expect("config")
        .expect("enabled");
        let token = signed(exp, nbf);
        if let Ok(c) = v.verify_at(&token, now) {
            prop_assert!(!c.is_expired_at(now));
            prop_assert!(c.expires_in(now) > std::time::Duration::ZERO);
            let _ = c.expires_in_precise(std::time::Duration::new(now, nanos));
            let _ = c.expires_in(0);
            let _ = c.is_expired_at(u64::MAX);
        }
        let _ = v.verify_refresh_at(&token, "x", now);
    }

    #[test]
    fn verifier_never_panics(token in token_like(), now in any::<u64>()) {
        let _ = verifier().verify_at(&token, now);
    }

    #[test]
    fn origin_policy_never_panics(list in any::<String>(), header in any::<String>()) {
        if let Ok(p) = OriginPolicy::parse(&list) {
            let _ = p.allows(Some(&header));
        }
        let fixed = OriginPolicy::parse("https://a.example, https://*.b.example").expect("list");
        let _ = fixed.allows(Some(&header));
    }

    #[test]
    fn acl_never_panics(text in any::<String>(), key in "[a-z{}*.]{0,20}", sub in any::<String>()) {
        let _ = Acl::from_json_str(&text);
        let acl = Acl::from_json_str(
            r#"{"rules": [{"pattern": "users.{sub}.*", "read": ["{sub}"]},
                          {"pattern": "*", "read": ["a:b:c", "role:x", "perm:y"]}]}"#,
        ).expect("acl");
        let who = Identity::new(sub, json!({"a": {"b": ["c"]}, "roles": "x"}));
        let _ = acl.can_read(&key, &who);
        let _ = acl.can_write(&key, &Identity::anonymous());
    }

    #[test]
    fn schema_never_panics(text in any::<String>(), key in "[a-z.*]{0,12}") {
        let _ = Schema::from_json_str(&text);
        let s = Schema::from_json_str(
            r#"{"*": {"type": "Object", "fields": {"a": {"type": "Array", "items": "Int"}}}}"#,
        ).expect("schema");
        let _ = s.validate(&key, &sodp_proto::Value::from(json!({"a": [1, "x"]})));
    }
}
