//! Loopback tests of the application interface (issue #4): events drained from two shards,
//! read backpressure when the application falls behind, calls into the shards and their
//! bounds, and snapshot holds (PROTOCOL.md §7, §8).
//!
//! Unlike the other test files these start the engine in-process, through
//! `wse_shard::Server::start`, because the application interface is a library API; the
//! clients are still real sockets (the byte-exact client of `common`).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::engine::{connected, drain_until, open, start};
use common::json::{self, Value};
use common::{masked, random_key, RawClient, BINARY, CLOSE, FIN, IO_LIMIT, PING, PONG, TEXT};
use sonic_rs::JsonValueTrait;
use wse_shard::{ConnId, Error, Event, EventKind, Priority};

/// The document of a `msg` event.
fn msg(event: &Event) -> Option<sonic_rs::Value> {
    match &event.kind {
        EventKind::Message(envelope) => Some(envelope.parse().expect("the envelope is JSON")),
        _ => None,
    }
}

/// `t` of a `msg` event.
fn msg_type(event: &Event) -> Option<String> {
    msg(event)?.get("t").and_then(|t| t.as_str()).map(str::to_owned)
}

/// `p.n` of a `msg` event.
fn msg_n(event: &Event) -> Option<u64> {
    msg(event)?.get("p").and_then(|p| p.get("n")).and_then(|n| n.as_u64())
}

/// The next WSE message (text or binary JSON frame), answering Pings and skipping
/// heartbeats; whether it came as a binary frame.
fn next_message(client: &mut RawClient, within: Duration) -> (bool, Value) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = client.read_frame(left).unwrap_or_else(|e| panic!("no message: {e:?}"));
        match frame.opcode() {
            PING => client.send(&masked(FIN | PONG, &frame.payload, random_key())),
            TEXT | BINARY => {
                let value = json::parse(&frame.payload)
                    .unwrap_or_else(|| panic!("not JSON: {:?}", frame.payload));
                if !common::is_heartbeat(&value) {
                    return (frame.opcode() == BINARY, value);
                }
            }
            _ => panic!("unexpected frame {frame:?}"),
        }
    }
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason.as_bytes());
    masked(FIN | CLOSE, &body, random_key())
}

