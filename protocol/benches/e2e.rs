//! Cost of E2E frames on the hot path: sealing one serialised message into a reused buffer
//! (done once per E2E subscriber of a publication) and opening an inbound `E:` frame.
//!
//! Run: `cargo bench -p wse-protocol --bench e2e`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use wse_protocol::e2e::{IvPool, KeyExchange, SessionKeys};

/// Keys of a server and a client that agreed with each other.
fn keys() -> (SessionKeys, SessionKeys) {
    let server = KeyExchange::generate().expect("key generation");
    let client = KeyExchange::generate().expect("key generation");
    let server_public = server.public_key_b64();
    let s = server.agree(&client.public_key_b64()).expect("agreement");
    let c = client.agree(&server_public).expect("agreement");
    (s, c)
}

fn seal_and_open(c: &mut Criterion) {
    let (server, client) = keys();
    let mut group = c.benchmark_group("e2e");
    for size in [256usize, 4096] {
        let plaintext = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));

        let mut out = Vec::with_capacity(size + 64);
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| {
                out.clear();
                server.seal(black_box(p), &mut out).expect("seal");
                black_box(out.len())
            })
        });

        let mut pool = IvPool::new();
        group.bench_with_input(BenchmarkId::new("seal_with_pool", size), &plaintext, |b, p| {
            b.iter(|| {
                out.clear();
                server.seal_with(&mut pool, black_box(p), &mut out).expect("seal");
                black_box(out.len())
            })
        });

        let mut frame = Vec::new();
        server.seal(&plaintext, &mut frame).expect("seal");
        group.bench_with_input(BenchmarkId::new("open", size), &frame, |b, f| {
            b.iter(|| client.open(black_box(f)).expect("open"))
        });
        let mut scratch = frame.clone();
        group.bench_with_input(BenchmarkId::new("open_in_place", size), &frame, |b, f| {
            b.iter(|| {
                scratch.copy_from_slice(f);
                black_box(client.open_in_place(&mut scratch).expect("open").len())
            })
        });
    }
    group.finish();
}

fn key_agreement(c: &mut Criterion) {
    let client = KeyExchange::generate().expect("key generation").public_key_b64();
    c.bench_function("e2e/generate_and_agree", |b| {
        b.iter(|| {
            let server = KeyExchange::generate().expect("key generation");
            black_box(server.agree(black_box(&client)).expect("agreement"))
        })
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    seal_and_open(&mut c);
    key_agreement(&mut c);
    c.final_summary();
}
