"""The simulator's speed: 5 nodes each writing once per simulated second under mixed faults.

``run()`` runs ``SEEDS`` seeds of the ``bench`` profile (runtime + 4 devices,
one of them hostile, every fault kind on, 10 simulated minutes each, then the
heal and convergence) in this process and reports simulated seconds per wall
second (``sim_speedup``, target >= 100) and events per wall second.
"""

from __future__ import annotations

import time
from typing import Any

from simulations.config import BENCH_PROFILE, MS_PER_S
from simulations.report import Summary
from simulations.runner import run_seed

SEEDS = 3
TARGET_SPEEDUP = 100.0


def run() -> dict[str, Any]:
    summary = Summary()
    started = time.perf_counter()
    writes = 0
    for seed in range(SEEDS):
        result = run_seed(BENCH_PROFILE, seed)
        summary.add(result)
        writes += sum(v for k, v in result.stats.items() if k.startswith("write:"))
    summary.wall_s = time.perf_counter() - started
    data = summary.to_json()
    return {
        "seeds": summary.seeds,
        "failures": len(summary.failures),
        "nodes": BENCH_PROFILE.devices + 1,
        "write_every_ms": BENCH_PROFILE.workload.write_every_ms,
        "sim_seconds": data["sim_seconds"],
        "wall_seconds": data["wall_seconds"],
        "sim_speedup": data["sim_speedup"],
        "events_per_s": data["events_per_s"],
        "transactions_per_sim_s": round(writes / (summary.sim_ms / MS_PER_S), 2),
        "target_speedup": TARGET_SPEEDUP,
        "meets_target": summary.sim_speedup >= TARGET_SPEEDUP,
    }
