"""Connection churn and strangers against one runtime, over real libp2p hosts on 127.0.0.1.

* 1,000 connect -> sync (one small write, waited for on the runtime) -> disconnect
  cycles of member devices;
* 1,000 connections from strangers: 500 real libp2p hosts with non-member keys
  that complete Noise and try to open the sync stream, 500 raw TCP connections
  that abandon the handshake (a partial multistream header, a partial Noise
  message, or nothing at all);
* afterwards members still connect and sync, and open file descriptors, trio
  tasks and memory are back near their baseline.

py-libp2p 0.8.1 stopped accepting inbound connections after 250 of them (its
inbound handler tasks never end); see mesh/transport/inbound.py and
docs/NETWORK.md. Tests wait on conditions (events, with trio timeouts), never on
fixed sleeps. The churn tests are marked ``churn``: they run in CI (about a
minute each on a 2-core machine); ``-m 'not churn'`` skips them.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import multiaddr
import pytest
import trio
import trio.testing
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee, IRawConnection
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.swarm import Swarm
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.transport.tcp.tcp import TCP
from pycrdt import Map

from crdt_state.replica import Replica
from crdt_state.schema import SHARED
from crdt_state.storage.sqlite import SqliteStore
from mesh.engine import DEVICE_ROLE, RUNTIME_ROLE, Close, Engine, Output
from mesh.identity import Identity
from mesh.limits import HANDSHAKE_TIMEOUT_S, MAX_PENDING_HANDSHAKES_PER_IP
from mesh.membership.log import LogEntry
from mesh.membership.records import READ, WRITE
from mesh.transport.framing import encode_frame
from mesh.transport.inbound import InboundGuard
from mesh.transport.libp2p import (
    SYNC_PROTOCOL,
    Libp2pFrameStream,
    build_host,
    close_host,
    full_addresses,
)
from nodes import app
from nodes.datadir import DataDir
from nodes.driver import EngineDriver
from nodes.membership_ops import certificate_for
from nodes.runtime import RuntimeReady, serve_runtime
from nodes.setup import init_runtime, open_node

MEMBER_CYCLES = 1_000
MEMBER_DEVICES = 8  # cycles run on this many device hosts at once (each reused)
NOISE_STRANGERS = 500
ABANDONING_STRANGERS = 500
#: Strangers of each kind in flight at once, each worker from its own loopback address
#: (127.0.0.10+ and 127.0.0.30+); members dial from 127.0.0.1.
STRANGER_WORKERS = 16
STRANGER_IP = "127.0.0.2"
WAIT_S = 60.0

churn = pytest.mark.churn


# --- measuring -----------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def trio_tasks() -> int:
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Usage:
    fds: int
    tasks: int
    blocks: int  # sys.getallocatedblocks(): live Python objects, a cheap leak gauge
    rss_kib: int

    def __str__(self) -> str:
        return f"fds={self.fds} tasks={self.tasks} blocks={self.blocks} rss={self.rss_kib}KiB"


async def settle_and_measure() -> Usage:
    """Let every runnable task run to its next block, collect garbage, then measure."""
    import sys

    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    return Usage(open_fds(), trio_tasks(), sys.getallocatedblocks(), rss_kib())


# --- a runtime with members ------------------------------------------------------------------


@dataclass
class Device:
    identity: Identity
    driver: EngineDriver
    host: IHost | None = None  # while online()


@dataclass
class Runtime:
    ready: RuntimeReady
    info: PeerInfo
    driver: EngineDriver
    guard: InboundGuard
    flushed: trio.Event = field(default_factory=trio.Event)
    #: Peers the engine refused a session (strangers that got as far as the sync stream).
    refused: list[bytes] = field(default_factory=list)

    def on_output(self, output: Output) -> None:
        if isinstance(output, Close) and output.code == "not-a-member":
            self.refused.append(output.peer)
        self.flushed.set()
        self.flushed = trio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` holds, checking after each of the runtime's flushes.

        (Applying a device's envelope always produces an output: the ack.)
        """
        while not condition():
            await self.flushed.wait()

    def has_message(self, message_id: str) -> bool:
        messages = self.driver.engine.replica.doc(SHARED).get("messages", type=Map)
        return message_id in messages

    async def until_no_connections(self) -> None:
        """No connection left, and no snapshot helper at work (its pipes are descriptors)."""
        await self.guard.wait_until(lambda: self.guard.open_total == 0)
        assert self.ready.tracker is not None
        await self.ready.tracker.refresh_now()


