//! Delivery guarantees of the `wse-server` binary (issue #4): backpressure on a slow reader,
//! recovery after a reconnect, epochs, and de-duplication of publisher-given ids.
//!
//! Every test starts its own server process on port 0 and talks to it over real sockets.
//! Load loops are bounded in time; the assertions are about what arrives, never how fast.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::json::Value;
use common::*;

/// What a subscriber received of one publication.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    topic: String,
    epoch: String,
    offset: u64,
    n: Option<u64>,
}

fn got(value: &Value) -> Option<Got> {
    let p = Publication::from_json(value)?;
    let n = p.data.num_at("n").map(|n| n as u64);
    Some(Got { topic: p.topic, epoch: p.epoch, offset: p.offset, n })
}

/// `{"n":n,"pad":"xxx…"}` of about `size` bytes.
fn padded(n: u64, size: usize) -> String {
    format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(size))
}

/// Reads publications from `client` until `count` arrived or `within` passed.
fn receive(client: &LiveClient, count: usize, within: Duration) -> Vec<Got> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next(left) {
            Some(Seen::Json(v)) => out.extend(got(&v)),
            Some(Seen::Close(code)) => {
                panic!("closed with {code:?} after {} of {count}", out.len())
            }
            Some(Seen::Closed) => panic!("connection lost after {} of {count}", out.len()),
            Some(Seen::Pong(_)) => {}
            None => panic!("only {} of {count} publications within {within:?}", out.len()),
        }
    }
    out
}

/// Asserts that `got` holds each topic's publications with consecutive offsets in one epoch.
fn assert_consecutive_per_topic(got: &[Got]) {
    let mut last: HashMap<&str, (&str, u64)> = HashMap::new();
    for g in got {
        if let Some(&(epoch, offset)) = last.get(g.topic.as_str()) {
            assert_eq!(g.epoch, epoch, "epoch of {g:?}");
            assert_eq!(g.offset, offset + 1, "offset after {offset}: {g:?}");
        }
        last.insert(&g.topic, (&g.epoch, g.offset));
    }
}

