"""Publishes a few messages to the README example's topics (needs a server started
with --allow-client-publish, or a token whose wse_topics claim allows publishing).

    WSE_TOKEN=... python examples/publish.py
"""

import asyncio
import os

from wse_client import Priority, connect


async def main() -> None:
    token = os.environ["WSE_TOKEN"]
    async with connect("ws://localhost:5006/wse", token=token) as client:
        await client.publish("notifications", {"text": "deploy finished"})
        await client.publish("live_data", {"sym": "ACME", "px": 101.25}, type="quote")
        await client.publish(
            "notifications", {"text": "disk 91% full"}, priority=Priority.HIGH
        )


if __name__ == "__main__":
    asyncio.run(main())
