//! `RustWSEServer`: the engine's shards inside the Python process, driven from Python.
//!
//! Place: `Python → **RustWSEServer** → wse_shard::App → shards`. The class owns one
//! [`wse_shard::Server`] while it runs and hands every call to its [`App`]: events come out of
//! [`RustWSEServer::drain_inbound`], calls go into the shards' bounded control rings.
//!
//! Threads and the GIL: every method takes `&self` (the class is frozen), so any Python thread
//! may call any method while another drains. The state lock is held only to clone the [`App`]
//! handle or swap the server, never across a wait or while taking the GIL. Every wait on the
//! engine (a drain, a full control ring, a shard's answer, the shards' shutdown) runs with the
//! GIL released; `drain_inbound` takes it back once per batch to build the tuples.
//!
//! `stop()` while another thread sleeps in `drain_inbound`: the shutdown wakes that drain,
//! which returns what the rings still hold (then empty lists), because the drain works on its
//! own clone of the [`App`]. The handle stays after a stop so the last events (the
//! `disconnect`s of the closed connections) can still be drained.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyMapping, PyString};
use sonic_rs::{JsonValueTrait, Value};
use wse_fanout::mesh::PublishRequest;
use wse_protocol::auth::TopicRules;
use wse_protocol::envelope::{self, Priority};
use wse_protocol::topic::validate_topic;
use wse_shard::{App, Config, Server};

use crate::errors::{not_running, to_py};
use crate::events::{conn_text, json_to_py, parse_conn, to_list, to_py as value_to_py, ConnNames};
use crate::options::{self, bad, close_code, seconds, Int};
use crate::payload;

/// The Rust WebSocket engine, run and called from Python.
#[pyclass(module = "wse_server._wse_accel", frozen)]
pub struct RustWSEServer {
    config: Config,
    state: Mutex<State>,
    /// Connection ids as Python text, reused across batches; taken only with the GIL held.
    names: Mutex<ConnNames>,
}

#[derive(Default)]
struct State {
    /// The running shards; `None` before `start()` and after `stop()` or `drain()`.
    server: Option<Server>,
    /// The handle of the last server started, kept after it stopped so that its remaining
    /// events can be drained.
    app: Option<App>,
}

