"""SQLite storage: WAL, ``synchronous=FULL``, one transaction per commit point.

Staged writes accumulate in one open transaction; ``commit()`` ends it, so a
group of envelopes costs one fsync. Any SQLite error that means corruption is
raised as ``CorruptStore`` naming the file.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from crdt_state.errors import CorruptStore, StorageError
from crdt_state.storage.base import EnvelopeRow, SnapshotRow

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS envelopes (
    lid INTEGER PRIMARY KEY,
    doc TEXT NOT NULL,
    client INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    clock_end INTEGER NOT NULL,
    raw BLOB NOT NULL,
    crc INTEGER NOT NULL,
    UNIQUE (doc, client, seq)
);
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY, hash BLOB NOT NULL, raw BLOB NOT NULL, crc INTEGER NOT NULL
);
"""
_ROW = "SELECT lid, doc, client, seq, hash, clock_end, raw, crc FROM envelopes"
# The local materialized snapshot (crdt_state/snapshot.py); added to version-1 stores on open.
_SNAPSHOT_TABLE = """
CREATE TABLE IF NOT EXISTS snapshot (
    doc TEXT PRIMARY KEY,
    lid INTEGER NOT NULL,
    meta BLOB NOT NULL,
    state BLOB NOT NULL,
    view BLOB NOT NULL,
    crc INTEGER NOT NULL
)
"""


def _snapshot_crc(doc: str, lid: int, meta: bytes, state: bytes, view: bytes) -> int:
    crc = zlib.crc32(f"{doc}\x00{lid}".encode())
    for part in (meta, state, view):
        crc = zlib.crc32(part, crc)
    return crc


class SqliteStore:
    """A node's store in one SQLite file."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.location = str(path)
        self.readonly = readonly
        try:
            if readonly:
                if not path.exists():
                    raise StorageError(f"{path}: no store here")
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if not readonly and version == 0:
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise CorruptStore(
                    f"{path}: store schema version {version}, expected {SCHEMA_VERSION}"
                )
            if not readonly:
                self._db.execute(_SNAPSHOT_TABLE)
            self._db.execute("SELECT count(*) FROM envelopes").fetchone()
        except sqlite3.DatabaseError as exc:
            raise CorruptStore(f"{path}: not a readable agentmesh store ({exc})") from exc
        self._in_txn = False

    def _error(self, exc: sqlite3.Error) -> StorageError:
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
            return CorruptStore(f"{self.path}: {exc}")
        return StorageError(f"{self.path}: {exc}")

    def _begin(self) -> None:
        if self.readonly:
            raise StorageError(f"{self.path}: opened read-only")
        if not self._in_txn:
            self._db.execute("BEGIN IMMEDIATE")
            self._in_txn = True

    def get_meta(self, key: str) -> bytes | None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return None if row is None else bytes(row[0])

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        try:
            rows = self._db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return [(str(k), bytes(v)) for k, v in rows]

    def set_meta(self, key: str, value: bytes) -> None:
        self._begin()
        try:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def add_envelope(
        self, doc: str, client: int, seq: int, hash_: bytes, clock_end: int, raw: bytes
    ) -> int:
        self._begin()
        try:
            cursor = self._db.execute(
                "INSERT INTO envelopes (doc, client, seq, hash, clock_end, raw, crc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (doc, client, seq, hash_, clock_end, raw, zlib.crc32(raw)),
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        lid = cursor.lastrowid
        assert lid is not None
        return lid

    def _row(self, row: tuple[int, str, int, int, bytes, int, bytes, int]) -> EnvelopeRow:
        raw = bytes(row[6])
        if zlib.crc32(raw) != row[7]:
            raise CorruptStore(f"{self.path}: envelope row {row[0]} is corrupt (checksum)")
        return EnvelopeRow(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], raw)

    def get_envelope(self, doc: str, client: int, seq: int) -> EnvelopeRow | None:
        try:
            row = self._db.execute(
                _ROW + " WHERE doc = ? AND client = ? AND seq = ?", (doc, client, seq)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return None if row is None else self._row(row)

    def first_lid(self, doc: str, client: int, seq: int) -> int | None:
        row = self.get_envelope(doc, client, seq)
        return None if row is None else row.lid

    def envelopes(self, after_lid: int = 0, limit: int | None = None) -> Iterator[EnvelopeRow]:
        page = 1024 if limit is None else min(limit, 1024)
        remaining = limit
        while remaining is None or remaining > 0:
            want = page if remaining is None else min(page, remaining)
            try:
                rows = self._db.execute(
                    _ROW + " WHERE lid > ? ORDER BY lid LIMIT ?", (after_lid, want)
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            for row in rows:
                yield self._row(row)
            if len(rows) < want:
                return
            after_lid = rows[-1][0]
            if remaining is not None:
                remaining -= len(rows)

    def envelope_count(self) -> int:
        try:
            return int(self._db.execute("SELECT count(*) FROM envelopes").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def add_log_entry(self, index: int, hash_: bytes, raw: bytes) -> None:
        self._begin()
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO log (idx, hash, raw, crc) VALUES (?, ?, ?, ?)",
                (index, hash_, raw, zlib.crc32(raw)),
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def log_entries(self) -> list[bytes]:
        try:
            rows = self._db.execute("SELECT idx, raw, crc FROM log ORDER BY idx").fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        for index, raw, crc in rows:
            if zlib.crc32(raw) != crc:
                raise CorruptStore(f"{self.path}: membership-log row {index} is corrupt (checksum)")
        return [bytes(row[1]) for row in rows]

    def last_lid(self) -> int:
        try:
            row = self._db.execute("SELECT max(lid) FROM envelopes").fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return int(row[0] or 0)

    def put_snapshot(self, row: SnapshotRow) -> None:
        self._begin()
        crc = _snapshot_crc(row.doc, row.lid, row.meta, row.state, row.view)
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO snapshot (doc, lid, meta, state, view, crc)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row.doc, row.lid, row.meta, row.state, row.view, crc),
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def snapshot_rows(self, docs: Sequence[str] | None = None) -> list[SnapshotRow]:
        query = "SELECT doc, lid, meta, state, view, crc FROM snapshot"
        args: tuple[str, ...] = ()
        if docs is not None:
            args = tuple(sorted(set(docs)))
            query += f" WHERE doc IN ({', '.join('?' * len(args))})" if args else " WHERE 0"
        try:
            fetched = self._db.execute(query + " ORDER BY doc", args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a store no writer has opened since the upgrade
                return []
            raise self._error(exc) from exc
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        rows = []
        for doc, lid, meta, state, view, crc in fetched:
            row = SnapshotRow(doc, lid, bytes(meta), bytes(state), bytes(view))
            if _snapshot_crc(doc, lid, row.meta, row.state, row.view) != crc:
                raise CorruptStore(f"{self.path}: snapshot row {doc!r} is corrupt (checksum)")
            rows.append(row)
        return rows

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One consistent view for every read inside (a read transaction; no writes).

        With WAL, other connections keep writing meanwhile; they are not seen here.
        """
        if self._in_txn:
            raise StorageError(f"{self.path}: a read view inside a write transaction")
        try:
            self._db.execute("BEGIN DEFERRED")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            yield
        finally:
            self._db.execute("ROLLBACK")

    def commit(self) -> None:
        if self._in_txn:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            self._in_txn = False

    def close(self) -> None:
        """Close without committing: staged writes are dropped."""
        if self._in_txn:
            self._db.execute("ROLLBACK")
            self._in_txn = False
        self._db.close()
