//! One topic's subscribers read by a few threads that check every offset, and the
//! publishing connection that drives them.
//!
//! Place: the client side of the fan-out benchmarks (`fanoutbench` for wse-server's wire
//! modes, `loadbench fanout` for wse-server beside its peers). Subscribers are plain
//! sockets polled by [`Readers`]; each expects the topic's offsets `0, 1, 2, …` exactly once
//! and in order, so anything lost, repeated or reordered is counted. The [`Publisher`] sends
//! `publish` messages whose data carries the publication number and the time it was sent
//! ([`now_ns`] of this process), so the readers can also record publish-to-receive latency in
//! an HDR histogram. Frames may be JSON text, `C:` (zlib) or `M:` (msgpack).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use crate::host;
use crate::ws::{self, Client, Dial, Keys, TEXT};

/// Subscribers' sockets, read by a few threads; each checks its offsets.
pub struct Readers {
    /// Next offset each subscriber expects (= publications it received in order).
    next: Arc<Vec<AtomicU64>>,
    /// Offsets that were not the expected one (gaps, repeats), per subscriber.
    errors: Arc<Vec<AtomicU64>>,
    /// Subscription answers seen.
    subscribed: Arc<AtomicU64>,
    /// Subscribers no longer read (index into `next`).
    stalled: Arc<Vec<AtomicBool>>,
    /// Whether publish-to-receive latency is being recorded.
    recording: Arc<AtomicBool>,
    /// One histogram per reader thread, in microseconds.
    latency: Vec<Arc<Mutex<Histogram<u64>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The publishing connection.
pub struct Publisher {
    stream: TcpStream,
    topic: String,
    pad: String,
    /// Publications sent so far; the next one is number `sent`.
    pub sent: u64,
    /// Bytes of publish frames written by the latest run.
    pub bytes_since_mark: u64,
    key: u32,
}

/// Nanoseconds since this process first asked; the clock of the `sent` stamps.
pub fn now_ns() -> u64 {
    let epoch = EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Writes a `subscription_update` for `topic` on every client (peers that have no
/// `?topics=` subscribe this way too); the answers are counted by [`Readers`].
pub fn subscribe_all(clients: &[Client], topic: &str) -> Result<(), String> {
    let text = format!(
        r#"{{"t":"subscription_update","p":{{"action":"subscribe","topics":["{topic}"]}}}}"#
    );
    let frame = ws::masked_text(text.as_bytes(), [0x51, 0x0b, 0x7e, 0xc4]);
    for client in clients {
        let mut stream = client.stream();
        stream.write_all(&frame).map_err(|e| format!("subscribe: {e}"))?;
    }
    Ok(())
}

impl Readers {
    /// Hands `clients` to `threads` reader threads, which start reading at once.
    pub fn start(clients: Vec<Client>, threads: usize) -> Result<Readers, String> {
        let n = clients.len();
        let threads = threads.max(1);
        let counters = || Arc::new((0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let mut readers = Readers {
            next: counters(),
            errors: counters(),
            subscribed: Arc::new(AtomicU64::new(0)),
            stalled: Arc::new((0..n).map(|_| AtomicBool::new(false)).collect()),
            recording: Arc::new(AtomicBool::new(false)),
            latency: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let mut shares: Vec<Vec<Sub>> = (0..threads).map(|_| Vec::new()).collect();
        for (index, client) in clients.into_iter().enumerate() {
            let (stream, buf) = client.into_parts();
            stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            shares[index % threads].push(Sub { index, stream, buf });
        }
        for share in shares {
            let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                .map_err(|e| format!("histogram: {e}"))?;
            let histogram = Arc::new(Mutex::new(histogram));
            readers.latency.push(Arc::clone(&histogram));
            let shared = Shared {
                next: Arc::clone(&readers.next),
                errors: Arc::clone(&readers.errors),
                subscribed: Arc::clone(&readers.subscribed),
                stalled: Arc::clone(&readers.stalled),
                recording: Arc::clone(&readers.recording),
                latency: histogram,
                stop: Arc::clone(&readers.stop),
            };
            readers.threads.push(std::thread::spawn(move || read_loop(share, &shared)));
        }
        Ok(readers)
    }

    /// Waits until `n` subscription answers arrived; the error says how many did.
    pub fn wait_subscribed(&self, n: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.subscribed.load(Ordering::Relaxed) < n {
            if Instant::now() > deadline {
                let seen = self.subscribed.load(Ordering::Relaxed);
                return Err(format!("only {seen} of {n} subscriptions answered"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The lowest next offset among the subscribers that are read.
    pub fn slowest(&self) -> u64 {
        let live = self.next.iter().zip(self.stalled.iter());
        live.filter(|(_, s)| !s.load(Ordering::Relaxed))
            .map(|(n, _)| n.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Waits (bounded) until every read subscriber has `count` publications.
    pub fn wait_for(&self, count: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.slowest() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Publications received in order, over all subscribers.
    pub fn delivered(&self) -> u64 {
        self.next.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Publications received in order by the subscribers `subscribers` (indices in the
    /// order [`Readers::start`] was given them).
    pub fn delivered_to(&self, subscribers: std::ops::Range<usize>) -> u64 {
        self.next.get(subscribers).map_or(0, |n| n.iter().map(|n| n.load(Ordering::Relaxed)).sum())
    }

    /// Publications not received in order by read subscribers.
    pub fn lost(&self, published: u64) -> u64 {
        let live = self.next.iter().zip(self.stalled.iter());
        let missing: u64 = live
            .filter(|(_, s)| !s.load(Ordering::Relaxed))
            .map(|(n, _)| published.saturating_sub(n.load(Ordering::Relaxed)))
            .sum();
        missing + self.errors.iter().map(|e| e.load(Ordering::Relaxed)).sum::<u64>()
    }

    /// Stops reading subscriber `index` (its socket fills, then the server's queue).
    pub fn stall(&self, index: usize) {
        self.stalled[index].store(true, Ordering::Relaxed);
    }

    /// Starts or stops recording publish-to-receive latency.
    pub fn record_latency(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    /// Every thread's latency histogram merged, in microseconds.
    pub fn latency(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid bounds");
        for part in &self.latency {
            let part = part.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Same bounds on both sides: adding cannot fail.
            let _ = all.add(&*part);
        }
        all
    }

    /// Stops and joins the reader threads; the sockets close.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Publisher {
    /// Opens the publishing connection and reads its first frame (`server_ready`).
    pub fn open(
        dial: &Dial,
        topic: &str,
        payload: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut keys = Keys::new().map_err(|e| e.to_string())?;
        let handshake = ws::Handshake::dial(dial, 0, &mut keys, timeout);
        let mut client = handshake.and_then(ws::Handshake::finish).map_err(|e| e.to_string())?;
        client.read_frame().map_err(|e| e.to_string())?;
        // The server's answers (heartbeats) are never read; the socket buffer keeps them.
        let (stream, _) = client.into_parts();
        Ok(Publisher {
            stream,
            topic: topic.to_owned(),
            pad: "x".repeat(payload),
            sent: 0,
            bytes_since_mark: 0,
            key: 0x9e37_79b9,
        })
    }

    /// Publishes for `duration`, never more than `window` ahead of the slowest reader, and
    /// ending early once `bytes` were written; samples `VmRSS` of `pid` (when not 0) every
    /// 50 ms and returns the largest sample.
    pub fn run_sampling(
        &mut self,
        readers: &Readers,
        duration: Duration,
        window: u64,
        pid: u32,
        bytes: u64,
    ) -> Result<Option<u64>, String> {
        let end = Instant::now() + duration;
        let mut max_rss = None;
        let mut sampled = Instant::now();
        self.bytes_since_mark = 0;
        let mut batch = Vec::new();
        while Instant::now() < end && self.bytes_since_mark < bytes {
            if pid != 0 && sampled.elapsed() >= Duration::from_millis(50) {
                max_rss = max_rss.max(host::vm_rss_kib(pid));
                sampled = Instant::now();
            }
            let room = (readers.slowest() + window).saturating_sub(self.sent);
            if room == 0 {
                std::thread::yield_now();
                continue;
            }
            batch.clear();
            for _ in 0..room.min(16) {
                self.push_publication(&mut batch);
            }
            self.write(&batch)?;
        }
        if pid != 0 {
            max_rss = max_rss.max(host::vm_rss_kib(pid));
        }
        Ok(max_rss)
    }

    /// Publishes `rate` publications per second for `duration`, each at its own time (no
    /// bursts), whatever the readers do.
    pub fn run_paced(&mut self, duration: Duration, rate: f64) -> Result<(), String> {
        let started = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let mut due = started;
        let mut frame = Vec::new();
        while due < started + duration {
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            }
            frame.clear();
            self.push_publication(&mut frame);
            self.write(&frame)?;
            due += interval;
        }
        Ok(())
    }

    /// Appends the next publication's frame, stamped with its number and [`now_ns`].
    fn push_publication(&mut self, out: &mut Vec<u8>) {
        let text = format!(
            r#"{{"t":"publish","p":{{"topic":"{}","data":{{"n":{},"sent":{},"pad":"{}"}}}}}}"#,
            self.topic,
            self.sent,
            now_ns(),
            self.pad
        );
        self.key = self.key.rotate_left(5) ^ 0x2545_f491;
        ws::push_masked(out, TEXT, text.as_bytes(), self.key.to_be_bytes());
        self.sent += 1;
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("publish: {e}"))?;
        self.bytes_since_mark += bytes.len() as u64;
        Ok(())
    }
}

/// One subscriber as its reader thread holds it.
struct Sub {
    index: usize,
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What the reader threads share with [`Readers`].
struct Shared {
    next: Arc<Vec<AtomicU64>>,
    errors: Arc<Vec<AtomicU64>>,
    subscribed: Arc<AtomicU64>,
    stalled: Arc<Vec<AtomicBool>>,
    recording: Arc<AtomicBool>,
    latency: Arc<Mutex<Histogram<u64>>>,
    stop: Arc<AtomicBool>,
}

/// Waits on this thread's sockets (one epoll set, so a wake-up costs what is ready, not
/// what is open) and parses what arrives, until `stop`.
fn read_loop(mut subs: Vec<Sub>, shared: &Shared) {
    let mut chunk = vec![0u8; 64 * 1024];
    // Bytes read during the upgrade may already hold the subscription answer.
    for sub in &mut subs {
        parse_frames(sub, shared);
    }
    let Ok(epoll) = Epoll::new(EpollCreateFlags::empty()) else { return };
    for (slot, sub) in subs.iter().enumerate() {
        let _ = epoll.add(&sub.stream, EpollEvent::new(EpollFlags::EPOLLIN, slot as u64));
    }
    let mut events = vec![EpollEvent::empty(); EVENTS];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(ready) = epoll.wait(&mut events, 50u16) else { continue };
        for event in &events[..ready] {
            let Ok(slot) = usize::try_from(event.data()) else { continue };
            let Some(sub) = subs.get_mut(slot) else { continue };
            if shared.stalled[sub.index].load(Ordering::Relaxed) {
                // No longer read: its socket fills, then the server's queue for it.
                let _ = epoll.delete(&sub.stream);
                continue;
            }
            let open = loop {
                match sub.stream.read(&mut chunk) {
                    Ok(0) => break false,
                    Ok(n) => sub.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                    Err(_) => break false,
                }
            };
            parse_frames(sub, shared);
            if !open {
                // Closed by the server: stop waiting on it (its missing offsets count).
                let _ = epoll.delete(&sub.stream);
            }
        }
    }
}

/// Checks every complete frame in `sub`'s buffer and keeps the rest.
fn parse_frames(sub: &mut Sub, shared: &Shared) {
    let mut used = 0;
    let recording = shared.recording.load(Ordering::Relaxed);
    while let Ok(Some((frame, n))) = ws::parse_frame(&sub.buf[used..]) {
        used += n;
        match stamp_of(&frame.payload) {
            Some(Stamp::Offset { offset, sent }) => {
                let next = &shared.next[sub.index];
                if offset != next.load(Ordering::Relaxed) {
                    shared.errors[sub.index].fetch_add(1, Ordering::Relaxed);
                }
                next.store(offset + 1, Ordering::Relaxed);
                if let (true, Some(sent)) = (recording, sent) {
                    let micros = now_ns().saturating_sub(sent) / 1000;
                    let mut histogram =
                        shared.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    histogram.saturating_record(micros.max(1));
                }
            }
            Some(Stamp::Subscribed) => {
                shared.subscribed.fetch_add(1, Ordering::Relaxed);
            }
            None => {}
        }
    }
    sub.buf.drain(..used);
}

/// What a frame told the reader.
enum Stamp {
    /// A publication with this offset, sent at `sent` ([`now_ns`]) when it says.
    Offset { offset: u64, sent: Option<u64> },
    /// The answer to the subscription.
    Subscribed,
}

/// The stamp of a publication frame in any of the three formats.
fn stamp_of(payload: &[u8]) -> Option<Stamp> {
    if let Some(body) = payload.strip_prefix(b"C:") {
        // One decompressor and output buffer per reader thread: a fresh 1 MiB buffer per
        // frame made the readers, not the server, the bottleneck of the compression mode.
        return INFLATE.with(|cell| {
            let (inflater, out) = &mut *cell.borrow_mut();
            let n = inflater.zlib_decompress(body, out).ok()?;
            json_stamp(&out[..n])
        });
    }
    if let Some(mut body) = payload.strip_prefix(b"M:") {
        let value = rmpv::decode::read_value(&mut body).ok()?;
        let get = |value: &rmpv::Value, key: &str| {
            let map = value.as_map()?;
            map.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.clone())
        };
        if get(&value, "t").as_ref().and_then(rmpv::Value::as_str) == Some("subscription_update") {
            return Some(Stamp::Subscribed);
        }
        let offset = get(&value, "o")?.as_u64()?;
        let sent = get(&value, "p").and_then(|p| get(&p, "sent")).and_then(|s| s.as_u64());
        return Some(Stamp::Offset { offset, sent });
    }
    json_stamp(payload)
}

thread_local! {
    /// A reader thread's zlib decompressor and its output buffer (the server's 1 MiB
    /// message limit).
    static INFLATE: std::cell::RefCell<(libdeflater::Decompressor, Vec<u8>)> =
        std::cell::RefCell::new((libdeflater::Decompressor::new(), vec![0u8; 1 << 20]));
}

/// The stamp of a JSON envelope: the numbers after `"o":` and `"sent":`, or a subscription
/// answer. The publisher's data holds no `"o":` key, so the last one is the envelope's.
fn json_stamp(text: &[u8]) -> Option<Stamp> {
    if is_subscription_answer(text) {
        return Some(Stamp::Subscribed);
    }
    let offset = number_after(text, br#""o":"#, true)?;
    Some(Stamp::Offset { offset, sent: number_after(text, br#""sent":"#, false) })
}

/// Whether `text` is the engine's `subscription_update` answer, with or without spaces.
fn is_subscription_answer(text: &[u8]) -> bool {
    let head = &text[..text.len().min(64)];
    head.windows(SUBSCRIPTION.len()).any(|w| w == SUBSCRIPTION)
        && head.starts_with(b"{\"c\":\"WSE\"")
}

/// The unsigned integer right after the first (or, with `last`, the last) `key` in `text`.
fn number_after(text: &[u8], key: &[u8], last: bool) -> Option<u64> {
    let mut found = text.windows(key.len());
    let at = if last { found.rposition(|w| w == key)? } else { found.position(|w| w == key)? };
    let digits = text[at + key.len()..].iter().skip_while(|b| **b == b' ');
    let mut n = 0u64;
    let mut any = false;
    for &d in digits.take_while(|b| b.is_ascii_digit()) {
        n = n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
        any = true;
    }
    any.then_some(n)
}

/// Ready sockets taken from epoll per wait.
const EVENTS: usize = 1024;
/// The process clock's origin for [`now_ns`].
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Largest latency the histograms hold, µs (a minute); larger values are clamped.
const LATENCY_MAX_US: u64 = 60_000_000;
/// The type of a subscription answer, as it appears in the envelope.
const SUBSCRIPTION: &[u8] = br#""t":"subscription_update""#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_and_send_times_of_every_peer_layout() {
        let ours = concat!(
            r#"{"c":"U","t":"bench","p":{"n":3,"sent":977,"pad":"x"},"#,
            r#""v":1,"tp":"bench","e":"0a","o":3}"#
        );
        let legacy = concat!(
            r#"{"tp":"bench","e":"ce","o":7,"c":"U","t": "bench", "#,
            r#""p": {"n": 7, "sent": 12, "pad": "x"}}"#
        );
        let (ours, legacy) = (ours.as_bytes(), legacy.as_bytes());
        assert!(matches!(json_stamp(ours), Some(Stamp::Offset { offset: 3, sent: Some(977) })));
        assert!(matches!(json_stamp(legacy), Some(Stamp::Offset { offset: 7, sent: Some(12) })));
        let answer = br#"{"c":"WSE","t":"subscription_update","p":{"success_topics":["bench"]}}"#;
        assert!(matches!(json_stamp(answer), Some(Stamp::Subscribed)));
        assert!(json_stamp(br#"{"c":"WSE","t":"ping","p":{}}"#).is_none());
    }
}
