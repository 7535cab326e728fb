"""The device node: a full local replica that dials the runtime and works offline.

It reconnects with exponential backoff and full jitter. Before a device has
joined a mesh, it trusts only the runtime PeerId pinned in the address it was
given, learns the mesh id from that runtime's hello, and refuses any log whose
runtime is another key.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p.network.swarm import Swarm
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.engine import DEVICE_ROLE, Engine
from mesh.errors import ProtocolError
from mesh.identity import Identity, public_key_of_peer_id
from mesh.limits import DIAL_TIMEOUT_MS, RECONNECT_BACKOFF_BASE_MS, RECONNECT_BACKOFF_CAP_MS
from mesh.pairing.admin import AdminError
from mesh.sync import frames
from mesh.transport.base import TransportError
from mesh.transport.libp2p import SYNC_PROTOCOL, Libp2pFrameStream, build_host
from nodes import admin, service, tracking
from nodes.control import Handler, serve_control
from nodes.datadir import DataDir
from nodes.driver import EngineDriver
from nodes.errors import DataDirError, NodeError
from nodes.setup import MESH_KEY, RUNTIME_ADDR_KEY, OpenNode, open_node

if TYPE_CHECKING:  # trio-typing (a libp2p dependency) ships older stubs for trio
    from trio_typing import TaskStatus
else:
    from trio import TaskStatus

log = logging.getLogger("agentmesh.device")

BACKOFF_BASE_S = RECONNECT_BACKOFF_BASE_MS / 1000
BACKOFF_CAP_S = RECONNECT_BACKOFF_CAP_MS / 1000
BOOTSTRAP_TIMEOUT_S = DIAL_TIMEOUT_MS / 1000


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** min(attempt, 30))))


@dataclass(frozen=True)
class DeviceReady:
    peer_id: str
    runtime: str


def runtime_address(datadir: DataDir, given: str | None) -> str:
    """The runtime multiaddr: ``given`` (remembered for next time) or the remembered one."""
    from crdt_state.storage.sqlite import SqliteStore

    store = SqliteStore(datadir.store)
    try:
        if given:
            info_from_p2p_addr(multiaddr.Multiaddr(given))  # must carry /p2p/<id>
            store.set_meta(RUNTIME_ADDR_KEY, given.encode())
            store.commit()
            return given
        remembered = store.get_meta(RUNTIME_ADDR_KEY)
        if remembered is None:
            raise DataDirError("no runtime address known: pass --runtime MULTIADDR")
        return remembered.decode()
    finally:
        store.close()


async def run_device(
    datadir: DataDir,
    runtime_addr: str | None,
    *,
    task_status: TaskStatus[DeviceReady] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the device node until cancelled. The caller holds the data dir lock."""
    datadir.require()
    address = runtime_address(datadir, runtime_addr)
    info = info_from_p2p_addr(multiaddr.Multiaddr(address))
    runtime_key = public_key_of_peer_id(str(info.peer_id))
    identity = Identity.load(datadir.identity_key)
    rng = random.Random()
    host = build_host(identity)
    state: dict[str, object] = {}
    node_box: list[OpenNode] = []
    driver_box: list[EngineDriver] = []

    async def start_node(nursery: trio.Nursery, mesh_id: bytes | None) -> EngineDriver:
        node = open_node(datadir, mesh_id=mesh_id)
        engine = Engine(node.replica, node.identity, DEVICE_ROLE, pinned_runtime=runtime_key)
        driver = EngineDriver(engine)
        node_box.append(node)
        driver_box.append(driver)
        nursery.start_soon(driver.run)
        nursery.start_soon(tracking.attach(driver).run)
        # Bound before anyone hears we are up: a command right after start finds it.
        await nursery.start(serve_control, datadir.control_socket, control_handler(driver))
        return driver

    def control_handler(driver: EngineDriver) -> Handler:
        def handle(request: dict[str, Any]) -> dict[str, Any] | Awaitable[dict[str, Any]]:
            if request.get("op") == "admin":
                return forward_admin(request)
            return service.handle(driver, request)

        return handle

    async def forward_admin(request: dict[str, Any]) -> dict[str, Any]:
        encoded = request.get("request")
        if not isinstance(encoded, str):
            raise NodeError("admin needs a request")
        try:
            reply = await admin.ask(host, address, bytes.fromhex(encoded))
        except AdminError as exc:
            raise NodeError(str(exc)) from exc
        return {"ok": True, "reply": reply.encode().hex()}

    from crdt_state.storage.sqlite import SqliteStore

    probe = SqliteStore(datadir.store)
    known_mesh = probe.get_meta(MESH_KEY)
    probe.close()

    try:
        async with host.run(listen_addrs=[]), trio.open_nursery() as nursery:
            if known_mesh is not None:
                await start_node(nursery, None)
            task_status.started(DeviceReady(identity.peer_id, address))
            attempt = 0
            while True:
                driver = driver_box[0] if driver_box else None
                if driver is not None and driver.engine.is_revoked():
                    log.error("this device has been revoked; it stops syncing")
                    state["revoked"] = True
                    await trio.sleep_forever()
                try:
                    # Our own backoff decides when to retry; py-libp2p's negative dial
                    # cache would otherwise refuse a runtime that just restarted.
                    network = host.get_network()
                    if isinstance(network, Swarm):
                        network.unblock_peer(info.peer_id)
                    with trio.fail_after(BOOTSTRAP_TIMEOUT_S):
                        await host.connect(info)
                        stream = await host.new_stream(info.peer_id, [SYNC_PROTOCOL])
                    frames_stream = Libp2pFrameStream(stream)
                    if frames_stream.peer != runtime_key:
                        raise TransportError("a different key answered at the runtime's address")
                    initial: list[bytes] = []
                    if driver is None:
                        with trio.fail_after(BOOTSTRAP_TIMEOUT_S):
                            first = await frames_stream.receive()
                        hello = frames.decode(first)
                        if not isinstance(hello, frames.Hello):
                            raise ProtocolError("runtime did not start with a hello")
                        driver = await start_node(nursery, hello.mesh_id)
                        initial.append(first)
                    log.info("connected to runtime %s", info.peer_id)
                    attempt = 0
                    await driver.run_session(frames_stream, initial=initial)
                    log.info("session with runtime ended")
                except (TransportError, ProtocolError, trio.TooSlowError, OSError) as exc:
                    log.info("cannot sync with runtime: %s", exc)
                except Exception as exc:  # py-libp2p raises many kinds when dialing fails
                    log.info("cannot reach runtime: %s: %s", type(exc).__name__, exc)
                delay = backoff_delay(attempt, rng)
                attempt += 1
                await trio.sleep(delay)
    finally:
        with trio.CancelScope(shield=True):
            await host.close()
            for node in node_box:
                node.close()
