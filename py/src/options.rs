//! `RustWSEServer(host, port, **options)`: the keyword arguments, checked, as a
//! [`wse_shard::Config`].
//!
//! Place: read once by the constructor; the engine then starts from the [`Config`] built
//! here. Names follow the 2.x API where it had the setting (`max_connections`,
//! `jwt_secret`, `recovery_enabled`, ...) and the `wse-server` flags elsewhere; times are
//! seconds (floats allowed); defaults are PROTOCOL.md §10, which is what [`Config::default`]
//! holds. Every bad value raises `ValueError` naming the argument and the rule, a value of the
//! wrong type `TypeError`, and an unknown keyword `TypeError` as Python does.
//!
//! The constructor's `text_signature` (in `server.rs`) lists every keyword with its default:
//! it is what `inspect.signature` shows, the `.pyi` stub repeats it, and stubtest checks that
//! the two agree.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::conversion::FromPyObjectOwned;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyString};
use wse_protocol::auth::{JwtAlgorithm, JwtConfig, JwtValidator};
use wse_protocol::close::is_valid_close_code;
use wse_shard::config::{AuthFailureMode, JwtSettings, Secret, TlsFiles, MAX_SHARDS};
use wse_shard::Config;

use crate::errors::to_py;

/// Builds the engine's configuration from the constructor's arguments.
pub(crate) fn config(
    host: &str,
    port: Int,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Config> {
    let host: IpAddr = host.parse().map_err(|_| {
        PyValueError::new_err(format!("host must be an IP address such as 127.0.0.1, got {host:?}"))
    })?;
    let port = u16::try_from(port.0)
        .map_err(|_| PyValueError::new_err(format!("port must be 0 to 65535, got {}", port.0)))?;
    let mut args = Args::new(kwargs)?;
    let mut c = Config { host, port, ..Config::default() };
    c.app_events = true;
    core(&mut args, &mut c)?;
    security(&mut args, &mut c)?;
    delivery(&mut args, &mut c)?;
    application(&mut args, &mut c)?;
    tls(&mut args, &mut c)?;
    redis(&mut args, &mut c)?;
    args.finish()?;
    c.validate().map_err(to_py)?;
    Ok(c)
}

fn core(a: &mut Args<'_>, c: &mut Config) -> PyResult<()> {
    // The path's rule is the `wse-server` one, checked by `Config::validate`.
    if let Some(path) = a.text("path")? {
        c.path = path;
    }
    cores(a, c)?;
    a.count("max_connections", &mut c.max_connections, 1)?;
    a.count("max_message_size", &mut c.max_message_size, 125)?;
    a.secs("handshake_timeout", &mut c.handshake_timeout)?;
    a.count("max_handshakes", &mut c.max_handshakes, 1)?;
    a.count("max_handshakes_per_ip", &mut c.max_handshakes_per_ip, 1)?;
    a.secs("ping_interval", &mut c.ping_interval)?;
    a.secs("idle_timeout", &mut c.idle_timeout)?;
    a.secs("close_timeout", &mut c.close_timeout)?;
    a.count("max_outbound_queue_bytes", &mut c.max_outbound_queue_bytes, 4096)?;
    let subscriptions = &mut c.max_subscriptions_per_connection;
    a.count("max_subscriptions_per_connection", subscriptions, 1)?;
    a.flag("allow_client_publish", &mut c.allow_client_publish)
}

/// `shards=N` spreads N shards over the online cores; `cores=[...]` pins one per entry.
fn cores(a: &mut Args<'_>, c: &mut Config) -> PyResult<()> {
    let shards = a.get::<Int>("shards")?;
    let cores = a.get::<Vec<Int>>("cores")?;
    let online = Config::default().cores;
    match (shards, cores) {
        (Some(_), Some(_)) => Err(bad("shards", "give shards or cores, not both")),
        (Some(Int(n)), None) => {
            let n = usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_SHARDS).contains(n))
                .ok_or_else(|| bad("shards", &format!("must be 1 to {MAX_SHARDS}, got {n}")))?;
            c.cores = (0..n).map(|i| online[i % online.len()]).collect();
            Ok(())
        }
        (None, Some(list)) => {
            if list.is_empty() {
                return Err(bad("cores", "must list at least one core"));
            }
            let pinned = list.iter().map(|&Int(core)| {
                usize::try_from(core)
                    .ok()
                    .filter(|core| online.contains(core))
                    .ok_or_else(|| bad("cores", &format!("core {core} is not online ({online:?})")))
            });
            c.cores = pinned.collect::<PyResult<_>>()?;
            Ok(())
        }
        (None, None) => Ok(()),
    }
}

