//! Presence (PROTOCOL.md §7, §8): members join a topic with their first connection and leave
//! with their last, wherever on the two shards those connections live; subscribers hear it as
//! stamped publications and the application as drain events; the data and member limits
//! hold. The engine runs in-process (the application interface is a library API); clients are
//! real sockets. Half-open connections announced as gone: `cases.rs`, C10.

mod common;

use std::time::Duration;

use common::engine::{connected, drain_until, start};
use common::json::Value;
use common::{eventually, masked, random_key, RawClient, CLOSE, FIN, IO_LIMIT, PING, PONG};
use wse_shard::{App, ConnId, Error, Event, EventKind, PresenceKind, Server as Engine};

/// Connects a client, has the application accept it as `user`, and waits for its
/// `server_ready`.
fn open_as(engine: &Engine, user: &str, path: &str) -> (RawClient, ConnId) {
    let mut client = RawClient::connect(engine.local_addr());
    client.upgrade(engine.local_addr(), path, &[]);
    let events = drain_until(engine.app(), IO_LIMIT, |e| !connected(e).is_empty());
    let conn = connected(&events)[0];
    engine.app().accept(conn, Some(user)).expect("accept");
    assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("server_ready"));
    (client, conn)
}

/// The next presence publication of `topic`, skipping everything else.
fn next_presence(client: &mut RawClient, topic: &str) -> Value {
    let deadline = std::time::Instant::now() + IO_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let frame = client.read_frame(left).unwrap_or_else(|e| panic!("no presence: {e:?}"));
        if frame.opcode() == PING {
            client.send(&masked(FIN | PONG, &frame.payload, random_key()));
            continue;
        }
        let Some(v) = common::json::parse(&frame.payload) else { continue };
        let presence = v.str_at("t").is_some_and(|t| t.starts_with("presence_"));
        if presence && v.str_at("tp") == Some(topic) {
            return v;
        }
    }
}

/// `(t, p.user_id, p.data)` of a presence publication, `data` as its JSON text.
fn summary(v: &Value) -> (String, String, String) {
    let p = v.get("p").expect("payload");
    let data = p.get("data").map_or_else(String::new, |d| format!("{d:?}"));
    (v.str_at("t").unwrap_or("").into(), p.str_at("user_id").unwrap_or("").into(), data)
}

/// The presence events drained until `n` of them arrived.
fn presence_events(app: &App, n: usize) -> Vec<(PresenceKind, String, String, Option<String>)> {
    let is_presence = |e: &Event| matches!(e.kind, EventKind::Presence { .. });
    let events =
        drain_until(app, IO_LIMIT, |all| all.iter().filter(|e| is_presence(e)).count() >= n);
    events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Presence { kind, topic, user_id, data } => {
                Some((kind, topic.to_string(), user_id.to_string(), data.map(|d| d.to_string())))
            }
            _ => None,
        })
        .collect()
}

/// Closes a client with 1000, reading past whatever the server still had queued for it.
fn close(client: &mut RawClient) {
    client.send(&masked(FIN | CLOSE, &1000u16.to_be_bytes(), random_key()));
    let deadline = std::time::Instant::now() + IO_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.read_frame(left) {
            Ok(frame) if frame.opcode() == CLOSE => return,
            Ok(_) => continue,
            Err(e) => panic!("no Close reply: {e:?}"),
        }
    }
}

/// Opens an anonymous client once every earlier event has been drained, so that its
/// `connect` is the only one.
fn open_settled(engine: &Engine, path: &str) -> (RawClient, ConnId) {
    settle(engine.app());
    common::engine::open(engine, path)
}

/// Drains until nothing has arrived for 200 ms.
fn settle(app: &App) {
    while !app.drain(256, Duration::from_millis(200)).expect("drain").is_empty() {}
}

