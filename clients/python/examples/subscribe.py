"""The example from the README: subscribe and print every event.

WSE_TOKEN=... python examples/subscribe.py
"""

import asyncio
import os

from wse_client import connect


async def main() -> None:
    token = os.environ["WSE_TOKEN"]
    async with connect("ws://localhost:5006/wse", token=token) as client:
        await client.subscribe(["notifications", "live_data"])
        async for event in client:
            print(event.type, event.payload)


if __name__ == "__main__":
    asyncio.run(main())
