"""Convergence with hostile replicas, by a hypothesis stateful test.

A runtime hub, honest devices (one read-only) and a hostile member. Honest
nodes write to every document they may write; the hostile member writes where
it may not, forges client ids, deletes outside its causal context, replays and
forks. Frames are delivered in random interleavings, dropped (which breaks the
session, as on a real stream), duplicated and reordered; links go down and up;
devices crash and restart. Invariants: nothing pending in any document, no
forbidden change anywhere; after healing: identical documents and vectors.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pycrdt import Doc, Map

from crdt_state import lib0
from crdt_state.envelope import GENESIS_PREV, client_id_of, seal
from crdt_state.replica import Replica
from crdt_state.schema import AGENT, SHARED, device_doc
from crdt_state.storage.memory import MemoryStore
from crdt_state.views import docs_to_py
from mesh.engine import Engine
from mesh.identity import Identity
from mesh.membership.records import READ
from mesh.sync import frames
from tests.support import NOW, Mesh, Node, new_mesh, seeded_identity

EVIL = "evil"


def assert_nothing_pending(replica: Replica) -> None:
    for name, ydoc in replica.docs.items():
        state = lib0.decode_state_vector(ydoc.get_state())
        assert state == replica.expected_state(name), f"{name}: pending items"


def snapshot(replica: Replica) -> dict[str, object]:
    return {
        name: content for name, content in docs_to_py(replica.docs).items() if replica.vector(name)
    }


class Hostile:
    """A member that signs envelopes it should not, under its own key."""

    def __init__(self, identity: Identity, mesh: Mesh) -> None:
        self.identity = identity
        self.mesh = mesh
        self.incarnation = os.urandom(16)
        self.client = client_id_of(identity.public_key, self.incarnation)
        self.seq: dict[str, int] = {}
        self.prev: dict[str, bytes] = {}
        self.clock: dict[str, int] = {}
        self.batch_no = 1_000_000
        self.sent: list[bytes] = []

    def envelope(
        self, doc: str, update: bytes, *, seq: int | None = None, context: tuple = ()
    ) -> bytes:
        number = seq if seq is not None else self.seq.get(doc, 0) + 1
        env = seal(
            self.identity,
            mesh_id=self.mesh.mesh_id,
            doc=doc,
            incarnation=self.incarnation,
            seq=number,
            hlc=NOW << 16,
            mship=self.mesh.runtime.replica.membership.length,
            context=context,
            prev=self.prev.get(doc, GENESIS_PREV) if seq is None else os.urandom(32),
            update=update,
        )
        return env.raw

    def update_as(self, client: int, start: int, key: str, doc_name: str) -> bytes:
        ydoc = Doc(client_id=client)
        if start:
            filler = Doc(client_id=client)
            fm = filler.get("messages", type=Map)
            for i in range(start):
                fm[f"pad{i}"] = i
            ydoc.apply_update(filler.get_update())
        before = ydoc.get_state()
        ydoc.get("messages", type=Map)[key] = {"evil": True}
        return ydoc.get_update(before)


class ConvergenceMachine(RuleBasedStateMachine):
    @initialize(devices=st.integers(min_value=2, max_value=3))
    def setup(self, devices: int) -> None:
        self.now = NOW
        self.mesh = new_mesh()
        self.honest: list[Node] = []
        for i in range(devices):
            self.honest.append(self.mesh.add_device(seeded_identity(10 + i), name=f"d{i}"))
        self.reader = self.mesh.add_device(seeded_identity(20), caps={READ}, name="reader")
        self.honest.append(self.reader)
        hostile_node = self.mesh.add_device(seeded_identity(30), name="hostile")
        self.hostile_node = hostile_node
        self.hostile = Hostile(hostile_node.identity, self.mesh)
        self.forbidden: set[bytes] = set()
        self.counter = 0
        for node in [*self.honest, hostile_node]:
            self.mesh.connect(node)
        self.mesh.net.run(self.now)
        self.injected = 0

    # --- honest writes -------------------------------------------------------------------

    @rule(who=st.integers(0, 3), doc=st.sampled_from(["shared", "device", "agent"]), data=st.data())
    def write(self, who: int, doc: str, data: st.DataObject) -> None:
        nodes = [self.mesh.runtime, *self.honest]
        node = nodes[who % len(nodes)]
        if doc == "agent" and node is not self.mesh.runtime:
            node = self.mesh.runtime
        if node is self.reader and doc == "shared":
            doc = "device"
        name = {"shared": SHARED, "agent": AGENT, "device": device_doc(node.peer_id)}[doc]
        if name.startswith("device/") and node is self.mesh.runtime:
            name = SHARED
        root = {"shared": "messages", "agent": "replies"}.get(name, "acks")
        self.counter += 1
        key = data.draw(st.sampled_from([f"k{self.counter}", "hot", "task-1"]))
        with node.engine.transact(name, self.now) as ydoc:
            target = ydoc.get(root, type=Map)
            if key in target and data.draw(st.booleans()):
                del target[key]
            else:
                target[key] = {"n": self.counter, "by": node.peer_id[-6:]}

    @rule()
    def seal_and_flush(self) -> None:
        self.now += 7
        for node in [self.mesh.runtime, *self.honest]:
            node.engine.tick(self.now)
        self.mesh.net.flush_all(self.now)

    # --- the network ---------------------------------------------------------------------------

    @precondition(lambda self: bool(self.mesh.net.in_flight))
    @rule(
        index=st.integers(min_value=0), how=st.sampled_from(["deliver", "drop", "dup", "reorder"])
    )
    def network(self, index: int, how: str) -> None:
        net = self.mesh.net
        message = net.in_flight[index % len(net.in_flight)]
        # Frames of one link stay in order unless reordered on purpose.
        first = next(m for m in net.in_flight if {m.src, m.dst} == {message.src, message.dst})
        if how == "reorder":
            first = message
        elif how != "drop":
            message = first
        net.in_flight.remove(message)
        if how == "drop":  # a lost frame on a reliable stream is a broken connection
            net.unlink(message.src, message.dst)
            return
        net.deliver(message, self.now)
        if how == "dup":
            net.deliver(message, self.now)
        net.flush(message.dst, self.now)

    @rule(who=st.integers(0, 4), up=st.booleans())
    def link(self, who: int, up: bool) -> None:
        nodes = [*self.honest, self.hostile_node]
        node = nodes[who % len(nodes)]
        if up:
            self.mesh.connect(node, self.now)
        else:
            self.mesh.disconnect(node)

    @rule(who=st.integers(0, 3))
    def crash_and_restart(self, who: int) -> None:
        node = self.honest[who % len(self.honest)]
        self.mesh.disconnect(node)
        store = node.replica.store
        assert isinstance(store, MemoryStore)
        store.crash()
        replica = Replica(mesh_id=self.mesh.mesh_id, store=store, author=node.identity)
        replica.load()
        node.replica = replica
        node.engine = Engine(replica, node.identity, node.engine.role)
        self.mesh.net.engines[node.key] = node.engine

    # --- hostile actions --------------------------------------------------------------------------

    def _inject(self, raw: bytes, *, forbidden: bool = True) -> None:
        if forbidden:
            self.forbidden.add(raw)
        hostile_key = self.hostile_node.key
        runtime = self.mesh.runtime
        session = runtime.engine.sessions.get(hostile_key)
        if session is None or not session.ready:
            return
        self.hostile.batch_no += 1
        frame = frames.encode(frames.Envelopes(self.hostile.batch_no, (raw,)))
        runtime.engine.receive(hostile_key, frame, self.now)
        self.injected += 1
        # The runtime's ack of a batch the hostile engine never sent would make that engine
        # close the session; drop those acks so hostile sessions last.
        net = self.mesh.net
        net.flush(runtime.key, self.now)
        for message in list(net.in_flight):
            if message.dst == hostile_key and message.data[:2] == bytes([0x84, 0x04]):
                ack = frames.decode(message.data)
                if isinstance(ack, frames.Ack) and ack.batch_no >= 1_000_000:
                    net.in_flight.remove(message)

    @rule(kind=st.sampled_from(["agent", "other-device", "forge", "delete", "future-ref"]))
    def hostile_write(self, kind: str) -> None:
        hostile = self.hostile
        self.counter += 1
        key = f"{EVIL}{self.counter}"
        if kind == "agent":
            raw = hostile.envelope(AGENT, hostile.update_as(hostile.client, 0, key, AGENT))
        elif kind == "other-device":
            doc = device_doc(self.honest[0].peer_id)
            raw = hostile.envelope(doc, hostile.update_as(hostile.client, 0, key, doc))
        elif kind == "forge":
            victim = self.honest[0].replica.client_id
            raw = hostile.envelope(SHARED, hostile.update_as(victim, 0, key, SHARED))
        elif kind == "delete":
            victim = self.honest[0].replica.client_id
            raw = hostile.envelope(SHARED, b"\x00" + lib0.encode_delete_set({victim: [(0, 5)]}))
        else:
            raw = hostile.envelope(SHARED, hostile.update_as(hostile.client, 3, key, SHARED))
        self._inject(raw)

    @rule()
    def hostile_fork(self) -> None:
        hostile = self.hostile
        hostile.incarnation = os.urandom(16)
        hostile.client = client_id_of(hostile.identity.public_key, hostile.incarnation)
        hostile.seq.clear()
        hostile.prev.clear()
        self.counter += 1
        a = hostile.envelope(
            SHARED, hostile.update_as(hostile.client, 0, f"fa{self.counter}", SHARED)
        )
        b = hostile.envelope(
            SHARED, hostile.update_as(hostile.client, 0, f"fb{self.counter}", SHARED)
        )
        self._inject(a, forbidden=False)
        self._inject(b)
        # Whichever the runtime saw second is refused; nothing after the fork is accepted.
        later = hostile.envelope(SHARED, b"\x00\x00", seq=2)
        self._inject(later)

    @rule(index=st.integers(min_value=0))
    def replay(self, index: int) -> None:
        rows = list(self.mesh.runtime.replica.store.envelopes())
        if rows:
            self._inject(rows[index % len(rows)].raw, forbidden=False)

    # --- invariants ---------------------------------------------------------------

    @invariant()
    def nothing_pending_nothing_forbidden(self) -> None:
        if not hasattr(self, "mesh"):
            return
        for node in [self.mesh.runtime, *self.honest]:
            assert_nothing_pending(node.replica)
            stored = {row.raw for row in node.replica.store.envelopes()}
            assert not stored & self.forbidden, "a forbidden envelope was accepted"
            for name, roots in docs_to_py(node.replica.docs).items():
                for root, content in roots.items():
                    assert not any(k.startswith(EVIL) for k in content), f"{name}/{root}"

    def teardown(self) -> None:
        if not hasattr(self, "mesh"):
            return
        mesh = self.mesh
        self.now += 1000
        for node in self.honest:
            mesh.disconnect(node)
            mesh.connect(node, self.now)
        for _ in range(3):
            mesh.settle(self.now)
        reference = snapshot(mesh.runtime.replica)
        vectors = mesh.runtime.replica.vectors()
        for node in self.honest:
            assert snapshot(node.replica) == reference
            assert node.replica.vectors() == vectors
            assert node.engine.status(mesh.runtime.key).synced
            assert_nothing_pending(node.replica)


ConvergenceMachine.TestCase.settings = settings(
    max_examples=max(60, settings.default.max_examples // 4),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConvergence = ConvergenceMachine.TestCase
