//! The protocol crate's codecs, lent to router mode.
//!
//! Place: `wse_server.router (asyncio, Starlette WebSocket) → **codecs** → wse_protocol`.
//! Router mode serves PROTOCOL.md from Python; whatever has to be byte-exact or
//! security-sensitive it takes from here, so that the two servers cannot drift apart:
//! `C:` compression and bounded inflation, msgpack frames, the E2E key agreement and
//! `E:` frames, JWT validation, subscription filters, topic names and topic ACL globs, and
//! the argument checks of `RustWSEServer.publish` and `disconnect`.
//! JSON itself is orjson's job on the Python side.
//!
//! Every function that takes bytes releases nothing and keeps nothing: these are short,
//! pure computations, cheaper than a GIL round trip.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use sonic_rs::Value;
use wse_fanout::acl::TopicAcl as Acl;
use wse_fanout::glob;
use wse_protocol::auth::{AuthError, JwtAlgorithm, JwtConfig, JwtValidator};
use wse_protocol::deflate::{Deflater, Inflater};
use wse_protocol::e2e::{KeyExchange as Exchange, SessionKeys};
use wse_protocol::filter::{self, Filter as Compiled, RegexCache};
use wse_protocol::msgpack;
use wse_protocol::topic::validate_topic;

use crate::errors::WSEError;
use crate::options::{self, bad, Int};
use crate::server;

/// Adds the codec functions and classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compress_c_frame, m)?)?;
    m.add_function(wrap_pyfunction!(inflate_zlib, m)?)?;
    m.add_function(wrap_pyfunction!(msgpack_from_envelope, m)?)?;
    m.add_function(wrap_pyfunction!(msgpack_to_json, m)?)?;
    m.add_function(wrap_pyfunction!(check_topic, m)?)?;
    m.add_function(wrap_pyfunction!(glob_match, m)?)?;
    m.add_function(wrap_pyfunction!(check_close_code, m)?)?;
    m.add_function(wrap_pyfunction!(check_priority, m)?)?;
    m.add_function(wrap_pyfunction!(check_event_type, m)?)?;
    m.add_function(wrap_pyfunction!(check_publication_type, m)?)?;
    m.add_function(wrap_pyfunction!(check_message_id, m)?)?;
    m.add_function(wrap_pyfunction!(check_json, m)?)?;
    m.add_class::<KeyExchange>()?;
    m.add_class::<E2ESession>()?;
    m.add_class::<JwtVerifier>()?;
    m.add_class::<TopicFilter>()?;
    m.add_class::<TopicAcl>()?;
    m.add("InvalidTokenError", m.py().get_type::<InvalidTokenError>())?;
    Ok(())
}

pyo3::create_exception!(
    _wse_accel,
    InvalidTokenError,
    PyValueError,
    "A token is missing, malformed, forged, expired or not meant for this server."
);

/// `C:` plus the zlib stream of `data` at `level`, or `None` when that is not smaller.
#[pyfunction]
#[pyo3(signature = (data, level=1))]
fn compress_c_frame<'py>(
    py: Python<'py>,
    data: &[u8],
    level: u8,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let mut deflater =
        Deflater::new(level).map_err(|_| bad("level", &format!("must be 1 to 9, got {level}")))?;
    // The protocol crate cuts whole WebSocket frames; the Python side wants the payload,
    // which is the frame's tail.
    Ok(deflater.compress(data).map(|c| {
        let frame = c.c_frame();
        PyBytes::new(py, &frame[frame.len() - c.c_payload_len()..])
    }))
}

/// Inflates a zlib stream (the body of a `C:` frame) to at most `max_size` bytes.
#[pyfunction]
fn inflate_zlib<'py>(
    py: Python<'py>,
    data: &[u8],
    max_size: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let inflated = Inflater::new(max_size)
        .inflate_zlib(data)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &inflated))
}

/// `M:` plus the msgpack form of one envelope given as JSON text (a `sig` key is dropped).
#[pyfunction]
fn msgpack_from_envelope<'py>(py: Python<'py>, json: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(json.len() + 2);
    msgpack::from_envelope(json, &mut out).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &out))
}

/// The JSON text of one msgpack value (no prefix), at most `max_size` bytes of it.
#[pyfunction]
fn msgpack_to_json<'py>(
    py: Python<'py>,
    data: &[u8],
    max_size: usize,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::with_capacity(data.len() * 2);
    msgpack::to_json(data, max_size, &mut out).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &out))
}