def admit_members(datadir: DataDir, members: list[Identity]) -> tuple[bytes, list[LogEntry]]:
    """Certify ``members`` with the mesh root key (as ``agentmesh devices add`` does offline)."""
    now = time.time_ns() // 1_000_000
    init_runtime(datadir, now)
    node = open_node(datadir)
    try:
        engine = Engine(node.replica, node.identity, RUNTIME_ROLE)
        mesh_id = node.replica.mesh_id
        for member in members:
            cert = certificate_for(
                datadir,
                mesh_id,
                member.public_key,
                frozenset({READ, WRITE}),
                "churn",
                now,
                3_600_000,
            )
            engine.admit(cert, now)
        node.replica.store.commit()
        return mesh_id, list(node.replica.membership.entries)
    finally:
        node.close()


@asynccontextmanager
async def running_mesh(tmp_path: Path, devices: int) -> AsyncIterator[tuple[Runtime, list[Device]]]:
    identities = [Identity.generate() for _ in range(devices)]
    datadir = DataDir(tmp_path / "runtime")
    mesh_id, entries = admit_members(datadir, identities)
    async with trio.open_nursery() as nursery:
        ready = await nursery.start(serve_runtime, datadir, ["/ip4/127.0.0.1/tcp/0"])
        assert ready.driver is not None and ready.guard is not None
        info = info_from_p2p_addr(multiaddr.Multiaddr(ready.addresses[0]))
        runtime = Runtime(ready, info, ready.driver, ready.guard)
        runtime.driver.listeners.append(runtime.on_output)
        members = []
        for n, identity in enumerate(identities):
            # On disk, as on a real device: memory then measures connections, not data.
            store = SqliteStore(tmp_path / f"device-{n}.sqlite")
            replica = Replica(mesh_id=mesh_id, store=store, author=identity)
            replica.load()
            for entry in entries:
                replica.add_log_entry(entry)
            replica.store.commit()
            runtime_key = replica.membership.runtime_key
            driver = EngineDriver(
                Engine(replica, identity, DEVICE_ROLE, pinned_runtime=runtime_key)
            )
            nursery.start_soon(driver.run)
            members.append(Device(identity, driver))
        yield runtime, members
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def online(devices: list[Device]) -> AsyncIterator[None]:
    """Give each device a running libp2p host; close them all on the way out."""
    async with AsyncExitStack() as stack:
        for device in devices:
            host = build_host(device.identity)
            await stack.enter_async_context(host.run(listen_addrs=[]))
            stack.push_async_callback(_close_host, device, host)
            device.host = host
        yield


async def _close_host(device: Device, host: IHost) -> None:
    device.host = None
    with trio.CancelScope(shield=True):
        await host.close()


async def sync_once(runtime: Runtime, device: Device, text: str) -> None:
    """Connect, write one message, wait until the runtime holds it, disconnect."""
    host = device.host
    assert host is not None
    await host.connect(runtime.info)
    stream = await host.new_stream(runtime.info.peer_id, [SYNC_PROTOCOL])
    async with trio.open_nursery() as session:
        session.start_soon(device.driver.run_session, Libp2pFrameStream(stream))
        driver = device.driver
        message_id = app.send_message(
            driver.transact, device.identity.peer_id, text, driver.clock()
        )
        await runtime.until(lambda: runtime.has_message(message_id))
        session.cancel_scope.cancel()
    await host.disconnect(runtime.info.peer_id)


# --- strangers -------------------------------------------------------------------------------


class SourceBoundTCP(TCP):
    """TCP that dials from a chosen loopback address (to stand for another machine)."""

    def __init__(self, source_ip: str) -> None:
        super().__init__()
        self.source_ip = source_ip

    async def dial(self, maddr: multiaddr.Multiaddr) -> IRawConnection:
        return await self.dial_with_source(maddr, (self.source_ip, 0))


def stranger_host(source_ip: str) -> IHost:
    """A real libp2p host (TCP + Noise + yamux) with a fresh, non-member key."""
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt=create_yamux_muxer_option(),
        transports=[SourceBoundTCP(source_ip)],
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, min_connections=0, low_watermark=0
        ),
    )
    network = host.get_network()
    assert isinstance(network, Swarm)
    network.retry_config = RetryConfig(max_retries=0)  # one connection per stranger
    return host


class Disconnected(INotifee):
    """Sets ``gone`` when the host's connection ends."""

    def __init__(self) -> None:
        self.gone = trio.Event()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.gone.set()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