#[pymethods]
impl RustWSEServer {
    #[new]
    #[pyo3(
        signature = (host, port, **options),
        text_signature = "(host, port, *, path='/wse', shards=None, cores=None, \
            max_connections=10000, max_message_size=1048576, handshake_timeout=10.0, \
            max_handshakes=512, \
            max_handshakes_per_ip=64, ping_interval=25.0, idle_timeout=60.0, \
            close_timeout=1.0, max_outbound_queue_bytes=1048576, \
            max_subscriptions_per_connection=1000, allow_client_publish=False, \
            jwt_secret=None, jwt_previous_secret=None, jwt_algorithm='HS256', \
            jwt_issuer=None, jwt_audience=None, jwt_key_id=None, \
            jwt_cookie_name='access_token', jwt_query_token=False, \
            auth_failure_mode='close', close_on_token_expiry=False, allowed_origins=None, \
            encryption_enabled=True, signing_secret=None, sign_outbound=None, \
            require_signed_inbound=False, rate_limit_capacity=100000, \
            rate_limit_refill=10000.0, rate_limit_close_after=10.0, recovery_enabled=True, \
            recovery_buffer_size=128, recovery_ttl=300.0, recovery_max_messages=500, \
            recovery_memory_budget=268435456, recovery_topic_bytes=8388608, \
            dedup_window=50000, dedup_window_age=300.0, presence_enabled=False, \
            presence_max_data_size=4096, presence_max_members=0, \
            compression_threshold=1024, compression_level=1, compression_enabled=True, \
            permessage_deflate=True, require_accept=False, max_inbound_queue_size=65536, \
            max_inbound_queue_bytes=67108864, control_capacity=65536, publish_timeout=1.0, \
            snapshot_timeout=5.0, max_connection_info_bytes=4096, tls_cert=None, \
            tls_key=None, redis_url=None, redis_prefix='wse', redis_topics=None, \
            redis_timeout=1.0, redis_breaker_threshold=10, redis_breaker_window=60.0, \
            redis_breaker_reset=60.0, redis_dlq_buffer=10000)"
    )]
    fn new(host: &str, port: Int, options: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let config = options::config(host, port, options)?;
        let names = ConnNames::new(config.max_connections.saturating_add(1024));
        Ok(RustWSEServer { config, state: Mutex::new(State::default()), names: Mutex::new(names) })
    }

    /// Binds the port and starts the shards.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        if self.lock().server.is_some() {
            return Err(crate::errors::WSEError::new_err("the server is already running"));
        }
        let config = self.config.clone();
        let server = py.detach(|| Server::start(config)).map_err(to_py)?;
        let mut state = self.lock();
        state.app = Some(server.app().clone());
        state.server = Some(server);
        Ok(())
    }

    /// Closes every connection with 1012 and stops the shards (waits up to 5 s).
    fn stop(&self, py: Python<'_>) {
        self.shut_down(py, 1012, Duration::from_secs(5));
    }

    /// Lame-duck shutdown: closes every connection with `close_code`, then stops.
    #[pyo3(
        signature = (close_code=Int(4300), timeout=30.0),
        text_signature = "($self, close_code=4300, timeout=30.0)"
    )]
    fn drain(&self, py: Python<'_>, close_code: Int, timeout: f64) -> PyResult<bool> {
        let code = options::close_code("close_code", close_code)?;
        let limit = seconds("timeout", timeout)?;
        Ok(self.shut_down(py, code, limit))
    }

    fn is_running(&self) -> bool {
        self.lock().server.is_some()
    }

    /// `(host, port)` the shards listen on.
    fn local_addr(&self) -> PyResult<(String, u16)> {
        let state = self.lock();
        let server = state.server.as_ref().ok_or_else(not_running)?;
        let addr = server.local_addr();
        Ok((addr.ip().to_string(), addr.port()))
    }

    #[pyo3(
        signature = (max_count=Int(256), timeout_ms=Int(50)),
        text_signature = "($self, max_count=256, timeout_ms=50)"
    )]
    fn drain_inbound<'py>(
        &self,
        py: Python<'py>,
        max_count: Int,
        timeout_ms: Int,
    ) -> PyResult<Bound<'py, PyList>> {
        let (Int(max_count), Int(timeout_ms)) = (max_count, timeout_ms);
        let max =
            usize::try_from(max_count).ok().filter(|&m| (1..=MAX_BATCH).contains(&m)).ok_or_else(
                || bad("max_count", &format!("must be 1 to {MAX_BATCH}, got {max_count}")),
            )?;
        let wait = u64::try_from(timeout_ms)
            .ok()
            .filter(|&ms| ms <= MAX_DRAIN_WAIT_MS)
            .map(Duration::from_millis)
            .ok_or_else(|| {
                let rule = format!("must be 0 to {MAX_DRAIN_WAIT_MS} (a day), got {timeout_ms}");
                bad("timeout_ms", &rule)
            })?;
        let app = self.app()?;
        let events = py.detach(move || {
            let mut events = Vec::with_capacity(max.min(4096));
            app.drain_into(&mut events, max, wait).map(|_| events)
        });
        let events = events.map_err(to_py)?;
        // Never wait for this lock while holding the GIL: the holder might need the GIL back
        // (a finalizer run by the garbage collector). A batch that finds it taken by another
        // draining thread names its connections afresh.
        match self.names.try_lock() {
            Ok(mut names) => to_list(py, events, &mut names),
            Err(_) => to_list(py, events, &mut ConnNames::new(MAX_BATCH)),
        }
    }

    fn inbound_queue_depth(&self) -> PyResult<usize> {
        Ok(self.app()?.inbound_depth())
    }

    fn send(&self, py: Python<'_>, conn_id: &str, data: &str) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        self.call(py, move |app| app.send(conn, data))
    }

    fn send_bytes(&self, py: Python<'_>, conn_id: &str, data: &[u8]) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        self.call(py, move |app| app.send_bytes(conn, data))
    }

    /// Sends one WSE message: `event` holds `t` (or `type`), `p` (or `payload`), and
    /// optionally `pri` and `cid`.
    fn send_event(&self, py: Python<'_>, conn_id: &str, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let (t, payload, pri, cid) = event_parts(event)?;
        self.call(py, move |app| app.send_event(conn, &t, &payload, pri, cid.as_deref()))
    }

    fn broadcast_all(&self, py: Python<'_>, data: &str) -> PyResult<()> {
        self.call(py, move |app| app.broadcast_all(data))
    }

    /// Publishes the 2.x way: `data` is a whole message's JSON text, `{"t": ..., "p": ...}`.
    fn broadcast_local(&self, py: Python<'_>, topic: &str, data: &str) -> PyResult<()> {
        let request = request_from_message(topic, data)?;
        self.call(py, move |app| app.publish_request(request))
    }

    /// As `broadcast_local`. With `redis_url`, both reach every instance for a topic that
    /// travels (`redis_topics`): one topic has one order, stamped by Redis, so a publication
    /// kept to this instance would need a stamp of its own (README, "Scale-out").
    fn broadcast(&self, py: Python<'_>, topic: &str, data: &str) -> PyResult<()> {
        self.broadcast_local(py, topic, data)
    }

    #[pyo3(
        signature = (topic, payload, priority=Int(5), *, event_type=None, message_id=None),
        text_signature = "($self, topic, payload, priority=5, *, event_type=None, message_id=None)"
    )]
    fn publish(
        &self,
        py: Python<'_>,
        topic: &str,
        payload: &Bound<'_, PyAny>,
        priority: Int,
        event_type: Option<&str>,
        message_id: Option<&str>,
    ) -> PyResult<()> {
        check_topic(topic)?;
        let pri = self::priority(priority.0)?;
        let json = payload::json_text(payload)?;
        event_type.map(check_event_type).transpose()?;
        let request = PublishRequest {
            topic: topic.into(),
            event_type: event_type.map(Into::into),
            data: json.into(),
            pri,
            id: message_id.map(check_id).transpose()?,
        };
        check_json(&request.data)?;
        self.call(py, move |app| app.publish_request(request))
    }

    #[pyo3(signature = (conn_id, topics, presence_data=None))]
    fn subscribe_connection(
        &self,
        py: Python<'_>,
        conn_id: &str,
        topics: &Bound<'_, PyAny>,
        presence_data: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let topics = topic_list("topics", topics)?;
        if let Some(data) = presence_data {
            let data = payload::encode(data)?;
            self.call(py, |app| app.update_presence(conn, Some(&data)))?;
        }
        self.call(py, move |app| {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            app.subscribe_connection(conn, &names)
        })
    }

    #[pyo3(signature = (conn_id, topics=None))]
    fn unsubscribe_connection(
        &self,
        py: Python<'_>,
        conn_id: &str,
        topics: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let topics = topics.map(|list| topic_list("topics", list)).transpose()?;
        self.call(py, move |app| {
            let names: Option<Vec<&str>> =
                topics.as_ref().map(|list| list.iter().map(String::as_str).collect());
            app.unsubscribe_connection(conn, names.as_deref())
        })
    }

    #[pyo3(signature = (conn_id, allow=None, deny=None, publish=None))]
    fn set_topic_acl(
        &self,
        py: Python<'_>,
        conn_id: &str,
        allow: Option<&Bound<'_, PyAny>>,
        deny: Option<&Bound<'_, PyAny>>,
        publish: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let allow = allow.map(|list| topic_list("allow", list)).transpose()?;
        let deny = deny.map(|list| topic_list("deny", list)).transpose()?;
        let publish = publish.map(|list| topic_list("publish", list)).transpose()?;
        let rules = (allow.is_some() || deny.is_some() || publish.is_some()).then(|| TopicRules {
            allow: allow.unwrap_or_default(),
            deny: deny.unwrap_or_default(),
            publish: publish.unwrap_or_default(),
        });
        self.call(py, move |app| app.set_topic_acl(conn, rules))
    }

    #[pyo3(
        signature = (conn_id, code=Int(1000), reason=""),
        text_signature = "($self, conn_id, code=1000, reason=\"\")"
    )]
    fn disconnect(&self, py: Python<'_>, conn_id: &str, code: Int, reason: &str) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let code = close_code("code", code)?;
        self.call(py, move |app| app.disconnect(conn, code, reason))
    }

    #[pyo3(signature = (conn_id, user_id=None))]
    fn accept(&self, py: Python<'_>, conn_id: &str, user_id: Option<&str>) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        if user_id.is_some_and(str::is_empty) {
            return Err(bad("user_id", "must not be empty"));
        }
        self.call(py, move |app| app.accept(conn, user_id))
    }

    #[pyo3(
        signature = (conn_id, code=Int(4401), reason=""),
        text_signature = "($self, conn_id, code=4401, reason=\"\")"
    )]
    fn reject(&self, py: Python<'_>, conn_id: &str, code: Int, reason: &str) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let code = close_code("code", code)?;
        self.call(py, move |app| app.reject(conn, code, reason))
    }

    #[pyo3(signature = (conn_id, topics=None))]
    fn snapshot_complete(
        &self,
        py: Python<'_>,
        conn_id: &str,
        topics: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let topics = topics.map(|list| topic_list("topics", list)).transpose()?;
        let topics = topics.unwrap_or_default();
        self.call(py, move |app| {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            app.snapshot_complete(conn, &names)
        })
    }

    fn get_connection_info<'py>(
        &self,
        py: Python<'py>,
        conn_id: &str,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let conn = parse_conn(conn_id)?;
        let Some(info) = self.call(py, move |app| app.connection_info(conn))? else {
            return Ok(None);
        };
        let dict = PyDict::new(py);
        dict.set_item("conn_id", conn_text(py, conn))?;
        dict.set_item("connection_id", info.connection_id)?;
        dict.set_item("user_id", info.user_id)?;
        dict.set_item("peer_addr", (info.peer.ip().to_string(), info.peer.port()))?;
        dict.set_item("query", info.query.unwrap_or_default())?;
        let headers = PyDict::new(py);
        for (name, value) in info.headers {
            let name = name.to_ascii_lowercase();
            // Repeated headers are joined as one list value (RFC 9110 §5.3).
            let joined = match headers.get_item(&name)? {
                Some(earlier) => format!("{}, {value}", earlier.extract::<String>()?),
                None => value,
            };
            headers.set_item(name, joined)?;
        }
        dict.set_item("headers", headers)?;
        dict.set_item("truncated", info.truncated)?;
        Ok(Some(dict))
    }

    fn presence<'py>(&self, py: Python<'py>, topic: &str) -> PyResult<Bound<'py, PyDict>> {
        let topic = topic.to_owned();
        let members = self.call(py, move |app| app.presence(&topic))?;
        let dict = PyDict::new(py);
        for member in members {
            let entry = PyDict::new(py);
            entry.set_item("data", json_to_py(py, member.data.as_deref())?)?;
            entry.set_item("connections", member.connections)?;
            dict.set_item(&*member.user_id, entry)?;
        }
        Ok(dict)
    }

    fn presence_stats<'py>(&self, py: Python<'py>, topic: &str) -> PyResult<Bound<'py, PyDict>> {
        let topic = topic.to_owned();
        let stats = self.call(py, move |app| app.presence_stats(&topic))?;
        let dict = PyDict::new(py);
        dict.set_item("num_users", stats.users)?;
        dict.set_item("num_connections", stats.connections)?;
        Ok(dict)
    }

    fn update_presence(
        &self,
        py: Python<'_>,
        conn_id: &str,
        data: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let data = data.map(payload::encode).transpose()?;
        self.call(py, move |app| app.update_presence(conn, data.as_deref()))
    }

    /// Admitted connections: one atomic load, no shard is asked.
    fn get_connection_count(&self) -> usize {
        self.lock().app.as_ref().map_or(0, App::connection_count)
    }

    fn get_connections<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let conns = self.call(py, App::connections)?;
        let list = PyList::empty(py);
        for conn in conns {
            list.append(conn_text(py, conn))?;
        }
        Ok(list)
    }

    fn get_topic_subscriber_count(&self, py: Python<'_>, topic: &str) -> PyResult<usize> {
        self.call(py, move |app| app.topic_subscriber_count(topic))
    }

    fn health_snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let app = self.app()?;
        let value: Value = sonic_rs::from_str(&app.health_json())
            .map_err(|e| PyValueError::new_err(format!("health is not JSON: {e}")))?;
        let health = value_to_py(py, &value)?;
        let dict = health.cast::<PyDict>()?;
        dict.set_item("running", self.is_running())?;
        dict.set_item("inbound_queue_depth", app.inbound_depth())?;
        Ok(health)
    }

    fn prometheus_metrics(&self) -> PyResult<String> {
        Ok(self.app()?.prometheus())
    }

    /// This instance's id among the instances on the same Redis; None without Redis.
    fn instance_id(&self) -> PyResult<Option<String>> {
        Ok(self.app()?.instance_id().map(str::to_owned))
    }

    /// The dead-letter queue: publications that could not reach the other instances.
    #[pyo3(
        signature = (topic=None, limit=Int(100)),
        text_signature = "($self, topic=None, limit=100)"
    )]
    fn dlq_messages<'py>(
        &self,
        py: Python<'py>,
        topic: Option<&str>,
        limit: Int,
    ) -> PyResult<Bound<'py, PyList>> {
        let Int(limit) = limit;
        let limit = usize::try_from(limit)
            .ok()
            .filter(|&l| (1..=MAX_DLQ_LIST).contains(&l))
            .ok_or_else(|| bad("limit", &format!("must be 1 to {MAX_DLQ_LIST}, got {limit}")))?;
        let topic = topic.map(str::to_owned);
        let letters = self.call(py, move |app| app.dlq_messages(topic.as_deref(), limit))?;
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
        self.call(py, move |app| app.replay_dlq_message(topic, message_id))
    }

    /// `send_event` to a connection of any instance on the same Redis.
    fn send_event_to(
        &self,
        py: Python<'_>,
        instance_id: &str,
        conn_id: &str,
        event: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let conn = parse_conn(conn_id)?;
        let (t, payload, pri, cid) = event_parts(event)?;
        self.call(py, move |app| {
            app.send_event_to(instance_id, conn, &t, &payload, pri, cid.as_deref())
        })
    }

    fn __repr__(&self) -> String {
        let state = if self.is_running() { "running" } else { "stopped" };
        format!(
            "<RustWSEServer {}:{} {} shards={}>",
            self.config.host,
            self.config.port,
            state,
            self.config.shards()
        )
    }
}

