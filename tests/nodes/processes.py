"""Real agentmesh processes for end-to-end tests (subprocesses on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdt_state.replica import Replica
from crdt_state.storage.sqlite import SqliteStore
from crdt_state.views import docs_to_py

CLI = [sys.executable, "-m", "nodes"]
#: Upper bound on any single wait in these tests; generous for a loaded 2-core machine.
WAIT_S = 120.0
_POLL_S = 0.05


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(_POLL_S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    *args: str, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"agentmesh {' '.join(args)} failed: {result.stderr}")
    return result


#: Every long-running process started by a test, so a failing test leaves none behind.
STARTED: list[subprocess.Popen[str]] = []


def kill_leftovers() -> None:
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT_S)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class NodeProcess:
    """A long-running ``agentmesh runtime`` or ``agentmesh device run``."""

    data_dir: Path
    args: list[str]
    log: Path
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    #: Extra environment variables for the next start (e.g. a crash point).
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        err = self.log.open("a")
        self.proc = subprocess.Popen(
            [*CLI, *self.args, "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **self.env},
        )
        STARTED.append(self.proc)
        err.close()

    def read_line_with(self, marker: str) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"process exited early; see {self.log}")
            self.lines.append(line)
            if line.startswith(marker):
                return line.split(maxsplit=1)[1].strip()
        raise AssertionError(f"no {marker!r} line; see {self.log}")

    def status(self) -> dict[str, Any]:
        result = run("status", "--json", "--data-dir", str(self.data_dir), check=False)
        if result.returncode != 0:
            return {}
        value: dict[str, Any] = json.loads(result.stdout)
        return value

    def synced(self) -> bool:
        st = self.status()
        return bool(st.get("running") and st.get("synced"))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=WAIT_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)


def runtime_process(data_dir: Path, port: int, log_dir: Path) -> NodeProcess:
    return NodeProcess(
        data_dir, ["runtime", "--listen", f"/ip4/127.0.0.1/tcp/{port}"], log_dir / "runtime.log"
    )


def device_process(data_dir: Path, runtime_addr: str, log_dir: Path) -> NodeProcess:
    return NodeProcess(
        data_dir, ["device", "run", "--runtime", runtime_addr], log_dir / f"{data_dir.name}.log"
    )


def open_store(data_dir: Path) -> Replica:
    """Open a node's store read-only (as an operator would, while it runs)."""
    store = SqliteStore(data_dir / "store.sqlite", readonly=True)
    mesh = store.get_meta("mesh_id")
    assert mesh is not None
    replica = Replica(mesh_id=mesh, store=store)
    replica.load()
    return replica


def content(data_dir: Path) -> tuple[dict[str, Any], dict[str, dict[int, int]]]:
    replica = open_store(data_dir)
    try:
        return docs_to_py(replica.docs), replica.vectors()
    finally:
        replica.store.close()


def envelopes_by(data_dir: Path, author_peer_id: str) -> int:
    from mesh.identity import public_key_of_peer_id

    key = public_key_of_peer_id(author_peer_id)
    replica = open_store(data_dir)
    try:
        return sum(c.seq for c in replica.chains.values() if c.author == key)
    finally:
        replica.store.close()


__all__ = ["os"]
