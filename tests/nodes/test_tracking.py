"""The node tracker's snapshot schedule: refreshed under load when due, and once idle."""

from __future__ import annotations

from crdt_state.schema import SHARED
from mesh.engine import Output
from mesh.limits import SNAPSHOT_IDLE_MS
from nodes import tracking
from nodes.driver import EngineDriver
from tests.support import NOW, new_mesh, seeded_identity


def test_an_idle_node_brings_its_snapshot_up_to_date() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10), name="phone")
    clock = [NOW]
    driver = EngineDriver(mesh.runtime.engine, clock=lambda: clock[0])
    tracker = tracking.attach(driver)

    def observe(key: bytes, output: Output) -> None:
        if key == mesh.runtime.key:
            tracker(output)

    mesh.net.observers.append(observe)
    assert mesh.connect(phone)
    for i in range(5):  # far fewer than a busy node waits for
        phone.write(SHARED, "messages", f"m{i}", {"text": "hi"}, clock[0])
        mesh.settle(clock[0])
    assert not tracker.snapshots.due()
    behind = tracker.snapshots.behind()
    assert behind > 0

    clock[0] = tracker.last_accepted_ms + SNAPSHOT_IDLE_MS - 1
    tracker.refresh_if_idle()
    assert tracker.snapshots.behind() == behind  # not idle long enough

    clock[0] += 1
    tracker.refresh_if_idle()
    assert tracker.snapshots.behind() == 0
    assert tracker.snapshots.lid == mesh.runtime.replica.store.last_lid()

    tracker.refresh_if_idle()  # nothing new: nothing to write
    assert tracker.snapshots.writes == 1
