"""Inbound connection control for the libp2p listener: per-address limits, handshake
deadline, a membership check right after Noise, and the fix for py-libp2p 0.8.1's
inbound handler leak.

py-libp2p 0.8.1 keeps the task that accepted a TCP connection alive after the
upgrade (``await self.manager.wait_finished()`` in
``Swarm._do_handle_inbound_connection``) until the whole swarm stops, and that
task holds one token of ``Swarm._inbound_limiter`` (``max_connections -
min_connections`` tokens, 250 by default). Every inbound connection ever made
therefore leaks a task, and after 250 of them the host refuses all inbound
connections. ``GuardedTCP`` wraps the handler the swarm gives its listener: when
the connection's socket has been closed and the swarm has reported it
disconnected, the wrapper cancels the handler, which releases the token and
lets trio close the socket. See docs/NETWORK.md for the measurements.

The wrapper also counts connections per address (``MAX_PENDING_HANDSHAKES_PER_IP``,
``MAX_CONNECTIONS_PER_IP`` and global caps, from ``mesh.limits``) and closes a
connection whose handshake is not done within ``HANDSHAKE_TIMEOUT_S``.
``GatedUpgrader`` asks ``authorize`` about the peer's authenticated key as soon as
Noise completes, before yamux or any stream exists, so a refused peer is closed
before it can send a byte of our protocol. A peer let in that ``is_member`` says is
not a member (one that comes to join) has its connection closed after
``STRANGER_CONNECTION_TIMEOUT_MS``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p.abc import (
    IMuxedConn,
    INetConn,
    INetStream,
    INetwork,
    INotifee,
    IRawConnection,
    ISecureConn,
)
from libp2p.custom_types import THandler, TMuxerOptions, TSecurityOptions
from libp2p.io.abc import ReadWriteCloser
from libp2p.peer.id import ID
from libp2p.transport.exceptions import SecurityUpgradeFailure
from libp2p.transport.tcp.tcp import TCP, TCPListener
from libp2p.transport.upgrader import TransportUpgrader

from mesh.identity import public_key_of_peer_id
from mesh.limits import (
    HANDSHAKE_TIMEOUT_S,
    MAX_CONNECTIONS_PER_IP,
    MAX_INBOUND_CONNECTIONS,
    MAX_PENDING_HANDSHAKES,
    MAX_PENDING_HANDSHAKES_PER_IP,
    STRANGER_CONNECTION_TIMEOUT_MS,
)

log = logging.getLogger("agentmesh.transport")

#: After a connection's socket is closed, how long the swarm may take to report it
#: disconnected (it sleeps 0.2 s on the way) before its handler is cancelled anyway.
TEARDOWN_GRACE_S = 2.0

#: Decides whether an authenticated Ed25519 key may keep its inbound connection.
Authorize = Callable[[bytes], bool]


def address_key(host: str) -> str:
    """What per-address limits count by: the IPv4 address, or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class GuardStats:
    """Counters since the guard was made (for logs, status and tests)."""

    accepted: int = 0
    refused_busy: int = 0
    refused_strangers: int = 0
    handshake_timeouts: int = 0
    stranger_timeouts: int = 0
    forced_teardowns: int = 0


class InboundConnection(ReadWriteCloser):
    """One accepted TCP connection, as the swarm sees it; tells the guard when it closes."""

    def __init__(self, inner: ReadWriteCloser, key: str) -> None:
        self.inner = inner
        self.key = key
        self.pending = True
        self.stranger_deadline: float | None = None
        self.closed = trio.Event()
        self.gone = trio.Event()
        self.scope: trio.CancelScope | None = None

    async def read(self, n: int | None = None) -> bytes:
        return await self.inner.read(n)

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def close(self) -> None:
        self.closed.set()
        await self.inner.close()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.inner.get_remote_address()


