"""The join protocol's state machine on the runtime (sans-IO)."""

from __future__ import annotations

import pytest

from crdt_state.schema import SHARED
from mesh.limits import MAX_INVITE_FAILURES
from mesh.membership.log import decode_entry
from mesh.membership.records import APPROVE, READ, WRITE, issue_revocation
from mesh.membership.state import fold
from mesh.pairing.invite import Invite, InviteError, join_proof, parse_code
from mesh.pairing.protocol import (
    JOINED,
    PENDING,
    REFUSED,
    JoinDesk,
    JoinReply,
    JoinRequest,
)
from tests.support import NOW, Mesh, new_mesh, seeded_identity

CAPS = frozenset({READ, WRITE})


def desk_of(mesh: Mesh) -> JoinDesk:
    return JoinDesk(mesh.runtime.engine, mesh.runtime.replica.store, ["/ip4/127.0.0.1/tcp/4001"])


def request(
    invite: Invite, device: bytes, name: str = "phone", secret: bytes | None = None
) -> bytes:
    proof = join_proof(secret or invite.secret, invite.mesh_id, invite.runtime_key, device)
    return JoinRequest(invite.id, proof, name).encode()


def ask(desk: JoinDesk, invite: Invite, device: bytes, **kw: object) -> JoinReply:
    return JoinReply.decode(desk.handle(request(invite, device, **kw), device, NOW + 1).encode())  # type: ignore[arg-type]


def test_code_round_trip_and_damage() -> None:
    mesh = new_mesh()
    invite = desk_of(mesh).create(
        caps=CAPS, name="phone", ttl_ms=600_000, require_approval=False, now_ms=NOW
    )
    code = invite.code()
    assert parse_code(code) == invite
    assert len(invite.secret) >= 16
    for bad in ("", "hello", code[:-5], code[:10] + "0" + code[11:], "am1-!!!!"):
        with pytest.raises(InviteError):
            parse_code(bad)


def test_join_gives_the_whole_log_with_a_certificate_for_the_key() -> None:
    mesh = new_mesh()
    desk = desk_of(mesh)
    invite = desk.create(
        caps=CAPS, name="phone", ttl_ms=600_000, require_approval=False, now_ms=NOW
    )
    device = seeded_identity(50)
    reply = ask(desk, invite, device.public_key)
    assert reply.status == JOINED
    membership = fold(mesh.mesh_id, [decode_entry(e) for e in reply.entries])
    assert membership.caps(device.public_key) == CAPS
    assert membership.member(device.public_key).cert.name == "phone"  # type: ignore[union-attr]
    # The same device asking again (it crashed before storing the reply) gets the same answer.
    again = ask(desk, invite, device.public_key)
    assert again.status == JOINED and again.entries == reply.entries
    # Anyone else with the code is refused: single use.
    other = ask(desk, invite, seeded_identity(51).public_key)
    assert (other.status, other.code) == (REFUSED, "invite-used")


def test_wrong_secret_unknown_invite_and_expiry_are_refused_without_state_change() -> None:
    mesh = new_mesh()
    desk = desk_of(mesh)
    invite = desk.create(caps=CAPS, name="p", ttl_ms=600_000, require_approval=False, now_ms=NOW)
    device = seeded_identity(50).public_key
    length = mesh.runtime.replica.membership.length
    wrong = ask(desk, invite, device, secret=b"x" * 16)
    unknown = Invite(
        invite.mesh_id, invite.runtime_key, invite.addresses, b"y" * 16, invite.expires_ms
    )
    nobody = ask(desk, unknown, device)
    assert (
        (wrong.code, wrong.message)
        == (nobody.code, nobody.message)
        == (
            "invalid-invite",
            "unknown or invalid invite",
        )
    )
    assert mesh.runtime.replica.membership.length == length
    late = JoinReply.decode(
        desk.handle(request(invite, device), device, invite.expires_ms).encode()
    )
    assert (late.status, late.code) == (REFUSED, "invite-expired")
    assert mesh.runtime.replica.membership.length == length


def test_a_proof_for_another_key_is_refused() -> None:
    mesh = new_mesh()
    desk = desk_of(mesh)
    invite = desk.create(caps=CAPS, name="p", ttl_ms=600_000, require_approval=False, now_ms=NOW)
    thief, victim = seeded_identity(52).public_key, seeded_identity(53).public_key
    # A proof made for the victim's key does not work over the thief's connection.
    stolen = request(invite, victim)
    reply = desk.handle(stolen, thief, NOW)
    assert reply.code == "invalid-invite"


def test_repeated_wrong_proofs_burn_the_invite() -> None:
    mesh = new_mesh()
    desk = desk_of(mesh)
    invite = desk.create(caps=CAPS, name="p", ttl_ms=600_000, require_approval=False, now_ms=NOW)
    device = seeded_identity(50).public_key
    for _ in range(MAX_INVITE_FAILURES):
        assert ask(desk, invite, device, secret=b"z" * 16).code == "invalid-invite"
    assert ask(desk, invite, device).code == "invite-burned"


