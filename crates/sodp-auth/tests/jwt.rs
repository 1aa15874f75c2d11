//! The JWT attack matrix at the verifier level: every token a stranger might
//! send, against every key configuration.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::Duration;

use sodp_auth::jwt::{AuthError, Claims, ConfigError, JwtConfig, JwtVerifier, MAX_TOKEN_BYTES};

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "test-secret-of-reasonable-length-0123456789";

const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const RSA_OTHER_PRIVATE: &str = include_str!("keys/rsa_other_private.pem");
const EC_PRIVATE: &str = include_str!("keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_public.pem");
const EC384_PRIVATE: &str = include_str!("keys/ec384_private.pem");
const EC384_PUBLIC: &str = include_str!("keys/ec384_public.pem");

fn hs_config() -> JwtConfig {
    JwtConfig {
        hs256_secret: Some(SECRET.into()),
        ..JwtConfig::default()
    }
}

fn rs_config() -> JwtConfig {
    JwtConfig {
        rs256_public_key_pem: Some(RSA_PUBLIC.into()),
        ..JwtConfig::default()
    }
}

fn es_config() -> JwtConfig {
    JwtConfig {
        es256_public_key_pem: Some(EC_PUBLIC.into()),
        ..JwtConfig::default()
    }
}

fn all_config() -> JwtConfig {
    JwtConfig {
        hs256_secret: Some(SECRET.into()),
        rs256_public_key_pem: Some(RSA_PUBLIC.into()),
        es256_public_key_pem: Some(EC_PUBLIC.into()),
        ..JwtConfig::default()
    }
}

fn verifier(config: JwtConfig) -> JwtVerifier {
    JwtVerifier::new(&config)
        .expect("valid config")
        .expect("a key is configured")
}

fn claims() -> Value {
    json!({"sub": "alice", "exp": NOW + 60, "roles": ["admin"]})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("sign")
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa key");
    sign(Algorithm::RS256, &key, claims)
}

fn es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("ec key");
    sign(Algorithm::ES256, &key, claims)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A token with an arbitrary header and signature, no crypto.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{}", b64(header), b64(claims), signature)
}

/// Verifies and checks the error never echoes the token or its parts.
fn reject(v: &JwtVerifier, token: &str) -> AuthError {
    let err = v.verify_at(token, NOW).expect_err("token must be refused");
    let msg = err.to_string();
    if !token.is_empty() {
        assert!(!msg.contains(token), "error {msg:?} leaks the token");
    }
    for part in token.split('.').filter(|p| p.len() >= 8) {
        assert!(!msg.contains(part), "error {msg:?} leaks a token part");
    }
    err
}

// ---- valid tokens ----

#[test]
fn valid_hs256() {
    let c = verifier(hs_config())
        .verify_at(&hs256(&claims()), NOW)
        .expect("valid");
    assert_eq!(c.sub, "alice");
    assert_eq!(c.exp, NOW + 60);
    assert_eq!(c.nbf, None);
    assert_eq!(c.raw["roles"], json!(["admin"]));
}

#[test]
fn valid_rs256() {
    let c = verifier(rs_config())
        .verify_at(&rs256(&claims()), NOW)
        .expect("valid");
    assert_eq!(c.sub, "alice");
}

#[test]
fn valid_es256() {
    let c = verifier(es_config())
        .verify_at(&es256(&claims()), NOW)
        .expect("valid");
    assert_eq!(c.sub, "alice");
}

#[test]
fn several_keys_each_accept_their_own_algorithm() {
    let v = verifier(all_config());
    assert_eq!(v.algorithms(), ["HS256", "RS256", "ES256"]);
    for token in [hs256(&claims()), rs256(&claims()), es256(&claims())] {
        assert_eq!(v.verify_at(&token, NOW).expect("valid").sub, "alice");
    }
}

#[test]
fn verify_uses_the_system_clock() {
    // Dates no plausible system clock is near: 1970 and the year ~2^42. The
    // answers do not depend on when the test runs.
    let v = verifier(hs_config());
    let far = 1u64 << 50;
    assert!(v.verify(&hs256(&json!({"sub": "a", "exp": far}))).is_ok());
    assert_eq!(
        v.verify(&hs256(&json!({"sub": "a", "exp": 1}))),
        Err(AuthError::Expired)
    );
    assert_eq!(
        v.verify(&hs256(&json!({"sub": "a", "exp": far, "nbf": far - 1}))),
        Err(AuthError::NotYetValid)
    );
    assert_eq!(
        v.verify_refresh(&hs256(&json!({"sub": "a", "exp": 1})), "a"),
        Err(AuthError::Expired)
    );
    assert!(v
        .verify_refresh(&hs256(&json!({"sub": "a", "exp": far})), "a")
        .is_ok());
}

