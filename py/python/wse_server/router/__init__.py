"""Router mode: PROTOCOL.md served by a FastAPI `APIRouter` on the application's port.

```python
from fastapi import FastAPI
from wse_server import WSEConfig, create_wse_router

app = FastAPI()
wse = create_wse_router(WSEConfig(jwt_secret=SECRET))
app.include_router(wse, prefix="/wse")  # WebSocket /wse, health /wse/health

@app.post("/orders/{order_id}/ship")
async def ship(order_id: int) -> dict[str, bool]:
    await wse.publish("notifications", {"text": "Order shipped!", "order_id": order_id})
    return {"ok": True}
```
"""

from wse_server.router.config import (
    AesGcmEncryption,
    Cipher,
    EncryptionProvider,
    JwtTokenProvider,
    KeyAgreement,
    SnapshotProvider,
    TokenClaims,
    TokenProvider,
    WSEConfig,
)
from wse_server.router.connection import Connection
from wse_server.router.hub import WSERouter, create_wse_router

__all__ = [
    "AesGcmEncryption",
    "Cipher",
    "Connection",
    "EncryptionProvider",
    "JwtTokenProvider",
    "KeyAgreement",
    "SnapshotProvider",
    "TokenClaims",
    "TokenProvider",
    "WSEConfig",
    "WSERouter",
    "create_wse_router",
]
