"""Router mode's settings and its pluggable parts.

`WSEConfig` holds everything `create_wse_router` needs; the providers are small
protocols so that an application can bring its own token check (an opaque session
store, say) or its own encryption, while the defaults use the engine's Rust code: JWT
validation (`JwtTokenProvider`) and the P-256 / AES-256-GCM agreement of PROTOCOL.md
section 5 (`AesGcmEncryption`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from wse_server._wse_accel import E2ESession, JwtVerifier, KeyExchange, check_topic

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from wse_server.router.connection import Connection

__all__ = [
    "AesGcmEncryption",
    "Cipher",
    "EncryptionProvider",
    "JwtTokenProvider",
    "KeyAgreement",
    "SnapshotProvider",
    "TokenClaims",
    "TokenProvider",
    "WSEConfig",
]


class TokenClaims(TypedDict):
    """What a token provider says about a valid token."""

    #: The connection's user id (the token's `sub`).
    user_id: str
    #: The `wse_topics` rules `{"allow", "deny", "publish"}` (lists of globs), or None.
    topics: dict[str, list[str]] | None


class TokenProvider(Protocol):
    """Checks a token found in the upgrade request."""

    async def verify(self, token: str) -> TokenClaims:
        """The token's claims; raises `InvalidTokenError` when it is not valid."""
        ...


class Cipher(Protocol):
    """The keys of one encrypted connection."""

    def seal(self, plaintext: bytes) -> bytes:
        """One `E:` frame carrying `plaintext`."""
        ...

    def open(self, frame: bytes) -> bytes:
        """The plaintext of an `E:` frame; raises `ValueError` when it is forged."""
        ...


class KeyAgreement(Protocol):
    """The server's half of one connection's key agreement."""

    @property
    def public_key(self) -> str:
        """The key sent in `server_hello` as `encryption_public_key`."""
        ...

    def agree(self, client_public_key: str) -> Cipher:
        """The connection's cipher; raises `ValueError` for a bad client key."""
        ...


class EncryptionProvider(Protocol):
    """Makes one key agreement per connection that asks for encryption."""

    def key_agreement(self) -> KeyAgreement:
        """A fresh key agreement."""
        ...


class SnapshotProvider(Protocol):
    """Current state for clients that subscribe (or send `sync_request`).

    `get_snapshot` returns `{topic: state}` for the topics it knows; each becomes a
    `<topic>_snapshot` message with `state` as its payload, followed by
    `snapshot_complete {topics, count}`, all before any later publication of those
    topics reaches that client.
    """

    async def get_snapshot(
        self, user_id: str | None, topics: list[str]
    ) -> Mapping[str, Any]:
        """The state of `topics` as `user_id` may see it."""
        ...


class JwtTokenProvider:
    """JWT validation by the engine's Rust code (PROTOCOL.md section 2)."""

    def __init__(self, verifier: JwtVerifier) -> None:
        self._verifier = verifier

    async def verify(self, token: str) -> TokenClaims:
        claims = self._verifier.verify(token)
        return TokenClaims(user_id=claims["user_id"], topics=claims["topics"])


class AesGcmEncryption:
    """ECDH P-256, HKDF-SHA256 and AES-256-GCM `E:` frames, by the engine's code."""

    def key_agreement(self) -> KeyAgreement:
        return _RustKeyAgreement(KeyExchange())


class _RustKeyAgreement:
    def __init__(self, exchange: KeyExchange) -> None:
        self._exchange = exchange

    @property
    def public_key(self) -> str:
        return self._exchange.public_key

    def agree(self, client_public_key: str) -> E2ESession:
        return self._exchange.agree(client_public_key)


#: An application's own authentication: the WebSocket in, a user id (or None) out.
AuthHandler = Callable[["WebSocket"], Awaitable[str | None]]
#: Called with each client message the router does not answer itself.
MessageHandler = Callable[["Connection", dict[str, Any]], Awaitable[None]]


