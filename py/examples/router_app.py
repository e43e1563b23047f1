"""A FastAPI application with WSE in router mode: one port for HTTP and WebSocket.

    python py/examples/router_app.py [--host 127.0.0.1] [--port 8000]

Clients connect to ws://HOST:PORT/wse?topics=notifications; `POST /orders/{id}/ship`
publishes to them from an ordinary request handler, and `GET /wse/health` reports the
router's state. New subscribers first receive the current state of the topic from the
snapshot provider, then live updates. It prints `listening on HOST:PORT` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI

from wse_server import WSEConfig, create_wse_router


class LastShipped:
    """Snapshot provider: the last order shipped is the topic's current state."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None

    async def get_snapshot(
        self, user_id: str | None, topics: list[str]
    ) -> Mapping[str, Any]:
        if "notifications" in topics and self.last is not None:
            return {"notifications": self.last}
        return {}


state = LastShipped()
app = FastAPI(title="WSE router example")
wse = create_wse_router(WSEConfig(snapshot_provider=state))
app.include_router(wse, prefix="/wse")


@app.post("/orders/{order_id}/ship")
async def ship(order_id: int) -> dict[str, int]:
    state.last = {"text": "Order shipped!", "order_id": order_id}
    delivered = await wse.publish("notifications", state.last)
    return {"order_id": order_id, "delivered": delivered}


async def serve(host: str, port: int) -> None:
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()
        print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
