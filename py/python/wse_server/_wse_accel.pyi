"""The native half of wse_server: the engine (RustWSEServer) and the protocol codecs.

Written by hand; `make py-lint` checks it against the built module with stubtest.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from typing import Any, Final, Literal, Self, TypeAlias, final

__version__: Final[str]
__all__ = [
    "E2ESession",
    "InvalidTokenError",
    "JwtVerifier",
    "KeyExchange",
    "RedisBridge",
    "RedisUnavailableError",
    "RustWSEServer",
    "ServerBusyError",
    "ServerNotRunningError",
    "TopicAcl",
    "TopicFilter",
    "WSEError",
    "__version__",
    "check_close_code",
    "check_event_type",
    "check_json",
    "check_message_id",
    "check_priority",
    "check_publication_type",
    "check_topic",
    "compress_c_frame",
    "glob_match",
    "inflate_zlib",
    "msgpack_from_envelope",
    "msgpack_to_json",
]

#: One drained event: `(kind, conn_id, data)` (PROTOCOL.md section 8).
_Event: TypeAlias = tuple[str, str | None, Any]

class WSEError(RuntimeError):
    """Base class of the errors only the engine can report."""

class ServerBusyError(WSEError):
    """A call waited `publish_timeout` for room in a shard's ring and gave up.

    Nothing was queued. Retry later, send less, or raise `publish_timeout` or
    `control_capacity`.
    """

class ServerNotRunningError(WSEError):
    """The server was never started, or it was stopped."""

class RedisUnavailableError(WSEError):
    """Redis cannot be reached now (no connection, or the circuit breaker is open).

    Local delivery goes on; retry the dead-letter call once Redis answers.
    """

class InvalidTokenError(ValueError):
    """A token is malformed, forged, expired or not meant for this server."""

@final
class RustWSEServer:
    """The Rust engine's shards, run on their own threads inside this process.

    Every connection is served by Rust (handshake, JWT, limits, heartbeats,
    compression, E2E, topic fan-out, recovery). Python sees the connections' events
    through `drain_inbound` and acts on them with the other methods. Any thread may
    call any method; calls that wait on the engine release the GIL while they wait.

    Calls addressed to one connection (`send`, `send_event`, `subscribe_connection`,
    `disconnect`, `accept`, ...) are carried out on the connection's shard after they
    return: a `conn_id` that is not a connection id raises `ValueError`, but one whose
    connection has closed, or that names no connection, is ignored, because a
    connection can close at any moment. The application learns of a close from the
    connection's `disconnect` event.

    All options are keyword-only; times are seconds; the defaults are those of
    PROTOCOL.md section 10. A bad value raises `ValueError` naming the argument and
    the rule it breaks, a value of the wrong type `TypeError`.
    """

    def __new__(
        cls,
        host: str,
        port: int,
        *,
        path: str = "/wse",
        shards: int | None = None,
        cores: list[int] | None = None,
        max_connections: int = 10000,
        max_message_size: int = 1048576,
        handshake_timeout: float = 10.0,
        max_handshakes: int = 512,
        max_handshakes_per_ip: int = 64,
        ping_interval: float = 25.0,
        idle_timeout: float = 60.0,
        close_timeout: float = 1.0,
        max_outbound_queue_bytes: int = 1048576,
        max_subscriptions_per_connection: int = 1000,
        allow_client_publish: bool = False,
        jwt_secret: bytes | str | None = None,
        jwt_previous_secret: bytes | str | None = None,
        jwt_algorithm: str = "HS256",
        jwt_issuer: str | None = None,
        jwt_audience: str | list[str] | None = None,
        jwt_key_id: str | None = None,
        jwt_cookie_name: str = "access_token",
        jwt_query_token: bool = False,
        auth_failure_mode: Literal["close", "reject"] = "close",
        close_on_token_expiry: bool = False,
        allowed_origins: str | list[str] | None = None,
        encryption_enabled: bool = True,
        signing_secret: bytes | str | None = None,
        sign_outbound: str | list[str] | None = None,
        require_signed_inbound: bool = False,
        rate_limit_capacity: float = 100000,
        rate_limit_refill: float = 10000.0,
        rate_limit_close_after: float = 10.0,
        recovery_enabled: bool = True,
        recovery_buffer_size: int = 128,
        recovery_ttl: float = 300.0,
        recovery_max_messages: int = 500,
        recovery_memory_budget: int = 268435456,
        recovery_topic_bytes: int = 8388608,
        dedup_window: int = 50000,
        dedup_window_age: float = 300.0,
        presence_enabled: bool = False,
        presence_max_data_size: int = 4096,
        presence_max_members: int = 0,
        compression_threshold: int = 1024,
        compression_level: int = 1,
        compression_enabled: bool = True,
        permessage_deflate: bool = True,
        require_accept: bool = False,
        max_inbound_queue_size: int = 65536,
        max_inbound_queue_bytes: int = 67108864,
        control_capacity: int = 65536,
        publish_timeout: float = 1.0,
        snapshot_timeout: float = 5.0,
        max_connection_info_bytes: int = 4096,
        tls_cert: str | PathLike[str] | None = None,
        tls_key: str | PathLike[str] | None = None,
        redis_url: str | None = None,
        redis_prefix: str = "wse",
        redis_topics: list[str] | str | None = None,
        redis_timeout: float = 1.0,
        redis_breaker_threshold: int = 10,
        redis_breaker_window: float = 60.0,
        redis_breaker_reset: float = 60.0,
        redis_dlq_buffer: int = 10000,
    ) -> Self:
        """Checks the options; nothing listens until `start()`.

        `host` is an IP address and `port` 0 to 65535 (0 picks a free port, see
        `local_addr`). A value of the wrong type raises `TypeError`; one of the
        right type that breaks a rule (an int out of range included) raises
        `ValueError` naming the argument and the rule. The rules are those of the
        `wse-server` binary's flags of the same names. Times are seconds above 0
        and at most a year. Selected options:

        - `path`: `/` then visible ASCII (no spaces or control characters).
        - `shards` (1 to 1024; one per online core by default) or `cores` (one
          shard pinned to each listed online core).
        - `jwt_secret` turns JWT validation on: an HS256 secret of at least 32
          bytes, or a PEM public key with `jwt_algorithm` RS256 or ES256;
          `jwt_previous_secret` follows the same rule. Tokens are read from the
          `jwt_cookie_name` cookie (an RFC 6265 token: visible ASCII without
          separators), then `Authorization: Bearer`.
        - `allowed_origins`: each an origin, `scheme://host[:port]` without a path.
        - `signing_secret`: an HMAC-SHA256 key of at least 32 bytes.
        - `recovery_*`: topic history for reconnecting clients (on by default).
        - `max_inbound_queue_size` / `max_inbound_queue_bytes`: events waiting per
          shard for `drain_inbound`; when they are reached the shard stops reading
          its sockets until Python catches up (nothing is dropped).
        - `control_capacity` / `publish_timeout`: calls waiting per shard, and how
          long a call waits for room before `ServerBusyError`.
        - `require_accept`: every connection waits for `accept` or `reject`.
        - `redis_url` (`redis://[[user]:password@]host[:port][/db]`, or
          `unix:///path/to.sock`; `rediss://` (TLS) is not supported): scale-out. Every
          publication of a topic matching `redis_topics` (globs, all by default)
          reaches every instance on the same Redis, in one order stamped by Redis;
          while Redis is unreachable this instance stamps locally and keeps dead
          letters (`dlq_messages`, `replay_dlq_message`). `redis_timeout`,
          `redis_breaker_*` and `redis_dlq_buffer` tune the failure handling
          (README, "Scale-out").
        """

    def start(self) -> None:
        """Binds the port and starts the shards.

        Raises `OSError` when the port cannot be bound (in use, no permission),
        `ValueError` for a key or TLS file that cannot be used, `WSEError` when
        already running.
        """

    def stop(self) -> None:
        """Closes every connection with 1012 and stops the shards (waits up to 5 s).

        Safe while other threads are inside `drain_inbound`: they wake and return.
        Events still waiting (the closed connections' `disconnect`s) can be drained
        afterwards. Does nothing when not running.
        """

    def drain(self, close_code: int = 4300, timeout: float = 30.0) -> bool:
        """Lame-duck shutdown before a deploy: stops accepting, closes every
        connection with `close_code` (clients reconnect elsewhere), and waits up to
        `timeout` seconds (above 0, at most a year) for the shards to finish.
        Returns False when they had not finished in time (or nothing ran). The
        server is stopped afterwards.
        """

    def is_running(self) -> bool:
        """Whether the shards are running (between `start` and `stop`/`drain`)."""

    def local_addr(self) -> tuple[str, int]:
        """`(host, port)` the shards listen on; the real port when 0 was given."""

    def drain_inbound(self, max_count: int = 256, timeout_ms: int = 50) -> list[_Event]:
        """Up to `max_count` events from all shards, oldest first per connection.

        `max_count` is 1 to 1048576. Waits up to `timeout_ms` milliseconds (0 to
        86400000, a day) when none is ready, without the GIL
        and without spinning; returns `[]` on timeout, and at once after `stop()`
        once nothing is left. Events are `(kind, conn_id, data)`:

        - `("auth_connect", conn_id, user_id)`: admitted with a valid JWT;
        - `("connect", conn_id, cookie_header)`: admitted without JWT;
        - `("msg", conn_id, envelope_dict)`: a client message (JSON, msgpack,
          `C:` or `E:` alike), including `subscription_update` and `sync_request`
          after the engine acted on them;
        - `("raw", conn_id, text)` / `("bin", conn_id, bytes)`: data that is not
          a WSE message;
        - `("disconnect", conn_id, {"code": int, "reason": str})`: always the
          connection's last event;
        - `("presence_join" | "presence_leave" | "presence_update", None,
          {"topic", "user_id", "data"})` when presence is on.

        One connection's events keep their order. None is ever dropped: when Python
        falls behind, the shards stop reading their sockets instead.
        """

    def inbound_queue_depth(self) -> int:
        """Events waiting in the shards' rings now."""

    def send(self, conn_id: str, data: str) -> None:
        """Sends `data` to one connection as one text frame, exactly as given."""

    def send_bytes(self, conn_id: str, data: bytes) -> None:
        """Sends `data` to one connection as one binary frame, exactly as given."""

    def send_event(self, conn_id: str, event: Mapping[str, Any]) -> None:
        """Sends one WSE message to one connection.

        `event` holds `t` (or `type`), the payload `p` (or `payload`, any value the
        conversion rules take; `{}` when absent), and optionally `pri` (1-10) and
        `cid`. The engine builds the envelope with the connection's next `seq` and
        sends it as msgpack, `C:` or `E:` when the connection needs that.
        """

    def broadcast_all(self, data: str) -> None:
        """Sends `data` as one text frame to every connection on every shard."""

    def broadcast_local(self, topic: str, data: str) -> None:
        """Publishes a whole message given as JSON text (the 2.x way).

        `t` (or `type`), `p` (or `payload`), `id` and `pri` of the object are the
        publication's type, payload, de-duplication id and priority; a JSON value
        without `p` is published whole as the payload.
        """

    def broadcast(self, topic: str, data: str) -> None:
        """As `broadcast_local`. With `redis_url` both reach every instance for a
        topic that travels: a topic has one order, stamped by Redis."""

    def publish(
        self,
        topic: str,
        payload: Any,
        priority: int = 5,
        *,
        event_type: str | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publishes `payload` to every subscriber of `topic`, on every shard.

        `payload` is converted by the conversion rules; a `str` is taken as JSON
        text. `event_type` is the message's `t` (the topic name by default);
        `message_id` (1-128 bytes) is its `id`, and a repeated id within the
        de-duplication window is dropped. A `t` of the engine's own messages
        (`server_ready`, `ping`, `PONG`, `error`, `snapshot_complete`, ... of
        PROTOCOL.md section 3's `WSE` category) raises `ValueError`: subscribers
        would take the publication for a system message. Raises `ServerBusyError`
        when the shard stayed full for `publish_timeout`.
        """

    def subscribe_connection(
        self,
        conn_id: str,
        topics: list[str],
        presence_data: Any = None,
    ) -> None:
        """Subscribes a connection to `topics` (names or globs) on the
        application's authority: the topic ACL does not apply, the subscription
        limit does. An invalid name or glob, or more topics than
        `max_subscriptions_per_connection`, raises `ValueError` naming it; topics
        past the limit counted with the connection's existing subscriptions are
        left out by its shard. `presence_data` sets the connection's presence data
        first. Topic arguments here and below are lists of str; a str alone raises
        `TypeError`."""

    def unsubscribe_connection(
        self, conn_id: str, topics: list[str] | None = None
    ) -> None:
        """Unsubscribes a connection from `topics`, or from every topic when None."""

    def set_topic_acl(
        self,
        conn_id: str,
        allow: list[str] | None = None,
        deny: list[str] | None = None,
        publish: list[str] | None = None,
    ) -> None:
        """Replaces a connection's topic ACL: globs it may receive (`allow`, empty
        for all), may never receive (`deny`, which wins) and may publish to
        (`publish`). All three None lifts every limit. Each glob must be a valid
        topic pattern and each list at most 4,096 long, else `ValueError` naming
        the list and the glob."""

    def disconnect(self, conn_id: str, code: int = 1000, reason: str = "") -> None:
        """Closes a connection with `code` and `reason` (cut to 123 bytes); its
        `disconnect` event follows."""

    def accept(self, conn_id: str, user_id: str | None = None) -> None:
        """Admits a connection waiting under `require_accept`: it gets
        `server_ready` with `user_id`. A connection that is not waiting (already
        admitted, or gone) is left as it is."""

    def reject(self, conn_id: str, code: int = 4401, reason: str = "") -> None:
        """Refuses a connection waiting under `require_accept`: it is closed with
        `code` and `reason`. A connection that is not waiting is left as it is;
        `disconnect` closes an admitted one."""

    def snapshot_complete(self, conn_id: str, topics: list[str] | None = None) -> None:
        """Ends the snapshot hold of `topics` (every hold when None) after a
        client's `sync_request`: the client gets `snapshot_complete`, then the
        publications held back meanwhile."""

    def get_connection_info(self, conn_id: str) -> dict[str, Any] | None:
        """What the engine kept of a connection's upgrade request, or None when it
        is gone: `conn_id`, `connection_id` (the UUID the client saw), `user_id`,
        `peer_addr` `(host, port)`, `query` (raw, without `?`), `headers`
        (lowercase names; repeated ones joined with `, `) and `truncated`."""

    def presence(self, topic: str) -> dict[str, dict[str, Any]]:
        """Members of `topic`: `{user_id: {"data": ..., "connections": n}}`."""

    def presence_stats(self, topic: str) -> dict[str, int]:
        """`{"num_users": ..., "num_connections": ...}` of `topic`."""

    def update_presence(self, conn_id: str, data: Any) -> None:
        """Sets a connection's presence data (None clears it) on every topic it is
        on; subscribers hear `presence_update`."""

    def get_connection_count(self) -> int:
        """Admitted connections: one atomic read, no shard is asked."""

    def get_connections(self) -> list[str]:
        """Every open connection's id."""

    def get_topic_subscriber_count(self, topic: str) -> int:
        """Connections subscribed to `topic` (directly or by a glob)."""

    def health_snapshot(self) -> dict[str, Any]:
        """The `/health` document plus `running` and `inbound_queue_depth`."""

    def prometheus_metrics(self) -> str:
        """The `/metrics` text (Prometheus exposition format)."""

    def instance_id(self) -> str | None:
        """This instance's id on the Redis (`redis_url`), or None without Redis."""

    def dlq_messages(
        self, topic: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Dead letters: publications that could not reach the other instances.

        Of `topic` (every topic when None), at most `limit`; each a dict with
        `topic`, `message_id`, `event_type`, `payload`, `priority`,
        `timestamp_ms`, `instance_id` (where it was published and delivered),
        `failed_at_ms` and `stored` (False while it waits in this process for
        Redis). Raises `WSEError` without `redis_url`.
        """

    def replay_dlq_message(self, topic: str, message_id: str) -> bool:
        """Publishes dead letter `message_id` of `topic` again through Redis.

        Every instance except the one it came from delivers it, under the topic's
        next offset; it leaves the queue. False when no such letter is stored;
        raises `RedisUnavailableError` while Redis cannot be reached.
        """

    def send_event_to(
        self, instance_id: str, conn_id: str, event: Mapping[str, Any]
    ) -> None:
        """`send_event` to connection `conn_id` of instance `instance_id` (this
        one included), through Redis; delivery is not confirmed."""

@final
class RedisBridge:
    """The engine's Redis bridge, for router mode (`WSEConfig(redis_url=...)`).

    Two threads of the engine talk to Redis: publications are stamped by Redis
    (the ordering script) and come back from the subscription, this process's own
    included, through `drain`.
    """

    def __new__(
        cls,
        url: str,
        *,
        prefix: str = "wse",
        topics: list[str] | None = None,
        timeout: float = 1.0,
        breaker_threshold: int = 10,
        breaker_window: float = 60.0,
        breaker_reset: float = 60.0,
        dlq_buffer: int = 10000,
        history_ttl: float = 300.0,
    ) -> Self:
        """Starts the bridge; an unreachable Redis only means not accepting yet."""

    @property
    def instance_id(self) -> str:
        """This process's instance id on the Redis."""

    def accepting(self) -> bool:
        """Whether publications route through Redis now."""

    def travels(self, topic: str) -> bool:
        """Whether publications of `topic` travel between instances."""

    def publish(
        self,
        topic: str,
        payload_json: str,
        event_type: str | None,
        priority: int,
        message_id: str,
        timestamp_ms: int,
        timeout: float = 0.0,
    ) -> bool:
        """Hands a publication to Redis; False when the bridge's queue stayed full
        for `timeout` seconds (0: not waiting) or the bridge stopped."""

    def dead_letter(
        self,
        topic: str,
        payload_json: str,
        event_type: str | None,
        priority: int,
        message_id: str,
        timestamp_ms: int,
    ) -> None:
        """Records a publication delivered locally while the bridge was not
        accepting: a dead letter, written to Redis when it answers again."""

    def drain(
        self, max_count: int = 256, timeout_ms: int = 100
    ) -> list[tuple[str, str, str | None, str, int, str, int, str | None, int | None]]:
        """What Redis brought, waiting up to `timeout_ms` for the first:
        `(kind, topic, event_type, payload_json, priority, message_id,
        timestamp_ms, epoch, offset)`; `kind` is `"deliver"`, `"own"` (this
        process's, stamped by Redis) or `"fallback"` (this process's, not through
        Redis: stamp it locally; epoch and offset None)."""

    def dlq_messages(
        self, topic: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """As `RustWSEServer.dlq_messages`."""

    def replay_dlq_message(self, topic: str, message_id: str) -> bool:
        """As `RustWSEServer.replay_dlq_message`."""

    def status(self) -> dict[str, Any]:
        """`instance`, `breaker`, `publisher_connected`, `subscribed`, `accepting`,
        `dlq_buffered`."""

    def stop(self, timeout: float = 2.0) -> bool:
        """Stops the bridge's threads; True when they ended within `timeout`."""

def compress_c_frame(data: bytes, level: int = 1) -> bytes | None:
    """`C:` plus the zlib stream of `data`, or None when that is not smaller."""

def inflate_zlib(data: bytes, max_size: int) -> bytes:
    """Inflates a zlib stream; `ValueError` past `max_size` bytes or when bad."""

def msgpack_from_envelope(json: bytes) -> bytes:
    """`M:` plus the msgpack form of one JSON envelope (key order kept)."""

def msgpack_to_json(data: bytes, max_size: int) -> bytes:
    """The JSON text of one msgpack value; `ValueError` when invalid or too big."""

def check_topic(name: str, allow_wildcards: bool = False) -> None:
    """Raises `ValueError` unless `name` is a valid topic (PROTOCOL.md section 3)."""

def glob_match(pattern: str, topic: str) -> bool:
    """Whether `topic` matches `pattern` (`*` any run, `?` one character)."""

# The argument checks of `RustWSEServer`, for router mode: the same values are refused
# with the same messages in both modes. A wrong type raises `TypeError`.

def check_close_code(code: int) -> int:
    """`code` when `RustWSEServer.disconnect` would send it, else `ValueError`."""

def check_priority(priority: int) -> int:
    """`priority` as an `int` when it is 1 to 10, else `ValueError`."""

def check_event_type(event_type: str) -> None:
    """Raises `ValueError` when a publisher-given `event_type` is empty."""

def check_publication_type(t: str) -> None:
    """Raises `ValueError` when `t`, the type a topic publication goes out with
    (its `event_type`, else the topic name), is one of the engine's own message
    types (PROTOCOL.md section 3's `WSE` category)."""

def check_message_id(message_id: str) -> None:
    """Raises `ValueError` unless `message_id` is 1 to 128 bytes of UTF-8."""

def check_json(text: str) -> None:
    """Raises `ValueError`, saying where, unless `text` is one JSON value."""

@final
class KeyExchange:
    """The server's P-256 key pair for one connection's E2E agreement."""

    def __new__(cls) -> Self:
        """A fresh key pair."""

    @property
    def public_key(self) -> str:
        """The public key for `server_hello`, base64 of the 65-byte point."""

    def agree(self, client_public_key: str) -> E2ESession:
        """Session keys from the client's base64 public key; usable once.

        `ValueError` for a key that is not a P-256 point."""

@final
class E2ESession:
    """The keys of one E2E connection (AES-256-GCM, PROTOCOL.md section 5)."""

    def seal(self, plaintext: bytes) -> bytes:
        """An `E:` frame: `E:`, a fresh 12-byte IV, ciphertext and tag."""

    def open(self, frame: bytes) -> bytes:
        """The plaintext of an `E:` frame; `ValueError` if it does not
        authenticate."""

@final
class JwtVerifier:
    """Checks JWTs as the engine does (PROTOCOL.md section 2)."""

    def __new__(
        cls,
        secret: bytes,
        *,
        algorithm: str = "HS256",
        issuer: str | None = None,
        audience: list[str] | None = None,
        previous_secret: bytes | None = None,
        key_id: str | None = None,
    ) -> Self:
        """HS256 with a secret of 32 bytes or more, or RS256/ES256 with a PEM
        public key; `ValueError` for a key that cannot be used."""

    def verify(self, token: str, now: float | None = None) -> dict[str, Any]:
        """`{"user_id", "expires_at", "topics"}` of a valid token (`topics` is the
        `wse_topics` claim as `{"allow", "deny", "publish"}`, or None); raises
        `InvalidTokenError` with the reason otherwise."""

@final
class TopicFilter:
    """Compiled subscription filter criteria (PROTOCOL.md section 7)."""

    def __new__(cls, criteria: str) -> Self:
        """Compiles criteria given as JSON text; `ValueError` names the problem."""

    def matches_all(self) -> bool:
        """Whether the criteria are empty (everything passes)."""

    def matches(self, envelope: bytes) -> bool:
        """Whether a publication, given as its envelope's JSON, passes."""

@final
class TopicAcl:
    """One connection's topic rules (the `wse_topics` claim)."""

    def __new__(
        cls,
        allow: list[str] | None = None,
        deny: list[str] | None = None,
        publish: list[str] | None = None,
    ) -> Self:
        """Globs the connection may receive, may never receive, may publish to."""

    def may_subscribe(self, pattern: str) -> bool:
        """Whether the connection may subscribe to `pattern`."""

    def may_receive(self, topic: str) -> bool:
        """Whether a publication of `topic` may reach the connection."""

    def may_publish(self, topic: str) -> bool:
        """Whether the connection may publish to `topic`."""