fn security(a: &mut Args<'_>, c: &mut Config) -> PyResult<()> {
    let s = &mut c.security;
    jwt(a, &mut s.jwt)?;
    // jwt_cookie_name, allowed_origins and signing_secret: their rules are the `wse-server`
    // ones, checked by `Config::validate`.
    if let Some(name) = a.text("jwt_cookie_name")? {
        s.cookie_name = name;
    }
    a.flag("jwt_query_token", &mut s.query_token)?;
    if let Some(mode) = a.text("auth_failure_mode")? {
        s.failure_mode = match mode.as_str() {
            "close" => AuthFailureMode::Close,
            "reject" => AuthFailureMode::Reject,
            _ => return Err(bad("auth_failure_mode", "must be 'close' or 'reject'")),
        };
    }
    a.flag("close_on_token_expiry", &mut s.close_on_token_expiry)?;
    if let Some(origins) = a.strings("allowed_origins")? {
        s.allowed_origins = origins;
    }
    a.flag("encryption_enabled", &mut s.encryption)?;
    s.signing_secret = a.secret("signing_secret")?.map(Secret);
    if let Some(types) = a.strings("sign_outbound")? {
        s.sign_outbound = types;
    }
    a.flag("require_signed_inbound", &mut s.require_signed_inbound)?;
    if s.require_signed_inbound && s.signing_secret.is_none() {
        return Err(bad("require_signed_inbound", "needs signing_secret"));
    }
    if let Some(capacity) = a.number("rate_limit_capacity")? {
        if !(1.0..=1e18).contains(&capacity) {
            return Err(bad("rate_limit_capacity", "must be 1 to 1e18 messages"));
        }
        s.rate_limit_capacity = capacity as u64;
    }
    if let Some(refill) = a.number("rate_limit_refill")? {
        if !(refill.is_finite() && refill > 0.0) {
            return Err(bad("rate_limit_refill", "must be a positive number per second"));
        }
        s.rate_limit_refill = refill;
    }
    a.secs("rate_limit_close_after", &mut s.rate_limit_close_after)
}

/// JWT validation: a secret (or PEM public key) turns it on; the keys are parsed here so that
/// a bad one fails the constructor, not `start()`.
fn jwt(a: &mut Args<'_>, slot: &mut Option<JwtSettings>) -> PyResult<()> {
    let key = a.secret("jwt_secret")?;
    let previous = a.secret("jwt_previous_secret")?;
    let algorithm = a.text("jwt_algorithm")?.unwrap_or_else(|| "HS256".to_owned());
    let issuer = a.text("jwt_issuer")?;
    let audience = a.strings("jwt_audience")?;
    let key_id = a.text("jwt_key_id")?;
    let parsed: JwtAlgorithm = algorithm
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| bad("jwt_algorithm", "must be 'HS256', 'RS256' or 'ES256'"))?;
    let Some(key) = key else {
        let refines = previous.is_some() || issuer.is_some() || audience.is_some();
        if refines || key_id.is_some() {
            return Err(bad("jwt_secret", "is needed by the other jwt_* settings"));
        }
        return Ok(());
    };
    // Each key alone, so that the message names the argument that holds the bad one.
    JwtValidator::new(JwtConfig::new(parsed, key.clone()))
        .map_err(|e| PyValueError::new_err(format!("jwt_secret: {e}")))?;
    if let Some(previous) = &previous {
        let mut check = JwtConfig::new(parsed, key.clone());
        check.previous_key = Some(previous.clone());
        JwtValidator::new(check)
            .map_err(|e| PyValueError::new_err(format!("jwt_previous_secret: {e}")))?;
    }
    *slot = Some(JwtSettings {
        algorithm: parsed.name().to_owned(),
        key: Secret(key),
        previous_key: previous.map(Secret),
        issuer,
        audience: audience.unwrap_or_default(),
        key_id,
    });
    Ok(())
}

