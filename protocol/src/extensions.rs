//! `Sec-WebSocket-Extensions` negotiation: permessage-deflate (RFC 7692 §7).
//!
//! Place in the data path: `socket → shard → protocol (handshake → **extensions**)`, once per
//! upgrade. [`negotiate_permessage_deflate`] reads the client's offers (RFC 6455 §9.1 syntax)
//! and picks the first permessage-deflate offer the server can honour; [`Agreement::response`]
//! is the header value to answer with. Anything else in the header (other extensions, offers
//! we decline) is skipped, and a header that does not parse declines every offer: the
//! upgrade goes on without compression either way, never with a 400.
//!
//! What the server can honour follows from [`crate::deflate`] being one-shot: it always asks
//! for `server_no_context_takeover` and `client_no_context_takeover`, so no connection keeps
//! a compression context. It cannot limit its own LZ77 window below 32 KiB, so an offer with
//! `server_max_window_bits` under 15 is declined (§7.1.2.1); it inflates any window, so
//! `client_max_window_bits` is always fine and is echoed only when the offer gave a value
//! (§7.1.2.2). Offers with an unknown or repeated parameter, or a value out of range, are
//! declined (§7). Parsing is one pass over the header: linear in its length (which the
//! handshake already caps at 16 KiB), allocating only to unescape quoted values.

