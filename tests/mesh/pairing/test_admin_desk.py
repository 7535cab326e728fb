"""The admin protocol on the runtime (sans-IO): who may ask, and what is refused."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import cbor
from mesh.membership.records import (
    ADMIN,
    APPROVE,
    READ,
    RUNTIME,
    WRITE,
    issue_certificate,
    issue_revocation,
)
from mesh.pairing.admin import (
    AdminDesk,
    AdminError,
    AdminReply,
    ApproveJoin,
    ListWaiting,
    OpenInvite,
    SequenceRecord,
    decode_request,
    encode_request,
)
from mesh.pairing.invite import join_proof, parse_code
from mesh.pairing.protocol import JOINED, PENDING, JoinDesk, JoinReply, JoinRequest
from tests.support import NOW, YEAR_MS, Mesh, Node, new_mesh, seeded_identity

ADMIN_CAPS = frozenset({READ, WRITE, APPROVE, ADMIN})


def setup() -> tuple[Mesh, AdminDesk, Node, Node]:
    mesh = new_mesh()
    admin = mesh.add_device(seeded_identity(10), ADMIN_CAPS, name="phone")
    reader = mesh.add_device(seeded_identity(11), {READ}, name="watch")
    desk = JoinDesk(mesh.runtime.engine, mesh.runtime.replica.store, ["/ip4/127.0.0.1/tcp/1"])
    return mesh, AdminDesk(mesh.runtime.engine, desk), admin, reader


def ask(admin_desk: AdminDesk, node: Node, request: object, now: int = NOW + 1) -> AdminReply:
    data = encode_request(request)  # type: ignore[arg-type]
    return AdminReply.decode(admin_desk.handle(data, node.key, now).encode())


def test_requests_round_trip() -> None:
    for request in (
        OpenInvite(frozenset({READ, WRITE}), 600_000, "laptop", True),
        SequenceRecord(b"\x01\x02"),
        ApproveJoin(bytes(32)),
        ListWaiting(),
    ):
        assert decode_request(encode_request(request)) == request


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_request_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(AdminError):
        decode_request(data)


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.integers(-2, 2**65), st.text(max_size=8), st.binary(max_size=40), st.booleans()
        ),
        max_size=7,
    )
)
def test_arrays_of_wrong_shapes_are_refused_with_a_typed_error(items: list[object]) -> None:
    mesh, admin_desk, admin, _ = setup()
    data = cbor.encode(items)
    reply = AdminReply.decode(admin_desk.handle(data, admin.key, NOW + 1).encode())
    assert reply.done or reply.code
    assert mesh.runtime.replica.membership.length == 3 or reply.done


def test_an_admin_device_opens_an_invite_that_a_new_device_uses() -> None:
    mesh, admin_desk, admin, _ = setup()
    reply = ask(admin_desk, admin, OpenInvite(frozenset({READ, WRITE}), 600_000, "laptop", False))
    assert reply.done
    code, expires_ms = reply.result
    assert expires_ms == NOW + 1 + 600_000
    invite = parse_code(code)
    assert invite.runtime_key == mesh.runtime.key
    laptop = seeded_identity(12)
    proof = join_proof(invite.secret, invite.mesh_id, invite.runtime_key, laptop.public_key)
    joined = JoinReply.decode(
        admin_desk.desk.handle(
            JoinRequest(invite.id, proof, "laptop").encode(), laptop.public_key, NOW + 2
        ).encode()
    )
    assert joined.status == JOINED
    member = mesh.runtime.replica.membership.member(laptop.public_key)
    assert member is not None and member.caps == frozenset({READ, WRITE})


def test_an_invite_that_grants_more_than_the_admin_holds_is_refused() -> None:
    _mesh, admin_desk, admin, _ = setup()
    before = admin_desk.desk.invites()
    for caps in ({READ, RUNTIME}, {READ, ADMIN, RUNTIME}):
        reply = ask(admin_desk, admin, OpenInvite(frozenset(caps), 600_000, "", False))
        assert not reply.done and "more than" in reply.message
    assert admin_desk.desk.invites() == before


def test_a_member_without_admin_is_refused_before_its_request_is_read() -> None:
    _mesh, admin_desk, _, reader = setup()
    for data in (encode_request(ListWaiting()), b"\xff garbage"):
        reply = admin_desk.handle(data, reader.key, NOW + 1)
        assert not reply.done and reply.code == "not-admin"
    stranger = seeded_identity(99)
    reply = admin_desk.handle(encode_request(ListWaiting()), stranger.public_key, NOW + 1)
    assert reply.code == "not-admin"


def test_admin_signed_certificates_and_revocations_are_sequenced() -> None:
    mesh, admin_desk, admin, reader = setup()
    newcomer = seeded_identity(13)
    cert = issue_certificate(
        admin.identity, mesh.mesh_id, newcomer.public_key, frozenset({READ}), NOW, NOW + YEAR_MS, ""
    )
    reply = ask(admin_desk, admin, SequenceRecord(cert.raw))
    assert reply.done and reply.result == mesh.runtime.replica.membership.length - 1
    revocation = issue_revocation(admin.identity, mesh.mesh_id, reader.key, NOW + 1)
    assert ask(admin_desk, admin, SequenceRecord(revocation.raw)).done
    member = mesh.runtime.replica.membership.member(reader.key)
    assert member is not None and member.revoked_at is not None


def test_what_an_admin_may_not_do_is_refused_without_a_log_entry() -> None:
    mesh, admin_desk, admin, reader = setup()
    length = mesh.runtime.replica.membership.length
    other_admin = mesh.add_device(seeded_identity(14), ADMIN_CAPS)
    length += 1
    cases = [
        # more than it holds
        issue_certificate(
            admin.identity,
            mesh.mesh_id,
            seeded_identity(15).public_key,
            frozenset({READ, RUNTIME}),
            NOW,
            NOW + YEAR_MS,
            "",
        ).raw,
        # an admin revokes an admin, or the runtime
        issue_revocation(admin.identity, mesh.mesh_id, other_admin.key, NOW).raw,
        issue_revocation(admin.identity, mesh.mesh_id, mesh.runtime.key, NOW).raw,
        # a record someone else signed, passed on
        issue_revocation(mesh.root, mesh.mesh_id, reader.key, NOW).raw,
        b"not a record",
    ]
    for raw in cases:
        reply = ask(admin_desk, admin, SequenceRecord(raw))
        assert not reply.done and reply.message, raw
    assert mesh.runtime.replica.membership.length == length


def test_an_admin_device_approves_a_waiting_join() -> None:
    _mesh, admin_desk, admin, _ = setup()
    code, _ = ask(admin_desk, admin, OpenInvite(frozenset({READ}), 600_000, "tablet", True)).result
    invite = parse_code(code)
    tablet = seeded_identity(16)
    request = JoinRequest(
        invite.id,
        join_proof(invite.secret, invite.mesh_id, invite.runtime_key, tablet.public_key),
        "tablet",
    ).encode()
    assert admin_desk.desk.handle(request, tablet.public_key, NOW + 2).status == PENDING
    waiting = ask(admin_desk, admin, ListWaiting()).result
    assert [w[0] for w in waiting] == [tablet.public_key]
    assert ask(admin_desk, admin, ApproveJoin(tablet.public_key)).done
    assert admin_desk.desk.handle(request, tablet.public_key, NOW + 3).status == JOINED
    assert not ask(admin_desk, admin, ApproveJoin(tablet.public_key)).done


def test_a_revoked_admin_is_refused() -> None:
    mesh, admin_desk, admin, _ = setup()
    mesh.runtime.engine.revoke(issue_revocation(mesh.root, mesh.mesh_id, admin.key, NOW), NOW)
    reply = ask(admin_desk, admin, ListWaiting())
    assert reply.code == "not-admin"
