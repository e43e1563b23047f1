//! Regression tests for the fault cases C01–C07 and the server side of C10
//! (`../shared/cases/README.md`), on plain `ws://` without auth or compression; C10 also
//! with presence on.
//!
//! Frame-layer inputs (C03–C07) run three times each: with the documented bytes (masking key
//! `01 02 03 04`, checked byte for byte against the README) on an `--echo` server, where a
//! delivery would come back as an echo; again with a random key; and on a WSE server with a
//! random key, the data payload wrapped into a `publish` to [`CASE_TOPIC`], so that a delivery
//! of a rejected input would reach the UNHARMED bystander (NO-DELIVERY), and a positive
//! control must reach it exactly once. UNHARMED is asserted at the end of every case.
//!
//! Not here: C01's `Authorization` rows (issue #3, security), C08 and the
//! permessage-deflate variants of C03 and C05 (in `compression.rs`), and C09.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::json::Value;
use common::*;

// ------------------------------------------------------------------------------------------
// C01: handshake header parsing
// ------------------------------------------------------------------------------------------

#[test]
fn c01_handshake_headers_are_parsed_as_case_insensitive_token_lists() {
    // The `Authorization: bearer <token>` row belongs to issue #3 (security) and is skipped.
    let server = Server::start(&["--allow-client-publish"]);
    let mut unharmed = Unharmed::before(&server);
    let h0 = |replace: &str, with: &str| h0_with(server.addr, replace, with);

    let legal = [
        h0("Connection: Upgrade", "Connection: keep-alive, Upgrade"),
        h0("Connection: Upgrade", "connection: upgrade").replacen(
            "Upgrade: websocket",
            "upgrade: WebSocket",
            1,
        ),
        h0("Connection: Upgrade", "Connection: Upgrade, HTTP2-Settings"),
        h0("Connection: Upgrade", "Connection: Upgrade ,x"),
        // Variants of our own.
        h0("Connection: Upgrade", "CONNECTION: UPGRADE"),
        h0("Upgrade: websocket", "UPGRADE: WEBSOCKET"),
        h0("Connection: Upgrade", "Connection:Upgrade"),
        h0("Connection: Upgrade", "Connection: \tkeep-alive ,\tupgrade\t"),
        h0("Sec-WebSocket-Version: 13", "sec-websocket-version: 13"),
        h0("Sec-WebSocket-Key", "sec-websocket-key"),
        h0("GET /wse HTTP/1.1", "GET /wse?client_version=2.5&protocol_version=1 HTTP/1.1"),
    ];
    for request in &legal {
        expect_upgrade(server.addr, request);
        unharmed.publish_one();
    }

    let no_upgrade = h0("Upgrade: websocket\r\n", "");
    let no_key = h0(&format!("Sec-WebSocket-Key: {H0_KEY}\r\n"), "");
    let many_lines: String = (0..2000).map(|i| format!("x-h{i:04}: x\r\n")).collect();
    let hundred_lines: String = (0..100).map(|i| format!("x-{i}: y\r\n")).collect();
    let malformed: Vec<(String, &[u16])> = vec![
        (no_upgrade, &[400, 426]),
        (no_key, &[400]),
        (h0(H0_KEY, "abc"), &[400]),
        (h0("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"), &[426, 400]),
        (h0("GET /wse", "POST /wse"), &[400, 405]),
        (h0("Upgrade: websocket\r\n", &format!("{many_lines}Upgrade: websocket\r\n")), &[431]),
        // Variants of our own.
        (h0("Connection: Upgrade", "Connection: keep-alive"), &[400]),
        (h0("Connection: Upgrade", "Connection: Upgraded"), &[400]),
        (h0("Connection: Upgrade", "Connection: xUpgrade, close"), &[400]),
        (h0("Upgrade: websocket", "Upgrade: websockets"), &[400, 426]),
        (h0("Upgrade: websocket", "Upgrade: h2c"), &[400, 426]),
        (h0("Sec-WebSocket-Version: 13\r\n", ""), &[400, 426]),
        (h0("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 14"), &[426, 400]),
        (h0("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13x"), &[426, 400]),
        // 15 and 17 bytes once decoded, and not base64 at all.
        (h0(H0_KEY, "AAAAAAAAAAAAAAAAAAAA"), &[400]),
        (h0(H0_KEY, "AAAAAAAAAAAAAAAAAAAAAAA="), &[400]),
        (h0(H0_KEY, "!!!!!!!!!!!!!!!!!!!!!!=="), &[400]),
        (h0("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost"), &[400, 426, 505]),
        (
            h0(
                "Upgrade: websocket",
                &format!("X-Big: {}\r\nUpgrade: websocket", "a".repeat(17_000)),
            ),
            &[431],
        ),
        (h0("Upgrade: websocket\r\n", &format!("{hundred_lines}Upgrade: websocket\r\n")), &[431]),
    ];
    for (request, statuses) in &malformed {
        let response = http_exchange(server.addr, request.as_bytes());
        let first_line = request.lines().next().unwrap_or_default();
        assert!(
            statuses.contains(&response.status),
            "{first_line} ({} bytes): got {}, want {statuses:?}",
            request.len(),
            response.status
        );
        assert_eq!(response.header("Sec-WebSocket-Accept"), None);
        if response.status == 426 {
            assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
        }
        unharmed.publish_one();
    }
    unharmed.check(&server);
}

// ------------------------------------------------------------------------------------------
// C02: slow opening handshake (slowloris)
// ------------------------------------------------------------------------------------------

