"""The sans-IO engine: hello, catch-up, flow control, acknowledgements, status."""

from __future__ import annotations

import pytest

from crdt_state.envelope import decode_envelope
from crdt_state.replica import LocalWriteRefused
from crdt_state.schema import AGENT, SHARED
from mesh.engine import Close, Output, Send
from mesh.limits import MAX_UNACKED_BATCHES
from mesh.sync import frames
from tests.support import NOW, Mesh, Node, new_mesh, seeded_identity


def _write_many(node: Node, n: int, *, start: int = 0, per_envelope: int = 1) -> None:
    for i in range(start, start + n):
        node.write(SHARED, "messages", f"m{i}", {"i": i})
        if (i + 1) % per_envelope == 0:
            node.replica.seal_all(NOW)


def _frames_sent(mesh: Mesh, src: bytes) -> list[tuple[bytes, frames.Frame]]:
    sent: list[tuple[bytes, frames.Frame]] = []

    def observe(key: bytes, output: Output) -> None:
        if key == src and isinstance(output, Send):
            sent.append((output.peer, frames.decode(output.data)))

    mesh.net.observers.append(observe)
    return sent


def test_flow_control_window_and_catch_up_in_batches() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    _write_many(phone, 3000)  # 3000 single-transaction envelopes
    phone.replica.store.commit()
    sent = _frames_sent(mesh, phone.key)
    mesh.connect(phone)
    mesh.net.flush_all(NOW)
    batches = [f for _, f in sent if isinstance(f, frames.Envelopes)]
    # Before any ack arrives, at most the window is in flight.
    assert len(batches) == 0  # hello first: nothing is sent before the peer's hello
    mesh.net.run(NOW)
    batches = [f for _, f in sent if isinstance(f, frames.Envelopes)]
    assert sum(len(b.envelopes) for b in batches) == 3000
    assert len(batches) > MAX_UNACKED_BATCHES
    assert len(mesh.runtime.read(SHARED, "messages")) == 3000
    assert phone.engine.status(mesh.runtime.key).synced


def test_window_limits_unacked_batches() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    _write_many(phone, 3000)
    mesh.connect(phone)
    net = mesh.net
    net.flush_all(NOW)
    # Deliver the hellos only.
    while net.in_flight:
        message = net.in_flight.popleft()
        net.deliver(message, NOW)
    net.flush(phone.key, NOW)
    in_flight = [frames.decode(m.data) for m in net.in_flight if m.src == phone.key]
    assert sum(isinstance(f, frames.Envelopes) for f in in_flight) == MAX_UNACKED_BATCHES
    assert phone.engine.status(mesh.runtime.key).unacked_batches == MAX_UNACKED_BATCHES


def test_never_echo() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    laptop = mesh.add_device(seeded_identity(11))
    mesh.connect(phone)
    mesh.connect(laptop)
    sent = _frames_sent(mesh, mesh.runtime.key)
    _write_many(phone, 20, per_envelope=5)
    mesh.settle()
    to_phone = [
        decode_envelope(raw)
        for peer, frame in sent
        if peer == phone.key and isinstance(frame, frames.Envelopes)
        for raw in frame.envelopes
    ]
    to_laptop = [
        raw
        for peer, frame in sent
        if peer == laptop.key and isinstance(frame, frames.Envelopes)
        for raw in frame.envelopes
    ]
    assert all(env.author != phone.key for env in to_phone)
    assert len(to_laptop) == 4
    assert laptop.read(SHARED, "messages") == phone.read(SHARED, "messages")


def test_interrupted_catch_up_resumes_without_resending() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    _write_many(mesh.runtime, 2000)
    mesh.runtime.replica.store.commit()
    sent = _frames_sent(mesh, mesh.runtime.key)
    mesh.connect(phone)
    net = mesh.net
    net.flush_all(NOW)
    delivered = 0
    while net.in_flight and delivered < 6:
        message = net.in_flight.popleft()
        net.deliver(message, NOW)
        net.flush(message.dst, NOW)
        delivered += 1
    have = len(phone.read(SHARED, "messages"))
    assert 0 < have < 2000
    mesh.disconnect(phone)
    first_round = sum(
        len(f.envelopes) for p, f in sent if p == phone.key and isinstance(f, frames.Envelopes)
    )
    sent.clear()
    mesh.connect(phone)
    mesh.net.run(NOW)
    second_round = sum(
        len(f.envelopes) for p, f in sent if p == phone.key and isinstance(f, frames.Envelopes)
    )
    assert len(phone.read(SHARED, "messages")) == 2000
    assert second_round == 2000 - have
    assert first_round >= have


