"""The checker can fail: every deliberately broken build is caught within its stated seeds."""

from __future__ import annotations

import dataclasses

import pytest

from simulations.config import TEST_PROFILE
from simulations.mutants import MUTANTS
from simulations.report import replay_command
from simulations.runner import run_seed


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught(name: str) -> None:
    mutant = MUTANTS[name]
    config = dataclasses.replace(TEST_PROFILE, mutant=name)
    for seed in range(mutant.catch_within):
        result = run_seed(config, seed)
        if not result.ok:
            print(f"{name} caught by seed {seed}: {result.violations[0]}")
            print("replay:", replay_command(seed, ["--profile", "test", "--mutant", name]))
            return
    pytest.fail(f"{name} ({mutant.description}) survived {mutant.catch_within} seeds")


def test_production_build_passes_the_same_seeds() -> None:
    for seed in range(3):
        result = run_seed(TEST_PROFILE, seed)
        assert result.ok, (seed, result.violations)
