"""WSE client for Python: topics, recovery after reconnects, end-to-end encryption.

    from wse_client import connect

    async with connect("ws://localhost:5006/wse", token="your-jwt") as client:
        await client.subscribe(["notifications", "live_data"])
        async for event in client:
            print(event.type, event.payload)

`connect` is `AsyncWSEClient`: its options are keyword-only. `SyncWSEClient` offers the
same for threaded code. Every error is a `WSEError` (see `wse_client.errors`).
"""

from __future__ import annotations

from .client import CLIENT_EVENTS, AsyncWSEClient, Handler
from .errors import (
    WSEAuthError,
    WSECircuitOpenError,
    WSEClosedError,
    WSEConnectionError,
    WSEEncryptionError,
    WSEError,
    WSEProtocolError,
    WSERateLimitError,
    WSETimeoutError,
)
from .monitor import NetworkMonitor, QualityThresholds
from .pool import ConnectionPool, PoolStrategy
from .sync import SyncWSEClient
from .types import (
    ConnectionQuality,
    ConnectionState,
    Priority,
    RateLimit,
    ReconnectPolicy,
    ReconnectStrategy,
    SubscriptionResult,
    TopicRecovery,
    WSEEvent,
)

#: `async with connect(url, ...) as client`, or `client = await connect(url, ...)`.
connect = AsyncWSEClient

__version__ = "3.0.0.dev0"

__all__ = [
    "CLIENT_EVENTS",
    "AsyncWSEClient",
    "ConnectionPool",
    "ConnectionQuality",
    "ConnectionState",
    "Handler",
    "NetworkMonitor",
    "PoolStrategy",
    "Priority",
    "QualityThresholds",
    "RateLimit",
    "ReconnectPolicy",
    "ReconnectStrategy",
    "SubscriptionResult",
    "SyncWSEClient",
    "TopicRecovery",
    "WSEAuthError",
    "WSECircuitOpenError",
    "WSEClosedError",
    "WSEConnectionError",
    "WSEEncryptionError",
    "WSEError",
    "WSEEvent",
    "WSEProtocolError",
    "WSERateLimitError",
    "WSETimeoutError",
    "__version__",
    "connect",
]
