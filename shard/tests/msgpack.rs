//! Loopback tests of `format=msgpack` connections (PROTOCOL.md §4, §7, §11; issue #4): `M:`
//! frames out, msgpack in (prefixed and bare), heartbeats kept as JSON text, the same
//! offsets for JSON and msgpack subscribers, E2E and signing on msgpack connections.
//!
//! Every frame is decoded here with rmpv, independently of the server's converter.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::mp::{self, get, map, str_at, Mp, MpClient};
use common::*;
use wse_protocol::e2e::KeyExchange;
use wse_protocol::signing::{self, SigningKey};

const MSGPACK: &str = "/wse?format=msgpack";

fn subscribe_mp(topics: &[&str]) -> Mp {
    let topics = Mp::Array(topics.iter().map(|t| Mp::from(*t)).collect());
    map(vec![
        ("t", Mp::from("subscription_update")),
        ("p", map(vec![("action", Mp::from("subscribe")), ("topics", topics)])),
    ])
}

fn publish_mp(topic: &str, data: Mp) -> Mp {
    map(vec![
        ("t", Mp::from("publish")),
        ("p", map(vec![("topic", Mp::from(topic)), ("data", data)])),
    ])
}

fn ping_mp(timestamp: u64) -> Mp {
    map(vec![("t", Mp::from("ping")), ("p", map(vec![("timestamp", Mp::from(timestamp))]))])
}

/// Mixed data whose value kinds must survive JSON → msgpack unchanged.
fn mixed_data() -> Mp {
    map(vec![
        ("i", Mp::from(42)),
        ("neg", Mp::from(-7)),
        ("big", Mp::from(u64::MAX)),
        ("f", Mp::F64(2.0)),
        ("half", Mp::F64(0.5)),
        ("s", Mp::from("π \"quoted\"")),
        ("t", Mp::Boolean(true)),
        ("z", Mp::Nil),
        ("list", Mp::Array(vec![Mp::from(1), Mp::F64(1.5), Mp::from("x")])),
        ("nested", map(vec![("deep", map(vec![("k", Mp::from(3))]))])),
    ])
}

#[test]
fn server_ready_and_answers_come_as_m_frames_with_envelope_keys_in_order() {
    let server = Server::start(&[]);
    let (mut client, ready) = MpClient::open(server.addr, MSGPACK);
    assert_eq!(mp::keys(&ready), ["c", "t", "p", "id", "ts", "v", "seq"]);
    assert_eq!(str_at(&ready, "c"), Some("WSE"));
    assert!(get(&ready, "v").is_some_and(|v| v.is_u64() && v.as_u64() == Some(1)), "{ready}");
    let features = mp::at(&ready, &["p", "details", "features"]).expect("features");
    assert_eq!(get(features, "msgpack"), Some(&Mp::Boolean(true)));
    assert!(mp::at(&ready, &["p", "details", "user_id"]).is_some_and(Mp::is_nil));

    client.send_mp(&subscribe_mp(&["news", "bad topic"]));
    let answer = client.next_mp();
    assert_eq!(str_at(&answer, "t"), Some("subscription_update"));
    assert_eq!(get(&answer, "seq").and_then(Mp::as_u64), Some(2));
    let p = get(&answer, "p").expect("payload");
    assert_eq!(mp::strings(get(p, "success_topics").unwrap()), ["news"]);
    assert_eq!(mp::strings(get(p, "failed_topics").unwrap()), ["bad topic"]);
    assert_eq!(mp::at(p, &["errors", "bad topic"]).and_then(Mp::as_str), Some("INVALID_TOPIC"));
}