#[test]
fn verify_at_judges_time_only_by_now_unix() {
    // If the system clock (years past these dates) were consulted anywhere,
    // the first token would be expired and the last one valid.
    let v = verifier(JwtConfig {
        leeway_secs: 5,
        ..hs_config()
    });
    let early = hs256(&json!({"sub": "a", "exp": 100, "nbf": 50}));
    assert_eq!(v.verify_at(&early, 0), Err(AuthError::NotYetValid));
    assert_eq!(v.verify_at(&early, 44), Err(AuthError::NotYetValid));
    assert!(v.verify_at(&early, 45).is_ok(), "nbf - leeway");
    assert!(v.verify_at(&early, 104).is_ok(), "exp + leeway - 1");
    assert_eq!(v.verify_at(&early, 105), Err(AuthError::Expired));
    assert!(v.verify_refresh_at(&early, "a", 60).is_ok());
    assert_eq!(
        v.verify_refresh_at(&early, "a", 200),
        Err(AuthError::Expired)
    );
    // A token valid by the wall clock is refused at a later injected time.
    let now_ish = hs256(&json!({"sub": "a", "exp": 4_000_000_000u64}));
    assert_eq!(
        v.verify_at(&now_ish, u64::MAX),
        Err(AuthError::Expired),
        "now_unix at the end of time"
    );
    assert!(v.verify_at(&now_ish, 3_999_999_999).is_ok());
}

// ---- time ----

#[test]
fn expired_token_is_refused() {
    let v = verifier(hs_config());
    let t = hs256(&json!({"sub": "alice", "exp": NOW - 1}));
    assert_eq!(reject(&v, &t), AuthError::Expired);
}

#[test]
fn expiry_boundary_is_exclusive() {
    let v = verifier(hs_config());
    let at_now = hs256(&json!({"sub": "alice", "exp": NOW}));
    assert_eq!(reject(&v, &at_now), AuthError::Expired);
    let next = hs256(&json!({"sub": "alice", "exp": NOW + 1}));
    assert!(v.verify_at(&next, NOW).is_ok());
}

#[test]
fn nbf_in_the_future_is_refused() {
    let v = verifier(hs_config());
    let t = hs256(&json!({"sub": "alice", "exp": NOW + 60, "nbf": NOW + 10}));
    assert_eq!(reject(&v, &t), AuthError::NotYetValid);
    let ok = hs256(&json!({"sub": "alice", "exp": NOW + 60, "nbf": NOW}));
    assert_eq!(v.verify_at(&ok, NOW).expect("nbf == now").nbf, Some(NOW));
}

#[test]
fn leeway_applies_to_exp_nbf_and_live_expiry() {
    let v = verifier(JwtConfig {
        leeway_secs: 10,
        ..hs_config()
    });
    let late = hs256(&json!({"sub": "alice", "exp": NOW - 5}));
    let c = v.verify_at(&late, NOW).expect("within leeway");
    assert_eq!(c.expires_in(NOW).as_secs(), 5);
    let early = hs256(&json!({"sub": "alice", "exp": NOW + 60, "nbf": NOW + 5}));
    assert!(v.verify_at(&early, NOW).is_ok());
    let too_late = hs256(&json!({"sub": "alice", "exp": NOW - 10}));
    assert_eq!(reject(&v, &too_late), AuthError::Expired);
}

#[test]
fn zero_leeway_by_default() {
    assert_eq!(JwtConfig::default().leeway_secs, 0);
}

#[test]
fn fractional_dates_round_towards_less_valid() {
    let v = verifier(hs_config());
    let t = hs256(&json!({"sub": "a", "exp": (NOW + 1) as f64 + 0.9, "nbf": NOW as f64 - 0.5}));
    let c = v.verify_at(&t, NOW).expect("valid");
    assert_eq!((c.exp, c.nbf), (NOW + 1, Some(NOW)));
    let t = hs256(&json!({"sub": "a", "exp": NOW + 60, "nbf": NOW as f64 + 0.1}));
    assert_eq!(reject(&v, &t), AuthError::NotYetValid);
}