/// Topic history and recovery, de-duplication, presence and compression.
fn delivery(a: &mut Args<'_>, c: &mut Config) -> PyResult<()> {
    let h = &mut c.history;
    a.flag("recovery_enabled", &mut h.enabled)?;
    a.count("recovery_buffer_size", &mut h.messages_per_topic, 1)?;
    a.secs("recovery_ttl", &mut h.ttl)?;
    a.count("recovery_max_messages", &mut h.max_replay, 1)?;
    a.count("recovery_memory_budget", &mut h.memory_budget, 0)?;
    a.count("recovery_topic_bytes", &mut h.bytes_per_topic, 0)?;
    a.count("dedup_window", &mut c.dedup_window, 0)?;
    a.secs("dedup_window_age", &mut c.dedup_window_age)?;
    let p = &mut c.presence;
    a.flag("presence_enabled", &mut p.enabled)?;
    a.count("presence_max_data_size", &mut p.max_data_size, 1)?;
    a.count("presence_max_members", &mut p.max_members, 0)?;
    let z = &mut c.compression;
    a.count("compression_threshold", &mut z.threshold, 0)?;
    if let Some(Int(level)) = a.get::<Int>("compression_level")? {
        z.level = u8::try_from(level)
            .ok()
            .filter(|l| (1..=9).contains(l))
            .ok_or_else(|| bad("compression_level", &format!("must be 1 to 9, got {level}")))?;
    }
    a.flag("compression_enabled", &mut z.c_frames)?;
    a.flag("permessage_deflate", &mut z.permessage_deflate)
}

/// The application interface: admission, rings, timeouts.
fn application(a: &mut Args<'_>, c: &mut Config) -> PyResult<()> {
    a.flag("require_accept", &mut c.require_accept)?;
    a.count("max_inbound_queue_size", &mut c.max_inbound_queue_size, 1)?;
    a.count("max_inbound_queue_bytes", &mut c.max_inbound_queue_bytes, 1)?;
    if c.max_inbound_queue_bytes < c.max_message_size {
        return Err(bad("max_inbound_queue_bytes", "must be at least max_message_size"));
    }
    a.count("control_capacity", &mut c.control_capacity, 1)?;
    a.secs("publish_timeout", &mut c.publish_timeout)?;
    a.secs("snapshot_timeout", &mut c.snapshot_timeout)?;
    a.count("max_connection_info_bytes", &mut c.max_connection_info_bytes, 0)
}

fn tls(a: &mut Args<'_>, c: &mut Config) -> PyResult<()> {
    match (a.text("tls_cert")?, a.text("tls_key")?) {
        (Some(cert), Some(key)) => {
            c.tls = Some(TlsFiles { cert: PathBuf::from(cert), key: PathBuf::from(key) });
            Ok(())
        }
        (None, None) => Ok(()),
        _ => Err(bad("tls_cert", "and tls_key go together")),
    }
}

/// Scale-out through Redis: `redis_url` turns it on; the other `redis_*` settings as the
/// `wse-server` flags of the same names (README, "Scale-out").
fn redis(a: &mut Args<'_>, c: &mut Config) -> PyResult<()> {
    if let Some(url) = a.text("redis_url")? {
        c.redis_url = Some(url.into());
    }
    let r = &mut c.redis;
    if let Some(prefix) = a.text("redis_prefix")? {
        r.prefix = prefix;
    }
    if let Some(topics) = a.strings("redis_topics")? {
        r.topics = topics;
    }
    a.secs("redis_timeout", &mut r.timeout)?;
    if let Some(Int(threshold)) = a.get::<Int>("redis_breaker_threshold")? {
        r.breaker_threshold =
            u32::try_from(threshold).ok().filter(|&t| t > 0).ok_or_else(|| {
                let rule = format!("must be an integer from 1 to {}, got {threshold}", u32::MAX);
                bad("redis_breaker_threshold", &rule)
            })?;
    }
    a.secs("redis_breaker_window", &mut r.breaker_window)?;
    a.secs("redis_breaker_reset", &mut r.breaker_reset)?;
    a.count("redis_dlq_buffer", &mut r.dlq_buffer, 1)
}

/// A close code the application may send (`disconnect`, `reject`, `drain`).
pub(crate) fn close_code(name: &str, Int(code): Int) -> PyResult<u16> {
    u16::try_from(code)
        .ok()
        .filter(|&c| is_valid_close_code(c))
        .ok_or_else(|| bad(name, &format!("must be a close code that can be sent, got {code}")))
}

/// Seconds from Python as a [`Duration`]: finite, positive, at most a year (the
/// `wse-server` rule).
pub(crate) fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    wse_shard::config::seconds(value, name).map_err(to_py)
}

/// A `ValueError` naming the argument and the rule it broke.
pub(crate) fn bad(name: &str, rule: &str) -> PyErr {
    PyValueError::new_err(format!("{name} {rule}"))
}

/// A Python int of any size. One too large for an `i128` reads as `i128::MAX` (too small,
/// `i128::MIN`): out of every range we accept, so that the range check names the rule where
/// Python would raise `OverflowError`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int(pub i128);

impl<'a, 'py> FromPyObject<'a, 'py> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i128>() {
            Ok(value) => Ok(Int(value)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                Ok(Int(if obj.lt(0)? { i128::MIN } else { i128::MAX }))
            }
            Err(e) => Err(e),
        }
    }
}

