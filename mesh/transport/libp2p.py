"""The libp2p transport: TCP + Noise (only) + yamux, our own framing, gated by membership.

py-libp2p 0.8.1 pitfalls handled here (see ../shared/PITFALLS.md): Noise is the
only security transport; the peer's identity comes from the authenticated
connection (``muxed_conn.peer_id``), never from the Noise static key; one
connection per peer; our own bounded framing; streams are always read; yamux
window credit in half-window steps, not per read (``yamux_credit``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol, TSecurityOptions
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamError
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.rcmgr import ResourceManager
from libp2p.rcmgr.manager import ResourceLimits
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from mesh.errors import ProtocolError
from mesh.identity import Identity, public_key_of_peer_id
from mesh.limits import HANDSHAKE_TIMEOUT_S, MAX_INBOUND_CONNECTIONS
from mesh.transport import yamux_credit
from mesh.transport.base import StreamClosed, StreamReset, TransportError
from mesh.transport.framing import FrameDecoder, encode_frame
from mesh.transport.inbound import (
    Authorize,
    GatedUpgrader,
    GuardedTCP,
    GuardNotifee,
    InboundGuard,
)

SYNC_PROTOCOL = TProtocol("/agentmesh/sync/1")
READ_CHUNK = 64 * 1024
#: Longest a host may take to close (its connections are closed concurrently).
CLOSE_TIMEOUT_S = 5.0
log = logging.getLogger("agentmesh.transport")
#: py-libp2p's auto-connector logger sets its own level (INFO), so it is named too.
LIBP2P_LOGGERS = ("libp2p", "libp2p.network.auto_connector", "multiaddr", "async_service")


T = TypeVar("T")


def quiet_libp2p_logging(level: int = logging.WARNING) -> None:
    """py-libp2p logs a lot at INFO; keep it at WARNING unless asked."""
    for name in LIBP2P_LOGGERS:
        logging.getLogger(name).setLevel(level)


def build_host(
    identity: Identity,
    listen: list[str] | None = None,
    *,
    authorize: Authorize | None = None,
    is_member: Authorize | None = None,
    guard: InboundGuard | None = None,
) -> IHost:
    """A libp2p host for ``identity`` with Noise as its only security transport.

    Inbound connections go through ``guard`` (per-address limits, handshake
    deadline, and the fix for py-libp2p's inbound handler leak; see
    ``mesh.transport.inbound``). ``authorize``, if given, is asked about every
    inbound peer's authenticated key as soon as Noise completes; a refused peer is
    closed before yamux starts. ``is_member``, if given, tells members from the
    strangers let in (to join): a stranger's connection is closed after
    ``STRANGER_CONNECTION_TIMEOUT_MS``.
    """
    yamux_credit.install()
    guard = guard if guard is not None else InboundGuard()
    key_pair = create_new_key_pair(identity.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    security: TSecurityOptions = {NOISE_PROTOCOL_ID: noise}
    muxers = create_yamux_muxer_option()
    host = new_host(
        key_pair=key_pair,
        sec_opt=security,
        muxer_opt=muxers,
        listen_addrs=[multiaddr.Multiaddr(a) for a in (listen or [])],
        transports=[GuardedTCP(guard)],
        # One connection per peer (connect ~5 ms instead of ~250 ms), and no
        # auto-connector: a runtime must never dial out to keep a quota of peers.
        connection_config=ConnectionConfig(
            max_connections_per_peer=1,
            min_connections=0,
            low_watermark=0,
            high_watermark=MAX_INBOUND_CONNECTIONS,
            max_connections=MAX_INBOUND_CONNECTIONS,
            # InboundGuard closes handshakes at HANDSHAKE_TIMEOUT_S; this is a backstop.
            inbound_upgrade_timeout=2 * HANDSHAKE_TIMEOUT_S,
        ),
        resource_manager=_plain_resource_manager(),
        enable_mDNS=False,
        enable_upnp=False,
    )
    network = host.get_network()
    assert isinstance(network, Swarm)
    network.upgrader = GatedUpgrader(
        security, muxers, guard, authorize, is_member, forget=_forgetter(host)
    )
    network.auto_connector = _NeverDial(network)
    network.register_notifee(GuardNotifee(guard))
    return host


def _forgetter(host: IHost) -> Callable[[ID], None]:
    """Drop what the peerstore learnt of a refused peer (its key): else it grows per stranger."""

    def forget(peer: ID) -> None:
        store = host.get_peerstore()
        if store.peer_ids() and peer in store.peer_ids():
            store.clear_peerdata(peer)

    return forget


class _NeverDial(AutoConnector):
    """py-libp2p's auto-connector, switched off.

    Whatever the watermarks, it dials peers from the peerstore whenever the host
    has fewer connections than halfway between its low and high watermarks (and
    again after every disconnect). A runtime must never dial out, and a device
    dials only its runtime.
    """

    async def maybe_connect(self) -> None:
        return None

    async def run_background_task(self, nursery: trio.Nursery) -> None:
        return None

    def record_disconnect(self, peer_id: ID) -> None:
        return None


def _plain_resource_manager() -> ResourceManager:
    """py-libp2p's resource manager with only its plain counters.

    Its defaults add a circuit breaker, "graceful degradation", memory-pressure
    refusals and per-peer rate limits that refuse members for reasons of their
    own; our per-address limits live in ``InboundGuard``.
    """
    return ResourceManager(
        limits=ResourceLimits(max_connections=MAX_INBOUND_CONNECTIONS + 64),
        enable_metrics=False,
        enable_memory_limits=False,
        enable_circuit_breaker=False,
        enable_graceful_degradation=False,
        enable_rate_limiting=False,
    )


async def close_host(host: IHost, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``host`` and its connections, within ``timeout_s``, even when cancelled.

    py-libp2p closes connections one after another and each close sleeps 0.2 s
    (yamux and the swarm connection sleep 0.1 s each): a runtime with 30 devices
    took 6 s to stop. Close them all at once first (0.24 s).
    """
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + timeout_s
        network = host.get_network()
        async with trio.open_nursery() as nursery:
            for conn in list(network.get_connections()):
                nursery.start_soon(_close_quietly, conn)
        await host.close()
    if scope.cancelled_caught:
        log.warning("libp2p host did not close within %.1f s", timeout_s)