#[test]
fn expires_in_drives_live_expiry() {
    let c = verifier(hs_config())
        .verify_at(&hs256(&json!({"sub": "a", "exp": NOW + 2})), NOW)
        .expect("valid");
    assert_eq!(c.expires_at(), NOW + 2);
    assert_eq!(c.expires_in(NOW).as_secs(), 2);
    assert_eq!(c.expires_in(NOW + 5).as_secs(), 0);
    assert!(!c.is_expired_at(NOW + 1));
    assert!(c.is_expired_at(NOW + 2));
}

#[test]
fn huge_exp_is_valid_and_its_expiry_saturates() {
    // 10^19 s is past `SystemTime`'s and `Instant`'s range: the old
    // real-clock expiry (`UNIX_EPOCH + exp`) panicked on it.
    let v = verifier(JwtConfig {
        leeway_secs: 300,
        ..hs_config()
    });
    let huge = 10_000_000_000_000_000_000u64;
    let c = v
        .verify_at(&hs256(&json!({"sub": "a", "exp": huge})), NOW)
        .expect("a far-future exp is valid");
    assert_eq!(c.exp, huge);
    assert_eq!(c.expires_at(), huge + 300);
    assert_eq!(c.expires_in(NOW), Duration::from_secs(huge + 300 - NOW));
    assert_eq!(
        c.expires_in_precise(Duration::new(NOW, 250_000_000)),
        Duration::new(huge + 300 - NOW - 1, 750_000_000)
    );
    assert!(!c.is_expired_at(NOW));
    assert!(!c.is_expired_at(huge + 299));
    assert!(c.is_expired_at(huge + 300));

    // u64::MAX: exp + leeway saturates instead of wrapping to the past.
    let c = v
        .verify_at(&hs256(&json!({"sub": "a", "exp": u64::MAX})), NOW)
        .expect("exp = u64::MAX is valid");
    assert_eq!(c.exp, u64::MAX);
    assert_eq!(c.expires_at(), u64::MAX);
    assert_eq!(c.expires_in(NOW), Duration::from_secs(u64::MAX - NOW));
    assert_eq!(
        c.expires_in_precise(Duration::ZERO),
        Duration::from_secs(u64::MAX)
    );
    assert!(!c.is_expired_at(u64::MAX - 1));
    assert_eq!(
        v.verify_at(&hs256(&json!({"sub": "a", "exp": u64::MAX})), u64::MAX),
        Err(AuthError::Expired)
    );

    // A float just below 2^64 is a date; 2^64 and beyond are not.
    let c = v
        .verify_at(&hs256(&json!({"sub": "a", "exp": 1.8e19})), NOW)
        .expect("1.8e19 is below 2^64");
    assert_eq!(c.exp, 18_000_000_000_000_000_000);
    for bad in [
        json!(1.8446744073709552e19),
        json!(1e300),
        json!(-1),
        json!(-0.5),
    ] {
        assert_eq!(
            v.verify_at(&hs256(&json!({"sub": "a", "exp": bad})), NOW),
            Err(AuthError::InvalidClaim("exp")),
            "exp {bad}"
        );
        assert_eq!(
            v.verify_at(
                &hs256(&json!({"sub": "a", "exp": NOW + 60, "nbf": bad})),
                NOW
            ),
            Err(AuthError::InvalidClaim("nbf")),
            "nbf {bad}"
        );
    }
    // nbf near u64::MAX: nbf - leeway never underflows into "valid".
    let t = hs256(&json!({"sub": "a", "exp": u64::MAX, "nbf": u64::MAX}));
    assert_eq!(v.verify_at(&t, NOW), Err(AuthError::NotYetValid));
    assert!(v.verify_at(&t, u64::MAX - 300).is_ok());
}

#[test]
fn expires_in_precise_keeps_sub_second_precision() {
    let c = verifier(hs_config())
        .verify_at(&hs256(&json!({"sub": "a", "exp": NOW + 2})), NOW)
        .expect("valid");
    assert_eq!(
        c.expires_in_precise(Duration::new(NOW, 600_000_000)),
        Duration::from_millis(1_400)
    );
    assert_eq!(
        c.expires_in_precise(Duration::new(NOW + 2, 1)),
        Duration::ZERO
    );
    assert_eq!(c.expires_in_precise(Duration::MAX), Duration::ZERO);
}

