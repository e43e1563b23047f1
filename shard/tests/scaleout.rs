//! Scale-out through Redis (issue #6): several engines on one real `redis-server`.
//!
//! The Redis is a `redis-server` child process on a free loopback port
//! (`common::redis_server`), killed and restarted to play an outage. Whole-instance tests
//! run `wse-server` binaries; the ones that need the application interface (dead letters,
//! direct messages) run engines in this process. Every wait is bounded; nothing asserts a
//! speed.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::json::Value;
use common::redis_server::Redis;
use common::*;
use wse_shard::{Config, Priority, Server as Engine};

/// One publication as a subscriber saw it.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    epoch: String,
    offset: u64,
    id: String,
    data: Value,
}

/// Reads publications of `topic` from `client` until `count` arrived or `within` passed.
fn receive(client: &LiveClient, topic: &str, count: usize, within: Duration) -> Vec<Got> {
    let deadline = Instant::now() + within;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next(left) {
            Some(Seen::Json(v)) if v.str_at("tp") == Some(topic) => out.push(Got {
                epoch: v.str_at("e").expect("e").to_owned(),
                offset: v.num_at("o").expect("o") as u64,
                id: v.str_at("id").expect("id").to_owned(),
                data: v.get("p").expect("p").clone(),
            }),
            Some(Seen::Json(_) | Seen::Pong(_)) => {}
            Some(other) => panic!("connection ended ({other:?}) after {} of {count}", out.len()),
            None => panic!("only {} of {count} publications within {within:?}", out.len()),
        }
    }
    out
}

/// Asserts that nothing more of `topic` arrives within `within`.
fn expect_silence(client: &LiveClient, topic: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while let Some(seen) = client.next(deadline.saturating_duration_since(Instant::now())) {
        if let Seen::Json(v) = seen {
            assert_ne!(v.str_at("tp"), Some(topic), "unexpected publication {v:?}");
        }
    }
}

/// A number field of a publication's data.
fn field(got: &Got, key: &str) -> u64 {
    got.data.num_at(key).unwrap_or_else(|| panic!("no {key} in {got:?}")) as u64
}

/// Asserts one epoch and the offsets `first..first + len`, in order.
fn assert_run(got: &[Got], first: u64) {
    let epoch = &got[0].epoch;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(&g.epoch, epoch, "epoch changed at {i}: {got:?}");
        assert_eq!(g.offset, first + i as u64, "offset at {i}: {got:?}");
    }
}

