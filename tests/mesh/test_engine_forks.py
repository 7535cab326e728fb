"""Forks and protocol violations at the peer engine, through the in-memory network.

A hostile member is driven by hand: the test opens its session at the runtime,
sends its hello and then whatever frames it likes. The runtime's frames to it go
nowhere (there is no network link), so only the runtime's reaction is observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Map

from crdt_state.envelope import Envelope, decode_envelope, proof_of
from crdt_state.errors import CutOff, ForkDetected
from crdt_state.replica import Outcome
from crdt_state.schema import SHARED, device_doc
from mesh import cbor
from mesh.engine import Close, Engine, Output, Quarantined, Refused, Send
from mesh.identity import mesh_id_of
from mesh.limits import MAX_FRAME_BYTES
from mesh.membership.log import ACTION_ADMIT, ACTION_QUARANTINE, sign_entry
from mesh.membership.records import READ, issue_revocation
from mesh.sync import frames
from mesh.transport.memory import Message
from tests.crdt_state.test_receive import Writer, assert_nothing_pending
from tests.support import NOW, Mesh, Node, new_mesh, seeded_identity


@dataclass
class Scene:
    mesh: Mesh
    phone: Node
    laptop: Node
    evil: Node
    outputs: list[tuple[bytes, Output]] = field(default_factory=list)
    batch_no: int = 0

    @property
    def runtime(self) -> Engine:
        return self.mesh.runtime.engine

    def honest(self) -> list[Node]:
        return [self.mesh.runtime, self.phone, self.laptop]

    def open_hostile_session(self, key: bytes | None = None, *, hello: bool = True) -> bytes:
        key = self.evil.key if key is None else key
        assert self.runtime.connect(key, NOW)
        if hello:
            membership = self.mesh.runtime.replica.membership
            self.send(
                frames.Hello(
                    frames.PROTOCOL_VERSION,
                    self.mesh.mesh_id,
                    membership.length,
                    membership.head,
                    {},
                ),
                key,
            )
        return key

    def send(self, frame: frames.Frame | bytes, key: bytes | None = None) -> list[Output]:
        """One frame from the hostile peer to the runtime; the runtime's outputs, routed."""
        data = frame if isinstance(frame, bytes) else frames.encode(frame)
        self.runtime.receive(self.evil.key if key is None else key, data, NOW)
        start = len(self.outputs)
        self.mesh.net.flush(self.mesh.runtime.key, NOW)
        return [output for _, output in self.outputs[start:]]

    def envelopes(self, *envs: Envelope, key: bytes | None = None) -> list[Output]:
        self.batch_no += 1
        return self.send(frames.Envelopes(self.batch_no, tuple(e.raw for e in envs)), key)

    def settle(self) -> None:
        self.mesh.settle(NOW)
        for node in self.honest():
            assert_nothing_pending(node.replica)

    def converged(self) -> None:
        reference = self.mesh.runtime.replica
        for node in (self.phone, self.laptop):
            assert node.replica.vectors() == reference.vectors()
            for name in reference.docs:
                ours = node.replica.doc(name).get("messages", type=Map).to_py()
                assert ours == reference.doc(name).get("messages", type=Map).to_py()
            assert node.engine.status(self.mesh.runtime.key).synced
            assert self.runtime.status(node.key).synced
            assert_nothing_pending(node.replica)


@pytest.fixture
def scene() -> Scene:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10), name="phone")
    laptop = mesh.add_device(seeded_identity(11), name="laptop")
    evil = mesh.add_device(seeded_identity(30), name="evil")
    scene = Scene(mesh, phone, laptop, evil)
    mesh.net.observers.append(lambda key, output: scene.outputs.append((key, output)))
    for node in (phone, laptop):
        assert mesh.connect(node)
    phone.write(SHARED, "messages", "hello", "from the phone")
    scene.settle()
    return scene


def _twins(scene: Scene) -> tuple[Writer, Envelope, Envelope]:
    """Two validly signed envelopes of the hostile member for one slot (seq 1 of ``shared``)."""
    writer = Writer(scene.evil.identity, scene.mesh)
    other = Writer(scene.evil.identity, scene.mesh)  # same incarnation, separate document
    env_b = other.write(SHARED, "k", "b")
    env_a = writer.write(SHARED, "k", "a")
    assert (env_a.seq, env_a.client_id) == (env_b.seq, env_b.client_id)
    assert env_a.hash != env_b.hash
    return writer, env_a, env_b


