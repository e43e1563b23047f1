//! Compression of messages: `C:` frames (PROTOCOL.md §4) and permessage-deflate (RFC 7692).
//!
//! Place in the data path: `fanout → shard → **protocol (deflate)** → writer → socket` for
//! outbound messages, and `reader → **protocol (deflate)** → envelope` for inbound ones. A
//! shard keeps one [`Deflater`] and one [`Inflater`] for all its connections: both are
//! one-shot (libdeflate has no streaming API), which is exactly what the negotiated
//! `server_no_context_takeover; client_no_context_takeover` asks for, so a connection keeps
//! no compression state at all.
//!
//! One compression serves both wire forms. A zlib stream (RFC 1950) is a 2-byte header, a raw
//! DEFLATE stream (RFC 1951) and a 4-byte Adler-32; the `C:` frame carries the whole stream,
//! and a permessage-deflate frame carries the raw DEFLATE part. libdeflate ends that part with
//! a block whose BFINAL bit is set, so the permessage-deflate payload gets one `0x00` byte
//! after it (RFC 7692 §7.2.3.3): a receiver that appends `00 00 ff ff` and keeps inflating
//! after the final block then reads an empty stored block instead of garbage.
//!
//! Inflation is bounded: the output buffer is the message limit, never more, so a zlib bomb
//! costs at most that much memory (allocated zeroed, so untouched pages are never committed)
//! and ends in [`Error::MessageTooBig`]. It leaves to others which connection gets which form
//! ([`crate::extensions`] negotiates permessage-deflate; the shard decides) and the counting.

use libdeflater::{CompressionLvl, Compressor, DecompressionError, Decompressor};

use crate::frame::{Data, OpCode};
use crate::writer::frame_header;
use crate::Error;

/// A compressor at a fixed level, with its reused output buffer.
pub struct Deflater {
    compressor: Compressor,
    /// Scratch output of the last compression; kept to avoid an allocation per message.
    scratch: Vec<u8>,
}

impl Deflater {
    /// A compressor at `level`, 1 (fastest) to 9 (smallest).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] naming the level when it is outside 1-9.
    pub fn new(level: u8) -> Result<Deflater, Error> {
        let lvl = (MIN_LEVEL..=MAX_LEVEL)
            .contains(&level)
            .then(|| CompressionLvl::new(i32::from(level)).ok())
            .flatten()
            .ok_or_else(|| Error::InvalidMessage(format!("compression level {level} not 1-9")))?;
        Ok(Deflater { compressor: Compressor::new(lvl), scratch: Vec::new() })
    }

    /// Compresses `message` once; `None` when compression would not make it smaller, so
    /// the caller sends it as it is.
    pub fn compress(&mut self, message: &[u8]) -> Option<Compressed<'_>> {
        let bound = self.compressor.zlib_compress_bound(message.len());
        self.scratch.resize(bound, 0);
        let len = self.compressor.zlib_compress(message, &mut self.scratch).ok()?;
        // The `C:` frame is the larger of the two forms: it must save bytes.
        if len + C_PREFIX.len() >= message.len() {
            return None;
        }
        Some(Compressed { zlib: &self.scratch[..len], original: message.len() })
    }
}

impl Default for Deflater {
    /// Level 1, the fastest (PROTOCOL.md §10).
    fn default() -> Self {
        Deflater { compressor: Compressor::new(CompressionLvl::fastest()), scratch: Vec::new() }
    }
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").field("scratch", &self.scratch.capacity()).finish()
    }
}

/// One message compressed once, from which each wire form is cut.
#[derive(Debug, Clone, Copy)]
pub struct Compressed<'a> {
    /// The zlib stream: header, raw DEFLATE with a final block, Adler-32.
    zlib: &'a [u8],
    /// Length of the message before compression.
    original: usize,
}

