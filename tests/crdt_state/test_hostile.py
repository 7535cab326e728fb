"""Validly signed envelopes whose *content* is wrong, from a hostile member.

Every envelope here is signed with the hostile member's own key, with the
right seq, prev and causal context unless the test says otherwise, so only the
part under test is wrong. Each must be refused with its typed error, change
nothing, and leave nothing pending.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from crdt_state import lib0
from crdt_state.envelope import ENVELOPE_DOMAIN, GENESIS_PREV, Envelope, decode_envelope
from crdt_state.errors import (
    ClientIdClash,
    ClockDiscontinuity,
    ContentViolation,
    CutOff,
    EnvelopeRejected,
    ForeignClient,
    MalformedEnvelope,
    NotPermitted,
    OutsideContext,
    UpdateDecodeError,
)
from crdt_state.replica import Outcome, Replica
from crdt_state.schema import AGENT, SHARED, device_doc
from crdt_state.storage.memory import MemoryStore
from crdt_state.yupdate import decode_update
from mesh import cbor
from mesh.errors import NotAuthorized
from mesh.identity import mesh_id_of
from mesh.membership.records import READ, issue_certificate, issue_revocation
from tests.crdt_state.test_receive import (
    Errors,
    World,
    Writer,
    accept,
    assert_nothing_pending,
    fingerprint,
    make_world,
    refuse,
)
from tests.support import NOW, YEAR_MS, seeded_identity

# --- a Yjs v1 update writer, for updates pycrdt would never produce ------------------------------


def vu(value: int) -> bytes:
    out = bytearray()
    lib0.write_varuint(out, value)
    return bytes(out)


def vs(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return vu(len(data)) + data


_CONTENT_REFS = {"deleted": 1, "binary": 3, "string": 4, "format": 6, "type": 7, "any": 8}


def item(
    kind: str,
    payload: object,
    *,
    origin: tuple[int, int] | None = None,
    right: tuple[int, int] | None = None,
    root: str | None = None,
    parent: tuple[int, int] | None = None,
    key: str | None = None,
) -> bytes:
    """One struct: ``kind`` content with an origin, right origin, or a parent (root or id)."""
    info = _CONTENT_REFS[kind]
    out = bytearray()
    if origin is not None:
        info |= 0x80
    if right is not None:
        info |= 0x40
    explicit_parent = origin is None and right is None
    if explicit_parent and key is not None:
        info |= 0x20
    out.append(info)
    for ref in (origin, right):
        if ref is not None:
            out += vu(ref[0]) + vu(ref[1])
    if explicit_parent:
        if root is not None:
            out += b"\x01" + vs(root)
        else:
            assert parent is not None
            out += b"\x00" + vu(parent[0]) + vu(parent[1])
        if key is not None:
            out += vs(key)
    if kind == "any":
        assert isinstance(payload, list)
        out += vu(len(payload)) + b"".join(b"\x77" + vs(str(v)) for v in payload)
    elif kind in ("string", "binary"):
        assert isinstance(payload, str | bytes)
        out += vs(payload)
    elif kind == "format":
        out += vs("bold") + vs("true")
    else:
        assert isinstance(payload, int)
        out += vu(payload)
    return bytes(out)


def skip(length: int) -> bytes:
    return b"\x0a" + vu(length)


def gc(length: int) -> bytes:
    return b"\x00" + vu(length)


def update(
    groups: Sequence[tuple[int, int, list[bytes]]], deletes: Sequence[tuple[int, int, int]] = ()
) -> bytes:
    out = bytearray(vu(len(groups)))
    for client, clock, structs in groups:
        out += vu(len(structs)) + vu(client) + vu(clock) + b"".join(structs)
    by_client: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in deletes:
        by_client.setdefault(client, []).append((clock, length))
    out += lib0.encode_delete_set(by_client)
    return bytes(out)


def put(writer_or_client: Writer | int, clock: int, key: str, value: str = "x") -> bytes:
    """An update inserting ``key`` into ``messages`` as a client at a clock (no origin)."""
    client = writer_or_client if isinstance(writer_or_client, int) else writer_or_client.client
    return update([(client, clock, [item("any", [value], root="messages", key=key)])])


def as_client(client: int, base: bytes | None, key: str) -> bytes:
    """What pycrdt writes as ``client`` (on top of ``base``) when it sets ``key``."""
    ydoc = Doc(client_id=client)
    if base is not None:
        ydoc.apply_update(base)
    before = ydoc.get_state()
    ydoc.get("messages", type=Map)[key] = {"evil": True}
    return ydoc.get_update(before)


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def seeded(world: World) -> World:
    """The world, after the phone wrote two keys to ``shared`` (both receivers have them)."""
    for key in ("p1", "p2"):
        env = world.honest_write(key, key)
        accept(world.phone.replica, env, Outcome.DUPLICATE)
    return world


def refuse_everywhere(world: World, env: Envelope, error: Errors) -> None:
    for replica in world.receivers():
        refuse(replica, env, error)


# --- items under another client id ---------------------------------------------------------------


def test_items_under_the_victims_client_id_are_refused(seeded: World) -> None:
    victim = seeded.phone.replica.client_id
    writer = Writer(seeded.evil.identity, seeded.mesh)
    writer.catch_up(seeded.runtime)
    base = seeded.runtime.doc(SHARED).get_update()
    for update_bytes in (
        as_client(victim, None, "forged-from-zero"),  # overlaps the victim's clocks
        as_client(victim, base, "forged-next"),  # continues exactly where the victim is
        as_client(seeded.mesh.runtime.replica.client_id, base, "forged-runtime"),
        as_client(123_456_789, None, "nobody"),  # a client id no one owns
    ):
        env = writer.craft(SHARED, update_bytes)
        refuse_everywhere(seeded, env, ForeignClient)
    assert seeded.runtime.vector(SHARED) == {victim: 2}


def test_an_update_mixing_own_and_foreign_groups_is_refused(seeded: World) -> None:
    writer = Writer(seeded.evil.identity, seeded.mesh)
    victim = seeded.phone.replica.client_id
    mixed = update(
        [
            (writer.client, 0, [item("any", ["mine"], root="messages", key="m")]),
            (victim, 2, [item("any", ["theirs"], root="messages", key="t")]),
        ]
    )
    refuse_everywhere(seeded, writer.craft(SHARED, mixed, context=((victim, 2),)), ForeignClient)


def test_a_client_id_bound_to_another_incarnation_is_a_clash(world: World) -> None:
    """Envelopes reach a replica already bound to the client id by another author (a collision)."""
    writer = Writer(world.evil.identity, world.mesh)
    env = writer.write(SHARED, "k", "v")
    replica = world.runtime
    replica.owners[env.client_id] = (world.phone.key, bytes(16))
    refuse(replica, env, ClientIdClash)


# --- clocks that skip or overlap -----------------------------------------------------------------


def test_clocks_must_continue_exactly_where_the_chain_ended(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    first = writer.write(SHARED, "a", "1")  # clocks 0..0
    for replica in world.receivers():
        accept(replica, first)
    own = ((writer.client, 1),)
    cases = {
        "skips ahead": put(writer, 3, "b"),
        "overlaps": put(writer, 0, "b"),
        "starts one early": update(
            [(writer.client, 0, [item("any", ["a", "b"], root="messages", key="b")])]
        ),
        "has a skip struct": update(
            [(writer.client, 1, [skip(2), item("any", ["b"], root="messages", key="b")])]
        ),
    }
    for name, update_bytes in cases.items():
        env = writer.craft(SHARED, update_bytes, context=own)
        for replica in world.receivers():
            assert refuse(replica, env, ClockDiscontinuity), name
    # The context must say where the author's own chain ended.
    for context in ((), ((writer.client, 2),)):
        env = writer.craft(SHARED, put(writer, 1, "b"), context=context)
        refuse_everywhere(world, env, ClockDiscontinuity)
    # Control: the right clock and context go in.
    accept(world.runtime, writer.craft(SHARED, put(writer, 1, "b"), context=own))


def test_a_first_envelope_must_start_at_clock_zero(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    refuse_everywhere(
        world, writer.craft(SHARED, put(writer, 5, "k"), context=()), ClockDiscontinuity
    )


def test_a_wrong_prev_hash_is_refused(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    first = writer.write(SHARED, "a", "1")
    accept(world.runtime, first)
    update_bytes, context = writer.change(
        SHARED, lambda d: d.get("messages", type=Map).update({"b": "2"})
    )
    for prev in (GENESIS_PREV, bytes(32 * [7]), first.prev):
        refuse(
            world.runtime,
            writer.craft(SHARED, update_bytes, context=context, prev=prev),
            ClockDiscontinuity,
        )


# --- deletes and references outside the causal context -------------------------------------------


def test_deleting_items_outside_the_context_is_refused(seeded: World) -> None:
    victim = seeded.phone.replica.client_id
    writer = Writer(seeded.evil.identity, seeded.mesh)
    writer.catch_up(seeded.runtime)
    deletion, context = writer.change(SHARED, lambda d: d.get("messages", type=Map).pop("p2"))
    assert context == ((victim, 2),)
    for narrower in ((), ((victim, 1),)):  # p2 is the phone's clock 1
        refuse_everywhere(seeded, writer.craft(SHARED, deletion, context=narrower), OutsideContext)
    for bare in ((victim, 0, 3), (victim, 5, 1), (victim + 1, 0, 1)):
        crafted = update([], [bare])
        refuse_everywhere(seeded, writer.craft(SHARED, crafted, context=context), OutsideContext)
    # Deleting the author's own items beyond what this update inserts.
    crafted = update(
        [(writer.client, 0, [item("any", ["x"], root="messages", key="z")])],
        [(writer.client, 0, 2)],
    )
    refuse_everywhere(seeded, writer.craft(SHARED, crafted, context=context), OutsideContext)
    # Control: inside the context the delete goes in and ``p1`` is gone everywhere.
    env = writer.seal_next(SHARED, deletion, context)
    for replica in seeded.receivers():
        accept(replica, env)
        assert "p2" not in replica.doc(SHARED).get("messages", type=Map)


def test_references_outside_the_context_are_refused(seeded: World) -> None:
    victim = seeded.phone.replica.client_id
    writer = Writer(seeded.evil.identity, seeded.mesh)
    writer.catch_up(seeded.runtime)
    overwrite, context = writer.change(
        SHARED, lambda d: d.get("messages", type=Map).update({"p2": "mine"})
    )
    assert decode_update(overwrite).ref_ends == {victim: 2}  # its origin is the phone's p2
    refuse_everywhere(
        seeded, writer.craft(SHARED, overwrite, context=((victim, 1),)), OutsideContext
    )
    refuse_everywhere(seeded, writer.craft(SHARED, overwrite, context=()), OutsideContext)
    me = writer.client
    crafted = {
        "origin": [item("any", ["x"], origin=(victim, 1))],
        "right origin": [item("any", ["x"], right=(victim, 1))],
        "parent": [item("any", ["x"], parent=(victim, 1), key="q")],
        "origin beyond the victim": [item("any", ["x"], origin=(victim, 7))],
        "own item not yet written": [item("any", ["x"], origin=(me, 1))],
        "itself": [item("any", ["x"], origin=(me, 0))],
        "unknown client": [item("any", ["x"], right=(victim + 1, 0))],
    }
    for name, structs in crafted.items():
        env = writer.craft(SHARED, update([(me, 0, structs)]), context=((victim, 1),))
        for replica in seeded.receivers():
            # A parent by id is outside the flat schema: refused before the context check.
            expected = MalformedEnvelope if name == "parent" else OutsideContext
            assert refuse(replica, env, expected), name
    accept(seeded.runtime, writer.seal_next(SHARED, overwrite, context))


#: How content outside the flat schema (parents by id, nested types, unknown roots) is refused:
#: by the decoder's schema mode (MalformedEnvelope) or a replica content check.
OUTSIDE_SCHEMA = (MalformedEnvelope, ContentViolation)


def test_a_parent_that_is_not_a_type_is_refused(seeded: World) -> None:
    """yrs refuses such an item only after integrating the structs before it: a partial apply.

    Inside the context, a parent by id naming a plain value (the phone's item, or the
    author's own earlier item) must be refused before anything is applied. (Found: it
    escaped ``Engine.receive`` as InvariantViolation after the envelope was stored.)
    """
    victim = seeded.phone.replica.client_id
    writer = Writer(seeded.evil.identity, seeded.mesh)
    first = writer.write(SHARED, "mine", "v")
    for replica in seeded.receivers():
        accept(replica, first)
    me = writer.client
    context = ((victim, 2), (me, 1))
    for parent in ((victim, 0), (victim, 1), (me, 0)):
        structs = [
            item("any", ["ok"], root="messages", key="fine"),
            item("any", ["x"], parent=parent, key="q"),
        ]
        env = writer.craft(SHARED, update([(me, 1, structs)]), context=context)
        refuse_everywhere(seeded, env, OUTSIDE_SCHEMA)
    # Within one update too (the decoder sees the parent's content itself).
    structs = [
        item("any", ["a"], root="messages", key="a"),
        item("any", ["b"], parent=(me, 1), key="b"),
    ]
    env = writer.craft(SHARED, update([(me, 1, structs)]), context=context)
    refuse_everywhere(seeded, env, EnvelopeRejected)


def test_a_read_only_device_cannot_break_its_own_device_document(world: World) -> None:
    """A read-only member may still write its device doc: the same content checks apply there."""
    reader = Writer(world.reader.identity, world.mesh)
    doc = device_doc(world.reader.peer_id)
    first = reader.write(doc, "ack-1", "seen", root="acks")
    for replica in world.receivers():
        accept(replica, first)
    structs = [item("any", ["x"], parent=(reader.client, 0), key="q")]
    env = reader.craft(doc, update([(reader.client, 1, structs)]), context=((reader.client, 1),))
    refuse_everywhere(world, env, OUTSIDE_SCHEMA)
    # And the replica keeps working: the next valid envelope goes in.
    second = reader.write(doc, "ack-2", "seen", root="acks")
    for replica in world.receivers():
        accept(replica, second)


@pytest.mark.parametrize(
    "struct",
    [
        pytest.param(item("any", ["x"], root="evil", key="k"), id="a root outside the schema"),
        pytest.param(item("type", 1, root="messages", key="k"), id="a nested map"),
        pytest.param(item("type", 2, root="messages", key="k"), id="a nested text"),
        pytest.param(
            b"\x29\x01" + vs("messages") + vs("k") + vs("guid") + b"\x76\x00", id="a subdocument"
        ),
    ],
)
def test_content_outside_the_flat_schema_is_refused(world: World, struct: bytes) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    env = writer.craft(SHARED, update([(writer.client, 0, [struct])]), context=())
    refuse_everywhere(world, env, OUTSIDE_SCHEMA)


# --- huge declared lengths -----------------------------------------------------------------------


def _any_item(writer: Writer) -> bytes:
    return put(writer, 0, "z")


HUGE: dict[str, Callable[[Writer], bytes]] = {
    "Any count beyond the data": lambda w: _any_item(w).replace(
        b"\x01\x77\x01x", b"\x80\x80\x80\x80\x08\x77\x01x"
    ),
    "string length beyond the data": lambda w: update(
        [(w.client, 0, [item("string", "abc", root="messages", key="z")])]
    ).replace(b"\x03abc", b"\xff\xff\xff\xff\x0fabc"),
    "binary length beyond the data": lambda w: update(
        [(w.client, 0, [item("binary", b"abc", root="messages", key="z")])]
    ).replace(b"\x03abc", b"\xff\xff\xff\x7fabc"),
    "key length beyond the data": lambda w: _any_item(w).replace(b"\x01z", b"\xff\xff\xff\x7fz"),
    "group count": lambda w: b"\x80\x80\x40" + _any_item(w)[1:],
    "struct count": lambda w: _any_item(w).replace(b"\x01\x01", b"\x01\xff\xff\x03", 1),
    "delete-set count": lambda w: _any_item(w)[:-1] + b"\xff\xff\x03",
    "delete range count": lambda w: update([], [(w.client, 0, 1)])[:-3] + b"\xff\xff\x7f\x00\x01",
    "deleted run past 2**32": lambda w: update(
        [(w.client, 0, [item("deleted", 1 << 32, root="messages", key="z")])]
    ),
    "clocks past 2**32": lambda w: update(
        [
            (
                w.client,
                0,
                [
                    item("deleted", (1 << 32) - 1, root="messages", key="z"),
                    item("any", ["x"], root="messages", key="y"),
                ],
            )
        ]
    ),
    "clock past 2**32": lambda w: update(
        [(w.client, 1 << 33, [item("any", ["x"], root="messages", key="z")])]
    ),
    "client id past 2**53": lambda w: update(
        [(1 << 60, 0, [item("any", ["x"], root="messages", key="z")])]
    ),
    "a 10-byte varuint": lambda w: _any_item(w).replace(
        b"\x01\x77\x01x", b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x00\x77\x01x"
    ),
}


@pytest.mark.parametrize("name", sorted(HUGE))
def test_a_huge_declared_length_is_refused(world: World, name: str) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    update_bytes = HUGE[name](writer)
    with pytest.raises(UpdateDecodeError):
        decode_update(update_bytes)
    refuse_everywhere(world, writer.craft(SHARED, update_bytes, context=()), MalformedEnvelope)


def test_a_run_up_to_the_last_clock_is_harmless(world: World) -> None:
    """A deleted run of 2**32 - 1 clocks only exhausts the author's own clock space."""
    writer = Writer(world.evil.identity, world.mesh)
    run = update([(writer.client, 0, [item("deleted", (1 << 32) - 1, root="messages", key="z")])])
    env = writer.seal_next(SHARED, run, ())
    for replica in world.receivers():
        accept(replica, env)
        assert replica.expected_state(SHARED) == {writer.client: (1 << 32) - 1}
    after = update([(writer.client, (1 << 32) - 1, [item("any", ["x"], root="messages", key="y")])])
    refuse_everywhere(
        world,
        writer.craft(SHARED, after, context=((writer.client, (1 << 32) - 1),)),
        MalformedEnvelope,
    )