#: A well-formed frame (a length prefix and a payload) that the engine would parse.
A_FRAME = encode_frame(b"\xa1\x00\x01")


async def noise_stranger(runtime: Runtime, source_ip: str) -> None:
    """Complete Noise with a non-member key, try to sync, and wait to be shut out.

    The runtime may refuse the key right after Noise (the connection never comes
    up) or let it in (to join) and refuse the sync stream; either way the
    connection must end, and no byte sent on the sync stream may reach the engine.
    """
    host = stranger_host(source_ip)
    watch = Disconnected()
    host.get_network().register_notifee(watch)
    async with host.run(listen_addrs=[]):
        try:
            with trio.fail_after(WAIT_S):
                try:
                    await host.connect(runtime.info)
                    stream = await host.new_stream(runtime.info.peer_id, [SYNC_PROTOCOL])
                    await stream.write(A_FRAME)
                    while await stream.read(1024):
                        pass
                except Exception:  # py-libp2p raises many kinds when the peer hangs up
                    pass
                if host.get_network().get_connections(runtime.info.peer_id):
                    await watch.gone.wait()  # the runtime closes the connection
        finally:
            with trio.CancelScope(shield=True):
                await host.close()


MULTISTREAM = b"\x13/multistream/1.0.0\n"
NOISE_PROPOSAL = b"\x07/noise\n"


async def abandoning_stranger(port: int, source_ip: str, kind: int) -> None:
    """A raw TCP connection that gives up part-way through the handshake.

    It sends part of a handshake (or nothing), then ends its side and waits for
    the runtime to close the connection, so that strangers go no faster than the
    runtime deals with them.
    """
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    await sock.bind((source_ip, 0))
    await sock.connect(("127.0.0.1", port))
    async with trio.SocketStream(sock) as stream:
        if kind == 0:  # half a multistream header
            await stream.send_all(MULTISTREAM[:9])
        elif kind == 1:  # multistream, the Noise proposal, then half a Noise message
            await stream.send_all(MULTISTREAM + NOISE_PROPOSAL + b"\x00\x20" + os.urandom(12))
        # kind 2: connect, send nothing
        await stream.send_eof()
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass


async def workers(count: int, jobs: int, job: Callable[[int, str], Any], first_ip: int) -> None:
    """``jobs`` calls of ``job(i, ip)`` by ``count`` workers, each from its own address."""

    async def worker(w: int) -> None:
        for i in range(w, jobs, count):
            await job(i, f"127.0.0.{first_ip + w}")

    async with trio.open_nursery() as nursery:
        for w in range(count):
            nursery.start_soon(worker, w)


# --- tests -----------------------------------------------------------------------------------


@churn
async def test_a_thousand_member_cycles_leave_no_trace(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, MEMBER_DEVICES) as (runtime, devices):
        async with online(devices):  # warm-up: one cycle each
            for n, device in enumerate(devices):
                with trio.fail_after(WAIT_S):
                    await sync_once(runtime, device, f"warm-up {n}")
        with trio.fail_after(WAIT_S):
            await runtime.until_no_connections()
        before = await settle_and_measure()

        per_device = MEMBER_CYCLES // MEMBER_DEVICES

        async def cycles(device: Device, n: int) -> None:
            for i in range(per_device):
                with trio.fail_after(WAIT_S):
                    await sync_once(runtime, device, f"device {n} cycle {i}")

        started = time.monotonic()
        async with online(devices), trio.open_nursery() as nursery:
            for n, device in enumerate(devices):
                nursery.start_soon(cycles, device, n)
        elapsed = time.monotonic() - started
        with trio.fail_after(WAIT_S):
            await runtime.until_no_connections()
        after = await settle_and_measure()

        # Members still connect and sync.
        async with online(devices[:1]):
            with trio.fail_after(WAIT_S):
                await sync_once(runtime, devices[0], "after the churn")
        messages = runtime.driver.engine.replica.doc(SHARED).get("messages", type=Map)
        assert len(messages) == len(devices) + MEMBER_CYCLES + 1

    stats = runtime.guard.stats
    print(
        f"\n{MEMBER_CYCLES} member cycles on {MEMBER_DEVICES} devices in {elapsed:.1f} s"
        f"\n  before: {before}\n  after:  {after}\n  guard:  {stats}"
    )
    assert stats.accepted == len(devices) + MEMBER_CYCLES + 1
    assert stats.refused_busy == stats.refused_strangers == stats.forced_teardowns == 0
    assert_near_baseline(before, after, MEMBER_CYCLES)


