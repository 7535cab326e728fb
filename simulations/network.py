"""The simulated network: connections as reliable ordered streams that can break.

Every connection joins one device and the runtime (the star). Each direction
of a device's path can be blocked (partitions, offline windows); a frame sent
into a blocked direction waits in the connection's backlog and is
retransmitted when the path heals, unless the path stays blocked for
``stream_timeout_ms``: then the transport declares the connection dead.

On a working path a frame takes its link's latency (with jitter) plus its
transmission time at the link's bandwidth, never overtaking earlier frames of
the same direction. A lost frame costs retransmission timeouts (doubling), or,
with ``break_on_loss``, breaks the connection. Duplicates and reorderings are
adversarial faults the engine must survive (it closes the session).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from simulations.config import (
    HANDSHAKE_RTTS,
    LATENCY_MIN_MS,
    MAX_RETRANSMITS,
    MS_PER_S,
    REORDER_WINDOW_MS,
    NetworkConfig,
)
from simulations.events import DOWN, UP, Deliver, EventQueue, Fin, PathTimeout, Reset
from simulations.rng import stream
from simulations.schedule import RUNTIME, Link

#: A FIN travels in the backlog like a frame; this marks it.
_FIN: bytes | None = None


@dataclass
class Direction:
    """One direction of one connection."""

    busy_until: int = 0
    last_arrival: int = 0
    backlog: list[bytes | None] = field(default_factory=list)


def _pair() -> tuple[Direction, Direction]:
    return (Direction(), Direction())


@dataclass
class Connection:
    """One transport connection between ``device`` and the runtime."""

    id: int
    device: int
    directions: tuple[Direction, Direction] = field(
        default_factory=lambda: (Direction(), Direction())
    )
    #: The device saw the session become ready on this connection (a round).
    ready_seen: bool = False
    ready_at: int | None = None
    dead: bool = False

    def direction_from(self, src: int) -> int:
        return UP if src == self.device else DOWN

    def other(self, node: int) -> int:
        return RUNTIME if node == self.device else self.device


@dataclass
class _Path:
    blocked: int = 0
    since: int | None = None


class Network:
    """Connections, paths and link qualities; schedules deliveries on the event queue."""

    def __init__(
        self,
        config: NetworkConfig,
        seed: int,
        queue: EventQueue,
        clock: Callable[[], int],
        links: dict[int, Link],
    ) -> None:
        self.config = config
        self.seed = seed
        self.queue = queue
        self.clock = clock
        self.links = links
        self.conns: dict[int, Connection] = {}
        self.calm = False
        self.stats: Counter[str] = Counter()
        self._next_conn = 1
        self._paths: dict[tuple[int, int], _Path] = {}
        self._rngs: dict[int, random.Random] = {}

    # --- links ------------------------------------------------------------------------

    def _rng(self, device: int) -> random.Random:
        rng = self._rngs.get(device)
        if rng is None:
            rng = self._rngs[device] = stream(self.seed, "network", device)
        return rng

    def _ideal(self, device: int) -> Link:
        latency = max(LATENCY_MIN_MS, int(self.config.latency_median_ms))
        return Link(device, latency, self.config.bandwidth_max_bps, 0.0, 0.0, 0.0)

    def link(self, device: int) -> Link:
        link = self.links.get(device)
        if link is None:
            link = self.links[device] = self._ideal(device)
        return link

    def latency(self, device: int) -> int:
        """One frame's one-way latency on ``device``'s link."""
        link = self.link(device)
        if device not in self.links or self.config.latency_jitter_sigma <= 0:
            return link.latency_ms
        jitter = math.exp(self._rng(device).gauss(0.0, self.config.latency_jitter_sigma))
        return max(LATENCY_MIN_MS, int(link.latency_ms * jitter))

    def handshake_ms(self, device: int) -> int:
        return sum(self.latency(device) * 2 for _ in range(HANDSHAKE_RTTS))

    # --- paths ------------------------------------------------------------------------

    def _path(self, device: int, direction: int) -> _Path:
        key = (device, direction)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = _Path()
        return path

    def blocked(self, device: int, direction: int) -> bool:
        path = self._paths.get((device, direction))
        return path is not None and path.blocked > 0

    def path_open(self, device: int) -> bool:
        return not self.blocked(device, UP) and not self.blocked(device, DOWN)

    def change_path(self, device: int, direction: int, delta: int) -> None:
        """Block (+1) or unblock (-1) a direction; overlapping blocks nest."""
        path = self._path(device, direction)
        was = path.blocked > 0
        path.blocked = max(0, path.blocked + delta)
        now = self.clock()
        if path.blocked > 0 and not was:
            path.since = now
            self.queue.push(
                now + self.config.stream_timeout_ms, PathTimeout(device, direction, now)
            )
        elif path.blocked == 0 and was:
            path.since = None
            self._release(device, direction)

    def unblock_all(self) -> None:
        for (device, direction), path in sorted(self._paths.items()):
            if path.blocked:
                path.blocked = 1
                self.change_path(device, direction, -1)

    def path_timeout(self, device: int, direction: int, since: int) -> None:
        """A path blocked since ``since`` is still blocked: its connections die."""
        path = self._paths.get((device, direction))
        if path is None or path.blocked == 0 or path.since != since:
            return
        for conn in self._conns_of(device):
            self.stats["stream-timeouts"] += 1
            self.reset(conn, 0)

    def _conns_of(self, device: int) -> list[Connection]:
        return [c for c in self.conns.values() if c.device == device and not c.dead]

    def _release(self, device: int, direction: int) -> None:
        """A direction healed: retransmit what waited, in order."""
        for conn in self._conns_of(device):
            backlog = conn.directions[direction].backlog
            if not backlog:
                continue
            waiting = list(backlog)
            backlog.clear()
            for item in waiting:
                self._transmit(conn, direction, item, self.config.rto_ms)

    # --- connections --------------------------------------------------------------------

    def open(self, device: int) -> Connection:
        conn = Connection(self._next_conn, device)
        self._next_conn += 1
        self.conns[conn.id] = conn
        self.stats["connections"] += 1
        return conn

    def send(self, conn: Connection, src: int, data: bytes) -> None:
        """Queue one frame from ``src`` on ``conn``."""
        if conn.dead:
            return
        direction = conn.direction_from(src)
        if self.blocked(conn.device, direction):
            conn.directions[direction].backlog.append(data)
            self.stats["backlogged"] += 1
            return
        self._transmit(conn, direction, data, 0)

    def fin(self, conn: Connection, src: int) -> None:
        """``src`` closed its end: the far end learns it after the frames before it."""
        if conn.dead:
            return
        direction = conn.direction_from(src)
        if self.blocked(conn.device, direction):
            conn.directions[direction].backlog.append(_FIN)
            return
        self._transmit(conn, direction, _FIN, 0)

    def reset(self, conn: Connection, delay_ms: int) -> None:
        """The connection dies: both ends learn it after ``delay_ms``; frames are dropped."""
        if conn.dead:
            return
        conn.dead = True
        now = self.clock()
        for node in (conn.device, RUNTIME):
            self.queue.push(now + delay_ms, Reset(conn.id, node))

    def drop(self, conn: Connection) -> None:
        """Forget a connection both ends have left."""
        conn.dead = True
        self.conns.pop(conn.id, None)

    def _transmit(self, conn: Connection, direction: int, item: bytes | None, delay: int) -> None:
        device = conn.device
        link = self.link(device)
        rng = self._rng(device)
        now = self.clock() + delay
        src = device if direction == UP else RUNTIME
        if item is None:
            self.queue.push(
                max(now + self.latency(device), conn.directions[direction].last_arrival),
                Fin(conn.id, src),
            )
            return
        faulty = not self.calm
        if faulty and link.loss > 0 and rng.random() < link.loss:
            if rng.random() < self.config.break_on_loss:
                self.stats["breaks-on-loss"] += 1
                self.reset(conn, self.config.rto_ms)
                return
            rto = self.config.rto_ms
            losses = 1
            while losses < MAX_RETRANSMITS and rng.random() < link.loss:
                losses += 1
            self.stats["retransmits"] += losses
            now += rto * ((1 << losses) - 1)
        state = conn.directions[direction]
        start = max(now, state.busy_until)
        state.busy_until = start + len(item) * MS_PER_S // max(1, link.bandwidth_bps)
        arrival = state.busy_until + self.latency(device)
        if faulty and link.reorder > 0 and rng.random() < link.reorder:
            self.stats["reordered"] += 1
            if state.last_arrival > now:
                arrival = rng.randint(now, state.last_arrival - 1)  # overtakes an earlier frame
            else:
                arrival += rng.randint(1, REORDER_WINDOW_MS)  # later frames may overtake it
        else:
            arrival = max(arrival, state.last_arrival)
            state.last_arrival = arrival
        self.queue.push(arrival, Deliver(conn.id, src, item))
        self.stats["frames"] += 1
        self.stats["bytes"] += len(item)
        if faulty and link.duplicate > 0 and rng.random() < link.duplicate:
            self.queue.push(arrival, Deliver(conn.id, src, item))
            self.stats["duplicated"] += 1
