"""End-to-end encryption (PROTOCOL.md §5) and message signing (§6).

Sans-I/O: key agreement, sealing and signing on bytes. The ECDH and AES-GCM parts need
the `cryptography` package (the `[crypto]` extra); signing with a shared secret uses
only the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from .errors import WSEEncryptionError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    HAVE_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - the [crypto] extra is not installed
    HAVE_CRYPTOGRAPHY = False

__all__ = ["HAVE_CRYPTOGRAPHY", "E2ESession", "KeyExchange", "Signer", "hkdf_sha256"]


class KeyExchange:
    """One side's P-256 key pair for a single connection."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._private = private_key

    @classmethod
    def generate(cls) -> KeyExchange:
        """A fresh key pair (one per connection)."""
        _require_cryptography()
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_scalar(cls, scalar: bytes) -> KeyExchange:
        """A key pair from a fixed private scalar: test vectors only."""
        _require_cryptography()
        value = int.from_bytes(scalar, "big")
        return cls(ec.derive_private_key(value, ec.SECP256R1()))

    def public_key_b64(self) -> str:
        """The 65-byte uncompressed SEC1 point in standard base64 with padding."""
        point = self._private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        return base64.b64encode(point).decode("ascii")

    def shared_secret(self, peer_public_b64: str) -> bytes:
        """The ECDH x-coordinate with the peer's key; raises `WSEEncryptionError`
        when the key is not base64 of a 65-byte point on P-256."""
        try:
            point = base64.b64decode(peer_public_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WSEEncryptionError("server public key is not base64") from exc
        if len(point) != _PUBLIC_KEY_LEN or point[0] != 0x04:
            raise WSEEncryptionError("server public key is not an uncompressed point")
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as exc:
            raise WSEEncryptionError("server public key is not on p-256") from exc
        return self._private.exchange(ec.ECDH(), peer)

    def agree(self, peer_public_b64: str) -> E2ESession:
        """The session keys shared with the peer."""
        return E2ESession(self.shared_secret(peer_public_b64))


class E2ESession:
    """AES-256-GCM keys and the signing key derived from one ECDH secret."""

    def __init__(self, shared_x: bytes) -> None:
        _require_cryptography()
        self.aes_key = hkdf_sha256(shared_x, AES_KEY_INFO)
        self.signing_key = hkdf_sha256(shared_x, SIGNING_KEY_INFO)
        self._aead: AESGCM = AESGCM(self.aes_key)

    def seal(self, plaintext: bytes, iv: bytes | None = None) -> bytes:
        """An `E:` frame: prefix, 12-byte IV, ciphertext and tag. The IV is random
        unless given (test vectors)."""
        nonce = os.urandom(_IV_LEN) if iv is None else iv
        return E2E_PREFIX + nonce + self._aead.encrypt(nonce, plaintext, None)

    def open(self, frame: bytes) -> bytes:
        """The plaintext of an `E:` frame; `WSEEncryptionError` if it does not open."""
        if len(frame) < len(E2E_PREFIX) + _IV_LEN + _TAG_LEN:
            raise WSEEncryptionError("sealed frame is too short")
        nonce = frame[2 : 2 + _IV_LEN]
        try:
            return self._aead.decrypt(nonce, frame[2 + _IV_LEN :], None)
        except InvalidTag as exc:
            raise WSEEncryptionError("sealed frame failed authentication") from exc


class Signer:
    """HMAC-SHA256 signing of JSON text frames (PROTOCOL.md §6)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, text: str) -> str:
        """`text` (a JSON object) with `"sig"` appended as its last key."""
        body = text[: text.rindex("}")]
        if body.rstrip() == "{":
            signed, head, sep = "{}", "{", ""
        else:
            signed, head, sep = text, body, ","
        tag = self._tag(signed.encode())
        return f'{head}{sep}"sig":"{tag}"}}'

    def verify(self, text: str) -> bool:
        """True when the last key is a `sig` matching the rest of the object."""
        at = text.rfind(',"sig":')
        if at >= 0:
            body, value = text[:at] + "}", text[at + 7 :]
        elif text.startswith('{"sig":'):
            body, value = "{}", text[7:]
        else:
            return False
        value = value.rstrip()
        if not value.endswith("}"):
            return False
        given = value[:-1].strip().strip('"')
        return hmac.compare_digest(given, self._tag(body.encode()))

    def _tag(self, data: bytes) -> str:
        digest = hmac.new(self._key, data, hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with no salt."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _require_cryptography() -> None:
    if not HAVE_CRYPTOGRAPHY:  # pragma: no cover - the [crypto] extra is installed
        raise WSEEncryptionError(
            "encryption needs the cryptography package: pip install wse-client[crypto]"
        )


E2E_PREFIX = b"E:"
AES_KEY_INFO = b"wse-encryption/aes-gcm-key"
SIGNING_KEY_INFO = b"wse-signing/hmac-sha256"
_IV_LEN = 12
_TAG_LEN = 16
_PUBLIC_KEY_LEN = 65
