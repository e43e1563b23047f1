//! Security of the real `wse-server` over real sockets (PROTOCOL.md §2, §5, §6, §7).
//!
//! JWT admission in both failure modes (case C09 with every token transport, the
//! `Authorization` rows of C01), topic ACLs, token expiry, the origin allow-list, end-to-end
//! encryption with a client built on `wse_protocol::e2e`, signing, and the inbound rate
//! limit. Each test starts its own server process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::json::{self, Value};
use common::token::{self, b64, claims, hs256, sign, valid, SECRET};
use common::*;
use wse_protocol::e2e::{KeyExchange, SessionKeys};
use wse_protocol::signing::{self, SigningKey};

// ---------------------------------------------------------------------------------------
// Case C09: JWT validation in the handshake
// ---------------------------------------------------------------------------------------

/// How a token reaches the server.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Query,
    Cookie,
    Bearer,
}

const TRANSPORTS: [Transport; 3] = [Transport::Query, Transport::Cookie, Transport::Bearer];

/// H0 on `/wse` carrying `token` by `how`: the path and the extra header lines.
fn carry(token: &str, how: Transport) -> (String, Vec<String>) {
    match how {
        Transport::Query => (format!("/wse?token={token}"), Vec::new()),
        Transport::Cookie => ("/wse".into(), vec![format!("Cookie: access_token={token}")]),
        Transport::Bearer => ("/wse".into(), vec![format!("Authorization: Bearer {token}")]),
    }
}

