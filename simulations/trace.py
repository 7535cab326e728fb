"""The run's event trace, hashed as it goes (and optionally kept as text).

Two runs of one seed must produce bit-identical traces: the digest covers
every event's time and content, including every frame's bytes.
"""

from __future__ import annotations

import hashlib

from simulations.events import Deliver, Event

#: Digest size of trace and state hashes, in bytes.
DIGEST_BYTES = 16


class Trace:
    """A running BLAKE2b over (time, event); ``lines`` when asked to keep them."""

    def __init__(self, *, keep: bool = False) -> None:
        self._hash = hashlib.blake2b(digest_size=DIGEST_BYTES)
        self.keep = keep
        self.lines: list[str] = []

    def event(self, time_ms: int, event: Event) -> None:
        if isinstance(event, Deliver):
            text = f"{time_ms} Deliver conn={event.conn} src={event.src} len={len(event.data)}"
            self._hash.update(text.encode())
            self._hash.update(event.data)
        else:
            text = f"{time_ms} {event!r}"
            self._hash.update(text.encode())
        if self.keep:
            self.lines.append(text)

    def note(self, time_ms: int, text: str) -> None:
        """Something the simulator decided (a violation, a skipped fault)."""
        line = f"{time_ms} # {text}"
        self._hash.update(line.encode())
        if self.keep:
            self.lines.append(line)

    def digest(self) -> bytes:
        return self._hash.digest()
