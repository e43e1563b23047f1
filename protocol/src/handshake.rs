//! The HTTP/1.1 opening handshake (RFC 6455 §4.2) and plain HTTP responses.
//!
//! Place in the data path: `socket → shard → **protocol (handshake)**`, before any frame. The
//! shard accumulates the bytes of a new connection and calls [`parse_request`] until it yields
//! a [`Request`]; [`validate_upgrade`] then decides whether it is a WebSocket upgrade, and
//! [`switching_protocols`] or [`error_response`] give the bytes to answer with. Plain HTTP
//! endpoints (health, metrics) use [`http_response`].
//!
//! Left to others: authentication and admission (the token sources are exposed through
//! [`Request::header`], [`Request::cookie`] and [`Request::query_param`]), routing by path,
//! permessage-deflate negotiation (the raw offer is passed on in [`Upgrade::extensions`] to
//! [`crate::extensions`]), and the handshake deadline, which needs a clock.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tungstenite::handshake::derive_accept_key;

use crate::Error;

/// Caps on the size of a request head, checked by [`parse_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// The most bytes a request head may take, request line and final blank line included.
    pub max_header_bytes: usize,
    /// The most header lines a request may carry.
    pub max_header_lines: usize,
}

impl Default for HandshakeLimits {
    /// 16 KiB and 100 lines (PROTOCOL.md §1).
    fn default() -> Self {
        HandshakeLimits { max_header_bytes: 16 * 1024, max_header_lines: 100 }
    }
}

/// A parsed HTTP request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method as sent (methods are case-sensitive).
    pub method: String,
    /// The request target up to, not including, any `?`.
    pub path: String,
    /// The raw query string after `?`, still percent-encoded.
    pub query: Option<String>,
    /// Header names as sent and raw values, in order; names may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
}

impl Request {
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The value of the first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers_named(name).next()
    }

    /// The values of every header called `name` (case-insensitive), in order.
    pub fn headers_named<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// The first query parameter called `name`, percent-decoded with `+` read as a space.
    ///
    /// `None` when absent or when the decoded value is not UTF-8.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| percent_decode(key).as_deref() == Some(name))
            .and_then(|(_, value)| percent_decode(value))
    }

    /// The value of the first cookie called `name` over all `Cookie` headers (RFC 6265 §5.4),
    /// with surrounding double quotes removed. Cookie names are case-sensitive.
    ///
    /// `None` when absent or when the value is not UTF-8.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let value = self
            .headers_named("cookie")
            .flat_map(|header| header.split(|b| *b == b';'))
            .filter_map(|pair| split_once_byte(pair, b'='))
            .find(|(key, _)| key.trim_ascii() == name.as_bytes())
            .map(|(_, value)| value.trim_ascii())?;
        let value = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
        String::from_utf8(value.to_vec()).ok()
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and within the caps, else the request and
/// the number of bytes its head took (anything after belongs to the connection). Runs in time
/// linear in `min(buf.len(), max_header_bytes)` and never panics.
///
/// # Errors
///
/// - [`Error::HeadersTooLarge`] when the head has more lines than `max_header_lines` or is
///   longer than `max_header_bytes` (decided as soon as the buffer holds more than that);
/// - [`Error::BadRequest`] when the bytes are not an HTTP/1.x request head.
pub fn parse_request(
    buf: &[u8],
    limits: &HandshakeLimits,
) -> Result<Option<(Request, usize)>, Error> {
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_header_lines];
    let mut parsed = httparse::Request::new(&mut headers);

    let used = match parsed.parse(window) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_header_bytes => {
            return Err(Error::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadersTooLarge),
        Err(_) => return Err(Error::BadRequest("malformed request head")),
    };
    Ok(Some((to_request(&parsed)?, used)))
}

/// What a valid upgrade request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value answering the request's key.
    pub accept: String,
    /// The raw `Sec-WebSocket-Extensions` offer (all such headers joined with `", "`), for
    /// the extension negotiation to parse; `None` when the request had none.
    pub extensions: Option<String>,
}

