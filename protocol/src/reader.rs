//! The per-connection receive state machine for frames from a client (RFC 6455 §5).
//!
//! Place in the data path: `socket → shard → **protocol (reader)** → envelope / fanout`. The
//! shard feeds whatever bytes a read returned; the reader turns them into [`Event`]s: whole data
//! messages (fragments reassembled) and control frames (emitted at once, even between the
//! fragments of a message). It owns every framing rule a server must enforce on client frames:
//! masking, RSV bits, reserved opcodes, control-frame limits, fragmentation order, the
//! message-size limit (decided from headers alone, never by allocating the announced length)
//! and fail-fast UTF-8 validation of text messages across fragment boundaries.
//!
//! It leaves to others: answering Pings and Closes and sending the Close for an error (the
//! shard, using [`Error::close_code`] and [`crate::writer`]), inflating compressed messages and
//! validating their UTF-8 after inflation ([`crate::deflate`]; a compressed text message in
//! fragments is also judged fragment by fragment, [`crate::fragment_check`]), and what a
//! message means ([`crate::envelope`]).

use std::mem;

use crate::close::{parse_close_payload, CloseFrame};
use crate::fragment_check::FragmentCheck;
use crate::frame::{
    decode_header, header_len, is_reserved, Control, Data, FrameHeader, OpCode,
    MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};
use crate::mask::unmask_into;
use crate::Error;

/// Per-connection limits and negotiated extensions for a [`Reader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderConfig {
    /// The largest data message accepted, in bytes, summed over all its fragments. For a
    /// compressed message this bounds the compressed bytes; the inflater bounds the rest.
    pub max_message_size: usize,
    /// permessage-deflate was negotiated: RSV1 may be set on the first frame of a data message.
    pub allow_rsv1: bool,
}

impl Default for ReaderConfig {
    /// 1 MiB messages (PROTOCOL.md §10), no extension.
    fn default() -> Self {
        ReaderConfig { max_message_size: DEFAULT_MAX_MESSAGE_SIZE, allow_rsv1: false }
    }
}

/// What a client's bytes amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message {
        /// Text (opcode 0x1) rather than binary (0x2). Unless `compressed`, `data` is valid
        /// UTF-8 when this is set.
        text: bool,
        /// The unmasked payload of all fragments, in order.
        data: Vec<u8>,
        /// RSV1 was set: `data` is a permessage-deflate payload still to be inflated (and, for
        /// text, still to be checked for UTF-8).
        compressed: bool,
    },
    /// A Ping with its application data; answer with a Pong carrying the same bytes.
    Ping(Vec<u8>),
    /// A Pong with its application data.
    Pong(Vec<u8>),
    /// A Close, with its code and reason unless the body was empty. The reader ignores all
    /// later input; answer with a Close and shut the connection.
    Close(Option<CloseFrame>),
}

/// Receive state of one connection. See the module docs for the rules it enforces.
///
/// Idle (between messages) it owns no heap memory. At most one frame header, one control
/// payload (≤ 125 bytes) and one data message are in progress at a time.
#[derive(Debug)]
pub struct Reader {
    /// Limits and negotiated extensions; fixed for the life of the connection.
    cfg: ReaderConfig,
    /// Bytes of a frame header received so far; only `head[..head_len]` is meaningful.
    head: [u8; MAX_HEADER_LEN],
    /// Number of valid bytes in `head`. Non-zero only while `frame` is `None`.
    head_len: u8,
    /// The frame whose payload is arriving; `None` while a header is read (or none started).
    frame: Option<Frame>,
    /// The data message being reassembled, `None` between messages. Set by the first frame of
    /// a message, cleared when its final frame completes (or on close or failure).
    open: Option<MessageKind>,
    /// Unmasked payload of the open message so far; empty and unallocated when `open` is
    /// `None`. Its length is the running total checked against `max_message_size`.
    data: Vec<u8>,
    /// Length of the prefix of `data` known to be valid UTF-8 and to end on a character
    /// boundary; `data.len() - utf8_checked` is at most 3 between pieces. Text only.
    utf8_checked: usize,
    /// The streaming check of a compressed text message that arrives in fragments; `None`
    /// otherwise (see [`crate::fragment_check`]).
    fragments: Option<Box<FragmentCheck>>,
    /// Unmasked payload of the control frame in progress; empty and unallocated otherwise.
    control: Vec<u8>,
    /// Whether more input is read at all.
    status: Status,
}

impl Reader {
    /// A reader for a freshly upgraded connection.
    pub fn new(cfg: ReaderConfig) -> Self {
        Reader {
            cfg,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            frame: None,
            open: None,
            data: Vec::new(),
            utf8_checked: 0,
            fragments: None,
            control: Vec::new(),
            status: Status::Open,
        }
    }

