//! Early judgement of a permessage-deflate text message that arrives in fragments.
//!
//! Place in the data path: `socket → shard → **reader (fragment check)** → shard inflates the
//! whole message → envelope`. The message itself is inflated once it is complete, in one shot
//! by [`crate::deflate::Inflater`] (libdeflate has no streaming mode). Without more, bad UTF-8
//! in the first fragment of a compressed message would be found only after the last one,
//! which may come much later or never (case C05 asks to fail fast). So while a compressed
//! text message is open across fragments, [`FragmentCheck`] inflates each fragment as it
//! arrives with a streaming inflater (miniz_oxide) into a small scratch buffer it then
//! forgets, keeping only the incomplete UTF-8 sequence at the end (at most 3 bytes) and the
//! running inflated size. It fails the message as soon as the inflated text can no longer be
//! valid UTF-8, passes the message limit, or the data does not inflate.
//!
//! Cost: the inflater's state (about 43 KB, mostly its 32 KiB window) exists only while such a
//! message is open, and those messages are inflated twice. Single-frame messages, the usual
//! case, never come here. What it leaves to the final inflation: the end of the message (an
//! incomplete last character, the `00 00 ff ff` tail of RFC 7692).

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

use crate::Error;

/// The streaming check of one open compressed text message.
pub struct FragmentCheck {
    state: Box<InflateState>,
    /// Inflated bytes so far; never above `limit` (the check fails first).
    inflated: usize,
    /// The bytes of a character cut by the end of the inflated output so far.
    carry: [u8; 3],
    /// How many of `carry` are meaningful.
    carry_len: usize,
    /// The message limit (`max_message_size`).
    limit: usize,
    /// Set once the DEFLATE stream's final block was read: later bytes are not inflated here.
    ended: bool,
}

impl FragmentCheck {
    /// A check for a message whose inflated size may not pass `limit`.
    pub fn new(limit: usize) -> FragmentCheck {
        FragmentCheck {
            state: InflateState::new_boxed(DataFormat::Raw),
            inflated: 0,
            carry: [0; 3],
            carry_len: 0,
            limit,
            ended: false,
        }
    }

    /// Inflates the next compressed bytes of the message and judges what they inflate to.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUtf8`] once the text can no longer be valid, [`Error::MessageTooBig`]
    /// past the limit, [`Error::BadCompressedData`] when the bytes do not inflate: fail the
    /// connection with the error's close code.
    pub fn feed(&mut self, mut compressed: &[u8]) -> Result<(), Error> {
        let mut out = [0u8; SCRATCH];
        while !self.ended && !compressed.is_empty() {
            out[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            let step =
                inflate(&mut self.state, compressed, &mut out[self.carry_len..], MZFlush::None);
            compressed = &compressed[step.bytes_consumed..];
            self.inflated += step.bytes_written;
            if self.inflated > self.limit {
                return Err(Error::MessageTooBig { limit: self.limit });
            }
            self.judge(&out[..self.carry_len + step.bytes_written])?;

            match step.status {
                Ok(MZStatus::StreamEnd) => self.ended = true,
                Ok(_) => {}
                // No progress without more input: wait for the next fragment.
                Err(MZError::Buf) => return Ok(()),
                Err(_) => return Err(Error::BadCompressedData),
            }
            if step.bytes_consumed == 0 && step.bytes_written == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Checks `text` (the carried bytes, then new output) and keeps its unfinished end.
    fn judge(&mut self, text: &[u8]) -> Result<(), Error> {
        let tail = match std::str::from_utf8(text) {
            Ok(_) => &[][..],
            Err(e) if e.error_len().is_none() => &text[e.valid_up_to()..],
            Err(_) => return Err(Error::InvalidUtf8),
        };
        self.carry[..tail.len()].copy_from_slice(tail);
        self.carry_len = tail.len();
        Ok(())
    }
}

impl std::fmt::Debug for FragmentCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FragmentCheck")
            .field("inflated", &self.inflated)
            .field("carry_len", &self.carry_len)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Bytes of inflated output judged per step (on the stack).
const SCRATCH: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as raw DEFLATE with a sync flush, the way permessage-deflate clients send it
    /// (`00 00 ff ff` removed), cut into pieces of `piece` bytes.
    fn pieces(text: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let deflated = miniz_oxide::deflate::compress_to_vec(text, 6);
        deflated.chunks(piece).map(<[u8]>::to_vec).collect()
    }

    fn check_all(text: &[u8], piece: usize, limit: usize) -> Result<(), Error> {
        let mut check = FragmentCheck::new(limit);
        for part in pieces(text, piece) {
            check.feed(&part)?;
        }
        Ok(())
    }

    #[test]
    fn valid_text_passes_however_it_is_cut() {
        let text = "κόσμε 𝄞 ascii and more κόσμε ".repeat(50);
        for piece in [1, 2, 3, 7, 64, 10_000] {
            assert!(check_all(text.as_bytes(), piece, 1 << 20).is_ok(), "piece {piece}");
        }
    }

    #[test]
    fn bad_utf8_fails_at_the_piece_that_carries_it() {
        let mut text = "ok ".repeat(200).into_bytes();
        text.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]); // above U+10FFFF
        text.extend_from_slice("and more text after it".repeat(100).as_bytes());
        let parts = pieces(&text, 16);
        let mut check = FragmentCheck::new(1 << 20);
        let failed_at = parts.iter().position(|p| check.feed(p).is_err());
        let failed_at = failed_at.expect("bad UTF-8 found");
        assert!(failed_at < parts.len() - 1, "found only at the end ({failed_at})");
    }

    #[test]
    fn a_character_cut_at_the_end_is_left_to_the_final_inflation() {
        let mut text = "abc".repeat(10).into_bytes();
        text.push(0xce); // first byte of "κ", nothing after it
        assert!(check_all(&text, 5, 1 << 20).is_ok());
    }

    #[test]
    fn inflating_past_the_limit_fails_early() {
        let zeros = vec![b'a'; 1 << 20];
        let parts = pieces(&zeros, 64);
        let mut check = FragmentCheck::new(64 * 1024);
        let result = parts.iter().try_for_each(|p| check.feed(p));
        assert!(matches!(result, Err(Error::MessageTooBig { limit: 65536 })));
        assert!(check.inflated <= 64 * 1024 + SCRATCH);
    }

    #[test]
    fn data_that_does_not_inflate_fails() {
        let mut check = FragmentCheck::new(1 << 20);
        // A block with the reserved type 11.
        assert!(matches!(check.feed(&[0xff, 0xff, 0xff]), Err(Error::BadCompressedData)));
    }
}
