#!/usr/bin/env python3
"""Known-answer vectors for WSE end-to-end encryption and signing (PROTOCOL.md §5, §6).

Uses only the `cryptography` package, the library the wse-client 2.x Python client uses,
so the Rust side (protocol/src/e2e.rs, protocol/src/signing.rs) can be checked against an
independent implementation.

Usage:
    e2e_vectors.py                         print the vectors (embedded in the Rust tests)
    e2e_vectors.py open KEY_HEX FRAME_HEX  open an `E:` frame, print its plaintext
    e2e_vectors.py verify KEY_HEX FRAME    check a signed JSON frame, print ok or bad
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

AES_INFO = b"wse-encryption/aes-gcm-key"
SIGNING_INFO = b"wse-signing/hmac-sha256"
SIG_MARK = b',"sig":'

# Fixed private scalars: SHA-256 of a label, far below the P-256 group order.
CLIENT_SCALAR = hashlib.sha256(b"wse e2e test vector: client").digest()
SERVER_SCALAR = hashlib.sha256(b"wse e2e test vector: server").digest()
IV = bytes(range(12))
PLAINTEXT = b'{"c":"U","t":"price","p":{"sym":"ACME","px":101.25},"v":1}'
SIGN_INPUT = b'{"c":"U","t":"note","p":{"text":"hello"},"v":1}'


def hkdf(ikm: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 with no salt, 32 bytes of output."""
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(ikm)


def private_key(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())


def public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def seal(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    return b"E:" + iv + AESGCM(key).encrypt(iv, plaintext, None)


def sign(key: bytes, text: bytes) -> bytes:
    """Append `"sig"` as the last key, as PROTOCOL.md §6 describes."""
    body = text[: text.rindex(b"}")]
    if body.rstrip() == b"{":  # an empty object is signed as `{}`, sent as `{"sig":...}`
        text, body, sep = b"{}", b"{", b""
    else:
        sep = b","
    tag = base64.b64encode(hmac.new(key, text, hashlib.sha256).digest())
    return body + sep + b'"sig":"' + tag + b'"}'


def print_vectors() -> None:
    client = private_key(CLIENT_SCALAR)
    server = private_key(SERVER_SCALAR)
    shared = server.exchange(ec.ECDH(), client.public_key())
    assert shared == client.exchange(ec.ECDH(), server.public_key())
    aes_key = hkdf(shared, AES_INFO)
    signing_key = hkdf(shared, SIGNING_INFO)
    rows = [
        ("CLIENT_SCALAR", CLIENT_SCALAR.hex()),
        ("SERVER_SCALAR", SERVER_SCALAR.hex()),
        ("CLIENT_PUBLIC_B64", base64.b64encode(public_point(client)).decode()),
        ("SERVER_PUBLIC_B64", base64.b64encode(public_point(server)).decode()),
        ("SHARED_X", shared.hex()),
        ("AES_KEY", aes_key.hex()),
        ("SIGNING_KEY", signing_key.hex()),
        ("IV", IV.hex()),
        ("PLAINTEXT", PLAINTEXT.decode()),
        ("FRAME", seal(aes_key, IV, PLAINTEXT).hex()),
        ("SIGN_INPUT", SIGN_INPUT.decode()),
        ("SIGNED", sign(signing_key, SIGN_INPUT).decode()),
        ("SIGNED_EMPTY", sign(signing_key, b"{}").decode()),
    ]
    for name, value in rows:
        print(f"{name} = {value}")


def open_frame(key_hex: str, frame_hex: str) -> None:
    frame = bytes.fromhex(frame_hex)
    if frame[:2] != b"E:":
        sys.exit("not an E: frame")
    iv, sealed = frame[2:14], frame[14:]
    print(AESGCM(bytes.fromhex(key_hex)).decrypt(iv, sealed, None).decode())


def verify(key_hex: str, frame: str) -> None:
    data = frame.encode()
    at = data.rfind(SIG_MARK)
    if at >= 0:
        body, value = data[:at] + b"}", data[at + len(SIG_MARK) :]
    elif data.startswith(b'{"sig":'):
        body, value = b"{}", data[len(b'{"sig":') :]
    else:
        sys.exit("bad: no sig")
    tag = base64.b64decode(value.rstrip()[:-1].strip(b'"'), validate=True)
    expected = hmac.new(bytes.fromhex(key_hex), body, hashlib.sha256).digest()
    print("ok" if hmac.compare_digest(tag, expected) else "bad")


def main(argv: list[str]) -> None:
    if len(argv) == 1:
        print_vectors()
    elif len(argv) == 4 and argv[1] == "open":
        open_frame(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "verify":
        verify(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
