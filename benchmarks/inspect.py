"""``agentmesh state show`` of a phone's store, and the CLI's start-up time.

The store: a device (a phone) that wrote 100,000 messages to ``shared``, one
transaction and one signed envelope each, as ``agentmesh send`` does. Its node
was then opened and closed once, as a device node is, which leaves the local
materialized snapshot behind (crdt_state/snapshot.py).

* ``show_s``: wall time of ``python -m nodes state show shared --json`` on that
  data dir (a real subprocess, median of several runs; output checked).
* ``raw_apply_s``: pycrdt alone applying the same 100,000 updates in-process to
  an empty document. ``show_ratio_vs_raw = show_s / raw_apply_s`` (target <= 1.0).
* ``show_tail_*``: the same after ``SNAPSHOT_EVERY_ENVELOPES - 1`` more envelopes
  were stored without a refresh (a busy running node's tail; past 4,000
  envelopes its refreshes wait for a quarter of the log, ``Snapshotter.due``,
  and an idle one's snapshot is current).
* ``replay_s``: opening the store by replaying every envelope (no snapshot), for
  scale; ``snapshot_write_s``: writing the snapshot when the node closes.
* ``help_startup_ratio``: ``python -m nodes --help`` over ``python -c pass``,
  medians of interleaved runs (target <= 5.0), run as an installed CLI runs
  (bytecode compiled once and cached, here in a private PYTHONPYCACHEPREFIX);
  ``help_startup_ratio_from_source`` the same with PYTHONDONTWRITEBYTECODE=1,
  which recompiles nodes/cli.py (~8 ms) on every run; ``help_imports`` which of
  libp2p, trio, rich, pycrdt, ... the ``--help`` path imported (none may be).

The envelopes are built quickly: each message is one pycrdt transaction whose
update (from the document's observer, as ``Replica`` measures it) is sealed
into an envelope directly and stored in SQLite in groups of 5,000. A sample is
checked against the receive path, so they are what a phone would send.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, TransactionEvent

from crdt_state.envelope import GENESIS_PREV, INCARNATION_BYTES, Envelope, client_id_of, seal
from crdt_state.replica import Replica
from crdt_state.schema import SHARED, new_doc
from crdt_state.storage.memory import MemoryStore
from crdt_state.storage.sqlite import SqliteStore
from mesh.engine import RUNTIME_ROLE, Engine
from mesh.identity import Identity, mesh_id_of
from mesh.limits import SNAPSHOT_EVERY_ENVELOPES
from mesh.membership.log import LogEntry, genesis
from mesh.membership.records import READ, WRITE, issue_certificate
from nodes.datadir import DataDir
from nodes.setup import DEVICE_ROLE, MESH_KEY, ROLE_KEY, open_node

ENVELOPES = 100_000
SHOW_RUNS = 5
HELP_RUNS = 15
_COMMIT_EVERY = 5_000
_YEAR_MS = 365 * 24 * 3600 * 1000
_START_MS = 1_760_000_000_000


class _Phone:
    """A device data dir and a writer that seals one envelope per message."""

    def __init__(self, folder: Path) -> None:
        root, runtime = Identity.generate(), Identity.generate()
        self.identity = Identity.generate()
        self.mesh_id = mesh_id_of(root.public_key)
        rt = Replica(mesh_id=self.mesh_id, store=MemoryStore(), author=runtime)
        rt.add_log_entry(
            genesis(root, runtime, now_ms=_START_MS, expires_ms=_START_MS + 10 * _YEAR_MS)
        )
        cert = issue_certificate(
            root,
            self.mesh_id,
            self.identity.public_key,
            frozenset({READ, WRITE}),
            _START_MS,
            _START_MS + 10 * _YEAR_MS,
            "phone",
        )
        Engine(rt, runtime, RUNTIME_ROLE).admit(cert, _START_MS)
        self.log: list[LogEntry] = list(rt.membership.entries)
        self.datadir = DataDir(folder)
        self.datadir.create()
        self.identity.save(self.datadir.identity_key)
        self.store = SqliteStore(self.datadir.store)
        self.store.set_meta(ROLE_KEY, DEVICE_ROLE)
        self.store.set_meta(MESH_KEY, self.mesh_id)
        for entry in self.log:
            self.store.add_log_entry(entry.index, entry.hash, entry.raw)
        self.store.commit()
        self._start_incarnation()
        self.updates: list[bytes] = []
        self.sample: list[Envelope] = []
        self.written = 0

    def _start_incarnation(self) -> None:
        self.incarnation = os.urandom(INCARNATION_BYTES)
        self.client = client_id_of(self.identity.public_key, self.incarnation)
        self.doc = new_doc(SHARED, self.client)
        self.messages = self.doc.get("messages", type=Map)
        self._last: list[bytes] = []
        self.doc.observe(self._observed)
        self.seq = 0
        self.prev = GENESIS_PREV

    def _observed(self, event: TransactionEvent) -> None:
        self._last.append(event.update)

    def write(self, count: int) -> None:
        """``count`` messages, one transaction and one envelope each."""
        author = self.identity.peer_id
        for _ in range(count):
            i = self.written
            ts = _START_MS + i * 1_000
            message_id = f"{ts:013d}-{i:016x}"
            with self.doc.transaction():
                self.messages[message_id] = {
                    "id": message_id,
                    "text": f"message {i} from my phone",
                    "author": author,
                    "ts": ts,
                }
            update = self._last.pop()
            clock = self.seq  # one item per transaction: the clock is the seq before it
            env = seal(
                self.identity,
                mesh_id=self.mesh_id,
                doc=SHARED,
                incarnation=self.incarnation,
                seq=self.seq + 1,
                hlc=ts << 16,
                mship=len(self.log),
                context=((self.client, clock),) if clock else (),
                prev=self.prev,
                update=update,
            )
            self.seq += 1
            self.prev = env.hash
            self.store.add_envelope(SHARED, self.client, self.seq, env.hash, clock + 1, env.raw)
            self.updates.append(update)
            if len(self.sample) < 50:
                self.sample.append(env)
            self.written += 1
            if self.written % _COMMIT_EVERY == 0:
                self.store.commit()
        self.store.commit()

    def check_sample(self) -> None:
        """The first envelopes pass a fresh runtime's receive checks."""
        replica = Replica(mesh_id=self.mesh_id, store=MemoryStore())
        for entry in self.log:
            replica.add_log_entry(entry)
        for env in self.sample:
            replica.receive(env, _START_MS + 10 * _YEAR_MS // 2)
        assert len(replica.doc(SHARED).get("messages", type=Map)) == len(self.sample)


def _raw_apply(updates: list[bytes]) -> float:
    doc: Doc[Any] = Doc()
    doc.get("messages", type=Map)
    start = time.perf_counter()
    for update in updates:
        doc.apply_update(update)
    elapsed = time.perf_counter() - start
    assert len(doc.get("messages", type=Map)) == len(updates)
    return elapsed


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nodes", *args]


def _timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, bytes]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, check=True, timeout=600, env=env)
    return time.perf_counter() - start, result.stdout