impl Compressed<'_> {
    /// The whole server frame of PROTOCOL.md §4: binary, `C:` then the zlib stream.
    pub fn c_frame(&self) -> Vec<u8> {
        let payload_len = C_PREFIX.len() + self.zlib.len();
        let (header, used) = frame_header(OpCode::Data(Data::Binary), true, false, payload_len);
        let mut frame = Vec::with_capacity(used + payload_len);
        frame.extend_from_slice(&header[..used]);
        frame.extend_from_slice(C_PREFIX);
        frame.extend_from_slice(self.zlib);
        frame
    }

    /// The whole server frame of a permessage-deflate message with `opcode`: RSV1 set, the
    /// raw DEFLATE stream and the `0x00` the module docs explain.
    pub fn deflate_frame(&self, opcode: OpCode) -> Vec<u8> {
        let raw = self.raw_deflate();
        let payload_len = raw.len() + 1;
        let (header, used) = frame_header(opcode, true, true, payload_len);
        let mut frame = Vec::with_capacity(used + payload_len);
        frame.extend_from_slice(&header[..used]);
        frame.extend_from_slice(raw);
        frame.push(0x00);
        frame
    }

    /// The raw DEFLATE stream inside the zlib stream.
    pub fn raw_deflate(&self) -> &[u8] {
        &self.zlib[ZLIB_HEADER..self.zlib.len() - ZLIB_TRAILER]
    }

    /// Length of the `C:` payload (prefix and zlib stream).
    pub fn c_payload_len(&self) -> usize {
        C_PREFIX.len() + self.zlib.len()
    }

    /// Length of the permessage-deflate payload.
    pub fn deflate_payload_len(&self) -> usize {
        self.raw_deflate().len() + 1
    }

    /// Length of the message before compression.
    pub fn original_len(&self) -> usize {
        self.original
    }
}

/// A decompressor whose output never exceeds a fixed limit.
pub struct Inflater {
    decompressor: Decompressor,
    /// The largest inflated message accepted, in bytes.
    limit: usize,
    /// Output buffer of exactly `limit` bytes, allocated zeroed on first use; only the pages
    /// an inflation wrote to are ever resident.
    scratch: Vec<u8>,
}

impl Inflater {
    /// An inflater that refuses messages inflating to more than `limit` bytes.
    pub fn new(limit: usize) -> Inflater {
        Inflater { decompressor: Decompressor::new(), limit, scratch: Vec::new() }
    }

    /// The inflated size limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Inflates the payload of a permessage-deflate message (all its frames, RSV1 on the
    /// first), as RFC 7692 §7.2.2 says: `00 00 ff ff` appended, then inflated. A text
    /// message must inflate to valid UTF-8.
    ///
    /// # Errors
    ///
    /// - [`Error::MessageTooBig`] when the message inflates to more than the limit;
    /// - [`Error::BadCompressedData`] when the payload is not a DEFLATE stream;
    /// - [`Error::InvalidUtf8`] when `text` and the inflated bytes are not UTF-8.
    pub fn inflate_message(&mut self, mut payload: Vec<u8>, text: bool) -> Result<Vec<u8>, Error> {
        if payload.is_empty() {
            // Not a DEFLATE stream, but unambiguous: senders that skip the `00` of an empty
            // message mean an empty message.
            return Ok(payload);
        }
        // A sender that flushed with an empty stored block (the usual way) never sets BFINAL,
        // which libdeflate needs: a final empty stored block follows the RFC's tail.
        payload.extend_from_slice(&RFC_7692_TAIL);
        payload.extend_from_slice(&FINAL_EMPTY_BLOCK);
        let limit = self.limit;
        let scratch = sized(&mut self.scratch, limit);
        let len = map_inflate(self.decompressor.deflate_decompress(&payload, scratch), limit)?;
        let message = scratch[..len].to_vec();
        if text && std::str::from_utf8(&message).is_err() {
            return Err(Error::InvalidUtf8);
        }
        Ok(message)
    }

