"""Codecs and crypto against the repository's one set of vectors.

The E2E and signing vectors come from `scripts/e2e_vectors.py`; the Rust tests embed
its output in `protocol/src/e2e.rs` and `protocol/src/signing.rs`. These tests read
the constants from the Rust source itself, so the three speakers cannot drift apart.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import zlib
from pathlib import Path
from types import ModuleType

import msgpack
import pytest
from conftest import ROOT

from wse_client.codec import (
    Codec,
    MessageIds,
    category_of,
    envelope_to_event,
    is_heartbeat,
    iso_now,
)
from wse_client.crypto import E2ESession, KeyExchange, Signer, hkdf_sha256
from wse_client.errors import WSEEncryptionError, WSEProtocolError


def rust_constants(path: Path) -> dict[str, str]:
    """`const PY_*: &str = ...;` from a Rust file: plain, raw and concat! strings."""
    text = path.read_text()
    found: dict[str, str] = {}
    for match in re.finditer(r"const (PY_\w+): &str =\s*(.*?);\n", text, re.S):
        parts = re.findall(r'r#"(.*?)"#|"((?:[^"\\]|\\.)*)"', match.group(2), re.S)
        found[match.group(1)] = "".join(raw or plain for raw, plain in parts)
    return found


def load_vectors_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "e2e_vectors", ROOT / "scripts" / "e2e_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


E2E = rust_constants(ROOT / "protocol" / "src" / "e2e.rs")
SIGNING = rust_constants(ROOT / "protocol" / "src" / "signing.rs")


def test_rust_vectors_were_found() -> None:
    assert {"PY_CLIENT_SCALAR", "PY_FRAME", "PY_SIGNED", "PY_AES_KEY"} <= set(E2E)
    assert SIGNING["PY_SIGNED"] == E2E["PY_SIGNED"]


def test_vectors_script_and_rust_agree() -> None:
    script = load_vectors_script()
    assert script.CLIENT_SCALAR.hex() == E2E["PY_CLIENT_SCALAR"]
    assert script.PLAINTEXT.decode() == E2E["PY_PLAINTEXT"]


def test_key_agreement_matches_the_vectors() -> None:
    client = KeyExchange.from_scalar(bytes.fromhex(E2E["PY_CLIENT_SCALAR"]))
    server = KeyExchange.from_scalar(bytes.fromhex(E2E["PY_SERVER_SCALAR"]))
    assert client.public_key_b64() == E2E["PY_CLIENT_PUBLIC_B64"]
    assert server.public_key_b64() == E2E["PY_SERVER_PUBLIC_B64"]
    shared = client.shared_secret(E2E["PY_SERVER_PUBLIC_B64"])
    assert shared.hex() == E2E["PY_SHARED_X"]
    session = client.agree(E2E["PY_SERVER_PUBLIC_B64"])
    assert session.aes_key.hex() == E2E["PY_AES_KEY"]
    assert session.signing_key.hex() == E2E["PY_SIGNING_KEY"]


def test_hkdf_matches_rfc_5869_shape() -> None:
    # RFC 5869 A.3 (no salt, no info), truncated to 32 bytes.
    okm = hkdf_sha256(bytes.fromhex("0b" * 22), b"", 42)
    expected = (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
        "9d201395faa4b61a96c8"
    )
    assert okm.hex() == expected


def vector_session() -> E2ESession:
    client = KeyExchange.from_scalar(bytes.fromhex(E2E["PY_CLIENT_SCALAR"]))
    return client.agree(E2E["PY_SERVER_PUBLIC_B64"])


def test_seal_reproduces_the_vector_frame_and_opens_it() -> None:
    session = vector_session()
    iv = bytes.fromhex(E2E["PY_IV"])
    frame = session.seal(E2E["PY_PLAINTEXT"].encode(), iv)
    assert frame.hex() == E2E["PY_FRAME"]
    assert session.open(frame).decode() == E2E["PY_PLAINTEXT"]


def test_codec_opens_the_vector_frame() -> None:
    codec = Codec()
    codec.session = vector_session()
    envelope = codec.decode(bytes.fromhex(E2E["PY_FRAME"]))
    assert envelope == json.loads(E2E["PY_PLAINTEXT"])


def test_sealed_msgpack_inside_e2e() -> None:
    codec = Codec()
    codec.session = vector_session()
    plain = b"M:" + msgpack.packb({"t": "x", "p": {"a": 1}})
    assert codec.decode(codec.session.seal(plain)) == {"t": "x", "p": {"a": 1}}


def test_sealed_frames_that_do_not_open_raise() -> None:
    codec = Codec()
    frame = bytes.fromhex(E2E["PY_FRAME"])
    with pytest.raises(WSEEncryptionError, match="before encryption"):
        codec.decode(frame)
    codec.session = vector_session()
    tampered = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(WSEEncryptionError, match="authentication"):
        codec.decode(tampered)
    with pytest.raises(WSEEncryptionError, match="too short"):
        codec.decode(b"E:" + bytes(10))


def test_encode_seals_once_agreed() -> None:
    codec = Codec()
    codec.session = vector_session()
    frame = codec.encode({"t": "a", "p": {}})
    assert isinstance(frame, bytes) and frame.startswith(b"E:")
    assert codec.decode(frame) == {"t": "a", "p": {}}


@pytest.mark.parametrize(
    "key",
    [
        "not base64!",
        base64.b64encode(b"\x04" + bytes(10)).decode(),
        base64.b64encode(b"\x04" + bytes(64)).decode(),
        base64.b64encode(b"\x02" + bytes(64)).decode(),
    ],
)
def test_bad_server_keys_raise(key: str) -> None:
    with pytest.raises(WSEEncryptionError):
        KeyExchange.generate().agree(key)


def test_signing_matches_the_vector() -> None:
    signer = Signer(bytes.fromhex(E2E["PY_SIGNING_KEY"]))
    assert signer.sign(E2E["PY_SIGN_INPUT"]) == E2E["PY_SIGNED"]
    assert signer.verify(E2E["PY_SIGNED"])
    script = load_vectors_script()
    key = bytes.fromhex(E2E["PY_SIGNING_KEY"])
    assert signer.sign("{}") == script.sign(key, b"{}").decode()
    assert signer.verify(signer.sign("{}"))


@pytest.mark.parametrize(
    "frame",
    [
        '{"t":"a","p":{}}',
        '{"t":"a","sig":"AAAA"}',
        '{"t":"a","sig":"AAAA"',
        '{"t":"b","p":{},"sig":"cBh5ZOBnx5qg4QsWpw0SCbPCTdNsE+bifA6+tcsxqko="}',
    ],
)
def test_bad_signatures_do_not_verify(frame: str) -> None:
    assert not Signer(bytes.fromhex(E2E["PY_SIGNING_KEY"])).verify(frame)


def test_codec_signs_and_verifies() -> None:
    codec = Codec(signer=Signer(b"k" * 32), verify_signatures=True)
    frame = codec.encode({"t": "a", "p": {"x": 1}})
    assert isinstance(frame, str) and frame.endswith('"}')
    assert codec.decode(frame) == {"t": "a", "p": {"x": 1}, "sig": frame[-46:-2]}
    with pytest.raises(WSEProtocolError, match="signature"):
        codec.decode(frame.replace('"x":1', '"x":2'))
    assert codec.bad_signatures == 1
    assert codec.decode('{"t":"unsigned"}') == {"t": "unsigned"}


def test_compressed_frames() -> None:
    codec = Codec(max_size=1000)
    body = json.dumps({"t": "big", "p": "x" * 500}).encode()
    assert codec.decode(b"C:" + zlib.compress(body))["p"] == "x" * 500
    assert codec.decode(zlib.compress(body))["t"] == "big"  # bare zlib, 0x78
    with pytest.raises(WSEProtocolError, match="inflates past"):
        codec.decode(b"C:" + zlib.compress(json.dumps({"p": "y" * 5000}).encode()))
    with pytest.raises(WSEProtocolError, match="does not inflate"):
        codec.decode(b"C:not zlib at all")
    with pytest.raises(WSEProtocolError, match="truncated"):
        codec.decode(b"C:" + zlib.compress(body)[:20])


def test_msgpack_and_binary_json_frames() -> None:
    codec = Codec()
    packed = msgpack.packb({"t": "m", "p": {"b": True}, "o": 3})
    assert codec.decode(b"M:" + packed) == {"t": "m", "p": {"b": True}, "o": 3}
    assert codec.decode(b'{"t":"bin"}') == {"t": "bin"}
    with pytest.raises(WSEProtocolError, match="not msgpack"):
        codec.decode(b"M:\xc1")
    with pytest.raises(WSEProtocolError, match="not a map"):
        codec.decode(b"M:" + msgpack.packb([1, 2]))
    with pytest.raises(WSEProtocolError, match="unknown binary"):
        codec.decode(b"\x00\x01")


@pytest.mark.parametrize("prefix", ["WSE", "S", "U"])
def test_legacy_prefixes_are_stripped(prefix: str) -> None:
    assert Codec().decode(prefix + '{"t":"a"}') == {"t": "a"}


@pytest.mark.parametrize(
    "text", ["not json", "[1,2]", '"s"', "X{}", '{"a":}', '{"t":1} x', "{"]
)
def test_text_that_is_not_an_object_raises(text: str) -> None:
    with pytest.raises(WSEProtocolError):
        Codec().decode(text)


def test_trailing_whitespace_is_fine() -> None:
    assert Codec().decode('{"t":1} \n') == {"t": 1}


def test_envelope_to_event_reads_every_field() -> None:
    event = envelope_to_event(
        {
            "c": "U",
            "t": "quote",
            "p": {"px": 1},
            "id": "m1",
            "ts": "2026-01-01T00:00:00.000Z",
            "seq": 7,
            "pri": 8,
            "cid": "c1",
            "tp": "quotes",
            "e": "0badcafe",
            "o": 41,
        }
    )
    assert (event.type, event.payload, event.id, event.sequence) == (
        "quote",
        {"px": 1},
        "m1",
        7,
    )
    assert (event.priority, event.correlation_id, event.category) == (8, "c1", "U")
    assert (event.topic, event.epoch, event.offset) == ("quotes", "0badcafe", 41)
    assert event.timestamp == "2026-01-01T00:00:00.000Z"


def test_envelope_aliases_and_derived_category() -> None:
    event = envelope_to_event({"type": "user_snapshot", "payload": [1]})
    assert (event.type, event.payload, event.category) == ("user_snapshot", [1], "S")
    assert envelope_to_event({"t": "error"}).category == "WSE"
    assert envelope_to_event({"t": "x", "p": None}).payload is None
    with pytest.raises(WSEProtocolError, match="no type"):
        envelope_to_event({"p": 1})


@pytest.mark.parametrize(
    ("kind", "category"),
    [
        ("snapshot_users", "S"),
        ("orders_snapshot", "S"),
        ("server_ready", "WSE"),
        ("PONG", "WSE"),
        ("price", "U"),
    ],
)
def test_category_rule(kind: str, category: str) -> None:
    assert category_of(kind) == category


def test_heartbeats_are_matched_by_their_first_bytes() -> None:
    assert is_heartbeat('{"c":"WSE","t":"ping","p":{}}')
    assert is_heartbeat('{"c":"WSE","t":"PONG","p":{}}')
    assert not is_heartbeat('{"t":"ping"}')


def test_wire_time_and_ids() -> None:
    stamp = iso_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    ids = MessageIds()
    first, second = ids.next(), ids.next()
    assert first != second and first.split("-")[0] == second.split("-")[0]
    assert MessageIds().next().split("-")[0] != first.split("-")[0]