impl RustWSEServer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave State half-changed: every update is
        // one assignment.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A clone of the current handle, for a call made without the lock.
    fn app(&self) -> PyResult<App> {
        self.lock().app.clone().ok_or_else(not_running)
    }

    /// Runs an engine call with the GIL released.
    fn call<T, F>(&self, py: Python<'_>, f: F) -> PyResult<T>
    where
        T: Send,
        F: FnOnce(&App) -> Result<T, wse_shard::Error> + Send,
    {
        if self.lock().server.is_none() {
            return Err(not_running());
        }
        let app = self.app()?;
        py.detach(move || f(&app)).map_err(to_py)
    }

    /// Closes every connection with `code` and waits up to `limit` for the shards to end;
    /// `false` when some were still running (or nothing ran).
    fn shut_down(&self, py: Python<'_>, code: u16, limit: Duration) -> bool {
        let Some(server) = self.lock().server.take() else { return false };
        py.detach(move || {
            server.shutdown(code);
            server.join(limit)
        })
    }
}

/// Topic names given as argument `name`: a list (or any sequence) of `str`. A `str` alone is
/// refused: read as a sequence it would be its characters.
fn topic_list(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!("{name} must be a list of str, not a str")));
    }
    value.extract::<Vec<String>>().map_err(|_| {
        let type_name = value.get_type().name().map_or_else(|_| "?".into(), |n| n.to_string());
        PyTypeError::new_err(format!("{name} must be a list of str, got {type_name}"))
    })
}