    /// Inflates the zlib stream of an inbound `C:` frame (the bytes after `C:`).
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooBig`] over the limit; [`Error::BadCompressedData`] when `zlib` is
    /// not a zlib stream or its checksum does not match.
    pub fn inflate_zlib(&mut self, zlib: &[u8]) -> Result<Vec<u8>, Error> {
        let limit = self.limit;
        let scratch = sized(&mut self.scratch, limit);
        let len = map_inflate(self.decompressor.zlib_decompress(zlib, scratch), limit)?;
        Ok(scratch[..len].to_vec())
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("limit", &self.limit).finish()
    }
}

/// Whether a binary message is a `C:` frame of PROTOCOL.md §4; its zlib stream if so.
pub fn c_frame_body(message: &[u8]) -> Option<&[u8]> {
    message.strip_prefix(C_PREFIX)
}

/// `buf`, made exactly `limit` bytes long the first time (zeroed, so the allocator hands out
/// fresh pages that stay uncommitted until written).
fn sized(buf: &mut Vec<u8>, limit: usize) -> &mut [u8] {
    if buf.len() != limit {
        *buf = vec![0; limit];
    }
    buf
}

fn map_inflate(result: Result<usize, DecompressionError>, limit: usize) -> Result<usize, Error> {
    result.map_err(|err| match err {
        DecompressionError::InsufficientSpace => Error::MessageTooBig { limit },
        DecompressionError::BadData => Error::BadCompressedData,
    })
}

/// The prefix of a `C:` frame.
pub const C_PREFIX: &[u8] = b"C:";
/// What RFC 7692 §7.2.1 removes from the end of every compressed message.
pub const RFC_7692_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// A stored block with BFINAL set and no data; follows a byte-aligned stored block.
const FINAL_EMPTY_BLOCK: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];
/// Bytes of a zlib header (CMF, FLG; no preset dictionary).
const ZLIB_HEADER: usize = 2;
/// Bytes of the Adler-32 that ends a zlib stream.
const ZLIB_TRAILER: usize = 4;
const MIN_LEVEL: u8 = 1;
const MAX_LEVEL: u8 = 9;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::frame::decode_header;

    const TEXT: OpCode = OpCode::Data(Data::Text);

    fn json(len: usize) -> Vec<u8> {
        let mut out = br#"{"t":"news","p":{"items":["#.to_vec();
        let mut i = 0;
        while out.len() < len - 3 {
            out.extend_from_slice(format!("\"item {i}\",").as_bytes());
            i += 1;
        }
        out.truncate(len - 3);
        out.extend_from_slice(b"]}}");
        out
    }

    #[test]
    fn c_frame_is_binary_with_prefix_and_a_zlib_stream_that_inflates_back() {
        let message = json(4096);
        let mut deflater = Deflater::new(1).unwrap();
        let frame = deflater.compress(&message).unwrap().c_frame();
        let (header, used) = decode_header(&frame).unwrap().unwrap();
        assert_eq!(header.opcode, OpCode::Data(Data::Binary));
        assert!(header.fin && !header.rsv1);
        assert_eq!(header.payload_len as usize, frame.len() - used);
        let body = c_frame_body(&frame[used..]).unwrap();
        assert_eq!(body[0], 0x78, "zlib CMF: deflate with a 32 KiB window");
        assert_eq!(Inflater::new(1 << 20).inflate_zlib(body).unwrap(), message);
        assert!(frame.len() < message.len() / 2, "{} bytes", frame.len());
    }

    #[test]
    fn deflate_frame_sets_rsv1_and_inflates_as_rfc_7692_says() {
        let message = json(2000);
        let mut deflater = Deflater::new(6).unwrap();
        let compressed = deflater.compress(&message).unwrap();
        let frame = compressed.deflate_frame(TEXT);
        let (header, used) = decode_header(&frame).unwrap().unwrap();
        assert!(header.fin && header.rsv1 && header.opcode == TEXT);
        assert_eq!(frame.last(), Some(&0x00));
        assert_eq!(frame.len() - used, compressed.deflate_payload_len());
        let inflated = Inflater::new(1 << 20).inflate_message(frame[used..].to_vec(), true);
        assert_eq!(inflated.unwrap(), message);
    }

    #[test]
    fn inflates_final_block_payloads_like_the_ones_we_send() {
        // RFC 7692 §7.2.3.3: "Hello" in a BFINAL block, then one 0x00.
        let mut inflater = Inflater::new(100);
        let rfc = vec![0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflater.inflate_message(rfc, true).unwrap(), b"Hello");
        // libdeflate stores a tiny message in a final stored block.
        let mut out = vec![0; 64];
        let len = Deflater::new(1).unwrap().compressor.deflate_compress(b"Hello", &mut out);
        let mut payload = out[..len.unwrap()].to_vec();
        assert_eq!(payload, [0x01, 0x05, 0x00, 0xfa, 0xff, b'H', b'e', b'l', b'l', b'o']);
        payload.push(0x00);
        assert_eq!(inflater.inflate_message(payload, true).unwrap(), b"Hello");
    }

    #[test]
    fn inflates_sync_flushed_messages_as_clients_send_them() {
        // RFC 7692 §7.2.3.1 and §7.2.3.2: "Hello" with and without compression, tail removed.
        let mut inflater = Inflater::new(100);
        let compressed = vec![0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflater.inflate_message(compressed, true).unwrap(), b"Hello");
        let stored = vec![0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflater.inflate_message(stored, true).unwrap(), b"Hello");
        // An empty payload is not a DEFLATE stream; senders mark an empty message `00`.
        assert_eq!(inflater.inflate_message(vec![0x00], true).unwrap(), b"");
        assert_eq!(inflater.inflate_message(Vec::new(), true).unwrap(), b"");
    }

    #[test]
    fn inflates_exactly_the_limit_and_refuses_one_byte_more() {
        let message = vec![b'a'; 10_000];
        let mut deflater = Deflater::new(1).unwrap();
        let compressed = deflater.compress(&message).unwrap();
        let raw = compressed.raw_deflate().to_vec();
        let zlib = compressed.zlib.to_vec();
        assert_eq!(Inflater::new(10_000).inflate_message(raw.clone(), true).unwrap(), message);
        assert_eq!(Inflater::new(10_000).inflate_zlib(&zlib).unwrap(), message);
        let err = Inflater::new(9_999).inflate_message(raw, true).unwrap_err();
        assert_eq!(err, Error::MessageTooBig { limit: 9_999 });
        let err = Inflater::new(9_999).inflate_zlib(&zlib).unwrap_err();
        assert_eq!(err.close_code(), Some(1009));
    }

    #[test]
    fn zlib_bomb_is_refused_within_the_limit_buffer() {
        let bomb_source = vec![0u8; 64 << 20];
        let mut deflater = Deflater::new(9).unwrap();
        let bomb = deflater.compress(&bomb_source).unwrap().zlib.to_vec();
        assert!(bomb.len() < 128 << 10, "{} bytes", bomb.len());
        let mut inflater = Inflater::new(1 << 20);
        assert_eq!(inflater.inflate_zlib(&bomb), Err(Error::MessageTooBig { limit: 1 << 20 }));
        assert_eq!(inflater.scratch.capacity(), 1 << 20);
    }

    #[test]
    fn refuses_garbage_and_bad_checksums() {
        let mut inflater = Inflater::new(1 << 16);
        let garbage = vec![0xff; 32];
        assert_eq!(inflater.inflate_message(garbage.clone(), false), Err(Error::BadCompressedData));
        assert_eq!(inflater.inflate_zlib(&garbage), Err(Error::BadCompressedData));
        let mut zlib = Deflater::new(1).unwrap().compress(&json(3000)).unwrap().zlib.to_vec();
        let last = zlib.len() - 1;
        zlib[last] ^= 1;
        assert_eq!(inflater.inflate_zlib(&zlib), Err(Error::BadCompressedData));
        assert_eq!(Error::BadCompressedData.close_code(), Some(1007));
    }

    #[test]
    fn never_panics_or_exceeds_the_limit_on_mutated_streams() {
        let message = json(3000);
        let zlib = Deflater::new(1).unwrap().compress(&message).unwrap().zlib.to_vec();
        let mut inflater = Inflater::new(2000);
        let mut state = 0x9e37_79b9_u64;
        for round in 0..3000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1442695040888963407);
            let mut bytes = zlib.clone();
            let at = (state >> 33) as usize % bytes.len();
            bytes[at] ^= (state >> 13) as u8 | 1;
            let cut = bytes.len() - round % 7;
            for result in [
                inflater.inflate_zlib(&bytes[..cut]),
                inflater.inflate_message(bytes[2..cut].to_vec(), false),
            ] {
                assert!(result.map_or(true, |m| m.len() <= 2000));
            }
        }
    }

    #[test]
    fn validates_utf8_of_inflated_text_only() {
        let bad = [0x61, 0xce, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a];
        let mut out = vec![0; 64];
        let mut deflater = Deflater::new(1).unwrap();
        let len = deflater.compressor.deflate_compress(&bad, &mut out).unwrap();
        let mut inflater = Inflater::new(100);
        let payload = out[..len].to_vec();
        assert_eq!(inflater.inflate_message(payload.clone(), true), Err(Error::InvalidUtf8));
        assert_eq!(inflater.inflate_message(payload, false).unwrap(), bad);
    }

    #[test]
    fn leaves_incompressible_messages_alone() {
        let mut deflater = Deflater::new(1).unwrap();
        assert!(deflater.compress(b"{\"t\":\"x\"}").is_none());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert!(deflater.compress(&noise).is_none());
    }

    #[test]
    fn refuses_levels_outside_1_to_9() {
        assert!(Deflater::new(0).is_err() && Deflater::new(10).is_err());
        for level in 1..=9 {
            let mut deflater = Deflater::new(level).unwrap();
            let message = json(1500);
            let zlib = deflater.compress(&message).unwrap().zlib.to_vec();
            assert_eq!(Inflater::new(1500).inflate_zlib(&zlib).unwrap(), message);
        }
    }
}
