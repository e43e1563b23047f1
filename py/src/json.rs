//! A client's envelope from its JSON text straight to the Python objects `json.loads` would
//! give, in one pass.
//!
//! Place: `App::drain → events → **json** → drain_inbound's list`. Runs with the GIL held.
//! The engine hands messages on unread (it only read their type, see
//! `wse_protocol::envelope::scan_inbound`), so this is the one parse a message gets: each
//! value becomes a Python object as serde_json reads it, with no document in between. For
//! the small messages most clients send serde_json reads 2.6 times faster than sonic-rs's
//! serde reader and 1.6 times faster than its document parser (90, 240 and 147 ns for a
//! 64-byte envelope; `cargo bench -p wse-protocol --bench inbound` has the scan beside it);
//! for 16 KiB they are level. Text that turns out not to be JSON yields `None`, and the
//! caller hands it on as `raw`. One difference from `json.loads`: an integer that does not
//! fit 64 bits becomes a float.
//!
//! Dict keys repeat from one message to the next: the envelope's own keys are interned
//! strings, other short keys and the top-level `t` come from [`Words`], a small cache of
//! Python strings that saves an allocation, a UTF-8 decode and a hash per key, and gives the
//! application's dict lookups strings whose hash is already known.

use std::fmt;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Recently made Python strings for keys and types, by their text: a direct-mapped table,
/// so a lookup is one hash and one comparison, and the memory is fixed (at most [`SLOTS`]
/// strings of at most [`WORD_BYTES`] bytes).
pub(crate) struct Words {
    slots: Vec<Option<(Box<str>, Py<PyString>)>>,
    /// One-character ASCII texts, interned: the same objects as the application's own
    /// literals (`payload["n"]`), so its dict lookups find them by identity. Interning is
    /// kept to this fixed set because CPython never frees an interned string.
    ascii: Vec<Option<Py<PyString>>>,
}

impl Words {
    pub(crate) fn new() -> Words {
        Words { slots: (0..SLOTS).map(|_| None).collect(), ascii: (0..128).map(|_| None).collect() }
    }

    /// `text` as a Python string, reused when the cache has it.
    pub(crate) fn get<'py>(&mut self, py: Python<'py>, text: &str) -> Bound<'py, PyString> {
        if let [byte] = text.as_bytes() {
            if let Some(entry) = self.ascii.get_mut(usize::from(*byte)) {
                let word = entry.get_or_insert_with(|| PyString::intern(py, text).unbind());
                return word.bind(py).clone();
            }
        }
        if text.len() > WORD_BYTES {
            return PyString::new(py, text);
        }
        let slot = &mut self.slots[slot_of(text)];
        if let Some((cached, word)) = slot {
            if **cached == *text {
                return word.bind(py).clone();
            }
        }
        let word = PyString::new(py, text);
        *slot = Some((text.into(), word.clone().unbind()));
        word
    }
}

/// The Python object of one JSON envelope, or `None` when `json` is not valid JSON.
pub(crate) fn envelope_to_py<'py>(
    py: Python<'py>,
    json: &[u8],
    words: &mut Words,
) -> Option<Bound<'py, PyAny>> {
    // JSON outside its strings is ASCII, so text that is not UTF-8 fails either way;
    // checking it whole first lets serde_json skip the check of every string.
    let json = std::str::from_utf8(json).ok()?;
    let mut reader = serde_json::Deserializer::from_str(json);
    let value = Seed { py, words, at: At::Top }.deserialize(&mut reader).ok()?;
    reader.end().ok()?;
    Some(value)
}

/// Where a value sits, for the strings worth caching.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// The envelope object itself.
    Top,
    /// The value of the envelope's `t` or `type`.
    Type,
    /// Anywhere else.
    Inner,
}

/// Reads one value into a Python object.
struct Seed<'a, 'py> {
    py: Python<'py>,
    words: &'a mut Words,
    at: At,
}

impl<'de, 'py> DeserializeSeed<'de> for Seed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for Seed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.py, value).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        let Ok(number) = value.into_pyobject(self.py);
        Ok(number.into_any())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        let Ok(number) = value.into_pyobject(self.py);
        Ok(number.into_any())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        let Ok(number) = value.into_pyobject(self.py);
        Ok(number.into_any())
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        if self.at == At::Type {
            return Ok(self.words.get(self.py, value).into_any());
        }
        Ok(PyString::new(self.py, value).into_any())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.py.None().into_bound(self.py))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.py);
        let Seed { py, words, .. } = self;
        while let Some(item) = seq.next_element_seed(Seed { py, words, at: At::Inner })? {
            list.append(item).map_err(python)?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.py);
        let Seed { py, words, at } = self;
        while let Some((key, is_type)) = map.next_key_seed(Key { py, words })? {
            let at = if at == At::Top && is_type { At::Type } else { At::Inner };
            let value = map.next_value_seed(Seed { py, words, at })?;
            dict.set_item(key, value).map_err(python)?;
        }
        Ok(dict.into_any())
    }
}

/// Reads one object key into a Python string, and whether it is `t` or `type`.
struct Key<'a, 'py> {
    py: Python<'py>,
    words: &'a mut Words,
}

impl<'de, 'py> DeserializeSeed<'de> for Key<'_, 'py> {
    type Value = (Bound<'py, PyString>, bool);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for Key<'_, 'py> {
    type Value = (Bound<'py, PyString>, bool);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(key_word(self.py, self.words, key))
    }
}

/// An object key as a Python string, and whether it is `t` or `type`: the envelope's own
/// keys are interned (the one-letter ones by `words`), other short keys come from `words`.
pub(crate) fn key_word<'py>(
    py: Python<'py>,
    words: &mut Words,
    key: &str,
) -> (Bound<'py, PyString>, bool) {
    let word = match key {
        "id" => intern!(py, "id").clone(),
        "ts" => intern!(py, "ts").clone(),
        "seq" => intern!(py, "seq").clone(),
        "pri" => intern!(py, "pri").clone(),
        "cid" => intern!(py, "cid").clone(),
        "type" => intern!(py, "type").clone(),
        "payload" => intern!(py, "payload").clone(),
        _ => words.get(py, key),
    };
    (word, matches!(key, "t" | "type"))
}

/// A Python error met while building, as the reader's error (the parse then stops).
fn python<E: de::Error>(error: PyErr) -> E {
    E::custom(error)
}

/// The slot of `text` in [`Words`]: FNV-1a, which is quick on the few bytes keys have.
fn slot_of(text: &str) -> usize {
    let hash =
        text.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash as usize % SLOTS
}

/// Strings [`Words`] holds at most.
const SLOTS: usize = 1024;
/// Longest text [`Words`] keeps.
const WORD_BYTES: usize = 32;