/// The body of `GET path` on the server at `addr`. A loaded machine (other builds beside
/// the tests) may keep the answer longer than one I/O limit, so an empty answer is asked
/// again, within a generous bound.
fn http_body(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + HTTP_LIMIT;
    loop {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(HTTP_LIMIT)).expect("read timeout");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let mut raw = String::new();
        use std::io::{Read, Write};
        let answered =
            stream.write_all(request.as_bytes()).and_then(|()| stream.read_to_string(&mut raw));
        if let (Ok(_), Some((_, body))) = (answered, raw.split_once("\r\n\r\n")) {
            return body.to_owned();
        }
        assert!(Instant::now() < deadline, "no answer to GET {path} from {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `/health` of the server at `addr` says the bridge accepts publications.
fn wait_accepting(addr: SocketAddr) {
    let deadline = Instant::now() + IO_LIMIT * 2;
    loop {
        let body = http_body(addr, "/health");
        if body.contains(r#""accepting":true"#) {
            return;
        }
        assert!(Instant::now() < deadline, "the bridge never accepted: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `series` on `/metrics` of the server at `addr`.
fn metric_at(addr: SocketAddr, series: &str) -> f64 {
    metric_value(&http_body(addr, "/metrics"), series)
}

/// Polls `series` on `/metrics` until `accept` holds; panics after `within`.
fn wait_metric_at(addr: SocketAddr, series: &str, within: Duration, accept: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let value = metric_at(addr, series);
        if accept(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A subscriber of `topic` on the server at `addr`, its subscription confirmed.
fn subscriber(addr: SocketAddr, topic: &str) -> LiveClient {
    let client = LiveClient::open(addr, &format!("/wse?topics={topic}"));
    let answer = client.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update"));
    let answer = answer.expect("subscription answer");
    assert_eq!(answer.get("p").and_then(|p| p.get("success_topics")).map(Value::len), Some(1));
    client
}

/// An engine in this process on `redis`, with a quick breaker for outage tests.
fn engine(redis: &Redis) -> Engine {
    common::engine::start(|c: &mut Config| {
        c.redis_url = Some(redis.url().into());
        c.redis.timeout = Duration::from_millis(300);
        c.redis.breaker_threshold = 2;
        c.redis.breaker_window = Duration::from_secs(30);
        c.redis.breaker_reset = Duration::from_millis(500);
        c.allow_client_publish = true;
    })
}

/// Waits until the engine's bridge accepts publications.
fn wait_engine_accepting(engine: &Engine) {
    let deadline = Instant::now() + IO_LIMIT * 2;
    while !engine.app().redis_status().expect("redis on").accepting {
        assert!(Instant::now() < deadline, "{:?}", engine.app().redis_status());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_instances_deliver_every_publication_once_and_in_the_same_order() {
    const PER_PUBLISHER: u64 = 150;
    const SUBSCRIBERS_EACH: usize = 3;
    let redis = Redis::start();
    let url = redis.url();
    // One instance runs two shards, so that owners and rings are crossed on the way too.
    let servers: Vec<Server> = ["1", "2", "1"]
        .iter()
        .map(|shards| {
            Server::start(&["--shards", shards, "--allow-client-publish", "--redis-url", &url])
        })
        .collect();
    for server in &servers {
        wait_accepting(server.addr);
    }
    let subscribers: Vec<LiveClient> = servers
        .iter()
        .flat_map(|s| (0..SUBSCRIBERS_EACH).map(|_| subscriber(s.addr, "flow")))
        .collect();
    let publishers: Vec<LiveClient> =
        servers.iter().map(|s| LiveClient::open(s.addr, "/wse")).collect();

    // Publications from every instance, interleaved.
    for k in 0..PER_PUBLISHER {
        for (src, publisher) in publishers.iter().enumerate() {
            publisher.send_text(&publish_json("flow", &format!(r#"{{"src":{src},"k":{k}}}"#)));
        }
    }

    let total = 3 * PER_PUBLISHER as usize;
    let mut first_order: Option<Vec<String>> = None;
    for (i, sub) in subscribers.iter().enumerate() {
        let got = receive(sub, "flow", total, Duration::from_secs(30));
        // Exactly once: consecutive offsets from 0 in one epoch, no id twice.
        assert_run(&got, 0);
        let ids: HashSet<&str> = got.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids.len(), total, "subscriber {i}: an id came twice");
        // Each publisher's publications in the order it sent them.
        for src in 0..3 {
            let ks: Vec<u64> =
                got.iter().filter(|g| field(g, "src") == src).map(|g| field(g, "k")).collect();
            assert_eq!(ks, (0..PER_PUBLISHER).collect::<Vec<_>>(), "subscriber {i}, src {src}");
        }
        // And the same order, with the same stamps and ids, on every instance.
        let order: Vec<String> =
            got.iter().map(|g| format!("{}/{}/{}", g.epoch, g.offset, g.id)).collect();
        match &first_order {
            None => first_order = Some(order),
            Some(first) => assert_eq!(&order, first, "subscriber {i} saw another order"),
        }
        expect_silence(sub, "flow", Duration::from_millis(if i == 0 { 300 } else { 0 }));
    }
    for server in &servers {
        let metric = |series| metric_at(server.addr, series);
        assert_eq!(metric("wse_redis_fallbacks_total"), 0.0, "nothing fell back");
        assert_eq!(metric("wse_redis_published_total"), PER_PUBLISHER as f64);
        assert_eq!(metric("wse_redis_received_total"), 2.0 * PER_PUBLISHER as f64);
        // Pipelining: never more round trips than publications.
        assert!(metric("wse_redis_round_trips_total") <= PER_PUBLISHER as f64);
    }
}

#[test]
fn an_outage_never_stops_local_delivery_and_its_dead_letters_replay_elsewhere() {
    let mut redis = Redis::start();
    let (a, b) = (engine(&redis), engine(&redis));
    wait_engine_accepting(&a);
    wait_engine_accepting(&b);
    let (sa, sb) = (subscriber(a.local_addr(), "feed"), subscriber(b.local_addr(), "feed"));
    let publish = |k: u64| {
        a.app()
            .publish("feed", &format!(r#"{{"k":{k}}}"#), None, Priority::Normal)
            .expect("publish")
    };

    // Through Redis: both instances, the same stamps.
    (0..5).for_each(publish);
    let (got_a, got_b) = (receive(&sa, "feed", 5, IO_LIMIT), receive(&sb, "feed", 5, IO_LIMIT));
    assert_run(&got_a, 0);
    assert_eq!(got_a, got_b);
    let redis_epoch = got_a[0].epoch.clone();

    // Redis dies mid-stream: A's subscriber still gets every publication, in order, under
    // one new local epoch; B's gets none; the breaker opens (on /metrics).
    redis.kill();
    for k in 5..25 {
        publish(k);
        std::thread::sleep(Duration::from_millis(20));
    }
    let during = receive(&sa, "feed", 20, IO_LIMIT);
    assert_eq!(
        during.iter().map(|g| field(g, "k")).collect::<Vec<_>>(),
        (5..25).collect::<Vec<_>>()
    );
    assert_run(&during, 0);
    assert_ne!(during[0].epoch, redis_epoch, "local stamping shows as an epoch change");
    let open = r#"wse_redis_breaker_state{state="open"}"#;
    wait_metric_at(a.local_addr(), open, IO_LIMIT, |v| v == 1.0);
    let buffered = a.app().dlq_messages(Some("feed"), 100).expect("list while down");
    assert_eq!(buffered.len(), 20, "every publication of the outage is a dead letter");
    assert!(buffered.iter().all(|d| !d.stored), "kept in memory while Redis is down");
    assert!(matches!(
        b.app().replay_dlq_message("feed", &buffered[0].message.id),
        Err(wse_shard::Error::ScaleOut(wse_fanout::Error::RedisUnavailable))
    ));
    expect_silence(&sb, "feed", Duration::from_millis(200));

    // Redis is back: the breaker closes (half-open probe) and the dead letters move to Redis.
    redis.restart();
    let closed = r#"wse_redis_breaker_state{state="closed"}"#;
    wait_metric_at(a.local_addr(), closed, IO_LIMIT * 2, |v| v == 1.0);
    assert!(metric_at(a.local_addr(), "wse_redis_breaker_opened_total") >= 1.0);
    wait_engine_accepting(&a);
    wait_engine_accepting(&b);
    wait_metric_at(a.local_addr(), "wse_redis_dlq_written_total", IO_LIMIT, |v| v == 20.0);
    let stored = b.app().dlq_messages(None, 100).expect("list from another instance");
    assert_eq!(stored.len(), 20);
    assert!(stored.iter().all(|d| d.stored && d.instance == a.app().instance_id().unwrap()));
    let ks: Vec<u64> = stored.iter().map(|d| k_of(&d.message.data)).collect();
    assert_eq!(ks, (5..25).collect::<Vec<_>>(), "kept in publish order");

    // Replayed from B: B's subscriber gets them in order; A delivered them already and drops
    // them; a publication after them reaches both, right behind them in Redis's order.
    for letter in &stored {
        assert!(b.app().replay_dlq_message("feed", &letter.message.id).expect("replay"));
    }
    assert!(!b.app().replay_dlq_message("feed", &stored[0].message.id).expect("again"));
    publish(100);
    let replayed = receive(&sb, "feed", 21, IO_LIMIT);
    let ks: Vec<u64> = replayed.iter().map(|g| field(g, "k")).collect();
    assert_eq!(ks, (5..25).chain([100]).collect::<Vec<_>>());
    assert_run(&replayed, 0);
    assert_eq!(*replayed[0].id, *stored[0].message.id, "a replay keeps its id");
    let after = receive(&sa, "feed", 1, IO_LIMIT);
    assert_eq!((field(&after[0], "k"), after[0].offset), (100, 20), "A skipped the replays");
    assert_eq!(after[0].epoch, replayed[20].epoch);
    assert!(a.app().dlq_messages(None, 100).expect("list").is_empty());
    assert!(metric_at(a.local_addr(), "wse_redis_own_dropped_total") >= 20.0);
    let mut conn = redis.connection();
    let left: i64 = redis::cmd("EXISTS").arg("wse:dlq:feed").query(&mut conn).expect("EXISTS");
    assert_eq!(left, 0, "the emptied list is gone");
}

#[test]
fn a_hung_redis_delays_local_delivery_only_by_its_timeouts() {
    let redis = Redis::start();
    let a = engine(&redis);
    wait_engine_accepting(&a);
    let sa = subscriber(a.local_addr(), "hang");
    let publish = |k: u64| {
        a.app()
            .publish("hang", &format!(r#"{{"k":{k}}}"#), None, Priority::Normal)
            .expect("publish")
    };
    publish(0);
    let before = receive(&sa, "hang", 1, IO_LIMIT);

    // Redis accepts connections but answers nothing: the first call times out (300 ms; the
    // retry's connection loads the script, as long again), and from then on A stamps
    // locally. The bound is loose: a loaded machine stretches the timeouts.
    redis.pause();
    let paused = Instant::now();
    for k in 1..=10 {
        publish(k);
    }
    let during = receive(&sa, "hang", 10, IO_LIMIT);
    let waited = paused.elapsed();
    assert_eq!(
        during.iter().map(|g| field(g, "k")).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_run(&during, 0);
    assert_ne!(during[0].epoch, before[0].epoch);
    assert!(waited < IO_LIMIT, "local delivery waited {waited:?}");
    assert!(!a.app().redis_status().expect("redis on").accepting);

    // Redis answers again: the probe closes the breaker and Redis stamps resume, in the
    // topic's Redis epoch (kept: Redis lost nothing).
    redis.resume();
    wait_engine_accepting(&a);
    publish(11);
    let after = receive(&sa, "hang", 1, IO_LIMIT);
    assert_eq!((field(&after[0], "k"), &after[0].epoch), (11, &before[0].epoch));
    assert!(after[0].offset >= 1, "{after:?}");
}

#[test]
fn a_client_recovers_on_another_instance_from_the_same_stamps() {
    let redis = Redis::start();
    let url = redis.url();
    let start = || Server::start(&["--allow-client-publish", "--redis-url", &url]);
    let (a, b) = (start(), start());
    wait_accepting(a.addr);
    wait_accepting(b.addr);
    let first = subscriber(a.addr, "rec");
    let watcher = subscriber(b.addr, "rec");
    let publisher = LiveClient::open(b.addr, "/wse");
    for k in 0..5 {
        publisher.send_text(&publish_json("rec", &format!(r#"{{"k":{k}}}"#)));
    }
    let seen = receive(&first, "rec", 5, IO_LIMIT);
    drop(first);

    // Missed while away, then asked for on the other instance.
    for k in 5..10 {
        publisher.send_text(&publish_json("rec", &format!(r#"{{"k":{k}}}"#)));
    }
    let on_b = receive(&watcher, "rec", 10, IO_LIMIT);
    let last = &seen[4];
    let second = LiveClient::open(b.addr, "/wse");
    second.send_text(&recover_json(&["rec"], &[("rec", &last.epoch, last.offset)]));
    let replayed = receive(&second, "rec", 5, IO_LIMIT);
    assert_eq!(replayed, on_b[5..], "the same stamps and ids as B delivered live");
    let answer = second.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update"));
    let answer = answer.expect("subscription answer");
    let entry = recovery_entry(&answer, "rec").expect("recovery entry");
    assert_eq!(entry, (Some(last.epoch.clone()), Some(9), true, 5));
}

#[test]
fn a_direct_message_reaches_a_connection_on_another_instance() {
    let redis = Redis::start();
    let (a, b) = (engine(&redis), engine(&redis));
    wait_engine_accepting(&a);
    wait_engine_accepting(&b);
    let (client, conn) = common::engine::open(&b, "/wse");
    let mut client = client;
    let target = b.app().instance_id().expect("instance id").to_owned();
    assert_ne!(Some(target.as_str()), a.app().instance_id());
    a.app()
        .send_event_to(&target, conn, "notice", r#"{"from":"a"}"#, Priority::High, Some("c-7"))
        .expect("send");
    let message = client.next_json(IO_LIMIT);
    assert_eq!(message.str_at("t"), Some("notice"), "{message:?}");
    assert_eq!(message.get("p").and_then(|p| p.str_at("from")), Some("a"));
    assert_eq!((message.str_at("cid"), message.num_at("pri")), (Some("c-7"), Some(8.0)));
    assert_eq!(message.num_at("seq"), Some(2.0), "the connection's next seq");

    // To its own instance it is an ordinary send; to no instance it is dropped and counted.
    b.app().send_event_to(&target, conn, "local", "{}", Priority::Normal, None).expect("send");
    assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("local"));
    a.app().send_event_to("nobody", conn, "lost", "{}", Priority::Normal, None).expect("send");
    wait_metric_at(a.local_addr(), "wse_redis_direct_dropped_total", IO_LIMIT, |v| v == 1.0);
    assert!(a.app().send_event_to(&target, conn, "x", "{nope", Priority::Normal, None).is_err());
}

#[test]
fn without_redis_the_scale_out_calls_say_so() {
    let engine = common::engine::start(|_| {});
    let app = engine.app();
    assert!(app.instance_id().is_none() && app.redis_status().is_none());
    assert!(matches!(app.dlq_messages(None, 10), Err(wse_shard::Error::NoRedis)));
    assert!(matches!(app.replay_dlq_message("t", "id"), Err(wse_shard::Error::NoRedis)));
    let sent = app.send_event_to("x", wse_shard::ConnId(1), "t", "{}", Priority::Normal, None);
    assert!(matches!(sent, Err(wse_shard::Error::NoRedis)));
    assert!(!app.health_json().contains("redis"));
    assert!(!app.prometheus().contains("wse_redis_"));
}

/// Longest wait for one answer over HTTP.
const HTTP_LIMIT: Duration = Duration::from_secs(20);

/// `k` of a dead letter's data.
fn k_of(data: &str) -> u64 {
    common::json::parse(data.as_bytes()).and_then(|v| v.num_at("k")).expect("k") as u64
}

#[test]
fn only_the_configured_topics_travel() {
    let redis = Redis::start();
    let url = redis.url();
    let start = || {
        Server::start(&[
            "--allow-client-publish",
            "--redis-url",
            &url,
            "--redis-topics",
            "chat.*",
            "--redis-prefix",
            "app1",
        ])
    };
    let (a, b) = (start(), start());
    wait_accepting(a.addr);
    wait_accepting(b.addr);
    let on_a = LiveClient::open(a.addr, "/wse?topics=chat.room,news");
    let on_b = LiveClient::open(b.addr, "/wse?topics=chat.room,news");
    for client in [&on_a, &on_b] {
        client.wait_json(IO_LIMIT, |v| v.str_at("t") == Some("subscription_update")).expect("ok");
    }
    let publisher = LiveClient::open(a.addr, "/wse");
    publisher.send_text(&publish_json("news", r#"{"k":1}"#));
    publisher.send_text(&publish_json("chat.room", r#"{"k":2}"#));
    // A delivers both; B only the travelling one; Redis saw only that one, under the prefix.
    assert_eq!(field(&receive(&on_a, "news", 1, IO_LIMIT)[0], "k"), 1);
    assert_eq!(field(&receive(&on_a, "chat.room", 1, IO_LIMIT)[0], "k"), 2);
    assert_eq!(field(&receive(&on_b, "chat.room", 1, IO_LIMIT)[0], "k"), 2);
    expect_silence(&on_b, "news", Duration::from_millis(300));
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
    assert_eq!(keys, ["app1:seq:chat.room"]);
    assert_eq!(metric_at(a.addr, "wse_redis_published_total"), 1.0);
}
