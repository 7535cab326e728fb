"""Read-only views of a node's replica for the CLI (no libp2p)."""

from __future__ import annotations

from typing import Any

from crdt_state.replica import Replica
from mesh.identity import peer_id_of


def device_rows(replica: Replica) -> list[dict[str, Any]]:
    """One row per member key: name, id, caps, joined, expiry, last seen, online, revoked.

    Last seen and online are what this node recorded of its own sessions (on the
    runtime: every device); "online" is as of the node's last record.
    """
    from nodes.tracking import stored_peer

    rows = []
    for key, member in replica.membership.members.items():
        cert = member.cert
        joined_entry = replica.membership.entries[member.certs[0][0]]
        seen = stored_peer(replica.store, key)
        rows.append(
            {
                "name": cert.name,
                "id": peer_id_of(key),
                "caps": sorted(cert.caps),
                "joined_index": member.certs[0][0],
                "joined_ms": joined_entry.committed_ms,
                "expires_ms": cert.expires_ms,
                "last_seen_ms": seen.last_seen_ms if seen else None,
                "online": bool(seen and seen.connected),
                "revoked": member.revoked_at is not None,
            }
        )
    return sorted(rows, key=lambda r: (r["joined_index"], r["id"]))
