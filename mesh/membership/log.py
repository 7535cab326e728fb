"""The runtime's membership log: records sequenced and countersigned by the runtime.

Every certificate, revocation and fork quarantine takes effect only as an
entry of this log. The runtime signs each entry with its index, the hash of the
previous entry and the time at which it judged the record (the only clock that
membership ever depends on). Revocations and quarantines carry the runtime's
cutoffs: per (document, incarnation) of the subject, the last envelope it had
accepted. Wire form: canonical CBOR ``[body, signature]``, signature over
``LOG_DOMAIN + body`` by ``signer``.

    body = [version, mesh_id, index, prev, committed_ms, signer, action, ...]
    action 0 (admit):      [record]
    action 1 (revoke):     [record, cutoffs]
    action 2 (quarantine): [author, incarnation, envelope_a, envelope_b, cutoffs]
    cutoffs = [[doc, incarnation, seq, hash], ...]  sorted, unique (doc, incarnation)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mesh import cbor
from mesh.errors import MalformedRecord
from mesh.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, mesh_id_of, verify
from mesh.limits import MAX_CLOCK, MAX_CUTOFFS, MAX_DOC_NAME_BYTES, MAX_RECORD_BYTES
from mesh.membership.records import ADMIN, APPROVE, READ, RUNTIME, WRITE, issue_certificate

LOG_DOMAIN = b"agentmesh/log/v1\x00"
LOG_VERSION = 1
ACTION_ADMIT = 0
ACTION_REVOKE = 1
ACTION_QUARANTINE = 2
GENESIS_PREV = bytes(32)
_MAX_ENTRY_BYTES = MAX_RECORD_BYTES * 2 + 2 * (320 * 1024)


@dataclass(frozen=True, slots=True)
class Cutoff:
    """The last accepted envelope of one (document, incarnation) chain; later ones are refused."""

    doc: str
    incarnation: bytes
    seq: int
    hash: bytes


@dataclass(frozen=True)
class LogEntry:
    """One decoded, signature-checked membership-log entry."""

    mesh_id: bytes
    index: int
    prev: bytes
    committed_ms: int
    signer: bytes
    action: int
    record: bytes
    cutoffs: tuple[Cutoff, ...]
    quarantine: tuple[bytes, bytes, bytes, bytes] | None
    raw: bytes
    hash: bytes


def _encode_cutoffs(cutoffs: tuple[Cutoff, ...]) -> list[list[Any]]:
    ordered = sorted(cutoffs, key=lambda c: (c.doc, c.incarnation))
    return [[c.doc, c.incarnation, c.seq, c.hash] for c in ordered]


def _decode_cutoffs(value: Any) -> tuple[Cutoff, ...]:
    if not isinstance(value, list) or len(value) > MAX_CUTOFFS:
        raise cbor.CanonicalError("cutoffs: expected an array")
    result: list[Cutoff] = []
    for item in value:
        fields = cbor.expect_list(item, 4, "cutoff")
        result.append(
            Cutoff(
                cbor.expect_text(fields[0], "cutoff doc", MAX_DOC_NAME_BYTES),
                cbor.expect_bytes(fields[1], "cutoff incarnation", 16),
                cbor.expect_uint(fields[2], "cutoff seq", MAX_CLOCK),
                cbor.expect_bytes(fields[3], "cutoff hash", 32),
            )
        )
    keys = [(c.doc, c.incarnation) for c in result]
    if keys != sorted(set(keys)):
        raise cbor.CanonicalError("cutoffs: must be sorted by (doc, incarnation) and unique")
    return tuple(result)


def sign_entry(
    signer: Identity,
    *,
    mesh_id: bytes,
    index: int,
    prev: bytes,
    committed_ms: int,
    action: int,
    record: bytes = b"",
    cutoffs: tuple[Cutoff, ...] = (),
    quarantine: tuple[bytes, bytes, bytes, bytes] | None = None,
) -> LogEntry:
    """Sign a log entry. Whether it is admissible is decided by ``Membership``."""
    head: list[Any] = [LOG_VERSION, mesh_id, index, prev, committed_ms, signer.public_key, action]
    if action == ACTION_ADMIT:
        body = [*head, record]
    elif action == ACTION_REVOKE:
        body = [*head, record, _encode_cutoffs(cutoffs)]
    elif action == ACTION_QUARANTINE:
        assert quarantine is not None
        body = [*head, *quarantine, _encode_cutoffs(cutoffs)]
    else:
        raise ValueError(f"unknown action {action}")
    body_bytes = cbor.encode(body)
    raw = cbor.encode([body_bytes, signer.sign(LOG_DOMAIN + body_bytes)])
    return decode_entry(raw)


def decode_entry(raw: bytes) -> LogEntry:
    """Decode and signature-check a log entry (MalformedRecord or BadSignature)."""
    if len(raw) > _MAX_ENTRY_BYTES:
        raise MalformedRecord("log entry too large")
    try:
        outer = cbor.expect_list(cbor.decode(raw), 2, "log entry")
        body_bytes = cbor.expect_bytes(outer[0], "log entry body")
        signature = cbor.expect_bytes(outer[1], "log entry signature", SIGNATURE_BYTES)
        body = cbor.decode(body_bytes)
        if (
            not isinstance(body, list)
            or len(body) < 8
            or cbor.expect_uint(body[0], "log version") != LOG_VERSION
        ):
            raise cbor.CanonicalError("log entry body: expected a version-1 array")
        mesh_id = cbor.expect_bytes(body[1], "mesh id", 32)
        index = cbor.expect_uint(body[2], "index", MAX_CLOCK)
        prev = cbor.expect_bytes(body[3], "prev", 32)
        committed_ms = cbor.expect_uint(body[4], "committed")
        signer = cbor.expect_bytes(body[5], "signer", PUBLIC_KEY_BYTES)
        action = cbor.expect_uint(body[6], "action")  # not bool: False == 0 in Python
        record = b""
        cutoffs: tuple[Cutoff, ...] = ()
        quarantine: tuple[bytes, bytes, bytes, bytes] | None = None
        if action == ACTION_ADMIT:
            cbor.expect_list(body, 8, "admit entry")
            record = cbor.expect_bytes(body[7], "record")
        elif action == ACTION_REVOKE:
            cbor.expect_list(body, 9, "revoke entry")
            record = cbor.expect_bytes(body[7], "record")
            cutoffs = _decode_cutoffs(body[8])
        elif action == ACTION_QUARANTINE:
            cbor.expect_list(body, 12, "quarantine entry")
            quarantine = (
                cbor.expect_bytes(body[7], "author", PUBLIC_KEY_BYTES),
                cbor.expect_bytes(body[8], "incarnation", 16),
                cbor.expect_bytes(body[9], "envelope a"),
                cbor.expect_bytes(body[10], "envelope b"),
            )
            cutoffs = _decode_cutoffs(body[11])
        else:
            raise cbor.CanonicalError(f"unknown log action {action!r}")
    except cbor.CanonicalError as exc:
        raise MalformedRecord(str(exc)) from exc
    verify(signer, LOG_DOMAIN + body_bytes, signature)
    return LogEntry(
        mesh_id,
        index,
        prev,
        committed_ms,
        signer,
        action,
        record,
        cutoffs,
        quarantine,
        raw,
        hashlib.sha256(body_bytes).digest(),
    )


def genesis(root: Identity, runtime: Identity, *, now_ms: int, expires_ms: int) -> LogEntry:
    """Entry 0 of a new mesh: the root certifies the runtime, which signs the entry."""
    mesh_id = mesh_id_of(root.public_key)
    cert = issue_certificate(
        root,
        mesh_id,
        runtime.public_key,
        frozenset({READ, WRITE, APPROVE, ADMIN, RUNTIME}),
        now_ms,
        expires_ms,
        "runtime",
    )
    return sign_entry(
        runtime,
        mesh_id=mesh_id,
        index=0,
        prev=GENESIS_PREV,
        committed_ms=now_ms,
        action=ACTION_ADMIT,
        record=cert.raw,
    )
