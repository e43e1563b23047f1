//! Authentication at the upgrade: where the token is, whether it is valid, what it grants.
//!
//! Place in the data path: `socket → shard → protocol (handshake → **auth**)`, once per
//! connection, before the `101` (PROTOCOL.md §2). The shard parses the upgrade request, calls
//! [`find_token`] on it, then [`JwtValidator::validate`] with the current time, and either
//! admits the connection as [`Claims::user_id`] (with the topic rules of
//! [`Claims::topics`], which `fanout` compiles into an ACL) or answers with
//! [`AuthError::wire_code`] and close 4401 (or HTTP 401).
//!
//! Left to others: the auth-failure mode (`close` or `reject`), the clock, logging (the
//! [`AuthError`] reasons are safe to log; tokens never are), and re-checking `exp` while a
//! connection stays open.

mod jwt;
mod token;

pub use jwt::{JwtAlgorithm, JwtConfig, JwtValidator, DEFAULT_LEEWAY_SECS, MAX_TOKEN_BYTES};
pub use token::find_token;

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The `sub` claim, a non-empty string: the connection's user id.
    pub user_id: String,
    /// The `exp` claim in unix seconds (fractions dropped); the shard closes the connection
    /// with 4403 when it passes.
    pub expires_at: u64,
    /// The `wse_topics` claim, when the token carries one. `None` means no topic ACL at all.
    pub topics: Option<TopicRules>,
}

/// The `wse_topics` claim: glob lists (`*` and `?`) for the connection's topic ACL.
///
/// A missing list is empty. See `wse_fanout::acl` for what the lists mean.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicRules {
    /// Topics the connection may subscribe to and receive; empty allows every topic.
    pub allow: Vec<String>,
    /// Topics it may never subscribe to, receive or publish to; deny wins over allow.
    pub deny: Vec<String>,
    /// Topics it may publish to (**ext**); empty allows none.
    pub publish: Vec<String>,
}

/// Why a connection is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carries no token at all. Answer `AUTH_REQUIRED`, then close 4401 (or
    /// HTTP 401 in `reject` mode).
    #[error("no token")]
    Missing,
    /// A token was found but is malformed, forged, expired or not meant for this server.
    /// The reason is a short lowercase phrase, safe for logs and the 401 body: it never
    /// contains the token or any claim value. Answer `AUTH_FAILED`, then close 4401.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

impl AuthError {
    /// The `error` message code to send before close 4401 (PROTOCOL.md §2).
    pub fn wire_code(&self) -> &'static str {
        match self {
            AuthError::Missing => "AUTH_REQUIRED",
            AuthError::Invalid(_) => "AUTH_FAILED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_follow_protocol_section_2() {
        assert_eq!(AuthError::Missing.wire_code(), "AUTH_REQUIRED");
        assert_eq!(AuthError::Invalid("bad signature").wire_code(), "AUTH_FAILED");
    }

    #[test]
    fn error_text_carries_only_the_reason() {
        assert_eq!(AuthError::Invalid("token expired").to_string(), "invalid token: token expired");
        assert_eq!(AuthError::Missing.to_string(), "no token");
    }
}
