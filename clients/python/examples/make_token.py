"""Prints an HS256 token for `sub` signed with WSE_JWT_SECRET (demo only).

WSE_JWT_SECRET=... python examples/make_token.py alice
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(sub: str, secret: str, ttl: int = 3600) -> str:
    claims = {"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + ttl}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256)
    return f"{head}.{body}.{b64(mac.digest())}"


if __name__ == "__main__":
    print(
        token(
            sys.argv[1] if len(sys.argv) > 1 else "alice", os.environ["WSE_JWT_SECRET"]
        )
    )
