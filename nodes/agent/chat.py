"""The conversation: device messages in ``shared/messages``, the agent's replies in ``agent``.

A chat reply is ``agent/replies/<id>`` = ``{"id", "message", "text", "ts"}``
(``message``: the id it answers; a task's reply names ``task`` instead). A
message is answered once a reply names it; an agent that failed writes its
failure as the reply (``"error": true``), so a broken endpoint never loops.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from pycrdt import Map

from crdt_state.schema import AGENT, SHARED
from mesh.limits import MAX_CHAT_TURNS
from nodes.agent.base import Turn
from nodes.agent.journal import REPLIES_ROOT, Desk, clip

if TYPE_CHECKING:
    from crdt_state.replica import Replica

MESSAGES_ROOT = "messages"


def _ts(value: Any) -> float:
    ts = value.get("ts") if isinstance(value, dict) else None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return 0.0
    return float(ts)


def messages(replica: Replica) -> Map[Any]:
    root: Map[Any] = replica.doc(SHARED).get(MESSAGES_ROOT, type=Map)
    return root


def replies(replica: Replica) -> Map[Any]:
    root: Map[Any] = replica.doc(AGENT).get(REPLIES_ROOT, type=Map)
    return root


def is_message(value: Any) -> bool:
    """A device's chat message (other records under ``messages`` are not answered)."""
    return isinstance(value, dict) and isinstance(value.get("text"), str)


def _is_chat_reply(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("message"), str)
        and isinstance(value.get("text"), str)
    )


def answered(replica: Replica) -> set[str]:
    """Ids of the messages that have a reply."""
    return {
        str(value["message"])
        for value in replies(replica).values()
        if isinstance(value, dict) and isinstance(value.get("message"), str)
    }


def _thread(replica: Replica) -> list[tuple[str, str, dict[str, Any]]]:
    """(role, id, value) in conversation order: messages by (ts, id), each followed by
    the replies that answer it (device clocks and the runtime's need not agree)."""
    answers: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
    for reply_id, value in replies(replica).items():
        if _is_chat_reply(value):
            answers.setdefault(value["message"], []).append((_ts(value), reply_id, value))
    ordered = sorted(
        (_ts(value), message_id, value)
        for message_id, value in messages(replica).items()
        if is_message(value)
    )
    out: list[tuple[str, str, dict[str, Any]]] = []
    for _, message_id, value in ordered:
        out.append(("user", message_id, value))
        out.extend(("assistant", rid, rv) for _, rid, rv in sorted(answers.get(message_id, [])))
    return out


def conversation(replica: Replica, upto: str) -> list[Turn]:
    """The last MAX_CHAT_TURNS turns up to and including ``upto``, oldest first (each
    cut to MAX_AGENT_TEXT_BYTES)."""
    turns: list[Turn] = []
    for role, turn_id, value in _thread(replica):
        turns.append(Turn(role, clip(value["text"])))  # a member may write any length
        if turn_id == upto:
            return turns[-MAX_CHAT_TURNS:]
    return []


def write_reply(desk: Desk, message_id: str, text: str, *, error: bool = False) -> str:
    """Answer message ``message_id``; returns the reply's id."""
    from nodes.app import new_id

    reply_id = new_id(desk.now())
    value: dict[str, Any] = {
        "id": reply_id,
        "message": message_id,
        "text": clip(text),
        "ts": desk.now(),
    }
    if error:
        value["error"] = True
    with desk.transact(AGENT) as ydoc:
        ydoc.get(REPLIES_ROOT, type=Map)[reply_id] = value
    return reply_id


def view(replica: Replica) -> list[dict[str, Any]]:
    """The whole conversation in order: each message, then the replies that answer it."""
    rows = []
    for role, turn_id, value in _thread(replica):
        row: dict[str, Any] = {"id": turn_id, "role": role, "text": value["text"]}
        row["ts"] = _ts(value)
        if role == "user":
            row["author"] = value.get("author")
        else:
            row["message"] = value["message"]
            row["error"] = value.get("error") is True
        rows.append(row)
    return rows