@dataclasses.dataclass(kw_only=True)
class WSEConfig:
    """Settings of `create_wse_router`; times in seconds, defaults PROTOCOL.md sec. 10.

    Authentication, first that applies: `token_provider` (or, when only `jwt_secret`
    is given, JWT validation with the `jwt_*` settings), reading the token from the
    `jwt_cookie_name` cookie, then `Authorization: Bearer`, then `?token=` when
    `jwt_query_token`; a connection without a valid token gets `error`
    `AUTH_REQUIRED`/`AUTH_FAILED` and close 4401. Without either, `auth_handler`
    decides (a user id admits, None refuses the same way); with none of the three,
    connections are anonymous.
    """

    #: Redis fan-out between worker processes (and `wse-server` instances on the same
    #: Redis): `redis://[:password@]host:port/db`. None: this process alone.
    redis_url: str | None = None
    #: Prefix of the Redis channels and keys (the same in every process that shares).
    redis_prefix: str = "wse"
    #: Globs of the topics that travel through Redis (empty: every topic).
    redis_topics: Sequence[str] = ()
    #: Connect and answer timeout of each Redis call, in seconds.
    redis_timeout: float = 1.0
    jwt_secret: bytes | str | None = None
    jwt_algorithm: str = "HS256"
    jwt_issuer: str | None = None
    jwt_audience: str | Sequence[str] | None = None
    jwt_previous_secret: bytes | str | None = None
    jwt_key_id: str | None = None
    jwt_cookie_name: str = "access_token"
    jwt_query_token: bool = False
    auth_handler: AuthHandler | None = None
    token_provider: TokenProvider | None = None
    #: None with `encryption_enabled` uses `AesGcmEncryption`.
    encryption_provider: EncryptionProvider | None = None
    encryption_enabled: bool = True
    snapshot_provider: SnapshotProvider | None = None
    message_handler: MessageHandler | None = None
    #: Topics every connection is subscribed to when it connects.
    default_topics: Sequence[str] = ()
    #: `Origin` values allowed to connect (empty: any); others get HTTP 403.
    allowed_origins: Sequence[str] = ()
    max_message_size: int = 1 << 20
    heartbeat_interval: float = 25.0
    idle_timeout: float = 60.0
    compression_threshold: int = 1024
    compression_level: int = 1
    #: Messages waiting per connection; past it the connection is closed with 4503.
    max_outbound_queue: int = 4096
    max_subscriptions_per_connection: int = 1000
    allow_client_publish: bool = False
    snapshot_timeout: float = 5.0

    def __post_init__(self) -> None:
        _positive_int("max_message_size", self.max_message_size, 125)
        _positive_int("max_outbound_queue", self.max_outbound_queue, 1)
        _positive_int(
            "max_subscriptions_per_connection", self.max_subscriptions_per_connection, 1
        )
        _positive_int("compression_threshold", self.compression_threshold, 0)
        if self.compression_level not in range(1, 10):
            raise ValueError("compression_level must be 1 to 9")
        for name in (
            "heartbeat_interval",
            "idle_timeout",
            "snapshot_timeout",
            "redis_timeout",
        ):
            value = getattr(self, name)
            if not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a positive number of seconds")
        if not self.jwt_cookie_name or any(c in self.jwt_cookie_name for c in ";= ,"):
            raise ValueError("jwt_cookie_name must be a non-empty cookie name")
        for topic in self.default_topics:
            check_topic(topic, allow_wildcards=True)
        for glob in self.redis_topics:
            try:
                check_topic(glob, allow_wildcards=True)
            except ValueError as e:
                raise ValueError(f"redis_topics: {glob!r}: {e}") from e
        if self.jwt_secret is None and (self.jwt_issuer or self.jwt_audience):
            raise ValueError("jwt_secret is needed by the other jwt_* settings")

    def token_checker(self) -> TokenProvider | None:
        """The token provider in force: the given one, else JWT when configured."""
        if self.token_provider is not None:
            return self.token_provider
        if self.jwt_secret is None:
            return None
        audience = self.jwt_audience
        if isinstance(audience, str):
            audience = [audience]
        verifier = JwtVerifier(
            _bytes(self.jwt_secret),
            algorithm=self.jwt_algorithm,
            issuer=self.jwt_issuer,
            audience=list(audience) if audience is not None else None,
            previous_secret=(
                _bytes(self.jwt_previous_secret)
                if self.jwt_previous_secret is not None
                else None
            ),
            key_id=self.jwt_key_id,
        )
        return JwtTokenProvider(verifier)

    def encryption(self) -> EncryptionProvider | None:
        """The encryption provider in force, or None when encryption is off."""
        if not self.encryption_enabled:
            return None
        return self.encryption_provider or AesGcmEncryption()


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _positive_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}")
