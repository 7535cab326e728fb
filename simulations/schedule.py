"""Fault schedules: explicit, serialisable lists of faults drawn from a seed.

A schedule is data, not code: the same schedule replays the same faults, and
the shrinker removes faults from it one by one. Node 0 is the runtime; nodes
1..devices are the initial devices (node 1 is the hostile one when hostile
nodes are on); admitted devices get the next numbers in admission order.
Faults naming a node that does not exist in a run are ignored.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from simulations.config import (
    ISOLATE_MAX_SHARE,
    ISOLATE_MIN_SHARE,
    LATENCY_MIN_MS,
    MS_PER_DAY,
    MS_PER_HOUR,
    OFFLINE_MAX_HOURS,
    OFFLINE_MIN_HOURS,
    SimConfig,
)
from simulations.rng import stream

RUNTIME = 0
HOSTILE_NODE = 1
BOTH = "both"
UP_ONLY = "up"
DOWN_ONLY = "down"
DIRECTIONS = (BOTH, UP_ONLY, DOWN_ONLY)
#: Membership changes happen inside this share of the run (so they meet other faults).
MEMBERSHIP_WINDOW = (0.1, 0.9)

HOSTILE_KINDS = (
    "agent",
    "other-device",
    "forge",
    "delete-outside",
    "future-ref",
    "replay",
    "fork",
    "fork-own",
    "context-lie",
    "garbage",
)


@dataclass(frozen=True)
class Partition:
    """Paths of ``devices`` (empty: every device) blocked in ``direction``."""

    start_ms: int
    end_ms: int
    devices: tuple[int, ...]
    direction: str


@dataclass(frozen=True)
class Offline:
    """A device is offline (it knows it: it does not dial)."""

    device: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class CrashAt:
    """``node`` crashes at ``at_ms`` (``torn``: between an input and its flush)."""

    node: int
    at_ms: int
    down_ms: int
    torn: bool


@dataclass(frozen=True)
class AdmitAt:
    """The root certifies a new device, the runtime admits it."""

    at_ms: int
    reader: bool


@dataclass(frozen=True)
class RevokeAt:
    at_ms: int
    device: int


@dataclass(frozen=True)
class HostileAt:
    at_ms: int
    kind: str


@dataclass(frozen=True)
class Link:
    """The quality of one device's link for the whole run (absent: an ideal link)."""

    device: int
    latency_ms: int
    bandwidth_bps: int
    loss: float
    duplicate: float
    reorder: float


@dataclass(frozen=True)
class Skew:
    node: int
    offset_ms: int


Fault = Partition | Offline | CrashAt | AdmitAt | RevokeAt | HostileAt | Link | Skew
Schedule = tuple[Fault, ...]

_TYPES: dict[str, type[Any]] = {
    "partition": Partition,
    "offline": Offline,
    "crash": CrashAt,
    "admit": AdmitAt,
    "revoke": RevokeAt,
    "hostile": HostileAt,
    "link": Link,
    "skew": Skew,
}
_NAMES = {cls: name for name, cls in _TYPES.items()}


def fault_time(fault: Fault) -> int:
    """When a fault begins (0 for whole-run faults)."""
    if isinstance(fault, Partition | Offline):
        return fault.start_ms
    if isinstance(fault, CrashAt | AdmitAt | RevokeAt | HostileAt):
        return fault.at_ms
    return 0


def nodes_of(fault: Fault) -> tuple[int, ...]:
    """Nodes a fault names (empty: none, or every device)."""
    if isinstance(fault, Partition):
        return fault.devices
    if isinstance(fault, Offline | Link):
        return (fault.device,)
    if isinstance(fault, CrashAt | Skew):
        return (fault.node,)
    if isinstance(fault, RevokeAt):
        return (fault.device,)
    return ()


def to_json(schedule: Schedule) -> str:
    """Compact JSON of a schedule (``from_json`` reads it back)."""
    items = []
    for fault in schedule:
        item: dict[str, Any] = {"type": _NAMES[type(fault)]}
        item.update(asdict(fault))
        items.append(item)
    return json.dumps(items, separators=(",", ":"))


def from_json(text: str) -> Schedule:
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("a schedule is a JSON array of faults")
    faults: list[Fault] = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") not in _TYPES:
            raise ValueError(f"not a fault: {item!r}")
        cls = _TYPES[item["type"]]
        kwargs = {f.name: item[f.name] for f in fields(cls)}
        if "devices" in kwargs:
            kwargs["devices"] = tuple(kwargs["devices"])
        faults.append(cls(**kwargs))
    return tuple(faults)


# --- generation ---------------------------------------------------------------------------


