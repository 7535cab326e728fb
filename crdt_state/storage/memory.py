"""An in-memory store with explicit commit points, for tests and the simulator.

``crash()`` drops everything staged since the last commit, exactly as a power
cut drops an uncommitted SQLite transaction.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from crdt_state.storage.base import EnvelopeRow, SnapshotRow


class MemoryStore:
    """Store kept in process memory; committed state survives ``crash()``."""

    def __init__(self, location: str = "memory") -> None:
        self.location = location
        self._meta: dict[str, bytes] = {}
        self._rows: list[EnvelopeRow] = []
        self._lids: list[int] = []
        self._by_slot: dict[tuple[str, int, int], EnvelopeRow] = {}
        self._log: dict[int, tuple[bytes, bytes]] = {}
        self._snapshot: dict[str, SnapshotRow] = {}
        self._committed: tuple[dict[str, bytes], int, dict[int, tuple[bytes, bytes]]] = ({}, 0, {})
        self._committed_snapshot: dict[str, SnapshotRow] = {}
        self._next_lid = 1
        self.commits = 0

    def get_meta(self, key: str) -> bytes | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: bytes) -> None:
        self._meta[key] = value

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._meta.items() if k.startswith(prefix))

    def add_envelope(
        self, doc: str, client: int, seq: int, hash_: bytes, clock_end: int, raw: bytes
    ) -> int:
        slot = (doc, client, seq)
        if slot in self._by_slot:
            raise ValueError(f"envelope {slot} stored twice")
        row = EnvelopeRow(self._next_lid, doc, client, seq, hash_, clock_end, raw)
        self._next_lid += 1
        self._rows.append(row)
        self._lids.append(row.lid)
        self._by_slot[slot] = row
        return row.lid

    def get_envelope(self, doc: str, client: int, seq: int) -> EnvelopeRow | None:
        return self._by_slot.get((doc, client, seq))

    def first_lid(self, doc: str, client: int, seq: int) -> int | None:
        row = self._by_slot.get((doc, client, seq))
        return None if row is None else row.lid

    def envelopes(self, after_lid: int = 0, limit: int | None = None) -> Iterator[EnvelopeRow]:
        start = bisect.bisect_right(self._lids, after_lid)
        stop = len(self._rows) if limit is None else min(len(self._rows), start + limit)
        yield from self._rows[start:stop]

    def envelope_count(self) -> int:
        return len(self._rows)

    def add_log_entry(self, index: int, hash_: bytes, raw: bytes) -> None:
        existing = self._log.get(index)
        if existing is not None and existing[0] != hash_:
            raise ValueError(f"log entry {index} stored twice")
        self._log[index] = (hash_, raw)

    def log_entries(self) -> list[bytes]:
        return [self._log[i][1] for i in sorted(self._log)]

    def last_lid(self) -> int:
        return self._rows[-1].lid if self._rows else 0

    def put_snapshot(self, row: SnapshotRow) -> None:
        self._snapshot[row.doc] = row

    def snapshot_rows(self, docs: Sequence[str] | None = None) -> list[SnapshotRow]:
        if docs is None:
            return [self._snapshot[doc] for doc in sorted(self._snapshot)]
        return [self._snapshot[doc] for doc in sorted(set(docs)) if doc in self._snapshot]

    def commit(self) -> None:
        self._committed = (dict(self._meta), len(self._rows), dict(self._log))
        self._committed_snapshot = dict(self._snapshot)
        self.commits += 1

    def crash(self) -> None:
        """Forget everything not committed."""
        meta, count, log = self._committed
        self._meta = dict(meta)
        self._log = dict(log)
        self._snapshot = dict(self._committed_snapshot)
        for row in self._rows[count:]:
            del self._by_slot[(row.doc, row.client, row.seq)]
        del self._rows[count:]
        del self._lids[count:]
        self._next_lid = self._rows[-1].lid + 1 if self._rows else 1

    def close(self) -> None:
        """Closing drops uncommitted writes, like a crash."""
        self.crash()
