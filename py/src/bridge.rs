//! `RedisBridge`: the engine's Redis bridge for router mode, so that uvicorn workers fan
//! out to each other (and to `wse-server` instances on the same Redis) the way the engine's
//! instances do.
//!
//! Place: `router hub (Python) → **RedisBridge** → wse_fanout::bridge → Redis` and back.
//! The bridge's two threads are the engine's own (README, "Scale-out"): Redis stamps each
//! publication with the ordering script, and the hub delivers what [`RedisBridge::drain`]
//! returns, in that order, its own publications included. The router hub is the one
//! "shard": everything the bridge hands over lands in one bounded channel that Python
//! drains with the GIL released.
//!
//! Left to the hub (Python): the local stamps while the bridge is not accepting, the count
//! of publications inside the bridge per topic, and delivery to its connections. Direct
//! messages between instances are not offered here: router connections have no engine
//! connection ids.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use wse_fanout::bridge::{Bridge, BridgeConfig, BridgeHandle, FromBridge, Outgoing};
use wse_protocol::envelope::Priority;

use crate::errors::scale_out;
use crate::events::json_to_py;
use crate::options::{bad, seconds};

/// The Redis bridge for router mode.
#[pyclass(module = "wse_server._wse_accel", frozen)]
pub struct RedisBridge {
    /// The threads; `None` once stopped.
    bridge: Mutex<Option<Bridge>>,
    handle: BridgeHandle,
    inbox: flume::Receiver<FromBridge>,
}