#[test]
fn a_user_joins_with_the_first_connection_and_leaves_with_the_last() {
    let engine = start(|c| {
        c.require_accept = true;
        c.presence.enabled = true;
    });
    let app = engine.app().clone();
    let (mut watcher, _) = open_as(&engine, "watcher", "/wse?topics=room");
    assert_eq!(summary(&next_presence(&mut watcher, "room")).0, "presence_join");
    let _ = presence_events(&app, 1);

    // Two connections of one user, likely on different shards: one join.
    let (mut ann1, _) = open_as(&engine, "ann", "/wse?topics=room");
    let joined = next_presence(&mut watcher, "room");
    assert_eq!(summary(&joined), ("presence_join".into(), "ann".into(), "Null".into()));
    assert!(joined.get("o").is_some() && joined.get("e").is_some(), "stamped like publications");
    let (mut ann2, _) = open_as(&engine, "ann", "/wse?topics=room");
    let stats = |users, connections| {
        eventually(IO_LIMIT, || {
            app.presence_stats("room")
                .is_ok_and(|s| (s.users, s.connections) == (users, connections))
        })
    };
    assert!(stats(2, 3), "{:?}", app.presence_stats("room"));
    let members = app.presence("room").expect("presence");
    let listed: Vec<(&str, usize)> = members.iter().map(|m| (&*m.user_id, m.connections)).collect();
    assert_eq!(listed, [("ann", 2), ("watcher", 1)]);

    // The first connection's end is not a leave; the last one's is.
    close(&mut ann1);
    assert!(stats(2, 2));
    close(&mut ann2);
    let left = next_presence(&mut watcher, "room");
    assert_eq!(summary(&left).0, "presence_leave");
    assert_eq!(summary(&left).1, "ann");
    // The application hears the same; ann's `presence_join` may have been drained already,
    // while ann2 was being accepted.
    let is_leave =
        |e: &Event| matches!(&e.kind, EventKind::Presence { kind: PresenceKind::Leave, .. });
    let events = drain_until(&app, IO_LIMIT, |all| all.iter().any(is_leave));
    let kinds: Vec<(PresenceKind, String, String)> = events
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Presence { kind, topic, user_id, .. } => {
                Some((kind, topic.to_string(), user_id.to_string()))
            }
            _ => None,
        })
        .filter(|k| k.0 != PresenceKind::Join)
        .collect();
    assert_eq!(kinds, [(PresenceKind::Leave, "room".into(), "ann".into())]);
    assert!(stats(1, 1));
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn data_is_announced_on_join_and_update_and_bounded() {
    let engine = start(|c| {
        c.presence.enabled = true;
        c.presence.max_data_size = 64;
    });
    let app = engine.app().clone();
    let (mut watcher, _) = RawClient::open_wse(engine.local_addr(), "/wse?topics=room");
    let _ = next_presence(&mut watcher, "room");
    let (_client, conn) = open_settled(&engine, "/wse");

    // Data set before the subscription goes with the join.
    app.update_presence(conn, Some(r#"{"status":"online"}"#)).expect("update");
    app.subscribe_connection(conn, &["room", "room:*"]).expect("subscribe");
    let joined = next_presence(&mut watcher, "room");
    assert_eq!(summary(&joined).0, "presence_join");
    let data = joined.get("p").and_then(|p| p.get("data")).expect("data");
    assert_eq!(data.str_at("status"), Some("online"));

    // A change is announced as an update; the same data again is not.
    app.update_presence(conn, Some(r#"{"status":"away"}"#)).expect("update");
    let updated = next_presence(&mut watcher, "room");
    assert_eq!(summary(&updated).0, "presence_update");
    let data = updated.get("p").and_then(|p| p.get("data")).expect("data");
    assert_eq!(data.str_at("status"), Some("away"));
    let events = presence_events(&app, 2);
    assert_eq!(events.last().map(|e| e.3.as_deref()), Some(Some(r#"{"status":"away"}"#)));

    // Over the size limit, not JSON: refused at the call, naming what was wrong.
    let big = format!(r#"{{"x":"{}"}}"#, "y".repeat(64));
    match app.update_presence(conn, Some(&big)) {
        Err(Error::InvalidArgument(message)) => assert!(message.contains("over 64"), "{message}"),
        other => panic!("oversized data accepted: {other:?}"),
    }
    assert!(matches!(app.update_presence(conn, Some("{")), Err(Error::InvalidArgument(_))));

    // The glob subscription took no part: one member, on the exact topic only.
    assert_eq!(app.presence("room:*").expect("presence"), []);
    assert!(eventually(IO_LIMIT, || app.presence("room").is_ok_and(|m| m.len() == 2)));
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn members_over_the_limit_are_not_listed_and_counted() {
    let engine = start(|c| {
        c.presence.enabled = true;
        c.presence.max_members = 2;
    });
    let app = engine.app().clone();
    let addr = engine.local_addr();
    let mut clients: Vec<RawClient> =
        (0..3).map(|_| RawClient::open_wse(addr, "/wse?topics=small").0).collect();
    assert!(eventually(IO_LIMIT, || app.topic_subscriber_count("small").ok() == Some(3)));
    assert!(eventually(IO_LIMIT, || {
        app.prometheus()
            .lines()
            .any(|l| l.starts_with("wse_presence_refused_total") && l.ends_with(" 1"))
    }));
    assert_eq!(app.presence_stats("small").expect("stats").users, 2);

    // When a listed member leaves, the next one to subscribe is listed.
    for client in &mut clients {
        close(client);
    }
    assert!(eventually(IO_LIMIT, || app.presence_stats("small").is_ok_and(|s| s.users == 0)));
    let (_late, _) = RawClient::open_wse(addr, "/wse?topics=small");
    assert!(eventually(IO_LIMIT, || app.presence_stats("small").is_ok_and(|s| s.users == 1)));
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}

#[test]
fn presence_off_announces_nothing_and_refuses_updates() {
    let engine = start(|_| {});
    let app = engine.app().clone();
    let (mut watcher, _) = RawClient::open_wse(engine.local_addr(), "/wse?topics=room");
    let (_client, conn) = open_settled(&engine, "/wse?topics=room");
    assert!(matches!(app.update_presence(conn, None), Err(Error::InvalidArgument(_))));
    assert_eq!(app.presence("room").expect("presence"), []);
    app.publish("room", "1", None, wse_shard::Priority::Normal).expect("publish");
    let first = loop {
        let v = watcher.next_json(IO_LIMIT);
        if v.str_at("tp") == Some("room") {
            break v;
        }
    };
    assert_eq!(first.str_at("t"), Some("room"), "a presence message came first");
    engine.shutdown(1012);
    assert!(engine.join(Duration::from_secs(5)));
}
