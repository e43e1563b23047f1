//! Hand-built JWTs for the security tests: any header, any claims, HS256 over any secret.
//!
//! Built by hand rather than with a JWT library so that tests can also make the tokens a
//! library refuses to make (`alg: none`, a mismatched header, a tampered payload).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The secret the test servers are started with (`--jwt-secret`).
pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test";
/// The issuer the test servers require.
pub const ISSUER: &str = "ws-issuer";
/// The audience the test servers require.
pub const AUDIENCE: &str = "ws-test";

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64
}

/// The base claims of case C09, with `extra` (a JSON object's members, or "") appended.
pub fn claims(extra: &str) -> String {
    let now = now();
    let base = format!(
        r#""sub":"user-1","iss":"{ISSUER}","aud":"{AUDIENCE}","iat":{now},"exp":{}"#,
        now + 300
    );
    if extra.is_empty() {
        format!("{{{base}}}")
    } else {
        format!("{{{base},{extra}}}")
    }
}

/// `header.claims.signature` with an HS256 signature over `secret`.
pub fn sign(header: &str, claims: &str, secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, signing_input.as_bytes());
    format!("{signing_input}.{}", b64(tag.as_ref()))
}

/// A valid HS256 token with `claims`.
pub fn hs256(claims: &str) -> String {
    sign(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET.as_bytes())
}

/// The base token of case C09.
pub fn valid() -> String {
    hs256(&claims(""))
}

/// Base64url without padding, as JWTs use.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The server flags of case C09 (HS256, issuer, audience, query tokens on).
pub fn c09_flags() -> Vec<&'static str> {
    vec![
        "--jwt-secret",
        SECRET,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-query-token",
    ]
}
