//! JWT validation with the algorithm and keys fixed by configuration (PROTOCOL.md §2, C09).
//!
//! [`JwtValidator::validate`] runs in four steps: a size cap, a header check of our own (the
//! token's `alg` must be the configured one, `kid` must match when configured), the
//! signature check by `jwt-simple` (current key, then the previous one), and the claim
//! checks of our own on the decoded payload. For HS256 only the tag comes from `jwt-simple`
//! (see `check_hmac`); RS256 and ES256 go through its whole `verify_token`, whose serde
//! claim types also refuse tokens whose registered claims have the wrong JSON type (a
//! numeric `jti`, say). The claims are checked here rather than by
//! `jwt-simple` because its rules differ from ours in places: it cannot refuse a token that
//! carries `aud` when no audience is configured, does not require `exp`, and its handling of
//! a future `iat` is tied to its `nbf` check.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::algorithms::{
    ECDSAP256PublicKeyLike, ES256PublicKey, HS256Key, MACLike, RS256PublicKey, RSAPublicKeyLike,
};
use jwt_simple::claims::{JWTClaims, NoCustomClaims};
use jwt_simple::common::VerificationOptions;
use jwt_simple::JWTError;
use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use super::{AuthError, Claims, TopicRules};
use crate::Error;

/// The signature algorithm a server accepts; the only one it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret of at least 32 bytes.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256; the key is an RSA public key in PEM (2048 to 4096 bits).
    Rs256,
    /// ECDSA on P-256 with SHA-256; the key is a P-256 public key in PEM.
    Es256,
}

impl JwtAlgorithm {
    /// The `alg` header value (RFC 7518 §3.1) of tokens signed this way.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        }
    }
}

impl FromStr for JwtAlgorithm {
    type Err = Error;

