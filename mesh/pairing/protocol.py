"""The join protocol, sans-IO: the runtime's desk of invites, and the messages.

The only protocol a non-member may open. One request, one reply::

    request = [1, invite_id, proof, name]       proof = join_proof(secret, ...)
    reply   = [0, [log_entry, ...]]             joined: the whole membership log
            | [1, sas]                          pending: waits for an admin's approval
            | [2, code, message]                refused

The device's key is the one its connection authenticated (Noise), never a field.
Every state change is staged in the runtime's store; the caller commits before
it sends the reply, so a crash at any step leaves either a clean failure or a
joined device, and a repeated request from the same key gets the same answer.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field, replace
from typing import Any

from crdt_state.storage.base import Store
from mesh import cbor
from mesh.engine import Engine
from mesh.limits import (
    DEFAULT_CERT_TTL_MS,
    INVITE_SECRET_BYTES,
    MAX_INVITE_FAILURES,
    MAX_JOIN_MESSAGE_BYTES,
    MAX_NAME_BYTES,
    MAX_OPEN_INVITES,
)
from mesh.membership.records import RUNTIME, issue_certificate
from mesh.pairing.invite import (
    Invite,
    InviteError,
    invite_id,
    join_proof,
    short_authentication_string,
)

JOINED = 0
PENDING = 1
REFUSED = 2
_META_PREFIX = "invite/"

OPEN = "open"
CLAIMED = "claimed"
APPROVED = "approved"
USED = "used"
BURNED = "burned"


@dataclass(frozen=True)
class InviteRecord:
    """The runtime's persistent state of one invite."""

    secret: bytes
    caps: frozenset[str]
    name: str
    created_ms: int
    expires_ms: int
    require_approval: bool
    state: str = OPEN
    device: bytes | None = None
    failures: int = 0

    def encode(self) -> bytes:
        return cbor.encode(
            [
                self.secret,
                sorted(self.caps),
                self.name,
                self.created_ms,
                self.expires_ms,
                self.require_approval,
                self.state,
                self.device or b"",
                self.failures,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> InviteRecord:
        f = cbor.decode(data)
        return cls(f[0], frozenset(f[1]), f[2], f[3], f[4], bool(f[5]), f[6], f[7] or None, f[8])


@dataclass(frozen=True)
class JoinRequest:
    invite_id: bytes
    proof: bytes
    name: str

    def encode(self) -> bytes:
        return cbor.encode([1, self.invite_id, self.proof, self.name])

    @classmethod
    def decode(cls, data: bytes) -> JoinRequest:
        if len(data) > MAX_JOIN_MESSAGE_BYTES:
            raise InviteError("join request too large")
        try:
            f = cbor.expect_list(cbor.decode(data), 4, "join request")
            if type(f[0]) is not int or f[0] != 1:
                raise cbor.CanonicalError("unknown join version")
            return cls(
                cbor.expect_bytes(f[1], "invite id", 16),
                cbor.expect_bytes(f[2], "proof", 32),
                cbor.expect_text(f[3], "name", MAX_NAME_BYTES),
            )
        except cbor.CanonicalError as exc:
            raise InviteError(f"malformed join request: {exc}") from exc


@dataclass(frozen=True)
class JoinReply:
    status: int
    entries: tuple[bytes, ...] = ()
    sas: str = ""
    code: str = ""
    message: str = ""

    def encode(self) -> bytes:
        if self.status == JOINED:
            return cbor.encode([JOINED, list(self.entries)])
        if self.status == PENDING:
            return cbor.encode([PENDING, self.sas])
        return cbor.encode([REFUSED, self.code, self.message])

    @classmethod
    def decode(cls, data: bytes) -> JoinReply:
        if len(data) > MAX_JOIN_MESSAGE_BYTES:
            raise InviteError("join reply too large")
        try:
            f = cbor.decode(data)
            if not isinstance(f, list) or not f or type(f[0]) is not int:
                raise cbor.CanonicalError("join reply")
            if f[0] == JOINED:
                cbor.expect_list(f, 2, "joined")
                if not isinstance(f[1], list):
                    raise cbor.CanonicalError("entries")
                return cls(JOINED, tuple(cbor.expect_bytes(e, "entry") for e in f[1]))
            if f[0] == PENDING:
                cbor.expect_list(f, 2, "pending")
                return cls(PENDING, sas=cbor.expect_text(f[1], "sas", 16))
            if f[0] == REFUSED:
                cbor.expect_list(f, 3, "refused")
                return cls(
                    REFUSED,
                    code=cbor.expect_text(f[1], "code", 64),
                    message=cbor.expect_text(f[2], "message", 1024),
                )
            raise cbor.CanonicalError("unknown join status")
        except cbor.CanonicalError as exc:
            raise InviteError(f"malformed join reply: {exc}") from exc


def _refused(code: str, message: str) -> JoinReply:
    return JoinReply(REFUSED, code=code, message=message)


# One answer for "no such invite" and "wrong secret": it reveals nothing about the secret.
_INVALID = ("invalid-invite", "unknown or invalid invite")


@dataclass
class JoinDesk:
    """The runtime's invites and its answers to join requests."""

    engine: Engine
    store: Store
    addresses: list[str] = field(default_factory=list)

    def _load(self, ident: bytes) -> InviteRecord | None:
        raw = self.store.get_meta(_META_PREFIX + ident.hex())
        return None if raw is None else InviteRecord.decode(raw)

    def _save(self, ident: bytes, record: InviteRecord) -> None:
        self.store.set_meta(_META_PREFIX + ident.hex(), record.encode())

    def open_invites(self, now_ms: int) -> list[tuple[bytes, InviteRecord]]:
        return [
            (ident, rec)
            for ident, rec in self.invites()
            if rec.state in (OPEN, CLAIMED, APPROVED) and now_ms < rec.expires_ms
        ]

    def invites(self) -> list[tuple[bytes, InviteRecord]]:
        result = []
        for key, value in self.store.meta_items(_META_PREFIX):
            result.append((bytes.fromhex(key[len(_META_PREFIX) :]), InviteRecord.decode(value)))
        return result

    def create(
        self,
        *,
        caps: frozenset[str],
        name: str,
        ttl_ms: int,
        require_approval: bool,
        now_ms: int,
    ) -> Invite:
        """A new single-use invite (staged; commit before showing it)."""
        replica = self.engine.replica
        own_caps = replica.membership.caps(self.engine.identity.public_key)
        if not caps <= own_caps or RUNTIME in caps:
            raise InviteError("an invite cannot grant more than its issuer holds")
        if len(self.open_invites(now_ms)) >= MAX_OPEN_INVITES:
            raise InviteError(f"too many open invites (at most {MAX_OPEN_INVITES})")
        secret = os.urandom(INVITE_SECRET_BYTES)
        record = InviteRecord(secret, caps, name, now_ms, now_ms + ttl_ms, require_approval)
        self._save(invite_id(secret), record)
        return Invite(
            replica.mesh_id,
            self.engine.identity.public_key,
            tuple(self.addresses),
            secret,
            now_ms + ttl_ms,
        )

    def handle(self, data: bytes, device: bytes, now_ms: int) -> JoinReply:
        """Answer one join request from ``device`` (its authenticated key)."""
        try:
            request = JoinRequest.decode(data)
        except InviteError as exc:
            return _refused("malformed", str(exc))
        record = self._load(request.invite_id)
        if record is None:
            return _refused(*_INVALID)
        replica = self.engine.replica
        expected = join_proof(
            record.secret, replica.mesh_id, self.engine.identity.public_key, device
        )
        if not hmac.compare_digest(expected, request.proof):
            failures = record.failures + 1
            state = (
                BURNED if failures >= MAX_INVITE_FAILURES and record.state != USED else record.state
            )
            self._save(request.invite_id, replace(record, failures=failures, state=state))
            return _refused(*_INVALID)
        if record.state == USED:
            if record.device == device:  # the same device asking again: same answer
                return self._joined()
            return _refused("invite-used", "this invite has already been used")
        if record.state == BURNED:
            return _refused("invite-burned", "this invite was disabled after failed attempts")
        if now_ms >= record.expires_ms:
            return _refused("invite-expired", "this invite has expired; ask for a new one")
        member = replica.membership.member(device)
        if member is not None and member.revoked_at is not None:
            return _refused("key-revoked", "this key was revoked; pair again with a new key")
        if member is not None:
            return _refused("already-member", "this key is already a member")
        if record.device is not None and record.device != device:
            return _refused("invite-claimed", "another device is already joining with this invite")
        sas = short_authentication_string(record.secret, self.engine.identity.public_key, device)
        if record.require_approval and record.state != APPROVED:
            if record.state == OPEN:
                self._save(request.invite_id, replace(record, state=CLAIMED, device=device))
            return JoinReply(PENDING, sas=sas)
        name = request.name or record.name
        cert = issue_certificate(
            self.engine.identity,
            replica.mesh_id,
            device,
            record.caps,
            now_ms,
            now_ms + DEFAULT_CERT_TTL_MS,
            name,
        )
        self.engine.admit(cert, now_ms)
        self._save(request.invite_id, replace(record, state=USED, device=device))
        return self._joined()

    def approve(self, device: bytes) -> bytes:
        """An admin approves the device waiting on an invite; returns the invite id."""
        for ident, record in self.invites():
            if record.state == CLAIMED and record.device == device:
                self._save(ident, replace(record, state=APPROVED))
                return ident
        raise InviteError("no join from that device is waiting for approval")

    def waiting(self) -> list[dict[str, Any]]:
        """Joins waiting for approval, with their short authentication strings."""
        me = self.engine.identity.public_key
        return [
            {
                "invite": ident.hex(),
                "device": rec.device.hex(),
                "name": rec.name,
                "sas": short_authentication_string(rec.secret, me, rec.device),
            }
            for ident, rec in self.invites()
            if rec.state == CLAIMED and rec.device is not None
        ]

    def _joined(self) -> JoinReply:
        entries = tuple(e.raw for e in self.engine.replica.membership.entries)
        return JoinReply(JOINED, entries)
