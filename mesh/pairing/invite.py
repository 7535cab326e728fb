"""Invite codes: what a new device needs to join, carried as text or a QR code.

An invite code is ``am1-`` followed by base32 (no padding) of the canonical CBOR
``[1, mesh_id, runtime_key, addresses, secret, expires_ms]``. The secret (at
least 128 bits) never leaves the device that holds the code: joining proves it
with an HMAC bound to the joining device's key. The runtime knows an invite by
``invite_id(secret)`` and keeps its capabilities, name and state itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from mesh import cbor
from mesh.errors import MembershipError
from mesh.identity import PUBLIC_KEY_BYTES
from mesh.limits import INVITE_SECRET_BYTES, MAX_CLOCK

CODE_PREFIX = "am1-"
_ID_DOMAIN = b"agentmesh/invite-id/v1\x00"
_PROOF_DOMAIN = b"agentmesh/join/v1\x00"
_SAS_DOMAIN = b"agentmesh/sas/v1\x00"
#: Most addresses carried in one invite, and the longest address.
MAX_INVITE_ADDRESSES = 8
MAX_ADDRESS_BYTES = 256


class InviteError(MembershipError):
    """An invite code does not parse, or a join was refused."""


@dataclass(frozen=True)
class Invite:
    mesh_id: bytes
    runtime_key: bytes
    addresses: tuple[str, ...]
    secret: bytes
    expires_ms: int

    @property
    def id(self) -> bytes:
        return invite_id(self.secret)

    def code(self) -> str:
        body = cbor.encode(
            [1, self.mesh_id, self.runtime_key, list(self.addresses), self.secret, self.expires_ms]
        )
        return CODE_PREFIX + base64.b32encode(body).decode("ascii").rstrip("=").lower()


def invite_id(secret: bytes) -> bytes:
    """How the runtime names an invite: 16 bytes of SHA-256 over a domain and the secret."""
    return hashlib.sha256(_ID_DOMAIN + secret).digest()[:16]


def join_proof(secret: bytes, mesh_id: bytes, runtime_key: bytes, device_key: bytes) -> bytes:
    """HMAC-SHA256 proving knowledge of the secret, bound to this device and runtime."""
    message = _PROOF_DOMAIN + mesh_id + runtime_key + device_key
    return hmac.new(secret, message, hashlib.sha256).digest()


def short_authentication_string(secret: bytes, runtime_key: bytes, device_key: bytes) -> str:
    """Six digits both sides show when a join waits for approval (compare them)."""
    digest = hmac.new(secret, _SAS_DOMAIN + runtime_key + device_key, hashlib.sha256).digest()
    return f"{int.from_bytes(digest[:4], 'big') % 1_000_000:06d}"


def parse_code(code: str) -> Invite:
    """Parse an invite code; InviteError with a clear message if it is not one."""
    text = code.strip().lower()
    if not text.startswith(CODE_PREFIX):
        raise InviteError("not an agentmesh invite code (it starts with 'am1-')")
    payload = text[len(CODE_PREFIX) :].upper()
    try:
        raw = base64.b32decode(payload + "=" * (-len(payload) % 8))
        fields = cbor.expect_list(cbor.decode(raw), 6, "invite")
        if fields[0] != 1 or type(fields[0]) is not int:
            raise cbor.CanonicalError("unknown invite version")
        mesh_id = cbor.expect_bytes(fields[1], "mesh id", 32)
        runtime_key = cbor.expect_bytes(fields[2], "runtime key", PUBLIC_KEY_BYTES)
        addresses = fields[3]
        if not isinstance(addresses, list) or not 0 < len(addresses) <= MAX_INVITE_ADDRESSES:
            raise cbor.CanonicalError("addresses")
        addrs = tuple(cbor.expect_text(a, "address", MAX_ADDRESS_BYTES) for a in addresses)
        secret = cbor.expect_bytes(fields[4], "secret")
        if len(secret) < INVITE_SECRET_BYTES:
            raise cbor.CanonicalError("secret too short")
        expires_ms = cbor.expect_uint(fields[5], "expiry", MAX_CLOCK)
    except (ValueError, cbor.CanonicalError) as exc:
        raise InviteError(f"invite code is damaged or incomplete ({exc})") from exc
    return Invite(mesh_id, runtime_key, addrs, secret, expires_ms)
