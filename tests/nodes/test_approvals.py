"""Approvals: only decisions of devices holding ``approve`` count, on every peer.

Real replicas and engines: most tests run a runtime and devices over the
in-memory network (``tests.support``), the runtime's resolver
(``nodes.approvals_service``) listening to its outputs as a running node's
would; one runs real ``EngineDriver``s over in-memory trio streams; the CLI is
driven through click on real data dirs, over the control socket of nodes
running in the test and then with no node running; and one test runs a real
``agentmesh runtime`` process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from click.testing import CliRunner, Result

from crdt_state.errors import CutOff
from crdt_state.schema import device_doc
from crdt_state.storage.sqlite import SqliteStore
from mesh.membership.records import APPROVE, READ, WRITE, issue_revocation
from mesh.transport.memory import memory_stream_pair
from nodes import approvals, service
from nodes.approvals import Decision, counted_decisions, decide, request_approval, resolve, view
from nodes.approvals_service import Resolver, attach_resolver
from nodes.cli import EXIT_ERROR, EXIT_NOT_FOUND, cli
from nodes.control import serve_control
from nodes.datadir import DataDir
from nodes.driver import EngineDriver
from nodes.errors import NodeError
from tests.nodes.processes import free_port, run, runtime_process, wait_until
from tests.support import NOW, Mesh, Node, new_mesh, seeded_identity

APPROVER_CAPS = frozenset({READ, WRITE, APPROVE})


def transact_of(node: Node, now: int = NOW) -> Callable[[str], Any]:
    def transact(doc: str) -> Any:
        return node.engine.transact(doc, now)

    return transact


def state_of(node: Node, approval_id: str) -> str | None:
    found = approvals.approval(node.replica, approval_id)
    return None if found is None else found.get("state")


@dataclass
class Scene:
    """A runtime whose resolver sees its outputs, two approvers, a reader and a writer."""

    mesh: Mesh
    phone: Node  # read, write, approve
    laptop: Node  # read, write, approve
    viewer: Node  # read
    writer: Node  # read, write (no approve)
    driver: EngineDriver
    resolver: Resolver
    clock: list[int] = field(default_factory=lambda: [NOW])

    @property
    def runtime(self) -> Node:
        return self.mesh.runtime

    @property
    def peers(self) -> list[Node]:
        return [self.runtime, *self.mesh.devices]

    def settle(self) -> None:
        # Twice: what the runtime's resolver writes while envelopes arrive is sealed and
        # sent by the second round.
        self.mesh.settle(self.clock[0])
        self.mesh.settle(self.clock[0])

    def request(self, action: str = "deploy") -> str:
        approval_id = request_approval(transact_of(self.runtime), action, "v2", self.clock[0])
        self.settle()
        assert all(state_of(node, approval_id) == "pending" for node in self.peers)
        return approval_id


def build_scene() -> Scene:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10), APPROVER_CAPS, name="phone")
    laptop = mesh.add_device(seeded_identity(11), APPROVER_CAPS, name="laptop")
    viewer = mesh.add_device(seeded_identity(12), {READ}, name="viewer")
    writer = mesh.add_device(seeded_identity(13), {READ, WRITE}, name="writer")
    clock = [NOW]
    driver = EngineDriver(mesh.runtime.engine, clock=lambda: clock[0])
    resolver = attach_resolver(driver)

    def observe(key: bytes, output: Any) -> None:
        if key == mesh.runtime.key:
            for listener in driver.listeners:
                listener(output)

    mesh.net.observers.append(observe)
    for node in mesh.devices:
        assert mesh.connect(node)
    scene = Scene(mesh, phone, laptop, viewer, writer, driver, resolver, clock)
    scene.settle()
    return scene


@pytest.fixture
def scene() -> Scene:
    return build_scene()


# --- the rule, on every peer -------------------------------------------------------------------


def test_approved_once_every_approver_approved_and_replicated_everywhere(
    scene: Scene,
) -> None:
    approval_id = scene.request()
    decide(
        transact_of(scene.phone), scene.phone.replica, scene.phone.key, approval_id, "approve", NOW
    )
    scene.settle()
    # One of two approvers: still pending everywhere, the approval noted as in time.
    for node in scene.peers:
        waiting = approvals.approval(node.replica, approval_id)
        assert waiting is not None and waiting["state"] == "pending"
        assert waiting["approved_in_time"] == [scene.phone.peer_id]
    decide(
        transact_of(scene.laptop, NOW + 1),
        scene.laptop.replica,
        scene.laptop.key,
        approval_id,
        "approve",
        NOW + 1,
    )
    scene.settle()
    expected = [
        Decision(NOW, scene.phone.peer_id, "approve"),
        Decision(NOW + 1, scene.laptop.peer_id, "approve"),
    ]
    for node in scene.peers:
        assert counted_decisions(node.replica, approval_id) == expected
        resolved = approvals.approval(node.replica, approval_id)
        assert resolved is not None
        assert resolved["state"] == "approved"
        assert resolved["decided_by"] == scene.phone.peer_id
        assert resolved["decided_ts"] == NOW
    [row] = view(scene.viewer.replica)
    assert row["state"] == "approved" and row["ignored"] == 0
    assert [d["device"] for d in row["decisions"]] == [scene.phone.peer_id, scene.laptop.peer_id]
    # No longer pending: a later decision is refused where it is made.
    with pytest.raises(NodeError, match="no longer pending"):
        decide(
            transact_of(scene.phone), scene.phone.replica, scene.phone.key, approval_id, "deny", NOW
        )


def test_one_deny_settles_at_once(scene: Scene) -> None:
    approval_id = scene.request()
    decide(
        transact_of(scene.laptop), scene.laptop.replica, scene.laptop.key, approval_id, "deny", NOW
    )
    scene.settle()
    for node in scene.peers:
        resolved = approvals.approval(node.replica, approval_id)
        assert resolved is not None
        assert (resolved["state"], resolved["decided_by"]) == ("denied", scene.laptop.peer_id)


@pytest.mark.parametrize("in_time", [False, True])
def test_at_the_deadline_an_approval_in_time_approves_else_it_expires(
    scene: Scene, in_time: bool
) -> None:
    runtime = scene.runtime
    approval_id = request_approval(
        transact_of(runtime), "deploy", "v2", NOW, expires_ms=NOW + 1_000
    )
    scene.settle()
    if in_time:
        decide(
            transact_of(scene.phone),
            scene.phone.replica,
            scene.phone.key,
            approval_id,
            "approve",
            NOW,
        )
        scene.settle()
    # The laptop answers after the deadline: whatever it says, it is too late.
    late = NOW + 1_000
    scene.clock[0] = late
    decide(
        transact_of(scene.laptop, late), scene.laptop.replica, scene.laptop.key, approval_id,
        "approve", late,
    )  # fmt: skip
    scene.settle()
    resolved = approvals.approval(runtime.replica, approval_id)
    assert resolved is not None
    if in_time:
        assert (resolved["state"], resolved["decided_by"]) == ("approved", scene.phone.peer_id)
    else:
        assert resolved["state"] == "expired" and "decided_by" not in resolved


@pytest.mark.parametrize("who", ["viewer", "writer"])
def test_a_device_without_approve_is_refused_where_it_decides(scene: Scene, who: str) -> None:
    approval_id = scene.request()
    node: Node = getattr(scene, who)
    with pytest.raises(NodeError, match="this device lacks the approve capability"):
        decide(transact_of(node), node.replica, node.key, approval_id, "approve", NOW)
    driver = EngineDriver(node.engine, clock=lambda: NOW)
    request = {"op": "decide", "id": approval_id, "decision": "approve"}
    with pytest.raises(NodeError, match="this device lacks the approve capability"):
        service.handle(driver, request)
    assert node.replica.next_seal_ms() is None  # nothing was written
    assert device_doc(node.peer_id) not in node.replica.docs


def test_unknown_and_malformed_decisions_are_refused(scene: Scene) -> None:
    phone = scene.phone
    with pytest.raises(approvals.UnknownApproval, match="no approval 'nope'"):
        decide(transact_of(phone), phone.replica, phone.key, "nope", "approve", NOW)
    approval_id = scene.request()
    with pytest.raises(NodeError, match="approve or deny"):
        decide(transact_of(phone), phone.replica, phone.key, approval_id, "maybe", NOW)
    decide(transact_of(phone), phone.replica, phone.key, approval_id, "deny", NOW)
    with pytest.raises(NodeError, match="already decided 'deny'"):
        decide(transact_of(phone), phone.replica, phone.key, approval_id, "approve", NOW)


def test_a_hostile_decision_without_approve_counts_nowhere(scene: Scene) -> None:
    approval_id = scene.request()
    # The writer bypasses decide() and writes a decision into its own document: the
    # receive path accepts it (every member writes its own device document) ...
    for hostile in (scene.writer, scene.viewer):
        hostile.write(
            device_doc(hostile.peer_id),
            "decisions",
            approval_id,
            {"decision": "approve", "ts": NOW},
        )
    scene.settle()
    for node in scene.peers:
        for hostile in (scene.writer, scene.viewer):
            decisions = node.read(device_doc(hostile.peer_id), "decisions")
            assert approval_id in decisions  # accepted and relayed to every peer
        # ... and ignored by every one of them.
        assert counted_decisions(node.replica, approval_id) == []
        [row] = view(node.replica)
        assert (row["state"], row["decisions"], row["ignored"]) == ("pending", [], 2)
        assert state_of(node, approval_id) == "pending"
    assert resolve(scene.runtime.replica, transact_of(scene.runtime), NOW) == []
    # The approvers' decisions still resolve it.
    for approver in (scene.laptop, scene.phone):
        decide(transact_of(approver), approver.replica, approver.key, approval_id, "approve", NOW)
        scene.settle()
    for node in scene.peers:
        resolved = approvals.approval(node.replica, approval_id)
        assert resolved is not None
        assert (resolved["state"], resolved["decided_by"]) == ("approved", scene.laptop.peer_id)


def test_deny_wins_and_resolve_is_idempotent() -> None:
    mesh = new_mesh()  # no resolver here: both decisions are in before resolving
    phone = mesh.add_device(seeded_identity(10), APPROVER_CAPS)
    laptop = mesh.add_device(seeded_identity(11), APPROVER_CAPS)
    for node in mesh.devices:
        assert mesh.connect(node)
    approval_id = request_approval(transact_of(mesh.runtime), "rm -rf", "", NOW)
    mesh.settle()
    decide(transact_of(phone, NOW + 1), phone.replica, phone.key, approval_id, "approve", NOW + 1)
    decide(transact_of(laptop, NOW + 2), laptop.replica, laptop.key, approval_id, "deny", NOW + 2)
    mesh.settle()
    runtime = mesh.runtime
    assert [d.decision for d in counted_decisions(runtime.replica, approval_id)] == [
        "approve",
        "deny",
    ]
    assert resolve(runtime.replica, transact_of(runtime, NOW + 5), NOW + 5) == [approval_id]
    mesh.settle()
    lid = runtime.replica.store.last_lid()
    first = approvals.approval(runtime.replica, approval_id)
    assert first is not None
    assert (first["state"], first["decided_by"], first["decided_ts"]) == (
        "denied",
        laptop.peer_id,
        NOW + 5,
    )
    # Again, and after more decisions: nothing changes, nothing is written.
    assert resolve(runtime.replica, transact_of(runtime, NOW + 9), NOW + 9) == []
    mesh.settle()
    assert runtime.replica.store.last_lid() == lid
    for node in (runtime, phone, laptop):
        assert approvals.approval(node.replica, approval_id) == first


def test_the_resolver_resolves_once_per_change(scene: Scene) -> None:
    approval_id = scene.request()
    decide(transact_of(scene.phone), scene.phone.replica, scene.phone.key, approval_id, "deny", NOW)
    scene.settle()
    assert state_of(scene.runtime, approval_id) == "denied"
    lid = scene.runtime.replica.store.last_lid()
    assert scene.resolver.resolve() == []
    assert Resolver(scene.driver).resolve() == []  # a fresh one (a restart) finds nothing to do
    scene.settle()
    assert scene.runtime.replica.store.last_lid() == lid


# --- revocation ----------------------------------------------------------------------------------


def test_a_revoked_approver(scene: Scene) -> None:
    mesh, phone, laptop = scene.mesh, scene.phone, scene.laptop
    before, after = scene.request("before"), scene.request("after")
    # A decision accepted while the phone was a member resolved 'before', and keeps
    # counting after its revocation (every peer accepted it within the cutoff).
    decide(transact_of(phone), phone.replica, phone.key, before, "deny", NOW)
    scene.settle()
    assert all(state_of(node, before) == "denied" for node in scene.peers)

    # The phone goes offline and is revoked; unaware, it decides 'after'.
    mesh.disconnect(phone)
    revocation = issue_revocation(mesh.root, mesh.mesh_id, phone.key, NOW + 1)
    entry = mesh.runtime.engine.revoke(revocation, NOW + 1)
    scene.settle()
    decide(transact_of(phone, NOW + 2), phone.replica, phone.key, after, "approve", NOW + 2)
    envelope = phone.replica.seal(device_doc(phone.peer_id), NOW + 2)
    assert envelope is not None

    # It cannot deliver it: the runtime refuses its connection, and every peer refuses
    # the envelope itself (past the cutoff), wherever it comes from.
    assert not mesh.connect(phone, NOW + 3)
    for node in [scene.runtime, laptop, scene.viewer, scene.writer]:
        with pytest.raises(CutOff):
            node.replica.receive(envelope, NOW + 3)
    scene.settle()
    for node in [scene.runtime, laptop, scene.viewer, scene.writer]:
        assert state_of(node, after) == "pending"
        assert counted_decisions(node.replica, after) == []
        assert counted_decisions(node.replica, before) == [Decision(NOW, phone.peer_id, "deny")]

    # On the phone itself the decision past its cutoff does not count either, once it
    # learns of the revocation; and it decides no more.
    assert [d.device for d in counted_decisions(phone.replica, after)] == [phone.peer_id]
    phone.replica.add_log_entry(entry)
    assert counted_decisions(phone.replica, after) == []
    with pytest.raises(NodeError, match="revoked"):
        decide(transact_of(phone, NOW + 4), phone.replica, phone.key, after, "deny", NOW + 4)


# --- running nodes: drivers, the control socket and the CLI ---------------------------------


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(20):
        while not condition():
            await trio.testing.wait_all_tasks_blocked()


def _data_dir(path: Path, identity_seed: int, role: bytes) -> tuple[DataDir, SqliteStore]:
    datadir = DataDir(path)
    datadir.create()
    seeded_identity(identity_seed).save(datadir.identity_key)
    store = SqliteStore(datadir.store)
    store.set_meta("role", role)
    return datadir, store


def cli_run(*args: str, datadir: DataDir, code: int = 0) -> Result:
    argv = [*args, "--data-dir", str(datadir.path)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == code, (argv, result.output)
    return result


async def acli(*args: str, datadir: DataDir, code: int = 0) -> Result:
    """The CLI in a worker thread: the nodes it talks to run in this trio loop."""
    return await trio.to_thread.run_sync(partial(cli_run, *args, datadir=datadir, code=code))


@dataclass
class Running:
    dirs: dict[str, DataDir]
    nodes: dict[str, Node]
    drivers: dict[str, EngineDriver]
    stores: list[SqliteStore]


def _running_mesh(base: Path) -> Running:
    runtime_dir, runtime_store = _data_dir(base / "runtime", 2, b"runtime")
    mesh = new_mesh(store=runtime_store, runtime=seeded_identity(2))
    runtime_store.set_meta("mesh_id", mesh.mesh_id)
    runtime_store.commit()
    dirs, nodes, stores = {"runtime": runtime_dir}, {"runtime": mesh.runtime}, [runtime_store]
    for name, seed, caps in (("phone", 10, APPROVER_CAPS), ("viewer", 11, {READ})):
        datadir, store = _data_dir(base / name, seed, b"device")
        store.set_meta("mesh_id", mesh.mesh_id)
        dirs[name], stores = datadir, [*stores, store]
        nodes[name] = mesh.add_device(seeded_identity(seed), caps, store=store, name=name)
    drivers = {name: EngineDriver(node.engine, clock=lambda: NOW) for name, node in nodes.items()}
    return Running(dirs, nodes, drivers, stores)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    mesh = _running_mesh(tmp_path)
    yield mesh
    for store in mesh.stores:
        store.close()


async def test_the_cli_with_running_nodes_then_with_none(running: Running) -> None:
    dirs, nodes, drivers = running.dirs, running.nodes, running.drivers
    runtime = drivers["runtime"]
    attach_resolver(runtime)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        for name in ("phone", "viewer"):
            at_device, at_runtime = memory_stream_pair(nodes[name].key, nodes["runtime"].key)
            nursery.start_soon(drivers[name].run)
            nursery.start_soon(runtime.run_session, at_runtime)
            nursery.start_soon(drivers[name].run_session, at_device)
        for name, driver in drivers.items():
            handler = partial(service.handle, driver)
            nursery.start_soon(serve_control, dirs[name].control_socket, handler)
        await until(lambda: all(d.idle() for d in drivers.values()))
        await until(lambda: all(d.control_socket.exists() for d in dirs.values()))

        made = await acli(
            "approvals", "request", "deploy", "--details", "v2", datadir=dirs["runtime"]
        )
        approval_id = made.stdout.strip()
        await until(lambda: all(state_of(n, approval_id) == "pending" for n in nodes.values()))

        refused = await acli(
            "approvals", "approve", approval_id, datadir=dirs["viewer"], code=EXIT_ERROR
        )
        assert "this device lacks the approve capability" in refused.stderr
        assert "Traceback" not in refused.output
        unknown = await acli(
            "approvals", "deny", "nope", datadir=dirs["phone"], code=EXIT_NOT_FOUND
        )
        assert "no approval 'nope'" in unknown.stderr
        not_runtime = await acli(
            "approvals", "request", "x", datadir=dirs["phone"], code=EXIT_ERROR
        )
        assert "only the runtime requests approvals" in not_runtime.stderr

        await acli("approvals", "deny", approval_id, datadir=dirs["phone"])
        await until(lambda: all(state_of(n, approval_id) == "denied" for n in nodes.values()))
        listed = await acli("approvals", "--json", datadir=dirs["viewer"])
        [row] = json.loads(listed.stdout)
        assert (row["id"], row["state"], row["action"], row["details"]) == (
            approval_id,
            "denied",
            "deploy",
            "v2",
        )
        assert row["decided_by"] == nodes["phone"].peer_id
        assert row["decisions"] == [
            {"device": nodes["phone"].peer_id, "decision": "deny", "ts": NOW}
        ]
        text = (await acli("approvals", datadir=dirs["runtime"])).stdout
        assert f"{approval_id}  denied  deploy" in text and "(approve 0, deny 1, ignored 0)" in text
        nursery.cancel_scope.cancel()

    # No node runs now: the CLI opens the stores itself.
    assert not any(d.control_socket.exists() for d in dirs.values())
    second = cli_run("approvals", "request", "restart", datadir=dirs["runtime"]).stdout.strip()
    rows = json.loads(cli_run("approvals", "--json", datadir=dirs["runtime"]).stdout)
    assert [(r["id"], r["state"]) for r in rows] == [(approval_id, "denied"), (second, "pending")]
    # The phone has not synced the new one: not found; the old one: no longer pending.
    unknown = cli_run("approvals", "approve", second, datadir=dirs["phone"], code=EXIT_NOT_FOUND)
    assert "not synced yet" in unknown.stderr
    late = cli_run("approvals", "approve", approval_id, datadir=dirs["phone"], code=EXIT_ERROR)
    assert "no longer pending" in late.stderr
    # The runtime holds every capability: its own approval counts, but the request still
    # waits for the phone (the devices holding approve); its own deny settles it at once.
    cli_run("approvals", "approve", second, datadir=dirs["runtime"])
    rows = json.loads(cli_run("approvals", "--json", datadir=dirs["runtime"]).stdout)
    assert rows[1]["state"] == "pending"
    assert [d["device"] for d in rows[1]["decisions"]] == [nodes["runtime"].peer_id]


def test_a_runtime_process_resolves_approvals(tmp_path: Path) -> None:
    """The resolver is wired into ``agentmesh runtime`` (nodes/runtime.py)."""
    rt_dir = tmp_path / "runtime"
    runtime = runtime_process(rt_dir, free_port(), tmp_path / "logs")
    runtime.start()
    runtime.read_line_with("listening")
    approval_id = run("approvals", "request", "deploy", "--data-dir", str(rt_dir)).stdout.strip()
    run("approvals", "approve", approval_id, "--data-dir", str(rt_dir))

    def resolved() -> bool:
        rows = json.loads(run("approvals", "--json", "--data-dir", str(rt_dir)).stdout)
        return bool(rows) and rows[0]["state"] == "approved"

    wait_until("the runtime resolved the approval", resolved)
    assert runtime.stop() == 0
