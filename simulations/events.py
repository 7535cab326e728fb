"""Simulated events and the event queue: a heap of (time, seq, event).

``seq`` grows with every push, so events at one time run in the order they
were scheduled: the queue is deterministic and frames of one stream that
share an arrival time keep their order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

#: Direction of a device's path: device -> runtime, runtime -> device.
UP = 0
DOWN = 1


@dataclass(frozen=True, slots=True)
class Write:
    """A node's workload writes (and schedules its next write)."""

    node: int


@dataclass(frozen=True, slots=True)
class Tick:
    """A node's engine has a deadline now."""

    node: int
    life: int


@dataclass(frozen=True, slots=True)
class Dial:
    """A device dials the runtime."""

    node: int
    life: int


@dataclass(frozen=True, slots=True)
class DialFailed:
    node: int
    life: int


@dataclass(frozen=True, slots=True)
class Establish:
    """A dial's handshake completes (if the path and both nodes are still up)."""

    node: int
    life: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """A frame arrives at the far end of connection ``conn``."""

    conn: int
    src: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Fin:
    """The orderly close of ``conn`` by ``src`` reaches the far end (after its frames)."""

    conn: int
    src: int


@dataclass(frozen=True, slots=True)
class Reset:
    """``node`` learns that connection ``conn`` is dead."""

    conn: int
    node: int


@dataclass(frozen=True, slots=True)
class PathChange:
    """A path of ``device`` gets blocked (+1) or unblocked (-1) in ``direction``."""

    device: int
    direction: int
    delta: int


@dataclass(frozen=True, slots=True)
class PathTimeout:
    """The path blocked since ``since`` may now have outlived the transport's patience."""

    device: int
    direction: int
    since: int


@dataclass(frozen=True, slots=True)
class OnlineChange:
    """A device goes offline (+1) or online (-1) (its daily pattern)."""

    device: int
    delta: int


@dataclass(frozen=True, slots=True)
class Crash:
    node: int
    life: int
    torn: bool
    down_ms: int


@dataclass(frozen=True, slots=True)
class Restart:
    node: int
    life: int


@dataclass(frozen=True, slots=True)
class Admit:
    """The runtime admits a new device (issued by the root)."""

    reader: bool


@dataclass(frozen=True, slots=True)
class Revoke:
    """The root revokes ``device``; the runtime commits it."""

    device: int


@dataclass(frozen=True, slots=True)
class Hostile:
    """The hostile device attempts ``kind``."""

    kind: str


@dataclass(frozen=True, slots=True)
class Check:
    """Evaluate the during-run invariants (and schedule the next check)."""


@dataclass(frozen=True, slots=True)
class Heal:
    """End of the faulty period: every fault ends, writes stop."""


@dataclass(frozen=True, slots=True)
class Poll:
    """After the heal: has the cluster converged?"""


Event = (
    Write
    | Tick
    | Dial
    | DialFailed
    | Establish
    | Deliver
    | Fin
    | Reset
    | PathChange
    | PathTimeout
    | OnlineChange
    | Crash
    | Restart
    | Admit
    | Revoke
    | Hostile
    | Check
    | Heal
    | Poll
)


class EventQueue:
    """A min-heap of (time, seq, event)."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Event]] = []
        self._seq = 0

    def push(self, time_ms: int, event: Event) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ms, self._seq, event))

    def pop(self) -> tuple[int, Event]:
        time_ms, _, event = heapq.heappop(self._heap)
        return time_ms, event

    def peek_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)
