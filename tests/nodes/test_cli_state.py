"""``agentmesh state ...`` and ``status`` on real stores made by real nodes.

A runtime, a phone, a laptop and a hostile member run engines over the in-memory
network; the runtime's and the phone's stores are SQLite files in real data dirs,
and the runtime's tracker (nodes/tracking.py) sees its outputs, as a running
node's would. The CLI is then driven through click on those data dirs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pycrdt import Map

from crdt_state.envelope import Envelope
from crdt_state.replica import Outcome
from crdt_state.schema import AGENT, SHARED, device_doc
from crdt_state.snapshot import read_snapshot, refresh
from crdt_state.storage.sqlite import SqliteStore
from crdt_state.views import docs_to_py
from mesh.engine import Engine, Output
from mesh.identity import peer_id_of
from mesh.membership.records import issue_revocation
from mesh.sync import frames
from nodes import tracking
from nodes.cli import EXIT_ERROR, EXIT_NOT_FOUND, EXIT_USAGE, cli
from nodes.datadir import DataDir
from nodes.driver import EngineDriver
from nodes.inspection import Inspector, iso
from tests.crdt_state.test_receive import Writer
from tests.support import NOW, Mesh, Node, new_mesh, seeded_identity

MINUTE = 60_000


def minute(step: int) -> int:
    """The test's clock: ``step`` minutes after NOW."""
    return NOW + step * MINUTE


@dataclass
class Scene:
    runtime_dir: DataDir
    phone_dir: DataDir
    mesh: Mesh
    phone: Node
    laptop: Node
    evil: Node
    driver: EngineDriver
    clock: list[int] = field(default_factory=lambda: [NOW])
    quarantined: bytes = b""

    def settle(self, now: int) -> None:
        self.clock[0] = now
        self.mesh.settle(now)

    def commit(self) -> None:
        for node in (self.mesh.runtime, self.phone, self.laptop):
            node.replica.store.commit()


def _data_dir(path: Path, identity_seed: int, role: bytes) -> tuple[DataDir, SqliteStore]:
    datadir = DataDir(path)
    datadir.create()
    seeded_identity(identity_seed).save(datadir.identity_key)
    store = SqliteStore(datadir.store)
    store.set_meta("role", role)
    return datadir, store


def _delete(node: Node, doc: str, root: str, key: str, now: int) -> None:
    with node.engine.transact(doc, now) as ydoc:
        del ydoc.get(root, type=Map)[key]


def _hostile(mesh: Mesh, evil: Node, now: int, *envs: Envelope, batch: int) -> None:
    engine = mesh.runtime.engine
    if evil.key not in engine.sessions:
        assert engine.connect(evil.key, now)
        membership = mesh.runtime.replica.membership
        hello = frames.Hello(
            frames.PROTOCOL_VERSION, mesh.mesh_id, membership.length, membership.head, {}
        )
        engine.receive(evil.key, frames.encode(hello), now)
    engine.receive(
        evil.key, frames.encode(frames.Envelopes(batch, tuple(e.raw for e in envs))), now
    )
    mesh.net.flush(mesh.runtime.key, now)