/// Checks that `req` is a WebSocket opening handshake (RFC 6455 §4.2.1).
///
/// # Errors
///
/// - [`Error::MethodNotAllowed`] when the method is not `GET`;
/// - [`Error::UnsupportedVersion`] when `Sec-WebSocket-Version` is missing or not 13;
/// - [`Error::BadRequest`] for HTTP/1.0, a missing `Host`, an `Upgrade` list without
///   `websocket`, a `Connection` list without `upgrade`, or a `Sec-WebSocket-Key` that is
///   missing, repeated or not the base64 form of 16 bytes.
pub fn validate_upgrade(req: &Request) -> Result<Upgrade, Error> {
    if req.method != "GET" {
        return Err(Error::MethodNotAllowed);
    }
    if req.version < 1 {
        return Err(Error::BadRequest("http/1.1 or later required"));
    }
    if req.header("host").is_none() {
        return Err(Error::BadRequest("missing host header"));
    }
    if !has_token(req.headers_named("upgrade"), "websocket") {
        return Err(Error::BadRequest("upgrade header does not name websocket"));
    }
    if !has_token(req.headers_named("connection"), "upgrade") {
        return Err(Error::BadRequest("connection header does not name upgrade"));
    }
    if req.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Error::UnsupportedVersion);
    }

    let key = websocket_key(req)?;
    Ok(Upgrade { accept: derive_accept_key(key), extensions: extension_offer(req) })
}

/// The `101 Switching Protocols` response for `upgrade`, with `extra_headers` appended
/// (for example a negotiated `Sec-WebSocket-Extensions`).
///
/// Extra headers whose name or value contains CR or LF are left out, so a caller can never
/// split the response.
pub fn switching_protocols(upgrade: &Upgrade, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    push_header(&mut out, "Upgrade", "websocket");
    push_header(&mut out, "Connection", "Upgrade");
    push_header(&mut out, "Sec-WebSocket-Accept", &upgrade.accept);
    for (name, value) in extra_headers {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A complete HTTP/1.1 response with `Content-Type`, `Content-Length` and `Connection:
/// close`, then `extra_headers` (CR/LF-carrying ones left out) and `body`.
pub fn http_response(
    status: u16,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    push_header(&mut out, "Content-Type", content_type);
    push_header(&mut out, "Content-Length", &body.len().to_string());
    push_header(&mut out, "Connection", "close");
    for (name, value) in extra_headers {
        push_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The response for a failed handshake: the status of [`Error::http_status`] (400 for errors
/// that have none) and the error's message as a one-line `text/plain` body. A 426 lists
/// `Sec-WebSocket-Version: 13` and a 405 `Allow: GET`.
pub fn error_response(err: &Error) -> Vec<u8> {
    let status = err.http_status().unwrap_or(400);
    let body = format!("{err}\n");
    let extra: &[(&str, &str)] = match status {
        405 => &[("Allow", "GET")],
        426 => &[("Sec-WebSocket-Version", "13")],
        _ => &[],
    };
    http_response(status, extra, "text/plain; charset=utf-8", body.as_bytes())
}

/// Copies httparse's borrowed view into an owned [`Request`].
fn to_request(parsed: &httparse::Request<'_, '_>) -> Result<Request, Error> {
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Error::BadRequest("incomplete request line"));
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let headers = parsed.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
    Ok(Request { method: method.to_owned(), path: path.to_owned(), query, headers, version })
}

/// The request's single `Sec-WebSocket-Key`, checked to be base64 of 16 bytes (§4.2.1 item 5).
fn websocket_key(req: &Request) -> Result<&[u8], Error> {
    let mut keys = req.headers_named("sec-websocket-key");
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(Error::BadRequest("need exactly one sec-websocket-key header"));
    };
    let key = key.trim_ascii();
    match STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 => Ok(key),
        _ => Err(Error::BadRequest("sec-websocket-key is not 16 bytes in base64")),
    }
}

/// All `Sec-WebSocket-Extensions` values joined into one list, if there are any.
fn extension_offer(req: &Request) -> Option<String> {
    let offers: Vec<_> = req
        .headers_named("sec-websocket-extensions")
        .map(|value| String::from_utf8_lossy(value.trim_ascii()).into_owned())
        .collect();
    (!offers.is_empty()).then(|| offers.join(", "))
}

/// Whether any of the comma-separated lists in `values` holds `token` (case-insensitive,
/// whitespace around list items ignored).
fn has_token<'a>(values: impl Iterator<Item = &'a [u8]>, token: &str) -> bool {
    values
        .flat_map(|value| value.split(|b| *b == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Appends `name: value\r\n`, unless either contains CR or LF.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let breaks_line = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
    if breaks_line(name) || breaks_line(value) {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Splits `bytes` at the first `sep`, dropping it.
fn split_once_byte(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|b| *b == sep)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Decodes `%XX` escapes and `+` (as space); a `%` not followed by two hex digits stays as is.
/// `None` if the result is not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i..] {
            [b'%', hi, lo, ..] => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => (out.push(byte), i += 3),
            (None, b'+') => (out.push(b' '), i += 1),
            (None, byte) => (out.push(byte), i += 1),
        };
    }
    String::from_utf8(out).ok()
}

/// The value of one hexadecimal digit.
fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|v| v as u8)
}

