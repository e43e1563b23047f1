//! Loopback tests of subscription filters (PROTOCOL.md §7 "Filters", issue #4): every
//! operator end to end on a topic with mixed publications, over two shards; the answer's
//! `filtered_topics`; bad criteria failing their topic; replacing, keeping and dropping a
//! filter; globs; the `wse_filtered_out_total` counter.

mod common;

use std::time::Duration;

use common::json::Value;
use common::*;

/// Mixed publications of topic `mix`, in order; `n` is also the offset in a fresh topic.
const MIX: [&str; 5] = [
    r#"{"n":0,"kind":"buy","price":10,"sym":"AAPL","tags":["a","b"]}"#,
    r#"{"n":1,"kind":"sell","price":20.5,"sym":"MSFT","tags":["c"]}"#,
    r#"{"n":2,"kind":"buy","price":30,"sym":"AMZN"}"#,
    r#"{"n":3,"kind":"hold","price":"40","sym":"aapl","tags":[]}"#,
    r#"{"n":4,"kind":"sell","price":null,"sym":"GOOG","tags":["a"]}"#,
];

/// The last publication; every subscriber's criteria let it through, so each knows when the
/// run is over.
const END: &str = r#"{"end":true}"#;

/// Criteria and the `n` of the publications of [`MIX`] they let through.
const TABLE: [(&str, &[u64]); 19] = [
    (r#"{"p.kind":"buy"}"#, &[0, 2]),
    (r#"{"p.price":{"$eq":20.5}}"#, &[1]),
    (r#"{"p.kind":{"$ne":"buy"}}"#, &[1, 3, 4]),
    (r#"{"p.price":{"$gt":15}}"#, &[1, 2]),
    (r#"{"p.price":{"$lt":25}}"#, &[0, 1]),
    (r#"{"p.price":{"$gte":30}}"#, &[2]),
    (r#"{"p.price":{"$lte":10}}"#, &[0]),
    (r#"{"p.sym":{"$in":["MSFT","GOOG"]}}"#, &[1, 4]),
    (r#"{"p.sym":{"$nin":["MSFT","GOOG"]}}"#, &[0, 2, 3]),
    (r#"{"p.sym":{"$regex":"^A"}}"#, &[0, 2]),
    (r#"{"p.tags":{"$exists":false}}"#, &[2]),
    (r#"{"p.tags":{"$contains":"a"}}"#, &[0, 4]),
    (r#"{"p.sym":{"$startswith":"AA"}}"#, &[0]),
    (r#"{"p.sym":{"$endswith":"OG"}}"#, &[4]),
    (r#"{"$and":[{"p.kind":"sell"},{"p.price":{"$gt":1}}]}"#, &[1]),
    (r#"{"$or":[{"p.kind":"hold"},{"p.sym":"GOOG"}]}"#, &[3, 4]),
    (r#"{"tp":"mix","o":{"$gte":2,"$lt":4}}"#, &[2, 3]),
    (r#"{"p.price":null}"#, &[4]),
    (r#"{"p.sym":{"$regex":"(?i)^aapl$"},"p.n":{"$lte":3}}"#, &[0, 3]),
];

/// A `subscription_update` subscribing `topics`, with `filters` (JSON text) when given.
fn subscribe_text(topics: &[&str], filters: Option<&str>) -> String {
    let list: Vec<String> = topics.iter().map(|t| json::quote(t)).collect();
    let filters = filters.map(|f| format!(r#","filters":{f}"#)).unwrap_or_default();
    format!(
        r#"{{"t":"subscription_update","p":{{"action":"subscribe","topics":[{}]{filters}}}}}"#,
        list.join(",")
    )
}

/// Subscribes `client` and returns the answer's payload.
fn subscribe(client: &mut RawClient, topics: &[&str], filters: Option<&str>) -> Value {
    client.send_text(&subscribe_text(topics, filters));
    let answer = client.next_json(IO_LIMIT);
    assert_eq!(answer.str_at("t"), Some("subscription_update"), "{answer:?}");
    answer.get("p").cloned().expect("payload")
}

fn strings_at(p: &Value, key: &str) -> Vec<String> {
    p.get(key).map(Value::strings).unwrap_or_default()
}

/// The `n` of every publication up to and including the end marker (which has no `n`).
fn received_until_end(client: &mut RawClient) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let value = client.next_json(IO_LIMIT);
        let data = value.get("p").expect("a publication payload");
        if data.get("end").is_some() {
            return seen;
        }
        seen.push(data.num_at("n").expect("n") as u64);
    }
}

fn publish_mix(server: &Server) {
    let mut publisher = ws_connect_wse(server, "/wse");
    for data in MIX.iter().chain([&END]) {
        ws_send(&mut publisher, &publish_json("mix", data));
    }
}

#[test]
fn every_operator_filters_a_topic_of_mixed_publications() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let mut subscribers: Vec<RawClient> = TABLE
        .iter()
        .map(|(criteria, _)| {
            let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
            let filters = format!(r#"{{"mix":{{"$or":[{criteria},{{"p.end":true}}]}}}}"#);
            let p = subscribe(&mut client, &["mix"], Some(&filters));
            assert_eq!(strings_at(&p, "success_topics"), ["mix"], "{criteria}: {p:?}");
            assert_eq!(strings_at(&p, "filtered_topics"), ["mix"], "{criteria}: {p:?}");
            client
        })
        .collect();
    let (mut unfiltered, _) = RawClient::open_wse(server.addr, "/wse");
    let p = subscribe(&mut unfiltered, &["mix"], None);
    assert_eq!(strings_at(&p, "filtered_topics"), [] as [&str; 0]);
    let metrics = server.metrics();
    let on = |shard: &str| metric_value(&metrics, &format!("wse_connections{{shard=\"{shard}\"}}"));
    assert!(on("0") > 0.0 && on("1") > 0.0, "filtered subscribers on both shards");

    publish_mix(&server);
    for (client, (criteria, expected)) in subscribers.iter_mut().zip(TABLE) {
        assert_eq!(received_until_end(client), expected, "{criteria}");
    }
    assert_eq!(received_until_end(&mut unfiltered), [0, 1, 2, 3, 4]);

    let kept_back: usize = TABLE.iter().map(|(_, expected)| MIX.len() - expected.len()).sum();
    let counted = server.wait_metric("wse_filtered_out_total", IO_LIMIT, |v| v >= kept_back as f64);
    assert_eq!(counted, kept_back as f64);
}

#[test]
fn bad_criteria_fail_their_topic_only() {
    let server = Server::start(&[]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let bad = [
        r#"{"p.x":{"$foo":1}}"#,
        r#"{"p.x":{"$regex":"("}}"#,
        r#"{"p.x":{"$in":3}}"#,
        r#""not an object""#,
        r#"{"$and":[]}"#,
        r#"{"p..x":1}"#,
    ];
    for criteria in bad {
        let filters = format!(r#"{{"bad":{criteria},"good":{{"p.x":1}}}}"#);
        let p = subscribe(&mut client, &["bad", "good", "plain"], Some(&filters));
        assert_eq!(strings_at(&p, "success_topics"), ["good", "plain"], "{criteria}");
        assert_eq!(strings_at(&p, "failed_topics"), ["bad"], "{criteria}");
        let reason = p.get("errors").and_then(|e| e.str_at("bad"));
        assert_eq!(reason, Some("INVALID_FILTER"), "{criteria}");
        assert_eq!(strings_at(&p, "filtered_topics"), ["good"], "{criteria}");
    }
    // A filters value that is not an object makes the whole request invalid.
    client.send_text(&subscribe_text(&["x"], Some("[1]")));
    let error = client.next_json(IO_LIMIT);
    assert_eq!(error.get("p").and_then(|p| p.str_at("code")), Some("INVALID_MESSAGE"));
}

#[test]
fn a_filter_is_replaced_kept_or_dropped_by_later_subscribes() {
    // One shard, so that the bystander below shares the client's index.
    let server = Server::start(&["--shards", "1", "--allow-client-publish"]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let (mut publisher, _) = RawClient::open_wse(server.addr, "/wse");
    // A second subscriber keeps the topic's index entry alive through the unsubscribe below.
    let bystander = LiveClient::open(server.addr, "/wse");
    bystander.subscribe(&["mix"]);
    let mut round = |client: &mut RawClient, expected: &[u64]| {
        for data in MIX.iter().chain([&END]) {
            publisher.publish("mix", data);
        }
        assert_eq!(received_until_end(client), expected);
    };
    let with_end = |criteria: &str| format!(r#"{{"mix":{{"$or":[{criteria},{{"p.end":true}}]}}}}"#);

    let p = subscribe(&mut client, &["mix"], Some(&with_end(r#"{"p.kind":"buy"}"#)));
    assert_eq!(strings_at(&p, "filtered_topics"), ["mix"]);
    round(&mut client, &[0, 2]);

    // Replaced.
    subscribe(&mut client, &["mix"], Some(&with_end(r#"{"p.kind":"sell"}"#)));
    round(&mut client, &[1, 4]);

    // Kept when the request names no filter for the topic (a recovery re-subscribe).
    let p = subscribe(&mut client, &["mix"], None);
    assert_eq!(strings_at(&p, "filtered_topics"), ["mix"]);
    round(&mut client, &[1, 4]);

    // `{}` drops it.
    let p = subscribe(&mut client, &["mix"], Some(r#"{"mix":{}}"#));
    assert_eq!(strings_at(&p, "filtered_topics"), [] as [&str; 0]);
    round(&mut client, &[0, 1, 2, 3, 4]);

    // A bad filter leaves the subscription as it was.
    subscribe(&mut client, &["mix"], Some(&with_end(r#"{"p.kind":"hold"}"#)));
    let p = subscribe(&mut client, &["mix"], Some(r#"{"mix":{"$bad":1}}"#));
    assert_eq!(strings_at(&p, "failed_topics"), ["mix"]);
    round(&mut client, &[3]);

    // Unsubscribing drops the filter with the subscription.
    client.subscribe("unsubscribe", &["mix"]);
    let p = subscribe(&mut client, &["mix"], None);
    assert_eq!(strings_at(&p, "filtered_topics"), [] as [&str; 0]);
    round(&mut client, &[0, 1, 2, 3, 4]);
}

#[test]
fn glob_subscriptions_carry_filters_and_any_matching_subscription_delivers_once() {
    let server = Server::start(&["--shards", "2", "--allow-client-publish"]);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
    let filters = r#"{"px.*":{"p.v":{"$gt":10}},"px.a":{"p.v":{"$lt":0}}}"#;
    let p = subscribe(&mut client, &["px.*", "px.a"], Some(filters));
    assert_eq!(strings_at(&p, "filtered_topics"), ["px.*", "px.a"]);

    let mut publisher = ws_connect_wse(&server, "/wse");
    let sends = [("px.a", 5), ("px.a", 50), ("px.a", -5), ("px.b", 5), ("px.b", 50)];
    for (topic, v) in sends {
        ws_send(&mut publisher, &publish_json(topic, &format!(r#"{{"v":{v}}}"#)));
    }
    let mut got: Vec<(String, i64)> = (0..3)
        .map(|_| {
            let value = client.next_json(IO_LIMIT);
            let v = value.get("p").and_then(|p| p.num_at("v")).expect("v") as i64;
            (value.str_at("tp").expect("tp").to_owned(), v)
        })
        .collect();
    got.sort();
    let want = [("px.a".to_owned(), -5), ("px.a".to_owned(), 50), ("px.b".to_owned(), 50)];
    assert_eq!(got, want, "each publication once, if any subscription admits it");
    client.expect_silence(Duration::from_millis(300));
    let kept_back = server.wait_metric("wse_filtered_out_total", IO_LIMIT, |v| v >= 2.0);
    assert_eq!(kept_back, 2.0);
}

#[test]
fn filters_go_with_the_connection() {
    let server = Server::start(&["--allow-client-publish"]);
    {
        let (mut client, _) = RawClient::open_wse(server.addr, "/wse");
        subscribe(&mut client, &["gone"], Some(r#"{"gone":{"p.n":1}}"#));
    }
    server.wait_metric("wse_connections", IO_LIMIT, |v| v == 0.0);
    assert_eq!(server.wait_metric("wse_subscriptions", IO_LIMIT, |v| v == 0.0), 0.0);
    let (mut client, _) = RawClient::open_wse(server.addr, "/wse?topics=gone");
    client.next_json(IO_LIMIT);
    client.publish("gone", r#"{"n":2}"#);
    let value = client.next_json(IO_LIMIT);
    assert_eq!(value.get("p").and_then(|p| p.num_at("n")), Some(2.0));
    assert_eq!(server.metric("wse_filtered_out_total"), 0.0);
}