/// The parts of a WSE message given as a mapping: `t` (or `type`), `p` (or `payload`),
/// and optionally `pri` and `cid`.
fn event_parts(event: &Bound<'_, PyAny>) -> PyResult<(String, String, Priority, Option<String>)> {
    let event = event
        .cast::<PyMapping>()
        .map_err(|_| PyTypeError::new_err("event must be a mapping with 't' and 'p'"))?;
    let t: String = item(event, "t", "type")?
        .ok_or_else(|| bad("event", "needs a 't' (or 'type') string"))?
        .extract()
        .map_err(|_| bad("event", "'t' must be a string"))?;
    let payload = match item(event, "p", "payload")? {
        Some(p) => payload::encode(&p)?,
        None => "{}".to_owned(),
    };
    let pri = match item(event, "pri", "priority")? {
        Some(pri) => {
            let Int(pri) = pri.extract().map_err(|_| bad("event", "'pri' must be an int"))?;
            priority(pri)?
        }
        None => Priority::Normal,
    };
    let cid: Option<String> = match item(event, "cid", "correlation_id")? {
        Some(cid) => Some(cid.extract().map_err(|_| bad("event", "'cid' must be a string"))?),
        None => None,
    };
    Ok((t, payload, pri, cid))
}

/// A `Mapping`'s value under `key`, or under `alias` when `key` is absent.
fn item<'py>(
    map: &Bound<'py, PyMapping>,
    key: &str,
    alias: &str,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    for name in [key, alias] {
        if map.contains(name)? {
            let value = map.get_item(name)?;
            return Ok((!value.is_none()).then_some(value));
        }
    }
    Ok(None)
}

