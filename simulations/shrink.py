"""Shrinking a failing run: a shorter run, fewer devices and fewer faults that still fail.

The seed stays fixed (it also drives writes, keys and incarnations); only the
duration, the device count and the fault schedule shrink. A candidate is kept
when its first violation names the same invariant as the original failure.
Steps, each repeated while it helps: halve the duration (dropping the faults
after it), drop the last initial device (renumbering later nodes), switch the
hostile device off, then delta-debug the fault list (remove halves, quarters,
... single faults).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from simulations.config import MIN_DEVICES, MS_PER_MIN, SimConfig
from simulations.runner import RunResult, run_seed
from simulations.schedule import (
    CrashAt,
    Fault,
    HostileAt,
    Link,
    Offline,
    Partition,
    RevokeAt,
    Schedule,
    Skew,
    fault_time,
    nodes_of,
)

#: Most runs one shrink may spend, and most wall-clock seconds.
MAX_SHRINK_RUNS = 60
MAX_SHRINK_SECONDS = 120.0
#: Never shrink a run below this simulated duration.
MIN_DURATION_MS = MS_PER_MIN


@dataclass(frozen=True)
class Shrunk:
    """The smallest failing variant found, and what it cost to find."""

    config: SimConfig
    schedule: Schedule
    result: RunResult
    runs: int


def invariant_of(result: RunResult) -> str:
    """The invariant named by a result's first violation."""
    if not result.violations:
        return ""
    first = result.violations[0]
    return first.split(" ", 2)[1] if " " in first else first


def _clip_one(fault: Fault, duration_ms: int) -> Fault:
    if isinstance(fault, Partition | Offline) and fault.end_ms > duration_ms:
        return dataclasses.replace(fault, end_ms=duration_ms)
    return fault


def _clip(schedule: Schedule, duration_ms: int) -> Schedule:
    return tuple(_clip_one(f, duration_ms) for f in schedule if fault_time(f) < duration_ms)


def _renumber(node: int, removed: int) -> int:
    return node - 1 if node > removed else node


def _remap(fault: Fault, removed: int) -> Fault | None:
    """``fault`` without device ``removed`` (None: it only concerned that device)."""
    if isinstance(fault, Partition):
        if removed in fault.devices and len(fault.devices) == 1:
            return None
        rest = tuple(_renumber(d, removed) for d in fault.devices if d != removed)
        return dataclasses.replace(fault, devices=rest)
    if removed in nodes_of(fault):
        return None
    if isinstance(fault, Offline | Link):
        return dataclasses.replace(fault, device=_renumber(fault.device, removed))
    if isinstance(fault, CrashAt | Skew):
        return dataclasses.replace(fault, node=_renumber(fault.node, removed))
    if isinstance(fault, RevokeAt):
        return dataclasses.replace(fault, device=_renumber(fault.device, removed))
    return fault


def _without_device(schedule: Schedule, removed: int) -> Schedule:
    """Drop faults naming only ``removed``; renumber the nodes after it."""
    remapped = (_remap(f, removed) for f in schedule)
    return tuple(f for f in remapped if f is not None)


class _Search:
    def __init__(self, seed: int, target: str) -> None:
        self.seed = seed
        self.target = target
        self.runs = 0
        self.started = time.perf_counter()

    def exhausted(self) -> bool:
        return (
            self.runs >= MAX_SHRINK_RUNS or time.perf_counter() - self.started > MAX_SHRINK_SECONDS
        )

    def fails(self, config: SimConfig, schedule: Schedule) -> RunResult | None:
        if self.exhausted():
            return None
        self.runs += 1
        result = run_seed(config, self.seed, schedule)
        return result if invariant_of(result) == self.target else None


def shrink(
    config: SimConfig,
    seed: int,
    schedule: Schedule,
    failure: RunResult,
    *,
    progress: Callable[[str], None] | None = None,
) -> Shrunk:
    """Shrink a failing (config, seed, schedule) while it keeps failing the same way."""
    search = _Search(seed, invariant_of(failure))
    best = Shrunk(config, schedule, failure, 0)

    def accept(cfg: SimConfig, sch: Schedule, what: str) -> bool:
        nonlocal best
        result = search.fails(cfg, sch)
        if result is None:
            return False
        best = Shrunk(cfg, sch, result, search.runs)
        if progress is not None:
            progress(f"{what}: {len(sch)} faults, {cfg.devices} devices, {cfg.duration_ms} ms")
        return True

    while best.config.duration_ms // 2 >= MIN_DURATION_MS and not search.exhausted():
        duration = best.config.duration_ms // 2
        cfg = dataclasses.replace(best.config, duration_ms=duration)
        if not accept(cfg, _clip(best.schedule, duration), "shorter"):
            break
    while best.config.devices > MIN_DEVICES and not search.exhausted():
        removed = best.config.devices
        cfg = dataclasses.replace(best.config, devices=removed - 1)
        if not accept(cfg, _without_device(best.schedule, removed), "fewer devices"):
            break
    if best.config.workload.hostile:
        cfg = dataclasses.replace(
            best.config, workload=dataclasses.replace(best.config.workload, hostile=False)
        )
        accept(cfg, tuple(f for f in best.schedule if not isinstance(f, HostileAt)), "no hostile")
    chunk = max(1, len(best.schedule) // 2)
    while chunk >= 1 and not search.exhausted():
        start = 0
        while start < len(best.schedule) and not search.exhausted():
            candidate = best.schedule[:start] + best.schedule[start + chunk :]
            if not accept(best.config, candidate, "fewer faults"):
                start += chunk
        chunk //= 2
    return Shrunk(best.config, best.schedule, best.result, search.runs)
