"""Notifications: the runtime raises them, each device dismisses them in its own document.

* The runtime writes ``agent/notifications/<id>`` = ``{"id", "text", "ts",
  "task"?}`` (only holders of ``runtime`` write ``agent``).
* A device dismisses one in ``device/<peer id>/acks/<id>`` =
  ``{"state": "dismissed", "ts"}``: its own document, so it works offline and
  every peer learns who dismissed what.
* A notification is dismissed everywhere once any member device dismissed it
  (``view``); a non-member's document counts for nothing.

Functions take a ``transact`` callable (``nodes.app.Transact``). No click, trio
or libp2p here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycrdt import Map

from crdt_state.schema import AGENT, DEVICE_PREFIX, device_doc
from mesh.identity import peer_id_of, public_key_of_peer_id
from mesh.limits import MAX_AGENT_TEXT_BYTES
from nodes.app import Transact, finite_int, new_id
from nodes.errors import NodeError, NotFound

if TYPE_CHECKING:
    from crdt_state.replica import Replica

NOTIFICATIONS_ROOT = "notifications"
ACKS_ROOT = "acks"
DISMISSED = "dismissed"


class UnknownNotification(NotFound):
    """No notification with that id in this replica."""


def _clip(text: str) -> str:
    data = text.encode()[:MAX_AGENT_TEXT_BYTES]
    return data.decode("utf-8", "ignore")


def raise_notification(
    transact: Transact, text: str, now_ms: int, *, task: str | None = None
) -> str:
    """Runtime: add a notification; returns its id."""
    if not text.strip():
        raise NodeError("a notification needs text")
    notification_id = new_id(now_ms)
    value: dict[str, Any] = {"id": notification_id, "text": _clip(text), "ts": now_ms}
    if task is not None:
        value["task"] = task
    with transact(AGENT) as ydoc:
        ydoc.get(NOTIFICATIONS_ROOT, type=Map)[notification_id] = value
    return notification_id


def dismiss(
    transact: Transact, replica: Replica, me_key: bytes, notification_id: str, now_ms: int
) -> None:
    """Device: dismiss a notification (on every device) from this device's own document."""
    if not isinstance(_notifications(replica).get(notification_id), dict):
        raise UnknownNotification(
            f"no notification {notification_id!r} (not raised, or not synced yet)"
        )
    with transact(device_doc(peer_id_of(me_key))) as ydoc:
        ydoc.get(ACKS_ROOT, type=Map)[notification_id] = {"state": DISMISSED, "ts": now_ms}


def view(replica: Replica, *, include_dismissed: bool = False) -> list[dict[str, Any]]:
    """Notifications, oldest first, each with the member devices that dismissed it."""
    dismissed_by: dict[str, list[str]] = {}
    for name in sorted(replica.docs):
        if not name.startswith(DEVICE_PREFIX):
            continue
        device = name[len(DEVICE_PREFIX) :]
        try:
            key = public_key_of_peer_id(device)
        except ValueError:
            continue
        if replica.membership.member(key) is None:
            continue
        acks: Map[Any] = replica.docs[name].get(ACKS_ROOT, type=Map)
        for notification_id, ack in acks.items():
            if isinstance(ack, dict) and ack.get("state") == DISMISSED:
                dismissed_by.setdefault(notification_id, []).append(device)
    rows = []
    for notification_id, value in sorted(_notifications(replica).items()):
        if not isinstance(value, dict):
            continue
        by = dismissed_by.get(notification_id, [])
        if by and not include_dismissed:
            continue
        rows.append(
            {
                "id": notification_id,
                "text": str(value.get("text", "")),
                "ts": finite_int(value.get("ts")),
                "task": value.get("task"),
                "dismissed": bool(by),
                "dismissed_by": by,
            }
        )
    return rows


def _notifications(replica: Replica) -> Map[Any]:
    root: Map[Any] = replica.doc(AGENT).get(NOTIFICATIONS_ROOT, type=Map)
    return root
