"""The receive path: integrity of the wire form, replays and forks, and holding.

Every refusal is typed (an ``EnvelopeRejected`` subclass, or ``HoldFull``) and
leaves every document, chain, hold and store exactly as it was; after every
step nothing is pending in any document (``assert_nothing_pending``).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from crdt_state import lib0
from crdt_state.envelope import (
    GENESIS_PREV,
    Context,
    Envelope,
    client_id_of,
    decode_envelope,
    decode_proof,
    is_fork,
    proof_of,
    seal,
)
from crdt_state.errors import (
    BadEnvelopeSignature,
    ClockDiscontinuity,
    EnvelopeRejected,
    ForkDetected,
    HoldFull,
    MalformedEnvelope,
)
from crdt_state.replica import Outcome, Replica
from crdt_state.schema import SHARED, device_doc, new_doc
from crdt_state.storage.memory import MemoryStore
from mesh.identity import Identity
from mesh.membership.log import LogEntry
from mesh.membership.records import READ, issue_certificate
from tests.support import NOW, YEAR_MS, Mesh, Node, new_mesh, seeded_identity

# --- helpers shared with test_hostile.py and tests/mesh/test_engine_forks.py ---------------------


def assert_nothing_pending(replica: Replica) -> None:
    """Every document's Yjs state vector is exactly what its accepted envelopes imply."""
    for name, ydoc in replica.docs.items():
        state = lib0.decode_state_vector(ydoc.get_state())
        assert state == replica.expected_state(name), f"{name}: items pending or missing"
    for doc, _client in replica.chains:
        assert doc in replica.docs, f"{doc}: chain without a document"


def fingerprint(replica: Replica) -> tuple[object, ...]:
    """Everything a refused envelope must leave untouched."""
    docs = {
        name: ydoc.get_update()
        for name, ydoc in replica.docs.items()
        if ydoc.get_state() != b"\x00"
    }
    return (
        docs,
        replica.vectors(),
        replica.store.envelope_count(),
        dict(replica.held),
        replica.held_bytes,
        replica.membership.length,
        dict(replica.owners),
    )


Errors = type[Exception] | tuple[type[Exception], ...]


def refuse(replica: Replica, env: Envelope | bytes, error: Errors) -> Exception:
    """``env`` (or its wire form) is refused with ``error`` and changes nothing."""
    before = fingerprint(replica)
    with pytest.raises(error) as caught:
        decoded = env if isinstance(env, Envelope) else decode_envelope(env)
        replica.receive(decoded, NOW)
    assert fingerprint(replica) == before
    assert_nothing_pending(replica)
    return caught.value


def accept(replica: Replica, env: Envelope, outcome: Outcome = Outcome.ACCEPTED) -> None:
    """``env`` (decoded from its wire form, as the engine does) gets ``outcome``."""
    assert replica.receive(decode_envelope(env.raw), NOW) is outcome
    assert_nothing_pending(replica)