/// Raises `ValueError` unless `name` is a valid topic (PROTOCOL.md §3); wildcards only when
/// `allow_wildcards`.
#[pyfunction]
#[pyo3(signature = (name, allow_wildcards=false))]
fn check_topic(name: &str, allow_wildcards: bool) -> PyResult<()> {
    validate_topic(name, allow_wildcards).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Whether `topic` matches `pattern` (`*` any run, `?` one character).
#[pyfunction]
fn glob_match(pattern: &str, topic: &str) -> bool {
    glob::glob_match(pattern, topic)
}

// The argument checks of `RustWSEServer`, lent to router mode so that both modes refuse the
// same values with the same messages. A wrong type is PyO3's `TypeError`.

/// `code` when `RustWSEServer.disconnect` would send it (RFC 6455 §7.4), else `ValueError`.
#[pyfunction]
fn check_close_code(code: Int) -> PyResult<u16> {
    options::close_code("code", code)
}

/// `priority` as an `int` when it is 1 to 10 (PROTOCOL.md §3), else `ValueError`.
#[pyfunction]
fn check_priority(priority: Int) -> PyResult<i64> {
    server::priority(priority.0)?;
    Ok(i64::try_from(priority.0).expect("invariant: a valid priority is 1 to 10"))
}

/// Raises `ValueError` when a publisher-given `event_type` is empty.
#[pyfunction]
fn check_event_type(event_type: &str) -> PyResult<()> {
    server::check_event_type(event_type)
}

/// Raises `ValueError` when `t`, the type a topic publication goes out with (its
/// `event_type`, else the topic name), is one of the engine's own message types.
#[pyfunction]
fn check_publication_type(t: &str) -> PyResult<()> {
    server::check_publication_type(t)
}

/// Raises `ValueError` unless `message_id` is 1 to 128 bytes of UTF-8.
#[pyfunction]
fn check_message_id(message_id: &str) -> PyResult<()> {
    server::check_id(message_id).map(drop)
}

/// Raises `ValueError`, with the place, unless `text` is one JSON value (a `str` payload).
#[pyfunction]
fn check_json(text: &str) -> PyResult<()> {
    server::check_json(text)
}

/// The server's P-256 key pair for one connection (PROTOCOL.md §5), used once.
#[pyclass(module = "wse_server._wse_accel", frozen)]
struct KeyExchange {
    public_key: String,
    /// Taken by `agree`.
    private: Mutex<Option<Exchange>>,
}

#[pymethods]
impl KeyExchange {
    #[new]
    fn new() -> PyResult<Self> {
        let exchange = Exchange::generate().map_err(|e| WSEError::new_err(e.to_string()))?;
        Ok(KeyExchange {
            public_key: exchange.public_key_b64(),
            private: Mutex::new(Some(exchange)),
        })
    }

    /// The public key for `server_hello`: base64 of the uncompressed point.
    #[getter]
    fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The session keys agreed with the client's base64 public key.
    fn agree(&self, client_public_key: &str) -> PyResult<E2ESession> {
        let exchange = self
            .private
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| WSEError::new_err("this key exchange was already used"))?;
        let keys =
            exchange.agree(client_public_key).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(E2ESession { keys })
    }
}

/// The keys of one E2E connection: seals and opens `E:` frames.
#[pyclass(module = "wse_server._wse_accel", frozen)]
struct E2ESession {
    keys: SessionKeys,
}

#[pymethods]
impl E2ESession {
    /// `E:`, a fresh IV, the AES-256-GCM ciphertext of `plaintext` and its tag.
    fn seal<'py>(&self, py: Python<'py>, plaintext: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(plaintext.len() + 32);
        self.keys.seal(plaintext, &mut out).map_err(|e| WSEError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &out))
    }

    /// The plaintext of an `E:` frame; `ValueError` when it does not authenticate.
    fn open<'py>(&self, py: Python<'py>, frame: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let plain = self.keys.open(frame).map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &plain))
    }
}

/// Validates JWTs as the engine does (PROTOCOL.md §2).
#[pyclass(module = "wse_server._wse_accel", frozen)]
struct JwtVerifier {
    validator: JwtValidator,
}

