"""Signed membership records: certificates and revocations.

Wire form of a record: canonical CBOR ``[body, signature]`` where ``body`` is
the canonical CBOR of the record's fields and the signature is Ed25519 over
``RECORD_DOMAIN + body`` by the issuer. See docs/PROTOCOL.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mesh import cbor
from mesh.errors import MalformedRecord
from mesh.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, mesh_id_of, verify
from mesh.limits import MAX_NAME_BYTES, MAX_RECORD_BYTES

RECORD_DOMAIN = b"agentmesh/record/v1\x00"
RECORD_VERSION = 1

READ = "read"
WRITE = "write"
APPROVE = "approve"
ADMIN = "admin"
RUNTIME = "runtime"
CAPABILITIES = frozenset({READ, WRITE, APPROVE, ADMIN, RUNTIME})

KIND_CERTIFICATE = 0
KIND_REVOCATION = 1


def parse_caps(text: str) -> frozenset[str]:
    """Parse ``"read,write"`` into a capability set, refusing unknown names."""
    caps = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = caps - CAPABILITIES
    if unknown:
        raise ValueError(f"unknown capabilities: {', '.join(sorted(unknown))}")
    return caps


@dataclass(frozen=True)
class Certificate:
    """The issuer grants ``caps`` to ``subject`` in ``mesh_id`` until ``expires_ms``."""

    mesh_id: bytes
    issuer: bytes
    subject: bytes
    issued_ms: int
    caps: frozenset[str]
    expires_ms: int
    name: str
    raw: bytes

    @property
    def record_hash(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    def issued_by_root(self) -> bool:
        return mesh_id_of(self.issuer) == self.mesh_id


@dataclass(frozen=True)
class Revocation:
    """The issuer revokes ``subject``; sequencing and cutoffs come from the runtime's log."""

    mesh_id: bytes
    issuer: bytes
    subject: bytes
    issued_ms: int
    raw: bytes

    @property
    def record_hash(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    def issued_by_root(self) -> bool:
        return mesh_id_of(self.issuer) == self.mesh_id


Record = Certificate | Revocation


def _sign(issuer: Identity, body: list[Any]) -> bytes:
    body_bytes = cbor.encode(body)
    return cbor.encode([body_bytes, issuer.sign(RECORD_DOMAIN + body_bytes)])


def issue_certificate(
    issuer: Identity,
    mesh_id: bytes,
    subject: bytes,
    caps: frozenset[str],
    issued_ms: int,
    expires_ms: int,
    name: str = "",
) -> Certificate:
    """Sign a certificate. Authority is checked where it is admitted, not here."""
    body = [
        RECORD_VERSION,
        KIND_CERTIFICATE,
        mesh_id,
        issuer.public_key,
        subject,
        issued_ms,
        sorted(caps),
        expires_ms,
        name,
    ]
    record = decode_record(_sign(issuer, body))
    assert isinstance(record, Certificate)
    return record


def issue_revocation(
    issuer: Identity, mesh_id: bytes, subject: bytes, issued_ms: int
) -> Revocation:
    """Sign a revocation of ``subject``."""
    body = [RECORD_VERSION, KIND_REVOCATION, mesh_id, issuer.public_key, subject, issued_ms]
    record = decode_record(_sign(issuer, body))
    assert isinstance(record, Revocation)
    return record


def decode_record(raw: bytes) -> Record:
    """Decode and signature-check a record. Raises MalformedRecord or BadSignature."""
    if len(raw) > MAX_RECORD_BYTES:
        raise MalformedRecord("record too large")
    try:
        outer = cbor.expect_list(cbor.decode(raw), 2, "record")
        body_bytes = cbor.expect_bytes(outer[0], "record body")
        signature = cbor.expect_bytes(outer[1], "record signature", SIGNATURE_BYTES)
        body = cbor.decode(body_bytes)
        if not isinstance(body, list) or len(body) < 6:
            raise cbor.CanonicalError("record body: expected an array")
        if cbor.expect_uint(body[0], "record version") != RECORD_VERSION:
            raise cbor.CanonicalError(f"record version {body[0]!r} unsupported")
        kind = cbor.expect_uint(body[1], "record kind")  # not bool: False == 0 in Python
        mesh_id = cbor.expect_bytes(body[2], "mesh id", 32)
        issuer = cbor.expect_bytes(body[3], "issuer", PUBLIC_KEY_BYTES)
        subject = cbor.expect_bytes(body[4], "subject", PUBLIC_KEY_BYTES)
        issued_ms = cbor.expect_uint(body[5], "issued")
        if kind == KIND_CERTIFICATE:
            cbor.expect_list(body, 9, "certificate")
            caps_list = body[6]
            if not isinstance(caps_list, list) or not all(isinstance(c, str) for c in caps_list):
                raise cbor.CanonicalError("caps: expected an array of text")
            if caps_list != sorted(set(caps_list)):
                raise cbor.CanonicalError("caps: must be sorted and unique")
            caps = frozenset(caps_list)
            if not caps <= CAPABILITIES:
                raise cbor.CanonicalError(f"unknown capabilities {sorted(caps - CAPABILITIES)}")
            expires_ms = cbor.expect_uint(body[7], "expires")
            name = cbor.expect_text(body[8], "name", MAX_NAME_BYTES)
        elif kind == KIND_REVOCATION:
            cbor.expect_list(body, 6, "revocation")
        else:
            raise cbor.CanonicalError(f"unknown record kind {kind!r}")
    except cbor.CanonicalError as exc:
        raise MalformedRecord(str(exc)) from exc
    verify(issuer, RECORD_DOMAIN + body_bytes, signature)
    if kind == KIND_CERTIFICATE:
        return Certificate(mesh_id, issuer, subject, issued_ms, caps, expires_ms, name, raw)
    return Revocation(mesh_id, issuer, subject, issued_ms, raw)
