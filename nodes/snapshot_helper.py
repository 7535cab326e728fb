"""Refresh a running node's local snapshot in a helper process, off the node's event loop.

A refresh re-encodes and renders whole documents: O(document), 57 ms at 20,000
records, all of it holding the GIL, so in the node's own process it stalls every
session (docs/NETWORK.md, "Latency"). A running node therefore starts
``python -m nodes snapshot-refresh --store PATH`` instead: the helper opens the
store with its own connection (the node, its parent, holds the data dir's lock;
the helper never writes an envelope), loads the replica from the current
snapshot and the envelopes after it inside one read view, builds a full
snapshot as of the last envelope it saw, and writes it in one transaction.
SQLite's WAL lets the node keep writing meanwhile; it waits only for the
helper's short write. The node then takes the stored snapshot as its own
(``Snapshotter.reload``). If the helper fails, the node refreshes in-process.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import trio

from crdt_state.replica import Replica
from crdt_state.snapshot import full_snapshot
from crdt_state.storage.sqlite import SqliteStore
from nodes.errors import NodeError

log = logging.getLogger("agentmesh.snapshot")
MESH_KEY = "mesh_id"
#: Longest a helper may take before the node gives up on it (and refreshes itself).
HELPER_TIMEOUT_S = 600.0


def refresh_store(path: Path) -> int:
    """In the helper: write a fresh full snapshot of the store at ``path``; its lid."""
    store = SqliteStore(path)
    try:
        mesh_id = store.get_meta(MESH_KEY)
        if mesh_id is None:
            raise NodeError(f"{path}: not a node's store (no mesh id)")
        with store.reading():  # the replica and the lid it covers, from one view
            replica = Replica(mesh_id=mesh_id, store=store)
            replica.load()
            lid = store.last_lid()
            rows = full_snapshot(replica, lid)
        for row in rows:
            store.put_snapshot(row)
        store.commit()
        return lid
    finally:
        store.close()


async def refresh_in_helper(path: Path) -> bool:
    """In the node: run the helper on the store at ``path``; whether it succeeded."""
    command = [sys.executable, "-m", "nodes", "snapshot-refresh", "--store", str(path)]
    try:
        with trio.move_on_after(HELPER_TIMEOUT_S) as scope:
            done = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
    except OSError as exc:  # cannot start it (no executable, out of descriptors, ...)
        log.warning("snapshot helper did not start (%s); refreshing in-process", exc)
        return False
    if scope.cancelled_caught:
        log.warning("snapshot helper took over %.0f s; refreshing in-process", HELPER_TIMEOUT_S)
        return False
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
        log.warning("snapshot helper failed (%s); refreshing in-process", tail[0])
        return False
    return True