def test_approval_flow_with_matching_short_authentication_strings() -> None:
    from mesh.pairing.invite import short_authentication_string

    mesh = new_mesh()
    desk = desk_of(mesh)
    invite = desk.create(caps=CAPS, name="p", ttl_ms=600_000, require_approval=True, now_ms=NOW)
    device = seeded_identity(50).public_key
    first = ask(desk, invite, device)
    assert first.status == PENDING
    assert first.sas == short_authentication_string(invite.secret, invite.runtime_key, device)
    assert desk.waiting()[0]["sas"] == first.sas
    assert ask(desk, invite, seeded_identity(51).public_key).code == "invite-claimed"
    assert ask(desk, invite, device).status == PENDING
    desk.approve(device)
    assert ask(desk, invite, device).status == JOINED
    with pytest.raises(InviteError):
        desk.approve(device)


def test_an_invite_cannot_grant_more_than_its_issuer_holds() -> None:
    mesh = new_mesh()
    with pytest.raises(InviteError):
        desk_of(mesh).create(
            caps=frozenset({"runtime"}), name="x", ttl_ms=1, require_approval=False, now_ms=NOW
        )


def test_a_revoked_key_cannot_join_again() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(50), caps={READ, WRITE, APPROVE})
    mesh.runtime.engine.revoke(issue_revocation(mesh.root, mesh.mesh_id, phone.key, NOW), NOW)
    desk = desk_of(mesh)
    invite = desk.create(caps=CAPS, name="p", ttl_ms=600_000, require_approval=False, now_ms=NOW)
    assert ask(desk, invite, phone.key).code == "key-revoked"


def test_joined_device_syncs_through_the_engine() -> None:
    mesh = new_mesh()
    desk = desk_of(mesh)
    invite = desk.create(caps=CAPS, name="p", ttl_ms=600_000, require_approval=False, now_ms=NOW)
    identity = seeded_identity(54)
    reply = ask(desk, invite, identity.public_key)
    mesh.runtime.replica.store.commit()
    node = mesh.open_device(identity)
    for raw in reply.entries:
        node.replica.add_log_entry(decode_entry(raw))
    assert mesh.connect(node)
    node.write(SHARED, "messages", "hello", {"text": "joined"})
    mesh.settle()
    assert mesh.runtime.read(SHARED, "messages") == {"hello": {"text": "joined"}}


def _restart(mesh: Mesh) -> JoinDesk:
    """The runtime crashes (losing what it had not committed) and starts again."""
    from crdt_state.replica import Replica
    from crdt_state.storage.memory import MemoryStore
    from mesh.engine import RUNTIME_ROLE, Engine

    store = mesh.runtime.replica.store
    assert isinstance(store, MemoryStore)
    store.crash()
    replica = Replica(mesh_id=mesh.mesh_id, store=store, author=mesh.runtime.identity)
    replica.load()
    mesh.runtime.replica = replica
    mesh.runtime.engine = Engine(replica, mesh.runtime.identity, RUNTIME_ROLE)
    return desk_of(mesh)


@pytest.mark.parametrize("crash_before_commit", [True, False])
def test_a_runtime_crash_at_any_step_ends_joined_or_cleanly_retryable(
    crash_before_commit: bool,
) -> None:
    mesh = new_mesh()
    desk = desk_of(mesh)
    invite = desk.create(caps=CAPS, name="p", ttl_ms=600_000, require_approval=True, now_ms=NOW)
    mesh.runtime.replica.store.commit()  # the invite was shown only after this commit
    device = seeded_identity(50).public_key
    assert ask(desk, invite, device).status == PENDING
    if not crash_before_commit:
        mesh.runtime.replica.store.commit()
    desk = _restart(mesh)
    # The device asks again: still waiting (claimed) or waiting again (claim was lost).
    assert ask(desk, invite, device).status == PENDING
    mesh.runtime.replica.store.commit()
    desk.approve(device)
    if not crash_before_commit:
        mesh.runtime.replica.store.commit()
    desk = _restart(mesh)
    if crash_before_commit:  # the approval was lost with the crash: approve again
        assert ask(desk, invite, device).status == PENDING
        desk.approve(device)
        mesh.runtime.replica.store.commit()
    joined = ask(desk, invite, device)
    assert joined.status == JOINED
    if not crash_before_commit:
        mesh.runtime.replica.store.commit()
    desk = _restart(mesh)
    # Whether or not the admission survived, asking again ends joined, never half-joined.
    again = ask(desk, invite, device)
    assert again.status == JOINED
    membership = fold(mesh.mesh_id, [decode_entry(e) for e in again.entries])
    assert membership.is_member(device)
    assert sum(1 for m in membership.members if m == device) == 1
