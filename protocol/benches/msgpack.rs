//! Cost of the msgpack and filter paths next to the JSON work they add to: writing a
//! publication's JSON envelope (done once per publication), converting it to an `M:` body
//! (once per publication when msgpack connections exist; beside it, parsing the same JSON
//! with sonic-rs, and parsing plus walking the tree, the conversion `transcode` replaced),
//! reading a client message as
//! msgpack and as JSON, and judging a publication against a filter (one parse per
//! publication and shard, one match per filtered subscriber).
//!
//! Run: `cargo bench -p wse-protocol --bench msgpack`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use sonic_rs::JsonValueTrait;
use wse_protocol::envelope::{self, Priority, PublicationMeta};
use wse_protocol::filter::{self, Filter, RegexCache};
use wse_protocol::msgpack;

/// A small trading update, about the size of most real publications.
const SMALL: &str = r#"{"sym":"AAPL","bid":189.52,"ask":189.55,"qty":300,"venue":"XNAS"}"#;

/// A publication envelope around `payload`, as the owner shard writes it.
fn envelope_of(payload: &str) -> Vec<u8> {
    let meta = PublicationMeta {
        topic: "prices.AAPL",
        event_type: Some("quote"),
        id: "0192c7a8-7e10-7cc3-9d4e-1c2b3a4d5e6f",
        now_ms: 1_768_473_000_123,
        epoch: 0x2a,
        offset: 123_456,
        pri: Priority::Normal,
    };
    let mut out = Vec::new();
    envelope::publication(&meta, payload, &mut out);
    out
}

/// About 1.4 KB of payload: a list of 24 small objects.
fn large_payload() -> String {
    let rows: Vec<String> = (0..24)
        .map(|i| format!(r#"{{"id":{i},"name":"row-{i}","price":{i}.25,"tags":["a","b"]}}"#))
        .collect();
    format!(r#"{{"rows":[{}],"total":24}}"#, rows.join(","))
}

fn publications(c: &mut Criterion) {
    let large = large_payload();
    let mut group = c.benchmark_group("publication");
    for (name, payload) in [("small", SMALL), ("large", large.as_str())] {
        let json = envelope_of(payload);
        group.throughput(Throughput::Bytes(json.len() as u64));
        let mut out = Vec::with_capacity(json.len() + 64);
        group.bench_with_input(BenchmarkId::new("json_envelope", name), payload, |b, p| {
            b.iter(|| {
                out.clear();
                let meta = PublicationMeta {
                    topic: "prices.AAPL",
                    event_type: Some("quote"),
                    id: "0192c7a8-7e10-7cc3-9d4e-1c2b3a4d5e6f",
                    now_ms: 1_768_473_000_123,
                    epoch: 0x2a,
                    offset: 123_456,
                    pri: Priority::Normal,
                };
                envelope::publication(&meta, black_box(p), &mut out);
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("sonic_parse", name), &json, |b, json| {
            b.iter(|| {
                let value: sonic_rs::Value = sonic_rs::from_slice(black_box(json)).expect("JSON");
                black_box(value.is_object())
            })
        });
        group.bench_with_input(BenchmarkId::new("sonic_tree_walk", name), &json, |b, json| {
            b.iter(|| {
                out.clear();
                let value: sonic_rs::Value = sonic_rs::from_slice(black_box(json)).expect("JSON");
                tree_walk(&value, &mut out);
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("to_msgpack", name), &json, |b, json| {
            b.iter(|| {
                out.clear();
                msgpack::from_envelope(black_box(json), &mut out).expect("converts");
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// The other way to convert: walk the tree sonic-rs parsed (what `transcode` replaced).
fn tree_walk(value: &sonic_rs::Value, out: &mut Vec<u8>) {
    use sonic_rs::JsonContainerTrait;

    if let Some(s) = value.as_str() {
        rmp::encode::write_str(out, s).expect("Vec");
    } else if let Some(n) = value.as_u64() {
        rmp::encode::write_uint(out, n).expect("Vec");
    } else if let Some(n) = value.as_i64() {
        rmp::encode::write_sint(out, n).expect("Vec");
    } else if let Some(f) = value.as_f64() {
        rmp::encode::write_f64(out, f).expect("Vec");
    } else if let Some(b) = value.as_bool() {
        rmp::encode::write_bool(out, b).expect("Vec");
    } else if let Some(items) = value.as_array() {
        rmp::encode::write_array_len(out, items.len() as u32).expect("Vec");
        items.iter().for_each(|item| tree_walk(item, out));
    } else if let Some(object) = value.as_object() {
        rmp::encode::write_map_len(out, object.len() as u32).expect("Vec");
        for (key, member) in object.iter() {
            rmp::encode::write_str(out, key).expect("Vec");
            tree_walk(member, out);
        }
    } else {
        rmp::encode::write_nil(out).expect("Vec");
    }
}

fn inbound(c: &mut Criterion) {
    let json = concat!(
        r#"{"t":"publish","p":{"topic":"prices.AAPL","#,
        r#""data":{"sym":"AAPL","bid":189.52,"ask":189.55,"qty":300}},"cid":"c-1"}"#
    )
    .as_bytes();
    let mut packed = Vec::new();
    msgpack::from_json(json, &mut packed).expect("converts");
    let mut group = c.benchmark_group("inbound");
    group.bench_function("json", |b| {
        b.iter(|| black_box(envelope::parse_inbound(black_box(json)).expect("parses").t.len()))
    });
    group.bench_function("msgpack", |b| {
        b.iter(|| {
            let inbound = msgpack::parse_inbound(black_box(&packed), usize::MAX).expect("parses");
            black_box(inbound.t.len())
        })
    });
    // What a message the engine hands on costs: its type alone, the msgpack checked whole.
    group.bench_function("json_scan", |b| {
        b.iter(|| black_box(envelope::scan_inbound(black_box(json)).expect("scans").t.len()))
    });
    group.bench_function("msgpack_scan", |b| {
        b.iter(|| black_box(msgpack::scan_inbound(black_box(&packed)).expect("scans").t.len()))
    });
    group.finish();
}

fn filters(c: &mut Criterion) {
    let json = envelope_of(SMALL);
    let criteria: sonic_rs::Value = sonic_rs::from_str(
        r#"{"p.sym":{"$in":["AAPL","MSFT"]},"p.bid":{"$gt":100},"p.venue":{"$regex":"^XN"}}"#,
    )
    .expect("JSON");
    let mut regexes = RegexCache::new();
    let compiled = Filter::compile(&criteria, &mut regexes).expect("compiles");
    let document = filter::parse_document(&json).expect("parses");
    let mut group = c.benchmark_group("filter");
    group.bench_function("parse_document", |b| {
        b.iter(|| black_box(filter::parse_document(black_box(&json)).is_ok()))
    });
    group.bench_function("match", |b| b.iter(|| black_box(compiled.matches(black_box(&document)))));
    group.bench_function("compile", |b| {
        b.iter(|| black_box(Filter::compile(black_box(&criteria), &mut regexes).is_ok()))
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    publications(&mut c);
    inbound(&mut c);
    filters(&mut c);
    c.final_summary();
}
