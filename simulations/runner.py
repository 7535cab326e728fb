"""Run one seed, or many (optionally in worker processes), and describe the result."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context

from simulations.checker import snapshot
from simulations.cluster import Cluster
from simulations.config import SimConfig
from simulations.mutants import build_of
from simulations.schedule import Schedule, generate
from simulations.trace import DIGEST_BYTES


@dataclass(frozen=True)
class RunResult:
    """What one seed did: verdict, liveness, cost and the digest of trace and final state."""

    seed: int
    ok: bool
    violations: tuple[str, ...]
    rounds: int | None
    sim_ms: int
    events: int
    wall_s: float
    digest: str
    stats: dict[str, int] = field(default_factory=dict)
    #: The event trace as text (only when asked for: it is long).
    trace: tuple[str, ...] = ()


def state_digest(cluster: Cluster) -> bytes:
    """A hash of the honest nodes' final vectors and documents."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for node in cluster.nodes:
        if node.honest and node.up:
            vectors = {doc: sorted(v.items()) for doc, v in sorted(node.replica.vectors().items())}
            digest.update(node.name.encode())
            digest.update(json.dumps(vectors, sort_keys=True).encode())
            digest.update(json.dumps(snapshot(node), sort_keys=True, default=repr).encode())
    return digest.digest()


def run_cluster(
    config: SimConfig, seed: int, schedule: Schedule | None = None, *, keep_trace: bool = False
) -> Cluster:
    """Build and run the cluster of ``seed`` (its generated schedule unless one is given)."""
    if schedule is None:
        schedule = generate(config, seed)
    cluster = Cluster(config, seed, schedule, build=build_of(config.mutant), keep_trace=keep_trace)
    cluster.run()
    return cluster


def run_seed(
    config: SimConfig, seed: int, schedule: Schedule | None = None, *, keep_trace: bool = False
) -> RunResult:
    """Run one seed and summarise it."""
    started = time.perf_counter()
    cluster = run_cluster(config, seed, schedule, keep_trace=keep_trace)
    wall = time.perf_counter() - started
    digest = hashlib.blake2b(
        cluster.trace.digest() + state_digest(cluster), digest_size=DIGEST_BYTES
    ).hexdigest()
    stats = dict(cluster.stats)
    stats.update({f"net:{k}": v for k, v in cluster.network.stats.items()})
    stats.update({f"write:{k}": v for k, v in cluster.workload.stats.items()})
    if cluster.hostile is not None:
        stats.update({f"hostile:{k}": v for k, v in cluster.hostile.stats.items()})
    for node in cluster.nodes:
        node.release()
    checker = cluster.checker
    return RunResult(
        seed=seed,
        ok=not checker.failed,
        violations=tuple(str(v) for v in checker.violations),
        rounds=cluster.convergence_rounds() if cluster.converged_at is not None else None,
        sim_ms=cluster.now,
        events=cluster.events,
        wall_s=wall,
        digest=digest,
        stats=stats,
        trace=tuple(cluster.trace.lines),
    )


def run_seeds(config: SimConfig, seeds: list[int], *, jobs: int = 1) -> Iterator[RunResult]:
    """Results of ``seeds`` (in completion order when ``jobs`` > 1).

    Worker processes are spawned (never forked); a worker that dies raises
    ``BrokenProcessPool`` here instead of leaving its seed unfinished forever.
    """
    if jobs <= 1 or len(seeds) <= 1:
        for seed in seeds:
            yield run_seed(config, seed)
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_seed, config, seed) for seed in seeds]
        for future in as_completed(futures):
            yield future.result()