#[test]
fn heartbeats_stay_json_text_on_msgpack_connections() {
    let server = Server::start(&["--ping-interval", "0.3"]);
    let (mut client, _) = MpClient::open(server.addr, MSGPACK);
    // The server's own heartbeat is the shared text frame.
    let frame = loop {
        let frame = client.raw.read_frame(IO_LIMIT).expect("a frame");
        if frame.opcode() == TEXT {
            break frame;
        }
    };
    assert!(frame.payload.starts_with(br#"{"c":"WSE","t":"ping","p":"#), "{frame:?}");

    // A ping in any format is answered by a PONG text frame that 2.x clients recognise.
    let json_ping = masked(FIN | TEXT, br#"{"t":"ping","p":{"timestamp":5}}"#, random_key());
    client.raw.send(&json_ping);
    client.send_mp(&ping_mp(6));
    client.send_bare(&ping_mp(7));
    for expected in [5.0, 6.0, 7.0] {
        let frame = loop {
            let frame = client.raw.read_frame(IO_LIMIT).expect("a PONG");
            if frame.opcode() == TEXT && !frame.payload.starts_with(br#"{"c":"WSE","t":"ping""#) {
                break frame;
            }
        };
        assert!(frame.payload.starts_with(br#"{"c":"WSE","t":"PONG","p":"#), "{frame:?}");
        let pong = json::parse(&frame.payload).expect("JSON");
        assert_eq!(pong.get("p").and_then(|p| p.num_at("client_timestamp")), Some(expected));
    }
}

#[test]
fn msgpack_publish_reaches_msgpack_subscribers_with_value_kinds_kept() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let (mut subscriber, _) = MpClient::open(server.addr, MSGPACK);
    subscriber.send_bare(&subscribe_mp(&["kinds"]));
    assert_eq!(str_at(&subscriber.next_mp(), "t"), Some("subscription_update"));

    let (mut publisher, _) = MpClient::open(server.addr, MSGPACK);
    publisher.send_mp(&publish_mp("kinds", mixed_data()));
    publisher.send_bare(&publish_mp("kinds", Mp::from("bare")));

    let first = subscriber.next_mp();
    assert_eq!(mp::keys(&first), ["c", "t", "p", "id", "ts", "v", "tp", "e", "o"]);
    assert_eq!(str_at(&first, "c"), Some("U"));
    assert_eq!(str_at(&first, "tp"), Some("kinds"));
    assert_eq!(get(&first, "o").and_then(Mp::as_u64), Some(0));
    let epoch = str_at(&first, "e").expect("epoch");
    assert!(epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_hexdigit()), "{epoch}");
    assert_eq!(get(&first, "p"), Some(&mixed_data()), "value kinds and key order kept");
    let second = subscriber.next_mp();
    assert_eq!(get(&second, "p"), Some(&Mp::from("bare")));
    assert_eq!(get(&second, "o").and_then(Mp::as_u64), Some(1));
}

#[test]
fn json_and_msgpack_subscribers_see_the_same_publications_encoded_once_each() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let mut json_subs: Vec<RawClient> = (0..6)
        .map(|_| {
            let (mut client, _) = RawClient::open_wse(server.addr, "/wse?topics=same");
            assert_eq!(client.next_json(IO_LIMIT).str_at("t"), Some("subscription_update"));
            client
        })
        .collect();
    let mut mp_subs: Vec<MpClient> = (0..6)
        .map(|_| {
            let (mut client, _) = MpClient::open(server.addr, "/wse?format=msgpack&topics=same");
            assert_eq!(str_at(&client.next_mp(), "t"), Some("subscription_update"));
            client
        })
        .collect();
    assert_eq!(server.metric("wse_msgpack_connections"), 6.0);
    let metrics = server.metrics();
    let on = |shard: &str| metric_value(&metrics, &format!("wse_connections{{shard=\"{shard}\"}}"));
    assert!(on("0") > 0.0 && on("1") > 0.0, "both shards hold subscribers");

    let mut publisher = ws_connect_wse(&server, "/wse");
    const COUNT: u64 = 50;
    for n in 0..COUNT {
        ws_send(&mut publisher, &publish_json("same", &format!(r#"{{"n":{n},"x":{n}.5}}"#)));
    }

    let reference: Vec<(String, u64, String)> = (0..COUNT)
        .map(|n| {
            let value = json_subs[0].next_json(IO_LIMIT);
            let publication = Publication::from_json(&value).expect("a publication");
            assert_eq!(publication.data.num_at("n"), Some(n as f64));
            (publication.epoch, publication.offset, value.str_at("id").unwrap().to_owned())
        })
        .collect();
    for client in &mut json_subs[1..] {
        for (epoch, offset, id) in &reference {
            let value = client.next_json(IO_LIMIT);
            assert_eq!(
                (value.str_at("e"), value.num_at("o")),
                (Some(&**epoch), Some(*offset as f64))
            );
            assert_eq!(value.str_at("id"), Some(&**id));
        }
    }
    for client in &mut mp_subs {
        for (n, (epoch, offset, id)) in reference.iter().enumerate() {
            let value = client.next_mp();
            assert_eq!(str_at(&value, "e"), Some(&**epoch));
            assert_eq!(get(&value, "o").and_then(Mp::as_u64), Some(*offset));
            assert_eq!(str_at(&value, "id"), Some(&**id), "the same publication, not a copy");
            assert_eq!(mp::at(&value, &["p", "n"]).and_then(Mp::as_u64), Some(n as u64));
            assert_eq!(mp::at(&value, &["p", "x"]).and_then(Mp::as_f64), Some(n as f64 + 0.5));
        }
    }
    // Once per publication in msgpack, by its owner: not per shard, not per subscriber.
    assert_eq!(server.metric("wse_msgpack_encoded_total"), COUNT as f64);
    assert!(server.metric("wse_msgpack_frames_out_total") >= (6 * COUNT) as f64);
}

#[test]
fn owner_skips_msgpack_without_msgpack_connections_and_the_gauge_follows() {
    let server = Server::start(&["--allow-client-publish"]);
    let (mut json_sub, _) = RawClient::open_wse(server.addr, "/wse?topics=plain");
    json_sub.next_json(IO_LIMIT);
    json_sub.publish("plain", "1");
    assert!(Publication::from_json(&json_sub.next_json(IO_LIMIT)).is_some());
    assert_eq!(server.metric("wse_msgpack_encoded_total"), 0.0);

    let (mp_sub, _) = MpClient::open(server.addr, "/wse?format=msgpack&topics=plain");
    assert_eq!(server.metric("wse_msgpack_connections"), 1.0);
    drop(mp_sub);
    let gone = server.wait_metric("wse_msgpack_connections", IO_LIMIT, |v| v == 0.0);
    assert_eq!(gone, 0.0);
}

#[test]
fn malformed_msgpack_gets_invalid_message_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    let (mut client, _) = MpClient::open(server.addr, MSGPACK);
    let too_deep = (0..40).fold(Mp::Nil, |inner, _| Mp::Array(vec![inner]));
    let mut trailing = b"M:".to_vec();
    trailing.extend_from_slice(&mp::encode(&ping_mp(1)));
    trailing.push(0x01);
    let inputs: Vec<Vec<u8>> = vec![
        b"M:\x82\xa1t".to_vec(),
        b"M:\x92\x01".to_vec(),
        b"M:\x01".to_vec(),
        b"M:".to_vec(),
        [b"M:".as_slice(), &mp::encode(&map(vec![("t", Mp::from("x")), ("p", too_deep)]))].concat(),
        [b"M:".as_slice(), &mp::encode(&map(vec![("t", Mp::from(1))]))].concat(),
        [b"M:".as_slice(), &[0x81, 0xa1, b't', 0xa2, 0xff, 0xfe]].concat(),
        trailing,
        vec![0x81, 0xa1, b't', 0xc1],
    ];
    for input in &inputs {
        client.send_binary(input);
        let error = client.next_mp();
        assert_eq!(str_at(&error, "t"), Some("error"), "{input:02x?}");
        let code = mp::at(&error, &["p", "code"]).and_then(Mp::as_str);
        assert_eq!(code, Some("INVALID_MESSAGE"), "{input:02x?}: {error}");
    }
    assert_eq!(server.metric("wse_msgpack_invalid_total"), inputs.len() as f64);
    client.send_mp(&ping_mp(9));
    let pong = client.next_text();
    assert_eq!(pong.str_at("t"), Some("PONG"), "the connection still serves");
}

#[test]
fn json_connections_accept_m_frames_and_answer_in_json() {
    let server = Server::start(&[]);
    let (raw, _) = RawClient::open_wse(server.addr, "/wse");
    let mut client = MpClient { raw };
    client.send_mp(&subscribe_mp(&["a"]));
    let answer = client.next_text();
    assert_eq!(answer.str_at("t"), Some("subscription_update"));
    // Bare msgpack is only read on msgpack connections: elsewhere it is not a known format.
    client.send_bare(&subscribe_mp(&["b"]));
    client.expect_silence(Duration::from_millis(300));
}

#[test]
fn e2e_on_a_msgpack_connection_seals_m_frames() {
    let server = Server::start(&["--allow-client-publish"]);
    let (mut client, _) = MpClient::open(server.addr, MSGPACK);
    let mine = KeyExchange::generate().expect("client key pair");
    let hello = format!(
        concat!(
            r#"{{"t":"client_hello","p":{{"client_version":"test","protocol_version":1,"#,
            r#""features":{{"encryption":true}},"encryption_public_key":"{}"}}}}"#
        ),
        mine.public_key_b64()
    );
    client.raw.send(&masked(FIN | TEXT, hello.as_bytes(), random_key()));
    let server_hello = client.next_mp();
    assert_eq!(str_at(&server_hello, "t"), Some("server_hello"), "plaintext M: frame");
    let theirs = mp::at(&server_hello, &["p", "encryption_public_key"]).and_then(Mp::as_str);
    let keys = mine.agree(theirs.expect("server key")).expect("agreement");

    let mut plain = b"M:".to_vec();
    plain.extend_from_slice(&mp::encode(&subscribe_mp(&["secret"])));
    let mut sealed = Vec::new();
    keys.seal(&plain, &mut sealed).expect("seal");
    client.send_binary(&sealed);

    let opened = |client: &mut MpClient| {
        let frame = loop {
            let frame = client.raw.read_frame(IO_LIMIT).expect("a frame");
            if frame.opcode() == BINARY {
                break frame;
            }
        };
        assert!(frame.payload.starts_with(b"E:"), "sealed: {frame:?}");
        let plain = keys.open(&frame.payload).expect("opens");
        assert!(plain.starts_with(b"M:"), "inside E: is M: plus msgpack (PROTOCOL.md §4)");
        mp::decode(&plain[2..])
    };
    let answer = opened(&mut client);
    assert_eq!(str_at(&answer, "t"), Some("subscription_update"));

    let (mut publisher, _) = RawClient::open_wse(server.addr, "/wse");
    publisher.publish("secret", r#"{"k":1.25}"#);
    let publication = opened(&mut client);
    assert_eq!(mp::at(&publication, &["p", "k"]).and_then(Mp::as_f64), Some(1.25));
}

#[test]
fn msgpack_frames_are_unsigned_and_json_heartbeats_stay_signed() {
    const SECRET: &str = "signing-secret-for-tests-0123456789";
    let server = Server::start(&[
        "--signing-secret",
        SECRET,
        "--sign-outbound",
        "*",
        "--allow-client-publish",
    ]);
    let key = SigningKey::from_secret(SECRET.as_bytes());
    let (mut client, ready) = MpClient::open(server.addr, "/wse?format=msgpack&topics=s");
    assert!(get(&ready, "sig").is_none());
    let answer = client.next_mp();
    assert!(get(&answer, "sig").is_none(), "{answer}");

    let (mut json_sub, _) = RawClient::open_wse(server.addr, "/wse?topics=s");
    json_sub.next_json(IO_LIMIT);
    json_sub.publish("s", r#"{"v":1}"#);
    let publication = client.next_mp();
    assert_eq!(mp::keys(&publication), ["c", "t", "p", "id", "ts", "v", "tp", "e", "o"]);
    let frame = loop {
        let frame = json_sub.read_frame(IO_LIMIT).expect("a frame");
        if frame.opcode() == TEXT && frame.payload.starts_with(br#"{"c":"U""#) {
            break frame;
        }
    };
    signing::verify(&key, &frame.payload).expect("the JSON publication is signed");

    client.send_mp(&ping_mp(1));
    let pong = loop {
        let frame = client.raw.read_frame(IO_LIMIT).expect("a PONG");
        if frame.payload.starts_with(br#"{"c":"WSE","t":"PONG""#) {
            break frame;
        }
    };
    signing::verify(&key, &pong.payload).expect("PONG stays signed JSON text");
}

#[test]
fn plaintext_msgpack_is_refused_when_signatures_are_required() {
    const SECRET: &str = "signing-secret-for-tests-0123456789";
    let server = Server::start(&["--signing-secret", SECRET, "--require-signed-inbound"]);
    let (mut client, _) = MpClient::open(server.addr, MSGPACK);
    client.send_mp(&subscribe_mp(&["x"]));
    let refusal = client.next_mp();
    assert_eq!(mp::at(&refusal, &["p", "code"]).and_then(Mp::as_str), Some("BAD_SIGNATURE"));
    assert!(server.metric("wse_security_events_total{kind=\"bad_signature\"}") >= 1.0);
}

#[test]
fn topics_in_the_query_and_filters_work_on_msgpack_connections() {
    let server = Server::start(&["--allow-client-publish"]);
    let (mut client, _) = MpClient::open(server.addr, MSGPACK);
    let criteria = map(vec![("p.n", map(vec![("$gte", Mp::from(2))]))]);
    let request = map(vec![
        ("t", Mp::from("subscription_update")),
        (
            "p",
            map(vec![
                ("action", Mp::from("subscribe")),
                ("topics", Mp::Array(vec![Mp::from("f")])),
                ("filters", map(vec![("f", criteria)])),
            ]),
        ),
    ]);
    client.send_mp(&request);
    let answer = client.next_mp();
    let filtered = mp::at(&answer, &["p", "filtered_topics"]).map(mp::strings);
    assert_eq!(filtered, Some(vec!["f".to_owned()]), "{answer}");

    let (mut publisher, _) = RawClient::open_wse(server.addr, "/wse");
    for n in 0..4 {
        publisher.publish("f", &format!(r#"{{"n":{n}}}"#));
    }
    for n in [2, 3] {
        let value = client.next_mp();
        assert_eq!(mp::at(&value, &["p", "n"]).and_then(Mp::as_u64), Some(n));
        assert_eq!(get(&value, "o").and_then(Mp::as_u64), Some(n), "offsets jump over filtered");
    }
    client.expect_silence(Duration::from_millis(200));
}

#[test]
fn a_shard_encodes_for_itself_when_a_publication_came_without_msgpack() {
    // The owner looks at the msgpack connection count when it stamps; a msgpack connection
    // that opens on another shard while the publication is on the ring gets it encoded by
    // its own shard. Provoked here by opening msgpack subscribers while a flood runs, each
    // the only msgpack connection of the server while it lives.
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, mut publisher) = (stop.clone(), ws_connect_wse(&server, "/wse"));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                ws_send(&mut publisher, &publish_json("race", r#"{"n":1}"#));
            }
        })
    };
    let owner = |server: &Server| {
        let on =
            |shard: &str| server.metric(&format!("wse_publications_total{{shard=\"{shard}\"}}"));
        if on("0") > 0.0 {
            "1"
        } else {
            "0"
        }
    };
    let mut opened = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    let fallbacks = loop {
        let (mut client, _) = MpClient::open(server.addr, "/wse?format=msgpack&topics=race");
        assert_eq!(str_at(&client.next_mp(), "t"), Some("subscription_update"));
        for _ in 0..3 {
            let publication = client.next_mp();
            assert_eq!(str_at(&publication, "tp"), Some("race"), "always M:, never JSON");
        }
        drop(client);
        opened += 1;
        server.wait_metric("wse_msgpack_connections", IO_LIMIT, |v| v == 0.0);
        let other = owner(&server);
        let encoded = server.metric(&format!("wse_msgpack_encoded_total{{shard=\"{other}\"}}"));
        if encoded > 0.0 || Instant::now() >= deadline {
            break encoded;
        }
    };
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    eprintln!("{opened} msgpack subscribers opened; the non-owner shard encoded {fallbacks}");
    assert!(fallbacks > 0.0, "the non-owner shard never had to encode in {opened} tries");
}
