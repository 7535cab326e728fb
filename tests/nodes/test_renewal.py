"""Certificates near expiry are renewed by the runtime, without re-pairing."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mesh.identity import Identity
from mesh.limits import CERT_RENEW_BEFORE_MS, DEFAULT_CERT_TTL_MS
from mesh.membership.records import READ, WRITE, issue_certificate, issue_revocation
from nodes.renewal import renewals_due
from tests.nodes.processes import free_port, run, runtime_process, wait_until
from tests.support import NOW, Mesh, new_mesh, seeded_identity

DAY = 24 * 3600 * 1000
CAPS = frozenset({READ, WRITE})


def short_lived(mesh: Mesh, n: int, days: int, name: str) -> Identity:
    identity = seeded_identity(n)
    cert = issue_certificate(
        mesh.root, mesh.mesh_id, identity.public_key, CAPS, NOW, NOW + days * DAY, name
    )
    mesh.runtime.engine.admit(cert, NOW)
    return identity


def test_due_certificates_of_active_devices_are_renewed_with_the_same_caps() -> None:
    mesh = new_mesh()
    soon = short_lived(mesh, 20, 40, "soon")
    short_lived(mesh, 21, 200, "later")
    revoked = short_lived(mesh, 23, 40, "revoked")
    mesh.runtime.engine.revoke(
        issue_revocation(mesh.root, mesh.mesh_id, revoked.public_key, NOW), NOW
    )
    phone = mesh.open_device(soon)
    now = NOW + 40 * DAY - CERT_RENEW_BEFORE_MS + 1
    seen = {soon.public_key: now - DAY}
    membership = mesh.runtime.replica.membership
    due = renewals_due(membership, mesh.root, seen.get, now)
    names = {c.name for c in due}
    assert "soon" in names and "later" not in names and "revoked" not in names
    for cert in due:
        assert cert.caps == membership.member(cert.subject).caps  # type: ignore[union-attr]
        assert cert.expires_ms == now + DEFAULT_CERT_TTL_MS
        mesh.runtime.engine.admit(cert, now)
    # After the old expiry the runtime still admits the phone, which learns the renewal.
    after = NOW + 41 * DAY
    assert mesh.runtime.engine.admissible(soon.public_key, after)
    assert mesh.connect(phone, after)
    mesh.settle(after)
    assert phone.replica.membership.member(soon.public_key).cert.expires_ms > after  # type: ignore[union-attr]
    # Renewing again right away finds nothing due: renewal is idempotent.
    assert not [c for c in renewals_due(membership, mesh.root, seen.get, now) if c.name == "soon"]


def test_a_device_away_too_long_is_left_to_expire_but_the_runtime_never_is() -> None:
    mesh = new_mesh()
    gone = short_lived(mesh, 30, 120, "gone")
    now = NOW + 120 * DAY - 1
    due = renewals_due(mesh.runtime.replica.membership, mesh.root, lambda key: None, now)
    subjects = {c.subject for c in due}
    assert gone.public_key not in subjects  # joined 120 days ago, never seen since
    # The runtime's own certificate (a year) is renewed once it is due, seen or not.
    late = NOW + DEFAULT_CERT_TTL_MS - 1
    due = renewals_due(mesh.runtime.replica.membership, mesh.root, lambda key: None, late)
    assert mesh.runtime.key in {c.subject for c in due}


def test_the_runtime_process_renews_a_short_certificate_at_start(tmp_path: Path) -> None:
    rt_dir = tmp_path / "runtime"
    run("init", "--data-dir", str(rt_dir))
    device = Identity.generate()
    run(
        "devices",
        "add",
        device.peer_id,
        "--ttl-days",
        "1",
        "--name",
        "tab",
        "--data-dir",
        str(rt_dir),
    )

    def expiry() -> int:
        rows = json.loads(run("devices", "--json", "--data-dir", str(rt_dir)).stdout)
        return int(next(r["expires_ms"] for r in rows if r["name"] == "tab"))

    assert expiry() < time.time() * 1000 + 2 * DAY
    runtime = runtime_process(rt_dir, free_port(), tmp_path / "logs")
    runtime.start()
    runtime.read_line_with("listening")
    wait_until("the certificate is renewed", lambda: expiry() > time.time() * 1000 + 300 * DAY)
    assert runtime.stop() == 0


def test_without_the_root_key_the_runtime_renews_devices_but_not_admins() -> None:
    from mesh.membership.records import ADMIN

    mesh = new_mesh()
    plain = short_lived(mesh, 40, 10, "plain")
    admin = seeded_identity(41)
    mesh.runtime.engine.admit(
        issue_certificate(
            mesh.root, mesh.mesh_id, admin.public_key, CAPS | {ADMIN}, NOW, NOW + 10 * DAY, "adm"
        ),
        NOW,
    )
    now = NOW + DAY
    due = renewals_due(mesh.runtime.replica.membership, mesh.runtime.identity, lambda k: now, now)
    assert {c.subject for c in due} == {plain.public_key}
    assert due[0].issuer == mesh.runtime.key
    mesh.runtime.engine.admit(due[0], now)  # the log accepts the runtime's renewal
