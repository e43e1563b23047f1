//! Engine events as the Python tuples of PROTOCOL.md §8, and JSON values as Python objects.
//!
//! Place: `App::drain → **events** → drain_inbound's list`. Runs with the GIL held, once per
//! batch: the caller drained with the GIL released, then builds every tuple here in one go.
//! A `msg` envelope arrives as the JSON text or the msgpack the shard routed without
//! converting it; [`crate::json`] and [`crate::unpack`] read it straight into dicts and lists.
//!
//! Connection ids cross into Python as the decimal text of [`ConnId`] (the engine's own
//! spelling in logs); [`parse_conn`] reads them back.

use std::collections::HashMap;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use sonic_rs::{JsonContainerTrait, JsonType, JsonValueTrait, Value};
use wse_shard::{ConnId, Event, EventKind, Format};

use crate::json::{envelope_to_py, Words};
use crate::unpack;

/// The Python text of every connection that has events, made once per connection rather
/// than once per event. An entry goes with the connection's `disconnect` event, so there is
/// about one per open connection; a disconnect drained through another cache (two threads
/// draining at once) leaves one behind, so the whole cache is dropped past `limit`.
pub(crate) struct ConnNames {
    names: HashMap<ConnId, Py<PyString>>,
    limit: usize,
    /// The keys and types of the messages' dicts.
    words: Words,
}

impl ConnNames {
    /// A cache of at most `limit` names (the server's `max_connections` and some slack).
    pub(crate) fn new(limit: usize) -> ConnNames {
        ConnNames { names: HashMap::new(), limit, words: Words::new() }
    }

    fn get<'py>(&mut self, py: Python<'py>, conn: ConnId) -> Bound<'py, PyAny> {
        if self.names.len() >= self.limit {
            self.names.clear();
        }
        let name = self
            .names
            .entry(conn)
            .or_insert_with(|| PyString::new(py, &conn.0.to_string()).unbind());
        name.bind(py).clone().into_any()
    }
}

/// The events as a list of `(kind, conn_id, data)` tuples.
pub(crate) fn to_list<'py>(
    py: Python<'py>,
    events: Vec<Event>,
    names: &mut ConnNames,
) -> PyResult<Bound<'py, PyList>> {
    let mut tuples = Vec::with_capacity(events.len());
    // A read of one socket queues its messages together, so most events share the
    // previous one's connection.
    let mut previous: Option<(ConnId, Bound<'py, PyAny>)> = None;
    for event in events {
        let conn = event.conn;
        let last = matches!(event.kind, EventKind::Disconnect { .. });
        let name = match &previous {
            Some((seen, name)) if *seen == conn => name.clone(),
            _ => names.get(py, conn),
        };
        previous = Some((conn, name.clone()));
        tuples.push(to_tuple(py, event, name, &mut names.words)?);
        if last {
            names.names.remove(&conn);
            previous = None;
        }
    }
    PyList::new(py, tuples)
}

/// One event as `(kind, conn_id, data)`.
fn to_tuple<'py>(
    py: Python<'py>,
    event: Event,
    conn: Bound<'py, PyAny>,
    words: &mut Words,
) -> PyResult<Bound<'py, PyTuple>> {
    let (kind, conn, data): (&Bound<'_, PyString>, Bound<'_, PyAny>, Bound<'_, PyAny>) = match event
        .kind
    {
        EventKind::Message(envelope) => {
            let body = envelope.body();
            let message = match envelope.format() {
                Format::Json => envelope_to_py(py, body, words),
                Format::Msgpack => unpack::envelope_to_py(py, body, words),
            };
            match message {
                Some(message) => (intern!(py, "msg"), conn, message),
                // Past its type the engine did not read it (`Envelope`): not JSON after all.
                None => (intern!(py, "raw"), conn, lossy(py, body)),
            }
        }
        EventKind::AuthConnect { user_id } => {
            (intern!(py, "auth_connect"), conn, text(py, &user_id))
        }
        EventKind::Connect { cookies } => (intern!(py, "connect"), conn, text(py, &cookies)),
        EventKind::Raw(raw) => (intern!(py, "raw"), conn, text(py, &raw)),
        EventKind::Binary(data) => (intern!(py, "bin"), conn, PyBytes::new(py, &data).into_any()),
        EventKind::Disconnect { code, reason } => {
            let data = PyDict::new(py);
            data.set_item(intern!(py, "code"), code)?;
            data.set_item(intern!(py, "reason"), &*reason)?;
            (intern!(py, "disconnect"), conn, data.into_any())
        }
        EventKind::Presence { kind, topic, user_id, data } => {
            let payload = PyDict::new(py);
            payload.set_item(intern!(py, "topic"), &*topic)?;
            payload.set_item(intern!(py, "user_id"), &*user_id)?;
            payload.set_item(intern!(py, "data"), json_to_py(py, data.as_deref())?)?;
            let name = PyString::new(py, kind.name());
            // PROTOCOL.md §8: presence events carry no connection.
            let none = py.None().into_bound(py);
            return PyTuple::new(py, [name.into_any(), none, payload.into_any()]);
        }
    };
    PyTuple::new(py, [kind.clone().into_any(), conn, data])
}

