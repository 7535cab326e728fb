"""The data dir lock: one owner; a starting node waits out a command, never another node."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

import nodes.datadir as datadir_module
from mesh.limits import DATA_DIR_LOCK_WAIT_S
from nodes.datadir import DataDir
from nodes.errors import DataDirLocked


class FakeTime:
    """Stands in for time.sleep/monotonic in nodes.datadir: sleeping advances the clock."""

    def __init__(self, on_sleep: object = None) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.on_sleep = on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        if callable(self.on_sleep):
            self.on_sleep()


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(datadir_module, "time", fake)
    return fake


def test_a_starting_node_waits_for_a_command_to_finish(tmp_path: Path, fake_time: FakeTime) -> None:
    d = DataDir(tmp_path)
    with ExitStack() as command:
        command.enter_context(d.locked())  # e.g. `agentmesh send` on a stopped node's store
        fake_time.on_sleep = command.close  # ... which finishes while the node waits
        with d.locked(node=True):
            assert d.lock_file.read_text().split()[1] == "node"
    assert fake_time.sleeps == 1


def test_a_command_that_never_finishes_is_waited_for_only_so_long(
    tmp_path: Path, fake_time: FakeTime
) -> None:
    d = DataDir(tmp_path)
    refused = pytest.raises(DataDirLocked, match="in use by another agentmesh process")
    with d.locked(), refused, d.locked(node=True):
        pass
    assert fake_time.now >= 1000.0 + DATA_DIR_LOCK_WAIT_S


def test_a_second_node_is_refused_after_a_moment(tmp_path: Path, fake_time: FakeTime) -> None:
    d = DataDir(tmp_path)
    with d.locked(node=True), pytest.raises(DataDirLocked, match="in use"), d.locked(node=True):
        pass
    assert fake_time.now < 1000.0 + 1.0  # not the command's patience


def test_a_command_is_refused_at_once(tmp_path: Path, fake_time: FakeTime) -> None:
    d = DataDir(tmp_path)
    with d.locked(), pytest.raises(DataDirLocked), d.locked():
        pass
    assert fake_time.sleeps == 0


def test_a_node_is_starting_until_its_socket_answers(tmp_path: Path) -> None:
    d = DataDir(tmp_path)
    assert not d.node_starting()  # nobody there
    with d.locked():
        assert not d.node_starting()  # a command, not a node
    with d.locked(node=True):
        assert d.node_starting()
        d.control_socket.touch()  # a stale socket file (a crashed node's) does not count
        assert d.node_starting()
        d.control_socket.unlink()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
            listening.bind(str(d.control_socket))
            listening.listen(1)
            assert not d.node_starting()  # its control socket answers
            assert d.wait_for_node()