/// What the server agreed to for one connection's permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The accepted offer named `server_max_window_bits` (it can only have been 15).
    server_max_window_bits: bool,
    /// The value the accepted offer gave `client_max_window_bits`, to echo.
    client_max_window_bits: Option<u8>,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value of the `101` response.
    pub fn response(&self) -> String {
        let mut out = String::from(PERMESSAGE_DEFLATE);
        out.push_str("; server_no_context_takeover; client_no_context_takeover");
        if self.server_max_window_bits {
            out.push_str("; server_max_window_bits=15");
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// The first permessage-deflate offer in `header` that the server can honour, if any.
///
/// `header` is every `Sec-WebSocket-Extensions` value of the request, joined with `", "`.
/// `None` when there is no such offer or the header does not parse.
pub fn negotiate_permessage_deflate(header: &str) -> Option<Agreement> {
    let mut cursor = Cursor { bytes: header.as_bytes(), at: 0 };
    let mut chosen = None;
    loop {
        cursor.skip_ows();
        if cursor.eat(b',') {
            continue; // empty list elements are allowed (RFC 9110 §5.6.1)
        }
        if cursor.done() {
            return chosen;
        }
        let name = cursor.token()?;
        let mut offer = (name == PERMESSAGE_DEFLATE.as_bytes()).then(Offer::default);
        cursor.skip_ows();
        while cursor.eat(b';') {
            cursor.skip_ows();
            let param = cursor.token()?;
            cursor.skip_ows();
            let value = if cursor.eat(b'=') {
                cursor.skip_ows();
                Some(cursor.value()?)
            } else {
                None
            };
            if let Some(o) = offer.as_mut() {
                o.add(param, value.as_deref());
            }
            cursor.skip_ows();
        }
        if !cursor.done() && !cursor.eat(b',') {
            return None;
        }
        if chosen.is_none() {
            chosen = offer.and_then(Offer::agreement);
        }
    }
}

/// The parameters of one permessage-deflate offer, as far as they were read.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `server_max_window_bits` and its value.
    server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`, with its value if it had one.
    client_max_window_bits: Option<Option<u8>>,
    /// An unknown or repeated parameter, or a bad value: the offer must be declined.
    invalid: bool,
}

impl Offer {
    fn add(&mut self, name: &[u8], value: Option<&[u8]>) {
        let ok = match name {
            b"server_no_context_takeover" => set_flag(&mut self.server_no_context_takeover, value),
            b"client_no_context_takeover" => set_flag(&mut self.client_no_context_takeover, value),
            b"server_max_window_bits" => {
                let bits = value.and_then(window_bits);
                let fresh = self.server_max_window_bits.is_none();
                self.server_max_window_bits = self.server_max_window_bits.or(bits);
                fresh && bits.is_some()
            }
            b"client_max_window_bits" => {
                // Without a value it only says that the client could limit its window.
                let bits = match value {
                    None => Some(None),
                    Some(v) => window_bits(v).map(Some),
                };
                let fresh = self.client_max_window_bits.is_none();
                self.client_max_window_bits = self.client_max_window_bits.or(bits);
                fresh && bits.is_some()
            }
            _ => false,
        };
        self.invalid |= !ok;
    }

    fn agreement(self) -> Option<Agreement> {
        if self.invalid || self.server_max_window_bits.is_some_and(|bits| bits < 15) {
            return None;
        }
        Some(Agreement {
            server_max_window_bits: self.server_max_window_bits.is_some(),
            client_max_window_bits: self.client_max_window_bits.flatten(),
        })
    }
}

/// Sets a parameter that takes no value; `false` when it had one or was already set.
fn set_flag(flag: &mut bool, value: Option<&[u8]>) -> bool {
    let ok = !*flag && value.is_none();
    *flag = true;
    ok
}

/// A window-bits value: "8" to "15", decimal, no leading zeros (RFC 7692 §7.1.2.1).
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// A position in the header being parsed.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Consumes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.at += usize::from(next);
        next
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// A non-empty token (RFC 9110 §5.6.2).
    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| &self.bytes[start..self.at])
    }

    /// A parameter value: a token, or a quoted string whose content (unescaped) is one
    /// (RFC 6455 §9.1).
    fn value(&mut self) -> Option<Vec<u8>> {
        if !self.eat(b'"') {
            return self.token().map(<[u8]>::to_vec);
        }
        let mut out = Vec::new();
        loop {
            let byte = self.peek()?;
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    out.push(self.peek()?);
                    self.at += 1;
                }
                _ => out.push(byte),
            }
        }
        (!out.is_empty() && out.iter().copied().all(is_tchar)).then_some(out)
    }
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The extension's registered name.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const BASE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    fn answer(offer: &str) -> Option<String> {
        negotiate_permessage_deflate(offer).map(|a| a.response())
    }

    #[test]
    fn c08_row_1_plain_offer_gets_no_client_window_bits() {
        assert_eq!(answer("permessage-deflate").as_deref(), Some(BASE));
    }

    #[test]
    fn c08_row_2_bare_client_window_bits_is_not_echoed() {
        assert_eq!(answer("permessage-deflate; client_max_window_bits").as_deref(), Some(BASE));
        for bits in 8..=15 {
            let offer = format!("permessage-deflate; client_max_window_bits={bits}");
            let want = format!("{BASE}; client_max_window_bits={bits}");
            assert_eq!(answer(&offer), Some(want));
        }
    }

    #[test]
    fn c08_row_3_server_window_under_15_is_declined() {
        for bits in 8..=14 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            assert_eq!(answer(&offer), None, "{offer}");
        }
        let want = format!("{BASE}; server_max_window_bits=15");
        assert_eq!(answer("permessage-deflate; server_max_window_bits=15"), Some(want));
    }

    #[test]
    fn c08_row_4_no_context_takeover_is_echoed() {
        let offer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover";
        assert_eq!(answer(offer).as_deref(), Some(BASE));
    }

    #[test]
    fn c08_row_5_unknown_bad_and_repeated_parameters_decline_the_offer() {
        for offer in [
            "permessage-deflate; foo=1",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            // Variants of our own.
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=15; server_max_window_bits=15",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=0x0f",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; Server_No_Context_Takeover",
            "permessage-deflate; foo",
        ] {
            assert_eq!(answer(offer), None, "{offer}");
        }
    }

    #[test]
    fn c08_row_6_first_acceptable_offer_wins() {
        let offer = "permessage-deflate; server_max_window_bits=10, permessage-deflate";
        assert_eq!(answer(offer).as_deref(), Some(BASE));
        let offer = "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=12, \
                     permessage-deflate";
        assert_eq!(answer(offer), Some(format!("{BASE}; client_max_window_bits=12")));
    }

    #[test]
    fn c08_row_7_garbage_is_declined_in_linear_time() {
        assert_eq!(answer("constructor"), None);
        assert_eq!(answer("__proto__; x"), None);
        let unterminated = format!("permessage-deflate; a=\"{}", "\\c".repeat(10_000));
        let started = Instant::now();
        assert_eq!(answer(&unterminated), None);
        let long = format!("permessage-deflate{}", "; x".repeat(5_000));
        assert_eq!(answer(&long), None);
        let many = "permessage-deflate; foo, ".repeat(600) + "permessage-deflate";
        assert_eq!(answer(&many).as_deref(), Some(BASE));
        let many = "permessage-deflate; foo, ".repeat(600) + "permessage-deflate, ";
        assert_eq!(answer(&many).as_deref(), Some(BASE));
        assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    }

    #[test]
    fn accepts_quoted_values_and_whitespace() {
        let offer = "permessage-deflate ;\tclient_max_window_bits = \"10\" ; \
                     server_max_window_bits=\"1\\5\"";
        let want = format!("{BASE}; server_max_window_bits=15; client_max_window_bits=10");
        assert_eq!(answer(offer), Some(want));
        assert_eq!(answer(" , permessage-deflate ,, ").as_deref(), Some(BASE));
    }

    #[test]
    fn syntax_errors_decline_everything() {
        for header in [
            "permessage-deflate; client_max_window_bits=\"\"",
            "permessage-deflate; client_max_window_bits=\"1 0\"",
            "permessage-deflate;",
            "permessage-deflate; =1",
            "permessage-deflate x",
            "permessage-deflate, \"quoted\"",
            "permessage-deflate; a=\"b",
            "permessage-deflate; a=\"b\\",
            "permessage-deflate; a=é",
            "permessage-deflate; client_max_window_bits=1 5",
            "",
        ] {
            assert_eq!(answer(header), None, "{header:?}");
        }
    }

    #[test]
    fn never_panics_on_mutated_offers() {
        let base = "permessage-deflate; client_max_window_bits=\"12\"; server_no_context_takeover";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (state >> 33) as u8
        };
        for round in 0..5000 {
            let mut bytes = base.as_bytes().to_vec();
            for _ in 0..(round % 5 + 1) {
                let at = usize::from(next()) % bytes.len();
                let noise = b" ,;=\"\\\tax9";
                bytes[at] = noise[usize::from(next()) % noise.len()];
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Some(agreement) = negotiate_permessage_deflate(&text) {
                assert!(agreement.response().starts_with(BASE), "{text}");
            }
        }
    }

    #[test]
    fn extension_names_are_compared_exactly() {
        assert_eq!(answer("Permessage-Deflate"), None);
        assert_eq!(answer("permessage-deflate-x"), None);
        assert_eq!(answer("x-permessage-deflate"), None);
    }
}
