"""Certificate chains and the membership log folded into current membership."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_state.envelope import GENESIS_PREV as ENVELOPE_GENESIS_PREV
from crdt_state.envelope import Envelope, proof_of, seal
from crdt_state.replica import Replica
from crdt_state.schema import AGENT, SHARED, device_doc
from crdt_state.storage.memory import MemoryStore
from mesh import cbor
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
from mesh.identity import Identity, mesh_id_of
from mesh.membership.log import (
    ACTION_ADMIT,
    ACTION_QUARANTINE,
    ACTION_REVOKE,
    GENESIS_PREV,
    LOG_DOMAIN,
    Cutoff,
    LogEntry,
    decode_entry,
    genesis,
    sign_entry,
)
from mesh.membership.records import (
    ADMIN,
    APPROVE,
    CAPABILITIES,
    READ,
    RECORD_DOMAIN,
    RUNTIME,
    WRITE,
    Certificate,
    Revocation,
    issue_certificate,
    issue_revocation,
)
from mesh.membership.state import Membership, fold, verify_chain
from tests.support import NOW, YEAR_MS, new_mesh, seeded_identity

ROOT = seeded_identity(1)
RUNTIME_ID = seeded_identity(2)
ADMIN_ID = seeded_identity(3)
DEVICE = seeded_identity(4)
DEVICE2 = seeded_identity(5)
ADMIN2 = seeded_identity(6)
STRANGER = seeded_identity(7)
MESH = mesh_id_of(ROOT.public_key)
OTHER_ROOT = seeded_identity(99)
OTHER_MESH = mesh_id_of(OTHER_ROOT.public_key)

ALL_CAPS = frozenset(CAPABILITIES)
ADMIN_CAPS = frozenset({READ, WRITE, APPROVE, ADMIN})
DEVICE_CAPS = frozenset({READ, WRITE, APPROVE})
INC1, INC2, INC3 = (bytes([n]) * 16 for n in (1, 2, 3))
DEVICE_DOC = device_doc(DEVICE.peer_id)
HASH = bytes(range(32))


def cert(
    issuer: Identity,
    subject: Identity,
    caps: frozenset[str] | set[str],
    *,
    issued: int = NOW,
    expires: int = NOW + YEAR_MS,
    mesh: bytes = MESH,
    name: str = "",
) -> Certificate:
    return issue_certificate(
        issuer, mesh, subject.public_key, frozenset(caps), issued, expires, name
    )


def revocation(issuer: Identity, subject: Identity, *, mesh: bytes = MESH) -> Revocation:
    return issue_revocation(issuer, mesh, subject.public_key, NOW)


def cutoff(doc: str, incarnation: bytes, seq: int) -> Cutoff:
    return Cutoff(doc, incarnation, seq, HASH)


def envelope(
    author: Identity,
    incarnation: bytes = INC1,
    *,
    doc: str = SHARED,
    seq: int = 1,
    update: bytes = b"\x00\x00",
    mesh: bytes = MESH,
) -> Envelope:
    return seal(
        author,
        mesh_id=mesh,
        doc=doc,
        incarnation=incarnation,
        seq=seq,
        hlc=NOW << 16,
        mship=1,
        context=(),
        prev=ENVELOPE_GENESIS_PREV,
        update=update,
    )


def fork(author: Identity, incarnation: bytes = INC1, **kwargs: Any) -> tuple[Envelope, Envelope]:
    """Two validly signed envelopes for one (author, incarnation, doc, seq)."""
    a = envelope(author, incarnation, update=b"\x00\x00", **kwargs)
    b = envelope(author, incarnation, update=b"\x00\x01\x00\x00", **kwargs)
    assert a.hash != b.hash
    return a, b


class Log:
    """A membership log built entry by entry, each entry checked as it is added."""

    def __init__(self, runtime: Identity = RUNTIME_ID) -> None:
        self.runtime = runtime
        self.membership = Membership(MESH)
        self.entries: list[LogEntry] = []
        self.time = NOW
        self.add(genesis(ROOT, runtime, now_ms=NOW, expires_ms=NOW + YEAR_MS))

    def next(
        self,
        action: int,
        *,
        signer: Identity | None = None,
        at: int | None = None,
        index: int | None = None,
        prev: bytes | None = None,
        mesh: bytes = MESH,
        record: bytes = b"",
        cutoffs: tuple[Cutoff, ...] = (),
        quarantine: tuple[bytes, bytes, bytes, bytes] | None = None,
    ) -> LogEntry:
        """The next entry, signed but not added."""
        return sign_entry(
            signer or self.runtime,
            mesh_id=mesh,
            index=self.membership.length if index is None else index,
            prev=self.membership.head if prev is None else prev,
            committed_ms=self.time if at is None else at,
            action=action,
            record=record,
            cutoffs=cutoffs,
            quarantine=quarantine,
        )

    def add(self, entry: LogEntry) -> LogEntry:
        assert self.membership.add(entry) is True
        self.entries.append(entry)
        self.time = max(self.time, entry.committed_ms)
        return entry

    def admit(self, certificate: Certificate, **kwargs: Any) -> LogEntry:
        return self.add(self.next(ACTION_ADMIT, record=certificate.raw, **kwargs))

    def revoke(self, record: Revocation, *cutoffs: Cutoff, **kwargs: Any) -> LogEntry:
        return self.add(self.next(ACTION_REVOKE, record=record.raw, cutoffs=cutoffs, **kwargs))

    def quarantine_entry(
        self,
        pair: tuple[Envelope, Envelope],
        *cutoffs: Cutoff,
        author: bytes | None = None,
        incarnation: bytes | None = None,
    ) -> LogEntry:
        a, b = pair
        proof = (author or a.author, incarnation or a.incarnation, proof_of(a), proof_of(b))
        return self.next(ACTION_QUARANTINE, quarantine=proof, cutoffs=cutoffs)

    def quarantine(self, pair: tuple[Envelope, Envelope], *cutoffs: Cutoff) -> LogEntry:
        return self.add(self.quarantine_entry(pair, *cutoffs))

    def refuses(self, entry: LogEntry, error: type[MembershipError]) -> None:
        before = snapshot(self.membership)
        with pytest.raises(error):
            self.membership.add(entry)
        assert snapshot(self.membership) == before  # a refused entry changes nothing


def populated() -> Log:
    """Runtime, an admin and a device certified by the root, a device certified by the admin."""
    log = Log()
    log.admit(cert(ROOT, ADMIN_ID, ADMIN_CAPS))
    log.admit(cert(ROOT, DEVICE, DEVICE_CAPS))
    log.admit(cert(ADMIN_ID, DEVICE2, {READ, WRITE}))
    return log


KEYS = [seeded_identity(n) for n in range(2, 16)]
INCARNATIONS = [INC1, INC2, INC3]
DOCS = [SHARED, AGENT, DEVICE_DOC]


def snapshot(m: Membership) -> dict[str, Any]:
    keys = {k.public_key for k in KEYS} | set(m.members)
    return {
        "entries": [e.hash for e in m.entries],
        "runtime": m.runtime_key,
        "members": {
            key: (
                member.caps,
                member.revoked_at,
                member.revoked_by,
                [(index, c.raw) for index, c in member.certs],
            )
            for key, member in m.members.items()
        },
        "quarantined": set(m.quarantined),
        "limits": {
            (key, inc, doc): (m.chain_limit(key, inc, doc), m.cutoff(key, inc, doc))
            for key in keys
            for inc in INCARNATIONS
            for doc in DOCS
        },
        "caps_at": {(key, p): m.caps_at(key, p) for key in keys for p in range(m.length + 2)},
        "is_member": {key: m.is_member(key) for key in keys},
    }


# --- verify_chain ----------------------------------------------------------------------


def test_verify_chain_root_to_device() -> None:
    leaf = cert(ROOT, DEVICE, DEVICE_CAPS)
    assert verify_chain(MESH, [leaf], NOW) == leaf


def test_verify_chain_root_to_admin_to_device() -> None:
    admin = cert(ROOT, ADMIN_ID, ADMIN_CAPS)
    leaf = cert(ADMIN_ID, DEVICE, {READ, WRITE})
    assert verify_chain(MESH, [admin, leaf], NOW + 1000) == leaf


def test_verify_chain_through_the_runtime_and_two_admins() -> None:
    runtime = cert(ROOT, RUNTIME_ID, ALL_CAPS)
    admin = cert(RUNTIME_ID, ADMIN_ID, ADMIN_CAPS)
    admin2 = cert(ADMIN_ID, ADMIN2, {READ, ADMIN})
    leaf = cert(ADMIN2, DEVICE, {READ})
    assert verify_chain(MESH, [runtime, admin, admin2, leaf], NOW) == leaf


def test_verify_chain_needs_only_the_mesh_id() -> None:
    # No membership, no log: the root's key is checked against the mesh id.
    leaf = cert(ROOT, DEVICE, ALL_CAPS)
    assert verify_chain(mesh_id_of(ROOT.public_key), [leaf], NOW) == leaf
    with pytest.raises(WrongMesh):
        verify_chain(OTHER_MESH, [leaf], NOW)


@pytest.mark.parametrize(
    ("at", "ok"),
    [(NOW - 1, False), (NOW, True), (NOW + YEAR_MS - 1, True), (NOW + YEAR_MS, False)],
)
def test_verify_chain_validity_period(at: int, ok: bool) -> None:
    leaf = cert(ROOT, DEVICE, DEVICE_CAPS)
    if ok:
        assert verify_chain(MESH, [leaf], at) == leaf
    else:
        with pytest.raises(Expired):
            verify_chain(MESH, [leaf], at)


def test_verify_chain_refuses_an_expired_intermediate() -> None:
    admin = cert(ROOT, ADMIN_ID, ADMIN_CAPS, expires=NOW + 10)
    leaf = cert(ADMIN_ID, DEVICE, {READ}, issued=NOW, expires=NOW + YEAR_MS)
    assert verify_chain(MESH, [admin, leaf], NOW + 9) == leaf
    with pytest.raises(Expired):
        verify_chain(MESH, [admin, leaf], NOW + 10)


def test_verify_chain_refuses_tampered_fields() -> None:
    admin = cert(ROOT, ADMIN_ID, {READ, ADMIN})
    leaf = cert(ADMIN_ID, DEVICE, {READ})
    for forged in (
        dataclasses.replace(admin, caps=ADMIN_CAPS),
        dataclasses.replace(admin, expires_ms=NOW + 10 * YEAR_MS),
        dataclasses.replace(admin, subject=ADMIN2.public_key),
    ):
        with pytest.raises(BadSignature):
            verify_chain(MESH, [forged, leaf], NOW)
    with pytest.raises(BadSignature):
        verify_chain(MESH, [admin, dataclasses.replace(leaf, caps=frozenset({READ, ADMIN}))], NOW)


def test_verify_chain_refuses_a_signature_by_another_key() -> None:
    genuine = cert(ROOT, DEVICE, DEVICE_CAPS)
    body = cbor.decode(genuine.raw)[0]
    forged_raw = cbor.encode([body, STRANGER.sign(RECORD_DOMAIN + body)])
    with pytest.raises(BadSignature):
        verify_chain(MESH, [dataclasses.replace(genuine, raw=forged_raw)], NOW)


def test_verify_chain_refuses_another_mesh() -> None:
    foreign_root = cert(OTHER_ROOT, DEVICE, DEVICE_CAPS, mesh=OTHER_MESH)
    with pytest.raises(WrongMesh):
        verify_chain(MESH, [foreign_root], NOW)
    admin = cert(ROOT, ADMIN_ID, ADMIN_CAPS)
    foreign_leaf = cert(ADMIN_ID, DEVICE, {READ}, mesh=OTHER_MESH)
    with pytest.raises(WrongMesh):
        verify_chain(MESH, [admin, foreign_leaf], NOW)
    # The other mesh's root cannot vouch for this mesh either.
    with pytest.raises(NotAuthorized):
        verify_chain(MESH, [cert(OTHER_ROOT, DEVICE, DEVICE_CAPS)], NOW)


def test_verify_chain_must_start_at_the_root() -> None:
    with pytest.raises(NotAuthorized):
        verify_chain(MESH, [], NOW)
    with pytest.raises(NotAuthorized):
        verify_chain(MESH, [cert(ADMIN_ID, DEVICE, {READ})], NOW)
    admin = cert(ROOT, ADMIN_ID, ADMIN_CAPS)
    leaf = cert(ADMIN_ID, DEVICE, {READ})
    with pytest.raises(NotAuthorized):
        verify_chain(MESH, [leaf, admin], NOW)  # leaf first


def test_verify_chain_refuses_a_broken_link() -> None:
    admin = cert(ROOT, ADMIN_ID, ADMIN_CAPS)
    admin2 = cert(ROOT, ADMIN2, ADMIN_CAPS)
    leaf = cert(ADMIN2, DEVICE, {READ})
    with pytest.raises(NotAuthorized, match="broken"):
        verify_chain(MESH, [admin, leaf], NOW)
    # Two root certificates are not a chain either.
    with pytest.raises(NotAuthorized, match="broken"):
        verify_chain(MESH, [admin, admin2], NOW)


def test_verify_chain_issuer_without_admin() -> None:
    device = cert(ROOT, DEVICE, DEVICE_CAPS)
    leaf = cert(DEVICE, DEVICE2, {READ})
    with pytest.raises(NotAuthorized) as excinfo:
        verify_chain(MESH, [device, leaf], NOW)
    assert excinfo.type is NotAuthorized  # not an escalation: the issuer holds read


@pytest.mark.parametrize(
    ("issuer_caps", "granted"),
    [
        ({READ, ADMIN}, {WRITE}),
        ({READ, ADMIN}, {READ, APPROVE}),
        ({ADMIN}, {ADMIN, READ}),
        (ALL_CAPS, {RUNTIME}),
        (ALL_CAPS, ALL_CAPS),
        (ADMIN_CAPS, {READ, RUNTIME}),
    ],
)
def test_verify_chain_refuses_escalation(issuer_caps: set[str], granted: set[str]) -> None:
    issuer = cert(ROOT, ADMIN_ID, issuer_caps)
    leaf = cert(ADMIN_ID, DEVICE, granted)
    with pytest.raises(CapabilityEscalation):
        verify_chain(MESH, [issuer, leaf], NOW)


caps_sets = st.frozensets(st.sampled_from(sorted(CAPABILITIES)))


@given(issuer_caps=caps_sets, granted=caps_sets)
def test_verify_chain_grants_at_most_what_the_issuer_holds(
    issuer_caps: frozenset[str], granted: frozenset[str]
) -> None:
    chain = [cert(ROOT, ADMIN_ID, issuer_caps | {ADMIN}), cert(ADMIN_ID, DEVICE, granted)]
    if granted <= issuer_caps | {ADMIN} and RUNTIME not in granted:
        assert verify_chain(MESH, chain, NOW).caps == granted
    else:
        with pytest.raises(CapabilityEscalation):
            verify_chain(MESH, chain, NOW)


# --- genesis ---------------------------------------------------------------------------


def test_genesis_admits_the_runtime() -> None:
    log = Log()
    m = log.membership
    assert m.length == 1
    assert m.runtime_key == RUNTIME_ID.public_key
    assert m.caps(RUNTIME_ID.public_key) == ALL_CAPS
    assert m.is_member(RUNTIME_ID.public_key)
    assert m.head == log.entries[0].hash
    assert Membership(MESH).head == GENESIS_PREV
    assert not m.is_member(ROOT.public_key)


def _genesis_with(
    certificate: Certificate, signer: Identity = RUNTIME_ID, **kwargs: Any
) -> LogEntry:
    fields: dict[str, Any] = {
        "mesh_id": MESH,
        "index": 0,
        "prev": GENESIS_PREV,
        "committed_ms": NOW,
        "action": ACTION_ADMIT,
        "record": certificate.raw,
    }
    fields.update(kwargs)
    return sign_entry(signer, **fields)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        # the root's certificate, but signed by the root, not the runtime
        (lambda: _genesis_with(cert(ROOT, RUNTIME_ID, ALL_CAPS), signer=ROOT), NotAuthorized),
        # a runtime certifying itself
        (lambda: _genesis_with(cert(RUNTIME_ID, RUNTIME_ID, ALL_CAPS)), NotAuthorized),
        # an admin certificate, not a runtime one
        (lambda: _genesis_with(cert(ROOT, RUNTIME_ID, ADMIN_CAPS)), NotAuthorized),
        # a certificate of another key
        (lambda: _genesis_with(cert(ROOT, DEVICE, ALL_CAPS)), NotAuthorized),
        # a certificate of another mesh
        (
            lambda: _genesis_with(cert(OTHER_ROOT, RUNTIME_ID, ALL_CAPS, mesh=OTHER_MESH)),
            WrongMesh,
        ),
        # the runtime certificate was not valid when the log began
        (lambda: _genesis_with(cert(ROOT, RUNTIME_ID, ALL_CAPS, issued=NOW + 1)), Expired),
        (lambda: _genesis_with(cert(ROOT, RUNTIME_ID, ALL_CAPS, expires=NOW)), Expired),
        # not an admit entry
        (
            lambda: _genesis_with(
                cert(ROOT, RUNTIME_ID, ALL_CAPS),
                action=ACTION_REVOKE,
                record=revocation(ROOT, RUNTIME_ID).raw,
            ),
            MalformedRecord,
        ),
        # a revocation in an admit entry
        (
            lambda: _genesis_with(
                cert(ROOT, RUNTIME_ID, ALL_CAPS), record=revocation(ROOT, RUNTIME_ID).raw
            ),
            MembershipError,
        ),
        # a predecessor that cannot exist
        (lambda: _genesis_with(cert(ROOT, RUNTIME_ID, ALL_CAPS), prev=HASH), LogFork),
        # an entry of another mesh
        (lambda: _genesis_with(cert(ROOT, RUNTIME_ID, ALL_CAPS), mesh_id=OTHER_MESH), WrongMesh),
    ],
)
def test_genesis_rules(make: Any, error: type[MembershipError]) -> None:
    m = Membership(MESH)
    with pytest.raises(error):
        m.add(make())
    assert m.length == 0
    assert m.members == {}
    assert m.runtime_key is None


def test_genesis_entry_must_be_a_certificate_record() -> None:
    m = Membership(MESH)
    bogus = sign_entry(
        RUNTIME_ID,
        mesh_id=MESH,
        index=0,
        prev=GENESIS_PREV,
        committed_ms=NOW,
        action=ACTION_ADMIT,
        record=b"not a record",
    )
    with pytest.raises(MalformedRecord):
        m.add(bogus)


# --- sequencing -----------------------------------------------------------------------------


def test_duplicate_add_returns_false() -> None:
    log = populated()
    before = snapshot(log.membership)
    for entry in log.entries:
        assert log.membership.add(entry) is False
        assert log.membership.add(decode_entry(entry.raw)) is False
    assert snapshot(log.membership) == before


def test_gap_is_reported() -> None:
    log = populated()
    later = Log()
    later.admit(cert(ROOT, ADMIN_ID, ADMIN_CAPS))
    with pytest.raises(LogGap):
        later.membership.add(log.entries[3])
    log.refuses(log.next(ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw, index=5), LogGap)


def test_different_entry_at_an_existing_index_is_a_fork() -> None:
    log = populated()
    other = log.next(
        ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw, index=2, prev=log.entries[1].hash
    )
    log.refuses(other, LogFork)
    rival_genesis = genesis(ROOT, RUNTIME_ID, now_ms=NOW + 1, expires_ms=NOW + YEAR_MS)
    log.refuses(rival_genesis, LogFork)


def test_entry_that_does_not_follow_the_head_is_a_fork() -> None:
    log = populated()
    log.refuses(log.next(ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw, prev=HASH), LogFork)


def test_entry_of_another_mesh() -> None:
    log = populated()
    entry = log.next(ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw, mesh=OTHER_MESH)
    log.refuses(entry, WrongMesh)


@pytest.mark.parametrize("signer", [ROOT, ADMIN_ID, DEVICE, STRANGER])
def test_entries_must_be_signed_by_the_current_runtime(signer: Identity) -> None:
    log = populated()
    entry = log.next(ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw, signer=signer)
    log.refuses(entry, NotAuthorized)


def test_a_new_runtime_takes_over_the_log() -> None:
    log = populated()
    successor = seeded_identity(20)
    log.admit(cert(ROOT, successor, ALL_CAPS))
    assert log.membership.runtime_key == successor.public_key
    log.refuses(log.next(ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw), NotAuthorized)
    log.runtime = successor
    log.admit(cert(ROOT, STRANGER, {READ}))
    # The old runtime can then be revoked by the root.
    log.revoke(revocation(ROOT, RUNTIME_ID))
    assert not log.membership.is_member(RUNTIME_ID.public_key)


def test_a_revoked_runtime_signs_no_more_entries() -> None:
    log = populated()
    log.revoke(revocation(ROOT, RUNTIME_ID))
    log.refuses(log.next(ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw), NotAuthorized)


def test_log_time_never_goes_backwards() -> None:
    log = populated()
    log.admit(cert(ROOT, STRANGER, {READ}), at=NOW + 100)
    late = log.next(ACTION_ADMIT, record=cert(ROOT, ADMIN2, {READ}).raw, at=NOW + 99)
    log.refuses(late, MalformedRecord)
    log.admit(cert(ROOT, ADMIN2, {READ}), at=NOW + 100)


def test_record_of_the_wrong_kind() -> None:
    log = populated()
    log.refuses(log.next(ACTION_ADMIT, record=revocation(ROOT, DEVICE).raw), MalformedRecord)
    log.refuses(log.next(ACTION_REVOKE, record=cert(ROOT, DEVICE, {READ}).raw), MalformedRecord)
    log.refuses(log.next(ACTION_ADMIT, record=b"\x80"), MalformedRecord)


def test_entry_with_a_tampered_record_is_refused() -> None:
    log = populated()
    raw = bytearray(cert(ROOT, STRANGER, {READ}).raw)
    raw[-1] ^= 1
    log.refuses(log.next(ACTION_ADMIT, record=bytes(raw)), BadSignature)


def test_entries_resist_single_bit_flips() -> None:
    log = populated()
    raw = log.entries[3].raw
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((MalformedRecord, BadSignature)):
            decode_entry(bytes(flipped))


@pytest.mark.parametrize("position", [0, 6])  # version, action
def test_entries_with_a_bool_for_an_integer_are_refused(position: int) -> None:
    entry = populated().entries[1]
    body = cbor.decode(cbor.decode(entry.raw)[0])
    body[position] = position == 0  # version True (== 1), action False (== admit)
    body_bytes = cbor.encode(body)
    raw = cbor.encode([body_bytes, RUNTIME_ID.sign(LOG_DOMAIN + body_bytes)])
    with pytest.raises(MalformedRecord):
        decode_entry(raw)


# --- certificates ------------------------------------------------------------------------


def test_certificates_by_root_and_admins_are_admitted() -> None:
    log = populated()
    m = log.membership
    assert m.caps(ADMIN_ID.public_key) == ADMIN_CAPS
    assert m.caps(DEVICE.public_key) == DEVICE_CAPS
    assert m.caps(DEVICE2.public_key) == {READ, WRITE}
    assert m.is_member(DEVICE2.public_key, NOW)
    assert not m.is_member(DEVICE2.public_key, NOW + YEAR_MS)
    assert m.caps(STRANGER.public_key) == frozenset()
    assert m.member(STRANGER.public_key) is None
    # The runtime holds admin and may certify devices too.
    log.admit(cert(RUNTIME_ID, STRANGER, {READ}))
    assert m.caps(STRANGER.public_key) == {READ}
    # An admin certified by an admin.
    log.admit(cert(ADMIN_ID, ADMIN2, {READ, ADMIN}))
    log.admit(cert(ADMIN2, seeded_identity(21), {READ}))


@pytest.mark.parametrize("granted", [{RUNTIME}, {READ, RUNTIME}, ALL_CAPS, ADMIN_CAPS, {APPROVE}])
def test_admin_escalation_is_refused(granted: set[str]) -> None:
    log = Log()
    log.admit(cert(ROOT, ADMIN_ID, {READ, WRITE, ADMIN}))
    entry = log.next(ACTION_ADMIT, record=cert(ADMIN_ID, STRANGER, granted).raw)
    log.refuses(entry, CapabilityEscalation)


def test_runtime_may_not_grant_runtime() -> None:
    log = Log()
    entry = log.next(ACTION_ADMIT, record=cert(RUNTIME_ID, STRANGER, ALL_CAPS).raw)
    log.refuses(entry, CapabilityEscalation)


@pytest.mark.parametrize("issuer", [DEVICE, STRANGER])
def test_only_admins_certify(issuer: Identity) -> None:
    log = populated()
    entry = log.next(ACTION_ADMIT, record=cert(issuer, ADMIN2, {READ}).raw)
    with pytest.raises(NotAuthorized) as excinfo:
        log.membership.add(entry)
    assert excinfo.type is NotAuthorized


def test_certificate_of_another_mesh_is_refused() -> None:
    log = populated()
    foreign = cert(OTHER_ROOT, STRANGER, {READ}, mesh=OTHER_MESH)
    log.refuses(log.next(ACTION_ADMIT, record=foreign.raw), WrongMesh)


def test_validity_is_judged_at_the_commit_time_not_the_clock() -> None:
    log = populated()
    log.refuses(
        log.next(ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}, issued=NOW + 5).raw, at=NOW + 4),
        Expired,
    )
    log.refuses(
        log.next(
            ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}, expires=NOW + 5).raw, at=NOW + 5
        ),
        Expired,
    )
    log.admit(cert(ROOT, STRANGER, {READ}, issued=NOW + 5, expires=NOW + 6), at=NOW + 5)
    # Membership does not consult a clock: the member stays listed after expiry.
    assert log.membership.caps(STRANGER.public_key) == {READ}
    assert not log.membership.is_member(STRANGER.public_key, NOW + 6)


def test_certificate_from_an_expired_admin_is_refused() -> None:
    log = Log()
    log.admit(cert(ROOT, ADMIN_ID, ADMIN_CAPS, expires=NOW + 10))
    entry = log.next(ACTION_ADMIT, record=cert(ADMIN_ID, STRANGER, {READ}).raw, at=NOW + 10)
    log.refuses(entry, Expired)


def test_certificates_of_a_revoked_admin_are_void() -> None:
    log = populated()
    # Signed while the admin was current, but committed after its revocation.
    early = cert(ADMIN_ID, STRANGER, {READ}, issued=NOW)
    log.revoke(revocation(ROOT, ADMIN_ID), at=NOW + 10)
    log.refuses(log.next(ACTION_ADMIT, record=early.raw), NotAuthorized)
    log.refuses(
        log.next(
            ACTION_ADMIT, record=cert(ADMIN_ID, ADMIN2, {READ}, issued=NOW + 20).raw, at=NOW + 20
        ),
        NotAuthorized,
    )
    # What it certified before its revocation stands.
    assert log.membership.caps(DEVICE2.public_key) == {READ, WRITE}


def test_a_revoked_key_is_never_certified_again() -> None:
    log = populated()
    log.revoke(revocation(ADMIN_ID, DEVICE))
    for issuer in (ROOT, ADMIN_ID, RUNTIME_ID):
        entry = log.next(ACTION_ADMIT, record=cert(issuer, DEVICE, {READ}).raw)
        log.refuses(entry, NotAuthorized)
    assert log.membership.caps(DEVICE.public_key) == frozenset()


def test_recertification_keeps_or_adds_capabilities() -> None:
    log = populated()
    # The same capabilities again (e.g. a renewal with a later expiry) are accepted ...
    log.admit(cert(ADMIN_ID, DEVICE2, {READ, WRITE}, expires=NOW + 2 * YEAR_MS))
    assert log.membership.caps(DEVICE2.public_key) == {READ, WRITE}
    assert log.membership.is_member(DEVICE2.public_key, NOW + YEAR_MS)
    # ... and so are more, within what the issuer holds.
    log.admit(cert(ADMIN_ID, DEVICE2, {APPROVE, READ, WRITE}))
    assert log.membership.caps(DEVICE2.public_key) == {APPROVE, READ, WRITE}
    # The root may add anything to an admin.
    log.admit(cert(ROOT, ADMIN_ID, ALL_CAPS - {RUNTIME}))
    assert log.membership.caps(ADMIN_ID.public_key) == ALL_CAPS - {RUNTIME}


@pytest.mark.parametrize(
    ("issuer", "subject", "caps"),
    [
        (ADMIN_ID, DEVICE, {READ}),  # an admin reduces a device
        (ROOT, DEVICE, {READ}),  # not even the root reduces a member
        (ROOT, DEVICE, {READ, WRITE, ADMIN}),  # adds admin but drops approve
        (ROOT, ADMIN_ID, {READ, ADMIN}),  # the root demotes an admin
        (ROOT, ADMIN_ID, {READ}),  # the root downgrades an admin to a device
        (ROOT, RUNTIME_ID, ADMIN_CAPS),  # the runtime loses runtime
        (ROOT, DEVICE, set()),  # a certificate of no capabilities
    ],
)
def test_a_certificate_may_not_shrink_capabilities(
    issuer: Identity, subject: Identity, caps: set[str]
) -> None:
    # Envelopes claim the capabilities of a log position (mship) chosen by their author:
    # were capabilities allowed to shrink, an author could claim an older position.
    log = populated()
    entry = log.next(ACTION_ADMIT, record=cert(issuer, subject, caps).raw)
    with pytest.raises(NotAuthorized) as excinfo:
        log.membership.add(entry)
    assert excinfo.type is NotAuthorized  # refused as a shrink, not as an escalation
    log.refuses(entry, NotAuthorized)
    assert log.membership.caps(ADMIN_ID.public_key) == ADMIN_CAPS
    assert log.membership.caps(DEVICE.public_key) == DEVICE_CAPS
    assert log.membership.caps(RUNTIME_ID.public_key) == ALL_CAPS


def test_capabilities_are_reduced_by_revoking_and_re_pairing() -> None:
    log = populated()
    log.refuses(log.next(ACTION_ADMIT, record=cert(ADMIN_ID, DEVICE, {READ}).raw), NotAuthorized)
    log.revoke(revocation(ADMIN_ID, DEVICE), cutoff(SHARED, INC1, 3))
    # The old key is gone for good, even with the reduced capabilities ...
    log.refuses(log.next(ACTION_ADMIT, record=cert(ROOT, DEVICE, {READ}).raw), NotAuthorized)
    # ... and the same device pairs again under a new key.
    repaired = seeded_identity(30)
    log.admit(cert(ADMIN_ID, repaired, {READ}))
    m = log.membership
    assert m.caps(repaired.public_key) == {READ}
    assert m.is_member(repaired.public_key)
    assert not m.is_member(DEVICE.public_key)
    assert m.chain_limit(DEVICE.public_key, INC1, SHARED) == 3
    assert m.chain_limit(repaired.public_key, INC1, SHARED) is None


def test_an_escalating_recertification_is_refused() -> None:
    log = populated()
    log.admit(cert(ROOT, ADMIN2, {READ, ADMIN}))
    # DEVICE2 holds read and write; ADMIN2 holds no write, so it may not re-grant it.
    log.refuses(
        log.next(ACTION_ADMIT, record=cert(ADMIN2, DEVICE2, {READ, WRITE}).raw),
        CapabilityEscalation,
    )


@pytest.mark.parametrize("subject", [RUNTIME_ID, ADMIN2, ADMIN_ID])
def test_only_the_root_recertifies_an_admin_or_the_runtime(subject: Identity) -> None:
    log = populated()
    log.admit(cert(ROOT, ADMIN2, ADMIN_CAPS))
    for caps in ({READ}, ADMIN_CAPS, {READ, ADMIN}):
        entry = log.next(ACTION_ADMIT, record=cert(ADMIN_ID, subject, caps).raw)
        log.refuses(entry, NotAuthorized)
    # The runtime (an admin too) may not demote itself through its own certificate.
    entry = log.next(ACTION_ADMIT, record=cert(RUNTIME_ID, RUNTIME_ID, {READ, ADMIN}).raw)
    log.refuses(entry, NotAuthorized)
    assert log.membership.caps(RUNTIME_ID.public_key) == ALL_CAPS


# --- caps_at ------------------------------------------------------------------------------


def test_caps_at_reflects_certificates_among_the_first_entries() -> None:
    log = Log()  # entry 0
    log.admit(cert(ROOT, ADMIN_ID, ADMIN_CAPS))  # 1
    log.admit(cert(ADMIN_ID, DEVICE, {READ}))  # 2
    log.admit(cert(ROOT, STRANGER, {READ}))  # 3
    log.admit(cert(ADMIN_ID, DEVICE, {READ, WRITE}))  # 4
    log.revoke(revocation(ADMIN_ID, DEVICE), cutoff(SHARED, INC1, 3))  # 5
    m = log.membership
    key = DEVICE.public_key
    assert [m.caps_at(key, p) for p in range(8)] == [
        frozenset(),
        frozenset(),
        frozenset(),
        {READ},
        {READ},
        {READ, WRITE},
        {READ, WRITE},  # envelopes up to the cutoff keep their permission
        {READ, WRITE},
    ]
    assert m.caps(key) == frozenset()
    assert m.caps_at(RUNTIME_ID.public_key, 0) == frozenset()
    assert m.caps_at(RUNTIME_ID.public_key, 1) == ALL_CAPS
    assert m.caps_at(DEVICE2.public_key, 6) == frozenset()


# --- revocations ------------------------------------------------------------------------------


def test_admin_revokes_a_device() -> None:
    log = populated()
    entry = log.revoke(revocation(ADMIN_ID, DEVICE))
    member = log.membership.member(DEVICE.public_key)
    assert member is not None
    assert member.revoked_at == entry.index
    assert member.revoked_by == ADMIN_ID.public_key
    assert member.caps == frozenset()
    assert not log.membership.is_member(DEVICE.public_key)
    assert log.membership.is_member(DEVICE2.public_key)


def test_root_revokes_an_admin_and_any_device() -> None:
    log = populated()
    log.revoke(revocation(ROOT, ADMIN_ID))
    log.revoke(revocation(ROOT, DEVICE2))
    assert not log.membership.is_member(ADMIN_ID.public_key)
    assert not log.membership.is_member(DEVICE2.public_key)


@pytest.mark.parametrize("subject", [ADMIN2, RUNTIME_ID])
def test_only_the_root_revokes_an_admin_or_the_runtime(subject: Identity) -> None:
    log = populated()
    log.admit(cert(ROOT, ADMIN2, ADMIN_CAPS))
    for issuer in (ADMIN_ID, RUNTIME_ID):
        log.refuses(log.next(ACTION_REVOKE, record=revocation(issuer, subject).raw), NotAuthorized)
    log.revoke(revocation(ROOT, subject))


def test_an_admin_is_not_downgraded_but_revoked_and_re_paired_as_a_device() -> None:
    log = populated()
    log.admit(cert(ROOT, ADMIN2, ADMIN_CAPS))
    # A downgrade is refused, so the key stays an admin that only the root revokes.
    log.refuses(log.next(ACTION_ADMIT, record=cert(ROOT, ADMIN2, {READ}).raw), NotAuthorized)
    assert log.membership.caps(ADMIN2.public_key) == ADMIN_CAPS
    log.refuses(log.next(ACTION_REVOKE, record=revocation(ADMIN_ID, ADMIN2).raw), NotAuthorized)
    # Revoke, then pair the same person again, as a device, under a new key.
    log.revoke(revocation(ROOT, ADMIN2))
    as_device = seeded_identity(31)
    log.admit(cert(ADMIN_ID, as_device, {READ}))
    assert log.membership.caps(as_device.public_key) == {READ}
    # An admin may revoke the device it has become.
    log.revoke(revocation(ADMIN_ID, as_device))
    assert not log.membership.is_member(as_device.public_key)
    assert not log.membership.is_member(ADMIN2.public_key)


@pytest.mark.parametrize("issuer", [DEVICE, DEVICE2, STRANGER])
def test_non_admins_revoke_nobody(issuer: Identity) -> None:
    log = populated()
    log.refuses(log.next(ACTION_REVOKE, record=revocation(issuer, DEVICE2).raw), NotAuthorized)
    log.refuses(log.next(ACTION_REVOKE, record=revocation(issuer, issuer).raw), NotAuthorized)


def test_revocation_of_a_non_member_or_twice() -> None:
    log = populated()
    log.refuses(log.next(ACTION_REVOKE, record=revocation(ROOT, STRANGER).raw), NotAuthorized)
    log.revoke(revocation(ADMIN_ID, DEVICE))
    log.refuses(log.next(ACTION_REVOKE, record=revocation(ROOT, DEVICE).raw), NotAuthorized)


def test_a_revoked_admin_revokes_nobody() -> None:
    log = populated()
    log.revoke(revocation(ROOT, ADMIN_ID))
    log.refuses(log.next(ACTION_REVOKE, record=revocation(ADMIN_ID, DEVICE).raw), NotAuthorized)


def test_an_expired_admin_revokes_nobody() -> None:
    log = Log()
    log.admit(cert(ROOT, ADMIN_ID, ADMIN_CAPS, expires=NOW + 10))
    log.admit(cert(ROOT, DEVICE, DEVICE_CAPS))
    entry = log.next(ACTION_REVOKE, record=revocation(ADMIN_ID, DEVICE).raw, at=NOW + 10)
    log.refuses(entry, Expired)


def test_revocation_of_another_mesh() -> None:
    log = populated()
    foreign = issue_revocation(OTHER_ROOT, OTHER_MESH, DEVICE.public_key, NOW)
    log.refuses(log.next(ACTION_REVOKE, record=foreign.raw), WrongMesh)


def test_revocation_cutoffs_limit_listed_chains_and_zero_the_rest() -> None:
    log = populated()
    key = DEVICE.public_key
    assert log.membership.chain_limit(key, INC1, SHARED) is None
    log.revoke(
        revocation(ADMIN_ID, DEVICE),
        cutoff(SHARED, INC1, 5),
        cutoff(DEVICE_DOC, INC1, 2),
        cutoff(SHARED, INC2, 3),
    )
    m = log.membership
    assert m.chain_limit(key, INC1, SHARED) == 5
    assert m.chain_limit(key, INC1, DEVICE_DOC) == 2
    assert m.chain_limit(key, INC1, AGENT) == 0
    assert m.chain_limit(key, INC2, SHARED) == 3
    assert m.chain_limit(key, INC2, DEVICE_DOC) == 0
    assert m.chain_limit(key, INC3, SHARED) == 0  # an incarnation the runtime never saw
    assert m.cutoff(key, INC1, SHARED) == cutoff(SHARED, INC1, 5)
    assert m.cutoff(key, INC3, SHARED) is None
    # Other authors are not limited.
    assert m.chain_limit(DEVICE2.public_key, INC1, SHARED) is None
    assert m.chain_limit(STRANGER.public_key, INC1, SHARED) is None


def test_revocation_without_cutoffs_zeroes_every_chain() -> None:
    log = populated()
    log.revoke(revocation(ADMIN_ID, DEVICE))
    for inc in INCARNATIONS:
        for doc in DOCS:
            assert log.membership.chain_limit(DEVICE.public_key, inc, doc) == 0


# --- quarantine ---------------------------------------------------------------------------------


def test_quarantine_limits_one_incarnation() -> None:
    log = populated()
    log.quarantine(fork(DEVICE, INC1), cutoff(SHARED, INC1, 4))
    m = log.membership
    key = DEVICE.public_key
    assert (key, INC1) in m.quarantined
    assert m.chain_limit(key, INC1, SHARED) == 4
    assert m.chain_limit(key, INC1, AGENT) == 0
    assert m.chain_limit(key, INC2, SHARED) is None  # other incarnations are untouched
    assert m.is_member(key)  # a quarantine is not a revocation


def test_quarantine_only_tightens() -> None:
    log = populated()
    key = DEVICE.public_key
    log.quarantine(fork(DEVICE, INC1), cutoff(SHARED, INC1, 4), cutoff(DEVICE_DOC, INC1, 6))
    log.quarantine(
        fork(DEVICE, INC1, doc=DEVICE_DOC),
        cutoff(AGENT, INC1, 9),  # was 0: must stay 0
        cutoff(DEVICE_DOC, INC1, 5),  # tighter
        cutoff(SHARED, INC1, 8),  # looser: ignored
    )
    m = log.membership
    assert m.chain_limit(key, INC1, SHARED) == 4
    assert m.chain_limit(key, INC1, DEVICE_DOC) == 5
    assert m.chain_limit(key, INC1, AGENT) == 0


def test_quarantine_after_revocation_never_loosens() -> None:
    log = populated()
    key = DEVICE.public_key
    log.revoke(revocation(ADMIN_ID, DEVICE), cutoff(SHARED, INC1, 3))
    log.quarantine(fork(DEVICE, INC2), cutoff(SHARED, INC2, 7))
    log.quarantine(fork(DEVICE, INC1), cutoff(SHARED, INC1, 9), cutoff(AGENT, INC1, 2))
    m = log.membership
    assert m.chain_limit(key, INC2, SHARED) == 0
    assert m.chain_limit(key, INC1, SHARED) == 3
    assert m.chain_limit(key, INC1, AGENT) == 0


def test_revocation_after_quarantine_never_loosens() -> None:
    log = populated()
    key = DEVICE.public_key
    log.quarantine(fork(DEVICE, INC1), cutoff(SHARED, INC1, 4))
    log.revoke(
        revocation(ADMIN_ID, DEVICE),
        cutoff(SHARED, INC1, 6),
        cutoff(AGENT, INC1, 2),
        cutoff(SHARED, INC2, 3),
    )
    m = log.membership
    assert m.chain_limit(key, INC1, SHARED) == 4
    assert m.chain_limit(key, INC1, AGENT) == 0
    assert m.chain_limit(key, INC2, SHARED) == 3


def test_quarantine_of_a_non_member_is_harmless() -> None:
    log = populated()
    log.quarantine(fork(STRANGER, INC2))
    assert log.membership.chain_limit(STRANGER.public_key, INC2, SHARED) == 0
    assert log.membership.member(STRANGER.public_key) is None


def _flip_signature(env: Envelope) -> bytes:
    """The fork-proof half of ``env`` with one bit of its signature flipped."""
    bad = bytearray(env.signature)
    bad[0] ^= 1
    return cbor.encode([env.body, bytes(bad)])


def test_a_fork_proof_half_is_the_signed_body_alone() -> None:
    a, b = fork(DEVICE, INC1)
    assert cbor.decode(proof_of(a)) == [a.body, a.signature]
    assert cbor.decode(a.raw) == [a.body, a.signature, a.update]
    log = populated()
    log.quarantine((a, b))
    assert (DEVICE.public_key, INC1) in log.membership.quarantined
    quarantine = log.entries[-1].quarantine
    assert quarantine is not None
    assert quarantine[2:] == (proof_of(a), proof_of(b))


def test_bogus_fork_proofs_are_refused() -> None:
    log = populated()
    a, b = fork(DEVICE, INC1)
    pa, pb = proof_of(a), proof_of(b)
    bogus: list[tuple[bytes, bytes, bytes, bytes]] = [
        (a.author, a.incarnation, pa, pa),  # the same envelope twice
        (a.author, a.incarnation, pa, proof_of(envelope(DEVICE, INC1, seq=2))),  # another seq
        (a.author, a.incarnation, pa, proof_of(envelope(DEVICE, INC1, doc=DEVICE_DOC))),
        (a.author, a.incarnation, pa, proof_of(envelope(DEVICE, INC2, update=b"\x00\x01"))),
        (a.author, a.incarnation, pa, proof_of(envelope(DEVICE2, INC1, update=b"\x00\x01"))),
        (a.author, a.incarnation, pa, _flip_signature(b)),  # bad signature
        (a.author, a.incarnation, _flip_signature(a), pb),
        (a.author, a.incarnation, pa, b"garbage"),
        (a.author, a.incarnation, a.raw, b.raw),  # whole envelopes, not proof halves
        (a.author, a.incarnation, pa, cbor.encode([b.body, b.signature, b"extra"])),
        (DEVICE2.public_key, a.incarnation, pa, pb),  # names another author
        (a.author, INC2, pa, pb),  # names another incarnation
    ]
    for proof in bogus:
        log.refuses(log.next(ACTION_QUARANTINE, quarantine=proof), MalformedRecord)


def test_fork_proof_from_another_mesh_is_refused() -> None:
    log = populated()
    a, b = fork(DEVICE, INC1, mesh=OTHER_MESH)
    with pytest.raises(MembershipError):
        log.membership.add(log.quarantine_entry((a, b)))
    assert log.membership.quarantined == set()


def test_quarantine_cutoffs_must_name_its_incarnation() -> None:
    log = populated()
    entry = log.quarantine_entry(fork(DEVICE, INC1), cutoff(SHARED, INC2, 1))
    log.refuses(entry, MalformedRecord)


# --- the runtime's engine ------------------------------------------------------------------------


def test_engine_revocation_cuts_off_at_the_last_accepted_envelope() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(name="phone")
    assert mesh.connect(phone)
    phone.write(SHARED, "messages", "m1", {"text": "one"})
    mesh.settle()
    phone.write(SHARED, "messages", "m2", {"text": "two"}, now=NOW + 10)
    mesh.settle(NOW + 10)
    runtime = mesh.runtime.replica
    incarnation = phone.replica.incarnation
    head = runtime.cutoffs(phone.key, incarnation)
    assert [(c.doc, c.seq) for c in head] == [(SHARED, 2)]
    entry = mesh.runtime.engine.revoke(
        issue_revocation(mesh.root, mesh.mesh_id, phone.key, NOW + 20), NOW + 20
    )
    assert entry.cutoffs == head
    m = runtime.membership
    assert m.chain_limit(phone.key, incarnation, SHARED) == 2
    assert m.chain_limit(phone.key, incarnation, device_doc(phone.peer_id)) == 0
    assert m.chain_limit(phone.key, INC3, SHARED) == 0
    refolded = fold(mesh.mesh_id, list(reversed(m.entries)))
    assert [e.hash for e in refolded.entries] == [e.hash for e in m.entries]
    assert refolded.chain_limit(phone.key, incarnation, SHARED) == 2


# --- fold -------------------------------------------------------------------------------------


def test_fold_stops_at_a_gap_and_refuses_a_fork() -> None:
    log = populated()
    assert [e.hash for e in fold(MESH, log.entries[:2] + log.entries[3:]).entries] == [
        e.hash for e in log.entries[:2]
    ]
    assert fold(MESH, log.entries[1:]).length == 0
    rival = log.next(
        ACTION_ADMIT, record=cert(ROOT, STRANGER, {READ}).raw, index=3, prev=log.entries[2].hash
    )
    with pytest.raises(LogFork):
        fold(MESH, [*log.entries, rival])


# --- membership is a pure function of the set of entries --------------------------------------

POOL = [seeded_identity(n) for n in range(3, 16)]
NO_RUNTIME_CAPS = sorted(ADMIN_CAPS)


def _pick(data: st.DataObject, options: list[Any]) -> Any:
    return data.draw(st.sampled_from(options)) if options else None


def _draw_cutoffs(data: st.DataObject, incarnations: list[bytes]) -> tuple[Cutoff, ...]:
    slots = data.draw(
        st.lists(
            st.tuples(st.sampled_from(DOCS), st.sampled_from(incarnations)),
            unique=True,
            max_size=4,
        )
    )
    return tuple(
        Cutoff(doc, inc, data.draw(st.integers(0, 9)), bytes([len(doc)]) * 32) for doc, inc in slots
    )


def _build_valid_log(data: st.DataObject) -> Log:
    log = Log()
    m = log.membership
    target = data.draw(st.integers(10, 30))
    attempts = 0
    while len(log.entries) < target and attempts < 200:
        attempts += 1
        log.time += data.draw(st.integers(0, 3))

        def current(key: bytes) -> bool:
            member = m.member(key)
            return member is not None and member.revoked_at is None

        def revoked(key: bytes) -> bool:
            member = m.member(key)
            return member is not None and member.revoked_at is not None

        def held(identity: Identity) -> frozenset[str]:
            member = m.member(identity.public_key)
            return frozenset() if member is None else member.cert.caps

        op = data.draw(st.sampled_from(["root-cert", "admin-cert", "revoke", "quarantine"]))
        if op == "root-cert":
            subject = _pick(data, [k for k in POOL if not revoked(k.public_key)])
            if subject is None:
                continue
            # Capabilities only grow: a member keeps at least what it holds.
            caps = data.draw(st.frozensets(st.sampled_from(NO_RUNTIME_CAPS))) | held(subject)
            log.admit(cert(ROOT, subject, caps, issued=NOW, expires=NOW + YEAR_MS))
        elif op == "admin-cert":
            admins = [
                k
                for k in [RUNTIME_ID, *POOL]
                if current(k.public_key) and ADMIN in m.caps(k.public_key)
            ]
            issuer = _pick(data, admins)
            if issuer is None:
                continue
            subjects = [
                k
                for k in POOL
                if k != issuer
                and not revoked(k.public_key)
                and not (m.caps(k.public_key) & {ADMIN, RUNTIME})
            ]
            subject = _pick(data, subjects)
            if subject is None:
                continue
            allowed = m.caps(issuer.public_key) - {RUNTIME}
            if not held(subject) <= allowed:
                continue  # the issuer could neither keep nor add to the subject's caps
            caps = data.draw(st.frozensets(st.sampled_from(sorted(allowed)))) | held(subject)
            log.admit(cert(issuer, subject, caps))
        elif op == "revoke":
            subject = _pick(data, [k for k in POOL if current(k.public_key)])
            if subject is None:
                continue
            issuers = [ROOT]
            if not m.caps(subject.public_key) & {ADMIN, RUNTIME}:
                issuers += [
                    k
                    for k in [RUNTIME_ID, *POOL]
                    if current(k.public_key) and ADMIN in m.caps(k.public_key)
                ]
            issuer = _pick(data, issuers)
            log.revoke(revocation(issuer, subject), *_draw_cutoffs(data, INCARNATIONS))
        else:
            author = _pick(data, POOL)
            inc = _pick(data, INCARNATIONS)
            doc = _pick(data, DOCS)
            seq = data.draw(st.integers(1, 5))
            pair = fork(author, inc, doc=doc, seq=seq)
            log.quarantine(pair, *_draw_cutoffs(data, [inc]))
    return log


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_membership_is_a_pure_function_of_the_set_of_entries(data: st.DataObject) -> None:
    log = _build_valid_log(data)
    expected = snapshot(log.membership)
    assert len(log.entries) >= 2
    duplicates = data.draw(st.lists(st.sampled_from(log.entries), max_size=10))
    feed = data.draw(st.permutations(log.entries + duplicates))

    assert snapshot(fold(MESH, feed)) == expected

    replica = Replica(mesh_id=MESH, store=MemoryStore())
    for entry in feed:
        replica.add_log_entry(decode_entry(entry.raw))
    assert replica.held_entries == {}
    assert snapshot(replica.membership) == expected

    # Any prefix of the log folds to the membership the log had at that point.
    cut = data.draw(st.integers(1, len(log.entries)))
    partial = fold(MESH, [e for e in feed if e.index < cut or e.index > cut])
    assert [e.hash for e in partial.entries] == [e.hash for e in log.entries[:cut]]
