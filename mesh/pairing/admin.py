"""The admin protocol, sans-IO: what an admin device asks of the runtime.

Membership changes take effect only as entries of the runtime's log, and only the
runtime knows an invite's secret; so an admin *device* asks the runtime, over its
own authenticated connection, to open an invite, to sequence a record the device
signed itself (a certificate or a revocation), or to approve a waiting join. One
request, one reply, on ``/agentmesh/admin/1``::

    request = [1, 0, caps, ttl_ms, name, require_approval]   open an invite
            | [1, 1, record]                                  sequence a record
            | [1, 2, device_key]                              approve a waiting join
            | [1, 3]                                          list waiting joins
    reply   = [0, result]            done; result per request:
                                       invite:  [code, expires_ms]
                                       record:  log index
                                       approve: invite id
                                       waiting: [[device_key, name, sas], ...]
            | [2, code, message]     refused

The requester's key is the one its connection authenticated, never a field. Only a
current member holding ``admin`` is answered; everything else is refused before the
request is decoded. A record must be signed by the requester itself: the runtime's
log then checks the signer's authority as for any record (an admin cannot grant
more than it holds, nor revoke an admin). The caller commits the runtime's store
before it sends the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mesh import cbor
from mesh.engine import Engine
from mesh.errors import MembershipError
from mesh.identity import PUBLIC_KEY_BYTES
from mesh.limits import MAX_ADMIN_MESSAGE_BYTES, MAX_CLOCK, MAX_NAME_BYTES, MAX_RECORD_BYTES
from mesh.membership.records import ADMIN, CAPABILITIES, Certificate, Revocation, decode_record
from mesh.pairing.invite import InviteError
from mesh.pairing.protocol import JoinDesk

VERSION = 1
OP_INVITE = 0
OP_RECORD = 1
OP_APPROVE = 2
OP_WAITING = 3

DONE = 0
REFUSED = 2


class AdminError(InviteError):
    """An admin request or reply is malformed, or the runtime refused it."""


@dataclass(frozen=True)
class OpenInvite:
    caps: frozenset[str]
    ttl_ms: int
    name: str
    require_approval: bool


@dataclass(frozen=True)
class SequenceRecord:
    record: bytes


@dataclass(frozen=True)
class ApproveJoin:
    device: bytes


@dataclass(frozen=True)
class ListWaiting:
    pass


AdminRequest = OpenInvite | SequenceRecord | ApproveJoin | ListWaiting


def encode_request(request: AdminRequest) -> bytes:
    if isinstance(request, OpenInvite):
        return cbor.encode(
            [
                VERSION,
                OP_INVITE,
                sorted(request.caps),
                request.ttl_ms,
                request.name,
                request.require_approval,
            ]
        )
    if isinstance(request, SequenceRecord):
        return cbor.encode([VERSION, OP_RECORD, request.record])
    if isinstance(request, ApproveJoin):
        return cbor.encode([VERSION, OP_APPROVE, request.device])
    return cbor.encode([VERSION, OP_WAITING])


def decode_request(data: bytes) -> AdminRequest:
    """Decode one request; AdminError if it is not one."""
    if len(data) > MAX_ADMIN_MESSAGE_BYTES:
        raise AdminError("admin request too large")
    try:
        fields = cbor.decode(data)
        if not isinstance(fields, list) or len(fields) < 2:
            raise cbor.CanonicalError("expected an array")
        if type(fields[0]) is not int or fields[0] != VERSION:
            raise cbor.CanonicalError("unknown admin protocol version")
        op = cbor.expect_uint(fields[1], "op")
        if op == OP_INVITE:
            cbor.expect_list(fields, 6, "invite request")
            caps = fields[2]
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise cbor.CanonicalError("caps: expected an array of text")
            if caps != sorted(set(caps)) or not set(caps) <= CAPABILITIES:
                raise cbor.CanonicalError("caps: unknown, unsorted or repeated")
            ttl_ms = cbor.expect_uint(fields[3], "ttl", MAX_CLOCK)
            if not ttl_ms:
                raise cbor.CanonicalError("ttl must be positive")
            if not isinstance(fields[5], bool):
                raise cbor.CanonicalError("require_approval: expected a boolean")
            name = cbor.expect_text(fields[4], "name", MAX_NAME_BYTES)
            return OpenInvite(frozenset(caps), ttl_ms, name, fields[5])
        if op == OP_RECORD:
            cbor.expect_list(fields, 3, "record request")
            record = cbor.expect_bytes(fields[2], "record")
            if len(record) > MAX_RECORD_BYTES:
                raise cbor.CanonicalError("record too large")
            return SequenceRecord(record)
        if op == OP_APPROVE:
            cbor.expect_list(fields, 3, "approve request")
            return ApproveJoin(cbor.expect_bytes(fields[2], "device", PUBLIC_KEY_BYTES))
        if op == OP_WAITING:
            cbor.expect_list(fields, 2, "waiting request")
            return ListWaiting()
        raise cbor.CanonicalError(f"unknown op {op}")
    except cbor.CanonicalError as exc:
        raise AdminError(f"malformed admin request: {exc}") from exc


@dataclass(frozen=True)
class AdminReply:
    """``result`` when done (its shape depends on the request), else ``code`` and ``message``."""

    done: bool
    result: Any = None
    code: str = ""
    message: str = ""

    def encode(self) -> bytes:
        if self.done:
            return cbor.encode([DONE, self.result])
        return cbor.encode([REFUSED, self.code, self.message])

    @classmethod
    def decode(cls, data: bytes) -> AdminReply:
        if len(data) > MAX_ADMIN_MESSAGE_BYTES:
            raise AdminError("admin reply too large")
        try:
            fields = cbor.decode(data)
            if not isinstance(fields, list) or not fields or type(fields[0]) is not int:
                raise cbor.CanonicalError("expected an array")
            if fields[0] == DONE:
                cbor.expect_list(fields, 2, "done")
                return cls(True, fields[1])
            if fields[0] == REFUSED:
                cbor.expect_list(fields, 3, "refused")
                return cls(
                    False,
                    code=cbor.expect_text(fields[1], "code", 64),
                    message=cbor.expect_text(fields[2], "message", 1024),
                )
            raise cbor.CanonicalError("unknown reply status")
        except cbor.CanonicalError as exc:
            raise AdminError(f"malformed admin reply: {exc}") from exc


def _refused(code: str, message: str) -> AdminReply:
    return AdminReply(False, code=code, message=message)


@dataclass
class AdminDesk:
    """The runtime's answers to admin requests (state staged in the runtime's store)."""

    engine: Engine
    desk: JoinDesk

    def authorized(self, requester: bytes, now_ms: int) -> bool:
        """Whether ``requester`` may use the admin protocol at all."""
        membership = self.engine.replica.membership
        return self.engine.admissible(requester, now_ms) and ADMIN in membership.caps(requester)

    def handle(self, data: bytes, requester: bytes, now_ms: int) -> AdminReply:
        """Answer one request from ``requester`` (its authenticated key)."""
        if not self.authorized(requester, now_ms):
            return _refused("not-admin", "only a current member holding admin may do this")
        try:
            request = decode_request(data)
        except AdminError as exc:
            return _refused("malformed", str(exc))
        try:
            return self._dispatch(request, requester, now_ms)
        except (MembershipError, ValueError) as exc:
            return _refused(type(exc).__name__, str(exc))

    def _dispatch(self, request: AdminRequest, requester: bytes, now_ms: int) -> AdminReply:
        if isinstance(request, OpenInvite):
            held = self.engine.replica.membership.caps(requester)
            if not request.caps <= held:
                return _refused(
                    "CapabilityEscalation", "an invite cannot grant more than its issuer holds"
                )
            invite = self.desk.create(
                caps=request.caps,
                name=request.name,
                ttl_ms=request.ttl_ms,
                require_approval=request.require_approval,
                now_ms=now_ms,
            )
            return AdminReply(True, [invite.code(), invite.expires_ms])
        if isinstance(request, SequenceRecord):
            record = decode_record(request.record)
            if record.issuer != requester:
                return _refused("not-issuer", "a device may only submit records it signed")
            if isinstance(record, Certificate):
                entry = self.engine.admit(record, now_ms)
            else:
                assert isinstance(record, Revocation)
                entry = self.engine.revoke(record, now_ms)
            return AdminReply(True, entry.index)
        if isinstance(request, ApproveJoin):
            return AdminReply(True, self.desk.approve(request.device))
        waiting = [[bytes.fromhex(w["device"]), w["name"], w["sas"]] for w in self.desk.waiting()]
        return AdminReply(True, waiting)
