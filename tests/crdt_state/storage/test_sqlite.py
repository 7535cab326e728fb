"""SQLite store: durability settings, reopening, incarnations, corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crdt_state.errors import CorruptStore, StorageError
from crdt_state.lib0 import decode_state_vector
from crdt_state.replica import Replica
from crdt_state.schema import AGENT, SHARED
from crdt_state.storage.memory import MemoryStore
from crdt_state.storage.sqlite import SqliteStore
from crdt_state.views import docs_to_py
from tests.support import NOW, new_mesh, seeded_identity


def _populated(path: Path) -> tuple[dict[str, object], dict[str, dict[int, int]]]:
    mesh = new_mesh(store=SqliteStore(path / "runtime.sqlite"))
    phone = mesh.add_device(seeded_identity(10), store=SqliteStore(path / "phone.sqlite"))
    mesh.connect(phone)
    for i in range(50):
        phone.write(SHARED, "messages", f"m{i}", {"text": f"hello {i}"})
        mesh.runtime.write(AGENT, "replies", f"r{i}", {"text": f"reply {i}"})
        if i % 7 == 0:
            mesh.settle(NOW + i)
    mesh.settle(NOW + 100)
    content = docs_to_py(mesh.runtime.replica.docs)
    vectors = mesh.runtime.replica.vectors()
    mesh.runtime.replica.store.close()
    phone.replica.store.close()
    return content, vectors


def _reopen(path: Path, *, readonly: bool = False) -> Replica:
    mesh = new_mesh()
    replica = Replica(
        mesh_id=mesh.mesh_id,
        store=SqliteStore(path, readonly=readonly),
        author=None if readonly else seeded_identity(2),
    )
    replica.load()
    return replica


def test_durability_pragmas(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_reopen_gives_identical_documents_and_vectors(tmp_path: Path) -> None:
    content, vectors = _populated(tmp_path)
    replica = _reopen(tmp_path / "runtime.sqlite")
    assert replica.vectors() == vectors
    assert docs_to_py(replica.docs) == content
    for name, ydoc in replica.docs.items():
        assert decode_state_vector(ydoc.get_state()) == replica.expected_state(name)


def test_every_open_for_writing_is_a_new_incarnation(tmp_path: Path) -> None:
    _populated(tmp_path)
    first = _reopen(tmp_path / "phone.sqlite")
    second = _reopen(tmp_path / "phone.sqlite")
    assert first.incarnation != second.incarnation
    assert first.client_id != second.client_id
    assert (
        first.client_id not in first.owners or first.owners[first.client_id][1] == first.incarnation
    )


def test_read_only_open_does_not_write(tmp_path: Path) -> None:
    _populated(tmp_path)
    path = tmp_path / "runtime.sqlite"
    before = path.stat().st_mtime_ns
    replica = _reopen(path, readonly=True)
    assert replica.vectors()
    with pytest.raises(StorageError):
        replica.store.set_meta("x", b"y")
    replica.store.close()
    assert path.stat().st_mtime_ns == before


def test_uncommitted_writes_are_lost_committed_kept(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    store.add_envelope("shared", 1, 1, b"h" * 32, 1, b"raw1")
    store.commit()
    store.add_envelope("shared", 1, 2, b"i" * 32, 2, b"raw2")
    store.close()  # a crash before commit
    again = SqliteStore(tmp_path / "s.sqlite")
    assert [row.seq for row in again.envelopes()] == [1]
    again.close()


def test_memory_store_crash_matches_sqlite() -> None:
    store = MemoryStore()
    store.add_envelope("shared", 1, 1, b"h" * 32, 1, b"raw1")
    store.add_log_entry(0, b"e" * 32, b"entry")
    store.commit()
    store.add_envelope("shared", 1, 2, b"i" * 32, 2, b"raw2")
    store.add_log_entry(1, b"f" * 32, b"entry1")
    store.crash()
    assert [row.seq for row in store.envelopes()] == [1]
    assert store.log_entries() == [b"entry"]
    assert store.add_envelope("shared", 1, 2, b"i" * 32, 2, b"raw2") == 2


def test_not_a_database_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CorruptStore, match=str(path)):
        SqliteStore(path)


def test_truncated_database_is_a_clear_error(tmp_path: Path) -> None:
    _populated(tmp_path)
    path = tmp_path / "runtime.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"runtime.sqlite{suffix}").unlink(missing_ok=True)
    with pytest.raises(CorruptStore, match=str(path)):
        _reopen(path)


def test_corrupt_envelope_row_names_file_and_row(tmp_path: Path) -> None:
    _populated(tmp_path)
    path = tmp_path / "runtime.sqlite"
    db = sqlite3.connect(path)
    lid, raw = db.execute("SELECT lid, raw FROM envelopes ORDER BY lid LIMIT 1 OFFSET 3").fetchone()
    flipped = bytearray(raw)
    flipped[len(flipped) // 2] ^= 0x01
    db.execute("UPDATE envelopes SET raw = ? WHERE lid = ?", (bytes(flipped), lid))
    db.commit()
    db.close()
    with pytest.raises(CorruptStore, match=rf"{path}.*row {lid}"):
        _reopen(path)


def test_corrupt_log_row_is_a_clear_error(tmp_path: Path) -> None:
    _populated(tmp_path)
    path = tmp_path / "runtime.sqlite"
    db = sqlite3.connect(path)
    db.execute("UPDATE log SET raw = x'00' WHERE idx = 1")
    db.commit()
    db.close()
    with pytest.raises(CorruptStore, match=str(path)):
        _reopen(path)


def test_missing_store_read_only(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no store"):
        SqliteStore(tmp_path / "absent.sqlite", readonly=True)
