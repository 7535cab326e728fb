"""Real partitions: a fault-injecting TCP proxy between a real runtime and real devices.

The runtime and two devices run in this process over real libp2p on 127.0.0.1,
each device reaching the runtime through its own FaultProxy. Partitions (cut,
blackhole), loss (drop) and latency (delay) come and go while everyone writes;
after each heal the three stores converge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from crdt_state.replica import Replica
from crdt_state.storage.sqlite import SqliteStore
from crdt_state.views import docs_to_py
from mesh.engine import RUNTIME_ROLE, Engine
from mesh.membership.records import APPROVE, READ, WRITE
from nodes import control
from nodes.datadir import DataDir
from nodes.device import run_device
from nodes.membership_ops import certificate_for
from nodes.runtime import serve_runtime
from nodes.setup import init_device, init_runtime, open_node
from tests.nodes.proxy import FaultProxy

WAIT_S = 90.0


def admit(runtime_dir: DataDir, device_dir: DataDir, name: str, now: int) -> None:
    from mesh.identity import Identity

    subject = Identity.load(device_dir.identity_key).public_key
    node = open_node(runtime_dir)
    try:
        cert = certificate_for(
            runtime_dir,
            node.replica.mesh_id,
            subject,
            frozenset({READ, WRITE, APPROVE}),
            name,
            now,
            86_400_000,
        )
        Engine(node.replica, node.identity, RUNTIME_ROLE).admit(cert, now)
    finally:
        node.close()


def snapshot(datadir: DataDir) -> tuple[dict[str, Any], dict[str, dict[int, int]]]:
    store = SqliteStore(datadir.store, readonly=True)
    mesh = store.get_meta("mesh_id")
    assert mesh is not None
    replica = Replica(mesh_id=mesh, store=store)
    replica.load()
    try:
        return docs_to_py(replica.docs), replica.vectors()
    finally:
        store.close()


async def ask(datadir: DataDir, request: dict[str, Any]) -> dict[str, Any]:
    reply = await trio.to_thread.run_sync(control.request, datadir.control_socket, request)
    assert reply is not None
    return reply


async def wait_for(what: str, condition: Callable[[], Any]) -> None:
    """Poll an async condition until it holds (bounded)."""
    with trio.fail_after(WAIT_S):
        while not await condition():
            await trio.sleep(0.05)


async def synced(*dirs: DataDir) -> bool:
    for datadir in dirs:
        status = await ask(datadir, {"op": "status"})
        if not status["synced"]:
            return False
    return True


async def send(datadir: DataDir, prefix: str, n: int) -> None:
    texts = [f"{prefix} {i}" for i in range(n)]
    await ask(datadir, {"op": "send-many", "texts": texts})


@pytest.fixture
def fast_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Shorter named limits so a blackholed session is noticed in seconds, not minutes.
    monkeypatch.setattr("mesh.engine.ACK_TIMEOUT_MS", 2_000)
    monkeypatch.setattr("nodes.device.BACKOFF_CAP_S", 0.5)
    monkeypatch.setattr("nodes.device.BOOTSTRAP_TIMEOUT_S", 3.0)


async def test_partitions_loss_and_latency_heal_and_converge(
    tmp_path: Path, fast_timeouts: None
) -> None:
    import time

    now = time.time_ns() // 1_000_000
    rt, a, b = (DataDir(tmp_path / n) for n in ("runtime", "a", "b"))
    init_runtime(rt, now)
    init_device(a)
    init_device(b)
    admit(rt, a, "a", now)
    admit(rt, b, "b", now)
    async with trio.open_nursery() as nursery:
        ready = await nursery.start(serve_runtime, rt, ["/ip4/127.0.0.1/tcp/0"])
        port = int(ready.addresses[0].split("/tcp/")[1].split("/")[0])
        proxy_a, proxy_b = FaultProxy(port), FaultProxy(port)
        await nursery.start(proxy_a.serve)
        await nursery.start(proxy_b.serve)
        await nursery.start(run_device, a, f"/ip4/127.0.0.1/tcp/{proxy_a.port}/p2p/{ready.peer_id}")
        await nursery.start(run_device, b, f"/ip4/127.0.0.1/tcp/{proxy_b.port}/p2p/{ready.peer_id}")
        await wait_for("first sync", lambda: synced(rt, a, b))

        # A is cut off; both sides keep writing.
        proxy_a.set_mode("cut")
        await send(a, "a offline", 50)
        await send(b, "b during partition", 50)
        await send(rt, "runtime during partition", 20)
        await wait_for("B synced during the partition", lambda: synced(b))
        assert not (await ask(a, {"op": "status"}))["synced"]
        proxy_a.set_mode("pass")
        await wait_for("heal after cut", lambda: synced(rt, a, b))

        # Loss on B's path: connections break and are re-made until the writes get through.
        proxy_b.set_mode("drop", drop_rate=0.3)
        await send(b, "b lossy", 100)
        await send(a, "a while b lossy", 30)
        proxy_b.set_mode("pass")
        await wait_for("heal after loss", lambda: synced(rt, a, b))

        # Latency on both paths.
        proxy_a.set_mode("delay", delay_s=0.03)
        proxy_b.set_mode("delay", delay_s=0.03)
        await send(a, "a slow", 40)
        await send(b, "b slow", 40)
        await wait_for("sync with latency", lambda: synced(rt, a, b))
        proxy_a.set_mode("pass")
        proxy_b.set_mode("pass")

        # A blackhole: the connection stays open but nothing moves.
        proxy_a.set_mode("blackhole")
        await send(a, "a into the void", 30)
        await send(rt, "runtime meanwhile", 10)
        await wait_for("runtime notices the stalled session", lambda: synced(rt, b))
        proxy_a.set_mode("pass")
        await wait_for("heal after blackhole", lambda: synced(rt, a, b))

        nursery.cancel_scope.cancel()

    final = snapshot(rt)
    assert snapshot(a) == final
    assert snapshot(b) == final
    messages = final[0]["shared"]["messages"]
    assert len(messages) == 50 + 50 + 20 + 100 + 30 + 40 + 40 + 30 + 10
