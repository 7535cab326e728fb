"""Many seeds of mixed faults with hostile nodes: every invariant holds on every seed."""

from __future__ import annotations

from simulations.config import SUITE_PROFILE
from simulations.report import Summary, replay_command
from simulations.runner import run_seeds

#: Seeds of the suite profile (5 simulated minutes each, every fault kind, hostile on).
SUITE_SEEDS = 200
#: Worker processes (the machine has two cores).
JOBS = 2


def test_mixed_fault_seeds() -> None:
    summary = Summary()
    for result in run_seeds(SUITE_PROFILE, list(range(SUITE_SEEDS)), jobs=JOBS):
        summary.add(result)
    failures = [
        f"seed {r.seed}: {r.violations[0]} -- {replay_command(r.seed, ['--profile', 'suite'])}"
        for r in summary.failures
    ]
    assert not failures, "\n".join(failures)
    assert summary.seeds == SUITE_SEEDS
    rounds = summary.round_percentiles()
    assert rounds["max"] is not None and rounds["max"] <= SUITE_PROFILE.max_rounds