#[test]
fn a_slow_reader_loses_its_lowest_priorities_first_within_its_budget_and_slows_no_one() {
    // Uncompressed, so that the padded publications really fill the budget (as C: frames
    // they would shrink a hundredfold).
    let server = Server::start(&[
        "--shards",
        "2",
        "--disable-compression",
        "--allow-client-publish",
        "--max-outbound-queue-bytes",
        "262144",
        "--ping-interval",
        "60",
        "--idle-timeout",
        "120",
    ]);
    let (mut slow, _) = RawClient::open_wse_small(server.addr, "/wse?topics=flood.*", 4096);
    let answer = slow.next_json(IO_LIMIT);
    assert_eq!(answer.str_at("t"), Some("subscription_update"));
    let fast = LiveClient::open(server.addr, "/wse");
    fast.subscribe(&["flood.*"]);
    let publisher = LiveClient::open(server.addr, "/wse");
    let rss_before = server.rss_kb();

    // Publish in batches; each batch must reach the fast reader while the slow one sleeps.
    let mut fast_got = Vec::new();
    let mut sent = 0u64;
    let mut publish = |topic: &str, pri: u8, count: u64, fast_got: &mut Vec<Got>| {
        for batch in 0..count.div_ceil(16) {
            let n = 16.min(count - batch * 16);
            for _ in 0..n {
                publisher.send_text(&publish_json_at(topic, &padded(sent, MESSAGE), pri));
                sent += 1;
            }
            fast_got.extend(receive(&fast, n as usize, Duration::from_secs(30)));
        }
    };

    // BACKGROUND until the slow reader's kernel buffers are full and its queue holds data
    // (the gauge is refreshed once a second), then 32 MiB more of it.
    let mut filled = false;
    for _ in 0..64 {
        publish("flood.bg", 1, 64, &mut fast_got);
        if server
            .wait_metric("wse_outbound_queue_max_bytes", Duration::from_millis(1500), |v| v > 0.0)
            > 0.0
        {
            filled = true;
            break;
        }
    }
    assert!(filled, "the slow reader's queue never held data");
    publish("flood.bg", 1, 4096, &mut fast_got);
    publish("flood.low", 3, 64, &mut fast_got);
    publish("flood.normal", 5, 64, &mut fast_got);
    publish("flood.high", 8, 64, &mut fast_got);

    // Nobody else was slowed or lost anything: every publication, in order per topic.
    assert_eq!(fast_got.len() as u64, sent);
    assert_consecutive_per_topic(&fast_got);
    let numbers: Vec<u64> = fast_got.iter().filter_map(|g| g.n).collect();
    assert_eq!(numbers, (0..sent).collect::<Vec<_>>());

    // The server holds the slow reader's backlog within its budget: RSS grew by far less
    // than the 32+ MiB published past it (queue 256 KiB, history about 2 MiB).
    let rss = server.rss_kb();
    assert!(rss < rss_before + 24 * 1024, "RSS grew from {rss_before} KiB to {rss} KiB");
    for shard in ["0", "1"] {
        let max = server.metric(&format!("wse_outbound_queue_max_bytes{{shard=\"{shard}\"}}"));
        assert!(max <= 262_144.0, "shard {shard}: a queue of {max} bytes");
    }

    // Lowest priorities went first: LOW made way for NORMAL, NORMAL for HIGH.
    let dropped =
        |p: &str| server.metric(&format!("wse_dropped_by_priority_total{{priority=\"{p}\"}}"));
    assert_eq!(dropped("low"), 64.0);
    assert_eq!(dropped("normal"), 64.0);
    assert!(dropped("background") > 4000.0, "background drops {}", dropped("background"));
    assert!(dropped("high") > 0.0 && dropped("high") < 64.0, "high drops {}", dropped("high"));
    assert_eq!(dropped("critical"), 0.0);

    // What the slow reader finally reads: old BACKGROUND from its kernel buffers, then only
    // the oldest HIGH messages that fitted its queue, in order.
    let mut slow_got = Vec::new();
    while let Ok(frame) = slow.read_frame(Duration::from_secs(2)) {
        if frame.opcode() == TEXT {
            slow_got.extend(json::parse(&frame.payload).as_ref().and_then(got));
        }
    }
    assert!(slow_got.iter().all(|g| g.topic == "flood.bg" || g.topic == "flood.high"));
    let high: Vec<u64> =
        slow_got.iter().filter(|g| g.topic == "flood.high").map(|g| g.offset).collect();
    assert!(high.len() >= 16 && high.len() < 64, "HIGH received: {high:?}");
    assert_eq!(high, (0..high.len() as u64).collect::<Vec<_>>());
    assert_consecutive_per_topic(&slow_got[slow_got.len() - high.len()..]);
    fresh_pong_within(server.addr, Duration::from_secs(1));
}

#[test]
fn a_slow_reader_whose_critical_backlog_does_not_fit_is_closed_with_4503() {
    let server = Server::start(&[
        "--disable-compression",
        "--allow-client-publish",
        "--max-outbound-queue-bytes",
        "65536",
        "--close-timeout",
        "10",
        "--ping-interval",
        "60",
        "--idle-timeout",
        "120",
    ]);
    let (mut slow, _) = RawClient::open_wse_small(server.addr, "/wse?topics=alerts", 4096);
    slow.next_json(IO_LIMIT);
    let bystander = LiveClient::open(server.addr, "/wse");
    bystander.subscribe(&["alerts"]);
    let publisher = LiveClient::open(server.addr, "/wse");

    // CRITICAL is never dropped: once it cannot fit, the connection must go. Two at a time,
    // so that a burst always fits the bystander's queue.
    let mut sent = 0u64;
    let mut seen = Vec::new();
    let closing = "wse_dropped_messages_total{reason=\"closing\"}";
    while server.metric(closing) == 0.0 {
        assert!(sent < 8192, "no close after {sent} CRITICAL messages");
        for _ in 0..2 {
            publisher.send_text(&publish_json_at("alerts", &padded(sent, MESSAGE), 10));
            sent += 1;
        }
        seen.extend(receive(&bystander, 2, Duration::from_secs(30)));
    }

    // Reading again, the slow reader gets what its socket held, then Close 4503.
    let deadline = Instant::now() + Duration::from_secs(10);
    let close = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = slow.read_frame(left).expect("frames, then Close 4503");
        if frame.opcode() == CLOSE {
            break frame;
        }
    };
    slow.expect_close_frame(&close, 4503, deadline);
    let closes = "wse_closes_total{reason=\"slow_consumer\"}";
    assert_eq!(server.wait_metric(closes, IO_LIMIT, |v| v >= 1.0), 1.0);
    assert_eq!(server.metric("wse_dropped_by_priority_total{priority=\"critical\"}"), 0.0);

    // The bystander lost nothing.
    assert_eq!(seen.len() as u64, sent);
    assert_consecutive_per_topic(&seen);
}

