"""Adaptive batching in the EngineDriver: seal at once when idle, pile up while in flight.

The clock is frozen, so MAX_BATCH_DELAY_MS never passes: whatever is sealed here
is sealed by the driver's adaptive policy (or the size limits), not by a deadline.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from pycrdt import Map

from crdt_state.envelope import decode_envelope
from crdt_state.schema import SHARED
from mesh.sync import frames
from mesh.transport.memory import memory_stream_pair
from nodes.driver import EngineDriver
from tests.support import NOW, Mesh, Node, new_mesh


def _frozen() -> int:
    return NOW


def _write(driver: EngineDriver, key: str) -> None:
    with driver.transact(SHARED) as ydoc:
        ydoc.get("messages", type=Map)[key] = {"text": key}


def _mesh() -> tuple[Mesh, Node]:
    mesh = new_mesh()
    return mesh, mesh.add_device()


async def test_an_idle_session_sends_a_transaction_at_once() -> None:
    mesh, device = _mesh()
    runtime = EngineDriver(mesh.runtime.engine, clock=_frozen)
    writer = EngineDriver(device.engine, clock=_frozen)
    at_device, at_runtime = memory_stream_pair(device.key, mesh.runtime.key)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        nursery.start_soon(writer.run)
        nursery.start_soon(runtime.run_session, at_runtime)
        nursery.start_soon(writer.run_session, at_device)
        with trio.fail_after(10):
            while not writer.idle():
                await trio.testing.wait_all_tasks_blocked()
            _write(writer, "m1")
            while "m1" not in mesh.runtime.read(SHARED, "messages"):
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def test_transactions_pile_up_until_the_acknowledgement_comes_back() -> None:
    mesh, device = _mesh()
    writer = EngineDriver(device.engine, clock=_frozen)
    at_device, peer = memory_stream_pair(device.key, mesh.runtime.key)
    membership = mesh.runtime.replica.membership
    hello = frames.Hello(
        frames.PROTOCOL_VERSION, mesh.mesh_id, membership.length, membership.head, {}
    )
    replica = device.replica
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        nursery.start_soon(writer.run_session, at_device)
        with trio.fail_after(10):
            assert isinstance(frames.decode(await peer.receive()), frames.Hello)
            await peer.send(frames.encode(hello))
            while not writer.idle():
                await trio.testing.wait_all_tasks_blocked()
            _write(writer, "m1")
            first = frames.decode(await peer.receive())
            assert isinstance(first, frames.Envelopes)
            assert [decode_envelope(e).seq for e in first.envelopes] == [1]
            # Batch 1 is not acknowledged: these join one open batch, nothing is sent.
            for key in ("m2", "m3", "m4"):
                _write(writer, key)
                await trio.testing.wait_all_tasks_blocked()
            assert replica.next_seal_ms() is not None
            assert not writer.idle()
            ack = frames.Ack(first.batch_no, {SHARED: {replica.client_id: 1}}, ())
            await peer.send(frames.encode(ack))
            second = frames.decode(await peer.receive())
        assert isinstance(second, frames.Envelopes)
        envelopes = [decode_envelope(e) for e in second.envelopes]
        assert [e.seq for e in envelopes] == [2]  # the three transactions, in one envelope
        assert replica.next_seal_ms() is None
        nursery.cancel_scope.cancel()


async def test_only_a_transaction_that_opens_or_seals_a_batch_wakes_the_flusher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("crdt_state.replica.MAX_TXNS_PER_ENVELOPE", 3)
    _, device = _mesh()
    driver = EngineDriver(device.engine, clock=_frozen)
    woken = []
    for key in ("a", "b", "c", "d"):
        driver._wake = trio.Event()
        _write(driver, key)
        woken.append(driver._wake.is_set())
    # a opens a batch, b joins it, c seals it (3 transactions), d opens the next one.
    assert woken == [True, False, True, True]
    assert device.replica.chains[(SHARED, device.replica.client_id)].seq == 1
