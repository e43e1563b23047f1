//! Regression tests for compression (issue #4): permessage-deflate negotiation (C08 of
//! `../shared/cases/README.md`), the permessage-deflate repetitions of C03 and C05, bounded
//! inflation of `C:` frames and compressed messages (zlib bombs), and `C:` frames out.
//!
//! Clients here compress as real ones do, with an independent DEFLATE (miniz_oxide, sync
//! flush, `00 00 ff ff` removed), and read what the server sends with it too, so the
//! server's libdeflate is never checked against itself.

mod common;

use std::time::{Duration, Instant};

use common::*;
use miniz_oxide::deflate::core::{compress, CompressorOxide, TDEFLFlush, TDEFLStatus};

/// The answer to every permessage-deflate offer the server accepts, at least.
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// C08's "Hello", compressed, masked with `01 02 03 04`, RSV1 set.
const HELLO_DEFLATED: &str = "c1 87 01 02 03 04 f3 4a ce cd c8 05 03";
/// RSV1 bit of the first header byte.
const RSV1: u8 = 0x40;

// ------------------------------------------------------------------------------------------
// C08: permessage-deflate negotiation
// ------------------------------------------------------------------------------------------

#[test]
fn c08_offers_are_accepted_or_declined_as_rfc_7692_says_and_the_upgrade_always_succeeds() {
    let echo = Server::start(&["--echo"]);
    let wse = Server::start(&["--allow-client-publish"]);
    let mut unharmed = Unharmed::before(&wse);
    // 5,000 escapes fit the 16 KiB head; C08's 10,000 get 431, tested below.
    let garbage = format!("permessage-deflate; a=\"{}", "\\c".repeat(5_000));
    let rows: Vec<(String, Option<String>)> = vec![
        // Row 1.
        ("permessage-deflate".into(), Some(AGREED.into())),
        // Row 2: no value offered, so none is answered.
        ("permessage-deflate; client_max_window_bits".into(), Some(AGREED.into())),
        // Row 3: the server's window is always 15 bits.
        ("permessage-deflate; server_max_window_bits=10".into(), None),
        // Row 4.
        (
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover".into(),
            Some(AGREED.into()),
        ),
        // Row 5.
        ("permessage-deflate; foo=1".into(), None),
        ("permessage-deflate; server_max_window_bits=7".into(), None),
        ("permessage-deflate; client_max_window_bits=16".into(), None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover".into(), None),
        // Row 6.
        (
            "permessage-deflate; server_max_window_bits=10, permessage-deflate".into(),
            Some(AGREED.into()),
        ),
        // Row 7.
        ("constructor".into(), None),
        ("__proto__; x".into(), None),
        (garbage, None),
        // Variants of our own.
        (
            "permessage-deflate; client_max_window_bits=9".into(),
            Some(format!("{AGREED}; client_max_window_bits=9")),
        ),
        (
            "permessage-deflate; server_max_window_bits=15".into(),
            Some(format!("{AGREED}; server_max_window_bits=15")),
        ),
        ("permessage-deflate; server_max_window_bits=\"15\"; x=1".into(), None),
        (
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits".into(),
            Some(AGREED.into()),
        ),
        ("permessage-deflate; server_max_window_bits=08".into(), None),
        ("permessage-deflate; client_max_window_bits=\"".into(), None),
        ("Permessage-Deflate".into(), None),
    ];
    for (offer, want) in &rows {
        let line = format!("Sec-WebSocket-Extensions: {offer}");
        let short: String = offer.chars().take(60).collect();

        let started = Instant::now();
        let (mut client, agreed) = upgrade_offering(echo.addr, &line);
        assert!(started.elapsed() < Duration::from_secs(1), "{short}: 101 took too long");
        assert_eq!(agreed.as_ref(), want.as_ref(), "{short}: the extension answer");
        client.send(&hex(HELLO_DEFLATED));
        if want.is_some() {
            let reply = client.read_frame(IO_LIMIT).expect("the echo of Hello");
            assert_eq!(reply, Frame { b0: FIN | TEXT, payload: b"Hello".to_vec() }, "{short}");
        } else {
            client.expect_close(1002, Duration::from_secs(2));
        }

        // On the WSE server, a compressed publish is delivered or refused likewise.
        let (mut client, agreed) = upgrade_offering(wse.addr, &line);
        assert_eq!(agreed.as_ref(), want.as_ref(), "{short}: the WSE answer");
        assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("server_ready"));
        let key = if want.is_some() { "good" } else { "evil" };
        let publish = publish_json(CASE_TOPIC, &format!(r#"{{"{key}":{}}}"#, json::quote(&short)));
        client.send(&masked(FIN | RSV1 | TEXT, &deflate_sync(publish.as_bytes()), random_key()));
        if want.is_none() {
            client.expect_close(1002, Duration::from_secs(2));
        }
        unharmed.publish_one();
    }
    // C08 row 7 as written is over the head cap: 431 (PROTOCOL.md §1), in time, no crash.
    let garbage =
        format!("Sec-WebSocket-Extensions: permessage-deflate; a=\"{}", "\\c".repeat(10_000));
    let started = Instant::now();
    let response = http_exchange(echo.addr, h0_request(echo.addr, "/wse", &[&garbage]).as_bytes());
    assert_eq!(response.status, 431);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());

    let accepted = rows.iter().filter(|(_, want)| want.is_some()).count();
    unharmed.assert_case_count(accepted);
    unharmed.check(&wse);
    assert!(echo.is_running());
}

#[test]
fn c08_row_4_each_message_is_compressed_on_its_own() {
    let echo = Server::start(&["--echo", "--compression-threshold", "0"]);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
                 server_no_context_takeover";
    let (mut client, agreed) = upgrade_offering(echo.addr, offer);
    assert_eq!(agreed.as_deref(), Some(AGREED));
    let text = "the same sentence, again and again, ".repeat(60);
    let mut payloads = Vec::new();
    for _ in 0..3 {
        client.send(&masked(FIN | RSV1 | TEXT, &deflate_sync(text.as_bytes()), random_key()));
        let reply = client.read_frame(IO_LIMIT).expect("a compressed echo");
        assert_eq!(reply.b0, FIN | RSV1 | TEXT, "large replies are deflated");
        // Each one inflates alone: no context was taken over from the one before.
        assert_eq!(inflate_message(&reply.payload), text.as_bytes());
        payloads.push(reply.payload);
    }
    assert!(payloads.windows(2).all(|w| w[0] == w[1]), "a reset compressor repeats itself");
    assert!(payloads[0].len() < text.len() / 10, "{} bytes", payloads[0].len());

    // Tiny replies that would not shrink go uncompressed, RSV1 clear.
    client.send(&masked(FIN | RSV1 | TEXT, &deflate_sync(b"ok"), random_key()));
    assert_eq!(client.read_frame(IO_LIMIT), Ok(Frame { b0: FIN | TEXT, payload: b"ok".to_vec() }));
}

// ------------------------------------------------------------------------------------------
// C03 with permessage-deflate negotiated: RSV1 only on the first frame of a data message
// ------------------------------------------------------------------------------------------

#[test]
fn c03_rsv1_on_continuation_and_control_frames_fails_with_1002_even_with_deflate() {
    let echo = Server::start(&["--echo"]);
    let wse = Server::start(&["--allow-client-publish"]);
    let mut unharmed = Unharmed::before(&wse);
    let hello = deflate_sync(b"hello");
    let (a, b) = hello.split_at(2);
    let failing: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("RSV1 continuation", vec![hex("01 82 01 02 03 04 67 33"), hex("c0 81 01 02 03 04 79")]),
        ("RSV1 empty Ping", vec![hex("c9 80 01 02 03 04")]),
        // Variants of our own.
        ("RSV1 Ping with payload", vec![masked(FIN | RSV1 | PING, b"p", random_key())]),
        ("RSV1 Pong", vec![masked(FIN | RSV1 | PONG, b"p", random_key())]),
        ("RSV1 Close", vec![masked(FIN | RSV1 | CLOSE, &[3, 0xe8], random_key())]),
        (
            "RSV1 on the first and the continuation",
            vec![masked(RSV1 | TEXT, a, random_key()), masked(FIN | RSV1, b, random_key())],
        ),
        ("RSV2 with RSV1", vec![masked(FIN | RSV1 | 0x20 | TEXT, &hello, random_key())]),
        ("RSV3 with RSV1", vec![masked(FIN | RSV1 | 0x10 | BINARY, &hello, random_key())]),
        ("RSV1 reserved opcode", vec![masked(FIN | RSV1 | 0x3, &hello, random_key())]),
        (
            "RSV1 Ping between compressed fragments",
            vec![
                masked(RSV1 | TEXT, a, random_key()),
                masked(FIN | RSV1 | PING, b"", random_key()),
                masked(FIN, b, random_key()),
            ],
        ),
    ];
    for (_, frames) in &failing {
        for server in [&echo, &wse] {
            let mut client = open_deflate(server.addr, server.addr == wse.addr);
            client.send(&frames.concat());
            client.expect_close(1002, Duration::from_secs(2));
        }
        unharmed.publish_one();
    }

    // Positive controls: RSV1 on the first fragment only, a Ping between the fragments.
    let mut client = open_deflate(echo.addr, false);
    let frames = [
        masked(RSV1 | TEXT, a, random_key()),
        masked(FIN | PING, b"p", random_key()),
        masked(FIN, b, random_key()),
    ];
    client.send(&frames.concat());
    assert_eq!(client.read_frame(IO_LIMIT), Ok(Frame { b0: FIN | PONG, payload: b"p".to_vec() }));
    assert_eq!(
        client.read_frame(IO_LIMIT),
        Ok(Frame { b0: FIN | TEXT, payload: b"hello".to_vec() })
    );
    unharmed.check(&wse);
}

