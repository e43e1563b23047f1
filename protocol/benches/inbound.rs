//! Reading a client message as the engine does before it hands it to the application:
//! [`envelope::scan_inbound`] (validate, read the type, build nothing) beside
//! [`envelope::parse_inbound`] (the whole document, which only the messages the engine
//! answers need), for a small message and for one with a 16 KiB string.
//!
//! Run: `cargo bench -p wse-protocol --bench inbound`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput};
use wse_protocol::envelope;

/// `{"t":"m","p":{"n":…,"pad":"…"}}` of about `size` bytes, the load benchmark's message.
fn message(size: usize) -> Vec<u8> {
    let pad = "p".repeat(size.saturating_sub(36).max(1));
    format!(r#"{{"t":"m","p":{{"n":123456,"pad":"{pad}"}}}}"#).into_bytes()
}

fn inbound(c: &mut Criterion) {
    let mut group = c.benchmark_group("inbound");
    for size in [64, 16 * 1024] {
        let text = message(size);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("scan", size), &text, |b, text| {
            b.iter(|| envelope::scan_inbound(black_box(text)).map(|h| h.start))
        });
        group.bench_with_input(BenchmarkId::new("parse", size), &text, |b, text| {
            b.iter(|| envelope::parse_inbound(black_box(text)).map(|m| m.t.len()))
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    inbound(&mut criterion);
    criterion.final_summary();
}
