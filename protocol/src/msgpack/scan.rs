//! Msgpack read where it lies, one marker at a time: [`Tokens`], and the check that
//! [`super::scan_inbound`] runs for every client message sent as msgpack.
//!
//! Reading a message into rmpv's tree costs an allocation for every map and array, and most
//! messages are handed on without the engine looking inside; [`Tokens`] reads markers
//! (rmp's [`Marker`]) and lengths and borrows strings and bytes from the message. The check
//! applies the rules the conversion to JSON applies (see the module docs of [`super`]): one
//! complete value, nesting within [`MAX_NESTING`], strings UTF-8, no key an array or a map.
//! The tests hold it to the conversion's verdict on generated and damaged messages. The
//! Python drain builds its dicts from the same tokens.

use rmp::Marker;

use super::{enter, invalid};
use crate::Error;

/// One msgpack marker with what follows it; an array or a map gives its length, and its
/// items follow as the next tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token<'a> {
    /// `nil`, and the reserved marker `0xc1` (rmpv's reading of it).
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    Uint(u64),
    /// A float 32.
    F32(f32),
    /// A float 64.
    F64(f64),
    /// A string's bytes, not yet checked for UTF-8.
    Str(&'a [u8]),
    /// A `bin` value.
    Bin(&'a [u8]),
    /// An `ext` value: its type and data.
    Ext(i8, &'a [u8]),
    /// An array of this many items.
    Array(usize),
    /// A map of this many key-value pairs.
    Map(usize),
}

/// Reads the tokens of msgpack bytes in order.
#[derive(Debug)]
pub struct Tokens<'a> {
    rest: &'a [u8],
}

impl<'a> Tokens<'a> {
    /// The tokens of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Tokens<'a> {
        Tokens { rest: bytes }
    }

    /// Whether every byte was read.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }

    /// Whether the next token is an array or a map (false at the end).
    pub fn at_container(&self) -> bool {
        let next = self.rest.first().map(|&b| Marker::from_u8(b));
        matches!(
            next,
            Some(
                Marker::FixArray(_)
                    | Marker::Array16
                    | Marker::Array32
                    | Marker::FixMap(_)
                    | Marker::Map16
                    | Marker::Map32
            )
        )
    }

    /// The next token; errors when the bytes end inside it.
    pub fn next_token(&mut self) -> Result<Token<'a>, Error> {
        Ok(match Marker::from_u8(self.byte()?) {
            Marker::FixPos(n) => Token::Uint(u64::from(n)),
            Marker::FixNeg(n) => Token::Int(i64::from(n)),
            Marker::Null | Marker::Reserved => Token::Nil,
            Marker::True => Token::Bool(true),
            Marker::False => Token::Bool(false),
            Marker::U8 => Token::Uint(self.uint(1)?),
            Marker::U16 => Token::Uint(self.uint(2)?),
            Marker::U32 => Token::Uint(self.uint(4)?),
            Marker::U64 => Token::Uint(self.uint(8)?),
            Marker::I8 => int(self.uint(1)? as u8 as i8),
            Marker::I16 => int(self.uint(2)? as u16 as i16),
            Marker::I32 => int(self.uint(4)? as u32 as i32),
            Marker::I64 => int(self.uint(8)? as i64),
            Marker::F32 => Token::F32(f32::from_bits(self.uint(4)? as u32)),
            Marker::F64 => Token::F64(f64::from_bits(self.uint(8)?)),
            Marker::FixStr(n) => Token::Str(self.take(usize::from(n))?),
            Marker::Str8 => Token::Str(self.sized(1)?),
            Marker::Str16 => Token::Str(self.sized(2)?),
            Marker::Str32 => Token::Str(self.sized(4)?),
            Marker::Bin8 => Token::Bin(self.sized(1)?),
            Marker::Bin16 => Token::Bin(self.sized(2)?),
            Marker::Bin32 => Token::Bin(self.sized(4)?),
            Marker::FixExt1 => self.ext(1)?,
            Marker::FixExt2 => self.ext(2)?,
            Marker::FixExt4 => self.ext(4)?,
            Marker::FixExt8 => self.ext(8)?,
            Marker::FixExt16 => self.ext(16)?,
            Marker::Ext8 => self.len(1).and_then(|n| self.ext(n))?,
            Marker::Ext16 => self.len(2).and_then(|n| self.ext(n))?,
            Marker::Ext32 => self.len(4).and_then(|n| self.ext(n))?,
            Marker::FixArray(n) => Token::Array(usize::from(n)),
            Marker::Array16 => Token::Array(self.len(2)?),
            Marker::Array32 => Token::Array(self.len(4)?),
            Marker::FixMap(n) => Token::Map(usize::from(n)),
            Marker::Map16 => Token::Map(self.len(2)?),
            Marker::Map32 => Token::Map(self.len(4)?),
        })
    }

    /// The next token's text when it is a UTF-8 string, which is then read; otherwise
    /// nothing is read.
    pub fn next_str(&mut self) -> Option<&'a str> {
        let mut ahead = Tokens { rest: self.rest };
        let Ok(Token::Str(bytes)) = ahead.next_token() else { return None };
        let text = std::str::from_utf8(bytes).ok()?;
        self.rest = ahead.rest;
        Some(text)
    }

    /// An ext of `n` data bytes, after its type byte.
    fn ext(&mut self, n: usize) -> Result<Token<'a>, Error> {
        let kind = self.byte()? as i8;
        Ok(Token::Ext(kind, self.take(n)?))
    }

    /// Bytes after a big-endian length of `width` bytes.
    fn sized(&mut self, width: usize) -> Result<&'a [u8], Error> {
        let n = self.len(width)?;
        self.take(n)
    }

    fn len(&mut self, width: usize) -> Result<usize, Error> {
        usize::try_from(self.uint(width)?).map_err(|_| truncated())
    }

    /// A big-endian unsigned integer of `width` bytes.
    fn uint(&mut self, width: usize) -> Result<u64, Error> {
        Ok(self.take(width)?.iter().fold(0, |n, &b| n << 8 | u64::from(b)))
    }

    fn byte(&mut self) -> Result<u8, Error> {
        self.take(1).map(|b| b[0])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(truncated());
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }
}