def _proof(env_a: Envelope, env_b: Envelope) -> tuple[bytes, bytes]:
    return proof_of(env_a), proof_of(env_b)


def _quarantines(scene: Scene) -> list[tuple[bytes, bytes, bytes, bytes]]:
    entries = scene.mesh.runtime.replica.membership.entries
    return [e.quarantine for e in entries if e.action == ACTION_QUARANTINE and e.quarantine]


# --- 5. forks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("one_batch", [False, True])
def test_a_fork_is_quarantined_everywhere_and_honest_devices_converge(
    scene: Scene, one_batch: bool
) -> None:
    writer, env_a, env_b = _twins(scene)
    scene.open_hostile_session()
    if one_batch:
        outputs = scene.envelopes(env_a, env_b)
    else:
        assert not [o for o in scene.envelopes(env_a) if isinstance(o, Refused)]
        outputs = scene.envelopes(env_b)
    refused = [o for o in outputs if isinstance(o, Refused)]
    assert [(r.seq, r.code) for r in refused] == [(1, ForkDetected.__name__)]
    assert Quarantined(scene.evil.key, writer.incarnation) in outputs
    assert _quarantines(scene) == [(scene.evil.key, writer.incarnation, *_proof(env_a, env_b))]
    entry = scene.mesh.runtime.replica.membership.entries[-1]
    assert [(c.doc, c.seq) for c in entry.cutoffs] == [(SHARED, 1)]  # env_a stays, from seq 1

    scene.settle()
    key = (scene.evil.key, writer.incarnation)
    for node in scene.honest():
        assert key in node.replica.membership.quarantined
        assert node.replica.membership.length == scene.mesh.runtime.replica.membership.length
        assert node.read(SHARED, "messages")["k"] == "a"

    # Nothing more from that incarnation, anywhere: not seq 2, not another document.
    later = writer.write(SHARED, "later", "x")
    elsewhere = writer.write(device_doc(scene.evil.peer_id), "ack", "x", root="acks")
    outputs = scene.envelopes(later, elsewhere)
    assert [r.code for r in outputs if isinstance(r, Refused)] == [CutOff.__name__] * 2
    for node in scene.honest():
        for env in (later, elsewhere):
            with pytest.raises(CutOff):
                node.replica.receive(decode_envelope(env.raw), NOW)
    # A second copy of the proof commits nothing more.
    length = scene.mesh.runtime.replica.membership.length
    scene.send(frames.Fork(*_proof(env_a, env_b)))
    scene.envelopes(env_b)
    assert scene.mesh.runtime.replica.membership.length == length

    # The honest devices keep syncing and converge.
    scene.phone.write(SHARED, "messages", "after", "phone")
    scene.laptop.write(SHARED, "messages", "after-2", "laptop")
    scene.mesh.runtime.write(SHARED, "messages", "after-3", "runtime")
    scene.settle()
    scene.converged()
    messages = scene.phone.read(SHARED, "messages")
    assert {"after", "after-2", "after-3", "k", "hello"} <= set(messages)
    assert "later" not in messages


def test_a_fork_seen_first_by_a_device_is_quarantined_by_the_runtime(scene: Scene) -> None:
    """The phone gets env_a through the runtime, then env_b: it sends the proof upstream."""
    writer, env_a, env_b = _twins(scene)
    scene.open_hostile_session()
    scene.envelopes(env_a)
    scene.settle()
    assert scene.phone.read(SHARED, "messages")["k"] == "a"
    # env_b reaches the phone on its session with the runtime (a runtime that forwards
    # a forked envelope, or a future device-to-device link).
    runtime_key = scene.mesh.runtime.key
    scene.phone.engine.receive(
        runtime_key, frames.encode(frames.Envelopes(10**6, (env_b.raw,))), NOW
    )
    sent = [o for o in scene.phone.engine.flush(NOW) if isinstance(o, Send)]
    forks = [o for o in sent if isinstance(frames.decode(o.data), frames.Fork)]
    assert len(forks) == 1 and forks[0].peer == runtime_key
    # Deliver the proof (and not the ack of a batch the runtime never sent).
    scene.mesh.net.in_flight.append(Message(scene.phone.key, runtime_key, forks[0].data))
    scene.settle()
    key = (scene.evil.key, writer.incarnation)
    for node in scene.honest():
        assert key in node.replica.membership.quarantined
    assert _quarantines(scene) == [(scene.evil.key, writer.incarnation, *_proof(env_a, env_b))]
    scene.laptop.write(SHARED, "messages", "still", "syncing")
    scene.settle()
    scene.converged()


