//! Frame encoding (RFC 6455 §5.2).
//!
//! Place in the data path: `fanout → shard → **protocol (writer)** → socket`. The shard asks
//! for the header of a server frame and writes header and payload (often a payload shared by
//! many connections) without copying the payload here; [`encode_frame`] and [`encode_close`]
//! are the convenience forms for small frames. Server frames are never masked.
//! [`encode_masked_frame`] builds client frames for load generators, clients and tests.
//! Deciding *what* to send, and compression, belong to the caller.

use crate::close::is_valid_close_code;
use crate::frame::{
    Control, OpCode, FIN_BIT, LEN_16, LEN_64, MASK_BIT, MAX_CONTROL_PAYLOAD, RSV1_BIT,
};
use crate::mask::apply_mask;

/// The header of an unmasked (server) frame: the bytes and how many of them are used (2, 4
/// or 10).
pub fn frame_header(
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload_len: usize,
) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = first_byte(opcode, fin, rsv1);
    let used = put_length(&mut header[1..], payload_len as u64, 0);
    (header, 1 + used)
}

/// Appends one complete unmasked frame with FIN set and no RSV bits to `out`.
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
    let (header, used) = frame_header(opcode, true, false, payload.len());
    out.reserve(used + payload.len());
    out.extend_from_slice(&header[..used]);
    out.extend_from_slice(payload);
}

/// Appends an unmasked Close frame to `out`.
///
/// `None` sends an empty body (and ignores `reason`). A reason longer than the 123 bytes that
/// fit beside the code is cut at the last character boundary that fits. The code is sent as
/// given: codes that may not appear on the wire (1005, 1006, 1015) are the caller's mistake and
/// are caught by a debug assertion.
pub fn encode_close(code: Option<u16>, reason: &str, out: &mut Vec<u8>) {
    let mut body = [0u8; MAX_CONTROL_PAYLOAD];
    let len = match code {
        None => 0,
        Some(code) => {
            debug_assert!(is_valid_close_code(code), "close code {code} may not be sent");
            body[..2].copy_from_slice(&code.to_be_bytes());
            let reason = truncate_at_char(reason, MAX_CONTROL_PAYLOAD - 2);
            body[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
            2 + reason.len()
        }
    };
    encode_frame(OpCode::Control(Control::Close), &body[..len], out);
}

/// Appends one masked (client) frame to `out`, masked with `mask`.
pub fn encode_masked_frame(
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
    mask: [u8; 4],
    out: &mut Vec<u8>,
) {
    let mut header = [0u8; 10];
    header[0] = first_byte(opcode, fin, rsv1);
    let used = put_length(&mut header[1..], payload.len() as u64, MASK_BIT);
    out.reserve(1 + used + 4 + payload.len());
    out.extend_from_slice(&header[..1 + used]);
    out.extend_from_slice(&mask);

    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// The first header byte: FIN, RSV1 and the opcode.
fn first_byte(opcode: OpCode, fin: bool, rsv1: bool) -> u8 {
    let fin = if fin { FIN_BIT } else { 0 };
    let rsv1 = if rsv1 { RSV1_BIT } else { 0 };
    fin | rsv1 | u8::from(opcode)
}

/// Writes the length byte (with `mask_bit` or-ed in) and any extended length into `out`, which
/// holds at least 9 bytes. Returns the number of bytes written (1, 3 or 9).
fn put_length(out: &mut [u8], len: u64, mask_bit: u8) -> usize {
    if len < u64::from(LEN_16) {
        out[0] = mask_bit | len as u8;
        return 1;
    }
    if let Ok(short) = u16::try_from(len) {
        out[0] = mask_bit | LEN_16;
        out[1..3].copy_from_slice(&short.to_be_bytes());
        return 3;
    }
    out[0] = mask_bit | LEN_64;
    out[1..9].copy_from_slice(&len.to_be_bytes());
    9
}

/// The longest prefix of `text` that fits in `max` bytes and ends on a character boundary.
fn truncate_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let end = (0..=max).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::frame::{decode_header, Data};

    const TEXT: OpCode = OpCode::Data(Data::Text);
    const BINARY: OpCode = OpCode::Data(Data::Binary);

    #[test]
    fn encodes_short_unmasked_text_frame() {
        let mut out = Vec::new();
        encode_frame(TEXT, b"Hello", &mut out);
        assert_eq!(out, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
    }

    #[test]
    fn uses_the_shortest_length_encoding_at_each_boundary() {
        for (len, used) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (1 << 40, 10)] {
            let (header, got) = frame_header(BINARY, true, false, len);
            assert_eq!(got, used, "length {len}");
            let (decoded, _) = decode_header(&header[..got]).unwrap().unwrap();
            assert_eq!(decoded.payload_len, len as u64);
            assert_eq!(decoded.mask, None);
        }
    }

    #[test]
    fn sets_rsv1_and_clears_fin_when_asked() {
        let (header, _) = frame_header(TEXT, false, true, 3);
        assert_eq!(header[0], 0x41);
    }

    #[test]
    fn encodes_masked_frame_as_in_case_c03() {
        let mut out = Vec::new();
        encode_masked_frame(TEXT, true, false, b"hello", [1, 2, 3, 4], &mut out);
        assert_eq!(out, [0x81, 0x85, 1, 2, 3, 4, 0x69, 0x67, 0x6f, 0x68, 0x6e]);
    }

    #[test]
    fn encodes_masked_frame_with_64_bit_length() {
        let mut out = Vec::new();
        encode_masked_frame(BINARY, true, false, &[0u8; 70_000], [1, 2, 3, 4], &mut out);
        let (header, used) = decode_header(&out).unwrap().unwrap();
        assert_eq!((used, header.payload_len), (14, 70_000));
        assert_eq!(header.mask, Some([1, 2, 3, 4]));
        assert_eq!(&out[14..18], &[1, 2, 3, 4]);
    }

    #[test]
    fn encodes_close_with_code_as_in_case_c04() {
        let mut out = Vec::new();
        encode_close(Some(1000), "", &mut out);
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
    }

    #[test]
    fn encodes_close_without_code_as_empty_body() {
        let mut out = Vec::new();
        encode_close(None, "ignored", &mut out);
        assert_eq!(out, [0x88, 0x00]);
    }

    #[test]
    fn truncates_long_close_reason_at_char_boundary() {
        let reason = "κ".repeat(100);
        let mut out = Vec::new();
        encode_close(Some(4401), &reason, &mut out);
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert_eq!(out.len() - 4, 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
