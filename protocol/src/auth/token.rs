//! Finding the token in an upgrade request (PROTOCOL.md §2, token sources).

use std::borrow::Cow;

use super::AuthError;
use crate::handshake::Request;

/// Finds the token in an upgrade request.
///
/// Sources, first found wins: the cookie `cookie_name` (the values `""`, `"undefined"` and
/// `"null"` count as absent, as browsers' clients send them after a logout), then
/// `Authorization: Bearer <token>` (scheme case-insensitive; only the first `Authorization`
/// header is read), then, when `query` is true, the `token` query parameter
/// (percent-decoded; empty counts as absent). An `Authorization` header with another scheme
/// (`Basic ...`) is not a bearer credential and counts as absent.
///
/// The token is not validated here; only its transport is.
///
/// # Errors
///
/// - [`AuthError::Invalid`] when the only credential is a malformed `Authorization` header:
///   a truncated scheme (`Bear`), `Bearer` without a token, or a token with bytes outside
///   visible ASCII (such as UTF-8 right after the scheme);
/// - [`AuthError::Missing`] when no source holds a token.
pub fn find_token<'r>(
    request: &'r Request,
    cookie_name: &str,
    query: bool,
) -> Result<Cow<'r, str>, AuthError> {
    if let Some(token) = request.cookie(cookie_name).filter(|v| !is_absent_cookie(v)) {
        return Ok(Cow::Owned(token));
    }

    let header = request.header("authorization").map(bearer_token).unwrap_or(Ok(None));
    if let Ok(Some(token)) = header {
        return Ok(Cow::Borrowed(token));
    }

    if query {
        if let Some(token) = request.query_param("token").filter(|v| !v.is_empty()) {
            return Ok(Cow::Owned(token));
        }
    }
    match header {
        Err(reason) => Err(AuthError::Invalid(reason)),
        Ok(_) => Err(AuthError::Missing),
    }
}

/// Reads an `Authorization` value: `Ok(Some(token))` for a well-formed bearer credential,
/// `Ok(None)` for another scheme, `Err(reason)` for a malformed one.
fn bearer_token(value: &[u8]) -> Result<Option<&str>, &'static str> {
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &b""[..]),
    };

    if !starts_with_ignore_case(scheme, BEARER) {
        // `Bear`, `B` or nothing: a bearer scheme cut short. Anything else is another scheme.
        return match starts_with_ignore_case(BEARER, scheme) {
            true => Err("malformed authorization header"),
            false => Ok(None),
        };
    }
    if scheme.len() != BEARER.len() {
        return Err("malformed authorization header");
    }

    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err("empty bearer token");
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err("malformed bearer token");
    }
    // Visible ASCII only, so this conversion cannot fail.
    std::str::from_utf8(token).map(Some).map_err(|_| "malformed bearer token")
}

/// Whether a cookie value stands for "no token": what clients store after a logout.
fn is_absent_cookie(value: &str) -> bool {
    matches!(value, "" | "undefined" | "null")
}

