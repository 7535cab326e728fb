"""An in-memory network of engines: frames delivered in order, in one process.

Two parts: ``MemoryNetwork``, deterministic and synchronous (frames routed
between engines in one call stack, faults injected through ``in_flight``), for
tests and benchmarks; and ``memory_stream_pair``, trio FrameStreams that meet
the same contract as the libp2p transport, for the node driver.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from mesh.engine import Close, Engine, Output, Send
from mesh.transport.base import StreamClosed, StreamReset
from mesh.transport.framing import encode_frame


@dataclass
class Message:
    """One frame on its way from ``src`` to ``dst``."""

    src: bytes
    dst: bytes
    data: bytes
    #: Sent before its sender closed the session: still delivered, like data before a FIN.
    final: bool = False
    #: The sender's close itself: the receiver's session ends when this arrives.
    close: bool = False


@dataclass
class MemoryNetwork:
    """Engines keyed by public key, with bidirectional links between pairs."""

    engines: dict[bytes, Engine] = field(default_factory=dict)
    links: set[frozenset[bytes]] = field(default_factory=set)
    in_flight: deque[Message] = field(default_factory=deque)
    observers: list[Callable[[bytes, Output], None]] = field(default_factory=list)

    def add(self, engine: Engine) -> bytes:
        key = engine.identity.public_key
        self.engines[key] = engine
        return key

    def link(self, a: bytes, b: bytes, now_ms: int) -> bool:
        """Open a session between ``a`` and ``b``; False if either side refuses."""
        if frozenset((a, b)) in self.links:
            return True
        ok_a = self.engines[a].connect(b, now_ms)
        ok_b = self.engines[b].connect(a, now_ms)
        if ok_a and ok_b:
            self.links.add(frozenset((a, b)))
            return True
        self.engines[a].disconnect(b)
        self.engines[b].disconnect(a)
        return False

    def unlink(self, a: bytes, b: bytes) -> None:
        """Cut the link; frames in flight between the two are lost."""
        self.links.discard(frozenset((a, b)))
        self.engines[a].disconnect(b)
        self.engines[b].disconnect(a)
        self.in_flight = deque(m for m in self.in_flight if {m.src, m.dst} != {a, b})

    def flush(self, key: bytes, now_ms: int) -> None:
        """Flush one engine and route what it outputs."""
        for output in self.engines[key].flush(now_ms):
            for observer in self.observers:
                observer(key, output)
            if isinstance(output, Send):
                if frozenset((key, output.peer)) in self.links:
                    self.in_flight.append(Message(key, output.peer, output.data))
            elif isinstance(output, Close) and output.peer in self.engines:
                link = frozenset((key, output.peer))
                if link in self.links:
                    self.links.discard(link)
                    for message in self.in_flight:
                        if (message.src, message.dst) == (key, output.peer):
                            message.final = True
                    self.in_flight.append(Message(key, output.peer, b"", final=True, close=True))
                    self.in_flight = deque(
                        m for m in self.in_flight if m.final or frozenset((m.src, m.dst)) != link
                    )

    def flush_all(self, now_ms: int) -> None:
        for key in list(self.engines):
            self.flush(key, now_ms)

    def deliver(self, message: Message, now_ms: int) -> None:
        if message.close:
            self.engines[message.dst].disconnect(message.src)
        elif message.final or frozenset((message.src, message.dst)) in self.links:
            self.engines[message.dst].receive(message.src, message.data, now_ms)

    def run(self, now_ms: int, max_messages: int = 1_000_000) -> int:
        """Deliver until nothing is in flight; returns the number delivered."""
        delivered = 0
        self.flush_all(now_ms)
        while self.in_flight:
            if delivered >= max_messages:
                raise RuntimeError("network did not go quiet")
            message = self.in_flight.popleft()
            self.deliver(message, now_ms)
            delivered += 1
            self.flush(message.dst, now_ms)
        return delivered


# --- trio streams in memory ----------------------------------------------------------------

#: Frames buffered in one direction of an in-memory stream before ``send`` waits.
MEMORY_STREAM_BUFFER = 16


class MemoryFrameStream:
    """One end of an in-memory FrameStream pair (see ``memory_stream_pair``)."""

    def __init__(
        self,
        peer: bytes,
        outgoing: trio.MemorySendChannel[bytes],
        incoming: trio.MemoryReceiveChannel[bytes],
        state: _PairState,
    ) -> None:
        self.peer = peer
        self._out = outgoing
        self._in = incoming
        self._state = state

    async def send(self, frame: bytes) -> None:
        encode_frame(frame)  # the same limits as a real stream
        if self._state.reset:
            raise StreamReset("stream was reset")
        try:
            await self._out.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamReset("stream was reset") from exc

    async def receive(self) -> bytes:
        if self._state.reset:
            raise StreamReset("stream was reset")
        try:
            return await self._in.receive()
        except trio.EndOfChannel:
            if self._state.reset:
                raise StreamReset("stream was reset") from None
            raise StreamClosed("peer closed the stream") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise StreamReset("stream was reset") from exc

    async def close(self) -> None:
        await self._out.aclose()

    async def reset(self) -> None:
        self._state.reset = True
        await self._out.aclose()
        await self._in.aclose()
        for channel in self._state.channels:
            await channel.aclose()


@dataclass
class _PairState:
    reset: bool = False
    channels: list[trio.MemorySendChannel[bytes] | trio.MemoryReceiveChannel[bytes]] = field(
        default_factory=list
    )


def memory_stream_pair(a: bytes, b: bytes) -> tuple[MemoryFrameStream, MemoryFrameStream]:
    """Two connected streams: the first is ``a``'s end (its peer is ``b``), then ``b``'s."""
    a_to_b_send, a_to_b_recv = trio.open_memory_channel[bytes](MEMORY_STREAM_BUFFER)
    b_to_a_send, b_to_a_recv = trio.open_memory_channel[bytes](MEMORY_STREAM_BUFFER)
    state = _PairState(channels=[a_to_b_send, a_to_b_recv, b_to_a_send, b_to_a_recv])
    return (
        MemoryFrameStream(b, a_to_b_send, b_to_a_recv, state),
        MemoryFrameStream(a, b_to_a_send, a_to_b_recv, state),
    )
