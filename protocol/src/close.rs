//! Close-frame bodies and status codes (RFC 6455 §5.5.1, §7.4).
//!
//! Place in the data path: [`crate::reader`] hands the payload of every received Close frame
//! to [`parse_close_payload`]; [`crate::writer`] encodes the Close the server sends. This module
//! decides which status codes a peer may send and keeps the code the peer really sent, so logs
//! and callbacks see it unchanged. The 125-byte limit on control payloads is the reader's job.

use crate::Error;

/// A received Close body: the status code and the UTF-8 reason (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code as sent by the peer; always one [`is_valid_close_code`] accepts.
    pub code: u16,
    /// The reason text; empty when the peer sent only a code.
    pub reason: String,
}

/// Whether a peer may send `code` in a Close frame (§7.4.1, §7.4.2).
///
/// Valid: 1000-1003, 1007-1014 (defined by the protocol) and 3000-4999 (libraries and
/// applications). Everything else is invalid on the wire: 0-999 are unused, 1004 is reserved,
/// 1005, 1006 and 1015 are for local reporting only, 1016-2999 are unassigned protocol codes,
/// 5000 and above are out of range.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Parses the payload of a received Close frame.
///
/// An empty payload is valid and yields `None` (the peer gave no status code).
///
/// # Errors
///
/// - [`Error::Protocol`] for a one-byte payload or a status code that may not be sent;
/// - [`Error::InvalidUtf8`] when the reason is not valid UTF-8.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(Error::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !is_valid_close_code(code) {
        return Err(Error::Protocol("invalid close code"));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidUtf8)?;
    Ok(Some(CloseFrame { code, reason: reason.to_owned() }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    /// Every invalid code named in case C06, plus the edges of each invalid range.
    const INVALID: [u16; 17] = [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 5001, 9999, 65535, 500,
        1999,
    ];
    /// Every valid code named in case C06, plus the remaining edges of the valid ranges.
    const VALID: [u16; 16] = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];

    #[test]
    fn accepts_empty_payload_as_no_status() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
    }

    #[test]
    fn rejects_one_byte_payload() {
        assert!(matches!(parse_close_payload(&[0x03]), Err(Error::Protocol(_))));
    }

    #[test]
    fn rejects_every_invalid_code_in_c06() {
        for code in INVALID {
            assert!(!is_valid_close_code(code), "code {code}");
            let payload = code.to_be_bytes();
            assert!(matches!(parse_close_payload(&payload), Err(Error::Protocol(_))), "{code}");
        }
    }

    #[test]
    fn accepts_every_valid_code_in_c06_and_keeps_it() {
        for code in VALID {
            let frame = parse_close_payload(&code.to_be_bytes()).unwrap().unwrap();
            assert_eq!(frame, CloseFrame { code, reason: String::new() });
        }
    }

    #[test]
    fn classifies_every_u16_by_range() {
        let valid = (0..=u16::MAX).filter(|c| is_valid_close_code(*c)).count();
        assert_eq!(valid, 4 + 8 + 2000);
    }

    #[test]
    fn keeps_utf8_reason() {
        let frame = parse_close_payload(b"\x0f\xa0bye \xce\xba").unwrap().unwrap();
        assert_eq!(frame, CloseFrame { code: 4000, reason: "bye κ".into() });
    }

    #[test]
    fn rejects_reason_that_is_not_utf8() {
        assert_eq!(parse_close_payload(&[0x03, 0xe8, 0xff, 0xfe]), Err(Error::InvalidUtf8));
    }
}
