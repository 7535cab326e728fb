"""Current membership as a pure function of the runtime's membership log.

``Membership`` folds log entries in index order. Entries may arrive in any
order: ``add`` raises ``LogGap`` for an entry whose predecessor is missing (the
caller holds it), and the result depends only on the set of entries, never on
arrival order or on the local clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crdt_state.envelope import decode_proof, is_fork
from crdt_state.errors import StateError
from mesh.errors import (
    BadSignature,
    CapabilityEscalation,
    Expired,
    LogFork,
    LogGap,
    MalformedRecord,
    MembershipError,
    NotAuthorized,
    WrongMesh,
)
from mesh.membership.log import (
    ACTION_ADMIT,
    ACTION_QUARANTINE,
    ACTION_REVOKE,
    GENESIS_PREV,
    Cutoff,
    LogEntry,
)
from mesh.membership.records import (
    ADMIN,
    RUNTIME,
    Certificate,
    Revocation,
    decode_record,
)

Chain = tuple[bytes, bytes]  # (author key, incarnation)


@dataclass
class Member:
    """Everything the log says about one key."""

    key: bytes
    certs: list[tuple[int, Certificate]] = field(default_factory=list)
    revoked_at: int | None = None
    revoked_by: bytes | None = None

    @property
    def cert(self) -> Certificate:
        return self.certs[-1][1]

    @property
    def caps(self) -> frozenset[str]:
        return frozenset() if self.revoked_at is not None else self.cert.caps


def verify_chain(mesh_id: bytes, chain: list[Certificate], at_ms: int) -> Certificate:
    """Verify certificates root -> ... -> leaf offline, from the mesh id alone.

    ``chain[0]`` must be issued by the mesh root; each next certificate by the
    previous subject, which must hold ``admin`` and every capability it grants.
    Returns the leaf. Revocations are not consulted: that needs the log.
    """
    if not chain:
        raise NotAuthorized("empty certificate chain")
    issuer_caps: frozenset[str] | None = None
    issuer_key: bytes | None = None
    for cert in chain:
        if cert.mesh_id != mesh_id:
            raise WrongMesh("certificate belongs to another mesh")
        _check_signature(cert)
        if not cert.issued_ms <= at_ms < cert.expires_ms:
            raise Expired(f"certificate for {cert.name or cert.subject.hex()[:16]} not valid now")
        if issuer_key is None:
            if not cert.issued_by_root():
                raise NotAuthorized("chain does not start at the mesh root")
        else:
            if cert.issuer != issuer_key:
                raise NotAuthorized("chain is broken: issuer is not the previous subject")
            assert issuer_caps is not None
            if ADMIN not in issuer_caps:
                raise NotAuthorized("issuer lacks admin")
            if not cert.caps <= issuer_caps or RUNTIME in cert.caps:
                raise CapabilityEscalation("certificate grants more than its issuer holds")
        issuer_key, issuer_caps = cert.subject, cert.caps
    return chain[-1]


def _check_signature(cert: Certificate) -> None:
    decoded = decode_record(cert.raw)  # raises BadSignature / MalformedRecord
    if decoded != cert:
        raise BadSignature("certificate fields do not match its signed form")


class Membership:
    """The membership of one mesh, folded from its log."""

    def __init__(self, mesh_id: bytes) -> None:
        self.mesh_id = mesh_id
        self.entries: list[LogEntry] = []
        self.members: dict[bytes, Member] = {}
        self.runtime_key: bytes | None = None
        self._limits: dict[Chain, dict[str, Cutoff]] = {}
        self.quarantined: set[Chain] = set()

    # --- reading -------------------------------------------------------------

    @property
    def length(self) -> int:
        return len(self.entries)

    @property
    def head(self) -> bytes:
        return self.entries[-1].hash if self.entries else GENESIS_PREV

    def member(self, key: bytes) -> Member | None:
        return self.members.get(key)

    def is_member(self, key: bytes, now_ms: int | None = None) -> bool:
        """A key with a certificate, not revoked (and unexpired at ``now_ms`` if given)."""
        member = self.members.get(key)
        if member is None or member.revoked_at is not None:
            return False
        return now_ms is None or now_ms < member.cert.expires_ms

    def caps(self, key: bytes) -> frozenset[str]:
        member = self.members.get(key)
        return frozenset() if member is None else member.caps

    def caps_at(self, key: bytes, position: int) -> frozenset[str]:
        """Capabilities of ``key`` from certificates among the first ``position`` entries."""
        member = self.members.get(key)
        if member is None:
            return frozenset()
        caps: frozenset[str] = frozenset()
        for index, cert in member.certs:
            if index < position:
                caps = cert.caps
        return caps

    def chain_limit(self, author: bytes, incarnation: bytes, doc: str) -> int | None:
        """Highest seq still acceptable on this chain, or None when not cut off."""
        key = (author, incarnation)
        limits = self._limits.get(key)
        if limits is not None:
            cutoff = limits.get(doc)
            return 0 if cutoff is None else cutoff.seq
        member = self.members.get(author)
        if member is not None and member.revoked_at is not None:
            return 0  # an incarnation the runtime never saw before the revocation
        return None

    def cutoff(self, author: bytes, incarnation: bytes, doc: str) -> Cutoff | None:
        return self._limits.get((author, incarnation), {}).get(doc)

    # --- folding -------------------------------------------------------------------

    def add(self, entry: LogEntry) -> bool:
        """Fold one entry. Returns False for a duplicate; raises for a gap, fork or bad entry."""
        if entry.mesh_id != self.mesh_id:
            raise WrongMesh("log entry belongs to another mesh")
        if entry.index < self.length:
            if self.entries[entry.index].hash == entry.hash:
                return False
            raise LogFork(f"two different membership-log entries at index {entry.index}")
        if entry.index > self.length:
            raise LogGap(f"log entry {entry.index} arrived before entry {self.length}")
        if entry.prev != self.head:
            raise LogFork(f"log entry {entry.index} does not follow the current head")
        self._admit(entry)
        self.entries.append(entry)
        return True

    def _admit(self, entry: LogEntry) -> None:
        if entry.index == 0:
            self._admit_genesis(entry)
            return
        signer = self.members.get(entry.signer)
        if signer is None or entry.signer != self.runtime_key or RUNTIME not in signer.caps:
            raise NotAuthorized("log entry not signed by the current runtime")
        if entry.committed_ms < self.entries[-1].committed_ms:
            raise MalformedRecord("log entry time goes backwards")
        if entry.action == ACTION_ADMIT:
            cert = decode_record(entry.record)
            if not isinstance(cert, Certificate):
                raise MalformedRecord("admit entry does not hold a certificate")
            self._check_certificate(cert, entry.committed_ms)
            self._member(cert.subject).certs.append((entry.index, cert))
            if RUNTIME in cert.caps:
                self.runtime_key = cert.subject
        elif entry.action == ACTION_REVOKE:
            revocation = decode_record(entry.record)
            if not isinstance(revocation, Revocation):
                raise MalformedRecord("revoke entry does not hold a revocation")
            self._check_revocation(revocation, entry.committed_ms)
            self._set_limits(revocation.subject, entry.cutoffs)
            member = self.members[revocation.subject]
            member.revoked_at = entry.index
            member.revoked_by = revocation.issuer
        elif entry.action == ACTION_QUARANTINE:
            assert entry.quarantine is not None
            author, incarnation, raw_a, raw_b = entry.quarantine
            self._check_fork_proof(author, incarnation, raw_a, raw_b)
            if any(c.incarnation != incarnation for c in entry.cutoffs):
                raise MalformedRecord("quarantine cutoffs name another incarnation")
            key = (author, incarnation)
            self._tighten(key, {c.doc: c for c in entry.cutoffs})
            self.quarantined.add(key)
        else:
            raise MalformedRecord(f"unknown log action {entry.action}")

    def _admit_genesis(self, entry: LogEntry) -> None:
        if entry.action != ACTION_ADMIT or entry.prev != GENESIS_PREV:
            raise MalformedRecord("log entry 0 must admit the runtime")
        cert = decode_record(entry.record)
        if not isinstance(cert, Certificate) or cert.mesh_id != self.mesh_id:
            raise WrongMesh("log entry 0 does not certify a runtime of this mesh")
        if not cert.issued_by_root() or RUNTIME not in cert.caps or cert.subject != entry.signer:
            raise NotAuthorized("log entry 0 must be the root's runtime certificate, signed by it")
        if not cert.issued_ms <= entry.committed_ms < cert.expires_ms:
            raise Expired("runtime certificate not valid when the log began")
        self._member(cert.subject).certs.append((0, cert))
        self.runtime_key = cert.subject

    def _member(self, key: bytes) -> Member:
        member = self.members.get(key)
        if member is None:
            member = self.members[key] = Member(key)
        return member

    def _check_certificate(self, cert: Certificate, now_ms: int) -> None:
        if cert.mesh_id != self.mesh_id:
            raise WrongMesh("certificate belongs to another mesh")
        if not cert.issued_ms <= now_ms < cert.expires_ms:
            raise Expired("certificate not valid when the runtime judged it")
        existing = self.members.get(cert.subject)
        if existing is not None and existing.revoked_at is not None:
            raise NotAuthorized("a revoked key can never be certified again")
        if existing is not None and not cert.caps >= existing.cert.caps:
            # Envelopes name the log position whose capabilities they claim; if a
            # certificate could shrink capabilities, an author could claim an older
            # position. Capabilities only grow; to reduce them, revoke and re-pair.
            raise NotAuthorized("a certificate may only keep or add capabilities")
        if cert.issued_by_root():
            return
        if existing is not None and (ADMIN in existing.caps or RUNTIME in existing.caps):
            raise NotAuthorized("only the root re-certifies an admin or the runtime")
        issuer = self.members.get(cert.issuer)
        if issuer is None or issuer.revoked_at is not None:
            raise NotAuthorized("issuer is not a current member")
        if ADMIN not in issuer.caps:
            raise NotAuthorized("issuer lacks admin")
        if now_ms >= issuer.cert.expires_ms:
            raise Expired("issuer's certificate has expired")
        if not cert.caps <= issuer.caps or RUNTIME in cert.caps:
            raise CapabilityEscalation("certificate grants more than its issuer holds")

    def _check_revocation(self, revocation: Revocation, now_ms: int) -> None:
        if revocation.mesh_id != self.mesh_id:
            raise WrongMesh("revocation belongs to another mesh")
        subject = self.members.get(revocation.subject)
        if subject is None:
            raise NotAuthorized("revocation of a key that is not a member")
        if subject.revoked_at is not None:
            raise NotAuthorized("key already revoked")
        if revocation.issued_by_root():
            return
        if ADMIN in subject.cert.caps or RUNTIME in subject.cert.caps:
            raise NotAuthorized("only the root revokes an admin or the runtime")
        issuer = self.members.get(revocation.issuer)
        if issuer is None or ADMIN not in issuer.caps:
            raise NotAuthorized("only an admin revokes a device")
        if now_ms >= issuer.cert.expires_ms:
            raise Expired("issuer's certificate has expired")

    def _check_fork_proof(
        self, author: bytes, incarnation: bytes, raw_a: bytes, raw_b: bytes
    ) -> None:
        try:
            a, b = decode_proof(raw_a), decode_proof(raw_b)
        except StateError as exc:
            raise MalformedRecord(f"fork proof envelope invalid: {exc}") from exc
        if a.mesh_id != self.mesh_id or b.mesh_id != self.mesh_id:
            raise WrongMesh("fork proof envelopes belong to another mesh")
        if not is_fork(a, b) or (a.author, a.incarnation) != (author, incarnation):
            raise MalformedRecord("fork proof does not show two envelopes for one slot")

    def _set_limits(self, subject: bytes, cutoffs: tuple[Cutoff, ...]) -> None:
        grouped: dict[bytes, dict[str, Cutoff]] = {}
        for cutoff in cutoffs:
            grouped.setdefault(cutoff.incarnation, {})[cutoff.doc] = cutoff
        for incarnation, limits in grouped.items():
            self._tighten((subject, incarnation), limits)

    def _tighten(self, key: Chain, limits: dict[str, Cutoff]) -> None:
        """Limit a chain to ``limits``; a chain already limited never loosens.

        Once a chain is limited, every document it does not list is at 0, and so
        is every incarnation of a revoked author that its revocation did not list:
        a later entry may lower a listed seq, never raise one or list a new doc.
        """
        previous = self._limits.get(key)
        author = self.members.get(key[0])
        if previous is None and author is not None and author.revoked_at is not None:
            previous = {}
        if previous is not None:
            limits = {
                doc: limits[doc] if doc in limits and limits[doc].seq <= cutoff.seq else cutoff
                for doc, cutoff in previous.items()
            }
        self._limits[key] = limits


def fold(mesh_id: bytes, entries: list[LogEntry]) -> Membership:
    """Membership from a set of entries in any order (gaps stop the fold)."""
    membership = Membership(mesh_id)
    by_index: dict[int, LogEntry] = {}
    for entry in entries:
        if entry.index in by_index and by_index[entry.index].hash != entry.hash:
            raise LogFork(f"two different membership-log entries at index {entry.index}")
        by_index[entry.index] = entry
    while membership.length in by_index:
        membership.add(by_index[membership.length])
    return membership


__all__ = ["Member", "Membership", "MembershipError", "fold", "verify_chain"]
