"""The runtime's agent runner: one trio task per task in ``shared/tasks``.

An agent that can chat (``ChatAgent``) also answers ``shared/messages``, one
at a time (``chat``). It watches ``shared/tasks`` (every change a device's envelope brings), starts
the agent on each task without a finished record in ``agent/tasks``, oldest
first and at most ``MAX_RUNNING_TASKS`` at once, and cancels one whose request is marked
``cancel``. At start it resumes every unfinished task (see ``journal``). It
runs whether or not any device is online: devices see the results when they
next sync. An agent that raises anything ends its task ``failed``; the runtime
keeps running.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import trio
from pycrdt import Doc, Map

from crdt_state.replica import Replica
from crdt_state.schema import SHARED
from mesh.engine import Accepted, MembershipChanged, Output
from mesh.limits import MAX_RUNNING_TASKS
from nodes.agent import chat, journal
from nodes.agent.base import Agent, ChatAgent, Job
from nodes.agent.errors import AgentError
from nodes.agent.tools import Tool
from nodes.app import MAX_TEXT_BYTES, acceptable_id
from nodes.driver import EngineDriver

log = logging.getLogger("agentmesh.agent")


class AgentRunner:
    """Runs ``agent`` on the runtime behind ``driver``; ``run`` it in the runtime's nursery."""

    def __init__(self, driver: EngineDriver, agent: Agent, tools: Mapping[str, Tool]) -> None:
        self.driver = driver
        self.replica: Replica = driver.engine.replica
        self.agent = agent
        self.tools = dict(tools)
        self._running: dict[str, trio.CancelScope] = {}
        self._change = trio.Event()
        #: Task ids that may need work: all at start, then those a change touched, and
        #: those waiting for a free slot. Keeps a pass O(changes), not O(tasks).
        self._open: set[str] = set()
        self._watched: Any = None
        self._subscription: Any = None
        driver.listeners.append(self._on_output)

    # --- the Desk the journal writes through -----------------------------------------

    def transact(self, doc: str) -> AbstractContextManager[Doc[Any]]:
        return self.driver.transact(doc)

    def now(self) -> int:
        return self.driver.clock()

    async def durable(self) -> None:
        await self.driver.committed()

    async def changed(self, deadline_ms: int | None) -> None:
        change = self._change
        if deadline_ms is None:
            await change.wait()
            return
        with trio.move_on_after(max(0.0, (deadline_ms - self.now()) / 1000)):
            await change.wait()

    def _on_output(self, output: Output) -> None:
        if isinstance(output, Accepted | MembershipChanged):
            self._changed_now()

    def _changed_now(self) -> None:
        self._change.set()
        self._change = trio.Event()

    # --- scheduling ------------------------------------------------------------------------

    async def run(self) -> None:
        """Work on tasks until cancelled."""
        talks = isinstance(self.agent, ChatAgent)
        log.info(
            "agent %s is working on tasks%s", self.agent.name, " and messages" if talks else ""
        )
        async with trio.open_nursery() as nursery:
            if isinstance(self.agent, ChatAgent):
                nursery.start_soon(self._chat, self.agent)
            while True:
                change = self._change
                self._schedule(nursery)
                await change.wait()

    def _requests(self) -> Map[Any]:
        """``shared/tasks``, watched: a changed key is reopened (a new request, a cancel)."""
        ydoc = self.replica.doc(SHARED)
        requests: Map[Any] = ydoc.get(journal.TASKS_ROOT, type=Map)
        if ydoc is not self._watched:  # first time, or the replica rebuilt the document
            self._watched = ydoc
            self._subscription = requests.observe(self._on_requests)  # kept, or it is dropped
            self._open = {str(task_id) for task_id in requests.keys()}  # noqa: SIM118
        return requests

    def _on_requests(self, event: Any) -> None:
        self._open.update(str(key) for key in event.keys)

    def _schedule(self, nursery: trio.Nursery) -> None:
        requests = self._requests()
        for task_id in sorted(self._open):
            self._open.discard(task_id)
            request = requests.get(task_id)
            if not isinstance(request, dict) or not isinstance(request.get("text"), str):
                continue
            if not acceptable_id(task_id):
                continue  # its record would repeat the id: too large to write
            done = journal.record(self.replica, task_id)
            if done is not None and done.get("state") in journal.TERMINAL:
                continue
            scope = self._running.get(task_id)
            if request.get("cancel") is True:
                if scope is not None:
                    scope.cancel()
                else:
                    self._finish(task_id, done, journal.CANCELLED)
                continue
            if scope is None and len(request["text"].encode()) > MAX_TEXT_BYTES:
                error = f"the task's text is longer than {MAX_TEXT_BYTES} bytes"
                self._finish(task_id, done, journal.FAILED, error=error)
                continue
            if scope is not None:
                continue
            # At most MAX_RUNNING_TASKS at once; the rest wait (in ``_open``, not as trio
            # tasks) and start when one ends.
            if len(self._running) < MAX_RUNNING_TASKS:
                job = Job(task_id, request["text"], str(request.get("author", "")))
                self._running[task_id] = trio.CancelScope()
                nursery.start_soon(self._work, job)
            else:
                self._open.add(task_id)

    def _finish(self, task_id: str, value: dict[str, Any] | None, state: str, **extra: Any) -> None:
        value = value if value is not None else self._fresh(task_id)
        clipped = {k: journal.clip(v) if isinstance(v, str) else v for k, v in extra.items()}
        value.update(state=state, **clipped)
        journal.write_record(self, value)
        log.info("task %s %s", task_id, state)

    def _fresh(self, task_id: str) -> dict[str, Any]:
        return {"id": task_id, "agent": self.agent.name, "started_ts": self.now(), "steps": []}

    async def _work(self, job: Job) -> None:
        scope = self._running[job.task_id]
        try:
            value = journal.record(self.replica, job.task_id) or self._fresh(job.task_id)
            value.update(state=journal.RUNNING, agent=self.agent.name)
            journal.write_record(self, value)
            context = journal.TaskContext(self, job, self.tools, value)
            with scope:
                reply = await self._attempt(job, context)
            if scope.cancelled_caught:
                self._finish(job.task_id, context.value, journal.CANCELLED)
            elif isinstance(reply, AgentError):
                self._finish(job.task_id, context.value, journal.FAILED, error=str(reply))
                await context.notify(f"task failed: {journal.clip(job.text)[:200]}")
            else:
                reply_id = journal.write_reply(self, job.task_id, reply)
                self._finish(job.task_id, context.value, journal.DONE, reply=reply_id)
                await context.notify(f"task done: {journal.clip(job.text)[:200]}")
        finally:
            del self._running[job.task_id]
            self._changed_now()  # a slot is free: schedule the next task
            self.driver.kick()

    async def _chat(self, agent: ChatAgent) -> None:
        """Answer every message without a reply, oldest id first, one at a time."""
        messages = chat.messages(self.replica)
        answered = chat.answered(self.replica)
        pending = {m for m, v in messages.items() if chat.is_message(v)} - answered
        wake = [trio.Event()]

        def on_change(event: Any) -> None:
            pending.update(str(key) for key in event.keys)
            wake[0].set()

        subscription = messages.observe(on_change)
        try:
            while True:
                for message_id in sorted(pending - answered):
                    pending.discard(message_id)
                    value = messages.get(message_id)
                    if not acceptable_id(message_id) or not chat.is_message(value):
                        continue
                    turns = chat.conversation(self.replica, message_id)
                    try:
                        text, failed = await agent.reply(turns), False
                        if not isinstance(text, str):
                            raise AgentError(f"answered {type(text).__name__}, not text")
                    except AgentError as exc:
                        text, failed = f"(no answer: {exc})", True
                    except Exception as exc:  # a plugin's bug must not stop the runtime
                        log.exception("agent %s failed on message %s", agent.name, message_id)
                        text, failed = f"(no answer: internal error {exc!r})", True
                    chat.write_reply(self, message_id, text, error=failed)
                    answered.add(message_id)
                    self.driver.kick()
                await wake[0].wait()
                wake[0] = trio.Event()
        finally:
            messages.unobserve(subscription)

    async def _attempt(self, job: Job, context: journal.TaskContext) -> str | AgentError:
        try:
            reply = await self.agent.run(job, context)
        except AgentError as exc:
            return exc
        except Exception as exc:  # a plugin's bug must not stop the runtime
            log.exception("agent %s failed on task %s", self.agent.name, job.task_id)
            return AgentError(f"internal error in agent {self.agent.name}: {exc!r}")
        if not isinstance(reply, str):
            return AgentError(f"agent {self.agent.name} answered {type(reply).__name__}, not text")
        return reply