def build_scene(base: Path) -> Scene:
    runtime_dir, runtime_store = _data_dir(base / "runtime", 2, b"runtime")
    mesh = new_mesh(store=runtime_store, runtime=seeded_identity(2))
    runtime_store.set_meta("mesh_id", mesh.mesh_id)
    runtime_store.commit()
    phone_dir, phone_store = _data_dir(base / "phone", 10, b"device")
    phone_store.set_meta("mesh_id", mesh.mesh_id)
    phone = mesh.add_device(seeded_identity(10), store=phone_store, name="phone")
    laptop = mesh.add_device(seeded_identity(11), name="laptop")
    evil = mesh.add_device(seeded_identity(30), name="evil")

    clock = [NOW]
    driver = EngineDriver(mesh.runtime.engine, clock=lambda: clock[0])
    tracker = tracking.attach(driver)
    tracker.snapshots.every = 4  # refresh often, so the snapshot is exercised with a tail

    def observe(key: bytes, output: Output) -> None:
        if key == mesh.runtime.key:
            tracker(output)

    mesh.net.observers.append(observe)
    scene = Scene(runtime_dir, phone_dir, mesh, phone, laptop, evil, driver, clock)
    for node in (phone, laptop):
        assert mesh.connect(node)

    phone.write(SHARED, "messages", "m1", "one", minute(1))
    scene.settle(minute(1))
    laptop.write(SHARED, "messages", "m2", "two", minute(2))
    scene.settle(minute(2))
    phone.write(SHARED, "messages", "m1", "one, edited", minute(3))
    scene.settle(minute(3))
    _delete(phone, SHARED, "messages", "m2", minute(4))
    scene.settle(minute(4))
    # Both devices offline write one key; the runtime settles the race (by client id).
    mesh.disconnect(phone)
    mesh.disconnect(laptop)
    phone.write(SHARED, "memory", "topic", "phone's", minute(5))
    laptop.write(SHARED, "memory", "topic", "laptop's", minute(5))
    scene.settle(minute(5))
    for node in (phone, laptop):
        assert mesh.connect(node, minute(5))
    scene.settle(minute(5) + 1)
    mesh.runtime.write(AGENT, "replies", "r1", {"text": "hi", "to": "m1"}, minute(6))
    phone.write(device_doc(phone.peer_id), "decisions", "d1", {"approve": True}, minute(6))
    scene.settle(minute(6))
    tracker.observe_peers()

    # A hostile member forks its chain: quarantined; its next envelope is refused.
    writer = Writer(evil.identity, mesh)
    twin = Writer(evil.identity, mesh)
    writer.hlc = twin.hlc = minute(7) << 16
    env_b = twin.write(SHARED, "k", "b")
    env_a = writer.write(SHARED, "k", "a")
    clock[0] = minute(7)
    _hostile(mesh, evil, minute(7), env_a, batch=1)
    _hostile(mesh, evil, minute(7), env_b, batch=2)
    _hostile(mesh, evil, minute(7), writer.write(SHARED, "later", "x"), batch=3)
    scene.quarantined = writer.incarnation
    scene.settle(minute(7))

    revocation = issue_revocation(mesh.root, mesh.mesh_id, laptop.key, minute(8))
    mesh.runtime.engine.revoke(revocation, minute(8))
    scene.settle(minute(8))
    tracker.observe_peers()
    scene.settle(minute(8))
    scene.commit()
    return scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return build_scene(tmp_path_factory.mktemp("cli-state"))


def run(*args: str, datadir: DataDir | None = None, code: int = 0) -> Result:
    argv = [*args] + (["--data-dir", str(datadir.path)] if datadir is not None else [])
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == code, (argv, result.output)
    return result


def run_json(*args: str, datadir: DataDir) -> Any:
    return json.loads(run(*args, "--json", datadir=datadir).stdout)


# --- show --------------------------------------------------------------------------------------


def test_show_prints_every_document_as_the_runtime_holds_it(scene: Scene) -> None:
    expected = docs_to_py(scene.mesh.runtime.replica.docs)
    shown = run_json("state", "show", datadir=scene.runtime_dir)
    assert shown == expected
    assert run_json("state", "show", SHARED, datadir=scene.runtime_dir) == expected[SHARED]
    assert expected[SHARED]["messages"] == {"m1": "one, edited", "k": "a"}
    tree = run("state", "show", SHARED, datadir=scene.runtime_dir).stdout
    assert "one, edited" in tree and "messages" in tree and "memory" in tree


def test_show_a_path(scene: Scene) -> None:
    d = scene.runtime_dir
    assert run_json("state", "show", SHARED, "messages/m1", datadir=d) == "one, edited"
    assert run_json("state", "show", AGENT, "replies/r1/text", datadir=d) == "hi"
    assert run_json("state", "show", AGENT, "replies", datadir=d) == {
        "r1": {"text": "hi", "to": "m1"}
    }
    doc = device_doc(scene.phone.peer_id)
    assert run_json("state", "show", doc, "decisions/d1/approve", datadir=d) is True
    assert "hi" in run("state", "show", AGENT, "replies/r1", datadir=d).stdout


