"""Python payloads as JSON: the conversion rules, in one place.

Both modes use this module: `RustWSEServer` calls `dumps` for every payload given as
a Python object (`publish`, `send_event`, `update_presence`, ...), and router mode
calls it for everything it sends. The rules:

- `dict`, `list`, `tuple`, `str`, `int`, `float`, `bool` and `None` as JSON has them
  (subclasses as their base type). Integers must fit in 64 bits. NaN and the infinities
  become `null`, as JSON has no spelling for them.
- Dict keys: `str` as it is; `int`, `float`, `bool`, `None`, `UUID` and `Enum` keys as
  their text.
- `datetime`: ISO 8601 in UTC with milliseconds and a `Z`, like every time on the wire
  (`2026-01-15T10:30:00.123Z`). An aware value is converted to UTC; a naive one is taken
  to be UTC already. Digits below the millisecond are dropped.
- `date`: `YYYY-MM-DD`; `time`: ISO 8601 as `time.isoformat()` gives it.
- `UUID`: the canonical lowercase hyphenated text.
- `Enum`: its value, converted by these same rules.
- `Decimal`: its exact text, as a JSON string (`"19.99"`), so that no digit is lost to a
  binary float on the way.
- `bytes`, `bytearray`, `memoryview`: standard base64 with padding, as a JSON string.
- dataclasses: an object of their fields, in declaration order.
- pydantic models (v2): `model_dump()` (field names, not aliases), then these rules.

Anything else raises `TypeError` naming the type.
"""

from __future__ import annotations

import base64
import datetime as _dt
from decimal import Decimal
from typing import Any

import orjson

__all__ = ["dumps", "loads", "to_jsonable"]

#: orjson options: datetimes come to `_default` so they follow the wire's time format.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS

loads = orjson.loads


def dumps(value: Any) -> bytes:
    """`value` as UTF-8 JSON text, by the rules of this module."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON types (dict, list, str, int, float, bool, None)."""
    return orjson.loads(dumps(value))


def _default(value: Any) -> Any:
    """Called by orjson for every value it does not convert by itself."""
    if isinstance(value, _dt.datetime):
        return _utc_millis(value)
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    model_dump = getattr(type(value), "model_dump", None)
    if callable(model_dump):
        return model_dump(value)
    raise TypeError(f"cannot convert {type(value).__qualname__} to JSON")


def _utc_millis(value: _dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(_dt.UTC)
    naive = value.replace(tzinfo=None)
    return naive.isoformat(timespec="milliseconds") + "Z"