def incarnation_of(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()[:16]


def _put(key: str, value: object, root: str = "messages") -> Callable[[Doc], None]:
    def edit(ydoc: Doc) -> None:
        ydoc.get(root, type=Map)[key] = value

    return edit


class Writer:
    """One author incarnation that signs whatever a test asks, valid or not.

    ``write`` makes a valid envelope (context, seq, prev, clocks all right) and
    advances the writer's chain; ``craft`` signs anything and advances nothing.
    """

    def __init__(self, identity: Identity, mesh: Mesh, tag: str = "w") -> None:
        self.identity = identity
        self.mesh = mesh
        self.incarnation = incarnation_of(f"{identity.peer_id}/{tag}")
        self.client = client_id_of(identity.public_key, self.incarnation)
        self.docs: dict[str, Doc] = {}
        self.heads: dict[str, tuple[int, bytes]] = {}
        self.hlc = NOW << 16

    def ydoc(self, name: str) -> Doc:
        if name not in self.docs:
            self.docs[name] = new_doc(name, self.client)
        return self.docs[name]

    def catch_up(self, source: Replica, name: str = SHARED) -> None:
        """See everything ``source`` has of ``name`` (the writer's causal context grows)."""
        self.ydoc(name).apply_update(source.doc(name).get_update())

    def context(self, name: str) -> Context:
        state = lib0.decode_state_vector(self.ydoc(name).get_state())
        return tuple(sorted((c, k) for c, k in state.items() if k > 0))

    def change(self, name: str, edit: Callable[[Doc], None]) -> tuple[bytes, Context]:
        """Apply ``edit`` to the writer's document; return its update and causal context."""
        ydoc = self.ydoc(name)
        context = self.context(name)
        before = ydoc.get_state()
        with ydoc.transaction():
            edit(ydoc)
        return ydoc.get_update(before), context

    def write(self, name: str, key: str, value: object, root: str = "messages") -> Envelope:
        def edit(ydoc: Doc) -> None:
            ydoc.get(root, type=Map)[key] = value

        update, context = self.change(name, edit)
        return self.seal_next(name, update, context)

    def delete(self, name: str, key: str, root: str = "messages") -> Envelope:
        def edit(ydoc: Doc) -> None:
            del ydoc.get(root, type=Map)[key]

        update, context = self.change(name, edit)
        return self.seal_next(name, update, context)

    def seal_next(self, name: str, update: bytes, context: Context) -> Envelope:
        env = self.craft(name, update, context=context)
        self.heads[name] = (env.seq, env.hash)
        return env

    def craft(
        self,
        name: str,
        update: bytes,
        *,
        context: Context | None = None,
        seq: int | None = None,
        prev: bytes | None = None,
        mship: int | None = None,
        mesh_id: bytes | None = None,
        doc: str | None = None,
    ) -> Envelope:
        head_seq, head_hash = self.heads.get(name, (0, GENESIS_PREV))
        self.hlc += 1
        return seal(
            self.identity,
            mesh_id=self.mesh.mesh_id if mesh_id is None else mesh_id,
            doc=name if doc is None else doc,
            incarnation=self.incarnation,
            seq=head_seq + 1 if seq is None else seq,
            hlc=self.hlc,
            mship=self.mesh.runtime.replica.membership.length if mship is None else mship,
            context=self.context(name) if context is None else context,
            prev=head_hash if prev is None else prev,
            update=update,
        )


@dataclass
class World:
    """A runtime, an honest phone, a hostile member, a read-only device."""

    mesh: Mesh
    phone: Node
    evil: Node
    reader: Node

    @property
    def runtime(self) -> Replica:
        return self.mesh.runtime.replica

    def receivers(self) -> list[Replica]:
        return [self.runtime, self.phone.replica]

    def sync_membership(self) -> None:
        for node in (self.phone, self.evil, self.reader):
            for entry in self.runtime.membership.entries:
                node.replica.add_log_entry(entry)

    def honest_write(self, key: str, value: object = "v") -> Envelope:
        """The phone writes ``shared``; the runtime accepts the envelope."""
        self.phone.write(SHARED, "messages", key, value)
        self.phone.replica.seal_all(NOW)
        (env,) = [e for e in self.phone.replica.take_accepted() if e.doc == SHARED]
        accept(self.runtime, env)
        return env


def make_world() -> World:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10), name="phone")
    evil = mesh.add_device(seeded_identity(30), name="evil")
    reader = mesh.add_device(seeded_identity(20), caps={READ}, name="reader")
    world = World(mesh, phone, evil, reader)
    world.sync_membership()
    return world


@pytest.fixture
def world() -> World:
    return make_world()


# --- 1. the wire form ----------------------------------------------------------------------------


