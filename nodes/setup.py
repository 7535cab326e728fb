"""Creating and opening node data directories (no network: fast to import)."""

from __future__ import annotations

from dataclasses import dataclass

from crdt_state.replica import Replica
from crdt_state.storage.sqlite import SqliteStore
from mesh.identity import Identity, mesh_id_of
from mesh.limits import DEFAULT_CERT_TTL_MS
from mesh.membership.log import genesis
from nodes.datadir import DataDir
from nodes.errors import DataDirError

ROLE_KEY = "role"
MESH_KEY = "mesh_id"
RUNTIME_ADDR_KEY = "runtime_addr"
RUNTIME_ROLE = b"runtime"
DEVICE_ROLE = b"device"


@dataclass
class OpenNode:
    """An opened data dir: identity, role and replica (store open for writing)."""

    datadir: DataDir
    identity: Identity
    role: str
    replica: Replica

    def close(self) -> None:
        self.replica.store.commit()
        _refresh_snapshot(self.replica)
        self.replica.store.close()


def _refresh_snapshot(replica: Replica) -> None:
    """Leave a current local snapshot behind, so the next open replays nothing."""
    from crdt_state.errors import StateError
    from crdt_state.snapshot import refresh

    try:
        if refresh(replica):
            replica.store.commit()
    except StateError as exc:  # the envelopes are committed; the snapshot is only a cache
        import logging

        logging.getLogger("agentmesh.setup").warning("snapshot not written: %s", exc)


def init_runtime(datadir: DataDir, now_ms: int) -> bytes:
    """Create the mesh root key, the runtime identity and the genesis entry; returns mesh id."""
    if datadir.identity_key.exists() or datadir.store.exists():
        raise DataDirError(f"{datadir.path}: already initialised")
    datadir.create()
    root = Identity.generate()
    runtime = Identity.generate()
    root.save(datadir.root_key)
    runtime.save(datadir.identity_key)
    mesh_id = mesh_id_of(root.public_key)
    store = SqliteStore(datadir.store)
    store.set_meta(ROLE_KEY, RUNTIME_ROLE)
    store.set_meta(MESH_KEY, mesh_id)
    replica = Replica(mesh_id=mesh_id, store=store, author=runtime)
    replica.add_log_entry(
        genesis(root, runtime, now_ms=now_ms, expires_ms=now_ms + 10 * DEFAULT_CERT_TTL_MS)
    )
    store.commit()
    store.close()
    return mesh_id


def init_device(datadir: DataDir) -> Identity:
    """Create a device identity and an empty store (it joins a mesh later)."""
    if datadir.identity_key.exists() or datadir.store.exists():
        raise DataDirError(f"{datadir.path}: already initialised")
    datadir.create()
    identity = Identity.generate()
    identity.save(datadir.identity_key)
    store = SqliteStore(datadir.store)
    store.set_meta(ROLE_KEY, DEVICE_ROLE)
    store.commit()
    store.close()
    return identity


def role_of(store: SqliteStore) -> str:
    role = store.get_meta(ROLE_KEY)
    if role not in (RUNTIME_ROLE, DEVICE_ROLE):
        raise DataDirError(f"{store.location}: not an agentmesh node store")
    return role.decode()


def open_node(datadir: DataDir, *, mesh_id: bytes | None = None) -> OpenNode:
    """Open a node for writing (a new incarnation). The caller holds the directory lock."""
    datadir.require()
    identity = Identity.load(datadir.identity_key)
    store = SqliteStore(datadir.store)
    role = role_of(store)
    stored_mesh = store.get_meta(MESH_KEY)
    if stored_mesh is None:
        if mesh_id is None:
            store.close()
            raise DataDirError(f"{datadir.path}: this device has not joined a mesh yet")
        store.set_meta(MESH_KEY, mesh_id)
        store.commit()
    elif mesh_id is not None and mesh_id != stored_mesh:
        store.close()
        raise DataDirError(f"{datadir.path}: belongs to another mesh")
    replica = Replica(mesh_id=mesh_id or stored_mesh or b"", store=store, author=identity)
    replica.load()
    return OpenNode(datadir, identity, role, replica)


def open_readonly(datadir: DataDir) -> Replica:
    """Open a node's store read-only (works while the node runs; writes nothing)."""
    datadir.require()
    store = SqliteStore(datadir.store, readonly=True)
    mesh_id = store.get_meta(MESH_KEY)
    if mesh_id is None:
        raise DataDirError(f"{datadir.path}: this device has not joined a mesh yet")
    replica = Replica(mesh_id=mesh_id, store=store)
    replica.load()
    return replica