def _poisson_times(rng: random.Random, per_hour: float, duration_ms: int) -> list[int]:
    """Arrival times of a Poisson process over the run."""
    times: list[int] = []
    if per_hour <= 0:
        return times
    mean_gap = MS_PER_HOUR / per_hour
    t = rng.expovariate(1.0 / mean_gap)
    while t < duration_ms:
        times.append(int(t))
        t += rng.expovariate(1.0 / mean_gap)
    return times


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def generate(config: SimConfig, seed: int) -> Schedule:
    """The fault schedule of ``seed`` under ``config`` (each kind from its own stream)."""
    faults: list[Fault] = []
    duration = config.duration_ms
    devices = list(range(1, config.devices + 1))
    nodes = [RUNTIME, *devices]
    fc = config.faults
    net = config.network
    links = stream(seed, "links")
    for device in devices:
        latency = config.network.latency_median_ms
        if fc.latency:
            latency *= math.exp(links.gauss(0.0, net.latency_link_sigma))
        bandwidth = net.bandwidth_max_bps
        if fc.bandwidth:
            bandwidth = int(_log_uniform(links, net.bandwidth_min_bps, net.bandwidth_max_bps))
        loss = links.uniform(0.0, net.loss_max) if fc.loss else 0.0
        duplicate = net.duplicate_rate if fc.duplicate else 0.0
        reorder = net.reorder_rate if fc.reorder else 0.0
        faults.append(
            Link(device, max(LATENCY_MIN_MS, int(latency)), bandwidth, loss, duplicate, reorder)
        )
    if fc.skew:
        skews = stream(seed, "skew")
        for node in nodes:
            faults.append(Skew(node, skews.randint(-fc.max_skew_ms, fc.max_skew_ms)))
    if fc.partitions:
        parts = stream(seed, "partitions")
        for start in _poisson_times(parts, fc.partitions_per_hour, duration):
            length = int(_log_uniform(parts, fc.partition_min_ms, fc.partition_max_ms))
            roll = parts.random()
            if roll < fc.runtime_partition_share:
                targets: tuple[int, ...] = ()
            elif roll < 0.75:
                targets = (parts.choice(devices),)
            else:
                targets = tuple(sorted(parts.sample(devices, parts.randint(1, len(devices)))))
            direction = BOTH
            if parts.random() < fc.asymmetric_share:
                direction = parts.choice((UP_ONLY, DOWN_ONLY))
            faults.append(Partition(start, min(duration, start + length), targets, direction))
    if fc.isolate:
        iso = stream(seed, "isolate")
        if iso.random() < fc.isolate_probability:
            length = int(duration * iso.uniform(ISOLATE_MIN_SHARE, ISOLATE_MAX_SHARE))
            start = iso.randint(0, duration - length)
            faults.append(Partition(start, start + length, (iso.choice(devices),), BOTH))
    if fc.offline:
        off = stream(seed, "offline")
        day_offset = off.randrange(MS_PER_DAY)  # time of day at simulated time 0
        for device in devices:
            hour = off.uniform(0, 24) * MS_PER_HOUR
            length = int(off.uniform(OFFLINE_MIN_HOURS, OFFLINE_MAX_HOURS) * MS_PER_HOUR)
            day = -MS_PER_DAY
            while day < duration + MS_PER_DAY:
                start = day - day_offset + int(hour)
                end = start + length
                if end > 0 and start < duration:
                    faults.append(Offline(device, max(0, start), min(duration, end)))
                day += MS_PER_DAY
    if fc.crashes:
        crashes = stream(seed, "crashes")
        for node in nodes:
            for at in _poisson_times(crashes, fc.crashes_per_hour, duration):
                down = int(_log_uniform(crashes, fc.crash_down_min_ms, fc.crash_down_max_ms))
                faults.append(CrashAt(node, at, down, crashes.random() < fc.torn_share))
    if fc.membership:
        members = stream(seed, "membership")
        low, high = MEMBERSHIP_WINDOW
        if members.random() < fc.admit_probability:
            at = int(duration * members.uniform(low, high))
            faults.append(AdmitAt(at, members.random() < config.workload.reader_share))
        if members.random() < fc.revoke_probability:
            at = int(duration * members.uniform(low, high))
            faults.append(RevokeAt(at, members.choice(devices)))
    if config.workload.hostile:
        hostile = stream(seed, "hostile")
        every = config.workload.hostile_every_ms
        t = hostile.randint(0, every)
        while t < duration:
            faults.append(HostileAt(t, hostile.choice(HOSTILE_KINDS)))
            t += hostile.randint(every // 2, every + every // 2)
    faults.sort(key=lambda f: (fault_time(f), _NAMES[type(f)]))
    return tuple(faults)