    /// Consumes all of `input`, appending the events it completes to `out`.
    ///
    /// Input after a Close event is ignored. Events pushed before an error stay in `out`; the
    /// message the error interrupted is never emitted.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`], [`Error::InvalidUtf8`] or [`Error::MessageTooBig`]: fail the
    /// connection with [`Error::close_code`]. The reader is then poisoned: every later call
    /// returns the same error and reads nothing.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), Error> {
        match &self.status {
            Status::Failed(err) => return Err(replay(err)),
            Status::Closed => return Ok(()),
            Status::Open => {}
        }
        while !input.is_empty() && matches!(self.status, Status::Open) {
            let step = match self.frame {
                None => self.read_header(input, out),
                Some(frame) => self.read_payload(frame, input, out),
            };
            match step {
                Ok(used) => input = &input[used..],
                Err(err) => return Err(self.fail(err)),
            }
        }
        Ok(())
    }

    /// No partial frame header, frame payload or message is pending.
    pub fn is_idle(&self) -> bool {
        self.head_len == 0 && self.frame.is_none() && self.open.is_none()
    }

    /// A Close frame was received; further input is ignored.
    pub fn is_closed(&self) -> bool {
        matches!(self.status, Status::Closed)
    }

    /// The configuration this reader enforces.
    pub fn config(&self) -> &ReaderConfig {
        &self.cfg
    }

    /// Buffers header bytes; once the header is whole, checks it and starts its frame.
    /// Returns how much of `input` was used.
    fn read_header(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<usize, Error> {
        let have = usize::from(self.head_len);
        let want = if have < 2 { 2 } else { header_len(self.head[1]) };
        let take = (want - have).min(input.len());
        self.head[have..have + take].copy_from_slice(&input[..take]);
        self.head_len += take as u8;

        if let Some((header, _)) = decode_header(&self.head[..have + take])? {
            self.head_len = 0;
            self.start_frame(header, out)?;
        }
        Ok(take)
    }

    /// Accepts or rejects a complete header, then begins its payload.
    fn start_frame(&mut self, header: FrameHeader, out: &mut Vec<Event>) -> Result<(), Error> {
        self.check_header(&header)?;
        let Some(key) = header.mask else { return Err(Error::Protocol(UNMASKED)) };

        let kind = match header.opcode {
            OpCode::Control(control) => FrameKind::Control(control),
            OpCode::Data(data) => {
                if data != Data::Continue {
                    let text = data == Data::Text;
                    self.open = Some(MessageKind { text, compressed: header.rsv1 });
                    if text && header.rsv1 && !header.fin {
                        let check = FragmentCheck::new(self.cfg.max_message_size);
                        self.fragments = Some(Box::new(check));
                    }
                }
                FrameKind::Data
            }
        };
        let remaining = header.payload_len;
        self.frame = Some(Frame { kind, fin: header.fin, key, key_offset: 0, remaining });
        if remaining == 0 {
            self.finish_frame(out)?;
        }
        Ok(())
    }

    /// Every rule a header alone can break, in the order the checks are made.
    fn check_header(&self, header: &FrameHeader) -> Result<(), Error> {
        if header.rsv2 || header.rsv3 {
            return Err(Error::Protocol("reserved bit rsv2 or rsv3 set"));
        }
        if is_reserved(header.opcode) {
            return Err(Error::Protocol("reserved opcode"));
        }
        if header.mask.is_none() {
            return Err(Error::Protocol(UNMASKED));
        }
        match header.opcode {
            OpCode::Control(_) => check_control(header),
            OpCode::Data(Data::Continue) => self.check_continuation(header),
            OpCode::Data(_) => self.check_first_fragment(header),
        }
    }

    /// A continuation needs an open message, no RSV1, and must keep the message in size.
    fn check_continuation(&self, header: &FrameHeader) -> Result<(), Error> {
        if self.open.is_none() {
            return Err(Error::Protocol("continuation frame without an open message"));
        }
        if header.rsv1 {
            return Err(Error::Protocol("rsv1 set on a continuation frame"));
        }
        self.check_size(self.data.len(), header.payload_len)
    }

    /// A text or binary frame needs no message open, RSV1 only if negotiated, and a size in
    /// bounds.
    fn check_first_fragment(&self, header: &FrameHeader) -> Result<(), Error> {
        if self.open.is_some() {
            return Err(Error::Protocol("new data frame while a message is open"));
        }
        if header.rsv1 && !self.cfg.allow_rsv1 {
            return Err(Error::Protocol("rsv1 set without a negotiated extension"));
        }
        self.check_size(0, header.payload_len)
    }

    /// Fails when `so_far` bytes already received plus `announced` exceed the message limit.
    fn check_size(&self, so_far: usize, announced: u64) -> Result<(), Error> {
        let limit = self.cfg.max_message_size;
        let total = (so_far as u64).saturating_add(announced);
        if total > limit as u64 {
            return Err(Error::MessageTooBig { limit });
        }
        Ok(())
    }

    /// Unmasks the next piece of the current frame's payload into its buffer. Returns how
    /// much of `input` was used.
    fn read_payload(
        &mut self,
        mut frame: Frame,
        input: &[u8],
        out: &mut Vec<Event>,
    ) -> Result<usize, Error> {
        let take = usize::try_from(frame.remaining).map_or(input.len(), |r| r.min(input.len()));
        let target = match frame.kind {
            FrameKind::Control(_) => &mut self.control,
            FrameKind::Data => &mut self.data,
        };
        let before = target.len();
        frame.key_offset = unmask_into(&input[..take], frame.key, frame.key_offset, target);
        frame.remaining -= take as u64;
        self.frame = Some(frame);

        if frame.kind == FrameKind::Data {
            self.check_utf8()?;
            if let Some(check) = &mut self.fragments {
                check.feed(&self.data[before..])?;
            }
        }
        if frame.remaining == 0 {
            self.finish_frame(out)?;
        }
        Ok(take)
    }

    /// Validates the not-yet-checked tail of an uncompressed text message, failing as soon as
    /// a byte sequence can never become valid.
    fn check_utf8(&mut self) -> Result<(), Error> {
        let Some(MessageKind { text: true, compressed: false }) = self.open else { return Ok(()) };
        match std::str::from_utf8(&self.data[self.utf8_checked..]) {
            Ok(_) => self.utf8_checked = self.data.len(),
            Err(err) if err.error_len().is_none() => self.utf8_checked += err.valid_up_to(),
            Err(_) => return Err(Error::InvalidUtf8),
        }
        Ok(())
    }

    /// The current frame's payload is complete: emit what it completes.
    fn finish_frame(&mut self, out: &mut Vec<Event>) -> Result<(), Error> {
        let Some(frame) = self.frame.take() else { return Ok(()) };
        match frame.kind {
            FrameKind::Control(control) => self.finish_control(control, out),
            FrameKind::Data if frame.fin => self.finish_message(out),
            FrameKind::Data => Ok(()),
        }
    }

    /// Emits a control frame; a Close also ends reading and drops any partial message.
    fn finish_control(&mut self, control: Control, out: &mut Vec<Event>) -> Result<(), Error> {
        let payload = mem::take(&mut self.control);
        let event = match control {
            Control::Ping => Event::Ping(payload),
            Control::Pong => Event::Pong(payload),
            Control::Close => {
                let close = parse_close_payload(&payload)?;
                self.reset();
                self.status = Status::Closed;
                Event::Close(close)
            }
            Control::Reserved(_) => return Err(Error::Protocol("reserved opcode")),
        };
        out.push(event);
        Ok(())
    }

    /// Emits the open message, moving its buffer out.
    fn finish_message(&mut self, out: &mut Vec<Event>) -> Result<(), Error> {
        let Some(kind) = self.open.take() else { return Ok(()) };
        if kind.text && !kind.compressed && self.utf8_checked != self.data.len() {
            return Err(Error::InvalidUtf8);
        }
        self.utf8_checked = 0;
        self.fragments = None;
        let data = mem::take(&mut self.data);
        out.push(Event::Message { text: kind.text, data, compressed: kind.compressed });
        Ok(())
    }

    /// Poisons the reader with `err`, frees its buffers and hands `err` back.
    fn fail(&mut self, err: Error) -> Error {
        self.reset();
        self.status = Status::Failed(replay(&err));
        err
    }

    /// Drops every partial frame and message, releasing their memory.
    fn reset(&mut self) {
        self.head_len = 0;
        self.frame = None;
        self.open = None;
        self.data = Vec::new();
        self.utf8_checked = 0;
        self.fragments = None;
        self.control = Vec::new();
    }
}

