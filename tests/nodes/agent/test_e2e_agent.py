"""The agent in a real ``agentmesh runtime`` process, driven from a real device process.

A phone (read, write, approve) asks for a task with ``agentmesh task add``; the
runtime's agent works on it and asks for approval of its sensitive step; the
phone approves with ``agentmesh approvals approve``; the reply, the file and the
notifications come back. Then the same with ``--agent llm`` against a local stub
of the chat-completions API (real HTTP on 127.0.0.1).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.nodes.agent.llm_stub import StubModel, calls, says
from tests.nodes.processes import (
    NodeProcess,
    device_process,
    free_port,
    kill_leftovers,
    run,
    runtime_process,
    wait_until,
)


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    kill_leftovers()


def _json(*args: str) -> Any:
    return json.loads(run(*args, "--json").stdout)


def start_mesh(tmp_path: Path, *runtime_args: str) -> tuple[Path, Path, NodeProcess, NodeProcess]:
    rt_dir, ph_dir, logs = tmp_path / "runtime", tmp_path / "phone", tmp_path / "logs"
    runtime = runtime_process(rt_dir, free_port(), logs)
    runtime.args += list(runtime_args)
    runtime.start()
    address = runtime.read_line_with("listening")
    phone_id = run("device", "init", "--data-dir", str(ph_dir)).stdout.strip()
    run("devices", "add", phone_id, "--caps", "read,write,approve", "--name", "phone",
        "--data-dir", str(rt_dir))  # fmt: skip
    phone = device_process(ph_dir, address, logs)
    phone.start()
    phone.read_line_with("device")
    return rt_dir, ph_dir, runtime, phone


def task_row(ph_dir: Path, task_id: str) -> dict[str, Any]:
    rows = _json("task", "list", "--data-dir", str(ph_dir))
    return next((row for row in rows if row["id"] == task_id), {})


def pending(ph_dir: Path) -> list[str]:
    rows = _json("approvals", "--data-dir", str(ph_dir))
    return [row["id"] for row in rows if row["state"] == "pending"]


def test_the_builtin_agent_works_on_a_task_approved_from_the_phone(tmp_path: Path) -> None:
    rt_dir, ph_dir, runtime, phone = start_mesh(tmp_path)
    text = "remember color = blue\nwrite hello.txt: hi from the phone"
    task_id = run("task", "add", text, "--data-dir", str(ph_dir)).stdout.strip()
    wait_until("an approval request on the phone", lambda: bool(pending(ph_dir)))
    assert task_row(ph_dir, task_id)["state"] == "waiting"
    assert not (rt_dir / "workspace" / "hello.txt").exists()
    approval_id = pending(ph_dir)[0]
    run("approvals", "approve", approval_id, "--data-dir", str(ph_dir))

    wait_until("the reply on the phone", lambda: task_row(ph_dir, task_id).get("reply") is not None)
    row = task_row(ph_dir, task_id)
    assert row["state"] == "done"
    assert row["reply"] == "remembered color\nwrote 17 bytes to hello.txt"
    assert [step["tool"] for step in row["steps"]] == ["remember", "write_file"]
    assert (rt_dir / "workspace" / "hello.txt").read_text() == "hi from the phone"
    shown = run("task", "show", task_id, "--data-dir", str(ph_dir)).stdout
    assert "step 2: write_file done" in shown

    def done_notice() -> list[dict[str, Any]]:
        rows = _json("notifications", "--data-dir", str(ph_dir))
        return [n for n in rows if n["text"].startswith("task done")]

    wait_until("the task-done notification", lambda: bool(done_notice()))
    notice = done_notice()[0]["id"]
    run("notifications", "dismiss", notice, "--data-dir", str(ph_dir))

    def dismissed_on_runtime() -> bool:
        rows = _json("notifications", "--all", "--data-dir", str(rt_dir))
        return any(n["id"] == notice and n["dismissed"] for n in rows)

    wait_until("the dismissal on the runtime", dismissed_on_runtime)
    assert not done_notice()
    unknown = run("task", "show", "nope", "--data-dir", str(ph_dir), check=False)
    assert unknown.returncode == 3 and "no task 'nope'" in unknown.stderr
    assert phone.stop() == 0
    assert runtime.stop() == 0


async def test_the_llm_agent_against_a_local_chat_completions_stub(tmp_path: Path) -> None:
    model = StubModel(
        [
            says("Hello! What can I do?"),
            calls("remember", key="sky", value="blue"),
            says("I will remember the sky is blue."),
        ]
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(model.serve)
        args = ("--agent", "llm", "--llm-url", model.base_url, "--llm-model", "stub-model")
        _, ph_dir, runtime, phone = await trio.to_thread.run_sync(
            partial(start_mesh, tmp_path, *args)
        )
        # A message first: the chat agent answers it with the conversation so far.
        await trio.to_thread.run_sync(partial(run, "send", "hi there", "--data-dir", str(ph_dir)))

        def conversation() -> list[tuple[str, str]]:
            rows = _json("messages", "--data-dir", str(ph_dir))
            return [(row["role"], row["text"]) for row in rows]

        def answered() -> bool:
            return len(conversation()) == 2

        await trio.to_thread.run_sync(partial(wait_until, "the chat reply", answered))
        assert await trio.to_thread.run_sync(conversation) == [
            ("user", "hi there"),
            ("assistant", "Hello! What can I do?"),
        ]
        added = await trio.to_thread.run_sync(
            partial(run, "task", "add", "the sky is blue", "--data-dir", str(ph_dir))
        )
        task_id = added.stdout.strip()

        def replied() -> bool:
            return task_row(ph_dir, task_id).get("reply") is not None

        await trio.to_thread.run_sync(partial(wait_until, "the model's reply", replied))
        row = await trio.to_thread.run_sync(task_row, ph_dir, task_id)
        assert row["reply"] == "I will remember the sky is blue."
        assert row["agent"] == "llm"
        assert [m["role"] for m in model.requests[2]["messages"]][-1] == "tool"
        assert model.requests[0]["model"] == "stub-model"
        assert "tools" not in model.requests[0]  # a chat turn has no tools
        assert await trio.to_thread.run_sync(phone.stop) == 0
        assert await trio.to_thread.run_sync(runtime.stop) == 0
        nursery.cancel_scope.cancel()