#[test]
fn c02_trickled_silent_and_byte_per_second_handshakes_are_cut_off_at_the_deadline() {
    let server = Server::start(&["--handshake-timeout", "2", "--allow-client-publish"]);
    let unharmed = Unharmed::before(&server);
    let addr = server.addr;
    let limit = Duration::from_secs(2 + 2);
    let trickle = thread::spawn(move || {
        let mut client = RawClient::connect(addr);
        client.send(b"GET /wse HTTP/1.1\r\nHost: x\r\n");
        trickle_until_closed(
            client,
            b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaa",
            Duration::from_millis(500),
        )
    });
    let silent = thread::spawn(move || {
        let started = Instant::now();
        let mut client = RawClient::connect(addr);
        assert!(client.wait_closed(limit + Duration::from_secs(1)), "silent socket kept open");
        started.elapsed()
    });
    let per_second = thread::spawn(move || {
        let request = h0_request(addr, "/wse", &[]);
        trickle_until_closed(RawClient::connect(addr), request.as_bytes(), Duration::from_secs(1))
    });
    for (name, handle) in [("trickle", trickle), ("silent", silent), ("per second", per_second)] {
        let took = handle.join().expect("slow client thread");
        assert!(took >= Duration::from_millis(1800), "{name}: cut off early, after {took:?}");
        assert!(took <= limit, "{name}: cut off after {took:?}, limit {limit:?}");
    }
    let timeouts = server.wait_metric(
        r#"wse_handshake_rejections_total{reason="timeout"}"#,
        Duration::from_secs(1),
        |v| v >= 3.0,
    );
    assert_eq!(timeouts, 3.0);
    unharmed.check(&server);
}