# --- documents the author may not write ----------------------------------------------------------


def test_writes_outside_the_authors_permissions_are_refused(world: World) -> None:
    cases = [
        (world.reader.identity, SHARED, "a read-only device writing shared"),
        (world.evil.identity, AGENT, "a device writing agent"),
        (world.evil.identity, device_doc(world.phone.peer_id), "a device writing another's doc"),
        (
            world.mesh.runtime.identity,
            device_doc(world.phone.peer_id),
            "the runtime writing a device doc",
        ),
        (seeded_identity(99), SHARED, "a stranger"),
        (world.mesh.root, SHARED, "the root key, never admitted as a member"),
    ]
    for identity, doc, what in cases:
        writer = Writer(identity, world.mesh)
        env = writer.craft(doc, put(writer, 0, "k"), context=())
        for replica in world.receivers():
            assert refuse(replica, env, NotPermitted), what


def test_a_position_before_the_authors_admission_is_refused(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    admitted_at = world.runtime.membership.member(world.evil.key)
    assert admitted_at is not None
    index = admitted_at.certs[0][0]
    for mship in (0, index):
        env = writer.craft(SHARED, put(writer, 0, "k"), context=(), mship=mship)
        refuse_everywhere(world, env, NotPermitted)
    accept(world.runtime, writer.craft(SHARED, put(writer, 0, "k"), context=(), mship=index + 1))


def test_capabilities_cannot_be_kept_by_claiming_an_old_position(world: World) -> None:
    """Capabilities are judged at the position the author claims (``mship``), so a member
    re-certified with fewer of them would keep the old ones by claiming an old position:
    the log refuses such a certificate, and only a revocation (with cutoffs) takes any away."""
    cert = issue_certificate(
        world.mesh.root, world.mesh.mesh_id, world.evil.key, frozenset({READ}), NOW, NOW + YEAR_MS
    )
    length = world.runtime.membership.length
    with pytest.raises(NotAuthorized):
        world.mesh.runtime.engine.admit(cert, NOW)
    assert world.runtime.membership.length == length
    writer = Writer(world.evil.identity, world.mesh)
    accept(world.runtime, writer.write(SHARED, "k", "still a writer"))


@pytest.mark.parametrize(
    "name", ["evil", "", "Shared", "device/", "device/not-a-peer-id", "device/../shared", "agent/x"]
)
def test_an_unknown_document_is_refused(world: World, name: str) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    env = writer.craft(SHARED, put(writer, 0, "k"), context=(), doc=name)
    refuse_everywhere(world, env, NotPermitted)
    assert name not in world.runtime.docs


def test_an_envelope_for_another_mesh_is_refused(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    other = mesh_id_of(seeded_identity(77).public_key)
    refuse_everywhere(
        world,
        writer.craft(SHARED, put(writer, 0, "k"), context=(), mesh_id=other),
        MalformedEnvelope,
    )


# --- revoked authors -----------------------------------------------------------------------------


def test_a_revoked_author_is_cut_off_after_its_cutoff(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    kept = writer.write(SHARED, "before", "1")
    late = writer.write(SHARED, "after", "2")
    accept(world.runtime, kept)
    revocation = issue_revocation(world.mesh.root, world.mesh.mesh_id, world.evil.key, NOW)
    entry = world.mesh.runtime.engine.revoke(revocation, NOW)
    assert [(c.doc, c.seq) for c in entry.cutoffs] == [(SHARED, 1)]
    refuse(world.runtime, late, CutOff)
    # A device that learns of the revocation later still takes what came before the cutoff.
    device = world.phone.replica
    accept(device, late, Outcome.HELD)  # waits for its predecessor
    assert device.add_log_entry(entry)
    assert device.held == {}  # the held one was dropped by the cutoff
    accept(device, kept)
    refuse(device, late, CutOff)
    # A new incarnation of a revoked author, and documents it never wrote, are cut off at 0.
    fresh = Writer(world.evil.identity, world.mesh, tag="after-revocation")
    for replica in world.receivers():
        refuse(replica, fresh.craft(SHARED, put(fresh, 0, "k"), context=()), CutOff)
        doc = device_doc(world.evil.peer_id)
        refuse(
            replica,
            writer.craft(
                doc,
                put(
                    writer,
                    0,
                    "k",
                ),
                context=(),
                doc=doc,
            ),
            CutOff,
        )
    assert world.runtime.vector(SHARED) == {writer.client: 1}


# --- malformed updates ---------------------------------------------------------------------------


def test_every_truncation_of_an_update_is_refused(seeded: World) -> None:
    writer = Writer(seeded.evil.identity, seeded.mesh)
    writer.catch_up(seeded.runtime)

    def edit(ydoc: Doc) -> None:
        messages = ydoc.get("messages", type=Map)
        messages["p1"] = {"text": "héllo ✓", "n": "1"}
        messages["new"] = [1, 2.5, None, True, "x"]
        del messages["p2"]

    full, context = writer.change(SHARED, edit)
    for cut in range(len(full)):
        env = writer.craft(SHARED, full[:cut], context=context)
        refuse_everywhere(seeded, env, MalformedEnvelope)
    accept(seeded.runtime, writer.seal_next(SHARED, full, context))


def _receive_anything(replica: Replica, env: Envelope) -> str:
    """Receive a crafted envelope: refused and unchanged, or accepted with nothing pending."""
    before = fingerprint(replica)
    try:
        outcome = replica.receive(decode_envelope(env.raw), NOW)
    except EnvelopeRejected as exc:
        assert fingerprint(replica) == before
        assert_nothing_pending(replica)
        return type(exc).__name__
    assert outcome is Outcome.ACCEPTED
    assert_nothing_pending(replica)
    return outcome.value


def fresh_receiver(world: World) -> Replica:
    """A new replica holding the runtime's membership log and envelopes."""
    replica = Replica(mesh_id=world.mesh.mesh_id, store=MemoryStore())
    for entry in world.runtime.membership.entries:
        replica.add_log_entry(entry)
    for row in world.runtime.store.envelopes():
        accept(replica, decode_envelope(row.raw))
    return replica


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(max_size=64))
def test_garbage_updates_are_refused(garbage: bytes) -> None:
    world = make_world()
    writer = Writer(world.evil.identity, world.mesh)
    env = writer.craft(SHARED, garbage, context=())
    try:
        decode_update(garbage)
    except UpdateDecodeError:
        refuse_everywhere(world, env, MalformedEnvelope)
    else:
        for replica in world.receivers():
            _receive_anything(replica, env)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["set", "insert", "delete"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            del data[at : at + draw(st.integers(1, 3))]
    return bytes(data)


def test_mutated_updates_are_refused_or_applied_whole() -> None:
    """Byte mutations of a real update, re-signed by its author with a right chain and context.

    Whatever our decoder accepts must apply in pycrdt without an error and leave
    nothing pending; everything else is refused with a typed error and changes nothing.
    """
    world = make_world()
    for key in ("p1", "p2", "p3"):
        world.honest_write(key, {"k": key})
    writer = Writer(world.evil.identity, world.mesh)
    writer.catch_up(world.runtime)
    accept(world.runtime, writer.write(SHARED, "mine", "1"))

    def edit(ydoc: Doc) -> None:
        messages = ydoc.get("messages", type=Map)
        messages["p1"] = "over"
        messages["mine"] = {"again": [1, "two"]}
        messages["n"] = b"bytes"
        del messages["p2"]

    base, context = writer.change(SHARED, edit)
    seen: dict[str, int] = {}

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(update_bytes=mutated(base))
    def check(update_bytes: bytes) -> None:
        env = writer.craft(SHARED, update_bytes, context=context)
        result = _receive_anything(fresh_receiver(world), env)
        seen[result] = seen.get(result, 0) + 1

    check()
    assert seen.get(MalformedEnvelope.__name__, 0) > 0
    accept(fresh_receiver(world), writer.craft(SHARED, base, context=context))


def test_crafted_structs_are_refused_or_applied_whole() -> None:
    """Random structs (contents, origins, parents, deletes) against a seeded document."""
    world = make_world()
    for key in ("p1", "p2", "p3"):
        world.honest_write(key, key)
    victim = world.phone.replica.client_id
    writer = Writer(world.evil.identity, world.mesh)
    me = writer.client
    ids = st.tuples(st.sampled_from([victim, victim, me, victim + 1]), st.integers(0, 3))
    payloads: dict[str, object] = {
        "any": ["a", "bc"],
        "string": "hé",
        "deleted": 2,
        "binary": b"zz",
        "type": 1,
    }
    seen: dict[str, int] = {}

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        structs: list[bytes] = []
        for _ in range(data.draw(st.integers(1, 4))):
            if data.draw(st.integers(0, 9)) == 0:
                structs.append(gc(data.draw(st.integers(1, 3))))
                continue
            kind = data.draw(st.sampled_from(sorted(payloads)))
            payload = payloads[kind]
            where = data.draw(st.sampled_from(["root", "origin", "right", "both", "parent"]))
            if where == "root":
                key = data.draw(st.sampled_from(["p1", "z"]))
                struct = item(kind, payload, root="messages", key=key)
            elif where == "origin":
                struct = item(kind, payload, origin=data.draw(ids))
            elif where == "right":
                struct = item(kind, payload, right=data.draw(ids))
            elif where == "both":
                struct = item(kind, payload, origin=data.draw(ids), right=data.draw(ids))
            else:
                struct = item(kind, payload, parent=data.draw(ids), key="q")
            structs.append(struct)
        deletes = data.draw(
            st.lists(
                st.tuples(st.sampled_from([victim, me]), st.integers(0, 4), st.integers(1, 3)),
                max_size=2,
                unique_by=lambda d: d[0],
            )
        )
        context = data.draw(st.sampled_from([((victim, 3),), ((victim, 1),), ()]))
        env = writer.craft(SHARED, update([(me, 0, structs)], deletes), context=context)
        result = _receive_anything(fresh_receiver(world), env)
        seen[result] = seen.get(result, 0) + 1

    check()
    for outcome in (Outcome.ACCEPTED.value, OutsideContext.__name__, MalformedEnvelope.__name__):
        assert seen.get(outcome, 0) > 0, seen


# --- non-canonical encodings, re-signed by the author --------------------------------------------


def _signed(world: World, body: bytes) -> bytes:
    return world.evil.identity.sign(ENVELOPE_DOMAIN + body)


def _wire(env: Envelope, body: bytes, signature: bytes) -> list[bytes]:
    """The items of ``env``'s outer array, with its body and signature replaced."""
    items = cbor.decode(env.raw)
    assert isinstance(items, list)
    return [body if x == env.body else signature if x == env.signature else x for x in items]


def _long(item: bytes) -> bytes:
    """A byte string with a 4-byte length header: never canonical below 64 KiB."""
    return b"\x5a" + len(item).to_bytes(4, "big") + item


def test_non_canonical_cbor_signed_by_the_author_is_refused(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    env = writer.write(SHARED, "k", "v")
    fields = cbor.decode(env.body)
    canonical = cbor.encode(fields)
    assert canonical == env.body and canonical[:2] == b"\x8b\x01"  # array(11), version 1
    seq_at = 1 + sum(len(cbor.encode(value)) for value in fields[:5])
    assert canonical[seq_at] == 0x01  # seq 1
    variants = {
        "seq as a 2-byte integer": canonical[:seq_at] + b"\x19\x00\x01" + canonical[seq_at + 1 :],
        "seq as a float": canonical[:seq_at] + b"\xf9\x3c\x00" + canonical[seq_at + 1 :],
        "indefinite-length body": b"\x9f" + canonical[1:] + b"\xff",
        "version as a 1-byte integer": b"\x8b\x18\x01" + canonical[2:],
        "body wrapped in a tag": b"\xd8\x18" + canonical,
        "trailing byte": canonical + b"\x00",
    }
    for name, variant in variants.items():
        raw = cbor.encode(_wire(env, variant, _signed(world, variant)))
        for replica in world.receivers():
            assert refuse(replica, raw, MalformedEnvelope), name
    # Canonical, validly signed items inside a non-canonical outer array.
    items = _wire(env, canonical, _signed(world, canonical))
    encoded = [cbor.encode(item) for item in items]
    head = cbor.encode(items)[:1]  # array(n)
    outers = [b"\x9f" + b"".join(encoded) + b"\xff", cbor.encode(items) + b"\x00"]
    for index, item in enumerate(items):
        longer = [*encoded]
        longer[index] = _long(item)
        outers.append(head + b"".join(longer))
        chunked = [*encoded]
        chunked[index] = b"\x5f" + cbor.encode(item) + b"\xff"  # indefinite-length bytes
        outers.append(head + b"".join(chunked))
    for raw in outers:
        for replica in world.receivers():
            refuse(replica, raw, MalformedEnvelope)
    # Control: the canonical form, re-signed, is accepted.
    accept(world.runtime, decode_envelope(cbor.encode(items)))


# --- values no reader can read -------------------------------------------------------------------


def test_values_that_break_readers_are_refused(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    poison = update([(writer.client, 0, [item("format", 0, root="messages", key="f")])])
    env = writer.craft(SHARED, poison, context=())
    with contextlib.suppress(EnvelopeRejected):
        world.runtime.receive(env, NOW)
    world.runtime.doc(SHARED).get("messages", type=Map).to_py()  # every reader does this


def test_nothing_forbidden_reaches_any_document(seeded: World) -> None:
    """After all the above kinds of refusal, the honest content is intact and readable."""
    writer = Writer(seeded.evil.identity, seeded.mesh)
    victim = seeded.phone.replica.client_id
    for update_bytes, context in (
        (as_client(victim, None, "x"), ()),
        (update([], [(victim, 0, 2)]), ()),
        (put(writer, 4, "y"), ()),
    ):
        env = writer.craft(SHARED, update_bytes, context=context)
        for replica in seeded.receivers():
            with pytest.raises(EnvelopeRejected):
                replica.receive(env, NOW)
    for replica in seeded.receivers():
        assert replica.doc(SHARED).get("messages", type=Map).to_py() == {"p1": "p1", "p2": "p2"}
        assert_nothing_pending(replica)