/// The frame whose payload is being received.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Where the payload goes and what completes with it.
    kind: FrameKind,
    /// FIN bit: the last frame of its message (always set for control frames).
    fin: bool,
    /// The masking key.
    key: [u8; 4],
    /// Key position of the next payload byte, `0..4`.
    key_offset: usize,
    /// Payload bytes still to come; within the message limit (or ≤ 125 for control frames).
    remaining: u64,
}

/// Whether a frame's payload belongs to the open data message or is a control payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Data,
    Control(Control),
}

/// What the first frame of the open message said about all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MessageKind {
    text: bool,
    compressed: bool,
}

/// Whether the reader still reads.
#[derive(Debug)]
enum Status {
    Open,
    /// A Close frame was received.
    Closed,
    /// An error was returned; kept to be returned again.
    Failed(Error),
}

/// Rules for control frames (§5.5): not fragmented, no RSV1, at most 125 bytes.
fn check_control(header: &FrameHeader) -> Result<(), Error> {
    if !header.fin {
        return Err(Error::Protocol("fragmented control frame"));
    }
    if header.rsv1 {
        return Err(Error::Protocol("rsv1 set on a control frame"));
    }
    if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(Error::Protocol("control frame payload over 125 bytes"));
    }
    Ok(())
}

/// A copy of a frame-layer error, to return again from a poisoned reader.
fn replay(err: &Error) -> Error {
    match err {
        Error::Protocol(why) => Error::Protocol(why),
        Error::InvalidUtf8 => Error::InvalidUtf8,
        Error::MessageTooBig { limit } => Error::MessageTooBig { limit: *limit },
        _ => Error::Protocol("reader failed earlier"),
    }
}

