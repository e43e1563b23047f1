//! Masking and unmasking of frame payloads (RFC 6455 §5.3).
//!
//! Place in the data path: `socket → shard → protocol (reader → **mask**)`. Every frame a
//! client sends is masked with a 4-byte masking key; [`crate::reader`] unmasks payload bytes as
//! they arrive, so one frame may be unmasked in many pieces. [`apply_mask`] therefore takes the
//! position in the key at which the piece starts and returns the position for the next piece.
//! Masking and unmasking are the same XOR; [`crate::writer`] uses it to build client frames.
//!
//! The work is done eight bytes at a time with a `u64` XOR in safe code; no SIMD, no `unsafe`.

/// XORs `data` in place with the masking `key`, starting at key position `offset`.
///
/// `offset` is the number of payload bytes of this frame already processed, modulo 4 (any
/// value is accepted and reduced). Returns the key position for the byte after `data`, to pass
/// as `offset` when the next piece of the same payload arrives.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let key = rotate_key(key, offset);
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);

    // Eight bytes is two whole keys, so every chunk starts at key position 0 of `key`.
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
    (offset + data.len()) % 4
}

/// Appends `input` XORed with `key` (from key position `offset`) to `out`.
///
/// The streaming form used by the reader: payload bytes go straight from the socket buffer
/// into the message buffer. Returns the key position for the next piece, as [`apply_mask`].
pub fn unmask_into(input: &[u8], key: [u8; 4], offset: usize, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(input);
    apply_mask(&mut out[start..], key, offset)
}

/// The key as seen from position `offset`: byte `i` of the result masks payload byte
/// `offset + i`.
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut rotated = key;
    rotated.rotate_left(offset % 4);
    rotated
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn naive(data: &[u8], key: [u8; 4], offset: usize) -> Vec<u8> {
        data.iter().enumerate().map(|(i, b)| b ^ key[(offset + i) % 4]).collect()
    }

    #[test]
    fn masks_the_rfc_hello_sample() {
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn matches_bytewise_xor_for_every_length_and_offset() {
        let key = [0x01, 0x02, 0x03, 0x04];
        let data: Vec<u8> = (0..=40u8).collect();
        for len in 0..data.len() {
            for offset in 0..8 {
                let mut got = data[..len].to_vec();
                let next = apply_mask(&mut got, key, offset);
                assert_eq!(got, naive(&data[..len], key, offset), "len {len} offset {offset}");
                assert_eq!(next, (offset + len) % 4);
            }
        }
    }

    #[test]
    fn unmasks_a_payload_delivered_in_pieces() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let plain: Vec<u8> = (0..100u8).collect();
        let masked = naive(&plain, key, 0);
        for split in [1usize, 3, 7, 9, 17] {
            let mut out = Vec::new();
            let mut offset = 0;
            for piece in masked.chunks(split) {
                offset = unmask_into(piece, key, offset, &mut out);
            }
            assert_eq!(out, plain, "piece size {split}");
        }
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let mut data = b"round trip through the mask".to_vec();
        apply_mask(&mut data, [9, 8, 7, 6], 2);
        apply_mask(&mut data, [9, 8, 7, 6], 2);
        assert_eq!(data, b"round trip through the mask");
    }
}
