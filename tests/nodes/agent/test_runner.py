"""The agent runner on a runtime: real engines and drivers over in-memory trio streams.

The runtime and a phone (read, write, approve) each run an ``EngineDriver``;
the runtime also runs the ``AgentRunner`` with the built-in agent and the
approvals resolver, as ``agentmesh runtime`` does. Time is trio's MockClock
(autojump), so approval expiry is exercised without waiting.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from pycrdt import Map

from crdt_state.schema import AGENT, SHARED
from mesh.limits import APPROVAL_TIMEOUT_MS
from mesh.membership.records import APPROVE, READ, WRITE
from mesh.transport.memory import memory_stream_pair
from nodes import app, approvals, notifications
from nodes.agent import chat, journal, views
from nodes.agent.base import Context, Job, Turn
from nodes.agent.builtin import BuiltinAgent
from nodes.agent.errors import LLMError
from nodes.agent.runner import AgentRunner
from nodes.agent.tools import Tool, builtin_tools
from nodes.approvals_service import attach_resolver
from nodes.driver import EngineDriver
from tests.support import NOW, Mesh, Node, new_mesh, seeded_identity


@dataclass
class Scene:
    mesh: Mesh
    phone: Node
    runtime: EngineDriver
    phone_driver: EngineDriver
    runner: AgentRunner
    workspace: Path
    nursery: trio.Nursery
    runner_scope: trio.CancelScope

    def restart_runner(self, tools: dict[str, Tool] | None = None) -> None:
        """Stop the runner as a crash would (no record written), then start a new one."""
        self.runner_scope.cancel()
        self.runner = AgentRunner(self.runtime, BuiltinAgent(), tools or self.runner.tools)
        self.runner_scope = trio.CancelScope()
        self.nursery.start_soon(_run_in, self.runner, self.runner_scope)

    def add_task(self, text: str) -> str:
        return app.add_task(self.phone_driver.transact, self.phone.peer_id, text, self.now())

    def now(self) -> int:
        return self.runtime.clock()

    def task(self, task_id: str) -> dict[str, Any] | None:
        """The task's record as the phone holds it."""
        return journal.record(self.phone.replica, task_id)

    def reply(self, task_id: str) -> str | None:
        value = self.task(task_id)
        if value is None or "reply" not in value:
            return None
        replies: Map[Any] = self.phone.replica.doc(AGENT).get("replies", type=Map)
        reply = replies.get(value["reply"])
        return None if reply is None else str(reply["text"])

    def decide(self, approval_id: str, decision: str) -> None:
        approvals.decide(
            self.phone_driver.transact,
            self.phone.replica,
            self.phone.key,
            approval_id,
            decision,
            self.now(),
        )
        self.phone_driver.kick()


def mock_clock_ms() -> int:
    return NOW + int(trio.current_time() * 1000)


