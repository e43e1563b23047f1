"""WSE: a thread-per-core WebSocket engine for Python backends.

Two ways in:

- `RustWSEServer` runs the Rust engine on its own port, on its own threads; Python
  drains its events in batches with `drain_inbound` and calls into it (`publish`,
  `send_event`, ...).
- `create_wse_router(WSEConfig(...))` serves the same protocol from a FastAPI
  application, on the application's own port (needs the `fastapi` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wse_server._payload import dumps, loads, to_jsonable
from wse_server._wse_accel import (
    InvalidTokenError,
    RedisUnavailableError,
    RustWSEServer,
    ServerBusyError,
    ServerNotRunningError,
    WSEError,
    __version__,
)

if TYPE_CHECKING:
    from wse_server.router import (
        EncryptionProvider,
        SnapshotProvider,
        TokenProvider,
        WSEConfig,
        WSERouter,
        create_wse_router,
    )

__all__ = [
    "EncryptionProvider",
    "InvalidTokenError",
    "RedisUnavailableError",
    "RustWSEServer",
    "ServerBusyError",
    "ServerNotRunningError",
    "SnapshotProvider",
    "TokenProvider",
    "WSEConfig",
    "WSEError",
    "WSERouter",
    "__version__",
    "create_wse_router",
    "dumps",
    "loads",
    "to_jsonable",
]

#: Names that live in `wse_server.router`, imported on first use so that the standalone
#: server does not need FastAPI installed.
_ROUTER_NAMES = frozenset(
    {
        "EncryptionProvider",
        "SnapshotProvider",
        "TokenProvider",
        "WSEConfig",
        "WSERouter",
        "create_wse_router",
    }
)


def __getattr__(name: str) -> Any:
    if name in _ROUTER_NAMES:
        try:
            from wse_server import router
        except ImportError as e:
            raise ImportError(
                f"wse_server.{name} is router mode, which needs FastAPI: "
                "pip install 'wse-server[fastapi]' uvicorn"
            ) from e
        return getattr(router, name)
    raise AttributeError(f"module 'wse_server' has no attribute {name!r}")