/// A publication from a whole 2.x message: `t` (or `type`) is its type, `p` (or `payload`)
/// its payload, `id` its de-duplication id and `pri` its priority. A JSON value without
/// `p` is published whole as the payload.
fn request_from_message(topic: &str, json: &str) -> PyResult<PublishRequest> {
    check_topic(topic)?;
    let value: Value =
        sonic_rs::from_str(json).map_err(|e| bad("data", &format!("must be JSON text: {e}")))?;
    let field = |a: &str, b: &str| value.get(a).or_else(|| value.get(b));
    let Some(payload) = field("p", "payload") else {
        return Ok(PublishRequest {
            topic: topic.into(),
            event_type: None,
            data: json.into(),
            pri: Priority::Normal,
            id: None,
        });
    };
    let event_type = field("t", "type").and_then(|t| t.as_str()).filter(|t| !t.is_empty());
    let pri = field("pri", "priority")
        .and_then(|p| p.as_u64())
        .map_or(Priority::Normal, Priority::from_wire);
    let id = value.get("id").and_then(|id| id.as_str()).map(check_id).transpose()?;
    Ok(PublishRequest {
        topic: topic.into(),
        event_type: event_type.map(Into::into),
        data: sonic_rs::to_string(payload)
            .map_err(|e| bad("data", &format!("payload cannot be written: {e}")))?
            .into(),
        pri,
        id,
    })
}

