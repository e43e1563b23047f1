//! HMAC-SHA256 message signing of JSON text frames (PROTOCOL.md §6, an **ext**).
//!
//! Place in the data path: on the way out, `shard` serialises an envelope and, when signing is
//! on for the connection, passes the JSON text through [`sign`] before framing (and before
//! [`crate::e2e`] seals it); on the way in, after [`crate::e2e`] has opened an `E:` frame (or
//! for a plain text frame), [`verify`] checks the `"sig"` key before the envelope is parsed.
//!
//! The signed bytes are the frame's JSON text up to (not including) the `,"sig":` that starts
//! the last key, followed by `}`: the signer never re-serialises anything, and the verifier
//! needs no JSON parser and no copy. An object that was empty before signing is sent as
//! `{"sig":"..."}` and its signed bytes are `{}`.
//!
//! The key is either the configured shared secret ([`SigningKey::from_secret`]) or, on an E2E
//! connection, the one derived from the key agreement ([`crate::e2e::SessionKeys`]). The
//! wse-client 2.x packages never derive that key (their signing key is random and never sent),
//! so verification is only meaningful for clients that implement this extension.

use aws_lc_rs::{constant_time, hmac};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::Error;

/// An HMAC-SHA256 key for signing and verifying frames.
#[derive(Clone, Debug)]
pub struct SigningKey {
    /// The aws-lc-rs key; its bytes are not kept anywhere else.
    key: hmac::Key,
}