/// A JSON value as the Python object `json.loads` would give.
pub(crate) fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value.get_type() {
        JsonType::Null => py.None().into_bound(py),
        JsonType::Boolean => pyo3::types::PyBool::new(py, value.is_true()).to_owned().into_any(),
        JsonType::Number => number(py, value)?,
        JsonType::String => text(py, value.as_str().unwrap_or_default()),
        JsonType::Array => {
            let list = PyList::empty(py);
            for item in value.as_array().into_iter().flatten() {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        JsonType::Object => {
            let dict = PyDict::new(py);
            for (key, item) in value.as_object().into_iter().flat_map(|o| o.iter()) {
                dict.set_item(key_text(py, key), to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// JSON text as a Python object; `None` stays `None`.
pub(crate) fn json_to_py<'py>(py: Python<'py>, json: Option<&str>) -> PyResult<Bound<'py, PyAny>> {
    let Some(json) = json else { return Ok(py.None().into_bound(py)) };
    let value: Value = sonic_rs::from_str(json)
        .map_err(|e| PyValueError::new_err(format!("the engine returned invalid JSON: {e}")))?;
    to_py(py, &value)
}

/// The Python text of a connection id.
pub(crate) fn conn_text(py: Python<'_>, conn: ConnId) -> Bound<'_, PyAny> {
    PyString::new(py, &conn.0.to_string()).into_any()
}

/// Reads a connection id given by Python.
pub(crate) fn parse_conn(text: &str) -> PyResult<ConnId> {
    text.parse::<u64>().map(ConnId).map_err(|_| {
        PyValueError::new_err(format!(
            "conn_id must be a connection id from an event or get_connections(), got {text:?}"
        ))
    })
}

fn number<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    if let Some(n) = value.as_i64() {
        return Ok(n.into_pyobject(py)?.into_any());
    }
    if let Some(n) = value.as_u64() {
        return Ok(n.into_pyobject(py)?.into_any());
    }
    Ok(value.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any())
}

/// Text that should be UTF-8, with any invalid bytes replaced.
fn lossy<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyAny> {
    text(py, &String::from_utf8_lossy(bytes))
}

fn text<'py>(py: Python<'py>, text: &str) -> Bound<'py, PyAny> {
    PyString::new(py, text).into_any()
}

/// Dict keys: the envelope's own keys are interned (they repeat in every message).
fn key_text<'py>(py: Python<'py>, key: &str) -> Bound<'py, PyString> {
    match key {
        "t" => intern!(py, "t").clone(),
        "p" => intern!(py, "p").clone(),
        "c" => intern!(py, "c").clone(),
        "id" => intern!(py, "id").clone(),
        "ts" => intern!(py, "ts").clone(),
        "v" => intern!(py, "v").clone(),
        "seq" => intern!(py, "seq").clone(),
        "pri" => intern!(py, "pri").clone(),
        "cid" => intern!(py, "cid").clone(),
        _ => PyString::new(py, key),
    }
}
