"""Tasks as a device sees them: each request from ``shared/tasks`` with the agent's record."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycrdt import Map

from crdt_state.schema import AGENT, SHARED
from nodes.agent import journal
from nodes.app import finite_int

if TYPE_CHECKING:
    from crdt_state.replica import Replica

#: A request the agent has not picked up yet (or whose record has not synced here).
REQUESTED = "requested"


def tasks(replica: Replica) -> list[dict[str, Any]]:
    """Every task, oldest first: request, state, progress, reply, error, tool calls."""
    requests: Map[Any] = replica.doc(SHARED).get(journal.TASKS_ROOT, type=Map)
    replies: Map[Any] = replica.doc(AGENT).get(journal.REPLIES_ROOT, type=Map)
    rows = []
    for task_id, request in sorted(requests.items()):
        if not isinstance(request, dict):
            continue
        value = journal.record(replica, task_id) or {}
        reply = replies.get(value["reply"]) if isinstance(value.get("reply"), str) else None
        raw_steps = value.get("steps")
        steps: list[Any] = raw_steps if isinstance(raw_steps, list) else []
        rows.append(
            {
                "id": task_id,
                "text": str(request.get("text", "")),
                "author": request.get("author"),
                "requested_ts": finite_int(request.get("ts")),
                "cancel": request.get("cancel") is True,
                "state": str(value.get("state", REQUESTED)),
                "agent": value.get("agent"),
                "progress": value.get("progress"),
                "updated_ts": finite_int(value.get("ts")),
                "reply": str(reply["text"]) if isinstance(reply, dict) else None,
                "error": value.get("error"),
                "steps": [
                    {
                        "tool": step.get("tool"),
                        "state": step.get("state"),
                        "approval": step.get("approval"),
                        "result": step.get("result"),
                    }
                    for step in steps
                    if isinstance(step, dict)
                ],
            }
        )
    return rows
