//! JSON text to msgpack in one pass, without building a tree.
//!
//! The owner shard converts every publication once when msgpack connections exist, so this
//! sits on the publication path. Parsing into a sonic-rs tree and walking it took 1.1 to 1.6
//! times as long as this one pass (criterion, `benches/msgpack.rs`, three runs on a loaded
//! machine); reading the text once and writing msgpack as it goes allocates nothing but the
//! output.
//!
//! msgpack puts a container's length before its elements, which a single pass does not know
//! yet: each container gets a one-byte header slot, filled in with the fix form when it
//! closes with at most 15 elements, and widened in place (the contents moved up by two or
//! four bytes) for larger ones, so the output is always the compact encoding.

use crate::envelope::MAX_NESTING;
use crate::Error;

/// Writes the msgpack form of the JSON value `json` to `out`, leaving out the key `skip` of
/// the top-level object. `out` may hold bytes already; on error it holds extra bytes, which
/// the caller truncates.
pub(super) fn transcode(json: &[u8], skip: Option<&str>, out: &mut Vec<u8>) -> Result<(), Error> {
    // Every slice cut below ends at an ASCII delimiter, so it stays valid UTF-8.
    if std::str::from_utf8(json).is_err() {
        return Err(invalid("message is not UTF-8"));
    }
    let mut transcoder = Transcoder { json, at: 0, out, scratch: Vec::new() };
    transcoder.value(0, skip)?;
    transcoder.skip_whitespace();
    if transcoder.at != json.len() {
        return Err(invalid("bytes after the JSON value"));
    }
    Ok(())
}

/// The state of one conversion.
struct Transcoder<'a> {
    json: &'a [u8],
    /// Position of the next unread byte of `json`.
    at: usize,
    out: &'a mut Vec<u8>,
    /// Unescaped text of the current string, when it has escapes.
    scratch: Vec<u8>,
}

