//! A client's msgpack envelope straight to the Python objects its JSON form would give.
//!
//! Place: `App::drain → events → **unpack** → drain_inbound's list`. Runs with the GIL held.
//! The engine checked a msgpack message whole and handed it on as msgpack
//! (`wse_protocol::msgpack::scan_inbound`), so this one pass is all the conversion it gets:
//! no JSON text in between. The values are what `json.loads` gives for the message's JSON
//! form (`wse_protocol::msgpack::to_json`), the same rules in one place: `bin` and `ext`
//! become lowercase hex strings, keys that are other scalars their JSON text, NaN and
//! infinities `None`. Keys and the top-level type come from the same caches as JSON's
//! ([`crate::json::key_word`]).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use rmpv::ValueRef;
use wse_protocol::msgpack;

use crate::json::{key_word, Words};

/// The Python object of one msgpack envelope, or `None` when `bytes` is not one the engine
/// would have handed on.
pub(crate) fn envelope_to_py<'py>(
    py: Python<'py>,
    bytes: &[u8],
    words: &mut Words,
) -> Option<Bound<'py, PyAny>> {
    let value = msgpack::decode(bytes).ok()?;
    to_py(py, &value, words, true).ok()
}

/// One value; `top` is set for the envelope itself, whose `t` or `type` value is cached.
fn to_py<'py>(
    py: Python<'py>,
    value: &ValueRef<'_>,
    words: &mut Words,
    top: bool,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        ValueRef::Nil => py.None().into_bound(py),
        ValueRef::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        ValueRef::Integer(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            (None, None) => return Err(PyValueError::new_err("msgpack integer out of range")),
        },
        ValueRef::F32(f) => float(py, f64::from(*f))?,
        ValueRef::F64(f) => float(py, *f)?,
        ValueRef::String(s) => PyString::new(py, text(s.into_str())?).into_any(),
        ValueRef::Binary(bytes) | ValueRef::Ext(_, bytes) => {
            PyString::new(py, &msgpack::hex(bytes)).into_any()
        }
        ValueRef::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item, words, false)?)?;
            }
            list.into_any()
        }
        ValueRef::Map(members) => {
            let dict = PyDict::new(py);
            for (key, member) in members {
                let key =
                    msgpack::key_text(key).map_err(|e| PyValueError::new_err(e.to_string()))?;
                let (word, is_type) = key_word(py, words, &key);
                let member = match member {
                    ValueRef::String(s) if top && is_type => {
                        words.get(py, text(s.into_str())?).into_any()
                    }
                    other => to_py(py, other, words, false)?,
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

fn text(s: Option<&str>) -> PyResult<&str> {
    s.ok_or_else(|| PyValueError::new_err("msgpack string is not UTF-8"))
}