async def _close_quietly(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception as exc:  # py-libp2p raises many kinds from a dying connection
        log.debug("closing a connection failed: %s", exc)


def peer_key(stream: INetStream) -> bytes:
    """The authenticated Ed25519 key of the peer at the other end of ``stream``."""
    return public_key_of_peer_id(str(stream.muxed_conn.peer_id))


class Libp2pFrameStream:
    """Frames over one libp2p stream."""

    def __init__(self, stream: INetStream) -> None:
        self.stream = stream
        self.peer = peer_key(stream)
        self._decoder = FrameDecoder()
        self._ready: list[bytes] = []
        self._send_lock = trio.Lock()

    async def send(self, frame: bytes) -> None:
        data = encode_frame(frame)
        async with self._send_lock:
            try:
                await self.stream.write(data)
            except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise StreamReset(f"stream broke while sending: {exc}") from exc

    async def receive(self) -> bytes:
        while not self._ready:
            try:
                chunk = await self.stream.read(READ_CHUNK)
            except EOFError:
                chunk = b""
            except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise StreamReset(f"stream broke while receiving: {exc}") from exc
            if not chunk:
                # py-libp2p's yamux reports a received RST as EOF on read; tell them apart.
                muxed = getattr(self.stream, "muxed_stream", None)
                if getattr(muxed, "reset_received", False):
                    raise StreamReset("peer reset the stream")
                if self._decoder.at_boundary():
                    raise StreamClosed("peer closed the stream")
                raise StreamReset("stream ended inside a frame")
            try:
                self._ready.extend(self._decoder.feed(chunk))
            except ProtocolError:
                await self.reset()
                raise
        return self._ready.pop(0)

    async def close(self) -> None:
        with contextlib.suppress(StreamError, trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.close()

    async def reset(self) -> None:
        with contextlib.suppress(StreamError, trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.reset()


def full_addresses(host: IHost) -> list[str]:
    """The host's listen addresses with ``/p2p/<peer id>``."""
    peer_id = host.get_id().to_string()
    result = []
    for addr in host.get_addrs():
        text = str(addr)
        result.append(text if "/p2p/" in text else f"{text}/p2p/{peer_id}")
    return result


__all__: list[Any] = [
    "SYNC_PROTOCOL",
    "InboundGuard",
    "Libp2pFrameStream",
    "build_host",
    "close_host",
    "full_addresses",
    "peer_key",
    "quiet_libp2p_logging",
]


class PinMismatch(TransportError):
    """A different key answered at an address whose PeerId was pinned."""


async def request_reply(
    host: IHost, info: PeerInfo, key: bytes, protocol: TProtocol, request: bytes
) -> bytes:
    """Dial ``info`` (whose key must be ``key``), send ``request`` as one frame on a new
    ``protocol`` stream, and return the one frame that answers it.

    Our own backoff decides when to retry, so py-libp2p's negative dial cache is
    cleared first (it would refuse a peer that just restarted). The caller bounds the
    time; dial failures surface as py-libp2p's many exception types.
    """
    network = host.get_network()
    if isinstance(network, Swarm):
        network.unblock_peer(info.peer_id)
    await host.connect(info)
    frames = Libp2pFrameStream(await host.new_stream(info.peer_id, [protocol]))
    if frames.peer != key:
        await frames.reset()
        raise PinMismatch("a different key answered at the runtime's address")
    await frames.send(request)
    data = await frames.receive()
    await frames.close()
    return data


async def with_client_host(
    identity: Identity,
    work: Callable[[IHost], Awaitable[T]],
    errors: tuple[type[Exception], ...],
) -> T:
    """Run ``work`` on a short-lived host that listens nowhere, then close the host.

    An exception of ``errors`` raised by ``work`` comes out as itself, not wrapped in
    the exception group that ``host.run``'s nursery would put around it.
    """
    host = build_host(identity)
    outcome: list[T] = []
    failure: list[Exception] = []
    async with host.run(listen_addrs=[]):
        try:
            outcome.append(await work(host))
        except errors as exc:
            failure.append(exc)
        finally:
            with trio.CancelScope(shield=True):
                await host.close()
    if failure:
        raise failure[0]
    return outcome[0]
