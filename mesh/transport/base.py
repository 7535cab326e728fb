"""The contract every transport meets: authenticated, ordered, framed streams.

A ``FrameStream`` carries whole frames in order between this node and one
authenticated peer. ``send`` waits when the peer does not keep up
(backpressure); ``receive`` returns the next frame or raises ``StreamClosed``
when the peer closed cleanly, ``StreamReset`` when the stream broke, or a
``ProtocolError`` (oversized or malformed framing) after which the stream is
reset. The in-memory and libp2p transports pass one acceptance suite
(tests/mesh/transport/).
"""

from __future__ import annotations

from typing import Protocol

from mesh.errors import AgentmeshError


class TransportError(AgentmeshError):
    """A stream or connection failed."""


class StreamClosed(TransportError):
    """The peer closed the stream cleanly; no more frames will come."""


class StreamReset(TransportError):
    """The stream broke (reset, connection lost, or closed mid-frame)."""


class DialError(TransportError):
    """Could not reach or authenticate the peer."""


class FrameStream(Protocol):
    """Whole frames to and from one authenticated peer."""

    #: The peer's Ed25519 public key, taken from the authenticated connection.
    peer: bytes

    async def send(self, frame: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def close(self) -> None:
        """Finish sending; the peer's receive ends with StreamClosed after our last frame."""
        ...

    async def reset(self) -> None:
        """Abort both directions at once."""
        ...
