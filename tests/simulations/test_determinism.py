"""One seed fixes everything: bit-identical traces and final states, in any process."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

from simulations.config import MS_PER_MIN, TEST_PROFILE
from simulations.runner import run_seed
from simulations.schedule import from_json, generate, to_json

SHORT = dataclasses.replace(TEST_PROFILE, duration_ms=3 * MS_PER_MIN)
ROOT = Path(__file__).resolve().parents[2]


def test_same_seed_same_digest() -> None:
    first = run_seed(SHORT, 7, keep_trace=True)
    second = run_seed(SHORT, 7, keep_trace=True)
    assert first.trace == second.trace
    assert first.digest == second.digest
    assert first.events == second.events and first.sim_ms == second.sim_ms


def test_different_seeds_differ() -> None:
    digests = {run_seed(SHORT, seed).digest for seed in range(3)}
    assert len(digests) == 3


def test_same_digest_in_processes_with_different_hash_seeds() -> None:
    """No set or dict order leaks into a run: PYTHONHASHSEED does not change it."""
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-m", "simulations", "--seed", "5", "--duration", "3m", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(json.loads(out.stdout)["digest"])
    assert len(digests) == 1


def test_schedule_is_data() -> None:
    schedule = generate(TEST_PROFILE, 11)
    assert schedule == generate(TEST_PROFILE, 11)
    assert from_json(to_json(schedule)) == schedule
    assert run_seed(SHORT, 3, generate(SHORT, 3)).digest == run_seed(SHORT, 3).digest