// ------------------------------------------------------------------------------------------
// C05 with permessage-deflate negotiated: UTF-8 of the inflated message
// ------------------------------------------------------------------------------------------

#[test]
fn c05_utf8_is_validated_after_inflation_with_deflate_negotiated() {
    let echo = Server::start(&["--echo"]);
    let wse = Server::start(&["--allow-client-publish"]);
    let mut unharmed = Unharmed::before(&wse);
    let kosme = hex("ce ba e1 bd b9 cf 83 ce bc ce b5");

    // Valid: each text whole, and its compressed bytes over two and over one-byte frames.
    let mut valid: Vec<Vec<u8>> = vec!["κ".into(), "𝄞".into()];
    valid.extend(["é", "€", "κόσμε", "a𝄞b€c"].map(|t| t.as_bytes().to_vec()));
    valid.push(kosme.clone());
    for text in &valid {
        let compressed = deflate_sync(text);
        for pieces in [1, 2, compressed.len()] {
            let mut client = open_deflate(echo.addr, false);
            client.send(&fragments(TEXT, &compressed, pieces));
            let reply = client.read_frame(IO_LIMIT).expect("the echo");
            assert_eq!(reply, Frame { b0: FIN | TEXT, payload: text.clone() }, "{text:02x?}");
        }
    }

    // Invalid: the README's inputs, compressed, and the class of cases.rs.
    let mut above = kosme.clone();
    above.extend(hex("f4 90 80 80"));
    above.extend(b"edited");
    let mut invalid: Vec<Vec<u8>> = vec![above, hex("61 62 ce"), hex("c0 af"), hex("ed a0 80")];
    for bytes in [
        "ff",
        "fe",
        "80",
        "bf",
        "c1 bf",
        "e0 80 af",
        "f0 80 80 af",
        "f8 88 80 80 80",
        "ed bf bf",
        "f4 90 80 80",
        "ce",
        "e1 bd",
        "f0 9d 84",
        "61 ce 61",
    ] {
        invalid.push(hex(bytes));
    }
    for bytes in &invalid {
        let compressed = deflate_sync(bytes);
        for pieces in [1, 3.min(compressed.len())] {
            let mut client = open_deflate(echo.addr, false);
            client.send(&fragments(TEXT, &compressed, pieces));
            client.expect_close(1007, Duration::from_secs(2));
        }
        // The WSE variant: an evil publish whose text ends in the invalid bytes.
        let mut publish = br#"{"t":"publish","p":{"topic":"case","data":{"evil":""#.to_vec();
        publish.extend_from_slice(bytes);
        publish.extend_from_slice(br#""}}}"#);
        let mut client = open_deflate(wse.addr, true);
        client.send(&fragments(TEXT, &deflate_sync(&publish), 2));
        client.expect_close(1007, Duration::from_secs(2));
        unharmed.publish_one();
    }

    // Binary messages are never validated.
    let mut client = open_deflate(echo.addr, false);
    client.send(&fragments(BINARY, &deflate_sync(&[0xff, 0xfe, 0xc0]), 1));
    let reply = client.read_frame(IO_LIMIT).expect("the echo");
    assert_eq!(reply, Frame { b0: FIN | BINARY, payload: vec![0xff, 0xfe, 0xc0] });
    // Found fragment by fragment by the reader, or (a character cut at the very end) by the
    // final inflation: a 1007 close either way.
    // (A close is counted when its connection ends, a moment after the client saw it.)
    let closes = "wse_closes_total{reason=\"invalid_utf8\"}";
    assert!(wse.wait_metric(closes, IO_LIMIT, |n| n >= 18.0) >= 18.0);
    unharmed.check(&wse);
}

/// C05's fail-fast row with permessage-deflate: the client compresses each fragment's text
/// with a sync flush, as a streaming compressor does; the server judges the inflated text
/// fragment by fragment, so the Close comes right after the fragment with `f4 90 80 80`,
/// before the last fragment ("edited") is sent (strict).
#[test]
fn c05_fail_fast_with_deflate_the_close_comes_before_the_last_fragment() {
    let echo = Server::start(&["--echo"]);
    let wse = Server::start(&["--allow-client-publish"]);
    let unharmed = Unharmed::before(&wse);
    for server in [&echo, &wse] {
        let mut client = open_deflate(server.addr, server.addr == wse.addr);
        let mut compressor = CompressorOxide::new(0x80);
        let kosme = hex("ce ba e1 bd b9 cf 83 ce bc ce b5");
        let first = sync_part(&mut compressor, &kosme);
        let second = sync_part(&mut compressor, &hex("f4 90 80 80"));
        client.send(&masked(RSV1 | TEXT, &first, random_key()));
        client.send(&masked(0, &second, random_key()));
        // Without fail-fast the server would wait for the last fragment, never sent here.
        client.expect_close(1007, Duration::from_secs(2));
    }
    unharmed.check(&wse);
}

/// `text` compressed on with `compressor` and a sync flush (ends with `00 00 ff ff`).
fn sync_part(compressor: &mut CompressorOxide, text: &[u8]) -> Vec<u8> {
    let mut out = vec![0; text.len() + text.len() / 2 + 64];
    let (status, used, written) = compress(compressor, text, &mut out, TDEFLFlush::Sync);
    assert_eq!((status, used), (TDEFLStatus::Okay, text.len()));
    out.truncate(written);
    out
}

// ------------------------------------------------------------------------------------------
// Bounded inflation
// ------------------------------------------------------------------------------------------

#[test]
fn zlib_bombs_close_with_1009_and_memory_stays_flat() {
    let wse = Server::start(&["--allow-client-publish"]);
    let echo = Server::start(&["--echo"]);
    let mut unharmed = Unharmed::before(&wse);
    // 64 MiB of zeros inflate from about 64 KB, well within the 1 MiB message limit.
    let zeros = vec![0u8; 64 << 20];
    let mut c_frame = b"C:".to_vec();
    c_frame.extend(miniz_oxide::deflate::compress_to_vec_zlib(&zeros, 9));
    let deflated = deflate_sync(&zeros);
    assert!(c_frame.len() < 200_000 && deflated.len() < 200_000);

    // Warm up: the first bomb makes the shards' inflate buffers (1 MiB each) resident.
    for server in [&wse, &echo] {
        for _ in 0..2 {
            let mut client = open_deflate(server.addr, server.addr == wse.addr);
            client.send(&masked(FIN | RSV1 | BINARY, &deflated, random_key()));
            client.expect_close(1009, Duration::from_secs(2));
        }
    }
    let rss_before = wse.rss_kb();
    for round in 0..20 {
        let (mut client, _) = RawClient::open_wse(wse.addr, "/wse");
        client.send(&masked(FIN | BINARY, &c_frame, random_key()));
        client.expect_close(1009, Duration::from_secs(2));
        let mut client = open_deflate(wse.addr, true);
        let text = if round % 2 == 0 { TEXT } else { BINARY };
        client.send(&masked(FIN | RSV1 | text, &deflated, random_key()));
        client.expect_close(1009, Duration::from_secs(2));
        unharmed.publish_one();
    }
    let grown = wse.rss_kb().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB over 40 bombs");
    assert!(wse.metric("wse_inflate_refusals_total{reason=\"too_big\"}") >= 42.0);

    // Exactly the limit still inflates.
    let exact = format!(r#"{{"t":"x","p":"{}"}}"#, "a".repeat((1 << 20) - 16));
    assert_eq!(exact.len(), 1 << 20);
    let mut client = open_deflate(echo.addr, false);
    client.send(&masked(FIN | RSV1 | TEXT, &deflate_sync(exact.as_bytes()), random_key()));
    let reply = client.read_frame(IO_LIMIT).expect("the echo of exactly L");
    assert_eq!(inflate_message(&reply.payload).len(), 1 << 20);
    unharmed.check(&wse);
}

#[test]
fn c_frames_from_clients_are_inflated_and_bad_ones_answered_with_invalid_message() {
    let wse = Server::start(&["--allow-client-publish"]);
    let (mut subscriber, _) = RawClient::open_wse(wse.addr, "/wse");
    subscriber.subscribe("subscribe", &["news"]);
    let (mut client, _) = RawClient::open_wse(wse.addr, "/wse");

    let publish = publish_json("news", r#"{"via":"C:"}"#);
    let mut frame = b"C:".to_vec();
    frame.extend(miniz_oxide::deflate::compress_to_vec_zlib(publish.as_bytes(), 6));
    client.send(&masked(FIN | BINARY, &frame, random_key()));
    let got = subscriber.next_json(IO_LIMIT);
    assert_eq!(got.get("p").and_then(|p| p.str_at("via")), Some("C:"), "{got:?}");

    // Not zlib, and zlib with a broken checksum: refused, the connection stays open.
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    for bad in [b"C:not zlib at all".to_vec(), frame] {
        client.send(&masked(FIN | BINARY, &bad, random_key()));
        let answer = client.next_json(IO_LIMIT);
        assert_eq!(answer.str_at("t"), Some("error"), "{answer:?}");
        assert_eq!(answer.get("p").and_then(|p| p.str_at("code")), Some("INVALID_MESSAGE"));
    }
    client.send_text(r#"{"t":"ping","p":{"timestamp":1}}"#);
    assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("PONG"));
    assert_eq!(wse.metric("wse_inflate_refusals_total{reason=\"bad_data\"}"), 2.0);
    assert_eq!(wse.metric("wse_inflated_messages_total{format=\"c_frame\"}"), 1.0);
}

#[test]
fn malformed_messages_are_each_answered_and_too_many_close_with_4400() {
    let wse = Server::start(&[]);
    let (mut client, _) = RawClient::open_wse(wse.addr, "/wse");

    // An E: frame on a connection that agreed no key: answered, not dropped in silence.
    client.send(&masked(FIN | BINARY, b"E:not sealed at all", random_key()));
    let answer = client.next_json(IO_LIMIT);
    assert_eq!(answer.get("p").and_then(|p| p.str_at("code")), Some("DECRYPT_FAILED"));

    // With it, 100 malformed messages within the window: each answered, the connection
    // stays open.
    for _ in 1..100 {
        client.send(&masked(FIN | BINARY, b"C:not zlib", random_key()));
    }
    client.send_text(r#"{"t":"ping","p":{"timestamp":1}}"#);
    let mut errors = 1;
    loop {
        let answer = client.next_json(IO_LIMIT);
        if answer.str_at("t") == Some("PONG") {
            break;
        }
        assert_eq!(answer.get("p").and_then(|p| p.str_at("code")), Some("INVALID_MESSAGE"));
        errors += 1;
    }
    assert_eq!(errors, 100);

    // One more: answered, then Close 4400 (PROTOCOL.md §9).
    client.send(&masked(FIN | BINARY, b"C:not zlib", random_key()));
    let deadline = Instant::now() + IO_LIMIT;
    let frame = loop {
        let frame = client.read_frame(IO_LIMIT).expect("the error, then Close 4400");
        if frame.opcode() == CLOSE {
            break frame;
        }
    };
    client.expect_close_frame(&frame, 4400, deadline);
    assert!(eventually(IO_LIMIT, || wse.metric("wse_closes_total{reason=\"malformed\"}") == 1.0));
    fresh_pong_within(wse.addr, IO_LIMIT);
}

// ------------------------------------------------------------------------------------------
// Outbound: C: frames above the threshold, shared permessage-deflate frames
// ------------------------------------------------------------------------------------------

#[test]
fn publications_over_the_threshold_go_as_c_frames_or_deflated_and_small_ones_as_text() {
    let wse = Server::start(&["--allow-client-publish", "--shards", "2"]);
    let (mut plain, _) = RawClient::open_wse(wse.addr, "/wse");
    plain.subscribe("subscribe", &["news"]);
    let mut deflating = open_deflate(wse.addr, true);
    deflating.subscribe("subscribe", &["news"]);
    let (mut publisher, _) = RawClient::open_wse(wse.addr, "/wse");

    let items: Vec<String> =
        (0..150).map(|i| format!(r#"{{"id":{i},"name":"item {i}"}}"#)).collect();
    let big = format!("[{}]", items.join(","));
    for (data, compressed) in [(big.as_str(), true), (r#"{"n":1}"#, false)] {
        publisher.publish("news", data);
        let c = plain.read_frame(IO_LIMIT).expect("a publication");
        let d = deflating.read_frame(IO_LIMIT).expect("a publication");
        if compressed {
            assert_eq!(c.b0, FIN | BINARY, "a C: frame");
            assert!(c.payload.starts_with(b"C:"));
            assert_eq!(d.b0, FIN | RSV1 | TEXT, "a deflated text frame, not a C: frame");
            let json = inflate_zlib(&c.payload[2..]);
            assert!(json.len() > 1024);
            assert_eq!(inflate_message(&d.payload), json, "the same publication both ways");
            assert!(c.payload.len() < json.len() / 2);
        } else {
            assert_eq!((c.b0, d.b0), (FIN | TEXT, FIN | TEXT));
            assert_eq!(c.payload, d.payload);
        }
        let publication = frame_json(&c).expect("JSON");
        assert_eq!(publication.str_at("tp"), Some("news"));
    }
    let saved = wse.metric("wse_compression_saved_bytes_total{format=\"c_frame\"}");
    assert!(saved > 1000.0, "{saved}");
    // One compression per publication, whatever the number of subscribers.
    assert_eq!(wse.metric("wse_compressions_total{format=\"c_frame\"}"), 1.0);
}

#[test]
fn direct_messages_are_compressed_but_heartbeats_never_become_c_frames() {
    let wse = Server::start(&["--compression-threshold", "0"]);
    let (mut client, _) = RawClient::open_wse(wse.addr, "/wse");
    // A subscription answer listing many topics is well over nothing, and shrinks.
    let topics: Vec<String> = (0..40).map(|i| format!("topic.number.{i}")).collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let list: Vec<String> = refs.iter().map(|t| json::quote(t)).collect();
    client.send_text(&format!(
        r#"{{"t":"subscription_update","p":{{"action":"subscribe","topics":[{}]}}}}"#,
        list.join(",")
    ));
    let frame = client.read_frame(IO_LIMIT).expect("the answer");
    assert!(frame.b0 == FIN | BINARY && frame.payload.starts_with(b"C:"), "{:02x}", frame.b0);
    let answer = frame_json(&frame).expect("JSON");
    assert_eq!(answer.str_at("t"), Some("subscription_update"));
    client.send_text(r#"{"t":"ping","p":{"timestamp":1}}"#);
    let pong = client.read_frame(IO_LIMIT).expect("PONG");
    assert_eq!(pong.opcode(), TEXT);
    assert!(pong.payload.starts_with(br#"{"c":"WSE","t":"PONG","p":"#), "{}", pong.text());

    let off = Server::start(&["--compression-threshold", "0", "--disable-compression"]);
    let (mut client, _) = RawClient::open_wse(off.addr, "/wse");
    client.send_text(&format!(
        r#"{{"t":"subscription_update","p":{{"action":"subscribe","topics":[{}]}}}}"#,
        list.join(",")
    ));
    assert_eq!(client.read_frame(IO_LIMIT).expect("the answer").opcode(), TEXT);
}

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

/// Sends H0 with `line` and returns the client and the `Sec-WebSocket-Extensions` answer.
fn upgrade_offering(addr: std::net::SocketAddr, line: &str) -> (RawClient, Option<String>) {
    let mut client = RawClient::connect(addr);
    client.send(h0_request(addr, "/wse", &[line]).as_bytes());
    let response = client.read_head(IO_LIMIT).expect("an answer to H0");
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(H0_ACCEPT));
    (client, response.header("Sec-WebSocket-Extensions").map(str::to_owned))
}

/// A connection with permessage-deflate agreed; on a WSE server `server_ready` is read.
fn open_deflate(addr: std::net::SocketAddr, wse: bool) -> RawClient {
    let (mut client, agreed) =
        upgrade_offering(addr, "Sec-WebSocket-Extensions: permessage-deflate");
    assert_eq!(agreed.as_deref(), Some(AGREED));
    if wse {
        assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("server_ready"));
    }
    client
}

/// `payload` compressed as clients do: raw DEFLATE, sync flush, `00 00 ff ff` removed.
fn deflate_sync(payload: &[u8]) -> Vec<u8> {
    let mut compressor = CompressorOxide::new(0x80);
    let mut out = vec![0; payload.len() + payload.len() / 2 + 64];
    let (status, used, written) = compress(&mut compressor, payload, &mut out, TDEFLFlush::Sync);
    assert_eq!((status, used), (TDEFLStatus::Okay, payload.len()));
    out.truncate(written);
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "a sync flush ends with an empty block");
    out.truncate(written - 4);
    out
}

/// Inflates a permessage-deflate payload from the server as RFC 7692 §7.2.2 says.
fn inflate_message(payload: &[u8]) -> Vec<u8> {
    let mut data = payload.to_vec();
    data.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let limit = 64 << 20;
    match miniz_oxide::inflate::decompress_to_vec_with_limit(&data, limit) {
        Ok(message) => message,
        // A stream without a final block ends in "needs more input" with everything out.
        Err(e) if e.status == miniz_oxide::inflate::TINFLStatus::FailedCannotMakeProgress => {
            e.output
        }
        Err(e) => panic!("the server's payload does not inflate: {e:?}"),
    }
}

/// `compressed` as one data message of `pieces` frames (RSV1 on the first), each masked
/// with a fresh key.
fn fragments(opcode: u8, compressed: &[u8], pieces: usize) -> Vec<u8> {
    let size = compressed.len().div_ceil(pieces.max(1)).max(1);
    let chunks: Vec<&[u8]> = compressed.chunks(size).collect();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let first = if i == 0 { RSV1 | opcode } else { 0 };
        let fin = if i + 1 == chunks.len() { FIN } else { 0 };
        out.extend(masked(first | fin, chunk, random_key()));
    }
    out
}
