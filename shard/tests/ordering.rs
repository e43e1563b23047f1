//! Order across priorities, end to end (PROTOCOL.md §3 "Order and priority"): the engine runs
//! in this process (`wse_shard::Server`, one shard), so that the test drives publications
//! and direct messages in a known queue order, while a raw-socket client that has stopped
//! reading keeps them waiting in its outbound queue; then it reads everything and checks
//! that priority reordered what it may and nothing it may not.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::json::{self, Value};
use common::{RawClient, BINARY, CLOSE, TEXT};
use wse_fanout::mesh::PublishRequest;
use wse_protocol::envelope::Priority;
use wse_shard::{Config, Server};

/// One thing queued for the client, in queue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    Publication { topic: usize, pri: Priority },
    Direct { pri: Priority },
}

#[test]
fn priority_never_reorders_a_topic_nor_direct_messages_of_one_priority() {
    let defaults = Config::default();
    let config = Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        cores: defaults.cores[..1].to_vec(),
        max_outbound_queue_bytes: 256 << 20,
        // The 64 KiB filler must fill the client's buffers, not shrink into C: frames.
        compression: wse_shard::config::Compression { c_frames: false, ..defaults.compression },
        ping_interval: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(120),
        ..defaults
    };
    let server = Server::start(config).expect("server starts");
    let (mut client, _) =
        RawClient::open_wse_small(server.local_addr(), "/wse?topics=a,b,fill", 4096);
    let answer = client.next_json(Duration::from_secs(5));
    assert_eq!(answer.str_at("t"), Some("subscription_update"));
    let conns = server.app().connections().expect("connections");
    assert_eq!(conns.len(), 1, "{conns:?}");
    let conn = conns[0];
    let metrics = &server.metrics().shards[0];
    let stamped = || metrics.publications.load(Ordering::Relaxed);

    // Stall: BACKGROUND filler until the client's buffers are full and its queue holds data.
    let started = Instant::now();
    let mut filler = 0u64;
    while metrics.queued_bytes.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the queue never held data");
        for _ in 0..16 {
            server
                .publish(request("fill", Priority::Background, filler, 64 * 1024))
                .expect("publish");
            filler += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // A known interleaving: each publication is queued (stamped and delivered on the only
    // shard) before the next control message, each direct message in control order.
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut queued = Vec::new();
    for k in 0..300u64 {
        let pri = Priority::ALL[(next(&mut rng) % 5) as usize];
        if next(&mut rng) % 3 == 0 {
            server.app().send_event(conn, "direct", &n_json(k), pri, None).expect("send");
            queued.push(Queued::Direct { pri });
        } else {
            let topic = (next(&mut rng) % 2) as usize;
            let before = stamped();
            server.publish(request(["a", "b"][topic], pri, k, 16)).expect("publish");
            let deadline = Instant::now() + Duration::from_secs(5);
            while stamped() == before {
                assert!(Instant::now() < deadline, "publication {k} was not stamped");
                std::thread::yield_now();
            }
            queued.push(Queued::Publication { topic, pri });
        }
    }

    // Read it all: filler, then the 300 in the order the queue chose.
    let mut arrived: Vec<(u64, Value)> = Vec::new();
    let mut fill_seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrived.len() < queued.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = client.read_frame(left).expect("every queued message arrives");
        assert!(frame.opcode() == TEXT || frame.opcode() == BINARY, "{frame:?}");
        assert_ne!(frame.opcode(), CLOSE);
        let value = json::parse(&frame.payload).expect("JSON");
        if value.str_at("tp") == Some("fill") {
            fill_seen += 1;
            continue;
        }
        let k = value.get("p").and_then(|p| p.num_at("n")).expect("n") as u64;
        arrived.push((k, value));
    }
    check(&queued, &arrived);
    assert!(fill_seen > 0 && fill_seen <= filler);
    server.shutdown(1001);
    assert!(server.join(Duration::from_secs(5)));
}

/// The order rules over `arrived` (each message's index into `queued`, with its JSON).
fn check(queued: &[Queued], arrived: &[(u64, Value)]) {
    let at: HashMap<u64, usize> = arrived.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    assert_eq!(at.len(), queued.len(), "every message arrives once");

    // Per topic, offsets rise by one in arrival order; per priority, `seq` rises.
    let mut offsets: HashMap<String, u64> = HashMap::new();
    let mut seqs: HashMap<u64, u64> = HashMap::new();
    for (k, value) in arrived {
        let pri = value.num_at("pri").unwrap_or(5.0) as u64;
        assert_eq!(pri, u64::from(wire(queued[*k as usize]).as_u8()), "pri of {value:?}");
        if let Some(topic) = value.str_at("tp") {
            let offset = value.num_at("o").expect("o") as u64;
            if let Some(last) = offsets.insert(topic.to_owned(), offset) {
                assert_eq!(offset, last + 1, "topic {topic} reordered: {value:?}");
            }
        } else {
            let seq = value.num_at("seq").expect("seq") as u64;
            if let Some(last) = seqs.insert(pri, seq) {
                assert!(seq > last, "direct messages of priority {pri} reordered: {value:?}");
            }
        }
    }

    // A direct message never overtakes a publication of its priority queued before it; and
    // priority did reorder: some message overtook an earlier, less urgent one.
    let mut overtakes = 0;
    for (later, b) in queued.iter().enumerate() {
        for (earlier, a) in queued[..later].iter().enumerate() {
            let (pa, pb) = (at[&(earlier as u64)], at[&(later as u64)]);
            let direct_after_publication =
                matches!((a, b), (Queued::Publication { .. }, Queued::Direct { .. }));
            if direct_after_publication && wire(*a) == wire(*b) {
                assert!(pb > pa, "direct {later} overtook publication {earlier} of its priority");
            }
            if pb < pa && wire(*b) > wire(*a) {
                overtakes += 1;
            }
        }
    }
    assert!(overtakes > 0, "the queue never reordered by priority; was the client stalled?");
}

fn wire(q: Queued) -> Priority {
    match q {
        Queued::Publication { pri, .. } | Queued::Direct { pri } => pri,
    }
}

fn request(topic: &str, pri: Priority, n: u64, pad: usize) -> PublishRequest {
    let data = format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(pad));
    PublishRequest { topic: Arc::from(topic), event_type: None, data: data.into(), pri, id: None }
}

fn n_json(n: u64) -> String {
    format!(r#"{{"n":{n}}}"#)
}

/// xorshift64*: a fixed, replayable interleaving.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}