def test_a_fork_while_one_twin_is_held_is_quarantined(scene: Scene) -> None:
    writer = Writer(scene.evil.identity, scene.mesh)
    writer.write(SHARED, "k0", "0")
    held = writer.write(SHARED, "k1", "1")
    twin = writer.craft(SHARED, b"\x00\x00", seq=2, prev=held.prev, context=held.context)
    scene.open_hostile_session()
    scene.envelopes(held)
    assert scene.mesh.runtime.replica.held
    outputs = scene.envelopes(twin)
    assert [r.code for r in outputs if isinstance(r, Refused)] == [ForkDetected.__name__]
    assert _quarantines(scene) == [(scene.evil.key, writer.incarnation, *_proof(held, twin))]
    scene.settle()
    for node in scene.honest():
        assert (scene.evil.key, writer.incarnation) in node.replica.membership.quarantined


def test_large_fork_proofs_still_replicate(scene: Scene) -> None:
    """Found: Records frames were cut by count only, so a dozen quarantine entries with
    maximal causal contexts (~0.6 MB each) made the runtime's flush raise FrameTooLarge
    for every session that still needed them (a read-only member can fork its device doc)."""
    context = tuple((client, 1 << 40) for client in range(1 << 52, (1 << 52) + 16_384))
    doc = device_doc(scene.evil.peer_id)
    for node in (scene.phone, scene.laptop):
        scene.mesh.disconnect(node)
    scene.open_hostile_session()
    for n in range(8):
        writer = Writer(scene.evil.identity, scene.mesh, tag=f"big{n}")
        held = writer.craft(doc, b"\x00\x00", context=context)  # waits for that context
        twin = writer.craft(doc, b"\x00\x00", context=context[:-1])
        scene.envelopes(held, twin)
    entries = scene.mesh.runtime.replica.membership.entries
    assert len(_quarantines(scene)) == 8
    assert sum(len(e.raw) for e in entries) > MAX_FRAME_BYTES
    for node in (scene.phone, scene.laptop):
        assert scene.mesh.connect(node)  # each needs all eight entries at once
    scene.settle()
    for node in scene.honest():
        assert node.replica.membership.length == len(entries)
        assert len(node.replica.membership.quarantined) == 8
    assert scene.mesh.runtime.replica.held == {}


def test_fork_proofs_of_non_members_commit_nothing(scene: Scene) -> None:
    """Found: any peer could append a permanent quarantine entry per stranger key it made up."""
    scene.open_hostile_session()
    length = scene.mesh.runtime.replica.membership.length
    for n in range(3):
        stranger = seeded_identity(1000 + n)
        env_a = Writer(stranger, scene.mesh).write(SHARED, "k", "a")
        env_b = Writer(stranger, scene.mesh).write(SHARED, "k", "b")
        outputs = scene.send(frames.Fork(*_proof(env_a, env_b)))
        assert not [o for o in outputs if isinstance(o, Quarantined | Close)]
    assert scene.mesh.runtime.replica.membership.length == length
    # The same for a revoked member: its chains are already cut off.
    revocation = issue_revocation(scene.mesh.root, scene.mesh.mesh_id, scene.laptop.key, NOW)
    scene.runtime.revoke(revocation, NOW)
    length = scene.mesh.runtime.replica.membership.length
    env_a = Writer(scene.laptop.identity, scene.mesh).write(SHARED, "k", "a")
    env_b = Writer(scene.laptop.identity, scene.mesh).write(SHARED, "k", "b")
    scene.send(frames.Fork(*_proof(env_a, env_b)))
    assert scene.mesh.runtime.replica.membership.length == length
    assert not scene.mesh.runtime.replica.membership.quarantined
    assert scene.evil.key in scene.runtime.sessions


