"""A task's record in ``agent/tasks``, and the context that journals its tool calls there.

``agent/tasks/<task id>`` = ``{"id", "agent", "state", "started_ts", "ts",
"progress", "steps", "reply"?, "error"?}``. ``state`` is ``running``,
``waiting`` (for an approval), then ``done``, ``failed`` or ``cancelled``.
``steps`` journals every tool call in order: ``{"tool", "args_sha256",
"state", "approval"?, "result"?}``, ``state`` being ``awaiting`` (approval
asked), ``running``, ``done`` or ``failed``.

A runtime restarted while a task was unfinished runs its agent again. The
context replays the journal: a call with the same tool and arguments at the
same step returns its recorded result and runs nothing. A sensitive call whose
approval was spent (``used_ts``) but has no result was cut off mid-action; it
is never run again and fails instead. An agent that asks for something else
at a step than it did before (an LLM may) drops the rest of the journal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from pycrdt import Doc, Map

from crdt_state.schema import AGENT
from mesh.limits import APPROVAL_TIMEOUT_MS, MAX_AGENT_STEPS, MAX_AGENT_TEXT_BYTES
from nodes import approvals, notifications
from nodes.agent.base import Job, ToolSpec
from nodes.agent.errors import ApprovalRefused, ToolError, TooManySteps
from nodes.agent.tools import Tool

if TYPE_CHECKING:
    from crdt_state.replica import Replica

TASKS_ROOT = "tasks"
REPLIES_ROOT = "replies"
RUNNING = "running"
WAITING = "waiting"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({DONE, FAILED, CANCELLED})


class Desk(Protocol):
    """What the journal needs from the runtime (the runner provides it)."""

    replica: Replica

    def transact(self, doc: str) -> AbstractContextManager[Doc[Any]]: ...

    def now(self) -> int: ...

    async def durable(self) -> None:
        """Until everything written so far is committed."""
        ...

    async def changed(self, deadline_ms: int | None) -> None:
        """Until the replica may have changed, or ``deadline_ms`` (runtime clock) passed."""
        ...


def clip(text: str) -> str:
    """``text`` cut to MAX_AGENT_TEXT_BYTES of UTF-8."""
    return text.encode()[:MAX_AGENT_TEXT_BYTES].decode("utf-8", "ignore")


def args_digest(args: Mapping[str, Any]) -> str:
    """SHA-256 of a call's arguments as canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: Longest text shown for one argument in an approval request (the hash covers it all).
_SHOWN_CHARS = 300


def describe(args: Mapping[str, Any]) -> str:
    """A call's arguments for an approver: each in full if short, else its start, size
    and SHA-256 (``args_sha256`` binds the approval to the exact arguments)."""
    shown: dict[str, Any] = {}
    for key, value in sorted(args.items()):
        shown[key] = value
        if isinstance(value, str) and len(value) > _SHOWN_CHARS:
            data = value.encode()
            digest = hashlib.sha256(data).hexdigest()[:16]
            shown[key] = f"{value[:_SHOWN_CHARS]}... ({len(data)} bytes, sha256 {digest}...)"
    return clip(json.dumps(shown, ensure_ascii=False))


def record(replica: Replica, task_id: str) -> dict[str, Any] | None:
    """The task's record as this replica holds it."""
    value = _tasks(replica).get(task_id)
    return dict(value) if isinstance(value, dict) else None


def write_record(desk: Desk, value: dict[str, Any]) -> None:
    value["ts"] = desk.now()
    with desk.transact(AGENT) as ydoc:
        ydoc.get(TASKS_ROOT, type=Map)[value["id"]] = value


def write_reply(desk: Desk, task_id: str, text: str) -> str:
    """Add the agent's reply to ``agent/replies``; returns its id."""
    from nodes.app import new_id

    reply_id = new_id(desk.now())
    with desk.transact(AGENT) as ydoc:
        ydoc.get(REPLIES_ROOT, type=Map)[reply_id] = {
            "id": reply_id,
            "task": task_id,
            "text": clip(text),
            "ts": desk.now(),
        }
    return reply_id


