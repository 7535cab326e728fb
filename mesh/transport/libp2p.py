"""The libp2p transport: TCP + Noise (only) + yamux, our own framing, gated by membership.

py-libp2p 0.8.1 pitfalls handled here (see ../shared/PITFALLS.md): Noise is the
only security transport; the peer's identity comes from the authenticated
connection (``muxed_conn.peer_id``), never from the Noise static key; one
connection per peer; our own bounded framing; streams are always read.
"""

from __future__ import annotations

import logging
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamError
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from mesh.errors import ProtocolError
from mesh.identity import Identity, public_key_of_peer_id
from mesh.transport.base import StreamClosed, StreamReset
from mesh.transport.framing import FrameDecoder, encode_frame

SYNC_PROTOCOL = TProtocol("/agentmesh/sync/1")
READ_CHUNK = 64 * 1024
LIBP2P_LOGGERS = ("libp2p", "multiaddr", "async_service")


def quiet_libp2p_logging(level: int = logging.WARNING) -> None:
    """py-libp2p logs a lot at INFO; keep it at WARNING unless asked."""
    for name in LIBP2P_LOGGERS:
        logging.getLogger(name).setLevel(level)


def build_host(identity: Identity, listen: list[str] | None = None) -> IHost:
    """A libp2p host for ``identity`` with Noise as its only security transport."""
    key_pair = create_new_key_pair(identity.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        listen_addrs=[multiaddr.Multiaddr(a) for a in (listen or [])],
        # One connection per peer (connect ~5 ms instead of ~250 ms), and no
        # auto-connector: a runtime must never dial out to keep a quota of peers.
        connection_config=ConnectionConfig(
            max_connections_per_peer=1, min_connections=0, low_watermark=0
        ),
        enable_mDNS=False,
        enable_upnp=False,
    )


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
        try:
            await self.stream.close()
        except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def reset(self) -> None:
        try:
            await self.stream.reset()
        except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


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
    "Libp2pFrameStream",
    "build_host",
    "full_addresses",
    "peer_key",
    "quiet_libp2p_logging",
]