@pytest.mark.parametrize(
    "proof",
    [
        "same envelope twice",
        "two seqs",
        "two authors",
        "another mesh",
        "garbage",
        "whole envelopes",
        "flipped signature",
    ],
)
def test_a_bogus_fork_proof_closes_the_session_and_commits_nothing(
    scene: Scene, proof: str
) -> None:
    writer, env_a, env_b = _twins(scene)
    second = writer.write(SHARED, "k2", "2")
    phone_env = Writer(scene.phone.identity, scene.mesh).write(SHARED, "p", "p")
    other_mesh = mesh_id_of(seeded_identity(77).public_key)
    far_a = writer.craft(SHARED, env_a.update, context=(), seq=1, mesh_id=other_mesh)
    far_b = writer.craft(SHARED, env_b.update, context=(), seq=1, mesh_id=other_mesh)
    proof_b = proof_of(env_b)
    pairs = {
        "same envelope twice": _proof(env_a, env_a),
        "two seqs": _proof(env_a, second),
        "two authors": _proof(env_a, phone_env),
        "another mesh": _proof(far_a, far_b),
        "garbage": (b"\x82\x01\x02", proof_b),
        "whole envelopes": (env_a.raw, env_b.raw),
        "flipped signature": (proof_of(env_a), proof_b[:-1] + bytes([proof_b[-1] ^ 1])),
    }
    scene.open_hostile_session()
    length = scene.mesh.runtime.replica.membership.length
    outputs = scene.send(frames.Fork(*pairs[proof]))
    assert [o.peer for o in outputs if isinstance(o, Close)] == [scene.evil.key]
    assert scene.evil.key not in scene.runtime.sessions
    assert scene.mesh.runtime.replica.membership.length == length
    assert not scene.mesh.runtime.replica.membership.quarantined
    scene.phone.write(SHARED, "messages", "after", "x")
    scene.settle()
    scene.converged()


# --- 6. sessions that break the protocol ---------------------------------------------------------


def _bad_frames(scene: Scene) -> dict[str, bytes]:
    membership = scene.mesh.runtime.replica.membership
    # A next log entry, signed by the device: only the runtime extends the log.
    forged = sign_entry(
        scene.evil.identity,
        mesh_id=scene.mesh.mesh_id,
        index=membership.length,
        prev=membership.head,
        committed_ms=NOW,
        action=ACTION_ADMIT,
        record=membership.entries[-1].record,
    )
    return {
        "malformed": b"\xff\x00\x01",
        "not an array": cbor.encode(7),
        "empty array": cbor.encode([]),
        "unknown frame type": cbor.encode([99, 1, 2]),
        "unknown frame type 0": cbor.encode([0]),
        "oversized": b"\x00" * (MAX_FRAME_BYTES + 1),
        "non-canonical": b"\x82\x18\x03\x80",
        "truncated hello": frames.encode(
            frames.Hello(1, scene.mesh.mesh_id, membership.length, membership.head, {})
        )[:-1],
        "second hello": frames.encode(
            frames.Hello(1, scene.mesh.mesh_id, membership.length, membership.head, {})
        ),
        "ack for a batch never sent": frames.encode(frames.Ack(5, {}, ())),
        "records from a device": frames.encode(frames.Records((forged.raw,))),
        "garbage records": frames.encode(frames.Records((b"\x00",))),
        "too many envelopes": cbor.encode([frames.ENVELOPES, 1, [b""] * 257]),
        "envelopes not bytes": cbor.encode([frames.ENVELOPES, 1, [1]]),
    }


BAD_FRAMES = [
    "malformed",
    "not an array",
    "empty array",
    "unknown frame type",
    "unknown frame type 0",
    "oversized",
    "non-canonical",
    "truncated hello",
    "second hello",
    "ack for a batch never sent",
    "records from a device",
    "garbage records",
    "too many envelopes",
    "envelopes not bytes",
]


@pytest.mark.parametrize("name", BAD_FRAMES)
def test_a_bad_frame_closes_only_that_session(scene: Scene, name: str) -> None:
    scene.open_hostile_session()
    outputs = scene.send(_bad_frames(scene)[name])
    assert [o.peer for o in outputs if isinstance(o, Close)] == [scene.evil.key]
    assert scene.evil.key not in scene.runtime.sessions
    # Later frames from it are ignored; the other sessions carry on.
    later = scene.send(frames.Fork(b"", b""))
    assert [o for o in later if getattr(o, "peer", None) == scene.evil.key] == []
    assert {scene.phone.key, scene.laptop.key} <= set(scene.runtime.sessions)
    scene.laptop.write(SHARED, "messages", "after", name)
    scene.settle()
    scene.converged()
    assert scene.phone.read(SHARED, "messages")["after"] == name


