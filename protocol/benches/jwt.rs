//! Cost of admitting one connection by its token: [`JwtValidator::validate`] on the shard,
//! before the `101` (PROTOCOL.md §2). HS256 is the default and the one with a goal (under
//! 5 µs per token on the 2-core development machine); RS256 and ES256 are printed beside it
//! for operators who choose a public-key algorithm.
//!
//! Run: `cargo bench -p wse-protocol --bench jwt`.

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::Criterion;
use jwt_simple::prelude::{
    Claims, ECDSAP256KeyPairLike, ES256KeyPair, RS256KeyPair, RSAKeyPairLike,
};
use wse_protocol::auth::{JwtAlgorithm, JwtConfig, JwtValidator};

/// A secret of the length operators are told to use (32 bytes or more).
const SECRET: &[u8] = b"bench-secret-of-at-least-32-bytes-long";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A compact HS256 JWS over `payload` (JSON text).
fn hs256(payload: &str, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The claims a real deployment sends: subject, issuer, audience, times and a topic ACL.
fn typical_claims(now: u64) -> String {
    format!(
        concat!(
            r#"{{"sub":"user-1842","iss":"your-app","aud":"your-api","iat":{},"exp":{},"#,
            r#""wse_topics":{{"allow":["orders.*","news"],"deny":["orders.internal"],"#,
            r#""publish":["chat.*"]}}}}"#
        ),
        now,
        now + 900
    )
}

fn hs256_validation(c: &mut Criterion) {
    let config = JwtConfig {
        issuer: Some("your-app".into()),
        audience: vec!["your-api".into()],
        ..JwtConfig::new(JwtAlgorithm::Hs256, SECRET.to_vec())
    };
    let validator = JwtValidator::new(config).expect("a valid HS256 configuration");
    let now = now();
    let token = hs256(&typical_claims(now), SECRET);
    assert!(validator.validate(&token, now).is_ok(), "the bench token must be valid");
    let forged = hs256(&typical_claims(now), b"some-other-secret-of-32-bytes-long!!");
    assert!(validator.validate(&forged, now).is_err(), "the forged token must be refused");

    let mut group = c.benchmark_group("jwt");
    group.bench_function("hs256_valid", |b| {
        b.iter(|| validator.validate(black_box(&token), now).expect("valid"))
    });
    group.bench_function("hs256_bad_signature", |b| {
        b.iter(|| validator.validate(black_box(&forged), now).expect_err("refused"))
    });
    group.finish();
}

fn public_key_validation(c: &mut Criterion) {
    let claims = || Claims::create(jwt_simple::prelude::Duration::from_mins(15)).with_subject("u");
    let rsa = RS256KeyPair::generate(2048).expect("RSA key generation");
    let rsa_pem = rsa.public_key().to_pem().expect("RSA public key PEM");
    let rsa_token = rsa.sign(claims()).expect("RS256 signing");
    let ec = ES256KeyPair::generate();
    let ec_pem = ec.public_key().to_pem().expect("EC public key PEM");
    let ec_token = ec.sign(claims()).expect("ES256 signing");

    let rs256 = JwtValidator::new(JwtConfig::new(JwtAlgorithm::Rs256, rsa_pem.into_bytes()))
        .expect("a valid RS256 configuration");
    let es256 = JwtValidator::new(JwtConfig::new(JwtAlgorithm::Es256, ec_pem.into_bytes()))
        .expect("a valid ES256 configuration");
    let now = now();
    let mut group = c.benchmark_group("jwt");
    group.bench_function("rs256_valid", |b| {
        b.iter(|| rs256.validate(black_box(&rsa_token), now).expect("valid"))
    });
    group.bench_function("es256_valid", |b| {
        b.iter(|| es256.validate(black_box(&ec_token), now).expect("valid"))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    hs256_validation(&mut c);
    public_key_validation(&mut c);
    c.final_summary();
}