#[test]
fn claims_built_by_hand_never_overflow() {
    // Claims has public fields: any values a caller builds must be safe too.
    let c = Claims {
        sub: "a".into(),
        exp: u64::MAX,
        nbf: Some(u64::MAX),
        leeway_secs: u64::MAX,
        raw: json!({}),
    };
    assert_eq!(c.expires_at(), u64::MAX);
    assert_eq!(c.expires_in(0), Duration::from_secs(u64::MAX));
    assert_eq!(c.expires_in(u64::MAX), Duration::ZERO);
    assert_eq!(c.expires_in_precise(Duration::MAX), Duration::ZERO);
    assert!(!c.is_expired_at(0));
    assert!(c.is_expired_at(u64::MAX));
}

// ---- signatures ----

#[test]
fn bad_signature_is_refused() {
    let v = verifier(hs_config());
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret"),
        &claims(),
    );
    assert_eq!(reject(&v, &other), AuthError::BadSignature);

    // A valid token with its payload swapped for a more generous one.
    let good = hs256(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(&json!({"sub": "admin", "exp": NOW + 60}));
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(reject(&v, &forged), AuthError::BadSignature);

    // Signature stripped.
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(reject(&v, &stripped), AuthError::BadSignature);
}

#[test]
fn rs256_signed_by_another_key_is_refused() {
    let key = EncodingKey::from_rsa_pem(RSA_OTHER_PRIVATE.as_bytes()).expect("rsa key");
    let t = sign(Algorithm::RS256, &key, &claims());
    assert_eq!(reject(&verifier(rs_config()), &t), AuthError::BadSignature);
}

#[test]
fn es256_tampered_signature_is_refused() {
    let good = es256(&claims());
    let (head, sig) = good.rsplit_once('.').expect("three parts");
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).expect("b64");
    bytes[10] ^= 1;
    let t = format!("{head}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert_eq!(reject(&verifier(es_config()), &t), AuthError::BadSignature);
}

#[test]
fn header_naming_the_wrong_family_for_a_signature_is_refused() {
    // An ES256 signature presented as RS256 (and vice versa) with both keys on.
    let v = verifier(all_config());
    let es = es256(&claims());
    let (_, rest) = es.split_once('.').expect("parts");
    let as_rs = format!("{}.{rest}", b64(&json!({"alg": "RS256", "typ": "JWT"})));
    assert_eq!(reject(&v, &as_rs), AuthError::BadSignature);
}

// ---- algorithm attacks ----

#[test]
fn alg_none_is_refused() {
    for config in [hs_config(), rs_config(), es_config(), all_config()] {
        let v = verifier(config);
        for alg in ["none", "None", "NONE", "nOnE"] {
            for sig in ["", "AAAA"] {
                let t = raw_token(&json!({"alg": alg, "typ": "JWT"}), &claims(), sig);
                assert!(
                    matches!(reject(&v, &t), AuthError::AlgorithmNotAllowed { .. }),
                    "{alg} {sig:?}"
                );
            }
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: the RSA public key is public, so an
    // attacker can HMAC with it. Only RS256 is configured.
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &claims(),
    );
    assert_eq!(
        reject(&verifier(rs_config()), &t),
        AuthError::AlgorithmNotAllowed {
            alg: "HS256".into()
        }
    );
    // With an HS256 secret configured as well, the token is checked against
    // that secret, never the PEM.
    assert_eq!(reject(&verifier(all_config()), &t), AuthError::BadSignature);
}

#[test]
fn hs256_signed_with_the_ec_public_key_is_refused() {
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(EC_PUBLIC.as_bytes()),
        &claims(),
    );
    assert!(matches!(
        reject(&verifier(es_config()), &t),
        AuthError::AlgorithmNotAllowed { .. }
    ));
}

