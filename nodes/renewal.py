"""Automatic certificate renewal on the runtime: members keep working without re-pairing.

A certificate is renewed (same capabilities and name, a fresh lifetime, signed by
the mesh root the runtime keeps) once it is within ``CERT_RENEW_BEFORE_MS`` of
expiring, if its key is not revoked and its device was connected, or joined,
within ``CERT_RENEW_IF_SEEN_WITHIN_MS``. The runtime's own certificate is always
renewed. A device away for longer is left to expire: expiry is the safety net for
a lost device nobody revoked; it pairs again (or an admin re-certifies it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from mesh.identity import Identity, peer_id_of
from mesh.limits import (
    CERT_RENEW_BEFORE_MS,
    CERT_RENEW_CHECK_INTERVAL_MS,
    CERT_RENEW_IF_SEEN_WITHIN_MS,
    DEFAULT_CERT_TTL_MS,
)
from mesh.membership.records import RUNTIME, Certificate, issue_certificate
from mesh.membership.state import Membership

log = logging.getLogger("agentmesh.renewal")


def renewals_due(
    membership: Membership,
    root: Identity,
    last_active_ms: Callable[[bytes], int | None],
    now_ms: int,
) -> list[Certificate]:
    """Root-signed renewals of every certificate that is due (``last_active_ms``: per key)."""
    renewals = []
    for key, member in sorted(membership.members.items()):
        cert = member.cert
        if member.revoked_at is not None or now_ms < cert.expires_ms - CERT_RENEW_BEFORE_MS:
            continue
        joined_ms = membership.entries[member.certs[0][0]].committed_ms
        active = max(last_active_ms(key) or 0, joined_ms)
        if RUNTIME not in cert.caps and now_ms - active > CERT_RENEW_IF_SEEN_WITHIN_MS:
            continue
        renewals.append(
            issue_certificate(
                root,
                membership.mesh_id,
                key,
                cert.caps,
                now_ms,
                now_ms + DEFAULT_CERT_TTL_MS,
                cert.name,
            )
        )
    return renewals


async def renew_forever(driver: object, root: Identity) -> None:
    """Renew what is due now and every ``CERT_RENEW_CHECK_INTERVAL_MS`` (runtime task)."""
    from mesh.errors import MembershipError
    from nodes.driver import EngineDriver
    from nodes.tracking import stored_peer

    assert isinstance(driver, EngineDriver)
    engine = driver.engine

    def last_active(key: bytes) -> int | None:
        seen = stored_peer(engine.replica.store, key)
        return seen.last_seen_ms if seen else None

    while True:
        now = driver.clock()
        for cert in renewals_due(engine.replica.membership, root, last_active, now):
            try:
                engine.admit(cert, now)
            except MembershipError as exc:  # e.g. judged expired meanwhile: logged, not fatal
                log.warning("could not renew %s: %s", peer_id_of(cert.subject), exc)
                continue
            log.info(
                "renewed the certificate of %s (%s)", cert.name or "-", peer_id_of(cert.subject)
            )
        driver.kick()
        await trio.sleep(CERT_RENEW_CHECK_INTERVAL_MS / 1000)