impl SigningKey {
    /// A key from a shared secret (the configured signing secret, or 32 bytes derived by HKDF).
    pub fn from_secret(secret: &[u8]) -> Self {
        SigningKey { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }
}

/// Appends to `out` the JSON object `json` with `,"sig":"<base64 HMAC>"` inserted before its
/// final `}` (an empty object `{}` becomes `{"sig":"..."}`).
///
/// `json` must be one JSON object's text whose last byte is `}`; whitespace before that `}` is
/// kept. Apart from growing `out`, nothing is allocated.
///
/// # Errors
/// [`Error::InvalidMessage`] when `json` does not start with `{` and end with `}`; nothing is
/// appended then.
pub fn sign(key: &SigningKey, json: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let Some((&b'}', body)) = json.split_last() else {
        return Err(Error::InvalidMessage("signing: text does not end in '}'".into()));
    };
    if json.first() != Some(&b'{') {
        return Err(Error::InvalidMessage("signing: text is not a JSON object".into()));
    }

    // An empty object is signed as `{}` and sent as `{"sig":...}`.
    let empty = body[1..].iter().all(u8::is_ascii_whitespace);
    let (signed, head): (&[u8], &[u8]) = if empty { (b"{}", b"{") } else { (json, body) };
    let tag = hmac::sign(&key.key, signed);
    let mut b64 = [0u8; SIG_B64_LEN];
    let written = STANDARD
        .encode_slice(tag.as_ref(), &mut b64)
        .map_err(|_| Error::Crypto("signing: base64 buffer too small for an HMAC-SHA256 tag"))?;

    out.reserve(head.len() + SIG_KEY_COMMA.len() + written + 2);
    out.extend_from_slice(head);
    out.extend_from_slice(if empty { &SIG_KEY_COMMA[1..] } else { SIG_KEY_COMMA });
    out.push(b'"');
    out.extend_from_slice(&b64[..written]);
    out.extend_from_slice(b"\"}");
    Ok(())
}

/// Checks that `frame` ends with a `"sig"` key whose value is the HMAC of the §6 bytes.
///
/// The last key must be `"sig"`, written as `,"sig":"<std base64>"` (or the object must be
/// exactly `{"sig":"<std base64>"`), followed only by optional whitespace and the final `}`.
/// Comparison is constant time.
///
/// # Errors
/// [`Error::SignatureMissing`] when no `,"sig":` key (nor a leading `{"sig":`) is found;
/// [`Error::SignatureMalformed`] when the value is not a string holding the standard base64 of
/// 32 bytes, or is followed by anything but whitespace and `}` (a `sig` that is not the last
/// key); [`Error::SignatureMismatch`] when the HMAC differs.
pub fn verify(key: &SigningKey, frame: &[u8]) -> Result<(), Error> {
    let (prefix, value) = split_signature(frame)?;
    let sig = parse_sig_value(value)?;

    // The signed bytes are not contiguous (prefix, then `}`), so instead of `hmac::verify`,
    // which wants one slice and would need a copy, hash both parts and compare in constant time.
    let mut ctx = hmac::Context::with_key(&key.key);
    ctx.update(prefix);
    ctx.update(b"}");
    let tag = ctx.sign();
    constant_time::verify_slices_are_equal(tag.as_ref(), &sig).map_err(|_| Error::SignatureMismatch)
}

/// Splits a signed frame into the bytes before `}` that were signed and the text after
/// `"sig":` (the quoted value and the tail).
fn split_signature(frame: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    if let Some(at) = rfind(frame, SIG_KEY_COMMA) {
        return Ok((&frame[..at], &frame[at + SIG_KEY_COMMA.len()..]));
    }

    // `{"sig":...}`: an object that was empty before signing, signed as `{}`.
    match frame.strip_prefix(SIG_KEY_FIRST) {
        Some(rest) => Ok((b"{", rest)),
        None => Err(Error::SignatureMissing),
    }
}

/// Parses `"<base64>"` + optional whitespace + `}` (end of frame) into the 32-byte tag.
fn parse_sig_value(value: &[u8]) -> Result<[u8; SIG_LEN], Error> {
    let Some(rest) = value.strip_prefix(b"\"") else {
        return Err(Error::SignatureMalformed("value is not a string"));
    };
    let Some(close) = rest.iter().position(|&b| b == b'"') else {
        return Err(Error::SignatureMalformed("unterminated string"));
    };
    let (b64, tail) = (&rest[..close], &rest[close + 1..]);
    match tail.split_last() {
        Some((&b'}', ws)) if ws.iter().all(u8::is_ascii_whitespace) => {}
        _ => return Err(Error::SignatureMalformed("sig is not the last key")),
    }

    if b64.len() != SIG_B64_LEN {
        return Err(Error::SignatureMalformed("not the base64 of 32 bytes"));
    }
    // One spare byte: the decoder wants room for its length estimate (33 for 44 chars).
    let mut buf = [0u8; SIG_LEN + 1];
    match STANDARD.decode_slice(b64, &mut buf) {
        Ok(SIG_LEN) => {
            let mut sig = [0u8; SIG_LEN];
            sig.copy_from_slice(&buf[..SIG_LEN]);
            Ok(sig)
        }
        Ok(_) => Err(Error::SignatureMalformed("not the base64 of 32 bytes")),
        Err(_) => Err(Error::SignatureMalformed("not standard base64")),
    }
}

/// The last position of `needle` in `haystack`.
fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The key that starts a signature, with its leading comma.
const SIG_KEY_COMMA: &[u8] = b",\"sig\":";
/// The start of a signed object that was empty before signing.
const SIG_KEY_FIRST: &[u8] = b"{\"sig\":";
/// Length of an HMAC-SHA256 tag.
const SIG_LEN: usize = 32;
/// Length of a 32-byte value in standard base64 with padding.
const SIG_B64_LEN: usize = 44;

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_secret(b"a shared signing secret of 32+ b")
    }

    fn signed(key: &SigningKey, json: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sign(key, json, &mut out).expect("test input is an object");
        out
    }

    /// Replaces the first occurrence of `from` in `frame` with `to`.
    fn replace(frame: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = frame.windows(from.len()).position(|w| w == from).expect("pattern present");
        [&frame[..at], to, &frame[at + from.len()..]].concat()
    }

    #[test]
    fn signature_is_appended_as_last_key() {
        let out = signed(&key(), br#"{"t":"a","p":{"x":1}}"#);
        assert!(out.starts_with(br#"{"t":"a","p":{"x":1},"sig":""#));
        assert!(out.ends_with(b"\"}"));
        assert_eq!(out.len(), br#"{"t":"a","p":{"x":1}}"#.len() + 7 + 44 + 2);
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let k = key();
        verify(&k, &signed(&k, br#"{"t":"a","p":{"x":1}}"#)).expect("round trip");
    }

    #[test]
    fn empty_object_is_signed_as_sig_only() {
        let k = key();
        let out = signed(&k, b"{}");
        assert!(out.starts_with(br#"{"sig":""#));
        verify(&k, &out).expect("round trip");
        let with_space = signed(&k, b"{ }");
        assert_eq!(with_space, out);
    }

    #[test]
    fn sign_appends_to_existing_buffer() {
        let mut out = b"prefix".to_vec();
        sign(&key(), br#"{"a":1}"#, &mut out).expect("object");
        assert!(out.starts_with(br#"prefix{"a":1,"sig":"#));
    }

    #[test]
    fn sign_refuses_non_object_text() {
        let mut out = Vec::new();
        assert!(sign(&key(), b"[1,2]", &mut out).is_err());
        assert!(sign(&key(), br#"{"a":1} "#, &mut out).is_err());
        assert!(sign(&key(), b"", &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn whitespace_before_closing_brace_is_kept_and_verifies() {
        let k = key();
        let out = signed(&k, b"{\"a\":1 \n}");
        assert!(out.starts_with(b"{\"a\":1 \n,\"sig\":"));
        verify(&k, &out).expect("round trip");
        let spaced = replace(&out, b"\"}", b"\" \n }");
        verify(&k, &spaced).expect("whitespace after the value is allowed");
    }

    #[test]
    fn tampered_body_is_rejected() {
        let k = key();
        let out = signed(&k, br#"{"t":"a","p":{"x":1}}"#);
        let bad = replace(&out, br#""x":1"#, br#""x":2"#);
        assert_eq!(verify(&k, &bad), Err(Error::SignatureMismatch));
    }

    #[test]
    fn tampered_signature_is_rejected() {
        let k = key();
        let mut out = signed(&k, br#"{"t":"a"}"#);
        let at = out.len() - 10;
        out[at] = if out[at] == b'A' { b'B' } else { b'A' };
        assert_eq!(verify(&k, &out), Err(Error::SignatureMismatch));
    }

    #[test]
    fn other_key_is_rejected() {
        let out = signed(&key(), br#"{"t":"a"}"#);
        let other = SigningKey::from_secret(b"another secret");
        assert_eq!(verify(&other, &out), Err(Error::SignatureMismatch));
    }

    #[test]
    fn missing_signature_is_rejected() {
        assert_eq!(verify(&key(), br#"{"t":"a"}"#), Err(Error::SignatureMissing));
        assert_eq!(verify(&key(), br#"{"t":"a","sg":"x"}"#), Err(Error::SignatureMissing));
    }

    #[test]
    fn signature_not_last_is_rejected() {
        let k = key();
        let out = signed(&k, br#"{"t":"a"}"#);
        let moved = replace(&out, b"\"}", br#"","x":1}"#);
        assert!(matches!(verify(&k, &moved), Err(Error::SignatureMalformed(_))));
        let first = signed(&k, b"{}");
        let moved = replace(&first, b"\"}", br#"","t":"a"}"#);
        assert!(matches!(verify(&k, &moved), Err(Error::SignatureMalformed(_))));
    }

    #[test]
    fn malformed_signature_values_are_rejected() {
        let k = key();
        for frame in [
            &br#"{"t":"a","sig":12}"#[..],
            br#"{"t":"a","sig":"abc"}"#,
            br#"{"t":"a","sig":"not*base64*at*all*not*base64*at*all*not*bas="}"#,
            br#"{"t":"a","sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}"#,
            br#"{"t":"a","sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}x"#,
            br#"{"t":"a","sig":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="#,
        ] {
            assert!(
                matches!(verify(&k, frame), Err(Error::SignatureMalformed(_))),
                "{}",
                String::from_utf8_lossy(frame)
            );
        }
    }

    #[test]
    fn matches_python_vectors() {
        let k = SigningKey::from_secret(&hex(PY_SIGNING_KEY));
        assert_eq!(signed(&k, PY_SIGN_INPUT.as_bytes()), PY_SIGNED.as_bytes());
        assert_eq!(signed(&k, b"{}"), PY_SIGNED_EMPTY.as_bytes());
        verify(&k, PY_SIGNED.as_bytes()).expect("python frame verifies");
        verify(&k, PY_SIGNED_EMPTY.as_bytes()).expect("python frame verifies");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // Output of `scripts/e2e_vectors.py` (Python `cryptography` and stdlib `hmac`).
    const PY_SIGNING_KEY: &str = "a95c92d5587dc17080551c1f09ab255e708995e108f25aa24325989d9e5686fe";
    const PY_SIGN_INPUT: &str = r#"{"c":"U","t":"note","p":{"text":"hello"},"v":1}"#;
    const PY_SIGNED: &str = concat!(
        r#"{"c":"U","t":"note","p":{"text":"hello"},"v":1,"#,
        r#""sig":"cBh5ZOBnx5qg4QsWpw0SCbPCTdNsE+bifA6+tcsxqko="}"#
    );
    const PY_SIGNED_EMPTY: &str = r#"{"sig":"EzJKHxd/INmRg5cveF7C5PWYO7dfUyxp2iiK3Obhxt0="}"#;
}
