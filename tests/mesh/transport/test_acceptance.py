"""One acceptance suite for every transport: in-memory and libp2p (real hosts on 127.0.0.1).

Ordering, backpressure, close versus reset, frames at the size limit, oversized
frames refused, and the peer's identity taken from the authenticated connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p.abc import INetStream
from libp2p.peer.peerinfo import info_from_p2p_addr

from mesh.errors import FrameTooLarge
from mesh.identity import Identity
from mesh.limits import MAX_FRAME_BYTES
from mesh.transport.base import FrameStream, StreamClosed, StreamReset
from mesh.transport.libp2p import (
    SYNC_PROTOCOL,
    Libp2pFrameStream,
    build_host,
    full_addresses,
)
from mesh.transport.memory import memory_stream_pair
from tests.support import seeded_identity

Pair = tuple[FrameStream, FrameStream, Identity, Identity]
Factory = Callable[[], AbstractAsyncContextManager[Pair]]


@asynccontextmanager
async def memory_pair() -> AsyncIterator[Pair]:
    a, b = seeded_identity(41), seeded_identity(42)
    left, right = memory_stream_pair(a.public_key, b.public_key)
    yield left, right, a, b


@asynccontextmanager
async def libp2p_pair() -> AsyncIterator[Pair]:
    a, b = seeded_identity(41), seeded_identity(42)
    host_a, host_b = build_host(a), build_host(b)
    accepted: list[Libp2pFrameStream] = []
    got = trio.Event()
    done = trio.Event()

    async def handler(stream: INetStream) -> None:
        accepted.append(Libp2pFrameStream(stream))
        got.set()
        await done.wait()

    host_b.set_stream_handler(SYNC_PROTOCOL, handler)
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    async with host_b.run(listen_addrs=listen), host_a.run(listen_addrs=[]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(full_addresses(host_b)[0]))
        with trio.fail_after(10):
            await host_a.connect(info)
            stream = await host_a.new_stream(info.peer_id, [SYNC_PROTOCOL])
            await got.wait()
        try:
            yield Libp2pFrameStream(stream), accepted[0], a, b
        finally:
            done.set()
            with trio.CancelScope(shield=True):
                await host_a.close()
                await host_b.close()


TRANSPORTS = pytest.mark.parametrize(
    "make_pair", [memory_pair, libp2p_pair], ids=["memory", "libp2p"]
)


@TRANSPORTS
async def test_peer_identity_is_authenticated(make_pair: Factory) -> None:
    async with make_pair() as (left, right, a, b):
        assert left.peer == b.public_key
        assert right.peer == a.public_key


@TRANSPORTS
async def test_frames_arrive_whole_and_in_order(make_pair: Factory) -> None:
    sizes = [1, 2, 127, 128, 16_383, 16_384, 70_000, 3, 1_000_000, 5]
    async with make_pair() as (left, right, _, _):

        async def sender() -> None:
            for i, size in enumerate(sizes * 3):
                await left.send(bytes([i % 256]) * size)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            for i, size in enumerate(sizes * 3):
                frame = await right.receive()
                assert frame == bytes([i % 256]) * size


@TRANSPORTS
async def test_a_frame_at_the_limit_passes_and_one_beyond_is_refused(make_pair: Factory) -> None:
    async with make_pair() as (left, right, _, _):
        big = b"z" * MAX_FRAME_BYTES
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.send, big)
            assert await right.receive() == big
        with pytest.raises(FrameTooLarge):
            await left.send(b"z" * (MAX_FRAME_BYTES + 1))
        await left.send(b"still usable")
        assert await right.receive() == b"still usable"


@TRANSPORTS
async def test_backpressure_blocks_a_sender_whose_peer_does_not_read(make_pair: Factory) -> None:
    frame = b"b" * 256 * 1024
    total = 64  # 16 MiB: more than any buffer between the two ends
    async with make_pair() as (left, right, _, _):
        sent = 0

        async def sender() -> None:
            nonlocal sent
            for _ in range(total):
                await left.send(frame)
                sent += 1

        finished = trio.Event()

        async def run_sender() -> None:
            await sender()
            finished.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_sender)
            # The sender must still be waiting a second later (well before yamux's 5 s
            # window-update timeout): this bounds a wait, it does not sleep to synchronise.
            with trio.move_on_after(1.0):
                await finished.wait()
            assert not finished.is_set() and sent < total, "send never waited for the reader"
            for _ in range(total):
                assert await right.receive() == frame
        assert sent == total


@TRANSPORTS
async def test_close_delivers_everything_then_ends_cleanly(make_pair: Factory) -> None:
    async with make_pair() as (left, right, _, _):
        for i in range(5):
            await left.send(b"last words %d" % i)
        await left.close()
        for i in range(5):
            assert await right.receive() == b"last words %d" % i
        with pytest.raises(StreamClosed):
            await right.receive()


@TRANSPORTS
async def test_reset_breaks_both_directions(make_pair: Factory) -> None:
    async with make_pair() as (left, right, _, _):
        await left.send(b"before")
        assert await right.receive() == b"before"
        await left.reset()
        with trio.fail_after(10), pytest.raises(StreamReset):
            await right.receive()
        with trio.fail_after(10), pytest.raises(StreamReset):
            for _ in range(100):  # a reset may be noticed only after a write or two
                await right.send(b"after")


async def test_libp2p_oversized_length_prefix_from_a_peer_resets_the_stream() -> None:
    async with libp2p_pair() as (left, right, _, _):
        assert isinstance(left, Libp2pFrameStream)
        # A hostile peer writes a length prefix just past the limit, then garbage.
        size = MAX_FRAME_BYTES + 1
        prefix = bytearray()
        while size > 0x7F:
            prefix.append((size & 0x7F) | 0x80)
            size >>= 7
        prefix.append(size)
        await left.stream.write(bytes(prefix) + b"x" * 100)
        with trio.fail_after(10), pytest.raises(FrameTooLarge):
            await right.receive()


async def test_libp2p_unbounded_varint_prefix_is_refused() -> None:
    async with libp2p_pair() as (left, right, _, _):
        assert isinstance(left, Libp2pFrameStream)
        await left.stream.write(b"\xff" * 32)
        with trio.fail_after(10), pytest.raises(FrameTooLarge):
            await right.receive()