#[test]
fn c02_flood_of_trickling_sockets_leaves_other_addresses_served_and_fds_at_baseline() {
    let server = Server::start(&["--handshake-timeout", "2", "--allow-client-publish"]);
    let mut unharmed = Unharmed::before(&server);
    let baseline = server.fd_count();

    // 300 sockets from 127.0.0.1, each trickling a request.
    let mut flood: Vec<TcpStream> = (0..300).map(|_| connect(server.addr)).collect();
    for socket in &mut flood {
        let _ = socket.write_all(b"GET /wse HTTP/1.1\r\nHost: x\r\n");
    }
    let started = Instant::now();
    let trickler = thread::spawn(move || {
        while started.elapsed() < Duration::from_secs(5) {
            for socket in &mut flood {
                let _ = socket.write_all(b"a");
            }
            thread::sleep(Duration::from_millis(500));
        }
        flood
    });

    // Meanwhile a client from 127.0.0.2 completes H0 in under 1 s and publishing works.
    thread::sleep(Duration::from_millis(300));
    let other: IpAddr = [127, 0, 0, 2].into();
    let began = Instant::now();
    let mut client = RawClient::connect_from(other, server.addr);
    client.upgrade(server.addr, "/wse?topics=flood", &[]);
    let ready = client.next_json(IO_LIMIT);
    assert_eq!(ready.str_at("t"), Some("server_ready"));
    let took = began.elapsed();
    assert!(took < Duration::from_secs(1), "H0 from 127.0.0.2 took {took:?} during the flood");
    client.next_json(IO_LIMIT);
    client.publish("flood", r#"{"round":"trip"}"#);
    let message = client.next_json(Duration::from_secs(1));
    assert_eq!(message.str_at("tp"), Some("flood"), "publish round-trip: {message:?}");
    unharmed.publish_one();
    drop(client);

    // Every flood socket is closed by the deadline; the server's fds return to baseline.
    let flood = trickler.join().expect("trickler");
    for mut socket in flood {
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let mut byte = [0u8; 1];
        let read = std::io::Read::read(&mut socket, &mut byte);
        assert!(matches!(read, Ok(0) | Err(_)), "a flood socket is still being served");
    }
    let capped = server.metric(r#"wse_handshake_rejections_total{reason="handshake_cap"}"#);
    assert!(capped > 0.0, "the flood never reached the per-address handshake cap");
    let fds = eventually(IO_LIMIT, || server.fd_count() <= baseline);
    assert!(fds, "fd count {} did not return to baseline {baseline}", server.fd_count());
    unharmed.check(&server);
}

/// Sends `bytes` one at a time every `every` until the server closes the socket; the time
/// from connect to the close.
fn trickle_until_closed(mut client: RawClient, bytes: &[u8], every: Duration) -> Duration {
    let started = Instant::now();
    for &byte in bytes.iter().cycle() {
        if !client.try_send(&[byte]) || client.wait_closed(every) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "trickling socket never closed");
    }
    unreachable!("cycle never ends")
}

// ------------------------------------------------------------------------------------------
// C03: masking and frame-header bits
// ------------------------------------------------------------------------------------------

#[test]
fn c03_unmasked_frames_rsv_bits_and_reserved_opcodes_fail_with_1002() {
    // The permessage-deflate rows (RSV1 on continuation and Ping with the extension
    // negotiated) are in `compression.rs`.
    let mut bench = Bench::start(&[]);
    let hello = b"hello".to_vec();
    let mut inputs = vec![
        Input::new("unmasked text", vec![unmasked_part(FIN | TEXT, b"hello")])
            .doc("81 05 68 65 6c 6c 6f")
            .fail(1002),
        Input::new("masked text (positive control)", vec![frame(FIN | TEXT, b"hello")])
            .doc("81 85 01 02 03 04 69 67 6f 68 6e")
            .replies(vec![text_reply(b"hello")]),
        Input::new("RSV1 text", vec![frame(0xc1, b"hello")])
            .doc("c1 85 01 02 03 04 69 67 6f 68 6e")
            .fail(1002),
        Input::new("RSV1 continuation", vec![frame(TEXT, b"f1"), frame(0xc0, b"x")])
            .doc("01 82 01 02 03 04 67 33 c0 81 01 02 03 04 79")
            .fail(1002),
        Input::new("RSV1 empty Ping", vec![frame(0xc9, b"")]).doc("c9 80 01 02 03 04").fail(1002),
        Input::new("reserved data opcode 0x3", vec![frame(0x83, b"")])
            .doc("83 80 01 02 03 04")
            .fail(1002),
        Input::new("reserved control opcode 0xB", vec![frame(0x8b, b"")])
            .doc("8b 80 01 02 03 04")
            .fail(1002),
    ];
    // The class: RSV2 and RSV3 on every kind of frame, every reserved opcode with and
    // without payload and FIN, unmasked control frames and continuations.
    for (rsv, name) in [(0x40, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3"), (0x70, "RSV1-3")] {
        inputs.push(Input::new(name, vec![frame(FIN | rsv | TEXT, &hello)]).fail(1002));
        inputs.push(Input::new(name, vec![frame(FIN | rsv | BINARY, &hello)]).fail(1002));
        inputs.push(Input::new(name, vec![frame(TEXT, b"f"), frame(FIN | rsv, b"x")]).fail(1002));
        inputs.push(Input::new(name, vec![frame(FIN | rsv | PING, b"p")]).fail(1002));
        inputs.push(Input::new(name, vec![frame(FIN | rsv | PONG, b"p")]).fail(1002));
        inputs.push(Input::new(name, vec![frame(FIN | rsv | CLOSE, &[3, 0xe8])]).fail(1002));
    }
    for opcode in (0x3..=0x7).chain(0xb..=0xf) {
        inputs.push(Input::new("reserved opcode", vec![frame(FIN | opcode, b"")]).fail(1002));
        inputs.push(Input::new("reserved opcode", vec![frame(FIN | opcode, &hello)]).fail(1002));
        inputs.push(Input::new("reserved opcode", vec![frame(opcode, &hello)]).fail(1002));
        let between = vec![frame(TEXT, b"He"), frame(FIN | opcode, b""), frame(FIN, b"llo")];
        inputs.push(Input::new("reserved opcode between fragments", between).fail(1002));
    }
    for b0 in [FIN | BINARY, FIN | PING, FIN | PONG, FIN | CLOSE, TEXT] {
        inputs.push(Input::new("unmasked", vec![unmasked_part(b0, b"")]).fail(1002));
    }
    inputs.push(
        Input::new("unmasked continuation", vec![frame(TEXT, b"f"), unmasked_part(FIN, b"x")])
            .fail(1002),
    );
    for input in &inputs {
        bench.run(input, Pace::Whole);
    }
    bench.finish();
}

// ------------------------------------------------------------------------------------------
// C04: control frames inside a fragmented message
// ------------------------------------------------------------------------------------------

#[test]
fn c04_control_frames_between_fragments_are_answered_and_misplaced_frames_fail() {
    let mut bench = Bench::start(&[]);
    let ping_126 = vec![0x70u8; 126];
    let mut inputs = vec![
        Input::new(
            "Ping between fragments",
            vec![frame(TEXT, b"Hel"), frame(FIN | PING, b"p"), frame(FIN, b"lo")],
        )
        .doc("01 83 01 02 03 04 49 67 6f · 89 81 01 02 03 04 71 · 80 82 01 02 03 04 6d 6d")
        .replies(vec![Frame { b0: FIN | PONG, payload: b"p".to_vec() }, text_reply(b"Hello")]),
        Input::new(
            "Close between fragments",
            vec![frame(TEXT, b"Hel"), frame(FIN | CLOSE, &[0x03, 0xe8]), frame(FIN, b"lo")],
        )
        .doc("01 83 01 02 03 04 49 67 6f · 88 82 01 02 03 04 02 ea · 80 82 01 02 03 04 6d 6d")
        .close_reply(&[Some(1000)]),
        Input::new("fragmented Ping", vec![frame(PING, b"a"), frame(FIN, b"b")])
            .doc("09 81 01 02 03 04 60 · 80 81 01 02 03 04 63")
            .fail(1002),
        Input::new("126-byte Ping", vec![frame(FIN | PING, &ping_126)]).fail(1002),
        Input::new("continuation without a message", vec![frame(FIN, b"x")])
            .doc("80 81 01 02 03 04 79")
            .fail(1002),
        Input::new(
            "text inside an open text message",
            vec![frame(TEXT, b"f1"), frame(0x81, b"f2")],
        )
        .doc("01 82 01 02 03 04 67 33 · 81 82 01 02 03 04 67 30")
        .fail(1002),
        // Variants of our own.
        Input::new(
            "Pong between fragments",
            vec![frame(BINARY, b"He"), frame(FIN | PONG, b"q"), frame(FIN, b"llo")],
        )
        .replies(vec![Frame { b0: FIN | BINARY, payload: b"Hello".to_vec() }]),
        Input::new(
            "two Pings between three fragments",
            vec![
                frame(TEXT, b"H"),
                frame(FIN | PING, b"1"),
                frame(0, b"el"),
                frame(FIN | PING, b"2"),
                frame(FIN, b"lo"),
            ],
        )
        .replies(vec![pong_reply(b"1"), pong_reply(b"2"), text_reply(b"Hello")]),
        Input::new("fragmented Close", vec![frame(CLOSE, &[3, 0xe8]), frame(FIN, b"")]).fail(1002),
        Input::new("fragmented Pong", vec![frame(PONG, b"a"), frame(FIN, b"b")]).fail(1002),
        Input::new("126-byte Pong", vec![frame(FIN | PONG, &ping_126)]).fail(1002),
        Input::new("126-byte Close", vec![frame(FIN | CLOSE, &[0x03; 126])]).fail(1002),
        Input::new(
            "binary inside an open text message",
            vec![frame(TEXT, b"f1"), frame(FIN | BINARY, b"f2")],
        )
        .fail(1002),
        Input::new("text FIN=0 inside an open message", vec![frame(TEXT, b"a"), frame(TEXT, b"b")])
            .fail(1002),
        Input::new(
            "continuation after a complete message",
            vec![frame(FIN | TEXT, b"done"), frame(FIN, b"x")],
        )
        .replies_then_fail(vec![text_reply(b"done")], 1002),
    ];
    inputs.push(
        Input::new("125-byte Ping (the limit)", vec![frame(FIN | PING, &[0x61; 125])])
            .replies(vec![pong_reply(&[0x61; 125])]),
    );
    for write in [Pace::Whole, Pace::Spaced(Duration::from_millis(50))] {
        for input in &inputs {
            bench.run(input, write);
        }
    }
    bench.finish();
}

// ------------------------------------------------------------------------------------------
// C05: UTF-8 validation across fragment boundaries
// ------------------------------------------------------------------------------------------

#[test]
fn c05_utf8_is_validated_across_fragment_boundaries() {
    // The permessage-deflate repetitions are in `compression.rs`.
    let mut bench = Bench::start(&[]);
    let kosme = hex("ce ba e1 bd b9 cf 83 ce bc ce b5");
    let mut inputs = vec![
        Input::new("κ over two frames", vec![frame(TEXT, &[0xce]), frame(FIN, &[0xba])])
            .doc("01 81 01 02 03 04 cf · 80 81 01 02 03 04 bb")
            .replies(vec![text_reply("κ".as_bytes())]),
        Input::new(
            "U+1D11E one byte per frame",
            vec![frame(TEXT, &[0xf0]), frame(0, &[0x9d]), frame(0, &[0x84]), frame(FIN, &[0x9e])],
        )
        .doc(
            "01 81 01 02 03 04 f1 · 00 81 01 02 03 04 9c · 00 81 01 02 03 04 85 · \
             80 81 01 02 03 04 9f",
        )
        .replies(vec![text_reply("𝄞".as_bytes())]),
        Input::new(
            "above U+10FFFF mid-message",
            vec![
                frame(TEXT, &kosme),
                frame(0, &hex("f4 90 80 80")),
                Part::Pause(Duration::from_millis(500)),
                frame(FIN, b"edited"),
            ],
        )
        .doc(
            "01 8b 01 02 03 04 cf b8 e2 b9 b8 cd 80 ca bd cc b6 · 00 84 01 02 03 04 f5 92 83 84 \
             · 80 86 01 02 03 04 64 66 6a 70 64 66",
        )
        .fail(1007),
        Input::new("truncated at message end", vec![frame(FIN | TEXT, &hex("61 62 ce"))])
            .doc("81 83 01 02 03 04 60 60 cd")
            .fail(1007),
        Input::new("overlong c0 af", vec![frame(FIN | TEXT, &hex("c0 af"))])
            .doc("81 82 01 02 03 04 c1 ad")
            .fail(1007),
        Input::new("surrogate ed a0 80", vec![frame(FIN | TEXT, &hex("ed a0 80"))])
            .doc("81 83 01 02 03 04 ec a2 83")
            .fail(1007),
    ];
    // The class: other invalid sequences, whole and split, and valid splits of each length.
    let invalid = [
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
    ];
    for bytes in invalid {
        let bytes = hex(bytes);
        inputs.push(Input::new("invalid UTF-8", vec![frame(FIN | TEXT, &bytes)]).fail(1007));
        let (a, b) = bytes.split_at(bytes.len() / 2);
        let split = vec![frame(TEXT, b"ok"), frame(0, a), frame(FIN, b)];
        inputs.push(Input::new("invalid UTF-8, split", split).fail(1007));
    }
    for text in ["é", "€", "𝄞", "κόσμε", "a𝄞b€c"] {
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let (a, b) = bytes.split_at(cut);
            let split = vec![frame(TEXT, a), frame(FIN, b)];
            inputs.push(Input::new("valid split", split).replies(vec![text_reply(bytes)]));
        }
    }
    inputs.push(
        Input::new(
            "valid split with a Ping inside a code point",
            vec![frame(TEXT, &[0xe2, 0x82]), frame(FIN | PING, b"p"), frame(FIN, &[0xac])],
        )
        .replies(vec![pong_reply(b"p"), text_reply("€".as_bytes())]),
    );
    for input in &inputs {
        bench.run(input, Pace::Whole);
    }
    bench.finish();
}

// ------------------------------------------------------------------------------------------
// C06: Close-frame payload validation
// ------------------------------------------------------------------------------------------

#[test]
fn c06_close_bodies_are_validated_and_valid_codes_get_a_clean_close() {
    let mut bench = Bench::start(&[]);
    let mut inputs = vec![
        Input::new("1-byte body", vec![frame(FIN | CLOSE, &[0x03])])
            .doc("88 81 01 02 03 04 02")
            .fail(1002),
        Input::new("126-byte Close", vec![frame(FIN | CLOSE, &close_body(1000, &[b'r'; 124]))])
            .fail(1002),
        Input::new("reason ff fe", vec![frame(FIN | CLOSE, &close_body(1000, &[0xff, 0xfe]))])
            .doc("88 84 01 02 03 04 02 ea fc fa")
            .fail_any(&[1002, 1007]),
        Input::new("empty body", vec![frame(FIN | CLOSE, b"")])
            .doc("88 80 01 02 03 04")
            .close_reply(&[None, Some(1000)]),
    ];
    let documented_invalid = [
        (0, "01 02"),
        (999, "02 e5"),
        (1004, "02 ee"),
        (1005, "02 ef"),
        (1006, "02 ec"),
        (1015, "02 f5"),
        (1016, "02 fa"),
        (1100, "05 4e"),
        (2000, "06 d2"),
        (2999, "0a b5"),
        (5000, "12 8a"),
    ];
    let documented_valid = [
        (1000, "02 ea"),
        (1001, "02 eb"),
        (1003, "02 e9"),
        (1007, "02 ed"),
        (1011, "02 f1"),
        (1012, "02 f6"),
        (1013, "02 f7"),
        (1014, "02 f4"),
        (3000, "0a ba"),
        (4999, "12 85"),
    ];
    for (code, masked_code) in documented_invalid.iter().chain(&documented_valid) {
        let input = Input::new("close code", vec![frame(FIN | CLOSE, &close_body(*code, b""))])
            .doc(format!("88 82 01 02 03 04 {masked_code}"));
        inputs.push(if valid_close_code(*code) {
            input.close_reply(&[Some(*code), Some(1000)])
        } else {
            input.fail(1002)
        });
    }
    // Variants of our own: a valid code with a valid reason, a 125-byte body (the limit),
    // an invalid reason after a valid code.
    inputs.push(
        Input::new(
            "1000 with a reason",
            vec![frame(FIN | CLOSE, &close_body(1000, "bye κ".as_bytes()))],
        )
        .close_reply(&[Some(1000)]),
    );
    inputs.push(
        Input::new("125-byte Close", vec![frame(FIN | CLOSE, &close_body(4000, &[b'r'; 123]))])
            .close_reply(&[Some(4000), Some(1000)]),
    );
    inputs.push(
        Input::new("truncated UTF-8 reason", vec![frame(FIN | CLOSE, &close_body(1000, &[0xce]))])
            .fail_any(&[1002, 1007]),
    );
    for input in &inputs {
        bench.run(input, Pace::Whole);
    }
    bench.finish();
}

#[test]
fn c06_every_close_code_is_classified_as_rfc_6455_says() {
    let server = Server::start(&["--echo"]);
    let codes: Vec<u16> =
        (0..=5001).chain((5002..=u16::MAX).step_by(97)).chain([u16::MAX]).collect();
    let chunks: Vec<Vec<u16>> =
        codes.chunks(codes.len().div_ceil(4)).map(<[u16]>::to_vec).collect();
    let addr = server.addr;
    let workers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            thread::spawn(move || {
                for code in chunk {
                    let mut client = RawClient::open(addr, "/wse");
                    client.send(&masked(FIN | CLOSE, &close_body(code, b""), random_key()));
                    if valid_close_code(code) {
                        client.expect_close_reply(&[Some(code), Some(1000)], FAIL_WITHIN);
                    } else {
                        client.expect_close(1002, FAIL_WITHIN);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("close-code worker");
    }
    assert!(server.is_running());
    fresh_echo(addr);
}

// ------------------------------------------------------------------------------------------
// C07: declared length and reassembled size limits
// ------------------------------------------------------------------------------------------

#[test]
fn c07_lengths_are_judged_from_the_header_and_counted_across_fragments() {
    const L: usize = 1 << 20;
    // The outbound budget must hold a publication of L bytes for the bystander.
    let mut bench =
        Bench::start(&["--max-message-size", "1048576", "--max-outbound-queue-bytes", "4194304"]);
    let half = vec![b'a'; L / 2];
    let over = vec![b'a'; L + 1];
    let rejected = vec![
        Input::new("announces 2^63-1 bytes", vec![Part::Header(FIN | BINARY, (1 << 63) - 1)])
            .doc("82 ff 7f ff ff ff ff ff ff ff 01 02 03 04")
            .fail_within(1009, Duration::from_secs(1)),
        Input::new("64-bit length with the top bit set", vec![Part::Header(FIN | BINARY, 1 << 63)])
            .doc("82 ff 80 00 00 00 00 00 00 00 01 02 03 04")
            .fail(1002),
        Input::new("one frame of L+1 bytes", vec![frame(FIN | BINARY, &over)]).fail(1009),
        Input::new(
            "fragments crossing L",
            vec![frame(TEXT, &half), frame(0, &half), frame(FIN, b"a")],
        )
        .fail_within(1009, Duration::from_secs(1)),
        // Variants of our own.
        Input::new("text announcing 2^63-1", vec![Part::Header(FIN | TEXT, (1 << 63) - 1)])
            .fail_within(1009, Duration::from_secs(1)),
        Input::new(
            "announces L+1 and sends nothing",
            vec![Part::Header(FIN | BINARY, L as u64 + 1)],
        )
        .fail_within(1009, Duration::from_secs(1)),
        Input::new(
            "continuation announcing 2^63-1",
            vec![frame(BINARY, b"x"), Part::Header(FIN, (1 << 63) - 1)],
        )
        .fail_within(1009, Duration::from_secs(1)),
        Input::new(
            "top bit set on a continuation",
            vec![frame(TEXT, b"x"), Part::Header(FIN, 1 << 63)],
        )
        .fail(1002),
        Input::new(
            "binary fragments crossing L",
            vec![frame(BINARY, &half), frame(0, &half), frame(FIN, b"b")],
        )
        .fail(1009),
    ];
    // Each rejected input (run twice on the echo server) grows its RSS by less than 2·L.
    for input in &rejected {
        let before = bench.echo.rss_kb();
        bench.run(input, Pace::Whole);
        let grown = bench.echo.rss_kb().saturating_sub(before);
        assert!(grown < 2 * L as u64 / 1024, "{}: RSS grew by {grown} KiB", input.name);
    }

    // Exactly L, in one frame and in fragments, is accepted and delivered intact.
    let exact = vec![b'e'; L];
    let accepted = vec![
        Input::new("exactly L in one frame", vec![frame(FIN | BINARY, &exact)])
            .replies(vec![Frame { b0: FIN | BINARY, payload: exact.clone() }]),
        Input::new(
            "exactly L in fragments",
            vec![
                frame(TEXT, &exact[..L / 2]),
                frame(0, &exact[L / 2..L - 1]),
                frame(FIN, &exact[L - 1..]),
            ],
        )
        .replies(vec![Frame { b0: FIN | TEXT, payload: exact.clone() }]),
    ];
    for input in &accepted {
        bench.run(input, Pace::Whole);
    }
    bench.finish();
}

// ------------------------------------------------------------------------------------------
// C10: half-open connections, server side
// ------------------------------------------------------------------------------------------

#[test]
fn c10_half_open_connections_are_torn_down_by_the_heartbeat_timeout() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--ping-interval",
        "2",
        "--idle-timeout",
        "4",
        "--close-timeout",
        "1",
        "--allow-client-publish",
    ]);
    let mut unharmed = Unharmed::before(&server);

    // Three clients behind relays that will go dark (both ways, server→client only,
    // client→server only) and one behind a relay that keeps working.
    let variants = [DISCARD_UP | DISCARD_DOWN, DISCARD_DOWN, DISCARD_UP, 0];
    let relays: Vec<Relay> = variants.iter().map(|_| Relay::start(server.addr)).collect();
    let clients: Vec<LiveClient> =
        relays.iter().map(|r| LiveClient::open(r.addr, "/wse?topics=c10")).collect();
    for client in &clients {
        client.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update"));
    }
    let open = server.metric("wse_connections");
    assert_eq!(open, 6.0, "bystander, publisher and four relayed clients");

    let dark_at = Instant::now();
    for (relay, mode) in relays.iter().zip(variants) {
        relay.set(mode);
    }
    let limit = Duration::from_secs(2 + 4 + 1 + 2);
    let mut ticks = 0;
    while server.metric("wse_connections") > 3.0 && dark_at.elapsed() < limit {
        unharmed.publish_one();
        ticks += 1;
        thread::sleep(Duration::from_millis(500));
    }
    let took = dark_at.elapsed();
    eprintln!("c10: half-open connections torn down {took:?} after the link went dark");
    assert_eq!(server.metric("wse_connections"), 3.0, "half-open connections still counted");
    assert!(took <= limit, "torn down after {took:?}, limit {limit:?}");
    assert!(ticks > 0);
    assert_eq!(server.metric(r#"wse_closes_total{reason="idle_timeout"}"#), 3.0);

    // The working relayed client still gets the topic; the others are gone from it.
    let dropped = server.metric("wse_dropped_messages_total");
    let mut publisher = ws_connect_wse(&server, "/wse");
    ws_send(&mut publisher, &publish_json("c10", r#"{"after":true}"#));
    let got = clients[3].wait_json(IO_LIMIT, |v| v.str_at("tp") == Some("c10"));
    assert!(got.is_some(), "the relayed client with a working link lost its subscription");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(server.metric("wse_dropped_messages_total"), dropped);
    drop(clients);
    unharmed.check(&server);
}

/// C10 with presence on: each half-open client's death is announced to the topic as a
/// `presence_leave` carrying that client's member id (its `connection_id`, anonymous), and a
/// bystander of the topic that is not behind a relay receives every one of them, while the
/// client with a working link stays listed.
#[test]
fn c10_presence_leave_of_half_open_connections_reaches_the_bystanders() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--ping-interval",
        "2",
        "--idle-timeout",
        "4",
        "--close-timeout",
        "1",
        "--presence",
        "--allow-client-publish",
    ]);
    let mut unharmed = Unharmed::before(&server);
    let watcher = LiveClient::open(server.addr, "/wse?topics=c10p");
    watcher.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update"));

    let variants = [DISCARD_UP | DISCARD_DOWN, DISCARD_DOWN, DISCARD_UP, 0];
    let relays: Vec<Relay> = variants.iter().map(|_| Relay::start(server.addr)).collect();
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for relay in &relays {
        let (raw, ready) = RawClient::open_wse(relay.addr, "/wse?topics=c10p");
        let details = ready.get("p").and_then(|p| p.get("details")).expect("server_ready");
        ids.push(details.str_at("connection_id").expect("connection_id").to_owned());
        let client = LiveClient::from_raw(raw);
        client.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update"));
        clients.push(client);
    }
    for id in &ids {
        let joined = watcher.wait_json(IO_LIMIT, |v| presence_of(v, "presence_join", id));
        assert!(joined.is_some(), "no presence_join for {id}");
    }

    // Members: the watcher, the four relayed clients, and the bystanders of UNHARMED. Every
    // join has been applied (the watcher saw them); the gauge follows within a tick (<= 1 s).
    thread::sleep(Duration::from_millis(1200));
    let members = server.metric("wse_presence_users");
    assert!(members >= 5.0, "{members} presence members");

    let dark_at = Instant::now();
    for (relay, mode) in relays.iter().zip(variants) {
        relay.set(mode);
    }
    // P + T + close timeout + 2 s, as the case allows.
    let limit = Duration::from_secs(2 + 4 + 1 + 2);
    let mut left: Vec<String> = Vec::new();
    while left.len() < 3 && dark_at.elapsed() < limit {
        let within = limit.saturating_sub(dark_at.elapsed()).min(Duration::from_millis(500));
        let leave = |v: &Value| v.str_at("t") == Some("presence_leave");
        if let Some(v) = watcher.wait_json(within, leave) {
            left.extend(v.get("p").and_then(|p| p.str_at("user_id")).map(str::to_owned));
        }
        unharmed.publish_one();
    }
    eprintln!("c10: {} presence_leave after {:?}", left.len(), dark_at.elapsed());
    left.sort();
    let mut dark = ids[..3].to_vec();
    dark.sort();
    assert_eq!(left, dark, "presence_leave of exactly the half-open clients within {limit:?}");
    let late = watcher.collect(Duration::from_millis(300));
    let working_left = late.iter().any(|seen| match seen {
        Seen::Json(v) => presence_of(v, "presence_leave", &ids[3]),
        _ => false,
    });
    assert!(!working_left, "the client with a working link was announced as gone");
    let now = server.wait_metric("wse_presence_users", IO_LIMIT, |n| n == members - 3.0);
    assert_eq!(now, members - 3.0, "the half-open clients are still listed");
    drop(clients);
    unharmed.check(&server);
}

/// Whether `v` is a presence publication of `kind` on `c10p` for member `id`.
fn presence_of(v: &Value, kind: &str, id: &str) -> bool {
    v.str_at("t") == Some(kind)
        && v.str_at("tp") == Some("c10p")
        && v.get("p").and_then(|p| p.str_at("user_id")) == Some(id)
}

/// Relay mode bit: drop bytes from the client to the server.
const DISCARD_UP: u8 = 1;
/// Relay mode bit: drop bytes from the server to the client.
const DISCARD_DOWN: u8 = 2;

/// A one-connection TCP relay that can silently discard either direction while keeping
/// both legs open.
struct Relay {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
}

impl Relay {
    fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let mode = Arc::new(AtomicU8::new(0));
        let pump_mode = Arc::clone(&mode);
        thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else { return };
            let upstream = TcpStream::connect(server).expect("relay to server");
            let (c2, u2) =
                (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
            let up_mode = Arc::clone(&pump_mode);
            thread::spawn(move || pump(client, upstream, &up_mode, DISCARD_UP));
            pump(u2, c2, &pump_mode, DISCARD_DOWN);
        });
        Relay { addr, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side ends, dropping the bytes while `bit` is set.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8, bit: u8) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match std::io::Read::read(&mut from, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mode.load(Ordering::SeqCst) & bit != 0 {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    // Keep both legs open while discarding: only a working direction propagates its end.
    if mode.load(Ordering::SeqCst) & bit == 0 {
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
}

// ------------------------------------------------------------------------------------------
// The frame-case runner
// ------------------------------------------------------------------------------------------

/// One part of a frame input.
#[derive(Clone)]
enum Part {
    /// A whole frame: header byte, payload, masked or not.
    Frame { b0: u8, payload: Vec<u8>, masked: bool },
    /// A masked frame header announcing this length, with no payload after it.
    Header(u8, u64),
    /// Stop writing for a while; a Close arriving meanwhile is a fail-fast reaction.
    Pause(Duration),
}

/// How the server must react to an input.
#[derive(Clone)]
enum Expect {
    /// FAIL(n) for one of the codes, within the time.
    Fail(Vec<u16>, Duration),
    /// These frames (what `--echo` sends back), then the connection stays open.
    Replies(Vec<Frame>),
    /// These frames, then FAIL(n).
    RepliesThenFail(Vec<Frame>, u16),
    /// A Close reply with one of these codes (`None`: empty body), then TCP close.
    CloseReply(Vec<Option<u16>>),
}

/// A named input of a frame-layer case.
struct Input {
    name: &'static str,
    parts: Vec<Part>,
    /// The README's wire bytes for key `01 02 03 04`.
    doc: Option<String>,
    expect: Expect,
}

impl Input {
    fn new(name: &'static str, parts: Vec<Part>) -> Input {
        Input { name, parts, doc: None, expect: Expect::Replies(Vec::new()) }
    }

    fn doc(mut self, bytes: impl Into<String>) -> Input {
        self.doc = Some(bytes.into());
        self
    }

    fn fail(self, code: u16) -> Input {
        self.fail_any(&[code])
    }

    fn fail_any(mut self, codes: &[u16]) -> Input {
        self.expect = Expect::Fail(codes.to_vec(), FAIL_WITHIN);
        self
    }

    fn fail_within(mut self, code: u16, within: Duration) -> Input {
        self.expect = Expect::Fail(vec![code], within);
        self
    }

    fn replies(mut self, frames: Vec<Frame>) -> Input {
        self.expect = Expect::Replies(frames);
        self
    }

    fn replies_then_fail(mut self, frames: Vec<Frame>, code: u16) -> Input {
        self.expect = Expect::RepliesThenFail(frames, code);
        self
    }

    fn close_reply(mut self, codes: &[Option<u16>]) -> Input {
        self.expect = Expect::CloseReply(codes.to_vec());
        self
    }

    /// The wire chunks for `key`: frames, with `None` for a pause.
    fn wire(&self, key: [u8; 4]) -> Vec<Result<Vec<u8>, Duration>> {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Frame { b0, payload, masked: true } => Ok(masked(*b0, payload, key)),
                Part::Frame { b0, payload, masked: false } => Ok(unmasked(*b0, payload)),
                Part::Header(b0, len) => Ok(header(*b0, *len, Some(key))),
                Part::Pause(pause) => Err(*pause),
            })
            .collect()
    }

    /// The WSE variant: the data payload wrapped into a `publish` to [`CASE_TOPIC`] under
    /// `key` (`evil` for rejected inputs, `good` for positive controls), the bytes and
    /// frame boundaries of the original kept inside the JSON string.
    fn for_wse(&self) -> Input {
        let positive = matches!(self.expect, Expect::Replies(_));
        let key = if positive { "good" } else { "evil" };
        let prefix = format!(
            r#"{{"t":"publish","p":{{"topic":{},"data":{{"{key}":""#,
            common::json::quote(CASE_TOPIC)
        );
        let data: Vec<usize> = (0..self.parts.len())
            .filter(|&i| matches!(&self.parts[i], Part::Frame { b0, .. } if b0 & 0x08 == 0))
            .collect();
        let mut parts = self.parts.clone();
        if let (Some(&first), Some(&last)) = (data.first(), data.last()) {
            if let Part::Frame { payload, .. } = &mut parts[first] {
                // A large positive control keeps its exact size (C07: exactly L).
                if positive && payload.len() >= LARGE {
                    payload.drain(..prefix.len() + SUFFIX.len());
                }
                payload.splice(0..0, prefix.bytes());
            }
            if let Part::Frame { payload, .. } = &mut parts[last] {
                payload.extend_from_slice(SUFFIX);
            }
        }
        Input { name: self.name, parts, doc: None, expect: self.expect.clone() }
    }
}

/// How an input's frames are written.
#[derive(Clone, Copy, Debug)]
enum Pace {
    /// All frames in one write (up to a pause).
    Whole,
    /// One frame per write, this far apart.
    Spaced(Duration),
}

/// An `--echo` server, a WSE server with its UNHARMED watch, and the positive controls
/// delivered so far.
struct Bench {
    echo: Server,
    wse: Server,
    unharmed: Unharmed,
    delivered: usize,
}

impl Bench {
    fn start(extra: &[&str]) -> Bench {
        let mut echo_args = vec!["--echo"];
        echo_args.extend_from_slice(extra);
        let mut wse_args = vec!["--allow-client-publish"];
        wse_args.extend_from_slice(extra);
        let echo = Server::start(&echo_args);
        let wse = Server::start(&wse_args);
        let unharmed = Unharmed::before(&wse);
        Bench { echo, wse, unharmed, delivered: 0 }
    }

    /// Runs `input` with the documented key and a random key on the echo server, then its
    /// WSE variant with a random key on the WSE server.
    fn run(&mut self, input: &Input, write: Pace) {
        if let Some(doc) = &input.doc {
            let wire: Vec<u8> =
                input.wire(DOC_KEY).into_iter().filter_map(Result::ok).flatten().collect();
            assert_eq!(wire, hex(doc), "{}: the documented bytes", input.name);
        }
        let echo = self.echo.addr;
        let what = format!("{} ({write:?})", input.name);
        let doc_what = format!("{what}, doc key");
        play(RawClient::open(echo, "/wse"), input, DOC_KEY, write, &doc_what, false);
        play(RawClient::open(echo, "/wse"), input, random_key(), write, &what, false);

        let variant = input.for_wse();
        let (client, _) = RawClient::open_wse(self.wse.addr, "/wse");
        play(client, &variant, random_key(), write, &format!("{what}, WSE"), true);
        if let Expect::Replies(frames) = &input.expect {
            self.delivered += frames.iter().filter(|f| f.opcode() < CLOSE).count();
            let got = self.unharmed.case_messages(self.delivered, IO_LIMIT).len();
            assert_eq!(got, self.delivered, "{what}: positive control not delivered");
        }
        self.unharmed.publish_one();
    }

    fn finish(mut self) {
        self.unharmed.assert_case_count(self.delivered);
        self.unharmed.check(&self.wse);
        assert!(self.echo.is_running());
        fresh_echo(self.echo.addr);
    }
}

/// Writes `input` with `key` and checks the server's reaction.
/// On a WSE connection (`wse`), data is published, not echoed: only control replies come
/// back.
fn play(mut client: RawClient, input: &Input, key: [u8; 4], write: Pace, what: &str, wse: bool) {
    let mut early = None;
    let mut pending = Vec::new();
    for chunk in input.wire(key) {
        match (chunk, write) {
            (Ok(bytes), Pace::Whole) => pending.extend_from_slice(&bytes),
            (Ok(bytes), Pace::Spaced(gap)) => {
                if !client.try_send(&bytes) {
                    break;
                }
                thread::sleep(gap);
            }
            (Err(pause), _) => {
                let _ = client.try_send(&std::mem::take(&mut pending));
                if let Ok(frame) = client.read_frame(pause) {
                    early = Some(frame);
                    break;
                }
            }
        }
    }
    if early.is_none() {
        let _ = client.try_send(&pending);
    } else if matches!(input.parts.last(), Some(Part::Frame { .. })) {
        eprintln!("{what}: strict fail-fast, Close before the rest was sent");
    }
    match &input.expect {
        Expect::Fail(codes, within) => {
            let frame = match early {
                Some(frame) => frame,
                None => client
                    .read_frame(*within)
                    .unwrap_or_else(|e| panic!("{what}: FAIL({codes:?}) expected, got {e:?}")),
            };
            let code = frame.close_code().unwrap_or(0);
            let code = if codes.contains(&code) { code } else { codes[0] };
            client.expect_close_frame(&frame, code, Instant::now() + FAIL_WITHIN);
        }
        Expect::Replies(frames) => {
            expect_frames(&mut client, frames, what, wse);
            client.send_ping(b"end");
            let frame = client.read_frame(IO_LIMIT).expect("Pong after the replies");
            assert_eq!(frame, pong_reply(b"end"), "{what}: extra frames or no Pong");
        }
        Expect::RepliesThenFail(frames, code) => {
            expect_frames(&mut client, frames, what, wse);
            client.expect_close(*code, FAIL_WITHIN);
        }
        Expect::CloseReply(codes) => client.expect_close_reply(codes, FAIL_WITHIN),
    }
}

/// Reads the expected replies in order; on a WSE connection only the control replies.
fn expect_frames(client: &mut RawClient, frames: &[Frame], what: &str, wse: bool) {
    for want in frames.iter().filter(|f| !wse || f.opcode() >= CLOSE) {
        let got = client.read_frame(IO_LIMIT).unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert!(&got == want, "{what}: got {:?}, want {:?}", short(&got), short(want));
    }
}

/// A frame for error messages, its payload cut short.
fn short(frame: &Frame) -> String {
    let n = frame.payload.len();
    format!("b0={:02x} len={n} {:02x?}", frame.b0, &frame.payload[..n.min(16)])
}

/// H0 with the line `replace` (substring) replaced by `with`.
fn h0_with(addr: SocketAddr, replace: &str, with: &str) -> String {
    let request = h0_request(addr, "/wse", &[]);
    assert!(request.contains(replace), "H0 has no {replace:?}");
    request.replacen(replace, with, 1)
}

/// Sends `request` and expects a correct 101 and `server_ready`.
fn expect_upgrade(addr: SocketAddr, request: &str) {
    let mut client = RawClient::connect(addr);
    client.send(request.as_bytes());
    let first = request.lines().take(6).collect::<Vec<_>>().join(" | ");
    let response = client.read_head(IO_LIMIT).unwrap_or_else(|| panic!("no answer to {first}"));
    assert_eq!(response.status, 101, "{first}");
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(H0_ACCEPT), "{first}");
    assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("server_ready"), "{first}");
}

