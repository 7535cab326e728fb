"""W1, W1p, W2, W3 over libp2p on 127.0.0.1, against pycrdt-websocket, and in memory.

Three systems run the same workloads in one invocation:

* ``p2p``: ours over libp2p (TCP + Noise + yamux) on 127.0.0.1 with durable
  acknowledgements. The runtime is the real ``agentmesh runtime`` command
  (``python -m nodes runtime``: an EngineDriver behind a libp2p host, gated by
  membership) in its own process, on a data dir prepared by ``init_runtime`` and
  certificates as ``devices add`` issues them. Each device (the writer, each
  reader) is an EngineDriver with its own libp2p host in its own process
  (``device_worker``), driven by JSON lines from this process. Every node keeps a
  SQLite store (WAL, ``synchronous=FULL``) in a temporary directory and signs its
  envelopes. One process per node, as deployed: a node's blocking fsync stalls
  only its own event loop (in one trio run, 21 nodes' fsyncs would serialise).
* ``mem``: the same drivers, engines and SQLite stores over in-memory FrameStream
  pairs (``mesh.transport.memory.memory_stream_pair``), all nodes in one trio run
  (one thread: every node's fsync stalls all of them).
* ``pycrdt_websocket``: pycrdt-websocket as it runs by default: its
  ``WebsocketServer`` behind ``ASGIServer`` under Hypercorn (asyncio) in a
  subprocess, in memory (no store, nothing signed), and clients that are
  ``pycrdt.Provider`` over ``HttpxWebsocket`` (httpx-ws), all under asyncio in this
  process after the trio runs. One change from the defaults: the clients accept
  messages up to 64 MiB (httpx-ws refuses messages over 64 KiB by default, which
  would break W2's catch-up).

Workloads (a record is ``map[key] = {5 small fields}`` in its own transaction; the
writer yields to its event loop after each one):

* W1: 20,000 records streamed writer -> runtime/server -> reader as fast as the
  writer can: records/s (first write to the reader holding all) and write-to-reader
  latency p50/p99 (end of the writer's transaction to the reader's map observer;
  CLOCK_MONOTONIC, comparable across processes).
* W1p: the same, paced at 1,000 records/s: latency p50/p99.
* W2: a reader holding 1,000 records reconnects and catches up on 100,000 more
  (written the W1 way while it was away, and held by the runtime/server before it
  reconnects): seconds from the start of the dial to the reader holding all, and
  bytes on the wire of the reader's connection.
* W3: 1 writer, 20 readers, 2,000 records: seconds from the first write until every
  reader holds every record.

Bytes: ``*_framed_*`` counts application frames (ours: length prefix + frame, at
the reader's FrameStream; theirs: WebSocket message payloads, at the reader's
channel); it does not include Noise, yamux, multistream-select or identify for
libp2p, nor WebSocket framing and HTTP for pycrdt-websocket. ``*_tcp_*`` counts
TCP payload bytes of the reader's connection from the kernel (``ss -ti``:
``bytes_received``, ``bytes_sent``, sampled when the reader holds everything),
which includes all of those and the handshakes. "to reader" is the catch-up
itself; "from reader" is the reader's hello and acknowledgements (ours) or its
sync messages and its re-send of the whole catch-up update (pycrdt's provider
sends back every update it applies; still under way when sampled). The W2 byte
ratio's target is checked on TCP bytes to the reader.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from benchmarks import relay_floor
from benchmarks.network.common import (
    W1_RECORDS,
    W1P_RATE,
    W1P_RECORDS,
    W2_BASE,
    W2_RECORDS,
    W3_READERS,
    W3_RECORDS,
)
from benchmarks.network.mem import run_mem
from benchmarks.network.p2p import run_p2p
from benchmarks.network.pycrdt_ws import run_pycrdt_websocket
from mesh import limits

#: ours / theirs, and whether the figure must be at least (">=") or at most ("<=") it.
TARGETS: dict[str, tuple[str, float]] = {
    "w1_ratio_vs_pycrdt_websocket": (">=", 5.0),
    "w1p_p99_ratio_vs_pycrdt_websocket": ("<=", 1.0),
    "w2_time_ratio_vs_pycrdt_websocket": ("<=", 1.0),
    "w2_bytes_ratio_vs_pycrdt_websocket": ("<=", 1.05),
    "w3_time_ratio_vs_pycrdt_websocket": ("<=", 0.25),
}


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    versions: dict[str, str | None] = {}
    for package in ("pycrdt", "libp2p", "pycrdt-websocket", "hypercorn", "httpx-ws", "trio"):
        try:
            versions[package] = version(package)
        except Exception:
            versions[package] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "load_average_1m": round(os.getloadavg()[0], 2),
        **_commit_probe(),
    }


def _commit_probe(n: int = 200) -> dict[str, float]:
    """What one SQLite WAL commit with synchronous=FULL (one fsync) costs here, now."""
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-fsync-") as tmp:
        db = sqlite3.connect(Path(tmp) / "probe.sqlite", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE t (x BLOB)")
            times = []
            for _ in range(n):
                start = time.monotonic()
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t VALUES (?)", (bytes(300),))
                db.execute("COMMIT")
                times.append(time.monotonic() - start)
        finally:
            db.close()
    cuts = statistics.quantiles(times, n=100)
    return {
        "sqlite_full_commit_p50_us": round(cuts[49] * 1e6),
        "sqlite_full_commit_p99_us": round(cuts[98] * 1e6),
    }


def _ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 4) if b else float("inf")

    bytes_key = "w2_tcp_bytes_to_reader"
    if bytes_key not in ours or bytes_key not in theirs:
        bytes_key = "w2_framed_bytes_to_reader"
    values = {
        "w1_ratio_vs_pycrdt_websocket": ratio(ours["w1_records_per_s"], theirs["w1_records_per_s"]),
        "w1p_p99_ratio_vs_pycrdt_websocket": ratio(
            ours["w1p_latency_p99_ms"], theirs["w1p_latency_p99_ms"]
        ),
        "w2_time_ratio_vs_pycrdt_websocket": ratio(ours["w2_seconds"], theirs["w2_seconds"]),
        "w2_bytes_ratio_vs_pycrdt_websocket": ratio(ours[bytes_key], theirs[bytes_key]),
        "w3_time_ratio_vs_pycrdt_websocket": ratio(ours["w3_seconds"], theirs["w3_seconds"]),
    }
    met = {}
    for name, (op, target) in TARGETS.items():
        met[name] = values[name] >= target if op == ">=" else values[name] <= target
    return {
        **values,
        "w2_bytes_ratio_measured_on": bytes_key,
        "w2_framed_bytes_ratio_vs_pycrdt_websocket": ratio(
            ours["w2_framed_bytes_to_reader"], theirs["w2_framed_bytes_to_reader"]
        ),
        "targets": {name: f"{op} {target}" for name, (op, target) in TARGETS.items()},
        "targets_met": met,
    }


def run() -> dict[str, Any]:
    """All workloads through ours over libp2p, ours in memory, and pycrdt-websocket."""
    before = _machine()
    from mesh.transport.libp2p import quiet_libp2p_logging

    quiet_libp2p_logging()
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-net-") as tmp:
        p2p = run_p2p(Path(tmp) / "p2p")
        mem = trio.run(run_mem, Path(tmp) / "mem")
    theirs = run_pycrdt_websocket()
    floor = relay_floor.run()
    return {
        "benchmark": "network",
        "machine": before,
        "machine_after": {k: v for k, v in _machine().items() if "commit" in k or "load" in k},
        "workloads": {
            "w1_records": W1_RECORDS,
            "w1p_records": W1P_RECORDS,
            "w1p_rate_per_s": W1P_RATE,
            "w2_base_records": W2_BASE,
            "w2_records": W2_RECORDS,
            "w3_readers": W3_READERS,
            "w3_records": W3_RECORDS,
        },
        "batching": {
            "max_txns_per_envelope": limits.MAX_TXNS_PER_ENVELOPE,
            "max_batch_delay_ms": limits.MAX_BATCH_DELAY_MS,
            "max_envelopes_per_batch": limits.MAX_ENVELOPES_PER_BATCH,
            "max_batch_bytes": limits.MAX_BATCH_BYTES,
            "max_unacked_batches": limits.MAX_UNACKED_BATCHES,
        },
        "p2p": p2p,
        "mem": mem,
        "pycrdt_websocket": theirs,
        "relay_floor": floor,
        **_w1p_bound(floor, before, theirs),
        **_ratios(p2p, theirs),
    }


def _w1p_bound(
    floor: dict[str, Any], machine: dict[str, Any], theirs: dict[str, Any]
) -> dict[str, Any]:
    """The least W1p p99 our design allows on this transport, and it against theirs.

    A record crosses two py-libp2p hops (``relay_floor``: nothing but the
    transport) and two commits (the writer's before it sends, the runtime's
    before it relays), each counted at its median.
    """
    bound = floor["p99_ms"] + 2 * machine["sqlite_full_commit_p50_us"] / 1000
    return {
        "w1p_p99_lower_bound_ms": round(bound, 3),
        "w1p_p99_lower_bound_ratio_vs_pycrdt_websocket": round(
            bound / theirs["w1p_latency_p99_ms"], 4
        ),
        "relay_floor_p99_ratio_vs_pycrdt_websocket": round(
            floor["p99_ms"] / theirs["w1p_latency_p99_ms"], 4
        ),
    }