/// The rows of C09 as (row, token, admitted?). Rows 12 and 20 need their own servers.
fn c09_rows() -> Vec<(&'static str, String, bool)> {
    let now = token::now();
    let base = claims("");
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let without = |key: &str| {
        let fields: Vec<String> = claims("")
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .filter(|f| !f.starts_with(&format!("\"{key}\"")))
            .map(str::to_owned)
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let replaced = |key: &str, value: &str| {
        let fields: Vec<String> = without(key)
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(str::to_owned)
            .chain([format!("\"{key}\":{value}")])
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    let tampered = {
        let good = valid();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut payload = parts[1].clone().into_bytes();
        payload[5] = if payload[5] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(payload).unwrap();
        parts.join(".")
    };
    let padded = hs256(&claims(&format!(r#""pad":"{}""#, "x".repeat(9_000))));
    vec![
        ("1 base token", valid(), true),
        ("2 alg none", format!("{header_none}.{}.", b64(base.as_bytes())), false),
        (
            "3 alg None",
            format!("{}.{}.", b64(br#"{"alg":"None","typ":"JWT"}"#), b64(base.as_bytes())),
            false,
        ),
        (
            "3 alg NONE",
            format!("{}.{}.", b64(br#"{"alg":"NONE","typ":"JWT"}"#), b64(base.as_bytes())),
            false,
        ),
        (
            "4 alg none, junk signature",
            format!("{header_none}.{}.AAAA", b64(base.as_bytes())),
            false,
        ),
        ("5 HS384", sign(r#"{"alg":"HS384","typ":"JWT"}"#, &base, SECRET.as_bytes()), false),
        ("5 HS512", sign(r#"{"alg":"HS512","typ":"JWT"}"#, &base, SECRET.as_bytes()), false),
        ("6 RS256 header", sign(r#"{"alg":"RS256","typ":"JWT"}"#, &base, SECRET.as_bytes()), false),
        ("7 tampered payload", tampered, false),
        (
            "8 other secret",
            sign(r#"{"alg":"HS256","typ":"JWT"}"#, &base, b"another-secret-of-32-bytes-00000"),
            false,
        ),
        ("9 other aud", hs256(&replaced("aud", r#""other-service""#)), false),
        ("10 aud array", hs256(&replaced("aud", r#"["other","ws-test"]"#)), true),
        ("11 no aud", hs256(&without("aud")), false),
        ("13 iss ws-issue", hs256(&replaced("iss", r#""ws-issue""#)), false),
        ("13 iss issuer", hs256(&replaced("iss", r#""issuer""#)), false),
        ("13 iss ws-issuer.evil", hs256(&replaced("iss", r#""ws-issuer.evil""#)), false),
        ("14 no iss", hs256(&without("iss")), false),
        ("15 expired", hs256(&replaced("exp", &(now - 120).to_string())), false),
        ("16 expired within leeway", hs256(&replaced("exp", &(now - 5).to_string())), true),
        ("17 nbf ahead", hs256(&claims(&format!(r#""nbf":{}"#, now + 120))), false),
        ("18 nbf within leeway", hs256(&claims(&format!(r#""nbf":{}"#, now + 5))), true),
        ("19 iat ahead", hs256(&replaced("iat", &(now + 2).to_string())), true),
        ("21 oversized", padded, false),
        ("no exp", hs256(&without("exp")), false),
        ("empty sub", hs256(&replaced("sub", r#""""#)), false),
    ]
}

/// Reject mode: every row by every transport gets 101 or 401, nothing else.
#[test]
fn c09_reject_mode_answers_401_before_the_upgrade() {
    let mut flags = token::c09_flags();
    flags.extend(["--auth-failure-mode", "reject", "--allow-client-publish"]);
    let server = Server::start(&flags);
    let mut unharmed = Unharmed::before_with(&server, &auth_header(&valid()));
    for (row, token, admitted) in c09_rows() {
        for how in TRANSPORTS {
            let status = handshake_status(&server, &token, how);
            let expected = if admitted { 101 } else { 401 };
            let acceptable = status == expected || (row.starts_with("21") && status == 431);
            assert!(acceptable, "row {row} via {how:?}: status {status}, want {expected}");
        }
        unharmed.publish_one();
    }
    unharmed.check(&server);
}

/// Close mode: a refused token gets the upgrade, exactly one `error`, then Close 4401;
/// an accepted one gets `server_ready` first.
#[test]
fn c09_close_mode_sends_one_error_then_4401() {
    let mut flags = token::c09_flags();
    flags.push("--allow-client-publish");
    let server = Server::start(&flags);
    let mut unharmed = Unharmed::before_with(&server, &auth_header(&valid()));
    for (row, token, admitted) in c09_rows() {
        for how in TRANSPORTS {
            let (path, extra) = carry(&token, how);
            let mut client = RawClient::connect(server.addr);
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            client.send(h0_request(server.addr, &path, &extra).as_bytes());
            let head = client.read_head(IO_LIMIT).expect("an answer to H0");
            if row.starts_with("21") && head.status == 431 {
                continue;
            }
            assert_eq!(head.status, 101, "row {row} via {how:?}");
            let first = client.read_frame(IO_LIMIT).expect("a first frame");
            let value = json::parse(&first.payload).expect("JSON first frame");
            if admitted {
                assert_eq!(value.str_at("t"), Some("server_ready"), "row {row} via {how:?}");
                continue;
            }
            assert_auth_error(&value, "AUTH_FAILED", row);
            client.expect_close(4401, IO_LIMIT);
        }
        unharmed.publish_one();
    }
    unharmed.check(&server);
    assert!(server.metric("wse_security_events_total{kind=\"auth_failed\"}") > 0.0);
}

/// No token at all: `AUTH_REQUIRED` then 4401 (close mode), 401 (reject mode).
#[test]
fn missing_token_is_auth_required() {
    let server = Server::start(&token::c09_flags());
    let (mut client, first) = open_expecting_frame(&server, "/wse", &[]);
    assert_auth_error(&first, "AUTH_REQUIRED", "no token");
    client.expect_close(4401, IO_LIMIT);

    let mut flags = token::c09_flags();
    flags.extend(["--auth-failure-mode", "reject"]);
    let server = Server::start(&flags);
    let response = http_exchange(server.addr, h0_request(server.addr, "/wse", &[]).as_bytes());
    assert_eq!(response.status, 401);
    assert!(response.body_text().contains("authentication required"));
    assert!(server.metric("wse_handshake_rejections_total{reason=\"unauthorized\"}") >= 1.0);
}

/// Empty, `undefined` and `null` cookies count as absent; the Bearer header then wins.
#[test]
fn placeholder_cookies_fall_through_to_the_bearer_header() {
    let server = Server::start(&token::c09_flags());
    for value in ["", "undefined", "null"] {
        let cookie = format!("Cookie: access_token={value}");
        let bearer = format!("Authorization: Bearer {}", valid());
        let (_client, first) = open_expecting_frame(&server, "/wse", &[&cookie, &bearer]);
        assert_eq!(first.str_at("t"), Some("server_ready"), "cookie {value:?}");
    }
}

/// Case C01, `Authorization` rows: a lower-case scheme is accepted; a cut or non-ASCII
/// scheme is refused with 401.
#[test]
fn c01_authorization_rows() {
    let mut flags = token::c09_flags();
    flags.extend(["--auth-failure-mode", "reject"]);
    let server = Server::start(&flags);
    let lower = format!("Authorization: bearer {}", valid());
    let response =
        http_exchange(server.addr, h0_request(server.addr, "/wse", &[&lower]).as_bytes());
    assert_eq!(response.status, 101);

    let cut = h0_request(server.addr, "/wse", &["Authorization: Bear"]);
    assert_eq!(http_exchange(server.addr, cut.as_bytes()).status, 401);

    let mut raw = h0_request(server.addr, "/wse", &[]).into_bytes();
    let line =
        [b"Authorization: Bearer".as_slice(), &[0xc3, 0xa9], valid().as_bytes(), b"\r\n"].concat();
    raw.splice(raw.len() - 2..raw.len() - 2, line);
    assert_eq!(http_exchange(server.addr, &raw).status, 401);
}

/// Row 12: a server without a configured audience refuses any token that carries `aud`.
#[test]
fn c09_row12_without_audience_a_token_with_aud_is_refused() {
    let flags =
        ["--jwt-secret", SECRET, "--jwt-issuer", token::ISSUER, "--auth-failure-mode", "reject"];
    let server = Server::start(&flags);
    assert_eq!(handshake_status(&server, &valid(), Transport::Bearer), 401);
    let no_aud = hs256(&format!(
        r#"{{"sub":"user-1","iss":"{}","exp":{}}}"#,
        token::ISSUER,
        token::now() + 300
    ));
    assert_eq!(handshake_status(&server, &no_aud, Transport::Bearer), 101);
}

/// Row 20: with a key id configured, a token whose `kid` differs is refused.
#[test]
fn c09_row20_kid_must_match() {
    let mut flags = token::c09_flags();
    flags.extend(["--jwt-key-id", "k1", "--auth-failure-mode", "reject"]);
    let server = Server::start(&flags);
    let with_kid = |kid: &str| {
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#);
        sign(&header, &claims(""), SECRET.as_bytes())
    };
    assert_eq!(handshake_status(&server, &with_kid("k1"), Transport::Bearer), 101);
    assert_eq!(handshake_status(&server, &with_kid("k2"), Transport::Bearer), 401);
    assert_eq!(handshake_status(&server, &valid(), Transport::Bearer), 401);
}

/// Rotation: tokens signed with the previous secret are still accepted.
#[test]
fn previous_secret_still_admits() {
    let previous = "the-previous-secret-0123456789abcdef";
    let mut flags = token::c09_flags();
    flags.extend(["--jwt-previous-secret", previous, "--auth-failure-mode", "reject"]);
    let server = Server::start(&flags);
    let old = sign(r#"{"alg":"HS256","typ":"JWT"}"#, &claims(""), previous.as_bytes());
    assert_eq!(handshake_status(&server, &old, Transport::Bearer), 101);
    assert_eq!(handshake_status(&server, &valid(), Transport::Bearer), 101);
}

/// `sub` becomes the user id in `server_ready`.
#[test]
fn sub_is_the_user_id_in_server_ready() {
    let server = Server::start(&token::c09_flags());
    let (_client, ready) = open_expecting_frame(&server, "/wse", &[&auth_header(&valid())]);
    let details = ready.get("p").and_then(|p| p.get("details")).expect("details");
    assert_eq!(details.str_at("user_id"), Some("user-1"));
    assert_eq!(details.get("features").and_then(|f| f.get("rust_jwt")), Some(&Value::Bool(true)));
}

/// A short secret stops the server at start-up with a message that says why.
#[test]
fn short_secret_is_refused_at_start_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wse-server"))
        .args(["--host", "127.0.0.1", "--port", "0", "--jwt-secret", "too-short"])
        .output()
        .expect("run wse-server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("32"), "stderr: {stderr}");
}

// ---------------------------------------------------------------------------------------
// Topic ACLs and token expiry
// ---------------------------------------------------------------------------------------

/// `wse_topics` allow/deny/publish: forbidden subscriptions fail, a glob subscription never
/// delivers a denied topic, publishing needs a `publish` glob.
#[test]
fn acl_allow_deny_publish() {
    let server = Server::start(&token::c09_flags());
    let limited = hs256(&claims(concat!(
        r#""wse_topics":{"allow":["chat.*","news"],"deny":["chat.secret"],"#,
        r#""publish":["chat.public"]}"#,
    )));
    let admin = hs256(&claims(r#""wse_topics":{"publish":["*"]}"#));
    let (mut user, _) = open_expecting_frame(&server, "/wse", &[&auth_header(&limited)]);
    let answer = user.subscribe("subscribe", &["chat.*", "news", "sports", "chat.secret"]);
    let p = answer.get("p").expect("payload");
    assert_eq!(p.get("success_topics").unwrap().strings(), ["chat.*", "news"]);
    assert_eq!(p.get("failed_topics").unwrap().strings(), ["sports", "chat.secret"]);
    let errors = p.get("errors").expect("errors");
    assert_eq!(errors.str_at("sports"), Some("FORBIDDEN"), "{errors:?}");
    assert_eq!(errors.str_at("chat.secret"), Some("FORBIDDEN"), "{errors:?}");

    let (mut boss, _) = open_expecting_frame(&server, "/wse", &[&auth_header(&admin)]);
    boss.publish("chat.secret", r#"{"n":1}"#);
    boss.publish("chat.room", r#"{"n":2}"#);
    let got = user.next_json(IO_LIMIT);
    assert_eq!(got.str_at("tp"), Some("chat.room"), "denied topic leaked: {got:?}");

    user.publish("chat.room", r#"{"n":3}"#);
    let refused = user.next_json(IO_LIMIT);
    assert_eq!(refused.str_at("t"), Some("error"));
    assert_eq!(refused.get("p").unwrap().str_at("code"), Some("FORBIDDEN"));
    user.publish("chat.public", r#"{"n":4}"#);
    let own = user.next_json(IO_LIMIT);
    assert_eq!(own.str_at("tp"), Some("chat.public"));
    assert!(server.metric("wse_security_events_total{kind=\"forbidden\"}") >= 3.0);
}

/// With `--close-on-token-expiry`, a connection is closed with 4403 once `exp` passes.
#[test]
fn token_expiry_closes_with_4403() {
    let mut flags = token::c09_flags();
    flags.push("--close-on-token-expiry");
    let server = Server::start(&flags);
    let soon = hs256(&claims("").replace(
        &format!(r#""exp":{}"#, token::now() + 300),
        &format!(r#""exp":{}"#, token::now() + 1),
    ));
    let (mut client, ready) = open_expecting_frame(&server, "/wse", &[&auth_header(&soon)]);
    assert_eq!(ready.str_at("t"), Some("server_ready"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let frame = client.read_frame(deadline - Instant::now()).expect("a close within 5 s");
        if frame.opcode() == CLOSE {
            assert_eq!(frame.close_code(), Some(4403));
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Origin allow-list
// ---------------------------------------------------------------------------------------

#[test]
fn unlisted_origin_gets_403() {
    let server = Server::start(&["--allowed-origins", "https://app.example,https://b.example"]);
    let evil = h0_request(server.addr, "/wse", &["Origin: https://evil.example"]);
    let response = http_exchange(server.addr, evil.as_bytes());
    assert_eq!(response.status, 403);
    assert!(response.header("Sec-WebSocket-Accept").is_none());
    let good = h0_request(server.addr, "/wse", &["Origin: https://b.example"]);
    assert_eq!(http_exchange(server.addr, good.as_bytes()).status, 101);
    let none = h0_request(server.addr, "/wse", &[]);
    assert_eq!(http_exchange(server.addr, none.as_bytes()).status, 101);
    assert!(server.metric("wse_handshake_rejections_total{reason=\"origin\"}") >= 1.0);
}

// ---------------------------------------------------------------------------------------
// End-to-end encryption
// ---------------------------------------------------------------------------------------

/// A client that agreed E2E keys with the server.
struct Sealed {
    client: RawClient,
    keys: SessionKeys,
}

impl Sealed {
    /// Opens a connection, sends `client_hello` with a fresh key, reads `server_hello`.
    fn open(server: &Server) -> Sealed {
        let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
        let mine = KeyExchange::generate().expect("client key pair");
        client.send_text(&client_hello(&mine.public_key_b64()));
        let hello = client.next_json(IO_LIMIT);
        assert_eq!(hello.str_at("t"), Some("server_hello"), "{hello:?}");
        let p = hello.get("p").unwrap();
        let encryption = p.get("features").and_then(|f| f.get("encryption"));
        assert_eq!(encryption, Some(&Value::Bool(true)), "2.x clients need features.encryption");
        let theirs = p.str_at("encryption_public_key").expect("server public key");
        let keys = mine.agree(theirs).expect("agreement");
        Sealed { client, keys }
    }

    fn send(&mut self, json: &str) {
        let mut sealed = Vec::new();
        self.keys.seal(json.as_bytes(), &mut sealed).unwrap();
        self.client.send(&masked(FIN | BINARY, &sealed, random_key()));
    }

    /// The next data message: opened if it is an `E:` frame, with whether it was sealed.
    fn next(&mut self) -> (Value, bool) {
        loop {
            let frame = self.client.read_frame(IO_LIMIT).expect("a frame");
            match frame.opcode() {
                PING => self.client.send(&masked(FIN | PONG, &frame.payload, random_key())),
                BINARY => {
                    assert!(frame.payload.starts_with(b"E:"), "binary frame {frame:?}");
                    let plain = self.keys.open(&frame.payload).expect("frame opens");
                    return (json::parse(&plain).expect("JSON inside E:"), true);
                }
                TEXT => {
                    let value = json::parse(&frame.payload).expect("JSON text");
                    if !is_heartbeat(&value) {
                        return (value, false);
                    }
                }
                _ => panic!("unexpected frame {frame:?}"),
            }
        }
    }
}

fn client_hello(public_key: &str) -> String {
    format!(
        concat!(
            r#"{{"t":"client_hello","p":{{"client_version":"test","protocol_version":1,"#,
            r#""features":{{"encryption":true}},"encryption_public_key":"{}"}}}}"#
        ),
        public_key
    )
}

#[test]
fn e2e_round_trip_both_ways() {
    let server = Server::start(&["--allow-client-publish"]);
    let mut sealed = Sealed::open(&server);
    sealed.send(r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["prices"]}}"#);
    let (answer, was_sealed) = sealed.next();
    assert!(was_sealed, "answer must be sealed: {answer:?}");
    assert_eq!(answer.str_at("t"), Some("subscription_update"));

    let (mut publisher, _) = RawClient::open_wse(server.addr, "/wse");
    publisher.publish("prices", r#"{"eur":1.09}"#);
    let (publication, was_sealed) = sealed.next();
    assert!(was_sealed);
    assert_eq!(publication.str_at("tp"), Some("prices"));

    // Heartbeats stay plaintext both ways.
    sealed.client.send_text(r#"{"t":"ping","p":{"timestamp":1}}"#);
    let (pong, was_sealed) = sealed.next();
    assert_eq!(pong.str_at("t"), Some("PONG"));
    assert!(!was_sealed);
    // A sealed ping is answered too (2.x clients seal theirs).
    sealed.send(r#"{"t":"ping","p":{"timestamp":2}}"#);
    let (pong, _) = sealed.next();
    assert_eq!(pong.str_at("t"), Some("PONG"));

    // No downgrade once the client seals.
    sealed
        .client
        .send_text(r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["x"]}}"#);
    let (refusal, was_sealed) = sealed.next();
    assert!(!was_sealed, "errors stay plaintext");
    assert_eq!(refusal.get("p").unwrap().str_at("code"), Some("ENCRYPTION_REQUIRED"));
}

#[test]
fn tampered_ciphertext_is_dropped_counted_and_answered() {
    let server = Server::start(&[]);
    let mut sealed = Sealed::open(&server);
    let mut frame = Vec::new();
    sealed.keys.seal(br#"{"t":"ping","p":{}}"#, &mut frame).unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 1;
    sealed.client.send(&masked(FIN | BINARY, &frame, random_key()));
    server
        .wait_metric("wse_security_events_total{kind=\"decrypt_failed\"}", IO_LIMIT, |v| v >= 1.0);
    let (answer, was_sealed) = sealed.next();
    assert!(!was_sealed, "errors stay plaintext");
    assert_eq!(answer.get("p").unwrap().str_at("code"), Some("DECRYPT_FAILED"));
    // The connection goes on.
    sealed.send(r#"{"t":"ping","p":{"timestamp":3}}"#);
    assert_eq!(sealed.next().0.str_at("t"), Some("PONG"));
}

#[test]
fn bad_client_key_gets_key_exchange_failed_and_stays_plain() {
    let server = Server::start(&[]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    client.send_text(&client_hello("AAAA"));
    let error = client.next_json(IO_LIMIT);
    assert_eq!(error.get("p").unwrap().str_at("code"), Some("KEY_EXCHANGE_FAILED"));
    assert_eq!(error.get("p").unwrap().get("recoverable"), Some(&Value::Bool(true)));
    let hello = client.next_json(IO_LIMIT);
    assert_eq!(hello.str_at("t"), Some("server_hello"));
    assert!(hello.get("p").unwrap().get("encryption_public_key").is_none());
    let answer = client.subscribe("subscribe", &["plain"]);
    assert_eq!(answer.str_at("t"), Some("subscription_update"));
}

// ---------------------------------------------------------------------------------------
// Signing
// ---------------------------------------------------------------------------------------

const SIGNING_SECRET: &str = "signing-secret-for-tests-0123456789";

#[test]
fn outbound_messages_are_signed() {
    let server = Server::start(&[
        "--signing-secret",
        SIGNING_SECRET,
        "--sign-outbound",
        "*",
        "--allow-client-publish",
    ]);
    let key = SigningKey::from_secret(SIGNING_SECRET.as_bytes());
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    client.send_text(r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["s"]}}"#);
    let frame = client.read_frame(IO_LIMIT).unwrap();
    signing::verify(&key, &frame.payload).expect("subscription answer is signed");
    client.publish("s", r#"{"v":1}"#);
    let frame = loop {
        let frame = client.read_frame(IO_LIMIT).unwrap();
        if frame.opcode() == TEXT && !frame.payload.starts_with(br#"{"c":"WSE","t":"ping""#) {
            break frame;
        }
    };
    signing::verify(&key, &frame.payload).expect("publication is signed");
    let wrong = SigningKey::from_secret(b"another-signing-secret-0123456789");
    assert!(signing::verify(&wrong, &frame.payload).is_err());
}

#[test]
fn unsigned_inbound_is_refused_when_signatures_are_required() {
    let server = Server::start(&["--signing-secret", SIGNING_SECRET, "--require-signed-inbound"]);
    let key = SigningKey::from_secret(SIGNING_SECRET.as_bytes());
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let message = r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["s"]}}"#;
    client.send_text(message);
    let refusal = client.next_json(IO_LIMIT);
    assert_eq!(refusal.get("p").unwrap().str_at("code"), Some("BAD_SIGNATURE"));

    let mut signed = Vec::new();
    signing::sign(&key, message.as_bytes(), &mut signed).expect("a JSON object signs");
    client.send_text(std::str::from_utf8(&signed).unwrap());
    assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("subscription_update"));

    let mut forged = Vec::new();
    signing::sign(
        &SigningKey::from_secret(b"not-the-server-secret-0123456789"),
        message.as_bytes(),
        &mut forged,
    )
    .expect("a JSON object signs");
    client.send_text(std::str::from_utf8(&forged).unwrap());
    let refusal = client.next_json(IO_LIMIT);
    assert_eq!(refusal.get("p").unwrap().str_at("code"), Some("BAD_SIGNATURE"));
    assert!(server.metric("wse_security_events_total{kind=\"bad_signature\"}") >= 2.0);
}

/// PROTOCOL.md §6 on an E2E connection: JSON text frames are signed under the key derived
/// from the E2E agreement, not the shared secret; sealed frames carry no `sig` (AES-GCM
/// authenticates them), publications included, while a plaintext subscriber still gets the
/// shared-key signature; inbound plaintext is verified under the E2E key.
#[test]
fn e2e_connections_sign_and_verify_with_the_e2e_key() {
    let server = Server::start(&[
        "--signing-secret",
        SIGNING_SECRET,
        "--sign-outbound",
        "*",
        "--require-signed-inbound",
        "--allow-client-publish",
    ]);
    let shared = SigningKey::from_secret(SIGNING_SECRET.as_bytes());
    let sign = |key: &SigningKey, text: &str| {
        let mut signed = Vec::new();
        signing::sign(key, text.as_bytes(), &mut signed).expect("a JSON object signs");
        String::from_utf8(signed).expect("UTF-8")
    };

    // The hello goes out before E2E exists: signed under the shared secret.
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let mine = KeyExchange::generate().expect("client key pair");
    client.send_text(&sign(&shared, &client_hello(&mine.public_key_b64())));
    let hello = client.read_frame(IO_LIMIT).expect("server_hello");
    let value = json::parse(&hello.payload).expect("JSON");
    assert_eq!(value.str_at("t"), Some("server_hello"), "{value:?}");
    let theirs = value.get("p").and_then(|p| p.str_at("encryption_public_key")).expect("key");
    let keys = mine.agree(theirs).expect("agreement");
    signing::verify(keys.signing_key(), &hello.payload).expect("server_hello under the E2E key");
    assert!(signing::verify(&shared, &hello.payload).is_err(), "not under the shared secret");
    let mut sealed = Sealed { client, keys };

    // Sealed messages carry no signature; the publication neither, while the plaintext
    // publisher's copy is signed with the shared secret.
    sealed.send(r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["s6"]}}"#);
    let (answer, was_sealed) = sealed.next();
    assert!(was_sealed && answer.get("sig").is_none(), "{answer:?}");
    let (mut publisher, _) = RawClient::open_wse(server.addr, "/wse");
    publisher.send_text(&sign(
        &shared,
        r#"{"t":"subscription_update","p":{"action":"subscribe","topics":["s6"]}}"#,
    ));
    let _ = publisher.next_json(IO_LIMIT);
    publisher.send_text(&sign(&shared, r#"{"t":"publish","p":{"topic":"s6","data":{"v":6}}}"#));
    let (publication, was_sealed) = sealed.next();
    assert!(was_sealed && publication.str_at("tp") == Some("s6"), "{publication:?}");
    assert!(publication.get("sig").is_none(), "a sealed publication carries the shared sig");
    let plain = loop {
        let frame = publisher.read_frame(IO_LIMIT).expect("the publication");
        let value = json::parse(&frame.payload).expect("JSON");
        if value.str_at("tp") == Some("s6") {
            break frame;
        }
    };
    signing::verify(&shared, &plain.payload).expect("the plaintext copy is signed");

    // Inbound plaintext (a heartbeat) on the E2E connection: the E2E key, not the shared one.
    let ping = r#"{"t":"ping","p":{"timestamp":6}}"#;
    let under_e2e = sign(sealed.keys.signing_key(), ping);
    sealed.client.send_text(&under_e2e);
    let (pong, was_sealed) = sealed.next();
    assert_eq!((pong.str_at("t"), was_sealed), (Some("PONG"), false));
    sealed.client.send_text(&sign(&shared, ping));
    let (refusal, _) = sealed.next();
    assert_eq!(refusal.get("p").and_then(|p| p.str_at("code")), Some("BAD_SIGNATURE"));
}

// ---------------------------------------------------------------------------------------
// Inbound rate limit
// ---------------------------------------------------------------------------------------

#[test]
fn rate_limit_warns_refuses_then_closes_4429() {
    let server = Server::start(&[
        "--rate-limit-capacity",
        "10",
        "--rate-limit-refill",
        "1",
        "--rate-limit-close-after",
        "2",
    ]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let ping = r#"{"t":"ping","p":{"timestamp":1}}"#;
    let mut warnings = 0;
    let mut pongs = 0;
    for _ in 0..9 {
        client.send_text(ping);
    }
    while pongs < 9 {
        let message = client.next_json(IO_LIMIT);
        match message.str_at("t") {
            Some("PONG") => pongs += 1,
            Some("rate_limit_warning") => warnings += 1,
            other => panic!("unexpected {other:?}: {message:?}"),
        }
    }
    assert_eq!(warnings, 1, "one warning per dip under 20 %");
    // Two tokens left at most (plus refill); keep sending until refused.
    let mut refused = None;
    for _ in 0..5 {
        client.send_text(ping);
    }
    for _ in 0..5 {
        let message = client.next_json(IO_LIMIT);
        if message.str_at("t") == Some("error") {
            refused = Some(message);
            break;
        }
    }
    let refused = refused.expect("an error RATE_LIMITED");
    let p = refused.get("p").unwrap();
    assert_eq!(p.str_at("code"), Some("RATE_LIMITED"));
    assert!(p.num_at("retry_after").is_some_and(|s| s > 0.0), "{refused:?}");

    // Stay over the limit: closed with 4429 after about 2 s.
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(8), "no 4429 within 8 s");
        if !client.try_send(&masked(FIN | TEXT, ping.as_bytes(), random_key())) {
            break;
        }
        match client.read_frame(Duration::from_millis(100)) {
            Ok(frame) if frame.opcode() == CLOSE => {
                assert_eq!(frame.close_code(), Some(4429));
                break;
            }
            Ok(_) | Err(End::Timeout) => {}
            Err(End::Closed) => panic!("closed without a Close frame"),
        }
    }
    assert!(server.metric("wse_security_events_total{kind=\"rate_limited\"}") >= 1.0);
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn auth_header(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// The status of the answer to H0 carrying `token` by `how`.
fn handshake_status(server: &Server, token: &str, how: Transport) -> u16 {
    let (path, extra) = carry(token, how);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    // Only the status line matters: reading on to EOF would wait out a 101 or the linger
    // of a refused socket, long enough for the leeway rows' tokens to age past their edge.
    let mut client = RawClient::connect(server.addr);
    client.send(h0_request(server.addr, &path, &extra).as_bytes());
    client.read_head(IO_LIMIT).expect("an answer to H0").status
}

/// Upgrades (101 asserted) and returns the client with its first data frame as JSON.
fn open_expecting_frame(server: &Server, path: &str, extra: &[&str]) -> (RawClient, Value) {
    let mut client = RawClient::connect(server.addr);
    client.upgrade(server.addr, path, extra);
    let first = client.read_frame(IO_LIMIT).expect("a first frame");
    assert_eq!(first.opcode(), TEXT, "first frame {first:?}");
    let value = json::parse(&first.payload).expect("JSON");
    (client, value)
}

fn assert_auth_error(value: &Value, code: &str, row: &str) {
    assert_eq!(value.str_at("t"), Some("error"), "row {row}: {value:?}");
    assert_eq!(value.get("p").and_then(|p| p.str_at("code")), Some(code), "row {row}");
}