/// The keyword arguments not read yet.
struct Args<'py> {
    kwargs: Option<Bound<'py, PyDict>>,
}

impl<'py> Args<'py> {
    fn new(kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
        // A copy, so that reading an argument can remove it and leftovers are the unknown ones.
        Ok(Args { kwargs: kwargs.map(|k| k.copy()).transpose()? })
    }

    /// Removes and returns argument `name`; `None` when absent or given as `None`.
    fn take(&mut self, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(kwargs) = &self.kwargs else { return Ok(None) };
        let Some(value) = kwargs.get_item(name)? else { return Ok(None) };
        kwargs.del_item(name)?;
        Ok((!value.is_none()).then_some(value))
    }

    /// A number (or list of numbers) of type `T`; `True` and `False` are refused although
    /// Python counts them as integers.
    fn get<T: FromPyObjectOwned<'py>>(&mut self, name: &str) -> PyResult<Option<T>> {
        let Some(value) = self.take(name)? else { return Ok(None) };
        if value.is_instance_of::<PyBool>() {
            return Err(wrong_type(name, &value));
        }
        value.extract::<T>().map(Some).map_err(|_| wrong_type(name, &value))
    }

    /// An integer of at least `min` (and at most `usize::MAX`).
    fn count(&mut self, name: &str, slot: &mut usize, min: usize) -> PyResult<()> {
        let Some(Int(value)) = self.get::<Int>(name)? else { return Ok(()) };
        let count = usize::try_from(value).ok().filter(|&v| v >= min);
        *slot = count.ok_or_else(|| {
            let rule = format!("must be an integer >= {min} and <= {}, got {value}", usize::MAX);
            bad(name, &rule)
        })?;
        Ok(())
    }

    fn secs(&mut self, name: &str, slot: &mut Duration) -> PyResult<()> {
        if let Some(value) = self.number(name)? {
            *slot = seconds(name, value)?;
        }
        Ok(())
    }

    /// An int or a float, as `f64`.
    fn number(&mut self, name: &str) -> PyResult<Option<f64>> {
        self.get::<f64>(name)
    }

    fn flag(&mut self, name: &str, slot: &mut bool) -> PyResult<()> {
        let Some(value) = self.take(name)? else { return Ok(()) };
        *slot = value.extract::<bool>().map_err(|_| wrong_type(name, &value))?;
        Ok(())
    }

    fn text(&mut self, name: &str) -> PyResult<Option<String>> {
        let Some(value) = self.take(name)? else { return Ok(None) };
        if let Ok(path) = value.cast::<PyString>() {
            return Ok(Some(path.to_str()?.to_owned()));
        }
        // Paths (tls_cert, tls_key) may be os.PathLike.
        if value.hasattr("__fspath__")? {
            return Ok(Some(value.call_method0("__fspath__")?.extract::<String>()?));
        }
        Err(wrong_type(name, &value))
    }

    /// Secret bytes, given as `bytes` or `str` (UTF-8).
    fn secret(&mut self, name: &str) -> PyResult<Option<Vec<u8>>> {
        let Some(value) = self.take(name)? else { return Ok(None) };
        if let Ok(bytes) = value.cast::<PyBytes>() {
            return Ok(Some(bytes.as_bytes().to_vec()));
        }
        if let Ok(text) = value.cast::<PyString>() {
            return Ok(Some(text.to_str()?.as_bytes().to_vec()));
        }
        Err(wrong_type(name, &value))
    }

    /// One string or a list of strings.
    fn strings(&mut self, name: &str) -> PyResult<Option<Vec<String>>> {
        let Some(value) = self.take(name)? else { return Ok(None) };
        if let Ok(text) = value.cast::<PyString>() {
            return Ok(Some(vec![text.to_str()?.to_owned()]));
        }
        value.extract::<Vec<String>>().map(Some).map_err(|_| wrong_type(name, &value))
    }

    /// Fails on a keyword nobody read, as Python does for an unexpected one.
    fn finish(self) -> PyResult<()> {
        let Some(kwargs) = self.kwargs else { return Ok(()) };
        if let Some((key, _)) = kwargs.iter().next() {
            return Err(PyTypeError::new_err(format!(
                "RustWSEServer() got an unexpected keyword argument {}",
                key.repr()?
            )));
        }
        Ok(())
    }
}

/// A `TypeError` naming the argument and the type it got.
fn wrong_type(name: &str, value: &Bound<'_, PyAny>) -> PyErr {
    let type_name = value.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
    PyTypeError::new_err(format!("{name} got a value of type {type_name}"))
}
