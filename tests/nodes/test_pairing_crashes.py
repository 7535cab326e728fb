"""Pairing survives kill -9 of either side at every step (real processes on 127.0.0.1).

Each case makes one real process die with SIGKILL at an exact step of the join
(``AGENTMESH_CRASH_AT``, nodes/crashpoints.py): the runtime after staging or
after committing a join request or an approval, or the joining device after
preparing its data dir or after receiving the runtime's answer. The dead side is
started again (the user retries a failed command); every case must end with the
device joined exactly once and syncing, never half-paired.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nodes.crashpoints import ENV
from tests.nodes.processes import (
    CLI,
    STARTED,
    WAIT_S,
    NodeProcess,
    device_process,
    free_port,
    run,
    runtime_process,
    wait_until,
)

KILLED = -9


def start_runtime(rt_dir: Path, port: int, logs: Path, crash_at: str = "") -> NodeProcess:
    runtime = runtime_process(rt_dir, port, logs)
    runtime.env = {ENV: crash_at} if crash_at else {}
    runtime.start()
    runtime.read_line_with("listening")
    return runtime


def open_invite(rt_dir: Path, *extra: str) -> str:
    result = run("invite", "--json", "--data-dir", str(rt_dir), *extra)
    return str(json.loads(result.stdout)["code"])


def start_join(code: str, device_dir: Path, crash_at: str = "") -> subprocess.Popen[str]:
    import os

    proc = subprocess.Popen(
        [*CLI, "join", code, "--name", "tab", "--data-dir", str(device_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **({ENV: crash_at} if crash_at else {})},
    )
    STARTED.append(proc)
    return proc


def finish_join(proc: subprocess.Popen[str], code: str, device_dir: Path) -> str:
    """The join's outcome; a clean failure is retried once, as a user would."""
    out, err = proc.communicate(timeout=WAIT_S)
    if proc.returncode == 0:
        return out
    assert proc.returncode in (1, KILLED), err
    if proc.returncode == 1:  # a clean failure says what happened
        assert "runtime" in err or "invite" in err, err
    retry = run("join", code, "--name", "tab", "--data-dir", str(device_dir))
    return retry.stdout


def assert_joined_once_and_syncing(rt_dir: Path, device_dir: Path, logs: Path, out: str) -> None:
    assert "joined mesh" in out
    rows = json.loads(run("devices", "--json", "--data-dir", str(rt_dir)).stdout)
    tabs = [r for r in rows if r["name"] == "tab"]
    assert len(tabs) == 1 and not tabs[0]["revoked"], rows
    device = device_process(device_dir, "", logs)
    device.args = ["device", "run"]
    device.start()
    run("send", "after the crash", "--data-dir", str(device_dir))
    wait_until("the joined device syncs", device.synced)
    assert device.stop() == 0


@pytest.mark.parametrize("point", ["join.staged", "join.committed"])
def test_runtime_killed_while_answering_a_join(tmp_path: Path, point: str) -> None:
    rt_dir, device_dir, logs = tmp_path / "runtime", tmp_path / "tab", tmp_path / "logs"
    port = free_port()
    runtime = start_runtime(rt_dir, port, logs)
    code = open_invite(rt_dir)  # the invite is durable across restarts
    assert runtime.stop() == 0
    runtime = start_runtime(rt_dir, port, logs, crash_at=point)
    joiner = start_join(code, device_dir)
    assert runtime.proc is not None
    assert runtime.proc.wait(timeout=WAIT_S) == KILLED
    runtime = start_runtime(rt_dir, port, logs)
    out = finish_join(joiner, code, device_dir)
    assert_joined_once_and_syncing(rt_dir, device_dir, logs, out)
    assert runtime.stop() == 0


@pytest.mark.parametrize(
    "point", ["join.staged", "join.committed", "approve.staged", "approve.committed"]
)
def test_runtime_killed_during_a_join_that_needs_approval(tmp_path: Path, point: str) -> None:
    rt_dir, device_dir, logs = tmp_path / "runtime", tmp_path / "tab", tmp_path / "logs"
    port = free_port()
    runtime = start_runtime(rt_dir, port, logs, crash_at=point)
    code = open_invite(rt_dir, "--require-approval")
    joiner = start_join(code, device_dir)
    waiting: list[dict[str, str]] = []

    def waits() -> bool:
        if runtime.proc is None or runtime.proc.poll() is not None:
            return True
        result = run("devices", "waiting", "--json", "--data-dir", str(rt_dir), check=False)
        waiting[:] = json.loads(result.stdout) if result.returncode == 0 else []
        return bool(waiting)

    wait_until("the device waits for approval, or the runtime died", waits)
    if point.startswith("approve"):
        refused = run(
            "devices", "approve", waiting[0]["device"], "--data-dir", str(rt_dir), check=False
        )
        assert refused.returncode == 1  # the runtime died before it could answer
    assert runtime.proc is not None
    assert runtime.proc.wait(timeout=WAIT_S) == KILLED
    runtime = start_runtime(rt_dir, port, logs)

    def approved_or_joined() -> bool:
        if joiner.poll() is not None:
            return True
        result = run("devices", "waiting", "--json", "--data-dir", str(rt_dir), check=False)
        pending = json.loads(result.stdout) if result.returncode == 0 else []
        for row in pending:  # still waiting after the restart: approve (again)
            run("devices", "approve", row["device"], "--data-dir", str(rt_dir), check=False)
        return False

    wait_until("the join goes through", approved_or_joined)
    out = finish_join(joiner, code, device_dir)
    assert_joined_once_and_syncing(rt_dir, device_dir, logs, out)
    assert runtime.stop() == 0


@pytest.mark.parametrize("point", ["device.prepared", "device.answered"])
def test_device_killed_while_joining(tmp_path: Path, point: str) -> None:
    rt_dir, device_dir, logs = tmp_path / "runtime", tmp_path / "tab", tmp_path / "logs"
    runtime = start_runtime(rt_dir, free_port(), logs)
    code = open_invite(rt_dir)
    joiner = start_join(code, device_dir, crash_at=point)
    assert joiner.wait(timeout=WAIT_S) == KILLED
    # Not half-paired: the device has no mesh yet, and starting it says so.
    early = run("send", "too early", "--data-dir", str(device_dir), check=False)
    assert early.returncode != 0
    out = finish_join(joiner, code, device_dir)
    assert_joined_once_and_syncing(rt_dir, device_dir, logs, out)
    assert runtime.stop() == 0
