//! `wse_server._wse_accel`: the native half of the `wse_server` Python package.
//!
//! Place in the data path: `Python → **py** → shard` and back. Two ways in:
//!
//! - `server::RustWSEServer` runs the same shards as the `wse-server` binary
//!   ([`wse_shard::Server`]) on their own threads inside the Python process and hands Python
//!   the application interface ([`wse_shard::App`]): events are drained in batches
//!   (`events`), calls go into the shards' bounded control rings. The GIL is released
//!   around every wait on the engine; shard threads never touch a Python object.
//! - `bridge::RedisBridge` lends router mode the engine's Redis bridge, so that uvicorn
//!   workers fan out to each other through Redis as the engine's instances do.
//! - `codecs` lends the protocol crate's codecs (compression, msgpack, E2E crypto,
//!   signing, filters, JWT, topic names) to router mode, the pure-Python server that runs
//!   inside a FastAPI application (`wse_server.router`), so that both speak the same bytes.
//!
//! Payloads given as Python objects become JSON text through one Python function,
//! `wse_server._payload.dumps` (`payload`), so the conversion rules are the same in both
//! modes.
//!
//! Left to others: the wire protocol itself (`wse_protocol`), the engine (`wse_shard`), and
//! the asyncio side of router mode (Python).

// pyo3's macros expand to code the workspace lints would flag; they are not ours to fix.
#![allow(unsafe_code, unreachable_pub)]

mod bridge;
mod codecs;
mod errors;
mod events;
mod json;
mod options;
mod payload;
mod server;
mod unpack;

use pyo3::prelude::*;

/// The `_wse_accel` module: classes, functions and exceptions, as the `.pyi` stub lists them.
#[pymodule]
fn _wse_accel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", wse_shard::VERSION)?;
    m.add_class::<server::RustWSEServer>()?;
    m.add_class::<bridge::RedisBridge>()?;
    errors::register(m)?;
    codecs::register(m)?;
    Ok(())
}