    /// Parses `HS256`, `RS256` or `ES256`, exactly as spelled in a JWT header.
    fn from_str(name: &str) -> Result<Self, Error> {
        match name {
            "HS256" => Ok(JwtAlgorithm::Hs256),
            "RS256" => Ok(JwtAlgorithm::Rs256),
            "ES256" => Ok(JwtAlgorithm::Es256),
            _ => Err(Error::JwtConfig("algorithm must be HS256, RS256 or ES256".into())),
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How tokens are checked; read once at start-up.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The one algorithm accepted; a token's own `alg` header is never trusted.
    pub algorithm: JwtAlgorithm,
    /// HS256: the secret bytes (at least 32). RS256 and ES256: the public key in PEM.
    pub key: Vec<u8>,
    /// A previous key, same algorithm, still accepted during a rotation.
    pub previous_key: Option<Vec<u8>>,
    /// When set, `iss` must be present and equal to it (exact, case-sensitive).
    pub issuer: Option<String>,
    /// `aud` (a string or an array) must contain one of these. When empty, a token that
    /// carries `aud` at all is refused (RFC 7519 §4.1.3).
    pub audience: Vec<String>,
    /// When set, the header's `kid` must be present and equal to it.
    pub key_id: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl JwtConfig {
    /// A configuration with no previous key, issuer, audience or key id, and the default
    /// leeway of [`DEFAULT_LEEWAY_SECS`].
    pub fn new(algorithm: JwtAlgorithm, key: Vec<u8>) -> Self {
        JwtConfig {
            algorithm,
            key,
            previous_key: None,
            issuer: None,
            audience: Vec::new(),
            key_id: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

impl fmt::Debug for JwtConfig {
    /// Everything but the key bytes, which may be a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("previous_key", &self.previous_key.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.key_id)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// Checks tokens against a [`JwtConfig`]. Built once at start-up and shared by all shards
/// (it is `Send + Sync` and holds no per-call state).
pub struct JwtValidator {
    /// The algorithm every token's header must name.
    algorithm: JwtAlgorithm,
    /// The current key, then the previous one when rotating.
    keys: Vec<VerifyKey>,
    issuer: Option<String>,
    audience: Vec<String>,
    key_id: Option<String>,
    leeway_secs: u64,
}

impl JwtValidator {
    /// Parses the keys of `config`.
    ///
    /// # Errors
    ///
    /// [`Error::JwtConfig`] when an HS256 secret is shorter than 32 bytes, or a PEM key
    /// does not parse as a public key of the configured algorithm; the message names which
    /// key and what is wrong.
    pub fn new(config: JwtConfig) -> Result<Self, Error> {
        let mut keys = vec![VerifyKey::parse(config.algorithm, &config.key, "key")?];
        if let Some(previous) = &config.previous_key {
            keys.push(VerifyKey::parse(config.algorithm, previous, "previous key")?);
        }
        Ok(JwtValidator {
            algorithm: config.algorithm,
            keys,
            issuer: config.issuer,
            audience: config.audience,
            key_id: config.key_id,
            leeway_secs: config.leeway_secs,
        })
    }

    /// Checks `token` at time `now_unix_secs` and returns its claims.
    ///
    /// # Errors
    ///
    /// [`AuthError::Invalid`] with a short reason when the token is over
    /// [`MAX_TOKEN_BYTES`], not a compact JWS, names another algorithm or key id, has a bad
    /// signature under every configured key, or fails a claim check: `exp` missing or past
    /// (beyond the leeway), `nbf` ahead (beyond the leeway), `iss` or `aud` not as
    /// configured, `sub` missing or empty, `wse_topics` malformed.
    pub fn validate(&self, token: &str, now_unix_secs: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("token too large"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Invalid("malformed token"));
        };
        self.check_header(header)?;

        let signed = &token[..header.len() + 1 + payload.len()];
        self.check_signature(token, signed, signature, now_unix_secs)?;

        let payload = decode_json(payload).ok_or(AuthError::Invalid("malformed payload"))?;
        self.check_claims(&payload, now_unix_secs)
    }

    /// Refuses a header that is not a JSON object naming the configured `alg` (and `kid`).
    fn check_header(&self, header_b64: &str) -> Result<(), AuthError> {
        let header = decode_json(header_b64).ok_or(AuthError::Invalid("malformed header"))?;
        if !header.is_object() {
            return Err(AuthError::Invalid("malformed header"));
        }
        if header.get("alg").as_str() != Some(self.algorithm.name()) {
            return Err(AuthError::Invalid("algorithm not allowed"));
        }
        if let Some(expected) = &self.key_id {
            if header.get("kid").as_str() != Some(expected.as_str()) {
                return Err(AuthError::Invalid("key id mismatch"));
            }
        }
        if let Some(typ) = header.get("typ") {
            // RFC 7519 §5.1 and RFC 8725 §3.11: `JWT`, or an explicit `<kind>+jwt`.
            let typ = typ.as_str().unwrap_or_default().to_ascii_uppercase();
            if typ != "JWT" && !typ.ends_with("+JWT") {
                return Err(AuthError::Invalid("not a jwt"));
            }
        }
        if header.get("crit").is_some() {
            return Err(AuthError::Invalid("unsupported critical header"));
        }
        Ok(())
    }

    /// Verifies the signature under the current key, then the previous one. `signed` is the
    /// `header.payload` prefix of `token` and `signature` its last part.
    fn check_signature(
        &self,
        token: &str,
        signed: &str,
        signature: &str,
        now: u64,
    ) -> Result<(), AuthError> {
        if self.algorithm == JwtAlgorithm::Hs256 {
            return self.check_hmac(signed, signature);
        }
        let options = VerificationOptions {
            // Claims are checked by `check_claims`; these keep jwt-simple's own checks
            // consistent with ours and stop it from reading the clock.
            accept_future: true,
            time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(self.leeway_secs)),
            max_token_length: Some(MAX_TOKEN_BYTES),
            artificial_time: Some(jwt_simple::prelude::UnixTimeStamp::from_secs(now)),
            ..VerificationOptions::default()
        };
        let mut outcome = Err(AuthError::Invalid("bad signature"));
        for key in &self.keys {
            outcome = key.verify(token, options.clone()).map(drop).map_err(signature_error);
            if outcome != Err(AuthError::Invalid("bad signature")) {
                break;
            }
        }
        outcome
    }

    /// HS256: compares the tag jwt-simple computes over `signed` with `signature`.
    ///
    /// jwt-simple's `verify_token` would also decode the whole token again with its
    /// constant-time base64 and parse the claims with serde; together that was more than
    /// half of the validation time, and the claims are parsed and checked here anyway. The
    /// tag is only a keyed hash of public data, so decoding it needs no constant-time codec.
    fn check_hmac(&self, signed: &str, signature: &str) -> Result<(), AuthError> {
        let mut tag = [0u8; HS256_TAG_BYTES];
        let decoded = URL_SAFE_NO_PAD.decode_slice(signature, &mut tag);
        if decoded != Ok(HS256_TAG_BYTES) {
            return Err(AuthError::Invalid("bad signature"));
        }
        let matches = |key: &VerifyKey| match key {
            VerifyKey::Hs256(key) => {
                let expected = key.authentication_tag(signed.as_bytes());
                aws_lc_rs::constant_time::verify_slices_are_equal(&expected, &tag).is_ok()
            }
            _ => false,
        };
        match self.keys.iter().any(matches) {
            true => Ok(()),
            false => Err(AuthError::Invalid("bad signature")),
        }
    }

    /// The claim checks of PROTOCOL.md §2 on the signed payload.
    fn check_claims(&self, payload: &Value, now: u64) -> Result<Claims, AuthError> {
        // `Object::get` keeps a JSON `null` as a value, so `"wse_topics": null` is refused
        // rather than read as "no ACL".
        let payload = payload.as_object().ok_or(AuthError::Invalid("malformed payload"))?;

        let expires_at = numeric_date(payload.get(&"exp"))?.ok_or(AuthError::Invalid("no exp"))?;
        if now >= expires_at.saturating_add(self.leeway_secs) {
            return Err(AuthError::Invalid("token expired"));
        }
        if let Some(not_before) = numeric_date(payload.get(&"nbf"))? {
            if now.saturating_add(self.leeway_secs) < not_before {
                return Err(AuthError::Invalid("token not yet valid"));
            }
        }

        if let Some(issuer) = &self.issuer {
            if payload.get(&"iss").as_str() != Some(issuer.as_str()) {
                return Err(AuthError::Invalid("issuer mismatch"));
            }
        }
        self.check_audience(payload.get(&"aud"))?;

        let user_id = match payload.get(&"sub").as_str() {
            Some(sub) if !sub.is_empty() => sub.to_owned(),
            _ => return Err(AuthError::Invalid("no sub")),
        };
        let topics = payload.get(&"wse_topics").map(topic_rules).transpose()?;
        Ok(Claims { user_id, expires_at, topics })
    }

    /// `aud` must name a configured audience; with none configured it must be absent.
    fn check_audience(&self, aud: Option<&Value>) -> Result<(), AuthError> {
        let Some(aud) = aud else {
            return match self.audience.is_empty() {
                true => Ok(()),
                false => Err(AuthError::Invalid("no aud")),
            };
        };
        if self.audience.is_empty() {
            return Err(AuthError::Invalid("aud present but no audience configured"));
        }

        let named = |name: &str| self.audience.iter().any(|a| a == name);
        let matched = match (aud.as_str(), aud.as_array()) {
            (Some(one), _) => named(one),
            (None, Some(list)) => {
                let names: Option<Vec<&str>> = list.iter().map(|v| v.as_str()).collect();
                names.ok_or(AuthError::Invalid("malformed aud"))?.into_iter().any(named)
            }
            (None, None) => return Err(AuthError::Invalid("malformed aud")),
        };
        match matched {
            true => Ok(()),
            false => Err(AuthError::Invalid("audience mismatch")),
        }
    }
}

impl fmt::Debug for JwtValidator {
    /// Everything but the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtValidator")
            .field("algorithm", &self.algorithm)
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("key_id", &self.key_id)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// One verification key of the configured algorithm.
enum VerifyKey {
    Hs256(HS256Key),
    Rs256(Box<RS256PublicKey>),
    Es256(Box<ES256PublicKey>),
}

impl VerifyKey {
    /// Parses `bytes` as a key for `algorithm`; `which` names it in the error message.
    fn parse(algorithm: JwtAlgorithm, bytes: &[u8], which: &str) -> Result<Self, Error> {
        if algorithm == JwtAlgorithm::Hs256 {
            if bytes.len() < MIN_HS256_SECRET_BYTES {
                return Err(Error::JwtConfig(format!(
                    "HS256 {which} is {} bytes; at least {MIN_HS256_SECRET_BYTES} are required",
                    bytes.len()
                )));
            }
            return Ok(VerifyKey::Hs256(HS256Key::from_bytes(bytes)));
        }

        let bad_pem = |reason: &dyn fmt::Display| {
            Error::JwtConfig(format!(
                "{algorithm} {which} is not a usable PEM public key: {reason}"
            ))
        };
        let pem = std::str::from_utf8(bytes).map_err(|_| bad_pem(&"not UTF-8 text"))?;
        match algorithm {
            JwtAlgorithm::Rs256 => RS256PublicKey::from_pem(pem)
                .map(|key| VerifyKey::Rs256(Box::new(key)))
                .map_err(|e| bad_pem(&e)),
            _ => ES256PublicKey::from_pem(pem)
                .map(|key| VerifyKey::Es256(Box::new(key)))
                .map_err(|e| bad_pem(&e)),
        }
    }

    /// Verifies the token's signature with jwt-simple.
    fn verify(
        &self,
        token: &str,
        options: VerificationOptions,
    ) -> Result<JWTClaims<NoCustomClaims>, jwt_simple::Error> {
        match self {
            VerifyKey::Hs256(key) => key.verify_token(token, Some(options)),
            VerifyKey::Rs256(key) => key.verify_token(token, Some(options)),
            VerifyKey::Es256(key) => key.verify_token(token, Some(options)),
        }
    }
}

/// The reason to report for a jwt-simple verification error.
fn signature_error(error: jwt_simple::Error) -> AuthError {
    let reason = match error.downcast_ref::<JWTError>() {
        Some(JWTError::InvalidAuthenticationTag | JWTError::InvalidSignature) => "bad signature",
        Some(JWTError::TokenHasExpired) => "token expired",
        Some(JWTError::NotJWT) => "not a jwt",
        Some(JWTError::MissingSalt) => "unexpected salt",
        // Base64 or JSON errors in the signature or claims part.
        _ => "malformed token",
    };
    AuthError::Invalid(reason)
}

/// Decodes one base64url part (no padding) and parses it as JSON.
fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    sonic_rs::from_slice(&bytes).ok()
}

/// A NumericDate claim (RFC 7519 §2): a non-negative number of seconds, fractions dropped.
fn numeric_date(value: Option<&Value>) -> Result<Option<u64>, AuthError> {
    let Some(value) = value else { return Ok(None) };
    if let Some(secs) = value.as_u64() {
        return Ok(Some(secs));
    }
    match value.as_f64() {
        // `as` saturates, so a huge float becomes u64::MAX, never wraps.
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(secs as u64)),
        _ => Err(AuthError::Invalid("malformed time claim")),
    }
}

/// Reads `wse_topics`: an object whose `allow`, `deny` and `publish` keys, when present,
/// hold arrays of strings. Other keys are ignored.
fn topic_rules(value: &Value) -> Result<TopicRules, AuthError> {
    let object = value.as_object().ok_or(AuthError::Invalid("malformed wse_topics"))?;
    let list = |key: &str| -> Result<Vec<String>, AuthError> {
        let Some(list) = object.get(&key) else { return Ok(Vec::new()) };
        let list = list.as_array().ok_or(AuthError::Invalid("malformed wse_topics"))?;
        list.iter()
            .map(|glob| glob.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(AuthError::Invalid("malformed wse_topics"))
    };
    Ok(TopicRules { allow: list("allow")?, deny: list("deny")?, publish: list("publish")? })
}

/// Tokens longer than this many bytes are refused before any decoding (PROTOCOL.md §2).
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The default clock-skew allowance on `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The length of an HMAC-SHA-256 tag.
const HS256_TAG_BYTES: usize = 32;

/// The shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash output size).
const MIN_HS256_SECRET_BYTES: usize = 32;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::hmac;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    /// The secret S of case C09.
    const SECRET: &[u8] = b"c09-secret-of-at-least-32-bytes!!";
    const OTHER_SECRET: &[u8] = b"another-secret-of-32-bytes-or-so!";
    const NOW: u64 = 1_767_225_600;
    const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A compact JWS of `header` and `payload` (JSON text) with an HMAC tag.
    fn hmac_token(header: &str, payload: &str, secret: &[u8], alg: hmac::Algorithm) -> String {
        let signing_input = format!("{}.{}", b64(header), b64(payload));
        let tag = hmac::sign(&hmac::Key::new(alg, secret), signing_input.as_bytes());
        format!("{signing_input}.{}", b64(tag))
    }

    fn hs256(payload: &str) -> String {
        hmac_token(HS256_HEADER, payload, SECRET, hmac::HMAC_SHA256)
    }

    /// The base claims of C09 with `extra` fields replacing or adding to them; a `null` in
    /// `extra` removes the field.
    fn claims(extra: &[(&str, &str)]) -> String {
        let now = NOW.to_string();
        let exp = (NOW + 300).to_string();
        let mut fields = vec![
            ("sub", r#""user-1""#.to_owned()),
            ("iss", r#""ws-issuer""#.to_owned()),
            ("aud", r#""ws-test""#.to_owned()),
            ("iat", now),
            ("exp", exp),
        ];
        for (key, value) in extra {
            fields.retain(|(k, _)| k != key);
            if *value != "null" {
                fields.push((key, (*value).to_owned()));
            }
        }
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    /// The server configuration of C09.
    fn c09_config() -> JwtConfig {
        JwtConfig {
            issuer: Some("ws-issuer".into()),
            audience: vec!["ws-test".into()],
            ..JwtConfig::new(JwtAlgorithm::Hs256, SECRET.to_vec())
        }
    }

    fn c09() -> JwtValidator {
        JwtValidator::new(c09_config()).unwrap()
    }

    fn refused(validator: &JwtValidator, token: &str) -> &'static str {
        match validator.validate(token, NOW) {
            Err(AuthError::Invalid(reason)) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A PEM "PUBLIC KEY" block around SubjectPublicKeyInfo DER.
    fn pem(der: &[u8]) -> Vec<u8> {
        let text = STANDARD.encode(der);
        let lines: Vec<&str> =
            text.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
            .into_bytes()
    }

    #[test]
    fn c09_01_base_token_is_accepted() {
        let claims = c09().validate(&hs256(&claims(&[])), NOW).unwrap();
        assert_eq!(
            claims,
            Claims { user_id: "user-1".into(), expires_at: NOW + 300, topics: None }
        );
    }

    #[test]
    fn c09_02_alg_none_with_empty_signature_is_refused() {
        let token = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(claims(&[])));
        assert!(token.starts_with("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."));
        assert_eq!(refused(&c09(), &token), "algorithm not allowed");
    }

    #[test]
    fn c09_03_alg_none_in_any_case_is_refused() {
        for alg in ["None", "NONE", "nOnE", ""] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let token = format!("{}.{}.", b64(header), b64(claims(&[])));
            assert_eq!(refused(&c09(), &token), "algorithm not allowed", "{alg}");
        }
    }

    #[test]
    fn c09_04_alg_none_with_junk_signature_is_refused() {
        let token = format!("{}.{}.{}", b64(r#"{"alg":"none"}"#), b64(claims(&[])), b64("junk"));
        assert_eq!(refused(&c09(), &token), "algorithm not allowed");
        // Even with the signature the HS256 key would give.
        let real = hs256(&claims(&[]));
        let signature = real.rsplit('.').next().unwrap();
        let token = format!("{}.{}.{signature}", b64(r#"{"alg":"none"}"#), b64(claims(&[])));
        assert_eq!(refused(&c09(), &token), "algorithm not allowed");
    }

    #[test]
    fn c09_05_other_hmac_algorithms_with_the_same_secret_are_refused() {
        for (alg, name) in [(hmac::HMAC_SHA384, "HS384"), (hmac::HMAC_SHA512, "HS512")] {
            let header = format!(r#"{{"alg":"{name}","typ":"JWT"}}"#);
            let token = hmac_token(&header, &claims(&[]), SECRET, alg);
            assert_eq!(refused(&c09(), &token), "algorithm not allowed", "{name}");
        }
    }

    #[test]
    fn c09_06_rs256_header_on_an_hs256_server_is_refused() {
        let header = r#"{"alg":"RS256","typ":"JWT"}"#;
        let hmac_signed = hmac_token(header, &claims(&[]), SECRET, hmac::HMAC_SHA256);
        assert_eq!(refused(&c09(), &hmac_signed), "algorithm not allowed");
        let junk = format!("{}.{}.{}", b64(header), b64(claims(&[])), b64([7u8; 256]));
        assert_eq!(refused(&c09(), &junk), "algorithm not allowed");
        let lower = hmac_token(r#"{"alg":"hs256"}"#, &claims(&[]), SECRET, hmac::HMAC_SHA256);
        assert_eq!(refused(&c09(), &lower), "algorithm not allowed");
    }

    #[test]
    fn c09_07_changed_payload_character_is_refused() {
        let token = hs256(&claims(&[]));
        let parts: Vec<&str> = token.split('.').collect();
        let forged = b64(claims(&[("sub", r#""user-2""#)]));
        assert_eq!(
            refused(&c09(), &format!("{}.{forged}.{}", parts[0], parts[2])),
            "bad signature"
        );

        // Every single-character change of the encoded payload.
        let payload = parts[1].as_bytes();
        for at in 0..payload.len() {
            let mut changed = payload.to_vec();
            changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
            let changed = std::str::from_utf8(&changed).unwrap();
            let token = format!("{}.{changed}.{}", parts[0], parts[2]);
            assert!(c09().validate(&token, NOW).is_err(), "change at {at}");
        }
    }

    #[test]
    fn c09_08_token_signed_with_another_secret_is_refused() {
        let token = hmac_token(HS256_HEADER, &claims(&[]), OTHER_SECRET, hmac::HMAC_SHA256);
        assert_eq!(refused(&c09(), &token), "bad signature");
    }

    #[test]
    fn c09_09_other_audience_is_refused() {
        let token = hs256(&claims(&[("aud", r#""other-service""#)]));
        assert_eq!(refused(&c09(), &token), "audience mismatch");
        let token = hs256(&claims(&[("aud", r#"["other","ws-test-x"]"#)]));
        assert_eq!(refused(&c09(), &token), "audience mismatch");
        let token = hs256(&claims(&[("aud", r#""WS-TEST""#)]));
        assert_eq!(refused(&c09(), &token), "audience mismatch");
    }

    #[test]
    fn c09_10_audience_array_containing_ours_is_accepted() {
        let token = hs256(&claims(&[("aud", r#"["other","ws-test"]"#)]));
        assert_eq!(c09().validate(&token, NOW).unwrap().user_id, "user-1");
    }

    #[test]
    fn c09_10_audience_array_with_non_strings_is_refused() {
        let token = hs256(&claims(&[("aud", r#"["ws-test",1]"#)]));
        assert_eq!(refused(&c09(), &token), "malformed aud");
        let token = hs256(&claims(&[("aud", "7")]));
        assert_eq!(refused(&c09(), &token), "malformed aud");
    }

    #[test]
    fn c09_11_missing_audience_is_refused() {
        assert_eq!(refused(&c09(), &hs256(&claims(&[("aud", "null")]))), "no aud");
    }

    #[test]
    fn c09_12_any_audience_is_refused_when_none_is_configured() {
        let validator = JwtValidator::new(JwtConfig { audience: vec![], ..c09_config() }).unwrap();
        for aud in [r#""ws-test""#, r#"["ws-test"]"#, "[]", r#""""#] {
            let token = hs256(&claims(&[("aud", aud)]));
            assert_eq!(refused(&validator, &token), "aud present but no audience configured");
        }
        assert!(validator.validate(&hs256(&claims(&[("aud", "null")])), NOW).is_ok());
    }

    #[test]
    fn c09_13_issuer_must_match_exactly() {
        for iss in [r#""ws-issue""#, r#""issuer""#, r#""ws-issuer.evil""#, r#""WS-ISSUER""#, "1"] {
            let token = hs256(&claims(&[("iss", iss)]));
            assert_eq!(refused(&c09(), &token), "issuer mismatch", "{iss}");
        }
    }

    #[test]
    fn c09_14_missing_issuer_is_refused() {
        assert_eq!(refused(&c09(), &hs256(&claims(&[("iss", "null")]))), "issuer mismatch");
    }

    #[test]
    fn c09_15_expired_token_is_refused() {
        let exp = (NOW - 120).to_string();
        assert_eq!(refused(&c09(), &hs256(&claims(&[("exp", &exp)]))), "token expired");
        let at_leeway = (NOW - 30).to_string();
        assert_eq!(refused(&c09(), &hs256(&claims(&[("exp", &at_leeway)]))), "token expired");
    }

    #[test]
    fn c09_16_expiry_inside_the_leeway_is_accepted() {
        let exp = (NOW - 5).to_string();
        assert_eq!(
            c09().validate(&hs256(&claims(&[("exp", &exp)])), NOW).unwrap().expires_at,
            NOW - 5
        );
        let edge = (NOW - 29).to_string();
        assert!(c09().validate(&hs256(&claims(&[("exp", &edge)])), NOW).is_ok());
    }

    #[test]
    fn c09_17_not_before_ahead_is_refused() {
        let nbf = (NOW + 120).to_string();
        assert_eq!(refused(&c09(), &hs256(&claims(&[("nbf", &nbf)]))), "token not yet valid");
        let past_leeway = (NOW + 31).to_string();
        assert_eq!(
            refused(&c09(), &hs256(&claims(&[("nbf", &past_leeway)]))),
            "token not yet valid"
        );
    }

    #[test]
    fn c09_18_not_before_inside_the_leeway_is_accepted() {
        for nbf in [NOW + 5, NOW + 30, NOW - 100] {
            let nbf = nbf.to_string();
            assert!(c09().validate(&hs256(&claims(&[("nbf", &nbf)])), NOW).is_ok(), "{nbf}");
        }
    }

    #[test]
    fn c09_19_issued_at_in_the_future_is_accepted() {
        for iat in [NOW + 2, NOW + 3_600] {
            let iat = iat.to_string();
            assert!(c09().validate(&hs256(&claims(&[("iat", &iat)])), NOW).is_ok(), "{iat}");
        }
    }

    #[test]
    fn c09_20_key_id_must_match_when_configured() {
        let config = JwtConfig { key_id: Some("k-2026".into()), ..c09_config() };
        let validator = JwtValidator::new(config).unwrap();
        let sign = |header: &str| hmac_token(header, &claims(&[]), SECRET, hmac::HMAC_SHA256);

        let matching = sign(r#"{"alg":"HS256","typ":"JWT","kid":"k-2026"}"#);
        assert!(validator.validate(&matching, NOW).is_ok());
        for header in [
            r#"{"alg":"HS256","kid":"k-2025"}"#,
            r#"{"alg":"HS256","kid":"K-2026"}"#,
            r#"{"alg":"HS256","kid":7}"#,
            HS256_HEADER,
        ] {
            assert_eq!(refused(&validator, &sign(header)), "key id mismatch", "{header}");
        }
        // Without a configured key id, any kid is fine.
        assert!(c09().validate(&sign(r#"{"alg":"HS256","kid":"x"}"#), NOW).is_ok());
    }

    #[test]
    fn c09_21_token_over_8192_bytes_is_refused() {
        let mut pad = 5_900;
        let mut longest_accepted = 0;
        let token = loop {
            let filler = format!("\"{}\"", "x".repeat(pad));
            let token = hs256(&claims(&[("pad", &filler)]));
            if token.len() > MAX_TOKEN_BYTES {
                break token;
            }
            assert!(c09().validate(&token, NOW).is_ok(), "{} bytes", token.len());
            longest_accepted = token.len();
            pad += 1;
        };
        // One more payload byte adds one or two base64 characters.
        assert!(longest_accepted >= MAX_TOKEN_BYTES - 1, "{longest_accepted}");
        assert!(token.len() <= MAX_TOKEN_BYTES + 2, "{}", token.len());
        assert_eq!(refused(&c09(), &token), "token too large");
        assert_eq!(refused(&c09(), &"a".repeat(1 << 20)), "token too large");
    }

    #[test]
    fn previous_key_is_accepted_during_rotation() {
        let config = JwtConfig {
            key: OTHER_SECRET.to_vec(),
            previous_key: Some(SECRET.to_vec()),
            ..c09_config()
        };
        let validator = JwtValidator::new(config).unwrap();
        assert!(validator.validate(&hs256(&claims(&[])), NOW).is_ok());
        let new = hmac_token(HS256_HEADER, &claims(&[]), OTHER_SECRET, hmac::HMAC_SHA256);
        assert!(validator.validate(&new, NOW).is_ok());
        let third = [9u8; 32];
        let stranger = hmac_token(HS256_HEADER, &claims(&[]), &third, hmac::HMAC_SHA256);
        assert_eq!(refused(&validator, &stranger), "bad signature");
        // The previous key does not lift the claim checks.
        let expired = hs256(&claims(&[("exp", &(NOW - 100).to_string())]));
        assert_eq!(refused(&validator, &expired), "token expired");
    }

    #[test]
    fn rs256_token_verifies_against_a_pem_public_key() {
        let key_pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public = key_pair.public_key().as_der().unwrap();
        let sign = |payload: &str| {
            let input = format!("{}.{}", b64(r#"{"alg":"RS256","typ":"JWT"}"#), b64(payload));
            let mut sig = vec![0; key_pair.public_modulus_len()];
            let rng = SystemRandom::new();
            key_pair.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).unwrap();
            format!("{input}.{}", b64(sig))
        };
        let config =
            JwtConfig { algorithm: JwtAlgorithm::Rs256, key: pem(public.as_ref()), ..c09_config() };
        let validator = JwtValidator::new(config).unwrap();

        assert_eq!(validator.validate(&sign(&claims(&[])), NOW).unwrap().user_id, "user-1");
        let token = sign(&claims(&[]));
        let tampered = token.replacen(&b64(claims(&[])), &b64(claims(&[("sub", "\"x\"")])), 1);
        assert_eq!(refused(&validator, &tampered), "bad signature");
        // An HS256 token signed with the PEM text as the secret: the key-confusion attack.
        let confused =
            hmac_token(HS256_HEADER, &claims(&[]), &pem(public.as_ref()), hmac::HMAC_SHA256);
        assert_eq!(refused(&validator, &confused), "algorithm not allowed");
    }

    #[test]
    fn es256_token_verifies_against_a_pem_public_key() {
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let key_pair = EcdsaKeyPair::generate(alg).unwrap();
        let public = key_pair.public_key().as_der().unwrap();
        let sign = |payload: &str| {
            let input = format!("{}.{}", b64(r#"{"alg":"ES256","typ":"JWT"}"#), b64(payload));
            let sig = key_pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        };
        let config =
            JwtConfig { algorithm: JwtAlgorithm::Es256, key: pem(public.as_ref()), ..c09_config() };
        let validator = JwtValidator::new(config).unwrap();

        assert!(validator.validate(&sign(&claims(&[])), NOW).is_ok());
        let other = EcdsaKeyPair::generate(alg).unwrap();
        let input = format!("{}.{}", b64(r#"{"alg":"ES256"}"#), b64(claims(&[])));
        let sig = other.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        assert_eq!(refused(&validator, &format!("{input}.{}", b64(sig.as_ref()))), "bad signature");
        assert_eq!(refused(&validator, &hs256(&claims(&[]))), "algorithm not allowed");
    }

    #[test]
    fn new_refuses_short_secret_and_bad_pem() {
        let short = JwtValidator::new(JwtConfig::new(JwtAlgorithm::Hs256, vec![1; 31]));
        let message = short.unwrap_err().to_string();
        assert!(message.contains("31 bytes") && message.contains("32"), "{message}");

        let previous = JwtConfig { previous_key: Some(b"short".to_vec()), ..c09_config() };
        let message = JwtValidator::new(previous).unwrap_err().to_string();
        assert!(message.contains("previous key"), "{message}");

        for algorithm in [JwtAlgorithm::Rs256, JwtAlgorithm::Es256] {
            let bad = JwtConfig::new(algorithm, b"-----BEGIN PUBLIC KEY-----\nAAAA\n".to_vec());
            let message = JwtValidator::new(bad).unwrap_err().to_string();
            assert!(message.contains("PEM"), "{message}");
            let binary = JwtValidator::new(JwtConfig::new(algorithm, vec![0xff; 40]));
            assert!(matches!(binary, Err(Error::JwtConfig(_))));
        }
    }

    #[test]
    fn es256_key_is_refused_on_an_rs256_server() {
        let key_pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let public = pem(key_pair.public_key().as_der().unwrap().as_ref());
        let config = JwtConfig::new(JwtAlgorithm::Rs256, public);
        assert!(matches!(JwtValidator::new(config), Err(Error::JwtConfig(_))));
    }

    #[test]
    fn algorithm_names_parse_exactly() {
        assert_eq!("HS256".parse::<JwtAlgorithm>().unwrap(), JwtAlgorithm::Hs256);
        assert_eq!("RS256".parse::<JwtAlgorithm>().unwrap(), JwtAlgorithm::Rs256);
        assert_eq!("ES256".parse::<JwtAlgorithm>().unwrap(), JwtAlgorithm::Es256);
        for bad in ["hs256", "HS384", "none", ""] {
            assert!(matches!(bad.parse::<JwtAlgorithm>(), Err(Error::JwtConfig(_))), "{bad}");
        }
    }

    #[test]
    fn exp_is_required_and_must_be_a_date() {
        assert_eq!(refused(&c09(), &hs256(&claims(&[("exp", "null")]))), "no exp");
        for exp in [r#""1767225900""#, "-1", "true"] {
            let token = hs256(&claims(&[("exp", exp)]));
            assert_eq!(refused(&c09(), &token), "malformed time claim", "{exp}");
        }
        let fractional = format!("{}.75", NOW + 10);
        let claims = c09().validate(&hs256(&claims(&[("exp", &fractional)])), NOW).unwrap();
        assert_eq!(claims.expires_at, NOW + 10);
        let far = hs256(&claims_with_exp("18446744073709551615"));
        assert_eq!(c09().validate(&far, NOW).unwrap().expires_at, u64::MAX);
    }

    fn claims_with_exp(exp: &str) -> String {
        claims(&[("exp", exp)])
    }

    #[test]
    fn sub_must_be_a_non_empty_string() {
        for sub in ["null", r#""""#, "42", r#"["user-1"]"#] {
            assert_eq!(refused(&c09(), &hs256(&claims(&[("sub", sub)]))), "no sub", "{sub}");
        }
    }

    #[test]
    fn reads_topic_rules() {
        let topics = r#"{"allow":["chat.*","news"],"deny":["chat.admin"],"publish":["chat.?"]}"#;
        let claims = c09().validate(&hs256(&claims(&[("wse_topics", topics)])), NOW).unwrap();
        let rules = claims.topics.unwrap();
        assert_eq!(rules.allow, ["chat.*", "news"]);
        assert_eq!(rules.deny, ["chat.admin"]);
        assert_eq!(rules.publish, ["chat.?"]);

        let partial = hs256(&claims_topics(r#"{"deny":["x"],"future":["y"]}"#));
        let rules = c09().validate(&partial, NOW).unwrap().topics.unwrap();
        assert_eq!(rules, TopicRules { deny: vec!["x".into()], ..TopicRules::default() });
    }

    fn claims_topics(topics: &str) -> String {
        claims(&[("wse_topics", topics)])
    }

    #[test]
    fn malformed_topic_rules_are_refused() {
        for topics in [
            r#"["chat.*"]"#,
            r#""chat.*""#,
            r#"{"allow":"chat.*"}"#,
            r#"{"allow":["chat.*",1]}"#,
            r#"{"deny":{"a":1}}"#,
            r#"{"publish":[null]}"#,
            // `claims` reads a bare "null" as "remove the field".
            " null",
        ] {
            let token = hs256(&claims_topics(topics));
            let outcome = c09().validate(&token, NOW);
            assert_eq!(outcome, Err(AuthError::Invalid("malformed wse_topics")), "{topics}");
        }
    }

    #[test]
    fn malformed_compact_forms_are_refused() {
        let good = hs256(&claims(&[]));
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "a.b".into(),
            format!("{good}.x"),
            format!("{}.{}", parts[0], parts[1]),
            format!("!!.{}.{}", parts[1], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}!", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", b64("[1]"), parts[1], parts[2]),
            format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        ];
        for token in &cases {
            assert!(matches!(c09().validate(token, NOW), Err(AuthError::Invalid(_))), "{token:?}");
        }
    }

    #[test]
    fn payload_that_is_not_an_object_is_refused() {
        for payload in ["[1,2]", "\"x\"", "not json"] {
            assert!(c09().validate(&hs256(payload), NOW).is_err(), "{payload}");
        }
    }

    #[test]
    fn critical_header_and_foreign_typ_are_refused() {
        let crit = r#"{"alg":"HS256","crit":["exp"],"exp":1}"#;
        let token = hmac_token(crit, &claims(&[]), SECRET, hmac::HMAC_SHA256);
        assert_eq!(refused(&c09(), &token), "unsupported critical header");
        let typ = r#"{"alg":"HS256","typ":"at+jwt"}"#;
        assert!(c09()
            .validate(&hmac_token(typ, &claims(&[]), SECRET, hmac::HMAC_SHA256), NOW)
            .is_ok());
        let foreign = r#"{"alg":"HS256","typ":"JOSE"}"#;
        let token = hmac_token(foreign, &claims(&[]), SECRET, hmac::HMAC_SHA256);
        assert_eq!(refused(&c09(), &token), "not a jwt");
    }

    #[test]
    fn reasons_never_contain_the_token() {
        let token = hs256(&claims(&[("exp", "1")]));
        let err = c09().validate(&token, NOW).unwrap_err().to_string();
        assert!(!err.contains(&token[..20]) && !err.contains("user-1"), "{err}");
    }

    #[test]
    fn validator_is_send_and_sync_and_hides_keys() {
        fn shared<T: Send + Sync>() {}
        shared::<JwtValidator>();
        let debug = format!("{:?} {:?}", c09(), c09_config());
        assert!(!debug.contains("c09-secret") && !debug.contains("99, 48, 57"), "{debug}");
    }
}