def test_show_uses_the_snapshot_and_the_envelopes_after_it(tmp_path: Path) -> None:
    scene = build_scene(tmp_path)
    store = scene.mesh.runtime.replica.store
    found = read_snapshot(store)
    assert found is not None and 0 < found.lid < store.last_lid()  # a snapshot and a tail
    expected = docs_to_py(scene.mesh.runtime.replica.docs)
    assert run_json("state", "show", datadir=scene.runtime_dir) == expected
    assert refresh(scene.mesh.runtime.replica)  # as the node leaves it when it closes
    store.commit()
    assert run_json("state", "show", datadir=scene.runtime_dir) == expected
    # The phone's own store shows the same shared content.
    shown = run_json("state", "show", SHARED, datadir=scene.phone_dir)
    assert shown == docs_to_py(scene.phone.replica.docs)[SHARED]


# --- errors ------------------------------------------------------------------------------------


def test_errors_are_one_line_with_meaningful_exit_codes(scene: Scene, tmp_path: Path) -> None:
    d = scene.runtime_dir
    unknown = run("state", "show", "nope", datadir=d, code=EXIT_NOT_FOUND)
    assert "not a document" in unknown.stderr and "Traceback" not in unknown.output
    assert "no root" in run("state", "show", SHARED, "nope", datadir=d, code=3).stderr
    assert (
        "no 'messages/zz'" in run("state", "show", SHARED, "messages/zz", datadir=d, code=3).stderr
    )
    stranger = device_doc(peer_id_of(seeded_identity(99).public_key))
    assert "no such document" in run("state", "show", stranger, datadir=d, code=3).stderr
    run("state", "blame", SHARED, "messages", datadir=d, code=EXIT_NOT_FOUND)
    run("state", "history", "--author", "nobody", datadir=d, code=EXIT_NOT_FOUND)
    run("state", "at", SHARED, "--seq", "999", datadir=d, code=EXIT_NOT_FOUND)

    run("state", "history", "--since", "yesterday-ish", datadir=d, code=EXIT_USAGE)
    run("state", "at", SHARED, datadir=d, code=EXIT_USAGE)
    run("state", "diff", SHARED, "--from", "now", "--to", "2000-01-01", datadir=d, code=2)

    missing = run("state", "show", datadir=DataDir(tmp_path / "absent"), code=EXIT_ERROR)
    assert "no such data directory" in missing.stderr
    empty = DataDir(tmp_path / "empty")
    empty.create()
    assert "no agentmesh node here" in run("status", datadir=empty, code=EXIT_ERROR).stderr
    corrupt = DataDir(tmp_path / "corrupt")
    corrupt.create()
    seeded_identity(5).save(corrupt.identity_key)
    corrupt.store.write_bytes(b"this is not SQLite" * 100)
    for args in (("state", "show"), ("state", "history"), ("status",)):
        result = run(*args, datadir=corrupt, code=EXIT_ERROR)
        assert "not a readable agentmesh store" in result.stderr, result.stderr


def test_help_documents_exit_codes() -> None:
    text = run("--help").stdout
    assert "Exit codes" in text and "3 not found" in text and "state" in text
    assert "blame" in run("state", "--help").stdout


# --- history -----------------------------------------------------------------------------------


def _accepted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "accepted"]


def test_history_lists_envelopes_with_what_they_changed(scene: Scene) -> None:
    rows = run_json("state", "history", SHARED, datadir=scene.runtime_dir)
    accepted = _accepted(rows)
    assert [r["pos"] for r in accepted] == list(range(1, len(accepted) + 1))
    first, second, third, fourth = accepted[:4]
    assert (first["device"], first["inserted"], first["seq"]) == ("phone", ["messages/m1"], 1)
    assert first["author"] == scene.phone.peer_id and first["time_ms"] == minute(1)
    assert first["time"] == iso(minute(1)) and first["hlc"] >> 16 == minute(1)
    assert (second["device"], second["inserted"]) == ("laptop", ["messages/m2"])
    assert (third["device"], third["overwritten"], third["inserted"]) == (
        "phone",
        ["messages/m1"],
        [],
    )
    assert (fourth["deleted"], fourth["inserted"], fourth["overwritten"]) == (
        ["messages/m2"],
        [],
        [],
    )
    assert fourth["deleted_ranges"] and fourth["size"] > fourth["update_size"] > 0
    topic = [r for r in accepted if "memory/topic" in r["inserted"] + r["overwritten"]]
    assert sorted(r["device"] for r in topic) == ["laptop", "phone"]
    assert len({r["incarnation"] for r in accepted if r["device"] == "phone"}) == 1