#[test]
fn algorithms_not_configured_are_refused() {
    let hs_only = verifier(hs_config());
    assert!(matches!(
        reject(&hs_only, &rs256(&claims())),
        AuthError::AlgorithmNotAllowed { .. }
    ));
    assert!(matches!(
        reject(&hs_only, &es256(&claims())),
        AuthError::AlgorithmNotAllowed { .. }
    ));
    let rs_only = verifier(rs_config());
    assert!(matches!(
        reject(&rs_only, &hs256(&claims())),
        AuthError::AlgorithmNotAllowed { .. }
    ));
    // Same family, other hash: still not configured.
    let hs384 = sign(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims(),
    );
    assert_eq!(
        reject(&hs_only, &hs384),
        AuthError::AlgorithmNotAllowed {
            alg: "HS384".into()
        }
    );
    let ps256 = sign(
        Algorithm::PS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa"),
        &claims(),
    );
    assert!(matches!(
        reject(&rs_only, &ps256),
        AuthError::AlgorithmNotAllowed { .. }
    ));
    let es384 = sign(
        Algorithm::ES384,
        &EncodingKey::from_ec_pem(EC384_PRIVATE.as_bytes()).expect("p384"),
        &claims(),
    );
    assert!(matches!(
        reject(&verifier(es_config()), &es384),
        AuthError::AlgorithmNotAllowed { .. }
    ));
}

#[test]
fn hostile_alg_values_are_sanitised_in_errors() {
    let v = verifier(hs_config());
    let t = raw_token(
        &json!({"alg": "\n\u{1b}[31mEVIL-ALGORITHM-NAME-THAT-GOES-ON"}),
        &claims(),
        "x",
    );
    match reject(&v, &t) {
        AuthError::AlgorithmNotAllowed { alg } => {
            assert!(alg.len() <= 16);
            assert!(alg.chars().all(|c| c.is_ascii_alphanumeric() || c == '?'));
        }
        e => panic!("unexpected {e:?}"),
    }
    let t = raw_token(&json!({"alg": 256}), &claims(), "x");
    assert_eq!(reject(&v, &t), AuthError::Malformed);
    let t = raw_token(&json!({"typ": "JWT"}), &claims(), "x");
    assert_eq!(reject(&v, &t), AuthError::Malformed);
}

#[test]
fn critical_header_extensions_are_refused() {
    let v = verifier(hs_config());
    let t = raw_token(
        &json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
        &claims(),
        "x",
    );
    assert_eq!(reject(&v, &t), AuthError::CriticalHeader);
}

// ---- claims ----

#[test]
fn missing_sub_is_refused() {
    let t = hs256(&json!({"exp": NOW + 60}));
    assert_eq!(
        reject(&verifier(hs_config()), &t),
        AuthError::MissingClaim("sub")
    );
}

#[test]
fn missing_exp_is_refused() {
    let t = hs256(&json!({"sub": "alice"}));
    assert_eq!(
        reject(&verifier(hs_config()), &t),
        AuthError::MissingClaim("exp")
    );
}

#[test]
fn ill_typed_sub_and_exp_are_refused() {
    let v = verifier(hs_config());
    for bad in [
        json!({"sub": 42, "exp": NOW + 60}),
        json!({"sub": "", "exp": NOW + 60}),
        json!({"sub": ["alice"], "exp": NOW + 60}),
        json!({"sub": null, "exp": NOW + 60}),
        json!({"sub": "alice", "exp": "tomorrow"}),
        json!({"sub": "alice", "exp": -5}),
        json!({"sub": "alice", "exp": NOW + 60, "nbf": "now"}),
        json!({"sub": "alice", "exp": NOW + 60, "nbf": -1}),
        json!({"sub": "alice", "exp": 1e300}),
    ] {
        let t = hs256(&bad);
        assert!(
            matches!(
                reject(&v, &t),
                // jsonwebtoken cannot even parse some shapes: Malformed.
                AuthError::MissingClaim(_) | AuthError::InvalidClaim(_) | AuthError::Malformed
            ),
            "{bad}"
        );
    }
}

#[test]
fn ill_typed_claims_name_the_claim() {
    // `sub` and `exp` are judged by us, not jsonwebtoken's "required" list:
    // a present but ill-typed claim is invalid, not missing.
    let v = verifier(hs_config());
    for (bad, expected) in [
        (
            json!({"sub": 42, "exp": NOW + 60}),
            AuthError::InvalidClaim("sub"),
        ),
        (
            json!({"sub": "", "exp": NOW + 60}),
            AuthError::InvalidClaim("sub"),
        ),
        (
            json!({"sub": null, "exp": NOW + 60}),
            AuthError::MissingClaim("sub"),
        ),
        (
            json!({"sub": "a", "exp": "tomorrow"}),
            AuthError::InvalidClaim("exp"),
        ),
        (
            json!({"sub": "a", "exp": -5}),
            AuthError::InvalidClaim("exp"),
        ),
        (
            json!({"sub": "a", "exp": null}),
            AuthError::MissingClaim("exp"),
        ),
        (
            json!({"sub": "a", "exp": NOW + 60, "nbf": "now"}),
            AuthError::InvalidClaim("nbf"),
        ),
        (
            json!({"sub": "a", "exp": NOW + 60, "nbf": -1}),
            AuthError::InvalidClaim("nbf"),
        ),
    ] {
        assert_eq!(reject(&v, &hs256(&bad)), expected, "{bad}");
    }
}

