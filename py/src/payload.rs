//! Python payloads as JSON text, for the engine.
//!
//! Place: `Python object → **payload** → App call`. The conversion rules (UUID, datetime,
//! Enum, Decimal, bytes, dataclasses, pydantic models, ...) live in one Python function,
//! `wse_server._payload.dumps`, which router mode calls too; this module only calls it and
//! hands the engine the text. A `str` given where a payload is expected is JSON text already
//! (as `broadcast` and `send` take it) and is checked by the engine, not converted again.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyString};

/// `wse_server._payload.dumps`, imported on first use.
static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// JSON text of any payload: a `str` as it is, anything else through the conversion rules.
pub(crate) fn json_text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(text.to_str()?.to_owned());
    }
    encode(value)
}

/// JSON text of `value` through the conversion rules, whatever its type (a `str` becomes a
/// JSON string).
pub(crate) fn encode(value: &Bound<'_, PyAny>) -> PyResult<String> {
    let py = value.py();
    let dumps = DUMPS.get_or_try_init(py, || {
        PyResult::Ok(py.import("wse_server._payload")?.getattr("dumps")?.unbind())
    })?;
    let encoded = dumps.bind(py).call1((value,))?;
    let bytes = encoded.cast::<PyBytes>()?;
    // orjson writes UTF-8; a failure here would be a bug in the conversion function.
    std::str::from_utf8(bytes.as_bytes()).map(str::to_owned).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("payload is not UTF-8 JSON: {e}"))
    })
}