def test_history_shows_quarantined_refused_and_revoked(scene: Scene) -> None:
    rows = run_json("state", "history", datadir=scene.runtime_dir)
    evil = [r for r in rows if r.get("device") == "evil"]
    accepted = _accepted(evil)
    assert len(accepted) == 1
    assert accepted[0]["chain"] == "quarantined: fork; accepted up to seq 1"
    statuses = {r["status"] for r in evil}
    assert {"accepted", "quarantined", "refused"} <= statuses
    quarantine = next(r for r in evil if r["status"] == "quarantined")
    assert "fork at shared seq 1" in quarantine["detail"]
    assert quarantine["incarnation"] == scene.quarantined.hex()
    refused = [r for r in evil if r["status"] == "refused"]
    assert {r["detail"].split(":")[0] for r in refused} >= {"ForkDetected", "CutOff"}
    revoked = [r for r in rows if r["status"] == "revoked"]
    assert revoked and {r["device"] for r in revoked} == {"laptop"}
    assert all("revoked by" in r["detail"] for r in revoked)
    laptop_rows = _accepted([r for r in rows if r.get("device") == "laptop"])
    assert all(r["chain"] and r["chain"].startswith("revoked") for r in laptop_rows)

    table = run("state", "history", datadir=scene.runtime_dir).stdout
    for word in ("+messages/m1", "~messages/m1", "-messages/m2", "quarantined", "refused"):
        assert word in table, word


def test_history_filters(scene: Scene) -> None:
    d = scene.runtime_dir
    mine = run_json("state", "history", "--author", "phone", datadir=d)
    assert mine and {r["device"] for r in mine} == {"phone"}
    by_id = run_json("state", "history", "--author", scene.phone.peer_id, datadir=d)
    assert by_id == mine
    since = run_json("state", "history", SHARED, "--since", str(minute(3)), datadir=d)
    assert since and min(r["time_ms"] for r in since) >= minute(3)
    assert all(r["time_ms"] >= minute(3) for r in since)
    last = run_json("state", "history", SHARED, "--limit", "2", datadir=d)
    assert last == run_json("state", "history", SHARED, datadir=d)[-2:]
    iso_since = run_json("state", "history", SHARED, "--since", iso(minute(6)) or "", datadir=d)
    assert [r for r in iso_since if r["status"] == "accepted"] == [
        r for r in _accepted(since) if r["time_ms"] >= minute(6)
    ]


def test_history_shows_envelopes_held_by_a_running_node(tmp_path: Path) -> None:
    scene = build_scene(tmp_path)
    writer = Writer(scene.phone.identity, scene.mesh, tag="later")
    first = writer.write(SHARED, "messages", "held-1")
    second = writer.write(SHARED, "messages", "held-2")
    assert scene.mesh.runtime.replica.receive(second, minute(9)) is Outcome.HELD
    status = tracking.node_status(scene.driver)
    assert [(h["seq"], h["author"]) for h in status["held_envelopes"]] == [(2, scene.phone.peer_id)]
    with Inspector.open(scene.runtime_dir) as inspector:
        rows = inspector.history(SHARED, held=status["held_envelopes"])
    held = [r for r in rows if r["status"] == "held"]
    assert [(r["device"], r["seq"], r["doc"]) for r in held] == [("phone", 2, SHARED)]
    assert first.seq == 1


# --- blame, at, diff ---------------------------------------------------------------------------


