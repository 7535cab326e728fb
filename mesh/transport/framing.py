"""Length-prefixed framing with a bounded prefix and a maximum frame size (sans-IO).

A frame on a stream is an unsigned LEB128 length (at most MAX_VARINT_BYTES
bytes, minimal encoding) followed by that many bytes, at most MAX_FRAME_BYTES.
An empty frame is not allowed. A violation raises FrameTooLarge or
MalformedFrame, and the stream must be closed.
"""

from __future__ import annotations

from mesh.errors import FrameTooLarge, MalformedFrame
from mesh.limits import MAX_FRAME_BYTES, MAX_VARINT_BYTES


def encode_frame(payload: bytes, max_frame: int = MAX_FRAME_BYTES) -> bytes:
    """``payload`` with its length prefix."""
    if not payload:
        raise MalformedFrame("empty frame")
    if len(payload) > max_frame:
        raise FrameTooLarge(f"frame of {len(payload)} bytes exceeds {max_frame}")
    size = len(payload)
    prefix = bytearray()
    while size > 0x7F:
        prefix.append((size & 0x7F) | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + payload


class FrameDecoder:
    """Bytes in, whole frames out; holds at most one partial frame."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame now complete, in order."""
        self._buffer += data
        frames: list[bytes] = []
        while True:
            if self._need is None:
                parsed = self._parse_prefix()
                if parsed is None:
                    return frames
                self._need, used = parsed
                del self._buffer[:used]
            if len(self._buffer) < self._need:
                return frames
            frames.append(bytes(self._buffer[: self._need]))
            del self._buffer[: self._need]
            self._need = None

    def _parse_prefix(self) -> tuple[int, int] | None:
        value = 0
        for i in range(min(len(self._buffer), MAX_VARINT_BYTES)):
            byte = self._buffer[i]
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if i > 0 and byte == 0:
                    raise MalformedFrame("length prefix is not minimal")
                if value == 0:
                    raise MalformedFrame("empty frame")
                if value > self.max_frame:
                    raise FrameTooLarge(f"frame of {value} bytes exceeds {self.max_frame}")
                return value, i + 1
        if len(self._buffer) >= MAX_VARINT_BYTES:
            raise FrameTooLarge("length prefix longer than MAX_VARINT_BYTES")
        return None

    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the stream to end)."""
        return not self._buffer and self._need is None
