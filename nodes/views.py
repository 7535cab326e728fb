"""Read-only views of a node's replica for the CLI (no libp2p)."""

from __future__ import annotations

from typing import Any

from crdt_state.replica import Replica
from mesh.identity import peer_id_of


def device_rows(replica: Replica) -> list[dict[str, Any]]:
    """One row per member key: name, id, caps, joined, expiry, revoked."""
    rows = []
    for key, member in replica.membership.members.items():
        cert = member.cert
        rows.append(
            {
                "name": cert.name,
                "id": peer_id_of(key),
                "caps": sorted(cert.caps),
                "joined_index": member.certs[0][0],
                "expires_ms": cert.expires_ms,
                "revoked": member.revoked_at is not None,
            }
        )
    return sorted(rows, key=lambda r: (r["joined_index"], r["id"]))
