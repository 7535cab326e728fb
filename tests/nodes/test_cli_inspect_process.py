"""Inspection commands against real processes: a running runtime and device, then stopped.

The runtime and the phone run as ``agentmesh`` subprocesses (libp2p on
127.0.0.1). While they run, ``state show``, ``history``, ``blame``, ``status``
and ``watch`` read the runtime's data dir read-only (the runtime holds its lock);
none of them imports libp2p or trio. After both stop, ``status`` tells from the
store alone, and the closing node has left a current snapshot behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from crdt_state.schema import SHARED
from crdt_state.snapshot import read_snapshot
from crdt_state.storage.sqlite import SqliteStore
from mesh.identity import public_key_of_peer_id
from nodes.tracking import stored_peer
from tests.nodes.processes import (
    CLI,
    WAIT_S,
    device_process,
    free_port,
    run,
    runtime_process,
    wait_until,
)

# Runs one command through click in a fresh interpreter, then lists the modules that
# must never load for it.
_PROBE = """
import json, sys
from click.testing import CliRunner
from nodes.cli import cli
result = CliRunner().invoke(cli, json.loads(sys.argv[1]), catch_exceptions=False)
assert result.exit_code == 0, result.output
heavy = ("libp2p", "trio", "multiaddr")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""


def _json(*args: str) -> Any:
    return json.loads(run(*args, "--json").stdout)


def _loaded_heavy_modules(args: list[str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded


def test_inspecting_running_nodes_and_then_their_stopped_data_dirs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    rt_dir, phone_dir = tmp_path / "runtime", tmp_path / "phone"
    rt, ph = str(rt_dir), str(phone_dir)
    runtime = runtime_process(rt_dir, free_port(), logs)
    runtime.start()
    address = runtime.read_line_with("listening")
    phone_id = run("device", "init", "--data-dir", ph).stdout.strip()
    run("devices", "add", phone_id, "--name", "phone", "--data-dir", rt)
    phone = device_process(phone_dir, address, logs)
    phone.start()
    try:
        wait_until("the phone synced", phone.synced)
        run("send", "before the watch", "--data-dir", ph)

        watch = subprocess.Popen(
            [*CLI, "state", "watch", SHARED, "--json", "--count", "1", "--data-dir", rt],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert watch.stderr is not None
            assert watch.stderr.readline().startswith("watching shared")
            message_id = run("send", "hello from the phone", "--data-dir", ph).stdout.strip()
            out, err = watch.communicate(timeout=WAIT_S)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()
        assert watch.returncode == 0, err
        (change,) = [json.loads(line) for line in out.splitlines()]
        assert (change["author"], change["device"], change["doc"]) == (phone_id, "phone", SHARED)
        assert change["changes"] == [
            {
                "path": f"messages/{message_id}",
                "action": "add",
                "value": {
                    "id": message_id,
                    "text": "hello from the phone",
                    "author": phone_id,
                    "ts": change["changes"][0]["value"]["ts"],
                },
            }
        ]

        # While both run: the runtime's data dir, read-only, next to the runtime.
        wait_until("both synced", lambda: phone.synced() and runtime.synced())
        messages = _json("state", "show", SHARED, "messages", "--data-dir", rt)
        texts = sorted(m["text"] for m in messages.values())
        assert texts == ["before the watch", "hello from the phone"]
        assert _json("state", "show", SHARED, "--data-dir", ph)["messages"] == messages
        blame = _json("state", "blame", SHARED, f"messages/{message_id}", "--data-dir", rt)
        assert blame["writer"]["author"] == phone_id
        history = _json("state", "history", SHARED, "--author", "phone", "--data-dir", rt)
        assert [r["status"] for r in history] == ["accepted", "accepted"]

        status = _json("status", "--data-dir", rt)
        assert status["running"] and status["synced"] and status["role"] == "runtime"
        (peer,) = status["peers"]
        assert (peer["name"], peer["peer_id"], peer["connected"]) == ("phone", phone_id, True)
        assert peer["synced"] and peer["we_lack"] == peer["they_lack"] == 0
        assert peer["docs"][SHARED] == {"we_lack": 0, "they_lack": 0}
        assert peer["last_sync_ms"] is not None and status["held"] == 0
        assert status["pending_writes"] == 0 and status["store"]["bytes"] > 0
        phone_status = _json("status", "--data-dir", ph)
        assert phone_status["running"] and phone_status["pending_writes"] == 0
        assert phone_status["own_envelopes"] == 2

        for args in (
            ["--help"],
            ["state", "show", "--data-dir", rt],
            ["state", "show", SHARED, "messages", "--json", "--data-dir", rt],
            ["state", "history", "--data-dir", rt],
            ["state", "blame", SHARED, f"messages/{message_id}", "--data-dir", rt],
            ["state", "at", SHARED, "--seq", "1", "--data-dir", rt],
            ["state", "diff", SHARED, "--from", "1h", "--data-dir", rt],
            ["status", "--data-dir", rt],
            ["status", "--json", "--data-dir", ph],
        ):
            assert _loaded_heavy_modules(args) == [], args

        # The runtime records its peer's sync state for when it is stopped.
        store = SqliteStore(rt_dir / "store.sqlite", readonly=True)
        try:
            key = public_key_of_peer_id(phone_id)
            wait_until(
                "the runtime recorded the phone in sync",
                lambda: (
                    (record := stored_peer(store, key)) is not None
                    and record.synced
                    and SHARED in record.docs
                ),
            )
        finally:
            store.close()
    finally:
        for node in (phone, runtime):
            if node.proc is not None:
                node.stop()

    stopped = _json("status", "--data-dir", rt)
    assert not stopped["running"] and not stopped["synced"] and stopped["held"] is None
    (peer,) = stopped["peers"]
    assert peer["name"] == "phone" and not peer["connected"] and peer["last_sync_ms"], peer
    assert peer["docs_as_of_last_seen"].get(SHARED) == {"we_lack": 0, "they_lack": 0}, peer
    assert stopped["snapshot"]["behind"] == 0  # the closing node left a current snapshot
    for data_dir in (rt_dir, phone_dir):
        store = SqliteStore(data_dir / "store.sqlite", readonly=True)
        try:
            snapshot = read_snapshot(store)
            assert snapshot is not None and snapshot.lid == store.last_lid()
        finally:
            store.close()
    shown = _json("state", "show", SHARED, "messages", "--data-dir", rt)
    assert shown == messages
    text = run("status", "--data-dir", ph).stdout
    assert "stopped" in text and "runtime" in text
