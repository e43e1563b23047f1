//! Loopback tests of the `wse-server` binary (issue #2, item 7): fan-out across shards, glob
//! subscriptions, limits, timeouts, heartbeats, shutdown, the HTTP endpoints and echo mode.
//!
//! Every test starts its own server process on port 0 and talks to it over real sockets,
//! with the byte-exact client of `common` or with tungstenite.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::json::Value;
use common::*;

#[test]
fn delivers_200_publications_to_1000_subscribers_over_two_shards_once_each_and_in_order() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let mut subscribers: Vec<RawClient> = (0..1000)
        .map(|_| {
            let (mut client, _) = RawClient::open_wse(server.addr, "/wse?topics=bulk");
            let answer = client.next_json(IO_LIMIT);
            assert_eq!(answer.str_at("t"), Some("subscription_update"));
            let ok = answer.get("p").and_then(|p| p.get("success_topics")).map(Value::strings);
            assert_eq!(ok, Some(vec!["bulk".to_owned()]), "answer {answer:?}");
            client
        })
        .collect();

    // Both shards hold connections.
    let metrics = server.metrics();
    let on = |shard: &str| metric_value(&metrics, &format!("wse_connections{{shard=\"{shard}\"}}"));
    assert_eq!(on("0") + on("1"), 1000.0, "{metrics}");
    assert!(on("0") > 0.0 && on("1") > 0.0, "connections per shard: {} / {}", on("0"), on("1"));

    // One publisher, 200 messages.
    let mut publisher = ws_connect_wse(&server, "/wse");
    for n in 0..200 {
        ws_send(&mut publisher, &publish_json("bulk", &format!(r#"{{"n":{n}}}"#)));
    }

    for (i, client) in subscribers.iter_mut().enumerate() {
        let mut epoch = None;
        let mut first_offset = None;
        for n in 0..200u64 {
            let message = client.next_json(IO_LIMIT);
            let publication = Publication::from_json(&message)
                .unwrap_or_else(|| panic!("subscriber {i}: not a publication: {message:?}"));
            assert_eq!(message.str_at("c"), Some("U"));
            assert_eq!(message.str_at("t"), Some("bulk"));
            assert_eq!(publication.topic, "bulk");
            assert_eq!(publication.data.num_at("n"), Some(n as f64), "subscriber {i}");
            let first = *first_offset.get_or_insert(publication.offset);
            assert_eq!(publication.offset, first + n, "subscriber {i}: offsets not consecutive");
            assert_eq!(epoch.get_or_insert(publication.epoch.clone()), &publication.epoch);
            assert!(is_epoch(&publication.epoch), "epoch {:?}", publication.epoch);
        }
        assert_eq!(first_offset, Some(0), "a fresh topic starts at offset 0");
    }

    // Nothing more (no duplicates) arrives at a sample of subscribers.
    for client in subscribers.iter_mut().step_by(97) {
        client.expect_silence(Duration::from_millis(30));
    }
}

#[test]
fn glob_subscriptions_match_star_and_question_mark_patterns() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let subscriber = LiveClient::open(server.addr, "/wse");
    let answer = subscriber.subscribe(&["user:*:events", "room:?", "end"]);
    let ok = answer.get("p").and_then(|p| p.get("success_topics")).map(Value::strings);
    assert_eq!(ok.map(|v| v.len()), Some(3), "answer {answer:?}");

    let mut publisher = ws_connect_wse(&server, "/wse");
    let topics = ["user:42:events", "user:42:other", "room:a", "room:ab", "user::events", "rooms"];
    for topic in topics {
        ws_send(&mut publisher, &publish_json(topic, r#"{"x":1}"#));
    }
    ws_send(&mut publisher, &publish_json("end", "{}"));

    let got = topics_until_end(&subscriber);
    let mut got = got;
    got.sort();
    assert_eq!(got, ["room:a", "user:42:events", "user::events"]);
}

#[test]
fn unsubscribe_stops_delivery() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let subscriber = LiveClient::open(server.addr, "/wse");
    subscriber.subscribe(&["news", "news:*", "end"]);
    let mut publisher = ws_connect_wse(&server, "/wse");
    ws_send(&mut publisher, &publish_json("news", "{}"));
    ws_send(&mut publisher, &publish_json("news:1", "{}"));
    ws_send(&mut publisher, &publish_json("end", "{}"));
    let mut before = topics_until_end(&subscriber);
    before.sort();
    assert_eq!(before, ["news", "news:1"]);

    subscriber.send_text(
        r#"{"t":"subscription_update","p":{"action":"unsubscribe","topics":["news","news:*"]}}"#,
    );
    let answer = subscriber
        .wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update"))
        .expect("unsubscribe answer");
    let ok = answer.get("p").and_then(|p| p.get("success_topics")).map(Value::strings);
    assert_eq!(ok.map(|v| v.len()), Some(2), "answer {answer:?}");

    ws_send(&mut publisher, &publish_json("news", "{}"));
    ws_send(&mut publisher, &publish_json("news:2", "{}"));
    ws_send(&mut publisher, &publish_json("end", "{}"));
    assert_eq!(topics_until_end(&subscriber), Vec::<String>::new());
}

#[test]
fn topics_query_parameter_subscribes_on_connect() {
    let server = Server::start(&["--allow-client-publish"]);
    let (mut subscriber, _) = RawClient::open_wse(server.addr, "/wse?topics=a,b");
    let answer = subscriber.next_json(IO_LIMIT);
    let ok = answer.get("p").and_then(|p| p.get("success_topics")).map(Value::strings);
    assert_eq!(ok, Some(vec!["a".to_owned(), "b".to_owned()]));
    let mut publisher = ws_connect_wse(&server, "/wse");
    ws_send(&mut publisher, &publish_json("b", r#"{"k":"v"}"#));
    let message = subscriber.next_json(IO_LIMIT);
    assert_eq!(message.str_at("tp"), Some("b"));
    assert_eq!(message.get("p").and_then(|p| p.str_at("k")), Some("v"));
}

#[test]
fn publish_without_permission_is_answered_with_forbidden() {
    let server = Server::start(&[]);
    let mut client = ws_connect_wse(&server, "/wse");
    ws_send(&mut client, &publish_json("a", "{}"));
    let answer = ws_next_json(&mut client);
    assert_eq!(answer.str_at("t"), Some("error"), "answer {answer:?}");
    assert_eq!(answer.get("p").and_then(|p| p.str_at("code")), Some("FORBIDDEN"));
}

#[test]
fn oversize_message_is_closed_with_1009() {
    let server = Server::start(&["--max-message-size", "1024", "--allow-client-publish"]);
    let unharmed = Unharmed::before(&server);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let body = format!("{}{}", publish_json(CASE_TOPIC, EVIL), " ".repeat(1024));
    client.send(&masked(FIN | TEXT, body.as_bytes(), random_key()));
    client.expect_close(1009, Duration::from_secs(2));
    unharmed.check(&server);
}

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    let server = Server::start(&["--allow-client-publish"]);
    let unharmed = Unharmed::before(&server);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    client.send(&unmasked(FIN | TEXT, publish_json(CASE_TOPIC, EVIL).as_bytes()));
    client.expect_close(1002, Duration::from_secs(2));
    unharmed.check(&server);
}

#[test]
fn stalled_handshake_is_cut_off_at_the_timeout_while_others_are_served() {
    let server = Server::start(&["--handshake-timeout", "1", "--allow-client-publish"]);
    let started = Instant::now();
    let mut stalled = RawClient::connect(server.addr);
    stalled.send(b"GET /wse HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n");

    // Others are served while it stalls.
    fresh_pong_within(server.addr, Duration::from_secs(1));
    let health = server.get("/health");
    assert_eq!(health.status, 200);
    // The stalled socket and this very request are in the handshake.
    let body = common::json::parse(&health.body).expect("health JSON");
    assert_eq!(body.num_at("handshaking"), Some(2.0), "{body:?}");

    assert!(stalled.wait_closed(Duration::from_secs(3)), "stalled handshake was not cut off");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "cut off too early, after {took:?}");
    assert!(took <= Duration::from_secs(3), "cut off too late, after {took:?}");
    let timeouts = server.wait_metric(
        r#"wse_handshake_rejections_total{reason="timeout"}"#,
        Duration::from_secs(1),
        |v| v >= 1.0,
    );
    assert_eq!(timeouts, 1.0);
}

#[test]
fn silent_client_is_closed_with_4408_at_the_idle_timeout_and_its_subscriptions_are_gone() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--ping-interval",
        "0.5",
        "--idle-timeout",
        "1.5",
        "--allow-client-publish",
    ]);
    let unharmed = Unharmed::before(&server);
    let (mut silent, _) = RawClient::open_wse(server.addr, "/wse?topics=idle");
    silent.next_json(IO_LIMIT);
    let live = LiveClient::open(server.addr, "/wse?topics=idle");
    assert_eq!(server.metric("wse_connections"), 4.0);
    let subscriptions = server.metric("wse_subscriptions");

    // The silent client only reads: heartbeats come, then Close 4408, then TCP close.
    let started = Instant::now();
    let close = loop {
        let frame = silent.read_frame(Duration::from_secs(4)).expect("heartbeats, then Close");
        if frame.opcode() == CLOSE {
            break frame;
        }
        assert!(frame.opcode() == PING || frame.text().starts_with(r#"{"c":"WSE","t":"ping""#));
    };
    let took = started.elapsed();
    assert_eq!(close.close_code(), Some(4408), "{close:?}");
    assert!(took >= Duration::from_millis(1200), "closed after {took:?}, before the timeout");
    assert!(silent.wait_closed(Duration::from_secs(3)), "TCP stays open after 4408");

    // Its connection and subscription are gone; the live subscriber still gets the topic.
    let open = server.wait_metric("wse_connections", IO_LIMIT, |v| v == 3.0);
    assert_eq!(open, 3.0);
    assert_eq!(server.metric(r#"wse_closes_total{reason="idle_timeout"}"#), 1.0);
    assert_eq!(server.metric("wse_subscriptions"), subscriptions - 1.0);
    let dropped = server.metric("wse_dropped_messages_total");
    let mut publisher = ws_connect_wse(&server, "/wse");
    ws_send(&mut publisher, &publish_json("idle", r#"{"after":true}"#));
    let got = live.wait_json(IO_LIMIT, |v| v.str_at("tp") == Some("idle"));
    assert!(got.is_some(), "live subscriber lost the topic");
    assert_eq!(server.metric("wse_dropped_messages_total"), dropped);
    unharmed.check(&server);
}

#[test]
fn connection_over_the_limit_gets_503_with_retry_after() {
    let server = Server::start(&["--max-connections", "2"]);
    let first = RawClient::open_wse(server.addr, "/wse");
    let _second = ws_connect_wse(&server, "/wse");
    let request = h0_request(server.addr, "/wse", &[]);
    let response = http_exchange(server.addr, request.as_bytes());
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.header("Retry-After"), Some("1"));
    assert_eq!(response.header("Sec-WebSocket-Accept"), None);
    assert_eq!(server.metric(r#"wse_handshake_rejections_total{reason="full"}"#), 1.0);

    // A freed slot admits again.
    drop(first);
    assert!(eventually(IO_LIMIT, || server.metric("wse_connections") == 1.0));
    fresh_pong_within(server.addr, Duration::from_secs(1));
}

#[test]
fn sigterm_closes_every_client_with_1012_and_exits_within_5_s() {
    let server = Server::start(&["--shards", "2"]);
    let mut raws: Vec<RawClient> =
        (0..8).map(|_| RawClient::open_wse(server.addr, "/wse?topics=t").0).collect();
    for raw in &mut raws {
        raw.next_json(IO_LIMIT);
    }
    let mut ws = ws_connect_wse(&server, "/wse");
    let started = Instant::now();
    server.sigterm();

    for raw in &mut raws {
        let frame = raw.read_frame(Duration::from_secs(5)).expect("Close 1012");
        assert_eq!((frame.opcode(), frame.close_code()), (CLOSE, Some(1012)), "{frame:?}");
        raw.send(&masked(FIN | CLOSE, &frame.payload, random_key()));
        assert!(raw.wait_closed(Duration::from_secs(5)));
    }
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("tungstenite saw {e} instead of Close 1012"),
        }
    };
    assert_eq!(code, Some(1012));
    let status = server.wait_exit(Duration::from_secs(5).saturating_sub(started.elapsed()));
    let status = status.expect("the server did not exit within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn health_and_metrics_answer_over_plain_http() {
    let server = Server::start(&["--shards", "2"]);
    let _client = RawClient::open_wse(server.addr, "/wse");
    let health = server.get("/health");
    assert_eq!(health.status, 200);
    assert!(health.header("Content-Type").is_some_and(|t| t.contains("json")));
    let body = common::json::parse(&health.body).expect("health is JSON");
    assert_eq!(body.num_at("connections"), Some(1.0), "{body:?}");

    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body_text();
    for series in [
        r#"wse_connections{shard="0"}"#,
        r#"wse_connections{shard="1"}"#,
        r#"wse_closes_total{reason="idle_timeout"}"#,
        r#"wse_handshake_rejections_total{reason="not_found"}"#,
    ] {
        metric_value(&text, series);
    }
    assert_eq!(metric_value(&text, "wse_connections"), 1.0);
}

#[test]
fn unknown_path_gets_404() {
    let server = Server::start(&[]);
    assert_eq!(server.get("/nope").status, 404);
    let upgrade = h0_request(server.addr, "/other", &[]);
    let response = http_exchange(server.addr, upgrade.as_bytes());
    assert_eq!(response.status, 404, "{response:?}");
    assert_eq!(server.metric(r#"wse_handshake_rejections_total{reason="not_found"}"#), 2.0);
}

#[test]
fn custom_path_serves_the_endpoint_there() {
    let server = Server::start(&["--path", "/ws/v1"]);
    fresh_pong_on(&server, "/ws/v1");
    let response = http_exchange(server.addr, h0_request(server.addr, "/wse", &[]).as_bytes());
    assert_eq!(response.status, 404);
}

#[test]
fn server_heartbeat_is_a_ping_text_with_the_fixed_prefix_and_a_websocket_ping() {
    let server = Server::start(&["--ping-interval", "0.3"]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let (mut text, mut ping) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(3);
    while (text.is_none() || ping.is_none()) && Instant::now() < deadline {
        let frame = client.read_frame(Duration::from_secs(2)).expect("a heartbeat");
        match frame.opcode() {
            TEXT => text = Some(frame),
            PING => ping = Some(frame),
            _ => panic!("unexpected {frame:?}"),
        }
    }
    let text = text.expect("a ping text").text();
    assert!(text.starts_with(r#"{"c":"WSE","t":"ping","p":"#), "{text}");
    assert!(ping.is_some(), "no WebSocket Ping frame");
}

#[test]
fn pong_answer_has_the_fixed_prefix() {
    let server = Server::start(&[]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    client.send_text(r#"{"t":"ping","p":{"timestamp":123}}"#);
    let frame = client.read_frame(IO_LIMIT).expect("PONG");
    assert_eq!(frame.b0, FIN | TEXT);
    let text = frame.text();
    assert!(text.starts_with(r#"{"c":"WSE","t":"PONG","p":"#), "{text}");
    let pong = common::json::parse(&frame.payload).expect("PONG is JSON");
    assert_eq!(pong.get("p").and_then(|p| p.num_at("client_timestamp")), Some(123.0));
    assert_eq!(pong.num_at("seq"), Some(2.0), "seq after server_ready");
}

#[test]
fn websocket_ping_is_answered_with_a_pong_carrying_its_data() {
    let server = Server::start(&[]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    client.send_ping(b"abc");
    let frame = client.read_frame(IO_LIMIT).expect("Pong");
    assert_eq!(frame, Frame { b0: FIN | PONG, payload: b"abc".to_vec() });
}

#[test]
fn echo_mode_echoes_text_and_binary_and_sends_nothing_else() {
    let server = Server::start(&["--echo", "--ping-interval", "0.2"]);
    let mut client = RawClient::open(server.addr, "/wse");
    client.send(&masked(FIN | TEXT, b"hello", random_key()));
    assert_eq!(client.read_frame(IO_LIMIT), Ok(Frame { b0: FIN | TEXT, payload: b"hello".into() }));
    let binary: Vec<u8> = (0..=255).collect();
    client.send(&masked(FIN | BINARY, &binary, random_key()));
    assert_eq!(client.read_frame(IO_LIMIT), Ok(Frame { b0: FIN | BINARY, payload: binary }));
    // No server_ready, no heartbeats.
    client.expect_silence(Duration::from_millis(600));

    let mut ws = ws_connect(&server, "/wse");
    ws.send(tungstenite::Message::text("κόσμε")).expect("send");
    assert_eq!(ws.read().expect("echo"), tungstenite::Message::text("κόσμε"));
    ws.send(tungstenite::Message::binary(vec![0u8, 1, 2])).expect("send");
    assert_eq!(ws.read().expect("echo"), tungstenite::Message::binary(vec![0u8, 1, 2]));
}

#[test]
fn plain_http_keeps_working_when_the_request_arrives_in_pieces() {
    let server = Server::start(&[]);
    let mut stream = connect(server.addr);
    for piece in [&b"GET /hea"[..], b"lth HTTP/1.1\r\nHo", b"st: x\r\n\r\n"] {
        stream.write_all(piece).expect("write");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).map(|r| r.status), Some(200));
}

/// Topics of the publications `subscriber` receives until the one on `end` (excluded),
/// plus any that trail it within 300 ms (topics owned by other shards may overtake).
fn topics_until_end(subscriber: &LiveClient) -> Vec<String> {
    let end = subscriber
        .wait_json(IO_LIMIT, |v| v.str_at("tp").is_some())
        .map(|v| v.str_at("tp").map(str::to_owned));
    let mut topics = Vec::new();
    let mut next = end;
    while let Some(Some(topic)) = next {
        if topic != "end" {
            topics.push(topic);
        } else {
            break;
        }
        next = subscriber
            .wait_json(IO_LIMIT, |v| v.str_at("tp").is_some())
            .map(|v| v.str_at("tp").map(str::to_owned));
    }
    for seen in subscriber.collect(Duration::from_millis(300)) {
        if let Seen::Json(v) = seen {
            topics.extend(v.str_at("tp").map(str::to_owned));
        }
    }
    topics
}

/// H0 on `path` and a PONG.
fn fresh_pong_on(server: &Server, path: &str) {
    let (mut client, _) = RawClient::open_wse(server.addr, path);
    client.send_text(r#"{"t":"ping","p":{"timestamp":1}}"#);
    assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("PONG"));
}

/// An epoch is 8 lowercase hex digits.
fn is_epoch(epoch: &str) -> bool {
    epoch.len() == 8 && epoch.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
