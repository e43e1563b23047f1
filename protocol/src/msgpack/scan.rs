//! Checks one msgpack value where it lies, without building it: what [`super::scan_inbound`]
//! runs for every client message sent as msgpack.
//!
//! Reading a message into rmpv's tree costs an allocation for every map and array, and most
//! messages are handed on unread; this walk reads markers (rmp's [`Marker`]) and lengths
//! and skips what it need not look at, checking the same rules the conversion to JSON
//! applies (see the module docs of [`super`]): one complete value, nesting within
//! [`MAX_NESTING`], strings UTF-8, no key an array or a map. The tests hold it to the
//! conversion's verdict on generated and damaged messages.

use rmp::Marker;

use super::{enter, invalid};
use crate::Error;

/// The strings of the first `t` and `type` keys of a top-level map, when they are strings.
#[derive(Debug, Default)]
pub(super) struct Types<'a> {
    pub t: Option<&'a str>,
    pub alias: Option<&'a str>,
}

/// Checks that `bytes` is exactly one valid map and reads its types.
pub(super) fn top_map(bytes: &[u8]) -> Result<Types<'_>, Error> {
    let mut scan = Scan { rest: bytes };
    let types = match Marker::from_u8(scan.byte()?) {
        Marker::FixMap(n) => scan.map(usize::from(n), 0)?,
        Marker::Map16 => scan.len(2).and_then(|n| scan.map(n, 0))?,
        Marker::Map32 => scan.len(4).and_then(|n| scan.map(n, 0))?,
        _ => return Err(invalid("msgpack message is not a map")),
    };
    if !scan.rest.is_empty() {
        return Err(invalid("bytes after the msgpack value"));
    }
    Ok(types)
}

/// What is left to read.
struct Scan<'a> {
    rest: &'a [u8],
}

impl<'a> Scan<'a> {
    /// Skips one value inside `depth` containers; its text when it is a string.
    fn value(&mut self, depth: usize) -> Result<Option<&'a str>, Error> {
        let skip = match Marker::from_u8(self.byte()?) {
            Marker::FixPos(_)
            | Marker::FixNeg(_)
            | Marker::Null
            | Marker::Reserved
            | Marker::True
            | Marker::False => 0,
            Marker::U8 | Marker::I8 => 1,
            Marker::U16 | Marker::I16 => 2,
            Marker::U32 | Marker::I32 | Marker::F32 => 4,
            Marker::U64 | Marker::I64 | Marker::F64 => 8,
            Marker::FixStr(n) => return self.string(usize::from(n)).map(Some),
            Marker::Str8 => return self.len(1).and_then(|n| self.string(n)).map(Some),
            Marker::Str16 => return self.len(2).and_then(|n| self.string(n)).map(Some),
            Marker::Str32 => return self.len(4).and_then(|n| self.string(n)).map(Some),
            Marker::Bin8 => self.len(1)?,
            Marker::Bin16 => self.len(2)?,
            Marker::Bin32 => self.len(4)?,
            // The type byte, then the data.
            Marker::FixExt1 => 2,
            Marker::FixExt2 => 3,
            Marker::FixExt4 => 5,
            Marker::FixExt8 => 9,
            Marker::FixExt16 => 17,
            Marker::Ext8 => 1 + self.len(1)?,
            Marker::Ext16 => 1 + self.len(2)?,
            Marker::Ext32 => 1 + self.len(4)?,
            Marker::FixArray(n) => return self.array(usize::from(n), depth).map(|()| None),
            Marker::Array16 => {
                return self.len(2).and_then(|n| self.array(n, depth)).map(|()| None)
            }
            Marker::Array32 => {
                return self.len(4).and_then(|n| self.array(n, depth)).map(|()| None)
            }
            Marker::FixMap(n) => return self.map(usize::from(n), depth).map(|_| None),
            Marker::Map16 => return self.len(2).and_then(|n| self.map(n, depth)).map(|_| None),
            Marker::Map32 => return self.len(4).and_then(|n| self.map(n, depth)).map(|_| None),
        };
        self.take(skip).map(|_| None)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<(), Error> {
        enter(depth)?;
        // Every item takes at least one byte, so a count the bytes cannot hold ends at
        // their end, without looping over it.
        (0..n).try_for_each(|_| self.value(depth + 1).map(drop))
    }

    /// Skips a map's members; at the top (`depth` 0) it notes the first `t` and `type`.
    fn map(&mut self, n: usize, depth: usize) -> Result<Types<'a>, Error> {
        enter(depth)?;
        let mut types = Types::default();
        let (mut seen_t, mut seen_alias) = (false, false);
        for _ in 0..n {
            if let Some(&first) = self.rest.first() {
                if is_container(first) {
                    return Err(invalid("msgpack map key is not a scalar"));
                }
            }
            let key = self.value(depth + 1)?;
            let member = self.value(depth + 1)?;
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

    fn string(&mut self, n: usize) -> Result<&'a str, Error> {
        std::str::from_utf8(self.take(n)?).map_err(|_| invalid("msgpack string is not UTF-8"))
    }

    /// A big-endian length of `width` bytes.
    fn len(&mut self, width: usize) -> Result<usize, Error> {
        let bytes = self.take(width)?;
        Ok(bytes.iter().fold(0, |n, &b| n << 8 | usize::from(b)))
    }

    fn byte(&mut self) -> Result<u8, Error> {
        self.take(1).map(|b| b[0])
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err(invalid("message is not valid msgpack or nests too deeply"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }
}

/// Whether `marker` starts an array or a map.
fn is_container(marker: u8) -> bool {
    matches!(Marker::from_u8(marker), |Marker::FixArray(_)| Marker::Array16
        | Marker::Array32
        | Marker::FixMap(_)
        | Marker::Map16
        | Marker::Map32)
}