class InboundGuard:
    """Counts inbound connections per address and wraps the listener's handler."""

    def __init__(
        self,
        *,
        max_pending_per_ip: int = MAX_PENDING_HANDSHAKES_PER_IP,
        max_pending: int = MAX_PENDING_HANDSHAKES,
        max_per_ip: int = MAX_CONNECTIONS_PER_IP,
        max_total: int = MAX_INBOUND_CONNECTIONS,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        stranger_timeout_s: float = STRANGER_CONNECTION_TIMEOUT_MS / 1000,
    ) -> None:
        self.max_pending_per_ip = max_pending_per_ip
        self.max_pending = max_pending
        self.max_per_ip = max_per_ip
        self.max_total = max_total
        self.handshake_timeout_s = handshake_timeout_s
        self.stranger_timeout_s = stranger_timeout_s
        self.pending: dict[str, int] = {}
        self.open: dict[str, int] = {}
        self.pending_total = 0
        self.open_total = 0
        self.stats = GuardStats()
        self._changed = trio.Event()
        self._by_muxed: weakref.WeakKeyDictionary[IMuxedConn, InboundConnection] = (
            weakref.WeakKeyDictionary()
        )

    # --- accounting ---------------------------------------------------------------------

    def try_admit(self, key: str) -> bool:
        """Count a new connection from ``key`` in, or return False if it must be refused."""
        if (
            self.pending.get(key, 0) >= self.max_pending_per_ip
            or self.open.get(key, 0) >= self.max_per_ip
            or self.pending_total >= self.max_pending
            or self.open_total >= self.max_total
        ):
            self.stats.refused_busy += 1
            return False
        self.pending[key] = self.pending.get(key, 0) + 1
        self.open[key] = self.open.get(key, 0) + 1
        self.pending_total += 1
        self.open_total += 1
        self.stats.accepted += 1
        self._notify()
        return True

    def _end_pending(self, conn: InboundConnection) -> None:
        if not conn.pending:
            return
        conn.pending = False
        self.pending_total -= 1
        left = self.pending[conn.key] - 1
        if left:
            self.pending[conn.key] = left
        else:
            del self.pending[conn.key]
        self._notify()

    def _release(self, conn: InboundConnection) -> None:
        self._end_pending(conn)
        self.open_total -= 1
        left = self.open[conn.key] - 1
        if left:
            self.open[conn.key] = left
        else:
            del self.open[conn.key]
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition`` (about the counts) holds; checked on every change."""
        while not condition():
            await self._changed.wait()

    def established(self, conn: InboundConnection, muxed: IMuxedConn, *, member: bool) -> None:
        """Noise and yamux are done: a member's connection has no deadline any more; a
        stranger's (let in to join) is closed ``stranger_timeout_s`` from now."""
        self._end_pending(conn)
        if not member:
            conn.stranger_deadline = trio.current_time() + self.stranger_timeout_s
        if conn.scope is not None:
            conn.scope.deadline = conn.stranger_deadline or math.inf
        self._by_muxed[muxed] = conn

    def disconnected(self, muxed: IMuxedConn) -> None:
        conn = self._by_muxed.pop(muxed, None)
        if conn is not None:
            conn.gone.set()
            conn.closed.set()  # (its handler then closes the socket, if nothing else did)

    # --- the listener's handler ------------------------------------------------------------

    def wrap(self, handler: THandler) -> THandler:
        """The swarm's per-connection handler, limited and ended when its connection ends."""

        async def guarded(raw: ReadWriteCloser) -> None:
            remote = raw.get_remote_address()
            key = address_key(remote[0]) if remote is not None else "?"
            if not self.try_admit(key):
                log.debug("refusing inbound connection from %s: too many", key)
                await raw.close()
                return
            conn = InboundConnection(raw, key)
            deadline = trio.current_time() + self.handshake_timeout_s
            try:
                async with trio.open_nursery() as nursery:
                    conn.scope = nursery.cancel_scope
                    nursery.cancel_scope.deadline = deadline
                    nursery.start_soon(self._end_when_gone, conn, nursery.cancel_scope)
                    await handler(conn)
                    nursery.cancel_scope.cancel()
                # (py-libp2p turns some cancellations into errors it logs and swallows,
                # so the clock, not the way the handler ended, tells a timeout.)
                now = trio.current_time()
                if conn.pending and now >= deadline:
                    self.stats.handshake_timeouts += 1
                    log.debug("inbound handshake from %s timed out", key)
                elif conn.stranger_deadline is not None and now >= conn.stranger_deadline:
                    self.stats.stranger_timeouts += 1
                    log.info("closing a non-member connection from %s: its time is up", key)
            finally:
                self._release(conn)
                with trio.CancelScope(shield=True):
                    await raw.close()

        return guarded

    async def _end_when_gone(self, conn: InboundConnection, scope: trio.CancelScope) -> None:
        # py-libp2p parks the handler forever once the connection is up. When the
        # socket has been closed, let the swarm finish its teardown (it reports the
        # connection disconnected), then end the handler.
        await conn.closed.wait()
        with trio.move_on_after(TEARDOWN_GRACE_S) as grace:
            await conn.gone.wait()
        if grace.cancelled_caught:
            self.stats.forced_teardowns += 1
        scope.cancel()


