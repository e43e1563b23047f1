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
//! validating their UTF-8 after inflation (the permessage-deflate layer), and what a message
//! means ([`crate::envelope`]).

use std::mem;

use crate::close::{parse_close_payload, CloseFrame};
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
        frame.key_offset = unmask_into(&input[..take], frame.key, frame.key_offset, target);
        frame.remaining -= take as u64;
        self.frame = Some(frame);

        if frame.kind == FrameKind::Data {
            self.check_utf8()?;
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
