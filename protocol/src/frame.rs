//! RFC 6455 frame vocabulary and the base framing header (§5.2).
//!
//! Place in the data path: shared by [`crate::reader`] (decoding client frames) and
//! [`crate::writer`] (encoding server frames). It re-exports tungstenite's opcode and close-code
//! types so the whole engine speaks one vocabulary, and decodes the header of one frame from
//! raw bytes. Whether a decoded header is *acceptable* (masking, RSV bits, fragmentation,
//! limits) is the reader's decision, not this module's.

pub use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

use crate::Error;

/// The decoded base framing header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of its message.
    pub fin: bool,
    /// RSV1: set on the first frame of a compressed message when permessage-deflate is in use.
    pub rsv1: bool,
    /// RSV2: no extension we support defines it.
    pub rsv2: bool,
    /// RSV3: no extension we support defines it.
    pub rsv3: bool,
    /// The frame's opcode, reserved values included.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length as announced; at most `2^63 - 1` (checked by [`decode_header`]).
    pub payload_len: u64,
}

/// Whether `opcode` is a control opcode (Close, Ping, Pong or reserved 0xB-0xF).
pub fn is_control(opcode: OpCode) -> bool {
    matches!(opcode, OpCode::Control(_))
}

/// Whether `opcode` is a data opcode (continuation, text, binary or reserved 0x3-0x7).
pub fn is_data(opcode: OpCode) -> bool {
    matches!(opcode, OpCode::Data(_))
}

/// Whether `opcode` is one of the reserved values 0x3-0x7 or 0xB-0xF.
pub fn is_reserved(opcode: OpCode) -> bool {
    matches!(opcode, OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)))
}

/// The full header length announced by a frame's second byte: 2 + extended length + key.
pub fn header_len(second: u8) -> usize {
    let extended = match second & LEN_MASK {
        LEN_16 => 2,
        LEN_64 => 8,
        _ => 0,
    };
    let key = if second & MASK_BIT != 0 { 4 } else { 0 };
    2 + extended + key
}

/// Decodes the frame header at the start of `bytes`.
///
/// Returns `Ok(None)` while `bytes` is shorter than the header, else the header and the number
/// of bytes it took.
///
/// # Errors
///
/// [`Error::Protocol`] when a 64-bit length has its most significant bit set (§5.2).
pub fn decode_header(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
    let [first, second, rest @ ..] = bytes else { return Ok(None) };
    let len = header_len(*second);
    if bytes.len() < len {
        return Ok(None);
    }

    let (payload_len, key_at) = match second & LEN_MASK {
        LEN_16 => (u64::from(u16::from_be_bytes([rest[0], rest[1]])), 2),
        LEN_64 => (u64::from_be_bytes(eight(&rest[..8])), 8),
        short => (u64::from(short), 0),
    };
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(Error::Protocol("64-bit payload length has its top bit set"));
    }

    let mask = (second & MASK_BIT != 0)
        .then(|| [rest[key_at], rest[key_at + 1], rest[key_at + 2], rest[key_at + 3]]);
    let header = FrameHeader {
        fin: first & FIN_BIT != 0,
        rsv1: first & RSV1_BIT != 0,
        rsv2: first & RSV2_BIT != 0,
        rsv3: first & RSV3_BIT != 0,
        opcode: OpCode::from(first & OPCODE_MASK),
        mask,
        payload_len,
    };
    Ok(Some((header, len)))
}

/// Copies exactly eight bytes into an array; `bytes` has been length-checked by the caller.
fn eight(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

/// FIN bit of the first header byte.
pub const FIN_BIT: u8 = 0x80;
/// RSV1 bit of the first header byte.
pub const RSV1_BIT: u8 = 0x40;
/// RSV2 bit of the first header byte.
pub const RSV2_BIT: u8 = 0x20;
/// RSV3 bit of the first header byte.
pub const RSV3_BIT: u8 = 0x10;
/// Opcode bits of the first header byte.
pub const OPCODE_MASK: u8 = 0x0f;
/// MASK bit of the second header byte.
pub const MASK_BIT: u8 = 0x80;
/// Payload-length bits of the second header byte.
pub const LEN_MASK: u8 = 0x7f;
/// Length code announcing a 16-bit extended length.
pub const LEN_16: u8 = 126;
/// Length code announcing a 64-bit extended length.
pub const LEN_64: u8 = 127;
/// The longest header: 2 bytes, 8 bytes of extended length, 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;
/// The largest payload a control frame may carry (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The largest payload length the 64-bit field may hold (its top bit must be 0).
const MAX_PAYLOAD_LEN: u64 = i64::MAX as u64;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_masked_short_text_header() {
        let bytes = [0x81, 0x85, 1, 2, 3, 4, 0x69];
        let (header, used) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(used, 6);
        assert!(header.fin && !header.rsv1 && !header.rsv2 && !header.rsv3);
        assert_eq!(header.opcode, OpCode::Data(Data::Text));
        assert_eq!(header.mask, Some([1, 2, 3, 4]));
        assert_eq!(header.payload_len, 5);
    }

    #[test]
    fn reports_incomplete_header_as_none() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(decode_header(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode_header(&full).unwrap().unwrap().0.payload_len, 65536);
    }

    #[test]
    fn decodes_16_bit_length_and_rsv_bits() {
        let bytes = [0x70 | 0x02, 0x7e, 0x01, 0x00];
        let (header, used) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(used, 4);
        assert!(!header.fin && header.rsv1 && header.rsv2 && header.rsv3);
        assert_eq!(header.mask, None);
        assert_eq!(header.payload_len, 256);
    }

    #[test]
    fn rejects_64_bit_length_with_top_bit_set() {
        let bytes = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert!(matches!(decode_header(&bytes), Err(Error::Protocol(_))));
    }

    #[test]
    fn accepts_largest_63_bit_length() {
        let bytes = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4];
        let (header, _) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(header.payload_len, i64::MAX as u64);
    }

    #[test]
    fn classifies_every_opcode() {
        for code in 0u8..16 {
            let op = OpCode::from(code);
            assert_eq!(is_control(op), code >= 8, "opcode {code:#x}");
            assert_eq!(is_data(op), code < 8, "opcode {code:#x}");
            assert_eq!(is_reserved(op), matches!(code, 3..=7 | 11..=15), "opcode {code:#x}");
        }
    }
}
