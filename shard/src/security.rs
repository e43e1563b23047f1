//! Who may connect, and what their messages must look like (PROTOCOL.md §2, §5, §6).
//!
//! Place: `handshake → **security** → session`, and `session → **security** → outqueue`.
//! Built once at start-up from [`Security`]: the JWT validator (keys parsed and checked
//! there, so a bad key stops the server before it listens) and the shared signing key. The
//! handshake asks [`Guard::check_origin`] and [`Guard::admit`]; the session asks which
//! outbound messages to sign or leave in plaintext. The cryptography itself lives in
//! `wse_protocol` (`auth`, `e2e`, `signing`); the decisions about sockets and close codes live
//! in `conn/`.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use wse_fanout::acl::TopicAcl;
use wse_protocol::auth::{self, AuthError, JwtAlgorithm, JwtConfig, JwtValidator};
use wse_protocol::handshake::Request;
use wse_protocol::signing::SigningKey;

use crate::config::{JwtSettings, Security};
use crate::Error;

/// The start-up half of the security settings: parsed keys, ready for every shard.
pub(crate) struct Guard {
    jwt: Option<JwtValidator>,
    /// The shared HMAC key for connections without E2E.
    signing: Option<SigningKey>,
}

/// Who an admitted connection belongs to, from a validated token.
pub(crate) struct Identity {
    /// The token's `sub`.
    pub user_id: Box<str>,
    /// The token's `exp`, in Unix seconds.
    pub expires_at: u64,
    /// The topic ACL from the `wse_topics` claim, when the token has one.
    pub acl: Option<Box<TopicAcl>>,
}

/// The handshake's answer about a request that carries (or lacks) credentials.
pub(crate) enum Admission {
    /// No JWT configured: anyone may connect.
    Anonymous,
    /// A valid token.
    User(Identity),
    /// No token, or a bad one.
    Refused(AuthError),
}

impl Guard {
    /// Parses and checks the keys; every error names the setting.
    pub(crate) fn new(security: &Security) -> Result<Guard, Error> {
        let jwt = security.jwt.as_ref().map(validator).transpose()?;
        let signing = security.signing_secret.as_ref().map(|s| SigningKey::from_secret(&s.0));
        Ok(Guard { jwt, signing })
    }

    /// Whether JWT validation is on.
    pub(crate) fn requires_token(&self) -> bool {
        self.jwt.is_some()
    }

    /// Whether a request's `Origin` may connect. A request without `Origin` (a non-browser
    /// client, which no cross-site page can drive) passes; browsers always send it.
    pub(crate) fn check_origin(&self, security: &Security, request: &Request) -> bool {
        if security.allowed_origins.is_empty() {
            return true;
        }
        let Some(origin) = request.header("origin") else { return true };
        let origin = origin.trim_ascii();
        security
            .allowed_origins
            .iter()
            .any(|allowed| origin.eq_ignore_ascii_case(allowed.as_bytes()))
    }

    /// Validates the request's token, when JWT is configured.
    pub(crate) fn admit(&self, security: &Security, request: &Request) -> Admission {
        let Some(jwt) = &self.jwt else { return Admission::Anonymous };
        let token = match auth::find_token(request, &security.cookie_name, security.query_token) {
            Ok(token) => token,
            Err(error) => return Admission::Refused(error),
        };
        match jwt.validate(&token, unix_secs()) {
            Ok(claims) => Admission::User(Identity {
                user_id: claims.user_id.into_boxed_str(),
                expires_at: claims.expires_at,
                acl: claims.topics.as_ref().map(|rules| Box::new(TopicAcl::new(rules))),
            }),
            Err(error) => Admission::Refused(error),
        }
    }

    /// The shared signing key, when one is configured.
    pub(crate) fn signing_key(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("jwt", &self.jwt.is_some())
            .field("signing", &self.signing.is_some())
            .finish()
    }
}

/// Whether outbound messages of type `t` are signed under these settings.
pub(crate) fn signs(security: &Security, t: &str) -> bool {
    security.sign_outbound.iter().any(|s| s == "*" || s == t)
}

/// Whether a message of type `t` stays plaintext on an E2E connection (PROTOCOL.md §5:
/// `server_hello`, heartbeats and `error`).
pub(crate) fn stays_plaintext(t: &str) -> bool {
    matches!(t, "server_hello" | "error" | "ping" | "PONG")
}

/// Seconds since the Unix epoch (wall clock: token times are wall-clock times).
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Builds the validator from the configured settings.
fn validator(settings: &JwtSettings) -> Result<JwtValidator, Error> {
    let algorithm: JwtAlgorithm = settings.algorithm.parse().map_err(|_| {
        bad(format!("jwt_algorithm {:?} is not one of HS256, RS256, ES256", settings.algorithm))
    })?;
    let config = JwtConfig {
        algorithm,
        key: settings.key.0.clone(),
        previous_key: settings.previous_key.as_ref().map(|k| k.0.clone()),
        issuer: settings.issuer.clone(),
        audience: settings.audience.clone(),
        key_id: settings.key_id.clone(),
        leeway_secs: JWT_LEEWAY_SECS,
    };
    JwtValidator::new(config).map_err(|e| bad(format!("jwt: {e}")))
}

fn bad(message: String) -> Error {
    Error::Config(message)
}

/// Text for the body of a 401: the reason, never the token.
pub(crate) fn refusal_text(error: &AuthError) -> Cow<'static, str> {
    match error {
        AuthError::Missing => Cow::Borrowed("authentication required\n"),
        AuthError::Invalid(reason) => Cow::Owned(format!("authentication failed: {reason}\n")),
    }
}

/// Clock skew allowed on `exp` and `nbf` (PROTOCOL.md §2).
const JWT_LEEWAY_SECS: u64 = 30;
