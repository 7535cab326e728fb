"""Builders for the simulator's tests: small clusters with explicit fault schedules."""

from __future__ import annotations

import dataclasses

from simulations.cluster import Cluster
from simulations.config import MS_PER_MIN, MS_PER_S, NO_FAULTS, SimConfig, WorkloadConfig
from simulations.runner import RunResult, run_seed
from simulations.schedule import Schedule

#: A quiet base for fault tests: two honest devices, no generated faults, steady writes.
QUIET = SimConfig(
    devices=2,
    duration_ms=5 * MS_PER_MIN,
    faults=NO_FAULTS,
    workload=WorkloadConfig(write_every_ms=2 * MS_PER_S, hostile=False),
)


def quiet(**changes: object) -> SimConfig:
    return dataclasses.replace(QUIET, **changes)  # type: ignore[arg-type]


def run(config: SimConfig, schedule: Schedule, seed: int = 1) -> RunResult:
    result = run_seed(config, seed, schedule)
    assert result.ok, result.violations
    return result


def cluster(config: SimConfig, schedule: Schedule, seed: int = 1) -> Cluster:
    """A started cluster to step through (``run_until``) and then ``settle``."""
    built = Cluster(config, seed, schedule)
    built.start()
    return built