def assert_near_baseline(before: Usage, after: Usage, connections: int) -> None:
    # A leak grows with the number of connections (py-libp2p's own: one task, and
    # ~61 allocated blocks or ~9.6 KB, per connection); a connection still being torn
    # down (yamux sleeps 0.1 s after its socket is closed) is allowed for.
    assert after.fds <= before.fds + 2
    assert after.tasks <= before.tasks + 5
    # What remains is trio's deadline heap (stale entries, pruned lazily, bounded),
    # the store's caches, and per-host residue in the stranger hosts of this same
    # process (measured ~22 blocks per stranger host alone). The leak this guards
    # against also leaves a task per connection, which the task bound above catches.
    assert after.blocks - before.blocks < 150 * connections
    assert after.rss_kib - before.rss_kib < 16 * 1024


def count_frames(engine: Engine) -> list[bytes]:
    """The peers of every frame the engine is given, in order (instruments ``receive``)."""
    peers: list[bytes] = []
    receive = engine.receive

    def counting(peer: bytes, data: bytes, now_ms: int) -> None:
        peers.append(peer)
        receive(peer, data, now_ms)

    engine.receive = counting  # type: ignore[method-assign]
    return peers


def shut_out(runtime: Runtime) -> int:
    """Strangers refused so far: right after Noise, or by the engine at the sync stream."""
    return runtime.guard.stats.refused_strangers + len(runtime.refused)


@churn
async def test_a_thousand_strangers_do_not_wear_the_runtime_down(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, 2) as (runtime, devices):
        port = int(runtime.info.addrs[0].value_for_protocol("tcp"))
        member_keys = {d.identity.public_key for d in devices}
        frames_from = count_frames(runtime.driver.engine)

        # Warm up everything a stranger touches once, then take the baseline.
        with trio.fail_after(WAIT_S):
            async with online(devices[:1]):
                await sync_once(runtime, devices[0], "warm-up")
            await noise_stranger(runtime, STRANGER_IP)
            for kind in range(3):
                await abandoning_stranger(port, STRANGER_IP, kind)
            await runtime.until_no_connections()
        before = await settle_and_measure()
        accepted_before = runtime.guard.stats.accepted
        shut_out_before = shut_out(runtime)

        async def one_noise(i: int, ip: str) -> None:
            await noise_stranger(runtime, ip)

        async def one_abandon(i: int, ip: str) -> None:
            await abandoning_stranger(port, ip, i % 3)

        started = time.monotonic()
        with trio.fail_after(10 * WAIT_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(workers, STRANGER_WORKERS, NOISE_STRANGERS, one_noise, 10)
                nursery.start_soon(workers, STRANGER_WORKERS, ABANDONING_STRANGERS, one_abandon, 30)
        elapsed = time.monotonic() - started
        with trio.fail_after(WAIT_S):
            await runtime.until_no_connections()
        after = await settle_and_measure()

        # Members still connect and sync.
        async with online(devices):
            with trio.fail_after(WAIT_S):
                for n, device in enumerate(devices):
                    await sync_once(runtime, device, f"after the strangers {n}")

    stats = runtime.guard.stats
    print(
        f"\n{NOISE_STRANGERS} Noise strangers + {ABANDONING_STRANGERS} abandoned handshakes"
        f" in {elapsed:.1f} s\n  before: {before}\n  after:  {after}\n  guard:  {stats}"
        f"\n  refused by the engine at the sync stream: {len(runtime.refused)}"
    )
    assert set(frames_from) == member_keys, "a stranger's frame reached the engine"
    assert shut_out(runtime) - shut_out_before == NOISE_STRANGERS
    assert stats.accepted - accepted_before == NOISE_STRANGERS + ABANDONING_STRANGERS + 2
    assert stats.refused_busy == stats.handshake_timeouts == stats.forced_teardowns == 0
    assert_near_baseline(before, after, NOISE_STRANGERS + ABANDONING_STRANGERS)


async def test_a_stranger_that_completes_noise_never_reaches_the_engine(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, 1) as (runtime, devices):
        frames_from = count_frames(runtime.driver.engine)
        # It completes Noise, opens the sync stream if it may, sends a well-formed
        # frame, and returns once the runtime has closed its connection.
        await noise_stranger(runtime, "127.0.0.1")
        with trio.fail_after(WAIT_S):
            await runtime.until_no_connections()
        assert shut_out(runtime) == 1
        assert frames_from == []
        assert list(runtime.driver.sessions()) == []
        # ... and members are unaffected.
        async with online(devices):
            with trio.fail_after(WAIT_S):
                await sync_once(runtime, devices[0], "still here")
        assert frames_from and set(frames_from) == {devices[0].identity.public_key}


async def test_a_stranger_let_in_to_join_is_closed_when_its_time_is_up() -> None:
    member, stranger, listener = Identity.generate(), Identity.generate(), Identity.generate()
    guard = InboundGuard(stranger_timeout_s=1.0)
    server = build_host(
        listener,
        authorize=lambda key: True,  # everyone may come in (to join) ...
        is_member=lambda key: key == member.public_key,  # ... but only members may stay
        guard=guard,
    )
    clients = [build_host(member), build_host(stranger)]
    watches = [Disconnected(), Disconnected()]
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(server.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]))
        info = info_from_p2p_addr(multiaddr.Multiaddr(full_addresses(server)[0]))
        for client, watch in zip(clients, watches, strict=True):
            client.get_network().register_notifee(watch)
            await stack.enter_async_context(client.run(listen_addrs=[]))
            stack.push_async_callback(close_host, client)
        stack.push_async_callback(close_host, server)
        started = trio.current_time()
        with trio.fail_after(WAIT_S):
            for client in clients:
                await client.connect(info)
            await watches[1].gone.wait()
        took = trio.current_time() - started
        assert 1.0 <= took < 1.0 + HANDSHAKE_TIMEOUT_S
        assert guard.stats.stranger_timeouts == 1
        assert not watches[0].gone.is_set()  # the member stays
        assert clients[0].get_network().get_connections(info.peer_id)