/// Whether `bytes` starts with `prefix`, ASCII case-insensitively.
fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The bearer scheme name (RFC 6750 §2.1), compared case-insensitively.
const BEARER: &[u8] = b"Bearer";

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::handshake::{parse_request, HandshakeLimits};

    /// An upgrade request for `target` with `extra` header lines (raw bytes, `\r\n`-joined).
    fn request(target: &str, extra: &[&[u8]]) -> Request {
        let mut head = format!(
            "GET {target} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        .into_bytes();
        for line in extra {
            head.extend_from_slice(line);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        parse_request(&head, &HandshakeLimits::default()).unwrap().unwrap().0
    }

    fn find(req: &Request, query: bool) -> Result<String, AuthError> {
        find_token(req, "access_token", query).map(Cow::into_owned)
    }

    #[test]
    fn finds_token_in_cookie() {
        let req = request("/wse", &[b"Cookie: theme=dark; access_token=c.o.k"]);
        assert_eq!(find(&req, false).unwrap(), "c.o.k");
    }

    #[test]
    fn finds_token_in_bearer_header_borrowed() {
        let req = request("/wse", &[b"Authorization: Bearer h.e.a"]);
        let token = find_token(&req, "access_token", false).unwrap();
        assert!(matches!(token, Cow::Borrowed("h.e.a")));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for line in [&b"authorization: bearer h.e.a"[..], b"AUTHORIZATION: BEARER   h.e.a  "] {
            assert_eq!(find(&request("/wse", &[line]), false).unwrap(), "h.e.a");
        }
    }

    #[test]
    fn query_token_only_when_enabled() {
        let req = request("/wse?format=json&token=q.u.e", &[]);
        assert_eq!(find(&req, false), Err(AuthError::Missing));
        assert_eq!(find(&req, true).unwrap(), "q.u.e");
    }

    #[test]
    fn query_token_is_percent_decoded() {
        let req = request("/wse?token=a%2Eb%2ec&x=1", &[]);
        assert_eq!(find(&req, true).unwrap(), "a.b.c");
    }

    #[test]
    fn cookie_wins_over_header_and_header_over_query() {
        let all = request(
            "/wse?token=q.u.e",
            &[b"Authorization: Bearer h.e.a", b"Cookie: access_token=c.o.k"],
        );
        assert_eq!(find(&all, true).unwrap(), "c.o.k");
        let no_cookie = request("/wse?token=q.u.e", &[b"Authorization: Bearer h.e.a"]);
        assert_eq!(find(&no_cookie, true).unwrap(), "h.e.a");
    }

    #[test]
    fn empty_undefined_and_null_cookies_count_as_absent() {
        for value in ["", "undefined", "null", "\"\""] {
            let cookie = format!("Cookie: access_token={value}");
            let alone = request("/wse", &[cookie.as_bytes()]);
            assert_eq!(find(&alone, false), Err(AuthError::Missing), "{value:?}");
            let with_header = request("/wse", &[cookie.as_bytes(), b"Authorization: Bearer h.e.a"]);
            assert_eq!(find(&with_header, false).unwrap(), "h.e.a", "{value:?}");
        }
    }

    #[test]
    fn other_cookie_names_are_ignored() {
        let req = request("/wse", &[b"Cookie: Access_Token=x; token=y"]);
        assert_eq!(find(&req, true), Err(AuthError::Missing));
        assert_eq!(find_token(&req, "token", false).unwrap(), "y");
    }

    #[test]
    fn nothing_found_is_missing() {
        assert_eq!(find(&request("/wse", &[]), true), Err(AuthError::Missing));
        assert_eq!(find(&request("/wse?token=", &[]), true), Err(AuthError::Missing));
    }

    #[test]
    fn c01_truncated_scheme_as_only_credential_is_invalid() {
        for line in [&b"Authorization: Bear"[..], b"Authorization: B", b"Authorization:"] {
            let err = find(&request("/wse", &[line]), false).unwrap_err();
            assert!(matches!(err, AuthError::Invalid(_)), "{:?}", String::from_utf8_lossy(line));
            assert_eq!(err.wire_code(), "AUTH_FAILED");
        }
    }

    #[test]
    fn c01_non_ascii_after_scheme_is_invalid() {
        let line = b"Authorization: Bearer\xc3\xa9a.b.c";
        assert!(matches!(find(&request("/wse", &[line]), false), Err(AuthError::Invalid(_))));
        let spaced = b"Authorization: Bearer \xc3\xa9a.b.c";
        assert!(matches!(find(&request("/wse", &[spaced]), false), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn bearer_without_token_or_glued_to_it_is_invalid() {
        for line in [
            &b"Authorization: Bearer"[..],
            b"Authorization: Bearer   ",
            b"Authorization: Bearerx.y.z",
        ] {
            let err = find(&request("/wse", &[line]), false).unwrap_err();
            assert!(matches!(err, AuthError::Invalid(_)), "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn token_with_inner_space_is_invalid() {
        let req = request("/wse", &[b"Authorization: Bearer a.b c"]);
        assert!(matches!(find(&req, false), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn malformed_header_gives_way_to_a_query_token() {
        let req = request("/wse?token=q.u.e", &[b"Authorization: Bear"]);
        assert_eq!(find(&req, true).unwrap(), "q.u.e");
        assert!(matches!(find(&req, false), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn other_schemes_count_as_absent() {
        let req = request("/wse", &[b"Authorization: Basic dXNlcjpwYXNz"]);
        assert_eq!(find(&req, false), Err(AuthError::Missing));
        let req = request("/wse?token=q.u.e", &[b"Authorization: Basic dXNlcjpwYXNz"]);
        assert_eq!(find(&req, true).unwrap(), "q.u.e");
    }
}