/// The standard reason phrase for the statuses this engine sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// H0 of the fault cases, with `Host` fixed.
    const H0: &str = "GET /wse HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n\
                      Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                      Sec-WebSocket-Version: 13\r\n\r\n";
    const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn parse(text: &str) -> Result<Option<(Request, usize)>, Error> {
        parse_request(text.as_bytes(), &HandshakeLimits::default())
    }

    fn parsed(text: &str) -> Request {
        parse(text).expect("parses").expect("complete").0
    }

    /// H0 with the line starting with `name:` replaced by `line` (removed when `line` is
    /// empty).
    fn h0_with(name: &str, line: &str) -> String {
        let mut out = String::new();
        for l in H0.split_inclusive("\r\n") {
            if !l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())) {
                out.push_str(l);
            } else if !line.is_empty() {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out
    }

    fn status_of(response: &[u8]) -> &str {
        std::str::from_utf8(&response[9..12]).unwrap()
    }

    #[test]
    fn derives_the_rfc_6455_sample_accept_key() {
        let (req, used) = parse(H0).unwrap().unwrap();
        assert_eq!(used, H0.len());
        let upgrade = validate_upgrade(&req).unwrap();
        assert_eq!(upgrade.accept, SAMPLE_ACCEPT);
        assert_eq!(upgrade.extensions, None);
    }

    #[test]
    fn answers_with_101_carrying_the_accept_key() {
        let upgrade = validate_upgrade(&parsed(H0)).unwrap();
        let response = switching_protocols(&upgrade, &[("X-Wse", "1")]);
        let expected = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {SAMPLE_ACCEPT}\r\nX-Wse: 1\r\n\r\n"
        );
        assert_eq!(String::from_utf8(response).unwrap(), expected);
    }

    #[test]
    fn c01_accepts_list_valued_and_case_insensitive_headers() {
        let variants = [
            h0_with("connection", "Connection: keep-alive, Upgrade"),
            h0_with("connection", "connection: upgrade")
                .replace("Upgrade: websocket", "upgrade: WebSocket"),
            h0_with("connection", "Connection: Upgrade, HTTP2-Settings"),
            h0_with("connection", "Connection: Upgrade ,x"),
            h0_with("connection", "Connection: keep-alive\r\nConnection: upgrade"),
            h0_with("upgrade", "Upgrade: h2c, websocket"),
            h0_with("host", "host: example.com\r\nAuthorization: bearer abc.def.ghi"),
        ];
        for request in &variants {
            let upgrade = validate_upgrade(&parsed(request));
            assert_eq!(upgrade.map(|u| u.accept).as_deref(), Ok(SAMPLE_ACCEPT), "{request}");
        }
    }

    #[test]
    fn c01_rejects_missing_upgrade_header_with_400() {
        let err = validate_upgrade(&parsed(&h0_with("upgrade", ""))).unwrap_err();
        assert_eq!(err.http_status(), Some(400));
        let err = validate_upgrade(&parsed(&h0_with("upgrade", "Upgrade: h2c"))).unwrap_err();
        assert_eq!(err.http_status(), Some(400));
    }

    #[test]
    fn c01_rejects_connection_without_upgrade_token() {
        for line in ["", "Connection: keep-alive", "Connection: upgrades", "Connection: up grade"] {
            let err = validate_upgrade(&parsed(&h0_with("connection", line))).unwrap_err();
            assert_eq!(err.http_status(), Some(400), "{line:?}");
        }
    }

    #[test]
    fn c01_rejects_missing_or_malformed_key_with_400() {
        let lines = [
            "",
            "Sec-WebSocket-Key: abc",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXg=",
            concat!(
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
            ),
        ];
        for line in lines {
            let err = validate_upgrade(&parsed(&h0_with("sec-websocket-key", line))).unwrap_err();
            assert!(matches!(err, Error::BadRequest(_)), "{line:?}: {err:?}");
        }
    }

    #[test]
    fn c01_rejects_version_other_than_13_with_426_listing_13() {
        for line in ["Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 14", ""] {
            let request = parsed(&h0_with("sec-websocket-version", line));
            let err = validate_upgrade(&request).unwrap_err();
            assert_eq!(err, Error::UnsupportedVersion, "{line:?}");
            let response = String::from_utf8(error_response(&err)).unwrap();
            assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{response}");
            assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{response}");
        }
    }

    #[test]
    fn c01_rejects_post_with_405() {
        let err = validate_upgrade(&parsed(&H0.replacen("GET", "POST", 1))).unwrap_err();
        assert_eq!(err, Error::MethodNotAllowed);
        let response = String::from_utf8(error_response(&err)).unwrap();
        assert!(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(response.contains("\r\nAllow: GET\r\n"));
    }

    #[test]
    fn c01_rejects_2000_header_lines_with_431() {
        let filler: String = (0..2000).map(|i| format!("x-h{i:04}: x\r\n")).collect();
        let request = H0.replacen("Upgrade: websocket", &format!("{filler}Upgrade: websocket"), 1);
        assert_eq!(parse(&request).unwrap_err(), Error::HeadersTooLarge);
        for cut in [1500, 12_000, 16 * 1024, 16 * 1024 + 1, 20_000] {
            assert_eq!(parse(&request[..cut]).map(|_| ()), Err(Error::HeadersTooLarge), "{cut}");
        }
        let response = error_response(&Error::HeadersTooLarge);
        assert_eq!(status_of(&response), "431");
    }

    #[test]
    fn c01_rejects_head_over_byte_cap_even_with_few_lines() {
        let big = format!("X-Big: {}", "y".repeat(17 * 1024));
        let request = h0_with("host", &format!("Host: a\r\n{big}"));
        assert_eq!(parse(&request).unwrap_err(), Error::HeadersTooLarge);
        assert_eq!(parse(&request[..16 * 1024]).unwrap_err(), Error::HeadersTooLarge);
        assert_eq!(parse(&request[..16 * 1024 - 1]), Ok(None));
    }

    #[test]
    fn c01_accepts_head_of_exactly_the_byte_cap() {
        let limits = HandshakeLimits { max_header_bytes: H0.len(), max_header_lines: 5 };
        assert!(parse_request(H0.as_bytes(), &limits).unwrap().is_some());
        let limits = HandshakeLimits { max_header_bytes: H0.len() - 1, ..limits };
        assert_eq!(parse_request(H0.as_bytes(), &limits).unwrap_err(), Error::HeadersTooLarge);
        let limits = HandshakeLimits { max_header_bytes: H0.len(), max_header_lines: 4 };
        assert_eq!(parse_request(H0.as_bytes(), &limits).unwrap_err(), Error::HeadersTooLarge);
    }

    #[test]
    fn c01_rejects_missing_host_and_http_1_0_with_400() {
        let err = validate_upgrade(&parsed(&h0_with("host", ""))).unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)));
        let err = validate_upgrade(&parsed(&H0.replacen("HTTP/1.1", "HTTP/1.0", 1))).unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)));
    }

    #[test]
    fn c01_keeps_raw_authorization_bytes_for_the_auth_layer() {
        let mut request = h0_with("host", "Host: a\r\nauthorization: Bearer").into_bytes();
        let at = request.windows(6).position(|w| w == b"Bearer").unwrap() + 6;
        request.splice(at..at, [0xc3, 0xa9, b'x']);
        let (req, _) = parse_request(&request, &HandshakeLimits::default()).unwrap().unwrap();
        assert_eq!(req.header("AUTHORIZATION"), Some(&b"Bearer\xc3\xa9x"[..]));
    }

    #[test]
    fn waits_for_more_bytes_on_every_prefix_of_h0() {
        for cut in 0..H0.len() {
            assert_eq!(parse(&H0[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn reports_head_length_and_leaves_following_bytes() {
        let mut bytes = H0.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4]);
        let (_, used) = parse_request(&bytes, &HandshakeLimits::default()).unwrap().unwrap();
        assert_eq!(used, H0.len());
    }

    #[test]
    fn rejects_malformed_request_lines_with_400() {
        for bad in ["GET /wse HTTP/2.0\r\n\r\n", "GET\r\n\r\n", "G\u{0}T / HTTP/1.1\r\n\r\n"] {
            assert!(matches!(parse(bad), Err(Error::BadRequest(_))), "{bad:?}");
        }
        let bad_header = "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n";
        assert!(matches!(parse(bad_header), Err(Error::BadRequest(_))));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (state >> 33) as u8
        };
        for round in 0..2000 {
            let mut bytes = H0.as_bytes().to_vec();
            for _ in 0..(round % 7 + 1) {
                let at = usize::from(next()) % bytes.len();
                bytes[at] = next();
            }
            let len = bytes.len() - usize::from(next()) % 20;
            if let Ok(Some((req, _))) = parse_request(&bytes[..len], &HandshakeLimits::default()) {
                let _ = validate_upgrade(&req).map_err(|e| error_response(&e));
            }
        }
    }

    #[test]
    fn splits_path_and_query() {
        let req = parsed(&H0.replacen("/wse", "/wse?token=abc&format=msgpack", 1));
        assert_eq!(
            (req.path.as_str(), req.query.as_deref()),
            ("/wse", Some("token=abc&format=msgpack"))
        );
        assert_eq!(parsed(H0).query, None);
        assert_eq!(parsed(H0).version(), 1);
    }

    #[test]
    fn decodes_query_parameters() {
        let req = parsed(&H0.replacen("/wse", "/wse?a=1&t%6fken=x%2By+z%zz&empty&bad=%ff", 1));
        assert_eq!(req.query_param("token").as_deref(), Some("x+y z%zz"));
        assert_eq!(req.query_param("a").as_deref(), Some("1"));
        assert_eq!(req.query_param("empty").as_deref(), Some(""));
        assert_eq!(req.query_param("bad"), None);
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn reads_cookies_across_headers() {
        let cookies = "Cookie: theme=dark; session=1\r\ncookie: access_token=\"abc.def\"; x=";
        let req = parsed(&h0_with("host", &format!("Host: a\r\n{cookies}")));
        assert_eq!(req.cookie("access_token").as_deref(), Some("abc.def"));
        assert_eq!(req.cookie("session").as_deref(), Some("1"));
        assert_eq!(req.cookie("x").as_deref(), Some(""));
        assert_eq!(req.cookie("Session"), None);
    }

    #[test]
    fn finds_headers_case_insensitively_in_order() {
        let req = parsed(&h0_with("host", "Host: a\r\nX-Multi: 1\r\nx-multi: 2"));
        assert_eq!(req.header("HOST"), Some(&b"a"[..]));
        assert_eq!(req.headers_named("X-MULTI").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
    }

    #[test]
    fn passes_extension_offers_on_raw() {
        let offers = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
                      sec-websocket-extensions: x-foo";
        let req = parsed(&h0_with("host", &format!("Host: a\r\n{offers}")));
        let offer = validate_upgrade(&req).unwrap().extensions;
        assert_eq!(offer.as_deref(), Some("permessage-deflate; client_max_window_bits, x-foo"));
    }

    #[test]
    fn builds_plain_http_response_with_length_and_close() {
        let response = http_response(200, &[("Cache-Control", "no-store")], "text/plain", b"ok\n");
        let expected = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
                        Connection: close\r\nCache-Control: no-store\r\n\r\nok\n";
        assert_eq!(String::from_utf8(response).unwrap(), expected);
    }

    #[test]
    fn leaves_out_extra_headers_that_would_split_the_response() {
        let response = http_response(503, &[("Retry-After", "1\r\nX-Evil: 1")], "text/plain", b"");
        let text = String::from_utf8(response).unwrap();
        assert!(!text.contains("Evil") && text.starts_with("HTTP/1.1 503 Service Unavailable"));
    }

    #[test]
    fn error_response_uses_the_error_status_and_one_line_body() {
        for (err, status) in [
            (Error::BadRequest("x"), "400"),
            (Error::MethodNotAllowed, "405"),
            (Error::UnsupportedVersion, "426"),
            (Error::HeadersTooLarge, "431"),
        ] {
            let response = String::from_utf8(error_response(&err)).unwrap();
            assert_eq!(status_of(response.as_bytes()), status);
            let body = response.split("\r\n\r\n").nth(1).unwrap();
            assert_eq!(body, format!("{err}\n"));
        }
    }
}
