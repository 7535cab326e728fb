"""The storage contract shared by SQLite (real nodes) and memory (simulator, tests).

Writes are staged and become durable only at ``commit()``. Reads see staged
writes. A crash loses exactly what was staged and not committed; nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EnvelopeRow:
    """One stored envelope with what the receive path derived from it."""

    lid: int
    doc: str
    client: int
    seq: int
    hash: bytes
    clock_end: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """One stored row of the local materialized snapshot (see ``crdt_state.snapshot``).

    The store keeps the bytes and their checksum; what they mean is up to the
    snapshot module. ``doc`` is a document name, or ``""`` for the header row.
    """

    doc: str
    lid: int
    meta: bytes
    state: bytes
    view: bytes


class Store(Protocol):
    """Envelopes, membership-log entries and node metadata of one node."""

    #: Human-readable location, used in error messages.
    location: str

    def get_meta(self, key: str) -> bytes | None: ...

    def set_meta(self, key: str, value: bytes) -> None: ...

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, keys ascending."""
        ...

    def add_envelope(
        self, doc: str, client: int, seq: int, hash_: bytes, clock_end: int, raw: bytes
    ) -> int:
        """Stage an envelope; returns its local id (ascending in acceptance order)."""
        ...

    def get_envelope(self, doc: str, client: int, seq: int) -> EnvelopeRow | None: ...

    def first_lid(self, doc: str, client: int, seq: int) -> int | None:
        """Local id of the envelope (doc, client, seq), if stored."""
        ...

    def envelopes(self, after_lid: int = 0, limit: int | None = None) -> Iterator[EnvelopeRow]:
        """Envelopes in acceptance order, starting after ``after_lid``."""
        ...

    def envelope_count(self) -> int: ...

    def add_log_entry(self, index: int, hash_: bytes, raw: bytes) -> None: ...

    def log_entries(self) -> list[bytes]:
        """Raw membership-log entries in index order."""
        ...

    def last_lid(self) -> int:
        """Local id of the newest stored envelope (0 when none)."""
        ...

    def put_snapshot(self, row: SnapshotRow) -> None:
        """Stage a snapshot row, replacing the one of the same ``doc``."""
        ...

    def snapshot_rows(self, docs: Sequence[str] | None = None) -> list[SnapshotRow]:
        """Snapshot rows of ``docs`` (all when None), read at one instant.

        Raises ``CorruptStore`` if a row fails its checksum.
        """
        ...

    def commit(self) -> None:
        """Make every staged write durable."""
        ...

    def close(self) -> None: ...
