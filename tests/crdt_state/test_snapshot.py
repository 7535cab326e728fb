"""The local materialized snapshot: a reopened replica is the same with or without it.

Stores are built by engines syncing over the in-memory network (real replicas,
real envelopes, SQLite or memory stores). "Without" is the same store opened
with the snapshot left out (a full replay of the envelope log).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Map

from crdt_state import lib0, snapshot
from crdt_state.replica import Replica
from crdt_state.schema import AGENT, SHARED, device_doc
from crdt_state.snapshot import (
    HEADER_DOC,
    SnapshotInvalid,
    Snapshotter,
    SnapshotWarning,
    read_snapshot,
    refresh,
)
from crdt_state.storage.base import SnapshotRow, Store
from crdt_state.storage.memory import MemoryStore
from crdt_state.storage.sqlite import SqliteStore
from crdt_state.views import docs_to_py
from crdt_state.yupdate import decode_update
from mesh import cbor
from tests.crdt_state.test_receive import assert_nothing_pending
from tests.support import NOW, Mesh, Node, new_mesh, seeded_identity

StoreFactory = Callable[[str], Store]


def _merged(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for client, clock, length in sorted(ranges):
        if out and out[-1][0] == client and out[-1][1] + out[-1][2] >= clock:
            last = out[-1]
            out[-1] = (client, last[1], max(last[2], clock + length - last[1]))
        else:
            out.append((client, clock, length))
    return out


def state_of(replica: Replica) -> dict[str, object]:
    """Everything a reopened replica must reproduce."""
    assert replica.held == {}
    assert_nothing_pending(replica)
    docs = {name: ydoc for name, ydoc in replica.docs.items() if ydoc.get_state() != b"\x00"}
    return {
        "content": docs_to_py(docs),
        "vectors": replica.vectors(),
        "chains": dict(replica.chains),
        # (a writer also owns its own client id before it has written anything)
        "owners": {
            c: o for c, o in replica.owners.items() if any(c == k for _, k in replica.chains)
        },
        "hlc": replica.hlc,
        "state_vectors": {n: lib0.decode_state_vector(d.get_state()) for n, d in docs.items()},
        "delete_sets": {
            n: _merged(list(decode_update(d.get_update(d.get_state())).deletes))
            for n, d in docs.items()
        },
        "membership": replica.membership.length,
    }


def reopen(mesh: Mesh, store: Store) -> Replica:
    replica = Replica(mesh_id=mesh.mesh_id, store=store)
    replica.load()
    return replica


def reopen_without_snapshot(mesh: Mesh, store: Store, monkeypatch: pytest.MonkeyPatch) -> Replica:
    with monkeypatch.context() as patch:
        patch.setattr(snapshot, "restore", lambda replica: 0)
        return reopen(mesh, store)


@pytest.fixture(params=["sqlite", "memory"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    made: dict[str, Store] = {}

    def factory(name: str) -> Store:
        if request.param == "memory":
            if name not in made:
                made[name] = MemoryStore(name)
            return made[name]
        return SqliteStore(tmp_path / f"{name}.sqlite")

    yield factory


def _delete(node: Node, doc: str, root: str, key: str, now: int) -> None:
    with node.engine.transact(doc, now) as ydoc:
        del ydoc.get(root, type=Map)[key]


def busy_mesh(stores: StoreFactory) -> tuple[Mesh, Node, Node]:
    """A runtime and two devices after inserts, overwrites, deletes and concurrent writes."""
    mesh = new_mesh(store=stores("runtime"))
    phone = mesh.add_device(seeded_identity(10), store=stores("phone"), name="phone")
    laptop = mesh.add_device(seeded_identity(11), store=stores("laptop"), name="laptop")
    for node in (phone, laptop):
        assert mesh.connect(node)
    for i in range(12):
        now = NOW + i * 1000
        phone.write(SHARED, "messages", f"m{i}", {"text": f"hello {i}", "n": i}, now)
        laptop.write(SHARED, "messages", f"m{i % 3}", {"text": f"edited {i}"}, now)
        mesh.runtime.write(AGENT, "replies", f"r{i % 4}", {"text": f"reply {i}"}, now)
        if i % 4 == 3:
            _delete(phone, SHARED, "messages", f"m{i - 1}", now)
        mesh.settle(now)
    # Concurrent writes to one key while both devices are offline.
    mesh.disconnect(phone)
    mesh.disconnect(laptop)
    phone.write(SHARED, "memory", "topic", "phone's", NOW + 20_000)
    laptop.write(SHARED, "memory", "topic", "laptop's", NOW + 20_000)
    phone.write(device_doc(phone.peer_id), "decisions", "d1", {"ok": True}, NOW + 20_000)
    mesh.settle(NOW + 20_000)
    for node in (phone, laptop):
        assert mesh.connect(node, NOW + 21_000)
    mesh.settle(NOW + 21_000)
    for node in (mesh.runtime, phone, laptop):
        node.replica.store.commit()
    return mesh, phone, laptop


def _more(mesh: Mesh, phone: Node, laptop: Node, start: int, count: int) -> None:
    for i in range(start, start + count):
        now = NOW + 30_000 + i * 1000
        phone.write(SHARED, "messages", f"late{i}", {"text": f"late {i}"}, now)
        laptop.write(SHARED, "memory", "topic", f"laptop again {i}", now)
        if i % 2:
            _delete(phone, SHARED, "messages", f"m{i % 12}", now)
        mesh.settle(now)
    mesh.runtime.replica.store.commit()


@pytest.mark.parametrize("tail", [0, 7])
def test_reopened_replica_is_identical_with_and_without_the_snapshot(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch, tail: int
) -> None:
    mesh, phone, laptop = busy_mesh(stores)
    runtime = mesh.runtime.replica
    assert refresh(runtime)
    runtime.store.commit()
    _more(mesh, phone, laptop, 0, tail)
    live = state_of(runtime)

    with_snapshot = reopen(mesh, stores("runtime"))
    assert state_of(with_snapshot) == live
    without = reopen_without_snapshot(mesh, stores("runtime"), monkeypatch)
    assert state_of(without) == live
    assert state_of(with_snapshot) == state_of(without)


def test_load_replays_only_the_envelopes_after_the_snapshot(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, phone, laptop = busy_mesh(stores)
    store = mesh.runtime.replica.store
    assert refresh(mesh.runtime.replica)
    store.commit()
    covered = store.last_lid()
    _more(mesh, phone, laptop, 0, 3)
    applied: list[int] = []
    original = Replica._apply

    def counting(self: Replica, env: object, clock_end: int) -> None:
        applied.append(clock_end)
        original(self, env, clock_end)  # type: ignore[arg-type]

    monkeypatch.setattr(Replica, "_apply", counting)
    reopen(mesh, stores("runtime"))
    assert len(applied) == store.last_lid() - covered > 0


def test_a_device_reopened_from_its_snapshot_keeps_writing_and_syncing(
    stores: StoreFactory,
) -> None:
    mesh, phone, laptop = busy_mesh(stores)
    assert refresh(phone.replica)
    phone.replica.store.commit()
    mesh.disconnect(phone)
    mesh.devices.remove(phone)
    again = mesh.open_device(phone.identity, store=stores("phone"))  # a new incarnation
    assert again.replica.vectors() == phone.replica.vectors()
    assert mesh.connect(again, NOW + 40_000)
    again.write(SHARED, "messages", "m1", {"text": "after the restart"}, NOW + 40_000)
    _delete(again, SHARED, "messages", "m4", NOW + 40_000)
    mesh.settle(NOW + 40_000)
    for node in (mesh.runtime, again, laptop):
        assert node.read(SHARED, "messages")["m1"] == {"text": "after the restart"}
        assert "m4" not in node.read(SHARED, "messages")
        assert_nothing_pending(node.replica)
    assert mesh.runtime.engine.status(again.key).synced


def test_a_snapshot_never_holds_what_was_not_committed(tmp_path: Path) -> None:
    for kind in ("memory", "sqlite"):
        store: Store = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "rt.sqlite")
        mesh = new_mesh(store=store)
        mesh.runtime.write(SHARED, "messages", "kept", "committed")
        mesh.settle()
        store.commit()
        committed = state_of(mesh.runtime.replica)

        # Staged, not committed: envelopes and a snapshot covering them.
        mesh.runtime.write(SHARED, "messages", "lost", "not committed", NOW + 1)
        mesh.runtime.replica.seal_all(NOW + 1)
        assert Snapshotter(mesh.runtime.replica).write()
        assert read_snapshot(store) is not None
        if isinstance(store, MemoryStore):
            store.crash()
        else:
            store.close()
            store = SqliteStore(tmp_path / "rt.sqlite")
        reopened = reopen(mesh, store)
        assert state_of(reopened) == committed
        assert "lost" not in reopened.doc(SHARED).get("messages", type=Map)
        store.close()


def test_no_snapshot_while_a_local_batch_is_open() -> None:
    mesh = new_mesh()
    mesh.runtime.write(SHARED, "messages", "a", "sealed")
    mesh.settle()
    with mesh.runtime.engine.transact(SHARED, NOW) as ydoc:
        ydoc.get("messages", type=Map)["b"] = "open batch"
    writer = Snapshotter(mesh.runtime.replica)
    assert not writer.write()
    assert mesh.runtime.replica.store.snapshot_rows() == []
    mesh.runtime.replica.seal_all(NOW)
    assert writer.write()


def test_unchanged_documents_keep_their_rows(stores: StoreFactory) -> None:
    mesh, _phone, _laptop = busy_mesh(stores)
    runtime = mesh.runtime.replica
    writer = Snapshotter(runtime)
    assert writer.write()
    first = {row.doc: row.lid for row in runtime.store.snapshot_rows()}
    mesh.runtime.write(AGENT, "replies", "new", "only agent changes", NOW + 50_000)
    mesh.settle(NOW + 50_000)
    assert writer.behind() == 1
    assert writer.write()
    second = {row.doc: row.lid for row in runtime.store.snapshot_rows()}
    assert second[AGENT] > first[AGENT]
    assert second[SHARED] == first[SHARED]
    assert second[HEADER_DOC] == runtime.store.last_lid()
    runtime.store.commit()
    assert state_of(reopen(mesh, stores("runtime"))) == state_of(runtime)


def _row(store: Store, doc: str) -> SnapshotRow:
    return next(r for r in store.snapshot_rows([doc]) if r.doc == doc)


def _stale_chain(store: Store) -> None:
    row = _row(store, SHARED)
    fields = cbor.decode(row.meta)
    fields[2][0][1] -= 1  # a chain head one envelope short of what the state holds
    store.put_snapshot(SnapshotRow(row.doc, row.lid, cbor.encode(fields), row.state, row.view))


def _swapped_states(store: Store) -> None:
    shared, agent = _row(store, SHARED), _row(store, AGENT)
    store.put_snapshot(SnapshotRow(SHARED, shared.lid, shared.meta, agent.state, shared.view))


def _future_header(store: Store) -> None:
    lid = store.last_lid() + 5
    row = _row(store, HEADER_DOC)
    fields = cbor.decode(row.meta)
    fields[1] = lid
    store.put_snapshot(SnapshotRow(HEADER_DOC, lid, cbor.encode(fields), b"", b""))


def _missing_row_version(store: Store) -> None:
    row = _row(store, AGENT)
    fields = cbor.decode(row.meta)
    fields[0] = 99
    store.put_snapshot(SnapshotRow(row.doc, row.lid, cbor.encode(fields), row.state, row.view))


def _garbage_state(store: Store) -> None:
    row = _row(store, SHARED)
    store.put_snapshot(SnapshotRow(row.doc, row.lid, row.meta, b"not zlib", row.view))


@pytest.mark.parametrize(
    "corrupt", [_stale_chain, _swapped_states, _future_header, _missing_row_version, _garbage_state]
)
def test_an_inconsistent_snapshot_is_ignored_with_a_warning(
    stores: StoreFactory, monkeypatch: pytest.MonkeyPatch, corrupt: Callable[[Store], None]
) -> None:
    mesh, _phone, _laptop = busy_mesh(stores)
    runtime = mesh.runtime.replica
    live = state_of(runtime)
    assert refresh(runtime)
    corrupt(runtime.store)
    runtime.store.commit()
    with pytest.warns(SnapshotWarning, match="ignoring the local snapshot"):
        reopened = reopen(mesh, stores("runtime"))
    assert state_of(reopened) == live


def test_a_corrupt_snapshot_row_is_ignored_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh, _phone, _laptop = busy_mesh(lambda name: SqliteStore(tmp_path / f"{name}.sqlite"))
    runtime = mesh.runtime.replica
    live = state_of(runtime)
    assert refresh(runtime)
    runtime.store.commit()
    runtime.store.close()
    with sqlite3.connect(tmp_path / "runtime.sqlite") as db:  # a flipped byte on disk
        (state,) = db.execute("SELECT state FROM snapshot WHERE doc = 'shared'").fetchone()
        flipped = bytes([state[0] ^ 0x40]) + state[1:]
        db.execute("UPDATE snapshot SET state = ? WHERE doc = 'shared'", (flipped,))
    store = SqliteStore(tmp_path / "runtime.sqlite")
    with pytest.warns(SnapshotWarning, match="checksum"):
        reopened = reopen(mesh, store)
    assert state_of(reopened) == live
    # The next snapshot (a node's first, in a new process) rewrites every row.
    assert Snapshotter(reopened).write()
    store.commit()
    assert state_of(reopen(mesh, store)) == live  # and no warning now
    store.close()


def test_a_store_without_the_snapshot_table_opens_read_only(tmp_path: Path) -> None:
    mesh = new_mesh(store=SqliteStore(tmp_path / "rt.sqlite"))
    mesh.runtime.write(SHARED, "messages", "a", "b")
    mesh.settle()
    mesh.runtime.replica.store.commit()
    mesh.runtime.replica.store.close()
    with sqlite3.connect(tmp_path / "rt.sqlite") as db:  # as made before the snapshot existed
        db.execute("DROP TABLE snapshot")
    replica = reopen(mesh, SqliteStore(tmp_path / "rt.sqlite", readonly=True))
    assert replica.doc(SHARED).get("messages", type=Map).to_py() == {"a": "b"}


def test_snapshot_invalid_is_a_state_error() -> None:
    assert issubclass(SnapshotInvalid, Exception)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["phone", "laptop", "runtime"]),
        st.sampled_from(["set", "set", "delete", "settle", "snapshot", "offline", "online"]),
        st.integers(0, 5),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40)
@given(ops=_OPS)
def test_snapshot_at_any_moment_reopens_identically(ops: list[tuple[str, str, int]]) -> None:
    mesh = new_mesh()
    nodes = {
        "runtime": mesh.runtime,
        "phone": mesh.add_device(seeded_identity(10), name="phone"),
        "laptop": mesh.add_device(seeded_identity(11), name="laptop"),
    }
    online = {"phone", "laptop"}
    for name in online:
        mesh.connect(nodes[name])
    for step, (who, op, key) in enumerate(ops):
        now = NOW + step * 10
        node = nodes[who]
        if op == "set":
            node.write(SHARED, "messages", f"k{key}", f"{who} {step}", now)
        elif op == "delete" and f"k{key}" in node.read(SHARED, "messages"):
            _delete(node, SHARED, "messages", f"k{key}", now)
        elif op == "settle":
            mesh.settle(now)
        elif op == "snapshot":
            node.replica.seal_all(now)
            assert Snapshotter(node.replica).write()
            node.replica.store.commit()
        elif op == "offline" and who in online:
            online.discard(who)
            mesh.disconnect(node)
        elif op == "online" and who not in online and who != "runtime":
            online.add(who)
            mesh.connect(node, now)
    for node in nodes.values():
        node.replica.seal_all(NOW + 1_000_000)
        node.replica.store.commit()
        live = state_of(node.replica)
        reopened = Replica(mesh_id=mesh.mesh_id, store=node.replica.store)
        reopened.load()
        assert state_of(reopened) == live


def test_a_busy_node_refreshes_less_often_as_the_log_grows() -> None:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10), name="phone")
    assert mesh.connect(phone)
    writer = Snapshotter(mesh.runtime.replica, every=4, growth_divisor=2)
    refreshed: list[int] = []
    for i in range(80):
        phone.write(SHARED, "messages", f"m{i}", {"text": f"hello {i}"}, NOW + i)
        mesh.settle(NOW + i)
        if writer.due():
            before = writer.lid
            assert writer.write()
            # never sooner than `every` nor than half of what the last one covered
            assert writer.lid - before >= max(4, before // 2)
            refreshed.append(writer.lid)
    gaps = [b - a for a, b in itertools.pairwise(refreshed)]
    assert len(refreshed) >= 4
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]  # the interval grows with the log
    assert len(refreshed) < mesh.runtime.replica.store.last_lid() // 4  # rarer than every 4