def _show(datadir: DataDir, expected: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        elapsed, out = _timed(
            _cli("state", "show", SHARED, "--json", "--data-dir", str(datadir.path))
        )
        times.append(elapsed)
    assert len(json.loads(out)["messages"]) == expected
    return statistics.median(times)


def _ratio(runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Medians of ``python -c pass`` and ``python -m nodes --help``, interleaved runs."""
    _timed(_cli("--help"), env)  # warm the bytecode cache (if the environment keeps one)
    bare, helps = [], []
    for _ in range(runs):  # interleaved, so load on the machine hits both alike
        bare.append(_timed([sys.executable, "-c", "pass"], env)[0])
        helps.append(_timed(_cli("--help"), env)[0])
    return statistics.median(bare), statistics.median(helps)


def _startup(runs: int) -> dict[str, Any]:
    """``--help`` start-up as an installed CLI runs it (bytecode compiled once, kept in a
    private cache) and as this source tree runs it when PYTHONDONTWRITEBYTECODE is set."""
    with tempfile.TemporaryDirectory(prefix="agentmesh-pyc-") as cache:
        installed = dict(os.environ, PYTHONPYCACHEPREFIX=cache)
        installed.pop("PYTHONDONTWRITEBYTECODE", None)
        bare_s, help_s = _ratio(runs, installed)
    source = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    bare_src_s, help_src_s = _ratio(runs, source)
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nodes", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in probe.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return {
        "python_pass_s": round(bare_s, 4),
        "help_s": round(help_s, 4),
        "help_startup_ratio": round(help_s / bare_s, 2),
        "help_s_from_source": round(help_src_s, 4),
        "help_startup_ratio_from_source": round(help_src_s / bare_src_s, 2),
        "help_imports": sorted(
            loaded & {"libp2p", "trio", "rich", "pycrdt", "nacl", "sqlite3", "shutil", "pathlib"}
        ),
    }


def run(
    envelopes: int = ENVELOPES, show_runs: int = SHOW_RUNS, help_runs: int = HELP_RUNS
) -> dict[str, Any]:
    """Build the phone's store, then time ``state show`` and ``--help``."""
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-") as tmp:
        phone = _Phone(Path(tmp) / "phone")
        start = time.perf_counter()
        phone.write(envelopes)
        build_s = time.perf_counter() - start
        phone.check_sample()
        phone.store.close()
        raw_s = _raw_apply(phone.updates)

        start = time.perf_counter()
        node = open_node(phone.datadir)  # no snapshot yet: replays every envelope
        replay_s = time.perf_counter() - start
        start = time.perf_counter()
        node.close()  # a closing node leaves a current snapshot
        snapshot_write_s = time.perf_counter() - start
        db_bytes = phone.datadir.store.stat().st_size

        show_s = _show(phone.datadir, envelopes, show_runs)

        tail = SNAPSHOT_EVERY_ENVELOPES - 1
        phone.store = SqliteStore(phone.datadir.store)
        phone._start_incarnation()  # another run of the phone's node
        phone.write(tail)
        phone.store.close()
        show_tail_s = _show(phone.datadir, envelopes + tail, show_runs)
    startup = _startup(help_runs)
    return {
        "benchmark": "inspect",
        "envelopes": envelopes,
        "build_s": round(build_s, 2),
        "store_bytes": db_bytes,
        "raw_apply_s": round(raw_s, 3),
        "replay_s": round(replay_s, 3),
        "snapshot_write_s": round(snapshot_write_s, 3),
        "show_s": round(show_s, 3),
        "show_ratio_vs_raw": round(show_s / raw_s, 3),
        "show_tail_envelopes": tail,
        "show_tail_s": round(show_tail_s, 3),
        "show_tail_ratio_vs_raw": round(show_tail_s / raw_s, 3),
        **startup,
        "targets_met": {
            "show_ratio_vs_raw<=1.0": show_s / raw_s <= 1.0,
            "help_startup_ratio<=5.0": startup["help_startup_ratio"] <= 5.0,
            "help_imports_no_libp2p": "libp2p" not in startup["help_imports"],
        },
    }
