"""End to end with real processes on 127.0.0.1: offline catch-up and kill -9 of the runtime.

A runtime and two devices run as real ``agentmesh`` subprocesses. Device B is
stopped while the runtime and device A write 10,000 records; B comes back and
all three converge. Then the runtime is killed with SIGKILL 20 times at random
moments while A streams writes: after every kill its store opens cleanly and
holds everything it had acknowledged to A.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from crdt_state.storage.sqlite import SqliteStore
from tests.nodes.processes import (
    content,
    device_process,
    envelopes_by,
    free_port,
    open_store,
    run,
    runtime_process,
    wait_until,
)

KILLS = 20
OFFLINE_RECORDS = 5_000  # by each of the runtime and device A: 10,000 in all


def test_offline_catch_up_and_kill_9_of_the_runtime(tmp_path: Path) -> None:
    rng = random.Random(20261125)
    port = free_port()
    logs = tmp_path / "logs"
    rt_dir, a_dir, b_dir = tmp_path / "runtime", tmp_path / "a", tmp_path / "b"
    runtime = runtime_process(rt_dir, port, logs)
    runtime.start()
    address = runtime.read_line_with("listening")
    a_id = run("device", "init", "--data-dir", str(a_dir)).stdout.strip()
    b_id = run("device", "init", "--data-dir", str(b_dir)).stdout.strip()
    run("devices", "add", a_id, "--name", "a", "--data-dir", str(rt_dir))
    run("devices", "add", b_id, "--name", "b", "--data-dir", str(rt_dir))
    a, b = device_process(a_dir, address, logs), device_process(b_dir, address, logs)
    a.start()
    b.start()
    wait_until("both devices synced", lambda: a.synced() and b.synced())

    # B goes offline; the runtime and A write 10,000 records.
    assert b.stop() == 0
    lines = "\n".join(f"offline record {i}" for i in range(OFFLINE_RECORDS))
    run("send", "-", "--data-dir", str(a_dir), stdin=lines)
    run("send", "-", "--data-dir", str(rt_dir), stdin=lines)
    wait_until("A synced after its writes", a.synced)
    b.start()
    wait_until("B caught up", lambda: b.synced() and a.synced())
    docs_rt, vectors_rt = content(rt_dir)
    assert len(docs_rt["shared"]["messages"]) == 2 * OFFLINE_RECORDS
    assert content(a_dir) == (docs_rt, vectors_rt)
    assert content(b_dir) == (docs_rt, vectors_rt)

    # kill -9 the runtime at random moments while A streams writes.
    for round_ in range(KILLS):
        before = count_or_zero(rt_dir)
        stream = run_background_send(a_dir, round_)
        target = before + rng.randint(1, 8)
        wait_until(
            "runtime to receive part of the stream",
            lambda: count_or_zero(rt_dir) >= target or stream.poll() is not None,  # noqa: B023
        )
        acked = a.status()["peers"][0]["acked_own"] if a.status().get("peers") else 0
        runtime.kill9()
        replica = open_store(rt_dir)  # opens cleanly after every kill
        replica.store.close()
        assert envelopes_by(rt_dir, a_id) >= acked, f"kill {round_}: acknowledged writes lost"
        runtime.start()
        runtime.read_line_with("listening")
        assert stream.wait(timeout=120) == 0

    wait_until("all synced after the kills", lambda: a.synced() and b.synced())
    final = content(rt_dir)
    assert content(a_dir) == final
    assert content(b_dir) == final
    assert len(final[0]["shared"]["messages"]) == 2 * OFFLINE_RECORDS + KILLS * STREAM_RECORDS
    for node in (a, b, runtime):
        assert node.stop() == 0


STREAM_RECORDS = 300


def count_or_zero(data_dir: Path) -> int:
    store = SqliteStore(data_dir / "store.sqlite", readonly=True)
    try:
        return store.envelope_count()
    finally:
        store.close()


_STREAMER = """
import sys
from pathlib import Path
from nodes.control import request
socket, round_, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    request(socket, {"op": "send", "text": f"stream {round_} record {i}"})
"""


def run_background_send(data_dir: Path, round_: int) -> subprocess.Popen[bytes]:
    """A client streaming one message per request through A's control socket."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            _STREAMER,
            str(data_dir / "control.sock"),
            str(round_),
            str(STREAM_RECORDS),
        ],
    )