#[test]
fn recovery_after_a_reconnect_is_gap_free_and_duplicate_free_while_a_publisher_runs_flat_out() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--allow-client-publish",
        "--rate-limit-capacity",
        "1000000000",
        "--rate-limit-refill",
        "1000000000",
        "--max-outbound-queue-bytes",
        "268435456",
        "--history-size",
        "10000000",
        "--history-max-replay",
        "10000000",
        "--history-topic-bytes",
        "4294967296",
        "--history-memory",
        "4294967296",
    ]);
    let topic = "live";
    let first = LiveClient::open(server.addr, "/wse");
    first.subscribe(&[topic]);

    // The publisher writes as fast as the server takes it, for a bounded time.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, published) = (Arc::clone(&stop), Arc::clone(&published));
        let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
        std::thread::spawn(move || {
            // The client is handed back, not dropped: closing a socket with unread input
            // resets it, and the server could lose requests it has not read yet.
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < PUBLISH_FOR {
                let mut batch = Vec::new();
                for _ in 0..64 {
                    let text = publish_json(topic, &format!(r#"{{"n":{n}}}"#));
                    batch.extend(masked(FIN | TEXT, text.as_bytes(), random_key()));
                    n += 1;
                }
                client.send(&batch);
                published.store(n, Ordering::Relaxed);
            }
            (n, client)
        })
    };

    // The first connection reads a while, then vanishes mid-stream.
    let before = receive(&first, 2000, Duration::from_secs(30));
    assert_eq!(before[0].offset, 0, "a fresh topic starts at offset 0");
    assert_consecutive_per_topic(&before);
    let last = before.last().cloned().expect("publications");
    drop(first);
    let at_drop = published.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));

    // A new connection recovers from the last offset it had.
    let second = LiveClient::open(server.addr, "/wse");
    second.send_text(&recover_json(&[topic], &[(topic, &last.epoch, last.offset)]));
    let mut after = Vec::new();
    let answer = loop {
        match second.next(Duration::from_secs(30)).expect("replay, then the answer") {
            Seen::Json(v) if v.str_at("t") == Some("subscription_update") => break v,
            Seen::Json(v) => after.extend(got(&v)),
            other => panic!("unexpected {other:?}"),
        }
    };
    let replayed = after.len() as u64;
    let (epoch, offset, recovered, count) = recovery_entry(&answer, topic).expect("entry");
    assert!(recovered, "answer {answer:?}");
    assert_eq!(epoch.as_deref(), Some(last.epoch.as_str()));
    assert_eq!(count, replayed, "the answer counts what came before it");
    assert!(replayed > 0, "the publisher ran on while the client was away");
    assert_eq!(offset, Some(last.offset + replayed));
    assert!(at_drop > last.offset, "publications were in flight at the disconnect");

    // Then live publications follow, up to the publisher's last one.
    let (total, _publisher) = publisher.join().expect("publisher thread");
    stop.store(true, Ordering::Relaxed);
    let rest = (total - 1 - last.offset - replayed) as usize;
    after.extend(receive(&second, rest, Duration::from_secs(60)));
    let offsets: Vec<u64> = after.iter().map(|g| g.offset).collect();
    assert_eq!(offsets, (last.offset + 1..total).collect::<Vec<_>>(), "gap or duplicate");
    assert!(after.iter().all(|g| g.n == Some(g.offset) && g.epoch == last.epoch));
    assert!(matches!(second.next(Duration::from_millis(200)), None | Some(Seen::Pong(_))));
    assert_eq!(server.metric("wse_recovered_total"), 1.0);
}