class TaskContext:
    """The ``Context`` of one task: tools with approvals, journaled in the task's record."""

    def __init__(self, desk: Desk, job: Job, tools: Mapping[str, Tool], value: dict[str, Any]):
        self._desk = desk
        self._job = job
        self._tools = tools
        self.value = value
        self._step = 0

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.spec for tool in self._tools.values())

    def _save(self) -> None:
        write_record(self._desk, self.value)

    def _set_step(self, index: int, step: dict[str, Any]) -> None:
        steps = list(self.value.get("steps", []))
        self.value["steps"] = [*steps[:index], step]
        self._save()

    async def progress(self, text: str) -> None:
        self.value["progress"] = clip(text)
        self._save()

    async def notify(self, text: str) -> None:
        notifications.raise_notification(
            self._desk.transact, text, self._desk.now(), task=self._job.task_id
        )

    async def call_tool(self, name: str, args: Mapping[str, Any]) -> str:
        index = self._step
        self._step += 1
        if index >= MAX_AGENT_STEPS:
            raise TooManySteps(f"more than {MAX_AGENT_STEPS} tool calls")
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(f"no tool named {name!r}")
        digest = args_digest(args)
        steps = self.value.get("steps", [])
        earlier = steps[index] if index < len(steps) else None
        if not (
            isinstance(earlier, dict)
            and earlier.get("tool") == name
            and earlier.get("args_sha256") == digest
        ):
            earlier = None
        if earlier is not None and earlier.get("state") == "done":
            return str(earlier.get("result", ""))
        if earlier is not None and earlier.get("state") == "failed":
            raise ToolError(str(earlier.get("result", "failed")))
        step: dict[str, Any] = {"tool": name, "args_sha256": digest}
        if tool.spec.sensitive:
            step["approval"] = await self._approved(index, step, earlier, args)
        step["state"] = "running"
        self._set_step(index, step)
        try:
            result = clip(await tool.run(args))
        except ToolError as exc:
            self._set_step(index, {**step, "state": "failed", "result": clip(str(exc))})
            raise
        self._set_step(index, {**step, "state": "done", "result": result})
        return result

    async def _approved(
        self, index: int, step: dict[str, Any], earlier: dict[str, Any] | None, args: Any
    ) -> str:
        """Ask for (or find) this call's approval, wait for the verdict, spend its nonce."""
        desk = self._desk
        approval_id = earlier.get("approval") if earlier is not None else None
        current = approvals.approval(desk.replica, approval_id) if approval_id else None
        if current is None:
            details = describe(args)
            approval_id = approvals.request_approval(
                desk.transact,
                step["tool"],
                clip(details),
                desk.now(),
                expires_ms=desk.now() + APPROVAL_TIMEOUT_MS,
                args_sha256=step["args_sha256"],
                nonce=os.urandom(16).hex(),
            )
            await self.notify(f"approval needed: {step['tool']} {clip(details)[:200]}")
        assert isinstance(approval_id, str)
        self._set_step(index, {**step, "state": "awaiting", "approval": approval_id})
        self.value["state"] = WAITING
        self._save()
        verdict = await self._verdict(approval_id)
        self.value["state"] = RUNNING
        refusal = None
        if verdict.get("state") != approvals.APPROVED:
            who = verdict.get("decided_by")
            refusal = f"{step['tool']} was {verdict.get('state')}" + (f" by {who}" if who else "")
        elif verdict.get("used_ts") is not None:
            refusal = f"{step['tool']} was cut off by a restart once approved; not run again"
        if refusal is not None:
            self._set_step(
                index, {**step, "state": "failed", "approval": approval_id, "result": refusal}
            )
            raise ApprovalRefused(refusal)
        approvals.mark_used(desk.transact, desk.replica, approval_id, desk.now())
        self._save()
        await desk.durable()  # the nonce is spent on disk before the action runs
        spent = approvals.approval(desk.replica, approval_id)
        if spent is None or spent.get("used_ts") is None:  # never run an unspent approval
            raise ToolError(f"{step['tool']}: its approval could not be marked used")
        return approval_id

    async def _verdict(self, approval_id: str) -> dict[str, Any]:
        desk = self._desk
        while True:
            current = approvals.approval(desk.replica, approval_id)
            if current is None:  # pragma: no cover - we wrote it; agent is ours alone
                raise ToolError(f"approval {approval_id} vanished")
            if current.get("state") != approvals.PENDING:
                return current
            if approvals.expired(current, desk.now()):
                approvals.resolve(desk.replica, desk.transact, desk.now())
                continue
            await desk.changed(approvals.deadline(current))


def _tasks(replica: Replica) -> Map[Any]:
    root: Map[Any] = replica.doc(AGENT).get(TASKS_ROOT, type=Map)
    return root
