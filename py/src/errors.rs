//! The exceptions the extension raises, and how engine errors become them.
//!
//! One tree, rooted at `WSEError` (a `RuntimeError`), for what only the engine can say:
//! `ServerBusyError` (a call waited `publish_timeout` for room in a shard's ring) and
//! `ServerNotRunningError` (no server to call), `RedisUnavailableError` (a scale-out call
//! while Redis cannot be reached). Everything the caller got wrong is a
//! `ValueError` (bad setting, bad argument) or a `TypeError` (wrong type); a port that
//! cannot be bound is an `OSError` carrying the kernel's errno.

use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use wse_shard::Error;

create_exception!(
    _wse_accel,
    WSEError,
    PyRuntimeError,
    "Base class of the errors the WSE engine reports."
);
create_exception!(
    _wse_accel,
    ServerBusyError,
    WSEError,
    "A shard's ring stayed full for publish_timeout; nothing was queued."
);
create_exception!(
    _wse_accel,
    ServerNotRunningError,
    WSEError,
    "The server is not running (never started, or stopped)."
);

create_exception!(
    _wse_accel,
    RedisUnavailableError,
    WSEError,
    "Redis cannot be reached now (no connection, or the circuit breaker is open)."
);

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("WSEError", py.get_type::<WSEError>())?;
    m.add("ServerBusyError", py.get_type::<ServerBusyError>())?;
    m.add("ServerNotRunningError", py.get_type::<ServerNotRunningError>())?;
    m.add("RedisUnavailableError", py.get_type::<RedisUnavailableError>())?;
    Ok(())
}

/// The Python exception for an engine error.
pub(crate) fn to_py(error: Error) -> PyErr {
    match error {
        Error::Busy { .. } => ServerBusyError::new_err(error.to_string()),
        Error::Stopped => ServerNotRunningError::new_err("the server is stopped"),
        Error::Config(message) => PyValueError::new_err(message),
        Error::InvalidArgument(message) => PyValueError::new_err(message),
        Error::Tls { .. } => PyValueError::new_err(error.to_string()),
        Error::Bind { addr, source } => {
            let errno = source.raw_os_error().unwrap_or(0);
            PyOSError::new_err((errno, format!("cannot listen on {addr}: {source}")))
        }
        Error::Executor { .. } | Error::NoApplication | Error::NoRedis => {
            WSEError::new_err(error.to_string())
        }
        Error::ScaleOut(inner) => scale_out(inner),
    }
}

/// The Python exception for an error of the Redis bridge.
pub(crate) fn scale_out(error: wse_fanout::Error) -> PyErr {
    match error {
        wse_fanout::Error::RedisUnavailable => RedisUnavailableError::new_err(error.to_string()),
        wse_fanout::Error::BridgeConfig(message) => PyValueError::new_err(message),
        other => WSEError::new_err(other.to_string()),
    }
}

/// The error of a call made while no server runs.
pub(crate) fn not_running() -> PyErr {
    ServerNotRunningError::new_err("the server is not running: call start() first")
}