#[pymethods]
impl JwtVerifier {
    #[new]
    #[pyo3(signature = (
        secret, *, algorithm="HS256", issuer=None, audience=None, previous_secret=None,
        key_id=None
    ))]
    fn new(
        secret: &[u8],
        algorithm: &str,
        issuer: Option<String>,
        audience: Option<Vec<String>>,
        previous_secret: Option<Vec<u8>>,
        key_id: Option<String>,
    ) -> PyResult<Self> {
        let parsed: JwtAlgorithm = algorithm
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| bad("algorithm", "must be 'HS256', 'RS256' or 'ES256'"))?;
        let mut config = JwtConfig::new(parsed, secret.to_vec());
        config.previous_key = previous_secret;
        config.issuer = issuer;
        config.audience = audience.unwrap_or_default();
        config.key_id = key_id;
        let validator = JwtValidator::new(config).map_err(|e| bad("secret", &e.to_string()))?;
        Ok(JwtVerifier { validator })
    }

    /// The claims of a valid token: `{"user_id", "expires_at", "topics"}`; raises
    /// `InvalidTokenError` otherwise. `now` is Unix seconds (the clock when `None`).
    #[pyo3(signature = (token, now=None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        token: &str,
        now: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let now = now.map_or_else(unix_now, |n| n.max(0.0) as u64);
        let claims = self.validator.validate(token, now).map_err(|e| match e {
            AuthError::Missing => InvalidTokenError::new_err("no token"),
            AuthError::Invalid(reason) => InvalidTokenError::new_err(reason),
        })?;
        let dict = PyDict::new(py);
        dict.set_item("user_id", claims.user_id)?;
        dict.set_item("expires_at", claims.expires_at)?;
        match claims.topics {
            Some(rules) => {
                let topics = PyDict::new(py);
                topics.set_item("allow", rules.allow)?;
                topics.set_item("deny", rules.deny)?;
                topics.set_item("publish", rules.publish)?;
                dict.set_item("topics", topics)?;
            }
            None => dict.set_item("topics", py.None())?,
        }
        Ok(dict)
    }
}

/// Compiled subscription filter criteria (PROTOCOL.md §7, MongoDB-style).
#[pyclass(module = "wse_server._wse_accel", frozen)]
struct TopicFilter {
    filter: Compiled,
}

#[pymethods]
impl TopicFilter {
    /// Compiles `criteria`, given as JSON text; `ValueError` names the first problem.
    #[new]
    fn new(criteria: &str) -> PyResult<Self> {
        let value: Value = sonic_rs::from_str(criteria)
            .map_err(|e| bad("criteria", &format!("must be JSON text: {e}")))?;
        let filter = Compiled::compile(&value, &mut RegexCache::new())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(TopicFilter { filter })
    }

    /// Whether the filter lets everything through (`{}`).
    fn matches_all(&self) -> bool {
        self.filter.matches_all()
    }

    /// Whether a publication, given as its envelope's JSON text, passes.
    fn matches(&self, envelope: &[u8]) -> bool {
        filter::parse_document(envelope).is_ok_and(|document| self.filter.matches(&document))
    }
}

/// A connection's topic ACL: allow, deny and publish globs (PROTOCOL.md §2 `wse_topics`).
#[pyclass(module = "wse_server._wse_accel", frozen)]
struct TopicAcl {
    acl: Acl,
}

#[pymethods]
impl TopicAcl {
    #[new]
    #[pyo3(signature = (allow=None, deny=None, publish=None))]
    fn new(
        allow: Option<Vec<String>>,
        deny: Option<Vec<String>>,
        publish: Option<Vec<String>>,
    ) -> Self {
        let rules = wse_protocol::auth::TopicRules {
            allow: allow.unwrap_or_default(),
            deny: deny.unwrap_or_default(),
            publish: publish.unwrap_or_default(),
        };
        TopicAcl { acl: Acl::new(&rules) }
    }

    /// Whether the connection may subscribe to `pattern`.
    fn may_subscribe(&self, pattern: &str) -> bool {
        self.acl.may_subscribe(pattern)
    }

    /// Whether a publication of `topic` may reach the connection.
    fn may_receive(&self, topic: &str) -> bool {
        self.acl.may_receive(topic)
    }

    /// Whether the connection may publish to `topic`.
    fn may_publish(&self, topic: &str) -> bool {
        self.acl.may_publish(topic)
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
