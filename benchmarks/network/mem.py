"""Ours in memory: the same drivers over in-memory streams, every node in one trio run."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from pycrdt import Doc

from benchmarks.network.common import (
    TIMEOUT_S,
    W1_RECORDS,
    W1P_RATE,
    W1P_RECORDS,
    W2_BASE,
    W2_RECORDS,
    W3_READERS,
    W3_RECORDS,
    Arrivals,
    figures,
    latencies,
)
from benchmarks.network.ours import (
    Counting,
    messages,
    open_device,
    prepare_runtime,
    wait_runtime_holds,
    write,
)
from crdt_state.schema import SHARED
from mesh.engine import RUNTIME_ROLE, Engine
from mesh.transport.memory import memory_stream_pair
from nodes.driver import EngineDriver


@dataclass
class _MemMesh:
    """The runtime and devices as EngineDrivers in this trio run, over in-memory streams."""

    nursery: trio.Nursery
    runtime: EngineDriver
    runtime_key: bytes
    devices: list[EngineDriver]
    streams: dict[int, Counting] = field(default_factory=dict)
    scopes: dict[int, trio.CancelScope] = field(default_factory=dict)

    def connect(self, i: int) -> None:
        device = self.devices[i]
        at_device, at_runtime = memory_stream_pair(
            device.engine.identity.public_key, self.runtime_key
        )
        self.nursery.start_soon(self.runtime.run_session, at_runtime)
        stream = self.streams[i] = Counting(at_device)
        scope = self.scopes[i] = trio.CancelScope()

        async def session() -> None:
            with scope:
                await device.run_session(stream)

        self.nursery.start_soon(session)

    async def disconnect(self, i: int) -> None:
        self.scopes.pop(i).cancel()
        await trio.sleep(0.05)


@asynccontextmanager
async def _mem_mesh(folder: Path, n_devices: int) -> AsyncIterator[_MemMesh]:
    from nodes.setup import open_node

    folder.mkdir(parents=True)
    prepared = prepare_runtime(folder, n_devices)
    with ExitStack() as stores:  # closed last: drivers flush once more when cancelled
        node = open_node(prepared.datadir)
        stores.callback(node.close)
        runtime = EngineDriver(Engine(node.replica, node.identity, RUNTIME_ROLE))
        devices = []
        for i, identity in enumerate(prepared.devices):
            driver = open_device(
                identity,
                prepared.key,
                prepared.mesh_id,
                prepared.entries,
                folder / f"device{i}.sqlite",
            )
            stores.callback(driver.engine.replica.store.close)
            devices.append(driver)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.run)
            for driver in devices:
                nursery.start_soon(driver.run)
            try:
                yield _MemMesh(nursery, runtime, prepared.key, devices)
            finally:
                nursery.cancel_scope.cancel()


async def _mem_stream(folder: Path, n: int, rate: float | None) -> dict[str, Any]:
    async with _mem_mesh(folder, 2) as mesh:
        writer, reader = mesh.devices
        mesh.connect(0)
        mesh.connect(1)
        await trio.sleep(0.2)
        done = trio.Event()
        arrivals = Arrivals(messages(reader), n, done.set)
        written: list[float] = []
        start = time.monotonic()
        with trio.fail_after(TIMEOUT_S):
            await write(writer, 0, n, written, rate)
            await done.wait()
        arrivals.stop()
        elapsed = arrivals.times[-1] - start
        return {"records_per_s": round(n / elapsed), **latencies(written, arrivals.times[:n])}


async def _mem_w2(folder: Path, base: int, n: int) -> dict[str, Any]:
    async with _mem_mesh(folder, 2) as mesh:
        writer, reader = mesh.devices
        mesh.connect(0)
        mesh.connect(1)
        written: list[float] = []
        done = trio.Event()
        arrivals = Arrivals(messages(reader), base, done.set)
        await write(writer, 0, base, written)
        with trio.fail_after(TIMEOUT_S):
            await done.wait()
        arrivals.stop()
        await trio.sleep(0.2)  # let the last acknowledgements land
        await mesh.disconnect(1)
        await write(writer, base, n, written)
        await wait_runtime_holds(writer, mesh.runtime_key)
        await trio.sleep(0.2)
        done = trio.Event()
        arrivals = Arrivals(messages(reader), base + n, done.set)
        start = time.monotonic()
        with trio.fail_after(TIMEOUT_S):
            mesh.connect(1)
            await done.wait()
        elapsed = time.monotonic() - start
        arrivals.stop()
        stream = mesh.streams[1]
        yjs = writer.engine.replica.doc(SHARED).get_update(Doc().get_state())
        return {
            "seconds": round(elapsed, 3),
            "framed_bytes_to_reader": stream.received,
            "framed_bytes_from_reader": stream.sent,
            "yjs_full_update_bytes": len(yjs),
        }


async def _mem_w3(folder: Path, readers: int, n: int) -> dict[str, Any]:
    async with _mem_mesh(folder, readers + 1) as mesh:
        writer, *rest = mesh.devices
        for i in range(len(mesh.devices)):
            mesh.connect(i)
        await trio.sleep(0.5)
        remaining = [len(rest)]
        done = trio.Event()

        def one_done() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

        watchers = [Arrivals(messages(node), n, one_done) for node in rest]
        written: list[float] = []
        start = time.monotonic()
        with trio.fail_after(TIMEOUT_S):
            await write(writer, 0, n, written)
            await done.wait()
        elapsed = max(w.times[n - 1] for w in watchers) - start
        for w in watchers:
            w.stop()
        return {"seconds": round(elapsed, 3)}


async def run_mem(folder: Path) -> dict[str, Any]:
    w1 = await _mem_stream(folder / "w1", W1_RECORDS, None)
    w1p = await _mem_stream(folder / "w1p", W1P_RECORDS, W1P_RATE)
    w2 = await _mem_w2(folder / "w2", W2_BASE, W2_RECORDS)
    w3 = await _mem_w3(folder / "w3", W3_READERS, W3_RECORDS)
    return figures(w1, w1p, w2, w3)