async def until(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds; the MockClock jumps ahead whenever every task waits."""
    with trio.fail_after(2 * APPROVAL_TIMEOUT_MS / 1000):
        while not condition():
            await trio.testing.wait_all_tasks_blocked()
            if not condition():
                await trio.sleep(60)  # virtual time: lets deadlines (approval expiry) pass


async def _run_in(runner: AgentRunner, scope: trio.CancelScope) -> None:
    with scope:
        await runner.run()


@asynccontextmanager
async def scene(tmp_path: Path, agent: Any = None) -> AsyncIterator[Scene]:
    mesh = new_mesh()
    phone = mesh.add_device(seeded_identity(10), frozenset({READ, WRITE, APPROVE}), name="phone")
    runtime = EngineDriver(mesh.runtime.engine, clock=mock_clock_ms)
    phone_driver = EngineDriver(phone.engine, clock=mock_clock_ms)
    workspace = tmp_path / "workspace"
    tools = builtin_tools(mesh.runtime.replica, runtime.transact, workspace, runtime.clock)
    runner = AgentRunner(runtime, agent or BuiltinAgent(), tools)
    attach_resolver(runtime)
    async with trio.open_nursery() as nursery:
        at_phone, at_runtime = memory_stream_pair(phone.key, mesh.runtime.key)
        for task in (runtime.run, phone_driver.run):
            nursery.start_soon(task)
        scope = trio.CancelScope()
        nursery.start_soon(_run_in, runner, scope)
        nursery.start_soon(runtime.run_session, at_runtime)
        nursery.start_soon(phone_driver.run_session, at_phone)
        yield Scene(mesh, phone, runtime, phone_driver, runner, workspace, nursery, scope)
        nursery.cancel_scope.cancel()


def pending_approval(s: Scene) -> str | None:
    for row in approvals.view(s.phone.replica):
        if row["state"] == approvals.PENDING:
            return str(row["id"])
    return None


async def test_a_task_is_answered_and_every_device_hears_of_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path) as s:
        task_id = s.add_task("remember color = blue\nhello there")
        await until(lambda: s.reply(task_id) is not None)
        assert s.reply(task_id) == "remembered color\nnoted: hello there"
        value = s.task(task_id)
        assert value is not None and value["state"] == journal.DONE
        assert [step["tool"] for step in value["steps"]] == ["remember"]
        memory: Map[Any] = s.phone.replica.doc(SHARED).get("memory", type=Map)
        await until(lambda: "color" in memory)
        assert memory["color"]["value"] == "blue"
        await until(lambda: bool(notifications.view(s.phone.replica)))
        assert notifications.view(s.phone.replica)[0]["task"] == task_id


@pytest.mark.parametrize("decision", ["approve", "deny"])
async def test_a_sensitive_call_runs_only_once_approved(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, decision: str
) -> None:
    async with scene(tmp_path) as s:
        task_id = s.add_task("write notes.txt: buy milk")
        await until(lambda: pending_approval(s) is not None)
        approval_id = pending_approval(s)
        assert approval_id is not None
        waiting = s.task(task_id)
        assert waiting is not None and waiting["state"] == journal.WAITING
        assert not (s.workspace / "notes.txt").exists()
        row = approvals.view(s.phone.replica)[0]
        assert row["action"] == "write_file"
        args = {"content": "buy milk", "name": "notes.txt"}
        assert row["args_sha256"] == journal.args_digest(args)
        assert any("approval needed" in n["text"] for n in notifications.view(s.phone.replica))

        s.decide(approval_id, decision)
        await until(lambda: s.reply(task_id) is not None)
        if decision == "approve":
            assert (s.workspace / "notes.txt").read_text() == "buy milk"
            assert s.reply(task_id) == "wrote 8 bytes to notes.txt"
            used = approvals.approval(s.mesh.runtime.replica, approval_id)
            assert used is not None and used["used_ts"] is not None
        else:
            assert not (s.workspace / "notes.txt").exists()
            assert s.reply(task_id) == (
                f"write: refused (write_file was denied by {s.phone.peer_id})"
            )


async def test_an_unanswered_approval_expires_and_nothing_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path) as s:
        task_id = s.add_task("write late.txt: too late")
        await until(lambda: pending_approval(s) is not None)
        approval_id = pending_approval(s)
        assert approval_id is not None
        await until(lambda: s.reply(task_id) is not None)
        assert s.now() >= NOW + APPROVAL_TIMEOUT_MS
        assert s.reply(task_id) == "write: refused (write_file was expired)"
        assert not (s.workspace / "late.txt").exists()
        # A decision after the deadline changes nothing.
        with pytest.raises(Exception, match="no longer pending"):
            s.decide(approval_id, "approve")


async def test_a_cancelled_task_stops(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path) as s:
        task_id = s.add_task("write a.txt: x")
        await until(lambda: pending_approval(s) is not None)
        app.cancel_task(s.phone_driver.transact, s.phone.peer_id, task_id, s.now())
        s.phone_driver.kick()
        await until(lambda: (s.task(task_id) or {}).get("state") == journal.CANCELLED)
        assert not (s.workspace / "a.txt").exists()


class Broken:
    name = "broken"

    async def run(self, job: Job, context: Context) -> str:
        raise RuntimeError("a plugin bug")


async def test_a_failing_agent_fails_its_task_not_the_runtime(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path, Broken()) as s:
        first, second = s.add_task("one"), s.add_task("two")
        tasks = (first, second)
        await until(lambda: all((s.task(t) or {}).get("state") == journal.FAILED for t in tasks))
        value = s.task(first)
        assert value is not None and "a plugin bug" in value["error"]


async def test_a_task_that_asks_to_fail_fails_with_its_reason(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path) as s:
        task_id = s.add_task("noted first\nfail the disk is full")
        await until(lambda: (s.task(task_id) or {}).get("state") == journal.FAILED)
        value = s.task(task_id)
        assert value is not None and value["error"] == "the disk is full"


async def test_a_restarted_runner_resumes_without_asking_twice(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path) as s:
        task_id = s.add_task("remember step = one\nwrite resumed.txt: after restart")
        await until(lambda: pending_approval(s) is not None)
        approval_id = pending_approval(s)
        assert approval_id is not None
        s.restart_runner()
        await until(lambda: (s.task(task_id) or {}).get("state") == journal.WAITING)
        s.decide(approval_id, "approve")
        await until(lambda: s.reply(task_id) is not None)
        assert s.reply(task_id) == "remembered step\nwrote 13 bytes to resumed.txt"
        assert [row["id"] for row in approvals.view(s.phone.replica)] == [approval_id]
        assert (s.workspace / "resumed.txt").read_text() == "after restart"


async def test_an_approved_action_cut_off_by_a_crash_never_runs_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[dict[str, Any]] = []
    started = trio.Event()

    async def hangs(args: Any) -> str:
        calls.append(dict(args))
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with scene(tmp_path) as s:
        write_file = s.runner.tools["write_file"]
        s.runner.tools["write_file"] = Tool(write_file.spec, hangs)
        task_id = s.add_task("write once.txt: only once")
        await until(lambda: pending_approval(s) is not None)
        approval_id = pending_approval(s)
        assert approval_id is not None
        s.decide(approval_id, "approve")
        await started.wait()  # the action runs: its nonce is spent and committed
        s.restart_runner()  # ... and the runtime dies in the middle of it
        await until(lambda: s.reply(task_id) is not None)
        assert len(calls) == 1
        reply = s.reply(task_id)
        assert reply is not None and "cut off by a restart" in reply


class Gate:
    """An agent that holds every task until released, counting how many run at once."""

    name = "gate"

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.release = trio.Event()

    async def run(self, job: Job, context: Context) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await self.release.wait()
        self.running -= 1
        return f"done {job.text}"


async def test_at_most_max_running_tasks_run_at_once_and_all_finish(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("nodes.agent.runner.MAX_RUNNING_TASKS", 2)
    gate = Gate()
    async with scene(tmp_path, gate) as s:
        ids = [s.add_task(f"t{i}") for i in range(5)]
        await until(lambda: gate.running == 2)
        await trio.testing.wait_all_tasks_blocked()
        assert len(s.runner._running) == 2  # the other three are not even started
        gate.release.set()
        await until(lambda: all(s.reply(t) is not None for t in ids))
        assert gate.peak == 2
        assert [s.reply(t) for t in ids] == [f"done t{i}" for i in range(5)]


class Parrot:
    """A chat agent: repeats the last message; remembers every conversation it was given."""

    name = "parrot"

    def __init__(self, fail_on: str = "") -> None:
        self.conversations: list[list[Turn]] = []
        self.fail_on = fail_on

    async def run(self, job: Job, context: Context) -> str:
        return "a task"

    async def reply(self, conversation: Sequence[Turn]) -> str:
        self.conversations.append(list(conversation))
        if conversation[-1].text == self.fail_on:
            raise LLMError("the endpoint is down")
        return f"you said {conversation[-1].text}"


def chat_rows(s: Scene) -> list[tuple[str, str]]:
    return [(row["role"], row["text"]) for row in chat.view(s.phone.replica)]


async def test_a_chat_agent_answers_each_message_in_order_with_the_conversation(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    parrot = Parrot(fail_on="boom")
    async with scene(tmp_path, parrot) as s:
        for number, text in enumerate(("hello", "boom", "again"), 1):
            app.send_message(s.phone_driver.transact, s.phone.peer_id, text, s.now())
            s.phone_driver.kick()
            await until(lambda n=number: len(chat_rows(s)) == 2 * n)
            await trio.sleep(1)  # MockClock: a second apart, whatever new_id's counter does
        assert chat_rows(s) == [
            ("user", "hello"),
            ("assistant", "you said hello"),
            ("user", "boom"),
            ("assistant", "(no answer: the endpoint is down)"),
            ("user", "again"),
            ("assistant", "you said again"),
        ]
        last = parrot.conversations[-1]
        assert [t.role for t in last] == ["user", "assistant", "user", "assistant", "user"]
        # A restarted runner answers nothing twice (a failed answer is an answer too).
        s.runner_scope.cancel()
        again = AgentRunner(s.runtime, parrot, s.runner.tools)
        s.nursery.start_soon(again.run)
        await trio.testing.wait_all_tasks_blocked()
        assert len(parrot.conversations) == 3


async def test_malformed_task_requests_from_a_member_are_skipped_or_refused(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path) as s:
        # A member writing shared/tasks directly, around `agentmesh task add`'s checks.
        with s.phone_driver.transact(SHARED) as ydoc:
            tasks = ydoc.get("tasks", type=Map)
            tasks["not-a-dict"] = "hello"
            tasks["no-text"] = {"id": "no-text", "text": 42}
            tasks["huge"] = {"id": "huge", "text": "x" * (app.MAX_TEXT_BYTES + 1)}
            tasks["k" * (app.MAX_ID_BYTES + 1)] = {"text": "an id too long to repeat"}
            tasks["bad-ts"] = {"id": "bad-ts", "text": "", "ts": float("inf")}
        fine = s.add_task("hello after them")
        s.phone_driver.kick()
        await until(lambda: s.reply(fine) is not None)
        await until(lambda: (s.task("huge") or {}).get("state") == journal.FAILED)
        huge = s.task("huge")
        assert huge is not None and "longer than" in huge["error"]
        assert s.task("not-a-dict") is None and s.task("no-text") is None
        assert s.task("k" * (app.MAX_ID_BYTES + 1)) is None
        rows = {row["id"]: row for row in views.tasks(s.phone.replica)}  # listing never raises
        assert rows["bad-ts"]["requested_ts"] is None


class Mute:
    name = "mute"

    async def run(self, job: Job, context: Context) -> Any:
        return 42


async def test_a_plugin_answering_something_else_than_text_fails_its_task(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with scene(tmp_path, Mute()) as s:
        task_id = s.add_task("anything")
        await until(lambda: (s.task(task_id) or {}).get("state") == journal.FAILED)
        value = s.task(task_id)
        assert value is not None and "answered int, not text" in value["error"]


def test_an_approver_sees_long_arguments_summarised_and_bound_by_their_hash() -> None:
    content = "line\n" * 10_000
    shown = json.loads(journal.describe({"name": "big.txt", "content": content}))
    assert shown["name"] == "big.txt"
    assert "(50000 bytes, sha256 " in shown["content"]
    assert len(shown["content"]) < 400


async def test_a_pass_looks_only_at_the_tasks_a_change_touched(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scene(tmp_path) as s:
        old = [s.add_task(f"old {i}") for i in range(20)]
        await until(lambda: all(s.reply(t) is not None for t in old))
        looked: list[str] = []
        real = journal.record

        def counting(replica: Any, task_id: str) -> Any:
            looked.append(task_id)
            return real(replica, task_id)

        monkeypatch.setattr(journal, "record", counting)
        new = s.add_task("new")
        await until(lambda: s.reply(new) is not None)
        assert new in looked
        assert not set(looked) & set(old)  # finished tasks are not read again