const UNMASKED: &str = "client frame is not masked";
const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::frame::OpCode;
    use crate::writer::encode_masked_frame;

    const KEY: [u8; 4] = [1, 2, 3, 4];
    const MIB: usize = 1 << 20;

    fn deflate() -> ReaderConfig {
        ReaderConfig { allow_rsv1: true, ..ReaderConfig::default() }
    }

    /// Feeds `frames` one call each to a fresh reader; returns the events and the first error.
    fn run(cfg: ReaderConfig, frames: &[&[u8]]) -> (Vec<Event>, Result<(), Error>) {
        let mut reader = Reader::new(cfg);
        let mut events = Vec::new();
        for frame in frames {
            if let Err(err) = reader.feed(frame, &mut events) {
                return (events, Err(err));
            }
        }
        (events, Ok(()))
    }

    fn fails_with(cfg: ReaderConfig, frames: &[&[u8]]) -> Error {
        let (events, result) = run(cfg, frames);
        assert!(events.iter().all(|e| !matches!(e, Event::Message { .. })), "{events:?}");
        result.expect_err("input must be rejected")
    }

    fn protocol_error(err: Error) -> bool {
        err.close_code() == Some(1002)
    }

    fn text(data: &[u8]) -> Event {
        Event::Message { text: true, data: data.to_vec(), compressed: false }
    }

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_masked_frame(OpCode::from(opcode), fin, false, payload, KEY, &mut out);
        out
    }

    fn close_with(masked_code: [u8; 2]) -> [u8; 8] {
        [0x88, 0x82, 1, 2, 3, 4, masked_code[0], masked_code[1]]
    }

    // --- C03: masking and frame-header bits ---

    #[test]
    fn c03_rejects_unmasked_client_frame() {
        let err =
            fails_with(ReaderConfig::default(), &[&[0x81, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]]);
        assert!(protocol_error(err));
    }

    #[test]
    fn c03_delivers_masked_text() {
        let bytes = [0x81, 0x85, 1, 2, 3, 4, 0x69, 0x67, 0x6f, 0x68, 0x6e];
        assert_eq!(run(ReaderConfig::default(), &[&bytes]), (vec![text(b"hello")], Ok(())));
    }

    #[test]
    fn c03_rejects_rsv1_without_negotiated_extension() {
        let bytes = [0xc1, 0x85, 1, 2, 3, 4, 0x69, 0x67, 0x6f, 0x68, 0x6e];
        assert!(protocol_error(fails_with(ReaderConfig::default(), &[&bytes])));
    }

    #[test]
    fn c03_rejects_rsv1_on_continuation_even_with_deflate() {
        let first: &[u8] = &[0x01, 0x82, 1, 2, 3, 4, 0x67, 0x33];
        let cont: &[u8] = &[0xc0, 0x81, 1, 2, 3, 4, 0x79];
        for cfg in [ReaderConfig::default(), deflate()] {
            assert!(protocol_error(fails_with(cfg, &[first, cont])), "{cfg:?}");
        }
    }

    #[test]
    fn c03_rejects_rsv1_on_ping_even_with_deflate() {
        for cfg in [ReaderConfig::default(), deflate()] {
            assert!(protocol_error(fails_with(cfg, &[&[0xc9, 0x80, 1, 2, 3, 4]])), "{cfg:?}");
        }
    }

    #[test]
    fn c03_rejects_reserved_opcodes_from_the_case() {
        for bytes in [[0x83, 0x80, 1, 2, 3, 4], [0x8b, 0x80, 1, 2, 3, 4]] {
            assert!(protocol_error(fails_with(ReaderConfig::default(), &[&bytes])));
        }
    }

    #[test]
    fn c03_rejects_every_reserved_opcode_with_and_without_payload() {
        for opcode in (0x3..=0x7).chain(0xb..=0xf) {
            for payload in [&b""[..], b"x"] {
                let frame = masked(opcode, true, payload);
                let err = fails_with(deflate(), &[&frame]);
                assert!(protocol_error(err), "opcode {opcode:#x}");
            }
        }
    }

    #[test]
    fn c03_rejects_rsv2_and_rsv3_on_data_and_control_frames() {
        for bit in [0x20, 0x10] {
            for opcode in [0x1, 0x2, 0x9, 0xa, 0x8] {
                let frame = [0x80 | bit | opcode, 0x80, 1, 2, 3, 4];
                let err = fails_with(deflate(), &[&frame]);
                assert!(protocol_error(err), "bit {bit:#x} opcode {opcode:#x}");
            }
        }
    }

    #[test]
    fn c03_rejects_unmasked_frames_of_every_valid_opcode() {
        for opcode in [0x0, 0x1, 0x2, 0x8, 0x9, 0xa] {
            let err = fails_with(ReaderConfig::default(), &[&[0x80 | opcode, 0x00]]);
            assert!(protocol_error(err), "opcode {opcode:#x}");
        }
    }

    #[test]
    fn c03_accepts_rsv1_on_first_frame_when_negotiated_and_skips_utf8() {
        let bytes = [0xc1, 0x87, 1, 2, 3, 4, 0xf3, 0x4a, 0xce, 0xcd, 0xc8, 0x05, 0x03];
        let (events, result) = run(deflate(), &[&bytes]);
        assert_eq!(result, Ok(()));
        let deflated = vec![0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(events, vec![Event::Message { text: true, data: deflated, compressed: true }]);
    }

    // --- C04: control frames inside a fragmented message ---

    #[test]
    fn c04_emits_ping_between_fragments_before_the_message() {
        let frames: [&[u8]; 3] = [
            &[0x01, 0x83, 1, 2, 3, 4, 0x49, 0x67, 0x6f],
            &[0x89, 0x81, 1, 2, 3, 4, 0x71],
            &[0x80, 0x82, 1, 2, 3, 4, 0x6d, 0x6d],
        ];
        let expected = vec![Event::Ping(b"p".to_vec()), text(b"Hello")];
        assert_eq!(run(ReaderConfig::default(), &frames), (expected.clone(), Ok(())));
        assert_eq!(run(ReaderConfig::default(), &[&frames.concat()]), (expected, Ok(())));
    }

    #[test]
    fn c04_close_between_fragments_discards_partial_message_and_later_input() {
        let frames: [&[u8]; 3] = [
            &[0x01, 0x83, 1, 2, 3, 4, 0x49, 0x67, 0x6f],
            &[0x88, 0x82, 1, 2, 3, 4, 0x02, 0xea],
            &[0x80, 0x82, 1, 2, 3, 4, 0x6d, 0x6d],
        ];
        let expected = vec![Event::Close(Some(CloseFrame { code: 1000, reason: String::new() }))];
        assert_eq!(run(ReaderConfig::default(), &frames), (expected.clone(), Ok(())));

        let mut reader = Reader::new(ReaderConfig::default());
        let mut events = Vec::new();
        reader.feed(&frames.concat(), &mut events).unwrap();
        assert_eq!(events, expected);
        assert!(reader.is_closed() && reader.data.capacity() == 0);
    }

    #[test]
    fn c04_rejects_fragmented_ping() {
        let frames: [&[u8]; 2] = [&[0x09, 0x81, 1, 2, 3, 4, 0x60], &[0x80, 0x81, 1, 2, 3, 4, 0x63]];
        assert!(protocol_error(fails_with(ReaderConfig::default(), &frames)));
    }

    #[test]
    fn c04_rejects_ping_over_125_bytes_from_its_header() {
        let header: &[u8] = &[0x89, 0xfe, 0x00, 0x7e, 1, 2, 3, 4];
        assert!(protocol_error(fails_with(ReaderConfig::default(), &[header])));
        let full = masked(0x9, true, &[b'p'; 126]);
        assert_eq!(&full[..8], header);
        assert!(protocol_error(fails_with(ReaderConfig::default(), &[&full])));
    }

    #[test]
    fn c04_accepts_ping_of_exactly_125_bytes() {
        let frame = masked(0x9, true, &[7; 125]);
        let expected = vec![Event::Ping(vec![7; 125])];
        assert_eq!(run(ReaderConfig::default(), &[&frame]), (expected, Ok(())));
    }

    #[test]
    fn c04_rejects_continuation_without_open_message() {
        let err = fails_with(ReaderConfig::default(), &[&[0x80, 0x81, 1, 2, 3, 4, 0x79]]);
        assert!(protocol_error(err));
    }

    #[test]
    fn c04_rejects_new_data_frame_while_message_open() {
        let frames: [&[u8]; 2] =
            [&[0x01, 0x82, 1, 2, 3, 4, 0x67, 0x33], &[0x81, 0x82, 1, 2, 3, 4, 0x67, 0x30]];
        assert!(protocol_error(fails_with(ReaderConfig::default(), &frames)));
        let binary = masked(0x2, true, b"b");
        assert!(protocol_error(fails_with(ReaderConfig::default(), &[frames[0], &binary])));
    }

    #[test]
    fn c04_passes_pong_through_between_fragments() {
        let frames = [masked(0x2, false, b"ab"), masked(0xa, true, b"hb"), masked(0x0, true, b"c")];
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let binary = Event::Message { text: false, data: b"abc".to_vec(), compressed: false };
        assert_eq!(
            run(ReaderConfig::default(), &refs),
            (vec![Event::Pong(b"hb".to_vec()), binary], Ok(()))
        );
    }

    // --- C05: UTF-8 across fragment boundaries ---

    #[test]
    fn c05_joins_two_byte_character_split_over_two_frames() {
        let frames: [&[u8]; 2] = [&[0x01, 0x81, 1, 2, 3, 4, 0xcf], &[0x80, 0x81, 1, 2, 3, 4, 0xbb]];
        assert_eq!(run(ReaderConfig::default(), &frames), (vec![text("κ".as_bytes())], Ok(())));
    }

    #[test]
    fn c05_joins_four_byte_character_sent_one_byte_per_frame() {
        let frames: [&[u8]; 4] = [
            &[0x01, 0x81, 1, 2, 3, 4, 0xf1],
            &[0x00, 0x81, 1, 2, 3, 4, 0x9c],
            &[0x00, 0x81, 1, 2, 3, 4, 0x85],
            &[0x80, 0x81, 1, 2, 3, 4, 0x9f],
        ];
        assert_eq!(run(ReaderConfig::default(), &frames), (vec![text("𝄞".as_bytes())], Ok(())));
    }

    #[test]
    fn c05_fails_fast_on_code_point_above_u10ffff_mid_message() {
        let first: &[u8] = &[
            0x01, 0x8b, 1, 2, 3, 4, 0xcf, 0xb8, 0xe2, 0xb9, 0xb8, 0xcd, 0x80, 0xca, 0xbd, 0xcc,
            0xb6,
        ];
        let bad: &[u8] = &[0x00, 0x84, 1, 2, 3, 4, 0xf5, 0x92, 0x83, 0x84];
        let mut reader = Reader::new(ReaderConfig::default());
        let mut events = Vec::new();
        reader.feed(first, &mut events).unwrap();
        let kosme = [0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5];
        assert_eq!(reader.data, kosme);

        // The error comes with the byte 0x90, before the frame (or "edited") is complete.
        reader.feed(&bad[..7], &mut events).unwrap();
        assert_eq!(reader.feed(&bad[7..8], &mut events), Err(Error::InvalidUtf8));
        assert!(events.is_empty());
    }

    #[test]
    fn c05_rejects_incomplete_character_at_message_end() {
        let err =
            fails_with(ReaderConfig::default(), &[&[0x81, 0x83, 1, 2, 3, 4, 0x60, 0x60, 0xcd]]);
        assert_eq!(err, Error::InvalidUtf8);
    }

    #[test]
    fn c05_rejects_incomplete_character_at_end_of_fragmented_message() {
        let frames = [masked(0x1, false, b"ab"), masked(0x0, true, &[0xf0, 0x9d, 0x84])];
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(fails_with(ReaderConfig::default(), &refs), Error::InvalidUtf8);
    }

    #[test]
    fn c05_rejects_overlong_encoding() {
        let err = fails_with(ReaderConfig::default(), &[&[0x81, 0x82, 1, 2, 3, 4, 0xc1, 0xad]]);
        assert_eq!(err, Error::InvalidUtf8);
    }

    #[test]
    fn c05_rejects_surrogate() {
        let err =
            fails_with(ReaderConfig::default(), &[&[0x81, 0x83, 1, 2, 3, 4, 0xec, 0xa2, 0x83]]);
        assert_eq!(err, Error::InvalidUtf8);
    }

    #[test]
    fn c05_rejects_invalid_sequences_split_across_fragments() {
        for bad in [&[0xed, 0xa0, 0x80][..], &[0xc0, 0xaf], &[0xf4, 0x90, 0x80, 0x80], &[0xff]] {
            for split in 1..bad.len() {
                let frames = [masked(0x1, false, &bad[..split]), masked(0x0, true, &bad[split..])];
                let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                let err = fails_with(ReaderConfig::default(), &refs);
                assert_eq!(err, Error::InvalidUtf8, "{bad:x?} split at {split}");
            }
        }
    }

    #[test]
    fn c05_validates_uncompressed_text_when_deflate_negotiated() {
        let frames: [&[u8]; 2] = [&[0x01, 0x81, 1, 2, 3, 4, 0xcf], &[0x80, 0x81, 1, 2, 3, 4, 0xbb]];
        assert_eq!(run(deflate(), &frames), (vec![text("κ".as_bytes())], Ok(())));
        let err = fails_with(deflate(), &[&[0x81, 0x83, 1, 2, 3, 4, 0xec, 0xa2, 0x83]]);
        assert_eq!(err, Error::InvalidUtf8);
    }

    #[test]
    fn c05_leaves_compressed_text_unvalidated() {
        let mut frame = Vec::new();
        encode_masked_frame(OpCode::from(0x1), true, true, &[0xff, 0xce], KEY, &mut frame);
        let expected = Event::Message { text: true, data: vec![0xff, 0xce], compressed: true };
        assert_eq!(run(deflate(), &[&frame]), (vec![expected], Ok(())));
    }

    #[test]
    fn c05_does_not_validate_binary_messages() {
        let frame = masked(0x2, true, &[0xff, 0xfe, 0xc0]);
        let expected =
            Event::Message { text: false, data: vec![0xff, 0xfe, 0xc0], compressed: false };
        assert_eq!(run(ReaderConfig::default(), &[&frame]), (vec![expected], Ok(())));
    }

    // --- C06: Close payload validation ---

    #[test]
    fn c06_rejects_one_byte_close_body() {
        let err = fails_with(ReaderConfig::default(), &[&[0x88, 0x81, 1, 2, 3, 4, 0x02]]);
        assert!(protocol_error(err));
    }

    #[test]
    fn c06_rejects_every_invalid_close_code() {
        let cases: [(u16, [u8; 2]); 11] = [
            (0, [0x01, 0x02]),
            (999, [0x02, 0xe5]),
            (1004, [0x02, 0xee]),
            (1005, [0x02, 0xef]),
            (1006, [0x02, 0xec]),
            (1015, [0x02, 0xf5]),
            (1016, [0x02, 0xfa]),
            (1100, [0x05, 0x4e]),
            (2000, [0x06, 0xd2]),
            (2999, [0x0a, 0xb5]),
            (5000, [0x12, 0x8a]),
        ];
        for (code, masked_code) in cases {
            let frame = close_with(masked_code);
            assert_eq!(frame[..], masked(0x8, true, &code.to_be_bytes())[..], "code {code}");
            assert!(protocol_error(fails_with(ReaderConfig::default(), &[&frame])), "code {code}");
        }
    }

    #[test]
    fn c06_rejects_close_over_125_bytes() {
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend_from_slice(&[b'r'; 124]);
        let frame = masked(0x8, true, &body);
        assert_eq!(frame[..8], [0x88, 0xfe, 0x00, 0x7e, 1, 2, 3, 4]);
        assert!(protocol_error(fails_with(ReaderConfig::default(), &[&frame])));
    }

    #[test]
    fn c06_rejects_close_reason_that_is_not_utf8() {
        let frame = [0x88, 0x84, 1, 2, 3, 4, 0x02, 0xea, 0xfc, 0xfa];
        assert_eq!(fails_with(ReaderConfig::default(), &[&frame]), Error::InvalidUtf8);
    }

    #[test]
    fn c06_reports_every_valid_close_code_unchanged() {
        let cases: [(u16, [u8; 2]); 10] = [
            (1000, [0x02, 0xea]),
            (1001, [0x02, 0xeb]),
            (1003, [0x02, 0xe9]),
            (1007, [0x02, 0xed]),
            (1011, [0x02, 0xf1]),
            (1012, [0x02, 0xf6]),
            (1013, [0x02, 0xf7]),
            (1014, [0x02, 0xf4]),
            (3000, [0x0a, 0xba]),
            (4999, [0x12, 0x85]),
        ];
        for (code, masked_code) in cases {
            let expected = Event::Close(Some(CloseFrame { code, reason: String::new() }));
            let got = run(ReaderConfig::default(), &[&close_with(masked_code)]);
            assert_eq!(got, (vec![expected], Ok(())), "code {code}");
        }
    }

    #[test]
    fn c06_accepts_empty_close_body() {
        let got = run(ReaderConfig::default(), &[&[0x88, 0x80, 1, 2, 3, 4]]);
        assert_eq!(got, (vec![Event::Close(None)], Ok(())));
    }

    #[test]
    fn c06_keeps_close_reason() {
        let mut body = 4401u16.to_be_bytes().to_vec();
        body.extend_from_slice("unauthorized κ".as_bytes());
        let got = run(ReaderConfig::default(), &[&masked(0x8, true, &body)]);
        let close = CloseFrame { code: 4401, reason: "unauthorized κ".into() };
        assert_eq!(got, (vec![Event::Close(Some(close))], Ok(())));
    }

    // --- C07: declared length and reassembled size ---

    #[test]
    fn c07_rejects_2_pow_63_minus_1_from_the_header_alone() {
        let header = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
        let err = fails_with(ReaderConfig::default(), &[&header]);
        assert_eq!(err, Error::MessageTooBig { limit: MIB });
    }

    #[test]
    fn c07_rejects_64_bit_length_with_top_bit_set_as_protocol_error() {
        let header = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert!(protocol_error(fails_with(ReaderConfig::default(), &[&header])));
        let tiny = ReaderConfig { max_message_size: 0, ..ReaderConfig::default() };
        assert!(protocol_error(fails_with(tiny, &[&header])));
    }

    #[test]
    fn c07_rejects_frame_of_limit_plus_one_from_the_header() {
        let header: &[u8] = &[0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0x01, 1, 2, 3, 4];
        let err = fails_with(ReaderConfig::default(), &[header]);
        assert_eq!(err, Error::MessageTooBig { limit: MIB });
        assert_eq!(masked(0x2, true, &vec![0; MIB + 1])[..14], *header);
    }

    #[test]
    fn c07_counts_running_total_across_fragments() {
        let half = vec![b'a'; MIB / 2];
        let first = masked(0x1, false, &half);
        let second = masked(0x0, false, &half);
        assert_eq!(first[..14], [0x01, 0xff, 0, 0, 0, 0, 0, 0x08, 0, 0, 1, 2, 3, 4]);
        assert_eq!(second[..14], [0x00, 0xff, 0, 0, 0, 0, 0, 0x08, 0, 0, 1, 2, 3, 4]);

        let mut reader = Reader::new(ReaderConfig::default());
        let mut events = Vec::new();
        reader.feed(&first, &mut events).unwrap();
        reader.feed(&second, &mut events).unwrap();
        let last = reader.feed(&[0x80, 0x81, 1, 2, 3, 4, 0x60], &mut events);
        assert_eq!(last, Err(Error::MessageTooBig { limit: MIB }));
        assert!(events.is_empty() && reader.data.capacity() == 0);
    }

    #[test]
    fn c07_delivers_exactly_the_limit_in_one_frame_and_in_fragments() {
        let payload: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        let expected = Event::Message { text: false, data: payload.clone(), compressed: false };
        let whole = masked(0x2, true, &payload);
        assert_eq!(run(ReaderConfig::default(), &[&whole]), (vec![expected.clone()], Ok(())));

        let (a, rest) = payload.split_at(1000);
        let (b, c) = rest.split_at(MIB / 2);
        let frames = [masked(0x2, false, a), masked(0x0, false, b), masked(0x0, true, c)];
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        assert_eq!(run(ReaderConfig::default(), &refs), (vec![expected], Ok(())));
    }

    #[test]
    fn c07_never_allocates_the_announced_length() {
        let mut reader = Reader::new(ReaderConfig::default());
        let mut events = Vec::new();
        let frame = masked(0x2, true, &vec![0; MIB]);
        reader.feed(&frame[..14 + 10], &mut events).unwrap();
        assert!(reader.data.capacity() < MIB / 2, "capacity {}", reader.data.capacity());
    }

    // --- reader state ---

    #[test]
    fn poisoned_reader_repeats_its_error_and_reads_nothing() {
        let mut reader = Reader::new(ReaderConfig::default());
        let mut events = Vec::new();
        let bad = [0x81, 0x05, b'h', b'e', b'l', b'l', b'o'];
        let first = reader.feed(&bad, &mut events).unwrap_err();
        let again = reader.feed(&masked(0x1, true, b"ok"), &mut events).unwrap_err();
        assert_eq!(first, again);
        assert!(events.is_empty());
    }

    #[test]
    fn ignores_input_after_close() {
        let mut input = masked(0x8, true, &[]);
        input.extend(masked(0x1, true, b"late"));
        input.extend([0x81, 0x05]);
        let got = run(ReaderConfig::default(), &[&input, &[0xff, 0xff]]);
        assert_eq!(got, (vec![Event::Close(None)], Ok(())));
    }

    #[test]
    fn idle_reader_owns_no_heap_memory_after_messages() {
        let mut reader = Reader::new(ReaderConfig::default());
        let mut events = Vec::new();
        let mut input = masked(0x1, false, b"frag");
        input.extend(masked(0x9, true, b"ping"));
        input.extend(masked(0x0, true, b"ment"));
        reader.feed(&input, &mut events).unwrap();
        assert_eq!(events.len(), 2);
        assert!(reader.is_idle());
        assert_eq!((reader.data.capacity(), reader.control.capacity()), (0, 0));
        assert!(std::mem::size_of::<Reader>() <= 160, "{}", std::mem::size_of::<Reader>());
    }

    #[test]
    fn is_idle_only_between_frames_and_messages() {
        let mut reader = Reader::new(ReaderConfig::default());
        let mut events = Vec::new();
        let frame = masked(0x1, false, b"ab");
        reader.feed(&frame[..1], &mut events).unwrap();
        assert!(!reader.is_idle());
        reader.feed(&frame[1..], &mut events).unwrap();
        assert!(!reader.is_idle());
        reader.feed(&masked(0x0, true, b""), &mut events).unwrap();
        assert!(reader.is_idle());
        assert_eq!(events, vec![text(b"ab")]);
    }

    #[test]
    fn delivers_empty_messages_and_empty_fragments() {
        let frames = [masked(0x1, true, b""), masked(0x2, false, b""), masked(0x0, true, b"")];
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let binary = Event::Message { text: false, data: Vec::new(), compressed: false };
        assert_eq!(run(ReaderConfig::default(), &refs), (vec![text(b""), binary], Ok(())));
    }
}
