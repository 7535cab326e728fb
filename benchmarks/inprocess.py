"""W1/W2 in one process: two engines, signing, verification, SQLite (synchronous=FULL).

W1: 20,000 separate transactions, each adding one record (a dict of 5 small
fields) to a map, written as fast as the writer can and streamed to a reader.
Baseline ("raw"): the same writer transactions with each update applied
directly to a reader document in the same loop (no envelopes, no storage).

W2: a reader holding 1,000 records catches up on 100,000 more, written the W1
way; bytes sent are compared with ``get_update(reader_state_vector)`` for the
same gap.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from crdt_state.replica import Replica
from crdt_state.schema import SHARED
from crdt_state.storage.sqlite import SqliteStore
from mesh import limits
from mesh.engine import DEVICE_ROLE, RUNTIME_ROLE, Engine, Output, Send
from mesh.identity import Identity, mesh_id_of
from mesh.membership.log import genesis
from mesh.membership.records import APPROVE, READ, WRITE, issue_certificate
from mesh.transport.memory import MemoryNetwork

W1_RECORDS = 20_000
W2_BASE = 1_000
W2_RECORDS = 100_000
_YEAR_MS = 365 * 24 * 3600 * 1000


def _record(i: int) -> dict[str, Any]:
    return {"id": f"r{i}", "kind": "note", "text": "hello world", "done": False, "by": "bench"}


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _Pair:
    """A runtime (reader) and a device (writer), each on its own SQLite file."""

    def __init__(self, folder: Path) -> None:
        root, runtime, device = Identity.generate(), Identity.generate(), Identity.generate()
        self.mesh_id = mesh_id_of(root.public_key)
        now = int(time.time() * 1000)
        self.reader = Replica(
            mesh_id=self.mesh_id, store=SqliteStore(folder / "reader.sqlite"), author=runtime
        )
        self.reader.add_log_entry(genesis(root, runtime, now_ms=now, expires_ms=now + _YEAR_MS))
        self.reader_engine = Engine(self.reader, runtime, RUNTIME_ROLE)
        cert = issue_certificate(
            root,
            self.mesh_id,
            device.public_key,
            frozenset({READ, WRITE, APPROVE}),
            now,
            now + _YEAR_MS,
            "writer",
        )
        self.reader_engine.admit(cert, now)
        self.reader.store.commit()
        self.writer = Replica(
            mesh_id=self.mesh_id, store=SqliteStore(folder / "writer.sqlite"), author=device
        )
        for entry in self.reader.membership.entries:
            self.writer.add_log_entry(entry)
        self.writer_engine = Engine(self.writer, device, DEVICE_ROLE)
        self.net = MemoryNetwork()
        self.writer_key = self.net.add(self.writer_engine)
        self.reader_key = self.net.add(self.reader_engine)
        self.bytes_to_reader = 0
        self.net.observers.append(self._count)

    def _count(self, src: bytes, output: Output) -> None:
        if src == self.writer_key and isinstance(output, Send):
            self.bytes_to_reader += len(output.data)

    def connect(self) -> None:
        assert self.net.link(self.writer_key, self.reader_key, _now_ms())

    def close(self) -> None:
        self.writer.store.close()
        self.reader.store.close()


def _raw_w1(n: int) -> float:
    writer: Doc[Any] = Doc(client_id=1)
    reader: Doc[Any] = Doc(client_id=2)
    wmap = writer.get("messages", type=Map)
    reader.get("messages", type=Map)
    updates: list[bytes] = []
    subscription = writer.observe(lambda event: updates.append(event.update))
    start = time.perf_counter()
    for i in range(n):
        with writer.transaction():
            wmap[f"r{i}"] = _record(i)
        reader.apply_update(updates.pop())
    elapsed = time.perf_counter() - start
    writer.unobserve(subscription)
    assert len(reader.get("messages", type=Map)) == n
    return n / elapsed


def _w1(folder: Path, n: int) -> dict[str, Any]:
    pair = _Pair(folder)
    pair.connect()
    pair.net.run(_now_ms())
    messages = pair.reader.doc(SHARED).get("messages", type=Map)
    # The writer holds its root map, as the raw loop does: both run the same pycrdt calls.
    wmap = pair.writer.doc(SHARED).get("messages", type=Map)
    written_at: list[float] = []
    latencies: list[float] = []
    seen = 0
    start = time.perf_counter()
    for i in range(n):
        with pair.writer_engine.transact(SHARED, _now_ms()):
            wmap[f"r{i}"] = _record(i)
        written_at.append(time.perf_counter())
        pair.writer_engine.tick(_now_ms())
        if pair.writer._accepted:  # a batch was sealed: stream it
            pair.net.run(_now_ms())
            visible = len(messages)
            now = time.perf_counter()
            latencies.extend(now - written_at[j] for j in range(seen, visible))
            seen = visible
    pair.writer.seal_all(_now_ms())
    pair.net.run(_now_ms())
    elapsed = time.perf_counter() - start
    now = time.perf_counter()
    latencies.extend(now - written_at[j] for j in range(seen, len(messages)))
    assert len(messages) == n, (len(messages), n)
    assert pair.writer_engine.status(pair.reader_key).synced
    pair.close()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "w1_records_per_s": round(n / elapsed),
        "w1_latency_p50_ms": round(cuts[49] * 1000, 3),
        "w1_latency_p99_ms": round(cuts[98] * 1000, 3),
    }


def _w2(folder: Path, base: int, n: int) -> dict[str, Any]:
    pair = _Pair(folder)
    pair.connect()
    now = _now_ms()
    for i in range(base):
        with pair.writer_engine.transact(SHARED, now) as ydoc:
            ydoc.get("messages", type=Map)[f"r{i}"] = _record(i)
    pair.writer.seal_all(now)
    pair.net.run(now)
    pair.net.unlink(pair.writer_key, pair.reader_key)
    for i in range(base, base + n):
        with pair.writer_engine.transact(SHARED, now) as ydoc:
            ydoc.get("messages", type=Map)[f"r{i}"] = _record(i)
    pair.writer.seal_all(now)
    pair.writer.store.commit()
    yjs_diff = len(pair.writer.doc(SHARED).get_update(pair.reader.doc(SHARED).get_state()))
    pair.bytes_to_reader = 0
    start = time.perf_counter()
    pair.connect()
    pair.net.run(_now_ms())
    elapsed = time.perf_counter() - start
    assert len(pair.reader.doc(SHARED).get("messages", type=Map)) == base + n
    sent = pair.bytes_to_reader
    pair.close()
    return {
        "w2_seconds": round(elapsed, 3),
        "w2_bytes_sent": sent,
        "w2_yjs_diff_bytes": yjs_diff,
        "w2_bytes_ratio_vs_yjs_diff": round(sent / yjs_diff, 4),
    }


def run() -> dict[str, Any]:
    """Run W1 and W2; figures as ratios against baselines measured in the same run."""
    raw = _raw_w1(W1_RECORDS)
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-") as tmp:
        w1 = _w1(Path(tmp) / "w1", W1_RECORDS)
        w2 = _w2(Path(tmp) / "w2", W2_BASE, W2_RECORDS)
    return {
        "benchmark": "inprocess",
        "w1_records": W1_RECORDS,
        "raw_records_per_s": round(raw),
        **w1,
        "w1_ratio_vs_raw": round(w1["w1_records_per_s"] / raw, 3),
        **w2,
        "batching": {
            "max_txns_per_envelope": limits.MAX_TXNS_PER_ENVELOPE,
            "max_envelope_update_bytes": limits.MAX_ENVELOPE_UPDATE_BYTES,
            "max_batch_delay_ms": limits.MAX_BATCH_DELAY_MS,
            "max_envelopes_per_batch": limits.MAX_ENVELOPES_PER_BATCH,
            "max_unacked_batches": limits.MAX_UNACKED_BATCHES,
        },
    }
