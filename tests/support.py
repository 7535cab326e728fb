"""Builders shared by the tests: a mesh with a runtime and devices, in memory."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pycrdt import Map

from crdt_state.replica import Replica
from crdt_state.schema import device_doc
from crdt_state.storage.base import Store
from crdt_state.storage.memory import MemoryStore
from mesh.engine import DEVICE_ROLE, RUNTIME_ROLE, Engine
from mesh.identity import Identity, mesh_id_of
from mesh.membership.log import genesis
from mesh.membership.records import APPROVE, READ, WRITE, issue_certificate
from mesh.transport.memory import MemoryNetwork

NOW = 1_700_000_000_000
YEAR_MS = 365 * 24 * 3600 * 1000
DEVICE_CAPS = frozenset({READ, WRITE, APPROVE})


def seeded_identity(n: int) -> Identity:
    """A deterministic identity (tests only)."""
    return Identity.from_seed(n.to_bytes(32, "big"))


@dataclass
class Node:
    identity: Identity
    replica: Replica
    engine: Engine

    @property
    def key(self) -> bytes:
        return self.identity.public_key

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    def write(self, doc: str, root: str, key: str, value: object, now: int = NOW) -> None:
        with self.engine.transact(doc, now) as ydoc:
            ydoc.get(root, type=Map)[key] = value

    def read(self, doc: str, root: str) -> dict[str, object]:
        result: dict[str, object] = self.replica.doc(doc).get(root, type=Map).to_py() or {}
        return result


@dataclass
class Mesh:
    """A root, a runtime and devices, wired through a MemoryNetwork."""

    root: Identity
    runtime: Node
    devices: list[Node] = field(default_factory=list)
    net: MemoryNetwork = field(default_factory=MemoryNetwork)

    @property
    def mesh_id(self) -> bytes:
        return mesh_id_of(self.root.public_key)

    def add_device(
        self,
        identity: Identity | None = None,
        caps: Iterable[str] = DEVICE_CAPS,
        *,
        store: Store | None = None,
        name: str = "device",
        now: int = NOW,
    ) -> Node:
        identity = identity or Identity.generate()
        cert = issue_certificate(
            self.root, self.mesh_id, identity.public_key, frozenset(caps), now, now + YEAR_MS, name
        )
        self.runtime.engine.admit(cert, now)
        self.runtime.replica.store.commit()
        return self.open_device(identity, store=store)

    def open_device(self, identity: Identity, *, store: Store | None = None) -> Node:
        replica = Replica(mesh_id=self.mesh_id, store=store or MemoryStore(), author=identity)
        replica.load()
        for entry in self.runtime.replica.membership.entries:
            replica.add_log_entry(entry)
        replica.store.commit()
        node = Node(identity, replica, Engine(replica, identity, DEVICE_ROLE))
        self.devices.append(node)
        self.net.add(node.engine)
        return node

    def connect(self, node: Node, now: int = NOW) -> bool:
        return self.net.link(self.runtime.key, node.key, now)

    def disconnect(self, node: Node) -> None:
        self.net.unlink(self.runtime.key, node.key)

    def settle(self, now: int = NOW) -> int:
        for node in [self.runtime, *self.devices]:
            node.replica.seal_all(now)
        return self.net.run(now)


def new_mesh(*, store: Store | None = None, runtime: Identity | None = None) -> Mesh:
    root = seeded_identity(1)
    runtime_identity = runtime or seeded_identity(2)
    mesh_id = mesh_id_of(root.public_key)
    replica = Replica(mesh_id=mesh_id, store=store or MemoryStore(), author=runtime_identity)
    replica.load()
    if replica.membership.length == 0:
        replica.add_log_entry(genesis(root, runtime_identity, now_ms=NOW, expires_ms=NOW + YEAR_MS))
        replica.store.commit()
    node = Node(runtime_identity, replica, Engine(replica, runtime_identity, RUNTIME_ROLE))
    mesh = Mesh(root, node)
    mesh.net.add(node.engine)
    return mesh


__all__ = ["NOW", "Mesh", "Node", "device_doc", "new_mesh", "seeded_identity"]
