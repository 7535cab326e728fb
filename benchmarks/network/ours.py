"""Our nodes as the benchmark builds them: a prepared runtime data dir, device drivers, writes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from pycrdt import Map

from benchmarks.network.common import (
    ROOT,
    TIMEOUT_S,
    YEAR_MS,
    prefix_len,
    record,
)
from crdt_state.replica import Replica
from crdt_state.schema import SHARED
from crdt_state.storage.sqlite import SqliteStore
from mesh.engine import DEVICE_ROLE, RUNTIME_ROLE, Engine
from mesh.identity import Identity
from mesh.membership.records import APPROVE, READ, WRITE
from mesh.transport.base import FrameStream
from nodes.driver import EngineDriver, wall_ms


class Counting:
    """A FrameStream that counts framed bytes (length prefix + frame) both ways."""

    def __init__(self, inner: FrameStream) -> None:
        self.inner = inner
        self.peer = inner.peer
        self.sent = 0
        self.received = 0

    async def send(self, frame: bytes) -> None:
        self.sent += len(frame) + prefix_len(len(frame))
        await self.inner.send(frame)

    async def receive(self) -> bytes:
        frame = await self.inner.receive()
        self.received += len(frame) + prefix_len(len(frame))
        return frame

    async def close(self) -> None:
        await self.inner.close()

    async def reset(self) -> None:
        await self.inner.reset()


@dataclass
class Runtime:
    """A prepared runtime data dir: mesh, membership and the devices' identities."""

    datadir: Any
    key: bytes
    mesh_id: bytes
    entries: list[bytes]
    devices: list[Identity]


def prepare_runtime(folder: Path, n_devices: int) -> Runtime:
    """``agentmesh init`` and ``devices add`` for ``n_devices`` (through their functions)."""
    from nodes.datadir import DataDir
    from nodes.membership_ops import certificate_for
    from nodes.setup import init_runtime, open_node

    datadir = DataDir(folder / "runtime")
    now = wall_ms()
    init_runtime(datadir, now)
    node = open_node(datadir)
    engine = Engine(node.replica, node.identity, RUNTIME_ROLE)
    identities = [Identity.generate() for _ in range(n_devices)]
    caps = frozenset({READ, WRITE, APPROVE})
    for i, identity in enumerate(identities):
        mesh_id = node.replica.mesh_id
        cert = certificate_for(datadir, mesh_id, identity.public_key, caps, f"d{i}", now, YEAR_MS)
        engine.admit(cert, now)
    entries = [entry.raw for entry in node.replica.membership.entries]
    runtime = Runtime(datadir, node.identity.public_key, node.replica.mesh_id, entries, identities)
    node.close()
    return runtime


def open_device(
    identity: Identity, runtime_key: bytes, mesh_id: bytes, entries: list[bytes], path: Path
) -> EngineDriver:
    """A device's replica (SQLite, synchronous=FULL), engine and driver."""
    from mesh.membership.log import decode_entry

    replica = Replica(mesh_id=mesh_id, store=SqliteStore(path), author=identity)
    replica.load()
    for raw in entries:
        replica.add_log_entry(decode_entry(raw))
    replica.store.commit()
    replica.doc(SHARED).get(ROOT, type=Map)
    return EngineDriver(Engine(replica, identity, DEVICE_ROLE, pinned_runtime=runtime_key))


def messages(driver: EngineDriver) -> Map[Any]:
    ymap: Map[Any] = driver.engine.replica.doc(SHARED).get(ROOT, type=Map)
    return ymap


async def write(
    driver: EngineDriver, start: int, n: int, written: list[float], rate: float | None = None
) -> None:
    """``n`` records, each its own transaction; yields after each (paced if ``rate``)."""
    begin = time.monotonic()
    for i in range(start, start + n):
        if rate is not None:
            delay = begin + (i - start) / rate - time.monotonic()
            if delay > 0:
                await trio.sleep(delay)
        with driver.transact(SHARED) as ydoc:
            ydoc.get(ROOT, type=Map)[f"r{i}"] = record(i)
        written.append(time.monotonic())
        await trio.sleep(0)


async def wait_runtime_holds(driver: EngineDriver, runtime_key: bytes) -> None:
    """Until the runtime has durably acknowledged everything this device wrote."""
    with trio.fail_after(TIMEOUT_S):
        while True:
            status = driver.engine.status(runtime_key)
            if status.ready and status.they_lack == 0 and status.unacked_batches == 0:
                return
            await trio.sleep(0.01)