impl Transcoder<'_> {
    /// One value; `depth` counts the arrays and objects around it.
    fn value(&mut self, depth: usize, skip: Option<&str>) -> Result<(), Error> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(depth + 1, skip),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true", 0xc3),
            Some(b'f') => self.literal(b"false", 0xc2),
            Some(b'n') => self.literal(b"null", 0xc0),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(invalid("message is not JSON")),
        }
    }

    fn object(&mut self, depth: usize, skip: Option<&str>) -> Result<(), Error> {
        let header = self.open(depth)?;
        let mut count = 0usize;
        self.skip_whitespace();
        if self.eat(b'}') {
            return self.close(header, count, &MAP);
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(invalid("object key is not a string"));
            }
            let member = self.out.len();
            let key = self.string()?;
            let skipped = skip.is_some_and(|skip| self.out[key.0..key.1] == *skip.as_bytes());
            self.skip_whitespace();
            if !self.eat(b':') {
                return Err(invalid("object key without a colon"));
            }
            self.value(depth, None)?;
            if skipped {
                self.out.truncate(member);
            } else {
                count += 1;
            }
            self.skip_whitespace();
            match self.next_byte() {
                Some(b',') => continue,
                Some(b'}') => return self.close(header, count, &MAP),
                _ => return Err(invalid("object not closed")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Error> {
        let header = self.open(depth)?;
        let mut count = 0usize;
        self.skip_whitespace();
        if self.eat(b']') {
            return self.close(header, count, &ARRAY);
        }
        loop {
            self.value(depth, None)?;
            count += 1;
            self.skip_whitespace();
            match self.next_byte() {
                Some(b',') => continue,
                Some(b']') => return self.close(header, count, &ARRAY),
                _ => return Err(invalid("array not closed")),
            }
        }
    }

    /// Consumes the opening bracket and leaves a one-byte header slot; returns its position.
    fn open(&mut self, depth: usize) -> Result<usize, Error> {
        if depth > MAX_NESTING {
            return Err(invalid("message is nested too deeply for msgpack"));
        }
        self.at += 1;
        self.out.push(0);
        Ok(self.out.len() - 1)
    }

    /// Fills the header slot at `at` for a container of `count` elements, widening it when
    /// the fix form cannot hold the count.
    fn close(&mut self, at: usize, count: usize, markers: &Markers) -> Result<(), Error> {
        if count <= 15 {
            self.out[at] = markers.fix | count as u8;
            return Ok(());
        }
        let (header, len) = match u16::try_from(count) {
            Ok(n) => {
                let [hi, lo] = n.to_be_bytes();
                ([markers.wide16, hi, lo, 0, 0], 3)
            }
            Err(_) => {
                let n = u32::try_from(count).map_err(|_| invalid("container too large"))?;
                let [a, b, c, d] = n.to_be_bytes();
                ([markers.wide32, a, b, c, d], 5)
            }
        };
        let end = self.out.len();
        self.out.resize(end + len - 1, 0);
        self.out.copy_within(at + 1..end, at + len);
        self.out[at..at + len].copy_from_slice(&header[..len]);
        Ok(())
    }

    /// Writes one string as a msgpack str; returns where its bytes sit in the output.
    fn string(&mut self) -> Result<(usize, usize), Error> {
        self.at += 1;
        let start = self.at;
        let run = self.plain_run();
        if self.peek() == Some(b'"') {
            self.at += 1;
            return self.put_str(start, start + run);
        }

        // Escapes: unescape into the scratch buffer, then write it.
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        text.extend_from_slice(&self.json[start..start + run]);
        loop {
            match self.next_byte() {
                Some(b'"') => break,
                Some(b'\\') => self.escape(&mut text)?,
                _ => return Err(invalid("string not closed or holds a control character")),
            }
            let from = self.at;
            let run = self.plain_run();
            text.extend_from_slice(&self.json[from..from + run]);
        }
        let written = self.put_bytes(&text);
        self.scratch = text;
        written
    }

    /// Advances over bytes that need no unescaping; returns how many.
    fn plain_run(&mut self) -> usize {
        let rest = &self.json[self.at..];
        let run = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        let run = run.unwrap_or(rest.len());
        self.at += run;
        run
    }

    /// Appends the character of one escape (after its backslash) to `text`.
    fn escape(&mut self, text: &mut Vec<u8>) -> Result<(), Error> {
        let byte = match self.next_byte() {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let c = self.unicode_escape()?;
                let mut utf8 = [0u8; 4];
                text.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                return Ok(());
            }
            _ => return Err(invalid("bad escape in a string")),
        };
        text.push(byte);
        Ok(())
    }

    /// The character of `\uXXXX` (after the `u`), joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, Error> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if !(self.eat(b'\\') && self.eat(b'u')) {
                    return Err(invalid("unpaired surrogate in a string"));
                }
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(invalid("unpaired surrogate in a string"));
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(invalid("unpaired surrogate in a string")),
            _ => first,
        };
        char::from_u32(code).ok_or_else(|| invalid("bad escape in a string"))
    }

    fn hex4(&mut self) -> Result<u32, Error> {
        let digits = self.json.get(self.at..self.at + 4).ok_or_else(|| invalid("short escape"))?;
        let mut value = 0;
        for digit in digits {
            let nibble = char::from(*digit).to_digit(16);
            value = (value << 4) | nibble.ok_or_else(|| invalid("bad escape in a string"))?;
        }
        self.at += 4;
        Ok(value)
    }

    /// Writes bytes of the input as a msgpack str.
    fn put_str(&mut self, start: usize, end: usize) -> Result<(usize, usize), Error> {
        let len = u32::try_from(end - start).map_err(|_| invalid("string too long"))?;
        write_str_len(len, self.out);
        let at = self.out.len();
        self.out.extend_from_slice(&self.json[start..end]);
        Ok((at, self.out.len()))
    }

    /// Writes unescaped text as a msgpack str.
    fn put_bytes(&mut self, text: &[u8]) -> Result<(usize, usize), Error> {
        let len = u32::try_from(text.len()).map_err(|_| invalid("string too long"))?;
        write_str_len(len, self.out);
        let at = self.out.len();
        self.out.extend_from_slice(text);
        Ok((at, self.out.len()))
    }

    /// A number: an integer when it has no fraction or exponent and fits 64 bits, else a
    /// float 64 (as sonic-rs reads it).
    fn number(&mut self) -> Result<(), Error> {
        let start = self.at;
        let negative = self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(invalid("bad number")),
        }
        if !matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            let digits = &self.json[start + usize::from(negative)..self.at];
            if let Some(n) = integer(digits) {
                return self.integer(negative, n, start);
            }
        }
        // A fraction, an exponent, or an integer too large for 64 bits: a float.
        if self.eat(b'.') {
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            self.required_digits()?;
        }
        let text =
            std::str::from_utf8(&self.json[start..self.at]).map_err(|_| invalid("bad number"))?;
        let f: f64 = text.parse().map_err(|_| invalid("bad number"))?;
        if !f.is_finite() {
            return Err(invalid("number out of range"));
        }
        write_int(rmp::encode::write_f64(self.out, f))
    }

    /// Writes an integer read without `str::parse`: the common case of the number path.
    fn integer(&mut self, negative: bool, magnitude: u64, start: usize) -> Result<(), Error> {
        if !negative {
            return write_int(rmp::encode::write_uint(self.out, magnitude).map(drop));
        }
        match i64::try_from(magnitude) {
            Ok(n) => write_int(rmp::encode::write_sint(self.out, -n).map(drop)),
            Err(_) if magnitude == 1 << 63 => {
                write_int(rmp::encode::write_sint(self.out, i64::MIN).map(drop))
            }
            // Below i64::MIN: a float, as sonic-rs reads it.
            Err(_) => {
                let text = std::str::from_utf8(&self.json[start..self.at])
                    .map_err(|_| invalid("bad number"))?;
                let f: f64 = text.parse().map_err(|_| invalid("bad number"))?;
                write_int(rmp::encode::write_f64(self.out, f))
            }
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn required_digits(&mut self) -> Result<(), Error> {
        if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(invalid("bad number"));
        }
        self.digits();
        Ok(())
    }

    fn literal(&mut self, word: &[u8], marker: u8) -> Result<(), Error> {
        if !self.json[self.at..].starts_with(word) {
            return Err(invalid("message is not JSON"));
        }
        self.at += word.len();
        self.out.push(marker);
        Ok(())
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        let next = self.peek() == Some(byte);
        self.at += usize::from(next);
        next
    }
}

/// The value of a run of ASCII digits, if it fits a `u64`.
fn integer(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// The header markers of one kind of container.
struct Markers {
    fix: u8,
    wide16: u8,
    wide32: u8,
}

const MAP: Markers = Markers { fix: 0x80, wide16: 0xde, wide32: 0xdf };
const ARRAY: Markers = Markers { fix: 0x90, wide16: 0xdc, wide32: 0xdd };

/// The str header for `len` bytes: fixstr, str 8, str 16 or str 32.
fn write_str_len(len: u32, out: &mut Vec<u8>) {
    match len {
        0..=31 => out.push(0xa0 | len as u8),
        32..=255 => out.extend_from_slice(&[0xd9, len as u8]),
        256..=65_535 => {
            out.push(0xda);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

/// Maps a write into a `Vec`, which cannot fail, to the module's error type.
fn write_int<E>(result: Result<(), E>) -> Result<(), Error> {
    result.map_err(|_| invalid("msgpack encoding failed"))
}

fn invalid(reason: &str) -> Error {
    Error::InvalidMessage(reason.to_owned())
}