#[test]
fn a_topic_idle_past_its_ttl_starts_a_new_epoch_and_recovery_across_it_reports_false() {
    let server = Server::start(&[
        "--allow-client-publish",
        "--history-ttl",
        "1",
        "--ping-interval",
        "0.4",
        "--idle-timeout",
        "30",
    ]);
    let watcher = LiveClient::open(server.addr, "/wse");
    watcher.subscribe(&["ep"]);
    let publisher = LiveClient::open(server.addr, "/wse");
    for n in 0..3 {
        publisher.send_text(&publish_json("ep", &format!(r#"{{"n":{n}}}"#)));
    }
    let old = receive(&watcher, 3, IO_LIMIT);
    std::thread::sleep(Duration::from_millis(2500));
    for n in 3..5 {
        publisher.send_text(&publish_json("ep", &format!(r#"{{"n":{n}}}"#)));
    }

    // Subscribers see the restart: another epoch, offsets from 0.
    let new = receive(&watcher, 2, IO_LIMIT);
    assert_ne!(new[0].epoch, old[0].epoch);
    assert_eq!((new[0].offset, new[1].offset), (0, 1));
    assert_eq!(new[1].epoch, new[0].epoch);

    // A client that recovers from the old epoch is told it cannot, and where the topic is.
    let late = LiveClient::open(server.addr, "/wse");
    late.send_text(&recover_json(
        &["ep", "never"],
        &[("ep", &old[2].epoch, 2), ("never", "00000001", 0)],
    ));
    let answer = late
        .wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update") || got(v).is_some())
        .expect("an answer");
    assert_eq!(answer.str_at("t"), Some("subscription_update"), "nothing is replayed first");
    let entry = recovery_entry(&answer, "ep");
    assert_eq!(entry, Some((Some(new[0].epoch.clone()), Some(1), false, 0)), "{answer:?}");
    assert_eq!(recovery_entry(&answer, "never"), Some((None, None, false, 0)));
    publisher.send_text(&publish_json("ep", r#"{"n":5}"#));
    let next = receive(&late, 1, IO_LIMIT);
    assert_eq!((next[0].epoch.as_str(), next[0].offset), (new[0].epoch.as_str(), 2));
}

#[test]
fn recovery_replays_only_what_history_still_holds_and_within_the_replay_limit() {
    let server = Server::start(&[
        "--allow-client-publish",
        "--history-size",
        "10",
        "--history-max-replay",
        "20",
    ]);
    let watcher = LiveClient::open(server.addr, "/wse");
    watcher.subscribe(&["h"]);
    let publisher = LiveClient::open(server.addr, "/wse");
    for n in 0..50 {
        publisher.send_text(&publish_json("h", &format!(r#"{{"n":{n}}}"#)));
    }
    let seen = receive(&watcher, 50, IO_LIMIT);
    let epoch = seen[0].epoch.clone();

    let client = LiveClient::open(server.addr, "/wse");
    let ask = |offset: u64| {
        client.send_text(&recover_json(&["h"], &[("h", &epoch, offset)]));
        let mut replayed = Vec::new();
        let answer = loop {
            match client.next(IO_LIMIT).expect("an answer") {
                Seen::Json(v) if v.str_at("t") == Some("subscription_update") => break v,
                Seen::Json(v) => replayed.extend(got(&v).map(|g| g.offset)),
                other => panic!("unexpected {other:?}"),
            }
        };
        (recovery_entry(&answer, "h").expect("entry"), replayed)
    };
    let current = Some(epoch.clone());
    // 44 missing: more than a replay may carry.
    assert_eq!(ask(5), ((current.clone(), Some(49), false, 0), vec![]));
    // 14 missing but only the last 10 are kept.
    assert_eq!(ask(35), ((current.clone(), Some(49), false, 0), vec![]));
    // Within both: replayed in order, before the answer.
    assert_eq!(ask(44), ((current.clone(), Some(49), true, 5), vec![45, 46, 47, 48, 49]));
    // Up to date, and ahead of the topic.
    assert_eq!(ask(49), ((current.clone(), Some(49), true, 0), vec![]));
    assert_eq!(ask(60), ((current, Some(49), false, 0), vec![]));

    publisher.send_text(&publish_json("h", r#"{"n":50}"#));
    assert_eq!(receive(&client, 1, IO_LIMIT)[0].offset, 50);
    assert_eq!(server.metric("wse_replayed_messages_total"), 5.0);
}

#[test]
fn a_publication_sent_twice_with_the_same_id_is_delivered_once() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let watcher = LiveClient::open(server.addr, "/wse");
    watcher.subscribe(&["d", "d2"]);
    let publisher = LiveClient::open(server.addr, "/wse");
    let with_id = |topic: &str, id: &str, n: u64| {
        format!(r#"{{"t":"publish","id":"{id}","p":{{"topic":"{topic}","data":{{"n":{n}}}}}}}"#)
    };
    publisher.send_text(&with_id("d", "dup-1", 0));
    publisher.send_text(&with_id("d", "dup-1", 1));
    publisher.send_text(&with_id("d", "dup-2", 2));
    publisher.send_text(&with_id("d2", "dup-1", 3));
    publisher.send_text(&publish_json("d", r#"{"n":4}"#));

    let mut ids = Vec::new();
    let deadline = Instant::now() + IO_LIMIT;
    while ids.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(Seen::Json(v)) = watcher.next(left) else { panic!("publications: {ids:?}") };
        let Some(g) = got(&v) else { continue };
        ids.push((g.topic, g.offset, g.n, v.str_at("id").map(str::to_owned)));
    }
    let mut d: Vec<_> = ids.iter().filter(|i| i.0 == "d").collect();
    d.sort_by_key(|i| i.1);
    assert_eq!(d.len(), 3, "{ids:?}");
    assert_eq!((d[0].1, d[0].2, d[0].3.as_deref()), (0, Some(0), Some("dup-1")));
    assert_eq!((d[1].1, d[1].2, d[1].3.as_deref()), (1, Some(2), Some("dup-2")));
    assert_eq!((d[2].1, d[2].2), (2, Some(4)), "the duplicate took no offset");
    let d2 = ids.iter().find(|i| i.0 == "d2").expect("same id, other topic");
    assert_eq!(d2.3.as_deref(), Some("dup-1"));
    assert!(watcher.wait_json(Duration::from_millis(300), |v| got(v).is_some()).is_none());
    assert_eq!(server.metric("wse_duplicate_publications_total"), 1.0);
}

#[test]
fn with_recovery_off_the_feature_is_not_announced_and_nothing_is_replayed() {
    let server = Server::start(&["--allow-client-publish", "--recovery", "off"]);
    let (_, ready) = RawClient::open_wse(server.addr, "/wse");
    let features = ready.get("p").and_then(|p| p.get("details")).and_then(|d| d.get("features"));
    assert_eq!(features.and_then(|f| f.get("recovery")), Some(&Value::Bool(false)));

    let publisher = LiveClient::open(server.addr, "/wse");
    let watcher = LiveClient::open(server.addr, "/wse");
    watcher.subscribe(&["off"]);
    for n in 0..3 {
        publisher.send_text(&publish_json("off", &format!(r#"{{"n":{n}}}"#)));
    }
    let seen = receive(&watcher, 3, IO_LIMIT);
    let client = LiveClient::open(server.addr, "/wse");
    client.send_text(&recover_json(&["off"], &[("off", &seen[0].epoch, 0)]));
    let answer = client
        .wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update") || got(v).is_some())
        .expect("an answer");
    assert_eq!(answer.str_at("t"), Some("subscription_update"));
    assert_eq!(answer.get("p").and_then(|p| p.get("recovery")).map(Value::len), Some(0));
}

/// Payload size of the backpressure tests' messages.
const MESSAGE: usize = 8 * 1024;
/// How long the flat-out publisher runs at most.
const PUBLISH_FOR: Duration = Duration::from_secs(3);
