"""The snapshot helper: a full snapshot written by another process while the node writes on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from pycrdt import Map

import nodes.snapshot_helper as helper
from crdt_state.schema import SHARED
from crdt_state.snapshot import read_snapshot
from crdt_state.storage.sqlite import SqliteStore
from nodes import tracking
from nodes.driver import EngineDriver
from tests.crdt_state.test_snapshot import busy_mesh, reopen, reopen_without_snapshot, state_of
from tests.support import NOW, Mesh, Node


def sqlite_mesh(tmp_path: Path) -> tuple[Mesh, Node, Node, Path]:
    def stores(name: str) -> SqliteStore:
        return SqliteStore(tmp_path / f"{name}.sqlite")

    mesh, phone, laptop = busy_mesh(stores)
    mesh.runtime.replica.store.set_meta("mesh_id", mesh.mesh_id)
    mesh.runtime.replica.store.commit()
    return mesh, phone, laptop, tmp_path / "runtime.sqlite"


def test_the_helper_writes_a_snapshot_that_reopens_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, _phone, _laptop, path = sqlite_mesh(tmp_path)
    lid = helper.refresh_store(path)
    store = mesh.runtime.replica.store
    assert lid == store.last_lid() > 0
    snapshot = read_snapshot(store)
    assert snapshot is not None and snapshot.lid == lid
    with_snapshot = state_of(reopen(mesh, SqliteStore(path)))
    assert with_snapshot == state_of(reopen_without_snapshot(mesh, SqliteStore(path), monkeypatch))


def test_envelopes_stored_while_the_helper_works_are_not_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, phone, _laptop, path = sqlite_mesh(tmp_path)
    before = mesh.runtime.replica.store.last_lid()
    real = helper.full_snapshot

    def meanwhile(replica: Any, lid: int) -> Any:
        # The node stores more envelopes while the helper builds its snapshot.
        for i in range(3):
            phone.write(SHARED, "messages", f"meanwhile{i}", {"text": "late"}, NOW + 90_000 + i)
            mesh.settle(NOW + 90_000 + i)
        mesh.runtime.replica.store.commit()
        return real(replica, lid)

    monkeypatch.setattr(helper, "full_snapshot", meanwhile)
    assert helper.refresh_store(path) == before
    store = mesh.runtime.replica.store
    assert store.last_lid() > before
    reopened = reopen(mesh, SqliteStore(path))  # the snapshot, then the envelopes after it
    assert "meanwhile2" in reopened.doc(SHARED).get("messages", type=Map)
    replayed = reopen_without_snapshot(mesh, SqliteStore(path), monkeypatch)
    assert state_of(reopened) == state_of(replayed)


def test_the_helper_command(tmp_path: Path) -> None:
    mesh, _phone, _laptop, path = sqlite_mesh(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "nodes", "snapshot-refresh", "--store", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == mesh.runtime.replica.store.last_lid()
    bad = subprocess.run(
        [sys.executable, "-m", "nodes", "snapshot-refresh", "--store", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


async def test_a_running_tracker_refreshes_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, phone, _laptop, _path = sqlite_mesh(tmp_path)
    driver = EngineDriver(mesh.runtime.engine, clock=lambda: NOW)
    tracker = tracking.attach(driver)
    tracker.snapshots.every = 4
    tracker.snapshots.growth_divisor = 1_000_000
    store = mesh.runtime.replica.store
    wrote_in_process: list[bool] = []
    tracker.snapshots.write = lambda: wrote_in_process.append(True) or False  # type: ignore[method-assign]

    def observe(key: bytes, output: Any) -> None:
        if key == mesh.runtime.key:
            tracker(output)

    mesh.net.observers.append(observe)
    helpers: list[Path] = []
    real = helper.refresh_in_helper

    async def counting(path: Path) -> bool:
        helpers.append(path)
        return await real(path)

    monkeypatch.setattr(helper, "refresh_in_helper", counting)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tracker.run)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(6):
            phone.write(SHARED, "messages", f"more{i}", {"text": "x"}, NOW + 95_000 + i)
        mesh.settle(NOW + 96_000)
        store.commit()
        await trio.testing.wait_all_tasks_blocked()  # the refresher has started its helper
        with trio.fail_after(120):
            await tracker.refresh_now()  # waits for that helper; nothing left to do after it
        nursery.cancel_scope.cancel()
    assert len(helpers) == 1  # started by the running tracker, once
    assert tracker.snapshots.lid == store.last_lid()
    assert wrote_in_process == []  # the helper did it, not the node's own loop
    snapshot = read_snapshot(store)
    assert snapshot is not None and snapshot.lid == store.last_lid()


async def test_a_helper_that_cannot_start_is_a_failure_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mesh, _phone, _laptop, path = sqlite_mesh(tmp_path)
    monkeypatch.setattr(helper.sys, "executable", str(tmp_path / "no-such-python"))
    assert await helper.refresh_in_helper(path) is False