#[test]
fn drain_collects_every_connections_events_from_two_shards_in_order() {
    let engine = start(|_| {});
    let app = engine.app().clone();
    let clients = 30;
    let per_client = 20;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let addr = engine.local_addr();
            std::thread::spawn(move || {
                let (mut client, _) = RawClient::open_wse(addr, "/wse");
                client.subscribe("subscribe", &["room"]);
                for n in 0..per_client {
                    client.send_text(&format!(r#"{{"t":"chat","p":{{"n":{n}}}}}"#));
                }
                client.send_text("not json {");
                client.send(&masked(FIN | BINARY, &[0xde, 0xad], random_key()));
                client.send(&close_frame(1000, "done"));
                client.expect_close_reply(&[Some(1000)], IO_LIMIT);
            })
        })
        .collect();
    let disconnects = |all: &[Event]| {
        all.iter().filter(|e| matches!(e.kind, EventKind::Disconnect { .. })).count()
    };
    let events = drain_until(&app, Duration::from_secs(20), |all| disconnects(all) == clients);
    for worker in workers {
        worker.join().expect("client");
    }

    let mut by_conn: HashMap<ConnId, Vec<&Event>> = HashMap::new();
    for event in &events {
        by_conn.entry(event.conn).or_default().push(event);
    }
    assert_eq!(by_conn.len(), clients, "connections seen");
    let shards: std::collections::HashSet<u64> = by_conn.keys().map(|c| c.0 >> 48).collect();
    assert_eq!(shards.len(), 2, "events from both shards");
    for (conn, list) in &by_conn {
        let kinds: Vec<&str> = list.iter().map(|e| e.kind.name()).collect();
        assert_eq!(kinds.len(), per_client as usize + 5, "{conn}: {kinds:?}");
        assert_eq!(kinds[0], "connect", "{conn}: {kinds:?}");
        assert_eq!(msg_type(list[1]).as_deref(), Some("subscription_update"), "{conn}");
        let numbers: Vec<u64> =
            list[2..2 + per_client as usize].iter().filter_map(|e| msg_n(e)).collect();
        assert_eq!(numbers, (0..per_client).collect::<Vec<u64>>(), "{conn}: msg order");
        let tail = &list[2 + per_client as usize..];
        assert!(matches!(&tail[0].kind, EventKind::Raw(text) if &**text == "not json {"));
        assert!(matches!(&tail[1].kind, EventKind::Binary(data) if data[..] == [0xde, 0xad]));
        match &tail[2].kind {
            EventKind::Disconnect { code, reason } => {
                assert_eq!((*code, &**reason), (1000, "done"), "{conn}");
            }
            other => panic!("{conn}: last event {other:?}"),
        }
    }
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn a_slow_application_loses_nothing_and_the_clients_are_held_back() {
    let capacity = 32;
    let engine = start(|c| c.max_inbound_queue_size = capacity);
    let app = engine.app().clone();
    let clients = 3;
    let per_client: u64 = 20_000;
    let pad = "x".repeat(1000);
    let sent: Arc<Vec<AtomicUsize>> = Arc::new((0..clients).map(|_| AtomicUsize::new(0)).collect());
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, sent, pad) = (engine.local_addr(), Arc::clone(&sent), pad.clone());
            std::thread::spawn(move || {
                let (mut client, _) = RawClient::open_wse(addr, "/wse");
                client.stream.set_write_timeout(Some(Duration::from_secs(30))).expect("timeout");
                for n in 0..per_client {
                    client.send_text(&format!(r#"{{"t":"m","p":{{"n":{n},"pad":"{pad}"}}}}"#));
                    sent[i].fetch_add(1, Ordering::Relaxed);
                }
                client.send(&close_frame(1000, ""));
                client.expect_close_reply(&[Some(1000)], Duration::from_secs(30));
            })
        })
        .collect();

    // The application does not drain for a while: the rings stay within their bound and
    // the clients cannot send everything (their sockets are not read).
    let paused = Instant::now();
    while paused.elapsed() < Duration::from_secs(1) {
        let depth = app.inbound_depth();
        assert!(depth <= 2 * (capacity + clients), "ring depth {depth} over its bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    let behind = sent.iter().filter(|s| (s.load(Ordering::Relaxed) as u64) < per_client).count();
    assert!(behind > 0, "every client sent all 20 MB without the server reading");
    let stalls: u64 =
        engine.metrics().shards.iter().map(|m| m.app_stalls.load(Ordering::Relaxed)).sum();
    assert!(stalls > 0, "no connection stopped reading");

    // Then it drains, slowly, and gets every message once, in order.
    let mut next: HashMap<ConnId, u64> = HashMap::new();
    let mut disconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut batch = Vec::new();
    while disconnects < clients && Instant::now() < deadline {
        batch.clear();
        app.drain_into(&mut batch, 64, Duration::from_millis(50)).expect("drain");
        for event in &batch {
            match &event.kind {
                EventKind::Connect { .. } => assert!(next.insert(event.conn, 0).is_none()),
                EventKind::Message(_) => {
                    let want = next.get_mut(&event.conn).expect("msg after connect");
                    assert_eq!(msg_n(event), Some(*want), "conn {}", event.conn);
                    *want += 1;
                }
                EventKind::Disconnect { .. } => {
                    assert_eq!(next.get(&event.conn), Some(&per_client), "all before disconnect");
                    disconnects += 1;
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
        assert!(app.inbound_depth() <= 2 * (capacity + clients));
        std::thread::sleep(Duration::from_micros(500));
    }
    for worker in workers {
        worker.join().expect("client");
    }
    assert_eq!(disconnects, clients, "disconnects: {next:?}");
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn a_full_ring_stops_reading_but_not_writing() {
    let engine = start(|c| c.max_inbound_queue_size = 8);
    let app = engine.app().clone();
    let bystander = common::LiveClient::open(engine.local_addr(), "/wse");
    bystander.subscribe(&["news"]);
    let (flooder, _) = RawClient::open_wse(engine.local_addr(), "/wse");
    let flooder = common::LiveClient::from_raw(flooder);
    flooder.subscribe(&["news"]);
    let setup = drain_until(&app, IO_LIMIT, |all| all.len() >= 4);
    assert_eq!(setup.len(), 4, "two connects, two subscriptions: {setup:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        let pad = "y".repeat(1000);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 5000 {
                flooder.send_text(&format!(r#"{{"t":"m","p":{{"n":{n},"pad":"{pad}"}}}}"#));
                n += 1;
            }
            (flooder, n)
        })
    };
    let stalled = common::eventually(IO_LIMIT, || {
        engine.metrics().shards.iter().any(|m| m.app_stalls.load(Ordering::Relaxed) > 0)
    });
    assert!(stalled, "the flood never filled the ring");

    // Nothing is drained now; publications and PONGs still reach both connections.
    for n in 0..10 {
        app.publish("news", &format!(r#"{{"n":{n}}}"#), None, Priority::Normal).expect("publish");
    }
    bystander.send_text(r#"{"t":"ping","p":{"timestamp":1}}"#);
    let pong = bystander.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("PONG"));
    assert!(pong.is_some(), "bystander got no PONG while the ring was full");
    stop.store(true, Ordering::Relaxed);
    let (flooder, sent) = flood.join().expect("flooder");
    for (name, client) in [("bystander", &bystander), ("flooder", &flooder)] {
        for n in 0..10 {
            let got = client.wait_json(IO_LIMIT, |v| v.str_at("tp") == Some("news"));
            let got = got.unwrap_or_else(|| panic!("{name}: publication {n} missing"));
            assert_eq!(got.get("p").and_then(|p| p.num_at("n")), Some(n as f64), "{name}");
        }
    }

    // Every flooded message still reaches the application.
    let events = drain_until(&app, Duration::from_secs(20), |all| all.len() as u64 >= sent);
    let numbers: Vec<u64> = events.iter().filter_map(msg_n).collect();
    assert_eq!(numbers, (0..sent).collect::<Vec<u64>>());
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn send_event_is_a_binary_envelope_with_the_connections_next_seq() {
    let engine = start(|_| {});
    let app = engine.app().clone();
    let (mut client, conn) = open(&engine, "/wse");
    app.send_event(conn, "greeting", r#"{"a":1}"#, Priority::Normal, Some("c1")).expect("send");
    let (binary, first) = next_message(&mut client, IO_LIMIT);
    assert!(binary, "send_event travels as a binary frame");
    assert_eq!(first.str_at("t"), Some("greeting"));
    assert_eq!(first.str_at("c"), Some("U"));
    assert_eq!(first.num_at("seq"), Some(2.0), "{first:?}");
    assert_eq!(first.str_at("cid"), Some("c1"));
    assert_eq!(first.get("p").and_then(|p| p.num_at("a")), Some(1.0));
    app.send_event(conn, "alert", r#"{"b":2}"#, Priority::High, None).expect("send");
    let (_, second) = next_message(&mut client, IO_LIMIT);
    assert_eq!(second.num_at("seq"), Some(3.0), "{second:?}");
    assert_eq!(second.num_at("pri"), Some(8.0));
    client.send_text(r#"{"t":"ping","p":{"timestamp":5}}"#);
    let (binary, pong) = next_message(&mut client, IO_LIMIT);
    assert!(!binary);
    assert_eq!((pong.str_at("t"), pong.num_at("seq")), (Some("PONG"), Some(4.0)));

    // Raw sends carry neither envelope nor seq.
    app.send(conn, r#"{"t":"raw","p":{}}"#).expect("send");
    let (binary, raw) = next_message(&mut client, IO_LIMIT);
    assert!(!binary);
    assert_eq!((raw.str_at("t"), raw.get("seq")), (Some("raw"), None));
    assert!(matches!(
        app.send_event(conn, "x", "{not json", Priority::Normal, None),
        Err(Error::InvalidArgument(_))
    ));
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn calls_wait_for_a_full_control_ring_then_fail_busy() {
    let timeout = Duration::from_millis(2);
    let engine = start(|c| {
        c.control_capacity = 1;
        c.publish_timeout = timeout;
    });
    let app = engine.app().clone();
    let mut subscribers: Vec<common::LiveClient> = (0..20)
        .map(|_| {
            let client = common::LiveClient::open(engine.local_addr(), "/wse");
            client.subscribe(&["load"]);
            client
        })
        .collect();
    let payload = format!(r#"{{"pad":"{}"}}"#, "z".repeat(64 * 1024));
    let busy = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let publishers: Vec<_> = (0..6)
        .map(|_| {
            let (app, payload, busy) = (app.clone(), payload.clone(), Arc::clone(&busy));
            std::thread::spawn(move || {
                while busy.load(Ordering::Relaxed) == 0
                    && started.elapsed() < Duration::from_secs(10)
                {
                    let called = Instant::now();
                    match app.publish("load", &payload, None, Priority::Low) {
                        Ok(()) => {}
                        Err(Error::Busy { waited, .. }) => {
                            assert_eq!(waited, timeout);
                            assert!(called.elapsed() >= timeout, "gave up before waiting");
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().expect("publisher");
    }
    assert!(busy.load(Ordering::Relaxed) > 0, "no call ever found the control ring full");
    let refused: u64 =
        engine.metrics().shards.iter().map(|m| m.control_timeouts.load(Ordering::Relaxed)).sum();
    assert!(refused > 0);
    subscribers.clear();

    // Once the shard catches up, calls succeed again; after shutdown they fail clearly.
    let ok = common::eventually(IO_LIMIT, || app.publish("load", "1", None, Priority::Low).is_ok());
    assert!(ok, "publish never succeeded again");
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
    assert!(matches!(app.publish("load", "1", None, Priority::Low), Err(Error::Stopped)));
    // Events left at shutdown can still be drained; then drains return at once.
    while !app.drain(256, Duration::ZERO).expect("drain").is_empty() {}
    let asked = Instant::now();
    assert!(app.drain(10, Duration::from_secs(5)).expect("drain").is_empty());
    assert!(asked.elapsed() < Duration::from_secs(1), "a drain after shutdown waited");
}

#[test]
fn snapshot_replies_and_snapshot_complete_come_before_held_updates() {
    let engine = start(|_| {});
    let app = engine.app().clone();
    let (mut client, conn) = open(&engine, "/wse");
    client.subscribe("subscribe", &["prices"]);
    client.send_text(r#"{"t":"sync_request","p":{"topics":["prices"]}}"#);
    let events = drain_until(&app, IO_LIMIT, |all| {
        all.iter().any(|e| msg_type(e).as_deref() == Some("sync_request"))
    });
    assert!(events.iter().any(|e| msg_type(e).as_deref() == Some("sync_request")), "{events:?}");

    // Updates published now are held, even at a higher priority than the replies.
    for n in 0..5 {
        app.publish("prices", &format!(r#"{{"n":{n}}}"#), None, Priority::High).expect("publish");
    }
    client.expect_silence(Duration::from_millis(300));
    for n in 0..2 {
        let snapshot = format!(r#"{{"part":{n}}}"#);
        app.send_event(conn, "prices_snapshot", &snapshot, Priority::Low, None).expect("send");
    }
    app.snapshot_complete(conn, &["prices"]).expect("complete");
    for n in 5..7 {
        app.publish("prices", &format!(r#"{{"n":{n}}}"#), None, Priority::High).expect("publish");
    }

    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(next_message(&mut client, IO_LIMIT).1);
    }
    let types: Vec<&str> = seen.iter().map(|v| v.str_at("t").unwrap_or("?")).collect();
    assert_eq!(
        &types[..3],
        ["prices_snapshot", "prices_snapshot", "snapshot_complete"],
        "{types:?}"
    );
    let complete = seen[2].get("p").expect("payload");
    assert_eq!(complete.get("topics").map(Value::strings), Some(vec!["prices".to_owned()]));
    assert_eq!(complete.num_at("count"), Some(2.0));
    assert_eq!(seen[2].str_at("c"), Some("S"));
    let updates: Vec<f64> =
        seen[3..].iter().filter_map(|v| v.get("p").and_then(|p| p.num_at("n"))).collect();
    assert_eq!(updates, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let offsets: Vec<f64> = seen[3..].iter().filter_map(|v| v.num_at("o")).collect();
    assert_eq!(offsets, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn snapshot_timeout_releases_held_updates_and_is_counted() {
    let engine = start(|c| {
        c.snapshot_timeout = Duration::from_millis(600);
        c.ping_interval = Duration::from_millis(400);
    });
    let app = engine.app().clone();
    let (mut client, _) = open(&engine, "/wse");
    client.subscribe("subscribe", &["feed.*"]);
    client.send_text(r#"{"t":"sync_request","p":{"topics":["feed.*"]}}"#);
    drain_until(&app, IO_LIMIT, |all| {
        all.iter().any(|e| msg_type(e).as_deref() == Some("sync_request"))
    });
    let held_at = Instant::now();
    for n in 0..3 {
        app.publish("feed.a", &format!(r#"{{"n":{n}}}"#), None, Priority::Normal).expect("publish");
    }
    let first = next_message(&mut client, Duration::from_secs(5)).1;
    let waited = held_at.elapsed();
    assert!(waited >= Duration::from_millis(500), "released after {waited:?}, before the timeout");
    let mut numbers = vec![first.get("p").and_then(|p| p.num_at("n"))];
    for _ in 0..2 {
        numbers.push(next_message(&mut client, IO_LIMIT).1.get("p").and_then(|p| p.num_at("n")));
    }
    assert_eq!(numbers, [Some(0.0), Some(1.0), Some(2.0)]);
    let timeouts: u64 =
        engine.metrics().shards.iter().map(|m| m.snapshot_timeouts.load(Ordering::Relaxed)).sum();
    assert_eq!(timeouts, 1);
    assert!(app.prometheus().contains("wse_snapshot_timeouts_total{shard="));
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn the_application_manages_connections() {
    let engine = start(|c| c.max_connection_info_bytes = 200);
    let app = engine.app().clone();
    let (mut client, conn) = open(&engine, "/wse?room=7");
    assert_eq!(app.connection_count(), 1);
    assert_eq!(app.connections().expect("connections"), [conn]);

    let info = app.connection_info(conn).expect("asked").expect("kept");
    assert_eq!(info.query.as_deref(), Some("room=7"));
    assert!(info.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")));
    assert_eq!(info.peer.ip(), client.stream.local_addr().expect("local").ip());
    assert_eq!(info.peer.port(), client.stream.local_addr().expect("local").port());
    assert_eq!(info.user_id, None);
    let kept: usize = info.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    assert!(kept + 6 <= 200, "info over its bound");

    let refused = app.subscribe_connection(conn, &["alerts", "bad topic"]);
    assert!(matches!(&refused, Err(Error::InvalidArgument(m)) if m.contains("bad topic")));
    app.subscribe_connection(conn, &["alerts"]).expect("subscribe");
    let count =
        common::eventually(IO_LIMIT, || app.topic_subscriber_count("alerts").ok() == Some(1));
    assert!(count, "subscriber count");
    app.publish("alerts", r#"{"level":3}"#, Some("alert"), Priority::Normal).expect("publish");
    let (_, alert) = next_message(&mut client, IO_LIMIT);
    assert_eq!((alert.str_at("t"), alert.str_at("tp")), (Some("alert"), Some("alerts")));
    app.broadcast_all(r#"{"t":"notice","p":{}}"#).expect("broadcast");
    assert_eq!(next_message(&mut client, IO_LIMIT).1.str_at("t"), Some("notice"));
    app.unsubscribe_connection(conn, None).expect("unsubscribe");
    assert!(common::eventually(IO_LIMIT, || app.topic_subscriber_count("alerts").ok() == Some(0)));

    assert!(matches!(app.disconnect(conn, 1005, ""), Err(Error::InvalidArgument(_))));
    app.disconnect(conn, 4000, "bye").expect("disconnect");
    let frame = client.read_frame(IO_LIMIT).expect("close");
    assert_eq!(frame.close_code(), Some(4000));
    assert_eq!(&frame.payload[2..], b"bye");
    client.send(&masked(FIN | CLOSE, &frame.payload, random_key()));
    let events = drain_until(&app, IO_LIMIT, |all| {
        all.iter().any(|e| matches!(e.kind, EventKind::Disconnect { .. }))
    });
    let last = events.last().expect("an event");
    assert!(
        matches!(&last.kind, EventKind::Disconnect { code: 4000, reason } if &**reason == "bye")
    );
    assert!(common::eventually(IO_LIMIT, || app.connection_count() == 0));
    assert_eq!(app.connection_info(conn).expect("asked"), None);
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn without_an_application_no_events_are_made_and_nothing_is_held() {
    let engine = start(|c| c.app_events = false);
    let app = engine.app().clone();
    assert!(matches!(app.drain(10, Duration::ZERO), Err(Error::NoApplication)));
    let (mut client, _) = RawClient::open_wse(engine.local_addr(), "/wse");
    client.subscribe("subscribe", &["prices"]);
    client.send_text(r#"{"t":"sync_request","p":{"topics":["prices"]}}"#);
    client.send_text(r#"{"t":"ping","p":{"timestamp":1}}"#);
    assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("PONG"));
    app.publish("prices", r#"{"n":1}"#, None, Priority::Normal).expect("publish");
    let (_, update) = next_message(&mut client, Duration::from_secs(1));
    assert_eq!(update.str_at("tp"), Some("prices"), "not held without an application");
    assert_eq!(app.inbound_depth(), 0);
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn shutdown_wakes_a_waiting_drain() {
    let engine = start(|_| {});
    let app = engine.app().clone();
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let mut events = Vec::new();
        while started.elapsed() < Duration::from_secs(30) {
            if app.drain_into(&mut events, 10, Duration::from_secs(30)).expect("drain") == 0 {
                break;
            }
        }
        started.elapsed()
    });
    std::thread::sleep(Duration::from_millis(200));
    engine.shutdown(1012);
    let waited = waiting.join().expect("drain thread");
    assert!(waited < Duration::from_secs(5), "drain waited {waited:?} after shutdown");
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn require_accept_waits_for_the_applications_verdict() {
    let engine = start(|c| {
        c.require_accept = true;
        c.handshake_timeout = Duration::from_secs(1);
    });
    let app = engine.app().clone();
    let addr = engine.local_addr();
    let waiting = |client: &mut RawClient| {
        client.upgrade(addr, "/wse?team=blue", &["Cookie: session=abc"]);
        let events = drain_until(&app, IO_LIMIT, |e| !connected(e).is_empty());
        match &events[..] {
            [Event { conn, kind: EventKind::Connect { cookies } }] => {
                assert_eq!(&**cookies, "session=abc");
                *conn
            }
            other => panic!("expected one connect: {other:?}"),
        }
    };

    // Accepted: server_ready only after the verdict, with the given user id.
    let mut alice = RawClient::connect(addr);
    let conn = waiting(&mut alice);
    alice.expect_silence(Duration::from_millis(300));
    let info = app.connection_info(conn).expect("asked").expect("kept while waiting");
    assert_eq!(info.query.as_deref(), Some("team=blue"));
    assert_eq!(app.connections().expect("connections"), Vec::<ConnId>::new(), "not admitted yet");
    app.accept(conn, Some("alice")).expect("accept");
    let ready = alice.next_json(IO_LIMIT);
    assert_eq!(ready.str_at("t"), Some("server_ready"));
    let details = ready.get("p").and_then(|p| p.get("details")).expect("details");
    assert_eq!(details.str_at("user_id"), Some("alice"));
    assert_eq!(
        app.connection_info(conn).expect("asked").and_then(|i| i.user_id),
        Some("alice".into())
    );

    // Rejected: closed with the application's code and reason.
    let mut bob = RawClient::connect(addr);
    let conn = waiting(&mut bob);
    app.reject(conn, 4403, "nope").expect("reject");
    let frame = bob.read_frame(IO_LIMIT).expect("close");
    assert_eq!((frame.close_code(), &frame.payload[2..]), (Some(4403), &b"nope"[..]));
    bob.send(&masked(FIN | CLOSE, &frame.payload, random_key()));
    let gone = drain_until(&app, IO_LIMIT, |e| !e.is_empty());
    assert!(matches!(&gone[..], [Event { kind: EventKind::Disconnect { code: 4403, .. }, .. }]));

    // Never decided: 4401 after the handshake timeout.
    let mut carol = RawClient::connect(addr);
    let conn = waiting(&mut carol);
    let started = Instant::now();
    carol.expect_close(4401, Duration::from_secs(3));
    assert!(started.elapsed() >= Duration::from_millis(800), "closed before the timeout");
    let gone = drain_until(&app, IO_LIMIT, |e| !e.is_empty());
    assert_eq!(gone.first().map(|e| (e.conn, e.kind.name())), Some((conn, "disconnect")));
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn connect_and_disconnect_get_through_a_ring_full_of_data() {
    let engine = start(|c| c.max_inbound_queue_size = 4);
    let app = engine.app().clone();
    let (flooder, flooder_id) = open(&engine, "/wse");
    let flooder = common::LiveClient::from_raw(flooder);
    for n in 0..200 {
        flooder.send_text(&format!(r#"{{"t":"m","p":{{"n":{n}}}}}"#));
    }
    let stalled = common::eventually(IO_LIMIT, || {
        engine.metrics().shards.iter().any(|m| m.app_stalls.load(Ordering::Relaxed) > 0)
    });
    assert!(stalled, "the ring never filled");

    // While nothing is drained and the ring is full of data, connections come and go.
    for _ in 0..20 {
        let (mut client, _) = RawClient::open_wse(engine.local_addr(), "/wse");
        client.send(&close_frame(1000, ""));
        client.expect_close_reply(&[Some(1000)], IO_LIMIT);
    }
    drop(flooder);

    let ends = |all: &[Event]| {
        all.iter().filter(|e| matches!(e.kind, EventKind::Disconnect { .. })).count()
    };
    let events = drain_until(&app, Duration::from_secs(20), |all| ends(all) == 21);
    assert_eq!(connected(&events).len(), 20, "every connect arrived");
    assert_eq!(ends(&events), 21, "every disconnect arrived");
    let numbers: Vec<u64> =
        events.iter().filter(|e| e.conn == flooder_id).filter_map(msg_n).collect();
    assert_eq!(numbers, (0..200).collect::<Vec<u64>>(), "the flood, whole and in order");
    for conn in connected(&events) {
        let kinds: Vec<&str> =
            events.iter().filter(|e| e.conn == conn).map(|e| e.kind.name()).collect();
        assert_eq!(kinds, ["connect", "disconnect"], "{conn}");
    }
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn e2e_messages_arrive_opened_and_send_event_is_sealed() {
    use wse_protocol::e2e::KeyExchange;
    let engine = start(|_| {});
    let app = engine.app().clone();
    let (mut client, conn) = open(&engine, "/wse");
    let mine = KeyExchange::generate().expect("client key pair");
    client.send_text(&format!(
        concat!(
            r#"{{"t":"client_hello","p":{{"features":{{"encryption":true}},"#,
            r#""encryption_public_key":"{}"}}}}"#
        ),
        mine.public_key_b64()
    ));
    let hello = client.next_json(IO_LIMIT);
    let theirs = hello.get("p").and_then(|p| p.str_at("encryption_public_key")).expect("key");
    let keys = mine.agree(theirs).expect("agreement");

    // A sealed message reaches the application opened.
    let mut sealed = Vec::new();
    keys.seal(br#"{"t":"order","p":{"n":7}}"#, &mut sealed).expect("seal");
    client.send(&masked(FIN | BINARY, &sealed, random_key()));
    let events = drain_until(&app, IO_LIMIT, |all| {
        all.iter().any(|e| msg_type(e).as_deref() == Some("order"))
    });
    let order = events.iter().find(|e| msg_type(e).as_deref() == Some("order")).expect("msg event");
    assert_eq!(msg_n(order), Some(7));

    // send_event on an E2E connection is an E: frame holding the envelope with its seq.
    app.send_event(conn, "receipt", r#"{"ok":true}"#, Priority::Normal, None).expect("send");
    let frame = loop {
        let frame = client.read_frame(IO_LIMIT).expect("a frame");
        if frame.opcode() == BINARY {
            break frame;
        }
    };
    assert!(frame.payload.starts_with(b"E:"), "not sealed: {:?}", frame.payload);
    let plain = keys.open(&frame.payload).expect("opens");
    let receipt = json::parse(&plain).expect("JSON inside E:");
    assert_eq!(receipt.str_at("t"), Some("receipt"));
    assert_eq!(receipt.num_at("seq"), Some(3.0), "server_ready 1, server_hello 2: {receipt:?}");
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}
