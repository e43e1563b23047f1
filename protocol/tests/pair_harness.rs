//! Deterministic pair harness for the frame layer: a client side built on
//! `writer::encode_masked_frame` produces wire bytes, the server-side `reader::Reader` consumes
//! them, and every way of cutting the byte stream into reads must give the same events (or the
//! same error after the same events). Randomness comes from a fixed-seed LCG, so every run
//! tests the same inputs and a failure names the seed and the cut that broke it.

use wse_protocol::close::CloseFrame;
use wse_protocol::frame::OpCode;
use wse_protocol::reader::{Event, Reader, ReaderConfig};
use wse_protocol::writer::encode_masked_frame;
use wse_protocol::Error;

/// A tiny linear congruential generator (Knuth's MMIX constants); deterministic by design.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn key(&mut self) -> [u8; 4] {
        (self.next() as u32).to_be_bytes()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The client end: encodes frames with fresh random masking keys and records what the server
/// end must report for them.
struct Client {
    rng: Lcg,
    wire: Vec<u8>,
    expected: Vec<Event>,
}

impl Client {
    fn new(seed: u64) -> Self {
        Client { rng: Lcg(seed), wire: Vec::new(), expected: Vec::new() }
    }

    fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let key = self.rng.key();
        encode_masked_frame(OpCode::from(opcode), fin, false, payload, key, &mut self.wire);
    }

    /// A data message cut into fragments at `cuts`, with `pings` injected before fragment `i`.
    fn message(&mut self, text: bool, data: &[u8], cuts: &[usize], pings: &[(usize, &[u8])]) {
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|c| *c < data.len()));
        bounds.push(data.len());
        let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        for (i, piece) in pieces.iter().enumerate() {
            for (_, ping) in pings.iter().filter(|(at, _)| *at == i && i > 0) {
                self.control(0x9, ping);
            }
            let opcode = match (i, text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            self.frame(opcode, i + 1 == pieces.len(), piece);
        }
        let data = data.to_vec();
        self.expected.push(Event::Message { text, data, compressed: false });
    }

    fn control(&mut self, opcode: u8, payload: &[u8]) {
        self.frame(opcode, true, payload);
        self.expected.push(match opcode {
            0x9 => Event::Ping(payload.to_vec()),
            _ => Event::Pong(payload.to_vec()),
        });
    }

    fn close(&mut self, code: u16, reason: &str) {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(reason.as_bytes());
        self.frame(0x8, true, &body);
        let close = CloseFrame { code, reason: reason.to_owned() };
        self.expected.push(Event::Close(Some(close)));
    }
}

/// Feeds `wire` to a fresh reader in reads of the given sizes (the last read takes the rest).
fn feed_in_reads(
    cfg: ReaderConfig,
    wire: &[u8],
    sizes: impl IntoIterator<Item = usize>,
) -> (Vec<Event>, Result<(), Error>) {
    let mut reader = Reader::new(cfg);
    let mut events = Vec::new();
    let mut rest = wire;
    let mut sizes = sizes.into_iter();
    while !rest.is_empty() {
        let size = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (read, after) = rest.split_at(size);
        if let Err(err) = reader.feed(read, &mut events) {
            return (events, Err(err));
        }
        rest = after;
    }
    (events, Ok(()))
}

/// Checks one stream against its expected outcome for every single split point, byte-by-byte
/// reads and `random_rounds` random chunkings.
fn assert_every_cut(cfg: ReaderConfig, wire: &[u8], expected: &(Vec<Event>, Result<(), Error>)) {
    assert_eq!(&feed_in_reads(cfg, wire, []), expected, "whole stream in one read");
    assert_eq!(&feed_in_reads(cfg, wire, std::iter::repeat(1)), expected, "byte by byte");
    let mut rng = Lcg(7);
    for round in 0..40 {
        let max = [2, 5, 17, 200, 5000][round % 5];
        let sizes: Vec<usize> = (0..wire.len()).map(|_| 1 + rng.below(max)).collect();
        assert_eq!(&feed_in_reads(cfg, wire, sizes), expected, "random round {round}");
    }
}

/// Checks every two-read split of a short stream.
fn assert_every_split_point(
    cfg: ReaderConfig,
    wire: &[u8],
    expected: &(Vec<Event>, Result<(), Error>),
) {
    for at in 0..=wire.len() {
        assert_eq!(&feed_in_reads(cfg, wire, [at]), expected, "split at {at}");
    }
}

/// A short stream touching every kind of frame and every length encoding, ending in a Close.
fn mixed_stream(seed: u64) -> Client {
    let mut client = open_stream(seed);
    client.close(1000, "bye");
    client
}

/// [`mixed_stream`] without its Close.
fn open_stream(seed: u64) -> Client {
    let mut client = Client::new(seed);
    client.message(true, b"hello", &[], &[]);
    client.message(true, "𝄞 κόσμε".as_bytes(), &[1, 2, 3, 6], &[(1, b"p"), (3, b"")]);
    let binary: Vec<u8> = (0..300).map(|i| (i * 7) as u8).collect();
    client.message(false, &binary, &[126, 126, 200], &[(2, &[9; 125])]);
    client.message(true, b"", &[], &[]);
    client.control(0xa, b"unsolicited pong");
    client.message(false, b"ab", &[0, 0, 1], &[]);
    client
}

