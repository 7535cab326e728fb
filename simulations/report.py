"""Summaries of many runs: percentiles, throughput, and the replay command of a failure."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field

from simulations.config import MS_PER_S
from simulations.runner import RunResult

PERCENTILES = (50, 90, 99)


def percentile(values: list[int], pct: int) -> int | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Summary:
    """Totals over the seeds of one invocation."""

    seeds: int = 0
    failures: list[RunResult] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    sim_ms: int = 0
    events: int = 0
    wall_s: float = 0.0

    def add(self, result: RunResult) -> None:
        self.seeds += 1
        self.sim_ms += result.sim_ms
        self.events += result.events
        if result.rounds is not None:
            self.rounds.append(result.rounds)
        if not result.ok:
            self.failures.append(result)

    @property
    def sim_speedup(self) -> float:
        return self.sim_ms / MS_PER_S / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    def round_percentiles(self) -> dict[str, int | None]:
        result: dict[str, int | None] = {f"p{p}": percentile(self.rounds, p) for p in PERCENTILES}
        result["max"] = max(self.rounds) if self.rounds else None
        return result

    def to_json(self) -> dict[str, object]:
        return {
            "seeds": self.seeds,
            "failures": len(self.failures),
            "failed_seeds": sorted(r.seed for r in self.failures),
            "rounds": self.round_percentiles(),
            "sim_seconds": round(self.sim_ms / MS_PER_S, 3),
            "wall_seconds": round(self.wall_s, 3),
            "sim_speedup": round(self.sim_speedup, 1),
            "events": self.events,
            "events_per_s": round(self.events_per_s, 1),
            "seeds_per_s": round(self.seeds / self.wall_s, 3) if self.wall_s > 0 else 0.0,
        }


def replay_command(seed: int, options: list[str]) -> str:
    """The one command that replays ``seed`` with the same options."""
    return shlex.join(["agentmesh", "sim", "--seed", str(seed), *options])
