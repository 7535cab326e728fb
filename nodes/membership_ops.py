"""Issuing and committing membership records from the runtime's data dir."""

from __future__ import annotations

from mesh.identity import Identity, public_key_of_peer_id
from mesh.membership.records import (
    Certificate,
    Revocation,
    issue_certificate,
    issue_revocation,
)
from nodes.datadir import DataDir
from nodes.errors import NodeError


def parse_device_key(text: str) -> bytes:
    """A device key given as a PeerId (12D3Koo...) or 64 hex digits."""
    text = text.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        return public_key_of_peer_id(text)
    except ValueError as exc:
        raise NodeError(f"{text!r} is neither a PeerId nor a hex Ed25519 public key") from exc


def root_identity(datadir: DataDir) -> Identity:
    if not datadir.root_key.exists():
        raise NodeError(f"{datadir.path}: no mesh root key here (run this on the runtime)")
    return Identity.load(datadir.root_key)


def issuer_identity(datadir: DataDir) -> Identity:
    """Who signs records made here: the mesh root on the runtime, else this device's key.

    A device's records count only if it holds ``admin`` (the runtime's log checks).
    """
    if datadir.root_key.exists():
        return root_identity(datadir)
    return Identity.load(datadir.identity_key)


def certificate_for(
    datadir: DataDir,
    mesh_id: bytes,
    subject: bytes,
    caps: frozenset[str],
    name: str,
    now_ms: int,
    ttl_ms: int,
) -> Certificate:
    """A certificate for ``subject`` signed by the mesh root or this admin device."""
    return issue_certificate(
        issuer_identity(datadir), mesh_id, subject, caps, now_ms, now_ms + ttl_ms, name
    )


def revocation_for(datadir: DataDir, mesh_id: bytes, subject: bytes, now_ms: int) -> Revocation:
    return issue_revocation(issuer_identity(datadir), mesh_id, subject, now_ms)