def test_unmodified_envelopes_are_accepted_and_replays_are_duplicates(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    first = writer.write(SHARED, "a", "x")
    second = writer.write(SHARED, "b", {"n": "1"})
    for replica in world.receivers():
        accept(replica, first)
        accept(replica, second)
        before = fingerprint(replica)
        for env in (first, second, first):
            accept(replica, env, Outcome.DUPLICATE)
        assert fingerprint(replica) == before
        assert replica.vector(SHARED)[writer.client] == 2
        assert replica.doc(SHARED).get("messages", type=Map).to_py() == {
            "a": "x",
            "b": {"n": "1"},
        }


def _flip(raw: bytes, bit: int) -> bytes:
    data = bytearray(raw)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def _refuse_flipped(replicas: list[Replica], raw: bytes) -> str:
    """Refuse one flipped wire form on every replica; return the name of the error."""
    try:
        env = decode_envelope(raw)
    except EnvelopeRejected as exc:
        return type(exc).__name__
    names = {type(refuse(replica, env, EnvelopeRejected)).__name__ for replica in replicas}
    return "receive:" + "/".join(sorted(names))


def test_every_single_bit_flip_of_a_small_envelope_is_refused(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    env = writer.write(SHARED, "k", "v")
    replicas = world.receivers()
    counts: dict[str, int] = {}
    for bit in range(len(env.raw) * 8):
        name = _refuse_flipped(replicas, _flip(env.raw, bit))
        counts[name] = counts.get(name, 0) + 1
    assert sum(counts.values()) == len(env.raw) * 8
    assert counts.get(BadEnvelopeSignature.__name__, 0) > 0
    assert counts.get(MalformedEnvelope.__name__, 0) > 0
    # A flip inside the signed body must always fail at the signature or the encoding.
    assert not any(name.startswith("receive:") for name in counts), counts
    for replica in replicas:
        assert replica.vector(SHARED) == {}
        accept(replica, env)  # and the envelope itself still goes in


def test_every_single_bit_flip_of_a_chained_envelope_is_refused(world: World) -> None:
    """The same over an envelope with context, prev and deletes (seq 2 of a chain)."""
    world.honest_write("p", "phone")
    writer = Writer(world.evil.identity, world.mesh)
    writer.catch_up(world.runtime)
    first = writer.write(SHARED, "k", "v")
    second = writer.delete(SHARED, "p")
    replicas = [world.runtime]
    accept(world.runtime, first)
    for bit in range(len(second.raw) * 8):
        _refuse_flipped(replicas, _flip(second.raw, bit))
    assert world.runtime.vector(SHARED)[writer.client] == 1
    accept(world.runtime, second)
    assert "p" not in world.runtime.doc(SHARED).get("messages", type=Map)


def test_random_bit_flips_of_bigger_envelopes_are_refused() -> None:
    world = make_world()
    writer = Writer(world.evil.identity, world.mesh)

    def edit(ydoc: Doc) -> None:
        messages = ydoc.get("messages", type=Map)
        for i in range(60):
            messages[f"m{i:03d}"] = {"text": "hello " * (i % 7), "i": str(i)}

    update, context = writer.change(SHARED, edit)
    big = writer.seal_next(SHARED, update, context)
    replicas = world.receivers()

    @settings(max_examples=400, deadline=None)
    @given(bits=st.lists(st.integers(0, len(big.raw) * 8 - 1), min_size=1, max_size=3, unique=True))
    def check(bits: list[int]) -> None:
        raw = big.raw
        for bit in bits:
            raw = _flip(raw, bit)
        _refuse_flipped(replicas, raw)

    check()
    for replica in replicas:
        assert replica.vector(SHARED) == {}
        accept(replica, big)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_truncated_or_extended_wire_forms_are_refused(data: st.DataObject) -> None:
    world = make_world()
    env = Writer(world.evil.identity, world.mesh).write(SHARED, "k", "v")
    cut = data.draw(st.integers(0, len(env.raw) - 1))
    tail = data.draw(st.binary(min_size=1, max_size=8))
    for raw in (env.raw[:cut], env.raw + tail, tail + env.raw):
        with pytest.raises(MalformedEnvelope):
            decode_envelope(raw)


# --- 2. replays and forks ------------------------------------------------------------------------


def test_a_second_envelope_for_one_slot_is_a_fork_carrying_both_signed_bodies(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    env_a = writer.write(SHARED, "a", "first")
    # The same slot (seq 1, genesis prev, same context) with other content.
    env_b = writer.craft(
        SHARED,
        Writer(world.evil.identity, world.mesh).change(SHARED, _put("a", "second"))[0],
        seq=1,
        prev=GENESIS_PREV,
        context=(),
    )
    assert env_b.hash != env_a.hash and env_b.seq == env_a.seq
    for replica in world.receivers():
        accept(replica, env_a)
        fork = refuse(replica, env_b, ForkDetected)
        assert isinstance(fork, ForkDetected)
        assert (fork.existing, fork.incoming) == (proof_of(env_a), proof_of(env_b))
        # The proof: two validly signed bodies of one (mesh, author, incarnation, doc, seq).
        a, b = decode_proof(fork.existing), decode_proof(fork.incoming)
        assert is_fork(a, b)
        assert (a.author, a.incarnation, a.doc, a.seq) == (b.author, b.incarnation, b.doc, b.seq)
        accept(replica, env_a, Outcome.DUPLICATE)


def test_a_fork_below_the_chain_head_is_detected(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    envs = [writer.write(SHARED, f"k{i}", i) for i in range(3)]
    replica = world.runtime
    for env in envs:
        accept(replica, env)
    other = writer.craft(SHARED, b"\x00\x00", seq=2, prev=envs[0].hash, context=envs[1].context)
    fork = refuse(replica, other, ForkDetected)
    assert isinstance(fork, ForkDetected)
    assert (fork.existing, fork.incoming) == (proof_of(envs[1]), proof_of(other))


# --- 4. holding ----------------------------------------------------------------------------------


def test_an_envelope_before_its_chain_predecessor_is_held_then_applied(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    envs = [writer.write(SHARED, f"k{i}", i) for i in range(5)]
    for replica in world.receivers():
        for env in reversed(envs[1:]):
            accept(replica, env, Outcome.HELD)
            accept(replica, env, Outcome.HELD)  # a held envelope sent again stays held once
        assert len(replica.held) == 4
        assert replica.vector(SHARED) == {}
        accept(replica, envs[0])
        assert replica.held == {} and replica.held_bytes == 0
        assert replica.vector(SHARED) == {writer.client: 5}
        assert len(replica.doc(SHARED).get("messages", type=Map)) == 5
        assert [e.seq for e in replica.take_accepted() if e.client_id == writer.client] == [
            1,
            2,
            3,
            4,
            5,
        ]


def test_an_envelope_before_its_causal_context_is_held_then_applied(world: World) -> None:
    phone_env = world.honest_write("p", "phone")
    laptop = Writer(seeded_identity(30), world.mesh, tag="laptop")
    laptop.catch_up(world.runtime)
    overwrite = laptop.write(SHARED, "p", "laptop")  # its origin is the phone's item
    deletion = laptop.delete(SHARED, "p")
    device = world.reader.replica  # has seen nothing of ``shared`` yet
    accept(device, deletion, Outcome.HELD)
    accept(device, overwrite, Outcome.HELD)
    assert device.vector(SHARED) == {}
    accept(device, phone_env)
    assert device.held == {}
    assert device.vector(SHARED) == {world.phone.replica.client_id: 1, laptop.client: 2}
    assert "p" not in device.doc(SHARED).get("messages", type=Map)


def test_an_envelope_before_its_authors_admission_is_held_then_applied(world: World) -> None:
    device = world.phone.replica
    newcomer = seeded_identity(40)
    cert = issue_certificate(
        world.mesh.root,
        world.mesh.mesh_id,
        newcomer.public_key,
        frozenset({READ, "write"}),
        NOW,
        NOW + YEAR_MS,
        "newcomer",
    )
    entry = world.mesh.runtime.engine.admit(cert, NOW)
    assert device.membership.length == entry.index
    env = Writer(newcomer, world.mesh).write(SHARED, "n", "new")
    assert env.mship == entry.index + 1
    accept(device, env, Outcome.HELD)
    assert device.vector(SHARED) == {}
    assert device.add_log_entry(entry)
    assert device.held == {}
    assert device.vector(SHARED) == {env.client_id: 1}
    assert_nothing_pending(device)
    accept(world.runtime, env)


def test_the_hold_is_bounded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("crdt_state.replica.MAX_HELD_ENVELOPES", 4)
    writer = Writer(world.evil.identity, world.mesh)
    envs = [writer.write(SHARED, f"k{i}", i) for i in range(6)]
    replica = world.runtime
    for env in envs[1:5]:
        accept(replica, env, Outcome.HELD)
    refuse(replica, envs[5], HoldFull)
    accept(replica, envs[1], Outcome.HELD)  # already held: no room needed
    accept(replica, envs[0])
    assert replica.vector(SHARED) == {writer.client: 5}
    accept(replica, envs[5])  # sent again later, it goes in
    assert replica.vector(SHARED) == {writer.client: 6}


def test_early_membership_entries_are_held_and_bounded(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("crdt_state.replica.MAX_HELD_ENVELOPES", 4)
    device = world.phone.replica
    start = device.membership.length
    entries: list[LogEntry] = []
    for i in range(6):
        identity = seeded_identity(50 + i)
        cert = issue_certificate(
            world.mesh.root,
            world.mesh.mesh_id,
            identity.public_key,
            frozenset({READ}),
            NOW,
            NOW + YEAR_MS,
            f"d{i}",
        )
        entries.append(world.mesh.runtime.engine.admit(cert, NOW))
    for entry in entries[1:5]:
        assert device.add_log_entry(entry) is False
    with pytest.raises(HoldFull):
        device.add_log_entry(entries[5])
    assert device.membership.length == start
    assert device.add_log_entry(entries[0])
    assert device.membership.length == start + 5
    assert device.add_log_entry(entries[5])
    assert device.membership.length == start + 6


def test_a_different_envelope_for_a_held_slot_is_a_fork(world: World) -> None:
    """Two signed envelopes for one slot are a fork even while the first waits in the hold."""
    writer = Writer(world.evil.identity, world.mesh)
    writer.write(SHARED, "k0", 0)
    held = writer.write(SHARED, "k1", 1)
    other = writer.craft(SHARED, b"\x00\x00", seq=2, prev=held.prev, context=held.context)
    replica = world.runtime
    accept(replica, held, Outcome.HELD)
    fork = refuse(replica, other, ForkDetected)
    assert isinstance(fork, ForkDetected)
    assert (fork.existing, fork.incoming) == (proof_of(held), proof_of(other))


def test_an_envelope_for_a_held_slot_waiting_on_context_is_a_fork(world: World) -> None:
    """The held twin would otherwise be dropped silently once the other is accepted."""
    phone_env = world.honest_write("p", "phone")
    writer = Writer(world.evil.identity, world.mesh)
    writer.catch_up(world.runtime)
    waiting = writer.write(SHARED, "k", "needs the phone's item")
    ready = writer.craft(SHARED, b"\x00\x00", seq=1, prev=GENESIS_PREV, context=())
    device = world.reader.replica
    accept(device, waiting, Outcome.HELD)
    fork = refuse(device, ready, ForkDetected)
    assert isinstance(fork, ForkDetected)
    assert {fork.existing, fork.incoming} == {proof_of(waiting), proof_of(ready)}
    accept(device, phone_env)
    assert device.vector(SHARED).get(writer.client) == 1  # the held one, never both


class CountingReplica(Replica):
    """A replica that counts how often an envelope is checked (held ones included)."""

    checks = 0

    def _receive(self, env: Envelope, now_ms: int) -> Outcome:
        self.checks += 1
        return super()._receive(env, now_ms)


def test_releasing_a_long_dependency_chain_checks_each_envelope_a_few_times(
    world: World,
) -> None:
    """Found: each step of a release rescanned the whole hold (with a state-vector decode per
    check), so a read-only member with n incarnations, each waiting on the next, made one
    receive cost O(n**3): 400 took 16 s, MAX_HELD_ENVELOPES hours."""
    n = 150
    doc = device_doc(world.reader.peer_id)
    writers = [Writer(world.reader.identity, world.mesh, tag=f"i{k}") for k in range(n)]
    envs = []
    for k, writer in enumerate(writers):
        update, _ = writer.change(doc, _put("ack", str(k), root="acks"))
        context = ((writers[k + 1].client, 1),) if k + 1 < n else ()
        envs.append(writer.craft(doc, update, context=context))
    # And one author's chain delivered backwards, each waiting for its predecessor.
    chain = Writer(world.evil.identity, world.mesh)
    backwards = [chain.write(SHARED, f"k{i}", i) for i in range(n)][::-1]
    replica = CountingReplica(mesh_id=world.mesh.mesh_id, store=MemoryStore())
    for entry in world.runtime.membership.entries:
        replica.add_log_entry(entry)
    for env in [*envs, *backwards]:
        expected = Outcome.ACCEPTED if env in (envs[-1], backwards[-1]) else Outcome.HELD
        assert replica.receive(env, NOW) is expected
    assert replica.held == {}
    assert len(replica.vector(doc)) == n and replica.vector(SHARED) == {chain.client: n}
    assert_nothing_pending(replica)
    total = len(envs) + len(backwards)
    assert total <= replica.checks <= 3 * total  # each checked on arrival, then about once


def test_accepting_unrelated_envelopes_does_not_rescan_the_hold(world: World) -> None:
    """Only what an accepted envelope may unblock is checked again (mutation testing: a
    release that rescanned the whole hold after every acceptance went unnoticed)."""
    n = 60
    waiting = Writer(world.evil.identity, world.mesh)
    held = [waiting.write(SHARED, f"w{i}", i) for i in range(n + 1)][1:]  # seq 1 never sent
    other = Writer(world.phone.identity, world.mesh)
    unrelated = [other.write(SHARED, f"o{i}", i) for i in range(n)]
    replica = CountingReplica(mesh_id=world.mesh.mesh_id, store=MemoryStore())
    for entry in world.runtime.membership.entries:
        replica.add_log_entry(entry)
    for env in held:
        assert replica.receive(env, NOW) is Outcome.HELD
    for env in unrelated:
        assert replica.receive(env, NOW) is Outcome.ACCEPTED
    assert len(replica.held) == n
    assert replica.checks <= 3 * 2 * n  # not n * n


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(9)), dups=st.lists(st.integers(0, 8), max_size=4))
def test_any_arrival_order_converges_to_the_same_documents(
    order: list[int], dups: list[int]
) -> None:
    """Envelopes of three authors with causal dependencies, in any order, with replays."""
    world = make_world()
    writers = [
        Writer(world.evil.identity, world.mesh, tag="a"),
        Writer(world.phone.identity, world.mesh, tag="b"),
        Writer(world.mesh.runtime.identity, world.mesh, tag="c"),
    ]
    reference = world.runtime
    envs: list[Envelope] = []
    for step, writer in zip(range(9), itertools.cycle(writers), strict=False):
        writer.catch_up(reference)
        key = f"k{step % 4}"
        messages = writer.ydoc(SHARED).get("messages", type=Map)
        env = writer.delete(SHARED, key) if key in messages and step % 3 == 2 else None
        env = env or writer.write(SHARED, key, step)
        accept(reference, env)
        envs.append(env)
    device = world.reader.replica
    for index in [*order, *dups]:
        outcome = device.receive(decode_envelope(envs[index].raw), NOW)
        assert outcome in (Outcome.ACCEPTED, Outcome.HELD, Outcome.DUPLICATE)
        assert_nothing_pending(device)
    assert device.held == {}
    assert device.vectors() == reference.vectors()
    assert lib0.decode_state_vector(device.doc(SHARED).get_state()) == lib0.decode_state_vector(
        reference.doc(SHARED).get_state()
    )
    assert (
        device.doc(SHARED).get("messages", type=Map).to_py()
        == reference.doc(SHARED).get("messages", type=Map).to_py()
    )


def test_a_seq_one_with_the_wrong_prev_is_refused(world: World) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    update, context = writer.change(SHARED, _put("k", "v"))
    env = writer.craft(SHARED, update, context=context, prev=bytes(range(32)))
    for replica in world.receivers():
        refuse(replica, env, ClockDiscontinuity)


def test_the_device_doc_of_a_writer_is_its_own(world: World) -> None:
    """Control: a device writes its own device document and every replica accepts."""
    writer = Writer(world.reader.identity, world.mesh)
    env = writer.write(device_doc(world.reader.peer_id), "ack-1", "seen", root="acks")
    for replica in world.receivers():
        accept(replica, env)


def test_the_hold_is_bounded_in_bytes_to_the_byte(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = Writer(world.evil.identity, world.mesh)
    envs = [writer.write(SHARED, f"k{i}", i) for i in range(4)]
    replica = world.runtime
    room = len(envs[1].raw) + len(envs[2].raw)
    monkeypatch.setattr("crdt_state.replica.MAX_HELD_BYTES", room)
    accept(replica, envs[1], Outcome.HELD)
    accept(replica, envs[2], Outcome.HELD)  # exactly full
    assert replica.held_bytes == room
    refuse(replica, envs[3], HoldFull)  # one more byte than room
    accept(replica, envs[0])
    assert replica.held_bytes == 0
    assert replica.vector(SHARED) == {writer.client: 3}


def test_hold_bookkeeping_stays_bounded_over_repeated_release_passes(world: World) -> None:
    """Every pass over the hold (one per log entry) re-indexes what still waits: the wait
    queues must not grow with the passes, and only held slots may be indexed."""
    writer = Writer(world.evil.identity, world.mesh)
    envs = [writer.write(SHARED, f"k{i}", i) for i in range(6)]
    replica = world.runtime
    for env in envs[2:]:
        accept(replica, env, Outcome.HELD)
    for _ in range(20):
        replica._release_held(NOW)  # what a membership-log entry triggers
    queued = sum(len(heap) for heap in replica._waits.values())
    assert queued <= len(replica.held)
    assert set(replica._waiting) <= set(replica.held)
    accept(replica, envs[0])
    accept(replica, envs[1])  # releases the rest, chain by chain
    assert replica.held == {} and replica._waiting == {}
    assert replica.vector(SHARED) == {writer.client: 6}