def test_blame_names_the_writer_of_the_current_value(scene: Scene) -> None:
    d = scene.runtime_dir
    result = run_json("state", "blame", SHARED, "messages/m1", datadir=d)
    assert result["value"] == "one, edited"
    assert (result["writer"]["device"], result["writer"]["time_ms"]) == ("phone", minute(3))
    assert [(w["time_ms"], w["current"]) for w in result["writes"]] == [
        (minute(1), False),
        (minute(3), True),
    ]

    topic = run_json("state", "blame", SHARED, "memory/topic", datadir=d)
    winner = topic["writer"]["device"]
    assert topic["value"] == f"{winner}'s"
    assert sorted(w["device"] for w in topic["writes"]) == ["laptop", "phone"]
    assert sum(w["current"] for w in topic["writes"]) == 1

    field_ = run_json("state", "blame", AGENT, "replies/r1/text", datadir=d)
    assert (field_["key"], field_["value"], field_["writer"]["device"]) == (
        "replies/r1",
        "hi",
        "runtime",
    )
    text = run("state", "blame", SHARED, "messages/m1", datadir=d).stdout
    assert "written by phone" in text
    run("state", "blame", SHARED, "messages/m2", datadir=d, code=EXIT_NOT_FOUND)  # deleted


def test_at_and_diff_rebuild_the_past(scene: Scene) -> None:
    d = scene.runtime_dir
    first = run_json("state", "at", SHARED, "--seq", "1", datadir=d)
    assert first["content"]["messages"] == {"m1": "one"}
    assert first["about"]["envelopes"] == 1
    at2 = run_json("state", "at", SHARED, "--time", str(minute(2)), datadir=d)
    assert at2["content"]["messages"] == {"m1": "one", "m2": "two"}
    at4 = run_json("state", "at", SHARED, "--time", iso(minute(4)) or "", datadir=d)
    assert at4["content"]["messages"] == {"m1": "one, edited"}
    assert (
        run_json("state", "at", SHARED, "messages/m1", "--seq", "1", datadir=d)["content"] == "one"
    )

    changes = run_json(
        "state", "diff", SHARED, "--from", str(minute(2)), "--to", str(minute(4)), datadir=d
    )
    assert changes["changed"] == {"messages": {"m1": {"from": "one", "to": "one, edited"}}}
    assert changes["removed"] == {"messages": {"m2": "two"}}
    assert changes["added"] == {}
    everything = run_json("state", "diff", SHARED, datadir=d)
    assert everything["added"]["messages"] == {"m1": "one, edited", "k": "a"}
    text = run(
        "state", "diff", SHARED, "--from", str(minute(2)), "--to", str(minute(4)), datadir=d
    ).stdout
    assert "~ messages/m1" in text and "- messages/m2" in text
    assert "one" in run("state", "at", SHARED, "--seq", "1", datadir=d).stdout


# --- status ------------------------------------------------------------------------------------


def test_status_of_a_stopped_node_from_its_store(scene: Scene) -> None:
    report = run_json("status", datadir=scene.runtime_dir)
    assert report["running"] is False and report["synced"] is False
    assert report["id"] == scene.mesh.runtime.peer_id and report["role"] == "runtime"
    assert report["mesh"] == scene.mesh.mesh_id.hex()
    peers = {p["name"]: p for p in report["peers"]}
    assert set(peers) == {"phone", "laptop", "evil"}
    assert report["peers_known"] == 3 and report["peers_connected"] == 0
    assert peers["laptop"]["revoked"] and not peers["phone"]["revoked"]
    phone = peers["phone"]
    assert phone["peer_id"] == scene.phone.peer_id and phone["connected"] is False
    assert phone["last_sync_ms"] == minute(8) and phone["last_sync"] == iso(minute(8))
    assert phone["docs_as_of_last_seen"][SHARED] == {"we_lack": 0, "they_lack": 0}
    assert report["forks"] == [
        {
            "author": scene.evil.peer_id,
            "device": "evil",
            "incarnation": scene.quarantined.hex(),
        }
    ]
    assert report["held"] is None and report["refusals_kept"] >= 2
    assert report["envelopes"] == scene.mesh.runtime.replica.store.envelope_count()
    assert report["store"]["bytes"] > 0 and report["snapshot"]["lid"] > 0
    text = run("status", datadir=scene.runtime_dir).stdout
    assert "stopped" in text and "phone" in text and "forks     1" in text

    device = run_json("status", datadir=scene.phone_dir)
    assert device["role"] == "device" and device["id"] == scene.phone.peer_id
    assert {p["name"] for p in device["peers"]} == {"runtime", "laptop", "evil"}


