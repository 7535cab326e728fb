"""The document set: names, typed roots, and who may write each document.

* ``shared``: what users write (messages, task requests, memory) — ``write``.
* ``agent``: what the agent writes (replies, task states, approval requests,
  notifications) — ``runtime``.
* ``device/<peer id>``: one per device (approval decisions, notification acks
  and dismissals) — that device alone.

Every root is a ``Map`` keyed by a string id holding plain values, never an
``Array`` of ``Map``s (slow) and never ``Text`` edits (byte offsets, pycrdt #308).
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map

from crdt_state.errors import UnknownDocument
from mesh.identity import peer_id_of, public_key_of_peer_id
from mesh.membership.records import RUNTIME, WRITE

SHARED = "shared"
AGENT = "agent"
DEVICE_PREFIX = "device/"

ROOTS: dict[str, tuple[str, ...]] = {
    SHARED: ("messages", "tasks", "memory"),
    AGENT: ("replies", "tasks", "approvals", "notifications"),
    DEVICE_PREFIX: ("decisions", "acks"),
}


_ROOT_NAMES = {kind: frozenset(r.encode() for r in names) for kind, names in ROOTS.items()}


def root_names(doc: str) -> frozenset[bytes]:
    """UTF-8 names of the roots an update to ``doc`` may write."""
    return _ROOT_NAMES[kind_of(doc)]


def device_doc(peer_id: str) -> str:
    """Name of the per-device document of ``peer_id``."""
    return DEVICE_PREFIX + peer_id


def kind_of(doc: str) -> str:
    """``shared``, ``agent`` or ``device/``; raises UnknownDocument otherwise."""
    if doc in (SHARED, AGENT):
        return doc
    if doc.startswith(DEVICE_PREFIX):
        try:
            public_key_of_peer_id(doc[len(DEVICE_PREFIX) :])
        except ValueError as exc:
            raise UnknownDocument(f"{doc!r}: not a device document") from exc
        return DEVICE_PREFIX
    raise UnknownDocument(f"{doc!r} is not a document of the schema")


def may_write(doc: str, author: bytes, caps: frozenset[str]) -> bool:
    """Whether ``author`` holding ``caps`` may write ``doc``."""
    kind = kind_of(doc)
    if kind == SHARED:
        return WRITE in caps
    if kind == AGENT:
        return RUNTIME in caps
    return bool(caps) and doc == device_doc(peer_id_of(author))


def new_doc(doc: str, client_id: int) -> Doc[Any]:
    """A pycrdt document for ``doc`` with its roots declared."""
    ydoc: Doc[Any] = Doc(client_id=client_id)
    for root in ROOTS[kind_of(doc)]:
        ydoc.get(root, type=Map)
    return ydoc


def roots(ydoc: Doc[Any], doc: str) -> dict[str, Map]:  # type: ignore[type-arg]
    """The typed roots of ``ydoc``."""
    return {root: ydoc.get(root, type=Map) for root in ROOTS[kind_of(doc)]}