def test_status_is_never_falsely_synced() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    mesh.connect(phone)
    mesh.settle()
    assert phone.engine.status(mesh.runtime.key).synced
    phone.write(SHARED, "messages", "m", {"x": 1})
    phone.replica.seal_all(NOW)
    mesh.net.flush(phone.key, NOW)  # sent, not yet acknowledged
    status = phone.engine.status(mesh.runtime.key)
    assert not status.synced and status.they_lack == 1
    mesh.net.run(NOW)
    assert phone.engine.status(mesh.runtime.key).synced
    # The runtime writes while the phone is away: after reconnecting, the hello tells.
    mesh.disconnect(phone)
    mesh.runtime.write(AGENT, "replies", "r", {"x": 2})
    mesh.runtime.replica.seal_all(NOW)
    mesh.connect(phone)
    net = mesh.net
    net.flush_all(NOW)
    hello = next(m for m in net.in_flight if m.src == mesh.runtime.key)
    net.in_flight.remove(hello)
    net.deliver(hello, NOW)
    status = phone.engine.status(mesh.runtime.key)
    assert status.we_lack == 1 and not status.synced
    mesh.net.run(NOW)
    assert phone.engine.status(mesh.runtime.key).synced


def test_acknowledged_means_committed() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    mesh.connect(phone)
    mesh.settle()
    commits: list[int] = []
    store = mesh.runtime.replica.store
    original_commit = store.commit

    def counting_commit() -> None:
        original_commit()
        commits.append(store.envelope_count())

    store.commit = counting_commit  # type: ignore[method-assign]
    seen_acks: list[int] = []

    def observe(key: bytes, output: Output) -> None:
        if key == mesh.runtime.key and isinstance(output, Send):
            frame = frames.decode(output.data)
            if isinstance(frame, frames.Ack):
                # By the time an ack is released, the envelopes it covers are committed.
                seen_acks.append(commits[-1])

    mesh.net.observers.append(observe)
    _write_many(phone, 10, per_envelope=2)
    mesh.settle()
    assert seen_acks and seen_acks[-1] == store.envelope_count()


def test_stranger_is_refused_before_any_frame() -> None:
    mesh = new_mesh()
    stranger = seeded_identity(99)
    assert not mesh.runtime.engine.connect(stranger.public_key, NOW)
    outputs = mesh.runtime.engine.flush(NOW)
    assert any(isinstance(o, Close) and o.code == "not-a-member" for o in outputs)
    assert not any(isinstance(o, Send) for o in outputs)


def test_device_accepts_sessions_only_from_the_runtime() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    laptop = mesh.add_device(seeded_identity(11))
    assert not mesh.net.link(phone.key, laptop.key, NOW)


def test_revocation_closes_session_and_cuts_off() -> None:
    from mesh.membership.records import issue_revocation

    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10))
    laptop = mesh.add_device(seeded_identity(11))
    mesh.connect(phone)
    mesh.connect(laptop)
    _write_many(phone, 5, per_envelope=1)
    mesh.settle()
    revocation = issue_revocation(mesh.root, mesh.mesh_id, phone.key, NOW)
    mesh.runtime.engine.revoke(revocation, NOW)
    mesh.settle()
    assert phone.key not in mesh.runtime.engine.sessions
    assert not mesh.connect(phone)
    assert laptop.replica.membership.chain_limit(phone.key, phone.replica.incarnation, SHARED) == 5
    assert len(laptop.read(SHARED, "messages")) == 5
    assert phone.engine.is_revoked()  # told before the session was closed
    with pytest.raises(LocalWriteRefused):  # a device that knows it is revoked stops writing
        phone.engine.transact(SHARED, NOW)
    assert "late" not in mesh.runtime.read(SHARED, "messages")