/// A topic name a publication may go to (PROTOCOL.md §3: no wildcards).
fn check_topic(topic: &str) -> PyResult<()> {
    validate_topic(topic, false).map_err(|e| bad("topic", &format!("is invalid: {e}")))
}

/// A payload given as `str`: one JSON value, or `ValueError` saying where it is not.
pub(crate) fn check_json(text: &str) -> PyResult<()> {
    sonic_rs::from_str::<Value>(text)
        .map(|_| ())
        .map_err(|e| bad("payload", &format!("must be JSON text when given as str: {e}")))
}

/// A publication's `t` given by the publisher: not empty.
pub(crate) fn check_event_type(t: &str) -> PyResult<()> {
    if t.is_empty() {
        return Err(bad("event_type", &format!("must not be empty, got {t:?}")));
    }
    Ok(())
}

/// The type a topic publication goes out with (its `event_type`, else the topic name):
/// not one of the engine's own. The engine checks every publication itself
/// (`App::publish_request`); this is the same check, with the same message, for router
/// mode, which publishes without the engine.
pub(crate) fn check_publication_type(t: &str) -> PyResult<()> {
    envelope::check_publication_type(t).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A publisher-given message id: 1 to 128 bytes.
pub(crate) fn check_id(id: &str) -> PyResult<Box<str>> {
    if id.is_empty() || id.len() > wse_protocol::engine::MAX_ID_LEN {
        return Err(bad("message_id", "must be 1 to 128 bytes"));
    }
    Ok(id.into())
}

/// A priority from Python: 1 to 10, read as the wire reads it (PROTOCOL.md §3).
pub(crate) fn priority(value: i128) -> PyResult<Priority> {
    u64::try_from(value)
        .ok()
        .filter(|p| (1..=10).contains(p))
        .map(Priority::from_wire)
        .ok_or_else(|| bad("priority", &format!("must be 1 to 10, got {value}")))
}

/// The most events one `drain_inbound` call may ask for.
const MAX_BATCH: usize = 1 << 20;
/// The longest `drain_inbound` wait, in milliseconds: a day.
const MAX_DRAIN_WAIT_MS: u64 = 86_400_000;
/// The most dead letters one `dlq_messages` call lists (1,000 per topic are kept).
const MAX_DLQ_LIST: usize = 100_000;
