//! Cost of compressing a publication: once for every subscriber (what the owner shard does:
//! one compression, both wire forms cut from it) against once per subscriber (what the
//! engine avoids), and of inflating a client's compressed message.
//!
//! Run: `cargo bench -p wse-protocol --bench compression`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use wse_protocol::deflate::{Deflater, Inflater};
use wse_protocol::frame::{Data, OpCode};

/// A publication's JSON of about `len` bytes, shaped like a market-data update.
fn publication(len: usize) -> Vec<u8> {
    let mut out = br#"{"c":"U","t":"prices","p":{"rows":["#.to_vec();
    let mut i = 0u32;
    while out.len() + 80 < len {
        let row = format!(
            r#"{{"sym":"S{:04}","bid":{}.{:02},"ask":{}.{:02},"vol":{}}},"#,
            i,
            100 + i % 37,
            i % 100,
            101 + i % 37,
            (i * 7) % 100,
            i * 131 % 9973
        );
        out.extend_from_slice(row.as_bytes());
        i += 1;
    }
    out.pop();
    let tail = r#"]},"id":"0190b8a2-7f3e-7c11-9a4b-5d6e7f809a1b","v":1,"tp":"prices","#;
    out.extend_from_slice(tail.as_bytes());
    out.extend_from_slice(br#""e":"1a2b3c4d","o":42}"#);
    out
}

fn compress_once_vs_per_subscriber(c: &mut Criterion) {
    let json = publication(4096);
    let mut deflater = Deflater::new(1).expect("level 1");
    let text = OpCode::Data(Data::Text);
    let mut group = c.benchmark_group("compression_4k");
    group.throughput(Throughput::Bytes(json.len() as u64));

    group.bench_function("once_both_frames", |b| {
        b.iter(|| {
            let compressed = deflater.compress(black_box(&json)).expect("shrinks");
            black_box((compressed.c_frame(), compressed.deflate_frame(text)))
        })
    });
    for subscribers in [10usize, 100] {
        group.bench_with_input(
            BenchmarkId::new("per_subscriber", subscribers),
            &subscribers,
            |b, &n| {
                b.iter(|| {
                    for _ in 0..n {
                        let compressed = deflater.compress(black_box(&json)).expect("shrinks");
                        black_box(compressed.c_frame());
                    }
                })
            },
        );
    }
    for level in [6u8, 9] {
        let mut slower = Deflater::new(level).expect("level");
        group.bench_with_input(BenchmarkId::new("once_at_level", level), &level, |b, _| {
            b.iter(|| black_box(slower.compress(black_box(&json)).expect("shrinks").c_frame()))
        });
    }

    let compressed = deflater.compress(&json).expect("shrinks");
    let raw = compressed.raw_deflate().to_vec();
    let mut inflater = Inflater::new(1 << 20);
    group.bench_function("inflate_message", |b| {
        b.iter(|| black_box(inflater.inflate_message(black_box(raw.clone()), true).expect("ok")))
    });
    group.finish();

    let ratio = compressed.c_payload_len() as f64 / json.len() as f64;
    println!(
        "4 KiB publication: {} bytes of JSON, C: payload {:.1} % of it",
        json.len(),
        ratio * 100.0
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    compress_once_vs_per_subscriber(&mut c);
    c.final_summary();
}
