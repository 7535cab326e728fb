"""``agentmesh sim``: options, JSON, exit status, replay commands and shrunk schedules."""

from __future__ import annotations

import json
import shlex

from click.testing import CliRunner

from nodes.cli import cli
from simulations.cli import sim
from simulations.config import parse_duration


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(sim, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_single_seed_json_has_digest_and_is_stable() -> None:
    code, out = invoke("--seed", "4", "--duration", "2m", "--json")
    assert code == 0
    first = json.loads(out)
    assert {"seeds", "failures", "sim_speedup", "events_per_s", "digest"} <= set(first)
    assert first["seeds"] == 1 and first["failures"] == 0
    _, again = invoke("--seed", "4", "--duration", "2m", "--json")
    assert json.loads(again)["digest"] == first["digest"]


def test_many_seeds_table() -> None:
    code, out = invoke("--seeds", "3", "--peers", "2", "--duration", "2m", "--loss", "0.1")
    assert code == 0
    assert "seeds run" in out and "rounds to converge" in out and "events per wall s" in out


def test_agentmesh_sim_is_wired() -> None:
    result = CliRunner().invoke(cli, ["sim", "--seed", "1", "--duration", "1m", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["seeds"] == 1


def test_a_failing_seed_exits_non_zero_prints_replay_and_shrinks() -> None:
    args = ["--profile", "test", "--seed", "0", "--seeds", "3", "--mutant", "ignores-revocation"]
    code, out = invoke(*args)
    assert code == 1
    assert "FAILED seed" in out and "replay: agentmesh sim --seed" in out
    replay = next(line for line in out.splitlines() if "replay:" in line and "--schedule" in line)
    argv = shlex.split(replay.split("replay: ", 1)[1])[2:]  # drop "agentmesh sim"
    code, out = invoke(*argv, "--json", "--no-shrink")
    assert code == 1, "the shrunk schedule still fails"
    payload = json.loads(out)
    assert payload["failures"] == 1


def test_no_faults_profile_and_toggles() -> None:
    code, out = invoke("--seed", "2", "--duration", "1m", "--no-faults", "--no-hostile", "--json")
    assert code == 0 and json.loads(out)["failures"] == 0
    code, _ = invoke("--seed", "2", "--duration", "1m", "--no-partitions", "--no-crashes")
    assert code == 0


def test_bad_options_are_usage_errors() -> None:
    code, out = invoke("--duration", "soon")
    assert code == 2 and "not a duration" in out
    code, _ = invoke("--peers", "11")
    assert code == 2


def test_durations() -> None:
    assert parse_duration("7d") == 7 * 24 * 3600 * 1000
    assert parse_duration("1h30m") == 90 * 60 * 1000
    assert parse_duration("250ms") == 250
