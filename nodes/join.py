"""``agentmesh join``: a device joins a mesh with an invite code, durably."""

from __future__ import annotations

from collections.abc import Callable

import trio

from crdt_state.replica import Replica
from crdt_state.storage.sqlite import SqliteStore
from mesh.identity import Identity, peer_id_of
from mesh.membership.log import decode_entry
from mesh.pairing.invite import Invite, parse_code
from nodes.crashpoints import crash_point
from nodes.datadir import DataDir
from nodes.errors import DataDirError
from nodes.setup import MESH_KEY, RUNTIME_ADDR_KEY, init_device

JOINING_KEY = "joining"


def prepare(datadir: DataDir, code: str) -> tuple[Invite, Identity]:
    """Check the code and the data dir; create the identity; remember the join in progress."""
    invite = parse_code(code)
    if not datadir.identity_key.exists():
        init_device(datadir)
    identity = Identity.load(datadir.identity_key)
    store = SqliteStore(datadir.store)
    try:
        mesh = store.get_meta(MESH_KEY)
        if mesh is not None and mesh != invite.mesh_id:
            raise DataDirError(
                f"{datadir.path} already belongs to mesh {mesh.hex()[:16]}...; to join another "
                f"mesh, use another --data-dir (a new identity)"
            )
        store.set_meta(JOINING_KEY, code.encode())
        store.commit()
    finally:
        store.close()
    return invite, identity


def finish(datadir: DataDir, invite: Invite, entries: list[bytes]) -> None:
    """Store the membership log and the runtime's address; the device has joined."""
    store = SqliteStore(datadir.store)
    try:
        replica = Replica(mesh_id=invite.mesh_id, store=store)
        replica.load()
        for raw in entries:
            replica.add_log_entry(decode_entry(raw))
        store.set_meta(MESH_KEY, invite.mesh_id)
        store.set_meta(RUNTIME_ADDR_KEY, invite.addresses[0].encode())
        store.set_meta(JOINING_KEY, b"")
        store.commit()
    finally:
        store.close()


def run_join(
    datadir: DataDir, code: str, name: str, on_pending: Callable[[str], None]
) -> tuple[str, str]:
    """Join; returns (mesh id hex, this device's PeerId). Safe to repeat after a crash."""
    from nodes.pairing import join_mesh

    invite, identity = prepare(datadir, code)
    crash_point("device.prepared")
    entries = trio.run(lambda: join_mesh(identity, invite, name, on_pending=on_pending))
    crash_point("device.answered")
    finish(datadir, invite, entries)
    return invite.mesh_id.hex(), peer_id_of(identity.public_key)
