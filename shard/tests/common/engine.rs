//! The engine in the test process, for the application interface: start it with an
//! application attached, drain its events, open clients and learn their connection ids.

use std::time::{Duration, Instant};

use wse_shard::{App, Config, ConnId, Event, EventKind, Server as Engine};

use super::{RawClient, IO_LIMIT};

/// Starts an engine with two shards on 127.0.0.1 and an application attached.
pub fn start(tune: impl FnOnce(&mut Config)) -> Engine {
    let mut config = Config { host: [127, 0, 0, 1].into(), port: 0, ..Config::default() };
    config.cores.truncate(2);
    while config.cores.len() < 2 {
        config.cores.push(config.cores[0]);
    }
    config.app_events = true;
    tune(&mut config);
    Engine::start(config).expect("engine starts")
}

/// Drains until `done` holds for what was collected, or `within` passes.
pub fn drain_until(
    app: &App,
    within: Duration,
    mut done: impl FnMut(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    while !done(&all) && Instant::now() < deadline {
        app.drain_into(&mut all, 256, Duration::from_millis(50)).expect("drain");
    }
    all
}

/// The connection ids of `connect` events.
pub fn connected(events: &[Event]) -> Vec<ConnId> {
    events.iter().filter(|e| matches!(e.kind, EventKind::Connect { .. })).map(|e| e.conn).collect()
}

/// Opens a client and drains its `connect` event; returns both.
pub fn open(engine: &Engine, path: &str) -> (RawClient, ConnId) {
    let (client, _) = RawClient::open_wse(engine.local_addr(), path);
    let events = drain_until(engine.app(), IO_LIMIT, |e| !connected(e).is_empty());
    let ids = connected(&events);
    assert_eq!(ids.len(), 1, "one connect event: {events:?}");
    (client, ids[0])
}