#[test]
fn mixed_stream_gives_same_events_for_every_split_point() {
    for seed in 1..4 {
        let client = mixed_stream(seed);
        let expected = (client.expected.clone(), Ok(()));
        assert_every_split_point(ReaderConfig::default(), &client.wire, &expected);
        assert_every_cut(ReaderConfig::default(), &client.wire, &expected);
    }
}

#[test]
fn large_messages_with_64_bit_lengths_survive_any_chunking() {
    let mut client = Client::new(42);
    let big = client.rng.bytes(70_000);
    client.message(false, &big, &[], &[]);
    let text = "κ".repeat(40_000);
    client.message(true, text.as_bytes(), &[1, 65_537, 70_001], &[(1, b"mid"), (2, b"")]);
    let expected = (client.expected.clone(), Ok(()));
    assert_every_cut(ReaderConfig::default(), &client.wire, &expected);
}

#[test]
fn random_conversations_give_same_events_for_any_chunking() {
    for seed in 100..130 {
        let client = random_conversation(seed);
        let expected = (client.expected.clone(), Ok(()));
        assert_every_cut(ReaderConfig::default(), &client.wire, &expected);
    }
}

#[test]
fn faults_fail_with_same_error_after_same_events_for_every_split_point() {
    let faults: [(&[u8], Error); 7] = [
        (&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], Error::Protocol("")),
        (&[0x83, 0x80, 1, 2, 3, 4], Error::Protocol("")),
        (&[0xc9, 0x80, 1, 2, 3, 4], Error::Protocol("")),
        (&[0x80, 0x81, 1, 2, 3, 4, 0x79], Error::Protocol("")),
        (&[0x81, 0x82, 1, 2, 3, 4, 0xc1, 0xad], Error::InvalidUtf8),
        (&[0x88, 0x82, 1, 2, 3, 4, 0x02, 0xec], Error::Protocol("")),
        (&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4], too_big()),
    ];
    for (fault, kind) in faults {
        let mut client = open_stream(9);
        client.wire.extend_from_slice(fault);
        client.wire.extend(client.wire.clone());

        let got = feed_in_reads(ReaderConfig::default(), &client.wire, []);
        assert_eq!(got.0, client.expected, "fault {fault:x?}");
        let err = got.1.expect_err("fault must be rejected");
        assert_eq!(err.close_code(), kind.close_code(), "fault {fault:x?}");

        let expected = (client.expected.clone(), Err(err));
        assert_every_split_point(ReaderConfig::default(), &client.wire, &expected);
        assert_every_cut(ReaderConfig::default(), &client.wire, &expected);
    }
}

#[test]
fn utf8_fault_is_reported_at_the_same_byte_for_any_chunking() {
    let mut client = Client::new(5);
    client.frame(0x1, false, "κόσμε".as_bytes());
    client.frame(0x0, false, &[0xf4, 0x90, 0x80, 0x80]);
    // The byte 0x90 after 0xf4 can never be valid: reading it must fail the message.
    let fault_end = client.wire.len() - 2;
    client.frame(0x0, true, b"edited");

    for at in 0..fault_end {
        let wire = &client.wire[..fault_end];
        let (events, result) = feed_in_reads(ReaderConfig::default(), wire, [at]);
        assert!(events.is_empty());
        assert_eq!(result, Err(Error::InvalidUtf8), "first read of {at} bytes");
    }
    let head = &client.wire[..fault_end - 1];
    assert_eq!(feed_in_reads(ReaderConfig::default(), head, []), (vec![], Ok(())));
}

/// Random messages, fragmentations and control frames, all valid.
fn random_conversation(seed: u64) -> Client {
    let mut client = Client::new(seed);
    for _ in 0..12 {
        let len = [0, 1, 5, 125, 126, 300, 1000][client.rng.below(7)];
        let text = client.rng.below(2) == 0;
        let data = if text { random_text(&mut client.rng, len) } else { client.rng.bytes(len) };
        let mut cuts: Vec<usize> = (0..3).map(|_| client.rng.below(len + 1)).collect();
        cuts.truncate(client.rng.below(4));
        cuts.sort_unstable();
        let pings = [(1, &b"a"[..]), (2, b"")];
        let pings = &pings[..client.rng.below(3)];
        client.message(text, &data, &cuts, pings);
        if client.rng.below(3) == 0 {
            let len = client.rng.below(126);
            let payload = client.rng.bytes(len);
            client.control(0xa, &payload);
        }
    }
    client
}

/// About `len` bytes of valid UTF-8 mixing one- to four-byte characters.
fn random_text(rng: &mut Lcg, len: usize) -> Vec<u8> {
    let mut out = String::new();
    while out.len() < len {
        out.push(['a', 'é', 'κ', '€', '𝄞', ' '][rng.below(6)]);
    }
    out.into_bytes()
}

fn too_big() -> Error {
    Error::MessageTooBig { limit: ReaderConfig::default().max_message_size }
}