async def test_a_flood_of_silent_connections_does_not_lock_members_out(tmp_path: Path) -> None:
    flood = 5 * MAX_PENDING_HANDSHAKES_PER_IP
    async with running_mesh(tmp_path, 1) as (runtime, devices):
        port = int(runtime.info.addrs[0].value_for_protocol("tcp"))
        ended_by_runtime: list[float] = []
        held = trio.Event()
        connected = 0
        started = trio.current_time()

        async def silent() -> None:
            nonlocal connected
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
            await sock.bind((STRANGER_IP, 0))
            await sock.connect(("127.0.0.1", port))
            connected += 1
            if connected == flood:
                held.set()
            received = b""
            async with trio.SocketStream(sock) as stream:
                try:
                    while chunk := await stream.receive_some():
                        received += chunk
                except trio.BrokenResourceError:
                    pass
            # The runtime closed it, having said no more than its multistream header.
            assert MULTISTREAM.startswith(received)
            ended_by_runtime.append(trio.current_time() - started)

        with trio.fail_after(HANDSHAKE_TIMEOUT_S + WAIT_S):
            async with trio.open_nursery() as nursery:
                for _ in range(flood):
                    nursery.start_soon(silent)
                await held.wait()
                # While the flood holds every pending slot of its address, a member syncs.
                member_started = trio.current_time()
                async with online(devices):
                    await sync_once(runtime, devices[0], "during the flood")
                member_took = trio.current_time() - member_started
            await runtime.until_no_connections()  # the runtime's handlers have finished
        stats = runtime.guard.stats
        # All but MAX_PENDING_HANDSHAKES_PER_IP were closed at once; those were closed
        # when their handshake time ran out; meanwhile the member synced.
        assert stats.refused_busy == flood - MAX_PENDING_HANDSHAKES_PER_IP
        assert stats.handshake_timeouts == MAX_PENDING_HANDSHAKES_PER_IP
        ended = sorted(ended_by_runtime)
        assert len(ended) == flood
        assert ended[stats.refused_busy - 1] < HANDSHAKE_TIMEOUT_S / 2
        assert (
            HANDSHAKE_TIMEOUT_S <= ended[stats.refused_busy] <= ended[-1] < HANDSHAKE_TIMEOUT_S + 2
        )
        assert member_took < HANDSHAKE_TIMEOUT_S / 2  # it did not wait for the flood to go


def test_guard_counts_per_address() -> None:
    guard = InboundGuard(max_pending_per_ip=2, max_pending=3, max_per_ip=3, max_total=4)
    assert guard.try_admit("10.0.0.1") and guard.try_admit("10.0.0.1")
    assert not guard.try_admit("10.0.0.1")  # two handshakes pending from it already
    assert guard.try_admit("10.0.0.2")
    assert not guard.try_admit("10.0.0.3")  # three pending in all
    assert guard.stats.refused_busy == 2
    assert guard.pending == {"10.0.0.1": 2, "10.0.0.2": 1}