# --- read-only ---------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inspection_never_writes_nor_locks_even_while_the_node_runs(tmp_path: Path) -> None:
    scene = build_scene(tmp_path)
    d = scene.runtime_dir
    store = scene.mesh.runtime.replica.store
    with d.locked():  # the running node owns the directory...
        # ...and has a write staged, not committed.
        scene.mesh.runtime.write(SHARED, "messages", "staged", "not yet", minute(10))
        scene.mesh.runtime.replica.seal_all(minute(10))
        before = _digest(d.store)
        commands = [
            ("state", "show"),
            ("state", "show", SHARED, "messages", "--json"),
            ("state", "history", "--json"),
            ("state", "blame", SHARED, "messages/m1"),
            ("state", "at", SHARED, "--seq", "2"),
            ("state", "diff", SHARED),
            ("status", "--json"),
        ]
        outputs = [run(*args, datadir=d).stdout for args in commands]
        assert "staged" not in outputs[1]  # only what is committed
        assert _digest(d.store) == before
        store.commit()
        assert "staged" in run("state", "show", SHARED, "messages", "--json", datadir=d).stdout


def test_watch_reports_new_envelopes_with_author_and_changes(tmp_path: Path) -> None:
    scene = build_scene(tmp_path)
    with Inspector.open(scene.runtime_dir) as inspector:
        watcher = inspector.watcher(SHARED)
        assert watcher.poll() == []
        scene.phone.write(SHARED, "messages", "m9", {"text": "nine"}, minute(11))
        scene.phone.write(SHARED, "messages", "m1", "one, again", minute(11))
        scene.mesh.runtime.write(AGENT, "replies", "r9", "not watched", minute(11))
        scene.settle(minute(11))
        scene.commit()
        changes = watcher.poll()
        assert [(c["device"], c["doc"], c["time_ms"]) for c in changes] == [
            ("phone", SHARED, minute(11))
        ]
        assert sorted((x["path"], x["action"], x["value"]) for x in changes[0]["changes"]) == [
            ("messages/m1", "update", "one, again"),
            ("messages/m9", "add", {"text": "nine"}),
        ]
        assert changes[0]["author"] == scene.phone.peer_id
        assert watcher.poll() == []
        every = inspector.watcher(None)
        _delete(scene.phone, SHARED, "messages", "m9", minute(12))
        scene.settle(minute(12))
        scene.commit()
        (change,) = every.poll()
        assert change["changes"] == [{"path": "messages/m9", "action": "delete", "value": None}]


def test_running_node_status_fields(tmp_path: Path) -> None:
    scene = build_scene(tmp_path)
    engine: Engine = scene.mesh.runtime.engine
    status = tracking.node_status(scene.driver)
    assert status["pending_writes"] == 0 and status["held_envelopes"] == []
    assert len(status["refusals"]) >= 2 and status["snapshot"]["lid"] > 0
    extra = tracking.peer_status(scene.driver, scene.phone.key)
    assert extra["peer_id"] == scene.phone.peer_id and extra["connected"]
    assert extra["docs"][SHARED] == {"we_lack": 0, "they_lack": 0}
    assert engine.status(scene.phone.key).synced and extra["last_sync_ms"] == minute(8)
    # A write the phone has not acknowledged yet: its document shows it, "synced" does not.
    scene.mesh.runtime.write(SHARED, "messages", "fresh", "x", minute(13))
    scene.mesh.runtime.replica.seal_all(minute(13))
    scene.mesh.net.flush(scene.mesh.runtime.key, minute(13))
    extra = tracking.peer_status(scene.driver, scene.phone.key)
    assert extra["docs"][SHARED]["they_lack"] == 1
    assert not engine.status(scene.phone.key).synced
    assert tracking.node_status(scene.driver)["pending_writes"] >= 1