/// A signed integer as msgpack readers give it: non-negative ones as unsigned.
fn int(n: impl Into<i64>) -> Token<'static> {
    let n = n.into();
    u64::try_from(n).map_or(Token::Int(n), Token::Uint)
}

fn truncated() -> Error {
    invalid("message is not valid msgpack or nests too deeply")
}

/// The strings of the first `t` and `type` keys of a top-level map, when they are strings.
#[derive(Debug, Default)]
pub(super) struct Types<'a> {
    pub t: Option<&'a str>,
    pub alias: Option<&'a str>,
}

/// Checks that `bytes` is exactly one valid map and reads its types.
pub(super) fn top_map(bytes: &[u8]) -> Result<Types<'_>, Error> {
    let mut tokens = Tokens::new(bytes);
    let Token::Map(n) = tokens.next_token()? else {
        return Err(invalid("msgpack message is not a map"));
    };
    let types = map(&mut tokens, n, 0)?;
    if !tokens.is_done() {
        return Err(invalid("bytes after the msgpack value"));
    }
    Ok(types)
}

/// Checks one value inside `depth` containers; its text when it is a string.
fn value<'a>(tokens: &mut Tokens<'a>, depth: usize) -> Result<Option<&'a str>, Error> {
    match tokens.next_token()? {
        Token::Str(bytes) => text(bytes).map(Some),
        Token::Array(n) => {
            enter(depth)?;
            // Every item takes at least one byte, so a count the bytes cannot hold ends at
            // their end, without looping over it.
            (0..n).try_for_each(|_| value(tokens, depth + 1).map(drop)).map(|()| None)
        }
        Token::Map(n) => map(tokens, n, depth).map(|_| None),
        _ => Ok(None),
    }
}

/// Checks a map's members; at the top (`depth` 0) it notes the first `t` and `type`.
fn map<'a>(tokens: &mut Tokens<'a>, n: usize, depth: usize) -> Result<Types<'a>, Error> {
    enter(depth)?;
    let mut types = Types::default();
    let (mut seen_t, mut seen_alias) = (false, false);
    for _ in 0..n {
        if tokens.at_container() {
            return Err(invalid("msgpack map key is not a scalar"));
        }
        let key = value(tokens, depth + 1)?;
        let member = value(tokens, depth + 1)?;
        if depth > 0 {
            continue;
        }
        if key == Some("t") && !seen_t {
            (seen_t, types.t) = (true, member);
        } else if key == Some("type") && !seen_alias {
            (seen_alias, types.alias) = (true, member);
        }
    }
    Ok(types)
}

/// A msgpack string's text; errors unless it is UTF-8.
pub(super) fn text(bytes: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|_| invalid("msgpack string is not UTF-8"))
}
