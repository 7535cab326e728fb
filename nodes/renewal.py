"""Automatic certificate renewal on the runtime: members keep working without re-pairing.

A certificate is renewed (same capabilities and name, a fresh lifetime) once it is
within ``CERT_RENEW_BEFORE_MS`` of expiring, if its key is not revoked and its
device was connected, or joined, within ``CERT_RENEW_IF_SEEN_WITHIN_MS``. The
runtime's own certificate is always renewed. A device away for longer is left to
expire: expiry is the safety net for a lost device nobody revoked; it pairs again
(or an admin re-certifies it).

Renewals are signed by the mesh root when its key is on the runtime, else by the
runtime's own key (it holds ``admin``), which may re-certify every device except
admins and itself: those then need the root (``agentmesh devices add`` with the
root key at hand), and the runtime says so in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from mesh.identity import Identity, mesh_id_of, peer_id_of
from mesh.limits import (
    CERT_RENEW_BEFORE_MS,
    CERT_RENEW_CHECK_INTERVAL_MS,
    CERT_RENEW_IF_SEEN_WITHIN_MS,
    DEFAULT_CERT_TTL_MS,
)
from mesh.membership.records import ADMIN, RUNTIME, Certificate, issue_certificate
from mesh.membership.state import Membership

log = logging.getLogger("agentmesh.renewal")


def renewals_due(
    membership: Membership,
    signer: Identity,
    last_active_ms: Callable[[bytes], int | None],
    now_ms: int,
) -> list[Certificate]:
    """Renewals, signed by ``signer``, of every certificate that is due and it may renew.

    ``signer`` is the mesh root, or the runtime (not for admins or itself);
    ``last_active_ms`` gives when a key was last connected, if ever.
    """
    is_root = membership.mesh_id == mesh_id_of(signer.public_key)
    renewals = []
    for key, member in sorted(membership.members.items()):
        cert = member.cert
        if member.revoked_at is not None or now_ms < cert.expires_ms - CERT_RENEW_BEFORE_MS:
            continue
        joined_ms = membership.entries[member.certs[0][0]].committed_ms
        active = max(last_active_ms(key) or 0, joined_ms)
        if RUNTIME not in cert.caps and now_ms - active > CERT_RENEW_IF_SEEN_WITHIN_MS:
            continue
        if not is_root and cert.caps & {ADMIN, RUNTIME}:
            log.warning(
                "the certificate of %s expires soon and only the mesh root can renew it",
                cert.name or peer_id_of(key),
            )
            continue
        renewals.append(
            issue_certificate(
                signer,
                membership.mesh_id,
                key,
                cert.caps,
                now_ms,
                now_ms + DEFAULT_CERT_TTL_MS,
                cert.name,
            )
        )
    return renewals


async def renew_forever(driver: object, signer: Identity) -> None:
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
        for cert in renewals_due(engine.replica.membership, signer, last_active, now):
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
