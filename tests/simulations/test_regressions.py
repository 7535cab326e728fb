"""Production bugs the simulator found, each as a minimal test (they failed before the fix).

1. A device kept resending envelopes beyond its own cutoff; the runtime closed the
   session on the refusals before its membership entries reached the device, forever.
   Fixed: the engine never sends an envelope membership cuts off, and sends
   membership entries before closing a session for refusals.
2. A dropped Replica leaked its documents (pycrdt holds observers from Rust).
   Fixed: ``Replica.__del__`` unobserves.
3. Sealing a local delete or overwrite diffs the document's whole delete set in time
   quadratic in its tombstone ranges. Fixed: one linear sweep.
"""

from __future__ import annotations

import gc
import time
import weakref

from pycrdt import Map

from crdt_state import lib0
from crdt_state.envelope import seal
from crdt_state.replica import Replica
from crdt_state.schema import SHARED, device_doc
from crdt_state.storage.memory import MemoryStore
from mesh.engine import Engine, Output, Refused
from mesh.sync import frames
from tests.support import NOW, new_mesh, seeded_identity

#: Tombstone ranges of one client in a document's delete set (a busy map's overwrites),
#: small and four times larger: linear work grows 4x, quadratic work 16x.
TOMBSTONES_SMALL = 1_000
TOMBSTONES_LARGE = 4 * TOMBSTONES_SMALL
#: Growth above this (between 4 and 16) means quadratic.
MAX_GROWTH = 8.0
REPEATS = 3
#: Envelopes written after the cutoff: more than one batch (MAX_ENVELOPES_PER_BATCH).
CUT_OFF_WRITES = 300
SESSIONS = 3


def test_quarantined_author_new_incarnation_still_syncs() -> None:
    mesh = new_mesh()
    device = mesh.add_device(seeded_identity(10), name="d")
    mesh.connect(device)
    device.write(SHARED, "messages", "first", "1")
    mesh.settle()
    replica = device.replica
    # A second, different envelope for the device's seq 1: a fork, quarantined by the runtime.
    chain = replica.chains[(SHARED, replica.client_id)]
    stored = replica.store.get_envelope(SHARED, replica.client_id, chain.seq)
    assert stored is not None
    fork = seal(
        device.identity,
        mesh_id=mesh.mesh_id,
        doc=SHARED,
        incarnation=replica.incarnation,
        seq=1,
        hlc=NOW << 16,
        mship=replica.membership.length,
        context=(),
        prev=bytes(32),
        update=b"\x00\x00",
    )
    runtime = mesh.runtime.engine
    runtime.receive(device.key, frames.encode(frames.Envelopes(10**6, (fork.raw,))), NOW)
    runtime.flush(NOW)
    assert (device.key, replica.incarnation) in mesh.runtime.replica.membership.quarantined
    mesh.disconnect(device)
    for i in range(CUT_OFF_WRITES):  # offline writes of the quarantined incarnation
        device.write(SHARED, "messages", f"late{i}", str(i))
        replica.seal_all(NOW)
    replica.store.commit()
    # The device restarts: a new incarnation, which nobody quarantined, writes once.
    store = replica.store
    assert isinstance(store, MemoryStore)
    fresh = Replica(mesh_id=mesh.mesh_id, store=store, author=device.identity)
    fresh.load()
    device.replica = fresh
    device.engine = Engine(fresh, device.identity, device.engine.role)
    mesh.net.engines[device.key] = device.engine
    own_doc = device_doc(device.peer_id)  # a document the cut-off envelopes never touched
    device.write(own_doc, "acks", "after-restart", "new")
    fresh.seal_all(NOW)
    refused: list[Refused] = []

    def watch(_key: bytes, out: Output) -> None:
        if isinstance(out, Refused):
            refused.append(out)

    mesh.net.observers.append(watch)
    for _ in range(SESSIONS):
        mesh.connect(device)
        mesh.settle()
        mesh.disconnect(device)
    assert refused, "the runtime refused the cut-off envelopes"
    content = mesh.runtime.replica.doc(own_doc).get("acks", type=Map).to_py() or {}
    assert "after-restart" in content, "the new incarnation's write never reached the runtime"


def test_a_dropped_replica_frees_its_documents() -> None:
    mesh = new_mesh()
    device = mesh.add_device(seeded_identity(10), name="d")
    device.write(SHARED, "messages", "k", "v")
    device.replica.seal_all(NOW)
    ydoc = weakref.ref(device.replica.doc(SHARED))
    mesh.devices.clear()
    mesh.net.engines.pop(device.key)
    del device
    gc.collect()
    assert ydoc() is None, "the document outlived its replica"


def test_subtracting_delete_sets_is_linear() -> None:
    def cost(ranges: int) -> float:
        # Every other clock deleted: one range per overwrite, as a map's tombstones look.
        before = [(7, 2 * i, 1) for i in range(ranges)]
        after = [*before, (7, 2 * ranges, 1)]
        best = float("inf")
        for _ in range(REPEATS):
            started = time.perf_counter()
            new = lib0.subtract_delete_sets(after, before)
            best = min(best, time.perf_counter() - started)
        assert new == {7: [(2 * ranges, 1)]}
        return best

    growth = cost(TOMBSTONES_LARGE) / cost(TOMBSTONES_SMALL)
    assert growth < MAX_GROWTH, f"4x the tombstones cost {growth:.1f}x the time"
