//! A client's msgpack envelope straight to the Python objects its JSON form would give.
//!
//! Place: `App::drain → events → **unpack** → drain_inbound's list`. Runs with the GIL held.
//! The engine checked a msgpack message whole and handed it on as msgpack
//! (`wse_protocol::msgpack::scan_inbound`), so this one pass is all the conversion it gets:
//! its tokens ([`Tokens`]: markers read where they lie, no tree) become Python objects as
//! they come, with no JSON text in between. The values are what `json.loads` gives for the
//! message's JSON form (`wse_protocol::msgpack::to_json`), by the same rules: `bin` and
//! `ext` become lowercase hex strings, keys that are other scalars their JSON text
//! ([`msgpack::key_text`]), NaN and infinities `None`. Strings are checked for UTF-8 once,
//! by CPython as it makes them. Keys and the top-level type come from the same caches as
//! JSON's ([`crate::json::key_word`]).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use wse_protocol::msgpack::{self, Token, Tokens};

use crate::json::{key_word, Words};

/// The Python object of one msgpack envelope, or `None` when `bytes` is not one the engine
/// would have handed on.
pub(crate) fn envelope_to_py<'py>(
    py: Python<'py>,
    bytes: &[u8],
    words: &mut Words,
) -> Option<Bound<'py, PyAny>> {
    let mut tokens = Tokens::new(bytes);
    let value = to_py(py, &mut tokens, words, true).ok()?;
    tokens.is_done().then_some(value)
}

/// The next value; `top` is set for the envelope itself, whose `t` or `type` is cached.
fn to_py<'py>(
    py: Python<'py>,
    tokens: &mut Tokens<'_>,
    words: &mut Words,
    top: bool,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match tokens.next_token().map_err(invalid)? {
        Token::Nil => py.None().into_bound(py),
        Token::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        Token::Int(n) => n.into_pyobject(py)?.into_any(),
        Token::Uint(n) => n.into_pyobject(py)?.into_any(),
        Token::F32(f) => float(py, f64::from(f))?,
        Token::F64(f) => float(py, f)?,
        Token::Str(bytes) => PyString::from_bytes(py, bytes)?.into_any(),
        Token::Bin(bytes) | Token::Ext(_, bytes) => {
            PyString::new(py, &msgpack::hex(bytes)).into_any()
        }
        Token::Array(n) => {
            let list = PyList::empty(py);
            for _ in 0..n {
                list.append(to_py(py, tokens, words, false)?)?;
            }
            list.into_any()
        }
        Token::Map(n) => {
            let dict = PyDict::new(py);
            for _ in 0..n {
                let key = tokens.next_token().map_err(invalid)?;
                let key = msgpack::key_text(key).map_err(invalid)?;
                let (word, is_type) = key_word(py, words, &key);
                // Only the envelope's own type is looked up in the cache; `next_str` reads
                // the string it returns, so it is asked only then.
                let cached = if top && is_type { tokens.next_str() } else { None };
                let member = match cached {
                    Some(t) => words.get(py, t).into_any(),
                    None => to_py(py, tokens, words, false)?,
                };
                dict.set_item(word, member)?;
            }
            dict.into_any()
        }
    })
}

/// A float as JSON would carry it: `None` for NaN and infinities.
fn float(py: Python<'_>, f: f64) -> PyResult<Bound<'_, PyAny>> {
    if !f.is_finite() {
        return Ok(py.None().into_bound(py));
    }
    Ok(f.into_pyobject(py)?.into_any())
}

fn invalid(error: wse_protocol::Error) -> PyErr {
    PyValueError::new_err(error.to_string())
}