#[test]
fn non_object_payload_is_refused() {
    let v = verifier(hs_config());
    for payload in [json!("alice"), json!([1, 2]), json!(null), json!(7)] {
        let t = hs256(&payload);
        assert!(v.verify_at(&t, NOW).is_err(), "{payload}");
    }
}

fn iss_aud_verifier() -> JwtVerifier {
    verifier(JwtConfig {
        issuer: Some("https://idp.example".into()),
        audience: Some("sodp".into()),
        ..hs_config()
    })
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let v = iss_aud_verifier();
    let ok = json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": "sodp"});
    assert!(v.verify_at(&hs256(&ok), NOW).is_ok());
    let in_array =
        json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": ["x", "sodp"]});
    assert!(v.verify_at(&hs256(&in_array), NOW).is_ok());
}

#[test]
fn wrong_issuer_is_refused() {
    let v = iss_aud_verifier();
    let t =
        hs256(&json!({"sub": "a", "exp": NOW + 60, "iss": "https://evil.example", "aud": "sodp"}));
    assert_eq!(reject(&v, &t), AuthError::WrongIssuer);
    let t = hs256(&json!({"sub": "a", "exp": NOW + 60, "aud": "sodp"}));
    assert_eq!(reject(&v, &t), AuthError::MissingClaim("iss"));
}