/// A fresh connection to an echo server completes H0 and gets its text back.
fn fresh_echo(addr: SocketAddr) {
    let mut client = RawClient::open(addr, "/wse");
    client.send(&masked(FIN | TEXT, b"still here", random_key()));
    let frame = client.read_frame(Duration::from_secs(1)).expect("echo");
    assert_eq!(frame.payload, b"still here");
}

fn frame(b0: u8, payload: &[u8]) -> Part {
    Part::Frame { b0, payload: payload.to_vec(), masked: true }
}

fn unmasked_part(b0: u8, payload: &[u8]) -> Part {
    Part::Frame { b0, payload: payload.to_vec(), masked: false }
}

fn text_reply(payload: &[u8]) -> Frame {
    Frame { b0: FIN | TEXT, payload: payload.to_vec() }
}

fn pong_reply(payload: &[u8]) -> Frame {
    Frame { b0: FIN | PONG, payload: payload.to_vec() }
}

fn close_body(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason);
    body
}

/// RFC 6455 §7.4: codes a peer may send in a Close frame.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Closes the JSON that [`Input::for_wse`] wraps around a payload.
const SUFFIX: &[u8] = br#""}}}"#;
/// Payloads from this size on are large positive controls (see [`Input::for_wse`]).
const LARGE: usize = 64 * 1024;
/// FAIL(n)'s time limit.
const FAIL_WITHIN: Duration = Duration::from_secs(2);