class GuardedTCP(TCP):
    """py-libp2p's TCP transport whose listeners run every connection through a guard."""

    def __init__(self, guard: InboundGuard) -> None:
        super().__init__()
        self.guard = guard

    def create_listener(self, handler_function: THandler) -> TCPListener:
        return TCPListener(self.guard.wrap(handler_function))


class GatedUpgrader(TransportUpgrader):
    """Checks an inbound peer's key right after Noise; tells the guard when yamux is up."""

    def __init__(
        self,
        secure_transports: TSecurityOptions,
        muxer_transports: TMuxerOptions,
        guard: InboundGuard,
        authorize: Authorize | None,
        is_member: Authorize | None = None,
        forget: Callable[[ID], None] | None = None,
    ) -> None:
        super().__init__(secure_transports, muxer_transports)
        self.forget = forget
        self.guard = guard
        self.authorize = authorize
        self.is_member = is_member
        self._secured: weakref.WeakKeyDictionary[ISecureConn, tuple[InboundConnection, bool]] = (
            weakref.WeakKeyDictionary()
        )

    async def upgrade_security(
        self, raw_conn: IRawConnection, is_initiator: bool, peer_id: ID | None = None
    ) -> ISecureConn:
        secured = await super().upgrade_security(raw_conn, is_initiator, peer_id)
        if is_initiator:
            return secured
        peer = secured.get_remote_peer()
        if not self._check(self.authorize, peer):
            self.guard.stats.refused_strangers += 1
            log.info("refusing connection from %s", peer)
            await secured.close()
            if self.forget is not None:
                self.forget(peer)
            raise SecurityUpgradeFailure("peer is not allowed in")
        inbound = getattr(raw_conn, "stream", None)
        if isinstance(inbound, InboundConnection):
            self._secured[secured] = (inbound, self._check(self.is_member, peer))
        return secured

    @staticmethod
    def _check(decide: Authorize | None, peer: ID) -> bool:
        if decide is None:
            return True
        try:
            return decide(public_key_of_peer_id(str(peer)))
        except ValueError:  # not an Ed25519 PeerId
            return False

    async def upgrade_connection(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        muxed = await super().upgrade_connection(conn, peer_id)
        entry = self._secured.pop(conn, None)
        if entry is not None:
            inbound, member = entry
            self.guard.established(inbound, muxed, member=member)
        return muxed


class GuardNotifee(INotifee):
    """Tells the guard when the swarm has finished with a connection."""

    def __init__(self, guard: InboundGuard) -> None:
        self.guard = guard

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.guard.disconnected(conn.muxed_conn)

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


__all__: list[Any] = [
    "Authorize",
    "GatedUpgrader",
    "GuardNotifee",
    "GuardStats",
    "GuardedTCP",
    "InboundConnection",
    "InboundGuard",
    "address_key",
]