#[test]
fn wrong_audience_is_refused() {
    let v = iss_aud_verifier();
    let t =
        hs256(&json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": "other"}));
    assert_eq!(reject(&v, &t), AuthError::WrongAudience);
    let t = hs256(
        &json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example", "aud": ["x", "y"]}),
    );
    assert_eq!(reject(&v, &t), AuthError::WrongAudience);
    let t = hs256(&json!({"sub": "a", "exp": NOW + 60, "iss": "https://idp.example"}));
    assert_eq!(reject(&v, &t), AuthError::MissingClaim("aud"));
}

#[test]
fn iss_and_aud_are_ignored_when_not_configured() {
    let v = verifier(hs_config());
    let t = hs256(&json!({"sub": "a", "exp": NOW + 60, "iss": "anyone", "aud": "anything"}));
    assert!(v.verify_at(&t, NOW).is_ok());
}

// ---- garbage ----

#[test]
fn garbage_tokens_are_refused_without_panicking() {
    let v = verifier(all_config());
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    let cases: Vec<String> = vec![
        "".into(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b".into(),
        "a.b.c".into(),
        "a.b.c.d".into(),
        "not a token".into(),
        "eyJ.eyJ.sig".into(),
        "!!!.@@@.###".into(),
        "\u{0}\u{1}.\u{2}.\u{3}".into(),
        "ünïcödé.ünïcödé.ünïcödé".into(),
        format!("{}.x.y", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.x.y", URL_SAFE_NO_PAD.encode("[1,2,3]")),
        format!("{}.!!!.y", b64(&json!({"alg": "HS256"}))),
        format!(
            "{}.{}.y",
            b64(&json!({"alg": "HS256"})),
            URL_SAFE_NO_PAD.encode("not json")
        ),
        format!("{}.{}.!!!", b64(&json!({"alg": "RS256"})), b64(&claims())),
        format!("{}.{}.AAAA", b64(&json!({"alg": "ES256"})), b64(&claims())),
        format!("{}.{}.AAAA", b64(&json!({"alg": "RS256"})), b64(&claims())),
        long.clone(),
    ];
    for t in &cases {
        assert!(v.verify_at(t, NOW).is_err(), "{t:?}");
    }
    assert_eq!(v.verify_at(&long, NOW), Err(AuthError::TooLarge));
}

#[test]
fn errors_never_contain_the_token() {
    let v = verifier(hs_config());
    let secret_looking = hs256(&json!({"sub": "alice", "exp": NOW - 100}));
    let e = v.verify_at(&secret_looking, NOW).unwrap_err();
    assert!(!format!("{e} {e:?}").contains(&secret_looking));
}

// ---- refresh ----

#[test]
fn refresh_must_keep_the_subject() {
    let v = verifier(hs_config());
    let fresh = hs256(&json!({"sub": "alice", "exp": NOW + 600}));
    let c = v.verify_refresh_at(&fresh, "alice", NOW).expect("same sub");
    assert_eq!(c.exp, NOW + 600);
    assert_eq!(
        v.verify_refresh_at(&fresh, "bob", NOW),
        Err(AuthError::SubjectMismatch)
    );
    let expired = hs256(&json!({"sub": "alice", "exp": NOW - 1}));
    assert_eq!(
        v.verify_refresh_at(&expired, "alice", NOW),
        Err(AuthError::Expired)
    );
}

// ---- configuration ----

#[test]
fn no_key_means_auth_off() {
    assert!(JwtVerifier::new(&JwtConfig::default())
        .expect("ok")
        .is_none());
    let iss_only = JwtConfig {
        issuer: Some("x".into()),
        ..JwtConfig::default()
    };
    assert!(JwtVerifier::new(&iss_only).expect("ok").is_none());
}

#[test]
fn bad_configurations_are_refused_at_start() {
    let cases = [
        (
            JwtConfig {
                hs256_secret: Some(String::new()),
                ..JwtConfig::default()
            },
            "empty secret",
        ),
        (
            JwtConfig {
                rs256_public_key_pem: Some(RSA_PRIVATE.into()),
                ..JwtConfig::default()
            },
            "rsa private key",
        ),
        (
            JwtConfig {
                rs256_public_key_pem: Some(
                    "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".into(),
                ),
                ..JwtConfig::default()
            },
            "garbage rsa pem",
        ),
        (
            JwtConfig {
                rs256_public_key_pem: Some("not a pem".into()),
                ..JwtConfig::default()
            },
            "not a pem",
        ),
        (
            JwtConfig {
                rs256_public_key_pem: Some(EC_PUBLIC.into()),
                ..JwtConfig::default()
            },
            "ec key as rsa",
        ),
        (
            JwtConfig {
                es256_public_key_pem: Some(RSA_PUBLIC.into()),
                ..JwtConfig::default()
            },
            "rsa key as ec",
        ),
        (
            JwtConfig {
                es256_public_key_pem: Some(EC384_PUBLIC.into()),
                ..JwtConfig::default()
            },
            "p-384 key for es256",
        ),
        (
            JwtConfig {
                es256_public_key_pem: Some(EC_PRIVATE.into()),
                ..JwtConfig::default()
            },
            "ec private key",
        ),
        (
            JwtConfig {
                leeway_secs: 301,
                ..hs_config()
            },
            "huge leeway",
        ),
        (
            JwtConfig {
                issuer: Some(" ".into()),
                ..hs_config()
            },
            "blank issuer",
        ),
        (
            JwtConfig {
                audience: Some(String::new()),
                ..hs_config()
            },
            "empty audience",
        ),
    ];
    for (config, what) in cases {
        let err = JwtVerifier::new(&config).expect_err(what);
        assert!(!err.to_string().is_empty(), "{what}");
    }
    assert_eq!(
        JwtVerifier::new(&JwtConfig {
            hs256_secret: Some(String::new()),
            ..JwtConfig::default()
        })
        .unwrap_err(),
        ConfigError::EmptySecret
    );
}

#[test]
fn pkcs1_rsa_public_key_is_accepted() {
    // `BEGIN RSA PUBLIC KEY` (PKCS#1) as well as `BEGIN PUBLIC KEY` (SPKI).
    let pkcs1 = include_str!("keys/rsa_public_pkcs1.pem");
    let v = verifier(JwtConfig {
        rs256_public_key_pem: Some(pkcs1.into()),
        ..JwtConfig::default()
    });
    assert!(v.verify_at(&rs256(&claims()), NOW).is_ok());
}

#[test]
fn debug_output_hides_the_secret() {
    let config = hs_config();
    assert!(!format!("{config:?}").contains(SECRET));
    let v = verifier(config);
    assert!(!format!("{v:?}").contains(SECRET));
}
