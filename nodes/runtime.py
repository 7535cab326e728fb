"""The runtime node: listens on libp2p, admits only members, keeps computing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee

from mesh.engine import RUNTIME_ROLE, Close, Engine, Output
from mesh.identity import Identity, public_key_of_peer_id
from mesh.pairing.admin import AdminDesk
from mesh.pairing.protocol import JoinDesk
from mesh.transport.libp2p import (
    SYNC_PROTOCOL,
    InboundGuard,
    Libp2pFrameStream,
    build_host,
    close_host,
    full_addresses,
)
from nodes import renewal, service, tracking
from nodes.admin import ADMIN_PROTOCOL, admin_handler
from nodes.agent.base import Agent
from nodes.agent.runner import AgentRunner
from nodes.agent.tools import builtin_tools
from nodes.control import serve_control
from nodes.datadir import DataDir
from nodes.driver import EngineDriver
from nodes.pairing import JOIN_PROTOCOL, RateLimiter, join_handler
from nodes.setup import open_node

if TYPE_CHECKING:  # trio-typing (a libp2p dependency) ships older stubs for trio
    from trio_typing import TaskStatus
else:
    from trio import TaskStatus

log = logging.getLogger("agentmesh.runtime")
#: How long a closed session may take to deliver its last frames before the connection goes.
DROP_GRACE_S = 5.0
DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4001"


@dataclass(frozen=True)
class RuntimeReady:
    """What a started runtime tells its caller."""

    peer_id: str
    addresses: list[str]
    mesh_id: str
    #: The running engine's driver and the listener's guard (for in-process callers and tests).
    driver: EngineDriver | None = field(default=None, compare=False, repr=False)
    guard: InboundGuard | None = field(default=None, compare=False, repr=False)
    tracker: tracking.NodeTracker | None = field(default=None, compare=False, repr=False)


class MembershipGate(INotifee):
    """Closes every connection from a peer that is not a current member, before any stream."""

    def __init__(self, driver: EngineDriver, authorize: Callable[[bytes], bool]) -> None:
        self.driver = driver
        self.authorize = authorize
        self.refused = 0

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        try:
            key = public_key_of_peer_id(str(conn.muxed_conn.peer_id))
            allowed = self.authorize(key)
        except ValueError:
            allowed = False
        if not allowed:
            self.refused += 1
            log.info("refusing connection from non-member %s", conn.muxed_conn.peer_id)
            await conn.close()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


async def serve_runtime(
    datadir: DataDir,
    listen: Sequence[str] = (DEFAULT_LISTEN,),
    *,
    announce: Sequence[str] = (),
    agent: Agent | None = None,
    task_status: TaskStatus[RuntimeReady] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the runtime in the foreground until cancelled. The caller holds the lock.

    ``agent``: the agent that works on ``shared/tasks`` (none: tasks wait).
    """
    node = open_node(datadir)
    engine = Engine(node.replica, node.identity, RUNTIME_ROLE)
    driver = EngineDriver(engine)
    desk = JoinDesk(engine, node.replica.store, list(announce))
    guard = InboundGuard()

    def authorize(key: bytes) -> bool:
        # Members; and, only while an invite is open, strangers, who may open nothing but
        # the join protocol (rate limited; the sync handler refuses a stranger before
        # reading a byte of it). A revoked key is shut out at once. Letting strangers in
        # at all times costs every stranger a yamux session and a peerstore entry.
        now = driver.clock()
        if driver.engine.admissible(key, now):
            return True
        member = driver.engine.replica.membership.member(key)
        return member is None and invites_open(now)

    open_until = [0, False]  # (checked at ms, answer): one store read per second at most

    def invites_open(now: int) -> bool:
        if now - open_until[0] >= 1_000:
            open_until[0], open_until[1] = now, bool(desk.open_invites(now))
        return bool(open_until[1])

    host = build_host(
        node.identity,
        # A refused key is closed right after Noise, before yamux; the gate below is a
        # second line.
        authorize=authorize,
        # Strangers let in (to join) are closed after STRANGER_CONNECTION_TIMEOUT_MS.
        is_member=lambda key: driver.engine.admissible(key, driver.clock()),
        guard=guard,
    )
    gate = MembershipGate(driver, authorize)
    host.get_network().register_notifee(gate)

    async def on_stream(stream: INetStream) -> None:
        try:
            frames = Libp2pFrameStream(stream)
        except ValueError:
            await stream.reset()
            return
        await driver.run_session(frames)

    host.set_stream_handler(SYNC_PROTOCOL, on_stream)
    host.set_stream_handler(JOIN_PROTOCOL, join_handler(desk, driver, RateLimiter()))
    host.set_stream_handler(ADMIN_PROTOCOL, admin_handler(AdminDesk(engine, desk), driver))
    network = host.get_network()

    async def drop_connections(peers: list[bytes]) -> None:
        # All at once: py-libp2p's close takes 0.2 s, and one after another a flood of
        # strangers would keep their connections while they wait for their turn.
        dropping = set(peers)
        async with trio.open_nursery() as closing:
            for conn in list(network.get_connections()):
                if public_key_of_peer_id(str(conn.muxed_conn.peer_id)) in dropping:
                    closing.start_soon(conn.close)

    pending_drops: list[bytes] = []
    drop_wake = trio.Event()

    def on_output(output: Output) -> None:
        nonlocal drop_wake
        if isinstance(output, Close) and output.code == "not-a-member":
            pending_drops.append(output.peer)
            drop_wake.set()

    driver.listeners.append(on_output)
    from nodes.approvals_service import attach_resolver

    attach_resolver(driver)  # settles approvals whenever a decision may have come in

    async def dropper() -> None:
        nonlocal drop_wake
        while True:
            await drop_wake.wait()
            drop_wake = trio.Event()
            peers, pending_drops[:] = list(pending_drops), []
            for peer in peers:  # let the session say why (its last frames) first
                with trio.move_on_after(DROP_GRACE_S):
                    await driver.session_ended(peer)
            await drop_connections(peers)

    try:
        async with host.run(listen_addrs=[multiaddr.Multiaddr(a) for a in listen]):
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(driver.run)
                    tracker = tracking.attach(driver)
                    nursery.start_soon(tracker.run)
                    nursery.start_soon(dropper)
                    # The root renews everyone; without it (moved offline), the runtime
                    # renews the devices it may certify itself.
                    signer = (
                        Identity.load(datadir.root_key)
                        if datadir.root_key.exists()
                        else node.identity
                    )
                    nursery.start_soon(renewal.renew_forever, driver, signer)
                    if agent is not None:
                        tools = builtin_tools(
                            node.replica, driver.transact, datadir.path / "workspace", driver.clock
                        )
                        nursery.start_soon(AgentRunner(driver, agent, tools).run)
                    await nursery.start(  # bound before anyone hears we are up
                        serve_control,
                        datadir.control_socket,
                        lambda request: service.handle(driver, request, desk),
                    )
                    if not desk.addresses:
                        desk.addresses = full_addresses(host)
                    task_status.started(
                        RuntimeReady(
                            node.identity.peer_id,
                            full_addresses(host),
                            node.replica.mesh_id.hex(),
                            driver=driver,
                            guard=guard,
                            tracker=tracker,
                        )
                    )
                    await trio.sleep_forever()
            finally:
                # Inside host.run (PITFALLS: otherwise descriptors and tasks leak), and
                # with every connection closed at once (py-libp2p takes 0.2 s for each).
                await close_host(host)
    finally:
        node.close()
