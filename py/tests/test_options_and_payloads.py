"""The constructor's keyword arguments, and the payload conversion rules.

Neither needs a running server: the constructor checks its arguments before anything
starts, and the conversion rules are one Python function (`wse_server.dumps`) that both
modes call. One test sends a converted payload through a running engine to show that
the engine path applies the same rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import inspect
import json
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from websockets.asyncio.client import connect

from conftest import StartServer, url
from wse_server import RustWSEServer, dumps, to_jsonable


@pytest.mark.parametrize(
    ("options", "error", "text"),
    [
        ({"max_connections": 0}, ValueError, "max_connections must be an integer >= 1"),
        (
            {"max_message_size": 100},
            ValueError,
            "max_message_size must be an integer >= 125",
        ),
        ({"ping_interval": 0}, ValueError, "ping_interval must be a positive number"),
        ({"idle_timeout": -1.5}, ValueError, "idle_timeout must be a positive number"),
        ({"idle_timeout": float("nan")}, ValueError, "idle_timeout must be a positive"),
        ({"jwt_secret": b"short"}, ValueError, "jwt_secret"),
        ({"jwt_issuer": "me"}, ValueError, "jwt_secret is needed"),
        (
            {"jwt_secret": "x" * 40, "jwt_algorithm": "none"},
            ValueError,
            "jwt_algorithm",
        ),
        ({"jwt_secret": "x" * 40, "jwt_algorithm": "RS256"}, ValueError, "jwt_secret"),
        ({"jwt_cookie_name": "a;b"}, ValueError, "jwt_cookie_name"),
        ({"auth_failure_mode": "maybe"}, ValueError, "auth_failure_mode"),
        ({"compression_level": 0}, ValueError, "compression_level must be 1 to 9"),
        ({"rate_limit_refill": 0}, ValueError, "rate_limit_refill"),
        ({"shards": 0}, ValueError, "shards must be at least 1"),
        ({"shards": 1, "cores": [0]}, ValueError, "not both"),
        ({"cores": [10_000]}, ValueError, "core 10000 is not online"),
        ({"path": "wse"}, ValueError, "path must start with '/'"),
        ({"max_inbound_queue_bytes": 10}, ValueError, "max_inbound_queue_bytes"),
        ({"require_signed_inbound": True}, ValueError, "signing_secret"),
        ({"tls_cert": "cert.pem"}, ValueError, "tls_key"),
        (
            {"max_connections": "10"},
            TypeError,
            "max_connections got a value of type str",
        ),
        (
            {"max_connections": True},
            TypeError,
            "max_connections got a value of type bool",
        ),
        ({"recovery_enabled": "yes"}, TypeError, "recovery_enabled"),
        (
            {"no_such_option": 1},
            TypeError,
            "unexpected keyword argument 'no_such_option'",
        ),
        ({"redis_url": "http://x"}, ValueError, "redis_url"),
        ({"redis_url": "redis://x", "redis_prefix": "a b"}, ValueError, "redis_prefix"),
        ({"redis_timeout": 0}, ValueError, "redis_timeout"),
    ],
)
def test_bad_options_are_refused_with_the_argument_named(
    options: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(")):
        RustWSEServer("127.0.0.1", 0, **options)


def test_host_and_port_are_checked() -> None:
    with pytest.raises(ValueError, match="host must be an IP address"):
        RustWSEServer("localhost", 0)
    with pytest.raises(ValueError, match="port must be 0 to 65535"):
        RustWSEServer("127.0.0.1", 70_000)


def test_good_options_are_taken() -> None:
    server = RustWSEServer(
        "127.0.0.1",
        0,
        max_connections=5,
        jwt_secret=b"k" * 32,
        jwt_issuer="your-app",
        jwt_audience="your-api",
        jwt_cookie_name="session",
        jwt_previous_secret="p" * 32,
        jwt_algorithm="hs256",
        max_message_size=4096,
        ping_interval=0.5,
        idle_timeout=2,
        max_outbound_queue_bytes=65536,
        max_subscriptions_per_connection=10,
        recovery_enabled=False,
        recovery_buffer_size=8,
        recovery_ttl=60,
        presence_enabled=True,
        rate_limit_capacity=1000.0,
        rate_limit_refill=50,
        require_accept=True,
        redis_url=None,
        shards=1,
    )
    assert "stopped" in repr(server) and not server.is_running()


def test_the_signature_lists_every_option_with_its_default() -> None:
    params = inspect.signature(RustWSEServer).parameters
    assert list(params)[:2] == ["host", "port"]
    assert params["max_connections"].default == 10_000
    assert params["ping_interval"].default == 25.0
    assert params["idle_timeout"].default == 60.0
    assert params["max_outbound_queue_bytes"].default == 1 << 20
    assert params["rate_limit_capacity"].default == 100_000
    assert params["max_inbound_queue_size"].default == 65_536
    assert params["publish_timeout"].default == 1.0
    assert params["redis_url"].default is None
    assert params["redis_breaker_threshold"].default == 10
    assert params["redis_breaker_reset"].default == 60.0
    for name, param in list(params.items())[2:]:
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, name


class Color(enum.Enum):
    RED = "red"
    WHEN = dt.date(2026, 1, 15)


@dataclasses.dataclass
class Line:
    sku: uuid.UUID
    price: Decimal
    at: dt.datetime


class Order(pydantic.BaseModel):
    id: int
    lines: list[Line]
    color: Color
    note: bytes


AT = dt.datetime(
    2026, 1, 15, 11, 30, 0, 123_456, tzinfo=dt.timezone(dt.timedelta(hours=1))
)
SKU = uuid.UUID("12345678-1234-5678-1234-567812345678")
EXPECTED_LINE = {
    "sku": "12345678-1234-5678-1234-567812345678",
    "price": "19.90",
    "at": "2026-01-15T10:30:00.123Z",
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AT, "2026-01-15T10:30:00.123Z"),
        (dt.datetime(2026, 1, 15, 10, 30), "2026-01-15T10:30:00.000Z"),
        (dt.date(2026, 1, 15), "2026-01-15"),
        (dt.time(10, 30, 5), "10:30:05"),
        (SKU, "12345678-1234-5678-1234-567812345678"),
        (Color.RED, "red"),
        (Color.WHEN, "2026-01-15"),
        (Decimal("19.90"), "19.90"),
        (Decimal("1E+3"), "1E+3"),
        (b"\x00\xffhi", "AP9oaQ=="),
        (bytearray(b"hi"), "aGk="),
        (Line(SKU, Decimal("19.90"), AT), EXPECTED_LINE),
        (
            Order(
                id=1,
                lines=[Line(SKU, Decimal("19.90"), AT)],
                color=Color.RED,
                note=b"x",
            ),
            {"id": 1, "lines": [EXPECTED_LINE], "color": "red", "note": "eA=="},
        ),
        ({1: "a", None: "b", SKU: "c"}, {"1": "a", "null": "b", str(SKU): "c"}),
        ((1, 2.5, True, None), [1, 2.5, True, None]),
        (float("nan"), None),
    ],
)
def test_conversion_rules(value: Any, expected: Any) -> None:
    assert to_jsonable(value) == expected
    assert json.loads(dumps({"v": value})) == {"v": expected}


def test_unconvertible_values_raise_type_error() -> None:
    with pytest.raises(TypeError, match="set"):
        dumps({"s": {1, 2}})
    with pytest.raises(TypeError):
        dumps(2**70)


def test_the_engine_path_applies_the_same_rules(start_server: StartServer) -> None:
    server = start_server()
    payload = {"line": Line(SKU, Decimal("19.90"), AT), "color": Color.RED, "at": AT}

    async def scenario() -> dict[str, Any]:
        async with connect(url(server, "?topics=orders")) as ws:
            for _ in range(2):  # server_ready, subscription_update
                await asyncio.wait_for(ws.recv(), 5)
            server.publish("orders", payload)
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if message["t"] == "orders":
                    result: dict[str, Any] = message["p"]
                    return result

    assert asyncio.run(scenario()) == to_jsonable(payload)