#[pymethods]
impl RedisBridge {
    #[new]
    #[pyo3(signature = (
        url, *, prefix="wse", topics=None, timeout=1.0, breaker_threshold=10,
        breaker_window=60.0, breaker_reset=60.0, dlq_buffer=10000, history_ttl=300.0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        url: &str,
        prefix: &str,
        topics: Option<Vec<String>>,
        timeout: f64,
        breaker_threshold: i64,
        breaker_window: f64,
        breaker_reset: f64,
        dlq_buffer: i64,
        history_ttl: f64,
    ) -> PyResult<Self> {
        let mut config = BridgeConfig::new(url);
        config.prefix = prefix.to_owned();
        if let Some(topics) = topics {
            config.topics = topics;
        }
        config.timeout = seconds("timeout", timeout)?;
        config.breaker.threshold = u32::try_from(breaker_threshold)
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| bad("breaker_threshold", "must be a positive integer"))?;
        config.breaker.window = seconds("breaker_window", breaker_window)?;
        config.breaker.reset = seconds("breaker_reset", breaker_reset)?;
        config.dlq_buffer = usize::try_from(dlq_buffer)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad("dlq_buffer", "must be a positive integer"))?;
        config.history_ttl = seconds("history_ttl", history_ttl)?;
        let (tx, inbox) = flume::bounded(INBOX);
        let bridge = Bridge::start(config, vec![tx], |_| 0).map_err(scale_out)?;
        let handle = bridge.handle().clone();
        Ok(RedisBridge { bridge: Mutex::new(Some(bridge)), handle, inbox })
    }

    /// This process's instance id on the Redis.
    #[getter]
    fn instance_id(&self) -> &str {
        self.handle.instance()
    }

    /// Whether publications route through Redis now (both connections up, breaker
    /// closed).
    fn accepting(&self) -> bool {
        self.handle.accepting()
    }

    /// Whether publications of `topic` travel between instances.
    fn travels(&self, topic: &str) -> bool {
        self.handle.travels(topic)
    }

    /// Hands a publication to Redis; False when the bridge's queue stayed full for
    /// `timeout` seconds (0: not waiting at all) or the bridge stopped.
    #[pyo3(signature = (
        topic, payload_json, event_type, priority, message_id, timestamp_ms, timeout=0.0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        py: Python<'_>,
        topic: &str,
        payload_json: &str,
        event_type: Option<&str>,
        priority: u8,
        message_id: &str,
        timestamp_ms: u64,
        timeout: f64,
    ) -> PyResult<bool> {
        check(topic, payload_json, message_id)?;
        let message = outgoing(topic, payload_json, event_type, priority, message_id, timestamp_ms);
        let wait = if timeout == 0.0 { Duration::ZERO } else { seconds("timeout", timeout)? };
        let handle = self.handle.clone();
        Ok(py.detach(move || handle.publish_wait(Arc::new(message), wait)).is_ok())
    }

    /// Records a publication delivered locally because the bridge was not accepting: a
    /// dead letter, written to Redis when it answers again.
    fn dead_letter(
        &self,
        topic: &str,
        payload_json: &str,
        event_type: Option<&str>,
        priority: u8,
        message_id: &str,
        timestamp_ms: u64,
    ) -> PyResult<()> {
        check(topic, payload_json, message_id)?;
        let message = outgoing(topic, payload_json, event_type, priority, message_id, timestamp_ms);
        self.handle.dead_letter(Arc::new(message));
        Ok(())
    }

    /// Up to `max_count` things the bridge handed over, waiting up to `timeout_ms` for the
    /// first: `(kind, topic, event_type, payload_json, priority, message_id, timestamp_ms,
    /// epoch, offset)` tuples, `kind` being `"deliver"` (stamped by Redis), `"own"` (one of
    /// this process's, stamped by Redis) or `"fallback"` (one of this process's that did
    /// not go through Redis: stamp it locally; epoch and offset are None).
    #[pyo3(signature = (max_count=256, timeout_ms=100))]
    fn drain<'py>(
        &self,
        py: Python<'py>,
        max_count: usize,
        timeout_ms: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        let inbox = self.inbox.clone();
        let max = max_count.clamp(1, INBOX);
        let taken = py.detach(move || {
            let mut taken = Vec::new();
            if let Ok(first) = inbox.recv_timeout(Duration::from_millis(timeout_ms)) {
                taken.push(first);
                taken.extend(inbox.try_iter().take(max - 1));
            }
            taken
        });
        let list = PyList::empty(py);
        for item in taken {
            let (kind, message, stamp) = match item {
                FromBridge::Deliver { message, epoch, offset, own } => {
                    (if own { "own" } else { "deliver" }, message, Some((epoch, offset)))
                }
                FromBridge::Fallback(message) => ("fallback", message, None),
                // Router connections have no engine ids: nothing to hand it to.
                FromBridge::Direct(_) => continue,
            };
            let epoch = stamp.map(|(e, _)| format!("{e:08x}"));
            let offset = stamp.map(|(_, o)| o);
            let fields = (
                kind,
                &*message.topic,
                message.event_type.as_deref(),
                &*message.data,
                message.pri.as_u8(),
                &*message.id,
                message.ts_ms,
                epoch,
                offset,
            );
            list.append(fields)?;
        }
        Ok(list)
    }

    /// Dead letters of `topic` (all when None), at most `limit`; as
    /// `RustWSEServer.dlq_messages`.
    #[pyo3(signature = (topic=None, limit=100))]
    fn dlq_messages<'py>(
        &self,
        py: Python<'py>,
        topic: Option<&str>,
        limit: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let handle = self.handle.clone();
        let topic = topic.map(str::to_owned);
        let letters = py
            .detach(move || handle.dead_letters(topic.as_deref(), limit.max(1), CALL_WAIT))
            .map_err(scale_out)?;
        let list = PyList::empty(py);
        for letter in letters {
            let m = &letter.message;
            let dict = PyDict::new(py);
            dict.set_item("topic", &*m.topic)?;
            dict.set_item("message_id", &*m.id)?;
            dict.set_item("event_type", m.event_type.as_deref())?;
            dict.set_item("payload", json_to_py(py, Some(&m.data))?)?;
            dict.set_item("priority", m.pri.as_u8())?;
            dict.set_item("timestamp_ms", m.ts_ms)?;
            dict.set_item("instance_id", &letter.instance)?;
            dict.set_item("failed_at_ms", letter.failed_ms)?;
            dict.set_item("stored", letter.stored)?;
            list.append(dict)?;
        }
        Ok(list)
    }

    /// Publishes a dead letter again through Redis; False when it is not stored.
    fn replay_dlq_message(&self, py: Python<'_>, topic: &str, message_id: &str) -> PyResult<bool> {
        let handle = self.handle.clone();
        py.detach(move || handle.replay(topic, message_id, CALL_WAIT)).map_err(scale_out)
    }

    /// The bridge's state: `instance`, `breaker`, `publisher_connected`, `subscribed`,
    /// `accepting`, `dlq_buffered`.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let status = self.handle.status();
        let dict = PyDict::new(py);
        dict.set_item("instance", status.instance)?;
        dict.set_item("breaker", status.breaker.label())?;
        dict.set_item("publisher_connected", status.publisher_connected)?;
        dict.set_item("subscribed", status.subscribed)?;
        dict.set_item("accepting", status.accepting)?;
        dict.set_item("dlq_buffered", status.dlq_buffered)?;
        Ok(dict)
    }

    /// Stops the bridge's threads (waits up to `timeout` seconds); True when they ended.
    #[pyo3(signature = (timeout=2.0))]
    fn stop(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let limit = seconds("timeout", timeout)?;
        let taken = self.bridge.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(taken.is_none_or(|bridge| py.detach(move || bridge.stop(limit))))
    }
}

/// What every instance trusts of a travelling publication: a topic one may publish to,
/// JSON data, an id of 1 to 128 bytes.
fn check(topic: &str, payload_json: &str, message_id: &str) -> PyResult<()> {
    wse_protocol::topic::validate_topic(topic, false)
        .map_err(|e| bad("topic", &format!("is invalid: {e}")))?;
    sonic_rs::from_str::<sonic_rs::Value>(payload_json)
        .map_err(|e| bad("payload_json", &format!("must be JSON text: {e}")))?;
    if message_id.is_empty() || message_id.len() > wse_protocol::engine::MAX_ID_LEN {
        return Err(bad("message_id", "must be 1 to 128 bytes"));
    }
    Ok(())
}

/// A publication as the bridge carries it.
fn outgoing(
    topic: &str,
    payload_json: &str,
    event_type: Option<&str>,
    priority: u8,
    message_id: &str,
    timestamp_ms: u64,
) -> Outgoing {
    Outgoing {
        topic: Arc::from(topic),
        event_type: event_type.map(Into::into),
        data: payload_json.into(),
        pri: Priority::from_wire(priority.into()),
        id: message_id.into(),
        ts_ms: timestamp_ms,
    }
}

/// Things the bridge may hand over before the hub drains them.
const INBOX: usize = 8192;
/// How long a dead-letter call may wait for the bridge.
const CALL_WAIT: Duration = Duration::from_secs(5);