@pytest.mark.parametrize(
    "name", ["envelopes", "ack", "records", "fork", "malformed", "oversized", "unknown frame type"]
)
def test_a_frame_before_hello_closes_the_session(scene: Scene, name: str) -> None:
    _, env_a, env_b = _twins(scene)
    membership = scene.mesh.runtime.replica.membership
    frame = {
        "envelopes": frames.encode(frames.Envelopes(1, (env_a.raw,))),
        "ack": frames.encode(frames.Ack(1, {}, ())),
        "records": frames.encode(frames.Records((membership.entries[0].raw,))),
        "fork": frames.encode(frames.Fork(*_proof(env_a, env_b))),
        "malformed": b"\xff",
        "oversized": b"\x00" * (MAX_FRAME_BYTES + 1),
        "unknown frame type": cbor.encode([42]),
    }[name]
    scene.open_hostile_session(hello=False)
    outputs = scene.send(frame)
    assert [o.peer for o in outputs if isinstance(o, Close)] == [scene.evil.key]
    assert not _quarantines(scene)
    assert scene.mesh.runtime.replica.vector(SHARED).get(env_a.client_id) is None
    scene.phone.write(SHARED, "messages", "after", "x")
    scene.settle()
    scene.converged()


def test_a_device_closes_a_runtime_session_that_breaks_the_protocol(scene: Scene) -> None:
    runtime_key = scene.mesh.runtime.key
    scene.phone.engine.receive(runtime_key, b"\xff\xfe", NOW)
    closes = [o for o in scene.phone.engine.flush(NOW) if isinstance(o, Close)]
    assert [c.peer for c in closes] == [runtime_key]
    assert runtime_key not in scene.phone.engine.sessions


def test_strangers_are_refused_at_connect(scene: Scene) -> None:
    stranger = seeded_identity(99).public_key
    assert scene.runtime.connect(stranger, NOW) is False
    assert stranger not in scene.runtime.sessions
    # Whatever it sends next is never read.
    scene.runtime.receive(stranger, frames.encode(frames.Envelopes(1, ())), NOW)
    scene.runtime.receive(stranger, b"\xff", NOW)
    outputs = scene.runtime.flush(NOW)
    assert [o for o in outputs if getattr(o, "peer", None) == stranger] == [
        Close(stranger, "not-a-member", "peer is not a current member")
    ]
    # A device opens sessions with the runtime only; the runtime never with itself.
    assert scene.phone.engine.connect(scene.laptop.key, NOW) is False
    assert scene.runtime.connect(scene.mesh.runtime.key, NOW) is False
    # A revoked member is a stranger from its revocation on; its open session is closed.
    revocation = issue_revocation(scene.mesh.root, scene.mesh.mesh_id, scene.laptop.key, NOW)
    scene.runtime.revoke(revocation, NOW)
    assert scene.laptop.key not in scene.runtime.sessions
    scene.mesh.disconnect(scene.laptop)
    assert scene.mesh.connect(scene.laptop) is False
    # A member whose certificate has expired is refused too.
    member = scene.mesh.runtime.replica.membership.member(scene.phone.key)
    assert member is not None
    scene.mesh.disconnect(scene.phone)
    assert scene.runtime.connect(scene.phone.key, member.cert.expires_ms) is False


def test_a_read_only_member_is_refused_where_it_may_not_write(scene: Scene) -> None:
    reader = scene.mesh.add_device(seeded_identity(20), caps={READ}, name="reader")
    writer = Writer(reader.identity, scene.mesh)
    env = writer.write(SHARED, "ro", "x")
    own = writer.write(device_doc(reader.peer_id), "ack", "seen", root="acks")
    scene.open_hostile_session(reader.key)
    outputs = scene.envelopes(env, own, key=reader.key)
    assert [r.code for r in outputs if isinstance(r, Refused)] == ["NotPermitted"]
    assert scene.mesh.runtime.replica.vector(device_doc(reader.peer_id)) == {own.client_id: 1}
    assert scene.mesh.runtime.replica.receive(decode_envelope(own.raw), NOW) is Outcome.DUPLICATE


# --- fuzzing a live session ----------------------------------------------------------------------


_cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=st.one_of(
        st.binary(max_size=200),
        _cbor_values.map(cbor.encode),
        st.tuples(st.integers(0, 7), st.lists(_cbor_values, max_size=5)).map(
            lambda t: cbor.encode([t[0], *t[1]])
        ),
    ),
    hello=st.booleans(),
)
def test_random_frames_never_escape_the_engine(frame: bytes, hello: bool) -> None:
    mesh = new_mesh()
    evil = mesh.add_device(seeded_identity(30), name="evil")
    phone = mesh.add_device(seeded_identity(10), name="phone")
    assert mesh.connect(phone)
    scene = Scene(mesh, phone, phone, evil)
    scene.open_hostile_session(hello=hello)
    scene.send(frame)  # closes the session or not, but never raises
    phone.write(SHARED, "messages", "k", "v")
    scene.settle()
    assert mesh.runtime.read(SHARED, "messages") == {"k": "v"}
